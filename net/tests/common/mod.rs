//! Helpers shared by the loopback tests: a genesis whose validators listen on free loopback
//! ports, nodes started on it, and waiting on their events with generous deadlines (a wait that
//! times out fails the test; none of them is a measurement).

#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use tinychain_core::genesis::{genesis_block, Genesis};
use tinychain_core::message::Message;
use tinychain_core::testkit::{fast_genesis, validator_key};
use tinychain_core::types::{Checkpoint, Hash, NodeId};
use tinychain_net::discovery::PeerStore;
use tinychain_net::handle::{NetEvent, NetHandle};
use tinychain_net::manager::{start, NetConfig, NetLimits, NetStats, NetTask};
use tokio::sync::mpsc;

/// How long any wait for something that should happen may take before the test fails.
pub const WITHIN: Duration = Duration::from_secs(20);

/// Distinct free loopback addresses: bound (so they are distinct), then released for the nodes.
/// Another process could take one in between; on a test machine that does not happen.
pub fn free_addrs(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")).collect();
    listeners.iter().map(|listener| listener.local_addr().expect("a bound listener has an address")).collect()
}

/// A genesis of `validators` validators, each at a free loopback port.
pub struct Cluster {
    pub genesis: Genesis,
    pub genesis_hash: Hash,
    pub addrs: Vec<SocketAddr>,
}

impl Cluster {
    pub fn new(validators: usize) -> Cluster {
        let addrs = free_addrs(validators);
        let mut genesis = fast_genesis(validators, 0);
        for (validator, addr) in genesis.validators.iter_mut().zip(&addrs) {
            validator.addr = addr.to_string();
        }
        let genesis_hash = genesis_block(&genesis).1.tip.hash;
        Cluster { genesis, genesis_hash, addrs }
    }

    pub fn id(&self, index: usize) -> NodeId {
        validator_key(index).address()
    }

    pub fn ids(&self, indices: impl IntoIterator<Item = usize>) -> BTreeSet<NodeId> {
        indices.into_iter().map(|index| self.id(index)).collect()
    }

    pub fn config(&self, index: usize) -> NetConfig {
        NetConfig {
            listen_addr: self.addrs[index],
            key: validator_key(index),
            genesis: self.genesis.clone(),
            genesis_hash: self.genesis_hash,
            seeds: Vec::new(),
            limits: NetLimits::default(),
        }
    }

    pub async fn start(&self, index: usize) -> TestNode {
        TestNode::start(index, self.config(index), PeerStore::none()).await
    }
}

/// A running TLS transport and what its driver has seen.
pub struct TestNode {
    pub index: usize,
    pub id: NodeId,
    pub handle: NetHandle,
    pub events: mpsc::Receiver<NetEvent>,
    pub task: NetTask,
    /// Peers connected, as the events so far say.
    pub connected: BTreeSet<NodeId>,
    /// Every event so far, in order.
    pub history: Vec<NetEvent>,
}

impl TestNode {
    pub async fn start(index: usize, config: NetConfig, peer_store: PeerStore) -> TestNode {
        let id = config.key.address();
        let (handle, events, task) = start(config, peer_store).await.expect("the transport starts");
        TestNode { index, id, handle, events, task, connected: BTreeSet::new(), history: Vec::new() }
    }

    pub fn stats(&self) -> NetStats {
        self.task.stats()
    }

    /// The next event within `within`, or `None` if none came. Checks the per-peer order.
    pub async fn next_event(&mut self, within: Duration) -> Option<NetEvent> {
        let event = tokio::time::timeout(within, self.events.recv()).await.ok()?;
        let event = event.expect("the events channel stays open until shutdown");
        match &event {
            NetEvent::PeerConnected(peer) => {
                assert!(
                    self.connected.insert(*peer),
                    "node {}: {peer} connected twice without a disconnect",
                    self.index
                );
            }
            NetEvent::PeerDisconnected(peer) => {
                assert!(self.connected.remove(peer), "node {}: {peer} disconnected while not connected", self.index);
            }
            NetEvent::MessageReceived { from, .. } => {
                assert!(self.connected.contains(from), "node {}: a message from {from}, not connected", self.index);
            }
        }
        self.history.push(event.clone());
        Some(event)
    }

    /// Waits until the connected peers are exactly `peers`.
    pub async fn wait_connected_to(&mut self, peers: &BTreeSet<NodeId>) {
        let deadline = tokio::time::Instant::now() + WITHIN;
        while &self.connected != peers {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.next_event(left).await.is_none() {
                panic!("node {}: connected to {:?}, expected {:?}", self.index, self.connected, peers);
            }
        }
    }

    /// The next message received, skipping connection events.
    pub async fn next_message(&mut self) -> (NodeId, Message) {
        let deadline = tokio::time::Instant::now() + WITHIN;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(NetEvent::MessageReceived { from, message }) => return (from, message),
                Some(_) => {}
                None => panic!("node {}: no message arrived", self.index),
            }
        }
    }

    /// Drains events for `period`, returning the messages among them.
    pub async fn messages_during(&mut self, period: Duration) -> Vec<(NodeId, Message)> {
        let deadline = tokio::time::Instant::now() + period;
        let mut messages = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(NetEvent::MessageReceived { from, message }) => messages.push((from, message)),
                Some(_) => {}
                None => return messages,
            }
        }
    }

    /// Shuts the transport down and waits for its end (the events channel closes too).
    pub async fn shut_down(mut self) {
        self.handle.shutdown().await.expect("the transport is running");
        tokio::time::timeout(WITHIN, self.task.join())
            .await
            .expect("shutdown ends the transport")
            .expect("the transport ends cleanly");
        let end = tokio::time::timeout(WITHIN, async { while self.events.recv().await.is_some() {} }).await;
        assert!(end.is_ok(), "node {}: the events channel closes after shutdown", self.index);
    }
}

/// Waits until no node has a dial or an inbound handshake in progress and each has `links`
/// links: after that no simultaneous-dial race can replace a link.
pub async fn wait_settled(nodes: &[&TestNode], links: usize) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        let settled = nodes.iter().all(|node| {
            let stats = node.stats();
            stats.links == links && stats.dials_in_flight == 0 && stats.pending_handshakes == 0
        });
        if settled {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the nodes did not settle: {:?}",
            nodes.iter().map(|node| node.stats()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small message whose height tells test messages apart.
pub fn status(height: u64) -> Message {
    Message::Status {
        tip: Checkpoint { height, hash: Hash([height as u8; 32]) },
        finalized: Checkpoint { height: 0, hash: Hash::default() },
    }
}
