//! Restart from storage: the state, canonical chain, final block, recent blocks with their undo
//! and the last vote that `Event::Restored` carries become the node's tree and chain; what lived
//! only in memory (pools of reports and orphans, readiness) starts over.

use super::{Node, Restored, TreeEntry};
use crate::finality::FinalityState;
use crate::types::Checkpoint;
use crate::validate::block_hash;

impl Node {
    pub(super) fn on_restored(&mut self, restored: Restored) {
        let Restored { state, canonical_hashes, final_block, recent_blocks, last_vote, report_sequence } = restored;
        // A start is a node's first event: links announced from here on describe this run
        // (a test network that links its nodes before starting them must not make a start
        // depend on that; see `relay`, "Links").
        self.links_announce_at_ms = None;
        assert_eq!(canonical_hashes.first(), Some(&self.genesis_hash), "storage belongs to this genesis");
        assert_eq!(canonical_hashes.len() as u64, state.tip.height + 1, "one canonical hash per height");
        let finalized = Checkpoint { height: final_block.header.height, hash: block_hash(&final_block.header) };
        assert_eq!(
            canonical_hashes.get(finalized.height as usize),
            Some(&finalized.hash),
            "the restored final block is on the restored chain"
        );
        assert!(finalized.height >= state.finality.finalized.height, "storage keeps the node's latest final block");
        // Finality after each recent block: the next block's undo holds it; the tip's is the state's.
        let mut finality_after: Vec<FinalityState> =
            recent_blocks.iter().skip(1).map(|(_, undo)| undo.finality.clone()).collect();
        finality_after.push(state.finality.clone());
        let final_finality =
            recent_blocks.first().map_or_else(|| state.finality.clone(), |(_, undo)| undo.finality.clone());
        self.tree.clear();
        self.children.clear();
        self.undo.clear();
        self.tree.insert(
            finalized.hash,
            TreeEntry {
                parent: final_block.header.prev_hash,
                height: finalized.height,
                rank: final_block.header.rank,
                finality: final_finality,
                block: final_block,
            },
        );
        for ((block, undo), finality) in recent_blocks.into_iter().zip(finality_after) {
            let hash = block_hash(&block.header);
            let height = block.header.height;
            self.children.entry(block.header.prev_hash).or_default().insert(hash);
            self.tree.insert(
                hash,
                TreeEntry { parent: block.header.prev_hash, height, rank: block.header.rank, finality, block },
            );
            self.undo.insert(height, undo);
        }
        self.state = state;
        self.state.account_tree.ensure(&self.state.accounts);
        self.canonical = canonical_hashes;
        self.finalized = finalized;
        self.last_vote = last_vote;
        self.report_sequence = report_sequence;
        self.produced_on_parent = None;
        self.reported_tip = None;
        self.report_pool.clear();
        self.orphans.clear();
        self.mempool_synced = false;
        self.pool_admitted = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::cache;
    use crate::node::Event;
    use crate::testkit::{account_key, fast_genesis, validator_node, LocalNet, ModelStorage};

    #[test]
    fn a_node_restored_from_its_storage_has_the_chain_it_had_and_does_not_vote_again() {
        let genesis = fast_genesis(4, 2);
        let mut net = LocalNet::new(genesis.clone(), 10);
        net.run_until(3_000);
        let (live, storage) = (&net.drivers[0].node, &net.drivers[0].store);
        assert!(live.finalized().height > 0, "the run finalized blocks, so there are undo deltas to restore");
        assert!(storage.last_vote.is_some(), "the node voted, so there is a vote not to repeat");

        let mut restored = validator_node(&genesis, 0, &cache());
        let _ = restored.step(net.now_ms, Event::Restored(Box::new(storage.restored())));
        assert_eq!(restored.tip(), live.tip());
        assert_eq!(restored.finalized(), live.finalized());
        assert_eq!(restored.finality(), live.finality());
        for height in 0..=live.tip().height {
            assert_eq!(restored.canonical_hash(height), live.canonical_hash(height), "height {height}");
        }
        let (final_height, tip_height) = (live.finalized().height, live.tip().height);
        assert_eq!(restored.tree.len() as u64, tip_height - final_height + 1, "the final block and those above it");
        assert_eq!(restored.side_blocks(), 0);
        assert_eq!(
            restored.undo.keys().copied().collect::<Vec<_>>(),
            (final_height + 1..=tip_height).collect::<Vec<_>>()
        );
        for index in 0..2 {
            let address = account_key(index).address();
            assert_eq!(restored.account_at_final(&address), live.account_at_final(&address));
        }
        // Its first report after the restart continues the stored sequence and repeats no vote.
        assert_eq!(restored.report_sequence(), storage.report_sequence + 1);
        assert_eq!(restored.last_vote(), storage.last_vote);
        assert!(!restored.is_mempool_synced(), "the pool is exchanged again after a restart");
    }

    #[test]
    #[should_panic(expected = "storage belongs to this genesis")]
    fn storage_of_another_genesis_is_refused() {
        let mut node = validator_node(&fast_genesis(4, 2), 0, &cache());
        let foreign = ModelStorage::new(&fast_genesis(4, 3));
        let _ = node.step(0, Event::Restored(Box::new(foreign.restored())));
    }
}
