//! The operator's kill -9 soak of issue 11 ("an acknowledged transfer is never silently lost"),
//! as a figures program: a testnet of real `tinychain node` processes on the chain's default
//! timing, a client signing and submitting transfers from many senders spread over the nodes
//! (the same load and accounting as `tests/acknowledged_transfers.rs`, from
//! `tests/support/load.rs`), and every `KILL_EVERY` seconds a node killed with SIGKILL and
//! restarted `RESTART_AFTER` seconds later. Two variants, each on a fresh testnet:
//!
//! - `random`: a random node each time (the seed is printed; `TINYCHAIN_SOAK_SEED` replays it);
//! - `producer`: the next producer each time (`status.next_producer`), which lost transfers
//!   before issue 11 was fixed.
//!
//! After the load stops and every mempool is empty and final, it prints, per variant: how many
//! transfers were acknowledged, committed exactly once, committed twice (must be 0), dropped by
//! reason, unknown (must be 0), the client's achieved rate against its target, and for every
//! restart the time until the node's `status` said `"mempool_synced": true` with its mempool
//! size then against its peers'. It exits with a panic when the property fails, after printing
//! the figures and a diagnosis (the testnet directory is then kept).
//!
//! Run with `cargo bench --bench soak` (two variants of 4 minutes each plus settling: about
//! 10 minutes). Sizes come from the environment:
//!
//! | variable | default | |
//! | --- | --- | --- |
//! | `TINYCHAIN_SOAK_NODES` | 4 | validators |
//! | `TINYCHAIN_SOAK_SECONDS` | 240 | load per variant |
//! | `TINYCHAIN_SOAK_RATE` | 1000 | transfers per second, over all senders |
//! | `TINYCHAIN_SOAK_SENDERS` | 128 | accounts sending (a sender may queue 256 pending) |
//! | `TINYCHAIN_SOAK_WORKERS` | 32 | client threads (each signs its senders' transfers) |
//! | `TINYCHAIN_SOAK_KILL_EVERY_SECONDS` | 20 | between two kills |
//! | `TINYCHAIN_SOAK_RESTART_AFTER_SECONDS` | 5 | from a kill to the restart |
//! | `TINYCHAIN_SOAK_VARIANTS` | `random,producer` | which variants, in order |
//! | `TINYCHAIN_SOAK_BLOCK_INTERVAL_MS` | 2000 | the genesis's block interval |
//! | `TINYCHAIN_SOAK_PRODUCER_TIMEOUT_MS` | 10000 | the genesis's producer timeout |
//! | `TINYCHAIN_SOAK_SEED` | from the clock | victims of the `random` variant |
//! | `TINYCHAIN_SOAK_KEEP` | unset | `1` keeps every testnet directory |
//!
//! Under `cargo test --all-targets` cargo runs this program without `--bench`; it then returns
//! at once. Every node process is killed when the program ends (`Testnet`'s `Drop`).

#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use std::time::{Duration, Instant};
use support::load::{
    account_for_every_acknowledged_transfer, describe_drops, development_key, diagnose_failures,
    drops_by_time_since_restart, fund_accounts, highest_tip, minimum_fee, next_producer,
    restart_and_watch_mempool_refill, sender_keys, settle, unix_ms_now, write_records, Accounting, CanonicalChain,
    Load, LoadReport, LoadSettings, MempoolRefill, Timeline,
};
use support::{env_or, load_average, Stopped, Testnet, EXE};

/// Every sender starts with 1,000 TC (base units): far more than the soak spends, and 128 of
/// them take an eighth of the development wallet's 1,000,000 TC.
const SENDER_FUNDS: u64 = 1_000 * 100_000_000;
/// How long settling may take after the load stops before the figures are taken as they are.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victims {
    Random,
    NextProducer,
}

impl Victims {
    fn name(self) -> &'static str {
        match self {
            Victims::Random => "random",
            Victims::NextProducer => "producer",
        }
    }
}

struct Settings {
    nodes: usize,
    duration: Duration,
    transfers_per_second: f64,
    senders: usize,
    workers: usize,
    kill_every: Duration,
    restart_after: Duration,
    variants: Vec<Victims>,
    block_interval_ms: u64,
    producer_timeout_ms: u64,
    seed: u64,
    keep: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let variants: Vec<Victims> = std::env::var("TINYCHAIN_SOAK_VARIANTS")
            .unwrap_or_else(|_| "random,producer".into())
            .split(',')
            .map(|name| match name.trim() {
                "random" => Victims::Random,
                "producer" => Victims::NextProducer,
                other => panic!("TINYCHAIN_SOAK_VARIANTS: unknown variant {other:?}; use random and/or producer"),
            })
            .collect();
        let settings = Settings {
            nodes: env_or("TINYCHAIN_SOAK_NODES", 4),
            duration: Duration::from_secs_f64(env_or("TINYCHAIN_SOAK_SECONDS", 240.0)),
            transfers_per_second: env_or("TINYCHAIN_SOAK_RATE", 1_000.0),
            senders: env_or("TINYCHAIN_SOAK_SENDERS", 128),
            workers: env_or("TINYCHAIN_SOAK_WORKERS", 32),
            kill_every: Duration::from_secs_f64(env_or("TINYCHAIN_SOAK_KILL_EVERY_SECONDS", 20.0)),
            restart_after: Duration::from_secs_f64(env_or("TINYCHAIN_SOAK_RESTART_AFTER_SECONDS", 5.0)),
            variants,
            block_interval_ms: env_or("TINYCHAIN_SOAK_BLOCK_INTERVAL_MS", 2_000),
            producer_timeout_ms: env_or("TINYCHAIN_SOAK_PRODUCER_TIMEOUT_MS", 10_000),
            seed: env_or("TINYCHAIN_SOAK_SEED", unix_ms_now()),
            keep: std::env::var("TINYCHAIN_SOAK_KEEP").is_ok_and(|value| value == "1"),
        };
        assert!(settings.nodes >= 2, "TINYCHAIN_SOAK_NODES: a soak kills one node, so it needs at least 2");
        assert!(settings.workers >= 1 && settings.senders >= settings.workers, "at least one sender per worker");
        assert!(settings.transfers_per_second > 0.0, "TINYCHAIN_SOAK_RATE must be positive");
        assert!(settings.kill_every > settings.restart_after, "a node is restarted before the next kill");
        settings
    }
}

/// What one variant measured.
struct SoakFigures {
    victims: Victims,
    kills: usize,
    report: LoadReport,
    accounting: Accounting,
    refills: Vec<MempoolRefill>,
    settled: Result<u64, String>,
    chain_transfers: usize,
    disagreements: usize,
    wall_time: Duration,
}

impl SoakFigures {
    fn holds(&self) -> bool {
        self.accounting.holds() && self.settled.is_ok() && self.disagreements == 0
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
    println!("seed: TINYCHAIN_SOAK_SEED={}", settings.seed);
    let figures: Vec<SoakFigures> = settings.variants.iter().map(|victims| soak(&settings, *victims)).collect();

    println!();
    println!(
        "summary (cargo bench --bench soak; {} nodes, {} ms blocks, {} ms producer timeout, {:.0} s of load per \
         variant at a target of {:.0} transfers/s from {} senders on {} threads, a kill every {:.0} s, restart \
         {:.0} s later; TINYCHAIN_SOAK_SEED={}):",
        settings.nodes,
        settings.block_interval_ms,
        settings.producer_timeout_ms,
        settings.duration.as_secs_f64(),
        settings.transfers_per_second,
        settings.senders,
        settings.workers,
        settings.kill_every.as_secs_f64(),
        settings.restart_after.as_secs_f64(),
        settings.seed
    );
    for figures in &figures {
        print_summary(figures);
    }
    let failed: Vec<&str> = figures.iter().filter(|figures| !figures.holds()).map(|f| f.victims.name()).collect();
    assert!(failed.is_empty(), "acknowledged transfers were not all accounted for in the variants {failed:?} (above)");
}

fn print_summary(figures: &SoakFigures) {
    let accounting = &figures.accounting;
    let report = &figures.report;
    let reasons: Vec<String> =
        accounting.dropped_by_reason().iter().map(|(reason, count)| format!("{reason} {count}")).collect();
    println!(
        "variant {} ({} kills, {:.0} s of wall time):",
        figures.victims.name(),
        figures.kills,
        figures.wall_time.as_secs_f64()
    );
    println!(
        "  client: target {:.0}/s, signed {:.0}/s, acknowledged {:.0}/s; {} rejected, {} uncertain, \
         {} times a worker fell over 1 s behind and dropped its backlog",
        report.settings.transfers_per_second,
        report.signed as f64 / report.elapsed.as_secs_f64(),
        report.acknowledged_per_second(),
        report.rejected.values().sum::<u64>(),
        report.uncertain_count(),
        report.backlogs_dropped
    );
    println!(
        "  acknowledged {}; committed exactly once {}; committed twice {}; dropped {} ({}); unknown {}; \
         unexplained drops {}; unsettled {}; (sender, nonce) twice {}",
        accounting.acknowledged,
        accounting.committed_once,
        accounting.committed_more_than_once.len(),
        accounting.dropped.len(),
        if reasons.is_empty() { "none".to_string() } else { reasons.join(", ") },
        accounting.unknown.len(),
        accounting.dropped_unexplained.len(),
        accounting.unsettled.len(),
        accounting.slots_committed_twice.len()
    );
    println!(
        "  chain: {} transfers in the blocks read; {}; nodes disagreeing at {} heights",
        figures.chain_transfers,
        match &figures.settled {
            Ok(height) => format!("settled at height {height}"),
            Err(why) => format!("NOT settled: {why}"),
        },
        figures.disagreements
    );
    let mut synced: Vec<Duration> = figures.refills.iter().filter_map(|refill| refill.synced_after).collect();
    synced.sort_unstable();
    if synced.is_empty() {
        println!("  mempool refill: no restarted node reported mempool_synced: true");
    } else {
        println!(
            "  mempool refill (restart to mempool_synced): min {:.2} s, median {:.2} s, max {:.2} s over {} of {} restarts",
            synced[0].as_secs_f64(),
            synced[synced.len() / 2].as_secs_f64(),
            synced[synced.len() - 1].as_secs_f64(),
            synced.len(),
            figures.refills.len()
        );
    }
    for refill in &figures.refills {
        println!("    {refill}");
    }
}

fn soak(settings: &Settings, victims: Victims) -> SoakFigures {
    let wall = Instant::now();
    println!();
    println!(
        "== soak, variant {}: {} nodes, {} ms blocks, {} ms producer timeout, {:.0} s",
        victims.name(),
        settings.nodes,
        settings.block_interval_ms,
        settings.producer_timeout_ms,
        settings.duration.as_secs_f64()
    );
    println!("load average {}", load_average());
    let mut net = Testnet::init(settings.nodes, settings.block_interval_ms, settings.producer_timeout_ms);
    println!("testnet in {}", net.root.display());
    net.start_all();
    let nodes = settings.nodes;
    net.wait_for(Duration::from_secs(120), "every node linked to every other with a block", |net| {
        (0..nodes)
            .all(|index| {
                net.status(index).is_some_and(|status| {
                    status["peers"] == nodes - 1 && status["tip"]["height"].as_u64().is_some_and(|height| height >= 1)
                })
            })
            .then_some(())
    });
    let label = format!("soak-{}", victims.name());
    let senders = sender_keys(&label, settings.senders);
    let fee = minimum_fee(&net);
    let addresses: Vec<_> = senders.iter().map(|key| key.address()).collect();
    fund_accounts(&net, &development_key(&net), &addresses, SENDER_FUNDS, fee);
    let sink = tinychain_core::testkit::seeded_key(&format!("{label}-sink"), 0).address();
    println!("network up and {} senders funded after {:.1} s", settings.senders, wall.elapsed().as_secs_f64());

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
    let mut timeline = Timeline::default();
    // The victims, from the seed: `TINYCHAIN_SOAK_SEED` replays them.
    let mut random = ChaCha8Rng::seed_from_u64(settings.seed ^ victims as u64);
    let mut refills = Vec::new();
    let mut kills = 0;
    let mut next_kill_at = load.started + settings.kill_every;
    let end_at = load.started + settings.duration;
    let mut last_progress = Instant::now();
    loop {
        if Instant::now() >= end_at {
            break;
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            print_progress(&net, &load);
            last_progress = Instant::now();
        }
        // A kill only when its restart also falls inside the run.
        if Instant::now() < next_kill_at || next_kill_at + settings.restart_after >= end_at {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        next_kill_at += settings.kill_every;
        let victim = match victims {
            Victims::Random => (random.next_u64() % nodes as u64) as usize,
            Victims::NextProducer => match next_producer(&net) {
                Some(victim) => victim,
                None => {
                    timeline.record(&load, "no node named a next producer; no kill this time".into());
                    continue;
                }
            },
        };
        kills += 1;
        let tip = highest_tip(&net);
        net.kill9(victim);
        timeline.record(&load, format!("kill {kills}: SIGKILL node {victim} (tip {tip})"));
        std::thread::sleep(settings.restart_after);
        let refill = restart_and_watch_mempool_refill(&mut net, victim, Duration::from_secs(60));
        timeline.record(&load, format!("kill {kills}: restarted; {refill}"));
        refills.push(refill);
    }
    let tip_at_stop = highest_tip(&net);
    let load_started = load.started;
    let report = load.stop();
    report.print();
    let keeps_up = report.signed as f64 >= 0.95 * settings.transfers_per_second * report.elapsed.as_secs_f64();
    println!(
        "the client {} its target of {:.0} transfers/s (signed {:.0}/s on {} threads)",
        if keeps_up { "kept up with" } else { "fell behind" },
        settings.transfers_per_second,
        report.signed as f64 / report.elapsed.as_secs_f64(),
        settings.workers
    );
    println!("load stopped at tip {tip_at_stop}; settling (every mempool empty, final past it)");
    let settling = Instant::now();
    let settled = settle(&net, tip_at_stop, SETTLE_TIMEOUT);
    let read_up_to = match &settled {
        Ok(height) => *height,
        Err(why) => {
            println!("NOT settled: {why}");
            (0..nodes).filter_map(|index| net.finalized(index)).map(|(height, _)| height).min().unwrap_or(0)
        }
    };
    println!("settled in {:.1} s; reading blocks 1..={read_up_to}", settling.elapsed().as_secs_f64());
    for index in 0..nodes {
        if let Some(status) = net.status(index) {
            println!(
                "node {index}: journal holds {} transfers; it dropped {} (by reason {})",
                status["journal_transfers"],
                status["transfers_dropped"]["total"],
                status["transfers_dropped"]["by_reason"]
            );
        }
    }
    let chain = CanonicalChain::read(&net, 0, read_up_to);
    for disagreement in chain.disagreements.iter().take(10) {
        println!("DISAGREEMENT {disagreement}");
    }
    let accounting = account_for_every_acknowledged_transfer(&net, &chain, &report.acknowledged);
    accounting.print();
    let restarts: Vec<(usize, Duration)> =
        refills.iter().map(|refill| (refill.node, refill.restarted_at - load_started)).collect();
    println!("{}", drops_by_time_since_restart(&accounting, &restarts));
    for line in describe_drops(&accounting, &report.acknowledged, 5) {
        println!("{line}");
    }
    let holds = accounting.holds() && settled.is_ok() && chain.disagreements.is_empty();
    if !accounting.holds() {
        for line in accounting.failures(10) {
            println!("FAILURE {line}");
        }
        println!("{}", diagnose_failures(&net, &chain, &accounting, &timeline, report.started_unix_ms, 5));
    }
    for (index, stopped) in net.stop_all().into_iter().enumerate() {
        match stopped {
            Stopped::Exited(status) if !status.success() => println!("note: node {index} exited with {status}"),
            Stopped::Killed => println!("note: node {index} did not stop on SIGTERM and was killed"),
            _ => {}
        }
    }
    print_log_warnings(&net);
    if settings.keep || !holds {
        write_records(&net.root, &report.acknowledged, &accounting);
        if let Some(path) = net.keep() {
            println!("kept {} (with acknowledged.tsv and dropped.tsv)", path.display());
        }
    }
    SoakFigures {
        victims,
        kills,
        chain_transfers: chain.transfer_count,
        disagreements: chain.disagreements.len(),
        report,
        accounting,
        refills,
        settled,
        wall_time: wall.elapsed(),
    }
}

fn print_progress(net: &Testnet, load: &Load) {
    let elapsed = load.started.elapsed().as_secs_f64();
    let nodes: Vec<String> = (0..net.nodes.len())
        .map(|index| match net.status(index) {
            Some(status) => format!("{}/{}", status["tip"]["height"], status["mempool_size"]),
            None => "down".into(),
        })
        .collect();
    println!(
        "{elapsed:>8.1} s  acknowledged {} ({:.0}/s); tip/mempool per node: {}; load average {}",
        load.acknowledged_count(),
        load.acknowledged_count() as f64 / elapsed,
        nodes.join(" "),
        load_average()
    );
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
