//! The wallet's operations, as plain functions any program can call (the `tinychain wallet`
//! commands are one such program): keys from the encrypted keystore (`keystore`), amounts in TC
//! (`amount`), the node's answers over `client::RpcClient`, building and signing transfers, and
//! one function per operation (`new_key`, `list_keys`, `balance`, `send`, `tx_status`,
//! `wait_for_status`, `history`, `import_key`, `export_key`). Nothing here reads the environment
//! or prompts: a passphrase comes from a closure the caller gives, and printing is the caller's.
//!
//! Contract:
//! - Everything a user typed is checked before anything is read from the network or the
//!   keystore is unlocked: a recipient with a bad checksum, an amount with nine decimals or a
//!   fee that is neither "auto" nor an amount is refused with an error naming the argument.
//! - `send` asks the node first (chain id, the account's pending nonce and pending balance, the
//!   fee estimate), refuses locally when the pending balance cannot pay `amount + fee`, and only
//!   then asks for the passphrase, signs and submits. Every error before `submit_tx` means
//!   nothing was sent; a `submit_tx` that fails after the request may have reached the node is
//!   `SubmitUncertain`, which names the transfer id so the user can look it up.
//! - A transfer is only ever signed with a nonce the node offered as `pending_nonce`. A node
//!   that has just (re)started answers `pending_nonce: null` until it has fetched its peers'
//!   pending transfers (at most the chain's `producer_timeout_ms`): a nonce guessed from its
//!   partial mempool could be one a transfer pending elsewhere already holds, and one of the two
//!   would be dropped. `send` waits for the nonce (`MempoolSyncWait`, re-reading the pending
//!   list and balance with it, since they were partial too) and past the bound fails with
//!   `MempoolNotSynced`, having sent nothing.
//! - A transfer the node dropped (`get_tx` status `dropped`: its nonce was taken, it was
//!   replaced, evicted, no longer affordable, or refused after a restart) is one the node let go
//!   of and will not include (one whose nonce was taken never can be committed).
//!   `wait_for_status` stops at once with `WalletError::Dropped`, which says why and what to do
//!   (`Dropped::explanation`, `consequence`, `advice`); it never goes on reporting such a
//!   transfer as pending.
//! - The wallet file is only written by `new_key` and `import_key` (atomically, by the
//!   keystore); every other command only reads it, so a failure leaves it byte for byte as it was.
//! - Amounts never pass through floating point.
//!
//! Balances (`balance`, and the local check of `send`), all read from the one node at `--rpc`:
//! - `final`: `get_account` at `"final"`, the state after the latest final block.
//! - `tip`: `get_account` at `"tip"`, the state after the node's newest block.
//! - `pending`: `tip` minus what this node's mempool holds against the account: `amount + fee`
//!   of each pending outgoing transfer (only `fee` of a pending transfer to itself) whose nonce
//!   is at least the tip's nonce. Incoming pending transfers are not counted: `pending` is what
//!   the account can still spend. The pending list is read before the tip account, and entries
//!   below the tip's nonce are ignored, so a block committed between the two reads is not
//!   counted twice. The pending list is the node's mempool, which a dropped transfer has left:
//!   a dropped transfer is never counted as pending (nor listed by `history`).

use crate::amount::{format_amount, parse_amount, AmountError};
use crate::client::{shorten, RpcClient};
use crate::keystore::{self, Keystore, KeystoreError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tinychain_core::address::AddressError;
use tinychain_core::crypto::Keypair;
use tinychain_core::types::{Address, Amount, Hash, Height, Transfer};
use tinychain_core::validate::transfer_id;
use tinychain_rpc::{data_code, AccountAnswer, AccountAt, HistoryAnswer, HistoryTransfer, Method, TxAnswer};
use zeroize::Zeroizing;

/// The node the wallet talks to by default: the local node's RPC port (DESIGN.md).
pub const RPC_URL_DEFAULT: &str = "http://127.0.0.1:7741";
/// The name `wallet new` and `wallet import` give a key without `--name`; also the key used
/// when a wallet holds several and none is named.
pub const DEFAULT_KEY_NAME: &str = "default";
/// `history` lists this many transfers without a limit: the node's own default page.
pub const HISTORY_LIMIT_DEFAULT: usize = tinychain_rpc::HISTORY_LIMIT_DEFAULT;
/// The most `get_history` returns in one page.
pub const HISTORY_LIMIT_MAX: usize = tinychain_rpc::HISTORY_LIMIT_MAX;
/// How often `wait_for_status` asks the node.
pub const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long `send` waits for a just-started node to offer a pending nonce: a little more than
/// the node's own bound on it (the chain's `producer_timeout_ms`, 10 s by default), so that a
/// node on a default chain is always waited for.
pub const MEMPOOL_SYNC_WAIT_DEFAULT: MempoolSyncWait =
    MempoolSyncWait { timeout: Duration::from_secs(15), poll_interval: Duration::from_millis(250) };

/// Everything a wallet command can fail with. Messages name the argument, file, URL or value
/// and say whether anything was sent.
#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error("{argument}: {reason}; nothing was sent")]
    BadAddress { argument: String, reason: AddressError },
    #[error("{argument}: {reason}")]
    BadAmount { argument: String, reason: AmountError },
    #[error("{argument}: the amount is 0; a transfer moves at least 0.00000001 TC")]
    ZeroAmount { argument: String },
    #[error("{argument}: {text:?} is neither \"auto\" nor an amount in TC: {reason}")]
    BadFee { argument: String, text: String, reason: AmountError },
    #[error("{argument}: {text:?} is not a transfer id: {detail}")]
    BadTxId { argument: String, text: String, detail: String },
    #[error("--limit: {limit} is out of range: give 1 to {HISTORY_LIMIT_MAX}")]
    BadLimit { limit: usize },
    #[error("--rpc: {url:?} is not a node URL: {detail}")]
    BadRpcUrl { url: String, detail: String },
    #[error("the wallet {} holds no key; create one with `tinychain wallet new`", path.display())]
    NoKeys { path: PathBuf },
    #[error(
        "the wallet {} holds several keys ({}) and none is called {DEFAULT_KEY_NAME:?}; choose one with --from NAME",
        path.display(),
        names.join(", ")
    )]
    AmbiguousKey { path: PathBuf, names: Vec<String> },
    #[error("cannot reach the node at {url}: {detail}; is it running? (--rpc)")]
    Unreachable { url: String, detail: String },
    #[error("the node at {url} did not answer {method}: {detail}")]
    NoAnswer { url: String, method: String, detail: String },
    #[error("the node at {url} answered {method} with HTTP {status}: {body}")]
    HttpStatus { url: String, method: String, status: u16, body: String },
    /// `data_code` is the error's `data.code` (`tinychain_rpc::data_code`), `None` from a node that
    /// sends none.
    #[error("the node at {url} answered {method} with error {code}: {message}")]
    NodeError { url: String, method: String, code: i64, data_code: Option<String>, message: String },
    #[error("the node at {url} gave an answer to {method} this wallet does not understand: {detail}")]
    BadAnswer { url: String, method: String, detail: String },
    /// `submit_tx` refused the transfer: `code` is why (`tinychain_rpc::data_code`: `nonce_used`,
    /// `insufficient_balance_with_pending`, ...; `None` from a node that sends no code), `message`
    /// the node's sentence. The text adds what to do for the reasons a user can act on.
    #[error("the node at {url} rejected transfer {id}: {}", rejection_text(code.as_deref(), message))]
    Rejected { url: String, id: Hash, code: Option<String>, message: String },
    #[error(
        "submitting transfer {id} to {url} failed after the request may have reached the node ({detail}); \
         it may or may not be pending: check with `tinychain wallet status {id}` before sending again"
    )]
    SubmitUncertain { url: String, id: Hash, detail: String },
    #[error(
        "insufficient funds: balance {} TC{}, sending {} TC + fee {} TC; nothing was sent",
        format_amount(*balance),
        pending_note(*pending_outgoing_count),
        format_amount(*amount),
        format_amount(*fee)
    )]
    InsufficientFunds { balance: Amount, pending_outgoing_count: usize, amount: Amount, fee: Amount },
    #[error("amount + fee overflows: {amount} + {fee} base units; nothing was sent")]
    AmountOverflow { amount: Amount, fee: Amount },
    #[error("transfer {id} is still {last} after {waited_s} s of waiting to be {target}; check again with `tinychain wallet status {id}`")]
    WaitTimedOut { id: Hash, target: WaitFor, last: TxState, waited_s: u64 },
    #[error(
        "transfer {id} was dropped: {}. {} {}",
        dropped.explanation(*nonce),
        dropped.consequence(),
        dropped.advice(*nonce)
    )]
    Dropped { id: Hash, nonce: Option<u64>, dropped: Box<Dropped> },
    #[error(
        "the node at {url} has not synced its mempool with its peers yet (it just started): it offered no \
         pending nonce within {} s, and a nonce taken from it now could collide with a transfer pending \
         elsewhere; nothing was sent. Try again in a moment, or use another node (--rpc)",
        seconds_text(*waited_ms)
    )]
    MempoolNotSynced { url: String, waited_ms: u64 },
    #[error("reading {what}: {source}")]
    Input { what: String, source: std::io::Error },
    #[error("{0}")]
    Refused(String),
}

/// A rejection's reason as `WalletError::Rejected` says it: the node's sentence, that nothing
/// was sent, and what to do where the reason tells (`code`, the error's `data.code`).
fn rejection_text(code: Option<&str>, message: &str) -> String {
    let nothing_added = "this command added nothing to its mempool";
    match code {
        Some(data_code::INSUFFICIENT_BALANCE | data_code::INSUFFICIENT_BALANCE_WITH_PENDING) => format!(
            "insufficient funds: {message}; {nothing_added}. The node counts the account's pending transfers \
             too: check what it can still spend with `tinychain wallet balance`"
        ),
        Some(data_code::NONCE_USED | data_code::REPLACEMENT_FEE_TOO_LOW) => format!(
            "{message}; {nothing_added}. Another transfer from this key took the nonce meanwhile (a send \
             from elsewhere?): run the command again, it signs with the next free nonce"
        ),
        Some(data_code::FEE_TOO_LOW | data_code::MEMPOOL_FULL) => format!(
            "{message}; {nothing_added}. Send again with a higher fee (`--fee auto` follows the node's estimate)"
        ),
        Some(data_code::JOURNAL_FULL) => {
            format!("{message}; {nothing_added}. Retry after some blocks, or send through another node (--rpc)")
        }
        _ => format!("{message}; {nothing_added}"),
    }
}

/// Milliseconds as seconds for a message: "15", "0.25".
fn seconds_text(milliseconds: u64) -> String {
    let whole = milliseconds / 1_000;
    let fraction = milliseconds % 1_000;
    if fraction == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{:03}", fraction).trim_end_matches('0').to_string()
    }
}

fn pending_note(count: usize) -> String {
    match count {
        0 => String::new(),
        1 => " (after 1 pending transfer)".to_string(),
        n => format!(" (after {n} pending transfers)"),
    }
}

// ---- Amounts, fees, addresses, ids -------------------------------------------------------------

/// Parses an amount to send: TC with up to 8 decimals, exactly, and more than 0.
pub fn parse_send_amount(argument: &str, text: &str) -> Result<Amount, WalletError> {
    let amount =
        parse_amount(text).map_err(|reason| WalletError::BadAmount { argument: argument.to_string(), reason })?;
    if amount == 0 {
        return Err(WalletError::ZeroAmount { argument: argument.to_string() });
    }
    Ok(amount)
}

/// How the fee of a transfer is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeeChoice {
    /// The node's `estimate_fee` at the time of sending.
    Auto,
    /// Exactly this many base units.
    Fixed(Amount),
}

/// Parses `--fee`: `"auto"` or an amount in TC (0 is allowed: the chain's minimum fee may be 0).
pub fn parse_fee(argument: &str, text: &str) -> Result<FeeChoice, WalletError> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(FeeChoice::Auto);
    }
    parse_amount(text).map(FeeChoice::Fixed).map_err(|reason| WalletError::BadFee {
        argument: argument.to_string(),
        text: text.to_string(),
        reason,
    })
}

/// Parses an address argument, checking its bech32m checksum; the error names `argument`.
pub fn parse_address(argument: &str, text: &str) -> Result<Address, WalletError> {
    text.trim().parse().map_err(|reason| WalletError::BadAddress { argument: argument.to_string(), reason })
}

/// Whether a command-line word is meant as an address rather than a key name, decided by shape
/// alone: "tc1" followed by more characters than a key name may hold (an address is 62). Such a
/// word is then parsed as an address, so a typo in it fails the checksum instead of being looked
/// up as a key name.
pub fn looks_like_address(text: &str) -> bool {
    let text = text.trim();
    text.len() > keystore::KEY_NAME_CHARS_MAX && text.to_ascii_lowercase().starts_with("tc1")
}

/// Parses a transfer id: 64 hex characters.
pub fn parse_tx_id(argument: &str, text: &str) -> Result<Hash, WalletError> {
    let text = text.trim();
    let bad = |detail: String| WalletError::BadTxId { argument: argument.to_string(), text: text.to_string(), detail };
    if text.len() != 64 {
        return Err(bad(format!("an id is 64 hex characters, this has {}", text.len())));
    }
    Hash::from_hex(text).map_err(|error| bad(format!("not hex: {error}")))
}

/// Builds and signs a transfer (the signature covers `codec::transfer_signing_bytes`).
pub fn build_transfer(key: &Keypair, chain_id: &str, to: Address, amount: Amount, fee: Amount, nonce: u64) -> Transfer {
    tinychain_core::validate::sign_transfer(key, chain_id, to, amount, fee, nonce)
}

// ---- The wallet directory and its keys ---------------------------------------------------------

/// One key of a wallet, as listed (no secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    pub name: String,
    pub address: Address,
}

/// Picks the key a command acts for: `name` if given; else the only key; else the key called
/// `DEFAULT_KEY_NAME`; else an error listing the names.
pub fn select_key(keystore: &Keystore, name: Option<&str>) -> Result<KeyEntry, WalletError> {
    if let Some(name) = name {
        return Ok(KeyEntry { name: name.to_string(), address: keystore.address(name)? });
    }
    let entries = keystore.entries();
    match entries.as_slice() {
        [] => Err(WalletError::NoKeys { path: keystore.path().to_path_buf() }),
        [(name, address)] => Ok(KeyEntry { name: name.clone(), address: *address }),
        _ => match entries.iter().find(|(name, _)| name == DEFAULT_KEY_NAME) {
            Some((name, address)) => Ok(KeyEntry { name: name.clone(), address: *address }),
            None => Err(WalletError::AmbiguousKey {
                path: keystore.path().to_path_buf(),
                names: entries.into_iter().map(|(name, _)| name).collect(),
            }),
        },
    }
}

/// What `new_key` and `import_key` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedKey {
    pub key: KeyEntry,
    /// The wallet file, and whether this call created it.
    pub wallet_file: PathBuf,
    pub created_wallet: bool,
}

fn open_or_create(dir: &Path) -> Result<(Keystore, bool), WalletError> {
    if Keystore::exists(dir) {
        Ok((Keystore::open(dir)?, false))
    } else {
        Ok((Keystore::create(dir)?, true))
    }
}

/// `wallet new`: generates a key called `name` in the wallet at `dir` (created if missing),
/// sealed under the passphrase `passphrase` returns (asked only after the name is known to be
/// free, so a typo does not cost a passphrase prompt).
pub fn new_key(
    dir: &Path,
    name: &str,
    passphrase: impl FnOnce() -> Result<Zeroizing<String>, KeystoreError>,
) -> Result<AddedKey, WalletError> {
    check_name_is_free(dir, name)?;
    let passphrase = passphrase()?;
    let (mut keystore, created_wallet) = open_or_create(dir)?;
    let address = keystore.generate(name, &passphrase)?;
    Ok(AddedKey {
        key: KeyEntry { name: name.to_string(), address },
        wallet_file: keystore.path().to_path_buf(),
        created_wallet,
    })
}

/// `wallet import`: seals the secret `secret_hex` (64 hex digits) as a new key called `name`.
pub fn import_key(
    dir: &Path,
    name: &str,
    secret_hex: &str,
    passphrase: impl FnOnce() -> Result<Zeroizing<String>, KeystoreError>,
) -> Result<AddedKey, WalletError> {
    check_name_is_free(dir, name)?;
    let passphrase = passphrase()?;
    let (mut keystore, created_wallet) = open_or_create(dir)?;
    let address = keystore.import_hex(name, secret_hex, &passphrase)?;
    Ok(AddedKey {
        key: KeyEntry { name: name.to_string(), address },
        wallet_file: keystore.path().to_path_buf(),
        created_wallet,
    })
}

/// Refuses a bad or taken key name before any passphrase is asked for. The keystore checks
/// again when it writes.
fn check_name_is_free(dir: &Path, name: &str) -> Result<(), WalletError> {
    let valid = (1..=keystore::KEY_NAME_CHARS_MAX).contains(&name.len())
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-');
    if !valid {
        return Err(KeystoreError::BadName { name: name.to_string() }.into());
    }
    if Keystore::exists(dir) {
        let keystore = Keystore::open(dir)?;
        if keystore.entries().iter().any(|(existing, _)| existing == name) {
            return Err(
                KeystoreError::DuplicateName { path: keystore.path().to_path_buf(), name: name.to_string() }.into()
            );
        }
    }
    Ok(())
}

/// `wallet list`: the keys in file order.
pub fn list_keys(dir: &Path) -> Result<Vec<KeyEntry>, WalletError> {
    let keystore = Keystore::open(dir)?;
    Ok(keystore.entries().into_iter().map(|(name, address)| KeyEntry { name, address }).collect())
}

/// `wallet address [NAME]`.
pub fn key_address(dir: &Path, name: Option<&str>) -> Result<KeyEntry, WalletError> {
    select_key(&Keystore::open(dir)?, name)
}

/// `wallet export`: the secret of the key called `name` (or the selected key) as 64 hex digits.
pub fn export_key(
    dir: &Path,
    name: Option<&str>,
    passphrase: impl FnOnce() -> Result<Zeroizing<String>, KeystoreError>,
) -> Result<(KeyEntry, Zeroizing<String>), WalletError> {
    let keystore = Keystore::open(dir)?;
    let key = select_key(&keystore, name)?;
    let passphrase = passphrase()?;
    let secret = keystore.export_hex(&key.name, &passphrase)?;
    Ok((key, secret))
}

/// Who a read-only command (`balance`, `history`) is about: an address typed on the command
/// line, or a key of the wallet.
pub fn resolve_account(
    dir: &Path,
    argument: &str,
    given: Option<&str>,
) -> Result<(Address, Option<String>), WalletError> {
    match given {
        Some(text) if looks_like_address(text) => Ok((parse_address(argument, text)?, None)),
        other => {
            let key = select_key(&Keystore::open(dir)?, other)?;
            Ok((key.address, Some(key.name)))
        }
    }
}

// ---- The node's answers, as the wallet reads them ----------------------------------------------

// The answer types are `tinychain-rpc`'s, the node's own; these two are part of this crate's API.
pub use tinychain_rpc::{Direction, TxState};

/// What a `dropped` answer of `get_tx` says; an error naming what is missing when it leaves out
/// what the node must send, and `None` for any other status.
fn dropped_of(answer: &TxAnswer) -> Result<Option<Dropped>, String> {
    if answer.status != TxState::Dropped {
        return Ok(None);
    }
    // The three fields come together (`TxDropped`): the answer lacks at least one of them.
    let dropped = answer.dropped.as_ref().ok_or_else(|| {
        concat!(
            "status \"dropped\" without \"reason\", \"message\" or \"dropped_at_height\" ",
            "(a dropped answer carries all three)"
        )
        .to_string()
    })?;
    Ok(Some(Dropped {
        reason: DropReason::from_name(&dropped.reason),
        message: dropped.message.clone(),
        by: dropped.by,
        by_height: dropped.by_height,
        dropped_at_height: dropped.dropped_at_height,
    }))
}

/// Why the node let go of a pending transfer (`get_tx`'s `reason`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A committed block used the transfer's sender and nonce for another transfer (`by`).
    NonceTaken,
    /// The sender's committed nonce moved past it, through a transfer the node cannot name.
    NonceUsed,
    /// A transfer with the same sender and nonce and a higher fee (`by`) replaced it.
    Replaced,
    /// The sender's balance no longer covers it after the sender's earlier transfers.
    Unaffordable,
    /// The node's mempool was full and `by` paid a higher fee for its room.
    Evicted,
    /// The node resubmitted it from its journal after a restart and its mempool refused it.
    RefusedAfterRestart,
    /// It was committed in a block a reorganisation abandoned, and the mempool refused it back.
    NotReadmitted,
    /// A reason this wallet does not know (from a newer node): shown through the node's message.
    Unrecognized(String),
}

impl DropReason {
    /// The reason named as the node names it.
    pub fn from_name(name: &str) -> DropReason {
        match name {
            "nonce_taken" => DropReason::NonceTaken,
            "nonce_used" => DropReason::NonceUsed,
            "replaced" => DropReason::Replaced,
            "unaffordable" => DropReason::Unaffordable,
            "evicted" => DropReason::Evicted,
            "refused_after_restart" => DropReason::RefusedAfterRestart,
            "not_readmitted" => DropReason::NotReadmitted,
            other => DropReason::Unrecognized(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            DropReason::NonceTaken => "nonce_taken",
            DropReason::NonceUsed => "nonce_used",
            DropReason::Replaced => "replaced",
            DropReason::Unaffordable => "unaffordable",
            DropReason::Evicted => "evicted",
            DropReason::RefusedAfterRestart => "refused_after_restart",
            DropReason::NotReadmitted => "not_readmitted",
            DropReason::Unrecognized(name) => name,
        }
    }
}

/// What the node says about a transfer it dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub reason: DropReason,
    /// The node's own sentence for it.
    pub message: String,
    /// The transfer that took its place (`NonceTaken`, `Replaced`, `Evicted`).
    pub by: Option<Hash>,
    /// The height of the block holding `by` (`NonceTaken`).
    pub by_height: Option<Height>,
    /// The node's tip height when it dropped the transfer.
    pub dropped_at_height: Height,
}

impl Dropped {
    /// Why the transfer (whose nonce is `nonce`, when the node sent the transfer) was dropped,
    /// as a sentence without its final period: built from the structured fields, so every
    /// reason reads the same whichever node answered; the node's own message where the fields
    /// do not say enough (a reason only the node can word, or a field it left out).
    pub fn explanation(&self, nonce: Option<u64>) -> String {
        let its_nonce = match nonce {
            Some(nonce) => format!("its nonce {nonce}"),
            None => "its nonce".to_string(),
        };
        // The node's words reach a terminal: no control characters, and not megabytes.
        let node_message = || {
            let printable: String = self.message.chars().filter(|c| !c.is_control()).collect();
            shorten(&printable).trim_end_matches('.').to_string()
        };
        match (&self.reason, self.by, self.by_height) {
            (DropReason::NonceTaken, Some(by), Some(height)) => {
                format!("{its_nonce} was taken by transfer {by} (committed at height {height})")
            }
            (DropReason::NonceTaken, Some(by), None) => format!("{its_nonce} was taken by transfer {by}"),
            (DropReason::NonceUsed, _, _) => {
                format!("{its_nonce} was used by another committed transfer from the same account")
            }
            (DropReason::Replaced, Some(by), _) => format!(
                "it was replaced by transfer {by}, which has the same sender and nonce{} and a higher fee",
                nonce.map(|nonce| format!(" ({nonce})")).unwrap_or_default()
            ),
            (DropReason::Unaffordable, _, _) => {
                "the account's balance no longer covers it after the account's earlier transfers".to_string()
            }
            (DropReason::Evicted, Some(by), _) => {
                format!("the node's mempool was full and transfer {by} paid a higher fee for its room")
            }
            _ => node_message(),
        }
    }

    /// What the drop means for the money, as a full sentence. A transfer whose nonce a committed
    /// transfer used can never be committed. Any other drop is this node's: a node that still
    /// held the transfer could in principle include it (`get_tx` would then say `committed`), so
    /// the sentence says what makes a second payment impossible instead: a new send through this
    /// node takes the same nonce (its `pending_nonce` stops at the gap the drop left), and a
    /// nonce is committed once. (Through a node that still holds the dropped transfer, a new
    /// send would take the next nonce, and both could be committed.)
    pub fn consequence(&self) -> &'static str {
        match self.reason {
            DropReason::NonceTaken | DropReason::NonceUsed => {
                "This transfer will never be committed; nothing was spent by it."
            }
            DropReason::Replaced => {
                "Its replacement holds its nonce, so at most one of the two can be committed; nothing was \
                 spent by this one."
            }
            DropReason::Unrecognized(_) => "The node has let go of it; nothing was spent by it.",
            DropReason::Unaffordable
            | DropReason::Evicted
            | DropReason::RefusedAfterRestart
            | DropReason::NotReadmitted => {
                "The node has let go of it and nothing was spent by it; a new send through this node takes \
                 the same nonce, so this transfer and the new one can never both be committed."
            }
        }
    }

    /// What the user can do about it, as one or two full sentences.
    pub fn advice(&self, nonce: Option<u64>) -> String {
        let send_again = "If the payment is still needed, send it again: a new send takes the next free nonce.";
        match (&self.reason, self.by) {
            (DropReason::NonceTaken, Some(by)) => format!(
                "Transfer {by} came from the same account (a nonce is used once), most likely an earlier send \
                 of yours; check it with `tinychain wallet status {by}`. {send_again}"
            ),
            (DropReason::NonceTaken | DropReason::NonceUsed, _) => {
                let which = nonce.map(|nonce| format!(" with nonce {nonce}")).unwrap_or_default();
                format!("Find the committed transfer{which} in `tinychain wallet history`. {send_again}")
            }
            (DropReason::Replaced, by) => format!(
                "You, or someone else holding this key, sent a higher-fee replacement{}. If nobody with your \
                 key did, the key may be compromised: move the coins to a new key.",
                by.map(|by| format!(": follow it with `tinychain wallet status {by}`")).unwrap_or_default()
            ),
            (DropReason::Unaffordable, _) => {
                "Check what the account can still spend with `tinychain wallet balance`, then send again an \
                 amount it covers."
                    .to_string()
            }
            (DropReason::Evicted, _) => {
                "The node's mempool was full: send it again with a higher fee (`--fee auto` follows the \
                 node's estimate)."
                    .to_string()
            }
            (DropReason::RefusedAfterRestart | DropReason::NotReadmitted, _) => {
                "If the payment is still needed, send it again once what the node's reason names is put right."
                    .to_string()
            }
            (DropReason::Unrecognized(_), _) => send_again.to_string(),
        }
    }
}

// ---- Balance -----------------------------------------------------------------------------------

/// An account's state at one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountAtHeight {
    pub height: Height,
    pub balance: Amount,
    /// The nonce the account's next committed transfer must carry.
    pub nonce: u64,
}

/// One pending transfer from the account, as counted against its pending balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingOutgoing {
    pub id: Hash,
    pub nonce: u64,
    pub amount: Amount,
    pub fee: Amount,
    pub is_to_self: bool,
}

impl PendingOutgoing {
    /// What the transfer takes from the balance once committed.
    pub fn cost(&self) -> Amount {
        if self.is_to_self {
            self.fee
        } else {
            self.amount.saturating_add(self.fee)
        }
    }
}

/// `wallet balance`: see the module docs for what each figure means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balance {
    pub address: Address,
    pub final_state: AccountAtHeight,
    pub tip_state: AccountAtHeight,
    /// The pending outgoing transfers counted (nonce at least `tip_state.nonce`).
    pub pending_outgoing: Vec<PendingOutgoing>,
    /// `tip_state.balance` minus the cost of `pending_outgoing` (never below 0).
    pub pending_balance: Amount,
    /// The nonce the next transfer will carry (`get_account`'s `pending_nonce`); `None` while
    /// the node has not synced its mempool with its peers (it just started). Until then the
    /// node may also not know every pending transfer counted in `pending_balance`.
    pub pending_nonce: Option<u64>,
}

/// The pending balance: `tip_balance` minus the cost of each pending outgoing transfer whose
/// nonce is at least `tip_nonce` (a lower one was committed after the pending list was read).
/// Returns the transfers counted and the balance.
pub fn pending_balance(
    tip_balance: Amount,
    tip_nonce: u64,
    pending: &[PendingOutgoing],
) -> (Vec<PendingOutgoing>, Amount) {
    let counted: Vec<PendingOutgoing> =
        pending.iter().copied().filter(|transfer| transfer.nonce >= tip_nonce).collect();
    let spent = counted.iter().fold(0u64, |total, transfer| total.saturating_add(transfer.cost()));
    (counted, tip_balance.saturating_sub(spent))
}

fn pending_outgoing_of(history: &HistoryAnswer) -> Vec<PendingOutgoing> {
    history
        .pending
        .iter()
        .filter(|item| item.direction != Direction::In)
        .map(|item| PendingOutgoing {
            id: item.id,
            nonce: item.nonce,
            amount: item.amount,
            fee: item.fee,
            is_to_self: item.direction == Direction::ToSelf,
        })
        .collect()
}

/// The tip state and pending figures, read in the order the module docs give.
fn tip_and_pending(
    client: &RpcClient,
    address: &Address,
) -> Result<(AccountAnswer, Vec<PendingOutgoing>, Amount), WalletError> {
    // The pending list comes with the first page whatever its limit: ask for one committed entry.
    let history = client.get_history(address, 1, None)?;
    let tip = client.get_account(address, AccountAt::Tip)?;
    let (counted, balance) = pending_balance(tip.balance, tip.nonce, &pending_outgoing_of(&history));
    Ok((tip, counted, balance))
}

/// `wallet balance`.
pub fn balance(client: &RpcClient, address: &Address) -> Result<Balance, WalletError> {
    let (tip, pending_outgoing, pending_balance) = tip_and_pending(client, address)?;
    let final_answer = client.get_account(address, AccountAt::Final)?;
    Ok(Balance {
        address: *address,
        final_state: AccountAtHeight {
            height: final_answer.height,
            balance: final_answer.balance,
            nonce: final_answer.nonce,
        },
        tip_state: AccountAtHeight { height: tip.height, balance: tip.balance, nonce: tip.nonce },
        pending_outgoing,
        pending_balance,
        pending_nonce: tip.pending_nonce,
    })
}

// ---- Send --------------------------------------------------------------------------------------

/// How `send` waits for a node that answers `pending_nonce: null` (it has just started and not
/// yet fetched its peers' pending transfers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MempoolSyncWait {
    /// Give up (`MempoolNotSynced`, nothing sent) once this has passed without a nonce.
    pub timeout: Duration,
    /// Ask the node again this often.
    pub poll_interval: Duration,
}

/// The pending nonce and the pending figures, once the node offers a nonce: while it
/// answers `pending_nonce: null`, calls `on_sync_wait` (once) and asks again every
/// `poll_interval` until `timeout`. Each attempt re-reads the pending list too, since a node
/// without a nonce also lacks some of its peers' pending transfers.
fn tip_and_pending_once_synced(
    client: &RpcClient,
    address: &Address,
    sync_wait: MempoolSyncWait,
    on_sync_wait: impl FnOnce(),
) -> Result<(u64, Vec<PendingOutgoing>, Amount), WalletError> {
    let started = Instant::now();
    let mut on_sync_wait = Some(on_sync_wait);
    loop {
        let (tip, pending_outgoing, pending_balance) = tip_and_pending(client, address)?;
        if let Some(pending_nonce) = tip.pending_nonce {
            return Ok((pending_nonce, pending_outgoing, pending_balance));
        }
        if let Some(on_sync_wait) = on_sync_wait.take() {
            on_sync_wait();
        }
        let waited = started.elapsed();
        if waited >= sync_wait.timeout {
            return Err(WalletError::MempoolNotSynced {
                url: client.url().to_string(),
                waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            });
        }
        std::thread::sleep(sync_wait.poll_interval.min(sync_wait.timeout - waited));
    }
}

/// What to send, every field already checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRequest {
    /// The key to send from (see `select_key`).
    pub from: Option<String>,
    pub to: Address,
    pub amount: Amount,
    pub fee: FeeChoice,
}

/// A transfer the node admitted to its mempool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub id: Hash,
    pub key_name: String,
    pub transfer: Transfer,
    /// The pending balance before this transfer, and after it.
    pub pending_balance_before: Amount,
    pub pending_balance_after: Amount,
}

/// `wallet send`: checks the funds against the pending balance, asks for the passphrase, signs
/// with the next nonce and submits. A node that has not synced its mempool yet is waited for as
/// `sync_wait` says, `on_sync_wait` being called once when that wait begins. See the module docs
/// for what each failure leaves behind.
pub fn send(
    client: &RpcClient,
    dir: &Path,
    request: &SendRequest,
    sync_wait: MempoolSyncWait,
    on_sync_wait: impl FnOnce(),
    passphrase: impl FnOnce() -> Result<Zeroizing<String>, KeystoreError>,
) -> Result<Sent, WalletError> {
    let keystore = Keystore::open(dir)?;
    let key_entry = select_key(&keystore, request.from.as_deref())?;
    let status = client.status()?;
    let (pending_nonce, pending_outgoing, pending_balance_before) =
        tip_and_pending_once_synced(client, &key_entry.address, sync_wait, on_sync_wait)?;
    let fee = match request.fee {
        FeeChoice::Fixed(fee) => fee,
        FeeChoice::Auto => client.estimate_fee()?.fee,
    };
    let cost = request.amount.checked_add(fee).ok_or(WalletError::AmountOverflow { amount: request.amount, fee })?;
    if cost > pending_balance_before {
        return Err(WalletError::InsufficientFunds {
            balance: pending_balance_before,
            pending_outgoing_count: pending_outgoing.len(),
            amount: request.amount,
            fee,
        });
    }
    let passphrase = passphrase()?;
    let key = keystore.key(&key_entry.name, &passphrase)?;
    drop(passphrase);
    let transfer = build_transfer(&key, &status.chain_id, request.to, request.amount, fee, pending_nonce);
    let id = transfer_id(&transfer);
    let answer = client.submit_tx(&transfer)?;
    if answer.id != id {
        return Err(WalletError::BadAnswer {
            url: client.url().to_string(),
            method: Method::SubmitTx.to_string(),
            detail: format!("the node admitted id {}, but the transfer signed here has id {id}", answer.id),
        });
    }
    // A transfer to yourself spends only its fee (the amount comes back), though the node requires
    // amount + fee to be covered when it is sent.
    let spent = if transfer.to == transfer.from { transfer.fee } else { cost };
    let pending_balance_after = pending_balance_before - spent;
    Ok(Sent { id, key_name: key_entry.name, transfer, pending_balance_before, pending_balance_after })
}

// ---- Status and waiting ------------------------------------------------------------------------

/// `wallet status`: where a transfer is, as the node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxStatus {
    pub id: Hash,
    pub state: TxState,
    /// The block holding it (committed or final).
    pub height: Option<Height>,
    pub block_hash: Option<Hash>,
    /// Tip height − block height + 1 (committed or final).
    pub confirmations: Option<u64>,
    /// The transfer itself, unless unknown.
    pub transfer: Option<Transfer>,
    /// Why and when the node dropped it (status `dropped` only).
    pub dropped: Option<Dropped>,
}

/// `wallet status TXID`.
pub fn tx_status(client: &RpcClient, id: &Hash) -> Result<TxStatus, WalletError> {
    let answer = client.get_tx(id)?;
    let dropped = dropped_of(&answer).map_err(|detail| WalletError::BadAnswer {
        url: client.url().to_string(),
        method: "get_tx".to_string(),
        detail,
    })?;
    Ok(TxStatus {
        id: *id,
        state: answer.status,
        height: answer.block.map(|block| block.height),
        block_hash: answer.block.map(|block| block.block_hash),
        confirmations: answer.block.map(|block| block.confirmations),
        transfer: answer.transfer.map(|with_id| with_id.transfer),
        dropped,
    })
}

/// How far `send --wait` waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// In a canonical block.
    Committed,
    /// In a final block.
    Final,
}

impl std::fmt::Display for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WaitFor::Committed => "committed",
            WaitFor::Final => "final",
        })
    }
}

/// Whether `state` satisfies `target`.
pub fn is_reached(state: TxState, target: WaitFor) -> bool {
    match target {
        WaitFor::Committed => matches!(state, TxState::Committed | TxState::Final),
        WaitFor::Final => state == TxState::Final,
    }
}

/// Polls `get_tx` until the transfer is `target` or `timeout` passes; `on_change` sees each new
/// state as it is observed. A transfer the node dropped will never get there: the wait ends at
/// once with `WalletError::Dropped`.
pub fn wait_for_status(
    client: &RpcClient,
    id: &Hash,
    target: WaitFor,
    timeout: Duration,
    mut on_change: impl FnMut(&TxStatus),
) -> Result<TxStatus, WalletError> {
    let started = Instant::now();
    let mut last: Option<TxState> = None;
    loop {
        let status = tx_status(client, id)?;
        if last != Some(status.state) {
            on_change(&status);
            last = Some(status.state);
        }
        if is_reached(status.state, target) {
            return Ok(status);
        }
        if let Some(dropped) = status.dropped {
            let nonce = status.transfer.as_ref().map(|transfer| transfer.nonce);
            return Err(WalletError::Dropped { id: *id, nonce, dropped: Box::new(dropped) });
        }
        if started.elapsed() >= timeout {
            return Err(WalletError::WaitTimedOut { id: *id, target, last: status.state, waited_s: timeout.as_secs() });
        }
        std::thread::sleep(WAIT_POLL_INTERVAL);
    }
}

// ---- History -----------------------------------------------------------------------------------

/// One transfer in an account's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub id: Hash,
    pub direction: Direction,
    /// The other account (the account itself for a transfer to itself).
    pub counterparty: Address,
    pub amount: Amount,
    pub fee: Amount,
    pub nonce: u64,
    /// `None` while pending.
    pub height: Option<Height>,
    /// In a block at or below the final height read with the history.
    pub is_final: bool,
}

/// `wallet history`: pending transfers first, then committed ones newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    pub address: Address,
    pub final_height: Height,
    pub tip_height: Height,
    /// The pending transfers (newest first), then at most `limit` committed ones, newest first.
    pub entries: Vec<HistoryEntry>,
    /// Whether older committed transfers exist beyond those listed.
    pub has_more: bool,
}

/// `wallet history`: the pending transfers, then up to `limit` committed transfers, newest
/// first. The node's pages never split a block, so this asks for further pages
/// (`before_height`) until it has `limit` transfers or there are no more.
pub fn history(client: &RpcClient, address: &Address, limit: usize) -> Result<History, WalletError> {
    if !(1..=HISTORY_LIMIT_MAX).contains(&limit) {
        return Err(WalletError::BadLimit { limit });
    }
    let status = client.status()?;
    let final_height = status.finalized.height;
    let entry_of = |item: &HistoryTransfer| HistoryEntry {
        id: item.id,
        direction: item.direction,
        counterparty: item.counterparty,
        amount: item.amount,
        fee: item.fee,
        nonce: item.nonce,
        height: item.height,
        is_final: item.height.is_some_and(|height| height <= final_height),
    };
    let first = client.get_history(address, limit, None)?;
    // Pending ones come sorted by (sender, nonce): newest last; the wallet shows newest first.
    let mut entries: Vec<HistoryEntry> = first.pending.iter().rev().map(entry_of).collect();
    let mut committed: Vec<HistoryEntry> = first.transfers.iter().map(entry_of).collect();
    let mut next_before_height = first.next_before_height;
    // Every full page holds at least one transfer, so `limit` pages always suffice.
    let mut pages_left = limit;
    while committed.len() < limit && pages_left > 0 {
        let Some(before_height) = next_before_height else { break };
        let page = client.get_history(address, limit, Some(before_height))?;
        if page.transfers.is_empty() {
            next_before_height = None;
            break;
        }
        committed.extend(page.transfers.iter().map(entry_of));
        next_before_height = page.next_before_height;
        pages_left -= 1;
    }
    let has_more = match next_before_height {
        _ if committed.len() > limit => true,
        // A full page says where the next would start, not whether it holds anything.
        Some(before_height) => !client.get_history(address, 1, Some(before_height))?.transfers.is_empty(),
        None => false,
    };
    committed.truncate(limit);
    entries.extend(committed);
    Ok(History { address: *address, final_height, tip_height: status.tip.height, entries, has_more })
}

#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
#[allow(clippy::unwrap_used)] // test support: a broken fixture should stop the test at once
pub mod testing {
    //! A fake node and a test wallet, for the tests of this crate and of the `tinychain wallet`
    //! command line (feature `testing`; not part of the API).
    use super::*;
    use serde_json::{json, Value};
    use tinychain_core::types::Checkpoint;
    use tinychain_rpc::{FeeAnswer, StatusAnswer, Tip};

    /// A fake node on loopback: answers each JSON-RPC call with `answer(method, params)`
    /// (`Some(Ok(result))`, `Some(Err(node_error(..)))`, or `None` to close the connection
    /// without answering), and records the methods called.
    pub struct FakeNode {
        pub url: String,
        pub calls: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    }

    pub type FakeAnswer = Option<Result<Value, Value>>;

    /// A JSON-RPC error object: `code`, `message` and, when given, `data.code`.
    pub fn node_error(code: i64, message: &str, data_code: Option<&str>) -> Value {
        let mut error = json!({ "code": code, "message": message });
        if let Some(data_code) = data_code {
            error["data"] = json!({ "code": data_code });
        }
        error
    }

    pub fn fake_node(answer: impl Fn(&str, &Value) -> FakeAnswer + Send + 'static) -> FakeNode {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut content_length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        content_length = value.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0u8; content_length];
                reader.read_exact(&mut body).unwrap();
                let request: Value = serde_json::from_slice(&body).unwrap();
                let method = request["method"].as_str().unwrap().to_string();
                recorded.lock().unwrap().push(method.clone());
                let reply = match answer(&method, &request["params"]) {
                    None => continue,
                    Some(Ok(result)) => json!({ "jsonrpc": "2.0", "id": request["id"], "result": result }),
                    Some(Err(error)) => json!({ "jsonrpc": "2.0", "id": request["id"], "error": error }),
                };
                let text = reply.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        FakeNode { url, calls }
    }

    /// `status`'s answer of a node on chain `chain_id` with its tip at `tip_height` and its final
    /// block at `final_height`; every other field empty.
    pub fn status_answer(chain_id: &str, tip_height: Height, final_height: Height) -> Value {
        serde_json::to_value(StatusAnswer {
            chain_id: chain_id.to_string(),
            tip: Tip { height: tip_height, ..Tip::default() },
            finalized: Checkpoint { height: final_height, ..Checkpoint::default() },
            ..StatusAnswer::default()
        })
        .unwrap()
    }

    /// `estimate_fee`'s answer: `fee` in base units, every other field empty.
    pub fn fee_answer(fee: Amount) -> Value {
        serde_json::to_value(FeeAnswer { fee, ..FeeAnswer::default() }).unwrap()
    }

    /// A transfer as the node's answers carry it: its fields plus its `id`.
    pub fn transfer_answer(transfer: &Transfer) -> Value {
        let mut value = serde_json::to_value(transfer).unwrap();
        value["id"] = json!(transfer_id(transfer));
        value
    }

    /// `get_tx`'s answer for a transfer the node dropped, as `docs/rpc.md` gives it.
    pub fn dropped_answer(
        transfer: &Transfer,
        reason: &str,
        message: &str,
        by: Option<Hash>,
        by_height: Option<Height>,
        dropped_at_height: Height,
    ) -> Value {
        json!({
            "id": transfer_id(transfer),
            "status": "dropped",
            "reason": reason,
            "message": message,
            "by": by,
            "by_height": by_height,
            "dropped_at_height": dropped_at_height,
            "transfer": transfer_answer(transfer),
        })
    }

    /// A wallet in `dir` holding one key, "main", sealed under "pw".
    pub fn wallet_with_one_key(dir: &Path) -> Keypair {
        let key = Keypair::from_secret_bytes(&[5; 32]);
        let mut keystore = Keystore::create(dir).unwrap();
        keystore.add_with_params("main", &key, "pw", crate::keystore::KdfParams::INSECURE_FAST).unwrap();
        key
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::amount::format_tc;
    use serde_json::{json, Value};
    use std::sync::atomic::Ordering;
    use tinychain_core::codec;
    use tinychain_core::crypto::verify_strict;
    use tinychain_core::types::UNITS_PER_COIN;

    #[test]
    fn amounts_display_exactly_in_tc() {
        let cases: &[(Amount, &str)] = &[
            (0, "0 TC"),
            (1, "0.00000001 TC"),
            (150_000_000, "1.5 TC"),
            (10 * UNITS_PER_COIN, "10 TC"),
            (123_456_789, "1.23456789 TC"),
            (u64::MAX, "184467440737.09551615 TC"),
        ];
        for (amount, text) in cases {
            assert_eq!(format_tc(*amount), *text);
        }
        assert_eq!(parse_send_amount("AMOUNT", "1.5").unwrap(), 150_000_000);
        assert_eq!(parse_send_amount("AMOUNT", "0.00000001").unwrap(), 1);
        // 0.1 + 0.2 in floating point is not 0.3; here it is exact.
        assert_eq!(parse_send_amount("AMOUNT", "0.3").unwrap(), parse_send_amount("AMOUNT", "0.1").unwrap() * 3);
        let zero = parse_send_amount("AMOUNT", "0").unwrap_err().to_string();
        assert!(zero.starts_with("AMOUNT:") && zero.contains("0.00000001"), "{zero}");
        let too_precise = parse_send_amount("AMOUNT", "1.000000001").unwrap_err().to_string();
        assert!(too_precise.starts_with("AMOUNT:") && too_precise.contains("9 decimals"), "{too_precise}");
        for bad in ["1,5", "-1", "1e3", " 1", "abc", ""] {
            assert!(parse_send_amount("AMOUNT", bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn fees_are_auto_or_an_exact_amount() {
        assert_eq!(parse_fee("--fee", "auto").unwrap(), FeeChoice::Auto);
        assert_eq!(parse_fee("--fee", "AUTO").unwrap(), FeeChoice::Auto);
        assert_eq!(parse_fee("--fee", "0").unwrap(), FeeChoice::Fixed(0));
        assert_eq!(parse_fee("--fee", "0.0001").unwrap(), FeeChoice::Fixed(10_000));
        let error = parse_fee("--fee", "cheap").unwrap_err().to_string();
        assert!(error.starts_with("--fee:") && error.contains("\"auto\"") && error.contains("cheap"), "{error}");
        assert!(parse_fee("--fee", "0.123456789").unwrap_err().to_string().contains("decimals"));
        assert!(parse_fee("--fee", "-1").is_err());
    }

    #[test]
    fn a_mistyped_address_is_refused_naming_the_argument() {
        let address = Keypair::from_secret_bytes(&[3; 32]).address();
        let text = address.to_string();
        assert_eq!(parse_address("TO", &text).unwrap(), address);
        // Flip every character after "tc1" in turn: each typo must fail the checksum.
        for position in 3..text.len() {
            let mut typo: Vec<char> = text.chars().collect();
            typo[position] = if typo[position] == 'q' { 'p' } else { 'q' };
            let typo: String = typo.into_iter().collect();
            let error = parse_address("TO", &typo).unwrap_err().to_string();
            assert!(
                error.starts_with("TO:") && error.contains("checksum") && error.contains("nothing was sent"),
                "{error}"
            );
        }
        // Truncated or empty: refused too, naming the argument.
        assert!(parse_address("TO", &text[..text.len() - 1]).unwrap_err().to_string().starts_with("TO:"));
        assert!(parse_address("TO", "").unwrap_err().to_string().starts_with("TO:"));
        assert!(looks_like_address(&text));
        assert!(!looks_like_address("default"));
        assert!(!looks_like_address("tc1-key"));
    }

    #[test]
    fn tx_ids_are_64_hex_characters() {
        let id = Hash([0xab; 32]);
        assert_eq!(parse_tx_id("TXID", &id.to_string()).unwrap(), id);
        assert!(parse_tx_id("TXID", "abcd").unwrap_err().to_string().contains("64 hex"));
        assert!(parse_tx_id("TXID", &"zz".repeat(32)).unwrap_err().to_string().contains("not hex"));
    }

    #[test]
    fn a_built_transfer_is_signed_by_its_sender_and_encodes_for_submit_tx() {
        let key = Keypair::from_secret_bytes(&[7; 32]);
        let to = Keypair::from_secret_bytes(&[8; 32]).address();
        let transfer = build_transfer(&key, "tinychain-local", to, 150_000_000, 10_000, 4);
        assert_eq!(
            (transfer.from, transfer.to, transfer.amount, transfer.fee, transfer.nonce),
            (key.address(), to, 150_000_000, 10_000, 4)
        );
        assert!(verify_strict(&key.address(), &codec::transfer_signing_bytes(&transfer), &transfer.signature));
        // Any change to a signed field breaks the signature.
        let mut altered = transfer.clone();
        altered.amount += 1;
        assert!(!verify_strict(&key.address(), &codec::transfer_signing_bytes(&altered), &altered.signature));
        let mut other_chain = transfer.clone();
        other_chain.chain_id = "another-chain".into();
        assert!(!verify_strict(&key.address(), &codec::transfer_signing_bytes(&other_chain), &other_chain.signature));
        // What submit_tx decodes is exactly what was signed, and the id is over those bytes.
        let decoded: Transfer = codec::decode("transfer", &codec::encode(&transfer)).unwrap();
        assert_eq!(decoded, transfer);
        assert_eq!(transfer_id(&decoded), tinychain_core::crypto::hash_bytes(&codec::encode(&transfer)));
    }

    fn pending(nonce: u64, amount: Amount, fee: Amount, is_to_self: bool) -> PendingOutgoing {
        PendingOutgoing { id: Hash([nonce as u8; 32]), nonce, amount, fee, is_to_self }
    }

    #[test]
    fn pending_balance_subtracts_what_is_still_pending() {
        let list = [pending(3, 100, 1, false), pending(4, 50, 2, true), pending(5, 10, 0, false)];
        // All three pending: 1000 - 101 - 2 (to itself: only the fee) - 10.
        let (counted, balance) = pending_balance(1_000, 3, &list);
        assert_eq!((counted.len(), balance), (3, 887));
        // Nonce 3 was committed after the list was read: the tip already paid for it.
        let (counted, balance) = pending_balance(899, 4, &list);
        assert_eq!((counted.len(), balance), (2, 887));
        assert_eq!(pending_balance(5, 0, &list).1, 0, "never below 0");
        assert_eq!(pending_balance(42, 0, &[]), (vec![], 42));
    }

    #[test]
    fn insufficient_funds_names_balance_amount_and_fee() {
        let error = WalletError::InsufficientFunds {
            balance: 10 * UNITS_PER_COIN,
            pending_outgoing_count: 2,
            amount: 150_000_000,
            fee: 1,
        };
        assert_eq!(
            error.to_string(),
            "insufficient funds: balance 10 TC (after 2 pending transfers), sending 1.5 TC + fee 0.00000001 TC; nothing was sent"
        );
    }

    #[test]
    fn rpc_urls_are_checked_before_anything_is_sent() {
        assert!(RpcClient::new("http://127.0.0.1:7741").is_ok());
        assert!(RpcClient::new("https://node.example.org").unwrap_err().to_string().contains("https"));
        assert!(RpcClient::new("127.0.0.1:7741").unwrap_err().to_string().contains("http://HOST:PORT"));
        assert!(RpcClient::new("http://").unwrap_err().to_string().contains("host"));
    }

    #[test]
    fn a_node_that_is_down_is_named_with_its_url() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let client = RpcClient::new(&url).unwrap();
        let error = client.call("status", json!({})).unwrap_err();
        assert!(matches!(error, WalletError::Unreachable { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("cannot reach the node at {url}: connection refused; is it running? (--rpc)")
        );
    }

    #[test]
    fn the_key_used_is_the_named_one_the_only_one_or_default() {
        let dir = tempfile::tempdir().unwrap();
        let mut keystore = Keystore::create(dir.path()).unwrap();
        assert!(matches!(select_key(&keystore, None), Err(WalletError::NoKeys { .. })));
        let fast = crate::keystore::KdfParams::INSECURE_FAST;
        let alice = Keypair::from_secret_bytes(&[1; 32]);
        keystore.add_with_params("alice", &alice, "", fast).unwrap();
        assert_eq!(select_key(&keystore, None).unwrap().address, alice.address());
        keystore.add_with_params("bob", &Keypair::from_secret_bytes(&[2; 32]), "", fast).unwrap();
        let ambiguous = select_key(&keystore, None).unwrap_err().to_string();
        assert!(ambiguous.contains("alice, bob") && ambiguous.contains("--from"), "{ambiguous}");
        let unknown = select_key(&keystore, Some("carol")).unwrap_err().to_string();
        assert!(unknown.contains("carol") && unknown.contains("alice, bob"), "{unknown}");
        let default = Keypair::from_secret_bytes(&[3; 32]);
        keystore.add_with_params(DEFAULT_KEY_NAME, &default, "", fast).unwrap();
        assert_eq!(select_key(&keystore, None).unwrap().address, default.address());
        assert_eq!(select_key(&keystore, Some("alice")).unwrap().name, "alice");
        // An address given to a read-only command is used as is; a name goes through the wallet.
        let (address, name) = resolve_account(dir.path(), "ADDRESS", Some(&alice.address().to_string())).unwrap();
        assert_eq!((address, name), (alice.address(), None));
        let (address, name) = resolve_account(dir.path(), "ADDRESS", Some("bob")).unwrap();
        assert_eq!((address, name.as_deref()), (Keypair::from_secret_bytes(&[2; 32]).address(), Some("bob")));
    }

    #[test]
    fn a_taken_or_bad_name_is_refused_before_the_passphrase_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        let mut keystore = Keystore::create(dir.path()).unwrap();
        keystore
            .add_with_params(
                "alice",
                &Keypair::from_secret_bytes(&[1; 32]),
                "",
                crate::keystore::KdfParams::INSECURE_FAST,
            )
            .unwrap();
        let before = std::fs::read(keystore.path()).unwrap();
        let never = || -> Result<Zeroizing<String>, KeystoreError> { panic!("the passphrase must not be asked") };
        assert!(new_key(dir.path(), "alice", never).unwrap_err().to_string().contains("already exists"));
        assert!(new_key(dir.path(), "no spaces", never).unwrap_err().to_string().contains("not allowed"));
        assert!(import_key(dir.path(), "alice", &"11".repeat(32), never).is_err());
        assert_eq!(std::fs::read(keystore.path()).unwrap(), before);
    }

    /// A node whose chain holds `balance` for everyone, nothing pending, and whose `submit_tx`
    /// answers with `submit`.
    fn node_with(balance: Amount, submit: impl Fn() -> FakeAnswer + Send + 'static) -> FakeNode {
        fake_node(move |method, params| match method {
            "status" => Some(Ok(status_answer("fake", 9, 7))),
            "get_history" => Some(Ok(json!({
                "address": params["address"], "transfers": [], "pending": [], "next_before_height": null,
            }))),
            "get_account" => Some(Ok(json!({
                "address": params["address"], "at": params["at"], "height": 9, "balance": balance.to_string(),
                "nonce": 3, "pending_nonce": 3, "mempool_synced": true,
            }))),
            "estimate_fee" => Some(Ok(fee_answer(25))),
            "submit_tx" => submit(),
            _ => Some(Err(node_error(-32601, "method not found", None))),
        })
    }

    fn send_request(amount: Amount, fee: FeeChoice) -> SendRequest {
        SendRequest { from: None, to: Address([9; 32]), amount, fee }
    }

    /// `send` to a node that offers a pending nonce at once: it must never be waited for.
    fn send_to_synced(
        client: &RpcClient,
        dir: &Path,
        request: &SendRequest,
        passphrase: impl FnOnce() -> Result<Zeroizing<String>, KeystoreError>,
    ) -> Result<Sent, WalletError> {
        let never_waits = || panic!("a node that offers a pending nonce is not waited for");
        send(client, dir, request, MEMPOOL_SYNC_WAIT_DEFAULT, never_waits, passphrase)
    }

    #[test]
    fn a_send_the_node_accepts_carries_the_pending_nonce_and_the_estimated_fee() {
        let dir = tempfile::tempdir().unwrap();
        let key = wallet_with_one_key(dir.path());
        let expected = build_transfer(&key, "fake", Address([9; 32]), 1_000, 25, 3);
        let expected_id = transfer_id(&expected);
        // Amount plus the estimated fee is the whole balance, to the base unit: allowed.
        let node = node_with(1_025, move || Some(Ok(json!({ "id": expected_id }))));
        let client = RpcClient::new(&node.url).unwrap();
        let sent = send_to_synced(&client, dir.path(), &send_request(1_000, FeeChoice::Auto), || {
            Ok(Zeroizing::new("pw".into()))
        })
        .unwrap();
        assert_eq!(sent.transfer, expected);
        assert_eq!((sent.id, sent.pending_balance_before, sent.pending_balance_after), (expected_id, 1_025, 0));
        let calls = node.calls.lock().unwrap().clone();
        assert_eq!(calls, ["status", "get_history", "get_account", "estimate_fee", "submit_tx"]);
    }

    #[test]
    fn insufficient_funds_asks_no_passphrase_and_submits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        wallet_with_one_key(dir.path());
        let node = node_with(1_000, || panic!("nothing may be submitted"));
        let client = RpcClient::new(&node.url).unwrap();
        let never = || -> Result<Zeroizing<String>, KeystoreError> { panic!("the passphrase must not be asked") };
        let error = send_to_synced(&client, dir.path(), &send_request(990, FeeChoice::Fixed(11)), never).unwrap_err();
        assert!(
            matches!(error, WalletError::InsufficientFunds { balance: 1_000, amount: 990, fee: 11, .. }),
            "{error:?}"
        );
        // amount + fee beyond 64 bits is refused, never wrapped.
        let error =
            send_to_synced(&client, dir.path(), &send_request(u64::MAX, FeeChoice::Fixed(1)), never).unwrap_err();
        assert!(matches!(error, WalletError::AmountOverflow { .. }), "{error:?}");
        assert!(!node.calls.lock().unwrap().iter().any(|method| method == "submit_tx"));
    }

    #[test]
    fn the_nodes_rejection_is_shown_with_its_reason() {
        let dir = tempfile::tempdir().unwrap();
        wallet_with_one_key(dir.path());
        let node =
            node_with(10_000, || Some(Err(node_error(-32002, "transfer rejected: nonce 3 is already used", None))));
        let client = RpcClient::new(&node.url).unwrap();
        let error = send_to_synced(&client, dir.path(), &send_request(1_000, FeeChoice::Fixed(0)), || {
            Ok(Zeroizing::new("pw".into()))
        })
        .unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, WalletError::Rejected { .. }), "{error:?}");
        assert!(text.contains(&node.url) && text.contains(": nonce 3 is already used;"), "{text}");
    }

    /// The node's `data.code` reaches `WalletError::Rejected`, and the reasons a user can act on
    /// say what to do.
    #[test]
    fn a_rejection_carries_the_nodes_code_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        wallet_with_one_key(dir.path());
        let cases = [
            (Some(data_code::NONCE_USED), "nonce 3 was already used", "run the command again"),
            (
                Some(data_code::INSUFFICIENT_BALANCE_WITH_PENDING),
                "balance 10 cannot cover 1000",
                "insufficient funds: balance 10 cannot cover 1000; this command added nothing",
            ),
            (Some(data_code::INSUFFICIENT_BALANCE), "balance 10 is below", "tinychain wallet balance"),
            (Some(data_code::FEE_TOO_LOW), "fee 0 is below this node's minimum fee of 5", "with a higher fee"),
            (Some(data_code::JOURNAL_FULL), "this node's pending-transfer journal is full", "another node (--rpc)"),
            (Some(data_code::BAD_SIGNATURE), "transfer signature does not verify", "added nothing to its mempool"),
            (None, "a node without codes", "added nothing to its mempool"),
        ];
        for (code, message, says) in cases {
            let message_sent = format!("transfer rejected: {message}");
            let node = node_with(10_000, move || Some(Err(node_error(-32002, &message_sent, code))));
            let client = RpcClient::new(&node.url).unwrap();
            let error = send_to_synced(&client, dir.path(), &send_request(1_000, FeeChoice::Fixed(0)), || {
                Ok(Zeroizing::new("pw".into()))
            })
            .unwrap_err();
            let text = error.to_string();
            match &error {
                WalletError::Rejected { code: got, message: got_message, .. } => {
                    assert_eq!((got.as_deref(), got_message.as_str()), (code, message));
                }
                other => panic!("{code:?}: expected Rejected, got {other:?}"),
            }
            assert!(text.contains(says), "{code:?}: {says:?} is not in {text:?}");
        }
    }

    #[test]
    fn a_submit_without_an_answer_names_the_transfer_to_check() {
        let dir = tempfile::tempdir().unwrap();
        let key = wallet_with_one_key(dir.path());
        let node = node_with(10_000, || None);
        let client = RpcClient::new(&node.url).unwrap();
        let error = send_to_synced(&client, dir.path(), &send_request(1_000, FeeChoice::Fixed(0)), || {
            Ok(Zeroizing::new("pw".into()))
        })
        .unwrap_err();
        let id = transfer_id(&build_transfer(&key, "fake", Address([9; 32]), 1_000, 0, 3));
        assert!(matches!(error, WalletError::SubmitUncertain { id: reported, .. } if reported == id), "{error:?}");
        assert!(error.to_string().contains(&format!("tinychain wallet status {id}")), "{error}");
    }

    #[test]
    fn a_wrong_passphrase_is_found_before_anything_is_submitted() {
        let dir = tempfile::tempdir().unwrap();
        wallet_with_one_key(dir.path());
        let file = dir.path().join(crate::keystore::WALLET_FILE_NAME);
        let before = std::fs::read(&file).unwrap();
        let node = node_with(10_000, || panic!("nothing may be submitted"));
        let client = RpcClient::new(&node.url).unwrap();
        let error = send_to_synced(&client, dir.path(), &send_request(1, FeeChoice::Fixed(0)), || {
            Ok(Zeroizing::new("nope".into()))
        })
        .unwrap_err();
        assert!(matches!(error, WalletError::Keystore(KeystoreError::WrongPassphrase { .. })), "{error:?}");
        assert_eq!(std::fs::read(&file).unwrap(), before);
    }

    // ---- Dropped transfers and a node that has not synced its mempool ------------------------

    /// The transfer the tests' key signs with nonce 3 (`node_with`'s pending nonce).
    fn transfer_with_nonce_3(key: &Keypair) -> Transfer {
        build_transfer(key, "fake", Address([9; 32]), 1_000, 0, 3)
    }

    /// One row of the dropped-reason table: what the node answers, and what the wallet's
    /// sentences must then say.
    struct DropCase {
        reason: &'static str,
        by: Option<Hash>,
        by_height: Option<Height>,
        message: &'static str,
        says: Vec<String>,
    }

    #[test]
    fn a_dropped_transfer_says_why_and_what_to_do_naming_the_winner() {
        let key = Keypair::from_secret_bytes(&[5; 32]);
        let transfer = transfer_with_nonce_3(&key);
        let id = transfer_id(&transfer);
        let winner = Hash([0xee; 32]);
        let w = winner.to_string();
        let cases = vec![
            DropCase {
                reason: "nonce_taken",
                by: Some(winner),
                by_height: Some(812),
                message: "its nonce was taken by transfer ..., committed at height 812",
                says: vec![
                    format!("its nonce 3 was taken by transfer {w} (committed at height 812)"),
                    "This transfer will never be committed; nothing was spent by it.".into(),
                    format!("tinychain wallet status {w}"),
                ],
            },
            DropCase {
                reason: "nonce_used",
                by: None,
                by_height: None,
                message: "its nonce was used by another committed transfer",
                says: vec![
                    "its nonce 3 was used by another committed transfer from the same account".into(),
                    "This transfer will never be committed".into(),
                    "committed transfer with nonce 3 in `tinychain wallet history`".into(),
                ],
            },
            DropCase {
                reason: "replaced",
                by: Some(winner),
                by_height: None,
                message: "replaced by transfer ...",
                says: vec![
                    format!(
                        "it was replaced by transfer {w}, which has the same sender and nonce (3) and a higher fee"
                    ),
                    "at most one of the two can be committed".into(),
                    "You, or someone else holding this key, sent a higher-fee replacement".into(),
                    format!("tinychain wallet status {w}"),
                ],
            },
            DropCase {
                reason: "unaffordable",
                by: None,
                by_height: None,
                message: "the sender's balance no longer covers it",
                says: vec![
                    "the account's balance no longer covers it".into(),
                    "a new send through this node takes the same nonce".into(),
                    "tinychain wallet balance".into(),
                ],
            },
            DropCase {
                reason: "evicted",
                by: Some(winner),
                by_height: None,
                message: "the mempool was full and transfer ... paid a higher fee for its room",
                says: vec![
                    format!("the node's mempool was full and transfer {w} paid a higher fee for its room"),
                    "send it again with a higher fee".into(),
                ],
            },
            DropCase {
                reason: "refused_after_restart",
                by: None,
                by_height: None,
                message: "refused when the node resubmitted it after a restart: the fee is below the chain's minimum.",
                says: vec![
                    "refused when the node resubmitted it after a restart: the fee is below the chain's minimum. The"
                        .into(),
                    "once what the node's reason names is put right".into(),
                ],
            },
            DropCase {
                reason: "not_readmitted",
                by: None,
                by_height: None,
                message: "its block was abandoned in a reorganisation and the mempool refused it back: nonce 3 is used",
                says: vec!["its block was abandoned in a reorganisation".into(), "send it again".into()],
            },
            DropCase {
                reason: "a_reason_from_a_newer_node",
                by: Some(winner),
                by_height: None,
                message: "something new happened",
                says: vec!["something new happened. The node has let go of it".into()],
            },
        ];
        let answers: Vec<Value> = cases
            .iter()
            .map(|case| dropped_answer(&transfer, case.reason, case.message, case.by, case.by_height, 815))
            .collect();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let next = served.clone();
        let node = fake_node(move |method, _params| match method {
            "get_tx" => Some(Ok(answers[next.fetch_add(1, Ordering::SeqCst)].clone())),
            _ => Some(Err(node_error(-32601, "method not found", None))),
        });
        let client = RpcClient::new(&node.url).unwrap();
        for DropCase { reason, by, by_height, message, says } in &cases {
            let status = tx_status(&client, &id).unwrap();
            assert_eq!(status.state, TxState::Dropped, "{reason}");
            assert_eq!(status.transfer.as_ref(), Some(&transfer), "{reason}");
            let dropped = status.dropped.clone().expect("a dropped answer carries why");
            assert_eq!(dropped.reason.as_str(), *reason);
            assert_eq!((dropped.by, dropped.by_height, dropped.dropped_at_height), (*by, *by_height, 815), "{reason}");
            assert_eq!(dropped.message, *message);
            // `send --wait` ends with this error: the same sentences, after the transfer's id.
            let error = WalletError::Dropped { id, nonce: Some(3), dropped: Box::new(dropped) }.to_string();
            assert!(error.starts_with(&format!("transfer {id} was dropped: ")), "{error}");
            for text in says {
                assert!(error.contains(text.as_str()), "{reason}: {text:?} is not in {error:?}");
            }
        }
        assert_eq!(
            DropReason::from_name("a_reason_from_a_newer_node"),
            DropReason::Unrecognized("a_reason_from_a_newer_node".into())
        );
    }

    #[test]
    fn a_dropped_answer_without_its_reason_is_refused_as_not_understood() {
        let key = Keypair::from_secret_bytes(&[5; 32]);
        let transfer = transfer_with_nonce_3(&key);
        let mut answer = dropped_answer(&transfer, "nonce_taken", "taken", Some(Hash([1; 32])), Some(8), 9);
        answer.as_object_mut().unwrap().remove("reason");
        let node = fake_node(move |_method, _params| Some(Ok(answer.clone())));
        let client = RpcClient::new(&node.url).unwrap();
        let error = tx_status(&client, &transfer_id(&transfer)).unwrap_err();
        assert!(matches!(error, WalletError::BadAnswer { .. }), "{error:?}");
        assert!(error.to_string().contains("status \"dropped\" without \"reason\""), "{error}");
    }

    #[test]
    fn the_wait_ends_as_soon_as_the_node_drops_the_transfer() {
        let key = Keypair::from_secret_bytes(&[5; 32]);
        let transfer = transfer_with_nonce_3(&key);
        let id = transfer_id(&transfer);
        let winner = Hash([0xee; 32]);
        let pending = json!({ "id": id, "status": "pending", "transfer": transfer_answer(&transfer) });
        let dropped = dropped_answer(&transfer, "nonce_taken", "taken", Some(winner), Some(812), 812);
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        let node = fake_node(move |_method, _params| {
            let answer = if counter.fetch_add(1, Ordering::SeqCst) == 0 { &pending } else { &dropped };
            Some(Ok(answer.clone()))
        });
        let client = RpcClient::new(&node.url).unwrap();
        let mut seen = Vec::new();
        let error =
            wait_for_status(&client, &id, WaitFor::Final, Duration::from_secs(3_600), |status| seen.push(status.state))
                .unwrap_err();
        assert_eq!(seen, [TxState::Pending, TxState::Dropped]);
        match &error {
            WalletError::Dropped { id: reported, nonce, dropped } => {
                assert_eq!((*reported, *nonce, dropped.by), (id, Some(3), Some(winner)));
            }
            other => panic!("expected Dropped, got {other:?}"),
        }
        assert!(error.to_string().contains(&format!("taken by transfer {winner}")), "{error}");
        assert_eq!(asked.load(Ordering::SeqCst), 2, "no polling after the drop");
    }

    /// A node whose `get_account` answers `pending_nonce` with `pending_nonce(call number)`, whose
    /// pending list is `pending(call number)`, and which admits whatever is submitted.
    fn node_syncing(
        balance: Amount,
        pending_nonce: impl Fn(usize) -> Option<Value> + Send + 'static,
        pending: impl Fn(usize) -> Value + Send + 'static,
    ) -> FakeNode {
        let account_calls = std::sync::atomic::AtomicUsize::new(0);
        let history_calls = std::sync::atomic::AtomicUsize::new(0);
        fake_node(move |method, params| match method {
            "status" => Some(Ok(status_answer("fake", 9, 7))),
            "get_history" => {
                let call = history_calls.fetch_add(1, Ordering::SeqCst);
                Some(Ok(json!({
                    "address": params["address"], "transfers": [], "pending": pending(call), "next_before_height": null,
                })))
            }
            "get_account" => {
                let call = account_calls.fetch_add(1, Ordering::SeqCst);
                let mut answer = json!({
                    "address": params["address"], "at": params["at"], "height": 9, "balance": balance.to_string(),
                    "nonce": 3,
                });
                if let Some(pending_nonce) = pending_nonce(call) {
                    answer["pending_nonce"] = pending_nonce;
                    answer["mempool_synced"] = json!(!answer["pending_nonce"].is_null());
                }
                Some(Ok(answer))
            }
            "submit_tx" => {
                let bytes = hex::decode(params["tx"].as_str().unwrap()).unwrap();
                let transfer: Transfer = codec::decode("transfer", &bytes).unwrap();
                Some(Ok(json!({ "id": transfer_id(&transfer) })))
            }
            _ => Some(Err(node_error(-32601, "method not found", None))),
        })
    }

    #[test]
    fn a_pending_nonce_absent_or_null_is_not_known() {
        for (field, expected) in [(None, None), (Some(Value::Null), None), (Some(json!(5)), Some(5))] {
            let node = node_syncing(1_000, move |_| field.clone(), |_| json!([]));
            let client = RpcClient::new(&node.url).unwrap();
            let balance = balance(&client, &Address([1; 32])).unwrap();
            assert_eq!(balance.pending_nonce, expected);
            assert_eq!(balance.tip_state.nonce, 3);
        }
    }

    #[test]
    fn send_waits_while_the_node_syncs_its_mempool_then_uses_the_synced_nonce_and_balance() {
        let dir = tempfile::tempdir().unwrap();
        let key = wallet_with_one_key(dir.path());
        // Two answers without a nonce (and a mempool that has not yet learned of the account's
        // pending transfer with nonce 3), then the synced answers: nonce 4, 100 TC-units pending.
        let pending_transfer = json!([{
            "id": Hash([3; 32]), "direction": "out", "counterparty": Address([9; 32]),
            "amount": "100", "fee": "0", "nonce": 3,
        }]);
        let node = node_syncing(
            1_000,
            |call| Some(if call < 2 { Value::Null } else { json!(4) }),
            move |call| if call < 2 { json!([]) } else { pending_transfer.clone() },
        );
        let client = RpcClient::new(&node.url).unwrap();
        let mut notes = 0;
        let sync_wait =
            MempoolSyncWait { timeout: Duration::from_secs(3_600), poll_interval: Duration::from_millis(1) };
        let sent = send(
            &client,
            dir.path(),
            &send_request(800, FeeChoice::Fixed(0)),
            sync_wait,
            || notes += 1,
            || Ok(Zeroizing::new("pw".into())),
        )
        .unwrap();
        assert_eq!(notes, 1, "the user is told once");
        assert_eq!(sent.transfer, build_transfer(&key, "fake", Address([9; 32]), 800, 0, 4));
        // The pending balance is the synced one: the transfer the node learned of is counted.
        assert_eq!((sent.pending_balance_before, sent.pending_balance_after), (900, 100));
        let calls = node.calls.lock().unwrap().clone();
        assert_eq!(calls.iter().filter(|method| *method == "get_account").count(), 3);
        assert_eq!(calls.last().map(String::as_str), Some("submit_tx"));
    }

    #[test]
    fn send_to_a_node_that_stays_unsynced_gives_up_naming_the_node_and_sends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        wallet_with_one_key(dir.path());
        let node = node_syncing(1_000, |_| Some(Value::Null), |_| json!([]));
        let client = RpcClient::new(&node.url).unwrap();
        let never = || -> Result<Zeroizing<String>, KeystoreError> { panic!("the passphrase must not be asked") };
        let mut notes = 0;
        // A zero bound: one look, then the error (the real bound only changes how many looks).
        let sync_wait = MempoolSyncWait { timeout: Duration::ZERO, poll_interval: Duration::from_millis(1) };
        let error = send(&client, dir.path(), &send_request(1, FeeChoice::Fixed(0)), sync_wait, || notes += 1, never)
            .unwrap_err();
        assert!(matches!(&error, WalletError::MempoolNotSynced { url, .. } if *url == node.url), "{error:?}");
        let text = error.to_string();
        assert!(text.starts_with(&format!("the node at {} has not synced its mempool", node.url)), "{text}");
        assert!(text.contains("nothing was sent") && text.contains("--rpc"), "{text}");
        assert_eq!(notes, 1);
        assert_eq!(*node.calls.lock().unwrap(), ["status", "get_history", "get_account"]);
        // A bound that passes while polling ends the same way, having looked more than once.
        let node = node_syncing(1_000, |_| Some(Value::Null), |_| json!([]));
        let client = RpcClient::new(&node.url).unwrap();
        let sync_wait = MempoolSyncWait { timeout: Duration::from_millis(30), poll_interval: Duration::from_millis(1) };
        let error =
            send(&client, dir.path(), &send_request(1, FeeChoice::Fixed(0)), sync_wait, || {}, never).unwrap_err();
        assert!(matches!(error, WalletError::MempoolNotSynced { .. }), "{error:?}");
        assert!(!node.calls.lock().unwrap().iter().any(|method| method == "submit_tx"));
    }

    #[test]
    fn waited_seconds_read_plainly() {
        assert_eq!(seconds_text(15_000), "15");
        assert_eq!(seconds_text(250), "0.25");
        assert_eq!(seconds_text(15_004), "15.004");
    }
}
