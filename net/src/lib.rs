//! tinychain-net: the TLS 1.3 transport between validators — challenge-response authentication
//! bound to the TLS session, framing, the connection manager and peer discovery. It moves the
//! core's messages between authenticated peers and decides nothing about what to send.
//!
//! Empty until the network issue fills it; the protocol it implements is fixed in DESIGN.md.
