//! A small blocking JSON-RPC 2.0 client for one node (`RpcClient`, on `ureq`), with connect and
//! whole-call timeouts and errors that say how far a failed call got: whether the request can
//! have reached the node (`CallFailure`). Any program may use it; the wallet's operations and the
//! testnet runner do.

use crate::WalletError;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Seconds to wait for a TCP connection to the node.
pub const RPC_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Seconds to wait for one whole call.
pub const RPC_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer read from a node.
pub const RPC_ANSWER_BYTES_MAX: u64 = 8 * 1024 * 1024;

/// A blocking JSON-RPC 2.0 client for one node, with connect and whole-call timeouts.
#[derive(Debug)]
pub struct RpcClient {
    url: String,
    agent: ureq::Agent,
    next_id: AtomicU64,
}

/// How far a failed request got: whether the node can have received it.
#[derive(Debug)]
pub(crate) enum CallFailure {
    /// No connection was made: the request certainly did not reach the node.
    NotConnected(String),
    /// The request may have been delivered.
    AfterConnect(String),
    /// The node answered with a JSON-RPC error.
    Node {
        code: i64,
        message: String,
    },
    Http {
        status: u16,
        body: String,
    },
    BadAnswer(String),
}

impl RpcClient {
    /// A client for `url` (`http://host:port`; the node's RPC is plain HTTP, on loopback by
    /// default). Nothing is sent yet.
    pub fn new(url: &str) -> Result<RpcClient, WalletError> {
        RpcClient::with_timeout(url, RPC_CALL_TIMEOUT)
    }

    /// `new` with another bound on each whole call (the testnet runner polls with a short one).
    pub fn with_timeout(url: &str, call_timeout: Duration) -> Result<RpcClient, WalletError> {
        let bad = |detail: &str| WalletError::BadRpcUrl { url: url.to_string(), detail: detail.to_string() };
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(if url.starts_with("https://") {
                bad("https is not supported: the node serves plain HTTP (keep it on loopback or behind a TLS proxy you reach over http)")
            } else {
                bad("write it as http://HOST:PORT, e.g. http://127.0.0.1:7741")
            });
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(bad("the host is missing; write it as http://HOST:PORT"));
        }
        if url.parse::<ureq::http::Uri>().is_err() {
            return Err(bad("not a valid URL"));
        }
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(RPC_CONNECT_TIMEOUT.min(call_timeout)))
            .timeout_global(Some(call_timeout))
            .http_status_as_error(false)
            .build();
        Ok(RpcClient { url: url.to_string(), agent: ureq::Agent::new_with_config(config), next_id: AtomicU64::new(1) })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One call; the result or an error naming the URL and method.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, WalletError> {
        self.call_raw(method, params).map_err(|failure| self.error_of(method, failure))
    }

    /// One call whose answer is deserialized into `T`.
    pub(crate) fn call_as<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, WalletError> {
        let value = self.call(method, params)?;
        serde_json::from_value(value).map_err(|error| WalletError::BadAnswer {
            url: self.url.clone(),
            method: method.to_string(),
            detail: error.to_string(),
        })
    }

    fn error_of(&self, method: &str, failure: CallFailure) -> WalletError {
        let url = self.url.clone();
        let method = method.to_string();
        match failure {
            CallFailure::NotConnected(detail) => WalletError::Unreachable { url, detail },
            CallFailure::AfterConnect(detail) => WalletError::NoAnswer { url, method, detail },
            CallFailure::Node { code, message } => WalletError::NodeError { url, method, code, message },
            CallFailure::Http { status, body } => WalletError::HttpStatus { url, method, status, body },
            CallFailure::BadAnswer(detail) => WalletError::BadAnswer { url, method, detail },
        }
    }

    pub(crate) fn call_raw(&self, method: &str, params: Value) -> Result<Value, CallFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut response = self.agent.post(&self.url).send_json(&request).map_err(transport_failure)?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(RPC_ANSWER_BYTES_MAX)
            .read_to_vec()
            .map_err(|error| CallFailure::AfterConnect(describe_transport_error(&error)))?;
        let body: Value = match serde_json::from_slice(&bytes) {
            Ok(body) => body,
            Err(error) if status == 200 => return Err(CallFailure::BadAnswer(format!("not JSON: {error}"))),
            Err(_) => return Err(CallFailure::Http { status, body: shorten(&String::from_utf8_lossy(&bytes)) }),
        };
        if let Some(error) = body.get("error") {
            let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = error.get("message").and_then(Value::as_str).unwrap_or("(no message)").to_string();
            return Err(CallFailure::Node { code, message });
        }
        if status != 200 {
            return Err(CallFailure::Http { status, body: shorten(&body.to_string()) });
        }
        match body.get("result") {
            Some(result) => Ok(result.clone()),
            None => Err(CallFailure::BadAnswer("neither \"result\" nor \"error\" in the answer".to_string())),
        }
    }
}

/// A short printable form of what a node sent (never echo megabytes).
pub(crate) fn shorten(text: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 200;
    let text = text.trim();
    if text.chars().count() <= SHOWN_CHARS_MAX {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(SHOWN_CHARS_MAX).collect::<String>())
    }
}

fn transport_failure(error: ureq::Error) -> CallFailure {
    let detail = describe_transport_error(&error);
    let not_connected = match &error {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::AddrNotAvailable
                | std::io::ErrorKind::NotFound
                | std::io::ErrorKind::HostUnreachable
                | std::io::ErrorKind::NetworkUnreachable
        ),
        ureq::Error::Timeout(which) => matches!(which, ureq::Timeout::Connect | ureq::Timeout::Resolve),
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed | ureq::Error::BadUri(_) => true,
        _ => false,
    };
    if not_connected {
        CallFailure::NotConnected(detail)
    } else {
        CallFailure::AfterConnect(detail)
    }
}

fn describe_transport_error(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            std::io::ErrorKind::ConnectionReset => "the connection was reset".to_string(),
            _ => io.to_string(),
        },
        ureq::Error::Timeout(ureq::Timeout::Connect) => {
            format!("no connection within {} s", RPC_CONNECT_TIMEOUT.as_secs())
        }
        ureq::Error::Timeout(_) => format!("no answer within {} s", RPC_CALL_TIMEOUT.as_secs()),
        ureq::Error::HostNotFound => "the host name does not resolve".to_string(),
        ureq::Error::ConnectionFailed => "the connection failed".to_string(),
        other => other.to_string(),
    }
}
