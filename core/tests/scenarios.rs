//! Whole-node scenarios on the lock-step `LocalNet`: real `Node`s, real codec, virtual time.

use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, LocalNet};
use tinychain_core::types::UNITS_PER_COIN;

fn assert_agree(net: &LocalNet, up_to: u64) {
    for height in 0..=up_to {
        let reference = net.nodes[0].canonical_hash(height);
        for node in &net.nodes[1..] {
            assert_eq!(node.canonical_hash(height), reference, "nodes disagree at height {height}");
        }
    }
}

#[test]
fn healthy_network_produces_every_interval_and_finalizes_two_blocks_behind() {
    let genesis = fast_genesis(4, 2);
    let mut net = LocalNet::new(genesis, 5);
    net.run_until(3_000);
    let tips: Vec<u64> = net.nodes.iter().map(|node| node.tip().height).collect();
    // 100 ms blocks for 3 s: about 30 blocks (latency makes intervals a little longer).
    assert!(tips.iter().all(|&height| height >= 25), "tips {tips:?}");
    let lowest = *tips.iter().min().unwrap();
    assert_agree(&net, lowest);
    for node in &net.nodes {
        let lag = node.tip().height - node.finality().finalized.height;
        assert!(lag <= 3, "final block {lag} behind the tip");
    }
    // Every block at rank 0: no timeouts when everyone is healthy.
    assert!(net.committed().iter().all(|(_, _, _, rank)| *rank == 0));
}

#[test]
fn transfers_commit_and_balances_move_exactly() {
    let genesis = fast_genesis(4, 2);
    let chain_id = genesis.chain_id.clone();
    let reward = genesis.parameters.block_reward;
    let mut net = LocalNet::new(genesis, 5);
    net.run_until(300);
    let sender = account_key(0);
    let recipient = account_key(1).address();
    for nonce in 0..5 {
        net.submit(1, sign_transfer(&sender, &chain_id, recipient, UNITS_PER_COIN, 1_000, nonce));
    }
    net.run_until(1_500);
    let state = net.nodes[0].state();
    assert_eq!(state.account(&sender.address()).nonce, 5);
    assert_eq!(state.account(&sender.address()).balance, 1_000 * UNITS_PER_COIN - 5 * (UNITS_PER_COIN + 1_000));
    assert_eq!(state.account(&recipient).balance, 1_005 * UNITS_PER_COIN);
    assert_eq!(state.balances_total(), u128::from(state.supply));
    assert_eq!(state.supply, 2_000 * UNITS_PER_COIN + state.tip.height * reward);
}
