//! Criterion benchmarks of the core's hot paths, named `module::operation/key=value`.
//!
//! Every speed claimed here is set against the machine's limit measured in the same run:
//! `ed25519::verify_strict/raw` is one core's strict Ed25519 verifications per second, and the
//! summary printed at the end gives each `core::apply_block/txs=10000` variant as a ratio of it.
//!
//! Run with `cargo bench --bench core` (about two minutes on the 2-core dev machine). Under
//! `cargo test --benches` criterion runs each benchmark once and the summary is skipped.

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinychain_core::codec::{encoded_len, transfer_signing_bytes};
use tinychain_core::crypto::{hash_bytes, merkle_root, verify_strict, Keypair, SignatureCache};
use tinychain_core::election::rank_candidates;
use tinychain_core::finality::FinalityState;
use tinychain_core::genesis::{genesis_block, Genesis};
use tinychain_core::state::{ChainState, RecordedReport, ValidatorRecord};
use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, validator_key};
use tinychain_core::types::{Address, Block, Checkpoint, Hash, Height, Signature, Transfer, Vote};
use tinychain_core::validate::{
    apply_block, build_block, check_transfer_alone, transfer_id, validate_block, BlockContext, ValidBlock,
};

/// Enough entries to hold every signature of the largest block benchmarked.
const WARM_CACHE_ENTRIES: usize = 100_000;

/// How `core::apply_block` treats signatures.
#[derive(Clone, Copy)]
enum Verify {
    /// An empty cache of capacity 0: every signature is verified, on this many threads.
    Uncached { threads: usize },
    /// A cache already holding every signature of the block (as after mempool admission).
    Cached,
}

impl Verify {
    const ALL: [Verify; 3] = [Verify::Uncached { threads: 1 }, Verify::Uncached { threads: 2 }, Verify::Cached];

    fn label(self) -> String {
        match self {
            Verify::Uncached { threads } => format!("uncached_threads={threads}"),
            Verify::Cached => "cached".to_string(),
        }
    }
}

/// A genesis with `txs` funded accounts and a block 1 holding one transfer from each of them.
struct BlockSetup {
    txs: usize,
    genesis: Genesis,
    state: ChainState,
    block: Arc<Block>,
    now_ms: u64,
    /// Every signature of `block` (and its header) verified once.
    warm_cache: SignatureCache,
}

impl BlockSetup {
    fn new(txs: usize) -> BlockSetup {
        let mut genesis = fast_genesis(4, txs);
        genesis.parameters.block_transfers_max = u32::try_from(txs.max(10_000)).expect("a small count");
        genesis.parameters.block_bytes_max = 8 * 1024 * 1024;
        genesis.validate().expect("the benchmark genesis is valid");
        let (_, state) = genesis_block(&genesis);
        // One transfer from each account to the next: distinct senders, each funded, each
        // recipient a different account.
        let transfers: Vec<Transfer> = (0..txs)
            .map(|index| {
                let to = account_key((index + 1) % txs).address();
                sign_transfer(&account_key(index), &genesis.chain_id, to, 1_000, 10, 0)
            })
            .collect();
        let producer_id = rank_candidates(&genesis, &state.validators, &state.tip)[0].node;
        let producer: Keypair = (0..genesis.validators.len())
            .map(validator_key)
            .find(|key| key.address() == producer_id)
            .expect("the rank-0 validator is one of the genesis validators");
        let now_ms = genesis.genesis_time_ms + genesis.parameters.block_interval_ms;
        let build_cache = SignatureCache::new(0);
        let ancestor_hash = genesis_ancestor(&state);
        let context = BlockContext {
            genesis: &genesis,
            state: &state,
            ancestor_hash: &ancestor_hash,
            now_ms,
            cache: &build_cache,
            verify_threads: 1,
        };
        let built =
            build_block(&context, &producer, 0, now_ms, transfers, Vec::new(), Vec::new()).expect("the block builds");
        let block = built.block;
        let warm_cache = SignatureCache::new(WARM_CACHE_ENTRIES);
        let setup = BlockSetup { txs, genesis, state, block, now_ms, warm_cache };
        // Warm the cache by validating once; this also checks the block is valid.
        setup.validate(&setup.warm_cache, 1);
        assert_eq!(setup.warm_cache.len(), txs + 1, "every transfer and the header are cached");
        setup
    }

    fn validate(&self, cache: &SignatureCache, verify_threads: usize) -> ValidBlock {
        let ancestor_hash = genesis_ancestor(&self.state);
        let context = BlockContext {
            genesis: &self.genesis,
            state: &self.state,
            ancestor_hash: &ancestor_hash,
            now_ms: self.now_ms,
            cache,
            verify_threads,
        };
        validate_block(&context, self.block.clone()).expect("the benchmark block is valid")
    }

    /// Validate the block against the genesis state and apply it to `state` (a clone of it).
    fn validate_and_apply(&self, state: &mut ChainState, verify: Verify, cold_cache: &SignatureCache) {
        let valid = match verify {
            Verify::Uncached { threads } => self.validate(cold_cache, threads),
            Verify::Cached => self.validate(&self.warm_cache, 1),
        };
        black_box(apply_block(state, &valid));
    }
}

/// `ancestor_hash` for a block extending genesis: only height 0 is known.
fn genesis_ancestor(state: &ChainState) -> impl Fn(Height) -> Option<Hash> {
    let genesis_hash = state.tip.hash;
    move |height| (height == 0).then_some(genesis_hash)
}

/// A cheap deterministic generator for "random-ish" benchmark inputs (splitmix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn one_transfer() -> (Keypair, Transfer) {
    let key = account_key(0);
    let transfer = sign_transfer(&key, "tinychain-test", account_key(1).address(), 1_000, 10, 0);
    (key, transfer)
}

fn bench_verify_transfer(c: &mut Criterion) {
    let (_, transfer) = one_transfer();
    // A fresh, capacity-0 cache each time: the signature really is verified. (A bare id, not a
    // group: criterion rejects an empty function name inside a group.)
    c.bench_function("core::verify_transfer", |b| {
        b.iter(|| {
            let cache = SignatureCache::new(0);
            check_transfer_alone(black_box("tinychain-test"), black_box(&transfer), &cache)
                .expect("the transfer is valid")
        })
    });
}

/// The inputs of one raw strict verification: a decompressed key, a signature and the transfer
/// signing bytes (the message every transfer verification checks).
fn raw_verify_inputs() -> (ed25519_dalek::VerifyingKey, ed25519_dalek::Signature, Vec<u8>) {
    let (key, transfer) = one_transfer();
    let verifying_key = ed25519_dalek::VerifyingKey::from_bytes(&key.address().0).expect("a valid key");
    let signature = ed25519_dalek::Signature::from_bytes(&transfer.signature.0);
    (verifying_key, signature, transfer_signing_bytes(&transfer))
}

fn bench_raw_verify(c: &mut Criterion) {
    let (key, signature, message) = raw_verify_inputs();
    let mut group = c.benchmark_group("ed25519::verify_strict");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("raw", |b| {
        b.iter(|| black_box(&key).verify_strict(black_box(&message), black_box(&signature)).expect("valid"))
    });
    group.finish();
}

fn bench_apply_block(c: &mut Criterion, setups: &[&BlockSetup]) {
    let mut group = c.benchmark_group("core::apply_block");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    let cold_cache = SignatureCache::new(0);
    for setup in setups {
        group.throughput(Throughput::Elements(setup.txs as u64));
        group.measurement_time(Duration::from_secs(if setup.txs >= 10_000 { 5 } else { 3 }));
        for verify in Verify::ALL {
            group.bench_function(BenchmarkId::new(format!("txs={}", setup.txs), verify.label()), |b| {
                b.iter_batched(
                    || setup.state.clone(),
                    |mut state| {
                        setup.validate_and_apply(&mut state, verify, &cold_cache);
                        state
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

fn bench_merkle_root(c: &mut Criterion) {
    let leaves: Vec<Hash> = (0..10_000u32).map(|n| hash_bytes(&n.to_le_bytes())).collect();
    let mut group = c.benchmark_group("core::merkle_root");
    group.throughput(Throughput::Elements(leaves.len() as u64));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("leaves=10000", |b| b.iter(|| merkle_root(black_box(&leaves))));
    group.finish();
}

fn bench_election(c: &mut Criterion) {
    const VALIDATORS: usize = 100;
    let genesis = fast_genesis(VALIDATORS, 0);
    let parent = Checkpoint { height: 40, hash: hash_bytes(b"parent") };
    let mut rng = SplitMix(7);
    // Random-ish records: most active with varied scores, some stale, some demoted, some silent.
    let records: Vec<ValidatorRecord> = (0..VALIDATORS)
        .map(|_| {
            let cpu = rng.below(1_001) as u16;
            let net = rng.below(1_001) as u16;
            let tip_height = parent.height - rng.below(30);
            let silent = rng.below(10) == 0;
            ValidatorRecord {
                latest_report: (!silent).then(|| RecordedReport {
                    sequence: rng.below(1_000),
                    tip: Checkpoint { height: tip_height, hash: hash_bytes(&tip_height.to_le_bytes()) },
                    cpu,
                    net,
                    score: genesis.score(cpu, net),
                }),
                missed_turn_at: (rng.below(10) == 0).then_some(parent.height - 1),
                blocks_produced: rng.below(100),
                jailed_until: None,
                recent_blocks: Vec::new(),
            }
        })
        .collect();
    let mut group = c.benchmark_group("core::election");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function(format!("validators={VALIDATORS}"), |b| {
        b.iter(|| rank_candidates(black_box(&genesis), black_box(&records), black_box(&parent)))
    });
    group.finish();
}

fn bench_finality(c: &mut Criterion) {
    const HISTORY: u64 = 3;
    // The chain: one checkpoint per height; the benchmarked block commits votes for the tip.
    let chain: Vec<Checkpoint> =
        (0..=HISTORY + 1).map(|height| Checkpoint { height, hash: hash_bytes(&height.to_le_bytes()) }).collect();
    let by_height: BTreeMap<Height, Hash> =
        chain.iter().map(|checkpoint| (checkpoint.height, checkpoint.hash)).collect();
    let is_on_chain = |checkpoint: &Checkpoint| by_height.get(&checkpoint.height) == Some(&checkpoint.hash);
    let mut group = c.benchmark_group("core::finality");
    group.measurement_time(Duration::from_secs(3));
    for validators in [4usize, 16, 100] {
        let quorum = 2 * validators / 3 + 1;
        let votes_for = |state: &FinalityState, target: Checkpoint| -> Vec<(u32, Vote)> {
            (0..validators as u32).map(|voter| (voter, Vote { source: state.justified, target })).collect()
        };
        // A few blocks of history: each block commits every validator's vote for its parent.
        let mut state = FinalityState::at_genesis(chain[0]);
        for checkpoint in &chain[1..=HISTORY as usize] {
            state = state.with_votes(&votes_for(&state, *checkpoint), quorum, &is_on_chain).0;
        }
        assert_eq!(state.justified, chain[HISTORY as usize], "the history justified its tip");
        let votes = votes_for(&state, chain[HISTORY as usize + 1]);
        group.throughput(Throughput::Elements(validators as u64));
        group.bench_function(format!("validators={validators}"), |b| {
            b.iter(|| {
                let (next, outcomes) = black_box(&state).with_votes(black_box(&votes), quorum, &is_on_chain);
                debug_assert_eq!(next.justified, chain[HISTORY as usize + 1]);
                (next, outcomes)
            })
        });
    }
    group.finish();
}

/// Keeps a result alive so the optimiser cannot skip computing it.
fn consume<T>(value: T) {
    black_box(value);
}

/// Best of `repeats` timings of `run`, each after `setup` (setup is not timed).
fn best_of<S>(repeats: usize, mut setup: impl FnMut() -> S, mut run: impl FnMut(S)) -> Duration {
    (0..repeats)
        .map(|_| {
            let input = setup();
            let start = Instant::now();
            run(input);
            start.elapsed()
        })
        .min()
        .expect("at least one repeat")
}

/// Times one run of `run` on a fresh input from `setup` (setup is not timed).
fn time_once<S>(setup: impl FnOnce() -> S, run: impl FnOnce(S)) -> Duration {
    let input = setup();
    let start = Instant::now();
    run(input);
    start.elapsed()
}

/// The 1-minute load average, to judge whether other work on the machine skewed the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

/// A short manual measurement, so the ratios to the machine's limit print in the same run.
/// The variants are timed in interleaved rounds and the best of each kept, so a burst of other
/// work on the machine (or its host) hits them alike rather than skewing one ratio; the spread
/// printed with them says how noisy the run was.
fn print_summary(setup: &BlockSetup) {
    const RAW_BATCH: u32 = 2_000;
    const ROUNDS: usize = 7;
    let (key, signature, message) = raw_verify_inputs();
    let cold_cache = SignatureCache::new(0);
    let load_before = load_average();
    let raw_batch = || {
        time_once(
            || (),
            |()| {
                for _ in 0..RAW_BATCH {
                    black_box(&key).verify_strict(black_box(&message), black_box(&signature)).expect("valid");
                }
            },
        )
    };
    let apply = |verify: Verify| {
        time_once(|| setup.state.clone(), |mut state| setup.validate_and_apply(&mut state, verify, &cold_cache))
    };
    // Per variant, every round's time: raw verification, uncached on 1 and 2 threads, cached.
    let mut times: [Vec<Duration>; 4] = Default::default();
    for _ in 0..ROUNDS {
        // Raw batches are short, so take three per round for as many chances at a quiet moment.
        times[0].push((0..3).map(|_| raw_batch()).min().expect("three batches"));
        times[1].push(apply(Verify::Uncached { threads: 1 }));
        times[2].push(apply(Verify::Uncached { threads: 2 }));
        times[3].push(apply(Verify::Cached));
    }
    let best = times.each_ref().map(|times| *times.iter().min().expect("at least one round"));
    let spread = times.each_ref().map(|times| {
        let worst = times.iter().max().expect("at least one round");
        worst.as_secs_f64() / times.iter().min().expect("at least one round").as_secs_f64()
    });
    let raw_per_s = f64::from(RAW_BATCH) / best[0].as_secs_f64();
    let [uncached_1, uncached_2, cached] =
        [best[1], best[2], best[3]].map(|time| setup.txs as f64 / time.as_secs_f64());
    let txs = setup.txs;
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!();
    println!(
        "summary (best of {ROUNDS} interleaved rounds; {} cores; load average {load_before} before, {} after):",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    println!("raw verify_strict (1 core): {raw_per_s:.0}/s");
    let ratio_1 = uncached_1 / raw_per_s;
    println!(
        "apply_block txs={txs} uncached threads=1: {uncached_1:.0} transfers/s = {ratio_1:.2}x raw   (target >= 0.80x: {})",
        verdict(ratio_1 >= 0.80)
    );
    let ratio_2 = uncached_2 / raw_per_s;
    println!(
        "apply_block txs={txs} uncached threads=2: {uncached_2:.0} transfers/s = {ratio_2:.2}x raw   (target >= 1.5x: {})",
        verdict(ratio_2 >= 1.5)
    );
    let speedup = cached / uncached_1;
    println!(
        "apply_block txs={txs} cached: {cached:.0} transfers/s = {speedup:.1}x faster than uncached threads=1   (target >= 10x: {})",
        verdict(speedup >= 10.0)
    );
    println!(
        "noise (slowest round / fastest): raw {:.2}, threads=1 {:.2}, threads=2 {:.2}, cached {:.2}",
        spread[0], spread[1], spread[2], spread[3]
    );
    print_breakdown(setup, raw_per_s, cached);
}

/// Where an apply_block's time goes, from the core's public pieces timed one by one.
fn print_breakdown(setup: &BlockSetup, raw_per_s: f64, cached_per_s: f64) {
    const BATCH: u32 = 2_000;
    let (key, transfer) = one_transfer();
    let address = key.address();
    let message = transfer_signing_bytes(&transfer);
    let micros_each = |time: Duration| time.as_secs_f64() * 1e6 / f64::from(BATCH);
    let core_verify = micros_each(best_of(
        5,
        || (),
        |()| {
            for _ in 0..BATCH {
                assert!(verify_strict(black_box(&address), black_box(&message), black_box(&transfer.signature)));
            }
        },
    ));
    let decompress = micros_each(best_of(
        5,
        || (),
        |()| {
            for _ in 0..BATCH {
                black_box(ed25519_dalek::VerifyingKey::from_bytes(black_box(&address.0)).expect("a valid key"));
            }
        },
    ));
    let raw = 1e6 / raw_per_s;
    let row = |label: &str, value: f64, unit: &str| println!("  {label:<56}{value:7.1} {unit}");
    println!();
    println!("where the time goes (per signature):");
    row("raw verify_strict, key already decompressed", raw, "us");
    row("crypto::verify_strict (decompresses the key each call)", core_verify, "us");
    row("  of which VerifyingKey::from_bytes (decompression)", decompress, "us");

    let block = &setup.block;
    let millis = |time: Duration| time.as_secs_f64() * 1e3;
    let encode_ms = millis(best_of(3, || (), |()| consume(encoded_len(&**block))));
    let ids: Vec<Hash> = block.transfers.iter().map(transfer_id).collect();
    let ids_ms = millis(best_of(3, || (), |()| consume(block.transfers.iter().map(transfer_id).collect::<Vec<_>>())));
    let tx_root_ms = millis(best_of(3, || (), |()| consume(merkle_root(&ids))));
    let signing_bytes = || -> Vec<(Address, Vec<u8>, Signature)> {
        block
            .transfers
            .iter()
            .map(|transfer| (transfer.from, transfer_signing_bytes(transfer), transfer.signature))
            .collect()
    };
    let signing_bytes_ms = millis(best_of(3, || (), |()| consume(signing_bytes())));
    let item = |index: usize| {
        let transfer = &block.transfers[index];
        (transfer.from, transfer_signing_bytes(transfer), transfer.signature)
    };
    let cache_ms =
        millis(best_of(3, || (), |()| assert_eq!(setup.warm_cache.verify_all(block.transfers.len(), 1, item), None)))
            - signing_bytes_ms;
    let state_root_ms = millis(best_of(3, || (), |()| consume(setup.state.root())));
    let total_ms = setup.txs as f64 / cached_per_s * 1e3;
    let named_ms = encode_ms + ids_ms + tx_root_ms + signing_bytes_ms + cache_ms + state_root_ms;
    println!("where the time goes (cached apply_block txs={}, {total_ms:.1} ms in all):", setup.txs);
    row("codec::encoded_len(block), for the size check", encode_ms, "ms");
    row("validate::transfer_id of every transfer", ids_ms, "ms");
    row("merkle_root of the transfer ids", tx_root_ms, "ms");
    row("codec::transfer_signing_bytes of every transfer", signing_bytes_ms, "ms");
    row("SignatureCache::verify_all, all hits (cache keys)", cache_ms, "ms");
    row(&format!("ChainState::root over all {} accounts", setup.state.accounts.len()), state_root_ms, "ms");
    row("the rest (compute_delta maps, election, undo, apply)", total_ms - named_ms, "ms");
}

fn main() {
    let mut criterion = Criterion::default().without_plots().configure_from_args();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not (criterion's test mode).
    let benchmarking = std::env::args().any(|arg| arg == "--bench");
    let listing = std::env::args().any(|arg| arg == "--list");
    // `--profile-time` runs one filtered benchmark under a profiler: keep its profile clean.
    let profiling = std::env::args().any(|arg| arg == "--profile-time");

    bench_verify_transfer(&mut criterion);
    bench_raw_verify(&mut criterion);
    let small = BlockSetup::new(1_000);
    let large = BlockSetup::new(10_000);
    bench_apply_block(&mut criterion, &[&small, &large]);
    bench_merkle_root(&mut criterion);
    bench_election(&mut criterion);
    bench_finality(&mut criterion);
    criterion.final_summary();

    if benchmarking && !listing && !profiling {
        print_summary(&large);
    }
}
