//! tinychain-core: the pure, deterministic state machine of a tinychain node.
//!
//! Everything that decides what a node says lives here: transfer and block validation, block
//! application, producer election, fork choice, Casper-FFG finality, the mempool, gossip relay
//! and sync. The crate does no I/O: it reads no clock, network, disk, environment or OS
//! randomness. A driver (the simulator, or the real node) feeds it events with the current time
//! and carries out the actions it returns; see `node` for that contract.

// No unsafe code: what a sanitizer or Miri could find here is in dependencies.
#![forbid(unsafe_code)]

pub mod account_tree;
pub mod address;
pub mod codec;
pub mod crypto;
pub mod driver;
pub mod election;
pub mod evidence;
pub mod finality;
pub mod genesis;
pub mod limits;
pub mod mempool;
pub mod message;
pub mod node;
pub mod pool_sync;
pub mod record;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod types;
pub mod validate;
