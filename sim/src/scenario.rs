//! Scenario files: a simulation written down as TOML, with faults at set times and the
//! expectations to check afterwards, so a user can keep the case they care about and run it
//! again (`tinychain sim --scenario FILE.toml`). The format is documented in
//! `docs/scenarios.md`, with examples in `docs/scenarios/`.
//!
//! A scenario is turned into plain `SimOptions` (its faults become `SimOptions::scripted`), run
//! by the same engine as any simulation, and then judged by `check` against the `SimReport`.
//! Every fault ends with `heal-all` (at `heal_all_at`, by default the time of the last fault):
//! from then on the usual liveness rule applies, and the report's `passed()` is always one of
//! the expectations.

use crate::engine::SimReport;
use crate::faults::FaultEvent;
use crate::metrics::MetricFault;
use crate::options::{duration_text, parse_duration_ms, SimOptions};
use serde::Deserialize;
use std::collections::BTreeSet;

/// The most validators a scenario may name (as `tinychain sim --nodes`).
pub const SCENARIO_NODES_MAX: usize = 1024;

/// A scenario file, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// What the scenario is about, for people (printed with the result).
    #[serde(default)]
    pub description: String,
    pub nodes: usize,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Virtual time to simulate: "500ms", "30s", "10m", "1h".
    pub duration: String,
    /// Valid transfers submitted per virtual second.
    #[serde(default)]
    pub tx_rate: u64,
    /// Chain parameters, when not the defaults.
    #[serde(default)]
    pub block_interval_ms: Option<u64>,
    #[serde(default)]
    pub producer_timeout_ms: Option<u64>,
    /// The production-share cap's window and cap (genesis `production_window_blocks` and
    /// `production_cap_fair_shares`), when not the defaults.
    #[serde(default)]
    pub production_window_blocks: Option<u64>,
    #[serde(default)]
    pub production_cap_fair_shares: Option<u64>,
    /// When every fault ends (`heal-all`); by default the time of the last fault.
    #[serde(default)]
    pub heal_all_at: Option<String>,
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultLine>,
    #[serde(default)]
    pub expect: Expectations,
}

fn default_seed() -> u64 {
    1
}

/// One `[[fault]]`: a time and an event in the trace's own words (see `parse_event`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultLine {
    pub at: String,
    pub event: String,
}

/// `[expect]`: what must hold after the run. Safety and liveness (the report's `passed`) are
/// always checked; each field set here adds a check.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Blocks produced at rank 1 or later (after a timeout): at most this many.
    pub max_slow_blocks: Option<u64>,
    /// Finality resumes within this long after `heal-all` ("10s").
    pub finality_resumes_within: Option<String>,
    /// `finality_resumes_within` in ms (read by `parse`).
    #[serde(skip)]
    pub finality_resumes_within_ms: Option<u64>,
    /// The reference node's chain reaches these heights.
    pub min_height: Option<u64>,
    pub min_final_height: Option<u64>,
    /// No reorganisation deeper than this many blocks.
    pub max_reorg_depth: Option<u64>,
    /// No interval between consecutive blocks longer than this ("12s").
    pub max_block_interval: Option<String>,
    /// `max_block_interval` in ms (read by `parse`).
    #[serde(skip)]
    pub max_block_interval_ms: Option<u64>,
    /// Validators (indexes) that must have produced at least one block, or none.
    pub produced_by: Option<Vec<usize>>,
    pub not_produced_by: Option<Vec<usize>>,
}

/// A scenario ready to run: the options and the checks.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub description: String,
    pub options: SimOptions,
    pub expect: Expectations,
}

/// Why a scenario file was refused. The message names the field or the fault.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

/// One expectation, judged.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub expectation: String,
    pub ok: bool,
    pub observed: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid { field: field.into(), reason: reason.into() }
}

fn duration(field: &str, text: &str) -> Result<u64, ScenarioError> {
    parse_duration_ms(text).map_err(|error| invalid(field, error.to_string()))
}

/// Reads a scenario file's text into options and checks.
pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
    let mut file: ScenarioFile = toml::from_str(text)?;
    if file.nodes == 0 || file.nodes > SCENARIO_NODES_MAX {
        return Err(invalid("nodes", format!("{} is not between 1 and {SCENARIO_NODES_MAX}", file.nodes)));
    }
    let duration_ms = duration("duration", &file.duration)?;
    let mut options = SimOptions::new(file.nodes, file.seed, duration_ms);
    options.tx_rate_per_s = file.tx_rate;
    if let Some(interval) = file.block_interval_ms {
        options.parameters.block_interval_ms = interval;
    }
    if let Some(timeout) = file.producer_timeout_ms {
        options.parameters.producer_timeout_ms = timeout;
    }
    if let Some(window) = file.production_window_blocks {
        options.parameters.production_window_blocks = window;
    }
    if let Some(cap) = file.production_cap_fair_shares {
        options.parameters.production_cap_fair_shares = cap;
    }
    let mut scripted = Vec::with_capacity(file.faults.len() + 1);
    for (index, line) in file.faults.iter().enumerate() {
        let field = format!("fault[{index}]");
        let at_ms = duration(&format!("{field}.at"), &line.at)?;
        if at_ms >= duration_ms {
            return Err(invalid(
                format!("{field}.at"),
                format!("{} is not before the end of the run ({})", line.at, file.duration),
            ));
        }
        let event = parse_event(&line.event, file.nodes).map_err(|reason| invalid(format!("{field}.event"), reason))?;
        scripted.push((at_ms, event));
    }
    let last_fault_ms = scripted.iter().map(|(at_ms, _)| *at_ms).max();
    let heal_all_ms = match &file.heal_all_at {
        Some(text) => Some(duration("heal_all_at", text)?),
        None => last_fault_ms,
    };
    if let (Some(heal_ms), Some(last_ms)) = (heal_all_ms, last_fault_ms) {
        if heal_ms < last_ms || heal_ms >= duration_ms {
            return Err(invalid(
                "heal_all_at",
                format!(
                    "{} must be at or after the last fault ({}) and before the end of the run ({})",
                    duration_text(heal_ms),
                    duration_text(last_ms),
                    file.duration
                ),
            ));
        }
    }
    if let Some(heal_ms) = heal_all_ms {
        if !scripted.iter().any(|(_, event)| *event == FaultEvent::HealAll) {
            scripted.push((heal_ms, FaultEvent::HealAll));
        }
    }
    // Stable: events at one time keep the file's order, heal-all last.
    scripted.sort_by_key(|(at_ms, _)| *at_ms);
    options.scripted = scripted;
    file.expect.finality_resumes_within_ms = file
        .expect
        .finality_resumes_within
        .as_deref()
        .map(|text| duration("expect.finality_resumes_within", text))
        .transpose()?;
    file.expect.max_block_interval_ms = file
        .expect
        .max_block_interval
        .as_deref()
        .map(|text| duration("expect.max_block_interval", text))
        .transpose()?;
    for (field, validators) in
        [("expect.produced_by", &file.expect.produced_by), ("expect.not_produced_by", &file.expect.not_produced_by)]
    {
        if let Some(bad) = validators.iter().flatten().find(|index| **index >= file.nodes) {
            return Err(invalid(field, format!("validator {bad} does not exist (there are {})", file.nodes)));
        }
    }
    Ok(Scenario { description: file.description, options, expect: file.expect })
}

/// A fault event in the trace's own words:
/// `crash N`, `crash next-producer`, `restart N`, `pause N`, `resume N`,
/// `partition A,B,...` (those validators from the rest; `one-way` after it: only messages into
/// the group are lost), `heal`, `heal-all`, `loss P%`, `dup P%`, `reorder Nms`,
/// `skew N offset=Tms drift=Dppm`, `metrics N fixed=V` (CPU and network pinned at V per-mille),
/// `metrics N stale|flapping|extreme|normal`, `bad-report N`.
pub fn parse_event(text: &str, nodes: usize) -> Result<FaultEvent, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let node = |word: Option<&&str>| -> Result<usize, String> {
        let word = word.ok_or_else(|| format!("{text:?} names no validator"))?;
        let index: usize =
            word.trim_start_matches('n').parse().map_err(|_| format!("{word:?} is not a validator index"))?;
        if index >= nodes {
            return Err(format!("validator {index} does not exist (there are {nodes}, 0 to {})", nodes - 1));
        }
        Ok(index)
    };
    let per_million = |word: Option<&&str>| -> Result<u64, String> {
        let word = word.ok_or_else(|| format!("{text:?} needs a percentage"))?;
        let percent: u64 = word
            .strip_suffix('%')
            .and_then(|number| number.parse().ok())
            .filter(|percent| *percent <= 100)
            .ok_or_else(|| format!("{word:?} is not a percentage from 0% to 100%"))?;
        Ok(percent * 10_000)
    };
    let expect_words = |count: usize| -> Result<(), String> {
        if words.len() == count {
            Ok(())
        } else {
            Err(format!("{text:?} has {} words; this event takes {count}", words.len()))
        }
    };
    let keyed = |word: Option<&&str>, key: &str, unit: &str| -> Result<i64, String> {
        let word = word.ok_or_else(|| format!("{text:?} needs {key}=..{unit}"))?;
        word.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .and_then(|rest| rest.strip_suffix(unit))
            .and_then(|number| number.parse().ok())
            .ok_or_else(|| format!("{word:?} is not {key}=<number>{unit}"))
    };
    match words.first().copied() {
        Some("crash") if words.get(1) == Some(&"next-producer") => {
            expect_words(2)?;
            Ok(FaultEvent::CrashNextProducer)
        }
        Some("crash") => {
            expect_words(2)?;
            Ok(FaultEvent::Crash(node(words.get(1))?))
        }
        Some("restart") => {
            expect_words(2)?;
            Ok(FaultEvent::Restart(node(words.get(1))?))
        }
        Some("pause") => {
            expect_words(2)?;
            Ok(FaultEvent::Pause(node(words.get(1))?))
        }
        Some("resume") => {
            expect_words(2)?;
            Ok(FaultEvent::Resume(node(words.get(1))?))
        }
        Some("partition") => {
            let one_way = match words.len() {
                2 => false,
                3 if words[2] == "one-way" => true,
                _ => return Err(format!("{text:?}: write `partition 0,1` or `partition 0,1 one-way`")),
            };
            let mut group = BTreeSet::new();
            for member in words[1].split(',') {
                group.insert(node(Some(&member))?);
            }
            if group.len() >= nodes {
                return Err(format!("{text:?} puts every validator on one side: nothing is cut"));
            }
            Ok(FaultEvent::Partition { group: group.into_iter().collect(), one_way })
        }
        Some("heal") => {
            expect_words(1)?;
            Ok(FaultEvent::Heal)
        }
        Some("heal-all") => {
            expect_words(1)?;
            Ok(FaultEvent::HealAll)
        }
        Some("loss") => {
            expect_words(2)?;
            Ok(FaultEvent::Loss(per_million(words.get(1))?))
        }
        Some("dup") => {
            expect_words(2)?;
            Ok(FaultEvent::Dup(per_million(words.get(1))?))
        }
        Some("reorder") => {
            expect_words(2)?;
            let word = words[1];
            let jitter_ms = parse_duration_ms(word).map_err(|_| format!("{word:?} is not a duration such as 500ms"))?;
            Ok(FaultEvent::Reorder(jitter_ms))
        }
        Some("skew") => {
            expect_words(4)?;
            let node = node(words.get(1))?;
            let offset_ms = keyed(words.get(2), "offset", "ms")?;
            let drift_ppm = keyed(words.get(3), "drift", "ppm")?;
            Ok(FaultEvent::Skew { node, offset_ms, drift_ppm })
        }
        Some("metrics") => {
            expect_words(3)?;
            let node = node(words.get(1))?;
            let fault = match words[2] {
                "stale" => Some(MetricFault::Stale),
                "flapping" => Some(MetricFault::Flapping),
                "extreme" => Some(MetricFault::Extreme),
                "normal" => None,
                other => {
                    let value = keyed(Some(&other), "fixed", "")?;
                    let value = u16::try_from(value)
                        .ok()
                        .filter(|value| *value <= 1000)
                        .ok_or_else(|| format!("{other:?}: a fixed value is per-mille, 0 to 1000"))?;
                    Some(MetricFault::Fixed(value))
                }
            };
            Ok(FaultEvent::Metric { node, fault })
        }
        Some("bad-report") => {
            expect_words(2)?;
            Ok(FaultEvent::BadReport(node(words.get(1))?))
        }
        _ => Err(format!(
            "{text:?} is not a fault: use crash, restart, pause, resume, partition, heal, heal-all, loss, dup, \
             reorder, skew, metrics or bad-report"
        )),
    }
}

/// Judges a finished run against the scenario's expectations: first safety and liveness (the
/// report's `passed`), then each expectation given. Durations in the observed text are in ms.
pub fn check(expect: &Expectations, report: &SimReport) -> Vec<Verdict> {
    let mut verdicts = vec![Verdict {
        expectation: "safety and liveness".to_string(),
        ok: report.passed(),
        observed: format!(
            "{} safety violations; liveness {}",
            report.safety_violations,
            if report.liveness_ok { "ok" } else { "failed" }
        ),
    }];
    let mut judge = |expectation: String, ok: bool, observed: String| {
        verdicts.push(Verdict { expectation, ok, observed });
    };
    if let Some(max) = expect.max_slow_blocks {
        let slow: u64 = report.blocks_by_rank.range(1..).map(|(_, count)| count).sum();
        judge(format!("at most {max} slow blocks"), slow <= max, format!("{slow} blocks at rank 1 or later"));
    }
    if let (Some(text), Some(bound_ms)) = (&expect.finality_resumes_within, expect.finality_resumes_within_ms) {
        let (ok, observed) = match report.finality_resumed_after_heal_ms {
            Some(after_ms) => (after_ms <= bound_ms, format!("resumed {after_ms} ms after heal-all")),
            None => (false, "finality did not resume after heal-all".to_string()),
        };
        judge(format!("finality resumes within {text} of heal-all"), ok, observed);
    }
    if let Some(min) = expect.min_height {
        judge(format!("height at least {min}"), report.height >= min, format!("height {}", report.height));
    }
    if let Some(min) = expect.min_final_height {
        judge(
            format!("final height at least {min}"),
            report.final_height >= min,
            format!("final height {}", report.final_height),
        );
    }
    if let Some(max) = expect.max_reorg_depth {
        judge(
            format!("no reorganisation deeper than {max}"),
            report.max_reorg_depth <= max,
            format!("deepest {}", report.max_reorg_depth),
        );
    }
    if let (Some(text), Some(bound_ms)) = (&expect.max_block_interval, expect.max_block_interval_ms) {
        judge(
            format!("no block interval longer than {text}"),
            report.interval_ms.max <= bound_ms,
            format!("longest {} ms", report.interval_ms.max),
        );
    }
    if let Some(validators) = &expect.produced_by {
        for &validator in validators {
            let share = report.production_share.get(validator).copied().unwrap_or(0);
            judge(format!("validator {validator} produced"), share > 0, format!("{share}‰ of the blocks"));
        }
    }
    if let Some(validators) = &expect.not_produced_by {
        for &validator in validators {
            let share = report.production_share.get(validator).copied().unwrap_or(0);
            judge(format!("validator {validator} produced nothing"), share == 0, format!("{share}‰ of the blocks"));
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_the_trace_writes_them() {
        let cases: &[(&str, FaultEvent)] = &[
            ("crash 2", FaultEvent::Crash(2)),
            ("crash n2", FaultEvent::Crash(2)),
            ("crash next-producer", FaultEvent::CrashNextProducer),
            ("restart 2", FaultEvent::Restart(2)),
            ("pause 1", FaultEvent::Pause(1)),
            ("resume 1", FaultEvent::Resume(1)),
            ("partition 0,1", FaultEvent::Partition { group: vec![0, 1], one_way: false }),
            ("partition 1,0 one-way", FaultEvent::Partition { group: vec![0, 1], one_way: true }),
            ("heal", FaultEvent::Heal),
            ("heal-all", FaultEvent::HealAll),
            ("loss 10%", FaultEvent::Loss(100_000)),
            ("dup 5%", FaultEvent::Dup(50_000)),
            ("reorder 500ms", FaultEvent::Reorder(500)),
            ("skew 3 offset=-300ms drift=100ppm", FaultEvent::Skew { node: 3, offset_ms: -300, drift_ppm: 100 }),
            ("metrics 3 fixed=100", FaultEvent::Metric { node: 3, fault: Some(MetricFault::Fixed(100)) }),
            ("metrics 3 stale", FaultEvent::Metric { node: 3, fault: Some(MetricFault::Stale) }),
            ("metrics 3 normal", FaultEvent::Metric { node: 3, fault: None }),
            ("bad-report 0", FaultEvent::BadReport(0)),
        ];
        for (text, event) in cases {
            assert_eq!(parse_event(text, 4).as_ref(), Ok(event), "{text}");
        }
        for bad in [
            "crash 4",
            "crash",
            "crash 1 2",
            "partition 0,1,2,3",
            "partition 0,x",
            "loss 101%",
            "loss ten",
            "metrics 3 fixed=1001",
            "metrics 3 loud",
            "skew 1 offset=3s drift=1ppm",
            "explode 1",
            "",
        ] {
            let error = parse_event(bad, 4).expect_err(bad);
            assert!(!error.is_empty(), "{bad:?} needs a reason");
        }
    }

    #[test]
    fn a_file_becomes_scripted_faults_ending_with_heal_all() {
        let scenario = parse(
            r#"
            description = "the producer dies"
            nodes = 4
            seed = 7
            duration = "2m"
            tx_rate = 5
            block_interval_ms = 1000
            [[fault]]
            at = "40s"
            event = "restart 2"
            [[fault]]
            at = "30s"
            event = "crash 2"
            [expect]
            max_slow_blocks = 3
            "#,
        )
        .unwrap();
        assert_eq!(scenario.options.nodes, 4);
        assert_eq!(scenario.options.seed, 7);
        assert_eq!(scenario.options.duration_ms, 120_000);
        assert_eq!(scenario.options.parameters.block_interval_ms, 1000);
        assert_eq!(
            scenario.options.scripted,
            vec![(30_000, FaultEvent::Crash(2)), (40_000, FaultEvent::Restart(2)), (40_000, FaultEvent::HealAll)]
        );
        assert_eq!(scenario.expect.max_slow_blocks, Some(3));
    }

    #[test]
    fn bad_files_name_the_field() {
        let cases = [
            ("nodes = 0\nduration = \"1m\"\n", "nodes"),
            ("nodes = 4\nduration = \"soon\"\n", "duration"),
            ("nodes = 4\nduration = \"1m\"\n[[fault]]\nat = \"2m\"\nevent = \"heal\"\n", "fault[0].at"),
            ("nodes = 4\nduration = \"1m\"\n[[fault]]\nat = \"2s\"\nevent = \"crash 9\"\n", "fault[0].event"),
            (
                "nodes = 4\nduration = \"1m\"\nheal_all_at = \"1s\"\n[[fault]]\nat = \"2s\"\nevent = \"heal\"\n",
                "heal_all_at",
            ),
            ("nodes = 4\nduration = \"1m\"\n[expect]\nproduced_by = [4]\n", "expect.produced_by"),
            (
                "nodes = 4\nduration = \"1m\"\n[expect]\nfinality_resumes_within = \"fast\"\n",
                "expect.finality_resumes_within",
            ),
            ("nodes = 4\nduration = \"1m\"\nspeed = 3\n", "speed"),
        ];
        for (text, field) in cases {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains(field), "{text:?} gave {error:?}, expected it to name {field:?}");
        }
    }

    #[test]
    fn chain_parameters_and_duration_bounds_are_read_once() {
        let text = "nodes = 4\nduration = \"1m\"\nproduction_window_blocks = 20\nproduction_cap_fair_shares = 3\n\
                    [expect]\nfinality_resumes_within = \"10s\"\nmax_block_interval = \"1500ms\"\n";
        let scenario = parse(text).unwrap();
        assert_eq!(scenario.options.parameters.production_window_blocks, 20);
        assert_eq!(scenario.options.parameters.production_cap_fair_shares, 3);
        assert_eq!(scenario.expect.finality_resumes_within_ms, Some(10_000));
        assert_eq!(scenario.expect.max_block_interval_ms, Some(1_500));
        let error = parse("nodes = 4\nduration = \"1m\"\n[expect]\nmax_block_interval = \"soon\"\n").unwrap_err();
        assert!(error.to_string().starts_with("expect.max_block_interval:"), "{error}");
    }
}
