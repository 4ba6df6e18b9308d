//! What a run looked like over time, for the simulation report (`report`, `tinychain sim
//! --report`): `Series`, what the engine records while it runs (each core's tip and final
//! height at every change, the faults it injected, every reorg, when the reference core saw
//! each block final), and `RunFigures`, every number the report plots.
//!
//! The engine records a `Series` only when `SimOptions::record_series` asks; otherwise it keeps
//! none and pays one branch per commit. Recording only reads the simulation's state, so the
//! trace, its hash and the `SimReport` are the same with or without it (`sim/tests/report.rs`).
//! `RunFigures` is built by `Simulation::figures` from the same state as `Simulation::report`
//! (the same chain walk and latency list), and the report checks its figures against the
//! `SimReport` before writing a byte.

use crate::faults::FaultEvent;
use crate::metrics::MetricFault;
use serde::Serialize;
use std::collections::BTreeMap;
use tinychain_core::types::Height;

/// A core's chain as the engine saw it from `at_ms` on, until its next point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HeightPoint {
    pub at_ms: u64,
    pub tip: Height,
    pub final_height: Height,
    /// False while the core is crashed (its heights are the ones it had when it stopped).
    pub up: bool,
}

/// A core rolled back `depth` blocks at `at_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReorgMark {
    pub at_ms: u64,
    pub core: usize,
    pub depth: u64,
}

/// What the engine records while it runs, when asked.
#[derive(Clone, Debug)]
pub struct Series {
    /// Per core (the engine's core index), every change of its tip, final height or liveness.
    pub heights: Vec<Vec<HeightPoint>>,
    /// Every fault the engine injected, in order, as it carried it out (`crash next-producer`
    /// recorded as the crash of the validator it picked).
    pub faults: Vec<(u64, FaultEvent)>,
    pub reorgs: Vec<ReorgMark>,
    /// When the reference core saw each height final (the finality lag's "seen final" end).
    pub final_at_ms: BTreeMap<Height, u64>,
}

impl Series {
    pub fn new(cores: usize) -> Series {
        let start = HeightPoint { at_ms: 0, tip: 0, final_height: 0, up: true };
        Series {
            heights: vec![vec![start]; cores],
            faults: Vec::new(),
            reorgs: Vec::new(),
            final_at_ms: BTreeMap::new(),
        }
    }

    /// Core `core` is up with this tip and final height (a point only when something changed).
    pub fn note_heights(&mut self, core: usize, at_ms: u64, tip: Height, final_height: Height) {
        self.push(core, HeightPoint { at_ms, tip, final_height, up: true });
    }

    /// Core `core` crashed: it keeps the heights it had, down.
    pub fn note_crash(&mut self, core: usize, at_ms: u64) {
        let last = *self.heights[core].last().expect("every core starts with a point");
        self.push(core, HeightPoint { at_ms, up: false, ..last });
    }

    fn push(&mut self, core: usize, point: HeightPoint) {
        let points = &mut self.heights[core];
        let last = points.last().expect("every core starts with a point");
        if (last.tip, last.final_height, last.up) == (point.tip, point.final_height, point.up) {
            return;
        }
        // Two changes at one millisecond: the later one is what the core showed from then on.
        if last.at_ms == point.at_ms && points.len() > 1 {
            points.pop();
        }
        points.push(point);
    }
}

/// One fault episode on the timeline: from its injection to whatever ended it (its own end
/// event, a replacing fault of the same kind, `heal-all`, or the end of the run). Instant faults
/// (`bad-report`) have `end_ms == start_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultBand {
    /// The row of the timeline: `crash n2`, `partition`, `loss`, `skew n0`, ...
    pub lane: String,
    /// crash, pause, partition, loss, dup, reorder, skew, metrics, bad-report.
    pub kind: &'static str,
    /// What the band says: `partition n0,n1 one-way`, `loss 12%`, `metrics n3 stale`, ...
    pub label: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

fn metric_fault_text(fault: MetricFault) -> String {
    match fault {
        MetricFault::Stale => "stale".into(),
        MetricFault::Flapping => "flapping".into(),
        MetricFault::Extreme => "extreme".into(),
        MetricFault::Fixed(value) => format!("fixed={value}"),
    }
}

/// The fault episodes of a run, from the faults in the order they were injected, each band
/// closed by what ended it; bands still open at `end_ms` end there. Sorted by start, then lane.
pub fn fault_bands(faults: &[(u64, FaultEvent)], end_ms: u64) -> Vec<FaultBand> {
    // Open bands by lane: (start, kind, label).
    let mut open: BTreeMap<String, (u64, &'static str, String)> = BTreeMap::new();
    let mut bands = Vec::new();
    let close = |open: &mut BTreeMap<String, (u64, &'static str, String)>,
                 bands: &mut Vec<FaultBand>,
                 lane: &str,
                 at_ms: u64| {
        if let Some((start_ms, kind, label)) = open.remove(lane) {
            bands.push(FaultBand { lane: lane.to_string(), kind, label, start_ms, end_ms: at_ms });
        }
    };
    for (at_ms, fault) in faults {
        let at_ms = *at_ms;
        // (lane, kind, label) of the band this fault opens, after closing what it ends.
        let opens: Option<(String, &'static str, String)> = match fault {
            FaultEvent::Crash(node) => {
                let lane = format!("crash n{node}");
                // A second crash of a crashed node changes nothing: the band goes on.
                (!open.contains_key(&lane)).then(|| (lane.clone(), "crash", lane))
            }
            FaultEvent::CrashNextProducer => None,
            FaultEvent::Restart(node) => {
                close(&mut open, &mut bands, &format!("crash n{node}"), at_ms);
                None
            }
            FaultEvent::Pause(node) => {
                let lane = format!("pause n{node}");
                (!open.contains_key(&lane)).then(|| (lane.clone(), "pause", lane))
            }
            FaultEvent::Resume(node) => {
                close(&mut open, &mut bands, &format!("pause n{node}"), at_ms);
                None
            }
            FaultEvent::Partition { group, one_way } => {
                close(&mut open, &mut bands, "partition", at_ms);
                let nodes: Vec<String> = group.iter().map(|node| format!("n{node}")).collect();
                let label = format!("partition {}{}", nodes.join(","), if *one_way { " one-way" } else { "" });
                Some(("partition".into(), "partition", label))
            }
            FaultEvent::Heal => {
                close(&mut open, &mut bands, "partition", at_ms);
                None
            }
            FaultEvent::Loss(rate) | FaultEvent::Dup(rate) => {
                let kind = if matches!(fault, FaultEvent::Loss(_)) { "loss" } else { "dup" };
                close(&mut open, &mut bands, kind, at_ms);
                (*rate > 0).then(|| (kind.to_string(), kind, format!("{kind} {}%", rate / 10_000)))
            }
            FaultEvent::Reorder(jitter_ms) => {
                close(&mut open, &mut bands, "reorder", at_ms);
                (*jitter_ms > 0).then(|| ("reorder".into(), "reorder", format!("reorder {jitter_ms}ms")))
            }
            FaultEvent::Skew { node, offset_ms, drift_ppm } => {
                let lane = format!("skew n{node}");
                close(&mut open, &mut bands, &lane, at_ms);
                let label = format!("skew n{node} {offset_ms:+}ms {drift_ppm:+}ppm");
                (*offset_ms != 0 || *drift_ppm != 0).then_some((lane, "skew", label))
            }
            FaultEvent::Metric { node, fault } => {
                let lane = format!("metrics n{node}");
                close(&mut open, &mut bands, &lane, at_ms);
                fault.map(|fault| (lane, "metrics", format!("metrics n{node} {}", metric_fault_text(fault))))
            }
            FaultEvent::BadReport(node) => {
                let lane = format!("bad-report n{node}");
                bands.push(FaultBand {
                    lane: lane.clone(),
                    kind: "bad-report",
                    label: lane,
                    start_ms: at_ms,
                    end_ms: at_ms,
                });
                None
            }
            FaultEvent::HealAll => {
                let lanes: Vec<String> = open.keys().cloned().collect();
                for lane in lanes {
                    close(&mut open, &mut bands, &lane, at_ms);
                }
                None
            }
        };
        if let Some((lane, kind, label)) = opens {
            open.insert(lane, (at_ms, kind, label));
        }
    }
    let lanes: Vec<String> = open.keys().cloned().collect();
    for lane in lanes {
        close(&mut open, &mut bands, &lane, end_ms);
    }
    bands.sort_by(|a, b| (a.start_ms, &a.lane).cmp(&(b.start_ms, &b.lane)));
    bands
}

/// One block of the reference chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlockFigure {
    pub height: Height,
    /// The block's header timestamp (its producer's clock).
    pub timestamp_ms: u64,
    /// From the parent's timestamp (genesis for block 1): `SimReport::interval_ms` is over these.
    pub interval_ms: u64,
    /// Validator index.
    pub producer: usize,
    pub rank: u32,
    pub transfers: usize,
}

/// A height the reference core saw final: when, and how long after the block's timestamp
/// (`SimReport::finality_lag_ms` is over the lags).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FinalityFigure {
    pub height: Height,
    pub final_at_ms: u64,
    pub lag_ms: u64,
}

/// A fault as the trace names it, when it was injected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultMark {
    pub at_ms: u64,
    pub description: String,
}

/// Every number the run report plots.
#[derive(Clone, Debug, Serialize)]
pub struct RunFigures {
    pub duration_ms: u64,
    pub block_interval_ms: u64,
    pub producer_timeout_ms: u64,
    /// Core names (`n0`…, then a splitting validator's second core `n1b`), indexing `heights`.
    pub cores: Vec<String>,
    /// Per core: false for a dishonest validator's cores.
    pub honest: Vec<bool>,
    /// The core whose chain `blocks`, `finality` and the `SimReport` describe.
    pub reference: usize,
    pub blocks: Vec<BlockFigure>,
    pub finality: Vec<FinalityFigure>,
    pub heights: Vec<Vec<HeightPoint>>,
    pub faults: Vec<FaultMark>,
    pub fault_bands: Vec<FaultBand>,
    pub heal_all_ms: Option<u64>,
    pub reorgs: Vec<ReorgMark>,
    /// Per transfer committed on the reference chain (in chain order): from its submission to
    /// the first commit on any honest core (`SimReport::tx_latency_ms` is over these).
    pub tx_latency_ms: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn band(lane: &str, kind: &'static str, label: &str, start_ms: u64, end_ms: u64) -> FaultBand {
        FaultBand { lane: lane.into(), kind, label: label.into(), start_ms, end_ms }
    }

    #[test]
    fn fault_bands_close_on_their_end_a_replacement_heal_all_or_the_run_end() {
        let faults = vec![
            (1_000, FaultEvent::Crash(2)),
            (2_000, FaultEvent::Partition { group: vec![0, 1], one_way: true }),
            (3_000, FaultEvent::Crash(2)),
            (4_000, FaultEvent::Restart(2)),
            (5_000, FaultEvent::Partition { group: vec![3], one_way: false }),
            (6_000, FaultEvent::Loss(120_000)),
            (6_500, FaultEvent::BadReport(1)),
            (7_000, FaultEvent::Loss(0)),
            (7_000, FaultEvent::Metric { node: 3, fault: Some(MetricFault::Stale) }),
            (7_500, FaultEvent::Skew { node: 0, offset_ms: -300, drift_ppm: 1_500 }),
            (8_000, FaultEvent::Pause(1)),
            (9_000, FaultEvent::HealAll),
            (9_500, FaultEvent::Reorder(700)),
        ];
        assert_eq!(
            fault_bands(&faults, 10_000),
            vec![
                band("crash n2", "crash", "crash n2", 1_000, 4_000),
                band("partition", "partition", "partition n0,n1 one-way", 2_000, 5_000),
                band("partition", "partition", "partition n3", 5_000, 9_000),
                band("loss", "loss", "loss 12%", 6_000, 7_000),
                band("bad-report n1", "bad-report", "bad-report n1", 6_500, 6_500),
                band("metrics n3", "metrics", "metrics n3 stale", 7_000, 9_000),
                band("skew n0", "skew", "skew n0 -300ms +1500ppm", 7_500, 9_000),
                band("pause n1", "pause", "pause n1", 8_000, 9_000),
                band("reorder", "reorder", "reorder 700ms", 9_500, 10_000),
            ]
        );
    }

    #[test]
    fn height_points_are_kept_only_on_change_and_a_crash_keeps_the_heights() {
        let mut series = Series::new(1);
        series.note_heights(0, 2_000, 1, 0);
        series.note_heights(0, 2_500, 1, 0);
        series.note_heights(0, 4_000, 2, 0);
        series.note_heights(0, 4_000, 2, 1);
        series.note_crash(0, 5_000);
        series.note_heights(0, 9_000, 2, 1);
        let point = |at_ms, tip, final_height, up| HeightPoint { at_ms, tip, final_height, up };
        assert_eq!(
            series.heights[0],
            vec![
                point(0, 0, 0, true),
                point(2_000, 1, 0, true),
                point(4_000, 2, 1, true),
                point(5_000, 2, 1, false),
                point(9_000, 2, 1, true),
            ]
        );
    }
}
