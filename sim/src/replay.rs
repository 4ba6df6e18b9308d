//! Replaying a record log (`tinychain_core::record`, docs/record-format.md) through the same
//! code the simulator runs: a fresh `Node` in the one `Driver`, over a store that answers what
//! the recorded store answered. Every call is made again with its recorded time and input, and
//! the digest of the actions it produced is compared with the recorded one. The first call whose
//! actions differ, or that asks the store something the recording did not, is the divergence,
//! reported with its context. A log holds one session per start of the node; each is replayed
//! from its own restore.

use crate::engine::{trace_line, trace_text};
use std::collections::VecDeque;
use std::sync::Arc;
use tinychain_core::crypto::{Keypair, SignatureCache};
use tinychain_core::driver::{CommittedTransfers, Driver, JournalAddError, Output, Store};
use tinychain_core::limits::SIGNATURE_CACHE_ENTRIES_MAX;
use tinychain_core::mempool::DroppedTransfer;
use tinychain_core::message::Message;
use tinychain_core::node::{Commit, Event, Node, NodeConfig, Restored};
use tinychain_core::record::{decode_log, Entry, RecordError, Session, StoreRead, TransferWindow, RECORD_FORMAT};
use tinychain_core::types::{Address, Block, Hash, Height, Transfer, Vote};
use tinychain_core::validate::block_hash;

/// The store of a replay: its reads are the recording's answers, in order; its writes are
/// checked through the digest of the actions that made them.
#[derive(Default)]
pub struct ReplayStore {
    reads: VecDeque<StoreRead>,
}

/// The replay asked the store something the recording did not answer at this point.
#[derive(Debug, thiserror::Error)]
#[error("the replay asked the store for {asked}; the recording's next answer is {recorded}")]
pub struct ReadMismatch {
    pub asked: &'static str,
    pub recorded: String,
}

impl ReplayStore {
    fn next(&mut self, asked: &'static str) -> Result<StoreRead, ReadMismatch> {
        match self.reads.pop_front() {
            Some(read) if read.kind() == asked => Ok(read),
            Some(read) => Err(ReadMismatch { asked, recorded: read.kind().to_string() }),
            None => Err(ReadMismatch { asked, recorded: "none (the recorded call asked no more)".to_string() }),
        }
    }
}

impl CommittedTransfers for ReplayStore {
    type Error = ReadMismatch;

    fn committed_height(&mut self, _id: &Hash, _transfer: &Transfer) -> Result<Option<Height>, ReadMismatch> {
        match self.next("committed_height")? {
            StoreRead::CommittedHeight(height) => Ok(height),
            _ => unreachable!("next checked the kind"),
        }
    }
    fn committed_at(&mut self, _from: &Address, _nonce: u64) -> Result<Option<(Hash, Height)>, ReadMismatch> {
        match self.next("committed_at")? {
            StoreRead::CommittedAt(found) => Ok(found),
            _ => unreachable!("next checked the kind"),
        }
    }
}

impl Store for ReplayStore {
    fn restored(&mut self) -> Result<Restored, ReadMismatch> {
        match self.next("restored")? {
            StoreRead::Restored(restored) => Ok(*restored),
            _ => unreachable!("next checked the kind"),
        }
    }
    fn commit(&mut self, _commit: &Commit) -> Result<(), ReadMismatch> {
        Ok(())
    }
    fn persist_report_state(&mut self, _last_vote: Option<Vote>, _report_sequence: u64) -> Result<(), ReadMismatch> {
        Ok(())
    }
    fn blocks_to_serve(&mut self, _from: Height, _to: Height) -> Result<Vec<Arc<Block>>, ReadMismatch> {
        match self.next("blocks_served")? {
            StoreRead::BlocksServed(blocks) => Ok(blocks),
            _ => unreachable!("next checked the kind"),
        }
    }
    fn record_dropped(&mut self, _dropped: &[DroppedTransfer]) -> Result<(), ReadMismatch> {
        Ok(())
    }
    fn journal(&mut self) -> Result<Vec<(Hash, Transfer)>, ReadMismatch> {
        match self.next("journal")? {
            StoreRead::Journal(entries) => Ok(entries),
            _ => unreachable!("next checked the kind"),
        }
    }
    fn journal_room(&mut self) -> (usize, usize) {
        // The room is asked without a way to fail: a missing answer shows as leftover or
        // mismatched reads at the end of the call, and in its digest.
        match self.next("journal_room") {
            Ok(StoreRead::JournalRoom { len, capacity }) => (len as usize, capacity as usize),
            _ => (0, usize::MAX),
        }
    }
    fn journal_add(&mut self, _entries: &[(Hash, Transfer)]) -> Result<(), JournalAddError<ReadMismatch>> {
        match self.next("journal_add").map_err(JournalAddError::Store)? {
            StoreRead::JournalAdd(None) => Ok(()),
            StoreRead::JournalAdd(Some((held, max))) => {
                Err(JournalAddError::Full { held: held as usize, max: max as usize })
            }
            _ => unreachable!("next checked the kind"),
        }
    }
    fn journal_remove(&mut self, _entries: &[(Hash, Transfer)]) -> Result<(), ReadMismatch> {
        Ok(())
    }
}

/// Where and how a replay first differed from its recording.
#[derive(Clone, Debug)]
pub struct Divergence {
    /// The index of the call's entry in the log.
    pub entry: usize,
    /// The session (start of the node) it belongs to, from 1.
    pub session: usize,
    /// The call: its time on the node's clock and input.
    pub call: String,
    /// What differed.
    pub what: String,
    /// The calls just before it, oldest first.
    pub context: Vec<String>,
    /// What the replay did in that call.
    pub replayed: Vec<String>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "the replay diverged at entry {} (session {}): {}", self.entry, self.session, self.call)?;
        writeln!(f, "  {}", self.what)?;
        if !self.context.is_empty() {
            writeln!(f, "  the calls before it:")?;
            for call in &self.context {
                writeln!(f, "    {call}")?;
            }
        }
        writeln!(f, "  what the replay did in it:")?;
        for output in &self.replayed {
            writeln!(f, "    {output}")?;
        }
        Ok(())
    }
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ReplayReport {
    pub sessions: usize,
    /// Calls replayed and found identical.
    pub calls: u64,
    /// Actions in those calls.
    pub actions: u64,
    pub divergence: Option<Divergence>,
    /// Why the log could not be read to its end (a truncated last entry is what a killed node
    /// leaves, and is not a divergence).
    pub stopped: Option<RecordError>,
    /// The replay in the simulator's trace format, when asked for.
    pub trace_lines: Vec<String>,
}

/// Why a log cannot be replayed at all.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the log does not start with a session entry: it is not a tinychain record log")]
    NoSession,
    #[error("the log's format is version {found}; this program reads version {RECORD_FORMAT}")]
    Format { found: u32 },
    #[error("the key given is for node {given}, but session {session} was recorded by node {recorded}")]
    WrongKey { session: usize, given: Address, recorded: Address },
}

/// Replays a whole log with the node's key. `keep_trace`: also render it as a simulator trace.
pub fn replay(bytes: &[u8], key: &Keypair, keep_trace: bool) -> Result<ReplayReport, ReplayError> {
    let (entries, stopped) = decode_log(bytes);
    let mut report = ReplayReport { stopped, ..ReplayReport::default() };
    if !matches!(entries.first(), Some(Entry::Session(_))) {
        return Err(ReplayError::NoSession);
    }
    let cache = Arc::new(SignatureCache::new(SIGNATURE_CACHE_ENTRIES_MAX));
    let mut replaying: Option<(Driver<ReplayStore>, Box<Session>)> = None;
    // The transfers the session recorded in full, as its writer kept them.
    let mut window: TransferWindow<Transfer> = TransferWindow::default();
    let mut context: VecDeque<String> = VecDeque::new();
    let mut index = 0;
    while index < entries.len() {
        let entry = &entries[index];
        // A received message written compactly: rebuilt from the window (a damaged log may name
        // a transfer it does not hold).
        let received = match window.event_of(entry) {
            Ok(event) => event,
            Err(id) => {
                report.divergence = Some(Divergence {
                    entry: index,
                    session: report.sessions,
                    call: "a received message".to_string(),
                    what: format!("the log names transfer {id} by id, but no earlier entry of the session holds it"),
                    context: context.into_iter().collect(),
                    replayed: Vec::new(),
                });
                return Ok(report);
            }
        };
        let (now_ms, call) = match entry {
            Entry::Session(session) => {
                if session.format != RECORD_FORMAT {
                    return Err(ReplayError::Format { found: session.format });
                }
                report.sessions += 1;
                if key.address() != session.node_id {
                    return Err(ReplayError::WrongKey {
                        session: report.sessions,
                        given: key.address(),
                        recorded: session.node_id,
                    });
                }
                let config = NodeConfig {
                    genesis: session.genesis.clone(),
                    key: key.clone(),
                    verify_threads: 1,
                    mempool: session.mempool.clone(),
                    unmeasured_metrics: session.unmeasured_metrics,
                };
                let mut driver = Driver::new(Node::new(config, cache.clone()), ReplayStore::default());
                driver.digest_only();
                replaying = Some((driver, session.clone()));
                window = TransferWindow::default();
                context.clear();
                index += 1;
                continue;
            }
            Entry::Start { now_ms } => (*now_ms, "start (restore from storage)".to_string()),
            Entry::Step { .. } | Entry::Received { .. } => {
                let (now_ms, event) = received.as_ref().expect("event_of reads every step");
                (*now_ms, describe_event(event))
            }
            Entry::Submit { now_ms, transfer } => {
                let id = tinychain_core::validate::transfer_id(transfer);
                window.insert(id, transfer.clone());
                (*now_ms, format!("submit {id} nonce {}", transfer.nonce))
            }
            Entry::FinishSubmits => (0, "finish submits (journal write)".to_string()),
            Entry::Read(_) | Entry::Done { .. } => {
                // Only reachable in a log whose call entry was lost: skip to the next call.
                index += 1;
                continue;
            }
        };
        let Some((driver, session)) = replaying.as_mut() else { return Err(ReplayError::NoSession) };
        // The call's recorded reads, then its Done (absent: the log ends inside the call).
        let mut end = index + 1;
        let mut reads = VecDeque::new();
        while let Some(Entry::Read(read)) = entries.get(end) {
            reads.push_back(read.clone());
            end += 1;
        }
        let Some(Entry::Done { actions, digest }) = entries.get(end) else { break };
        driver.store.reads = reads;
        let outcome = match entry {
            Entry::Start { now_ms } => driver.start(*now_ms).map(|_| ()),
            Entry::Step { .. } | Entry::Received { .. } => {
                let (now_ms, event) = received.expect("event_of reads every step");
                driver.step(now_ms, event).map(|_| ())
            }
            Entry::Submit { now_ms, transfer } => driver.submit(*now_ms, transfer.clone()).map(|_| ()),
            Entry::FinishSubmits => driver.finish_submits().map(|_| ()),
            _ => unreachable!("only calls get here"),
        };
        let outputs = driver.take_outputs();
        let time = if now_ms == 0 { "--".to_string() } else { format!("t={now_ms}") };
        let call = format!("{time} {call}");
        let genesis = &session.genesis;
        let what = match outcome {
            Err(mismatch) => Some(mismatch.to_string()),
            Ok(()) if !driver.store.reads.is_empty() => Some(format!(
                "the recording's store answered {} more reads in this call (first: {})",
                driver.store.reads.len(),
                driver.store.reads[0].kind()
            )),
            Ok(()) => {
                let (replayed_actions, replayed_digest) = driver.last_digest().expect("digest_only is on");
                (replayed_actions != *actions || replayed_digest != *digest).then(|| {
                    format!(
                        "recorded {actions} actions with digest {digest}; the replay made {replayed_actions} actions \
                         with digest {replayed_digest}"
                    )
                })
            }
        };
        if let Some(what) = what {
            report.divergence = Some(Divergence {
                entry: index,
                session: report.sessions,
                call,
                what,
                context: context.into_iter().collect(),
                replayed: outputs.iter().map(|output| describe_output(output, genesis)).collect(),
            });
            return Ok(report);
        }
        report.calls += 1;
        report.actions += u64::from(*actions);
        if keep_trace {
            let at_ms = now_ms.saturating_sub(genesis.genesis_time_ms);
            let who = genesis.validator_index(&session.node_id).map_or_else(|| "?".to_string(), |i| format!("n{i}"));
            let index_of = |id: &Address| genesis.validator_index(id).unwrap_or(usize::MAX);
            for output in &outputs {
                if let Output::Trace(event) = output {
                    if let Some(text) = trace_text(event, &index_of) {
                        report.trace_lines.push(trace_line(at_ms, &who, &text));
                    }
                }
            }
        }
        context.push_back(call);
        if context.len() > 5 {
            context.pop_front();
        }
        index = end + 1;
    }
    Ok(report)
}

/// A call's event, short.
fn describe_event(event: &Event) -> String {
    match event {
        Event::Tick => "tick".to_string(),
        Event::MessageReceived { from, message } => format!("message from {from}: {}", describe_message(message)),
        Event::PeerConnected { peer } => format!("peer connected {peer}"),
        Event::PeerDisconnected { peer } => format!("peer disconnected {peer}"),
        Event::TxSubmitted(transfer) => format!("transfer submitted, nonce {}", transfer.nonce),
        Event::MetricsSampled { cpu, net } => format!("metrics sampled cpu={cpu} net={net}"),
        Event::Restored(restored) => format!("restored at height {}", restored.state.tip.height),
    }
}

fn describe_message(message: &Message) -> String {
    match message {
        Message::Block(block) => {
            format!("block h={} {}", block.header.height, block_hash(&block.header))
        }
        Message::Blocks(blocks) => match (blocks.first(), blocks.last()) {
            (Some(first), Some(last)) => {
                format!("{} blocks h={}..={}", blocks.len(), first.header.height, last.header.height)
            }
            _ => "no blocks".to_string(),
        },
        other => other.kind().to_string(),
    }
}

/// An output of the replay, short.
fn describe_output(output: &Output, genesis: &tinychain_core::genesis::Genesis) -> String {
    let name = |id: &Address| genesis.validator_name(id).map_or_else(|| id.to_string(), str::to_string);
    match output {
        Output::Send { peer, message } => format!("send to {}: {}", name(peer), describe_message(message)),
        Output::Broadcast { message, except } => match except {
            Some(except) => format!("broadcast (not to {}): {}", name(except), describe_message(message)),
            None => format!("broadcast: {}", describe_message(message)),
        },
        Output::Disconnect { peer, reason } => format!("disconnect {}: {reason}", name(peer)),
        Output::WakeAt(at_ms) => format!("wake at {at_ms}"),
        Output::Trace(event) => format!("trace {event:?}"),
        Output::Committed(commit) => format!(
            "commit {} ops, tip h={} {}, final h={}",
            commit.ops.len(),
            commit.tip.height,
            commit.tip.hash,
            commit.finalized.height
        ),
        Output::Dropped(dropped) => format!("dropped {}: {}", dropped.id, dropped.reason),
    }
}
