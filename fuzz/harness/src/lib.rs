//! The bodies of tinychain's fuzz targets, as plain functions over bytes.
//!
//! This crate owns what each target feeds the node and what it checks beyond "no panic". The
//! cargo-fuzz binaries in `fuzz/fuzz_targets/` are one line each, calling [`run`] with their
//! name; `tests/corpora.rs` replays every kept corpus file (`fuzz/corpus/<target>/`) and every
//! finding (`fuzz/regressions/<target>/`) through the same functions on the stable toolchain, so
//! CI runs what the fuzzer found without libFuzzer.
//!
//! Targets that must get past a signature or a checksum take structured input: the bytes are
//! read with `arbitrary` into a description of a well-formed object and the changes to make to
//! it, so the fuzzer spends its time on the checks behind the first one. Each `run` returns a
//! short outcome (how far the input got) that the harness's own tests assert on, so a harness
//! that silently stopped reaching the interesting code fails a test.

pub mod block_mutation;
pub mod block_validation;
pub mod config;
pub mod evidence;
pub mod fixture;
pub mod frames;
pub mod genesis;
pub mod handshake;
pub mod keystore;
pub mod message_step;
pub mod peer_session;
pub mod rpc;
pub mod text;

/// A target's body: the fuzzer's bytes in, a short outcome out.
pub type Body = fn(&[u8]) -> String;

/// Every target: the name of its cargo-fuzz binary and corpus directory, and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("message_step", message_step::run),
    ("peer_session", peer_session::run),
    ("block_validation", block_validation::run),
    ("block_mutation", block_mutation::run),
    ("evidence", evidence::run),
    ("handshake", handshake::run),
    ("frames", frames::run),
    ("rpc", rpc::run),
    ("genesis", genesis::run),
    ("config", config::run),
    ("keystore", keystore::run),
    ("text", text::run),
];

/// Runs the target called `name` on `data` and returns its outcome.
///
/// Panics if no target has that name: the caller's list of targets is wrong.
pub fn run(name: &str, data: &[u8]) -> String {
    let (_, body) =
        TARGETS.iter().find(|(target, _)| *target == name).unwrap_or_else(|| panic!("no fuzz target named {name}"));
    body(data)
}

/// One byte of a 32-byte or 64-byte value to change: `xor` is applied at `index` modulo the
/// length (a zero `xor` becomes 1, so a flip always changes the value).
#[derive(arbitrary::Arbitrary, Clone, Copy, Debug)]
pub struct ByteFlip {
    pub index: u8,
    pub xor: u8,
}

impl ByteFlip {
    pub fn apply(self, bytes: &mut [u8]) {
        if bytes.is_empty() {
            return;
        }
        let index = usize::from(self.index) % bytes.len();
        bytes[index] ^= self.xor.max(1);
    }
}

/// Reads a structured input from the fuzzer's bytes the way `fuzz_target!(|input: T|)` would.
pub fn structured<'a, T: arbitrary::Arbitrary<'a>>(data: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(arbitrary::Unstructured::new(data)).ok()
}

/// The body of a target with two modes, picked by the first byte: even hands the rest to `raw`,
/// odd reads it as a structured input for `structured`.
pub fn by_mode<'a, T: arbitrary::Arbitrary<'a>>(
    data: &'a [u8],
    raw: impl FnOnce(&'a [u8]) -> String,
    structured: impl FnOnce(&T) -> String,
) -> String {
    match data.split_first() {
        None => "empty".to_string(),
        Some((mode, rest)) if mode % 2 == 0 => raw(rest),
        Some((_, rest)) => match crate::structured::<T>(rest) {
            None => "not an input".to_string(),
            Some(input) => structured(&input),
        },
    }
}
