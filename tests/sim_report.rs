//! `tinychain sim --report` from the command line: the page's plotted numbers are the ones
//! `--json` prints for the same seeded run (two separate processes, the report one recording its
//! time series and the other not), the page renders in headless Chromium with its six plots and
//! their titles, and a sweep's page has one row per seed with its verdict and replay command.
//!
//! Chromium is required: the Debian package `chromium` (`.ci/run` installs it when missing).
//! Without it these tests fail and say so; they never skip. A screenshot of the run report is
//! left in `target/tmp/sim-report/run/run.png` for a person to look at.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The arguments of the run both ways: faults of every kind, transfers, 4 nodes, 3 minutes.
const RUN: &[&str] = &["sim", "--nodes", "4", "--seed", "3", "--duration", "3m", "--faults", "all", "--tx-rate", "5"];

fn output_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sim-report").join(name);
    std::fs::create_dir_all(&dir).expect("create the output directory");
    dir
}

/// Runs `tinychain` with these arguments; returns its stdout (any exit status: a failing seed
/// exits 1 and still writes its report).
fn tinychain(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tinychain")).args(args).output().expect("run tinychain");
    assert!(
        output.status.code().is_some_and(|code| code <= 1),
        "tinychain {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// The JSON of a page's `report-data` block.
fn report_data(html: &str) -> Value {
    let open = "<script type=\"application/json\" id=\"report-data\">";
    let start = html.find(open).expect("the page has a report-data block") + open.len();
    let end = start + html[start..].find("</script>").expect("the block is closed");
    serde_json::from_str(&html[start..end]).expect("the block is JSON")
}

/// Nearest-rank percentiles as `--json` states them: the value at rank (n - 1) x fraction.
fn percentiles(mut values: Vec<u64>) -> Value {
    values.sort_unstable();
    let at = |per_mille: usize| values.get((values.len().max(1) - 1) * per_mille / 1000).copied().unwrap_or(0);
    serde_json::json!({ "p50": at(500), "p99": at(990), "max": values.last().copied().unwrap_or(0) })
}

fn numbers(list: &Value, field: &str) -> Vec<u64> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|item| item[field].as_u64().unwrap_or_else(|| panic!("{field} is a number in {item}")))
        .collect()
}

fn passed(report: &Value) -> bool {
    report["safety_violations"] == 0 && (report["liveness_ok"] == true || report["beyond_fault_tolerance"] == true)
}

/// Headless Chromium's view of a file: the DOM after rendering (`--dump-dom`), or a screenshot.
fn chromium(args: &[&str], file: &Path) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the simulation report tests render the page in headless Chromium. \
         Install the Debian package `chromium` (apt-get install chromium; .ci/run does it when missing)"
    );
    let url = format!("file://{}", file.display());
    // A profile of its own, so browsers started by tests running at the same time never hand
    // their page to one another.
    let profile = tempfile::tempdir().expect("a temporary profile directory");
    let output = Command::new(CHROMIUM)
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(&url)
        .output()
        .expect("run chromium");
    assert!(output.status.success(), "chromium {args:?} {url} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("utf-8 DOM")
}

#[test]
fn the_report_plots_the_numbers_json_gives_and_renders_in_chromium() {
    let dir = output_dir("run");
    let page = dir.join("run.html");
    let json: Value = serde_json::from_str(tinychain(&[RUN, &["--json"]].concat()).trim()).expect("one JSON object");
    tinychain(&[RUN, &["--report", page.to_str().expect("a UTF-8 path")]].concat());
    let html = std::fs::read_to_string(&page).expect("the report was written");
    let data = report_data(&html);
    assert_eq!(data["kind"], "run");

    // The same run: the report's copy of the report is --json's (but for the wall time).
    let mut reported = data["report"].clone();
    reported["wall_ms"] = json["wall_ms"].clone();
    assert_eq!(reported, json, "the report's run is the --json run");
    assert!(json["txs_committed"].as_u64() > Some(100) && json["faults_injected"].as_u64() > Some(5), "{json}");

    // Every plotted figure, worked out here from the plotted points, is --json's.
    let figures = &data["figures"];
    let blocks = &figures["blocks"];
    assert_eq!(percentiles(numbers(blocks, "interval_ms")), json["interval_ms"]);
    assert_eq!(percentiles(numbers(&figures["finality"], "lag_ms")), json["finality_lag_ms"]);
    let latencies: Vec<u64> =
        figures["tx_latency_ms"].as_array().expect("a list").iter().filter_map(Value::as_u64).collect();
    assert_eq!(latencies.len() as u64, json["txs_committed"].as_u64().expect("a count"));
    assert_eq!(percentiles(latencies), json["tx_latency_ms"]);
    let producers = numbers(blocks, "producer");
    assert_eq!(producers.len() as u64, json["height"].as_u64().expect("a height"));
    let shares: Vec<u64> = (0..4)
        .map(|validator| {
            producers.iter().filter(|producer| **producer == validator).count() as u64 * 1_000 / producers.len() as u64
        })
        .collect();
    assert_eq!(serde_json::json!(shares), json["production_share"]);
    let reference = figures["reference"].as_u64().expect("an index") as usize;
    let last = figures["heights"][reference].as_array().and_then(|points| points.last().cloned()).expect("a point");
    assert_eq!((&last["tip"], &last["final_height"]), (&json["height"], &json["final_height"]));
    let depths = numbers(&figures["reorgs"], "depth");
    assert_eq!(serde_json::json!(depths.len()), json["reorgs"]);
    assert_eq!(serde_json::json!(depths.iter().max().copied().unwrap_or(0)), json["max_reorg_depth"]);
    assert_eq!(serde_json::json!(figures["faults"].as_array().map(Vec::len)), json["faults_injected"]);
    assert!(!figures["fault_bands"].as_array().expect("bands").is_empty());

    // Rendered by a real browser: six SVG plots, each with its title, and the sections.
    let dom = chromium(&["--dump-dom"], &page);
    let plots: Vec<&str> =
        dom.split("<svg").skip(1).map(|rest| &rest[..rest.find("</svg>").expect("closed")]).collect();
    assert_eq!(plots.len(), 6, "six plots in the rendered page");
    let titles = [
        "Faults on the timeline",
        "Block interval over time",
        "Tip and final height of each node",
        "Finality lag on the reference node (n0)",
        "Production share per validator",
        "Transfer latency, submitted to committed",
    ];
    for (plot, title) in plots.iter().zip(titles) {
        assert!(plot.contains(title), "the rendered plot shows {title:?}");
        assert!(
            plot.matches("<rect").count() + plot.matches("<polyline").count() + plot.matches("<circle").count() > 10
        );
    }
    for heading in ["Faults", "Block interval", "Heights", "Finality lag", "Production share", "Transfer latency"] {
        assert!(dom.contains(&format!("<h2>{heading}</h2>")), "the page has a {heading:?} section");
    }
    assert!(dom.contains(json["replay"].as_str().expect("a replay command")), "the page names its replay command");
    let screenshot = dir.join("run.png");
    chromium(&["--window-size=1000,3400", &format!("--screenshot={}", screenshot.display())], &page);
    assert!(std::fs::metadata(&screenshot).is_ok_and(|file| file.len() > 10_000), "a screenshot of the page");
}

#[test]
fn a_sweep_report_has_a_row_per_seed_with_its_verdict_and_replay_command() {
    let dir = output_dir("sweep");
    let page = dir.join("sweep.html");
    let stdout = tinychain(&[
        "sim",
        "--nodes",
        "4",
        "--seeds",
        "4..6",
        "--duration",
        "1m",
        "--faults",
        "all",
        "--json",
        "--report",
        page.to_str().expect("a UTF-8 path"),
    ]);
    let runs: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .filter(|object| object.get("summary").is_none())
        .collect();
    assert_eq!(runs.len(), 3);
    let html = std::fs::read_to_string(&page).expect("the sweep report was written");
    let dom = chromium(&["--dump-dom"], &page);
    assert_eq!(dom.matches("data-seed=").count(), 3, "one row per seed in the rendered table");
    for run in &runs {
        let seed = run["seed"].as_u64().expect("a seed");
        let row_start = dom.find(&format!("data-seed=\"{seed}\"")).expect("a row for the seed");
        let row = &dom[row_start..row_start + dom[row_start..].find("</tr>").expect("a closed row")];
        let verdict = if passed(run) { "pass" } else { "FAIL" };
        assert!(
            row.contains(&format!("data-passed=\"{}\"", passed(run))) && row.contains(&format!(">{verdict}<")),
            "{row}"
        );
        let replay = run["replay"].as_str().expect("a replay command");
        assert!(replay.starts_with(&format!("tinychain sim --nodes 4 --seed {seed} ")), "{replay}");
        assert!(row.contains(&format!("<code>{replay}</code>")), "the row replays its seed: {row}");
    }
    let data = report_data(&html);
    assert_eq!(data["kind"], "sweep");
    assert_eq!(data["command"], "tinychain sim --nodes 4 --seeds 4..6 --duration 1m --faults all");
    for (field, histogram) in [("max_final_gap_ms", "max-gap"), ("max_reorg_depth", "reorg-depth")] {
        let counted: u64 = numbers(&data["buckets"][field], "count").iter().sum();
        assert_eq!(counted, 3, "{field}: every seed in the histogram");
        assert!(dom.contains(&format!("<section id=\"{histogram}\">")));
    }
    assert!(dom.contains("<section id=\"recovery\">"));
    assert_eq!(dom.matches("<svg").count(), 3, "three histograms");
}
