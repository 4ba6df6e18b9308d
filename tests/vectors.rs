//! Test vectors for the exact bytes tinychain signs and hashes, so a wallet written in another
//! language can produce them (docs/protocol.md explains each field).
//! The byte strings are built here by hand, field by field, as a foreign implementation would;
//! signatures are cross-checked with `ring`, an Ed25519 implementation independent of
//! ed25519-dalek.

use tinychain_core::codec::{self, header_signing_bytes, report_signing_bytes, transfer_signing_bytes};
use tinychain_core::crypto::{verify_strict, Keypair};
use tinychain_core::types::{Address, BlockHeader, Checkpoint, Hash, MetricReport, Signature, Transfer, Vote};
use tinychain_core::validate::{block_hash, report_id, transfer_id};

fn string(bytes: &mut Vec<u8>, text: &str) {
    bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
}

fn checkpoint(bytes: &mut Vec<u8>, checkpoint: &Checkpoint) {
    bytes.extend_from_slice(&checkpoint.height.to_le_bytes());
    bytes.extend_from_slice(&checkpoint.hash.0);
}

fn ring_sign(secret: &[u8; 32], message: &[u8]) -> [u8; 64] {
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(secret).expect("a 32-byte seed");
    pair.sign(message).as_ref().try_into().expect("64-byte signature")
}

fn ring_verify(public: &Address, message: &[u8], signature: &Signature) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public.0).verify(message, &signature.0).is_ok()
}

const SENDER_SECRET: [u8; 32] = [0x11; 32];
const PRODUCER_SECRET: [u8; 32] = [0x22; 32];

fn sample_transfer() -> Transfer {
    let sender = Keypair::from_secret_bytes(&SENDER_SECRET);
    let mut transfer = Transfer {
        chain_id: "tinychain-test".into(),
        from: sender.address(),
        to: Address([0xab; 32]),
        amount: 150_000_000,
        fee: 1_000,
        nonce: 7,
        signature: Signature::default(),
    };
    transfer.signature = sender.sign(&transfer_signing_bytes(&transfer));
    transfer
}

#[test]
fn transfer_vector() {
    let transfer = sample_transfer();
    let mut expected = Vec::new();
    string(&mut expected, "tinychain/transfer/v1");
    string(&mut expected, "tinychain-test");
    expected.extend_from_slice(&transfer.from.0);
    expected.extend_from_slice(&[0xab; 32]);
    expected.extend_from_slice(&150_000_000u64.to_le_bytes());
    expected.extend_from_slice(&1_000u64.to_le_bytes());
    expected.extend_from_slice(&7u64.to_le_bytes());
    assert_eq!(transfer_signing_bytes(&transfer), expected);
    // Ed25519 is deterministic: an independent implementation makes the same signature.
    assert_eq!(transfer.signature.0, ring_sign(&SENDER_SECRET, &expected));
    assert!(ring_verify(&transfer.from, &expected, &transfer.signature));
    // The wire (and id) encoding: the same fields without the tag, then the signature.
    let mut wire = Vec::new();
    string(&mut wire, "tinychain-test");
    wire.extend_from_slice(&transfer.from.0);
    wire.extend_from_slice(&[0xab; 32]);
    wire.extend_from_slice(&150_000_000u64.to_le_bytes());
    wire.extend_from_slice(&1_000u64.to_le_bytes());
    wire.extend_from_slice(&7u64.to_le_bytes());
    wire.extend_from_slice(&transfer.signature.0);
    assert_eq!(codec::encode(&transfer), wire);
    assert_eq!(transfer_id(&transfer).0, *blake3::hash(&wire).as_bytes());
    // Pinned values: a change to any of these is a protocol change.
    assert_eq!(transfer.from.to_string(), PINNED_SENDER_ADDRESS);
    assert_eq!(hex::encode(transfer.signature.0), PINNED_TRANSFER_SIGNATURE);
    assert_eq!(transfer_id(&transfer).to_string(), PINNED_TRANSFER_ID);
}

#[test]
fn a_transfer_signed_by_an_independent_implementation_is_accepted() {
    let mut transfer = sample_transfer();
    transfer.nonce = 8;
    transfer.signature = Signature(ring_sign(&SENDER_SECRET, &transfer_signing_bytes(&transfer)));
    assert!(verify_strict(&transfer.from, &transfer_signing_bytes(&transfer), &transfer.signature));
    transfer.amount += 1;
    assert!(!verify_strict(&transfer.from, &transfer_signing_bytes(&transfer), &transfer.signature));
}

#[test]
fn report_vector() {
    let producer = Keypair::from_secret_bytes(&PRODUCER_SECRET);
    let tip = Checkpoint { height: 12, hash: Hash([0x0c; 32]) };
    let source = Checkpoint { height: 11, hash: Hash([0x0b; 32]) };
    let mut report = MetricReport {
        node: producer.address(),
        sequence: 40,
        tip,
        cpu: 250,
        net: 100,
        score: 175,
        vote: Some(Vote { source, target: tip }),
        signature: Signature::default(),
    };
    let mut expected = Vec::new();
    string(&mut expected, "tinychain/report/v1");
    string(&mut expected, "tinychain-test");
    expected.extend_from_slice(&report.node.0);
    expected.extend_from_slice(&40u64.to_le_bytes());
    checkpoint(&mut expected, &tip);
    expected.extend_from_slice(&250u16.to_le_bytes());
    expected.extend_from_slice(&100u16.to_le_bytes());
    expected.extend_from_slice(&175u16.to_le_bytes());
    expected.push(1); // Some(vote)
    checkpoint(&mut expected, &source);
    checkpoint(&mut expected, &tip);
    assert_eq!(report_signing_bytes("tinychain-test", &report), expected);
    report.signature = Signature(ring_sign(&PRODUCER_SECRET, &expected));
    assert_eq!(report.signature, producer.sign(&expected));
    assert_eq!(report_id(&report).to_string(), PINNED_REPORT_ID);
    // Without a vote the option is one zero byte.
    report.vote = None;
    let unvoted = report_signing_bytes("tinychain-test", &report);
    assert_eq!(unvoted.len(), expected.len() - 2 * 40);
    assert_eq!(unvoted.last(), Some(&0));
}

#[test]
fn header_vector() {
    let producer = Keypair::from_secret_bytes(&PRODUCER_SECRET);
    let mut header = BlockHeader {
        chain_id: "tinychain-test".into(),
        height: 5,
        prev_hash: Hash([0x05; 32]),
        timestamp_ms: 1_700_000_000_000,
        producer: producer.address(),
        rank: 1,
        tx_root: Hash([0x01; 32]),
        report_root: Hash([0x02; 32]),
        evidence_root: Hash([0x04; 32]),
        state_root: Hash([0x03; 32]),
        signature: Signature::default(),
    };
    let mut expected = Vec::new();
    string(&mut expected, "tinychain/block/v1");
    string(&mut expected, "tinychain-test");
    expected.extend_from_slice(&5u64.to_le_bytes());
    expected.extend_from_slice(&[0x05; 32]);
    expected.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
    expected.extend_from_slice(&header.producer.0);
    expected.extend_from_slice(&1u32.to_le_bytes());
    expected.extend_from_slice(&[0x01; 32]);
    expected.extend_from_slice(&[0x02; 32]);
    expected.extend_from_slice(&[0x04; 32]);
    expected.extend_from_slice(&[0x03; 32]);
    assert_eq!(header_signing_bytes(&header), expected);
    header.signature = Signature(ring_sign(&PRODUCER_SECRET, &expected));
    // Block hash = Blake3 of the whole header encoding: the signed fields without the tag,
    // then the 64 signature bytes.
    let mut encoded = expected[8 + "tinychain/block/v1".len()..].to_vec();
    encoded.extend_from_slice(&header.signature.0);
    assert_eq!(codec::encode(&header), encoded);
    assert_eq!(block_hash(&header).to_string(), PINNED_BLOCK_HASH);
}

#[test]
fn merkle_vector() {
    use tinychain_core::crypto::merkle_root;
    let leaf = |byte: u8| Hash([byte; 32]);
    let hash = |bytes: &[u8]| Hash(*blake3::hash(bytes).as_bytes());
    let leaf_hash = |item: Hash| hash(&[&[0u8][..], &item.0].concat());
    let node_hash = |left: Hash, right: Hash| hash(&[&[1u8][..], &left.0, &right.0].concat());
    assert_eq!(merkle_root(&[]), hash(&[2]));
    let (a, b, c) = (leaf_hash(leaf(1)), leaf_hash(leaf(2)), leaf_hash(leaf(3)));
    // Three leaves: the odd one is carried up unchanged.
    assert_eq!(merkle_root(&[leaf(1), leaf(2), leaf(3)]), node_hash(node_hash(a, b), c));
}

const PINNED_SENDER_ADDRESS: &str = "tc16p9tyvn59w62kwsndz75v90yumgzyj4hrgqkhtu9yz3n9jthsums5d8uj5";
const PINNED_TRANSFER_SIGNATURE: &str =
    "ad43499dd80d819c0138f0ec2972d035b6fb88ea38c023bdd64a3d89214846f097d021417be46c25435dcf36457d0cb309c9748257f5fa13fef899445c8e8108";
const PINNED_TRANSFER_ID: &str = "fc1f7252614372f017e123cec41200d51b98429e29373e6abf1b91d1e4fd363a";
const PINNED_REPORT_ID: &str = "cc77195a37fa17bfbab0832a568cb399ebed374d485edca06621ebdd166b5a23";
const PINNED_BLOCK_HASH: &str = "d9aaace3f5bbfc0abe29cddc951c21a586b985aca57f998f04155480febe0ca3";
