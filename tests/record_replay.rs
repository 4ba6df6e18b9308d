//! Issue 15, part 3: record and replay on a real 4-node testnet over TLS. Every node runs
//! `tinychain node` with `TINYCHAIN_RECORD` (the env form of `--record FILE`); the development
//! wallet funds ten accounts through node 0, so its log holds submits and journal writes; node 2
//! is killed with SIGKILL and restarted (its log then holds two sessions, the first cut wherever
//! the kill fell). After SIGTERM, `tinychain replay` re-runs each node's log through the
//! simulator's driver and core and must find every call identical.
//!
//! Then node 0's log is damaged three ways, and each replay must report a divergence where it
//! belongs: one byte of a recorded digest flipped (the divergence is that very call), one byte of
//! a recorded metric sample flipped (at or after that sample: the node's next report carries a
//! different score), and the session's mempool minimum fee raised above what the transfers paid
//! (a changed core parameter: the replayed node refuses the first transfer the recorded one took).
//!
//! About 30 s of wall time on a 2-core machine. A failure keeps the testnet directory.

#![allow(clippy::unwrap_used)]

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::load::{development_key, fund_accounts, minimum_fee, sender_keys};
use support::{serial, Testnet, EXE};
use tinychain_core::codec;
use tinychain_core::node::Event;
use tinychain_core::record::{encode_frame, Entry, RECORD_ENTRY_BYTES_MAX};
use tinychain_core::types::{Address, UNITS_PER_COIN};

const NODES: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(90);

fn record_path(net: &Testnet, index: usize) -> PathBuf {
    net.home(index).join("record.log")
}

fn start_recording(net: &mut Testnet, index: usize) {
    let log = record_path(net, index);
    net.start_with_env(index, &[("TINYCHAIN_RECORD", log.to_str().unwrap())]);
}

/// `tinychain replay LOG --home HOME --json`: the answer and whether the command succeeded.
fn replay(log: &Path, home: &Path, extra: &[&str]) -> (Value, bool) {
    let output = Command::new(EXE)
        .args(["replay", log.to_str().unwrap(), "--home", home.to_str().unwrap(), "--json"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let answer: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!("replay printed no JSON ({error}): {stdout}\n{}", String::from_utf8_lossy(&output.stderr))
    });
    (answer, output.status.success())
}

/// Each frame of a log: (offset of its body, the entry).
fn frames(bytes: &[u8]) -> Vec<(usize, Entry)> {
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset + 4 <= bytes.len() {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        let Some(body) = bytes.get(offset + 4..offset + 4 + length) else { break };
        let entry: Entry = codec::decode_limited("a record entry", body, RECORD_ENTRY_BYTES_MAX).unwrap();
        frames.push((offset + 4, entry));
        offset += 4 + length;
    }
    frames
}

#[test]
fn a_recorded_testnet_with_a_crash_and_restart_replays_bit_for_bit_and_an_edit_diverges() {
    let _serial = serial();
    let mut net = Testnet::init(NODES, 200, 1_000);
    for index in 0..NODES {
        start_recording(&mut net, index);
    }
    net.wait_for(TIMEOUT, "finality past height 5", |net| net.finalized(0).filter(|(height, _)| *height >= 5));

    // Submits through node 0: recorded as Submit and FinishSubmits calls.
    let funder = development_key(&net);
    let recipients: Vec<Address> = sender_keys("record-replay", 10).iter().map(|key| key.address()).collect();
    let fee = minimum_fee(&net);
    fund_accounts(&net, &funder, &recipients, UNITS_PER_COIN, fee);

    // A crash and a restart: node 2's log gets a second session.
    net.kill9(2);
    let tip_at_kill = net.tip(0).unwrap().0;
    net.wait_for(TIMEOUT, "five blocks without node 2", |net| {
        net.tip(0).filter(|(height, _)| *height >= tip_at_kill + 5)
    });
    start_recording(&mut net, 2);
    let final_at_restart = net.finalized(0).unwrap().0;
    net.wait_for(TIMEOUT, "node 2 caught up and finalizing again", |net| {
        net.finalized(2).filter(|(height, _)| *height > final_at_restart + 3)
    });
    let stopped = net.stop_all();
    assert_eq!(stopped.len(), NODES);

    for index in 0..NODES {
        let log = record_path(&net, index);
        let (answer, ok) = replay(&log, net.home(index), &[]);
        assert!(ok && answer["identical"] == true, "node {index}'s log must replay bit for bit: {answer:#}");
        let sessions = if index == 2 { 2 } else { 1 };
        assert_eq!(answer["sessions"], sessions, "node {index}: {answer:#}");
        assert!(answer["calls"].as_u64().unwrap() > 100, "node {index}: {answer:#}");
        assert!(answer["actions"].as_u64().unwrap() > 100, "node {index}: {answer:#}");
        eprintln!("node {index}: {answer}");
    }

    // The replay as a simulator trace: node 0's commits, named as the simulator names them.
    let trace = net.path().join("node0.trace");
    let (answer, ok) = replay(&record_path(&net, 0), net.home(0), &["--trace", trace.to_str().unwrap()]);
    assert!(ok, "{answer:#}");
    let trace_text = std::fs::read_to_string(&trace).unwrap();
    assert!(trace_text.lines().any(|line| line.contains(" n0 committed h=1 ")), "{trace_text}");
    assert!(trace_text.lines().any(|line| line.contains(" n0 finalized h=")), "{trace_text}");

    let original = std::fs::read(record_path(&net, 0)).unwrap();
    let entries = frames(&original);
    let damaged = net.path().join("damaged.log");

    // 1. One byte of a recorded digest in the middle of the log.
    let dones: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, (_, entry))| matches!(entry, Entry::Done { .. }))
        .map(|(i, _)| i)
        .collect();
    let done = dones[dones.len() / 2];
    let previous_done = dones[dones.len() / 2 - 1];
    let mut bytes = original.clone();
    let (body, _) = entries[done];
    let last = body + codec::encoded_len(&entries[done].1) - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&damaged, &bytes).unwrap();
    let (answer, ok) = replay(&damaged, net.home(0), &[]);
    eprintln!("damaged: {}", answer["divergence"]);
    assert!(!ok && answer["identical"] == false, "{answer:#}");
    let at = answer["divergence"]["entry"].as_u64().unwrap() as usize;
    assert!(previous_done < at && at < done, "the divergence is the call whose digest was edited: {answer:#}");
    assert!(answer["divergence"]["what"].as_str().unwrap().contains("digest"), "{answer:#}");

    // 2. One byte of a metric sample (the cpu per-mille's low byte).
    let sample = entries
        .iter()
        .enumerate()
        .skip(entries.len() / 4)
        .find(|(_, (_, entry))| matches!(entry, Entry::Step { event: Event::MetricsSampled { .. }, .. }))
        .map(|(i, _)| i)
        .expect("the log holds metric samples");
    let mut bytes = original.clone();
    // Step's body: variant (u32), now_ms (u64), the event's variant (u32), cpu (u16), net (u16).
    let (body, _) = entries[sample];
    bytes[body + 16] ^= 0x40;
    let edited: Entry =
        codec::decode_limited("a record entry", &bytes[body..body + 20], RECORD_ENTRY_BYTES_MAX).unwrap();
    assert!(
        matches!((&entries[sample].1, &edited), (
            Entry::Step { event: Event::MetricsSampled { cpu: before, .. }, .. },
            Entry::Step { event: Event::MetricsSampled { cpu: after, .. }, .. },
        ) if before != after),
        "the edit changes the sample's cpu"
    );
    std::fs::write(&damaged, &bytes).unwrap();
    let (answer, ok) = replay(&damaged, net.home(0), &[]);
    eprintln!("damaged: {}", answer["divergence"]);
    assert!(!ok && answer["identical"] == false, "{answer:#}");
    let at = answer["divergence"]["entry"].as_u64().unwrap() as usize;
    assert!(at >= sample, "the divergence comes at or after the edited sample (entry {sample}): {answer:#}");

    // 3. A changed core parameter: the mempool's minimum fee, above what the transfers paid.
    let Entry::Session(mut session) = entries[0].1.clone() else { panic!("a log starts with its session") };
    session.mempool.min_fee = fee + 1_000;
    let mut bytes = encode_frame(&Entry::Session(session));
    let first_body_end = entries[0].0 + codec::encoded_len(&entries[0].1);
    bytes.extend_from_slice(&original[first_body_end..]);
    std::fs::write(&damaged, &bytes).unwrap();
    let (answer, ok) = replay(&damaged, net.home(0), &[]);
    eprintln!("damaged: {}", answer["divergence"]);
    assert!(!ok && answer["identical"] == false, "{answer:#}");
    let first_transfer = entries
        .iter()
        .position(|(_, entry)| {
            matches!(entry, Entry::Submit { .. })
                || matches!(entry, Entry::Step { event: Event::MessageReceived { message, .. }, .. } if message.kind() == "transfer")
        })
        .expect("node 0 took transfers");
    let at = answer["divergence"]["entry"].as_u64().unwrap() as usize;
    assert!(
        at <= first_transfer,
        "the replay refuses the first transfer at the latest (entry {first_transfer}): {answer:#}"
    );

    // A log that is not one.
    std::fs::write(&damaged, b"not a record log").unwrap();
    let output = Command::new(EXE)
        .args(["replay", damaged.to_str().unwrap(), "--home", net.home(0).to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a tinychain record log"), "{stderr}");
}
