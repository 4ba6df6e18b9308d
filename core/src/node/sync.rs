//! Catching up with peers: their advertised tips (`Status`), asking for blocks with a locator,
//! answering such requests, taking the answers, and whether a higher tip we are fetching holds
//! production back.

use super::{Action, Node, TraceEvent};
use crate::limits::{LOCATOR_HASHES_MAX, SYNC_BLOCKS_PER_RESPONSE_MAX};
use crate::message::Message;
use crate::types::{Block, Checkpoint, NodeId};
use crate::validate::block_hash;
use std::sync::Arc;
use tracing::debug;

impl Node {
    /// A sync response: the blocks are taken like gossiped ones (at most
    /// `SYNC_BLOCKS_PER_RESPONSE_MAX`), then the peer's advertised tip decides whether to ask
    /// for more, continue after blocks we already had, or stop asking.
    pub(super) fn on_blocks(&mut self, now_ms: u64, from: NodeId, blocks: Vec<Arc<Block>>, actions: &mut Vec<Action>) {
        self.sync_requested_at_ms.remove(&from);
        if self.peers.get(&from).is_some_and(|peer_state| peer_state.evidence_walk) {
            self.on_walked_blocks(now_ms, from, &blocks, actions);
            return;
        }
        let last = blocks[..blocks.len().min(SYNC_BLOCKS_PER_RESPONSE_MAX)]
            .last()
            .map(|block| Checkpoint { height: block.header.height, hash: block_hash(&block.header) });
        let known_before = self.tree.len() + self.orphans.len();
        let tree_before = self.tree.len();
        for block in blocks.into_iter().take(SYNC_BLOCKS_PER_RESPONSE_MAX) {
            self.on_block(now_ms, Some(from), block, false, actions);
        }
        let learned_something = self.tree.len() + self.orphans.len() != known_before;
        // Only blocks that joined our tree show the peer's tip is real: orphans (blocks
        // whose parent we lack) cost a dishonest peer nothing to make up.
        let connected_something = self.tree.len() > tree_before;
        let advertised_is_unknown =
            self.peers.get(&from).and_then(|peer_state| peer_state.tip).is_some_and(|tip| !self.knows_block(&tip));
        // Blocks we already had: they are the peer's chain where it still agrees with
        // ours (our locator matched far below the fork). Continue right after the last
        // one instead of concluding there is nothing to learn.
        if let (false, true, Some(last)) = (learned_something, advertised_is_unknown, last) {
            if self.knows_block(&last) {
                self.request_sync_after(now_ms, from, Some(last), actions);
                return;
            }
        }
        let peer_state = self.peers.entry(from).or_default();
        if connected_something {
            peer_state.tip_fresh_at_ms = now_ms;
        }
        if !learned_something && advertised_is_unknown {
            // Nothing new, and the tip it advertised is still unknown: that tip is not on
            // its canonical chain any more. Stop asking (and stop holding production
            // back) until it says more.
            peer_state.tip = None;
        }
        let peer_tip = peer_state.tip;
        if learned_something && peer_tip.is_some_and(|tip| !self.knows_block(&tip)) {
            self.request_sync(now_ms, from, actions);
        }
    }

    pub(super) fn on_status(
        &mut self,
        now_ms: u64,
        from: NodeId,
        tip: Checkpoint,
        finalized: Checkpoint,
        actions: &mut Vec<Action>,
    ) {
        // Its final block sits at or below ours but is not on our chain: two final blocks
        // conflict. Read its chain from the fork for the votes that prove who caused it.
        let is_conflict = finalized.height <= self.finalized.height
            && self.canonical_hash(finalized.height).is_some_and(|hash| hash != finalized.hash);
        let peer_state = self.peers.entry(from).or_default();
        peer_state.tip = Some(tip);
        // Only the first status of a connection makes its tip fresh (holding production back
        // while we fetch it); later ones wait for blocks to flow. Honest peers send one status
        // per connection; a peer that kept advertising tips it never serves would otherwise
        // stall production for ever (the sync-stall attack of CometBFT advisory GO-2025-3442).
        if !peer_state.status_received {
            peer_state.tip_fresh_at_ms = now_ms;
        }
        peer_state.status_received = true;
        if is_conflict {
            tracing::error!(peer = ?from, ours = ?self.finalized, theirs = ?finalized, "finality conflict with a peer");
            actions.push(Action::Trace(TraceEvent::FinalityConflict {
                peer: from,
                ours: self.finalized,
                theirs: finalized,
            }));
            peer_state.evidence_walk = true;
            self.sync_requested_at_ms.remove(&from);
            self.request_sync(now_ms, from, actions);
            return;
        }
        if !self.knows_block(&tip) {
            self.request_sync(now_ms, from, actions);
        }
    }

    pub(super) fn request_sync(&mut self, now_ms: u64, peer: NodeId, actions: &mut Vec<Action>) {
        self.request_sync_after(now_ms, peer, None, actions);
    }

    /// Asks `peer` for blocks; `after` (a block of its chain we already hold) leads the locator,
    /// so the answer continues from there.
    pub(super) fn request_sync_after(
        &mut self,
        now_ms: u64,
        peer: NodeId,
        after: Option<Checkpoint>,
        actions: &mut Vec<Action>,
    ) {
        if self.sync_requested_at_ms.contains_key(&peer) {
            return;
        }
        self.sync_requested_at_ms.insert(peer, now_ms);
        actions.push(Action::Trace(TraceEvent::SyncRequested { peer, have_height: self.state.tip.height }));
        let is_walk = self.peers.get(&peer).is_some_and(|peer_state| peer_state.evidence_walk);
        let mut locator = if is_walk { self.locator_to_genesis() } else { self.locator() };
        if let Some(after) = after {
            locator.truncate(LOCATOR_HASHES_MAX - 1);
            locator.insert(0, after);
        }
        actions.push(Action::SendTo { peer, message: Message::GetBlocks { locator } });
    }

    /// Checkpoints the peer can match against its canonical chain: first along the highest
    /// side branch we hold (which may be one we are still fetching, so the next response
    /// continues it instead of repeating itself), then along our canonical chain; each from its
    /// tip back to our final block, the last ten densely, then exponentially spaced.
    fn locator(&self) -> Vec<Checkpoint> {
        let highest_side_leaf = self
            .tree
            .iter()
            .filter(|(hash, _)| **hash != self.state.tip.hash && self.is_leaf(hash))
            .max_by_key(|(hash, entry)| (entry.height, std::cmp::Reverse(**hash)))
            .map(|(hash, entry)| Checkpoint { height: entry.height, hash: *hash });
        let mut locator = Vec::new();
        let half = LOCATOR_HASHES_MAX / 2;
        if let Some(leaf) = highest_side_leaf {
            locator.extend(self.locator_along(leaf, half));
        }
        let budget = LOCATOR_HASHES_MAX - locator.len();
        locator.extend(self.locator_along(self.state.tip, budget));
        locator
    }

    /// Canonical checkpoints from the tip down to genesis (the last ten densely, then
    /// exponentially spaced): a peer whose chain left ours below our final block matches one
    /// at or below the fork and answers from there (see `on_status`).
    fn locator_to_genesis(&self) -> Vec<Checkpoint> {
        let mut locator = Vec::new();
        let mut height = self.state.tip.height;
        let mut step = 1u64;
        while height > 0 && locator.len() + 1 < LOCATOR_HASHES_MAX {
            locator.push(Checkpoint { height, hash: self.canonical[height as usize] });
            if locator.len() >= 10 {
                step = step.saturating_mul(2);
            }
            height = height.saturating_sub(step);
        }
        locator.push(Checkpoint { height: 0, hash: self.genesis_hash });
        locator
    }

    /// Checkpoints from `tip` down to our final block (never below it: anything worth fetching
    /// descends from it, and stopping there lets the first answer start at or above it).
    fn locator_along(&self, tip: Checkpoint, budget: usize) -> Vec<Checkpoint> {
        let final_height = self.finalized.height;
        let mut locator = Vec::new();
        let mut height = tip.height;
        let mut step = 1u64;
        while height > final_height && locator.len() + 1 < budget {
            let Some(hash) = self.ancestor_hash(tip.hash, height) else {
                break;
            };
            locator.push(Checkpoint { height, hash });
            if locator.len() >= 10 {
                step = step.saturating_mul(2);
            }
            height = height.saturating_sub(step).max(final_height);
        }
        locator.push(self.finalized);
        locator
    }

    pub(super) fn on_get_blocks(&mut self, from: NodeId, locator: &[Checkpoint], actions: &mut Vec<Action>) {
        let shared = locator
            .iter()
            .take(LOCATOR_HASHES_MAX)
            .filter(|checkpoint| self.canonical_hash(checkpoint.height) == Some(checkpoint.hash))
            .map(|checkpoint| checkpoint.height)
            .max();
        let Some(shared_height) = shared else {
            debug!("ignoring block request: no locator checkpoint is on this chain");
            return;
        };
        if shared_height >= self.state.tip.height {
            // Nothing to send, but say so: a peer that asked because of a tip we advertised and
            // have since abandoned must learn it is not on offer, or it would keep waiting.
            actions.push(Action::SendTo { peer: from, message: Message::Blocks(Vec::new()) });
            return;
        }
        let from_height = shared_height + 1;
        let to_height = self.state.tip.height.min(shared_height + SYNC_BLOCKS_PER_RESPONSE_MAX as u64);
        actions.push(Action::ServeBlocks { peer: from, from_height, to_height });
    }
    /// A peer advertised a higher tip that we do not have, recently or with blocks flowing
    /// toward it: we are behind and syncing. An announcement that stays unanswered for a
    /// producer timeout stops counting, so one faulty or cut-off peer cannot hold production
    /// back for ever.
    pub(super) fn is_syncing(&self, now_ms: u64) -> bool {
        let fresh_ms = self.config.genesis.parameters.producer_timeout_ms;
        self.peers.values().any(|peer_state| {
            peer_state.tip.is_some_and(|tip| tip.height > self.state.tip.height && !self.knows_block(&tip))
                && now_ms < peer_state.tip_fresh_at_ms.saturating_add(fresh_ms)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{observer, receive, receive_branch, sent, traces, validator_id, Branch};
    use super::{Action, TraceEvent};
    use crate::limits::{LOCATOR_HASHES_MAX, SYNC_BLOCKS_PER_RESPONSE_MAX, SYNC_RETRY_MS};
    use crate::message::Message;
    use crate::node::Event;
    use crate::testkit::fast_genesis;
    use crate::types::{Checkpoint, Hash};

    const NOW_MS: u64 = 1_000_000;

    fn checkpoint_at(branch: &Branch, height: u64) -> Checkpoint {
        Checkpoint { height, hash: branch.hashes[height as usize] }
    }

    #[test]
    fn the_locator_is_dense_for_ten_then_doubles_its_steps_down_to_the_final_block() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let mut branch = Branch::from_genesis(&genesis);
        branch.extend_empty(&genesis, 40);
        receive_branch(&mut node, NOW_MS, validator_id(0), &branch);
        assert_eq!(node.tip(), branch.tip());
        let heights: Vec<u64> = (31..=40).rev().chain([29, 25, 17, 1, 0]).collect();
        let expected: Vec<Checkpoint> = heights.iter().map(|height| checkpoint_at(&branch, *height)).collect();
        assert_eq!(node.locator(), expected);
        // Nothing is final yet, so the walk to genesis is the same walk.
        assert_eq!(node.locator_to_genesis(), expected);
    }

    #[test]
    fn the_highest_side_branch_leads_the_locator_and_the_canonical_chain_follows() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let mut canonical = Branch::from_genesis(&genesis);
        canonical.extend_empty(&genesis, 10);
        let mut side = canonical.clone();
        side.extend(&genesis, 1, Vec::new(), Vec::new());
        canonical.extend_empty(&genesis, 2);
        receive_branch(&mut node, NOW_MS, validator_id(0), &canonical);
        receive_branch(&mut node, NOW_MS, validator_id(1), &side);
        assert_eq!(node.tip(), canonical.tip(), "the longer branch stays canonical");

        let locator = node.locator();
        assert!(locator.len() <= LOCATOR_HASHES_MAX);
        assert_eq!(locator[0], side.tip(), "the side leaf first, so fetching it continues");
        let genesis_checkpoint = checkpoint_at(&canonical, 0);
        let side_end = locator.iter().position(|checkpoint| *checkpoint == genesis_checkpoint).expect("side walk ends");
        assert_eq!(locator[side_end + 1], canonical.tip(), "then the canonical chain from its tip");
        assert_eq!(locator.last(), Some(&genesis_checkpoint), "down to the final block");
    }

    #[test]
    fn block_requests_are_answered_from_the_highest_shared_checkpoint_and_bounded() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let mut branch = Branch::from_genesis(&genesis);
        branch.extend_empty(&genesis, 70);
        receive_branch(&mut node, NOW_MS, validator_id(0), &branch);
        let peer = validator_id(3);
        let serve = |node: &mut super::Node, locator: Vec<Checkpoint>| -> Vec<Action> {
            receive(node, NOW_MS, peer, Message::GetBlocks { locator })
                .into_iter()
                .filter(|action| matches!(action, Action::ServeBlocks { .. } | Action::SendTo { .. }))
                .collect()
        };

        let foreign = Checkpoint { height: 3, hash: Hash([9; 32]) };
        let actions = serve(&mut node, vec![foreign, checkpoint_at(&branch, 60), checkpoint_at(&branch, 5)]);
        assert!(
            matches!(actions[..], [Action::ServeBlocks { peer: to, from_height: 61, to_height: 70 }] if to == peer),
            "{actions:?}"
        );
        let actions = serve(&mut node, vec![checkpoint_at(&branch, 0)]);
        let to_height = SYNC_BLOCKS_PER_RESPONSE_MAX as u64;
        assert!(
            matches!(actions[..], [Action::ServeBlocks { from_height: 1, to_height: bound, .. }] if bound == to_height)
        );
        let actions = serve(&mut node, vec![branch.tip()]);
        assert!(
            matches!(&actions[..], [Action::SendTo { message: Message::Blocks(blocks), .. }] if blocks.is_empty()),
            "a peer level with us learns there is nothing to send: {actions:?}"
        );
        assert!(serve(&mut node, vec![foreign]).is_empty(), "no shared checkpoint: no answer");
    }

    #[test]
    fn an_unknown_higher_tip_is_fetched_once_at_a_time_and_holds_production_only_while_fresh() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let mut branch = Branch::from_genesis(&genesis);
        branch.extend_empty(&genesis, 3);
        let peer = validator_id(1);
        let _ = node.step(NOW_MS, Event::PeerConnected { peer });
        let status = Message::Status { tip: branch.tip(), finalized: checkpoint_at(&branch, 0) };

        let actions = receive(&mut node, NOW_MS, peer, status.clone());
        let requests = |actions: &[Action]| {
            sent(actions).into_iter().filter(|(to, message)| *to == peer && message.kind() == "get_blocks").count()
        };
        assert_eq!(requests(&actions), 1);
        assert_eq!(traces(&actions), vec![&TraceEvent::SyncRequested { peer, have_height: 0 }]);
        assert!(node.is_syncing(NOW_MS));

        let actions = receive(&mut node, NOW_MS + 1, peer, status);
        assert_eq!(requests(&actions), 0, "one request in flight per peer");
        let actions = node.step(NOW_MS + SYNC_RETRY_MS, Event::Tick);
        assert_eq!(requests(&actions), 1, "asked again once the request is unanswered for the retry time");

        let fresh_ms = genesis.parameters.producer_timeout_ms;
        assert!(node.is_syncing(NOW_MS + fresh_ms - 1));
        assert!(!node.is_syncing(NOW_MS + fresh_ms), "an advertised tip that never arrives stops holding production");
    }
}
