//! The chain every consensus target starts from: four validators, four funded accounts, a
//! short healthy chain made once per process by `testkit::LocalNet` (transfers, reports and
//! votes in its blocks), and the state after each of its blocks.

use std::sync::{Arc, OnceLock};
use tinychain_core::crypto::{Keypair, SignatureCache};
use tinychain_core::genesis::{genesis_block, Genesis};
use tinychain_core::state::ChainState;
use tinychain_core::testkit::{account_key, fast_genesis, seeded_key, sign_transfer, validator_key, LocalNet};
use tinychain_core::types::{Block, Hash, Height, NodeId};
use tinychain_core::validate::{apply_block, validate_block, with_canonical_context};

pub const VALIDATORS: usize = 4;
pub const ACCOUNTS: usize = 4;

/// A chain and everything needed to validate a block at any of its heights.
pub struct Chain {
    pub genesis: Genesis,
    /// The canonical blocks at heights 1..=tip: `blocks[h - 1]` is at height `h`.
    pub blocks: Vec<Arc<Block>>,
    /// The state after each height: `states[h]` (genesis at 0).
    pub states: Vec<ChainState>,
    /// The block hash at each height (genesis at 0).
    pub canonical: Vec<Hash>,
}

impl Chain {
    pub fn tip_height(&self) -> Height {
        self.blocks.len() as Height
    }

    /// The block at `height` (1..=tip).
    pub fn block(&self, height: Height) -> &Arc<Block> {
        &self.blocks[usize::try_from(height - 1).expect("small heights")]
    }

    /// A height in 1..=tip picked by a fuzzer's byte.
    pub fn pick_height(&self, byte: u8) -> Height {
        1 + Height::from(byte) % self.tip_height()
    }
}

/// One signature cache for every input of a process: verification is pure, so sharing it
/// changes no outcome, and replaying the fixture chain into a fresh node then costs no
/// signature checks (without it, a target that steps a node runs at about 12 inputs a second).
pub fn cache() -> Arc<SignatureCache> {
    static CACHE: OnceLock<Arc<SignatureCache>> = OnceLock::new();
    CACHE.get_or_init(|| Arc::new(SignatureCache::new(100_000))).clone()
}

/// The chain, made on first use.
pub fn chain() -> &'static Chain {
    static CHAIN: OnceLock<Chain> = OnceLock::new();
    CHAIN.get_or_init(make_chain)
}

fn make_chain() -> Chain {
    let genesis = fast_genesis(VALIDATORS, ACCOUNTS);
    let mut net = LocalNet::new(genesis.clone(), 5);
    for round in 0..3u64 {
        net.run_until(400 + round * 400);
        for sender in 0..ACCOUNTS {
            let to = account_key((sender + 1) % ACCOUNTS).address();
            // Each account sends once a round: its nonce is the round.
            let transfer = sign_transfer(&account_key(sender), &genesis.chain_id, to, 1_000 + round, 10, round);
            net.submit(sender % VALIDATORS, transfer);
        }
    }
    net.run_until(2_400);
    let tip = net.drivers[0].node.tip().height;
    let blocks: Vec<Arc<Block>> =
        (1..=tip).map(|height| net.drivers[0].store.block_at(height).expect("canonical")).collect();
    let (genesis_block, mut state) = genesis_block(&genesis);
    let cache = SignatureCache::new(10_000);
    let mut canonical = vec![tinychain_core::validate::block_hash(&genesis_block.header)];
    let mut states = vec![state.clone()];
    for block in &blocks {
        let now_ms = block.header.timestamp_ms;
        let valid = with_canonical_context(&genesis, &state, &canonical, now_ms, &cache, 1, |context| {
            validate_block(context, block.clone())
        })
        .expect("LocalNet's canonical blocks are valid");
        apply_block(&mut state, &valid);
        canonical.push(valid.hash);
        states.push(state.clone());
    }
    let chain = Chain { genesis, blocks, states, canonical };
    assert!(chain.tip_height() >= 8, "the fixture chain has {} blocks", chain.tip_height());
    assert!(chain.blocks.iter().any(|block| !block.transfers.is_empty()), "the fixture chain carries transfers");
    assert!(
        chain.blocks.iter().any(|block| block.reports.iter().any(|report| report.vote.is_some())),
        "the fixture chain carries votes"
    );
    chain
}

/// Who signs an object a target built or changed.
#[derive(arbitrary::Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signer {
    /// Validator `index % VALIDATORS`.
    Validator(u8),
    /// A key no genesis names.
    Outsider,
}

impl Signer {
    pub fn key(self) -> Keypair {
        match self {
            Signer::Validator(index) => validator_key(usize::from(index) % VALIDATORS),
            Signer::Outsider => seeded_key("fuzz-outsider", 0),
        }
    }

    pub fn id(self) -> NodeId {
        self.key().address()
    }
}

/// The key of validator `id`, if it is one of the fixture's.
pub fn validator_key_of(id: &NodeId) -> Option<Keypair> {
    (0..VALIDATORS).map(validator_key).find(|key| key.address() == *id)
}
