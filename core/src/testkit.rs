//! Helpers for tests, benchmarks and the simulator: seeded keys, a fast test genesis, an
//! in-memory model of storage that carries out `CommitBlocks`, and a small lock-step network of
//! real `Node`s with fixed latency. Not used by the production node.

use crate::crypto::{Keypair, SignatureCache};
use crate::genesis::{genesis_block, Allocation, Genesis, Parameters, ValidatorEntry};
use crate::mempool::{DroppedTransfer, MempoolConfig};
use crate::message::Message;
use crate::node::{Action, ChainOp, Event, Node, NodeConfig, Restored, TraceEvent};
use crate::state::{ChainState, StateDelta};
use crate::types::{Address, Block, Height, Transfer, Vote, UNITS_PER_COIN};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A key derived from a label and an index: the same inputs always give the same key.
pub fn seeded_key(label: &str, index: u64) -> Keypair {
    let seed = blake3::hash(format!("tinychain-testkit/{label}/{index}").as_bytes());
    Keypair::from_secret_bytes(seed.as_bytes())
}

pub fn validator_key(index: usize) -> Keypair {
    seeded_key("validator", index as u64)
}

pub fn account_key(index: usize) -> Keypair {
    seeded_key("account", index as u64)
}

/// A genesis with `validators` validators and `accounts` funded accounts (1,000 TC each),
/// `block_interval_ms` 100 and `producer_timeout_ms` 500 so tests run quickly on virtual time.
pub fn fast_genesis(validators: usize, accounts: usize) -> Genesis {
    Genesis {
        chain_id: "tinychain-test".into(),
        genesis_time_ms: 0,
        validators: (0..validators)
            .map(|index| ValidatorEntry {
                id: validator_key(index).address(),
                name: format!("node{index}"),
                addr: format!("127.0.0.1:{}", 7740 + index),
            })
            .collect(),
        allocations: (0..accounts)
            .map(|index| Allocation { address: account_key(index).address(), amount: 1_000 * UNITS_PER_COIN })
            .collect(),
        parameters: Parameters {
            block_interval_ms: 100,
            producer_timeout_ms: 500,
            max_clock_drift_ms: 50,
            ..Parameters::default()
        },
    }
}

/// Validator `index` of `genesis` at genesis, as tests and `LocalNet` run it: one verify thread,
/// the default mempool, unmeasured metrics (0, 0).
pub fn validator_node(genesis: &Genesis, index: usize, cache: &Arc<SignatureCache>) -> Node {
    let config = NodeConfig {
        genesis: genesis.clone(),
        key: validator_key(index),
        verify_threads: 1,
        mempool: MempoolConfig::default(),
        unmeasured_metrics: (0, 0),
    };
    Node::new(config, cache.clone())
}

pub use crate::validate::sign_transfer;

/// What a node's database holds, modelled in memory: canonical blocks with their undo, the
/// state after the tip, and the last vote. It carries out `CommitBlocks` and
/// `PersistReportState` exactly as the real storage must.
#[derive(Clone, Debug)]
pub struct ModelStorage {
    pub blocks: BTreeMap<Height, (Arc<Block>, StateDelta)>,
    pub genesis_block: Arc<Block>,
    pub state: ChainState,
    pub last_vote: Option<Vote>,
    pub report_sequence: u64,
    /// The node's latest final block, as its last commit reported it.
    pub finalized: crate::types::Checkpoint,
}

impl ModelStorage {
    pub fn new(genesis: &Genesis) -> ModelStorage {
        let (block, state) = genesis_block(genesis);
        let finalized = state.tip;
        ModelStorage {
            blocks: BTreeMap::new(),
            genesis_block: Arc::new(block),
            state,
            last_vote: None,
            report_sequence: 0,
            finalized,
        }
    }

    /// Carries out the storage actions; returns true if it handled the action.
    pub fn carry_out(&mut self, action: &Action) -> bool {
        match action {
            Action::CommitBlocks(commit) => {
                for op in &commit.ops {
                    match op {
                        ChainOp::Rollback { height, undo, .. } => {
                            assert_eq!(*height, self.state.tip.height, "rollbacks start at the tip");
                            self.state.apply_delta(undo);
                            self.blocks.remove(height);
                        }
                        ChainOp::Apply { block, delta, undo, .. } => {
                            assert_eq!(block.header.prev_hash, self.state.tip.hash, "applies extend the tip");
                            self.state.apply_delta(delta);
                            self.blocks.insert(block.header.height, (block.clone(), undo.clone()));
                        }
                    }
                }
                assert_eq!(self.state.tip, commit.tip, "storage and core agree on the tip");
                self.finalized = commit.finalized;
                true
            }
            Action::PersistReportState { last_vote, report_sequence } => {
                self.last_vote = *last_vote;
                self.report_sequence = *report_sequence;
                true
            }
            _ => false,
        }
    }

    pub fn block_at(&self, height: Height) -> Option<Arc<Block>> {
        if height == 0 {
            return Some(self.genesis_block.clone());
        }
        self.blocks.get(&height).map(|(block, _)| block.clone())
    }

    /// The answer to `Action::ServeBlocks`: the stored canonical blocks from `from_height` to
    /// `to_height`, stopping at the first missing one and cut to
    /// `limits::SYNC_RESPONSE_BYTES_MAX` (at least one block), as the driver contract says.
    pub fn blocks_to_serve(&self, from_height: Height, to_height: Height) -> Vec<Arc<Block>> {
        let mut blocks = Vec::new();
        let mut bytes = 0;
        for height in from_height..=to_height {
            let Some(block) = self.block_at(height) else { break };
            bytes += crate::codec::encoded_len(&*block);
            if bytes > crate::limits::SYNC_RESPONSE_BYTES_MAX && !blocks.is_empty() {
                break;
            }
            blocks.push(block);
        }
        blocks
    }

    /// The `Restored` event a restarting node gets from this storage.
    pub fn restored(&self) -> Restored {
        let finalized = self.finalized;
        let mut canonical_hashes = vec![crate::validate::block_hash(&self.genesis_block.header)];
        canonical_hashes.extend(self.blocks.values().map(|(block, _)| crate::validate::block_hash(&block.header)));
        Restored {
            state: self.state.clone(),
            canonical_hashes,
            final_block: self.block_at(finalized.height).expect("the final block is stored"),
            recent_blocks: self
                .blocks
                .range(finalized.height + 1..)
                .map(|(_, (block, undo))| (block.clone(), undo.clone()))
                .collect(),
            last_vote: self.last_vote,
            report_sequence: self.report_sequence,
        }
    }
}

/// A lock-step network of real nodes on one virtual clock with a fixed latency, for tests. The
/// simulator crate is the full-featured version (faults, drift, seeds); this one is small enough
/// to read in one sitting and has no randomness at all.
pub struct LocalNet {
    pub now_ms: u64,
    pub latency_ms: u64,
    pub nodes: Vec<Node>,
    pub storage: Vec<ModelStorage>,
    pub up: Vec<bool>,
    /// `blocked[a][b]`: messages from a to b are dropped.
    pub blocked: Vec<Vec<bool>>,
    /// `extra_delay_ms[a][b]`: added to `latency_ms` on the link from a to b (to vary delivery
    /// orders and make producers race).
    pub extra_delay_ms: Vec<Vec<u64>>,
    pub traces: Vec<(u64, usize, TraceEvent)>,
    /// Every `TxDropped` a node reported: (time, node index, what it dropped).
    pub dropped: Vec<(u64, usize, DroppedTransfer)>,
    wake_at: Vec<u64>,
    queue: BTreeMap<(u64, u64), (usize, usize, Message)>,
    sequence: u64,
    cache: Arc<SignatureCache>,
    genesis: Genesis,
}

impl LocalNet {
    pub fn new(genesis: Genesis, latency_ms: u64) -> LocalNet {
        let count = genesis.validators.len();
        let cache = Arc::new(SignatureCache::new(crate::limits::SIGNATURE_CACHE_ENTRIES_MAX));
        let nodes: Vec<Node> = (0..count).map(|index| validator_node(&genesis, index, &cache)).collect();
        let storage = (0..count).map(|_| ModelStorage::new(&genesis)).collect();
        let mut net = LocalNet {
            now_ms: genesis.genesis_time_ms,
            latency_ms,
            nodes,
            storage,
            up: vec![true; count],
            blocked: vec![vec![false; count]; count],
            extra_delay_ms: vec![vec![0; count]; count],
            traces: Vec::new(),
            dropped: Vec::new(),
            wake_at: vec![0; count],
            queue: BTreeMap::new(),
            sequence: 0,
            cache,
            genesis,
        };
        for a in 0..count {
            for b in 0..count {
                if a != b {
                    let peer = net.nodes[b].node_id();
                    net.deliver(a, Event::PeerConnected { peer });
                }
            }
        }
        net
    }

    fn index_of(&self, id: &Address) -> usize {
        self.nodes.iter().position(|node| &node.node_id() == id).expect("peers are validators")
    }

    /// Steps node `index` with `event` and carries out its actions.
    pub fn deliver(&mut self, index: usize, event: Event) {
        if !self.up[index] {
            return;
        }
        let actions = self.nodes[index].step(self.now_ms, event);
        for action in actions {
            if self.storage[index].carry_out(&action) {
                continue;
            }
            match action {
                Action::SendTo { peer, message } => {
                    let to = self.index_of(&peer);
                    self.send(index, to, message);
                }
                Action::Broadcast { message, except } => {
                    for to in 0..self.nodes.len() {
                        if to != index && Some(self.nodes[to].node_id()) != except {
                            self.send(index, to, message.clone());
                        }
                    }
                }
                Action::ServeBlocks { peer, from_height, to_height } => {
                    let blocks = self.storage[index].blocks_to_serve(from_height, to_height);
                    let to = self.index_of(&peer);
                    self.send(index, to, Message::Blocks(blocks));
                }
                Action::WakeAt(at_ms) => self.wake_at[index] = at_ms,
                Action::Trace(event) => self.traces.push((self.now_ms, index, event)),
                Action::TxDropped(dropped) => self.dropped.push((self.now_ms, index, *dropped)),
                Action::DisconnectPeer { .. } | Action::TxAccepted { .. } | Action::TxRejected { .. } => {}
                Action::CommitBlocks(_) | Action::PersistReportState { .. } => unreachable!("storage handled it"),
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, message: Message) {
        if self.blocked[from][to] {
            return;
        }
        // Every message goes through the real codec, as on the wire.
        let decoded = Message::decode(&message.encode()).expect("the codec round-trips every message");
        self.sequence += 1;
        let delay_ms = self.latency_ms + self.extra_delay_ms[from][to];
        self.queue.insert((self.now_ms + delay_ms, self.sequence), (from, to, decoded));
    }

    /// Runs until virtual time `until_ms`, delivering messages and ticks in time order.
    pub fn run_until(&mut self, until_ms: u64) {
        loop {
            let next_message = self.queue.keys().next().map(|(at, _)| *at);
            let next_wake = (0..self.nodes.len()).filter(|&i| self.up[i]).map(|i| (self.wake_at[i], i)).min();
            let message_first = match (next_message, next_wake) {
                (Some(at), Some((wake, _))) => at <= wake,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let at = if message_first { next_message.expect("checked") } else { next_wake.expect("checked").0 };
            if at > until_ms {
                break;
            }
            self.now_ms = self.now_ms.max(at);
            if message_first {
                let (key, (from, to, message)) = self.queue.pop_first().expect("checked");
                let _ = key;
                if self.up[to] {
                    let from_id = self.nodes[from].node_id();
                    self.deliver(to, Event::MessageReceived { from: from_id, message });
                }
            } else {
                let index = next_wake.expect("checked").1;
                self.wake_at[index] = u64::MAX;
                self.deliver(index, Event::Tick);
            }
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    /// Stops a node: it loses its memory and in-flight messages; its storage stays.
    pub fn crash(&mut self, index: usize) {
        self.up[index] = false;
        self.queue.retain(|_, (_, to, _)| *to != index);
        let peer = self.nodes[index].node_id();
        for other in 0..self.nodes.len() {
            if other != index {
                self.deliver(other, Event::PeerDisconnected { peer });
            }
        }
    }

    /// Restarts a crashed node from its storage and reconnects it.
    pub fn restart(&mut self, index: usize) {
        self.nodes[index] = validator_node(&self.genesis, index, &self.cache);
        self.up[index] = true;
        self.wake_at[index] = self.now_ms;
        let restored = self.storage[index].restored();
        self.deliver(index, Event::Restored(Box::new(restored)));
        for other in 0..self.nodes.len() {
            if other != index {
                let peer_other = self.nodes[other].node_id();
                let peer_self = self.nodes[index].node_id();
                self.deliver(index, Event::PeerConnected { peer: peer_other });
                self.deliver(other, Event::PeerConnected { peer: peer_self });
            }
        }
    }

    /// Blocks all traffic between the two groups (both directions).
    pub fn partition(&mut self, group: &[usize]) {
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                self.blocked[a][b] = group.contains(&a) != group.contains(&b);
            }
        }
    }

    /// Heals every partition and lets nodes exchange tips again.
    pub fn heal(&mut self) {
        for row in self.blocked.iter_mut() {
            row.fill(false);
        }
        for a in 0..self.nodes.len() {
            for b in 0..self.nodes.len() {
                if a != b && self.up[a] && self.up[b] {
                    let peer = self.nodes[b].node_id();
                    self.deliver(a, Event::PeerConnected { peer });
                }
            }
        }
    }

    pub fn submit(&mut self, index: usize, transfer: Transfer) {
        self.deliver(index, Event::TxSubmitted(transfer));
    }

    pub fn committed(&self) -> Vec<(u64, usize, Height, u32)> {
        self.traces
            .iter()
            .filter_map(|(at, node, event)| match event {
                TraceEvent::BlockCommitted { height, rank, .. } => Some((*at, *node, *height, *rank)),
                _ => None,
            })
            .collect()
    }
}
