//! The consensus state after a block: the account table (the "coins database"), one election
//! record per validator, and the finality state. Blocks change it only through a `StateDelta`
//! computed by validation, so applying is infallible and every change has an exact undo.

use crate::account_tree::{AccountTreeCache, TreePatch};
use crate::crypto::{hash_bytes, merkle_root};
use crate::finality::FinalityState;
use crate::genesis::Genesis;
use crate::types::{Account, Address, Checkpoint, Hash, Height};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The parts of a validator's latest recorded report that the election reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct RecordedReport {
    pub sequence: u64,
    pub tip: Checkpoint,
    pub cpu: u16,
    pub net: u16,
    pub score: u16,
}

/// What the chain remembers about one validator for the election.
#[derive(Clone, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct ValidatorRecord {
    /// The recorded report with the highest sequence, if any.
    pub latest_report: Option<RecordedReport>,
    /// The height of the last block at which it missed its turn (a lower-priority rank
    /// produced while it was ahead), unless a later report of a tip at or above that height on
    /// this chain has been recorded since.
    pub missed_turn_at: Option<Height>,
    /// Blocks this validator produced, for observability.
    pub blocks_produced: u64,
    /// It is jailed (at the end of the ranking) for blocks up to this height: set by committed
    /// evidence against it, and only ever extended.
    pub jailed_until: Option<Height>,
    /// Heights of the blocks it produced among the last `production_window_blocks` blocks, in
    /// ascending order: its count against the production-share cap.
    pub recent_blocks: Vec<Height>,
}

impl ValidatorRecord {
    /// Jailed for the block at `height`?
    pub fn is_jailed_at(&self, height: Height) -> bool {
        self.jailed_until.is_some_and(|until| height <= until)
    }

    /// The sequence of the latest report the chain recorded: a report at or below it is stale.
    pub fn recorded_sequence(&self) -> Option<u64> {
        self.latest_report.map(|report| report.sequence)
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct ChainState {
    pub tip: Checkpoint,
    pub tip_timestamp_ms: u64,
    pub accounts: BTreeMap<Address, Account>,
    /// Indexed like `Genesis::validators`.
    pub validators: Vec<ValidatorRecord>,
    pub finality: FinalityState,
    /// Base units in existence: genesis allocations plus every block reward (fees move coins,
    /// they do not create them). Checked against the accounts by the simulator.
    pub supply: u64,
    /// Offences with committed evidence, by offence key (`validate::EvidenceFacts::key`), with
    /// the offence's height; forgotten `evidence_max_age_blocks` after it, when evidence of it
    /// is no longer valid anyway.
    pub offences: BTreeMap<Hash, Height>,
    /// The accounts' bucket tree (`account_tree`), kept up to date by `apply_delta`: a cache,
    /// not part of the state's encoding or equality. `Default::default()` for none: roots are
    /// then computed from scratch and deltas keep none (storage's copy of the state), until
    /// `account_tree.ensure` builds one (a node restoring the state).
    #[serde(skip)]
    pub account_tree: AccountTreeCache,
}

/// A change to the state: the new value of every touched entry. A block's delta holds the
/// values after it; its undo holds the values before (`None` for an account it created).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct StateDelta {
    pub tip: Checkpoint,
    pub tip_timestamp_ms: u64,
    pub accounts: Vec<(Address, Option<Account>)>,
    pub validators: Vec<(u32, ValidatorRecord)>,
    pub finality: FinalityState,
    pub supply: u64,
    /// Offences added (`Some`) or forgotten (`None`).
    pub offences: Vec<(Hash, Option<Height>)>,
}

const VALIDATOR_LEAF_TAG: &str = "tinychain/validator/v2";
const OFFENCE_LEAF_TAG: &str = "tinychain/offence/v1";

impl ChainState {
    /// The state at genesis: allocations, empty validator records, genesis justified and final.
    pub fn at_genesis(genesis: &Genesis, genesis_hash: Hash) -> ChainState {
        let accounts: BTreeMap<Address, Account> = genesis
            .allocations
            .iter()
            .map(|allocation| (allocation.address, Account { balance: allocation.amount, nonce: 0 }))
            .collect();
        let supply = genesis.allocations.iter().map(|allocation| allocation.amount).sum();
        let tip = Checkpoint { height: 0, hash: genesis_hash };
        ChainState {
            tip,
            tip_timestamp_ms: genesis.genesis_time_ms,
            account_tree: AccountTreeCache::built(&accounts),
            accounts,
            validators: vec![ValidatorRecord::default(); genesis.validators.len()],
            finality: FinalityState::at_genesis(tip),
            supply,
            offences: BTreeMap::new(),
        }
    }

    pub fn account(&self, address: &Address) -> Account {
        self.accounts.get(address).copied().unwrap_or_default()
    }

    /// Writes a delta in. Cannot fail: deltas come from validation against this very state.
    pub fn apply_delta(&mut self, delta: &StateDelta) {
        self.apply_delta_patched(delta, None);
    }

    /// `apply_delta`, with the account-tree patch `root_with_patch` made for this delta's
    /// accounts (the tree is brought up to date by writing it rather than by hashing again;
    /// a patch made from another tree is ignored).
    pub fn apply_delta_patched(&mut self, delta: &StateDelta, patch: Option<&TreePatch>) {
        self.tip = delta.tip;
        self.tip_timestamp_ms = delta.tip_timestamp_ms;
        for (address, account) in &delta.accounts {
            match account {
                Some(account) => {
                    self.accounts.insert(*address, *account);
                }
                None => {
                    self.accounts.remove(address);
                }
            }
        }
        self.account_tree.update(&self.accounts, delta.accounts.iter().map(|(address, _)| address), patch);
        for (index, record) in &delta.validators {
            self.validators[*index as usize] = record.clone();
        }
        for (key, height) in &delta.offences {
            match height {
                Some(height) => {
                    self.offences.insert(*key, *height);
                }
                None => {
                    self.offences.remove(key);
                }
            }
        }
        self.finality = delta.finality.clone();
        self.supply = delta.supply;
    }

    /// The undo of `delta` against the current state: apply it after `delta` to come back.
    pub fn undo_for(&self, delta: &StateDelta) -> StateDelta {
        StateDelta {
            tip: self.tip,
            tip_timestamp_ms: self.tip_timestamp_ms,
            accounts: delta
                .accounts
                .iter()
                .map(|(address, _)| (*address, self.accounts.get(address).copied()))
                .collect(),
            validators: delta
                .validators
                .iter()
                .map(|(index, _)| (*index, self.validators[*index as usize].clone()))
                .collect(),
            finality: self.finality.clone(),
            supply: self.supply,
            offences: delta.offences.iter().map(|(key, _)| (*key, self.offences.get(key).copied())).collect(),
        }
    }

    /// The state root a block commits to, as if `delta` were applied (pass an empty overlay for
    /// the current state). Root = merkle([accounts root, validators root, offences root]): the
    /// accounts root is the bucket tree's (`account_tree`: Merkle over 65,536 buckets by
    /// address prefix, each the Merkle root of its account leaves, Blake3 of (tag, address,
    /// balance, nonce), in address order), validator leaves are Blake3 of (tag, index, record)
    /// in genesis order, offence leaves Blake3 of (tag, key, height) in key order.
    pub fn root_with(
        &self,
        overlay_accounts: &BTreeMap<Address, Account>,
        overlay_validators: &BTreeMap<u32, ValidatorRecord>,
        overlay_offences: &BTreeMap<Hash, Option<Height>>,
    ) -> Hash {
        self.root_with_patch(overlay_accounts, overlay_validators, overlay_offences).0
    }

    /// `root_with`, and the account-tree patch for `apply_delta_patched` (none when the state
    /// keeps no tree).
    pub fn root_with_patch(
        &self,
        overlay_accounts: &BTreeMap<Address, Account>,
        overlay_validators: &BTreeMap<u32, ValidatorRecord>,
        overlay_offences: &BTreeMap<Hash, Option<Height>>,
    ) -> (Hash, Option<TreePatch>) {
        let (accounts_root, patch) = self.account_tree.root_with(&self.accounts, overlay_accounts);
        let validator_leaves: Vec<Hash> = self
            .validators
            .iter()
            .enumerate()
            .map(|(index, record)| {
                let index = u32::try_from(index).expect("validator count is bounded by VALIDATORS_MAX");
                let record = overlay_validators.get(&index).unwrap_or(record);
                hash_bytes(&crate::codec::encode(&(VALIDATOR_LEAF_TAG, index, record)))
            })
            .collect();
        let mut offences = self.offences.clone();
        for (key, height) in overlay_offences {
            match height {
                Some(height) => offences.insert(*key, *height),
                None => offences.remove(key),
            };
        }
        let offence_leaves: Vec<Hash> = offences
            .iter()
            .map(|(key, height)| hash_bytes(&crate::codec::encode(&(OFFENCE_LEAF_TAG, key, height))))
            .collect();
        (merkle_root(&[accounts_root, merkle_root(&validator_leaves), merkle_root(&offence_leaves)]), patch)
    }

    pub fn root(&self) -> Hash {
        self.root_with(&BTreeMap::new(), &BTreeMap::new(), &BTreeMap::new())
    }

    /// Sum of all balances; equals `supply` after every block (an invariant the simulator checks).
    pub fn balances_total(&self) -> u128 {
        self.accounts.values().map(|account| u128::from(account.balance)).sum()
    }
}
