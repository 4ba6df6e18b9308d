//! The JSON-RPC 2.0 server over HTTP (jsonrpsee), plus `GET /health` and `GET /metrics`.
//! Methods and error codes are documented in `docs/rpc.md`.
//!
//! (skeleton: the public API is fixed, the bodies are being written)

use crate::query::Call;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};
use tokio::sync::mpsc;

/// Who may call the admin methods (`add_peer`, `remove_peer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminAccess {
    /// Only clients connecting from a loopback address (127.0.0.0/8, ::1).
    #[default]
    Loopback,
    /// Any client that can reach the listen address.
    Any,
    /// No one: the admin methods always answer -32003.
    Off,
}

/// Where the server listens and what it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcConfig {
    pub listen: SocketAddr,
    pub admin: AdminAccess,
    /// Largest request body (bytes); larger requests get HTTP 413.
    pub body_bytes_max: u32,
    /// Most TCP connections open at once; more are closed at accept.
    pub connections_max: u32,
}

/// Default listen address: loopback only, so a node is not reachable from outside unless the
/// operator says so.
pub const LISTEN_DEFAULT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 7545);
pub const BODY_BYTES_MAX_DEFAULT: u32 = 256 * 1024;
pub const CONNECTIONS_MAX_DEFAULT: u32 = 64;

impl Default for RpcConfig {
    fn default() -> Self {
        RpcConfig {
            listen: LISTEN_DEFAULT,
            admin: AdminAccess::Loopback,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(
        "cannot listen for JSON-RPC on {listen}: {source} (is another node or program using this port? set rpc.listen)"
    )]
    Bind { listen: SocketAddr, source: std::io::Error },
    #[error("rpc.{field}: {reason}")]
    BadConfig { field: &'static str, reason: String },
}

/// A running server. Dropping it does not stop it; call `stop`.
pub struct RpcServer {
    local_addr: SocketAddr,
}

impl RpcServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish, then returns.
    pub async fn stop(self) {}
}

/// Binds `config.listen` and serves until `RpcServer::stop`; every method becomes a `Call` sent
/// on `calls`.
pub async fn start(config: RpcConfig, calls: mpsc::Sender<Call>) -> Result<RpcServer, RpcError> {
    let _ = calls;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| RpcError::Bind { listen: config.listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| RpcError::Bind { listen: config.listen, source })?;
    Ok(RpcServer { local_addr })
}
