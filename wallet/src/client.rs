//! A small blocking JSON-RPC 2.0 client for one node (`RpcClient`, on `ureq`), with connect and
//! whole-call timeouts and errors that say how far a failed call got: whether the request can
//! have reached the node (`CallFailure`). One typed method per JSON-RPC method, asking with
//! `tinychain-rpc`'s `Query`/`Command` and reading its answer types, the very types the node
//! serialises; `call` sends any method by name. Any program may use it; the wallet's operations
//! and the testnet runner do.

use crate::WalletError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tinychain_core::types::{Address, Hash, Height, Transfer};
use tinychain_core::validate::transfer_id;
use tinychain_rpc::{
    code, AccountAnswer, AccountAt, AddPeerAnswer, BlockAnswer, BlockSelector, Command, ElectionAnswer, ErrorData,
    FeeAnswer, HeaderAnswer, HistoryAnswer, MempoolAnswer, Method, PeersAnswer, Query, RemovePeerAnswer, StatusAnswer,
    SubmitAnswer, SubmitTxsAnswer, TxAnswer,
};

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
    /// The bound on each whole call, named when a call runs out of it.
    call_timeout: Duration,
}

/// How far a failed request got: whether the node can have received it.
#[derive(Debug)]
enum CallFailure {
    /// No connection was made: the request certainly did not reach the node.
    NotConnected(String),
    /// The request may have been delivered.
    AfterConnect(String),
    /// The node answered with a JSON-RPC error; `data_code` is its `data.code`, why in a stable
    /// name (`None` from a node that sends none).
    Node {
        code: i64,
        message: String,
        data_code: Option<String>,
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
        Ok(RpcClient {
            url: url.to_string(),
            agent: ureq::Agent::new_with_config(config),
            next_id: AtomicU64::new(1),
            call_timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One call of any method by name; the result or an error naming the URL and method.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, WalletError> {
        self.call_raw(method, params).map_err(|failure| self.error_of(method, failure))
    }

    pub fn status(&self) -> Result<StatusAnswer, WalletError> {
        self.query(&Query::Status)
    }

    pub fn get_block(&self, selector: BlockSelector) -> Result<BlockAnswer, WalletError> {
        self.query(&Query::GetBlock(selector))
    }

    pub fn get_header(&self, selector: BlockSelector) -> Result<HeaderAnswer, WalletError> {
        self.query(&Query::GetHeader(selector))
    }

    pub fn get_tx(&self, id: &Hash) -> Result<TxAnswer, WalletError> {
        self.query(&Query::GetTx { id: *id })
    }

    pub fn get_account(&self, address: &Address, at: AccountAt) -> Result<AccountAnswer, WalletError> {
        self.query(&Query::GetAccount { address: *address, at })
    }

    /// One page of `address`'s history: up to `limit` committed transfers in blocks below
    /// `before_height` (and, on the first page, the pending ones).
    pub fn get_history(
        &self,
        address: &Address,
        limit: usize,
        before_height: Option<Height>,
    ) -> Result<HistoryAnswer, WalletError> {
        self.query(&Query::GetHistory { address: *address, limit, before_height })
    }

    pub fn get_mempool(&self, limit: usize) -> Result<MempoolAnswer, WalletError> {
        self.query(&Query::GetMempool { limit })
    }

    /// The election for block `height`; `None`: the live one, for the block after the tip.
    pub fn get_election(&self, height: Option<Height>) -> Result<ElectionAnswer, WalletError> {
        self.query(&Query::GetElection { height })
    }

    pub fn get_peers(&self) -> Result<PeersAnswer, WalletError> {
        self.query(&Query::GetPeers)
    }

    pub fn estimate_fee(&self) -> Result<FeeAnswer, WalletError> {
        self.query(&Query::EstimateFee)
    }

    /// Submits a signed transfer. A refusal is `WalletError::Rejected`, whose `code` says why
    /// (the node's `data.code`); nothing was admitted then. A failure after the request may have
    /// reached the node is `SubmitUncertain`: the transfer may be pending, so look it up by its id
    /// before sending it again.
    pub fn submit_tx(&self, transfer: &Transfer) -> Result<SubmitAnswer, WalletError> {
        let id = transfer_id(transfer);
        let (url, method) = (self.url.clone(), Method::SubmitTx);
        let submitted = match self.ask_raw(method, &Command::<String>::SubmitTx { tx: transfer.clone() }) {
            Ok(value) => value,
            Err(CallFailure::NotConnected(detail)) => return Err(WalletError::Unreachable { url, detail }),
            Err(CallFailure::Node { code, message, data_code }) if code == i64::from(code::TX_REJECTED) => {
                let message = message.strip_prefix("transfer rejected: ").unwrap_or(&message).to_string();
                return Err(WalletError::Rejected { url, id, code: data_code, message });
            }
            Err(CallFailure::Node { code, message, data_code }) if code == i64::from(code::INVALID_PARAMS) => {
                // The node could not decode the transfer: it cannot have been admitted.
                let message = format!("invalid transfer encoding (error {code}: {message})");
                return Err(WalletError::Rejected { url, id, code: data_code, message });
            }
            Err(failure) => {
                let detail = match failure {
                    CallFailure::AfterConnect(detail) | CallFailure::BadAnswer(detail) => detail,
                    CallFailure::Node { code, message, .. } => format!("error {code}: {message}"),
                    CallFailure::Http { status, body } => format!("HTTP {status}: {body}"),
                    CallFailure::NotConnected(detail) => detail,
                };
                return Err(WalletError::SubmitUncertain { url, id, detail });
            }
        };
        serde_json::from_value(submitted).map_err(|error| WalletError::SubmitUncertain {
            url,
            id,
            detail: format!("the answer is not {{\"id\": ...}}: {error}"),
        })
    }

    /// Submits up to `tinychain_rpc::SUBMIT_TXS_MAX` signed transfers in one call; the answer has
    /// one result per transfer, in order: its id, or the error `submit_tx` would have given (the
    /// call as a whole fails only when the node could not take it, e.g. a transfer that does not
    /// decode, or when the answer was lost: then look the transfers up by id before sending them
    /// again).
    pub fn submit_txs(&self, transfers: &[Transfer]) -> Result<SubmitTxsAnswer, WalletError> {
        self.command(&Command::SubmitTxs { txs: transfers.to_vec() })
    }

    /// Admin: adds `addr` (`host:port`) to the addresses the node dials.
    pub fn add_peer(&self, addr: &str) -> Result<AddPeerAnswer, WalletError> {
        self.command(&Command::AddPeer { addr: addr.to_string() })
    }

    /// Admin: forgets `addr` (`host:port`).
    pub fn remove_peer(&self, addr: &str) -> Result<RemovePeerAnswer, WalletError> {
        self.command(&Command::RemovePeer { addr: addr.to_string() })
    }

    fn query<T: DeserializeOwned>(&self, query: &Query) -> Result<T, WalletError> {
        self.ask(query.method(), query)
    }

    fn command<T: DeserializeOwned>(&self, command: &Command) -> Result<T, WalletError> {
        self.ask(command.method(), command)
    }

    /// One query or command (`call`, which serialises to its method and params), its answer
    /// deserialised into `T`.
    fn ask<T: DeserializeOwned>(&self, method: Method, call: &impl Serialize) -> Result<T, WalletError> {
        let value = self.ask_raw(method, call).map_err(|failure| self.error_of(method.as_str(), failure))?;
        serde_json::from_value(value).map_err(|error| WalletError::BadAnswer {
            url: self.url.clone(),
            method: method.to_string(),
            detail: error.to_string(),
        })
    }

    /// `ask` without reading the answer, failing with how far the call got.
    fn ask_raw(&self, method: Method, call: &impl Serialize) -> Result<Value, CallFailure> {
        let mut call = serde_json::to_value(call).expect("queries and commands have a JSON form");
        let params = call.get_mut("params").map(Value::take).unwrap_or(Value::Null);
        self.call_raw(method.as_str(), params)
    }

    fn error_of(&self, method: &str, failure: CallFailure) -> WalletError {
        let url = self.url.clone();
        let method = method.to_string();
        match failure {
            CallFailure::NotConnected(detail) => WalletError::Unreachable { url, detail },
            CallFailure::AfterConnect(detail) => WalletError::NoAnswer { url, method, detail },
            CallFailure::Node { code, message, data_code } => {
                WalletError::NodeError { url, method, code, data_code, message }
            }
            CallFailure::Http { status, body } => WalletError::HttpStatus { url, method, status, body },
            CallFailure::BadAnswer(detail) => WalletError::BadAnswer { url, method, detail },
        }
    }

    /// One call; `Value::Null` params are left out.
    fn call_raw(&self, method: &str, params: Value) -> Result<Value, CallFailure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        if !params.is_null() {
            request["params"] = params;
        }
        let mut response = self
            .agent
            .post(&self.url)
            .send_json(&request)
            .map_err(|error| transport_failure(error, self.call_timeout))?;
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(RPC_ANSWER_BYTES_MAX)
            .read_to_vec()
            .map_err(|error| CallFailure::AfterConnect(describe_transport_error(&error, self.call_timeout)))?;
        let body: Value = match serde_json::from_slice(&bytes) {
            Ok(body) => body,
            Err(error) if status == 200 => return Err(CallFailure::BadAnswer(format!("not JSON: {error}"))),
            Err(_) => return Err(CallFailure::Http { status, body: shorten(&String::from_utf8_lossy(&bytes)) }),
        };
        if let Some(error) = body.get("error") {
            let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = error.get("message").and_then(Value::as_str).unwrap_or("(no message)").to_string();
            let data = error.get("data").and_then(|data| serde_json::from_value::<ErrorData>(data.clone()).ok());
            return Err(CallFailure::Node { code, message, data_code: data.map(|data| data.code) });
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

fn transport_failure(error: ureq::Error, call_timeout: Duration) -> CallFailure {
    let detail = describe_transport_error(&error, call_timeout);
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

fn describe_transport_error(error: &ureq::Error, call_timeout: Duration) -> String {
    match error {
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
            std::io::ErrorKind::ConnectionReset => "the connection was reset".to_string(),
            _ => io.to_string(),
        },
        ureq::Error::Timeout(ureq::Timeout::Connect) => {
            format!("no connection within {} s", RPC_CONNECT_TIMEOUT.as_secs())
        }
        ureq::Error::Timeout(_) if call_timeout < Duration::from_secs(1) => {
            format!("no answer within {} ms", call_timeout.as_millis())
        }
        ureq::Error::Timeout(_) => format!("no answer within {} s", call_timeout.as_secs()),
        ureq::Error::HostNotFound => "the host name does not resolve".to_string(),
        ureq::Error::ConnectionFailed => "the connection failed".to_string(),
        other => other.to_string(),
    }
}
