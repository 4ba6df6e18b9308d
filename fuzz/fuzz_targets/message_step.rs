//! Arbitrary bytes from an authenticated peer: decoded as a `Message`, then stepped into a core
//! that holds a short chain. Nothing may panic; a decode error is the normal outcome.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use tinychain_core::crypto::SignatureCache;
use tinychain_core::message::Message;
use tinychain_core::node::Event;
use tinychain_core::testkit::{fast_genesis, validator_key, validator_node, LocalNet};
use tinychain_core::types::Block;

const VALIDATORS: usize = 4;

/// Blocks of a short healthy chain, made once.
fn chain() -> &'static Vec<Arc<Block>> {
    static CHAIN: OnceLock<Vec<Arc<Block>>> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let mut net = LocalNet::new(fast_genesis(VALIDATORS, 4), 5);
        net.run_until(2_000);
        let tip = net.nodes[0].tip().height;
        (1..=tip).filter_map(|height| net.storage[0].block_at(height)).collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data) else { return };
    let genesis = fast_genesis(VALIDATORS, 4);
    let cache = Arc::new(SignatureCache::new(10_000));
    let mut node = validator_node(&genesis, 0, &cache);
    let peer = validator_key(1).address();
    let _ = node.step(0, Event::PeerConnected { peer });
    let now_ms = chain().last().map_or(0, |block| block.header.timestamp_ms);
    let _ = node.step(now_ms, Event::MessageReceived { from: peer, message: Message::Blocks(chain().clone()) });
    let _ = node.step(now_ms, Event::MessageReceived { from: peer, message });
    let _ = node.step(now_ms + 1_000, Event::Tick);
});
