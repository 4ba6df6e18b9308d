//! The simulation report from the library side: recording the time series changes nothing about
//! a run (trace lines, trace hash, report), and the numbers a run report plots are the
//! `SimReport`'s, worked out again here from the figures in the page's data block. The binary's
//! `--report` (against `--json`) and rendering in Chromium are in `tests/sim_report.rs`.

use serde_json::Value;
use tinychain_sim::engine::{SimReport, Simulation};
use tinychain_sim::options::{parse_behaviours, parse_faults, SimOptions};
use tinychain_sim::report::{run_html, sweep_html};
use tinychain_sim::series::RunFigures;

fn options(seed: u64, byzantine: usize) -> SimOptions {
    let mut options = SimOptions::new(4, seed, 150_000);
    options.tx_rate_per_s = 5;
    options.faults = parse_faults("all").expect("valid fault list");
    options.keep_trace = true;
    if byzantine > 0 {
        options.byzantine = byzantine;
        options.behaviours = parse_behaviours("all").expect("valid behaviour list");
    }
    options
}

fn run_recorded(options: SimOptions) -> (SimReport, Vec<String>, RunFigures) {
    let mut simulation = Simulation::new(options.clone());
    simulation.run_until(options.duration_ms);
    let figures = simulation.figures();
    let (report, trace) = simulation.run();
    (report, trace, figures)
}

/// The JSON of the page's `report-data` block.
fn report_data(html: &str) -> Value {
    let open = "<script type=\"application/json\" id=\"report-data\">";
    let start = html.find(open).expect("the page has a report-data block") + open.len();
    let end = start + html[start..].find("</script>").expect("the block is closed");
    serde_json::from_str(&html[start..end]).expect("the block is JSON")
}

/// Nearest-rank percentiles as `--json` states them: the value at rank (n - 1) x fraction.
fn percentiles(values: &[u64]) -> Value {
    let mut values = values.to_vec();
    values.sort_unstable();
    if values.is_empty() {
        return serde_json::json!({ "p50": 0, "p99": 0, "max": 0 });
    }
    let at = |per_mille: usize| values[(values.len() - 1) * per_mille / 1000];
    serde_json::json!({ "p50": at(500), "p99": at(990), "max": values[values.len() - 1] })
}

fn numbers(list: &Value, field: &str) -> Vec<u64> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|item| item[field].as_u64().unwrap_or_else(|| panic!("{field} is a number in {item}")))
        .collect()
}

#[test]
fn recording_the_series_changes_no_trace_line_hash_or_figure() {
    for (seed, byzantine) in [(7, 0), (11, 1)] {
        let plain = options(seed, byzantine);
        let (report, trace) = Simulation::new(plain.clone()).run();
        let mut recording = plain;
        recording.record_series = true;
        let (recorded_report, recorded_trace, figures) = run_recorded(recording);
        assert_eq!(trace, recorded_trace, "seed {seed}: the trace lines");
        assert_eq!(report.trace_hash, recorded_report.trace_hash, "seed {seed}: the trace hash");
        assert_eq!(
            serde_json::to_value(&report).expect("serializes"),
            serde_json::to_value(&recorded_report).expect("serializes"),
            "seed {seed}: the report"
        );
        assert!(report.faults_injected > 0 && !figures.fault_bands.is_empty(), "seed {seed} injects faults");
    }
}

#[test]
fn the_run_report_plots_the_numbers_the_report_gives() {
    let mut recording = options(7, 0);
    recording.record_series = true;
    let (report, _, figures) = run_recorded(recording);
    assert!(report.passed(), "{report:?}");
    assert!(report.txs_committed > 100 && report.reorgs > 0, "a run with transfers and a reorg: {report:?}");
    let html = run_html(&report, &figures, &[]).expect("the report draws");
    let data = report_data(&html);
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(data["kind"], "run");
    assert_eq!(data["report"], json);
    let figures = &data["figures"];
    // Worked out here from the plotted figures, against the report's own fields.
    assert_eq!(percentiles(&numbers(&figures["blocks"], "interval_ms")), json["interval_ms"]);
    assert_eq!(percentiles(&numbers(&figures["finality"], "lag_ms")), json["finality_lag_ms"]);
    let latencies: Vec<u64> =
        figures["tx_latency_ms"].as_array().expect("a list").iter().filter_map(Value::as_u64).collect();
    assert_eq!(latencies.len() as u64, report.txs_committed);
    assert_eq!(percentiles(&latencies), json["tx_latency_ms"]);
    let producers = numbers(&figures["blocks"], "producer");
    let shares: Vec<u64> = (0..4)
        .map(|validator| producers.iter().filter(|p| **p == validator).count() as u64 * 1_000 / producers.len() as u64)
        .collect();
    assert_eq!(serde_json::to_value(shares).expect("serializes"), json["production_share"]);
    assert_eq!(producers.len() as u64, report.height);
    let reference = figures["heights"][figures["reference"].as_u64().expect("an index") as usize]
        .as_array()
        .expect("points")
        .last()
        .cloned()
        .expect("a point");
    assert_eq!(
        (reference["tip"].as_u64(), reference["final_height"].as_u64()),
        (Some(report.height), Some(report.final_height))
    );
    let depths = numbers(&figures["reorgs"], "depth");
    assert_eq!((depths.len() as u64, depths.iter().max().copied()), (report.reorgs, Some(report.max_reorg_depth)));
    assert_eq!(figures["faults"].as_array().map(Vec::len), Some(report.faults_injected as usize));
    // Every band lies in the run and is labelled; heal-all ends all but the ones after it.
    let heal_all_ms = figures["heal_all_ms"].as_u64().expect("faults heal");
    for band in figures["fault_bands"].as_array().expect("bands") {
        let (start, end) = (band["start_ms"].as_u64().unwrap_or(0), band["end_ms"].as_u64().unwrap_or(0));
        assert!(start <= end && end <= heal_all_ms, "{band}");
        assert!(band["label"].as_str().is_some_and(|label| !label.is_empty()), "{band}");
    }
    let bucketed: u64 = numbers(&data["latency_buckets"], "count").iter().sum();
    assert_eq!(bucketed, report.txs_committed);
    assert_eq!(data["plotted"]["interval_ms"], json["interval_ms"]);
    // Six plots, each with its title inside its SVG.
    let plots: Vec<&str> =
        html.split("<svg").skip(1).map(|rest| &rest[..rest.find("</svg>").expect("closed")]).collect();
    assert_eq!(plots.len(), 6);
    for (plot, title) in plots.iter().zip([
        "Faults on the timeline",
        "Block interval over time",
        "Tip and final height of each node",
        "Finality lag on the reference node (n0)",
        "Production share per validator",
        "Transfer latency, submitted to committed",
    ]) {
        assert!(plot.contains(&format!("\n{title}\n</text>")), "the plot draws its title {title:?}");
    }
}

#[test]
fn a_sweep_report_has_one_row_per_seed_with_its_verdict_and_replay_command() {
    let reports: Vec<SimReport> = (1..=3)
        .map(|seed| {
            let mut options = options(seed, 0);
            options.duration_ms = 60_000;
            options.keep_trace = false;
            Simulation::new(options).run().0
        })
        .collect();
    let command = "tinychain sim --nodes 4 --seeds 1..3 --duration 1m --faults all --tx-rate 5";
    let html = sweep_html(&reports, command).expect("the report draws");
    assert!(reports.iter().all(SimReport::passed), "{reports:?}");
    assert!(html.contains("<h1>Simulation sweep <span class=\"verdict pass\">PASS</span></h1>"));
    for report in &reports {
        let row_start = html.find(&format!("data-seed=\"{}\"", report.seed)).expect("a row per seed");
        let row = &html[row_start..row_start + html[row_start..].find("</tr>").expect("a closed row")];
        assert!(row.contains(&format!("data-passed=\"{}\"", report.passed())), "{row}");
        assert!(row.contains(&format!("<code>{}</code>", report.replay)), "{row}");
        assert!(report.replay.contains(&format!("--seed {} ", report.seed)));
    }
    assert_eq!(html.matches("data-seed=").count(), 3);
    let data = report_data(&html);
    assert_eq!(data["kind"], "sweep");
    assert_eq!(data["reports"].as_array().map(Vec::len), Some(3));
    let depths: Vec<u64> = reports.iter().map(|report| report.max_reorg_depth).collect();
    assert_eq!(numbers(&data["buckets"]["max_reorg_depth"], "count").iter().sum::<u64>(), 3);
    let deepest = numbers(&data["buckets"]["max_reorg_depth"], "to").last().copied().unwrap_or(0);
    assert!(depths.iter().all(|depth| *depth < deepest));
    assert_eq!(html.matches("<svg").count(), 3);
}

#[test]
fn a_failing_seed_is_a_failed_row_and_fails_the_sweep() {
    let mut options = options(2, 0);
    options.duration_ms = 30_000;
    let passing = Simulation::new(options).run().0;
    let mut failing = passing.clone();
    failing.seed = 3;
    failing.safety_violations = 1;
    failing.violations = vec!["t=1ms SAFETY: made up for this test".into()];
    let html = sweep_html(&[passing, failing], "tinychain sim --seeds 2..3").expect("the report draws");
    assert!(html.contains("<span class=\"verdict fail\">FAIL</span>"));
    assert!(html.contains("failing: [3]"));
    assert!(html.contains("<tr class=\"failed\" data-seed=\"3\" data-passed=\"false\"><td>3</td><td>FAIL</td>"));
    assert!(html.contains("<tr class=\"passed\" data-seed=\"2\" data-passed=\"true\"><td>2</td><td>pass</td>"));
    assert_eq!(report_data(&html)["failing_seeds"], serde_json::json!([3]));
}

#[test]
fn a_scenario_report_lists_its_expectations() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/scenarios/producer-crash.toml"))
        .expect("the example scenario");
    let mut scenario = tinychain_sim::scenario::parse(&text).expect("a valid scenario");
    scenario.options.record_series = true;
    let (report, _, figures) = run_recorded(scenario.options.clone());
    let verdicts = tinychain_sim::scenario::check(&scenario.expect, &report);
    assert!(verdicts.len() > 1);
    let html = run_html(&report, &figures, &verdicts).expect("the report draws");
    assert!(html.contains("<h2>Scenario expectations</h2>"));
    for verdict in &verdicts {
        assert!(html.contains(&format!("<td>{}</td>", verdict.expectation)), "{verdict:?}");
    }
    // The scripted crash of the next producer is drawn as the crash of the validator it picked.
    let bands = &report_data(&html)["figures"]["fault_bands"];
    assert!(bands.as_array().expect("bands").iter().any(|band| band["kind"] == "crash"), "{bands}");
}
