//! Block production: this node's rank for the next block (the ranking cached per tip), when it
//! becomes eligible, what holds it back (warming up after a start, syncing), and assembling the
//! block from pooled reports, pending transfers and evidence.

use super::{Action, Node, TraceEvent};
use crate::election::eligible_at_ms;
use crate::types::MetricReport;
use crate::validate::build_block;
use tracing::debug;

/// Bytes of a block kept free for the header and the encoding's length prefixes when filling it.
const BLOCK_BYTES_RESERVED_FOR_HEADER: usize = 1024;

impl Node {
    /// Recomputes the cached ranking if the tip moved since it was computed.
    pub(super) fn refresh_ranking(&mut self) {
        if self.ranking_parent != Some(self.state.tip) {
            self.ranking = self.next_election();
            self.ranking_parent = Some(self.state.tip);
            self.my_rank = self.validator_index.and_then(|index| {
                self.ranking.iter().find(|candidate| candidate.validator_index == index).map(|candidate| candidate.rank)
            });
        }
    }

    fn my_rank(&self) -> Option<u32> {
        assert_eq!(self.ranking_parent, Some(self.state.tip), "the ranking is refreshed before it is read");
        self.my_rank
    }
    /// Just (re)started, and fewer validators than make a supermajority with us have told us
    /// their tips, or the first mempool sync is not over. An up-to-date one among them would
    /// advertise a newer tip and sync would hold production back; waiting for every validator
    /// would let one dead node delay a restarted producer by a whole timeout.
    fn is_warming_up(&self, now_ms: u64) -> bool {
        if !self.mempool_synced {
            return true;
        }
        let started_at_ms = self.started_at_ms.unwrap_or(now_ms);
        if now_ms >= started_at_ms.saturating_add(self.config.genesis.parameters.producer_timeout_ms) {
            return false;
        }
        let heard_from = self.peers.values().filter(|peer_state| peer_state.status_received).count();
        heard_from + 1 < self.config.genesis.quorum()
    }

    pub(super) fn my_eligible_time(&self) -> Option<u64> {
        if self.produced_on_parent == Some(self.state.tip.hash) {
            return None;
        }
        let rank = self.my_rank()?;
        Some(eligible_at_ms(&self.config.genesis.parameters, self.state.tip_timestamp_ms, rank))
    }

    pub(super) fn try_produce(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        let (Some(rank), Some(eligible_ms)) = (self.my_rank(), self.my_eligible_time()) else {
            return;
        };
        if now_ms < eligible_ms {
            return;
        }
        if self.is_syncing(now_ms) {
            debug!(height = self.state.tip.height, "not producing: a peer has a higher tip we are fetching");
            return;
        }
        if self.is_warming_up(now_ms) {
            debug!("not producing: just started, waiting for the other validators' tips");
            return;
        }
        let parameters = &self.config.genesis.parameters;
        let height = self.state.tip.height + 1;
        let state = &self.state;
        // Reports first (they carry the votes finality needs), round by round so that every
        // validator's oldest unrecorded report gets in before anyone's second, within half the
        // block; transfers fill what is left. The block can then never exceed its byte limit.
        let block_bytes_max = parameters.block_bytes_max as usize;
        let report_bytes_max = block_bytes_max / 2;
        let per_validator_max = parameters.reports_per_validator_per_block_max as usize;
        let pending: Vec<Vec<&MetricReport>> = self
            .report_pool
            .iter()
            .map(|(validator, pool)| {
                let recorded = state.validators[*validator as usize].recorded_sequence();
                pool.values()
                    .filter(|report| {
                        recorded.is_none_or(|recorded| report.sequence > recorded) && report.tip.height < height
                    })
                    .take(per_validator_max)
                    .collect()
            })
            .collect();
        let mut reports: Vec<MetricReport> = Vec::new();
        let mut report_bytes = 0;
        'rounds: for round in 0..per_validator_max {
            for validator_reports in &pending {
                let Some(report) = validator_reports.get(round) else { continue };
                let bytes = crate::codec::report_bytes(report).len();
                if report_bytes + bytes > report_bytes_max {
                    break 'rounds;
                }
                report_bytes += bytes;
                reports.push((*report).clone());
            }
        }
        // Reports of one validator must be in sequence order within the block.
        reports.sort_by_key(|report| (report.node, report.sequence));
        let transfer_bytes_max = block_bytes_max.saturating_sub(report_bytes + BLOCK_BYTES_RESERVED_FOR_HEADER);
        let transfers = self.mempool.select_for_block(
            |address| state.account(address),
            parameters.block_transfers_max as usize,
            transfer_bytes_max,
        );
        let evidence = self.evidence_pool.select_for_block(&self.config.genesis, state, height);
        self.produced_on_parent = Some(self.state.tip.hash);
        let key = &self.config.key;
        let built = self.with_tip_context(now_ms, |context| {
            build_block(context, key, rank, now_ms, transfers, reports, evidence).or_else(|error| {
                debug!(%error, "block assembly failed: producing an empty block instead");
                build_block(context, key, rank, now_ms, Vec::new(), Vec::new(), Vec::new())
            })
        });
        let valid = match built {
            Ok(valid) => valid,
            Err(error) => {
                debug!(%error, "cannot produce even an empty block");
                return;
            }
        };
        actions.push(Action::Trace(TraceEvent::BlockProduced {
            height,
            hash: valid.hash,
            rank,
            transfers: valid.block.transfers.len(),
            reports: valid.block.reports.len(),
        }));
        self.seen.insert(valid.hash);
        self.on_block(now_ms, None, valid.block, true, actions);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cache, observer, receive, traces, validator_id};
    use super::{eligible_at_ms, TraceEvent};
    use crate::election::rank_candidates;
    use crate::message::Message;
    use crate::node::{Event, Node};
    use crate::testkit::{account_key, fast_genesis, sign_transfer, validator_node};
    use crate::types::Checkpoint;

    fn produced(node: &mut Node, now_ms: u64) -> Vec<TraceEvent> {
        let actions = node.step(now_ms, Event::Tick);
        traces(&actions)
            .into_iter()
            .filter(|event| matches!(event, TraceEvent::BlockProduced { .. }))
            .cloned()
            .collect()
    }

    #[test]
    fn each_validator_has_its_rank_of_the_ranking_and_is_eligible_at_its_rank_time() {
        let genesis = fast_genesis(4, 0);
        let mut observer = observer(&genesis);
        observer.refresh_ranking();
        assert_eq!((observer.my_rank(), observer.my_eligible_time()), (None, None), "an observer never produces");
        let ranking = rank_candidates(&genesis, &observer.state.validators, &observer.state.tip);
        let mut ranks = Vec::new();
        for index in 0..4 {
            let mut node = validator_node(&genesis, index, &cache());
            node.refresh_ranking();
            let rank = ranking.iter().find(|candidate| candidate.validator_index == index as u32).map(|c| c.rank);
            assert_eq!(node.my_rank(), rank, "validator {index}");
            let rank = rank.expect("every validator is ranked");
            let eligible_ms = eligible_at_ms(&genesis.parameters, genesis.genesis_time_ms, rank);
            assert_eq!(node.my_eligible_time(), Some(eligible_ms));
            ranks.push(rank);
        }
        ranks.sort_unstable();
        assert_eq!(ranks, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_lone_validator_produces_once_per_parent_at_its_eligible_time_with_pending_transfers() {
        let genesis = fast_genesis(1, 2);
        let mut node = validator_node(&genesis, 0, &cache());
        let interval_ms = genesis.parameters.block_interval_ms;
        assert!(produced(&mut node, 0).is_empty());
        let transfer = sign_transfer(&account_key(0), &genesis.chain_id, account_key(1).address(), 5, 1, 0);
        let _ = node.step(1, Event::TxSubmitted(transfer));
        assert!(produced(&mut node, interval_ms - 1).is_empty(), "not before its time");
        let blocks = produced(&mut node, interval_ms);
        assert!(
            matches!(blocks[..], [TraceEvent::BlockProduced { height: 1, rank: 0, transfers: 1, reports: 1, .. }]),
            "its own report of genesis and the pending transfer: {blocks:?}"
        );
        assert_eq!(node.tip().height, 1);
        assert!(produced(&mut node, interval_ms).is_empty(), "the next block waits for the next interval");
        assert_eq!(node.my_eligible_time(), Some(2 * interval_ms));
    }

    #[test]
    fn a_started_validator_waits_for_a_supermajority_of_tips_or_one_producer_timeout() {
        let genesis = fast_genesis(4, 0);
        let first = (0..4)
            .find(|index| {
                let mut node = validator_node(&genesis, *index, &cache());
                node.refresh_ranking();
                node.my_rank() == Some(0)
            })
            .expect("someone is first");
        let mut node = validator_node(&genesis, first, &cache());
        let peers: Vec<_> = (0..4).filter(|index| *index != first).map(validator_id).collect();
        for peer in &peers {
            let _ = node.step(0, Event::PeerConnected { peer: *peer });
        }
        let genesis_tip = Checkpoint { height: 0, hash: node.genesis_hash() };
        let empty_pool = Message::PoolAnnounce { ids: Vec::new(), complete: true };
        let status = Message::Status { tip: genesis_tip, finalized: genesis_tip };
        for peer in &peers[..2] {
            let _ = receive(&mut node, 10, *peer, empty_pool.clone());
        }
        assert!(node.is_mempool_synced());
        let _ = receive(&mut node, 20, peers[0], status.clone());
        let interval_ms = genesis.parameters.block_interval_ms;
        assert!(node.is_warming_up(interval_ms), "one tip heard: with us, two of four");
        assert!(produced(&mut node, interval_ms).is_empty());

        // The status that completes the supermajority is the event after which it produces.
        let actions = receive(&mut node, interval_ms + 1, peers[1], status);
        assert!(!node.is_warming_up(interval_ms + 1), "two tips heard: with us, a supermajority");
        let blocks: Vec<_> =
            traces(&actions).into_iter().filter(|event| matches!(event, TraceEvent::BlockProduced { .. })).collect();
        assert_eq!(blocks.len(), 1);

        // Another run: nobody's tip heard, but one producer timeout after starting it goes ahead.
        let mut alone = validator_node(&genesis, first, &cache());
        for peer in &peers {
            let _ = alone.step(0, Event::PeerConnected { peer: *peer });
        }
        let timeout_ms = genesis.parameters.producer_timeout_ms;
        assert!(produced(&mut alone, timeout_ms - 1).is_empty());
        assert!(alone.is_warming_up(timeout_ms - 1));
        assert_eq!(produced(&mut alone, timeout_ms).len(), 1);
        assert!(!alone.is_warming_up(timeout_ms));
    }
}
