//! `tinychain wallet ...` as a user runs it, against a real local testnet (4 `tinychain node`
//! processes on loopback, 500 ms blocks): a new wallet is funded from the development wallet;
//! 1.5 TC with a fee moves both balances by exactly the right amounts and the producer earns
//! exactly the reward and the fees; `status` goes pending → committed → final; 20 sends in a row
//! all commit in nonce order; and the failures (more than the balance, a wrong passphrase, a
//! mistyped address, a node that is down) are clear errors that send nothing and leave the wallet
//! file as it was; a transfer the node refuses comes back with the reason's code (`data.code`).
//!
//! One testnet serves every check (started once, held under `serial()`), so the file runs in well
//! under two minutes on a 2-core machine. Each command is the real binary with
//! `TINYCHAIN_PASSPHRASE` set, as a script would run it.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{serial, Testnet, EXE};

const UNITS_PER_COIN: u64 = 100_000_000;

/// What one `tinychain wallet ...` run printed.
struct Run {
    is_success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `tinychain wallet --wallet DIR --rpc RPC ARGS` with the passphrase in the environment.
fn wallet(dir: &Path, rpc: &str, passphrase: &str, args: &[&str]) -> Run {
    let output = Command::new(EXE)
        .arg("wallet")
        .args(["--wallet", dir.to_str().unwrap(), "--rpc", rpc])
        .args(args)
        .env("TINYCHAIN_PASSPHRASE", passphrase)
        .env_remove("TINYCHAIN_WALLET")
        .env_remove("TINYCHAIN_RPC")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        is_success: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A run that must succeed with `--json`: its one JSON object.
fn wallet_json(dir: &Path, rpc: &str, passphrase: &str, args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let run = wallet(dir, rpc, passphrase, &with_json);
    assert!(run.is_success, "wallet {args:?} failed:\n{}\n{}", run.stderr, run.stdout);
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|error| panic!("{error}: {:?}", run.stdout))
}

/// A run that must fail: its stderr.
fn wallet_fails(dir: &Path, rpc: &str, passphrase: &str, args: &[&str]) -> String {
    let run = wallet(dir, rpc, passphrase, args);
    assert!(!run.is_success, "wallet {args:?} should have failed:\n{}", run.stdout);
    run.stderr
}

fn units(value: &Value) -> u64 {
    value.as_str().unwrap_or_else(|| panic!("{value} is not an amount string")).parse().unwrap()
}

fn tc(text: &str) -> u64 {
    tinychain_wallet::amount::parse_amount(text).unwrap()
}

/// `(final balance, final height)` of an address over RPC.
fn final_account(net: &Testnet, address: &str) -> (u64, u64) {
    let account = net.rpc_ok(0, "get_account", json!({ "address": address, "at": "final" }));
    (units(&account["balance"]), account["height"].as_u64().unwrap())
}

/// What the node says about an account that nothing may change: its nonce, next nonce and the
/// number of transfers in its history (committed and pending).
fn account_footprint(net: &Testnet, address: &str) -> (u64, u64, usize) {
    let account = net.rpc_ok(0, "get_account", json!({ "address": address }));
    let history = net.rpc_ok(0, "get_history", json!({ "address": address, "limit": 500 }));
    (
        account["nonce"].as_u64().unwrap(),
        account["pending_nonce"].as_u64().unwrap(),
        history["transfers"].as_array().unwrap().len() + history["pending"].as_array().unwrap().len(),
    )
}

fn tx_state(net: &Testnet, id: &str) -> Value {
    net.rpc_ok(0, "get_tx", json!({ "id": id }))
}

fn wait_until_final(net: &Testnet, ids: &[String]) {
    net.wait_for(Duration::from_secs(60), "the transfers to be final", |net| {
        ids.iter().all(|id| tx_state(net, id)["status"] == "final").then_some(())
    });
}

/// The network, the development wallet and two fresh wallets.
struct Fixture {
    net: Testnet,
    rpc: String,
    dev_wallet: PathBuf,
    alice_wallet: PathBuf,
    bob_wallet: PathBuf,
    alice: String,
    bob: String,
}

const ALICE_PASSPHRASE: &str = "correct horse battery staple";
const BOB_PASSPHRASE: &str = "bob's passphrase";

fn start() -> Fixture {
    let mut net = Testnet::init(4, 500, 3_000);
    net.start_all();
    net.wait_for(Duration::from_secs(60), "a final block", |net| {
        net.finalized(0).filter(|(height, _)| *height >= 1).map(|_| ())
    });
    let rpc = net.nodes[0].rpc.clone();
    let dev_wallet = net.path().join("wallet");
    let alice_wallet = net.root.join("alice");
    let bob_wallet = net.root.join("bob");
    let created = wallet_json(&alice_wallet, &rpc, ALICE_PASSPHRASE, &["new", "--name", "alice"]);
    assert_eq!(created["created_wallet"], true);
    let alice = created["address"].as_str().unwrap().to_string();
    let bob = wallet_json(&bob_wallet, &rpc, BOB_PASSPHRASE, &["new"])["address"].as_str().unwrap().to_string();
    // `list` and `address` need no passphrase and agree with `new`.
    let listed = wallet_json(&alice_wallet, &rpc, "", &["list"]);
    assert_eq!(listed["keys"], json!([{ "name": "alice", "address": alice }]));
    assert_eq!(wallet(&bob_wallet, &rpc, "", &["address"]).stdout.trim(), bob);
    assert_eq!(wallet(&bob_wallet, &rpc, "", &["address", "default"]).stdout.trim(), bob);
    Fixture { net, rpc, dev_wallet, alice_wallet, bob_wallet, alice, bob }
}

#[test]
fn the_wallet_commands_against_a_live_testnet() {
    let _serial = serial();
    let started = Instant::now();
    let fixture = start();
    fund_a_new_wallet_from_the_development_wallet(&fixture);
    let one_send = send_with_a_fee_moves_exact_amounts_and_status_goes_to_final(&fixture);
    the_producer_earns_exactly_the_reward_and_the_fees(&fixture, &one_send);
    twenty_sends_in_a_row_all_commit_in_nonce_order(&fixture);
    history_lists_the_transfers_newest_first(&fixture);
    sending_more_than_the_balance_sends_nothing(&fixture);
    a_refused_submit_names_why_and_the_wallet_maps_it(&fixture);
    a_wrong_passphrase_sends_nothing_and_leaves_the_file_unchanged(&fixture);
    a_mistyped_address_is_refused_before_anything_is_sent(&fixture);
    a_node_that_is_down_is_a_clear_error_and_loses_nothing(&fixture);
    export_then_import_gives_the_same_key(&fixture);
    eprintln!("wallet checks took {:?}", started.elapsed());
}

fn fund_a_new_wallet_from_the_development_wallet(fixture: &Fixture) {
    let Fixture { net, rpc, dev_wallet, alice, .. } = fixture;
    // The development wallet `testnet init` wrote: key "dev", empty passphrase.
    let dev_before = wallet_json(dev_wallet, rpc, "", &["balance"]);
    assert_eq!(dev_before["key"], "dev");
    assert_eq!(units(&dev_before["tip"]["balance"]), 1_000_000 * UNITS_PER_COIN);
    let sent = wallet_json(dev_wallet, rpc, "", &["send", alice, "100", "--fee", "0.001", "--wait", "final"]);
    assert_eq!(sent["status"]["status"], "final", "{sent}");
    assert_eq!((units(&sent["amount"]), units(&sent["fee"])), (100 * UNITS_PER_COIN, tc("0.001")));
    let alice_balance = wallet_json(&fixture.alice_wallet, rpc, "", &["balance"]);
    assert_eq!(units(&alice_balance["final"]["balance"]), 100 * UNITS_PER_COIN, "{alice_balance}");
    let (dev_final, _) = final_account(net, dev_before["address"].as_str().unwrap());
    assert_eq!(dev_final, 1_000_000 * UNITS_PER_COIN - 100 * UNITS_PER_COIN - tc("0.001"));
}

/// The send of 1.5 TC, for the producer check.
struct OneSend {
    id: String,
    fee: u64,
    height: u64,
}

fn send_with_a_fee_moves_exact_amounts_and_status_goes_to_final(fixture: &Fixture) -> OneSend {
    let Fixture { net, rpc, alice_wallet, bob_wallet, alice, bob, .. } = fixture;
    let alice_before = final_account(net, alice).0;
    let bob_before = final_account(net, bob).0;
    assert_eq!((alice_before, bob_before), (100 * UNITS_PER_COIN, 0));
    let fee = tc("0.00012345");
    let sent = wallet_json(alice_wallet, rpc, ALICE_PASSPHRASE, &["send", bob, "1.5", "--fee", "0.00012345"]);
    let id = sent["id"].as_str().unwrap().to_string();
    assert_eq!((units(&sent["amount"]), units(&sent["fee"]), sent["nonce"].as_u64()), (150_000_000, fee, Some(0)));

    // Poll `wallet status` and keep each state the first time it is seen.
    let mut observed: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let height = loop {
        let status = wallet_json(alice_wallet, rpc, "", &["status", &id]);
        let state = status["status"].as_str().unwrap().to_string();
        if observed.last() != Some(&state) {
            observed.push(state.clone());
        }
        if state == "final" {
            assert!(status["confirmations"].as_u64().unwrap() >= 1);
            break status["height"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "not final after 60 s; observed {observed:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let order = ["pending", "committed", "final"];
    let ranks: Vec<usize> = observed
        .iter()
        .map(|state| order.iter().position(|known| known == state).unwrap_or_else(|| panic!("{observed:?}")))
        .collect();
    assert!(ranks.windows(2).all(|pair| pair[0] < pair[1]), "states out of order: {observed:?}");
    assert_eq!(observed.last().map(String::as_str), Some("final"));
    assert!(observed.len() >= 2, "a transfer is seen before it is final: {observed:?}");
    eprintln!("status sequence observed: {observed:?}");

    assert_eq!(final_account(net, alice).0, alice_before - 150_000_000 - fee);
    assert_eq!(final_account(net, bob).0, bob_before + 150_000_000);
    // The wallet's own view agrees, down to the base unit.
    let alice_balance = wallet_json(alice_wallet, rpc, "", &["balance"]);
    assert_eq!(alice_balance["final"]["balance_tc"], "98.49987655");
    let bob_balance = wallet_json(bob_wallet, rpc, "", &["balance", bob]);
    assert_eq!(bob_balance["final"]["balance_tc"], "1.5");
    OneSend { id, fee, height }
}

/// There is no RPC for an account at an arbitrary height, so this checks the identity that makes
/// "balance at h = balance at h−1 + reward + fees of h" true for every block: each validator's
/// final balance is exactly the sum, over the final blocks it produced, of the reward plus that
/// block's fees (validators start with nothing and never transfer). It is checked for every
/// validator, and the block holding the 1.5 TC send must carry exactly that send's fee.
fn the_producer_earns_exactly_the_reward_and_the_fees(fixture: &Fixture, one_send: &OneSend) {
    let net = &fixture.net;
    let genesis: Value = serde_json::from_str(&std::fs::read_to_string(net.genesis_path()).unwrap()).unwrap();
    let reward = units(&genesis["parameters"]["block_reward"]);
    assert_eq!(reward, 10 * UNITS_PER_COIN);

    let block = net.rpc_ok(0, "get_block", json!({ "height": one_send.height }));
    let producer = block["producer"].as_str().unwrap().to_string();
    let ours: Vec<&Value> = block["transfers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|transfer| transfer["id"] == one_send.id.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "block {} holds the send", one_send.height);
    assert_eq!(units(&ours[0]["fee"]), one_send.fee);

    let mut blocks: Vec<Value> = Vec::new();
    for validator in &net.nodes {
        let (balance, final_height) = final_account(net, &validator.id);
        while (blocks.len() as u64) < final_height {
            let height = blocks.len() as u64 + 1;
            blocks.push(net.rpc_ok(0, "get_block", json!({ "height": height })));
        }
        let earned = |up_to: u64| -> u64 {
            blocks[..up_to as usize]
                .iter()
                .filter(|block| block["producer"] == validator.id.as_str())
                .map(|block| {
                    reward + block["transfers"].as_array().unwrap().iter().map(|t| units(&t["fee"])).sum::<u64>()
                })
                .sum()
        };
        assert_eq!(balance, earned(final_height), "{} at final height {final_height}", validator.name);
        if validator.id == producer {
            assert!(final_height >= one_send.height);
            let block_fees: u64 = blocks[one_send.height as usize - 1]["transfers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|transfer| units(&transfer["fee"]))
                .sum();
            assert!(block_fees >= one_send.fee);
            assert_eq!(earned(one_send.height) - earned(one_send.height - 1), reward + block_fees);
        }
    }
}

fn twenty_sends_in_a_row_all_commit_in_nonce_order(fixture: &Fixture) {
    let Fixture { net, rpc, alice_wallet, alice, bob, .. } = fixture;
    let alice_before = final_account(net, alice).0;
    let bob_before = final_account(net, bob).0;
    let fee = 7;
    let mut sent: Vec<(u64, String)> = Vec::new();
    for _ in 0..20 {
        let answer = wallet_json(alice_wallet, rpc, ALICE_PASSPHRASE, &["send", bob, "0.01", "--fee", "0.00000007"]);
        sent.push((answer["nonce"].as_u64().unwrap(), answer["id"].as_str().unwrap().to_string()));
    }
    let nonces: Vec<u64> = sent.iter().map(|(nonce, _)| *nonce).collect();
    assert_eq!(nonces, (1..=20).collect::<Vec<u64>>(), "each send takes the next nonce");
    // Pending or committed, the 20 are spent: the pending balance is exact whichever they are.
    let total = 20 * (UNITS_PER_COIN / 100 + fee);
    let balance = wallet_json(alice_wallet, rpc, "", &["balance"]);
    assert_eq!(units(&balance["pending"]["balance"]), alice_before - total, "{balance}");
    assert_eq!(balance["pending_nonce"], 21);

    let ids: Vec<String> = sent.iter().map(|(_, id)| id.clone()).collect();
    wait_until_final(net, &ids);
    let places: Vec<(u64, u64)> = ids
        .iter()
        .map(|id| {
            let state = tx_state(net, id);
            (state["height"].as_u64().unwrap(), state["index"].as_u64().unwrap())
        })
        .collect();
    assert!(places.windows(2).all(|pair| pair[0] < pair[1]), "committed in nonce order: {places:?}");
    assert_eq!(final_account(net, alice).0, alice_before - total);
    assert_eq!(final_account(net, bob).0, bob_before + 20 * (UNITS_PER_COIN / 100));
}

fn history_lists_the_transfers_newest_first(fixture: &Fixture) {
    let Fixture { rpc, alice_wallet, alice, bob, dev_wallet, .. } = fixture;
    let history = wallet_json(alice_wallet, rpc, "", &["history", "--limit", "100"]);
    assert_eq!(history["address"], alice.as_str());
    let transfers = history["transfers"].as_array().unwrap();
    assert_eq!(transfers.len(), 22, "the funding, the 1.5 TC send and the 20 sends");
    let nonces: Vec<u64> = transfers[..21].iter().map(|transfer| transfer["nonce"].as_u64().unwrap()).collect();
    assert_eq!(nonces, (0..=20).rev().collect::<Vec<u64>>(), "newest first");
    assert!(transfers[..21]
        .iter()
        .all(|transfer| transfer["direction"] == "out" && transfer["counterparty"] == bob.as_str()));
    let funding = &transfers[21];
    assert_eq!((funding["direction"].as_str(), units(&funding["amount"])), (Some("in"), 100 * UNITS_PER_COIN));
    let dev = wallet(dev_wallet, rpc, "", &["address"]).stdout.trim().to_string();
    assert_eq!(funding["counterparty"], dev.as_str());
    let heights: Vec<u64> = transfers.iter().map(|transfer| transfer["height"].as_u64().unwrap()).collect();
    assert!(heights.windows(2).all(|pair| pair[0] >= pair[1]), "{heights:?}");
    assert!(transfers.iter().all(|transfer| transfer["status"] == "final"));
    // The text form shows the same, one line per transfer.
    let text = wallet(alice_wallet, rpc, "", &["history", "--limit", "3"]);
    assert!(text.is_success, "{}", text.stderr);
    assert_eq!(text.stdout.lines().filter(|line| line.contains(" out ")).count(), 3, "{}", text.stdout);
    assert!(text.stdout.contains("-0.01 TC") && text.stdout.contains("older transfers"), "{}", text.stdout);
}

fn sending_more_than_the_balance_sends_nothing(fixture: &Fixture) {
    let Fixture { net, rpc, alice_wallet, alice, bob, .. } = fixture;
    let before = account_footprint(net, alice);
    let balance = wallet_json(alice_wallet, rpc, "", &["balance"]);
    let pending_tc = balance["pending"]["balance_tc"].as_str().unwrap().to_string();
    let error = wallet_fails(alice_wallet, rpc, ALICE_PASSPHRASE, &["send", bob, "1000", "--fee", "0.5"]);
    assert!(
        error.contains(&format!(
            "insufficient funds: balance {pending_tc} TC, sending 1000 TC + fee 0.5 TC; nothing was sent"
        )),
        "{error}"
    );
    // Just one base unit too much is refused too.
    let all = units(&balance["pending"]["balance"]);
    let one_too_many = tinychain_wallet::amount::format_amount(all);
    let error = wallet_fails(alice_wallet, rpc, ALICE_PASSPHRASE, &["send", bob, &one_too_many, "--fee", "0.00000001"]);
    assert!(error.contains("insufficient funds"), "{error}");
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(account_footprint(net, alice), before, "nonce and history unchanged");
}

/// Submitted past the wallet's own checks (the library's `submit_tx`, as another program would):
/// a nonce the chain already used and more than the balance come back as `Rejected` with the
/// node's `data.code`, and nothing reaches the chain.
fn a_refused_submit_names_why_and_the_wallet_maps_it(fixture: &Fixture) {
    let Fixture { net, rpc, alice_wallet, alice, bob, .. } = fixture;
    let before = account_footprint(net, alice);
    let client = tinychain_wallet::client::RpcClient::new(rpc).unwrap();
    let chain_id = client.status().unwrap().chain_id;
    let key = tinychain_wallet::keystore::Keystore::open(alice_wallet).unwrap().key("alice", ALICE_PASSPHRASE).unwrap();
    let bob = tinychain_wallet::parse_address("bob", bob).unwrap();
    let refusal = |amount: u64, nonce: u64| {
        let transfer = tinychain_wallet::build_transfer(&key, &chain_id, bob, amount, 1_000, nonce);
        match client.submit_tx(&transfer) {
            Err(tinychain_wallet::WalletError::Rejected { code, message, .. }) => (code.unwrap_or_default(), message),
            other => panic!("amount {amount}, nonce {nonce}: expected a rejection, got {other:?}"),
        }
    };
    // Alice's first send took nonce 0 long ago.
    let (code, message) = refusal(1, 0);
    assert_eq!(code, tinychain_rpc::data_code::NONCE_USED, "{message}");
    let next_nonce = client.get_account(&key.address(), tinychain_rpc::AccountAt::Tip).unwrap().pending_nonce.unwrap();
    let (code, message) = refusal(1_000_000 * UNITS_PER_COIN, next_nonce);
    assert_eq!(code, tinychain_rpc::data_code::INSUFFICIENT_BALANCE_WITH_PENDING, "{message}");
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(account_footprint(net, alice), before, "nonce and history unchanged");
}

fn a_wrong_passphrase_sends_nothing_and_leaves_the_file_unchanged(fixture: &Fixture) {
    let Fixture { net, rpc, alice_wallet, alice, bob, .. } = fixture;
    let file = alice_wallet.join("wallet.json");
    let bytes_before = std::fs::read(&file).unwrap();
    let before = account_footprint(net, alice);
    let error = wallet_fails(alice_wallet, rpc, "not the passphrase", &["send", bob, "1"]);
    assert!(error.contains("cannot decrypt key \"alice\"") && error.contains("the passphrase is wrong"), "{error}");
    let error = wallet_fails(alice_wallet, rpc, "not the passphrase", &["export", "--yes"]);
    assert!(error.contains("the passphrase is wrong"), "{error}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes_before, "the wallet file is byte for byte the same");
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(account_footprint(net, alice), before);
}

fn a_mistyped_address_is_refused_before_anything_is_sent(fixture: &Fixture) {
    let Fixture { net, rpc, alice_wallet, alice, bob, .. } = fixture;
    let before = account_footprint(net, alice);
    let mut typo: Vec<char> = bob.chars().collect();
    let position = typo.len() - 10;
    typo[position] = if typo[position] == 'q' { 'p' } else { 'q' };
    let typo: String = typo.into_iter().collect();
    let error = wallet_fails(alice_wallet, rpc, ALICE_PASSPHRASE, &["send", &typo, "1"]);
    assert!(
        error.contains("TO: address") && error.contains("checksum") && error.contains("nothing was sent"),
        "{error}"
    );
    // Refused before the node is asked: with no node at all, the error is still about the address.
    let nowhere = format!("http://127.0.0.1:{}", support::free_ports(1));
    let error = wallet_fails(alice_wallet, &nowhere, ALICE_PASSPHRASE, &["send", &typo, "1"]);
    assert!(error.contains("TO: address") && !error.contains("cannot reach"), "{error}");
    // A bad amount or fee is named the same way.
    let error = wallet_fails(alice_wallet, rpc, ALICE_PASSPHRASE, &["send", bob, "1.000000001"]);
    assert!(error.contains("AMOUNT:") && error.contains("9 decimals"), "{error}");
    let error = wallet_fails(alice_wallet, rpc, ALICE_PASSPHRASE, &["send", bob, "1", "--fee", "lots"]);
    assert!(error.contains("--fee:") && error.contains("\"lots\""), "{error}");
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(account_footprint(net, alice), before);
}

fn a_node_that_is_down_is_a_clear_error_and_loses_nothing(fixture: &Fixture) {
    let Fixture { net, alice_wallet, alice, bob, .. } = fixture;
    let file = alice_wallet.join("wallet.json");
    let bytes_before = std::fs::read(&file).unwrap();
    let before = account_footprint(net, alice);
    let nowhere = format!("http://127.0.0.1:{}", support::free_ports(1));
    let expected = format!("cannot reach the node at {nowhere}: connection refused; is it running? (--rpc)");
    let error = wallet_fails(alice_wallet, &nowhere, ALICE_PASSPHRASE, &["send", bob, "1"]);
    assert!(error.contains(&expected), "{error}");
    for args in [&["balance"][..], &["history"], &["status", &"ab".repeat(32)]] {
        let error = wallet_fails(alice_wallet, &nowhere, "", args);
        assert!(error.contains(&expected), "{args:?}: {error}");
    }
    // With --json, stdout is one JSON object naming the error.
    let run = wallet(alice_wallet, &nowhere, ALICE_PASSPHRASE, &["send", bob, "1", "--json"]);
    assert!(!run.is_success);
    let answer: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(answer["error"], expected.as_str());
    assert_eq!(std::fs::read(&file).unwrap(), bytes_before);
    std::thread::sleep(Duration::from_millis(1_200));
    assert_eq!(account_footprint(net, alice), before);
}

fn export_then_import_gives_the_same_key(fixture: &Fixture) {
    let Fixture { net, rpc, alice_wallet, alice, .. } = fixture;
    // No terminal to confirm on and no --yes: refused, and nothing secret on stdout.
    let run = wallet(alice_wallet, rpc, ALICE_PASSPHRASE, &["export"]);
    assert!(!run.is_success && run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("--yes") && run.stderr.contains("warning"), "{}", run.stderr);
    let exported = wallet(alice_wallet, rpc, ALICE_PASSPHRASE, &["export", "--yes"]);
    assert!(exported.is_success, "{}", exported.stderr);
    let secret = exported.stdout.trim().to_string();
    assert_eq!(secret.len(), 64);
    // Import reads the secret from stdin, never from the command line.
    let copy_wallet = net.root.join("copy");
    let mut child = Command::new(EXE)
        .args(["wallet", "--wallet", copy_wallet.to_str().unwrap(), "import", "--name", "restored", "--json"])
        .env("TINYCHAIN_PASSPHRASE", "another passphrase")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{secret}\n").as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let imported: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((imported["name"].as_str(), imported["address"].as_str()), (Some("restored"), Some(alice.as_str())));
    // The restored key spends from the same account.
    let balance = wallet_json(&copy_wallet, rpc, "", &["balance", "restored"]);
    assert_eq!(balance["address"], alice.as_str());
    assert!(!String::from_utf8_lossy(&output.stdout).contains(&secret));
}
