//! Property tests: codec round trips, decoding and validating adversarial bytes never panics,
//! running blocks through a whole network conserves supply and never overdraws an account, and
//! the election is a permutation that depends only on its inputs.
//!
//! Case counts are kept small so `cargo test -p tinychain-core --tests` stays fast on two cores;
//! raise them locally with `PROPTEST_CASES=n` for a longer search. Failing inputs are saved in
//! `properties.proptest-regressions` next to this file (commit it) and replayed first on every run.

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};
use tinychain_core::codec;
use tinychain_core::crypto::{merkle_root, Keypair, SignatureCache};
use tinychain_core::election::{self, demotion};
use tinychain_core::genesis::{self, Genesis, Parameters, ValidatorEntry};
use tinychain_core::message::Message;
use tinychain_core::node::{Event, Node, NodeConfig};
use tinychain_core::state::{ChainState, RecordedReport, StateDelta, ValidatorRecord};
use tinychain_core::testkit::{self, account_key, sign_transfer, validator_key, LocalNet};
use tinychain_core::types::{
    Address, Block, BlockHeader, Checkpoint, Evidence, Hash, Height, MetricReport, Signature, Transfer, Vote,
    UNITS_PER_COIN,
};
use tinychain_core::validate::{self, block_hash, report_id, transfer_id, BlockContext, ValidBlock};

// ---- strategies for protocol values ---------------------------------------------------------------

fn arb_hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

fn arb_address() -> impl Strategy<Value = Address> {
    any::<[u8; 32]>().prop_map(Address)
}

fn arb_signature() -> impl Strategy<Value = Signature> {
    (any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(|(r, s)| {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&r);
        bytes[32..].copy_from_slice(&s);
        Signature(bytes)
    })
}

/// Amounts near the edges as often as in the middle.
fn arb_amount() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), Just(1u64), Just(u64::MAX), any::<u64>(), 0..10 * UNITS_PER_COIN]
}

fn arb_chain_id() -> impl Strategy<Value = String> {
    prop_oneof![Just("tinychain-test".to_string()), any::<String>()]
}

fn arb_checkpoint() -> impl Strategy<Value = Checkpoint> {
    (any::<u64>(), arb_hash()).prop_map(|(height, hash)| Checkpoint { height, hash })
}

fn arb_vote() -> impl Strategy<Value = Vote> {
    (arb_checkpoint(), arb_checkpoint()).prop_map(|(source, target)| Vote { source, target })
}

fn arb_transfer() -> impl Strategy<Value = Transfer> {
    (arb_chain_id(), arb_address(), arb_address(), arb_amount(), arb_amount(), any::<u64>(), arb_signature()).prop_map(
        |(chain_id, from, to, amount, fee, nonce, signature)| Transfer {
            chain_id,
            from,
            to,
            amount,
            fee,
            nonce,
            signature,
        },
    )
}

fn arb_report_with(vote: impl Strategy<Value = Option<Vote>>) -> impl Strategy<Value = MetricReport> {
    (arb_address(), any::<u64>(), arb_checkpoint(), any::<u16>(), any::<u16>(), any::<u16>(), vote, arb_signature())
        .prop_map(|(node, sequence, tip, cpu, net, score, vote, signature)| MetricReport {
            node,
            sequence,
            tip,
            cpu,
            net,
            score,
            vote,
            signature,
        })
}

fn arb_report() -> impl Strategy<Value = MetricReport> {
    arb_report_with(proptest::option::of(arb_vote()))
}

fn arb_header() -> impl Strategy<Value = BlockHeader> {
    (
        arb_chain_id(),
        any::<u64>(),
        arb_hash(),
        any::<u64>(),
        arb_address(),
        any::<u32>(),
        arb_hash(),
        arb_hash(),
        arb_hash(),
        arb_signature(),
    )
        .prop_map(
            |(
                chain_id,
                height,
                prev_hash,
                timestamp_ms,
                producer,
                rank,
                tx_root,
                report_root,
                state_root,
                signature,
            )| {
                BlockHeader {
                    chain_id,
                    height,
                    prev_hash,
                    timestamp_ms,
                    producer,
                    rank,
                    tx_root,
                    report_root,
                    evidence_root: merkle_root(&[]),
                    state_root,
                    signature,
                }
            },
        )
}

fn arb_block() -> impl Strategy<Value = Block> {
    (arb_header(), prop::collection::vec(arb_transfer(), 0..4), prop::collection::vec(arb_report(), 0..4))
        .prop_map(|(header, transfers, reports)| Block { header, transfers, reports, evidence: Vec::new() })
        .prop_flat_map(|block| {
            prop::collection::vec(arb_evidence(), 0..2).prop_map(move |evidence| Block { evidence, ..block.clone() })
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        prop::collection::vec(arb_transfer(), 0..3).prop_map(Message::Transfers),
        arb_block().prop_map(|block| Message::Block(Arc::new(block))),
        arb_report().prop_map(Message::Report),
        (arb_checkpoint(), arb_checkpoint()).prop_map(|(tip, finalized)| Message::Status { tip, finalized }),
        prop::collection::vec(arb_checkpoint(), 0..8).prop_map(|locator| Message::GetBlocks { locator }),
        prop::collection::vec(arb_block().prop_map(Arc::new), 0..3).prop_map(Message::Blocks),
        (prop::collection::vec(arb_hash(), 0..8), any::<bool>())
            .prop_map(|(ids, complete)| Message::PoolAnnounce { ids, complete }),
        prop::collection::vec(arb_hash(), 0..8).prop_map(|ids| Message::GetPooled { ids }),
        prop::collection::vec(arb_transfer(), 0..4).prop_map(Message::Pooled),
        arb_evidence().prop_map(|evidence| Message::Evidence(Box::new(evidence))),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(|validators| Message::Links { validators }),
    ]
}

fn arb_evidence() -> impl Strategy<Value = Evidence> {
    prop_oneof![
        (arb_header(), arb_header()).prop_map(|(first, second)| Evidence::DoubleProduction { first, second }),
        (arb_report(), arb_report()).prop_map(|(first, second)| Evidence::DoubleVote { first, second }),
        (arb_report(), arb_report()).prop_map(|(outer, inner)| Evidence::SurroundVote { outer, inner }),
    ]
}

/// Byte-level damage to an encoding: flip bits at some positions, then maybe cut the tail or
/// append garbage. Positions are taken modulo the length, so one strategy fits every input.
#[derive(Clone, Debug)]
struct Damage {
    flips: Vec<(usize, u8)>,
    truncate_to: Option<usize>,
    append: Vec<u8>,
}

fn arb_damage() -> impl Strategy<Value = Damage> {
    (
        prop::collection::vec((any::<usize>(), 1..=u8::MAX), 0..6),
        proptest::option::weighted(0.2, any::<usize>()),
        prop_oneof![4 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 1..9)],
    )
        .prop_map(|(flips, truncate_to, append)| Damage { flips, truncate_to, append })
}

impl Damage {
    fn apply(&self, bytes: &[u8]) -> Vec<u8> {
        let mut damaged = bytes.to_vec();
        if !damaged.is_empty() {
            for (position, mask) in &self.flips {
                let index = position % damaged.len();
                damaged[index] ^= mask;
            }
        }
        if let Some(length) = self.truncate_to {
            damaged.truncate(length % (damaged.len() + 1));
        }
        damaged.extend_from_slice(&self.append);
        damaged
    }
}

/// If the bytes decode, they are the one canonical encoding of the value decoded.
fn assert_canonical_if_decodes(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(message) = Message::decode(bytes) {
        prop_assert_eq!(message.encode(), bytes, "a decoded message re-encodes to its input");
    }
    if let Ok(block) = codec::decode::<Block>("block", bytes) {
        prop_assert_eq!(codec::encode(&block), bytes, "a decoded block re-encodes to its input");
    }
    if let Ok(transfer) = codec::decode::<Transfer>("transfer", bytes) {
        prop_assert_eq!(codec::encode(&transfer), bytes, "a decoded transfer re-encodes to its input");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn codec_round_trips_transfers(transfer in arb_transfer()) {
        let bytes = codec::encode(&transfer);
        prop_assert_eq!(codec::decode::<Transfer>("transfer", &bytes), Ok(transfer.clone()));
        // The wire form is the signed fields (without the tag) then the 64 signature bytes.
        prop_assert_eq!(bytes.len(), 8 + transfer.chain_id.len() + 32 + 32 + 8 + 8 + 8 + 64);
    }

    #[test]
    fn codec_round_trips_reports_without_a_vote(report in arb_report_with(Just(None))) {
        let bytes = codec::encode(&report);
        prop_assert_eq!(codec::decode::<MetricReport>("report", &bytes), Ok(report));
    }

    #[test]
    fn codec_round_trips_reports_with_a_vote(report in arb_report_with(arb_vote().prop_map(Some))) {
        let bytes = codec::encode(&report);
        prop_assert_eq!(codec::decode::<MetricReport>("report", &bytes), Ok(report));
    }

    #[test]
    fn codec_round_trips_blocks(block in arb_block()) {
        let bytes = codec::encode(&block);
        prop_assert_eq!(codec::decode::<Block>("block", &bytes), Ok(block));
    }

    #[test]
    fn codec_round_trips_messages(message in arb_message()) {
        let bytes = message.encode();
        prop_assert_eq!(Message::decode(&bytes), Ok(message));
    }

    #[test]
    fn json_round_trips_transfers_with_amounts_as_strings(transfer in arb_transfer()) {
        let value = serde_json::to_value(&transfer).expect("a transfer serializes to JSON");
        prop_assert_eq!(&value["amount"], &serde_json::Value::String(transfer.amount.to_string()));
        prop_assert_eq!(&value["fee"], &serde_json::Value::String(transfer.fee.to_string()));
        prop_assert_eq!(&value["from"], &serde_json::Value::String(transfer.from.to_string()));
        let text = serde_json::to_string(&transfer).expect("a transfer serializes to JSON");
        let back: Transfer = serde_json::from_str(&text).expect("its own JSON parses");
        prop_assert_eq!(back, transfer);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        assert_canonical_if_decodes(&bytes)?;
    }

    #[test]
    fn decoding_damaged_encodings_never_panics(message in arb_message(), damage in arb_damage()) {
        let damaged = damage.apply(&message.encode());
        assert_canonical_if_decodes(&damaged)?;
        if let Message::Block(block) = &message {
            assert_canonical_if_decodes(&damage.apply(&codec::encode(block.as_ref())))?;
        }
        if let Message::Transfers(transfers) = &message {
            for transfer in transfers {
                assert_canonical_if_decodes(&damage.apply(&codec::encode(transfer)))?;
            }
        }
    }
}

// ---- validation of damaged valid blocks -------------------------------------------------------------

/// A valid block 1 on `fast_genesis(4, 4)`: three transfers (one to a fresh address, one to
/// oneself) and two reports, at rank 0.
struct BlockFixture {
    genesis: Genesis,
    state: ChainState,
    canonical: Vec<Hash>,
    block: Block,
    cache: SignatureCache,
}

fn block_fixture() -> &'static BlockFixture {
    static FIXTURE: OnceLock<BlockFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let genesis = testkit::fast_genesis(4, 4);
        let (_, state) = genesis::genesis_block(&genesis);
        let canonical = vec![state.tip.hash];
        let cache = SignatureCache::new(10_000);
        let chain_id = genesis.chain_id.clone();
        let transfers = vec![
            sign_transfer(&account_key(0), &chain_id, account_key(1).address(), 5 * UNITS_PER_COIN, 1_000, 0),
            sign_transfer(&account_key(1), &chain_id, Address([0xab; 32]), 3 * UNITS_PER_COIN, 0, 0),
            sign_transfer(&account_key(2), &chain_id, account_key(2).address(), UNITS_PER_COIN, 7, 0),
        ];
        let reports = vec![
            signed_report(&genesis, 0, 1, state.tip, 100, 300, None),
            signed_report(&genesis, 2, 4, state.tip, 900, 20, None),
        ];
        let ranking = election::rank_candidates(&genesis, &state.validators, &state.tip);
        let producer = key_of(&ranking[0].node).expect("validators have testkit keys");
        let timestamp_ms = state.tip_timestamp_ms + genesis.parameters.block_interval_ms;
        let valid =
            validate::with_canonical_context(&genesis, &state, &canonical, timestamp_ms, &cache, 1, |context| {
                validate::build_block(context, &producer, 0, timestamp_ms, transfers, reports, Vec::new())
            })
            .expect("the fixture body is valid");
        let block = Arc::unwrap_or_clone(valid.block);
        BlockFixture { genesis, state, canonical, block, cache }
    })
}

fn key_of(address: &Address) -> Option<Keypair> {
    (0..4).map(validator_key).chain((0..4).map(account_key)).find(|key| &key.address() == address)
}

fn signed_report(
    genesis: &Genesis,
    validator: usize,
    sequence: u64,
    tip: Checkpoint,
    cpu: u16,
    net: u16,
    vote: Option<Vote>,
) -> MetricReport {
    let key = validator_key(validator);
    let mut report = MetricReport {
        node: key.address(),
        sequence,
        tip,
        cpu,
        net,
        score: genesis.score(cpu, net),
        vote,
        signature: Signature::default(),
    };
    report.signature = key.sign(&codec::report_signing_bytes(&genesis.chain_id, &report));
    report
}

impl BlockFixture {
    fn with_context<R>(&self, now_ms: u64, run: impl FnOnce(&BlockContext<'_>) -> R) -> R {
        validate::with_canonical_context(&self.genesis, &self.state, &self.canonical, now_ms, &self.cache, 1, run)
    }

    /// Makes a damaged block consistent again wherever a test key can: every transfer and report
    /// signed by its claimed signer, the roots recomputed, the state root the one assembly
    /// computes (when assembly accepts the body), and the header signed by its producer. What is
    /// left is a block whose *content* is arbitrary, so validation gets past the cheap checks.
    /// Returns what assembly made of the body, if it accepted it.
    fn repair(&self, block: &mut Block) -> Option<ValidBlock> {
        for transfer in &mut block.transfers {
            if let Some(key) = key_of(&transfer.from) {
                transfer.signature = key.sign(&codec::transfer_signing_bytes(transfer));
            }
        }
        for report in &mut block.reports {
            if let Some(key) = key_of(&report.node) {
                report.signature = key.sign(&codec::report_signing_bytes(&self.genesis.chain_id, report));
            }
        }
        block.header.tx_root = merkle_root(&block.transfers.iter().map(transfer_id).collect::<Vec<_>>());
        block.header.report_root = merkle_root(&block.reports.iter().map(report_id).collect::<Vec<_>>());
        let producer = key_of(&block.header.producer)?;
        let assembled = self.with_context(block.header.timestamp_ms, |context| {
            validate::build_block(
                context,
                &producer,
                block.header.rank,
                block.header.timestamp_ms,
                block.transfers.clone(),
                block.reports.clone(),
                Vec::new(),
            )
        });
        if let Ok(assembled) = &assembled {
            block.header.state_root = assembled.block.header.state_root;
        }
        block.header.signature = producer.sign(&codec::header_signing_bytes(&block.header));
        assembled.ok()
    }

    /// Validation must not panic or mutate; if it accepts, applying conserves supply, reaches
    /// the committed state root, and the undo restores the parent state exactly.
    /// When `assembled` is given (assembly accepted the same body), an accepted block must be
    /// exactly what assembly built: same hash, same state change.
    fn check_validation(
        &self,
        block: &Block,
        now_ms: u64,
        assembled: Option<&ValidBlock>,
    ) -> Result<(), TestCaseError> {
        let _ = validate::check_block_shape(&self.genesis, block, &self.cache);
        let result = self.with_context(now_ms, |context| validate::validate_block(context, Arc::new(block.clone())));
        let Ok(valid) = result else {
            return Ok(());
        };
        if let Some(assembled) = assembled {
            prop_assert_eq!(valid.hash, assembled.hash, "validation accepts exactly what assembly built");
            prop_assert_eq!(&valid.delta, &assembled.delta);
        }
        prop_assert_eq!(valid.hash, block_hash(&block.header));
        let mut state = self.state.clone();
        let undo = validate::apply_block(&mut state, &valid);
        prop_assert_eq!(state.root(), block.header.state_root);
        prop_assert_eq!(state.supply, self.state.supply + self.genesis.parameters.block_reward);
        prop_assert_eq!(state.balances_total(), u128::from(state.supply));
        state.apply_delta(&undo);
        prop_assert_eq!(&state, &self.state);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn validating_damaged_blocks_never_panics(damage in arb_damage(), clock_skew_ms in -100i64..100) {
        let fixture = block_fixture();
        let state_before = fixture.state.clone();
        let bytes = codec::encode(&fixture.block);
        let damaged = damage.apply(&bytes);
        let Ok(mut block) = codec::decode::<Block>("block", &damaged) else {
            return Ok(());
        };
        let now_ms = fixture.block.header.timestamp_ms.saturating_add_signed(clock_skew_ms);
        fixture.check_validation(&block, now_ms, None)?;
        let assembled = fixture.repair(&mut block);
        fixture.check_validation(&block, now_ms, assembled.as_ref())?;
        prop_assert_eq!(&fixture.state, &state_before, "validation never mutates the state");

        // The same bytes as a wire message, into a whole node: untrusted input never panics.
        let mut node = Node::new(
            NodeConfig {
                genesis: fixture.genesis.clone(),
                key: validator_key(3),
                verify_threads: 1,
                mempool: Default::default(),
                unmeasured_metrics: (0, 0),
            },
            Arc::new(SignatureCache::new(1_000)),
        );
        let from = validator_key(1).address();
        let _ = node.step(0, Event::PeerConnected { peer: from });
        let _ = node.step(now_ms, Event::MessageReceived { from, message: Message::Block(Arc::new(block)) });
        prop_assert_eq!(node.state().balances_total(), u128::from(node.state().supply));
    }

    #[test]
    fn the_undamaged_fixture_block_is_valid(now_ms in 100u64..150) {
        let fixture = block_fixture();
        let result = fixture.with_context(now_ms, |context| {
            validate::validate_block(context, Arc::new(fixture.block.clone()))
        });
        prop_assert!(result.is_ok(), "{:?}", result.err());
    }
}

// ---- a whole network: supply is conserved and no account is overdrawn --------------------------

const NODES: usize = 4;
const FUNDED: usize = 4;
const LATENCY_MS: u64 = 5;

#[derive(Clone, Debug)]
enum Recipient {
    Funded(usize),
    Fresh(u8),
    Oneself,
    Validator(usize),
}

#[derive(Clone, Debug)]
enum AmountChoice {
    Zero,
    Small(u64),
    /// More than the committed balance, by this much.
    Overdraft(u64),
    /// Exactly the committed balance minus the fee (overdraws if transfers are pending).
    WholeBalance,
    Max,
}

#[derive(Clone, Debug)]
enum NonceChoice {
    /// The submitting node's next nonce (committed + pending), as a wallet computes it.
    Next,
    /// Below the next nonce: a replacement of a pending transfer, or a replay of a committed one.
    Reused(u64),
    /// Above the next nonce: leaves a gap.
    Gap(u64),
}

#[derive(Clone, Debug)]
enum Corruption {
    None,
    OtherChain,
    BadSignature,
}

#[derive(Clone, Debug)]
struct Op {
    wait_ms: u64,
    node: usize,
    sender: usize,
    recipient: Recipient,
    amount: AmountChoice,
    fee: u64,
    nonce: NonceChoice,
    corruption: Corruption,
}

/// Traffic between `group` and the rest is cut from `start_ms` for `duration_ms`.
#[derive(Clone, Debug)]
struct Partition {
    start_ms: u64,
    duration_ms: u64,
    group: Vec<usize>,
}

fn arb_op() -> impl Strategy<Value = Op> {
    let recipient = prop_oneof![
        3 => (0..FUNDED).prop_map(Recipient::Funded),
        2 => (0u8..4).prop_map(Recipient::Fresh),
        1 => Just(Recipient::Oneself),
        1 => (0..NODES).prop_map(Recipient::Validator),
    ];
    let amount = prop_oneof![
        1 => Just(AmountChoice::Zero),
        6 => (1..=20 * UNITS_PER_COIN).prop_map(AmountChoice::Small),
        2 => (1..=10 * UNITS_PER_COIN).prop_map(AmountChoice::Overdraft),
        1 => Just(AmountChoice::WholeBalance),
        1 => Just(AmountChoice::Max),
    ];
    let fee = prop_oneof![3 => Just(0u64), 6 => 1..10_000u64, 1 => Just(u64::MAX)];
    let nonce = prop_oneof![
        8 => Just(NonceChoice::Next),
        1 => (0..3u64).prop_map(NonceChoice::Reused),
        1 => (0..3u64).prop_map(NonceChoice::Gap),
    ];
    let corruption = prop_oneof![
        18 => Just(Corruption::None),
        1 => Just(Corruption::OtherChain),
        1 => Just(Corruption::BadSignature),
    ];
    (0..150u64, 0..NODES, 0..FUNDED, recipient, amount, fee, nonce, corruption).prop_map(
        |(wait_ms, node, sender, recipient, amount, fee, nonce, corruption)| Op {
            wait_ms,
            node,
            sender,
            recipient,
            amount,
            fee,
            nonce,
            corruption,
        },
    )
}

fn arb_partition() -> impl Strategy<Value = Option<Partition>> {
    proptest::option::weighted(
        0.3,
        (0..2_000u64, 300..2_500u64, prop_oneof![Just(vec![0]), Just(vec![3]), Just(vec![0, 1])])
            .prop_map(|(start_ms, duration_ms, group)| Partition { start_ms, duration_ms, group }),
    )
}

/// Builds the transfer an op describes, as the submitting node's wallet would see the sender.
fn transfer_for(net: &LocalNet, chain_id: &str, op: &Op) -> Transfer {
    let key = account_key(op.sender);
    let address = key.address();
    let node = &net.drivers[op.node].node;
    let committed = node.state().account(&address);
    let next_nonce = node.mempool().pending_nonce(&address, &committed);
    let to = match op.recipient {
        Recipient::Funded(index) => account_key(index).address(),
        Recipient::Fresh(byte) => Address([0xf0 | byte; 32]),
        Recipient::Oneself => address,
        Recipient::Validator(index) => validator_key(index).address(),
    };
    let amount = match op.amount {
        AmountChoice::Zero => 0,
        AmountChoice::Small(amount) => amount,
        AmountChoice::Overdraft(excess) => committed.balance.saturating_add(excess),
        AmountChoice::WholeBalance => committed.balance.saturating_sub(op.fee),
        AmountChoice::Max => u64::MAX,
    };
    let nonce = match op.nonce {
        NonceChoice::Next => next_nonce,
        NonceChoice::Reused(back) => next_nonce.saturating_sub(1 + back),
        NonceChoice::Gap(ahead) => next_nonce + 1 + ahead,
    };
    match op.corruption {
        Corruption::None => sign_transfer(&key, chain_id, to, amount, op.fee, nonce),
        Corruption::OtherChain => sign_transfer(&key, "other-chain", to, amount, op.fee, nonce),
        Corruption::BadSignature => {
            let mut transfer = sign_transfer(&key, chain_id, to, amount, op.fee, nonce);
            transfer.amount = transfer.amount.wrapping_add(1);
            transfer
        }
    }
}

/// What the ledger must look like, recomputed from a node's committed blocks alone.
struct Replay {
    balances: BTreeMap<Address, i128>,
    nonces: BTreeMap<Address, u64>,
    /// Per sender: amounts + fees it paid, and everything it was ever credited.
    spent: BTreeMap<Address, u128>,
    credited: BTreeMap<Address, u128>,
    transfer_ids: Vec<Hash>,
}

/// Replays the canonical chain in storage, in the order DESIGN.md fixes (reward and fees to the
/// producer, then the transfers in order), asserting that no balance ever goes below zero and
/// that each transfer carries its sender's next nonce.
fn replay(
    genesis: &Genesis,
    genesis_hash: Hash,
    blocks: &BTreeMap<Height, (Arc<Block>, StateDelta)>,
) -> Result<Replay, TestCaseError> {
    let reward = genesis.parameters.block_reward;
    let mut replay = Replay {
        balances: BTreeMap::new(),
        nonces: BTreeMap::new(),
        spent: BTreeMap::new(),
        credited: BTreeMap::new(),
        transfer_ids: Vec::new(),
    };
    for allocation in &genesis.allocations {
        replay.balances.insert(allocation.address, i128::from(allocation.amount));
        replay.credited.insert(allocation.address, u128::from(allocation.amount));
    }
    let mut parent = genesis_hash;
    for (expected_height, (height, (block, _))) in (1..).zip(blocks) {
        prop_assert_eq!(*height, expected_height, "storage holds one block per height, without gaps");
        prop_assert_eq!(block.header.prev_hash, parent, "each stored block extends the previous one");
        parent = block_hash(&block.header);
        let fees: u128 = block.transfers.iter().map(|transfer| u128::from(transfer.fee)).sum();
        let producer_income = u128::from(reward) + fees;
        *replay.balances.entry(block.header.producer).or_default() += producer_income as i128;
        *replay.credited.entry(block.header.producer).or_default() += producer_income;
        for transfer in &block.transfers {
            let nonce = replay.nonces.entry(transfer.from).or_default();
            prop_assert_eq!(transfer.nonce, *nonce, "a committed transfer carries its sender's next nonce");
            *nonce += 1;
            let cost = u128::from(transfer.amount) + u128::from(transfer.fee);
            let sender = replay.balances.entry(transfer.from).or_default();
            *sender -= cost as i128;
            prop_assert!(
                *sender >= 0,
                "transfer {:?} at height {} overdraws its sender",
                transfer_id(transfer),
                height
            );
            *replay.spent.entry(transfer.from).or_default() += cost;
            *replay.balances.entry(transfer.to).or_default() += i128::from(transfer.amount);
            *replay.credited.entry(transfer.to).or_default() += u128::from(transfer.amount);
            replay.transfer_ids.push(transfer_id(transfer));
        }
    }
    Ok(replay)
}

fn run_network(ops: &[Op], partition: &Option<Partition>) -> Result<(), TestCaseError> {
    let genesis = testkit::fast_genesis(NODES, FUNDED);
    let chain_id = genesis.chain_id.clone();
    let reward = genesis.parameters.block_reward;
    let allocated: u64 = genesis.allocations.iter().map(|allocation| allocation.amount).sum();
    let genesis_hash = genesis::genesis_block(&genesis).1.tip.hash;
    let mut net = LocalNet::new(genesis.clone(), LATENCY_MS);

    // One timeline: the submissions, and the partition's start and heal, in time order.
    enum Step<'a> {
        Submit(&'a Op),
        Partition(&'a [usize]),
        Heal,
    }
    let mut timeline: Vec<(u64, usize, Step<'_>)> = Vec::new();
    let mut at_ms = 0u64;
    for (order, op) in ops.iter().enumerate() {
        at_ms += op.wait_ms;
        timeline.push((at_ms, order, Step::Submit(op)));
    }
    if let Some(partition) = partition {
        timeline.push((partition.start_ms, usize::MAX - 1, Step::Partition(&partition.group)));
        timeline.push((partition.start_ms + partition.duration_ms, usize::MAX, Step::Heal));
    }
    timeline.sort_by_key(|(at_ms, order, _)| (*at_ms, *order));

    let mut submitted: BTreeSet<Hash> = BTreeSet::new();
    let mut accepted = 0usize;
    for (at_ms, _, step) in &timeline {
        net.run_until(*at_ms);
        match step {
            Step::Partition(group) => net.partition(group),
            Step::Heal => net.heal(),
            Step::Submit(op) => {
                let transfer = transfer_for(&net, &chain_id, op);
                let id = transfer_id(&transfer);
                submitted.insert(id);
                net.submit(op.node, transfer);
                if net.drivers[op.node].node.mempool().contains(&id) {
                    accepted += 1;
                }
            }
        }
    }
    let now_ms = net.now_ms;
    // Settle: long enough for sync and fork choice, then step a few milliseconds at a time to a
    // moment when no block is in flight.
    net.run_until(now_ms + 4_000);
    for _ in 0..200 {
        let tip = net.drivers[0].node.tip();
        if net.nodes().all(|node| node.tip() == tip) {
            break;
        }
        let next_ms = net.now_ms + 3;
        net.run_until(next_ms);
    }

    let tip = net.drivers[0].node.tip();
    let election = net.drivers[0].node.next_election();
    let mut committed_ids: Option<Vec<Hash>> = None;
    for (index, node) in net.nodes().enumerate() {
        let state = node.state();
        prop_assert_eq!(node.tip(), tip, "node {} disagrees on the tip after settling", index);
        prop_assert_eq!(node.next_election(), election.clone(), "node {} ranks the next producers differently", index);
        prop_assert_eq!(state.balances_total(), u128::from(state.supply), "node {}: balances sum to the supply", index);
        prop_assert_eq!(
            state.supply,
            allocated + state.tip.height * reward,
            "node {}: supply = genesis + rewards",
            index
        );
        prop_assert_eq!(&net.drivers[index].store.state, state, "node {}: storage holds the node's state", index);

        let replay = replay(&genesis, genesis_hash, &net.drivers[index].store.blocks)?;
        let addresses: BTreeSet<Address> = state.accounts.keys().chain(replay.balances.keys()).copied().collect();
        for address in &addresses {
            let account = state.account(address);
            prop_assert_eq!(
                i128::from(account.balance),
                replay.balances.get(address).copied().unwrap_or(0),
                "node {}: balance of {:?} = genesis + rewards + fees earned + received - sent - fees paid",
                index,
                address
            );
            prop_assert_eq!(
                account.nonce,
                replay.nonces.get(address).copied().unwrap_or(0),
                "node {}: nonce of {:?} = its committed transfers",
                index,
                address
            );
        }
        for (sender, spent) in &replay.spent {
            let credited = replay.credited.get(sender).copied().unwrap_or(0);
            prop_assert!(
                *spent <= credited,
                "node {}: {:?} spent {} of the {} it ever held",
                index,
                sender,
                spent,
                credited
            );
        }
        for id in &replay.transfer_ids {
            prop_assert!(submitted.contains(id), "node {}: committed transfer {:?} was never submitted", index, id);
        }
        match &committed_ids {
            None => committed_ids = Some(replay.transfer_ids),
            Some(reference) => {
                prop_assert_eq!(reference, &replay.transfer_ids, "node {} committed other transfers", index)
            }
        }
    }
    let committed = committed_ids.map_or(0, |ids| ids.len());
    prop_assert!(committed <= accepted, "{} committed but only {} were accepted", committed, accepted);
    if partition.is_none() && accepted > 0 {
        prop_assert!(committed > 0, "{} transfers were accepted on a healthy network, none committed", accepted);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn applying_blocks_conserves_supply_and_never_overdraws(
        ops in prop::collection::vec(arb_op(), 1..24),
        partition in arb_partition(),
    ) {
        run_network(&ops, &partition)?;
    }
}

// ---- election --------------------------------------------------------------------------------------

fn arb_record() -> impl Strategy<Value = ValidatorRecord> {
    let report = (any::<u64>(), 0..60u64, any::<u8>(), 0..=1000u16).prop_map(|(sequence, tip_height, byte, score)| {
        RecordedReport {
            sequence,
            tip: Checkpoint { height: tip_height, hash: Hash([byte; 32]) },
            cpu: score,
            net: score,
            score,
        }
    });
    (proptest::option::weighted(0.8, report), proptest::option::weighted(0.2, 0..60u64), 0..100u64).prop_map(
        |(latest_report, missed_turn_at, blocks_produced)| ValidatorRecord {
            latest_report,
            missed_turn_at,
            blocks_produced,
            jailed_until: None,
            recent_blocks: Vec::new(),
        },
    )
}

/// Validators with distinct ids, each with a record; scores drawn from a few values so ties
/// (broken by the hash) are common.
fn arb_validators() -> impl Strategy<Value = Vec<(Address, ValidatorRecord)>> {
    prop::collection::btree_set(any::<[u8; 32]>(), 1..9).prop_flat_map(|ids| {
        let count = ids.len();
        let ids: Vec<Address> = ids.into_iter().map(Address).collect();
        let tied_record = arb_record().prop_map(|mut record| {
            if let Some(report) = record.latest_report.as_mut() {
                report.score %= 3;
            }
            record
        });
        prop::collection::vec(prop_oneof![arb_record(), tied_record], count)
            .prop_map(move |records| ids.iter().copied().zip(records).collect::<Vec<_>>())
    })
}

fn election_genesis(validators: &[(Address, ValidatorRecord)]) -> (Genesis, Vec<ValidatorRecord>) {
    let genesis = Genesis {
        chain_id: "tinychain-test".into(),
        genesis_time_ms: 0,
        validators: validators
            .iter()
            .enumerate()
            .map(|(index, (id, _))| ValidatorEntry { id: *id, name: format!("node{index}"), addr: String::new() })
            .collect(),
        allocations: Vec::new(),
        parameters: Parameters::default(),
    };
    (genesis, validators.iter().map(|(_, record)| record.clone()).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_ranking_is_a_permutation_ordered_by_score_then_tie_break(
        validators in arb_validators(),
        parent_height in 0..80u64,
        parent_hash in arb_hash(),
    ) {
        let (genesis, records) = election_genesis(&validators);
        let parent = Checkpoint { height: parent_height, hash: parent_hash };
        let ranking = election::rank_candidates(&genesis, &records, &parent);
        prop_assert_eq!(ranking.len(), validators.len());
        let indexes: BTreeSet<u32> = ranking.iter().map(|candidate| candidate.validator_index).collect();
        prop_assert_eq!(indexes, (0..validators.len() as u32).collect::<BTreeSet<_>>(), "a permutation");
        for (position, candidate) in ranking.iter().enumerate() {
            let index = candidate.validator_index as usize;
            prop_assert_eq!(candidate.rank as usize, position);
            prop_assert_eq!(candidate.node, validators[index].0);
            prop_assert_eq!(candidate.score, records[index].latest_report.map(|report| report.score));
            prop_assert_eq!(candidate.demotion, demotion(&genesis, &records[index], parent_height));
            prop_assert_eq!(candidate.tie_break, election::tie_break(&parent.hash, &candidate.node));
            let rank = u32::try_from(position).expect("few validators");
            prop_assert_eq!(election::producer_at_rank(&genesis, &records, &parent, rank), Some(candidate.node));
        }
        prop_assert_eq!(election::producer_at_rank(&genesis, &records, &parent, validators.len() as u32), None);
        // Active validators first, by (score, tie-break); then the demoted, by tie-break.
        for pair in ranking.windows(2) {
            let key = |candidate: &election::Candidate| match candidate.demotion {
                None => (0u8, candidate.score, candidate.tie_break),
                Some(_) => (1u8, None, candidate.tie_break),
            };
            prop_assert!(key(&pair[0]) < key(&pair[1]), "out of order: {:?} before {:?}", pair[0], pair[1]);
        }
        // Pure: the same inputs, computed again (as another node would), give the same ranking.
        prop_assert_eq!(election::rank_candidates(&genesis, &records.clone(), &parent), ranking);
    }

    #[test]
    fn the_ranking_does_not_depend_on_the_order_validators_are_listed_in(
        (validators, shuffled) in arb_validators().prop_flat_map(|validators| {
            let shuffled = Just(validators.clone()).prop_shuffle();
            (Just(validators), shuffled)
        }),
        parent_height in 0..80u64,
        parent_hash in arb_hash(),
    ) {
        let parent = Checkpoint { height: parent_height, hash: parent_hash };
        let order = |validators: &[(Address, ValidatorRecord)]| {
            let (genesis, records) = election_genesis(validators);
            election::rank_candidates(&genesis, &records, &parent)
                .into_iter()
                .map(|candidate| (candidate.node, candidate.score, candidate.demotion))
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(order(&validators), order(&shuffled));
    }

    #[test]
    fn any_sequence_of_messages_from_a_peer_never_panics_or_breaks_the_pool(
        messages in prop::collection::vec(arb_message(), 1..12),
        times in prop::collection::vec(0u64..2_000, 12),
    ) {
        let genesis = tinychain_core::testkit::fast_genesis(4, 2);
        let mut node = tinychain_core::testkit::validator_node(&genesis, 0, &Arc::new(SignatureCache::new(1_000)));
        let from = validator_key(1).address();
        let _ = node.step(0, Event::PeerConnected { peer: from });
        let mut now_ms = 0;
        for (message, delay_ms) in messages.into_iter().zip(times) {
            now_ms += delay_ms;
            let actions = node.step(now_ms, Event::MessageReceived { from, message });
            // Whatever it is fed, it answers one pool request at a time, within the limit.
            for action in &actions {
                if let tinychain_core::node::Action::SendTo { message: Message::GetPooled { ids }, .. } = action {
                    prop_assert!(ids.len() <= tinychain_core::limits::POOL_FETCH_IDS_MAX);
                }
            }
        }
        prop_assert!(node.mempool().len() <= tinychain_core::limits::MEMPOOL_TXS_MAX);
        prop_assert_eq!(node.state().balances_total(), u128::from(node.state().supply));
    }
}
