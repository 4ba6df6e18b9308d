//! The record log: every input the one driver (`driver`) got, so a live node's run can be
//! replayed through the same code, bit for bit. The format is documented in
//! docs/record-format.md; this module owns its types, its framing and the digest of what the
//! driver did.
//!
//! A log is a sequence of frames: a `u32` little-endian length, then that many bytes of one
//! `Entry` in the protocol's codec. Each start of the node appends a `Session` (what the node was
//! started with), then for each call into the driver: the call (`Start`, `Step`, `Submit`,
//! `FinishSubmits`), the answers the store gave it in order (`Read`), and `Done` with the number
//! of actions the core returned and a digest of them. The node's secret key is never written:
//! a replay needs it from the node's home.
//!
//! The digest (`ActionDigest`) covers every action: each block applied or rolled back (by hash),
//! the tip, justified and final checkpoints of each commit, each vote and report sequence
//! persisted, each message sent or broadcast (the hash of its encoding) and to whom, blocks
//! served, disconnects and their reasons, wake-ups, traces, verdicts and drops. Two runs with
//! the same digests did the same things.

use crate::codec;
use crate::genesis::Genesis;
use crate::mempool::MempoolConfig;
use crate::node::{Action, ChainOp, Event, Restored};
use crate::types::{Block, Hash, Height, NodeId, Transfer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The version of the log's format, in every `Session`.
pub const RECORD_FORMAT: u32 = 1;

/// The largest entry a log may hold (a `Restored` carries the whole account state).
pub const RECORD_ENTRY_BYTES_MAX: u64 = 1 << 30;

/// What the node was started with (its secret key excepted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub format: u32,
    /// The program that wrote the log (`tinychain 0.1.0`).
    pub software: String,
    pub genesis: Genesis,
    pub node_id: NodeId,
    pub mempool: MempoolConfig,
    pub unmeasured_metrics: (u16, u16),
}

/// One record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Entry {
    Session(Box<Session>),
    /// `Driver::start`.
    Start {
        now_ms: u64,
    },
    /// `Driver::step`.
    Step {
        now_ms: u64,
        event: Event,
    },
    /// `Driver::submit`.
    Submit {
        now_ms: u64,
        transfer: Transfer,
    },
    /// `Driver::finish_submits`.
    FinishSubmits,
    /// What the store answered the driver, in the order it asked.
    Read(StoreRead),
    /// The end of a call: how many actions the core returned during it, and their digest.
    Done {
        actions: u32,
        digest: Hash,
    },
}

/// A store's answer, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreRead {
    Restored(Box<Restored>),
    Journal(Vec<(Hash, Transfer)>),
    /// `journal_len` and `journal_capacity`, asked together.
    JournalRoom {
        len: u64,
        capacity: u64,
    },
    BlocksServed(Vec<Arc<Block>>),
    CommittedHeight(Option<Height>),
    CommittedAt(Option<(Hash, Height)>),
    /// `journal_add`: `None` written, `Some((held, max))` refused as full.
    JournalAdd(Option<(u64, u64)>),
}

impl StoreRead {
    /// The read's name, for a divergence message.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreRead::Restored(_) => "restored",
            StoreRead::Journal(_) => "journal",
            StoreRead::JournalRoom { .. } => "journal_room",
            StoreRead::BlocksServed(_) => "blocks_served",
            StoreRead::CommittedHeight(_) => "committed_height",
            StoreRead::CommittedAt(_) => "committed_at",
            StoreRead::JournalAdd(_) => "journal_add",
        }
    }
}

/// One entry as a frame: its length (u32 little-endian), then its encoding.
pub fn encode_frame(entry: &Entry) -> Vec<u8> {
    let body = codec::encode(entry);
    let length = u32::try_from(body.len()).expect("an entry is under 4 GiB");
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&length.to_le_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Why a log cannot be read further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The log ends inside a frame: what a node killed mid-write leaves. Everything before it
    /// is intact.
    #[error("the log ends inside entry {index} at byte {offset} (a node killed while writing leaves this)")]
    Truncated { index: usize, offset: usize },
    #[error("entry {index} at byte {offset} cannot be decoded: {reason}")]
    Malformed { index: usize, offset: usize, reason: String },
}

/// Decodes a log: every whole entry, then the error that stopped the reading, if any (entries
/// before it are kept).
pub fn decode_log(bytes: &[u8]) -> (Vec<Entry>, Option<RecordError>) {
    let mut entries = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let index = entries.len();
        let Some(header) = bytes.get(offset..offset + 4) else {
            return (entries, Some(RecordError::Truncated { index, offset }));
        };
        let length = u32::from_le_bytes(header.try_into().expect("four bytes")) as usize;
        let Some(body) = bytes.get(offset + 4..offset + 4 + length) else {
            return (entries, Some(RecordError::Truncated { index, offset }));
        };
        match codec::decode_limited::<Entry>("a record entry", body, RECORD_ENTRY_BYTES_MAX) {
            Ok(entry) => entries.push(entry),
            Err(error) => {
                return (entries, Some(RecordError::Malformed { index, offset, reason: error.to_string() }));
            }
        }
        offset += 4 + length;
    }
    (entries, None)
}

/// The running digest of a call's actions (see the module docs).
#[derive(Default)]
pub struct ActionDigest {
    hasher: blake3::Hasher,
    actions: u32,
}

impl ActionDigest {
    pub fn add(&mut self, action: &Action) {
        self.actions += 1;
        let hasher = &mut self.hasher;
        match action {
            Action::SendTo { peer, message } => {
                hasher.update(b"send");
                hasher.update(&peer.0);
                hasher.update(blake3::hash(&message.encode()).as_bytes());
            }
            Action::Broadcast { message, except } => {
                hasher.update(b"broadcast");
                hasher.update(&except.map_or([0; 32], |peer| peer.0));
                hasher.update(blake3::hash(&message.encode()).as_bytes());
            }
            Action::WakeAt(at_ms) => {
                hasher.update(b"wake");
                hasher.update(&at_ms.to_le_bytes());
            }
            Action::CommitBlocks(commit) => {
                hasher.update(b"commit");
                for op in &commit.ops {
                    match op {
                        ChainOp::Rollback { height, hash, .. } => {
                            hasher.update(b"rollback");
                            hasher.update(&height.to_le_bytes());
                            hasher.update(&hash.0);
                        }
                        ChainOp::Apply { hash, .. } => {
                            hasher.update(b"apply");
                            hasher.update(&hash.0);
                        }
                    }
                }
                hasher.update(&codec::encode(&(commit.tip, commit.justified, commit.finalized)));
            }
            Action::PersistReportState { last_vote, report_sequence } => {
                hasher.update(b"vote");
                hasher.update(&codec::encode(&(last_vote, report_sequence)));
            }
            Action::ServeBlocks { peer, from_height, to_height } => {
                hasher.update(b"serve");
                hasher.update(&peer.0);
                hasher.update(&codec::encode(&(from_height, to_height)));
            }
            Action::DisconnectPeer { peer, reason } => {
                hasher.update(b"disconnect");
                hasher.update(&peer.0);
                hasher.update(reason.to_string().as_bytes());
            }
            Action::TxAccepted { id } => {
                hasher.update(b"accepted");
                hasher.update(&id.0);
            }
            Action::TxRejected { id, reason } => {
                hasher.update(b"rejected");
                hasher.update(&id.0);
                hasher.update(reason.code().as_bytes());
            }
            Action::TxDropped(dropped) => {
                hasher.update(b"dropped");
                hasher.update(&dropped.id.0);
                hasher.update(dropped.reason.to_string().as_bytes());
            }
            Action::Trace(trace) => {
                hasher.update(b"trace");
                hasher.update(format!("{trace:?}").as_bytes());
            }
        }
    }

    /// The number of actions added and their digest; starts a new one.
    pub fn finish(&mut self) -> (u32, Hash) {
        let digest = Hash(*self.hasher.finalize().as_bytes());
        let actions = self.actions;
        *self = ActionDigest::default();
        (actions, digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Address;

    /// The layouts docs/record-format.md gives.
    #[test]
    fn entries_have_the_documented_layout() {
        let frame = encode_frame(&Entry::Start { now_ms: 5 });
        assert_eq!(frame, [12, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
        let step = codec::encode(&Entry::Step { now_ms: 7, event: Event::MetricsSampled { cpu: 300, net: 2 } });
        assert_eq!(step, [2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 44, 1, 2, 0]);
        assert_eq!(codec::encode(&Entry::FinishSubmits), [4, 0, 0, 0]);
        let done = codec::encode(&Entry::Done { actions: 3, digest: Hash([9; 32]) });
        assert_eq!(&done[..8], [6, 0, 0, 0, 3, 0, 0, 0]);
        assert_eq!(done.len(), 8 + 32);
        let read = codec::encode(&Entry::Read(StoreRead::JournalAdd(Some((1, 2)))));
        assert_eq!(read, [5, 0, 0, 0, 6, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        let tick = codec::encode(&Entry::Step { now_ms: 1, event: Event::PeerConnected { peer: Address([3; 32]) } });
        assert_eq!(&tick[12..16], [2, 0, 0, 0]);
    }

    #[test]
    fn a_log_decodes_to_its_entries_and_a_cut_or_damaged_one_says_where() {
        let entries = [Entry::Start { now_ms: 1 }, Entry::Step { now_ms: 2, event: Event::Tick }, Entry::FinishSubmits];
        let log: Vec<u8> = entries.iter().flat_map(encode_frame).collect();
        let (decoded, stopped) = decode_log(&log);
        assert_eq!(decoded.len(), 3);
        assert_eq!(stopped, None);
        let (decoded, stopped) = decode_log(&log[..log.len() - 1]);
        assert_eq!(decoded.len(), 2);
        assert!(matches!(stopped, Some(RecordError::Truncated { index: 2, .. })), "{stopped:?}");
        let mut damaged = log.clone();
        damaged[4] = 99; // the first entry's variant
        let (decoded, stopped) = decode_log(&damaged);
        assert!(decoded.is_empty());
        assert!(matches!(stopped, Some(RecordError::Malformed { index: 0, offset: 0, .. })), "{stopped:?}");
    }
}
