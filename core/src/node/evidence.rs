//! The node's part in accountability: feeding what it sees (headers and votes whose signatures
//! were checked) to the evidence watch, verifying evidence noticed or received, pooling it once
//! per offence and gossiping it, and reading a conflicting chain for the votes that prove who
//! broke the rules. The watch and the pool themselves are `crate::evidence`.

use super::{Action, DisconnectReason, Node, TraceEvent};
use crate::evidence::PooledEvidence;
use crate::limits::{EVIDENCE_WATCH_BLOCKS, SYNC_BLOCKS_PER_RESPONSE_MAX};
use crate::message::Message;
use crate::types::{Block, Checkpoint, Evidence, MetricReport, NodeId};
use crate::validate::{block_hash, check_block_shape, check_evidence, check_report_alone, evidence_id, EvidenceError};
use std::sync::Arc;
use tracing::debug;

impl Node {
    /// Evidence from a peer (`from`) or noticed by this node (None): verified, pooled once per
    /// offence, gossiped.
    pub(super) fn on_evidence(&mut self, from: Option<NodeId>, evidence: Evidence, actions: &mut Vec<Action>) {
        let id = evidence_id(&evidence);
        if from.is_some() && !self.seen.insert(id) {
            return;
        }
        let facts = match check_evidence(&self.config.genesis, &evidence, &self.cache) {
            Ok(facts) => facts,
            Err(error) => {
                debug!(%error, "rejecting evidence");
                if let (EvidenceError::BadSignature, Some(peer)) = (&error, from) {
                    actions.push(Action::DisconnectPeer { peer, reason: DisconnectReason::Evidence(error) });
                }
                return;
            }
        };
        let max_age_blocks = self.config.genesis.parameters.evidence_max_age_blocks;
        if facts.height.saturating_add(max_age_blocks) <= self.state.tip.height {
            debug!(offence_height = facts.height, "ignoring evidence: too old to commit");
            return;
        }
        if !self.evidence_pool.insert(PooledEvidence { id, evidence: evidence.clone(), facts }) {
            return;
        }
        if Some(facts.offender) == self.validator_index.map(|_| self.node_id()) && from.is_none() {
            // Our own watch accusing us means this node broke a voting or production rule.
            tracing::error!(kind = evidence.kind(), "this node's own objects form evidence against it: a bug");
        }
        actions.push(Action::Trace(TraceEvent::EvidenceSeen {
            offender: facts.offender,
            kind: evidence.kind(),
            offence_height: facts.height,
        }));
        if from.is_none() {
            self.seen.insert(id);
        }
        self.gossip(id, Message::Evidence(Box::new(evidence)), from, actions);
    }

    /// Feeds a header whose signature was checked to the watch.
    pub(super) fn watch_header(&mut self, header: &crate::types::BlockHeader, actions: &mut Vec<Action>) {
        if header.height.saturating_add(EVIDENCE_WATCH_BLOCKS) < self.state.tip.height {
            return;
        }
        if let Some(evidence) = self.evidence_watch.observe_header(header) {
            self.on_evidence(None, evidence, actions);
        }
    }

    /// Feeds a report whose signature and fields were checked to the watch.
    pub(super) fn watch_report(&mut self, report: &MetricReport, actions: &mut Vec<Action>) {
        let Some(vote) = report.vote else { return };
        if vote.target.height.saturating_add(EVIDENCE_WATCH_BLOCKS) < self.state.tip.height {
            return;
        }
        for evidence in self.evidence_watch.observe_report(report) {
            self.on_evidence(None, evidence, actions);
        }
    }

    /// Watches every report of a block, checking each (signatures are cached).
    pub(super) fn watch_block_reports(&mut self, block: &Block, actions: &mut Vec<Action>) {
        for report in &block.reports {
            if report.vote.is_some() && check_report_alone(&self.config.genesis, report, &self.cache).is_ok() {
                self.watch_report(report, actions);
            }
        }
    }

    /// Blocks of a peer whose final block conflicts with ours: read for evidence (their header
    /// and their votes), never followed; then ask for the next ones until its tip.
    pub(super) fn on_walked_blocks(
        &mut self,
        now_ms: u64,
        from: NodeId,
        blocks: &[Arc<Block>],
        actions: &mut Vec<Action>,
    ) {
        for block in blocks.iter().take(SYNC_BLOCKS_PER_RESPONSE_MAX) {
            if check_block_shape(&self.config.genesis, block, &self.cache).is_err() {
                continue;
            }
            self.watch_header(&block.header, actions);
            self.watch_block_reports(block, actions);
        }
        let last = blocks[..blocks.len().min(SYNC_BLOCKS_PER_RESPONSE_MAX)]
            .last()
            .map(|block| Checkpoint { height: block.header.height, hash: block_hash(&block.header) });
        let peer_tip = self.peers.get(&from).and_then(|peer_state| peer_state.tip);
        match (last, peer_tip) {
            (Some(last), Some(tip)) if last.height < tip.height => {
                self.request_sync_after(now_ms, from, Some(last), actions)
            }
            _ => {
                debug!(peer = ?from, "read the conflicting chain for evidence up to its tip");
                if let Some(peer_state) = self.peers.get_mut(&from) {
                    peer_state.evidence_walk = false;
                    peer_state.tip = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{hash_of, observer, receive, receive_branch, sent, traces, validator_id, Branch};
    use super::{Action, DisconnectReason, EvidenceError, TraceEvent};
    use crate::message::Message;
    use crate::node::Event;
    use crate::testkit::{account_key, fast_genesis, sign_transfer};
    use crate::types::{Checkpoint, Evidence, Signature};
    use crate::validate::block_hash;

    const NOW_MS: u64 = 1_000_000;

    /// Two branches whose first blocks are two different headers of one producer on genesis.
    fn equivocation(genesis: &crate::genesis::Genesis) -> (Branch, Branch) {
        let transfer = sign_transfer(&account_key(0), &genesis.chain_id, account_key(1).address(), 1, 0, 0);
        let (mut plain, mut with_transfer) = (Branch::from_genesis(genesis), Branch::from_genesis(genesis));
        plain.extend(genesis, 0, Vec::new(), Vec::new());
        with_transfer.extend(genesis, 0, vec![transfer], Vec::new());
        (plain, with_transfer)
    }

    fn evidence_broadcast(actions: &[Action]) -> Vec<&Evidence> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::Broadcast { message: Message::Evidence(evidence), except: None } => Some(&**evidence),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn two_headers_of_one_producer_on_one_parent_become_evidence_pooled_and_gossiped_once() {
        let genesis = fast_genesis(4, 2);
        let mut node = observer(&genesis);
        let (plain, with_transfer) = equivocation(&genesis);
        let producer = plain.blocks[0].header.producer;
        let _ = receive(&mut node, NOW_MS, validator_id(1), Message::Block(plain.blocks[0].clone()));
        let actions = receive(&mut node, NOW_MS, validator_id(2), Message::Block(with_transfer.blocks[0].clone()));
        assert!(traces(&actions).contains(&&TraceEvent::EvidenceSeen {
            offender: producer,
            kind: "double_production",
            offence_height: 1,
        }));
        let gossiped = evidence_broadcast(&actions);
        assert_eq!(gossiped.len(), 1, "noticed here, so sent to every peer");
        assert_eq!(node.pending_evidence(), 1);
        assert_eq!(node.evidence_offenders().into_iter().collect::<Vec<_>>(), vec![producer]);

        let evidence = gossiped[0].clone();
        let again = receive(&mut node, NOW_MS, validator_id(3), Message::Evidence(Box::new(evidence)));
        assert!(traces(&again).is_empty(), "one piece per offence");
        assert!(evidence_broadcast(&again).is_empty());
        assert_eq!(node.pending_evidence(), 1);
    }

    #[test]
    fn evidence_with_a_forged_signature_disconnects_its_sender() {
        let genesis = fast_genesis(4, 2);
        let mut node = observer(&genesis);
        let (plain, _) = equivocation(&genesis);
        let genuine = plain.blocks[0].header.clone();
        let mut forged = genuine.clone();
        forged.timestamp_ms += 1;
        forged.signature = Signature([4; 64]);
        let (first, second) =
            if block_hash(&genuine) < block_hash(&forged) { (genuine, forged) } else { (forged, genuine) };
        let peer = validator_id(2);
        let evidence = Evidence::DoubleProduction { first, second };
        let actions = receive(&mut node, NOW_MS, peer, Message::Evidence(Box::new(evidence)));
        assert!(actions.iter().any(|action| matches!(
            action,
            Action::DisconnectPeer { peer: to, reason: DisconnectReason::Evidence(EvidenceError::BadSignature) }
                if *to == peer
        )));
        assert_eq!(node.pending_evidence(), 0);
        assert!(traces(&actions).is_empty());
    }

    #[test]
    fn a_conflicting_final_block_makes_the_node_read_that_chain_for_evidence_without_following_it() {
        let genesis = fast_genesis(4, 2);
        let mut node = observer(&genesis);
        let (mut ours, mut theirs) = equivocation(&genesis);
        ours.extend_empty(&genesis, 2);
        theirs.extend_empty(&genesis, 3);
        receive_branch(&mut node, NOW_MS, validator_id(0), &ours);
        // Finality needs votes; what matters here is only that our block 2 is final.
        let our_final = Checkpoint { height: 2, hash: ours.hashes[2] };
        node.finalized = our_final;
        let peer = validator_id(3);
        let _ = node.step(NOW_MS, Event::PeerConnected { peer });
        let their_final = Checkpoint { height: 2, hash: theirs.hashes[2] };

        let actions = receive(&mut node, NOW_MS, peer, Message::Status { tip: theirs.tip(), finalized: their_final });
        assert!(traces(&actions).contains(&&TraceEvent::FinalityConflict {
            peer,
            ours: our_final,
            theirs: their_final
        }));
        let locators: Vec<_> = sent(&actions)
            .into_iter()
            .filter_map(|(to, message)| match message {
                Message::GetBlocks { locator } if to == peer => Some(locator.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(locators.len(), 1);
        let genesis_checkpoint = Checkpoint { height: 0, hash: node.genesis_hash() };
        assert_eq!(locators[0].last(), Some(&genesis_checkpoint), "below the final block, down to genesis");
        assert!(node.peers[&peer].evidence_walk);

        let actions = receive(&mut node, NOW_MS, peer, Message::Blocks(theirs.blocks.clone()));
        assert!(traces(&actions).contains(&&TraceEvent::EvidenceSeen {
            offender: ours.blocks[0].header.producer,
            kind: "double_production",
            offence_height: 1,
        }));
        assert!(!actions.iter().any(|action| matches!(action, Action::CommitBlocks(_))), "read, never followed");
        assert_eq!(node.tip(), ours.tip());
        assert!(!node.tree.contains_key(&hash_of(&theirs.blocks[3])));
        assert!(!node.peers[&peer].evidence_walk, "read up to its tip: the walk is over");
        assert_eq!(node.peers[&peer].tip, None);
    }
}
