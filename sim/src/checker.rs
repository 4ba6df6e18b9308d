//! The invariants checked after every step, on every honest node (a dishonest validator's cores
//! are never checked: what they hold proves nothing about the protocol):
//!
//! - safety: no two different final blocks at one height on any two honest nodes, and a node's
//!   final block never moves back or changes (so each node's final chain is a prefix of every
//!   other's). With a third or more of the validators dishonest, safety may be lost: conflicting
//!   final blocks are then counted (pairs of honest nodes that disagree at some height), and the
//!   engine checks they come with evidence naming a third of the validators;
//! - supply: the sum of balances equals genesis + rewards (fees only move coins), so no balance
//!   went negative or appeared from nowhere;
//! - every committed transfer is valid: none of the deliberately invalid ones commits, and no
//!   transfer is committed twice on one chain;
//! - no committed transfer is lost: a final block never leaves a node's chain;
//! - no recorded report holds out-of-range metrics;
//! - the gap between consecutive final blocks is within what the timeout rule allows for the
//!   block's rank (each unreachable candidate ahead costs one `producer_timeout_ms`), plus one
//!   interval and the network delay, whenever the network is otherwise calm: crashes are the
//!   fault the timeout rule bounds; a producer returning from a pause, a partition or a skewed
//!   clock may legitimately produce late, so gaps next to those faults are not judged, nor the
//!   gap after a dishonest validator's block (it may have held its block back).
//!
//! Violations are collected (the run goes on) and reported; a failing run exits non-zero.

use std::collections::{BTreeMap, BTreeSet};
use tinychain_core::election::eligible_at_ms;
use tinychain_core::genesis::Genesis;
use tinychain_core::node::{ChainOp, Commit};
use tinychain_core::testkit::ModelStorage;
use tinychain_core::types::{Checkpoint, Hash, Height};
use tinychain_core::validate::{block_hash, transfer_id};

/// Violations kept in full; beyond this only the count grows.
const VIOLATIONS_KEPT: usize = 20;

pub struct Checker {
    genesis_supply: u64,
    block_reward: u64,
    /// The final blocks at each height across the honest nodes, and which nodes finalized each
    /// (more than one only when safety was lost).
    finals_by_height: BTreeMap<Height, BTreeMap<Hash, BTreeSet<usize>>>,
    node_final: Vec<Checkpoint>,
    honest: Vec<bool>,
    /// Count conflicting final blocks instead of reporting them as violations.
    counts_conflicts: bool,
    /// Pairs of honest nodes (lower index first) that finalized different blocks at one height.
    conflicting_pairs: BTreeSet<(usize, usize)>,
    /// Per node: transfer ids on its canonical chain, by height.
    chain_transfers: Vec<BTreeMap<Height, Vec<Hash>>>,
    chain_transfer_ids: Vec<BTreeSet<Hash>>,
    /// Final heights whose gap to the parent was checked.
    gap_checked_to: Height,
    pub violations: Vec<String>,
    pub violation_count: u64,
    /// The longest gap before any final block, and before one judged against the timeout rule.
    pub max_final_gap_ms: u64,
    pub max_judged_gap_ms: u64,
}

/// How gaps between final blocks are judged right now.
#[derive(Clone, Copy, Debug)]
pub struct GapRule {
    /// Since when no fault other than crashes has been active (None: one is active now).
    pub calm_since_ms: Option<u64>,
    /// Network delay and tick slack added to what the rank allows.
    pub slack_ms: u64,
}

impl Checker {
    /// `honest[i]`: validator i is checked. `counts_conflicts`: a third or more are dishonest.
    pub fn new(genesis: &Genesis, genesis_hash: Hash, honest: Vec<bool>, counts_conflicts: bool) -> Checker {
        let nodes = honest.len();
        let all_honest: BTreeSet<usize> = (0..nodes).filter(|index| honest[*index]).collect();
        Checker {
            genesis_supply: genesis.allocations.iter().map(|allocation| allocation.amount).sum(),
            block_reward: genesis.parameters.block_reward,
            finals_by_height: BTreeMap::from([(0, BTreeMap::from([(genesis_hash, all_honest)]))]),
            node_final: vec![Checkpoint { height: 0, hash: genesis_hash }; nodes],
            honest,
            counts_conflicts,
            conflicting_pairs: BTreeSet::new(),
            chain_transfers: vec![BTreeMap::new(); nodes],
            chain_transfer_ids: vec![BTreeSet::new(); nodes],
            gap_checked_to: 0,
            violations: Vec::new(),
            violation_count: 0,
            max_final_gap_ms: 0,
            max_judged_gap_ms: 0,
        }
    }

    pub fn violation(&mut self, at_ms: u64, text: String) {
        self.violation_count += 1;
        if self.violations.len() < VIOLATIONS_KEPT {
            self.violations.push(format!("t={at_ms}ms {text}"));
        }
    }

    /// A node restarted: its chain is what its storage holds.
    pub fn on_restart(&mut self, node: usize, storage: &ModelStorage) {
        self.chain_transfers[node].clear();
        self.chain_transfer_ids[node].clear();
        for (height, (block, _)) in &storage.blocks {
            let ids: Vec<Hash> = block.transfers.iter().map(transfer_id).collect();
            self.chain_transfer_ids[node].extend(ids.iter().copied());
            self.chain_transfers[node].insert(*height, ids);
        }
    }

    /// Checks a commit once storage has carried it out.
    #[allow(clippy::too_many_arguments)]
    pub fn on_commit(
        &mut self,
        at_ms: u64,
        node: usize,
        commit: &Commit,
        storage: &ModelStorage,
        genesis: &Genesis,
        invalid_ids: &BTreeSet<Hash>,
        gap_rule: GapRule,
    ) {
        for op in &commit.ops {
            match op {
                ChainOp::Rollback { height, .. } => {
                    for id in self.chain_transfers[node].remove(height).unwrap_or_default() {
                        self.chain_transfer_ids[node].remove(&id);
                    }
                }
                ChainOp::Apply { block, .. } => {
                    let height = block.header.height;
                    let ids: Vec<Hash> = block.transfers.iter().map(transfer_id).collect();
                    for id in &ids {
                        if invalid_ids.contains(id) {
                            self.violation(
                                at_ms,
                                format!("n{node} committed invalid transfer {id} at height {height}"),
                            );
                        }
                        if !self.chain_transfer_ids[node].insert(*id) {
                            self.violation(
                                at_ms,
                                format!("n{node} committed transfer {id} twice (again at height {height})"),
                            );
                        }
                    }
                    self.chain_transfers[node].insert(height, ids);
                }
            }
        }
        // Supply: balances sum to genesis + rewards, and nothing overflowed on the way.
        let state = &storage.state;
        let expected_supply =
            u128::from(self.genesis_supply) + u128::from(state.tip.height) * u128::from(self.block_reward);
        if state.balances_total() != expected_supply || u128::from(state.supply) != expected_supply {
            self.violation(
                at_ms,
                format!(
                    "n{node} supply {} and balances {} differ from genesis + rewards {expected_supply}",
                    state.supply,
                    state.balances_total()
                ),
            );
        }
        for record in &state.validators {
            if let Some(report) = record.latest_report {
                if report.cpu > 1000 || report.net > 1000 {
                    self.violation(
                        at_ms,
                        format!("n{node} recorded an out-of-range report ({}, {})", report.cpu, report.net),
                    );
                }
            }
        }
        self.check_finality(at_ms, node, commit.finalized, storage, genesis, gap_rule);
    }

    fn check_finality(
        &mut self,
        at_ms: u64,
        node: usize,
        finalized: Checkpoint,
        storage: &ModelStorage,
        genesis: &Genesis,
        gap_rule: GapRule,
    ) {
        let previous = self.node_final[node];
        if finalized.height < previous.height {
            self.violation(
                at_ms,
                format!("n{node} final block moved back from {} to {}", previous.height, finalized.height),
            );
            return;
        }
        let still_there = storage.block_at(previous.height).map(|block| block_hash(&block.header));
        if still_there != Some(previous.hash) {
            self.violation(at_ms, format!("n{node} lost its final block at height {}", previous.height));
        }
        if finalized.height == previous.height {
            return;
        }
        // Every block that just became final on this node must be the one final everywhere.
        for height in previous.height + 1..=finalized.height {
            let Some(block) = storage.block_at(height) else {
                self.violation(at_ms, format!("n{node} finalized height {height} it does not store"));
                continue;
            };
            let hash = block_hash(&block.header);
            let finals = self.finals_by_height.entry(height).or_default();
            let is_first = finals.is_empty();
            let others: Vec<(Hash, usize)> = finals
                .iter()
                .filter(|(other, _)| **other != hash)
                .flat_map(|(other, nodes)| nodes.iter().map(move |other_node| (*other, *other_node)))
                .collect();
            finals.entry(hash).or_default().insert(node);
            for (other, other_node) in others {
                if self.counts_conflicts {
                    self.conflicting_pairs.insert((node.min(other_node), node.max(other_node)));
                } else {
                    self.violation(
                        at_ms,
                        format!("SAFETY: n{node} finalized {hash} at height {height}, n{other_node} finalized {other}"),
                    );
                }
            }
            if is_first && height > self.gap_checked_to {
                self.check_gap(at_ms, height, storage, genesis, gap_rule);
                self.gap_checked_to = height;
            }
        }
        self.node_final[node] = finalized;
    }

    /// A final block came no later than its rank allows after its parent, plus slack.
    fn check_gap(&mut self, at_ms: u64, height: Height, storage: &ModelStorage, genesis: &Genesis, gap_rule: GapRule) {
        let (Some(block), Some(parent)) = (storage.block_at(height), storage.block_at(height - 1)) else {
            return;
        };
        let gap_ms = block.header.timestamp_ms.saturating_sub(parent.header.timestamp_ms);
        self.max_final_gap_ms = self.max_final_gap_ms.max(gap_ms);
        let settle_ms = 2 * genesis.parameters.producer_timeout_ms;
        // A dishonest producer's timestamp says nothing about when its block reached anyone
        // (it may have held it back): the gap after its block is not judged.
        let parent_is_honest = parent.header.height == 0
            || genesis.validator_index(&parent.header.producer).is_some_and(|index| self.honest[index]);
        let judged = parent_is_honest
            && gap_rule
                .calm_since_ms
                .is_some_and(|calm_since_ms| parent.header.timestamp_ms >= calm_since_ms + settle_ms);
        if !judged {
            return;
        }
        self.max_judged_gap_ms = self.max_judged_gap_ms.max(gap_ms);
        let slack_ms = gap_rule.slack_ms;
        let allowed_ms = eligible_at_ms(&genesis.parameters, parent.header.timestamp_ms, block.header.rank)
            - parent.header.timestamp_ms
            + slack_ms;
        if gap_ms > allowed_ms {
            self.violation(
                at_ms,
                format!("gap of {gap_ms} ms before final block {height} at rank {} exceeds the {allowed_ms} ms the timeout rule allows", block.header.rank),
            );
        }
    }

    /// The latest final block of each honest node.
    pub fn honest_final_heights(&self) -> impl Iterator<Item = &Checkpoint> {
        self.node_final.iter().zip(&self.honest).filter(|(_, honest)| **honest).map(|(checkpoint, _)| checkpoint)
    }

    /// The latest final block of node `index` as the checker last saw it.
    pub fn final_of(&self, index: usize) -> Checkpoint {
        self.node_final[index]
    }

    /// Pairs of honest nodes that finalized different blocks at one height.
    pub fn conflicting_pairs(&self) -> u64 {
        self.conflicting_pairs.len() as u64
    }
}
