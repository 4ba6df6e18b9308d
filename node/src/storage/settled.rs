//! The settled tables and the blocks not yet folded into them: how a commit stays proportional
//! to its block rather than to the ledger.
//!
//! The account table and the two transfer indexes (transfer id -> location, address -> its
//! transfers) are keyed by hashes, so a block's writes land all over them. Written row by row,
//! a 10,000-transfer block touched most pages of each B-tree at a million accounts, and every
//! commit rewrote them. Here they are kept in two parts:
//!
//! - **Settled**: rows grouped by the first `CHUNK_BITS` bits of the key (the *chunk*), each
//!   row a sorted run of fixed-width records, so a row holds a whole neighbourhood of keys.
//!   `account_chunks` has one row per chunk (every account whose address falls in it);
//!   `tx_index_rows` and `address_history_rows` have a list of rows per chunk, appended to in
//!   chain order, each at most `INDEX_ROW_BYTES_MAX` bytes.
//! - **Pending**: the blocks above the point where the settled rows were last brought up to
//!   date, in memory (`Pending`), rebuilt at `open` from the `blocks` table and the
//!   `account_deltas` table (height -> the accounts the block wrote, a sequential append).
//!
//! The chunks are split into `FOLD_SLICES` slices of consecutive chunks. Each commit *folds*
//! one slice (in turn, round robin): the pending changes of final blocks whose keys fall in
//! that slice are merged into its rows. A slice remembers the final height it was folded
//! through (`folded`); the pending blocks above the lowest of those are kept, the others are
//! forgotten (and their `account_deltas` rows deleted); a pending block keeps one part per slice
//! in memory, dropped once that slice folded it. So a commit writes its block's own rows and
//! one slice's rows: a 32nd of the account chunks at most (one merge per chunk, however many
//! blocks are pending in it), and the index records of the pending blocks in that slice
//! appended to the last row of each chunk. Only final blocks are folded, and final blocks are
//! never rolled back: a rollback drops a pending block and never touches settled rows.
//!
//! A reader sees the settled rows plus, for a key in slice `s`, the pending blocks above
//! `folded[s]` (those at or below are already in its rows), newest first.
//!
//! When the pending blocks hold more than `PENDING_RECORDS_MAX` records not yet folded (a burst
//! of big blocks, as when syncing several to a commit), a commit folds the next slices too, until
//! they hold no more than that or it has folded every slice: memory stays bounded, and the cost
//! follows the burst rather than falling on one commit.

use super::{Failure, Identity, TxLocation};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use std::collections::BTreeMap;
use std::sync::Arc;
use tinychain_core::state::StateDelta;
use tinychain_core::types::{Account, Address, Block, Hash, Height};
use tinychain_core::validate::transfer_id;

/// Settled rows are grouped by the first 12 bits of their key: 4,096 chunks, about 244
/// accounts (11.7 KB) each at a million accounts.
pub(super) const CHUNK_BITS: u32 = 12;
pub(super) const CHUNKS: usize = 1 << CHUNK_BITS;
/// Each commit folds one of 32 slices of 128 chunks, so a pending change is settled within
/// 32 commits after its block is final. (16 slices wrote twice the account chunks a commit:
/// 5.4 MiB instead of 2.7 at a million accounts, a 10,000-transfer block's commit 87-93 ms
/// instead of 60-66 in `storage_bench`; the price is the pending blocks' memory, below.)
pub const FOLD_SLICES: usize = 32;
const CHUNKS_PER_SLICE: usize = CHUNKS / FOLD_SLICES;
/// Bytes per row of the two indexes at most: a row fits one 4 KiB redb page (52 history
/// records, 90 index records). Rows of 128 records (9.5 KiB, 5.5 KiB) took 16 KiB and 8 KiB
/// allocations, and left 40% of `address_history_rows` fragmented in `storage_bench`.
pub(super) const INDEX_ROW_BYTES_MAX: usize = 4_000;
/// Past this many records in pending blocks not yet folded (accounts, transfer ids and history
/// entries: about 50,000 for a 10,000-transfer block, some 44 bytes each in memory), a commit
/// folds more slices than one, until they are no more than this. Steady 10,000-transfer blocks
/// keep about 900,000 (the two blocks above the final one whole, and of the 32 below it the
/// parts their slices have not yet folded, half of them on average): roughly 45 MiB with the
/// blocks' transfer ids (kept until a block is folded whole), 75 MiB at the bound.
pub(super) const PENDING_RECORDS_MAX: usize = 1_500_000;

/// chunk -> records of `ACCOUNT_RECORD_BYTES`, sorted by address, one per account.
pub(super) const ACCOUNT_CHUNKS: TableDefinition<u16, &[u8]> = TableDefinition::new("account_chunks");
/// height -> the accounts the canonical block at that height wrote (`StateDelta::accounts`),
/// for pending blocks only.
pub(super) const ACCOUNT_DELTAS: TableDefinition<u64, &[u8]> = TableDefinition::new("account_deltas");
/// (chunk, row number) -> records of `TX_RECORD_BYTES`, sorted.
pub(super) const TX_INDEX_ROWS: TableDefinition<(u16, u32), &[u8]> = TableDefinition::new("tx_index_rows");
/// (chunk, row number) -> records of `HISTORY_RECORD_BYTES`, sorted.
pub(super) const HISTORY_ROWS: TableDefinition<(u16, u32), &[u8]> = TableDefinition::new("address_history_rows");

/// An account record: address, balance (u64 little-endian), nonce (u64 little-endian).
const ACCOUNT_RECORD_BYTES: usize = 48;
/// A transaction-index record: transfer id, height (u64 big-endian), index in the block (u32
/// big-endian). Sorted as bytes: by id.
const TX_RECORD_BYTES: usize = 44;
/// An address-history record: address, height (u64 big-endian), index in the block (u32
/// big-endian), transfer id. Sorted as bytes: by address, then chain order.
const HISTORY_RECORD_BYTES: usize = 76;

/// The chunk of a key: its first `CHUNK_BITS` bits.
pub(super) fn chunk_of(key: &[u8; 32]) -> u16 {
    u16::from_be_bytes([key[0], key[1]]) >> (16 - CHUNK_BITS)
}

fn slice_of(key: &[u8; 32]) -> usize {
    usize::from(chunk_of(key)) / CHUNKS_PER_SLICE
}

fn account_record(address: &Address, account: &Account) -> [u8; ACCOUNT_RECORD_BYTES] {
    let mut record = [0u8; ACCOUNT_RECORD_BYTES];
    record[..32].copy_from_slice(&address.0);
    record[32..40].copy_from_slice(&account.balance.to_le_bytes());
    record[40..].copy_from_slice(&account.nonce.to_le_bytes());
    record
}

fn account_of_record(record: &[u8]) -> (Address, Account) {
    let mut address = [0u8; 32];
    address.copy_from_slice(&record[..32]);
    let mut balance = [0u8; 8];
    balance.copy_from_slice(&record[32..40]);
    let mut nonce = [0u8; 8];
    nonce.copy_from_slice(&record[40..48]);
    (Address(address), Account { balance: u64::from_le_bytes(balance), nonce: u64::from_le_bytes(nonce) })
}

fn tx_record(id: &Hash, height: Height, index: u32) -> [u8; TX_RECORD_BYTES] {
    let mut record = [0u8; TX_RECORD_BYTES];
    record[..32].copy_from_slice(&id.0);
    record[32..40].copy_from_slice(&height.to_be_bytes());
    record[40..].copy_from_slice(&index.to_be_bytes());
    record
}

fn history_record(address: &Address, height: Height, index: u32, id: &Hash) -> [u8; HISTORY_RECORD_BYTES] {
    let mut record = [0u8; HISTORY_RECORD_BYTES];
    record[..32].copy_from_slice(&address.0);
    record[32..40].copy_from_slice(&height.to_be_bytes());
    record[40..44].copy_from_slice(&index.to_be_bytes());
    record[44..].copy_from_slice(&id.0);
    record
}

/// (height, index) stored big-endian at `offset` of a record.
fn location_at(record: &[u8], offset: usize) -> (Height, u32) {
    let mut height = [0u8; 8];
    height.copy_from_slice(&record[offset..offset + 8]);
    let mut index = [0u8; 4];
    index.copy_from_slice(&record[offset + 8..offset + 12]);
    (u64::from_be_bytes(height), u32::from_be_bytes(index))
}

fn hash_at(record: &[u8], offset: usize) -> Hash {
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&record[offset..offset + 32]);
    Hash(hash)
}

/// A row's records of `width` bytes, read in place: a row whose length is not a whole number
/// of records is `Corrupt`. Point reads search it as it is (a row out of order gives a wrong
/// answer for that row, never a panic); rows that are rewritten or read whole are checked in
/// full by `checked_records` first.
struct Records<'a> {
    bytes: &'a [u8],
    width: usize,
}

impl<'a> Records<'a> {
    fn new(
        id: &Identity,
        table: &'static str,
        key: impl std::fmt::Debug,
        bytes: &'a [u8],
        width: usize,
    ) -> Result<Records<'a>, super::StorageError> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(width) {
            return Err(id.corrupt(format!(
                "table {table}, key {key:?}: a row of {} bytes is not a whole number of {width}-byte records",
                bytes.len()
            )));
        }
        Ok(Records { bytes, width })
    }

    fn len(&self) -> usize {
        self.bytes.len() / self.width
    }

    fn get(&self, index: usize) -> &'a [u8] {
        &self.bytes[index * self.width..(index + 1) * self.width]
    }

    /// The records whose first 32 bytes are `key`, as an index range (records are sorted).
    fn matching(&self, key: &[u8; 32]) -> std::ops::Range<usize> {
        let first = self.partition_point(|record| record[..32] < key[..]);
        let end = self.partition_point(|record| record[..32] <= key[..]);
        first..end.max(first)
    }

    fn partition_point(&self, is_before: impl Fn(&[u8]) -> bool) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if is_before(self.get(middle)) {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }

    /// Strictly ascending, every key (the first 32 bytes) in `chunk`.
    fn check_order(
        &self,
        id: &Identity,
        table: &'static str,
        key: impl std::fmt::Debug,
        chunk: u16,
        keys_distinct: bool,
    ) -> Result<(), super::StorageError> {
        for index in 0..self.len() {
            let record = self.get(index);
            let mut record_key = [0u8; 32];
            record_key.copy_from_slice(&record[..32]);
            if chunk_of(&record_key) != chunk {
                return Err(id.corrupt(format!(
                    "table {table}, key {key:?}: record {index} belongs to chunk {}, not to this row's chunk {chunk}",
                    chunk_of(&record_key)
                )));
            }
            if index > 0 {
                let previous = self.get(index - 1);
                let in_order = if keys_distinct { previous[..32] < record[..32] } else { previous < record };
                if !in_order {
                    return Err(id.corrupt(format!("table {table}, key {key:?}: record {index} is out of order")));
                }
            }
        }
        Ok(())
    }
}

/// What the block at one pending height changed, sorted for lookups, in one part per slice:
/// a slice's part is dropped once the slice has folded it, so the memory pending blocks take
/// is what no slice holds yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PendingBlock {
    /// Its transfers' ids, in block order (position = index in the block).
    ids: Arc<Vec<Hash>>,
    /// By slice: `None` once folded.
    parts: Vec<Option<Arc<PendingPart>>>,
}

/// The part of a pending block whose keys fall in one slice.
#[derive(Debug, PartialEq, Eq)]
struct PendingPart {
    /// The accounts it wrote (`None`: removed), sorted by address, each once.
    accounts: Vec<(Address, Option<Account>)>,
    /// Positions in the block's `ids` of the transfers whose id is in the slice, sorted by id.
    ids_by_id: Vec<u32>,
    /// (address, index) for the sender and the receiver of each transfer (once for a transfer
    /// to oneself) with the address in the slice, sorted.
    history: Vec<(Address, u32)>,
}

impl PendingPart {
    fn records(&self) -> usize {
        self.accounts.len() + self.ids_by_id.len() + self.history.len()
    }
}

/// Splits a list sorted by key into one list per slice, in slice order.
fn split_by_slice<T>(sorted: Vec<T>, slice: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut parts: Vec<Vec<T>> = (0..FOLD_SLICES).map(|_| Vec::new()).collect();
    for item in sorted {
        parts[slice(&item)].push(item);
    }
    parts
}

impl PendingBlock {
    /// `accounts` as a delta lists them: if an address appears twice, the later value is the
    /// one that holds after the block (as `ChainState::apply_delta` reads it).
    pub(super) fn new(block: &Block, accounts: &[(Address, Option<Account>)]) -> PendingBlock {
        let mut sorted = accounts.to_vec();
        if !sorted.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            // Stable sort of the reversed list, then keep the first of each address: the last
            // value the delta gave it.
            sorted.reverse();
            sorted.sort_by_key(|(address, _)| *address);
            sorted.dedup_by_key(|(address, _)| *address);
        }
        let ids: Vec<Hash> = block.transfers.iter().map(transfer_id).collect();
        let positions = 0..u32::try_from(ids.len()).expect("a block holds fewer than 2^32 transfers");
        let mut ids_by_id: Vec<u32> = positions.clone().collect();
        ids_by_id.sort_unstable_by_key(|position| ids[*position as usize]);
        let mut history = Vec::with_capacity(2 * ids.len());
        for (transfer, index) in block.transfers.iter().zip(positions) {
            history.push((transfer.from, index));
            history.push((transfer.to, index));
        }
        history.sort_unstable();
        history.dedup();
        let accounts = split_by_slice(sorted, |(address, _)| slice_of(&address.0));
        let ids_by_id = split_by_slice(ids_by_id, |position| slice_of(&ids[*position as usize].0));
        let history = split_by_slice(history, |(address, _)| slice_of(&address.0));
        let parts = accounts
            .into_iter()
            .zip(ids_by_id)
            .zip(history)
            .map(|((accounts, ids_by_id), history)| Some(Arc::new(PendingPart { accounts, ids_by_id, history })))
            .collect();
        PendingBlock { ids: Arc::new(ids), parts }
    }

    /// Records not yet folded, for the bound on them.
    fn records(&self) -> usize {
        self.parts.iter().flatten().map(|part| part.records()).sum()
    }

    fn part_of(&self, key: &[u8; 32]) -> Option<&PendingPart> {
        self.parts[slice_of(key)].as_deref()
    }

    fn account(&self, address: &Address) -> Option<Option<Account>> {
        let accounts = &self.part_of(&address.0)?.accounts;
        let position = accounts.binary_search_by_key(address, |(address, _)| *address).ok()?;
        Some(accounts[position].1)
    }

    fn position_of(&self, id: &Hash) -> Option<u32> {
        let ids_by_id = &self.part_of(&id.0)?.ids_by_id;
        let position = ids_by_id.binary_search_by_key(id, |position| self.ids[*position as usize]).ok()?;
        Some(ids_by_id[position])
    }

    /// The history entries of `address`: (address, index), ascending.
    fn history_of(&self, address: &Address) -> &[(Address, u32)] {
        let Some(part) = self.part_of(&address.0) else { return &[] };
        let first = part.history.partition_point(|(entry, _)| entry < address);
        let end = part.history.partition_point(|(entry, _)| entry <= address);
        &part.history[first..end]
    }

    /// The sorted addresses it wrote (all its parts: it is not folded), for checking a
    /// rollback's undo against it.
    pub(super) fn account_addresses(&self) -> impl Iterator<Item = &Address> {
        self.parts
            .iter()
            .map(|part| part.as_deref().expect("a block rolled back was never folded"))
            .flat_map(|part| part.accounts.iter().map(|(address, _)| address))
    }
}

/// The addresses a delta writes, sorted and each once: what `PendingBlock::account_addresses`
/// of the block it undoes must list.
pub(super) fn delta_addresses(delta: &StateDelta) -> Vec<Address> {
    let mut addresses: Vec<Address> = delta.accounts.iter().map(|(address, _)| *address).collect();
    addresses.sort_unstable();
    addresses.dedup();
    addresses
}

/// Where the settled rows stand, stored in the `meta` table (`META_FOLD`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct FoldState {
    /// The slice the next commit folds.
    pub(super) cursor: u32,
    /// Per slice, the final height its rows hold every change of.
    pub(super) folded: Vec<Height>,
}

impl FoldState {
    pub(super) fn at_genesis() -> FoldState {
        FoldState { cursor: 0, folded: vec![0; FOLD_SLICES] }
    }
}

/// The pending blocks and where each slice was folded through: with the settled rows of the
/// same committed transaction, the state at the tip. Shared by readers as an `Arc`; a commit
/// works on a copy (the blocks are `Arc`s) that replaces it once its transaction committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Pending {
    fold: FoldState,
    /// Every canonical block above the lowest folded height, by height.
    blocks: BTreeMap<Height, Arc<PendingBlock>>,
    /// The sum of their `records()`.
    records: usize,
}

/// What the last commit's fold did, for the storage bench and for tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FoldFigures {
    /// Slices folded (1, more while past `PENDING_RECORDS_MAX`; 0 before the first commit).
    pub slices: usize,
    /// Pending blocks read (the pending blocks at or below the final height, per slice).
    pub blocks: usize,
    /// Account records merged into chunks, and index records appended.
    pub account_records: usize,
    pub index_records: usize,
    /// Rows rewritten or added, and their bytes.
    pub rows_written: usize,
    pub bytes_written: usize,
    /// Blocks no slice needs any more, forgotten with their `account_deltas` rows.
    pub blocks_settled: usize,
    /// Blocks still pending after the commit, and their records.
    pub blocks_pending: usize,
    pub records_pending: usize,
    /// Time spent folding (reading, merging and writing rows in the transaction; the disk
    /// writes of those rows happen with the rest of the commit's).
    pub elapsed: std::time::Duration,
}

impl Pending {
    pub(super) fn empty(fold: FoldState) -> Pending {
        Pending { fold, blocks: BTreeMap::new(), records: 0 }
    }

    pub(super) fn fold_state(&self) -> &FoldState {
        &self.fold
    }

    /// The lowest height some slice was folded through: pending blocks start above it.
    pub(super) fn lowest_folded(&self) -> Height {
        self.fold.folded.iter().copied().min().unwrap_or(0)
    }

    /// The highest: no block at or below it may be rolled back (some slice holds its changes).
    pub(super) fn highest_folded(&self) -> Height {
        self.fold.folded.iter().copied().max().unwrap_or(0)
    }

    /// Adds the block at `height`, above the others; the parts of slices already folded
    /// through it are dropped (a block read back at `open`).
    pub(super) fn push(&mut self, height: Height, mut block: PendingBlock) {
        assert!(
            self.blocks.last_key_value().is_none_or(|(last, _)| *last + 1 == height),
            "pending blocks are consecutive heights"
        );
        for (part, folded) in block.parts.iter_mut().zip(&self.fold.folded) {
            if height <= *folded {
                *part = None;
            }
        }
        self.records += block.records();
        self.blocks.insert(height, Arc::new(block));
    }

    /// Removes the block at `height`, the highest pending one.
    pub(super) fn pop(&mut self, height: Height) -> Option<Arc<PendingBlock>> {
        if self.blocks.last_key_value().map(|(last, _)| *last) != Some(height) {
            return None;
        }
        let block = self.blocks.remove(&height)?;
        self.records -= block.records();
        Some(block)
    }

    /// The pending blocks whose changes to `key` are not yet in its slice's rows, oldest first.
    fn unfolded(&self, key: &[u8; 32]) -> impl DoubleEndedIterator<Item = (Height, &PendingBlock)> {
        let folded = self.fold.folded[slice_of(key)];
        self.blocks.range(folded + 1..).map(|(height, block)| (*height, &**block))
    }

    /// The account at the tip if a pending block wrote it: `Some(None)` if it was removed.
    pub(super) fn account(&self, address: &Address) -> Option<Option<Account>> {
        self.unfolded(&address.0).rev().find_map(|(_, block)| block.account(address))
    }

    pub(super) fn tx_location(&self, id: &Hash) -> Option<TxLocation> {
        self.unfolded(&id.0)
            .rev()
            .find_map(|(height, block)| block.position_of(id).map(|index| TxLocation { id: *id, height, index }))
    }

    /// Pushes the pending history of `address` below `before_height` (if given) to `out`,
    /// newest first, until `out` holds `limit` entries.
    pub(super) fn history(
        &self,
        address: &Address,
        before_height: Option<Height>,
        limit: usize,
        out: &mut Vec<TxLocation>,
    ) {
        for (height, block) in self.unfolded(&address.0).rev() {
            if before_height.is_some_and(|before| height >= before) {
                continue;
            }
            for (_, index) in block.history_of(address).iter().rev() {
                if out.len() >= limit {
                    return;
                }
                out.push(TxLocation { id: block.ids[*index as usize], height, index: *index });
            }
        }
    }

    /// Writes the pending accounts over the settled ones (`restored`).
    pub(super) fn write_accounts_over(&self, accounts: &mut BTreeMap<Address, Account>) {
        for (height, block) in &self.blocks {
            for (slice, part) in block.parts.iter().enumerate() {
                let Some(part) = part else { continue };
                if *height <= self.fold.folded[slice] {
                    continue;
                }
                for (address, account) in &part.accounts {
                    match account {
                        Some(account) => accounts.insert(*address, *account),
                        None => accounts.remove(address),
                    };
                }
            }
        }
    }
}

/// The settled tables and `account_deltas`, open in a write transaction.
pub(super) struct SettledTables<'txn> {
    pub(super) account_chunks: redb::Table<'txn, u16, &'static [u8]>,
    pub(super) account_deltas: redb::Table<'txn, u64, &'static [u8]>,
    pub(super) tx_index_rows: redb::Table<'txn, (u16, u32), &'static [u8]>,
    pub(super) history_rows: redb::Table<'txn, (u16, u32), &'static [u8]>,
}

impl<'txn> SettledTables<'txn> {
    pub(super) fn open(txn: &'txn redb::WriteTransaction) -> Result<SettledTables<'txn>, redb::TableError> {
        Ok(SettledTables {
            account_chunks: txn.open_table(ACCOUNT_CHUNKS)?,
            account_deltas: txn.open_table(ACCOUNT_DELTAS)?,
            tx_index_rows: txn.open_table(TX_INDEX_ROWS)?,
            history_rows: txn.open_table(HISTORY_ROWS)?,
        })
    }
}

/// Writes the genesis accounts (in address order) as chunks.
pub(super) fn write_genesis_accounts(
    id: &Identity,
    tables: &mut SettledTables,
    accounts: &BTreeMap<Address, Account>,
) -> Result<(), super::StorageError> {
    let fail = Failure { path: &id.path, doing: "cannot write the genesis accounts" };
    let mut chunk_rows: BTreeMap<u16, Vec<u8>> = BTreeMap::new();
    for (address, account) in accounts {
        chunk_rows.entry(chunk_of(&address.0)).or_default().extend_from_slice(&account_record(address, account));
    }
    for (chunk, row) in &chunk_rows {
        tables.account_chunks.insert(*chunk, row.as_slice()).map_err(fail.of())?;
    }
    Ok(())
}

/// Builds the pending blocks of a database at open: every height above the lowest folded one
/// up to the tip, from its block and its `account_deltas` row.
pub(super) fn load_pending(
    id: &Identity,
    txn: &redb::ReadTransaction,
    fold: FoldState,
    tip: Height,
) -> Result<Pending, super::StorageError> {
    let cursor_ok = usize::try_from(fold.cursor).is_ok_and(|cursor| cursor < FOLD_SLICES);
    if fold.folded.len() != FOLD_SLICES || !cursor_ok || fold.folded.iter().any(|folded| *folded > tip) {
        return Err(id.corrupt(format!(
            "the meta table's fold state {fold:?} is not {FOLD_SLICES} heights at or below the tip {tip} and a \
             slice below {FOLD_SLICES}"
        )));
    }
    let fail = Failure { path: &id.path, doing: "cannot read the pending blocks" };
    let mut pending = Pending::empty(fold);
    let lowest = pending.lowest_folded();
    let deltas = txn.open_table(ACCOUNT_DELTAS).map_err(fail.of())?;
    let delta_rows = deltas.len().map_err(fail.of())?;
    if delta_rows != tip - lowest {
        return Err(id.corrupt(format!(
            "table account_deltas holds {delta_rows} rows, but the blocks from {} to the tip {tip} are pending",
            lowest + 1
        )));
    }
    let blocks = txn.open_table(super::BLOCKS).map_err(fail.of())?;
    for height in lowest + 1..=tip {
        let delta_bytes =
            deltas.get(height).map_err(fail.of())?.ok_or_else(|| id.missing_row("account_deltas", height))?;
        let accounts = decode_account_delta(id, height, delta_bytes.value())?;
        drop(delta_bytes);
        let block_bytes = blocks.get(height).map_err(fail.of())?.ok_or_else(|| id.missing_row("blocks", height))?;
        let block: Block = id.decode("blocks", height, block_bytes.value())?;
        pending.push(height, PendingBlock::new(&block, &accounts));
    }
    Ok(pending)
}

/// An `account_deltas` record: address, 1 and the account's balance and nonce (little-endian),
/// or 0 and 16 zero bytes for an account the block removed.
const DELTA_RECORD_BYTES: usize = 49;

/// Writes a pending block's `account_deltas` row.
pub(super) fn write_account_delta(
    id: &Identity,
    tables: &mut SettledTables,
    height: Height,
    accounts: &[(Address, Option<Account>)],
) -> Result<(), super::StorageError> {
    let fail = Failure { path: &id.path, doing: "cannot write an account delta" };
    let mut bytes = Vec::with_capacity(accounts.len() * DELTA_RECORD_BYTES);
    for (address, account) in accounts {
        bytes.extend_from_slice(&address.0);
        match account {
            Some(account) => {
                bytes.push(1);
                bytes.extend_from_slice(&account.balance.to_le_bytes());
                bytes.extend_from_slice(&account.nonce.to_le_bytes());
            }
            None => bytes.extend_from_slice(&[0u8; 17]),
        }
    }
    tables.account_deltas.insert(height, bytes.as_slice()).map_err(fail.of())?;
    Ok(())
}

fn decode_account_delta(
    id: &Identity,
    height: Height,
    bytes: &[u8],
) -> Result<Vec<(Address, Option<Account>)>, super::StorageError> {
    if !bytes.len().is_multiple_of(DELTA_RECORD_BYTES) {
        return Err(id.corrupt(format!(
            "table account_deltas, key {height}: {} bytes are not a whole number of records",
            bytes.len()
        )));
    }
    let mut accounts = Vec::with_capacity(bytes.len() / DELTA_RECORD_BYTES);
    for record in bytes.chunks_exact(DELTA_RECORD_BYTES) {
        let (address, account) = account_of_record(&[&record[..32], &record[33..]].concat());
        match record[32] {
            1 => accounts.push((address, Some(account))),
            0 if account == Account::default() => accounts.push((address, None)),
            _ => {
                return Err(id.corrupt(format!(
                    "table account_deltas, key {height}: the record of {address:?} is neither an account nor a removal"
                )))
            }
        }
    }
    Ok(accounts)
}

pub(super) fn remove_account_delta(
    id: &Identity,
    tables: &mut SettledTables,
    height: Height,
) -> Result<(), super::StorageError> {
    let fail = Failure { path: &id.path, doing: "cannot remove an account delta" };
    match tables.account_deltas.remove(height).map_err(fail.of())? {
        Some(_) => Ok(()),
        None => Err(id.missing_row("account_deltas", height)),
    }
}

/// The fold of a commit, after its operations: the slice at the cursor brought up to
/// `final_height`, and the slices after it while the records not yet folded are more than
/// `records_max` (`PENDING_RECORDS_MAX` but in tests; every slice at most), the cursor moved
/// past them, and the blocks no slice needs any more forgotten. The caller stores
/// `pending.fold_state()` in the same transaction.
pub(super) fn fold(
    id: &Identity,
    tables: &mut SettledTables,
    pending: &mut Pending,
    final_height: Height,
    records_max: usize,
) -> Result<FoldFigures, super::StorageError> {
    let started = std::time::Instant::now();
    let mut figures = FoldFigures::default();
    let mut cursor = pending.fold.cursor as usize;
    // One slice, and the next ones while the records not yet folded are past the bound.
    while figures.slices == 0 || (pending.records > records_max && figures.slices < FOLD_SLICES) {
        fold_slice(id, tables, pending, cursor, final_height, &mut figures)?;
        figures.slices += 1;
        cursor = (cursor + 1) % FOLD_SLICES;
    }
    pending.fold.cursor = u32::try_from(cursor).expect("FOLD_SLICES fits a u32");

    let fail = Failure { path: &id.path, doing: "cannot forget settled account deltas" };
    let lowest = pending.lowest_folded();
    let settled: Vec<Height> = pending.blocks.range(..=lowest).map(|(height, _)| *height).collect();
    for height in settled {
        if tables.account_deltas.remove(height).map_err(fail.of())?.is_none() {
            return Err(id.missing_row("account_deltas", height));
        }
        let block = pending.blocks.remove(&height).expect("listed from the map just now");
        pending.records -= block.records();
        figures.blocks_settled += 1;
    }
    figures.blocks_pending = pending.blocks.len();
    figures.records_pending = pending.records;
    figures.elapsed = started.elapsed();
    Ok(figures)
}

/// Folds the pending changes of the blocks up to `final_height` whose keys fall in `slice`.
fn fold_slice(
    id: &Identity,
    tables: &mut SettledTables,
    pending: &mut Pending,
    slice: usize,
    final_height: Height,
    figures: &mut FoldFigures,
) -> Result<(), super::StorageError> {
    let folded = pending.fold.folded[slice];
    if final_height <= folded {
        return Ok(());
    }
    // Every write in height order; sorted by address below (stably), the last of each address
    // is its value at the final height.
    let mut accounts: Vec<(Address, Option<Account>)> = Vec::new();
    let mut tx_records: Vec<(u16, Height, u32, [u8; TX_RECORD_BYTES])> = Vec::new();
    let mut history_records: Vec<(u16, Height, u32, [u8; HISTORY_RECORD_BYTES])> = Vec::new();
    for (height, block) in pending.blocks.range_mut(folded + 1..=final_height) {
        figures.blocks += 1;
        // Taken out: once folded, the slice's rows hold it.
        let Some(part) = Arc::make_mut(block).parts[slice].take() else {
            unreachable!("a slice's part of a block above its folded height is pending")
        };
        pending.records -= part.records();
        accounts.extend_from_slice(&part.accounts);
        for position in &part.ids_by_id {
            let id = &block.ids[*position as usize];
            tx_records.push((chunk_of(&id.0), *height, *position, tx_record(id, *height, *position)));
        }
        for (address, index) in &part.history {
            let record = history_record(address, *height, *index, &block.ids[*index as usize]);
            history_records.push((chunk_of(&address.0), *height, *index, record));
        }
    }
    accounts.sort_by_key(|(address, _)| *address);
    let mut latest: Vec<(Address, Option<Account>)> = Vec::with_capacity(accounts.len());
    for (address, account) in accounts {
        match latest.last_mut() {
            Some(last) if last.0 == address => last.1 = account,
            _ => latest.push((address, account)),
        }
    }
    figures.account_records += latest.len();
    for updates in latest.chunk_by(|left, right| chunk_of(&left.0 .0) == chunk_of(&right.0 .0)) {
        merge_account_chunk(id, tables, chunk_of(&updates[0].0 .0), updates, figures)?;
    }
    // In chain order within each chunk: rows of a chunk follow the chain.
    tx_records.sort_unstable();
    history_records.sort_unstable();
    figures.index_records += tx_records.len() + history_records.len();
    for group in tx_records.chunk_by(|left, right| left.0 == right.0) {
        let records: Vec<[u8; TX_RECORD_BYTES]> = group.iter().map(|entry| entry.3).collect();
        append_index_records(id, &mut tables.tx_index_rows, "tx_index_rows", group[0].0, &records, figures)?;
    }
    for group in history_records.chunk_by(|left, right| left.0 == right.0) {
        let records: Vec<[u8; HISTORY_RECORD_BYTES]> = group.iter().map(|entry| entry.3).collect();
        append_index_records(id, &mut tables.history_rows, "address_history_rows", group[0].0, &records, figures)?;
    }
    pending.fold.folded[slice] = final_height;
    Ok(())
}

/// Merges sorted account updates into one chunk's row (removing it if it ends empty).
fn merge_account_chunk(
    id: &Identity,
    tables: &mut SettledTables,
    chunk: u16,
    updates: &[(Address, Option<Account>)],
    figures: &mut FoldFigures,
) -> Result<(), super::StorageError> {
    let fail = Failure { path: &id.path, doing: "cannot fold accounts" };
    let mut merged: Vec<u8> = Vec::new();
    {
        let existing = tables.account_chunks.get(chunk).map_err(fail.of())?;
        let existing = match &existing {
            Some(bytes) => {
                let records = Records::new(id, "account_chunks", chunk, bytes.value(), ACCOUNT_RECORD_BYTES)?;
                records.check_order(id, "account_chunks", chunk, chunk, true)?;
                Some(records)
            }
            None => None,
        };
        let existing_len = existing.as_ref().map_or(0, Records::len);
        merged.reserve((existing_len + updates.len()) * ACCOUNT_RECORD_BYTES);
        let mut position = 0;
        for (address, account) in updates {
            if let Some(existing) = &existing {
                while position < existing_len && existing.get(position)[..32] < address.0[..] {
                    merged.extend_from_slice(existing.get(position));
                    position += 1;
                }
                if position < existing_len && existing.get(position)[..32] == address.0[..] {
                    position += 1;
                }
            }
            if let Some(account) = account {
                merged.extend_from_slice(&account_record(address, account));
            }
        }
        if let Some(existing) = &existing {
            merged.extend_from_slice(&existing.bytes[position * ACCOUNT_RECORD_BYTES..]);
        }
    }
    if merged.is_empty() {
        tables.account_chunks.remove(chunk).map_err(fail.of())?;
    } else {
        tables.account_chunks.insert(chunk, merged.as_slice()).map_err(fail.of())?;
        figures.rows_written += 1;
        figures.bytes_written += merged.len();
    }
    Ok(())
}

/// Appends `records` (in chain order, all later on the chain than every record of the chunk's
/// rows) to a chunk's rows: the last row is filled up to `INDEX_ROW_BYTES_MAX`, the rest go
/// to new rows. Each row is sorted; row `n + 1` follows row `n` on the chain.
fn append_index_records<const WIDTH: usize>(
    id: &Identity,
    table: &mut redb::Table<(u16, u32), &'static [u8]>,
    name: &'static str,
    chunk: u16,
    records: &[[u8; WIDTH]],
    figures: &mut FoldFigures,
) -> Result<(), super::StorageError> {
    let fail = Failure { path: &id.path, doing: "cannot fold a transfer index" };
    let records_max = INDEX_ROW_BYTES_MAX / WIDTH;
    let last = {
        let mut rows = table.range((chunk, 0)..=(chunk, u32::MAX)).map_err(fail.of())?;
        match rows.next_back() {
            None => None,
            Some(entry) => {
                let (key, bytes) = entry.map_err(fail.of())?;
                let row = key.value().1;
                let held = Records::new(id, name, key.value(), bytes.value(), WIDTH)?;
                held.check_order(id, name, key.value(), chunk, false)?;
                let held: Vec<[u8; WIDTH]> = (0..held.len())
                    .map(|index| <[u8; WIDTH]>::try_from(held.get(index)).expect("records are WIDTH bytes"))
                    .collect();
                Some((row, held))
            }
        }
    };
    let mut rest = records;
    let next_row = match last {
        Some((row, mut held)) if held.len() < records_max => {
            let taken = rest.len().min(records_max - held.len());
            held.extend_from_slice(&rest[..taken]);
            rest = &rest[taken..];
            write_index_row(table, &fail, chunk, row, held, figures)?;
            row.checked_add(1)
        }
        Some((row, _)) => row.checked_add(1),
        None => Some(0),
    };
    let Some(mut next_row) = next_row else {
        return Err(id.corrupt(format!("table {name}: chunk {chunk} has no row number left")));
    };
    for group in rest.chunks(records_max) {
        write_index_row(table, &fail, chunk, next_row, group.to_vec(), figures)?;
        next_row = match next_row.checked_add(1) {
            Some(row) => row,
            None => return Err(id.corrupt(format!("table {name}: chunk {chunk} has no row number left"))),
        };
    }
    Ok(())
}

fn write_index_row<const WIDTH: usize>(
    table: &mut redb::Table<(u16, u32), &'static [u8]>,
    fail: &Failure,
    chunk: u16,
    row: u32,
    mut records: Vec<[u8; WIDTH]>,
    figures: &mut FoldFigures,
) -> Result<(), super::StorageError> {
    records.sort_unstable();
    let bytes: Vec<u8> = records.concat();
    table.insert((chunk, row), bytes.as_slice()).map_err(fail.of())?;
    figures.rows_written += 1;
    figures.bytes_written += bytes.len();
    Ok(())
}

/// Every settled account, in address order (`restored`).
pub(super) fn read_accounts(
    id: &Identity,
    txn: &redb::ReadTransaction,
) -> Result<BTreeMap<Address, Account>, super::StorageError> {
    let fail = Failure { path: &id.path, doing: "cannot read the accounts" };
    let chunks = txn.open_table(ACCOUNT_CHUNKS).map_err(fail.of())?;
    let mut accounts = Vec::new();
    for entry in chunks.range::<u16>(..).map_err(fail.of())? {
        let (chunk, bytes) = entry.map_err(fail.of())?;
        let chunk = chunk.value();
        let records = Records::new(id, "account_chunks", chunk, bytes.value(), ACCOUNT_RECORD_BYTES)?;
        records.check_order(id, "account_chunks", chunk, chunk, true)?;
        accounts.extend((0..records.len()).map(|index| account_of_record(records.get(index))));
    }
    // Chunks in order, records sorted within each: already in address order.
    Ok(accounts.into_iter().collect())
}

/// A settled account.
pub(super) fn settled_account(
    id: &Identity,
    txn: &redb::ReadTransaction,
    address: &Address,
) -> Result<Option<Account>, super::StorageError> {
    let fail = Failure { path: &id.path, doing: "cannot read an account" };
    let chunks = txn.open_table(ACCOUNT_CHUNKS).map_err(fail.of())?;
    let chunk = chunk_of(&address.0);
    let Some(bytes) = chunks.get(chunk).map_err(fail.of())? else { return Ok(None) };
    let records = Records::new(id, "account_chunks", chunk, bytes.value(), ACCOUNT_RECORD_BYTES)?;
    let found = records.matching(&address.0);
    Ok((!found.is_empty()).then(|| account_of_record(records.get(found.start)).1))
}

/// A settled transfer's location.
pub(super) fn settled_tx_location(
    id: &Identity,
    txn: &redb::ReadTransaction,
    transfer: &Hash,
) -> Result<Option<TxLocation>, super::StorageError> {
    let fail = Failure { path: &id.path, doing: "cannot read the transaction index" };
    let rows = txn.open_table(TX_INDEX_ROWS).map_err(fail.of())?;
    let chunk = chunk_of(&transfer.0);
    for entry in rows.range((chunk, 0)..=(chunk, u32::MAX)).map_err(fail.of())? {
        let (key, bytes) = entry.map_err(fail.of())?;
        let records = Records::new(id, "tx_index_rows", key.value(), bytes.value(), TX_RECORD_BYTES)?;
        let found = records.matching(&transfer.0);
        if !found.is_empty() {
            let (height, index) = location_at(records.get(found.start), 32);
            return Ok(Some(TxLocation { id: *transfer, height, index }));
        }
    }
    Ok(None)
}

/// Pushes the settled history of `address` below `before_height` (if given) to `out`, newest
/// first, until `out` holds `limit` entries.
pub(super) fn settled_history(
    id: &Identity,
    txn: &redb::ReadTransaction,
    address: &Address,
    before_height: Option<Height>,
    limit: usize,
    out: &mut Vec<TxLocation>,
) -> Result<(), super::StorageError> {
    let fail = Failure { path: &id.path, doing: "cannot read the address history" };
    let rows = txn.open_table(HISTORY_ROWS).map_err(fail.of())?;
    let chunk = chunk_of(&address.0);
    for entry in rows.range((chunk, 0)..=(chunk, u32::MAX)).map_err(fail.of())?.rev() {
        if out.len() >= limit {
            return Ok(());
        }
        let (key, bytes) = entry.map_err(fail.of())?;
        let records = Records::new(id, "address_history_rows", key.value(), bytes.value(), HISTORY_RECORD_BYTES)?;
        for position in records.matching(&address.0).rev() {
            let record = records.get(position);
            let (height, index) = location_at(record, 32);
            if before_height.is_some_and(|before| height >= before) {
                continue;
            }
            if out.len() >= limit {
                return Ok(());
            }
            out.push(TxLocation { id: hash_at(record, 44), height, index });
        }
    }
    Ok(())
}
