//! What the driver is asked over RPC, as typed values (`Request`: a read-only `Query`, a
//! `Command`, or one of the two monitoring routes), and the pure functions that answer the
//! read-only ones from the core `Node`, the `Storage` and what only the driver knows
//! (`LiveInfo`). The schema itself (method names, params, answer types) is `tinychain-rpc`'s.
//!
//! Contract:
//! - `rpc` turns every JSON-RPC call into a `Request` with `parse_request`, which checks every
//!   parameter (by name in an object or by position in an array) and names the one that is
//!   wrong, then sends it to the driver as a `Call` over a bounded channel.
//! - The driver carries out a `Command` itself (`submit_tx`, `add_peer`, `remove_peer`: they
//!   have side effects) and answers a `Query` by calling `answer` (`GET /health` and
//!   `GET /metrics` by calling `health` and `metrics`) inside its loop, between two events, so
//!   an answer sees one consistent state of the node and its storage.
//! - `answer` never mutates and never panics on any query: a missing block or transfer is
//!   `QueryError::NotFound`, a storage failure `QueryError::Internal`. Its work is bounded:
//!   list lengths by the `*_LIMIT_MAX` constants; an account at "final" comes from the core's
//!   in-memory undo data (`Node::account_at_final`), not from disk.
//! - Mempool readiness: until the core `is_mempool_synced` (its first exchange of pending
//!   transfers with a supermajority of validators since start, or the bounded wait), `status`
//!   says `syncing` and `get_account` gives no `pending_nonce`: the node's own pool may lack
//!   transfers its peers hold, and a nonce counted from it could already be taken.
//! - `get_tx` looks in the order a transfer's fate is decided: the chain (committed, final),
//!   then the mempool (pending), then the drop records (dropped), else unknown.
//!
//! - Evidence and jail: `get_block` lists a block's evidence (kind, offender, offence height and
//!   the ids of the two signed objects: block hashes or report ids); `get_election` gives each
//!   candidate's `jailed_until` and `produced_in_window` beside the cap; `status` and `metrics`
//!   count the evidence the node holds and name the validators jailed for the next block.
//!
//! Every answer is one of `tinychain-rpc`'s answer types, serialised to a `serde_json::Value`
//! (so its keys go out in alphabetical order). `docs/rpc.md` shows every answer.

use crate::storage::{Storage, StorageError, TxLocation};
use crate::telemetry::{Figures, PeerFigures, ValidatorFigures};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use tinychain_core::codec;
use tinychain_core::election::{eligible_at_ms, Candidate, Demotion};
use tinychain_core::mempool::{DropReason, DroppedTransfer};
use tinychain_core::node::{Node, TxRejection};
use tinychain_core::types::{Address, Block, Checkpoint, Evidence, Hash, Height, MetricReport, NodeId, Transfer};
use tinychain_core::validate::{block_hash, evidence_id, report_id, transfer_id};
use tinychain_net::discovery::PeerAddr;
use tinychain_net::handle::NetError;
use tinychain_rpc::{
    data_code, AccountAnswer, BlockAnswer, ConnectedPeer, Direction, ElectionAnswer, ElectionCandidate,
    ElectionDemotion, EvidenceAnswer, EvidenceHeader, EvidenceObjects, EvidenceReport, FeeAnswer, HeaderAnswer,
    HealthAnswer, HealthStatus, HistoryAnswer, HistoryTransfer, JailedValidator, MempoolAnswer, Method, MissedTurn,
    NextProducer, PeersAnswer, ProducedBlock, ReportWithId, StatusAnswer, Tip, TransferWithId, TransfersDropped,
    TxAnswer, TxDropped, TxInBlock, TxState, UnconnectedValidator, ValidatorName, HISTORY_LIMIT_DEFAULT,
    HISTORY_LIMIT_MAX, MEMPOOL_LIMIT_DEFAULT, MEMPOOL_LIMIT_MAX, SUBMIT_TXS_MAX, TRANSFER_BYTES_MAX,
};
use tokio::sync::oneshot;

pub use tinychain_rpc::{AccountAt, BlockSelector, MetricSample, Query};

/// Recent block intervals `LiveInfo::record_block_committed` keeps.
pub const BLOCK_INTERVALS_KEPT: usize = 64;

/// A method call that changes the node, its peer address checked by the transport's rule.
pub type Command = tinychain_rpc::Command<PeerAddr>;

/// What the driver is asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A read-only method: `answer`.
    Query(Query),
    /// `submit_tx`, `add_peer`, `remove_peer`: carried out by the driver. A submit steps the
    /// core with `Event::TxSubmitted` and is answered `{"id": hex}` on `TxAccepted`,
    /// `QueryError::Rejected` on `TxRejected`; a peer address goes to `NetHandle`.
    Command(Command),
    /// `GET /health`: `health`.
    Health,
    /// `GET /metrics`: the driver hands `metrics`' figures to its `telemetry::Telemetry`, which
    /// `rpc` then encodes; the answer itself is `null`.
    Metrics,
}

/// Why a request got no answer. `rpc` answers each with a JSON-RPC error code and, as
/// `data.code`, `data_code` (`docs/rpc.md`, "Error codes").
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A parameter is missing, of the wrong type or out of range: -32602. The text names it.
    #[error("{0}")]
    InvalidParams(String),
    /// The block, height or transfer asked for does not exist: -32001.
    #[error("{0}")]
    NotFound(String),
    /// `submit_tx`: the core did not admit the transfer: -32002.
    #[error("transfer rejected: {0}")]
    Rejected(#[source] TxRejection),
    /// `submit_tx` refused before the core saw it, the pending-transfer journal being full:
    /// -32002. The transfer is in no mempool, so sending it again later (or elsewhere) is safe.
    #[error(
        "transfer rejected: this node's pending-transfer journal is full ({held} of {max}); retry after some blocks"
    )]
    JournalFull { held: usize, max: usize },
    /// Reading the database failed: -32603.
    #[error("internal error: reading the database failed: {source}")]
    Storage { source: StorageError },
    /// `add_peer`/`remove_peer`: the transport has stopped: -32603.
    #[error("internal error: {source}")]
    Transport { source: NetError },
    /// The driver has stopped taking calls: -32603.
    #[error("internal error: the node is shutting down")]
    ShuttingDown,
    /// The driver dropped the call without answering (it stopped meanwhile): -32603.
    #[error("internal error: the node dropped the request without answering")]
    NotAnswered,
    /// The driver did not answer within the server's bound: -32603.
    #[error("internal error: the node did not answer in time")]
    TimedOut,
    /// What should not happen (the database contradicting itself, no verdict on a transfer):
    /// -32603.
    #[error("internal error: {0}")]
    Internal(String),
}

impl QueryError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i32 {
        use tinychain_rpc::code;
        match self {
            QueryError::InvalidParams(_) => code::INVALID_PARAMS,
            QueryError::NotFound(_) => code::NOT_FOUND,
            QueryError::Rejected(_) | QueryError::JournalFull { .. } => code::TX_REJECTED,
            QueryError::Storage { .. }
            | QueryError::Transport { .. }
            | QueryError::ShuttingDown
            | QueryError::NotAnswered
            | QueryError::TimedOut
            | QueryError::Internal(_) => code::INTERNAL_ERROR,
        }
    }

    /// The stable name of why, for clients (`error.data.code`).
    pub fn data_code(&self) -> &'static str {
        match self {
            QueryError::InvalidParams(_) => data_code::INVALID_PARAMS,
            QueryError::NotFound(_) => data_code::NOT_FOUND,
            QueryError::Rejected(rejection) => rejection.code(),
            QueryError::JournalFull { .. } => data_code::JOURNAL_FULL,
            QueryError::Storage { .. } => data_code::STORAGE_FAILED,
            QueryError::Transport { .. } => data_code::TRANSPORT_STOPPED,
            QueryError::ShuttingDown => data_code::SHUTTING_DOWN,
            QueryError::NotAnswered => data_code::NOT_ANSWERED,
            QueryError::TimedOut => data_code::TIMED_OUT,
            QueryError::Internal(_) => data_code::INTERNAL,
        }
    }
}

/// A request on its way to the driver, and where its answer goes.
#[derive(Debug)]
pub struct Call {
    pub request: Request,
    pub reply: oneshot::Sender<Result<Value, QueryError>>,
}

/// One connected peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    pub id: NodeId,
    /// Its name in the genesis file, if it is a validator there.
    pub name: Option<String>,
    /// The address the link runs over, when the transport knows it.
    pub addr: Option<String>,
}

/// What only the driver knows. Plain data: the driver updates the fields as events happen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveInfo {
    /// The latest metric sample the node measured (per mille of the last window) and its
    /// score, `None` before the first one.
    pub metrics: Option<MetricSample>,
    /// The peers with an authenticated link now.
    pub peers: Vec<PeerInfo>,
    pub rpc_listen: Option<SocketAddr>,
    pub p2p_listen: Option<SocketAddr>,
    /// When this run of the node started (unix ms).
    pub started_at_ms: u64,
    /// Wall-clock time between the last committed blocks (ms), oldest first, at most
    /// `BLOCK_INTERVALS_KEPT`.
    pub block_intervals_ms: VecDeque<u64>,
    /// Blocks committed at rank > 0 since start: the producers ahead of them missed their turn.
    pub timeouts_fired: u64,
    /// Blocks committed since start.
    pub blocks_committed: u64,
    /// When the last block was committed (unix ms), `None` before the first since start.
    pub last_block_at_ms: Option<u64>,
    /// Pending transfers dropped since start, by `DropReason::kind`.
    pub transfers_dropped: BTreeMap<&'static str, u64>,
    /// Pieces of evidence committed by blocks this node made canonical since start (a piece a
    /// reorganisation commits again counts again).
    pub evidence_committed: u64,
}

impl LiveInfo {
    /// Records one committed block (`TraceEvent::BlockCommitted`) at wall time `now_ms`.
    pub fn record_block_committed(&mut self, now_ms: u64, rank: u32) {
        if let Some(last_ms) = self.last_block_at_ms {
            if self.block_intervals_ms.len() >= BLOCK_INTERVALS_KEPT {
                self.block_intervals_ms.pop_front();
            }
            self.block_intervals_ms.push_back(now_ms.saturating_sub(last_ms));
        }
        self.last_block_at_ms = Some(now_ms);
        self.blocks_committed = self.blocks_committed.saturating_add(1);
        if rank > 0 {
            self.timeouts_fired = self.timeouts_fired.saturating_add(1);
        }
    }

    /// Counts one dropped pending transfer (`Action::TxDropped`, or a journal entry settled at restart).
    pub fn record_transfer_dropped(&mut self, reason: &DropReason) {
        let count = self.transfers_dropped.entry(reason.kind()).or_default();
        *count = count.saturating_add(1);
    }

    /// Counts one piece of evidence committed (`TraceEvent::EvidenceCommitted`).
    pub fn record_evidence_committed(&mut self) {
        self.evidence_committed = self.evidence_committed.saturating_add(1);
    }

    /// Pending transfers dropped since start, every reason.
    pub fn transfers_dropped_total(&self) -> u64 {
        self.transfers_dropped.values().fold(0, |total, count| total.saturating_add(*count))
    }
}

/// What `answer` reads.
pub struct QueryContext<'a> {
    pub node: &'a Node,
    pub storage: &'a Storage,
    pub live: &'a LiveInfo,
}

// ---- parsing -------------------------------------------------------------------------------

/// Turns a JSON-RPC method and its params (an object by name, an array by position, or `null`
/// when absent) into a `Request`.
pub fn parse_request(method: Method, params: &Value) -> Result<Request, QueryError> {
    let params_of = || Params::new(method, params);
    let query = match method {
        Method::Status => params_of().map(|_| Query::Status)?,
        Method::GetBlock => Query::GetBlock(parse_block_selector(method, params)?),
        Method::GetHeader => Query::GetHeader(parse_block_selector(method, params)?),
        Method::GetTx => Query::GetTx { id: params_of()?.hash(0)? },
        Method::GetAccount => {
            let p = params_of()?;
            Query::GetAccount { address: p.address(0)?, at: p.account_at(1)? }
        }
        Method::GetHistory => {
            let p = params_of()?;
            Query::GetHistory {
                address: p.address(0)?,
                limit: p.limit(1, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX)?,
                before_height: p.optional_height(2)?,
            }
        }
        Method::GetMempool => {
            Query::GetMempool { limit: params_of()?.limit(0, MEMPOOL_LIMIT_DEFAULT, MEMPOOL_LIMIT_MAX)? }
        }
        Method::GetElection => Query::GetElection { height: params_of()?.optional_height(0)? },
        Method::GetPeers => params_of().map(|_| Query::GetPeers)?,
        Method::EstimateFee => params_of().map(|_| Query::EstimateFee)?,
        Method::SubmitTx => return Ok(Request::Command(Command::SubmitTx { tx: params_of()?.transfer(0)? })),
        Method::SubmitTxs => return Ok(Request::Command(Command::SubmitTxs { txs: params_of()?.transfers(0)? })),
        Method::AddPeer => return Ok(Request::Command(Command::AddPeer { addr: params_of()?.peer_addr(0)? })),
        Method::RemovePeer => return Ok(Request::Command(Command::RemovePeer { addr: params_of()?.peer_addr(0)? })),
    };
    Ok(Request::Query(query))
}

/// A method's params with the names they have by position.
struct Params<'a> {
    names: &'static [&'static str],
    value: &'a Value,
}

/// A short, printable form of a client's value for error messages (never echo megabytes).
fn shown(value: &Value) -> String {
    const SHOWN_CHARS_MAX: usize = 80;
    let text = value.to_string();
    if text.chars().count() <= SHOWN_CHARS_MAX {
        text
    } else {
        let cut: String = text.chars().take(SHOWN_CHARS_MAX).collect();
        format!("{cut}...")
    }
}

/// A transfer from the hex of its encoding, or why not.
fn decode_transfer_hex(text: &str) -> Result<Transfer, String> {
    let hex_chars_max = usize::try_from(TRANSFER_BYTES_MAX * 2).expect("a small constant fits in usize");
    if text.len() > hex_chars_max {
        return Err(format!(
            "{} hex characters is more than a transfer can take ({TRANSFER_BYTES_MAX} bytes)",
            text.len()
        ));
    }
    let bytes = hex::decode(text).map_err(|error| format!("not hex: {error}"))?;
    codec::decode_limited::<Transfer>("transfer", &bytes, TRANSFER_BYTES_MAX).map_err(|error| error.to_string())
}

fn invalid(text: String) -> QueryError {
    QueryError::InvalidParams(text)
}

impl<'a> Params<'a> {
    fn new(method: Method, value: &'a Value) -> Result<Params<'a>, QueryError> {
        let names = method.param_names();
        let expected = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        match value {
            Value::Null => {}
            Value::Object(map) => {
                if let Some(unknown) = map.keys().find(|key| !names.contains(&key.as_str())) {
                    return Err(invalid(format!("{method} has no param {unknown:?}; its params are: {expected}")));
                }
            }
            Value::Array(items) => {
                if items.len() > names.len() {
                    return Err(invalid(format!(
                        "{method} takes at most {} positional params ({expected}), got {}",
                        names.len(),
                        items.len()
                    )));
                }
            }
            other => {
                return Err(invalid(format!(
                    "{method}: params must be an object (by name) or an array (by position), got {}",
                    shown(other)
                )))
            }
        }
        Ok(Params { names, value })
    }

    /// The param at `index` (its name in an object, its position in an array); JSON `null`
    /// counts as absent.
    fn get(&self, index: usize) -> Option<&'a Value> {
        let found = match self.value {
            Value::Object(map) => map.get(self.names[index]),
            Value::Array(items) => items.get(index),
            _ => None,
        };
        found.filter(|value| !value.is_null())
    }

    fn name(&self, index: usize) -> &'static str {
        self.names[index]
    }

    fn required(&self, index: usize) -> Result<&'a Value, QueryError> {
        self.get(index).ok_or_else(|| invalid(format!("missing param {:?}", self.name(index))))
    }

    fn string(&self, index: usize, what: &str) -> Result<&'a str, QueryError> {
        let value = self.required(index)?;
        value.as_str().ok_or_else(|| {
            invalid(format!("param {:?}: expected {what} as a string, got {}", self.name(index), shown(value)))
        })
    }

    fn hash(&self, index: usize) -> Result<Hash, QueryError> {
        let text = self.string(index, "64 hex characters")?;
        parse_hash(text).map_err(|reason| invalid(format!("param {:?}: {reason}", self.name(index))))
    }

    fn address(&self, index: usize) -> Result<Address, QueryError> {
        let text = self.string(index, "an address (tc1...)")?;
        text.parse::<Address>().map_err(|error| invalid(format!("param {:?}: {error}", self.name(index))))
    }

    fn account_at(&self, index: usize) -> Result<AccountAt, QueryError> {
        let Some(value) = self.get(index) else {
            return Ok(AccountAt::Tip);
        };
        match value.as_str() {
            Some("tip") => Ok(AccountAt::Tip),
            Some("final") => Ok(AccountAt::Final),
            _ => Err(invalid(format!(
                "param {:?}: expected \"tip\" or \"final\", got {}",
                self.name(index),
                shown(value)
            ))),
        }
    }

    fn optional_height(&self, index: usize) -> Result<Option<Height>, QueryError> {
        let Some(value) = self.get(index) else {
            return Ok(None);
        };
        value.as_u64().map(Some).ok_or_else(|| {
            invalid(format!(
                "param {:?}: expected a block height (a non-negative integer), got {}",
                self.name(index),
                shown(value)
            ))
        })
    }

    fn limit(&self, index: usize, default: usize, max: usize) -> Result<usize, QueryError> {
        let Some(value) = self.get(index) else {
            return Ok(default);
        };
        match value.as_u64().and_then(|limit| usize::try_from(limit).ok()) {
            Some(limit) if (1..=max).contains(&limit) => Ok(limit),
            _ => Err(invalid(format!(
                "param {:?}: expected an integer from 1 to {max}, got {}",
                self.name(index),
                shown(value)
            ))),
        }
    }

    fn transfer(&self, index: usize) -> Result<Transfer, QueryError> {
        let name = self.name(index);
        let text = self.string(index, "the hex of a signed transfer's encoding")?;
        decode_transfer_hex(text).map_err(|reason| invalid(format!("param {name:?}: {reason}")))
    }

    /// An array of at most `SUBMIT_TXS_MAX` transfers, each as `transfer` reads one; an error
    /// names the first bad one by its position.
    fn transfers(&self, index: usize) -> Result<Vec<Transfer>, QueryError> {
        let name = self.name(index);
        let Value::Array(items) = self.required(index)? else {
            return Err(invalid(format!("param {name:?}: expected an array of hex-encoded transfers")));
        };
        if items.is_empty() || items.len() > SUBMIT_TXS_MAX {
            return Err(invalid(format!(
                "param {name:?}: {} transfers; a call takes 1 to {SUBMIT_TXS_MAX}",
                items.len()
            )));
        }
        items
            .iter()
            .enumerate()
            .map(|(position, item)| {
                let text = item.as_str().ok_or_else(|| {
                    invalid(format!("param {name:?}[{position}]: expected the hex of a signed transfer's encoding"))
                })?;
                decode_transfer_hex(text).map_err(|reason| invalid(format!("param {name:?}[{position}]: {reason}")))
            })
            .collect()
    }

    fn peer_addr(&self, index: usize) -> Result<PeerAddr, QueryError> {
        let name = self.name(index);
        let text = self.string(index, "host:port")?;
        crate::config::check_host_port(text).map_err(|reason| invalid(format!("param {name:?}: {reason}")))
    }
}

fn parse_hash(text: &str) -> Result<Hash, String> {
    if text.len() != 64 {
        return Err(format!("expected 64 hex characters, got {} characters", text.len()));
    }
    Hash::from_hex(text).map_err(|error| format!("not hex: {error}"))
}

/// `get_block` / `get_header`: `{"height": n}` or `{"hash": hex}` by name, `[n]` or `[hex]` by
/// position.
fn parse_block_selector(method: Method, params: &Value) -> Result<BlockSelector, QueryError> {
    let selector_of = |value: &Value| -> Result<BlockSelector, QueryError> {
        if let Some(height) = value.as_u64() {
            return Ok(BlockSelector::Height(height));
        }
        if let Some(text) = value.as_str() {
            return parse_hash(text)
                .map(BlockSelector::Hash)
                .map_err(|reason| invalid(format!("param \"hash\": {reason}")));
        }
        Err(invalid(format!(
            "{method}: expected a block height (a non-negative integer) or a block hash (64 hex characters), got {}",
            shown(value)
        )))
    };
    match params {
        Value::Array(items) if items.len() == 1 => selector_of(&items[0]),
        Value::Array(items) => {
            Err(invalid(format!("{method} takes one positional param (a height or a hash), got {}", items.len())))
        }
        Value::Object(_) => {
            let named = Params::new(method, params)?;
            match (named.get(0), named.get(1)) {
                (Some(_), Some(_)) => Err(invalid(format!("{method}: give \"height\" or \"hash\", not both"))),
                (Some(_), None) => {
                    Ok(BlockSelector::Height(named.optional_height(0)?.expect("the height param is present")))
                }
                (None, Some(_)) => Ok(BlockSelector::Hash(named.hash(1)?)),
                (None, None) => Err(invalid(format!("{method}: missing param \"height\" or \"hash\""))),
            }
        }
        Value::Null => Err(invalid(format!("{method}: missing param \"height\" or \"hash\""))),
        other => Err(invalid(format!(
            "{method}: params must be an object (by name) or an array (by position), got {}",
            shown(other)
        ))),
    }
}

// ---- answers -------------------------------------------------------------------------------

/// Answers a read-only method. Pure: reads `context`, changes nothing.
pub fn answer(context: &QueryContext<'_>, query: &Query) -> Result<Value, QueryError> {
    Ok(match query {
        Query::Status => to_json(&status(context)),
        Query::GetBlock(selector) => {
            let (block, hash) = canonical_block(context, selector)?;
            to_json(&block_answer(context, &block, hash))
        }
        Query::GetHeader(selector) => {
            let (block, hash) = canonical_block(context, selector)?;
            to_json(&header_answer(context, &block, hash))
        }
        Query::GetTx { id } => to_json(&get_tx(context, id)?),
        Query::GetAccount { address, at } => to_json(&get_account(context, address, *at)),
        Query::GetHistory { address, limit, before_height } => {
            to_json(&get_history(context, address, *limit, *before_height)?)
        }
        Query::GetMempool { limit } => to_json(&get_mempool(context, *limit)),
        Query::GetElection { height } => to_json(&get_election(context, *height)?),
        Query::GetPeers => to_json(&get_peers(context)),
        Query::EstimateFee => to_json(&estimate_fee(context)),
    })
}

/// `GET /health`'s answer when the driver answers at all.
pub fn health(context: &QueryContext<'_>) -> HealthAnswer {
    HealthAnswer {
        status: HealthStatus::Ok,
        height: context.node.tip().height,
        peers: context.node.connected_peers().len(),
    }
}

fn storage_failed(source: StorageError) -> QueryError {
    QueryError::Storage { source }
}

/// The JSON of an answer. serde_json only fails on maps with non-string keys, which no answer
/// type has.
pub fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("answer types have a JSON form")
}

fn validator_name(context: &QueryContext<'_>, id: &NodeId) -> Option<String> {
    context.node.genesis().validator_name(id).map(str::to_string)
}

fn status(context: &QueryContext<'_>) -> StatusAnswer {
    let node = context.node;
    let genesis = node.genesis();
    let tip = node.tip();
    let behind_a_peer =
        node.peer_tips().iter().any(|(_, advertised)| advertised.is_some_and(|peer_tip| peer_tip.height > tip.height));
    let syncing = behind_a_peer || !node.is_mempool_synced();
    let next_producer = node.next_election().first().map(|candidate| NextProducer {
        node_id: candidate.node,
        name: validator_name(context, &candidate.node),
        eligible_at_ms: eligible_at_ms(&genesis.parameters, node.state().tip_timestamp_ms, 0),
    });
    let live = context.live;
    StatusAnswer {
        chain_id: genesis.chain_id.clone(),
        genesis_hash: node.genesis_hash(),
        node_id: node.node_id(),
        name: validator_name(context, &node.node_id()),
        is_validator: genesis.validator_index(&node.node_id()).is_some(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        tip: Tip { height: tip.height, hash: tip.hash, timestamp_ms: node.state().tip_timestamp_ms },
        justified: node.finality().justified,
        finalized: node.finalized(),
        peers: node.connected_peers().len(),
        mempool_size: node.mempool().len(),
        syncing,
        mempool_synced: node.is_mempool_synced(),
        mempool_synced_peers: node.mempool_synced_peers(),
        journal_transfers: context.storage.journal_len(),
        evidence_held: node.evidence().count(),
        evidence_pending: node.pending_evidence(),
        evidence_offenders: node
            .evidence_offenders()
            .iter()
            .map(|offender| ValidatorName { node_id: *offender, name: validator_name(context, offender) })
            .collect(),
        jailed_validators: jailed_validators(context)
            .into_iter()
            .map(|(id, until_height)| JailedValidator { node_id: id, name: validator_name(context, &id), until_height })
            .collect(),
        transfers_dropped: TransfersDropped {
            total: live.transfers_dropped_total(),
            by_reason: live.transfers_dropped.iter().map(|(reason, count)| (reason.to_string(), *count)).collect(),
        },
        metrics: live.metrics,
        next_producer,
        started_at_ms: live.started_at_ms,
        rpc_listen: live.rpc_listen.map(|addr| addr.to_string()),
        p2p_listen: live.p2p_listen.map(|addr| addr.to_string()),
        blocks_committed: live.blocks_committed,
        timeouts_fired: live.timeouts_fired,
        last_block_at_ms: live.last_block_at_ms,
    }
}

/// The validators jailed for the block after the tip, in genesis order, with the last height
/// of their jail.
fn jailed_validators(context: &QueryContext<'_>) -> Vec<(NodeId, Height)> {
    let node = context.node;
    let next_height = node.tip().height.saturating_add(1);
    node.genesis()
        .validators
        .iter()
        .zip(&node.state().validators)
        .filter(|(_, record)| record.is_jailed_at(next_height))
        .filter_map(|(validator, record)| record.jailed_until.map(|until_height| (validator.id, until_height)))
        .collect()
}

/// The height an offence happened at, as `validate::check_evidence` defines it: the blocks'
/// height, the equal target height, or the outer vote's target height. `None` for a vote pair
/// without votes, which no valid evidence is.
pub fn offence_height(evidence: &Evidence) -> Option<Height> {
    match evidence {
        Evidence::DoubleProduction { first, .. } => Some(first.height),
        Evidence::DoubleVote { first, .. } => first.vote.map(|vote| vote.target.height),
        Evidence::SurroundVote { outer, .. } => outer.vote.map(|vote| vote.target.height),
    }
}

/// The two signed objects of a piece of evidence, by their role in it (`first`/`second`, or
/// `outer`/`inner`) and their id: the block hash of a header, the report id of a report.
pub fn evidence_objects(evidence: &Evidence) -> [(&'static str, Hash); 2] {
    match evidence {
        Evidence::DoubleProduction { first, second } => [("first", block_hash(first)), ("second", block_hash(second))],
        Evidence::DoubleVote { first, second } => [("first", report_id(first)), ("second", report_id(second))],
        Evidence::SurroundVote { outer, inner } => [("outer", report_id(outer)), ("inner", report_id(inner))],
    }
}

/// One piece of a block's evidence for `get_block`; `name_of` gives a validator's genesis name.
fn evidence_answer(evidence: &Evidence, name_of: impl Fn(&NodeId) -> Option<String>) -> EvidenceAnswer {
    let offender = evidence.offender();
    let report = |report: &MetricReport| EvidenceReport {
        report_id: report_id(report),
        sequence: report.sequence,
        vote: report.vote,
    };
    let header = |header: &tinychain_core::types::BlockHeader| EvidenceHeader {
        block_hash: block_hash(header),
        height: header.height,
        prev_hash: header.prev_hash,
        timestamp_ms: header.timestamp_ms,
    };
    let objects = match evidence {
        Evidence::DoubleProduction { first, second } => {
            EvidenceObjects::DoubleProduction { first: header(first), second: header(second) }
        }
        Evidence::DoubleVote { first, second } => {
            EvidenceObjects::DoubleVote { first: report(first), second: report(second) }
        }
        Evidence::SurroundVote { outer, inner } => {
            EvidenceObjects::SurroundVote { outer: report(outer), inner: report(inner) }
        }
    };
    EvidenceAnswer {
        id: evidence_id(evidence),
        objects,
        offender,
        offender_name: name_of(&offender),
        offence_height: offence_height(evidence),
    }
}

fn canonical_block(context: &QueryContext<'_>, selector: &BlockSelector) -> Result<(Arc<Block>, Hash), QueryError> {
    let tip = context.node.tip();
    match selector {
        BlockSelector::Height(height) => {
            let block = context.storage.block_at(*height).map_err(storage_failed)?.ok_or_else(|| {
                QueryError::NotFound(format!("no block at height {height} (the tip is at height {})", tip.height))
            })?;
            let hash = context.node.canonical_hash(*height).unwrap_or_else(|| block_hash(&block.header));
            Ok((block, hash))
        }
        BlockSelector::Hash(hash) => {
            let block = context
                .storage
                .block_by_hash(hash)
                .map_err(storage_failed)?
                .ok_or_else(|| QueryError::NotFound(format!("no block with hash {hash} on the canonical chain")))?;
            Ok((block, *hash))
        }
    }
}

fn transfer_with_id(transfer: &Transfer, id: &Hash) -> TransferWithId {
    TransferWithId { id: *id, transfer: transfer.clone() }
}

fn header_answer(context: &QueryContext<'_>, block: &Block, hash: Hash) -> HeaderAnswer {
    let header = &block.header;
    HeaderAnswer {
        hash,
        header: header.clone(),
        producer_name: validator_name(context, &header.producer),
        confirmations: context.node.tip().height.saturating_sub(header.height).saturating_add(1),
        is_final: header.height <= context.node.finalized().height,
        transfer_count: block.transfers.len(),
        report_count: block.reports.len(),
        evidence_count: block.evidence.len(),
    }
}

fn block_answer(context: &QueryContext<'_>, block: &Block, hash: Hash) -> BlockAnswer {
    BlockAnswer {
        header: header_answer(context, block, hash),
        transfers: block.transfers.iter().map(|transfer| transfer_with_id(transfer, &transfer_id(transfer))).collect(),
        reports: block
            .reports
            .iter()
            .map(|report| ReportWithId { id: report_id(report), report: report.clone() })
            .collect(),
        evidence: block.evidence.iter().map(|piece| evidence_answer(piece, |id| validator_name(context, id))).collect(),
    }
}

/// The transfer a committed location points at, or an internal error if the index and the
/// blocks disagree (they are written in one transaction, so this means a damaged database).
fn transfer_at(block: &Block, location: &TxLocation) -> Result<Transfer, QueryError> {
    block.transfers.get(location.index as usize).cloned().ok_or_else(|| {
        QueryError::Internal(format!(
            "the transaction index puts {} at index {} of block {}, which holds {} transfers",
            location.id,
            location.index,
            location.height,
            block.transfers.len()
        ))
    })
}

fn block_at_height(context: &QueryContext<'_>, height: Height) -> Result<Arc<Block>, QueryError> {
    context.storage.block_at(height).map_err(storage_failed)?.ok_or_else(|| {
        QueryError::Internal(format!("the transaction index names height {height}, which holds no block"))
    })
}

fn get_tx(context: &QueryContext<'_>, id: &Hash) -> Result<TxAnswer, QueryError> {
    let node = context.node;
    let answer = |status, block, dropped, transfer| TxAnswer { id: *id, status, block, dropped, transfer };
    if let Some(location) = context.storage.tx_location(id).map_err(storage_failed)? {
        let block = block_at_height(context, location.height)?;
        let transfer = transfer_at(&block, &location)?;
        let is_final = location.height <= node.finalized().height;
        let in_block = TxInBlock {
            height: location.height,
            block_hash: node.canonical_hash(location.height).unwrap_or_else(|| block_hash(&block.header)),
            index: location.index,
            confirmations: node.tip().height.saturating_sub(location.height).saturating_add(1),
        };
        let status = if is_final { TxState::Final } else { TxState::Committed };
        return Ok(answer(status, Some(in_block), None, Some(transfer_with_id(&transfer, id))));
    }
    if let Some(transfer) = node.mempool().get(id) {
        return Ok(answer(TxState::Pending, None, None, Some(transfer_with_id(transfer, id))));
    }
    if let Some(dropped) = context.storage.dropped(id).map_err(storage_failed)? {
        let transfer = transfer_with_id(&dropped.transfer, &dropped.id);
        return Ok(answer(TxState::Dropped, None, Some(tx_dropped(&dropped)), Some(transfer)));
    }
    Ok(answer(TxState::Unknown, None, None, None))
}

/// Why a transfer this node dropped was dropped: the reason as a name and as a sentence, and
/// the transfer that took its place when there is one.
fn tx_dropped(dropped: &DroppedTransfer) -> TxDropped {
    let (by, by_height) = match &dropped.reason {
        DropReason::NonceTaken { by, height } => (Some(*by), Some(*height)),
        DropReason::Replaced { by } | DropReason::Evicted { by } => (Some(*by), None),
        DropReason::NonceUsed
        | DropReason::Unaffordable
        | DropReason::RefusedAfterRestart { .. }
        | DropReason::NotReadmitted { .. } => (None, None),
    };
    TxDropped {
        reason: dropped.reason.kind().to_string(),
        message: dropped.reason.to_string(),
        by,
        by_height,
        dropped_at_height: dropped.tip_height,
    }
}

fn get_account(context: &QueryContext<'_>, address: &Address, at: AccountAt) -> AccountAnswer {
    let node = context.node;
    let at_tip = node.state().account(address);
    // Counted from a pool that may lack what the peers hold, it could name a taken nonce.
    let pending_nonce = node.is_mempool_synced().then(|| node.mempool().pending_nonce(address, &at_tip));
    let (account, height) = match at {
        AccountAt::Tip => (at_tip, node.tip().height),
        AccountAt::Final => (node.account_at_final(address), node.finalized().height),
    };
    AccountAnswer {
        address: *address,
        at,
        height,
        balance: account.balance,
        nonce: account.nonce,
        pending_nonce,
        mempool_synced: node.is_mempool_synced(),
    }
}

fn direction_of(address: &Address, transfer: &Transfer) -> (Direction, Address) {
    match (transfer.from == *address, transfer.to == *address) {
        (true, true) => (Direction::ToSelf, *address),
        (true, false) => (Direction::Out, transfer.to),
        _ => (Direction::In, transfer.from),
    }
}

/// One entry of `address`'s history; `location` is where it is committed, `None` while pending.
fn history_entry(address: &Address, transfer: &Transfer, id: &Hash, location: Option<&TxLocation>) -> HistoryTransfer {
    let (direction, counterparty) = direction_of(address, transfer);
    HistoryTransfer {
        id: *id,
        direction,
        counterparty,
        amount: transfer.amount,
        fee: transfer.fee,
        nonce: transfer.nonce,
        height: location.map(|location| location.height),
        index: location.map(|location| location.index),
    }
}

/// Committed transfers newest first. When the page is full, the transfers of its lowest block
/// are left for the next page (`next_before_height` = that height + 1) so paging never splits
/// a block, unless that block alone fills the page.
fn get_history(
    context: &QueryContext<'_>,
    address: &Address,
    limit: usize,
    before_height: Option<Height>,
) -> Result<HistoryAnswer, QueryError> {
    let mut locations = context.storage.history(address, before_height, limit).map_err(storage_failed)?;
    let mut next_before_height = None;
    if locations.len() >= limit {
        if let Some(lowest) = locations.last().map(|location| location.height) {
            let keep = locations.iter().take_while(|location| location.height > lowest).count();
            if keep > 0 {
                // A page never splits a block: the lowest block's entries start the next page.
                locations.truncate(keep);
                next_before_height = Some(lowest.saturating_add(1));
            } else {
                // One block fills the page: return all of its entries (at most a block's
                // transfers), so paging below it skips nothing.
                let block_transfers_max = context.node.genesis().parameters.block_transfers_max as usize;
                locations = context
                    .storage
                    .history(address, Some(lowest.saturating_add(1)), block_transfers_max.saturating_add(1))
                    .map_err(storage_failed)?
                    .into_iter()
                    .filter(|location| location.height == lowest)
                    .collect();
                next_before_height = Some(lowest);
            }
        }
    }
    // Locations come newest first, so one block is decoded at a time and dropped after use.
    let mut current: Option<Arc<Block>> = None;
    let mut committed = Vec::with_capacity(locations.len());
    for location in &locations {
        let block = match current.take() {
            Some(block) if block.header.height == location.height => block,
            _ => block_at_height(context, location.height)?,
        };
        let transfer = transfer_at(&block, location)?;
        current = Some(block);
        committed.push(history_entry(address, &transfer, &location.id, Some(location)));
    }
    // Pending transfers belong to the newest page only.
    let pending: Vec<HistoryTransfer> = if before_height.is_none() {
        let mut mine: Vec<(&Hash, &Transfer)> = context
            .node
            .mempool()
            .iter_by_fee()
            .filter(|(_, transfer)| transfer.from == *address || transfer.to == *address)
            .collect();
        mine.sort_by_key(|(id, transfer)| (transfer.from, transfer.nonce, **id));
        // Not bound by `limit`: a client may ask for one committed entry and every pending one.
        mine.into_iter()
            .take(HISTORY_LIMIT_MAX)
            .map(|(id, transfer)| history_entry(address, transfer, id, None))
            .collect()
    } else {
        Vec::new()
    };
    Ok(HistoryAnswer { address: *address, transfers: committed, pending, next_before_height })
}

fn get_mempool(context: &QueryContext<'_>, limit: usize) -> MempoolAnswer {
    let mempool = context.node.mempool();
    MempoolAnswer {
        count: mempool.len(),
        transfers: mempool.iter_by_fee().take(limit).map(|(id, transfer)| transfer_with_id(transfer, id)).collect(),
    }
}

fn election_demotion(demotion: &Demotion) -> ElectionDemotion {
    match *demotion {
        Demotion::NoReport => ElectionDemotion::NoReport,
        Demotion::StaleReport { tip_height } => ElectionDemotion::StaleReport { tip_height },
        Demotion::MissedTurn { at_height } => ElectionDemotion::MissedTurn { at_height },
        Demotion::OverProductionCap { produced, cap } => ElectionDemotion::OverProductionCap { produced, cap },
        Demotion::Jailed { until_height } => ElectionDemotion::Jailed { until_height },
    }
}

fn election_candidates(
    context: &QueryContext<'_>,
    candidates: &[Candidate],
    parent_timestamp_ms: u64,
) -> Vec<ElectionCandidate> {
    let parameters = &context.node.genesis().parameters;
    candidates
        .iter()
        .map(|candidate| ElectionCandidate {
            rank: candidate.rank,
            node_id: candidate.node,
            name: validator_name(context, &candidate.node),
            score: candidate.score,
            demotion: candidate.demotion.as_ref().map(election_demotion),
            jailed_until: match candidate.demotion {
                Some(Demotion::Jailed { until_height }) => Some(until_height),
                _ => None,
            },
            produced_in_window: candidate.produced_in_window,
            eligible_at_ms: eligible_at_ms(parameters, parent_timestamp_ms, candidate.rank),
        })
        .collect()
}

fn get_election(context: &QueryContext<'_>, height: Option<Height>) -> Result<ElectionAnswer, QueryError> {
    let node = context.node;
    let tip = node.tip();
    let next_height = tip.height.saturating_add(1);
    let height = height.unwrap_or(next_height);
    let production_window_blocks = node.genesis().parameters.production_window_blocks;
    let production_cap_blocks = node.genesis().production_cap_blocks();
    if height == next_height {
        let ranking = node.next_election();
        return Ok(ElectionAnswer {
            height: next_height,
            parent: tip,
            production_window_blocks,
            production_cap_blocks,
            candidates: election_candidates(context, &ranking, node.state().tip_timestamp_ms),
            produced: None,
            missed_turn: Vec::new(),
        });
    }
    if height == 0 {
        return Err(QueryError::NotFound("the genesis block has no election".into()));
    }
    if height > next_height {
        return Err(QueryError::NotFound(format!(
            "no election at height {height}: the tip is at height {}, the next election is for height {next_height}",
            tip.height
        )));
    }
    let ranking =
        context.storage.election_at(height).map_err(storage_failed)?.ok_or_else(|| {
            QueryError::Internal(format!("the database holds no election for canonical height {height}"))
        })?;
    let block = block_at_height(context, height)?;
    let parent = block_at_height(context, height - 1)?;
    let producer = block.header.producer;
    let produced_rank = block.header.rank;
    let missed_turn = ranking
        .iter()
        .filter(|candidate| candidate.rank < produced_rank)
        .map(|candidate| MissedTurn {
            rank: candidate.rank,
            node_id: candidate.node,
            name: validator_name(context, &candidate.node),
        })
        .collect();
    Ok(ElectionAnswer {
        height,
        parent: Checkpoint { height: height - 1, hash: block.header.prev_hash },
        production_window_blocks,
        production_cap_blocks,
        candidates: election_candidates(context, &ranking, parent.header.timestamp_ms),
        produced: Some(ProducedBlock {
            node_id: producer,
            name: validator_name(context, &producer),
            rank: produced_rank,
            block_hash: node.canonical_hash(height).unwrap_or_else(|| block_hash(&block.header)),
            timestamp_ms: block.header.timestamp_ms,
        }),
        missed_turn,
    })
}

fn get_peers(context: &QueryContext<'_>) -> PeersAnswer {
    let node = context.node;
    let addr_of =
        |id: &NodeId| context.live.peers.iter().find(|peer| peer.id == *id).and_then(|peer| peer.addr.clone());
    let peer_tips = node.peer_tips();
    let connected = peer_tips
        .iter()
        .map(|(id, tip)| ConnectedPeer {
            node_id: *id,
            name: validator_name(context, id),
            addr: addr_of(id),
            tip: *tip,
        })
        .collect();
    let validators_not_connected = node
        .genesis()
        .validators
        .iter()
        .filter(|validator| validator.id != node.node_id() && !peer_tips.iter().any(|(id, _)| *id == validator.id))
        .map(|validator| UnconnectedValidator {
            node_id: validator.id,
            name: validator.name.clone(),
            addr: validator.addr.clone(),
        })
        .collect();
    PeersAnswer { connected, validators_not_connected }
}

fn estimate_fee(context: &QueryContext<'_>) -> FeeAnswer {
    let mempool = context.node.mempool();
    let block_transfers_max = context.node.genesis().parameters.block_transfers_max;
    FeeAnswer {
        fee: mempool.estimate_fee(block_transfers_max as usize),
        // `estimate_fee(0)` is the pool's minimum fee by its contract (fewer than 0+1 slots).
        min_fee: mempool.estimate_fee(0),
        mempool_size: mempool.len(),
        block_transfers_max,
    }
}

/// The node's state for `GET /metrics` (`telemetry::Figures`, written by `telemetry`):
/// heights, mempool, the measured load, evidence, every validator's election and jail for the
/// next block, and every other validator as a peer.
pub fn metrics(context: &QueryContext<'_>) -> Figures {
    let node = context.node;
    let live = context.live;
    let genesis = node.genesis();
    let parent_height = node.tip().height;
    let election = node.next_election();
    let validators = genesis
        .validators
        .iter()
        .zip(&node.state().validators)
        .map(|(validator, record)| {
            let candidate = election.iter().find(|candidate| candidate.node == validator.id);
            ValidatorFigures {
                name: validator.name.clone(),
                committed_score: record.latest_report.map(|report| report.score),
                // The election ranks every validator; a missing one would rank after them all.
                rank: candidate.map_or(genesis.validators.len() as u32, |candidate| candidate.rank),
                is_jailed: record.is_jailed_at(parent_height.saturating_add(1)),
                jailed_until: record.jailed_until,
                produced_in_window: tinychain_core::election::produced_in_window(
                    &genesis.parameters,
                    record,
                    parent_height,
                ),
            }
        })
        .collect();
    let connected = node.connected_peers();
    let peers = genesis
        .validators
        .iter()
        .filter(|validator| validator.id != node.node_id())
        .map(|validator| PeerFigures {
            id: validator.id,
            name: validator.name.clone(),
            is_connected: connected.contains(&validator.id),
        })
        .collect();
    Figures {
        tip_height: parent_height,
        justified_height: node.finality().justified.height,
        final_height: node.finalized().height,
        last_block_interval: live.block_intervals_ms.back().copied().map(std::time::Duration::from_millis),
        blocks_committed: live.blocks_committed,
        timeouts_fired: live.timeouts_fired,
        peers_connected: connected.len(),
        mempool_transfers: node.mempool().len(),
        is_mempool_synced: node.is_mempool_synced(),
        journal_transfers: context.storage.journal_len(),
        transfers_dropped: live.transfers_dropped.clone(),
        measured: live.metrics.map(|sample| (sample.score, sample.cpu_permille, sample.net_permille)),
        jailed_validators: jailed_validators(context).len(),
        evidence_held: node.evidence().count(),
        evidence_pending: node.pending_evidence(),
        evidence_committed: live.evidence_committed,
        validators,
        peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(method: &str, params: Value) -> Result<Request, QueryError> {
        parse_request(Method::from_name(method).expect("a known method"), &params)
    }

    fn query(query: Query) -> Request {
        Request::Query(query)
    }

    fn invalid_text(method: &str, params: Value) -> String {
        match parsed(method, params) {
            Err(QueryError::InvalidParams(text)) => text,
            other => panic!("expected invalid params, got {other:?}"),
        }
    }

    #[test]
    fn params_by_name_and_by_position_agree() {
        let address = Address([3; 32]);
        let text = address.to_string();
        let by_name = parsed("get_history", json!({"address": text, "limit": 7, "before_height": 9})).unwrap();
        let by_position = parsed("get_history", json!([text, 7, 9])).unwrap();
        assert_eq!(by_name, query(Query::GetHistory { address, limit: 7, before_height: Some(9) }));
        assert_eq!(by_name, by_position);
        assert_eq!(
            parsed("get_history", json!([text])).unwrap(),
            query(Query::GetHistory { address, limit: HISTORY_LIMIT_DEFAULT, before_height: None })
        );
        assert_eq!(
            parsed("get_account", json!([text, "final"])).unwrap(),
            query(Query::GetAccount { address, at: AccountAt::Final })
        );
        assert_eq!(
            parsed("get_account", json!({"address": text})).unwrap(),
            query(Query::GetAccount { address, at: AccountAt::Tip })
        );
    }

    #[test]
    fn block_selectors() {
        let hash = Hash([0xab; 32]);
        assert_eq!(
            parsed("get_block", json!({"height": 4})).unwrap(),
            query(Query::GetBlock(BlockSelector::Height(4)))
        );
        assert_eq!(parsed("get_block", json!([4])).unwrap(), query(Query::GetBlock(BlockSelector::Height(4))));
        assert_eq!(
            parsed("get_header", json!([hash.to_string()])).unwrap(),
            query(Query::GetHeader(BlockSelector::Hash(hash)))
        );
        assert_eq!(
            parsed("get_block", json!({"hash": hash.to_string()})).unwrap(),
            query(Query::GetBlock(BlockSelector::Hash(hash)))
        );
        assert!(invalid_text("get_block", json!({"height": 1, "hash": hash.to_string()})).contains("not both"));
        assert!(invalid_text("get_block", json!({})).contains("missing"));
        assert!(invalid_text("get_block", Value::Null).contains("missing"));
        assert!(invalid_text("get_block", json!([-1])).contains("height"));
        assert!(invalid_text("get_block", json!({"hash": "abc"})).contains("64 hex"));
    }

    #[test]
    fn errors_name_the_param_and_why() {
        assert!(invalid_text("get_tx", json!({})).contains("missing param \"id\""));
        assert!(invalid_text("get_tx", json!({"id": 5})).contains("\"id\""));
        assert!(invalid_text("get_tx", json!({"idd": "00"})).contains("no param \"idd\""));
        assert!(invalid_text("get_tx", json!(["a", "b"])).contains("at most 1"));
        assert!(invalid_text("get_account", json!({"address": "tc1nope"})).contains("\"address\""));
        assert!(invalid_text("get_account", json!([Address([1; 32]).to_string(), "later"])).contains("\"at\""));
        let too_many = invalid_text("get_history", json!([Address([1; 32]).to_string(), 501]));
        assert!(too_many.contains("\"limit\"") && too_many.contains("500"), "{too_many}");
        assert!(invalid_text("get_mempool", json!({"limit": 0})).contains("\"limit\""));
        assert!(invalid_text("status", json!([1])).contains("at most 0"));
        assert!(invalid_text("status", json!("x")).contains("object"));
        assert!(invalid_text("add_peer", json!(["nohost"])).contains("host:port"));
        assert!(invalid_text("add_peer", json!([":80"])).contains("host"));
        assert!(invalid_text("add_peer", json!(["a:0"])).contains("port"));
        assert_eq!(
            parsed("add_peer", json!(["[::1]:7740"])).unwrap(),
            Request::Command(Command::AddPeer { addr: "[::1]:7740".parse().unwrap() })
        );
        assert!(Method::from_name("no_such_method").is_none());
    }

    #[test]
    fn submit_tx_decodes_a_signed_transfer_and_refuses_anything_else() {
        let key = tinychain_core::testkit::account_key(0);
        let transfer = tinychain_core::testkit::sign_transfer(&key, "c", Address([9; 32]), 5, 1, 0);
        let hex_text = hex::encode(codec::encode(&transfer));
        assert_eq!(
            parsed("submit_tx", json!([hex_text])).unwrap(),
            Request::Command(Command::SubmitTx { tx: transfer })
        );
        assert!(invalid_text("submit_tx", json!([format!("{hex_text}00")])).contains("\"tx\""));
        assert!(invalid_text("submit_tx", json!(["zz"])).contains("not hex"));
        assert!(invalid_text("submit_tx", json!(["00".repeat(2_000)])).contains("more than a transfer"));
        assert!(invalid_text("submit_tx", json!([&hex_text[..hex_text.len() - 2]])).contains("cannot decode"));
    }

    /// A report of `node` voting `source` -> `target` (unsigned: the JSON form does not check).
    fn vote_report(node: NodeId, sequence: u64, source: Height, target: Height) -> MetricReport {
        let checkpoint = |height: Height| Checkpoint { height, hash: Hash([height as u8; 32]) };
        MetricReport {
            node,
            sequence,
            tip: checkpoint(target),
            cpu: 0,
            net: 0,
            score: 0,
            vote: Some(tinychain_core::types::Vote { source: checkpoint(source), target: checkpoint(target) }),
            signature: tinychain_core::types::Signature::default(),
        }
    }

    fn evidence_json(evidence: &Evidence, name_of: impl Fn(&NodeId) -> Option<String>) -> Value {
        to_json(&evidence_answer(evidence, name_of))
    }

    #[test]
    fn evidence_of_each_kind_names_the_offender_the_height_and_both_objects() {
        let offender = Address([7; 32]);
        let name_of = |id: &NodeId| (*id == offender).then(|| "node7".to_string());
        let (first, second) = (vote_report(offender, 1, 2, 5), vote_report(offender, 2, 3, 5));
        let double_vote = Evidence::DoubleVote { first: first.clone(), second: second.clone() };
        let value = evidence_json(&double_vote, name_of);
        assert_eq!(value["kind"], "double_vote");
        assert_eq!(value["offender"], to_json(&offender));
        assert_eq!(value["offender_name"], "node7");
        assert_eq!(value["offence_height"], 5);
        assert_eq!(value["id"], to_json(&evidence_id(&double_vote)));
        assert_eq!(value["first"]["report_id"], to_json(&report_id(&first)));
        assert_eq!(value["second"]["report_id"], to_json(&report_id(&second)));
        assert_eq!(value["second"]["vote"]["source"]["height"], 3);
        assert_eq!(value["first"]["sequence"], 1);

        let (outer, inner) = (vote_report(offender, 3, 1, 9), vote_report(offender, 4, 4, 6));
        let surround = Evidence::SurroundVote { outer: outer.clone(), inner: inner.clone() };
        let value = evidence_json(&surround, name_of);
        assert_eq!(value["kind"], "surround_vote");
        assert_eq!(value["offence_height"], 9, "the outer vote's target");
        assert_eq!(value["outer"]["report_id"], to_json(&report_id(&outer)));
        assert_eq!(value["inner"]["vote"]["target"]["height"], 6);
        assert!(value.get("first").is_none() && value.get("second").is_none(), "{value}");
        assert_eq!(evidence_objects(&surround), [("outer", report_id(&outer)), ("inner", report_id(&inner))]);

        let unknown = evidence_json(&Evidence::DoubleVote { first, second }, |_| None);
        assert_eq!(unknown["offender_name"], Value::Null, "a name only for a genesis validator");
    }

    /// Every `data.code` the node can answer is one the schema lists (and `docs/rpc.md`
    /// documents, which `rpc/tests/docs.rs` checks). A new kind of rejection fails to compile in
    /// the matches below until it has a sample here.
    #[test]
    fn every_data_code_is_in_the_schema() {
        use tinychain_core::mempool::MempoolError;
        use tinychain_core::validate::TxError;
        let tx_errors = [
            TxError::WrongChainId { expected: "a".into(), got: "b".into() },
            TxError::ZeroAmount,
            TxError::BadSignature,
            TxError::WrongNonce { expected: 1, got: 0 },
            TxError::InsufficientBalance { balance: 0, needed: 1 },
            TxError::AmountOverflow,
            TxError::RecipientBalanceOverflow,
        ];
        for error in &tx_errors {
            match error {
                TxError::WrongChainId { .. }
                | TxError::ZeroAmount
                | TxError::BadSignature
                | TxError::WrongNonce { .. }
                | TxError::InsufficientBalance { .. }
                | TxError::AmountOverflow
                | TxError::RecipientBalanceOverflow => {}
            }
        }
        let mempool_errors = [
            MempoolError::AlreadyKnown { id: Hash::default() },
            MempoolError::NonceTooLow { expected: 1, got: 0 },
            MempoolError::NonceGap { expected: 0, got: 1 },
            MempoolError::FeeBelowMinimum { minimum: 1, got: 0 },
            MempoolError::ReplacementFeeTooLow { pending_fee: 1, got: 1 },
            MempoolError::InsufficientBalance { balance: 0, needed: 1 },
            MempoolError::AmountOverflow,
            MempoolError::SenderQueueFull { pending: 1 },
            MempoolError::PoolFull { lowest_fee: 1 },
        ];
        for error in &mempool_errors {
            match error {
                MempoolError::AlreadyKnown { .. }
                | MempoolError::NonceTooLow { .. }
                | MempoolError::NonceGap { .. }
                | MempoolError::FeeBelowMinimum { .. }
                | MempoolError::ReplacementFeeTooLow { .. }
                | MempoolError::InsufficientBalance { .. }
                | MempoolError::AmountOverflow
                | MempoolError::SenderQueueFull { .. }
                | MempoolError::PoolFull { .. } => {}
            }
        }
        let rejections =
            tx_errors.into_iter().map(TxRejection::Invalid).chain(mempool_errors.map(TxRejection::Mempool));
        let mut errors: Vec<QueryError> = rejections.map(QueryError::Rejected).collect();
        errors.extend([
            QueryError::InvalidParams("x".into()),
            QueryError::NotFound("x".into()),
            QueryError::JournalFull { held: 1, max: 1 },
            QueryError::Storage { source: StorageError::Missing { path: "x".into() } },
            QueryError::Transport { source: NetError::Stopped },
            QueryError::ShuttingDown,
            QueryError::NotAnswered,
            QueryError::TimedOut,
            QueryError::Internal("x".into()),
        ]);
        let answered: Vec<&str> = errors.iter().map(QueryError::data_code).collect();
        for (error, code) in errors.iter().zip(&answered) {
            assert!(data_code::ALL.contains(code), "{error:?} answers data.code {code:?}, not in data_code::ALL");
        }
        // And the schema lists nothing a node never answers (but for the three refusals `rpc`
        // answers itself: a request too large, an admin method not allowed, a busy node).
        for code in data_code::ALL {
            assert!(
                answered.contains(code)
                    || *code == data_code::REQUEST_TOO_LARGE
                    || *code == data_code::ADMIN_ONLY
                    || *code == data_code::BUSY,
                "{code}"
            );
        }
    }

    #[test]
    fn live_info_keeps_a_bounded_ring_of_intervals() {
        let mut live = LiveInfo::default();
        for index in 0..(BLOCK_INTERVALS_KEPT as u64 + 10) {
            live.record_block_committed(1_000 + index * 100 + index % 3, u32::from(index % 5 == 0));
        }
        assert_eq!(live.block_intervals_ms.len(), BLOCK_INTERVALS_KEPT);
        assert_eq!(live.blocks_committed, BLOCK_INTERVALS_KEPT as u64 + 10);
        assert_eq!(
            live.timeouts_fired,
            (0..BLOCK_INTERVALS_KEPT as u64 + 10).filter(|index| index % 5 == 0).count() as u64
        );
        let last = BLOCK_INTERVALS_KEPT as u64 + 9;
        assert_eq!(live.block_intervals_ms.back().copied(), Some(100 + last % 3 - (last - 1) % 3));
    }
}
