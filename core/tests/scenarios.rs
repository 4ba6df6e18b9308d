//! Whole-node scenarios on the lock-step `LocalNet`: real `Node`s, real codec, virtual time.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, LocalNet};
use tinychain_core::types::UNITS_PER_COIN;

fn assert_agree(net: &LocalNet, up_to: u64) {
    for height in 0..=up_to {
        let reference = net.drivers[0].node.canonical_hash(height);
        for node in net.nodes().skip(1) {
            assert_eq!(node.canonical_hash(height), reference, "nodes disagree at height {height}");
        }
    }
}

#[test]
fn healthy_network_produces_every_interval_and_finalizes_two_blocks_behind() {
    let genesis = fast_genesis(4, 2);
    let mut net = LocalNet::new(genesis, 5);
    net.run_until(3_000);
    let tips: Vec<u64> = net.nodes().map(|node| node.tip().height).collect();
    // 100 ms blocks for 3 s: about 30 blocks (latency makes intervals a little longer).
    assert!(tips.iter().all(|&height| height >= 25), "tips {tips:?}");
    let lowest = *tips.iter().min().unwrap();
    assert_agree(&net, lowest);
    for node in net.nodes() {
        let lag = node.tip().height - node.finalized().height;
        assert!(lag <= 3, "final block {lag} behind the tip");
    }
    // Every block at rank 0: no timeouts when everyone is healthy.
    assert!(net.committed().iter().all(|(_, _, _, rank)| *rank == 0));
}

#[test]
fn transfers_commit_and_balances_move_exactly() {
    let genesis = fast_genesis(4, 2);
    let chain_id = genesis.chain_id.clone();
    let reward = genesis.parameters.block_reward;
    let mut net = LocalNet::new(genesis, 5);
    net.run_until(300);
    let sender = account_key(0);
    let recipient = account_key(1).address();
    for nonce in 0..5 {
        net.submit(1, sign_transfer(&sender, &chain_id, recipient, UNITS_PER_COIN, 1_000, nonce));
    }
    net.run_until(1_500);
    let state = net.drivers[0].node.state();
    assert_eq!(state.account(&sender.address()).nonce, 5);
    assert_eq!(state.account(&sender.address()).balance, 1_000 * UNITS_PER_COIN - 5 * (UNITS_PER_COIN + 1_000));
    assert_eq!(state.account(&recipient).balance, 1_005 * UNITS_PER_COIN);
    assert_eq!(state.balances_total(), u128::from(state.supply));
    assert_eq!(state.supply, 2_000 * UNITS_PER_COIN + state.tip.height * reward);
}

/// The validator ranked first for the next block on node `observer`'s chain.
fn next_producer(net: &LocalNet, observer: usize) -> usize {
    let id = net.drivers[observer].node.next_election()[0].node;
    net.nodes().position(|node| node.node_id() == id).unwrap()
}

#[test]
fn a_crashed_top_producer_costs_one_timeout_then_drops_to_the_end() {
    let genesis = fast_genesis(4, 0);
    let timeout_ms = genesis.parameters.producer_timeout_ms;
    let interval_ms = genesis.parameters.block_interval_ms;
    let mut net = LocalNet::new(genesis, 5);
    // Mid-interval, once the last block has reached everyone: the next producer has not acted.
    net.run_until(1_050);
    let victim = next_producer(&net, 0);
    let crash_height = net.drivers[0].node.tip().height;
    let crashed_at = net.now_ms;
    net.crash(victim);
    net.run_until(crashed_at + 3_000);
    let observer = (victim + 1) % 4;
    let commits: Vec<(u64, u64, u32)> = net
        .committed()
        .into_iter()
        .filter(|(at, node, height, _)| *node == observer && *at > crashed_at && *height > crash_height)
        .map(|(at, _, height, rank)| (at, height, rank))
        .collect();
    // The first block after the crash comes from rank 1 after the producer timeout...
    let (first_at, first_height, first_rank) = commits[0];
    assert_eq!(first_height, crash_height + 1);
    assert_eq!(first_rank, 1, "the fallback producer is rank 1");
    assert!(first_at - crashed_at <= timeout_ms + 50, "fallback after {} ms", first_at - crashed_at);
    // ...and every later one at rank 0 again: the dead node sits at the end of the ranking.
    assert!(commits[1..].iter().all(|(_, _, rank)| *rank == 0), "{commits:?}");
    for window in commits[1..].windows(2) {
        assert!(window[1].0 - window[0].0 <= interval_ms + 50, "{commits:?}");
    }
    let demoted = net.drivers[observer].node.next_election();
    assert_eq!(demoted.last().unwrap().node, net.drivers[victim].node.node_id());
    // Three of four validators still finalize.
    let lag = net.drivers[observer].node.tip().height - net.drivers[observer].node.finalized().height;
    assert!(lag <= 3, "final lag {lag}");
}

#[test]
fn a_restarted_node_resumes_from_storage_catches_up_and_never_votes_twice() {
    let mut net = LocalNet::new(fast_genesis(4, 0), 5);
    net.run_until(1_000);
    let victim = 3;
    let stored_tip = net.drivers[victim].store.state.tip;
    let last_vote = net.drivers[victim].store.last_vote.expect("a running validator has voted");
    let sequence = net.drivers[victim].store.report_sequence;
    net.crash(victim);
    net.run_until(2_000);
    net.restart(victim);
    // Restored exactly what storage held.
    assert_eq!(net.drivers[victim].node.last_vote(), Some(last_vote));
    assert!(net.drivers[victim].node.tip().height >= stored_tip.height);
    net.run_until(3_500);
    let reference_tip = net.drivers[0].node.tip();
    assert!(net.drivers[victim].node.tip().height + 2 >= reference_tip.height, "caught up");
    assert_agree(&net, net.drivers[victim].node.tip().height.min(reference_tip.height));
    // Its report sequence continued above the stored one, and vote targets kept rising.
    assert!(net.drivers[victim].node.report_sequence() > sequence);
    assert!(net.drivers[victim].node.last_vote().unwrap().target.height > last_vote.target.height);
}

#[test]
fn a_restored_node_does_not_vote_again_at_its_last_vote_height() {
    use tinychain_core::message::Message;
    use tinychain_core::node::{Action, Event};
    let mut net = LocalNet::new(fast_genesis(4, 0), 5);
    net.run_until(600);
    let victim = 2;
    net.crash(victim);
    // Restart from storage but before any new block arrives: the tip equals its last vote
    // target, so its fresh report must carry no vote.
    let (node, actions) = {
        let restored = net.drivers[victim].store.restored();
        let config = tinychain_core::node::NodeConfig {
            genesis: net.drivers[victim].node.genesis().clone(),
            key: tinychain_core::testkit::validator_key(victim),
            verify_threads: 1,
            mempool: Default::default(),
            unmeasured_metrics: (0, 0),
        };
        let mut node = tinychain_core::node::Node::new(config, std::sync::Arc::new(Default::default()));
        let actions = node.step(net.now_ms, Event::Restored(Box::new(restored)));
        (node, actions)
    };
    let last_vote = node.last_vote().unwrap();
    assert_eq!(last_vote.target, node.tip(), "it had voted for its tip before the crash");
    let reports: Vec<_> = actions
        .iter()
        .filter_map(|action| match action {
            Action::Broadcast { message: Message::Report(report), .. } => Some(report.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1, "a restarted node reports its tip once");
    assert_eq!(reports[0].vote, None, "no second vote at the same target height");
    assert!(reports[0].sequence > net.drivers[victim].store.report_sequence);
    // The persist action comes before the broadcast that carries the report.
    let persist = actions.iter().position(|action| matches!(action, Action::PersistReportState { .. })).unwrap();
    let broadcast = actions
        .iter()
        .position(|action| matches!(action, Action::Broadcast { message: Message::Report(_), .. }))
        .unwrap();
    assert!(persist < broadcast);
}

#[test]
fn a_minority_partition_never_finalizes_and_adopts_the_majority_chain_on_heal() {
    let mut net = LocalNet::new(fast_genesis(4, 0), 5);
    net.run_until(1_000);
    let final_before = net.drivers[0].node.finalized();
    let minority = 3;
    net.partition(&[minority]);
    net.run_until(6_000);
    // The minority keeps producing on its own, yet never finalizes anything new.
    let minority_node = &net.drivers[minority].node;
    assert!(minority_node.tip().height > final_before.height + 2, "minority stalled at {:?}", minority_node.tip());
    assert!(minority_node.finalized().height <= final_before.height + 2);
    let majority_final = net.drivers[0].node.finalized();
    assert!(majority_final.height > final_before.height + 10, "majority finalizes: {majority_final:?}");
    // The minority's chain may even be longer; it still loses to the justified majority chain.
    net.heal();
    net.run_until(8_000);
    let tip = net.drivers[0].node.tip().height.min(net.drivers[minority].node.tip().height);
    assert_agree(&net, tip);
    assert_eq!(net.drivers[minority].node.canonical_hash(majority_final.height), Some(majority_final.hash));
    assert!(net.drivers[minority].node.finalized().height >= majority_final.height);
    let reorgs = net
        .traces
        .iter()
        .filter(|(_, node, event)| *node == minority && matches!(event, tinychain_core::node::TraceEvent::Reorg { .. }))
        .count();
    assert!(reorgs >= 1, "the minority rolled back its own branch");
}

#[test]
fn after_a_reorg_the_state_equals_a_fresh_replay_of_the_winning_chain() {
    use std::sync::Arc;
    use tinychain_core::crypto::SignatureCache;
    use tinychain_core::genesis::genesis_block;
    use tinychain_core::validate::{apply_block, validate_block, BlockContext};
    let genesis = fast_genesis(4, 2);
    let chain_id = genesis.chain_id.clone();
    let mut net = LocalNet::new(genesis.clone(), 5);
    net.run_until(500);
    let minority = 0;
    net.partition(&[minority]);
    // Conflicting transfers on both sides: the minority's must be undone by the reorg.
    let sender = account_key(0);
    net.submit(minority, sign_transfer(&sender, &chain_id, account_key(1).address(), 7 * UNITS_PER_COIN, 10, 0));
    net.submit(1, sign_transfer(&sender, &chain_id, account_key(1).address(), 3 * UNITS_PER_COIN, 20, 0));
    net.run_until(3_000);
    net.heal();
    net.run_until(4_500);
    let node = &net.drivers[minority].node;
    // Replay the winning chain from genesis into a fresh state.
    let (_, mut state) = genesis_block(&genesis);
    let cache = SignatureCache::new(100_000);
    let mut hashes = vec![state.tip.hash];
    for height in 1..=node.tip().height {
        let block = net.drivers[minority].store.block_at(height).unwrap();
        let ancestor_hash = |h: u64| hashes.get(h as usize).copied();
        let context = BlockContext {
            genesis: &genesis,
            state: &state,
            ancestor_hash: &ancestor_hash,
            now_ms: u64::MAX / 2,
            cache: &cache,
            verify_threads: 1,
        };
        let valid = validate_block(&context, block).expect("the winning chain replays");
        let hash = valid.hash;
        let _undo = apply_block(&mut state, &valid);
        hashes.push(hash);
    }
    assert_eq!(&state, node.state(), "in-memory state after the reorg equals a fresh replay");
    assert_eq!(&state, &net.drivers[minority].store.state, "stored state after the reorg equals a fresh replay");
    assert_eq!(state.account(&account_key(1).address()).balance, 1_003 * UNITS_PER_COIN, "the majority's transfer won");
    let _ = Arc::new(());
}

#[test]
fn a_node_far_behind_syncs_in_several_rounds_and_then_produces_again() {
    let mut net = LocalNet::new(fast_genesis(4, 0), 5);
    net.run_until(500);
    let victim = 1;
    net.crash(victim);
    // 100 ms blocks for 20 s: about 200 blocks, several 64-block sync responses.
    net.run_until(20_500);
    let behind = net.drivers[0].node.tip().height - net.drivers[victim].store.state.tip.height;
    assert!(behind > 150, "the node should be far behind, is {behind} blocks");
    net.restart(victim);
    net.run_until(23_000);
    assert!(net.drivers[victim].node.tip().height + 2 >= net.drivers[0].node.tip().height);
    assert_agree(&net, net.drivers[victim].node.tip().height.min(net.drivers[0].node.tip().height));
    let sync_requests = net
        .traces
        .iter()
        .filter(|(at, node, event)| {
            *node == victim && *at >= 20_500 && matches!(event, tinychain_core::node::TraceEvent::SyncRequested { .. })
        })
        .count();
    assert!(sync_requests >= 3, "expected several sync rounds, saw {sync_requests}");
    // Once caught up and reporting again, it is back in the rotation (which rank it gets
    // depends on the tie-break, so allow a few more seconds).
    net.run_until(30_000);
    let produced = net.traces.iter().any(|(at, node, event)| {
        *node == victim && *at > 21_000 && matches!(event, tinychain_core::node::TraceEvent::BlockProduced { .. })
    });
    assert!(produced, "the restarted validator is back in the rotation");
}

/// Regression (found by `finality_safety`): two halves that forked long ago, neither holding a
/// quorum, must converge after the heal. Sync used to fetch 64 blocks of the other branch and
/// then ask again with a locator of its own canonical chain only, getting the same 64 blocks
/// forever; the locator now follows the highest side branch too.
#[test]
fn halves_that_forked_long_ago_converge_and_finalize_after_the_heal() {
    let mut net = LocalNet::new(fast_genesis(5, 0), 5);
    net.run_until(305);
    net.partition(&[2, 3]);
    net.run_until(7_885);
    net.partition(&[0, 1]);
    net.run_until(9_808);
    let final_before = net.drivers[0].node.finalized().height;
    net.heal();
    let healed_at = net.now_ms;
    net.run_until(healed_at + 4_000);
    let tip = net.nodes().map(|node| node.tip().height).min().unwrap();
    assert_agree(&net, tip);
    for node in net.nodes() {
        assert!(node.finalized().height > final_before + 50, "finality resumed: {:?}", node.finalized());
        assert!(node.tip().height - node.finalized().height <= 3);
        assert_eq!(node.side_blocks(), 0, "the losing branch was pruned once finality passed it");
    }
}

#[test]
fn a_transfer_only_the_minority_committed_is_regossiped_and_commits_on_the_winning_chain() {
    let genesis = fast_genesis(4, 2);
    let chain_id = genesis.chain_id.clone();
    let mut net = LocalNet::new(genesis, 5);
    net.run_until(500);
    let minority = 0;
    net.partition(&[minority]);
    let sender = account_key(0);
    let recipient = account_key(1).address();
    net.submit(minority, sign_transfer(&sender, &chain_id, recipient, 2 * UNITS_PER_COIN, 5, 0));
    // Let the minority produce a block with it (its rank comes up within a few blocks).
    net.run_until(4_000);
    let minority_included = net.drivers[minority].store.blocks.values().any(|(block, _)| !block.transfers.is_empty());
    assert!(minority_included, "the minority committed the transfer on its branch");
    assert_eq!(net.drivers[1].node.state().account(&sender.address()).nonce, 0, "the majority never saw it");
    net.heal();
    // Step until the minority has rolled back its branch, then crash it at once: from then on
    // only the re-gossiped copy can bring the transfer to the majority.
    let has_reorged = |net: &LocalNet| {
        net.traces.iter().any(|(_, node, event)| {
            *node == minority && matches!(event, tinychain_core::node::TraceEvent::Reorg { .. })
        })
    };
    while !has_reorged(&net) {
        let next = net.now_ms + 1;
        net.run_until(next);
        assert!(net.now_ms < 6_000, "the minority reorganises after the heal");
    }
    net.crash(minority);
    net.run_until(8_000);
    for node in net.nodes().skip(1) {
        assert_eq!(node.state().account(&sender.address()).nonce, 1, "committed on the winning chain");
        assert_eq!(node.state().account(&recipient).balance, 1_002 * UNITS_PER_COIN);
    }
}
