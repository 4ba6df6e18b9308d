//! tinychain: a permissioned, account-based blockchain node. This root package holds the
//! `tinychain` binary, the cross-crate tests in `tests/` and the benchmarks in `benches/`, and
//! re-exports the workspace crates.

pub use tinychain_core as core;
pub use tinychain_net as net;
pub use tinychain_node as node;
pub use tinychain_sim as sim;
