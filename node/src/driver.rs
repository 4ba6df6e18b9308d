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
//!   figures RPC and `/metrics` report.
//!
//! Event sources: the network, RPC calls (read-only ones are answered by `query::answer` from the
//! core and storage; `submit_tx`, `add_peer` and `remove_peer` are carried out here), the metrics
//! sampler, the wake-up timer and the shutdown signal. Shutdown finishes the step in progress
//! (so a commit is never cut short by it), stops RPC, then closes every link.

use crate::metrics::Sampler;
use crate::query::{self, Call, LiveInfo, MetricSample, PeerInfo, QueryContext, QueryError, Request};
use crate::rpc::{self, RpcConfig};
use crate::setup::now_unix_ms;
use crate::storage::{Storage, StorageError};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tinychain_core::crypto::{Keypair, SignatureCache};
use tinychain_core::genesis::Genesis;
use tinychain_core::limits::SIGNATURE_CACHE_ENTRIES_MAX;
use tinychain_core::mempool::MempoolConfig;
use tinychain_core::message::Message;
use tinychain_core::node::{Action, Commit, Event, Node, NodeConfig, TraceEvent};
use tinychain_core::types::{Hash, Height, NodeId};
use tinychain_net::discovery::PeerStore;
use tinychain_net::handle::{NetEvent, NetHandle};
use tinychain_net::manager::{NetConfig, NetLimits};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

/// Everything the driver needs, already loaded and checked (see `home::Loaded`).
pub struct DriverOptions {
    pub genesis: Genesis,
    pub key: Keypair,
    /// The redb file. Created on the first start (when its directory does not exist yet).
    pub database: PathBuf,
    pub p2p_listen: SocketAddr,
    pub seeds: Vec<String>,
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

/// The loop's state: the core, its storage, the transport and the live figures.
struct Driver {
    node: Node,
    storage: Arc<Storage>,
    net: NetHandle,
    live: LiveInfo,
    wake_at_ms: u64,
    /// Blocks committed during the current step: logged with their election once the step's
    /// actions are all carried out.
    committed: Vec<(Height, Hash, NodeId, u32, usize)>,
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
    let mut driver = Driver { node, storage, net, live, wake_at_ms: 0, committed: Vec::new() };
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
            Some(call) = calls.recv() => driver.answer(call).await,
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
    let tip = driver.node.tip();
    info!(height = tip.height, finalized = driver.node.finalized().height, "node stopped");
    result
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
    async fn carry_out(&mut self, actions: Vec<Action>) -> Result<Vec<Action>, DriverError> {
        let mut verdicts = Vec::new();
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
                Action::TxDropped(dropped) => {
                    debug!(id = %dropped.id, reason = %dropped.reason, "dropped a pending transfer");
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
                    if let Err(error) = self.net.disconnect(peer, reason).await {
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
        self.log_committed();
        Ok(verdicts)
    }

    fn trace(&mut self, trace: TraceEvent) {
        match trace {
            TraceEvent::BlockCommitted { height, hash, producer, rank, transfers } => {
                self.committed.push((height, hash, producer, rank, transfers));
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
        }
    }

    /// One log line per block committed in the last step, with the producer's committed score.
    fn log_committed(&mut self) {
        for (height, hash, producer, rank, transfers) in std::mem::take(&mut self.committed) {
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

    /// Answers one RPC call. Read-only requests go to `query::answer`; the rest act here.
    async fn answer(&mut self, call: Call) -> Result<(), DriverError> {
        let Call { request, reply } = call;
        let answer = match request {
            Request::SubmitTx(transfer) => {
                let id = tinychain_core::validate::transfer_id(&transfer);
                let actions = self.node.step(now_unix_ms(), Event::TxSubmitted(transfer));
                let verdicts = self.carry_out(actions).await?;
                verdict_for(&verdicts, &id)
            }
            Request::AddPeer { addr } => match self.net.add_peer(addr.clone()).await {
                Ok(()) => {
                    info!(%addr, "peer address added by an operator");
                    Ok(serde_json::json!({ "added": addr }))
                }
                Err(error) => Err(QueryError::Internal(error.to_string())),
            },
            Request::RemovePeer { addr } => match self.net.remove_peer(addr.clone()).await {
                Ok(()) => {
                    info!(%addr, "peer address removed by an operator");
                    Ok(serde_json::json!({ "removed": addr }))
                }
                Err(error) => Err(QueryError::Internal(error.to_string())),
            },
            request => {
                self.live.peers = self
                    .node
                    .connected_peers()
                    .into_iter()
                    .map(|id| PeerInfo {
                        id,
                        name: self.node.genesis().validator_name(&id).map(str::to_string),
                        addr: None,
                    })
                    .collect();
                let context = QueryContext { node: &self.node, storage: &self.storage, live: &self.live };
                query::answer(&context, &request)
            }
        };
        // The caller may have given up (timeout, closed connection): nothing to do then.
        let _ = reply.send(answer);
        Ok(())
    }
}

/// The core's verdict on a submitted transfer, as an RPC answer.
fn verdict_for(verdicts: &[Action], id: &Hash) -> Result<serde_json::Value, QueryError> {
    for verdict in verdicts {
        match verdict {
            Action::TxAccepted { id: accepted } if accepted == id => {
                return Ok(serde_json::json!({ "id": id.to_string() }));
            }
            Action::TxRejected { id: rejected, reason } if rejected == id => {
                return Err(QueryError::Rejected(reason.clone()));
            }
            _ => {}
        }
    }
    Err(QueryError::Internal("the node gave no verdict on the transfer".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinychain_core::testkit::fast_genesis;

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
