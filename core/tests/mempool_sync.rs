//! Pending transfers across restarts and conflicts (issue: "an acknowledged transfer is never
//! silently lost"): mempool sync on every new link, the readiness it gates, and a `TxDropped`
//! with its reason for every pending transfer that leaves a mempool without being included.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use tinychain_core::crypto::SignatureCache;
use tinychain_core::genesis::Genesis;
use tinychain_core::limits::POOL_FETCH_TIMEOUT_MS;
use tinychain_core::mempool::DropReason;
use tinychain_core::message::Message;
use tinychain_core::node::{Action, Event, Node, TraceEvent};
use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, validator_key, validator_node, LocalNet};
use tinychain_core::types::{Hash, UNITS_PER_COIN};
use tinychain_core::validate::transfer_id;

/// A fast genesis with slow blocks (1 s) and a long timeout (5 s), so a test can act between two
/// blocks without racing them.
fn slow_block_genesis(validators: usize, accounts: usize) -> Genesis {
    let mut genesis = fast_genesis(validators, accounts);
    genesis.parameters.block_interval_ms = 1_000;
    genesis.parameters.producer_timeout_ms = 5_000;
    genesis
}

fn next_producer(net: &LocalNet, observer: usize) -> usize {
    let id = net.drivers[observer].node.next_election()[0].node;
    net.nodes().position(|node| node.node_id() == id).unwrap()
}

fn last_commit_ms(net: &LocalNet) -> u64 {
    net.traces
        .iter()
        .filter(|(_, _, event)| matches!(event, TraceEvent::BlockCommitted { .. }))
        .map(|(at, _, _)| *at)
        .max()
        .unwrap()
}

#[test]
fn a_restarted_producer_fetches_its_peers_pending_transfers_and_its_first_block_carries_them() {
    let genesis = slow_block_genesis(4, 3);
    let chain_id = genesis.chain_id.clone();
    let mut net = LocalNet::new(genesis, 5);
    net.run_until(3_500);
    // Just after block 3: the next one is a second away.
    assert!(last_commit_ms(&net) > 3_000, "a block was committed at about 3 s");
    let producer = next_producer(&net, 0);
    let submitter = (producer + 1) % 4;
    net.crash(producer);
    // While it is down, 30 transfers from three senders reach the other three validators.
    let mut ids: Vec<Hash> = Vec::new();
    for sender in 0..3 {
        for nonce in 0..10 {
            let transfer = sign_transfer(&account_key(sender), &chain_id, account_key(2).address(), 1_000, 7, nonce);
            ids.push(transfer_id(&transfer));
            net.submit(submitter, transfer);
        }
    }
    net.run_until(3_600);
    for (index, node) in net.nodes().enumerate().filter(|(index, _)| *index != producer) {
        assert_eq!(node.mempool().len(), 30, "node {index} holds every pending transfer");
    }
    net.restart(producer);
    let restarted = &net.drivers[producer].node;
    assert!(restarted.mempool().is_empty(), "a restart starts with an empty mempool");
    assert!(!restarted.is_mempool_synced(), "not synced before its peers answered");
    net.run_until(3_640);
    let restarted = &net.drivers[producer].node;
    assert!(restarted.is_mempool_synced(), "synced once its peers' pools arrived");
    assert_eq!(restarted.mempool_synced_peers(), 3);
    assert!(ids.iter().all(|id| restarted.mempool().contains(id)), "it fetched every pending transfer");
    assert_eq!(next_producer(&net, producer), producer, "still first in the ranking: it was down less than a timeout");
    net.run_until(5_000);
    let block = net
        .traces
        .iter()
        .find_map(|(_, node, event)| match event {
            TraceEvent::BlockProduced { height: 4, transfers, rank, .. } if *node == producer => {
                Some((*transfers, *rank))
            }
            _ => None,
        })
        .expect("the restarted producer made block 4");
    assert_eq!(block, (30, 0), "its first block carries what its peers held");
    // The last sync it reports is the one after the restart (the first was at genesis).
    let synced = net.traces.iter().rev().find_map(|(_, node, event)| match event {
        TraceEvent::MempoolSynced { synced_peers, admitted, timed_out } if *node == producer => {
            Some((*synced_peers, *admitted, *timed_out))
        }
        _ => None,
    });
    // A supermajority of 4 is 3: itself and two peers. Each of the two fetched in parallel.
    let (synced_peers, admitted, timed_out) = synced.expect("the restarted node reports its sync");
    assert!(synced_peers >= 2 && !timed_out, "synced with a supermajority: {synced:?}");
    assert_eq!(admitted, 30, "each pending transfer admitted once");
    assert!(net.dropped.is_empty(), "nothing was dropped: {:?}", net.dropped);
}

#[test]
fn a_transfer_that_loses_its_nonce_to_another_is_dropped_naming_the_winner() {
    let genesis = slow_block_genesis(4, 2);
    let chain_id = genesis.chain_id.clone();
    let mut net = LocalNet::new(genesis, 5);
    net.run_until(3_500);
    let producer = next_producer(&net, 0);
    let other = (producer + 2) % 4;
    // The same sender and nonce, two different transfers with the same fee: each node keeps the
    // one it saw first and refuses the other (a replacement needs a higher fee).
    let sender = account_key(0);
    let winner = sign_transfer(&sender, &chain_id, account_key(1).address(), UNITS_PER_COIN, 10, 0);
    let loser = sign_transfer(&sender, &chain_id, account_key(1).address(), 2 * UNITS_PER_COIN, 10, 0);
    net.submit(producer, winner.clone());
    net.submit(other, loser.clone());
    net.run_until(5_000);
    let (winner_id, loser_id) = (transfer_id(&winner), transfer_id(&loser));
    let height = net.drivers[0].node.tip().height;
    assert!(net.nodes().all(|node| node.state().account(&sender.address()).nonce == 1));
    let drops: Vec<_> = net.dropped.iter().filter(|(_, _, dropped)| dropped.id == loser_id).collect();
    assert_eq!(drops.len(), 1, "only the node holding the loser drops it: {:?}", net.dropped);
    let (_, node, dropped) = drops[0];
    assert_eq!(*node, other);
    assert_eq!(dropped.transfer, loser);
    let DropReason::NonceTaken { by, height: taken_at } = dropped.reason else {
        panic!("reason {:?}", dropped.reason);
    };
    assert_eq!(by, winner_id, "it names the transfer that took the nonce");
    assert!(taken_at >= 4 && taken_at <= height, "at the height that committed it ({taken_at})");
    assert!(net.dropped.iter().all(|(_, _, dropped)| dropped.id != winner_id), "the winner is never dropped");
}

fn node(validators: usize, index: usize, genesis: &Genesis) -> Node {
    assert_eq!(genesis.validators.len(), validators);
    validator_node(genesis, index, &Arc::new(SignatureCache::new(10_000)))
}

fn dropped_reasons(actions: &[Action]) -> Vec<(Hash, DropReason)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::TxDropped(dropped) => Some((dropped.id, dropped.reason.clone())),
            _ => None,
        })
        .collect()
}

fn accepted(actions: &[Action]) -> bool {
    actions.iter().any(|action| matches!(action, Action::TxAccepted { .. }))
}

#[test]
fn a_replaced_transfer_and_the_later_ones_it_leaves_unaffordable_are_dropped_with_their_reasons() {
    let genesis = fast_genesis(1, 2);
    let chain_id = genesis.chain_id.clone();
    let mut node = node(1, 0, &genesis);
    let sender = account_key(0);
    let to = account_key(1).address();
    let first = sign_transfer(&sender, &chain_id, to, 400 * UNITS_PER_COIN, 1, 0);
    let second = sign_transfer(&sender, &chain_id, to, 500 * UNITS_PER_COIN, 1, 1);
    assert!(accepted(&node.step(0, Event::TxSubmitted(first.clone()))));
    assert!(accepted(&node.step(1, Event::TxSubmitted(second.clone()))));
    // Same nonce 0, higher fee, and 600 TC: 600 + 500 no longer fits in 1,000.
    let replacement = sign_transfer(&sender, &chain_id, to, 600 * UNITS_PER_COIN, 2, 0);
    let actions = node.step(2, Event::TxSubmitted(replacement.clone()));
    assert!(accepted(&actions));
    assert_eq!(
        dropped_reasons(&actions),
        [
            (transfer_id(&first), DropReason::Replaced { by: transfer_id(&replacement) }),
            (transfer_id(&second), DropReason::Unaffordable),
        ]
    );
}

/// Steps `node` and returns the messages it sends to `peer`.
fn sent_to(actions: &[Action], peer: &tinychain_core::types::NodeId) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::SendTo { peer: to, message } if to == peer => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_peer_that_never_answers_cannot_hold_readiness_back_past_the_bounded_wait() {
    let genesis = fast_genesis(4, 2);
    let chain_id = genesis.chain_id.clone();
    let mut node = node(4, 0, &genesis);
    let peer = validator_key(1).address();
    let transfer = sign_transfer(&account_key(0), &chain_id, account_key(1).address(), 5, 1, 0);
    let id = transfer_id(&transfer);
    let actions = node.step(0, Event::PeerConnected { peer });
    assert!(matches!(
        sent_to(&actions, &peer)[..],
        [Message::Status { .. }, Message::Links { .. }, Message::PoolAnnounce { complete: true, .. }]
    ));
    let announce = Message::PoolAnnounce { ids: vec![id], complete: true };
    let actions = node.step(1, Event::MessageReceived { from: peer, message: announce.clone() });
    assert_eq!(sent_to(&actions, &peer), [Message::GetPooled { ids: vec![id] }]);
    // An answer nobody asked for (a different peer) and a second announcement change nothing.
    let stranger = validator_key(2).address();
    let actions =
        node.step(2, Event::MessageReceived { from: stranger, message: Message::Pooled(vec![transfer.clone()]) });
    assert!(!node.mempool().contains(&id) && sent_to(&actions, &stranger).is_empty());
    let actions = node.step(3, Event::MessageReceived { from: peer, message: announce });
    assert!(sent_to(&actions, &peer).is_empty(), "announced once per link: no second request");
    assert!(!node.is_mempool_synced());
    // The peer never answers: past the fetch timeout the node gives up on it, and past one
    // producer timeout since it started it counts as synced anyway.
    let timeout_ms = genesis.parameters.producer_timeout_ms;
    assert!(POOL_FETCH_TIMEOUT_MS > timeout_ms, "this genesis reaches the bounded wait first");
    let actions = node.step(timeout_ms - 1, Event::Tick);
    assert!(!node.is_mempool_synced());
    assert!(actions.iter().any(|action| matches!(action, Action::WakeAt(at) if *at == timeout_ms)));
    let actions = node.step(timeout_ms, Event::Tick);
    assert!(node.is_mempool_synced());
    let synced = actions.iter().find_map(|action| match action {
        Action::Trace(TraceEvent::MempoolSynced { synced_peers, admitted, timed_out }) => {
            Some((*synced_peers, *admitted, *timed_out))
        }
        _ => None,
    });
    assert_eq!(synced, Some((0, 0, true)));
    // A late answer is still admitted: the request stays open until the fetch timeout.
    let _ = node.step(timeout_ms + 1, Event::MessageReceived { from: peer, message: Message::Pooled(vec![transfer]) });
    assert!(node.mempool().contains(&id));
}

#[test]
fn a_pool_request_is_answered_with_what_is_held_in_the_order_asked() {
    let genesis = fast_genesis(4, 2);
    let chain_id = genesis.chain_id.clone();
    let mut node = node(4, 0, &genesis);
    let peer = validator_key(3).address();
    let transfers: Vec<_> =
        (0..3).map(|nonce| sign_transfer(&account_key(0), &chain_id, account_key(1).address(), 5, 1, nonce)).collect();
    for transfer in &transfers {
        assert!(accepted(&node.step(0, Event::TxSubmitted(transfer.clone()))));
    }
    let _ = node.step(1, Event::PeerConnected { peer });
    let unknown = Hash([9; 32]);
    let ids = vec![transfer_id(&transfers[2]), unknown, transfer_id(&transfers[0])];
    let actions = node.step(2, Event::MessageReceived { from: peer, message: Message::GetPooled { ids } });
    assert_eq!(sent_to(&actions, &peer), [Message::Pooled(vec![transfers[2].clone(), transfers[0].clone()])]);
}

/// Regression (found by the simulator's acknowledged-transfer check): transfers of abandoned
/// blocks went back to the pool highest block first, so a sender's later nonce met a gap and was
/// refused, and the transfer vanished without a word.
#[test]
fn transfers_of_several_abandoned_blocks_all_return_to_the_pool_and_commit() {
    let genesis = fast_genesis(4, 2);
    let chain_id = genesis.chain_id.clone();
    let mut net = LocalNet::new(genesis, 5);
    net.run_until(500);
    // Node 0 alone: it keeps producing (at a fallback rank) a branch the majority never sees.
    net.partition(&[0]);
    let sender = account_key(0);
    let mut ids = Vec::new();
    for nonce in 0..3 {
        let transfer = sign_transfer(&sender, &chain_id, account_key(1).address(), UNITS_PER_COIN, 5, nonce);
        ids.push(transfer_id(&transfer));
        net.submit(0, transfer);
        let height = net.drivers[0].node.tip().height;
        let until = net.now_ms + 5_000;
        while net.drivers[0].node.tip().height == height && net.now_ms < until {
            let step_to = net.now_ms + 50;
            net.run_until(step_to);
        }
        assert!(net.drivers[0].node.tip().height > height, "the lone node produced a block holding nonce {nonce}");
    }
    assert_eq!(net.drivers[0].node.state().account(&sender.address()).nonce, 3, "three blocks of the lone branch");
    assert_eq!(net.drivers[1].node.state().account(&sender.address()).nonce, 0, "the majority never saw them");
    net.heal();
    let until = net.now_ms + 5_000;
    net.run_until(until);
    for node in net.nodes() {
        assert_eq!(node.state().account(&sender.address()).nonce, 3, "all three committed on the majority's chain");
    }
    assert!(net.dropped.is_empty(), "nothing dropped: {:?}", net.dropped);
}

/// Found by the kill soak: a restarted node refused gossiped transfers that arrived before their
/// sender's earlier ones (still to be fetched by mempool sync), so it counted that sender's
/// pending nonce short and offered clients a nonce already taken. Such transfers are now held
/// until the gap fills.
#[test]
fn a_transfer_that_arrives_before_its_senders_earlier_nonce_is_held_then_admitted() {
    let genesis = fast_genesis(4, 2);
    let chain_id = genesis.chain_id.clone();
    let mut node = node(4, 0, &genesis);
    let peer = validator_key(1).address();
    let _ = node.step(0, Event::PeerConnected { peer });
    let sender = account_key(0);
    let transfers: Vec<_> =
        (0..3).map(|nonce| sign_transfer(&sender, &chain_id, account_key(1).address(), 5, 1, nonce)).collect();
    let pending_nonce =
        |node: &Node| node.mempool().pending_nonce(&sender.address(), &node.state().account(&sender.address()));
    for (at_ms, index) in [(1, 2), (2, 1)] {
        let message = Message::Transfers(vec![transfers[index].clone()]);
        let _ = node.step(at_ms, Event::MessageReceived { from: peer, message });
        assert!(!node.mempool().contains(&transfer_id(&transfers[index])), "nonce {index} waits for nonce 0");
    }
    assert_eq!(pending_nonce(&node), 0);
    // A client submitting nonce 1 itself is still told it leaves a gap: only peers' transfers
    // are held.
    let local = sign_transfer(&sender, &chain_id, account_key(1).address(), 6, 1, 1);
    let actions = node.step(3, Event::TxSubmitted(local));
    assert!(actions
        .iter()
        .any(|action| matches!(action, Action::TxRejected { reason, .. } if reason.code() == "nonce_gap")));
    // Nonce 0 arrives (by mempool sync here): all three are pending, in order.
    let _ = node.step(
        4,
        Event::MessageReceived {
            from: peer,
            message: Message::PoolAnnounce { ids: vec![transfer_id(&transfers[0])], complete: true },
        },
    );
    let _ = node.step(5, Event::MessageReceived { from: peer, message: Message::Pooled(vec![transfers[0].clone()]) });
    assert!(transfers.iter().all(|transfer| node.mempool().contains(&transfer_id(transfer))));
    assert_eq!(pending_nonce(&node), 3, "the node now offers the next free nonce");
}
