//! Transfers into the mempool: a submitted or gossiped transfer checked on its own and
//! admitted, transfers from peers held while their sender's earlier nonces are missing, and the
//! reason given for every pending transfer the mempool lets go of.

use super::{Action, Node, TxRejection};
use crate::limits::{GAPPED_TXS_MAX, MEMPOOL_TXS_PER_SENDER_MAX};
use crate::mempool::{DropReason, DroppedTransfer, MempoolError, RemovalReason, Removed};
use crate::types::{Address, Hash, Height, NodeId, Transfer};
use crate::validate::{check_transfer_alone_identified, transfer_id};
use std::collections::BTreeMap;
use tracing::debug;

impl Node {
    pub(super) fn on_transfer(&mut self, from: Option<NodeId>, transfer: Transfer, actions: &mut Vec<Action>) {
        let id = transfer_id(&transfer);
        let reject = |actions: &mut Vec<Action>, reason: TxRejection| {
            if from.is_none() {
                actions.push(Action::TxRejected { id, reason });
            }
        };
        if from.is_some() && !self.seen.insert(id) {
            debug!(?id, "ignoring transfer: already seen");
            return;
        }
        match self.admit_transfer(id, transfer.clone(), from.is_some(), actions) {
            Ok(()) => {
                if from.is_none() {
                    self.seen.insert(id);
                    actions.push(Action::TxAccepted { id });
                }
                self.gossip_transfer(id, transfer, from);
            }
            Err(reason) => {
                debug!(?id, %reason, "transfer not pooled");
                reject(actions, reason);
            }
        }
    }

    /// Checks a transfer on its own and admits it to the mempool; what it displaces is dropped.
    /// A transfer from a peer (`from_peer`) whose sender's earlier nonces are not here yet is held
    /// (`gapped`) instead of refused, and admitted when the gap fills: gossip from different
    /// origins, and mempool sync after a restart, deliver a sender's transfers out of order, and
    /// a node that refused the later ones would count that sender's pending nonce short and
    /// offer clients a nonce already taken. `id` is `transfer_id(&transfer)` computed here, never
    /// one a peer claimed: the signature check trusts it to identify the signed bytes.
    pub(super) fn admit_transfer(
        &mut self,
        id: Hash,
        transfer: Transfer,
        from_peer: bool,
        actions: &mut Vec<Action>,
    ) -> Result<(), TxRejection> {
        debug_assert_eq!(id, transfer_id(&transfer), "the id is computed from the transfer itself");
        check_transfer_alone_identified(&self.config.genesis.chain_id, &transfer, &id, &self.cache)?;
        let sender_address = transfer.from;
        let sender = self.state.account(&sender_address);
        match self.mempool.insert(transfer.clone(), id, &sender) {
            Ok(inserted) => {
                self.drop_removed(inserted.removed, &BTreeMap::new(), actions);
                self.admit_gapped(&sender_address, actions);
                Ok(())
            }
            Err(MempoolError::NonceGap { expected, got })
                if from_peer
                    && got - expected < MEMPOOL_TXS_PER_SENDER_MAX as u64
                    && self.gapped.len() < GAPPED_TXS_MAX =>
            {
                debug!(?id, expected, got, "holding a transfer until its sender's earlier nonces arrive");
                self.gapped.insert((sender_address, got), (id, transfer));
                Ok(())
            }
            Err(error) => Err(TxRejection::Mempool(error)),
        }
    }

    /// Admits held transfers of `sender` that now follow its pending nonce, in order; forgets
    /// held ones whose nonce the chain already used.
    pub(super) fn admit_gapped(&mut self, sender: &Address, actions: &mut Vec<Action>) {
        let account = self.state.account(sender);
        let stale: Vec<(Address, u64)> =
            self.gapped.range((*sender, 0)..(*sender, account.nonce)).map(|(key, _)| *key).collect();
        for key in stale {
            self.gapped.remove(&key);
        }
        loop {
            let next_nonce = self.mempool.pending_nonce(sender, &account);
            let Some((id, transfer)) = self.gapped.remove(&(*sender, next_nonce)) else { break };
            match self.mempool.insert(transfer, id, &account) {
                Ok(inserted) => self.drop_removed(inserted.removed, &BTreeMap::new(), actions),
                Err(error) => {
                    debug!(?id, %error, "a held transfer was not admitted");
                    break;
                }
            }
        }
    }

    /// Says why each removed pending transfer will never be included. `taken` maps each
    /// (sender, nonce) used by the blocks just applied to the transfer that used it and its
    /// height: a removal whose nonce was used by that very transfer was included, not dropped.
    pub(super) fn drop_removed(
        &self,
        removed: Vec<Removed>,
        taken: &BTreeMap<(Address, u64), (Hash, Height)>,
        actions: &mut Vec<Action>,
    ) {
        for Removed { id, transfer, reason } in removed {
            let reason = match reason {
                RemovalReason::Replaced { by } => DropReason::Replaced { by },
                RemovalReason::Unaffordable => DropReason::Unaffordable,
                RemovalReason::Evicted { by } => DropReason::Evicted { by },
                RemovalReason::NonceUsed => match taken.get(&(transfer.from, transfer.nonce)) {
                    Some((by, _)) if *by == id => continue,
                    Some((by, height)) => DropReason::NonceTaken { by: *by, height: *height },
                    None => DropReason::NonceUsed,
                },
            };
            debug!(?id, %reason, "dropped a pending transfer");
            let dropped = DroppedTransfer { id, transfer, reason, tip_height: self.state.tip.height };
            actions.push(Action::TxDropped(Box::new(dropped)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{observer, receive, validator_id};
    use super::{Action, TxRejection};
    use crate::limits::{GOSSIP_BATCH_TRANSFERS_MAX, GOSSIP_BATCH_WINDOW_MS, MEMPOOL_TXS_PER_SENDER_MAX};
    use crate::mempool::{DropReason, MempoolError};
    use crate::message::Message;
    use crate::node::Event;
    use crate::testkit::{account_key, fast_genesis, sign_transfer};
    use crate::types::{Hash, NodeId, Signature, Transfer};
    use crate::validate::{transfer_id, TxError};

    /// The verdicts among `actions`: Ok(id) for accepted, Err((id, reason)) for rejected.
    fn verdicts(actions: &[Action]) -> Vec<Result<Hash, (Hash, TxRejection)>> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::TxAccepted { id } => Some(Ok(*id)),
                Action::TxRejected { id, reason } => Some(Err((*id, reason.clone()))),
                _ => None,
            })
            .collect()
    }

    fn transfer(nonce: u64, fee: u64) -> Transfer {
        let genesis = fast_genesis(4, 2);
        sign_transfer(&account_key(0), &genesis.chain_id, account_key(1).address(), 10, fee, nonce)
    }

    /// The transfer batches among `actions`, with the peer each goes to (`None`: broadcast).
    fn batches(actions: &[Action]) -> Vec<(Option<NodeId>, Vec<Transfer>)> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::Broadcast { message: Message::Transfers(sent), except: None } => Some((None, sent.clone())),
                Action::SendTo { peer, message: Message::Transfers(sent) } => Some((Some(*peer), sent.clone())),
                Action::Broadcast { message: Message::Transfers(_), except: Some(_) } => {
                    panic!("a submitted transfer goes to every peer")
                }
                _ => None,
            })
            .collect()
    }

    fn wake(actions: &[Action]) -> Option<u64> {
        actions.iter().find_map(|action| match action {
            Action::WakeAt(at_ms) => Some(*at_ms),
            _ => None,
        })
    }

    #[test]
    fn submitted_transfers_are_answered_at_once_and_gossiped_once_in_one_batch_after_the_window() {
        let mut node = observer(&fast_genesis(4, 2));
        let (first, second) = (transfer(0, 1), transfer(1, 1));
        let id = transfer_id(&first);
        let actions = node.step(100, Event::TxSubmitted(first.clone()));
        assert_eq!(verdicts(&actions), vec![Ok(id)]);
        assert!(batches(&actions).is_empty(), "the batch waits for others");
        assert_eq!(wake(&actions), Some(100 + GOSSIP_BATCH_WINDOW_MS), "woken when the window ends");
        let again = node.step(105, Event::TxSubmitted(first.clone()));
        assert_eq!(verdicts(&again), vec![Err((id, TxRejection::Mempool(MempoolError::AlreadyKnown { id })))]);
        let actions = node.step(110, Event::TxSubmitted(second.clone()));
        assert_eq!(verdicts(&actions), vec![Ok(transfer_id(&second))]);
        assert_eq!(wake(&actions), Some(100 + GOSSIP_BATCH_WINDOW_MS), "the first transfer sets the deadline");
        assert!(batches(&node.step(100 + GOSSIP_BATCH_WINDOW_MS - 1, Event::Tick)).is_empty());
        let actions = node.step(100 + GOSSIP_BATCH_WINDOW_MS, Event::Tick);
        assert_eq!(batches(&actions), vec![(None, vec![first, second])], "one batch, in admission order");
        assert!(batches(&node.step(1_000, Event::Tick)).is_empty(), "sent once");
    }

    #[test]
    fn a_full_batch_goes_at_once_and_relays_skip_the_sender() {
        // Four funded senders with a full queue each: exactly one full batch.
        let genesis = fast_genesis(4, 4);
        let mut node = observer(&genesis);
        for index in 1..4 {
            let _ = node.step(0, Event::PeerConnected { peer: validator_id(index) });
        }
        let funded: Vec<Transfer> = (0..4)
            .flat_map(|account| {
                let chain_id = genesis.chain_id.clone();
                (0..MEMPOOL_TXS_PER_SENDER_MAX as u64).map(move |nonce| {
                    sign_transfer(&account_key(account), &chain_id, account_key(9).address(), 1, 1, nonce)
                })
            })
            .collect();
        assert_eq!(funded.len(), GOSSIP_BATCH_TRANSFERS_MAX);
        let actions = receive(&mut node, 0, validator_id(1), Message::Transfers(funded.clone()));
        let sent: Vec<(Option<NodeId>, usize)> = actions
            .iter()
            .filter_map(|action| match action {
                Action::Broadcast { message: Message::Transfers(sent), except } => {
                    assert_eq!(*except, Some(validator_id(1)), "never back to the sender");
                    Some((None, sent.len()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(node.mempool().len(), GOSSIP_BATCH_TRANSFERS_MAX);
        assert_eq!(sent, vec![(None, GOSSIP_BATCH_TRANSFERS_MAX)], "a full outbox goes without waiting");
    }

    #[test]
    fn a_forged_transfer_is_refused_to_a_client_and_ignored_from_a_peer() {
        let mut node = observer(&fast_genesis(4, 2));
        let mut forged = transfer(0, 1);
        forged.signature = Signature([3; 64]);
        let id = transfer_id(&forged);
        let actions = node.step(0, Event::TxSubmitted(forged.clone()));
        assert_eq!(verdicts(&actions), vec![Err((id, TxRejection::Invalid(TxError::BadSignature)))]);
        let actions = receive(&mut node, 0, validator_id(1), Message::Transfers(vec![forged]));
        let actions: Vec<Action> = actions.into_iter().chain(node.step(1_000, Event::Tick)).collect();
        assert!(verdicts(&actions).is_empty(), "a peer gets no verdict");
        assert!(!actions.iter().any(|action| matches!(action, Action::Broadcast { .. } | Action::SendTo { .. })));
        assert_eq!(node.mempool().len(), 0);
    }

    #[test]
    fn a_peer_transfer_ahead_of_its_nonce_is_held_until_the_gap_fills_but_a_client_is_told_no() {
        let mut node = observer(&fast_genesis(4, 2));
        let sender = account_key(0).address();
        let (first, second) = (transfer(0, 1), transfer(1, 1));

        let actions = node.step(0, Event::TxSubmitted(second.clone()));
        let gap = TxRejection::Mempool(MempoolError::NonceGap { expected: 0, got: 1 });
        assert_eq!(verdicts(&actions), vec![Err((transfer_id(&second), gap))]);
        assert!(node.gapped.is_empty(), "a client's transfer is never held");

        let _ = receive(&mut node, 0, validator_id(1), Message::Transfers(vec![second.clone()]));
        assert!(!node.mempool().contains(&transfer_id(&second)));
        assert_eq!(node.gapped.len(), 1, "held, not refused");
        let _ = receive(&mut node, 0, validator_id(2), Message::Transfers(vec![first.clone()]));
        assert!(node.mempool().contains(&transfer_id(&first)));
        assert!(node.mempool().contains(&transfer_id(&second)), "admitted once the gap filled");
        assert!(node.gapped.is_empty());
        assert_eq!(node.mempool().pending_nonce(&sender, &node.state().account(&sender)), 2);
    }

    #[test]
    fn a_replaced_transfer_is_dropped_naming_its_replacement() {
        let mut node = observer(&fast_genesis(4, 2));
        let (cheap, dear) = (transfer(0, 1), transfer(0, 5));
        let _ = node.step(0, Event::TxSubmitted(cheap.clone()));
        let actions = node.step(0, Event::TxSubmitted(dear.clone()));
        let dropped: Vec<_> = actions
            .iter()
            .filter_map(|action| match action {
                Action::TxDropped(dropped) => Some((dropped.id, dropped.reason.clone(), dropped.tip_height)),
                _ => None,
            })
            .collect();
        assert_eq!(dropped, vec![(transfer_id(&cheap), DropReason::Replaced { by: transfer_id(&dear) }, 0)]);
        assert!(!node.mempool().contains(&transfer_id(&cheap)));
        assert!(node.mempool().contains(&transfer_id(&dear)));
    }
}
