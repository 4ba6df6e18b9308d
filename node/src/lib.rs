//! tinychain-node: the server as a library. The node's home directory and configuration
//! (`home`, `config`), the redb StorageEngine (`storage`), live metrics (`metrics`), the
//! event-loop driver that runs a `tinychain-core` node over `tinychain-net` (`driver`), and the
//! JSON-RPC server (`rpc`, answering from `query`, with the schema of `tinychain-rpc`), which also
//! serves the web explorer page (`explorer`) and the Prometheus metrics (`telemetry`). The
//! `tinychain` command line (the root package) starts it; the wallet is `tinychain-wallet`.

pub mod config;
pub mod driver;
pub mod explorer;
pub mod home;
pub mod metrics;
pub mod query;
pub mod rpc;
pub mod storage;
pub mod telemetry;
