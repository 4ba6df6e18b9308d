//! The simulated users: seeded transfers between funded accounts at a given rate, signed for
//! real, plus about one in twenty deliberately invalid (a forged signature, an overdraft, a zero
//! amount, or a replay of an already committed transfer) that must never commit (once).

use crate::rng::SimRng;
use std::collections::{BTreeMap, BTreeSet};
use tinychain_core::crypto::Keypair;
use tinychain_core::node::Node;
use tinychain_core::testkit::{account_key, sign_transfer};
use tinychain_core::types::{Hash, Transfer, UNITS_PER_COIN};
use tinychain_core::validate::transfer_id;

/// Funded accounts in the simulated genesis (1,000 TC each).
pub fn account_count(nodes: usize) -> usize {
    (nodes * 2).clamp(8, 64)
}

pub struct Workload {
    accounts: Vec<Keypair>,
    /// Transfers that must never be committed.
    pub invalid_ids: BTreeSet<Hash>,
    /// Valid submissions and when they were submitted, for latency figures.
    pub submitted_at_ms: BTreeMap<Hash, u64>,
    /// Committed transfers seen so far (candidates for replay).
    committed: Vec<Transfer>,
    pub invalid_submitted: u64,
}

impl Workload {
    pub fn new(nodes: usize) -> Workload {
        Workload {
            accounts: (0..account_count(nodes)).map(account_key).collect(),
            invalid_ids: BTreeSet::new(),
            submitted_at_ms: BTreeMap::new(),
            committed: Vec::new(),
            invalid_submitted: 0,
        }
    }

    pub fn note_committed(&mut self, transfer: &Transfer) {
        if self.committed.len() < 1_000 {
            self.committed.push(transfer.clone());
        }
    }

    /// The next transfer to submit to `node` (whose view of nonces a wallet would use).
    pub fn next(&mut self, rng: &mut SimRng, node: &Node, now_ms: u64) -> Transfer {
        let chain_id = node.genesis().chain_id.clone();
        let sender = &self.accounts[rng.below(self.accounts.len() as u64) as usize];
        let recipient = self.accounts[rng.below(self.accounts.len() as u64) as usize].address();
        let account = node.state().account(&sender.address());
        let nonce = node.mempool().pending_nonce(&sender.address(), &account);
        let amount = rng.range(1, UNITS_PER_COIN);
        let fee = rng.range(0, 2_000);
        if rng.chance(50_000) {
            self.invalid_submitted += 1;
            let invalid = match rng.below(4) {
                0 => {
                    let mut forged = sign_transfer(sender, &chain_id, recipient, amount, fee, nonce);
                    forged.signature.0[0] ^= 1;
                    forged
                }
                1 => sign_transfer(sender, &chain_id, recipient, u64::MAX / 4, fee, nonce),
                2 => sign_transfer(sender, &chain_id, recipient, 0, fee, nonce),
                _ => match self.committed.get(rng.below(self.committed.len().max(1) as u64) as usize) {
                    // A replay is the very same transfer: checked as "never committed twice".
                    Some(replay) => return replay.clone(),
                    None => sign_transfer(sender, &chain_id, recipient, 0, fee, nonce),
                },
            };
            self.invalid_ids.insert(transfer_id(&invalid));
            return invalid;
        }
        let transfer = sign_transfer(sender, &chain_id, recipient, amount, fee, nonce);
        self.submitted_at_ms.entry(transfer_id(&transfer)).or_insert(now_ms);
        transfer
    }
}
