//! The driver: one tokio event loop that runs a `tinychain-core` node for real. It owns the core
//! `Node` and the `Storage`, feeds the core every event with the wall-clock time (unix ms), and
//! carries out every action in order before taking the next event:
//!
//! - `CommitBlocks` / `PersistReportState`: written to redb before any later action with an
//!   effect outside the process, so a vote is on disk before the report that carries it is sent
//!   (consecutive commits, e.g. a batch of synced blocks, share one transaction). A storage failure stops the node
//!   (the core already believes the commit happened; running on would let memory and disk
//!   disagree). Restarting recovers from the last committed transaction.
//! - `SendTo` / `Broadcast` / `DisconnectPeer`: handed to the `tinychain-net` connection manager.
//! - `ServeBlocks`: answered from storage.
//! - `WakeAt`: the loop's timer.
//! - `Trace`: logs (a line per committed block, with producer, rank and score) and the live
//!   figures RPC and `/metrics` report. Evidence seen, evidence committed and a validator
//!   jailed are logged at error level (an operator must look: a validator broke a rule), each
//!   line with the evidence itself: its id, kind, offender, offence height and the ids of the
//!   two conflicting objects (block hashes or report ids).
//! - `TxDropped`: collected over the step and written with one `Storage::record_dropped` after
//!   the step's commits, so `get_tx` answers `dropped` with the reason (and the journal forgets
//!   them).
//!
//! Event sources: the network, RPC calls (read-only ones are answered by `query::answer` from the
//! core and storage; `submit_tx`, `add_peer` and `remove_peer` are carried out here), the metrics
//! sampler, the wake-up timer and the shutdown signal. Shutdown finishes the step in progress
//! (so a commit is never cut short by it), stops RPC, then closes every link.
//!
//! # The pending-transfer journal
//!
//! A transfer this node accepted from its own RPC client is in the journal on disk *before* the
//! client hears "accepted", so a crash cannot lose it silently. The write is a group commit: the
//! RPC branch of the loop takes the call it woke for and up to `RPC_CALLS_PER_BATCH_MAX - 1` more
//! already queued, steps the core for each in order, writes every accepted transfer with one
//! `Storage::journal_add` (one fsync for the batch), then sends all the batch's replies. A full
//! journal refuses further submits before the core sees them. The commit that makes a block final
//! deletes the entries of the (sender, nonce) slots it used; `TxDropped` removes an entry with
//! the drop record.
//!
//! After `Event::Restored` the driver reads the journal back (`resubmit_journal`): an entry whose
//! transfer is committed stays until its block is final (a reorganisation could still return it
//! to the mempool), one whose nonce another committed transfer took is recorded as dropped
//! (`DropReason::NonceTaken`), and the rest are submitted to the core again (the core announces
//! its pool to each peer as it connects). One the core refuses before the
//! first mempool sync is over is tried once more after it (its predecessor may be pending at a
//! peer); refused then, it is recorded as `DropReason::RefusedAfterRestart`.
//!
//! # Test-only misbehaviour
//!
//! Built with the `test-misbehaviour` cargo feature (never in a release build: only the root
//! package's tests turn it on, through a dev-dependency), the driver reads
//! `TINYCHAIN_TEST_MISBEHAVIOUR` at start. `equivocate` makes it a dishonest producer for the
//! real-process test `tests/dishonest_validator.rs`: each time its core broadcasts a block it
//! produced, the driver signs a second block on the same parent (timestamp + 1 ms, signed again
//! with the node key; the state root does not cover the timestamp) and sends one block to half
//! of its peers and the other block to the rest. Without the feature the variable is never read
//! (the code is not compiled).

use crate::metrics::Sampler;
use crate::query::{self, Call, Command, LiveInfo, MetricSample, PeerInfo, QueryContext, QueryError, Request};
use crate::rpc::{self, RpcConfig};
use crate::storage::{Storage, StorageError, JOURNAL_TRANSFERS_MAX};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tinychain_core::crypto::{Keypair, SignatureCache};
use tinychain_core::genesis::Genesis;
use tinychain_core::limits::SIGNATURE_CACHE_ENTRIES_MAX;
use tinychain_core::mempool::{DropReason, DroppedTransfer, MempoolConfig};
use tinychain_core::message::Message;
use tinychain_core::node::{Action, Commit, Event, Node, NodeConfig, TraceEvent};
use tinychain_core::types::{Address, Evidence, Hash, Height, NodeId, Transfer};
use tinychain_core::validate::{evidence_id, transfer_id};
use tinychain_net::discovery::PeerStore;
use tinychain_net::handle::{NetEvent, NetHandle};
use tinychain_net::manager::{NetConfig, NetLimits};
use tinychain_rpc::{AddPeerAnswer, RemovePeerAnswer, SubmitAnswer};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// Milliseconds since the Unix epoch by the system clock: the `now_ms` this driver gives the core.
pub fn now_unix_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// RPC calls the loop takes in one go when it wakes for one: the call itself and those already
/// queued behind it (the channel holds 256), so the journal writes of their submits share one
/// fsync.
pub const RPC_CALLS_PER_BATCH_MAX: usize = 256;

/// Everything the driver needs, already loaded and checked (see `home::Loaded`).
pub struct DriverOptions {
    pub genesis: Genesis,
    pub key: Keypair,
    /// The redb file. Created on the first start (when its directory does not exist yet).
    pub database: PathBuf,
    pub p2p_listen: SocketAddr,
    pub seeds: Vec<tinychain_net::discovery::PeerAddr>,
    /// `None`: no RPC server.
    pub rpc: Option<RpcConfig>,
    pub metrics_interval_ms: u64,
    /// How many samples the metric figures average over.
    pub metrics_window: usize,
    pub link_capacity_mbit: u64,
    pub mempool: MempoolConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "the data directory {dir} exists but holds no database at {path}; refusing to start an empty chain \
         over it (if this node should start afresh, move the data directory away)"
    )]
    DatabaseMissing { dir: PathBuf, path: PathBuf },
    #[error("cannot create the data directory {dir}: {detail}")]
    DataDir { dir: PathBuf, detail: String },
    #[error("cannot start the peer-to-peer transport on {addr}: {detail}")]
    Net { addr: SocketAddr, detail: String },
    #[error("cannot start the RPC server on {addr}: {detail}")]
    Rpc { addr: SocketAddr, detail: String },
    #[error("cannot read system metrics: {0}")]
    Metrics(String),
    #[cfg(feature = "test-misbehaviour")]
    #[error("{0}")]
    Misbehaviour(String),
}

/// What the running driver tells its caller once it is listening.
#[derive(Clone, Debug)]
pub struct Started {
    pub p2p: SocketAddr,
    pub rpc: Option<SocketAddr>,
    pub tip: Height,
}

/// Opens the node's database: created on the very first start (its directory does not exist
/// yet), opened afterwards. A data directory without its database is an error, never a fresh start.
///
/// A new database is built under a staging name and renamed into place once it holds the
/// genesis state, so a first start interrupted half-way leaves only the staging file, which the
/// next start discards (it never held more than genesis).
pub fn open_database(path: &std::path::Path, genesis: &Genesis) -> Result<(Storage, bool), DriverError> {
    let dir = path.parent().map(std::path::Path::to_path_buf).unwrap_or_default();
    if path.exists() {
        return Ok((Storage::open(path, genesis)?, false));
    }
    let data_dir_error = |error: std::io::Error| DriverError::DataDir { dir: dir.clone(), detail: error.to_string() };
    let mut staging = path.as_os_str().to_owned();
    staging.push(".creating");
    let staging = PathBuf::from(staging);
    if staging.exists() {
        warn!(path = %staging.display(), "discarding the database of an interrupted first start");
        std::fs::remove_file(&staging).map_err(data_dir_error)?;
    }
    if dir.exists() && std::fs::read_dir(&dir).map(|mut entries| entries.next().is_some()).unwrap_or(true) {
        return Err(DriverError::DatabaseMissing { dir, path: path.to_path_buf() });
    }
    std::fs::create_dir_all(&dir).map_err(data_dir_error)?;
    drop(Storage::create(&staging, genesis)?);
    std::fs::rename(&staging, path).map_err(data_dir_error)?;
    std::fs::File::open(&dir).and_then(|directory| directory.sync_all()).map_err(data_dir_error)?;
    Ok((Storage::open(path, genesis)?, true))
}

/// A block the core committed during the current step, as its trace names it.
struct CommittedBlock {
    height: Height,
    hash: Hash,
    producer: NodeId,
    rank: u32,
    transfers: usize,
}

/// The loop's state: the core, its storage, the transport and the live figures.
struct Driver {
    node: Node,
    storage: Arc<Storage>,
    net: NetHandle,
    live: LiveInfo,
    wake_at_ms: u64,
    /// Blocks committed during the current step: logged with their election once the step's
    /// actions are all carried out.
    committed: Vec<CommittedBlock>,
    /// Journal entries the core refused when resubmitted before its first mempool sync was
    /// over: tried once more when it is (`retry_deferred_journal`).
    deferred_journal: Vec<(Hash, Transfer)>,
    /// Evidence committed and validators jailed during the current step: logged with the
    /// evidence read back from the committed block once the step's commits are written.
    evidence_committed: Vec<CommittedOffence>,
    #[cfg(feature = "test-misbehaviour")]
    misbehaviour: Option<misbehaviour::Misbehaviour>,
}

/// `TraceEvent::EvidenceCommitted` and `TraceEvent::Jailed`, kept until the step's commits are
/// on disk.
enum CommittedOffence {
    Evidence { height: Height, offender: NodeId, kind: &'static str, offence_height: Height },
    Jailed { validator: NodeId, until_height: Height },
}

/// Runs the node until `shutdown` completes or storage fails. `on_started` is called once the
/// transport and RPC listen.
pub async fn run(
    options: DriverOptions,
    shutdown: impl Future<Output = ()>,
    on_started: impl FnOnce(Started),
) -> Result<(), DriverError> {
    let genesis = options.genesis.clone();
    let (storage, created) = open_database(&options.database, &genesis)?;
    let storage = Arc::new(storage);
    if created {
        info!(path = %options.database.display(), chain = %genesis.chain_id, "created a new database at genesis");
    }
    let verify_threads = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
    let config = NodeConfig {
        genesis: genesis.clone(),
        key: options.key.clone(),
        verify_threads,
        mempool: options.mempool,
        // Until the first real sample (about two sample intervals away: sysinfo's first
        // reading is discarded), report full load, so a node that just started is not
        // elected for a score it never measured.
        unmeasured_metrics: (1000, 1000),
    };
    let node = Node::new(config, Arc::new(SignatureCache::new(SIGNATURE_CACHE_ENTRIES_MAX)));
    let node_id = node.node_id();
    let genesis_hash = node.genesis_hash();
    let restored = storage.restored()?;
    info!(
        tip = restored.state.tip.height,
        finalized = restored.final_block.header.height,
        "restored the chain from the database"
    );

    let peer_storage = storage.clone();
    let saved_peers = storage.peers()?;
    let peer_store = PeerStore::new(saved_peers, move |peers| {
        if let Err(error) = peer_storage.save_peers(peers) {
            warn!(%error, "cannot save the peers table");
        }
    });
    let net_config = NetConfig {
        listen_addr: options.p2p_listen,
        key: options.key.clone(),
        genesis: genesis.clone(),
        genesis_hash,
        seeds: options.seeds.clone(),
        limits: NetLimits::default(),
    };
    let (net, mut net_events, net_task) = tinychain_net::manager::start(net_config, peer_store)
        .await
        .map_err(|error| DriverError::Net { addr: options.p2p_listen, detail: error.to_string() })?;
    let p2p_addr = net_task.local_addr();

    let (calls_sender, mut calls) = mpsc::channel::<Call>(256);
    let rpc_server = match options.rpc.clone() {
        Some(rpc_config) => {
            let addr = rpc_config.listen;
            let server = rpc::start(rpc_config, calls_sender.clone())
                .await
                .map_err(|error| DriverError::Rpc { addr, detail: error.to_string() })?;
            Some(server)
        }
        None => None,
    };
    drop(calls_sender);
    let rpc_addr = rpc_server.as_ref().map(|server| server.local_addr());

    let live = LiveInfo {
        p2p_listen: Some(p2p_addr),
        rpc_listen: rpc_addr,
        started_at_ms: now_unix_ms(),
        ..LiveInfo::default()
    };
    let mut driver = Driver {
        node,
        storage,
        net,
        live,
        wake_at_ms: 0,
        committed: Vec::new(),
        deferred_journal: Vec::new(),
        evidence_committed: Vec::new(),
        #[cfg(feature = "test-misbehaviour")]
        misbehaviour: misbehaviour::from_env(options.key.clone()).map_err(DriverError::Misbehaviour)?,
    };
    info!(
        node = %node_id,
        name = %driver.name_of(&node_id),
        p2p = %p2p_addr,
        rpc = ?rpc_addr,
        chain = %genesis.chain_id,
        "node started"
    );
    on_started(Started { p2p: p2p_addr, rpc: rpc_addr, tip: restored.state.tip.height });
    let mut result = driver.step(Event::Restored(Box::new(restored))).await;
    if result.is_ok() {
        result = driver.resubmit_journal().await;
    }

    let mut sampler = Sampler::new(options.link_capacity_mbit, options.metrics_window)
        .map_err(|error| DriverError::Metrics(error.to_string()))?;
    let mut metrics_timer = tokio::time::interval(Duration::from_millis(options.metrics_interval_ms.max(250)));
    metrics_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut summary_timer = tokio::time::interval(Duration::from_secs(30));
    summary_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    summary_timer.tick().await;
    tokio::pin!(shutdown);

    while result.is_ok() {
        let sleep_ms = driver.wake_at_ms.saturating_sub(now_unix_ms()).clamp(1, 1000);
        result = tokio::select! {
            biased;
            () = &mut shutdown => {
                info!("shutting down: the step in progress is finished, closing RPC and every link");
                break;
            }
            event = net_events.recv() => match event {
                Some(NetEvent::PeerConnected(peer)) => {
                    info!(peer = %driver.name_of(&peer), "peer connected");
                    driver.step(Event::PeerConnected { peer }).await
                }
                Some(NetEvent::PeerDisconnected(peer)) => {
                    info!(peer = %driver.name_of(&peer), "peer disconnected");
                    driver.step(Event::PeerDisconnected { peer }).await
                }
                Some(NetEvent::MessageReceived { from, message }) => {
                    driver.step(Event::MessageReceived { from, message }).await
                }
                None => {
                    error!("the network transport stopped");
                    break;
                }
            },
            _ = metrics_timer.tick() => match sampler.sample() {
                Some(sample) => {
                    let score = driver.node.genesis().score(sample.cpu_permille, sample.net_permille);
                    driver.live.metrics =
                        Some(MetricSample { cpu_permille: sample.cpu_permille, net_permille: sample.net_permille, score });
                    debug!(cpu = sample.cpu_permille, net = sample.net_permille, score, "metrics sampled");
                    driver.step(Event::MetricsSampled { cpu: sample.cpu_permille, net: sample.net_permille }).await
                }
                None => Ok(()),
            },
            _ = summary_timer.tick() => {
                driver.log_summary();
                Ok(())
            }
            () = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {
                if now_unix_ms() >= driver.wake_at_ms {
                    driver.step(Event::Tick).await
                } else {
                    Ok(())
                }
            }
            // Last: a stream of RPC calls must not starve the wake-up timer or the metrics.
            Some(call) = calls.recv() => {
                let mut batch = vec![call];
                while batch.len() < RPC_CALLS_PER_BATCH_MAX {
                    match calls.try_recv() {
                        Ok(call) => batch.push(call),
                        Err(_) => break,
                    }
                }
                driver.answer_batch(batch).await
            }
        };
        if result.is_ok() && !driver.deferred_journal.is_empty() && driver.node.is_mempool_synced() {
            result = driver.retry_deferred_journal().await;
        }
    }

    // Calls still queued fail at once instead of waiting out their timeout.
    drop(calls);
    if let Some(server) = rpc_server {
        server.stop().await;
    }
    if let Err(error) = driver.net.shutdown().await {
        debug!(%error, "the transport had already stopped");
    }
    if let Err(error) = net_task.join().await {
        warn!(%error, "the transport stopped with an error");
    }
    // The CLI prints the error too, but only an error-level event reaches a log collector.
    match &result {
        Ok(()) => {}
        Err(error @ DriverError::Storage(_)) => {
            error!(%error, "stopping the node: the database failed, and running on could let memory and disk disagree");
        }
        Err(error) => error!(%error, "stopping the node"),
    }
    log_stopped(&driver.node, &driver.storage);
    result
}

/// The last line: the heights the database holds, which a restart resumes from. After a failed
/// commit the core's in-memory tip is one step ahead of them; then both are given.
fn log_stopped(node: &Node, storage: &Storage) {
    let in_memory = node.tip();
    match (storage.tip(), storage.finalized()) {
        (Ok(stored), Ok(finalized)) if stored == in_memory => {
            info!(height = stored.height, finalized = finalized.height, "node stopped");
        }
        (Ok(stored), Ok(finalized)) => info!(
            height = stored.height,
            in_memory_height = in_memory.height,
            finalized = finalized.height,
            "node stopped"
        ),
        (Err(error), _) | (_, Err(error)) => info!(
            in_memory_height = in_memory.height,
            in_memory_finalized = node.finalized().height,
            %error,
            "node stopped; the database's height cannot be read"
        ),
    }
}

impl Driver {
    fn name_of(&self, id: &NodeId) -> String {
        self.node.genesis().validator_name(id).map_or_else(|| id.to_string(), str::to_string)
    }

    /// Steps the core with one event and carries out its actions in order.
    async fn step(&mut self, event: Event) -> Result<(), DriverError> {
        let actions = self.node.step(now_unix_ms(), event);
        self.carry_out(actions).await.map(|_| ())
    }

    /// Carries out actions in order; returns the transaction verdicts among them.
    ///
    /// Consecutive `CommitBlocks` (with only traces between them, as when a batch of synced
    /// blocks is applied one by one) are written as one redb transaction: the same ops in the
    /// same order, so the database passes through fewer states but never a partial one, and a
    /// sync costs one fsync per batch instead of one per block. Pending commits are written before
    /// any action with an effect outside the process, so nothing is sent that disk does not hold.
    ///
    /// The transfers the step dropped (`TxDropped`) are recorded with one write after its commits.
    async fn carry_out(&mut self, actions: Vec<Action>) -> Result<Vec<Action>, DriverError> {
        let mut verdicts = Vec::new();
        let mut dropped = Vec::new();
        let mut pending: Option<Box<Commit>> = None;
        for action in actions {
            match action {
                Action::CommitBlocks(commit) => {
                    pending = Some(match pending.take() {
                        None => commit,
                        Some(mut merged) => {
                            let Commit { ops, tip, justified, finalized } = *commit;
                            merged.ops.extend(ops);
                            merged.tip = tip;
                            merged.justified = justified;
                            merged.finalized = finalized;
                            merged
                        }
                    });
                    continue;
                }
                Action::Trace(trace) => {
                    self.trace(trace);
                    continue;
                }
                Action::TxDropped(transfer) => {
                    dropped.push(*transfer);
                    continue;
                }
                _ => {}
            }
            if let Some(commit) = pending.take() {
                self.storage.commit(&commit)?;
            }
            match action {
                Action::CommitBlocks(_) | Action::Trace(_) | Action::TxDropped(_) => unreachable!("handled above"),
                Action::PersistReportState { last_vote, report_sequence } => {
                    self.storage.persist_report_state(last_vote, report_sequence)?;
                }
                Action::SendTo { peer, message } => {
                    if let Err(error) = self.net.send_to(peer, message).await {
                        debug!(%error, "send dropped");
                    }
                }
                Action::Broadcast { message, except } => {
                    #[cfg(feature = "test-misbehaviour")]
                    let Some((message, except)) = self.misbehave(message, except).await
                    else {
                        continue;
                    };
                    if let Err(error) = self.net.broadcast(message, except).await {
                        debug!(%error, "broadcast dropped");
                    }
                }
                Action::ServeBlocks { peer, from_height, to_height } => {
                    let blocks = self.storage.blocks_to_serve(from_height, to_height)?;
                    debug!(peer = %self.name_of(&peer), from_height, count = blocks.len(), "serving blocks");
                    if let Err(error) = self.net.send_to(peer, Message::Blocks(blocks)).await {
                        debug!(%error, "serving blocks dropped");
                    }
                }
                Action::DisconnectPeer { peer, reason } => {
                    warn!(peer = %self.name_of(&peer), %reason, "disconnecting a peer");
                    if let Err(error) = self.net.disconnect(peer, reason.to_string()).await {
                        debug!(%error, "disconnect dropped");
                    }
                }
                Action::WakeAt(at_ms) => self.wake_at_ms = at_ms,
                verdict @ (Action::TxAccepted { .. } | Action::TxRejected { .. }) => verdicts.push(verdict),
            }
        }
        if let Some(commit) = pending.take() {
            self.storage.commit(&commit)?;
        }
        self.record_dropped(dropped)?;
        self.log_committed();
        self.log_evidence_committed();
        Ok(verdicts)
    }

    /// Writes drop records (one transaction, which also forgets their journal entries), logs
    /// them and counts them by reason.
    fn record_dropped(&mut self, dropped: Vec<DroppedTransfer>) -> Result<(), DriverError> {
        if dropped.is_empty() {
            return Ok(());
        }
        self.storage.record_dropped(&dropped)?;
        for transfer in &dropped {
            debug!(
                id = %transfer.id,
                reason = transfer.reason.kind(),
                detail = %transfer.reason,
                "dropped a pending transfer"
            );
            self.live.record_transfer_dropped(&transfer.reason);
        }
        Ok(())
    }

    fn trace(&mut self, trace: TraceEvent) {
        match trace {
            TraceEvent::BlockCommitted { height, hash, producer, rank, transfers } => {
                self.committed.push(CommittedBlock { height, hash, producer, rank, transfers });
            }
            TraceEvent::BlockProduced { height, rank, transfers, reports, .. } => {
                info!(height, rank, transfers, reports, "produced a block");
            }
            TraceEvent::TimeoutFired { height, skipped_ranks } => {
                warn!(height, skipped_ranks, "producer timeout: the block came from a fallback rank");
            }
            TraceEvent::Reorg { fork_height, rolled_back, applied, new_tip } => {
                warn!(fork_height, rolled_back, applied, new_tip = new_tip.height, "chain reorganised");
            }
            TraceEvent::Justified { checkpoint } => debug!(height = checkpoint.height, "justified"),
            TraceEvent::Finalized { checkpoint } => debug!(height = checkpoint.height, "finalized"),
            TraceEvent::BlockRejected { hash, reason } => warn!(%hash, %reason, "block rejected"),
            TraceEvent::MempoolSynced { synced_peers, admitted, timed_out } => {
                if timed_out {
                    warn!(
                        synced_peers,
                        admitted, "mempool sync: the bounded wait ran out before a supermajority answered"
                    );
                } else {
                    info!(synced_peers, admitted, "mempool synced with a supermajority of peers");
                }
            }
            TraceEvent::SyncRequested { peer, have_height } => {
                info!(peer = %self.name_of(&peer), have_height, "behind a peer: asking for blocks");
            }
            TraceEvent::EvidenceSeen { offender, kind, offence_height } => {
                // The core pooled it in this step: read the two objects back from its pool.
                let pooled = self.node.evidence().find(|pooled| {
                    pooled.facts.offender == offender
                        && pooled.facts.height == offence_height
                        && pooled.evidence.kind() == kind
                });
                let [(first_role, first), (second_role, second)] =
                    objects_for_log(pooled.map(|pooled| &pooled.evidence));
                error!(
                    evidence_id = %pooled.map_or_else(|| "unknown".to_string(), |pooled| pooled.id.to_string()),
                    kind,
                    offender = %self.name_of(&offender),
                    offender_id = %offender,
                    offence_height,
                    first_role,
                    first = %first,
                    second_role,
                    second = %second,
                    "evidence of an offence seen: a validator signed two conflicting objects"
                );
            }
            TraceEvent::EvidenceCommitted { height, offender, kind, offence_height } => {
                self.live.record_evidence_committed();
                self.evidence_committed.push(CommittedOffence::Evidence { height, offender, kind, offence_height });
            }
            TraceEvent::Jailed { validator, until_height } => {
                self.evidence_committed.push(CommittedOffence::Jailed { validator, until_height });
            }
            TraceEvent::FinalityConflict { peer, ours, theirs } => {
                error!(
                    peer = %self.name_of(&peer),
                    ours_height = ours.height,
                    ours_hash = %ours.hash,
                    theirs_height = theirs.height,
                    theirs_hash = %theirs.hash,
                    "finality conflict: a peer finalized a block that conflicts with ours"
                );
            }
        }
    }

    /// One log line per block committed in the last step, with the producer's committed score.
    fn log_committed(&mut self) {
        for CommittedBlock { height, hash, producer, rank, transfers } in std::mem::take(&mut self.committed) {
            let score = self
                .storage
                .election_at(height)
                .ok()
                .flatten()
                .and_then(|ranking| ranking.into_iter().find(|candidate| candidate.node == producer))
                .and_then(|candidate| candidate.score);
            self.live.record_block_committed(now_unix_ms(), rank);
            let interval_ms = self.live.block_intervals_ms.back().copied();
            info!(
                height,
                hash = %hash,
                producer = %self.name_of(&producer),
                rank,
                score = ?score,
                transfers,
                interval_ms = ?interval_ms,
                finalized = self.node.finalized().height,
                "block committed"
            );
        }
    }

    /// The test-only misbehaviour (see the module docs): a broadcast of a block this node
    /// produced becomes two blocks on one parent, each sent to one half of the peers, and
    /// `None` is returned; any other broadcast is handed back to be carried out as usual.
    #[cfg(feature = "test-misbehaviour")]
    async fn misbehave(&mut self, message: Message, except: Option<NodeId>) -> Option<(Message, Option<NodeId>)> {
        let key = match (&self.misbehaviour, &message) {
            (Some(misbehaviour), Message::Block(block))
                if except.is_none() && block.header.producer == self.node.node_id() =>
            {
                misbehaviour.key.clone()
            }
            _ => return Some((message, except)),
        };
        let Message::Block(block) = message else { unreachable!("matched above") };
        let twin = misbehaviour::twin(&block, &key);
        let mut peers = self.node.connected_peers();
        peers.sort();
        let half = peers.len().div_ceil(2);
        error!(
            height = block.header.height,
            ours = %tinychain_core::validate::block_hash(&block.header),
            twin = %tinychain_core::validate::block_hash(&twin.header),
            peers_shown_ours = half,
            peers_shown_twin = peers.len() - half,
            "TEST MISBEHAVIOUR: equivocating, two blocks on one parent sent to two halves of the peers"
        );
        for (position, peer) in peers.into_iter().enumerate() {
            let shown = if position < half { block.clone() } else { twin.clone() };
            if let Err(error) = self.net.send_to(peer, Message::Block(shown)).await {
                debug!(%error, "send dropped");
            }
        }
        None
    }

    /// One error line per piece of evidence committed and per validator jailed in the last
    /// step, with the evidence read back from the block that commits it (on disk by now).
    fn log_evidence_committed(&mut self) {
        let jail_blocks = self.node.genesis().parameters.jail_blocks;
        for offence in std::mem::take(&mut self.evidence_committed) {
            match offence {
                CommittedOffence::Evidence { height, offender, kind, offence_height } => {
                    let evidence = self.committed_evidence(height, |evidence| {
                        evidence.offender() == offender
                            && evidence.kind() == kind
                            && query::offence_height(evidence) == Some(offence_height)
                    });
                    let [(first_role, first), (second_role, second)] = objects_for_log(evidence.as_ref());
                    error!(
                        height,
                        evidence_id = %evidence.as_ref().map_or_else(|| "unknown".to_string(), |evidence| evidence_id(evidence).to_string()),
                        kind,
                        offender = %self.name_of(&offender),
                        offender_id = %offender,
                        offence_height,
                        first_role,
                        first = %first,
                        second_role,
                        second = %second,
                        "evidence committed: a validator broke a rule"
                    );
                }
                CommittedOffence::Jailed { validator, until_height } => {
                    // Jail runs `jail_blocks` from the block that commits the evidence.
                    let height = until_height.saturating_sub(jail_blocks);
                    let evidence: Vec<String> = self
                        .storage
                        .block_at(height)
                        .ok()
                        .flatten()
                        .map(|block| {
                            block
                                .evidence
                                .iter()
                                .filter(|evidence| evidence.offender() == validator)
                                .map(|evidence| format!("{} {}", evidence.kind(), evidence_id(evidence)))
                                .collect()
                        })
                        .unwrap_or_default();
                    error!(
                        validator = %self.name_of(&validator),
                        validator_id = %validator,
                        height,
                        until_height,
                        evidence = ?evidence,
                        "validator jailed by committed evidence: it ranks last until the jail ends"
                    );
                }
            }
        }
    }

    /// The piece of evidence the canonical block at `height` commits that `matches`, if the
    /// database has it.
    fn committed_evidence(&self, height: Height, matches: impl Fn(&Evidence) -> bool) -> Option<Evidence> {
        let block = self.storage.block_at(height).ok().flatten()?;
        block.evidence.iter().find(|evidence| matches(evidence)).cloned()
    }

    fn log_summary(&self) {
        let ranking: Vec<String> = self
            .node
            .next_election()
            .iter()
            .map(|candidate| match candidate.score {
                Some(score) if candidate.demotion.is_none() => format!("{}:{score}", self.name_of(&candidate.node)),
                _ => format!("{}:demoted", self.name_of(&candidate.node)),
            })
            .collect();
        let metrics = self.live.metrics.unwrap_or_default();
        info!(
            height = self.node.tip().height,
            finalized = self.node.finalized().height,
            peers = self.node.connected_peers().len(),
            mempool = self.node.mempool().len(),
            cpu = metrics.cpu_permille,
            net = metrics.net_permille,
            score = metrics.score,
            ranking = %ranking.join(" "),
            "status"
        );
    }

    /// Answers a batch of RPC calls in order. Queries (and the health and metrics routes) are
    /// answered by `query`; commands act here. Every transfer the core accepts is written to
    /// the journal with one `journal_add` before any reply of the batch is sent (see the module
    /// docs).
    async fn answer_batch(&mut self, batch: Vec<Call>) -> Result<(), DriverError> {
        self.refresh_live_peers();
        let journal_held = self.storage.journal_len();
        let mut replies: Vec<(oneshot::Sender<Answer>, Answer)> = Vec::with_capacity(batch.len());
        // (index in `replies`, id, transfer) of each accepted submit.
        let mut accepted: Vec<(usize, Hash, Transfer)> = Vec::new();
        for Call { request, reply } in batch {
            let context = || QueryContext { node: &self.node, storage: &self.storage, live: &self.live };
            let answer = match request {
                Request::Query(query) => query::answer(&context(), &query),
                Request::Health => Ok(query::to_json(&query::health(&context()))),
                Request::Metrics => Ok(query::to_json(&query::metrics(&context()))),
                Request::Command(Command::SubmitTx { tx: transfer }) => {
                    let held = journal_held.saturating_add(accepted.len());
                    if held >= JOURNAL_TRANSFERS_MAX {
                        // Refused before the core sees it: the transfer is in no mempool, so
                        // the refusal is the whole truth.
                        Err(QueryError::JournalFull { held, max: JOURNAL_TRANSFERS_MAX })
                    } else {
                        let id = transfer_id(&transfer);
                        let actions = self.node.step(now_unix_ms(), Event::TxSubmitted(transfer.clone()));
                        let verdicts = self.carry_out(actions).await?;
                        let answer = verdict_for(&verdicts, &id);
                        if answer.is_ok() {
                            accepted.push((replies.len(), id, transfer));
                        }
                        answer
                    }
                }
                Request::Command(Command::AddPeer { addr }) => match self.net.add_peer(addr.clone()).await {
                    Ok(()) => {
                        info!(%addr, "peer address added by an operator");
                        Ok(query::to_json(&AddPeerAnswer { added: addr.to_string() }))
                    }
                    Err(source) => Err(QueryError::Transport { source }),
                },
                Request::Command(Command::RemovePeer { addr }) => match self.net.remove_peer(addr.clone()).await {
                    Ok(()) => {
                        info!(%addr, "peer address removed by an operator");
                        Ok(query::to_json(&RemovePeerAnswer { removed: addr.to_string() }))
                    }
                    Err(source) => Err(QueryError::Transport { source }),
                },
            };
            replies.push((reply, answer));
        }
        // A transfer no longer pending was either committed already (this node produced a block
        // between two submits), and is journaled until its block is final like any other, or
        // dropped (a later submit replaced it), and its drop record is its answer from now on.
        let mut journaled = Vec::with_capacity(accepted.len());
        let mut entries = Vec::with_capacity(accepted.len());
        for (index, id, transfer) in accepted {
            if self.node.mempool().contains(&id) || self.storage.tx_location(&id)?.is_some() {
                journaled.push(index);
                entries.push((id, transfer));
            }
        }
        if !entries.is_empty() {
            match self.storage.journal_add(&entries) {
                Ok(()) => {}
                Err(StorageError::JournalFull { held, max }) => {
                    // Only when the count taken at the start of the batch was off. These
                    // transfers are already in the mempool and gossiped, so they may still be
                    // included; the client is told it was not promised, and `get_tx` tells it
                    // what became of the transfer.
                    warn!(held, max, transfers = entries.len(), "the pending-transfer journal is full");
                    for index in journaled {
                        replies[index].1 = Err(QueryError::JournalFull { held, max });
                    }
                }
                // Like a failed commit: the node stops rather than acknowledge what it cannot keep.
                Err(error) => return Err(error.into()),
            }
        }
        for (reply, answer) in replies {
            // The caller may have given up (timeout, closed connection): nothing to do then.
            let _ = reply.send(answer);
        }
        Ok(())
    }

    fn refresh_live_peers(&mut self) {
        self.live.peers = self
            .node
            .connected_peers()
            .into_iter()
            .map(|id| PeerInfo { id, name: self.node.genesis().validator_name(&id).map(str::to_string), addr: None })
            .collect();
    }

    /// After `Event::Restored`: settles every journal entry against the restored chain and
    /// submits the open ones again (see the module docs).
    async fn resubmit_journal(&mut self) -> Result<(), DriverError> {
        let journal = self.storage.journal()?;
        if journal.is_empty() {
            return Ok(());
        }
        let refusals_are_final = self.node.is_mempool_synced();
        let settled = self.settle_journal(journal, refusals_are_final).await?;
        info!(
            resubmitted = settled.resubmitted,
            already_committed = settled.committed,
            dropped = settled.dropped,
            retried_after_mempool_sync = self.deferred_journal.len(),
            "resubmitted the pending-transfer journal"
        );
        Ok(())
    }

    /// Once the first mempool sync is over: the journal entries refused at restart, once more.
    async fn retry_deferred_journal(&mut self) -> Result<(), DriverError> {
        let deferred = std::mem::take(&mut self.deferred_journal);
        let settled = self.settle_journal(deferred, true).await?;
        info!(
            resubmitted = settled.resubmitted,
            already_committed = settled.committed,
            dropped = settled.dropped,
            "resubmitted the journal's transfers refused before the mempool sync"
        );
        Ok(())
    }

    /// Classifies each entry (`classify_journal_entry`) and carries out the verdict: committed
    /// entries leave the journal once final, taken nonces become drop records, open ones go to
    /// the core again. A refusal is recorded as a drop when `refusals_are_final`, else kept in
    /// `deferred_journal`.
    async fn settle_journal(
        &mut self,
        entries: Vec<(Hash, Transfer)>,
        refusals_are_final: bool,
    ) -> Result<SettledJournal, DriverError> {
        let mut settled = SettledJournal::default();
        let mut final_entries = Vec::new();
        let mut dropped = Vec::new();
        let tip_height = self.node.tip().height;
        let finalized_height = self.node.finalized().height;
        for (id, transfer) in entries {
            let committed_nonce = self.node.state().account(&transfer.from).nonce;
            match classify_journal_entry(&id, &transfer, committed_nonce, &*self.storage)? {
                JournalEntryFate::Committed { height } => {
                    settled.committed += 1;
                    // Above the final block a reorganisation may still return it to the
                    // mempool: the entry stays until the commit that makes it final deletes it.
                    if height <= finalized_height {
                        final_entries.push((id, transfer));
                    }
                }
                JournalEntryFate::Dropped(reason) => dropped.push(DroppedTransfer { id, transfer, reason, tip_height }),
                // Fetched from a peer since the restart: pending again, the entry stays.
                JournalEntryFate::Open if self.node.mempool().contains(&id) => settled.resubmitted += 1,
                JournalEntryFate::Open => {
                    let actions = self.node.step(now_unix_ms(), Event::TxSubmitted(transfer.clone()));
                    let verdicts = self.carry_out(actions).await?;
                    match verdict_for(&verdicts, &id) {
                        Ok(_) => settled.resubmitted += 1,
                        Err(refusal) if refusals_are_final => {
                            let reason = match refusal {
                                QueryError::Rejected(rejection) => rejection.to_string(),
                                other => other.to_string(),
                            };
                            debug!(%id, %reason, "a journal entry was refused after the restart");
                            dropped.push(DroppedTransfer {
                                id,
                                transfer,
                                reason: DropReason::RefusedAfterRestart { reason },
                                tip_height,
                            });
                        }
                        Err(refusal) => {
                            debug!(%id, %refusal, "a journal entry was refused before the mempool sync: trying again after it");
                            self.deferred_journal.push((id, transfer));
                        }
                    }
                }
            }
        }
        settled.dropped = dropped.len();
        self.storage.journal_remove(&final_entries)?;
        self.record_dropped(dropped)?;
        Ok(settled)
    }
}

/// What an RPC call is answered.
type Answer = Result<serde_json::Value, QueryError>;

/// What `settle_journal` did with the entries it was given.
#[derive(Clone, Copy, Debug, Default)]
struct SettledJournal {
    resubmitted: usize,
    committed: usize,
    dropped: usize,
}

/// What the database says about the transfers committed on the canonical chain, as
/// `classify_journal_entry` asks it.
trait CommittedTransfers {
    /// The height of the canonical block that holds this very transfer.
    fn committed_height(&self, id: &Hash) -> Result<Option<Height>, StorageError>;
    /// The canonical transfer that used (`from`, `nonce`), and its height.
    fn committed_at(&self, from: &Address, nonce: u64) -> Result<Option<(Hash, Height)>, StorageError>;
}

impl CommittedTransfers for Storage {
    fn committed_height(&self, id: &Hash) -> Result<Option<Height>, StorageError> {
        Ok(self.tx_location(id)?.map(|location| location.height))
    }
    fn committed_at(&self, from: &Address, nonce: u64) -> Result<Option<(Hash, Height)>, StorageError> {
        self.committed_transfer_at(from, nonce)
    }
}

/// Where a journal entry stands against the restored chain.
#[derive(Clone, Debug, PartialEq, Eq)]
enum JournalEntryFate {
    /// This very transfer is committed at `height`.
    Committed { height: Height },
    /// Another committed transfer used its nonce: it can never be included.
    Dropped(DropReason),
    /// Its nonce is still open: submit it again.
    Open,
}

/// Where a journal entry stands, given its sender's committed nonce at the tip. Only a nonce
/// below it asks the database anything.
fn classify_journal_entry(
    id: &Hash,
    transfer: &Transfer,
    committed_nonce: u64,
    chain: &impl CommittedTransfers,
) -> Result<JournalEntryFate, StorageError> {
    if transfer.nonce >= committed_nonce {
        return Ok(JournalEntryFate::Open);
    }
    if let Some(height) = chain.committed_height(id)? {
        return Ok(JournalEntryFate::Committed { height });
    }
    Ok(match chain.committed_at(&transfer.from, transfer.nonce)? {
        // The two indexes disagree only if the database is damaged; the transfer is on the
        // chain either way.
        Some((by, height)) if by == *id => JournalEntryFate::Committed { height },
        Some((by, height)) => JournalEntryFate::Dropped(DropReason::NonceTaken { by, height }),
        None => JournalEntryFate::Dropped(DropReason::NonceUsed),
    })
}

/// The core's verdict on a submitted transfer, as an RPC answer.
fn verdict_for(verdicts: &[Action], id: &Hash) -> Answer {
    for verdict in verdicts {
        match verdict {
            Action::TxAccepted { id: accepted } if accepted == id => {
                return Ok(query::to_json(&SubmitAnswer { id: *id }));
            }
            Action::TxRejected { id: rejected, reason } if rejected == id => {
                return Err(QueryError::Rejected(reason.clone()));
            }
            _ => {}
        }
    }
    Err(QueryError::Internal("the node gave no verdict on the transfer".to_string()))
}

/// The roles and full ids of evidence's two objects for a log line ("unknown" when the
/// evidence could not be read back).
fn objects_for_log(evidence: Option<&Evidence>) -> [(&'static str, String); 2] {
    match evidence {
        Some(evidence) => query::evidence_objects(evidence).map(|(role, id)| (role, id.to_string())),
        None => [("first", "unknown".to_string()), ("second", "unknown".to_string())],
    }
}

/// A dishonest producer for the real-process test, compiled only with the `test-misbehaviour`
/// feature (see the module docs).
#[cfg(feature = "test-misbehaviour")]
pub mod misbehaviour {
    use std::sync::Arc;
    use tinychain_core::codec::header_signing_bytes;
    use tinychain_core::crypto::Keypair;
    use tinychain_core::types::Block;

    /// The environment variable that turns a misbehaviour on, read once at start.
    pub const ENV_VAR: &str = "TINYCHAIN_TEST_MISBEHAVIOUR";

    /// What this node does wrong, with the key it signs its lies with.
    pub struct Misbehaviour {
        pub key: Keypair,
    }

    /// `Some` when `TINYCHAIN_TEST_MISBEHAVIOUR=equivocate`; `None` when it is unset or empty;
    /// an error naming the variable for any other value (a test that misspells it must not
    /// pass with an honest node).
    pub fn from_env(key: Keypair) -> Result<Option<Misbehaviour>, String> {
        match std::env::var(ENV_VAR) {
            Err(std::env::VarError::NotPresent) => Ok(None),
            Ok(value) if value.is_empty() => Ok(None),
            Ok(value) if value == "equivocate" => {
                tracing::error!(
                    variable = ENV_VAR,
                    value,
                    "TEST MISBEHAVIOUR: this node signs two blocks on every parent it produces on"
                );
                Ok(Some(Misbehaviour { key }))
            }
            Ok(value) => Err(format!("{ENV_VAR}={value:?}: the only test misbehaviour is \"equivocate\"")),
            Err(std::env::VarError::NotUnicode(value)) => {
                Err(format!("{ENV_VAR}={value:?}: the only test misbehaviour is \"equivocate\""))
            }
        }
    }

    /// `block` 1 ms later, signed again by `key`: a second header by the same producer on the
    /// same parent, valid on its own (the state root does not cover the timestamp).
    pub fn twin(block: &Block, key: &Keypair) -> Arc<Block> {
        let mut header = block.header.clone();
        header.timestamp_ms = header.timestamp_ms.saturating_add(1);
        header.signature = key.sign(&header_signing_bytes(&header));
        Arc::new(Block { header, ..block.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer};

    /// The canonical chain as `classify_journal_entry` sees it: transfer id -> height, and
    /// (sender, nonce) -> (id, height).
    #[derive(Default)]
    struct FakeChain {
        heights: BTreeMap<Hash, Height>,
        slots: BTreeMap<(Address, u64), (Hash, Height)>,
    }

    impl FakeChain {
        fn commit(&mut self, transfer: &Transfer, height: Height) {
            let id = transfer_id(transfer);
            self.heights.insert(id, height);
            self.slots.insert((transfer.from, transfer.nonce), (id, height));
        }
    }

    impl CommittedTransfers for FakeChain {
        fn committed_height(&self, id: &Hash) -> Result<Option<Height>, StorageError> {
            Ok(self.heights.get(id).copied())
        }
        fn committed_at(&self, from: &Address, nonce: u64) -> Result<Option<(Hash, Height)>, StorageError> {
            Ok(self.slots.get(&(*from, nonce)).copied())
        }
    }

    #[test]
    fn journal_entries_are_classified_against_the_restored_chain() {
        let alice = account_key(0);
        let bob = account_key(1).address();
        let transfer = |nonce: u64, amount: u64| sign_transfer(&alice, "tinychain-test", bob, amount, 10, nonce);
        // Alice's nonces 0 and 1 are committed: 0 by the journal's own transfer, 1 by another.
        let mut chain = FakeChain::default();
        chain.commit(&transfer(0, 5), 3);
        let winner = transfer(1, 99);
        chain.commit(&winner, 4);
        // A chain whose nonce table misses a nonce the account has used (a transfer this node
        // never saw, as far as the lookup can tell).
        let mut gapped = FakeChain::default();
        gapped.commit(&transfer(0, 5), 3);
        let empty = FakeChain::default();

        let cases: Vec<(&str, Transfer, u64, &FakeChain, JournalEntryFate)> = vec![
            ("its own transfer used the nonce", transfer(0, 5), 2, &chain, JournalEntryFate::Committed { height: 3 }),
            (
                "another transfer took the nonce",
                transfer(1, 7),
                2,
                &chain,
                JournalEntryFate::Dropped(DropReason::NonceTaken { by: transfer_id(&winner), height: 4 }),
            ),
            (
                "the nonce is used, the winner not found",
                transfer(1, 7),
                2,
                &gapped,
                JournalEntryFate::Dropped(DropReason::NonceUsed),
            ),
            ("the next nonce is open", transfer(2, 7), 2, &chain, JournalEntryFate::Open),
            ("a later nonce is open too", transfer(5, 7), 2, &chain, JournalEntryFate::Open),
            ("nothing committed yet", transfer(0, 5), 0, &empty, JournalEntryFate::Open),
        ];
        for (desc, transfer, committed_nonce, chain, expected) in cases {
            let fate = classify_journal_entry(&transfer_id(&transfer), &transfer, committed_nonce, chain).unwrap();
            assert_eq!(fate, expected, "{desc}");
        }
    }

    #[test]
    fn a_full_journal_says_so_and_how_full() {
        let error = QueryError::JournalFull { held: 100_000, max: JOURNAL_TRANSFERS_MAX };
        let text = error.to_string();
        assert_eq!(error.data_code(), "journal_full", "{text}");
        assert!(text.contains("journal is full (100000 of 100000)"), "{text}");
        assert!(text.contains("retry after some blocks"), "{text}");
    }

    #[test]
    fn the_database_is_created_on_the_first_start_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("chain.redb");
        let genesis = fast_genesis(2, 1);
        let (storage, created) = open_database(&path, &genesis).unwrap();
        assert!(created, "no data directory yet: a new database");
        drop(storage);
        let (_storage, created) = open_database(&path, &genesis).unwrap();
        assert!(!created, "the second start opens it");
    }

    #[test]
    fn a_data_directory_without_its_database_is_an_error_not_a_fresh_chain() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("something-else"), b"kept").unwrap();
        let path = data.join("chain.redb");
        let error = open_database(&path, &fast_genesis(2, 1)).err().expect("refused");
        let message = error.to_string();
        assert!(matches!(error, DriverError::DatabaseMissing { .. }), "{message}");
        assert!(message.contains("chain.redb"), "{message}");
        assert!(!path.exists(), "nothing was created");
    }

    #[test]
    fn an_interrupted_first_start_is_discarded_and_done_again() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // What a kill during Storage::create leaves: a half-made file under the staging name.
        std::fs::write(data.join("chain.redb.creating"), b"half a database").unwrap();
        let path = data.join("chain.redb");
        let (storage, created) = open_database(&path, &fast_genesis(2, 1)).unwrap();
        assert!(created);
        assert_eq!(storage.tip().unwrap().height, 0);
        assert!(!data.join("chain.redb.creating").exists());
    }

    #[test]
    fn a_database_of_another_chain_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join("chain.redb");
        drop(open_database(&path, &fast_genesis(2, 1)).unwrap());
        let before = std::fs::read(&path).unwrap();
        let mut other = fast_genesis(2, 1);
        other.chain_id = "another-chain".to_string();
        let error = open_database(&path, &other).err().expect("refused");
        assert!(matches!(error, DriverError::Storage(StorageError::ForeignChain { .. })), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "the file is untouched");
    }
}
