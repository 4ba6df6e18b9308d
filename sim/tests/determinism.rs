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
