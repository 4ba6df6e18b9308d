//! Target `block_mutation`: a canonical block of the fixture chain with fields changed, its
//! roots recomputed and its header signed again if the input says so, then validated as the
//! child of its real parent. Plain bytes almost never get past the producer's signature; this
//! target does, so the checks behind it (transfers, reports, votes, evidence, the state root)
//! are what it fuzzes.
//!
//! Oracle beyond "no panic": an unchanged block validates, with its recorded hash; a block that
//! validates re-encodes and decodes to itself.

use crate::evidence::EvidenceInput;
use crate::fixture::{chain, validator_key_of, Signer, ACCOUNTS};
use crate::ByteFlip;
use std::sync::Arc;
use tinychain_core::codec::{self, header_signing_bytes, report_signing_bytes};
use tinychain_core::crypto::{merkle_root, SignatureCache};
use tinychain_core::testkit::{account_key, sign_transfer};
use tinychain_core::types::{Block, Checkpoint, Hash, MetricReport, Vote};
use tinychain_core::validate::{
    block_hash, check_block_shape, evidence_id, report_id, transfer_id, validate_block, with_canonical_context,
};

#[derive(arbitrary::Arbitrary, Debug)]
pub struct Input {
    /// Which block of the fixture chain to start from.
    pub height: u8,
    pub mutations: Vec<Mutation>,
    /// Recompute the transfer, report and evidence roots after the mutations.
    pub fix_roots: bool,
    /// Sign the header again: `None` keeps the signature it has.
    pub resign: Option<Resign>,
}

#[derive(arbitrary::Arbitrary, Clone, Copy, Debug)]
pub enum Resign {
    /// The key of whoever the header names as producer (if it is a validator).
    Producer,
    Other(Signer),
}

#[derive(arbitrary::Arbitrary, Debug)]
pub enum Mutation {
    Height(u64),
    HeightDelta(i8),
    PrevHash(ByteFlip),
    Timestamp(u64),
    TimestampDelta(i32),
    Producer(Signer),
    Rank(u32),
    ChainId(String),
    TxRoot(ByteFlip),
    ReportRoot(ByteFlip),
    EvidenceRoot(ByteFlip),
    StateRoot(ByteFlip),
    Signature(ByteFlip),
    DropTransfer(u8),
    DuplicateTransfer(u8),
    SwapTransfers(u8, u8),
    TransferAmount(u8, u64),
    TransferFee(u8, u64),
    TransferNonce(u8, u64),
    TransferSignature(u8, ByteFlip),
    /// A new transfer signed by fixture account `from`.
    AddTransfer {
        from: u8,
        to: u8,
        amount: u64,
        fee: u64,
        nonce: u64,
    },
    DropReport(u8),
    DuplicateReport(u8),
    SwapReports(u8, u8),
    ReportSignature(u8, ByteFlip),
    /// A new report (and maybe vote) signed by `signer`.
    AddReport(ReportInput),
    DropEvidence(u8),
    AddEvidence(EvidenceInput),
}

/// A report to build and sign; heights are taken modulo the fixture chain's.
#[derive(arbitrary::Arbitrary, Clone, Debug)]
pub struct ReportInput {
    pub signer: Signer,
    pub sequence: u64,
    pub tip_height: u8,
    /// Per-mille; taken modulo 1,100 so the bound (1,000) is crossed now and then.
    pub cpu: u16,
    pub net: u16,
    /// `None`: the score genesis gives `cpu` and `net` (an honest report's).
    pub score: Option<u16>,
    /// A vote to the tip from the checkpoint at this height, taken modulo the tip's height so
    /// the vote is well formed (source below target).
    pub vote_source: Option<u8>,
    /// Break the tip hash (a checkpoint on no chain).
    pub tip_flip: Option<ByteFlip>,
}

impl ReportInput {
    pub fn build(&self) -> MetricReport {
        let chain = chain();
        let checkpoint = |height: u8| {
            let height = u64::from(height) % (chain.tip_height() + 1);
            Checkpoint { height, hash: chain.canonical[height as usize] }
        };
        let mut tip = checkpoint(self.tip_height);
        if let Some(flip) = self.tip_flip {
            flip.apply(&mut tip.hash.0);
        }
        let key = self.signer.key();
        let (cpu, net) = (self.cpu % 1_100, self.net % 1_100);
        let mut report = MetricReport {
            node: key.address(),
            sequence: self.sequence,
            tip,
            cpu,
            net,
            score: self.score.unwrap_or_else(|| chain.genesis.score(cpu.min(1_000), net.min(1_000))),
            vote: self.vote_source.map(|source| {
                let source = u8::try_from(u64::from(source) % tip.height.max(1)).expect("below a u8");
                Vote { source: checkpoint(source), target: tip }
            }),
            signature: Default::default(),
        };
        report.signature = key.sign(&report_signing_bytes(&chain.genesis.chain_id, &report));
        report
    }
}

/// Index `byte` into a list of `len` items, `None` if it is empty.
fn pick(byte: u8, len: usize) -> Option<usize> {
    (len > 0).then(|| usize::from(byte) % len)
}

/// Changes the item `at` picks, if the list has any.
fn edit<T>(items: &mut [T], at: u8, change: impl FnOnce(&mut T)) {
    if let Some(at) = pick(at, items.len()) {
        change(&mut items[at]);
    }
}

fn remove<T>(items: &mut Vec<T>, at: u8) {
    if let Some(at) = pick(at, items.len()) {
        items.remove(at);
    }
}

/// Inserts a copy of the picked item right before it.
fn duplicate<T: Clone>(items: &mut Vec<T>, at: u8) {
    if let Some(at) = pick(at, items.len()) {
        items.insert(at, items[at].clone());
    }
}

fn swap<T>(items: &mut [T], a: u8, b: u8) {
    if let (Some(a), Some(b)) = (pick(a, items.len()), pick(b, items.len())) {
        items.swap(a, b);
    }
}

fn apply(block: &mut Block, mutation: &Mutation) {
    let chain_id = chain().genesis.chain_id.clone();
    let header = &mut block.header;
    match mutation {
        Mutation::Height(height) => header.height = *height,
        Mutation::HeightDelta(delta) => header.height = header.height.wrapping_add_signed(i64::from(*delta)),
        Mutation::PrevHash(flip) => flip.apply(&mut header.prev_hash.0),
        Mutation::Timestamp(at) => header.timestamp_ms = *at,
        Mutation::TimestampDelta(delta) => {
            header.timestamp_ms = header.timestamp_ms.wrapping_add_signed(i64::from(*delta))
        }
        Mutation::Producer(signer) => header.producer = signer.id(),
        Mutation::Rank(rank) => header.rank = *rank,
        Mutation::ChainId(id) => header.chain_id = id.clone(),
        Mutation::TxRoot(flip) => flip.apply(&mut header.tx_root.0),
        Mutation::ReportRoot(flip) => flip.apply(&mut header.report_root.0),
        Mutation::EvidenceRoot(flip) => flip.apply(&mut header.evidence_root.0),
        Mutation::StateRoot(flip) => flip.apply(&mut header.state_root.0),
        Mutation::Signature(flip) => flip.apply(&mut header.signature.0),
        Mutation::DropTransfer(at) => remove(&mut block.transfers, *at),
        Mutation::DuplicateTransfer(at) => duplicate(&mut block.transfers, *at),
        Mutation::SwapTransfers(a, b) => swap(&mut block.transfers, *a, *b),
        Mutation::TransferAmount(at, value) => edit(&mut block.transfers, *at, |transfer| transfer.amount = *value),
        Mutation::TransferFee(at, value) => edit(&mut block.transfers, *at, |transfer| transfer.fee = *value),
        Mutation::TransferNonce(at, value) => edit(&mut block.transfers, *at, |transfer| transfer.nonce = *value),
        Mutation::TransferSignature(at, flip) => {
            edit(&mut block.transfers, *at, |transfer| flip.apply(&mut transfer.signature.0))
        }
        Mutation::AddTransfer { from, to, amount, fee, nonce } => {
            let from = account_key(usize::from(*from) % ACCOUNTS);
            let to = account_key(usize::from(*to) % ACCOUNTS).address();
            block.transfers.push(sign_transfer(&from, &chain_id, to, *amount, *fee, *nonce));
        }
        Mutation::DropReport(at) => remove(&mut block.reports, *at),
        Mutation::DuplicateReport(at) => duplicate(&mut block.reports, *at),
        Mutation::SwapReports(a, b) => swap(&mut block.reports, *a, *b),
        Mutation::ReportSignature(at, flip) => {
            edit(&mut block.reports, *at, |report| flip.apply(&mut report.signature.0))
        }
        Mutation::AddReport(report) => block.reports.push(report.build()),
        Mutation::DropEvidence(at) => remove(&mut block.evidence, *at),
        Mutation::AddEvidence(evidence) => block.evidence.push(evidence.build()),
    }
}

fn root<T>(items: &[T], id: impl Fn(&T) -> Hash) -> Hash {
    merkle_root(&items.iter().map(id).collect::<Vec<_>>())
}

/// The block the input describes, and the height of the fixture block it started from.
pub fn build(input: &Input) -> (Block, u64) {
    let chain = chain();
    let height = chain.pick_height(input.height);
    let mut block = Block::clone(chain.block(height));
    // Bounded so one input cannot make a block of millions of items.
    for mutation in input.mutations.iter().take(64) {
        apply(&mut block, mutation);
    }
    if input.fix_roots {
        block.header.tx_root = root(&block.transfers, transfer_id);
        block.header.report_root = root(&block.reports, report_id);
        block.header.evidence_root = root(&block.evidence, evidence_id);
    }
    let signer = match input.resign {
        None => None,
        Some(Resign::Producer) => validator_key_of(&block.header.producer),
        Some(Resign::Other(signer)) => Some(signer.key()),
    };
    if let Some(key) = signer {
        block.header.signature = key.sign(&header_signing_bytes(&block.header));
    }
    (block, height)
}

/// Validates the described block as the child of the parent of the block it started from.
pub fn check(input: &Input) -> String {
    let chain = chain();
    let (block, height) = build(input);
    let cache = SignatureCache::new(1_000);
    if let Err(error) = check_block_shape(&chain.genesis, &block, &cache) {
        return format!("bad shape: {error}");
    }
    let parent = usize::try_from(height - 1).expect("small heights");
    let now_ms = chain.block(height).header.timestamp_ms;
    let block = Arc::new(block);
    let validated = with_canonical_context(
        &chain.genesis,
        &chain.states[parent],
        &chain.canonical[..=parent],
        now_ms,
        &cache,
        1,
        |context| validate_block(context, block.clone()),
    );
    match validated {
        Err(error) => format!("invalid: {error}"),
        Ok(valid) => {
            assert_eq!(valid.hash, block_hash(&block.header), "a valid block's hash is its header's");
            let bytes = codec::encode(&*block);
            assert_eq!(codec::decode::<Block>("block", &bytes).as_ref(), Ok(&*block), "a valid block round-trips");
            if input.mutations.is_empty() {
                assert_eq!(valid.hash, chain.canonical[parent + 1], "an unchanged block keeps its hash");
            }
            "valid".to_string()
        }
    }
}

pub fn run(data: &[u8]) -> String {
    match crate::structured::<Input>(data) {
        None => "not an input".to_string(),
        Some(input) => check(&input),
    }
}
