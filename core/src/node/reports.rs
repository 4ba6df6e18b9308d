//! Metric reports and the votes they carry: reports received and checked, the pool of reports
//! the chain has not recorded yet (per validator, by sequence, bounded), and this node's own
//! report for each new tip with a vote when the two voting rules allow it, persisted before it
//! is sent.

use super::{Action, DisconnectReason, Node};
use crate::limits::REPORT_POOL_PER_VALIDATOR_MAX;
use crate::message::Message;
use crate::types::{MetricReport, NodeId, Vote};
use crate::validate::{self, check_report_alone, report_id};
use tracing::debug;

impl Node {
    pub(super) fn on_report(&mut self, now_ms: u64, from: NodeId, report: MetricReport, actions: &mut Vec<Action>) {
        let id = report_id(&report);
        if !self.seen.insert(id) {
            return;
        }
        let validator = match check_report_alone(&self.config.genesis, &report, &self.cache) {
            Ok(validator) => validator,
            Err(error) => {
                debug!(%error, "rejecting report");
                if matches!(error, validate::ReportError::BadSignature) {
                    actions.push(Action::DisconnectPeer { peer: from, reason: DisconnectReason::Report(error) });
                }
                return;
            }
        };
        self.watch_report(&report, actions);
        if !self.pool_report(validator, report.clone()) {
            debug!(sequence = report.sequence, "ignoring report: the chain already records a later one");
            return;
        }
        let tip = report.tip;
        self.gossip(id, Message::Report(report), Some(from), actions);
        if !self.knows_block(&tip) && tip.height > self.finalized.height {
            self.request_sync(now_ms, from, actions);
        }
    }

    /// Keeps a report the chain has not recorded yet. Returns false if it is stale.
    pub(super) fn pool_report(&mut self, validator: u32, report: MetricReport) -> bool {
        let recorded = self.recorded_sequence(validator);
        if recorded.is_some_and(|recorded| report.sequence <= recorded) {
            return false;
        }
        let pool = self.report_pool.entry(validator).or_default();
        pool.insert(report.sequence, report);
        while pool.len() > REPORT_POOL_PER_VALIDATOR_MAX {
            pool.pop_first();
        }
        true
    }

    fn recorded_sequence(&self, validator: u32) -> Option<u64> {
        self.state.validators[validator as usize].recorded_sequence()
    }

    /// Signs and sends a fresh report for the current tip, with a vote when the tip moved past
    /// the last vote and the two voting rules allow it.
    pub(super) fn send_report(&mut self, actions: &mut Vec<Action>) {
        self.reported_tip = Some(self.state.tip);
        let Some(validator) = self.validator_index else {
            return;
        };
        let tip = self.state.tip;
        let source = self.state.finality.justified;
        let last_target_height = self.last_vote.map_or(0, |vote| vote.target.height);
        let last_source_height = self.last_vote.map_or(0, |vote| vote.source.height);
        // Rule 1: target heights strictly increase. Rule 2: source heights never decrease.
        let vote =
            (tip.height > last_target_height && source.height >= last_source_height && source.height < tip.height)
                .then_some(Vote { source, target: tip });
        let (cpu, net) = self.latest_metrics;
        let sequence = self.report_sequence + 1;
        let mut report = MetricReport {
            node: self.config.key.address(),
            sequence,
            tip,
            cpu,
            net,
            score: self.config.genesis.score(cpu, net),
            vote,
            signature: Default::default(),
        };
        report.signature =
            self.config.key.sign(&crate::codec::report_signing_bytes(&self.config.genesis.chain_id, &report));
        self.report_sequence = sequence;
        if vote.is_some() {
            self.last_vote = vote;
        }
        // Persisted before it is sent: a restarted node resumes above this sequence and vote.
        actions.push(Action::PersistReportState { last_vote: self.last_vote, report_sequence: sequence });
        self.seen.insert(report_id(&report));
        self.pool_report(validator, report.clone());
        self.watch_report(&report, actions);
        actions.push(Action::Broadcast { message: Message::Report(report), except: None });
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cache, observer, receive, signed_report, validator_id, Branch};
    use super::{Action, DisconnectReason};
    use crate::limits::REPORT_POOL_PER_VALIDATOR_MAX;
    use crate::message::Message;
    use crate::testkit::{fast_genesis, validator_node};
    use crate::types::{MetricReport, Signature, Vote};
    use crate::validate::ReportError;

    const NOW_MS: u64 = 1_000_000;

    /// The reports among `actions`, broadcast or sent to one peer.
    fn reports_sent(actions: &[Action]) -> Vec<&MetricReport> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::Broadcast { message: Message::Report(report), .. } => Some(report),
                Action::SendTo { message: Message::Report(report), .. } => Some(report),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_pool_keeps_only_reports_above_the_recorded_sequence_and_the_latest_few() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let genesis_tip = Branch::from_genesis(&genesis).tip();
        let recorded = signed_report(&genesis, 1, 3, genesis_tip, None);
        let mut branch = Branch::from_genesis(&genesis);
        branch.extend(&genesis, 0, Vec::new(), vec![recorded]);
        let _ = receive(&mut node, NOW_MS, validator_id(0), Message::Block(branch.blocks[0].clone()));
        assert_eq!(node.recorded_sequence(1), Some(3));
        assert_eq!(node.recorded_sequence(2), None);

        for sequence in [2, 3] {
            assert!(!node.pool_report(1, signed_report(&genesis, 1, sequence, genesis_tip, None)), "{sequence}");
        }
        assert!(node.pool_report(2, signed_report(&genesis, 2, 1, genesis_tip, None)), "nothing recorded yet");
        let newest = 4 + REPORT_POOL_PER_VALIDATOR_MAX as u64;
        for sequence in 4..=newest {
            assert!(node.pool_report(1, signed_report(&genesis, 1, sequence, genesis_tip, None)));
        }
        let pooled: Vec<u64> = node.report_pool[&1].keys().copied().collect();
        assert_eq!(pooled, (5..=newest).collect::<Vec<u64>>(), "bounded, the oldest dropped first");
    }

    #[test]
    fn a_report_votes_only_when_its_target_height_rises_and_is_persisted_before_it_is_sent() {
        let genesis = fast_genesis(4, 0);
        let mut node = validator_node(&genesis, 0, &cache());
        let mut actions = Vec::new();
        node.send_report(&mut actions);
        assert!(matches!(
            &actions[..],
            [Action::PersistReportState { last_vote: None, report_sequence: 1 }, Action::Broadcast { .. }]
        ));
        assert_eq!(reports_sent(&actions)[0].vote, None, "no vote for genesis");

        let mut branch = Branch::from_genesis(&genesis);
        branch.extend(&genesis, 1, Vec::new(), Vec::new());
        let actions = receive(&mut node, NOW_MS, validator_id(1), Message::Block(branch.blocks[0].clone()));
        let vote = Vote { source: Branch::from_genesis(&genesis).tip(), target: branch.tip() };
        let persist = actions.iter().position(|action| {
            matches!(action, Action::PersistReportState { last_vote: Some(persisted), report_sequence: 2 } if *persisted == vote)
        });
        let broadcast = actions.iter().position(|action| {
            matches!(action, Action::Broadcast { message: Message::Report(report), .. } if report.vote == Some(vote))
        });
        assert!(persist.expect("the vote is persisted") < broadcast.expect("the vote is sent"));
        assert_eq!(node.last_vote(), Some(vote));

        let mut actions = Vec::new();
        node.send_report(&mut actions);
        let again = reports_sent(&actions);
        assert_eq!((again[0].sequence, again[0].vote), (3, None), "no second vote for the same target height");
        assert_eq!(node.last_vote(), Some(vote));
        assert_eq!(node.report_sequence(), 3);
    }

    #[test]
    fn a_forged_report_disconnects_its_sender_and_a_report_is_relayed_once() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let tip = Branch::from_genesis(&genesis).tip();
        let (peer, relay) = (validator_id(1), validator_id(2));
        let mut forged = signed_report(&genesis, 1, 1, tip, None);
        forged.signature = Signature([5; 64]);
        let actions = receive(&mut node, NOW_MS, peer, Message::Report(forged));
        assert!(actions.iter().any(|action| matches!(
            action,
            Action::DisconnectPeer { peer: to, reason: DisconnectReason::Report(ReportError::BadSignature) }
                if *to == peer
        )));
        assert!(node.report_pool.is_empty());

        let report = signed_report(&genesis, 1, 1, tip, None);
        let actions = receive(&mut node, NOW_MS, relay, Message::Report(report.clone()));
        assert_eq!(reports_sent(&actions), vec![&report]);
        assert!(!actions.iter().any(|action| matches!(action, Action::DisconnectPeer { .. })));
        let actions = receive(&mut node, NOW_MS, peer, Message::Report(report));
        assert!(reports_sent(&actions).is_empty(), "seen once, relayed once");
    }
}
