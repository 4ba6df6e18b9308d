//! Target `evidence`: proofs of double production, double votes and surround votes built from
//! the fixture chain's signed headers and freshly signed reports, with fields changed and
//! signers swapped; checked on their own, as part of the next block, and stepped into a node
//! as a gossiped `Message::Evidence`.
//!
//! Oracle beyond "no panic": evidence that passes names a validator of genesis, both of its
//! objects carry that validator's valid signatures, and the same pair in the other order is
//! refused (one offence has one encoding).

use crate::block_mutation::ReportInput;
use crate::fixture::{chain, validator_key_of, Signer};
use crate::ByteFlip;
use tinychain_core::codec::{header_signing_bytes, report_signing_bytes};
use tinychain_core::crypto::{verify_strict, SignatureCache};
use tinychain_core::message::Message;
use tinychain_core::types::{BlockHeader, Evidence, MetricReport};
use tinychain_core::validate::{block_hash, check_evidence, check_evidence_for_block, report_id};

#[derive(arbitrary::Arbitrary, Clone, Debug)]
pub enum EvidenceInput {
    /// Two versions of the fixture header at `height`, signed by `signer` (its producer if
    /// `None`).
    DoubleProduction { height: u8, first: HeaderEdit, second: HeaderEdit, signer: Option<Signer>, swap: bool },
    /// Two reports, as a double vote or (`surround`) a surround vote; `same_signer` makes the
    /// second report's signer the first's, and `same_target` its tip height (what a double vote
    /// needs, and random heights rarely give).
    Votes { surround: bool, first: ReportInput, second: ReportInput, same_signer: bool, same_target: bool, swap: bool },
}

#[derive(arbitrary::Arbitrary, Clone, Debug)]
pub struct HeaderEdit {
    pub timestamp_delta: u16,
    pub rank: Option<u32>,
    pub height_delta: Option<i8>,
    pub prev_flip: Option<ByteFlip>,
    pub tx_root_flip: Option<ByteFlip>,
    pub chain_id: Option<String>,
}

impl HeaderEdit {
    fn apply(&self, header: &mut BlockHeader) {
        header.timestamp_ms = header.timestamp_ms.wrapping_add(u64::from(self.timestamp_delta));
        if let Some(rank) = self.rank {
            header.rank = rank;
        }
        if let Some(delta) = self.height_delta {
            header.height = header.height.wrapping_add_signed(i64::from(delta));
        }
        if let Some(flip) = self.prev_flip {
            flip.apply(&mut header.prev_hash.0);
        }
        if let Some(flip) = self.tx_root_flip {
            flip.apply(&mut header.tx_root.0);
        }
        if let Some(chain_id) = &self.chain_id {
            header.chain_id = chain_id.clone();
        }
    }
}

impl EvidenceInput {
    /// The evidence described: canonical order unless `swap`.
    pub fn build(&self) -> Evidence {
        let chain = chain();
        match self {
            EvidenceInput::DoubleProduction { height, first, second, signer, swap } => {
                let base = chain.block(chain.pick_height(*height)).header.clone();
                let key = match signer {
                    Some(signer) => signer.key(),
                    None => validator_key_of(&base.producer).expect("fixture producers are validators"),
                };
                let sign = |edit: &HeaderEdit| {
                    let mut header = base.clone();
                    edit.apply(&mut header);
                    header.producer = key.address();
                    header.signature = key.sign(&header_signing_bytes(&header));
                    header
                };
                let (mut first, mut second) = (sign(first), sign(second));
                if (block_hash(&first) > block_hash(&second)) != *swap {
                    std::mem::swap(&mut first, &mut second);
                }
                Evidence::DoubleProduction { first, second }
            }
            EvidenceInput::Votes { surround, first, second, same_signer, same_target, swap } => {
                let mut second = second.clone();
                if *same_signer {
                    second.signer = first.signer;
                }
                if *same_target {
                    second.tip_height = first.tip_height;
                }
                let (mut first, mut second) = (first.build(), second.build());
                if *surround {
                    if *swap {
                        std::mem::swap(&mut first, &mut second);
                    }
                    Evidence::SurroundVote { outer: first, inner: second }
                } else {
                    if (report_id(&first) > report_id(&second)) != *swap {
                        std::mem::swap(&mut first, &mut second);
                    }
                    Evidence::DoubleVote { first, second }
                }
            }
        }
    }
}

fn report_signed(report: &MetricReport) -> bool {
    verify_strict(&report.node, &report_signing_bytes(&chain().genesis.chain_id, report), &report.signature)
}

fn header_signed(header: &BlockHeader) -> bool {
    verify_strict(&header.producer, &header_signing_bytes(header), &header.signature)
}

/// The same two objects in the other order.
fn reversed(evidence: &Evidence) -> Evidence {
    match evidence.clone() {
        Evidence::DoubleProduction { first, second } => Evidence::DoubleProduction { first: second, second: first },
        Evidence::DoubleVote { first, second } => Evidence::DoubleVote { first: second, second: first },
        Evidence::SurroundVote { outer, inner } => Evidence::SurroundVote { outer: inner, inner: outer },
    }
}

/// Checks `evidence` every way a node does and returns the verdict.
pub fn check_built(evidence: Evidence) -> String {
    let chain = chain();
    let cache = SignatureCache::new(100);
    let verdict = match check_evidence(&chain.genesis, &evidence, &cache) {
        Err(error) => format!("refused: {error}"),
        Ok(facts) => {
            assert_eq!(facts.offender, evidence.offender(), "evidence accuses whom it names");
            assert_eq!(chain.genesis.validator_index(&facts.offender), Some(facts.validator_index as usize));
            let signed = match &evidence {
                Evidence::DoubleProduction { first, second } => header_signed(first) && header_signed(second),
                Evidence::DoubleVote { first, second } => report_signed(first) && report_signed(second),
                Evidence::SurroundVote { outer, inner } => report_signed(outer) && report_signed(inner),
            };
            assert!(signed, "evidence that passes carries the offender's valid signatures");
            assert!(
                check_evidence(&chain.genesis, &reversed(&evidence), &cache).is_err(),
                "one offence has one encoding: the other order is refused"
            );
            let tip = chain.states.last().expect("genesis at least");
            match check_evidence_for_block(&chain.genesis, tip, tip.tip.height + 1, &evidence, &cache) {
                Ok(_) => format!("proves {}", evidence.kind()),
                Err(error) => format!("proves {} but not in the next block: {error}", evidence.kind()),
            }
        }
    };
    // Only evidence that proves something gets past a node's first check (the same
    // `check_evidence`); stepping the rest would cost a chain replay each to learn nothing.
    if verdict.starts_with("proves") {
        crate::message_step::step_message(Message::Evidence(Box::new(evidence)));
    }
    verdict
}

pub fn run(data: &[u8]) -> String {
    match crate::structured::<EvidenceInput>(data) {
        None => "not an input".to_string(),
        Some(input) => check_built(input.build()),
    }
}
