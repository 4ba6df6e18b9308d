//! `tinychain sim`: runs seeded simulations of a whole network on virtual time (the same core
//! code a server runs), with injected faults and dishonest validators, and reports what
//! happened. A failing run prints the one command that replays it and exits non-zero.

use anyhow::{bail, Context};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;
use tinychain_sim::engine::{SimReport, Simulation};
use tinychain_sim::options::{parse_behaviours, parse_duration_ms, parse_faults, parse_seed_range, SimOptions};
use tinychain_sim::report;
use tinychain_sim::scenario;
use tinychain_sim::series::RunFigures;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Validators in the simulated network.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// The seed: the same seed and options give a byte-identical trace.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Sweep seeds A..B (inclusive) instead of one seed, and list the failing ones.
    #[arg(long, value_name = "A..B")]
    pub seeds: Option<String>,
    /// Virtual time to simulate: 500ms, 30s, 10m, 1h.
    #[arg(long, default_value = "10m")]
    pub duration: String,
    /// Valid transfers submitted per virtual second (about 5% invalid ones are added).
    #[arg(long, default_value_t = 0)]
    pub tx_rate: u64,
    /// Faults to inject: none, all, or a comma list of crash, pause, partition, loss, dup,
    /// reorder, skew, metrics. They stop at 70% of the run; the rest checks liveness.
    #[arg(long, default_value = "none")]
    pub faults: String,
    /// Base one-way latency of every link, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// Random extra latency per message, 0 to this many milliseconds (reorders messages).
    #[arg(long, default_value_t = 10)]
    pub jitter_ms: u64,
    /// Link bandwidth in bytes per millisecond (1000 = 8 Mbit/s), so big blocks take time;
    /// unlimited when absent.
    #[arg(long)]
    pub bandwidth: Option<u64>,
    /// Derive each node's network usage from the bytes it really sends, against this link
    /// capacity in bytes per second, instead of a random profile.
    #[arg(long, value_name = "BYTES_PER_S")]
    pub net_from_traffic: Option<u64>,
    /// Dishonest validators, chosen from the seed. With fewer than a third, safety, liveness and
    /// evidence are checked; with a third or more, conflicting final blocks are counted and
    /// must come with evidence naming a third of the validators.
    #[arg(long, default_value_t = 0)]
    pub byzantine: usize,
    /// What the dishonest validators do: all (a mix chosen by the seed), or a comma list of
    /// lie-metrics, equivocate, double-vote, surround-vote, withhold, invalid, spam, split.
    #[arg(long, default_value = "all")]
    pub behaviour: String,
    /// The production-share cap in fair shares of the window (genesis
    /// production_cap_fair_shares; 0 turns it off).
    #[arg(long)]
    pub production_cap: Option<u64>,
    /// Write the trace (one line per event of interest, see docs/sim-trace.md) to this file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Print one JSON object per run (and a summary object after a sweep).
    #[arg(long)]
    pub json: bool,
    /// Write a report to this file: one self-contained HTML page with SVG plots, readable
    /// offline (docs/sim-report.md). For one run: faults on the timeline, block interval, each
    /// node's tip and final height, finality lag, production share per validator and transfer
    /// latency. For --seeds: one row per seed with pass or fail and its replay command, and the
    /// distributions of max gap, recovery time and reorg depth. The plotted numbers are the
    /// ones --json prints, and are in the page as JSON too.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Run a scenario file instead: validators, seed, duration, faults at set times and the
    /// expectations to check (docs/scenarios.md). The other simulation options are ignored.
    #[arg(long, value_name = "FILE.toml", conflicts_with = "seeds")]
    pub scenario: Option<PathBuf>,
}

fn options_for(args: &Args, seed: u64) -> anyhow::Result<SimOptions> {
    if args.nodes == 0 || args.nodes > 1024 {
        bail!("--nodes must be between 1 and 1024, got {}", args.nodes);
    }
    let mut options = SimOptions::new(args.nodes, seed, parse_duration_ms(&args.duration).context("--duration")?);
    options.tx_rate_per_s = args.tx_rate;
    options.faults = parse_faults(&args.faults).context("--faults")?;
    options.keep_trace = args.trace.is_some();
    // A sweep's report needs only each seed's `SimReport`; one run's plots its time series.
    options.record_series = args.report.is_some() && args.seeds.is_none();
    options.latency_ms = args.latency_ms;
    options.jitter_ms = args.jitter_ms;
    options.bandwidth_bytes_per_ms = args.bandwidth;
    options.net_from_traffic_bytes_per_s = args.net_from_traffic;
    if args.bandwidth == Some(0) || args.net_from_traffic == Some(0) {
        bail!("--bandwidth and --net-from-traffic must be above zero");
    }
    if args.byzantine > args.nodes {
        bail!("--byzantine {} is more than the {} validators", args.byzantine, args.nodes);
    }
    options.byzantine = args.byzantine;
    options.behaviours = parse_behaviours(&args.behaviour).context("--behaviour")?;
    if args.byzantine > 0 && options.behaviours.is_empty() {
        bail!("--behaviour names no behaviour");
    }
    if let Some(cap) = args.production_cap {
        options.parameters.production_cap_fair_shares = cap;
    }
    Ok(options)
}

/// Runs one simulation, with a progress bar on stderr when it is a terminal; the report's
/// figures when the options record them.
fn run_one(options: SimOptions, show_progress: bool) -> (SimReport, Vec<String>, Option<RunFigures>) {
    let started = Instant::now();
    let duration_ms = options.duration_ms;
    let record_series = options.record_series;
    let mut simulation = Simulation::new(options);
    let bar = show_progress.then(|| {
        let bar = indicatif::ProgressBar::new(duration_ms / 1_000);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} simulating {pos}/{len} virtual s [{bar:30}] {elapsed} elapsed, {eta} left",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar
    });
    let step_ms = (duration_ms / 200).max(1_000);
    let mut at_ms = 0;
    while at_ms < duration_ms {
        at_ms = (at_ms + step_ms).min(duration_ms);
        simulation.run_until(at_ms);
        if let Some(bar) = &bar {
            bar.set_position(at_ms / 1_000);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let figures = record_series.then(|| simulation.figures());
    let (mut report, trace) = simulation.run();
    report.wall_ms = started.elapsed().as_millis() as u64;
    (report, trace, figures)
}

fn write_report(path: &std::path::Path, html: Result<String, report::ReportError>) -> anyhow::Result<()> {
    let html = html.with_context(|| format!("cannot draw report {}", path.display()))?;
    std::fs::write(path, html).with_context(|| format!("cannot write report {}", path.display()))?;
    eprintln!("report written to {}", path.display());
    Ok(())
}

fn print_human(report: &SimReport) {
    let verdict = if report.passed() { "PASS" } else { "FAIL" };
    println!(
        "{verdict}  seed {}  {} nodes  {} virtual s in {} ms wall",
        report.seed,
        report.nodes,
        report.virtual_ms / 1_000,
        report.wall_ms
    );
    println!(
        "  chain      height {}, final {}, blocks by rank {:?}",
        report.height, report.final_height, report.blocks_by_rank
    );
    println!(
        "  intervals  p50 {} ms, p99 {} ms, max {} ms; max gap before a final block {} ms; finality lag p50 {} ms, p99 {} ms",
        report.interval_ms.p50,
        report.interval_ms.p99,
        report.interval_ms.max,
        report.max_final_gap_ms,
        report.finality_lag_ms.p50,
        report.finality_lag_ms.p99
    );
    println!(
        "  transfers  {} submitted (+{} invalid), {} committed, latency p50 {} ms p99 {} ms",
        report.txs_submitted,
        report.invalid_txs_submitted,
        report.txs_committed,
        report.tx_latency_ms.p50,
        report.tx_latency_ms.p99
    );
    println!(
        "  acked      {} acknowledged: {} dropped with a reason {:?}, {} lost",
        report.txs_acknowledged,
        report.txs_dropped.values().sum::<u64>(),
        report.txs_dropped,
        report.txs_lost
    );
    println!(
        "  faults     {} injected, {} timeouts fired, {} reorgs (deepest {})",
        report.faults_injected, report.timeouts_fired, report.reorgs, report.max_reorg_depth
    );
    if !report.byzantine.is_empty() {
        println!(
            "  byzantine  {:?}{}: {} offences proven to honest nodes, {} committed (delay p50 {} ms, max {} ms), {} on the chain; jailed {:?}",
            report.behaviours,
            if report.beyond_fault_tolerance { " (a third or more)" } else { "" },
            report.offences_proven,
            report.offences_committed,
            report.evidence_delay_ms.p50,
            report.evidence_delay_ms.max,
            report.evidence_committed,
            report.jailed
        );
        let accountable = match report.accountable {
            None => "no conflict".to_string(),
            Some(accountable) => format!("accountable {accountable}, offenders named {:?}", report.offenders_named),
        };
        println!(
            "  conflicts  {} pairs of honest nodes with conflicting final blocks: {accountable}",
            report.conflicting_finals
        );
    }
    println!(
        "  shares     blocks {:?}, rewards {:?} (per-mille per validator)",
        report.production_share, report.reward_share
    );
    println!("  safety     {} violations", report.safety_violations);
    for violation in &report.violations {
        println!("    {violation}");
    }
    let liveness = match (report.liveness_ok, report.beyond_fault_tolerance) {
        (true, _) => "ok",
        (false, true) => "lost (not required past a third dishonest)",
        (false, false) => "FAILED",
    };
    println!("  liveness   {liveness}: {}", report.liveness);
    println!("  trace      {} lines, hash {}", report.trace_lines, report.trace_hash);
    if !report.passed() {
        println!("  replay     {}", report.replay);
    }
}

/// `--scenario FILE`: runs the file's simulation and judges its expectations.
fn run_scenario(args: &Args, path: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read scenario {}", path.display()))?;
    let mut scenario = scenario::parse(&text).with_context(|| format!("scenario {}", path.display()))?;
    scenario.options.keep_trace = args.trace.is_some();
    scenario.options.record_series = args.report.is_some();
    let show_progress = std::io::stderr().is_terminal();
    let (mut report, trace, figures) = run_one(scenario.options.clone(), show_progress);
    report.replay = format!("tinychain sim --scenario {}", path.display());
    if let Some(trace_path) = &args.trace {
        write_trace(trace_path, &trace)?;
    }
    let verdicts = scenario::check(&scenario.expect, &report);
    if let (Some(report_path), Some(figures)) = (&args.report, &figures) {
        write_report(report_path, report::run_html(&report, figures, &verdicts))?;
    }
    let failed = verdicts.iter().filter(|verdict| !verdict.ok).count();
    if args.json {
        let mut object = serde_json::to_value(&report).expect("reports serialize");
        object["scenario"] = serde_json::json!({
            "file": path.display().to_string(),
            "description": scenario.description,
            "passed": failed == 0,
            "expectations": verdicts,
        });
        println!("{object}");
    } else {
        if !scenario.description.is_empty() {
            println!("scenario   {}: {}", path.display(), scenario.description);
        }
        print_human(&report);
        println!("  expected");
        for verdict in &verdicts {
            println!("    {} {}: {}", if verdict.ok { "ok  " } else { "FAIL" }, verdict.expectation, verdict.observed);
        }
    }
    if failed > 0 {
        bail!("scenario {}: {failed} of {} expectations failed", path.display(), verdicts.len());
    }
    Ok(())
}

fn write_trace(path: &std::path::Path, trace: &[String]) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("cannot create trace file {}", path.display()))?;
    for line in trace {
        writeln!(file, "{line}").with_context(|| format!("cannot write trace file {}", path.display()))?;
    }
    Ok(())
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if let Some(path) = &args.scenario {
        return run_scenario(args, path);
    }
    let seeds = match &args.seeds {
        Some(range) => parse_seed_range(range).context("--seeds")?,
        None => args.seed..=args.seed,
    };
    let sweep = args.seeds.is_some();
    let show_progress = !sweep && std::io::stderr().is_terminal();
    // The command a sweep report names: the runs' own, over the range of seeds.
    let (first_seed, last_seed) = (*seeds.start(), *seeds.end());
    let sweep_command = options_for(args, first_seed)?.replay_command().replacen(
        &format!("--seed {first_seed} "),
        &format!("--seeds {first_seed}..{last_seed} "),
        1,
    );
    let mut sweep_reports = Vec::new();
    let mut failing = Vec::new();
    let mut runs = 0u64;
    let (mut conflicted, mut accountable) = (0u64, 0u64);
    for seed in seeds {
        let options = options_for(args, seed)?;
        let (report, trace, figures) = run_one(options, show_progress);
        runs += 1;
        conflicted += u64::from(report.conflicting_finals > 0);
        accountable += u64::from(report.accountable == Some(true));
        if let Some(path) = &args.trace {
            write_trace(path, &trace)?;
        }
        if let (Some(path), Some(figures)) = (&args.report, &figures) {
            write_report(path, report::run_html(&report, figures, &[]))?;
        }
        if args.json {
            println!("{}", serde_json::to_string(&report).expect("reports serialize"));
        } else if sweep {
            let verdict = if report.passed() { "ok  " } else { "FAIL" };
            let conflicts = match report.accountable {
                None => String::new(),
                Some(accountable) => {
                    format!(" conflicts {} accountable {accountable}", report.conflicting_finals)
                }
            };
            println!(
                "{verdict} seed {seed}: height {} final {} reorgs {} violations {} liveness {}{conflicts}",
                report.height,
                report.final_height,
                report.reorgs,
                report.safety_violations,
                match (report.liveness_ok, report.beyond_fault_tolerance) {
                    (true, _) => "ok",
                    (false, true) => "lost (not required past a third dishonest)",
                    (false, false) => "FAILED",
                }
            );
        } else {
            print_human(&report);
        }
        if !report.passed() {
            if sweep && !args.json {
                eprintln!("  replay: {}", report.replay);
            }
            failing.push(seed);
        }
        if sweep && args.report.is_some() {
            sweep_reports.push(report);
        }
    }
    if let (true, Some(path)) = (sweep, &args.report) {
        write_report(path, report::sweep_html(&sweep_reports, &sweep_command))?;
    }
    if sweep {
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "summary": true,
                    "runs": runs,
                    "failing_seeds": failing,
                    "seeds_with_conflicting_finals": conflicted,
                    "seeds_accountable": accountable,
                })
            );
        } else {
            println!("{} of {runs} seeds passed; failing: {failing:?}", runs - failing.len() as u64);
            if conflicted > 0 {
                println!("{conflicted} seeds showed conflicting final blocks, {accountable} of them accountable");
            }
        }
    }
    if !failing.is_empty() {
        bail!("{} simulation(s) failed: seeds {failing:?}", failing.len());
    }
    Ok(())
}
