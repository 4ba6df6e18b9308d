//! Record and replay without processes: node 0 of a `LocalNet` records every call into its
//! driver, crashes and restarts (a second session), and `replay` re-runs the log bit for bit;
//! the same log replayed with another node's key, or with one input changed, diverges or is
//! refused.

#![allow(clippy::unwrap_used)]

use tinychain_core::genesis::Genesis;
use tinychain_core::mempool::MempoolConfig;
use tinychain_core::node::Event;
use tinychain_core::record::{encode_frame, Entry, RecordedMessage, RecordedTransfer, Session, RECORD_FORMAT};
use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, validator_key, LocalNet};
use tinychain_sim::replay::{replay, ReplayError};

fn session(genesis: &Genesis) -> Entry {
    Entry::Session(Box::new(Session {
        format: RECORD_FORMAT,
        software: "test".to_string(),
        genesis: genesis.clone(),
        node_id: validator_key(0).address(),
        mempool: MempoolConfig::default(),
        unmeasured_metrics: (0, 0),
    }))
}

fn log_of(entries: &[Entry]) -> Vec<u8> {
    entries.iter().flat_map(encode_frame).collect()
}

/// Runs a 4-node LocalNet with node 0 recording, a crash and a restart of node 0, and
/// transfers submitted to it; returns the log's entries.
fn recorded_run() -> (Genesis, Vec<Entry>) {
    let genesis = fast_genesis(4, 2);
    let mut net = LocalNet::new(genesis.clone(), 10);
    net.drivers[0].record();
    let mut entries = vec![session(&genesis)];
    // LocalNet connected the peers before recording began: the first session starts from its
    // restore, as a node's does.
    let Ok(_) = net.drivers[0].start(net.now_ms);
    net.run_until(2_000);
    let alice = account_key(0);
    let bob = account_key(1).address();
    // A few transfers every 250 ms, so some land in blocks other validators produce (which
    // bring back to node 0 transfers it recorded in full when they were submitted).
    for round in 0..8u64 {
        for nonce in 3 * round..3 * round + 3 {
            net.submit(0, sign_transfer(&alice, &genesis.chain_id, bob, 5, 1, nonce));
        }
        net.run_until(2_000 + 250 * (round + 1));
    }
    net.run_until(4_000);
    entries.extend(net.drivers[0].take_records());
    net.crash(0);
    net.run_until(5_000);
    entries.push(session(&genesis));
    net.restart(0);
    net.run_until(8_000);
    entries.extend(net.drivers[0].take_records());
    assert!(net.drivers[0].node.finalized().height > 20, "the network finalized blocks");
    (genesis, entries)
}

#[test]
fn a_recorded_node_with_a_crash_replays_bit_for_bit() {
    let (_, entries) = recorded_run();
    let report = replay(&log_of(&entries), &validator_key(0), true).unwrap();
    assert!(report.divergence.is_none(), "{}", report.divergence.unwrap());
    assert_eq!(report.sessions, 2);
    assert!(report.calls > 200 && report.actions > 200, "{report:?}");
    assert!(report.trace_lines.iter().any(|line| line.contains("n0 committed h=")), "{:?}", report.trace_lines);
    assert!(report.stopped.is_none());
    // Transfers seen before are written by id: the submitted ones, when a block brings them back.
    let by_id = entries
        .iter()
        .filter(|entry| match entry {
            Entry::Received { message: RecordedMessage::Block(block), .. } => {
                block.transfers.iter().any(|transfer| matches!(transfer, RecordedTransfer::Again(_)))
            }
            Entry::Received { message: RecordedMessage::Transfers(transfers), .. } => {
                transfers.iter().any(|transfer| matches!(transfer, RecordedTransfer::Again(_)))
            }
            _ => false,
        })
        .count();
    assert!(by_id > 0, "some received transfers are written by id");

    // A log cut in the middle of an entry (a kill during the write) replays up to the cut.
    let bytes = log_of(&entries);
    let report = replay(&bytes[..bytes.len() - 3], &validator_key(0), false).unwrap();
    assert!(report.divergence.is_none());
    assert!(report.stopped.is_some());
}

#[test]
fn a_changed_input_or_the_wrong_key_is_reported() {
    let (_, mut entries) = recorded_run();
    // A tick moved 1 s later: the node produces or times out differently from there on.
    let tick = entries
        .iter()
        .enumerate()
        .skip(entries.len() / 3)
        .find(|(_, entry)| matches!(entry, Entry::Step { event: Event::Tick, .. }))
        .map(|(index, _)| index)
        .unwrap();
    if let Entry::Step { now_ms, .. } = &mut entries[tick] {
        *now_ms += 1_000;
    }
    let report = replay(&log_of(&entries), &validator_key(0), false).unwrap();
    let divergence = report.divergence.expect("a moved tick diverges");
    assert!(divergence.entry >= tick, "{divergence}");
    assert!(divergence.to_string().contains("the replay diverged at entry"), "{divergence}");

    // A transfer written by an id the session never recorded in full.
    let (_, mut compact) = recorded_run();
    let again = compact.iter_mut().find_map(|entry| match entry {
        Entry::Received { message: RecordedMessage::Block(block), .. } => {
            block.transfers.iter_mut().find(|transfer| matches!(transfer, RecordedTransfer::Again(_)))
        }
        _ => None,
    });
    let again = again.expect("a block brought back transfers node 0 had recorded: written by id");
    *again = RecordedTransfer::Again(tinychain_core::types::Hash([7; 32]));
    let report = replay(&log_of(&compact), &validator_key(0), false).unwrap();
    let divergence = report.divergence.expect("an unknown id is reported");
    assert!(divergence.what.contains("by id"), "{divergence}");

    let error = replay(&log_of(&entries), &validator_key(1), false).unwrap_err();
    assert!(matches!(error, ReplayError::WrongKey { .. }), "{error}");
    let error = replay(b"garbage", &validator_key(0), false).unwrap_err();
    assert!(matches!(error, ReplayError::NoSession), "{error}");
}
