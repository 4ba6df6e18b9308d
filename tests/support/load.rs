//! Load from many senders over JSON-RPC, and the accounting of every transfer a node
//! acknowledged (issue 11: "an acknowledged transfer is never silently lost"). Shared by
//! `tests/acknowledged_transfers.rs` (a CI-sized run) and `benches/soak.rs` (the operator's
//! kill -9 soak at full size), so the property is written once.
//!
//! The load behaves like independent wallets running `tinychain wallet send`: a sender asks the
//! node it is about to submit to for its `pending_nonce`, waits and asks again while that node
//! answers `null` (it has not synced its mempool with its peers yet), signs a transfer with that
//! nonce and submits it to the same node. Senders move from node to node round by round, so a
//! sender's consecutive transfers are acknowledged by different nodes, and a node that was just
//! restarted is asked right after it answers again: the trigger of the issue.
//!
//! Each worker thread owns a group of senders. A round asks one node for the nonces of the whole
//! group in one JSON-RPC batch and submits the group's transfers in a second batch: two HTTP
//! requests per group rather than two per transfer, and as many threads signing as there are
//! workers. Workers pace their rounds to a target rate and report how far they fell behind.
//!
//! The accounting reads the canonical chain (every block with its transfers, from one node,
//! after checking that every node holds the same block hashes) and gives each acknowledged
//! transfer one fate: committed exactly once; dropped, as answered by `get_tx` on the node that
//! acknowledged it, for a documented reason that the chain bears out; or one of the failures
//! (committed more than once, `unknown`, a drop the chain contradicts, still pending).

use super::Testnet;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tinychain_core::codec;
use tinychain_core::crypto::Keypair;
use tinychain_core::types::{Address, Hash};
use tinychain_core::validate::{sign_transfer, transfer_id};

/// One whole JSON-RPC request of the load or of the accounting may take this long; the node
/// itself answers within 5 s or errors, so a missing answer means the request was lost.
pub const LOAD_RPC_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read: a `get_block` of a full block (10,000 transfers) is about 5 MB of JSON.
pub const ANSWER_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The node answers at most this many calls in one batch (`rpc::BATCH_REQUESTS_MAX`).
pub const BATCH_CALLS_MAX: usize = 50;
/// The reasons `get_tx` may give for a dropped transfer (`DropReason::kind`).
pub const DOCUMENTED_DROP_REASONS: [&str; 7] =
    ["nonce_taken", "nonce_used", "replaced", "unaffordable", "evicted", "refused_after_restart", "not_readmitted"];

// ---- Keys and funding -------------------------------------------------------------------------

/// `count` sender keys derived from `label`: the same label gives the same senders.
pub fn sender_keys(label: &str, count: usize) -> Vec<Keypair> {
    (0..count as u64).map(|index| tinychain_core::testkit::seeded_key(label, index)).collect()
}

/// The development wallet's key that `tinychain testnet init` funded in genesis.
pub fn development_key(net: &Testnet) -> Keypair {
    let dir = net.path().join("wallet");
    let keystore = tinychain_wallet::keystore::Keystore::open(&dir).expect("the testnet has a development wallet");
    keystore
        .key(tinychain::setup::DEV_KEY_NAME, tinychain::setup::DEV_WALLET_PASSPHRASE)
        .expect("the development key opens with its empty passphrase")
}

/// The lowest fee every node accepts (`estimate_fee`'s `min_fee`), at least 1.
pub fn minimum_fee(net: &Testnet) -> u64 {
    let estimate = net.rpc_ok(0, "estimate_fee", json!({}));
    let min_fee: u64 = estimate["min_fee"]
        .as_str()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("estimate_fee's min_fee is an amount string: {estimate}"));
    min_fee.max(1)
}

pub fn chain_id(net: &Testnet) -> String {
    net.status(0).expect("node 0 answers status")["chain_id"].as_str().expect("status has a chain id").to_string()
}

/// Sends `amount` from `funder` to each recipient through node 0, at most 200 transfers at a
/// time (a sender may queue 256), and waits until every node's tip holds them.
pub fn fund_accounts(net: &Testnet, funder: &Keypair, recipients: &[Address], amount: u64, fee: u64) {
    let chain_id = chain_id(net);
    let funder_address = funder.address();
    for chunk in recipients.chunks(200) {
        let first_nonce = net.wait_for(Duration::from_secs(60), "the funder's pending nonce", |net| {
            net.rpc_ok(0, "get_account", json!({ "address": funder_address.to_string() }))["pending_nonce"].as_u64()
        });
        for (offset, recipient) in chunk.iter().enumerate() {
            let transfer = sign_transfer(funder, &chain_id, *recipient, amount, fee, first_nonce + offset as u64);
            net.rpc_ok(0, "submit_tx", json!({ "tx": hex::encode(codec::encode(&transfer)) }));
        }
        let funded_nonce = first_nonce + chunk.len() as u64;
        net.wait_for(Duration::from_secs(120), "the funding transfers committed on every node", |net| {
            (0..net.nodes.len())
                .all(|index| {
                    net.rpc(index, "get_account", json!({ "address": funder_address.to_string() }))
                        .and_then(Result::ok)
                        .and_then(|account| account["nonce"].as_u64())
                        .is_some_and(|nonce| nonce >= funded_nonce)
                })
                .then_some(())
        });
    }
}

/// The node that produces next, by `status.next_producer` of the first node that answers.
pub fn next_producer(net: &Testnet) -> Option<usize> {
    (0..net.nodes.len()).find_map(|index| {
        let status = net.status(index)?;
        let id = status["next_producer"]["node_id"].as_str()?.to_string();
        net.nodes.iter().position(|node| node.id == id)
    })
}

/// The highest tip any node reports.
pub fn highest_tip(net: &Testnet) -> u64 {
    (0..net.nodes.len()).filter_map(|index| net.tip(index)).map(|(height, _)| height).max().unwrap_or(0)
}

// ---- JSON-RPC batches -------------------------------------------------------------------------

/// Why a request got no JSON-RPC answer.
#[derive(Debug)]
pub enum CallFailure {
    /// The connection was refused (the node is down) or the server turned the request away
    /// before reading it (HTTP 503): the calls certainly did not happen.
    NotDelivered(String),
    /// The request may have reached the node, but no answer came back.
    NoAnswer(String),
}

pub fn load_agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(LOAD_RPC_TIMEOUT))
            .http_status_as_error(false)
            .max_idle_connections_per_host(1)
            .build(),
    )
}

/// Calls `calls` in one JSON-RPC batch; each answer is `Ok(result)` or `Err(error object)`, in
/// the order of `calls` (the server answers a batch in any order; they are matched by id).
pub fn batch(
    agent: &ureq::Agent,
    url: &str,
    calls: &[(&str, Value)],
) -> Result<Vec<Result<Value, Value>>, CallFailure> {
    assert!(!calls.is_empty(), "a batch holds at least one call");
    assert!(calls.len() <= BATCH_CALLS_MAX, "the node answers at most {BATCH_CALLS_MAX} calls in a batch");
    let request: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(id, (method, params))| json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }))
        .collect();
    let mut response = match agent.post(url).send_json(&request) {
        Ok(response) => response,
        Err(ureq::Error::ConnectionFailed) => return Err(CallFailure::NotDelivered("connection failed".into())),
        Err(ureq::Error::Io(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(CallFailure::NotDelivered(error.to_string()))
        }
        Err(error) => return Err(CallFailure::NoAnswer(error.to_string())),
    };
    let status = response.status().as_u16();
    if status == 503 {
        return Err(CallFailure::NotDelivered("HTTP 503".into()));
    }
    let body: Value = response
        .body_mut()
        .with_config()
        .limit(ANSWER_BYTES_MAX)
        .read_json()
        .map_err(|error| CallFailure::NoAnswer(format!("HTTP {status}: {error}")))?;
    let Some(answers) = body.as_array() else {
        return Err(CallFailure::NoAnswer(format!("HTTP {status}: not a batch answer: {body}")));
    };
    let mut by_id: Vec<Option<Result<Value, Value>>> = vec![None; calls.len()];
    for answer in answers {
        let Some(id) = answer["id"].as_u64().map(|id| id as usize).filter(|id| *id < calls.len()) else {
            return Err(CallFailure::NoAnswer(format!("an answer with an unknown id: {answer}")));
        };
        by_id[id] = Some(match answer.get("error") {
            Some(error) => Err(error.clone()),
            None => Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
        });
    }
    by_id
        .into_iter()
        .enumerate()
        .map(|(id, answer)| answer.ok_or_else(|| CallFailure::NoAnswer(format!("no answer to call {id}"))))
        .collect()
}

/// One call, through `batch`.
pub fn call(agent: &ureq::Agent, url: &str, method: &str, params: Value) -> Result<Result<Value, Value>, CallFailure> {
    let mut answers = batch(agent, url, &[(method, params)])?;
    Ok(answers.remove(0))
}

// ---- The load ---------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct LoadSettings {
    /// Transfers signed and submitted per second, over all workers.
    pub transfers_per_second: f64,
    /// Threads; the senders are split between them in groups of (almost) equal size.
    pub workers: usize,
    /// Every transfer pays `fee` and moves to the sink `amount_base` plus the number of
    /// transfers its sender signed before (base units), so no two transfers are alike: a
    /// transfer signed again for a nonce already pending elsewhere gets a new id rather than
    /// the pending one's (Ed25519 signatures are deterministic).
    pub amount_base: u64,
    pub fee: u64,
    /// How long a sender waits before asking again when its node answers `pending_nonce: null`.
    pub null_nonce_retry: Duration,
}

/// A transfer a node acknowledged (`submit_tx` answered its id).
#[derive(Clone, Debug)]
pub struct Acknowledged {
    pub node: usize,
    pub id: Hash,
    pub from: Address,
    pub nonce: u64,
    /// When the answer came, since the load started.
    pub acknowledged_after: Duration,
}

/// What one worker saw.
#[derive(Default)]
struct WorkerTally {
    acknowledged: Vec<Acknowledged>,
    /// Refused by the node (-32002), by the shape of the reason (numbers and ids as `#`).
    rejected: BTreeMap<String, u64>,
    /// Submitted, but neither acknowledged nor refused (no answer, or another error code),
    /// by the shape of what happened.
    uncertain: BTreeMap<String, u64>,
    /// Requests that found the node down.
    not_delivered_requests: u64,
    null_nonce_answers: u64,
    null_nonce_wait: Duration,
    signed: u64,
    signing_time: Duration,
    /// Times the worker fell more than a second behind its pace and dropped the rounds it
    /// owed rather than sending them in a burst.
    backlogs_dropped: u64,
}

/// A running load; `stop` ends it and returns what it did.
pub struct Load {
    stop: Arc<AtomicBool>,
    acknowledged_count: Arc<AtomicU64>,
    workers: Vec<JoinHandle<WorkerTally>>,
    settings: LoadSettings,
    senders: usize,
    pub started: Instant,
    /// The same instant as Unix ms, to relate block timestamps to the load's clock.
    pub started_unix_ms: u64,
}

/// What a load did, from start to stop.
pub struct LoadReport {
    pub settings: LoadSettings,
    /// When the load started, in Unix ms (to place block timestamps on the load's clock).
    pub started_unix_ms: u64,
    pub senders: usize,
    pub elapsed: Duration,
    pub acknowledged: Vec<Acknowledged>,
    pub rejected: BTreeMap<String, u64>,
    pub uncertain: BTreeMap<String, u64>,
    pub not_delivered_requests: u64,
    pub null_nonce_answers: u64,
    pub null_nonce_wait: Duration,
    pub signed: u64,
    pub signing_time: Duration,
    pub backlogs_dropped: u64,
}

impl LoadReport {
    pub fn uncertain_count(&self) -> u64 {
        self.uncertain.values().sum()
    }

    pub fn acknowledged_per_second(&self) -> f64 {
        self.acknowledged.len() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn print(&self) {
        let rejected: u64 = self.rejected.values().sum();
        println!(
            "load: {} senders on {} workers for {:.1} s, target {:.0} transfers/s: signed {} ({:.1}/s), \
             acknowledged {} ({:.1}/s), rejected {rejected}, uncertain {}",
            self.senders,
            self.settings.workers,
            self.elapsed.as_secs_f64(),
            self.settings.transfers_per_second,
            self.signed,
            self.signed as f64 / self.elapsed.as_secs_f64(),
            self.acknowledged.len(),
            self.acknowledged_per_second(),
            self.uncertain_count()
        );
        println!(
            "load: signing took {:.2} s of CPU in total ({:.1} us per transfer); {} requests found a node down; \
             {} pending_nonce answers were null ({:.1} s of waiting over all workers); \
             {} times a worker fell over 1 s behind and dropped its backlog",
            self.signing_time.as_secs_f64(),
            self.signing_time.as_secs_f64() * 1e6 / self.signed.max(1) as f64,
            self.not_delivered_requests,
            self.null_nonce_answers,
            self.null_nonce_wait.as_secs_f64(),
            self.backlogs_dropped
        );
        for (reason, count) in &self.rejected {
            println!("load: rejected {count:>7} x {reason}");
        }
        for (why, count) in &self.uncertain {
            println!("load: uncertain {count:>6} x {why}");
        }
    }
}

impl Load {
    /// Starts `settings.workers` threads sending from `senders` to `sink` over every node.
    pub fn start(net: &Testnet, senders: &[Keypair], sink: Address, settings: LoadSettings) -> Load {
        assert!(settings.workers >= 1, "a load has at least one worker");
        assert!(senders.len() >= settings.workers, "every worker needs at least one sender");
        assert!(settings.transfers_per_second > 0.0, "the target rate must be positive");
        let urls: Arc<Vec<String>> = Arc::new(net.nodes.iter().map(|node| node.rpc.clone()).collect());
        let chain_id = chain_id(net);
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged_count = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let started_unix_ms = unix_ms_now();
        let per_worker_rate = settings.transfers_per_second / settings.workers as f64;
        let workers = (0..settings.workers)
            .map(|worker| {
                // Senders worker, worker + workers, ...: groups differ by at most one.
                let group: Vec<Keypair> = senders.iter().skip(worker).step_by(settings.workers).cloned().collect();
                let round_interval = Duration::from_secs_f64(group.len() as f64 / per_worker_rate);
                let context = WorkerContext {
                    worker,
                    group,
                    urls: urls.clone(),
                    chain_id: chain_id.clone(),
                    sink,
                    settings: settings.clone(),
                    round_interval,
                    stop: stop.clone(),
                    acknowledged_count: acknowledged_count.clone(),
                    started,
                };
                std::thread::Builder::new()
                    .name(format!("load-{worker}"))
                    .spawn(move || run_worker(context))
                    .expect("a load thread starts")
            })
            .collect();
        Load { stop, acknowledged_count, workers, settings, senders: senders.len(), started, started_unix_ms }
    }

    /// Acknowledged so far, over all workers.
    pub fn acknowledged_count(&self) -> u64 {
        self.acknowledged_count.load(Ordering::Relaxed)
    }

    /// Stops every worker (each finishes its round) and gathers what they did.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = LoadReport {
            settings: self.settings,
            started_unix_ms: self.started_unix_ms,
            senders: self.senders,
            elapsed: Duration::ZERO,
            acknowledged: Vec::new(),
            rejected: BTreeMap::new(),
            uncertain: BTreeMap::new(),
            not_delivered_requests: 0,
            null_nonce_answers: 0,
            null_nonce_wait: Duration::ZERO,
            signed: 0,
            signing_time: Duration::ZERO,
            backlogs_dropped: 0,
        };
        for worker in self.workers {
            let tally = worker.join().expect("a load thread does not panic");
            report.acknowledged.extend(tally.acknowledged);
            for (reason, count) in tally.rejected {
                *report.rejected.entry(reason).or_default() += count;
            }
            for (why, count) in tally.uncertain {
                *report.uncertain.entry(why).or_default() += count;
            }
            report.not_delivered_requests += tally.not_delivered_requests;
            report.null_nonce_answers += tally.null_nonce_answers;
            report.null_nonce_wait += tally.null_nonce_wait;
            report.signed += tally.signed;
            report.signing_time += tally.signing_time;
            report.backlogs_dropped += tally.backlogs_dropped;
        }
        report.elapsed = self.started.elapsed();
        report.acknowledged.sort_by_key(|acknowledged| acknowledged.acknowledged_after);
        report
    }
}

struct WorkerContext {
    worker: usize,
    group: Vec<Keypair>,
    urls: Arc<Vec<String>>,
    chain_id: String,
    sink: Address,
    settings: LoadSettings,
    round_interval: Duration,
    stop: Arc<AtomicBool>,
    acknowledged_count: Arc<AtomicU64>,
    started: Instant,
}

fn run_worker(context: WorkerContext) -> WorkerTally {
    let agent = load_agent();
    let mut tally = WorkerTally::default();
    let nodes = context.urls.len();
    let addresses: Vec<String> = context.group.iter().map(|key| key.address().to_string()).collect();
    // Workers start spread over one round interval so their requests do not come in bursts.
    let stagger = context.round_interval.mul_f64(context.worker as f64 / context.settings.workers as f64);
    let mut next_round_at = Instant::now() + stagger;
    let mut round = context.worker;
    let mut signed_before = vec![0u64; context.group.len()];
    while !context.stop.load(Ordering::Relaxed) {
        sleep_until(next_round_at, &context.stop);
        next_round_at += context.round_interval;
        if Instant::now() > next_round_at + Duration::from_secs(1) {
            tally.backlogs_dropped += 1;
            next_round_at = Instant::now();
        }
        // The next node that answers, starting with this round's.
        let mut attempts = 0;
        let nonces = loop {
            if attempts == nodes || context.stop.load(Ordering::Relaxed) {
                break None;
            }
            let node = round % nodes;
            match ask_pending_nonces(&context, &agent, node, &addresses, &mut tally) {
                NonceAnswer::Nonces(nonces) => break Some((node, nonces)),
                NonceAnswer::NodeDown => {
                    round += 1;
                    attempts += 1;
                }
                NonceAnswer::Failed => break None,
            }
        };
        round += 1;
        let Some((node, nonces)) = nonces else {
            if attempts == nodes {
                // Every node refused: the whole network is down for a moment.
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        };
        submit_round(&context, &agent, node, &nonces, &mut signed_before, &mut tally);
    }
    tally
}

enum NonceAnswer {
    Nonces(Vec<u64>),
    NodeDown,
    Failed,
}

/// Asks `node` for the pending nonce of every sender of the group, again and again while it
/// answers `null` (not yet synced), as `tinychain wallet send` does.
fn ask_pending_nonces(
    context: &WorkerContext,
    agent: &ureq::Agent,
    node: usize,
    addresses: &[String],
    tally: &mut WorkerTally,
) -> NonceAnswer {
    let calls: Vec<(&str, Value)> =
        addresses.iter().map(|address| ("get_account", json!({ "address": address }))).collect();
    loop {
        let answers = match batch(agent, &context.urls[node], &calls) {
            Ok(answers) => answers,
            Err(CallFailure::NotDelivered(_)) => {
                tally.not_delivered_requests += 1;
                return NonceAnswer::NodeDown;
            }
            Err(CallFailure::NoAnswer(_)) => return NonceAnswer::Failed,
        };
        let mut nonces = Vec::with_capacity(answers.len());
        let mut is_any_null = false;
        for answer in &answers {
            match answer {
                Ok(account) => match &account["pending_nonce"] {
                    Value::Null => is_any_null = true,
                    nonce => nonces.push(nonce.as_u64().expect("pending_nonce is a number or null")),
                },
                Err(_) => return NonceAnswer::Failed,
            }
        }
        if !is_any_null {
            return NonceAnswer::Nonces(nonces);
        }
        tally.null_nonce_answers += 1;
        if context.stop.load(Ordering::Relaxed) {
            return NonceAnswer::Failed;
        }
        let waited = Instant::now();
        std::thread::sleep(context.settings.null_nonce_retry);
        tally.null_nonce_wait += waited.elapsed();
    }
}

/// Signs one transfer per sender of the group with the nonces `node` gave and submits them there.
/// `signed_before` counts each sender's signed transfers (it makes every amount different).
fn submit_round(
    context: &WorkerContext,
    agent: &ureq::Agent,
    node: usize,
    nonces: &[u64],
    signed_before: &mut [u64],
    tally: &mut WorkerTally,
) {
    let signing = Instant::now();
    let transfers: Vec<_> = context
        .group
        .iter()
        .zip(nonces)
        .zip(signed_before.iter_mut())
        .map(|((key, nonce), signed_before)| {
            let amount = context.settings.amount_base + *signed_before;
            *signed_before += 1;
            sign_transfer(key, &context.chain_id, context.sink, amount, context.settings.fee, *nonce)
        })
        .collect();
    tally.signing_time += signing.elapsed();
    tally.signed += transfers.len() as u64;
    let calls: Vec<(&str, Value)> =
        transfers.iter().map(|transfer| ("submit_tx", json!({ "tx": hex::encode(codec::encode(transfer)) }))).collect();
    let answers = match batch(agent, &context.urls[node], &calls) {
        Ok(answers) => answers,
        Err(CallFailure::NotDelivered(_)) => {
            tally.not_delivered_requests += 1;
            return;
        }
        Err(CallFailure::NoAnswer(why)) => {
            *tally.uncertain.entry(reason_shape(&why)).or_default() += transfers.len() as u64;
            return;
        }
    };
    let acknowledged_after = context.started.elapsed();
    for (transfer, answer) in transfers.iter().zip(answers) {
        let id = transfer_id(transfer);
        match answer {
            Ok(result) => {
                let answered = result["id"].as_str().and_then(|text| Hash::from_hex(text).ok());
                assert_eq!(answered, Some(id), "submit_tx answers the id of the transfer signed here: {result}");
                tally.acknowledged.push(Acknowledged {
                    node,
                    id,
                    from: transfer.from,
                    nonce: transfer.nonce,
                    acknowledged_after,
                });
                context.acknowledged_count.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) if error["code"].as_i64() == Some(-32002) => {
                let reason = reason_shape(error["message"].as_str().unwrap_or("(no message)"));
                *tally.rejected.entry(reason).or_default() += 1;
            }
            Err(error) => {
                let why = format!("error {}: {}", error["code"], error["message"].as_str().unwrap_or("(no message)"));
                *tally.uncertain.entry(reason_shape(&why)).or_default() += 1;
            }
        }
    }
}

/// A rejection message with every word holding a digit (numbers, ids) replaced by `#`, so
/// rejections group by kind.
fn reason_shape(message: &str) -> String {
    let words: Vec<&str> = message
        .split_whitespace()
        .map(|word| if word.chars().any(|c| c.is_ascii_digit()) { "#" } else { word })
        .collect();
    words.join(" ")
}

fn sleep_until(deadline: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
}

pub fn unix_ms_now() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
    u64::try_from(since_epoch.as_millis()).expect("Unix ms fit in u64")
}

// ---- Events, for the timeline of a failure ----------------------------------------------------

/// What the test or soak did to the network and when (since the load started).
#[derive(Default)]
pub struct Timeline {
    pub events: Vec<(Duration, String)>,
}

impl Timeline {
    pub fn record(&mut self, load: &Load, event: String) {
        let at = load.started.elapsed();
        println!("{:>8.3} s  {event}", at.as_secs_f64());
        self.events.push((at, event));
    }

    /// The events from `before` ahead of `at` to `after` past it.
    pub fn around(&self, at: Duration, before: Duration, after: Duration) -> Vec<String> {
        self.events
            .iter()
            .filter(|(when, _)| *when + before >= at && *when <= at + after)
            .map(|(when, event)| format!("{:>8.3} s  {event}", when.as_secs_f64()))
            .collect()
    }
}

// ---- A restarted node's mempool ---------------------------------------------------------------

/// How a restarted node refilled its mempool from its peers.
#[derive(Debug)]
pub struct MempoolRefill {
    pub node: usize,
    pub restarted_at: Instant,
    /// From the restart to its first `status` answer.
    pub answering_after: Option<Duration>,
    /// From the restart to the first `status` with `"mempool_synced": true`.
    pub synced_after: Option<Duration>,
    /// Whether `status` carried `mempool_synced` at all.
    pub reports_mempool_synced: bool,
    /// Each peer's `mempool_size` when it was restarted: what there was to fetch.
    pub peer_mempool_sizes_at_restart: Vec<(usize, Option<u64>)>,
    /// Its `mempool_size` in the first synced answer, and each peer's right after (a block
    /// committed in between empties both).
    pub mempool_size_then: Option<u64>,
    pub peer_mempool_sizes_then: Vec<(usize, Option<u64>)>,
    /// Its tip in that answer, and the highest of its peers' right after: a restarted producer
    /// may commit its first block (emptying its mempool) before the peers have it.
    pub tip_then: Option<u64>,
    pub peer_tip_then: Option<u64>,
    /// How many transfers it admitted from its peers' pools, from its log line "mempool synced
    /// ... admitted=N".
    pub admitted_by_log: Option<u64>,
}

impl std::fmt::Display for MempoolRefill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let seconds =
            |duration: Option<Duration>| duration.map_or("never".to_string(), |d| format!("{:.2} s", d.as_secs_f64()));
        let size = |size: Option<u64>| size.map_or("?".to_string(), |size| size.to_string());
        let sizes = |sizes: &[(usize, Option<u64>)]| -> String {
            sizes
                .iter()
                .map(|(node, size_then)| format!("node {node}: {}", size(*size_then)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "node {} answering after {}, mempool synced after {}{} (admitted {} from its peers' pools); its peers' \
             mempools at the restart {}; when synced its mempool held {} at tip {}, its peers' right after {} at tip {}",
            self.node,
            seconds(self.answering_after),
            seconds(self.synced_after),
            if self.reports_mempool_synced { "" } else { " (status has no mempool_synced)" },
            size(self.admitted_by_log),
            sizes(&self.peer_mempool_sizes_at_restart),
            size(self.mempool_size_then),
            size(self.tip_then),
            sizes(&self.peer_mempool_sizes_then),
            size(self.peer_tip_then)
        )
    }
}

/// Each node's `mempool_size` but `node`'s (`None` when it does not answer).
pub fn peer_mempool_sizes(net: &Testnet, node: usize) -> Vec<(usize, Option<u64>)> {
    (0..net.nodes.len())
        .filter(|peer| *peer != node)
        .map(|peer| (peer, net.status(peer).and_then(|status| status["mempool_size"].as_u64())))
        .collect()
}

/// Restarts node `node` (SIGKILLed before) and polls its `status` every 25 ms until it says
/// `"mempool_synced": true` or `timeout` passes.
pub fn restart_and_watch_mempool_refill(net: &mut Testnet, node: usize, timeout: Duration) -> MempoolRefill {
    let peer_mempool_sizes_at_restart = peer_mempool_sizes(net, node);
    net.start(node);
    let restarted_at = Instant::now();
    let mut refill = MempoolRefill {
        node,
        restarted_at,
        answering_after: None,
        synced_after: None,
        reports_mempool_synced: false,
        peer_mempool_sizes_at_restart,
        mempool_size_then: None,
        peer_mempool_sizes_then: Vec::new(),
        tip_then: None,
        peer_tip_then: None,
        admitted_by_log: None,
    };
    while restarted_at.elapsed() < timeout {
        if let Some(status) = net.status(node) {
            refill.answering_after.get_or_insert(restarted_at.elapsed());
            refill.reports_mempool_synced = status.get("mempool_synced").is_some();
            if !refill.reports_mempool_synced {
                // A node from before issue 11: there is nothing to wait for.
                break;
            }
            if status["mempool_synced"] == Value::Bool(true) {
                refill.synced_after = Some(restarted_at.elapsed());
                refill.mempool_size_then = status["mempool_size"].as_u64();
                refill.tip_then = status["tip"]["height"].as_u64();
                refill.peer_mempool_sizes_then = peer_mempool_sizes(net, node);
                refill.peer_tip_then = (0..net.nodes.len())
                    .filter(|peer| *peer != node)
                    .filter_map(|peer| net.tip(peer).map(|(height, _)| height))
                    .max();
                refill.admitted_by_log = net
                    .log(node)
                    .lines()
                    .rev()
                    .find(|line| line.contains("mempool synced"))
                    .and_then(|line| line.split_once(" admitted=")?.1.split_whitespace().next()?.parse().ok());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    refill
}

// ---- Settling and reading the chain -----------------------------------------------------------

/// After the load stopped: waits until every node's mempool is empty and its final height is
/// past `tip_at_stop`, then until every node's final height reaches the highest tip seen at
/// that moment (so everything acknowledged and kept is in a final block). Returns that height.
pub fn settle(net: &Testnet, tip_at_stop: u64, timeout: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + timeout;
    let settled_tip = loop {
        let statuses: Vec<Option<Value>> = (0..net.nodes.len()).map(|index| net.status(index)).collect();
        let is_settled = statuses.iter().all(|status| {
            status.as_ref().is_some_and(|status| {
                status["mempool_size"].as_u64() == Some(0)
                    && status["finalized"]["height"].as_u64().is_some_and(|height| height > tip_at_stop)
            })
        });
        if is_settled {
            let tips = statuses.iter().flatten().filter_map(|status| status["tip"]["height"].as_u64());
            break tips.max().expect("every node answered");
        }
        let last_seen = statuses
            .iter()
            .enumerate()
            .map(|(index, status)| match status {
                Some(status) => format!(
                    "node {index}: mempool {}, tip {}, final {}",
                    status["mempool_size"], status["tip"]["height"], status["finalized"]["height"]
                ),
                None => format!("node {index}: no answer"),
            })
            .collect::<Vec<_>>()
            .join("; ");
        if Instant::now() > deadline {
            return Err(format!("not settled after {timeout:?} (tip at stop {tip_at_stop}): {last_seen}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    loop {
        let finals: Vec<Option<u64>> =
            (0..net.nodes.len()).map(|index| net.finalized(index).map(|(height, _)| height)).collect();
        if finals.iter().all(|height| height.is_some_and(|height| height >= settled_tip)) {
            return Ok(settled_tip);
        }
        if Instant::now() > deadline {
            return Err(format!("final heights {finals:?} never reached {settled_tip} within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What `get_tx` said about a dropped transfer.
#[derive(Clone, Debug)]
pub struct DroppedAnswer {
    pub reason: String,
    /// The transfer that took its place, when the reason names one.
    pub by: Option<Hash>,
}

/// Where a transfer sits in the canonical chain.
#[derive(Clone, Debug)]
pub struct Placement {
    pub height: u64,
    pub from: Address,
    pub nonce: u64,
}

/// Every transfer of the canonical chain up to a height, read from one node.
pub struct CanonicalChain {
    pub height: u64,
    pub transfer_count: usize,
    pub placements: HashMap<Hash, Vec<Placement>>,
    /// (sender, nonce) to the transfers committed with it: exactly one each on a sound chain.
    pub slots: HashMap<(Address, u64), Vec<Hash>>,
    /// Each block's timestamp (Unix ms), index `height - 1`.
    pub block_timestamps_ms: Vec<u64>,
    /// Heights where some node holds another block than the one read, with what each holds.
    pub disagreements: Vec<String>,
}

impl CanonicalChain {
    /// Reads blocks 1..=`height` with their transfers from node `reader` and compares every
    /// block hash with every other node's.
    pub fn read(net: &Testnet, reader: usize, height: u64) -> CanonicalChain {
        let agent = load_agent();
        let mut chain = CanonicalChain {
            height,
            transfer_count: 0,
            placements: HashMap::new(),
            slots: HashMap::new(),
            block_timestamps_ms: Vec::new(),
            disagreements: Vec::new(),
        };
        for block_height in 1..=height {
            let block = match call(&agent, &net.nodes[reader].rpc, "get_block", json!({ "height": block_height })) {
                Ok(Ok(block)) => block,
                other => panic!("get_block {block_height} on node {reader}: {other:?}"),
            };
            chain.block_timestamps_ms.push(block["timestamp_ms"].as_u64().expect("a block has a timestamp"));
            let hash = block["hash"].clone();
            for other in (0..net.nodes.len()).filter(|other| *other != reader) {
                let theirs = net.header(other, block_height).map(|header| header["hash"].clone());
                if theirs.as_ref() != Some(&hash) {
                    chain
                        .disagreements
                        .push(format!("height {block_height}: node {reader} holds {hash}, node {other} {theirs:?}"));
                }
            }
            for transfer in block["transfers"].as_array().expect("get_block lists the transfers") {
                let id = Hash::from_hex(transfer["id"].as_str().expect("a transfer has an id")).expect("ids are hex");
                let from = Address::from_str(transfer["from"].as_str().expect("a sender")).expect("a valid address");
                let nonce = transfer["nonce"].as_u64().expect("a nonce");
                chain.transfer_count += 1;
                chain.placements.entry(id).or_default().push(Placement { height: block_height, from, nonce });
                chain.slots.entry((from, nonce)).or_default().push(id);
            }
        }
        chain
    }
}

// ---- The accounting ---------------------------------------------------------------------------

/// The fate of every acknowledged transfer.
#[derive(Default)]
pub struct Accounting {
    pub acknowledged: usize,
    pub committed_once: usize,
    /// Committed at more than one height: must stay empty.
    pub committed_more_than_once: Vec<(Acknowledged, Vec<Placement>)>,
    /// Answered `dropped` for a reason the chain bears out.
    pub dropped: Vec<(Acknowledged, DroppedAnswer)>,
    /// Answered `dropped`, but the reason is undocumented or the chain contradicts it.
    pub dropped_unexplained: Vec<(Acknowledged, String)>,
    /// Neither committed nor dropped: `get_tx` says `unknown`. Must stay empty.
    pub unknown: Vec<Acknowledged>,
    /// Neither committed nor dropped nor unknown (still pending after every mempool emptied,
    /// committed above the heights read, or no answer): must stay empty.
    pub unsettled: Vec<(Acknowledged, String)>,
    /// A (sender, nonce) committed by more than one transfer: must stay empty.
    pub slots_committed_twice: Vec<((Address, u64), Vec<Hash>)>,
    /// Transfers of the load's senders in the chain that no node acknowledged (submissions
    /// whose answer was lost).
    pub committed_without_acknowledgement: usize,
}

impl Accounting {
    /// Issue 11's property: every acknowledged transfer is committed exactly once or answered
    /// dropped for a reason the chain bears out; nothing is unknown; no slot is used twice.
    pub fn holds(&self) -> bool {
        self.committed_more_than_once.is_empty()
            && self.dropped_unexplained.is_empty()
            && self.unknown.is_empty()
            && self.unsettled.is_empty()
            && self.slots_committed_twice.is_empty()
    }

    pub fn dropped_by_reason(&self) -> BTreeMap<String, usize> {
        let mut by_reason = BTreeMap::new();
        for (_, drop) in &self.dropped {
            *by_reason.entry(drop.reason.clone()).or_default() += 1;
        }
        by_reason
    }

    pub fn print(&self) {
        let reasons: Vec<String> =
            self.dropped_by_reason().iter().map(|(reason, count)| format!("{reason} {count}")).collect();
        println!("acknowledged:                {}", self.acknowledged);
        println!("committed exactly once:      {}", self.committed_once);
        println!("committed more than once:    {}", self.committed_more_than_once.len());
        println!(
            "dropped (explained):         {}{}",
            self.dropped.len(),
            if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join(", ")) }
        );
        println!("dropped (unexplained):       {}", self.dropped_unexplained.len());
        println!("unknown:                     {}", self.unknown.len());
        println!("unsettled:                   {}", self.unsettled.len());
        println!("(sender, nonce) used twice:  {}", self.slots_committed_twice.len());
        println!("committed, never acknowledged: {}", self.committed_without_acknowledgement);
    }

    /// Every failure, one line each (at most `limit` of each kind).
    pub fn failures(&self, limit: usize) -> Vec<String> {
        let mut lines = Vec::new();
        for (acknowledged, placements) in self.committed_more_than_once.iter().take(limit) {
            lines.push(format!("committed more than once: {} at {placements:?}", describe(acknowledged)));
        }
        for (acknowledged, why) in self.dropped_unexplained.iter().take(limit) {
            lines.push(format!("dropped, unexplained: {}: {why}", describe(acknowledged)));
        }
        for acknowledged in self.unknown.iter().take(limit) {
            lines.push(format!("unknown: {}", describe(acknowledged)));
        }
        for (acknowledged, why) in self.unsettled.iter().take(limit) {
            lines.push(format!("unsettled: {}: {why}", describe(acknowledged)));
        }
        for (slot, ids) in self.slots_committed_twice.iter().take(limit) {
            lines.push(format!("slot {} nonce {} committed by {ids:?}", slot.0, slot.1));
        }
        lines
    }

    /// Every acknowledged transfer that is a failure.
    pub fn failed_transfers(&self) -> Vec<&Acknowledged> {
        let mut failed: Vec<&Acknowledged> = Vec::new();
        failed.extend(self.committed_more_than_once.iter().map(|(acknowledged, _)| acknowledged));
        failed.extend(self.dropped_unexplained.iter().map(|(acknowledged, _)| acknowledged));
        failed.extend(self.unknown.iter());
        failed.extend(self.unsettled.iter().map(|(acknowledged, _)| acknowledged));
        failed
    }
}

pub fn describe(acknowledged: &Acknowledged) -> String {
    format!(
        "transfer {} from {} nonce {} acknowledged by node {} at {:.3} s",
        acknowledged.id,
        acknowledged.from,
        acknowledged.nonce,
        acknowledged.node,
        acknowledged.acknowledged_after.as_secs_f64()
    )
}

/// Gives every acknowledged transfer its fate: the chain says committed (once or more); for the
/// rest, `get_tx` on the node that acknowledged it says why not.
pub fn account_for_every_acknowledged_transfer(
    net: &Testnet,
    chain: &CanonicalChain,
    acknowledged: &[Acknowledged],
) -> Accounting {
    let mut accounting = Accounting { acknowledged: acknowledged.len(), ..Accounting::default() };
    let mut not_committed: Vec<&Acknowledged> = Vec::new();
    for transfer in acknowledged {
        match chain.placements.get(&transfer.id).map(Vec::as_slice) {
            Some([_]) => accounting.committed_once += 1,
            Some(placements) => accounting.committed_more_than_once.push((transfer.clone(), placements.to_vec())),
            None => not_committed.push(transfer),
        }
    }
    let acknowledged_ids: std::collections::HashSet<Hash> = acknowledged.iter().map(|transfer| transfer.id).collect();
    let senders: std::collections::HashSet<Address> = acknowledged.iter().map(|transfer| transfer.from).collect();
    accounting.committed_without_acknowledgement = chain
        .placements
        .iter()
        .filter(|(id, placements)| !acknowledged_ids.contains(id) && senders.contains(&placements[0].from))
        .count();
    let mut twice: Vec<((Address, u64), Vec<Hash>)> =
        chain.slots.iter().filter(|(_, ids)| ids.len() > 1).map(|(slot, ids)| (*slot, ids.clone())).collect();
    twice.sort_by_key(|(slot, _)| (slot.0 .0, slot.1));
    accounting.slots_committed_twice = twice;

    // Ask each node about the transfers it acknowledged, a batch at a time.
    let agent = load_agent();
    for node in 0..net.nodes.len() {
        let mine: Vec<&Acknowledged> = not_committed.iter().copied().filter(|transfer| transfer.node == node).collect();
        for chunk in mine.chunks(BATCH_CALLS_MAX) {
            let calls: Vec<(&str, Value)> =
                chunk.iter().map(|transfer| ("get_tx", json!({ "id": transfer.id.to_string() }))).collect();
            let answers = batch(&agent, &net.nodes[node].rpc, &calls);
            for (index, transfer) in chunk.iter().enumerate() {
                let answer = match &answers {
                    Ok(answers) => answers[index].clone(),
                    Err(failure) => Err(json!(format!("{failure:?}"))),
                };
                classify_not_committed(chain, transfer, answer, &mut accounting);
            }
        }
    }
    accounting
}

fn classify_not_committed(
    chain: &CanonicalChain,
    transfer: &Acknowledged,
    answer: Result<Value, Value>,
    accounting: &mut Accounting,
) {
    let state = match answer {
        Ok(state) => state,
        Err(error) => {
            accounting.unsettled.push((transfer.clone(), format!("get_tx failed: {error}")));
            return;
        }
    };
    match state["status"].as_str() {
        Some("unknown") => accounting.unknown.push(transfer.clone()),
        Some("dropped") => match explain_drop(chain, transfer, &state) {
            Ok(drop) => accounting.dropped.push((transfer.clone(), drop)),
            Err(why) => accounting.dropped_unexplained.push((transfer.clone(), why)),
        },
        _ => accounting
            .unsettled
            .push((transfer.clone(), format!("not in blocks 1..={}; get_tx: {state}", chain.height))),
    }
}

/// The drop's reason when the chain bears it out: `nonce_taken` names a transfer committed at
/// `by_height` with the same sender and nonce; `nonce_used` and `replaced` need another
/// transfer committed with the same sender and nonce; `unaffordable`, `evicted`,
/// `refused_after_restart` and `not_readmitted` are taken as documented.
fn explain_drop(chain: &CanonicalChain, transfer: &Acknowledged, state: &Value) -> Result<DroppedAnswer, String> {
    let reason = state["reason"].as_str().ok_or_else(|| format!("no reason: {state}"))?.to_string();
    let by = state["by"].as_str().and_then(|text| Hash::from_hex(text).ok());
    let drop = DroppedAnswer { reason: reason.clone(), by };
    if !DOCUMENTED_DROP_REASONS.contains(&reason.as_str()) {
        return Err(format!("undocumented reason {reason:?}: {state}"));
    }
    let echoed = (state["transfer"]["from"].as_str(), state["transfer"]["nonce"].as_u64());
    if echoed != (Some(transfer.from.to_string().as_str()), Some(transfer.nonce)) {
        return Err(format!("the answer describes another transfer: {state}"));
    }
    let slot_holders: Vec<Hash> = chain
        .slots
        .get(&(transfer.from, transfer.nonce))
        .map(|ids| ids.iter().copied().filter(|id| *id != transfer.id).collect())
        .unwrap_or_default();
    match reason.as_str() {
        "nonce_taken" => {
            let by_height = state["by_height"].as_u64();
            let (Some(by), Some(by_height)) = (by, by_height) else {
                return Err(format!("nonce_taken without by and by_height: {state}"));
            };
            let placed = chain.placements.get(&by).map(Vec::as_slice).unwrap_or_default();
            match placed {
                [placement]
                    if placement.height == by_height
                        && placement.from == transfer.from
                        && placement.nonce == transfer.nonce
                        && by != transfer.id =>
                {
                    Ok(drop)
                }
                _ => Err(format!("by {by} at height {by_height} is committed at {placed:?}: {state}")),
            }
        }
        "nonce_used" | "replaced" if slot_holders.is_empty() => {
            Err(format!("no other transfer is committed with its sender and nonce: {state}"))
        }
        _ => Ok(drop),
    }
}

/// For each failed transfer (at most `limit`): the events around its acknowledgement, what the
/// chain committed with its sender and nonce (and when, on the load's clock), what every node's
/// `get_tx` says now, and the log lines naming it.
pub fn diagnose_failures(
    net: &Testnet,
    chain: &CanonicalChain,
    accounting: &Accounting,
    timeline: &Timeline,
    load_started_unix_ms: u64,
    limit: usize,
) -> String {
    let mut text = String::new();
    let logs: Vec<String> = (0..net.nodes.len()).map(|index| net.log(index)).collect();
    for transfer in accounting.failed_transfers().into_iter().take(limit) {
        text.push_str(&format!("\n== {}\n", describe(transfer)));
        for event in timeline.around(transfer.acknowledged_after, Duration::from_secs(10), Duration::from_secs(5)) {
            text.push_str(&format!("   event {event}\n"));
        }
        for holder in chain.slots.get(&(transfer.from, transfer.nonce)).into_iter().flatten() {
            for placement in chain.placements.get(holder).into_iter().flatten() {
                let timestamp_ms = chain.block_timestamps_ms[placement.height as usize - 1];
                text.push_str(&format!(
                    "   its nonce was committed by {holder} at height {} (block time {:.3} s on the load's clock)\n",
                    placement.height,
                    (timestamp_ms as f64 - load_started_unix_ms as f64) / 1000.0
                ));
            }
        }
        for node in 0..net.nodes.len() {
            let state = net.rpc(node, "get_tx", json!({ "id": transfer.id.to_string() }));
            text.push_str(&format!("   get_tx on node {node}: {state:?}\n"));
        }
        let full = transfer.id.to_string();
        let short = format!("{:?}", transfer.id);
        for (node, log) in logs.iter().enumerate() {
            for line in log.lines().filter(|line| line.contains(&full) || line.contains(&short)).take(20) {
                text.push_str(&format!("   log node {node}: {line}\n"));
            }
        }
    }
    text
}

/// How long after its node's latest restart each dropped transfer was acknowledged, in
/// buckets; `restarts` lists (node, when, on the load's clock). Drops right after restarts point
/// at nonces a restarted node handed out before it knew its peers' pending transfers.
pub fn drops_by_time_since_restart(accounting: &Accounting, restarts: &[(usize, Duration)]) -> String {
    let buckets: [(&str, Duration); 4] = [
        ("under 2 s", Duration::from_secs(2)),
        ("2-5 s", Duration::from_secs(5)),
        ("5-10 s", Duration::from_secs(10)),
        ("10 s or more", Duration::MAX),
    ];
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    let mut never_restarted = 0;
    for (transfer, _drop) in &accounting.dropped {
        let latest_restart = restarts
            .iter()
            .filter(|(node, at)| *node == transfer.node && *at <= transfer.acknowledged_after)
            .map(|(_, at)| *at)
            .max();
        match latest_restart {
            None => never_restarted += 1,
            Some(at) => {
                let since = transfer.acknowledged_after - at;
                let bucket =
                    buckets.iter().position(|(_, below)| since < *below).expect("the last bucket has no bound");
                *counts.entry(bucket).or_default() += 1;
            }
        }
    }
    let mut parts: Vec<String> = counts
        .iter()
        .map(|(bucket, count)| format!("{count} {} after its node's restart", buckets[*bucket].0))
        .collect();
    parts.push(format!("{never_restarted} by a node not restarted before"));
    format!("dropped transfers by when they were acknowledged: {}", parts.join(", "))
}

/// The first `limit` explained drops, each with the transfer that took its place and, when
/// the load sent that one too, which node acknowledged it and when.
pub fn describe_drops(accounting: &Accounting, acknowledged: &[Acknowledged], limit: usize) -> Vec<String> {
    let by_id: HashMap<Hash, &Acknowledged> = acknowledged.iter().map(|transfer| (transfer.id, transfer)).collect();
    accounting
        .dropped
        .iter()
        .take(limit)
        .map(|(transfer, drop)| {
            let winner = match drop.by.and_then(|by| by_id.get(&by).map(|winner| (by, winner))) {
                Some((by, winner)) => format!(
                    "; {by} took its place, acknowledged by node {} at {:.3} s",
                    winner.node,
                    winner.acknowledged_after.as_secs_f64()
                ),
                None => {
                    drop.by.map_or(String::new(), |by| format!("; {by} took its place (not acknowledged to the load)"))
                }
            };
            format!("dropped ({}): {}{winner}", drop.reason, describe(transfer))
        })
        .collect()
}

/// Writes `acknowledged.tsv` (node, id, sender, nonce, ms since the load started) and
/// `dropped.tsv` (id, reason, by) into `dir`, to study a kept run.
pub fn write_records(dir: &std::path::Path, acknowledged: &[Acknowledged], accounting: &Accounting) {
    let mut lines = vec!["node\tid\tfrom\tnonce\tacknowledged_after_ms".to_string()];
    lines.extend(acknowledged.iter().map(|transfer| {
        format!(
            "{}\t{}\t{}\t{}\t{}",
            transfer.node,
            transfer.id,
            transfer.from,
            transfer.nonce,
            transfer.acknowledged_after.as_millis()
        )
    }));
    std::fs::write(dir.join("acknowledged.tsv"), lines.join("\n") + "\n").expect("the testnet directory is writable");
    let mut lines = vec!["id\treason\tby".to_string()];
    lines.extend(accounting.dropped.iter().map(|(transfer, drop)| {
        format!("{}\t{}\t{}", transfer.id, drop.reason, drop.by.map_or("-".to_string(), |by| by.to_string()))
    }));
    std::fs::write(dir.join("dropped.tsv"), lines.join("\n") + "\n").expect("the testnet directory is writable");
}
