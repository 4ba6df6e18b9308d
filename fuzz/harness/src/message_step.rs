//! Target `message_step`: arbitrary bytes from an authenticated peer, decoded as a `Message`
//! and stepped into a validator that holds the fixture chain, then a tick. Nothing may panic;
//! a decode error is the usual outcome.

use crate::fixture::{cache, chain, VALIDATORS};
use tinychain_core::message::Message;
use tinychain_core::node::{Event, Node};
use tinychain_core::testkit::{validator_key, validator_node};

/// Validator 0 at the fixture chain's tip, linked to validator 1; and the time of that tip.
pub fn node_at_tip() -> (Node, u64) {
    let chain = chain();
    let mut node = validator_node(&chain.genesis, 0, &cache());
    let peer = validator_key(1).address();
    let now_ms = chain.blocks.last().map_or(0, |block| block.header.timestamp_ms);
    let _ = node.step(0, Event::PeerConnected { peer });
    let _ = node.step(now_ms, Event::MessageReceived { from: peer, message: Message::Blocks(chain.blocks.clone()) });
    assert_eq!(node.tip().height, chain.tip_height(), "the node took the fixture chain");
    (node, now_ms)
}

/// Steps `message` from validator 1 into a node at the tip, then a tick; returns how many
/// actions the message caused.
pub fn step_message(message: Message) -> usize {
    let (mut node, now_ms) = node_at_tip();
    let from = validator_key(1 % VALIDATORS).address();
    let actions = node.step(now_ms, Event::MessageReceived { from, message });
    let _ = node.step(now_ms + 1_000, Event::Tick);
    actions.len()
}

pub fn run(data: &[u8]) -> String {
    match Message::decode(data) {
        Err(_) => "undecodable".to_string(),
        Ok(message) => {
            let kind = message.kind();
            let actions = step_message(message);
            format!("{kind}: {actions} actions")
        }
    }
}
