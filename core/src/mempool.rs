//! The mempool: transfers waiting for a block.
//!
//! It owns the account-dependent policy for pending transfers: admission (fee floor, nonce order,
//! affordability, per-sender and total limits), replacement by a higher fee, eviction when full,
//! revalidation after the tip moves, fee-ordered listing and estimation, and block assembly. The
//! caller has already checked each transfer's signature, chain id and `amount > 0`, and passes the
//! sender's committed account at the current tip.
//!
//! Architecture Invariant: every decision iterates `BTreeMap`s and `BTreeSet`s, never a hash
//! map, so two nodes holding the same transfers assemble the same block whatever the arrival
//! order.
//!
//! Architecture Invariant: the mempool's own actions never leave a gap in a sender's nonces.
//! Eviction only takes a sender's last pending transfer, and dropping an unaffordable transfer
//! drops every later one of that sender too. A gap can still appear when the committed nonce
//! moves backwards on a reorg; block assembly skips such a sender until the gap is filled.

use crate::codec::transfer_encoded_len;
use crate::limits::{MEMPOOL_TXS_MAX, MEMPOOL_TXS_PER_SENDER_MAX};
use crate::types::{Account, Address, Amount, Hash, Height, Transfer};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Unbounded};

/// Local policy: two nodes may differ here without disagreeing about the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolConfig {
    pub txs_max: usize,
    pub per_sender_max: usize,
    pub min_fee: Amount,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig { txs_max: MEMPOOL_TXS_MAX, per_sender_max: MEMPOOL_TXS_PER_SENDER_MAX, min_fee: 0 }
    }
}

/// Why a transfer was not admitted. Amounts are in base units.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error("transfer {id} is already pending")]
    AlreadyKnown { id: Hash },
    #[error("nonce {got} was already used: this account's next nonce is {expected}")]
    NonceTooLow { expected: u64, got: u64 },
    #[error("nonce {got} would leave a gap: this account's next nonce is {expected}")]
    NonceGap { expected: u64, got: u64 },
    #[error("fee {got} is below this node's minimum fee of {minimum}")]
    FeeBelowMinimum { minimum: Amount, got: Amount },
    #[error("a transfer with this nonce is already pending with fee {pending_fee}; a replacement must pay more than that, got {got}")]
    ReplacementFeeTooLow { pending_fee: Amount, got: Amount },
    #[error("balance {balance} cannot cover {needed}: this transfer's amount and fee plus those of this account's pending transfers with lower nonces")]
    InsufficientBalance { balance: Amount, needed: Amount },
    #[error("amount plus fee, with this account's pending transfers, exceeds the largest possible amount")]
    AmountOverflow,
    #[error("this account already has {pending} pending transfers, the most one account may queue; wait for some to be included")]
    SenderQueueFull { pending: usize },
    #[error("the mempool is full: a transfer needs a fee above {lowest_fee} to enter")]
    PoolFull { lowest_fee: Amount },
}

impl MempoolError {
    /// A stable, machine-readable name for why the mempool refused the transfer (the
    /// `node::TxRejection` table lists them all). Clients match on it; the `Display` text is for
    /// people and may change.
    pub fn code(&self) -> &'static str {
        match self {
            MempoolError::AlreadyKnown { .. } => "duplicate",
            MempoolError::NonceTooLow { .. } => "nonce_used",
            MempoolError::NonceGap { .. } => "nonce_gap",
            MempoolError::FeeBelowMinimum { .. } => "fee_too_low",
            MempoolError::ReplacementFeeTooLow { .. } => "replacement_fee_too_low",
            MempoolError::InsufficientBalance { .. } => "insufficient_balance_with_pending",
            MempoolError::AmountOverflow => "pending_amount_overflow",
            MempoolError::SenderQueueFull { .. } => "sender_queue_full",
            MempoolError::PoolFull { .. } => "mempool_full",
        }
    }
}

/// What a successful insert displaced, in removal order: the replaced transfer (same sender and
/// nonce), later ones of that sender it left unaffordable, and another sender's last transfer
/// evicted to make room.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inserted {
    pub removed: Vec<Removed>,
}

/// A pending transfer the mempool let go of without it being included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub id: Hash,
    pub transfer: Transfer,
    pub reason: RemovalReason,
}

/// Why the mempool let go of a pending transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    /// A transfer with the same sender and nonce and a higher fee took its place.
    Replaced { by: Hash },
    /// Its sender's balance no longer covers it after the earlier transfers of that sender.
    Unaffordable,
    /// The pool was full and it was the lowest-fee last transfer of a sender.
    Evicted { by: Hash },
    /// Its sender's committed nonce moved past it: it was included, or another transfer took
    /// its nonce (the caller tells the two apart from the blocks it applied).
    NonceUsed,
}

/// A transfer this node held as pending and let go of without it being included: what `get_tx`
/// answers as `dropped`, so a client that was told "accepted" learns why it will never commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DroppedTransfer {
    pub id: Hash,
    pub transfer: Transfer,
    pub reason: DropReason,
    /// The node's tip height when it dropped the transfer.
    pub tip_height: Height,
}

/// Why a pending transfer will never be included (as this node saw it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DropReason {
    /// A committed block used the same sender and nonce for another transfer, `by`, at `height`.
    NonceTaken { by: Hash, height: Height },
    /// The sender's committed nonce moved past it, but not through a block this node applied
    /// while holding it (so it cannot name the transfer that took the nonce).
    NonceUsed,
    /// A transfer with the same sender and nonce paying a higher fee replaced it.
    Replaced { by: Hash },
    /// The sender's balance no longer covers it after the sender's earlier transfers.
    Unaffordable,
    /// The mempool was full and it paid the lowest fee; `by` took its room.
    Evicted { by: Hash },
    /// The node resubmitted it from its journal after a restart and the mempool refused it.
    RefusedAfterRestart { reason: String },
    /// It was committed in a block that a reorganisation abandoned, and the mempool refused to
    /// take it back (the reason); the new branch does not hold it.
    NotReadmitted { reason: String },
}

impl DropReason {
    /// The reason's name in JSON answers and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DropReason::NonceTaken { .. } => "nonce_taken",
            DropReason::NonceUsed => "nonce_used",
            DropReason::Replaced { .. } => "replaced",
            DropReason::Unaffordable => "unaffordable",
            DropReason::Evicted { .. } => "evicted",
            DropReason::RefusedAfterRestart { .. } => "refused_after_restart",
            DropReason::NotReadmitted { .. } => "not_readmitted",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::NonceTaken { by, height } => {
                write!(f, "its nonce was taken by transfer {by}, committed at height {height}")
            }
            DropReason::NonceUsed => write!(f, "its nonce was used by another committed transfer"),
            DropReason::Replaced { by } => {
                write!(f, "replaced by transfer {by}, which has the same sender and nonce and a higher fee")
            }
            DropReason::Unaffordable => {
                write!(f, "the sender's balance no longer covers it after the sender's earlier transfers")
            }
            DropReason::Evicted { by } => {
                write!(f, "the mempool was full and transfer {by} paid a higher fee for its room")
            }
            DropReason::RefusedAfterRestart { reason } => {
                write!(f, "refused when the node resubmitted it after a restart: {reason}")
            }
            DropReason::NotReadmitted { reason } => {
                write!(f, "its block was abandoned in a reorganisation and the mempool refused it back: {reason}")
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    transfer: Transfer,
    id: Hash,
    size_bytes: usize,
}

/// The changes an admitted transfer causes, decided before anything is mutated.
struct InsertPlan {
    is_replacement: bool,
    later_nonces_dropped: Vec<u64>,
    evicted_sender: Option<Address>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mempool {
    config: MempoolConfig,
    /// Each sender's pending transfers by nonce. No queue is ever empty.
    by_sender: BTreeMap<Address, BTreeMap<u64, Entry>>,
    /// Where each pending transfer sits in `by_sender`.
    by_id: BTreeMap<Hash, (Address, u64)>,
    /// Every pending transfer: highest fee first, ties by lower id.
    by_fee: BTreeSet<(Reverse<Amount>, Hash)>,
    /// Each sender's last (highest-nonce) transfer, the only ones eviction may take: lowest fee
    /// first, ties by higher id.
    eviction_order: BTreeSet<(Amount, Reverse<Hash>, Address)>,
}

impl Mempool {
    pub fn new(config: MempoolConfig) -> Self {
        assert!(config.txs_max > 0, "txs_max must be at least 1");
        assert!(config.per_sender_max > 0, "per_sender_max must be at least 1");
        Mempool {
            config,
            by_sender: BTreeMap::new(),
            by_id: BTreeMap::new(),
            by_fee: BTreeSet::new(),
            eviction_order: BTreeSet::new(),
        }
    }

    /// Admits `transfer` (whose id is `id`) given its sender's committed account, or explains why
    /// not. A rejected insert changes nothing. Transfers below the committed nonce that
    /// `revalidate_senders` has not dropped yet are ignored, but still count toward the sender's
    /// limit.
    pub fn insert(&mut self, transfer: Transfer, id: Hash, sender: &Account) -> Result<Inserted, MempoolError> {
        let plan = self.plan_insert(&transfer, &id, sender)?;
        Ok(self.apply_insert(transfer, id, plan))
    }

    pub fn contains(&self, id: &Hash) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn get(&self, id: &Hash) -> Option<&Transfer> {
        self.entry(id).map(|entry| &entry.transfer)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The nonce a new transfer from `address` should carry: committed nonce + number of
    /// consecutive pending ones.
    pub fn pending_nonce(&self, address: &Address, committed: &Account) -> u64 {
        let mut next_nonce = committed.nonce;
        if let Some(queue) = self.by_sender.get(address) {
            for nonce in queue.range(committed.nonce..).map(|(nonce, _)| *nonce) {
                if nonce != next_nonce {
                    break;
                }
                // A pending nonce of u64::MAX cannot be followed; saturating keeps this total.
                next_nonce = next_nonce.saturating_add(1);
            }
        }
        next_nonce
    }

    /// After the tip changes: for each given sender, drops transfers with a nonce below the
    /// committed nonce, then the first one no longer affordable in nonce order from the
    /// committed balance and every later one of that sender (a gap makes them unusable).
    /// Returns what it removed by sender address, then nonce: below the committed nonce as
    /// `NonceUsed` (included, or taken by another transfer), the rest as `Unaffordable`.
    pub fn revalidate_senders(
        &mut self,
        senders: &BTreeSet<Address>,
        account_of: impl Fn(&Address) -> Account,
    ) -> Vec<Removed> {
        let mut removed = Vec::new();
        for sender in senders {
            let Some(queue) = self.by_sender.get(sender) else {
                continue;
            };
            let account = account_of(sender);
            let used_nonces: Vec<u64> = queue.range(..account.nonce).map(|(nonce, _)| *nonce).collect();
            let unaffordable_nonces = unaffordable_from(queue.range(account.nonce..), 0, account.balance);
            if used_nonces.is_empty() && unaffordable_nonces.is_empty() {
                continue;
            }
            self.unindex_tail(sender);
            let doomed = used_nonces
                .into_iter()
                .map(|nonce| (nonce, RemovalReason::NonceUsed))
                .chain(unaffordable_nonces.into_iter().map(|nonce| (nonce, RemovalReason::Unaffordable)));
            for (nonce, reason) in doomed {
                let Entry { transfer, id, .. } = self.remove_entry(sender, nonce);
                removed.push(Removed { id, transfer, reason });
            }
            self.index_tail(sender);
        }
        removed
    }

    /// Block assembly: highest fee first across senders (ties by lower id), each sender's
    /// transfers in nonce order starting exactly at its committed nonce, within `transfers_max`
    /// and `bytes_max` (the sum of encoded transfer sizes). A transfer that does not fit the
    /// bytes left or the sender's running balance ends that sender's run, since its later
    /// transfers depend on it.
    pub fn select_for_block(
        &self,
        account_of: impl Fn(&Address) -> Account,
        transfers_max: usize,
        bytes_max: usize,
    ) -> Vec<Transfer> {
        // Each sender's next includable transfer, best first.
        let mut candidates: BTreeSet<(Reverse<Amount>, Hash, Address, u64)> = BTreeSet::new();
        let mut balance_left_of: BTreeMap<Address, Amount> = BTreeMap::new();
        for (sender, queue) in &self.by_sender {
            let account = account_of(sender);
            if let Some(entry) = queue.get(&account.nonce) {
                balance_left_of.insert(*sender, account.balance);
                candidates.insert((Reverse(entry.transfer.fee), entry.id, *sender, account.nonce));
            }
        }
        let mut selected = Vec::new();
        let mut bytes_used: usize = 0;
        while selected.len() < transfers_max {
            let Some((_, _, sender, nonce)) = candidates.pop_first() else {
                break;
            };
            let queue = self.by_sender.get(&sender).expect("candidates come from by_sender");
            let entry = queue.get(&nonce).expect("candidates come from by_sender");
            let balance_left = balance_left_of.get_mut(&sender).expect("every candidate sender has a balance");
            let Some(bytes_after) = bytes_used.checked_add(entry.size_bytes).filter(|bytes| *bytes <= bytes_max) else {
                continue;
            };
            let Some(balance_after) = transfer_cost(&entry.transfer).and_then(|cost| balance_left.checked_sub(cost))
            else {
                continue;
            };
            *balance_left = balance_after;
            bytes_used = bytes_after;
            selected.push(entry.transfer.clone());
            let next = nonce.checked_add(1).and_then(|next_nonce| queue.get_key_value(&next_nonce));
            if let Some((next_nonce, next_entry)) = next {
                candidates.insert((Reverse(next_entry.transfer.fee), next_entry.id, sender, *next_nonce));
            }
        }
        selected
    }

    /// Every pending id, by sender address then nonce: the order a peer that fetches them can
    /// admit them in (each sender's transfers without a gap).
    pub fn ids_by_sender(&self) -> impl Iterator<Item = Hash> + '_ {
        self.by_sender.values().flat_map(|queue| queue.values().map(|entry| entry.id))
    }

    /// All pending transfers, highest fee first (ties by lower id), for RPC `get_mempool`.
    pub fn iter_by_fee(&self) -> impl Iterator<Item = (&Hash, &Transfer)> + '_ {
        let transfer_of = |id| self.get(id).expect("by_fee indexes only pending transfers");
        self.by_fee.iter().map(move |(_, id)| (id, transfer_of(id)))
    }

    /// Fee estimate to get into the next block: `min_fee` when the pool holds fewer than
    /// `transfers_max`, else one more than the fee at position `transfers_max - 1` in fee order.
    /// It ignores nonce order and balances, so it is a hint, not a promise.
    pub fn estimate_fee(&self, transfers_max: usize) -> Amount {
        let Some(last_position) = transfers_max.checked_sub(1) else {
            return self.config.min_fee;
        };
        match self.by_fee.iter().nth(last_position) {
            None => self.config.min_fee,
            Some((Reverse(fee), _)) => fee.saturating_add(1).max(self.config.min_fee),
        }
    }

    /// Every admission rule, checked without mutating.
    fn plan_insert(&self, transfer: &Transfer, id: &Hash, sender: &Account) -> Result<InsertPlan, MempoolError> {
        if self.by_id.contains_key(id) {
            return Err(MempoolError::AlreadyKnown { id: *id });
        }
        if transfer.fee < self.config.min_fee {
            return Err(MempoolError::FeeBelowMinimum { minimum: self.config.min_fee, got: transfer.fee });
        }
        if transfer.nonce < sender.nonce {
            return Err(MempoolError::NonceTooLow { expected: sender.nonce, got: transfer.nonce });
        }
        let empty_queue = BTreeMap::new();
        let queue = self.by_sender.get(&transfer.from).unwrap_or(&empty_queue);
        let is_replacement = match queue.get(&transfer.nonce) {
            Some(pending) => {
                if transfer.fee <= pending.transfer.fee {
                    return Err(MempoolError::ReplacementFeeTooLow {
                        pending_fee: pending.transfer.fee,
                        got: transfer.fee,
                    });
                }
                true
            }
            None => {
                let expected = self.pending_nonce(&transfer.from, sender);
                if transfer.nonce != expected {
                    return Err(MempoolError::NonceGap { expected, got: transfer.nonce });
                }
                if queue.len() >= self.config.per_sender_max {
                    return Err(MempoolError::SenderQueueFull { pending: queue.len() });
                }
                false
            }
        };
        let mut needed: Amount = 0;
        for (_, earlier) in queue.range(sender.nonce..transfer.nonce) {
            needed = add_cost(needed, &earlier.transfer).ok_or(MempoolError::AmountOverflow)?;
        }
        needed = add_cost(needed, transfer).ok_or(MempoolError::AmountOverflow)?;
        if needed > sender.balance {
            return Err(MempoolError::InsufficientBalance { balance: sender.balance, needed });
        }
        // A replacement, or a transfer filling a gap, spends before the later ones: drop those
        // it leaves unaffordable.
        let later_nonces_dropped =
            unaffordable_from(queue.range((Excluded(transfer.nonce), Unbounded)), needed, sender.balance);
        let held_after_drops = self.len() - later_nonces_dropped.len();
        let evicted_sender = if !is_replacement && held_after_drops >= self.config.txs_max {
            Some(self.choose_eviction(transfer)?)
        } else {
            None
        };
        Ok(InsertPlan { is_replacement, later_nonces_dropped, evicted_sender })
    }

    /// The sender whose last transfer makes room for `transfer`: the lowest fee among other
    /// senders' last transfers (evicting the new one's own predecessor would leave it a gap).
    fn choose_eviction(&self, transfer: &Transfer) -> Result<Address, MempoolError> {
        let lowest = self.eviction_order.iter().find(|(_, _, sender)| *sender != transfer.from);
        match lowest {
            Some(&(lowest_fee, _, sender)) if transfer.fee > lowest_fee => Ok(sender),
            Some(&(lowest_fee, _, _)) => Err(MempoolError::PoolFull { lowest_fee }),
            None => {
                let own_fee = self.eviction_order.first().map_or(0, |(fee, _, _)| *fee);
                Err(MempoolError::PoolFull { lowest_fee: own_fee })
            }
        }
    }

    fn apply_insert(&mut self, transfer: Transfer, id: Hash, plan: InsertPlan) -> Inserted {
        let sender = transfer.from;
        let nonce = transfer.nonce;
        self.unindex_tail(&sender);
        let mut removed = Vec::new();
        let mut remove = |pool: &mut Mempool, sender: &Address, nonce: u64, reason: RemovalReason| {
            let Entry { transfer, id, .. } = pool.remove_entry(sender, nonce);
            removed.push(Removed { id, transfer, reason });
        };
        if plan.is_replacement {
            remove(self, &sender, nonce, RemovalReason::Replaced { by: id });
        }
        for later_nonce in &plan.later_nonces_dropped {
            remove(self, &sender, *later_nonce, RemovalReason::Unaffordable);
        }
        let size_bytes = transfer_encoded_len(&transfer);
        self.add_entry(Entry { transfer, id, size_bytes });
        self.index_tail(&sender);
        if let Some(evicted_sender) = plan.evicted_sender {
            self.unindex_tail(&evicted_sender);
            let last_nonce = self
                .by_sender
                .get(&evicted_sender)
                .and_then(|queue| queue.last_key_value())
                .map(|(last_nonce, _)| *last_nonce)
                .expect("eviction_order indexes only non-empty queues");
            remove(self, &evicted_sender, last_nonce, RemovalReason::Evicted { by: id });
            self.index_tail(&evicted_sender);
        }
        assert!(self.len() <= self.config.txs_max, "inserts evict to fit");
        Inserted { removed }
    }

    fn entry(&self, id: &Hash) -> Option<&Entry> {
        let (sender, nonce) = self.by_id.get(id)?;
        let entry = self.by_sender.get(sender).and_then(|queue| queue.get(nonce));
        Some(entry.expect("by_id indexes only pending transfers"))
    }

    /// Callers unindex the sender's tail before and reindex it after changing its queue.
    fn add_entry(&mut self, entry: Entry) {
        let Entry { transfer, id, .. } = &entry;
        let (sender, nonce, fee, id) = (transfer.from, transfer.nonce, transfer.fee, *id);
        let is_new_in_by_fee = self.by_fee.insert((Reverse(fee), id));
        assert!(is_new_in_by_fee, "plan_insert rejects known ids");
        let previous_slot = self.by_id.insert(id, (sender, nonce));
        assert!(previous_slot.is_none(), "plan_insert rejects known ids");
        let queue = self.by_sender.entry(sender).or_default();
        let previous_entry = queue.insert(nonce, entry);
        assert!(previous_entry.is_none(), "a replaced entry is removed first");
    }

    fn remove_entry(&mut self, sender: &Address, nonce: u64) -> Entry {
        let entry = self
            .by_sender
            .get_mut(sender)
            .and_then(|queue| queue.remove(&nonce))
            .expect("only pending transfers are removed");
        let was_in_by_id = self.by_id.remove(&entry.id).is_some();
        assert!(was_in_by_id, "by_id indexes every pending transfer");
        let was_in_by_fee = self.by_fee.remove(&(Reverse(entry.transfer.fee), entry.id));
        assert!(was_in_by_fee, "by_fee indexes every pending transfer");
        entry
    }

    /// The `eviction_order` key of the sender's last pending transfer.
    fn tail_key(&self, sender: &Address) -> Option<(Amount, Reverse<Hash>, Address)> {
        let (_, last) = self.by_sender.get(sender)?.last_key_value()?;
        Some((last.transfer.fee, Reverse(last.id), *sender))
    }

    fn unindex_tail(&mut self, sender: &Address) {
        if let Some(key) = self.tail_key(sender) {
            let was_indexed = self.eviction_order.remove(&key);
            assert!(was_indexed, "every sender's last transfer is indexed");
        }
    }

    /// Also drops the sender's queue once it is empty, so no queue is ever empty.
    fn index_tail(&mut self, sender: &Address) {
        match self.tail_key(sender) {
            Some(key) => {
                self.eviction_order.insert(key);
            }
            None => {
                self.by_sender.remove(sender);
            }
        }
    }
}

/// What a transfer takes from its sender's balance, or `None` if that overflows.
fn transfer_cost(transfer: &Transfer) -> Option<Amount> {
    transfer.amount.checked_add(transfer.fee)
}

fn add_cost(spent: Amount, transfer: &Transfer) -> Option<Amount> {
    transfer_cost(transfer).and_then(|cost| spent.checked_add(cost))
}

/// Walks `entries` in nonce order, having already `spent` from `balance`, and returns the nonce
/// of the first one that cannot be paid and of every one after it.
fn unaffordable_from<'a>(
    entries: impl Iterator<Item = (&'a u64, &'a Entry)>,
    mut spent: Amount,
    balance: Amount,
) -> Vec<u64> {
    let mut unaffordable = Vec::new();
    for (nonce, entry) in entries {
        if unaffordable.is_empty() {
            if let Some(total) = add_cost(spent, &entry.transfer).filter(|total| *total <= balance) {
                spent = total;
                continue;
            }
        }
        unaffordable.push(*nonce);
    }
    unaffordable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;
    use crate::crypto::hash_bytes;
    use crate::types::Signature;

    const RICH: Account = account(1_000_000, 0);

    const fn account(balance: Amount, nonce: u64) -> Account {
        Account { balance, nonce }
    }

    fn rich(_: &Address) -> Account {
        RICH
    }

    fn address(byte: u8) -> Address {
        Address([byte; 32])
    }

    /// A transfer from `Address([from; 32])`, and its id.
    fn transfer(from: u8, nonce: u64, amount: Amount, fee: Amount) -> (Transfer, Hash) {
        let (to, chain_id, signature) = (address(0xEE), "test".into(), Signature([0; 64]));
        let transfer = Transfer { chain_id, from: address(from), to, amount, fee, nonce, signature };
        let id = hash_bytes(&encode(&transfer));
        (transfer, id)
    }

    fn id(from: u8, nonce: u64, amount: Amount, fee: Amount) -> Hash {
        transfer(from, nonce, amount, fee).1
    }

    fn pool(txs_max: usize, per_sender_max: usize, min_fee: Amount) -> Mempool {
        Mempool::new(MempoolConfig { txs_max, per_sender_max, min_fee })
    }

    /// Checks that every index agrees with `by_sender`.
    fn assert_consistent(pool: &Mempool) {
        let mut tails = BTreeSet::new();
        for (sender, queue) in &pool.by_sender {
            for (nonce, entry) in queue {
                assert_eq!((entry.transfer.from, entry.transfer.nonce), (*sender, *nonce));
                assert_eq!(pool.by_id.get(&entry.id), Some(&(*sender, *nonce)));
                assert!(pool.by_fee.contains(&(Reverse(entry.transfer.fee), entry.id)));
            }
            tails.insert(pool.tail_key(sender).expect("no queue is empty"));
        }
        let count: usize = pool.by_sender.values().map(BTreeMap::len).sum();
        assert_eq!((pool.by_id.len(), pool.by_fee.len()), (count, count));
        assert_eq!(pool.eviction_order, tails);
        assert!(count <= pool.config.txs_max);
    }

    fn insert_ok(pool: &mut Mempool, (tx, id): (Transfer, Hash), sender: &Account) -> Inserted {
        let inserted = pool.insert(tx, id, sender).expect("transfer is admissible");
        assert_consistent(pool);
        inserted
    }

    fn assert_rejected(pool: &mut Mempool, (tx, id): (Transfer, Hash), sender: &Account, expected: MempoolError) {
        let before = pool.clone();
        assert_eq!(pool.insert(tx, id, sender), Err(expected));
        assert_eq!(*pool, before, "a rejected insert changes nothing");
    }

    /// (id, reason) of each removal, for readable assertions.
    fn removals(inserted: &Inserted) -> Vec<(Hash, RemovalReason)> {
        inserted.removed.iter().map(|removed| (removed.id, removed.reason)).collect()
    }

    /// (sender byte, nonce) of each transfer, for readable assertions.
    fn keys(transfers: &[Transfer]) -> Vec<(u8, u64)> {
        transfers.iter().map(|tx| (tx.from.0[0], tx.nonce)).collect()
    }

    #[test]
    fn already_known_is_rejected() {
        let mut pool = pool(10, 10, 0);
        insert_ok(&mut pool, transfer(1, 0, 10, 1), &RICH);
        let already_known = MempoolError::AlreadyKnown { id: id(1, 0, 10, 1) };
        assert_rejected(&mut pool, transfer(1, 0, 10, 1), &RICH, already_known);
    }

    #[test]
    fn nonce_below_committed_is_rejected() {
        let too_low = MempoolError::NonceTooLow { expected: 5, got: 4 };
        assert_rejected(&mut pool(10, 10, 0), transfer(1, 4, 10, 1), &account(100, 5), too_low);
    }

    #[test]
    fn nonce_gap_is_rejected() {
        let mut pool = pool(10, 10, 0);
        let gap = MempoolError::NonceGap { expected: 0, got: 1 };
        assert_rejected(&mut pool, transfer(1, 1, 10, 1), &RICH, gap);
        insert_ok(&mut pool, transfer(1, 0, 10, 1), &RICH);
        let gap = MempoolError::NonceGap { expected: 1, got: 2 };
        assert_rejected(&mut pool, transfer(1, 2, 10, 1), &RICH, gap);
    }

    #[test]
    fn fee_below_minimum_is_rejected() {
        let mut pool = pool(10, 10, 5);
        let below = MempoolError::FeeBelowMinimum { minimum: 5, got: 4 };
        assert_rejected(&mut pool, transfer(1, 0, 10, 4), &RICH, below);
        insert_ok(&mut pool, transfer(1, 0, 10, 5), &RICH);
    }

    #[test]
    fn replacement_needs_a_strictly_higher_fee() {
        let mut pool = pool(10, 10, 0);
        insert_ok(&mut pool, transfer(1, 0, 10, 5), &RICH);
        insert_ok(&mut pool, transfer(1, 1, 10, 5), &RICH);
        for fee in [4, 5] {
            let too_low = MempoolError::ReplacementFeeTooLow { pending_fee: 5, got: fee };
            assert_rejected(&mut pool, transfer(1, 0, 11, fee), &RICH, too_low);
        }
        let inserted = insert_ok(&mut pool, transfer(1, 0, 11, 6), &RICH);
        let old_id = id(1, 0, 10, 5);
        assert_eq!(removals(&inserted), [(old_id, RemovalReason::Replaced { by: id(1, 0, 11, 6) })]);
        assert_eq!(inserted.removed[0].transfer, transfer(1, 0, 10, 5).0, "the removal carries the transfer");
        assert!(!pool.contains(&old_id));
        assert_eq!(pool.get(&id(1, 0, 11, 6)), Some(&transfer(1, 0, 11, 6).0));
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn insufficient_balance_counts_lower_nonce_pending_transfers() {
        let mut pool = pool(10, 10, 0);
        insert_ok(&mut pool, transfer(1, 0, 50, 10), &account(100, 0));
        let short = MempoolError::InsufficientBalance { balance: 100, needed: 101 };
        assert_rejected(&mut pool, transfer(1, 1, 30, 11), &account(100, 0), short);
        insert_ok(&mut pool, transfer(1, 1, 30, 10), &account(100, 0));
    }

    #[test]
    fn amount_overflow_is_rejected_not_a_panic() {
        let mut pool = pool(10, 10, 0);
        let sender = account(u64::MAX, 0);
        let overflow = MempoolError::AmountOverflow;
        assert_rejected(&mut pool, transfer(1, 0, u64::MAX, 1), &sender, overflow.clone());
        insert_ok(&mut pool, transfer(1, 0, u64::MAX - 1, 1), &sender);
        assert_rejected(&mut pool, transfer(1, 1, 1, 0), &sender, overflow);
    }

    #[test]
    fn sender_queue_full_is_rejected() {
        let mut pool = pool(10, 2, 0);
        insert_ok(&mut pool, transfer(1, 0, 10, 1), &RICH);
        insert_ok(&mut pool, transfer(1, 1, 10, 1), &RICH);
        let full = MempoolError::SenderQueueFull { pending: 2 };
        assert_rejected(&mut pool, transfer(1, 2, 10, 1), &RICH, full);
        insert_ok(&mut pool, transfer(2, 0, 10, 1), &RICH);
    }

    #[test]
    fn full_pool_admits_only_a_fee_above_the_lowest() {
        let mut pool = pool(2, 10, 0);
        insert_ok(&mut pool, transfer(1, 0, 10, 5), &RICH);
        insert_ok(&mut pool, transfer(2, 0, 10, 7), &RICH);
        let full = MempoolError::PoolFull { lowest_fee: 5 };
        assert_rejected(&mut pool, transfer(3, 0, 10, 5), &RICH, full);
        let inserted = insert_ok(&mut pool, transfer(3, 0, 10, 6), &RICH);
        assert_eq!(removals(&inserted), [(id(1, 0, 10, 5), RemovalReason::Evicted { by: id(3, 0, 10, 6) })]);
    }

    #[test]
    fn full_pool_evicts_the_lowest_fee_last_transfer_and_never_leaves_a_gap() {
        let mut pool = pool(3, 10, 0);
        insert_ok(&mut pool, transfer(1, 0, 10, 1), &RICH);
        insert_ok(&mut pool, transfer(1, 1, 10, 10), &RICH);
        insert_ok(&mut pool, transfer(2, 0, 10, 5), &RICH);
        // Sender 1's nonce 0 has the lowest fee, but evicting it would strand nonce 1.
        let inserted = insert_ok(&mut pool, transfer(3, 0, 10, 6), &RICH);
        assert_eq!(removals(&inserted), [(id(2, 0, 10, 5), RemovalReason::Evicted { by: id(3, 0, 10, 6) })]);
        assert_eq!(pool.pending_nonce(&address(1), &RICH), 2);
        // Sender 3's nonce 0 (fee 6) is now the lowest last transfer, but it is the new
        // transfer's predecessor: only other senders' last transfers may make room.
        let full = MempoolError::PoolFull { lowest_fee: 10 };
        assert_rejected(&mut pool, transfer(3, 1, 10, 2), &RICH, full);
    }

    #[test]
    fn eviction_ties_on_fee_evict_the_higher_id() {
        let mut pool = pool(2, 10, 0);
        insert_ok(&mut pool, transfer(1, 0, 10, 5), &RICH);
        insert_ok(&mut pool, transfer(2, 0, 10, 5), &RICH);
        let inserted = insert_ok(&mut pool, transfer(3, 0, 10, 6), &RICH);
        let (first, second) = (id(1, 0, 10, 5), id(2, 0, 10, 5));
        assert_eq!(removals(&inserted), [(first.max(second), RemovalReason::Evicted { by: id(3, 0, 10, 6) })]);
        assert!(pool.contains(&first.min(second)));
    }

    #[test]
    fn replacement_evicts_later_transfers_it_makes_unaffordable() {
        let (mut pool, sender) = (pool(10, 10, 0), account(100, 0));
        insert_ok(&mut pool, transfer(1, 0, 10, 1), &sender);
        insert_ok(&mut pool, transfer(1, 1, 30, 1), &sender);
        insert_ok(&mut pool, transfer(1, 2, 30, 1), &sender);
        // 42 + 31 fits in 100; adding the last 31 does not.
        let inserted = insert_ok(&mut pool, transfer(1, 0, 40, 2), &sender);
        let replaced = (id(1, 0, 10, 1), RemovalReason::Replaced { by: id(1, 0, 40, 2) });
        assert_eq!(removals(&inserted), [replaced, (id(1, 2, 30, 1), RemovalReason::Unaffordable)]);
        assert_eq!(pool.pending_nonce(&address(1), &sender), 2);
        // A replacement that is itself unaffordable is refused.
        let short = MempoolError::InsufficientBalance { balance: 100, needed: 144 };
        assert_rejected(&mut pool, transfer(1, 1, 100, 2), &sender, short);
    }

    #[test]
    fn filling_a_gap_left_by_a_reorg_drops_later_transfers_it_makes_unaffordable() {
        let mut pool = pool(10, 10, 0);
        insert_ok(&mut pool, transfer(1, 5, 40, 0), &account(100, 5));
        insert_ok(&mut pool, transfer(1, 6, 40, 0), &account(100, 5));
        // The block that used nonces 3 and 4 was reverted, and the balance is now 90.
        let reverted = account(90, 3);
        assert_eq!(pool.pending_nonce(&address(1), &reverted), 3);
        insert_ok(&mut pool, transfer(1, 3, 10, 0), &reverted);
        let inserted = insert_ok(&mut pool, transfer(1, 4, 10, 0), &reverted);
        assert_eq!(removals(&inserted), [(id(1, 6, 40, 0), RemovalReason::Unaffordable)]);
        assert_eq!(pool.pending_nonce(&address(1), &reverted), 6);
    }

    #[test]
    fn each_sender_is_selected_in_nonce_order() {
        let mut pool = pool(10, 10, 0);
        for (nonce, fee) in [(0, 1), (1, 50), (2, 100)] {
            insert_ok(&mut pool, transfer(1, nonce, 10, fee), &RICH);
        }
        insert_ok(&mut pool, transfer(2, 0, 10, 10), &RICH);
        let selected = pool.select_for_block(rich, 100, usize::MAX);
        assert_eq!(keys(&selected), [(2, 0), (1, 0), (1, 1), (1, 2)]);
        assert_eq!(pool.pending_nonce(&address(1), &RICH), 3);
        assert_eq!(pool.pending_nonce(&address(1), &account(0, 1)), 3);
        assert_eq!(pool.pending_nonce(&address(9), &account(0, 7)), 7);
    }

    #[test]
    fn select_takes_highest_fee_first_across_senders_and_ties_by_lower_id() {
        let mut pool = pool(10, 10, 0);
        for (from, fee) in [(1, 3), (2, 9), (3, 5), (4, 5)] {
            insert_ok(&mut pool, transfer(from, 0, 10, fee), &RICH);
        }
        let tied = if id(3, 0, 10, 5) < id(4, 0, 10, 5) { (3, 4) } else { (4, 3) };
        let selected = pool.select_for_block(rich, 100, usize::MAX);
        assert_eq!(keys(&selected), [(2, 0), (tied.0, 0), (tied.1, 0), (1, 0)]);
        let listed: Vec<Transfer> = pool.iter_by_fee().map(|(_, tx)| tx.clone()).collect();
        assert_eq!(listed, selected);
    }

    #[test]
    fn select_stops_at_transfers_max_and_bytes_max() {
        let mut pool = pool(10, 10, 0);
        for from in 1..=5 {
            insert_ok(&mut pool, transfer(from, 0, 10, u64::from(from)), &RICH);
        }
        let size_bytes = encode(&transfer(1, 0, 10, 1).0).len();
        let by_count = pool.select_for_block(rich, 3, usize::MAX);
        assert_eq!(keys(&by_count), [(5, 0), (4, 0), (3, 0)]);
        let by_bytes = pool.select_for_block(rich, 100, 3 * size_bytes - 1);
        assert_eq!(keys(&by_bytes), [(5, 0), (4, 0)]);
        assert!(pool.select_for_block(rich, 100, size_bytes - 1).is_empty());
        assert!(pool.select_for_block(rich, 0, usize::MAX).is_empty());
    }

    #[test]
    fn select_starts_each_sender_exactly_at_its_committed_nonce() {
        let mut pool = pool(10, 10, 0);
        insert_ok(&mut pool, transfer(1, 5, 10, 9), &account(100, 5));
        insert_ok(&mut pool, transfer(1, 6, 10, 9), &account(100, 5));
        insert_ok(&mut pool, transfer(2, 0, 10, 1), &RICH);
        let sender_1_at = |nonce| {
            move |sender: &Address| {
                if *sender == address(1) {
                    account(100, nonce)
                } else {
                    RICH
                }
            }
        };
        // A reorg moved sender 1 back to nonce 3: its transfers wait for the gap to be filled.
        assert_eq!(keys(&pool.select_for_block(sender_1_at(3), 100, usize::MAX)), [(2, 0)]);
        // Nonce 5 was committed but not yet revalidated away: start at 6.
        let selected = pool.select_for_block(sender_1_at(6), 100, usize::MAX);
        assert_eq!(keys(&selected), [(1, 6), (2, 0)]);
    }

    #[test]
    fn select_never_includes_an_unaffordable_transfer() {
        let mut pool = pool(10, 10, 0);
        insert_ok(&mut pool, transfer(1, 0, 50, 2), &RICH);
        insert_ok(&mut pool, transfer(1, 1, 50, 2), &RICH);
        insert_ok(&mut pool, transfer(2, 0, 50, 1), &RICH);
        let sender_1_has_60 = |sender: &Address| {
            if *sender == address(1) {
                account(60, 0)
            } else {
                RICH
            }
        };
        let selected = pool.select_for_block(sender_1_has_60, 100, usize::MAX);
        assert_eq!(keys(&selected), [(1, 0), (2, 0)]);
    }

    #[test]
    fn revalidate_drops_committed_and_unaffordable_transfers() {
        let mut pool = pool(10, 10, 0);
        let pending = [(1, 0, 10), (1, 1, 10), (1, 2, 10), (1, 3, 1), (2, 0, 10), (2, 1, 10)];
        for (from, nonce, amount) in pending.into_iter().chain([(3, 0, 10)]) {
            insert_ok(&mut pool, transfer(from, nonce, amount, 1), &RICH);
        }
        let after_block = |sender: &Address| match sender.0[0] {
            // Nonce 0 was committed; 15 left pays for nonce 1 but not nonce 2, and nonce 3
            // (which alone would fit) cannot be used without nonce 2.
            1 => account(15, 1),
            // Nonce 0 is no longer affordable, so nonce 1 can never be used either.
            2 => account(5, 0),
            _ => account(0, 0),
        };
        let senders: BTreeSet<Address> = [address(2), address(1), address(4)].into();
        let removed = pool.revalidate_senders(&senders, after_block);
        let (used, unaffordable) = (RemovalReason::NonceUsed, RemovalReason::Unaffordable);
        let dropped = [
            (1, 0, 10, used),
            (1, 2, 10, unaffordable),
            (1, 3, 1, unaffordable),
            (2, 0, 10, unaffordable),
            (2, 1, 10, unaffordable),
        ];
        let removed: Vec<(Hash, RemovalReason)> = removed.iter().map(|removed| (removed.id, removed.reason)).collect();
        assert_eq!(removed, dropped.map(|(from, nonce, amount, reason)| (id(from, nonce, amount, 1), reason)));
        assert_consistent(&pool);
        // Sender 3 was not named, so it is untouched even though it can no longer pay.
        assert_eq!(pool.len(), 2);
        assert!(pool.contains(&id(3, 0, 10, 1)));
        assert_eq!(pool.pending_nonce(&address(1), &account(15, 1)), 2);
        assert!(pool.revalidate_senders(&senders, after_block).is_empty());
    }

    #[test]
    fn estimate_fee_is_the_minimum_until_a_block_is_full() {
        let mut pool = pool(10, 10, 2);
        assert_eq!(pool.estimate_fee(1), 2);
        for (from, fee) in [(1, 20), (2, 10), (3, 30)] {
            insert_ok(&mut pool, transfer(from, 0, 10, fee), &RICH);
        }
        let estimates = [0, 1, 3, 4].map(|transfers_max| pool.estimate_fee(transfers_max));
        assert_eq!(estimates, [2, 31, 11, 2]);
    }

    #[test]
    fn arrival_order_across_senders_does_not_change_the_pool_or_the_block() {
        // Four senders with three nonces each and a spread of fees (ties included).
        let arrival = |from: u8, nonce: u64| transfer(from, nonce, 10, (u64::from(from) * 7 + nonce * 5) % 6);
        let mut sender_by_sender = pool(100, 10, 0);
        for from in 1..=4 {
            for nonce in 0..3 {
                insert_ok(&mut sender_by_sender, arrival(from, nonce), &RICH);
            }
        }
        let mut interleaved = pool(100, 10, 0);
        for nonce in 0..3 {
            for from in [4, 2, 1, 3] {
                insert_ok(&mut interleaved, arrival(from, nonce), &RICH);
            }
        }
        assert_eq!(sender_by_sender, interleaved);
        let block = sender_by_sender.select_for_block(rich, 7, usize::MAX);
        assert_eq!(block.len(), 7);
        assert_eq!(block, interleaved.select_for_block(rich, 7, usize::MAX));
        assert!(sender_by_sender.iter_by_fee().eq(interleaved.iter_by_fee()));
    }
}
