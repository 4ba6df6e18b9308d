//! The StorageEngine: one redb database per node holding the canonical chain, the account table
//! (the "coins database"), the undo data a reorganisation needs, a transaction index, the
//! elections, the peers table and the metadata. It carries out the core's storage actions
//! (`CommitBlocks`, `PersistReportState`) and builds the `Restored` event on start, so a restart
//! never replays the chain. `tinychain_core::testkit::ModelStorage` is its reference model: after
//! any sequence of actions both answer every question the same way.
//!
//! Contract:
//! - Every `Commit` is one redb write transaction: all its rollbacks and applies, the accounts,
//!   validator records, finality, undo data, transaction index, elections and the new tip,
//!   justified and final checkpoints. Killed at any instant, the database holds the state after
//!   the last transaction that returned `Ok`, never a part of one. Durability is redb's
//!   `Immediate` (fsync at commit): a commit that returned is on disk.
//! - `open` refuses a missing file, a file that is not a tinychain database, a database of another
//!   chain (chain id or genesis hash differ) or of an unknown schema version, with a message naming
//!   the path. Nothing is ever overwritten or recreated silently; `create` refuses an existing
//!   file.
//! - Readers (`block_at`, `account`, ...) see the last committed transaction; they may run on
//!   other threads while the driver commits (`Storage` is `Send + Sync`).
//!
//! Tables (keys big-endian so heights iterate in order; values bincode via `tinychain_core::codec`):
//! - `meta`: schema version, chain id, genesis hash, tip, justified, finalized, last vote and
//!   report sequence.
//! - `headers`: height -> block header of the canonical block at that height (genesis included).
//! - `blocks`: height -> the full canonical block.
//! - `block_heights`: block hash -> height (canonical blocks only).
//! - `undo`: height -> the undo delta of the canonical block at that height (height >= 1).
//! - `accounts`: address -> account, at the tip.
//! - `chain`: the rest of `ChainState` at the tip (tip, timestamp, validator records, finality,
//!   supply), one row.
//! - `tx_index`: transfer id -> (height, index in block), canonical blocks only.
//! - `address_history`: (address, height, index) -> transfer id, for both sender and receiver.
//! - `elections`: height -> the ranking that elected the canonical block at that height
//!   (`election::rank_candidates` over the parent's validator records).
//! - `peers`: the verified peer addresses the connection manager asked to keep.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tinychain_core::election::Candidate;
use tinychain_core::genesis::Genesis;
use tinychain_core::node::{Commit, Restored};
use tinychain_core::state::StateDelta;
use tinychain_core::types::{Account, Address, Block, Checkpoint, Hash, Height, Vote};
use tinychain_net::wire::PeerAddress;

/// The schema this build reads and writes; `open` refuses any other.
pub const SCHEMA_VERSION: u32 = 1;

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
        found_genesis: Hash,
        expected_chain_id: String,
        expected_genesis: Hash,
    },
    #[error("the database at {path} has schema version {found}, this build reads version {SCHEMA_VERSION}")]
    SchemaVersion { path: PathBuf, found: u32 },
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

/// The node's database. Cheap to share behind an `Arc`.
pub struct Storage {
    path: PathBuf,
}

impl Storage {
    /// Creates a new database at `path` holding the genesis block and state of `genesis`.
    pub fn create(path: &Path, genesis: &Genesis) -> Result<Storage, StorageError> {
        let _ = genesis;
        todo!("storage helper: {}", path.display())
    }

    /// Opens an existing database and checks it belongs to `genesis` (see the module contract).
    pub fn open(path: &Path, genesis: &Genesis) -> Result<Storage, StorageError> {
        let _ = genesis;
        todo!("storage helper: {}", path.display())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Carries out `Action::CommitBlocks` in one write transaction.
    pub fn commit(&self, commit: &Commit) -> Result<(), StorageError> {
        let _ = commit;
        todo!()
    }

    /// Carries out `Action::PersistReportState` (durably, before the report is sent).
    pub fn persist_report_state(&self, last_vote: Option<Vote>, report_sequence: u64) -> Result<(), StorageError> {
        let _ = (last_vote, report_sequence);
        todo!()
    }

    /// The `Restored` event for a starting node (same meaning as `ModelStorage::restored`).
    pub fn restored(&self) -> Result<Restored, StorageError> {
        todo!()
    }

    pub fn tip(&self) -> Result<Checkpoint, StorageError> {
        todo!()
    }

    pub fn finalized(&self) -> Result<Checkpoint, StorageError> {
        todo!()
    }

    /// The canonical block at `height` (genesis at 0).
    pub fn block_at(&self, height: Height) -> Result<Option<Arc<Block>>, StorageError> {
        let _ = height;
        todo!()
    }

    /// The canonical block with this hash, if it is canonical.
    pub fn block_by_hash(&self, hash: &Hash) -> Result<Option<Arc<Block>>, StorageError> {
        let _ = hash;
        todo!()
    }

    /// The answer to `Action::ServeBlocks` (same rule as `ModelStorage::blocks_to_serve`).
    pub fn blocks_to_serve(&self, from_height: Height, to_height: Height) -> Result<Vec<Arc<Block>>, StorageError> {
        let _ = (from_height, to_height);
        todo!()
    }

    /// The undo delta of the canonical block at `height` (none for genesis).
    pub fn undo_at(&self, height: Height) -> Result<Option<StateDelta>, StorageError> {
        let _ = height;
        todo!()
    }

    /// An account at the tip; `None` if it has never held coins.
    pub fn account(&self, address: &Address) -> Result<Option<Account>, StorageError> {
        let _ = address;
        todo!()
    }

    /// Where a transfer was committed on the canonical chain.
    pub fn tx_location(&self, id: &Hash) -> Result<Option<TxLocation>, StorageError> {
        let _ = id;
        todo!()
    }

    /// Transfers sent or received by `address`, newest first, strictly below `before_height`
    /// when given, at most `limit`.
    pub fn history(
        &self,
        address: &Address,
        before_height: Option<Height>,
        limit: usize,
    ) -> Result<Vec<TxLocation>, StorageError> {
        let _ = (address, before_height, limit);
        todo!()
    }

    /// The ranking that elected the canonical block at `height` (none for genesis).
    pub fn election_at(&self, height: Height) -> Result<Option<Vec<Candidate>>, StorageError> {
        let _ = height;
        todo!()
    }

    /// The peers table.
    pub fn peers(&self) -> Result<Vec<PeerAddress>, StorageError> {
        todo!()
    }

    /// Replaces the peers table with `peers`.
    pub fn save_peers(&self, peers: &[PeerAddress]) -> Result<(), StorageError> {
        let _ = peers;
        todo!()
    }
}
