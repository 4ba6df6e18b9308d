//! The one driver: the only interpreter of the core's actions. It owns a `Node` and the node's
//! `Store` and is driven by a host, which supplies the time, the events and the transfers its
//! clients submit, and carries out the outward effects the driver hands back (`Output`). The
//! server (`tinychain-node`) hosts it with TLS, the wall clock and redb; the simulator with its
//! network model, virtual time and `testkit::ModelStorage`; `testkit::LocalNet` with a fixed
//! latency. So the rules below run under the simulator's seed sweep exactly as on a server.
//!
//! The driver does no I/O of its own: the store is a trait the host implements, and every
//! outward effect is returned, in order, for the host to carry out.
//!
//! # What one step does (`Driver::carry_out`)
//!
//! - Storage first. Every store write of a step (`CommitBlocks`, `PersistReportState`, the drop
//!   records) happens inside the step; outward effects are only returned. So nothing is sent
//!   that the store does not hold, and a vote is stored before the report that carries it
//!   leaves. Consecutive `CommitBlocks` (with only traces and drops between them, as when a batch
//!   of synced blocks is applied one by one) are written as one commit: the same ops in the same
//!   order, so the store passes through fewer states but never a partial one (one fsync per
//!   synced batch on a server).
//! - `ServeBlocks` is answered from the store, as a `Send` of `Message::Blocks`.
//! - `TxDropped`: collected over the step and written with one `Store::record_dropped` after the
//!   step's commits (which also forgets their journal entries).
//! - `TxAccepted` / `TxRejected`: the verdicts, returned to the caller of `submit`.
//! - `WakeAt`, `SendTo`, `Broadcast`, `DisconnectPeer`, `Trace`: handed to the host in order.
//! - A store error stops the driver: the core already believes the write happened, and running
//!   on would let memory and disk disagree. The host stops; a restart recovers from the store.
//!
//! # The pending-transfer journal
//!
//! A transfer the node accepted from its own client is in the store's journal *before* the
//! client hears "accepted", so a crash cannot lose it silently. `submit` steps the core and keeps
//! the accepted transfer aside; `finish_submits` writes all of them with one `journal_add` (one
//! fsync for a batch of RPC calls) and says which promises could not be kept (a full journal).
//! A full journal refuses further submits before the core sees them. The store's commit that
//! makes a block final deletes the entries of the (sender, nonce) slots it used; a drop record
//! deletes its entry.
//!
//! After the restore (`start`) the driver reads the journal back: an entry whose transfer is
//! committed stays until its block is final (a reorganisation could still return it to the
//! mempool), one whose nonce another committed transfer took is recorded as dropped
//! (`DropReason::NonceTaken`), and the rest are submitted to the core again (the core announces
//! its pool to each peer as it connects). One the core refuses before the first mempool sync is
//! over is tried once more after it (its predecessor may be pending at a peer); refused then,
//! it is recorded as `DropReason::RefusedAfterRestart`.

use crate::mempool::{DropReason, DroppedTransfer};
use crate::message::Message;
use crate::node::{Action, Commit, DisconnectReason, Event, Node, Restored, TraceEvent, TxRejection};
use crate::record::{ActionDigest, Entry, StoreRead, TransferWindow};
use crate::types::{Address, Block, Hash, Height, NodeId, Transfer, Vote};
use crate::validate::transfer_id;
use std::sync::Arc;

/// What the store says about the transfers committed on the canonical chain, as
/// `classify_journal_entry` asks it.
pub trait CommittedTransfers {
    type Error: std::error::Error + Send + Sync + 'static;

    /// The height of the canonical block that holds this very transfer (`id` is its id).
    fn committed_height(&mut self, id: &Hash, transfer: &Transfer) -> Result<Option<Height>, Self::Error>;
    /// The canonical transfer that used (`from`, `nonce`), and its height.
    fn committed_at(&mut self, from: &Address, nonce: u64) -> Result<Option<(Hash, Height)>, Self::Error>;
}

/// What a node keeps across restarts, as the driver uses it. Every write is durable when it
/// returns.
pub trait Store: CommittedTransfers {
    /// What a starting node loads: the event `Event::Restored` carries.
    fn restored(&mut self) -> Result<Restored, Self::Error>;
    /// Writes the blocks applied and rolled back, and the new tip, justified and final
    /// checkpoints, in one transaction; deletes the journal entries whose (sender, nonce) a
    /// newly final block used.
    fn commit(&mut self, commit: &Commit) -> Result<(), Self::Error>;
    fn persist_report_state(&mut self, last_vote: Option<Vote>, report_sequence: u64) -> Result<(), Self::Error>;
    /// The stored canonical blocks from `from_height` to `to_height`, stopping at the first
    /// missing one and cut to `limits::SYNC_RESPONSE_BYTES_MAX` (at least one block).
    fn blocks_to_serve(&mut self, from_height: Height, to_height: Height) -> Result<Vec<Arc<Block>>, Self::Error>;
    /// Records why transfers were dropped, and deletes their journal entries.
    fn record_dropped(&mut self, dropped: &[DroppedTransfer]) -> Result<(), Self::Error>;

    /// Every journal entry, ordered by sender, nonce, then id (the resubmission order).
    fn journal(&mut self) -> Result<Vec<(Hash, Transfer)>, Self::Error>;
    /// How many entries the journal holds now, and the most it may hold.
    fn journal_room(&mut self) -> (usize, usize);
    /// Adds entries in one durable write, or refuses all of them with `JournalAddError::Full`.
    fn journal_add(&mut self, entries: &[(Hash, Transfer)]) -> Result<(), JournalAddError<Self::Error>>;
    fn journal_remove(&mut self, entries: &[(Hash, Transfer)]) -> Result<(), Self::Error>;
}

/// Why `Store::journal_add` wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum JournalAddError<E> {
    #[error("the pending-transfer journal holds {held} transfers and may hold at most {max}")]
    Full { held: usize, max: usize },
    #[error(transparent)]
    Store(E),
}

/// An outward effect of a step, for the host to carry out in order (after the step's store
/// writes, which the driver has already made).
#[derive(Clone, Debug)]
pub enum Output {
    Send {
        peer: NodeId,
        message: Message,
    },
    Broadcast {
        message: Message,
        except: Option<NodeId>,
    },
    Disconnect {
        peer: NodeId,
        reason: DisconnectReason,
    },
    /// The core wants a `Tick` at this time on the node's clock (the latest one wins).
    WakeAt(u64),
    Trace(TraceEvent),
    /// A commit, already written to the store (consecutive commits of a step merged).
    Committed(Box<Commit>),
    /// A transfer left the mempool for good; its drop record is already written.
    Dropped(DroppedTransfer),
}

/// Why a submitted transfer was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitRefusal {
    /// The core refused it.
    #[error(transparent)]
    Rejected(TxRejection),
    /// The journal is full: the transfer was refused before the core saw it, or (from
    /// `finish_submits`) it is pending but the promise to keep it could not be written.
    #[error(
        "the pending-transfer journal is full ({held} of {max}): this node cannot promise to keep another \
         transfer; retry after some blocks"
    )]
    JournalFull { held: usize, max: usize },
    /// The core answered with no verdict on it (a bug).
    #[error("the node gave no verdict on the transfer")]
    NoVerdict,
}

/// What settling journal entries did (`start` and the retry after the first mempool sync).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JournalSettled {
    /// Entries pending again (submitted now, or fetched from a peer meanwhile).
    pub resubmitted: usize,
    /// Entries whose transfer is on the chain.
    pub committed: usize,
    /// Entries recorded as dropped.
    pub dropped: usize,
    /// Entries refused before the first mempool sync, to be tried once more after it.
    pub deferred: usize,
}

/// The driver: a node, its store, and what is owed between calls.
pub struct Driver<S: Store> {
    pub node: Node,
    pub store: S,
    outputs: Vec<Output>,
    /// Accepted by `submit`, not yet in the journal (`finish_submits` writes them).
    unjournaled: Vec<(Hash, Transfer)>,
    /// Journal entries the core refused when resubmitted before its first mempool sync was
    /// over: tried once more when it is.
    deferred_journal: Vec<(Hash, Transfer)>,
    /// Present when recording (`record`) or replaying (`digest_only`).
    recorder: Option<Recorder>,
}

/// The record of the calls into the driver (see `record`).
struct Recorder {
    /// Whether to keep the entries (recording) or only the digests (replaying).
    keep_entries: bool,
    entries: Vec<Entry>,
    /// The transfers recorded in full this session, so later copies are written by id.
    window: TransferWindow<()>,
    digest: ActionDigest,
    /// The number of actions and the digest of the last call that finished.
    last: (u32, Hash),
}

impl<S: Store> Driver<S> {
    pub fn new(node: Node, store: S) -> Driver<S> {
        Driver {
            node,
            store,
            outputs: Vec::new(),
            unjournaled: Vec::new(),
            deferred_journal: Vec::new(),
            recorder: None,
        }
    }

    /// Records every call from now on, with the store's answers and the digest of the actions
    /// (`record`); the host takes the entries with `take_records` and appends them to its log.
    pub fn record(&mut self) {
        self.recorder = Some(Recorder {
            keep_entries: true,
            entries: Vec::new(),
            window: TransferWindow::default(),
            digest: ActionDigest::default(),
            last: Default::default(),
        });
    }

    /// Computes only the digest of each call's actions (`last_digest`), as a replay compares.
    pub fn digest_only(&mut self) {
        self.recorder = Some(Recorder {
            keep_entries: false,
            entries: Vec::new(),
            window: TransferWindow::default(),
            digest: ActionDigest::default(),
            last: Default::default(),
        });
    }

    /// The record entries since the last call (empty when not recording).
    pub fn take_records(&mut self) -> Vec<Entry> {
        self.recorder.as_mut().map(|recorder| std::mem::take(&mut recorder.entries)).unwrap_or_default()
    }

    /// Stops recording (the host could not write its log).
    pub fn stop_recording(&mut self) {
        self.recorder = None;
    }

    /// The number of actions and the digest of the last finished call (when recording or
    /// replaying).
    pub fn last_digest(&self) -> Option<(u32, Hash)> {
        self.recorder.as_ref().map(|recorder| recorder.last)
    }

    fn note(&mut self, entry: impl FnOnce() -> Entry) {
        if let Some(recorder) = self.recorder.as_mut().filter(|recorder| recorder.keep_entries) {
            recorder.entries.push(entry());
        }
    }

    fn note_read(&mut self, read: impl FnOnce() -> StoreRead) {
        self.note(|| Entry::Read(read()));
    }

    /// Ends a call: its digest becomes `last_digest`, and is recorded.
    fn done(&mut self) {
        if let Some(recorder) = self.recorder.as_mut() {
            let (actions, digest) = recorder.digest.finish();
            recorder.last = (actions, digest);
            if recorder.keep_entries {
                recorder.entries.push(Entry::Done { actions, digest });
            }
        }
    }

    /// The outward effects owed since the last call, in order.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// Starts the node from its store: `Event::Restored` with what the store holds, then the
    /// journal settled against the restored chain (see the module docs). Returns what became of
    /// the journal.
    pub fn start(&mut self, now_ms: u64) -> Result<JournalSettled, S::Error> {
        self.note(|| Entry::Start { now_ms });
        let settled = self.start_inner(now_ms);
        self.done();
        settled
    }

    fn start_inner(&mut self, now_ms: u64) -> Result<JournalSettled, S::Error> {
        let restored = self.store.restored()?;
        self.note_read(|| StoreRead::Restored(Box::new(restored.clone())));
        self.step_inner(now_ms, Event::Restored(Box::new(restored)))?;
        let journal = self.store.journal()?;
        self.note_read(|| StoreRead::Journal(journal.clone()));
        let refusals_are_final = self.node.is_mempool_synced();
        self.settle_journal(now_ms, journal, refusals_are_final)
    }

    /// Steps the core with one event and carries out its actions. Once the first mempool sync is
    /// over, the journal entries deferred at the start are tried again (returned when there
    /// were any).
    pub fn step(&mut self, now_ms: u64, event: Event) -> Result<Option<JournalSettled>, S::Error> {
        if let Some(recorder) = self.recorder.as_mut().filter(|recorder| recorder.keep_entries) {
            let entry = recorder.window.entry_for(now_ms, &event);
            recorder.entries.push(entry);
        }
        let settled = self.step_inner(now_ms, event);
        self.done();
        settled
    }

    fn step_inner(&mut self, now_ms: u64, event: Event) -> Result<Option<JournalSettled>, S::Error> {
        let actions = self.node.step(now_ms, event);
        self.carry_out(actions)?;
        if !self.deferred_journal.is_empty() && self.node.is_mempool_synced() {
            let deferred = std::mem::take(&mut self.deferred_journal);
            return self.settle_journal(now_ms, deferred, true).map(Some);
        }
        Ok(None)
    }

    /// A transfer from this node's own client: refused at once when the journal is full, else
    /// stepped into the core. An accepted one waits for `finish_submits` to be journaled;
    /// answer the client only after that.
    pub fn submit(&mut self, now_ms: u64, transfer: Transfer) -> Result<Result<Hash, SubmitRefusal>, S::Error> {
        if let Some(recorder) = self.recorder.as_mut().filter(|recorder| recorder.keep_entries) {
            recorder.window.insert(transfer_id(&transfer), ());
            recorder.entries.push(Entry::Submit { now_ms, transfer: transfer.clone() });
        }
        let verdict = self.submit_inner(now_ms, transfer);
        self.done();
        verdict
    }

    fn submit_inner(&mut self, now_ms: u64, transfer: Transfer) -> Result<Result<Hash, SubmitRefusal>, S::Error> {
        let (len, max) = self.store.journal_room();
        self.note_read(|| StoreRead::JournalRoom { len: len as u64, capacity: max as u64 });
        let held = len.saturating_add(self.unjournaled.len());
        if held >= max {
            // Refused before the core sees it: the transfer is in no mempool, so the refusal is
            // the whole truth.
            return Ok(Err(SubmitRefusal::JournalFull { held, max }));
        }
        let id = transfer_id(&transfer);
        let actions = self.node.step(now_ms, Event::TxSubmitted(transfer.clone()));
        let verdicts = self.carry_out(actions)?;
        let verdict = verdict_for(&verdicts, &id);
        if verdict.is_ok() {
            self.unjournaled.push((id, transfer));
        }
        Ok(verdict)
    }

    /// Writes every transfer accepted since the last call to the journal, in one write. Returns
    /// the ids whose promise could not be written (the journal was full after all): those
    /// clients are told so, though the transfer is pending and may still be included.
    pub fn finish_submits(&mut self) -> Result<Vec<(Hash, SubmitRefusal)>, S::Error> {
        if self.unjournaled.is_empty() {
            // Nothing to write, nothing to record.
            return Ok(Vec::new());
        }
        self.note(|| Entry::FinishSubmits);
        let unkept = self.finish_submits_inner();
        self.done();
        unkept
    }

    fn finish_submits_inner(&mut self) -> Result<Vec<(Hash, SubmitRefusal)>, S::Error> {
        let accepted = std::mem::take(&mut self.unjournaled);
        // A transfer no longer pending was either committed already (this node produced a
        // block between two submits), and is journaled until its block is final like any
        // other, or dropped (a later submit replaced it), and its drop record is its answer.
        let mut entries = Vec::with_capacity(accepted.len());
        for (id, transfer) in accepted {
            let pending = self.node.mempool().contains(&id) || {
                let height = self.store.committed_height(&id, &transfer)?;
                self.note_read(|| StoreRead::CommittedHeight(height));
                height.is_some()
            };
            if pending {
                entries.push((id, transfer));
            }
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        match self.store.journal_add(&entries) {
            Ok(()) => {
                self.note_read(|| StoreRead::JournalAdd(None));
                Ok(Vec::new())
            }
            Err(JournalAddError::Full { held, max }) => {
                self.note_read(|| StoreRead::JournalAdd(Some((held as u64, max as u64))));
                Ok(entries.into_iter().map(|(id, _)| (id, SubmitRefusal::JournalFull { held, max })).collect())
            }
            Err(JournalAddError::Store(error)) => Err(error),
        }
    }

    /// Carries out actions in order (see the module docs); returns the transaction verdicts
    /// among them. Public so a simulated dishonest validator can rewrite its core's actions
    /// before they are carried out.
    pub fn carry_out(&mut self, actions: Vec<Action>) -> Result<Vec<Action>, S::Error> {
        let mut verdicts = Vec::new();
        let mut dropped = Vec::new();
        let mut pending: Option<Box<Commit>> = None;
        for action in actions {
            if let Some(recorder) = self.recorder.as_mut() {
                recorder.digest.add(&action);
            }
            match action {
                Action::CommitBlocks(commit) => {
                    pending = Some(match pending.take() {
                        None => commit,
                        Some(mut merged) => {
                            let Commit { ops, tip, justified, finalized } = *commit;
                            merged.ops.extend(ops);
                            merged.tip = tip;
                            merged.justified = justified;
                            merged.finalized = finalized;
                            merged
                        }
                    });
                    continue;
                }
                Action::Trace(trace) => {
                    self.outputs.push(Output::Trace(trace));
                    continue;
                }
                Action::TxDropped(transfer) => {
                    dropped.push(*transfer);
                    continue;
                }
                _ => {}
            }
            self.flush_commit(&mut pending)?;
            match action {
                Action::CommitBlocks(_) | Action::Trace(_) | Action::TxDropped(_) => unreachable!("handled above"),
                Action::PersistReportState { last_vote, report_sequence } => {
                    self.store.persist_report_state(last_vote, report_sequence)?;
                }
                Action::SendTo { peer, message } => self.outputs.push(Output::Send { peer, message }),
                Action::Broadcast { message, except } => self.outputs.push(Output::Broadcast { message, except }),
                Action::ServeBlocks { peer, from_height, to_height } => {
                    let blocks = self.store.blocks_to_serve(from_height, to_height)?;
                    self.note_read(|| StoreRead::BlocksServed(blocks.clone()));
                    self.outputs.push(Output::Send { peer, message: Message::Blocks(blocks) });
                }
                Action::DisconnectPeer { peer, reason } => self.outputs.push(Output::Disconnect { peer, reason }),
                Action::WakeAt(at_ms) => self.outputs.push(Output::WakeAt(at_ms)),
                verdict @ (Action::TxAccepted { .. } | Action::TxRejected { .. }) => verdicts.push(verdict),
            }
        }
        self.flush_commit(&mut pending)?;
        self.record_dropped(dropped)?;
        Ok(verdicts)
    }

    fn flush_commit(&mut self, pending: &mut Option<Box<Commit>>) -> Result<(), S::Error> {
        if let Some(commit) = pending.take() {
            self.store.commit(&commit)?;
            self.outputs.push(Output::Committed(commit));
        }
        Ok(())
    }

    fn record_dropped(&mut self, dropped: Vec<DroppedTransfer>) -> Result<(), S::Error> {
        if dropped.is_empty() {
            return Ok(());
        }
        self.store.record_dropped(&dropped)?;
        self.outputs.extend(dropped.into_iter().map(Output::Dropped));
        Ok(())
    }

    /// Classifies each entry (`classify_journal_entry`) and carries out the verdict: committed
    /// entries leave the journal once final, taken nonces become drop records, open ones go to
    /// the core again. A refusal is recorded as a drop when `refusals_are_final`, else deferred.
    fn settle_journal(
        &mut self,
        now_ms: u64,
        entries: Vec<(Hash, Transfer)>,
        refusals_are_final: bool,
    ) -> Result<JournalSettled, S::Error> {
        let mut settled = JournalSettled::default();
        if entries.is_empty() {
            return Ok(settled);
        }
        let mut final_entries = Vec::new();
        let mut dropped = Vec::new();
        let tip_height = self.node.tip().height;
        let finalized_height = self.node.finalized().height;
        for (id, transfer) in entries {
            let committed_nonce = self.node.state().account(&transfer.from).nonce;
            let fate = classify_journal_entry(&id, &transfer, committed_nonce, &mut self.store)?;
            self.note_classified(&transfer, committed_nonce, &fate);
            match fate {
                JournalEntryFate::Committed { height } => {
                    settled.committed += 1;
                    // Above the final block a reorganisation may still return it to the
                    // mempool: the entry stays until the commit that makes it final deletes it.
                    if height <= finalized_height {
                        final_entries.push((id, transfer));
                    }
                }
                JournalEntryFate::Dropped(reason) => dropped.push(DroppedTransfer { id, transfer, reason, tip_height }),
                // Fetched from a peer since the restart: pending again, the entry stays.
                JournalEntryFate::Open if self.node.mempool().contains(&id) => settled.resubmitted += 1,
                JournalEntryFate::Open => {
                    let actions = self.node.step(now_ms, Event::TxSubmitted(transfer.clone()));
                    let verdicts = self.carry_out(actions)?;
                    match verdict_for(&verdicts, &id) {
                        Ok(_) => settled.resubmitted += 1,
                        Err(refusal) if refusals_are_final => {
                            let reason = match refusal {
                                SubmitRefusal::Rejected(rejection) => rejection.to_string(),
                                other => other.to_string(),
                            };
                            dropped.push(DroppedTransfer {
                                id,
                                transfer,
                                reason: DropReason::RefusedAfterRestart { reason },
                                tip_height,
                            });
                        }
                        Err(_) => {
                            settled.deferred += 1;
                            self.deferred_journal.push((id, transfer));
                        }
                    }
                }
            }
        }
        settled.dropped = dropped.len();
        self.store.journal_remove(&final_entries)?;
        self.record_dropped(dropped)?;
        Ok(settled)
    }
}

impl<S: Store> Driver<S> {
    /// Records the store's answers `classify_journal_entry` used for `fate`, in the order it
    /// asked them.
    fn note_classified(&mut self, transfer: &Transfer, committed_nonce: u64, fate: &JournalEntryFate) {
        if transfer.nonce >= committed_nonce {
            return;
        }
        match fate {
            JournalEntryFate::Committed { height } => {
                // Found by its id, or (the indexes disagreeing) by its slot.
                self.note_read(|| StoreRead::CommittedHeight(Some(*height)));
            }
            JournalEntryFate::Dropped(DropReason::NonceTaken { by, height }) => {
                self.note_read(|| StoreRead::CommittedHeight(None));
                self.note_read(|| StoreRead::CommittedAt(Some((*by, *height))));
            }
            JournalEntryFate::Dropped(_) => {
                self.note_read(|| StoreRead::CommittedHeight(None));
                self.note_read(|| StoreRead::CommittedAt(None));
            }
            JournalEntryFate::Open => {}
        }
    }
}

/// The core's verdict on a submitted transfer.
fn verdict_for(verdicts: &[Action], id: &Hash) -> Result<Hash, SubmitRefusal> {
    for verdict in verdicts {
        match verdict {
            Action::TxAccepted { id: accepted } if accepted == id => return Ok(*id),
            Action::TxRejected { id: rejected, reason } if rejected == id => {
                return Err(SubmitRefusal::Rejected(reason.clone()));
            }
            _ => {}
        }
    }
    Err(SubmitRefusal::NoVerdict)
}

/// Where a journal entry stands against the restored chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalEntryFate {
    /// This very transfer is committed at `height`.
    Committed { height: Height },
    /// Another committed transfer used its nonce: it can never be included.
    Dropped(DropReason),
    /// Its nonce is still open: submit it again.
    Open,
}

/// Where a journal entry stands, given its sender's committed nonce at the tip. Only a nonce
/// below it asks the store anything.
pub fn classify_journal_entry<C: CommittedTransfers>(
    id: &Hash,
    transfer: &Transfer,
    committed_nonce: u64,
    store: &mut C,
) -> Result<JournalEntryFate, C::Error> {
    if transfer.nonce >= committed_nonce {
        return Ok(JournalEntryFate::Open);
    }
    if let Some(height) = store.committed_height(id, transfer)? {
        return Ok(JournalEntryFate::Committed { height });
    }
    Ok(match store.committed_at(&transfer.from, transfer.nonce)? {
        // The two indexes disagree only if the store is damaged; the transfer is on the chain
        // either way.
        Some((by, height)) if by == *id => JournalEntryFate::Committed { height },
        Some((by, height)) => JournalEntryFate::Dropped(DropReason::NonceTaken { by, height }),
        None => JournalEntryFate::Dropped(DropReason::NonceUsed),
    })
}
