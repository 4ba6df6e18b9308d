//! Wire messages between validators. The core decides what to send; `net` only moves these
//! between authenticated peers, and the simulator moves them between simulated ones.

use crate::codec::{self, CodecError};
use crate::types::{Block, Checkpoint, Evidence, Hash, MetricReport, Transfer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Message {
    /// Pending transfers, each gossiped once by every node that accepts it into its mempool, in
    /// batches of at most `limits::GOSSIP_BATCH_TRANSFERS_MAX` (see `node::relay`).
    Transfers(Vec<Transfer>),
    /// A new block, gossiped once by every node that accepts it.
    Block(Arc<Block>),
    /// A metric report (and maybe a vote), gossiped once.
    Report(MetricReport),
    /// The sender's tip and final block, sent on every (re)connection.
    Status { tip: Checkpoint, finalized: Checkpoint },
    /// Asks for the receiver's canonical blocks after the highest locator checkpoint it shares
    /// (the locator runs from the asker's tip back to genesis, exponentially spaced).
    GetBlocks { locator: Vec<Checkpoint> },
    /// Canonical blocks in height order, answering `GetBlocks`.
    Blocks(Vec<Arc<Block>>),
    /// Ids of the sender's pending transfers, by sender then nonce, sent in batches right after
    /// `Status` on every (re)connection; `complete` marks the last batch (an empty pool sends
    /// one empty, complete batch). Ethereum's pooled-transaction announcements are the model.
    PoolAnnounce { ids: Vec<Hash>, complete: bool },
    /// Asks for announced pending transfers by id (at most `limits::POOL_FETCH_IDS_MAX`).
    GetPooled { ids: Vec<Hash> },
    /// The asked-for transfers the sender still holds, in the order asked, answering `GetPooled`.
    Pooled(Vec<Transfer>),
    /// Proof of an offence (see `types::Evidence`), gossiped once by every node that verifies
    /// it and does not yet hold it committed.
    Evidence(Box<Evidence>),
    /// The validators the sender has a link with: bit `i % 8` of byte `i / 8` is set for
    /// validator `i` (genesis order). Sent to a peer when the link comes up and to every peer
    /// when the sender's links change; never relayed. A receiver relays a message it got from
    /// the sender only to peers the sender is not linked with (see `node::relay`).
    Links { validators: Vec<u8> },
}

impl Message {
    /// A short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Transfers(_) => "transfers",
            Message::Block(_) => "block",
            Message::Report(_) => "report",
            Message::Status { .. } => "status",
            Message::GetBlocks { .. } => "get_blocks",
            Message::Blocks(_) => "blocks",
            Message::PoolAnnounce { .. } => "pool_announce",
            Message::GetPooled { .. } => "get_pooled",
            Message::Pooled(_) => "pooled",
            Message::Evidence(_) => "evidence",
            Message::Links { .. } => "links",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes a message, never allocating more than the message limit.
    pub fn decode(bytes: &[u8]) -> Result<Message, CodecError> {
        codec::decode("message", bytes)
    }
}
