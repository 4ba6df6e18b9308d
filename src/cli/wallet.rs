//! `tinychain wallet ...`: clap arguments, the environment, passphrase prompts and printing;
//! the logic is the `tinychain-wallet` library.
//!
//! Every subcommand takes `--wallet DIR` (default `$TINYCHAIN_WALLET`, else
//! `~/.tinychain/wallet`), `--rpc URL` (default `$TINYCHAIN_RPC`, else `http://127.0.0.1:7741`)
//! and `--json`. With `--json` a command prints exactly one JSON object on stdout, also when it
//! fails (`{"error": "..."}`, exit status 1); amounts in it are strings of base units, like the
//! node's RPC, each with a `*_tc` twin in TC. Without it, it prints lines for people. Secrets
//! and passphrases are never taken from the command line (they would land in shell history):
//! the passphrase comes from `TINYCHAIN_PASSPHRASE` or a prompt, an imported secret from stdin
//! or a prompt. Usage is in `docs/wallet.md`.
//!
//! One failure is reported with more than its message: a `send --wait` whose transfer the node
//! dropped. The transfer was sent, so with `--json` the error object also holds what `send`
//! reports (its id and nonce among them) and the node's `dropped` fields, so that a script
//! learns both that it must act and exactly which transfer was lost.

use super::passphrase::passphrase_source;
use serde_json::{json, Value};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tinychain_core::types::{Amount, Transfer};
use tinychain_wallet::amount::format_tc;
use tinychain_wallet::client::RpcClient;
use tinychain_wallet::keystore::KeystoreError;
use tinychain_wallet::{
    self as wallet, Balance, Direction, Dropped, FeeChoice, History, KeyEntry, MempoolSyncWait, SendRequest, Sent,
    TxState, TxStatus, WaitFor, WalletError,
};
use zeroize::Zeroizing;

/// The environment variable that overrides `wallet::RPC_URL_DEFAULT` (`--rpc` overrides both).
pub const RPC_URL_ENV_VAR: &str = "TINYCHAIN_RPC";
/// The environment variable naming the wallet directory (`--wallet` overrides it).
pub const WALLET_DIR_ENV_VAR: &str = "TINYCHAIN_WALLET";
/// The wallet directory without `--wallet` or `TINYCHAIN_WALLET`, under `$HOME`.
pub const WALLET_DIR_UNDER_HOME: &str = ".tinychain/wallet";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// The wallet directory (holding wallet.json) [default: ~/.tinychain/wallet]. The local
    /// testnet's development wallet is `testnet/wallet`.
    #[arg(long, global = true, value_name = "DIR", env = WALLET_DIR_ENV_VAR)]
    pub wallet: Option<PathBuf>,
    /// The node to ask (its JSON-RPC URL).
    #[arg(long, global = true, value_name = "URL", env = RPC_URL_ENV_VAR, default_value = wallet::RPC_URL_DEFAULT)]
    pub rpc: String,
    /// Print one JSON object instead of text (also for errors).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a new key (the wallet too, if there is none) and print its address.
    New {
        /// The key's name: 1 to 32 of a-z A-Z 0-9 _ -.
        #[arg(long, default_value = wallet::DEFAULT_KEY_NAME)]
        name: String,
    },
    /// List the wallet's keys and addresses (no passphrase needed).
    List,
    /// Print a key's address [default: the only key, or the one called "default"].
    Address {
        /// The key's name.
        name: Option<String>,
    },
    /// Show an account's final, tip and pending balance.
    Balance {
        /// An address (tc1...) or a key name [default: the wallet's key].
        #[arg(value_name = "ADDRESS|NAME", conflicts_with = "from")]
        account: Option<String>,
        /// The key to show (same as giving its name).
        #[arg(long, value_name = "NAME")]
        from: Option<String>,
    },
    /// Send AMOUNT TC to TO and print the transfer id.
    Send {
        /// The recipient's address (tc1...); its checksum is checked before anything is sent.
        #[arg(value_name = "TO")]
        to: String,
        /// The amount in TC, up to 8 decimals (e.g. 1.5).
        #[arg(value_name = "AMOUNT")]
        amount: String,
        /// The fee in TC, or "auto" for the node's estimate (estimate_fee).
        #[arg(long, value_name = "TC|auto", default_value = "auto")]
        fee: String,
        /// The key to send from [default: the only key, or the one called "default"].
        #[arg(long, value_name = "NAME")]
        from: Option<String>,
        /// After sending, wait until the transfer is in a block (`--wait`) or final (`--wait final`).
        #[arg(long, value_name = "UNTIL", num_args = 0..=1, default_missing_value = "committed")]
        wait: Option<WaitArg>,
        /// How long --wait waits, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 120)]
        wait_timeout_s: u64,
    },
    /// Show a transfer's status: pending, committed, final, dropped (with why and what to do) or
    /// unknown, with height and confirmations.
    Status {
        /// The transfer id `send` printed (64 hex).
        #[arg(value_name = "TXID")]
        id: String,
    },
    /// List an account's transfers, newest first (pending ones on top).
    History {
        /// An address (tc1...) or a key name [default: the wallet's key].
        #[arg(value_name = "ADDRESS|NAME", conflicts_with = "from")]
        account: Option<String>,
        /// The key to show (same as giving its name).
        #[arg(long, value_name = "NAME")]
        from: Option<String>,
        /// How many committed transfers to show (1 to 500).
        #[arg(long, default_value_t = wallet::HISTORY_LIMIT_DEFAULT)]
        limit: usize,
    },
    /// Import a key from its secret (64 hex digits), read from stdin or typed at a prompt.
    Import {
        /// The new key's name.
        #[arg(long, default_value = wallet::DEFAULT_KEY_NAME)]
        name: String,
    },
    /// Print a key's secret (64 hex digits). Anyone who sees it can spend the key's coins.
    Export {
        /// The key's name [default: the only key, or the one called "default"].
        name: Option<String>,
        /// Do not ask for confirmation (needed when there is no terminal).
        #[arg(long)]
        yes: bool,
    },
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // Warnings from the keystore (a wallet file readable by others) go to stderr.
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(tracing::Level::WARN).try_init();
    match execute(args) {
        Ok(output) => {
            if args.global.json {
                println!("{}", output.json);
            } else {
                print!("{}", output.text);
            }
            Ok(())
        }
        Err(Failure { error, json }) => {
            if args.global.json {
                println!("{}", failure_json(&error, json.map(|json| *json)));
            }
            Err(error.into())
        }
    }
}

/// The one object `--json` prints for a failure: `{"error": "..."}`, beside whatever else the
/// failure reports.
fn failure_json(error: &WalletError, json: Option<Value>) -> Value {
    let mut object = match json {
        Some(Value::Object(object)) => object,
        _ => serde_json::Map::new(),
    };
    object.insert("error".into(), Value::String(error.to_string()));
    Value::Object(object)
}

/// What a command prints: text for people, one JSON object for programs.
#[derive(Debug)]
struct Output {
    text: String,
    json: Value,
}

/// A command that failed: the error, and what `--json` prints beside its `"error"` when there
/// is more to say than the message (a send whose wait ended on `dropped`).
#[derive(Debug)]
struct Failure {
    error: WalletError,
    /// Boxed: failures travel in every `Result` of this module, and most have none.
    json: Option<Box<Value>>,
}

impl From<WalletError> for Failure {
    fn from(error: WalletError) -> Failure {
        Failure { error, json: None }
    }
}

/// Printed on stderr, once, when `send` waits for a just-started node.
/// `--wait`'s values: the wallet's `WaitFor`, named for the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitArg {
    Committed,
    Final,
}

impl From<WaitArg> for WaitFor {
    fn from(wait: WaitArg) -> WaitFor {
        match wait {
            WaitArg::Committed => WaitFor::Committed,
            WaitArg::Final => WaitFor::Final,
        }
    }
}

/// The wallet directory: `--wallet` (or `TINYCHAIN_WALLET`, which clap reads into it), else
/// `$HOME/.tinychain/wallet`.
pub fn wallet_dir(given: Option<&Path>) -> Result<PathBuf, WalletError> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(WALLET_DIR_UNDER_HOME)),
        _ => Err(WalletError::Refused(format!(
            "no wallet directory: set --wallet DIR or {WALLET_DIR_ENV_VAR} (HOME is not set either)"
        ))),
    }
}

const MEMPOOL_SYNC_WAIT_NOTE: &str = "waiting for the node to sync its mempool with its peers (it just started)";

fn note_mempool_sync_wait() {
    eprintln!("{MEMPOOL_SYNC_WAIT_NOTE}");
}

fn passphrase_for_unlock() -> Result<Zeroizing<String>, KeystoreError> {
    passphrase_source("Wallet passphrase: ", false)()
}

fn passphrase_for_new_key() -> Result<Zeroizing<String>, KeystoreError> {
    passphrase_source("Passphrase for the new key: ", true)()
}

fn execute(args: &Args) -> Result<Output, Failure> {
    let global = &args.global;
    let dir = || wallet_dir(global.wallet.as_deref());
    match &args.command {
        Command::New { name } => {
            let added = wallet::new_key(&dir()?, name, passphrase_for_new_key)?;
            Ok(added_output("created", &added))
        }
        Command::List => {
            let dir = dir()?;
            let keys = wallet::list_keys(&dir)?;
            let mut text = String::new();
            if keys.is_empty() {
                text.push_str(&format!("the wallet {} holds no key\n", dir.display()));
            }
            for key in &keys {
                text.push_str(&format!("{:<20} {}\n", key.name, key.address));
            }
            let list: Vec<Value> = keys.iter().map(key_json).collect();
            Ok(Output { text, json: json!({ "wallet": dir, "keys": list }) })
        }
        Command::Address { name } => {
            let key = wallet::key_address(&dir()?, name.as_deref())?;
            Ok(Output { text: format!("{}\n", key.address), json: key_json(&key) })
        }
        Command::Balance { account, from } => {
            let given = account.as_deref().or(from.as_deref());
            let (address, name) = wallet::resolve_account(&dir()?, "ADDRESS", given)?;
            let client = RpcClient::new(&global.rpc)?;
            let balance = wallet::balance(&client, &address)?;
            Ok(balance_output(&balance, name.as_deref()))
        }
        Command::Send { to, amount, fee, from, wait, wait_timeout_s } => {
            // Every argument is checked before the wallet is opened or the node asked.
            let request = SendRequest {
                to: wallet::parse_address("TO", to)?,
                amount: wallet::parse_send_amount("AMOUNT", amount)?,
                fee: wallet::parse_fee("--fee", fee)?,
                from: from.clone(),
            };
            let client = RpcClient::new(&global.rpc)?;
            let wait = wait.map(|target| (WaitFor::from(target), Duration::from_secs(*wait_timeout_s)));
            send_and_wait(
                &client,
                &dir()?,
                &request,
                wait,
                global.json,
                wallet::MEMPOOL_SYNC_WAIT_DEFAULT,
                passphrase_for_unlock,
            )
        }
        Command::Status { id } => {
            let id = wallet::parse_tx_id("TXID", id)?;
            let client = RpcClient::new(&global.rpc)?;
            Ok(status_output(&wallet::tx_status(&client, &id)?))
        }
        Command::History { account, from, limit } => {
            if !(1..=wallet::HISTORY_LIMIT_MAX).contains(limit) {
                return Err(WalletError::BadLimit { limit: *limit }.into());
            }
            let given = account.as_deref().or(from.as_deref());
            let (address, name) = wallet::resolve_account(&dir()?, "ADDRESS", given)?;
            let client = RpcClient::new(&global.rpc)?;
            Ok(history_output(&wallet::history(&client, &address, *limit)?, name.as_deref()))
        }
        Command::Import { name } => {
            let secret = read_secret()?;
            let added = wallet::import_key(&dir()?, name, &secret, passphrase_for_new_key)?;
            Ok(added_output("imported", &added))
        }
        Command::Export { name, yes } => {
            let dir = dir()?;
            let key = wallet::key_address(&dir, name.as_deref())?;
            eprintln!(
                "warning: the secret of key {:?} is about to be printed. Anyone who sees it can spend everything \
                 {} holds; keep it out of chats, tickets, screenshots and shell history.",
                key.name, key.address
            );
            if !yes {
                confirm_export(&key)?;
            }
            let (key, secret) = wallet::export_key(&dir, Some(&key.name), passphrase_for_unlock)?;
            Ok(Output {
                text: format!("{}\n", secret.as_str()),
                json: json!({ "name": key.name, "address": key.address, "secret": secret.as_str() }),
            })
        }
    }
}

/// `wallet send`, then with `wait` = `(target, timeout)` polling until the transfer is `target`.
/// Text is printed as it happens (the sent transfer before the wait, each new status during it);
/// what is left to print is returned.
///
/// A failed wait does not hide that the transfer was sent: a timeout or a lost node is, with
/// `--json`, a `wait_error` beside the sent transfer (exit status 0: it may still commit); a
/// transfer the node dropped is an error (the node let go of it, and the user must act), and
/// with `--json` the error object still holds the sent transfer and the node's `dropped` fields.
fn send_and_wait(
    client: &RpcClient,
    dir: &std::path::Path,
    request: &SendRequest,
    wait: Option<(WaitFor, Duration)>,
    is_json: bool,
    sync_wait: MempoolSyncWait,
    passphrase: impl FnOnce() -> Result<Zeroizing<String>, KeystoreError>,
) -> Result<Output, Failure> {
    let sent = wallet::send(client, dir, request, sync_wait, note_mempool_sync_wait, passphrase)?;
    let mut output = sent_output(&sent, request.fee);
    let Some((target, timeout)) = wait else { return Ok(output) };
    if !is_json {
        // Show progress as it happens; the final status is printed below.
        print!("{}", output.text);
        output.text.clear();
        let _ = std::io::stdout().flush();
    }
    let waited = wallet::wait_for_status(client, &sent.id, target, timeout, |status| {
        if !is_json && !wallet::is_reached(status.state, target) {
            println!("status      {}", status.state);
        }
    });
    let status = match waited {
        Ok(status) => status,
        // The node let go of it: waiting longer would only report it as lost later. As text the
        // id was printed before waiting began, and the error says why and what to do.
        Err(WalletError::Dropped { id, nonce, dropped }) => {
            let mut json = output.json;
            if let Value::Object(map) = &mut json {
                map.insert("dropped".into(), dropped_json(&dropped));
            }
            return Err(Failure { error: WalletError::Dropped { id, nonce, dropped }, json: Some(Box::new(json)) });
        }
        // The transfer was submitted and may still commit: with --json, say so in the one object
        // (with the id and nonce) rather than an error a script might answer by sending again.
        // As text, the id was printed before waiting began.
        Err(error) if is_json => {
            if let Value::Object(map) = &mut output.json {
                map.insert("wait_error".into(), Value::String(error.to_string()));
            }
            return Ok(output);
        }
        Err(error) => return Err(error.into()),
    };
    let status_output = status_output(&status);
    output.text.push_str(&status_output.text);
    if let Value::Object(map) = &mut output.json {
        map.insert("status".into(), status_output.json);
    }
    Ok(output)
}

/// Asks on the terminal before printing a secret; refuses without a terminal.
fn confirm_export(key: &KeyEntry) -> Result<(), WalletError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(WalletError::Refused(
            "refusing to print a secret without confirmation: there is no terminal to confirm on; pass --yes".into(),
        ));
    }
    eprint!("Type yes to print the secret of {:?}: ", key.name);
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin.read_line(&mut answer).map_err(|source| WalletError::Input { what: "the confirmation".into(), source })?;
    if answer.trim() != "yes" {
        return Err(WalletError::Refused("not confirmed; nothing was printed".into()));
    }
    Ok(())
}

/// The secret to import: typed at a hidden prompt on a terminal, else read from stdin.
fn read_secret() -> Result<Zeroizing<String>, WalletError> {
    const SECRET_INPUT_BYTES_MAX: u64 = 1_024;
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password("Secret key (64 hex digits): ")
            .map(Zeroizing::new)
            .map_err(|source| WalletError::Input { what: "the secret key".into(), source });
    }
    let mut text = Zeroizing::new(String::new());
    std::io::stdin()
        .take(SECRET_INPUT_BYTES_MAX)
        .read_to_string(&mut text)
        .map_err(|source| WalletError::Input { what: "the secret key from stdin".into(), source })?;
    Ok(text)
}

// ---- Output ------------------------------------------------------------------------------------

fn key_json(key: &KeyEntry) -> Value {
    json!({ "name": key.name, "address": key.address })
}

/// An amount for `--json`: base units (as the RPC writes them) under `name`, TC under `name_tc`.
fn insert_amount(map: &mut serde_json::Map<String, Value>, name: &str, amount: Amount) {
    map.insert(name.to_string(), json!(amount.to_string()));
    map.insert(format!("{name}_tc"), json!(tinychain_wallet::amount::format_amount(amount)));
}

fn amounts_json(fields: &[(&str, Value)], amounts: &[(&str, Amount)]) -> Value {
    let mut map = serde_json::Map::new();
    for (name, value) in fields {
        map.insert((*name).to_string(), value.clone());
    }
    for (name, amount) in amounts {
        insert_amount(&mut map, name, *amount);
    }
    Value::Object(map)
}

fn added_output(verb: &str, added: &wallet::AddedKey) -> Output {
    let mut text = String::new();
    if added.created_wallet {
        text.push_str(&format!("created wallet {}\n", added.wallet_file.display()));
    }
    text.push_str(&format!("{verb} key {:?}\n{}\n", added.key.name, added.key.address));
    Output {
        text,
        json: json!({
            "name": added.key.name,
            "address": added.key.address,
            "wallet_file": added.wallet_file,
            "created_wallet": added.created_wallet,
        }),
    }
}

fn balance_output(balance: &Balance, name: Option<&str>) -> Output {
    let mut text = match name {
        Some(name) => format!("address   {} (key {name:?})\n", balance.address),
        None => format!("address   {}\n", balance.address),
    };
    text.push_str(&format!(
        "final     {:<24} at height {}\n",
        format_tc(balance.final_state.balance),
        balance.final_state.height
    ));
    text.push_str(&format!(
        "tip       {:<24} at height {}\n",
        format_tc(balance.tip_state.balance),
        balance.tip_state.height
    ));
    let pending_count = balance.pending_outgoing.len();
    let spent: Amount =
        balance.pending_outgoing.iter().fold(0, |total, transfer| total.saturating_add(transfer.cost()));
    let note = match pending_count {
        0 => "no pending outgoing transfer".to_string(),
        1 => format!("tip minus 1 pending outgoing transfer ({})", format_tc(spent)),
        n => format!("tip minus {n} pending outgoing transfers ({})", format_tc(spent)),
    };
    text.push_str(&format!("pending   {:<24} {note}\n", format_tc(balance.pending_balance)));
    match balance.pending_nonce {
        Some(pending_nonce) => {
            text.push_str(&format!("nonce     {} (next transfer: {pending_nonce})\n", balance.tip_state.nonce))
        }
        None => {
            text.push_str(&format!(
                "nonce     {} (next transfer: unknown until the node has synced its mempool)\n",
                balance.tip_state.nonce
            ));
            text.push_str(
                "          the node has just started and is still fetching its peers' pending transfers: \
                 `pending` may not count them all yet\n",
            );
        }
    }
    let state_json = |state: &wallet::AccountAtHeight| {
        amounts_json(&[("height", json!(state.height)), ("nonce", json!(state.nonce))], &[("balance", state.balance)])
    };
    let pending_list: Vec<Value> = balance
        .pending_outgoing
        .iter()
        .map(|transfer| {
            amounts_json(
                &[
                    ("id", json!(transfer.id)),
                    ("nonce", json!(transfer.nonce)),
                    ("to_self", json!(transfer.is_to_self)),
                ],
                &[("amount", transfer.amount), ("fee", transfer.fee)],
            )
        })
        .collect();
    let mut json = amounts_json(
        &[
            ("address", json!(balance.address)),
            ("key", json!(name)),
            ("final", state_json(&balance.final_state)),
            ("tip", state_json(&balance.tip_state)),
            ("pending_outgoing", Value::Array(pending_list)),
            ("pending_nonce", json!(balance.pending_nonce)),
        ],
        &[],
    );
    if let Value::Object(map) = &mut json {
        let mut pending = serde_json::Map::new();
        insert_amount(&mut pending, "balance", balance.pending_balance);
        pending.insert("outgoing_count".into(), json!(pending_count));
        map.insert("pending".into(), Value::Object(pending));
    }
    Output { text, json }
}

fn transfer_json(transfer: &Transfer) -> Value {
    amounts_json(
        &[
            ("chain_id", json!(transfer.chain_id)),
            ("from", json!(transfer.from)),
            ("to", json!(transfer.to)),
            ("nonce", json!(transfer.nonce)),
        ],
        &[("amount", transfer.amount), ("fee", transfer.fee)],
    )
}

fn sent_output(sent: &Sent, fee: FeeChoice) -> Output {
    let transfer = &sent.transfer;
    let fee_note = match fee {
        FeeChoice::Auto => " (auto: the node's estimate)",
        FeeChoice::Fixed(_) => "",
    };
    let text = format!(
        "sent        {} from {:?} to {}\nfee         {}{fee_note}\nnonce       {}\npending     {} left to spend\nid          {}\n",
        format_tc(transfer.amount),
        sent.key_name,
        transfer.to,
        format_tc(transfer.fee),
        transfer.nonce,
        format_tc(sent.pending_balance_after),
        sent.id,
    );
    let mut json = transfer_json(transfer);
    if let Value::Object(map) = &mut json {
        map.insert("id".into(), json!(sent.id));
        map.insert("key".into(), json!(sent.key_name));
        insert_amount(map, "pending_balance_after", sent.pending_balance_after);
    }
    Output { text, json }
}

fn status_output(status: &TxStatus) -> Output {
    let mut text = match &status.dropped {
        Some(dropped) => format!("status      dropped at height {}\n", dropped.dropped_at_height),
        None => format!("status      {}\n", status.state),
    };
    if let (Some(height), Some(confirmations)) = (status.height, status.confirmations) {
        text.push_str(&format!("height      {height}\nconfirmations {confirmations}\n"));
    }
    if let Some(hash) = &status.block_hash {
        text.push_str(&format!("block       {hash}\n"));
    }
    if let Some(transfer) = &status.transfer {
        text.push_str(&format!(
            "transfer    {} from {} to {}, fee {}, nonce {}\n",
            format_tc(transfer.amount),
            transfer.from,
            transfer.to,
            format_tc(transfer.fee),
            transfer.nonce
        ));
    }
    if let Some(dropped) = &status.dropped {
        let nonce = status.transfer.as_ref().map(|transfer| transfer.nonce);
        text.push_str(&format!(
            "dropped: {}. {}\nwhat to do: {}\n",
            dropped.explanation(nonce),
            dropped.consequence(),
            dropped.advice(nonce)
        ));
    }
    if status.state == TxState::Unknown {
        text.push_str(&format!(
            "            the node knows no transfer {}: not sent to it, dropped longer ago than it remembers, \
             or sent to another chain\n",
            status.id
        ));
    }
    let mut json = json!({
        "id": status.id,
        "status": status.state.as_str(),
        "height": status.height,
        "block_hash": status.block_hash,
        "confirmations": status.confirmations,
        "transfer": status.transfer.as_ref().map(transfer_json),
    });
    if let (Some(dropped), Value::Object(map)) = (&status.dropped, &mut json) {
        // The node's own fields, as `get_tx` gives them.
        if let Value::Object(fields) = dropped_json(dropped) {
            map.extend(fields);
        }
    }
    Output { text, json }
}

/// A dropped transfer's fields as the node's `get_tx` names them.
fn dropped_json(dropped: &Dropped) -> Value {
    json!({
        "reason": dropped.reason.as_str(),
        "message": dropped.message,
        "by": dropped.by,
        "by_height": dropped.by_height,
        "dropped_at_height": dropped.dropped_at_height,
    })
}

fn history_output(history: &History, name: Option<&str>) -> Output {
    let mut text = match name {
        Some(name) => format!("history of {} (key {name:?}), newest first\n", history.address),
        None => format!("history of {}, newest first\n", history.address),
    };
    text.push_str(&format!("tip height {}, final height {}\n", history.tip_height, history.final_height));
    if history.entries.is_empty() {
        text.push_str("no transfers\n");
    }
    let mut entries_json = Vec::with_capacity(history.entries.len());
    for entry in &history.entries {
        let place = match entry.height {
            None => "pending".to_string(),
            Some(height) if entry.is_final => format!("{height} final"),
            Some(height) => format!("{height}"),
        };
        let (arrow, sign) = match entry.direction {
            Direction::In => ("from", "+"),
            Direction::Out => ("to  ", "-"),
            Direction::ToSelf => ("self", " "),
        };
        text.push_str(&format!(
            "{place:<14} {:<4} {sign}{:<22} fee {:<16} {arrow} {}  nonce {}  id {}\n",
            entry.direction.as_str(),
            format_tc(entry.amount),
            format_tc(entry.fee),
            entry.counterparty,
            entry.nonce,
            entry.id
        ));
        entries_json.push(amounts_json(
            &[
                ("id", json!(entry.id)),
                ("direction", json!(entry.direction.as_str())),
                ("counterparty", json!(entry.counterparty)),
                ("nonce", json!(entry.nonce)),
                ("height", json!(entry.height)),
                (
                    "status",
                    json!(match (entry.height, entry.is_final) {
                        (None, _) => "pending",
                        (Some(_), true) => "final",
                        (Some(_), false) => "committed",
                    }),
                ),
            ],
            &[("amount", entry.amount), ("fee", entry.fee)],
        ));
    }
    if history.has_more {
        text.push_str("(older transfers exist; raise --limit to see more)\n");
    }
    let json = json!({
        "address": history.address,
        "key": name,
        "tip_height": history.tip_height,
        "final_height": history.final_height,
        "transfers": entries_json,
        "has_more": history.has_more,
    });
    Output { text, json }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinychain_core::types::{Address, Hash};
    use tinychain_core::validate::transfer_id;
    use tinychain_wallet::testing::{
        dropped_answer, fake_node, node_error, status_answer, transfer_answer, wallet_with_one_key,
    };

    #[test]
    fn a_dropped_status_says_why_and_what_to_do_and_gives_the_nodes_fields() {
        let key = tinychain_core::crypto::Keypair::from_secret_bytes(&[5; 32]);
        let transfer = wallet::build_transfer(&key, "fake", Address([9; 32]), 150_000_000, 0, 5);
        let winner = Hash([0xee; 32]);
        let status = TxStatus {
            id: transfer_id(&transfer),
            state: TxState::Dropped,
            height: None,
            block_hash: None,
            confirmations: None,
            transfer: Some(transfer.clone()),
            dropped: Some(Dropped {
                reason: wallet::DropReason::NonceTaken,
                message: format!("its nonce was taken by transfer {winner}, committed at height 812"),
                by: Some(winner),
                by_height: Some(812),
                dropped_at_height: 815,
            }),
        };
        let output = status_output(&status);
        let lines: Vec<&str> = output.text.lines().collect();
        assert_eq!(lines[0], "status      dropped at height 815");
        assert!(lines[1].starts_with("transfer    1.5 TC from") && lines[1].ends_with("nonce 5"), "{}", lines[1]);
        assert_eq!(
            lines[2],
            format!(
                "dropped: its nonce 5 was taken by transfer {winner} (committed at height 812). \
                 This transfer will never be committed; nothing was spent by it."
            )
        );
        assert!(lines[3].starts_with("what to do: ") && lines[3].contains(&winner.to_string()), "{}", lines[3]);
        assert_eq!(lines.len(), 4, "{}", output.text);
        // --json: the node's fields, as get_tx names them.
        let json = &output.json;
        assert_eq!((json["status"].as_str(), json["reason"].as_str()), (Some("dropped"), Some("nonce_taken")));
        assert_eq!(json["by"], json!(winner));
        assert_eq!((json["by_height"].as_u64(), json["dropped_at_height"].as_u64()), (Some(812), Some(815)));
        assert_eq!(json["message"], status.dropped.as_ref().unwrap().message.as_str());
        assert_eq!((json["id"].clone(), json["transfer"]["nonce"].as_u64()), (json!(status.id), Some(5)));
    }

    #[test]
    fn send_wait_that_ends_on_dropped_fails_and_still_reports_the_sent_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let key = wallet_with_one_key(dir.path());
        let sent = wallet::build_transfer(&key, "fake", Address([9; 32]), 1_000, 0, 3);
        let sent_id = transfer_id(&sent);
        let winner = Hash([0xee; 32]);
        let pending = json!({ "id": sent_id, "status": "pending", "transfer": transfer_answer(&sent) });
        let dropped = dropped_answer(&sent, "nonce_taken", "taken", Some(winner), Some(812), 812);
        let get_tx_calls = std::sync::atomic::AtomicUsize::new(0);
        let node = fake_node(move |method, params| match method {
            "status" => Some(Ok(status_answer("fake", 9, 7))),
            "get_history" => Some(Ok(json!({
                "address": params["address"], "transfers": [], "pending": [], "next_before_height": null,
            }))),
            "get_account" => Some(Ok(json!({
                "address": params["address"], "at": params["at"], "height": 9, "balance": "10000", "nonce": 3,
                "pending_nonce": 3, "mempool_synced": true,
            }))),
            "submit_tx" => Some(Ok(json!({ "id": sent_id }))),
            "get_tx" => {
                let call = get_tx_calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                // Each send polls pending once, then finds it dropped.
                Some(Ok(if call.is_multiple_of(2) { pending.clone() } else { dropped.clone() }))
            }
            _ => Some(Err(node_error(-32601, "method not found", None))),
        });
        let client = RpcClient::new(&node.url).unwrap();
        let request = SendRequest { from: None, to: Address([9; 32]), amount: 1_000, fee: FeeChoice::Fixed(0) };
        let wait = Some((WaitFor::Final, Duration::from_secs(3_600)));
        let passphrase = || Ok(Zeroizing::new("pw".to_string()));
        for is_json in [true, false] {
            let failure = send_and_wait(
                &client,
                dir.path(),
                &request,
                wait,
                is_json,
                wallet::MEMPOOL_SYNC_WAIT_DEFAULT,
                passphrase,
            )
            .expect_err("a dropped send is a failure, never a pending success");
            assert!(
                matches!(&failure.error, WalletError::Dropped { id, nonce: Some(3), .. } if *id == sent_id),
                "{:?}",
                failure.error
            );
            let message = failure.error.to_string();
            assert!(message
                .contains(&format!("transfer {sent_id} was dropped: its nonce 3 was taken by transfer {winner}")));
            // --json: the sent transfer (so a script knows which was lost), why, and the error.
            let json = failure_json(&failure.error, failure.json.map(|json| *json));
            assert_eq!(json["id"], json!(sent_id));
            assert_eq!(json["nonce"], 3);
            assert_eq!(json["dropped"]["reason"], "nonce_taken");
            assert_eq!(json["dropped"]["by"], json!(winner));
            assert_eq!(json["dropped"]["by_height"], 812);
            assert_eq!(json["error"], message.as_str());
            assert!(json.get("wait_error").is_none(), "a dropped send is an error, not a wait that may still end");
        }
    }
}
