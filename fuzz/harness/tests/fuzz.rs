//! Replays every kept fuzz corpus and every finding through the targets' bodies on the stable
//! toolchain (what CI runs instead of the fuzzer), and checks that each harness still reaches
//! the code it is meant to fuzz: a harness that stopped getting past the first check would
//! otherwise pass every replay while fuzzing nothing.
//!
//! `TINYCHAIN_WRITE_SEEDS=1 cargo test -p tinychain-fuzz-harness seeds` also writes the seed
//! files (real genesis, config and wallet files) into the corpora.

use std::path::{Path, PathBuf};
use tinychain_core::crypto::Keypair;
use tinychain_core::testkit::{account_key, fast_genesis, validator_key};
use tinychain_fuzz_harness::block_mutation::{self, Mutation, ReportInput, Resign};
use tinychain_fuzz_harness::evidence::{self, EvidenceInput, HeaderEdit};
use tinychain_fuzz_harness::fixture::Signer;
use tinychain_fuzz_harness::{config, frames, genesis, handshake, keystore, rpc, run, text, ByteFlip, TARGETS};
use tinychain_wallet::keystore::{KdfParams, Keystore};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/harness has a parent").to_path_buf()
}

/// The files in `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|entry| entry.expect("a readable directory").path()).collect();
    files.retain(|path| path.is_file());
    files.sort();
    files
}

/// Runs `target` on one file; a panic names the file.
fn replay_file(target: &str, path: &Path) -> String {
    let data = std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    match std::panic::catch_unwind(|| run(target, &data)) {
        Ok(outcome) => outcome,
        Err(_) => panic!("fuzz target {target} panics on {} (see the message above)", path.display()),
    }
}

/// Replays `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`; returns the outcomes.
fn replay(target: &str) -> Vec<String> {
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target} is empty or missing: run the target to make one");
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    corpus.iter().chain(&regressions).map(|path| replay_file(target, path)).collect()
}

/// Asserts some outcome of the replay starts with `prefix`: the corpus reaches that far.
fn assert_reaches(target: &str, outcomes: &[String], prefix: &str) {
    assert!(
        outcomes.iter().any(|outcome| outcome.starts_with(prefix)),
        "no input of fuzz/corpus/{target} reaches {prefix:?}; outcomes seen: {:?}",
        outcomes.iter().take(20).collect::<Vec<_>>()
    );
}

#[test]
fn every_target_has_a_corpus_and_a_fuzz_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (target, _) in TARGETS {
        assert!(manifest.contains(&format!("name = \"{target}\"")), "fuzz/Cargo.toml has no binary {target}");
        let source = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        let text = std::fs::read_to_string(&source).unwrap_or_else(|error| panic!("{}: {error}", source.display()));
        assert!(text.contains(&format!("run(\"{target}\"")), "{} does not run the {target} harness", source.display());
        assert!(!files(&fuzz_dir().join("corpus").join(target)).is_empty(), "fuzz/corpus/{target} is empty");
    }
}

#[test]
fn corpus_message_step() {
    let outcomes = replay("message_step");
    assert_reaches("message_step", &outcomes, "block:");
    assert_reaches("message_step", &outcomes, "blocks:");
}

#[test]
fn corpus_peer_session() {
    let outcomes = replay("peer_session");
    let chain_tip = format!("tip {}", tinychain_fuzz_harness::fixture::chain().tip_height());
    assert_reaches("peer_session", &outcomes, &chain_tip);
}

#[test]
fn corpus_block_validation() {
    let outcomes = replay("block_validation");
    assert_reaches("block_validation", &outcomes, "bad shape:");
}

#[test]
fn corpus_block_mutation() {
    let outcomes = replay("block_mutation");
    assert_reaches("block_mutation", &outcomes, "invalid:");
    assert_reaches("block_mutation", &outcomes, "valid");
}

#[test]
fn corpus_evidence() {
    let outcomes = replay("evidence");
    assert_reaches("evidence", &outcomes, "proves double_production");
    assert_reaches("evidence", &outcomes, "proves double_vote");
    assert_reaches("evidence", &outcomes, "proves surround_vote");
    assert_reaches("evidence", &outcomes, "refused: a report of the evidence");
}

#[test]
fn corpus_handshake() {
    let outcomes = replay("handshake");
    assert_reaches("handshake", &outcomes, "admitted");
    assert_reaches("handshake", &outcomes, "refused: peer");
}

#[test]
fn corpus_frames() {
    let outcomes = replay("frames");
    assert!(outcomes.iter().any(|outcome| outcome.contains("messages)") && !outcome.contains("(0 messages)")));
}

#[test]
fn corpus_rpc() {
    let outcomes = replay("rpc");
    assert!(outcomes.iter().any(|outcome| outcome.contains("answered")), "no corpus call is answered");
}

#[test]
fn corpus_genesis() {
    assert_reaches("genesis", &replay("genesis"), "valid");
}

#[test]
fn corpus_config() {
    assert_reaches("config", &replay("config"), "valid");
}

#[test]
fn corpus_keystore() {
    let outcomes = replay("keystore");
    assert!(outcomes.iter().any(|outcome| outcome.ends_with(" opened") && !outcome.ends_with(" 0 opened")));
}

#[test]
fn corpus_text() {
    let outcomes = replay("text");
    for kind in ["address", "amount", "allocation", "host:port"] {
        assert!(outcomes.iter().any(|outcome| outcome.split(',').any(|parsed| parsed == kind)), "no {kind}");
    }
}

// ---- findings, each replayed by name ---------------------------------------------------------------

/// A log filter with U+00A0 made tracing-subscriber 0.3.23 panic inside `check_log_filter`, so
/// a config with such a `log.level` (or such a RUST_LOG) crashed the node as it started.
#[test]
fn finding_log_filter_with_a_non_breaking_space() {
    let path = fuzz_dir().join("regressions/text/log-filter-with-a-non-breaking-space");
    assert_eq!(replay_file("text", &path), "");
}

// ---- the harnesses reach what they fuzz ----------------------------------------------------------

#[test]
fn an_unchanged_block_validates_and_a_changed_one_is_refused_for_its_change() {
    let unchanged = block_mutation::Input { height: 3, mutations: vec![], fix_roots: false, resign: None };
    assert_eq!(block_mutation::check(&unchanged), "valid");
    let resigned =
        block_mutation::Input { height: 3, mutations: vec![], fix_roots: true, resign: Some(Resign::Producer) };
    assert_eq!(block_mutation::check(&resigned), "valid");
    // A forged transfer in a block that is otherwise consistent: only the transfer check can
    // catch it.
    let forged = block_mutation::Input {
        height: 5,
        mutations: vec![Mutation::AddTransfer { from: 0, to: 1, amount: 1, fee: 1, nonce: 1_000 }],
        fix_roots: true,
        resign: Some(Resign::Producer),
    };
    let outcome = block_mutation::check(&forged);
    assert!(outcome.starts_with("invalid:") && outcome.contains("nonce"), "{outcome}");
    let report = ReportInput {
        signer: Signer::Outsider,
        sequence: 1,
        tip_height: 2,
        cpu: 1,
        net: 1,
        score: None,
        vote_source: None,
        tip_flip: None,
    };
    let outsider = block_mutation::Input {
        height: 5,
        mutations: vec![Mutation::AddReport(report)],
        fix_roots: true,
        resign: Some(Resign::Producer),
    };
    let outcome = block_mutation::check(&outsider);
    assert!(outcome.starts_with("invalid:"), "{outcome}");
}

fn vote(signer: u8, source: u8, target: u8, flip: Option<ByteFlip>) -> ReportInput {
    ReportInput {
        signer: Signer::Validator(signer),
        sequence: u64::from(target),
        tip_height: target,
        cpu: 10,
        net: 10,
        score: None,
        vote_source: Some(source),
        tip_flip: flip,
    }
}

#[test]
fn honest_looking_offences_are_proven_and_their_reversal_refused() {
    let edit = |timestamp_delta| HeaderEdit {
        timestamp_delta,
        rank: None,
        height_delta: None,
        prev_flip: None,
        tx_root_flip: None,
        chain_id: None,
    };
    let double_production =
        EvidenceInput::DoubleProduction { height: 4, first: edit(1), second: edit(2), signer: None, swap: false };
    assert_eq!(evidence::check_built(double_production.build()), "proves double_production");
    let double_vote = EvidenceInput::Votes {
        surround: false,
        first: vote(2, 1, 5, None),
        second: vote(2, 1, 5, Some(ByteFlip { index: 3, xor: 9 })),
        same_signer: true,
        same_target: false,
        swap: false,
    };
    assert_eq!(evidence::check_built(double_vote.build()), "proves double_vote");
    let surround = EvidenceInput::Votes {
        surround: true,
        first: vote(1, 1, 7, None),
        second: vote(1, 2, 5, None),
        same_signer: true,
        same_target: false,
        swap: false,
    };
    assert_eq!(evidence::check_built(surround.build()), "proves surround_vote");
    let swapped = EvidenceInput::Votes {
        surround: true,
        first: vote(1, 1, 7, None),
        second: vote(1, 2, 5, None),
        same_signer: true,
        same_target: false,
        swap: true,
    };
    assert!(evidence::check_built(swapped.build()).starts_with("refused:"));
}

fn handshake_input(claimed: Signer, signer: Signer) -> handshake::Input {
    handshake::Input {
        we_dial: true,
        our_nonce: [1; 32],
        their_nonce: [2; 32],
        claimed,
        signer,
        certificate: claimed,
        version: None,
        chain_id: None,
        wrong_role: false,
        exporter_flip: None,
        nonce_flip: None,
        signature_flip: None,
        already_connected: false,
    }
}

#[test]
fn an_honest_peer_is_admitted_and_an_impostor_refused() {
    assert_eq!(handshake::check(&handshake_input(Signer::Validator(2), Signer::Validator(2))), "admitted");
    let impostor = handshake::check(&handshake_input(Signer::Validator(2), Signer::Validator(3)));
    assert!(impostor.contains("does not verify"), "{impostor}");
    let mut reflected = handshake_input(Signer::Validator(1), Signer::Validator(1));
    reflected.wrong_role = true;
    assert!(handshake::check(&reflected).starts_with("refused:"));
}

#[test]
fn a_peer_session_syncs_the_chain_and_finalizes() {
    use tinychain_fuzz_harness::peer_session::{self, MessageInput, Step};
    let chain = tinychain_fuzz_harness::fixture::chain();
    let input = peer_session::Input {
        steps: vec![
            Step::Send { from: 0, message: MessageInput::Blocks { from: 0, count: u8::MAX } },
            Step::Tick { advance_ms: 100 },
        ],
    };
    let outcome = peer_session::check(&input);
    let final_height = chain.states.last().expect("a chain").tip.height;
    assert!(outcome.starts_with(&format!("tip {final_height}, final ")), "{outcome}");
    let final_part: u64 =
        outcome.split(", ").nth(1).and_then(|part| part.strip_prefix("final ")).unwrap().parse().unwrap();
    assert!(final_part > 0, "the fixture chain's votes finalize something: {outcome}");
}

#[test]
fn frames_follow_the_layout_in_any_pieces() {
    let status = tinychain_core::message::Message::Status { tip: Default::default(), finalized: Default::default() };
    let input = frames::Input {
        limit: 4_096,
        items: vec![
            frames::Item::Frame(status.encode()),
            frames::Item::Frame(vec![1, 2, 3]),
            frames::Item::Header(5_000),
        ],
        pieces: vec![1, 2, 3, 5, 8],
    };
    assert_eq!(frames::check(&input), "2 frames (1 messages), TooLarge(5000)");
}

#[test]
fn rpc_calls_reach_the_answers() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"get_block","params":[2]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"status"}"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"get_election","params":{}},{"method":"get_mempool","params":[]}]"#,
    ] {
        let outcome = rpc::run(&[&[0u8][..], body.as_bytes()].concat());
        assert!(outcome.split("; ").all(|verdict| verdict == "answered"), "{body}: {outcome}");
    }
    let refused = rpc::run(&[&[0u8][..], br#"{"method":"get_block","params":["nothex"]}"#].concat());
    assert!(refused.starts_with("refused:"), "{refused}");
}

/// Real files a user has, sealed or written the way the node writes them: the seeds of the
/// file targets' corpora.
fn seed_files() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let genesis = fast_genesis(4, 4);
    let mut genesis_text = serde_json::to_string_pretty(&genesis).expect("serialises");
    genesis_text.push('\n');
    let config = tinychain_node::config::Config::default().to_commented_toml();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut wallet = Keystore::create(dir.path()).expect("a new wallet");
    let keys: [(&str, Keypair); 2] = [("alice", account_key(0)), ("validator", validator_key(1))];
    for (name, key) in &keys {
        wallet.add_with_params(name, key, keystore::PASSPHRASE, KdfParams::INSECURE_FAST).expect("sealed");
    }
    let wallet_bytes = std::fs::read(wallet.path()).expect("the wallet file");
    let address = account_key(0).address().to_string();
    vec![
        ("genesis", "seed-genesis", genesis_text.into_bytes()),
        ("config", "seed-config", config.into_bytes()),
        ("keystore", "seed-wallet", wallet_bytes),
        ("text", "seed-address", address.clone().into_bytes()),
        ("text", "seed-amount", b"1000.5".to_vec()),
        ("text", "seed-allocation", format!("{address}=12.00000001").into_bytes()),
        ("text", "seed-host-port", b"node1.example.org:7740".to_vec()),
        // The first byte picks the raw mode: the rest is the HTTP body.
        ("rpc", "seed-get-block", b"\0{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"get_block\",\"params\":[2]}".to_vec()),
        ("rpc", "seed-batch", b"\0[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"},{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"get_account\",\"params\":{\"address\":\"tc1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq\",\"at\":\"final\"}}]".to_vec()),
    ]
}

#[test]
fn seeds_reach_the_checks_behind_parsing() {
    for (target, name, bytes) in seed_files() {
        let outcome = run(target, &bytes);
        let deep = match target {
            "genesis" | "config" => outcome == "valid",
            "keystore" => outcome == "2 keys, 2 opened",
            "rpc" => outcome.starts_with("answered"),
            _ => !outcome.is_empty(),
        };
        assert!(deep, "seed {name} of {target} stops at {outcome:?}");
        if std::env::var_os("TINYCHAIN_WRITE_SEEDS").is_some() {
            let dir = fuzz_dir().join("corpus").join(target);
            std::fs::create_dir_all(&dir).expect("a corpus directory");
            std::fs::write(dir.join(name), &bytes).expect("a seed file");
        }
    }
    assert_eq!(run("genesis", b"{}").split(':').next(), Some("unparsable"));
    assert_eq!(config::run(b"[p2p]\nlisten = 5\n").split(':').next(), Some("refused"));
    assert_eq!(genesis::run(b"\xff"), "not UTF-8");
    assert!(text::run(b"0.5").split(',').any(|parsed| parsed == "amount"));
}
