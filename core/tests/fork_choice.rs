//! Table-driven fork choice: two branches are built block by block from genesis and delivered
//! to an observing node in both orders; the winner must be the same either way (never "first
//! seen"). Rules in order: highest justified block, then longest, then lower ranks from the fork
//! point, then the lower hash of the first differing block.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use tinychain_core::codec::report_signing_bytes;
use tinychain_core::crypto::{Keypair, SignatureCache};
use tinychain_core::election::{eligible_at_ms, rank_candidates};
use tinychain_core::genesis::{genesis_block, Genesis};
use tinychain_core::message::Message;
use tinychain_core::node::{Event, Node, NodeConfig};
use tinychain_core::state::ChainState;
use tinychain_core::testkit::{account_key, fast_genesis, seeded_key, sign_transfer, validator_key};
use tinychain_core::types::{Block, Checkpoint, Hash, MetricReport, Signature, Vote};
use tinychain_core::validate::{apply_block, build_block, BlockContext};

/// A branch under construction: its blocks and the state and hashes after its tip.
#[derive(Clone)]
struct Branch {
    state: ChainState,
    hashes: Vec<Hash>,
    blocks: Vec<Arc<Block>>,
    sequence: u64,
}

fn key_of(genesis: &Genesis, id: &tinychain_core::types::Address) -> Keypair {
    let index = genesis.validator_index(id).unwrap();
    validator_key(index)
}

impl Branch {
    fn from_genesis(genesis: &Genesis) -> Branch {
        let (_, state) = genesis_block(genesis);
        Branch { hashes: vec![state.tip.hash], state, blocks: Vec::new(), sequence: 0 }
    }

    /// Reports from `voters` voting (justified source -> current tip).
    fn votes(&mut self, genesis: &Genesis, voters: &[usize]) -> Vec<MetricReport> {
        self.sequence += 1;
        voters
            .iter()
            .map(|&voter| {
                let mut report = MetricReport {
                    node: validator_key(voter).address(),
                    sequence: self.sequence,
                    tip: self.state.tip,
                    cpu: 0,
                    net: 0,
                    score: 0,
                    vote: Some(Vote { source: self.state.finality.justified, target: self.state.tip }),
                    signature: Signature::default(),
                };
                report.signature = validator_key(voter).sign(&report_signing_bytes(&genesis.chain_id, &report));
                report
            })
            .collect()
    }

    fn extend(&mut self, genesis: &Genesis, rank: u32, reports: Vec<MetricReport>, with_transfer: bool) -> &mut Self {
        let producer = rank_candidates(genesis, &self.state.validators, &self.state.tip)[rank as usize].node;
        let timestamp_ms = eligible_at_ms(&genesis.parameters, self.state.tip_timestamp_ms, rank);
        let transfers = if with_transfer {
            vec![sign_transfer(
                &account_key(0),
                &genesis.chain_id,
                account_key(1).address(),
                1,
                0,
                self.state.account(&account_key(0).address()).nonce,
            )]
        } else {
            Vec::new()
        };
        let cache = SignatureCache::new(1_000);
        let hashes = self.hashes.clone();
        let ancestor_hash = move |height: u64| hashes.get(height as usize).copied();
        let context = BlockContext {
            genesis,
            state: &self.state,
            ancestor_hash: &ancestor_hash,
            now_ms: timestamp_ms,
            cache: &cache,
            verify_threads: 1,
        };
        let valid =
            build_block(&context, &key_of(genesis, &producer), rank, timestamp_ms, transfers, reports, Vec::new())
                .unwrap();
        let _undo = apply_block(&mut self.state, &valid);
        self.hashes.push(valid.hash);
        self.blocks.push(valid.block);
        self
    }

    fn tip(&self) -> Checkpoint {
        self.state.tip
    }
}

/// A node that only observes (its key is not a validator's), so it never produces or votes.
fn observer(genesis: &Genesis) -> Node {
    let config = NodeConfig {
        genesis: genesis.clone(),
        key: seeded_key("observer", 0),
        verify_threads: 1,
        mempool: Default::default(),
        unmeasured_metrics: (0, 0),
    };
    Node::new(config, Arc::new(SignatureCache::new(10_000)))
}

fn deliver(node: &mut Node, branch: &Branch) {
    let from = validator_key(0).address();
    for block in &branch.blocks {
        let _ = node.step(1_000_000, Event::MessageReceived { from, message: Message::Block(block.clone()) });
    }
}

struct Case {
    desc: &'static str,
    build: fn(&Genesis) -> (Branch, Branch),
    /// Which branch must win: 0 = first, 1 = second.
    winner: usize,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            desc: "a longer branch loses to a shorter one holding a higher justified block",
            build: |genesis| {
                let mut longer = Branch::from_genesis(genesis);
                for _ in 0..4 {
                    longer.extend(genesis, 1, vec![], false);
                }
                let mut justified = Branch::from_genesis(genesis);
                justified.extend(genesis, 0, vec![], false);
                let votes = justified.votes(genesis, &[0, 1, 2]);
                justified.extend(genesis, 0, votes, false);
                assert_eq!(justified.state.finality.justified.height, 1, "three of four votes justify block 1");
                (longer, justified)
            },
            winner: 1,
        },
        Case {
            desc: "with equal justification the longer branch wins, whatever its ranks",
            build: |genesis| {
                let mut short = Branch::from_genesis(genesis);
                short.extend(genesis, 0, vec![], false).extend(genesis, 0, vec![], false);
                let mut long = Branch::from_genesis(genesis);
                long.extend(genesis, 1, vec![], false).extend(genesis, 2, vec![], false).extend(
                    genesis,
                    1,
                    vec![],
                    false,
                );
                (short, long)
            },
            winner: 1,
        },
        Case {
            desc: "at equal length the lower rank at the first differing block wins",
            build: |genesis| {
                let mut late = Branch::from_genesis(genesis);
                late.extend(genesis, 1, vec![], false).extend(genesis, 0, vec![], false);
                let mut early = Branch::from_genesis(genesis);
                early.extend(genesis, 0, vec![], false).extend(genesis, 3, vec![], false);
                (late, early)
            },
            winner: 1,
        },
        Case {
            desc: "at equal ranks the lower hash of the first differing block wins",
            build: |genesis| {
                let mut with_transfer = Branch::from_genesis(genesis);
                with_transfer.extend(genesis, 0, vec![], true).extend(genesis, 0, vec![], false);
                let mut empty = Branch::from_genesis(genesis);
                empty.extend(genesis, 0, vec![], false).extend(genesis, 0, vec![], false);
                let lower = if with_transfer.hashes[1] < empty.hashes[1] { 0 } else { 1 };
                // Put the expected winner second so the case checks the rule, not the order.
                if lower == 0 {
                    (empty, with_transfer)
                } else {
                    (with_transfer, empty)
                }
            },
            winner: 1,
        },
    ]
}

#[test]
fn fork_choice_table() {
    let genesis = fast_genesis(4, 2);
    for case in cases() {
        let (first, second) = (case.build)(&genesis);
        let expected = if case.winner == 0 { first.tip() } else { second.tip() };
        for (label, order) in [("in order", [&first, &second]), ("reversed", [&second, &first])] {
            let mut node = observer(&genesis);
            deliver(&mut node, order[0]);
            deliver(&mut node, order[1]);
            assert_eq!(node.tip(), expected, "{} ({label})", case.desc);
            // The state is exactly the winning branch's.
            let winner = if case.winner == 0 { &first } else { &second };
            assert_eq!(node.state(), &winner.state, "{} ({label})", case.desc);
        }
    }
}
