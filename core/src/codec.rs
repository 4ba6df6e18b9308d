//! The one place bytes are made: bincode 1.3.3 with explicit options, and the exact byte
//! strings that are signed and hashed. docs/protocol.md documents these bytes, and
//! `tests/vectors.rs` and `core/tests/protocol_vectors.rs` pin them, so a wallet or node written
//! in another language can produce them.
//!
//! Options, everywhere: little-endian fixed-width integers (u16 = 2 bytes, u32 = 4, u64 = 8),
//! strings and sequences prefixed by their length as a u64, `Option` as one byte 0/1 then the
//! value, enums as a u32 variant index, fixed arrays as their raw bytes, a byte limit on every
//! decode (the input's length, checked before decoding), and trailing bytes rejected.

use crate::limits::MESSAGE_BYTES_MAX;
use crate::types::{Block, BlockHeader, MetricReport, Transfer};
use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

/// Domain tags: the first field of every signed byte string, so a signature made for one
/// purpose is never valid for another.
pub const TRANSFER_TAG: &str = "tinychain/transfer/v1";
pub const BLOCK_TAG: &str = "tinychain/block/v1";
pub const REPORT_TAG: &str = "tinychain/report/v1";
/// Used by the network handshake (net crate); listed here so all tags live side by side.
pub const HANDSHAKE_TAG: &str = "tinychain/handshake/v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("cannot decode {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

fn options(limit_bytes: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(limit_bytes)
        .reject_trailing_bytes()
}

/// Encodes any protocol value. Cannot fail for our types (no maps with non-string keys, and
/// the limit is far above any value we build).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    options(u64::MAX).serialize(value).expect("protocol types always encode")
}

/// The length `encode` would produce, computed without allocating the bytes.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    let length = options(u64::MAX).serialized_size(value).expect("protocol types always encode");
    usize::try_from(length).expect("an encoded value fits in memory")
}

/// Decodes one value that must use all of `bytes`, which may be at most `limit_bytes` long.
///
/// The length is checked here, first: bincode 1.3.3 drops its byte limit when it decodes from a
/// slice (bincode-org/bincode#299). Memory stays bounded by the input either way: strings and
/// arrays cannot be longer than the bytes given, and serde caps what a sequence reserves ahead.
pub fn decode_limited<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
    limit_bytes: u64,
) -> Result<T, CodecError> {
    if bytes.len() as u64 > limit_bytes {
        return Err(CodecError::Malformed {
            what,
            reason: format!("{} bytes is over the {limit_bytes}-byte limit", bytes.len()),
        });
    }
    options(limit_bytes).deserialize(bytes).map_err(|error| CodecError::Malformed { what, reason: error.to_string() })
}

/// Decodes one value with the default message limit.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    decode_limited(what, bytes, MESSAGE_BYTES_MAX)
}

/// Writes a transfer's fields in the canonical layout (the same bytes bincode produces, built
/// directly: this is on the hot path of every gossiped transfer, and bincode writes fixed
/// arrays one byte at a time). `codec::tests` checks the two agree.
fn write_transfer_fields(bytes: &mut Vec<u8>, transfer: &Transfer) {
    bytes.extend_from_slice(&(transfer.chain_id.len() as u64).to_le_bytes());
    bytes.extend_from_slice(transfer.chain_id.as_bytes());
    bytes.extend_from_slice(&transfer.from.0);
    bytes.extend_from_slice(&transfer.to.0);
    bytes.extend_from_slice(&transfer.amount.to_le_bytes());
    bytes.extend_from_slice(&transfer.fee.to_le_bytes());
    bytes.extend_from_slice(&transfer.nonce.to_le_bytes());
}

/// The bytes a transfer's signature covers: tag, then every field but the signature.
pub fn transfer_signing_bytes(transfer: &Transfer) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + TRANSFER_TAG.len() + 8 + transfer.chain_id.len() + 88);
    bytes.extend_from_slice(&(TRANSFER_TAG.len() as u64).to_le_bytes());
    bytes.extend_from_slice(TRANSFER_TAG.as_bytes());
    write_transfer_fields(&mut bytes, transfer);
    bytes
}

/// A transfer's wire encoding (`encode(transfer)`), built directly; its Blake3 is the tx id.
pub fn transfer_bytes(transfer: &Transfer) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + transfer.chain_id.len() + 88 + 64);
    write_transfer_fields(&mut bytes, transfer);
    bytes.extend_from_slice(&transfer.signature.0);
    bytes
}

/// Writes a report's fields but the signature in the canonical layout, directly (reports are
/// gossiped every block by every validator; `codec::tests` checks this matches bincode).
fn write_report_fields(bytes: &mut Vec<u8>, report: &MetricReport) {
    let checkpoint = |bytes: &mut Vec<u8>, checkpoint: &crate::types::Checkpoint| {
        bytes.extend_from_slice(&checkpoint.height.to_le_bytes());
        bytes.extend_from_slice(&checkpoint.hash.0);
    };
    bytes.extend_from_slice(&report.node.0);
    bytes.extend_from_slice(&report.sequence.to_le_bytes());
    checkpoint(bytes, &report.tip);
    bytes.extend_from_slice(&report.cpu.to_le_bytes());
    bytes.extend_from_slice(&report.net.to_le_bytes());
    bytes.extend_from_slice(&report.score.to_le_bytes());
    match &report.vote {
        None => bytes.push(0),
        Some(vote) => {
            bytes.push(1);
            checkpoint(bytes, &vote.source);
            checkpoint(bytes, &vote.target);
        }
    }
}

/// The bytes a metric report's signature covers: tag, chain id, then every field but the
/// signature.
pub fn report_signing_bytes(chain_id: &str, report: &MetricReport) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + REPORT_TAG.len() + 8 + chain_id.len() + 160);
    bytes.extend_from_slice(&(REPORT_TAG.len() as u64).to_le_bytes());
    bytes.extend_from_slice(REPORT_TAG.as_bytes());
    bytes.extend_from_slice(&(chain_id.len() as u64).to_le_bytes());
    bytes.extend_from_slice(chain_id.as_bytes());
    write_report_fields(&mut bytes, report);
    bytes
}

/// A report's encoding (`encode(report)`), built directly; its Blake3 is the report id.
pub fn report_bytes(report: &MetricReport) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(224);
    write_report_fields(&mut bytes, report);
    bytes.extend_from_slice(&report.signature.0);
    bytes
}

/// Writes a header's fields but the signature in the canonical layout, directly (every block
/// is hashed at each of its deliveries; `codec::tests` checks this matches bincode).
fn write_header_fields(bytes: &mut Vec<u8>, header: &BlockHeader) {
    bytes.extend_from_slice(&(header.chain_id.len() as u64).to_le_bytes());
    bytes.extend_from_slice(header.chain_id.as_bytes());
    bytes.extend_from_slice(&header.height.to_le_bytes());
    bytes.extend_from_slice(&header.prev_hash.0);
    bytes.extend_from_slice(&header.timestamp_ms.to_le_bytes());
    bytes.extend_from_slice(&header.producer.0);
    bytes.extend_from_slice(&header.rank.to_le_bytes());
    bytes.extend_from_slice(&header.tx_root.0);
    bytes.extend_from_slice(&header.report_root.0);
    bytes.extend_from_slice(&header.evidence_root.0);
    bytes.extend_from_slice(&header.state_root.0);
}

/// The bytes a block producer signs: tag, then every header field but the signature.
pub fn header_signing_bytes(header: &BlockHeader) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + BLOCK_TAG.len() + HEADER_FIELDS_FIXED_BYTES + header.chain_id.len());
    bytes.extend_from_slice(&(BLOCK_TAG.len() as u64).to_le_bytes());
    bytes.extend_from_slice(BLOCK_TAG.as_bytes());
    write_header_fields(&mut bytes, header);
    bytes
}

/// A header's encoding (`encode(header)`), built directly; its Blake3 is the block hash.
pub fn header_bytes(header: &BlockHeader) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(header_encoded_len(header));
    write_header_fields(&mut bytes, header);
    bytes.extend_from_slice(&header.signature.0);
    bytes
}

/// A header's fields but the chain id's bytes and the signature: the chain id's length, height,
/// previous hash, timestamp, producer, rank and the four roots.
const HEADER_FIELDS_FIXED_BYTES: usize = 8 + 8 + 32 + 8 + 32 + 4 + 4 * 32;

/// `encoded_len` of each value below, computed from the layout (module docs) rather than by
/// walking the value: a block's size is checked at every validation. `codec::tests` checks each
/// against `encoded_len`.
pub fn header_encoded_len(header: &BlockHeader) -> usize {
    HEADER_FIELDS_FIXED_BYTES + header.chain_id.len() + 64
}

pub fn transfer_encoded_len(transfer: &Transfer) -> usize {
    8 + transfer.chain_id.len() + 32 + 32 + 8 + 8 + 8 + 64
}

pub fn report_encoded_len(report: &MetricReport) -> usize {
    let vote_bytes = if report.vote.is_some() { 2 * (8 + 32) } else { 0 };
    32 + 8 + (8 + 32) + 3 * 2 + 1 + vote_bytes + 64
}

pub fn block_encoded_len(block: &Block) -> usize {
    let transfers: usize = block.transfers.iter().map(transfer_encoded_len).sum();
    let reports: usize = block.reports.iter().map(report_encoded_len).sum();
    // Evidence is rare (one piece per offence), so it is simply sized by walking it.
    let evidence: usize = block.evidence.iter().map(encoded_len).sum();
    header_encoded_len(&block.header) + 8 + transfers + 8 + reports + 8 + evidence
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Address, Signature};
    use crate::types::{Checkpoint, Hash, Vote};

    /// A sample report, with or without a vote (whose target is its tip).
    fn sample_report(voted: bool) -> MetricReport {
        let tip = Checkpoint { height: 9, hash: Hash([3; 32]) };
        MetricReport {
            node: Address([1; 32]),
            sequence: 7,
            tip,
            cpu: 10,
            net: 20,
            score: 15,
            vote: voted.then_some(Vote { source: Checkpoint { height: 8, hash: Hash([2; 32]) }, target: tip }),
            signature: Signature([5; 64]),
        }
    }

    fn sample_transfer(chain_id: &str, signature_byte: u8) -> Transfer {
        Transfer {
            chain_id: chain_id.into(),
            from: Address([1; 32]),
            to: Address([2; 32]),
            amount: 3,
            fee: 4,
            nonce: 5,
            signature: Signature([signature_byte; 64]),
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = encode(&7u64);
        bytes.push(0);
        assert!(decode::<u64>("u64", &bytes).is_err());
    }

    #[test]
    fn input_longer_than_the_limit_is_rejected() {
        // A well-formed value that is simply too long: bincode alone would accept it.
        let bytes = encode(&vec![7u8; 2_000]);
        assert!(decode_limited::<Vec<u8>>("vec", &bytes, 1_024).is_err());
        assert_eq!(decode_limited::<Vec<u8>>("vec", &bytes, 4_096), Ok(vec![7u8; 2_000]));
    }

    #[test]
    fn length_prefix_beyond_the_limit_is_rejected_before_allocating() {
        // A vector claiming 2^40 elements in 8 bytes of input.
        let bytes = (1u64 << 40).to_le_bytes();
        let result = decode_limited::<Vec<u8>>("vec", &bytes, 1024);
        assert!(result.is_err());
    }

    #[test]
    fn direct_header_writers_and_sizes_match_bincode() {
        use crate::types::Evidence;
        let header = BlockHeader {
            chain_id: "chain-x".into(),
            height: 7,
            prev_hash: Hash([1; 32]),
            timestamp_ms: 123_456,
            producer: Address([2; 32]),
            rank: 3,
            tx_root: Hash([4; 32]),
            report_root: Hash([5; 32]),
            evidence_root: Hash([6; 32]),
            state_root: Hash([7; 32]),
            signature: Signature([8; 64]),
        };
        assert_eq!(header_bytes(&header), encode(&header));
        assert_eq!(header_encoded_len(&header), encoded_len(&header));
        let expected = encode(&(
            BLOCK_TAG,
            &header.chain_id,
            header.height,
            &header.prev_hash,
            header.timestamp_ms,
            &header.producer,
            header.rank,
            &header.tx_root,
            &header.report_root,
            &header.evidence_root,
            &header.state_root,
        ));
        assert_eq!(header_signing_bytes(&header), expected);

        let voted = sample_report(true);
        let transfer = sample_transfer("chain-x", 6);
        let mut block = Block { header, transfers: Vec::new(), reports: Vec::new(), evidence: Vec::new() };
        assert_eq!(block_encoded_len(&block), encoded_len(&block), "an empty block");
        block.transfers = vec![transfer.clone(), Transfer { chain_id: "c".into(), ..transfer.clone() }];
        block.reports = vec![sample_report(false), voted.clone()];
        block.evidence = vec![Evidence::DoubleVote { first: voted.clone(), second: sample_report(false) }];
        assert_eq!(transfer_encoded_len(&transfer), encoded_len(&transfer));
        assert_eq!(report_encoded_len(&voted), encoded_len(&voted));
        assert_eq!(report_encoded_len(&sample_report(false)), encoded_len(&sample_report(false)));
        assert_eq!(block_encoded_len(&block), encoded_len(&block), "a block with every part");
    }

    #[test]
    fn direct_report_writers_match_bincode() {
        let mut report = sample_report(true);
        for _ in 0..2 {
            assert_eq!(report_bytes(&report), encode(&report));
            let expected = encode(&(
                REPORT_TAG,
                "chain",
                &report.node,
                report.sequence,
                &report.tip,
                report.cpu,
                report.net,
                report.score,
                &report.vote,
            ));
            assert_eq!(report_signing_bytes("chain", &report), expected);
            report.vote = None;
        }
    }

    #[test]
    fn transfer_signing_bytes_have_the_documented_layout() {
        let transfer = sample_transfer("t", 9);
        let bytes = transfer_signing_bytes(&transfer);
        let mut expected = Vec::new();
        expected.extend_from_slice(&(TRANSFER_TAG.len() as u64).to_le_bytes());
        expected.extend_from_slice(TRANSFER_TAG.as_bytes());
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.extend_from_slice(b"t");
        expected.extend_from_slice(&[1; 32]);
        expected.extend_from_slice(&[2; 32]);
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(&4u64.to_le_bytes());
        expected.extend_from_slice(&5u64.to_le_bytes());
        assert_eq!(bytes, expected);
        // The wire form is the same fields (without the tag) followed by the 64 signature bytes.
        let wire = encode(&transfer);
        assert_eq!(wire.len(), 8 + 1 + 32 + 32 + 8 + 8 + 8 + 64);
        assert_eq!(transfer_bytes(&transfer), wire, "the direct writer matches bincode");
        let tagged = encode(&(TRANSFER_TAG, &transfer.chain_id, &transfer.from, &transfer.to, 3u64, 4u64, 5u64));
        assert_eq!(bytes, tagged, "the direct signing bytes match bincode");
        assert_eq!(encoded_len(&transfer), wire.len());
        assert_eq!(&wire[wire.len() - 64..], &[9; 64]);
    }
}
