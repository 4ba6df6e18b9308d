//! Faults: the events the simulator injects, and the seeded schedule that places them inside the
//! fault window. Every episode ends (a crashed node restarts, a partition heals) at the latest at
//! the window's end, when `HealAll` starts the liveness phase.

use crate::metrics::MetricFault;
use crate::options::{FaultKind, SimOptions};
use crate::rng::SimRng;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultEvent {
    /// The node stops; it keeps what it committed and loses its memory and in-flight messages.
    Crash(usize),
    /// Whichever validator is ranked first for the next block (as node 0 sees it) crashes.
    CrashNextProducer,
    /// A crashed node restarts from its storage.
    Restart(usize),
    /// The node stops processing (a silent producer); messages to it wait.
    Pause(usize),
    Resume(usize),
    Partition {
        group: Vec<usize>,
        one_way: bool,
    },
    Heal,
    /// Loss rate, per million messages (0 ends it).
    Loss(u64),
    /// Duplication rate, per million messages (0 ends it).
    Dup(u64),
    /// Extra jitter in milliseconds, so messages overtake each other (0 ends it).
    Reorder(u64),
    /// The node's clock runs `offset_ms` ahead (or behind) and drifts `drift_ppm`.
    Skew {
        node: usize,
        offset_ms: i64,
        drift_ppm: i64,
    },
    /// Fake metrics misbehave (None ends it).
    Metric {
        node: usize,
        fault: Option<MetricFault>,
    },
    /// The node signs and gossips a report with out-of-range values: every core must reject it.
    BadReport(usize),
    /// Ends every fault at once: the liveness phase starts.
    HealAll,
}

/// Scenario faults are the same events, placed at chosen times.
pub type ScriptedFault = FaultEvent;

impl FaultEvent {
    /// A short deterministic description for the trace.
    pub fn describe(&self) -> String {
        match self {
            FaultEvent::Crash(node) => format!("crash n{node}"),
            FaultEvent::CrashNextProducer => "crash next-producer".into(),
            FaultEvent::Restart(node) => format!("restart n{node}"),
            FaultEvent::Pause(node) => format!("pause n{node}"),
            FaultEvent::Resume(node) => format!("resume n{node}"),
            FaultEvent::Partition { group, one_way } => {
                let nodes: Vec<String> = group.iter().map(|node| format!("n{node}")).collect();
                format!("partition {}{}", nodes.join(","), if *one_way { " one-way" } else { "" })
            }
            FaultEvent::Heal => "heal".into(),
            FaultEvent::Loss(rate) => format!("loss {}%", rate / 10_000),
            FaultEvent::Dup(rate) => format!("dup {}%", rate / 10_000),
            FaultEvent::Reorder(jitter_ms) => format!("reorder jitter={jitter_ms}ms"),
            FaultEvent::Skew { node, offset_ms, drift_ppm } => {
                format!("skew n{node} offset={offset_ms}ms drift={drift_ppm}ppm")
            }
            FaultEvent::Metric { node, fault } => format!("metrics n{node} {fault:?}"),
            FaultEvent::BadReport(node) => format!("bad-report n{node}"),
            FaultEvent::HealAll => "heal-all".into(),
        }
    }
}

/// The random fault schedule for a run: episodes every 3-20 s inside the fault window, each of
/// an enabled kind, each with its own end; then `HealAll` at the window's end.
pub fn schedule(options: &SimOptions, rng: &mut SimRng) -> Vec<(u64, FaultEvent)> {
    let kinds: Vec<FaultKind> = options.faults.iter().copied().collect();
    let (start_ms, end_ms) = options.fault_window_ms();
    let nodes = options.nodes as u64;
    let mut events = Vec::new();
    if !kinds.is_empty() && nodes > 0 {
        let mut at_ms = start_ms;
        loop {
            at_ms += rng.range(3_000, 20_000);
            if at_ms >= end_ms {
                break;
            }
            let kind = kinds[rng.below(kinds.len() as u64) as usize];
            let node = rng.below(nodes) as usize;
            let stop_ms = (at_ms + rng.range(2_000, 40_000)).min(end_ms);
            match kind {
                FaultKind::Crash => {
                    events.push((at_ms, FaultEvent::Crash(node)));
                    events.push((stop_ms, FaultEvent::Restart(node)));
                }
                FaultKind::Pause => {
                    events.push((at_ms, FaultEvent::Pause(node)));
                    events.push((stop_ms, FaultEvent::Resume(node)));
                }
                FaultKind::Partition => {
                    let size = rng.range(1, (nodes / 2).max(1));
                    let mut group: Vec<usize> = Vec::new();
                    while (group.len() as u64) < size {
                        let member = rng.below(nodes) as usize;
                        if !group.contains(&member) {
                            group.push(member);
                        }
                    }
                    group.sort_unstable();
                    let one_way = rng.chance(250_000);
                    let heal_ms = (at_ms + rng.range(5_000, 120_000)).min(end_ms);
                    events.push((at_ms, FaultEvent::Partition { group, one_way }));
                    events.push((heal_ms, FaultEvent::Heal));
                }
                FaultKind::Loss => {
                    events.push((at_ms, FaultEvent::Loss(rng.range(20_000, 300_000))));
                    events.push((stop_ms, FaultEvent::Loss(0)));
                }
                FaultKind::Dup => {
                    events.push((at_ms, FaultEvent::Dup(rng.range(20_000, 300_000))));
                    events.push((stop_ms, FaultEvent::Dup(0)));
                }
                FaultKind::Reorder => {
                    events.push((at_ms, FaultEvent::Reorder(rng.range(100, 1_500))));
                    events.push((stop_ms, FaultEvent::Reorder(0)));
                }
                FaultKind::Skew => {
                    // Up to 1.5 times the allowed drift: clocks that race the timeout rule.
                    let allowed = options.parameters.max_clock_drift_ms;
                    let offset_ms = rng.signed(allowed * 3 / 2);
                    let drift_ppm = rng.signed(2_000);
                    events.push((at_ms, FaultEvent::Skew { node, offset_ms, drift_ppm }));
                    events.push((stop_ms, FaultEvent::Skew { node, offset_ms: 0, drift_ppm: 0 }));
                }
                FaultKind::Metrics => {
                    let fault = match rng.below(4) {
                        0 => Some(MetricFault::Stale),
                        1 => Some(MetricFault::Flapping),
                        2 => Some(MetricFault::Extreme),
                        _ => None,
                    };
                    match fault {
                        Some(fault) => {
                            events.push((at_ms, FaultEvent::Metric { node, fault: Some(fault) }));
                            events.push((stop_ms, FaultEvent::Metric { node, fault: None }));
                        }
                        None => events.push((at_ms, FaultEvent::BadReport(node))),
                    }
                }
            }
        }
        events.push((end_ms, FaultEvent::HealAll));
    }
    events.extend(options.scripted.iter().cloned());
    // Stable: events at the same time keep their order (an episode's start before its end).
    events.sort_by_key(|(at_ms, _)| *at_ms);
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_faults;

    #[test]
    fn schedules_are_seeded_inside_the_window_and_end_with_heal_all() {
        let mut options = SimOptions::new(5, 9, 600_000);
        options.faults = parse_faults("all").unwrap_or_default();
        let first = schedule(&options, &mut SimRng::stream(9, "faults"));
        let again = schedule(&options, &mut SimRng::stream(9, "faults"));
        assert_eq!(first, again);
        assert!(first.len() > 10);
        let (start, end) = options.fault_window_ms();
        assert!(first.iter().all(|(at, _)| (start..=end).contains(at)));
        assert_eq!(first.last().map(|(_, event)| event), Some(&FaultEvent::HealAll));
        let other = schedule(&options, &mut SimRng::stream(10, "faults"));
        assert_ne!(first, other);
        options.faults.clear();
        assert!(schedule(&options, &mut SimRng::stream(9, "faults")).is_empty());
    }
}
