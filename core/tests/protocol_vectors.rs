//! The protocol's test vectors: the files in `docs/vectors/` and the table of them in
//! `docs/protocol.md` ("Test vectors").
//!
//! Every vector is computed twice: with tinychain-core's own code, and by hand in this file, field
//! by field from the layouts `docs/protocol.md` gives, as an implementation in another language
//! would (the hand code uses only Blake3, Ed25519 verification and byte pushing; it never calls
//! the core's encoders, Merkle functions, election or state root). The two must agree, and both
//! must equal the committed file, so a file cannot merely echo the code. A third test checks that
//! the values `docs/protocol.md` quotes are the files' values.
//!
//! After a deliberate protocol change, write the files again with
//! `cargo test -p tinychain-core --test protocol_vectors -- --ignored write_vector_files`,
//! then update the quoted values in `docs/protocol.md` (the third test names each stale one).

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use tinychain_core::codec;
use tinychain_core::crypto::{Keypair, SignatureCache};
use tinychain_core::election::{self, Demotion};
use tinychain_core::finality::FinalityState;
use tinychain_core::genesis::{genesis_block, Genesis};
use tinychain_core::message::Message;
use tinychain_core::state::{ChainState, RecordedReport, ValidatorRecord};
use tinychain_core::types::{
    Account, Address, Block, BlockHeader, Checkpoint, Evidence, Hash, MetricReport, Signature, Transfer, Vote,
};
use tinychain_core::validate::{self, block_hash, evidence_id, report_id, transfer_id, with_canonical_context};

// ---- the hand-written implementation -------------------------------------------------------

fn blake3(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

fn put_u16(out: &mut Vec<u8>, value: u16) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// `str(x)`: a u64 little-endian byte length, then the bytes.
fn put_str(out: &mut Vec<u8>, text: &str) {
    put_u64(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn put_checkpoint(out: &mut Vec<u8>, checkpoint: &Checkpoint) {
    put_u64(out, checkpoint.height);
    out.extend_from_slice(&checkpoint.hash.0);
}

/// Leaves `Blake3(0x00 ‖ item)`, nodes `Blake3(0x01 ‖ left ‖ right)`, an odd last node carried
/// up unchanged, the empty list `Blake3(0x02)`.
fn merkle(items: &[[u8; 32]]) -> [u8; 32] {
    if items.is_empty() {
        return blake3(&[2]);
    }
    let mut level: Vec<[u8; 32]> = items.iter().map(|item| blake3(&[&[0u8][..], item].concat())).collect();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => blake3(&[&[1u8][..], left, right].concat()),
                [odd] => *odd,
                _ => unreachable!("chunks of two"),
            })
            .collect();
    }
    level[0]
}

fn verify_ed25519(public: &Address, message: &[u8], signature: &Signature) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&public.0) else {
        return false;
    };
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature.0)).is_ok()
}

/// bech32m (BIP 350) with prefix `tc` over the 32 key bytes in 5-bit groups, no witness version.
fn bech32m_address(key: &[u8; 32]) -> String {
    const CHARSET: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    const GENERATOR: [u32; 5] = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];
    const BECH32M_CONSTANT: u32 = 0x2bc830a3;
    let polymod = |values: &[u8]| {
        let mut check = 1u32;
        for value in values {
            let top = check >> 25;
            check = ((check & 0x1ff_ffff) << 5) ^ u32::from(*value);
            for (bit, generator) in GENERATOR.iter().enumerate() {
                if (top >> bit) & 1 == 1 {
                    check ^= generator;
                }
            }
        }
        check
    };
    let mut data = Vec::new();
    let (mut accumulator, mut bits) = (0u32, 0u32);
    for byte in key {
        accumulator = (accumulator << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            data.push(((accumulator >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        data.push(((accumulator << (5 - bits)) & 31) as u8);
    }
    let hrp = b"tc";
    let mut values: Vec<u8> = hrp.iter().map(|c| c >> 5).collect();
    values.push(0);
    values.extend(hrp.iter().map(|c| c & 31));
    values.extend(&data);
    values.extend([0u8; 6]);
    let checksum = polymod(&values) ^ BECH32M_CONSTANT;
    data.extend((0..6).map(|index| ((checksum >> (5 * (5 - index))) & 31) as u8));
    let mut text = String::from("tc1");
    text.extend(data.iter().map(|symbol| CHARSET[*symbol as usize] as char));
    text
}

fn hand_transfer_fields(transfer: &Transfer) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, &transfer.chain_id);
    out.extend_from_slice(&transfer.from.0);
    out.extend_from_slice(&transfer.to.0);
    put_u64(&mut out, transfer.amount);
    put_u64(&mut out, transfer.fee);
    put_u64(&mut out, transfer.nonce);
    out
}

fn hand_transfer_signing(transfer: &Transfer) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, "tinychain/transfer/v1");
    out.extend(hand_transfer_fields(transfer));
    out
}

fn hand_transfer_wire(transfer: &Transfer) -> Vec<u8> {
    [hand_transfer_fields(transfer), transfer.signature.0.to_vec()].concat()
}

fn hand_report_fields(report: &MetricReport) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&report.node.0);
    put_u64(&mut out, report.sequence);
    put_checkpoint(&mut out, &report.tip);
    put_u16(&mut out, report.cpu);
    put_u16(&mut out, report.net);
    put_u16(&mut out, report.score);
    match &report.vote {
        None => out.push(0),
        Some(vote) => {
            out.push(1);
            put_checkpoint(&mut out, &vote.source);
            put_checkpoint(&mut out, &vote.target);
        }
    }
    out
}

fn hand_report_signing(chain_id: &str, report: &MetricReport) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, "tinychain/report/v1");
    put_str(&mut out, chain_id);
    out.extend(hand_report_fields(report));
    out
}

fn hand_report_wire(report: &MetricReport) -> Vec<u8> {
    [hand_report_fields(report), report.signature.0.to_vec()].concat()
}

fn hand_header_fields(header: &BlockHeader) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, &header.chain_id);
    put_u64(&mut out, header.height);
    out.extend_from_slice(&header.prev_hash.0);
    put_u64(&mut out, header.timestamp_ms);
    out.extend_from_slice(&header.producer.0);
    put_u32(&mut out, header.rank);
    for root in [&header.tx_root, &header.report_root, &header.evidence_root, &header.state_root] {
        out.extend_from_slice(&root.0);
    }
    out
}

fn hand_header_signing(header: &BlockHeader) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, "tinychain/block/v1");
    out.extend(hand_header_fields(header));
    out
}

fn hand_header_wire(header: &BlockHeader) -> Vec<u8> {
    [hand_header_fields(header), header.signature.0.to_vec()].concat()
}

fn hand_evidence(evidence: &Evidence) -> Vec<u8> {
    let mut out = Vec::new();
    match evidence {
        Evidence::DoubleProduction { first, second } => {
            put_u32(&mut out, 0);
            out.extend(hand_header_wire(first));
            out.extend(hand_header_wire(second));
        }
        Evidence::DoubleVote { first, second } => {
            put_u32(&mut out, 1);
            out.extend(hand_report_wire(first));
            out.extend(hand_report_wire(second));
        }
        Evidence::SurroundVote { outer, inner } => {
            put_u32(&mut out, 2);
            out.extend(hand_report_wire(outer));
            out.extend(hand_report_wire(inner));
        }
    }
    out
}

/// The offence key and offence height of a piece of evidence.
fn hand_offence(evidence: &Evidence) -> ([u8; 32], u64) {
    let mut out = Vec::new();
    put_str(&mut out, "tinychain/offence-key/v1");
    let vote = |report: &MetricReport| report.vote.expect("evidence reports carry votes");
    let height = match evidence {
        Evidence::DoubleProduction { first, .. } => {
            out.push(0);
            out.extend_from_slice(&first.producer.0);
            out.extend_from_slice(&first.prev_hash.0);
            first.height
        }
        Evidence::DoubleVote { first, .. } => {
            out.push(1);
            out.extend_from_slice(&first.node.0);
            put_u64(&mut out, vote(first).target.height);
            vote(first).target.height
        }
        Evidence::SurroundVote { outer, inner } => {
            out.push(2);
            out.extend_from_slice(&outer.node.0);
            put_u64(&mut out, vote(outer).target.height);
            put_u64(&mut out, vote(inner).target.height);
            vote(outer).target.height
        }
    };
    (blake3(&out), height)
}

fn hand_block(block: &Block) -> Vec<u8> {
    let mut out = hand_header_wire(&block.header);
    put_u64(&mut out, block.transfers.len() as u64);
    for transfer in &block.transfers {
        out.extend(hand_transfer_wire(transfer));
    }
    put_u64(&mut out, block.reports.len() as u64);
    for report in &block.reports {
        out.extend(hand_report_wire(report));
    }
    put_u64(&mut out, block.evidence.len() as u64);
    for evidence in &block.evidence {
        out.extend(hand_evidence(evidence));
    }
    out
}

fn hand_account_leaf(address: &Address, account: &Account) -> [u8; 32] {
    let mut out = Vec::new();
    put_str(&mut out, "tinychain/account/v1");
    out.extend_from_slice(&address.0);
    put_u64(&mut out, account.balance);
    put_u64(&mut out, account.nonce);
    blake3(&out)
}

fn hand_validator_record(record: &ValidatorRecord) -> Vec<u8> {
    let mut out = Vec::new();
    match &record.latest_report {
        None => out.push(0),
        Some(report) => {
            out.push(1);
            put_u64(&mut out, report.sequence);
            put_checkpoint(&mut out, &report.tip);
            put_u16(&mut out, report.cpu);
            put_u16(&mut out, report.net);
            put_u16(&mut out, report.score);
        }
    }
    match record.missed_turn_at {
        None => out.push(0),
        Some(height) => {
            out.push(1);
            put_u64(&mut out, height);
        }
    }
    put_u64(&mut out, record.blocks_produced);
    match record.jailed_until {
        None => out.push(0),
        Some(height) => {
            out.push(1);
            put_u64(&mut out, height);
        }
    }
    put_u64(&mut out, record.recent_blocks.len() as u64);
    for height in &record.recent_blocks {
        put_u64(&mut out, *height);
    }
    out
}

fn hand_validator_leaf_input(index: u32, record: &ValidatorRecord) -> Vec<u8> {
    let mut out = Vec::new();
    put_str(&mut out, "tinychain/validator/v2");
    put_u32(&mut out, index);
    out.extend(hand_validator_record(record));
    out
}

fn hand_offence_leaf(key: &Hash, height: u64) -> [u8; 32] {
    let mut out = Vec::new();
    put_str(&mut out, "tinychain/offence/v1");
    out.extend_from_slice(&key.0);
    put_u64(&mut out, height);
    blake3(&out)
}

/// The parts of a state root, by hand: (per non-empty bucket its root, accounts root,
/// validators root, offences root, state root).
struct HandStateRoot {
    buckets: BTreeMap<u16, [u8; 32]>,
    accounts_root: [u8; 32],
    validators_root: [u8; 32],
    offences_root: [u8; 32],
    state_root: [u8; 32],
}

fn hand_state_root(
    accounts: &BTreeMap<Address, Account>,
    validators: &[ValidatorRecord],
    offences: &BTreeMap<Hash, u64>,
) -> HandStateRoot {
    let mut leaves_by_bucket: BTreeMap<u16, Vec<[u8; 32]>> = BTreeMap::new();
    // BTreeMap iterates addresses in ascending byte order: the order within a bucket.
    for (address, account) in accounts {
        let bucket = u16::from_be_bytes([address.0[0], address.0[1]]);
        leaves_by_bucket.entry(bucket).or_default().push(hand_account_leaf(address, account));
    }
    let buckets: BTreeMap<u16, [u8; 32]> =
        leaves_by_bucket.iter().map(|(bucket, leaves)| (*bucket, merkle(leaves))).collect();
    let empty_bucket = merkle(&[]);
    let bucket_roots: Vec<[u8; 32]> =
        (0..=u16::MAX).map(|bucket| buckets.get(&bucket).copied().unwrap_or(empty_bucket)).collect();
    let accounts_root = merkle(&bucket_roots);
    let validator_leaves: Vec<[u8; 32]> = validators
        .iter()
        .enumerate()
        .map(|(index, record)| blake3(&hand_validator_leaf_input(index as u32, record)))
        .collect();
    let validators_root = merkle(&validator_leaves);
    let offence_leaves: Vec<[u8; 32]> = offences.iter().map(|(key, height)| hand_offence_leaf(key, *height)).collect();
    let offences_root = merkle(&offence_leaves);
    let state_root = merkle(&[accounts_root, validators_root, offences_root]);
    HandStateRoot { buckets, accounts_root, validators_root, offences_root, state_root }
}

/// The genesis parameters in encoding order: (name, width in bytes, default). `block_reward` is
/// an amount (a JSON string); the others are JSON numbers.
const PARAMETERS: [(&str, usize, u64); 15] = [
    ("block_interval_ms", 8, 2_000),
    ("producer_timeout_ms", 8, 10_000),
    ("block_reward", 8, 1_000_000_000),
    ("max_clock_drift_ms", 8, 1_000),
    ("report_ttl_blocks", 8, 20),
    ("reports_per_validator_per_block_max", 4, 4),
    ("weight_cpu", 8, 1),
    ("weight_net", 8, 1),
    ("block_transfers_max", 4, 10_000),
    ("block_bytes_max", 4, 4_194_304),
    ("jail_blocks", 8, 1_800),
    ("production_window_blocks", 8, 100),
    ("production_cap_fair_shares", 8, 2),
    ("evidence_max_age_blocks", 8, 20_000),
    ("block_evidence_max", 4, 8),
];

/// The genesis file's encoding, from its JSON, with the defaults of parameters it leaves out.
fn hand_genesis_encoding(file: &Value) -> Vec<u8> {
    let address = |text: &Value| hand_address_bytes(text.as_str().expect("an address is text"));
    let amount = |value: &Value| value.as_str().expect("amounts are strings").parse::<u64>().expect("digits");
    let mut out = Vec::new();
    put_str(&mut out, file["chain_id"].as_str().expect("chain_id"));
    put_u64(&mut out, file["genesis_time_ms"].as_u64().expect("genesis_time_ms"));
    let validators = file["validators"].as_array().expect("validators");
    put_u64(&mut out, validators.len() as u64);
    for validator in validators {
        out.extend_from_slice(&address(&validator["id"]));
        put_str(&mut out, validator["name"].as_str().expect("name"));
        put_str(&mut out, validator["addr"].as_str().expect("addr"));
    }
    let no_allocations = Vec::new();
    let allocations = file.get("allocations").and_then(Value::as_array).unwrap_or(&no_allocations);
    put_u64(&mut out, allocations.len() as u64);
    for allocation in allocations {
        out.extend_from_slice(&address(&allocation["address"]));
        put_u64(&mut out, amount(&allocation["amount"]));
    }
    let given = file.get("parameters").cloned().unwrap_or(json!({}));
    for (name, width, default) in PARAMETERS {
        let value = match given.get(name) {
            None => default,
            Some(text @ Value::String(_)) => amount(text),
            Some(number) => number.as_u64().expect("integer parameter"),
        };
        match width {
            4 => put_u32(&mut out, u32::try_from(value).expect("fits its width")),
            _ => put_u64(&mut out, value),
        }
    }
    out
}

/// Decodes `tc1…` text by re-encoding the candidate bytes by hand: the text is the address iff
/// `bech32m_address` of its 32 bytes gives it back.
fn hand_address_bytes(text: &str) -> [u8; 32] {
    let parsed: Address = text.parse().expect("a valid address");
    assert_eq!(bech32m_address(&parsed.0), text, "the hand bech32m encoder gives the same text");
    parsed.0
}

// ---- JSON forms of the inputs and outputs -----------------------------------------------------

fn hex(bytes: impl AsRef<[u8]>) -> Value {
    Value::String(hex::encode(bytes))
}

fn checkpoint_json(checkpoint: &Checkpoint) -> Value {
    json!({"height": checkpoint.height, "hash": hex(checkpoint.hash.0)})
}

fn vote_json(vote: &Option<Vote>) -> Value {
    match vote {
        None => Value::Null,
        Some(vote) => json!({"source": checkpoint_json(&vote.source), "target": checkpoint_json(&vote.target)}),
    }
}

fn transfer_json(transfer: &Transfer) -> Value {
    json!({
        "chain_id": transfer.chain_id,
        "from": hex(transfer.from.0),
        "to": hex(transfer.to.0),
        "amount": transfer.amount,
        "fee": transfer.fee,
        "nonce": transfer.nonce,
        "signature": hex(transfer.signature.0),
        "signing_bytes": hex(hand_transfer_signing(transfer)),
        "encoding": hex(hand_transfer_wire(transfer)),
        "id": hex(transfer_id(transfer).0),
    })
}

fn report_json(chain_id: &str, report: &MetricReport) -> Value {
    json!({
        "node": hex(report.node.0),
        "sequence": report.sequence,
        "tip": checkpoint_json(&report.tip),
        "cpu": report.cpu,
        "net": report.net,
        "score": report.score,
        "vote": vote_json(&report.vote),
        "signature": hex(report.signature.0),
        "signing_bytes": hex(hand_report_signing(chain_id, report)),
        "encoding": hex(hand_report_wire(report)),
        "id": hex(report_id(report).0),
    })
}

fn header_json(header: &BlockHeader) -> Value {
    json!({
        "chain_id": header.chain_id,
        "height": header.height,
        "prev_hash": hex(header.prev_hash.0),
        "timestamp_ms": header.timestamp_ms,
        "producer": hex(header.producer.0),
        "rank": header.rank,
        "tx_root": hex(header.tx_root.0),
        "report_root": hex(header.report_root.0),
        "evidence_root": hex(header.evidence_root.0),
        "state_root": hex(header.state_root.0),
        "signature": hex(header.signature.0),
        "signing_bytes": hex(hand_header_signing(header)),
        "encoding": hex(hand_header_wire(header)),
        "hash": hex(block_hash(header).0),
    })
}

fn evidence_json(chain_id: &str, evidence: &Evidence) -> Value {
    let (key, height) = hand_offence(evidence);
    let (first, second) = match evidence {
        Evidence::DoubleProduction { first, second } => (header_json(first), header_json(second)),
        Evidence::DoubleVote { first, second } => (report_json(chain_id, first), report_json(chain_id, second)),
        Evidence::SurroundVote { outer, inner } => (report_json(chain_id, outer), report_json(chain_id, inner)),
    };
    json!({
        "kind": evidence.kind(),
        "first_or_outer": first,
        "second_or_inner": second,
        "encoding": hex(hand_evidence(evidence)),
        "id": hex(evidence_id(evidence).0),
        "offence_key": hex(key),
        "offence_height": height,
    })
}

fn record_json(index: u32, record: &ValidatorRecord) -> Value {
    let leaf_input = hand_validator_leaf_input(index, record);
    json!({
        "index": index,
        "latest_report": record.latest_report.map(|report| json!({
            "sequence": report.sequence, "tip": checkpoint_json(&report.tip),
            "cpu": report.cpu, "net": report.net, "score": report.score,
        })),
        "missed_turn_at": record.missed_turn_at,
        "blocks_produced": record.blocks_produced,
        "jailed_until": record.jailed_until,
        "recent_blocks": record.recent_blocks,
        "record_encoding": hex(hand_validator_record(record)),
        "leaf_input": hex(&leaf_input),
        "leaf": hex(blake3(&leaf_input)),
    })
}

// ---- the vectors ----------------------------------------------------------------------------

/// Secret seeds of the vectors' keys (Ed25519 seeds as RFC 8032 defines them).
fn key(seed_byte: u8) -> Keypair {
    Keypair::from_secret_bytes(&[seed_byte; 32])
}

const ALPHA_SEED: u8 = 0x01;
const BETA_SEED: u8 = 0x02;
const GAMMA_SEED: u8 = 0x03;
const SENDER_SEED: u8 = 0x10;

/// The small genesis of the genesis and block vectors, as its file says it: some parameters
/// given, the rest left to their defaults.
fn genesis_file() -> Value {
    json!({
        "chain_id": "vector-chain",
        "genesis_time_ms": 1_767_225_600_000u64,
        "validators": [
            {"id": key(ALPHA_SEED).address().to_string(), "name": "alpha", "addr": "10.0.0.1:7740"},
            {"id": key(BETA_SEED).address().to_string(), "name": "beta", "addr": "10.0.0.2:7740"},
            {"id": key(GAMMA_SEED).address().to_string(), "name": "gamma", "addr": "node-c.example:7740"},
        ],
        "allocations": [
            {"address": key(SENDER_SEED).address().to_string(), "amount": "500000000000"},
            {"address": key(ALPHA_SEED).address().to_string(), "amount": "1"},
        ],
        "parameters": {
            "block_interval_ms": 1000,
            "producer_timeout_ms": 5000,
            "block_reward": "700000000",
            "reports_per_validator_per_block_max": 2,
            "block_bytes_max": 1_048_576,
            "jail_blocks": 50,
        },
    })
}

fn parse_genesis(file: &Value) -> Genesis {
    let genesis: Genesis = serde_json::from_value(file.clone()).expect("the vector genesis parses");
    genesis.validate().expect("the vector genesis is valid");
    genesis
}

fn genesis_vector() -> Value {
    let file = genesis_file();
    let genesis = parse_genesis(&file);
    let encoding = codec::encode(&genesis);
    assert_eq!(hand_genesis_encoding(&file), encoding, "genesis encoding");
    let spec_hash = genesis.spec_hash();
    assert_eq!(blake3(&encoding), spec_hash.0);

    // The same genesis with no "parameters" at all: every parameter is encoded, at its default.
    let mut bare_file = file.clone();
    bare_file.as_object_mut().expect("an object").remove("parameters");
    let bare = parse_genesis(&bare_file);
    assert_eq!(hand_genesis_encoding(&bare_file), codec::encode(&bare));
    let mut spelled_out = bare_file.clone();
    spelled_out["parameters"] = serde_json::to_value(&bare.parameters).expect("parameters serialise");
    assert_eq!(parse_genesis(&spelled_out).spec_hash(), bare.spec_hash(), "a default left out = spelled out");

    // The genesis block: height 0, prev_hash the spec hash, empty roots, the state after the
    // allocations, producer and signature all zeros.
    let (block, state) = genesis_block(&genesis);
    let header = &block.header;
    let empty = merkle(&[]);
    assert_eq!((header.height, header.prev_hash, header.rank), (0, spec_hash, 0));
    assert_eq!(header.timestamp_ms, genesis.genesis_time_ms);
    assert_eq!((header.producer.0, header.signature.0), ([0; 32], [0; 64]));
    assert_eq!([header.tx_root.0, header.report_root.0, header.evidence_root.0], [empty; 3]);
    let accounts: BTreeMap<Address, Account> = genesis
        .allocations
        .iter()
        .map(|allocation| (allocation.address, Account { balance: allocation.amount, nonce: 0 }))
        .collect();
    let records = vec![ValidatorRecord::default(); genesis.validators.len()];
    let hand_root = hand_state_root(&accounts, &records, &BTreeMap::new());
    assert_eq!(header.state_root.0, hand_root.state_root, "genesis state root");
    let header_encoding = hand_header_wire(header);
    assert_eq!(codec::encode(header), header_encoding);
    let genesis_hash = blake3(&header_encoding);
    assert_eq!(state.tip, Checkpoint { height: 0, hash: Hash(genesis_hash) });

    let parameters_json = serde_json::to_value(&genesis.parameters).expect("parameters serialise");
    let parameters_as_encoded: Vec<Value> = PARAMETERS
        .iter()
        .map(|(name, width, _)| {
            json!({
                "name": name,
                "width_bytes": width,
                "given": file["parameters"].get(*name).is_some(),
                "value": parameters_json[*name],
            })
        })
        .collect();
    assert_eq!(parameters_json.as_object().expect("an object").len(), PARAMETERS.len(), "every parameter is listed");
    json!({
        "description": "A genesis file with three validators, two allocations and six of its fifteen parameters given (the rest take their defaults), its binary encoding, its spec hash (Blake3 of the encoding, the genesis block's prev_hash), the genesis state root and the genesis block. Also the spec hash of the same file with no parameters object, equal to that of the file with every default spelled out. Validator and allocation keys are the Ed25519 public keys of the 32-byte seeds given.",
        "inputs": {
            "genesis_file": file,
            "key_seeds": {"alpha": hex([ALPHA_SEED; 32]), "beta": hex([BETA_SEED; 32]), "gamma": hex([GAMMA_SEED; 32]), "sender": hex([SENDER_SEED; 32])},
        },
        "outputs": {
            "parameters_as_encoded": parameters_as_encoded,
            "encoding": hex(&encoding),
            "spec_hash": hex(spec_hash.0),
            "spec_hash_without_parameters": hex(bare.spec_hash().0),
            "genesis_state": {
                "accounts_root": hex(hand_root.accounts_root),
                "validators_root": hex(hand_root.validators_root),
                "offences_root": hex(hand_root.offences_root),
                "state_root": hex(hand_root.state_root),
            },
            "genesis_block_header": header_json(header),
            "genesis_hash": hex(genesis_hash),
        },
    })
}

fn state_root_vector() -> Value {
    let address = |first: [u8; 2], fill: u8| {
        let mut bytes = [fill; 32];
        bytes[..2].copy_from_slice(&first);
        Address(bytes)
    };
    let accounts: BTreeMap<Address, Account> = [
        (address([0x00, 0x07], 0x01), Account { balance: 5, nonce: 0 }),
        (address([0x00, 0x07], 0x00), Account { balance: 1_000_000_000, nonce: 3 }),
        (address([0xab, 0xcd], 0xef), Account { balance: 0, nonce: 1 }),
        (address([0xff, 0xff], 0xff), Account { balance: u64::MAX / 4, nonce: 9 }),
    ]
    .into_iter()
    .collect();
    let validators = vec![
        ValidatorRecord {
            latest_report: Some(RecordedReport {
                sequence: 12,
                tip: Checkpoint { height: 44, hash: Hash([0x44; 32]) },
                cpu: 250,
                net: 101,
                score: 175,
            }),
            missed_turn_at: None,
            blocks_produced: 7,
            jailed_until: None,
            recent_blocks: vec![40, 43],
        },
        ValidatorRecord {
            latest_report: None,
            missed_turn_at: Some(41),
            blocks_produced: 0,
            jailed_until: Some(90),
            recent_blocks: Vec::new(),
        },
        ValidatorRecord::default(),
    ];
    let offences: BTreeMap<Hash, u64> = [(Hash([0x0f; 32]), 30), (Hash([0x0e; 32]), 31)].into_iter().collect();
    let tip = Checkpoint { height: 45, hash: Hash([0x45; 32]) };
    let state = ChainState {
        tip,
        tip_timestamp_ms: 0,
        accounts: accounts.clone(),
        validators: validators.clone(),
        finality: FinalityState::at_genesis(tip),
        supply: accounts.values().map(|account| account.balance).sum(),
        offences: offences.clone(),
        account_tree: Default::default(),
    };
    let hand = hand_state_root(&accounts, &validators, &offences);
    assert_eq!(state.root().0, hand.state_root, "state root");
    assert_eq!(
        tinychain_core::account_tree::accounts_root(&accounts, &BTreeMap::new()).0,
        hand.accounts_root,
        "accounts root"
    );
    let account_rows: Vec<Value> = accounts
        .iter()
        .map(|(address, account)| {
            let mut leaf_input = Vec::new();
            put_str(&mut leaf_input, "tinychain/account/v1");
            leaf_input.extend_from_slice(&address.0);
            put_u64(&mut leaf_input, account.balance);
            put_u64(&mut leaf_input, account.nonce);
            json!({
                "address": hex(address.0),
                "bucket": u16::from_be_bytes([address.0[0], address.0[1]]),
                "balance": account.balance,
                "nonce": account.nonce,
                "leaf_input": hex(&leaf_input),
                "leaf": hex(hand_account_leaf(address, account)),
            })
        })
        .collect();
    let offence_rows: Vec<Value> = offences
        .iter()
        .map(|(key, height)| json!({"key": hex(key.0), "height": height, "leaf": hex(hand_offence_leaf(key, *height))}))
        .collect();
    json!({
        "description": "A state with four accounts (two in bucket 7), three validator records (one with a latest report, production window and counter; one with a missed turn and a jail and no report; one empty) and two committed offences: every leaf, each non-empty bucket's root, the three sub-roots and the state root. Empty buckets have the empty tree's root.",
        "inputs": {
            "accounts": account_rows.iter().map(|row| json!({"address": row["address"], "balance": row["balance"], "nonce": row["nonce"]})).collect::<Vec<_>>(),
            "validators": validators.iter().enumerate().map(|(index, record)| {
                let mut row = record_json(index as u32, record);
                let object = row.as_object_mut().expect("an object");
                object.retain(|name, _| !["record_encoding", "leaf_input", "leaf"].contains(&name.as_str()));
                row
            }).collect::<Vec<_>>(),
            "offences": offences.iter().map(|(key, height)| json!({"key": hex(key.0), "height": height})).collect::<Vec<_>>(),
        },
        "outputs": {
            "account_leaves": account_rows,
            "bucket_roots": hand.buckets.iter().map(|(bucket, root)| json!({"bucket": bucket, "root": hex(root)})).collect::<Vec<_>>(),
            "empty_bucket_root": hex(merkle(&[])),
            "accounts_root": hex(hand.accounts_root),
            "validator_leaves": validators.iter().enumerate().map(|(index, record)| record_json(index as u32, record)).collect::<Vec<_>>(),
            "validators_root": hex(hand.validators_root),
            "offence_leaves": offence_rows,
            "offences_root": hex(hand.offences_root),
            "state_root": hex(hand.state_root),
        },
    })
}

fn signed_report(
    chain_id: &str,
    key: &Keypair,
    sequence: u64,
    tip: Checkpoint,
    cpu: u16,
    net: u16,
    vote: Option<Vote>,
) -> MetricReport {
    // Score with the genesis weights (1 and 1 here): (cpu + net) / 2, rounded down.
    let mut report = MetricReport {
        node: key.address(),
        sequence,
        tip,
        cpu,
        net,
        score: (cpu + net) / 2,
        vote,
        signature: Signature::default(),
    };
    report.signature = key.sign(&codec::report_signing_bytes(chain_id, &report));
    report
}

/// Everything the block vector builds: the chain of three blocks and its last state.
struct BlockChain {
    genesis: Genesis,
    blocks: Vec<Arc<Block>>,
    hashes: Vec<Hash>,
    state: ChainState,
}

fn block_chain() -> BlockChain {
    let genesis = parse_genesis(&genesis_file());
    let chain_id = genesis.chain_id.clone();
    let keys = [key(ALPHA_SEED), key(BETA_SEED), key(GAMMA_SEED)];
    let key_of = |node: &Address| keys.iter().find(|key| key.address() == *node).expect("a validator").clone();
    let cache = SignatureCache::new(1_000);
    let (block0, mut state) = genesis_block(&genesis);
    let mut blocks = vec![Arc::new(block0)];
    let mut hashes = vec![state.tip.hash];
    let interval = genesis.parameters.block_interval_ms;

    // Block 1: empty, by rank 0.
    let producer = election::producer_at_rank(&genesis, &state.validators, &state.tip, 0).expect("rank 0");
    let timestamp_ms = state.tip_timestamp_ms + interval;
    let valid = with_canonical_context(&genesis, &state, &hashes, timestamp_ms, &cache, 1, |context| {
        validate::build_block(context, &key_of(&producer), 0, timestamp_ms, Vec::new(), Vec::new(), Vec::new())
    })
    .expect("block 1 builds");
    let _undo = validate::apply_block(&mut state, &valid);
    blocks.push(valid.block.clone());
    hashes.push(valid.hash);
    let genesis_tip = Checkpoint { height: 0, hash: hashes[0] };
    let tip1 = Checkpoint { height: 1, hash: hashes[1] };

    // Block 2: two transfers, three reports (two voting genesis -> block 1), and two pieces of
    // evidence: gamma signed two headers on the genesis block, beta voted twice at height 1.
    let sender = key(SENDER_SEED);
    let transfers = vec![
        validate::sign_transfer(&sender, &chain_id, keys[1].address(), 250_000_000, 1_000, 0),
        validate::sign_transfer(&sender, &chain_id, Address([0x42; 32]), 1, 0, 1),
    ];
    let reports = vec![
        signed_report(&chain_id, &keys[0], 1, tip1, 200, 100, Some(Vote { source: genesis_tip, target: tip1 })),
        signed_report(&chain_id, &keys[1], 1, tip1, 333, 0, Some(Vote { source: genesis_tip, target: tip1 })),
        signed_report(&chain_id, &keys[2], 1, genesis_tip, 1000, 999, None),
    ];
    let twin = |timestamp_ms: u64, rank: u32| {
        let mut header = BlockHeader {
            chain_id: chain_id.clone(),
            height: 1,
            prev_hash: hashes[0],
            timestamp_ms,
            producer: keys[2].address(),
            rank,
            tx_root: Hash(merkle(&[])),
            report_root: Hash(merkle(&[])),
            evidence_root: Hash(merkle(&[])),
            state_root: Hash([0x5e; 32]),
            signature: Signature::default(),
        };
        header.signature = keys[2].sign(&codec::header_signing_bytes(&header));
        header
    };
    let (mut first, mut second) = (twin(timestamp_ms + 4_000, 1), twin(timestamp_ms + 9_000, 2));
    if block_hash(&first) > block_hash(&second) {
        std::mem::swap(&mut first, &mut second);
    }
    let double_production = Evidence::DoubleProduction { first, second };
    let other_tip1 = Checkpoint { height: 1, hash: Hash([0x77; 32]) };
    let mut first =
        signed_report(&chain_id, &keys[1], 5, tip1, 10, 10, Some(Vote { source: genesis_tip, target: tip1 }));
    let mut second = signed_report(
        &chain_id,
        &keys[1],
        6,
        other_tip1,
        10,
        10,
        Some(Vote { source: genesis_tip, target: other_tip1 }),
    );
    if report_id(&first) > report_id(&second) {
        std::mem::swap(&mut first, &mut second);
    }
    let double_vote = Evidence::DoubleVote { first, second };
    let producer = election::producer_at_rank(&genesis, &state.validators, &state.tip, 0).expect("rank 0");
    let timestamp_ms = state.tip_timestamp_ms + interval;
    let evidence = vec![double_production, double_vote];
    let valid = with_canonical_context(&genesis, &state, &hashes, timestamp_ms, &cache, 1, |context| {
        validate::build_block(context, &key_of(&producer), 0, timestamp_ms, transfers, reports, evidence)
    })
    .expect("block 2 builds");
    // Validation with a fresh cache accepts it.
    let fresh = SignatureCache::new(1_000);
    let checked = with_canonical_context(&genesis, &state, &hashes, timestamp_ms, &fresh, 1, |context| {
        validate::validate_block(context, valid.block.clone())
    })
    .expect("block 2 is valid");
    assert_eq!(checked.hash, valid.hash);
    let _undo = validate::apply_block(&mut state, &valid);
    blocks.push(valid.block.clone());
    hashes.push(valid.hash);
    BlockChain { genesis, blocks, hashes, state }
}

fn block_vector() -> Value {
    let BlockChain { genesis, blocks, hashes, state } = block_chain();
    let chain_id = genesis.chain_id.as_str();
    let block = &blocks[2];
    let header = &block.header;
    let parameters = &genesis.parameters;

    // Every signature verifies over the hand-built bytes.
    assert!(verify_ed25519(&header.producer, &hand_header_signing(header), &header.signature));
    for transfer in &block.transfers {
        assert_eq!(codec::transfer_signing_bytes(transfer), hand_transfer_signing(transfer));
        assert!(verify_ed25519(&transfer.from, &hand_transfer_signing(transfer), &transfer.signature));
        assert_eq!(transfer_id(transfer).0, blake3(&hand_transfer_wire(transfer)));
    }
    for report in &block.reports {
        assert_eq!(codec::report_signing_bytes(chain_id, report), hand_report_signing(chain_id, report));
        assert!(verify_ed25519(&report.node, &hand_report_signing(chain_id, report), &report.signature));
        assert_eq!(report_id(report).0, blake3(&hand_report_wire(report)));
    }
    for evidence in &block.evidence {
        assert_eq!(codec::encode(evidence), hand_evidence(evidence));
        assert_eq!(evidence_id(evidence).0, blake3(&hand_evidence(evidence)));
    }
    assert_eq!(codec::header_signing_bytes(header), hand_header_signing(header));
    assert_eq!(codec::encode(header), hand_header_wire(header));
    assert_eq!(codec::encode(&**block), hand_block(block), "block encoding");
    assert_eq!(block_hash(header).0, blake3(&hand_header_wire(header)));
    assert_eq!(hashes[2], block_hash(header));
    let ids = |items: Vec<[u8; 32]>| merkle(&items);
    assert_eq!(header.tx_root.0, ids(block.transfers.iter().map(|t| blake3(&hand_transfer_wire(t))).collect()));
    assert_eq!(header.report_root.0, ids(block.reports.iter().map(|r| blake3(&hand_report_wire(r))).collect()));
    assert_eq!(header.evidence_root.0, ids(block.evidence.iter().map(|e| blake3(&hand_evidence(e))).collect()));
    // The message that carries it: variant 1 of Message, then the block.
    let message = Message::Block(block.clone()).encode();
    assert_eq!(message, [1u32.to_le_bytes().to_vec(), hand_block(block)].concat());

    // The state after it, by hand: the reward and fees, the transfers, the reports, the
    // production counters and windows, the jails and the offences, then its root.
    let reward = parameters.block_reward;
    let fees: u64 = block.transfers.iter().map(|transfer| transfer.fee).sum();
    let mut accounts: BTreeMap<Address, Account> = genesis
        .allocations
        .iter()
        .map(|allocation| (allocation.address, Account { balance: allocation.amount, nonce: 0 }))
        .collect();
    for (height, producer_fees) in [(1, 0), (2, fees)] {
        let producer = blocks[height].header.producer;
        accounts.entry(producer).or_default().balance += reward + producer_fees;
    }
    for transfer in &block.transfers {
        let sender = accounts.entry(transfer.from).or_default();
        sender.balance -= transfer.amount + transfer.fee;
        sender.nonce += 1;
        accounts.entry(transfer.to).or_default().balance += transfer.amount;
    }
    assert_eq!(state.accounts, accounts, "accounts after block 2");
    let mut records = vec![ValidatorRecord::default(); genesis.validators.len()];
    let index_of = |node: &Address| genesis.validator_index(node).expect("a validator");
    for height in [1u64, 2] {
        let record = &mut records[index_of(&blocks[height as usize].header.producer)];
        record.blocks_produced += 1;
        record.recent_blocks.push(height);
    }
    for report in &block.reports {
        records[index_of(&report.node)].latest_report = Some(RecordedReport {
            sequence: report.sequence,
            tip: report.tip,
            cpu: report.cpu,
            net: report.net,
            score: report.score,
        });
    }
    let mut offences = BTreeMap::new();
    for evidence in &block.evidence {
        records[index_of(&evidence.offender())].jailed_until = Some(header.height + parameters.jail_blocks);
        let (key, height) = hand_offence(evidence);
        offences.insert(Hash(key), height);
    }
    assert_eq!(state.validators, records, "validator records after block 2");
    assert_eq!(state.offences, offences, "offences after block 2");
    let hand = hand_state_root(&accounts, &records, &offences);
    assert_eq!(header.state_root.0, hand.state_root, "state root after block 2");
    // Two votes of three validators: below the quorum of 3 (2N/3 + 1), so only genesis is
    // justified and final.
    assert_eq!(genesis.quorum(), 3);
    assert_eq!((state.finality.justified.height, state.finality.finalized.height), (0, 0));

    json!({
        "description": "Block 2 of the vector genesis's chain (genesis.json; block 1 is empty): two transfers (the second with a zero fee to an address that is not a key), three reports (two voting genesis -> block 1; gamma's score 999.5 rounds down), and two pieces of evidence (gamma's two headers on the genesis block, beta's two votes with target height 1). Each object's signed bytes, encoding and id; the header's; the block's encoding and hash; the Message::Block encoding; the state after the block (accounts, validator records, offences) and its root.",
        "inputs": {
            "genesis": "genesis.json inputs.genesis_file",
            "key_seeds": {"alpha": hex([ALPHA_SEED; 32]), "beta": hex([BETA_SEED; 32]), "gamma": hex([GAMMA_SEED; 32]), "sender": hex([SENDER_SEED; 32])},
            "block_1": header_json(&blocks[1].header),
        },
        "outputs": {
            "header": header_json(header),
            "transfers": block.transfers.iter().map(transfer_json).collect::<Vec<_>>(),
            "reports": block.reports.iter().map(|report| report_json(chain_id, report)).collect::<Vec<_>>(),
            "evidence": block.evidence.iter().map(|evidence| evidence_json(chain_id, evidence)).collect::<Vec<_>>(),
            "block_encoding": hex(hand_block(block)),
            "block_hash": hex(hashes[2].0),
            "message_encoding": hex(&message),
            "state_after": {
                "accounts": accounts.iter().map(|(address, account)| json!({"address": hex(address.0), "balance": account.balance, "nonce": account.nonce})).collect::<Vec<_>>(),
                "validators": records.iter().enumerate().map(|(index, record)| record_json(index as u32, record)).collect::<Vec<_>>(),
                "offences": offences.iter().map(|(key, height)| json!({"key": hex(key.0), "height": height})).collect::<Vec<_>>(),
                "accounts_root": hex(hand.accounts_root),
                "validators_root": hex(hand.validators_root),
                "offences_root": hex(hand.offences_root),
                "state_root": hex(hand.state_root),
            },
        },
    })
}

/// The election's sort key: (0 active, 1 demoted, 2 jailed; the score if active; tie-break hash).
type RankKey = (u8, u16, [u8; 32]);

/// The election by hand, as docs/protocol.md states it: for each validator, its demotion
/// class and reason, then sort.
fn hand_ranking(genesis: &Genesis, records: &[ValidatorRecord], parent: &Checkpoint) -> Vec<(usize, String, [u8; 32])> {
    let parameters = &genesis.parameters;
    let validators = genesis.validators.len() as u64;
    let cap = (parameters.production_cap_fair_shares > 0)
        .then(|| (parameters.production_cap_fair_shares * parameters.production_window_blocks).div_ceil(validators));
    let next_height = parent.height + 1;
    let oldest_in_window = next_height.saturating_sub(parameters.production_window_blocks);
    let mut rows: Vec<(RankKey, usize, String, [u8; 32])> = records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            let mut input = Vec::new();
            put_str(&mut input, "tinychain/election/v1");
            input.extend_from_slice(&parent.hash.0);
            input.extend_from_slice(&genesis.validators[index].id.0);
            let tie_break = blake3(&input);
            let produced =
                record.recent_blocks.iter().filter(|h| **h >= oldest_in_window && **h <= parent.height).count() as u64;
            let (class, reason) = if record.jailed_until.is_some_and(|until| next_height <= until) {
                (2, "jailed")
            } else if let Some(report) = &record.latest_report {
                if record.missed_turn_at.is_some() {
                    (1, "missed_turn")
                } else if parent.height.saturating_sub(report.tip.height) > parameters.report_ttl_blocks {
                    (1, "stale_report")
                } else if cap.is_some_and(|cap| produced >= cap) {
                    (1, "production_cap")
                } else {
                    (0, "active")
                }
            } else {
                (1, "no_report")
            };
            let score = if class == 0 { record.latest_report.map_or(u16::MAX, |report| report.score) } else { 0 };
            ((class, score, tie_break), index, reason.to_string(), tie_break)
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, index, reason, tie_break)| (index, reason, tie_break)).collect()
}

fn demotion_name(demotion: &Option<Demotion>) -> &'static str {
    match demotion {
        None => "active",
        Some(Demotion::NoReport) => "no_report",
        Some(Demotion::StaleReport { .. }) => "stale_report",
        Some(Demotion::MissedTurn { .. }) => "missed_turn",
        Some(Demotion::OverProductionCap { .. }) => "production_cap",
        Some(Demotion::Jailed { .. }) => "jailed",
    }
}

fn election_vector() -> Value {
    let seeds: Vec<u8> = (0x31..=0x39).collect();
    let file = json!({
        "chain_id": "vector-election",
        "genesis_time_ms": 0,
        "validators": seeds.iter().enumerate().map(|(index, seed)| json!({
            "id": key(*seed).address().to_string(), "name": format!("v{index}"), "addr": format!("10.0.1.{index}:7740"),
        })).collect::<Vec<_>>(),
        "parameters": {"production_window_blocks": 10, "production_cap_fair_shares": 2},
    });
    let genesis = parse_genesis(&file);
    let parent = Checkpoint { height: 100, hash: Hash([0x5a; 32]) };
    let report = |score: u16, tip_height: u64| {
        Some(RecordedReport {
            sequence: 3,
            tip: Checkpoint { height: tip_height, hash: Hash([0x01; 32]) },
            cpu: score,
            net: score,
            score,
        })
    };
    let record = |latest_report| ValidatorRecord { latest_report, ..ValidatorRecord::default() };
    let records = vec![
        // v0: active; its old blocks left the window (91..=100).
        ValidatorRecord { recent_blocks: vec![85, 90], blocks_produced: 2, ..record(report(300, 95)) },
        // v1, v2: active with equal scores: the tie-break hash orders them.
        record(report(100, 99)),
        record(report(100, 100)),
        // v3: the best score, but jailed up to 105.
        ValidatorRecord { jailed_until: Some(105), ..record(report(0, 100)) },
        // v4: made 3 of the window's 10 blocks, its cap ⌈2 × 10 / 9⌉ = 3.
        ValidatorRecord { recent_blocks: vec![91, 93, 97], blocks_produced: 3, ..record(report(50, 100)) },
        // v5: its report's tip is 21 blocks below the parent, more than report_ttl_blocks (20).
        record(report(10, 79)),
        // v6: missed its turn at block 98.
        ValidatorRecord { missed_turn_at: Some(98), ..record(report(20, 100)) },
        // v7: its jail ended at the parent (100 < 101); it has no report.
        ValidatorRecord { jailed_until: Some(100), ..ValidatorRecord::default() },
        // v8: jailed up to 101, the block being elected, and no report.
        ValidatorRecord { jailed_until: Some(101), ..ValidatorRecord::default() },
    ];
    assert_eq!(genesis.production_cap_blocks(), Some(3));
    let ranking = election::rank_candidates(&genesis, &records, &parent);
    let hand = hand_ranking(&genesis, &records, &parent);
    assert_eq!(ranking.len(), hand.len());
    for (candidate, (index, reason, tie_break)) in ranking.iter().zip(&hand) {
        assert_eq!(candidate.validator_index as usize, *index, "rank {}", candidate.rank);
        assert_eq!(demotion_name(&candidate.demotion), reason.as_str(), "rank {}", candidate.rank);
        assert_eq!(candidate.tie_break.0, *tie_break);
        assert_eq!(election::tie_break(&parent.hash, &candidate.node).0, *tie_break);
    }
    let reasons: Vec<&str> = hand.iter().map(|(_, reason, _)| reason.as_str()).collect();
    for expected in ["jailed", "no_report", "stale_report", "missed_turn", "production_cap"] {
        assert!(reasons.contains(&expected), "the vector shows {expected}");
    }
    let parent_timestamp_ms = 1_767_225_600_000u64;
    json!({
        "description": "The ranking for block 101 over nine validators (production window 10, cap ⌈2 × 10 / 9⌉ = 3, report_ttl_blocks 20): three active (two with equal scores), one capped, one stale, one that missed its turn, one whose jail just ended and that has no report, and two jailed (one with the best score). Active validators rank by (score, tie-break), demoted ones after them by tie-break, jailed ones last by tie-break; the tie-break is Blake3(str(\"tinychain/election/v1\") ‖ parent hash ‖ node id), lowest first. eligible_at_ms assumes a parent timestamp of 1767225600000.",
        "inputs": {
            "genesis_file": file,
            "key_seeds": seeds.iter().map(|seed| hex([*seed; 32])).collect::<Vec<_>>(),
            "parent": checkpoint_json(&parent),
            "parent_timestamp_ms": parent_timestamp_ms,
            "records": records.iter().enumerate().map(|(index, record)| {
                let mut row = record_json(index as u32, record);
                row.as_object_mut().expect("an object").retain(|name, _| !["record_encoding", "leaf_input", "leaf"].contains(&name.as_str()));
                row
            }).collect::<Vec<_>>(),
        },
        "outputs": {
            "production_cap_blocks": 3,
            "ranking": ranking.iter().map(|candidate| json!({
                "rank": candidate.rank,
                "validator_index": candidate.validator_index,
                "node": hex(candidate.node.0),
                "score": candidate.score,
                "demotion": demotion_name(&candidate.demotion),
                "tie_break": hex(candidate.tie_break.0),
                "produced_in_window": candidate.produced_in_window,
                "eligible_at_ms": election::eligible_at_ms(&genesis.parameters, parent_timestamp_ms, candidate.rank),
            })).collect::<Vec<_>>(),
        },
    })
}

fn surround_vote_vector() -> Value {
    let genesis = parse_genesis(&genesis_file());
    let chain_id = genesis.chain_id.as_str();
    let gamma = key(GAMMA_SEED);
    let checkpoint = |height: u64, byte: u8| Checkpoint { height, hash: Hash([byte; 32]) };
    // Gamma votes 0 -> 3, then 1 -> 2: the first vote surrounds the second (0 < 1 < 2 < 3).
    let outer = signed_report(
        chain_id,
        &gamma,
        8,
        checkpoint(3, 0x33),
        400,
        200,
        Some(Vote { source: checkpoint(0, 0x00), target: checkpoint(3, 0x33) }),
    );
    let inner = signed_report(
        chain_id,
        &gamma,
        9,
        checkpoint(2, 0x22),
        400,
        201,
        Some(Vote { source: checkpoint(1, 0x11), target: checkpoint(2, 0x22) }),
    );
    let evidence = Evidence::SurroundVote { outer: outer.clone(), inner: inner.clone() };
    let facts = validate::check_evidence(&genesis, &evidence, &SignatureCache::new(16)).expect("valid evidence");
    let (key, height) = hand_offence(&evidence);
    assert_eq!((facts.key.0, facts.height, facts.offender), (key, height, gamma.address()));
    assert_eq!(codec::encode(&evidence), hand_evidence(&evidence));
    assert_eq!(evidence_id(&evidence).0, blake3(&hand_evidence(&evidence)));
    for report in [&outer, &inner] {
        assert!(verify_ed25519(&report.node, &hand_report_signing(chain_id, report), &report.signature));
    }
    // The swapped pair is no evidence: the outer vote comes first.
    let swapped = Evidence::SurroundVote { outer: inner, inner: outer };
    assert!(validate::check_evidence(&genesis, &swapped, &SignatureCache::new(16)).is_err());
    // Carried by a message: variant 9, then the evidence.
    let message = Message::Evidence(Box::new(evidence.clone())).encode();
    assert_eq!(message, [9u32.to_le_bytes().to_vec(), hand_evidence(&evidence)].concat());
    json!({
        "description": "A surround vote by gamma of the vector genesis (genesis.json): its report of sequence 8 votes 0 -> 3, its report of sequence 9 votes 1 -> 2, inside it. The evidence's encoding (variant 2, the outer report, the inner report), id, offence key (kind 2, gamma, outer target height 3, inner target height 2) and offence height, and the Message::Evidence encoding. The checkpoint hashes are made up: evidence needs no chain.",
        "inputs": {
            "genesis": "genesis.json inputs.genesis_file",
            "key_seed": hex([GAMMA_SEED; 32]),
        },
        "outputs": {
            "evidence": evidence_json(chain_id, &evidence),
            "message_encoding": hex(&message),
        },
    })
}

fn messages_vector() -> Value {
    let checkpoint = |height: u64, byte: u8| Checkpoint { height, hash: Hash([byte; 32]) };
    let status = Message::Status { tip: checkpoint(7, 0x07), finalized: checkpoint(5, 0x05) };
    let mut hand_status = Vec::new();
    put_u32(&mut hand_status, 3);
    put_checkpoint(&mut hand_status, &checkpoint(7, 0x07));
    put_checkpoint(&mut hand_status, &checkpoint(5, 0x05));
    let get_blocks = Message::GetBlocks { locator: vec![checkpoint(7, 0x07), checkpoint(0, 0x00)] };
    let mut hand_get_blocks = Vec::new();
    put_u32(&mut hand_get_blocks, 4);
    put_u64(&mut hand_get_blocks, 2);
    put_checkpoint(&mut hand_get_blocks, &checkpoint(7, 0x07));
    put_checkpoint(&mut hand_get_blocks, &checkpoint(0, 0x00));
    let announce = Message::PoolAnnounce { ids: vec![Hash([0xaa; 32])], complete: true };
    let mut hand_announce = Vec::new();
    put_u32(&mut hand_announce, 6);
    put_u64(&mut hand_announce, 1);
    hand_announce.extend_from_slice(&[0xaa; 32]);
    hand_announce.push(1);
    let get_pooled = Message::GetPooled { ids: vec![] };
    let mut hand_get_pooled = Vec::new();
    put_u32(&mut hand_get_pooled, 7);
    put_u64(&mut hand_get_pooled, 0);
    // Links of a node of a 10-validator chain linked with validators 0, 2 and 9: bit i % 8 of
    // byte i / 8.
    let links = Message::Links { validators: vec![0b0000_0101, 0b0000_0010] };
    let mut hand_links = Vec::new();
    put_u32(&mut hand_links, 10);
    put_u64(&mut hand_links, 2);
    hand_links.extend_from_slice(&[0x05, 0x02]);
    let empty_blocks = Message::Blocks(Vec::new());
    let mut hand_empty_blocks = Vec::new();
    put_u32(&mut hand_empty_blocks, 5);
    put_u64(&mut hand_empty_blocks, 0);
    let cases = [
        ("status", status, hand_status),
        ("get_blocks", get_blocks, hand_get_blocks),
        ("blocks_empty", empty_blocks, hand_empty_blocks),
        ("pool_announce", announce, hand_announce),
        ("get_pooled_empty", get_pooled, hand_get_pooled),
        ("links", links, hand_links),
    ];
    let mut rows = Vec::new();
    for (name, message, hand) in cases {
        assert_eq!(message.encode(), hand, "{name}");
        assert_eq!(Message::decode(&hand).expect("decodes"), message, "{name}");
        // The frame on a link: u32 big-endian length, then Wire::Core (u32 variant 0) + message.
        let mut frame = ((hand.len() + 4) as u32).to_be_bytes().to_vec();
        put_u32(&mut frame, 0);
        frame.extend_from_slice(&hand);
        rows.push(json!({"message": name, "encoding": hex(&hand), "frame": hex(&frame)}));
    }
    json!({
        "description": "Wire messages with their encoding (a u32 little-endian variant index, then the fields) and the frame that carries each on an authenticated link (u32 big-endian payload length, then the payload: Wire::Core = u32 0, then the message). Status: tip (7, 07…07), final (5, 05…05). GetBlocks: locator [(7, 07…07), (0, 00…00)]. Blocks: empty. PoolAnnounce: one id aa…aa, complete. GetPooled: no ids. Links: a node of a 10-validator chain linked with validators 0, 2 and 9.",
        "outputs": rows,
    })
}

// ---- files, the document, and the tests ------------------------------------------------------

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/vectors")
}

const VECTOR_FILES: [&str; 6] =
    ["genesis.json", "state_root.json", "block.json", "surround_vote.json", "election.json", "messages.json"];

fn all_vectors() -> Vec<(&'static str, Value)> {
    let vectors = vec![
        genesis_vector(),
        state_root_vector(),
        block_vector(),
        surround_vote_vector(),
        election_vector(),
        messages_vector(),
    ];
    VECTOR_FILES.into_iter().zip(vectors).collect()
}

fn read_vector(name: &str) -> Value {
    let path = vectors_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{} is not JSON: {error}", path.display()))
}

#[test]
fn the_code_and_the_hand_built_bytes_reproduce_every_vector_file() {
    for (name, generated) in all_vectors() {
        let file = read_vector(name);
        assert!(
            file == generated,
            "docs/vectors/{name} differs from what the code computes; if the protocol changed on purpose, \
             regenerate (see this file's docs). Computed:\n{}",
            serde_json::to_string_pretty(&generated).expect("serialises")
        );
    }
    let mut listed: Vec<String> = std::fs::read_dir(vectors_dir())
        .expect("docs/vectors exists")
        .map(|entry| entry.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    let mut known: Vec<String> = VECTOR_FILES.iter().map(|name| name.to_string()).collect();
    known.sort();
    assert_eq!(listed, known, "every file in docs/vectors is pinned here");
}

/// Looks a value up in a vector file by a path of object keys and array indexes, `/`-separated.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('/').try_fold(value, |value, part| match part.parse::<usize>() {
        Ok(index) => value.get(index),
        Err(_) => value.get(part),
    })
}

/// The rows of docs/protocol.md's vector table: `| file | path | value |` between the markers.
fn protocol_md_vector_rows() -> Vec<(String, String, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let text = std::fs::read_to_string(&path).expect("docs/protocol.md exists");
    let start = text.find("<!-- vectors:start -->").expect("docs/protocol.md marks its vector table start");
    let end = text.find("<!-- vectors:end -->").expect("docs/protocol.md marks its vector table end");
    text[start..end]
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
            let [file, path, value] = cells[..] else { return None };
            let file = file.trim_matches('`').strip_prefix("docs/vectors/")?.to_string();
            Some((file, path.trim_matches('`').to_string(), value.trim_matches('`').to_string()))
        })
        .collect()
}

#[test]
fn the_values_docs_protocol_md_quotes_are_the_files_values() {
    let rows = protocol_md_vector_rows();
    assert!(rows.len() >= 12, "the table quotes the main outputs: {} rows found", rows.len());
    for (file, path, quoted) in &rows {
        let vector = read_vector(file);
        let value = lookup(&vector, path).unwrap_or_else(|| panic!("docs/protocol.md quotes {file} {path}, absent"));
        let actual = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        assert_eq!(&actual, quoted, "docs/protocol.md quotes {file} {path}");
    }
    let quoted_files: std::collections::BTreeSet<&str> = rows.iter().map(|(file, _, _)| file.as_str()).collect();
    for name in VECTOR_FILES {
        assert!(quoted_files.contains(name), "docs/protocol.md quotes nothing from {name}");
    }
}

#[test]
fn the_address_example_of_docs_protocol_md_is_bech32m_without_a_witness_version() {
    // docs/protocol.md, "Addresses": the address of the key with seed 01…01 (alpha's).
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let text = std::fs::read_to_string(&path).expect("docs/protocol.md exists");
    let alpha = key(ALPHA_SEED).address();
    let written = alpha.to_string();
    assert_eq!(bech32m_address(&alpha.0), written);
    assert_eq!(written.len(), 3 + 52 + 6, "tc1, 52 data symbols, 6 checksum symbols");
    assert!(text.contains(&written), "docs/protocol.md shows alpha's address {written}");
    assert!(text.contains(&hex::encode(alpha.0)), "docs/protocol.md shows alpha's key in hex");
    let all_zero = Address([0; 32]).to_string();
    assert_eq!(bech32m_address(&[0; 32]), all_zero);
    assert!(text.contains(&all_zero), "docs/protocol.md shows the all-zero key's address {all_zero}");
    // A witness-version symbol in front (as segwit addresses have) is not an address.
    let mut with_version = vec![0u8];
    with_version.extend_from_slice(&alpha.0);
    assert_eq!(written.parse::<Address>(), Ok(alpha));
    assert_eq!(written.to_uppercase().parse::<Address>(), Ok(alpha), "the all-upper-case form is the same address");
    let mixed = format!("{}{}", &written[..10], written[10..].to_uppercase());
    assert!(mixed.parse::<Address>().is_err(), "mixed case is refused");
    let segwit_like =
        bech32::encode::<bech32::Bech32m>(bech32::Hrp::parse("tc").expect("hrp"), &with_version).expect("encodes");
    assert!(segwit_like.parse::<Address>().is_err(), "33 bytes are not an address");
}

#[test]
fn accounts_with_nothing_in_them_still_have_leaves_in_the_state_root() {
    // docs/protocol.md, "Applying a block" step 1 and "The state root": an allocation of 0 and
    // a producer credited 0 (block_reward 0, no fees) are accounts of balance 0 and nonce 0, and
    // each has a leaf; an absent address has none.
    let zero = Address([0x42; 32]);
    let mut file = genesis_file();
    file["parameters"]["block_reward"] = json!("0");
    file["allocations"] = json!([
        {"address": key(SENDER_SEED).address().to_string(), "amount": "500000000000"},
        {"address": zero.to_string(), "amount": "0"},
    ]);
    let genesis = parse_genesis(&file);
    let (_, mut state) = genesis_block(&genesis);
    assert_eq!(state.accounts.get(&zero), Some(&Account::default()), "an allocation of 0 is an account");
    let mut records = vec![ValidatorRecord::default(); genesis.validators.len()];
    let hand = hand_state_root(&state.accounts, &records, &BTreeMap::new());
    assert_eq!(state.root().0, hand.state_root);
    let mut without = state.accounts.clone();
    without.remove(&zero);
    assert_ne!(hand_state_root(&without, &records, &BTreeMap::new()).state_root, hand.state_root);

    // Block 1, empty, with no reward: its producer (no validator holds an allocation here) now
    // has an account of balance 0, and the block's state root has its leaf.
    let keys = [key(ALPHA_SEED), key(BETA_SEED), key(GAMMA_SEED)];
    let producer = election::producer_at_rank(&genesis, &state.validators, &state.tip, 0).expect("rank 0");
    assert!(!state.accounts.contains_key(&producer));
    let producer_key = keys.iter().find(|key| key.address() == producer).expect("a validator").clone();
    let timestamp_ms = state.tip_timestamp_ms + genesis.parameters.block_interval_ms;
    let cache = SignatureCache::new(16);
    let hashes = vec![state.tip.hash];
    let valid = with_canonical_context(&genesis, &state, &hashes, timestamp_ms, &cache, 1, |context| {
        validate::build_block(context, &producer_key, 0, timestamp_ms, Vec::new(), Vec::new(), Vec::new())
    })
    .expect("block 1 builds");
    let _undo = validate::apply_block(&mut state, &valid);
    assert_eq!(state.accounts.get(&producer), Some(&Account::default()), "a producer credited 0 is an account");
    let record = &mut records[genesis.validator_index(&producer).expect("a validator")];
    record.blocks_produced = 1;
    record.recent_blocks = vec![1];
    let hand = hand_state_root(&state.accounts, &records, &BTreeMap::new());
    assert_eq!(valid.block.header.state_root.0, hand.state_root);
    let mut without = state.accounts.clone();
    without.remove(&producer);
    assert_ne!(hand_state_root(&without, &records, &BTreeMap::new()).state_root, hand.state_root);
}

/// Writes docs/vectors/*.json from the code (after a deliberate protocol change).
#[test]
#[ignore = "writes docs/vectors: cargo test -p tinychain-core --test protocol_vectors -- --ignored write_vector_files"]
fn write_vector_files() {
    std::fs::create_dir_all(vectors_dir()).expect("docs/vectors can be created");
    for (name, vector) in all_vectors() {
        let text = serde_json::to_string_pretty(&vector).expect("serialises") + "\n";
        std::fs::write(vectors_dir().join(name), text).expect("docs/vectors is writable");
    }
}
