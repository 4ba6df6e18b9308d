//! Mempool sync with one peer: the ids it announced that we lack, the request in flight, and
//! whether the exchange is over. Plain data with pure transitions; `node` feeds it the peer's
//! messages and sends what it asks for.
//!
//! The exchange, run on every new authenticated link (after a restart too): each side sends
//! `PoolAnnounce` batches of its pending ids, by sender then nonce, the last one `complete`;
//! each side asks for the ids it lacks with one `GetPooled` at a time of at most
//! `POOL_FETCH_IDS_MAX` ids, and admits the `Pooled` answer in the order announced, so a
//! sender's transfers arrive without a gap. The sync with that peer is over when the peer
//! announced its whole pool and every id asked for was answered.

use crate::limits::{MEMPOOL_TXS_MAX, POOL_ANNOUNCE_IDS_MAX, POOL_FETCH_IDS_MAX};
use crate::types::{Hash, Transfer};
use crate::validate::transfer_id;
use std::collections::{BTreeSet, VecDeque};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PoolSyncPhase {
    /// Waiting for announcements or answers.
    #[default]
    Syncing,
    /// The peer announced its whole pool and we hold or were answered every id we asked for.
    Synced,
    /// The peer left a request unanswered too long; its pool no longer counts.
    GaveUp,
}

#[derive(Clone, Debug, Default)]
pub struct PoolSync {
    /// Announced ids we lacked when announced, not yet asked for, in announcement order.
    wanted: VecDeque<Hash>,
    /// The ids of the request in flight (empty: none).
    in_flight: BTreeSet<Hash>,
    /// The peer sent its `complete` batch.
    announced_all: bool,
    /// Transfers the peer sent us that we admitted.
    pub admitted: usize,
    pub phase: PoolSyncPhase,
}

impl PoolSync {
    /// Takes one announced batch. Returns false (and changes nothing) if the peer already said
    /// its announcement was complete: an honest peer announces once per link.
    pub fn on_announce(&mut self, ids: &[Hash], complete: bool, is_pooled: impl Fn(&Hash) -> bool) -> bool {
        if self.announced_all || self.phase != PoolSyncPhase::Syncing {
            return false;
        }
        let room = MEMPOOL_TXS_MAX.saturating_sub(self.wanted.len());
        let lacking = ids.iter().take(POOL_ANNOUNCE_IDS_MAX).filter(|id| !is_pooled(id)).take(room);
        self.wanted.extend(lacking);
        self.announced_all = complete;
        true
    }

    /// The next request to send, if none is in flight: up to `POOL_FETCH_IDS_MAX` wanted ids we
    /// still lack (another peer may have delivered some meanwhile). With nothing left to ask
    /// and the announcement complete, the sync is over.
    pub fn next_request(&mut self, is_pooled: impl Fn(&Hash) -> bool) -> Option<Vec<Hash>> {
        if !self.in_flight.is_empty() || self.phase != PoolSyncPhase::Syncing {
            return None;
        }
        let mut batch = Vec::new();
        while batch.len() < POOL_FETCH_IDS_MAX {
            let Some(id) = self.wanted.pop_front() else { break };
            if !is_pooled(&id) && self.in_flight.insert(id) {
                batch.push(id);
            }
        }
        if batch.is_empty() && self.announced_all {
            self.phase = PoolSyncPhase::Synced;
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// Takes an answer: the transfers that were asked for (at most one each), in the order
    /// sent; anything not asked for is left out. Returns None for an answer nobody asked for.
    pub fn on_answer(&mut self, transfers: Vec<Transfer>) -> Option<Vec<(Hash, Transfer)>> {
        if self.in_flight.is_empty() {
            return None;
        }
        let mut asked = std::mem::take(&mut self.in_flight);
        let answered = transfers
            .into_iter()
            .take(POOL_FETCH_IDS_MAX)
            .map(|transfer| (transfer_id(&transfer), transfer))
            .filter(|(id, _)| asked.remove(id))
            .collect();
        Some(answered)
    }

    pub fn is_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// The peer did not answer in time: stop syncing with it.
    pub fn give_up(&mut self) {
        self.wanted.clear();
        self.in_flight.clear();
        self.phase = PoolSyncPhase::GaveUp;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::account_key;
    use crate::validate::sign_transfer;

    fn transfers(count: u64) -> Vec<(Hash, Transfer)> {
        let (from, to) = (account_key(1), account_key(2));
        (0..count)
            .map(|nonce| {
                let transfer = sign_transfer(&from, "test", to.address(), 10, 1, nonce);
                (transfer_id(&transfer), transfer)
            })
            .collect()
    }

    #[test]
    fn an_empty_complete_announcement_is_synced_at_once() {
        let mut sync = PoolSync::default();
        assert!(sync.on_announce(&[], true, |_| false));
        assert_eq!(sync.next_request(|_| false), None);
        assert_eq!(sync.phase, PoolSyncPhase::Synced);
    }

    #[test]
    fn ids_held_are_not_asked_for_and_answers_are_filtered_to_what_was_asked() {
        let all = transfers(3);
        let ids: Vec<Hash> = all.iter().map(|(id, _)| *id).collect();
        let held = ids[0];
        let mut sync = PoolSync::default();
        assert!(sync.on_announce(&ids, true, |id| *id == held));
        assert_eq!(sync.next_request(|id| *id == held), Some(ids[1..].to_vec()));
        assert_eq!(sync.next_request(|_| false), None, "one request in flight at a time");
        // The answer repeats an id, adds one never asked for, and misses none.
        let answer = vec![all[1].1.clone(), all[1].1.clone(), all[0].1.clone(), all[2].1.clone()];
        let admitted: Vec<Hash> = sync.on_answer(answer).expect("asked").into_iter().map(|(id, _)| id).collect();
        assert_eq!(admitted, [ids[1], ids[2]]);
        assert_eq!(sync.phase, PoolSyncPhase::Syncing);
        assert_eq!(sync.next_request(|_| true), None);
        assert_eq!(sync.phase, PoolSyncPhase::Synced);
        assert_eq!(sync.on_answer(vec![all[1].1.clone()]), None, "an unasked answer is refused");
    }

    #[test]
    fn a_second_complete_announcement_is_refused_and_fetches_are_batched() {
        let count = POOL_FETCH_IDS_MAX + 5;
        let ids: Vec<Hash> = (0..count as u32).map(|index| crate::crypto::hash_bytes(&index.to_le_bytes())).collect();
        let mut sync = PoolSync::default();
        assert!(sync.on_announce(&ids[..10], false, |_| false));
        assert!(sync.on_announce(&ids[10..], true, |_| false));
        assert!(!sync.on_announce(&ids, true, |_| false), "announced once per link");
        assert_eq!(sync.next_request(|_| false).map(|batch| batch.len()), Some(POOL_FETCH_IDS_MAX));
        assert_eq!(sync.on_answer(Vec::new()).map(|answered| answered.len()), Some(0));
        assert_eq!(sync.next_request(|_| false).map(|batch| batch.len()), Some(5));
        sync.give_up();
        assert_eq!(sync.phase, PoolSyncPhase::GaveUp);
        assert!(!sync.is_in_flight());
        assert_eq!(sync.next_request(|_| false), None);
    }
}
