//! Evidence of dishonest validators, as a node gathers it: the watch that notices offences in
//! the signed objects the node sees (two headers by one producer on one parent, two votes of
//! one validator with one target height, a vote that surrounds another), and the pool of
//! verified evidence a producer puts in its blocks.
//!
//! Both are plain bounded maps. The watch is fed only objects whose signatures were checked,
//! so what it builds always passes `validate::check_evidence`; the node checks it anyway before
//! pooling (an assertion in spirit, and the same path evidence from peers takes).

use crate::genesis::Genesis;
use crate::limits::{EVIDENCE_HEADERS_WATCHED_MAX, EVIDENCE_POOL_MAX, EVIDENCE_VOTES_WATCHED_PER_VALIDATOR_MAX};
use crate::state::ChainState;
use crate::types::{BlockHeader, Evidence, Hash, Height, MetricReport, NodeId};
use crate::validate::{block_hash, report_id, EvidenceFacts};
use std::collections::{BTreeMap, BTreeSet};

/// The first header seen per (height, producer, parent) and the first vote seen per
/// (validator, target height), for the heights a node still watches.
#[derive(Debug, Default)]
pub struct EvidenceWatch {
    headers: BTreeMap<(Height, NodeId, Hash), BlockHeader>,
    votes: BTreeMap<NodeId, WatchedVotes>,
}

/// One validator's watched votes by target height. Every node observes every report several
/// times (gossip, then each block that records it), so a report must not cost a walk over the
/// whole window: `source_height_max` bounds the source heights ever watched, and while a new
/// vote's source is at or above it (as an honest validator's always is) no earlier vote with a
/// lower target can be surrounded by it, so only the votes with a higher target are looked at.
#[derive(Debug, Default)]
struct WatchedVotes {
    by_target_height: BTreeMap<Height, MetricReport>,
    /// At least the source height of every vote in `by_target_height` (never lowered when a
    /// vote is forgotten: an upper bound is all the skip needs).
    source_height_max: Height,
}

impl EvidenceWatch {
    /// A header whose signature was checked. Returns evidence if its producer signed a
    /// different header on the same parent before.
    pub fn observe_header(&mut self, header: &BlockHeader) -> Option<Evidence> {
        let key = (header.height, header.producer, header.prev_hash);
        match self.headers.get(&key) {
            Some(earlier) if block_hash(earlier) != block_hash(header) => {
                let (first, second) = if block_hash(earlier) < block_hash(header) {
                    (earlier.clone(), header.clone())
                } else {
                    (header.clone(), earlier.clone())
                };
                Some(Evidence::DoubleProduction { first, second })
            }
            Some(_) => None,
            None => {
                self.headers.insert(key, header.clone());
                while self.headers.len() > EVIDENCE_HEADERS_WATCHED_MAX {
                    self.headers.pop_first();
                }
                None
            }
        }
    }

    /// A report whose signature and fields were checked. Returns evidence for every earlier vote
    /// of the same validator this one conflicts with: the vote with the same target height
    /// first, then the votes it surrounds or is surrounded by, in the order of their target
    /// heights (at most the watched votes of one validator,
    /// `EVIDENCE_VOTES_WATCHED_PER_VALIDATOR_MAX`). Every provable offence is kept:
    /// `EvidencePool::select_for_block` takes one piece per offender first, so a validator
    /// that floods the pool with offences is still jailed by the next block.
    pub fn observe_report(&mut self, report: &MetricReport) -> Vec<Evidence> {
        let Some(vote) = report.vote else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let watched = self.votes.entry(report.node).or_default();
        if let Some(earlier) = watched.by_target_height.get(&vote.target.height) {
            if earlier.vote == Some(vote) {
                // This very vote is watched (the same report again, from a block or a relay):
                // it was compared with every vote watched before it when it came first, and
                // every later one was compared with it. Nothing new can be found.
                return found;
            }
            let (first, second) = if report_id(earlier) < report_id(report) {
                (earlier.clone(), report.clone())
            } else {
                (report.clone(), earlier.clone())
            };
            found.push(Evidence::DoubleVote { first, second });
        }
        // A vote with a lower target is surrounded by this one only if its source is higher.
        if vote.source.height < watched.source_height_max {
            for earlier in watched.by_target_height.range(..vote.target.height).map(|(_, earlier)| earlier) {
                let earlier_vote = earlier.vote.expect("only reports with votes are watched");
                if vote.source.height < earlier_vote.source.height {
                    found.push(Evidence::SurroundVote { outer: report.clone(), inner: earlier.clone() });
                }
            }
        }
        // A vote with a higher target surrounds this one if its source is lower.
        let above = (std::ops::Bound::Excluded(vote.target.height), std::ops::Bound::Unbounded);
        for earlier in watched.by_target_height.range(above).map(|(_, earlier)| earlier) {
            let earlier_vote = earlier.vote.expect("only reports with votes are watched");
            if earlier_vote.source.height < vote.source.height {
                found.push(Evidence::SurroundVote { outer: earlier.clone(), inner: report.clone() });
            }
        }
        watched.by_target_height.entry(vote.target.height).or_insert_with(|| report.clone());
        watched.source_height_max = watched.source_height_max.max(vote.source.height);
        while watched.by_target_height.len() > EVIDENCE_VOTES_WATCHED_PER_VALIDATOR_MAX {
            watched.by_target_height.pop_first();
        }
        found
    }

    /// Forgets headers below `height` and votes whose target is below it.
    pub fn forget_below(&mut self, height: Height) {
        while self.headers.first_key_value().is_some_and(|((header_height, _, _), _)| *header_height < height) {
            self.headers.pop_first();
        }
        for watched in self.votes.values_mut() {
            while watched.by_target_height.first_key_value().is_some_and(|(target_height, _)| *target_height < height) {
                watched.by_target_height.pop_first();
            }
        }
        self.votes.retain(|_, watched| !watched.by_target_height.is_empty());
    }
}

/// Verified evidence, committed or not, one per offence, until it is too old to commit.
#[derive(Clone, Debug)]
pub struct PooledEvidence {
    pub id: Hash,
    pub evidence: Evidence,
    pub facts: EvidenceFacts,
}

#[derive(Debug, Default)]
pub struct EvidencePool {
    by_key: BTreeMap<Hash, PooledEvidence>,
}

impl EvidencePool {
    pub fn contains_offence(&self, key: &Hash) -> bool {
        self.by_key.contains_key(key)
    }

    /// Keeps verified evidence. Returns false if the offence was already held. Past the bound,
    /// the evidence of the oldest offence goes first.
    pub fn insert(&mut self, pooled: PooledEvidence) -> bool {
        if self.by_key.contains_key(&pooled.facts.key) {
            return false;
        }
        self.by_key.insert(pooled.facts.key, pooled);
        while self.by_key.len() > EVIDENCE_POOL_MAX {
            let oldest =
                self.by_key.iter().min_by_key(|(key, pooled)| (pooled.facts.height, **key)).map(|(key, _)| *key);
            match oldest {
                Some(key) => self.by_key.remove(&key),
                None => break,
            };
        }
        true
    }

    /// Evidence a block at `height` on top of `state` may commit: not committed on this chain,
    /// within the age rule, at most `block_evidence_max`; the oldest offence of each offender
    /// first (so every offender is jailed by the next block), then the rest, oldest first.
    pub fn select_for_block(&self, genesis: &Genesis, state: &ChainState, height: Height) -> Vec<Evidence> {
        let max_age_blocks = genesis.parameters.evidence_max_age_blocks;
        let mut eligible: Vec<&PooledEvidence> = self
            .by_key
            .values()
            .filter(|pooled| {
                !state.offences.contains_key(&pooled.facts.key)
                    && pooled.facts.height < height
                    && pooled.facts.height.saturating_add(max_age_blocks) >= height
            })
            .collect();
        eligible.sort_by_key(|pooled| (pooled.facts.height, pooled.facts.key));
        let mut offenders_first: BTreeSet<NodeId> = BTreeSet::new();
        let (firsts, rest): (Vec<&PooledEvidence>, Vec<&PooledEvidence>) =
            eligible.into_iter().partition(|pooled| offenders_first.insert(pooled.facts.offender));
        firsts
            .into_iter()
            .chain(rest)
            .take(genesis.parameters.block_evidence_max as usize)
            .map(|pooled| pooled.evidence.clone())
            .collect()
    }

    /// Forgets evidence no block above `tip_height` could still commit.
    pub fn forget_too_old(&mut self, tip_height: Height, max_age_blocks: u64) {
        self.by_key.retain(|_, pooled| pooled.facts.height.saturating_add(max_age_blocks) > tip_height);
    }

    pub fn iter(&self) -> impl Iterator<Item = &PooledEvidence> {
        self.by_key.values()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every validator some held evidence accuses.
    pub fn offenders(&self) -> BTreeSet<NodeId> {
        self.by_key.values().map(|pooled| pooled.facts.offender).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SignatureCache;
    use crate::testkit::{fast_genesis, validator_key};
    use crate::types::{Checkpoint, Signature, Vote};
    use crate::validate::check_evidence;

    fn report(validator: usize, sequence: u64, source: Height, target: Height, target_byte: u8) -> MetricReport {
        let genesis = fast_genesis(4, 0);
        let key = validator_key(validator);
        let checkpoint = |height: Height, byte: u8| Checkpoint { height, hash: Hash([byte; 32]) };
        let mut report = MetricReport {
            node: key.address(),
            sequence,
            tip: checkpoint(target, target_byte),
            cpu: 0,
            net: 0,
            score: 0,
            vote: Some(Vote { source: checkpoint(source, 1), target: checkpoint(target, target_byte) }),
            signature: Signature::default(),
        };
        report.signature = key.sign(&crate::codec::report_signing_bytes(&genesis.chain_id, &report));
        report
    }

    fn header(timestamp_ms: u64) -> BlockHeader {
        let key = validator_key(1);
        let mut header = BlockHeader {
            chain_id: fast_genesis(4, 0).chain_id,
            height: 7,
            prev_hash: Hash([7; 32]),
            timestamp_ms,
            producer: key.address(),
            rank: 0,
            tx_root: Hash::default(),
            report_root: Hash::default(),
            evidence_root: Hash::default(),
            state_root: Hash::default(),
            signature: Signature::default(),
        };
        header.signature = key.sign(&crate::codec::header_signing_bytes(&header));
        header
    }

    fn assert_valid(evidence: &Evidence) {
        let cache = SignatureCache::new(100);
        check_evidence(&fast_genesis(4, 0), evidence, &cache).expect("what the watch builds is valid evidence");
    }

    #[test]
    fn an_honest_sequence_of_votes_and_blocks_is_never_evidence() {
        let mut watch = EvidenceWatch::default();
        // Sources never go down, targets always go up, skips included; blocks one per parent.
        let votes = [(0, 1), (0, 2), (1, 3), (3, 4), (3, 6), (6, 7), (7, 8)];
        for (sequence, (source, target)) in votes.into_iter().enumerate() {
            assert!(watch.observe_report(&report(2, sequence as u64, source, target, 9)).is_empty());
            // The same report again (gossip, a block recording it) is not an offence either.
            assert!(watch.observe_report(&report(2, sequence as u64, source, target, 9)).is_empty());
        }
        assert_eq!(watch.observe_header(&header(1)), None);
        assert_eq!(watch.observe_header(&header(1)), None);
    }

    #[test]
    fn the_watch_notices_each_offence_in_either_order() {
        for (earlier, later) in [(1u8, 2u8), (2, 1)] {
            let mut watch = EvidenceWatch::default();
            assert!(watch.observe_report(&report(2, 1, 0, 5, earlier)).is_empty());
            let found = watch.observe_report(&report(2, 2, 0, 5, later));
            assert!(matches!(found.as_slice(), [Evidence::DoubleVote { .. }]), "{found:?}");
            assert_valid(&found[0]);
        }
        for (first, second) in [((2, 3), (1, 6)), ((1, 6), (2, 3))] {
            let mut watch = EvidenceWatch::default();
            assert!(watch.observe_report(&report(3, 1, first.0, first.1, 4)).is_empty());
            let found = watch.observe_report(&report(3, 2, second.0, second.1, 4));
            assert!(matches!(found.as_slice(), [Evidence::SurroundVote { .. }]), "{found:?}");
            assert_valid(&found[0]);
        }
        for (a, b) in [(1, 2), (2, 1)] {
            let mut watch = EvidenceWatch::default();
            assert_eq!(watch.observe_header(&header(a)), None);
            let found = watch.observe_header(&header(b)).expect("a second header on the same parent");
            assert_valid(&found);
        }
    }

    #[test]
    fn a_vote_seen_again_after_others_finds_nothing_new_and_later_votes_are_still_compared_with_it() {
        let mut watch = EvidenceWatch::default();
        // 1 -> 2, then 5 -> 6 (the source maximum rises), then 1 -> 2 again (as a block records
        // it): nothing, though its source is below the maximum. A later 0 -> 3 surrounds 1 -> 2.
        assert!(watch.observe_report(&report(2, 1, 1, 2, 9)).is_empty());
        assert!(watch.observe_report(&report(2, 2, 5, 6, 9)).is_empty());
        assert!(watch.observe_report(&report(2, 1, 1, 2, 9)).is_empty());
        let found = watch.observe_report(&report(2, 3, 0, 3, 9));
        assert!(matches!(found.as_slice(), [Evidence::SurroundVote { .. }]), "{found:?}");
        found.iter().for_each(assert_valid);
    }

    #[test]
    fn one_vote_yields_its_double_vote_first_then_every_surround() {
        let mut watch = EvidenceWatch::default();
        // Twenty short votes 10+i -> 11+i, then one vote 0 -> 20: it surrounds those with
        // i < 9, and the one at 19 -> 20 has its target height.
        for i in 0..20u64 {
            assert!(watch.observe_report(&report(2, i, 10 + i, 11 + i, 9)).is_empty());
        }
        let found = watch.observe_report(&report(2, 100, 0, 20, 7));
        assert_eq!(found.len(), 1 + 9);
        assert!(matches!(found[0], Evidence::DoubleVote { .. }), "the double vote comes first: {found:?}");
        assert!(found[1..].iter().all(|evidence| matches!(evidence, Evidence::SurroundVote { .. })));
        found.iter().for_each(assert_valid);
    }

    #[test]
    fn a_block_takes_one_piece_per_offender_before_a_second_of_anyone() {
        let genesis = fast_genesis(4, 0);
        let cache = SignatureCache::new(100);
        let mut watch = EvidenceWatch::default();
        let mut pool = EvidencePool::default();
        // Validator 2: ten double votes at heights 1..=10; validator 3: one, at height 10.
        let mut add = |evidence: Evidence| {
            let facts = check_evidence(&genesis, &evidence, &cache).expect("valid");
            pool.insert(PooledEvidence { id: crate::validate::evidence_id(&evidence), evidence, facts });
        };
        for height in 1..=10u64 {
            watch.observe_report(&report(2, height, 0, height, 1));
            watch.observe_report(&report(2, 100 + height, 0, height, 2)).into_iter().for_each(&mut add);
        }
        watch.observe_report(&report(3, 1, 0, 10, 1));
        watch.observe_report(&report(3, 2, 0, 10, 2)).into_iter().for_each(&mut add);
        let state = crate::genesis::genesis_block(&genesis).1;
        let chosen = pool.select_for_block(&genesis, &state, 11);
        assert_eq!(chosen.len(), genesis.parameters.block_evidence_max as usize);
        let offenders: Vec<NodeId> = chosen.iter().map(Evidence::offender).collect();
        assert_eq!(&offenders[..2], &[validator_key(2).address(), validator_key(3).address()]);
    }

    #[test]
    fn the_pool_keeps_one_piece_per_offence_and_forgets_old_ones() {
        let genesis = fast_genesis(4, 0);
        let cache = SignatureCache::new(100);
        let mut watch = EvidenceWatch::default();
        watch.observe_header(&header(1));
        let evidence = watch.observe_header(&header(2)).expect("evidence");
        let facts = check_evidence(&genesis, &evidence, &cache).expect("valid");
        let mut pool = EvidencePool::default();
        let pooled = PooledEvidence { id: crate::validate::evidence_id(&evidence), evidence, facts };
        assert!(pool.insert(pooled.clone()));
        assert!(!pool.insert(pooled), "one piece per offence");
        assert_eq!(pool.offenders(), BTreeSet::from([validator_key(1).address()]));
        let state = crate::genesis::genesis_block(&genesis).1;
        assert_eq!(pool.select_for_block(&genesis, &state, 7).len(), 0, "not before the offence's height + 1");
        assert_eq!(pool.select_for_block(&genesis, &state, 8).len(), 1);
        pool.forget_too_old(7 + genesis.parameters.evidence_max_age_blocks, genesis.parameters.evidence_max_age_blocks);
        assert!(pool.is_empty());
    }
}
