//! Target `block_validation`: a block decoded from arbitrary bytes; its evidence checked on its
//! own, its shape checked, and, whatever height it claims, validated as the child of the
//! fixture chain's tip. Nothing may panic, and a block that validates must re-encode to the
//! bytes it came from.

use crate::fixture::chain;
use std::sync::Arc;
use tinychain_core::codec;
use tinychain_core::crypto::SignatureCache;
use tinychain_core::types::Block;
use tinychain_core::validate::{check_block_shape, check_evidence, validate_block, with_canonical_context};

pub fn run(data: &[u8]) -> String {
    let Ok(block) = codec::decode::<Block>("block", data) else { return "undecodable".to_string() };
    let chain = chain();
    let cache = SignatureCache::new(1_000);
    for evidence in &block.evidence {
        let _ = check_evidence(&chain.genesis, evidence, &cache);
    }
    if let Err(error) = check_block_shape(&chain.genesis, &block, &cache) {
        return format!("bad shape: {error}");
    }
    let state = chain.states.last().expect("genesis at least");
    let now_ms = block.header.timestamp_ms;
    let block = Arc::new(block);
    let validated = with_canonical_context(&chain.genesis, state, &chain.canonical, now_ms, &cache, 1, |context| {
        validate_block(context, block.clone())
    });
    match validated {
        Err(error) => format!("invalid: {error}"),
        Ok(valid) => {
            assert_eq!(codec::encode(&*valid.block), data, "a valid block re-encodes to its bytes");
            "valid".to_string()
        }
    }
}
