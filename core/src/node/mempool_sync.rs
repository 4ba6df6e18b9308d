//! Mempool sync with each new link and the readiness it decides: pending ids announced, the
//! transfers we lack fetched one request at a time, requests answered, and the moment the first
//! sync since start is over (a supermajority synced, or the bounded wait ran out; see the
//! `node` docs).

use super::{Action, Node, TraceEvent};
use crate::limits::POOL_FETCH_IDS_MAX;
use crate::message::Message;
use crate::types::{Hash, NodeId, Transfer};
use tracing::debug;

impl Node {
    pub(super) fn on_pool_announce(
        &mut self,
        now_ms: u64,
        from: NodeId,
        ids: &[Hash],
        complete: bool,
        actions: &mut Vec<Action>,
    ) {
        let mempool = &self.mempool;
        let Some(peer_state) = self.peers.get_mut(&from) else {
            debug!(peer = ?from, "ignoring pool announcement: the peer is not connected");
            return;
        };
        if !peer_state.pool.on_announce(ids, complete, |id| mempool.contains(id)) {
            debug!(peer = ?from, "ignoring pool announcement: the peer already announced its whole pool");
            return;
        }
        self.request_pooled(now_ms, from, actions);
    }

    pub(super) fn on_get_pooled(&mut self, from: NodeId, ids: &[Hash], actions: &mut Vec<Action>) {
        let transfers: Vec<Transfer> =
            ids.iter().take(POOL_FETCH_IDS_MAX).filter_map(|id| self.mempool.get(id)).cloned().collect();
        actions.push(Action::SendTo { peer: from, message: Message::Pooled(transfers) });
    }

    pub(super) fn on_pooled(&mut self, now_ms: u64, from: NodeId, transfers: Vec<Transfer>, actions: &mut Vec<Action>) {
        let answered = self.peers.get_mut(&from).and_then(|peer_state| peer_state.pool.on_answer(transfers));
        let Some(answered) = answered else {
            debug!(peer = ?from, "ignoring pending transfers nobody asked for");
            return;
        };
        self.pool_requested_at_ms.remove(&from);
        let mut admitted = 0;
        for (id, transfer) in answered {
            // Not relayed: every peer fetches from its own links. Marked seen so gossip of the
            // same transfer is not taken again.
            self.seen.insert(id);
            match self.admit_transfer(id, transfer, true, actions) {
                Ok(()) => admitted += 1,
                Err(reason) => debug!(?id, %reason, "pending transfer from a peer's pool not admitted"),
            }
        }
        self.pool_admitted += admitted;
        if let Some(peer_state) = self.peers.get_mut(&from) {
            peer_state.pool.admitted += admitted;
        }
        self.request_pooled(now_ms, from, actions);
    }

    /// Asks `peer` for the next batch of announced transfers we lack, if none is in flight.
    fn request_pooled(&mut self, now_ms: u64, peer: NodeId, actions: &mut Vec<Action>) {
        let mempool = &self.mempool;
        let Some(peer_state) = self.peers.get_mut(&peer) else { return };
        if let Some(ids) = peer_state.pool.next_request(|id| mempool.contains(id)) {
            self.pool_requested_at_ms.insert(peer, now_ms);
            actions.push(Action::SendTo { peer, message: Message::GetPooled { ids } });
        }
    }

    /// When the first mempool sync since start ends at the latest (see the module docs).
    pub(super) fn mempool_sync_deadline_ms(&self, now_ms: u64) -> u64 {
        self.started_at_ms.unwrap_or(now_ms).saturating_add(self.config.genesis.parameters.producer_timeout_ms)
    }

    pub(super) fn update_mempool_synced(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        if self.mempool_synced {
            return;
        }
        let synced_peers = self.mempool_synced_peers();
        let is_quorum = synced_peers + 1 >= self.config.genesis.quorum();
        if is_quorum || now_ms >= self.mempool_sync_deadline_ms(now_ms) {
            self.mempool_synced = true;
            actions.push(Action::Trace(TraceEvent::MempoolSynced {
                synced_peers,
                admitted: self.pool_admitted,
                timed_out: !is_quorum,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{cache, receive, sent, traces, validator_id};
    use super::TraceEvent;
    use crate::message::Message;
    use crate::node::{Event, Node};
    use crate::pool_sync::PoolSyncPhase;
    use crate::testkit::{account_key, fast_genesis, sign_transfer, validator_node};
    use crate::types::{Hash, Transfer};
    use crate::validate::transfer_id;

    /// Validator 0 of four (a supermajority is three), connected to validators 1 to 3.
    fn validator_of_four() -> Node {
        let mut node = validator_node(&fast_genesis(4, 2), 0, &cache());
        for index in 1..4 {
            let _ = node.step(0, Event::PeerConnected { peer: validator_id(index) });
        }
        node
    }

    fn transfers(count: u64) -> Vec<Transfer> {
        let genesis = fast_genesis(4, 2);
        (0..count)
            .map(|nonce| sign_transfer(&account_key(0), &genesis.chain_id, account_key(1).address(), 10, 1, nonce))
            .collect()
    }

    fn synced_trace(actions: &[crate::node::Action]) -> Vec<TraceEvent> {
        traces(actions).into_iter().filter(|event| matches!(event, TraceEvent::MempoolSynced { .. })).cloned().collect()
    }

    #[test]
    fn the_first_sync_is_over_with_a_supermajority_counting_this_node() {
        let mut node = validator_of_four();
        let empty = Message::PoolAnnounce { ids: Vec::new(), complete: true };
        let actions = receive(&mut node, 10, validator_id(1), empty.clone());
        assert!(synced_trace(&actions).is_empty());
        assert!(!node.is_mempool_synced(), "two of four is no supermajority");
        assert_eq!(node.mempool_synced_peers(), 1);
        let actions = receive(&mut node, 20, validator_id(2), empty);
        assert_eq!(
            synced_trace(&actions),
            vec![TraceEvent::MempoolSynced { synced_peers: 2, admitted: 0, timed_out: false }]
        );
        assert!(node.is_mempool_synced());
    }

    #[test]
    fn the_first_sync_ends_after_one_producer_timeout_without_peers() {
        let genesis = fast_genesis(4, 2);
        let mut node = validator_node(&genesis, 0, &cache());
        let deadline_ms = genesis.parameters.producer_timeout_ms;
        assert!(synced_trace(&node.step(0, Event::Tick)).is_empty());
        assert!(synced_trace(&node.step(deadline_ms - 1, Event::Tick)).is_empty());
        assert_eq!(
            synced_trace(&node.step(deadline_ms, Event::Tick)),
            vec![TraceEvent::MempoolSynced { synced_peers: 0, admitted: 0, timed_out: true }]
        );
        assert!(node.is_mempool_synced());
    }

    #[test]
    fn announced_transfers_are_fetched_and_only_what_was_asked_is_admitted() {
        let mut node = validator_of_four();
        let peer = validator_id(1);
        let all = transfers(3);
        let ids: Vec<Hash> = all[..2].iter().map(transfer_id).collect();

        let actions = receive(&mut node, 10, peer, Message::PoolAnnounce { ids: ids.clone(), complete: true });
        let requests: Vec<_> = sent(&actions).into_iter().filter(|(to, _)| *to == peer).collect();
        assert!(matches!(requests[..], [(_, Message::GetPooled { ids: ref asked })] if *asked == ids), "{requests:?}");
        // The answer carries one transfer more than asked for: it is left out.
        let _ = receive(&mut node, 20, peer, Message::Pooled(all.clone()));
        assert!(ids.iter().all(|id| node.mempool().contains(id)));
        assert!(!node.mempool().contains(&transfer_id(&all[2])));
        assert_eq!(node.pool_admitted, 2);
        assert_eq!(node.peers[&peer].pool.phase, PoolSyncPhase::Synced);

        let unasked = Message::Pooled(vec![all[2].clone()]);
        let _ = receive(&mut node, 30, peer, unasked);
        assert!(!node.mempool().contains(&transfer_id(&all[2])), "an answer nobody asked for is ignored");
    }

    #[test]
    fn a_pool_request_is_answered_with_the_transfers_held_in_the_order_asked() {
        let mut node = validator_of_four();
        let all = transfers(3);
        for transfer in &all[..2] {
            let _ = node.step(10, Event::TxSubmitted(transfer.clone()));
        }
        let asked = vec![transfer_id(&all[1]), transfer_id(&all[2]), transfer_id(&all[0])];
        let peer = validator_id(3);
        let actions = receive(&mut node, 20, peer, Message::GetPooled { ids: asked });
        let answers: Vec<_> = sent(&actions).into_iter().filter(|(to, _)| *to == peer).collect();
        assert!(
            matches!(answers[..], [(_, Message::Pooled(ref sent))] if *sent == vec![all[1].clone(), all[0].clone()]),
            "{answers:?}"
        );
    }
}
