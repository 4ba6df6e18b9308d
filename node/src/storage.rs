//! The StorageEngine: one redb database per node holding the canonical chain, the account table
//! (the "coins database"), the undo data a reorganisation needs, a transaction index, the
//! elections, the peers table, the pending-transfer journal, the dropped transfers and the
//! metadata. It carries out the core's storage actions (`CommitBlocks`, `PersistReportState`)
//! and builds the `Restored` event on start, so a restart never replays the chain.
//! `tinychain_core::testkit::ModelStorage` is its reference model for the chain: after any
//! sequence of actions both answer every question the same way (the model has no journal and
//! no dropped transfers; those are the driver's, for issue 11: an acknowledged transfer is never
//! silently lost).
//!
//! Contract:
//! - Every `Commit` is one redb write transaction: all its rollbacks and applies, the accounts,
//!   validator records, finality, undo data, transaction index, elections and the new tip,
//!   justified and final checkpoints. Killed at any instant, the database holds the state after
//!   the last transaction that returned `Ok`, never a part of one. Durability is redb's
//!   `Immediate` (fsync at commit): a commit that returned is on disk.
//! - A commit must continue the stored chain: rollbacks start at the tip, applies extend it, and
//!   the tip after its operations is the one it names (the invariants `ModelStorage` asserts).
//!   One that does not is a bug in the core or the driver: every build returns `CommitMismatch`
//!   and writes nothing of it.
//! - `open` refuses a missing file, a file that is not a tinychain database, a database of another
//!   chain (chain id or genesis hash differ) or of an unknown schema version, with a message naming
//!   the path; it checks through a read-only open first, so a refused file is left byte for byte
//!   as it was. (A database that was not closed cleanly must be repaired by redb before it can
//!   be read at all; that happens in the read-write open, and the same checks follow.) A
//!   database another process has open is `InUse`. Nothing is ever overwritten or recreated
//!   silently; `create` refuses an existing file (it creates the file exclusively).
//! - Readers (`block_at`, `account`, ...) see the last committed transaction; they may run on
//!   other threads while the driver commits (`Storage` is `Send + Sync`). A reader begins its
//!   transaction under a read lock the commit holds for writing across its transaction's
//!   commit, so the pending blocks it reads with are those of that transaction.
//! - A commit writes what its blocks add (their rows, the accounts each wrote as one
//!   `account_deltas` row, the one `chain` row) and folds one slice of the settled tables
//!   (`settled`): a 32nd of the account chunks at most, and the index records of the
//!   pending final blocks in that slice (more slices while the records not yet folded are past
//!   `settled::PENDING_RECORDS_MAX`, as when syncing big blocks several to a commit). So its
//!   cost follows the block, not the ledger: the accounts, the transaction index and the
//!   address history are keyed by hashes, and written row by row a big block rewrote most
//!   pages of each (`storage_bench` has the figures). Final blocks are folded only: a
//!   rollback, which never reaches a final block, only drops pending blocks (one that reaches
//!   a folded block is `CommitMismatch`). The pending blocks are held in memory as well
//!   (roughly 45 MiB under steady 10,000-transfer blocks; bounded).
//! - `open` rebuilds the pending blocks (`blocks` and `account_deltas` above the lowest folded
//!   height, about 32 blocks); `restored` reads the account chunks with the pending accounts
//!   written over them, the hash index and the blocks above the final one, never replaying a
//!   block.
//! - The journal holds every transfer this node acknowledged to its own RPC clients and has not
//!   yet seen settle, so a restart can resubmit them (`journal`, in sender, nonce, id order).
//!   `journal_add` writes durably before the client is answered. An entry leaves the journal in
//!   exactly three ways: the commit that makes final a block using its (sender, nonce) deletes
//!   it, in the same write transaction (whether the block holds this transfer or another one
//!   that took its slot: either way it can never commit now; a block that is only applied, not
//!   final, deletes nothing, since a reorganisation may still drop it); `record_dropped` deletes
//!   it as it records why; `journal_remove` deletes it on the driver's word. The journal holds at
//!   most `JOURNAL_TRANSFERS_MAX` entries: past that `journal_add` refuses with `JournalFull`
//!   and writes nothing, so the node can refuse the transfer rather than acknowledge what it
//!   could not keep. Its size is kept in memory (`journal_len`), loaded at `open`.
//! - `dropped` remembers why a pending transfer was let go of, for `get_tx`; it keeps the latest
//!   `DROPPED_TRANSFERS_KEPT` records and forgets the oldest past that, in the transaction that
//!   records new ones.
//! - Schema version: `open` reads only version 4. Version 3 (the release before: accounts,
//!   transaction index and address history row by row) is refused untouched with
//!   `SchemaNeedsResync`: it holds the same chain, and the error says how to move the node over
//!   (a new database synced from its peers) and what to mind (its journal). Versions 1 and 2
//!   are refused untouched with `SchemaTooOld`, which tells the operator what to do: the release
//!   that introduced version 3 (evidence and jail: a new header field, new validator-record
//!   fields, new genesis parameters) changed the genesis hash of every chain, so no older
//!   database holds a chain a later node can join, and there is nothing to upgrade. Any other
//!   version is refused untouched with `SchemaVersion`.
//!
//! Tables (heights are `u64` keys, which redb orders numerically; values are bincode via
//! `tinychain_core::codec` but for the settled tables' fixed-width records (`settled`), and a
//! value that does not decode is `Corrupt` naming the table and key):
//! - `meta`: schema version, chain id, genesis hash, tip, justified, finalized, last vote,
//!   report sequence, and `fold` (the slice the next commit folds, and the final height each
//!   slice was folded through).
//! - `headers`: height -> block header of the canonical block at that height (genesis included).
//! - `blocks`: height -> the full canonical block.
//! - `block_heights`: block hash -> height (canonical blocks only).
//! - `undo`: height -> the undo delta of the canonical block at that height (height >= 1).
//! - `account_chunks`: the first 12 bits of an address (a chunk) -> every account in it as of
//!   the slice's folded height, sorted 48-byte records (address, balance, nonce).
//! - `account_deltas`: height -> the accounts the canonical block there wrote, for pending
//!   blocks only (deleted once every slice has folded the block).
//! - `chain`: the rest of `ChainState` at the tip (tip, timestamp, validator records with their
//!   jail and production window, finality, supply, committed offences), one row.
//! - `tx_index_rows`: (chunk of the transfer id, row number) -> sorted (id, height, index in
//!   block) records of folded canonical blocks; a chunk's rows follow the chain.
//! - `address_history_rows`: (chunk of the address, row number) -> sorted (address, height,
//!   index, id) records, for both sender and receiver, of folded canonical blocks.
//! - `elections`: height -> the ranking that elected the canonical block at that height
//!   (`election::rank_candidates` over the parent's validator records).
//! - `peers`: the verified peer addresses the connection manager asked to keep.
//! - `journal`: (sender, nonce big-endian, transfer id) -> the transfer, the
//!   transfers this node acknowledged to its clients and has not seen final or dropped. The key
//!   puts one sender's entries together in nonce order, so deleting a (sender, nonce) slot is a
//!   range delete and `journal` reads them in resubmission order.
//! - `dropped`: transfer id -> (insertion sequence, `DroppedTransfer`).
//! - `dropped_order`: insertion sequence -> transfer id, one row per `dropped`
//!   row, so the oldest record is the first row.

mod settled;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use settled::{Pending, PendingBlock, SettledTables};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use tinychain_core::codec;
use tinychain_core::crypto::hash_bytes;
use tinychain_core::election::{self, Candidate};
use tinychain_core::finality::FinalityState;
use tinychain_core::genesis::{genesis_block, Genesis};
use tinychain_core::mempool::DroppedTransfer;
use tinychain_core::node::{ChainOp, Commit, Restored};
use tinychain_core::state::{ChainState, StateDelta, ValidatorRecord};
use tinychain_core::types::{Account, Address, Block, Checkpoint, Hash, Height, Transfer, Vote};

pub use settled::{FoldFigures, FOLD_SLICES};
use tinychain_core::validate::{block_hash, transfer_id};
use tinychain_net::wire::PeerAddress;

/// The schema this build writes and the only one `open` reads. Version 4 keeps the accounts and
/// the transfer indexes as settled chunks plus pending blocks (`settled`); version 3 kept them
/// row by row and is refused with `SchemaNeedsResync` (same chain, so a resync moves a node
/// over). Version 3 came with evidence and jail, which changed the genesis hash of every chain;
/// versions 1 and 2 are refused with `SchemaTooOld` (their chain is not one this build can join).
pub const SCHEMA_VERSION: u32 = 4;

/// Most entries the pending-transfer journal holds; `journal_add` refuses past it. An entry is
/// 246 bytes of key and value, some 680 bytes of file with the B-tree's slack (storage_bench),
/// so a full journal is about 65 MiB, and a restart resubmits all of it.
pub const JOURNAL_TRANSFERS_MAX: usize = 100_000;
/// Dropped transfers remembered; the oldest are forgotten past this.
pub const DROPPED_TRANSFERS_KEPT: usize = 100_000;

/// redb's page cache, the largest part of a node's memory that grows with its database: redb's
/// own default is 1 GiB, so a long-running node's resident memory crept towards it as the chain
/// grew. The core keeps the state in memory and reads storage only to fold and to answer
/// queries, so a small cache serves it (the operating system's page cache still holds recent
/// pages).
pub const CACHE_BYTES: usize = 128 * 1024 * 1024;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const HEADERS: TableDefinition<u64, &[u8]> = TableDefinition::new("headers");
const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const BLOCK_HEIGHTS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("block_heights");
const UNDO: TableDefinition<u64, &[u8]> = TableDefinition::new("undo");
const CHAIN: TableDefinition<&str, &[u8]> = TableDefinition::new("chain");
const ELECTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("elections");
const PEERS: TableDefinition<u32, &[u8]> = TableDefinition::new("peers");
const JOURNAL: TableDefinition<&[u8; JOURNAL_KEY_BYTES], &[u8]> = TableDefinition::new("journal");
const DROPPED: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("dropped");
const DROPPED_ORDER: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("dropped_order");

/// Keys of the `meta` table.
const META_SCHEMA_VERSION: &str = "schema_version";
const META_CHAIN_ID: &str = "chain_id";
const META_GENESIS_HASH: &str = "genesis_hash";
const META_TIP: &str = "tip";
const META_JUSTIFIED: &str = "justified";
const META_FINALIZED: &str = "finalized";
const META_LAST_VOTE: &str = "last_vote";
const META_REPORT_SEQUENCE: &str = "report_sequence";
/// Where the settled tables stand (`settled::FoldState`).
const META_FOLD: &str = "fold";
/// The one row of the `chain` table.
const CHAIN_ROW: &str = "state";

/// A `journal` key: sender, nonce big-endian, transfer id, so one sender's entries are
/// contiguous in nonce order and one (sender, nonce) slot is one key range.
const JOURNAL_KEY_BYTES: usize = 32 + 8 + 32;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no database at {path}: initialise the node first (`tinychain init`)")]
    Missing { path: PathBuf },
    #[error("a database already exists at {path}; it is never overwritten")]
    AlreadyExists { path: PathBuf },
    #[error("{path} is not a usable tinychain database: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the database at {path} belongs to chain {found_chain_id:?} (genesis {found_genesis}), \
         not to chain {expected_chain_id:?} (genesis {expected_genesis}) of this genesis file"
    )]
    ForeignChain {
        path: PathBuf,
        found_chain_id: String,
        // Boxed so every `Result<_, StorageError>` (and the errors that wrap it) stays small.
        found_genesis: Box<Hash>,
        expected_chain_id: String,
        expected_genesis: Box<Hash>,
    },
    #[error("the database at {path} has schema version {found}, this build reads only version {SCHEMA_VERSION}")]
    SchemaVersion { path: PathBuf, found: u32 },
    /// A database of an earlier release (schema 1 or 2). Left as it was.
    #[error(
        "the database at {path} has schema version {found}, written by an earlier release of tinychain; \
         this release reads only version {SCHEMA_VERSION} and cannot upgrade it: version {SCHEMA_VERSION} added \
         evidence and jail, which changed the genesis hash of every chain, so the old chain cannot be \
         continued. The file was left unchanged. To run this release, start a new chain: move the old \
         home directory aside, initialise a fresh one (`tinychain init`) and assemble a new genesis \
         with this release (`tinychain genesis assemble`)"
    )]
    SchemaTooOld { path: PathBuf, found: u32 },
    /// A database of the release before this one (schema 3): the same chain in the old layout,
    /// which this build does not convert. Left as it was.
    #[error(
        "the database at {path} has schema version {found}, written by an earlier release of tinychain; \
         this release reads only version {SCHEMA_VERSION}, which keeps the accounts and the transfer indexes \
         in a new layout, and does not convert it. The file was left unchanged. The chain itself is the same: \
         to move this node to this release, stop it, move its data directory (the directory holding this \
         file) aside and start it again; it creates a new database from the genesis file and syncs the \
         chain from its peers. Transfers the old node acknowledged and had not yet seen final are only in \
         the old file's journal, so move a node over when it holds none (`journal_transfers` is 0 in the \
         `status` RPC answer)"
    )]
    SchemaNeedsResync { path: PathBuf, found: u32 },
    /// `journal_add` would take the journal past its bound; nothing was written.
    #[error(
        "the pending-transfer journal holds {held} transfers and may hold at most {max}; \
         nothing was added"
    )]
    JournalFull { held: usize, max: usize },
    #[error("the database {path} is in use by another process (is a node already running from this home?)")]
    InUse { path: PathBuf },
    /// A commit that does not continue the stored chain (a rollback not at the tip, an apply
    /// that does not extend it, a final tip other than the one the core named). Nothing of it
    /// was written. In debug builds this panics instead: it is a bug in the core or the driver.
    #[error("database {path} refused a commit that does not follow its chain (nothing was written): {detail}")]
    CommitMismatch { path: PathBuf, detail: String },
    #[error("database {path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

/// Where a committed transfer sits on the canonical chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxLocation {
    pub id: Hash,
    pub height: Height,
    pub index: u32,
}

/// `ChainState` without its accounts: the one row of the `chain` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ChainRow {
    tip: Checkpoint,
    tip_timestamp_ms: u64,
    validators: Vec<ValidatorRecord>,
    finality: FinalityState,
    supply: u64,
    offences: BTreeMap<Hash, Height>,
}

/// The node's database. Cheap to share behind an `Arc`.
pub struct Storage {
    id: Identity,
    database: Database,
    journal: JournalSize,
    /// The pending blocks of the last committed transaction (`settled`). A commit replaces it
    /// while holding the write lock across its transaction's commit, and readers take the read
    /// lock to begin their transaction, so a reader always gets the pending blocks of the
    /// transaction it reads.
    pending: RwLock<Arc<Pending>>,
    /// What the last commit's fold did.
    last_fold: Mutex<FoldFigures>,
    #[cfg(test)]
    hooks: TestHooks,
}

/// Switches for the unit tests: a crash between a commit's last write and its transaction's
/// commit (the transaction is dropped, as a kill would lose it), and a lower bound on the
/// pending records (0: `settled::PENDING_RECORDS_MAX`).
#[cfg(test)]
#[derive(Default)]
struct TestHooks {
    crash_before_commit: std::sync::atomic::AtomicBool,
    pending_records_max: AtomicUsize,
}

/// The journal's entry count, kept in memory so `journal_len` reads no table and a commit skips
/// the finality delete when the journal is empty.
#[derive(Default)]
struct JournalSize {
    /// Held by every write transaction that may change the journal, from before it begins until
    /// `entries` is updated after it commits. redb runs one write transaction at a time, but
    /// without this lock the count of an earlier transaction could be stored after a later one's.
    writer: Mutex<()>,
    entries: AtomicUsize,
}

impl JournalSize {
    fn lock_writer(&self) -> MutexGuard<'_, ()> {
        // A panic while it was held (a refused commit in a debug build) changed nothing it
        // guards: `entries` is only stored after a transaction commits.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn entries(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }

    /// Called with the writer lock held, after the transaction that left `entries` committed.
    fn set_entries(&self, entries: u64) {
        let entries = usize::try_from(entries).unwrap_or(usize::MAX);
        self.entries.store(entries, Ordering::Release);
    }
}

/// What a database must belong to, and the helpers that name it in errors.
struct Identity {
    path: PathBuf,
    genesis: Genesis,
    genesis_hash: Hash,
}

impl Identity {
    /// Refuses a database that is not of this build's schema and of this chain.
    fn check(&self, txn: &redb::ReadTransaction) -> Result<(), StorageError> {
        let meta = txn.open_table(META).map_err(|error| match error {
            redb::TableError::TableDoesNotExist(_) => self.corrupt(
                "it is a redb database but not a tinychain one (it has no meta table; an interrupted \
                 `tinychain init`? remove it and initialise again)"
                    .into(),
            ),
            error => redb_error(&self.path, "cannot read the meta table", error),
        })?;
        let found: u32 = self.meta_value(&meta, META_SCHEMA_VERSION)?;
        if found == 1 || found == 2 {
            return Err(StorageError::SchemaTooOld { path: self.path.clone(), found });
        }
        if found == 3 {
            return Err(StorageError::SchemaNeedsResync { path: self.path.clone(), found });
        }
        if found != SCHEMA_VERSION {
            return Err(StorageError::SchemaVersion { path: self.path.clone(), found });
        }
        let found_chain_id: String = self.meta_value(&meta, META_CHAIN_ID)?;
        let found_genesis: Hash = self.meta_value(&meta, META_GENESIS_HASH)?;
        if found_chain_id != self.genesis.chain_id || found_genesis != self.genesis_hash {
            return Err(StorageError::ForeignChain {
                path: self.path.clone(),
                found_chain_id,
                found_genesis: Box::new(found_genesis),
                expected_chain_id: self.genesis.chain_id.clone(),
                expected_genesis: Box::new(self.genesis_hash),
            });
        }
        // Every table must be there, so later reads fail only on real damage.
        let fail = Failure { path: &self.path, doing: "a table is missing" };
        txn.open_table(HEADERS).map_err(fail.of())?;
        txn.open_table(BLOCKS).map_err(fail.of())?;
        txn.open_table(BLOCK_HEIGHTS).map_err(fail.of())?;
        txn.open_table(UNDO).map_err(fail.of())?;
        txn.open_table(settled::ACCOUNT_CHUNKS).map_err(fail.of())?;
        txn.open_table(settled::ACCOUNT_DELTAS).map_err(fail.of())?;
        txn.open_table(settled::TX_INDEX_ROWS).map_err(fail.of())?;
        txn.open_table(settled::HISTORY_ROWS).map_err(fail.of())?;
        txn.open_table(ELECTIONS).map_err(fail.of())?;
        txn.open_table(PEERS).map_err(fail.of())?;
        txn.open_table(JOURNAL).map_err(fail.of())?;
        let dropped_rows = txn.open_table(DROPPED).map_err(fail.of())?.len().map_err(fail.of())?;
        let order_rows = txn.open_table(DROPPED_ORDER).map_err(fail.of())?.len().map_err(fail.of())?;
        if dropped_rows != order_rows {
            return Err(self.corrupt(format!(
                "table dropped holds {dropped_rows} rows, table dropped_order {order_rows}: they must match"
            )));
        }
        let chain = txn.open_table(CHAIN).map_err(fail.of())?;
        let row = self.chain_row(&chain)?;
        let tip: Checkpoint = self.meta_value(&meta, META_TIP)?;
        if row.tip != tip {
            return Err(self.corrupt(format!("the meta tip {tip:?} is not the chain row's tip {:?}", row.tip)));
        }
        Ok(())
    }

    fn meta_value<T: DeserializeOwned>(
        &self,
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
        key: &str,
    ) -> Result<T, StorageError> {
        let bytes = meta.get(key).map_err(|error| redb_error(&self.path, "cannot read the meta table", error))?;
        let bytes = bytes.ok_or_else(|| self.missing_row("meta", key))?;
        self.decode("meta", key, bytes.value())
    }

    fn chain_row(&self, chain: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<ChainRow, StorageError> {
        let bytes = chain.get(CHAIN_ROW).map_err(|error| redb_error(&self.path, "cannot read the chain row", error))?;
        let bytes = bytes.ok_or_else(|| self.missing_row("chain", CHAIN_ROW))?;
        let row: ChainRow = self.decode("chain", CHAIN_ROW, bytes.value())?;
        if row.validators.len() != self.genesis.validators.len() {
            return Err(self.corrupt(format!(
                "the chain row holds {} validator records, the genesis names {} validators",
                row.validators.len(),
                self.genesis.validators.len()
            )));
        }
        Ok(row)
    }

    fn decode<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: impl std::fmt::Debug,
        bytes: &[u8],
    ) -> Result<T, StorageError> {
        codec::decode(table, bytes).map_err(|error| self.corrupt(format!("table {table}, key {key:?}: {error}")))
    }

    fn corrupt(&self, detail: String) -> StorageError {
        StorageError::Corrupt { path: self.path.clone(), detail }
    }

    fn missing_row(&self, table: &str, key: impl std::fmt::Debug) -> StorageError {
        self.corrupt(format!("table {table} has no row {key:?}, which the chain needs"))
    }

    /// A commit that does not follow the stored chain: a bug upstream. Refused the same way in
    /// every build (nothing of it is written), so tests see what production does; the driver
    /// stops the node on it.
    fn refuse(&self, detail: String) -> StorageError {
        StorageError::CommitMismatch { path: self.path.clone(), detail }
    }
}

// Readers run on RPC threads while the driver commits.
const _: fn() = || {
    fn is_send_and_sync<T: Send + Sync>() {}
    is_send_and_sync::<Storage>();
};

/// The write side of every table, opened once per write transaction.
struct WriteTables<'txn> {
    meta: redb::Table<'txn, &'static str, &'static [u8]>,
    headers: redb::Table<'txn, u64, &'static [u8]>,
    blocks: redb::Table<'txn, u64, &'static [u8]>,
    block_heights: redb::Table<'txn, &'static [u8; 32], u64>,
    undo: redb::Table<'txn, u64, &'static [u8]>,
    chain: redb::Table<'txn, &'static str, &'static [u8]>,
    elections: redb::Table<'txn, u64, &'static [u8]>,
    settled: SettledTables<'txn>,
    journal: redb::Table<'txn, &'static [u8; JOURNAL_KEY_BYTES], &'static [u8]>,
}

impl<'txn> WriteTables<'txn> {
    fn open(txn: &'txn redb::WriteTransaction) -> Result<WriteTables<'txn>, redb::TableError> {
        Ok(WriteTables {
            meta: txn.open_table(META)?,
            headers: txn.open_table(HEADERS)?,
            blocks: txn.open_table(BLOCKS)?,
            block_heights: txn.open_table(BLOCK_HEIGHTS)?,
            undo: txn.open_table(UNDO)?,
            chain: txn.open_table(CHAIN)?,
            elections: txn.open_table(ELECTIONS)?,
            settled: SettledTables::open(txn)?,
            journal: txn.open_table(JOURNAL)?,
        })
    }
}

fn journal_key(sender: &Address, nonce: u64, id: &Hash) -> [u8; JOURNAL_KEY_BYTES] {
    let mut key = [0u8; JOURNAL_KEY_BYTES];
    key[..32].copy_from_slice(&sender.0);
    key[32..40].copy_from_slice(&nonce.to_be_bytes());
    key[40..].copy_from_slice(&id.0);
    key
}

/// The (sender, nonce) slot and the transfer id of a `journal` key.
fn journal_slot_and_id(key: &[u8; JOURNAL_KEY_BYTES]) -> ((Address, u64), Hash) {
    let mut sender = [0u8; 32];
    sender.copy_from_slice(&key[..32]);
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&key[32..40]);
    let mut id = [0u8; 32];
    id.copy_from_slice(&key[40..]);
    ((Address(sender), u64::from_be_bytes(nonce)), Hash(id))
}

fn genesis_hash_of(genesis: &Genesis) -> Hash {
    block_hash(&genesis_block(genesis).0.header)
}

/// Maps a redb error to ours: a lock held elsewhere is `InUse`, a damaged or foreign file is
/// `Corrupt`, anything else (disk full, permissions, ...) is `Io`. `doing` says what failed.
fn redb_error(path: &Path, doing: &str, error: impl Into<redb::Error>) -> StorageError {
    let error: redb::Error = error.into();
    let path = path.to_path_buf();
    match error {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => StorageError::InUse { path },
        redb::Error::Corrupted(_)
        | redb::Error::UpgradeRequired(_)
        | redb::Error::TableDoesNotExist(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => {
            StorageError::Corrupt { path, detail: format!("{doing}: {error}") }
        }
        redb::Error::Io(ref io)
            if matches!(io.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData) =>
        {
            StorageError::Corrupt { path, detail: format!("{doing}: {error}") }
        }
        _ => StorageError::Io { path, detail: format!("{doing}: {error}") },
    }
}

/// What a redb call was doing, to map its error (`redb_error`) at each `?`.
#[derive(Clone, Copy)]
struct Failure<'a> {
    path: &'a Path,
    doing: &'a str,
}

impl<'a> Failure<'a> {
    fn of<E: Into<redb::Error>>(self) -> impl FnOnce(E) -> StorageError + 'a {
        move |error| redb_error(self.path, self.doing, error)
    }
}

/// The outcome of a redb open run under `catch_unwind`. redb documents that opening a file
/// altered behind its back may panic: that is a damaged database, reported as one rather than
/// taking the process down.
fn opened<T>(path: &Path, caught: std::thread::Result<Result<T, redb::DatabaseError>>) -> Result<T, StorageError> {
    match caught {
        Ok(result) => result.map_err(|error| redb_error(path, "cannot open the database", error)),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|text| text.to_string()))
                .unwrap_or_default();
            Err(StorageError::Corrupt {
                path: path.to_path_buf(),
                detail: format!("the database engine failed reading it: {reason}"),
            })
        }
    }
}

impl Storage {
    /// Creates a new database at `path` holding the genesis block and state of `genesis`. The
    /// file is created exclusively (an existing file is refused, even one created a moment
    /// ago by another process); if anything fails the half-made file is removed.
    pub fn create(path: &Path, genesis: &Genesis) -> Result<Storage, StorageError> {
        let file =
            std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(
                |error| match error.kind() {
                    std::io::ErrorKind::AlreadyExists => StorageError::AlreadyExists { path: path.to_path_buf() },
                    _ => StorageError::Io {
                        path: path.to_path_buf(),
                        detail: format!("cannot create the file: {error}"),
                    },
                },
            )?;
        let created = Self::initialise(path, genesis, file);
        if created.is_err() {
            // Only a file this call created exclusively is removed, and nothing was committed.
            let _ = std::fs::remove_file(path);
        }
        let storage = created?;
        // The file's directory entry must survive a crash too, or a later `open` finds nothing.
        if let Some(directory) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::File::open(directory).and_then(|directory| directory.sync_all()).map_err(|error| {
                StorageError::Io { path: path.to_path_buf(), detail: format!("cannot sync its directory: {error}") }
            })?;
        }
        Ok(storage)
    }

    fn initialise(path: &Path, genesis: &Genesis, file: std::fs::File) -> Result<Storage, StorageError> {
        let backend = redb::backends::FileBackend::new(file)
            .map_err(|error| redb_error(path, "cannot use the new file", error))?;
        let database = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|error| redb_error(path, "cannot initialise the database", error))?;
        let (block, state) = genesis_block(genesis);
        let storage = Storage {
            id: Identity { path: path.to_path_buf(), genesis: genesis.clone(), genesis_hash: state.tip.hash },
            database,
            journal: JournalSize::default(),
            pending: RwLock::new(Arc::new(Pending::empty(settled::FoldState::at_genesis()))),
            last_fold: Mutex::new(FoldFigures::default()),
            #[cfg(test)]
            hooks: TestHooks::default(),
        };
        let txn = storage.begin_write()?;
        {
            let fail = Failure { path, doing: "cannot write the genesis block" };
            let mut tables = WriteTables::open(&txn).map_err(fail.of())?;
            let _ = txn.open_table(PEERS).map_err(fail.of())?;
            let _ = txn.open_table(DROPPED).map_err(fail.of())?;
            let _ = txn.open_table(DROPPED_ORDER).map_err(fail.of())?;
            let put_meta = |tables: &mut WriteTables, key: &str, bytes: Vec<u8>| {
                tables.meta.insert(key, bytes.as_slice()).map(|_| ()).map_err(fail.of())
            };
            put_meta(&mut tables, META_SCHEMA_VERSION, codec::encode(&SCHEMA_VERSION))?;
            put_meta(&mut tables, META_CHAIN_ID, codec::encode(&genesis.chain_id))?;
            put_meta(&mut tables, META_GENESIS_HASH, codec::encode(&state.tip.hash))?;
            put_meta(&mut tables, META_TIP, codec::encode(&state.tip))?;
            put_meta(&mut tables, META_JUSTIFIED, codec::encode(&state.tip))?;
            put_meta(&mut tables, META_FINALIZED, codec::encode(&state.tip))?;
            put_meta(&mut tables, META_LAST_VOTE, codec::encode(&None::<Vote>))?;
            put_meta(&mut tables, META_REPORT_SEQUENCE, codec::encode(&0u64))?;
            put_meta(&mut tables, META_FOLD, codec::encode(&settled::FoldState::at_genesis()))?;
            tables.headers.insert(0, codec::encode(&block.header).as_slice()).map_err(fail.of())?;
            tables.blocks.insert(0, codec::encode(&block).as_slice()).map_err(fail.of())?;
            tables.block_heights.insert(&state.tip.hash.0, 0).map_err(fail.of())?;
            settled::write_genesis_accounts(&storage.id, &mut tables.settled, &state.accounts)?;
            let row = ChainRow {
                tip: state.tip,
                tip_timestamp_ms: state.tip_timestamp_ms,
                validators: state.validators.clone(),
                finality: state.finality.clone(),
                supply: state.supply,
                offences: state.offences.clone(),
            };
            tables.chain.insert(CHAIN_ROW, codec::encode(&row).as_slice()).map_err(fail.of())?;
        }
        txn.commit().map_err(|error| redb_error(path, "cannot commit the genesis block", error))?;
        Ok(storage)
    }

    /// Opens an existing database and checks it belongs to `genesis` (see the module contract).
    pub fn open(path: &Path, genesis: &Genesis) -> Result<Storage, StorageError> {
        let owned_path = || path.to_path_buf();
        match std::fs::metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(StorageError::Missing { path: owned_path() })
            }
            Err(error) => {
                return Err(StorageError::Io { path: owned_path(), detail: format!("cannot read the file: {error}") })
            }
            Ok(metadata) if !metadata.is_file() => {
                return Err(StorageError::Corrupt { path: owned_path(), detail: "it is not a regular file".into() })
            }
            Ok(metadata) if metadata.len() == 0 => {
                return Err(StorageError::Corrupt {
                    path: owned_path(),
                    detail: "the file is empty (an interrupted `tinychain init`? remove it and initialise again)"
                        .into(),
                })
            }
            Ok(_) => {}
        }
        let id = Identity { path: owned_path(), genesis: genesis.clone(), genesis_hash: genesis_hash_of(genesis) };
        // First a read-only look, which writes nothing: a file of another chain, another
        // schema or no tinychain database at all is refused exactly as it was found. (A
        // read-write open rewrites redb's header even when nothing is committed.) A database
        // that was not closed cleanly cannot be read this way; redb repairs it in the
        // read-write open below, and it is checked there.
        let read_only =
            std::panic::catch_unwind(|| redb::Builder::new().set_cache_size(CACHE_BYTES).open_read_only(path));
        match read_only {
            Ok(Err(redb::DatabaseError::RepairAborted)) => {}
            caught => {
                let database = opened(&id.path, caught)?;
                let txn = database.begin_read().map_err(|error| redb_error(&id.path, "cannot read it", error))?;
                id.check(&txn)?;
            }
        }
        let database =
            opened(&id.path, std::panic::catch_unwind(|| redb::Builder::new().set_cache_size(CACHE_BYTES).open(path)))?;
        let txn = database.begin_read().map_err(|error| redb_error(&id.path, "cannot read it", error))?;
        id.check(&txn)?;
        let fail = Failure { path: &id.path, doing: "cannot read the journal" };
        let journal_entries = txn.open_table(JOURNAL).map_err(fail.of())?.len().map_err(fail.of())?;
        let meta = txn.open_table(META).map_err(fail.of())?;
        let tip: Checkpoint = id.meta_value(&meta, META_TIP)?;
        let fold: settled::FoldState = id.meta_value(&meta, META_FOLD)?;
        let pending = settled::load_pending(&id, &txn, fold, tip.height)?;
        drop(meta);
        drop(txn);
        let storage = Storage {
            id,
            database,
            journal: JournalSize::default(),
            pending: RwLock::new(Arc::new(pending)),
            last_fold: Mutex::new(FoldFigures::default()),
            #[cfg(test)]
            hooks: TestHooks::default(),
        };
        storage.journal.set_entries(journal_entries);
        Ok(storage)
    }

    pub fn path(&self) -> &Path {
        &self.id.path
    }

    /// The hash of the genesis block this database was checked against.
    pub fn genesis_hash(&self) -> Hash {
        self.id.genesis_hash
    }

    /// Carries out `Action::CommitBlocks` in one write transaction. When it moves the final
    /// checkpoint up, the same transaction deletes the journal entries whose (sender, nonce) the
    /// newly final blocks used.
    pub fn commit(&self, commit: &Commit) -> Result<(), StorageError> {
        let _journal_writer = self.journal.lock_writer();
        let journal_entries_before = self.journal.entries();
        // A copy to work on: it replaces the shared one only once the transaction committed, so
        // a commit that fails leaves memory as it leaves the database.
        let mut pending = Pending::clone(&self.pending.read().unwrap_or_else(PoisonError::into_inner));
        let txn = self.begin_write()?;
        let (journal_entries_after, fold_figures) = {
            let fail = Failure { path: &self.id.path, doing: "cannot open the tables to commit" };
            let mut tables = WriteTables::open(&txn).map_err(fail.of())?;
            // With the journal empty there is nothing finality could delete: not even this is read.
            let stored_final_height = match journal_entries_before {
                0 => None,
                _ => Some(self.id.meta_value::<Checkpoint>(&tables.meta, META_FINALIZED)?.height),
            };
            let mut row = self.id.chain_row(&tables.chain)?;
            for op in &commit.ops {
                match op {
                    ChainOp::Rollback { height, hash, undo } => {
                        self.roll_back(&mut tables, &mut row, &mut pending, *height, hash, undo)?
                    }
                    ChainOp::Apply { block, hash, delta, undo } => {
                        self.apply(&mut tables, &mut row, &mut pending, block, hash, delta, undo)?
                    }
                }
            }
            if row.tip != commit.tip {
                return Err(self.id.refuse(format!(
                    "after its operations the tip is {:?}, the commit names {:?}",
                    row.tip, commit.tip
                )));
            }
            if commit.finalized.height > row.tip.height {
                return Err(self
                    .id
                    .refuse(format!("the final checkpoint {:?} is above the tip {:?}", commit.finalized, row.tip)));
            }
            let fold_figures = settled::fold(
                &self.id,
                &mut tables.settled,
                &mut pending,
                commit.finalized.height,
                self.pending_records_max(),
            )?;
            let fail = Failure { path: &self.id.path, doing: "cannot write the commit" };
            tables.meta.insert(META_FOLD, codec::encode(pending.fold_state()).as_slice()).map_err(fail.of())?;
            tables.chain.insert(CHAIN_ROW, codec::encode(&row).as_slice()).map_err(fail.of())?;
            tables.meta.insert(META_TIP, codec::encode(&commit.tip).as_slice()).map_err(fail.of())?;
            tables.meta.insert(META_JUSTIFIED, codec::encode(&commit.justified).as_slice()).map_err(fail.of())?;
            tables.meta.insert(META_FINALIZED, codec::encode(&commit.finalized).as_slice()).map_err(fail.of())?;
            let journal_entries_after = match stored_final_height {
                Some(stored_final_height) if commit.finalized.height > stored_final_height => {
                    self.forget_settled_journal_entries(
                        &mut tables,
                        commit,
                        stored_final_height + 1..=commit.finalized.height,
                        journal_entries_before,
                    )?;
                    Some(tables.journal.len().map_err(fail.of())?)
                }
                _ => None,
            };
            (journal_entries_after, fold_figures)
        };
        #[cfg(test)]
        if self.hooks.crash_before_commit.load(Ordering::Acquire) {
            drop(txn);
            return Err(StorageError::Io { path: self.id.path.clone(), detail: "a simulated crash".into() });
        }
        {
            // Readers wait for this lock to begin reading, so none sees the new transaction
            // with the old pending blocks.
            let mut shared = self.pending.write().unwrap_or_else(PoisonError::into_inner);
            txn.commit().map_err(|error| redb_error(&self.id.path, "cannot commit", error))?;
            *shared = Arc::new(pending);
        }
        if let Some(entries) = journal_entries_after {
            self.journal.set_entries(entries);
        }
        *self.last_fold.lock().unwrap_or_else(PoisonError::into_inner) = fold_figures;
        Ok(())
    }

    /// What the last `commit`'s fold did (`settled`): slices, records and rows it wrote.
    pub fn last_fold(&self) -> FoldFigures {
        *self.last_fold.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pending_records_max(&self) -> usize {
        #[cfg(test)]
        if self.hooks.pending_records_max.load(Ordering::Acquire) > 0 {
            return self.hooks.pending_records_max.load(Ordering::Acquire);
        }
        settled::PENDING_RECORDS_MAX
    }

    /// A read transaction and the pending blocks of the transaction it reads.
    fn begin_view(&self) -> Result<(redb::ReadTransaction, Arc<Pending>), StorageError> {
        let pending = self.pending.read().unwrap_or_else(PoisonError::into_inner);
        let txn = self.begin_read()?;
        Ok((txn, Arc::clone(&pending)))
    }

    /// Deletes the journal entries whose (sender, nonce) slot a transfer in the canonical blocks
    /// at `heights` used: those blocks are final, so the transfer that used the slot is settled
    /// and any other transfer for the same slot can never commit. Called inside `commit`, after
    /// its operations, so the blocks at `heights` are canonical: those this commit applies are
    /// taken from its operations (no decoding), the others are read from the blocks table.
    fn forget_settled_journal_entries(
        &self,
        tables: &mut WriteTables,
        commit: &Commit,
        heights: std::ops::RangeInclusive<Height>,
        journal_entries: usize,
    ) -> Result<(), StorageError> {
        let fail = Failure { path: &self.id.path, doing: "cannot delete settled journal entries" };
        // The commit's blocks as they stand after all its operations.
        let mut applied: BTreeMap<Height, &Block> = BTreeMap::new();
        for op in &commit.ops {
            match op {
                ChainOp::Rollback { height, .. } => {
                    applied.remove(height);
                }
                ChainOp::Apply { block, .. } => {
                    applied.insert(block.header.height, block);
                }
            }
        }
        let mut slots_used: BTreeSet<(Address, u64)> = BTreeSet::new();
        for height in heights {
            let read;
            let block = match applied.get(&height) {
                Some(block) => *block,
                None => {
                    read =
                        self.block_in(&tables.blocks, height)?.ok_or_else(|| self.id.missing_row("blocks", height))?;
                    &*read
                }
            };
            slots_used.extend(block.transfers.iter().map(|transfer| (transfer.from, transfer.nonce)));
        }
        if slots_used.is_empty() {
            return Ok(());
        }
        // Whichever is smaller: one pass over the journal, or one key range per slot used.
        let mut settled_keys: Vec<[u8; JOURNAL_KEY_BYTES]> = Vec::new();
        if journal_entries <= slots_used.len() {
            for entry in tables.journal.range::<&[u8; JOURNAL_KEY_BYTES]>(..).map_err(fail.of())? {
                let (key, _) = entry.map_err(fail.of())?;
                let (slot, _) = journal_slot_and_id(key.value());
                if slots_used.contains(&slot) {
                    settled_keys.push(*key.value());
                }
            }
        } else {
            for (sender, nonce) in &slots_used {
                let lower = journal_key(sender, *nonce, &Hash([0x00; 32]));
                let upper = journal_key(sender, *nonce, &Hash([0xff; 32]));
                for entry in tables.journal.range::<&[u8; JOURNAL_KEY_BYTES]>(&lower..=&upper).map_err(fail.of())? {
                    let (key, _) = entry.map_err(fail.of())?;
                    settled_keys.push(*key.value());
                }
            }
        }
        for key in &settled_keys {
            tables.journal.remove(key).map_err(fail.of())?;
        }
        Ok(())
    }

    /// Undoes the canonical block at the tip: its undo into the chain row, its pending block
    /// dropped (the accounts it wrote were never folded: it is not final), and every row it
    /// added.
    fn roll_back(
        &self,
        tables: &mut WriteTables,
        row: &mut ChainRow,
        pending: &mut Pending,
        height: Height,
        hash: &Hash,
        undo: &StateDelta,
    ) -> Result<(), StorageError> {
        if height != row.tip.height || height == 0 {
            return Err(self.id.refuse(format!("a rollback of height {height} while the tip is {:?}", row.tip)));
        }
        if height <= pending.highest_folded() {
            return Err(self.id.refuse(format!(
                "a rollback of height {height}, a final block whose changes were folded into the settled tables \
                 (through height {})",
                pending.highest_folded()
            )));
        }
        let fail = Failure { path: &self.id.path, doing: "cannot roll a block back" };
        let header =
            tables.headers.get(height).map_err(fail.of())?.ok_or_else(|| self.id.missing_row("headers", height))?;
        let stored_hash = hash_bytes(header.value());
        drop(header);
        if stored_hash != *hash {
            return Err(self.id.refuse(format!(
                "a rollback of block {hash:?} at height {height}, but the stored block there is {stored_hash:?}"
            )));
        }
        let dropped = pending.pop(height).expect("every canonical block above the lowest folded height is pending");
        if !dropped.account_addresses().eq(settled::delta_addresses(undo).iter()) {
            return Err(self.id.refuse(format!(
                "the undo of block {hash:?} at height {height} does not name the accounts the block wrote"
            )));
        }
        settled::remove_account_delta(&self.id, &mut tables.settled, height)?;
        if tables.blocks.remove(height).map_err(fail.of())?.is_none() {
            return Err(self.id.missing_row("blocks", height));
        }
        tables.headers.remove(height).map_err(fail.of())?;
        tables.block_heights.remove(&hash.0).map_err(fail.of())?;
        tables.undo.remove(height).map_err(fail.of())?;
        tables.elections.remove(height).map_err(fail.of())?;
        self.apply_to_row(row, undo)
    }

    /// Makes `block` canonical on top of the tip: its rows, its election, its accounts (a
    /// pending block and its `account_deltas` row), then the rest of its delta.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        tables: &mut WriteTables,
        row: &mut ChainRow,
        pending: &mut Pending,
        block: &Block,
        hash: &Hash,
        delta: &StateDelta,
        undo: &StateDelta,
    ) -> Result<(), StorageError> {
        let height = block.header.height;
        if block.header.prev_hash != row.tip.hash || height != row.tip.height + 1 {
            return Err(self.id.refuse(format!(
                "block {hash:?} at height {height} extends {:?}, but the tip is {:?}",
                block.header.prev_hash, row.tip
            )));
        }
        debug_assert_eq!(block_hash(&block.header), *hash, "the commit names its block's hash");
        let ranking = election::rank_candidates(&self.id.genesis, &row.validators, &row.tip);
        let fail = Failure { path: &self.id.path, doing: "cannot apply a block" };
        tables.blocks.insert(height, codec::encode(block).as_slice()).map_err(fail.of())?;
        tables.headers.insert(height, codec::encode(&block.header).as_slice()).map_err(fail.of())?;
        tables.block_heights.insert(&hash.0, height).map_err(fail.of())?;
        tables.undo.insert(height, codec::encode(undo).as_slice()).map_err(fail.of())?;
        tables.elections.insert(height, codec::encode(&ranking).as_slice()).map_err(fail.of())?;
        settled::write_account_delta(&self.id, &mut tables.settled, height, &delta.accounts)?;
        pending.push(height, PendingBlock::new(block, &delta.accounts));
        self.apply_to_row(row, delta)
    }

    /// `ChainState::apply_delta` on the chain row: everything but the accounts (which are
    /// pending blocks until folded).
    fn apply_to_row(&self, row: &mut ChainRow, delta: &StateDelta) -> Result<(), StorageError> {
        for (index, record) in &delta.validators {
            let Some(slot) = row.validators.get_mut(*index as usize) else {
                return Err(self.id.refuse(format!(
                    "a delta names validator {index}, the genesis has {}",
                    self.id.genesis.validators.len()
                )));
            };
            *slot = record.clone();
        }
        row.tip = delta.tip;
        row.tip_timestamp_ms = delta.tip_timestamp_ms;
        row.finality = delta.finality.clone();
        row.supply = delta.supply;
        for (key, height) in &delta.offences {
            match height {
                Some(height) => row.offences.insert(*key, *height),
                None => row.offences.remove(key),
            };
        }
        Ok(())
    }

    /// Carries out `Action::PersistReportState` (durably, before the report is sent).
    pub fn persist_report_state(&self, last_vote: Option<Vote>, report_sequence: u64) -> Result<(), StorageError> {
        let txn = self.begin_write()?;
        {
            let fail = Failure { path: &self.id.path, doing: "cannot persist the report state" };
            let mut meta = txn.open_table(META).map_err(fail.of())?;
            meta.insert(META_LAST_VOTE, codec::encode(&last_vote).as_slice()).map_err(fail.of())?;
            meta.insert(META_REPORT_SEQUENCE, codec::encode(&report_sequence).as_slice()).map_err(fail.of())?;
        }
        txn.commit().map_err(|error| redb_error(&self.id.path, "cannot commit the report state", error))
    }

    /// The `Restored` event for a starting node (same meaning as `ModelStorage::restored`). It
    /// reads the tables, never replays blocks: every account chunk with the pending accounts
    /// written over it, one hash per canonical block, and the blocks above the final one with
    /// their undo.
    pub fn restored(&self) -> Result<Restored, StorageError> {
        let (txn, pending) = self.begin_view()?;
        let fail = Failure { path: &self.id.path, doing: "cannot read the stored chain" };
        let meta = txn.open_table(META).map_err(fail.of())?;
        let row = self.id.chain_row(&txn.open_table(CHAIN).map_err(fail.of())?)?;
        let finalized: Checkpoint = self.id.meta_value(&meta, META_FINALIZED)?;
        let last_vote: Option<Vote> = self.id.meta_value(&meta, META_LAST_VOTE)?;
        let report_sequence: u64 = self.id.meta_value(&meta, META_REPORT_SEQUENCE)?;

        let mut accounts = settled::read_accounts(&self.id, &txn)?;
        pending.write_accounts_over(&mut accounts);

        // Canonical hashes from the hash index, each height exactly once.
        let tip_height =
            usize::try_from(row.tip.height).map_err(|_| self.id.corrupt("the tip height is absurd".into()))?;
        let mut canonical_hashes: Vec<Option<Hash>> = vec![None; tip_height + 1];
        for entry in txn.open_table(BLOCK_HEIGHTS).map_err(fail.of())?.range::<&[u8; 32]>(..).map_err(fail.of())? {
            let (hash, height) = entry.map_err(fail.of())?;
            let hash = Hash(*hash.value());
            let height = height.value();
            let slot = usize::try_from(height).ok().and_then(|height| canonical_hashes.get_mut(height));
            match slot {
                Some(slot @ None) => *slot = Some(hash),
                _ => {
                    return Err(self.id.corrupt(format!(
                        "block_heights maps {hash:?} to height {height}, above the tip {} or taken twice",
                        row.tip.height
                    )))
                }
            }
        }
        let canonical_hashes = canonical_hashes
            .into_iter()
            .enumerate()
            .map(|(height, hash)| hash.ok_or_else(|| self.id.missing_row("block_heights", height)))
            .collect::<Result<Vec<Hash>, StorageError>>()?;
        if canonical_hashes.first() != Some(&self.id.genesis_hash) || canonical_hashes.last() != Some(&row.tip.hash) {
            return Err(self.id.corrupt("block_heights does not run from this genesis to the tip".into()));
        }

        let blocks = txn.open_table(BLOCKS).map_err(fail.of())?;
        let final_bytes = blocks
            .get(finalized.height)
            .map_err(fail.of())?
            .ok_or_else(|| self.id.missing_row("blocks", finalized.height))?;
        let final_block: Block = self.id.decode("blocks", finalized.height, final_bytes.value())?;
        drop(final_bytes);
        let undo = txn.open_table(UNDO).map_err(fail.of())?;
        let mut recent_blocks = Vec::new();
        let mut undos = undo.range(finalized.height + 1..).map_err(fail.of())?;
        for (expected_height, entry) in
            (finalized.height + 1..).zip(blocks.range(finalized.height + 1..).map_err(fail.of())?)
        {
            let (height, bytes) = entry.map_err(fail.of())?;
            let height = height.value();
            if height != expected_height {
                return Err(self.id.missing_row("blocks", expected_height));
            }
            let block: Block = self.id.decode("blocks", height, bytes.value())?;
            let (undo_height, undo_bytes) =
                undos.next().transpose().map_err(fail.of())?.ok_or_else(|| self.id.missing_row("undo", height))?;
            if undo_height.value() != height {
                return Err(self.id.missing_row("undo", height));
            }
            let undo: StateDelta = self.id.decode("undo", height, undo_bytes.value())?;
            recent_blocks.push((Arc::new(block), undo));
        }
        if finalized.height + recent_blocks.len() as u64 != row.tip.height {
            return Err(self.id.corrupt(format!(
                "the blocks table holds blocks up to {}, the tip is at {}",
                finalized.height + recent_blocks.len() as u64,
                row.tip.height
            )));
        }

        let state = ChainState {
            tip: row.tip,
            tip_timestamp_ms: row.tip_timestamp_ms,
            accounts,
            validators: row.validators,
            finality: row.finality,
            supply: row.supply,
            offences: row.offences,
            // The node builds it when it restores this state.
            account_tree: Default::default(),
        };
        Ok(Restored {
            state,
            canonical_hashes,
            final_block: Arc::new(final_block),
            recent_blocks,
            last_vote,
            report_sequence,
        })
    }

    pub fn tip(&self) -> Result<Checkpoint, StorageError> {
        self.meta(META_TIP)
    }

    pub fn justified(&self) -> Result<Checkpoint, StorageError> {
        self.meta(META_JUSTIFIED)
    }

    pub fn finalized(&self) -> Result<Checkpoint, StorageError> {
        self.meta(META_FINALIZED)
    }

    /// The last vote and report sequence `persist_report_state` stored.
    pub fn report_state(&self) -> Result<(Option<Vote>, u64), StorageError> {
        Ok((self.meta(META_LAST_VOTE)?, self.meta(META_REPORT_SEQUENCE)?))
    }

    /// The canonical block at `height` (genesis at 0).
    pub fn block_at(&self, height: Height) -> Result<Option<Arc<Block>>, StorageError> {
        let txn = self.begin_read()?;
        let blocks = txn.open_table(BLOCKS).map_err(|error| redb_error(&self.id.path, "cannot read blocks", error))?;
        self.block_in(&blocks, height)
    }

    fn block_in(
        &self,
        blocks: &impl ReadableTable<u64, &'static [u8]>,
        height: Height,
    ) -> Result<Option<Arc<Block>>, StorageError> {
        let bytes = blocks.get(height).map_err(|error| redb_error(&self.id.path, "cannot read a block", error))?;
        match bytes {
            None => Ok(None),
            Some(bytes) => Ok(Some(Arc::new(self.id.decode("blocks", height, bytes.value())?))),
        }
    }

    /// The canonical block with this hash, if it is canonical.
    pub fn block_by_hash(&self, hash: &Hash) -> Result<Option<Arc<Block>>, StorageError> {
        let txn = self.begin_read()?;
        let fail = Failure { path: &self.id.path, doing: "cannot read a block" };
        let heights = txn.open_table(BLOCK_HEIGHTS).map_err(fail.of())?;
        let Some(height) = heights.get(&hash.0).map_err(fail.of())?.map(|height| height.value()) else {
            return Ok(None);
        };
        let blocks = txn.open_table(BLOCKS).map_err(fail.of())?;
        let block = self.block_in(&blocks, height)?.ok_or_else(|| self.id.missing_row("blocks", height))?;
        Ok(Some(block))
    }

    /// The answer to `Action::ServeBlocks` (same rule as `ModelStorage::blocks_to_serve`): the
    /// canonical blocks from `from_height` to `to_height`, stopping at the first missing one and
    /// cut to `limits::SYNC_RESPONSE_BYTES_MAX` (at least one block). A block past the cut is
    /// not decoded: its stored length is its encoded length.
    pub fn blocks_to_serve(&self, from_height: Height, to_height: Height) -> Result<Vec<Arc<Block>>, StorageError> {
        if from_height > to_height {
            return Ok(Vec::new());
        }
        let txn = self.begin_read()?;
        let fail = Failure { path: &self.id.path, doing: "cannot read blocks to serve" };
        let blocks = txn.open_table(BLOCKS).map_err(fail.of())?;
        let mut served = Vec::new();
        let mut bytes_total = 0;
        for (expected_height, entry) in (from_height..).zip(blocks.range(from_height..=to_height).map_err(fail.of())?) {
            let (height, bytes) = entry.map_err(fail.of())?;
            if height.value() != expected_height {
                break;
            }
            bytes_total += bytes.value().len();
            if bytes_total > tinychain_core::limits::SYNC_RESPONSE_BYTES_MAX && !served.is_empty() {
                break;
            }
            served.push(Arc::new(self.id.decode::<Block>("blocks", expected_height, bytes.value())?));
        }
        Ok(served)
    }

    /// The undo delta of the canonical block at `height` (none for genesis).
    pub fn undo_at(&self, height: Height) -> Result<Option<StateDelta>, StorageError> {
        let txn = self.begin_read()?;
        let fail = Failure { path: &self.id.path, doing: "cannot read undo data" };
        let undo = txn.open_table(UNDO).map_err(fail.of())?;
        let bytes = undo.get(height).map_err(fail.of())?;
        bytes.map(|bytes| self.id.decode("undo", height, bytes.value())).transpose()
    }

    /// An account at the tip; `None` if it has never held coins.
    pub fn account(&self, address: &Address) -> Result<Option<Account>, StorageError> {
        let (txn, pending) = self.begin_view()?;
        self.account_in(&txn, &pending, address)
    }

    fn account_in(
        &self,
        txn: &redb::ReadTransaction,
        pending: &Pending,
        address: &Address,
    ) -> Result<Option<Account>, StorageError> {
        match pending.account(address) {
            Some(account) => Ok(account),
            None => settled::settled_account(&self.id, txn, address),
        }
    }

    /// Where a transfer was committed on the canonical chain.
    pub fn tx_location(&self, id: &Hash) -> Result<Option<TxLocation>, StorageError> {
        let (txn, pending) = self.begin_view()?;
        match pending.tx_location(id) {
            Some(location) => Ok(Some(location)),
            None => settled::settled_tx_location(&self.id, &txn, id),
        }
    }

    /// Transfers sent or received by `address`, newest first, strictly below `before_height`
    /// when given, at most `limit`. A transfer to oneself appears once.
    pub fn history(
        &self,
        address: &Address,
        before_height: Option<Height>,
        limit: usize,
    ) -> Result<Vec<TxLocation>, StorageError> {
        if limit == 0 || before_height == Some(0) {
            return Ok(Vec::new());
        }
        let (txn, pending) = self.begin_view()?;
        self.history_in(&txn, &pending, address, before_height, limit)
    }

    fn history_in(
        &self,
        txn: &redb::ReadTransaction,
        pending: &Pending,
        address: &Address,
        before_height: Option<Height>,
        limit: usize,
    ) -> Result<Vec<TxLocation>, StorageError> {
        let mut locations = Vec::new();
        // The pending blocks are above every settled one.
        pending.history(address, before_height, limit, &mut locations);
        settled::settled_history(&self.id, txn, address, before_height, limit, &mut locations)?;
        Ok(locations)
    }

    /// The ranking that elected the canonical block at `height` (none for genesis).
    pub fn election_at(&self, height: Height) -> Result<Option<Vec<Candidate>>, StorageError> {
        let txn = self.begin_read()?;
        let fail = Failure { path: &self.id.path, doing: "cannot read elections" };
        let elections = txn.open_table(ELECTIONS).map_err(fail.of())?;
        let bytes = elections.get(height).map_err(fail.of())?;
        bytes.map(|bytes| self.id.decode("elections", height, bytes.value())).transpose()
    }

    /// The peers table, in the order it was saved.
    pub fn peers(&self) -> Result<Vec<PeerAddress>, StorageError> {
        let txn = self.begin_read()?;
        let fail = Failure { path: &self.id.path, doing: "cannot read peers" };
        let peers = txn.open_table(PEERS).map_err(fail.of())?;
        let mut list = Vec::new();
        for entry in peers.range::<u32>(..).map_err(fail.of())? {
            let (index, bytes) = entry.map_err(fail.of())?;
            list.push(self.id.decode("peers", index.value(), bytes.value())?);
        }
        Ok(list)
    }

    /// Replaces the peers table with `peers`.
    pub fn save_peers(&self, peers: &[PeerAddress]) -> Result<(), StorageError> {
        let txn = self.begin_write()?;
        {
            let fail = Failure { path: &self.id.path, doing: "cannot save peers" };
            let mut table = txn.open_table(PEERS).map_err(fail.of())?;
            table.retain(|_, _| false).map_err(fail.of())?;
            for (index, peer) in peers.iter().enumerate() {
                let index = u32::try_from(index).map_err(|_| StorageError::Io {
                    path: self.id.path.clone(),
                    detail: format!("cannot save {} peers: at most 2^32 fit", peers.len()),
                })?;
                table.insert(index, codec::encode(peer).as_slice()).map_err(fail.of())?;
            }
        }
        txn.commit().map_err(|error| redb_error(&self.id.path, "cannot commit peers", error))
    }

    // ---- the pending-transfer journal and the dropped transfers -------------------------------

    /// Adds transfers this node accepted from its own RPC clients, in one durable write
    /// transaction (so a client told "accepted" is never told so of a transfer a crash loses).
    /// Re-adding an id already present is a no-op. Refuses with `JournalFull`, writing nothing,
    /// if the journal would pass `JOURNAL_TRANSFERS_MAX` entries.
    pub fn journal_add(&self, transfers: &[(Hash, Transfer)]) -> Result<(), StorageError> {
        if transfers.is_empty() {
            return Ok(());
        }
        let _journal_writer = self.journal.lock_writer();
        let txn = self.begin_write()?;
        let entries = {
            let fail = Failure { path: &self.id.path, doing: "cannot add to the journal" };
            let mut journal = txn.open_table(JOURNAL).map_err(fail.of())?;
            for (id, transfer) in transfers {
                assert_eq!(*id, transfer_id(transfer), "a journal entry is named by its transfer's id");
                let key = journal_key(&transfer.from, transfer.nonce, id);
                // The id is the hash of the whole transfer, so an entry already present holds
                // these very bytes: writing them again changes nothing.
                journal.insert(&key, codec::encode(transfer).as_slice()).map_err(fail.of())?;
            }
            journal.len().map_err(fail.of())?
        };
        if entries > JOURNAL_TRANSFERS_MAX as u64 {
            txn.abort().map_err(|error| redb_error(&self.id.path, "cannot abort a refused journal write", error))?;
            return Err(StorageError::JournalFull { held: self.journal.entries(), max: JOURNAL_TRANSFERS_MAX });
        }
        txn.commit().map_err(|error| redb_error(&self.id.path, "cannot commit to the journal", error))?;
        self.journal.set_entries(entries);
        Ok(())
    }

    /// Every journal entry, ordered by sender address, then nonce, then id: the order they are
    /// resubmitted in after a restart (a sender's lower nonces first).
    pub fn journal(&self) -> Result<Vec<(Hash, Transfer)>, StorageError> {
        let txn = self.begin_read()?;
        let fail = Failure { path: &self.id.path, doing: "cannot read the journal" };
        let journal = txn.open_table(JOURNAL).map_err(fail.of())?;
        let mut entries = Vec::new();
        for entry in journal.range::<&[u8; JOURNAL_KEY_BYTES]>(..).map_err(fail.of())? {
            let (key, bytes) = entry.map_err(fail.of())?;
            let ((sender, nonce), id) = journal_slot_and_id(key.value());
            let transfer: Transfer = self.id.decode("journal", id, bytes.value())?;
            if transfer.from != sender || transfer.nonce != nonce {
                return Err(self.id.corrupt(format!(
                    "table journal, key {id:?}: the key names sender {sender:?} nonce {nonce}, the transfer \
                     is from {:?} with nonce {}",
                    transfer.from, transfer.nonce
                )));
            }
            entries.push((id, transfer));
        }
        Ok(entries)
    }

    /// Number of journal entries, from memory.
    pub fn journal_len(&self) -> usize {
        self.journal.entries()
    }

    /// Removes journal entries by (sender, nonce, id) in one durable transaction; entries not
    /// in the journal are ignored.
    pub fn journal_remove(&self, entries: &[(Hash, Transfer)]) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _journal_writer = self.journal.lock_writer();
        let txn = self.begin_write()?;
        let remaining = {
            let fail = Failure { path: &self.id.path, doing: "cannot remove from the journal" };
            let mut journal = txn.open_table(JOURNAL).map_err(fail.of())?;
            for (id, transfer) in entries {
                journal.remove(&journal_key(&transfer.from, transfer.nonce, id)).map_err(fail.of())?;
            }
            journal.len().map_err(fail.of())?
        };
        txn.commit().map_err(|error| redb_error(&self.id.path, "cannot commit journal removals", error))?;
        self.journal.set_entries(remaining);
        Ok(())
    }

    /// Records dropped transfers in one durable transaction: each id -> its record (recording
    /// an id again replaces its record, which then counts as the newest), forgetting the oldest
    /// past `DROPPED_TRANSFERS_KEPT`, and deleting each one's journal entry.
    pub fn record_dropped(&self, dropped: &[DroppedTransfer]) -> Result<(), StorageError> {
        self.record_dropped_keeping(dropped, DROPPED_TRANSFERS_KEPT)
    }

    /// `record_dropped` with the bound as a parameter, so tests can reach it with a few rows.
    fn record_dropped_keeping(&self, dropped: &[DroppedTransfer], kept: usize) -> Result<(), StorageError> {
        if dropped.is_empty() {
            return Ok(());
        }
        let _journal_writer = self.journal.lock_writer();
        let txn = self.begin_write()?;
        let journal_entries = {
            let fail = Failure { path: &self.id.path, doing: "cannot record dropped transfers" };
            let mut records = txn.open_table(DROPPED).map_err(fail.of())?;
            let mut order = txn.open_table(DROPPED_ORDER).map_err(fail.of())?;
            let mut journal = txn.open_table(JOURNAL).map_err(fail.of())?;
            let last_sequence = order.last().map_err(fail.of())?.map(|(sequence, _)| sequence.value());
            let first_sequence = last_sequence.map_or(0, |last| last + 1);
            for (sequence, record) in (first_sequence..).zip(dropped) {
                assert_eq!(record.id, transfer_id(&record.transfer), "a dropped record is named by its transfer's id");
                let previous =
                    records.insert(&record.id.0, codec::encode(&(sequence, record)).as_slice()).map_err(fail.of())?;
                if let Some(previous) = previous {
                    let (previous_sequence, _): (u64, DroppedTransfer) =
                        self.id.decode("dropped", record.id, previous.value())?;
                    drop(previous);
                    order.remove(previous_sequence).map_err(fail.of())?;
                }
                order.insert(sequence, &record.id.0).map_err(fail.of())?;
                journal
                    .remove(&journal_key(&record.transfer.from, record.transfer.nonce, &record.id))
                    .map_err(fail.of())?;
            }
            self.forget_oldest_dropped(&mut records, &mut order, kept)?;
            journal.len().map_err(fail.of())?
        };
        txn.commit().map_err(|error| redb_error(&self.id.path, "cannot commit dropped transfers", error))?;
        self.journal.set_entries(journal_entries);
        Ok(())
    }

    /// Deletes the oldest dropped records until at most `kept` remain.
    fn forget_oldest_dropped(
        &self,
        records: &mut redb::Table<&'static [u8; 32], &'static [u8]>,
        order: &mut redb::Table<u64, &'static [u8; 32]>,
        kept: usize,
    ) -> Result<(), StorageError> {
        let fail = Failure { path: &self.id.path, doing: "cannot forget old dropped transfers" };
        while records.len().map_err(fail.of())? > kept as u64 {
            let oldest = order.pop_first().map_err(fail.of())?.map(|(sequence, id)| (sequence.value(), *id.value()));
            let Some((sequence, id)) = oldest else {
                return Err(self.id.corrupt("table dropped_order has fewer rows than table dropped".into()));
            };
            let removed = records.remove(&id).map_err(fail.of())?;
            let Some(removed) = removed else {
                return Err(self.id.corrupt(format!(
                    "table dropped_order, key {sequence}: names transfer {:?}, which table dropped does not hold",
                    Hash(id)
                )));
            };
            let (removed_sequence, _): (u64, DroppedTransfer) = self.id.decode("dropped", Hash(id), removed.value())?;
            if removed_sequence != sequence {
                return Err(self.id.corrupt(format!(
                    "table dropped_order, key {sequence}: names transfer {:?}, whose record has sequence \
                     {removed_sequence}",
                    Hash(id)
                )));
            }
        }
        Ok(())
    }

    /// The dropped record of a transfer, if it is remembered.
    pub fn dropped(&self, id: &Hash) -> Result<Option<DroppedTransfer>, StorageError> {
        let txn = self.begin_read()?;
        let fail = Failure { path: &self.id.path, doing: "cannot read dropped transfers" };
        let records = txn.open_table(DROPPED).map_err(fail.of())?;
        let Some(bytes) = records.get(&id.0).map_err(fail.of())? else { return Ok(None) };
        let (_, record): (u64, DroppedTransfer) = self.id.decode("dropped", id, bytes.value())?;
        if record.id != *id {
            return Err(self.id.corrupt(format!("table dropped, key {id:?}: holds the record of {:?}", record.id)));
        }
        Ok(Some(record))
    }

    /// The canonical committed transfer that used `from`'s `nonce`: its id and height. Found
    /// through `address_history`: a sender's transfers are in chain order with nonces rising by
    /// one, so a nonce at or past the tip account's is unused, and the scan starts from the end
    /// nearer the nonce and stops once it passes it. Each entry visited decodes its block (once
    /// per block), because the index does not say which side of a transfer the address was on.
    pub fn committed_transfer_at(&self, from: &Address, nonce: u64) -> Result<Option<(Hash, Height)>, StorageError> {
        let (txn, pending) = self.begin_view()?;
        let Some(account) = self.account_in(&txn, &pending, from)? else { return Ok(None) };
        if nonce >= account.nonce {
            return Ok(None);
        }
        let fail = Failure { path: &self.id.path, doing: "cannot look up a committed nonce" };
        let blocks = txn.open_table(BLOCKS).map_err(fail.of())?;
        let mut locations = self.history_in(&txn, &pending, from, None, usize::MAX)?;
        let newest_first = nonce >= account.nonce / 2;
        if !newest_first {
            locations.reverse();
        }
        let mut block: Option<Arc<Block>> = None;
        for location in locations {
            if block.as_ref().map(|block| block.header.height) != Some(location.height) {
                block = Some(
                    self.block_in(&blocks, location.height)?
                        .ok_or_else(|| self.id.missing_row("blocks", location.height))?,
                );
            }
            let transfer = block.as_ref().and_then(|block| block.transfers.get(location.index as usize));
            let Some(transfer) = transfer else {
                return Err(self.id.corrupt(format!(
                    "the address history names transfer {} of block {}, which has fewer",
                    location.index, location.height
                )));
            };
            if transfer.from != *from {
                continue;
            }
            if transfer.nonce == nonce {
                return Ok(Some((location.id, location.height)));
            }
            if (newest_first && transfer.nonce < nonce) || (!newest_first && transfer.nonce > nonce) {
                break;
            }
        }
        Ok(None)
    }

    // ---- helpers ---------------------------------------------------------------------------

    fn begin_write(&self) -> Result<redb::WriteTransaction, StorageError> {
        let mut txn =
            self.database.begin_write().map_err(|error| redb_error(&self.id.path, "cannot begin a write", error))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|error| redb_error(&self.id.path, "cannot ask for durable commits", error))?;
        Ok(txn)
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, StorageError> {
        self.database.begin_read().map_err(|error| redb_error(&self.id.path, "cannot begin a read", error))
    }

    fn meta<T: DeserializeOwned>(&self, key: &str) -> Result<T, StorageError> {
        let txn = self.begin_read()?;
        let meta =
            txn.open_table(META).map_err(|error| redb_error(&self.id.path, "cannot read the meta table", error))?;
        self.id.meta_value(&meta, key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tinychain_core::genesis::Allocation;
    use tinychain_core::mempool::DropReason;
    use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer};
    use tinychain_core::types::{BlockHeader, Signature};

    fn dropped_of(genesis: &Genesis, nonce: u64) -> DroppedTransfer {
        let transfer = sign_transfer(&account_key(0), &genesis.chain_id, account_key(1).address(), 5, 1, nonce);
        DroppedTransfer { id: transfer_id(&transfer), transfer, reason: DropReason::Unaffordable, tip_height: nonce }
    }

    fn rows(storage: &Storage) -> (u64, Vec<(u64, Hash)>) {
        let txn = storage.begin_read().unwrap();
        let records = txn.open_table(DROPPED).unwrap().len().unwrap();
        let order = txn.open_table(DROPPED_ORDER).unwrap();
        let order = order
            .range::<u64>(..)
            .unwrap()
            .map(|entry| entry.map(|(sequence, id)| (sequence.value(), Hash(*id.value()))).unwrap())
            .collect();
        (records, order)
    }

    /// The bound, with 3 rows kept instead of `DROPPED_TRANSFERS_KEPT`: the oldest go first,
    /// and a record written again counts as the newest (and once).
    #[test]
    fn dropped_records_past_the_bound_forget_the_oldest() {
        let genesis = fast_genesis(1, 2);
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("chain.redb");
        let storage = Storage::create(&path, &genesis).unwrap();
        let records: Vec<DroppedTransfer> = (0..6).map(|nonce| dropped_of(&genesis, nonce)).collect();
        let remembered = |storage: &Storage| -> Vec<bool> {
            records.iter().map(|record| storage.dropped(&record.id).unwrap().is_some()).collect()
        };

        storage.record_dropped_keeping(&records[..2], 3).unwrap();
        assert_eq!(remembered(&storage), [true, true, false, false, false, false]);
        // Three more in one call: the oldest two of five go.
        storage.record_dropped_keeping(&records[2..5], 3).unwrap();
        assert_eq!(remembered(&storage), [false, false, true, true, true, false]);
        assert_eq!(rows(&storage), (3, vec![(2, records[2].id), (3, records[3].id), (4, records[4].id)]));
        // Record 2 again (now the newest), then record 5: record 3 is the oldest and goes.
        storage.record_dropped_keeping(&records[2..3], 3).unwrap();
        assert_eq!(rows(&storage), (3, vec![(3, records[3].id), (4, records[4].id), (5, records[2].id)]));
        storage.record_dropped_keeping(&records[5..], 3).unwrap();
        assert_eq!(remembered(&storage), [false, false, true, false, true, true]);
        assert_eq!(rows(&storage), (3, vec![(4, records[4].id), (5, records[2].id), (6, records[5].id)]));
        // The same id twice in one call counts once.
        storage.record_dropped_keeping(&[records[0].clone(), records[0].clone()], 3).unwrap();
        assert_eq!(remembered(&storage), [true, false, true, false, false, true]);
        assert_eq!(rows(&storage), (3, vec![(5, records[2].id), (6, records[5].id), (8, records[0].id)]));
        // A smaller bound later forgets down to it; the public bound keeps everything here.
        storage.record_dropped_keeping(&records[1..2], 1).unwrap();
        assert_eq!(rows(&storage), (1, vec![(9, records[1].id)]));
        storage.record_dropped(&records).unwrap();
        assert_eq!(rows(&storage).0, 6);
        drop(storage);
        let storage = Storage::open(&path, &genesis).unwrap();
        assert_eq!(remembered(&storage), [true; 6]);
    }

    // ---- the settled tables and the pending blocks ------------------------------------------

    /// Genesis account `index`: an address from a hash (no key derivation), so a test can have
    /// thousands.
    fn test_address(index: u64) -> Address {
        Address(hash_bytes(&index.to_le_bytes()).0)
    }

    /// A chain built straight from a `ChainState`, as `storage_bench` builds it: random transfers
    /// between the genesis accounts (a quarter of them from account 0, so its chunk fills
    /// several index rows; one in ten to a new address), unsigned (storage checks no
    /// signatures), the deltas and undos `apply_block` would compute.
    #[derive(Clone)]
    struct TestChain {
        genesis: Genesis,
        accounts: u64,
        state: ChainState,
        /// Canonical block hashes, genesis first, and the blocks above genesis with their undo.
        hashes: Vec<Hash>,
        blocks: Vec<(Arc<Block>, StateDelta)>,
        /// Ids of transfers rolled back and not applied again.
        rolled_back: BTreeSet<Hash>,
        random: u64,
    }

    impl TestChain {
        fn new(accounts: u64, seed: u64) -> TestChain {
            let mut genesis = fast_genesis(1, 0);
            genesis.allocations =
                (0..accounts).map(|index| Allocation { address: test_address(index), amount: 1_000_000_000 }).collect();
            let mut state = genesis_block(&genesis).1;
            // Storage computes no roots; neither does this copy.
            state.account_tree = Default::default();
            let hashes = vec![state.tip.hash];
            TestChain {
                genesis,
                accounts,
                state,
                hashes,
                blocks: Vec::new(),
                rolled_back: BTreeSet::new(),
                random: seed,
            }
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.random ^= self.random << 13;
            self.random ^= self.random >> 7;
            self.random ^= self.random << 17;
            self.random % bound
        }

        /// The next block, with `transfers` transfers; `variant` changes its timestamp, so two
        /// blocks on the same parent differ.
        fn apply(&mut self, transfers: usize, variant: u64) -> ChainOp {
            let height = self.state.tip.height + 1;
            let producer = self.genesis.validators[0].id;
            let mut touched: BTreeMap<Address, Account> = BTreeMap::new();
            let mut body = Vec::new();
            for _ in 0..transfers {
                let from = if self.below(4) == 0 { test_address(0) } else { test_address(self.below(self.accounts)) };
                let to = if self.below(10) == 0 {
                    test_address(1 << 40 | self.below(1 << 30))
                } else {
                    test_address(self.below(self.accounts))
                };
                let mut sender = touched.get(&from).copied().unwrap_or_else(|| self.state.account(&from));
                let transfer = Transfer {
                    chain_id: self.genesis.chain_id.clone(),
                    from,
                    to,
                    amount: 1 + variant,
                    fee: 1,
                    nonce: sender.nonce,
                    signature: Signature([7; 64]),
                };
                sender.balance -= 2 + variant;
                sender.nonce += 1;
                touched.insert(from, sender);
                let mut recipient = touched.get(&to).copied().unwrap_or_else(|| self.state.account(&to));
                recipient.balance += 1 + variant;
                touched.insert(to, recipient);
                self.rolled_back.remove(&transfer_id(&transfer));
                body.push(transfer);
            }
            let mut producer_account = touched.get(&producer).copied().unwrap_or_else(|| self.state.account(&producer));
            producer_account.balance += transfers as u64 + self.genesis.parameters.block_reward;
            touched.insert(producer, producer_account);
            let header = BlockHeader {
                chain_id: self.genesis.chain_id.clone(),
                height,
                prev_hash: self.state.tip.hash,
                timestamp_ms: self.state.tip_timestamp_ms + 100 + variant,
                producer,
                rank: 0,
                tx_root: Hash::default(),
                report_root: Hash::default(),
                evidence_root: Hash::default(),
                state_root: Hash::default(),
                signature: Signature::default(),
            };
            let hash = block_hash(&header);
            let delta = StateDelta {
                tip: Checkpoint { height, hash },
                tip_timestamp_ms: header.timestamp_ms,
                accounts: touched.into_iter().map(|(address, account)| (address, Some(account))).collect(),
                validators: vec![],
                finality: self.state.finality.clone(),
                supply: self.state.supply + self.genesis.parameters.block_reward,
                offences: vec![],
            };
            let undo = self.state.undo_for(&delta);
            self.state.apply_delta(&delta);
            let block = Arc::new(Block { header, transfers: body, reports: vec![], evidence: vec![] });
            self.hashes.push(hash);
            self.blocks.push((block.clone(), undo.clone()));
            ChainOp::Apply { block, hash, delta, undo }
        }

        fn roll_back(&mut self) -> ChainOp {
            let height = self.state.tip.height;
            let hash = self.hashes.pop().unwrap();
            let (block, undo) = self.blocks.pop().unwrap();
            self.rolled_back.extend(block.transfers.iter().map(transfer_id));
            self.state.apply_delta(&undo);
            ChainOp::Rollback { height, hash, undo }
        }

        fn commit(&self, ops: Vec<ChainOp>, finalized: Height) -> Commit {
            let finalized = Checkpoint { height: finalized, hash: self.hashes[finalized as usize] };
            Commit { ops, tip: self.state.tip, justified: finalized, finalized }
        }

        /// Each canonical transfer's location, and each address's history newest first.
        fn indexes(&self) -> (BTreeMap<Hash, TxLocation>, BTreeMap<Address, Vec<TxLocation>>) {
            let mut locations = BTreeMap::new();
            let mut histories: BTreeMap<Address, Vec<TxLocation>> = BTreeMap::new();
            for (block, _) in &self.blocks {
                for (index, transfer) in block.transfers.iter().enumerate() {
                    let id = transfer_id(transfer);
                    let location = TxLocation { id, height: block.header.height, index: index as u32 };
                    locations.insert(id, location);
                    histories.entry(transfer.from).or_default().push(location);
                    if transfer.to != transfer.from {
                        histories.entry(transfer.to).or_default().push(location);
                    }
                }
            }
            for history in histories.values_mut() {
                history.reverse();
            }
            (locations, histories)
        }
    }

    /// Every answer that reads the accounts or the transfer indexes agrees with `chain`.
    fn assert_answers_like(storage: &Storage, chain: &TestChain, context: &str) {
        let restored = storage.restored().unwrap();
        assert_eq!(restored.state, chain.state, "{context}: restored state");
        for (address, account) in &chain.state.accounts {
            assert_eq!(storage.account(address).unwrap(), Some(*account), "{context}: account {address:?}");
        }
        assert_eq!(storage.account(&test_address(u64::MAX)).unwrap(), None, "{context}: an account never written");
        let (locations, histories) = chain.indexes();
        for (id, location) in &locations {
            assert_eq!(storage.tx_location(id).unwrap(), Some(*location), "{context}: tx_location");
        }
        for id in &chain.rolled_back {
            assert_eq!(storage.tx_location(id).unwrap(), None, "{context}: a rolled-back transfer");
        }
        for (address, history) in &histories {
            assert_eq!(&storage.history(address, None, usize::MAX).unwrap(), history, "{context}: history");
            assert_eq!(storage.history(address, None, 3).unwrap(), history[..history.len().min(3)], "{context}");
            let middle = history[history.len() / 2].height;
            let below: Vec<TxLocation> = history.iter().filter(|location| location.height < middle).copied().collect();
            assert_eq!(storage.history(address, Some(middle), usize::MAX).unwrap(), below, "{context}: history below");
        }
        for (block, _) in chain.blocks.iter().rev().take(3) {
            for transfer in block.transfers.iter().take(20) {
                let found = storage.committed_transfer_at(&transfer.from, transfer.nonce).unwrap();
                assert_eq!(
                    found,
                    Some((transfer_id(transfer), block.header.height)),
                    "{context}: committed_transfer_at"
                );
            }
        }
    }

    fn pending_of(storage: &Storage) -> Pending {
        Pending::clone(&storage.pending.read().unwrap())
    }

    /// Many commits with finality two blocks behind: every commit folds one slice; the answers
    /// are right after each, the pending blocks stay bounded, and reopening rebuilds the very
    /// same pending blocks (from `blocks` and `account_deltas`) and answers the same.
    #[test]
    fn accounts_and_indexes_read_back_right_across_many_folds_and_reopening() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("chain.redb");
        let mut chain = TestChain::new(2_000, 0x5eed);
        let mut storage = Storage::create(&path, &chain.genesis).unwrap();
        assert_answers_like(&storage, &chain, "at genesis");
        let mut folded_records = 0;
        for round in 1..=3 * settled::FOLD_SLICES as u64 + 5 {
            let op = chain.apply(60, 0);
            let finalized = chain.state.tip.height.saturating_sub(2);
            storage.commit(&chain.commit(vec![op], finalized)).unwrap();
            let fold = storage.last_fold();
            assert_eq!(fold.slices, 1, "one slice a commit");
            assert!(fold.blocks_pending <= settled::FOLD_SLICES + 2, "round {round}: {fold:?}");
            folded_records += fold.account_records + fold.index_records;
            let tip = chain.state.tip.height;
            assert!(pending_of(&storage).lowest_folded() + fold.blocks_pending as u64 == tip);
            if round % 10 == 0 {
                assert_answers_like(&storage, &chain, &format!("after block {round}"));
            }
        }
        assert!(folded_records > 5_000, "the folds wrote the blocks' changes: {folded_records}");
        let (_, histories) = chain.indexes();
        let history_row_records = settled::INDEX_ROW_BYTES_MAX / 76;
        assert!(histories[&test_address(0)].len() > 4 * history_row_records, "account 0 fills index rows");
        assert_answers_like(&storage, &chain, "at the end");

        let before = pending_of(&storage);
        drop(storage);
        storage = Storage::open(&path, &chain.genesis).unwrap();
        assert_eq!(pending_of(&storage), before, "reopening rebuilds the same pending blocks");
        assert_answers_like(&storage, &chain, "reopened");
        // And it goes on from there.
        for _ in 0..5 {
            let op = chain.apply(60, 0);
            let finalized = chain.state.tip.height - 2;
            storage.commit(&chain.commit(vec![op], finalized)).unwrap();
        }
        assert_answers_like(&storage, &chain, "reopened and continued");
    }

    /// Blocks above the final one stay pending while slices fold the final blocks below them;
    /// a reorganisation then rolls them back (their changes must leave no trace in the settled
    /// rows) and applies another branch. A rollback of a block some slice has folded (a final
    /// block) is refused and writes nothing.
    #[test]
    fn rollbacks_of_blocks_pending_across_folds_leave_no_trace() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("chain.redb");
        let mut chain = TestChain::new(1_000, 0xfade);
        let storage = Storage::create(&path, &chain.genesis).unwrap();
        // Finality five blocks behind: each block stays pending and unfolded for five commits
        // while slices fold what is below it.
        for _ in 0..2 * settled::FOLD_SLICES {
            let op = chain.apply(40, 0);
            let finalized = chain.state.tip.height.saturating_sub(5);
            storage.commit(&chain.commit(vec![op], finalized)).unwrap();
        }
        let finalized = chain.state.tip.height - 5;
        assert!(pending_of(&storage).highest_folded() == finalized, "some slice folded through the final block");
        let mut ops: Vec<ChainOp> = (0..5).map(|_| chain.roll_back()).collect();
        ops.extend((0..7).map(|_| chain.apply(40, 1)));
        storage.commit(&chain.commit(ops, finalized)).unwrap();
        assert_answers_like(&storage, &chain, "after the reorganisation");
        for _ in 0..settled::FOLD_SLICES + 2 {
            let op = chain.apply(40, 0);
            let finalized = chain.state.tip.height - 2;
            storage.commit(&chain.commit(vec![op], finalized)).unwrap();
        }
        assert_answers_like(&storage, &chain, "after the new branch is folded");

        // Down to the highest folded height: the first rollbacks are fine, the one of a folded
        // block is refused, and nothing of that commit is written.
        let highest_folded = pending_of(&storage).highest_folded();
        let before = chain.clone();
        let pending_before = pending_of(&storage);
        let ops: Vec<ChainOp> = (highest_folded..=chain.state.tip.height).rev().map(|_| chain.roll_back()).collect();
        let result = storage.commit(&chain.commit(ops, chain.state.tip.height));
        assert!(matches!(result, Err(StorageError::CommitMismatch { .. })), "{result:?}");
        assert_eq!(pending_of(&storage), pending_before, "a refused commit leaves the pending blocks alone");
        assert_eq!(storage.tip().unwrap(), before.state.tip);
        assert_answers_like(&storage, &before, "after a refused rollback");
        drop(storage);
        let storage = Storage::open(&path, &before.genesis).unwrap();
        assert_answers_like(&storage, &before, "reopened after a refused rollback");
    }

    /// A commit whose transaction is dropped after all its writes (a crash before redb commits
    /// it) leaves the database and the pending blocks as the last commit left them, in memory
    /// and after reopening; the same commit then goes through.
    #[test]
    fn a_crash_before_the_transaction_commits_loses_nothing_committed() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("chain.redb");
        let mut chain = TestChain::new(500, 0xc0de);
        let mut storage = Storage::create(&path, &chain.genesis).unwrap();
        for _ in 0..settled::FOLD_SLICES + 3 {
            let op = chain.apply(30, 0);
            let finalized = chain.state.tip.height - 1;
            storage.commit(&chain.commit(vec![op], finalized)).unwrap();
        }
        let committed = chain.clone();
        let pending_before = pending_of(&storage);
        // A reorganisation and finality moving: rollbacks, applies and a fold all written, then
        // lost.
        let mut ops = vec![chain.roll_back()];
        ops.extend((0..3).map(|_| chain.apply(30, 2)));
        let commit = chain.commit(ops, chain.state.tip.height - 1);
        storage.hooks.crash_before_commit.store(true, Ordering::Release);
        let result = storage.commit(&commit);
        assert!(matches!(result, Err(StorageError::Io { .. })), "{result:?}");
        assert_eq!(pending_of(&storage), pending_before);
        assert_answers_like(&storage, &committed, "after the crash, before reopening");
        drop(storage);
        storage = Storage::open(&path, &chain.genesis).unwrap();
        assert_eq!(pending_of(&storage), pending_before);
        assert_answers_like(&storage, &committed, "reopened after the crash");
        storage.commit(&commit).unwrap();
        assert_answers_like(&storage, &chain, "the same commit again");
        drop(storage);
        let storage = Storage::open(&path, &chain.genesis).unwrap();
        assert_answers_like(&storage, &chain, "reopened after it");
    }

    /// Past the bound on pending records a commit folds the next slices too, until the records
    /// not yet folded are under it again (or every slice is folded); the answers stay right.
    #[test]
    fn past_the_pending_bound_a_commit_folds_more_slices() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("chain.redb");
        let mut chain = TestChain::new(500, 0xb0b);
        let storage = Storage::create(&path, &chain.genesis).unwrap();
        let bound = 2_000;
        storage.hooks.pending_records_max.store(bound, Ordering::Release);
        let mut extra_folds = 0;
        for _ in 0..40 {
            let op = chain.apply(50, 0);
            let finalized = chain.state.tip.height - 1;
            storage.commit(&chain.commit(vec![op], finalized)).unwrap();
            let fold = storage.last_fold();
            assert!(fold.records_pending <= bound || fold.slices == settled::FOLD_SLICES, "{fold:?}");
            if fold.slices > 1 {
                extra_folds += 1;
            }
        }
        assert!(extra_folds >= 10, "{extra_folds} commits folded more than one slice");
        // Blocks of a burst, five to a commit: a commit folds all it must, never more.
        for _ in 0..8 {
            let ops = (0..5).map(|_| chain.apply(50, 0)).collect();
            let finalized = chain.state.tip.height - 1;
            storage.commit(&chain.commit(ops, finalized)).unwrap();
            let fold = storage.last_fold();
            assert!(fold.records_pending <= bound || fold.slices == settled::FOLD_SLICES, "{fold:?}");
        }
        assert_answers_like(&storage, &chain, "after folds past the bound");
        drop(storage);
        let storage = Storage::open(&path, &chain.genesis).unwrap();
        assert_answers_like(&storage, &chain, "reopened");
    }
}
