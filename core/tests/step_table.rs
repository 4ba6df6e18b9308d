//! Table-driven step tests: each row feeds one event to a node at a given time and lists the
//! actions it must return, summarised as short strings (`broadcast:report`, `send:get_blocks`,
//! `wake:500` with the exact wake-up time). A lone validator wakes when it is next eligible
//! (every 100 ms on the test genesis); one of several that has not finished its first mempool
//! exchange wakes at that exchange's bound, one `producer_timeout_ms` (500) after it started.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use tinychain_core::codec;
use tinychain_core::crypto::SignatureCache;
use tinychain_core::message::Message;
use tinychain_core::node::{Action, Event, Node, NodeConfig};
use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, validator_key};
use tinychain_core::types::{Checkpoint, Hash, NodeId, Signature};

fn summary(action: &Action) -> String {
    match action {
        Action::SendTo { message, .. } => format!("send:{}", message.kind()),
        Action::Broadcast { message, except: None } => format!("broadcast:{}", message.kind()),
        Action::Broadcast { message, except: Some(_) } => format!("relay:{}", message.kind()),
        Action::WakeAt(at_ms) => format!("wake:{at_ms}"),
        Action::CommitBlocks(commit) => format!("commit:{}", commit.ops.len()),
        Action::PersistReportState { last_vote, .. } => {
            if last_vote.is_some() {
                "persist_vote".into()
            } else {
                "persist_sequence".into()
            }
        }
        Action::ServeBlocks { from_height, to_height, .. } => format!("serve:{from_height}..={to_height}"),
        Action::DisconnectPeer { .. } => "disconnect".into(),
        Action::TxAccepted { .. } => "tx_accepted".into(),
        Action::TxRejected { reason, .. } => format!("tx_rejected:{reason}"),
        Action::TxDropped(dropped) => format!("tx_dropped:{}", dropped.reason.kind()),
        Action::Trace(event) => format!("trace:{}", format!("{event:?}").split([' ', '{']).next().unwrap()),
    }
}

struct Row {
    desc: &'static str,
    now_ms: u64,
    event: Event,
    expected: &'static [&'static str],
}

/// Runs the rows in order on one node, checking each step's summarised actions.
fn run_rows(node: &mut Node, rows: Vec<Row>) {
    for row in rows {
        let actions = node.step(row.now_ms, row.event);
        let got: Vec<String> = actions.iter().map(summary).collect();
        assert_eq!(got, row.expected, "row: {}", row.desc);
    }
}

fn node(validators: usize, index: usize) -> Node {
    let config = NodeConfig {
        genesis: fast_genesis(validators, 2),
        key: validator_key(index),
        verify_threads: 1,
        mempool: Default::default(),
        unmeasured_metrics: (0, 0),
    };
    Node::new(config, Arc::new(SignatureCache::new(10_000)))
}

fn peer(index: usize) -> NodeId {
    validator_key(index).address()
}

#[test]
fn a_lone_validator_reports_then_produces_when_eligible() {
    let mut node = node(1, 0);
    run_rows(
        &mut node,
        vec![
            Row {
                desc: "first event: alone, the mempool is synced at once; a report without a vote (tip \
                       is genesis), then sleep until eligible",
                now_ms: 0,
                event: Event::Tick,
                expected: &["trace:MempoolSynced", "persist_sequence", "broadcast:report", "wake:100"],
            },
            Row { desc: "nothing to do before the interval", now_ms: 50, event: Event::Tick, expected: &["wake:100"] },
            Row {
                desc: "eligible: produce, commit, gossip the block, then report and vote for it",
                now_ms: 100,
                event: Event::Tick,
                expected: &[
                    "trace:BlockProduced",
                    "commit:1",
                    "trace:BlockCommitted",
                    "broadcast:block",
                    "persist_vote",
                    "broadcast:report",
                    "wake:200",
                ],
            },
            Row {
                desc: "block 2 commits the vote for block 1: alone, that is a supermajority",
                now_ms: 200,
                event: Event::Tick,
                expected: &[
                    "trace:BlockProduced",
                    "commit:1",
                    "trace:BlockCommitted",
                    "trace:Justified",
                    "broadcast:block",
                    "persist_vote",
                    "broadcast:report",
                    "wake:300",
                ],
            },
            Row {
                desc: "block 3 commits the link 1 -> 2 between parent and child: block 1 is final",
                now_ms: 300,
                event: Event::Tick,
                expected: &[
                    "trace:BlockProduced",
                    "commit:1",
                    "trace:BlockCommitted",
                    "trace:Justified",
                    "trace:Finalized",
                    "broadcast:block",
                    "persist_vote",
                    "broadcast:report",
                    "wake:400",
                ],
            },
        ],
    );
    assert_eq!(node.finality().justified.height, 2);
    assert_eq!(node.finalized().height, 1);
}

#[test]
fn transfers_are_accepted_relayed_once_and_rejected_with_a_reason() {
    let mut node = node(3, 0);
    let genesis = fast_genesis(3, 2);
    let good = sign_transfer(&account_key(0), &genesis.chain_id, account_key(1).address(), 5, 1, 0);
    let mut forged = good.clone();
    forged.amount = 6;
    let mut zero = sign_transfer(&account_key(0), &genesis.chain_id, account_key(1).address(), 0, 1, 0);
    zero.signature = Signature::default();
    let wrong_nonce = sign_transfer(&account_key(1), &genesis.chain_id, account_key(0).address(), 5, 1, 3);
    let relayed = sign_transfer(&account_key(1), &genesis.chain_id, account_key(0).address(), 5, 1, 0);
    run_rows(
        &mut node,
        vec![
            Row {
                desc: "start",
                now_ms: 0,
                event: Event::Tick,
                expected: &["persist_sequence", "broadcast:report", "wake:500"],
            },
            Row {
                desc: "a valid submission is accepted at once; its gossip waits for the batch window",
                now_ms: 1,
                event: Event::TxSubmitted(good),
                expected: &["tx_accepted", "wake:21"],
            },
            Row {
                desc: "a forged signature is refused",
                now_ms: 2,
                event: Event::TxSubmitted(forged),
                expected: &["tx_rejected:transfer signature does not verify under the sender's key", "wake:21"],
            },
            Row {
                desc: "a zero amount is refused before the signature is checked",
                now_ms: 3,
                event: Event::TxSubmitted(zero),
                expected: &["tx_rejected:transfer amount is zero; send at least one base unit", "wake:21"],
            },
            Row {
                desc: "a nonce gap is refused by the mempool",
                now_ms: 4,
                event: Event::TxSubmitted(wrong_nonce),
                expected: &["tx_rejected:nonce 3 would leave a gap: this account's next nonce is 0", "wake:21"],
            },
            Row {
                desc: "a transfer from a peer is relayed to the others at once (a batch as a batch)",
                now_ms: 5,
                event: Event::MessageReceived { from: peer(1), message: Message::Transfers(vec![relayed.clone()]) },
                expected: &["relay:transfers", "wake:21"],
            },
            Row {
                desc: "the same transfer again is not relayed twice",
                now_ms: 6,
                event: Event::MessageReceived { from: peer(2), message: Message::Transfers(vec![relayed]) },
                expected: &["wake:21"],
            },
            Row {
                desc: "the window is over: our own transfer goes to every peer",
                now_ms: 21,
                event: Event::Tick,
                expected: &["broadcast:transfers", "wake:500"],
            },
        ],
    );
}

#[test]
fn sync_starts_from_a_tip_we_lack_and_is_served_from_storage() {
    let mut node = node(3, 0);
    let unknown_tip = Checkpoint { height: 40, hash: Hash([9; 32]) };
    let genesis_tip = node.tip();
    run_rows(
        &mut node,
        vec![
            Row {
                desc: "a new peer gets our status, our links and our (empty) pool's announcement; the \
                       other peers hear of the new link 200 ms later",
                now_ms: 0,
                event: Event::PeerConnected { peer: peer(1) },
                expected: &[
                    "send:status",
                    "send:links",
                    "send:pool_announce",
                    "persist_sequence",
                    "broadcast:report",
                    "wake:200",
                ],
            },
            Row {
                desc: "its status names a tip we lack: ask it for blocks",
                now_ms: 1,
                event: Event::MessageReceived {
                    from: peer(1),
                    message: Message::Status { tip: unknown_tip, finalized: genesis_tip },
                },
                expected: &["trace:SyncRequested", "send:get_blocks", "wake:200"],
            },
            Row {
                desc: "a second reason to sync while the request is out sends nothing more",
                now_ms: 2,
                event: Event::MessageReceived {
                    from: peer(1),
                    message: Message::Status { tip: unknown_tip, finalized: genesis_tip },
                },
                expected: &["wake:200"],
            },
            Row {
                desc: "a peer as far as we are is told there is nothing more",
                now_ms: 3,
                event: Event::MessageReceived {
                    from: peer(2),
                    message: Message::GetBlocks { locator: vec![genesis_tip] },
                },
                expected: &["send:blocks", "wake:200"],
            },
            Row {
                desc: "the new link is announced to every peer",
                now_ms: 200,
                event: Event::Tick,
                expected: &["broadcast:links", "wake:500"],
            },
        ],
    );
}

#[test]
fn forged_messages_get_the_peer_disconnected() {
    let mut node = node(3, 0);
    let genesis = fast_genesis(3, 0);
    let mut report = tinychain_core::types::MetricReport {
        node: peer(1),
        sequence: 1,
        tip: node.tip(),
        cpu: 10,
        net: 20,
        score: genesis.score(10, 20),
        vote: None,
        signature: Signature::default(),
    };
    let bytes = codec::report_signing_bytes(&genesis.chain_id, &report);
    report.signature = validator_key(2).sign(&bytes); // signed by the wrong validator
    run_rows(
        &mut node,
        vec![
            Row {
                desc: "start",
                now_ms: 0,
                event: Event::Tick,
                expected: &["persist_sequence", "broadcast:report", "wake:500"],
            },
            Row {
                desc: "a report whose signature is not its node's",
                now_ms: 1,
                event: Event::MessageReceived { from: peer(1), message: Message::Report(report.clone()) },
                expected: &["disconnect", "wake:500"],
            },
        ],
    );
    // The same report correctly signed is pooled and relayed.
    report.signature = validator_key(1).sign(&bytes);
    let actions = node.step(2, Event::MessageReceived { from: peer(1), message: Message::Report(report) });
    assert_eq!(actions.iter().map(summary).collect::<Vec<_>>(), vec!["relay:report", "wake:500"]);
}

#[test]
fn a_node_reports_its_unmeasured_metrics_until_the_first_sample() {
    let first_report = |node: &mut Node, now_ms: u64, event: Event| {
        node.step(now_ms, event).into_iter().find_map(|action| match action {
            Action::Broadcast { message: Message::Report(report), .. } => Some(report),
            _ => None,
        })
    };
    let mut config = NodeConfig {
        genesis: fast_genesis(1, 2),
        key: validator_key(0),
        verify_threads: 1,
        mempool: Default::default(),
        unmeasured_metrics: (1000, 1000),
    };
    let mut node = Node::new(config.clone(), Arc::new(SignatureCache::new(10_000)));
    let report = first_report(&mut node, 0, Event::Tick).expect("a report on the first event");
    assert_eq!((report.cpu, report.net, report.score), (1000, 1000, 1000), "full load until measured");
    // Out-of-range values are clamped like samples are.
    config.unmeasured_metrics = (5000, 7);
    let mut node = Node::new(config, Arc::new(SignatureCache::new(10_000)));
    let report = first_report(&mut node, 0, Event::Tick).expect("a report on the first event");
    assert_eq!((report.cpu, report.net), (1000, 7));
}
