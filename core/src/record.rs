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
use crate::message::Message;
use crate::node::{Action, ChainOp, Event, Restored};
use crate::types::{Block, Hash, Height, NodeId, Transfer};
use crate::validate::transfer_id;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The version of the log's format, in every `Session` (3: messages may be `Message::Links`).
pub const RECORD_FORMAT: u32 = 3;

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
    /// `Driver::step` with received transfers or block(s), written compactly: each transfer the
    /// session's `TransferWindow` holds is written by its id (see the module docs).
    Received {
        now_ms: u64,
        from: NodeId,
        message: RecordedMessage,
    },
}

/// A received message with its transfers written in full or by id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RecordedMessage {
    /// A batch of gossiped transfers.
    Transfers(Vec<RecordedTransfer>),
    /// A block: its header, reports and evidence (`transfers` empty), then its transfers.
    Block(Box<RecordedBlock>),
    Blocks(Vec<RecordedBlock>),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecordedBlock {
    /// The block with no transfers.
    pub block: Block,
    pub transfers: Vec<RecordedTransfer>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RecordedTransfer {
    Full(Transfer),
    /// Recorded earlier in the session: its id.
    Again(Hash),
}

/// How many transfers a session's window holds (at 5,000 transfers/s, the last 20 s: gossip
/// copies and blocks arrive well within that; a later copy is written in full).
pub const RECORD_TRANSFER_WINDOW: usize = 100_000;

/// The transfers a session recorded in full, the last `RECORD_TRANSFER_WINDOW` of them: the
/// writer (`V = ()`) and the reader (`V = Transfer`) fill it in the same order, so a transfer
/// written by id is always in the reader's window. Looked up only, never iterated.
pub struct TransferWindow<V> {
    held: std::collections::HashMap<Hash, V>,
    order: std::collections::VecDeque<Hash>,
}

impl<V> Default for TransferWindow<V> {
    fn default() -> Self {
        TransferWindow { held: std::collections::HashMap::new(), order: std::collections::VecDeque::new() }
    }
}

impl<V> TransferWindow<V> {
    pub fn get(&self, id: &Hash) -> Option<&V> {
        self.held.get(id)
    }

    /// Adds a transfer written in full (nothing when held already), forgetting the oldest past
    /// the window.
    pub fn insert(&mut self, id: Hash, value: V) {
        if self.held.contains_key(&id) {
            return;
        }
        self.held.insert(id, value);
        self.order.push_back(id);
        if self.order.len() > RECORD_TRANSFER_WINDOW {
            if let Some(oldest) = self.order.pop_front() {
                self.held.remove(&oldest);
            }
        }
    }
}

impl TransferWindow<()> {
    /// The entry recording `event` at `now_ms`: compact for received transfers and blocks.
    pub fn entry_for(&mut self, now_ms: u64, event: &Event) -> Entry {
        let (from, message) = match event {
            Event::MessageReceived { from, message } => (*from, message),
            other => return Entry::Step { now_ms, event: other.clone() },
        };
        let message = match message {
            Message::Transfers(transfers) => {
                RecordedMessage::Transfers(transfers.iter().map(|transfer| self.record_transfer(transfer)).collect())
            }
            Message::Block(block) => RecordedMessage::Block(Box::new(self.record_block(block))),
            Message::Blocks(blocks) => {
                RecordedMessage::Blocks(blocks.iter().map(|block| self.record_block(block)).collect())
            }
            _ => return Entry::Step { now_ms, event: event.clone() },
        };
        Entry::Received { now_ms, from, message }
    }

    fn record_transfer(&mut self, transfer: &Transfer) -> RecordedTransfer {
        let id = transfer_id(transfer);
        if self.get(&id).is_some() {
            RecordedTransfer::Again(id)
        } else {
            self.insert(id, ());
            RecordedTransfer::Full(transfer.clone())
        }
    }

    fn record_block(&mut self, block: &Block) -> RecordedBlock {
        let transfers = block.transfers.iter().map(|transfer| self.record_transfer(transfer)).collect();
        let bare = Block {
            header: block.header.clone(),
            transfers: Vec::new(),
            reports: block.reports.clone(),
            evidence: block.evidence.clone(),
        };
        RecordedBlock { block: bare, transfers }
    }
}

impl TransferWindow<Transfer> {
    /// The event a `Step` or `Received` entry records (`None` for other entries), remembering
    /// its transfers as the writer did. `Err` is the id of a transfer written by an id the
    /// window does not hold: a damaged log.
    pub fn event_of(&mut self, entry: &Entry) -> Result<Option<(u64, Event)>, Hash> {
        match entry {
            Entry::Step { now_ms, event } => Ok(Some((*now_ms, event.clone()))),
            Entry::Received { now_ms, from, message } => {
                let message = match message {
                    RecordedMessage::Transfers(transfers) => Message::Transfers(
                        transfers.iter().map(|transfer| self.replay_transfer(transfer)).collect::<Result<_, _>>()?,
                    ),
                    RecordedMessage::Block(block) => Message::Block(Arc::new(self.rebuild(block)?)),
                    RecordedMessage::Blocks(blocks) => Message::Blocks(
                        blocks.iter().map(|block| self.rebuild(block).map(Arc::new)).collect::<Result<_, _>>()?,
                    ),
                };
                Ok(Some((*now_ms, Event::MessageReceived { from: *from, message })))
            }
            _ => Ok(None),
        }
    }

    fn replay_transfer(&mut self, recorded: &RecordedTransfer) -> Result<Transfer, Hash> {
        match recorded {
            RecordedTransfer::Full(transfer) => {
                self.insert(transfer_id(transfer), transfer.clone());
                Ok(transfer.clone())
            }
            RecordedTransfer::Again(id) => self.get(id).cloned().ok_or(*id),
        }
    }

    fn rebuild(&mut self, recorded: &RecordedBlock) -> Result<Block, Hash> {
        let mut block = recorded.block.clone();
        block.transfers =
            recorded.transfers.iter().map(|transfer| self.replay_transfer(transfer)).collect::<Result<_, _>>()?;
        Ok(block)
    }
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
    fn transfer(nonce: u64) -> Transfer {
        Transfer {
            chain_id: "t".into(),
            from: Address([1; 32]),
            to: Address([2; 32]),
            amount: Default::default(),
            fee: Default::default(),
            nonce,
            signature: crate::types::Signature([nonce as u8; 64]),
        }
    }

    fn received(message: Message) -> Event {
        Event::MessageReceived { from: Address([4; 32]), message }
    }

    /// What the writer writes by id, the reader rebuilds to the same event; a copy past the
    /// window is written in full again, and an id the reader does not hold is an error.
    #[test]
    fn the_transfer_window_writes_copies_by_id_and_reads_them_back() {
        let mut writer = TransferWindow::<()>::default();
        let mut reader = TransferWindow::<Transfer>::default();
        let mut roundtrip = |event: Event| {
            let entry = writer.entry_for(9, &event);
            let entry: Entry = codec::decode("entry", &codec::encode(&entry)).expect("decodes");
            let (now_ms, read) = reader.event_of(&entry).expect("ids held").expect("an event");
            assert_eq!((now_ms, codec::encode(&read)), (9, codec::encode(&event)));
            entry
        };
        let first = roundtrip(received(Message::Transfers(vec![transfer(1)])));
        let Entry::Received { message: RecordedMessage::Transfers(recorded), .. } = first else { panic!("{first:?}") };
        assert!(matches!(recorded[..], [RecordedTransfer::Full(_)]), "first sight is written in full");
        let again = roundtrip(received(Message::Transfers(vec![transfer(3), transfer(1)])));
        let Entry::Received { message: RecordedMessage::Transfers(recorded), .. } = again else { panic!("{again:?}") };
        assert!(matches!(recorded[..], [RecordedTransfer::Full(_), RecordedTransfer::Again(_)]), "a copy by its id");
        let mut block = Block {
            header: crate::types::BlockHeader {
                chain_id: "t".into(),
                height: 1,
                prev_hash: Hash([0; 32]),
                timestamp_ms: 0,
                producer: Address([5; 32]),
                rank: 0,
                tx_root: Hash([0; 32]),
                report_root: Hash([0; 32]),
                evidence_root: Hash([0; 32]),
                state_root: Hash([0; 32]),
                signature: crate::types::Signature([0; 64]),
            },
            transfers: vec![transfer(1), transfer(2)],
            reports: Vec::new(),
            evidence: Vec::new(),
        };
        let entry = roundtrip(received(Message::Block(Arc::new(block.clone()))));
        let Entry::Received { message: RecordedMessage::Block(recorded), .. } = entry else { panic!("{entry:?}") };
        assert!(recorded.block.transfers.is_empty());
        assert!(matches!(recorded.transfers[..], [RecordedTransfer::Again(_), RecordedTransfer::Full(_)]));
        block.transfers.reverse();
        roundtrip(received(Message::Blocks(vec![Arc::new(block)])));

        // Past the window the oldest is forgotten on both sides and written in full again.
        for nonce in 4..(RECORD_TRANSFER_WINDOW as u64 + 4) {
            writer.insert(transfer_id(&transfer(nonce)), ());
            reader.insert(transfer_id(&transfer(nonce)), transfer(nonce));
        }
        let late = writer.entry_for(9, &received(Message::Transfers(vec![transfer(1)])));
        let Entry::Received { message: RecordedMessage::Transfers(recorded), .. } = late else { panic!("{late:?}") };
        assert!(matches!(recorded[..], [RecordedTransfer::Full(_)]), "forgotten, so written in full again");
        let unknown = Entry::Received {
            now_ms: 1,
            from: Address([4; 32]),
            message: RecordedMessage::Transfers(vec![RecordedTransfer::Again(Hash([7; 32]))]),
        };
        assert_eq!(reader.event_of(&unknown).err(), Some(Hash([7; 32])));
    }
}
