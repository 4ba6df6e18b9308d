//! Architecture Invariant: `tinychain-core` does no I/O. It depends (transitively) on no async
//! runtime, TLS, storage, system-metrics or OS-randomness crate, and its source names no clock,
//! environment, filesystem, network or OS RNG API. This test reads Cargo.lock and core/src, so
//! it fails the moment someone adds such a dependency or call.
//!
//! One kind of thread is allowed: scoped threads (`std::thread::scope`) joined before the
//! function that starts them returns, in two places. `crypto::SignatureCache::verify_all` runs
//! signature checks on them inside `step`: each check is a pure function of its inputs, the
//! verdict is the lowest invalid index whatever the thread count, and the only shared state the
//! threads touch is the signature cache, which changes how fast a later check is, never its
//! answer. `account_tree::AccountTree::root_with` hashes the two halves of the bucket tree of a
//! big block on two: each half is a pure function of the tree and the block's accounts, and the
//! root joins them in a fixed order. Neither can make the core nondeterministic. Any other
//! thread (spawned, sleeping, or scoped elsewhere) is refused here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const FORBIDDEN_CRATES: &[&str] =
    &["tokio", "rustls", "redb", "sysinfo", "getrandom", "mio", "socket2", "rand", "std-env"];

const FORBIDDEN_SOURCE: &[&str] = &[
    "std::time",
    "SystemTime",
    "Instant::now",
    "std::env",
    "std::fs",
    "std::net",
    "std::process",
    "OsRng",
    "thread_rng",
    "getrandom",
    "tokio",
    "thread::spawn",
    "thread::sleep",
    "thread::Builder",
];

/// The modules allowed to use scoped threads (see the module docs), relative to core/src.
const SCOPED_THREADS_ALLOWED_IN: &[&str] = &["crypto.rs", "account_tree.rs"];

/// Every `.rs` file under `dir`, subdirectories included (`node/` is a directory of modules),
/// in a fixed order.
fn rust_sources(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut sources = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable source directory") {
            let path = entry.expect("readable directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                sources.push(path);
            }
        }
    }
    sources.sort();
    sources
}

/// One Cargo.lock entry: its name, version and dependencies as written (`name` when only one
/// version of that crate is locked, `name version` otherwise).
struct LockEntry {
    name: String,
    version: String,
    dependencies: Vec<String>,
}

fn lock_entries(lock: &str) -> Vec<LockEntry> {
    let field = |package: &str, key: &str| {
        package
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .map(|value| value.trim_matches('"').to_string())
            .expect("every lock entry has a name and a version")
    };
    lock.split("[[package]]")
        .skip(1)
        .map(|package| {
            let mut dependencies = Vec::new();
            if let Some(start) = package.find("dependencies = [") {
                let list = &package[start + "dependencies = [".len()..];
                let list = &list[..list.find(']').expect("the dependency list is closed")];
                for entry in list.split(',') {
                    let entry = entry.trim().trim_matches('"');
                    // "name", "name version" or "name version (source)": keep name and version.
                    let words: Vec<&str> = entry.split_whitespace().take(2).collect();
                    if !words.is_empty() {
                        dependencies.push(words.join(" "));
                    }
                }
            }
            LockEntry { name: field(package, "name = "), version: field(package, "version = "), dependencies }
        })
        .collect()
}

/// Resolves a lock dependency reference (`name` or `name version`) to its entry's index.
fn resolve(entries: &[LockEntry], reference: &str) -> usize {
    let mut words = reference.split_whitespace();
    let name = words.next().expect("a dependency has a name");
    let version = words.next();
    let matching: Vec<usize> = (0..entries.len())
        .filter(|index| {
            entries[*index].name == name && version.is_none_or(|version| entries[*index].version == version)
        })
        .collect();
    assert_eq!(matching.len(), 1, "Cargo.lock names `{reference}` unambiguously");
    matching[0]
}

#[test]
fn core_depends_on_no_io_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).expect("Cargo.lock is committed");
    let entries = lock_entries(&lock);
    // Only normal dependencies matter; core's lock entry lists its dev-dependencies (proptest,
    // rand_chacha) too, so keep the names its manifest lists under [dependencies].
    let manifest = std::fs::read_to_string(root.join("core/Cargo.toml")).expect("core/Cargo.toml exists");
    let normal =
        manifest.split("[dependencies]").nth(1).expect("core has dependencies").split("\n[").next().unwrap_or_default();
    let direct_names: BTreeSet<String> = normal
        .lines()
        .filter_map(|line| line.split(['.', '=', ' ']).next())
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert!(direct_names.contains("blake3"), "parsed core's dependencies: {direct_names:?}");
    let core = resolve(&entries, "tinychain-core");
    let mut stack: Vec<usize> = entries[core]
        .dependencies
        .iter()
        .filter(|reference| reference.split_whitespace().next().is_some_and(|name| direct_names.contains(name)))
        .map(|reference| resolve(&entries, reference))
        .collect();
    // The lock lists each crate's dependencies for the whole workspace's feature set, so this
    // over-approximates what core compiles: it can only err on the strict side.
    let mut reached = BTreeSet::new();
    while let Some(index) = stack.pop() {
        if reached.insert(index) {
            stack.extend(entries[index].dependencies.iter().map(|reference| resolve(&entries, reference)));
        }
    }
    let reached_names: BTreeMap<String, String> =
        reached.iter().map(|index| (entries[*index].name.clone(), entries[*index].version.clone())).collect();
    for forbidden in FORBIDDEN_CRATES {
        assert!(
            !reached_names.contains_key(*forbidden),
            "core reaches `{forbidden}` through its dependencies: {reached_names:?}"
        );
    }
}

#[test]
fn core_source_names_no_clock_environment_disk_network_or_os_randomness() {
    let source_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("core/src");
    let sources = rust_sources(&source_dir);
    for path in &sources {
        let text = std::fs::read_to_string(path).expect("readable source file");
        for forbidden in FORBIDDEN_SOURCE {
            assert!(!text.contains(forbidden), "{} mentions `{forbidden}`", path.display());
        }
        let scoped = text.contains("thread::scope");
        let allowed = path
            .strip_prefix(&source_dir)
            .is_ok_and(|relative| SCOPED_THREADS_ALLOWED_IN.iter().any(|module| relative == Path::new(module)));
        assert!(!scoped || allowed, "{} uses scoped threads; only {SCOPED_THREADS_ALLOWED_IN:?} may", path.display());
    }
    // The step machine is a directory of modules: make sure the walk reached into it.
    let step_machine = source_dir.join("node/mod.rs");
    assert!(sources.contains(&step_machine), "the scan reaches {}: {sources:?}", step_machine.display());
    assert!(sources.len() >= 20, "expected to scan the core's modules, scanned {}", sources.len());
}
