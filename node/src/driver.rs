//! The server's event loop: one tokio task that hosts the one driver (`tinychain_core::driver`,
//! the same interpreter of the core's actions the simulator runs) with the wall clock (unix ms),
//! the `tinychain-net` transport and redb (`storage::Storage`, behind `StorageStore`). The core
//! driver makes every store write of a step (commits merged, report state, drop records, the
//! pending-transfer journal: see its module docs) before it hands back the outward effects, which
//! this loop carries out in order:
//!
//! - `Send` / `Broadcast` / `Disconnect`: handed to the connection manager.
//! - `WakeAt`: the loop's timer.
//! - `Trace`: logs (a line per committed block, with producer, rank and score) and the live
//!   figures RPC and `/metrics` report. Evidence seen, evidence committed and a validator
//!   jailed are logged at error level (an operator must look: a validator broke a rule), each
//!   line with the evidence itself: its id, kind, offender, offence height and the ids of the
//!   two conflicting objects (block hashes or report ids).
//! - `Committed`: nothing to write (the store did), but `/metrics` times each transfer this
//!   node saw (submitted or received) to its first commit and to final (`TransferClock`).
//! - `Dropped`: logged and counted by reason (the drop record is already written, so `get_tx`
//!   answers `dropped` with the reason); a dropped transfer is no longer timed.
//!
//! `/metrics` (`telemetry`): the loop observes block intervals, missed turns, transfer latencies,
//! the core's time per event and storage's time per commit (the store is timed apart, so the
//! core's step duration excludes it), and answers `Request::Metrics` by handing the telemetry
//! the state of the moment.
//!
//! A storage failure stops the node (the core already believes the write happened; running on
//! would let memory and disk disagree). Restarting recovers from the last committed transaction.
//!
//! Event sources: the network, RPC calls (read-only ones are answered by `query::answer` from the
//! core and storage; `submit_tx`, `add_peer` and `remove_peer` are carried out here), the metrics
//! sampler, the wake-up timer and the shutdown signal. The loop takes them fairly (tokio picks at
//! random among the ready ones): with the network first, as it once was, a saturated link held
//! back the timer that produces blocks and left RPC calls to time out as busy. Shutdown finishes the step in progress
//! (so a commit is never cut short by it), stops RPC, then closes every link.
//!
//! # RPC submits and the journal
//!
//! The RPC branch of the loop takes the call it woke for and up to `RPC_CALLS_PER_BATCH_MAX - 1`
//! more already queued, answers each in order (a submit goes to `Driver::submit`), then has the
//! driver write every accepted transfer to the journal with one `finish_submits` (one fsync for
//! the batch), and only then sends the batch's replies: a client told "accepted" holds a promise
//! on disk. After the restore the core driver settles the journal (`Driver::start`).
//!
//! The loop claims each call it takes (`rpc::QueuedCall::take`) before acting on it. A call
//! whose handler gave up first (the call waited in the queue past `rpc::QUEUE_WAIT_MAX` and
//! was answered `busy`) loses the claim here and is dropped unrun: a client told busy was never
//! admitted anything (see `rpc`'s module docs).
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
use crate::telemetry::{Telemetry, TransferClock};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinychain_core::crypto::{Keypair, SignatureCache};
use tinychain_core::driver::{
    self as core_driver, CommittedTransfers, JournalAddError, JournalSettled, Output, Store, SubmitRefusal,
};
use tinychain_core::genesis::Genesis;
use tinychain_core::limits::SIGNATURE_CACHE_ENTRIES_MAX;
use tinychain_core::mempool::{DroppedTransfer, MempoolConfig};
use tinychain_core::message::Message;
use tinychain_core::node::Restored;
use tinychain_core::node::{ChainOp, Commit, Event, Node, NodeConfig, TraceEvent};
use tinychain_core::record::{self, Entry, Session};
use tinychain_core::types::{Address, Block, Evidence, Hash, Height, NodeId, Transfer, Vote};
use tinychain_core::validate::{self, evidence_id, transfer_id};
use tinychain_net::discovery::PeerStore;
use tinychain_net::handle::{NetEvent, NetHandle};
use tinychain_net::manager::{NetConfig, NetLimits};
use tinychain_rpc::{AddPeerAnswer, RemovePeerAnswer, SubmitAnswer, SubmitError, SubmitResult, SubmitTxsAnswer};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// Milliseconds since the Unix epoch by the system clock: the `now_ms` this driver gives the core.
pub fn now_unix_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// RPC calls the loop takes in one go when it wakes for one: the call itself and those already
/// queued behind it (the channel holds `rpc::CALL_QUEUE_CAPACITY`), so the journal writes of
/// their submits share one fsync.
pub const RPC_CALLS_PER_BATCH_MAX: usize = rpc::CALL_QUEUE_CAPACITY;

/// Until the first real sample (about two sample intervals away: sysinfo's first reading is
/// discarded), a node reports full load, so a node that just started is not elected for a
/// score it never measured.
const UNMEASURED_METRICS: (u16, u16) = (1000, 1000);

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
    /// Appends every input the core driver gets to this file (docs/record-format.md), for
    /// `tinychain replay`. `None`: no recording.
    pub record: Option<PathBuf>,
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
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("cannot open the record log {path}: {source}")]
    Record { path: PathBuf, source: std::io::Error },
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

/// The storage as the core driver's `Store`: the redb database, shared with the RPC queries and
/// the peers table. Every call is timed: commits into `/metrics`' storage commit histogram, and
/// all of them into `store_time`, which the loop subtracts from a step's duration to get the
/// core's own.
pub struct StorageStore {
    pub storage: Arc<Storage>,
    telemetry: Arc<Telemetry>,
    /// Time spent in the store's calls since start.
    store_time: Duration,
}

impl StorageStore {
    pub fn new(storage: Arc<Storage>, telemetry: Arc<Telemetry>) -> StorageStore {
        StorageStore { storage, telemetry, store_time: Duration::ZERO }
    }

    /// Runs one store call, adding its duration to `store_time`; returns it with the duration.
    fn timed<T>(&mut self, call: impl FnOnce(&Storage) -> T) -> (T, Duration) {
        let started = Instant::now();
        let result = call(&self.storage);
        let elapsed = started.elapsed();
        self.store_time += elapsed;
        (result, elapsed)
    }
}

impl CommittedTransfers for StorageStore {
    type Error = StorageError;

    fn committed_height(&mut self, id: &Hash, _transfer: &Transfer) -> Result<Option<Height>, StorageError> {
        Ok(self.timed(|storage| storage.tx_location(id)).0?.map(|location| location.height))
    }
    fn committed_at(&mut self, from: &Address, nonce: u64) -> Result<Option<(Hash, Height)>, StorageError> {
        self.timed(|storage| storage.committed_transfer_at(from, nonce)).0
    }
}

impl Store for StorageStore {
    fn restored(&mut self) -> Result<Restored, StorageError> {
        self.timed(Storage::restored).0
    }
    fn commit(&mut self, commit: &Commit) -> Result<(), StorageError> {
        let (result, elapsed) = self.timed(|storage| storage.commit(commit));
        self.telemetry.observe_storage_commit(elapsed);
        result
    }
    fn persist_report_state(&mut self, last_vote: Option<Vote>, report_sequence: u64) -> Result<(), StorageError> {
        self.timed(|storage| storage.persist_report_state(last_vote, report_sequence)).0
    }
    fn blocks_to_serve(&mut self, from_height: Height, to_height: Height) -> Result<Vec<Arc<Block>>, StorageError> {
        self.timed(|storage| storage.blocks_to_serve(from_height, to_height)).0
    }
    fn record_dropped(&mut self, dropped: &[DroppedTransfer]) -> Result<(), StorageError> {
        self.timed(|storage| storage.record_dropped(dropped)).0
    }
    fn journal(&mut self) -> Result<Vec<(Hash, Transfer)>, StorageError> {
        self.timed(Storage::journal).0
    }
    fn journal_room(&mut self) -> (usize, usize) {
        (self.timed(Storage::journal_len).0, JOURNAL_TRANSFERS_MAX)
    }
    fn journal_add(&mut self, entries: &[(Hash, Transfer)]) -> Result<(), JournalAddError<StorageError>> {
        match self.timed(|storage| storage.journal_add(entries)).0 {
            Ok(()) => Ok(()),
            Err(StorageError::JournalFull { held, max }) => Err(JournalAddError::Full { held, max }),
            Err(error) => Err(JournalAddError::Store(error)),
        }
    }
    fn journal_remove(&mut self, entries: &[(Hash, Transfer)]) -> Result<(), StorageError> {
        self.timed(|storage| storage.journal_remove(entries)).0
    }
}

/// The loop's state: the core driver (the core and its storage), the transport and the live
/// figures.
struct Server {
    driver: core_driver::Driver<StorageStore>,
    storage: Arc<Storage>,
    net: NetHandle,
    live: LiveInfo,
    wake_at_ms: u64,
    /// Blocks committed during the current step: logged with their election once the step's
    /// outputs are all carried out.
    committed: Vec<CommittedBlock>,
    /// Evidence committed and validators jailed during the current step: logged with the
    /// evidence read back from the committed block once the step's outputs are carried out.
    evidence_committed: Vec<CommittedOffence>,
    /// The record log, when recording.
    record: Option<RecordLog>,
    /// What `/metrics` serves.
    telemetry: Arc<Telemetry>,
    /// When this node first saw each transfer not yet final, for `/metrics`.
    transfers: TransferClock,
    #[cfg(feature = "test-misbehaviour")]
    misbehaviour: Option<misbehaviour::Misbehaviour>,
}

/// An open record log (`DriverOptions::record`).
struct RecordLog {
    path: PathBuf,
    file: std::fs::File,
    bytes: u64,
    entries: u64,
}

impl RecordLog {
    /// Opens (or creates) the log for appending and writes the session's first entry.
    fn open(path: &std::path::Path, session: Session) -> Result<RecordLog, DriverError> {
        let record_error = |source| DriverError::Record { path: path.to_path_buf(), source };
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(record_error)?;
        let frame = record::encode_frame(&Entry::Session(Box::new(session)));
        std::io::Write::write_all(&mut file, &frame).map_err(record_error)?;
        Ok(RecordLog { path: path.to_path_buf(), file, bytes: frame.len() as u64, entries: 1 })
    }

    /// Appends entries with one write (the OS keeps them if the process is killed after it).
    fn append(&mut self, entries: &[Entry]) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for entry in entries {
            bytes.extend_from_slice(&record::encode_frame(entry));
        }
        std::io::Write::write_all(&mut self.file, &bytes)?;
        self.bytes += bytes.len() as u64;
        self.entries += entries.len() as u64;
        Ok(())
    }
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
        mempool: options.mempool.clone(),
        unmeasured_metrics: UNMEASURED_METRICS,
    };
    let signatures = Arc::new(SignatureCache::new(SIGNATURE_CACHE_ENTRIES_MAX));
    let node = Node::new(config, signatures.clone());
    let node_id = node.node_id();
    let genesis_hash = node.genesis_hash();

    let stored_tip = storage.tip()?;
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
    let (net, net_events, net_task) = tinychain_net::manager::start(net_config, peer_store)
        .await
        .map_err(|error| DriverError::Net { addr: options.p2p_listen, detail: error.to_string() })?;
    let mut net_events = warm_signatures_stage(net_events, signatures.clone(), verify_threads);
    let p2p_addr = net_task.local_addr();
    let telemetry = Arc::new(Telemetry::new(Some(net_task.traffic())));

    let (calls_sender, mut calls) = mpsc::channel::<rpc::QueuedCall>(rpc::CALL_QUEUE_CAPACITY);
    let rpc_server = match options.rpc.clone() {
        Some(rpc_config) => {
            let addr = rpc_config.listen;
            let server = rpc::start(rpc_config, calls_sender.clone(), telemetry.clone(), Some(signatures.clone()))
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
    let mut driver = Server {
        driver: core_driver::Driver::new(node, StorageStore::new(storage.clone(), telemetry.clone())),
        storage,
        net,
        live,
        wake_at_ms: 0,
        committed: Vec::new(),
        evidence_committed: Vec::new(),
        record: None,
        telemetry,
        transfers: TransferClock::default(),
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
    on_started(Started { p2p: p2p_addr, rpc: rpc_addr, tip: stored_tip.height });
    if let Some(path) = &options.record {
        let session = Session {
            format: record::RECORD_FORMAT,
            software: format!("tinychain-node {}", env!("CARGO_PKG_VERSION")),
            genesis: genesis.clone(),
            node_id,
            mempool: options.mempool.clone(),
            unmeasured_metrics: UNMEASURED_METRICS,
        };
        driver.record = Some(RecordLog::open(path, session)?);
        driver.driver.record();
        info!(path = %path.display(), "recording every input of the core to the record log");
    }
    let mut result = driver.start().await;

    let mut sampler = Sampler::new(options.link_capacity_mbit, options.metrics_window)?;
    let mut metrics_timer = tokio::time::interval(Duration::from_millis(options.metrics_interval_ms.max(250)));
    metrics_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut summary_timer = tokio::time::interval(Duration::from_secs(30));
    summary_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    summary_timer.tick().await;
    tokio::pin!(shutdown);

    while result.is_ok() {
        let sleep_ms = driver.wake_at_ms.saturating_sub(now_unix_ms()).clamp(1, 1000);
        // No `biased`: among the sources ready at once tokio picks at random, so a flood from
        // any one of them (gossip from peers, a stream of RPC calls) cannot starve the others,
        // the wake-up timer that produces blocks least of all.
        result = tokio::select! {
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
                    let score = driver.driver.node.genesis().score(sample.cpu_permille, sample.net_permille);
                    driver.live.metrics =
                        Some(MetricSample { cpu_permille: sample.cpu_permille, net_permille: sample.net_permille, score });
                    debug!(cpu = sample.cpu_permille, net = sample.net_permille, score, "metrics sampled");
                    driver.step(Event::MetricsSampled { cpu: sample.cpu_permille, net: sample.net_permille }).await
                }
                None => Ok(()),
            },
            _ = summary_timer.tick() => {
                driver.log_summary();
                driver.transfers.prune(Instant::now());
                Ok(())
            }
            () = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {
                if now_unix_ms() >= driver.wake_at_ms {
                    driver.step(Event::Tick).await
                } else {
                    Ok(())
                }
            }
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
    if let Some(log) = &driver.record {
        info!(path = %log.path.display(), entries = log.entries, bytes = log.bytes, "record log closed");
    }
    log_stopped(&driver.driver.node, &driver.storage);
    result
}

/// Net events waiting between the signature stage and the event loop: enough to keep the stage
/// busy while the loop commits a block, few enough that the transport's own bound (the one a
/// flooding peer meets) stays what limits memory.
const WARMED_EVENTS_CAPACITY: usize = 64;

/// The stage between the transport and the event loop: it checks the signatures of the transfers
/// a message carries (`validate::warm_transfer_signatures`, on the blocking pool and
/// `threads` threads) and then hands the event on unchanged, every event in the order it
/// came. The core finds those signatures in the cache and spends its turn on the mempool and
/// the chain, while the next message's signatures are checked beside it: a block waiting in the
/// loop's queue no longer waits for a backlog of signature checks, and the node uses more than
/// one core. What the core decides is unchanged (the cache only remembers successes).
fn warm_signatures_stage(
    mut events: mpsc::Receiver<NetEvent>,
    signatures: Arc<SignatureCache>,
    threads: usize,
) -> mpsc::Receiver<NetEvent> {
    let (sender, warmed) = mpsc::channel(WARMED_EVENTS_CAPACITY);
    tokio::spawn(async move {
        while let Some(mut event) = events.recv().await {
            if transfers_carried(&event).is_some_and(|transfers| !transfers.is_empty()) {
                let signatures = signatures.clone();
                let checked = tokio::task::spawn_blocking(move || {
                    if let Some(transfers) = transfers_carried(&event) {
                        validate::warm_transfer_signatures(&signatures, transfers, threads);
                    }
                    event
                });
                match checked.await {
                    Ok(checked) => event = checked,
                    // The blocking pool is gone: the runtime is shutting down.
                    Err(_) => return,
                }
            }
            if sender.send(event).await.is_err() {
                return;
            }
        }
    });
    warmed
}

/// The transfers a network event carries: gossip (`Transfers`) and mempool sync (`Pooled`).
fn transfers_carried(event: &NetEvent) -> Option<&[Transfer]> {
    match event {
        NetEvent::MessageReceived { message: Message::Transfers(transfers) | Message::Pooled(transfers), .. } => {
            Some(transfers)
        }
        _ => None,
    }
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

impl Server {
    fn name_of(&self, id: &NodeId) -> String {
        self.driver.node.genesis().validator_name(id).map_or_else(|| id.to_string(), str::to_string)
    }

    /// Appends what the core driver recorded since the last call to the record log. A failed
    /// write stops the recording (with an error line), never the node.
    fn write_records(&mut self) {
        let Some(log) = self.record.as_mut() else { return };
        let entries = self.driver.take_records();
        if entries.is_empty() {
            return;
        }
        if let Err(error) = log.append(&entries) {
            error!(path = %log.path.display(), %error, "cannot write the record log: recording stopped, the node goes on");
            self.record = None;
            self.driver.stop_recording();
        }
    }

    /// Restores the core from the database and settles the journal (`Driver::start`).
    async fn start(&mut self) -> Result<(), DriverError> {
        let settled = self.timed_core(|driver| driver.start(now_unix_ms()))?;
        info!(
            tip = self.driver.node.tip().height,
            finalized = self.driver.node.finalized().height,
            "restored the chain from the database"
        );
        self.carry_out().await;
        log_journal_settled(&settled, "resubmitted the pending-transfer journal");
        Ok(())
    }

    /// Runs one call into the core driver, observing the core's share of its time (the store's
    /// calls excluded) into `/metrics`.
    fn timed_core<T>(&mut self, call: impl FnOnce(&mut core_driver::Driver<StorageStore>) -> T) -> T {
        let store_time_before = self.driver.store.store_time;
        let started = Instant::now();
        let result = call(&mut self.driver);
        let store_time = self.driver.store.store_time.saturating_sub(store_time_before);
        self.telemetry.observe_core_step(started.elapsed().saturating_sub(store_time));
        result
    }

    /// Steps the core with one event, through the core driver, and carries out the outputs.
    async fn step(&mut self, event: Event) -> Result<(), DriverError> {
        if let Event::MessageReceived { message, .. } = &event {
            let now = Instant::now();
            match message {
                Message::Transfers(transfers) | Message::Pooled(transfers) => {
                    for transfer in transfers {
                        self.transfers.seen(transfer_id(transfer), now);
                    }
                }
                _ => {}
            }
        }
        let retried = self.timed_core(|driver| driver.step(now_unix_ms(), event))?;
        self.carry_out().await;
        if let Some(settled) = retried {
            log_journal_settled(&settled, "resubmitted the journal's transfers refused before the mempool sync");
        }
        Ok(())
    }

    /// Carries out the outputs the core driver owes, in order (its store writes are made),
    /// after appending the calls that made them to the record log.
    async fn carry_out(&mut self) {
        self.write_records();
        for output in self.driver.take_outputs() {
            match output {
                Output::Send { peer, message } => {
                    if let Message::Blocks(blocks) = &message {
                        debug!(peer = %self.name_of(&peer), count = blocks.len(), "serving blocks");
                    }
                    if let Err(error) = self.net.send_to(peer, message).await {
                        debug!(%error, "send dropped");
                    }
                }
                Output::Broadcast { message, except } => {
                    #[cfg(feature = "test-misbehaviour")]
                    let Some((message, except)) = self.misbehave(message, except).await
                    else {
                        continue;
                    };
                    if let Err(error) = self.net.broadcast(message, except).await {
                        debug!(%error, "broadcast dropped");
                    }
                }
                Output::Disconnect { peer, reason } => {
                    warn!(peer = %self.name_of(&peer), %reason, "disconnecting a peer");
                    if let Err(error) = self.net.disconnect(peer, reason.to_string()).await {
                        debug!(%error, "disconnect dropped");
                    }
                }
                Output::WakeAt(at_ms) => self.wake_at_ms = at_ms,
                Output::Trace(trace) => self.trace(trace),
                Output::Committed(commit) => self.time_committed_transfers(&commit),
                Output::Dropped(transfer) => {
                    self.transfers.forget(&transfer.id);
                    debug!(
                        id = %transfer.id,
                        reason = transfer.reason.kind(),
                        detail = %transfer.reason,
                        "dropped a pending transfer"
                    );
                    self.live.record_transfer_dropped(&transfer.reason);
                }
            }
        }
        let telemetry = &self.telemetry;
        let final_height = self.driver.node.finalized().height;
        self.transfers.finalized(final_height, Instant::now(), |latency| telemetry.observe_transfer_final(latency));
        self.log_committed();
        self.log_evidence_committed();
    }

    /// Times the transfers a commit makes canonical (`TransferClock`); a rollback returns a
    /// block's transfers to waiting.
    fn time_committed_transfers(&mut self, commit: &Commit) {
        if self.transfers.is_empty() {
            return;
        }
        let now = Instant::now();
        let telemetry = &self.telemetry;
        for op in &commit.ops {
            match op {
                ChainOp::Rollback { height, .. } => self.transfers.rolled_back(*height),
                ChainOp::Apply { block, .. } => {
                    let ids = block.transfers.iter().map(transfer_id);
                    self.transfers.applied(block.header.height, ids, now, |latency| {
                        telemetry.observe_transfer_committed(latency)
                    });
                }
            }
        }
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
                let pooled = self.driver.node.evidence().find(|pooled| {
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
            let ranking = self.storage.election_at(height).ok().flatten().unwrap_or_default();
            let score =
                ranking.iter().find(|candidate| candidate.node == producer).and_then(|candidate| candidate.score);
            // The validators ranked ahead of the producer missed their turn.
            for candidate in ranking.iter().filter(|candidate| candidate.rank < rank) {
                self.telemetry.count_missed_turn(&self.name_of(&candidate.node));
            }
            let is_first_since_start = self.live.last_block_at_ms.is_none();
            self.live.record_block_committed(now_unix_ms(), rank);
            let interval_ms = self.live.block_intervals_ms.back().copied();
            if let Some(interval_ms) = interval_ms.filter(|_| !is_first_since_start) {
                self.telemetry.observe_block_interval(Duration::from_millis(interval_ms));
            }
            info!(
                height,
                hash = %hash,
                producer = %self.name_of(&producer),
                rank,
                score = ?score,
                transfers,
                interval_ms = ?interval_ms,
                finalized = self.driver.node.finalized().height,
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
                if except.is_none() && block.header.producer == self.driver.node.node_id() =>
            {
                misbehaviour.key.clone()
            }
            _ => return Some((message, except)),
        };
        let Message::Block(block) = message else { unreachable!("matched above") };
        let twin = misbehaviour::twin(&block, &key);
        let mut peers = self.driver.node.connected_peers();
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
        let jail_blocks = self.driver.node.genesis().parameters.jail_blocks;
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
            .driver
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
            height = self.driver.node.tip().height,
            finalized = self.driver.node.finalized().height,
            peers = self.driver.node.connected_peers().len(),
            mempool = self.driver.node.mempool().len(),
            cpu = metrics.cpu_permille,
            net = metrics.net_permille,
            score = metrics.score,
            ranking = %ranking.join(" "),
            "status"
        );
    }

    /// Answers a batch of RPC calls in order. Queries (and the health and metrics routes) are
    /// answered by `query`; commands act here. Every transfer the core accepts is written to
    /// the journal with one `finish_submits` before any reply of the batch is sent (see the
    /// module docs). A call is claimed (`QueuedCall::take`) before anything is done with it: one
    /// its handler already answered busy (it waited past `rpc::QUEUE_WAIT_MAX`) is dropped
    /// unrun, so a client told busy was never admitted anything.
    async fn answer_batch(&mut self, batch: Vec<rpc::QueuedCall>) -> Result<(), DriverError> {
        let batch: Vec<Call> = batch.into_iter().filter_map(rpc::QueuedCall::take).collect();
        if batch.is_empty() {
            return Ok(());
        }
        self.refresh_live_peers();
        let mut replies: Vec<(oneshot::Sender<Answer>, Answer)> = Vec::with_capacity(batch.len());
        // (index in `replies`, index in its `submit_txs` results or None, id) of each accepted
        // submit.
        let mut accepted: Vec<(usize, Option<usize>, Hash)> = Vec::new();
        // `submit_txs` answers, by index in `replies`: serialised once the journal is written.
        let mut many: Vec<(usize, SubmitTxsAnswer)> = Vec::new();
        for Call { request, reply } in batch {
            let context = || QueryContext { node: &self.driver.node, storage: &self.storage, live: &self.live };
            let answer = match request {
                Request::Query(query) => query::answer(&context(), &query),
                Request::Health => Ok(query::to_json(&query::health(&context()))),
                Request::Metrics => {
                    self.telemetry.set_figures(query::metrics(&context()));
                    Ok(serde_json::Value::Null)
                }
                Request::Command(Command::SubmitTx { tx: transfer }) => {
                    match self.timed_core(|driver| driver.submit(now_unix_ms(), transfer))? {
                        Ok(id) => {
                            self.transfers.seen(id, Instant::now());
                            accepted.push((replies.len(), None, id));
                            Ok(query::to_json(&SubmitAnswer { id }))
                        }
                        Err(refusal) => Err(refusal_answer(refusal)),
                    }
                }
                Request::Command(Command::SubmitTxs { txs }) => {
                    let mut answer = SubmitTxsAnswer { accepted: 0, results: Vec::with_capacity(txs.len()) };
                    for transfer in txs {
                        match self.timed_core(|driver| driver.submit(now_unix_ms(), transfer))? {
                            Ok(id) => {
                                self.transfers.seen(id, Instant::now());
                                accepted.push((replies.len(), Some(answer.results.len()), id));
                                answer.accepted += 1;
                                answer.results.push(SubmitResult::Accepted { id });
                            }
                            Err(refusal) => answer.results.push(refused(refusal_answer(refusal))),
                        }
                    }
                    many.push((replies.len(), answer));
                    Ok(serde_json::Value::Null)
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
        // Like a failed commit, a failed journal write stops the node rather than acknowledge
        // what it cannot keep.
        let unkept = self.driver.finish_submits()?;
        if let Some((_, SubmitRefusal::JournalFull { held, max })) = unkept.first() {
            // Only when the count taken before the core saw them was off. These transfers are
            // already in the mempool and gossiped, so they may still be included; the client is
            // told it was not promised, and `get_tx` tells it what became of the transfer.
            warn!(held, max, transfers = unkept.len(), "the pending-transfer journal is full");
        }
        for (id, refusal) in unkept {
            for (reply, position, _) in accepted.iter().filter(|(_, _, accepted)| *accepted == id) {
                match position {
                    None => replies[*reply].1 = Err(refusal_answer(refusal.clone())),
                    Some(position) => {
                        if let Some((_, answer)) = many.iter_mut().find(|(index, _)| index == reply) {
                            answer.results[*position] = refused(refusal_answer(refusal.clone()));
                            answer.accepted -= 1;
                        }
                    }
                }
            }
        }
        for (reply, answer) in many {
            replies[reply].1 = Ok(query::to_json(&answer));
        }
        self.carry_out().await;
        for (reply, answer) in replies {
            // The caller may have given up (timeout, closed connection): nothing to do then.
            let _ = reply.send(answer);
        }
        Ok(())
    }

    fn refresh_live_peers(&mut self) {
        self.live.peers = self
            .driver
            .node
            .connected_peers()
            .into_iter()
            .map(|id| PeerInfo {
                id,
                name: self.driver.node.genesis().validator_name(&id).map(str::to_string),
                addr: None,
            })
            .collect();
    }
}

/// What an RPC call is answered.
type Answer = Result<serde_json::Value, QueryError>;

/// A submit refusal as an RPC error.
fn refusal_answer(refusal: SubmitRefusal) -> QueryError {
    match refusal {
        SubmitRefusal::Rejected(rejection) => QueryError::Rejected(rejection),
        SubmitRefusal::JournalFull { held, max } => QueryError::JournalFull { held, max },
        SubmitRefusal::NoVerdict => QueryError::Internal(SubmitRefusal::NoVerdict.to_string()),
    }
}

/// A refused transfer of `submit_txs`, as the error `submit_tx` would have answered.
fn refused(error: QueryError) -> SubmitResult {
    SubmitResult::Refused {
        error: SubmitError {
            code: error.code(),
            message: error.to_string(),
            data: tinychain_rpc::ErrorData { code: error.data_code().to_string() },
        },
    }
}

/// One line saying what settling journal entries did (nothing when there were none).
fn log_journal_settled(settled: &JournalSettled, what: &str) {
    if *settled == JournalSettled::default() {
        return;
    }
    info!(
        resubmitted = settled.resubmitted,
        already_committed = settled.committed,
        dropped = settled.dropped,
        retried_after_mempool_sync = settled.deferred,
        "{what}"
    );
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
    use tinychain_core::testkit::fast_genesis;

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
