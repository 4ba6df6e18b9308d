//! One validator's whole behaviour as a sans-IO state machine: `Node::step(now_ms, event)`
//! returns the actions to carry out.
//!
//! # The driver contract
//!
//! The driver (the simulator, or the real node's event loop) owns every clock, socket and disk.
//! It calls `step` with the current time in milliseconds and one `Event`, then carries out the
//! returned actions **in order, all of them, before taking the next event**:
//!
//! - `CommitBlocks` is one atomic storage transaction (roll back and apply blocks in the order
//!   given). `PersistReportState` is persisted before the next action runs: it always comes
//!   before the `Broadcast` of the report that carries the vote, so a restarted node cannot
//!   vote twice.
//! - `SendTo` / `Broadcast` deliver messages to authenticated peers (best effort).
//! - `ServeBlocks` reads canonical blocks from storage and sends them to the peer as one
//!   `Message::Blocks`, cut to `limits::SYNC_RESPONSE_BYTES_MAX`.
//! - `WakeAt(ms)` replaces any earlier wake-up: deliver `Event::Tick` at or after that time.
//! - `TxAccepted` / `TxRejected` answer a local `TxSubmitted`; `TxDropped` says a pending
//!   transfer left the mempool without being included, and why (the node's RPC answers `get_tx`
//!   with it); `Trace` is observability only.
//!
//! On start the driver either calls `step` with `Event::Restored` carrying what storage holds,
//! or (a fresh node) starts from genesis as `Node::new` builds it; then it sends `Tick`.
//!
//! Everything that decides what a node says is here: production when eligible, a fresh report
//! (and vote) each new tip, relaying each message once, noticing it is behind and fetching
//! blocks, mempool sync with every new link (`pool_sync`), fork choice and reorganisation.
//!
//! # Mempool sync and readiness
//!
//! A node that starts (or restarts) has an empty mempool while its peers may hold thousands of
//! pending transfers. On every new link both sides announce their pending ids and fetch what
//! they lack. Until the node has finished that exchange with enough peers to make a
//! supermajority with itself (`Genesis::quorum`), or one `producer_timeout_ms` has passed since
//! it started, it is not `is_mempool_synced`: it does not produce (its block would leave out
//! what its peers hold), and the RPC does not offer a `pending_nonce` (it would be stale, and
//! a client using it would sign a transfer whose nonce another pending transfer already holds).
//! A supermajority rather than every peer, so that one dead validator cannot hold a restarted
//! node back for the whole bound; every pending transfer is gossiped to all, so any live peer
//! that was up carries the pool.

use crate::crypto::{Keypair, SignatureCache};
use crate::election::{self, eligible_at_ms};
use crate::evidence::{EvidencePool, EvidenceWatch, PooledEvidence};
use crate::finality::FinalityState;
use crate::genesis::{genesis_block, Genesis};
use crate::limits::{
    EVIDENCE_WATCH_BLOCKS, GAPPED_TXS_MAX, LOCATOR_HASHES_MAX, MEMPOOL_TXS_PER_SENDER_MAX, ORPHAN_BLOCKS_MAX,
    POOL_ANNOUNCE_IDS_MAX, POOL_FETCH_IDS_MAX, POOL_FETCH_TIMEOUT_MS, RELAY_FANOUT, REPORT_POOL_PER_VALIDATOR_MAX,
    SEEN_MESSAGES_MAX, SIDE_BLOCKS_MAX, SYNC_BLOCKS_PER_RESPONSE_MAX, SYNC_RETRY_MS,
};
use crate::mempool::{DropReason, DroppedTransfer, Mempool, MempoolConfig, MempoolError, RemovalReason, Removed};
use crate::message::Message;
use crate::pool_sync::{PoolSync, PoolSyncPhase};
use crate::state::{ChainState, StateDelta};
use crate::types::{Address, Block, Checkpoint, Evidence, Hash, Height, MetricReport, NodeId, Transfer, Vote};
use crate::validate::{
    self, apply_block, block_hash, build_block, check_block_shape, check_evidence, check_report_alone,
    check_transfer_alone, evidence_id, report_id, transfer_id, BlockContext, BlockError, EvidenceError, ValidBlock,
};
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;
use tracing::debug;

/// Bytes of a block kept free for the header and the encoding's length prefixes when filling it.
const BLOCK_BYTES_RESERVED_FOR_HEADER: usize = 1024;

/// What a node is configured with. Deterministic: no paths, no clocks.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub genesis: Genesis,
    pub key: Keypair,
    /// Threads used to verify a block's uncached signatures (the driver passes the core count).
    pub verify_threads: usize,
    pub mempool: MempoolConfig,
    /// The (cpu, net) per-mille the node reports until its first `MetricsSampled`. A real node
    /// passes full load (1000, 1000), so it is not elected for a score it never measured; the
    /// simulator and tests pass (0, 0).
    pub unmeasured_metrics: (u16, u16),
}

/// What storage held when the node restarted.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The state after the stored tip.
    pub state: ChainState,
    /// The canonical block hash at every height, genesis first.
    pub canonical_hashes: Vec<Hash>,
    /// The final block (the lowest block fork choice may still build on).
    pub final_block: Arc<Block>,
    /// Canonical blocks above the final one, in height order, each with its undo delta.
    pub recent_blocks: Vec<(Arc<Block>, StateDelta)>,
    pub last_vote: Option<Vote>,
    pub report_sequence: u64,
}

/// Facts the driver reports, in the past tense.
#[derive(Clone, Debug)]
pub enum Event {
    Tick,
    MessageReceived { from: NodeId, message: Message },
    PeerConnected { peer: NodeId },
    PeerDisconnected { peer: NodeId },
    TxSubmitted(Transfer),
    MetricsSampled { cpu: u16, net: u16 },
    Restored(Box<Restored>),
}

/// One step of a storage transaction.
// Both variants are a few hundred bytes and live briefly in a short Vec: boxing buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum ChainOp {
    /// Undo the canonical block at `height`: write `undo` into the state, drop the height index.
    Rollback { height: Height, hash: Hash, undo: StateDelta },
    /// Make `block` canonical at its height: store it, write `delta`, keep `undo` for reorgs.
    Apply { block: Arc<Block>, hash: Hash, delta: StateDelta, undo: StateDelta },
}

#[derive(Clone, Debug)]
pub struct Commit {
    pub ops: Vec<ChainOp>,
    pub tip: Checkpoint,
    pub justified: Checkpoint,
    pub finalized: Checkpoint,
}

/// Commands for the driver.
#[derive(Clone, Debug)]
pub enum Action {
    SendTo {
        peer: NodeId,
        message: Message,
    },
    Broadcast {
        message: Message,
        except: Option<NodeId>,
    },
    WakeAt(u64),
    CommitBlocks(Box<Commit>),
    PersistReportState {
        last_vote: Option<Vote>,
        report_sequence: u64,
    },
    ServeBlocks {
        peer: NodeId,
        from_height: Height,
        to_height: Height,
    },
    DisconnectPeer {
        peer: NodeId,
        reason: String,
    },
    TxAccepted {
        id: Hash,
    },
    TxRejected {
        id: Hash,
        reason: String,
    },
    /// A pending transfer left the mempool without being included (boxed: it carries the
    /// transfer, and actions are moved around in bulk).
    TxDropped(Box<DroppedTransfer>),
    Trace(TraceEvent),
}

/// What happened, for traces, logs and tests. Deterministic: no wall-clock times or addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    BlockProduced {
        height: Height,
        hash: Hash,
        rank: u32,
        transfers: usize,
        reports: usize,
    },
    BlockCommitted {
        height: Height,
        hash: Hash,
        producer: NodeId,
        rank: u32,
        transfers: usize,
    },
    /// A block at rank > 0 was committed: the `skipped_ranks` validators ahead of it missed their turn.
    TimeoutFired {
        height: Height,
        skipped_ranks: u32,
    },
    Reorg {
        fork_height: Height,
        rolled_back: u64,
        applied: u64,
        new_tip: Checkpoint,
    },
    Justified {
        checkpoint: Checkpoint,
    },
    Finalized {
        checkpoint: Checkpoint,
    },
    BlockRejected {
        hash: Hash,
        reason: String,
    },
    SyncRequested {
        peer: NodeId,
        have_height: Height,
    },
    /// The node finished its first mempool sync since it started: with `synced_peers` peers, or
    /// the bounded wait ran out (`timed_out`). It now produces and offers pending nonces.
    MempoolSynced {
        synced_peers: usize,
        admitted: usize,
        timed_out: bool,
    },
    /// The node verified evidence of an offence it did not hold yet (noticed itself, or from a
    /// peer): `offender` broke a rule at `offence_height`.
    EvidenceSeen {
        offender: NodeId,
        kind: &'static str,
        offence_height: Height,
    },
    /// A block of the new canonical chain commits evidence against `offender`.
    EvidenceCommitted {
        height: Height,
        offender: NodeId,
        kind: &'static str,
        offence_height: Height,
    },
    /// Committed evidence jails `validator` (at the end of the ranking) up to this height.
    Jailed {
        validator: NodeId,
        until_height: Height,
    },
    /// A peer's final block conflicts with ours: more than a third of the validators must have
    /// broken the voting rules. The node walks the peer's chain for the evidence.
    FinalityConflict {
        peer: NodeId,
        ours: Checkpoint,
        theirs: Checkpoint,
    },
}

#[derive(Clone, Debug)]
struct TreeEntry {
    block: Arc<Block>,
    parent: Hash,
    height: Height,
    rank: u32,
    /// Finality after this block on its branch (computed from its committed votes).
    finality: FinalityState,
}

#[derive(Clone, Debug, Default)]
struct PeerState {
    /// The tip it advertised, while that may still be worth fetching.
    tip: Option<Checkpoint>,
    /// When it advertised that tip, or last taught us blocks toward it. An advertised tip holds
    /// production back only while this is recent (see `is_syncing`).
    tip_fresh_at_ms: u64,
    /// It has sent its status since it connected (the warm-up counts these).
    status_received: bool,
    /// The mempool exchange with it since it connected.
    pool: PoolSync,
    /// Its final block conflicts with ours: we are reading its chain for evidence, not to
    /// follow it (see `on_status`).
    evidence_walk: bool,
}

/// Remembers message ids so each is relayed once. Membership only: never iterated.
#[derive(Debug, Default)]
struct SeenSet {
    ids: HashSet<Hash>,
    order: VecDeque<Hash>,
}

impl SeenSet {
    /// Returns true if the id is new.
    fn insert(&mut self, id: Hash) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_MESSAGES_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}

/// What one activation of the best chain did, for `Node::finish_tip_change` to commit, trace and
/// settle.
struct TipChange {
    old_justified: Checkpoint,
    old_final: Checkpoint,
    /// The lowest height the tip moved back to (the old tip's if nothing was rolled back).
    fork_height: Height,
    ops: Vec<ChainOp>,
    /// (hash, block) of every block rolled back, in order.
    abandoned: Vec<(Hash, Arc<Block>)>,
    /// (hash, block) of every block applied, in order.
    applied: Vec<(Hash, Arc<Block>)>,
}

pub struct Node {
    config: NodeConfig,
    genesis_hash: Hash,
    validator_index: Option<u32>,
    cache: Arc<SignatureCache>,
    state: ChainState,
    /// Canonical block hash per height, genesis first; mirrors `state` at all times.
    canonical: Vec<Hash>,
    /// Every known block at or above the final height that descends from the final block.
    tree: BTreeMap<Hash, TreeEntry>,
    children: BTreeMap<Hash, BTreeSet<Hash>>,
    /// Undo deltas of canonical blocks above the final height.
    undo: BTreeMap<Height, StateDelta>,
    invalid: SeenSet,
    orphans: BTreeMap<Hash, Arc<Block>>,
    mempool: Mempool,
    /// Reports the chain has not recorded yet, per validator index, by sequence.
    report_pool: BTreeMap<u32, BTreeMap<u64, MetricReport>>,
    seen: SeenSet,
    peers: BTreeMap<NodeId, PeerState>,
    /// Peers we asked for blocks and when: one request per peer in flight (kept apart from
    /// `peers` so the per-event wake-up computation does not scan every peer).
    sync_requested_at_ms: BTreeMap<NodeId, u64>,
    /// Peers we asked for pending transfers (`GetPooled`) and when: one request each in flight.
    pool_requested_at_ms: BTreeMap<NodeId, u64>,
    /// The first mempool sync since start is over (see the module docs); never goes back.
    mempool_synced: bool,
    /// Transfers admitted through mempool sync since start (for the `MempoolSynced` trace).
    pool_admitted: usize,
    /// Transfers from peers held until their sender's earlier nonces arrive, by (sender, nonce);
    /// see `admit_transfer`. At most `GAPPED_TXS_MAX`.
    gapped: BTreeMap<(Address, u64), (Hash, Transfer)>,
    last_vote: Option<Vote>,
    report_sequence: u64,
    latest_metrics: (u16, u16),
    produced_on_parent: Option<Hash>,
    reported_tip: Option<Checkpoint>,
    /// When this run of the node began (the time of its first event). Until enough validators
    /// have told us their tips (see `is_warming_up`), or one producer timeout has passed, the
    /// node does not produce: a restarted node must not build on a tip it has not checked.
    started_at_ms: Option<u64>,
    /// The ranking for the block after `ranking_parent`: computed once per tip, not per event.
    ranking: Vec<election::Candidate>,
    ranking_parent: Option<Checkpoint>,
    /// Offences noticed in what this node sees, and verified evidence waiting for a block.
    evidence_watch: EvidenceWatch,
    evidence_pool: EvidencePool,
    /// The highest block this node has seen finalized on its chain. Monotonic: a branch's own
    /// votes may finalize less than this (the link that finalized it can sit in blocks of an
    /// abandoned branch, until those reports are committed again), but fork choice only ever
    /// considers branches that contain this block, so it stays final.
    finalized: Checkpoint,
}

impl Node {
    /// A node at genesis. `cache` may be shared (the simulator shares one across its nodes).
    pub fn new(config: NodeConfig, cache: Arc<SignatureCache>) -> Node {
        let unmeasured_metrics = (config.unmeasured_metrics.0.min(1000), config.unmeasured_metrics.1.min(1000));
        let (block, state) = genesis_block(&config.genesis);
        let genesis_hash = state.tip.hash;
        let validator_index = config.genesis.validator_index(&config.key.address()).map(|index| index as u32);
        let mut tree = BTreeMap::new();
        tree.insert(
            genesis_hash,
            TreeEntry {
                block: Arc::new(block),
                parent: Hash::default(),
                height: 0,
                rank: 0,
                finality: state.finality.clone(),
            },
        );
        let mempool = Mempool::new(config.mempool.clone());
        Node {
            config,
            genesis_hash,
            validator_index,
            cache,
            state,
            canonical: vec![genesis_hash],
            tree,
            children: BTreeMap::new(),
            undo: BTreeMap::new(),
            invalid: SeenSet::default(),
            orphans: BTreeMap::new(),
            mempool,
            report_pool: BTreeMap::new(),
            seen: SeenSet::default(),
            peers: BTreeMap::new(),
            sync_requested_at_ms: BTreeMap::new(),
            pool_requested_at_ms: BTreeMap::new(),
            mempool_synced: false,
            pool_admitted: 0,
            gapped: BTreeMap::new(),
            last_vote: None,
            report_sequence: 0,
            latest_metrics: unmeasured_metrics,
            produced_on_parent: None,
            reported_tip: None,
            started_at_ms: None,
            ranking: Vec::new(),
            ranking_parent: None,
            evidence_watch: EvidenceWatch::default(),
            evidence_pool: EvidencePool::default(),
            finalized: Checkpoint { height: 0, hash: genesis_hash },
        }
    }

    // ---- read-only views for drivers, RPC and tests ----------------------------------------

    pub fn genesis(&self) -> &Genesis {
        &self.config.genesis
    }
    pub fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }
    pub fn node_id(&self) -> NodeId {
        self.config.key.address()
    }
    pub fn state(&self) -> &ChainState {
        &self.state
    }
    pub fn tip(&self) -> Checkpoint {
        self.state.tip
    }
    /// Justification and finality as the votes committed on the current chain give them.
    pub fn finality(&self) -> &FinalityState {
        &self.state.finality
    }
    /// The latest final block: never moves back, always on the canonical chain.
    pub fn finalized(&self) -> Checkpoint {
        self.finalized
    }
    pub fn canonical_hash(&self, height: Height) -> Option<Hash> {
        self.canonical.get(height as usize).copied()
    }
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }
    pub fn last_vote(&self) -> Option<Vote> {
        self.last_vote
    }
    pub fn report_sequence(&self) -> u64 {
        self.report_sequence
    }
    /// An account as it stood after the node's final block: the tip's value, taken back through
    /// the undo deltas the node keeps for every canonical block above the final one (the undo at
    /// height h holds the values before h, so the lowest one that names the account wins).
    pub fn account_at_final(&self, address: &Address) -> crate::types::Account {
        let mut account = self.state.account(address);
        for undo in self.undo.range(self.finalized.height.saturating_add(1)..).rev().map(|(_, undo)| undo) {
            if let Some((_, before)) = undo.accounts.iter().find(|(touched, _)| touched == address) {
                account = before.unwrap_or_default();
            }
        }
        account
    }

    /// A block the node holds in memory (canonical above the final block, or a side branch).
    pub fn block(&self, hash: &Hash) -> Option<Arc<Block>> {
        self.tree.get(hash).map(|entry| entry.block.clone())
    }
    /// The ranking for the block after the current tip.
    pub fn next_election(&self) -> Vec<election::Candidate> {
        election::rank_candidates(&self.config.genesis, &self.state.validators, &self.state.tip)
    }
    pub fn connected_peers(&self) -> Vec<NodeId> {
        self.peers.keys().copied().collect()
    }
    /// Each connected peer and the tip it last advertised (None until it does, or once it had
    /// nothing to offer for an advertised tip we still lack).
    pub fn peer_tips(&self) -> Vec<(NodeId, Option<Checkpoint>)> {
        self.peers.iter().map(|(peer, peer_state)| (*peer, peer_state.tip)).collect()
    }
    /// The first mempool sync since start is over: the node produces, and its pending nonces
    /// can be trusted (see the module docs).
    pub fn is_mempool_synced(&self) -> bool {
        self.mempool_synced
    }
    /// Connected peers whose pools we have fully fetched since they connected.
    pub fn mempool_synced_peers(&self) -> usize {
        self.peers.values().filter(|peer_state| peer_state.pool.phase == PoolSyncPhase::Synced).count()
    }
    /// Verified evidence this node holds, committed on its chain or not (until too old).
    pub fn evidence(&self) -> impl Iterator<Item = &PooledEvidence> {
        self.evidence_pool.iter()
    }
    /// Held evidence not yet committed on the canonical chain.
    pub fn pending_evidence(&self) -> usize {
        self.evidence_pool.iter().filter(|pooled| !self.state.offences.contains_key(&pooled.facts.key)).count()
    }
    /// Every validator the evidence this node holds accuses.
    pub fn evidence_offenders(&self) -> BTreeSet<NodeId> {
        self.evidence_pool.offenders()
    }
    pub fn side_blocks(&self) -> usize {
        self.tree.len().saturating_sub(self.canonical.len().saturating_sub(self.finalized.height as usize))
    }

    // ---- the one entry point -----------------------------------------------------------------

    #[must_use]
    pub fn step(&mut self, now_ms: u64, event: Event) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.started_at_ms.is_none() || matches!(event, Event::Restored(_)) {
            self.started_at_ms = Some(now_ms);
        }
        match event {
            Event::Tick => self.on_tick(now_ms, &mut actions),
            Event::MessageReceived { from, message } => self.on_message(now_ms, from, message, &mut actions),
            Event::PeerConnected { peer } => self.on_peer_connected(peer, &mut actions),
            Event::PeerDisconnected { peer } => {
                self.peers.remove(&peer);
                self.sync_requested_at_ms.remove(&peer);
                self.pool_requested_at_ms.remove(&peer);
            }
            Event::TxSubmitted(transfer) => self.on_transfer(None, transfer, &mut actions),
            Event::MetricsSampled { cpu, net } => self.latest_metrics = (cpu.min(1000), net.min(1000)),
            Event::Restored(restored) => self.on_restored(*restored),
        }
        self.after_event(now_ms, &mut actions);
        actions
    }

    fn on_tick(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        self.sync_requested_at_ms.retain(|peer, at| {
            let expired = now_ms >= at.saturating_add(SYNC_RETRY_MS);
            if expired {
                debug!(peer = ?peer, "sync request unanswered: may ask again");
            }
            !expired
        });
        // Ask again any peer whose tip we still lack.
        let behind: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, peer_state)| peer_state.tip.is_some_and(|tip| !self.knows_block(&tip)))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in behind {
            self.request_sync(now_ms, peer, actions);
        }
        let unanswered: Vec<NodeId> = self
            .pool_requested_at_ms
            .iter()
            .filter(|(_, at)| now_ms >= at.saturating_add(POOL_FETCH_TIMEOUT_MS))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in unanswered {
            debug!(peer = ?peer, "pending transfers asked for were not sent: no longer syncing the mempool with it");
            self.pool_requested_at_ms.remove(&peer);
            if let Some(peer_state) = self.peers.get_mut(&peer) {
                peer_state.pool.give_up();
            }
        }
    }

    /// Runs after every event: a fresh report when the tip moved, production when eligible,
    /// and the next wake-up.
    fn after_event(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        self.update_mempool_synced(now_ms, actions);
        self.refresh_ranking();
        self.try_produce(now_ms, actions);
        self.refresh_ranking();
        if self.reported_tip != Some(self.state.tip) {
            self.send_report(actions);
        }
        let mut wake_at_ms = u64::MAX;
        if let Some(eligible_ms) = self.my_eligible_time() {
            if eligible_ms > now_ms {
                wake_at_ms = wake_at_ms.min(eligible_ms);
            }
        }
        for at in self.sync_requested_at_ms.values() {
            wake_at_ms = wake_at_ms.min(at.saturating_add(SYNC_RETRY_MS));
        }
        for at in self.pool_requested_at_ms.values() {
            wake_at_ms = wake_at_ms.min(at.saturating_add(POOL_FETCH_TIMEOUT_MS));
        }
        if !self.mempool_synced {
            wake_at_ms = wake_at_ms.min(self.mempool_sync_deadline_ms(now_ms));
        }
        if wake_at_ms == u64::MAX {
            // Nothing scheduled: check again after one block interval (sync retries, liveness).
            wake_at_ms = now_ms.saturating_add(self.config.genesis.parameters.block_interval_ms);
        }
        actions.push(Action::WakeAt(wake_at_ms.max(now_ms.saturating_add(1))));
    }

    fn on_peer_connected(&mut self, peer: NodeId, actions: &mut Vec<Action>) {
        self.peers.insert(peer, PeerState::default());
        self.sync_requested_at_ms.remove(&peer);
        self.pool_requested_at_ms.remove(&peer);
        actions
            .push(Action::SendTo { peer, message: Message::Status { tip: self.state.tip, finalized: self.finalized } });
        if let Some(index) = self.validator_index {
            if let Some(latest) = self.report_pool.get(&index).and_then(|reports| reports.values().next_back()) {
                actions.push(Action::SendTo { peer, message: Message::Report(latest.clone()) });
            }
        }
        // Evidence not yet committed on our chain: gossip went out once, and the peers that
        // took it may have crashed since (pools are not stored), so a new link gets it again.
        for pooled in self.evidence_pool.iter().filter(|pooled| !self.state.offences.contains_key(&pooled.facts.key)) {
            actions.push(Action::SendTo { peer, message: Message::Evidence(Box::new(pooled.evidence.clone())) });
        }
        // Our pending ids, by sender then nonce, in batches; the last (maybe empty) is complete.
        let ids: Vec<Hash> = self.mempool.ids_by_sender().collect();
        let batches = ids.len().div_ceil(POOL_ANNOUNCE_IDS_MAX).max(1);
        let mut chunks = ids.chunks(POOL_ANNOUNCE_IDS_MAX);
        for batch in 0..batches {
            let ids = chunks.next().map(<[Hash]>::to_vec).unwrap_or_default();
            let complete = batch + 1 == batches;
            actions.push(Action::SendTo { peer, message: Message::PoolAnnounce { ids, complete } });
        }
    }

    // ---- mempool sync -------------------------------------------------------------------------

    fn on_pool_announce(&mut self, now_ms: u64, from: NodeId, ids: &[Hash], complete: bool, actions: &mut Vec<Action>) {
        let mempool = &self.mempool;
        let Some(peer_state) = self.peers.get_mut(&from) else {
            debug!(peer = ?from, "ignoring pool announcement: the peer is not connected");
            return;
        };
        if !peer_state.pool.on_announce(ids, complete, |id| mempool.contains(id)) {
            debug!(peer = ?from, "ignoring pool announcement: the peer already announced its whole pool");
            return;
        }
        self.request_pooled(now_ms, from, actions);
    }

    fn on_get_pooled(&mut self, from: NodeId, ids: &[Hash], actions: &mut Vec<Action>) {
        let transfers: Vec<Transfer> =
            ids.iter().take(POOL_FETCH_IDS_MAX).filter_map(|id| self.mempool.get(id)).cloned().collect();
        actions.push(Action::SendTo { peer: from, message: Message::Pooled(transfers) });
    }

    fn on_pooled(&mut self, now_ms: u64, from: NodeId, transfers: Vec<Transfer>, actions: &mut Vec<Action>) {
        let answered = self.peers.get_mut(&from).and_then(|peer_state| peer_state.pool.on_answer(transfers));
        let Some(answered) = answered else {
            debug!(peer = ?from, "ignoring pending transfers nobody asked for");
            return;
        };
        self.pool_requested_at_ms.remove(&from);
        let mut admitted = 0;
        for (id, transfer) in answered {
            // Not relayed: every peer fetches from its own links. Marked seen so gossip of the
            // same transfer is not taken again.
            self.seen.insert(id);
            match self.admit_transfer(id, transfer, true, actions) {
                Ok(()) => admitted += 1,
                Err(reason) => debug!(?id, %reason, "pending transfer from a peer's pool not admitted"),
            }
        }
        self.pool_admitted += admitted;
        if let Some(peer_state) = self.peers.get_mut(&from) {
            peer_state.pool.admitted += admitted;
        }
        self.request_pooled(now_ms, from, actions);
    }

    /// Asks `peer` for the next batch of announced transfers we lack, if none is in flight.
    fn request_pooled(&mut self, now_ms: u64, peer: NodeId, actions: &mut Vec<Action>) {
        let mempool = &self.mempool;
        let Some(peer_state) = self.peers.get_mut(&peer) else { return };
        if let Some(ids) = peer_state.pool.next_request(|id| mempool.contains(id)) {
            self.pool_requested_at_ms.insert(peer, now_ms);
            actions.push(Action::SendTo { peer, message: Message::GetPooled { ids } });
        }
    }

    /// When the first mempool sync since start ends at the latest (see the module docs).
    fn mempool_sync_deadline_ms(&self, now_ms: u64) -> u64 {
        self.started_at_ms.unwrap_or(now_ms).saturating_add(self.config.genesis.parameters.producer_timeout_ms)
    }

    fn update_mempool_synced(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        if self.mempool_synced {
            return;
        }
        let synced_peers = self.mempool_synced_peers();
        let is_quorum = synced_peers + 1 >= self.config.genesis.quorum();
        if is_quorum || now_ms >= self.mempool_sync_deadline_ms(now_ms) {
            self.mempool_synced = true;
            actions.push(Action::Trace(TraceEvent::MempoolSynced {
                synced_peers,
                admitted: self.pool_admitted,
                timed_out: !is_quorum,
            }));
        }
    }

    fn on_message(&mut self, now_ms: u64, from: NodeId, message: Message, actions: &mut Vec<Action>) {
        match message {
            Message::Transfer(transfer) => self.on_transfer(Some(from), transfer, actions),
            Message::Block(block) => self.on_block(now_ms, Some(from), block, true, actions),
            Message::Report(report) => self.on_report(now_ms, from, report, actions),
            Message::Status { tip, finalized } => self.on_status(now_ms, from, tip, finalized, actions),
            Message::Evidence(evidence) => self.on_evidence(Some(from), *evidence, actions),
            Message::GetBlocks { locator } => self.on_get_blocks(from, &locator, actions),
            Message::PoolAnnounce { ids, complete } => self.on_pool_announce(now_ms, from, &ids, complete, actions),
            Message::GetPooled { ids } => self.on_get_pooled(from, &ids, actions),
            Message::Pooled(transfers) => self.on_pooled(now_ms, from, transfers, actions),
            Message::Blocks(blocks) => self.on_blocks(now_ms, from, blocks, actions),
        }
    }

    /// A sync response: the blocks are taken like gossiped ones (at most
    /// `SYNC_BLOCKS_PER_RESPONSE_MAX`), then the peer's advertised tip decides whether to ask
    /// for more, continue after blocks we already had, or stop asking.
    fn on_blocks(&mut self, now_ms: u64, from: NodeId, blocks: Vec<Arc<Block>>, actions: &mut Vec<Action>) {
        self.sync_requested_at_ms.remove(&from);
        if self.peers.get(&from).is_some_and(|peer_state| peer_state.evidence_walk) {
            self.on_walked_blocks(now_ms, from, &blocks, actions);
            return;
        }
        let last = blocks[..blocks.len().min(SYNC_BLOCKS_PER_RESPONSE_MAX)]
            .last()
            .map(|block| Checkpoint { height: block.header.height, hash: block_hash(&block.header) });
        let known_before = self.tree.len() + self.orphans.len();
        let tree_before = self.tree.len();
        for block in blocks.into_iter().take(SYNC_BLOCKS_PER_RESPONSE_MAX) {
            self.on_block(now_ms, Some(from), block, false, actions);
        }
        let learned_something = self.tree.len() + self.orphans.len() != known_before;
        // Only blocks that joined our tree show the peer's tip is real: orphans (blocks
        // whose parent we lack) cost a dishonest peer nothing to make up.
        let connected_something = self.tree.len() > tree_before;
        let advertised_is_unknown =
            self.peers.get(&from).and_then(|peer_state| peer_state.tip).is_some_and(|tip| !self.knows_block(&tip));
        // Blocks we already had: they are the peer's chain where it still agrees with
        // ours (our locator matched far below the fork). Continue right after the last
        // one instead of concluding there is nothing to learn.
        if let (false, true, Some(last)) = (learned_something, advertised_is_unknown, last) {
            if self.knows_block(&last) {
                self.request_sync_after(now_ms, from, Some(last), actions);
                return;
            }
        }
        let peer_state = self.peers.entry(from).or_default();
        if connected_something {
            peer_state.tip_fresh_at_ms = now_ms;
        }
        if !learned_something && advertised_is_unknown {
            // Nothing new, and the tip it advertised is still unknown: that tip is not on
            // its canonical chain any more. Stop asking (and stop holding production
            // back) until it says more.
            peer_state.tip = None;
        }
        let peer_tip = peer_state.tip;
        if learned_something && peer_tip.is_some_and(|tip| !self.knows_block(&tip)) {
            self.request_sync(now_ms, from, actions);
        }
    }

    fn on_status(
        &mut self,
        now_ms: u64,
        from: NodeId,
        tip: Checkpoint,
        finalized: Checkpoint,
        actions: &mut Vec<Action>,
    ) {
        // Its final block sits at or below ours but is not on our chain: two final blocks
        // conflict. Read its chain from the fork for the votes that prove who caused it.
        let is_conflict = finalized.height <= self.finalized.height
            && self.canonical_hash(finalized.height).is_some_and(|hash| hash != finalized.hash);
        let peer_state = self.peers.entry(from).or_default();
        peer_state.tip = Some(tip);
        // Only the first status of a connection makes its tip fresh (holding production back
        // while we fetch it); later ones wait for blocks to flow. Honest peers send one status
        // per connection; a peer that kept advertising tips it never serves would otherwise
        // stall production for ever (the sync-stall attack of CometBFT advisory GO-2025-3442).
        if !peer_state.status_received {
            peer_state.tip_fresh_at_ms = now_ms;
        }
        peer_state.status_received = true;
        if is_conflict {
            tracing::error!(peer = ?from, ours = ?self.finalized, theirs = ?finalized, "finality conflict with a peer");
            actions.push(Action::Trace(TraceEvent::FinalityConflict {
                peer: from,
                ours: self.finalized,
                theirs: finalized,
            }));
            peer_state.evidence_walk = true;
            self.sync_requested_at_ms.remove(&from);
            self.request_sync(now_ms, from, actions);
            return;
        }
        if !self.knows_block(&tip) {
            self.request_sync(now_ms, from, actions);
        }
    }

    // ---- evidence -----------------------------------------------------------------------------

    /// Evidence from a peer (`from`) or noticed by this node (None): verified, pooled once per
    /// offence, gossiped.
    fn on_evidence(&mut self, from: Option<NodeId>, evidence: Evidence, actions: &mut Vec<Action>) {
        let id = evidence_id(&evidence);
        if from.is_some() && !self.seen.insert(id) {
            return;
        }
        let facts = match check_evidence(&self.config.genesis, &evidence, &self.cache) {
            Ok(facts) => facts,
            Err(error) => {
                debug!(%error, "rejecting evidence");
                if let (EvidenceError::BadSignature, Some(peer)) = (&error, from) {
                    actions.push(Action::DisconnectPeer { peer, reason: error.to_string() });
                }
                return;
            }
        };
        let max_age_blocks = self.config.genesis.parameters.evidence_max_age_blocks;
        if facts.height.saturating_add(max_age_blocks) <= self.state.tip.height {
            debug!(offence_height = facts.height, "ignoring evidence: too old to commit");
            return;
        }
        if !self.evidence_pool.insert(PooledEvidence { id, evidence: evidence.clone(), facts }) {
            return;
        }
        if Some(facts.offender) == self.validator_index.map(|_| self.node_id()) && from.is_none() {
            // Our own watch accusing us means this node broke a voting or production rule.
            tracing::error!(kind = evidence.kind(), "this node's own objects form evidence against it: a bug");
        }
        actions.push(Action::Trace(TraceEvent::EvidenceSeen {
            offender: facts.offender,
            kind: evidence.kind(),
            offence_height: facts.height,
        }));
        if from.is_none() {
            self.seen.insert(id);
        }
        self.gossip(id, Message::Evidence(Box::new(evidence)), from, actions);
    }

    /// Feeds a header whose signature was checked to the watch.
    fn watch_header(&mut self, header: &crate::types::BlockHeader, actions: &mut Vec<Action>) {
        if header.height.saturating_add(EVIDENCE_WATCH_BLOCKS) < self.state.tip.height {
            return;
        }
        if let Some(evidence) = self.evidence_watch.observe_header(header) {
            self.on_evidence(None, evidence, actions);
        }
    }

    /// Feeds a report whose signature and fields were checked to the watch.
    fn watch_report(&mut self, report: &MetricReport, actions: &mut Vec<Action>) {
        let Some(vote) = report.vote else { return };
        if vote.target.height.saturating_add(EVIDENCE_WATCH_BLOCKS) < self.state.tip.height {
            return;
        }
        for evidence in self.evidence_watch.observe_report(report) {
            self.on_evidence(None, evidence, actions);
        }
    }

    /// Watches every report of a block, checking each (signatures are cached).
    fn watch_block_reports(&mut self, block: &Block, actions: &mut Vec<Action>) {
        for report in &block.reports {
            if report.vote.is_some() && check_report_alone(&self.config.genesis, report, &self.cache).is_ok() {
                self.watch_report(report, actions);
            }
        }
    }

    /// Blocks of a peer whose final block conflicts with ours: read for evidence (their header
    /// and their votes), never followed; then ask for the next ones until its tip.
    fn on_walked_blocks(&mut self, now_ms: u64, from: NodeId, blocks: &[Arc<Block>], actions: &mut Vec<Action>) {
        for block in blocks.iter().take(SYNC_BLOCKS_PER_RESPONSE_MAX) {
            if check_block_shape(&self.config.genesis, block, &self.cache).is_err() {
                continue;
            }
            self.watch_header(&block.header, actions);
            self.watch_block_reports(block, actions);
        }
        let last = blocks[..blocks.len().min(SYNC_BLOCKS_PER_RESPONSE_MAX)]
            .last()
            .map(|block| Checkpoint { height: block.header.height, hash: block_hash(&block.header) });
        let peer_tip = self.peers.get(&from).and_then(|peer_state| peer_state.tip);
        match (last, peer_tip) {
            (Some(last), Some(tip)) if last.height < tip.height => {
                self.request_sync_after(now_ms, from, Some(last), actions)
            }
            _ => {
                debug!(peer = ?from, "read the conflicting chain for evidence up to its tip");
                if let Some(peer_state) = self.peers.get_mut(&from) {
                    peer_state.evidence_walk = false;
                    peer_state.tip = None;
                }
            }
        }
    }

    // ---- gossip -------------------------------------------------------------------------------

    /// Sends a message on: to every peer when we are its origin (`from` is None), else to at most
    /// `RELAY_FANOUT` peers other than the sender: a window of the (ordered) peer list starting
    /// at a position given by the message id, so different messages use different relays and
    /// the choice is deterministic.
    fn gossip(&self, id: Hash, message: Message, from: Option<NodeId>, actions: &mut Vec<Action>) {
        let Some(sender) = from else {
            actions.push(Action::Broadcast { message, except: None });
            return;
        };
        let candidates = self.peers.len() - usize::from(self.peers.contains_key(&sender));
        if candidates <= RELAY_FANOUT {
            actions.push(Action::Broadcast { message, except: Some(sender) });
            return;
        }
        let start = u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes")) as usize % candidates;
        let others = self.peers.keys().filter(|peer| **peer != sender);
        for peer in others.cycle().skip(start).take(RELAY_FANOUT) {
            actions.push(Action::SendTo { peer: *peer, message: message.clone() });
        }
    }

    // ---- transfers ----------------------------------------------------------------------------

    fn on_transfer(&mut self, from: Option<NodeId>, transfer: Transfer, actions: &mut Vec<Action>) {
        let id = transfer_id(&transfer);
        let reject = |actions: &mut Vec<Action>, reason: String| {
            if from.is_none() {
                actions.push(Action::TxRejected { id, reason });
            }
        };
        if from.is_some() && !self.seen.insert(id) {
            debug!(?id, "ignoring transfer: already seen");
            return;
        }
        match self.admit_transfer(id, transfer.clone(), from.is_some(), actions) {
            Ok(()) => {
                if from.is_none() {
                    self.seen.insert(id);
                    actions.push(Action::TxAccepted { id });
                }
                self.gossip(id, Message::Transfer(transfer), from, actions);
            }
            Err(reason) => {
                debug!(?id, %reason, "transfer not pooled");
                reject(actions, reason);
            }
        }
    }

    /// Checks a transfer on its own and admits it to the mempool; what it displaces is dropped.
    /// A transfer from a peer (`from_peer`) whose sender's earlier nonces are not here yet is held
    /// (`gapped`) instead of refused, and admitted when the gap fills: gossip from different
    /// origins, and mempool sync after a restart, deliver a sender's transfers out of order, and
    /// a node that refused the later ones would count that sender's pending nonce short and
    /// offer clients a nonce already taken.
    fn admit_transfer(
        &mut self,
        id: Hash,
        transfer: Transfer,
        from_peer: bool,
        actions: &mut Vec<Action>,
    ) -> Result<(), String> {
        check_transfer_alone(&self.config.genesis.chain_id, &transfer, &self.cache)
            .map_err(|error| error.to_string())?;
        let sender_address = transfer.from;
        let sender = self.state.account(&sender_address);
        match self.mempool.insert(transfer.clone(), id, &sender) {
            Ok(inserted) => {
                self.drop_removed(inserted.removed, &BTreeMap::new(), actions);
                self.admit_gapped(&sender_address, actions);
                Ok(())
            }
            Err(MempoolError::NonceGap { expected, got })
                if from_peer
                    && got - expected < MEMPOOL_TXS_PER_SENDER_MAX as u64
                    && self.gapped.len() < GAPPED_TXS_MAX =>
            {
                debug!(?id, expected, got, "holding a transfer until its sender's earlier nonces arrive");
                self.gapped.insert((sender_address, got), (id, transfer));
                Ok(())
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Admits held transfers of `sender` that now follow its pending nonce, in order; forgets
    /// held ones whose nonce the chain already used.
    fn admit_gapped(&mut self, sender: &Address, actions: &mut Vec<Action>) {
        let account = self.state.account(sender);
        let stale: Vec<(Address, u64)> =
            self.gapped.range((*sender, 0)..(*sender, account.nonce)).map(|(key, _)| *key).collect();
        for key in stale {
            self.gapped.remove(&key);
        }
        loop {
            let next_nonce = self.mempool.pending_nonce(sender, &account);
            let Some((id, transfer)) = self.gapped.remove(&(*sender, next_nonce)) else { break };
            match self.mempool.insert(transfer, id, &account) {
                Ok(inserted) => self.drop_removed(inserted.removed, &BTreeMap::new(), actions),
                Err(error) => {
                    debug!(?id, %error, "a held transfer was not admitted");
                    break;
                }
            }
        }
    }

    /// Says why each removed pending transfer will never be included. `taken` maps each
    /// (sender, nonce) used by the blocks just applied to the transfer that used it and its
    /// height: a removal whose nonce was used by that very transfer was included, not dropped.
    fn drop_removed(
        &self,
        removed: Vec<Removed>,
        taken: &BTreeMap<(Address, u64), (Hash, Height)>,
        actions: &mut Vec<Action>,
    ) {
        for Removed { id, transfer, reason } in removed {
            let reason = match reason {
                RemovalReason::Replaced { by } => DropReason::Replaced { by },
                RemovalReason::Unaffordable => DropReason::Unaffordable,
                RemovalReason::Evicted { by } => DropReason::Evicted { by },
                RemovalReason::NonceUsed => match taken.get(&(transfer.from, transfer.nonce)) {
                    Some((by, _)) if *by == id => continue,
                    Some((by, height)) => DropReason::NonceTaken { by: *by, height: *height },
                    None => DropReason::NonceUsed,
                },
            };
            debug!(?id, %reason, "dropped a pending transfer");
            let dropped = DroppedTransfer { id, transfer, reason, tip_height: self.state.tip.height };
            actions.push(Action::TxDropped(Box::new(dropped)));
        }
    }

    // ---- reports ------------------------------------------------------------------------------

    fn on_report(&mut self, now_ms: u64, from: NodeId, report: MetricReport, actions: &mut Vec<Action>) {
        let id = report_id(&report);
        if !self.seen.insert(id) {
            return;
        }
        let validator = match check_report_alone(&self.config.genesis, &report, &self.cache) {
            Ok(validator) => validator,
            Err(error) => {
                debug!(%error, "rejecting report");
                if matches!(error, validate::ReportError::BadSignature) {
                    actions.push(Action::DisconnectPeer { peer: from, reason: error.to_string() });
                }
                return;
            }
        };
        self.watch_report(&report, actions);
        if !self.pool_report(validator, report.clone()) {
            debug!(sequence = report.sequence, "ignoring report: the chain already records a later one");
            return;
        }
        let tip = report.tip;
        self.gossip(id, Message::Report(report), Some(from), actions);
        if !self.knows_block(&tip) && tip.height > self.finalized.height {
            self.request_sync(now_ms, from, actions);
        }
    }

    /// Keeps a report the chain has not recorded yet. Returns false if it is stale.
    fn pool_report(&mut self, validator: u32, report: MetricReport) -> bool {
        let recorded = self.recorded_sequence(validator);
        if recorded.is_some_and(|recorded| report.sequence <= recorded) {
            return false;
        }
        let pool = self.report_pool.entry(validator).or_default();
        pool.insert(report.sequence, report);
        while pool.len() > REPORT_POOL_PER_VALIDATOR_MAX {
            pool.pop_first();
        }
        true
    }

    fn recorded_sequence(&self, validator: u32) -> Option<u64> {
        self.state.validators[validator as usize].recorded_sequence()
    }

    /// Signs and sends a fresh report for the current tip, with a vote when the tip moved past
    /// the last vote and the two voting rules allow it.
    fn send_report(&mut self, actions: &mut Vec<Action>) {
        self.reported_tip = Some(self.state.tip);
        let Some(validator) = self.validator_index else {
            return;
        };
        let tip = self.state.tip;
        let source = self.state.finality.justified;
        let last_target_height = self.last_vote.map_or(0, |vote| vote.target.height);
        let last_source_height = self.last_vote.map_or(0, |vote| vote.source.height);
        // Rule 1: target heights strictly increase. Rule 2: source heights never decrease.
        let vote =
            (tip.height > last_target_height && source.height >= last_source_height && source.height < tip.height)
                .then_some(Vote { source, target: tip });
        let (cpu, net) = self.latest_metrics;
        let sequence = self.report_sequence + 1;
        let mut report = MetricReport {
            node: self.config.key.address(),
            sequence,
            tip,
            cpu,
            net,
            score: self.config.genesis.score(cpu, net),
            vote,
            signature: Default::default(),
        };
        report.signature =
            self.config.key.sign(&crate::codec::report_signing_bytes(&self.config.genesis.chain_id, &report));
        self.report_sequence = sequence;
        if vote.is_some() {
            self.last_vote = vote;
        }
        // Persisted before it is sent: a restarted node resumes above this sequence and vote.
        actions.push(Action::PersistReportState { last_vote: self.last_vote, report_sequence: sequence });
        self.seen.insert(report_id(&report));
        self.pool_report(validator, report.clone());
        self.watch_report(&report, actions);
        actions.push(Action::Broadcast { message: Message::Report(report), except: None });
    }

    // ---- blocks -------------------------------------------------------------------------------

    fn knows_block(&self, checkpoint: &Checkpoint) -> bool {
        self.tree.contains_key(&checkpoint.hash)
            || self.canonical_hash(checkpoint.height) == Some(checkpoint.hash)
            || self.invalid.ids.contains(&checkpoint.hash)
            || checkpoint.height < self.finalized.height
    }

    fn on_block(
        &mut self,
        now_ms: u64,
        from: Option<NodeId>,
        block: Arc<Block>,
        relay: bool,
        actions: &mut Vec<Action>,
    ) {
        let hash = block_hash(&block.header);
        let height = block.header.height;
        if self.tree.contains_key(&hash) || self.orphans.contains_key(&hash) || self.invalid.ids.contains(&hash) {
            return;
        }
        if height <= self.finalized.height {
            // Still evidence: a second header on a parent below our final block, and the votes
            // it carries (a producer that releases its block late must not hide its own
            // conflicting votes in it). Once per block: a peer replaying old blocks must not
            // make us compare their votes again and again.
            if self.seen.insert(hash) && check_block_shape(&self.config.genesis, &block, &self.cache).is_ok() {
                self.watch_header(&block.header, actions);
                self.watch_block_reports(&block, actions);
            }
            debug!(height, "ignoring block: at or below the final height");
            return;
        }
        let max_drift_ms = self.config.genesis.parameters.max_clock_drift_ms;
        if block.header.timestamp_ms > now_ms.saturating_add(max_drift_ms) {
            // Not marked invalid: it may become acceptable; sync will offer it again.
            debug!(
                height,
                timestamp_ms = block.header.timestamp_ms,
                now_ms,
                "ignoring block: timestamp ahead of the local clock"
            );
            return;
        }
        if let Err(error) = check_block_shape(&self.config.genesis, &block, &self.cache) {
            self.reject_block(hash, &error, from, actions);
            return;
        }
        self.watch_header(&block.header, actions);
        self.watch_block_reports(&block, actions);
        let parent = block.header.prev_hash;
        if !self.tree.contains_key(&parent) {
            if self.orphans.len() >= ORPHAN_BLOCKS_MAX {
                if let Some(highest) =
                    self.orphans.iter().max_by_key(|(_, orphan)| orphan.header.height).map(|(hash, _)| *hash)
                {
                    self.orphans.remove(&highest);
                }
            }
            debug!(height, "holding block: parent unknown, asking for it");
            self.orphans.insert(hash, block);
            if let Some(peer) = from {
                self.request_sync(now_ms, peer, actions);
            }
            return;
        }
        // A received block is relayed at once (it passed the checks that need no state); our
        // own block only after it is committed, so a crash cannot make us sign a second block
        // at the same height after restart.
        let own_block = from.is_none().then(|| block.clone());
        if relay && from.is_some() {
            self.gossip(hash, Message::Block(block.clone()), from, actions);
        }
        // Insert it, then any held orphans that descend from it.
        let mut ready = vec![(hash, block)];
        while let Some((hash, block)) = ready.pop() {
            if let Err(error) = self.insert_into_tree(hash, block) {
                self.reject_block(hash, &error, from, actions);
                continue;
            }
            let children: Vec<Hash> = self
                .orphans
                .iter()
                .filter(|(_, orphan)| orphan.header.prev_hash == hash)
                .map(|(hash, _)| *hash)
                .collect();
            for child in children {
                if let Some(orphan) = self.orphans.remove(&child) {
                    ready.push((child, orphan));
                }
            }
        }
        self.prune_side_blocks();
        self.activate_best_chain(now_ms, actions);
        if let (true, Some(block)) = (relay, own_block) {
            actions.push(Action::Broadcast { message: Message::Block(block), except: None });
        }
    }

    fn reject_block(&mut self, hash: Hash, error: &BlockError, from: Option<NodeId>, actions: &mut Vec<Action>) {
        debug!(?hash, %error, "rejecting block");
        self.invalid.insert(hash);
        actions.push(Action::Trace(TraceEvent::BlockRejected { hash, reason: error.to_string() }));
        let is_forgery = matches!(
            error,
            BlockError::BadProducerSignature
                | BlockError::InvalidTransfer { error: validate::TxError::BadSignature, .. }
                | BlockError::InvalidReport { error: validate::ReportError::BadSignature, .. }
        );
        if let (true, Some(peer)) = (is_forgery, from) {
            actions.push(Action::DisconnectPeer { peer, reason: error.to_string() });
        }
    }

    /// Adds a shape-checked block whose parent is in the tree, computing the finality its
    /// committed votes give on its branch (so fork choice can compare branches before applying).
    fn insert_into_tree(&mut self, hash: Hash, block: Arc<Block>) -> Result<(), BlockError> {
        let parent_hash = block.header.prev_hash;
        let parent = self.tree.get(&parent_hash).expect("callers insert only blocks whose parent is in the tree");
        if block.header.height != parent.height + 1 {
            return Err(BlockError::WrongHeight { expected: parent.height + 1, got: block.header.height });
        }
        let mut votes = Vec::new();
        for (index, report) in block.reports.iter().enumerate() {
            let validator = check_report_alone(&self.config.genesis, report, &self.cache)
                .map_err(|error| BlockError::InvalidReport { index, error })?;
            if let Some(vote) = report.vote {
                votes.push((validator, vote));
            }
        }
        let parent_height = parent.height;
        let is_on_chain = |checkpoint: &Checkpoint| {
            checkpoint.height <= parent_height
                && self.ancestor_hash(parent_hash, checkpoint.height) == Some(checkpoint.hash)
        };
        let (finality, _) = parent.finality.with_votes(&votes, self.config.genesis.quorum(), &is_on_chain);
        let entry =
            TreeEntry { parent: parent_hash, height: block.header.height, rank: block.header.rank, finality, block };
        self.tree.insert(hash, entry);
        self.children.entry(parent_hash).or_default().insert(hash);
        Ok(())
    }

    /// The hash at `height` on the branch ending at `from` (which must be in the tree).
    fn ancestor_hash(&self, from: Hash, height: Height) -> Option<Hash> {
        let mut current = from;
        loop {
            if self.canonical.get(self.tree.get(&current)?.height as usize) == Some(&current) {
                let entry_height = self.tree.get(&current)?.height;
                return if height <= entry_height { self.canonical_hash(height) } else { None };
            }
            let entry = self.tree.get(&current)?;
            if entry.height == height {
                return Some(current);
            }
            if entry.height < height {
                return None;
            }
            current = entry.parent;
        }
    }

    /// Is branch tip `a` strictly preferred to branch tip `b`? Highest justified block, then the
    /// longest chain, then lower ranks compared block by block from the fork point, then the
    /// lower hash of the first differing block. Both contain the final block (the tree only
    /// holds its descendants).
    fn is_preferred(&self, a: Hash, b: Hash) -> bool {
        if a == b {
            return false;
        }
        let (entry_a, entry_b) = (&self.tree[&a], &self.tree[&b]);
        let (justified_a, justified_b) = (entry_a.finality.justified.height, entry_b.finality.justified.height);
        if justified_a != justified_b {
            return justified_a > justified_b;
        }
        if entry_a.height != entry_b.height {
            return entry_a.height > entry_b.height;
        }
        // Same height: walk both back to the fork point, remembering each side's blocks.
        let (mut path_a, mut path_b) = (vec![a], vec![b]);
        let (mut cursor_a, mut cursor_b) = (entry_a.parent, entry_b.parent);
        while cursor_a != cursor_b {
            path_a.push(cursor_a);
            path_b.push(cursor_b);
            cursor_a = self.tree[&cursor_a].parent;
            cursor_b = self.tree[&cursor_b].parent;
        }
        for (block_a, block_b) in path_a.iter().rev().zip(path_b.iter().rev()) {
            let (rank_a, rank_b) = (self.tree[block_a].rank, self.tree[block_b].rank);
            if rank_a != rank_b {
                return rank_a < rank_b;
            }
        }
        path_a.last() < path_b.last()
    }

    /// A block of the tree with no child in it.
    fn is_leaf(&self, hash: &Hash) -> bool {
        self.children.get(hash).is_none_or(|children| children.is_empty())
    }

    fn best_tip(&self) -> Hash {
        let leaves = self.tree.keys().filter(|hash| self.is_leaf(hash));
        leaves.fold(self.state.tip.hash, |best, &leaf| if self.is_preferred(leaf, best) { leaf } else { best })
    }

    /// Moves the canonical chain to the best branch, validating each block as it is applied; a
    /// block that fails is removed with its descendants and the choice is made again. All
    /// storage changes go out as one atomic `CommitBlocks`.
    fn activate_best_chain(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        let old_tip = self.state.tip;
        let old_justified = self.state.finality.justified;
        let old_final = self.finalized;
        let mut ops = Vec::new();
        // (hash, block) of every block rolled back and applied, in order.
        let mut abandoned: Vec<(Hash, Arc<Block>)> = Vec::new();
        let mut applied: Vec<(Hash, Arc<Block>)> = Vec::new();
        let mut lowest_fork_height = old_tip.height;
        // Each round either reaches the best tip or removes an invalid block: bounded.
        for _round in 0..=self.tree.len() {
            let best = self.best_tip();
            if best == self.state.tip.hash {
                break;
            }
            let mut branch = vec![best];
            let mut cursor = self.tree[&best].parent;
            while self.canonical_hash(self.tree[&cursor].height) != Some(cursor) {
                branch.push(cursor);
                cursor = self.tree[&cursor].parent;
            }
            branch.reverse();
            let fork_height = self.tree[&cursor].height;
            assert!(fork_height >= self.finalized.height, "fork choice never leaves the final block");
            lowest_fork_height = lowest_fork_height.min(fork_height);
            while self.state.tip.height > fork_height {
                let height = self.state.tip.height;
                let hash = self.canonical.pop().expect("the canonical chain reaches the tip");
                let undo =
                    self.undo.remove(&height).expect("undo is kept for every canonical block above the final one");
                self.state.apply_delta(&undo);
                abandoned.push((hash, self.tree[&hash].block.clone()));
                ops.push(ChainOp::Rollback { height, hash, undo });
            }
            for hash in branch {
                let block = self.tree[&hash].block.clone();
                match self.with_tip_context(now_ms, |context| validate::validate_block(context, block.clone())) {
                    Ok(valid) => self.apply_valid(valid, &mut ops, &mut applied),
                    Err(error) => {
                        let is_early = matches!(error, BlockError::TimestampInFuture { .. });
                        self.remove_subtree(hash);
                        if is_early {
                            debug!(?hash, "dropping block for now: timestamp ahead of the local clock");
                        } else {
                            self.reject_block(hash, &error, None, actions);
                        }
                        break;
                    }
                }
            }
        }
        if ops.is_empty() {
            return;
        }
        let change = TipChange { old_justified, old_final, fork_height: lowest_fork_height, ops, abandoned, applied };
        self.finish_tip_change(change, actions);
    }

    /// Runs `f` with the validation context of a block extending the current tip.
    fn with_tip_context<R>(&self, now_ms: u64, f: impl FnOnce(&BlockContext<'_>) -> R) -> R {
        let (genesis, threads) = (&self.config.genesis, self.config.verify_threads);
        validate::with_canonical_context(genesis, &self.state, &self.canonical, now_ms, &self.cache, threads, f)
    }

    fn apply_valid(&mut self, valid: ValidBlock, ops: &mut Vec<ChainOp>, applied: &mut Vec<(Hash, Arc<Block>)>) {
        let undo = apply_block(&mut self.state, &valid);
        self.canonical.push(valid.hash);
        self.undo.insert(valid.block.header.height, undo.clone());
        if let Some(entry) = self.tree.get_mut(&valid.hash) {
            entry.finality = self.state.finality.clone();
        }
        applied.push((valid.hash, valid.block.clone()));
        ops.push(ChainOp::Apply { block: valid.block, hash: valid.hash, delta: valid.delta, undo });
    }

    fn finish_tip_change(&mut self, change: TipChange, actions: &mut Vec<Action>) {
        let TipChange { old_justified, old_final, fork_height, ops, abandoned, applied } = change;
        let finality = self.state.finality.clone();
        if finality.finalized.height > self.finalized.height {
            self.finalized = finality.finalized;
        }
        assert_eq!(
            self.canonical_hash(self.finalized.height),
            Some(self.finalized.hash),
            "the final block stays on the canonical chain"
        );
        actions.push(Action::CommitBlocks(Box::new(Commit {
            ops,
            tip: self.state.tip,
            justified: finality.justified,
            finalized: self.finalized,
        })));
        // Net effect: blocks rolled back and not re-applied, and blocks newly applied.
        let applied_hashes: BTreeSet<Hash> = applied.iter().map(|(hash, _)| *hash).collect();
        let abandoned_hashes: BTreeSet<Hash> = abandoned.iter().map(|(hash, _)| *hash).collect();
        let rolled_back = abandoned.iter().filter(|(hash, _)| !applied_hashes.contains(hash)).count() as u64;
        let newly_applied: Vec<&(Hash, Arc<Block>)> =
            applied.iter().filter(|(hash, _)| !abandoned_hashes.contains(hash)).collect();
        if rolled_back > 0 {
            actions.push(Action::Trace(TraceEvent::Reorg {
                fork_height,
                rolled_back,
                applied: newly_applied.len() as u64,
                new_tip: self.state.tip,
            }));
        }
        let mut touched_senders: BTreeSet<Address> = BTreeSet::new();
        let mut taken: BTreeMap<(Address, u64), (Hash, Height)> = BTreeMap::new();
        for (_, block) in &applied {
            for transfer in &block.transfers {
                taken.insert((transfer.from, transfer.nonce), (transfer_id(transfer), block.header.height));
            }
        }
        for (hash, block) in newly_applied {
            let header = &block.header;
            if header.rank > 0 {
                actions.push(Action::Trace(TraceEvent::TimeoutFired {
                    height: header.height,
                    skipped_ranks: header.rank,
                }));
            }
            actions.push(Action::Trace(TraceEvent::BlockCommitted {
                height: header.height,
                hash: *hash,
                producer: header.producer,
                rank: header.rank,
                transfers: block.transfers.len(),
            }));
            let mut jailed: BTreeSet<NodeId> = BTreeSet::new();
            for evidence in &block.evidence {
                let Ok(facts) = check_evidence(&self.config.genesis, evidence, &self.cache) else {
                    unreachable!("committed evidence was validated");
                };
                actions.push(Action::Trace(TraceEvent::EvidenceCommitted {
                    height: header.height,
                    offender: facts.offender,
                    kind: evidence.kind(),
                    offence_height: facts.height,
                }));
                let jail_blocks = self.config.genesis.parameters.jail_blocks;
                if jail_blocks > 0 && jailed.insert(facts.offender) {
                    actions.push(Action::Trace(TraceEvent::Jailed {
                        validator: facts.offender,
                        until_height: header.height.saturating_add(jail_blocks),
                    }));
                }
            }
            touched_senders.extend(block.transfers.iter().map(|transfer| transfer.from));
        }
        // Transfers and reports of abandoned blocks go back to their pools, lowest block first:
        // rollback order is highest first, and a sender's later nonce cannot enter the pool
        // before its earlier one (it would leave a gap and be refused).
        let mut abandoned_for_good: Vec<&Arc<Block>> =
            abandoned.iter().filter(|(hash, _)| !applied_hashes.contains(hash)).map(|(_, block)| block).collect();
        abandoned_for_good.sort_by_key(|block| block.header.height);
        for block in abandoned_for_good {
            for transfer in &block.transfers {
                touched_senders.insert(transfer.from);
                let sender = self.state.account(&transfer.from);
                // Back in the pool, and gossiped again: peers on the winning branch may never
                // have seen it (it may have travelled only inside the abandoned block).
                let id = transfer_id(transfer);
                match self.mempool.insert(transfer.clone(), id, &sender) {
                    Ok(inserted) => {
                        self.drop_removed(inserted.removed, &BTreeMap::new(), actions);
                        actions.push(Action::Broadcast { message: Message::Transfer(transfer.clone()), except: None });
                    }
                    Err(MempoolError::AlreadyKnown { .. }) => {}
                    Err(error) => {
                        // Committed once, now neither committed nor pending: say why, unless
                        // the new branch holds it too or used its nonce (told apart by `taken`).
                        let reason = match taken.get(&(transfer.from, transfer.nonce)) {
                            Some((by, _)) if *by == id => continue,
                            Some((by, height)) => DropReason::NonceTaken { by: *by, height: *height },
                            None => DropReason::NotReadmitted { reason: error.to_string() },
                        };
                        debug!(?id, %reason, "dropped a transfer of an abandoned block");
                        let dropped = DroppedTransfer {
                            id,
                            transfer: transfer.clone(),
                            reason,
                            tip_height: self.state.tip.height,
                        };
                        actions.push(Action::TxDropped(Box::new(dropped)));
                    }
                }
            }
            for report in &block.reports {
                if let Some(validator) = self.config.genesis.validator_index(&report.node) {
                    self.pool_report(validator as u32, report.clone());
                }
            }
        }
        let state = &self.state;
        let removed = self.mempool.revalidate_senders(&touched_senders, |address| state.account(address));
        self.drop_removed(removed, &taken, actions);
        for sender in &touched_senders {
            self.admit_gapped(sender, actions);
        }
        for (validator, pool) in self.report_pool.iter_mut() {
            if let Some(recorded) = self.state.validators[*validator as usize].recorded_sequence() {
                pool.retain(|sequence, _| *sequence > recorded);
            }
        }
        let tip_height = self.state.tip.height;
        self.evidence_watch.forget_below(tip_height.saturating_sub(EVIDENCE_WATCH_BLOCKS));
        self.evidence_pool.forget_too_old(tip_height, self.config.genesis.parameters.evidence_max_age_blocks);
        if finality.justified != old_justified {
            actions.push(Action::Trace(TraceEvent::Justified { checkpoint: finality.justified }));
        }
        if self.finalized != old_final {
            assert!(self.finalized.height > old_final.height, "the final block never moves back");
            actions.push(Action::Trace(TraceEvent::Finalized { checkpoint: self.finalized }));
            self.prune_below_final();
        }
    }

    /// Removes a block and all its descendants from the tree.
    fn remove_subtree(&mut self, root: Hash) {
        let mut stack = vec![root];
        while let Some(hash) = stack.pop() {
            if let Some(entry) = self.tree.remove(&hash) {
                if let Some(siblings) = self.children.get_mut(&entry.parent) {
                    siblings.remove(&hash);
                }
            }
            if let Some(children) = self.children.remove(&hash) {
                stack.extend(children);
            }
        }
    }

    /// After finality advances: forget blocks that are below the final one or do not descend
    /// from it, and undo data that can no longer be used.
    fn prune_below_final(&mut self) {
        let finalized = self.finalized;
        let keep: BTreeSet<Hash> = self
            .tree
            .iter()
            .filter(|(hash, entry)| {
                entry.height >= finalized.height && self.ancestor_hash(**hash, finalized.height) == Some(finalized.hash)
            })
            .map(|(hash, _)| *hash)
            .collect();
        self.tree.retain(|hash, _| keep.contains(hash));
        self.children.retain(|hash, _| keep.contains(hash));
        for children in self.children.values_mut() {
            children.retain(|child| keep.contains(child));
        }
        self.undo.retain(|height, _| *height > finalized.height);
        self.orphans.retain(|_, orphan| orphan.header.height > finalized.height);
    }

    /// Bounds side branches: past the limit, the lowest non-canonical leaves go first.
    fn prune_side_blocks(&mut self) {
        let final_height = self.finalized.height as usize;
        while self.tree.len() > SIDE_BLOCKS_MAX + (self.canonical.len() - final_height) {
            let lowest_side_leaf = self
                .tree
                .iter()
                .filter(|(hash, entry)| self.canonical_hash(entry.height) != Some(**hash) && self.is_leaf(hash))
                .min_by_key(|(hash, entry)| (entry.height, **hash))
                .map(|(hash, _)| *hash);
            match lowest_side_leaf {
                Some(hash) => self.remove_subtree(hash),
                None => break,
            }
        }
    }

    // ---- sync ---------------------------------------------------------------------------------

    fn request_sync(&mut self, now_ms: u64, peer: NodeId, actions: &mut Vec<Action>) {
        self.request_sync_after(now_ms, peer, None, actions);
    }

    /// Asks `peer` for blocks; `after` (a block of its chain we already hold) leads the locator,
    /// so the answer continues from there.
    fn request_sync_after(&mut self, now_ms: u64, peer: NodeId, after: Option<Checkpoint>, actions: &mut Vec<Action>) {
        if self.sync_requested_at_ms.contains_key(&peer) {
            return;
        }
        self.sync_requested_at_ms.insert(peer, now_ms);
        actions.push(Action::Trace(TraceEvent::SyncRequested { peer, have_height: self.state.tip.height }));
        let is_walk = self.peers.get(&peer).is_some_and(|peer_state| peer_state.evidence_walk);
        let mut locator = if is_walk { self.locator_to_genesis() } else { self.locator() };
        if let Some(after) = after {
            locator.truncate(LOCATOR_HASHES_MAX - 1);
            locator.insert(0, after);
        }
        actions.push(Action::SendTo { peer, message: Message::GetBlocks { locator } });
    }

    /// Checkpoints the peer can match against its canonical chain: first along the highest
    /// side branch we hold (which may be one we are still fetching, so the next response
    /// continues it instead of repeating itself), then along our canonical chain; each from its
    /// tip back to our final block, the last ten densely, then exponentially spaced.
    fn locator(&self) -> Vec<Checkpoint> {
        let highest_side_leaf = self
            .tree
            .iter()
            .filter(|(hash, _)| **hash != self.state.tip.hash && self.is_leaf(hash))
            .max_by_key(|(hash, entry)| (entry.height, std::cmp::Reverse(**hash)))
            .map(|(hash, entry)| Checkpoint { height: entry.height, hash: *hash });
        let mut locator = Vec::new();
        let half = LOCATOR_HASHES_MAX / 2;
        if let Some(leaf) = highest_side_leaf {
            locator.extend(self.locator_along(leaf, half));
        }
        let budget = LOCATOR_HASHES_MAX - locator.len();
        locator.extend(self.locator_along(self.state.tip, budget));
        locator
    }

    /// Canonical checkpoints from the tip down to genesis (the last ten densely, then
    /// exponentially spaced): a peer whose chain left ours below our final block matches one
    /// at or below the fork and answers from there (see `on_status`).
    fn locator_to_genesis(&self) -> Vec<Checkpoint> {
        let mut locator = Vec::new();
        let mut height = self.state.tip.height;
        let mut step = 1u64;
        while height > 0 && locator.len() + 1 < LOCATOR_HASHES_MAX {
            locator.push(Checkpoint { height, hash: self.canonical[height as usize] });
            if locator.len() >= 10 {
                step = step.saturating_mul(2);
            }
            height = height.saturating_sub(step);
        }
        locator.push(Checkpoint { height: 0, hash: self.genesis_hash });
        locator
    }

    /// Checkpoints from `tip` down to our final block (never below it: anything worth fetching
    /// descends from it, and stopping there lets the first answer start at or above it).
    fn locator_along(&self, tip: Checkpoint, budget: usize) -> Vec<Checkpoint> {
        let final_height = self.finalized.height;
        let mut locator = Vec::new();
        let mut height = tip.height;
        let mut step = 1u64;
        while height > final_height && locator.len() + 1 < budget {
            let Some(hash) = self.ancestor_hash(tip.hash, height) else {
                break;
            };
            locator.push(Checkpoint { height, hash });
            if locator.len() >= 10 {
                step = step.saturating_mul(2);
            }
            height = height.saturating_sub(step).max(final_height);
        }
        locator.push(self.finalized);
        locator
    }

    fn on_get_blocks(&mut self, from: NodeId, locator: &[Checkpoint], actions: &mut Vec<Action>) {
        let shared = locator
            .iter()
            .take(LOCATOR_HASHES_MAX)
            .filter(|checkpoint| self.canonical_hash(checkpoint.height) == Some(checkpoint.hash))
            .map(|checkpoint| checkpoint.height)
            .max();
        let Some(shared_height) = shared else {
            debug!("ignoring block request: no locator checkpoint is on this chain");
            return;
        };
        if shared_height >= self.state.tip.height {
            // Nothing to send, but say so: a peer that asked because of a tip we advertised and
            // have since abandoned must learn it is not on offer, or it would keep waiting.
            actions.push(Action::SendTo { peer: from, message: Message::Blocks(Vec::new()) });
            return;
        }
        let from_height = shared_height + 1;
        let to_height = self.state.tip.height.min(shared_height + SYNC_BLOCKS_PER_RESPONSE_MAX as u64);
        actions.push(Action::ServeBlocks { peer: from, from_height, to_height });
    }

    // ---- production ---------------------------------------------------------------------------

    /// Recomputes the cached ranking if the tip moved since it was computed.
    fn refresh_ranking(&mut self) {
        if self.ranking_parent != Some(self.state.tip) {
            self.ranking = self.next_election();
            self.ranking_parent = Some(self.state.tip);
        }
    }

    fn my_rank(&self) -> Option<u32> {
        let index = self.validator_index?;
        assert_eq!(self.ranking_parent, Some(self.state.tip), "the ranking is refreshed before it is read");
        self.ranking.iter().find(|candidate| candidate.validator_index == index).map(|candidate| candidate.rank)
    }

    /// A peer advertised a higher tip that we do not have, recently or with blocks flowing
    /// toward it: we are behind and syncing. An announcement that stays unanswered for a
    /// producer timeout stops counting, so one faulty or cut-off peer cannot hold production
    /// back for ever.
    fn is_syncing(&self, now_ms: u64) -> bool {
        let fresh_ms = self.config.genesis.parameters.producer_timeout_ms;
        self.peers.values().any(|peer_state| {
            peer_state.tip.is_some_and(|tip| tip.height > self.state.tip.height && !self.knows_block(&tip))
                && now_ms < peer_state.tip_fresh_at_ms.saturating_add(fresh_ms)
        })
    }

    /// Just (re)started, and fewer validators than make a supermajority with us have told us
    /// their tips, or the first mempool sync is not over. An up-to-date one among them would
    /// advertise a newer tip and sync would hold production back; waiting for every validator
    /// would let one dead node delay a restarted producer by a whole timeout.
    fn is_warming_up(&self, now_ms: u64) -> bool {
        if !self.mempool_synced {
            return true;
        }
        let started_at_ms = self.started_at_ms.unwrap_or(now_ms);
        if now_ms >= started_at_ms.saturating_add(self.config.genesis.parameters.producer_timeout_ms) {
            return false;
        }
        let heard_from = self.peers.values().filter(|peer_state| peer_state.status_received).count();
        heard_from + 1 < self.config.genesis.quorum()
    }

    fn my_eligible_time(&self) -> Option<u64> {
        if self.produced_on_parent == Some(self.state.tip.hash) {
            return None;
        }
        let rank = self.my_rank()?;
        Some(eligible_at_ms(&self.config.genesis.parameters, self.state.tip_timestamp_ms, rank))
    }

    fn try_produce(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        let (Some(rank), Some(eligible_ms)) = (self.my_rank(), self.my_eligible_time()) else {
            return;
        };
        if now_ms < eligible_ms {
            return;
        }
        if self.is_syncing(now_ms) {
            debug!(height = self.state.tip.height, "not producing: a peer has a higher tip we are fetching");
            return;
        }
        if self.is_warming_up(now_ms) {
            debug!("not producing: just started, waiting for the other validators' tips");
            return;
        }
        let parameters = &self.config.genesis.parameters;
        let height = self.state.tip.height + 1;
        let state = &self.state;
        // Reports first (they carry the votes finality needs), round by round so that every
        // validator's oldest unrecorded report gets in before anyone's second, within half the
        // block; transfers fill what is left. The block can then never exceed its byte limit.
        let block_bytes_max = parameters.block_bytes_max as usize;
        let report_bytes_max = block_bytes_max / 2;
        let per_validator_max = parameters.reports_per_validator_per_block_max as usize;
        let pending: Vec<Vec<&MetricReport>> = self
            .report_pool
            .iter()
            .map(|(validator, pool)| {
                let recorded = state.validators[*validator as usize].recorded_sequence();
                pool.values()
                    .filter(|report| {
                        recorded.is_none_or(|recorded| report.sequence > recorded) && report.tip.height < height
                    })
                    .take(per_validator_max)
                    .collect()
            })
            .collect();
        let mut reports: Vec<MetricReport> = Vec::new();
        let mut report_bytes = 0;
        'rounds: for round in 0..per_validator_max {
            for validator_reports in &pending {
                let Some(report) = validator_reports.get(round) else { continue };
                let bytes = crate::codec::report_bytes(report).len();
                if report_bytes + bytes > report_bytes_max {
                    break 'rounds;
                }
                report_bytes += bytes;
                reports.push((*report).clone());
            }
        }
        // Reports of one validator must be in sequence order within the block.
        reports.sort_by_key(|report| (report.node, report.sequence));
        let transfer_bytes_max = block_bytes_max.saturating_sub(report_bytes + BLOCK_BYTES_RESERVED_FOR_HEADER);
        let transfers = self.mempool.select_for_block(
            |address| state.account(address),
            parameters.block_transfers_max as usize,
            transfer_bytes_max,
        );
        let evidence = self.evidence_pool.select_for_block(&self.config.genesis, state, height);
        self.produced_on_parent = Some(self.state.tip.hash);
        let key = &self.config.key;
        let built = self.with_tip_context(now_ms, |context| {
            build_block(context, key, rank, now_ms, transfers, reports, evidence).or_else(|error| {
                debug!(%error, "block assembly failed: producing an empty block instead");
                build_block(context, key, rank, now_ms, Vec::new(), Vec::new(), Vec::new())
            })
        });
        let valid = match built {
            Ok(valid) => valid,
            Err(error) => {
                debug!(%error, "cannot produce even an empty block");
                return;
            }
        };
        actions.push(Action::Trace(TraceEvent::BlockProduced {
            height,
            hash: valid.hash,
            rank,
            transfers: valid.block.transfers.len(),
            reports: valid.block.reports.len(),
        }));
        self.seen.insert(valid.hash);
        self.on_block(now_ms, None, valid.block, true, actions);
    }

    // ---- restart --------------------------------------------------------------------------------

    fn on_restored(&mut self, restored: Restored) {
        let Restored { state, canonical_hashes, final_block, recent_blocks, last_vote, report_sequence } = restored;
        assert_eq!(canonical_hashes.first(), Some(&self.genesis_hash), "storage belongs to this genesis");
        assert_eq!(canonical_hashes.len() as u64, state.tip.height + 1, "one canonical hash per height");
        let finalized = Checkpoint { height: final_block.header.height, hash: block_hash(&final_block.header) };
        assert_eq!(
            canonical_hashes.get(finalized.height as usize),
            Some(&finalized.hash),
            "the restored final block is on the restored chain"
        );
        assert!(finalized.height >= state.finality.finalized.height, "storage keeps the node's latest final block");
        // Finality after each recent block: the next block's undo holds it; the tip's is the state's.
        let mut finality_after: Vec<FinalityState> =
            recent_blocks.iter().skip(1).map(|(_, undo)| undo.finality.clone()).collect();
        finality_after.push(state.finality.clone());
        let final_finality =
            recent_blocks.first().map_or_else(|| state.finality.clone(), |(_, undo)| undo.finality.clone());
        self.tree.clear();
        self.children.clear();
        self.undo.clear();
        self.tree.insert(
            finalized.hash,
            TreeEntry {
                parent: final_block.header.prev_hash,
                height: finalized.height,
                rank: final_block.header.rank,
                finality: final_finality,
                block: final_block,
            },
        );
        for ((block, undo), finality) in recent_blocks.into_iter().zip(finality_after) {
            let hash = block_hash(&block.header);
            let height = block.header.height;
            self.children.entry(block.header.prev_hash).or_default().insert(hash);
            self.tree.insert(
                hash,
                TreeEntry { parent: block.header.prev_hash, height, rank: block.header.rank, finality, block },
            );
            self.undo.insert(height, undo);
        }
        self.state = state;
        self.canonical = canonical_hashes;
        self.finalized = finalized;
        self.last_vote = last_vote;
        self.report_sequence = report_sequence;
        self.produced_on_parent = None;
        self.reported_tip = None;
        self.report_pool.clear();
        self.orphans.clear();
        self.mempool_synced = false;
        self.pool_admitted = 0;
    }
}
