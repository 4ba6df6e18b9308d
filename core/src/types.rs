//! The plain data of the protocol: hashes, addresses, signatures, transfers, metric reports,
//! votes, block headers and blocks. No behaviour beyond construction and cheap accessors.
//!
//! Binary encoding (bincode, see `codec`) is the consensus form. Human-readable serde forms
//! (JSON in genesis files and RPC) differ on purpose: addresses are bech32m text, hashes and
//! signatures are hex, and amounts are strings of base units because a u64 exceeds what JSON
//! numbers hold exactly.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Base units in one tinycoin.
pub const UNITS_PER_COIN: u64 = 100_000_000;

/// An amount in base units. Arithmetic on amounts is always checked.
pub type Amount = u64;

/// A block height; genesis is height 0.
pub type Height = u64;

/// A Blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Hash(pub [u8; 32]);

/// An account address: the account's Ed25519 public key. A validator's node key is its account.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub [u8; 32]);

/// Validators are identified by their node key, which is also their account address.
pub type NodeId = Address;

/// An Ed25519 signature (R || s).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Default for Signature {
    fn default() -> Self {
        Signature([0; 64])
    }
}

/// A transfer of `amount` from `from` to `to`, paying `fee` to the block producer.
/// Valid iff signed by `from`, `nonce` is the account's next nonce, `amount > 0` and
/// `amount + fee <= balance`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Transfer {
    pub chain_id: String,
    pub from: Address,
    pub to: Address,
    #[serde(with = "amount_serde")]
    pub amount: Amount,
    #[serde(with = "amount_serde")]
    pub fee: Amount,
    pub nonce: u64,
    pub signature: Signature,
}

/// A (height, hash) pair naming one block: a tip, or a Casper-FFG checkpoint.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    pub height: Height,
    pub hash: Hash,
}

/// A Casper-FFG vote: a link from the justified `source` to the voter's tip `target`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct Vote {
    pub source: Checkpoint,
    pub target: Checkpoint,
}

/// A validator's signed metric report; it doubles as a finality vote when `vote` is present.
/// `cpu` and `net` are per-mille (0..=1000) of the last measuring window;
/// `score = (w_cpu * cpu + w_net * net) / (w_cpu + w_net)` with the genesis weights.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct MetricReport {
    pub node: NodeId,
    pub sequence: u64,
    pub tip: Checkpoint,
    pub cpu: u16,
    pub net: u16,
    pub score: u16,
    pub vote: Option<Vote>,
    pub signature: Signature,
}

/// A block header, signed by its producer. The block hash is Blake3 of its encoding.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BlockHeader {
    pub chain_id: String,
    pub height: Height,
    pub prev_hash: Hash,
    pub timestamp_ms: u64,
    pub producer: NodeId,
    pub rank: u32,
    pub tx_root: Hash,
    pub report_root: Hash,
    /// Merkle root of the block's evidence ids (Blake3 of each evidence's encoding).
    pub evidence_root: Hash,
    pub state_root: Hash,
    pub signature: Signature,
}

/// A block: its header, the transfers it applies in order, the reports it records and the
/// evidence of offences it commits.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Block {
    pub header: BlockHeader,
    pub transfers: Vec<Transfer>,
    pub reports: Vec<MetricReport>,
    pub evidence: Vec<Evidence>,
}

/// Proof that a validator broke a rule an honest node never breaks: two objects it signed,
/// checkable by anyone with no other context (see `validate::check_evidence`). The pair is in
/// a canonical order (the lower id first, except a surround vote's outer vote, which comes
/// first), so one offence has one encoding.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Evidence {
    /// Two different block headers signed by one producer on the same parent.
    DoubleProduction { first: BlockHeader, second: BlockHeader },
    /// Two reports of one validator whose votes differ but have the same target height.
    DoubleVote { first: MetricReport, second: MetricReport },
    /// A vote whose (source, target) surrounds another vote of the same validator:
    /// `outer.source < inner.source` and `inner.target < outer.target` (heights).
    SurroundVote { outer: MetricReport, inner: MetricReport },
}

impl Evidence {
    /// A short name for logs, traces and RPC.
    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::DoubleProduction { .. } => "double_production",
            Evidence::DoubleVote { .. } => "double_vote",
            Evidence::SurroundVote { .. } => "surround_vote",
        }
    }

    /// The validator the evidence accuses (as it claims; `check_evidence` proves it).
    pub fn offender(&self) -> NodeId {
        match self {
            Evidence::DoubleProduction { first, .. } => first.producer,
            Evidence::DoubleVote { first, .. } => first.node,
            Evidence::SurroundVote { outer, .. } => outer.node,
        }
    }
}

impl Block {
    pub fn height(&self) -> Height {
        self.header.height
    }
}

// ---- Debug and serde forms -------------------------------------------------------------------

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex::encode(&self.0[..6]))
    }
}

impl std::fmt::Display for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sig:{}", hex::encode(&self.0[..6]))
    }
}

impl Hash {
    pub fn from_hex(text: &str) -> Result<Hash, hex::FromHexError> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)?;
        Ok(Hash(bytes))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(self.0))
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            Hash::from_hex(&text).map_err(serde::de::Error::custom)
        } else {
            Ok(Hash(<[u8; 32]>::deserialize(deserializer)?))
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_string())
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            text.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(Address(<[u8; 32]>::deserialize(deserializer)?))
        }
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&hex::encode(self.0))
        } else {
            serde_big_array::BigArray::serialize(&self.0, serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            let mut bytes = [0u8; 64];
            hex::decode_to_slice(&text, &mut bytes).map_err(serde::de::Error::custom)?;
            Ok(Signature(bytes))
        } else {
            Ok(Signature(serde_big_array::BigArray::deserialize(deserializer)?))
        }
    }
}

/// Amounts: a u64 in binary encodings, a string of base units in JSON.
pub mod amount_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(amount: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&amount.to_string())
        } else {
            serializer.serialize_u64(*amount)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(serde::de::Error::custom(format!(
                    "amount {text:?} is not a string of base units (digits only, e.g. \"150000000\" for 1.5 TC)"
                )));
            }
            text.parse::<u64>()
                .map_err(|_| serde::de::Error::custom(format!("amount {text:?} does not fit in 64 bits")))
        } else {
            u64::deserialize(deserializer)
        }
    }
}

/// One account's committed state: its balance and the nonce its next transfer must carry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize)]
pub struct Account {
    #[serde(with = "amount_serde")]
    pub balance: Amount,
    pub nonce: u64,
}
