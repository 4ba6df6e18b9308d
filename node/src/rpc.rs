//! The JSON-RPC 2.0 server over HTTP (jsonrpsee), plus `GET /` (the explorer page, see
//! `explorer`), `GET /health` and `GET /metrics`. Methods, params, answers and error codes are
//! documented in `docs/rpc.md`; the metrics in `docs/metrics.md`; the explorer in
//! `docs/explorer.md`.
//!
//! Contract:
//! - The server runs on its own tokio tasks and never touches the node: every method (one per
//!   `tinychain_rpc::Method`) becomes a `query::Request`, sent to the driver as a `query::Call`
//!   inside a `QueuedCall` over the bounded channel given to `start`. Neither side ever waits on
//!   the other: a full channel is answered at once with `code::BUSY` (-32009, `data.code`
//!   `busy`), and so is a call the driver has not taken within `QUEUE_WAIT_MAX`. Once the driver
//!   took a call, the handler waits for its answer up to `CALL_TIMEOUT` from the call's start
//!   (then -32603 "the node did not answer in time", `timed_out`: the outcome is unknown).
//! - Busy means "not acted on", and that is guaranteed, not likely: each `QueuedCall` carries
//!   one claim flag, swapped to true by whichever side gets there first. The driver runs a call
//!   only if `QueuedCall::take` won the claim; the handler answers busy only if it won the claim
//!   at its deadline, and otherwise (the driver took the call first) waits for the real answer.
//!   A call answered busy is therefore dropped unrun by the driver, and a call the driver ran is
//!   never answered busy.
//! - Nothing a client sends can panic the server or stop the node. Request bodies are limited to
//!   `RpcConfig::body_bytes_max` (HTTP 413), batches to `BATCH_REQUESTS_MAX` calls, open TCP
//!   connections to `RpcConfig::connections_max` (more are answered 503 and closed at accept),
//!   a request's headers must arrive within `HEADER_READ_TIMEOUT` (which also closes idle
//!   keep-alive connections), and a whole request within `REQUEST_TIMEOUT` (HTTP 408).
//! - Admin methods (`Method::is_admin`) are answered according to `RpcConfig::admin`, from
//!   the address of the TCP connection (never from headers a client can forge); refused calls
//!   get `code::ADMIN_ONLY`.
//! - `GET /metrics` asks the driver to hand the `telemetry::Telemetry` given to `start` its
//!   figures of the moment (`Request::Metrics`, answered like a query), then encodes the
//!   registry here; without an answer from the driver it is 503, like `/health`. Every JSON-RPC
//!   call's duration is observed into that registry by method.
//! - `RpcServer::stop` stops accepting, lets requests in flight finish (at most `STOP_GRACE`),
//!   and returns when every connection task has ended.
//!
//! Built on jsonrpsee's "server as a tower service" pattern: this module accepts each TCP
//! connection itself (so it knows the peer address and can count connections), serves HTTP/1.1
//! with hyper, answers the two GET routes, and hands everything else to jsonrpsee's per-connection
//! service with the connection's admin rule in the request extensions.

use crate::query::{self, Call, Command, QueryError, Request};
use crate::telemetry::{self, Telemetry};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use jsonrpsee::server::{
    stop_channel, BatchRequestConfig, Extensions, HttpBody, HttpResponse, RpcModule, ServerBuilder, ServerConfig,
    ServerHandle, StopHandle,
};
use jsonrpsee::types::{ErrorObject, ErrorObjectOwned, Params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tinychain_core::crypto::SignatureCache;
use tinychain_core::types::Transfer;
use tinychain_core::validate;
use tinychain_rpc::{code, data_code, ErrorData, HealthRefusal, HealthStatus, Method};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tower::Service as _;
use tracing::{debug, info, warn};

/// Who may call the admin methods (`add_peer`, `remove_peer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminAccess {
    /// Only clients connecting from a loopback address (127.0.0.0/8, ::1).
    #[default]
    Loopback,
    /// Any client that can reach the listen address.
    Any,
    /// No one: the admin methods always answer `code::ADMIN_ONLY`.
    Off,
}

/// Where the server listens and what it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcConfig {
    pub listen: SocketAddr,
    pub admin: AdminAccess,
    /// Largest request body (bytes); larger requests get HTTP 413.
    pub body_bytes_max: u32,
    /// Most TCP connections open at once; more are answered 503 and closed.
    pub connections_max: u32,
}

/// Default listen address, DESIGN.md's RPC port on loopback only: a node is not reachable from
/// other machines unless the operator says so.
pub const LISTEN_DEFAULT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7741);
pub const BODY_BYTES_MAX_DEFAULT: u32 = 256 * 1024;
pub const CONNECTIONS_MAX_DEFAULT: u32 = 64;

/// Calls in one JSON-RPC batch.
pub const BATCH_REQUESTS_MAX: u32 = 50;
/// Largest response body: a full block of 10,000 transfers is about 4 MB of JSON.
pub const RESPONSE_BYTES_MAX: u32 = 32 * 1024 * 1024;
/// How long a call may wait in the queue for the driver to take it; then it is answered
/// `code::BUSY` and the driver drops it unrun.
pub const QUEUE_WAIT_MAX: Duration = Duration::from_secs(2);
/// How long a handler waits for the driver's answer in all, once the driver took the call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls the channel between the server and the driver holds (`driver::run` makes it); one
/// more is answered `code::BUSY` at once.
pub const CALL_QUEUE_CAPACITY: usize = 256;
/// How long `GET /health` waits for the driver before answering 503.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// A request's headers (and the first bytes of each keep-alive request) must arrive within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole request, body included, must be read and answered within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` lets requests in flight finish.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

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
    #[error("cannot register the JSON-RPC method {method}: {detail}")]
    Register { method: &'static str, detail: String },
}

/// A running server. Dropping it stops the server without waiting; `stop` waits.
pub struct RpcServer {
    local_addr: SocketAddr,
    stop: ServerHandle,
    accept_task: tokio::task::JoinHandle<()>,
    /// Closed once every connection task has ended (each holds a sender).
    connections_done: mpsc::Receiver<()>,
}

impl RpcServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets requests in flight finish (at most `STOP_GRACE`), closes idle
    /// connections, then returns.
    pub async fn stop(mut self) {
        // An error means every receiver is gone: the tasks have already ended.
        let _ = self.stop.stop();
        if let Err(error) = (&mut self.accept_task).await {
            warn!(%error, "the JSON-RPC accept task ended abnormally");
        }
        // Each connection waits at most STOP_GRACE for its requests; this bounds the whole stop.
        let all_ended = async { while self.connections_done.recv().await.is_some() {} };
        if tokio::time::timeout(STOP_GRACE + Duration::from_secs(1), all_ended).await.is_err() {
            warn!("JSON-RPC connections still open after the stop grace period; leaving them to close");
        }
        info!(listen = %self.local_addr, "JSON-RPC server stopped");
    }
}

/// What a connection's admin calls get, decided from its peer address at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AdminRule {
    Allowed,
    NotLoopback,
    TurnedOff,
}

fn admin_rule(access: AdminAccess, peer: IpAddr) -> AdminRule {
    match access {
        AdminAccess::Any => AdminRule::Allowed,
        AdminAccess::Off => AdminRule::TurnedOff,
        AdminAccess::Loopback if peer.to_canonical().is_loopback() => AdminRule::Allowed,
        AdminAccess::Loopback => AdminRule::NotLoopback,
    }
}

/// Shared by every method handler.
struct MethodContext {
    calls: mpsc::Sender<QueuedCall>,
    telemetry: Arc<Telemetry>,
    /// Where submitted transfers' signatures are checked before their call is queued.
    signatures: Option<Arc<SignatureCache>>,
}

/// A call in the queue to the driver, with the claim that decides whether the driver runs it or
/// the handler answers it busy (exactly one of the two; see the module docs).
#[derive(Debug)]
pub struct QueuedCall {
    call: Call,
    claimed: Arc<AtomicBool>,
}

impl QueuedCall {
    /// A call and the claim its handler keeps.
    pub fn new(call: Call) -> (QueuedCall, Arc<AtomicBool>) {
        let claimed = Arc::new(AtomicBool::new(false));
        (QueuedCall { call, claimed: claimed.clone() }, claimed)
    }

    /// For the driver, before it acts on the call: the call, or `None` when its handler has
    /// already answered it busy (the call must then not be run; dropping it is all there is to do).
    pub fn take(self) -> Option<Call> {
        (!self.claimed.swap(true, Ordering::AcqRel)).then_some(self.call)
    }
}

/// Why `ask` got no answer.
#[derive(Debug)]
enum AskError {
    /// The driver did not act on the call (`code::BUSY`): the queue was full, or the call waited
    /// in it longer than the given bound.
    Busy {
        queue_full: bool,
        waited: Duration,
    },
    Query(QueryError),
}

impl AskError {
    fn into_error_object(self) -> ErrorObjectOwned {
        match self {
            AskError::Busy { queue_full: true, .. } => ErrorObject::owned(
                code::BUSY,
                "the node is busy: its queue of calls is full; nothing was done, retry later",
                Some(error_data(data_code::BUSY)),
            ),
            AskError::Busy { queue_full: false, waited } => ErrorObject::owned(
                code::BUSY,
                format!(
                    "the node is busy: the call waited {} ms for the node and was dropped; nothing was done, retry later",
                    waited.as_millis()
                ),
                Some(error_data(data_code::BUSY)),
            ),
            AskError::Query(error) => error_object(error),
        }
    }

    fn reason(&self) -> String {
        match self {
            AskError::Busy { .. } => "the node is busy: its event loop did not take the request in time".to_string(),
            AskError::Query(error) => error.to_string(),
        }
    }
}

/// Sends one request to the driver and waits for its answer: busy if the queue is full or the
/// driver has not taken the call within `queue_wait`, timed out if the driver took it but did
/// not answer within `timeout` of the start.
async fn ask(
    calls: &mpsc::Sender<QueuedCall>,
    request: Request,
    queue_wait: Duration,
    timeout: Duration,
) -> Result<Value, AskError> {
    let started = tokio::time::Instant::now();
    let (reply, answer) = oneshot::channel();
    let (queued, claimed) = QueuedCall::new(Call { request, reply });
    match calls.try_send(queued) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => return Err(AskError::Busy { queue_full: true, waited: Duration::ZERO }),
        Err(TrySendError::Closed(_)) => return Err(AskError::Query(QueryError::ShuttingDown)),
    }
    let answered = |answer: Result<Result<Value, QueryError>, oneshot::error::RecvError>| {
        answer.map_err(|_| QueryError::NotAnswered).and_then(|answered| answered).map_err(AskError::Query)
    };
    tokio::pin!(answer);
    if let Ok(answer) = tokio::time::timeout(queue_wait.min(timeout), &mut answer).await {
        return answered(answer);
    }
    if !claimed.swap(true, Ordering::AcqRel) {
        // The driver has not taken the call, and now never will run it (`QueuedCall::take`).
        return Err(AskError::Busy { queue_full: false, waited: started.elapsed() });
    }
    // The driver took the call first: it is acting on it, so its answer is the only truth.
    match tokio::time::timeout_at(started + timeout, answer).await {
        Ok(answer) => answered(answer),
        Err(_) => Err(AskError::Query(QueryError::TimedOut)),
    }
}

/// The JSON-RPC error for `error`: its code, its text as the message and its `data.code`.
fn error_object(error: QueryError) -> ErrorObjectOwned {
    ErrorObject::owned(error.code(), error.to_string(), Some(error_data(error.data_code())))
}

fn error_data(data_code: &str) -> ErrorData {
    ErrorData { code: data_code.to_string() }
}

async fn handle_method(
    method: Method,
    params: Params<'static>,
    context: Arc<MethodContext>,
    extensions: Extensions,
) -> Result<Value, ErrorObjectOwned> {
    if method.is_admin() {
        // Connections this module did not accept carry no rule: refuse, never allow by default.
        let refusal = match extensions.get::<AdminRule>().copied().unwrap_or(AdminRule::TurnedOff) {
            AdminRule::Allowed => None,
            AdminRule::NotLoopback => Some("admin methods are answered only on the loopback interface"),
            AdminRule::TurnedOff => {
                Some("admin methods are turned off in this node's configuration (rpc.admin = \"off\")")
            }
        };
        if let Some(message) = refusal {
            debug!(%method, "refusing an admin method");
            return Err(ErrorObject::owned(code::ADMIN_ONLY, message, Some(error_data(data_code::ADMIN_ONLY))));
        }
    }
    let params_value: Value = match params.as_str() {
        None => Value::Null,
        // jsonrpsee has already checked this is JSON; a failure here would be its bug.
        Some(text) => serde_json::from_str(text)
            .map_err(|error| error_object(QueryError::InvalidParams(format!("params are not valid JSON: {error}"))))?,
    };
    let mut request = query::parse_request(method, &params_value).map_err(error_object)?;
    if let Some(signatures) = &context.signatures {
        request = warm_submitted_signatures(request, signatures.clone()).await?;
    }
    ask(&context.calls, request, QUEUE_WAIT_MAX, CALL_TIMEOUT).await.map_err(AskError::into_error_object)
}

/// Checks the signatures of the transfers a submit carries, on the blocking pool (one thread
/// each: the handlers of several connections run at once), and hands the request back unchanged.
async fn warm_submitted_signatures(
    request: Request,
    signatures: Arc<SignatureCache>,
) -> Result<Request, ErrorObjectOwned> {
    if submitted_transfers(&request).is_none() {
        return Ok(request);
    }
    tokio::task::spawn_blocking(move || {
        if let Some(transfers) = submitted_transfers(&request) {
            validate::warm_transfer_signatures(&signatures, transfers, 1);
        }
        request
    })
    .await
    // Only a runtime shutting down cancels a blocking task (signature checks do not panic).
    .map_err(|_| error_object(QueryError::ShuttingDown))
}

/// The transfers a `submit_tx` or `submit_txs` call carries.
fn submitted_transfers(request: &Request) -> Option<&[Transfer]> {
    match request {
        Request::Command(Command::SubmitTxs { txs }) => Some(txs),
        Request::Command(Command::SubmitTx { tx }) => Some(std::slice::from_ref(tx)),
        _ => None,
    }
}

fn methods(
    calls: mpsc::Sender<QueuedCall>,
    telemetry: Arc<Telemetry>,
    signatures: Option<Arc<SignatureCache>>,
) -> Result<RpcModule<MethodContext>, RpcError> {
    let mut module = RpcModule::new(MethodContext { calls, telemetry, signatures });
    for method in Method::ALL {
        module
            .register_async_method(method.as_str(), move |params, context, extensions| async move {
                let started = tokio::time::Instant::now();
                let telemetry = context.telemetry.clone();
                let answer = handle_method(method, params, context, extensions).await;
                telemetry.observe_rpc_call(method.as_str(), started.elapsed());
                answer
            })
            .map_err(|error| RpcError::Register { method: method.as_str(), detail: error.to_string() })?;
    }
    Ok(module)
}

/// Binds `config.listen` and serves until `RpcServer::stop`; every method becomes a `Call` sent
/// on `calls`. `telemetry` is where call durations go and what `GET /metrics` encodes.
///
/// With `signatures` (the node's signature cache), the signatures of submitted transfers are
/// checked on the blocking pool before the call is queued (`validate::warm_transfer_signatures`),
/// so the driver's event loop, which admits them, finds them in the cache.
pub async fn start(
    config: RpcConfig,
    calls: mpsc::Sender<QueuedCall>,
    telemetry: Arc<Telemetry>,
    signatures: Option<Arc<SignatureCache>>,
) -> Result<RpcServer, RpcError> {
    if config.body_bytes_max < 1024 {
        return Err(RpcError::BadConfig {
            field: "body_bytes_max",
            reason: format!("{} bytes cannot hold a transfer submission; use at least 1024", config.body_bytes_max),
        });
    }
    if config.connections_max == 0 {
        return Err(RpcError::BadConfig { field: "connections_max", reason: "must be at least 1".into() });
    }
    let module = methods(calls.clone(), telemetry.clone(), signatures)?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| RpcError::Bind { listen: config.listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| RpcError::Bind { listen: config.listen, source })?;
    let server_config = ServerConfig::builder()
        .max_request_body_size(config.body_bytes_max)
        .max_response_body_size(RESPONSE_BYTES_MAX)
        // jsonrpsee counts requests in flight; connections are counted at accept below.
        .max_connections(config.connections_max)
        .set_batch_request_config(BatchRequestConfig::Limit(BATCH_REQUESTS_MAX))
        .http_only()
        .build();
    let service_builder = ServerBuilder::with_config(server_config).to_service_builder();
    let (stop_handle, server_handle) = stop_channel();
    let (connection_ended, connections_done) = mpsc::channel::<()>(1);
    let shared = Arc::new(Shared {
        calls,
        telemetry,
        methods: module.into(),
        service_builder,
        stop_handle,
        admin: config.admin,
        body_bytes_max: config.body_bytes_max,
        connections: Arc::new(Semaphore::new(config.connections_max as usize)),
        connection_ended,
    });
    let accept_task = tokio::spawn(accept_loop(listener, shared));
    info!(listen = %local_addr, admin = ?config.admin, "JSON-RPC server listening");
    Ok(RpcServer { local_addr, stop: server_handle, accept_task, connections_done })
}

type JsonRpcServiceBuilder =
    jsonrpsee::server::TowerServiceBuilder<tower::layer::util::Identity, tower::layer::util::Identity>;

/// What the accept loop and every connection share.
struct Shared {
    calls: mpsc::Sender<QueuedCall>,
    telemetry: Arc<Telemetry>,
    methods: jsonrpsee::server::Methods,
    service_builder: JsonRpcServiceBuilder,
    stop_handle: StopHandle,
    admin: AdminAccess,
    body_bytes_max: u32,
    connections: Arc<Semaphore>,
    connection_ended: mpsc::Sender<()>,
}

/// Sent to a connection over `connections_max`, written without waiting, then the socket closes.
const TOO_MANY_CONNECTIONS_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain\r\ncontent-length: 56\r\nconnection: close\r\n\r\n\
too many JSON-RPC connections are open; try again later\n";

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let stopped = shared.stop_handle.clone().shutdown();
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => break,
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                warn!(%error, "cannot accept a JSON-RPC connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            debug!(%peer, "refusing a JSON-RPC connection: too many open");
            // Best effort: a fresh socket's send buffer takes these few bytes at once.
            let _ = socket.try_write(TOO_MANY_CONNECTIONS_RESPONSE);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(socket, peer, &shared).await;
            drop(permit);
        });
    }
    debug!("JSON-RPC accept loop stopped");
}

async fn serve_connection(socket: TcpStream, peer: SocketAddr, shared: &Shared) {
    let _ended = shared.connection_ended.clone();
    if let Err(error) = socket.set_nodelay(true) {
        debug!(%peer, %error, "cannot set TCP_NODELAY on a JSON-RPC connection");
    }
    let admin = admin_rule(shared.admin, peer.ip());
    let jsonrpc = shared.service_builder.clone().build(shared.methods.clone(), shared.stop_handle.clone());
    let calls = shared.calls.clone();
    let telemetry = shared.telemetry.clone();
    let body_bytes_max = shared.body_bytes_max;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let jsonrpc = jsonrpc.clone();
        let calls = calls.clone();
        let telemetry = telemetry.clone();
        async move {
            let routed = route(request, jsonrpc, calls, &telemetry, admin, body_bytes_max);
            let response = match tokio::time::timeout(REQUEST_TIMEOUT, routed).await {
                Ok(response) => response,
                Err(_) => text_response(
                    hyper::StatusCode::REQUEST_TIMEOUT,
                    "the request was not received and answered in time\n",
                ),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(connection);
    let stopped = shared.stop_handle.clone().shutdown();
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(STOP_GRACE, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    debug!(%peer, "closing a JSON-RPC connection still busy after the stop grace period");
                    Ok(())
                }
            }
        }
    };
    if let Err(error) = result {
        debug!(%peer, %error, "JSON-RPC connection ended with an error");
    }
}

async fn route(
    mut request: hyper::Request<Incoming>,
    mut jsonrpc: JsonRpcService,
    calls: mpsc::Sender<QueuedCall>,
    telemetry: &Telemetry,
    admin: AdminRule,
    body_bytes_max: u32,
) -> HttpResponse {
    if request.method() == hyper::Method::GET {
        match request.uri().path() {
            "/health" => return health(&calls).await,
            "/metrics" => return metrics(&calls, telemetry).await,
            "/" => return crate::explorer::page(),
            _ => {}
        }
    }
    request.extensions_mut().insert(admin);
    if request.method() != hyper::Method::POST {
        // jsonrpsee answers 405 without reading the body.
        return call_jsonrpc(&mut jsonrpc, request).await;
    }
    match read_body_limited(request, body_bytes_max).await {
        Ok(request) => call_jsonrpc(&mut jsonrpc, request).await,
        Err(refusal) => refusal,
    }
}

type JsonRpcService = jsonrpsee::server::TowerService<tower::layer::util::Identity, tower::layer::util::Identity>;

async fn call_jsonrpc<B>(jsonrpc: &mut JsonRpcService, request: hyper::Request<B>) -> HttpResponse
where
    B: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // jsonrpsee's service is always ready (its poll_ready returns Ready), so `call` directly.
    match jsonrpc.call(request).await {
        Ok(response) => response,
        Err(error) => {
            warn!(%error, "the JSON-RPC service failed on a request");
            text_response(hyper::StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
        }
    }
}

/// Reads a POST body of at most `body_bytes_max` bytes. jsonrpsee checks a declared length
/// itself but answers a chunked body over the limit with a bare 500; reading it here gives
/// every oversized body the same 413 with a JSON-RPC error naming the limit.
async fn read_body_limited(
    request: hyper::Request<Incoming>,
    body_bytes_max: u32,
) -> Result<hyper::Request<Full<hyper::body::Bytes>>, HttpResponse> {
    let too_large = || {
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {
                "code": code::OVERSIZED_REQUEST,
                "message": format!("the request body is over this node's limit of {body_bytes_max} bytes"),
                "data": error_data(data_code::REQUEST_TOO_LARGE),
            },
        });
        response(hyper::StatusCode::PAYLOAD_TOO_LARGE, "application/json", body.to_string())
    };
    let declared_bytes = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.parse::<u64>().ok());
    if declared_bytes.is_some_and(|bytes| bytes > u64::from(body_bytes_max)) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    match Limited::new(body, body_bytes_max as usize).collect().await {
        Ok(collected) => Ok(hyper::Request::from_parts(parts, Full::new(collected.to_bytes()))),
        Err(error) if error.is::<LengthLimitError>() => Err(too_large()),
        Err(error) => {
            debug!(%error, "cannot read a JSON-RPC request body");
            Err(text_response(hyper::StatusCode::BAD_REQUEST, "the request body could not be read\n"))
        }
    }
}

fn response(status: hyper::StatusCode, content_type: &'static str, body: String) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    response
}

fn text_response(status: hyper::StatusCode, body: &str) -> HttpResponse {
    response(status, "text/plain; charset=utf-8", body.to_string())
}

async fn health(calls: &mpsc::Sender<QueuedCall>) -> HttpResponse {
    match ask(calls, Request::Health, HEALTH_TIMEOUT, HEALTH_TIMEOUT).await {
        Ok(answer) => response(hyper::StatusCode::OK, "application/json", answer.to_string()),
        Err(error) => {
            let refusal = HealthRefusal { status: HealthStatus::Unavailable, reason: error.reason() };
            response(hyper::StatusCode::SERVICE_UNAVAILABLE, "application/json", query::to_json(&refusal).to_string())
        }
    }
}

/// The driver sets the figures of the moment (`Request::Metrics`), then the registry is encoded.
async fn metrics(calls: &mpsc::Sender<QueuedCall>, telemetry: &Telemetry) -> HttpResponse {
    match ask(calls, Request::Metrics, HEALTH_TIMEOUT, HEALTH_TIMEOUT).await {
        Ok(_) => response(hyper::StatusCode::OK, telemetry::CONTENT_TYPE, telemetry.encode()),
        Err(error) => text_response(hyper::StatusCode::SERVICE_UNAVAILABLE, &format!("{}\n", error.reason())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_rules_follow_the_config_and_the_peer_address() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let loopback_v6: IpAddr = "::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let remote: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(admin_rule(AdminAccess::Loopback, loopback), AdminRule::Allowed);
        assert_eq!(admin_rule(AdminAccess::Loopback, loopback_v6), AdminRule::Allowed);
        assert_eq!(admin_rule(AdminAccess::Loopback, mapped), AdminRule::Allowed);
        assert_eq!(admin_rule(AdminAccess::Loopback, remote), AdminRule::NotLoopback);
        assert_eq!(admin_rule(AdminAccess::Any, remote), AdminRule::Allowed);
        assert_eq!(admin_rule(AdminAccess::Off, loopback), AdminRule::TurnedOff);
    }

    /// The schema's codes for what jsonrpsee answers itself are jsonrpsee's.
    #[test]
    fn the_schemas_error_codes_are_the_servers() {
        use jsonrpsee::types::error as server;
        assert_eq!(code::PARSE_ERROR, server::PARSE_ERROR_CODE);
        assert_eq!(code::INVALID_REQUEST, server::INVALID_REQUEST_CODE);
        assert_eq!(code::METHOD_NOT_FOUND, server::METHOD_NOT_FOUND_CODE);
        assert_eq!(code::INVALID_PARAMS, server::INVALID_PARAMS_CODE);
        assert_eq!(code::INTERNAL_ERROR, server::INTERNAL_ERROR_CODE);
        assert_eq!(code::OVERSIZED_REQUEST, server::OVERSIZED_REQUEST_CODE);
        assert_eq!(code::BATCH_TOO_BIG, server::TOO_BIG_BATCH_REQUEST_CODE);
        assert_eq!(code::BUSY, server::SERVER_IS_BUSY_CODE);
    }
}
