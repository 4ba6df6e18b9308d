//! The validation engine: transfer and block validity, and the state delta a block makes.
//!
//! Validation never mutates. `validate_block` returns a `ValidBlock` carrying the exact
//! `StateDelta` the block makes; `apply_block` writes it in and cannot fail. Block assembly
//! (`build_block`) runs the very same delta computation, so a node never produces a block its
//! own validation would reject.

use crate::account_tree::TreePatch;
use crate::codec::{self, header_signing_bytes, report_signing_bytes, transfer_signing_bytes};
use crate::crypto::{hash_bytes, merkle_root, Keypair, SignatureCache};
use crate::election::{self, eligible_at_ms};
use crate::finality::VoteIgnored;
use crate::genesis::Genesis;
use crate::state::{ChainState, RecordedReport, StateDelta, ValidatorRecord};
use crate::types::{
    Account, Address, Amount, Block, BlockHeader, Checkpoint, Evidence, Hash, Height, MetricReport, NodeId, Signature,
    Transfer, Vote,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("transfer is for chain {got:?}, this node runs {expected:?}")]
    WrongChainId { expected: String, got: String },
    #[error("transfer amount is zero; send at least one base unit")]
    ZeroAmount,
    #[error("transfer signature does not verify under the sender's key")]
    BadSignature,
    #[error("transfer nonce is {got}, the account's next nonce is {expected}")]
    WrongNonce { expected: u64, got: u64 },
    #[error("balance {balance} is below amount + fee = {needed} (base units)")]
    InsufficientBalance { balance: Amount, needed: Amount },
    #[error("amount + fee overflows a u64")]
    AmountOverflow,
    #[error("the recipient's balance would overflow a u64")]
    RecipientBalanceOverflow,
}

impl TxError {
    /// A stable, machine-readable name for the rule the transfer broke (the `TxRejection`
    /// table lists them all). Clients match on it; the `Display` text is for people and may
    /// change.
    pub fn code(&self) -> &'static str {
        match self {
            TxError::WrongChainId { .. } => "wrong_chain",
            TxError::ZeroAmount => "zero_amount",
            TxError::BadSignature => "bad_signature",
            TxError::WrongNonce { .. } => "wrong_nonce",
            TxError::InsufficientBalance { .. } => "insufficient_balance",
            TxError::AmountOverflow => "amount_overflow",
            TxError::RecipientBalanceOverflow => "recipient_balance_overflow",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    #[error("report from {node}, which is not a genesis validator")]
    UnknownValidator { node: NodeId },
    #[error("report values out of range: cpu {cpu}, net {net} (per-mille, 0..=1000)")]
    OutOfRange { cpu: u16, net: u16 },
    #[error("report score is {got}, its cpu, net and the genesis weights give {expected}")]
    WrongScore { expected: u16, got: u16 },
    #[error("report sequence {got} is not above the recorded {recorded}")]
    StaleSequence { recorded: u64, got: u64 },
    #[error("report tip height {tip_height} is not below the block height {block_height}")]
    TipNotBelowBlock { tip_height: Height, block_height: Height },
    #[error("report vote is malformed: the target must be the report's tip and the source below it")]
    MalformedVote,
    #[error("report signature does not verify under the validator's key")]
    BadSignature,
}

/// Why a piece of evidence proves nothing (or nothing this block may commit): one variant per
/// rule, so a refused piece says exactly which rule it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("evidence header is for chain {got:?}, this node runs {expected:?}")]
    WrongChainId { expected: String, got: String },
    #[error("evidence accuses {node}, which is not a genesis validator")]
    UnknownValidator { node: NodeId },
    #[error("the two signed objects are by different validators")]
    DifferentSigners,
    #[error("the two headers are the same header")]
    SameHeader,
    #[error("the two headers have different parents, which is no offence")]
    DifferentParents,
    #[error("the two headers on one parent claim different heights")]
    DifferentHeights,
    #[error("the pair is not in canonical order (lower id first)")]
    NotCanonicalOrder,
    #[error("a report of the evidence carries no vote")]
    MissingVote,
    #[error("the two votes are the same vote")]
    SameVote,
    #[error("the two votes have target heights {first} and {second}, not equal")]
    DifferentTargetHeights { first: Height, second: Height },
    #[error("the outer vote does not surround the inner one (source and target heights)")]
    NotSurrounding,
    #[error("an evidence report is malformed: {error}")]
    BadReport { error: ReportError },
    #[error("a signature of the evidence does not verify under the accused validator's key")]
    BadSignature,
    #[error("the offence at height {offence_height} is not below the block height {block_height}")]
    NotBeforeBlock { offence_height: Height, block_height: Height },
    #[error("the offence at height {offence_height} is more than {max_age_blocks} blocks below the block height {block_height}")]
    TooOld { offence_height: Height, block_height: Height, max_age_blocks: u64 },
    #[error("evidence of this offence is already committed on this chain")]
    AlreadyCommitted,
    #[error("the block holds evidence of this offence twice")]
    DuplicateInBlock,
}

/// What valid evidence proves: who, which offence (`key`: one per offence, so one committed
/// record per offence), and the height it happened at (for the age rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceFacts {
    pub offender: NodeId,
    pub validator_index: u32,
    pub key: Hash,
    pub height: Height,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block is for chain {got:?}, this node runs {expected:?}")]
    WrongChainId { expected: String, got: String },
    #[error("block height is {got}, the parent's child is at {expected}")]
    WrongHeight { expected: Height, got: Height },
    #[error("block parent is {got}, expected {expected}")]
    WrongParent { expected: Hash, got: Hash },
    #[error("block producer {producer} is not a genesis validator")]
    UnknownProducer { producer: NodeId },
    #[error("block claims rank {rank}, but there are only {validators} validators")]
    RankOutOfRange { rank: u32, validators: usize },
    #[error("block producer {got} is not the validator at rank {rank} ({expected})")]
    WrongProducerForRank { rank: u32, expected: NodeId, got: NodeId },
    #[error("block timestamp {timestamp_ms} is before rank {rank} may produce ({earliest_ms})")]
    TooEarly { rank: u32, earliest_ms: u64, timestamp_ms: u64 },
    #[error("block timestamp {timestamp_ms} is more than {max_drift_ms} ms ahead of the local clock {now_ms}")]
    TimestampInFuture { timestamp_ms: u64, now_ms: u64, max_drift_ms: u64 },
    #[error("block producer signature does not verify")]
    BadProducerSignature,
    #[error("block has {count} transfers, the limit is {max}")]
    TooManyTransfers { count: usize, max: u32 },
    #[error("block encodes to {bytes} bytes, the limit is {max}")]
    TooLarge { bytes: usize, max: u32 },
    #[error("block holds transfer {id} twice")]
    DuplicateTransfer { id: Hash },
    #[error("block has {count} reports from {node}, the limit is {max}")]
    TooManyReportsFromValidator { node: NodeId, count: u32, max: u32 },
    #[error("block tx_root is {got}, its transfers give {expected}")]
    TxRootMismatch { expected: Hash, got: Hash },
    #[error("block report_root is {got}, its reports give {expected}")]
    ReportRootMismatch { expected: Hash, got: Hash },
    #[error("block state_root is {got}, applying it gives {expected}")]
    StateRootMismatch { expected: Hash, got: Hash },
    #[error("transfer {index} of the block is invalid: {error}")]
    InvalidTransfer { index: usize, error: TxError },
    #[error("report {index} of the block is invalid: {error}")]
    InvalidReport { index: usize, error: ReportError },
    #[error("paying the producer overflows its balance or the supply")]
    RewardOverflow,
    #[error("block has {count} pieces of evidence, the limit is {max}")]
    TooMuchEvidence { count: usize, max: u32 },
    #[error("block evidence_root is {got}, its evidence gives {expected}")]
    EvidenceRootMismatch { expected: Hash, got: Hash },
    #[error("evidence {index} of the block is invalid: {error}")]
    InvalidEvidence { index: usize, error: EvidenceError },
}

/// Builds a transfer and signs it with `key` (the signature covers
/// `codec::transfer_signing_bytes`): what a wallet submits.
pub fn sign_transfer(key: &Keypair, chain_id: &str, to: Address, amount: Amount, fee: Amount, nonce: u64) -> Transfer {
    let mut transfer = Transfer {
        chain_id: chain_id.to_string(),
        from: key.address(),
        to,
        amount,
        fee,
        nonce,
        signature: Default::default(),
    };
    transfer.signature = key.sign(&transfer_signing_bytes(&transfer));
    transfer
}

pub fn transfer_id(transfer: &Transfer) -> Hash {
    hash_bytes(&codec::transfer_bytes(transfer))
}

pub fn report_id(report: &MetricReport) -> Hash {
    hash_bytes(&codec::report_bytes(report))
}

pub fn block_hash(header: &BlockHeader) -> Hash {
    hash_bytes(&codec::header_bytes(header))
}

pub fn evidence_id(evidence: &Evidence) -> Hash {
    hash_bytes(&codec::encode(evidence))
}

const OFFENCE_KEY_TAG: &str = "tinychain/offence-key/v1";

/// Checks evidence on its own (no chain context): both objects signed by the accused
/// validator, and together breaking one rule. Anyone can run this; an honest node's objects
/// never pass it (`node` keeps to the rules this checks).
pub fn check_evidence(
    genesis: &Genesis,
    evidence: &Evidence,
    cache: &SignatureCache,
) -> Result<EvidenceFacts, EvidenceError> {
    let index_of = |node: &NodeId| {
        genesis
            .validator_index(node)
            .map(|index| u32::try_from(index).expect("validator count is bounded by VALIDATORS_MAX"))
            .ok_or(EvidenceError::UnknownValidator { node: *node })
    };
    match evidence {
        Evidence::DoubleProduction { first, second } => {
            for header in [first, second] {
                if header.chain_id != genesis.chain_id {
                    return Err(EvidenceError::WrongChainId {
                        expected: genesis.chain_id.clone(),
                        got: header.chain_id.clone(),
                    });
                }
            }
            let validator_index = index_of(&first.producer)?;
            if first.producer != second.producer {
                return Err(EvidenceError::DifferentSigners);
            }
            let (first_hash, second_hash) = (block_hash(first), block_hash(second));
            if first_hash == second_hash {
                return Err(EvidenceError::SameHeader);
            }
            if first_hash > second_hash {
                return Err(EvidenceError::NotCanonicalOrder);
            }
            if first.prev_hash != second.prev_hash {
                return Err(EvidenceError::DifferentParents);
            }
            if first.height != second.height {
                return Err(EvidenceError::DifferentHeights);
            }
            for header in [first, second] {
                if !cache.verify(&header.producer, &header_signing_bytes(header), &header.signature) {
                    return Err(EvidenceError::BadSignature);
                }
            }
            let key = hash_bytes(&codec::encode(&(OFFENCE_KEY_TAG, 0u8, &first.producer, &first.prev_hash)));
            Ok(EvidenceFacts { offender: first.producer, validator_index, key, height: first.height })
        }
        Evidence::DoubleVote { first, second } => {
            let (validator_index, first_vote, second_vote) = check_vote_pair(genesis, first, second, cache)?;
            let _ = index_of(&first.node)?;
            if first_vote == second_vote {
                return Err(EvidenceError::SameVote);
            }
            if report_id(first) > report_id(second) {
                return Err(EvidenceError::NotCanonicalOrder);
            }
            if first_vote.target.height != second_vote.target.height {
                return Err(EvidenceError::DifferentTargetHeights {
                    first: first_vote.target.height,
                    second: second_vote.target.height,
                });
            }
            let height = first_vote.target.height;
            let key = hash_bytes(&codec::encode(&(OFFENCE_KEY_TAG, 1u8, &first.node, height)));
            Ok(EvidenceFacts { offender: first.node, validator_index, key, height })
        }
        Evidence::SurroundVote { outer, inner } => {
            let (validator_index, outer_vote, inner_vote) = check_vote_pair(genesis, outer, inner, cache)?;
            let surrounds = outer_vote.source.height < inner_vote.source.height
                && inner_vote.target.height < outer_vote.target.height;
            if !surrounds {
                return Err(EvidenceError::NotSurrounding);
            }
            let height = outer_vote.target.height;
            let key = hash_bytes(&codec::encode(&(
                OFFENCE_KEY_TAG,
                2u8,
                &outer.node,
                outer_vote.target.height,
                inner_vote.target.height,
            )));
            Ok(EvidenceFacts { offender: outer.node, validator_index, key, height })
        }
    }
}

/// Both reports well formed, by one validator, each carrying a vote, both signatures good.
fn check_vote_pair(
    genesis: &Genesis,
    first: &MetricReport,
    second: &MetricReport,
    cache: &SignatureCache,
) -> Result<(u32, Vote, Vote), EvidenceError> {
    if first.node != second.node {
        return Err(EvidenceError::DifferentSigners);
    }
    let mut index = 0;
    for report in [first, second] {
        index = check_report_fields(genesis, report).map_err(|error| match error {
            ReportError::UnknownValidator { node } => EvidenceError::UnknownValidator { node },
            error => EvidenceError::BadReport { error },
        })?;
    }
    let (Some(first_vote), Some(second_vote)) = (first.vote, second.vote) else {
        return Err(EvidenceError::MissingVote);
    };
    for report in [first, second] {
        if !cache.verify(&report.node, &report_signing_bytes(&genesis.chain_id, report), &report.signature) {
            return Err(EvidenceError::BadSignature);
        }
    }
    Ok((index, first_vote, second_vote))
}

/// Evidence as it would be in a block at `block_height` on top of `state`: context-free
/// validity, then the age rule and not already committed.
pub fn check_evidence_for_block(
    genesis: &Genesis,
    state: &ChainState,
    block_height: Height,
    evidence: &Evidence,
    cache: &SignatureCache,
) -> Result<EvidenceFacts, EvidenceError> {
    let facts = check_evidence(genesis, evidence, cache)?;
    if facts.height >= block_height {
        return Err(EvidenceError::NotBeforeBlock { offence_height: facts.height, block_height });
    }
    let max_age_blocks = genesis.parameters.evidence_max_age_blocks;
    if facts.height.saturating_add(max_age_blocks) < block_height {
        return Err(EvidenceError::TooOld { offence_height: facts.height, block_height, max_age_blocks });
    }
    if state.offences.contains_key(&facts.key) {
        return Err(EvidenceError::AlreadyCommitted);
    }
    Ok(facts)
}

/// Checks a transfer on its own: chain id, amount and signature (through the cache).
pub fn check_transfer_alone(chain_id: &str, transfer: &Transfer, cache: &SignatureCache) -> Result<(), TxError> {
    check_transfer_fields(chain_id, transfer)?;
    if !cache.verify(&transfer.from, &transfer_signing_bytes(transfer), &transfer.signature) {
        return Err(TxError::BadSignature);
    }
    Ok(())
}

/// `check_transfer_alone` for a transfer whose id (`transfer_id`) the caller already holds:
/// the id covers every field and the signature, so a transfer any node already checked
/// through here is not encoded and hashed again.
pub fn check_transfer_alone_identified(
    chain_id: &str,
    transfer: &Transfer,
    id: &Hash,
    cache: &SignatureCache,
) -> Result<(), TxError> {
    check_transfer_fields(chain_id, transfer)?;
    if !cache.verify_identified(id, &transfer.from, || transfer_signing_bytes(transfer), &transfer.signature) {
        return Err(TxError::BadSignature);
    }
    Ok(())
}

/// Checks the signatures of transfers about to be stepped into a core, split across `threads`
/// scoped threads, so that the core's own check (`check_transfer_alone_identified`) finds each
/// valid one in `cache` instead of verifying it on the core's thread. A server runs this beside
/// its event loop, on transfers from the network and from RPC (see `tinychain_node::driver`):
/// the core then spends its turn on the mempool and the chain while the signatures, most of a
/// transfer's cost, use the other cores. Only successes are cached, so this changes how fast
/// the core's check is, never its answer; an invalid signature is simply checked again there.
pub fn warm_transfer_signatures(cache: &SignatureCache, transfers: &[Transfer], threads: usize) {
    cache.verify_identified_all(
        transfers.len(),
        threads,
        |index| {
            let transfer = &transfers[index];
            (transfer_id(transfer), transfer.from, transfer.signature)
        },
        |index| transfer_signing_bytes(&transfers[index]),
    );
}

fn check_transfer_fields(chain_id: &str, transfer: &Transfer) -> Result<(), TxError> {
    if transfer.chain_id != chain_id {
        return Err(TxError::WrongChainId { expected: chain_id.to_string(), got: transfer.chain_id.clone() });
    }
    if transfer.amount == 0 {
        return Err(TxError::ZeroAmount);
    }
    Ok(())
}

/// Checks a transfer against the sender's account: nonce and balance.
pub fn check_transfer_against(account: &Account, transfer: &Transfer) -> Result<Amount, TxError> {
    if transfer.nonce != account.nonce {
        return Err(TxError::WrongNonce { expected: account.nonce, got: transfer.nonce });
    }
    let needed = transfer.amount.checked_add(transfer.fee).ok_or(TxError::AmountOverflow)?;
    if needed > account.balance {
        return Err(TxError::InsufficientBalance { balance: account.balance, needed });
    }
    Ok(needed)
}

/// Checks a report on its own (no chain context): validator, ranges, score, vote shape, signature.
pub fn check_report_alone(
    genesis: &Genesis,
    report: &MetricReport,
    cache: &SignatureCache,
) -> Result<u32, ReportError> {
    let index = check_report_fields(genesis, report)?;
    if !cache.verify(&report.node, &report_signing_bytes(&genesis.chain_id, report), &report.signature) {
        return Err(ReportError::BadSignature);
    }
    Ok(index)
}

fn check_report_fields(genesis: &Genesis, report: &MetricReport) -> Result<u32, ReportError> {
    let index = genesis.validator_index(&report.node).ok_or(ReportError::UnknownValidator { node: report.node })?;
    if report.cpu > 1000 || report.net > 1000 {
        return Err(ReportError::OutOfRange { cpu: report.cpu, net: report.net });
    }
    let expected = genesis.score(report.cpu, report.net);
    if report.score != expected {
        return Err(ReportError::WrongScore { expected, got: report.score });
    }
    if let Some(vote) = &report.vote {
        if vote.target != report.tip || vote.source.height >= vote.target.height {
            return Err(ReportError::MalformedVote);
        }
    }
    Ok(u32::try_from(index).expect("validator count is bounded by VALIDATORS_MAX"))
}

/// What validation needs to know about the chain a block extends.
pub struct BlockContext<'a> {
    pub genesis: &'a Genesis,
    /// The state after the parent.
    pub state: &'a ChainState,
    /// The hash of this chain's block at a height at or below the parent's.
    pub ancestor_hash: &'a dyn Fn(Height) -> Option<Hash>,
    pub now_ms: u64,
    pub cache: &'a SignatureCache,
    pub verify_threads: usize,
}

impl BlockContext<'_> {
    fn parent(&self) -> Checkpoint {
        self.state.tip
    }

    /// Is this checkpoint a block of the chain being extended (at or below the parent)?
    pub fn is_on_chain(&self, checkpoint: &Checkpoint) -> bool {
        checkpoint.height <= self.parent().height && (self.ancestor_hash)(checkpoint.height) == Some(checkpoint.hash)
    }
}

/// Runs `run` with the context of a block extending `state.tip` on the chain whose block at
/// each height is `canonical[height]` (genesis first): the node's own chain, and every test
/// fixture's.
pub fn with_canonical_context<R>(
    genesis: &Genesis,
    state: &ChainState,
    canonical: &[Hash],
    now_ms: u64,
    cache: &SignatureCache,
    verify_threads: usize,
    run: impl FnOnce(&BlockContext<'_>) -> R,
) -> R {
    let ancestor_hash = |height: Height| canonical.get(usize::try_from(height).ok()?).copied();
    let context = BlockContext { genesis, state, ancestor_hash: &ancestor_hash, now_ms, cache, verify_threads };
    run(&context)
}

/// A block that passed every check, with the state change it makes.
#[derive(Clone, Debug)]
pub struct ValidBlock {
    pub block: Arc<Block>,
    pub hash: Hash,
    pub delta: StateDelta,
    /// Per report: whether its vote counted (for traces).
    pub votes_ignored: Vec<(NodeId, VoteIgnored)>,
    /// The account-tree nodes the delta changes, computed with the state root: `apply_block`
    /// writes them instead of hashing the touched buckets again.
    pub account_patch: Option<Arc<TreePatch>>,
}

/// The genesis limits on a block's transfer count and encoded size.
fn check_block_limits(genesis: &Genesis, block: &Block) -> Result<(), BlockError> {
    let parameters = &genesis.parameters;
    if block.transfers.len() > parameters.block_transfers_max as usize {
        return Err(BlockError::TooManyTransfers { count: block.transfers.len(), max: parameters.block_transfers_max });
    }
    if block.evidence.len() > parameters.block_evidence_max as usize {
        return Err(BlockError::TooMuchEvidence { count: block.evidence.len(), max: parameters.block_evidence_max });
    }
    let bytes = codec::block_encoded_len(block);
    if bytes > parameters.block_bytes_max as usize {
        return Err(BlockError::TooLarge { bytes, max: parameters.block_bytes_max });
    }
    Ok(())
}

/// Structure checks that need no chain state: chain id, producer, limits, duplicates, roots and
/// the producer's signature. Cheap, so side-branch and orphan blocks are screened with it.
pub fn check_block_shape(genesis: &Genesis, block: &Block, cache: &SignatureCache) -> Result<Hash, BlockError> {
    let header = &block.header;
    let parameters = &genesis.parameters;
    if header.chain_id != genesis.chain_id {
        return Err(BlockError::WrongChainId { expected: genesis.chain_id.clone(), got: header.chain_id.clone() });
    }
    if genesis.validator_index(&header.producer).is_none() {
        return Err(BlockError::UnknownProducer { producer: header.producer });
    }
    if header.rank as usize >= genesis.validators.len() {
        return Err(BlockError::RankOutOfRange { rank: header.rank, validators: genesis.validators.len() });
    }
    check_block_limits(genesis, block)?;
    let transfer_ids: Vec<Hash> = block.transfers.iter().map(transfer_id).collect();
    let mut unique = BTreeSet::new();
    for id in &transfer_ids {
        if !unique.insert(*id) {
            return Err(BlockError::DuplicateTransfer { id: *id });
        }
    }
    let mut reports_per_node: BTreeMap<NodeId, u32> = BTreeMap::new();
    for report in &block.reports {
        let count = reports_per_node.entry(report.node).or_default();
        *count += 1;
        if *count > parameters.reports_per_validator_per_block_max {
            return Err(BlockError::TooManyReportsFromValidator {
                node: report.node,
                count: *count,
                max: parameters.reports_per_validator_per_block_max,
            });
        }
    }
    let tx_root = merkle_root(&transfer_ids);
    if tx_root != header.tx_root {
        return Err(BlockError::TxRootMismatch { expected: tx_root, got: header.tx_root });
    }
    let report_ids: Vec<Hash> = block.reports.iter().map(report_id).collect();
    let report_root = merkle_root(&report_ids);
    if report_root != header.report_root {
        return Err(BlockError::ReportRootMismatch { expected: report_root, got: header.report_root });
    }
    let evidence_root = merkle_root(&block.evidence.iter().map(evidence_id).collect::<Vec<_>>());
    if evidence_root != header.evidence_root {
        return Err(BlockError::EvidenceRootMismatch { expected: evidence_root, got: header.evidence_root });
    }
    if !cache.verify(&header.producer, &header_signing_bytes(header), &header.signature) {
        return Err(BlockError::BadProducerSignature);
    }
    Ok(block_hash(header))
}

/// Full validation of a block extending `context.state.tip`.
pub fn validate_block(context: &BlockContext<'_>, block: Arc<Block>) -> Result<ValidBlock, BlockError> {
    let hash = check_block_shape(context.genesis, &block, context.cache)?;
    validate_shaped_block(context, block, hash)
}

/// `validate_block` for a block that already passed `check_block_shape`, which returned `hash`:
/// every check but those (a node shape-checks each block as it arrives, before it enters the
/// block tree, and validates it when it joins the canonical chain).
pub fn validate_shaped_block(
    context: &BlockContext<'_>,
    block: Arc<Block>,
    hash: Hash,
) -> Result<ValidBlock, BlockError> {
    let header = &block.header;
    let parent = context.parent();
    let parameters = &context.genesis.parameters;
    if header.height != parent.height + 1 {
        return Err(BlockError::WrongHeight { expected: parent.height + 1, got: header.height });
    }
    if header.prev_hash != parent.hash {
        return Err(BlockError::WrongParent { expected: parent.hash, got: header.prev_hash });
    }
    let ranking = election::rank_candidates(context.genesis, &context.state.validators, &parent);
    let expected_producer =
        ranking.get(header.rank as usize).expect("rank was checked against the validator count").node;
    if expected_producer != header.producer {
        return Err(BlockError::WrongProducerForRank {
            rank: header.rank,
            expected: expected_producer,
            got: header.producer,
        });
    }
    let earliest_ms = eligible_at_ms(parameters, context.state.tip_timestamp_ms, header.rank);
    if header.timestamp_ms < earliest_ms {
        return Err(BlockError::TooEarly { rank: header.rank, earliest_ms, timestamp_ms: header.timestamp_ms });
    }
    if header.timestamp_ms > context.now_ms.saturating_add(parameters.max_clock_drift_ms) {
        return Err(BlockError::TimestampInFuture {
            timestamp_ms: header.timestamp_ms,
            now_ms: context.now_ms,
            max_drift_ms: parameters.max_clock_drift_ms,
        });
    }
    verify_body_signatures(context, &block)?;
    let BlockEffects { mut delta, votes_ignored, state_root, account_patch } =
        compute_delta(context, &ranking, header, &block.transfers, &block.reports, &block.evidence)?;
    if state_root != header.state_root {
        return Err(BlockError::StateRootMismatch { expected: state_root, got: header.state_root });
    }
    delta.tip.hash = hash;
    Ok(ValidBlock { block, hash, delta, votes_ignored, account_patch })
}

/// Verifies every transfer and report signature of a block, the uncached ones in parallel.
fn verify_body_signatures(context: &BlockContext<'_>, block: &Block) -> Result<(), BlockError> {
    for (index, transfer) in block.transfers.iter().enumerate() {
        check_transfer_fields(&context.genesis.chain_id, transfer)
            .map_err(|error| BlockError::InvalidTransfer { index, error })?;
    }
    for (index, report) in block.reports.iter().enumerate() {
        check_report_fields(context.genesis, report).map_err(|error| BlockError::InvalidReport { index, error })?;
    }
    let transfers = block.transfers.len();
    let item = |index: usize| -> (Address, Vec<u8>, Signature) {
        if index < transfers {
            let transfer = &block.transfers[index];
            (transfer.from, transfer_signing_bytes(transfer), transfer.signature)
        } else {
            let report = &block.reports[index - transfers];
            (report.node, report_signing_bytes(&context.genesis.chain_id, report), report.signature)
        }
    };
    match context.cache.verify_all(transfers + block.reports.len(), context.verify_threads, item) {
        None => Ok(()),
        Some(index) if index < block.transfers.len() => {
            Err(BlockError::InvalidTransfer { index, error: TxError::BadSignature })
        }
        Some(index) => {
            Err(BlockError::InvalidReport { index: index - block.transfers.len(), error: ReportError::BadSignature })
        }
    }
}

/// What a block does to the state, computed without changing it.
struct BlockEffects {
    delta: StateDelta,
    votes_ignored: Vec<(NodeId, VoteIgnored)>,
    state_root: Hash,
    account_patch: Option<Arc<TreePatch>>,
}

/// The state change of a block with this header and body on top of `context.state`, assuming
/// signatures were checked. Order: pay the producer reward + fees, apply transfers in order,
/// record the reports, mark validators that missed their turn, count the votes.
fn compute_delta(
    context: &BlockContext<'_>,
    ranking: &[election::Candidate],
    header: &BlockHeader,
    transfers: &[Transfer],
    reports: &[MetricReport],
    evidence: &[Evidence],
) -> Result<BlockEffects, BlockError> {
    let genesis = context.genesis;
    let state = context.state;
    let mut accounts: BTreeMap<Address, Account> = BTreeMap::new();
    let account_of = |accounts: &BTreeMap<Address, Account>, address: &Address| {
        accounts.get(address).copied().unwrap_or_else(|| state.account(address))
    };

    // Reward and fees. Fees move coins; only the reward creates them.
    let mut fees: Amount = 0;
    for transfer in transfers {
        fees = fees.checked_add(transfer.fee).ok_or(BlockError::RewardOverflow)?;
    }
    let reward = genesis.parameters.block_reward;
    let supply = state.supply.checked_add(reward).ok_or(BlockError::RewardOverflow)?;
    let mut producer_account = account_of(&accounts, &header.producer);
    producer_account.balance = producer_account
        .balance
        .checked_add(reward)
        .and_then(|balance| balance.checked_add(fees))
        .ok_or(BlockError::RewardOverflow)?;
    accounts.insert(header.producer, producer_account);
    // The fees are paid out of the senders' balances below; pre-crediting them is safe because
    // every transfer must succeed for the block to be valid.

    for (index, transfer) in transfers.iter().enumerate() {
        let invalid = |error| BlockError::InvalidTransfer { index, error };
        let mut sender = account_of(&accounts, &transfer.from);
        let needed = check_transfer_against(&sender, transfer).map_err(invalid)?;
        sender.balance -= needed;
        sender.nonce += 1;
        accounts.insert(transfer.from, sender);
        let mut recipient = account_of(&accounts, &transfer.to);
        recipient.balance =
            recipient.balance.checked_add(transfer.amount).ok_or(invalid(TxError::RecipientBalanceOverflow))?;
        accounts.insert(transfer.to, recipient);
    }

    let mut validators: BTreeMap<u32, ValidatorRecord> = BTreeMap::new();
    let mut votes: Vec<(u32, Vote)> = Vec::new();
    let mut voters: Vec<NodeId> = Vec::new();
    for (index, report) in reports.iter().enumerate() {
        let invalid = |error| BlockError::InvalidReport { index, error };
        let validator = check_report_fields(genesis, report).map_err(invalid)?;
        if report.tip.height >= header.height {
            return Err(invalid(ReportError::TipNotBelowBlock {
                tip_height: report.tip.height,
                block_height: header.height,
            }));
        }
        let mut record =
            validators.get(&validator).cloned().unwrap_or_else(|| state.validators[validator as usize].clone());
        let recorded = record.recorded_sequence();
        if let Some(recorded) = recorded {
            if report.sequence <= recorded {
                return Err(invalid(ReportError::StaleSequence { recorded, got: report.sequence }));
            }
        }
        record.latest_report = Some(RecordedReport {
            sequence: report.sequence,
            tip: report.tip,
            cpu: report.cpu,
            net: report.net,
            score: report.score,
        });
        if let Some(missed_at) = record.missed_turn_at {
            // A report brings a validator back only if it names a tip at or after the missed
            // block, on this chain: a report signed before the miss does not undo the demotion.
            if report.tip.height >= missed_at && context.is_on_chain(&report.tip) {
                record.missed_turn_at = None;
            }
        }
        validators.insert(validator, record);
        if let Some(vote) = report.vote {
            votes.push((validator, vote));
            voters.push(report.node);
        }
    }

    // Validators ranked ahead of the producer missed their turn at this height (`ranking` is the
    // election for the block after the parent).
    for candidate in ranking.iter().take(header.rank as usize) {
        let mut record = validators
            .get(&candidate.validator_index)
            .cloned()
            .unwrap_or_else(|| state.validators[candidate.validator_index as usize].clone());
        record.missed_turn_at = Some(header.height);
        validators.insert(candidate.validator_index, record);
    }
    let producer_index =
        u32::try_from(genesis.validator_index(&header.producer).expect("producer was checked to be a validator"))
            .expect("validator count is bounded by VALIDATORS_MAX");
    let mut producer_record =
        validators.get(&producer_index).cloned().unwrap_or_else(|| state.validators[producer_index as usize].clone());
    producer_record.blocks_produced += 1;
    producer_record.recent_blocks.push(header.height);
    validators.insert(producer_index, producer_record);
    // The production window ends at this block: forget blocks that left it.
    let oldest_in_window = (header.height + 1).saturating_sub(genesis.parameters.production_window_blocks);
    for (index, stored) in state.validators.iter().enumerate() {
        let index = u32::try_from(index).expect("validator count is bounded by VALIDATORS_MAX");
        let record = validators.get(&index).unwrap_or(stored);
        if record.recent_blocks.first().is_some_and(|height| *height < oldest_in_window) {
            let mut record = record.clone();
            record.recent_blocks.retain(|height| *height >= oldest_in_window);
            validators.insert(index, record);
        }
    }

    // Evidence: one record per offence, and the offender jailed.
    let mut offences: BTreeMap<Hash, Option<Height>> = BTreeMap::new();
    for (index, piece) in evidence.iter().enumerate() {
        let invalid = |error| BlockError::InvalidEvidence { index, error };
        let facts = check_evidence_for_block(genesis, state, header.height, piece, context.cache).map_err(invalid)?;
        if offences.insert(facts.key, Some(facts.height)).is_some() {
            return Err(invalid(EvidenceError::DuplicateInBlock));
        }
        let jail_blocks = genesis.parameters.jail_blocks;
        if jail_blocks > 0 {
            let mut record = validators
                .get(&facts.validator_index)
                .cloned()
                .unwrap_or_else(|| state.validators[facts.validator_index as usize].clone());
            let until = header.height.saturating_add(jail_blocks);
            record.jailed_until = Some(record.jailed_until.map_or(until, |current| current.max(until)));
            validators.insert(facts.validator_index, record);
        }
    }
    let max_age_blocks = genesis.parameters.evidence_max_age_blocks;
    for (key, height) in &state.offences {
        if height.saturating_add(max_age_blocks) < header.height {
            offences.insert(*key, None);
        }
    }

    let is_on_chain = |checkpoint: &Checkpoint| context.is_on_chain(checkpoint);
    let (finality, outcomes) = state.finality.with_votes(&votes, genesis.quorum(), &is_on_chain);
    let votes_ignored = voters
        .into_iter()
        .zip(outcomes)
        .filter_map(|(node, outcome)| outcome.err().map(|reason| (node, reason)))
        .collect();

    // Conservation: amounts and fees only move coins, so the accounts this block touches gain
    // exactly its reward between them (every account it changes is in `accounts`).
    let before: u128 = accounts.keys().map(|address| u128::from(state.account(address).balance)).sum();
    let after: u128 = accounts.values().map(|account| u128::from(account.balance)).sum();
    assert_eq!(after, before + u128::from(reward), "block {} creates exactly its reward, no more", header.height);
    assert_eq!(supply, state.supply + reward, "the supply grows by the reward alone");

    let (state_root, account_patch) = state.root_with_patch(&accounts, &validators, &offences);
    let delta = StateDelta {
        // The block hash is filled in by the caller once the header is complete.
        tip: Checkpoint { height: header.height, hash: Hash::default() },
        tip_timestamp_ms: header.timestamp_ms,
        accounts: accounts.into_iter().map(|(address, account)| (address, Some(account))).collect(),
        validators: validators.into_iter().collect(),
        finality,
        supply,
        offences: offences.into_iter().collect(),
    };
    Ok(BlockEffects { delta, votes_ignored, state_root, account_patch: account_patch.map(Arc::new) })
}

/// Writes a validated block's delta into the state and returns the undo delta.
pub fn apply_block(state: &mut ChainState, valid: &ValidBlock) -> StateDelta {
    assert_eq!(
        valid.block.header.prev_hash, state.tip.hash,
        "a valid block extends the state it was validated against"
    );
    assert_eq!(valid.delta.tip.hash, valid.hash, "the delta names its block");
    let undo = state.undo_for(&valid.delta);
    state.apply_delta_patched(&valid.delta, valid.account_patch.as_deref());
    undo
}

/// Assembles and signs a block at `rank` from transfers and reports the caller selected. Runs
/// the same delta computation as validation; the caller passes items it already checked, so an
/// error here means a bug or a race the caller resolves by dropping the item and retrying.
pub fn build_block(
    context: &BlockContext<'_>,
    producer: &Keypair,
    rank: u32,
    timestamp_ms: u64,
    transfers: Vec<Transfer>,
    reports: Vec<MetricReport>,
    evidence: Vec<Evidence>,
) -> Result<ValidBlock, BlockError> {
    let parent = context.parent();
    let mut header = BlockHeader {
        chain_id: context.genesis.chain_id.clone(),
        height: parent.height + 1,
        prev_hash: parent.hash,
        timestamp_ms,
        producer: producer.address(),
        rank,
        tx_root: merkle_root(&transfers.iter().map(transfer_id).collect::<Vec<_>>()),
        report_root: merkle_root(&reports.iter().map(report_id).collect::<Vec<_>>()),
        evidence_root: merkle_root(&evidence.iter().map(evidence_id).collect::<Vec<_>>()),
        state_root: Hash::default(),
        signature: Signature::default(),
    };
    let ranking = election::rank_candidates(context.genesis, &context.state.validators, &parent);
    let BlockEffects { mut delta, votes_ignored, state_root, account_patch } =
        compute_delta(context, &ranking, &header, &transfers, &reports, &evidence)?;
    header.state_root = state_root;
    header.signature = producer.sign(&header_signing_bytes(&header));
    let hash = block_hash(&header);
    delta.tip.hash = hash;
    let block = Arc::new(Block { header, transfers, reports, evidence });
    // The limits `check_block_shape` enforces on receipt: a producer must never sign a block
    // its own validation would refuse.
    check_block_limits(context.genesis, &block)?;
    Ok(ValidBlock { block, hash, delta, votes_ignored, account_patch })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warming_remembers_exactly_the_valid_signatures_and_changes_no_answer() {
        let chain_id = "warm";
        let keys: Vec<Keypair> = (1..=3u8).map(|seed| Keypair::from_secret_bytes(&[seed; 32])).collect();
        let mut transfers: Vec<Transfer> = (0..100u64)
            .map(|nonce| sign_transfer(&keys[(nonce % 3) as usize], chain_id, keys[0].address(), 5, 1, nonce))
            .collect();
        transfers[37].amount += 1;
        for threads in [1, 4] {
            let cache = SignatureCache::new(1_000);
            warm_transfer_signatures(&cache, &transfers, threads);
            assert_eq!(cache.len(), 99, "every valid signature and no other is remembered ({threads} threads)");
            for (index, transfer) in transfers.iter().enumerate() {
                let id = transfer_id(transfer);
                let cold = check_transfer_alone_identified(chain_id, transfer, &id, &SignatureCache::new(0));
                let warm = check_transfer_alone_identified(chain_id, transfer, &id, &cache);
                assert_eq!(format!("{warm:?}"), format!("{cold:?}"), "transfer {index}");
                assert_eq!(warm.is_ok(), index != 37, "transfer {index}");
            }
            assert_eq!(cache.len(), 99, "the core's checks found every valid one already there");
        }
    }
}
