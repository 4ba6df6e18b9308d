//! The one driver (`tinychain_core::driver`), tested on its own: journal entries classified
//! against the restored chain, the store written before any outward effect, consecutive commits
//! merged, a full journal refusing before the core sees a transfer, and a restart resubmitting
//! the journal.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use tinychain_core::driver::{classify_journal_entry, CommittedTransfers, JournalEntryFate};
use tinychain_core::mempool::DropReason;
use tinychain_core::testkit::{account_key, sign_transfer};
use tinychain_core::types::{Address, Hash, Height, Transfer};
use tinychain_core::validate::transfer_id;

/// The canonical chain as `classify_journal_entry` sees it: transfer id -> height, and
/// (sender, nonce) -> (id, height).
#[derive(Clone, Default)]
struct FakeChain {
    heights: BTreeMap<Hash, Height>,
    slots: BTreeMap<(Address, u64), (Hash, Height)>,
}

impl FakeChain {
    fn commit(&mut self, transfer: &Transfer, height: Height) {
        let id = transfer_id(transfer);
        self.heights.insert(id, height);
        self.slots.insert((transfer.from, transfer.nonce), (id, height));
    }
}

impl CommittedTransfers for FakeChain {
    type Error = Infallible;

    fn committed_height(&mut self, id: &Hash, _transfer: &Transfer) -> Result<Option<Height>, Infallible> {
        Ok(self.heights.get(id).copied())
    }
    fn committed_at(&mut self, from: &Address, nonce: u64) -> Result<Option<(Hash, Height)>, Infallible> {
        Ok(self.slots.get(&(*from, nonce)).copied())
    }
}

#[test]
fn journal_entries_are_classified_against_the_restored_chain() {
    let alice = account_key(0);
    let bob = account_key(1).address();
    let transfer = |nonce: u64, amount: u64| sign_transfer(&alice, "tinychain-test", bob, amount, 10, nonce);
    // Alice's nonces 0 and 1 are committed: 0 by the journal's own transfer, 1 by another.
    let mut chain = FakeChain::default();
    chain.commit(&transfer(0, 5), 3);
    let winner = transfer(1, 99);
    chain.commit(&winner, 4);
    // A chain whose nonce table misses a nonce the account has used (a transfer this node
    // never saw, as far as the lookup can tell).
    let mut gapped = FakeChain::default();
    gapped.commit(&transfer(0, 5), 3);
    let empty = FakeChain::default();

    let cases: Vec<(&str, Transfer, u64, &FakeChain, JournalEntryFate)> = vec![
        ("its own transfer used the nonce", transfer(0, 5), 2, &chain, JournalEntryFate::Committed { height: 3 }),
        (
            "another transfer took the nonce",
            transfer(1, 7),
            2,
            &chain,
            JournalEntryFate::Dropped(DropReason::NonceTaken { by: transfer_id(&winner), height: 4 }),
        ),
        (
            "the nonce is used, the winner not found",
            transfer(1, 7),
            2,
            &gapped,
            JournalEntryFate::Dropped(DropReason::NonceUsed),
        ),
        ("the next nonce is open", transfer(2, 7), 2, &chain, JournalEntryFate::Open),
        ("a later nonce is open too", transfer(5, 7), 2, &chain, JournalEntryFate::Open),
        ("nothing committed yet", transfer(0, 5), 0, &empty, JournalEntryFate::Open),
    ];
    for (desc, transfer, committed_nonce, chain, expected) in cases {
        let fate =
            classify_journal_entry(&transfer_id(&transfer), &transfer, committed_nonce, &mut chain.clone()).unwrap();
        assert_eq!(fate, expected, "{desc}");
    }
}

mod driver_behaviour {
    use std::sync::Arc;
    use tinychain_core::crypto::SignatureCache;
    use tinychain_core::driver::{Driver, Output, SubmitRefusal};
    use tinychain_core::limits::SIGNATURE_CACHE_ENTRIES_MAX;
    use tinychain_core::message::Message;
    use tinychain_core::node::Event;
    use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, validator_node, LocalNet, ModelStorage};

    fn cache() -> Arc<SignatureCache> {
        Arc::new(SignatureCache::new(SIGNATURE_CACHE_ENTRIES_MAX))
    }

    /// A node fed a batch of synced blocks commits them as one write, and hands back no
    /// outward effect before that write.
    #[test]
    fn synced_blocks_are_one_commit_written_before_any_output() {
        let genesis = fast_genesis(4, 2);
        let mut net = LocalNet::new(genesis.clone(), 10);
        net.run_until(3_000);
        let tip = net.drivers[0].node.tip().height;
        assert!(tip >= 8, "the network made blocks: {tip}");
        let blocks = net.drivers[0].store.blocks_to_serve(1, tip);
        let from = net.drivers[0].node.node_id();

        let mut driver = Driver::new(validator_node(&genesis, 3, &cache()), ModelStorage::new(&genesis));
        let _ = driver.step(3_000, Event::PeerConnected { peer: from });
        let _ = driver.take_outputs();
        let Ok(_) = driver.step(3_000, Event::MessageReceived { from, message: Message::Blocks(blocks.clone()) });
        let outputs = driver.take_outputs();
        let commits: Vec<usize> = outputs
            .iter()
            .enumerate()
            .filter(|(_, output)| matches!(output, Output::Committed(_)))
            .map(|(index, _)| index)
            .collect();
        assert_eq!(commits.len(), 1, "one merged commit: {outputs:?}");
        let Output::Committed(commit) = &outputs[commits[0]] else { unreachable!() };
        assert_eq!(commit.ops.len(), blocks.len(), "every synced block in it");
        assert_eq!(driver.store.state.tip, driver.node.tip(), "the store holds what the core holds");
        let first_outward = outputs.iter().position(|output| {
            matches!(output, Output::Send { .. } | Output::Broadcast { .. } | Output::Disconnect { .. })
        });
        if let Some(first_outward) = first_outward {
            assert!(commits[0] < first_outward, "the commit comes before anything sent: {outputs:?}");
        }
    }

    /// A full journal refuses a submit before the core sees it; an accepted one is journaled by
    /// `finish_submits`, and a restart resubmits it.
    #[test]
    fn the_journal_bounds_submits_and_a_restart_resubmits_it() {
        let genesis = fast_genesis(4, 2);
        let mut store = ModelStorage::new(&genesis);
        store.journal_capacity = 1;
        let mut driver = Driver::new(validator_node(&genesis, 0, &cache()), store);
        let Ok(_) = driver.start(0);
        let alice = account_key(0);
        let bob = account_key(1).address();
        let first = sign_transfer(&alice, &genesis.chain_id, bob, 5, 1, 0);
        let second = sign_transfer(&alice, &genesis.chain_id, bob, 5, 1, 1);

        let Ok(verdict) = driver.submit(10, first.clone());
        let id = verdict.expect("accepted");
        assert_eq!(driver.store.journal.len(), 0, "not journaled before finish_submits");
        let Ok(unkept) = driver.finish_submits();
        assert!(unkept.is_empty());
        assert_eq!(driver.store.journal.len(), 1);

        let Ok(verdict) = driver.submit(20, second.clone());
        assert_eq!(verdict, Err(SubmitRefusal::JournalFull { held: 1, max: 1 }));
        let second_id = tinychain_core::validate::transfer_id(&second);
        assert!(!driver.node.mempool().contains(&second_id), "the core never saw it");

        // A crash: the memory goes, the store stays; the restart resubmits the journal.
        driver.node = validator_node(&genesis, 0, &cache());
        assert!(!driver.node.mempool().contains(&id));
        let Ok(settled) = driver.start(30);
        assert_eq!(settled.resubmitted, 1, "{settled:?}");
        assert!(driver.node.mempool().contains(&id), "pending again after the restart");
    }
}
