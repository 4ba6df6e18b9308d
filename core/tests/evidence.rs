//! Evidence, jail and the production-share cap, end to end in the core:
//!
//! - one concrete piece per evidence rule (`EvidenceError`), asserting the exact variant;
//! - a block that commits evidence jails the offender (last in the ranking), records the
//!   offence once, refuses it a second time, undoes cleanly, and forgets it after the age;
//! - on a running `LocalNet`, two headers a producer signed on one parent become committed
//!   evidence on every node and jail it; a jailed validator still produces when everyone ahead
//!   of it is gone; honest nodes that crash and restart at any point never accuse anyone.

use std::collections::BTreeSet;
use std::sync::Arc;
use tinychain_core::codec;
use tinychain_core::crypto::{merkle_root, SignatureCache};
use tinychain_core::election::{self, Demotion};
use tinychain_core::genesis::{self, Genesis};
use tinychain_core::message::Message;
use tinychain_core::node::{Event, TraceEvent};
use tinychain_core::state::ChainState;
use tinychain_core::testkit::{self, account_key, validator_key, LocalNet};
use tinychain_core::types::{Block, BlockHeader, Checkpoint, Evidence, Hash, Height, MetricReport, Signature, Vote};
use tinychain_core::validate::{
    self, block_hash, check_evidence, check_evidence_for_block, evidence_id, report_id, BlockContext, BlockError,
    EvidenceError, ValidBlock,
};

const VALIDATORS: usize = 4;

fn genesis() -> Genesis {
    testkit::fast_genesis(VALIDATORS, 2)
}

/// A header by validator `producer` at `height` on `prev`, signed.
fn header(chain_id: &str, producer: usize, height: Height, prev: Hash, timestamp_ms: u64) -> BlockHeader {
    let key = validator_key(producer);
    let mut header = BlockHeader {
        chain_id: chain_id.to_string(),
        height,
        prev_hash: prev,
        timestamp_ms,
        producer: key.address(),
        rank: 0,
        tx_root: merkle_root(&[]),
        report_root: merkle_root(&[]),
        evidence_root: merkle_root(&[]),
        state_root: Hash([3; 32]),
        signature: Signature::default(),
    };
    header.signature = key.sign(&codec::header_signing_bytes(&header));
    header
}

fn checkpoint(height: Height, byte: u8) -> Checkpoint {
    Checkpoint { height, hash: Hash([byte; 32]) }
}

/// A report by `validator` whose vote links `source` to `target` (its tip), signed.
fn vote_report(
    chain_id: &str,
    validator: usize,
    sequence: u64,
    source: Checkpoint,
    target: Checkpoint,
) -> MetricReport {
    let key = validator_key(validator);
    let mut report = MetricReport {
        node: key.address(),
        sequence,
        tip: target,
        cpu: 10,
        net: 10,
        score: 10,
        vote: Some(Vote { source, target }),
        signature: Signature::default(),
    };
    report.signature = key.sign(&codec::report_signing_bytes(chain_id, &report));
    report
}

fn resign_report(chain_id: &str, report: &mut MetricReport, signer: usize) {
    report.signature = validator_key(signer).sign(&codec::report_signing_bytes(chain_id, report));
}

/// Two headers by `producer` on one parent at `height`, in canonical order.
fn double_production(chain_id: &str, producer: usize, height: Height) -> Evidence {
    let a = header(chain_id, producer, height, Hash([9; 32]), 1_000);
    let b = header(chain_id, producer, height, Hash([9; 32]), 1_001);
    let (first, second) = if block_hash(&a) < block_hash(&b) { (a, b) } else { (b, a) };
    Evidence::DoubleProduction { first, second }
}

/// Two votes by `validator` with target height `target_height`, different targets.
fn double_vote(chain_id: &str, validator: usize, target_height: Height) -> Evidence {
    let a = vote_report(chain_id, validator, 5, checkpoint(0, 0), checkpoint(target_height, 1));
    let b = vote_report(chain_id, validator, 6, checkpoint(0, 0), checkpoint(target_height, 2));
    let (first, second) = if report_id(&a) < report_id(&b) { (a, b) } else { (b, a) };
    Evidence::DoubleVote { first, second }
}

/// A vote 1 -> 6 that surrounds the same validator's vote 2 -> 3.
fn surround_vote(chain_id: &str, validator: usize) -> Evidence {
    let outer = vote_report(chain_id, validator, 9, checkpoint(1, 1), checkpoint(6, 6));
    let inner = vote_report(chain_id, validator, 4, checkpoint(2, 2), checkpoint(3, 3));
    Evidence::SurroundVote { outer, inner }
}

fn swap(evidence: Evidence) -> Evidence {
    match evidence {
        Evidence::DoubleProduction { first, second } => Evidence::DoubleProduction { first: second, second: first },
        Evidence::DoubleVote { first, second } => Evidence::DoubleVote { first: second, second: first },
        Evidence::SurroundVote { outer, inner } => Evidence::SurroundVote { outer: inner, inner: outer },
    }
}

fn at_genesis(genesis: &Genesis) -> ChainState {
    genesis::genesis_block(genesis).1
}

// ---- one case per rule ------------------------------------------------------------------------

struct Case {
    desc: &'static str,
    evidence: fn(&str) -> Evidence,
    block_height: Height,
    /// Record the piece's offence as committed before checking it.
    committed: bool,
    expected: Result<(), EvidenceError>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            desc: "two headers by one producer on one parent",
            evidence: |chain_id| double_production(chain_id, 1, 4),
            block_height: 5,
            committed: false,
            expected: Ok(()),
        },
        Case {
            desc: "two votes with one target height",
            evidence: |chain_id| double_vote(chain_id, 2, 4),
            block_height: 5,
            committed: false,
            expected: Ok(()),
        },
        Case {
            desc: "a surround vote",
            evidence: |chain_id| surround_vote(chain_id, 3),
            block_height: 7,
            committed: false,
            expected: Ok(()),
        },
        Case {
            desc: "headers of another chain",
            evidence: |_| double_production("other-chain", 1, 4),
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::WrongChainId { expected: "tinychain-test".into(), got: "other-chain".into() }),
        },
        Case {
            desc: "headers by a key that is not a validator",
            evidence: |chain_id| {
                let Evidence::DoubleProduction { mut first, mut second } = double_production(chain_id, 1, 4) else {
                    unreachable!()
                };
                for header in [&mut first, &mut second] {
                    header.producer = account_key(0).address();
                    header.signature = account_key(0).sign(&codec::header_signing_bytes(header));
                }
                let (first, second) =
                    if block_hash(&first) < block_hash(&second) { (first, second) } else { (second, first) };
                Evidence::DoubleProduction { first, second }
            },
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::UnknownValidator { node: account_key(0).address() }),
        },
        Case {
            desc: "headers by two different producers",
            evidence: |chain_id| {
                let a = header(chain_id, 1, 4, Hash([9; 32]), 1_000);
                let b = header(chain_id, 2, 4, Hash([9; 32]), 1_000);
                let (first, second) = if block_hash(&a) < block_hash(&b) { (a, b) } else { (b, a) };
                Evidence::DoubleProduction { first, second }
            },
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::DifferentSigners),
        },
        Case {
            desc: "the same header twice",
            evidence: |chain_id| {
                let a = header(chain_id, 1, 4, Hash([9; 32]), 1_000);
                Evidence::DoubleProduction { first: a.clone(), second: a }
            },
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::SameHeader),
        },
        Case {
            desc: "headers on two different parents",
            evidence: |chain_id| {
                let a = header(chain_id, 1, 4, Hash([9; 32]), 1_000);
                let b = header(chain_id, 1, 4, Hash([8; 32]), 1_000);
                let (first, second) = if block_hash(&a) < block_hash(&b) { (a, b) } else { (b, a) };
                Evidence::DoubleProduction { first, second }
            },
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::DifferentParents),
        },
        Case {
            desc: "headers on one parent at two heights",
            evidence: |chain_id| {
                let a = header(chain_id, 1, 4, Hash([9; 32]), 1_000);
                let b = header(chain_id, 1, 3, Hash([9; 32]), 1_000);
                let (first, second) = if block_hash(&a) < block_hash(&b) { (a, b) } else { (b, a) };
                Evidence::DoubleProduction { first, second }
            },
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::DifferentHeights),
        },
        Case {
            desc: "two headers in the wrong order",
            evidence: |chain_id| swap(double_production(chain_id, 1, 4)),
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::NotCanonicalOrder),
        },
        Case {
            desc: "two votes in the wrong order",
            evidence: |chain_id| swap(double_vote(chain_id, 2, 4)),
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::NotCanonicalOrder),
        },
        Case {
            desc: "a report without a vote",
            evidence: |chain_id| {
                let Evidence::DoubleVote { mut first, second } = double_vote(chain_id, 2, 4) else { unreachable!() };
                first.vote = None;
                resign_report(chain_id, &mut first, 2);
                Evidence::DoubleVote { first, second }
            },
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::MissingVote),
        },
        Case {
            desc: "the same vote in two reports",
            evidence: |chain_id| {
                let a = vote_report(chain_id, 2, 5, checkpoint(0, 0), checkpoint(4, 1));
                let b = vote_report(chain_id, 2, 6, checkpoint(0, 0), checkpoint(4, 1));
                let (first, second) = if report_id(&a) < report_id(&b) { (a, b) } else { (b, a) };
                Evidence::DoubleVote { first, second }
            },
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::SameVote),
        },
        Case {
            desc: "votes with different target heights",
            evidence: |chain_id| {
                let a = vote_report(chain_id, 2, 5, checkpoint(0, 0), checkpoint(4, 1));
                let b = vote_report(chain_id, 2, 6, checkpoint(0, 0), checkpoint(3, 1));
                let (first, second) = if report_id(&a) < report_id(&b) { (a, b) } else { (b, a) };
                Evidence::DoubleVote { first, second }
            },
            block_height: 5,
            committed: false,
            // Which vote comes first depends on the report ids: the test checks the two heights.
            expected: Err(EvidenceError::DifferentTargetHeights { first: 4, second: 3 }),
        },
        Case {
            desc: "a vote that does not surround the other",
            evidence: |chain_id| swap(surround_vote(chain_id, 3)),
            block_height: 7,
            committed: false,
            expected: Err(EvidenceError::NotSurrounding),
        },
        Case {
            desc: "a vote report with cpu out of range",
            evidence: |chain_id| {
                let Evidence::SurroundVote { mut outer, inner } = surround_vote(chain_id, 3) else { unreachable!() };
                outer.cpu = 1_001;
                resign_report(chain_id, &mut outer, 3);
                Evidence::SurroundVote { outer, inner }
            },
            block_height: 7,
            committed: false,
            expected: Err(EvidenceError::BadReport {
                error: validate::ReportError::OutOfRange { cpu: 1_001, net: 10 },
            }),
        },
        Case {
            desc: "a vote signed by another validator",
            evidence: |chain_id| {
                let Evidence::SurroundVote { outer, mut inner } = surround_vote(chain_id, 3) else { unreachable!() };
                resign_report(chain_id, &mut inner, 2);
                Evidence::SurroundVote { outer, inner }
            },
            block_height: 7,
            committed: false,
            expected: Err(EvidenceError::BadSignature),
        },
        Case {
            desc: "a header whose signature does not verify",
            evidence: |chain_id| {
                let Evidence::DoubleProduction { first, mut second } = double_production(chain_id, 1, 4) else {
                    unreachable!()
                };
                second.signature.0[0] ^= 1;
                // The order is by hash, and the hash covers the signature: order again.
                let (first, second) =
                    if block_hash(&first) < block_hash(&second) { (first, second) } else { (second, first) };
                Evidence::DoubleProduction { first, second }
            },
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::BadSignature),
        },
        Case {
            desc: "an offence at the block's own height",
            evidence: |chain_id| double_vote(chain_id, 2, 5),
            block_height: 5,
            committed: false,
            expected: Err(EvidenceError::NotBeforeBlock { offence_height: 5, block_height: 5 }),
        },
        Case {
            desc: "an offence older than the evidence age",
            evidence: |chain_id| double_production(chain_id, 1, 4),
            block_height: 4 + 20_000 + 1,
            committed: false,
            expected: Err(EvidenceError::TooOld { offence_height: 4, block_height: 20_005, max_age_blocks: 20_000 }),
        },
        Case {
            desc: "an offence at exactly the evidence age",
            evidence: |chain_id| double_production(chain_id, 1, 4),
            block_height: 4 + 20_000,
            committed: false,
            expected: Ok(()),
        },
        Case {
            desc: "an offence already committed on this chain",
            evidence: |chain_id| double_production(chain_id, 1, 4),
            block_height: 5,
            committed: true,
            expected: Err(EvidenceError::AlreadyCommitted),
        },
    ]
}

fn variant(error: &EvidenceError) -> &'static str {
    match error {
        EvidenceError::WrongChainId { .. } => "WrongChainId",
        EvidenceError::UnknownValidator { .. } => "UnknownValidator",
        EvidenceError::DifferentSigners => "DifferentSigners",
        EvidenceError::SameHeader => "SameHeader",
        EvidenceError::DifferentParents => "DifferentParents",
        EvidenceError::DifferentHeights => "DifferentHeights",
        EvidenceError::NotCanonicalOrder => "NotCanonicalOrder",
        EvidenceError::MissingVote => "MissingVote",
        EvidenceError::SameVote => "SameVote",
        EvidenceError::DifferentTargetHeights { .. } => "DifferentTargetHeights",
        EvidenceError::NotSurrounding => "NotSurrounding",
        EvidenceError::BadReport { .. } => "BadReport",
        EvidenceError::BadSignature => "BadSignature",
        EvidenceError::NotBeforeBlock { .. } => "NotBeforeBlock",
        EvidenceError::TooOld { .. } => "TooOld",
        EvidenceError::AlreadyCommitted => "AlreadyCommitted",
        EvidenceError::DuplicateInBlock => "DuplicateInBlock",
    }
}
const EVIDENCE_VARIANTS: usize = 17;

#[test]
fn every_evidence_rule_refuses_its_case_with_its_own_error() {
    let genesis = genesis();
    let cache = SignatureCache::new(1_000);
    let mut seen = BTreeSet::new();
    for case in cases() {
        let evidence = (case.evidence)(&genesis.chain_id);
        let mut state = at_genesis(&genesis);
        if case.committed {
            let facts = check_evidence(&genesis, &evidence, &cache).expect("the committed piece is valid");
            state.offences.insert(facts.key, facts.height);
        }
        let outcome = check_evidence_for_block(&genesis, &state, case.block_height, &evidence, &cache).map(|_| ());
        match (&outcome, &case.expected) {
            (
                Err(EvidenceError::DifferentTargetHeights { first, second }),
                Err(EvidenceError::DifferentTargetHeights { .. }),
            ) => {
                assert_eq!(BTreeSet::from([*first, *second]), BTreeSet::from([3, 4]), "{}", case.desc);
            }
            _ => assert_eq!(outcome, case.expected, "{}", case.desc),
        }
        if let Err(error) = &outcome {
            seen.insert(variant(error));
        }
    }
    // DuplicateInBlock is a rule about a block's body: see the block test below.
    seen.insert("DuplicateInBlock");
    assert_eq!(seen.len(), EVIDENCE_VARIANTS, "EvidenceError variants with a case: {seen:?}");
}

#[test]
fn each_offence_has_one_key_whatever_the_pair() {
    let genesis = genesis();
    let cache = SignatureCache::new(1_000);
    let chain_id = &genesis.chain_id;
    // A third header on the same parent: a different pair, the same offence.
    let a = header(chain_id, 1, 4, Hash([9; 32]), 1_000);
    let c = header(chain_id, 1, 4, Hash([9; 32]), 1_002);
    let (first, second) = if block_hash(&a) < block_hash(&c) { (a, c) } else { (c, a) };
    let other_pair = Evidence::DoubleProduction { first, second };
    let key = |evidence: &Evidence| check_evidence(&genesis, evidence, &cache).expect("valid").key;
    assert_eq!(key(&double_production(chain_id, 1, 4)), key(&other_pair));
    assert_ne!(key(&double_production(chain_id, 1, 4)), key(&double_production(chain_id, 2, 4)));
    assert_ne!(key(&double_production(chain_id, 1, 4)), key(&double_vote(chain_id, 1, 4)));
}

// ---- a block that commits evidence ----------------------------------------------------------------

struct Chain {
    genesis: Genesis,
    state: ChainState,
    canonical: Vec<Hash>,
    cache: SignatureCache,
}

impl Chain {
    fn new(genesis: Genesis) -> Chain {
        let (_, state) = genesis::genesis_block(&genesis);
        Chain { canonical: vec![state.tip.hash], genesis, state, cache: SignatureCache::new(10_000) }
    }

    fn context<R>(&self, now_ms: u64, run: impl FnOnce(&BlockContext<'_>) -> R) -> R {
        validate::with_canonical_context(&self.genesis, &self.state, &self.canonical, now_ms, &self.cache, 1, run)
    }

    /// Builds the next block at rank 0 with `evidence`.
    fn build(&self, evidence: Vec<Evidence>) -> Result<ValidBlock, BlockError> {
        self.build_with_reports(Vec::new(), evidence)
    }

    fn build_with_reports(
        &self,
        reports: Vec<MetricReport>,
        evidence: Vec<Evidence>,
    ) -> Result<ValidBlock, BlockError> {
        let ranking = election::rank_candidates(&self.genesis, &self.state.validators, &self.state.tip);
        let producer = (0..VALIDATORS)
            .map(validator_key)
            .find(|key| key.address() == ranking[0].node)
            .expect("the producer is a test validator");
        let timestamp_ms = self.state.tip_timestamp_ms + self.genesis.parameters.block_interval_ms;
        self.context(timestamp_ms, |context| {
            validate::build_block(context, &producer, 0, timestamp_ms, Vec::new(), reports, evidence)
        })
    }

    /// A fresh report (no vote) from every validator about the tip; validator v reports a load
    /// of 100 * v, so validator 0 is always the least loaded.
    fn everyone_reports(&self) -> Vec<MetricReport> {
        (0..VALIDATORS)
            .map(|validator| {
                let key = validator_key(validator);
                let load = 100 * validator as u16;
                let mut report = MetricReport {
                    node: key.address(),
                    sequence: self.state.tip.height + 1,
                    tip: self.state.tip,
                    cpu: load,
                    net: load,
                    score: self.genesis.score(load, load),
                    vote: None,
                    signature: Signature::default(),
                };
                report.signature = key.sign(&codec::report_signing_bytes(&self.genesis.chain_id, &report));
                report
            })
            .collect()
    }

    fn validate(&self, block: &Block) -> Result<ValidBlock, BlockError> {
        self.context(block.header.timestamp_ms, |context| validate::validate_block(context, Arc::new(block.clone())))
    }

    fn commit(&mut self, valid: &ValidBlock) -> tinychain_core::state::StateDelta {
        let undo = validate::apply_block(&mut self.state, valid);
        self.canonical.push(valid.hash);
        undo
    }
}

#[test]
fn a_block_with_evidence_jails_the_offender_once_and_undoes_cleanly() {
    let mut chain = Chain::new(genesis());
    let chain_id = chain.genesis.chain_id.clone();
    let offender = validator_key(2).address();
    let evidence = double_production(&chain_id, 2, 0);
    let facts = check_evidence(&chain.genesis, &evidence, &chain.cache).expect("valid evidence");
    let built = chain.build(vec![evidence.clone()]).expect("a block with valid evidence builds");
    assert_eq!(built.block.header.evidence_root, merkle_root(&[evidence_id(&evidence)]));
    let valid = chain.validate(&built.block).expect("and validates");
    assert_eq!(valid.delta, built.delta);
    let before = chain.state.clone();
    let undo = chain.commit(&valid);
    let jail_blocks = chain.genesis.parameters.jail_blocks;
    assert_eq!(chain.state.validators[2].jailed_until, Some(1 + jail_blocks));
    assert_eq!(chain.state.offences.get(&facts.key), Some(&0));
    assert_ne!(chain.state.root(), before.root(), "the state root commits to the offence and the jail");

    // Jailed: last in the ranking, behind validators demoted for other reasons.
    let ranking = election::rank_candidates(&chain.genesis, &chain.state.validators, &chain.state.tip);
    assert_eq!(ranking.last().map(|candidate| candidate.node), Some(offender));
    assert_eq!(
        ranking.last().and_then(|candidate| candidate.demotion),
        Some(Demotion::Jailed { until_height: 1 + jail_blocks })
    );

    // The same offence, by the same pair or another, is not committed twice.
    let again = chain.build(vec![evidence.clone()]).expect_err("already committed");
    assert_eq!(again, BlockError::InvalidEvidence { index: 0, error: EvidenceError::AlreadyCommitted });

    // Undo restores the state exactly.
    chain.state.apply_delta(&undo);
    assert_eq!(chain.state, before);
}

#[test]
fn a_block_may_not_hold_one_offence_twice_or_too_much_evidence() {
    let mut genesis = genesis();
    genesis.parameters.block_evidence_max = 2;
    let chain = Chain::new(genesis);
    let chain_id = chain.genesis.chain_id.clone();
    let evidence = double_production(&chain_id, 2, 0);
    assert_eq!(
        chain.build(vec![evidence.clone(), evidence.clone()]).map(|_| ()),
        Err(BlockError::InvalidEvidence { index: 1, error: EvidenceError::DuplicateInBlock })
    );
    let built = chain.build(vec![evidence.clone()]).expect("one piece builds");
    let mut block = Arc::unwrap_or_clone(built.block);
    block.evidence = vec![evidence.clone(), double_production(&chain_id, 1, 0), double_production(&chain_id, 3, 0)];
    assert_eq!(
        validate::check_block_shape(&chain.genesis, &block, &chain.cache),
        Err(BlockError::TooMuchEvidence { count: 3, max: 2 })
    );
    block.evidence.truncate(2);
    let expected = merkle_root(&block.evidence.iter().map(evidence_id).collect::<Vec<_>>());
    assert_eq!(
        validate::check_block_shape(&chain.genesis, &block, &chain.cache),
        Err(BlockError::EvidenceRootMismatch { expected, got: block.header.evidence_root })
    );
}

#[test]
fn committed_offences_are_forgotten_after_the_evidence_age_but_the_jail_stays() {
    let mut genesis = genesis();
    genesis.parameters.evidence_max_age_blocks = 2;
    let mut chain = Chain::new(genesis);
    let chain_id = chain.genesis.chain_id.clone();
    let built = chain.build(vec![double_production(&chain_id, 2, 0)]).expect("builds");
    chain.commit(&built);
    for height in 2..=3u64 {
        let built = chain.build(Vec::new()).expect("an empty block builds");
        chain.commit(&built);
        let remembered = !chain.state.offences.is_empty();
        assert_eq!(remembered, height <= 2, "height {height}: offence at 0, age 2");
    }
    assert!(chain.state.validators[2].is_jailed_at(4));
}

// ---- the production-share cap -----------------------------------------------------------------------

#[test]
fn a_validator_at_its_cap_goes_to_the_end_until_its_blocks_leave_the_window() {
    let mut genesis = genesis();
    genesis.parameters.production_window_blocks = 8;
    genesis.parameters.production_cap_fair_shares = 2;
    assert_eq!(genesis.production_cap_blocks(), Some(4), "2 * 8 / 4 validators");
    let least_loaded = validator_key(0).address();
    let share_of_least_loaded = |genesis: Genesis| {
        let mut chain = Chain::new(genesis);
        let mut producers = Vec::new();
        for _ in 0..40 {
            let built = chain.build_with_reports(chain.everyone_reports(), Vec::new()).expect("builds");
            producers.push(built.block.header.producer);
            chain.commit(&built);
        }
        // From block 2 on every validator is active (block 1 records the first reports).
        let windows: Vec<usize> = producers[1..]
            .windows(8)
            .map(|window| window.iter().filter(|producer| **producer == least_loaded).count())
            .collect();
        (producers[1..].iter().filter(|producer| **producer == least_loaded).count(), windows)
    };
    let (capped_total, capped_windows) = share_of_least_loaded(genesis.clone());
    assert!(capped_windows.iter().all(|count| *count <= 4), "at most its cap in any 8 blocks: {capped_windows:?}");
    assert!(capped_total >= 39 * 4 / 8 - 1, "it still makes about its cap: {capped_total} of 39");
    let mut off = genesis;
    off.parameters.production_cap_fair_shares = 0;
    assert_eq!(off.production_cap_blocks(), None);
    let (uncapped_total, _) = share_of_least_loaded(off);
    assert_eq!(uncapped_total, 39, "without the cap the least loaded makes every block");
}

// ---- on a running network -------------------------------------------------------------------------

fn jailed(net: &LocalNet, node: usize, validator: usize) -> bool {
    let tip = net.drivers[node].node.tip().height;
    net.drivers[node].node.state().validators[validator].is_jailed_at(tip + 1)
}

/// Validator 3 signs two blocks on node 0's tip; only node 0 sees them.
fn equivocate_to_node_0(net: &mut LocalNet) {
    let chain_id = net.drivers[0].node.genesis().chain_id.clone();
    let tip = net.drivers[0].node.tip();
    for timestamp_ms in [net.now_ms, net.now_ms + 1] {
        let header = header(&chain_id, 3, tip.height + 1, tip.hash, timestamp_ms);
        let block = Block { header, transfers: Vec::new(), reports: Vec::new(), evidence: Vec::new() };
        let from = validator_key(3).address();
        net.deliver(0, Event::MessageReceived { from, message: Message::Block(Arc::new(block)) });
    }
}

#[test]
fn an_equivocating_producer_is_caught_jailed_everywhere_and_ranked_last() {
    let mut net = LocalNet::new(genesis(), 5);
    net.run_until(3_000);
    equivocate_to_node_0(&mut net);
    net.run_until(6_000);
    for node in 0..VALIDATORS {
        assert!(jailed(&net, node, 3), "node {node} has validator 3 jailed");
        let ranking = net.drivers[node].node.next_election();
        assert_eq!(ranking.last().map(|candidate| candidate.validator_index), Some(3));
    }
    let committed: Vec<&TraceEvent> = net
        .traces
        .iter()
        .filter(|(_, node, event)| *node == 0 && matches!(event, TraceEvent::EvidenceCommitted { .. }))
        .map(|(_, _, event)| event)
        .collect();
    assert_eq!(committed.len(), 1, "one offence, one committed record: {committed:?}");
    let offender = validator_key(3).address();
    assert!(
        matches!(committed[0], TraceEvent::EvidenceCommitted { offender: o, kind: "double_production", .. } if *o == offender)
    );
    assert!(net
        .traces
        .iter()
        .any(|(_, _, event)| matches!(event, TraceEvent::Jailed { validator, .. } if *validator == offender)));
    // Finality goes on with the jailed validator still voting.
    let final_before = net.drivers[0].node.finalized().height;
    net.run_until(10_000);
    assert!(net.drivers[0].node.finalized().height >= final_before + 10);
}

#[test]
fn a_jailed_validator_still_produces_when_everyone_ahead_of_it_is_gone() {
    let mut net = LocalNet::new(genesis(), 5);
    net.run_until(3_000);
    equivocate_to_node_0(&mut net);
    net.run_until(6_000);
    assert!(jailed(&net, 3, 3), "validator 3 knows it is jailed");
    for node in 0..3 {
        net.crash(node);
    }
    let tip_before = net.drivers[3].node.tip().height;
    net.run_until(30_000);
    let jailed_id = validator_key(3).address();
    let own: Vec<(Height, u32)> = net
        .traces
        .iter()
        .filter_map(|(_, node, event)| match event {
            TraceEvent::BlockCommitted { height, producer, rank, .. }
                if *node == 3 && *height > tip_before && *producer == jailed_id =>
            {
                Some((*height, *rank))
            }
            _ => None,
        })
        .collect();
    assert!(own.len() >= 5, "the jailed validator alone keeps the chain growing: {own:?}");
    assert!(own.iter().all(|(_, rank)| *rank == 3), "at its rank, last: {own:?}");
    assert!(jailed(&net, 3, 3), "and it is still jailed");
}

#[test]
fn honest_nodes_that_crash_and_restart_at_any_point_never_accuse_anyone() {
    let mut net = LocalNet::new(genesis(), 5);
    let mut at_ms = 1_000;
    // Crash each node in turn at staggered moments (inside production, voting, sync), restart
    // it a little later, for 60 virtual seconds.
    for round in 0..24u64 {
        let node = (round % VALIDATORS as u64) as usize;
        at_ms += 700 + round * 37 % 400;
        net.run_until(at_ms);
        net.crash(node);
        at_ms += 150 + round * 53 % 300;
        net.run_until(at_ms);
        net.restart(node);
    }
    net.run_until(at_ms + 10_000);
    for (index, node) in net.nodes().enumerate() {
        assert!(node.evidence_offenders().is_empty(), "node {index} holds evidence against an honest validator");
        assert!(node.state().offences.is_empty());
    }
    assert!(!net.traces.iter().any(|(_, _, event)| matches!(event, TraceEvent::EvidenceSeen { .. })));
    assert!(net.drivers[0].node.finalized().height > 50, "the network made progress meanwhile");
}

/// A validator crashed after every possible prefix of its actions (storage done, messages not
/// yet sent, or half sent), restarted from what it stored each time: every header and vote it
/// ever sent, fed to a fresh watch, forms no evidence. One validator, so it produces and votes
/// on every block and each crash lands inside production or voting.
#[test]
fn a_validator_crashed_after_any_prefix_of_its_actions_never_signs_conflicting_objects() {
    use tinychain_core::evidence::EvidenceWatch;
    use tinychain_core::node::Action;
    use tinychain_core::testkit::{validator_node, ModelStorage};

    let genesis = testkit::fast_genesis(1, 0);
    let cache = Arc::new(SignatureCache::new(10_000));
    let mut storage = ModelStorage::new(&genesis);
    let mut node = validator_node(&genesis, 0, &cache);
    let mut sent: Vec<Message> = Vec::new();
    let mut never_sent: Vec<Message> = Vec::new();
    let mut crashes = 0;
    let mut now_ms = 0;
    let mut restored = false;
    for step in 0..2_000u64 {
        now_ms += 25;
        let actions = if restored {
            restored = false;
            node.step(now_ms, Event::Restored(Box::new(storage.restored())))
        } else {
            node.step(now_ms, Event::Tick)
        };
        // Every seventh step crashes after a prefix of the actions (cycling through lengths).
        let crash_after = (step % 7 == 3).then(|| (step / 7) as usize % (actions.len() + 1));
        for (index, action) in actions.into_iter().enumerate() {
            if crash_after.is_some_and(|crash_after| index >= crash_after) {
                // Signed in memory, never stored or sent: lost with the crash.
                if let Action::Broadcast { message: message @ Message::Block(_), .. } = action {
                    never_sent.push(message);
                }
                continue;
            }
            if storage.carry_out(&action) {
                continue;
            }
            if let Action::Broadcast { message, .. } | Action::SendTo { message, .. } = action {
                sent.push(message);
            }
        }
        if crash_after.is_some() {
            crashes += 1;
            node = validator_node(&genesis, 0, &cache);
            restored = true;
        }
    }
    let mut watch = EvidenceWatch::default();
    let mut headers = 0;
    let mut votes = 0;
    for message in &sent {
        match message {
            Message::Block(block) => {
                headers += 1;
                assert_eq!(watch.observe_header(&block.header), None, "two blocks on one parent");
            }
            Message::Report(report) => {
                votes += usize::from(report.vote.is_some());
                assert_eq!(watch.observe_report(report), Vec::new(), "conflicting votes");
            }
            _ => {}
        }
    }
    assert!(crashes > 200 && headers > 300 && votes > 300, "crashes {crashes}, headers {headers}, votes {votes}");
    // The crashes did land between signing a block and storing it: counting the blocks that
    // never left, the validator did sign two on one parent. Storing before sending is what
    // keeps that from being evidence.
    let conflicts = never_sent
        .iter()
        .filter_map(|message| match message {
            Message::Block(block) => watch.observe_header(&block.header),
            _ => None,
        })
        .count();
    assert!(conflicts > 0, "no crash fell between signing and storing a block");
}

/// A peer that keeps advertising a tip it never serves, and answers sync with made-up blocks,
/// holds production back once per connection (one producer timeout), not for ever.
#[test]
fn a_peer_advertising_tips_it_never_serves_cannot_stall_production() {
    let mut net = LocalNet::new(genesis(), 5);
    net.run_until(2_000);
    // Validator 3 goes quiet towards the others and, every 200 ms, tells node 0 it has a tip far
    // ahead (a new fake one each time) that it will never serve.
    net.crash(3);
    let liar = validator_key(3).address();
    let start_height = net.drivers[0].node.tip().height;
    let mut at_ms = 2_000;
    net.deliver(0, Event::PeerConnected { peer: liar });
    for round in 0..150u8 {
        at_ms += 200;
        net.run_until(at_ms);
        let tip = Checkpoint { height: start_height + 1_000, hash: Hash([round; 32]) };
        let status = Message::Status { tip, finalized: net.drivers[0].node.finalized() };
        net.deliver(0, Event::MessageReceived { from: liar, message: status.clone() });
        for _ in 0..3 {
            net.deliver(0, Event::MessageReceived { from: liar, message: status.clone() });
        }
        // And "answers" sync with made-up blocks whose parents do not exist: signed, well
        // formed, but they never join the tree, so they do not count as progress.
        let chain_id = net.drivers[0].node.genesis().chain_id.clone();
        let fake = header(&chain_id, 3, start_height + 500, Hash([round; 32]), at_ms);
        let block = Block { header: fake, transfers: Vec::new(), reports: Vec::new(), evidence: Vec::new() };
        net.deliver(0, Event::MessageReceived { from: liar, message: Message::Blocks(vec![Arc::new(block)]) });
    }
    let produced_by_0 = net
        .traces
        .iter()
        .filter(|(at, node, event)| *at > 2_000 && *node == 0 && matches!(event, TraceEvent::BlockProduced { .. }))
        .count();
    let height = net.drivers[0].node.tip().height;
    assert!(height >= start_height + 100, "the chain kept growing: {start_height} -> {height}");
    assert!(produced_by_0 >= 10, "node 0 still produced its share: {produced_by_0} blocks");
}
