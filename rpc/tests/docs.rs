//! `docs/rpc.md` documents the whole schema: a `### \`method\`` section for every method in
//! `Method::ALL`, naming each of its params and every field of its answer, nested ones too
//! (`tip.height` needs `tip` and `height`), the `GET /health` section naming the health
//! answers' fields, and the "Error codes" section naming every `data.code`.
//!
//! The answers are one value of each type built here field by field (no `..Default::default()`,
//! so a field added to an answer type does not compile here until it has a value, and then
//! fails until the docs name it), with every `Option` filled and every variant present, so every
//! key the node can send shows up. A field counts as documented when its section names it as
//! `` `field` `` or `"field"`.

#![allow(clippy::unwrap_used)]

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tinychain_core::crypto::Keypair;
use tinychain_core::types::{Address, BlockHeader, Checkpoint, Hash, MetricReport, Signature, Vote};
use tinychain_core::validate::sign_transfer;
use tinychain_rpc::*;

fn docs() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/rpc.md")).unwrap()
}

/// The text under the heading line `heading`, up to the next heading of the same or a higher
/// level (lines in code blocks are not headings).
fn section<'a>(docs: &'a str, heading: &str) -> Option<&'a str> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = docs.find(&format!("\n{heading}\n"))? + 1;
    let mut end = start + heading.len() + 1;
    let mut in_code = false;
    for line in docs[end..].split_inclusive('\n') {
        in_code ^= line.starts_with("```");
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !in_code && hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            break;
        }
        end += line.len();
    }
    Some(&docs[start..end])
}

fn method_section(docs: &str, method: Method) -> &str {
    section(docs, &format!("### `{method}`")).unwrap_or_else(|| panic!("docs/rpc.md has no section for {method}"))
}

fn names(text: &str, name: &str) -> bool {
    text.contains(&format!("`{name}`")) || text.contains(&format!("\"{name}\""))
}

/// Every key of `value`, nested ones by their path (`tip.height`; a list's items as `list[]`).
fn key_paths(value: &Value, path: &str, paths: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                let item_path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                paths.insert(item_path.clone());
                key_paths(item, &item_path, paths);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{path}[]"), paths);
            }
        }
        _ => {}
    }
}

fn json(value: impl Serialize) -> Value {
    serde_json::to_value(value).unwrap()
}

// ---- one answer of each kind -------------------------------------------------------------------

const NAME: fn() -> Option<String> = || Some("node1".to_string());

fn hash(byte: u8) -> Hash {
    Hash([byte; 32])
}

fn address(byte: u8) -> Address {
    Address([byte; 32])
}

fn checkpoint(height: u64) -> Checkpoint {
    Checkpoint { height, hash: hash(height as u8) }
}

fn transfer() -> TransferWithId {
    let key = Keypair::from_secret_bytes(&[1; 32]);
    TransferWithId { id: hash(9), transfer: sign_transfer(&key, "c", address(2), 5, 1, 0) }
}

fn report() -> MetricReport {
    MetricReport {
        node: address(1),
        sequence: 4,
        tip: checkpoint(7),
        cpu: 300,
        net: 100,
        score: 200,
        vote: Some(Vote { source: checkpoint(5), target: checkpoint(7) }),
        signature: Signature::default(),
    }
}

fn header_answer() -> HeaderAnswer {
    HeaderAnswer {
        hash: hash(1),
        header: BlockHeader {
            chain_id: "c".into(),
            height: 7,
            prev_hash: hash(2),
            timestamp_ms: 1_000,
            producer: address(1),
            rank: 0,
            tx_root: hash(3),
            report_root: hash(4),
            evidence_root: hash(5),
            state_root: hash(6),
            signature: Signature::default(),
        },
        producer_name: NAME(),
        confirmations: 3,
        is_final: true,
        transfer_count: 1,
        report_count: 1,
        evidence_count: 3,
    }
}

fn evidence(objects: EvidenceObjects) -> EvidenceAnswer {
    EvidenceAnswer { id: hash(8), objects, offender: address(3), offender_name: NAME(), offence_height: Some(7) }
}

fn evidence_report() -> EvidenceReport {
    EvidenceReport {
        report_id: hash(4),
        sequence: 2,
        vote: Some(Vote { source: checkpoint(1), target: checkpoint(3) }),
    }
}

fn evidence_header() -> EvidenceHeader {
    EvidenceHeader { block_hash: hash(5), height: 3, prev_hash: hash(2), timestamp_ms: 900 }
}

fn history_transfer(height: Option<u64>) -> HistoryTransfer {
    HistoryTransfer {
        id: hash(9),
        direction: Direction::Out,
        counterparty: address(2),
        amount: 5,
        fee: 1,
        nonce: 0,
        height,
        index: height.map(|_| 0),
    }
}

fn candidate(demotion: ElectionDemotion) -> ElectionCandidate {
    ElectionCandidate {
        rank: 0,
        node_id: address(1),
        name: NAME(),
        score: Some(200),
        demotion: Some(demotion),
        jailed_until: Some(90),
        produced_in_window: 3,
        eligible_at_ms: 1_100,
    }
}

/// One or more answers of `method`, covering every key it can send.
fn answers(method: Method) -> Vec<Value> {
    match method {
        Method::Status => vec![json(StatusAnswer {
            chain_id: "c".into(),
            genesis_hash: hash(0),
            node_id: address(1),
            name: NAME(),
            is_validator: true,
            version: "0.1.0".into(),
            tip: Tip { height: 7, hash: hash(1), timestamp_ms: 1_000 },
            justified: checkpoint(6),
            finalized: checkpoint(5),
            peers: 3,
            mempool_size: 1,
            syncing: false,
            mempool_synced: true,
            mempool_synced_peers: 3,
            journal_transfers: 1,
            evidence_held: 1,
            evidence_pending: 0,
            evidence_offenders: vec![ValidatorName { node_id: address(3), name: NAME() }],
            jailed_validators: vec![JailedValidator { node_id: address(3), name: NAME(), until_height: 90 }],
            transfers_dropped: TransfersDropped { total: 1, by_reason: BTreeMap::from([("replaced".into(), 1)]) },
            metrics: Some(MetricSample { cpu_permille: 300, net_permille: 100, score: 200 }),
            next_producer: Some(NextProducer { node_id: address(1), name: NAME(), eligible_at_ms: 1_100 }),
            started_at_ms: 10,
            rpc_listen: Some("127.0.0.1:7741".into()),
            p2p_listen: Some("0.0.0.0:7740".into()),
            blocks_committed: 7,
            timeouts_fired: 0,
            last_block_at_ms: Some(1_000),
        })],
        Method::GetHeader => vec![json(header_answer())],
        Method::GetBlock => vec![json(BlockAnswer {
            header: header_answer(),
            transfers: vec![transfer()],
            reports: vec![ReportWithId { id: hash(4), report: report() }],
            evidence: vec![
                evidence(EvidenceObjects::DoubleProduction { first: evidence_header(), second: evidence_header() }),
                evidence(EvidenceObjects::DoubleVote { first: evidence_report(), second: evidence_report() }),
                evidence(EvidenceObjects::SurroundVote { outer: evidence_report(), inner: evidence_report() }),
            ],
        })],
        Method::GetTx => vec![
            json(TxAnswer {
                id: hash(9),
                status: TxState::Final,
                block: Some(TxInBlock { height: 7, block_hash: hash(1), index: 0, confirmations: 3 }),
                dropped: None,
                transfer: Some(transfer()),
            }),
            json(TxAnswer {
                id: hash(9),
                status: TxState::Dropped,
                block: None,
                dropped: Some(TxDropped {
                    reason: "nonce_taken".into(),
                    message: "its nonce was taken".into(),
                    by: Some(hash(8)),
                    by_height: Some(7),
                    dropped_at_height: 7,
                }),
                transfer: Some(transfer()),
            }),
        ],
        Method::GetAccount => vec![json(AccountAnswer {
            address: address(2),
            at: AccountAt::Final,
            height: 5,
            balance: 100,
            nonce: 1,
            pending_nonce: Some(2),
            mempool_synced: true,
        })],
        Method::GetHistory => vec![json(HistoryAnswer {
            address: address(2),
            transfers: vec![history_transfer(Some(7))],
            pending: vec![history_transfer(None)],
            next_before_height: Some(7),
        })],
        Method::GetMempool => vec![json(MempoolAnswer { count: 1, transfers: vec![transfer()] })],
        Method::GetElection => vec![json(ElectionAnswer {
            height: 7,
            parent: checkpoint(6),
            production_window_blocks: 100,
            production_cap_blocks: Some(50),
            candidates: vec![
                candidate(ElectionDemotion::NoReport),
                candidate(ElectionDemotion::StaleReport { tip_height: 3 }),
                candidate(ElectionDemotion::MissedTurn { at_height: 4 }),
                candidate(ElectionDemotion::OverProductionCap { produced: 51, cap: 50 }),
                candidate(ElectionDemotion::Jailed { until_height: 90 }),
            ],
            produced: Some(ProducedBlock {
                node_id: address(1),
                name: NAME(),
                rank: 1,
                block_hash: hash(1),
                timestamp_ms: 1_000,
            }),
            missed_turn: vec![MissedTurn { rank: 0, node_id: address(3), name: NAME() }],
        })],
        Method::GetPeers => vec![json(PeersAnswer {
            connected: vec![ConnectedPeer {
                node_id: address(1),
                name: NAME(),
                addr: Some("10.0.0.5:7740".into()),
                tip: Some(checkpoint(7)),
            }],
            validators_not_connected: vec![UnconnectedValidator {
                node_id: address(3),
                name: "node3".into(),
                addr: "10.0.0.7:7740".into(),
            }],
        })],
        Method::EstimateFee => {
            vec![json(FeeAnswer { fee: 1_001, min_fee: 0, mempool_size: 12_000, block_transfers_max: 10_000 })]
        }
        Method::SubmitTx => vec![json(SubmitAnswer { id: hash(9) })],
        Method::SubmitTxs => vec![json(SubmitTxsAnswer {
            accepted: 1,
            results: vec![
                SubmitResult::Accepted { id: hash(9) },
                SubmitResult::Refused {
                    error: SubmitError {
                        code: -32002,
                        message: "transfer rejected: ...".into(),
                        data: ErrorData { code: "nonce_used".into() },
                    },
                },
            ],
        })],
        Method::AddPeer => vec![json(AddPeerAnswer { added: "10.0.0.5:7740".into() })],
        Method::RemovePeer => vec![json(RemovePeerAnswer { removed: "10.0.0.5:7740".into() })],
    }
}

/// Where a method's answer fields are documented: its own section, and for `get_header`
/// (documented as `get_block`'s answer without the lists) `get_block`'s too.
fn answer_sections(docs: &str, method: Method) -> String {
    let mut text = method_section(docs, method).to_string();
    if method == Method::GetHeader {
        text.push_str(method_section(docs, Method::GetBlock));
    }
    text
}

/// The undocumented keys of `answers`, by path.
fn undocumented(text: &str, answers: &[Value]) -> Vec<String> {
    let mut paths = BTreeSet::new();
    for answer in answers {
        key_paths(answer, "", &mut paths);
    }
    paths
        .into_iter()
        .filter(|path| !names(text, path.rsplit(['.', ']']).next().unwrap_or(path).trim_start_matches('.')))
        .collect()
}

#[test]
fn every_method_has_a_section_naming_its_params_and_every_answer_field() {
    let docs = docs();
    let mut missing = Vec::new();
    for method in Method::ALL {
        let text = method_section(&docs, method);
        for param in method.param_names() {
            if !names(text, param) {
                missing.push(format!("{method}: param {param}"));
            }
        }
        let answers = answers(method);
        assert!(!answers.is_empty(), "{method} has no example answer");
        missing.extend(
            undocumented(&answer_sections(&docs, method), &answers).into_iter().map(|path| format!("{method}: {path}")),
        );
    }
    let health = section(&docs, "## `GET /health`").expect("docs/rpc.md has a GET /health section");
    let health_answers = [
        json(HealthAnswer { status: HealthStatus::Ok, height: 7, peers: 3 }),
        json(HealthRefusal { status: HealthStatus::Unavailable, reason: "the node did not answer in time".into() }),
    ];
    missing.extend(undocumented(health, &health_answers).into_iter().map(|path| format!("GET /health: {path}")));
    assert!(missing.is_empty(), "docs/rpc.md does not name these params and answer fields:\n{}", missing.join("\n"));
}

/// The "Error codes" section names every `data.code` a node answers.
#[test]
fn every_data_code_is_documented() {
    let docs = docs();
    let errors = section(&docs, "## Error codes").expect("docs/rpc.md has an Error codes section");
    let missing: Vec<&str> = data_code::ALL.iter().copied().filter(|name| !names(errors, name)).collect();
    assert!(missing.is_empty(), "docs/rpc.md's Error codes section does not name: {missing:?}");
}

/// The check itself: a key only a nested object has is found, and a section ends at the next
/// heading of its level.
#[test]
fn a_field_missing_from_its_section_is_found() {
    let docs = concat!(
        "## Methods\n\n### `status`\n\n```sh\n# not a heading\n```\n\n",
        "`tip` is {\"height\": 1}\n\n### `get_tx`\n\n`hash`\n",
    );
    let status = section(docs, "### `status`").unwrap();
    assert!(status.starts_with("### `status`\n") && status.contains("`tip`"), "{status}");
    assert!(!status.contains("get_tx"), "{status}");
    let answer = serde_json::json!({ "tip": { "height": 1, "hash": "00" } });
    assert_eq!(undocumented(status, &[answer]), ["tip.hash"]);
}
