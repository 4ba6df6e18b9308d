//! Relay-once gossip: the bounded set of message ids already seen, the choice of peers a
//! message goes on to (all of them from its origin, a deterministic window of `RELAY_FANOUT`
//! otherwise), and the outbox that sends transfers in batches.
//!
//! # Transfer batches
//!
//! Transfers go out as `Message::Transfers`, never one message each:
//!
//! - Relayed ones (received from a peer and admitted) leave at the end of the step that
//!   admitted them, one batch per destination: a batch received is relayed as a batch.
//! - Our own (submitted by clients) wait in the outbox until the oldest has waited
//!   `GOSSIP_BATCH_WINDOW_MS` (the node asks to be woken then), or go at once when the outbox
//!   holds `GOSSIP_BATCH_TRANSFERS_MAX`: a client batch of 500 submits is 500 steps, and
//!   becomes one message rather than 500.
//!
//! The deadline is set by the first step that ends with our own transfers waiting, so it is a
//! function of the steps alone (time is passed in): the simulator and a replay batch exactly as
//! the server did. A sender's transfers stay in admission order within each path, so a peer
//! receives its nonces in order. A peer that disconnects before the flush simply gets nothing
//! (mempool sync on the next link covers it). Transfers a reorg returns to the pool go out at
//! once (`chain`): the abandoned block may have been their only copy, and a crash within the
//! window must not lose it.

use super::{Action, Node};
use crate::limits::{GOSSIP_BATCH_TRANSFERS_MAX, GOSSIP_BATCH_WINDOW_MS, RELAY_FANOUT, SEEN_MESSAGES_MAX};
use crate::message::Message;
use crate::types::{Hash, NodeId, Transfer};
use std::collections::{BTreeMap, HashSet, VecDeque};

/// Remembers message ids so each is relayed once. Membership only: never iterated.
#[derive(Debug, Default)]
pub(super) struct SeenSet {
    pub(super) ids: HashSet<Hash>,
    order: VecDeque<Hash>,
}

impl SeenSet {
    /// Returns true if the id is new.
    pub(super) fn insert(&mut self, id: Hash) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SEEN_MESSAGES_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}

/// Where a gossiped message goes.
enum Relay {
    /// To every peer except this one (none: we are its origin).
    AllExcept(Option<NodeId>),
    /// To these peers (a window of them).
    Peers(Vec<NodeId>),
}

/// Transfers waiting to be gossiped, by destination (see the module docs).
#[derive(Debug, Default)]
pub(super) struct TransferOutbox {
    /// Ours, to every peer: they wait for the window.
    own: Vec<Transfer>,
    /// When `own` goes out; set at the end of the first step that leaves it non-empty.
    flush_at_ms: Option<u64>,
    /// Relayed, to every peer except the key: they go at the end of the step.
    to_all_except: BTreeMap<NodeId, Vec<Transfer>>,
    /// Relayed to one peer each: they go at the end of the step.
    to_peer: BTreeMap<NodeId, Vec<Transfer>>,
}

impl Node {
    /// The peers a message goes on to: every peer when we are its origin (`from` is None), else
    /// at most `RELAY_FANOUT` peers other than the sender: a window of the (ordered) peer list
    /// starting at a position given by the message id, so different messages use different
    /// relays and the choice is deterministic.
    fn relay_targets(&self, id: Hash, from: Option<NodeId>) -> Relay {
        let Some(sender) = from else {
            return Relay::AllExcept(None);
        };
        let candidates = self.peers.len() - usize::from(self.peers.contains_key(&sender));
        if candidates <= RELAY_FANOUT {
            return Relay::AllExcept(Some(sender));
        }
        let start = u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes")) as usize % candidates;
        let others = self.peers.keys().filter(|peer| **peer != sender);
        Relay::Peers(others.cycle().skip(start).take(RELAY_FANOUT).copied().collect())
    }

    /// Sends a message on to its relay targets (see `relay_targets`).
    pub(super) fn gossip(&self, id: Hash, message: Message, from: Option<NodeId>, actions: &mut Vec<Action>) {
        match self.relay_targets(id, from) {
            Relay::AllExcept(except) => actions.push(Action::Broadcast { message, except }),
            Relay::Peers(peers) => {
                for peer in peers {
                    actions.push(Action::SendTo { peer, message: message.clone() });
                }
            }
        }
    }

    /// Queues a transfer for gossip to its relay targets, in the next batch (module docs).
    pub(super) fn gossip_transfer(&mut self, id: Hash, transfer: Transfer, from: Option<NodeId>) {
        match self.relay_targets(id, from) {
            Relay::AllExcept(None) => self.outbox.own.push(transfer),
            Relay::AllExcept(Some(sender)) => self.outbox.to_all_except.entry(sender).or_default().push(transfer),
            Relay::Peers(peers) => {
                for peer in peers {
                    self.outbox.to_peer.entry(peer).or_default().push(transfer.clone());
                }
            }
        }
    }

    /// At the end of a step: sends the relayed transfers, and our own when they are due or fill
    /// a batch (else makes sure they have a deadline). Returns the deadline left pending, if any
    /// (for the wake-up).
    pub(super) fn flush_outbox_if_due(&mut self, now_ms: u64, actions: &mut Vec<Action>) -> Option<u64> {
        let outbox = &mut self.outbox;
        let mut pending_until_ms = None;
        if !outbox.own.is_empty() {
            let flush_at_ms = *outbox.flush_at_ms.get_or_insert(now_ms.saturating_add(GOSSIP_BATCH_WINDOW_MS));
            if now_ms >= flush_at_ms || outbox.own.len() >= GOSSIP_BATCH_TRANSFERS_MAX {
                outbox.flush_at_ms = None;
                for batch in batches(std::mem::take(&mut outbox.own)) {
                    actions.push(Action::Broadcast { message: Message::Transfers(batch), except: None });
                }
            } else {
                pending_until_ms = Some(flush_at_ms);
            }
        }
        for (sender, transfers) in std::mem::take(&mut outbox.to_all_except) {
            for batch in batches(transfers) {
                actions.push(Action::Broadcast { message: Message::Transfers(batch), except: Some(sender) });
            }
        }
        for (peer, transfers) in std::mem::take(&mut outbox.to_peer) {
            if !self.peers.contains_key(&peer) {
                continue;
            }
            for batch in batches(transfers) {
                actions.push(Action::SendTo { peer, message: Message::Transfers(batch) });
            }
        }
        pending_until_ms
    }
}

/// `transfers` cut into messages of at most `GOSSIP_BATCH_TRANSFERS_MAX`, in order.
fn batches(transfers: Vec<Transfer>) -> Vec<Vec<Transfer>> {
    if transfers.len() <= GOSSIP_BATCH_TRANSFERS_MAX {
        return vec![transfers];
    }
    transfers.chunks(GOSSIP_BATCH_TRANSFERS_MAX).map(<[Transfer]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_support::observer;
    use super::{Action, SeenSet};
    use crate::limits::{RELAY_FANOUT, SEEN_MESSAGES_MAX};
    use crate::message::Message;
    use crate::node::Event;
    use crate::testkit::{fast_genesis, seeded_key};
    use crate::types::{Hash, NodeId};
    use std::collections::BTreeSet;

    fn id(index: u64) -> Hash {
        let mut bytes = [0; 32];
        bytes[..8].copy_from_slice(&index.to_le_bytes());
        Hash(bytes)
    }

    #[test]
    fn the_seen_set_takes_an_id_once() {
        let mut seen = SeenSet::default();
        assert!(seen.insert(id(1)));
        assert!(!seen.insert(id(1)), "a duplicate is not new");
        assert!(seen.insert(id(2)));
        assert_eq!(seen.order.len(), 2);
    }

    #[test]
    fn the_seen_set_forgets_its_oldest_id_past_its_bound() {
        let mut seen = SeenSet::default();
        for index in 0..=SEEN_MESSAGES_MAX as u64 {
            assert!(seen.insert(id(index)));
        }
        assert_eq!(seen.ids.len(), SEEN_MESSAGES_MAX);
        assert_eq!(seen.order.len(), SEEN_MESSAGES_MAX);
        assert!(!seen.ids.contains(&id(0)), "the oldest went first");
        assert!(seen.ids.contains(&id(1)));
        assert!(seen.insert(id(0)), "a forgotten id is new again");
        assert!(!seen.ids.contains(&id(1)), "and pushes out the next oldest");
        assert_eq!(seen.ids.len(), SEEN_MESSAGES_MAX);
    }

    /// What `gossip` asks for, as (broadcast except, individual recipients).
    fn gossip(node: &super::Node, id: Hash, from: Option<NodeId>) -> (Option<Option<NodeId>>, Vec<NodeId>) {
        let mut actions = Vec::new();
        node.gossip(id, Message::Pooled(Vec::new()), from, &mut actions);
        let broadcast = actions.iter().find_map(|action| match action {
            Action::Broadcast { except, .. } => Some(*except),
            _ => None,
        });
        let recipients = actions
            .iter()
            .filter_map(|action| match action {
                Action::SendTo { peer, .. } => Some(*peer),
                _ => None,
            })
            .collect();
        (broadcast, recipients)
    }

    #[test]
    fn gossip_goes_to_all_from_its_origin_and_to_a_deterministic_window_of_peers_otherwise() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let peers: Vec<NodeId> =
            (0..RELAY_FANOUT as u64 + 4).map(|index| seeded_key("peer", index).address()).collect();
        let sender = peers[0];
        for peer in &peers[..=RELAY_FANOUT] {
            let _ = node.step(0, Event::PeerConnected { peer: *peer });
        }
        // Our own message goes to everyone; a relayed one to every other peer while they fit.
        assert_eq!(gossip(&node, id(1), None), (Some(None), Vec::new()));
        assert_eq!(gossip(&node, id(1), Some(sender)), (Some(Some(sender)), Vec::new()));

        for peer in &peers[RELAY_FANOUT + 1..] {
            let _ = node.step(0, Event::PeerConnected { peer: *peer });
        }
        let windows: BTreeSet<Vec<NodeId>> = (0..8)
            .map(|index| {
                let (broadcast, recipients) = gossip(&node, id(index), Some(sender));
                assert_eq!(broadcast, None);
                assert_eq!(recipients.len(), RELAY_FANOUT);
                assert_eq!(recipients.iter().collect::<BTreeSet<_>>().len(), RELAY_FANOUT, "distinct peers");
                assert!(!recipients.contains(&sender), "never back to the sender");
                assert_eq!(gossip(&node, id(index), Some(sender)).1, recipients, "the same id, the same relays");
                recipients
            })
            .collect();
        assert!(windows.len() > 1, "different ids start the window at different peers");
    }
}
