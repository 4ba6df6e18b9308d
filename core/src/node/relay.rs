//! Relay-once gossip: the bounded set of message ids already seen, and the choice of peers a
//! message goes on to (all of them from its origin, a deterministic window of
//! `RELAY_FANOUT` otherwise).

use super::{Action, Node};
use crate::limits::{RELAY_FANOUT, SEEN_MESSAGES_MAX};
use crate::message::Message;
use crate::types::{Hash, NodeId};
use std::collections::{HashSet, VecDeque};

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

impl Node {
    /// Sends a message on: to every peer when we are its origin (`from` is None), else to at most
    /// `RELAY_FANOUT` peers other than the sender: a window of the (ordered) peer list starting
    /// at a position given by the message id, so different messages use different relays and
    /// the choice is deterministic.
    pub(super) fn gossip(&self, id: Hash, message: Message, from: Option<NodeId>, actions: &mut Vec<Action>) {
        let Some(sender) = from else {
            actions.push(Action::Broadcast { message, except: None });
            return;
        };
        let candidates = self.peers.len() - usize::from(self.peers.contains_key(&sender));
        if candidates <= RELAY_FANOUT {
            actions.push(Action::Broadcast { message, except: Some(sender) });
            return;
        }
        let start = u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes")) as usize % candidates;
        let others = self.peers.keys().filter(|peer| **peer != sender);
        for peer in others.cycle().skip(start).take(RELAY_FANOUT) {
            actions.push(Action::SendTo { peer: *peer, message: message.clone() });
        }
    }
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
