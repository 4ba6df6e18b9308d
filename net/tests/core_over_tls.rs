//! Real `tinychain-core` nodes over the real TLS transport on loopback, driven by a minimal event
//! loop (the node crate's driver will be the full version): blocks and reports gossip to every
//! node, each node commits each block once, and a validator that was offline catches up by sync.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::Cluster;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinychain_core::crypto::SignatureCache;
use tinychain_core::message::Message;
use tinychain_core::node::{Action, Event, Node, NodeConfig, TraceEvent};
use tinychain_core::testkit::{validator_key, ModelStorage};
use tinychain_core::types::Hash;
use tinychain_net::discovery::PeerStore;
use tinychain_net::handle::NetEvent;
use tinychain_net::manager::start;

/// What a driven node ends with.
struct Finished {
    node: Node,
    commits: Vec<Hash>,
}

/// Runs one core over the TLS transport until `until`: every event goes through `Node::step`
/// with the time since `epoch`, and every action is carried out in order before the next event.
async fn drive(cluster: Arc<Cluster>, index: usize, epoch: Instant, until: Instant) -> Finished {
    let (handle, mut events, task) = start(cluster.config(index), PeerStore::none()).await.unwrap();
    let config = NodeConfig {
        genesis: cluster.genesis.clone(),
        key: validator_key(index),
        verify_threads: 1,
        mempool: Default::default(),
        unmeasured_metrics: (0, 0),
    };
    let mut node = Node::new(config, Arc::new(SignatureCache::new(100_000)));
    let mut storage = ModelStorage::new(&cluster.genesis);
    let mut commits = Vec::new();
    let mut wake_at_ms = 0u64;
    let now_ms = || epoch.elapsed().as_millis() as u64;
    let mut pending = vec![Event::Tick];
    while Instant::now() < until {
        for event in pending.drain(..) {
            for action in node.step(now_ms(), event) {
                if storage.carry_out(&action) {
                    continue;
                }
                match action {
                    Action::SendTo { peer, message } => {
                        let _ = handle.send_to(peer, message).await;
                    }
                    Action::Broadcast { message, except } => {
                        let _ = handle.broadcast(message, except).await;
                    }
                    Action::ServeBlocks { peer, from_height, to_height } => {
                        let blocks = storage.blocks_to_serve(from_height, to_height);
                        let _ = handle.send_to(peer, Message::Blocks(blocks)).await;
                    }
                    Action::WakeAt(at_ms) => wake_at_ms = at_ms,
                    Action::Trace(TraceEvent::BlockCommitted { hash, .. }) => commits.push(hash),
                    _ => {}
                }
            }
        }
        let sleep_ms = wake_at_ms.saturating_sub(now_ms()).clamp(1, 50);
        tokio::select! {
            event = events.recv() => match event {
                Some(NetEvent::PeerConnected(peer)) => pending.push(Event::PeerConnected { peer }),
                Some(NetEvent::PeerDisconnected(peer)) => pending.push(Event::PeerDisconnected { peer }),
                Some(NetEvent::MessageReceived { from, message }) => pending.push(Event::MessageReceived { from, message }),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {
                if now_ms() >= wake_at_ms {
                    pending.push(Event::Tick);
                }
            }
        }
    }
    handle.shutdown().await.unwrap();
    task.join().await.unwrap();
    Finished { node, commits }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cores_gossip_over_tls_and_an_offline_validator_catches_up() {
    let cluster = Arc::new(Cluster::new(4));
    let epoch = Instant::now();
    let until = epoch + Duration::from_secs(9);
    // Three validators (a quorum of four) run from the start; the fourth joins after 4 s.
    let mut runners: Vec<_> = (0..3).map(|index| tokio::spawn(drive(cluster.clone(), index, epoch, until))).collect();
    tokio::time::sleep(Duration::from_secs(4)).await;
    runners.push(tokio::spawn(drive(cluster.clone(), 3, epoch, until)));
    let mut finished = Vec::new();
    for runner in runners {
        finished.push(runner.await.unwrap());
    }

    let tips: Vec<u64> = finished.iter().map(|done| done.node.tip().height).collect();
    let finals: Vec<u64> = finished.iter().map(|done| done.node.finalized().height).collect();
    let top = *tips.iter().max().unwrap();
    // 100 ms blocks for ~9 s: generous bounds, since the machine is shared.
    assert!(top >= 20, "blocks were produced over TLS: tips {tips:?}");
    // The late validator caught up: within a few blocks of the others, on the same chain.
    assert!(top - tips[3] <= 5, "the late validator caught up: tips {tips:?}");
    let common_height = *tips.iter().min().unwrap();
    for done in &finished[1..] {
        assert_eq!(done.node.canonical_hash(common_height), finished[0].node.canonical_hash(common_height));
    }
    // Finality advanced on every node, the late one included.
    assert!(finals.iter().all(|height| *height >= 10), "finality over TLS: finals {finals:?}");
    // Gossip reached every node, and each commits each block once (no double application).
    for (index, done) in finished.iter().enumerate() {
        let mut seen: BTreeMap<Hash, usize> = BTreeMap::new();
        for hash in &done.commits {
            *seen.entry(*hash).or_default() += 1;
        }
        assert!(seen.values().all(|count| *count == 1), "node {index} committed a block twice");
    }
    let late_blocks_committed = finished[3].commits.len() as u64;
    assert!(late_blocks_committed + 5 >= tips[3], "the late node applied the chain it synced");
}
