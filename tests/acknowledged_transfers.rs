//! Issue 11, "an acknowledged transfer is never silently lost", on real processes: a 4-node
//! testnet (500 ms blocks, 2 s producer timeout) under load from 8 senders spread over the
//! nodes, each asking the node it submits to for its `pending_nonce` as `tinychain wallet send`
//! does. While the load runs the next producer is killed with SIGKILL three times and restarted
//! 1 s later, before the fallback's turn, so the others' mempools still hold what it would have
//! included; the load keeps sending to it as soon as it answers. A restarted node once answered
//! a stale `pending_nonce` and acknowledged transfers whose nonce was already pending elsewhere,
//! which then vanished. Afterwards every acknowledged transfer must be committed exactly once,
//! or answered `dropped` by the node that acknowledged it with a documented reason the chain
//! bears out (for `nonce_taken`: the named transfer is committed at the named height with the
//! same sender and nonce); none may be `unknown`, and no (sender, nonce) is committed twice.
//!
//! Run against the binary from before the fix (commit c9e08ab), this test fails: 30 of 1,155
//! acknowledged transfers ended in no block and `unknown` on every node, all acknowledged within
//! about a second of a kill or restart of the next producer.
//!
//! About 30 s of wall time on a 2-core machine. The larger run is `cargo bench --bench soak`.
//! A failure keeps the testnet directory (its path is printed) with every node's log.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};
use support::load::{
    account_for_every_acknowledged_transfer, describe_drops, development_key, diagnose_failures,
    drops_by_time_since_restart, fund_accounts, highest_tip, minimum_fee, next_producer,
    restart_and_watch_mempool_refill, sender_keys, settle, CanonicalChain, Load, LoadSettings, Timeline,
};
use support::{serial, Testnet};

const NODES: usize = 4;
const SENDERS: usize = 8;
const TRANSFERS_PER_SECOND: f64 = 48.0;
const BLOCK_INTERVAL_MS: u64 = 500;
const PRODUCER_TIMEOUT_MS: u64 = 2_000;
const KILLS: usize = 3;
/// How long the next producer stays dead: two block intervals, half the producer timeout.
const DOWN_FOR: Duration = Duration::from_millis(1_000);
/// How long the load runs against the network after each restart before the next kill.
const AFTER_RESTART: Duration = Duration::from_secs(6);

#[test]
fn every_transfer_acknowledged_while_the_next_producer_is_killed_is_committed_once_or_answered_dropped() {
    let _serial = serial();
    let started = Instant::now();
    let mut net = Testnet::init(NODES, BLOCK_INTERVAL_MS, PRODUCER_TIMEOUT_MS);
    net.start_all();
    net.wait_for(Duration::from_secs(60), "every node linked to every other at height 2", |net| {
        (0..NODES)
            .all(|index| {
                net.status(index).is_some_and(|status| {
                    status["peers"] == NODES - 1 && status["tip"]["height"].as_u64().is_some_and(|height| height >= 2)
                })
            })
            .then_some(())
    });
    let senders = sender_keys("acknowledged-transfers", SENDERS);
    let fee = minimum_fee(&net);
    let addresses: Vec<_> = senders.iter().map(|key| key.address()).collect();
    fund_accounts(&net, &development_key(&net), &addresses, 1_000 * 100_000_000, fee);
    let sink = tinychain_core::testkit::seeded_key("acknowledged-transfers-sink", 0).address();
    println!("network up and senders funded after {:.1} s", started.elapsed().as_secs_f64());

    let settings = LoadSettings {
        transfers_per_second: TRANSFERS_PER_SECOND,
        workers: SENDERS,
        amount_base: 1,
        fee,
        null_nonce_retry: Duration::from_millis(100),
    };
    let load = Load::start(&net, &senders, sink, settings);
    let mut timeline = Timeline::default();
    std::thread::sleep(Duration::from_secs(3));
    let mut restarts: Vec<(usize, Duration)> = Vec::new();
    for kill in 1..=KILLS {
        let victim = net.wait_for(Duration::from_secs(30), "a next producer", next_producer);
        let tip = highest_tip(&net);
        net.kill9(victim);
        timeline.record(&load, format!("kill {kill}: SIGKILL node {victim}, the next producer (tip {tip})"));
        std::thread::sleep(DOWN_FOR);
        let refill = restart_and_watch_mempool_refill(&mut net, victim, Duration::from_secs(30));
        let restarted_at = refill.restarted_at;
        restarts.push((victim, restarted_at - load.started));
        timeline.record(&load, format!("kill {kill}: restarted; {refill}"));
        std::thread::sleep(AFTER_RESTART.saturating_sub(restarted_at.elapsed()));
    }
    let tip_at_stop = highest_tip(&net);
    let report = load.stop();
    report.print();
    println!("load stopped at tip {tip_at_stop}, {:.1} s into the test", started.elapsed().as_secs_f64());

    // The trigger was exercised: each restarted node acknowledged transfers soon after it
    // came back.
    for (victim, restarted_after) in &restarts {
        let soon_after = report
            .acknowledged
            .iter()
            .filter(|transfer| {
                transfer.node == *victim
                    && transfer.acknowledged_after >= *restarted_after
                    && transfer.acknowledged_after <= *restarted_after + AFTER_RESTART
            })
            .count();
        println!("node {victim} acknowledged {soon_after} transfers within {AFTER_RESTART:?} of its restart");
        assert!(soon_after > 0, "the load reached node {victim} after its restart; timeline:\n{:#?}", timeline.events);
    }
    assert!(
        report.acknowledged.len() >= 200,
        "a load worth checking: only {} transfers were acknowledged",
        report.acknowledged.len()
    );

    let settled = settle(&net, tip_at_stop, Duration::from_secs(120)).unwrap_or_else(|why| {
        let kept = net.keep();
        let logs: Vec<String> = (0..NODES).map(|index| net.log_tail(index, 30)).collect();
        panic!("{why}\ntestnet kept in {kept:?}\n{}", logs.join("\n"))
    });
    let chain = CanonicalChain::read(&net, 0, settled);
    assert!(chain.disagreements.is_empty(), "every node holds the same blocks: {:#?}", chain.disagreements);
    let accounting = account_for_every_acknowledged_transfer(&net, &chain, &report.acknowledged);
    println!(
        "blocks 1..={settled}: {} transfers, all nodes agree; {:.1} s into the test",
        chain.transfer_count,
        started.elapsed().as_secs_f64()
    );
    accounting.print();
    println!("{}", drops_by_time_since_restart(&accounting, &restarts));
    for line in describe_drops(&accounting, &report.acknowledged, 5) {
        println!("{line}");
    }
    if !accounting.holds() {
        let diagnosis = diagnose_failures(&net, &chain, &accounting, &timeline, report.started_unix_ms, 10);
        let kept = net.keep();
        panic!(
            "acknowledged transfers were not accounted for:\n{}\n{diagnosis}\ntimeline: {:#?}\ntestnet kept in {kept:?}",
            accounting.failures(20).join("\n"),
            timeline.events
        );
    }
}
