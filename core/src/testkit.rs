//! Helpers for tests, benchmarks and the simulator: seeded keys, a fast test genesis, an
//! in-memory model of storage that carries out `CommitBlocks`, and a small lock-step network of
//! real `Node`s with fixed latency. Not used by the production node.

use crate::crypto::{Keypair, SignatureCache};
use crate::driver::{CommittedTransfers, Driver, JournalAddError, Output, Store};
use crate::genesis::{genesis_block, Allocation, Genesis, Parameters, ValidatorEntry};
use crate::mempool::{DroppedTransfer, MempoolConfig};
use crate::message::Message;
use crate::node::{Action, ChainOp, Commit, Event, Node, NodeConfig, Restored, TraceEvent};
use crate::state::{ChainState, StateDelta};
use crate::types::{Address, Block, Hash, Height, Transfer, Vote, UNITS_PER_COIN};
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
    /// The pending-transfer journal, by (sender, nonce, id), as the server keeps it.
    pub journal: BTreeMap<(Address, u64, Hash), Transfer>,
    /// The most entries the journal holds (`journal_add` refuses past it).
    pub journal_capacity: usize,
}

impl ModelStorage {
    pub fn new(genesis: &Genesis) -> ModelStorage {
        let (block, mut state) = genesis_block(genesis);
        // Storage never computes a state root: it keeps no account tree (a node builds its own
        // when it restores this state).
        state.account_tree = Default::default();
        let finalized = state.tip;
        ModelStorage {
            blocks: BTreeMap::new(),
            genesis_block: Arc::new(block),
            state,
            last_vote: None,
            report_sequence: 0,
            finalized,
            journal: BTreeMap::new(),
            journal_capacity: usize::MAX,
        }
    }

    /// Writes a commit as the real storage does: rollbacks and applies in order, the new final
    /// checkpoint, and the journal entries whose (sender, nonce) a newly final block used
    /// deleted.
    pub fn commit(&mut self, commit: &Commit) {
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
        let previous_final = self.finalized.height;
        self.finalized = commit.finalized;
        if !self.journal.is_empty() && commit.finalized.height > previous_final {
            let slots: std::collections::BTreeSet<(Address, u64)> = self
                .blocks
                .range(previous_final + 1..=commit.finalized.height)
                .flat_map(|(_, (block, _))| block.transfers.iter().map(|transfer| (transfer.from, transfer.nonce)))
                .collect();
            self.journal.retain(|(from, nonce, _), _| !slots.contains(&(*from, *nonce)));
        }
    }

    /// The canonical transfer that used (`from`, `nonce`): its id and height.
    fn find_committed(&self, from: &Address, nonce: u64) -> Option<(Hash, Height)> {
        self.blocks.values().rev().find_map(|(block, _)| {
            let transfer = block.transfers.iter().find(|transfer| transfer.from == *from && transfer.nonce == nonce)?;
            Some((crate::validate::transfer_id(transfer), block.header.height))
        })
    }

    /// Carries out the storage actions; returns true if it handled the action.
    pub fn carry_out(&mut self, action: &Action) -> bool {
        match action {
            Action::CommitBlocks(commit) => {
                self.commit(commit);
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

/// The model store never fails.
impl CommittedTransfers for ModelStorage {
    type Error = std::convert::Infallible;

    fn committed_height(&mut self, id: &Hash, transfer: &Transfer) -> Result<Option<Height>, Self::Error> {
        Ok(self.find_committed(&transfer.from, transfer.nonce).filter(|(by, _)| by == id).map(|(_, height)| height))
    }
    fn committed_at(&mut self, from: &Address, nonce: u64) -> Result<Option<(Hash, Height)>, Self::Error> {
        Ok(self.find_committed(from, nonce))
    }
}

impl Store for ModelStorage {
    fn restored(&mut self) -> Result<Restored, Self::Error> {
        Ok(ModelStorage::restored(self))
    }
    fn commit(&mut self, commit: &Commit) -> Result<(), Self::Error> {
        ModelStorage::commit(self, commit);
        Ok(())
    }
    fn persist_report_state(&mut self, last_vote: Option<Vote>, report_sequence: u64) -> Result<(), Self::Error> {
        self.last_vote = last_vote;
        self.report_sequence = report_sequence;
        Ok(())
    }
    fn blocks_to_serve(&mut self, from_height: Height, to_height: Height) -> Result<Vec<Arc<Block>>, Self::Error> {
        Ok(ModelStorage::blocks_to_serve(self, from_height, to_height))
    }
    fn record_dropped(&mut self, dropped: &[DroppedTransfer]) -> Result<(), Self::Error> {
        for dropped in dropped {
            self.journal.remove(&(dropped.transfer.from, dropped.transfer.nonce, dropped.id));
        }
        Ok(())
    }
    fn journal(&mut self) -> Result<Vec<(Hash, Transfer)>, Self::Error> {
        Ok(self.journal.iter().map(|((_, _, id), transfer)| (*id, transfer.clone())).collect())
    }
    fn journal_room(&mut self) -> (usize, usize) {
        (self.journal.len(), self.journal_capacity)
    }
    fn journal_add(&mut self, entries: &[(Hash, Transfer)]) -> Result<(), JournalAddError<Self::Error>> {
        let new = entries
            .iter()
            .filter(|(id, transfer)| !self.journal.contains_key(&(transfer.from, transfer.nonce, *id)))
            .count();
        if self.journal.len() + new > self.journal_capacity {
            return Err(JournalAddError::Full { held: self.journal.len(), max: self.journal_capacity });
        }
        for (id, transfer) in entries {
            self.journal.insert((transfer.from, transfer.nonce, *id), transfer.clone());
        }
        Ok(())
    }
    fn journal_remove(&mut self, entries: &[(Hash, Transfer)]) -> Result<(), Self::Error> {
        for (id, transfer) in entries {
            self.journal.remove(&(transfer.from, transfer.nonce, *id));
        }
        Ok(())
    }
}

/// A lock-step network of real nodes on one virtual clock with a fixed latency, for tests. Each
/// node runs in the one `Driver` over a `ModelStorage`, as in the simulator and on a server.
/// The simulator crate is the full-featured version (faults, drift, seeds); this one is small
/// enough to read in one sitting and has no randomness at all.
pub struct LocalNet {
    pub now_ms: u64,
    pub latency_ms: u64,
    pub drivers: Vec<Driver<ModelStorage>>,
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
        let drivers = (0..count)
            .map(|index| Driver::new(validator_node(&genesis, index, &cache), ModelStorage::new(&genesis)))
            .collect();
        let mut net = LocalNet {
            now_ms: genesis.genesis_time_ms,
            latency_ms,
            drivers,
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
                    let peer = net.drivers[b].node.node_id();
                    net.deliver(a, Event::PeerConnected { peer });
                }
            }
        }
        net
    }

    /// Every node, in validator order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.drivers.iter().map(|driver| &driver.node)
    }

    fn index_of(&self, id: &Address) -> usize {
        self.drivers.iter().position(|driver| &driver.node.node_id() == id).expect("peers are validators")
    }

    /// Steps node `index` with `event` and carries out its outputs.
    pub fn deliver(&mut self, index: usize, event: Event) {
        if !self.up[index] {
            return;
        }
        let Ok(_) = self.drivers[index].step(self.now_ms, event);
        self.carry_out(index);
    }

    /// Carries out what node `index`'s driver owes.
    fn carry_out(&mut self, index: usize) {
        for output in self.drivers[index].take_outputs() {
            match output {
                Output::Send { peer, message } => {
                    let to = self.index_of(&peer);
                    self.send(index, to, message);
                }
                Output::Broadcast { message, except } => {
                    for to in 0..self.drivers.len() {
                        if to != index && Some(self.drivers[to].node.node_id()) != except {
                            self.send(index, to, message.clone());
                        }
                    }
                }
                Output::WakeAt(at_ms) => self.wake_at[index] = at_ms,
                Output::Trace(event) => self.traces.push((self.now_ms, index, event)),
                Output::Dropped(dropped) => self.dropped.push((self.now_ms, index, dropped)),
                Output::Disconnect { .. } | Output::Committed(_) => {}
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
            let next_wake = (0..self.drivers.len()).filter(|&i| self.up[i]).map(|i| (self.wake_at[i], i)).min();
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
                let (_, (from, to, message)) = self.queue.pop_first().expect("checked");
                if self.up[to] {
                    let from_id = self.drivers[from].node.node_id();
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
        let peer = self.drivers[index].node.node_id();
        for other in 0..self.drivers.len() {
            if other != index {
                self.deliver(other, Event::PeerDisconnected { peer });
            }
        }
    }

    /// Restarts a crashed node from its storage (the driver's `start`: restore, then the
    /// journal) and reconnects it.
    pub fn restart(&mut self, index: usize) {
        self.drivers[index].node = validator_node(&self.genesis, index, &self.cache);
        self.up[index] = true;
        self.wake_at[index] = self.now_ms;
        let Ok(_) = self.drivers[index].start(self.now_ms);
        self.carry_out(index);
        for other in 0..self.drivers.len() {
            if other != index {
                let peer_other = self.drivers[other].node.node_id();
                let peer_self = self.drivers[index].node.node_id();
                self.deliver(index, Event::PeerConnected { peer: peer_other });
                self.deliver(other, Event::PeerConnected { peer: peer_self });
            }
        }
    }

    /// Blocks all traffic between the two groups (both directions).
    pub fn partition(&mut self, group: &[usize]) {
        for a in 0..self.drivers.len() {
            for b in 0..self.drivers.len() {
                self.blocked[a][b] = group.contains(&a) != group.contains(&b);
            }
        }
    }

    /// Heals every partition and lets nodes exchange tips again.
    pub fn heal(&mut self) {
        for row in self.blocked.iter_mut() {
            row.fill(false);
        }
        for a in 0..self.drivers.len() {
            for b in 0..self.drivers.len() {
                if a != b && self.up[a] && self.up[b] {
                    let peer = self.drivers[b].node.node_id();
                    self.deliver(a, Event::PeerConnected { peer });
                }
            }
        }
    }

    /// A client of node `index` submits a transfer (journaled when accepted, as on a server).
    pub fn submit(&mut self, index: usize, transfer: Transfer) {
        if !self.up[index] {
            return;
        }
        let driver = &mut self.drivers[index];
        let Ok(_) = driver.submit(self.now_ms, transfer);
        let Ok(_) = driver.finish_submits();
        self.carry_out(index);
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
