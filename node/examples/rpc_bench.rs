//! Figures for the JSON-RPC server's own cost: `status` round trips over one keep-alive HTTP
//! connection (ureq) against a driver that answers at once, so what is timed is the server
//! (hyper, jsonrpsee, the call channel) and the loopback, not the node.
//!
//! Run: `cargo run --release -p tinychain-node --example rpc_bench` (`-- --calls N`, default
//! 20,000). It prints microseconds per call and calls per second; it asserts only that every
//! call was answered, never a time (machines differ and are shared).

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;
use tinychain_node::query::{Call, Query, Request};
use tinychain_node::rpc::{self, QueuedCall, RpcConfig};
use tinychain_node::telemetry::Telemetry;
use tokio::sync::mpsc;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut calls: u32 = 20_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--calls" => calls = args.next().and_then(|text| text.parse().ok()).expect("--calls N"),
            other => panic!("unknown argument {other:?} (use --calls N)"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (sender, mut requests) = mpsc::channel::<QueuedCall>(16);
    let server = runtime.block_on(async {
        tokio::spawn(async move {
            while let Some(queued) = requests.recv().await {
                let Some(Call { request, reply }) = queued.take() else { continue };
                let answer = match request {
                    Request::Query(Query::Status) => Ok(json!({ "fake": true })),
                    other => panic!("the benchmark only calls status, got {other:?}"),
                };
                let _ = reply.send(answer);
            }
        });
        let config = RpcConfig { listen: "127.0.0.1:0".parse().unwrap(), ..RpcConfig::default() };
        rpc::start(config, sender, Arc::new(Telemetry::new(None)), None).await.unwrap()
    });
    let url = format!("http://{}/", server.local_addr());
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "status" });
    let started = Instant::now();
    for _ in 0..calls {
        let mut response = agent.post(&url).send_json(&body).unwrap();
        let answer: Value = response.body_mut().read_json().unwrap();
        assert_eq!(answer["result"], json!({ "fake": true }), "every call is answered");
    }
    let elapsed = started.elapsed();
    println!(
        "rpc status round trip over keep-alive: {:.1} us per call, {:.0} calls/s ({calls} calls, one client, fake driver)",
        elapsed.as_secs_f64() * 1e6 / f64::from(calls),
        f64::from(calls) / elapsed.as_secs_f64()
    );
    runtime.block_on(server.stop());
}
