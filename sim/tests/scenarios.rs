//! Snapshot tests of small fixed-seed scenarios (4 nodes, a minute or so of virtual time). The
//! snapshot is a condensed trace — blocks produced, timeouts, reorganisations, faults and links
//! going up and down on every node, finality as node 0 sees it — plus the run's deterministic
//! figures. No wall-clock times or ports appear in them. Review changes with `cargo insta review`.
//!
//! Each scenario also asserts what must have happened, so a snapshot is never the only check.

use tinychain_sim::engine::{SimReport, Simulation};
use tinychain_sim::faults::FaultEvent;
use tinychain_sim::metrics::MetricFault;
use tinychain_sim::options::SimOptions;

struct Outcome {
    report: SimReport,
    trace: Vec<String>,
    final_ranks: Vec<(u64, u32, u64)>,
    simulation: Simulation,
}

fn scenario(seed: u64, duration_ms: u64, scripted: Vec<(u64, FaultEvent)>) -> Outcome {
    let mut options = SimOptions::new(4, seed, duration_ms);
    options.tx_rate_per_s = 2;
    options.scripted = scripted;
    options.keep_trace = true;
    let mut simulation = Simulation::new(options);
    simulation.run_until(duration_ms);
    let report = simulation.report();
    let trace = simulation.trace_lines().to_vec();
    // (height, rank, timestamp) of node 0's final chain.
    let node = simulation.node(0);
    let final_height = node.finalized().height;
    let final_ranks = (1..=final_height)
        .filter_map(|height| {
            let block = simulation.stored_block(0, height)?;
            Some((height, block.header.rank, block.header.timestamp_ms))
        })
        .collect();
    Outcome { report, trace, final_ranks, simulation }
}

/// The snapshot text: condensed trace, then the deterministic figures.
fn snapshot(outcome: &Outcome) -> String {
    let mut text: Vec<String> = outcome
        .trace
        .iter()
        .filter(|line| {
            line.contains(" produced ")
                || line.contains(" timeout ")
                || line.contains(" reorg ")
                || line.contains(" fault ")
                || line.contains(" link ")
                || (line.contains("   n0 finalized"))
        })
        .cloned()
        .collect();
    let report = &outcome.report;
    text.push(String::new());
    text.push(format!(
        "height {} final {} blocks_by_rank {:?}",
        report.height, report.final_height, report.blocks_by_rank
    ));
    text.push(format!("interval_ms {:?} max_final_gap_ms {}", report.interval_ms, report.max_final_gap_ms));
    text.push(format!(
        "txs committed {} of {} (+{} invalid)",
        report.txs_committed, report.txs_submitted, report.invalid_txs_submitted
    ));
    text.push(format!(
        "txs acknowledged {} dropped {:?} lost {}",
        report.txs_acknowledged, report.txs_dropped, report.txs_lost
    ));
    text.push(format!(
        "reorgs {} deepest {} timeouts {}",
        report.reorgs, report.max_reorg_depth, report.timeouts_fired
    ));
    text.push(format!("violations {} liveness {}", report.safety_violations, report.liveness_ok));
    text.push(format!("trace {} lines, hash {}", report.trace_lines, report.trace_hash));
    text.join("\n")
}

#[test]
fn healthy_four_nodes() {
    let outcome = scenario(1, 42_000, vec![]);
    assert!(outcome.report.passed(), "{:?}", outcome.report.violations);
    assert!(outcome.report.height >= 20, "about 20 blocks: {}", outcome.report.height);
    assert!(outcome.final_ranks.iter().all(|(_, rank, _)| *rank == 0), "no timeouts when healthy");
    assert!(outcome.report.height - outcome.report.final_height <= 3);
    assert_eq!(outcome.report.interval_ms.max, 2_000, "a block every 2 s");
    insta::assert_snapshot!("healthy_four_nodes", snapshot(&outcome));
}

#[test]
fn the_top_producer_crashes() {
    let outcome = scenario(2, 75_000, vec![(10_500, FaultEvent::CrashNextProducer), (45_000, FaultEvent::HealAll)]);
    assert!(outcome.report.passed(), "{:?} {}", outcome.report.violations, outcome.report.liveness);
    // Exactly one slow block: the fallback at rank 1 after the timeout; then the crashed node
    // sits at the end of the ranking and every block is rank 0 again.
    let slow: Vec<_> = outcome.final_ranks.iter().filter(|(_, rank, _)| *rank > 0).collect();
    assert_eq!(slow.len(), 1, "one slow block per crash: {slow:?}");
    let (height, rank, timestamp) = *slow[0];
    assert_eq!(rank, 1);
    let parent_timestamp = outcome.final_ranks.iter().find(|(h, _, _)| *h == height - 1).map_or(0, |(_, _, t)| *t);
    let gap = timestamp - parent_timestamp;
    assert!((10_000..=10_000 + 100).contains(&gap), "fallback after the 10 s timeout plus latency: {gap} ms");
    insta::assert_snapshot!("the_top_producer_crashes", snapshot(&outcome));
}

#[test]
fn a_partition_and_its_heal() {
    let scripted = vec![
        (10_000, FaultEvent::Partition { group: vec![3], one_way: false }),
        (40_000, FaultEvent::Heal),
        (45_000, FaultEvent::HealAll),
    ];
    let outcome = scenario(3, 80_000, scripted);
    assert!(outcome.report.passed(), "{:?} {}", outcome.report.violations, outcome.report.liveness);
    // The isolated node kept producing alone, then adopted the majority chain.
    let isolated_produced = outcome.trace.iter().any(|line| {
        line.contains("   n3 produced") && line.trim_start().starts_with(|c: char| c.is_ascii_digit()) && {
            let seconds: u64 = line.trim_start().split('.').next().and_then(|s| s.parse().ok()).unwrap_or(0);
            (11..40).contains(&seconds)
        }
    });
    assert!(isolated_produced, "the minority produced during the partition");
    assert!(outcome.report.reorgs >= 1, "it reorganised onto the majority chain");
    let node = outcome.simulation.node(3);
    assert_eq!(
        node.canonical_hash(outcome.report.final_height),
        outcome.simulation.node(0).canonical_hash(outcome.report.final_height)
    );
    insta::assert_snapshot!("a_partition_and_its_heal", snapshot(&outcome));
}

#[test]
fn flapping_metrics() {
    let scripted = vec![
        (5_000, FaultEvent::Metric { node: 0, fault: Some(MetricFault::Flapping) }),
        (40_000, FaultEvent::HealAll),
    ];
    let outcome = scenario(4, 70_000, scripted);
    assert!(outcome.report.passed(), "{:?} {}", outcome.report.violations, outcome.report.liveness);
    // Its score swings between 0 and 1000, so node 0 alternates between first and last.
    let producers: Vec<&String> = outcome.trace.iter().filter(|line| line.contains(" produced ")).collect();
    let by_node0 = producers.iter().filter(|line| line.contains("   n0 produced")).count();
    assert!(by_node0 >= 3 && by_node0 < producers.len() - 3, "node 0 produced {by_node0} of {}", producers.len());
    assert!(outcome.final_ranks.iter().all(|(_, rank, _)| *rank == 0), "flapping scores never cost a timeout");
    insta::assert_snapshot!("flapping_metrics", snapshot(&outcome));
}
