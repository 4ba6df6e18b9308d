//! The genesis file: chain id, validators, initial allocations and the chain parameters, with
//! the defaults DESIGN.md fixes. Validation names the field and what is wrong with it.

use crate::codec;
use crate::crypto::hash_bytes;
use crate::limits::{BLOCK_BYTES_MAX_DEFAULT, BLOCK_TRANSFERS_MAX_DEFAULT, CHAIN_ID_BYTES_MAX, VALIDATORS_MAX};
use crate::types::{amount_serde, Address, Amount, Hash, NodeId, UNITS_PER_COIN};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Chain parameters. Every field is an integer; JSON amounts are strings of base units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Parameters {
    /// Rank 0 may produce once `now >= parent.timestamp + block_interval_ms`.
    pub block_interval_ms: u64,
    /// Rank r >= 1 may produce once `now >= parent.timestamp + r * producer_timeout_ms`.
    pub producer_timeout_ms: u64,
    /// Paid to each block's producer, on top of the block's fees. There is no supply cap.
    #[serde(with = "amount_serde")]
    pub block_reward: Amount,
    /// A block whose timestamp is further than this ahead of the local clock is rejected.
    pub max_clock_drift_ms: u64,
    /// A validator whose latest report's tip is more than this many blocks below the parent
    /// goes to the end of the ranking.
    pub report_ttl_blocks: u64,
    /// At most this many reports of one validator in one block.
    pub reports_per_validator_per_block_max: u32,
    pub weight_cpu: u64,
    pub weight_net: u64,
    pub block_transfers_max: u32,
    pub block_bytes_max: u32,
    /// A validator with committed evidence goes to the end of the ranking for this many blocks
    /// after the block that commits it (0: never jailed).
    pub jail_blocks: u64,
    /// The production-share cap looks at this many latest blocks.
    pub production_window_blocks: u64,
    /// A validator that produced `ceil(production_cap_fair_shares * window / validators)` of
    /// the window's blocks goes to the end of the ranking until it falls below (0: no cap).
    pub production_cap_fair_shares: u64,
    /// Evidence of an offence at height o is valid in a block at height h only if
    /// `o < h <= o + evidence_max_age_blocks`; committed offences are remembered that long.
    pub evidence_max_age_blocks: u64,
    /// At most this many pieces of evidence in one block.
    pub block_evidence_max: u32,
}

impl Default for Parameters {
    fn default() -> Self {
        Parameters {
            block_interval_ms: 2_000,
            producer_timeout_ms: 10_000,
            block_reward: 10 * UNITS_PER_COIN,
            max_clock_drift_ms: 1_000,
            report_ttl_blocks: 20,
            reports_per_validator_per_block_max: 4,
            weight_cpu: 1,
            weight_net: 1,
            block_transfers_max: BLOCK_TRANSFERS_MAX_DEFAULT,
            block_bytes_max: BLOCK_BYTES_MAX_DEFAULT,
            // An hour at the default interval: the usual cause of an honest operator's double
            // signature is one key on two machines, and an hour at the end of the ranking is
            // long enough to cost a dishonest member real rewards and short enough that an
            // operator who fixes the setup is back the same day. It keeps its vote throughout.
            jail_blocks: 1_800,
            production_window_blocks: 100,
            production_cap_fair_shares: 2,
            // About 11 hours at the default interval: long enough for two halves of a split
            // network to meet again and exchange what they saw.
            evidence_max_age_blocks: 20_000,
            block_evidence_max: 8,
        }
    }
}

/// One validator: its node key (also its account), a name for humans, and its network address
/// (`host:port`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorEntry {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    pub address: Address,
    #[serde(with = "amount_serde")]
    pub amount: Amount,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    /// The genesis block's timestamp; block 1 may come `block_interval_ms` after it.
    pub genesis_time_ms: u64,
    pub validators: Vec<ValidatorEntry>,
    #[serde(default)]
    pub allocations: Vec<Allocation>,
    #[serde(default)]
    pub parameters: Parameters,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    #[error("chain_id {chain_id:?} must be 1 to {CHAIN_ID_BYTES_MAX} characters of a-z, 0-9, '-', '_' or '.'")]
    BadChainId { chain_id: String },
    #[error("validators: the list is empty; a chain needs at least one validator")]
    NoValidators,
    #[error("validators: {count} validators named, at most {VALIDATORS_MAX} are supported")]
    TooManyValidators { count: usize },
    #[error("validators: {id} is listed twice")]
    DuplicateValidator { id: Address },
    #[error("validators: the name {name:?} is used twice")]
    DuplicateValidatorName { name: String },
    #[error("validators[{index}].id is not a valid Ed25519 public key")]
    BadValidatorKey { index: usize },
    #[error("allocations: {address} is listed twice")]
    DuplicateAllocation { address: Address },
    #[error(
        "allocations: the total exceeds half the largest amount (u64 base units), leaving no room for block rewards"
    )]
    AllocationOverflow,
    #[error("parameters.{field}: {reason}")]
    BadParameter { field: &'static str, reason: String },
}

impl Genesis {
    /// Checks everything a node relies on; the error names the field.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let chain_id_ok = !self.chain_id.is_empty()
            && self.chain_id.len() <= CHAIN_ID_BYTES_MAX
            && self.chain_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if !chain_id_ok {
            return Err(GenesisError::BadChainId { chain_id: self.chain_id.clone() });
        }
        if self.validators.is_empty() {
            return Err(GenesisError::NoValidators);
        }
        if self.validators.len() > VALIDATORS_MAX {
            return Err(GenesisError::TooManyValidators { count: self.validators.len() });
        }
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (index, validator) in self.validators.iter().enumerate() {
            if !ids.insert(validator.id) {
                return Err(GenesisError::DuplicateValidator { id: validator.id });
            }
            if !names.insert(validator.name.as_str()) {
                return Err(GenesisError::DuplicateValidatorName { name: validator.name.clone() });
            }
            if ed25519_dalek::VerifyingKey::from_bytes(&validator.id.0).map(|key| key.is_weak()).unwrap_or(true) {
                return Err(GenesisError::BadValidatorKey { index });
            }
        }
        let mut addresses = BTreeSet::new();
        let mut total: Amount = 0;
        for allocation in &self.allocations {
            if !addresses.insert(allocation.address) {
                return Err(GenesisError::DuplicateAllocation { address: allocation.address });
            }
            total = total.checked_add(allocation.amount).ok_or(GenesisError::AllocationOverflow)?;
        }
        // Rewards add to the supply forever: keep at least half of u64 for them (centuries of
        // blocks at any sane reward), so no block can fail for lack of room.
        if total > u64::MAX / 2 {
            return Err(GenesisError::AllocationOverflow);
        }
        let parameters = &self.parameters;
        let bad =
            |field: &'static str, reason: &str| Err(GenesisError::BadParameter { field, reason: reason.to_string() });
        if parameters.block_interval_ms == 0 {
            return bad("block_interval_ms", "must be above zero");
        }
        if parameters.producer_timeout_ms <= parameters.block_interval_ms {
            return bad(
                "producer_timeout_ms",
                "must be above block_interval_ms, so rank 1 never produces before rank 0",
            );
        }
        if parameters.weight_cpu.checked_add(parameters.weight_net).is_none_or(|sum| sum == 0 || sum > 1_000_000) {
            return bad("weight_cpu", "weight_cpu + weight_net must be between 1 and 1,000,000");
        }
        if parameters.reports_per_validator_per_block_max == 0 {
            return bad("reports_per_validator_per_block_max", "must be at least 1, or no vote could ever be recorded");
        }
        if parameters.report_ttl_blocks == 0 {
            return bad("report_ttl_blocks", "must be at least 1");
        }
        if parameters.block_transfers_max == 0 {
            return bad("block_transfers_max", "must be at least 1");
        }
        if u64::from(parameters.block_bytes_max) < 64 * 1024
            || u64::from(parameters.block_bytes_max) > crate::limits::MESSAGE_BYTES_MAX / 2
        {
            return bad("block_bytes_max", "must be between 64 KiB and half the 16 MiB message limit");
        }
        if parameters.production_window_blocks == 0 || parameters.production_window_blocks > 100_000 {
            return bad("production_window_blocks", "must be between 1 and 100,000");
        }
        if parameters.production_cap_fair_shares > 1_000 {
            return bad("production_cap_fair_shares", "must be at most 1,000 (0 turns the cap off)");
        }
        if parameters.evidence_max_age_blocks == 0 || parameters.evidence_max_age_blocks > 1_000_000 {
            return bad("evidence_max_age_blocks", "must be between 1 and 1,000,000");
        }
        if parameters.block_evidence_max == 0 || parameters.block_evidence_max > 64 {
            return bad("block_evidence_max", "must be between 1 and 64");
        }
        Ok(())
    }

    /// Blake3 of the genesis file's binary encoding: commits to every field, parameters included.
    /// It is the genesis block's `prev_hash`, so the genesis block hash commits to it too.
    pub fn spec_hash(&self) -> Hash {
        hash_bytes(&codec::encode(self))
    }

    pub fn validator_index(&self, id: &NodeId) -> Option<usize> {
        self.validators.iter().position(|validator| &validator.id == id)
    }

    /// A validator's name in this genesis, for logs and RPC.
    pub fn validator_name(&self, id: &NodeId) -> Option<&str> {
        self.validator_index(id).map(|index| self.validators[index].name.as_str())
    }

    /// Votes from more than 2/3 of the validators: `2N/3 + 1`, integer division.
    pub fn quorum(&self) -> usize {
        2 * self.validators.len() / 3 + 1
    }

    /// Blocks of the production window a validator may produce before it goes to the end of
    /// the ranking: `ceil(production_cap_fair_shares * production_window_blocks / N)`, or
    /// None when the cap is off.
    pub fn production_cap_blocks(&self) -> Option<u64> {
        let parameters = &self.parameters;
        if parameters.production_cap_fair_shares == 0 {
            return None;
        }
        let shares = parameters.production_cap_fair_shares * parameters.production_window_blocks;
        Some(shares.div_ceil(self.validators.len().max(1) as u64))
    }

    /// `(w_cpu * cpu + w_net * net) / (w_cpu + w_net)`, integer division.
    pub fn score(&self, cpu: u16, net: u16) -> u16 {
        let parameters = &self.parameters;
        let weighted = parameters.weight_cpu * u64::from(cpu) + parameters.weight_net * u64::from(net);
        let score = weighted / (parameters.weight_cpu + parameters.weight_net);
        u16::try_from(score).expect("a weighted mean of values <= 1000 is <= 1000")
    }
}

/// The genesis block and the state after it. The header's `prev_hash` is the genesis spec hash,
/// so the genesis block hash commits to every field of the genesis file.
pub fn genesis_block(genesis: &Genesis) -> (crate::types::Block, crate::state::ChainState) {
    use crate::types::{Block, BlockHeader, Signature};
    let mut state = crate::state::ChainState::at_genesis(genesis, Hash::default());
    let header = BlockHeader {
        chain_id: genesis.chain_id.clone(),
        height: 0,
        prev_hash: genesis.spec_hash(),
        timestamp_ms: genesis.genesis_time_ms,
        producer: Address::default(),
        rank: 0,
        tx_root: crate::crypto::merkle_root(&[]),
        report_root: crate::crypto::merkle_root(&[]),
        evidence_root: crate::crypto::merkle_root(&[]),
        state_root: state.root(),
        signature: Signature::default(),
    };
    let hash = crate::crypto::hash_bytes(&codec::encode(&header));
    let tip = crate::types::Checkpoint { height: 0, hash };
    state.tip = tip;
    state.finality = crate::finality::FinalityState::at_genesis(tip);
    (Block { header, transfers: vec![], reports: vec![], evidence: vec![] }, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Genesis {
        let key = crate::crypto::Keypair::from_secret_bytes(&[1; 32]);
        Genesis {
            chain_id: "tinychain-test".into(),
            genesis_time_ms: 0,
            validators: vec![ValidatorEntry { id: key.address(), name: "node0".into(), addr: "127.0.0.1:7740".into() }],
            allocations: vec![Allocation { address: key.address(), amount: 5 }],
            parameters: Parameters::default(),
        }
    }

    #[test]
    fn json_round_trip_uses_strings_for_amounts_and_defaults_missing_parameters() {
        let genesis = sample();
        let json = serde_json::to_string(&genesis).unwrap();
        assert!(json.contains("\"amount\":\"5\""), "{json}");
        assert!(json.contains("\"block_reward\":\"1000000000\""), "{json}");
        let back: Genesis = serde_json::from_str(&json).unwrap();
        assert_eq!(back, genesis);
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value.as_object_mut().unwrap().remove("parameters");
        let defaulted: Genesis = serde_json::from_value(value).unwrap();
        assert_eq!(defaulted.parameters, Parameters::default());
    }

    #[test]
    fn validation_names_the_field() {
        let mut genesis = sample();
        genesis.parameters.producer_timeout_ms = 1_000;
        let error = genesis.validate().unwrap_err();
        assert!(error.to_string().starts_with("parameters.producer_timeout_ms"), "{error}");
        let mut genesis = sample();
        genesis.chain_id = "Bad Id".into();
        assert!(matches!(genesis.validate(), Err(GenesisError::BadChainId { .. })));
        let mut genesis = sample();
        genesis.validators.clear();
        assert_eq!(genesis.validate(), Err(GenesisError::NoValidators));
        assert_eq!(sample().validate(), Ok(()));
    }

    #[test]
    fn allocations_must_leave_room_for_rewards() {
        let mut genesis = sample();
        genesis.allocations[0].amount = u64::MAX / 2;
        assert_eq!(genesis.validate(), Ok(()));
        genesis.allocations[0].amount = u64::MAX / 2 + 1;
        assert_eq!(genesis.validate(), Err(GenesisError::AllocationOverflow));
        genesis.allocations[0].amount = u64::MAX;
        genesis.allocations.push(Allocation { address: Address([9; 32]), amount: 1 });
        assert_eq!(genesis.validate(), Err(GenesisError::AllocationOverflow));
    }

    #[test]
    fn unknown_fields_and_float_amounts_are_rejected() {
        let json = serde_json::to_string(&sample()).unwrap();
        let typo = json.replace("block_interval_ms", "block_intervall_ms");
        assert!(serde_json::from_str::<Genesis>(&typo).is_err());
        let float = json.replace("\"amount\":\"5\"", "\"amount\":5.0");
        assert!(serde_json::from_str::<Genesis>(&float).is_err());
    }

    #[test]
    fn quorum_is_more_than_two_thirds() {
        let mut genesis = sample();
        for (count, quorum) in [(1, 1), (3, 3), (4, 3), (5, 4), (6, 5), (7, 5), (100, 67)] {
            genesis.validators = (0..count)
                .map(|n| ValidatorEntry { id: Address([n as u8; 32]), name: format!("n{n}"), addr: String::new() })
                .collect();
            assert_eq!(genesis.quorum(), quorum, "N = {count}");
            assert!(3 * genesis.quorum() > 2 * count);
        }
    }
}
