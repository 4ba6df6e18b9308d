//! Issue 15's cost of recording ("Report the overhead: bytes per block and CPU, idle and under
//! load. Recording must be cheap enough to leave on."), as a figures program. Four modes, each on
//! a fresh testnet of real `tinychain node` processes on the chain's default timing (2 s blocks):
//!
//! | mode | load | recording |
//! | --- | --- | --- |
//! | `idle-off` | none | off |
//! | `idle-on` | none | every node with `TINYCHAIN_RECORD=HOME/record.log` |
//! | `load-off` | transfers from many funded senders over every node (`tests/support/load.rs`) | off |
//! | `load-on` | the same load | on |
//!
//! Each mode waits until every node is linked to every other and has finalized a few blocks
//! (and, under load, until the load has run for two more blocks), then measures a window of
//! `TINYCHAIN_RECORD_COST_SECONDS`: the blocks made (the highest tip at its end minus at its
//! start), each node's CPU seconds (user + system, from `/proc/PID/stat`, the end minus the
//! start) and, when recording, how much each node's log grew. After the window the nodes are
//! stopped with SIGTERM and every log is replayed with `tinychain replay LOG --home HOME --json`,
//! which must answer `identical: true`; the replay's wall time is printed.
//!
//! The table at the end gives per mode: blocks, transfers acknowledged per second, the mean CPU
//! seconds per node (and as a share of one core), the CPU overhead of recording (the `on` mode's
//! mean minus the `off` mode's, as a percentage of the `off` mode's, idle against idle and load
//! against load), the log's bytes per block, per transfer acknowledged and MB per hour per node,
//! and the mean replay time per log (of the whole log, from the node's start, not only the
//! window). CPU seconds come in ticks of 10 ms, so an idle window's figure is coarse.
//!
//! The figures are noisy. The machine this was written on has 2 cores shared with other builds
//! and a background simulation, so a mode's CPU seconds move by more than recording costs from
//! one run to the next, and `on` and `off` run on different testnets at different times: read
//! the CPU overhead as an order of magnitude (is it a few percent or a doubling?), never as a
//! precise figure; the log's size is exact. The load average at the end of each window is
//! printed beside it.
//!
//! Run with `cargo bench --bench record_cost` (four windows of 60 s plus starting, funding,
//! stopping and replaying: about 7 minutes). Sizes come from the environment:
//!
//! | variable | default | |
//! | --- | --- | --- |
//! | `TINYCHAIN_RECORD_COST_SECONDS` | 60 | the measured window of each mode |
//! | `TINYCHAIN_RECORD_COST_NODES` | 4 | validators |
//! | `TINYCHAIN_RECORD_COST_RATE` | 500 | transfers per second under load, over all senders |
//! | `TINYCHAIN_RECORD_COST_SENDERS` | 64 | accounts sending |
//! | `TINYCHAIN_RECORD_COST_WORKERS` | 16 | client threads (each signs its senders' transfers) |
//! | `TINYCHAIN_RECORD_COST_FINAL_BLOCKS` | 3 | final height every node reaches before a window |
//! | `TINYCHAIN_RECORD_COST_MODES` | `idle-off,idle-on,load-off,load-on` | which modes, in order |
//! | `TINYCHAIN_RECORD_COST_BLOCK_INTERVAL_MS` | 2000 | the genesis's block interval |
//! | `TINYCHAIN_RECORD_COST_PRODUCER_TIMEOUT_MS` | 10000 | the genesis's producer timeout |
//! | `TINYCHAIN_RECORD_COST_KEEP` | unset | `1` keeps every testnet directory (logs included) |
//!
//! Under `cargo test --all-targets` cargo runs this program without `--bench`; it then returns
//! at once. Every node process is killed when the program ends (`Testnet`'s `Drop`).

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::load::{development_key, fund_accounts, highest_tip, minimum_fee, sender_keys, Load, LoadSettings};
use support::{env_or, load_average, Stopped, Testnet, EXE};

/// Every sender starts with 1,000 TC (base units): far more than a window of load spends.
const SENDER_FUNDS: u64 = 1_000 * 100_000_000;
/// Clock ticks per second of `/proc/PID/stat`'s `utime` and `stime`: `USER_HZ`, which is 100 on
/// every Linux architecture (the kernel scales its internal `HZ` to it for user space).
const PROC_STAT_TICKS_PER_SECOND: f64 = 100.0;
/// How long a network may take to link up and finalize its first blocks.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mode {
    is_loaded: bool,
    is_recording: bool,
}

impl Mode {
    fn name(self) -> &'static str {
        match (self.is_loaded, self.is_recording) {
            (false, false) => "idle-off",
            (false, true) => "idle-on",
            (true, false) => "load-off",
            (true, true) => "load-on",
        }
    }

    fn parse(name: &str) -> Mode {
        match name.trim() {
            "idle-off" => Mode { is_loaded: false, is_recording: false },
            "idle-on" => Mode { is_loaded: false, is_recording: true },
            "load-off" => Mode { is_loaded: true, is_recording: false },
            "load-on" => Mode { is_loaded: true, is_recording: true },
            other => {
                panic!("TINYCHAIN_RECORD_COST_MODES: unknown mode {other:?}; use idle-off, idle-on, load-off, load-on")
            }
        }
    }
}

struct Settings {
    window: Duration,
    nodes: usize,
    transfers_per_second: f64,
    senders: usize,
    workers: usize,
    final_blocks: u64,
    modes: Vec<Mode>,
    block_interval_ms: u64,
    producer_timeout_ms: u64,
    keep: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let modes = std::env::var("TINYCHAIN_RECORD_COST_MODES")
            .unwrap_or_else(|_| "idle-off,idle-on,load-off,load-on".into())
            .split(',')
            .map(Mode::parse)
            .collect();
        let settings = Settings {
            window: Duration::from_secs_f64(env_or("TINYCHAIN_RECORD_COST_SECONDS", 60.0)),
            nodes: env_or("TINYCHAIN_RECORD_COST_NODES", 4),
            transfers_per_second: env_or("TINYCHAIN_RECORD_COST_RATE", 500.0),
            senders: env_or("TINYCHAIN_RECORD_COST_SENDERS", 64),
            workers: env_or("TINYCHAIN_RECORD_COST_WORKERS", 16),
            final_blocks: env_or("TINYCHAIN_RECORD_COST_FINAL_BLOCKS", 3),
            modes,
            block_interval_ms: env_or("TINYCHAIN_RECORD_COST_BLOCK_INTERVAL_MS", 2_000),
            producer_timeout_ms: env_or("TINYCHAIN_RECORD_COST_PRODUCER_TIMEOUT_MS", 10_000),
            keep: std::env::var("TINYCHAIN_RECORD_COST_KEEP").is_ok_and(|value| value == "1"),
        };
        assert!(settings.nodes >= 1, "TINYCHAIN_RECORD_COST_NODES: at least one node");
        assert!(settings.window > Duration::ZERO, "TINYCHAIN_RECORD_COST_SECONDS must be positive");
        assert!(settings.workers >= 1, "TINYCHAIN_RECORD_COST_WORKERS: at least one worker");
        assert!(settings.senders >= settings.workers, "at least one sender per worker");
        assert!(settings.transfers_per_second > 0.0, "TINYCHAIN_RECORD_COST_RATE must be positive");
        // The nodes inherit this program's environment: a TINYCHAIN_RECORD here would make the
        // `off` modes record too.
        assert!(
            std::env::var_os("TINYCHAIN_RECORD").is_none(),
            "unset TINYCHAIN_RECORD: the nodes inherit it, so the modes without recording would record"
        );
        settings
    }
}

/// What one mode measured over its window.
struct Window {
    seconds: f64,
    blocks: u64,
    /// Per node: CPU seconds (user + system) spent during the window.
    cpu_seconds: Vec<f64>,
    /// Per node, when recording: bytes the log grew during the window.
    log_bytes: Option<Vec<u64>>,
    /// Transfers acknowledged during the window (under load).
    acknowledged: Option<u64>,
    load_average_at_end: String,
}

impl Window {
    fn cpu_seconds_mean(&self) -> f64 {
        mean(&self.cpu_seconds)
    }

    fn log_bytes_per_block(&self) -> Option<f64> {
        let bytes = self.log_bytes.as_ref()?;
        (self.blocks > 0).then(|| bytes.iter().sum::<u64>() as f64 / bytes.len() as f64 / self.blocks as f64)
    }

    /// Under load: log bytes per node per transfer acknowledged during the window.
    fn log_bytes_per_transfer(&self) -> Option<f64> {
        let bytes = self.log_bytes.as_ref()?;
        let acknowledged = self.acknowledged.filter(|count| *count > 0)?;
        Some(bytes.iter().sum::<u64>() as f64 / bytes.len() as f64 / acknowledged as f64)
    }

    fn log_megabytes_per_hour(&self) -> Option<f64> {
        let bytes = self.log_bytes.as_ref()?;
        let per_node = bytes.iter().sum::<u64>() as f64 / bytes.len() as f64;
        Some(per_node / self.seconds * 3600.0 / 1e6)
    }
}

/// One log replayed with `tinychain replay --json`.
struct Replay {
    node: usize,
    seconds: f64,
    is_identical: bool,
}

struct ModeFigures {
    mode: Mode,
    window: Window,
    replays: Vec<Replay>,
}

impl ModeFigures {
    fn replay_seconds_mean(&self) -> Option<f64> {
        let seconds: Vec<f64> = self.replays.iter().map(|replay| replay.seconds).collect();
        (!seconds.is_empty()).then(|| mean(&seconds))
    }
}

fn main() {
    if !std::env::args().any(|argument| argument == "--bench") {
        return;
    }
    let settings = Settings::from_env();
    println!("binary: {EXE}");
    println!(
        "machine: {} cores available; load average {}",
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
        load_average()
    );
    let figures: Vec<ModeFigures> = settings.modes.iter().map(|mode| measure(&settings, *mode)).collect();

    println!();
    println!(
        "summary (cargo bench --bench record_cost; {} nodes, {} ms blocks, a {:.0} s window per mode, load {:.0} \
         transfers/s from {} senders on {} threads; {} cores, shared: the CPU figures are noisy):",
        settings.nodes,
        settings.block_interval_ms,
        settings.window.as_secs_f64(),
        settings.transfers_per_second,
        settings.senders,
        settings.workers,
        std::thread::available_parallelism().map_or(0, |cores| cores.get()),
    );
    print_table(&figures);
    let diverged: Vec<String> = figures
        .iter()
        .flat_map(|figures| {
            figures
                .replays
                .iter()
                .filter(|replay| !replay.is_identical)
                .map(move |replay| format!("{} node {}", figures.mode.name(), replay.node))
        })
        .collect();
    assert!(diverged.is_empty(), "these logs did not replay bit for bit (above): {diverged:?}");
}

fn print_table(figures: &[ModeFigures]) {
    println!(
        "{:<9} {:>6} {:>8} {:>11} {:>9} {:>13} {:>12} {:>9} {:>10} {:>13} {:>9}",
        "mode",
        "blocks",
        "tx/s ack",
        "CPU s/node",
        "CPU %core",
        "CPU overhead",
        "log B/block",
        "log B/tx",
        "log MB/h",
        "replay s/log",
        "load avg"
    );
    for row in figures {
        let window = &row.window;
        let overhead = if row.mode.is_recording {
            let off = Mode { is_recording: false, ..row.mode };
            figures.iter().find(|other| other.mode == off).map(|other| {
                let off_seconds = other.window.cpu_seconds_mean();
                (window.cpu_seconds_mean() - off_seconds) / off_seconds * 100.0
            })
        } else {
            None
        };
        println!(
            "{:<9} {:>6} {:>8} {:>11.3} {:>8.2}% {:>13} {:>12} {:>9} {:>10} {:>13} {:>9}",
            row.mode.name(),
            window.blocks,
            window.acknowledged.map_or("-".to_string(), |count| format!("{:.0}", count as f64 / window.seconds)),
            window.cpu_seconds_mean(),
            window.cpu_seconds_mean() / window.seconds * 100.0,
            overhead.map_or("-".to_string(), |percent| format!("{percent:+.1}%")),
            window.log_bytes_per_block().map_or("-".to_string(), |bytes| format!("{bytes:.0}")),
            window.log_bytes_per_transfer().map_or("-".to_string(), |bytes| format!("{bytes:.0}")),
            window.log_megabytes_per_hour().map_or("-".to_string(), |megabytes| format!("{megabytes:.2}")),
            row.replay_seconds_mean().map_or("-".to_string(), |seconds| format!("{seconds:.2}")),
            window.load_average_at_end.split_whitespace().next().unwrap_or("?"),
        );
    }
    println!(
        "(CPU s/node: mean over nodes of user + system seconds in the window; CPU overhead: on minus off as a \
         percentage of off, on different testnets; log B/block, B/tx and MB/h: per node, growth during the window \
         (B/tx: per transfer acknowledged); \
         replay s/log: wall time of `tinychain replay --json` over the whole log, mean over nodes; load avg: \
         1-minute load average at the end of the window)"
    );
}

fn measure(settings: &Settings, mode: Mode) -> ModeFigures {
    let wall = Instant::now();
    println!();
    println!(
        "== {}: {} nodes, {} ms blocks, {} ms producer timeout, a {:.0} s window",
        mode.name(),
        settings.nodes,
        settings.block_interval_ms,
        settings.producer_timeout_ms,
        settings.window.as_secs_f64()
    );
    println!("load average {}", load_average());
    let mut net = Testnet::init(settings.nodes, settings.block_interval_ms, settings.producer_timeout_ms);
    println!("testnet in {}", net.root.display());
    let nodes = settings.nodes;
    for index in 0..nodes {
        if mode.is_recording {
            let log = record_path(&net, index);
            net.start_with_env(index, &[("TINYCHAIN_RECORD", log.to_str().unwrap())]);
        } else {
            net.start(index);
        }
    }
    let final_blocks = settings.final_blocks;
    net.wait_for(WARM_UP_TIMEOUT, "every node linked to every other with a few final blocks", |net| {
        (0..nodes)
            .all(|index| {
                net.status(index).is_some_and(|status| {
                    status["peers"] == nodes - 1
                        && status["finalized"]["height"].as_u64().is_some_and(|height| height >= final_blocks)
                })
            })
            .then_some(())
    });
    println!("network up with {final_blocks} final blocks after {:.1} s", wall.elapsed().as_secs_f64());

    let load = mode.is_loaded.then(|| {
        let senders = sender_keys("record-cost", settings.senders);
        let fee = minimum_fee(&net);
        let addresses: Vec<_> = senders.iter().map(|key| key.address()).collect();
        fund_accounts(&net, &development_key(&net), &addresses, SENDER_FUNDS, fee);
        let sink = tinychain_core::testkit::seeded_key("record-cost-sink", 0).address();
        println!("{} senders funded after {:.1} s", settings.senders, wall.elapsed().as_secs_f64());
        let load = Load::start(
            &net,
            &senders,
            sink,
            LoadSettings {
                transfers_per_second: settings.transfers_per_second,
                workers: settings.workers,
                amount_base: 1,
                fee,
                null_nonce_retry: Duration::from_millis(100),
            },
        );
        // The window opens once the load is in the blocks: two more blocks.
        let tip = highest_tip(&net);
        net.wait_for(WARM_UP_TIMEOUT, "two blocks under load", |net| (highest_tip(net) >= tip + 2).then_some(()));
        println!(
            "load running for {:.1} s ({} acknowledged)",
            load.started.elapsed().as_secs_f64(),
            load.acknowledged_count()
        );
        load
    });

    let window = measure_window(&net, settings, mode, load.as_ref());
    println!(
        "window: {:.1} s, {} blocks; CPU seconds per node {}; load average {}",
        window.seconds,
        window.blocks,
        window.cpu_seconds.iter().map(|seconds| format!("{seconds:.3}")).collect::<Vec<_>>().join(" "),
        window.load_average_at_end
    );
    if let Some(bytes) = &window.log_bytes {
        println!("window: log bytes per node {}", bytes.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "));
    }
    if let Some(load) = load {
        load.stop().print();
    }

    for (index, stopped) in net.stop_all().into_iter().enumerate() {
        match stopped {
            Stopped::Exited(status) if !status.success() => println!("note: node {index} exited with {status}"),
            Stopped::Killed => println!("note: node {index} did not stop on SIGTERM and was killed"),
            _ => {}
        }
    }
    print_log_warnings(&net);
    let replays: Vec<Replay> =
        if mode.is_recording { (0..nodes).map(|index| replay(&net, index)).collect() } else { Vec::new() };
    if settings.keep || replays.iter().any(|replay| !replay.is_identical) {
        if let Some(path) = net.keep() {
            println!("kept {}", path.display());
        }
    }
    println!("{} done in {:.0} s of wall time", mode.name(), wall.elapsed().as_secs_f64());
    ModeFigures { mode, window, replays }
}

/// Sleeps through the window, printing progress every 10 s; reads the figures at both ends.
fn measure_window(net: &Testnet, settings: &Settings, mode: Mode, load: Option<&Load>) -> Window {
    let nodes = net.nodes.len();
    let log_bytes_of = |net: &Testnet| -> Vec<u64> {
        (0..nodes)
            .map(|index| std::fs::metadata(record_path(net, index)).map_or(0, |metadata| metadata.len()))
            .collect()
    };
    let tip_at_start = highest_tip(net);
    let cpu_at_start: Vec<f64> = (0..nodes).map(|index| cpu_seconds(net, index)).collect();
    let log_at_start = mode.is_recording.then(|| log_bytes_of(net));
    let acknowledged_at_start = load.map(Load::acknowledged_count);
    let started = Instant::now();
    let end_at = started + settings.window;
    let mut next_progress = started + Duration::from_secs(10);
    while Instant::now() < end_at {
        std::thread::sleep(Duration::from_millis(100).min(end_at.saturating_duration_since(Instant::now())));
        if Instant::now() >= next_progress && Instant::now() < end_at {
            next_progress += Duration::from_secs(10);
            print_progress(net, started, load);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_at_end: Vec<f64> = (0..nodes).map(|index| cpu_seconds(net, index)).collect();
    let log_at_end = mode.is_recording.then(|| log_bytes_of(net));
    let acknowledged_at_end = load.map(Load::acknowledged_count);
    let tip_at_end = highest_tip(net);
    Window {
        seconds,
        blocks: tip_at_end.saturating_sub(tip_at_start),
        cpu_seconds: cpu_at_end.iter().zip(&cpu_at_start).map(|(end, start)| end - start).collect(),
        log_bytes: log_at_start
            .zip(log_at_end)
            .map(|(start, end)| end.iter().zip(&start).map(|(end, start)| end - start).collect()),
        acknowledged: acknowledged_at_start.zip(acknowledged_at_end).map(|(start, end)| end - start),
        load_average_at_end: load_average(),
    }
}

fn print_progress(net: &Testnet, started: Instant, load: Option<&Load>) {
    let tips: Vec<String> = (0..net.nodes.len())
        .map(|index| match net.status(index) {
            Some(status) => format!("{}/{}", status["tip"]["height"], status["mempool_size"]),
            None => "down".into(),
        })
        .collect();
    println!(
        "{:>8.1} s  tip/mempool per node: {}{}; load average {}",
        started.elapsed().as_secs_f64(),
        tips.join(" "),
        load.map_or(String::new(), |load| format!("; acknowledged {}", load.acknowledged_count())),
        load_average()
    );
}

/// `tinychain replay LOG --home HOME --json` on node `index`'s log, timed.
fn replay(net: &Testnet, index: usize) -> Replay {
    let log = record_path(net, index);
    let started = Instant::now();
    let output = Command::new(EXE)
        .args(["replay", log.to_str().unwrap(), "--home", net.home(index).to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let answer: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|error| {
        panic!(
            "replay of node {index} printed no JSON ({error}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let is_identical = answer["identical"] == true && output.status.success();
    println!(
        "replay node {index}: identical {}, {} sessions, {} calls, {} actions, {} bytes of log, in {seconds:.2} s{}",
        answer["identical"],
        answer["sessions"],
        answer["calls"],
        answer["actions"],
        answer["bytes"],
        match &answer["stopped"] {
            Value::Null => String::new(),
            stopped => format!("; stopped: {stopped}"),
        }
    );
    if !is_identical {
        println!("DIVERGENCE node {index}: {:#}", answer["divergence"]);
    }
    Replay { node: index, seconds, is_identical }
}

fn record_path(net: &Testnet, index: usize) -> PathBuf {
    net.home(index).join("record.log")
}

/// CPU seconds (user + system, every thread) node `index` has spent since it started, from
/// fields 14 and 15 of `/proc/PID/stat`.
fn cpu_seconds(net: &Testnet, index: usize) -> f64 {
    let pid = net.children[index].as_ref().expect("the node is running").id();
    proc_cpu_seconds(Path::new(&format!("/proc/{pid}/stat")))
}

fn proc_cpu_seconds(stat: &Path) -> f64 {
    let text = std::fs::read_to_string(stat).unwrap_or_else(|error| panic!("cannot read {}: {error}", stat.display()));
    // The command name (field 2) is in parentheses and may hold spaces: count from after it,
    // where field 3 (the state) comes first, so field 14 (utime) is the 12th.
    let after_name = &text[text.rfind(')').unwrap_or_else(|| panic!("no ')' in {}: {text}", stat.display())) + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |field: usize| -> u64 {
        fields[field - 3]
            .parse()
            .unwrap_or_else(|_| panic!("field {field} of {} is not a number: {text}", stat.display()))
    };
    (ticks(14) + ticks(15)) as f64 / PROC_STAT_TICKS_PER_SECOND
}

/// Per node: how many WARN and ERROR lines its log holds, and the first of each.
fn print_log_warnings(net: &Testnet) {
    for index in 0..net.nodes.len() {
        let log = net.log(index);
        for level in [" WARN ", " ERROR "] {
            let mut lines = log.lines().filter(|line| line.contains(level));
            if let Some(first) = lines.next() {
                println!("log node {index}: {} {} lines, first: {first}", 1 + lines.count(), level.trim());
            }
        }
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}
