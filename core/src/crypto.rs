//! Hashing (Blake3), Merkle roots, Ed25519 signing and strict verification, and the cache of
//! verified signatures.
//!
//! `verify_strict` is the one acceptance rule. `verify_batch` is never used: it can accept
//! signatures `verify_strict` rejects, and nodes would then disagree about validity. To use both
//! cores, a block's uncached signatures are split across scoped threads instead (a fork-join
//! over pure functions: the result does not depend on the thread count).

use crate::types::{Address, Hash, Signature};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

pub fn hash_bytes(bytes: &[u8]) -> Hash {
    Hash(*blake3::hash(bytes).as_bytes())
}

const MERKLE_LEAF_PREFIX: u8 = 0x00;
const MERKLE_NODE_PREFIX: u8 = 0x01;
const MERKLE_EMPTY_PREFIX: u8 = 0x02;

/// Blake3 Merkle root. Leaves are `blake3(0x00 || item)`, inner nodes `blake3(0x01 || left ||
/// right)`, the empty tree is `blake3(0x02)`. An odd node at the end of a level is carried up
/// unchanged (never paired with itself, which would let two different lists share a root).
pub fn merkle_root(items: &[Hash]) -> Hash {
    merkle_root_of_leaves(items.iter().map(merkle_leaf).collect())
}

/// `merkle_root` of items whose leaves (`merkle_leaf` of each) are given.
pub fn merkle_root_of_leaves(leaves: Vec<Hash>) -> Hash {
    if leaves.is_empty() {
        return merkle_empty();
    }
    let mut level = leaves;
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [left, right] => next.push(merkle_node(left, right)),
                [odd] => next.push(*odd),
                _ => unreachable!("chunks(2) yields one or two items"),
            }
        }
        level = next;
    }
    level[0]
}

/// The root of an empty list: `blake3(0x02)`.
pub fn merkle_empty() -> Hash {
    hash_bytes(&[MERKLE_EMPTY_PREFIX])
}

/// A Merkle leaf: `blake3(0x00 || item)`.
pub fn merkle_leaf(item: &Hash) -> Hash {
    let mut bytes = [0u8; 33];
    bytes[0] = MERKLE_LEAF_PREFIX;
    bytes[1..].copy_from_slice(&item.0);
    hash_bytes(&bytes)
}

/// An inner Merkle node: `blake3(0x01 || left || right)`.
pub fn merkle_node(left: &Hash, right: &Hash) -> Hash {
    let mut bytes = [0u8; 65];
    bytes[0] = MERKLE_NODE_PREFIX;
    bytes[1..33].copy_from_slice(&left.0);
    bytes[33..].copy_from_slice(&right.0);
    hash_bytes(&bytes)
}

/// A node's or wallet's signing key. The core never generates one: keys come from the caller
/// (the keystore, the simulator's seeded generator, or a test).
#[derive(Clone)]
pub struct Keypair {
    signing_key: SigningKey,
}

impl Keypair {
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Keypair {
        Keypair { signing_key: SigningKey::from_bytes(secret) }
    }

    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing_key.to_bytes()
    }

    pub fn address(&self) -> Address {
        Address(self.signing_key.verifying_key().to_bytes())
    }

    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.signing_key.sign(message).to_bytes())
    }
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keypair({:?})", self.address())
    }
}

/// Strict Ed25519 verification (rejects small-order keys and non-canonical encodings).
pub fn verify_strict(signer: &Address, message: &[u8], signature: &Signature) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&signer.0) else {
        return false;
    };
    verify_with_key(&key, message, signature)
}

fn verify_with_key(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
    key.verify_strict(message, &signature).is_ok()
}

/// Decompressed public keys (decompression is ~10% of a verification, and senders and
/// validators sign again and again). Bounded: cleared when full.
const DECOMPRESSED_KEYS_MAX: usize = 65_536;

/// Remembers (key, message, signature) triples that verified, so a transfer checked when it
/// entered the mempool is not checked again in its block. Only successes are cached, and
/// verification is pure, so a hit or a miss never changes an outcome, only its cost. Bounded:
/// the oldest entry is forgotten first. Interior locking lets the simulator share one cache
/// across all its nodes and lets verification threads record their results.
#[derive(Debug, Default)]
pub struct SignatureCache {
    inner: Mutex<CacheInner>,
    capacity: usize,
    keys: Mutex<std::collections::HashMap<Address, VerifyingKey>>,
    /// Ids of signed objects whose signature verified through `verify_identified`, where the id
    /// alone determines signer, signed bytes and signature (a transfer id hashes every field and
    /// the signature). The simulator delivers one transfer to every node: the first pays for
    /// the signing bytes, the cache key and the check, the others only look its id up.
    identified: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashSet<Hash>,
    order: VecDeque<Hash>,
}

impl CacheInner {
    /// Remembers `key`; past `capacity` the oldest entry is forgotten first.
    fn insert(&mut self, key: Hash, capacity: usize) {
        if capacity == 0 || !self.entries.insert(key) {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }
}

/// Runs `work` over `0..count` cut into one contiguous range per thread, on up to `threads`
/// scoped threads (at most 64, and no more than leave each `per_thread_min` items; one thread
/// runs on the caller's), joined before returning; the results in range order.
fn on_scoped_threads<R, W>(count: usize, threads: usize, per_thread_min: usize, work: W) -> Vec<R>
where
    R: Send,
    W: Fn(std::ops::Range<usize>) -> R + Sync,
{
    let threads = threads.clamp(1, 64).min(count.div_ceil(per_thread_min)).max(1);
    if threads == 1 {
        return vec![work(0..count)];
    }
    let chunk_len = count.div_ceil(threads);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let range = (thread * chunk_len).min(count)..((thread + 1) * chunk_len).min(count);
                scope.spawn(move || work(range))
            })
            .collect();
        handles.into_iter().map(|handle| handle.join().expect("signature verification does not panic")).collect()
    })
}

fn cache_key(signer: &Address, message: &[u8], signature: &Signature) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&signer.0);
    hasher.update(&signature.0);
    hasher.update(message);
    Hash(*hasher.finalize().as_bytes())
}

impl SignatureCache {
    pub fn new(capacity: usize) -> SignatureCache {
        SignatureCache {
            inner: Mutex::new(CacheInner::default()),
            capacity,
            keys: Mutex::default(),
            identified: Mutex::new(CacheInner::default()),
        }
    }

    /// Strict verification with the signer's key decompressed once and remembered.
    fn verify_uncached(&self, signer: &Address, message: &[u8], signature: &Signature) -> bool {
        let known = self.keys.lock().expect("key lock is never poisoned: no panics while held").get(signer).copied();
        let key = match known {
            Some(key) => key,
            None => {
                let Ok(key) = VerifyingKey::from_bytes(&signer.0) else {
                    return false;
                };
                let mut keys = self.keys.lock().expect("key lock is never poisoned: no panics while held");
                if keys.len() >= DECOMPRESSED_KEYS_MAX {
                    keys.clear();
                }
                keys.insert(*signer, key);
                key
            }
        };
        verify_with_key(&key, message, signature)
    }

    fn contains(&self, key: &Hash) -> bool {
        self.inner.lock().expect("cache lock is never poisoned: no panics while held").entries.contains(key)
    }

    fn insert(&self, key: Hash) {
        self.inner.lock().expect("cache lock is never poisoned: no panics while held").insert(key, self.capacity);
    }

    /// Verifies the signature of an object identified by `id`, which must determine `signer`,
    /// the bytes `message` builds and `signature` together (a Blake3 over all of them, as a
    /// transfer id is). A known id is a hit without building the message; otherwise this is
    /// `verify`, and a success remembers the id too. Only successes are remembered, so a hit
    /// never changes an answer.
    pub fn verify_identified(
        &self,
        id: &Hash,
        signer: &Address,
        message: impl FnOnce() -> Vec<u8>,
        signature: &Signature,
    ) -> bool {
        let lock_identified = || self.identified.lock().expect("cache lock is never poisoned: no panics while held");
        if lock_identified().entries.contains(id) {
            return true;
        }
        let valid = self.verify(signer, &message(), signature);
        if valid {
            lock_identified().insert(*id, self.capacity);
        }
        valid
    }

    /// `verify_identified` for `count` items split across `threads` scoped threads, for its
    /// effect on the cache only: `item(index)` gives an object's id, signer and signature, and
    /// `message(index)` its signed bytes (built only for an id not yet known). Used to check
    /// signatures before the objects reach a core (`validate::warm_transfer_signatures`).
    pub fn verify_identified_all<I, M>(&self, count: usize, threads: usize, item: I, message: M)
    where
        I: Fn(usize) -> (Hash, Address, Signature) + Sync,
        M: Fn(usize) -> Vec<u8> + Sync,
    {
        on_scoped_threads(count, threads, 32, |range| {
            for index in range {
                let (id, signer, signature) = item(index);
                let _ = self.verify_identified(&id, &signer, || message(index), &signature);
            }
        });
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("cache lock is never poisoned: no panics while held").order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies one signature, consulting and feeding the cache.
    pub fn verify(&self, signer: &Address, message: &[u8], signature: &Signature) -> bool {
        let key = cache_key(signer, message, signature);
        if self.contains(&key) {
            return true;
        }
        let valid = self.verify_uncached(signer, message, signature);
        if valid {
            self.insert(key);
        }
        valid
    }

    /// Verifies `count` signatures, split across `threads` scoped threads. `item(index)` builds
    /// the (signer, message, signature) triple; it runs inside the threads, so encoding the
    /// signed bytes and hashing the cache key are parallel too, and only the verdicts are
    /// gathered. Returns the index of the first invalid item, if any: the same for every thread
    /// count. With several threads, items after the first invalid one may be checked and cached
    /// too: that changes how fast a later check is, never its answer, so the core stays
    /// deterministic (tests/core_is_pure.rs states the rule).
    pub fn verify_all<F>(&self, count: usize, threads: usize, item: F) -> Option<usize>
    where
        F: Fn(usize) -> (Address, Vec<u8>, Signature) + Sync,
    {
        // Below this many items a thread costs more than it saves.
        const ITEMS_PER_THREAD_MIN: usize = 64;
        let check = |range: std::ops::Range<usize>| -> (Vec<Hash>, Option<usize>) {
            let mut verified = Vec::new();
            for index in range {
                let (signer, message, signature) = item(index);
                let key = cache_key(&signer, &message, &signature);
                if self.contains(&key) {
                    continue;
                }
                if self.verify_uncached(&signer, &message, &signature) {
                    verified.push(key);
                } else {
                    // Later items need not be checked: the block is invalid at the first failure.
                    return (verified, Some(index));
                }
            }
            (verified, None)
        };
        let results = on_scoped_threads(count, threads, ITEMS_PER_THREAD_MIN, check);
        let mut first_invalid: Option<usize> = None;
        for (verified, invalid) in results {
            for key in verified {
                self.insert(key);
            }
            if let Some(index) = invalid {
                first_invalid = Some(first_invalid.map_or(index, |first| first.min(index)));
            }
        }
        first_invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(n: u8) -> Hash {
        Hash([n; 32])
    }

    #[test]
    fn merkle_root_distinguishes_odd_lists_from_their_padded_twins() {
        let three = merkle_root(&[leaf(1), leaf(2), leaf(3)]);
        let padded = merkle_root(&[leaf(1), leaf(2), leaf(3), leaf(3)]);
        assert_ne!(three, padded);
        assert_ne!(merkle_root(&[]), merkle_root(&[leaf(0)]));
        assert_ne!(merkle_root(&[leaf(1)]), leaf(1), "a single leaf is still hashed as a leaf");
    }

    #[test]
    fn merkle_root_depends_on_order() {
        assert_ne!(merkle_root(&[leaf(1), leaf(2)]), merkle_root(&[leaf(2), leaf(1)]));
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let key = Keypair::from_secret_bytes(&[5; 32]);
        let other = Keypair::from_secret_bytes(&[6; 32]);
        let signature = key.sign(b"hello");
        assert!(verify_strict(&key.address(), b"hello", &signature));
        assert!(!verify_strict(&key.address(), b"hellp", &signature));
        assert!(!verify_strict(&other.address(), b"hello", &signature));
    }

    #[test]
    fn cache_only_remembers_valid_signatures_and_stays_bounded() {
        let cache = SignatureCache::new(2);
        let key = Keypair::from_secret_bytes(&[5; 32]);
        let bad = Signature([0; 64]);
        assert!(!cache.verify(&key.address(), b"m", &bad));
        assert_eq!(cache.len(), 0);
        for message in [b"a", b"b", b"c"] {
            assert!(cache.verify(&key.address(), message, &key.sign(message)));
        }
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn an_identified_object_is_verified_once_and_only_a_success_is_remembered() {
        let cache = SignatureCache::new(4);
        let key = Keypair::from_secret_bytes(&[5; 32]);
        let id = |message: &[u8], signature: &Signature| {
            hash_bytes(&[&key.address().0[..], message, &signature.0[..]].concat())
        };
        let bad = Signature([0; 64]);
        assert!(!cache.verify_identified(&id(b"m", &bad), &key.address(), || b"m".to_vec(), &bad));
        assert!(!cache.verify_identified(&id(b"m", &bad), &key.address(), || b"m".to_vec(), &bad), "not remembered");
        let good = key.sign(b"m");
        assert!(cache.verify_identified(&id(b"m", &good), &key.address(), || b"m".to_vec(), &good));
        assert!(
            cache.verify_identified(
                &id(b"m", &good),
                &key.address(),
                || unreachable!("a known id is not encoded"),
                &good
            ),
            "a known id is a hit"
        );
        assert!(cache.verify(&key.address(), b"m", &good), "the (key, message, signature) entry is kept too");
    }

    #[test]
    fn parallel_verification_finds_the_first_invalid_item_whatever_the_thread_count() {
        let key = Keypair::from_secret_bytes(&[5; 32]);
        let signed = |n: u32| {
            let message = n.to_le_bytes().to_vec();
            let signature = key.sign(&message);
            (key.address(), message, signature)
        };
        let mut items: Vec<(Address, Vec<u8>, Signature)> = (0..200u32).map(signed).collect();
        items[150].2 = Signature([1; 64]);
        items[170].2 = Signature([1; 64]);
        for threads in [1, 2, 3, 8] {
            let cache = SignatureCache::new(1000);
            let first = cache.verify_all(items.len(), threads, |index| items[index].clone());
            assert_eq!(first, Some(150), "threads = {threads}");
            // Each thread stops at its first failure; everything before item 150 was verified.
            assert!(cache.len() >= 150, "threads = {threads}: {} cached", cache.len());
            // A second pass, now mostly from the cache, finds the same first failure.
            assert_eq!(cache.verify_all(items.len(), threads, |index| items[index].clone()), Some(150));
        }
        items[150] = signed(150);
        items[170] = signed(170);
        let cache = SignatureCache::new(1000);
        assert_eq!(cache.verify_all(items.len(), 2, |index| items[index].clone()), None);
        assert_eq!(cache.len(), 200);
    }
}
