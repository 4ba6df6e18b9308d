//! The example scenario files in docs/scenarios/ run as tests: each parses, runs, and meets
//! every expectation it writes down; and an expectation that does not hold is reported as failed.

use std::path::PathBuf;
use tinychain_sim::engine::Simulation;
use tinychain_sim::scenario::{self, Verdict};

fn examples() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "toml"))
        .collect();
    files.sort();
    files
}

fn run(text: &str) -> (Vec<Verdict>, String) {
    let scenario = scenario::parse(text).expect("the scenario parses");
    let (report, _) = Simulation::new(scenario.options.clone()).run();
    (scenario::check(&scenario.expect, &report), report.trace_hash)
}

#[test]
fn every_example_scenario_meets_its_expectations() {
    let files = examples();
    assert!(files.len() >= 3, "expected the example scenarios in docs/scenarios, found {files:?}");
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable");
        let (verdicts, _) = run(&text);
        assert!(verdicts.len() >= 2, "{}: no expectation beyond safety and liveness", path.display());
        let failed: Vec<&Verdict> = verdicts.iter().filter(|verdict| !verdict.ok).collect();
        assert!(failed.is_empty(), "{}: {failed:?}", path.display());
    }
}

#[test]
fn an_expectation_that_does_not_hold_fails_and_says_what_was_seen() {
    let text = std::fs::read_to_string(examples()[0].clone()).expect("readable");
    let strict = format!("{text}\nmin_height = 1000000\n");
    let (verdicts, _) = run(&strict);
    let failed: Vec<&Verdict> = verdicts.iter().filter(|verdict| !verdict.ok).collect();
    assert_eq!(failed.len(), 1, "{verdicts:?}");
    assert_eq!(failed[0].expectation, "height at least 1000000");
    assert!(failed[0].observed.starts_with("height "), "{:?}", failed[0]);
}

#[test]
fn a_scenario_replays_to_the_same_trace() {
    let text = std::fs::read_to_string(examples()[0].clone()).expect("readable");
    assert_eq!(run(&text).1, run(&text).1);
}
