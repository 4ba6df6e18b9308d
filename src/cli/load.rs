//! `tinychain load`: a load generator an operator points at a network (a local testnet by its
//! `testnet.json`, or any nodes by their RPC URLs) to measure what it commits.
//!
//! What it does, in order:
//!
//! 1. Asks every node for its `status` (all must answer and share one chain), opens the wallet
//!    and unlocks the funding key.
//! 2. Derives `--accounts` sending accounts from the funding key (Blake3 of a domain tag, the
//!    key's secret and the account's index), so the same key finds the same accounts again on
//!    the next run and nothing else needs to be stored. Accounts holding less than the run needs
//!    are topped up from the funding key, and the run starts once every node has committed the
//!    funding.
//! 3. Account `i` sends to account `i + 1` through node `i mod N` only, so each node sees every
//!    sender's nonces in order (no `nonce_gap`). Each node gets `--in-flight` worker threads,
//!    each owning a share of that node's accounts: it signs a batch of transfers
//!    (`validate::sign_transfer`, one thread per worker, so signing runs on every core) and
//!    submits it with one `submit_txs` call, then the next. An account never has more than
//!    `PENDING_PER_ACCOUNT_MAX` transfers submitted and not yet committed (the node queues at
//!    most 256 per sender), and all workers together never more than `--max-pending` (room is
//!    reserved before signing and freed when the block reader sees a transfer committed or the
//!    node refuses it): the back-pressure of `--rate max`. A number paces each worker to its
//!    share of the rate.
//! 4. One thread reads every new block from the first node (`get_block` per height) and its
//!    finalized height (`status`): a transfer's latency to committed is from the moment its
//!    batch was sent to the moment its block was seen, to final likewise with the finalized
//!    height. Committed transfers per second count this run's transfers in blocks whose
//!    timestamp lies in the load window. A reorganisation of the node is followed: what an
//!    abandoned block counted is taken back and its height read again. Another thread polls
//!    each node's mempool size.
//! 5. After `--duration` it stops submitting and waits (at most `DRAIN_MAX`) until every
//!    accepted transfer is final, then prints the summary (or one JSON object with `--json`).
//!
//! Rejections are counted by the node's `data.code`, and only the node's own refusals are: a
//! rejected transfer rewinds its account's next nonce to it, so the account carries on without a
//! gap; a signature is deterministic, so the same nonce is signed into the same transfer again.
//! A call answered busy (-32009: the node did not act on it) is made again after a growing
//! pause (`busy_retries`). A call that fails without an answer (`failed_calls`) may or may not
//! have been acted on: the worker asks the node each affected account's pending nonce
//! (`get_account`); transfers below it were admitted (`accepted_after_failed_call`), the rest are
//! sent again. One the node had after all is answered `duplicate` (or `nonce_used` while
//! `get_tx` finds that very transfer): counted as accepted (`resubmitted_duplicates`), never as
//! rejected (see `submit_loop`).
//!
//! Nodes' CPU: with `--testnet`, the node processes are found in `/proc` by the `--home` they
//! run with, and their CPU time over the load window is read from `/proc/PID/stat` (Linux). With
//! `--rpc` the nodes may be anywhere: their CPU is reported as not local.

use super::passphrase::{passphrase_from_env_or_prompt, PASSPHRASE_ENV_VAR};
use crate::setup;
use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tinychain_core::crypto::{hash_bytes, Keypair};
use tinychain_core::types::{Address, Amount, Hash, Transfer};
use tinychain_core::validate::{sign_transfer, transfer_id};
use tinychain_rpc::{AccountAt, BlockSelector, SubmitResult, TxState};
use tinychain_wallet::client::RpcClient;
use tinychain_wallet::keystore::{Keystore, KeystoreError};
use tinychain_wallet::{self as wallet, WalletError};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("network").required(true).args(["testnet", "rpc"])))]
#[command(after_help = "Examples:\n  \
    tinychain load --testnet testnet/testnet.json --duration 60s --rate max\n  \
    TINYCHAIN_PASSPHRASE=... tinychain load --rpc http://10.0.0.1:7741,http://10.0.0.2:7741 \\\n      \
    --wallet ~/.tinychain/wallet --key bench --rate 2000 --duration 2m --json")]
pub struct Args {
    /// The local testnet to load: its testnet.json (or the directory holding it). Its nodes'
    /// RPC URLs, its development wallet and key ("dev", empty passphrase) are the defaults, and
    /// the nodes' CPU is measured.
    #[arg(long, value_name = "D/testnet.json")]
    pub testnet: Option<PathBuf>,
    /// The nodes to load, by their JSON-RPC URLs, comma-separated. Transfers are spread over all
    /// of them; blocks are read from the first.
    #[arg(long, value_name = "URL,URL,...")]
    pub rpc: Option<String>,
    /// The wallet directory holding the funding key [default: the testnet's wallet with
    /// --testnet, else $TINYCHAIN_WALLET, else ~/.tinychain/wallet]. The passphrase comes from
    /// TINYCHAIN_PASSPHRASE or a prompt.
    #[arg(long, value_name = "DIR")]
    pub wallet: Option<PathBuf>,
    /// The key that funds the sending accounts [default: "dev" with --testnet, else the
    /// wallet's only key or the one called "default"].
    #[arg(long, value_name = "NAME")]
    pub key: Option<String>,
    /// How many accounts send. Each holds at most 128 transfers submitted and not yet
    /// committed (and all of them together at most --max-pending).
    #[arg(long, value_name = "K", default_value_t = ACCOUNTS_DEFAULT)]
    pub accounts: usize,
    /// At most this many of the run's transfers pending (submitted and not yet seen in a block)
    /// over all workers: the back-pressure of --rate max. The default keeps a 4-node testnet on
    /// 2 shared cores answering in time with latency to final of a few seconds; far more only
    /// lengthens the nodes' backlog (and their RPC answers) without committing more.
    #[arg(long, value_name = "N", default_value_t = MAX_PENDING_DEFAULT)]
    pub max_pending: u64,
    /// How long to wait for a node's answer to one submit_txs call. A call that fails without
    /// an answer counts no rejections: the node is asked each of its accounts' pending
    /// nonce, the transfers below it count as accepted, and only the others are sent again. A
    /// node that answers busy (-32009) is called again after a growing pause (busy_retries).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    pub call_timeout: Duration,
    /// Test hook: throw away the node's answer to every Nth submit_txs call, as if it was lost
    /// (and after every second such loss take each account's pending nonce as it was before the
    /// call, as if read before the node acted on it), to exercise the recovery deterministically.
    #[arg(long, value_name = "N", hide = true)]
    pub test_lose_answers_every: Option<u64>,
    /// Transfers per second over all nodes, or "max": as fast as the nodes take them (each
    /// worker submits its next batch as soon as the last is answered, within --max-pending).
    #[arg(long, value_name = "R|max", default_value = "max", value_parser = parse_rate)]
    pub rate: Rate,
    /// How long to submit: 500ms, 30s, 10m, 1h (a bare number is seconds). The summary waits up
    /// to 30 s more for the last transfers to become final.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Transfers per `submit_txs` call (1 to 1000; a node's default 256 KiB request limit
    /// holds about 700).
    #[arg(long, value_name = "N", default_value_t = BATCH_DEFAULT)]
    pub batch: usize,
    /// Batches in flight per node: worker threads per node, each with its own accounts.
    #[arg(long, value_name = "N", default_value_t = IN_FLIGHT_DEFAULT)]
    pub in_flight: usize,
    /// Print one JSON object with the figures instead of the summary text (progress still goes
    /// to stderr when it is a terminal).
    #[arg(long)]
    pub json: bool,
}

/// `--rate`: transfers per second, or as fast as the nodes take them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    Max,
    PerSecond(f64),
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Rate::Max);
    }
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(Rate::PerSecond(rate)),
        _ => Err(format!("{text:?} is neither \"max\" nor a positive number of transfers per second")),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    match tinychain_sim::options::parse_duration_ms(text) {
        Ok(0) => Err("the duration must be above 0".to_string()),
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(error) => Err(error.to_string()),
    }
}

const ACCOUNTS_DEFAULT: usize = 256;
/// `--max-pending`'s default (see its help and README "Loading a network" for the measurement).
const MAX_PENDING_DEFAULT: u64 = 4_000;
const ACCOUNTS_MAX: usize = 100_000;
const BATCH_DEFAULT: usize = 500;
/// `submit_txs` takes at most this many transfers per call.
const BATCH_MAX: usize = 1_000;
const IN_FLIGHT_DEFAULT: usize = 2;
const IN_FLIGHT_MAX: usize = 64;
/// Transfers of one account submitted and not yet committed, at most (the node's per-sender
/// queue holds 256).
const PENDING_PER_ACCOUNT_MAX: u64 = 128;
/// Each transfer moves one base unit.
const TRANSFER_AMOUNT: Amount = 1;
/// What `--rate max` is assumed to reach when sizing the funding (transfers per second).
const FUNDING_RATE_MAX_ASSUMED: f64 = 20_000.0;
/// Funding transfers pending at once from the funding key (the node queues 256 per sender).
const FUNDING_CHUNK: usize = 200;
/// How long the funding may take to be committed on every node.
const FUNDING_WAIT_MAX: Duration = Duration::from_secs(120);
/// The first pause before calling a node that answered busy again; it doubles up to
/// `BUSY_BACKOFF_MAX` and starts over after an answer.
const BUSY_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BUSY_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// After a failed call, how long a worker keeps asking its node for an account's pending nonce.
const RESYNC_WAIT_MAX: Duration = Duration::from_secs(60);
/// Calls that settle what a failed call did (`get_account`, `get_tx`) give up after this.
const RESYNC_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node that just started may take to offer a pending nonce.
const MEMPOOL_SYNC_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long after the load window the summary waits for accepted transfers to become final.
const DRAIN_MAX: Duration = Duration::from_secs(30);
/// With a set rate, each worker calls its node at most this often (so a batch carries what
/// fell due meanwhile, rather than one call per transfer).
const RATE_TICK: Duration = Duration::from_millis(50);
/// Committed transfers per second in the progress line are over this much of the past.
const PROGRESS_RATE_WINDOW: Duration = Duration::from_secs(5);
/// The block reader's poll interval.
const READER_POLL: Duration = Duration::from_millis(100);
/// Each node's mempool size is asked this often.
const MEMPOOL_POLL: Duration = Duration::from_millis(1_000);
/// Short calls (status polls) give up after this.
const POLL_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Without a terminal (and without --json) a progress line is printed this often.
const PROGRESS_LINE_INTERVAL: Duration = Duration::from_secs(5);
/// Linux's USER_HZ: /proc/PID/stat counts CPU time in these ticks per second.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// One node to load.
#[derive(Clone, Debug)]
struct Target {
    name: String,
    url: String,
    /// Its home directory, when it is a local testnet node (to find its process).
    home: Option<PathBuf>,
}

/// Where the funding key is and how to unlock it.
struct Funding {
    wallet_dir: PathBuf,
    key_name: Option<String>,
    /// The testnet's development wallet, whose passphrase is empty.
    is_dev_wallet: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // Warnings from the keystore (a wallet file readable by others) go to stderr.
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(tracing::Level::WARN).try_init();
    ensure!(
        (1..=ACCOUNTS_MAX).contains(&args.accounts),
        "--accounts: {} is out of range: give 1 to {ACCOUNTS_MAX}",
        args.accounts
    );
    ensure!((1..=BATCH_MAX).contains(&args.batch), "--batch: {} is out of range: give 1 to {BATCH_MAX}", args.batch);
    ensure!(
        (1..=IN_FLIGHT_MAX).contains(&args.in_flight),
        "--in-flight: {} is out of range: give 1 to {IN_FLIGHT_MAX}",
        args.in_flight
    );
    ensure!(args.max_pending >= 1, "--max-pending: give at least 1");
    ensure!(args.test_lose_answers_every != Some(0), "--test-lose-answers-every: give at least 1");
    let (targets, funding) = resolve_targets(args)?;
    let report = run_load(args, &targets, &funding)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

/// The nodes and the funding key from `--testnet` or `--rpc`, `--wallet` and `--key`.
fn resolve_targets(args: &Args) -> anyhow::Result<(Vec<Target>, Funding)> {
    if let Some(path) = &args.testnet {
        let dir = if path.is_dir() { path.clone() } else { path.parent().map(Path::to_path_buf).unwrap_or_default() };
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        let is_named_file = path.file_name().is_some_and(|name| name != setup::TESTNET_FILE) && !path.is_dir();
        if is_named_file {
            bail!(
                "--testnet {}: not a testnet file; give the testnet.json `tinychain testnet` wrote (or its directory)",
                path.display()
            );
        }
        let layout = setup::load_testnet(&dir).with_context(|| {
            format!("--testnet {}: not a usable testnet (`tinychain testnet` writes D/testnet.json)", path.display())
        })?;
        let targets = layout
            .nodes
            .iter()
            .map(|node| Target {
                name: node.name.clone(),
                url: format!("http://{}", node.rpc),
                home: Some(node.home.clone()),
            })
            .collect();
        let wallet_dir = args.wallet.clone().unwrap_or_else(|| layout.wallet_dir.clone());
        let is_dev_wallet = args.wallet.is_none() || same_path(&wallet_dir, &layout.wallet_dir);
        let key_name = args.key.clone().or_else(|| is_dev_wallet.then(|| setup::DEV_KEY_NAME.to_string()));
        return Ok((targets, Funding { wallet_dir, key_name, is_dev_wallet }));
    }
    let list = args.rpc.as_deref().unwrap_or_default();
    let urls: Vec<&str> = list.split(',').map(str::trim).filter(|url| !url.is_empty()).collect();
    ensure!(!urls.is_empty(), "--rpc: give at least one node URL, e.g. http://127.0.0.1:7741");
    let targets = urls
        .iter()
        .enumerate()
        .map(|(index, url)| Target { name: format!("rpc-{}", index + 1), url: url.to_string(), home: None })
        .collect();
    let wallet_dir = match &args.wallet {
        Some(dir) => dir.clone(),
        None => super::wallet::wallet_dir(
            std::env::var_os(super::wallet::WALLET_DIR_ENV_VAR)
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .as_deref(),
        )?,
    };
    Ok((targets, Funding { wallet_dir, key_name: args.key.clone(), is_dev_wallet: false }))
}

fn same_path(first: &Path, second: &Path) -> bool {
    match (first.canonicalize(), second.canonicalize()) {
        (Ok(first), Ok(second)) => first == second,
        _ => first == second,
    }
}

/// Opens the wallet and unlocks the funding key: the development wallet with its empty
/// passphrase first, else `TINYCHAIN_PASSPHRASE` or a prompt.
fn unlock_funding_key(funding: &Funding) -> anyhow::Result<(String, Keypair)> {
    let keystore = Keystore::open(&funding.wallet_dir)
        .with_context(|| format!("--wallet {}: cannot open the wallet", funding.wallet_dir.display()))?;
    let entry = wallet::select_key(&keystore, funding.key_name.as_deref()).context("--key")?;
    let from_env = std::env::var_os(PASSPHRASE_ENV_VAR).is_some();
    if funding.is_dev_wallet && !from_env {
        match keystore.key(&entry.name, setup::DEV_WALLET_PASSPHRASE) {
            Ok(key) => return Ok((entry.name, key)),
            Err(KeystoreError::WrongPassphrase { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    let passphrase = passphrase_from_env_or_prompt(&format!("Passphrase of key {:?}: ", entry.name), false)?;
    let key = keystore.key(&entry.name, &passphrase)?;
    Ok((entry.name, key))
}

/// The sending account `index` of a funding key: reproducible from the key alone.
fn derive_account(funding_key: &Keypair, index: usize) -> Keypair {
    let mut bytes = b"tinychain/load/account/v1".to_vec();
    bytes.extend_from_slice(&funding_key.secret_bytes());
    bytes.extend_from_slice(&(index as u64).to_le_bytes());
    let secret = hash_bytes(&bytes);
    bytes.iter_mut().for_each(|byte| *byte = 0);
    Keypair::from_secret_bytes(&secret.0)
}

// ---- Submitting ------------------------------------------------------------------------------

/// One transfer's answer from a node: admitted, or refused with the node's `data.code`.
type SubmitOutcome = Result<Hash, String>;

/// Submits `transfers` to one node in one call and returns one outcome per transfer, in order.
/// This is the one place that knows how: `submit_txs` (each transfer hex-encoded as
/// `submit_tx`'s `tx`), or, for a node that does not know that method, one `submit_tx` per
/// transfer.
fn submit_batch(client: &RpcClient, transfers: &[Transfer]) -> Result<Vec<SubmitOutcome>, WalletError> {
    if SUBMIT_TXS_MISSING.load(Ordering::Relaxed) {
        return submit_one_by_one(client, transfers);
    }
    match submit_txs(client, transfers) {
        Err(WalletError::NodeError { code, .. }) if code == i64::from(tinychain_rpc::code::METHOD_NOT_FOUND) => {
            SUBMIT_TXS_MISSING.store(true, Ordering::Relaxed);
            submit_one_by_one(client, transfers)
        }
        answer => answer,
    }
}

/// Set once a node answered that it has no `submit_txs` (a node from before it): from then on
/// transfers go one `submit_tx` call each.
static SUBMIT_TXS_MISSING: AtomicBool = AtomicBool::new(false);

/// The fallback for nodes without `submit_txs`: one `submit_tx` call per transfer.
fn submit_one_by_one(client: &RpcClient, transfers: &[Transfer]) -> Result<Vec<SubmitOutcome>, WalletError> {
    transfers
        .iter()
        .map(|transfer| match client.submit_tx(transfer) {
            Ok(answer) => Ok(Ok(answer.id)),
            Err(WalletError::Rejected { code, .. }) => Ok(Err(code.unwrap_or_else(|| "rejected".to_string()))),
            Err(error) => Err(error),
        })
        .collect()
}

/// One `submit_txs` call.
fn submit_txs(client: &RpcClient, transfers: &[Transfer]) -> Result<Vec<SubmitOutcome>, WalletError> {
    let answer = client.submit_txs(transfers)?;
    if answer.results.len() != transfers.len() {
        return Err(WalletError::BadAnswer {
            url: client.url().to_string(),
            method: "submit_txs".to_string(),
            detail: format!("{} results for {} transfers", answer.results.len(), transfers.len()),
        });
    }
    Ok(answer
        .results
        .into_iter()
        .map(|result| match result {
            SubmitResult::Accepted { id } => Ok(id),
            SubmitResult::Refused { error } => Err(error.data.code),
        })
        .collect())
}

/// `submit_batch`, waiting out a node that has not synced its mempool yet: used for funding.
fn submit_all_or_fail(client: &RpcClient, transfers: &[Transfer]) -> anyhow::Result<()> {
    let outcomes = submit_batch(client, transfers)?;
    let refused: Vec<String> = outcomes
        .iter()
        .zip(transfers)
        .filter_map(|(outcome, transfer)| {
            outcome.as_ref().err().map(|code| format!("nonce {}: {code}", transfer.nonce))
        })
        .collect();
    ensure!(refused.is_empty(), "{} refused funding transfers: {}", client.url(), refused.join(", "));
    Ok(())
}

// ---- The run ---------------------------------------------------------------------------------

/// What every thread shares during the run.
struct Shared {
    /// Set when the load window ends: workers stop submitting.
    stop_submitting: AtomicBool,
    /// Set when the summary is being made: the reader and poller stop.
    stop_watching: AtomicBool,
    /// Transfers the nodes gave a verdict on (accepted, refused), or that a failed call left
    /// unresolved; a transfer sent again after a failed call or a busy answer counts once.
    submitted: AtomicU64,
    /// Admitted by a node: answered with an id, or found pending or committed after a failed
    /// call or on a second sending (`duplicate`).
    accepted: AtomicU64,
    /// Of `accepted`: answered `duplicate` (or `nonce_used` with the very transfer pending or
    /// committed) when sent again after a failed call: the node had it already.
    resubmitted_duplicates: AtomicU64,
    /// Of `accepted`: transfers of a failed call below their account's pending nonce as the node
    /// told it afterwards.
    accepted_after_failed_call: AtomicU64,
    /// Transfers of a failed call whose fate the node could not be asked within
    /// `RESYNC_WAIT_MAX`; their accounts send no more.
    unresolved: AtomicU64,
    /// Calls that failed as a whole (node unreachable, no answer, HTTP error).
    failed_calls: AtomicU64,
    /// Calls answered busy (-32009) and made again.
    busy_retries: AtomicU64,
    last_failure: Mutex<Option<String>>,
    rejected: Mutex<BTreeMap<String, u64>>,
    /// This run's transfers sent and not yet seen committed, by id: when their batch was sent.
    awaiting_commit: Mutex<HashMap<Hash, Instant>>,
    /// This run's transfers pending: in `awaiting_commit`, or reserved by a worker about to sign
    /// them. At most `max_pending`.
    pending: AtomicU64,
    max_pending: u64,
    /// The most `pending` has been.
    pending_max_seen: AtomicU64,
    /// Per account: the next nonce the chain has committed (as the block reader saw it).
    committed_nonces: Vec<AtomicU64>,
    /// What the block reader found.
    chain: Mutex<ChainView>,
    /// Each node's mempool size at the last poll, and the largest seen.
    mempool_sizes: Mutex<Vec<(Option<usize>, usize)>>,
}

impl Shared {
    /// Nothing counted yet: each account's committed nonce, how many nodes, `--max-pending`.
    fn new(committed_nonces: Vec<u64>, nodes: usize, max_pending: u64) -> Shared {
        Shared {
            stop_submitting: AtomicBool::new(false),
            stop_watching: AtomicBool::new(false),
            submitted: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            resubmitted_duplicates: AtomicU64::new(0),
            accepted_after_failed_call: AtomicU64::new(0),
            unresolved: AtomicU64::new(0),
            failed_calls: AtomicU64::new(0),
            busy_retries: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            rejected: Mutex::new(BTreeMap::new()),
            awaiting_commit: Mutex::new(HashMap::new()),
            pending: AtomicU64::new(0),
            max_pending,
            pending_max_seen: AtomicU64::new(0),
            committed_nonces: committed_nonces.into_iter().map(AtomicU64::new).collect(),
            chain: Mutex::new(ChainView::default()),
            mempool_sizes: Mutex::new(vec![(None, 0); nodes]),
        }
    }

    /// Reserves room for up to `wanted` more pending transfers under `max_pending`; returns how
    /// many it got (release what goes unused).
    fn reserve(&self, wanted: u64) -> u64 {
        let mut granted = 0;
        let reserved = self.pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |pending| {
            granted = wanted.min(self.max_pending.saturating_sub(pending));
            (granted > 0).then_some(pending + granted)
        });
        match reserved {
            Ok(before) => {
                self.pending_max_seen.fetch_max(before + granted, Ordering::Relaxed);
                granted
            }
            Err(_) => 0,
        }
    }

    fn release(&self, count: u64) {
        if count > 0 {
            self.pending.fetch_sub(count, Ordering::SeqCst);
        }
    }

    /// Starts waiting for the commit of transfers already reserved.
    fn await_commit(&self, ids: &[Hash], sent_at: Instant) {
        let mut awaiting = self.awaiting_commit.lock().expect("no thread panics holding it");
        for id in ids {
            if awaiting.insert(*id, sent_at).is_some() {
                // Already awaited (sent again): its first reservation stands for it.
                self.release(1);
            }
        }
    }

    /// Stops waiting for the commit of `id` (refused, or never admitted), freeing its room.
    fn forget(&self, id: &Hash) {
        if self.awaiting_commit.lock().expect("no thread panics holding it").remove(id).is_some() {
            self.release(1);
        }
    }

    fn note_failure(&self, detail: String) {
        self.failed_calls.fetch_add(1, Ordering::Relaxed);
        *self.last_failure.lock().expect("no thread panics holding it") = Some(detail);
    }
}

#[derive(Default)]
struct ChainView {
    tip_height: u64,
    finalized_height: u64,
    /// This run's committed transfers awaiting finality: (height, when sent).
    awaiting_final: Vec<(u64, Instant)>,
    latency_committed_ms: Vec<u64>,
    latency_final_ms: Vec<u64>,
    /// This run's transfers seen committed (any time).
    committed: u64,
    /// This run's transfers in blocks whose timestamp lies in the load window.
    committed_in_window: u64,
    /// Every transfer (anyone's) in blocks whose timestamp lies in the load window.
    all_committed_in_window: u64,
    blocks_in_window: u64,
    last_error: Option<String>,
}

/// A sending account.
struct Account {
    key: Keypair,
    to: Address,
    next_nonce: u64,
    /// A failed call left some of its transfers unresolved: the account sends no more (its next
    /// nonce is unknown).
    stalled: bool,
}

/// The figures of one run.
struct Report {
    nodes: Vec<String>,
    accounts: usize,
    rate: Rate,
    batch: usize,
    in_flight: usize,
    duration_ms: u64,
    max_pending: u64,
    pending_max_seen: u64,
    submitted: u64,
    accepted: u64,
    resubmitted_duplicates: u64,
    accepted_after_failed_call: u64,
    unresolved: u64,
    committed: u64,
    committed_in_window: u64,
    all_committed_in_window: u64,
    blocks_in_window: u64,
    finalized: u64,
    latency_committed_ms: Vec<u64>,
    latency_final_ms: Vec<u64>,
    rejected: BTreeMap<String, u64>,
    failed_calls: u64,
    busy_retries: u64,
    last_failure: Option<String>,
    mempool_max: Vec<usize>,
    cpu: CpuFigures,
    drain_ms: u64,
}

enum CpuFigures {
    NotLocal,
    Local { nodes: Vec<(String, Option<(i32, f64)>)>, load_generator_percent: Option<f64> },
}

fn run_load(args: &Args, targets: &[Target], funding: &Funding) -> anyhow::Result<Report> {
    let clients: Vec<RpcClient> = targets.iter().map(|target| RpcClient::new(&target.url)).collect::<Result<_, _>>()?;
    // Every node answers and all share one chain.
    let mut chain: Option<(String, Hash)> = None;
    for (target, client) in targets.iter().zip(&clients) {
        let status = client.status().with_context(|| format!("node {} ({})", target.name, target.url))?;
        match &chain {
            None => chain = Some((status.chain_id.clone(), status.genesis_hash)),
            Some((chain_id, genesis)) => ensure!(
                *chain_id == status.chain_id && *genesis == status.genesis_hash,
                "node {} ({}) is on chain {:?} (genesis {}), but {} is on {chain_id:?} (genesis {genesis}): \
                 give nodes of one network",
                target.name,
                target.url,
                status.chain_id,
                status.genesis_hash,
                targets[0].name
            ),
        }
    }
    let (chain_id, _) = chain.expect("at least one node");
    let (key_name, funding_key) = unlock_funding_key(funding)?;

    // The fee every node admits, and the sending accounts.
    let mut fee: Amount = 0;
    for (target, client) in targets.iter().zip(&clients) {
        fee = fee.max(client.estimate_fee().with_context(|| format!("node {}", target.name))?.min_fee);
    }
    let mut accounts: Vec<Account> = (0..args.accounts)
        .map(|index| derive_account(&funding_key, index))
        .map(|key| Account { key, to: Address([0; 32]), next_nonce: 0, stalled: false })
        .collect();
    for index in 0..accounts.len() {
        accounts[index].to = accounts[(index + 1) % accounts.len()].key.address();
    }
    let node_of = |index: usize| index % targets.len();

    let progress_to_terminal = std::io::stderr().is_terminal();
    let note = |text: &str| {
        if progress_to_terminal || !args.json {
            eprintln!("{text}");
        }
    };
    note(&format!(
        "loading {} node(s) of chain {chain_id:?} from {} accounts funded by key {key_name:?} ({})",
        targets.len(),
        accounts.len(),
        funding_key.address()
    ));
    fund_accounts(args, &clients, &accounts, &funding_key, &chain_id, fee, &note)?;
    // Each account's next nonce, from the node it sends through.
    for (index, account) in accounts.iter_mut().enumerate() {
        account.next_nonce = pending_nonce(&clients[node_of(index)], &account.key.address())?;
    }

    let shared = Arc::new(Shared::new(
        accounts.iter().map(|account| account.next_nonce).collect(),
        targets.len(),
        args.max_pending,
    ));
    let account_index: Arc<HashMap<Address, usize>> =
        Arc::new(accounts.iter().enumerate().map(|(index, account)| (account.key.address(), index)).collect());

    // Workers: `in_flight` per node, each owning the accounts of its node with its residue.
    let mut groups: Vec<Vec<(usize, Account)>> = (0..targets.len() * args.in_flight).map(|_| Vec::new()).collect();
    for (index, account) in accounts.into_iter().enumerate() {
        let worker = node_of(index) * args.in_flight + (index / targets.len()) % args.in_flight;
        groups[worker].push((index, account));
    }
    let groups: Vec<(usize, Vec<(usize, Account)>)> = groups
        .into_iter()
        .enumerate()
        .filter(|(_, group)| !group.is_empty())
        .map(|(worker, group)| (worker / args.in_flight, group))
        .collect();
    let worker_count = groups.len();

    let node_pids: Option<Vec<Option<i32>>> = targets
        .iter()
        .all(|target| target.home.is_some())
        .then(|| targets.iter().map(|target| target.home.as_deref().and_then(find_node_pid)).collect());
    let cpu_before: Option<Vec<Option<u64>>> =
        node_pids.as_ref().map(|pids| pids.iter().map(|pid| pid.and_then(cpu_ticks)).collect());
    let own_cpu_before = cpu_ticks(std::process::id() as i32);

    let started = Instant::now();
    let started_unix_ms = unix_ms();
    let window_ms = args.duration.as_millis() as u64;
    let window = (started_unix_ms, started_unix_ms + window_ms);

    let reader = {
        let shared = shared.clone();
        let account_index = account_index.clone();
        let url = targets[0].url.clone();
        std::thread::spawn(move || read_blocks(&url, &shared, &account_index, window))
    };
    let poller = {
        let shared = shared.clone();
        let urls: Vec<String> = targets.iter().map(|target| target.url.clone()).collect();
        std::thread::spawn(move || poll_mempools(&urls, &shared))
    };
    let mut workers = Vec::new();
    for (node, group) in groups {
        let shared = shared.clone();
        let url = targets[node].url.clone();
        let chain_id = chain_id.clone();
        let options = WorkerOptions {
            batch: args.batch,
            rate_per_second: match args.rate {
                Rate::Max => None,
                Rate::PerSecond(rate) => Some(rate / worker_count as f64),
            },
            call_timeout: args.call_timeout,
            lose_answers_every: args.test_lose_answers_every,
        };
        workers.push(std::thread::spawn(move || submit_loop(&url, group, &chain_id, fee, options, started, &shared)));
    }

    // Progress until the window ends.
    let bar = progress_to_terminal.then(|| {
        let bar = indicatif::ProgressBar::new(window_ms / 1_000);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} s [{bar:20}] {wide_msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    });
    let mut last_line = Instant::now();
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    while started.elapsed() < args.duration {
        std::thread::sleep(Duration::from_millis(250).min(args.duration.saturating_sub(started.elapsed())));
        let line = progress_line(&shared, &mut samples);
        match &bar {
            Some(bar) => {
                bar.set_position(started.elapsed().as_secs());
                bar.set_message(line);
            }
            None if !args.json && last_line.elapsed() >= PROGRESS_LINE_INTERVAL => {
                eprintln!("{:>4} s  {line}", started.elapsed().as_secs());
                last_line = Instant::now();
            }
            None => {}
        }
    }
    shared.stop_submitting.store(true, Ordering::SeqCst);
    let window_elapsed = started.elapsed();
    let cpu_after: Option<Vec<Option<u64>>> =
        node_pids.as_ref().map(|pids| pids.iter().map(|pid| pid.and_then(cpu_ticks)).collect());
    let own_cpu_after = cpu_ticks(std::process::id() as i32);
    for worker in workers {
        worker.join().expect("a worker thread panicked");
    }

    // Drain: wait until every accepted transfer is final (or DRAIN_MAX).
    let drain_started = Instant::now();
    if let Some(bar) = &bar {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} draining {wide_msg}").expect("a valid template"),
        );
    }
    while drain_started.elapsed() < DRAIN_MAX {
        let is_settled = {
            let awaiting_commit = shared.awaiting_commit.lock().expect("no thread panics holding it").len();
            let chain = shared.chain.lock().expect("no thread panics holding it");
            awaiting_commit == 0 && chain.awaiting_final.is_empty()
        };
        if is_settled {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        let line = progress_line(&shared, &mut samples);
        if let Some(bar) = &bar {
            bar.set_message(line);
        }
    }
    let drain_ms = drain_started.elapsed().as_millis() as u64;
    shared.stop_watching.store(true, Ordering::SeqCst);
    reader.join().expect("the block reader panicked");
    poller.join().expect("the mempool poller panicked");
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }

    let window_s = window_elapsed.as_secs_f64();
    let cpu = match (node_pids, cpu_before, cpu_after) {
        (Some(pids), Some(before), Some(after)) => CpuFigures::Local {
            nodes: targets
                .iter()
                .zip(pids)
                .zip(before.iter().zip(&after))
                .map(|((target, pid), ticks)| {
                    let figure = match (pid, ticks) {
                        (Some(pid), (Some(before), Some(after))) => {
                            Some((pid, percent_of_one_core(after.saturating_sub(*before), window_s)))
                        }
                        _ => None,
                    };
                    (target.name.clone(), figure)
                })
                .collect(),
            load_generator_percent: own_cpu_before
                .zip(own_cpu_after)
                .map(|(before, after)| percent_of_one_core(after.saturating_sub(before), window_s)),
        },
        _ => CpuFigures::NotLocal,
    };
    let chain = shared.chain.lock().expect("no thread panics holding it");
    let mut latency_committed_ms = chain.latency_committed_ms.clone();
    let mut latency_final_ms = chain.latency_final_ms.clone();
    latency_committed_ms.sort_unstable();
    latency_final_ms.sort_unstable();
    let report = Report {
        nodes: targets.iter().map(|target| format!("{} {}", target.name, target.url)).collect(),
        accounts: args.accounts,
        rate: args.rate,
        batch: args.batch,
        in_flight: args.in_flight,
        duration_ms: window_elapsed.as_millis() as u64,
        max_pending: args.max_pending,
        pending_max_seen: shared.pending_max_seen.load(Ordering::SeqCst),
        submitted: shared.submitted.load(Ordering::SeqCst),
        accepted: shared.accepted.load(Ordering::SeqCst),
        resubmitted_duplicates: shared.resubmitted_duplicates.load(Ordering::SeqCst),
        accepted_after_failed_call: shared.accepted_after_failed_call.load(Ordering::SeqCst),
        unresolved: shared.unresolved.load(Ordering::SeqCst),
        committed: chain.committed,
        committed_in_window: chain.committed_in_window,
        all_committed_in_window: chain.all_committed_in_window,
        blocks_in_window: chain.blocks_in_window,
        finalized: latency_final_ms.len() as u64,
        latency_committed_ms,
        latency_final_ms,
        rejected: shared.rejected.lock().expect("no thread panics holding it").clone(),
        failed_calls: shared.failed_calls.load(Ordering::SeqCst),
        busy_retries: shared.busy_retries.load(Ordering::SeqCst),
        last_failure: shared.last_failure.lock().expect("no thread panics holding it").clone(),
        mempool_max: shared
            .mempool_sizes
            .lock()
            .expect("no thread panics holding it")
            .iter()
            .map(|(_, max)| *max)
            .collect(),
        cpu,
        drain_ms,
    };
    Ok(report)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or(0)
}

/// The pending nonce of `address` on one node, waiting while the node has not synced its
/// mempool with its peers (it just started).
fn pending_nonce(client: &RpcClient, address: &Address) -> anyhow::Result<u64> {
    let deadline = Instant::now() + MEMPOOL_SYNC_WAIT_MAX;
    loop {
        let account = client.get_account(address, AccountAt::Tip)?;
        if let Some(nonce) = account.pending_nonce {
            return Ok(nonce);
        }
        ensure!(
            Instant::now() < deadline,
            "{} has not synced its mempool with its peers within {} s: it offers no pending nonce",
            client.url(),
            MEMPOOL_SYNC_WAIT_MAX.as_secs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Tops up every account that holds less than half of what the run may spend, from the funding
/// key through the first node, and waits until every node has committed the funding.
fn fund_accounts(
    args: &Args,
    clients: &[RpcClient],
    accounts: &[Account],
    funding_key: &Keypair,
    chain_id: &str,
    fee: Amount,
    note: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let rate = match args.rate {
        Rate::Max => FUNDING_RATE_MAX_ASSUMED,
        Rate::PerSecond(rate) => rate,
    };
    let per_account_transfers = (rate * args.duration.as_secs_f64() / accounts.len() as f64).ceil() as u64;
    // Twice the plan and some, so a slower or faster run never runs dry.
    let target_balance = (TRANSFER_AMOUNT + fee)
        .checked_mul(2 * per_account_transfers + 1_000)
        .context("the funding per account overflows: lower --rate or --duration")?;
    let mut needy: Vec<(Address, Amount)> = Vec::new();
    for (index, account) in accounts.iter().enumerate() {
        let client = &clients[index % clients.len()];
        let balance = client.get_account(&account.key.address(), AccountAt::Tip)?.balance;
        if balance < target_balance / 2 {
            needy.push((account.key.address(), target_balance - balance));
        }
    }
    if needy.is_empty() {
        note("every account is funded already");
        return Ok(());
    }
    let funder = funding_key.address();
    let total: Amount = needy.iter().map(|(_, amount)| amount + fee).sum();
    let balance = clients[0].get_account(&funder, AccountAt::Tip)?.balance;
    ensure!(
        balance >= total,
        "the funding key {funder} holds {}; funding {} accounts needs {}: give fewer --accounts, a lower --rate \
         or a shorter --duration, or fund the key",
        wallet::amount::format_tc(balance),
        needy.len(),
        wallet::amount::format_tc(total)
    );
    note(&format!("funding {} account(s) with {} each", needy.len(), wallet::amount::format_tc(target_balance)));
    for chunk in needy.chunks(FUNDING_CHUNK) {
        let first_nonce = pending_nonce(&clients[0], &funder)?;
        let transfers: Vec<Transfer> = chunk
            .iter()
            .enumerate()
            .map(|(offset, (to, amount))| {
                sign_transfer(funding_key, chain_id, *to, *amount, fee, first_nonce + offset as u64)
            })
            .collect();
        submit_all_or_fail(&clients[0], &transfers).context("funding the accounts")?;
        let wanted_nonce = first_nonce + chunk.len() as u64;
        let deadline = Instant::now() + FUNDING_WAIT_MAX;
        for client in clients {
            loop {
                let nonce = client.get_account(&funder, AccountAt::Tip)?.nonce;
                if nonce >= wanted_nonce {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "the funding transfers were not committed on {} within {} s (the funding key's nonce there is \
                     {nonce}, waiting for {wanted_nonce}): is the network producing blocks?",
                    client.url(),
                    FUNDING_WAIT_MAX.as_secs()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    note("funding committed on every node");
    Ok(())
}

/// What every worker is told.
#[derive(Clone, Copy, Debug)]
struct WorkerOptions {
    batch: usize,
    /// This worker's share of `--rate`, or `None` for `--rate max`.
    rate_per_second: Option<f64>,
    call_timeout: Duration,
    lose_answers_every: Option<u64>,
}

/// How one `submit_txs` call ended, busy answers already retried.
enum CallEnd {
    /// The node answered for each transfer.
    Answered(Vec<SubmitOutcome>),
    /// No connection was made: the node cannot have admitted anything.
    NotDelivered(String),
    /// The call may have reached the node, but no answer came back (timeout, reset, an internal
    /// error such as `timed_out`): some of its transfers may have been admitted.
    Lost(String),
    /// The node answered busy until the load window ended: it admitted nothing.
    GaveUpBusy,
}

/// The node's answer busy (-32009): it did not act on the call.
fn is_busy(error: &WalletError) -> bool {
    matches!(error, WalletError::NodeError { code, .. } if *code == i64::from(tinychain_rpc::code::BUSY))
}

/// One `submit_batch`, made again after a growing pause for as long as the node answers busy
/// (each retry counted in `busy_retries`) and the window lasts. Sending the same transfers again
/// is safe: a busy answer means the node did not act on them.
fn call_until_not_busy(client: &RpcClient, transfers: &[Transfer], shared: &Shared) -> CallEnd {
    let mut pause = BUSY_BACKOFF_FIRST;
    loop {
        match submit_batch(client, transfers) {
            Ok(outcomes) => return CallEnd::Answered(outcomes),
            Err(error) if is_busy(&error) => {
                if shared.stop_submitting.load(Ordering::SeqCst) {
                    return CallEnd::GaveUpBusy;
                }
                shared.busy_retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(pause);
                pause = (pause * 2).min(BUSY_BACKOFF_MAX);
            }
            Err(error @ WalletError::Unreachable { .. }) => return CallEnd::NotDelivered(error.to_string()),
            Err(error) => return CallEnd::Lost(error.to_string()),
        }
    }
}

/// After a failed call: the pending nonce of `address` on the worker's node, asked until it
/// answers (busy answers and failures retried after a pause) or `RESYNC_WAIT_MAX` passes.
fn resync_nonce(client: &RpcClient, address: &Address, shared: &Shared) -> Option<u64> {
    let deadline = Instant::now() + RESYNC_WAIT_MAX;
    let mut pause = BUSY_BACKOFF_FIRST;
    while Instant::now() < deadline && !shared.stop_watching.load(Ordering::SeqCst) {
        match client.get_account(address, AccountAt::Tip) {
            Ok(account) if account.pending_nonce.is_some() => return account.pending_nonce,
            Ok(_) => {}
            Err(error) if is_busy(&error) => {
                shared.busy_retries.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => *shared.last_failure.lock().expect("no thread panics holding it") = Some(error.to_string()),
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(BUSY_BACKOFF_MAX);
    }
    None
}

/// Whether the node holds this very transfer, pending or in a block: then a `nonce_used` for it
/// means the node had it already (an earlier call whose answer was lost), not a refusal.
/// `Some(true)` when it is in a block.
fn held_by_node(client: &RpcClient, id: &Hash) -> Option<bool> {
    match client.get_tx(id).ok()?.status {
        TxState::Pending => Some(false),
        TxState::Committed | TxState::Final => Some(true),
        TxState::Dropped | TxState::Unknown => None,
    }
}

/// One worker: signs batches for its accounts and submits them to its node until the window
/// ends.
///
/// Every transfer it sends ends one of these ways, and only a node's own refusal is counted as
/// rejected: accepted (an id, or `duplicate`: the node had it already); refused (counted under
/// the node's `data.code`, its account carrying on from the refused nonce); answered busy (sent
/// again after a pause, the same transfer); not delivered (no connection: taken back and signed
/// again later); or part of a call whose answer was lost. Then the worker asks the node each
/// account's pending nonce: transfers below it were admitted (accepted), the others were not
/// and are taken back, the account carrying on from the pending nonce. If the lost call is
/// acted on only after that question, sending those again meets them: `duplicate` (or
/// `nonce_used` with the very transfer in a block), which counts as accepted.
fn submit_loop(
    url: &str,
    mut accounts: Vec<(usize, Account)>,
    chain_id: &str,
    fee: Amount,
    options: WorkerOptions,
    started: Instant,
    shared: &Shared,
) {
    let clients = RpcClient::with_timeout(url, options.call_timeout)
        .and_then(|client| Ok((client, RpcClient::with_timeout(url, RESYNC_CALL_TIMEOUT)?)));
    let (client, settle_client) = match clients {
        Ok(clients) => clients,
        Err(error) => {
            *shared.last_failure.lock().expect("no thread panics holding it") = Some(error.to_string());
            return;
        }
    };
    let mut sent: u64 = 0;
    let mut cursor = 0;
    let mut calls: u64 = 0;
    let mut answers_lost: u64 = 0;
    let mut last_call = started.checked_sub(RATE_TICK).unwrap_or(started);
    while !shared.stop_submitting.load(Ordering::SeqCst) {
        let count = match options.rate_per_second {
            None => options.batch,
            Some(rate) => {
                // One call per tick at most, carrying every transfer that fell due since the last.
                let since_call = last_call.elapsed();
                if since_call < RATE_TICK {
                    std::thread::sleep(RATE_TICK - since_call);
                    continue;
                }
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                if due <= sent {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                ((due - sent) as usize).min(options.batch)
            }
        };
        // Room under --max-pending over all workers.
        let granted = shared.reserve(count as u64) as usize;
        // Round-robin over the accounts with room for another pending transfer.
        let mut transfers: Vec<Transfer> = Vec::with_capacity(granted);
        let mut senders: Vec<usize> = Vec::with_capacity(granted);
        let mut without_room = 0;
        while transfers.len() < granted && without_room < accounts.len() {
            let position = cursor;
            cursor = (cursor + 1) % accounts.len();
            let (index, account) = &mut accounts[position];
            let committed = shared.committed_nonces[*index].load(Ordering::Relaxed);
            if account.stalled || account.next_nonce.saturating_sub(committed) >= PENDING_PER_ACCOUNT_MAX {
                without_room += 1;
                continue;
            }
            without_room = 0;
            transfers.push(sign_transfer(&account.key, chain_id, account.to, TRANSFER_AMOUNT, fee, account.next_nonce));
            senders.push(position);
            account.next_nonce += 1;
        }
        shared.release((granted - transfers.len()) as u64);
        if transfers.is_empty() {
            // The nodes are saturated: every account (or --max-pending) waits for commits.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let ids: Vec<Hash> = transfers.iter().map(transfer_id).collect();
        let sent_at = Instant::now();
        last_call = sent_at;
        shared.await_commit(&ids, sent_at);
        sent += transfers.len() as u64;
        calls += 1;
        let mut end = call_until_not_busy(&client, &transfers, shared);
        let lose_this = options.lose_answers_every.is_some_and(|every| calls.is_multiple_of(every));
        if lose_this && matches!(end, CallEnd::Answered(_)) {
            end = CallEnd::Lost("the answer was thrown away (--test-lose-answers-every)".to_string());
        }
        // Takes back transfers the node did not admit: they will be signed again (the same bytes:
        // a signature is deterministic) from the lowest nonce taken back.
        let take_back = |accounts: &mut Vec<(usize, Account)>, sent: &mut u64, position: usize, at: usize| {
            shared.forget(&ids[at]);
            let account = &mut accounts[position].1;
            account.next_nonce = account.next_nonce.min(transfers[at].nonce);
            *sent = sent.saturating_sub(1);
        };
        match end {
            CallEnd::Answered(outcomes) => {
                settle_answers(&settle_client, &mut accounts, &transfers, &ids, &senders, outcomes, shared)
            }
            CallEnd::GaveUpBusy => {
                for (at, position) in senders.iter().enumerate() {
                    take_back(&mut accounts, &mut sent, *position, at);
                }
            }
            CallEnd::NotDelivered(detail) => {
                shared.note_failure(detail);
                for (at, position) in senders.iter().enumerate() {
                    take_back(&mut accounts, &mut sent, *position, at);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            CallEnd::Lost(detail) => {
                shared.note_failure(detail);
                answers_lost += 1;
                // The test hook's every second loss: as if the nonces were read before the node
                // acted on the call, so the transfers are sent again and meet themselves.
                let read_too_early = lose_this && answers_lost.is_multiple_of(2);
                let mut positions: Vec<usize> = senders.clone();
                positions.sort_unstable();
                positions.dedup();
                for position in positions {
                    let batch_of_account: Vec<usize> =
                        (0..transfers.len()).filter(|at| senders[*at] == position).collect();
                    let first_nonce = batch_of_account.iter().map(|at| transfers[*at].nonce).min();
                    let pending_nonce = if read_too_early {
                        first_nonce
                    } else {
                        resync_nonce(&settle_client, &accounts[position].1.key.address(), shared)
                    };
                    let Some(pending_nonce) = pending_nonce else {
                        // Unknown: they stay awaited (a block may hold them), the account stops.
                        shared.unresolved.fetch_add(batch_of_account.len() as u64, Ordering::Relaxed);
                        shared.submitted.fetch_add(batch_of_account.len() as u64, Ordering::Relaxed);
                        accounts[position].1.stalled = true;
                        continue;
                    };
                    for at in batch_of_account {
                        if transfers[at].nonce < pending_nonce {
                            shared.accepted.fetch_add(1, Ordering::Relaxed);
                            shared.accepted_after_failed_call.fetch_add(1, Ordering::Relaxed);
                            shared.submitted.fetch_add(1, Ordering::Relaxed);
                        } else {
                            take_back(&mut accounts, &mut sent, position, at);
                        }
                    }
                    // Below the batch too, should the node have let go of earlier ones.
                    let account = &mut accounts[position].1;
                    account.next_nonce = account.next_nonce.min(pending_nonce);
                }
            }
        }
    }
}

/// Counts a node's answers to one call's transfers: accepted, `duplicate` (accepted: the node
/// has it), `nonce_used` for a transfer the node holds (accepted likewise), else rejected by the
/// node's reason, the account carrying on from the refused nonce (past it for `nonce_used`).
fn settle_answers(
    client: &RpcClient,
    accounts: &mut [(usize, Account)],
    transfers: &[Transfer],
    ids: &[Hash],
    senders: &[usize],
    outcomes: Vec<SubmitOutcome>,
    shared: &Shared,
) {
    let mut refused = 0;
    for (at, outcome) in outcomes.into_iter().enumerate() {
        shared.submitted.fetch_add(1, Ordering::Relaxed);
        let code = match outcome {
            Ok(_) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(code) => code,
        };
        let held = if code == tinychain_rpc::data_code::DUPLICATE {
            Some(false)
        } else if code == tinychain_rpc::data_code::NONCE_USED {
            held_by_node(client, &ids[at])
        } else {
            None
        };
        if let Some(in_block) = held {
            shared.accepted.fetch_add(1, Ordering::Relaxed);
            shared.resubmitted_duplicates.fetch_add(1, Ordering::Relaxed);
            if in_block {
                // The block reader may have passed its block while it was not awaited.
                let was_awaited =
                    shared.awaiting_commit.lock().expect("no thread panics holding it").contains_key(&ids[at]);
                if was_awaited {
                    shared.forget(&ids[at]);
                    shared.chain.lock().expect("no thread panics holding it").committed += 1;
                }
            }
            continue;
        }
        refused += 1;
        shared.forget(&ids[at]);
        *shared.rejected.lock().expect("no thread panics holding it").entry(code.clone()).or_default() += 1;
        // Carry on from the refused nonce (a nonce the chain already used is skipped).
        let account = &mut accounts[senders[at]].1;
        if code != tinychain_rpc::data_code::NONCE_USED && transfers[at].nonce < account.next_nonce {
            account.next_nonce = transfers[at].nonce;
        }
    }
    if refused == transfers.len() {
        // Nothing got in: do not spin against a node that refuses everything.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the block reader counted from one block, kept until the block is final so that a
/// reorganisation can take it back.
struct ReadBlock {
    hash: Hash,
    /// This run's transfers in it: id, when its batch was sent, latency to committed counted.
    ours: Vec<(Hash, Instant, u64)>,
    is_in_window: bool,
    /// Every transfer in it (anyone's).
    transfers: u64,
}

/// The block reader: every new block of the first node, its transfers matched to this run's,
/// and the node's finalized height. It follows the node's reorganisations: when a block's parent
/// is not the block it read at that height, it takes back what the abandoned block counted
/// (its transfers are awaited again) and reads that height again, so a transfer committed on the
/// new branch is not missed and one the branch left out is not counted.
fn read_blocks(url: &str, shared: &Shared, account_index: &HashMap<Address, usize>, window_unix_ms: (u64, u64)) {
    let client = match RpcClient::with_timeout(url, Duration::from_secs(15)) {
        Ok(client) => client,
        Err(error) => {
            shared.chain.lock().expect("no thread panics holding it").last_error = Some(error.to_string());
            return;
        }
    };
    // Blocks read and not yet final, by height.
    let mut read: BTreeMap<u64, ReadBlock> = BTreeMap::new();
    let mut read_height = match client.status() {
        Ok(status) => {
            let tip = ReadBlock { hash: status.tip.hash, ours: Vec::new(), is_in_window: false, transfers: 0 };
            read.insert(status.tip.height, tip);
            status.tip.height
        }
        Err(_) => 0,
    };
    shared.chain.lock().expect("no thread panics holding it").tip_height = read_height;
    while !shared.stop_watching.load(Ordering::SeqCst) {
        std::thread::sleep(READER_POLL);
        let status = match client.status() {
            Ok(status) => status,
            Err(error) => {
                shared.chain.lock().expect("no thread panics holding it").last_error = Some(error.to_string());
                continue;
            }
        };
        while read_height < status.tip.height {
            let height = read_height + 1;
            let block = match client.get_block(BlockSelector::Height(height)) {
                Ok(block) => block,
                Err(error) => {
                    shared.chain.lock().expect("no thread panics holding it").last_error = Some(error.to_string());
                    break;
                }
            };
            let parent_read = read.get(&read_height).map(|parent| parent.hash);
            if parent_read.is_some_and(|hash| hash != block.header.header.prev_hash) {
                // The node switched branches at or below `read_height`: undo that block, then
                // compare the one below it on the next pass.
                if let Some(abandoned) = read.remove(&read_height) {
                    take_back_block(shared, read_height, abandoned);
                }
                read_height = read_height.saturating_sub(1);
                continue;
            }
            let seen_at = Instant::now();
            let timestamp_ms = block.header.header.timestamp_ms;
            let is_in_window = (window_unix_ms.0..=window_unix_ms.1).contains(&timestamp_ms);
            let mut ours: Vec<(Hash, Instant, u64)> = Vec::new();
            {
                let mut awaiting = shared.awaiting_commit.lock().expect("no thread panics holding it");
                for transfer in &block.transfers {
                    if let Some(index) = account_index.get(&transfer.transfer.from) {
                        shared.committed_nonces[*index].fetch_max(transfer.transfer.nonce + 1, Ordering::Relaxed);
                    }
                    if let Some(sent_at) = awaiting.remove(&transfer.id) {
                        ours.push((transfer.id, sent_at, seen_at.duration_since(sent_at).as_millis() as u64));
                    }
                }
            }
            shared.release(ours.len() as u64);
            let mut chain = shared.chain.lock().expect("no thread panics holding it");
            chain.committed += ours.len() as u64;
            if is_in_window {
                chain.committed_in_window += ours.len() as u64;
                chain.all_committed_in_window += block.transfers.len() as u64;
                chain.blocks_in_window += 1;
            }
            for (_, sent_at, latency_ms) in &ours {
                chain.latency_committed_ms.push(*latency_ms);
                chain.awaiting_final.push((height, *sent_at));
            }
            chain.tip_height = height;
            drop(chain);
            let counted =
                ReadBlock { hash: block.header.hash, ours, is_in_window, transfers: block.transfers.len() as u64 };
            read.insert(height, counted);
            read_height = height;
        }
        let now = Instant::now();
        let mut chain = shared.chain.lock().expect("no thread panics holding it");
        let finalized = status.finalized.height.min(read_height);
        if finalized > chain.finalized_height {
            chain.finalized_height = finalized;
            let (now_final, still): (Vec<_>, Vec<_>) =
                chain.awaiting_final.drain(..).partition(|(height, _)| *height <= finalized);
            chain.awaiting_final = still;
            for (_, sent_at) in now_final {
                chain.latency_final_ms.push(now.duration_since(sent_at).as_millis() as u64);
            }
            // A final block is never undone: keep only the latest final one, as the parent of
            // the next.
            read = read.split_off(&finalized);
        }
    }
}

/// Takes back what the reader counted from a block the node abandoned in a reorganisation: its
/// transfers of this run are awaited again (the new branch or the mempool holds them).
fn take_back_block(shared: &Shared, height: u64, block: ReadBlock) {
    {
        let mut awaiting = shared.awaiting_commit.lock().expect("no thread panics holding it");
        for (id, sent_at, _) in &block.ours {
            if awaiting.insert(*id, *sent_at).is_none() {
                shared.pending.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let count = block.ours.len() as u64;
    let mut chain = shared.chain.lock().expect("no thread panics holding it");
    chain.committed = chain.committed.saturating_sub(count);
    if block.is_in_window {
        chain.committed_in_window = chain.committed_in_window.saturating_sub(count);
        chain.all_committed_in_window = chain.all_committed_in_window.saturating_sub(block.transfers);
        chain.blocks_in_window = chain.blocks_in_window.saturating_sub(1);
    }
    for (_, _, latency_ms) in &block.ours {
        if let Some(position) = chain.latency_committed_ms.iter().rposition(|counted| counted == latency_ms) {
            chain.latency_committed_ms.remove(position);
        }
    }
    chain.awaiting_final.retain(|(counted_at, _)| *counted_at != height);
}

/// Each node's mempool size, once a second.
fn poll_mempools(urls: &[String], shared: &Shared) {
    let clients: Vec<Option<RpcClient>> =
        urls.iter().map(|url| RpcClient::with_timeout(url, POLL_CALL_TIMEOUT).ok()).collect();
    while !shared.stop_watching.load(Ordering::SeqCst) {
        for (index, client) in clients.iter().enumerate() {
            let size = client.as_ref().and_then(|client| client.status().ok()).map(|status| status.mempool_size);
            let mut sizes = shared.mempool_sizes.lock().expect("no thread panics holding it");
            sizes[index].0 = size;
            sizes[index].1 = sizes[index].1.max(size.unwrap_or(0));
        }
        let deadline = Instant::now() + MEMPOOL_POLL;
        while Instant::now() < deadline && !shared.stop_watching.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One line of live progress: submitted, accepted, committed per second over the last 5 s,
/// the latency to committed of the latest transfers, each node's mempool size.
fn progress_line(shared: &Shared, samples: &mut VecDeque<(Instant, u64)>) -> String {
    let submitted = shared.submitted.load(Ordering::Relaxed);
    let accepted = shared.accepted.load(Ordering::Relaxed);
    let rejected: u64 = shared.rejected.lock().expect("no thread panics holding it").values().sum();
    let pending = shared.pending.load(Ordering::Relaxed);
    let busy_retries = shared.busy_retries.load(Ordering::Relaxed);
    let failed_calls = shared.failed_calls.load(Ordering::Relaxed);
    let (committed, tip, finalized, recent_p50) = {
        let chain = shared.chain.lock().expect("no thread panics holding it");
        let recent = &chain.latency_committed_ms[chain.latency_committed_ms.len().saturating_sub(1_000)..];
        let mut recent = recent.to_vec();
        recent.sort_unstable();
        (chain.committed, chain.tip_height, chain.finalized_height, percentile(&recent, 50))
    };
    let now = Instant::now();
    samples.push_back((now, committed));
    while samples.len() > 2 && samples.front().is_some_and(|(at, _)| now.duration_since(*at) > PROGRESS_RATE_WINDOW) {
        samples.pop_front();
    }
    let per_second = samples.front().and_then(|(at, then)| {
        let elapsed_s = now.duration_since(*at).as_secs_f64();
        (elapsed_s >= 0.5).then(|| committed.saturating_sub(*then) as f64 / elapsed_s)
    });
    let mempools: Vec<String> = shared
        .mempool_sizes
        .lock()
        .expect("no thread panics holding it")
        .iter()
        .map(|(size, _)| size.map_or("-".to_string(), |size| size.to_string()))
        .collect();
    format!(
        "submitted {submitted}, accepted {accepted}, rejected {rejected}, committed {committed}{}, pending {pending}, \
         busy {busy_retries}, failed calls {failed_calls}, p50 to committed {}, tip {tip} final {finalized}, mempools [{}]",
        per_second.map_or(String::new(), |rate| format!(" ({rate:.0}/s)")),
        recent_p50.map_or("-".to_string(), |ms| format!("{ms} ms")),
        mempools.join(" ")
    )
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], percent: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent as usize * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

// ---- Local node processes --------------------------------------------------------------------

/// The pid of the `tinychain node --home HOME` process running from `home`, found in /proc
/// (Linux); `None` if there is none or /proc cannot tell.
fn find_node_pid(home: &Path) -> Option<i32> {
    let home = home.canonicalize().ok()?;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|byte| *byte == 0).collect();
        if !args.iter().any(|arg| *arg == b"node") {
            continue;
        }
        let Some(position) = args.iter().position(|arg| *arg == b"--home") else { continue };
        let Some(given) = args.get(position + 1).and_then(|arg| std::str::from_utf8(arg).ok()) else { continue };
        let given = Path::new(given);
        let resolved = if given.is_absolute() {
            given.to_path_buf()
        } else {
            match std::fs::read_link(entry.path().join("cwd")) {
                Ok(cwd) => cwd.join(given),
                Err(_) => continue,
            }
        };
        if resolved.canonicalize().ok().as_ref() == Some(&home) {
            return Some(pid);
        }
    }
    None
}

/// A process's CPU time so far (user + system), in clock ticks, from /proc/PID/stat.
fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of the whole line are the 12th and 13th after the name.
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

fn percent_of_one_core(ticks: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    ticks as f64 / CLOCK_TICKS_PER_SECOND / seconds * 100.0
}

// ---- The summary -----------------------------------------------------------------------------

impl Report {
    fn seconds(&self) -> f64 {
        (self.duration_ms as f64 / 1_000.0).max(0.001)
    }

    fn offered_tps(&self) -> f64 {
        self.submitted as f64 / self.seconds()
    }

    fn accepted_tps(&self) -> f64 {
        self.accepted as f64 / self.seconds()
    }

    fn committed_tps(&self) -> f64 {
        self.committed_in_window as f64 / self.seconds()
    }

    fn rate_text(&self) -> String {
        match self.rate {
            Rate::Max => "max".to_string(),
            Rate::PerSecond(rate) => format!("{rate}"),
        }
    }

    fn to_json(&self) -> Value {
        let percentiles = |sorted: &[u64]| {
            json!({
                "p50": percentile(sorted, 50),
                "p90": percentile(sorted, 90),
                "p99": percentile(sorted, 99),
                "count": sorted.len(),
            })
        };
        let cpu = match &self.cpu {
            CpuFigures::NotLocal => json!({ "local": false }),
            CpuFigures::Local { nodes, load_generator_percent } => json!({
                "local": true,
                "nodes": nodes.iter().map(|(name, figure)| json!({
                    "name": name,
                    "pid": figure.map(|(pid, _)| pid),
                    "cpu_percent_of_one_core": figure.map(|(_, percent)| round1(percent)),
                })).collect::<Vec<_>>(),
                "load_generator_cpu_percent_of_one_core": load_generator_percent.map(round1),
            }),
        };
        json!({
            "nodes": self.nodes,
            "accounts": self.accounts,
            "rate": match self.rate { Rate::Max => json!("max"), Rate::PerSecond(rate) => json!(rate) },
            "batch": self.batch,
            "in_flight": self.in_flight,
            "max_pending": self.max_pending,
            "pending_max_seen": self.pending_max_seen,
            "duration_ms": self.duration_ms,
            "offered_tps": round1(self.offered_tps()),
            "accepted_tps": round1(self.accepted_tps()),
            "committed_tps": round1(self.committed_tps()),
            "submitted": self.submitted,
            "accepted": self.accepted,
            "resubmitted_duplicates": self.resubmitted_duplicates,
            "accepted_after_failed_call": self.accepted_after_failed_call,
            "unresolved": self.unresolved,
            "committed_in_window": self.committed_in_window,
            "committed": self.committed,
            "final": self.finalized,
            "not_committed": self.accepted.saturating_sub(self.committed),
            "all_transfers_committed_in_window": self.all_committed_in_window,
            "blocks_in_window": self.blocks_in_window,
            "latency_committed_ms": percentiles(&self.latency_committed_ms),
            "latency_final_ms": percentiles(&self.latency_final_ms),
            "rejected": self.rejected,
            "failed_calls": self.failed_calls,
            "busy_retries": self.busy_retries,
            "last_failure": self.last_failure,
            "mempool_max": self.mempool_max,
            "cpu": cpu,
            "drain_ms": self.drain_ms,
            "submit_method": if SUBMIT_TXS_MISSING.load(Ordering::Relaxed) { "submit_tx" } else { "submit_txs" },
        })
    }

    fn to_text(&self) -> String {
        let ms = |value: Option<u64>| value.map_or("-".to_string(), |ms| format!("{:.2} s", ms as f64 / 1_000.0));
        let latency = |sorted: &[u64]| {
            format!(
                "p50 {}  p90 {}  p99 {}  ({} transfers)",
                ms(percentile(sorted, 50)),
                ms(percentile(sorted, 90)),
                ms(percentile(sorted, 99)),
                sorted.len()
            )
        };
        let mut text = String::new();
        text.push_str(&format!(
            "load: {} accounts over {} node(s), rate {}, batches of {}, {} in flight per node, at most {} pending \
             (most seen {}), {:.1} s\n",
            self.accounts,
            self.nodes.len(),
            self.rate_text(),
            self.batch,
            self.in_flight,
            self.max_pending,
            self.pending_max_seen,
            self.seconds()
        ));
        text.push_str(&format!(
            "offered     {:>9.1} transfers/s  ({} submitted, {} accepted: {:.1}/s)\n",
            self.offered_tps(),
            self.submitted,
            self.accepted,
            self.accepted_tps()
        ));
        text.push_str(&format!(
            "committed   {:>9.1} transfers/s  ({} of this run's in {} blocks timestamped in the window; {} transfers \
             in them all told)\n",
            self.committed_tps(),
            self.committed_in_window,
            self.blocks_in_window,
            self.all_committed_in_window
        ));
        text.push_str(&format!("to committed  {}\n", latency(&self.latency_committed_ms)));
        text.push_str(&format!("to final      {}\n", latency(&self.latency_final_ms)));
        let not_committed = self.accepted.saturating_sub(self.committed);
        if not_committed > 0 {
            text.push_str(&format!(
                "not committed {not_committed} accepted transfers were not seen in a block within {} s after the window\n",
                DRAIN_MAX.as_secs()
            ));
        }
        if self.rejected.is_empty() {
            text.push_str("rejected      none\n");
        } else {
            let reasons: Vec<String> =
                self.rejected.iter().map(|(reason, count)| format!("{reason} {count}")).collect();
            text.push_str(&format!("rejected      {}\n", reasons.join(", ")));
        }
        if SUBMIT_TXS_MISSING.load(Ordering::Relaxed) {
            text.push_str("submitted     one submit_tx call per transfer: a node has no submit_txs\n");
        }
        if self.failed_calls > 0 {
            text.push_str(&format!(
                "failed calls  {} (last: {}); of their transfers {} were found admitted, {} unresolved\n",
                self.failed_calls,
                self.last_failure.as_deref().unwrap_or("-"),
                self.accepted_after_failed_call,
                self.unresolved
            ));
        }
        if self.resubmitted_duplicates > 0 {
            text.push_str(&format!(
                "duplicates    {} sent again after a failed call were already admitted (counted as accepted)\n",
                self.resubmitted_duplicates
            ));
        }
        if self.busy_retries > 0 {
            text.push_str(&format!(
                "busy          the nodes answered busy {} times (calls made again)\n",
                self.busy_retries
            ));
        }
        text.push_str(&format!(
            "mempools      largest seen {}\n",
            self.mempool_max.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
        ));
        match &self.cpu {
            CpuFigures::NotLocal => text.push_str("nodes' CPU    not local\n"),
            CpuFigures::Local { nodes, load_generator_percent } => {
                let figures: Vec<String> = nodes
                    .iter()
                    .map(|(name, figure)| match figure {
                        Some((_, percent)) => format!("{name} {percent:.0}%"),
                        None => format!("{name} (process not found)"),
                    })
                    .collect();
                text.push_str(&format!("nodes' CPU    {} (of one core)\n", figures.join(", ")));
                if let Some(percent) = load_generator_percent {
                    text.push_str(&format!("load's CPU    {percent:.0}% of one core\n"));
                }
            }
        }
        text
    }
}

fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), Some(50));
        assert_eq!(percentile(&values, 90), Some(90));
        assert_eq!(percentile(&values, 99), Some(99));
        assert_eq!(percentile(&[7], 99), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn rates_and_durations_parse() {
        assert_eq!(parse_rate("max"), Ok(Rate::Max));
        assert_eq!(parse_rate("250"), Ok(Rate::PerSecond(250.0)));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn pending_room_is_reserved_under_the_cap_and_freed_once() {
        let shared = Shared::new(vec![0], 1, 10);
        assert_eq!(shared.reserve(6), 6);
        assert_eq!(shared.reserve(6), 4, "only what is left under the cap");
        assert_eq!(shared.reserve(1), 0);
        // Two of the ten go unsigned; the other eight are sent, one of them twice.
        shared.release(2);
        let ids: Vec<Hash> = (0..8u8).map(|byte| Hash([byte; 32])).collect();
        shared.await_commit(&ids, Instant::now());
        assert_eq!(shared.reserve(1), 1);
        shared.await_commit(&ids[..1], Instant::now());
        assert_eq!(shared.pending.load(Ordering::SeqCst), 8, "a transfer sent again holds one place");
        shared.forget(&ids[0]);
        shared.forget(&ids[0]);
        assert_eq!(shared.pending.load(Ordering::SeqCst), 7, "forgetting twice frees once");
        assert_eq!(shared.pending_max_seen.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn a_block_abandoned_in_a_reorganisation_is_taken_back() {
        let shared = Shared::new(vec![0], 1, 10);
        let sent_at = Instant::now();
        {
            let mut chain = shared.chain.lock().unwrap();
            chain.committed = 3;
            chain.committed_in_window = 3;
            chain.all_committed_in_window = 5;
            chain.blocks_in_window = 2;
            chain.latency_committed_ms = vec![100, 250, 300];
            chain.awaiting_final = vec![(7, sent_at), (8, sent_at), (8, sent_at)];
        }
        let ours = vec![(Hash([1; 32]), sent_at, 250), (Hash([2; 32]), sent_at, 300)];
        take_back_block(&shared, 8, ReadBlock { hash: Hash([9; 32]), ours, is_in_window: true, transfers: 4 });
        let chain = shared.chain.lock().unwrap();
        assert_eq!((chain.committed, chain.committed_in_window), (1, 1));
        assert_eq!((chain.all_committed_in_window, chain.blocks_in_window), (1, 1));
        assert_eq!(chain.latency_committed_ms, vec![100]);
        assert_eq!(chain.awaiting_final.len(), 1);
        let awaiting = shared.awaiting_commit.lock().unwrap();
        assert!(awaiting.contains_key(&Hash([1; 32])) && awaiting.contains_key(&Hash([2; 32])));
        assert_eq!(shared.pending.load(Ordering::SeqCst), 2, "awaited again, they hold places again");
    }

    #[test]
    fn accounts_derive_reproducibly_and_apart() {
        let key = Keypair::from_secret_bytes(&[3; 32]);
        assert_eq!(derive_account(&key, 0).address(), derive_account(&key, 0).address());
        assert_ne!(derive_account(&key, 0).address(), derive_account(&key, 1).address());
        assert_ne!(derive_account(&key, 0).address(), key.address());
    }
}
