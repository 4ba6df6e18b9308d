//! The JSON-RPC server over real sockets. Plumbing (codes, limits, batches, the admin rule,
//! health, metrics, stop) runs against a fake driver that answers `Call`s from a table; the
//! answers run against a real single-validator `Node` and `Storage` driven a few blocks on a
//! virtual clock (transfers final, committed, pending and dropped), and a two-validator chain
//! where one validator is silent, so a timeout fires (and, before it, the mempool sync is not
//! over). The pending-transfer journal runs through the real driver (`driver::run`), stopped
//! and started again on the same database.
//!
//! The client is raw HTTP/1.1 over a std `TcpStream` in `spawn_blocking`, so a test sees the
//! exact status and body and can send what no well-behaved client library would.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinychain_core::codec;
use tinychain_core::crypto::SignatureCache;
use tinychain_core::election::rank_candidates;
use tinychain_core::genesis::Genesis;
use tinychain_core::mempool::{DropReason, DroppedTransfer, MempoolConfig, MempoolError};
use tinychain_core::node::{Action, Event, Node, NodeConfig, TraceEvent, TxRejection};
use tinychain_core::state::ValidatorRecord;
use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, validator_key};
use tinychain_core::types::{Address, Hash, Height, Transfer, UNITS_PER_COIN};
use tinychain_core::validate::transfer_id;
use tinychain_node::driver::{self, DriverOptions, Started};
use tinychain_node::query::{self, Call, Command, LiveInfo, Query, QueryContext, QueryError, Request};
use tinychain_node::rpc::{self, AdminAccess, QueuedCall, RpcConfig, RpcServer};
use tinychain_node::storage::Storage;
use tinychain_node::telemetry::{Figures, Telemetry};
use tinychain_rpc::{
    code, data_code, AccountAnswer, BlockAnswer, ElectionAnswer, ErrorData, FeeAnswer, HeaderAnswer, HealthAnswer,
    HistoryAnswer, MempoolAnswer, PeersAnswer, StatusAnswer, SubmitAnswer, TxAnswer,
};
use tokio::sync::{mpsc, oneshot};

// ---- the client ------------------------------------------------------------------------------

struct Reply {
    status: u16,
    headers: String,
    body: String,
}

/// Decodes a `transfer-encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|window| window == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = raw.windows(4).position(|window| window == b"\r\n\r\n").expect("a complete HTTP response head");
    let headers = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = headers.split(' ').nth(1).unwrap().parse().unwrap();
    let body_bytes = &raw[split + 4..];
    let body_bytes = if headers.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body_bytes)
    } else {
        body_bytes.to_vec()
    };
    Reply { status, headers, body: String::from_utf8(body_bytes).unwrap() }
}

/// One request on a fresh connection (`connection: close`), read to the end.
fn http_blocking(addr: SocketAddr, head: String, body: Vec<u8>) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse_reply(&raw)
}

async fn http(addr: SocketAddr, method: &str, path: &str, body: Vec<u8>) -> Reply {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tokio::task::spawn_blocking(move || http_blocking(addr, head, body)).await.unwrap()
}

async fn post_raw(addr: SocketAddr, body: &str) -> Value {
    let reply = http(addr, "POST", "/", body.as_bytes().to_vec()).await;
    serde_json::from_str(&reply.body).unwrap_or_else(|_| panic!("not JSON ({}): {}", reply.status, reply.body))
}

/// Calls one method; returns the whole JSON-RPC response object.
async fn call(addr: SocketAddr, method: &str, params: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    post_raw(addr, &body.to_string()).await
}

/// Calls one method that must succeed; returns its result.
async fn result(addr: SocketAddr, method: &str, params: Value) -> Value {
    let response = call(addr, method, params.clone()).await;
    match response.get("result") {
        Some(result) => result.clone(),
        None => panic!("{method} {params} failed: {response}"),
    }
}

/// Calls one method that must fail; returns (code, message).
async fn error(addr: SocketAddr, method: &str, params: Value) -> (i64, String) {
    let response = call(addr, method, params.clone()).await;
    let error = response.get("error").unwrap_or_else(|| panic!("{method} {params} should fail: {response}"));
    (error["code"].as_i64().unwrap(), error["message"].as_str().unwrap().to_string())
}

/// Calls one method that must fail; returns (code, message, data.code).
async fn error_with_reason(addr: SocketAddr, method: &str, params: Value) -> (i64, String, String) {
    let response = call(addr, method, params.clone()).await;
    let error = response.get("error").unwrap_or_else(|| panic!("{method} {params} should fail: {response}"));
    let data: ErrorData = serde_json::from_value(error["data"].clone())
        .unwrap_or_else(|problem| panic!("{method} {params}: no data.code ({problem}): {response}"));
    (error["code"].as_i64().unwrap(), error["message"].as_str().unwrap().to_string(), data.code)
}

/// A registry of its own for each server under test (no transport: no per-peer bytes).
fn telemetry() -> Arc<Telemetry> {
    Arc::new(Telemetry::new(None))
}

fn loopback_config() -> RpcConfig {
    RpcConfig { listen: "127.0.0.1:0".parse().unwrap(), ..RpcConfig::default() }
}

// ---- plumbing against a fake driver -------------------------------------------------------------

/// Answers from a table: enough to see each request arrive typed and each error map to its code.
fn fake_answer(request: &Request) -> Result<Value, QueryError> {
    match request {
        Request::Query(Query::Status) => Ok(json!({ "fake": true })),
        Request::Health => Ok(json!({ "status": "ok", "height": 7, "peers": 2 })),
        // The real driver hands the telemetry its figures here; this one has none to give.
        Request::Metrics => Ok(Value::Null),
        Request::Command(Command::AddPeer { addr }) => Ok(json!({ "added": addr })),
        Request::Command(Command::RemovePeer { addr }) => Ok(json!({ "removed": addr })),
        Request::Command(Command::SubmitTx { .. }) => {
            Err(QueryError::Rejected(TxRejection::Mempool(MempoolError::NonceTooLow { expected: 1, got: 0 })))
        }
        Request::Command(Command::SubmitTxs { txs }) => Ok(json!({ "accepted": 0, "results": txs.len() })),
        Request::Query(Query::GetBlock(query::BlockSelector::Height(99))) => {
            Err(QueryError::NotFound("no block at height 99".into()))
        }
        Request::Query(other) => Ok(json!({ "echo": format!("{other:?}") })),
    }
}

/// A driver that answers every call from `fake_answer` after `delay`.
fn fake_driver(delay: Duration) -> mpsc::Sender<QueuedCall> {
    let (sender, mut calls) = mpsc::channel::<QueuedCall>(16);
    tokio::spawn(async move {
        while let Some(queued) = calls.recv().await {
            let Some(Call { request, reply }) = queued.take() else { continue };
            // tokio's timer has millisecond resolution: even a zero sleep would cost one tick.
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let _ = reply.send(fake_answer(&request));
        }
    });
    sender
}

async fn fake_server(config: RpcConfig) -> RpcServer {
    rpc::start(config, fake_driver(Duration::ZERO), telemetry(), None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_error_codes() {
    let server = fake_server(loopback_config()).await;
    let addr = server.local_addr();

    let parse_error = post_raw(addr, r#"{"jsonrpc": "2.0", "id": 1, "method": "status""#).await;
    assert_eq!(parse_error["error"]["code"], -32700, "{parse_error}");

    let wrong_version = post_raw(addr, r#"{"jsonrpc": "1.0", "id": 1, "method": "status"}"#).await;
    assert_eq!(wrong_version["error"]["code"], -32600, "{wrong_version}");
    let no_method = post_raw(addr, r#"{"jsonrpc": "2.0", "id": 1, "params": []}"#).await;
    assert_eq!(no_method["error"]["code"], -32600, "{no_method}");

    let (code, message) = error(addr, "get_everything", json!([])).await;
    assert_eq!(code, -32601, "{message}");

    let (code, message, reason) = error_with_reason(addr, "get_tx", json!({ "id": "1234" })).await;
    assert_eq!((code, reason.as_str()), (-32602, data_code::INVALID_PARAMS));
    assert!(message.contains("\"id\"") && message.contains("64 hex"), "{message}");
    let (code, message) = error(addr, "get_history", json!({ "address": "tc1qqq", "limit": 5 })).await;
    assert_eq!(code, -32602);
    assert!(message.contains("\"address\""), "{message}");
    let (code, message) = error(addr, "get_mempool", json!({ "limit": 100_000 })).await;
    assert_eq!(code, -32602);
    assert!(message.contains("\"limit\"") && message.contains("1000"), "{message}");
    let (code, message) = error(addr, "submit_tx", json!(["not hex"])).await;
    assert_eq!(code, -32602);
    assert!(message.contains("\"tx\""), "{message}");

    let (code, message, reason) = error_with_reason(addr, "get_block", json!({ "height": 99 })).await;
    assert_eq!((code, message.as_str(), reason.as_str()), (-32001, "no block at height 99", data_code::NOT_FOUND));
    let transfer = sign_transfer(&account_key(0), "tinychain-test", Address([1; 32]), 5, 1, 0);
    let (code, message, reason) =
        error_with_reason(addr, "submit_tx", json!([hex::encode(codec::encode(&transfer))])).await;
    assert_eq!((code, reason.as_str()), (-32002, data_code::NONCE_USED));
    assert!(message.contains("already used"), "{message}");

    // GET / is the web explorer's page (node/src/explorer.rs); GET anywhere else is not JSON-RPC.
    let page = http(addr, "GET", "/", Vec::new()).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>tinychain explorer</title>"), "{}", page.body);
    assert_eq!(http(addr, "GET", "/not-a-route", Vec::new()).await.status, 405);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_by_name_and_by_position_reach_the_driver_typed() {
    let server = fake_server(loopback_config()).await;
    let addr = server.local_addr();
    let address = account_key(3).address().to_string();
    let by_name = result(addr, "get_history", json!({ "address": address, "limit": 3, "before_height": 10 })).await;
    let by_position = result(addr, "get_history", json!([address, 3, 10])).await;
    assert_eq!(by_name, by_position);
    assert!(by_name["echo"].as_str().unwrap().starts_with("GetHistory"), "{by_name}");
    assert!(by_name["echo"].as_str().unwrap().contains("limit: 3, before_height: Some(10)"), "{by_name}");
    // No params at all, an empty array and an empty object are the same for a method without params.
    let body = r#"{"jsonrpc": "2.0", "id": "a", "method": "status"}"#;
    assert_eq!(post_raw(addr, body).await["result"], json!({ "fake": true }));
    assert_eq!(result(addr, "status", json!([])).await, json!({ "fake": true }));
    assert_eq!(result(addr, "status", json!({})).await, json!({ "fake": true }));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused_and_under_it_answered() {
    let config = RpcConfig { body_bytes_max: 4 * 1024, ..loopback_config() };
    let server = fake_server(config).await;
    let addr = server.local_addr();

    // Declared too large: refused from the header, before any body is read.
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        5 * 1024
    );
    let reply = tokio::task::spawn_blocking(move || http_blocking(addr, head, Vec::new())).await.unwrap();
    assert_eq!(reply.status, 413, "{}", reply.body);

    // Sent too large without a declared length (chunked): refused while reading.
    let padding = " ".repeat(6 * 1024);
    let payload = format!(r#"{{"jsonrpc": "2.0", "id": 1, "method": "status"{padding}}}"#);
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let chunked = format!("{:x}\r\n{payload}\r\n0\r\n\r\n", payload.len()).into_bytes();
    let reply = tokio::task::spawn_blocking(move || http_blocking(addr, head, chunked)).await.unwrap();
    assert_eq!(reply.status, 413, "{}", reply.body);
    let refusal: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(refusal["error"]["code"], code::OVERSIZED_REQUEST);
    assert_eq!(refusal["error"]["data"]["code"], data_code::REQUEST_TOO_LARGE);
    assert!(refusal["error"]["message"].as_str().unwrap().contains("4096 bytes"), "{refusal}");

    // Just under the limit: answered.
    let padding = " ".repeat(3 * 1024);
    let payload = format!(r#"{{"jsonrpc": "2.0", "id": 1, "method": "status"{padding}}}"#);
    assert_eq!(post_raw(addr, &payload).await["result"], json!({ "fake": true }));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_answered_call_by_call_and_limited() {
    let server = fake_server(loopback_config()).await;
    let addr = server.local_addr();
    let batch = json!([
        { "jsonrpc": "2.0", "id": 1, "method": "status" },
        { "jsonrpc": "2.0", "id": 2, "method": "get_tx", "params": ["zz"] },
        { "jsonrpc": "2.0", "id": 3, "method": "nope" },
    ]);
    let answers = post_raw(addr, &batch.to_string()).await;
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 3);
    let by_id = |id: i64| answers.iter().find(|answer| answer["id"] == id).unwrap();
    assert_eq!(by_id(1)["result"], json!({ "fake": true }));
    assert_eq!(by_id(2)["error"]["code"], -32602);
    assert_eq!(by_id(3)["error"]["code"], -32601);

    let too_many: Vec<Value> =
        (0..=rpc::BATCH_REQUESTS_MAX).map(|id| json!({ "jsonrpc": "2.0", "id": id, "method": "status" })).collect();
    let refused = post_raw(addr, &Value::Array(too_many).to_string()).await;
    assert_eq!(refused["error"]["code"], -32010, "{refused}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_methods_follow_the_admin_rule() {
    let loopback = fake_server(loopback_config()).await;
    assert_eq!(
        result(loopback.local_addr(), "add_peer", json!(["10.0.0.5:7740"])).await,
        json!({ "added": "10.0.0.5:7740" })
    );
    assert_eq!(
        result(loopback.local_addr(), "remove_peer", json!({ "addr": "node1.example:7740" })).await,
        json!({ "removed": "node1.example:7740" })
    );
    let (code, message) = error(loopback.local_addr(), "add_peer", json!(["no-port"])).await;
    assert_eq!(code, -32602, "{message}");
    // Checked by the transport's own rule before anything is answered: a sign in the port and
    // a host starting with '-' used to be answered "added", then dropped by the transport.
    for refused in ["node1.example:+7740", "-node1.example:7740", "[not-ipv6]:7740"] {
        let (code, message) = error(loopback.local_addr(), "add_peer", json!([refused])).await;
        assert_eq!(code, -32602, "{refused}: {message}");
    }
    loopback.stop().await;

    let off = fake_server(RpcConfig { admin: AdminAccess::Off, ..loopback_config() }).await;
    for method in ["add_peer", "remove_peer"] {
        let (code, message, reason) = error_with_reason(off.local_addr(), method, json!(["10.0.0.5:7740"])).await;
        assert_eq!(code, i64::from(tinychain_rpc::code::ADMIN_ONLY), "{message}");
        assert_eq!(reason, data_code::ADMIN_ONLY);
        assert!(message.contains("admin"), "{message}");
    }
    // Read-only methods are unaffected.
    assert_eq!(result(off.local_addr(), "status", json!([])).await, json!({ "fake": true }));
    off.stop().await;

    let any = fake_server(RpcConfig { admin: AdminAccess::Any, ..loopback_config() }).await;
    assert_eq!(
        result(any.local_addr(), "add_peer", json!(["10.0.0.5:7740"])).await,
        json!({ "added": "10.0.0.5:7740" })
    );
    any.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics() {
    let server = fake_server(loopback_config()).await;
    let addr = server.local_addr();
    let health = http(addr, "GET", "/health", Vec::new()).await;
    assert_eq!(health.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&health.body).unwrap(),
        json!({ "status": "ok", "height": 7, "peers": 2 })
    );

    // Two calls of one method and one of another: each is timed under its method's name.
    result(addr, "status", json!([])).await;
    result(addr, "status", json!([])).await;
    let transfer = sign_transfer(&account_key(0), "fake", account_key(1).address(), 1, 1, 0);
    error_with_reason(addr, "submit_tx", json!([hex::encode(codec::encode(&transfer))])).await;
    let metrics = http(addr, "GET", "/metrics", Vec::new()).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"),
        "{}",
        metrics.headers
    );
    for line in [
        "tinychain_rpc_request_duration_seconds_count{method=\"status\"} 2",
        "tinychain_rpc_request_duration_seconds_count{method=\"submit_tx\"} 1",
        "# TYPE tinychain_rpc_request_duration_seconds histogram",
        "# TYPE tinychain_timeouts_fired_total counter",
        "# TYPE tinychain_tip_height gauge",
    ] {
        assert!(metrics.body.lines().any(|got| got == line), "missing {line:?} in\n{}", metrics.body);
    }
    server.stop().await;

    // A driver that is gone: health is 503, RPC calls an internal error, nothing panics.
    let (calls, receiver) = mpsc::channel::<QueuedCall>(1);
    drop(receiver);
    let orphan = rpc::start(loopback_config(), calls, telemetry(), None).await.unwrap();
    let health = http(orphan.local_addr(), "GET", "/health", Vec::new()).await;
    assert_eq!(health.status, 503, "{}", health.body);
    assert_eq!(http(orphan.local_addr(), "GET", "/metrics", Vec::new()).await.status, 503);
    let (code, message, reason) = error_with_reason(orphan.local_addr(), "status", json!([])).await;
    assert_eq!((code, reason.as_str()), (-32603, data_code::SHUTTING_DOWN));
    assert!(message.contains("shutting down"), "{message}");
    orphan.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_does_not_answer_times_out() {
    let (calls, mut receiver) = mpsc::channel::<QueuedCall>(4);
    // Takes every call (so it is the driver's to answer, not busy) without answering it.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(call) = receiver.recv().await {
            held.push(call.take());
        }
    });
    let server = rpc::start(loopback_config(), calls, telemetry(), None).await.unwrap();
    let started = Instant::now();
    let health = http(server.local_addr(), "GET", "/health", Vec::new()).await;
    assert_eq!(health.status, 503);
    assert!(started.elapsed() >= rpc::HEALTH_TIMEOUT, "{:?}", started.elapsed());
    let started = Instant::now();
    let (code, message, reason) = error_with_reason(server.local_addr(), "status", json!([])).await;
    assert_eq!(reason, data_code::TIMED_OUT);
    assert_eq!(code, -32603);
    assert!(message.contains("did not answer in time"), "{message}");
    assert!(started.elapsed() >= rpc::CALL_TIMEOUT, "{:?}", started.elapsed());
    server.stop().await;
    holder.abort();
}

/// An overloaded driver: a call it does not take within `QUEUE_WAIT_MAX` and a call that finds
/// the queue full are answered busy (-32009, `busy`), and the driver can no longer run the call
/// it finds later; a call the driver took in time is answered by the driver, however late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_driver_answers_busy_and_never_runs_what_it_answered_busy() {
    // A driver stuck in a long step: it takes nothing from a queue of one.
    let (calls, mut receiver) = mpsc::channel::<QueuedCall>(1);
    let server = rpc::start(loopback_config(), calls, telemetry(), None).await.unwrap();
    let addr = server.local_addr();
    let transfer = sign_transfer(&account_key(1), "busy-test", account_key(2).address(), 5, 0, 0);
    let started = Instant::now();
    let waiting = tokio::spawn(async move { error_with_reason(addr, "submit_tx", submit_params(&transfer)).await });
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.is_empty() {
        assert!(Instant::now() < deadline, "the first call never reached the queue");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The queue is full: the next call is answered busy at once, without waiting for the driver.
    let (code, message, reason) = error_with_reason(addr, "status", json!([])).await;
    assert_eq!((code, reason.as_str()), (i64::from(code::BUSY), data_code::BUSY), "{message}");
    assert!(message.contains("queue of calls is full") && message.contains("retry later"), "{message}");

    // The queued submit waits out QUEUE_WAIT_MAX, then is answered busy...
    let (code, message, reason) = waiting.await.unwrap();
    assert_eq!((code, reason.as_str()), (-32009, "busy"), "{message}");
    assert!(message.contains("busy") && message.contains("nothing was done"), "{message}");
    assert!(started.elapsed() >= rpc::QUEUE_WAIT_MAX, "{:?}", started.elapsed());
    // ...and the driver, getting to it now, finds it claimed: it cannot admit the transfer.
    let late = receiver.recv().await.expect("the call is still queued");
    assert!(late.take().is_none(), "a call answered busy must not reach the driver");
    server.stop().await;

    // A driver that takes a call in time but answers it after QUEUE_WAIT_MAX: the client gets the
    // driver's answer, never busy (the driver acted on it).
    let (calls, mut receiver) = mpsc::channel::<QueuedCall>(4);
    let slow = tokio::spawn(async move {
        while let Some(queued) = receiver.recv().await {
            let Some(Call { request, reply }) = queued.take() else { panic!("a call taken at once was claimed") };
            tokio::time::sleep(rpc::QUEUE_WAIT_MAX + Duration::from_millis(500)).await;
            let _ = reply.send(fake_answer(&request));
        }
    });
    let server = rpc::start(loopback_config(), calls, telemetry(), None).await.unwrap();
    assert_eq!(result(server.local_addr(), "status", json!([])).await, json!({ "fake": true }));
    server.stop().await;
    slow.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_until_one_closes() {
    let server = fake_server(RpcConfig { connections_max: 2, ..loopback_config() }).await;
    let addr = server.local_addr();
    let (first, second, third) = tokio::task::spawn_blocking(move || {
        let first = TcpStream::connect(addr).unwrap();
        let second = TcpStream::connect(addr).unwrap();
        let mut third = TcpStream::connect(addr).unwrap();
        third.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Vec::new();
        third.read_to_end(&mut raw).unwrap();
        (first, second, parse_reply(&raw))
    })
    .await
    .unwrap();
    assert_eq!(third.status, 503, "{}", third.body);
    assert!(third.body.contains("too many"), "{}", third.body);
    // The two held connections are served.
    let (first, held_status) = tokio::task::spawn_blocking(move || {
        let mut held = second;
        held.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        held.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        held.read_to_end(&mut raw).unwrap();
        (first, parse_reply(&raw).status)
    })
    .await
    .unwrap();
    assert_eq!(held_status, 200);
    drop(first);
    // Once they are closed, a new client is served (the server notices the close shortly).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = http(addr, "GET", "/health", Vec::new()).await;
        if reply.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still refused: {} {}", reply.status, reply.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

fn post_bytes(body: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bytes_do_not_stop_the_server() {
    let server = fake_server(loopback_config()).await;
    let addr = server.local_addr();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let hostile: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02garbage\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\ncontent-length: -5\r\n\r\n".to_vec(),
        format!("GET /{} HTTP/1.1\r\nconnection: close\r\n\r\n", "a".repeat(200_000)).into_bytes(),
        format!(
            "POST / HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{deep}",
            deep.len()
        )
        .into_bytes(),
        b"POST / HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 4\r\nconnection: close\r\n\r\n\xff\xfe\xfd\xfc".to_vec(),
        post_bytes(r#"{"jsonrpc":"2.0","id":1,"method":"get_block","params":[1e400]}"#),
        post_bytes(r#"{"jsonrpc":"2.0","id":1,"method":"get_block","params":{"height":1,"height":2}}"#),
        post_bytes(r#"{"jsonrpc":"2.0","id":1,"method":"get_history","params":["\u0000", 18446744073709551616]}"#),
    ];
    for bytes in hostile {
        tokio::task::spawn_blocking(move || {
            let Ok(mut stream) = TcpStream::connect(addr) else { return };
            stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let _ = stream.write_all(&bytes);
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        })
        .await
        .unwrap();
    }
    assert_eq!(result(addr, "status", json!([])).await, json!({ "fake": true }));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_lets_requests_in_flight_finish_then_refuses_connections() {
    let server =
        rpc::start(loopback_config(), fake_driver(Duration::from_millis(500)), telemetry(), None).await.unwrap();
    let addr = server.local_addr();
    let in_flight = tokio::spawn(async move { call(addr, "status", json!([])).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.stop().await;
    assert_eq!(in_flight.await.unwrap()["result"], json!({ "fake": true }));
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed after stop");
}

// ---- answers from a real node and storage ---------------------------------------------------------

/// A node, its database and a virtual clock, stepped as the driver would.
struct Chain {
    node: Node,
    storage: Storage,
    live: LiveInfo,
    now_ms: u64,
    wake_ms: u64,
    _dir: tempfile::TempDir,
}

impl Chain {
    fn new(genesis: Genesis) -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::create(&dir.path().join("chain.redb"), &genesis).unwrap();
        let config = NodeConfig {
            genesis,
            key: validator_key(0),
            verify_threads: 1,
            mempool: MempoolConfig::default(),
            unmeasured_metrics: (0, 0),
        };
        let node = Node::new(config, Arc::new(SignatureCache::new(10_000)));
        let mut chain = Chain { node, storage, live: LiveInfo::default(), now_ms: 0, wake_ms: 0, _dir: dir };
        chain.step(Event::MetricsSampled { cpu: 300, net: 100 });
        chain.live.metrics = Some(query::MetricSample { cpu_permille: 300, net_permille: 100, score: 200 });
        chain
    }

    /// Steps the node and carries out what a test needs: storage first, wake-ups, live info,
    /// drop records (after the step, as the driver writes them).
    fn step(&mut self, event: Event) -> Vec<Action> {
        let actions = self.node.step(self.now_ms, event);
        let mut dropped = Vec::new();
        for action in &actions {
            match action {
                Action::CommitBlocks(commit) => self.storage.commit(commit).unwrap(),
                Action::TxDropped(transfer) => {
                    self.live.record_transfer_dropped(&transfer.reason);
                    dropped.push((**transfer).clone());
                }
                Action::PersistReportState { last_vote, report_sequence } => {
                    self.storage.persist_report_state(*last_vote, *report_sequence).unwrap()
                }
                Action::WakeAt(at_ms) => self.wake_ms = *at_ms,
                Action::Trace(TraceEvent::BlockCommitted { rank, .. }) => {
                    self.live.record_block_committed(self.now_ms, *rank)
                }
                _ => {}
            }
        }
        self.storage.record_dropped(&dropped).unwrap();
        actions
    }

    fn context(&self) -> QueryContext<'_> {
        QueryContext { node: &self.node, storage: &self.storage, live: &self.live }
    }

    /// Answers a query directly (no server), as the driver's loop would.
    fn ask(&self, query: Query) -> Value {
        query::answer(&self.context(), &query).unwrap()
    }

    /// The figures behind `GET /metrics`.
    fn metrics(&self) -> Figures {
        query::metrics(&self.context())
    }

    fn run_until(&mut self, until_ms: u64) {
        while self.wake_ms <= until_ms {
            self.now_ms = self.now_ms.max(self.wake_ms);
            self.wake_ms = u64::MAX;
            self.step(Event::Tick);
        }
        self.now_ms = until_ms;
    }

    /// Runs until the tip is at least `height`.
    fn run_to_height(&mut self, height: Height) {
        while self.node.tip().height < height {
            assert!(self.wake_ms != u64::MAX, "the node asked for no wake-up at height {}", self.node.tip().height);
            let next = self.wake_ms;
            self.run_until(next);
            assert!(self.now_ms < 600_000, "no block {height} after ten virtual minutes");
        }
    }

    fn submit(&mut self, transfer: Transfer) -> Result<Hash, TxRejection> {
        let id = transfer_id(&transfer);
        for action in self.step(Event::TxSubmitted(transfer)) {
            match action {
                Action::TxAccepted { id: accepted } if accepted == id => return Ok(id),
                Action::TxRejected { id: rejected, reason } if rejected == id => return Err(reason),
                _ => {}
            }
        }
        panic!("no verdict on {id}");
    }

    fn height_of(&self, id: &Hash) -> Option<Height> {
        self.storage.tx_location(id).unwrap().map(|location| location.height)
    }
}

/// A server whose calls `drive` answers from `chain`.
async fn serve(chain: Chain) -> RpcServer {
    let telemetry = telemetry();
    rpc::start(loopback_config(), drive(chain, telemetry.clone()), telemetry, None).await.unwrap()
}

/// A test driver: read-only calls go to `query::answer`, transfers to the node, the figures of
/// `GET /metrics` to `telemetry`, as the real one does.
fn drive(mut chain: Chain, telemetry: Arc<Telemetry>) -> mpsc::Sender<QueuedCall> {
    let (sender, mut calls) = mpsc::channel::<QueuedCall>(16);
    tokio::spawn(async move {
        while let Some(queued) = calls.recv().await {
            let Some(Call { request, reply }) = queued.take() else { continue };
            let answer = match request {
                Request::Query(query) => query::answer(&chain.context(), &query),
                Request::Health => Ok(query::to_json(&query::health(&chain.context()))),
                Request::Metrics => {
                    telemetry.set_figures(chain.metrics());
                    Ok(Value::Null)
                }
                Request::Command(Command::SubmitTx { tx }) => {
                    chain.submit(tx).map(|id| json!({ "id": id })).map_err(QueryError::Rejected)
                }
                Request::Command(other) => panic!("this test driver has no network: {other:?}"),
            };
            let _ = reply.send(answer);
        }
    });
    sender
}

fn chain_id(chain: &Chain) -> String {
    chain.node.genesis().chain_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_from_a_real_node_and_storage() {
    let mut chain = Chain::new(fast_genesis(1, 2));
    let chain_id = chain_id(&chain);
    let (alice, bob) = (account_key(0), account_key(1));
    let fee = 10;

    // A: committed long ago, final. B: committed in the last blocks, not final yet. C: pending.
    let a = chain.submit(sign_transfer(&alice, &chain_id, bob.address(), 100, fee, 0)).unwrap();
    chain.run_to_height(3);
    let a_height = chain.height_of(&a).expect("A is committed");
    chain.run_to_height(a_height + 8);
    let b = chain.submit(sign_transfer(&alice, &chain_id, bob.address(), 50, fee, 1)).unwrap();
    while chain.height_of(&b).is_none() {
        let next = chain.node.tip().height + 1;
        chain.run_to_height(next);
    }
    let b_height = chain.height_of(&b).unwrap();
    let finalized = chain.node.finalized();
    assert!(a_height <= finalized.height, "A at {a_height} should be final (final at {})", finalized.height);
    assert!(b_height > finalized.height, "B at {b_height} should not be final yet (final at {})", finalized.height);
    let c = chain.submit(sign_transfer(&alice, &chain_id, alice.address(), 1, fee, 2)).unwrap();
    let tip = chain.node.tip();

    let server = serve(chain).await;
    let addr = server.local_addr();

    // status
    let status = result(addr, "status", json!([])).await;
    assert_eq!(status["chain_id"], chain_id);
    assert_eq!(status["tip"]["height"], tip.height);
    assert_eq!(status["tip"]["hash"], tip.hash.to_string());
    assert_eq!(status["finalized"]["height"], finalized.height);
    assert_eq!(status["name"], "node0");
    assert_eq!(status["mempool_size"], 1);
    assert_eq!(status["syncing"], false);
    assert_eq!(status["next_producer"]["name"], "node0");
    assert_eq!(status["metrics"]["cpu_permille"], 300);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));

    // get_block by height and by hash; get_header
    let block = result(addr, "get_block", json!({ "height": a_height })).await;
    assert_eq!(block["height"], a_height);
    assert!(block["transfers"].as_array().unwrap().iter().any(|transfer| transfer["id"] == a.to_string()));
    let by_hash = result(addr, "get_block", json!([block["hash"]])).await;
    assert_eq!(by_hash, block);
    let header = result(addr, "get_header", json!([a_height])).await;
    assert_eq!(header["hash"], block["hash"]);
    assert_eq!(header["transfer_count"], block["transfers"].as_array().unwrap().len());
    assert!(header.get("transfers").is_none());
    assert_eq!(header["final"], true);
    let genesis_block = result(addr, "get_block", json!([0])).await;
    assert_eq!(genesis_block["hash"], status["genesis_hash"]);
    let (code, message) = error(addr, "get_block", json!({ "height": tip.height + 1 })).await;
    assert_eq!(code, -32001);
    assert!(message.contains(&format!("no block at height {}", tip.height + 1)), "{message}");
    let (code, _) = error(addr, "get_header", json!({ "hash": Hash([7; 32]).to_string() })).await;
    assert_eq!(code, -32001);

    // get_tx: final, committed, pending, unknown
    let tx_a = result(addr, "get_tx", json!([a.to_string()])).await;
    assert_eq!(tx_a["status"], "final");
    assert_eq!(tx_a["height"], a_height);
    assert_eq!(tx_a["confirmations"], tip.height - a_height + 1);
    assert_eq!(tx_a["transfer"]["amount"], "100");
    assert_eq!(tx_a["transfer"]["from"], alice.address().to_string());
    assert_eq!(tx_a["block_hash"], block["hash"]);
    assert_eq!(result(addr, "get_tx", json!({ "id": b.to_string() })).await["status"], "committed");
    let tx_c = result(addr, "get_tx", json!([c.to_string()])).await;
    assert_eq!(tx_c["status"], "pending");
    assert_eq!(tx_c["transfer"]["nonce"], 2);
    assert_eq!(result(addr, "get_tx", json!([Hash([9; 32]).to_string()])).await["status"], "unknown");

    // get_account at the tip and at the final block
    let start = 1_000 * UNITS_PER_COIN;
    let at_tip = result(addr, "get_account", json!([alice.address().to_string()])).await;
    assert_eq!(at_tip["balance"], (start - 100 - fee - 50 - fee).to_string());
    assert_eq!(at_tip["nonce"], 2);
    assert_eq!(at_tip["pending_nonce"], 3);
    assert_eq!(at_tip["height"], tip.height);
    let at_final = result(addr, "get_account", json!({ "address": alice.address().to_string(), "at": "final" })).await;
    assert_eq!(at_final["balance"], (start - 100 - fee).to_string());
    assert_eq!(at_final["nonce"], 1);
    assert_eq!(at_final["height"], finalized.height);
    let bob_final = result(addr, "get_account", json!([bob.address().to_string(), "final"])).await;
    assert_eq!(bob_final["balance"], (start + 100).to_string());
    let nobody = result(addr, "get_account", json!([Address([5; 32]).to_string()])).await;
    assert_eq!((nobody["balance"].clone(), nobody["nonce"].clone()), (json!("0"), json!(0)));

    // get_history: newest first, pending separately, paging
    let history = result(addr, "get_history", json!([alice.address().to_string()])).await;
    let ids: Vec<&str> =
        history["transfers"].as_array().unwrap().iter().map(|entry| entry["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [b.to_string(), a.to_string()]);
    assert_eq!(history["transfers"][0]["direction"], "out");
    assert_eq!(history["transfers"][0]["counterparty"], bob.address().to_string());
    assert_eq!(history["transfers"][0]["height"], b_height);
    assert_eq!(history["transfers"][1]["fee"], fee.to_string());
    assert_eq!(history["pending"][0]["id"], c.to_string());
    assert_eq!(history["pending"][0]["direction"], "self");
    assert_eq!(history["next_before_height"], Value::Null);
    let bob_history = result(addr, "get_history", json!({ "address": bob.address().to_string() })).await;
    assert_eq!(bob_history["transfers"][0]["direction"], "in");
    assert_eq!(bob_history["transfers"][0]["counterparty"], alice.address().to_string());
    let page = result(addr, "get_history", json!({ "address": alice.address().to_string(), "limit": 1 })).await;
    assert_eq!(page["transfers"].as_array().unwrap().len(), 1);
    assert_eq!(page["transfers"][0]["id"], b.to_string());
    let next = page["next_before_height"].clone();
    let page = result(
        addr,
        "get_history",
        json!({ "address": alice.address().to_string(), "limit": 1, "before_height": next }),
    )
    .await;
    assert_eq!(page["transfers"][0]["id"], a.to_string());
    assert_eq!(page["pending"], json!([]), "pending transfers belong to the newest page");

    // get_mempool, estimate_fee, get_peers
    let mempool = result(addr, "get_mempool", json!([])).await;
    assert_eq!(mempool["count"], 1);
    assert_eq!(mempool["transfers"][0]["id"], c.to_string());
    let estimate = result(addr, "estimate_fee", json!([])).await;
    assert_eq!(estimate["fee"], "0", "the pool is far from full: the minimum fee");
    assert_eq!(estimate["min_fee"], "0");
    let peers = result(addr, "get_peers", json!([])).await;
    assert_eq!(peers, json!({ "connected": [], "validators_not_connected": [] }));

    // get_election: a committed height and the live one
    let election = result(addr, "get_election", json!([a_height])).await;
    assert_eq!(election["height"], a_height);
    assert_eq!(election["produced"]["name"], "node0");
    assert_eq!(election["produced"]["rank"], 0);
    assert_eq!(election["produced"]["block_hash"], block["hash"]);
    assert_eq!(election["candidates"][0]["name"], "node0");
    assert_eq!(election["missed_turn"], json!([]));
    let live = result(addr, "get_election", json!([])).await;
    assert_eq!(live["height"], tip.height + 1);
    assert_eq!(live["produced"], Value::Null);
    assert_eq!(live["candidates"][0]["rank"], 0);
    assert!(live["candidates"][0]["eligible_at_ms"].as_u64().unwrap() > 0);
    assert_eq!(error(addr, "get_election", json!([0])).await.0, -32001);
    assert_eq!(error(addr, "get_election", json!([tip.height + 2])).await.0, -32001);

    // submit_tx through RPC: accepted then pending; the same again is rejected with the reason.
    let d = sign_transfer(&bob, &chain_id, alice.address(), 7, fee, 0);
    let d_hex = hex::encode(codec::encode(&d));
    let accepted = result(addr, "submit_tx", json!({ "tx": d_hex })).await;
    assert_eq!(accepted["id"], transfer_id(&d).to_string());
    assert_eq!(result(addr, "get_tx", json!([transfer_id(&d).to_string()])).await["status"], "pending");
    let (code, message, reason) = error_with_reason(addr, "submit_tx", json!([d_hex])).await;
    assert_eq!((code, reason.as_str()), (-32002, data_code::DUPLICATE), "{message}");
    // A nonce the chain already used (A took alice's 0), and more than the sender holds: each
    // refusal names its reason in data.code.
    let used_nonce = sign_transfer(&alice, &chain_id, bob.address(), 1, fee, 0);
    let (code, message, reason) = error_with_reason(addr, "submit_tx", submit_params(&used_nonce)).await;
    assert_eq!((code, reason.as_str()), (-32002, data_code::NONCE_USED), "{message}");
    assert!(message.contains("nonce 0 was already used"), "{message}");
    let too_much = sign_transfer(&bob, &chain_id, alice.address(), 10_000 * UNITS_PER_COIN, fee, 1);
    let (code, message, reason) = error_with_reason(addr, "submit_tx", submit_params(&too_much)).await;
    assert_eq!((code, reason.as_str()), (-32002, data_code::INSUFFICIENT_BALANCE_WITH_PENDING), "{message}");

    // health and metrics from the real answers
    let health = http(addr, "GET", "/health", Vec::new()).await;
    assert_eq!(serde_json::from_str::<Value>(&health.body).unwrap()["height"], tip.height);
    let metrics = http(addr, "GET", "/metrics", Vec::new()).await.body;
    assert!(metrics.lines().any(|line| line == format!("tinychain_tip_height {}", tip.height)), "{metrics}");
    assert!(metrics.lines().any(|line| line == format!("tinychain_final_height {}", finalized.height)), "{metrics}");
    assert!(
        metrics.lines().any(|line| line == format!("tinychain_blocks_committed_total {}", tip.height)),
        "{metrics}"
    );
    assert!(metrics.lines().any(|line| line == "tinychain_mempool_transfers 2"), "{metrics}");
    assert!(metrics.lines().any(|line| line == "tinychain_timeouts_fired_total 0"), "{metrics}");

    // Every answer reads as the tinychain-rpc type clients deserialise, and writes back as sent.
    read_back::<StatusAnswer>(&status);
    read_back::<BlockAnswer>(&block);
    read_back::<BlockAnswer>(&genesis_block);
    read_back::<HeaderAnswer>(&header);
    read_back::<TxAnswer>(&tx_a);
    read_back::<TxAnswer>(&tx_c);
    read_back::<AccountAnswer>(&at_final);
    read_back::<HistoryAnswer>(&history);
    read_back::<MempoolAnswer>(&mempool);
    read_back::<FeeAnswer>(&estimate);
    read_back::<PeersAnswer>(&peers);
    read_back::<ElectionAnswer>(&election);
    read_back::<ElectionAnswer>(&live);
    read_back::<SubmitAnswer>(&accepted);
    read_back::<HealthAnswer>(&serde_json::from_str(&health.body).unwrap());
    server.stop().await;
}

/// Asserts `answer` deserialises as `T` and serialises back to the same JSON.
fn read_back<T: serde::de::DeserializeOwned + serde::Serialize>(answer: &Value) {
    let typed: T = serde_json::from_value(answer.clone())
        .unwrap_or_else(|error| panic!("not a {}: {error}: {answer}", std::any::type_name::<T>()));
    assert_eq!(&serde_json::to_value(typed).unwrap(), answer);
}

/// A genesis of two validators where validator 1 ranks first for block 1, so when only
/// validator 0 runs, block 1 comes at rank 1 after the producer timeout.
fn genesis_where_the_silent_validator_goes_first() -> Genesis {
    for genesis_time_ms in 0..256 {
        let genesis = Genesis { genesis_time_ms, ..fast_genesis(2, 0) };
        let (_, state) = tinychain_core::genesis::genesis_block(&genesis);
        let ranking = rank_candidates(&genesis, &vec![ValidatorRecord::default(); 2], &state.tip);
        if ranking[0].node == validator_key(1).address() {
            return genesis;
        }
    }
    panic!("no genesis time in 0..256 ranks validator 1 first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_where_a_validator_missed_its_turn() {
    let genesis = genesis_where_the_silent_validator_goes_first();
    let mut chain = Chain::new(genesis);
    chain.now_ms = chain.node.genesis().genesis_time_ms;
    chain.run_to_height(3);
    let block_1 = chain.storage.block_at(1).unwrap().unwrap();
    assert_eq!(block_1.header.rank, 1, "validator 0 produced block 1 after validator 1's timeout");
    let timeouts = chain.live.timeouts_fired;
    assert!(timeouts >= 1);

    let server = serve(chain).await;
    let addr = server.local_addr();
    let election = result(addr, "get_election", json!({ "height": 1 })).await;
    assert_eq!(election["produced"]["name"], "node0");
    assert_eq!(election["produced"]["rank"], 1);
    assert_eq!(
        election["missed_turn"],
        json!([{ "rank": 0, "node_id": validator_key(1).address().to_string(), "name": "node1" }])
    );
    assert_eq!(election["candidates"][0]["name"], "node1");
    assert_eq!(election["candidates"][0]["demotion"]["reason"], "no_report");
    let parameters = fast_genesis(2, 0).parameters;
    let rank_1_at = election["candidates"][1]["eligible_at_ms"].as_u64().unwrap();
    let rank_0_at = election["candidates"][0]["eligible_at_ms"].as_u64().unwrap();
    assert_eq!(rank_1_at - (rank_0_at - parameters.block_interval_ms), parameters.producer_timeout_ms);
    read_back::<ElectionAnswer>(&election);

    let peers = result(addr, "get_peers", json!([])).await;
    assert_eq!(peers["validators_not_connected"][0]["name"], "node1");
    assert_eq!(peers["validators_not_connected"][0]["addr"], "127.0.0.1:7741");

    let metrics = http(addr, "GET", "/metrics", Vec::new()).await.body;
    assert!(metrics.lines().any(|line| line == format!("tinychain_timeouts_fired_total {timeouts}")), "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_tx_answers_dropped_with_the_reason_and_the_transfer_that_took_its_place() {
    let mut chain = Chain::new(fast_genesis(1, 2));
    let chain_id = chain_id(&chain);
    let (alice, bob) = (account_key(0), account_key(1));

    // A is replaced in the mempool by B (same sender and nonce, higher fee): the core drops A.
    let transfer_a = sign_transfer(&alice, &chain_id, bob.address(), 100, 10, 0);
    let a = chain.submit(transfer_a.clone()).unwrap();
    let dropped_at_height = chain.node.tip().height;
    let b = chain.submit(sign_transfer(&alice, &chain_id, bob.address(), 100, 20, 0)).unwrap();
    chain.run_to_height(1);
    while chain.height_of(&b).is_none() {
        let next = chain.node.tip().height + 1;
        chain.run_to_height(next);
    }
    let b_height = chain.height_of(&b).unwrap();
    // C: a transfer for the same nonce that this node held elsewhere when B was committed (its
    // record as the core would write it), and D: pending now, with a stale record of an earlier
    // drop. A record never hides a better answer: B committed, D pending.
    let transfer_c = sign_transfer(&alice, &chain_id, bob.address(), 3, 5, 0);
    let c = transfer_id(&transfer_c);
    let d = chain.submit(sign_transfer(&alice, &chain_id, bob.address(), 4, 10, 1)).unwrap();
    let stale_d = DroppedTransfer {
        id: d,
        transfer: sign_transfer(&alice, &chain_id, bob.address(), 4, 10, 1),
        reason: DropReason::Unaffordable,
        tip_height: 1,
    };
    let stale_b = DroppedTransfer {
        id: b,
        transfer: sign_transfer(&alice, &chain_id, bob.address(), 100, 20, 0),
        reason: DropReason::NonceUsed,
        tip_height: 1,
    };
    let taken = DroppedTransfer {
        id: c,
        transfer: transfer_c,
        reason: DropReason::NonceTaken { by: b, height: b_height },
        tip_height: b_height,
    };
    chain.storage.record_dropped(&[taken, stale_d, stale_b]).unwrap();

    let server = serve(chain).await;
    let addr = server.local_addr();

    let tx_a = result(addr, "get_tx", json!([a.to_string()])).await;
    assert_eq!(
        tx_a,
        json!({
            "id": a.to_string(),
            "status": "dropped",
            "reason": "replaced",
            "message": format!("replaced by transfer {b}, which has the same sender and nonce and a higher fee"),
            "by": b.to_string(),
            "by_height": null,
            "dropped_at_height": dropped_at_height,
            "transfer": {
                "id": a.to_string(),
                "chain_id": chain_id,
                "from": alice.address().to_string(),
                "to": bob.address().to_string(),
                "amount": "100",
                "fee": "10",
                "nonce": 0,
                "signature": transfer_a.signature,
            },
        })
    );
    read_back::<TxAnswer>(&tx_a);
    let tx_c = result(addr, "get_tx", json!({ "id": c.to_string() })).await;
    assert_eq!(tx_c["status"], "dropped");
    assert_eq!(tx_c["reason"], "nonce_taken");
    assert_eq!(tx_c["by"], b.to_string());
    assert_eq!(tx_c["by_height"], b_height);
    assert_eq!(tx_c["dropped_at_height"], b_height);
    assert!(tx_c["message"].as_str().unwrap().contains(&format!("committed at height {b_height}")), "{tx_c}");
    assert_eq!(tx_c["transfer"]["fee"], "5");
    assert!(["committed", "final"]
        .contains(&result(addr, "get_tx", json!([b.to_string()])).await["status"].as_str().unwrap()));
    assert_eq!(result(addr, "get_tx", json!([d.to_string()])).await["status"], "pending");

    // The core's drop is counted since start, by reason; the record written directly is not.
    let status = result(addr, "status", json!([])).await;
    assert_eq!(status["transfers_dropped"], json!({ "total": 1, "by_reason": { "replaced": 1 } }));
    assert_eq!(status["journal_transfers"], 0, "this test driver journals nothing");
    let metrics = http(addr, "GET", "/metrics", Vec::new()).await.body;
    assert!(
        metrics.lines().any(|line| line == "tinychain_transfers_dropped_total{reason=\"replaced\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

#[test]
fn pending_nonce_is_withheld_until_the_first_mempool_sync_is_over() {
    // Validator 0 of two, alone: no peer answers, so the sync ends with the bounded wait.
    let mut chain = Chain::new(fast_genesis(2, 2));
    let producer_timeout_ms = chain.node.genesis().parameters.producer_timeout_ms;
    let chain_id = chain_id(&chain);
    let alice = account_key(0);
    // Accepted meanwhile, just not counted into a nonce the node would offer.
    chain.submit(sign_transfer(&alice, &chain_id, account_key(1).address(), 5, 10, 0)).unwrap();
    let address = alice.address();

    let account = chain.ask(Query::GetAccount { address, at: query::AccountAt::Tip });
    assert_eq!(account["pending_nonce"], Value::Null, "{account}");
    assert_eq!(account["mempool_synced"], false);
    assert_eq!(account["nonce"], 0);
    let status = chain.ask(Query::Status);
    assert_eq!(status["syncing"], true, "no block is ahead, but the mempool sync is not over: {status}");
    assert_eq!(status["mempool_synced"], false);
    assert_eq!(status["mempool_synced_peers"], 0);
    assert!(!chain.metrics().is_mempool_synced);

    chain.run_until(producer_timeout_ms - 1);
    assert_eq!(chain.ask(Query::GetAccount { address, at: query::AccountAt::Tip })["pending_nonce"], Value::Null);
    chain.run_until(producer_timeout_ms);
    let account = chain.ask(Query::GetAccount { address, at: query::AccountAt::Tip });
    // Nonce 0 is pending, or already in the block the node may have produced once synced.
    assert_eq!(account["pending_nonce"], 1, "{account}");
    assert_eq!(account["mempool_synced"], true);
    let status = chain.ask(Query::Status);
    assert_eq!(status["syncing"], false, "{status}");
    assert_eq!(status["mempool_synced"], true);
    assert!(chain.metrics().is_mempool_synced);
}

// ---- the pending-transfer journal through the real driver ------------------------------------------

/// Two validators, of which only validator 0 runs: its first mempool sync waits out a long
/// `producer_timeout_ms`, so it produces nothing during the test and every accepted transfer
/// stays pending. The validators' addresses are a port nothing listens on.
fn genesis_of_a_lonely_validator() -> Genesis {
    let mut genesis = fast_genesis(2, 3);
    genesis.parameters.producer_timeout_ms = 120_000;
    for validator in &mut genesis.validators {
        validator.addr = "127.0.0.1:1".to_string();
    }
    genesis
}

/// A running `driver::run` of validator 0 and how to stop it.
struct RunningNode {
    rpc: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), driver::DriverError>>,
}

async fn start_node(genesis: &Genesis, database: &Path) -> RunningNode {
    let options = DriverOptions {
        genesis: genesis.clone(),
        key: validator_key(0),
        database: database.to_path_buf(),
        p2p_listen: "127.0.0.1:0".parse().unwrap(),
        seeds: Vec::new(),
        rpc: Some(loopback_config()),
        metrics_interval_ms: 1_000,
        metrics_window: 5,
        link_capacity_mbit: 1_000,
        mempool: MempoolConfig::default(),
        record: None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let (started_sender, started) = oneshot::channel::<Started>();
    let task = tokio::spawn(driver::run(
        options,
        async move {
            let _ = stopped.await;
        },
        move |started| {
            let _ = started_sender.send(started);
        },
    ));
    let started = started.await.expect("the driver starts");
    RunningNode { rpc: started.rpc.expect("RPC is on"), stop, task }
}

impl RunningNode {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().expect("the driver stops cleanly");
    }
}

fn submit_params(transfer: &Transfer) -> Value {
    json!([hex::encode(codec::encode(transfer))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_transfers_are_journaled_and_resubmitted_after_a_restart() {
    let genesis = genesis_of_a_lonely_validator();
    let chain_id = genesis.chain_id.clone();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("data").join("chain.redb");
    let receiver = account_key(9).address();

    let node = start_node(&genesis, &database).await;
    let addr = node.rpc;
    // Three senders at once, four nonces each in order: calls that queue up together are
    // answered as one batch with one journal write.
    let mut senders = Vec::new();
    for sender in 0..3 {
        let chain_id = chain_id.clone();
        senders.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            for nonce in 0..4 {
                let transfer = sign_transfer(&account_key(sender), &chain_id, receiver, 1 + nonce, 10, nonce);
                let answer = result(addr, "submit_tx", submit_params(&transfer)).await;
                assert_eq!(answer["id"], transfer_id(&transfer).to_string());
                accepted.push((transfer_id(&transfer), transfer));
            }
            accepted
        }));
    }
    let mut accepted: Vec<(Hash, Transfer)> = Vec::new();
    for sender in senders {
        accepted.extend(sender.await.unwrap());
    }
    // A fee bump: X is replaced by Y, and the driver records X as dropped.
    let x = sign_transfer(&account_key(0), &chain_id, receiver, 50, 10, 4);
    let y = sign_transfer(&account_key(0), &chain_id, receiver, 50, 20, 4);
    result(addr, "submit_tx", submit_params(&x)).await;
    result(addr, "submit_tx", submit_params(&y)).await;
    accepted.push((transfer_id(&y), y.clone()));
    let (x_id, y_id) = (transfer_id(&x), transfer_id(&y));

    let tx_x = result(addr, "get_tx", json!([x_id.to_string()])).await;
    assert_eq!((tx_x["status"].as_str(), tx_x["reason"].as_str()), (Some("dropped"), Some("replaced")), "{tx_x}");
    assert_eq!(tx_x["by"], y_id.to_string());
    let status = result(addr, "status", json!([])).await;
    assert_eq!(status["mempool_synced"], false, "{status}");
    assert_eq!(status["syncing"], true);
    assert_eq!(status["mempool_size"], accepted.len());
    assert_eq!(status["journal_transfers"], accepted.len());
    assert_eq!(status["transfers_dropped"], json!({ "total": 1, "by_reason": { "replaced": 1 } }));
    let account = result(addr, "get_account", json!([account_key(0).address().to_string()])).await;
    assert_eq!(account["pending_nonce"], Value::Null, "{account}");
    node.stop().await;

    // On disk: every acknowledged transfer, in sender, nonce, id order; X only as dropped.
    accepted.sort_by_key(|(id, transfer)| (transfer.from, transfer.nonce, *id));
    let storage = Storage::open(&database, &genesis).unwrap();
    assert_eq!(storage.journal().unwrap(), accepted);
    let x_record = storage.dropped(&x_id).unwrap().expect("X's drop is recorded");
    assert_eq!(x_record.reason, DropReason::Replaced { by: y_id });
    drop(storage);

    // A restart submits the journal to the core again: every transfer is pending once more.
    let node = start_node(&genesis, &database).await;
    let addr = node.rpc;
    let status = result(addr, "status", json!([])).await;
    assert_eq!(status["mempool_size"], accepted.len(), "{status}");
    for (id, _) in &accepted {
        assert_eq!(result(addr, "get_tx", json!([id.to_string()])).await["status"], "pending", "{id}");
    }
    assert_eq!(result(addr, "get_tx", json!([x_id.to_string()])).await["status"], "dropped");
    node.stop().await;
    let storage = Storage::open(&database, &genesis).unwrap();
    assert_eq!(storage.journal().unwrap(), accepted, "pending transfers stay in the journal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_entry_refused_after_a_restart_is_tried_again_after_the_mempool_sync_then_dropped() {
    let mut genesis = genesis_of_a_lonely_validator();
    genesis.parameters.producer_timeout_ms = 1_500;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("data").join("chain.redb");
    std::fs::create_dir_all(database.parent().unwrap()).unwrap();
    // What a crash leaves when a client sent nonce 0 to another node and nonce 1 here: nonce 1
    // alone in the journal. Before the mempool sync a peer might still bring nonce 0, so the
    // refusal (a nonce gap) is not final yet; after it, it is.
    let gapped = sign_transfer(&account_key(0), &genesis.chain_id, account_key(9).address(), 5, 10, 1);
    let gapped_id = transfer_id(&gapped);
    let storage = Storage::create(&database, &genesis).unwrap();
    storage.journal_add(&[(gapped_id, gapped.clone())]).unwrap();
    drop(storage);

    let node = start_node(&genesis, &database).await;
    let addr = node.rpc;
    let started = Instant::now();
    let answer = loop {
        let answer = result(addr, "get_tx", json!([gapped_id.to_string()])).await;
        if answer["status"] == "dropped" {
            break answer;
        }
        assert_eq!(answer["status"], "unknown", "{answer}");
        let status = result(addr, "status", json!([])).await;
        assert_eq!(status["mempool_synced"], false, "synced, yet the entry was not settled: {status}");
        assert!(started.elapsed() < Duration::from_secs(30), "never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer["reason"], "refused_after_restart", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("gap"), "{answer}");
    assert_eq!(answer["by"], Value::Null);
    let status = result(addr, "status", json!([])).await;
    assert_eq!(status["mempool_synced"], true);
    assert_eq!(status["journal_transfers"], 0, "the drop record took it out of the journal");
    assert_eq!(status["transfers_dropped"]["by_reason"]["refused_after_restart"], 1);
    node.stop().await;
}

/// `submit_txs`: each transfer answered on its own, in order (accepted, a duplicate, a used
/// nonce, a nonce gap), the accepted ones journaled; a transfer that does not decode fails the
/// whole call naming its position, and nothing of that call is submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_txs_answers_each_transfer_and_journals_the_accepted() {
    let genesis = genesis_of_a_lonely_validator();
    let chain_id = genesis.chain_id.clone();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("data").join("chain.redb");
    let receiver = account_key(9).address();
    let node = start_node(&genesis, &database).await;
    let addr = node.rpc;
    let transfer = |sender: usize, nonce: u64| sign_transfer(&account_key(sender), &chain_id, receiver, 5, 10, nonce);
    let hex_of = |transfer: &Transfer| hex::encode(codec::encode(transfer));

    let batch = [transfer(0, 0), transfer(0, 1), transfer(1, 0), transfer(0, 1), transfer(2, 5)];
    let answer = result(addr, "submit_txs", json!({ "txs": batch.iter().map(hex_of).collect::<Vec<_>>() })).await;
    let parsed: tinychain_rpc::SubmitTxsAnswer = serde_json::from_value(answer.clone()).unwrap();
    assert_eq!(parsed.accepted, 3, "{answer}");
    for (position, transfer) in batch.iter().enumerate().take(3) {
        assert_eq!(answer["results"][position]["id"], transfer_id(transfer).to_string(), "{answer}");
    }
    assert_eq!(answer["results"][3]["error"]["code"], -32002, "{answer}");
    assert_eq!(answer["results"][3]["error"]["data"]["code"], "duplicate", "{answer}");
    assert_eq!(answer["results"][4]["error"]["data"]["code"], "nonce_gap", "{answer}");
    let status = result(addr, "status", json!([])).await;
    assert_eq!(status["journal_transfers"], 3, "{status}");

    // One bad transfer fails the call; the good one before it is not submitted.
    let (code, message) = error(addr, "submit_txs", json!([[hex_of(&transfer(1, 1)), "not hex"]])).await;
    assert_eq!(code, -32602);
    assert!(message.contains("\"txs\"[1]") && message.contains("not hex"), "{message}");
    let (code, message) = error(addr, "submit_txs", json!([[]])).await;
    assert_eq!(code, -32602);
    assert!(message.contains("1 to 1000"), "{message}");
    let status = result(addr, "status", json!([])).await;
    assert_eq!(status["journal_transfers"], 3, "nothing of the refused call: {status}");
    node.stop().await;
}
