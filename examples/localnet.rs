//! A local network of four real tinychain cores, in one process on virtual time: every block,
//! report, vote and transfer goes through the same `step` code and the same codec a server node
//! runs. Prints each block as the first node commits it, then finality and balances.
//!
//! `cargo run --release --example localnet [-- SECONDS]` (default 30 virtual seconds).

use tinychain_core::node::TraceEvent;
use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, LocalNet};
use tinychain_core::types::UNITS_PER_COIN;

fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|text| text.parse().ok()).unwrap_or(30);
    let mut genesis = fast_genesis(4, 4);
    genesis.parameters.block_interval_ms = 2_000;
    genesis.parameters.producer_timeout_ms = 10_000;
    genesis.parameters.max_clock_drift_ms = 1_000;
    let chain_id = genesis.chain_id.clone();
    let names: Vec<String> = genesis.validators.iter().map(|validator| validator.name.clone()).collect();
    let mut net = LocalNet::new(genesis, 20);
    println!("4 validators, 2 s blocks, 20 ms links; {seconds} virtual seconds\n");
    println!("{:>7}  {:>6}  {:<6} {:>4}  {:>9}", "time", "height", "by", "rank", "transfers");
    let mut printed = 0;
    for second in 1..=seconds {
        // One transfer a second from account 0 to account 1.
        let nonce = second - 1;
        let transfer =
            sign_transfer(&account_key(0), &chain_id, account_key(1).address(), UNITS_PER_COIN, 1_000, nonce);
        net.submit((second % 4) as usize, transfer);
        net.run_until(second * 1_000);
        for (at_ms, node, event) in &net.traces[printed..] {
            if let (0, TraceEvent::BlockCommitted { height, producer, rank, transfers, .. }) = (node, event) {
                let by = net.nodes().position(|node| node.node_id() == *producer).map_or("?", |index| &names[index]);
                println!("{:>6.1}s  {height:>6}  {by:<6} {rank:>4}  {transfers:>9}", *at_ms as f64 / 1000.0);
            }
        }
        printed = net.traces.len();
    }
    let node = &net.drivers[0].node;
    let finalized = node.finalized();
    println!("\ntip {}  justified {}  final {}", node.tip().height, node.finality().justified.height, finalized.height);
    let state = node.state();
    for index in 0..2 {
        let account = state.account(&account_key(index).address());
        println!("account {index}: {} base units, nonce {}", account.balance, account.nonce);
    }
    println!(
        "supply {} base units = sum of balances: {}",
        state.supply,
        u128::from(state.supply) == state.balances_total()
    );
    let agree = net.nodes().all(|other| other.canonical_hash(finalized.height) == Some(finalized.hash));
    println!("all nodes share the final block: {agree}");
}
