//! The accounts' part of the state root, kept up to date block by block.
//!
//! Accounts fall into `ACCOUNT_BUCKETS` (65,536) buckets by the first two bytes of their address,
//! big-endian. A bucket's root is the Merkle root (`crypto::merkle_root`) of its account leaves
//! in address order; the accounts root is the Merkle root of the 65,536 bucket roots in bucket
//! order, a perfect tree of 16 levels. Addresses are public keys, so buckets fill evenly: a
//! million accounts put about 15 in each. A block changes the buckets of the accounts it
//! touches, so the root costs those buckets and their paths to the top, not the whole ledger,
//! and a new account shifts nothing outside its bucket.
//!
//! `AccountTree` caches every level of the bucket tree (4 MiB) and every node of each bucket's
//! own Merkle tree (its accounts' Merkle leaves and the nodes above them: about 64 bytes an
//! account), so a block hashes the accounts it writes and the paths above them, in their
//! buckets and in the bucket tree. (A bucket that gains an account is hashed again whole: the
//! new leaf shifts the pairing of those after it.) It is only a cache: its root is always what
//! `accounts_root` computes from the accounts alone, which the tests check after random
//! changes. Subtrees with no account are known constants, so building a tree or computing a
//! root from scratch hashes only the paths of the buckets that hold accounts.

use crate::crypto::{hash_bytes, merkle_empty, merkle_leaf, merkle_node, merkle_root};
use crate::types::{Account, Address, Hash};
use std::collections::BTreeMap;

/// Accounts are bucketed by the first `ACCOUNT_BUCKET_BITS` bits of their address.
pub const ACCOUNT_BUCKET_BITS: usize = 16;
pub const ACCOUNT_BUCKETS: usize = 1 << ACCOUNT_BUCKET_BITS;

/// A root over an overlay touching at least this many buckets is hashed on two threads, one
/// per half of the bucket tree (a 10,000-transfer block touches about 17,000 buckets at a
/// million accounts, a 1,000-transfer block about 2,000); below it a thread costs more than it
/// saves. The root is the same either way.
const ROOT_PARALLEL_BUCKETS_MIN: usize = 1_024;

const ACCOUNT_LEAF_TAG: &str = "tinychain/account/v1";

/// The bucket an account falls into: its address's first two bytes, big-endian.
pub fn bucket_of(address: &Address) -> usize {
    usize::from(u16::from_be_bytes([address.0[0], address.0[1]]))
}

/// The addresses of a bucket, as a range.
fn bucket_range(bucket: usize) -> std::ops::RangeInclusive<Address> {
    let prefix = u16::try_from(bucket).expect("a bucket index fits two bytes").to_be_bytes();
    let mut first = [0u8; 32];
    let mut last = [0xffu8; 32];
    first[..2].copy_from_slice(&prefix);
    last[..2].copy_from_slice(&prefix);
    Address(first)..=Address(last)
}

/// The sizes of the levels of a Merkle tree over `leaves` leaves, as `merkle_root_of_leaves`
/// builds it (an odd node at the end of a level is carried up): `leaves`, then half of it
/// rounded up, down to 1. None for no leaves.
fn level_sizes(leaves: usize) -> impl Iterator<Item = usize> {
    let mut size = leaves;
    std::iter::from_fn(move || {
        if size == 0 {
            return None;
        }
        let current = size;
        size = if current == 1 { 0 } else { current.div_ceil(2) };
        Some(current)
    })
}

/// Every node of a bucket's Merkle tree, level after level from its leaves (`merkle_leaf` of
/// each account leaf, in address order) up to its root, the last node.
fn bucket_nodes(leaves: Vec<Hash>) -> Vec<Hash> {
    let total: usize = level_sizes(leaves.len()).sum();
    let mut nodes = leaves;
    nodes.reserve_exact(total - nodes.len());
    let mut offset = 0;
    for size in level_sizes(nodes.len()) {
        if size == 1 {
            break;
        }
        for pair in (0..size).step_by(2) {
            let node = if pair + 1 < size {
                merkle_node(&nodes[offset + pair], &nodes[offset + pair + 1])
            } else {
                nodes[offset + pair]
            };
            nodes.push(node);
        }
        offset += size;
    }
    debug_assert_eq!(nodes.len(), total);
    nodes
}

/// The node writes that rewriting the leaves at `changed` (ascending, distinct positions with
/// their new values) makes in a bucket's nodes `kept` of `leaves` leaves, leaves included, and
/// the bucket's new root. Each level hashes only the parents of what changed below it, reading
/// unchanged siblings from `kept`.
fn bucket_rewrites(kept: &[Hash], leaves: usize, changed: &[(usize, Hash)]) -> (Vec<(u32, Hash)>, Hash) {
    let index_of = |index: usize| u32::try_from(index).expect("a bucket holds fewer than 2^31 accounts");
    let mut writes: Vec<(u32, Hash)> = Vec::with_capacity(changed.len() * 6);
    writes.extend(changed.iter().map(|(position, value)| (index_of(*position), *value)));
    let mut current: Vec<(usize, Hash)> = changed.to_vec();
    let mut offset = 0;
    for size in level_sizes(leaves) {
        if size == 1 {
            break;
        }
        let mut parents = Vec::with_capacity(current.len().div_ceil(2));
        let mut next = 0;
        while next < current.len() {
            let (position, value) = current[next];
            next += 1;
            let node = if position % 2 == 1 {
                // Its left sibling did not change: it would have taken this one along.
                merkle_node(&kept[offset + position - 1], &value)
            } else if position + 1 < size {
                let right = match current.get(next) {
                    Some((sibling, sibling_value)) if *sibling == position + 1 => {
                        next += 1;
                        *sibling_value
                    }
                    _ => kept[offset + position + 1],
                };
                merkle_node(&value, &right)
            } else {
                // The odd node at the end of the level is carried up.
                value
            };
            parents.push((position / 2, node));
            writes.push((index_of(offset + size + position / 2), node));
        }
        current = parents;
        offset += size;
    }
    let root = match current.as_slice() {
        [(_, root)] => *root,
        _ => kept.last().copied().unwrap_or_else(merkle_empty),
    };
    (writes, root)
}

/// A bucket's level-0 value from its nodes: the leaf of its root.
fn bucket_value_of_nodes(nodes: &[Hash]) -> Hash {
    merkle_leaf(&nodes.last().copied().unwrap_or_else(merkle_empty))
}

/// An account's leaf: Blake3 of `str("tinychain/account/v1") ‖ address ‖ u64 balance ‖ u64
/// nonce` in the codec's layout (a string is its u64 length, then its bytes), written directly.
pub fn account_leaf(address: &Address, account: &Account) -> Hash {
    let mut bytes = [0u8; 8 + ACCOUNT_LEAF_TAG.len() + 32 + 8 + 8];
    bytes[..8].copy_from_slice(&(ACCOUNT_LEAF_TAG.len() as u64).to_le_bytes());
    bytes[8..28].copy_from_slice(ACCOUNT_LEAF_TAG.as_bytes());
    bytes[28..60].copy_from_slice(&address.0);
    bytes[60..68].copy_from_slice(&account.balance.to_le_bytes());
    bytes[68..76].copy_from_slice(&account.nonce.to_le_bytes());
    hash_bytes(&bytes)
}

/// The value of an all-empty subtree at each level: `[0]` is the Merkle leaf of an empty
/// bucket's root, `[k + 1]` the node over two `[k]`s.
fn empty_levels() -> [Hash; ACCOUNT_BUCKET_BITS + 1] {
    let mut empty = [merkle_leaf(&merkle_empty()); ACCOUNT_BUCKET_BITS + 1];
    for level in 1..=ACCOUNT_BUCKET_BITS {
        empty[level] = merkle_node(&empty[level - 1], &empty[level - 1]);
    }
    empty
}

/// Hashes the paths above `changed` (level-0 values by bucket, ascending) to the root, reading
/// every sibling that did not change from `base(level, index)`, and hands each new node to
/// `write(level, index, value)`. Returns the root.
fn propagate(
    changed: Vec<(usize, Hash)>,
    base: impl Fn(usize, usize) -> Hash,
    write: impl FnMut(usize, usize, Hash),
) -> Hash {
    match propagate_levels(changed, ACCOUNT_BUCKET_BITS, &base, write).as_slice() {
        [(0, root)] => *root,
        _ => base(ACCOUNT_BUCKET_BITS, 0),
    }
}

/// `propagate` for the first `levels` levels only: returns the changed nodes at level
/// `levels`, (index, value) ascending.
fn propagate_levels(
    mut changed: Vec<(usize, Hash)>,
    levels: usize,
    base: impl Fn(usize, usize) -> Hash,
    mut write: impl FnMut(usize, usize, Hash),
) -> Vec<(usize, Hash)> {
    debug_assert!(changed.windows(2).all(|pair| pair[0].0 < pair[1].0), "ascending, distinct buckets");
    for (index, value) in &changed {
        write(0, *index, *value);
    }
    for level in 0..levels {
        let mut parents = Vec::with_capacity(changed.len().div_ceil(2));
        let mut position = 0;
        while position < changed.len() {
            let (index, value) = changed[position];
            let parent = index / 2;
            let (left, right) = if index % 2 == 0 {
                match changed.get(position + 1) {
                    Some((next, next_value)) if *next == index + 1 => {
                        position += 1;
                        (value, *next_value)
                    }
                    _ => (value, base(level, index + 1)),
                }
            } else {
                (base(level, index - 1), value)
            };
            position += 1;
            let node = merkle_node(&left, &right);
            write(level + 1, parent, node);
            parents.push((parent, node));
        }
        changed = parents;
    }
    changed
}

/// The level-0 values of the buckets of `accounts` with `overlay` written over them (the
/// overlay's accounts replace or add to the base's), in bucket order: each bucket `only` names
/// (ascending, empty ones included) when given, every non-empty bucket otherwise.
fn bucket_leaves(
    accounts: &BTreeMap<Address, Account>,
    overlay: &BTreeMap<Address, Account>,
    only: Option<&[usize]>,
) -> Vec<(usize, Hash)> {
    let mut leaves: Vec<Hash> = Vec::new();
    let mut out = Vec::new();
    let mut flush = |bucket: usize, leaves: &mut Vec<Hash>| {
        out.push((bucket, merkle_leaf(&merkle_root(leaves))));
        leaves.clear();
    };
    let mut merge = |base: &mut dyn Iterator<Item = (&Address, &Account)>,
                     over: &mut dyn Iterator<Item = (&Address, &Account)>,
                     flush: &mut dyn FnMut(usize, &mut Vec<Hash>),
                     fixed: Option<usize>| {
        let mut base = base.peekable();
        let mut over = over.peekable();
        let mut current: Option<usize> = fixed;
        loop {
            let next = match (base.peek(), over.peek()) {
                (None, None) => break,
                (Some(_), None) => base.next(),
                (None, Some(_)) => over.next(),
                (Some((base_address, _)), Some((over_address, _))) => match base_address.cmp(over_address) {
                    std::cmp::Ordering::Less => base.next(),
                    std::cmp::Ordering::Greater => over.next(),
                    std::cmp::Ordering::Equal => {
                        base.next();
                        over.next()
                    }
                },
            };
            let (address, account) = next.expect("peeked a value on at least one side");
            let bucket = bucket_of(address);
            debug_assert!(fixed.is_none_or(|fixed| fixed == bucket), "a bucket's range holds only its accounts");
            if current.is_some_and(|current| current != bucket) {
                flush(current.expect("checked"), &mut leaves);
            }
            current = Some(bucket);
            leaves.push(account_leaf(address, account));
        }
        if let Some(bucket) = current {
            flush(bucket, &mut leaves);
        }
    };
    match only {
        None => merge(&mut accounts.iter(), &mut overlay.iter(), &mut flush, None),
        Some(buckets) => {
            for bucket in buckets {
                let range = bucket_range(*bucket);
                merge(&mut accounts.range(range.clone()), &mut overlay.range(range), &mut flush, Some(*bucket));
            }
        }
    }
    out
}

/// The accounts root of `accounts` with `overlay` written over them, from scratch.
pub fn accounts_root(accounts: &BTreeMap<Address, Account>, overlay: &BTreeMap<Address, Account>) -> Hash {
    let empty = empty_levels();
    propagate(bucket_leaves(accounts, overlay, None), |level, _| empty[level], |_, _, _| {})
}

/// Every level of the bucket tree of one account table.
#[derive(Clone)]
pub struct AccountTree {
    /// `levels[0][b]` is the Merkle leaf of bucket `b`'s root; `levels[k + 1][i]` the node over
    /// `levels[k][2i]` and `levels[k][2i + 1]`; `levels[16][0]` the accounts root.
    levels: Vec<Vec<Hash>>,
    /// Per bucket, every node of its Merkle tree (`bucket_nodes`): the Merkle leaves
    /// (`merkle_leaf(account_leaf)`) of its accounts in address order, then each level above,
    /// so a block hashes only the accounts it writes and their paths.
    nodes: Vec<Vec<Hash>>,
}

impl AccountTree {
    pub fn build(accounts: &BTreeMap<Address, Account>) -> AccountTree {
        let empty = empty_levels();
        let levels: Vec<Vec<Hash>> =
            (0..=ACCOUNT_BUCKET_BITS).map(|level| vec![empty[level]; ACCOUNT_BUCKETS >> level]).collect();
        let mut tree = AccountTree { levels, nodes: vec![Vec::new(); ACCOUNT_BUCKETS] };
        for (address, account) in accounts {
            tree.nodes[bucket_of(address)].push(merkle_leaf(&account_leaf(address, account)));
        }
        let mut changed: Vec<(usize, Hash)> = Vec::new();
        for (bucket, nodes) in tree.nodes.iter_mut().enumerate() {
            if !nodes.is_empty() {
                *nodes = bucket_nodes(std::mem::take(nodes));
                changed.push((bucket, bucket_value_of_nodes(nodes)));
            }
        }
        let levels = &mut tree.levels;
        propagate(changed, |level, _| empty[level], |level, index, value| levels[level][index] = value);
        tree
    }

    pub fn root(&self) -> Hash {
        self.levels[ACCOUNT_BUCKET_BITS][0]
    }

    /// How `bucket`'s nodes change once `overlay` is written over `accounts` (the table this
    /// tree is of), and its new level-0 value: the paths of the accounts the overlay rewrites
    /// hashed again, or, if it adds an account to the bucket, every node hashed again from the
    /// kept leaves of the accounts it leaves alone and new ones for those it writes.
    fn bucket_change(
        &self,
        accounts: &BTreeMap<Address, Account>,
        overlay: &BTreeMap<Address, Account>,
        bucket: usize,
    ) -> (BucketChange, Hash) {
        let kept = &self.nodes[bucket];
        let range = bucket_range(bucket);
        // One search each (the range's start); the bucket ends where its prefix does.
        let mut base = accounts
            .range(range.start()..)
            .take_while(|(address, _)| bucket_of(address) == bucket)
            .map(|(address, _)| address)
            .enumerate()
            .peekable();
        let mut over = overlay.range(range).peekable();
        let written = |(address, account): (&Address, &Account)| merkle_leaf(&account_leaf(address, account));
        // Leaves rewritten in place, by position, until an account is found to be new.
        let mut rewritten: Vec<(usize, Hash)> = Vec::new();
        // Every leaf, once an account is new.
        let mut leaves: Option<Vec<Hash>> = None;
        let mut position = 0;
        loop {
            let order = match (base.peek(), over.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((_, base_address)), Some((over_address, _))) => base_address.cmp(over_address),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let (kept_position, _) = base.next().expect("peeked");
                    if let Some(leaves) = &mut leaves {
                        leaves.push(kept[kept_position]);
                    }
                }
                std::cmp::Ordering::Greater => {
                    let leaf = written(over.next().expect("peeked"));
                    let leaves = leaves.get_or_insert_with(|| {
                        // The leaves so far: kept, with the rewritten ones in place.
                        let mut leaves = kept[..position].to_vec();
                        for (rewritten_position, value) in &rewritten {
                            leaves[*rewritten_position] = *value;
                        }
                        leaves
                    });
                    leaves.push(leaf);
                }
                std::cmp::Ordering::Equal => {
                    let (kept_position, _) = base.next().expect("peeked");
                    let leaf = written(over.next().expect("peeked"));
                    match &mut leaves {
                        Some(leaves) => leaves.push(leaf),
                        None => rewritten.push((kept_position, leaf)),
                    }
                }
            }
            position += 1;
        }
        match leaves {
            Some(leaves) => {
                let nodes = bucket_nodes(leaves);
                let value = bucket_value_of_nodes(&nodes);
                (BucketChange::Rebuilt(nodes), value)
            }
            None => {
                // No account was added: `position` counted the kept leaves.
                let (writes, root) = bucket_rewrites(kept, position, &rewritten);
                (BucketChange::Rewritten(writes), merkle_leaf(&root))
            }
        }
    }

    /// The root `accounts` with `overlay` written over them would have, where `accounts` is the
    /// table this tree is of, and the changes that bring the tree there.
    pub fn root_with(
        &self,
        accounts: &BTreeMap<Address, Account>,
        overlay: &BTreeMap<Address, Account>,
    ) -> (Hash, TreePatch) {
        let mut patch =
            TreePatch { base_root: self.root(), root: self.root(), writes: Vec::new(), buckets: Vec::new() };
        if overlay.is_empty() {
            return (patch.root, patch);
        }
        let buckets = touched_buckets(overlay.keys());
        // Each half of the bucket tree (buckets below and above 32,768) up to its top node.
        let half = |buckets: &[usize]| {
            let mut changes = Vec::with_capacity(buckets.len());
            let mut values = Vec::with_capacity(buckets.len());
            for bucket in buckets {
                let (change, value) = self.bucket_change(accounts, overlay, *bucket);
                values.push((*bucket, value));
                changes.push((*bucket as u32, change));
            }
            let mut writes = Vec::with_capacity(values.len() * 3);
            let top = propagate_levels(
                values,
                ACCOUNT_BUCKET_BITS - 1,
                |level, index| self.levels[level][index],
                |level, index, value| writes.push((level as u8, index as u32, value)),
            );
            (changes, writes, top.first().map(|(_, value)| *value))
        };
        let (left, right) = buckets.split_at(buckets.partition_point(|bucket| *bucket < ACCOUNT_BUCKETS / 2));
        let ((mut changes, mut writes, left_top), (right_changes, right_writes, right_top)) =
            if buckets.len() >= ROOT_PARALLEL_BUCKETS_MIN {
                std::thread::scope(|scope| {
                    let right = scope.spawn(|| half(right));
                    let left = half(left);
                    (left, right.join().expect("hashing half of the bucket tree never panics"))
                })
            } else {
                (half(left), half(right))
            };
        changes.extend(right_changes);
        writes.extend(right_writes);
        let top_level = ACCOUNT_BUCKET_BITS - 1;
        let root = merkle_node(
            &left_top.unwrap_or(self.levels[top_level][0]),
            &right_top.unwrap_or(self.levels[top_level][1]),
        );
        writes.push((ACCOUNT_BUCKET_BITS as u8, 0, root));
        patch.buckets = changes;
        patch.writes = writes;
        patch.root = root;
        (root, patch)
    }

    /// Writes a patch `root_with` made from this very tree (`false`, and nothing written, if
    /// the tree has changed since).
    fn apply(&mut self, patch: &TreePatch) -> bool {
        if patch.base_root != self.root() {
            return false;
        }
        for (bucket, change) in &patch.buckets {
            let nodes = &mut self.nodes[*bucket as usize];
            match change {
                BucketChange::Rewritten(writes) => {
                    for (index, value) in writes {
                        nodes[*index as usize] = *value;
                    }
                }
                BucketChange::Rebuilt(rebuilt) => nodes.clone_from(rebuilt),
            }
        }
        for (level, index, value) in &patch.writes {
            self.levels[usize::from(*level)][*index as usize] = *value;
        }
        debug_assert_eq!(self.root(), patch.root);
        true
    }

    /// Brings the tree up to date after the accounts at `touched` changed in `accounts`
    /// (without a patch: each touched bucket's leaves are hashed again).
    pub fn update<'a>(&mut self, accounts: &BTreeMap<Address, Account>, touched: impl Iterator<Item = &'a Address>) {
        let buckets = touched_buckets(touched);
        let mut pending = Vec::with_capacity(buckets.len());
        for bucket in buckets {
            let leaves: Vec<Hash> = accounts
                .range(bucket_range(bucket))
                .map(|(address, account)| merkle_leaf(&account_leaf(address, account)))
                .collect();
            // An emptied bucket (an undo removing accounts) has the empty bucket's value.
            let nodes = bucket_nodes(leaves);
            pending.push((bucket, bucket_value_of_nodes(&nodes)));
            self.nodes[bucket] = nodes;
        }
        let levels = &mut self.levels;
        for (index, value) in &pending {
            levels[0][*index] = *value;
        }
        // Level by level, each changed node's parent is rehashed from the level below, which
        // is already up to date.
        for level in 0..ACCOUNT_BUCKET_BITS {
            let mut parents: Vec<usize> = pending.iter().map(|(index, _)| index / 2).collect();
            parents.dedup();
            pending = parents
                .into_iter()
                .map(|parent| {
                    let node = merkle_node(&levels[level][2 * parent], &levels[level][2 * parent + 1]);
                    levels[level + 1][parent] = node;
                    (parent, node)
                })
                .collect();
        }
    }
}

/// The tree nodes an overlay changes, from `AccountTree::root_with`: applying the same accounts
/// to the state then writes them instead of hashing the buckets again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreePatch {
    /// The root of the tree the patch was made from: it applies only to that tree.
    base_root: Hash,
    root: Hash,
    /// (level, index, value) of every node that changes.
    writes: Vec<(u8, u32, Hash)>,
    /// How the nodes of every bucket that changes change.
    buckets: Vec<(u32, BucketChange)>,
}

/// How a patch changes one bucket's nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BucketChange {
    /// Its accounts were rewritten in place: (index in its nodes, value) of each node that
    /// changes.
    Rewritten(Vec<(u32, Hash)>),
    /// It gained accounts: all its nodes.
    Rebuilt(Vec<Hash>),
}

/// The distinct buckets of some addresses, ascending.
fn touched_buckets<'a>(addresses: impl Iterator<Item = &'a Address>) -> Vec<usize> {
    let mut buckets: Vec<usize> = addresses.map(bucket_of).collect();
    buckets.sort_unstable();
    buckets.dedup();
    buckets
}

/// A state's account tree, when it has one: a cache that never takes part in a state's
/// equality, encoding or debug output. `Default` is none (a state then computes its root from
/// scratch, and deltas keep none, until `ensure` builds one).
#[derive(Clone, Default)]
pub struct AccountTreeCache(Option<Box<AccountTree>>);

impl AccountTreeCache {
    pub fn built(accounts: &BTreeMap<Address, Account>) -> AccountTreeCache {
        AccountTreeCache(Some(Box::new(AccountTree::build(accounts))))
    }

    /// Builds the tree if there is none.
    pub fn ensure(&mut self, accounts: &BTreeMap<Address, Account>) {
        if self.0.is_none() {
            *self = AccountTreeCache::built(accounts);
        }
    }

    /// The accounts root with `overlay` written over `accounts`, and the patch that brings the
    /// tree there (none without a tree).
    pub fn root_with(
        &self,
        accounts: &BTreeMap<Address, Account>,
        overlay: &BTreeMap<Address, Account>,
    ) -> (Hash, Option<TreePatch>) {
        match &self.0 {
            Some(tree) => {
                let (root, patch) = tree.root_with(accounts, overlay);
                (root, Some(patch))
            }
            None => (accounts_root(accounts, overlay), None),
        }
    }

    /// After the accounts at `touched` changed in `accounts`: updates the tree (by writing
    /// `patch` when it was made from this tree for these very changes). A state with no tree
    /// stays without one (storage's copy of the state never needs a root).
    pub fn update<'a>(
        &mut self,
        accounts: &BTreeMap<Address, Account>,
        touched: impl Iterator<Item = &'a Address>,
        patch: Option<&TreePatch>,
    ) {
        if let Some(tree) = &mut self.0 {
            if !patch.is_some_and(|patch| tree.apply(patch)) {
                tree.update(accounts, touched);
            }
            debug_assert_eq!(tree.root(), accounts_root(accounts, &BTreeMap::new()), "the kept tree is right");
        }
    }
}

impl PartialEq for AccountTreeCache {
    /// A cache: two states with the same accounts are equal whether or not either has one.
    fn eq(&self, _: &AccountTreeCache) -> bool {
        true
    }
}

impl Eq for AccountTreeCache {}

impl std::fmt::Debug for AccountTreeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "AccountTreeCache(built)" } else { "AccountTreeCache(none)" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use proptest::prelude::*;

    /// The accounts root as the spec reads, written as plainly as possible: all 65,536 bucket
    /// roots, then one Merkle root over them.
    fn spec_root(accounts: &BTreeMap<Address, Account>) -> Hash {
        let mut buckets: Vec<Vec<Hash>> = vec![Vec::new(); ACCOUNT_BUCKETS];
        for (address, account) in accounts {
            let leaf = hash_bytes(&codec::encode(&(ACCOUNT_LEAF_TAG, address, account.balance, account.nonce)));
            buckets[bucket_of(address)].push(leaf);
        }
        let roots: Vec<Hash> = buckets.iter().map(|leaves| merkle_root(leaves)).collect();
        merkle_root(&roots)
    }

    fn address(prefix: u8, rest: u8) -> Address {
        // Few distinct first bytes, so buckets hold several accounts and neighbours share paths.
        let mut bytes = [rest; 32];
        bytes[0] = prefix % 4;
        bytes[1] = prefix / 4 % 3;
        Address(bytes)
    }

    #[test]
    fn an_account_leaf_is_the_hash_of_its_documented_encoding() {
        let address = Address([7; 32]);
        let account = Account { balance: 1 << 40, nonce: 9 };
        let encoded = codec::encode(&(ACCOUNT_LEAF_TAG, &address, account.balance, account.nonce));
        assert_eq!(encoded.len(), 76);
        assert_eq!(account_leaf(&address, &account), hash_bytes(&encoded));
    }

    #[test]
    fn an_empty_table_and_a_single_account_have_the_spec_root() {
        let empty = BTreeMap::new();
        assert_eq!(accounts_root(&empty, &BTreeMap::new()), spec_root(&empty));
        assert_eq!(AccountTree::build(&empty).root(), spec_root(&empty));
        let one = BTreeMap::from([(Address([0xff; 32]), Account { balance: 5, nonce: 0 })]);
        assert_eq!(AccountTree::build(&one).root(), spec_root(&one));
        assert_ne!(spec_root(&one), spec_root(&empty));
    }

    /// A bucket's kept nodes end in the root `merkle_root_of_leaves` gives, for every leaf count
    /// up to 40, and rewriting any set of leaves in place gives the nodes built afresh.
    #[test]
    fn bucket_nodes_and_their_rewrites_match_the_merkle_root() {
        use crate::crypto::merkle_root_of_leaves;
        let leaf = |seed: usize| merkle_leaf(&hash_bytes(&seed.to_le_bytes()));
        for count in 0..40 {
            let leaves: Vec<Hash> = (0..count).map(leaf).collect();
            let nodes = bucket_nodes(leaves.clone());
            assert_eq!(nodes.len(), level_sizes(count).sum::<usize>());
            assert_eq!(bucket_value_of_nodes(&nodes), merkle_leaf(&merkle_root_of_leaves(leaves.clone())));
            for stride in 1..=count.min(7) {
                let changed: Vec<(usize, Hash)> =
                    (0..count).step_by(stride).map(|position| (position, leaf(1_000 + position))).collect();
                let (writes, root) = bucket_rewrites(&nodes, count, &changed);
                let mut rewritten = nodes.clone();
                for (index, value) in writes {
                    rewritten[index as usize] = value;
                }
                let mut expected = leaves.clone();
                for (position, value) in &changed {
                    expected[*position] = *value;
                }
                assert_eq!(rewritten, bucket_nodes(expected), "{count} leaves, every {stride}th rewritten");
                assert_eq!(Some(&root), rewritten.last());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// After any sequence of changes (new accounts, changed ones, removed ones as an undo
        /// does), the kept tree, the overlay root and a root from scratch all equal the spec's.
        #[test]
        fn the_kept_tree_always_gives_the_spec_root(
            start in proptest::collection::btree_map((any::<u8>(), any::<u8>()), (any::<u64>(), any::<u64>()), 0..40),
            changes in proptest::collection::vec(
                proptest::collection::vec(((any::<u8>(), any::<u8>()), proptest::option::weighted(0.8, (any::<u64>(), any::<u64>()))), 1..12),
                1..6,
            ),
        ) {
            let mut accounts: BTreeMap<Address, Account> = start
                .into_iter()
                .map(|((prefix, rest), (balance, nonce))| (address(prefix, rest), Account { balance, nonce }))
                .collect();
            let mut tree = AccountTree::build(&accounts);
            prop_assert_eq!(tree.root(), spec_root(&accounts));
            for change in changes {
                let change: BTreeMap<Address, Option<Account>> = change
                    .into_iter()
                    .map(|((prefix, rest), account)| {
                        (address(prefix, rest), account.map(|(balance, nonce)| Account { balance, nonce }))
                    })
                    .collect();
                let mut after = accounts.clone();
                for (address, account) in &change {
                    match account {
                        Some(account) => after.insert(*address, *account),
                        None => after.remove(address),
                    };
                }
                // A block's overlay only writes accounts (never removes them).
                if change.values().all(Option::is_some) {
                    let overlay: BTreeMap<Address, Account> =
                        change.iter().map(|(address, account)| (*address, account.expect("checked"))).collect();
                    prop_assert_eq!(tree.root_with(&accounts, &overlay).0, spec_root(&after));
                    let mut patched = tree.clone();
                    prop_assert!(patched.apply(&tree.root_with(&accounts, &overlay).1));
                    prop_assert_eq!(patched.root(), spec_root(&after));
                    prop_assert_eq!(accounts_root(&accounts, &overlay), spec_root(&after));
                    // A patch made from another tree is refused.
                    prop_assert!(overlay.is_empty() || !patched.clone().apply(&tree.root_with(&accounts, &overlay).1));
                    // Updating by hashing gives the same tree; go on with one or the other (so
                    // the leaves a patch keeps are read by later changes).
                    tree.update(&after, change.keys());
                    prop_assert_eq!(&tree.nodes, &patched.nodes);
                    if overlay.len().is_multiple_of(2) {
                        tree = patched;
                    }
                } else {
                    tree.update(&after, change.keys());
                }
                accounts = after;
                prop_assert_eq!(tree.root(), spec_root(&accounts));
                prop_assert_eq!(accounts_root(&accounts, &BTreeMap::new()), spec_root(&accounts));
            }
        }
    }
}
