//! tinychain-net: the TLS 1.3 transport between validators — challenge-response authentication
//! bound to the TLS session, framing, the connection manager and peer discovery. It moves the
//! core's messages between authenticated peers and decides nothing about what to send.
//!
//! Always built (sans-IO, no async runtime, no TLS; the simulator depends on these alone):
//!
//! - `policy`: every decision about peers (dialing, backoff, admission caps, one link per pair,
//!   bans, peer exchange) as a sans-IO state machine: time and facts in, orders out.
//! - `discovery`: the address book (genesis, seeds, manual, peer exchange) and its persistence.
//!
//! With the `transport` feature (on by default; the server's shell):
//!
//! - `frame`: length-prefixed frames with a hard maximum checked before allocating.
//! - `handshake`: the challenge-response after TLS, as pure functions (no sockets).
//! - `tls`: node certificates, rustls configurations and verifiers that admit only validators.
//! - `wire`: the envelope every frame carries once a link is authenticated.
//! - `handle`: the driver's interface to any transport (events, commands, handle).
//! - `manager`: the TLS transport — the tokio shell that carries out the policy's orders.
//! - `link`: one link's reader and writer tasks and its bounded outbound queue.
//! - `memory`: an in-memory transport with the same interface, for driver tests.

// No unsafe code: what a sanitizer or Miri could find here is in dependencies.
#![forbid(unsafe_code)]

pub mod discovery;
pub mod policy;

#[cfg(feature = "transport")]
pub mod frame;
#[cfg(feature = "transport")]
pub mod handle;
#[cfg(feature = "transport")]
pub mod handshake;
#[cfg(feature = "transport")]
pub mod link;
#[cfg(feature = "transport")]
pub mod manager;
#[cfg(feature = "transport")]
pub mod memory;
#[cfg(feature = "transport")]
pub mod tls;
#[cfg(feature = "transport")]
pub mod wire;
