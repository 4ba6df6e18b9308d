//! `tinychain testnet`: a local network in one command. Initialises `DIR` if it holds no testnet
//! yet (`setup::init_testnet`: homes, one genesis, a funded development wallet, `testnet.json`),
//! then runs every node as a separate `tinychain node` process on 127.0.0.1 over TLS, each with
//! its own redb and its log in `HOME/node.log`. It prints each node's RPC URL and the URL of its
//! web explorer (`GET /` on the RPC port, docs/explorer.md), then one line per block as the
//! network commits it (read over RPC from the first node that answers), and on Ctrl-C or SIGTERM
//! stops every node with SIGTERM (SIGKILL after a grace period).
//!
//! `tinychain testnet init` writes the files without running anything.

use crate::cli::node::shutdown_signal;
use crate::setup::{self, TestnetLayout, TestnetOptions};
use anyhow::Context;
use std::path::PathBuf;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinychain_rpc::BlockSelector;
use tinychain_wallet::client::RpcClient;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub options: InitArgs,
    /// Each node records every input of its core to HOME/record.log (`tinychain node --record`),
    /// for `tinychain replay HOME/record.log --home HOME`.
    #[arg(long)]
    pub record: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write everything a local network needs (node homes, genesis, development wallet,
    /// testnet.json) without running it.
    Init(InitArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// How many validators (1 to 16). Default 4 for a new testnet; an existing one keeps its own.
    #[arg(long)]
    pub nodes: Option<usize>,
    /// The testnet's directory.
    #[arg(long, default_value = "testnet")]
    pub dir: PathBuf,
    /// Node i (from 0) listens for peers on BASE+2i and serves RPC on BASE+2i+1, all on
    /// 127.0.0.1; the default puts node-1 on the standard ports 7740 and 7741.
    #[arg(long, default_value_t = setup::TESTNET_BASE_PORT_DEFAULT)]
    pub base_port: u16,
    /// Block interval written into a new genesis (default: the chain default, 2000 ms).
    #[arg(long)]
    pub block_interval_ms: Option<u64>,
    /// Producer timeout written into a new genesis (default: the chain default, 10000 ms).
    #[arg(long)]
    pub producer_timeout_ms: Option<u64>,
    /// Most transfers in one block, written into a new genesis [default: 10000, sized for the default 2 s interval]. With a
    /// much shorter interval lower it (2500 at 200 ms on a 2-core test machine), or under
    /// overload a full block can take longer than the producer timeout to pass through the
    /// network: fallback producers, short reorganisations, finality lagging.
    #[arg(long, value_name = "N")]
    pub block_transfers_max: Option<u32>,
    /// Chain id of a new testnet.
    #[arg(long, default_value = "tinychain-local")]
    pub chain_id: String,
}

const NODES_DEFAULT: usize = 4;
/// How long nodes get to stop after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// A node that does not answer a poll within this is skipped for that round.
const RPC_POLL_TIMEOUT: Duration = Duration::from_secs(2);

fn options(args: &InitArgs) -> TestnetOptions {
    TestnetOptions {
        dir: args.dir.clone(),
        nodes: args.nodes.unwrap_or(NODES_DEFAULT),
        base_port: args.base_port,
        block_interval_ms: args.block_interval_ms,
        producer_timeout_ms: args.producer_timeout_ms,
        block_transfers_max: args.block_transfers_max,
        chain_id: args.chain_id.clone(),
    }
}

/// Loads the testnet in `args.dir`, or initialises one there.
fn load_or_init(args: &InitArgs) -> anyhow::Result<TestnetLayout> {
    if args.dir.join("testnet.json").exists() {
        let layout = setup::load_testnet(&args.dir)?;
        if let Some(nodes) = args.nodes {
            anyhow::ensure!(
                nodes == layout.nodes.len(),
                "{} already holds a testnet of {} nodes, not {nodes}: use another --dir, or remove it to start afresh",
                args.dir.display(),
                layout.nodes.len()
            );
        }
        println!("using the testnet in {}", args.dir.display());
        return Ok(layout);
    }
    let layout = setup::init_testnet(&options(args))?;
    println!("initialised a testnet of {} nodes in {}", layout.nodes.len(), args.dir.display());
    Ok(layout)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    match &args.command {
        Some(Command::Init(init)) => {
            anyhow::ensure!(
                !init.dir.join("testnet.json").exists(),
                "{} already holds a testnet; run `tinychain testnet --dir {}` to start it",
                init.dir.display(),
                init.dir.display()
            );
            let layout = setup::init_testnet(&options(init))?;
            print_layout(&layout);
            println!("start it with: tinychain testnet --dir {}", init.dir.display());
            Ok(())
        }
        None => run_testnet(&args.options, args.record),
    }
}

fn print_layout(layout: &TestnetLayout) {
    for node in &layout.nodes {
        println!(
            "  {:<8} {}  p2p {}  rpc http://{}  home {}",
            node.name,
            node.id,
            node.p2p,
            node.rpc,
            node.home.display()
        );
    }
    println!(
        "  development wallet: {} (key \"dev\", 1,000,000 TC in genesis; its passphrase is EMPTY: for local testing only)",
        layout.wallet_dir.display()
    );
}

/// Every node's web explorer: the page each node serves at `GET /` on its RPC address, watching
/// the chain live through that node's JSON-RPC.
fn print_explorers(layout: &TestnetLayout) {
    println!("open a node's explorer in a browser to watch the chain:");
    for node in &layout.nodes {
        println!("  {:<8} explorer http://{}/", node.name, node.rpc);
    }
}

/// One running node process.
struct Running {
    name: String,
    rpc: RpcClient,
    child: Child,
    exited: bool,
}

fn spawn_node(exe: &std::path::Path, home: &std::path::Path, record: bool) -> anyhow::Result<Child> {
    let log_path = home.join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the log file {}", log_path.display()))?;
    let log_err = log.try_clone().with_context(|| format!("cannot open the log file {}", log_path.display()))?;
    let mut command = Process::new(exe);
    command
        .arg("node")
        .arg("--home")
        .arg(home)
        .env_remove("TINYCHAIN_HOME")
        .env_remove("TINYCHAIN_RECORD")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: runs in the child between fork and exec and only makes one async-signal-safe
        // system call (prctl). The node gets SIGTERM when the runner dies, even by SIGKILL, so
        // no node outlives its testnet command.
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
    }
    if record {
        command.arg("--record").arg(home.join("record.log"));
    }
    command.spawn().with_context(|| format!("cannot start {} node --home {}", exe.display(), home.display()))
}

fn run_testnet(args: &InitArgs, record: bool) -> anyhow::Result<()> {
    let layout = load_or_init(args)?;
    let exe = std::env::current_exe().context("cannot find the tinychain executable to start nodes with")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(shutdown_signal());
            stop_flag.store(true, Ordering::SeqCst);
        }
    });

    let clients = layout
        .nodes
        .iter()
        .map(|node| RpcClient::with_timeout(&format!("http://{}", node.rpc), RPC_POLL_TIMEOUT))
        .collect::<Result<Vec<_>, _>>()?;
    let mut running = Vec::new();
    for (node, rpc) in layout.nodes.iter().zip(clients) {
        match spawn_node(&exe, &node.home, record) {
            Ok(child) => running.push(Running { name: node.name.clone(), rpc, child, exited: false }),
            Err(error) => {
                stop_all(&mut running);
                return Err(error);
            }
        }
    }
    println!("started {} nodes (logs in each home's node.log):", running.len());
    print_layout(&layout);
    print_explorers(&layout);
    println!("press Ctrl-C to stop every node");
    println!();
    println!("{:>7}  {:<8} {:>4} {:>6} {:>9}  {:>8}", "height", "producer", "rank", "score", "transfers", "final");

    let mut printed_height = 0u64;
    let mut quiet_since = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(POLL_INTERVAL);
        if stop.load(Ordering::SeqCst) {
            break;
        }
        for node in running.iter_mut().filter(|node| !node.exited) {
            if let Ok(Some(status)) = node.child.try_wait() {
                node.exited = true;
                println!("{} exited ({status}); see its node.log", node.name);
            }
        }
        if running.iter().all(|node| node.exited) {
            // A Ctrl-C in the terminal reaches the nodes too: give our own handler a moment.
            std::thread::sleep(Duration::from_millis(500));
            if stop.load(Ordering::SeqCst) {
                break;
            }
            anyhow::bail!("every node exited; see their node.log files in {}", layout.dir.display());
        }
        // Blocks as the network commits them, from the first node that answers.
        let Some((rpc, status)) = running
            .iter()
            .filter(|node| !node.exited)
            .find_map(|node| node.rpc.status().ok().map(|status| (&node.rpc, status)))
        else {
            continue;
        };
        let (tip, finalized) = (status.tip.height, status.finalized.height);
        if tip > printed_height {
            // Show at most the last 20 if far behind (a restarted testnet resumes at its tip).
            let from = (printed_height + 1).max(tip.saturating_sub(19));
            for height in from..=tip {
                print_block(rpc, height, finalized);
            }
            printed_height = tip;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(30) {
            println!("no new block for 30 s (tip {tip}); peers and logs: see node.log in each home");
            quiet_since = Instant::now();
        }
    }
    println!("stopping {} nodes", running.iter().filter(|node| !node.exited).count());
    stop_all(&mut running);
    Ok(())
}

/// Prints one committed block: height, producer, rank, the producer's committed score, transfers.
fn print_block(rpc: &RpcClient, height: u64, finalized: u64) {
    let Some(header) = rpc.get_header(BlockSelector::Height(height)).ok() else { return };
    let election = rpc.get_election(Some(height)).ok();
    let producer_id = header.header.producer;
    let producer = election
        .as_ref()
        .and_then(|election| election.produced.as_ref().and_then(|produced| produced.name.clone()))
        .unwrap_or_else(|| short_id(&producer_id.to_string()));
    let rank = header.header.rank;
    // The producer's committed score: its line in the ranking that elected the block.
    let score = election
        .as_ref()
        .and_then(|election| election.candidates.iter().find(|candidate| candidate.node_id == producer_id))
        .and_then(|candidate| candidate.score)
        .map(|score| score.to_string())
        .unwrap_or_else(|| "-".to_string());
    let transfers = header.transfer_count;
    println!("{height:>7}  {producer:<8} {rank:>4} {score:>6} {transfers:>9}  {finalized:>8}");
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// SIGTERM to every running node, then SIGKILL to those still up after the grace period.
fn stop_all(running: &mut [Running]) {
    for node in running.iter_mut().filter(|node| !node.exited) {
        let pid = nix::unistd::Pid::from_raw(node.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for node in running.iter_mut().filter(|node| !node.exited) {
        loop {
            match node.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    println!("{} did not stop in {} s: killing it", node.name, STOP_GRACE.as_secs());
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    break;
                }
            }
        }
        node.exited = true;
    }
}
