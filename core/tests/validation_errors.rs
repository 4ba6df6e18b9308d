//! One concrete invalid input per validation error, asserting the exact variant and its fields.
//!
//! Every case starts from a valid block 1 (built by `validate::build_block` on
//! `testkit::fast_genesis(4, 8)`), changes one thing, and re-signs or recomputes roots where the
//! change would otherwise trip an earlier rule, so the rule under test is the one that fails.
//! The tables are data (`desc, mutation, expected error`) run by one helper each, and
//! `every_error_variant_has_a_case` fails to compile or to pass when a variant has no case.

use std::collections::BTreeSet;
use std::sync::Arc;
use tinychain_core::codec;
use tinychain_core::crypto::{merkle_root, Keypair, SignatureCache};
use tinychain_core::election::{self, Candidate};
use tinychain_core::genesis::{self, Allocation, Genesis};
use tinychain_core::state::ChainState;
use tinychain_core::testkit::{self, account_key, sign_transfer, validator_key};
use tinychain_core::types::{
    Account, Address, Block, BlockHeader, Checkpoint, Evidence, Hash, Height, MetricReport, Signature, Transfer, Vote,
    UNITS_PER_COIN,
};
use tinychain_core::validate::{
    self, block_hash, report_id, transfer_id, BlockContext, BlockError, EvidenceError, ReportError, TxError, ValidBlock,
};

const VALIDATORS: usize = 4;
const ACCOUNTS: usize = 8;
const FUNDING: u64 = 1_000 * UNITS_PER_COIN;
/// A recipient no genesis allocation names: the base block creates its account.
const FRESH: Address = Address([0xab; 32]);

fn standard_genesis() -> Genesis {
    testkit::fast_genesis(VALIDATORS, ACCOUNTS)
}

/// Every key a test signs with: validators first, then funded accounts.
fn key_of(address: &Address) -> Keypair {
    (0..VALIDATORS)
        .map(validator_key)
        .chain((0..ACCOUNTS).map(account_key))
        .find(|key| &key.address() == address)
        .expect("tests only sign with testkit keys")
}

// ---- a chain to validate against ----------------------------------------------------------------

/// The state a block is validated against, the canonical hashes below it, and a signature cache.
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

    fn standard() -> Chain {
        Chain::new(standard_genesis())
    }

    fn genesis_hash(&self) -> Hash {
        self.canonical[0]
    }

    fn chain_id(&self) -> &str {
        &self.genesis.chain_id
    }

    fn with_context<R>(&self, now_ms: u64, run: impl FnOnce(&BlockContext<'_>) -> R) -> R {
        validate::with_canonical_context(&self.genesis, &self.state, &self.canonical, now_ms, &self.cache, 1, run)
    }

    fn ranking(&self) -> Vec<Candidate> {
        election::rank_candidates(&self.genesis, &self.state.validators, &self.state.tip)
    }

    fn node_at_rank(&self, rank: u32) -> Address {
        self.ranking()[rank as usize].node
    }

    fn producer_key(&self, rank: u32) -> Keypair {
        key_of(&self.node_at_rank(rank))
    }

    /// Rank 0 may produce `block_interval_ms` after the parent, rank r `r * producer_timeout_ms`
    /// after it (written out here rather than calling `election::eligible_at_ms`, so the test
    /// is an independent statement of the rule).
    fn earliest_ms(&self, rank: u32) -> u64 {
        let parameters = &self.genesis.parameters;
        let delay_ms =
            if rank == 0 { parameters.block_interval_ms } else { u64::from(rank) * parameters.producer_timeout_ms };
        self.state.tip_timestamp_ms + delay_ms
    }

    fn build(&self, rank: u32, transfers: Vec<Transfer>, reports: Vec<MetricReport>) -> Result<ValidBlock, BlockError> {
        let timestamp_ms = self.earliest_ms(rank);
        let producer = self.producer_key(rank);
        self.with_context(timestamp_ms, |context| {
            validate::build_block(context, &producer, rank, timestamp_ms, transfers, reports, Vec::new())
        })
    }

    fn build_block(&self, rank: u32, transfers: Vec<Transfer>, reports: Vec<MetricReport>) -> Block {
        let valid = self.build(rank, transfers, reports).expect("the test body is valid");
        Arc::unwrap_or_clone(valid.block)
    }

    /// A correctly built and signed block that may break the genesis size limits: assembled
    /// under a copy of the genesis with those limits raised (the state root does not depend on
    /// them), so the limit checks are what a validator trips over.
    fn build_block_beyond_limits(&self, rank: u32, transfers: Vec<Transfer>, reports: Vec<MetricReport>) -> Block {
        let mut relaxed = self.genesis.clone();
        relaxed.parameters.block_transfers_max = u32::MAX;
        relaxed.parameters.block_bytes_max = u32::MAX;
        let timestamp_ms = self.earliest_ms(rank);
        let producer = self.producer_key(rank);
        let valid = validate::with_canonical_context(
            &relaxed,
            &self.state,
            &self.canonical,
            timestamp_ms,
            &self.cache,
            1,
            |context| validate::build_block(context, &producer, rank, timestamp_ms, transfers, reports, Vec::new()),
        )
        .expect("the body is valid but for the size limits");
        Arc::unwrap_or_clone(valid.block)
    }

    /// A block assembled by hand: correct roots, a placeholder state root, signed by the
    /// producer at `rank`. For bodies `build_block` refuses (it runs the same delta computation
    /// as validation), to reach rules checked before the state root.
    fn craft_block(&self, rank: u32, transfers: Vec<Transfer>, reports: Vec<MetricReport>) -> Block {
        let producer = self.producer_key(rank);
        let mut block = Block {
            header: BlockHeader {
                chain_id: self.genesis.chain_id.clone(),
                height: self.state.tip.height + 1,
                prev_hash: self.state.tip.hash,
                timestamp_ms: self.earliest_ms(rank),
                producer: producer.address(),
                rank,
                tx_root: Hash::default(),
                report_root: Hash::default(),
                evidence_root: Hash::default(),
                state_root: Hash([0x5e; 32]),
                signature: Signature::default(),
            },
            transfers,
            reports,
            evidence: Vec::new(),
        };
        recompute_roots(&mut block);
        sign_header(&mut block, &producer);
        block
    }

    fn validate(&self, block: &Block, now_ms: u64) -> Result<ValidBlock, BlockError> {
        self.with_context(now_ms, |context| validate::validate_block(context, Arc::new(block.clone())))
    }

    /// Validates and applies a block, as a node commits it.
    fn commit(&mut self, block: &Block) -> ValidBlock {
        let valid = self.validate(block, block.header.timestamp_ms).expect("the committed block is valid");
        let _undo = validate::apply_block(&mut self.state, &valid);
        self.canonical.push(valid.hash);
        valid
    }

    fn transfer(&self, from: usize, to: Address, amount: u64, fee: u64, nonce: u64) -> Transfer {
        sign_transfer(&account_key(from), self.chain_id(), to, amount, fee, nonce)
    }

    /// A report signed like `Node::send_report` signs one, with the score the genesis weights give.
    fn report(&self, validator: usize, sequence: u64, tip: Checkpoint, cpu: u16, net: u16) -> MetricReport {
        let mut report = MetricReport {
            node: validator_key(validator).address(),
            sequence,
            tip,
            cpu,
            net,
            score: self.genesis.score(cpu, net),
            vote: None,
            signature: Signature::default(),
        };
        sign_report(self.chain_id(), &mut report);
        report
    }

    fn genesis_checkpoint(&self) -> Checkpoint {
        Checkpoint { height: 0, hash: self.genesis_hash() }
    }

    /// The body of the base block: a transfer between funded accounts, one to a fresh address
    /// that spends coins received earlier in the block, and two reports.
    fn base_body(&self) -> (Vec<Transfer>, Vec<MetricReport>) {
        let transfers = vec![
            self.transfer(0, account_key(1).address(), 5 * UNITS_PER_COIN, 1_000, 0),
            self.transfer(1, FRESH, UNITS_PER_COIN, 0, 0),
        ];
        let tip = self.genesis_checkpoint();
        let reports = vec![self.report(0, 1, tip, 100, 300), self.report(1, 1, tip, 700, 0)];
        (transfers, reports)
    }

    /// A valid block 1 at rank 0 with the base body, or an empty hand-made one when this
    /// genesis cannot carry the base body (the caller's mutation replaces it).
    fn base_block(&self) -> Block {
        let (transfers, reports) = self.base_body();
        match self.build(0, transfers.clone(), reports.clone()) {
            Ok(valid) => Arc::unwrap_or_clone(valid.block),
            // A genesis whose limits the base body breaks (the size-limit cases).
            Err(BlockError::TooManyTransfers { .. } | BlockError::TooLarge { .. }) => {
                self.build_block_beyond_limits(0, transfers, reports)
            }
            Err(_) => self.craft_block(0, Vec::new(), Vec::new()),
        }
    }
}

fn sign_header(block: &mut Block, key: &Keypair) {
    block.header.signature = key.sign(&codec::header_signing_bytes(&block.header));
}

/// Re-signs the header with the key of whoever it names as producer.
fn resign(block: &mut Block) {
    let key = key_of(&block.header.producer);
    sign_header(block, &key);
}

fn sign_report(chain_id: &str, report: &mut MetricReport) {
    report.signature = key_of(&report.node).sign(&codec::report_signing_bytes(chain_id, report));
}

fn resign_transfer(transfer: &mut Transfer) {
    transfer.signature = key_of(&transfer.from).sign(&codec::transfer_signing_bytes(transfer));
}

fn tx_root_of(transfers: &[Transfer]) -> Hash {
    merkle_root(&transfers.iter().map(transfer_id).collect::<Vec<_>>())
}

fn report_root_of(reports: &[MetricReport]) -> Hash {
    merkle_root(&reports.iter().map(report_id).collect::<Vec<_>>())
}

fn recompute_roots(block: &mut Block) {
    block.header.tx_root = tx_root_of(&block.transfers);
    block.header.report_root = report_root_of(&block.reports);
    block.header.evidence_root = merkle_root(&block.evidence.iter().map(validate::evidence_id).collect::<Vec<_>>());
}

/// After changing the body: roots follow it and the producer signs again, so only the rule
/// under test can fail.
fn reseal(block: &mut Block) {
    recompute_roots(block);
    resign(block);
}

// ---- the block table runner -------------------------------------------------------------------

/// One row: start from `Chain::new(genesis()).base_block()` validated at its own timestamp, apply
/// `mutate` (which may also move the local clock), expect `expected` (computed from the chain and
/// the mutated block, for fields such as hashes).
struct BlockCase {
    desc: &'static str,
    genesis: fn() -> Genesis,
    mutate: fn(&Chain, &mut Block, &mut u64),
    expected: fn(&Chain, &Block) -> BlockError,
}

fn run_block_case(case: &BlockCase) -> BlockError {
    let chain = Chain::new((case.genesis)());
    let mut block = chain.base_block();
    let mut now_ms = block.header.timestamp_ms;
    (case.mutate)(&chain, &mut block, &mut now_ms);
    let expected = (case.expected)(&chain, &block);
    let state_before = chain.state.clone();
    let root_before = chain.state.root();
    match chain.validate(&block, now_ms) {
        Ok(valid) => panic!("{}: expected {expected:?}, but the block {:?} is valid", case.desc, valid.hash),
        Err(error) => assert_eq!(error, expected, "{}", case.desc),
    }
    assert_eq!(chain.state, state_before, "{}: validation must not mutate the state", case.desc);
    assert_eq!(chain.state.root(), root_before, "{}", case.desc);
    expected
}

fn run_block_cases(cases: &[BlockCase]) {
    for case in cases {
        run_block_case(case);
    }
}

fn no_change(_: &Chain, _: &mut Block, _: &mut u64) {}

// ---- the valid block ------------------------------------------------------------------------------

#[test]
fn the_base_block_is_valid_and_validation_agrees_with_assembly() {
    let chain = Chain::standard();
    let (transfers, reports) = chain.base_body();
    let built = chain.build(0, transfers, reports).expect("the base body is valid");
    let state_before = chain.state.clone();
    let valid = chain.validate(&built.block, built.block.header.timestamp_ms).expect("the base block is valid");
    assert_eq!(valid.hash, built.hash);
    assert_eq!(valid.hash, block_hash(&built.block.header));
    assert_eq!(valid.delta, built.delta, "assembly and validation compute the same delta");
    assert_eq!(chain.state, state_before, "validating a valid block must not mutate the state");
}

#[test]
fn a_block_at_every_rank_is_valid_from_its_earliest_time_and_within_the_clock_drift() {
    let chain = Chain::standard();
    let max_drift_ms = chain.genesis.parameters.max_clock_drift_ms;
    for rank in 0..VALIDATORS as u32 {
        let (transfers, reports) = chain.base_body();
        let block = chain.build_block(rank, transfers, reports);
        assert_eq!(block.header.timestamp_ms, chain.earliest_ms(rank));
        for now_ms in [block.header.timestamp_ms, block.header.timestamp_ms - max_drift_ms] {
            let valid = chain.validate(&block, now_ms);
            assert!(valid.is_ok(), "rank {rank}, now {now_ms}: {:?}", valid.err());
        }
    }
}

#[test]
fn apply_block_then_its_undo_restores_the_exact_state() {
    let mut chain = Chain::standard();
    let genesis_state = chain.state.clone();
    let genesis_root = chain.state.root();

    // Block 1 at rank 2: transfers, a fresh account, reports, and two validators marked as
    // having missed their turn.
    let (transfers, reports) = chain.base_body();
    let block = chain.build_block(2, transfers, reports);
    let valid = chain.validate(&block, block.header.timestamp_ms).expect("valid");
    let mut state = chain.state.clone();
    let undo = validate::apply_block(&mut state, &valid);
    assert_ne!(state, genesis_state);
    assert_eq!(state.root(), block.header.state_root, "the applied state is the one the header commits to");
    assert_eq!(state.tip, Checkpoint { height: 1, hash: valid.hash });
    assert!(state.accounts.contains_key(&FRESH));
    assert_eq!(state.validators.iter().filter(|record| record.missed_turn_at == Some(1)).count(), 2);
    assert_eq!(state.balances_total(), u128::from(state.supply));
    state.apply_delta(&undo);
    assert_eq!(state, genesis_state, "undo restores every field, and removes the account the block created");
    assert_eq!(state.root(), genesis_root);

    // Two blocks deep, undone in reverse order.
    let first = chain.commit(&block);
    let state_after_first = chain.state.clone();
    let tip = chain.state.tip;
    let second_body = vec![chain.transfer(2, FRESH, 3 * UNITS_PER_COIN, 7, 0)];
    let second_reports = vec![chain.report(3, 1, tip, 10, 10)];
    let second = chain.build_block(0, second_body, second_reports);
    let second_valid = chain.validate(&second, second.header.timestamp_ms).expect("valid");
    let mut state = chain.state.clone();
    let second_undo = validate::apply_block(&mut state, &second_valid);
    assert_eq!(state.root(), second.header.state_root);
    state.apply_delta(&second_undo);
    assert_eq!(state, state_after_first);
    let mut genesis_again = state.clone();
    let first_undo = genesis_state.undo_for(&first.delta);
    genesis_again.apply_delta(&first_undo);
    assert_eq!(genesis_again, genesis_state);
    assert_eq!(genesis_again.root(), genesis_root);
}

// ---- TxError: a transfer alone, then against its sender's account --------------------------------

/// One row: the base transfer (account 0 pays account 1 5 TC with a fee of 1,000 units, nonce 0)
/// after `mutate`, checked alone and then against `sender`.
struct TransferCase {
    desc: &'static str,
    mutate: fn(&mut Transfer),
    sender: Account,
    expected: Result<u64, TxError>,
}

fn check_transfer(
    chain_id: &str,
    transfer: &Transfer,
    sender: &Account,
    cache: &SignatureCache,
) -> Result<u64, TxError> {
    validate::check_transfer_alone(chain_id, transfer, cache)?;
    validate::check_transfer_against(sender, transfer)
}

fn transfer_cases() -> Vec<TransferCase> {
    let funded = Account { balance: FUNDING, nonce: 0 };
    let needed = 5 * UNITS_PER_COIN + 1_000;
    vec![
        TransferCase { desc: "the base transfer is valid", mutate: |_| {}, sender: funded, expected: Ok(needed) },
        TransferCase {
            desc: "a zero fee is valid",
            mutate: |transfer| {
                transfer.fee = 0;
                resign_transfer(transfer);
            },
            sender: funded,
            expected: Ok(5 * UNITS_PER_COIN),
        },
        TransferCase {
            desc: "sending to oneself is valid",
            mutate: |transfer| {
                transfer.to = transfer.from;
                resign_transfer(transfer);
            },
            sender: funded,
            expected: Ok(needed),
        },
        TransferCase {
            desc: "amount + fee equal to the whole balance is valid",
            mutate: |_| {},
            sender: Account { balance: needed, nonce: 0 },
            expected: Ok(needed),
        },
        TransferCase {
            desc: "signed for another chain",
            mutate: |transfer| {
                transfer.chain_id = "other-chain".into();
                resign_transfer(transfer);
            },
            sender: funded,
            expected: Err(TxError::WrongChainId { expected: "tinychain-test".into(), got: "other-chain".into() }),
        },
        TransferCase {
            desc: "zero amount, correctly signed",
            mutate: |transfer| {
                transfer.amount = 0;
                resign_transfer(transfer);
            },
            sender: funded,
            expected: Err(TxError::ZeroAmount),
        },
        TransferCase {
            desc: "amount changed after signing",
            mutate: |transfer| transfer.amount += 1,
            sender: funded,
            expected: Err(TxError::BadSignature),
        },
        TransferCase {
            desc: "signed by another key than the sender's",
            mutate: |transfer| {
                transfer.signature = account_key(2).sign(&codec::transfer_signing_bytes(transfer));
            },
            sender: funded,
            expected: Err(TxError::BadSignature),
        },
        TransferCase {
            desc: "sender replaced after signing",
            mutate: |transfer| transfer.from = account_key(3).address(),
            sender: funded,
            expected: Err(TxError::BadSignature),
        },
        TransferCase {
            desc: "all-zero signature",
            mutate: |transfer| transfer.signature = Signature::default(),
            sender: funded,
            expected: Err(TxError::BadSignature),
        },
        TransferCase {
            desc: "nonce already used",
            mutate: |_| {},
            sender: Account { balance: FUNDING, nonce: 3 },
            expected: Err(TxError::WrongNonce { expected: 3, got: 0 }),
        },
        TransferCase {
            desc: "nonce leaves a gap",
            mutate: |transfer| {
                transfer.nonce = 4;
                resign_transfer(transfer);
            },
            sender: Account { balance: FUNDING, nonce: 3 },
            expected: Err(TxError::WrongNonce { expected: 3, got: 4 }),
        },
        TransferCase {
            desc: "one base unit short",
            mutate: |_| {},
            sender: Account { balance: needed - 1, nonce: 0 },
            expected: Err(TxError::InsufficientBalance { balance: needed - 1, needed }),
        },
        TransferCase {
            desc: "an empty account",
            mutate: |_| {},
            sender: Account::default(),
            expected: Err(TxError::InsufficientBalance { balance: 0, needed }),
        },
        TransferCase {
            desc: "amount + fee overflows a u64",
            mutate: |transfer| {
                transfer.amount = u64::MAX;
                transfer.fee = 1;
                resign_transfer(transfer);
            },
            sender: Account { balance: u64::MAX, nonce: 0 },
            expected: Err(TxError::AmountOverflow),
        },
    ]
}

#[test]
fn transfer_errors_table() {
    let genesis = standard_genesis();
    let cache = SignatureCache::new(10_000);
    for case in transfer_cases() {
        let mut transfer =
            sign_transfer(&account_key(0), &genesis.chain_id, account_key(1).address(), 5 * UNITS_PER_COIN, 1_000, 0);
        (case.mutate)(&mut transfer);
        assert_eq!(check_transfer(&genesis.chain_id, &transfer, &case.sender, &cache), case.expected, "{}", case.desc);
    }
}

/// `RecipientBalanceOverflow` is only reachable inside a block: see
/// `block_invalid_transfer_errors` ("the recipient's balance overflows").
#[test]
fn transfer_error_recipient_balance_overflow_is_reported_inside_a_block() {
    let expected = run_block_case(&recipient_overflow_case());
    assert_eq!(expected, BlockError::InvalidTransfer { index: 0, error: TxError::RecipientBalanceOverflow });
}

// ---- ReportError: a report alone --------------------------------------------------------------------

/// One row: validator 1's report (sequence 1, tip = genesis, cpu 200, net 600, no vote) after
/// `mutate`, checked alone.
struct ReportCase {
    desc: &'static str,
    mutate: fn(&Chain, &mut MetricReport),
    expected: fn(&MetricReport) -> Result<u32, ReportError>,
}

fn some_tip(height: Height) -> Checkpoint {
    Checkpoint { height, hash: Hash([height as u8 + 1; 32]) }
}

fn report_cases() -> Vec<ReportCase> {
    vec![
        ReportCase { desc: "the base report is valid", mutate: |_, _| {}, expected: |_| Ok(1) },
        ReportCase {
            desc: "a report with a well-formed vote is valid",
            mutate: |chain, report| {
                report.tip = some_tip(5);
                report.vote = Some(Vote { source: some_tip(3), target: some_tip(5) });
                sign_report(chain.chain_id(), report);
            },
            expected: |_| Ok(1),
        },
        ReportCase {
            desc: "the extremes of the ranges are valid",
            mutate: |chain, report| {
                report.cpu = 1000;
                report.net = 0;
                report.score = chain.genesis.score(1000, 0);
                sign_report(chain.chain_id(), report);
            },
            expected: |_| Ok(1),
        },
        ReportCase {
            desc: "from a key that is not a genesis validator",
            mutate: |chain, report| {
                report.node = account_key(0).address();
                sign_report(chain.chain_id(), report);
            },
            expected: |report| Err(ReportError::UnknownValidator { node: report.node }),
        },
        ReportCase {
            desc: "cpu above 1000 per mille",
            mutate: |chain, report| {
                report.cpu = 1001;
                sign_report(chain.chain_id(), report);
            },
            expected: |report| Err(ReportError::OutOfRange { cpu: 1001, net: report.net }),
        },
        ReportCase {
            desc: "net at u16::MAX",
            mutate: |chain, report| {
                report.net = u16::MAX;
                sign_report(chain.chain_id(), report);
            },
            expected: |report| Err(ReportError::OutOfRange { cpu: report.cpu, net: u16::MAX }),
        },
        ReportCase {
            desc: "score one above what cpu, net and the weights give",
            mutate: |chain, report| {
                report.score += 1;
                sign_report(chain.chain_id(), report);
            },
            expected: |report| Err(ReportError::WrongScore { expected: report.score - 1, got: report.score }),
        },
        ReportCase {
            desc: "score of zero with a busy node",
            mutate: |chain, report| {
                report.score = 0;
                sign_report(chain.chain_id(), report);
            },
            expected: |_| Err(ReportError::WrongScore { expected: 400, got: 0 }),
        },
        ReportCase {
            desc: "vote target is not the report's tip",
            mutate: |chain, report| {
                report.tip = some_tip(5);
                report.vote = Some(Vote { source: some_tip(3), target: some_tip(4) });
                sign_report(chain.chain_id(), report);
            },
            expected: |_| Err(ReportError::MalformedVote),
        },
        ReportCase {
            desc: "vote source is not below its target",
            mutate: |chain, report| {
                report.tip = some_tip(5);
                report.vote = Some(Vote { source: some_tip(5), target: some_tip(5) });
                sign_report(chain.chain_id(), report);
            },
            expected: |_| Err(ReportError::MalformedVote),
        },
        ReportCase {
            desc: "cpu changed after signing (score kept consistent)",
            mutate: |chain, report| {
                report.cpu = 600;
                report.score = chain.genesis.score(600, report.net);
            },
            expected: |_| Err(ReportError::BadSignature),
        },
        ReportCase {
            desc: "signed for another chain",
            mutate: |_, report| sign_report("other-chain", report),
            expected: |_| Err(ReportError::BadSignature),
        },
        ReportCase {
            desc: "signed by another validator",
            mutate: |chain, report| {
                report.signature = validator_key(2).sign(&codec::report_signing_bytes(chain.chain_id(), report));
            },
            expected: |_| Err(ReportError::BadSignature),
        },
    ]
}

#[test]
fn report_errors_table() {
    let chain = Chain::standard();
    for case in report_cases() {
        let mut report = chain.report(1, 1, chain.genesis_checkpoint(), 200, 600);
        (case.mutate)(&chain, &mut report);
        let expected = (case.expected)(&report);
        assert_eq!(validate::check_report_alone(&chain.genesis, &report, &chain.cache), expected, "{}", case.desc);
    }
}

/// `StaleSequence` and `TipNotBelowBlock` need chain context: they are only found by
/// `validate_block`, as `InvalidReport` (see `block_invalid_report_errors`).
#[test]
fn report_errors_that_need_a_chain_are_reported_inside_a_block() {
    let expected = run_block_case(&BlockCase {
        desc: "second report of a validator in one block with the same sequence",
        genesis: standard_genesis,
        mutate: |chain, block, _| {
            block.reports[1] = chain.report(0, 1, chain.genesis_checkpoint(), 999, 999);
            reseal(block);
        },
        expected: |_, _| invalid_report(1, ReportError::StaleSequence { recorded: 1, got: 1 }),
    });
    assert_eq!(expected, invalid_report(1, ReportError::StaleSequence { recorded: 1, got: 1 }));
    // Alone, the same reports are fine: staleness and the tip rule are relative to a chain.
    let chain = Chain::standard();
    let report = chain.report(0, 1, chain.genesis_checkpoint(), 999, 999);
    assert_eq!(validate::check_report_alone(&chain.genesis, &report, &chain.cache), Ok(0));
    let tip_at_block = chain.report(0, 1, Checkpoint { height: 1, hash: Hash([1; 32]) }, 1, 1);
    assert_eq!(validate::check_report_alone(&chain.genesis, &tip_at_block, &chain.cache), Ok(0));
}

#[test]
fn a_report_at_or_below_the_recorded_sequence_in_a_later_block_is_stale() {
    let mut chain = Chain::standard();
    let block = chain.base_block();
    chain.commit(&block);
    let tip = chain.state.tip;
    for (sequence, recorded) in [(1, 1), (0, 1)] {
        let stale = chain.report(0, sequence, tip, 10, 10);
        let mut block = chain.build_block(0, Vec::new(), Vec::new());
        block.reports.push(stale);
        reseal(&mut block);
        let state_before = chain.state.clone();
        let error = chain.validate(&block, block.header.timestamp_ms).err();
        assert_eq!(
            error,
            Some(BlockError::InvalidReport { index: 0, error: ReportError::StaleSequence { recorded, got: sequence } }),
            "sequence {sequence}"
        );
        assert_eq!(chain.state, state_before);
    }
    // The next sequence is recorded.
    let fresh = chain.report(0, 2, tip, 10, 10);
    let block = chain.build_block(0, Vec::new(), vec![fresh]);
    assert!(chain.validate(&block, block.header.timestamp_ms).is_ok());
}

// ---- BlockError tables ----------------------------------------------------------------------------

fn wrong_chain_id_cases() -> Vec<BlockCase> {
    vec![BlockCase {
        desc: "header names another chain",
        genesis: standard_genesis,
        mutate: |_, block, _| {
            block.header.chain_id = "other-chain".into();
            resign(block);
        },
        expected: |_, _| BlockError::WrongChainId { expected: "tinychain-test".into(), got: "other-chain".into() },
    }]
}

fn wrong_height_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "height 2 on genesis",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.header.height = 2;
                resign(block);
            },
            expected: |_, _| BlockError::WrongHeight { expected: 1, got: 2 },
        },
        BlockCase {
            desc: "a second genesis",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.header.height = 0;
                resign(block);
            },
            expected: |_, _| BlockError::WrongHeight { expected: 1, got: 0 },
        },
    ]
}

fn wrong_parent_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "parent is an unknown hash",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.header.prev_hash = Hash([7; 32]);
                resign(block);
            },
            expected: |chain, _| BlockError::WrongParent { expected: chain.genesis_hash(), got: Hash([7; 32]) },
        },
        BlockCase {
            desc: "parent is the genesis spec hash, not the genesis block hash",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.header.prev_hash = chain.genesis.spec_hash();
                resign(block);
            },
            expected: |chain, _| BlockError::WrongParent {
                expected: chain.genesis_hash(),
                got: chain.genesis.spec_hash(),
            },
        },
    ]
}

fn unknown_producer_cases() -> Vec<BlockCase> {
    vec![BlockCase {
        desc: "produced and signed by a funded account that is not a validator",
        genesis: standard_genesis,
        mutate: |_, block, _| {
            block.header.producer = account_key(0).address();
            resign(block);
        },
        expected: |_, _| BlockError::UnknownProducer { producer: account_key(0).address() },
    }]
}

fn rank_out_of_range_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "rank equal to the validator count",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.header.rank = VALIDATORS as u32;
                resign(block);
            },
            expected: |_, _| BlockError::RankOutOfRange { rank: VALIDATORS as u32, validators: VALIDATORS },
        },
        BlockCase {
            desc: "rank u32::MAX",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.header.rank = u32::MAX;
                resign(block);
            },
            expected: |_, _| BlockError::RankOutOfRange { rank: u32::MAX, validators: VALIDATORS },
        },
    ]
}

fn wrong_producer_for_rank_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "the rank-1 validator claims rank 0",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                let (transfers, reports) = chain.base_body();
                *block = chain.build_block(1, transfers, reports);
                block.header.rank = 0;
                resign(block);
            },
            expected: |chain, _| BlockError::WrongProducerForRank {
                rank: 0,
                expected: chain.node_at_rank(0),
                got: chain.node_at_rank(1),
            },
        },
        BlockCase {
            desc: "the rank-0 validator claims rank 2",
            genesis: standard_genesis,
            mutate: |chain, block, now_ms| {
                block.header.rank = 2;
                block.header.timestamp_ms = chain.earliest_ms(2);
                *now_ms = block.header.timestamp_ms;
                resign(block);
            },
            expected: |chain, _| BlockError::WrongProducerForRank {
                rank: 2,
                expected: chain.node_at_rank(2),
                got: chain.node_at_rank(0),
            },
        },
    ]
}

fn too_early_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "rank 0 one millisecond before the block interval",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.header.timestamp_ms -= 1;
                resign(block);
            },
            expected: |_, _| BlockError::TooEarly { rank: 0, earliest_ms: 100, timestamp_ms: 99 },
        },
        BlockCase {
            desc: "rank 1 at rank 0's time, before the producer timeout",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                let (transfers, reports) = chain.base_body();
                *block = chain.build_block(1, transfers, reports);
                block.header.timestamp_ms = chain.earliest_ms(0);
                resign(block);
            },
            expected: |_, _| BlockError::TooEarly { rank: 1, earliest_ms: 500, timestamp_ms: 100 },
        },
        BlockCase {
            desc: "rank 3 one millisecond before three timeouts",
            genesis: standard_genesis,
            mutate: |chain, block, now_ms| {
                let (transfers, reports) = chain.base_body();
                *block = chain.build_block(3, transfers, reports);
                block.header.timestamp_ms -= 1;
                *now_ms = block.header.timestamp_ms;
                resign(block);
            },
            expected: |_, _| BlockError::TooEarly { rank: 3, earliest_ms: 1_500, timestamp_ms: 1_499 },
        },
    ]
}

fn timestamp_in_future_cases() -> Vec<BlockCase> {
    vec![BlockCase {
        desc: "the local clock is one millisecond more than the drift behind the timestamp",
        genesis: standard_genesis,
        mutate: |chain, block, now_ms| {
            *now_ms = block.header.timestamp_ms - chain.genesis.parameters.max_clock_drift_ms - 1;
        },
        expected: |_, block| BlockError::TimestampInFuture {
            timestamp_ms: block.header.timestamp_ms,
            now_ms: block.header.timestamp_ms - 51,
            max_drift_ms: 50,
        },
    }]
}

fn bad_producer_signature_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "one signature byte flipped",
            genesis: standard_genesis,
            mutate: |_, block, _| block.header.signature.0[10] ^= 1,
            expected: |_, _| BlockError::BadProducerSignature,
        },
        BlockCase {
            desc: "signed by another validator",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                let other = chain.producer_key(1);
                sign_header(block, &other);
            },
            expected: |_, _| BlockError::BadProducerSignature,
        },
        BlockCase {
            desc: "state root changed without signing again",
            genesis: standard_genesis,
            mutate: |_, block, _| block.header.state_root = Hash([9; 32]),
            expected: |_, _| BlockError::BadProducerSignature,
        },
        BlockCase {
            desc: "timestamp changed without signing again",
            genesis: standard_genesis,
            mutate: |_, block, now_ms| {
                block.header.timestamp_ms += 1;
                *now_ms += 1;
            },
            expected: |_, _| BlockError::BadProducerSignature,
        },
    ]
}

fn one_transfer_per_block_genesis() -> Genesis {
    let mut genesis = standard_genesis();
    genesis.parameters.block_transfers_max = 1;
    genesis
}

fn too_many_transfers_cases() -> Vec<BlockCase> {
    vec![BlockCase {
        desc: "two transfers where the genesis allows one",
        genesis: one_transfer_per_block_genesis,
        mutate: no_change,
        expected: |_, _| BlockError::TooManyTransfers { count: 2, max: 1 },
    }]
}

fn smallest_block_bytes_genesis() -> Genesis {
    let mut genesis = standard_genesis();
    // The smallest limit `Genesis::validate` accepts.
    genesis.parameters.block_bytes_max = 64 * 1024;
    genesis
}

fn too_large_cases() -> Vec<BlockCase> {
    vec![BlockCase {
        desc: "400 transfers (168 bytes each) in a 64 KiB block",
        genesis: smallest_block_bytes_genesis,
        mutate: |chain, block, _| {
            let transfers = (0..400).map(|nonce| chain.transfer(0, account_key(1).address(), 1, 0, nonce)).collect();
            *block = chain.build_block_beyond_limits(0, transfers, Vec::new());
        },
        expected: |_, block| {
            let bytes = codec::encode(block).len();
            assert!(bytes > 64 * 1024, "the case must exceed the limit: {bytes}");
            BlockError::TooLarge { bytes, max: 64 * 1024 }
        },
    }]
}

fn duplicate_transfer_cases() -> Vec<BlockCase> {
    vec![BlockCase {
        desc: "the first transfer repeated at the end",
        genesis: standard_genesis,
        mutate: |_, block, _| {
            let first = block.transfers[0].clone();
            block.transfers.push(first);
            reseal(block);
        },
        expected: |_, block| BlockError::DuplicateTransfer { id: transfer_id(&block.transfers[0]) },
    }]
}

fn too_many_reports_from_validator_cases() -> Vec<BlockCase> {
    vec![BlockCase {
        desc: "five reports of validator 2 where the limit is four",
        genesis: standard_genesis,
        mutate: |chain, block, _| {
            let tip = chain.genesis_checkpoint();
            block.reports.extend((1..=5).map(|sequence| chain.report(2, sequence, tip, 1, 1)));
            reseal(block);
        },
        expected: |_, _| BlockError::TooManyReportsFromValidator { node: validator_key(2).address(), count: 5, max: 4 },
    }]
}

fn tx_root_mismatch_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "a transfer replaced by another validly signed one, tx_root kept",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.transfers[1] = chain.transfer(1, FRESH, 2 * UNITS_PER_COIN, 0, 0);
                resign(block);
            },
            expected: |chain, block| BlockError::TxRootMismatch {
                expected: tx_root_of(&block.transfers),
                got: tx_root_of(&chain.base_body().0),
            },
        },
        BlockCase {
            desc: "transfers swapped, tx_root kept",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.transfers.swap(0, 1);
                resign(block);
            },
            expected: |chain, block| BlockError::TxRootMismatch {
                expected: tx_root_of(&block.transfers),
                got: tx_root_of(&chain.base_body().0),
            },
        },
        BlockCase {
            desc: "a transfer dropped, tx_root kept",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.transfers.pop();
                resign(block);
            },
            expected: |chain, block| BlockError::TxRootMismatch {
                expected: tx_root_of(&block.transfers),
                got: tx_root_of(&chain.base_body().0),
            },
        },
    ]
}

fn report_root_mismatch_cases() -> Vec<BlockCase> {
    vec![BlockCase {
        desc: "a report replaced by another validly signed one, report_root kept",
        genesis: standard_genesis,
        mutate: |chain, block, _| {
            block.reports[1] = chain.report(1, 1, chain.genesis_checkpoint(), 800, 0);
            resign(block);
        },
        expected: |chain, block| BlockError::ReportRootMismatch {
            expected: report_root_of(&block.reports),
            got: report_root_of(&chain.base_body().1),
        },
    }]
}

fn state_root_mismatch_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "state root replaced and signed",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.header.state_root = Hash([9; 32]);
                resign(block);
            },
            expected: |chain, _| BlockError::StateRootMismatch {
                expected: chain.base_block().header.state_root,
                got: Hash([9; 32]),
            },
        },
        BlockCase {
            desc: "a transfer amount changed, roots and signatures redone, state root kept",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.transfers[1] = chain.transfer(1, FRESH, 2 * UNITS_PER_COIN, 0, 0);
                reseal(block);
            },
            expected: |chain, block| {
                let honest = chain.build_block(0, block.transfers.clone(), block.reports.clone());
                BlockError::StateRootMismatch {
                    expected: honest.header.state_root,
                    got: chain.base_block().header.state_root,
                }
            },
        },
        BlockCase {
            desc: "a rank-1 block carrying the rank-0 block's state root (other producer paid, no missed turn)",
            genesis: standard_genesis,
            mutate: |chain, block, now_ms| {
                let (transfers, reports) = chain.base_body();
                let rank_zero_state_root = block.header.state_root;
                *block = chain.build_block(1, transfers, reports);
                block.header.state_root = rank_zero_state_root;
                *now_ms = block.header.timestamp_ms;
                resign(block);
            },
            expected: |chain, block| {
                let (transfers, reports) = chain.base_body();
                BlockError::StateRootMismatch {
                    expected: chain.build_block(1, transfers, reports).header.state_root,
                    got: block.header.state_root,
                }
            },
        },
    ]
}

fn invalid_transfer(index: usize, error: TxError) -> BlockError {
    BlockError::InvalidTransfer { index, error }
}

/// A genesis whose whole supply but one block reward sits in account 0, so one block can pay
/// the producer almost everything.
fn nearly_full_supply_genesis() -> Genesis {
    let mut genesis = standard_genesis();
    let reward = genesis.parameters.block_reward;
    genesis.allocations = vec![Allocation { address: account_key(0).address(), amount: u64::MAX - reward }];
    genesis
}

/// The only way to overflow a recipient: fees are credited to the producer before the
/// transfers run (DESIGN.md: "pay the producer 10 TC + fees, apply transfers in order"), so
/// while account 0 pays its whole balance to the producer, the producer already holds the
/// reward and the fee of the producer's own later transfer. Every balance after the whole
/// block would fit (the producer ends at u64::MAX - 1).
fn recipient_overflow_case() -> BlockCase {
    BlockCase {
        desc: "the recipient's balance overflows (the producer, with fees credited first)",
        genesis: nearly_full_supply_genesis,
        mutate: |chain, block, _| {
            let producer = chain.producer_key(0);
            let reward = chain.genesis.parameters.block_reward;
            let transfers = vec![
                chain.transfer(0, producer.address(), u64::MAX - reward, 0, 0),
                sign_transfer(&producer, chain.chain_id(), account_key(1).address(), 1, 1, 0),
            ];
            *block = chain.craft_block(0, transfers, Vec::new());
        },
        expected: |_, _| invalid_transfer(0, TxError::RecipientBalanceOverflow),
    }
}

fn block_invalid_transfer_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "transfer 1 for another chain",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.transfers[1] = sign_transfer(&account_key(1), "other-chain", FRESH, UNITS_PER_COIN, 0, 0);
                reseal(block);
            },
            expected: |_, _| {
                invalid_transfer(
                    1,
                    TxError::WrongChainId { expected: "tinychain-test".into(), got: "other-chain".into() },
                )
            },
        },
        BlockCase {
            desc: "transfer 1 of zero amount",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.transfers[1] = chain.transfer(1, FRESH, 0, 0, 0);
                reseal(block);
            },
            expected: |_, _| invalid_transfer(1, TxError::ZeroAmount),
        },
        BlockCase {
            desc: "transfer 1's amount changed after signing",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.transfers[1].amount += 1;
                reseal(block);
            },
            expected: |_, _| invalid_transfer(1, TxError::BadSignature),
        },
        BlockCase {
            desc: "field checks run before signature checks: bad signature at 0, zero amount at 1",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.transfers[0].signature.0[0] ^= 1;
                block.transfers[1] = chain.transfer(1, FRESH, 0, 0, 0);
                reseal(block);
            },
            expected: |_, _| invalid_transfer(1, TxError::ZeroAmount),
        },
        BlockCase {
            desc: "transfer 1's nonce leaves a gap",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.transfers[1] = chain.transfer(1, FRESH, UNITS_PER_COIN, 0, 1);
                reseal(block);
            },
            expected: |_, _| invalid_transfer(1, TxError::WrongNonce { expected: 0, got: 1 }),
        },
        BlockCase {
            desc: "transfer 1 reuses the nonce transfer 0 of the same sender used",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.transfers[1] = chain.transfer(0, FRESH, UNITS_PER_COIN, 0, 0);
                reseal(block);
            },
            expected: |_, _| invalid_transfer(1, TxError::WrongNonce { expected: 1, got: 0 }),
        },
        BlockCase {
            desc: "transfer 1 overdraws, counting the 5 TC transfer 0 paid it",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.transfers[1] = chain.transfer(1, FRESH, FUNDING + 5 * UNITS_PER_COIN + 1, 0, 0);
                reseal(block);
            },
            expected: |_, _| {
                invalid_transfer(
                    1,
                    TxError::InsufficientBalance {
                        balance: FUNDING + 5 * UNITS_PER_COIN,
                        needed: FUNDING + 5 * UNITS_PER_COIN + 1,
                    },
                )
            },
        },
        BlockCase {
            desc: "transfer 1 spends what transfer 0 of the same sender already spent",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.transfers[0] = chain.transfer(0, FRESH, 999 * UNITS_PER_COIN, 1_000, 0);
                block.transfers[1] = chain.transfer(0, FRESH, UNITS_PER_COIN, 0, 1);
                reseal(block);
            },
            expected: |_, _| {
                invalid_transfer(
                    1,
                    TxError::InsufficientBalance { balance: UNITS_PER_COIN - 1_000, needed: UNITS_PER_COIN },
                )
            },
        },
        BlockCase {
            desc: "transfer 1's amount + fee overflows",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.transfers[1] = chain.transfer(1, FRESH, u64::MAX, 1, 0);
                reseal(block);
            },
            expected: |_, _| invalid_transfer(1, TxError::AmountOverflow),
        },
        recipient_overflow_case(),
    ]
}

fn invalid_report(index: usize, error: ReportError) -> BlockError {
    BlockError::InvalidReport { index, error }
}

fn block_invalid_report_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "report 1 from a key that is not a validator",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                let mut report = chain.report(1, 1, chain.genesis_checkpoint(), 1, 1);
                report.node = account_key(0).address();
                sign_report(chain.chain_id(), &mut report);
                block.reports[1] = report;
                reseal(block);
            },
            expected: |_, _| invalid_report(1, ReportError::UnknownValidator { node: account_key(0).address() }),
        },
        BlockCase {
            desc: "report 1's cpu above 1000",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                let mut report = chain.report(1, 1, chain.genesis_checkpoint(), 1, 1);
                report.cpu = 1001;
                sign_report(chain.chain_id(), &mut report);
                block.reports[1] = report;
                reseal(block);
            },
            expected: |_, _| invalid_report(1, ReportError::OutOfRange { cpu: 1001, net: 1 }),
        },
        BlockCase {
            desc: "report 1's score does not follow from its cpu and net",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                let mut report = chain.report(1, 1, chain.genesis_checkpoint(), 100, 300);
                report.score = 100;
                sign_report(chain.chain_id(), &mut report);
                block.reports[1] = report;
                reseal(block);
            },
            expected: |_, _| invalid_report(1, ReportError::WrongScore { expected: 200, got: 100 }),
        },
        BlockCase {
            desc: "report 1 from validator 0 repeats the sequence of report 0",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.reports[1] = chain.report(0, 1, chain.genesis_checkpoint(), 5, 5);
                reseal(block);
            },
            expected: |_, _| invalid_report(1, ReportError::StaleSequence { recorded: 1, got: 1 }),
        },
        BlockCase {
            desc: "report 1 from validator 0 goes back below the sequence of report 0",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                let tip = chain.genesis_checkpoint();
                block.reports[0] = chain.report(0, 7, tip, 5, 5);
                block.reports[1] = chain.report(0, 6, tip, 5, 5);
                reseal(block);
            },
            expected: |_, _| invalid_report(1, ReportError::StaleSequence { recorded: 7, got: 6 }),
        },
        BlockCase {
            desc: "report 1 names the block's own height as its tip",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.reports[1] = chain.report(1, 1, Checkpoint { height: 1, hash: Hash([1; 32]) }, 5, 5);
                reseal(block);
            },
            expected: |_, _| invalid_report(1, ReportError::TipNotBelowBlock { tip_height: 1, block_height: 1 }),
        },
        BlockCase {
            desc: "report 1's vote targets another block than its tip",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                let mut report = chain.report(1, 1, chain.genesis_checkpoint(), 5, 5);
                report.vote = Some(Vote { source: chain.genesis_checkpoint(), target: some_tip(3) });
                sign_report(chain.chain_id(), &mut report);
                block.reports[1] = report;
                reseal(block);
            },
            expected: |_, _| invalid_report(1, ReportError::MalformedVote),
        },
        BlockCase {
            desc: "report 1's cpu changed after signing",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                block.reports[1].cpu = 100;
                block.reports[1].score = chain.genesis.score(100, block.reports[1].net);
                reseal(block);
            },
            expected: |_, _| invalid_report(1, ReportError::BadSignature),
        },
        BlockCase {
            desc: "transfer signatures are checked before report signatures",
            genesis: standard_genesis,
            mutate: |_, block, _| {
                block.reports[0].signature.0[0] ^= 1;
                block.transfers[1].signature.0[0] ^= 1;
                reseal(block);
            },
            expected: |_, _| invalid_transfer(1, TxError::BadSignature),
        },
    ]
}

/// A genesis whose allocations leave less than one block reward below u64::MAX.
/// `Genesis::validate` accepts it, yet no block can ever be produced on it.
fn full_supply_genesis() -> Genesis {
    let mut genesis = standard_genesis();
    let reward = genesis.parameters.block_reward;
    genesis.allocations = vec![Allocation { address: account_key(0).address(), amount: u64::MAX - reward + 1 }];
    genesis
}

fn reward_overflow_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "the block reward would take the supply past u64::MAX",
            genesis: full_supply_genesis,
            mutate: |chain, block, _| *block = chain.craft_block(0, Vec::new(), Vec::new()),
            expected: |_, _| BlockError::RewardOverflow,
        },
        BlockCase {
            desc: "the fees of the block sum past u64::MAX",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                let fee = u64::MAX / 2 + 1;
                block.transfers[0] = chain.transfer(0, FRESH, 1, fee, 0);
                block.transfers[1] = chain.transfer(1, FRESH, 1, fee, 0);
                reseal(block);
            },
            expected: |_, _| BlockError::RewardOverflow,
        },
    ]
}

/// Two headers validator `producer` signed on one parent at height 0: an offence a block at
/// height 1 may commit.
fn double_production_at_genesis_height(chain: &Chain, producer: usize) -> Evidence {
    let key = validator_key(producer);
    let headers: Vec<BlockHeader> = [1_000u64, 1_001]
        .into_iter()
        .map(|timestamp_ms| {
            let mut header = BlockHeader {
                chain_id: chain.genesis.chain_id.clone(),
                height: 0,
                prev_hash: Hash([9; 32]),
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
        })
        .collect();
    let (a, b) = (headers[0].clone(), headers[1].clone());
    let (first, second) = if block_hash(&a) < block_hash(&b) { (a, b) } else { (b, a) };
    Evidence::DoubleProduction { first, second }
}

fn evidence_root_of(evidence: &[Evidence]) -> Hash {
    merkle_root(&evidence.iter().map(validate::evidence_id).collect::<Vec<_>>())
}

fn too_much_evidence_cases() -> Vec<BlockCase> {
    vec![BlockCase {
        desc: "two pieces of evidence where the genesis allows one",
        genesis: || Genesis {
            parameters: genesis::Parameters { block_evidence_max: 1, ..standard_genesis().parameters },
            ..standard_genesis()
        },
        mutate: |chain, block, _| {
            block.evidence =
                vec![double_production_at_genesis_height(chain, 1), double_production_at_genesis_height(chain, 2)];
            reseal(block);
        },
        expected: |_, _| BlockError::TooMuchEvidence { count: 2, max: 1 },
    }]
}

fn evidence_root_mismatch_cases() -> Vec<BlockCase> {
    vec![BlockCase {
        desc: "evidence added without updating the header's evidence root",
        genesis: standard_genesis,
        mutate: |chain, block, _| {
            block.evidence = vec![double_production_at_genesis_height(chain, 1)];
            resign(block);
        },
        expected: |_, block| BlockError::EvidenceRootMismatch {
            expected: evidence_root_of(&block.evidence),
            got: merkle_root(&[]),
        },
    }]
}

fn block_invalid_evidence_cases() -> Vec<BlockCase> {
    vec![
        BlockCase {
            desc: "evidence whose second header's signature was tampered with",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                let Evidence::DoubleProduction { first, mut second } = double_production_at_genesis_height(chain, 1)
                else {
                    unreachable!("built as double production")
                };
                second.signature.0[5] ^= 1;
                let (first, second) =
                    if block_hash(&first) < block_hash(&second) { (first, second) } else { (second, first) };
                block.evidence = vec![Evidence::DoubleProduction { first, second }];
                reseal(block);
            },
            expected: |_, _| BlockError::InvalidEvidence { index: 0, error: EvidenceError::BadSignature },
        },
        BlockCase {
            desc: "the same offence twice in one block",
            genesis: standard_genesis,
            mutate: |chain, block, _| {
                let evidence = double_production_at_genesis_height(chain, 1);
                block.evidence = vec![evidence.clone(), evidence];
                reseal(block);
            },
            expected: |_, _| BlockError::InvalidEvidence { index: 1, error: EvidenceError::DuplicateInBlock },
        },
    ]
}

/// A function returning the rows for one variant.
type BlockTable = fn() -> Vec<BlockCase>;

/// Every block table, by the variant it covers.
const BLOCK_TABLES: &[(&str, BlockTable)] = &[
    ("WrongChainId", wrong_chain_id_cases),
    ("WrongHeight", wrong_height_cases),
    ("WrongParent", wrong_parent_cases),
    ("UnknownProducer", unknown_producer_cases),
    ("RankOutOfRange", rank_out_of_range_cases),
    ("WrongProducerForRank", wrong_producer_for_rank_cases),
    ("TooEarly", too_early_cases),
    ("TimestampInFuture", timestamp_in_future_cases),
    ("BadProducerSignature", bad_producer_signature_cases),
    ("TooManyTransfers", too_many_transfers_cases),
    ("TooLarge", too_large_cases),
    ("DuplicateTransfer", duplicate_transfer_cases),
    ("TooManyReportsFromValidator", too_many_reports_from_validator_cases),
    ("TxRootMismatch", tx_root_mismatch_cases),
    ("ReportRootMismatch", report_root_mismatch_cases),
    ("StateRootMismatch", state_root_mismatch_cases),
    ("InvalidTransfer", block_invalid_transfer_cases),
    ("InvalidReport", block_invalid_report_cases),
    ("RewardOverflow", reward_overflow_cases),
    ("TooMuchEvidence", too_much_evidence_cases),
    ("EvidenceRootMismatch", evidence_root_mismatch_cases),
    ("InvalidEvidence", block_invalid_evidence_cases),
];

#[test]
fn block_wrong_chain_id() {
    run_block_cases(&wrong_chain_id_cases());
}

#[test]
fn block_wrong_height() {
    run_block_cases(&wrong_height_cases());
}

#[test]
fn block_wrong_parent() {
    run_block_cases(&wrong_parent_cases());
}

#[test]
fn block_unknown_producer() {
    run_block_cases(&unknown_producer_cases());
}

#[test]
fn block_rank_out_of_range() {
    run_block_cases(&rank_out_of_range_cases());
}

#[test]
fn block_wrong_producer_for_rank() {
    run_block_cases(&wrong_producer_for_rank_cases());
}

#[test]
fn block_too_early() {
    run_block_cases(&too_early_cases());
}

#[test]
fn block_timestamp_in_future() {
    run_block_cases(&timestamp_in_future_cases());
}

#[test]
fn block_bad_producer_signature() {
    run_block_cases(&bad_producer_signature_cases());
}

#[test]
fn block_too_many_transfers() {
    run_block_cases(&too_many_transfers_cases());
}

#[test]
fn block_too_large() {
    run_block_cases(&too_large_cases());
}

#[test]
fn block_duplicate_transfer() {
    run_block_cases(&duplicate_transfer_cases());
}

#[test]
fn block_too_many_reports_from_validator() {
    run_block_cases(&too_many_reports_from_validator_cases());
}

#[test]
fn block_tx_root_mismatch() {
    run_block_cases(&tx_root_mismatch_cases());
}

#[test]
fn block_report_root_mismatch() {
    run_block_cases(&report_root_mismatch_cases());
}

#[test]
fn block_state_root_mismatch() {
    run_block_cases(&state_root_mismatch_cases());
}

#[test]
fn block_invalid_transfer_errors() {
    run_block_cases(&block_invalid_transfer_cases());
}

#[test]
fn block_invalid_report_errors() {
    run_block_cases(&block_invalid_report_cases());
}

#[test]
fn block_reward_overflow() {
    run_block_cases(&reward_overflow_cases());
}

#[test]
fn block_evidence() {
    run_block_cases(&too_much_evidence_cases());
    run_block_cases(&evidence_root_mismatch_cases());
    run_block_cases(&block_invalid_evidence_cases());
}

/// The shape checks alone (what a node runs on side-branch and orphan blocks) find the errors
/// that need no chain state, in the same way.
#[test]
fn check_block_shape_finds_the_stateless_errors() {
    let stateless = [
        "WrongChainId",
        "UnknownProducer",
        "RankOutOfRange",
        "BadProducerSignature",
        "TooManyTransfers",
        "TooLarge",
        "DuplicateTransfer",
        "TooManyReportsFromValidator",
        "TxRootMismatch",
        "ReportRootMismatch",
        "TooMuchEvidence",
        "EvidenceRootMismatch",
    ];
    for (variant, table) in BLOCK_TABLES.iter().filter(|(variant, _)| stateless.contains(variant)) {
        for case in table() {
            let chain = Chain::new((case.genesis)());
            let mut block = chain.base_block();
            let mut now_ms = block.header.timestamp_ms;
            (case.mutate)(&chain, &mut block, &mut now_ms);
            let expected = (case.expected)(&chain, &block);
            assert_eq!(
                validate::check_block_shape(&chain.genesis, &block, &chain.cache),
                Err(expected),
                "{variant}: {}",
                case.desc
            );
        }
    }
    let chain = Chain::standard();
    let block = chain.base_block();
    assert_eq!(validate::check_block_shape(&chain.genesis, &block, &chain.cache), Ok(block_hash(&block.header)));
}

// ---- coverage ---------------------------------------------------------------------------------------

/// Exhaustive matches: adding a variant without a case here does not compile.
fn tx_variant(error: &TxError) -> &'static str {
    match error {
        TxError::WrongChainId { .. } => "WrongChainId",
        TxError::ZeroAmount => "ZeroAmount",
        TxError::BadSignature => "BadSignature",
        TxError::WrongNonce { .. } => "WrongNonce",
        TxError::InsufficientBalance { .. } => "InsufficientBalance",
        TxError::AmountOverflow => "AmountOverflow",
        TxError::RecipientBalanceOverflow => "RecipientBalanceOverflow",
    }
}
const TX_VARIANTS: usize = 7;

fn report_variant(error: &ReportError) -> &'static str {
    match error {
        ReportError::UnknownValidator { .. } => "UnknownValidator",
        ReportError::OutOfRange { .. } => "OutOfRange",
        ReportError::WrongScore { .. } => "WrongScore",
        ReportError::StaleSequence { .. } => "StaleSequence",
        ReportError::TipNotBelowBlock { .. } => "TipNotBelowBlock",
        ReportError::MalformedVote => "MalformedVote",
        ReportError::BadSignature => "BadSignature",
    }
}
const REPORT_VARIANTS: usize = 7;

fn block_variant(error: &BlockError) -> &'static str {
    match error {
        BlockError::WrongChainId { .. } => "WrongChainId",
        BlockError::WrongHeight { .. } => "WrongHeight",
        BlockError::WrongParent { .. } => "WrongParent",
        BlockError::UnknownProducer { .. } => "UnknownProducer",
        BlockError::RankOutOfRange { .. } => "RankOutOfRange",
        BlockError::WrongProducerForRank { .. } => "WrongProducerForRank",
        BlockError::TooEarly { .. } => "TooEarly",
        BlockError::TimestampInFuture { .. } => "TimestampInFuture",
        BlockError::BadProducerSignature => "BadProducerSignature",
        BlockError::TooManyTransfers { .. } => "TooManyTransfers",
        BlockError::TooLarge { .. } => "TooLarge",
        BlockError::DuplicateTransfer { .. } => "DuplicateTransfer",
        BlockError::TooManyReportsFromValidator { .. } => "TooManyReportsFromValidator",
        BlockError::TxRootMismatch { .. } => "TxRootMismatch",
        BlockError::ReportRootMismatch { .. } => "ReportRootMismatch",
        BlockError::StateRootMismatch { .. } => "StateRootMismatch",
        BlockError::InvalidTransfer { .. } => "InvalidTransfer",
        BlockError::InvalidReport { .. } => "InvalidReport",
        BlockError::RewardOverflow => "RewardOverflow",
        BlockError::TooMuchEvidence { .. } => "TooMuchEvidence",
        BlockError::EvidenceRootMismatch { .. } => "EvidenceRootMismatch",
        BlockError::InvalidEvidence { .. } => "InvalidEvidence",
    }
}
const BLOCK_VARIANTS: usize = 22;

#[test]
fn every_error_variant_has_a_case() {
    let mut tx_seen = BTreeSet::new();
    let mut report_seen = BTreeSet::new();
    let mut block_seen = BTreeSet::new();
    for case in transfer_cases() {
        if let Err(error) = &case.expected {
            tx_seen.insert(tx_variant(error));
        }
    }
    let chain = Chain::standard();
    for case in report_cases() {
        let mut report = chain.report(1, 1, chain.genesis_checkpoint(), 200, 600);
        (case.mutate)(&chain, &mut report);
        if let Err(error) = (case.expected)(&report) {
            report_seen.insert(report_variant(&error));
        }
    }
    for (variant, table) in BLOCK_TABLES {
        let cases = table();
        assert!(!cases.is_empty(), "{variant} has no case");
        for case in cases {
            let chain = Chain::new((case.genesis)());
            let mut block = chain.base_block();
            let mut now_ms = block.header.timestamp_ms;
            (case.mutate)(&chain, &mut block, &mut now_ms);
            let error = (case.expected)(&chain, &block);
            match &error {
                BlockError::InvalidTransfer { error, .. } => {
                    tx_seen.insert(tx_variant(error));
                }
                BlockError::InvalidReport { error, .. } => {
                    report_seen.insert(report_variant(error));
                }
                _ => {}
            }
            block_seen.insert(block_variant(&error));
        }
    }
    assert_eq!(tx_seen.len(), TX_VARIANTS, "TxError variants with a case: {tx_seen:?}");
    assert_eq!(report_seen.len(), REPORT_VARIANTS, "ReportError variants with a case: {report_seen:?}");
    assert_eq!(block_seen.len(), BLOCK_VARIANTS, "BlockError variants with a case: {block_seen:?}");
    let table_names: BTreeSet<&str> = BLOCK_TABLES.iter().map(|(variant, _)| *variant).collect();
    assert_eq!(table_names, block_seen, "each block table is named after the variant its cases expect");
}
