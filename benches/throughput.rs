//! Issue 16's throughput figures in one run: what a local network of real `tinychain node`
//! processes commits at saturation, measured against the machine's own signature limit. Each
//! node count gets a fresh `tinychain testnet` (the runner an operator uses, started from the
//! `tinychain` binary cargo built for this bench, with the bench profile: release) on a fast
//! genesis (200 ms blocks, 1 s producer timeout), and is loaded from outside by `tinychain load
//! --testnet D/testnet.json --json`, exactly as the README's "Loading a network" describes.
//!
//! It prints, in order:
//!
//! 1. **The signature floor**: `verify_strict` (`tinychain_core::crypto`, the one acceptance rule
//!    every node applies to every transfer) over `VERIFY_SIGNATURES` distinct transfers signed by
//!    `VERIFY_KEYS` keys, on this thread alone (one core), in rounds of one second; the best
//!    round is the machine's raw rate (a round the other builds disturbed only understates it).
//!    The messages are the transfers' signing bytes, prepared before the clock starts; each
//!    check decodes the signer's key, as a node does.
//! 2. **Saturation** for each node count: `load --rate max` for a window, then each node's
//!    memory. Per run: offered and committed transfers per second (load's `committed_tps`: this
//!    run's transfers in blocks stamped inside the window); the ratio to the signature floor,
//!    `committed × nodes / (cores × raw rate)` (every node checks every transfer's signature at
//!    least once, so 1.0 would mean the nodes do nothing but that, on every core); the CPU per
//!    transfer per node, `node CPU seconds over the window / committed transfers` (load reads
//!    the nodes' `/proc/PID/stat`; the mean over nodes); latency to final p50 and p90; and the
//!    nodes' resident memory, `VmRSS` sampled every 250 ms while load runs (funding, window and
//!    drain) and the peak `VmHWM` at the end, both from `/proc/PID/status`, the largest over
//!    nodes.
//! 3. **Latency below and at saturation** for `LATENCY_NODES` nodes, on the same testnet right
//!    after its saturated run: `load --rate R` with R half the committed rate it just measured,
//!    then 80% of it (issue 16 asks for a latency to final of 6 s or less there), then R equal to
//!    it. These rows carry every figure above but the peak memory (the peak is the saturated
//!    run's).
//! 4. **Overload** on the same testnet: `load --rate max` from
//!    `TINYCHAIN_THROUGHPUT_OVERLOAD_ACCOUNTS` accounts with `--max-pending` at 128 per account
//!    (65,536 by default), more pending transfers than a node's mempool holds (`MEMPOOL_TXS_MAX`, 50,000). Its rejections and uncommitted
//!    transfers are what overload means, not problems; what it checks is that no node's
//!    mempool grew past its cap (load's `mempool_max`), and it reports the nodes' memory
//!    meanwhile (`VmRSS`) and their peak over the testnet's life (`VmHWM`).
//!
//! Then a markdown table of every run and one line holding a JSON object with the same figures
//! (`{"bench":"throughput",...}`), for scripts.
//!
//! Run with `cargo bench --bench throughput` (about 6 minutes with the defaults, after the
//! build). Sizes come from the environment:
//!
//! | variable | default | |
//! | --- | --- | --- |
//! | `TINYCHAIN_THROUGHPUT_SECONDS` | 45 | each load's window (`load --duration`) |
//! | `TINYCHAIN_THROUGHPUT_NODES` | `1,4,7` | node counts, one fresh testnet each, in order |
//! | `TINYCHAIN_THROUGHPUT_LATENCY_NODES` | 4 | which of them also gets the 50%, 80% and 100% runs (`0`: none) |
//! | `TINYCHAIN_THROUGHPUT_ACCOUNTS` | 64 | sending accounts (`load --accounts`; see below) |
//! | `TINYCHAIN_THROUGHPUT_BLOCK_INTERVAL_MS` | 200 | the genesis's block interval |
//! | `TINYCHAIN_THROUGHPUT_PRODUCER_TIMEOUT_MS` | 1000 | the genesis's producer timeout |
//! | `TINYCHAIN_THROUGHPUT_BLOCK_TRANSFERS_MAX` | 2500 | the genesis's `block_transfers_max` (see below) |
//! | `TINYCHAIN_THROUGHPUT_VERIFY_SECONDS` | 3 | rounds of one second of `verify_strict` |
//! | `TINYCHAIN_THROUGHPUT_OVERLOAD_ACCOUNTS` | 512 | the overload run's accounts (`0`: no overload run) |
//! | `TINYCHAIN_THROUGHPUT_KEEP` | unset | `1` keeps every testnet directory (logs included) |
//!
//! `block_transfers_max` 2,500 rather than the default 10,000, which is sized for 2 s blocks: with
//! 200 ms blocks and a deep mempool (the overload run) a producer fills 10,000-transfer blocks,
//! and four nodes on two cores take longer than the 1 s producer timeout to pass one along
//! (fallback producers, short reorganisations, finality tens of seconds behind, memory
//! following it to about 1 GiB a node). 2,500 per 200 ms is 12,500 transfers/s, above what
//! the machine commits.
//!
//! 64 accounts rather than load's default 256: each account keeps up to 128 transfers pending, and
//! 8,192 pending already keep every node's mempool full at saturation, whereas 32,768 make the
//! network commit less (on the 2-core machine: 1,178/s rather than 2,443/s for 4 nodes), with
//! `submit_txs` calls timing out in the node, transfers resubmitted as `duplicate`/`nonce_used`,
//! and a backlog longer than load's 30 s drain.
//!
//! It fails loudly (a panic naming what and where, so a non-zero exit): when a testnet does not
//! start (the runner exits, a node is missing, or the nodes do not link up and finalize within
//! `WARM_UP_TIMEOUT`), when `tinychain load` exits with an error or prints no JSON, or when a
//! node is gone after a run. When load succeeds but reports a problem (failed calls, rejected
//! transfers, accepted transfers never committed, a node whose CPU it could not read), the
//! figures are still printed and the program then exits with status 1 listing each problem.
//!
//! The figures are noisy on a shared machine: the load generator signs on the same cores as the
//! nodes (its CPU share is printed), and other builds come and go; the 1-minute load average
//! before each run is printed beside it. Under `cargo test --all-targets` cargo runs this
//! program without `--bench`; it then returns at once. Every process it started is stopped when
//! it ends, panics included (`RunningTestnet`'s `Drop`; the runner's nodes also get SIGTERM when
//! the runner dies).

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{env_or, free_ports, load_average, node_log_filter, rpc_call, EXE, RPC_TIMEOUT};
use tinychain_core::codec::transfer_signing_bytes;
use tinychain_core::crypto::verify_strict;
use tinychain_core::limits::MEMPOOL_TXS_MAX;
use tinychain_core::testkit::seeded_key;
use tinychain_core::types::{Address, Signature};
use tinychain_core::validate::sign_transfer;

/// Distinct signatures the raw rate is measured over (cycled through), and the keys signing them.
const VERIFY_SIGNATURES: usize = 8_192;
const VERIFY_KEYS: u64 = 256;
/// How long a testnet may take to write its files, start its nodes, link them and finalize.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// The final height every node reaches before the first load.
const WARM_UP_FINAL_HEIGHT: u64 = 2;
/// How long `tinychain load` may take beyond its window: funding, nonces, and its drain (30 s).
const LOAD_OVERHEAD_MAX: Duration = Duration::from_secs(240);
/// How long the runner gets to stop its nodes after SIGTERM (it gives them 10 s) before every
/// process is killed.
const RUNNER_STOP_GRACE: Duration = Duration::from_secs(20);
/// `tinychain load` keeps at most this many transfers of one account pending (its
/// `PENDING_PER_ACCOUNT_MAX`): the overload run's `--max-pending` is its accounts times this.
const LOAD_PENDING_PER_ACCOUNT_MAX: usize = 128;
/// How often the nodes' resident memory is sampled while load runs.
const MEMORY_SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

struct Settings {
    window: Duration,
    node_counts: Vec<usize>,
    latency_nodes: Option<usize>,
    accounts: usize,
    block_interval_ms: u64,
    producer_timeout_ms: u64,
    block_transfers_max: u32,
    verify_rounds: usize,
    overload_accounts: usize,
    keep: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let node_counts: Vec<usize> = std::env::var("TINYCHAIN_THROUGHPUT_NODES")
            .unwrap_or_else(|_| "1,4,7".into())
            .split(',')
            .map(|count| {
                count.trim().parse().unwrap_or_else(|_| {
                    panic!("TINYCHAIN_THROUGHPUT_NODES: {count:?} is not a node count (give e.g. 1,4,7)")
                })
            })
            .collect();
        let latency_nodes: usize = env_or("TINYCHAIN_THROUGHPUT_LATENCY_NODES", 4);
        let settings = Settings {
            window: Duration::from_secs_f64(env_or("TINYCHAIN_THROUGHPUT_SECONDS", 45.0)),
            node_counts,
            latency_nodes: (latency_nodes > 0).then_some(latency_nodes),
            accounts: env_or("TINYCHAIN_THROUGHPUT_ACCOUNTS", 64),
            block_interval_ms: env_or("TINYCHAIN_THROUGHPUT_BLOCK_INTERVAL_MS", 200),
            producer_timeout_ms: env_or("TINYCHAIN_THROUGHPUT_PRODUCER_TIMEOUT_MS", 1_000),
            block_transfers_max: env_or("TINYCHAIN_THROUGHPUT_BLOCK_TRANSFERS_MAX", 2_500),
            verify_rounds: env_or("TINYCHAIN_THROUGHPUT_VERIFY_SECONDS", 3),
            overload_accounts: env_or("TINYCHAIN_THROUGHPUT_OVERLOAD_ACCOUNTS", 512),
            keep: std::env::var("TINYCHAIN_THROUGHPUT_KEEP").is_ok_and(|value| value == "1"),
        };
        assert!(
            settings.node_counts.iter().all(|count| (1..=16).contains(count)),
            "TINYCHAIN_THROUGHPUT_NODES: each count must be 1 to 16 (tinychain testnet's range), got {:?}",
            settings.node_counts
        );
        assert!(settings.window >= Duration::from_secs(1), "TINYCHAIN_THROUGHPUT_SECONDS: at least 1");
        assert!(settings.verify_rounds >= 1, "TINYCHAIN_THROUGHPUT_VERIFY_SECONDS: at least 1");
        if let Some(nodes) = settings.latency_nodes {
            assert!(
                settings.node_counts.contains(&nodes),
                "TINYCHAIN_THROUGHPUT_LATENCY_NODES={nodes} is not among TINYCHAIN_THROUGHPUT_NODES {:?}: the latency \
                 runs follow that count's saturated run (or set it to 0 to skip them)",
                settings.node_counts
            );
        }
        settings
    }
}

fn main() {
    if !std::env::args().any(|argument| argument == "--bench") {
        return;
    }
    let settings = Settings::from_env();
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let load_average_at_start = load_average();
    println!("binary: {EXE}");
    println!("machine: {cores} cores available; load average {load_average_at_start}");

    let verify = measure_verify_strict(settings.verify_rounds);
    println!(
        "verify_strict on one core: {:.0}/s best round ({:.1} µs each), rounds {} over {} distinct signatures; \
         the machine's floor is {:.0} checks/s on {cores} cores",
        verify.best_per_second,
        1e6 / verify.best_per_second,
        verify.rounds_per_second.iter().map(|rate| format!("{rate:.0}")).collect::<Vec<_>>().join(", "),
        VERIFY_SIGNATURES,
        verify.best_per_second * cores as f64
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for &nodes in &settings.node_counts {
        let mut net = RunningTestnet::start(nodes, &settings);
        let saturated = net.run_load(&settings, "saturation", None, None);
        let saturated_tps = saturated.committed_tps;
        problems.extend(saturated.problems.iter().cloned());
        rows.push(saturated);
        if settings.latency_nodes == Some(nodes) {
            assert!(
                saturated_tps > 0.0,
                "the saturated run of {nodes} nodes committed nothing: no rate to take a share of"
            );
            for (label, share) in [("50% of saturation", 0.5), ("80% of saturation", 0.8), ("100% of saturation", 1.0)]
            {
                let row = net.run_load(&settings, label, Some(saturated_tps * share), None);
                problems.extend(row.problems.iter().cloned());
                rows.push(row);
            }
            if settings.overload_accounts > 0 {
                let row = net.run_load(&settings, "overload", None, Some(settings.overload_accounts));
                problems.extend(row.problems.iter().cloned());
                rows.push(row);
            }
        }
        net.stop(settings.keep);
    }

    println!();
    println!(
        "summary (cargo bench --bench throughput; fresh `tinychain testnet` per node count, {} ms blocks, \
         {} ms producer timeout, at most {} transfers a block, `tinychain load` with {} accounts, {:.0} s windows; \
         {cores} cores; load average {load_average_at_start} at the start, {} at the end):",
        settings.block_interval_ms,
        settings.producer_timeout_ms,
        settings.block_transfers_max,
        settings.accounts,
        settings.window.as_secs_f64(),
        load_average()
    );
    println!();
    print_table(&rows, &verify, cores);
    println!();
    println!("{}", summary_json(&settings, &rows, &verify, cores, &load_average_at_start));

    if !problems.is_empty() {
        eprintln!();
        eprintln!("FAILED: tinychain load reported {} problem(s) (figures above):", problems.len());
        for problem in &problems {
            eprintln!("  - {problem}");
        }
        std::process::exit(1);
    }
}

// ---- The signature floor ----------------------------------------------------------------------

struct VerifyFigures {
    rounds_per_second: Vec<f64>,
    best_per_second: f64,
}

/// `verify_strict` over distinct transfers, on this thread, in `rounds` rounds of one second.
fn measure_verify_strict(rounds: usize) -> VerifyFigures {
    let keys: Vec<_> = (0..VERIFY_KEYS).map(|index| seeded_key("throughput-verify", index)).collect();
    let signed: Vec<(Address, Vec<u8>, Signature)> = (0..VERIFY_SIGNATURES)
        .map(|index| {
            let from = &keys[index % keys.len()];
            let to = keys[(index + 1) % keys.len()].address();
            let transfer = sign_transfer(from, "tinychain-local", to, 1, 1, (index / keys.len()) as u64);
            (transfer.from, transfer_signing_bytes(&transfer), transfer.signature)
        })
        .collect();
    let mut rounds_per_second = Vec::with_capacity(rounds);
    let mut next = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let mut checked: u64 = 0;
        while started.elapsed() < Duration::from_secs(1) {
            for _ in 0..64 {
                let (signer, message, signature) = &signed[next];
                assert!(
                    verify_strict(std::hint::black_box(signer), message, signature),
                    "a signature made by sign_transfer failed verify_strict"
                );
                next = (next + 1) % signed.len();
            }
            checked += 64;
        }
        rounds_per_second.push(checked as f64 / started.elapsed().as_secs_f64());
    }
    let best_per_second = rounds_per_second.iter().copied().fold(0.0, f64::max);
    VerifyFigures { rounds_per_second, best_per_second }
}

// ---- A testnet under load ---------------------------------------------------------------------

/// One `tinychain testnet` runner and its node processes; `Drop` stops them all.
struct RunningTestnet {
    /// The temporary directory (`None` once kept).
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// `D`, the testnet's directory, holding `testnet.json`.
    testnet_dir: PathBuf,
    runner: Option<Child>,
    nodes: Vec<NodeProcess>,
    agent: ureq::Agent,
}

struct NodeProcess {
    name: String,
    rpc: String,
    home: PathBuf,
    pid: i32,
}

/// One `tinychain load` run and what was read around it.
struct Row {
    label: String,
    nodes: usize,
    /// `--rate`: `None` for max.
    rate: Option<f64>,
    offered_tps: f64,
    committed_tps: f64,
    latency_final_ms: (Option<u64>, Option<u64>),
    latency_committed_ms: (Option<u64>, Option<u64>),
    /// The mean over nodes of each one's CPU over the window, as a percentage of one core.
    node_cpu_percent_mean: Option<f64>,
    load_generator_cpu_percent: Option<f64>,
    rejected: u64,
    /// Largest `VmRSS` of any node in any sample while load ran, KiB.
    rss_max_kib: u64,
    /// Largest `VmHWM` of any node after a saturated run, KiB.
    hwm_max_kib: Option<u64>,
    load_average_before: String,
    report: Value,
    problems: Vec<String>,
}

impl Row {
    /// Node CPU seconds per committed transfer, per node, in microseconds.
    fn cpu_us_per_transfer_per_node(&self) -> Option<f64> {
        let percent = self.node_cpu_percent_mean?;
        (self.committed_tps > 0.0).then(|| percent / 100.0 / self.committed_tps * 1e6)
    }

    /// Signature checks the network needs per second (each node checks each transfer) over
    /// what the machine's cores could do at the raw rate.
    fn signature_floor_ratio(&self, verify: &VerifyFigures, cores: usize) -> f64 {
        self.committed_tps * self.nodes as f64 / (cores as f64 * verify.best_per_second)
    }
}

impl RunningTestnet {
    /// `tinychain testnet --dir D --nodes N ...` in a fresh directory; returns once every node
    /// is linked to every other and has finalized `WARM_UP_FINAL_HEIGHT`. Panics otherwise.
    fn start(nodes: usize, settings: &Settings) -> RunningTestnet {
        let wall = Instant::now();
        println!();
        println!(
            "== {nodes} node(s): tinychain testnet, {} ms blocks, {} ms producer timeout, at most {} transfers a \
             block; load average {}",
            settings.block_interval_ms,
            settings.producer_timeout_ms,
            settings.block_transfers_max,
            load_average()
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let testnet_dir = root.join("net");
        let runner_log = std::fs::File::create(root.join("testnet.out")).unwrap();
        let base_port = free_ports(2 * nodes as u16);
        let runner = Command::new(EXE)
            .args(["testnet", "--dir", testnet_dir.to_str().unwrap()])
            .args(["--nodes", &nodes.to_string(), "--base-port", &base_port.to_string()])
            .args(["--block-interval-ms", &settings.block_interval_ms.to_string()])
            .args(["--producer-timeout-ms", &settings.producer_timeout_ms.to_string()])
            .args(["--block-transfers-max", &settings.block_transfers_max.to_string()])
            .env("RUST_LOG", node_log_filter())
            .stdin(Stdio::null())
            .stdout(runner_log.try_clone().unwrap())
            .stderr(runner_log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {EXE} testnet: {error}"));
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder().timeout_global(Some(RPC_TIMEOUT)).http_status_as_error(false).build(),
        );
        let mut net =
            RunningTestnet { dir: Some(dir), root, testnet_dir, runner: Some(runner), nodes: Vec::new(), agent };
        println!("testnet in {}", net.testnet_dir.display());

        let deadline = Instant::now() + WARM_UP_TIMEOUT;
        let layout: Value = loop {
            net.assert_running("writing testnet.json");
            if let Ok(text) = std::fs::read_to_string(net.testnet_dir.join("testnet.json")) {
                if let Ok(layout) = serde_json::from_str(&text) {
                    break layout;
                }
            }
            net.assert_before(deadline, "testnet.json to be written");
            std::thread::sleep(Duration::from_millis(100));
        };
        let listed = layout["nodes"].as_array().unwrap_or_else(|| panic!("testnet.json has no nodes: {layout}"));
        assert_eq!(listed.len(), nodes, "testnet.json lists {} nodes, not {nodes}: {layout}", listed.len());
        let homes: Vec<(String, String, PathBuf)> = listed
            .iter()
            .map(|node| {
                (
                    node["name"].as_str().unwrap().to_string(),
                    format!("http://{}", node["rpc"].as_str().unwrap()),
                    PathBuf::from(node["home"].as_str().unwrap()),
                )
            })
            .collect();
        // The runner's children are the nodes.
        let runner_pid = net.runner.as_ref().unwrap().id() as i32;
        let pids = loop {
            net.assert_running("starting its nodes");
            let pids: Vec<Option<i32>> = homes.iter().map(|(_, _, home)| child_node_pid(runner_pid, home)).collect();
            if pids.iter().all(Option::is_some) {
                break pids.into_iter().map(Option::unwrap).collect::<Vec<i32>>();
            }
            net.assert_before(deadline, "every node process to start");
            std::thread::sleep(Duration::from_millis(100));
        };
        net.nodes =
            homes.into_iter().zip(pids).map(|((name, rpc, home), pid)| NodeProcess { name, rpc, home, pid }).collect();
        loop {
            net.assert_running("linking up");
            let is_ready = net.nodes.iter().all(|node| {
                let status = rpc_call(&net.agent, &node.rpc, "status", json!({})).and_then(Result::ok);
                status.is_some_and(|status| {
                    status["peers"] == nodes - 1
                        && status["finalized"]["height"].as_u64().is_some_and(|height| height >= WARM_UP_FINAL_HEIGHT)
                })
            });
            if is_ready {
                break;
            }
            net.assert_before(deadline, "every node linked to every other with a final height of 2");
            std::thread::sleep(Duration::from_millis(200));
        }
        println!(
            "up after {:.1} s: {}",
            wall.elapsed().as_secs_f64(),
            net.nodes.iter().map(|node| format!("{} pid {}", node.name, node.pid)).collect::<Vec<_>>().join(", ")
        );
        net
    }

    /// Panics, with the runner's output and each node's log tail, if the runner or a node exited.
    fn assert_running(&mut self, doing: &str) {
        let runner = self.runner.as_mut().expect("the runner is running until stop");
        if let Some(status) = runner.try_wait().unwrap() {
            panic!("tinychain testnet exited ({status}) while {doing}: the testnet failed\n{}", self.diagnostics());
        }
        for node in &self.nodes {
            if !is_process_of_home(node.pid, &node.home) {
                panic!("{} (pid {}) is gone while {doing}\n{}", node.name, node.pid, self.diagnostics());
            }
        }
    }

    fn assert_before(&self, deadline: Instant, what: &str) {
        if Instant::now() > deadline {
            panic!(
                "timed out after {} s waiting for {what}: the testnet failed to start\n{}",
                WARM_UP_TIMEOUT.as_secs(),
                self.diagnostics()
            );
        }
    }

    /// The runner's output and the last lines of every node's log.
    fn diagnostics(&self) -> String {
        let mut text = format!(
            "--- tinychain testnet output ({})\n{}",
            self.root.join("testnet.out").display(),
            tail(&std::fs::read_to_string(self.root.join("testnet.out")).unwrap_or_default(), 40)
        );
        let homes: Vec<PathBuf> = match std::fs::read_dir(&self.testnet_dir) {
            Ok(entries) => {
                let mut homes: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
                homes.retain(|path| path.join("node.log").exists());
                homes.sort();
                homes
            }
            Err(_) => Vec::new(),
        };
        for home in homes {
            let log = std::fs::read_to_string(home.join("node.log")).unwrap_or_default();
            text.push_str(&format!("\n--- {} (last 20 lines)\n{}", home.join("node.log").display(), tail(&log, 20)));
        }
        text
    }

    /// `tinychain load --testnet D/testnet.json --rate R|max --json` for one window, sampling
    /// the nodes' memory meanwhile. Panics if load fails outright. With `overload_accounts`,
    /// load sends from that many accounts with `--max-pending` at their limit (128 each), more
    /// than any node's mempool holds: rejections and transfers left uncommitted are then what
    /// is being measured, not problems, but a node whose mempool grew past its cap is one.
    fn run_load(
        &mut self,
        settings: &Settings,
        label: &str,
        rate: Option<f64>,
        overload_accounts: Option<usize>,
    ) -> Row {
        let nodes = self.nodes.len();
        let rate_text = rate.map_or("max".to_string(), |rate| format!("{rate:.1}"));
        let accounts = overload_accounts.unwrap_or(settings.accounts);
        let max_pending = overload_accounts.map(|accounts| accounts * LOAD_PENDING_PER_ACCOUNT_MAX);
        let load_average_before = load_average();
        println!(
            "{label}: tinychain load --rate {rate_text} --duration {:.0}s --accounts {accounts}{} on {nodes} node(s); \
             load average {load_average_before}",
            settings.window.as_secs_f64(),
            max_pending.map_or(String::new(), |pending| format!(" --max-pending {pending}"))
        );
        let wall = Instant::now();
        let mut load = Command::new(EXE)
            .args(["load", "--testnet", self.testnet_dir.join("testnet.json").to_str().unwrap()])
            .args(["--rate", &rate_text, "--duration", &format!("{}ms", settings.window.as_millis())])
            .args(["--accounts", &accounts.to_string(), "--json"])
            .args(max_pending.map(|pending| ["--max-pending".to_string(), pending.to_string()]).into_iter().flatten())
            .env_remove("TINYCHAIN_PASSPHRASE")
            .env_remove("TINYCHAIN_WALLET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {EXE} load: {error}"));

        // Memory: every node's VmRSS while load runs.
        let stop_sampling = Arc::new(AtomicBool::new(false));
        let sampler = {
            let stop = stop_sampling.clone();
            let pids: Vec<i32> = self.nodes.iter().map(|node| node.pid).collect();
            std::thread::spawn(move || {
                let mut rss_max_kib = vec![0u64; pids.len()];
                while !stop.load(Ordering::SeqCst) {
                    for (max, pid) in rss_max_kib.iter_mut().zip(&pids) {
                        *max = (*max).max(proc_status_kib(*pid, "VmRSS:").unwrap_or(0));
                    }
                    std::thread::sleep(MEMORY_SAMPLE_INTERVAL);
                }
                rss_max_kib
            })
        };
        // Reading both pipes on their own threads, so neither fills while we wait.
        let stdout = read_pipe(load.stdout.take().unwrap());
        let stderr = read_pipe(load.stderr.take().unwrap());
        let deadline = Instant::now() + settings.window + LOAD_OVERHEAD_MAX;
        let status = loop {
            if let Some(status) = load.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = load.kill();
                let _ = load.wait();
                stop_sampling.store(true, Ordering::SeqCst);
                panic!(
                    "tinychain load did not end within {} s of its window; its stderr:\n{}\n{}",
                    LOAD_OVERHEAD_MAX.as_secs(),
                    stderr.join().unwrap(),
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        stop_sampling.store(true, Ordering::SeqCst);
        let rss_max_kib = sampler.join().unwrap().into_iter().max().unwrap_or(0);
        let stdout = stdout.join().unwrap();
        let stderr = stderr.join().unwrap();
        self.assert_running(&format!("the {label} load ran"));
        let hwm_max_kib = rate
            .is_none()
            .then(|| self.nodes.iter().map(|node| proc_status_kib(node.pid, "VmHWM:").unwrap_or(0)).max().unwrap_or(0));
        assert!(
            status.success(),
            "tinychain load --rate {rate_text} on {nodes} node(s) failed ({status}):\n{stderr}\n{stdout}"
        );
        let report: Value = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line.trim()).ok())
            .unwrap_or_else(|| panic!("tinychain load printed no JSON object:\n{stdout}\n{stderr}"));

        let number = |field: &str| -> f64 {
            report[field].as_f64().unwrap_or_else(|| panic!("tinychain load's {field} is not a number: {report}"))
        };
        let percentiles = |field: &str| (report[field]["p50"].as_u64(), report[field]["p90"].as_u64());
        let node_cpu: Vec<Option<f64>> = report["cpu"]["nodes"]
            .as_array()
            .map(|nodes| nodes.iter().map(|node| node["cpu_percent_of_one_core"].as_f64()).collect())
            .unwrap_or_default();
        let rejected: u64 =
            report["rejected"].as_object().map(|reasons| reasons.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
        let mut problems = Vec::new();
        let context = format!("{label} on {nodes} node(s) (--rate {rate_text})");
        if report["failed_calls"].as_u64() != Some(0) {
            problems
                .push(format!("{context}: {} failed calls (last: {})", report["failed_calls"], report["last_failure"]));
        }
        let mempool_max: Vec<u64> = report["mempool_max"]
            .as_array()
            .map(|sizes| sizes.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        if let Some(size) = mempool_max.iter().find(|size| **size > MEMPOOL_TXS_MAX as u64) {
            problems
                .push(format!("{context}: a node's mempool held {size} transfers, past its cap of {MEMPOOL_TXS_MAX}"));
        }
        if rejected > 0 && overload_accounts.is_none() {
            problems.push(format!("{context}: {rejected} transfers rejected: {}", report["rejected"]));
        }
        if report["not_committed"].as_u64() != Some(0) && overload_accounts.is_none() {
            problems.push(format!(
                "{context}: {} accepted transfers not committed within load's drain",
                report["not_committed"]
            ));
        }
        if report["cpu"]["local"] != true || node_cpu.len() != nodes || node_cpu.iter().any(Option::is_none) {
            problems.push(format!("{context}: load could not read every node's CPU: {}", report["cpu"]));
        }
        if number("committed_tps") <= 0.0 {
            problems.push(format!("{context}: nothing committed in the window"));
        }
        let measured: Vec<f64> = node_cpu.iter().flatten().copied().collect();
        let row = Row {
            label: label.to_string(),
            nodes,
            rate,
            offered_tps: number("offered_tps"),
            committed_tps: number("committed_tps"),
            latency_final_ms: percentiles("latency_final_ms"),
            latency_committed_ms: percentiles("latency_committed_ms"),
            node_cpu_percent_mean: (!measured.is_empty()).then(|| mean(&measured)),
            load_generator_cpu_percent: report["cpu"]["load_generator_cpu_percent_of_one_core"].as_f64(),
            rejected,
            rss_max_kib,
            hwm_max_kib,
            load_average_before,
            report,
            problems,
        };
        println!(
            "  offered {:.0}/s, committed {:.0}/s; to final p50 {} p90 {}; nodes' CPU {} of one core (each), load's \
             {}; CPU per transfer per node {}; VmRSS max {}{}; mempools' largest {}; rejected {}; {:.0} s of wall time",
            row.offered_tps,
            row.committed_tps,
            seconds_text(row.latency_final_ms.0),
            seconds_text(row.latency_final_ms.1),
            node_cpu.iter().map(|percent| percent_text(*percent)).collect::<Vec<_>>().join(" "),
            percent_text(row.load_generator_cpu_percent),
            row.cpu_us_per_transfer_per_node().map_or("-".to_string(), |us| format!("{us:.0} µs")),
            mib_text(row.rss_max_kib),
            row.hwm_max_kib.map_or(String::new(), |kib| format!(", VmHWM max {}", mib_text(kib))),
            mempool_max.iter().max().map_or("-".to_string(), u64::to_string),
            row.rejected,
            wall.elapsed().as_secs_f64()
        );
        for problem in &row.problems {
            println!("  PROBLEM: {problem}");
        }
        row
    }

    /// SIGTERM to the runner, which stops its nodes; every process killed if it takes too long.
    fn stop(&mut self, keep: bool) {
        let is_clean = self.shut_down();
        if keep || !is_clean {
            if let Some(dir) = self.dir.take() {
                println!("kept {}", dir.keep().display());
            }
        }
    }

    /// Returns whether the runner exited by itself within the grace period.
    fn shut_down(&mut self) -> bool {
        let Some(mut runner) = self.runner.take() else { return true };
        let pid = nix::unistd::Pid::from_raw(runner.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + RUNNER_STOP_GRACE;
        let mut is_clean = false;
        loop {
            match runner.try_wait() {
                Ok(Some(status)) => {
                    is_clean = status.success();
                    if !is_clean {
                        println!("note: tinychain testnet exited with {status} when stopped");
                    }
                    break;
                }
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    println!("note: tinychain testnet did not stop in {} s: killing it", RUNNER_STOP_GRACE.as_secs());
                    let _ = runner.kill();
                    let _ = runner.wait();
                    break;
                }
            }
        }
        // Any node left behind (only when the runner was killed) goes too.
        for node in &self.nodes {
            if is_process_of_home(node.pid, &node.home) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(node.pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        is_clean
    }
}

impl Drop for RunningTestnet {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The pid of the child of `parent` running `tinychain node --home HOME`, from /proc.
fn child_node_pid(parent: i32, home: &Path) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Field 4 (the parent's pid) is the second after the parenthesised command name.
        let Some(after_name) = stat.rfind(')').map(|end| &stat[end + 1..]) else { continue };
        if after_name.split_whitespace().nth(1).and_then(|ppid| ppid.parse::<i32>().ok()) != Some(parent) {
            continue;
        }
        if is_process_of_home(pid, home) {
            return Some(pid);
        }
    }
    None
}

/// Whether `pid` runs `... node --home HOME` (so a reused pid is never mistaken for a node).
fn is_process_of_home(pid: i32, home: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
    if !args.iter().any(|arg| *arg == b"node") {
        return false;
    }
    let Some(given) = args.windows(2).find(|pair| pair[0] == b"--home").map(|pair| pair[1]) else { return false };
    let Ok(given) = std::str::from_utf8(given) else { return false };
    // The runner starts nodes in our working directory, so a relative home resolves here too.
    let canonical = |path: &Path| path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    canonical(Path::new(given)) == canonical(home)
}

/// A `kB` line of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in KiB.
fn proc_status_kib(pid: i32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn read_pipe(mut pipe: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

// ---- The summary ------------------------------------------------------------------------------

fn print_table(rows: &[Row], verify: &VerifyFigures, cores: usize) {
    println!(
        "signature floor: verify_strict {:.0}/s on one core ({:.1} µs each), x {cores} cores = {:.0} checks/s",
        verify.best_per_second,
        1e6 / verify.best_per_second,
        verify.best_per_second * cores as f64
    );
    println!();
    println!(
        "| run | nodes | `--rate` | offered/s | committed/s | committed × nodes ÷ (cores × verify/s) | node CPU per \
         transfer | nodes' CPU (each) | load's CPU | to final p50 / p90 | nodes' VmRSS / VmHWM max | rejected | load avg |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |");
    for row in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.3} | {} | {} | {} | {} / {} | {} / {} | {} | {} |",
            row.label,
            row.nodes,
            row.rate.map_or("max".to_string(), |rate| format!("{rate:.0}")),
            row.offered_tps,
            row.committed_tps,
            row.signature_floor_ratio(verify, cores),
            row.cpu_us_per_transfer_per_node().map_or("-".to_string(), |us| format!("{us:.0} µs")),
            percent_text(row.node_cpu_percent_mean),
            percent_text(row.load_generator_cpu_percent),
            seconds_text(row.latency_final_ms.0),
            seconds_text(row.latency_final_ms.1),
            mib_text(row.rss_max_kib),
            row.hwm_max_kib.map_or("-".to_string(), mib_text),
            row.rejected,
            row.load_average_before.split_whitespace().next().unwrap_or("?"),
        );
    }
    println!();
    println!(
        "(committed/s: this run's transfers in blocks stamped inside the window; node CPU per transfer: a node's CPU \
         seconds over the window ÷ transfers committed in it, mean over nodes; nodes' and load's CPU: share of one \
         core over the window; VmRSS: the largest sample of any node while load ran, VmHWM: the largest peak after \
         the saturated run; load avg: 1-minute load average before the run)"
    );
}

fn summary_json(
    settings: &Settings,
    rows: &[Row],
    verify: &VerifyFigures,
    cores: usize,
    load_average_at_start: &str,
) -> String {
    let runs: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "run": row.label,
                "nodes": row.nodes,
                "rate": row.rate.map_or(json!("max"), |rate| json!(round1(rate))),
                "offered_tps": round1(row.offered_tps),
                "committed_tps": round1(row.committed_tps),
                "signature_floor_ratio": (row.signature_floor_ratio(verify, cores) * 1000.0).round() / 1000.0,
                "cpu_us_per_transfer_per_node": row.cpu_us_per_transfer_per_node().map(round1),
                "node_cpu_percent_of_one_core_mean": row.node_cpu_percent_mean.map(round1),
                "load_generator_cpu_percent_of_one_core": row.load_generator_cpu_percent,
                "latency_final_ms": { "p50": row.latency_final_ms.0, "p90": row.latency_final_ms.1 },
                "latency_committed_ms": { "p50": row.latency_committed_ms.0, "p90": row.latency_committed_ms.1 },
                "vm_rss_max_kib": row.rss_max_kib,
                "vm_hwm_max_kib": row.hwm_max_kib,
                "rejected": row.rejected,
                "not_committed": row.report["not_committed"],
                "failed_calls": row.report["failed_calls"],
                "duration_ms": row.report["duration_ms"],
                "load_average_before": row.load_average_before,
            })
        })
        .collect();
    json!({
        "bench": "throughput",
        "cores": cores,
        "load_average_at_start": load_average_at_start,
        "load_average_at_end": load_average(),
        "block_interval_ms": settings.block_interval_ms,
        "producer_timeout_ms": settings.producer_timeout_ms,
        "block_transfers_max": settings.block_transfers_max,
        "accounts": settings.accounts,
        "window_ms": settings.window.as_millis() as u64,
        "verify_strict_per_second": round1(verify.best_per_second),
        "verify_strict_rounds_per_second": verify.rounds_per_second.iter().copied().map(round1).collect::<Vec<_>>(),
        "runs": runs,
    })
    .to_string()
}

fn seconds_text(ms: Option<u64>) -> String {
    ms.map_or("-".to_string(), |ms| format!("{:.2} s", ms as f64 / 1_000.0))
}

fn percent_text(percent: Option<f64>) -> String {
    percent.map_or("-".to_string(), |percent| format!("{percent:.0}%"))
}

fn mib_text(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
