//! Relay-once gossip: the bounded set of message ids already seen, the choice of peers a
//! message goes on to, the links each peer announces, and the outbox that sends transfers in
//! batches.
//!
//! # Two relay rules
//!
//! Every message goes from its origin to every peer. A node that first receives one from a peer
//! forwards it:
//!
//! - **Blocks, reports and evidence** (signed by validators): to a deterministic window of
//!   `RELAY_FANOUT` peers other than the sender (every other peer in networks of up to
//!   `RELAY_FANOUT + 1`). This redundancy is a defence, not waste: a dishonest producer that
//!   sends its block to one peer only, or a different block or vote to each, is undone or
//!   exposed because honest nodes pass on what they got. Forwarding these only by links (below)
//!   was tried and measured: in 100 seeds of one dishonest validator of four with every fault,
//!   a producer sending each block to one peer stalled finality at the end of one run, and an
//!   offence seen by one node missed the 60 s bound in another; a third fewer double votes were
//!   proven in an evidence flood.
//! - **Transfers** (signed by clients): only to the peers the sender has no link with, once the
//!   sender has said (below). They are the bulk of the traffic, and in a full mesh this sends
//!   each transfer to each node once instead of once per relay. Every node linked through any
//!   path to the origin still gets it: the first node on a shortest path that lacks it is not
//!   linked to its predecessor's sender, so the predecessor forwarded it there. A dishonest
//!   node can delay only transfers it is the first to hold (its own clients'), which mempool
//!   sync repairs on every new link.
//!
//! # Links
//!
//! Every node tells its peers which validators it has links with (`Message::Links`, a bitmap in
//! genesis order): to a new peer right after its `Status`, to every peer at once when a link
//! goes down, and `LINKS_ANNOUNCE_DELAY_MS` after a link comes up (so a node linking with
//! everyone at start announces once). Links are never relayed.
//!
//! A peer's links are believed only in the safe direction. A new link not yet announced makes
//! peers forward to its far end: a duplicate. A link that went down is announced before any
//! later message on the remaining links, so peers forward to the far end from then on; what was
//! in flight on the broken link is lost as before, and mempool sync repairs it when the link
//! comes back (both ends announce their pending ids and fetch what they lack). Until a peer's
//! first `Links` arrives, its transfers are forwarded to the window, like the other messages.
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
use crate::limits::{
    GOSSIP_BATCH_TRANSFERS_MAX, GOSSIP_BATCH_WINDOW_MS, RELAY_FANOUT, SEEN_MESSAGES_MAX, VALIDATORS_MAX,
};
use crate::message::Message;
use crate::types::{Hash, NodeId, Transfer};
use std::collections::{BTreeMap, HashSet, VecDeque};
use tracing::debug;

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

/// Whether a links bitmap has validator `index` set.
fn is_linked(links: &[u8], index: u32) -> bool {
    links.get(index as usize / 8).is_some_and(|byte| byte & (1 << (index % 8)) != 0)
}

impl Node {
    /// Our links as a message: a bit for each validator we have a link with.
    pub(super) fn links_message(&self) -> Message {
        let mut validators = vec![0u8; self.config.genesis.validators.len().div_ceil(8)];
        for index in self.peers.values().filter_map(|peer_state| peer_state.validator_index) {
            validators[index as usize / 8] |= 1 << (index % 8);
        }
        Message::Links { validators }
    }

    /// Tells every peer our links now (and forgets any announcement pending).
    pub(super) fn announce_links(&mut self, actions: &mut Vec<Action>) {
        self.links_announce_at_ms = None;
        actions.push(Action::Broadcast { message: self.links_message(), except: None });
    }

    /// A peer's links, as it announced them. A bitmap longer than any genesis allows is ignored
    /// (the peer keeps the links it had, or none: its messages are then relayed to a window).
    pub(super) fn on_links(&mut self, from: NodeId, validators: Vec<u8>) {
        if validators.len() > VALIDATORS_MAX.div_ceil(8) {
            debug!(peer = ?from, bytes = validators.len(), "ignoring a links bitmap longer than any genesis allows");
            return;
        }
        if let Some(peer_state) = self.peers.get_mut(&from) {
            peer_state.links = Some(validators);
        }
    }

    /// The peers a message goes on to: every peer when we are its origin (`from` is None); for a
    /// transfer (`by_links`), every peer the sender has no link with, once it has told us its
    /// links (module docs); else at most `RELAY_FANOUT` peers other than the sender: a window of
    /// the (ordered) peer list starting at a position given by the message id, so different
    /// messages use different relays and the choice is deterministic.
    fn relay_targets(&self, id: Hash, from: Option<NodeId>, by_links: bool) -> Relay {
        let Some(sender) = from else {
            return Relay::AllExcept(None);
        };
        let sender_links = self.peers.get(&sender).and_then(|peer_state| peer_state.links.as_deref());
        if let Some(links) = sender_links.filter(|_| by_links) {
            let unlinked: Vec<NodeId> = self
                .peers
                .iter()
                .filter(|(peer, peer_state)| {
                    **peer != sender && !peer_state.validator_index.is_some_and(|index| is_linked(links, index))
                })
                .map(|(peer, _)| *peer)
                .collect();
            if unlinked.len() + 1 == self.peers.len() && !unlinked.is_empty() {
                return Relay::AllExcept(Some(sender));
            }
            return Relay::Peers(unlinked);
        }
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
        match self.relay_targets(id, from, false) {
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
        match self.relay_targets(id, from, true) {
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
    use super::super::test_support::{observer, receive, validator_id};
    use super::{Action, SeenSet};
    use crate::limits::{LINKS_ANNOUNCE_DELAY_MS, RELAY_FANOUT, SEEN_MESSAGES_MAX, VALIDATORS_MAX};
    use crate::message::Message;
    use crate::node::Event;
    use crate::testkit::{account_key, fast_genesis, seeded_key, sign_transfer};
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

    fn links_of(indices: &[u32]) -> Message {
        let mut validators = vec![0u8; 1];
        for index in indices {
            validators[*index as usize / 8] |= 1 << (index % 8);
        }
        Message::Links { validators }
    }

    /// The `Links` messages among actions, as (recipient: None for a broadcast, the message).
    fn links_sent(actions: &[Action]) -> Vec<(Option<NodeId>, Message)> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::SendTo { peer, message: message @ Message::Links { .. } } => {
                    Some((Some(*peer), message.clone()))
                }
                Action::Broadcast { message: message @ Message::Links { .. }, except: None } => {
                    Some((None, message.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// Where a transfer from `from` goes on to, as (broadcast except, individual recipients).
    fn transfer_relay(node: &super::Node, from: NodeId) -> (Option<Option<NodeId>>, Vec<NodeId>) {
        match node.relay_targets(id(1), Some(from), true) {
            super::Relay::AllExcept(except) => (Some(except), Vec::new()),
            super::Relay::Peers(peers) => (None, peers),
        }
    }

    #[test]
    fn a_transfer_goes_on_only_to_the_peers_its_sender_has_no_link_with_and_the_rest_to_a_window() {
        let genesis = fast_genesis(6, 2);
        let mut node = observer(&genesis);
        for index in 1..6 {
            let _ = node.step(0, Event::PeerConnected { peer: validator_id(index) });
        }
        let sender = validator_id(1);
        // Links not known yet: the window, which here is every other peer.
        assert_eq!(transfer_relay(&node, sender), (Some(Some(sender)), Vec::new()));

        let _ = receive(&mut node, 0, sender, links_of(&[2, 3]));
        let (broadcast, recipients) = transfer_relay(&node, sender);
        assert_eq!(broadcast, None);
        assert_eq!(recipients.into_iter().collect::<BTreeSet<_>>(), BTreeSet::from([validator_id(4), validator_id(5)]));

        // A full mesh: nothing to forward. Blocks, reports and evidence still go to the window.
        let _ = receive(&mut node, 0, sender, links_of(&[0, 2, 3, 4, 5]));
        assert_eq!(transfer_relay(&node, sender), (None, Vec::new()));
        assert_eq!(gossip(&node, id(1), Some(sender)), (Some(Some(sender)), Vec::new()));

        // Linked to no one else: every other peer.
        let _ = receive(&mut node, 0, sender, links_of(&[]));
        assert_eq!(transfer_relay(&node, sender), (Some(Some(sender)), Vec::new()));

        // A bitmap longer than any genesis allows is ignored: the last links stand.
        let _ = receive(&mut node, 0, sender, links_of(&[0, 2, 3, 4, 5]));
        let oversized = Message::Links { validators: vec![0xff; VALIDATORS_MAX / 8 + 1] };
        let _ = receive(&mut node, 0, sender, oversized);
        assert_eq!(transfer_relay(&node, sender), (None, Vec::new()));

        // Transfers the same way: relayed while the sender is linked to no one else, not once
        // it is linked to everyone.
        let forwarded = |actions: &[Action]| {
            actions
                .iter()
                .filter(|action| {
                    matches!(
                        action,
                        Action::SendTo { message: Message::Transfers(_), .. }
                            | Action::Broadcast { message: Message::Transfers(_), .. }
                    )
                })
                .count()
        };
        let key = account_key(0);
        let transfer = |nonce| sign_transfer(&key, &genesis.chain_id, account_key(1).address(), 1, 0, nonce);
        let _ = receive(&mut node, 0, sender, links_of(&[]));
        let actions = receive(&mut node, 0, sender, Message::Transfers(vec![transfer(0)]));
        assert_eq!(forwarded(&actions), 1, "{actions:?}");
        let _ = receive(&mut node, 0, sender, links_of(&[0, 2, 3, 4, 5]));
        let actions = receive(&mut node, 0, sender, Message::Transfers(vec![transfer(1)]));
        assert_eq!(forwarded(&actions), 0, "{actions:?}");
        assert_eq!(node.mempool.len(), 2, "both were admitted");
    }

    #[test]
    fn links_go_to_a_new_peer_at_once_to_the_others_after_a_delay_and_to_all_when_a_link_drops() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let actions = node.step(1_000, Event::PeerConnected { peer: validator_id(1) });
        assert_eq!(links_sent(&actions), vec![(Some(validator_id(1)), links_of(&[1]))]);
        let actions = node.step(1_010, Event::PeerConnected { peer: validator_id(2) });
        assert_eq!(links_sent(&actions), vec![(Some(validator_id(2)), links_of(&[1, 2]))]);
        let wake_at = actions.iter().find_map(|action| match action {
            Action::WakeAt(at) => Some(*at),
            _ => None,
        });
        assert_eq!(wake_at, Some(1_000 + LINKS_ANNOUNCE_DELAY_MS), "the first new link set the announcement's time");

        let actions = node.step(1_000 + LINKS_ANNOUNCE_DELAY_MS - 1, Event::Tick);
        assert!(links_sent(&actions).is_empty(), "not yet");
        let actions = node.step(1_000 + LINKS_ANNOUNCE_DELAY_MS, Event::Tick);
        assert_eq!(links_sent(&actions), vec![(None, links_of(&[1, 2]))]);
        let actions = node.step(2_000, Event::Tick);
        assert!(links_sent(&actions).is_empty(), "announced once");

        let actions = node.step(2_001, Event::PeerDisconnected { peer: validator_id(1) });
        assert_eq!(links_sent(&actions), vec![(None, links_of(&[2]))], "a link that drops is announced at once");
    }
}
