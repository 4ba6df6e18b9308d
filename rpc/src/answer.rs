//! What a node answers, one type per method (and `GET /health`): the node builds these and
//! serialises them, a client deserialises the same types. `docs/rpc.md` documents every field
//! (`tests/docs.rs` checks it does).
//!
//! JSON forms: hashes and ids are 64 hex characters, addresses bech32m `tc1...` text, amounts
//! strings of base units (`amount_serde`), heights, counts and times (unix ms) numbers. An
//! `Option` field is `null` when empty unless it says it is left out. The node serialises an
//! answer through `serde_json::Value`, so an object's keys go out in alphabetical order.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tinychain_core::types::{
    amount_serde, Address, Amount, BlockHeader, Checkpoint, Hash, Height, MetricReport, NodeId, Transfer, Vote,
};

// ---- status --------------------------------------------------------------------------------

/// `status`: the node at a glance. (`Default`: an empty answer, for fixtures.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusAnswer {
    pub chain_id: String,
    pub genesis_hash: Hash,
    pub node_id: NodeId,
    /// The node's genesis name; `None` for a node that is not a validator.
    pub name: Option<String>,
    pub is_validator: bool,
    /// The node's software version.
    pub version: String,
    pub tip: Tip,
    pub justified: Checkpoint,
    pub finalized: Checkpoint,
    /// Peers with an authenticated link.
    pub peers: usize,
    pub mempool_size: usize,
    /// A peer advertises a higher tip, or the first mempool sync since start is not over.
    pub syncing: bool,
    pub mempool_synced: bool,
    pub mempool_synced_peers: usize,
    /// Acknowledged transfers kept in the pending-transfer journal.
    pub journal_transfers: usize,
    pub evidence_held: usize,
    pub evidence_pending: usize,
    /// The validators the held evidence accuses, in address order.
    pub evidence_offenders: Vec<ValidatorName>,
    /// The validators jailed for the block after the tip, in genesis order.
    pub jailed_validators: Vec<JailedValidator>,
    pub transfers_dropped: TransfersDropped,
    /// The latest metric sample; `None` before the first.
    pub metrics: Option<MetricSample>,
    /// Rank 0 of the live election.
    pub next_producer: Option<NextProducer>,
    pub started_at_ms: u64,
    pub rpc_listen: Option<String>,
    pub p2p_listen: Option<String>,
    /// Blocks committed since start.
    pub blocks_committed: u64,
    /// Blocks committed since start at rank > 0.
    pub timeouts_fired: u64,
    pub last_block_at_ms: Option<u64>,
}

/// The node's newest block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tip {
    pub height: Height,
    pub hash: Hash,
    pub timestamp_ms: u64,
}

/// A validator by id, with its genesis name when it has one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorName {
    pub node_id: NodeId,
    pub name: Option<String>,
}

/// A validator committed evidence jails, up to and including block `until_height`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailedValidator {
    pub node_id: NodeId,
    pub name: Option<String>,
    pub until_height: Height,
}

/// Pending transfers dropped since start, in all and by reason (reasons with none left out).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransfersDropped {
    pub total: u64,
    pub by_reason: BTreeMap<String, u64>,
}

/// One metric sample of the node (per mille of the last window) and its score.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricSample {
    pub cpu_permille: u16,
    pub net_permille: u16,
    pub score: u16,
}

/// Who produces the next block at rank 0, and from when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextProducer {
    pub node_id: NodeId,
    pub name: Option<String>,
    pub eligible_at_ms: u64,
}

// ---- get_header, get_block -----------------------------------------------------------------

/// `get_header`: a canonical block's header fields, its hash and what the node knows of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderAnswer {
    pub hash: Hash,
    #[serde(flatten)]
    pub header: BlockHeader,
    pub producer_name: Option<String>,
    /// Tip height − block height + 1.
    pub confirmations: u64,
    #[serde(rename = "final")]
    pub is_final: bool,
    pub transfer_count: usize,
    pub report_count: usize,
    pub evidence_count: usize,
}

/// `get_block`: the header answer and the block's contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockAnswer {
    #[serde(flatten)]
    pub header: HeaderAnswer,
    pub transfers: Vec<TransferWithId>,
    pub reports: Vec<ReportWithId>,
    pub evidence: Vec<EvidenceAnswer>,
}

/// A transfer as answers carry it: its fields and its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferWithId {
    pub id: Hash,
    #[serde(flatten)]
    pub transfer: Transfer,
}

/// A metric report as `get_block` carries it: its fields and its id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportWithId {
    pub id: Hash,
    #[serde(flatten)]
    pub report: MetricReport,
}

/// One piece of evidence a block commits: who broke which rule, at which height, and the two
/// signed objects that prove it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceAnswer {
    pub id: Hash,
    #[serde(flatten)]
    pub objects: EvidenceObjects,
    pub offender: NodeId,
    pub offender_name: Option<String>,
    /// `None` only for a vote pair without votes, which no valid evidence is.
    pub offence_height: Option<Height>,
}

/// The evidence's `kind` and its two objects, named by their role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EvidenceObjects {
    /// Two different headers signed by one producer on one parent.
    DoubleProduction { first: EvidenceHeader, second: EvidenceHeader },
    /// Two votes of one validator with the same target height.
    DoubleVote { first: EvidenceReport, second: EvidenceReport },
    /// A vote (`outer`) whose source and target surround another's (`inner`).
    SurroundVote { outer: EvidenceReport, inner: EvidenceReport },
}

/// A signed header in evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceHeader {
    pub block_hash: Hash,
    pub height: Height,
    pub prev_hash: Hash,
    pub timestamp_ms: u64,
}

/// A signed report in evidence, with the vote it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceReport {
    pub report_id: Hash,
    pub sequence: u64,
    pub vote: Option<Vote>,
}

// ---- get_tx --------------------------------------------------------------------------------

/// `get_tx`: where a transfer is. Which parts are present depends on `status`: `block` for
/// `committed` and `final`, `dropped` for `dropped`, `transfer` for all but `unknown` (absent
/// parts are left out of the JSON, not `null`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxAnswer {
    pub id: Hash,
    pub status: TxState,
    #[serde(flatten)]
    pub block: Option<TxInBlock>,
    #[serde(flatten)]
    pub dropped: Option<TxDropped>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferWithId>,
}

/// Where a transfer is, as one node sees it (`get_tx`'s `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxState {
    /// In the node's mempool, not in a block.
    Pending,
    /// In a canonical block above the final one (a reorganisation could still undo it).
    Committed,
    /// In a block at or below the latest final block.
    Final,
    /// Was pending on the node, which let go of it and will not include it (`TxDropped` says
    /// why). The node remembers this for a bounded time, then answers `unknown`.
    Dropped,
    /// Neither in the node's chain nor its mempool, nor remembered as dropped.
    Unknown,
}

impl TxState {
    pub fn as_str(self) -> &'static str {
        match self {
            TxState::Pending => "pending",
            TxState::Committed => "committed",
            TxState::Final => "final",
            TxState::Dropped => "dropped",
            TxState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for TxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The canonical block holding a committed or final transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxInBlock {
    pub height: Height,
    pub block_hash: Hash,
    /// Its position among the block's transfers.
    pub index: u32,
    /// Tip height − block height + 1.
    pub confirmations: u64,
}

/// Why and when the node let go of a pending transfer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxDropped {
    /// The reason's name (`nonce_taken`, `replaced`, ...; `docs/rpc.md` lists them).
    pub reason: String,
    /// The reason as a sentence.
    pub message: String,
    /// The transfer that took its place, when there is one the node can name.
    pub by: Option<Hash>,
    /// The height `by` was committed at (`nonce_taken` only).
    pub by_height: Option<Height>,
    /// The node's tip height when it let go.
    pub dropped_at_height: Height,
}

// ---- get_account, get_history, get_mempool ---------------------------------------------------

/// `get_account`: an account's state after one block. (`Default`: for fixtures.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountAnswer {
    pub address: Address,
    pub at: crate::request::AccountAt,
    /// The block the state is read at.
    pub height: Height,
    #[serde(with = "amount_serde")]
    pub balance: Amount,
    pub nonce: u64,
    /// The nonce the account's next transfer must carry; `None` (null, or absent from a node
    /// that predates the field) while the node has not synced its mempool with its peers.
    #[serde(default)]
    pub pending_nonce: Option<u64>,
    /// Absent from a node that predates the field: read as false.
    #[serde(default)]
    pub mempool_synced: bool,
}

/// `get_history`: one page of an account's transfers. (`Default`: for fixtures.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryAnswer {
    pub address: Address,
    /// Committed transfers, newest first.
    pub transfers: Vec<HistoryTransfer>,
    /// The account's transfers in the mempool (first page only).
    pub pending: Vec<HistoryTransfer>,
    /// What to pass as `before_height` for the next page; `None` when this page is not full.
    pub next_before_height: Option<Height>,
}

/// One transfer in an account's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryTransfer {
    pub id: Hash,
    pub direction: Direction,
    /// The other account (the account itself for a transfer to itself).
    pub counterparty: Address,
    #[serde(with = "amount_serde")]
    pub amount: Amount,
    #[serde(with = "amount_serde")]
    pub fee: Amount,
    pub nonce: u64,
    /// The block holding it; left out while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<Height>,
    /// Its position in that block; left out while pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

/// Which way a transfer went, seen from one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
    #[serde(rename = "self")]
    ToSelf,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::ToSelf => "self",
        }
    }
}

/// `get_mempool`: how many transfers are pending, and the first of them by fee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolAnswer {
    pub count: usize,
    /// Highest fee first, at most the asked limit.
    pub transfers: Vec<TransferWithId>,
}

// ---- get_election --------------------------------------------------------------------------

/// `get_election`: the ranking for one block, and for a committed block who produced it and
/// who missed their turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionAnswer {
    pub height: Height,
    pub parent: Checkpoint,
    pub production_window_blocks: u64,
    /// `None` when the production-share cap is off.
    pub production_cap_blocks: Option<u64>,
    pub candidates: Vec<ElectionCandidate>,
    /// `None` for the live election (the block after the tip).
    pub produced: Option<ProducedBlock>,
    /// The candidates ranked before the producer.
    pub missed_turn: Vec<MissedTurn>,
}

/// One line of a ranking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionCandidate {
    pub rank: u32,
    pub node_id: NodeId,
    pub name: Option<String>,
    /// The committed score; `None` without a recorded report.
    pub score: Option<u16>,
    pub demotion: Option<ElectionDemotion>,
    /// The last height of its jail, when jailed for this block.
    pub jailed_until: Option<Height>,
    pub produced_in_window: u64,
    /// The earliest timestamp a block at this rank may carry.
    pub eligible_at_ms: u64,
}

/// Why a validator goes after the active ones (`{"reason": ..}` and the reason's figures).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ElectionDemotion {
    NoReport,
    StaleReport {
        tip_height: Height,
    },
    MissedTurn {
        at_height: Height,
    },
    #[serde(rename = "production_cap")]
    OverProductionCap {
        produced: u64,
        cap: u64,
    },
    Jailed {
        until_height: Height,
    },
}

/// Who produced a committed block, at which rank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducedBlock {
    pub node_id: NodeId,
    pub name: Option<String>,
    pub rank: u32,
    pub block_hash: Hash,
    pub timestamp_ms: u64,
}

/// A candidate ranked before the producer of a committed block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissedTurn {
    pub rank: u32,
    pub node_id: NodeId,
    pub name: Option<String>,
}

// ---- get_peers, estimate_fee ---------------------------------------------------------------

/// `get_peers`: the peers linked now, and the genesis validators that are not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersAnswer {
    pub connected: Vec<ConnectedPeer>,
    pub validators_not_connected: Vec<UnconnectedValidator>,
}

/// A peer with an authenticated link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectedPeer {
    pub node_id: NodeId,
    pub name: Option<String>,
    /// The address the link runs over, when the transport knows it.
    pub addr: Option<String>,
    /// The tip it last advertised.
    pub tip: Option<Checkpoint>,
}

/// A genesis validator without a link, with its genesis name and address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnconnectedValidator {
    pub node_id: NodeId,
    pub name: String,
    pub addr: String,
}

/// `estimate_fee`: a fee likely to get a transfer into the next block. (`Default`: for
/// fixtures.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeAnswer {
    #[serde(with = "amount_serde")]
    pub fee: Amount,
    /// The least fee this node admits.
    #[serde(with = "amount_serde")]
    pub min_fee: Amount,
    pub mempool_size: usize,
    pub block_transfers_max: u32,
}

// ---- submit_tx, add_peer, remove_peer --------------------------------------------------------

/// `submit_tx`: the id of the transfer the node admitted and journaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitAnswer {
    pub id: Hash,
}

/// `submit_txs`: how many transfers were admitted and journaled, and one result per transfer,
/// in the order given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitTxsAnswer {
    pub accepted: usize,
    pub results: Vec<SubmitResult>,
}

/// One transfer's result in `submit_txs`: its id (as `submit_tx` answers), or the error
/// `submit_tx` would have answered for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SubmitResult {
    Accepted { id: Hash },
    Refused { error: SubmitError },
}

/// A refused transfer in `submit_txs`: a JSON-RPC error object (code -32002, or -32603 for the
/// node's own failures), the node's reason and its `data.code`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitError {
    pub code: i32,
    pub message: String,
    pub data: crate::error::ErrorData,
}

/// `add_peer`: the address added (also when it was known already).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddPeerAnswer {
    pub added: String,
}

/// `remove_peer`: the address forgotten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovePeerAnswer {
    pub removed: String,
}

// ---- GET /health ---------------------------------------------------------------------------

/// `GET /health` with status 200: the node's event loop answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthAnswer {
    pub status: HealthStatus,
    pub height: Height,
    pub peers: usize,
}

/// `GET /health` with status 503: the node's event loop did not answer, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRefusal {
    pub status: HealthStatus,
    pub reason: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    Unavailable,
}
