//! Figures of real `tinychain node` processes on loopback, printed rather than asserted:
//!
//! 1. **Block rate**: a 4-node testnet on the chain's default timing (2 s blocks, 10 s producer
//!    timeout) runs for `TINYCHAIN_BENCH_MINUTES` minutes (default 2; 0 skips it); it prints
//!    blocks committed per minute of wall-clock time and the block interval p50/max from the
//!    committed headers' `timestamp_ms` (read over RPC `get_header`).
//! 2. **Memory**: a benchmark genesis with 20 ms blocks and a 200 ms producer timeout is run by
//!    three of its four validators until the tip reaches `TINYCHAIN_BENCH_BLOCKS` (default 10,000);
//!    it prints each running node's resident memory (`VmRSS`, and the peak `VmHWM`, from
//!    `/proc/PID/status`) at that height, and how long the chain took to grow.
//! 3. **Sync**: the fourth validator then starts with an empty data directory; it prints how long
//!    the node takes until its tip reaches the tip the others had when it started (RPC `status`
//!    polled every 100 ms), in blocks per second. The three others keep producing 20 ms blocks
//!    while it syncs, so the figure is measured on two cores shared with three busy producers.
//!    It is measured twice (stop, empty the data directory, start again), as runs vary.
//!
//! After each phase it prints, per node, every distinct WARN/ERROR message of its log (grouped with their `key=value` fields set aside: count, first and last
//! line), so a stall, reorg storm or error shows up next to the figures.
//!
//! Run with `cargo bench --bench node` (about 2 + 4 minutes on the 2-core dev machine; it builds
//! the release `tinychain` binary first). Under `cargo test --all-targets` cargo runs this program
//! without `--bench`; it then returns at once. Every node process is killed when the program
//! ends, panics included (`Testnet`'s `Drop`). `TINYCHAIN_BENCH_KEEP=1` keeps the testnet
//! directories (and prints where) to read the full logs afterwards.

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{env_or, load_average, Stopped, Testnet, EXE, RPC_TIMEOUT, STOP_GRACE};

/// The chain defaults (`Parameters::default()`): what figure 1 is measured on.
const DEFAULT_BLOCK_INTERVAL_MS: u64 = 2_000;
const DEFAULT_PRODUCER_TIMEOUT_MS: u64 = 10_000;
/// The benchmark genesis for figures 2 and 3: 100 times faster, so 10,000 blocks take minutes.
const FAST_BLOCK_INTERVAL_MS: u64 = 20;
const FAST_PRODUCER_TIMEOUT_MS: u64 = 200;
const NODES: usize = 4;
/// Figure 3 is measured this many times on the same chain (each from an empty data directory),
/// since one run on a shared 2-core machine varies.
const SYNC_RUNS: usize = 2;

fn main() {
    if !std::env::args().any(|argument| argument == "--bench") {
        return;
    }
    let minutes: f64 = env_or("TINYCHAIN_BENCH_MINUTES", 2.0);
    let blocks: u64 = env_or("TINYCHAIN_BENCH_BLOCKS", 10_000);
    assert!(minutes >= 0.0, "TINYCHAIN_BENCH_MINUTES must not be negative, got {minutes}");
    assert!(blocks > 0, "TINYCHAIN_BENCH_BLOCKS must be at least 1");
    // The log timestamps the sync figure is read from parse as they should.
    assert_eq!(parse_utc_ms("2026-11-21T13:14:08.123456Z"), Some(1_795_266_848_123));
    assert_eq!(parse_utc_ms("2024-02-29T23:59:59.999Z"), Some(1_709_251_199_999));
    println!("binary: {EXE}");
    println!("machine: {} cores available", std::thread::available_parallelism().map_or(0, |cores| cores.get()));

    // Zero minutes skips figure 1 (to look at figures 2 and 3 alone).
    let rate = (minutes > 0.0).then(|| block_rate(minutes));
    let chain = memory_and_sync(blocks);

    println!();
    println!("summary (cargo bench --bench node; TINYCHAIN_BENCH_MINUTES={minutes}, TINYCHAIN_BENCH_BLOCKS={blocks}):");
    if let Some(rate) = rate {
        println!(
            "testnet ({NODES} nodes, {DEFAULT_BLOCK_INTERVAL_MS} ms blocks): {:.1} blocks/min over {:.1} min; \
             interval p50 {} ms, max {} ms ({} intervals, {} blocks above rank 0)",
            rate.blocks_per_minute,
            rate.elapsed.as_secs_f64() / 60.0,
            rate.interval_p50_ms,
            rate.interval_max_ms,
            rate.interval_count,
            rate.blocks_above_rank_zero
        );
    }
    println!(
        "chain generation ({} nodes, {FAST_BLOCK_INTERVAL_MS} ms blocks): height {} in {:.1} s ({:.1} blocks/s)",
        NODES - 1,
        chain.height,
        chain.generation.as_secs_f64(),
        chain.height as f64 / chain.generation.as_secs_f64()
    );
    for (name, memory) in &chain.memory {
        println!(
            "memory: {name} RSS {:.1} MiB (peak {:.1} MiB) at height {}",
            mebibytes(memory.rss_kib),
            mebibytes(memory.peak_kib),
            chain.height
        );
    }
    for sync in &chain.syncs {
        let by_log = sync.elapsed_by_log.unwrap_or(sync.elapsed);
        println!(
            "sync: a fresh node fetched {} blocks in {:.1} s ({:.0} blocks/s) by its log, {:.1} s as seen over RPC; \
             RSS afterwards {:.1} MiB (peak {:.1} MiB); the producers went on from {} to {} meanwhile; \
             RPC status slowest {:.1} s, {} unanswered",
            sync.target,
            by_log.as_secs_f64(),
            sync.target as f64 / by_log.as_secs_f64(),
            sync.elapsed.as_secs_f64(),
            mebibytes(sync.memory.rss_kib),
            mebibytes(sync.memory.peak_kib),
            sync.target,
            sync.others_tip_after,
            sync.rpc_slowest.as_secs_f64(),
            sync.rpc_unanswered
        );
        assert!(sync.reached >= sync.target, "the wait returns only at the target");
    }
}

/// Figure 1.
struct BlockRate {
    blocks_per_minute: f64,
    elapsed: Duration,
    interval_p50_ms: u64,
    interval_max_ms: u64,
    interval_count: usize,
    blocks_above_rank_zero: usize,
}

fn block_rate(minutes: f64) -> BlockRate {
    println!();
    println!(
        "== block rate: {NODES} nodes, {DEFAULT_BLOCK_INTERVAL_MS} ms blocks, \
         {DEFAULT_PRODUCER_TIMEOUT_MS} ms timeout, {minutes} min"
    );
    println!("load average {}", load_average());
    let mut net = Testnet::init(NODES, DEFAULT_BLOCK_INTERVAL_MS, DEFAULT_PRODUCER_TIMEOUT_MS);
    net.start_all();
    // Measure from the first commit seen after every node is up and linked, so start-up and the
    // first handshakes are not counted.
    let first = net.wait_for(Duration::from_secs(120), "every node answering with a block", |net| {
        let tips: Vec<u64> = (0..NODES).map(|index| net.tip(index).map(|(height, _)| height)).collect::<Option<_>>()?;
        let peers_linked = (0..NODES).all(|index| net.status(index).is_some_and(|status| status["peers"] == NODES - 1));
        (peers_linked && tips.iter().all(|height| *height >= 1)).then(|| tips[0])
    });
    let (start_height, start) = net.wait_for(Duration::from_secs(60), "the next block after start-up", |net| {
        net.tip(0).filter(|(height, _)| *height > first).map(|(height, _)| (height, Instant::now()))
    });
    let duration = Duration::from_secs_f64(minutes * 60.0);
    println!("measuring from height {start_height} for {:.0} s", duration.as_secs_f64());
    std::thread::sleep(duration);
    let end_height = net.tip(0).expect("node-1 answers status at the end").0;
    let elapsed = start.elapsed();
    println!("load average {} at the end", load_average());
    let headers: Vec<Value> =
        (start_height..=end_height).map(|height| net.header(0, height).expect("a committed header")).collect();
    let mut intervals_ms: Vec<u64> = headers
        .windows(2)
        .map(|pair| pair[1]["timestamp_ms"].as_u64().unwrap() - pair[0]["timestamp_ms"].as_u64().unwrap())
        .collect();
    let blocks_above_rank_zero = headers.iter().filter(|header| header["rank"].as_u64() != Some(0)).count();
    intervals_ms.sort_unstable();
    let rate = BlockRate {
        blocks_per_minute: (end_height - start_height) as f64 / (elapsed.as_secs_f64() / 60.0),
        elapsed,
        interval_p50_ms: intervals_ms.get(intervals_ms.len() / 2).copied().unwrap_or(0),
        interval_max_ms: intervals_ms.last().copied().unwrap_or(0),
        interval_count: intervals_ms.len(),
        blocks_above_rank_zero,
    };
    println!(
        "heights {start_height}..{end_height} in {:.1} s: {:.1} blocks/min; interval p50 {} ms, max {} ms",
        elapsed.as_secs_f64(),
        rate.blocks_per_minute,
        rate.interval_p50_ms,
        rate.interval_max_ms
    );
    let hashes: Vec<Option<Value>> =
        (0..NODES).map(|index| net.header(index, end_height.saturating_sub(1)).map(|h| h["hash"].clone())).collect();
    if hashes.windows(2).any(|pair| pair[0] != pair[1]) {
        println!("note: the nodes disagree at height {}: {hashes:?}", end_height.saturating_sub(1));
    }
    stop_all(&mut net);
    print_log_findings(&net);
    keep_if_asked(&mut net);
    rate
}

/// Figures 2 and 3.
struct ChainFigures {
    height: u64,
    generation: Duration,
    memory: Vec<(String, Memory)>,
    syncs: Vec<SyncRun>,
}

fn memory_and_sync(blocks: u64) -> ChainFigures {
    println!();
    println!(
        "== memory and sync: {NODES} validators, {FAST_BLOCK_INTERVAL_MS} ms blocks, \
         {FAST_PRODUCER_TIMEOUT_MS} ms timeout; {} of them grow the chain to height {blocks}",
        NODES - 1
    );
    println!("load average {}", load_average());
    let mut net = Testnet::init(NODES, FAST_BLOCK_INTERVAL_MS, FAST_PRODUCER_TIMEOUT_MS);
    let fresh = NODES - 1;
    let producers: Vec<usize> = (0..fresh).collect();
    let started = Instant::now();
    for &index in &producers {
        net.start(index);
    }
    let mut last_report = Instant::now();
    let height = net.wait_for(Duration::from_secs(3_600), &format!("height {blocks} on every producer"), |net| {
        let tips: Vec<u64> = producers.iter().map(|&index| net.tip(index).map_or(0, |(height, _)| height)).collect();
        if last_report.elapsed() > Duration::from_secs(30) {
            println!("  {:>4.0} s: tips {tips:?}", started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        tips.iter().all(|height| *height >= blocks).then(|| tips.iter().copied().min().unwrap())
    });
    let generation = started.elapsed();
    println!("load average {}", load_average());
    println!(
        "height {height} on {} nodes after {:.1} s ({:.1} blocks/s)",
        producers.len(),
        generation.as_secs_f64(),
        height as f64 / generation.as_secs_f64()
    );
    let memory: Vec<(String, Memory)> =
        producers.iter().map(|&index| (net.nodes[index].name.clone(), memory(&net, index))).collect();
    for (name, memory) in &memory {
        println!("{name}: VmRSS {} KiB, VmHWM {} KiB", memory.rss_kib, memory.peak_kib);
    }

    let syncs: Vec<SyncRun> = (1..=SYNC_RUNS).map(|run| sync_fresh_node(&mut net, fresh, &producers, run)).collect();
    // Does it keep up afterwards? A short look, not part of the figure.
    std::thread::sleep(Duration::from_secs(5));
    let (fresh_tip, others_tip) = (net.tip(fresh).map_or(0, |tip| tip.0), net.tip(0).map_or(0, |tip| tip.0));
    println!("5 s later: fresh node at {fresh_tip}, node-1 at {others_tip}");
    stop_all(&mut net);
    print_log_findings(&net);
    keep_if_asked(&mut net);
    ChainFigures { height, generation, memory, syncs }
}

/// One timed sync of figure 3.
struct SyncRun {
    target: u64,
    /// Until RPC `status` reported the target (polled every 100 ms).
    elapsed: Duration,
    /// Until the node's log line committing the target block.
    elapsed_by_log: Option<Duration>,
    rpc_slowest: Duration,
    rpc_unanswered: u32,
    reached: u64,
    others_tip_after: u64,
    memory: Memory,
}

/// Stops node `fresh` if it runs, empties its data directory (not even the genesis database is
/// left), starts it and times how long its tip takes to reach the producers' tip at the start.
fn sync_fresh_node(net: &mut Testnet, fresh: usize, producers: &[usize], run: usize) -> SyncRun {
    net.stop(fresh);
    let data = net.nodes[fresh].home.join("data");
    if data.exists() {
        std::fs::remove_dir_all(&data).unwrap();
    }
    let log_bytes_before = net.log(fresh).len();
    let target = producers.iter().map(|&index| net.tip(index).map_or(0, |(height, _)| height)).max().unwrap();
    println!("sync run {run}: target height {target}; load average {}", load_average());
    let start = Instant::now();
    let start_unix_ms = unix_ms_now();
    net.start(fresh);
    let mut last_report = Instant::now();
    let mut rpc_slowest = Duration::ZERO;
    let mut rpc_unanswered = 0u32;
    let reached = net.wait_for(Duration::from_secs(1_800), &format!("the fresh node at height {target}"), |net| {
        let asked = Instant::now();
        let tip = net.tip(fresh);
        rpc_slowest = rpc_slowest.max(asked.elapsed());
        // Before the RPC server listens a refused connection is normal; later, no answer
        // within the client's timeout means the node was too busy to answer.
        if tip.is_none() && asked.elapsed() >= RPC_TIMEOUT {
            rpc_unanswered += 1;
        }
        let height = tip.map_or(0, |(height, _)| height);
        if last_report.elapsed() > Duration::from_secs(10) {
            println!("  {:>4.0} s: fresh node at height {height}", start.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        (height >= target).then_some(height)
    });
    let elapsed = start.elapsed();
    let others_tip_after = net.tip(producers[0]).map_or(0, |(height, _)| height);
    let memory = memory(net, fresh);
    // The node's own log says when it committed the target block, free of RPC delays.
    let log = net.log(fresh);
    let elapsed_by_log = committed_at_unix_ms(&log[log_bytes_before..], target)
        .map(|committed_ms| Duration::from_millis(committed_ms.saturating_sub(start_unix_ms)));
    println!(
        "sync run {run}: the fresh node reached height {reached} (target {target}) in {:.1} s over RPC \
         ({:.0} blocks/s), {} by its log; the producers were at {others_tip_after} by then",
        elapsed.as_secs_f64(),
        target as f64 / elapsed.as_secs_f64(),
        elapsed_by_log.map_or("no commit line".to_string(), |by_log| format!(
            "{:.1} s ({:.0} blocks/s)",
            by_log.as_secs_f64(),
            target as f64 / by_log.as_secs_f64()
        ))
    );
    println!(
        "sync run {run}: RPC status during the sync: slowest answer {:.1} s, {rpc_unanswered} calls unanswered \
         within {RPC_TIMEOUT:?}; load average {}",
        rpc_slowest.as_secs_f64(),
        load_average()
    );
    SyncRun { target, elapsed, elapsed_by_log, reached, others_tip_after, memory, rpc_slowest, rpc_unanswered }
}

/// When the log says block `height` (or a higher one) was committed, as Unix ms; the log lines
/// start with an RFC 3339 UTC timestamp (`2026-11-21T13:14:08.123456Z`).
fn committed_at_unix_ms(log: &str, height: u64) -> Option<u64> {
    log.lines().filter(|line| line.contains("block committed")).find_map(|line| {
        let committed: u64 = line.split_once(" height=")?.1.split_whitespace().next()?.parse().ok()?;
        if committed < height {
            return None;
        }
        parse_utc_ms(line.split_whitespace().next()?)
    })
}

/// An RFC 3339 timestamp (`2026-11-21T13:14:08.123456Z`) as Unix ms.
fn parse_utc_ms(timestamp: &str) -> Option<u64> {
    let parsed = time::OffsetDateTime::parse(timestamp, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn mebibytes(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Resident memory of a process, from `/proc/PID/status`.
struct Memory {
    rss_kib: u64,
    peak_kib: u64,
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or_else(|| panic!("bad line {line:?}"))
}

/// Resident memory of node `index`, from `/proc/PID/status`.
fn memory(net: &Testnet, index: usize) -> Memory {
    let pid = net.children[index].as_ref().expect("the node is running").id();
    Memory { rss_kib: proc_status_kib(pid, "VmRSS:"), peak_kib: proc_status_kib(pid, "VmHWM:") }
}

/// Stops every node, saying which did not exit cleanly.
fn stop_all(net: &mut Testnet) {
    for (index, stopped) in net.stop_all().into_iter().enumerate() {
        let name = &net.nodes[index].name;
        match stopped {
            Stopped::Exited(status) if !status.success() => println!("note: {name} exited with {status} after SIGTERM"),
            Stopped::Killed => println!("note: {name} did not stop within {STOP_GRACE:?} of SIGTERM and was killed"),
            _ => {}
        }
    }
}

/// Per node: every distinct WARN/ERROR message (its `key=value` fields set aside) with how
/// often it occurred and its first and last line, and how many lines mention a reorganisation.
fn print_log_findings(net: &Testnet) {
    for index in 0..net.nodes.len() {
        let log = net.log(index);
        let mut findings: BTreeMap<String, (usize, &str, &str)> = BTreeMap::new();
        for line in log.lines().filter(|line| line.contains(" WARN ") || line.contains(" ERROR ")) {
            let without_time = line.split_once(' ').map_or(line, |(_, rest)| rest);
            let message: Vec<&str> = without_time.split_whitespace().filter(|word| !word.contains('=')).collect();
            let entry = findings.entry(message.join(" ")).or_insert((0, line, line));
            entry.0 += 1;
            entry.2 = line;
        }
        let reorgs = log.lines().filter(|line| line.contains("reorganised")).count();
        let committed = log.lines().filter(|line| line.contains("block committed")).count();
        println!(
            "log {}: {committed} 'block committed' lines, {reorgs} 'chain reorganised', {} distinct WARN/ERROR messages",
            net.nodes[index].name,
            findings.len()
        );
        for (count, first, last) in findings.values() {
            println!("  {count:>6} x, first: {first}");
            if *count > 1 {
                println!("            last:  {last}");
            }
        }
    }
}

/// With `TINYCHAIN_BENCH_KEEP=1`, leaves the testnet directory behind and says where.
fn keep_if_asked(net: &mut Testnet) {
    if std::env::var("TINYCHAIN_BENCH_KEEP").is_ok_and(|value| value == "1") {
        if let Some(path) = net.keep() {
            println!("kept {}", path.display());
        }
    }
}
