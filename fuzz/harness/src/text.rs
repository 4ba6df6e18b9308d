//! Target `text`: one line a user types, read as each kind of text the command line and the
//! RPC take: an address (bech32m `tc1...`), an amount in TC, an allocation
//! (`ADDRESS=AMOUNT`), a `host:port`, a validator name and a log filter.
//!
//! Oracle beyond "no panic": an address and an amount that parse are written back to text that
//! parses to the same value, and that text is the canonical form (lowercase address; amount
//! without needless zeros).

use tinychain::setup::{check_validator_name, parse_allocation};
use tinychain_core::types::Address;
use tinychain_node::config::{check_host_port, check_log_filter};
use tinychain_wallet::amount::{format_amount, parse_amount};

pub fn run(data: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(data) else { return "not UTF-8".to_string() };
    let mut parsed = Vec::new();
    if let Ok(address) = text.parse::<Address>() {
        let written = address.to_string();
        assert_eq!(written.parse::<Address>(), Ok(address), "an address round-trips");
        assert_eq!(written, text.to_lowercase(), "an address's text is its lowercase form");
        parsed.push("address");
    }
    if let Ok(amount) = parse_amount(text) {
        let written = format_amount(amount);
        assert_eq!(parse_amount(&written), Ok(amount), "an amount round-trips");
        assert_eq!(format_amount(parse_amount(&written).expect("checked")), written, "the written form is canonical");
        parsed.push("amount");
    }
    if parse_allocation(text).is_ok() {
        parsed.push("allocation");
    }
    if check_host_port(text).is_ok() {
        parsed.push("host:port");
    }
    if check_validator_name(text).is_ok() {
        parsed.push("name");
    }
    // Log filters are parsed by tracing-subscriber, bounded by the line's length.
    if text.len() <= 256 && check_log_filter(text).is_ok() {
        parsed.push("log filter");
    }
    parsed.join(",")
}
