//! The questions a JSON-RPC client may ask, as typed values, and the pure function that answers
//! the read-only ones from the core `Node`, the `Storage` and what only the driver knows
//! (`LiveInfo`).
//!
//! Contract:
//! - `rpc` turns every JSON-RPC call into a `Request` (`parse_request` checks every parameter and
//!   names the one that is wrong) and sends it to the driver as a `Call` over a bounded channel.
//! - The driver answers `SubmitTx`, `AddPeer` and `RemovePeer` itself (they have side effects)
//!   and every other request by calling `answer` inside its loop, between two events, so an
//!   answer always sees one consistent state of the node and its storage.
//! - `answer` never mutates and never panics on any request: a missing block or transfer is
//!   `QueryError::NotFound`, a storage failure `QueryError::Internal`.
//!
//! JSON forms: hashes and ids are 64 hex characters, addresses bech32m `tc1...` text, amounts
//! strings of base units, heights and times (unix ms) numbers.

use crate::storage::Storage;
use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use tinychain_core::node::Node;
use tinychain_core::types::{Address, Hash, Height, NodeId, Transfer};
use tokio::sync::oneshot;

/// Recent block intervals `LiveInfo::record_block_committed` keeps.
pub const BLOCK_INTERVALS_KEPT: usize = 64;
/// `get_history`: transfers returned when the client gives no limit, and the most it may ask for.
pub const HISTORY_LIMIT_DEFAULT: usize = 50;
pub const HISTORY_LIMIT_MAX: usize = 500;
/// `get_mempool`: transfers listed when the client gives no limit, and the most it may ask for.
pub const MEMPOOL_LIMIT_DEFAULT: usize = 100;
pub const MEMPOOL_LIMIT_MAX: usize = 1_000;
/// Largest encoded transfer `submit_tx` decodes (a transfer with a 32-byte chain id encodes to
/// under 200 bytes).
pub const TRANSFER_BYTES_MAX: u64 = 1_024;

/// Which canonical block a client names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockSelector {
    Height(Height),
    Hash(Hash),
}

/// Which state `get_account` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AccountAt {
    #[default]
    Tip,
    Final,
}

/// One JSON-RPC method call, parameters checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Status,
    GetBlock(BlockSelector),
    GetHeader(BlockSelector),
    GetTx {
        id: Hash,
    },
    GetAccount {
        address: Address,
        at: AccountAt,
    },
    GetHistory {
        address: Address,
        limit: usize,
        before_height: Option<Height>,
    },
    GetMempool {
        limit: usize,
    },
    /// `None`: the live election for the block after the tip.
    GetElection {
        height: Option<Height>,
    },
    GetPeers,
    EstimateFee,
    /// Answered by the driver: steps the core with `Event::TxSubmitted` and replies
    /// `{"id": hex}` on `TxAccepted`, `QueryError::Rejected(reason)` on `TxRejected`.
    SubmitTx(Transfer),
    /// Answered by the driver (`NetHandle::add_peer`); `addr` is `host:port`, checked for shape.
    AddPeer {
        addr: String,
    },
    /// Answered by the driver (`NetHandle::remove_peer`).
    RemovePeer {
        addr: String,
    },
    /// `GET /health`: `{"status": "ok", "height", "peers"}`.
    Health,
    /// `GET /metrics`: the numbers `rpc` renders in the Prometheus text format (see `answer`).
    Metrics,
}

impl Request {
    /// True for the requests the driver answers itself instead of calling `answer`.
    pub fn is_handled_by_driver(&self) -> bool {
        matches!(self, Request::SubmitTx(_) | Request::AddPeer { .. } | Request::RemovePeer { .. })
    }
}

/// Why a request got no answer. `rpc` maps each to a JSON-RPC error code (see `docs/rpc.md`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter is missing, of the wrong type or out of range: -32602. The text names it.
    #[error("{0}")]
    InvalidParams(String),
    /// The block, height or transfer asked for does not exist: -32001.
    #[error("{0}")]
    NotFound(String),
    /// `submit_tx`: the node did not admit the transfer (the core's reason): -32002.
    #[error("transfer rejected: {0}")]
    Rejected(String),
    /// Anything else (storage failure, the driver gone or late): -32603.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A request on its way to the driver, and where its answer goes.
#[derive(Debug)]
pub struct Call {
    pub request: Request,
    pub reply: oneshot::Sender<Result<Value, QueryError>>,
}

/// The latest metric sample the node measured (per-mille of the last window) and its score.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricSample {
    pub cpu_permille: u16,
    pub net_permille: u16,
    pub score: u16,
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
    /// The latest sample, `None` before the first one.
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
}

impl LiveInfo {
    /// Records one committed block (`TraceEvent::BlockCommitted`) at wall time `now_ms`.
    pub fn record_block_committed(&mut self, now_ms: u64, rank: u32) {
        if let Some(last_ms) = self.last_block_at_ms {
            if self.block_intervals_ms.len() == BLOCK_INTERVALS_KEPT {
                self.block_intervals_ms.pop_front();
            }
            self.block_intervals_ms.push_back(now_ms.saturating_sub(last_ms));
        }
        self.last_block_at_ms = Some(now_ms);
        self.blocks_committed += 1;
        if rank > 0 {
            self.timeouts_fired += 1;
        }
    }
}

/// What `answer` reads.
pub struct QueryContext<'a> {
    pub node: &'a Node,
    pub storage: &'a Storage,
    pub live: &'a LiveInfo,
}

/// Turns a JSON-RPC method name and its params (an object by name, an array by position, or
/// absent) into a `Request`. `None` for a method this node does not have.
pub fn parse_request(method: &str, params: &Value) -> Option<Result<Request, QueryError>> {
    let _ = (method, params);
    None
}

/// Answers a read-only request. Pure: reads `context`, changes nothing.
pub fn answer(context: &QueryContext<'_>, request: &Request) -> Result<Value, QueryError> {
    let _ = context;
    if request.is_handled_by_driver() {
        return Err(QueryError::Internal("handled by the driver".into()));
    }
    Err(QueryError::Internal("not implemented yet".into()))
}
