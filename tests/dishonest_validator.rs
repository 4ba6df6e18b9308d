//! Issue 12, part 6: a dishonest validator on a real 4-node testnet over TLS. One node runs the
//! `tinychain` binary with the test-only misbehaviour (`TINYCHAIN_TEST_MISBEHAVIOUR=equivocate`,
//! compiled in only through the root package's dev-dependency on `tinychain-node` with the
//! `test-misbehaviour` feature): each block it produces, it also signs a second block on the same
//! parent and shows one to half of its peers, the other to the rest. The honest nodes must see
//! the two headers, gossip the evidence, commit it in a block and jail the equivocator: it ranks
//! last in `get_election` with the demotion `jailed`, `get_block` shows the evidence naming it,
//! `status` and `/metrics` list it as jailed, and the chain goes on finalizing with the honest
//! nodes agreeing on every final block.
//!
//! The genesis is the fast testnet one with a short production window (3 blocks, cap one fair
//! share: one block in three), so production rotates and the equivocator is elected within a
//! few blocks whatever the load on the machine; with the defaults, the two least-loaded nodes
//! could make every block and the equivocator might never produce.
//!
//! About 20 s of wall time on a 2-core machine. A failure prints every node's log tail and keeps
//! the testnet directory.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{node_log_filter, serial, Testnet, EXE};

const NODES: usize = 4;
const BLOCK_INTERVAL_MS: u64 = 200;
const PRODUCER_TIMEOUT_MS: u64 = 1_000;
/// The node that equivocates.
const EQUIVOCATOR: usize = 1;
/// Generous: the evidence is usually committed within a few seconds of the first equivocation.
const JAIL_TIMEOUT: Duration = Duration::from_secs(120);

/// Rewrites every copy of the genesis with a 3-block production window and a cap of one fair
/// share (one block in three), before any node has started.
fn rotate_production(net: &Testnet) {
    let mut paths = vec![net.path().join("genesis.json")];
    paths.extend(net.nodes.iter().map(|node| node.home.join("genesis.json")));
    for path in paths {
        let mut genesis: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        genesis["parameters"]["production_window_blocks"] = json!(3);
        genesis["parameters"]["production_cap_fair_shares"] = json!(1);
        std::fs::write(&path, serde_json::to_string_pretty(&genesis).unwrap()).unwrap();
    }
}

/// Starts node `index` as `Testnet::start` does, with the misbehaviour turned on.
fn start_equivocating(net: &mut Testnet, index: usize) {
    assert!(net.children[index].is_none(), "node {index} is already running");
    let home = net.nodes[index].home.clone();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(home.join("node.log")).unwrap();
    let child = Command::new(EXE)
        .args(["node", "--home", home.to_str().unwrap()])
        .env("RUST_LOG", node_log_filter())
        .env("TINYCHAIN_TEST_MISBEHAVIOUR", "equivocate")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    net.children[index] = Some(child);
}

/// The equivocator's line of the live election on node `index`, once it is jailed there.
fn jailed_candidate(net: &Testnet, index: usize, equivocator_id: &str) -> Option<Value> {
    let election = net.rpc(index, "get_election", json!({}))?.ok()?;
    let candidate =
        election["candidates"].as_array()?.iter().find(|candidate| candidate["node_id"] == equivocator_id)?.clone();
    (candidate["demotion"]["reason"] == "jailed").then_some(candidate)
}

fn panic_with_logs(net: &mut Testnet, what: &str) -> ! {
    let logs: Vec<String> = (0..NODES).map(|index| net.log_tail(index, 40)).collect();
    let kept = net.keep();
    panic!("{what}\ntestnet kept in {kept:?}\n{}", logs.join("\n"))
}

#[test]
fn an_equivocating_validator_is_caught_jailed_and_ranked_last_by_the_honest_nodes() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Testnet::init(NODES, BLOCK_INTERVAL_MS, PRODUCER_TIMEOUT_MS);
    rotate_production(&net);
    let honest: Vec<usize> = (0..NODES).filter(|index| *index != EQUIVOCATOR).collect();
    for index in &honest {
        net.start(*index);
    }
    start_equivocating(&mut net, EQUIVOCATOR);
    let equivocator_id = net.nodes[EQUIVOCATOR].id.clone();
    let equivocator_name = net.nodes[EQUIVOCATOR].name.clone();

    // Every honest node jails it (the election for the next block says so).
    net.wait_for(JAIL_TIMEOUT, "every honest node jailing the equivocator", |net| {
        honest.iter().all(|index| jailed_candidate(net, *index, &equivocator_id).is_some()).then_some(())
    });
    let jailed_after = started.elapsed();
    println!("every honest node jailed {equivocator_name} {:.1} s into the test", jailed_after.as_secs_f64());
    assert!(
        net.log(EQUIVOCATOR).contains("TEST MISBEHAVIOUR: equivocating"),
        "the equivocator did equivocate (and the misbehaviour is compiled into the test binary)"
    );

    for index in &honest {
        // get_election: jailed, ranked last, with the end of its jail.
        let election = net.rpc_ok(*index, "get_election", json!({}));
        let candidates = election["candidates"].as_array().unwrap();
        let last = candidates.last().unwrap();
        assert_eq!(
            last["node_id"],
            equivocator_id.as_str(),
            "node {index}: the jailed validator ranks last: {election}"
        );
        assert_eq!(last["demotion"]["reason"], "jailed", "node {index}: {last}");
        assert_eq!(last["rank"], NODES - 1, "node {index}: {last}");
        let until_height = last["jailed_until"].as_u64().unwrap();
        assert_eq!(last["demotion"]["until_height"], until_height, "node {index}: {last}");
        assert!(until_height > election["parent"]["height"].as_u64().unwrap(), "node {index}: the jail is running");
        assert!(
            candidates.iter().filter(|candidate| candidate["node_id"] != equivocator_id.as_str()).all(|candidate| {
                candidate["demotion"]["reason"] != "jailed" && candidate["jailed_until"].is_null()
            }),
            "node {index}: only the equivocator is jailed: {election}"
        );

        // status and /metrics flag it.
        let status = net.rpc_ok(*index, "status", json!({}));
        let jailed = status["jailed_validators"].as_array().unwrap();
        assert_eq!(jailed.len(), 1, "node {index}: {status}");
        assert_eq!(jailed[0]["node_id"], equivocator_id.as_str());
        assert_eq!(jailed[0]["name"], equivocator_name.as_str());
        assert_eq!(jailed[0]["until_height"], until_height);
        // A node may learn of the offence only from the block that commits it (its pool then
        // never held the evidence), so the counts are only consistent, not necessarily > 0.
        assert!(status["evidence_pending"].as_u64() <= status["evidence_held"].as_u64(), "node {index}: {status}");
        assert!(
            status["evidence_offenders"]
                .as_array()
                .unwrap()
                .iter()
                .all(|offender| offender["node_id"] == equivocator_id),
            "node {index}: the evidence accuses the equivocator alone: {status}"
        );
        let mut response = ureq::get(format!("{}/metrics", net.nodes[*index].rpc)).call().unwrap();
        let metrics = response.body_mut().read_to_string().unwrap();
        assert!(metrics.contains("\ntinychain_jailed_validators 1\n"), "node {index}:\n{metrics}");
        assert!(
            metrics.contains(&format!("\ntinychain_validator_jailed{{validator=\"{equivocator_name}\"}} 1\n")),
            "node {index}:\n{metrics}"
        );
        // Jail only ever extends (a later piece of evidence may have extended it since).
        let jailed_until = metrics
            .lines()
            .find_map(|line| {
                line.strip_prefix(&format!(
                    "tinychain_validator_jailed_until_height{{validator=\"{equivocator_name}\"}} "
                ))
            })
            .and_then(|value| value.parse::<u64>().ok());
        assert!(jailed_until.is_some_and(|height| height >= until_height), "node {index}:\n{metrics}");
        assert!(
            metrics
                .contains(&format!("\ntinychain_validator_rank{{validator=\"{equivocator_name}\"}} {}\n", NODES - 1)),
            "node {index}: the jailed validator ranks last:\n{metrics}"
        );
        let committed_total = metrics
            .lines()
            .find_map(|line| line.strip_prefix("tinychain_evidence_committed_total "))
            .and_then(|value| value.parse::<u64>().ok());
        assert!(committed_total.is_some_and(|total| total >= 1), "node {index}:\n{metrics}");
    }

    // get_block: a block on honest node 0's chain commits the evidence naming the equivocator:
    // two different headers by it on one parent at the offence height.
    let observer = honest[0];
    let tip = net.tip(observer).unwrap().0;
    let found = (1..=tip).find_map(|height| {
        let block = net.rpc_ok(observer, "get_block", json!({ "height": height }));
        let evidence = block["evidence"].as_array().unwrap().iter().find(|evidence| {
            evidence["offender"] == equivocator_id.as_str() && evidence["kind"] == "double_production"
        })?;
        Some((height, block.clone(), evidence.clone()))
    });
    let Some((evidence_height, block, evidence)) = found else {
        panic_with_logs(&mut net, &format!("no block up to height {tip} on node {observer} holds the evidence"));
    };
    println!("evidence committed at height {evidence_height}: {evidence}");
    assert_eq!(block["evidence_count"], block["evidence"].as_array().unwrap().len());
    assert_eq!(evidence["offender_name"], equivocator_name.as_str());
    let offence_height = evidence["offence_height"].as_u64().unwrap();
    assert!(offence_height < evidence_height, "evidence of an earlier offence: {evidence}");
    assert_ne!(evidence["first"]["block_hash"], evidence["second"]["block_hash"], "{evidence}");
    assert_eq!(evidence["first"]["prev_hash"], evidence["second"]["prev_hash"], "one parent: {evidence}");
    for object in [&evidence["first"], &evidence["second"]] {
        assert_eq!(object["height"], offence_height, "{evidence}");
    }
    assert_eq!(evidence["id"].as_str().unwrap().len(), 64, "{evidence}");

    // Jail never cost liveness or safety: the honest nodes go on finalizing past the evidence
    // block and agree on the final block.
    let (finalized_before, _) = net.finalized(observer).unwrap();
    let target = finalized_before.max(evidence_height) + 5;
    net.wait_for(Duration::from_secs(60), "honest nodes finalizing past the evidence", |net| {
        honest.iter().all(|index| net.finalized(*index).is_some_and(|(height, _)| height >= target)).then_some(())
    });
    for height in [evidence_height, target] {
        let hashes: Vec<Value> = honest
            .iter()
            .map(|index| net.rpc_ok(*index, "get_header", json!({ "height": height }))["hash"].clone())
            .collect();
        assert!(
            hashes.windows(2).all(|pair| pair[0] == pair[1]),
            "the honest nodes agree at height {height}: {hashes:?}"
        );
    }
    // Every honest node (all hold the evidence block by now) logs the commit and the jail at
    // error level, with the evidence: its id, kind, offender and both block hashes in full.
    for index in &honest {
        let log = net.log(*index);
        let committed = log
            .lines()
            .find(|line| line.contains("evidence committed") && line.contains(evidence["id"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("node {index} logs the committed evidence {}", evidence["id"]));
        assert!(committed.contains("ERROR"), "node {index}: {committed}");
        for field in [
            "double_production",
            &format!("offender={equivocator_name}"),
            &format!("offence_height={offence_height}"),
            evidence["first"]["block_hash"].as_str().unwrap(),
            evidence["second"]["block_hash"].as_str().unwrap(),
        ] {
            assert!(committed.contains(field), "node {index}: the line names {field}: {committed}");
        }
        assert!(
            log.lines().any(|line| line.contains("ERROR")
                && line.contains("validator jailed by committed evidence")
                && line.contains(evidence["id"].as_str().unwrap())),
            "node {index} logs the jail with the evidence {}",
            evidence["id"]
        );
    }

    println!("done {:.1} s into the test", started.elapsed().as_secs_f64());
}

/// The misbehaviour reaches the `tinychain` binary only through a dev-dependency: a build that
/// needs no dev-dependencies (`cargo build --release`, `cargo install`) resolves
/// `tinychain-node` without the `test-misbehaviour` feature, so the code that reads
/// `TINYCHAIN_TEST_MISBEHAVIOUR` is not compiled into it. Asked of cargo's own resolver.
#[test]
fn a_release_build_has_no_misbehaviour() {
    let features_of_node = |edges: &str| {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let output = Command::new(env!("CARGO"))
            .args(["tree", "--offline", "--manifest-path", manifest, "-p", "tinychain", "-i", "tinychain-node"])
            .args(["-e", edges])
            .output()
            .unwrap();
        assert!(output.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let release = features_of_node("normal,features");
    assert!(release.contains("tinychain-node feature \"default\""), "{release}");
    assert!(!release.contains("test-misbehaviour"), "a release build has the misbehaviour:\n{release}");
    let tests = features_of_node("normal,dev,features");
    assert!(tests.contains("tinychain-node feature \"test-misbehaviour\""), "the tests turn it on:\n{tests}");
}
