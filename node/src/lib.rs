//! tinychain-node: what an operator runs. The command line (`cli`, one module per `tinychain`
//! subcommand), the node's home directory and configuration (`home`, `config`, `setup`), the
//! redb StorageEngine (`storage`), live metrics (`metrics`), the event-loop driver that runs a
//! `tinychain-core` node over `tinychain-net` (`driver`), the JSON-RPC server (`rpc`, answering
//! from `query`), and the wallet: its encrypted keystore (`keystore`) and the commands' logic
//! over RPC (`wallet`).

pub mod cli;
pub mod config;
pub mod driver;
pub mod home;
pub mod keystore;
pub mod metrics;
pub mod query;
pub mod rpc;
pub mod setup;
pub mod storage;
pub mod wallet;
