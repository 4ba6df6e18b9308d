//! Figures for the StorageEngine: the time of one durable `commit` of a block of 1,000 and of
//! 10,000 transfers into a database of 100,000 accounts (`--accounts` for another size), with
//! what its fold of one slice of the settled tables took (`storage::FoldFigures`), a burst of
//! commits of five 10,000-transfer blocks each (as syncing commits them), past the bound on
//! pending records so commits fold more slices, and the time to `open` and build `restored()`
//! at 10,000 blocks, with the bytes of each big table. Next to them, the
//! machine's floor: a durable redb commit of one small row (the cost of the fsyncs alone) on
//! the same disk.
//!
//! The pending-transfer journal: its bytes per entry on disk (file growth from empty to full,
//! and the B-tree's own count), the time per accepted transfer of a durable `journal_add` in
//! batches of 1, 16 and 256, the time to read a full journal back, and what the finality delete
//! adds to a `commit` (the same blocks committed to three databases in turn: an empty journal,
//! one unrelated entry, and every transfer journaled, so each commit deletes a block's entries).
//!
//! Each block's commit is printed with what the core spends on it besides validation proper:
//! the state root from the block's delta (as validation computes it, from the kept account
//! tree) and applying the delta to the state. The sum for 10,000-transfer blocks is issue 16's
//! figure, printed as its own line with its median and worst block: with `--accounts 1000000`,
//! "a 10,000-transfer block committed into a million accounts, state root included", whose
//! target is 200 ms.
//!
//! Run: `cargo run --release -p tinychain-node --example storage_bench`
//! (`-- --accounts N` to change the account table size, `-- --dir PATH` to measure another disk,
//! `-- --journal-only` for the floor and the journal's own figures alone, `-- --commits-only` for
//! the floor, the commits and the burst alone).
//!
//! Blocks are built here directly from a `ChainState` (the delta computed as `apply_block`
//! would, with unsigned transfers): storage never verifies signatures, and signing 10,000
//! transfers per block would only measure ed25519.

#![allow(clippy::unwrap_used)]

use redb::{ReadableDatabase, ReadableTableMetadata};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinychain_core::codec;
use tinychain_core::genesis::{genesis_block, Genesis};
use tinychain_core::node::{ChainOp, Commit};
use tinychain_core::state::{ChainState, StateDelta};
use tinychain_core::testkit::fast_genesis;
use tinychain_core::types::{Account, Address, Block, BlockHeader, Checkpoint, Hash, Signature, Transfer};
use tinychain_core::validate::{block_hash, transfer_id};
use tinychain_node::storage::{FoldFigures, Storage, FOLD_SLICES, JOURNAL_TRANSFERS_MAX};

/// A deterministic address for account `index`, without deriving keys (100,000 key
/// derivations would dominate the set-up).
fn address(index: u64) -> Address {
    Address(*blake3::hash(&index.to_le_bytes()).as_bytes())
}

fn genesis_with_accounts(accounts: u64) -> Genesis {
    let mut genesis = fast_genesis(4, 0);
    genesis.allocations = (0..accounts)
        .map(|index| tinychain_core::genesis::Allocation { address: address(index), amount: 1_000_000_000_000 })
        .collect();
    genesis
}

/// A small deterministic generator (xorshift64*).
struct Random(u64);

impl Random {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % bound
    }
}

/// What the core spends on a block besides validation proper: the state root the block
/// commits to (computed from the delta before it is applied, as validation does) and writing
/// the delta into the state (which brings the account tree up to date with the patch the root
/// computation made, as `apply_block` does).
#[derive(Clone, Copy, Default)]
struct CoreTimes {
    state_root: Duration,
    apply: Duration,
}

/// The next block on `state` with `transfers` transfers between random accounts (one in ten
/// to a new address), its commit (final two blocks below it, as on a healthy chain), and
/// `state` and `hashes` (canonical, genesis first) advanced past it. `times` gets what the
/// core's state root and apply took.
fn next_commit(
    genesis: &Genesis,
    state: &mut ChainState,
    hashes: &mut Vec<Hash>,
    random: &mut Random,
    transfers: usize,
) -> Commit {
    next_commit_timed(genesis, state, hashes, random, transfers, &mut CoreTimes::default())
}

fn next_commit_timed(
    genesis: &Genesis,
    state: &mut ChainState,
    hashes: &mut Vec<Hash>,
    random: &mut Random,
    transfers: usize,
    times: &mut CoreTimes,
) -> Commit {
    let accounts = genesis.allocations.len() as u64;
    let height = state.tip.height + 1;
    let producer = genesis.validators[(height % genesis.validators.len() as u64) as usize].id;
    let mut touched: BTreeMap<Address, Account> = BTreeMap::new();
    let mut body = Vec::with_capacity(transfers);
    let mut fees = 0;
    for _ in 0..transfers {
        let from = address(random.below(accounts));
        let to = if random.below(10) == 0 {
            address(1_000_000 + random.below(1 << 40))
        } else {
            address(random.below(accounts))
        };
        let mut sender = touched.get(&from).copied().unwrap_or_else(|| state.account(&from));
        let transfer = Transfer {
            chain_id: genesis.chain_id.clone(),
            from,
            to,
            amount: 1_000,
            fee: 10,
            nonce: sender.nonce,
            signature: Signature([7; 64]),
        };
        sender.balance -= 1_010;
        sender.nonce += 1;
        touched.insert(from, sender);
        let mut recipient = touched.get(&to).copied().unwrap_or_else(|| state.account(&to));
        recipient.balance += 1_000;
        touched.insert(to, recipient);
        fees += 10;
        body.push(transfer);
    }
    let reward = genesis.parameters.block_reward;
    let mut producer_account = touched.get(&producer).copied().unwrap_or_else(|| state.account(&producer));
    producer_account.balance += reward + fees;
    touched.insert(producer, producer_account);
    let header = BlockHeader {
        chain_id: genesis.chain_id.clone(),
        height,
        prev_hash: state.tip.hash,
        timestamp_ms: state.tip_timestamp_ms + genesis.parameters.block_interval_ms,
        producer,
        rank: 0,
        tx_root: Hash::default(),
        report_root: Hash::default(),
        evidence_root: Hash::default(),
        state_root: Hash::default(),
        signature: Signature::default(),
    };
    let hash = block_hash(&header);
    let producer_index = genesis.validator_index(&producer).unwrap() as u32;
    let mut producer_record = state.validators[producer_index as usize].clone();
    producer_record.blocks_produced += 1;
    let started = Instant::now();
    let validators = BTreeMap::from([(producer_index, producer_record.clone())]);
    let (_, patch) = state.root_with_patch(&touched, &validators, &BTreeMap::new());
    times.state_root = started.elapsed();
    let delta = StateDelta {
        tip: Checkpoint { height, hash },
        tip_timestamp_ms: header.timestamp_ms,
        accounts: touched.into_iter().map(|(address, account)| (address, Some(account))).collect(),
        validators: vec![(producer_index, producer_record)],
        finality: state.finality.clone(),
        supply: state.supply + reward,
        offences: vec![],
    };
    let undo = state.undo_for(&delta);
    let started = Instant::now();
    state.apply_delta_patched(&delta, patch.as_ref());
    times.apply = started.elapsed();
    let block = Arc::new(Block { header, transfers: body, reports: vec![], evidence: vec![] });
    hashes.push(hash);
    let checkpoint_below = |blocks: u64| {
        let height = height.saturating_sub(blocks);
        Checkpoint { height, hash: hashes[height as usize] }
    };
    Commit {
        ops: vec![ChainOp::Apply { block, hash, delta, undo }],
        tip: state.tip,
        justified: checkpoint_below(1),
        finalized: checkpoint_below(2),
    }
}

/// Journal entry `index`: 5,000 senders, each with consecutive nonces, as many clients would
/// send them.
fn journal_entry(chain_id: &str, index: u64) -> (Hash, Transfer) {
    let transfer = Transfer {
        chain_id: chain_id.to_string(),
        from: address(2_000_000 + index % 5_000),
        to: address(index),
        amount: 1_000,
        fee: 10,
        nonce: index / 5_000,
        signature: Signature([7; 64]),
    };
    (transfer_id(&transfer), transfer)
}

/// The journal's own cost, in a database of its own: bytes per entry, `journal_add` per
/// accepted transfer in batches, and reading a full journal back.
fn journal_figures(directory: &std::path::Path) {
    let genesis = fast_genesis(4, 0);
    let path = directory.join("journal.redb");
    let storage = Storage::create(&path, &genesis).unwrap();
    let empty_bytes = std::fs::metadata(&path).unwrap().len();
    let mut next_index = 0u64;
    let mut next_batch = |size: u64| {
        let batch: Vec<(Hash, Transfer)> =
            (next_index..next_index + size).map(|index| journal_entry(&genesis.chain_id, index)).collect();
        next_index += size;
        batch
    };

    for (batch_size, calls) in [(1u64, 200usize), (16, 100), (256, 40)] {
        let mut samples = Vec::new();
        for _ in 0..calls {
            let batch = next_batch(batch_size);
            let started = Instant::now();
            storage.journal_add(&batch).unwrap();
            samples.push(started.elapsed());
        }
        let per_call = median(samples);
        println!(
            "  journal_add, batches of {batch_size:>3} ({calls} calls)            median {} per call, {:.1} µs per transfer",
            ms(per_call),
            per_call.as_secs_f64() * 1e6 / batch_size as f64
        );
    }

    // Fill to the bound in batches of 256, as a busy RPC front end would.
    while storage.journal_len() < JOURNAL_TRANSFERS_MAX {
        let room = (JOURNAL_TRANSFERS_MAX - storage.journal_len()) as u64;
        storage.journal_add(&next_batch(room.min(256))).unwrap();
    }
    let started = Instant::now();
    let journal = storage.journal().unwrap();
    let read = started.elapsed();
    assert_eq!(journal.len(), JOURNAL_TRANSFERS_MAX);
    let (id, transfer) = &journal[0];
    let key_value_bytes = 72 + codec::encode(transfer).len();
    assert_eq!(*id, transfer_id(transfer));
    drop(journal);
    drop(storage);
    let full_bytes = std::fs::metadata(&path).unwrap().len();
    let entries = JOURNAL_TRANSFERS_MAX as f64;
    println!(
        "  journal full ({JOURNAL_TRANSFERS_MAX} entries): file grew {:.1} MiB, {:.0} bytes per entry \
         ({:.2} MiB per 10,000); key + value {key_value_bytes} bytes",
        (full_bytes - empty_bytes) as f64 / (1024.0 * 1024.0),
        (full_bytes - empty_bytes) as f64 / entries,
        (full_bytes - empty_bytes) as f64 / entries * 10_000.0 / (1024.0 * 1024.0),
    );
    {
        let database = redb::Database::open(&path).unwrap();
        let txn = database.begin_read().unwrap();
        let table = txn.open_table(redb::TableDefinition::<&[u8; 72], &[u8]>::new("journal")).unwrap();
        let stats = table.stats().unwrap();
        println!(
            "  journal B-tree per entry: {:.0} bytes stored, {:.0} metadata, {:.0} fragmented ({} leaf pages)",
            stats.stored_bytes() as f64 / entries,
            stats.metadata_bytes() as f64 / entries,
            stats.fragmented_bytes() as f64 / entries,
            stats.leaf_pages()
        );
    }
    let started = Instant::now();
    let storage = Storage::open(&path, &genesis).unwrap();
    let opened = started.elapsed();
    assert_eq!(storage.journal_len(), JOURNAL_TRANSFERS_MAX);
    println!("  open with a full journal {}; journal() of it {} (warm: just written)", ms(opened), ms(read));
}

/// What the finality delete adds to a commit: the same commits (each finalizing the block two
/// below it) go to three databases of the same genesis, in turn, each timed:
/// - "journal empty": the commit skips the journal entirely;
/// - "one unrelated entry": no block touches it, so each commit decodes the newly final block
///   and passes over the one-entry journal, deleting nothing;
/// - "all journaled": each block's transfers are added to the journal before its commit (as if
///   this node's clients sent them all), so each commit deletes a whole block's entries, one key
///   range per (sender, nonce), from a journal of three blocks' entries.
fn finality_delete_figures(directory: &std::path::Path, genesis: &Genesis) {
    let variants = ["journal empty", "one unrelated entry", "all journaled"];
    let stores: Vec<Storage> = (0..variants.len())
        .map(|index| Storage::create(&directory.join(format!("finality{index}.redb")), genesis).unwrap())
        .collect();
    stores[1].journal_add(&[journal_entry(&genesis.chain_id, u64::MAX / 2)]).unwrap();
    let mut state = genesis_block(genesis).1;
    let mut hashes = vec![state.tip.hash];
    let mut random = Random(0xf1a1);
    for (transfers, blocks) in [(1_000usize, 30usize), (10_000, 12)] {
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
        for block_index in 0..blocks {
            let commit = next_commit(genesis, &mut state, &mut hashes, &mut random, transfers);
            let ChainOp::Apply { block, .. } = &commit.ops[0] else { unreachable!("next_commit applies one block") };
            let entries: Vec<(Hash, Transfer)> =
                block.transfers.iter().map(|transfer| (transfer_id(transfer), transfer.clone())).collect();
            stores[2].journal_add(&entries).unwrap();
            // A different database first each block, so none always follows the others' fsyncs.
            for offset in 0..variants.len() {
                let variant = (block_index + offset) % variants.len();
                let started = Instant::now();
                stores[variant].commit(&commit).unwrap();
                samples[variant].push(started.elapsed());
            }
        }
        assert_eq!(stores[0].journal_len(), 0);
        assert_eq!(stores[1].journal_len(), 1, "no block touches the unrelated entry");
        assert_eq!(stores[2].journal_len(), 2 * transfers, "only the two blocks above the final one are left");
        // Medians, and minimums (less sensitive to load from elsewhere on a shared machine).
        let minimums: Vec<Duration> = samples.iter().map(|samples| *samples.iter().min().unwrap()).collect();
        let medians: Vec<Duration> = samples.into_iter().map(median).collect();
        let extra_ms =
            |figures: &[Duration], index: usize| (figures[index].as_secs_f64() - figures[0].as_secs_f64()) * 1e3;
        println!(
            "  commit of {transfers:>6} transfers with the finality delete ({blocks} blocks, 3 databases in turn):"
        );
        for (index, variant) in variants.iter().enumerate() {
            let per_entry = if index == 2 {
                format!(", {:+.2} µs per entry deleted", extra_ms(&medians, 2) * 1e3 / transfers as f64)
            } else {
                String::new()
            };
            println!(
                "    {variant:<20} median {} ({:+.2} ms{per_entry}), min {} ({:+.2} ms)",
                ms(medians[index]),
                extra_ms(&medians, index),
                ms(minimums[index]),
                extra_ms(&minimums, index)
            );
        }
    }
}

/// The folds of a run of commits: time, rows and bytes (medians and worst), and how many
/// blocks were pending.
fn print_folds(folds: &[FoldFigures]) {
    let times: Vec<Duration> = folds.iter().map(|fold| fold.elapsed).collect();
    let mut rows: Vec<usize> = folds.iter().map(|fold| fold.rows_written).collect();
    let mut bytes: Vec<usize> = folds.iter().map(|fold| fold.bytes_written).collect();
    rows.sort_unstable();
    bytes.sort_unstable();
    let pending_max = folds.iter().map(|fold| fold.blocks_pending).max().unwrap_or(0);
    let records_max = folds.iter().map(|fold| fold.records_pending).max().unwrap_or(0);
    let more_slices = folds.iter().filter(|fold| fold.slices > 1).count();
    println!(
        "    fold (one slice of {FOLD_SLICES}): median {}, worst {}; rows written median {} (max {}), {:.2} MiB (max \
         {:.2}); at most {pending_max} blocks pending ({records_max} records not yet folded){}",
        ms(median(times.clone())),
        ms(times.iter().copied().max().unwrap_or_default()),
        rows[rows.len() / 2],
        rows[rows.len() - 1],
        bytes[bytes.len() / 2] as f64 / (1024.0 * 1024.0),
        bytes[bytes.len() - 1] as f64 / (1024.0 * 1024.0),
        if more_slices > 0 { format!("; {more_slices} folded more than one slice") } else { String::new() }
    );
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1_000.0)
}

fn argument(name: &str) -> Option<String> {
    let arguments: Vec<String> = std::env::args().collect();
    arguments.iter().position(|argument| argument == name).and_then(|index| arguments.get(index + 1).cloned())
}

fn main() {
    let accounts: u64 = argument("--accounts").map_or(100_000, |text| text.parse().unwrap());
    let directory = match argument("--dir") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    println!("storage bench: {accounts} accounts, database in {}", directory.path().display());
    let only_journal = std::env::args().any(|argument| argument == "--journal-only");
    let only_commits = std::env::args().any(|argument| argument == "--commits-only");

    // The floor: a durable commit of one small row, on the same disk.
    {
        let database = redb::Database::create(directory.path().join("floor.redb")).unwrap();
        let table = redb::TableDefinition::<u64, u64>::new("t");
        let mut samples = Vec::new();
        for index in 0..200u64 {
            let started = Instant::now();
            let txn = database.begin_write().unwrap();
            txn.open_table(table).unwrap().insert(index, index).unwrap();
            txn.commit().unwrap();
            samples.push(started.elapsed());
        }
        println!("  machine floor: durable redb commit of one row        median {}", ms(median(samples)));
    }

    if !only_commits {
        journal_figures(directory.path());
    }
    if only_journal {
        return;
    }

    let genesis = genesis_with_accounts(accounts);
    let path = directory.path().join("chain.redb");
    let started = Instant::now();
    let storage = Storage::create(&path, &genesis).unwrap();
    println!("  create with {accounts} genesis accounts                   {}", ms(started.elapsed()));
    let mut state = genesis_block(&genesis).1;
    let mut hashes = vec![state.tip.hash];
    let mut random = Random(0x5eed);

    // 80 blocks of 10,000: every slice folded twice or more, so the figures are of the steady
    // state (the two blocks above the final one and up to 32 below it pending).
    for (transfers, blocks) in [(0usize, 50usize), (1_000, 21), (10_000, 80)] {
        let mut samples = Vec::new();
        let (mut roots, mut applies, mut totals) = (Vec::new(), Vec::new(), Vec::new());
        let mut folds = Vec::new();
        for _ in 0..blocks {
            let mut times = CoreTimes::default();
            let commit = next_commit_timed(&genesis, &mut state, &mut hashes, &mut random, transfers, &mut times);
            let started = Instant::now();
            storage.commit(&commit).unwrap();
            let commit_time = started.elapsed();
            samples.push(commit_time);
            roots.push(times.state_root);
            applies.push(times.apply);
            totals.push(times.state_root + times.apply + commit_time);
            folds.push(storage.last_fold());
        }
        let (min, max) = (*samples.iter().min().unwrap(), *samples.iter().max().unwrap());
        println!(
            "  commit of a block of {transfers:>6} transfers ({blocks} blocks)    median {}  (min {}, max {})",
            ms(median(samples)),
            ms(min),
            ms(max)
        );
        let worst_total = *totals.iter().max().unwrap();
        println!(
            "    + the core's state root {} and apply {}: {} in all (medians), worst block {} in all",
            ms(median(roots)),
            ms(median(applies)),
            ms(median(totals.clone())),
            ms(worst_total)
        );
        print_folds(&folds);
        if transfers == 10_000 {
            println!(
                "  issue 16: a 10,000-transfer block into {accounts} accounts, state root included: median {}, \
                 worst {} of {blocks} (target 200 ms)",
                ms(median(totals)),
                ms(worst_total)
            );
        }
    }

    // A burst of commits of five 10,000-transfer blocks each, as syncing commits them: the
    // pending blocks grow by five a commit, past the bound on them, and commits fold more slices.
    let mut burst = Vec::new();
    for _ in 0..12 {
        let mut ops = Vec::new();
        let mut last = None;
        for _ in 0..5 {
            let commit = next_commit(&genesis, &mut state, &mut hashes, &mut random, 10_000);
            ops.extend(commit.ops.iter().cloned());
            last = Some(commit);
        }
        let commit = Commit { ops, ..last.unwrap() };
        let started = Instant::now();
        storage.commit(&commit).unwrap();
        burst.push((started.elapsed(), storage.last_fold()));
    }
    let times: Vec<Duration> = burst.iter().map(|(time, _)| *time).collect();
    let slices: Vec<String> = burst.iter().map(|(_, fold)| fold.slices.to_string()).collect();
    let worst_fold = burst.iter().map(|(_, fold)| fold.elapsed).max().unwrap();
    let records_max = burst.iter().map(|(_, fold)| fold.records_pending).max().unwrap();
    println!(
        "  burst of 12 commits of 5 blocks of 10000 transfers: commit median {}, worst {} (fold worst {}); slices \
         folded per commit {}; at most {records_max} records not yet folded",
        ms(median(times.clone())),
        ms(*times.iter().max().unwrap()),
        ms(worst_fold),
        slices.join(" ")
    );
    let started = Instant::now();
    std::hint::black_box(state.root());
    let kept = started.elapsed();
    let started = Instant::now();
    std::hint::black_box(tinychain_core::account_tree::accounts_root(&state.accounts, &BTreeMap::new()));
    println!(
        "  state root of {} accounts: from the kept tree {}, the accounts root from scratch {}",
        state.accounts.len(),
        ms(kept),
        ms(started.elapsed())
    );

    if only_commits {
        return;
    }
    finality_delete_figures(directory.path(), &genesis);

    // Up to 10,000 blocks (10 transfers each), then restore as a restarting node does.
    let target_height = 10_000;
    let started = Instant::now();
    while state.tip.height < target_height {
        let commit = next_commit(&genesis, &mut state, &mut hashes, &mut random, 10);
        storage.commit(&commit).unwrap();
    }
    println!("  (filled to height {target_height} in {:.1} s)", started.elapsed().as_secs_f64());
    drop(storage);
    let size_bytes = std::fs::metadata(&path).unwrap().len();
    let started = Instant::now();
    let storage = Storage::open(&path, &genesis).unwrap();
    let opened = started.elapsed();
    let started = Instant::now();
    let restored = storage.restored().unwrap();
    let restore = started.elapsed();
    assert_eq!(restored.state, state, "the database restores the state it was given");
    println!(
        "  at height {target_height}: open {}, restored() {} ({} accounts, {} canonical hashes, {} recent blocks), \
         file {:.1} MiB",
        ms(opened),
        ms(restore),
        restored.state.accounts.len(),
        restored.canonical_hashes.len(),
        restored.recent_blocks.len(),
        size_bytes as f64 / (1024.0 * 1024.0)
    );
    let started = Instant::now();
    let restored_again = storage.restored().unwrap();
    println!("  restored() again (warm cache)                          {}", ms(started.elapsed()));
    drop(restored_again);
    drop(storage);
    table_sizes(&path);
}

/// Where the file's bytes are: each big table's stored, metadata and fragmented bytes (redb's
/// `TableStats`), in MiB.
fn table_sizes(path: &std::path::Path) {
    let database = redb::Database::open(path).unwrap();
    let txn = database.begin_read().unwrap();
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let mut line = String::from("  tables (MiB stored + metadata + fragmented):");
    let mut add = |name: &str, stats: redb::TableStats| {
        line.push_str(&format!(
            " {name} {:.0}+{:.0}+{:.0};",
            mib(stats.stored_bytes()),
            mib(stats.metadata_bytes()),
            mib(stats.fragmented_bytes())
        ));
    };
    for name in ["blocks", "undo", "account_deltas"] {
        add(name, txn.open_table(redb::TableDefinition::<u64, &[u8]>::new(name)).unwrap().stats().unwrap());
    }
    add(
        "account_chunks",
        txn.open_table(redb::TableDefinition::<u16, &[u8]>::new("account_chunks")).unwrap().stats().unwrap(),
    );
    for name in ["tx_index_rows", "address_history_rows"] {
        add(name, txn.open_table(redb::TableDefinition::<(u16, u32), &[u8]>::new(name)).unwrap().stats().unwrap());
    }
    println!("{line}");
}
