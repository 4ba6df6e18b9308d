//! The same seed and options give the same trace, byte for byte; different seeds differ.

use tinychain_sim::engine::run;
use tinychain_sim::options::{parse_faults, SimOptions};

fn options(seed: u64) -> SimOptions {
    let mut options = SimOptions::new(5, seed, 120_000);
    options.tx_rate_per_s = 5;
    options.faults = parse_faults("all").expect("valid fault list");
    options.keep_trace = true;
    options
}

#[test]
fn the_same_seed_gives_the_same_trace_hash() {
    let (first, first_trace) = run(options(42));
    let (second, second_trace) = run(options(42));
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first_trace, second_trace);
    assert!(first.trace_lines > 100, "the run did something: {} lines", first.trace_lines);
    assert!(first.faults_injected > 0, "faults were injected");
}

#[test]
fn different_seeds_give_different_traces() {
    let (first, _) = run(options(1));
    let (second, _) = run(options(2));
    assert_ne!(first.trace_hash, second.trace_hash);
}

#[test]
fn changing_the_transfer_rate_does_not_reshuffle_the_faults() {
    let mut quiet = options(7);
    quiet.tx_rate_per_s = 0;
    let (_, quiet_trace) = run(quiet);
    let (_, busy_trace) = run(options(7));
    let faults = |trace: &[String]| -> Vec<String> {
        trace
            .iter()
            .filter(|line| line.contains(" fault "))
            .map(|line| line.split(" fault ").nth(1).unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(faults(&quiet_trace), faults(&busy_trace), "faults come from their own stream");
}

#[test]
fn bandwidth_and_traffic_derived_metrics_run_safely_and_deterministically() {
    let mut with_models = options(11);
    with_models.bandwidth_bytes_per_ms = Some(200);
    with_models.net_from_traffic_bytes_per_s = Some(100_000);
    with_models.tx_rate_per_s = 30;
    let (report, _) = run(with_models.clone());
    assert!(report.passed(), "{:?} {}", report.violations, report.liveness);
    assert!(report.txs_committed > 1_000, "the workload went through: {}", report.txs_committed);
    assert_eq!(run(with_models).0.trace_hash, report.trace_hash);
    assert_ne!(run(options(11)).0.trace_hash, report.trace_hash, "the models change what happens");
}
