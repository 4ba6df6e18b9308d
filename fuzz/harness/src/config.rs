//! Target `config`: a node's `config.toml` text, parsed and validated as `tinychain node` reads
//! it.
//!
//! Oracle beyond "no panic": a valid config written out with `to_commented_toml` (what
//! `tinychain init` writes) and read again is the same config.

use std::path::Path;
use tinychain_node::config::Config;

pub fn run(data: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(data) else { return "not UTF-8".to_string() };
    let path = Path::new("config.toml");
    match Config::from_toml_str(text, path) {
        Err(error) => format!("refused: {error}"),
        Ok(config) => {
            let written = config.to_commented_toml();
            let again = Config::from_toml_str(&written, path)
                .unwrap_or_else(|error| panic!("a written config reads back: {error}\n{written}"));
            assert_eq!(again, config, "a config round-trips through its file");
            "valid".to_string()
        }
    }
}
