//! Target `genesis`: a genesis file's text, parsed as `tinychain init --genesis` and a starting
//! node read it (JSON naming the bad field, then `Genesis::validate`); a valid one is turned
//! into the genesis block and state.
//!
//! Oracle beyond "no panic": a valid genesis written out and read again is the same genesis,
//! with the same hash.

use std::path::Path;
use tinychain_core::genesis::{genesis_block, Genesis};
use tinychain_node::home::parse_json;

pub fn run(data: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(data) else { return "not UTF-8".to_string() };
    let path = Path::new("genesis.json");
    let genesis: Genesis = match parse_json(text, path) {
        Ok(genesis) => genesis,
        Err(error) => return format!("unparsable: {error}"),
    };
    if let Err(error) = genesis.validate() {
        return format!("invalid: {error}");
    }
    let written = serde_json::to_string_pretty(&genesis).expect("a genesis serialises");
    let again: Genesis = parse_json(&written, path).expect("a written genesis parses");
    assert_eq!(again, genesis, "a genesis round-trips through its file");
    assert_eq!(again.spec_hash(), genesis.spec_hash(), "and keeps its hash");
    let (block, state) = genesis_block(&genesis);
    assert_eq!(block.header.height, 0);
    assert_eq!(state.tip.height, 0);
    "valid".to_string()
}
