//! What `GET /metrics` serves: the node's Prometheus registry (`prometheus-client`), every
//! metric's name, type, help text and buckets, and the figures behind them. `docs/metrics.md`
//! documents every metric, and the old names each replaces.
//!
//! Three kinds of figures, written three ways:
//!
//! - **Events**, observed as they happen into registered histograms and counters: block
//!   intervals, transfer latencies (`TransferClock` keeps when this node first saw each
//!   transfer), RPC call durations by method (from the RPC server's tasks), core step and
//!   storage commit durations, missed turns (from the driver).
//! - **State**, taken at scrape time: the driver answers `query::Request::Metrics` by handing
//!   `Telemetry::set_figures` one consistent `Figures` (heights, mempool, election, jail, peers,
//!   the counters the driver keeps in `query::LiveInfo`), taken inside its loop like any query.
//!   A collector writes them at the next encode, so `/metrics` shows the node as of one moment.
//! - **Outside counters**, read when encoded: each peer's bytes and last-seen time from the
//!   transport (`tinychain_net::link::TrafficTable`), and the process figures (resident memory,
//!   CPU seconds, open file descriptors, ...) from sysinfo.
//!
//! The text is Prometheus' text format 0.0.4 (`prometheus_client::encoding::prometheus_text`),
//! which `promtool check metrics` reads: base units (`_seconds`, `_bytes`, ratios from 0 to
//! 1), `_total` on every counter, HELP on every metric.
//!
//! Nothing here decides anything for consensus: floats and hash maps are fine.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tinychain_core::types::{Hash, Height, NodeId};
use tinychain_net::link::TrafficTable;

/// The content type of what `Telemetry::encode` writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Block intervals: a fast test genesis makes blocks every 100 ms, the default every 2 s, and a
/// producer timeout can stretch one to tens of seconds.
const BLOCK_INTERVAL_BUCKETS_SECONDS: [f64; 12] = [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0, 80.0];
/// From first sight to committed (one or two block intervals when all is well) and to final
/// (a few more).
const TRANSFER_LATENCY_BUCKETS_SECONDS: [f64; 13] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 15.0, 30.0, 60.0, 120.0];
/// An RPC call: tens of microseconds for a status, milliseconds for a big block, up to the
/// server's 5 s call timeout.
const RPC_DURATION_BUCKETS_SECONDS: [f64; 13] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];
/// One event in the core: microseconds for a tick, hundreds of milliseconds for a block of
/// 10,000 transfers with cold signatures.
const CORE_STEP_BUCKETS_SECONDS: [f64; 13] =
    [0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];
/// One redb write transaction with an fsync: milliseconds, up to about half a second for a
/// full block at a million accounts (ARCHITECTURE "Known limits").
const STORAGE_COMMIT_BUCKETS_SECONDS: [f64; 12] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Every reason a pending transfer can be dropped (`DropReason::kind`): their counters are
/// written from zero, so a rate over them exists before the first drop.
pub const DROP_REASONS: [&str; 7] =
    ["nonce_taken", "nonce_used", "replaced", "unaffordable", "evicted", "refused_after_restart", "not_readmitted"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ValidatorLabel {
    validator: String,
}

fn histogram_family_of_rpc() -> Histogram {
    Histogram::new(RPC_DURATION_BUCKETS_SECONDS)
}

/// One validator's election and jail figures for the block after the tip.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ValidatorFigures {
    /// Its genesis name (the `validator` label).
    pub name: String,
    /// The score of its latest report committed on this chain; `None` without one.
    pub committed_score: Option<u16>,
    /// Its rank for the next block (0 produces first).
    pub rank: u32,
    pub is_jailed: bool,
    /// The last height of its jail, `None` if it was never jailed.
    pub jailed_until: Option<Height>,
    /// Blocks it made among the last `production_window_blocks`.
    pub produced_in_window: u64,
}

/// One genesis validator other than this node, as a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerFigures {
    pub id: NodeId,
    /// Its genesis name (the `peer` label).
    pub name: String,
    pub is_connected: bool,
}

/// The node's state at one moment, as the driver sees it (see the module docs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    pub tip_height: Height,
    pub justified_height: Height,
    pub final_height: Height,
    /// Between the last two blocks this node committed, `None` before the second since start.
    pub last_block_interval: Option<Duration>,
    pub blocks_committed: u64,
    pub timeouts_fired: u64,
    pub peers_connected: usize,
    pub mempool_transfers: usize,
    pub is_mempool_synced: bool,
    pub journal_transfers: usize,
    /// Dropped pending transfers since start, by `DropReason::kind`.
    pub transfers_dropped: BTreeMap<&'static str, u64>,
    /// This node's latest measurement: (score, CPU per mille, network per mille); `None`
    /// before the first.
    pub measured: Option<(u16, u16, u16)>,
    pub jailed_validators: usize,
    pub evidence_held: usize,
    pub evidence_pending: usize,
    pub evidence_committed: u64,
    /// In genesis order.
    pub validators: Vec<ValidatorFigures>,
    /// Every other genesis validator, in genesis order.
    pub peers: Vec<PeerFigures>,
}

/// The registry and the handles the node observes into. Shared (`Arc`) by the driver, which
/// owns the state figures, and the RPC server, which times calls and encodes the text.
pub struct Telemetry {
    registry: Registry,
    block_interval_seconds: Histogram,
    transfer_latency_to_committed_seconds: Histogram,
    transfer_latency_to_final_seconds: Histogram,
    rpc_request_duration_seconds: Family<MethodLabel, Histogram, fn() -> Histogram>,
    core_step_duration_seconds: Histogram,
    storage_commit_duration_seconds: Histogram,
    validator_missed_turns: Family<ValidatorLabel, Counter>,
    state: Arc<StateCollector>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

impl Telemetry {
    /// A registry with every metric. `traffic`: the transport's per-peer counters (`None`:
    /// no per-peer bytes, e.g. an RPC server tested alone).
    pub fn new(traffic: Option<TrafficTable>) -> Telemetry {
        // `register` ends each help text with a full stop itself.
        let mut registry = Registry::default();
        let block_interval_seconds = Histogram::new(BLOCK_INTERVAL_BUCKETS_SECONDS);
        registry.register(
            "tinychain_block_interval_seconds",
            "Wall-clock time between two blocks this node committed one after the other (a sync commits several at once)",
            block_interval_seconds.clone(),
        );
        let transfer_latency_to_committed_seconds = Histogram::new(TRANSFER_LATENCY_BUCKETS_SECONDS);
        registry.register(
            "tinychain_transfer_latency_to_committed_seconds",
            "From the first time this node saw a transfer (submitted to it or received from a peer) to the first time a block it committed included it",
            transfer_latency_to_committed_seconds.clone(),
        );
        let transfer_latency_to_final_seconds = Histogram::new(TRANSFER_LATENCY_BUCKETS_SECONDS);
        registry.register(
            "tinychain_transfer_latency_to_final_seconds",
            "From the first time this node saw a transfer (submitted to it or received from a peer) to the block including it becoming final on this node",
            transfer_latency_to_final_seconds.clone(),
        );
        let rpc_request_duration_seconds: Family<MethodLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(histogram_family_of_rpc);
        registry.register(
            "tinychain_rpc_request_duration_seconds",
            "Time the JSON-RPC server took to answer one call, by method (busy and failed calls included)",
            rpc_request_duration_seconds.clone(),
        );
        let core_step_duration_seconds = Histogram::new(CORE_STEP_BUCKETS_SECONDS);
        registry.register(
            "tinychain_core_step_duration_seconds",
            "Time the core took to handle one event (a message, a tick, a submitted transfer, ...) and the driver to carry out its actions, storage reads and writes excluded",
            core_step_duration_seconds.clone(),
        );
        let storage_commit_duration_seconds = Histogram::new(STORAGE_COMMIT_BUCKETS_SECONDS);
        registry.register(
            "tinychain_storage_commit_duration_seconds",
            "Time one commit of blocks took to write to the database (one redb write transaction, fsync included)",
            storage_commit_duration_seconds.clone(),
        );
        let validator_missed_turns = Family::<ValidatorLabel, Counter>::default();
        registry.register(
            "tinychain_validator_missed_turns",
            "Turns the validator missed in blocks this node committed since start: a block came from a lower rank while it ranked ahead",
            validator_missed_turns.clone(),
        );
        let state = Arc::new(StateCollector { figures: Mutex::new(Figures::default()), traffic });
        registry.register_collector(Box::new(Arc::clone(&state)));
        registry.register_collector(Box::new(ProcessCollector::new()));
        Telemetry {
            registry,
            block_interval_seconds,
            transfer_latency_to_committed_seconds,
            transfer_latency_to_final_seconds,
            rpc_request_duration_seconds,
            core_step_duration_seconds,
            storage_commit_duration_seconds,
            validator_missed_turns,
            state,
        }
    }

    pub fn observe_block_interval(&self, interval: Duration) {
        self.block_interval_seconds.observe(interval.as_secs_f64());
    }

    pub fn observe_transfer_committed(&self, latency: Duration) {
        self.transfer_latency_to_committed_seconds.observe(latency.as_secs_f64());
    }

    pub fn observe_transfer_final(&self, latency: Duration) {
        self.transfer_latency_to_final_seconds.observe(latency.as_secs_f64());
    }

    /// One JSON-RPC call answered (`method` is a `tinychain_rpc::Method` name).
    pub fn observe_rpc_call(&self, method: &'static str, duration: Duration) {
        self.rpc_request_duration_seconds.get_or_create(&MethodLabel { method }).observe(duration.as_secs_f64());
    }

    pub fn observe_core_step(&self, duration: Duration) {
        self.core_step_duration_seconds.observe(duration.as_secs_f64());
    }

    pub fn observe_storage_commit(&self, duration: Duration) {
        self.storage_commit_duration_seconds.observe(duration.as_secs_f64());
    }

    /// The validator ranked ahead of the producer of a block this node committed.
    pub fn count_missed_turn(&self, validator: &str) {
        self.validator_missed_turns.get_or_create(&ValidatorLabel { validator: validator.to_string() }).inc();
    }

    /// The state the next encodes show (see the module docs).
    pub fn set_figures(&self, figures: Figures) {
        // Every validator's missed-turn counter exists from zero.
        for validator in &figures.validators {
            drop(self.validator_missed_turns.get_or_create(&ValidatorLabel { validator: validator.name.clone() }));
        }
        *lock(&self.state.figures) = figures;
    }

    /// The text `GET /metrics` serves.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail, and every metric's encoder writes only to it.
        if let Err(error) = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }
}

/// The figures are plain data: a panic elsewhere cannot leave them half-written in a way that
/// matters, so a poisoned lock is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes one metric without labels.
fn write_one(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(value: impl Into<f64>) -> ConstGauge<f64> {
    ConstGauge::new(value.into())
}

fn gauge_count(value: usize) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// A height or any other whole number as a gauge.
fn gauge_whole(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

/// Writes one metric with one series per label value; nothing when there are none.
fn write_family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    label: &str,
    series: &[(&str, M)],
) -> Result<(), std::fmt::Error> {
    if series.is_empty() {
        return Ok(());
    }
    let mut metric_encoder = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (value, metric) in series {
        let labels = [(label, *value)];
        metric.encode(metric_encoder.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One per-validator figure: a validator's value, `None` for no sample.
type ValidatorFigure = fn(&ValidatorFigures) -> Option<u64>;

/// The driver's `Figures` and the transport's per-peer counters, written at each encode.
#[derive(Debug)]
struct StateCollector {
    figures: Mutex<Figures>,
    traffic: Option<TrafficTable>,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = lock(&self.figures).clone();
        let encoder = &mut encoder;
        write_one(encoder, "tinychain_tip_height", "Height of the node's tip.", &gauge_whole(figures.tip_height))?;
        write_one(
            encoder,
            "tinychain_justified_height",
            "Height of the latest justified block on the node's chain.",
            &gauge_whole(figures.justified_height),
        )?;
        write_one(
            encoder,
            "tinychain_final_height",
            "Height of the latest final block.",
            &gauge_whole(figures.final_height),
        )?;
        if let Some(interval) = figures.last_block_interval {
            write_one(
                encoder,
                "tinychain_last_block_interval_seconds",
                "Wall-clock time between the last two blocks this node committed.",
                &gauge(interval.as_secs_f64()),
            )?;
        }
        write_one(
            encoder,
            "tinychain_blocks_committed",
            "Blocks committed since start.",
            &ConstCounter::new(figures.blocks_committed),
        )?;
        write_one(
            encoder,
            "tinychain_timeouts_fired",
            "Blocks committed since start at rank > 0 (a producer ahead missed its turn).",
            &ConstCounter::new(figures.timeouts_fired),
        )?;
        write_one(
            encoder,
            "tinychain_peers_connected",
            "Peers with an authenticated link.",
            &gauge_count(figures.peers_connected),
        )?;
        write_one(
            encoder,
            "tinychain_mempool_transfers",
            "Transfers waiting in the mempool.",
            &gauge_count(figures.mempool_transfers),
        )?;
        write_one(
            encoder,
            "tinychain_mempool_synced",
            "1 once the first mempool sync since start is over (pending_nonce is answered), else 0.",
            &gauge_count(usize::from(figures.is_mempool_synced)),
        )?;
        write_one(
            encoder,
            "tinychain_journal_transfers",
            "Accepted transfers held in the pending-transfer journal.",
            &gauge_count(figures.journal_transfers),
        )?;
        let mut dropped: BTreeMap<&str, u64> = DROP_REASONS.iter().map(|reason| (*reason, 0)).collect();
        dropped.extend(figures.transfers_dropped.iter().map(|(reason, count)| (*reason, *count)));
        let dropped: Vec<(&str, ConstCounter)> =
            dropped.into_iter().map(|(reason, count)| (reason, ConstCounter::new(count))).collect();
        write_family(
            encoder,
            "tinychain_transfers_dropped",
            "Pending transfers dropped since start, by reason (their nonce taken, replaced, evicted, ...).",
            MetricType::Counter,
            "reason",
            &dropped,
        )?;
        if let Some((score, cpu_permille, net_permille)) = figures.measured {
            write_one(
                encoder,
                "tinychain_score",
                "This node's latest metric score (lower produces first).",
                &gauge_whole(u64::from(score)),
            )?;
            write_one(
                encoder,
                "tinychain_cpu_load_ratio",
                "CPU load of the last measuring window, from 0 to 1 (the figure this node reports, in per mille, divided by 1000).",
                &gauge(f64::from(cpu_permille) / 1000.0),
            )?;
            write_one(
                encoder,
                "tinychain_network_load_ratio",
                "Network load of the last measuring window, from 0 to 1 of the configured link capacity (the reported per mille divided by 1000).",
                &gauge(f64::from(net_permille) / 1000.0),
            )?;
        }
        write_one(
            encoder,
            "tinychain_jailed_validators",
            "Validators jailed (ranked last) by committed evidence for the next block.",
            &gauge_count(figures.jailed_validators),
        )?;
        write_one(
            encoder,
            "tinychain_evidence_held",
            "Verified evidence of offences this node holds, committed or not.",
            &gauge_count(figures.evidence_held),
        )?;
        write_one(
            encoder,
            "tinychain_evidence_pending",
            "Held evidence not yet committed on this node's chain.",
            &gauge_count(figures.evidence_pending),
        )?;
        write_one(
            encoder,
            "tinychain_evidence_committed",
            "Pieces of evidence committed by blocks this node made canonical since start.",
            &ConstCounter::new(figures.evidence_committed),
        )?;
        self.encode_validators(encoder, &figures.validators)?;
        self.encode_peers(encoder, &figures.peers)
    }
}

impl StateCollector {
    fn encode_validators(
        &self,
        encoder: &mut DescriptorEncoder<'_>,
        validators: &[ValidatorFigures],
    ) -> Result<(), std::fmt::Error> {
        let series = |value: ValidatorFigure| -> Vec<(&str, ConstGauge<i64>)> {
            validators
                .iter()
                .filter_map(|validator| Some((validator.name.as_str(), gauge_whole(value(validator)?))))
                .collect()
        };
        let gauges: [(&str, &str, ValidatorFigure); 5] = [
            (
                "tinychain_validator_committed_score",
                "Score of the validator's latest report committed on this node's chain (lower produces first); absent without one.",
                |validator| validator.committed_score.map(u64::from),
            ),
            (
                "tinychain_validator_rank",
                "The validator's rank for the block after the tip (0 produces first; demoted and jailed validators rank last).",
                |validator| Some(u64::from(validator.rank)),
            ),
            (
                "tinychain_validator_jailed",
                "1 if committed evidence jails the validator for the next block, else 0.",
                |validator| Some(u64::from(validator.is_jailed)),
            ),
            (
                "tinychain_validator_jailed_until_height",
                "The last height of the validator's jail (it may have ended), 0 if it was never jailed.",
                |validator| Some(validator.jailed_until.unwrap_or(0)),
            ),
            (
                "tinychain_validator_produced_in_window",
                "Blocks the validator made among the last production_window_blocks (the production-share cap counts these).",
                |validator| Some(validator.produced_in_window),
            ),
        ];
        for (name, help, value) in gauges {
            write_family(encoder, name, help, MetricType::Gauge, "validator", &series(value))?;
        }
        Ok(())
    }

    fn encode_peers(&self, encoder: &mut DescriptorEncoder<'_>, peers: &[PeerFigures]) -> Result<(), std::fmt::Error> {
        let connected: Vec<(&str, ConstGauge<i64>)> =
            peers.iter().map(|peer| (peer.name.as_str(), ConstGauge::new(i64::from(peer.is_connected)))).collect();
        write_family(
            encoder,
            "tinychain_peer_connected",
            "1 while the node has an authenticated link with this validator, else 0.",
            MetricType::Gauge,
            "peer",
            &connected,
        )?;
        let Some(traffic) = &self.traffic else { return Ok(()) };
        let traffic: HashMap<NodeId, _> = traffic.figures().into_iter().collect();
        let of = |peer: &PeerFigures| traffic.get(&peer.id).copied().unwrap_or_default();
        let received: Vec<(&str, ConstCounter)> =
            peers.iter().map(|peer| (peer.name.as_str(), ConstCounter::new(of(peer).bytes_received))).collect();
        write_family(
            encoder,
            "tinychain_peer_received_bytes",
            "Bytes received from the peer over its links since start (frames after TLS).",
            MetricType::Counter,
            "peer",
            &received,
        )?;
        let sent: Vec<(&str, ConstCounter)> =
            peers.iter().map(|peer| (peer.name.as_str(), ConstCounter::new(of(peer).bytes_sent))).collect();
        write_family(
            encoder,
            "tinychain_peer_sent_bytes",
            "Bytes sent to the peer over its links since start (frames before TLS).",
            MetricType::Counter,
            "peer",
            &sent,
        )?;
        let last_seen: Vec<(&str, ConstGauge<f64>)> = peers
            .iter()
            .filter_map(|peer| {
                let unix_ms = of(peer).last_received_unix_ms?;
                Some((peer.name.as_str(), gauge(unix_ms as f64 / 1000.0)))
            })
            .collect();
        write_family(
            encoder,
            "tinychain_peer_last_seen_timestamp_seconds",
            "When the node last received anything from the peer (unix time in seconds); absent if it never did.",
            MetricType::Gauge,
            "peer",
            &last_seen,
        )
    }
}

/// The standard process metrics (the names every Prometheus client library uses), read from
/// sysinfo at each encode.
#[derive(Debug)]
struct ProcessCollector {
    /// `None` where sysinfo cannot read this process: the process metrics are then absent.
    system: Mutex<Option<(sysinfo::System, sysinfo::Pid)>>,
}

impl ProcessCollector {
    fn new() -> ProcessCollector {
        let system = match (sysinfo::System::new(), sysinfo::get_current_pid()) {
            (Ok(system), Ok(pid)) => Some((system, pid)),
            (Err(error), _) | (_, Err(error)) => {
                tracing::warn!(%error, "cannot read this process's figures: /metrics goes without process_* metrics");
                None
            }
        };
        ProcessCollector { system: Mutex::new(system) }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut system = lock(&self.system);
        let Some((system, pid)) = system.as_mut() else { return Ok(()) };
        let refresh = sysinfo::ProcessRefreshKind::nothing().with_memory().with_cpu();
        system.refresh_processes_specifics(sysinfo::ProcessesToUpdate::Some(&[*pid]), false, refresh);
        let Some(process) = system.process(*pid) else { return Ok(()) };
        let encoder = &mut encoder;
        write_one(
            encoder,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            &gauge(process.memory() as f64),
        )?;
        write_one(
            encoder,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            &gauge(process.virtual_memory() as f64),
        )?;
        write_one(
            encoder,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            &ConstCounter::new(process.accumulated_cpu_time() as f64 / 1000.0),
        )?;
        write_one(
            encoder,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            &gauge(process.start_time() as f64),
        )?;
        if let Some(open) = process.open_files() {
            write_one(encoder, "process_open_fds", "Number of open file descriptors.", &gauge_count(open))?;
        }
        if let Some(max) = process.open_files_limit() {
            write_one(encoder, "process_max_fds", "Maximum number of open file descriptors.", &gauge_count(max))?;
        }
        Ok(())
    }
}

/// How many transfers `TransferClock` follows at most, seen and not yet final; more are not
/// timed (a flood must not grow memory without bound).
pub const TIMED_TRANSFERS_MAX: usize = 200_000;
/// A transfer seen this long ago and still not committed is forgotten by `prune`.
pub const TIMED_TRANSFER_AGE_MAX: Duration = Duration::from_secs(600);

/// When this node first saw each transfer (submitted to it, or received from a peer), so the
/// driver can time it to committed and to final. Plain data, times passed in.
#[derive(Debug, Default)]
pub struct TransferClock {
    /// Seen and not committed on the canonical chain now: when first seen, and whether its
    /// latency to committed was already observed (a reorganisation can abandon its block).
    waiting: HashMap<Hash, (Instant, bool)>,
    /// Committed above the final block, by height: id and when first seen.
    committed: BTreeMap<Height, Vec<(Hash, Instant)>>,
    committed_count: usize,
}

impl TransferClock {
    /// The transfer was seen at `now`; only its first sight counts.
    pub fn seen(&mut self, id: Hash, now: Instant) {
        if self.waiting.len() + self.committed_count >= TIMED_TRANSFERS_MAX {
            return;
        }
        self.waiting.entry(id).or_insert((now, false));
    }

    /// The transfer will never be committed (dropped): stop timing it.
    pub fn forget(&mut self, id: &Hash) {
        self.waiting.remove(id);
    }

    /// A block at `height` became canonical with these transfers: each seen one not timed to
    /// committed yet gives its latency to `observe`.
    pub fn applied(
        &mut self,
        height: Height,
        ids: impl IntoIterator<Item = Hash>,
        now: Instant,
        mut observe: impl FnMut(Duration),
    ) {
        for id in ids {
            let Some((seen_at, was_observed)) = self.waiting.remove(&id) else { continue };
            if !was_observed {
                observe(now.saturating_duration_since(seen_at));
            }
            self.committed.entry(height).or_default().push((id, seen_at));
            self.committed_count += 1;
        }
    }

    /// The canonical block at `height` was rolled back: its transfers wait for a block again
    /// (their latency to committed is not observed twice).
    pub fn rolled_back(&mut self, height: Height) {
        for (id, seen_at) in self.committed.remove(&height).unwrap_or_default() {
            self.committed_count -= 1;
            self.waiting.insert(id, (seen_at, true));
        }
    }

    /// Everything at or below `final_height` is final: each gives its latency to `observe`.
    pub fn finalized(&mut self, final_height: Height, now: Instant, mut observe: impl FnMut(Duration)) {
        while let Some(entry) = self.committed.first_entry() {
            if *entry.key() > final_height {
                break;
            }
            for (_, seen_at) in entry.remove() {
                self.committed_count -= 1;
                observe(now.saturating_duration_since(seen_at));
            }
        }
    }

    /// Forgets transfers seen more than `TIMED_TRANSFER_AGE_MAX` ago and still waiting (seen
    /// again after their block, or dropped without a word to this node).
    pub fn prune(&mut self, now: Instant) {
        self.waiting.retain(|_, (seen_at, _)| now.saturating_duration_since(*seen_at) <= TIMED_TRANSFER_AGE_MAX);
    }

    /// Transfers followed now (seen and not final).
    pub fn len(&self) -> usize {
        self.waiting.len() + self.committed_count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> Hash {
        Hash([byte; 32])
    }

    #[test]
    fn a_transfer_is_timed_from_first_sight_to_committed_and_to_final_once() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut clock = TransferClock::default();
        clock.seen(id(1), at(0));
        clock.seen(id(1), at(50)); // gossip of the same transfer: not a first sight
        clock.seen(id(2), at(100));
        let mut committed = Vec::new();
        clock.applied(5, [id(1), id(3)], at(300), |latency| committed.push(latency));
        assert_eq!(committed, [Duration::from_millis(300)], "the unseen transfer 3 is not timed");
        // A reorganisation abandons block 5; transfer 1 comes back in block 6.
        clock.rolled_back(5);
        clock.applied(6, [id(1), id(2)], at(700), |latency| committed.push(latency));
        assert_eq!(committed, [Duration::from_millis(300), Duration::from_millis(600)], "1 is not timed twice");
        let mut finals = Vec::new();
        clock.finalized(5, at(900), |latency| finals.push(latency));
        assert!(finals.is_empty(), "nothing is committed at or below 5 any more");
        clock.finalized(6, at(1_000), |latency| finals.push(latency));
        finals.sort();
        assert_eq!(finals, [Duration::from_millis(900), Duration::from_millis(1_000)]);
        assert!(clock.is_empty());
    }

    #[test]
    fn dropped_and_stale_transfers_are_forgotten_and_the_clock_is_bounded() {
        let start = Instant::now();
        let mut clock = TransferClock::default();
        clock.seen(id(1), start);
        clock.seen(id(2), start + Duration::from_secs(1));
        clock.forget(&id(1));
        assert_eq!(clock.len(), 1);
        clock.prune(start + TIMED_TRANSFER_AGE_MAX + Duration::from_secs(2));
        assert!(clock.is_empty());
        for index in 0..TIMED_TRANSFERS_MAX + 10 {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(index as u64).to_le_bytes());
            clock.seen(Hash(bytes), start);
        }
        assert_eq!(clock.len(), TIMED_TRANSFERS_MAX);
    }

    fn sample_figures() -> Figures {
        Figures {
            tip_height: 12,
            justified_height: 11,
            final_height: 10,
            last_block_interval: Some(Duration::from_millis(2_001)),
            blocks_committed: 12,
            timeouts_fired: 1,
            peers_connected: 1,
            mempool_transfers: 3,
            is_mempool_synced: true,
            journal_transfers: 4,
            transfers_dropped: BTreeMap::from([("replaced", 2)]),
            measured: Some((250, 300, 200)),
            jailed_validators: 1,
            evidence_held: 2,
            evidence_pending: 1,
            evidence_committed: 1,
            validators: vec![
                ValidatorFigures {
                    name: "node0".into(),
                    committed_score: Some(250),
                    rank: 0,
                    is_jailed: false,
                    jailed_until: None,
                    produced_in_window: 7,
                },
                ValidatorFigures {
                    name: "we\"ird\\na\nme".into(),
                    committed_score: None,
                    rank: 1,
                    is_jailed: true,
                    jailed_until: Some(40),
                    produced_in_window: 0,
                },
            ],
            peers: vec![
                PeerFigures { id: tinychain_core::types::Address([1; 32]), name: "node1".into(), is_connected: true },
                PeerFigures { id: tinychain_core::types::Address([2; 32]), name: "node2".into(), is_connected: false },
            ],
        }
    }

    /// The samples of `text` (series → value), checking each line's shape on the way.
    fn samples(text: &str) -> BTreeMap<String, f64> {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
                continue;
            }
            assert!(!line.starts_with('#'), "only HELP and TYPE comments: {line}");
            let (series, value) = line.rsplit_once(' ').unwrap();
            samples.insert(series.to_string(), value.parse::<f64>().unwrap());
        }
        samples
    }

    #[test]
    fn the_figures_are_written_in_base_units_with_help_and_labels() {
        let telemetry = Telemetry::new(Some(TrafficTable::default()));
        telemetry.set_figures(sample_figures());
        telemetry.observe_block_interval(Duration::from_millis(150));
        telemetry.observe_rpc_call("status", Duration::from_micros(300));
        telemetry.count_missed_turn("node0");
        let text = telemetry.encode();
        let samples = samples(&text);
        let expect = |series: &str, value: f64| {
            assert_eq!(samples.get(series).copied(), Some(value), "{series} in\n{text}");
        };
        expect("tinychain_tip_height", 12.0);
        expect("tinychain_justified_height", 11.0);
        expect("tinychain_final_height", 10.0);
        expect("tinychain_last_block_interval_seconds", 2.001);
        expect("tinychain_blocks_committed_total", 12.0);
        expect("tinychain_timeouts_fired_total", 1.0);
        expect("tinychain_cpu_load_ratio", 0.3);
        expect("tinychain_network_load_ratio", 0.2);
        expect("tinychain_transfers_dropped_total{reason=\"replaced\"}", 2.0);
        expect("tinychain_transfers_dropped_total{reason=\"evicted\"}", 0.0);
        expect("tinychain_validator_rank{validator=\"node0\"}", 0.0);
        expect("tinychain_validator_committed_score{validator=\"node0\"}", 250.0);
        expect(r#"tinychain_validator_jailed{validator="we\"ird\\na\nme"}"#, 1.0);
        expect(r#"tinychain_validator_jailed_until_height{validator="we\"ird\\na\nme"}"#, 40.0);
        expect(r#"tinychain_validator_missed_turns_total{validator="we\"ird\\na\nme"}"#, 0.0);
        expect("tinychain_validator_missed_turns_total{validator=\"node0\"}", 1.0);
        expect("tinychain_peer_connected{peer=\"node1\"}", 1.0);
        expect("tinychain_peer_connected{peer=\"node2\"}", 0.0);
        expect("tinychain_peer_received_bytes_total{peer=\"node2\"}", 0.0);
        expect("tinychain_block_interval_seconds_count", 1.0);
        expect("tinychain_block_interval_seconds_bucket{le=\"0.2\"}", 1.0);
        expect("tinychain_block_interval_seconds_bucket{le=\"0.1\"}", 0.0);
        expect("tinychain_rpc_request_duration_seconds_count{method=\"status\"}", 1.0);
        assert!(
            !samples.keys().any(|series| series.starts_with("tinychain_validator_committed_score{validator=\"we")),
            "no committed report, no score:\n{text}"
        );
        assert!(
            !samples.contains_key("tinychain_peer_last_seen_timestamp_seconds{peer=\"node1\"}"),
            "never heard from"
        );
        assert!(!text.lines().any(|line| line.starts_with("# HELP ") && line.ends_with("..")), "{text}");
        // Every metric has its help text.
        for line in text.lines().filter(|line| line.starts_with("# TYPE ")) {
            let name = line.split(' ').nth(2).unwrap();
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has no help:\n{text}");
        }
        if cfg!(target_os = "linux") {
            assert!(samples.get("process_resident_memory_bytes").is_some_and(|bytes| *bytes > 0.0), "{text}");
            assert!(samples.contains_key("process_cpu_seconds_total"), "{text}");
            assert!(samples.get("process_open_fds").is_some_and(|fds| *fds > 0.0), "{text}");
        }
    }
}
