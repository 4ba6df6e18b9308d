//! tinychain-net: the TLS 1.3 transport between validators — challenge-response authentication
//! bound to the TLS session, framing, the connection manager and peer discovery. It moves the
//! core's messages between authenticated peers and decides nothing about what to send.
//!
//! - `frame`: length-prefixed frames with a hard maximum checked before allocating.
//! - `handshake`: the challenge-response after TLS, as pure functions (no sockets).
//! - `tls`: node certificates, rustls configurations and verifiers that admit only validators.

pub mod frame;
pub mod handshake;
pub mod tls;
