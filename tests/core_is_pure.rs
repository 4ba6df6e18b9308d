//! Architecture Invariant: `tinychain-core` does no I/O. It depends (transitively) on no async
//! runtime, TLS, storage, system-metrics or OS-randomness crate, and its source names no clock,
//! environment, filesystem, network or OS RNG API. This test reads Cargo.lock and core/src, so
//! it fails the moment someone adds such a dependency or call.

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
];

/// Package name -> names of its dependencies, from Cargo.lock.
fn lock_graph(lock: &str) -> BTreeMap<String, Vec<String>> {
    let mut graph = BTreeMap::new();
    for package in lock.split("[[package]]").skip(1) {
        let name = package
            .lines()
            .find_map(|line| line.strip_prefix("name = "))
            .map(|name| name.trim_matches('"').to_string())
            .expect("every lock entry has a name");
        let mut dependencies = Vec::new();
        if let Some(start) = package.find("dependencies = [") {
            let list = &package[start + "dependencies = [".len()..];
            let list = &list[..list.find(']').expect("the dependency list is closed")];
            for entry in list.split(',') {
                let entry = entry.trim().trim_matches('"');
                if let Some(dependency) = entry.split_whitespace().next() {
                    dependencies.push(dependency.to_string());
                }
            }
        }
        graph.entry(name).or_insert_with(Vec::new).extend(dependencies);
    }
    graph
}

#[test]
fn core_depends_on_no_io_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).expect("Cargo.lock is committed");
    let graph = lock_graph(&lock);
    // Only normal dependencies matter; dev-dependencies (proptest, rand_chacha) are listed in the
    // lock too, so take core's own normal dependency names from its manifest.
    let manifest = std::fs::read_to_string(root.join("core/Cargo.toml")).expect("core/Cargo.toml exists");
    let normal =
        manifest.split("[dependencies]").nth(1).expect("core has dependencies").split("\n[").next().unwrap_or_default();
    let direct: Vec<String> = normal
        .lines()
        .filter_map(|line| line.split(['.', '=', ' ']).next())
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert!(direct.iter().any(|name| name == "blake3"), "parsed core's dependencies: {direct:?}");
    let mut reached = BTreeSet::new();
    let mut stack = direct.clone();
    while let Some(name) = stack.pop() {
        if reached.insert(name.clone()) {
            stack.extend(graph.get(&name).cloned().unwrap_or_default());
        }
    }
    for forbidden in FORBIDDEN_CRATES {
        assert!(!reached.contains(*forbidden), "core reaches `{forbidden}` through its dependencies: {reached:?}");
    }
}

#[test]
fn core_source_names_no_clock_environment_disk_network_or_os_randomness() {
    let source_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("core/src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&source_dir).expect("core/src exists") {
        let path = entry.expect("readable directory entry").path();
        if path.extension().is_some_and(|extension| extension == "rs") {
            let text = std::fs::read_to_string(&path).expect("readable source file");
            for forbidden in FORBIDDEN_SOURCE {
                assert!(!text.contains(forbidden), "{} mentions `{forbidden}`", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "expected to scan the core's modules, scanned {checked}");
}
