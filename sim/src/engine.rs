//! The simulation engine: one virtual clock, an event queue ordered by (time, sequence), N real
//! `tinychain-core` nodes with their own (possibly skewed) clocks and in-memory storage, the
//! network model, the fault schedule, fake metrics and the workload. After every step the
//! checker runs; at the end the liveness phase is judged and a report is built.
//!
//! Determinism: every random choice comes from a `SimRng` stream derived from the seed; the
//! queue breaks time ties by insertion sequence; nodes share one signature cache (verification
//! is pure, so sharing changes no outcome). The same options give the same trace, byte for byte,
//! and its Blake3 hash is the run's fingerprint.

use crate::checker::{Checker, GapRule};
use crate::faults::{self, FaultEvent};
use crate::metrics::{MetricsModel, SAMPLE_INTERVAL_MS};
use crate::network::NetworkModel;
use crate::options::SimOptions;
use crate::rng::SimRng;
use crate::workload::{account_count, Workload};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tinychain_core::codec;
use tinychain_core::crypto::SignatureCache;
use tinychain_core::genesis::{Allocation, Genesis, ValidatorEntry};
use tinychain_core::limits::SIGNATURE_CACHE_ENTRIES_MAX;
use tinychain_core::mempool::DroppedTransfer;
use tinychain_core::message::Message;
use tinychain_core::node::{Action, Event, Node, NodeConfig, TraceEvent};
use tinychain_core::testkit::{account_key, validator_key, ModelStorage};
use tinychain_core::types::{Address, Block, Hash, Height, MetricReport, Transfer, UNITS_PER_COIN};
use tinychain_core::validate::transfer_id;

/// After `HealAll`, finality must resume on every node within this long (virtual time).
pub const LIVENESS_BOUND_MS: u64 = 60_000;

#[derive(Clone, Debug)]
enum Scheduled {
    Deliver { from: usize, to: usize, message: Arc<Message> },
    Tick { node: usize, generation: u64 },
    Fault(FaultEvent),
    Submit,
    Sample,
}

/// A node's clock: `local = base_local + (virtual - base_virtual) * (1e6 + drift_ppm) / 1e6`,
/// never going backwards.
#[derive(Clone, Copy, Debug)]
struct Clock {
    base_virtual_ms: u64,
    base_local_ms: i64,
    drift_ppm: i64,
    last_local_ms: u64,
}

impl Clock {
    fn local(&mut self, virtual_ms: u64) -> u64 {
        let elapsed = (virtual_ms - self.base_virtual_ms) as i64;
        let local = self.base_local_ms + elapsed + elapsed * self.drift_ppm / 1_000_000;
        self.last_local_ms = self.last_local_ms.max(local.max(0) as u64);
        self.last_local_ms
    }

    /// The virtual time at which the local clock reads `local_ms` (at or after `now`).
    fn virtual_at(&self, local_ms: u64, now_ms: u64) -> u64 {
        let delta_local = local_ms as i64 - self.base_local_ms;
        let delta_virtual = delta_local * 1_000_000 / (1_000_000 + self.drift_ppm);
        (self.base_virtual_ms as i64 + delta_virtual + 1).max(now_ms as i64) as u64
    }
}

struct SimNode {
    node: Node,
    storage: ModelStorage,
    up: bool,
    paused: bool,
    held: Vec<(usize, Message)>,
    tick_at_ms: Option<u64>,
    tick_generation: u64,
    clock: Clock,
    metrics: MetricsModel,
    bytes_sent_since_sample: u64,
    /// The node's pending-transfer journal, as the server keeps it: what it accepted from its
    /// own clients, by sender, nonce and id; it survives a crash and is resubmitted on restart.
    journal: BTreeMap<(Address, u64, Hash), Transfer>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

fn percentiles(mut values: Vec<u64>) -> Percentiles {
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_unstable();
    let at = |per_mille: usize| values[(values.len() - 1) * per_mille / 1000];
    Percentiles { p50: at(500), p99: at(990), max: values[values.len() - 1] }
}

/// What a run did: the `--json` object of `tinychain sim`.
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    pub seed: u64,
    pub nodes: usize,
    pub virtual_ms: u64,
    /// Filled in by the caller (the simulation itself reads no clock).
    pub wall_ms: u64,
    pub height: Height,
    pub final_height: Height,
    pub blocks_by_rank: BTreeMap<u32, u64>,
    pub interval_ms: Percentiles,
    pub txs_submitted: u64,
    pub invalid_txs_submitted: u64,
    pub txs_committed: u64,
    /// Valid transfers a node acknowledged (`TxAccepted`) to the workload.
    pub txs_acknowledged: u64,
    /// Acknowledged transfers some node dropped instead of committing, by reason.
    pub txs_dropped: BTreeMap<String, u64>,
    /// Acknowledged transfers neither committed on the chain, nor pending, nor dropped with a
    /// reason: each one is also a violation.
    pub txs_lost: u64,
    pub tx_latency_ms: Percentiles,
    pub reorgs: u64,
    pub max_reorg_depth: u64,
    pub timeouts_fired: u64,
    pub faults_injected: u64,
    pub safety_violations: u64,
    pub violations: Vec<String>,
    pub liveness_ok: bool,
    pub liveness: String,
    pub finality_resumed_after_heal_ms: Option<u64>,
    pub max_final_gap_ms: u64,
    /// The longest gap judged against the timeout rule (outside non-crash faults).
    pub max_judged_gap_ms: u64,
    pub trace_lines: u64,
    pub trace_hash: String,
    pub replay: String,
}

impl SimReport {
    pub fn passed(&self) -> bool {
        self.safety_violations == 0 && self.liveness_ok
    }
}

pub struct Simulation {
    options: SimOptions,
    genesis: Genesis,
    now_ms: u64,
    queue: BTreeMap<(u64, u64), Scheduled>,
    sequence: u64,
    nodes: Vec<SimNode>,
    network: NetworkModel,
    network_rng: SimRng,
    metrics_rng: SimRng,
    workload_rng: SimRng,
    workload: Workload,
    checker: Checker,
    cache: Arc<SignatureCache>,
    trace_hasher: blake3::Hasher,
    trace_lines: Vec<String>,
    trace_count: u64,
    // Figures for the report.
    calm_since_ms: Option<u64>,
    healed_at_ms: Option<u64>,
    final_at_heal: Height,
    finality_resumed_at_ms: Option<u64>,
    reorgs: u64,
    max_reorg_depth: u64,
    timeouts_fired: u64,
    faults_injected: u64,
    first_commit_ms: BTreeMap<Hash, u64>,
    /// Transfer ids some node acknowledged to the workload.
    acknowledged: BTreeSet<Hash>,
    /// Transfer ids some node dropped, with the first reason given.
    dropped: BTreeMap<Hash, &'static str>,
    /// The transfer being submitted to a node, and the node's verdict on it.
    submitting: Option<Transfer>,
    last_verdict: Option<bool>,
    submits: u64,
}

/// The simulated chain: `nodes` validators, funded accounts for the workload, the options'
/// parameters, genesis at virtual time 0.
pub fn sim_genesis(options: &SimOptions) -> Genesis {
    Genesis {
        chain_id: "tinychain-sim".into(),
        genesis_time_ms: 0,
        validators: (0..options.nodes)
            .map(|index| ValidatorEntry {
                id: validator_key(index).address(),
                name: format!("n{index}"),
                addr: format!("sim:{index}"),
            })
            .collect(),
        allocations: (0..account_count(options.nodes))
            .map(|index| Allocation { address: account_key(index).address(), amount: 1_000 * UNITS_PER_COIN })
            .collect(),
        parameters: options.parameters.clone(),
    }
}

impl Simulation {
    pub fn new(options: SimOptions) -> Simulation {
        assert!(options.nodes >= 1, "a simulation needs at least one node");
        let genesis = sim_genesis(&options);
        let cache = Arc::new(SignatureCache::new(SIGNATURE_CACHE_ENTRIES_MAX));
        let mut metrics_rng = SimRng::stream(options.seed, "metrics");
        let nodes: Vec<SimNode> = (0..options.nodes)
            .map(|index| SimNode {
                node: Self::fresh_node(&genesis, index, &cache),
                storage: ModelStorage::new(&genesis),
                up: true,
                paused: false,
                held: Vec::new(),
                tick_at_ms: None,
                tick_generation: 0,
                clock: Clock { base_virtual_ms: 0, base_local_ms: 0, drift_ppm: 0, last_local_ms: 0 },
                metrics: MetricsModel::profile(&mut metrics_rng),
                bytes_sent_since_sample: 0,
                journal: BTreeMap::new(),
            })
            .collect();
        let genesis_hash = nodes[0].node.genesis_hash();
        let network =
            NetworkModel::new(options.nodes, options.latency_ms, options.jitter_ms, options.bandwidth_bytes_per_ms);
        let mut simulation = Simulation {
            checker: Checker::new(&genesis, options.nodes, genesis_hash),
            workload: Workload::new(options.nodes),
            network_rng: SimRng::stream(options.seed, "network"),
            workload_rng: SimRng::stream(options.seed, "workload"),
            metrics_rng,
            now_ms: 0,
            queue: BTreeMap::new(),
            sequence: 0,
            nodes,
            network,
            cache,
            trace_hasher: blake3::Hasher::new(),
            trace_lines: Vec::new(),
            trace_count: 0,
            calm_since_ms: Some(0),
            healed_at_ms: None,
            final_at_heal: 0,
            finality_resumed_at_ms: None,
            reorgs: 0,
            max_reorg_depth: 0,
            timeouts_fired: 0,
            faults_injected: 0,
            first_commit_ms: BTreeMap::new(),
            acknowledged: BTreeSet::new(),
            dropped: BTreeMap::new(),
            submitting: None,
            last_verdict: None,
            submits: 0,
            genesis,
            options,
        };
        let schedule = faults::schedule(&simulation.options, &mut SimRng::stream(simulation.options.seed, "faults"));
        for (at_ms, fault) in schedule {
            simulation.schedule(at_ms, Scheduled::Fault(fault));
        }
        if simulation.options.tx_rate_per_s > 0 {
            simulation.schedule(1_000, Scheduled::Submit);
        }
        simulation.schedule(0, Scheduled::Sample);
        for a in 0..simulation.nodes.len() {
            for b in 0..simulation.nodes.len() {
                if a != b {
                    let peer = simulation.nodes[b].node.node_id();
                    simulation.step_node(a, Event::PeerConnected { peer });
                }
            }
        }
        simulation
    }

    fn fresh_node(genesis: &Genesis, index: usize, cache: &Arc<SignatureCache>) -> Node {
        let config = NodeConfig {
            genesis: genesis.clone(),
            key: validator_key(index),
            verify_threads: 1,
            mempool: Default::default(),
            unmeasured_metrics: (0, 0),
        };
        Node::new(config, cache.clone())
    }

    fn schedule(&mut self, at_ms: u64, event: Scheduled) {
        self.sequence += 1;
        self.queue.insert((at_ms, self.sequence), event);
    }

    fn trace(&mut self, node: Option<usize>, text: String) {
        let who = node.map_or_else(|| "--".to_string(), |node| format!("n{node}"));
        let line = format!("{:>6}.{:03} {who:>4} {text}", self.now_ms / 1000, self.now_ms % 1000);
        self.trace_hasher.update(line.as_bytes());
        self.trace_hasher.update(b"\n");
        self.trace_count += 1;
        if self.options.keep_trace {
            self.trace_lines.push(line);
        }
    }

    fn node_index(&self, id: &tinychain_core::types::NodeId) -> usize {
        self.genesis.validator_index(id).expect("peers are genesis validators")
    }

    /// Steps one node at the current virtual time (its local clock) and carries out its actions.
    fn step_node(&mut self, index: usize, event: Event) {
        if !self.nodes[index].up {
            return;
        }
        let local_ms = self.nodes[index].clock.local(self.now_ms);
        let actions = self.nodes[index].node.step(local_ms, event);
        self.carry_out(index, actions);
    }

    fn carry_out(&mut self, index: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::CommitBlocks(commit) => {
                    let action = Action::CommitBlocks(commit);
                    let handled = self.nodes[index].storage.carry_out(&action);
                    assert!(handled, "storage carries out commits");
                    let Action::CommitBlocks(commit) = action else { unreachable!("just built") };
                    self.on_commit(index, &commit);
                }
                Action::PersistReportState { .. } => {
                    let handled = self.nodes[index].storage.carry_out(&action);
                    assert!(handled, "storage carries out report state");
                }
                Action::SendTo { peer, message } => {
                    let to = self.node_index(&peer);
                    self.send(index, to, message);
                }
                Action::Broadcast { message, except } => {
                    let bytes = self.size_of(&message);
                    let message = Arc::new(message);
                    for to in 0..self.nodes.len() {
                        if to != index && Some(self.nodes[to].node.node_id()) != except {
                            self.send_shared(index, to, message.clone(), bytes);
                        }
                    }
                }
                Action::ServeBlocks { peer, from_height, to_height } => {
                    let blocks = self.nodes[index].storage.blocks_to_serve(from_height, to_height);
                    let to = self.node_index(&peer);
                    self.send(index, to, Message::Blocks(blocks));
                }
                Action::WakeAt(local_ms) => {
                    let at_ms = self.nodes[index].clock.virtual_at(local_ms, self.now_ms);
                    let sim_node = &mut self.nodes[index];
                    if sim_node.tick_at_ms != Some(at_ms) {
                        sim_node.tick_at_ms = Some(at_ms);
                        sim_node.tick_generation += 1;
                        let generation = sim_node.tick_generation;
                        self.schedule(at_ms, Scheduled::Tick { node: index, generation });
                    }
                }
                Action::Trace(event) => self.on_trace(index, event),
                Action::DisconnectPeer { peer, reason } => {
                    let peer = self.node_index(&peer);
                    self.trace(Some(index), format!("disconnect n{peer}: {reason}"));
                }
                Action::TxAccepted { id } => {
                    let submitted = self.submitting.as_ref().filter(|transfer| transfer_id(transfer) == id);
                    if let Some(transfer) = submitted.cloned() {
                        self.nodes[index].journal.insert((transfer.from, transfer.nonce, id), transfer);
                        self.last_verdict = Some(true);
                    }
                }
                Action::TxRejected { .. } => self.last_verdict = Some(false),
                Action::TxDropped(dropped) => {
                    let DroppedTransfer { id, transfer, reason, .. } = *dropped;
                    self.nodes[index].journal.remove(&(transfer.from, transfer.nonce, id));
                    self.dropped.entry(id).or_insert(reason.kind());
                }
            }
        }
    }

    fn send(&mut self, from: usize, to: usize, message: Message) {
        let bytes = self.size_of(&message);
        self.send_shared(from, to, Arc::new(message), bytes);
    }

    /// A message's encoded size, when a model needs it (bandwidth or traffic-derived metrics);
    /// sizing walks the whole message, so it is skipped otherwise.
    fn size_of(&self, message: &Message) -> usize {
        if self.options.bandwidth_bytes_per_ms.is_some() || self.options.net_from_traffic_bytes_per_s.is_some() {
            codec::encoded_len(message)
        } else {
            0
        }
    }

    /// Sends one message of `bytes` encoded bytes (shared, not copied, between the recipients of
    /// a broadcast, and sized once).
    fn send_shared(&mut self, from: usize, to: usize, message: Arc<Message>, bytes: usize) {
        self.nodes[from].bytes_sent_since_sample += bytes as u64;
        for at_ms in self.network.arrivals(&mut self.network_rng, from, to, bytes, self.now_ms) {
            self.schedule(at_ms, Scheduled::Deliver { from, to, message: message.clone() });
        }
    }

    fn on_trace(&mut self, index: usize, event: TraceEvent) {
        let text = match event {
            TraceEvent::BlockProduced { height, hash, rank, transfers, reports } => {
                format!("produced h={height} r={rank} txs={transfers} reports={reports} id={}", short(&hash))
            }
            TraceEvent::BlockCommitted { height, hash, producer, rank, transfers } => {
                let by = self.node_index(&producer);
                format!("committed h={height} r={rank} by=n{by} txs={transfers} id={}", short(&hash))
            }
            TraceEvent::TimeoutFired { height, skipped_ranks } => {
                self.timeouts_fired += 1;
                format!("timeout h={height} skipped={skipped_ranks}")
            }
            TraceEvent::Reorg { fork_height, rolled_back, applied, new_tip } => {
                self.reorgs += 1;
                self.max_reorg_depth = self.max_reorg_depth.max(rolled_back);
                format!("reorg fork={fork_height} back={rolled_back} forward={applied} tip={}", new_tip.height)
            }
            TraceEvent::Finalized { checkpoint } => {
                format!("finalized h={} id={}", checkpoint.height, short(&checkpoint.hash))
            }
            TraceEvent::BlockRejected { hash, reason } => format!("rejected id={} {reason}", short(&hash)),
            TraceEvent::MempoolSynced { synced_peers, admitted, timed_out } => {
                let how = if timed_out { "wait ran out" } else { "quorum" };
                format!("mempool synced peers={synced_peers} admitted={admitted} ({how})")
            }
            TraceEvent::EvidenceSeen { offender, kind, offence_height } => {
                let offender = self.node_index(&offender);
                format!("evidence seen {kind} by=n{offender} at h={offence_height}")
            }
            TraceEvent::EvidenceCommitted { height, offender, kind, offence_height } => {
                let offender = self.node_index(&offender);
                format!("evidence committed h={height} {kind} by=n{offender} at h={offence_height}")
            }
            TraceEvent::Jailed { validator, until_height } => {
                let validator = self.node_index(&validator);
                format!("jailed n{validator} until h={until_height}")
            }
            TraceEvent::FinalityConflict { peer, ours, theirs } => {
                let peer = self.node_index(&peer);
                format!(
                    "finality conflict with n{peer}: ours h={} id={}, theirs h={} id={}",
                    ours.height,
                    short(&ours.hash),
                    theirs.height,
                    short(&theirs.hash)
                )
            }
            TraceEvent::Justified { .. } | TraceEvent::SyncRequested { .. } => return,
        };
        self.trace(Some(index), text);
    }

    fn gap_rule(&self) -> GapRule {
        // A producer may learn of its parent one network delay late, and the block reaches the
        // others one delay later: allow an interval plus the delays on top of the rank's wait.
        let slack_ms = self.genesis.parameters.block_interval_ms + 2 * self.network.max_delay_ms() + 10;
        GapRule { calm_since_ms: self.calm_since_ms, slack_ms }
    }

    /// No fault but crashes active: no partition, loss, duplication, reordering, pause or skew.
    fn is_calm(&self) -> bool {
        !self.network.is_partitioned()
            && self.network.loss_per_million == 0
            && self.network.dup_per_million == 0
            && self.network.reorder_jitter_ms == 0
            && self.nodes.iter().all(|node| {
                !node.paused
                    && node.clock.drift_ppm == 0
                    && node.clock.base_local_ms == node.clock.base_virtual_ms as i64
            })
    }

    fn update_calm(&mut self, restarted: bool) {
        if !self.is_calm() {
            self.calm_since_ms = None;
        } else if self.calm_since_ms.is_none() || restarted {
            // A restarted node waits for its peers' tips before producing: judge from here on.
            self.calm_since_ms = Some(self.now_ms);
        }
    }

    fn on_commit(&mut self, index: usize, commit: &tinychain_core::node::Commit) {
        let gap_rule = self.gap_rule();
        for op in &commit.ops {
            if let tinychain_core::node::ChainOp::Apply { block, .. } = op {
                for transfer in &block.transfers {
                    let id = transfer_id(transfer);
                    self.first_commit_ms.entry(id).or_insert(self.now_ms);
                    self.workload.note_committed(transfer);
                }
            }
        }
        let storage = &self.nodes[index].storage;
        self.checker.on_commit(
            self.now_ms,
            index,
            commit,
            storage,
            &self.genesis,
            &self.workload.invalid_ids,
            gap_rule,
        );
        if let (Some(_), None) = (self.healed_at_ms, self.finality_resumed_at_ms) {
            let all_past = self.checker.final_heights().iter().all(|checkpoint| checkpoint.height > self.final_at_heal);
            if all_past {
                self.finality_resumed_at_ms = Some(self.now_ms);
            }
        }
    }

    fn on_fault(&mut self, fault: FaultEvent) {
        self.faults_injected += 1;
        self.trace(None, format!("fault {}", fault.describe()));
        match fault.clone() {
            FaultEvent::Crash(node) => self.crash(node),
            FaultEvent::CrashNextProducer => {
                let next = self.nodes[0].node.next_election()[0].node;
                let node = self.node_index(&next);
                self.trace(None, format!("fault crash n{node} (next producer)"));
                self.crash(node);
            }
            FaultEvent::Restart(node) => self.restart(node),
            FaultEvent::Pause(node) => {
                if self.nodes[node].up {
                    self.nodes[node].paused = true;
                }
            }
            FaultEvent::Resume(node) => self.resume(node),
            FaultEvent::Partition { group, one_way } => self.network.partition(&group, one_way),
            FaultEvent::Heal => self.heal_network(),
            FaultEvent::Loss(rate) => self.network.loss_per_million = rate,
            FaultEvent::Dup(rate) => self.network.dup_per_million = rate,
            FaultEvent::Reorder(jitter_ms) => self.network.reorder_jitter_ms = jitter_ms,
            FaultEvent::Skew { node, offset_ms, drift_ppm } => self.skew(node, offset_ms, drift_ppm),
            FaultEvent::Metric { node, fault } => self.nodes[node].metrics.fault = fault,
            FaultEvent::BadReport(node) => self.inject_bad_report(node),
            FaultEvent::HealAll => self.heal_all(),
        }
        let restarted = matches!(fault, FaultEvent::Restart(_) | FaultEvent::HealAll);
        self.update_calm(restarted);
    }

    fn crash(&mut self, node: usize) {
        if !self.nodes[node].up {
            return;
        }
        self.nodes[node].up = false;
        self.nodes[node].paused = false;
        self.nodes[node].held.clear();
        self.nodes[node].tick_at_ms = None;
        self.nodes[node].tick_generation += 1;
        self.queue.retain(|_, event| !matches!(event, Scheduled::Deliver { to, .. } if *to == node));
        let peer = self.nodes[node].node.node_id();
        for other in 0..self.nodes.len() {
            if other != node {
                self.step_node(other, Event::PeerDisconnected { peer });
            }
        }
    }

    fn restart(&mut self, node: usize) {
        if self.nodes[node].up {
            return;
        }
        self.nodes[node].node = Self::fresh_node(&self.genesis, node, &self.cache);
        self.nodes[node].up = true;
        self.checker.on_restart(node, &self.nodes[node].storage);
        let restored = self.nodes[node].storage.restored();
        self.step_node(node, Event::Restored(Box::new(restored)));
        self.resubmit_journal(node);
        self.reconnect(node);
    }

    /// What the server's driver does after a restart: entries whose nonce the chain used are
    /// removed (dropped, unless committed), the rest resubmitted in nonce order.
    fn resubmit_journal(&mut self, node: usize) {
        let journal = std::mem::take(&mut self.nodes[node].journal);
        for ((from, nonce, id), transfer) in journal {
            if nonce < self.nodes[node].node.state().account(&from).nonce {
                if !self.first_commit_ms.contains_key(&id) {
                    self.dropped.entry(id).or_insert("nonce_taken");
                }
                continue;
            }
            if !self.submit_to(node, transfer) {
                self.dropped.entry(id).or_insert("refused_after_restart");
            }
        }
    }

    /// Steps `node` with a submitted transfer; true if it accepted it (and journaled it).
    fn submit_to(&mut self, node: usize, transfer: Transfer) -> bool {
        self.submitting = Some(transfer.clone());
        self.last_verdict = None;
        self.step_node(node, Event::TxSubmitted(transfer));
        self.submitting = None;
        self.last_verdict.take().unwrap_or(false)
    }

    fn reconnect(&mut self, node: usize) {
        for other in 0..self.nodes.len() {
            if other != node && self.nodes[other].up {
                let other_id = self.nodes[other].node.node_id();
                let node_id = self.nodes[node].node.node_id();
                self.step_node(node, Event::PeerConnected { peer: other_id });
                self.step_node(other, Event::PeerConnected { peer: node_id });
            }
        }
    }

    fn resume(&mut self, node: usize) {
        if !self.nodes[node].paused {
            return;
        }
        self.nodes[node].paused = false;
        let held = std::mem::take(&mut self.nodes[node].held);
        for (from, message) in held {
            let from_id = self.nodes[from].node.node_id();
            self.step_node(node, Event::MessageReceived { from: from_id, message });
        }
        self.step_node(node, Event::Tick);
    }

    fn heal_network(&mut self) {
        let was_blocked = self.network.blocked.clone();
        self.network.heal();
        // Links that were cut reconnect, and reconnecting peers exchange their tips.
        let count = self.nodes.len();
        let cut: Vec<(usize, usize)> = (0..count)
            .flat_map(|a| (0..count).map(move |b| (a, b)))
            .filter(|&(a, b)| was_blocked[a][b] || was_blocked[b][a])
            .collect();
        for (a, b) in cut {
            if self.nodes[a].up && self.nodes[b].up {
                let peer = self.nodes[b].node.node_id();
                self.step_node(a, Event::PeerConnected { peer });
            }
        }
    }

    fn skew(&mut self, node: usize, offset_ms: i64, drift_ppm: i64) {
        let now = self.now_ms;
        let clock = &mut self.nodes[node].clock;
        let current = clock.local(now);
        clock.base_virtual_ms = now;
        clock.base_local_ms = now as i64 + offset_ms;
        clock.drift_ppm = drift_ppm;
        clock.last_local_ms = current;
    }

    fn inject_bad_report(&mut self, node: usize) {
        let key = validator_key(node);
        let tip = self.nodes[node].node.tip();
        let sequence = self.nodes[node].node.report_sequence() + 1_000_000;
        let mut report = MetricReport {
            node: key.address(),
            sequence,
            tip,
            cpu: 1_500,
            net: 0,
            score: 750,
            vote: None,
            signature: Default::default(),
        };
        report.signature = key.sign(&codec::report_signing_bytes(&self.genesis.chain_id, &report));
        for to in 0..self.nodes.len() {
            if to != node {
                self.send(node, to, Message::Report(report.clone()));
            }
        }
    }

    fn heal_all(&mut self) {
        self.network.loss_per_million = 0;
        self.network.dup_per_million = 0;
        self.network.reorder_jitter_ms = 0;
        self.heal_network();
        for node in 0..self.nodes.len() {
            self.nodes[node].metrics.fault = None;
            self.skew(node, 0, 0);
            self.resume(node);
            self.restart(node);
        }
        self.healed_at_ms = Some(self.now_ms);
        self.final_at_heal = self.checker.final_heights().iter().map(|checkpoint| checkpoint.height).max().unwrap_or(0);
    }

    fn submit(&mut self) {
        // Like a wallet, the workload asks a node for the next nonce, which a node offers only
        // once its first mempool sync since start is over.
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&index| {
                let sim_node = &self.nodes[index];
                sim_node.up && !sim_node.paused && sim_node.node.is_mempool_synced()
            })
            .collect();
        if !candidates.is_empty() {
            let target = candidates[self.workload_rng.below(candidates.len() as u64) as usize];
            let transfer = self.workload.next(&mut self.workload_rng, &self.nodes[target].node, self.now_ms);
            self.submits += 1;
            let id = transfer_id(&transfer);
            if self.submit_to(target, transfer) && !self.workload.invalid_ids.contains(&id) {
                self.acknowledged.insert(id);
            }
        }
        let rate = self.options.tx_rate_per_s.max(1);
        let next_ms = 1_000 + self.submits * 1_000 / rate;
        self.schedule(next_ms.max(self.now_ms + 1), Scheduled::Submit);
    }

    fn sample_metrics(&mut self) {
        for index in 0..self.nodes.len() {
            let traffic = self.options.net_from_traffic_bytes_per_s.map(|capacity| {
                let per_second = self.nodes[index].bytes_sent_since_sample * 1_000 / SAMPLE_INTERVAL_MS;
                per_second * 1_000 / capacity.max(1)
            });
            self.nodes[index].bytes_sent_since_sample = 0;
            let now = self.now_ms;
            let sample = self.nodes[index].metrics.sample(&mut self.metrics_rng, now, traffic);
            if let (Some((cpu, net)), false) = (sample, self.nodes[index].paused) {
                self.step_node(index, Event::MetricsSampled { cpu, net });
            }
        }
        self.schedule(self.now_ms + SAMPLE_INTERVAL_MS, Scheduled::Sample);
    }

    /// Runs the simulation up to virtual time `until_ms`.
    pub fn run_until(&mut self, until_ms: u64) {
        while let Some(entry) = self.queue.first_entry() {
            let (at_ms, _) = *entry.key();
            if at_ms > until_ms {
                break;
            }
            let event = entry.remove();
            self.now_ms = self.now_ms.max(at_ms);
            match event {
                Scheduled::Deliver { from, to, message } => {
                    if !self.nodes[to].up {
                        continue;
                    }
                    let message = Arc::unwrap_or_clone(message);
                    if self.nodes[to].paused {
                        self.nodes[to].held.push((from, message));
                        continue;
                    }
                    let from_id = self.nodes[from].node.node_id();
                    self.step_node(to, Event::MessageReceived { from: from_id, message });
                }
                Scheduled::Tick { node, generation } => {
                    let sim_node = &mut self.nodes[node];
                    if generation != sim_node.tick_generation || !sim_node.up {
                        continue;
                    }
                    sim_node.tick_at_ms = None;
                    if sim_node.paused {
                        continue;
                    }
                    self.step_node(node, Event::Tick);
                }
                Scheduled::Fault(fault) => self.on_fault(fault),
                Scheduled::Submit => self.submit(),
                Scheduled::Sample => self.sample_metrics(),
            }
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    /// Runs to the end and judges the run.
    pub fn run(mut self) -> (SimReport, Vec<String>) {
        self.run_until(self.options.duration_ms);
        let report = self.report();
        (report, self.trace_lines)
    }

    pub fn node(&self, index: usize) -> &Node {
        &self.nodes[index].node
    }

    /// A block node `index` has stored at `height` on its canonical chain.
    pub fn stored_block(&self, index: usize, height: Height) -> Option<Arc<Block>> {
        self.nodes[index].storage.block_at(height)
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn trace_lines(&self) -> &[String] {
        &self.trace_lines
    }

    fn liveness(&self) -> (bool, String) {
        let Some(healed_at_ms) = self
            .healed_at_ms
            .or(if self.options.faults.is_empty() && self.options.scripted.is_empty() { Some(0) } else { None })
        else {
            return (false, "the faults never healed: lengthen the run".into());
        };
        let up = self.nodes.iter().all(|node| node.up && !node.paused);
        let tips: Vec<Height> = self.nodes.iter().map(|node| node.node.tip().height).collect();
        let finals: Vec<Height> = self.nodes.iter().map(|node| node.node.finalized().height).collect();
        let top = tips.iter().copied().max().unwrap_or(0);
        let lowest_final = finals.iter().copied().min().unwrap_or(0);
        let common = self.nodes[0].node.canonical_hash(lowest_final);
        let agree = self.nodes.iter().all(|node| node.node.canonical_hash(lowest_final) == common);
        let converged = tips.iter().all(|tip| top - tip <= 2);
        let lagging = tips.iter().zip(&finals).all(|(tip, final_height)| tip - final_height <= 4);
        let resumed_in_time = match self.finality_resumed_at_ms {
            Some(at_ms) => at_ms - healed_at_ms <= LIVENESS_BOUND_MS,
            None => healed_at_ms == 0 && lowest_final > 0,
        };
        let ok = up && agree && converged && lagging && resumed_in_time;
        let text = format!(
            "after the heal at {healed_at_ms} ms: all up {up}, tips {tips:?}, finals {finals:?}, final block shared {agree}, finality resumed {}",
            self.finality_resumed_at_ms.map_or("no".to_string(), |at| format!("after {} ms (bound {LIVENESS_BOUND_MS} ms)", at - healed_at_ms))
        );
        (ok, text)
    }

    pub fn report(&self) -> SimReport {
        let reference = &self.nodes[0];
        let tip = reference.node.tip().height;
        let mut blocks_by_rank: BTreeMap<u32, u64> = BTreeMap::new();
        let mut intervals = Vec::new();
        let mut committed: Vec<Hash> = Vec::new();
        let mut previous_timestamp = self.genesis.genesis_time_ms;
        for height in 1..=tip {
            let Some(block) = reference.storage.block_at(height) else { break };
            *blocks_by_rank.entry(block.header.rank).or_default() += 1;
            intervals.push(block.header.timestamp_ms.saturating_sub(previous_timestamp));
            previous_timestamp = block.header.timestamp_ms;
            committed.extend(block.transfers.iter().map(transfer_id));
        }
        let latencies: Vec<u64> = committed
            .iter()
            .filter_map(|id| {
                Some(self.first_commit_ms.get(id)?.saturating_sub(*self.workload.submitted_at_ms.get(id)?))
            })
            .collect();
        let (liveness_ok, liveness) = self.liveness();
        let (txs_dropped, lost) = self.acknowledged_outcomes(&committed);
        let mut violations = self.checker.violations.clone();
        violations.extend(lost.iter().map(|id| {
            format!("acknowledged transfer {id} was lost: not committed, pending on no node, dropped by none")
        }));
        SimReport {
            seed: self.options.seed,
            nodes: self.options.nodes,
            virtual_ms: self.now_ms,
            wall_ms: 0,
            height: tip,
            final_height: reference.node.finalized().height,
            blocks_by_rank,
            interval_ms: percentiles(intervals),
            txs_submitted: self.workload.submitted_at_ms.len() as u64,
            invalid_txs_submitted: self.workload.invalid_submitted,
            txs_committed: committed.len() as u64,
            txs_acknowledged: self.acknowledged.len() as u64,
            txs_dropped,
            txs_lost: lost.len() as u64,
            tx_latency_ms: percentiles(latencies),
            reorgs: self.reorgs,
            max_reorg_depth: self.max_reorg_depth,
            timeouts_fired: self.timeouts_fired,
            faults_injected: self.faults_injected,
            safety_violations: self.checker.violation_count + lost.len() as u64,
            violations,
            liveness_ok,
            liveness,
            finality_resumed_after_heal_ms: self
                .finality_resumed_at_ms
                .zip(self.healed_at_ms)
                .map(|(at, healed)| at - healed),
            max_final_gap_ms: self.checker.max_final_gap_ms,
            max_judged_gap_ms: self.checker.max_judged_gap_ms,
            trace_lines: self.trace_count,
            trace_hash: self.trace_hasher.clone().finalize().to_hex().to_string(),
            replay: self.options.replay_command(),
        }
    }
}

impl Simulation {
    /// Every acknowledged transfer's fate: committed on the reference chain (or, for the last
    /// blocks, on the chain of a node the reference has not heard from yet), pending on an up
    /// node, dropped with a reason (counted by reason), or lost (returned).
    fn acknowledged_outcomes(&self, committed: &[Hash]) -> (BTreeMap<String, u64>, Vec<Hash>) {
        let mut committed: BTreeSet<Hash> = committed.iter().copied().collect();
        let final_height = self.nodes[0].node.finalized().height;
        for sim_node in self.nodes.iter().filter(|sim_node| sim_node.up) {
            for height in final_height + 1..=sim_node.node.tip().height {
                let Some(block) = sim_node.storage.block_at(height) else { break };
                committed.extend(block.transfers.iter().map(transfer_id));
            }
        }
        let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
        let mut lost = Vec::new();
        for id in &self.acknowledged {
            if committed.contains(id) {
                continue;
            }
            if self.nodes.iter().any(|sim_node| sim_node.up && sim_node.node.mempool().contains(id)) {
                continue;
            }
            match self.dropped.get(id) {
                Some(reason) => *dropped.entry((*reason).to_string()).or_default() += 1,
                None => lost.push(*id),
            }
        }
        (dropped, lost)
    }
}

fn short(hash: &Hash) -> String {
    hash.to_string()[..8].to_string()
}

/// Runs one simulation to the end.
pub fn run(options: SimOptions) -> (SimReport, Vec<String>) {
    Simulation::new(options).run()
}
