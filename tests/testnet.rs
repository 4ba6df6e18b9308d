//! Real `tinychain` node processes on loopback over TLS, each with its own redb: a 4-node testnet
//! produces blocks on time and agrees; a killed producer is replaced by the fallback after the
//! timeout and, restarted, catches up and rejoins; a node killed with SIGKILL again and again keeps
//! every block it had acknowledged; malformed RPC gets errors while the node keeps producing; and
//! `tinychain testnet` itself starts, shows blocks and stops its nodes.
//!
//! Timing assertions are generous (a loaded 2-core machine); what is asserted is what happened:
//! who produced, at which rank, what each database holds.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{post_raw, serial, Testnet, EXE};
use tinychain_core::genesis::Genesis;
use tinychain_core::types::Hash;
use tinychain_node::storage::Storage;

/// The ranked node ids of the election for `height` (or the next block when `None`).
fn ranking(net: &Testnet, index: usize, height: Option<u64>) -> Vec<Value> {
    let params = match height {
        Some(height) => json!({ "height": height }),
        None => json!({}),
    };
    net.rpc_ok(index, "get_election", params)["candidates"].as_array().unwrap().clone()
}

fn load_genesis(net: &Testnet) -> Genesis {
    serde_json::from_str(&std::fs::read_to_string(net.genesis_path()).unwrap()).unwrap()
}

#[test]
fn a_four_node_testnet_produces_a_block_about_every_two_seconds_and_all_nodes_agree() {
    let _serial = serial();
    // The chain defaults: 2 s blocks, 10 s producer timeout.
    let mut net = Testnet::init(4, 2_000, 10_000);
    net.start_all();
    let target = 8;
    net.wait_for(Duration::from_secs(120), "height 8 on every node", |net| {
        (0..4).all(|index| net.tip(index).is_some_and(|(height, _)| height >= target)).then_some(())
    });
    // Block timestamps: rank 0 may produce 2 s after its parent, and does so promptly.
    let headers: Vec<Value> = (1..=target).map(|height| net.header(0, height).unwrap()).collect();
    let mut intervals: Vec<u64> = headers
        .windows(2)
        .map(|pair| pair[1]["timestamp_ms"].as_u64().unwrap() - pair[0]["timestamp_ms"].as_u64().unwrap())
        .collect();
    assert!(intervals.iter().all(|interval| *interval >= 2_000), "no block before its time: {intervals:?}");
    intervals.sort_unstable();
    let median = intervals[intervals.len() / 2];
    assert!(median <= 3_000, "a block about every 2 s: intervals {intervals:?}");
    assert!(headers.iter().all(|header| header["rank"].as_u64() == Some(0)), "healthy: every block at rank 0");
    // Every node holds the same chain.
    for height in [1, target / 2, target] {
        let hashes: Vec<Value> = (0..4).map(|index| net.header(index, height).unwrap()["hash"].clone()).collect();
        assert!(hashes.windows(2).all(|pair| pair[0] == pair[1]), "height {height}: {hashes:?}");
    }
    // Finality follows the tip on every node.
    net.wait_for(Duration::from_secs(60), "finality on every node", |net| {
        (0..4).all(|index| net.finalized(index).is_some_and(|(height, _)| height >= 4)).then_some(())
    });
    for index in 0..4 {
        assert!(net.stop(index), "node {index} stops cleanly on SIGTERM\n{}", net.log_tail(index, 20));
    }
    assert!(net.log(0).contains("block committed"), "the log shows each block");
}

#[test]
fn a_killed_producer_is_replaced_by_the_fallback_and_rejoins_after_a_restart() {
    let _serial = serial();
    let (interval_ms, timeout_ms) = (500, 3_000);
    let mut net = Testnet::init(4, interval_ms, timeout_ms);
    net.start_all();
    net.wait_for(Duration::from_secs(60), "height 5", |net| net.tip(0).filter(|(height, _)| *height >= 5));

    // Kill the next producer (rank 0 of the live election).
    let next = ranking(&net, 0, None);
    let producer_id = next[0]["node_id"].as_str().unwrap().to_string();
    let producer = net.nodes.iter().position(|node| node.id == producer_id).unwrap();
    let watcher = (producer + 1) % 4;
    net.kill9(producer);
    let killed_at = Instant::now();
    let (tip_at_kill, _) = net.tip(watcher).unwrap();

    // The first block after the kill that the dead node was elected for comes from a fallback.
    let (height, header) = net.wait_for(Duration::from_secs(60), "a block at a fallback rank", |net| {
        let (tip, _) = net.tip(watcher)?;
        (tip_at_kill + 1..=tip).find_map(|height| {
            let candidates = ranking(net, watcher, Some(height));
            (candidates[0]["node_id"].as_str() == Some(producer_id.as_str()))
                .then(|| (height, net.header(watcher, height).unwrap()))
        })
    });
    let parent = net.header(watcher, height - 1).unwrap();
    let gap = header["timestamp_ms"].as_u64().unwrap() - parent["timestamp_ms"].as_u64().unwrap();
    assert!(header["rank"].as_u64().unwrap() >= 1, "the dead producer's turn went to a fallback: {header}");
    assert_ne!(header["producer"].as_str(), Some(producer_id.as_str()));
    assert!(gap >= timeout_ms, "the fallback waited for the timeout: {gap} ms");
    assert!(gap <= timeout_ms + 7_000, "the fallback came within the timeout plus slack: {gap} ms");
    assert!(killed_at.elapsed() < Duration::from_secs(60));
    // The dead node drops to the end of the ranking for the blocks after that one.
    let next = ranking(&net, watcher, None);
    assert_eq!(next.last().unwrap()["node_id"].as_str(), Some(producer_id.as_str()), "the dead node is last: {next:?}");

    // Restarted, it catches up to the others' chain and its reports lift the demotion.
    net.start(producer);
    net.wait_for(Duration::from_secs(60), "the restarted node catching up", |net| {
        let (mine, _) = net.tip(producer)?;
        let (theirs, _) = net.tip(watcher)?;
        let common = mine.min(theirs);
        (mine + 2 >= theirs && net.header(producer, common)?["hash"] == net.header(watcher, common)?["hash"])
            .then_some(())
    });
    net.wait_for(Duration::from_secs(60), "the restarted node back in the ranking", |net| {
        let candidates = ranking(net, watcher, None);
        let entry = candidates.iter().find(|candidate| candidate["node_id"].as_str() == Some(producer_id.as_str()))?;
        entry["demotion"].is_null().then_some(())
    });
}

#[test]
fn a_node_killed_again_and_again_during_commits_keeps_every_block_it_acknowledged() {
    let _serial = serial();
    let mut net = Testnet::init(4, 200, 1_500);
    net.start_all();
    let genesis = load_genesis(&net);
    let victim = 3;
    net.wait_for(Duration::from_secs(60), "height 3", |net| net.tip(victim).filter(|(height, _)| *height >= 3));
    for round in 0..6u64 {
        // Acknowledged: what the node reported over RPC just before it was killed.
        let (acked_height, acked_hash) = net.tip(victim).unwrap();
        let (final_height, final_hash) = net.finalized(victim).unwrap();
        std::thread::sleep(Duration::from_millis(37 * round % 200));
        net.kill9(victim);
        let storage = Storage::open(&net.database(victim), &genesis)
            .unwrap_or_else(|error| panic!("round {round}: the database opens after SIGKILL: {error}"));
        let tip = storage.tip().unwrap();
        assert!(tip.height >= acked_height, "round {round}: tip {} below the acknowledged {acked_height}", tip.height);
        let block = storage.block_at(acked_height).unwrap().expect("the acknowledged block is stored");
        let stored_hash = tinychain_core::validate::block_hash(&block.header);
        assert_eq!(stored_hash, Hash::from_hex(&acked_hash).unwrap(), "round {round}: the acknowledged block");
        let final_block = storage.block_at(final_height).unwrap().unwrap();
        assert_eq!(tinychain_core::validate::block_hash(&final_block.header), Hash::from_hex(&final_hash).unwrap());
        assert!(storage.finalized().unwrap().height >= final_height, "round {round}: final never moves back");
        drop(storage);
        net.start(victim);
        net.wait_for(Duration::from_secs(60), "the victim answering again", |net| {
            net.tip(victim).filter(|(height, _)| *height > acked_height)
        });
    }
    // After all that, it is on the same chain as the others.
    net.wait_for(Duration::from_secs(60), "the victim agreeing with the others", |net| {
        let (mine, _) = net.tip(victim)?;
        let (theirs, _) = net.tip(0)?;
        let common = mine.min(theirs);
        (net.header(victim, common)?["hash"] == net.header(0, common)?["hash"]).then_some(())
    });
}

#[test]
fn malformed_rpc_requests_get_errors_and_the_node_keeps_producing() {
    let _serial = serial();
    let mut net = Testnet::init(1, 200, 1_000);
    net.start(0);
    net.wait_for(Duration::from_secs(60), "height 2", |net| net.tip(0).filter(|(height, _)| *height >= 2));
    let url = net.nodes[0].rpc.clone();
    let code = |body: &[u8]| -> i64 {
        let (status, text) = post_raw(&url, "application/json", body).unwrap();
        let reply: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("HTTP {status}: {text}"));
        reply["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("an error for {:?}: {text}", String::from_utf8_lossy(body)))
    };
    assert_eq!(code(b"{ not json"), -32700);
    assert_eq!(code(br#"{"jsonrpc":"1.0","id":1,"method":"status"}"#), -32600);
    assert_eq!(code(br#"{"jsonrpc":"2.0","id":1,"method":"no_such_method"}"#), -32601);
    assert_eq!(code(br#"{"jsonrpc":"2.0","id":1,"method":"get_block","params":{"height":"tall"}}"#), -32602);
    assert_eq!(code(br#"{"jsonrpc":"2.0","id":1,"method":"submit_tx","params":{"tx":"zz"}}"#), -32602);
    assert_eq!(code(br#"{"jsonrpc":"2.0","id":1,"method":"submit_tx","params":{"tx":"00ff00ff"}}"#), -32602);
    assert_eq!(code(br#"{"jsonrpc":"2.0","id":1,"method":"get_account","params":{"address":"tc1nope"}}"#), -32602);
    // A body over the limit is refused without being read into memory whole.
    let huge = vec![b' '; 4 * 1024 * 1024];
    let (status, _) = post_raw(&url, "application/json", &huge).unwrap_or((413, String::new()));
    assert!(status == 413 || status >= 400, "oversized body refused: HTTP {status}");
    // Raw garbage on the socket.
    let addr = url.trim_start_matches("http://");
    for garbage in [&b"\x00\x01\x02garbage\r\n\r\n"[..], b"GET / HTTP/9.9\r\n\r\n", &[0xff; 10_000][..]] {
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            use std::io::Write;
            let _ = stream.write_all(garbage);
        }
    }
    // Still serving and still producing.
    let (health, _) = ureq_get(&format!("{url}/health"));
    assert_eq!(health, 200);
    let (metrics_status, metrics) = ureq_get(&format!("{url}/metrics"));
    assert_eq!(metrics_status, 200);
    assert!(metrics.contains("\ntinychain_tip_height "), "{metrics}");
    let (before, _) = net.tip(0).unwrap();
    net.wait_for(Duration::from_secs(30), "more blocks after the garbage", |net| {
        net.tip(0).filter(|(height, _)| *height >= before + 3)
    });
    assert!(net.children[0].as_mut().unwrap().try_wait().unwrap().is_none(), "the node is still running");
}

fn ureq_get(url: &str) -> (u16, String) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).http_status_as_error(false).build(),
    );
    let mut response = agent.get(url).call().unwrap();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
}

#[test]
fn a_node_refuses_a_corrupt_database_and_leaves_it_untouched() {
    let _serial = serial();
    let net = Testnet::init(1, 200, 1_000);
    let database = net.database(0);
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();
    std::fs::write(&database, b"this is not a redb file, and it must survive").unwrap();
    let output = Command::new(EXE).args(["node", "--home", net.home(0).to_str().unwrap()]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chain.redb"), "the error names the database: {stderr}");
    assert_eq!(std::fs::read(&database).unwrap(), b"this is not a redb file, and it must survive");
}

/// `tinychain testnet` with 2 nodes and fast blocks in `path`, ports from `base`.
fn spawn_runner(path: &std::path::Path, base: u16, stdout: Stdio) -> std::process::Child {
    Command::new(EXE)
        .args(["testnet", "--nodes", "2", "--dir", path.to_str().unwrap(), "--base-port", &base.to_string()])
        .args(["--block-interval-ms", "300", "--producer-timeout-ms", "2000"])
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn tinychain_testnet_runs_nodes_shows_blocks_and_stops_them_on_sigterm() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net");
    let base = support::free_ports(4);
    let mut runner = spawn_runner(&path, base, Stdio::piped());
    let stdout = runner.stdout.take().unwrap();
    let (lines_sender, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_sender.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut seen = Vec::new();
    let mut rpc_urls = 0;
    let mut block_lines = 0;
    while Instant::now() < deadline && block_lines < 3 {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) else { continue };
        if line.contains("rpc http://127.0.0.1:") {
            rpc_urls += 1;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 5 && fields[0].parse::<u64>().is_ok() && fields[1].starts_with("node-") {
            block_lines += 1;
        }
        seen.push(line);
    }
    assert!(rpc_urls >= 2, "each node's RPC URL is printed:\n{}", seen.join("\n"));
    assert!(block_lines >= 3, "blocks are shown as they come:\n{}", seen.join("\n"));
    // testnet.json has exactly the documented shape.
    let layout: Value = serde_json::from_str(&std::fs::read_to_string(path.join("testnet.json")).unwrap()).unwrap();
    let nodes = layout["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    for node in nodes {
        let mut keys: Vec<&str> = node.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["home", "id", "name", "p2p", "rpc"]);
    }
    let rpc = format!("http://{}", nodes[0]["rpc"].as_str().unwrap());
    assert!(support::rpc_call(&ureq::Agent::new_with_defaults(), &rpc, "status", json!({})).is_some());
    // SIGTERM stops the runner and every node.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(runner.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopped_by = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = runner.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < stopped_by, "the runner stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "runner exit status {status}");
    assert!(support::rpc_call(&ureq::Agent::new_with_defaults(), &rpc, "status", json!({})).is_none(), "nodes stopped");
}

#[test]
fn nodes_do_not_outlive_a_killed_testnet_runner() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net");
    let base = support::free_ports(4);
    let mut runner = spawn_runner(&path, base, Stdio::null());
    let rpc = format!("http://127.0.0.1:{}", base + 1);
    let agent = ureq::Agent::new_with_defaults();
    let deadline = Instant::now() + Duration::from_secs(60);
    while support::rpc_call(&agent, &rpc, "status", json!({})).is_none() {
        assert!(Instant::now() < deadline, "the testnet's first node answers");
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIGKILL: the runner gets no chance to stop its nodes; the kernel tells them instead.
    runner.kill().unwrap();
    runner.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while support::rpc_call(&agent, &rpc, "status", json!({})).is_some() {
        assert!(Instant::now() < deadline, "the nodes stop when their runner dies");
        std::thread::sleep(Duration::from_millis(200));
    }
}
