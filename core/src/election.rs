//! Producer election, computed from the chain so every node agrees: rank the validators by the
//! score of their latest recorded report, ties broken by Blake3(tag, prev_hash, node id); a
//! validator with no fresh report, that missed its turn and has not reported a tip at or after
//! that block since, or that produced its cap of the production window, goes after the active
//! ones, ordered by the same tie-break hash; a jailed validator (committed evidence) goes after
//! those, ordered the same way. Integer arithmetic only.

use crate::crypto::hash_bytes;
use crate::genesis::{Genesis, Parameters};
use crate::state::ValidatorRecord;
use crate::types::{Checkpoint, Hash, Height, NodeId};
use serde::{Deserialize, Serialize};

const ELECTION_TAG: &str = "tinychain/election/v1";

pub fn tie_break(prev_hash: &Hash, node: &NodeId) -> Hash {
    // `encode(&(ELECTION_TAG, prev_hash, node))`, built directly (a test pins it): every
    // election hashes one per validator.
    let mut bytes = [0u8; 8 + ELECTION_TAG.len() + 32 + 32];
    bytes[..8].copy_from_slice(&(ELECTION_TAG.len() as u64).to_le_bytes());
    bytes[8..8 + ELECTION_TAG.len()].copy_from_slice(ELECTION_TAG.as_bytes());
    bytes[8 + ELECTION_TAG.len()..8 + ELECTION_TAG.len() + 32].copy_from_slice(&prev_hash.0);
    bytes[8 + ELECTION_TAG.len() + 32..].copy_from_slice(&node.0);
    hash_bytes(&bytes)
}

/// Why a validator sits at the end of the ranking.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Demotion {
    /// No report of it is recorded on this chain (as at genesis).
    NoReport,
    /// Its latest recorded report names a tip more than `report_ttl_blocks` below the parent.
    StaleReport { tip_height: Height },
    /// It missed its turn at this block and has reported no tip at or after it since.
    MissedTurn { at_height: Height },
    /// It produced `produced` of the last `production_window_blocks` blocks: its cap.
    OverProductionCap { produced: u64, cap: u64 },
    /// Committed evidence jails it up to and including this height (it ranks after every
    /// other demoted validator).
    Jailed { until_height: Height },
}

/// One line of an election: who, with which committed score, and why demoted if so.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Candidate {
    pub rank: u32,
    pub validator_index: u32,
    pub node: NodeId,
    pub score: Option<u16>,
    pub demotion: Option<Demotion>,
    pub tie_break: Hash,
    /// Blocks it produced among the last `production_window_blocks` (up to the parent).
    pub produced_in_window: u64,
}

/// Blocks of the production window ending at `parent_height` that the record's validator made.
pub fn produced_in_window(parameters: &Parameters, record: &ValidatorRecord, parent_height: Height) -> u64 {
    let oldest = (parent_height + 1).saturating_sub(parameters.production_window_blocks);
    record.recent_blocks.iter().filter(|height| **height >= oldest && **height <= parent_height).count() as u64
}

/// Why the validator goes to the end of the ranking for the block after `parent_height`, if it
/// does. Jail comes first, then the missing, missed or stale report, then the cap.
pub fn demotion(genesis: &Genesis, record: &ValidatorRecord, parent_height: Height) -> Option<Demotion> {
    let parameters = &genesis.parameters;
    if let (true, Some(until_height)) = (record.is_jailed_at(parent_height + 1), record.jailed_until) {
        return Some(Demotion::Jailed { until_height });
    }
    let Some(report) = &record.latest_report else {
        return Some(Demotion::NoReport);
    };
    if let Some(at_height) = record.missed_turn_at {
        return Some(Demotion::MissedTurn { at_height });
    }
    if report.tip.height.saturating_add(parameters.report_ttl_blocks) < parent_height {
        return Some(Demotion::StaleReport { tip_height: report.tip.height });
    }
    if let Some(cap) = genesis.production_cap_blocks() {
        let produced = produced_in_window(parameters, record, parent_height);
        if produced >= cap {
            return Some(Demotion::OverProductionCap { produced, cap });
        }
    }
    None
}

/// The full ranking for the block after `parent`: rank 0 first.
pub fn rank_candidates(genesis: &Genesis, records: &[ValidatorRecord], parent: &Checkpoint) -> Vec<Candidate> {
    assert_eq!(records.len(), genesis.validators.len(), "one record per genesis validator");
    let mut candidates: Vec<Candidate> = genesis
        .validators
        .iter()
        .zip(records)
        .enumerate()
        .map(|(index, (validator, record))| Candidate {
            rank: 0,
            validator_index: u32::try_from(index).expect("validator count is bounded by VALIDATORS_MAX"),
            node: validator.id,
            score: record.latest_report.map(|report| report.score),
            demotion: demotion(genesis, record, parent.height),
            tie_break: tie_break(&parent.hash, &validator.id),
            produced_in_window: produced_in_window(&genesis.parameters, record, parent.height),
        })
        .collect();
    // Active validators first by (score, tie-break); demoted ones after, by tie-break alone;
    // jailed ones last, by tie-break alone.
    candidates.sort_by_key(|candidate| match candidate.demotion {
        None => (0u8, candidate.score.unwrap_or(u16::MAX), candidate.tie_break),
        Some(Demotion::Jailed { .. }) => (2u8, 0, candidate.tie_break),
        Some(_) => (1u8, 0, candidate.tie_break),
    });
    for (rank, candidate) in candidates.iter_mut().enumerate() {
        candidate.rank = u32::try_from(rank).expect("validator count is bounded by VALIDATORS_MAX");
    }
    candidates
}

/// The producer at `rank` for the block after `parent`, if the rank exists.
pub fn producer_at_rank(
    genesis: &Genesis,
    records: &[ValidatorRecord],
    parent: &Checkpoint,
    rank: u32,
) -> Option<NodeId> {
    rank_candidates(genesis, records, parent).get(rank as usize).map(|candidate| candidate.node)
}

/// The earliest time a block at `rank` may carry: rank 0 at parent + block_interval, rank r >= 1
/// at parent + r * producer_timeout.
pub fn eligible_at_ms(parameters: &Parameters, parent_timestamp_ms: u64, rank: u32) -> u64 {
    let delay_ms = if rank == 0 {
        parameters.block_interval_ms
    } else {
        u64::from(rank).saturating_mul(parameters.producer_timeout_ms)
    };
    parent_timestamp_ms.saturating_add(delay_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::genesis::ValidatorEntry;
    use crate::state::RecordedReport;
    use crate::types::Address;

    #[test]
    fn tie_break_hashes_the_documented_encoding() {
        let (prev_hash, node) = (Hash([9; 32]), Address([4; 32]));
        assert_eq!(tie_break(&prev_hash, &node), hash_bytes(&codec::encode(&(ELECTION_TAG, &prev_hash, &node))));
    }

    fn genesis(count: u8) -> Genesis {
        Genesis {
            chain_id: "t".into(),
            genesis_time_ms: 0,
            validators: (0..count)
                .map(|n| ValidatorEntry { id: Address([n + 1; 32]), name: format!("n{n}"), addr: String::new() })
                .collect(),
            allocations: vec![],
            parameters: Parameters::default(),
        }
    }

    fn reported(score: u16, tip_height: Height) -> ValidatorRecord {
        ValidatorRecord {
            latest_report: Some(RecordedReport {
                sequence: 1,
                tip: Checkpoint { height: tip_height, hash: Hash::default() },
                cpu: score,
                net: score,
                score,
            }),
            missed_turn_at: None,
            blocks_produced: 0,
            jailed_until: None,
            recent_blocks: Vec::new(),
        }
    }

    fn parent(height: Height, byte: u8) -> Checkpoint {
        Checkpoint { height, hash: Hash([byte; 32]) }
    }

    #[test]
    fn lowest_score_ranks_first_and_demoted_go_last() {
        let genesis = genesis(4);
        let records = vec![
            reported(500, 10),
            reported(100, 10),
            ValidatorRecord { missed_turn_at: Some(9), ..reported(1, 10) },
            ValidatorRecord::default(),
        ];
        let ranking = rank_candidates(&genesis, &records, &parent(10, 1));
        let order: Vec<u32> = ranking.iter().map(|candidate| candidate.validator_index).collect();
        assert_eq!(&order[..2], &[1, 0]);
        assert!(ranking[2].demotion.is_some());
        assert!(ranking[3].demotion.is_some());
        assert_eq!(
            ranking.iter().find(|c| c.validator_index == 2).expect("present").demotion,
            Some(Demotion::MissedTurn { at_height: 9 })
        );
        assert_eq!(ranking.iter().find(|c| c.validator_index == 3).unwrap().demotion, Some(Demotion::NoReport));
    }

    #[test]
    fn a_report_older_than_the_ttl_demotes() {
        let genesis = genesis(2);
        let records = vec![reported(1, 10), reported(900, 30)];
        // Parent at 31: validator 0's tip (10) is 21 below, more than the TTL of 20.
        let ranking = rank_candidates(&genesis, &records, &parent(31, 1));
        assert_eq!(ranking[0].validator_index, 1);
        assert_eq!(ranking[1].demotion, Some(Demotion::StaleReport { tip_height: 10 }));
        // At parent 30 it is exactly 20 below: still active, and the better score wins.
        assert_eq!(rank_candidates(&genesis, &records, &parent(30, 1))[0].validator_index, 0);
    }

    #[test]
    fn equal_scores_and_genesis_order_rotate_with_the_parent_hash() {
        let genesis = genesis(4);
        let records = vec![ValidatorRecord::default(); 4];
        let first_ranked: std::collections::BTreeSet<u32> =
            (0..32u8).map(|byte| rank_candidates(&genesis, &records, &parent(0, byte))[0].validator_index).collect();
        assert!(first_ranked.len() >= 3, "rank 0 should rotate among validators: {first_ranked:?}");
    }

    #[test]
    fn every_node_computes_the_same_ranking() {
        let genesis = genesis(7);
        let records: Vec<ValidatorRecord> = (0..7).map(|n| reported((n * 37 % 5) as u16, 3)).collect();
        let reference = rank_candidates(&genesis, &records, &parent(4, 9));
        for _ in 0..10 {
            assert_eq!(rank_candidates(&genesis, &records.clone(), &parent(4, 9)), reference);
        }
        let producers: std::collections::BTreeSet<_> = reference.iter().map(|c| c.node).collect();
        assert_eq!(producers.len(), 7, "a ranking is a permutation");
    }

    #[test]
    fn jailed_validators_rank_after_every_other_demoted_one_and_capped_ones_with_the_demoted() {
        let genesis = genesis(4);
        let cap = genesis.production_cap_blocks().expect("on by default");
        let records = vec![
            ValidatorRecord { jailed_until: Some(150), ..reported(0, 100) },
            ValidatorRecord::default(),
            ValidatorRecord { recent_blocks: (101 - cap..=100).collect(), ..reported(1, 100) },
            reported(900, 100),
        ];
        let ranking = rank_candidates(&genesis, &records, &parent(100, 1));
        assert_eq!(ranking[0].validator_index, 3, "the only active validator leads despite its load");
        assert_eq!(ranking[3].validator_index, 0, "the jailed one is last despite the best score");
        assert_eq!(ranking[3].demotion, Some(Demotion::Jailed { until_height: 150 }));
        let capped = ranking.iter().find(|candidate| candidate.validator_index == 2).expect("present");
        assert_eq!(capped.demotion, Some(Demotion::OverProductionCap { produced: cap, cap }));
        assert_eq!(capped.produced_in_window, cap);
        // The jail ends after its last height; the window slides past old blocks.
        let later = rank_candidates(&genesis, &records, &parent(150, 1));
        assert!(!matches!(
            later.iter().find(|c| c.validator_index == 0).expect("present").demotion,
            Some(Demotion::Jailed { .. })
        ));
        let window = genesis.parameters.production_window_blocks;
        let slid = rank_candidates(&genesis, &records, &parent(100 + window - cap + 1, 1));
        assert_eq!(slid.iter().find(|c| c.validator_index == 2).expect("present").produced_in_window, cap - 1);
    }

    #[test]
    fn eligibility_times_follow_the_rank() {
        let parameters = Parameters::default();
        assert_eq!(eligible_at_ms(&parameters, 1_000, 0), 3_000);
        assert_eq!(eligible_at_ms(&parameters, 1_000, 1), 11_000);
        assert_eq!(eligible_at_ms(&parameters, 1_000, 3), 31_000);
        assert_eq!(eligible_at_ms(&parameters, u64::MAX - 1, 3), u64::MAX);
    }
}
