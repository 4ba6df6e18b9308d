//! Blocks in, canonical chain out: the checks a received (or produced) block passes before it
//! joins the tree, orphans held until their parent arrives, rejection, and activation of the
//! best branch (rollback, validation, application) as one atomic `CommitBlocks`, then what a
//! tip change settles: traces, transfers and reports of abandoned blocks back to their pools,
//! the mempool revalidated, evidence aged, pruning after finality.

use super::{Action, ChainOp, Commit, DisconnectReason, Node, TraceEvent};
use crate::limits::{EVIDENCE_WATCH_BLOCKS, GOSSIP_BATCH_TRANSFERS_MAX, ORPHAN_BLOCKS_MAX};
use crate::mempool::{DropReason, DroppedTransfer, MempoolError};
use crate::message::Message;
use crate::types::{Address, Block, Checkpoint, Hash, Height, NodeId};
use crate::validate::{
    self, apply_block, block_hash, check_block_shape, check_evidence, transfer_id, BlockContext, BlockError, ValidBlock,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tracing::debug;

/// What one activation of the best chain did, for `Node::finish_tip_change` to commit, trace and
/// settle.
struct TipChange {
    old_justified: Checkpoint,
    old_final: Checkpoint,
    /// The lowest height the tip moved back to (the old tip's if nothing was rolled back).
    fork_height: Height,
    ops: Vec<ChainOp>,
    /// (hash, block) of every block rolled back, in order.
    abandoned: Vec<(Hash, Arc<Block>)>,
    /// (hash, block) of every block applied, in order.
    applied: Vec<(Hash, Arc<Block>)>,
}

impl Node {
    pub(super) fn on_block(
        &mut self,
        now_ms: u64,
        from: Option<NodeId>,
        block: Arc<Block>,
        relay: bool,
        actions: &mut Vec<Action>,
    ) {
        let hash = block_hash(&block.header);
        let height = block.header.height;
        if self.tree.contains_key(&hash) || self.orphans.contains_key(&hash) || self.invalid.ids.contains(&hash) {
            return;
        }
        if height <= self.finalized.height {
            // Still evidence: a second header on a parent below our final block, and the votes
            // it carries (a producer that releases its block late must not hide its own
            // conflicting votes in it). Once per block: a peer replaying old blocks must not
            // make us compare their votes again and again.
            if self.seen.insert(hash) && check_block_shape(&self.config.genesis, &block, &self.cache).is_ok() {
                self.watch_header(&block.header, actions);
                self.watch_block_reports(&block, actions);
            }
            debug!(height, "ignoring block: at or below the final height");
            return;
        }
        let max_drift_ms = self.config.genesis.parameters.max_clock_drift_ms;
        if block.header.timestamp_ms > now_ms.saturating_add(max_drift_ms) {
            // Not marked invalid: it may become acceptable; sync will offer it again.
            debug!(
                height,
                timestamp_ms = block.header.timestamp_ms,
                now_ms,
                "ignoring block: timestamp ahead of the local clock"
            );
            return;
        }
        if let Err(error) = check_block_shape(&self.config.genesis, &block, &self.cache) {
            self.reject_block(hash, &error, from, actions);
            return;
        }
        self.watch_header(&block.header, actions);
        self.watch_block_reports(&block, actions);
        let parent = block.header.prev_hash;
        if !self.tree.contains_key(&parent) {
            if self.orphans.len() >= ORPHAN_BLOCKS_MAX {
                if let Some(highest) =
                    self.orphans.iter().max_by_key(|(_, orphan)| orphan.header.height).map(|(hash, _)| *hash)
                {
                    self.orphans.remove(&highest);
                }
            }
            debug!(height, "holding block: parent unknown, asking for it");
            self.orphans.insert(hash, block);
            if let Some(peer) = from {
                self.request_sync(now_ms, peer, actions);
            }
            return;
        }
        // A received block is relayed at once (it passed the checks that need no state); our
        // own block only after it is committed, so a crash cannot make us sign a second block
        // at the same height after restart.
        let own_block = from.is_none().then(|| block.clone());
        if relay && from.is_some() {
            self.gossip(hash, Message::Block(block.clone()), from, actions);
        }
        // Insert it, then any held orphans that descend from it.
        let mut ready = vec![(hash, block)];
        while let Some((hash, block)) = ready.pop() {
            if let Err(error) = self.insert_into_tree(hash, block) {
                self.reject_block(hash, &error, from, actions);
                continue;
            }
            let children: Vec<Hash> = self
                .orphans
                .iter()
                .filter(|(_, orphan)| orphan.header.prev_hash == hash)
                .map(|(hash, _)| *hash)
                .collect();
            for child in children {
                if let Some(orphan) = self.orphans.remove(&child) {
                    ready.push((child, orphan));
                }
            }
        }
        self.prune_side_blocks();
        self.activate_best_chain(now_ms, actions);
        if let (true, Some(block)) = (relay, own_block) {
            actions.push(Action::Broadcast { message: Message::Block(block), except: None });
        }
    }

    fn reject_block(&mut self, hash: Hash, error: &BlockError, from: Option<NodeId>, actions: &mut Vec<Action>) {
        debug!(?hash, %error, "rejecting block");
        self.invalid.insert(hash);
        actions.push(Action::Trace(TraceEvent::BlockRejected { hash, reason: error.clone() }));
        let is_forgery = matches!(
            error,
            BlockError::BadProducerSignature
                | BlockError::InvalidTransfer { error: validate::TxError::BadSignature, .. }
                | BlockError::InvalidReport { error: validate::ReportError::BadSignature, .. }
        );
        if let (true, Some(peer)) = (is_forgery, from) {
            actions.push(Action::DisconnectPeer { peer, reason: DisconnectReason::Block(error.clone()) });
        }
    }
    /// Moves the canonical chain to the best branch, validating each block as it is applied; a
    /// block that fails is removed with its descendants and the choice is made again. All
    /// storage changes go out as one atomic `CommitBlocks`.
    fn activate_best_chain(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        let old_tip = self.state.tip;
        let old_justified = self.state.finality.justified;
        let old_final = self.finalized;
        let mut ops = Vec::new();
        // (hash, block) of every block rolled back and applied, in order.
        let mut abandoned: Vec<(Hash, Arc<Block>)> = Vec::new();
        let mut applied: Vec<(Hash, Arc<Block>)> = Vec::new();
        let mut lowest_fork_height = old_tip.height;
        // Each round either reaches the best tip or removes an invalid block: bounded.
        for _round in 0..=self.tree.len() {
            let best = self.best_tip();
            if best == self.state.tip.hash {
                break;
            }
            let mut branch = vec![best];
            let mut cursor = self.tree[&best].parent;
            while self.canonical_hash(self.tree[&cursor].height) != Some(cursor) {
                branch.push(cursor);
                cursor = self.tree[&cursor].parent;
            }
            branch.reverse();
            let fork_height = self.tree[&cursor].height;
            assert!(fork_height >= self.finalized.height, "fork choice never leaves the final block");
            lowest_fork_height = lowest_fork_height.min(fork_height);
            while self.state.tip.height > fork_height {
                let height = self.state.tip.height;
                let hash = self.canonical.pop().expect("the canonical chain reaches the tip");
                let undo =
                    self.undo.remove(&height).expect("undo is kept for every canonical block above the final one");
                self.state.apply_delta(&undo);
                abandoned.push((hash, self.tree[&hash].block.clone()));
                ops.push(ChainOp::Rollback { height, hash, undo });
            }
            for hash in branch {
                let block = self.tree[&hash].block.clone();
                // Every block in the tree was shape-checked as it arrived (`on_block`).
                let validated = self
                    .with_tip_context(now_ms, |context| validate::validate_shaped_block(context, block.clone(), hash));
                match validated {
                    Ok(valid) => self.apply_valid(valid, &mut ops, &mut applied),
                    Err(error) => {
                        let is_early = matches!(error, BlockError::TimestampInFuture { .. });
                        self.remove_subtree(hash);
                        if is_early {
                            debug!(?hash, "dropping block for now: timestamp ahead of the local clock");
                        } else {
                            self.reject_block(hash, &error, None, actions);
                        }
                        break;
                    }
                }
            }
        }
        if ops.is_empty() {
            return;
        }
        let change = TipChange { old_justified, old_final, fork_height: lowest_fork_height, ops, abandoned, applied };
        self.finish_tip_change(change, actions);
    }

    /// Runs `f` with the validation context of a block extending the current tip.
    pub(super) fn with_tip_context<R>(&self, now_ms: u64, f: impl FnOnce(&BlockContext<'_>) -> R) -> R {
        let (genesis, threads) = (&self.config.genesis, self.config.verify_threads);
        validate::with_canonical_context(genesis, &self.state, &self.canonical, now_ms, &self.cache, threads, f)
    }

    fn apply_valid(&mut self, valid: ValidBlock, ops: &mut Vec<ChainOp>, applied: &mut Vec<(Hash, Arc<Block>)>) {
        let undo = apply_block(&mut self.state, &valid);
        self.canonical.push(valid.hash);
        self.undo.insert(valid.block.header.height, undo.clone());
        if let Some(entry) = self.tree.get_mut(&valid.hash) {
            entry.finality = self.state.finality.clone();
        }
        applied.push((valid.hash, valid.block.clone()));
        ops.push(ChainOp::Apply { block: valid.block, hash: valid.hash, delta: valid.delta, undo });
    }

    fn finish_tip_change(&mut self, change: TipChange, actions: &mut Vec<Action>) {
        let TipChange { old_justified, old_final, fork_height, ops, abandoned, applied } = change;
        let finality = self.state.finality.clone();
        if finality.finalized.height > self.finalized.height {
            self.finalized = finality.finalized;
        }
        assert_eq!(
            self.canonical_hash(self.finalized.height),
            Some(self.finalized.hash),
            "the final block stays on the canonical chain"
        );
        actions.push(Action::CommitBlocks(Box::new(Commit {
            ops,
            tip: self.state.tip,
            justified: finality.justified,
            finalized: self.finalized,
        })));
        // Net effect: blocks rolled back and not re-applied, and blocks newly applied.
        let applied_hashes: BTreeSet<Hash> = applied.iter().map(|(hash, _)| *hash).collect();
        let abandoned_hashes: BTreeSet<Hash> = abandoned.iter().map(|(hash, _)| *hash).collect();
        let rolled_back = abandoned.iter().filter(|(hash, _)| !applied_hashes.contains(hash)).count() as u64;
        let newly_applied: Vec<&(Hash, Arc<Block>)> =
            applied.iter().filter(|(hash, _)| !abandoned_hashes.contains(hash)).collect();
        if rolled_back > 0 {
            actions.push(Action::Trace(TraceEvent::Reorg {
                fork_height,
                rolled_back,
                applied: newly_applied.len() as u64,
                new_tip: self.state.tip,
            }));
        }
        let mut touched_senders: BTreeSet<Address> = BTreeSet::new();
        let mut taken: BTreeMap<(Address, u64), (Hash, Height)> = BTreeMap::new();
        for (_, block) in &applied {
            for transfer in &block.transfers {
                taken.insert((transfer.from, transfer.nonce), (transfer_id(transfer), block.header.height));
            }
        }
        for (hash, block) in newly_applied {
            let header = &block.header;
            if header.rank > 0 {
                actions.push(Action::Trace(TraceEvent::TimeoutFired {
                    height: header.height,
                    skipped_ranks: header.rank,
                }));
            }
            actions.push(Action::Trace(TraceEvent::BlockCommitted {
                height: header.height,
                hash: *hash,
                producer: header.producer,
                rank: header.rank,
                transfers: block.transfers.len(),
            }));
            let mut jailed: BTreeSet<NodeId> = BTreeSet::new();
            for evidence in &block.evidence {
                let Ok(facts) = check_evidence(&self.config.genesis, evidence, &self.cache) else {
                    unreachable!("committed evidence was validated");
                };
                actions.push(Action::Trace(TraceEvent::EvidenceCommitted {
                    height: header.height,
                    offender: facts.offender,
                    kind: evidence.kind(),
                    offence_height: facts.height,
                }));
                let jail_blocks = self.config.genesis.parameters.jail_blocks;
                if jail_blocks > 0 && jailed.insert(facts.offender) {
                    actions.push(Action::Trace(TraceEvent::Jailed {
                        validator: facts.offender,
                        until_height: header.height.saturating_add(jail_blocks),
                    }));
                }
            }
            touched_senders.extend(block.transfers.iter().map(|transfer| transfer.from));
        }
        // Transfers and reports of abandoned blocks go back to their pools, lowest block first:
        // rollback order is highest first, and a sender's later nonce cannot enter the pool
        // before its earlier one (it would leave a gap and be refused).
        let mut abandoned_for_good: Vec<&Arc<Block>> =
            abandoned.iter().filter(|(hash, _)| !applied_hashes.contains(hash)).map(|(_, block)| block).collect();
        abandoned_for_good.sort_by_key(|block| block.header.height);
        let mut regossiped = Vec::new();
        for block in abandoned_for_good {
            for transfer in &block.transfers {
                touched_senders.insert(transfer.from);
                let sender = self.state.account(&transfer.from);
                // Back in the pool, and gossiped again at once (not after the batch window: a
                // crash in between would lose the only copy the winning branch may get): peers
                // on it may never have seen it (it may have travelled only inside the
                // abandoned block).
                let id = transfer_id(transfer);
                match self.mempool.insert(transfer.clone(), id, &sender) {
                    Ok(inserted) => {
                        self.drop_removed(inserted.removed, &BTreeMap::new(), actions);
                        regossiped.push(transfer.clone());
                    }
                    Err(MempoolError::AlreadyKnown { .. }) => {}
                    Err(error) => {
                        // Committed once, now neither committed nor pending: say why, unless
                        // the new branch holds it too or used its nonce (told apart by `taken`).
                        let reason = match taken.get(&(transfer.from, transfer.nonce)) {
                            Some((by, _)) if *by == id => continue,
                            Some((by, height)) => DropReason::NonceTaken { by: *by, height: *height },
                            None => DropReason::NotReadmitted { reason: error.to_string() },
                        };
                        debug!(?id, %reason, "dropped a transfer of an abandoned block");
                        let dropped = DroppedTransfer {
                            id,
                            transfer: transfer.clone(),
                            reason,
                            tip_height: self.state.tip.height,
                        };
                        actions.push(Action::TxDropped(Box::new(dropped)));
                    }
                }
            }
            for report in &block.reports {
                if let Some(validator) = self.config.genesis.validator_index(&report.node) {
                    self.pool_report(validator as u32, report.clone());
                }
            }
        }
        for batch in regossiped.chunks(GOSSIP_BATCH_TRANSFERS_MAX) {
            actions.push(Action::Broadcast { message: Message::Transfers(batch.to_vec()), except: None });
        }
        let state = &self.state;
        let removed = self.mempool.revalidate_senders(&touched_senders, |address| state.account(address));
        self.drop_removed(removed, &taken, actions);
        for sender in &touched_senders {
            self.admit_gapped(sender, actions);
        }
        for (validator, pool) in self.report_pool.iter_mut() {
            if let Some(recorded) = self.state.validators[*validator as usize].recorded_sequence() {
                pool.retain(|sequence, _| *sequence > recorded);
            }
        }
        let tip_height = self.state.tip.height;
        self.evidence_watch.forget_below(tip_height.saturating_sub(EVIDENCE_WATCH_BLOCKS));
        self.evidence_pool.forget_too_old(tip_height, self.config.genesis.parameters.evidence_max_age_blocks);
        if finality.justified != old_justified {
            actions.push(Action::Trace(TraceEvent::Justified { checkpoint: finality.justified }));
        }
        if self.finalized != old_final {
            assert!(self.finalized.height > old_final.height, "the final block never moves back");
            actions.push(Action::Trace(TraceEvent::Finalized { checkpoint: self.finalized }));
            self.prune_below_final();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{hash_of, observer, receive, sent, traces, validator_id, Branch};
    use super::{Action, ChainOp, DisconnectReason, TraceEvent};
    use crate::mempool::DropReason;
    use crate::message::Message;
    use crate::testkit::{account_key, fast_genesis, sign_transfer};
    use crate::types::{Block, Checkpoint, Hash, Signature};
    use crate::validate::{transfer_id, BlockError};
    use std::sync::Arc;

    const NOW_MS: u64 = 1_000_000;

    /// The (kind, height, hash) of each storage op of the one `CommitBlocks` among `actions`.
    fn committed_ops(actions: &[Action]) -> Vec<(&'static str, u64, Hash)> {
        let commits: Vec<_> = actions
            .iter()
            .filter_map(|action| match action {
                Action::CommitBlocks(commit) => Some(commit),
                _ => None,
            })
            .collect();
        assert_eq!(commits.len(), 1, "one atomic commit per step: {actions:?}");
        commits[0]
            .ops
            .iter()
            .map(|op| match op {
                ChainOp::Rollback { height, hash, .. } => ("rollback", *height, *hash),
                ChainOp::Apply { block, hash, .. } => ("apply", block.header.height, *hash),
            })
            .collect()
    }

    fn block_message(block: &Arc<Block>) -> Message {
        Message::Block(block.clone())
    }

    #[test]
    fn a_preferred_branch_reorganises_the_chain_in_one_commit() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let (mut fallback, mut preferred) = (Branch::from_genesis(&genesis), Branch::from_genesis(&genesis));
        let fallback_block = fallback.extend(&genesis, 1, Vec::new(), Vec::new());
        let preferred_block = preferred.extend(&genesis, 0, Vec::new(), Vec::new());

        let actions = receive(&mut node, NOW_MS, validator_id(1), block_message(&fallback_block));
        assert_eq!(committed_ops(&actions), vec![("apply", 1, fallback.tip().hash)]);
        assert_eq!(node.tip(), fallback.tip());

        let actions = receive(&mut node, NOW_MS, validator_id(0), block_message(&preferred_block));
        assert_eq!(
            committed_ops(&actions),
            vec![("rollback", 1, fallback.tip().hash), ("apply", 1, preferred.tip().hash)]
        );
        assert!(traces(&actions).contains(&&TraceEvent::Reorg {
            fork_height: 0,
            rolled_back: 1,
            applied: 1,
            new_tip: preferred.tip(),
        }));
        assert_eq!(node.tip(), preferred.tip());
        assert_eq!(node.side_blocks(), 1, "the abandoned block stays in the tree as a side branch");
    }

    #[test]
    fn an_orphan_waits_for_its_parent_and_both_commit_together() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let mut branch = Branch::from_genesis(&genesis);
        branch.extend_empty(&genesis, 2);
        let from = validator_id(0);

        let actions = receive(&mut node, NOW_MS, from, block_message(&branch.blocks[1]));
        assert!(!actions.iter().any(|action| matches!(action, Action::CommitBlocks(_))));
        assert!(node.orphans.contains_key(&branch.hashes[2]));
        let asked: Vec<_> = sent(&actions).into_iter().filter(|(_, message)| message.kind() == "get_blocks").collect();
        assert_eq!(asked.len(), 1, "the sender is asked for the missing parent");
        assert_eq!(asked[0].0, from);

        let actions = receive(&mut node, NOW_MS, from, block_message(&branch.blocks[0]));
        assert_eq!(committed_ops(&actions), vec![("apply", 1, branch.hashes[1]), ("apply", 2, branch.hashes[2])]);
        assert!(node.orphans.is_empty());
        assert_eq!(node.tip(), branch.tip());
    }

    #[test]
    fn a_forged_block_is_rejected_once_and_its_sender_disconnected() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let mut branch = Branch::from_genesis(&genesis);
        let mut forged = (*branch.extend(&genesis, 0, Vec::new(), Vec::new())).clone();
        forged.header.signature = Signature([1; 64]);
        let (forged, hash) = (Arc::new(forged.clone()), hash_of(&forged));
        let from = validator_id(2);

        let actions = receive(&mut node, NOW_MS, from, block_message(&forged));
        assert_eq!(
            traces(&actions),
            vec![&TraceEvent::BlockRejected { hash, reason: BlockError::BadProducerSignature }]
        );
        assert!(actions.iter().any(|action| matches!(
            action,
            Action::DisconnectPeer { peer, reason: DisconnectReason::Block(BlockError::BadProducerSignature) }
                if *peer == from
        )));
        assert!(node.knows_block(&Checkpoint { height: 1, hash }), "remembered as invalid");
        assert_eq!(node.tip().height, 0);

        let again = receive(&mut node, NOW_MS, from, block_message(&forged));
        assert!(traces(&again).is_empty(), "a known invalid block is not checked again");
        assert!(!again.iter().any(|action| matches!(action, Action::DisconnectPeer { .. })));
    }

    #[test]
    fn transfers_of_an_abandoned_block_return_to_the_pool_or_are_dropped_naming_the_winner() {
        let genesis = fast_genesis(4, 3);
        let mut node = observer(&genesis);
        let chain_id = &genesis.chain_id;
        let to = account_key(2).address();
        // Account 0's nonce 0 goes to two different transfers; account 1's only to the loser.
        let lost_nonce = sign_transfer(&account_key(0), chain_id, to, 1, 0, 0);
        let winner = sign_transfer(&account_key(0), chain_id, to, 2, 0, 0);
        let returned = sign_transfer(&account_key(1), chain_id, to, 3, 0, 0);
        let (mut losing, mut winning) = (Branch::from_genesis(&genesis), Branch::from_genesis(&genesis));
        let losing_block = losing.extend(&genesis, 1, vec![lost_nonce.clone(), returned.clone()], Vec::new());
        let winning_block = winning.extend(&genesis, 0, vec![winner.clone()], Vec::new());

        let _ = receive(&mut node, NOW_MS, validator_id(1), block_message(&losing_block));
        assert_eq!(node.mempool().len(), 0, "committed transfers are not pending");
        let actions = receive(&mut node, NOW_MS, validator_id(0), block_message(&winning_block));
        assert_eq!(node.tip(), winning.tip());

        assert!(node.mempool().contains(&transfer_id(&returned)), "back in the pool");
        assert!(actions.iter().any(|action| matches!(
            action,
            Action::Broadcast { message: Message::Transfers(transfers), except: None } if *transfers == vec![returned.clone()]
        )), "gossiped again at once: {actions:?}");
        let dropped: Vec<_> = actions
            .iter()
            .filter_map(|action| match action {
                Action::TxDropped(dropped) => Some((dropped.id, dropped.reason.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            dropped,
            vec![(transfer_id(&lost_nonce), DropReason::NonceTaken { by: transfer_id(&winner), height: 1 })]
        );
    }
}
