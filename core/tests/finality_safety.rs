//! Property: honest validators voting by the rules never finalize two conflicting blocks, under
//! random partitions, crashes, restarts and per-link delays (which reorder deliveries and make
//! producers race into forks). Then, with every fault healed, finality resumes everywhere.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use tinychain_core::node::TraceEvent;
use tinychain_core::testkit::{fast_genesis, LocalNet};
use tinychain_core::types::Checkpoint;

#[derive(Clone, Debug)]
enum Fault {
    Partition(Vec<bool>),
    Heal,
    Crash(usize),
    Restart(usize),
    Delay { from: usize, to: usize, delay_ms: u64 },
}

fn fault(nodes: usize) -> impl Strategy<Value = Fault> {
    prop_oneof![
        proptest::collection::vec(any::<bool>(), nodes).prop_map(Fault::Partition),
        Just(Fault::Heal),
        (0..nodes).prop_map(Fault::Crash),
        (0..nodes).prop_map(Fault::Restart),
        (0..nodes, 0..nodes, 0u64..700).prop_map(|(from, to, delay_ms)| Fault::Delay { from, to, delay_ms }),
    ]
}

/// No two different final blocks at one height, on any two nodes, ever: every `Finalized` trace
/// is checked against every other, and each node's canonical chain up to its final height is a
/// prefix of every other's.
fn check_safety(net: &LocalNet) {
    let mut final_at_height: std::collections::BTreeMap<u64, Checkpoint> = Default::default();
    for (_, node, event) in &net.traces {
        if let TraceEvent::Finalized { checkpoint } = event {
            let previous = final_at_height.entry(checkpoint.height).or_insert(*checkpoint);
            assert_eq!(
                previous, checkpoint,
                "node {node} finalized a conflicting block at height {}",
                checkpoint.height
            );
        }
    }
    for a in 0..net.drivers.len() {
        for b in 0..net.drivers.len() {
            let common = net.drivers[a].node.finalized().height.min(net.drivers[b].node.finalized().height);
            for height in [common, common / 2, 0] {
                assert_eq!(
                    net.drivers[a].node.canonical_hash(height),
                    net.drivers[b].node.canonical_hash(height),
                    "nodes {a} and {b} disagree below their final blocks at height {height}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn honest_validators_never_finalize_conflicting_blocks(
        nodes in 4usize..=7,
        faults in proptest::collection::vec((200u64..1_500, fault(7)), 1..12),
    ) {
        let mut net = LocalNet::new(fast_genesis(nodes, 0), 5);
        let mut now_ms = 0;
        for (gap_ms, fault) in faults {
            now_ms += gap_ms;
            net.run_until(now_ms);
            check_safety(&net);
            match fault {
                Fault::Partition(sides) => {
                    let group: Vec<usize> = (0..nodes).filter(|&index| sides[index]).collect();
                    net.partition(&group);
                }
                Fault::Heal => net.heal(),
                Fault::Crash(index) if index < nodes && net.up[index] => net.crash(index),
                Fault::Restart(index) if index < nodes && !net.up[index] => net.restart(index),
                Fault::Delay { from, to, delay_ms } if from < nodes && to < nodes => net.extra_delay_ms[from][to] = delay_ms,
                _ => {}
            }
        }
        net.run_until(now_ms + 500);
        check_safety(&net);
        // Liveness: heal everything, restart the crashed, remove delays; finality must resume.
        for row in net.extra_delay_ms.iter_mut() {
            row.fill(0);
        }
        for index in 0..nodes {
            if !net.up[index] {
                net.restart(index);
            }
        }
        net.heal();
        let healed_at = net.now_ms;
        let final_at_heal: Vec<u64> = net.nodes().map(|node| node.finalized().height).collect();
        net.run_until(healed_at + 4_000);
        check_safety(&net);
        let top = net.nodes().map(|node| node.tip().height).max().unwrap();
        for (index, node) in net.nodes().enumerate() {
            prop_assert!(node.finalized().height > final_at_heal[index], "node {} finalizes again after the heal", index);
            prop_assert!(top - node.finalized().height <= 4, "node {} final lag {} after heal", index, top - node.finalized().height);
        }
    }
}
