//! The block tree and fork choice: every known block from the final one up, the branch each
//! belongs to, the finality its committed votes give it, which leaf is preferred, and pruning
//! (below the final block, and side branches past their bound). Nothing here validates a
//! block against the state or moves the canonical chain: `chain` does that with what this
//! module chooses.

use super::Node;
use crate::finality::FinalityState;
use crate::limits::SIDE_BLOCKS_MAX;
use crate::types::{Block, Checkpoint, Hash, Height};
use crate::validate::{check_report_alone, BlockError};
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub(super) struct TreeEntry {
    pub(super) block: Arc<Block>,
    pub(super) parent: Hash,
    pub(super) height: Height,
    pub(super) rank: u32,
    /// Finality after this block on its branch (computed from its committed votes).
    pub(super) finality: FinalityState,
}

impl Node {
    pub(super) fn knows_block(&self, checkpoint: &Checkpoint) -> bool {
        self.tree.contains_key(&checkpoint.hash)
            || self.canonical_hash(checkpoint.height) == Some(checkpoint.hash)
            || self.invalid.ids.contains(&checkpoint.hash)
            || checkpoint.height < self.finalized.height
    }
    /// Adds a shape-checked block whose parent is in the tree, computing the finality its
    /// committed votes give on its branch (so fork choice can compare branches before applying).
    pub(super) fn insert_into_tree(&mut self, hash: Hash, block: Arc<Block>) -> Result<(), BlockError> {
        let parent_hash = block.header.prev_hash;
        let parent = self.tree.get(&parent_hash).expect("callers insert only blocks whose parent is in the tree");
        if block.header.height != parent.height + 1 {
            return Err(BlockError::WrongHeight { expected: parent.height + 1, got: block.header.height });
        }
        let mut votes = Vec::new();
        for (index, report) in block.reports.iter().enumerate() {
            let validator = check_report_alone(&self.config.genesis, report, &self.cache)
                .map_err(|error| BlockError::InvalidReport { index, error })?;
            if let Some(vote) = report.vote {
                votes.push((validator, vote));
            }
        }
        let parent_height = parent.height;
        let is_on_chain = |checkpoint: &Checkpoint| {
            checkpoint.height <= parent_height
                && self.ancestor_hash(parent_hash, checkpoint.height) == Some(checkpoint.hash)
        };
        let (finality, _) = parent.finality.with_votes(&votes, self.config.genesis.quorum(), &is_on_chain);
        let entry =
            TreeEntry { parent: parent_hash, height: block.header.height, rank: block.header.rank, finality, block };
        self.tree.insert(hash, entry);
        self.children.entry(parent_hash).or_default().insert(hash);
        Ok(())
    }

    /// The hash at `height` on the branch ending at `from` (which must be in the tree).
    pub(super) fn ancestor_hash(&self, from: Hash, height: Height) -> Option<Hash> {
        let mut current = from;
        loop {
            if self.canonical.get(self.tree.get(&current)?.height as usize) == Some(&current) {
                let entry_height = self.tree.get(&current)?.height;
                return if height <= entry_height { self.canonical_hash(height) } else { None };
            }
            let entry = self.tree.get(&current)?;
            if entry.height == height {
                return Some(current);
            }
            if entry.height < height {
                return None;
            }
            current = entry.parent;
        }
    }

    /// Is branch tip `a` strictly preferred to branch tip `b`? Highest justified block, then the
    /// longest chain, then lower ranks compared block by block from the fork point, then the
    /// lower hash of the first differing block. Both contain the final block (the tree only
    /// holds its descendants).
    fn is_preferred(&self, a: Hash, b: Hash) -> bool {
        if a == b {
            return false;
        }
        let (entry_a, entry_b) = (&self.tree[&a], &self.tree[&b]);
        let (justified_a, justified_b) = (entry_a.finality.justified.height, entry_b.finality.justified.height);
        if justified_a != justified_b {
            return justified_a > justified_b;
        }
        if entry_a.height != entry_b.height {
            return entry_a.height > entry_b.height;
        }
        // Same height: walk both back to the fork point, remembering each side's blocks.
        let (mut path_a, mut path_b) = (vec![a], vec![b]);
        let (mut cursor_a, mut cursor_b) = (entry_a.parent, entry_b.parent);
        while cursor_a != cursor_b {
            path_a.push(cursor_a);
            path_b.push(cursor_b);
            cursor_a = self.tree[&cursor_a].parent;
            cursor_b = self.tree[&cursor_b].parent;
        }
        for (block_a, block_b) in path_a.iter().rev().zip(path_b.iter().rev()) {
            let (rank_a, rank_b) = (self.tree[block_a].rank, self.tree[block_b].rank);
            if rank_a != rank_b {
                return rank_a < rank_b;
            }
        }
        path_a.last() < path_b.last()
    }

    /// A block of the tree with no child in it.
    pub(super) fn is_leaf(&self, hash: &Hash) -> bool {
        self.children.get(hash).is_none_or(|children| children.is_empty())
    }

    pub(super) fn best_tip(&self) -> Hash {
        let leaves = self.tree.keys().filter(|hash| self.is_leaf(hash));
        leaves.fold(self.state.tip.hash, |best, &leaf| if self.is_preferred(leaf, best) { leaf } else { best })
    }
    /// Removes a block and all its descendants from the tree.
    pub(super) fn remove_subtree(&mut self, root: Hash) {
        let mut stack = vec![root];
        while let Some(hash) = stack.pop() {
            if let Some(entry) = self.tree.remove(&hash) {
                if let Some(siblings) = self.children.get_mut(&entry.parent) {
                    siblings.remove(&hash);
                }
            }
            if let Some(children) = self.children.remove(&hash) {
                stack.extend(children);
            }
        }
    }

    /// After finality advances: forget blocks that are below the final one or do not descend
    /// from it, and undo data that can no longer be used.
    pub(super) fn prune_below_final(&mut self) {
        let finalized = self.finalized;
        let keep: BTreeSet<Hash> = self
            .tree
            .iter()
            .filter(|(hash, entry)| {
                entry.height >= finalized.height && self.ancestor_hash(**hash, finalized.height) == Some(finalized.hash)
            })
            .map(|(hash, _)| *hash)
            .collect();
        self.tree.retain(|hash, _| keep.contains(hash));
        self.children.retain(|hash, _| keep.contains(hash));
        for children in self.children.values_mut() {
            children.retain(|child| keep.contains(child));
        }
        self.undo.retain(|height, _| *height > finalized.height);
        self.orphans.retain(|_, orphan| orphan.header.height > finalized.height);
    }

    /// Bounds side branches: past the limit, the lowest non-canonical leaves go first.
    pub(super) fn prune_side_blocks(&mut self) {
        let final_height = self.finalized.height as usize;
        while self.tree.len() > SIDE_BLOCKS_MAX + (self.canonical.len() - final_height) {
            let lowest_side_leaf = self
                .tree
                .iter()
                .filter(|(hash, entry)| self.canonical_hash(entry.height) != Some(**hash) && self.is_leaf(hash))
                .min_by_key(|(hash, entry)| (entry.height, **hash))
                .map(|(hash, _)| *hash);
            match lowest_side_leaf {
                Some(hash) => self.remove_subtree(hash),
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{hash_of, observer, Branch};
    use crate::testkit::{account_key, fast_genesis, sign_transfer};
    use crate::types::{Checkpoint, Hash};
    use crate::validate::BlockError;

    /// Inserts every block of `branch` into the node's tree (parents first).
    fn insert(node: &mut super::Node, branch: &Branch) {
        for block in &branch.blocks {
            node.insert_into_tree(hash_of(block), block.clone()).expect("a well-formed child of a tree block");
        }
    }

    #[test]
    fn a_lower_rank_beats_a_higher_rank_at_the_same_height() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let (mut rank_0, mut rank_1) = (Branch::from_genesis(&genesis), Branch::from_genesis(&genesis));
        let block_0 = hash_of(&rank_0.extend(&genesis, 0, Vec::new(), Vec::new()));
        let block_1 = hash_of(&rank_1.extend(&genesis, 1, Vec::new(), Vec::new()));
        insert(&mut node, &rank_1);
        insert(&mut node, &rank_0);
        assert!(node.is_preferred(block_0, block_1));
        assert!(!node.is_preferred(block_1, block_0));
        assert!(!node.is_preferred(block_0, block_0), "preference is strict");
        assert_eq!(node.best_tip(), block_0);
    }

    #[test]
    fn a_longer_branch_beats_lower_ranks_and_a_higher_justified_block_beats_a_longer_branch() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let (mut short, mut long) = (Branch::from_genesis(&genesis), Branch::from_genesis(&genesis));
        short.extend(&genesis, 0, Vec::new(), Vec::new());
        long.extend(&genesis, 1, Vec::new(), Vec::new());
        long.extend(&genesis, 1, Vec::new(), Vec::new());
        insert(&mut node, &short);
        insert(&mut node, &long);
        let (short_tip, long_tip) = (short.tip().hash, long.tip().hash);
        assert!(node.is_preferred(long_tip, short_tip), "height comes before ranks");
        assert_eq!(node.best_tip(), long_tip);
        // Justification comes before height: once the short branch's block is justified on its
        // branch, it wins against the longer one whose justified block is still genesis.
        node.tree.get_mut(&short_tip).expect("inserted").finality.justified = short.tip();
        assert!(node.is_preferred(short_tip, long_tip));
        assert!(!node.is_preferred(long_tip, short_tip));
        assert_eq!(node.best_tip(), short_tip);
    }

    #[test]
    fn equal_ranks_are_decided_by_the_lower_hash_of_the_first_differing_block() {
        let genesis = fast_genesis(4, 2);
        let mut node = observer(&genesis);
        // Two rank-0 blocks on genesis that differ only in their transfer's amount, each with a
        // child: the first pair of amounts whose tips' hashes are ordered the other way from the
        // fork blocks' hashes, so a comparison of tips would pick the wrong branch.
        let branch = |amount: u64| {
            let transfer = sign_transfer(&account_key(0), &genesis.chain_id, account_key(1).address(), amount, 0, 0);
            let mut branch = Branch::from_genesis(&genesis);
            branch.extend(&genesis, 0, vec![transfer], Vec::new());
            branch.extend(&genesis, 0, Vec::new(), Vec::new());
            branch
        };
        let first = branch(1);
        let branches: Vec<Branch> = (2..100)
            .map(branch)
            .find(|other| (first.hashes[1] < other.hashes[1]) != (first.tip().hash < other.tip().hash))
            .map(|other| vec![first.clone(), other])
            .expect("about half of all pairs are ordered the other way");
        for branch in &branches {
            insert(&mut node, branch);
        }
        let forks: Vec<Hash> = branches.iter().map(|branch| branch.hashes[1]).collect();
        let tips: Vec<Hash> = branches.iter().map(|branch| branch.tip().hash).collect();
        assert_ne!(forks[0], forks[1]);
        let first_wins = forks[0] < forks[1];
        // The fixture orders the tips' hashes the other way, so a comparison of tips would fail.
        assert_ne!(first_wins, tips[0] < tips[1]);
        assert_eq!(node.is_preferred(tips[0], tips[1]), first_wins, "the fork blocks' hashes decide, not the tips'");
        assert_eq!(node.is_preferred(tips[1], tips[0]), !first_wins);
        assert_eq!(node.best_tip(), if first_wins { tips[0] } else { tips[1] });
    }

    #[test]
    fn a_leaf_has_no_child_in_the_tree_and_removing_a_subtree_restores_its_parent_as_a_leaf() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let genesis_hash = node.genesis_hash();
        assert!(node.is_leaf(&genesis_hash), "genesis alone is a leaf");
        let mut branch = Branch::from_genesis(&genesis);
        branch.extend_empty(&genesis, 2);
        insert(&mut node, &branch);
        let (child, grandchild) = (branch.hashes[1], branch.hashes[2]);
        assert!(!node.is_leaf(&genesis_hash));
        assert!(!node.is_leaf(&child));
        assert!(node.is_leaf(&grandchild));
        node.remove_subtree(child);
        assert!(!node.tree.contains_key(&child));
        assert!(!node.tree.contains_key(&grandchild), "descendants go with their ancestor");
        assert!(!node.children.contains_key(&child));
        assert!(node.is_leaf(&genesis_hash), "the parent forgets its removed child");
        assert_eq!(node.tree.len(), 1);
    }

    #[test]
    fn ancestor_hash_walks_a_side_branch_down_to_the_canonical_chain() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let mut side = Branch::from_genesis(&genesis);
        side.extend_empty(&genesis, 3);
        insert(&mut node, &side);
        let tip = side.tip().hash;
        for height in 0..=3 {
            assert_eq!(node.ancestor_hash(tip, height), Some(side.hashes[height as usize]), "height {height}");
        }
        assert_eq!(node.ancestor_hash(tip, 4), None, "nothing above the branch tip");
        assert_eq!(node.ancestor_hash(Hash([7; 32]), 0), None, "a hash not in the tree has no ancestors");
    }

    #[test]
    fn a_block_whose_height_does_not_follow_its_parent_is_refused() {
        let genesis = fast_genesis(4, 0);
        let mut node = observer(&genesis);
        let mut branch = Branch::from_genesis(&genesis);
        let mut block = (*branch.extend(&genesis, 0, Vec::new(), Vec::new())).clone();
        block.header.height = 5;
        let hash = hash_of(&block);
        assert_eq!(
            node.insert_into_tree(hash, std::sync::Arc::new(block)),
            Err(BlockError::WrongHeight { expected: 1, got: 5 })
        );
        assert!(!node.tree.contains_key(&hash));
        assert!(node.knows_block(&Checkpoint { height: 0, hash: node.genesis_hash() }));
        assert!(!node.knows_block(&Checkpoint { height: 1, hash }));
    }
}
