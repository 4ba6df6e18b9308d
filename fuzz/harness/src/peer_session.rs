//! Target `peer_session`: a sequence of well-formed messages from authenticated peers, built
//! from the fixture chain and real keys with one field changed where the input says, stepped
//! into a validator that starts at genesis, with ticks, connections and disconnections between
//! them. Plain bytes (`message_step`) rarely get past a signature; these messages carry valid
//! ones, so sync, fork choice, finality, the mempool, pool sync and the evidence pool are what
//! this target drives.
//!
//! Oracle beyond "no panic": the node's final checkpoint never goes down or changes at a height
//! it already had, and the tip is never below it.

use crate::block_mutation::{self, ReportInput};
use crate::evidence::EvidenceInput;
use crate::fixture::{cache, chain, ACCOUNTS, VALIDATORS};
use crate::ByteFlip;
use std::sync::Arc;
use tinychain_core::message::Message;
use tinychain_core::node::Event;
use tinychain_core::testkit::{account_key, sign_transfer, validator_key, validator_node};
use tinychain_core::types::{Checkpoint, Hash, Transfer};
use tinychain_core::validate::transfer_id;

/// Most steps one input takes.
const STEPS_MAX: usize = 24;

#[derive(arbitrary::Arbitrary, Debug)]
pub struct Input {
    pub steps: Vec<Step>,
}

#[derive(arbitrary::Arbitrary, Debug)]
pub enum Step {
    /// A message from validator `1 + from % 3` (validator 0 is the node under test).
    Send {
        from: u8,
        message: MessageInput,
    },
    Tick {
        advance_ms: u16,
    },
    Connect(u8),
    Disconnect(u8),
    Metrics {
        cpu: u16,
        net: u16,
    },
    Submit(TransferInput),
}

#[derive(arbitrary::Arbitrary, Debug)]
pub enum MessageInput {
    Transfer(TransferInput),
    /// A fixture block, changed as `block_mutation` would change it.
    Block(block_mutation::Input),
    Report(ReportInput),
    Status {
        tip: u8,
        finalized: u8,
        flip: Option<ByteFlip>,
    },
    GetBlocks {
        locator: Vec<u8>,
        flip: Option<ByteFlip>,
    },
    /// `count` canonical fixture blocks from height `from + 1`.
    Blocks {
        from: u8,
        count: u8,
    },
    PoolAnnounce {
        ids: Vec<TransferInput>,
        complete: bool,
    },
    GetPooled {
        ids: Vec<TransferInput>,
    },
    Pooled(Vec<TransferInput>),
    Evidence(EvidenceInput),
    /// A links bitmap of any length (a relay rule input: which peers the sender reaches).
    Links(Vec<u8>),
}

/// A transfer signed by a fixture account, maybe with a byte of its signature changed.
#[derive(arbitrary::Arbitrary, Debug)]
pub struct TransferInput {
    pub from: u8,
    pub to: u8,
    pub amount: u32,
    pub fee: u16,
    pub nonce: u8,
    pub flip: Option<ByteFlip>,
}

impl TransferInput {
    fn build(&self) -> Transfer {
        let from = account_key(usize::from(self.from) % ACCOUNTS);
        let to = account_key(usize::from(self.to) % ACCOUNTS).address();
        let mut transfer = sign_transfer(
            &from,
            &chain().genesis.chain_id,
            to,
            u64::from(self.amount),
            u64::from(self.fee),
            u64::from(self.nonce),
        );
        if let Some(flip) = self.flip {
            flip.apply(&mut transfer.signature.0);
        }
        transfer
    }

    fn id(&self) -> Hash {
        transfer_id(&self.build())
    }
}

fn checkpoint(height: u8, flip: Option<ByteFlip>) -> Checkpoint {
    let chain = chain();
    let height = u64::from(height) % (chain.tip_height() + 1);
    let mut hash = chain.canonical[height as usize];
    if let Some(flip) = flip {
        flip.apply(&mut hash.0);
    }
    Checkpoint { height, hash }
}

impl MessageInput {
    fn build(&self) -> Message {
        let chain = chain();
        match self {
            MessageInput::Transfer(transfer) => Message::Transfers(vec![transfer.build()]),
            MessageInput::Block(input) => Message::Block(Arc::new(block_mutation::build(input).0)),
            MessageInput::Report(report) => Message::Report(report.build()),
            MessageInput::Status { tip, finalized, flip } => {
                Message::Status { tip: checkpoint(*tip, *flip), finalized: checkpoint(*finalized, None) }
            }
            MessageInput::GetBlocks { locator, flip } => Message::GetBlocks {
                locator: locator.iter().take(64).map(|height| checkpoint(*height, *flip)).collect(),
            },
            MessageInput::Blocks { from, count } => {
                let from = u64::from(*from) % chain.tip_height();
                let blocks = (from + 1..=chain.tip_height()).take(usize::from(*count)).map(|h| chain.block(h).clone());
                Message::Blocks(blocks.collect())
            }
            MessageInput::PoolAnnounce { ids, complete } => {
                Message::PoolAnnounce { ids: ids.iter().take(64).map(TransferInput::id).collect(), complete: *complete }
            }
            MessageInput::GetPooled { ids } => {
                Message::GetPooled { ids: ids.iter().take(64).map(TransferInput::id).collect() }
            }
            MessageInput::Pooled(transfers) => {
                Message::Pooled(transfers.iter().take(64).map(TransferInput::build).collect())
            }
            MessageInput::Evidence(evidence) => Message::Evidence(Box::new(evidence.build())),
            MessageInput::Links(validators) => {
                Message::Links { validators: validators.iter().take(256).copied().collect() }
            }
        }
    }
}

fn peer(index: u8) -> tinychain_core::types::NodeId {
    validator_key(1 + usize::from(index) % (VALIDATORS - 1)).address()
}

pub fn check(input: &Input) -> String {
    let chain = chain();
    let mut node = validator_node(&chain.genesis, 0, &cache());
    // The node joins late: every fixture block is in its past.
    let mut now_ms = chain.blocks.last().map_or(0, |block| block.header.timestamp_ms);
    let mut actions = 0;
    let mut finals: Vec<Checkpoint> = vec![node.finalized()];
    for peer_index in 0..3 {
        actions += node.step(now_ms, Event::PeerConnected { peer: peer(peer_index) }).len();
    }
    for step in input.steps.iter().take(STEPS_MAX) {
        let event = match step {
            Step::Send { from, message } => Event::MessageReceived { from: peer(*from), message: message.build() },
            Step::Tick { advance_ms } => {
                now_ms += u64::from(*advance_ms);
                Event::Tick
            }
            Step::Connect(index) => Event::PeerConnected { peer: peer(*index) },
            Step::Disconnect(index) => Event::PeerDisconnected { peer: peer(*index) },
            Step::Metrics { cpu, net } => Event::MetricsSampled { cpu: *cpu, net: *net },
            Step::Submit(transfer) => Event::TxSubmitted(transfer.build()),
        };
        actions += node.step(now_ms, event).len();
        let finalized = node.finalized();
        let last = *finals.last().expect("genesis at least");
        assert!(finalized.height >= last.height, "finality went back from {last:?} to {finalized:?}");
        if let Some(earlier) = finals.iter().find(|earlier| earlier.height == finalized.height) {
            assert_eq!(*earlier, finalized, "a different block became final at height {}", finalized.height);
        }
        assert!(node.tip().height >= finalized.height, "the tip {:?} is below the final {finalized:?}", node.tip());
        if finalized != last {
            finals.push(finalized);
        }
    }
    format!("tip {}, final {}, {actions} actions", node.tip().height, node.finalized().height)
}

pub fn run(data: &[u8]) -> String {
    match crate::structured::<Input>(data) {
        None => "not an input".to_string(),
        Some(input) => check(&input),
    }
}
