//! A block decoded from arbitrary bytes, shape-checked and, if it extends genesis, fully
//! validated; evidence inside it is checked on its own too. Nothing may panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use tinychain_core::codec;
use tinychain_core::crypto::SignatureCache;
use tinychain_core::genesis::genesis_block;
use tinychain_core::testkit::fast_genesis;
use tinychain_core::types::Block;
use tinychain_core::validate::{check_block_shape, check_evidence, validate_block, with_canonical_context};

fuzz_target!(|data: &[u8]| {
    let Ok(block) = codec::decode::<Block>("block", data) else { return };
    let genesis = fast_genesis(4, 4);
    let cache = SignatureCache::new(1_000);
    for evidence in &block.evidence {
        let _ = check_evidence(&genesis, evidence, &cache);
    }
    let _ = check_block_shape(&genesis, &block, &cache);
    let (_, state) = genesis_block(&genesis);
    let canonical = [state.tip.hash];
    let now_ms = block.header.timestamp_ms;
    let _ = with_canonical_context(&genesis, &state, &canonical, now_ms, &cache, 1, |context| {
        validate_block(context, Arc::new(block))
    });
});
