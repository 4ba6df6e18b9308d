//! Crash safety of the StorageEngine: a child process (this test binary, run again in the child
//! role) commits a chain block by block and prints "acked <height> <hash>" each time `commit`
//! returns; the parent kills it with SIGKILL at random moments, reopens the database and
//! requires that it opens, that every acknowledged block is there with its hash, and that what
//! it restores is exactly the model's state after one of the commits (never a part of one).
//! Several rounds continue the same database from where the last kill left it.
//!
//! Replay a run: `TINYCHAIN_SEED=<n> cargo test -p tinychain-node --test storage_crash`.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use tinychain_core::crypto::SignatureCache;
use tinychain_core::genesis::Genesis;
use tinychain_core::mempool::MempoolConfig;
use tinychain_core::node::{Action, Commit, Event, Node, NodeConfig};
use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, validator_key, ModelStorage};
use tinychain_core::types::{Hash, Height};
use tinychain_node::storage::Storage;

/// Selects the child role and names its database.
const CHILD_DATABASE_VARIABLE: &str = "TINYCHAIN_STORAGE_CRASH_CHILD_DATABASE";
const CHILD_TEST_NAME: &str = "child_role_commits_until_killed";
const BLOCKS: usize = 4_000;
const ROUNDS: usize = 5;

fn genesis() -> Genesis {
    fast_genesis(1, 20)
}

/// The chain both processes commit: one validator producing alone, most blocks carrying a
/// few transfers. Deterministic, so parent and child build the same commits.
fn chain(genesis: &Genesis) -> Vec<Commit> {
    let config = NodeConfig {
        genesis: genesis.clone(),
        key: validator_key(0),
        verify_threads: 1,
        mempool: MempoolConfig::default(),
        unmeasured_metrics: (0, 0),
    };
    let mut node = Node::new(config, Arc::new(SignatureCache::new(10_000)));
    let accounts = genesis.allocations.len();
    let mut nonces = vec![0u64; accounts];
    let mut commits = Vec::with_capacity(BLOCKS);
    let mut now_ms = 0;
    let mut step = 0usize;
    while commits.len() < BLOCKS {
        now_ms += 100;
        step += 1;
        let mut events = vec![Event::Tick];
        for offset in 0..step % 4 {
            let sender = (step + offset) % accounts;
            let recipient = account_key((sender * 3 + 1) % accounts).address();
            let transfer = sign_transfer(&account_key(sender), &genesis.chain_id, recipient, 1_000, 1, nonces[sender]);
            nonces[sender] += 1;
            events.insert(0, Event::TxSubmitted(transfer));
        }
        for event in events {
            for action in node.step(now_ms, event) {
                if let Action::CommitBlocks(commit) = action {
                    commits.push(*commit);
                }
            }
        }
        assert!(step < BLOCKS * 10, "a lone validator produces a block every few ticks");
    }
    commits
}

/// The child role: continue committing the chain from the stored tip, acknowledging each
/// commit on stdout, until killed. Ignored in a normal test run (it would have nothing to do and
/// count as passed); the parent test runs it with `--ignored --exact`.
#[test]
#[ignore = "the child process of killed_while_committing_the_database_keeps_every_acknowledged_block, which runs it"]
fn child_role_commits_until_killed() {
    let path = std::env::var(CHILD_DATABASE_VARIABLE).unwrap_or_else(|_| {
        panic!("{CHILD_DATABASE_VARIABLE} is not set: this is the child role of the storage crash test, not a test")
    });
    let genesis = genesis();
    let commits = chain(&genesis);
    let storage = Storage::open(Path::new(&path), &genesis).unwrap();
    let tip = storage.tip().unwrap();
    let start = if tip.height == 0 { 0 } else { commits.iter().position(|commit| commit.tip == tip).unwrap() + 1 };
    println!("ready at {}", tip.height);
    for commit in &commits[start..] {
        storage.commit(commit).unwrap();
        println!("acked {} {}", commit.tip.height, commit.tip.hash);
    }
    println!("done");
    std::thread::sleep(Duration::from_secs(600));
}

/// The child process, killed and reaped however the parent leaves the scope (a failed
/// assertion must not leave it running).
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small deterministic generator for the kill moments (xorshift64*).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn killed_while_committing_the_database_keeps_every_acknowledged_block() {
    let seed: u64 = std::env::var("TINYCHAIN_SEED").ok().and_then(|text| text.parse().ok()).unwrap_or(7);
    eprintln!("storage crash test: TINYCHAIN_SEED={seed}");
    let mut random = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let genesis = genesis();
    let commits = chain(&genesis);
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("chain.redb");
    drop(Storage::create(&path, &genesis).unwrap());

    let mut acked: Vec<(Height, Hash)> = Vec::new();
    let mut kills_mid_stream = 0;
    for round in 0..ROUNDS {
        let mut child = ChildGuard(
            Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", CHILD_TEST_NAME, "--nocapture", "--test-threads", "1"])
                .env(CHILD_DATABASE_VARIABLE, &path)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        let (lines_sender, lines) = mpsc::channel::<String>();
        let stdout = child.0.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_sender.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until it commits, then kill it at a random moment among its commits.
        // libtest prints its own lines first ("test <name> ... " without a line end, too).
        loop {
            let line = lines.recv_timeout(Duration::from_secs(120)).expect("the child starts");
            if line.contains("ready at ") {
                break;
            }
        }
        let delay_ms = 20 + next_random(&mut random) % 400;
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        reader.join().unwrap();
        let mut round_acks = 0;
        let mut finished = false;
        for line in lines.try_iter() {
            if let Some(rest) = line.strip_prefix("acked ") {
                let (height, hash) = rest.split_once(' ').unwrap();
                acked.push((height.parse().unwrap(), Hash::from_hex(hash).unwrap()));
                round_acks += 1;
            } else if line == "done" {
                finished = true;
            }
        }
        if !finished {
            kills_mid_stream += 1;
        }

        let storage = Storage::open(&path, &genesis).unwrap_or_else(|error| panic!("round {round}: {error}"));
        let tip = storage.tip().unwrap();
        let last_acked = acked.last().map_or(0, |(height, _)| *height);
        assert!(tip.height >= last_acked, "round {round}: tip {} below the last acknowledged {last_acked}", tip.height);
        for (height, hash) in &acked {
            let block = storage.block_at(*height).unwrap().unwrap_or_else(|| panic!("acked block {height} is gone"));
            assert_eq!(tinychain_core::validate::block_hash(&block.header), *hash, "acked block {height}");
        }
        // The database holds the state after exactly one whole commit: the model's there.
        let position = commits.iter().position(|commit| commit.tip == tip).expect("the stored tip is a committed tip");
        let mut model = ModelStorage::new(&genesis);
        for commit in &commits[..=position] {
            model.carry_out(&Action::CommitBlocks(Box::new(commit.clone())));
        }
        let expected = model.restored();
        let restored = storage.restored().unwrap();
        assert_eq!(restored.state, expected.state, "round {round}: state at tip {}", tip.height);
        assert_eq!(restored.canonical_hashes, expected.canonical_hashes, "round {round}");
        assert_eq!(restored.final_block, expected.final_block, "round {round}");
        assert_eq!(restored.recent_blocks.len(), expected.recent_blocks.len(), "round {round}");
        for ((block, undo), (expected_block, expected_undo)) in
            restored.recent_blocks.iter().zip(&expected.recent_blocks)
        {
            assert_eq!(block, expected_block, "round {round}");
            assert_eq!(undo, expected_undo, "round {round}");
        }
        eprintln!(
            "round {round}: killed after {delay_ms} ms, {round_acks} commits acknowledged, reopened at height {} \
             (last acknowledged {last_acked})",
            tip.height
        );
        drop(storage);
        if position + 1 == commits.len() {
            break;
        }
    }
    assert!(acked.len() > ROUNDS, "the child committed blocks ({} acknowledged)", acked.len());
    assert!(kills_mid_stream >= 3, "most kills landed while the child was committing ({kills_mid_stream})");
}
