//! `GET /metrics` of a real 3-node testnet (`tinychain node` processes on loopback, 100 ms
//! blocks): Prometheus' own linter (`promtool check metrics`) has nothing to say about any
//! node's text, and the figures are the node's: blocks were timed, each other node is a
//! connected peer with bytes both ways, the tip height is the one `status` gives, a transfer
//! submitted to a node is timed to committed and to final there, the election's ranks are those
//! of `get_election`, the RPC calls of this test were timed, and the process figures are there.
//!
//! promtool comes from the Debian package `prometheus` (`.ci/run` installs it); without it the
//! test fails saying so, it is never skipped.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::load::{chain_id, development_key, minimum_fee};
use support::{serial, Testnet};
use tinychain_core::codec;
use tinychain_core::validate::sign_transfer;

const NODES: usize = 3;

/// promtool on the PATH or where Debian puts it; a clear failure otherwise.
fn promtool() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("promtool")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from("/usr/bin/promtool")]).find(|path| path.is_file()).unwrap_or_else(|| {
        panic!(
            "promtool is not installed: this test checks /metrics with it. Install the Debian package \
             `prometheus` (apt-get install prometheus; .ci/run does it when missing)"
        )
    })
}

/// `promtool check metrics` over `text`: (succeeded, everything it printed).
fn promtool_check(promtool: &PathBuf, text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), printed)
}

fn get_metrics(net: &Testnet, index: usize) -> String {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).http_status_as_error(false).build(),
    );
    let mut response = agent.get(format!("{}/metrics", net.nodes[index].rpc)).call().unwrap();
    assert_eq!(response.status().as_u16(), 200, "GET /metrics on node {index}");
    let content_type = response.headers().get("content-type").unwrap().to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.body_mut().read_to_string().unwrap()
}

/// Every sample of an exposition: series (name and labels as written) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
            (series.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {line}")))
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, series: &str, text: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

fn tip_height(net: &Testnet, index: usize) -> u64 {
    net.tip(index).unwrap_or_else(|| panic!("node {index} answers status")).0
}

#[test]
fn a_live_testnets_metrics_pass_promtool_and_tell_the_truth() {
    let _serial = serial();
    let promtool = promtool();
    let mut net = Testnet::init(NODES, 100, 1_000);
    net.start_all();
    net.wait_for(Duration::from_secs(60), "every node linked to every other and at height 5", |net| {
        (0..NODES)
            .all(|index| {
                net.status(index).is_some_and(|status| {
                    status["peers"].as_u64() == Some(NODES as u64 - 1) && status["tip"]["height"].as_u64() >= Some(5)
                })
            })
            .then_some(())
    });

    // One transfer submitted to node 0 once its mempool is synced, followed to final.
    let funder = development_key(&net);
    let chain_id = chain_id(&net);
    let nonce = net.wait_for(Duration::from_secs(30), "node 0 offering a pending nonce", |net| {
        net.rpc_ok(0, "get_account", json!({ "address": funder.address().to_string() }))["pending_nonce"].as_u64()
    });
    let recipient = tinychain_core::testkit::seeded_key("metrics", 0).address();
    let transfer = sign_transfer(&funder, &chain_id, recipient, 1_000, minimum_fee(&net), nonce);
    let submitted = net.rpc_ok(0, "submit_tx", json!({ "tx": hex::encode(codec::encode(&transfer)) }));
    let id = submitted["id"].as_str().unwrap().to_string();
    net.wait_for(Duration::from_secs(60), "the transfer final on node 0", |net| {
        (net.rpc_ok(0, "get_tx", json!({ "id": id.as_str() }))["status"] == "final").then_some(())
    });

    for index in 0..NODES {
        let tip_before = tip_height(&net, index);
        let text = get_metrics(&net, index);
        let tip_after = tip_height(&net, index);
        let (passed, printed) = promtool_check(&promtool, &text);
        assert!(passed && printed.is_empty(), "promtool check metrics on node {index}:\n{printed}\n---\n{text}");
        let samples = samples(&text);
        let value = |series: &str| sample(&samples, series, &text);

        // Blocks were committed and timed one after the other.
        assert!(value("tinychain_block_interval_seconds_count") > 0.0, "node {index}:\n{text}");
        assert!(value("tinychain_blocks_committed_total") >= 5.0, "node {index}:\n{text}");
        // The tip gauge is the tip `status` gives (blocks come every 100 ms, so between the
        // status just before the scrape and the one just after).
        let tip = value("tinychain_tip_height");
        assert!(
            tip_before as f64 <= tip && tip <= tip_after as f64,
            "node {index}: {tip_before} <= {tip} <= {tip_after}"
        );
        assert!(value("tinychain_final_height") <= value("tinychain_justified_height"), "node {index}:\n{text}");
        assert!(value("tinychain_justified_height") <= tip, "node {index}:\n{text}");
        assert_eq!(value("tinychain_peers_connected"), (NODES - 1) as f64, "node {index}:\n{text}");

        // Every other node is a connected peer, with bytes both ways and heard from lately.
        let mut peers = 0;
        for (other, node) in net.nodes.iter().enumerate() {
            let label = format!("{{peer=\"{}\"}}", node.name);
            if other == index {
                assert!(!samples.contains_key(&format!("tinychain_peer_connected{label}")), "not its own peer");
                continue;
            }
            peers += 1;
            assert_eq!(value(&format!("tinychain_peer_connected{label}")), 1.0, "node {index}:\n{text}");
            assert!(value(&format!("tinychain_peer_received_bytes_total{label}")) > 0.0, "node {index}:\n{text}");
            assert!(value(&format!("tinychain_peer_sent_bytes_total{label}")) > 0.0, "node {index}:\n{text}");
            let last_seen = value(&format!("tinychain_peer_last_seen_timestamp_seconds{label}"));
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
            assert!(last_seen > now - 60.0 && last_seen <= now + 1.0, "node {index}: last seen {last_seen}, now {now}");
        }
        assert_eq!(peers, NODES - 1);

        // The election: each validator's rank is `get_election`'s for the same next height
        // (asked again when a block came in between).
        let ranks: BTreeMap<String, f64> = samples
            .iter()
            .filter_map(|(series, value)| {
                let name = series.strip_prefix("tinychain_validator_rank{validator=\"")?.strip_suffix("\"}")?;
                Some((name.to_string(), *value))
            })
            .collect();
        assert_eq!(ranks.len(), NODES, "node {index}:\n{text}");
        if tip_before == tip_after {
            let election = net.rpc_ok(index, "get_election", json!({}));
            if election["height"].as_u64() == Some(tip_after + 1) {
                for candidate in election["candidates"].as_array().unwrap() {
                    let name = candidate["name"].as_str().unwrap();
                    assert_eq!(ranks[name], candidate["rank"].as_f64().unwrap(), "node {index}: {election}\n{text}");
                }
            }
        }
        let mut sorted: Vec<f64> = ranks.values().copied().collect();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(sorted, (0..NODES).map(|rank| rank as f64).collect::<Vec<_>>(), "node {index}: one rank each");
        for node in &net.nodes {
            let label = format!("{{validator=\"{}\"}}", node.name);
            assert_eq!(value(&format!("tinychain_validator_jailed{label}")), 0.0, "node {index}:\n{text}");
            assert!(samples.contains_key(&format!("tinychain_validator_missed_turns_total{label}")), "{text}");
        }

        // This test's own calls were timed by method.
        assert!(value("tinychain_rpc_request_duration_seconds_count{method=\"status\"}") > 0.0, "{text}");

        // The process.
        assert!(value("process_resident_memory_bytes") > 1_000_000.0, "node {index}:\n{text}");
        assert!(value("process_cpu_seconds_total") > 0.0, "node {index}:\n{text}");
        assert!(value("process_open_fds") > 3.0, "node {index}:\n{text}");
    }

    // Node 0 saw the transfer first (it was submitted there): timed to committed and to final.
    let text = get_metrics(&net, 0);
    let samples = samples(&text);
    assert!(sample(&samples, "tinychain_transfer_latency_to_committed_seconds_count", &text) >= 1.0, "{text}");
    assert!(sample(&samples, "tinychain_transfer_latency_to_final_seconds_count", &text) >= 1.0, "{text}");
    assert!(sample(&samples, "tinychain_storage_commit_duration_seconds_count", &text) >= 5.0, "{text}");
    assert!(sample(&samples, "tinychain_core_step_duration_seconds_count", &text) > 0.0, "{text}");
    assert!(
        sample(&samples, "tinychain_rpc_request_duration_seconds_count{method=\"submit_tx\"}", &text) == 1.0,
        "{text}"
    );
}
