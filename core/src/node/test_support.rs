//! What the node's module tests share: nodes on the fast test genesis, branches of real signed
//! blocks built without a node (so a test can hand a node exactly the blocks it needs), signed
//! reports, and filters over the actions a step returns.

use super::{Action, Event, Node, NodeConfig, TraceEvent};
use crate::codec::report_signing_bytes;
use crate::crypto::SignatureCache;
use crate::election::{eligible_at_ms, rank_candidates};
use crate::genesis::{genesis_block, Genesis};
use crate::mempool::MempoolConfig;
use crate::message::Message;
use crate::state::ChainState;
use crate::testkit::{seeded_key, validator_key};
use crate::types::{Block, Checkpoint, Hash, MetricReport, NodeId, Signature, Transfer, Vote};
use crate::validate::{apply_block, block_hash, build_block, with_canonical_context};
use std::sync::Arc;

pub(super) fn cache() -> Arc<SignatureCache> {
    Arc::new(SignatureCache::new(10_000))
}

/// A node of `genesis` whose key is no validator's: it never produces or reports, so its
/// actions are only its answers to what it is given.
pub(super) fn observer(genesis: &Genesis) -> Node {
    let config = NodeConfig {
        genesis: genesis.clone(),
        key: seeded_key("observer", 0),
        verify_threads: 1,
        mempool: MempoolConfig::default(),
        unmeasured_metrics: (0, 0),
    };
    Node::new(config, cache())
}

/// The id of validator `index` of the test genesis.
pub(super) fn validator_id(index: usize) -> NodeId {
    validator_key(index).address()
}

/// A branch of blocks from genesis, built as the validators would build them: each block by
/// the validator at the rank asked for, at the earliest time that rank may produce.
#[derive(Clone)]
pub(super) struct Branch {
    pub(super) state: ChainState,
    /// Canonical hashes of the branch, genesis first.
    pub(super) hashes: Vec<Hash>,
    pub(super) blocks: Vec<Arc<Block>>,
}

impl Branch {
    pub(super) fn from_genesis(genesis: &Genesis) -> Branch {
        let (_, state) = genesis_block(genesis);
        Branch { hashes: vec![state.tip.hash], state, blocks: Vec::new() }
    }

    /// Appends the block the validator at `rank` produces on the tip with these contents.
    pub(super) fn extend(
        &mut self,
        genesis: &Genesis,
        rank: u32,
        transfers: Vec<Transfer>,
        reports: Vec<MetricReport>,
    ) -> Arc<Block> {
        let producer = rank_candidates(genesis, &self.state.validators, &self.state.tip)[rank as usize].node;
        let key = validator_key(genesis.validator_index(&producer).expect("candidates are validators"));
        let timestamp_ms = eligible_at_ms(&genesis.parameters, self.state.tip_timestamp_ms, rank);
        let cache = cache();
        let valid = with_canonical_context(genesis, &self.state, &self.hashes, timestamp_ms, &cache, 1, |context| {
            build_block(context, &key, rank, timestamp_ms, transfers, reports, Vec::new())
        })
        .expect("the test branch builds valid blocks");
        let _undo = apply_block(&mut self.state, &valid);
        self.hashes.push(valid.hash);
        self.blocks.push(valid.block.clone());
        valid.block
    }

    /// Appends `count` empty blocks at rank 0.
    pub(super) fn extend_empty(&mut self, genesis: &Genesis, count: usize) {
        for _ in 0..count {
            self.extend(genesis, 0, Vec::new(), Vec::new());
        }
    }

    pub(super) fn tip(&self) -> Checkpoint {
        self.state.tip
    }
}

pub(super) fn hash_of(block: &Block) -> Hash {
    block_hash(&block.header)
}

/// A report of validator `index`, signed, with an honest score for (0, 0) metrics.
pub(super) fn signed_report(
    genesis: &Genesis,
    index: usize,
    sequence: u64,
    tip: Checkpoint,
    vote: Option<Vote>,
) -> MetricReport {
    let mut report = MetricReport {
        node: validator_id(index),
        sequence,
        tip,
        cpu: 0,
        net: 0,
        score: genesis.score(0, 0),
        vote,
        signature: Signature::default(),
    };
    report.signature = validator_key(index).sign(&report_signing_bytes(&genesis.chain_id, &report));
    report
}

/// Steps `node` with a message from `from`.
pub(super) fn receive(node: &mut Node, now_ms: u64, from: NodeId, message: Message) -> Vec<Action> {
    node.step(now_ms, Event::MessageReceived { from, message })
}

/// Hands `node` every block of `branch`, in order, as gossip from `from`.
pub(super) fn receive_branch(node: &mut Node, now_ms: u64, from: NodeId, branch: &Branch) {
    for block in &branch.blocks {
        let _ = receive(node, now_ms, from, Message::Block(block.clone()));
    }
}

pub(super) fn traces(actions: &[Action]) -> Vec<&TraceEvent> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Trace(event) => Some(event),
            _ => None,
        })
        .collect()
}

/// The messages of `SendTo` actions, with their recipient.
pub(super) fn sent(actions: &[Action]) -> Vec<(NodeId, &Message)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::SendTo { peer, message } => Some((*peer, message)),
            _ => None,
        })
        .collect()
}
