//! tinychain: a permissioned, account-based blockchain node. This root package holds the
//! `tinychain` binary and its command line (`cli`, one module per subcommand), setting networks
//! up (`setup`: node homes, genesis assembly, local testnets), the cross-crate tests in `tests/`
//! and the benchmarks in `benches/`, and re-exports the workspace crates.

pub mod cli;
pub mod setup;

pub use tinychain_core as core;
pub use tinychain_net as net;
pub use tinychain_node as node;
pub use tinychain_rpc as rpc;
pub use tinychain_sim as sim;
pub use tinychain_wallet as wallet;
