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
//! - `TxAccepted` / `TxRejected` answer a local `TxSubmitted` (a rejection is a typed
//!   `TxRejection` with a stable `code`); `TxDropped` says a pending transfer left the mempool
//!   without being included, and why (the node's RPC answers `get_tx` with it); `Trace` is
//!   observability only.
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
//!
//! # Where things live
//!
//! This module holds the types a driver sees, the `Node` and its one entry point, `step`, which
//! dispatches each event to an `on_<event>` handler. The handlers and their helpers live beside
//! the concern they serve, each module adding to `impl Node`:
//!
//! | module | owns |
//! | --- | --- |
//! | `tree` | the block tree above the final block, fork choice, pruning |
//! | `chain` | blocks in (checks, orphans, rejection), activating the best branch, settling a tip change |
//! | `sync` | status, block requests with locators, answers, whether sync holds production back |
//! | `relay` | relay-once (`SeenSet`), the choice of peers a message goes on to, transfer batches |
//! | `transfers` | transfers into the mempool, held gaps, the reason for every drop |
//! | `mempool_sync` | the pool exchange with each new link and the readiness it decides |
//! | `reports` | metric reports and votes: the report pool, this node's own report |
//! | `evidence` | feeding the watch, verifying, pooling and gossiping evidence, the conflicting-chain walk |
//! | `production` | rank, eligibility, warm-up, block assembly |
//! | `restore` | rebuilding the tree and chain from what storage restored |

mod chain;
mod evidence;
mod mempool_sync;
mod production;
mod relay;
mod reports;
mod restore;
mod sync;
#[cfg(test)]
mod test_support;
mod transfers;
mod tree;

use self::relay::{SeenSet, TransferOutbox};
use self::tree::TreeEntry;
use crate::crypto::{Keypair, SignatureCache};
use crate::election;
use crate::evidence::{EvidencePool, EvidenceWatch, PooledEvidence};
use crate::finality::FinalityState;
use crate::genesis::{genesis_block, Genesis};
use crate::limits::{
    GOSSIP_BATCH_TRANSFERS_MAX, LINKS_ANNOUNCE_DELAY_MS, POOL_ANNOUNCE_IDS_MAX, POOL_FETCH_TIMEOUT_MS, SYNC_RETRY_MS,
};
use crate::mempool::{DroppedTransfer, Mempool, MempoolConfig, MempoolError};
use crate::message::Message;
use crate::pool_sync::{PoolSync, PoolSyncPhase};
use crate::state::{ChainState, StateDelta};
use crate::types::{Address, Block, Checkpoint, Hash, Height, MetricReport, NodeId, Transfer, Vote};
use crate::validate::{BlockError, EvidenceError, ReportError, TxError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tracing::debug;

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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Facts the driver reports, in the past tense (serialisable: a record log holds them).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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
    /// The peer sent something signed that does not verify: drop the link.
    DisconnectPeer {
        peer: NodeId,
        reason: DisconnectReason,
    },
    TxAccepted {
        id: Hash,
    },
    TxRejected {
        id: Hash,
        reason: TxRejection,
    },
    /// A pending transfer left the mempool without being included (boxed: it carries the
    /// transfer, and actions are moved around in bulk).
    TxDropped(Box<DroppedTransfer>),
    Trace(TraceEvent),
}

/// Why a locally submitted transfer was refused (`Action::TxRejected`): a rule the transfer
/// breaks on its own, or the mempool's policy against what is already pending. `Display` is
/// the underlying error's text; `code` is a stable, machine-readable name for clients:
///
/// | code | variant | meaning |
/// | --- | --- | --- |
/// | `wrong_chain` | `TxError::WrongChainId` | signed for another chain id |
/// | `zero_amount` | `TxError::ZeroAmount` | the amount is zero |
/// | `bad_signature` | `TxError::BadSignature` | the signature does not verify under the sender's key |
/// | `wrong_nonce` | `TxError::WrongNonce` | not the account's next nonce (in a block) |
/// | `insufficient_balance` | `TxError::InsufficientBalance` | the balance is below amount + fee |
/// | `amount_overflow` | `TxError::AmountOverflow` | amount + fee overflows a u64 |
/// | `recipient_balance_overflow` | `TxError::RecipientBalanceOverflow` | the recipient's balance would overflow |
/// | `duplicate` | `MempoolError::AlreadyKnown` | the same transfer is already pending |
/// | `nonce_used` | `MempoolError::NonceTooLow` | the nonce was already used on the chain |
/// | `nonce_gap` | `MempoolError::NonceGap` | an earlier nonce of the sender is neither committed nor pending |
/// | `fee_too_low` | `MempoolError::FeeBelowMinimum` | the fee is below this node's minimum |
/// | `replacement_fee_too_low` | `MempoolError::ReplacementFeeTooLow` | a pending transfer holds the nonce with a fee at least as high |
/// | `insufficient_balance_with_pending` | `MempoolError::InsufficientBalance` | the balance cannot cover it with the sender's earlier pending transfers |
/// | `pending_amount_overflow` | `MempoolError::AmountOverflow` | with the sender's pending transfers, the total overflows |
/// | `sender_queue_full` | `MempoolError::SenderQueueFull` | the sender already has the most pending transfers one account may queue |
/// | `mempool_full` | `MempoolError::PoolFull` | the mempool is full and the fee is too low to evict anything |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxRejection {
    /// The transfer breaks a rule on its own (`validate::check_transfer_alone`).
    #[error(transparent)]
    Invalid(#[from] TxError),
    /// The mempool refused it against the sender's account and pending transfers.
    #[error(transparent)]
    Mempool(#[from] MempoolError),
}

impl TxRejection {
    /// The stable code of the refusal (see the table above).
    pub fn code(&self) -> &'static str {
        match self {
            TxRejection::Invalid(error) => error.code(),
            TxRejection::Mempool(error) => error.code(),
        }
    }
}

/// Why the node asks the driver to drop a peer (`Action::DisconnectPeer`): the error of what it
/// sent, always a signature that does not verify (a forgery costs an honest peer nothing to
/// avoid). `Display` is that error's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DisconnectReason {
    /// A block with a forged producer signature, or carrying a forged transfer or report.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A report whose signature does not verify.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// Evidence whose signatures do not verify under the accused validator's key.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
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
        reason: BlockError,
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
    /// Its index in the genesis validators (None for a peer that is not one, as in tests).
    validator_index: Option<u32>,
    /// The validators it last said it has links with (`Message::Links`); None until it says.
    links: Option<Vec<u8>>,
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
    /// Transfers admitted and not yet gossiped (see `relay`, "Transfer batches").
    outbox: TransferOutbox,
    peers: BTreeMap<NodeId, PeerState>,
    /// When our links go out to every peer after a new link (see `relay`, "Links").
    links_announce_at_ms: Option<u64>,
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
    /// This validator's rank in `ranking` (None for an observer).
    my_rank: Option<u32>,
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
            outbox: TransferOutbox::default(),
            peers: BTreeMap::new(),
            links_announce_at_ms: None,
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
            my_rank: None,
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
        // Most steps end with a wake-up and a few sends: room for them without regrowing.
        let mut actions = Vec::with_capacity(8);
        if self.started_at_ms.is_none() || matches!(event, Event::Restored(_)) {
            self.started_at_ms = Some(now_ms);
        }
        match event {
            Event::Tick => self.on_tick(now_ms, &mut actions),
            Event::MessageReceived { from, message } => self.on_message(now_ms, from, message, &mut actions),
            Event::PeerConnected { peer } => self.on_peer_connected(now_ms, peer, &mut actions),
            Event::PeerDisconnected { peer } => {
                self.peers.remove(&peer);
                self.sync_requested_at_ms.remove(&peer);
                self.pool_requested_at_ms.remove(&peer);
                self.announce_links(&mut actions);
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
        let mut wake_at_ms = self.flush_outbox_if_due(now_ms, actions).unwrap_or(u64::MAX);
        if let Some(announce_at_ms) = self.links_announce_at_ms {
            if now_ms >= announce_at_ms {
                self.announce_links(actions);
            } else {
                wake_at_ms = wake_at_ms.min(announce_at_ms);
            }
        }
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

    fn on_peer_connected(&mut self, now_ms: u64, peer: NodeId, actions: &mut Vec<Action>) {
        let validator_index = self.config.genesis.validator_index(&peer).map(|index| index as u32);
        self.peers.insert(peer, PeerState { validator_index, ..PeerState::default() });
        self.sync_requested_at_ms.remove(&peer);
        self.pool_requested_at_ms.remove(&peer);
        actions
            .push(Action::SendTo { peer, message: Message::Status { tip: self.state.tip, finalized: self.finalized } });
        // The new peer learns our links at once; the others after a short delay (`relay`).
        actions.push(Action::SendTo { peer, message: self.links_message() });
        self.links_announce_at_ms.get_or_insert(now_ms.saturating_add(LINKS_ANNOUNCE_DELAY_MS));
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

    fn on_message(&mut self, now_ms: u64, from: NodeId, message: Message, actions: &mut Vec<Action>) {
        match message {
            Message::Transfers(transfers) => {
                if transfers.len() > GOSSIP_BATCH_TRANSFERS_MAX {
                    debug!(peer = ?from, count = transfers.len(), "taking only the first transfers of an oversized batch");
                }
                for transfer in transfers.into_iter().take(GOSSIP_BATCH_TRANSFERS_MAX) {
                    self.on_transfer(Some(from), transfer, actions);
                }
            }
            Message::Block(block) => self.on_block(now_ms, Some(from), block, true, actions),
            Message::Report(report) => self.on_report(now_ms, from, report, actions),
            Message::Status { tip, finalized } => self.on_status(now_ms, from, tip, finalized, actions),
            Message::Evidence(evidence) => self.on_evidence(Some(from), *evidence, actions),
            Message::GetBlocks { locator } => self.on_get_blocks(from, &locator, actions),
            Message::PoolAnnounce { ids, complete } => self.on_pool_announce(now_ms, from, &ids, complete, actions),
            Message::GetPooled { ids } => self.on_get_pooled(from, &ids, actions),
            Message::Pooled(transfers) => self.on_pooled(now_ms, from, transfers, actions),
            Message::Blocks(blocks) => self.on_blocks(now_ms, from, blocks, actions),
            Message::Links { validators } => self.on_links(from, validators),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{cache, observer, receive, validator_id, Branch};
    use super::{Action, Event, MempoolError, TxError, TxRejection};
    use crate::message::Message;
    use crate::testkit::{account_key, fast_genesis, sign_transfer, validator_node};
    use crate::types::Hash;
    use std::collections::BTreeSet;

    /// Which variant a rejection is, as a number. The match is exhaustive, so a new variant does
    /// not compile until it is numbered here, and then the table below must hold a sample of it.
    fn variant_number(rejection: &TxRejection) -> usize {
        match rejection {
            TxRejection::Invalid(error) => match error {
                TxError::WrongChainId { .. } => 0,
                TxError::ZeroAmount => 1,
                TxError::BadSignature => 2,
                TxError::WrongNonce { .. } => 3,
                TxError::InsufficientBalance { .. } => 4,
                TxError::AmountOverflow => 5,
                TxError::RecipientBalanceOverflow => 6,
            },
            TxRejection::Mempool(error) => match error {
                MempoolError::AlreadyKnown { .. } => 7,
                MempoolError::NonceTooLow { .. } => 8,
                MempoolError::NonceGap { .. } => 9,
                MempoolError::FeeBelowMinimum { .. } => 10,
                MempoolError::ReplacementFeeTooLow { .. } => 11,
                MempoolError::InsufficientBalance { .. } => 12,
                MempoolError::AmountOverflow => 13,
                MempoolError::SenderQueueFull { .. } => 14,
                MempoolError::PoolFull { .. } => 15,
            },
        }
    }
    const REJECTION_VARIANTS: usize = 16;

    #[test]
    fn every_rejection_has_its_own_stable_snake_case_code_and_keeps_its_error_text() {
        let id = Hash([1; 32]);
        // The codes are an interface: this table is the one in `TxRejection`'s docs.
        let table: Vec<(TxRejection, &str)> = vec![
            (TxError::WrongChainId { expected: "a".into(), got: "b".into() }.into(), "wrong_chain"),
            (TxError::ZeroAmount.into(), "zero_amount"),
            (TxError::BadSignature.into(), "bad_signature"),
            (TxError::WrongNonce { expected: 1, got: 2 }.into(), "wrong_nonce"),
            (TxError::InsufficientBalance { balance: 1, needed: 2 }.into(), "insufficient_balance"),
            (TxError::AmountOverflow.into(), "amount_overflow"),
            (TxError::RecipientBalanceOverflow.into(), "recipient_balance_overflow"),
            (MempoolError::AlreadyKnown { id }.into(), "duplicate"),
            (MempoolError::NonceTooLow { expected: 2, got: 1 }.into(), "nonce_used"),
            (MempoolError::NonceGap { expected: 1, got: 2 }.into(), "nonce_gap"),
            (MempoolError::FeeBelowMinimum { minimum: 2, got: 1 }.into(), "fee_too_low"),
            (MempoolError::ReplacementFeeTooLow { pending_fee: 2, got: 2 }.into(), "replacement_fee_too_low"),
            (MempoolError::InsufficientBalance { balance: 1, needed: 2 }.into(), "insufficient_balance_with_pending"),
            (MempoolError::AmountOverflow.into(), "pending_amount_overflow"),
            (MempoolError::SenderQueueFull { pending: 256 }.into(), "sender_queue_full"),
            (MempoolError::PoolFull { lowest_fee: 3 }.into(), "mempool_full"),
        ];
        let covered: BTreeSet<usize> = table.iter().map(|(rejection, _)| variant_number(rejection)).collect();
        assert_eq!(covered, (0..REJECTION_VARIANTS).collect(), "one sample of every variant");
        let codes: BTreeSet<&str> = table.iter().map(|(rejection, _)| rejection.code()).collect();
        assert_eq!(codes.len(), table.len(), "no two variants share a code");
        for (rejection, code) in &table {
            assert_eq!(rejection.code(), *code, "{rejection:?}");
            let is_snake_case = code.starts_with(|first: char| first.is_ascii_lowercase())
                && code.chars().all(|character| character.is_ascii_lowercase() || character == '_')
                && !code.ends_with('_')
                && !code.contains("__");
            assert!(is_snake_case, "{code}");
            // The text is the error's own, as logs and traces printed it before it was typed.
            let text = match rejection {
                TxRejection::Invalid(error) => error.to_string(),
                TxRejection::Mempool(error) => error.to_string(),
            };
            assert_eq!(rejection.to_string(), text);
        }
        assert_eq!(
            TxRejection::from(MempoolError::NonceGap { expected: 0, got: 3 }).to_string(),
            "nonce 3 would leave a gap: this account's next nonce is 0"
        );
    }

    #[test]
    fn a_disconnect_reason_reads_as_the_error_it_wraps() {
        use super::{BlockError, DisconnectReason, EvidenceError, ReportError};
        let reasons: Vec<(DisconnectReason, String)> = vec![
            (BlockError::BadProducerSignature.into(), BlockError::BadProducerSignature.to_string()),
            (ReportError::BadSignature.into(), ReportError::BadSignature.to_string()),
            (EvidenceError::BadSignature.into(), EvidenceError::BadSignature.to_string()),
        ];
        for (reason, text) in reasons {
            assert_eq!(reason.to_string(), text);
        }
        assert_eq!(
            DisconnectReason::from(BlockError::BadProducerSignature).to_string(),
            "block producer signature does not verify"
        );
    }

    #[test]
    fn every_step_ends_with_one_wake_up_after_now() {
        let genesis = fast_genesis(4, 2);
        let mut node = validator_node(&genesis, 0, &cache());
        let transfer = sign_transfer(&account_key(0), &genesis.chain_id, account_key(1).address(), 1, 0, 0);
        let events = [
            Event::Tick,
            Event::PeerConnected { peer: validator_id(1) },
            Event::TxSubmitted(transfer),
            Event::MetricsSampled { cpu: 2_000, net: 10 },
            Event::PeerDisconnected { peer: validator_id(1) },
        ];
        for (now_ms, event) in (0..).step_by(7).zip(events) {
            let description = format!("{event:?}");
            let actions = node.step(now_ms, event);
            let wakes: Vec<u64> = actions
                .iter()
                .filter_map(|action| match action {
                    Action::WakeAt(at_ms) => Some(*at_ms),
                    _ => None,
                })
                .collect();
            assert_eq!(wakes.len(), 1, "{description}");
            assert!(wakes[0] > now_ms, "{description}");
            assert!(matches!(actions.last(), Some(Action::WakeAt(_))), "the wake-up comes last: {description}");
        }
        assert_eq!(node.latest_metrics, (1_000, 10), "metrics are clamped to per-mille");
    }

    #[test]
    fn a_disconnected_peer_is_forgotten_with_its_requests() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let peer = validator_id(1);
        let _ = node.step(0, Event::PeerConnected { peer });
        let mut branch = Branch::from_genesis(&genesis);
        branch.extend_empty(&genesis, 1);
        let _ = receive(&mut node, 0, peer, Message::Status { tip: branch.tip(), finalized: branch.tip() });
        let _ = receive(&mut node, 0, peer, Message::PoolAnnounce { ids: vec![branch.hashes[1]], complete: true });
        assert!(node.sync_requested_at_ms.contains_key(&peer));
        assert!(node.pool_requested_at_ms.contains_key(&peer));
        let _ = node.step(1, Event::PeerDisconnected { peer });
        assert!(node.connected_peers().is_empty());
        assert!(!node.sync_requested_at_ms.contains_key(&peer));
        assert!(!node.pool_requested_at_ms.contains_key(&peer));
    }
}
