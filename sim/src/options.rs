//! What to simulate: node count, seed, virtual duration, transfer rate, which fault kinds to
//! inject, how many validators are dishonest and how, network and chain parameters. Parsing of
//! the command line's durations, fault lists and behaviour lists lives here too, so the CLI and
//! tests share it.

use crate::faults::ScriptedFault;
use std::collections::BTreeSet;
use tinychain_core::genesis::Parameters;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum FaultKind {
    Crash,
    Pause,
    Partition,
    Loss,
    Dup,
    Reorder,
    Skew,
    Metrics,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::Crash,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Loss,
        FaultKind::Dup,
        FaultKind::Reorder,
        FaultKind::Skew,
        FaultKind::Metrics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Loss => "loss",
            FaultKind::Dup => "dup",
            FaultKind::Reorder => "reorder",
            FaultKind::Skew => "skew",
            FaultKind::Metrics => "metrics",
        }
    }
}

/// What a dishonest validator does (see `adversary`). `All` gives each dishonest validator a
/// mix chosen by the seed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Behaviour {
    LieMetrics,
    Equivocate,
    DoubleVote,
    SurroundVote,
    Withhold,
    Invalid,
    Spam,
    Split,
    All,
}

impl Behaviour {
    /// Every behaviour but `All`.
    pub const EACH: [Behaviour; 8] = [
        Behaviour::LieMetrics,
        Behaviour::Equivocate,
        Behaviour::DoubleVote,
        Behaviour::SurroundVote,
        Behaviour::Withhold,
        Behaviour::Invalid,
        Behaviour::Spam,
        Behaviour::Split,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Behaviour::LieMetrics => "lie-metrics",
            Behaviour::Equivocate => "equivocate",
            Behaviour::DoubleVote => "double-vote",
            Behaviour::SurroundVote => "surround-vote",
            Behaviour::Withhold => "withhold",
            Behaviour::Invalid => "invalid",
            Behaviour::Spam => "spam",
            Behaviour::Split => "split",
            Behaviour::All => "all",
        }
    }
}

/// A comma list of behaviours (`all` alone, or names from `Behaviour::EACH`).
pub fn parse_behaviours(text: &str) -> Result<BTreeSet<Behaviour>, OptionError> {
    let all = Behaviour::EACH.into_iter().chain([Behaviour::All]);
    text.split(',')
        .filter(|name| !name.trim().is_empty())
        .map(|name| {
            all.clone()
                .find(|behaviour| behaviour.name() == name.trim())
                .ok_or_else(|| OptionError::UnknownBehaviour { given: name.trim().to_string() })
        })
        .collect()
}

pub fn behaviours_text(behaviours: &BTreeSet<Behaviour>) -> String {
    behaviours.iter().map(|behaviour| behaviour.name()).collect::<Vec<_>>().join(",")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("unknown behaviour {given:?}: use all, or a comma list of lie-metrics, equivocate, double-vote, surround-vote, withhold, invalid, spam, split")]
    UnknownBehaviour { given: String },
    #[error("unknown fault kind {given:?}: use none, all, or a comma list of crash, pause, partition, loss, dup, reorder, skew, metrics")]
    UnknownFault { given: String },
    #[error("duration {given:?} is not a number followed by ms, s, m or h (e.g. 500ms, 30s, 10m, 1h)")]
    BadDuration { given: String },
    #[error("seed range {given:?} is not A..B with A <= B (inclusive)")]
    BadSeedRange { given: String },
}

/// `none`, `all`, or a comma list of fault kinds.
pub fn parse_faults(text: &str) -> Result<BTreeSet<FaultKind>, OptionError> {
    match text.trim() {
        "none" | "" => Ok(BTreeSet::new()),
        "all" => Ok(FaultKind::ALL.into_iter().collect()),
        list => list
            .split(',')
            .map(|name| {
                FaultKind::ALL
                    .into_iter()
                    .find(|kind| kind.name() == name.trim())
                    .ok_or_else(|| OptionError::UnknownFault { given: name.trim().to_string() })
            })
            .collect(),
    }
}

pub fn faults_text(faults: &BTreeSet<FaultKind>) -> String {
    if faults.is_empty() {
        return "none".into();
    }
    if faults.len() == FaultKind::ALL.len() {
        return "all".into();
    }
    faults.iter().map(|kind| kind.name()).collect::<Vec<_>>().join(",")
}

/// `500ms`, `30s`, `10m`, `1h` (a bare number is seconds).
pub fn parse_duration_ms(text: &str) -> Result<u64, OptionError> {
    let text = text.trim();
    let bad = || OptionError::BadDuration { given: text.to_string() };
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

pub fn duration_text(ms: u64) -> String {
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// `A..B`, inclusive.
pub fn parse_seed_range(text: &str) -> Result<std::ops::RangeInclusive<u64>, OptionError> {
    let bad = || OptionError::BadSeedRange { given: text.to_string() };
    let (low, high) = text.split_once("..").ok_or_else(bad)?;
    let low: u64 = low.trim().parse().map_err(|_| bad())?;
    let high: u64 = high.trim().parse().map_err(|_| bad())?;
    if low > high {
        return Err(bad());
    }
    Ok(low..=high)
}

/// Everything a run depends on. The same options give a byte-identical trace.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub nodes: usize,
    pub seed: u64,
    pub duration_ms: u64,
    /// Valid transfers submitted per virtual second (about 5% more invalid ones on top).
    pub tx_rate_per_s: u64,
    pub faults: BTreeSet<FaultKind>,
    /// Faults are injected only in `[duration / 10, fault_end]`; then everything heals and the
    /// rest of the run is the liveness phase. Defaults to 70% of the duration.
    pub fault_end_ms: Option<u64>,
    /// Faults at fixed times, on top of (or instead of) the random ones: for scenarios.
    pub scripted: Vec<(u64, ScriptedFault)>,
    pub parameters: Parameters,
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Link bandwidth in bytes per millisecond (None: unlimited).
    pub bandwidth_bytes_per_ms: Option<u64>,
    /// Derive each node's network usage from the bytes it sends, against this capacity in
    /// bytes per second, instead of a random profile.
    pub net_from_traffic_bytes_per_s: Option<u64>,
    /// Keep every trace line in memory (for `--trace` and snapshots); the hash is always kept.
    pub keep_trace: bool,
    /// Record the time series the simulation report plots (`series`, `--report`): each core's
    /// heights over time, the faults injected, the reorgs. Recording only reads the simulation,
    /// so the trace and its hash are the same either way; off, nothing is collected.
    pub record_series: bool,
    /// Dishonest validators, chosen from the seed (their own stream: an honest run draws
    /// nothing from it).
    pub byzantine: usize,
    /// What the dishonest validators do (ignored when `byzantine` is 0).
    pub behaviours: BTreeSet<Behaviour>,
}

impl SimOptions {
    pub fn new(nodes: usize, seed: u64, duration_ms: u64) -> SimOptions {
        SimOptions {
            nodes,
            seed,
            duration_ms,
            tx_rate_per_s: 0,
            faults: BTreeSet::new(),
            fault_end_ms: None,
            scripted: Vec::new(),
            parameters: Parameters::default(),
            latency_ms: 20,
            jitter_ms: 10,
            bandwidth_bytes_per_ms: None,
            net_from_traffic_bytes_per_s: None,
            keep_trace: false,
            record_series: false,
            byzantine: 0,
            behaviours: BTreeSet::new(),
        }
    }

    /// A third or more of the validators are dishonest: safety may be lost (conflicting final
    /// blocks are counted, not failed), but never without proof naming a third of them.
    pub fn is_beyond_fault_tolerance(&self) -> bool {
        3 * self.byzantine >= self.nodes && self.byzantine > 0
    }

    pub fn fault_window_ms(&self) -> (u64, u64) {
        let end = self.fault_end_ms.unwrap_or(self.duration_ms / 10 * 7);
        (self.duration_ms / 10, end.min(self.duration_ms))
    }

    /// The command line that reproduces this run.
    pub fn replay_command(&self) -> String {
        let mut command = format!(
            "tinychain sim --nodes {} --seed {} --duration {} --faults {}",
            self.nodes,
            self.seed,
            duration_text(self.duration_ms),
            faults_text(&self.faults)
        );
        if self.tx_rate_per_s > 0 {
            command.push_str(&format!(" --tx-rate {}", self.tx_rate_per_s));
        }
        if (self.latency_ms, self.jitter_ms) != (20, 10) {
            command.push_str(&format!(" --latency-ms {} --jitter-ms {}", self.latency_ms, self.jitter_ms));
        }
        if let Some(bandwidth) = self.bandwidth_bytes_per_ms {
            command.push_str(&format!(" --bandwidth {bandwidth}"));
        }
        if let Some(capacity) = self.net_from_traffic_bytes_per_s {
            command.push_str(&format!(" --net-from-traffic {capacity}"));
        }
        if self.byzantine > 0 {
            command.push_str(&format!(
                " --byzantine {} --behaviour {}",
                self.byzantine,
                behaviours_text(&self.behaviours)
            ));
        }
        let cap = self.parameters.production_cap_fair_shares;
        if cap != Parameters::default().production_cap_fair_shares {
            command.push_str(&format!(" --production-cap {cap}"));
        }
        command
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_faults_durations_and_seed_ranges() {
        assert_eq!(parse_faults("none").map(|set| set.len()), Ok(0));
        assert_eq!(parse_faults("all").map(|set| set.len()), Ok(8));
        assert_eq!(
            parse_faults("crash, loss").map(|set| set.into_iter().collect::<Vec<_>>()),
            Ok(vec![FaultKind::Crash, FaultKind::Loss])
        );
        assert!(matches!(parse_faults("crash,nope"), Err(OptionError::UnknownFault { .. })));
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("30"), Ok(30_000));
        assert!(parse_duration_ms("ten minutes").is_err());
        assert_eq!(parse_seed_range("3..7"), Ok(3..=7));
        assert!(parse_seed_range("7..3").is_err());
        assert_eq!(duration_text(600_000), "10m");
        assert_eq!(
            parse_behaviours("equivocate, split").map(|set| set.into_iter().collect::<Vec<_>>()),
            Ok(vec![Behaviour::Equivocate, Behaviour::Split])
        );
        assert_eq!(parse_behaviours("all").map(|set| behaviours_text(&set)), Ok("all".to_string()));
        assert!(matches!(parse_behaviours("evil"), Err(OptionError::UnknownBehaviour { .. })));
        assert_eq!(faults_text(&parse_faults("all").unwrap_or_default()), "all");
    }
}
