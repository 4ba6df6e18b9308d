//! Real `tinychain` processes on loopback for the integration tests: a testnet initialised by
//! `tinychain testnet init` in a temporary directory with a fast genesis, each node started as
//! `tinychain node --home ...`, killed with SIGKILL or stopped with SIGTERM, and a small JSON-RPC
//! client. Tests hold `serial()` so only one network runs at a time on a 2-core machine.
//! `benches/node.rs` uses the same module (`#[path]`) for its figures. `load` is the senders'
//! load and the accounting of acknowledged transfers (`tests/acknowledged_transfers.rs`,
//! `benches/soak.rs`).

#![allow(dead_code)]

pub mod load;

use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub const EXE: &str = env!("CARGO_BIN_EXE_tinychain");

static SERIAL: Mutex<()> = Mutex::new(());

/// One network at a time: they compete for two cores and timing-sensitive ranks otherwise.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A base port with `count` consecutive free ports on 127.0.0.1 (checked by binding them).
pub fn free_ports(count: u16) -> u16 {
    for attempt in 0..200u32 {
        let base = 20_000 + (pseudo_random(attempt) % 30_000) as u16;
        let listeners: Vec<_> =
            (0..count).map_while(|offset| TcpListener::bind(("127.0.0.1", base + offset)).ok()).collect();
        if listeners.len() == count as usize {
            return base;
        }
    }
    panic!("no {count} consecutive free ports on 127.0.0.1");
}

fn pseudo_random(attempt: u32) -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    nanos ^ (std::process::id() << 7) ^ attempt.wrapping_mul(2_654_435_761)
}

/// Runs `tinychain ARGS`, returning stdout; panics with stderr if it fails.
pub fn tinychain(args: &[&str]) -> String {
    let output = Command::new(EXE).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "tinychain {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stdout).unwrap()
}

pub struct NodeInfo {
    pub name: String,
    pub id: String,
    pub rpc: String,
    pub home: PathBuf,
}

/// How long a node gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(20);
/// The RPC client's timeout per call.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(3);

/// How a node ended when it was asked to stop.
#[derive(Debug)]
pub enum Stopped {
    NotRunning,
    Exited(ExitStatus),
    /// Still running `STOP_GRACE` after SIGTERM, so killed.
    Killed,
}

/// A testnet's files and its running node processes; `Drop` kills every process it started.
pub struct Testnet {
    /// The temporary directory holding the testnet (`None` once `keep` was called).
    dir: Option<tempfile::TempDir>,
    /// Its path.
    pub root: PathBuf,
    pub nodes: Vec<NodeInfo>,
    pub children: Vec<Option<Child>>,
    agent: ureq::Agent,
}

impl Testnet {
    /// `tinychain testnet init` with the given timing into a fresh temporary directory.
    pub fn init(nodes: usize, block_interval_ms: u64, producer_timeout_ms: u64) -> Testnet {
        let dir = tempfile::tempdir().unwrap();
        let base = free_ports(2 * nodes as u16);
        let path = dir.path().join("net");
        tinychain(&[
            "testnet",
            "init",
            "--nodes",
            &nodes.to_string(),
            "--dir",
            path.to_str().unwrap(),
            "--base-port",
            &base.to_string(),
            "--block-interval-ms",
            &block_interval_ms.to_string(),
            "--producer-timeout-ms",
            &producer_timeout_ms.to_string(),
        ]);
        let layout: Value = serde_json::from_str(&std::fs::read_to_string(path.join("testnet.json")).unwrap()).unwrap();
        let nodes: Vec<NodeInfo> = layout["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|node| NodeInfo {
                name: node["name"].as_str().unwrap().to_string(),
                id: node["id"].as_str().unwrap().to_string(),
                rpc: format!("http://{}", node["rpc"].as_str().unwrap()),
                home: PathBuf::from(node["home"].as_str().unwrap()),
            })
            .collect();
        let children = nodes.iter().map(|_| None).collect();
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder().timeout_global(Some(RPC_TIMEOUT)).http_status_as_error(false).build(),
        );
        let root = dir.path().to_path_buf();
        Testnet { dir: Some(dir), root, nodes, children, agent }
    }

    pub fn path(&self) -> PathBuf {
        self.root.join("net")
    }

    /// Leaves the testnet's directory behind when the `Testnet` is dropped; returns its path.
    pub fn keep(&mut self) -> Option<PathBuf> {
        self.dir.take().map(tempfile::TempDir::keep)
    }

    pub fn start(&mut self, index: usize) {
        self.start_with_env(index, &[]);
    }

    /// `start` with extra environment variables for the node process (e.g. the test-only
    /// `TINYCHAIN_TEST_METRICS`, compiled in through the root package's dev-dependency).
    pub fn start_with_env(&mut self, index: usize, env: &[(&str, &str)]) {
        assert!(self.children[index].is_none(), "node {index} is already running");
        let home = &self.nodes[index].home;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(home.join("node.log")).unwrap();
        let child = Command::new(EXE)
            .args(["node", "--home", home.to_str().unwrap()])
            .env("RUST_LOG", node_log_filter())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[index] = Some(child);
    }

    pub fn start_all(&mut self) {
        for index in 0..self.nodes.len() {
            self.start(index);
        }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited successfully.
    pub fn stop(&mut self, index: usize) -> bool {
        self.signal_stop(index);
        match self.wait_exit(index, Instant::now() + STOP_GRACE) {
            Stopped::NotRunning => true,
            Stopped::Exited(status) => status.success(),
            Stopped::Killed => false,
        }
    }

    /// SIGTERM to every running node, then waits for each to exit.
    pub fn stop_all(&mut self) -> Vec<Stopped> {
        for index in 0..self.nodes.len() {
            self.signal_stop(index);
        }
        let deadline = Instant::now() + STOP_GRACE;
        (0..self.nodes.len()).map(|index| self.wait_exit(index, deadline)).collect()
    }

    fn signal_stop(&self, index: usize) {
        if let Some(child) = &self.children[index] {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
    }

    /// Reaps node `index`, killing it if it still runs at `deadline`.
    fn wait_exit(&mut self, index: usize, deadline: Instant) -> Stopped {
        let Some(mut child) = self.children[index].take() else { return Stopped::NotRunning };
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Stopped::Exited(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Stopped::Killed;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A JSON-RPC call to node `index`: `Ok(result)` or `Err(error object)`; `None` if unreachable.
    pub fn rpc(&self, index: usize, method: &str, params: Value) -> Option<Result<Value, Value>> {
        rpc_call(&self.agent, &self.nodes[index].rpc, method, params)
    }

    /// The result of a call that must succeed.
    pub fn rpc_ok(&self, index: usize, method: &str, params: Value) -> Value {
        match self.rpc(index, method, params.clone()) {
            Some(Ok(result)) => result,
            other => panic!("{method} {params} on node {index}: {other:?}\n{}", self.log(index)),
        }
    }

    pub fn status(&self, index: usize) -> Option<Value> {
        self.rpc(index, "status", json!({}))?.ok()
    }

    pub fn tip(&self, index: usize) -> Option<(u64, String)> {
        let status = self.status(index)?;
        Some((status["tip"]["height"].as_u64()?, status["tip"]["hash"].as_str()?.to_string()))
    }

    pub fn finalized(&self, index: usize) -> Option<(u64, String)> {
        let status = self.status(index)?;
        Some((status["finalized"]["height"].as_u64()?, status["finalized"]["hash"].as_str()?.to_string()))
    }

    pub fn header(&self, index: usize, height: u64) -> Option<Value> {
        self.rpc(index, "get_header", json!({ "height": height }))?.ok()
    }

    /// Waits until `condition` holds, polling every 100 ms; panics with `what` and the logs.
    pub fn wait_for<T>(&self, timeout: Duration, what: &str, mut condition: impl FnMut(&Testnet) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = condition(self) {
                return value;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = (0..self.nodes.len()).map(|index| self.log_tail(index, 30)).collect();
                panic!("timed out after {timeout:?} waiting for {what}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.nodes[index].home.join("node.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        let log = self.log(index);
        let all: Vec<&str> = log.lines().collect();
        format!(
            "--- {} (last {lines} lines)\n{}",
            self.nodes[index].name,
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    pub fn database(&self, index: usize) -> PathBuf {
        self.nodes[index].home.join("data").join("chain.redb")
    }

    pub fn genesis_path(&self) -> PathBuf {
        self.nodes[0].home.join("genesis.json")
    }

    pub fn home(&self, index: usize) -> &Path {
        &self.nodes[index].home
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The nodes' `RUST_LOG`: `info`, or `TINYCHAIN_NODE_LOG` when set (e.g.
/// `info,tinychain_core::node=debug` to see why each transfer was or was not pooled).
pub fn node_log_filter() -> String {
    std::env::var("TINYCHAIN_NODE_LOG").unwrap_or_else(|_| "info".to_string())
}

pub fn rpc_call(agent: &ureq::Agent, url: &str, method: &str, params: Value) -> Option<Result<Value, Value>> {
    let request = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let mut response = agent.post(url).send_json(&request).ok()?;
    let body: Value = response.body_mut().read_json().ok()?;
    match body.get("error") {
        Some(error) => Some(Err(error.clone())),
        None => Some(Ok(body.get("result").cloned().unwrap_or(Value::Null))),
    }
}

/// POSTs raw bytes to a node's RPC; returns (HTTP status, body text).
pub fn post_raw(url: &str, content_type: &str, body: &[u8]) -> Option<(u16, String)> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).http_status_as_error(false).build(),
    );
    let mut response = agent.post(url).header("content-type", content_type).send(body).ok()?;
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Some((status, text))
}

/// The first three fields of `/proc/loadavg`: how busy the shared machine was (the figures
/// programs print it beside their figures).
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// A figures program's setting from the environment, or its default; a value that does not
/// parse stops the program naming the variable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a valid value")),
        Err(_) => default,
    }
}
