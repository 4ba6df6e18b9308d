//! `tinychain load` against a real 4-node testnet (fast timing: 200 ms blocks), run as a process
//! the way an operator runs it: below saturation every transfer is admitted, the network commits
//! them, and the JSON summary holds every figure in a consistent order.

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use support::{serial, Testnet, EXE};

#[test]
fn load_below_saturation_commits_everything_and_reports_ordered_latencies() {
    let _serial = serial();
    let mut net = Testnet::init(4, 200, 1_000);
    net.start_all();
    net.wait_for(Duration::from_secs(30), "every node at a final height of 2", |net| {
        (0..4).all(|index| net.finalized(index).is_some_and(|(height, _)| height >= 2)).then_some(())
    });
    let testnet_file = net.path().join("testnet.json");
    let started = Instant::now();
    let output = Command::new(EXE)
        .args(["load", "--testnet", testnet_file.to_str().unwrap()])
        .args(["--accounts", "16", "--duration", "5s", "--rate", "200", "--json"])
        .env_remove("TINYCHAIN_PASSPHRASE")
        .env_remove("TINYCHAIN_WALLET")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tinychain load failed: {stderr}\n{stdout}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("{error}: {stdout}"));
    eprintln!("tinychain load took {:?}: {report}", started.elapsed());

    for field in [
        "offered_tps",
        "committed_tps",
        "latency_committed_ms",
        "latency_final_ms",
        "rejected",
        "duration_ms",
        "submitted",
        "accepted",
        "committed",
        "cpu",
    ] {
        assert!(report.get(field).is_some(), "no {field:?} in {report}");
    }
    let number = |field: &str| report[field].as_f64().unwrap_or_else(|| panic!("{field} is not a number: {report}"));
    assert!(number("duration_ms") >= 5_000.0, "{report}");
    assert!(number("offered_tps") > 150.0 && number("offered_tps") <= 210.0, "{report}");
    assert!(number("committed_tps") > 0.0, "{report}");
    // Below saturation nothing is refused and everything admitted is committed.
    assert_eq!(report["rejected"], serde_json::json!({}), "{report}");
    assert_eq!(report["failed_calls"], 0, "{report}");
    assert_eq!(report["submitted"], report["accepted"], "{report}");
    assert_eq!(report["accepted"], report["committed"], "{report}");

    let percentiles = |field: &str| -> [u64; 3] {
        let object = &report[field];
        ["p50", "p90", "p99"]
            .map(|key| object[key].as_u64().unwrap_or_else(|| panic!("{field}.{key} is not a number: {report}")))
    };
    let committed = percentiles("latency_committed_ms");
    let finalized = percentiles("latency_final_ms");
    assert!(committed[0] <= committed[1] && committed[1] <= committed[2], "{report}");
    assert!(finalized[0] <= finalized[1] && finalized[1] <= finalized[2], "{report}");
    for (to_committed, to_final) in committed.iter().zip(&finalized) {
        assert!(to_committed <= to_final, "{report}");
    }
    // The testnet's node processes are local: each one's CPU is measured.
    assert_eq!(report["cpu"]["local"], true, "{report}");
    for node in report["cpu"]["nodes"].as_array().unwrap() {
        assert!(node["cpu_percent_of_one_core"].as_f64().is_some_and(|percent| percent > 0.0), "{report}");
    }
    net.stop_all();
}
