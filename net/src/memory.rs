//! An in-memory transport for driver tests: N nodes in one process, joined pairwise by links
//! that behave like the TLS transport's, behind the same [`NetHandle`] and [`NetEvent`]s. This
//! module owns the hub that routes commands between those nodes and the links' delivery tasks.
//!
//! What matches the TLS transport (see `handle` for the common contract): per-peer event order
//! (connected, messages in order, disconnected), a bounded events channel that makes senders
//! wait, a bounded queue per directed link that closes the link when full, best-effort sends,
//! `Disconnect` closing the link (which comes back after `reconnect_delay`, as a redial would),
//! and `Shutdown` ending the node's links and closing its events channel.
//!
//! What differs: every pair of nodes is linked from the start, addresses mean nothing (`AddPeer`
//! and `RemovePeer` are ignored), nothing is authenticated or encoded, and the test can cut and
//! heal links by hand ([`MemoryNetwork::cut`], [`MemoryNetwork::heal`]). Needs a tokio runtime.

use crate::handle::{NetCommand, NetEvent, NetHandle};
use crate::link::{link_stop, stopped, LinkStop};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tinychain_core::message::Message;
use tinychain_core::types::NodeId;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    pub events_capacity: usize,
    pub commands_capacity: usize,
    /// Messages waiting on one directed link; past this the link is closed.
    pub link_queue_messages_max: usize,
    /// How long a link closed by `Disconnect` or a full queue stays down.
    pub reconnect_delay: Duration,
}

impl Default for MemoryConfig {
    fn default() -> MemoryConfig {
        MemoryConfig {
            events_capacity: 1024,
            commands_capacity: 1024,
            link_queue_messages_max: 1024,
            reconnect_delay: Duration::from_millis(250),
        }
    }
}

/// The hub of an in-memory network; clone it to cut and heal links from a test.
#[derive(Clone)]
pub struct MemoryNetwork {
    hub: Arc<Mutex<Hub>>,
}

impl std::fmt::Debug for MemoryNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hub = lock(&self.hub);
        f.debug_struct("MemoryNetwork").field("nodes", &hub.nodes.len()).finish_non_exhaustive()
    }
}

struct NodeEntry {
    /// `None` once the node has shut down.
    events: Option<mpsc::Sender<NetEvent>>,
    /// Set when the node shuts down: links toward it end without another event.
    shutdown: Arc<watch::Sender<bool>>,
}

/// The two directions of one pair's link, while it is up.
struct LivePair {
    /// Indexed by direction: 0 is low id to high id, 1 the other way.
    queues: [mpsc::Sender<Message>; 2],
    stop: LinkStop,
}

#[derive(Default)]
struct Pair {
    /// Cut by the test: stays down until healed.
    is_cut: bool,
    live: Option<LivePair>,
    /// The latest delivery task of each direction: the next one waits for it, so a new link's
    /// `PeerConnected` always follows the old link's `PeerDisconnected`.
    last_tasks: [Option<JoinHandle<()>>; 2],
}

struct Hub {
    config: MemoryConfig,
    nodes: BTreeMap<NodeId, NodeEntry>,
    /// Keyed by (lower id, higher id).
    pairs: BTreeMap<(NodeId, NodeId), Pair>,
}

fn lock(hub: &Mutex<Hub>) -> MutexGuard<'_, Hub> {
    hub.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pair_key(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

/// The direction index of `from -> to` within its pair.
fn direction(from: NodeId, to: NodeId) -> usize {
    usize::from(from > to)
}

impl Hub {
    fn is_alive(&self, node: &NodeId) -> bool {
        self.nodes.get(node).is_some_and(|entry| entry.events.is_some())
    }

    /// Brings a pair's link up, unless it is up, cut, or either end has shut down.
    fn connect(&mut self, a: NodeId, b: NodeId) {
        let key = pair_key(a, b);
        if !self.is_alive(&a) || !self.is_alive(&b) {
            return;
        }
        let capacity = self.config.link_queue_messages_max;
        let ends = [(key.0, key.1), (key.1, key.0)];
        let targets: Vec<(mpsc::Sender<NetEvent>, watch::Receiver<bool>)> = ends
            .iter()
            .map(|(_, to)| {
                let entry = &self.nodes[to];
                (entry.events.clone().expect("checked alive"), entry.shutdown.subscribe())
            })
            .collect();
        let pair = self.pairs.entry(key).or_default();
        if pair.is_cut || pair.live.is_some() {
            return;
        }
        let stop = link_stop();
        let mut queues = Vec::with_capacity(2);
        for ((from, to), (events, target_shutdown)) in ends.into_iter().zip(targets) {
            let (sender, receiver) = mpsc::channel(capacity);
            let index = direction(from, to);
            let previous = pair.last_tasks[index].take();
            let link = DirectedLink { from, events, queue: receiver, stop: stop.subscribe(), target_shutdown };
            pair.last_tasks[index] = Some(tokio::spawn(link.deliver(previous)));
            queues.push(sender);
        }
        let queues: [mpsc::Sender<Message>; 2] = queues.try_into().expect("two directions");
        pair.live = Some(LivePair { queues, stop });
    }

    /// Takes a pair's link down; both ends get `PeerDisconnected`.
    fn disconnect(&mut self, a: NodeId, b: NodeId) {
        if let Some(pair) = self.pairs.get_mut(&pair_key(a, b)) {
            if let Some(live) = pair.live.take() {
                live.stop.send_replace(true);
            }
        }
    }

    fn queue(&self, from: NodeId, to: NodeId) -> Option<mpsc::Sender<Message>> {
        let live = self.pairs.get(&pair_key(from, to))?.live.as_ref()?;
        Some(live.queues[direction(from, to)].clone())
    }

    fn linked_peers(&self, node: NodeId) -> Vec<NodeId> {
        self.pairs
            .iter()
            .filter(|(_, pair)| pair.live.is_some())
            .filter_map(|(&(low, high), _)| match node {
                _ if node == low => Some(high),
                _ if node == high => Some(low),
                _ => None,
            })
            .collect()
    }
}

/// One direction of a link: delivers what `from` sends to the other end's events.
struct DirectedLink {
    from: NodeId,
    events: mpsc::Sender<NetEvent>,
    queue: mpsc::Receiver<Message>,
    stop: watch::Receiver<bool>,
    target_shutdown: watch::Receiver<bool>,
}

impl DirectedLink {
    async fn deliver(mut self, previous: Option<JoinHandle<()>>) {
        if let Some(previous) = previous {
            let _ = previous.await;
        }
        let from = self.from;
        if !self.send(NetEvent::PeerConnected(from)).await {
            return;
        }
        loop {
            tokio::select! {
                message = self.queue.recv() => match message {
                    Some(message) => {
                        if !self.send(NetEvent::MessageReceived { from, message }).await {
                            break;
                        }
                    }
                    None => break,
                },
                () = stopped(&mut self.stop) => break,
                () = stopped(&mut self.target_shutdown) => return,
            }
        }
        // The link is down: only the target's shutdown may cut this last event short.
        tokio::select! {
            _ = self.events.send(NetEvent::PeerDisconnected(from)) => {}
            () = stopped(&mut self.target_shutdown) => {}
        }
    }

    /// Delivers one event; false if the link stopped or the target is gone first.
    async fn send(&mut self, event: NetEvent) -> bool {
        tokio::select! {
            sent = self.events.send(event) => sent.is_ok(),
            () = stopped(&mut self.stop) => false,
            () = stopped(&mut self.target_shutdown) => false,
        }
    }
}

impl MemoryNetwork {
    /// A network of these nodes, every pair linked; one `(NetHandle, events)` per node, in the
    /// order given. Panics if a node is listed twice (a broken test, not bad input).
    pub fn new(nodes: &[NodeId], config: MemoryConfig) -> (MemoryNetwork, Vec<(NetHandle, mpsc::Receiver<NetEvent>)>) {
        let mut entries = BTreeMap::new();
        let mut receivers = Vec::with_capacity(nodes.len());
        for node in nodes {
            let (events, receiver) = mpsc::channel(config.events_capacity);
            let shutdown = Arc::new(watch::channel(false).0);
            let previous = entries.insert(*node, NodeEntry { events: Some(events), shutdown });
            assert!(previous.is_none(), "node {node} is listed twice");
            receivers.push(receiver);
        }
        let commands_capacity = config.commands_capacity;
        let network =
            MemoryNetwork { hub: Arc::new(Mutex::new(Hub { config, nodes: entries, pairs: BTreeMap::new() })) };
        {
            let mut hub = lock(&network.hub);
            for (index, a) in nodes.iter().enumerate() {
                for b in &nodes[index + 1..] {
                    hub.connect(*a, *b);
                }
            }
        }
        let endpoints = nodes
            .iter()
            .zip(receivers)
            .map(|(node, events)| {
                let (commands, receiver) = mpsc::channel(commands_capacity);
                tokio::spawn(network.clone().route(*node, receiver));
                (NetHandle::new(commands), events)
            })
            .collect();
        (network, endpoints)
    }

    /// Takes the link between two nodes down and keeps it down until [`heal`](Self::heal).
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut hub = lock(&self.hub);
        hub.pairs.entry(pair_key(a, b)).or_default().is_cut = true;
        hub.disconnect(a, b);
    }

    /// Lets the link between two nodes come back, at once.
    pub fn heal(&self, a: NodeId, b: NodeId) {
        let mut hub = lock(&self.hub);
        hub.pairs.entry(pair_key(a, b)).or_default().is_cut = false;
        hub.connect(a, b);
    }

    /// Takes a link down now and brings it back after the reconnect delay (as a redial would).
    fn drop_link(&self, a: NodeId, b: NodeId) {
        let delay = {
            let mut hub = lock(&self.hub);
            hub.disconnect(a, b);
            hub.config.reconnect_delay
        };
        let network = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            lock(&network.hub).connect(a, b);
        });
    }

    /// Enqueues a message on a link without waiting; a full queue drops the link.
    fn send(&self, from: NodeId, to: NodeId, message: Message) {
        let Some(queue) = lock(&self.hub).queue(from, to) else {
            debug!(%from, %to, "dropping a message: no link");
            return;
        };
        match queue.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(%from, %to, "closing link: its queue is full");
                self.drop_link(from, to);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Carries out one node's commands until it shuts down.
    async fn route(self, node: NodeId, mut commands: mpsc::Receiver<NetCommand>) {
        while let Some(command) = commands.recv().await {
            match command {
                NetCommand::SendTo { peer, message } => self.send(node, peer, message),
                NetCommand::Broadcast { message, except } => {
                    let peers = lock(&self.hub).linked_peers(node);
                    for peer in peers.into_iter().filter(|peer| Some(*peer) != except) {
                        self.send(node, peer, message.clone());
                    }
                }
                NetCommand::Disconnect { peer, reason } => {
                    debug!(%node, %peer, reason, "disconnecting");
                    self.drop_link(node, peer);
                }
                NetCommand::AddPeer { .. } | NetCommand::RemovePeer { .. } => {
                    debug!(%node, "ignoring an address command: addresses mean nothing in memory");
                }
                NetCommand::Shutdown => break,
            }
        }
        let mut hub = lock(&self.hub);
        let peers = hub.linked_peers(node);
        for peer in peers {
            hub.disconnect(node, peer);
        }
        if let Some(entry) = hub.nodes.get_mut(&node) {
            entry.events = None;
            entry.shutdown.send_replace(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use tinychain_core::testkit::validator_key;
    use tinychain_core::types::{Checkpoint, Hash};

    const WITHIN: Duration = Duration::from_secs(10);

    fn status(height: u64) -> Message {
        Message::Status {
            tip: Checkpoint { height, hash: Hash([1; 32]) },
            finalized: Checkpoint { height: 0, hash: Hash::default() },
        }
    }

    fn ids(count: usize) -> Vec<NodeId> {
        (0..count).map(|index| validator_key(index).address()).collect()
    }

    async fn next(events: &mut mpsc::Receiver<NetEvent>) -> NetEvent {
        tokio::time::timeout(WITHIN, events.recv()).await.expect("an event in time").expect("the channel is open")
    }

    async fn connected_peers(events: &mut mpsc::Receiver<NetEvent>, count: usize) -> BTreeSet<NodeId> {
        let mut peers = BTreeSet::new();
        while peers.len() < count {
            match next(events).await {
                NetEvent::PeerConnected(peer) => assert!(peers.insert(peer)),
                other => panic!("expected a connection, got {other:?}"),
            }
        }
        peers
    }

    fn fast() -> MemoryConfig {
        MemoryConfig { reconnect_delay: Duration::from_millis(20), ..MemoryConfig::default() }
    }

    #[tokio::test]
    async fn every_node_connects_and_messages_reach_their_targets_in_order() {
        let ids = ids(3);
        let (_network, mut nodes) = MemoryNetwork::new(&ids, fast());
        for (index, (_, events)) in nodes.iter_mut().enumerate() {
            let others: BTreeSet<NodeId> = ids.iter().copied().filter(|id| *id != ids[index]).collect();
            assert_eq!(connected_peers(events, 2).await, others);
        }
        nodes[0].0.broadcast(status(1), Some(ids[2])).await.unwrap();
        nodes[0].0.send_to(ids[2], status(2)).await.unwrap();
        nodes[0].0.broadcast(status(3), None).await.unwrap();
        assert_eq!(next(&mut nodes[1].1).await, NetEvent::MessageReceived { from: ids[0], message: status(1) });
        assert_eq!(next(&mut nodes[1].1).await, NetEvent::MessageReceived { from: ids[0], message: status(3) });
        assert_eq!(next(&mut nodes[2].1).await, NetEvent::MessageReceived { from: ids[0], message: status(2) });
        assert_eq!(next(&mut nodes[2].1).await, NetEvent::MessageReceived { from: ids[0], message: status(3) });
    }

    #[tokio::test]
    async fn disconnect_takes_the_link_down_then_it_comes_back_and_cut_keeps_it_down() {
        let ids = ids(2);
        let (network, mut nodes) = MemoryNetwork::new(&ids, fast());
        for (_, events) in &mut nodes {
            connected_peers(events, 1).await;
        }
        nodes[0].0.disconnect(ids[1], "forged report").await.unwrap();
        for (index, (_, events)) in nodes.iter_mut().enumerate() {
            let peer = ids[1 - index];
            assert_eq!(next(events).await, NetEvent::PeerDisconnected(peer));
            assert_eq!(next(events).await, NetEvent::PeerConnected(peer), "the link comes back");
        }
        network.cut(ids[0], ids[1]);
        assert_eq!(next(&mut nodes[0].1).await, NetEvent::PeerDisconnected(ids[1]));
        let quiet = tokio::time::timeout(Duration::from_millis(100), nodes[0].1.recv()).await;
        assert!(quiet.is_err(), "a cut link does not come back by itself: {quiet:?}");
        network.heal(ids[0], ids[1]);
        assert_eq!(next(&mut nodes[0].1).await, NetEvent::PeerConnected(ids[1]));
        nodes[1].0.send_to(ids[0], status(10)).await.unwrap();
        assert_eq!(next(&mut nodes[0].1).await, NetEvent::MessageReceived { from: ids[1], message: status(10) });
    }

    #[tokio::test]
    async fn a_full_queue_drops_the_link_instead_of_growing() {
        let ids = ids(2);
        let config = MemoryConfig { events_capacity: 1, link_queue_messages_max: 4, ..fast() };
        let (_network, mut nodes) = MemoryNetwork::new(&ids, config);
        connected_peers(&mut nodes[1].1, 1).await;
        // Node 1 does not read: one event fills its channel, one waits in the delivery task,
        // four fill the queue, and the next send finds the queue full.
        for height in 0..10 {
            nodes[0].0.send_to(ids[1], status(height)).await.unwrap();
        }
        let mut events = Vec::new();
        while !events.contains(&NetEvent::PeerDisconnected(ids[0])) {
            events.push(next(&mut nodes[1].1).await);
        }
        let delivered = events.iter().filter(|event| matches!(event, NetEvent::MessageReceived { .. })).count();
        assert!(delivered < 10, "messages were dropped with the link: {events:?}");
        assert_eq!(next(&mut nodes[1].1).await, NetEvent::PeerConnected(ids[0]), "and the link comes back");
    }

    #[tokio::test]
    async fn shutdown_disconnects_the_node_everywhere_and_closes_its_events() {
        let ids = ids(3);
        let (_network, mut nodes) = MemoryNetwork::new(&ids, fast());
        for (_, events) in &mut nodes {
            connected_peers(events, 2).await;
        }
        nodes[2].0.shutdown().await.unwrap();
        for (_, events) in &mut nodes[..2] {
            assert_eq!(next(events).await, NetEvent::PeerDisconnected(ids[2]));
        }
        let closed = tokio::time::timeout(WITHIN, async { while nodes[2].1.recv().await.is_some() {} }).await;
        assert!(closed.is_ok(), "the events channel closes");
        // The others still talk.
        nodes[0].0.send_to(ids[1], status(5)).await.unwrap();
        assert_eq!(next(&mut nodes[1].1).await, NetEvent::MessageReceived { from: ids[0], message: status(5) });
    }
}
