//! Target `rpc`: JSON-RPC calls as a client sends them, turned into requests by
//! `query::parse_request` and answered by `query::answer` from a real node and its redb
//! database (one validator, a few blocks with transfers, one transfer pending). Two modes,
//! picked by the first byte:
//! - raw: the rest is the HTTP body: parsed as jsonrpsee parses it, then every call in it (one
//!   object, or a batch of up to 50) is parsed and answered;
//! - structured: a known method with params built from values the chain holds (block hashes,
//!   transfer ids, addresses, heights, signed transfers) and values it does not.
//!
//! Oracle beyond "no panic": a read-only request that parses is answered without an internal
//! error (a missing thing is `NotFound`, never a failure of the node).

use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::sync::Arc;
use tinychain::rpc::Method;
use tinychain_core::codec;
use tinychain_core::crypto::SignatureCache;
use tinychain_core::node::{Action, Event, Node};
use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, validator_node};
use tinychain_core::types::{Hash, Height};
use tinychain_core::validate::transfer_id;
use tinychain_node::query::{self, LiveInfo, QueryContext, QueryError, Request};
use tinychain_node::storage::Storage;

/// A node that produced a few blocks alone, its database and what the driver would know.
struct Served {
    node: Node,
    storage: Storage,
    live: LiveInfo,
    block_hashes: Vec<Hash>,
    transfer_ids: Vec<Hash>,
    tip: Height,
    _dir: tempfile::TempDir,
}

fn step(served: &mut Served, now_ms: u64, event: Event, wake_ms: &mut u64) -> Vec<Action> {
    let actions = served.node.step(now_ms, event);
    for action in &actions {
        match action {
            Action::CommitBlocks(commit) => served.storage.commit(commit).expect("the fixture database writes"),
            Action::PersistReportState { last_vote, report_sequence } => {
                served.storage.persist_report_state(*last_vote, *report_sequence).expect("the fixture database writes")
            }
            Action::WakeAt(at_ms) => *wake_ms = (*wake_ms).min(*at_ms),
            _ => {}
        }
    }
    actions
}

fn serve() -> Served {
    let genesis = fast_genesis(1, 4);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let storage = Storage::create(&dir.path().join("chain.redb"), &genesis).expect("a fresh database");
    let node = validator_node(&genesis, 0, &Arc::new(SignatureCache::new(1_000)));
    let mut served = Served {
        node,
        storage,
        live: LiveInfo::default(),
        block_hashes: Vec::new(),
        transfer_ids: Vec::new(),
        tip: 0,
        _dir: dir,
    };
    let mut wake_ms = 0;
    step(&mut served, 0, Event::MetricsSampled { cpu: 300, net: 100 }, &mut wake_ms);
    let mut now_ms = 0;
    let mut nonce = 0;
    while served.node.tip().height < 6 {
        now_ms = now_ms.max(wake_ms);
        wake_ms = u64::MAX;
        step(&mut served, now_ms, Event::Tick, &mut wake_ms);
        if served.node.tip().height >= 2 && nonce < 3 {
            let transfer = sign_transfer(&account_key(0), &genesis.chain_id, account_key(1).address(), 5, 1, nonce);
            served.transfer_ids.push(transfer_id(&transfer));
            step(&mut served, now_ms, Event::TxSubmitted(transfer), &mut wake_ms);
            nonce += 1;
        }
        assert!(now_ms < 60_000, "the fixture node produces blocks");
    }
    let pending = sign_transfer(&account_key(2), &genesis.chain_id, account_key(3).address(), 7, 1, 0);
    served.transfer_ids.push(transfer_id(&pending));
    step(&mut served, now_ms, Event::TxSubmitted(pending), &mut wake_ms);
    served.tip = served.node.tip().height;
    served.block_hashes = (0..=served.tip)
        .filter_map(|height| served.storage.block_at(height).expect("the fixture database reads"))
        .map(|block| tinychain_core::validate::block_hash(&block.header))
        .collect();
    served
}

thread_local! {
    static SERVED: RefCell<Option<Served>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's served node, made on first use.
fn with_served<R>(f: impl FnOnce(&Served) -> R) -> R {
    SERVED.with(|served| f(served.borrow_mut().get_or_insert_with(serve)))
}

/// Parses one call and, if it is a query, answers it; returns the verdict.
fn call(method: &str, params: &Value) -> String {
    let Some(method) = Method::from_name(method) else { return "unknown method".to_string() };
    let query = match query::parse_request(method, params) {
        Err(error) => return format!("refused: {error}"),
        Ok(Request::Query(query)) => query,
        Ok(command) => return format!("for the driver: {command:?}"),
    };
    with_served(|served| {
        let context = QueryContext { node: &served.node, storage: &served.storage, live: &served.live };
        match query::answer(&context, &query) {
            Ok(answer) => {
                let _ = serde_json::to_string(&answer).expect("an answer serialises");
                "answered".to_string()
            }
            Err(QueryError::InvalidParams(reason) | QueryError::NotFound(reason)) => format!("refused: {reason}"),
            Err(error) => panic!("{query:?} failed inside the node: {error}"),
        }
    })
}

fn raw(body: &[u8]) -> String {
    let _ = serde_json::from_slice::<jsonrpsee::types::Request>(body);
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return "not JSON".to_string() };
    let calls = match value {
        Value::Array(calls) => calls,
        single => vec![single],
    };
    let mut verdicts = Vec::new();
    for call_value in calls.iter().take(tinychain_node::rpc::BATCH_REQUESTS_MAX as usize) {
        let Some(method) = call_value.get("method").and_then(Value::as_str) else { continue };
        let params = call_value.get("params").cloned().unwrap_or(Value::Null);
        verdicts.push(call(method, &params));
    }
    verdicts.join("; ")
}

#[derive(arbitrary::Arbitrary, Debug)]
pub struct Input {
    pub method: u8,
    pub params: ParamsInput,
}

#[derive(arbitrary::Arbitrary, Debug)]
pub enum ParamsInput {
    Absent,
    ByPosition(Vec<ValueInput>),
    ByName(Vec<(NameInput, ValueInput)>),
    Other(ValueInput),
}

#[derive(arbitrary::Arbitrary, Debug)]
pub enum NameInput {
    Known(u8),
    Other(String),
}

const NAMES: &[&str] = &["id", "address", "at", "limit", "before_height", "height", "hash", "tx", "addr"];

#[derive(arbitrary::Arbitrary, Debug)]
pub enum ValueInput {
    Null,
    Bool(bool),
    Int(i64),
    Unsigned(u64),
    Float(f64),
    Text(String),
    BlockHash(u8),
    TransferId(u8),
    Address(u8),
    Height(u8),
    Hex(Vec<u8>),
    /// A transfer signed by fixture account `from`, hex-encoded, maybe with a byte changed.
    Transfer {
        from: u8,
        amount: u64,
        fee: u64,
        nonce: u64,
        flip: Option<crate::ByteFlip>,
    },
    List(Vec<u8>),
    Object(Vec<(String, i64)>),
}

impl ValueInput {
    fn json(&self) -> Value {
        let known = |items: &[Hash], index: u8| {
            if items.is_empty() {
                return Value::Null;
            }
            json!(items[usize::from(index) % items.len()])
        };
        match self {
            ValueInput::Null => Value::Null,
            ValueInput::Bool(value) => json!(value),
            ValueInput::Int(value) => json!(value),
            ValueInput::Unsigned(value) => json!(value),
            ValueInput::Float(value) => json!(value),
            ValueInput::Text(text) => json!(text),
            ValueInput::BlockHash(index) => with_served(|served| known(&served.block_hashes, *index)),
            ValueInput::TransferId(index) => with_served(|served| known(&served.transfer_ids, *index)),
            ValueInput::Address(index) => json!(account_key(usize::from(*index) % 5).address().to_string()),
            ValueInput::Height(height) => json!(height % 10),
            ValueInput::Hex(bytes) => json!(hex::encode(bytes)),
            ValueInput::Transfer { from, amount, fee, nonce, flip } => {
                let chain_id = with_served(|served| served.node.genesis().chain_id.clone());
                let transfer = sign_transfer(
                    &account_key(usize::from(*from) % 4),
                    &chain_id,
                    account_key(1).address(),
                    *amount,
                    *fee,
                    *nonce,
                );
                let mut bytes = codec::encode(&transfer);
                if let Some(flip) = flip {
                    flip.apply(&mut bytes);
                }
                json!(hex::encode(&bytes))
            }
            ValueInput::List(items) => json!(items),
            ValueInput::Object(fields) => {
                Value::Object(fields.iter().map(|(name, value)| (name.clone(), json!(value))).collect::<Map<_, _>>())
            }
        }
    }
}

fn structured(input: &Input) -> String {
    let method = Method::ALL[usize::from(input.method) % Method::ALL.len()].as_str();
    let params = match &input.params {
        ParamsInput::Absent => Value::Null,
        ParamsInput::ByPosition(values) => Value::Array(values.iter().map(ValueInput::json).collect()),
        ParamsInput::ByName(fields) => Value::Object(
            fields
                .iter()
                .map(|(name, value)| {
                    let name = match name {
                        NameInput::Known(index) => NAMES[usize::from(*index) % NAMES.len()].to_string(),
                        NameInput::Other(name) => name.clone(),
                    };
                    (name, value.json())
                })
                .collect(),
        ),
        ParamsInput::Other(value) => value.json(),
    };
    format!("{method}: {}", call(method, &params))
}

pub fn run(data: &[u8]) -> String {
    crate::by_mode::<Input>(data, raw, structured)
}
