//! Wire messages between validators. The core decides what to send; `net` only moves these
//! between authenticated peers, and the simulator moves them between simulated ones.

use crate::codec::{self, CodecError};
use crate::types::{Block, Checkpoint, MetricReport, Transfer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Message {
    /// A pending transfer, gossiped once by every node that accepts it into its mempool.
    Transfer(Transfer),
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
}

impl Message {
    /// A short name for logs and traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Transfer(_) => "transfer",
            Message::Block(_) => "block",
            Message::Report(_) => "report",
            Message::Status { .. } => "status",
            Message::GetBlocks { .. } => "get_blocks",
            Message::Blocks(_) => "blocks",
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
