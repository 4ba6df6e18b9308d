//! The adversary: dishonest validators run the real core (`Node`), and the functions here
//! rewrite what goes in and what comes out, re-signing with the validator's own key (CometBFT's
//! maverick node is the model). The honest nodes never learn who is dishonest.
//!
//! Behaviours (`options::Behaviour`), each a plain rewrite of one step's actions:
//!
//! - `lie-metrics`: every metrics sample is fed to the core as cpu = net = 0.
//! - `equivocate`: its own new block also goes out as a twin (timestamp + 1 ms, re-signed; the
//!   state root does not cover the timestamp, so both are valid); each half of its peers gets one.
//! - `double-vote`: a report with a vote also goes out as a twin with the same sequence whose
//!   vote has the same target height and another target hash; one to each half.
//! - `surround-vote`: now and then a vote's source is moved one below the source of its
//!   previous vote, so it surrounds that vote.
//! - `withhold`: its own block is released late (within the producer timeout) or to one peer
//!   only; with every new tip it advertises a higher tip it does not have, and it answers no
//!   block request (the sync-stall attack of CometBFT advisory GO-2025-3442).
//! - `invalid`: half of its blocks go out with a wrong state root, a transfer with a wrong
//!   nonce, or a rank that is not the producer's; a third of its reports out of range. Each is
//!   re-signed, so only the rule under test fails.
//! - `spam`: duplicates of what it broadcasts and replays of stale messages it received, a few
//!   per broadcast, and now and then a request for the whole chain.
//! - `split`: the validator runs two cores with one key (the engine builds them). Each is
//!   honest inside; core A talks only to honest group A and the other dishonest validators'
//!   A cores, core B likewise. Together they vote for two branches and show each to one group.
//!
//! Every random choice comes from the core's own `SimRng` stream, and the dishonest validators
//! are chosen from a stream of their own, so an honest run draws nothing here.

use crate::options::{Behaviour, SimOptions};
use crate::rng::SimRng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use tinychain_core::codec;
use tinychain_core::crypto::{merkle_root, Keypair};
use tinychain_core::genesis::{genesis_block, Genesis};
use tinychain_core::message::Message;
use tinychain_core::node::{Action, Event, Node};
use tinychain_core::testkit::{account_key, sign_transfer, validator_key};
use tinychain_core::types::{Block, Checkpoint, Hash, MetricReport, NodeId, Vote};
use tinychain_core::validate::transfer_id;

/// Messages a spamming core remembers for replay.
const REPLAYABLE_MESSAGES_MAX: usize = 32;

/// One of the two honest groups of a split run.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Side {
    A,
    B,
}

/// Who is dishonest in a run and how, and (when one of them splits) which group each honest
/// validator belongs to.
#[derive(Clone, Debug, Default)]
pub struct Cast {
    /// Dishonest validator index -> its behaviours (never `All`).
    pub byzantine: BTreeMap<usize, BTreeSet<Behaviour>>,
    /// Honest validator index -> its group; empty unless some dishonest validator splits.
    pub honest_sides: BTreeMap<usize, Side>,
}

impl Cast {
    pub fn is_split(&self) -> bool {
        self.byzantine.values().any(|behaviours| behaviours.contains(&Behaviour::Split))
    }
}

/// Chooses the dishonest validators and their behaviours from the seed's "byzantine" stream.
pub fn choose_cast(options: &SimOptions) -> Cast {
    if options.byzantine == 0 {
        return Cast::default();
    }
    let mut rng = SimRng::stream(options.seed, "byzantine");
    let mut candidates: Vec<usize> = (0..options.nodes).collect();
    let count = options.byzantine.min(options.nodes);
    // A partial Fisher-Yates shuffle: the first `count` are the chosen ones.
    for position in 0..count {
        let pick = position + rng.below((candidates.len() - position) as u64) as usize;
        candidates.swap(position, pick);
    }
    let mut chosen: Vec<usize> = candidates[..count].to_vec();
    chosen.sort_unstable();
    let mut cast = Cast::default();
    for validator in chosen {
        let behaviours = if options.behaviours.contains(&Behaviour::All) {
            mixed_behaviours(&mut rng)
        } else {
            options.behaviours.iter().copied().filter(|behaviour| *behaviour != Behaviour::All).collect()
        };
        cast.byzantine.insert(validator, behaviours);
    }
    if cast.is_split() {
        let mut honest: Vec<usize> = (0..options.nodes).filter(|index| !cast.byzantine.contains_key(index)).collect();
        for position in 0..honest.len() {
            let pick = position + rng.below((honest.len() - position) as u64) as usize;
            honest.swap(position, pick);
        }
        for (position, validator) in honest.into_iter().enumerate() {
            cast.honest_sides.insert(validator, if position % 2 == 0 { Side::A } else { Side::B });
        }
    }
    cast
}

/// `all`: each behaviour with probability one half, at least one.
fn mixed_behaviours(rng: &mut SimRng) -> BTreeSet<Behaviour> {
    let mut behaviours: BTreeSet<Behaviour> = Behaviour::EACH.into_iter().filter(|_| rng.chance(500_000)).collect();
    if behaviours.is_empty() {
        behaviours.insert(Behaviour::EACH[rng.below(Behaviour::EACH.len() as u64) as usize]);
    }
    behaviours
}

/// The adversary wrapped around one dishonest core.
pub struct Adversary {
    pub validator: usize,
    pub behaviours: BTreeSet<Behaviour>,
    key: Keypair,
    genesis: Genesis,
    genesis_hash: Hash,
    rng: SimRng,
    /// The core's own last vote as the core signed it (surround votes are built against it).
    last_core_vote: Option<Vote>,
    /// Messages received lately, replayed by `spam`.
    replayable: VecDeque<Message>,
}

/// What the adversary makes of one step of its core.
#[derive(Default)]
pub struct Rewritten {
    pub actions: Vec<Action>,
    /// Messages sent later: (delay in ms, peer, message).
    pub delayed: Vec<(u64, NodeId, Message)>,
    /// What it did, for the trace.
    pub notes: Vec<String>,
}

pub fn new_adversary(
    genesis: &Genesis,
    seed: u64,
    validator: usize,
    side: Option<Side>,
    behaviours: BTreeSet<Behaviour>,
) -> Adversary {
    let side_name = side.map_or("", |side| if side == Side::A { "/a" } else { "/b" });
    Adversary {
        validator,
        behaviours,
        key: validator_key(validator),
        genesis: genesis.clone(),
        genesis_hash: tinychain_core::validate::block_hash(&genesis_block(genesis).0.header),
        rng: SimRng::stream(seed, &format!("adversary/{validator}{side_name}")),
        last_core_vote: None,
        replayable: VecDeque::new(),
    }
}

fn has(adversary: &Adversary, behaviour: Behaviour) -> bool {
    adversary.behaviours.contains(&behaviour)
}

/// Rewrites an event before the core sees it.
pub fn rewrite_event(adversary: &mut Adversary, event: Event) -> Event {
    match event {
        Event::MetricsSampled { .. } if has(adversary, Behaviour::LieMetrics) => {
            Event::MetricsSampled { cpu: 0, net: 0 }
        }
        Event::MessageReceived { from, message } => {
            if has(adversary, Behaviour::Spam) && !matches!(message, Message::Blocks(_) | Message::Pooled(_)) {
                adversary.replayable.push_back(message.clone());
                while adversary.replayable.len() > REPLAYABLE_MESSAGES_MAX {
                    adversary.replayable.pop_front();
                }
            }
            Event::MessageReceived { from, message }
        }
        event => event,
    }
}

/// Rewrites the actions of one step of the core. `peers` are the validators this core talks
/// to, in validator order.
pub fn rewrite_actions(adversary: &mut Adversary, node: &Node, peers: &[NodeId], actions: Vec<Action>) -> Rewritten {
    let me = node.node_id();
    let mut rewritten = Rewritten::default();
    for action in actions {
        match action {
            Action::Broadcast { message: Message::Block(block), except: None } if block.header.producer == me => {
                own_block(adversary, peers, block, &mut rewritten);
            }
            Action::Broadcast { message: Message::Report(report), except: None } if report.node == me => {
                own_report(adversary, node, peers, report, &mut rewritten);
            }
            Action::ServeBlocks { .. } | Action::SendTo { message: Message::Blocks(_), .. }
                if has(adversary, Behaviour::Withhold) => {}
            Action::Broadcast { message, except } => {
                if has(adversary, Behaviour::Spam) {
                    spam(adversary, peers, &message, &mut rewritten);
                }
                rewritten.actions.push(Action::Broadcast { message, except });
            }
            action => rewritten.actions.push(action),
        }
    }
    rewritten
}

/// The core's own new block: maybe corrupted, maybe twinned, maybe held back.
fn own_block(adversary: &mut Adversary, peers: &[NodeId], block: Arc<Block>, rewritten: &mut Rewritten) {
    let height = block.header.height;
    let mut block = block;
    if has(adversary, Behaviour::Invalid) && adversary.rng.chance(500_000) {
        let (corrupted, how) = corrupt_block(adversary, &block);
        rewritten.notes.push(format!("adversary sends an invalid block h={height} ({how})"));
        block = corrupted;
    }
    let mut sends: Vec<(Vec<NodeId>, Message)> = Vec::new();
    if has(adversary, Behaviour::Equivocate) && peers.len() >= 2 {
        let twin = resigned_block(adversary, &block, |block| block.header.timestamp_ms += 1);
        let (first_half, second_half) = halves(&mut adversary.rng, peers);
        rewritten.notes.push(format!(
            "adversary equivocates h={height}: two blocks to {} and {} peers",
            first_half.len(),
            second_half.len()
        ));
        sends.push((first_half, Message::Block(block)));
        sends.push((second_half, Message::Block(twin)));
    } else {
        sends.push((peers.to_vec(), Message::Block(block)));
    }
    if has(adversary, Behaviour::Spam) {
        for (_, message) in &sends {
            spam(adversary, peers, message, rewritten);
        }
    }
    let withhold = has(adversary, Behaviour::Withhold);
    for (recipients, message) in sends {
        if !withhold {
            for peer in recipients {
                rewritten.actions.push(Action::SendTo { peer, message: message.clone() });
            }
            continue;
        }
        if adversary.rng.chance(500_000) {
            // Late, but within the producer timeout, so the rank behind it may or may not win.
            let timeout_ms = adversary.genesis.parameters.producer_timeout_ms;
            let delay_ms = adversary.rng.range(timeout_ms / 5, timeout_ms.saturating_sub(timeout_ms / 10).max(1));
            rewritten.notes.push(format!("adversary holds block h={height} back for {delay_ms} ms"));
            for peer in recipients {
                rewritten.delayed.push((delay_ms, peer, message.clone()));
            }
        } else if !recipients.is_empty() {
            let peer = recipients[adversary.rng.below(recipients.len() as u64) as usize];
            rewritten.notes.push(format!("adversary sends block h={height} to one peer only"));
            rewritten.actions.push(Action::SendTo { peer, message });
        }
    }
}

/// The core's own new report: maybe out of range, maybe a surround vote, maybe twinned with a
/// conflicting vote; with `withhold`, followed by an advertised tip it will never serve.
fn own_report(
    adversary: &mut Adversary,
    node: &Node,
    peers: &[NodeId],
    report: MetricReport,
    rewritten: &mut Rewritten,
) {
    let core_vote = report.vote;
    let mut report = report;
    if has(adversary, Behaviour::Invalid) && adversary.rng.chance(333_333) {
        let cpu = 1_001 + adversary.rng.below(999) as u16;
        report.cpu = cpu;
        report.score = adversary.genesis.score(report.cpu, report.net);
        resign_report(adversary, &mut report);
        rewritten.notes.push(format!("adversary sends a report out of range (cpu {cpu})"));
    }
    if let (true, Some(vote), Some(previous)) =
        (has(adversary, Behaviour::SurroundVote), report.vote, adversary.last_core_vote)
    {
        let surrounds = previous.source.height >= 1 && previous.target.height < vote.target.height;
        if surrounds && adversary.rng.chance(333_333) {
            let height = previous.source.height - 1;
            let source = Checkpoint { height, hash: node.canonical_hash(height).unwrap_or_default() };
            report.vote = Some(Vote { source, target: vote.target });
            resign_report(adversary, &mut report);
            rewritten.notes.push(format!(
                "adversary votes {}->{} around its vote {}->{}",
                source.height, vote.target.height, previous.source.height, previous.target.height
            ));
        }
    }
    if core_vote.is_some() {
        adversary.last_core_vote = core_vote;
    }
    let mut sends: Vec<(Vec<NodeId>, Message)> = Vec::new();
    match report.vote {
        Some(vote) if has(adversary, Behaviour::DoubleVote) && peers.len() >= 2 => {
            let mut twin = report.clone();
            let target = Checkpoint { height: vote.target.height, hash: random_hash(&mut adversary.rng) };
            twin.tip = target;
            twin.vote = Some(Vote { source: vote.source, target });
            resign_report(adversary, &mut twin);
            let (first_half, second_half) = halves(&mut adversary.rng, peers);
            rewritten.notes.push(format!("adversary double-votes for h={}", vote.target.height));
            sends.push((first_half, Message::Report(report.clone())));
            sends.push((second_half, Message::Report(twin)));
        }
        _ => sends.push((peers.to_vec(), Message::Report(report.clone()))),
    }
    for (recipients, message) in sends {
        if has(adversary, Behaviour::Spam) {
            spam(adversary, peers, &message, rewritten);
        }
        for peer in recipients {
            rewritten.actions.push(Action::SendTo { peer, message: message.clone() });
        }
    }
    if has(adversary, Behaviour::Withhold) {
        let tip = Checkpoint { height: report.tip.height + 2, hash: random_hash(&mut adversary.rng) };
        let finalized = node.finalized();
        for peer in peers {
            rewritten.actions.push(Action::SendTo { peer: *peer, message: Message::Status { tip, finalized } });
        }
    }
}

/// A block that breaks one rule, re-signed: a wrong state root, a transfer with a wrong nonce,
/// or a rank that is not the producer's.
fn corrupt_block(adversary: &mut Adversary, block: &Arc<Block>) -> (Arc<Block>, &'static str) {
    let validators = adversary.genesis.validators.len() as u32;
    match adversary.rng.below(3) {
        0 => {
            let root = random_hash(&mut adversary.rng);
            (resigned_block(adversary, block, |block| block.header.state_root = root), "wrong state root")
        }
        1 => {
            let sender = account_key(adversary.rng.below(8) as usize);
            let recipient = account_key(adversary.rng.below(8) as usize).address();
            let transfer = sign_transfer(&sender, &adversary.genesis.chain_id, recipient, 1, 0, 1_000_000_000);
            let corrupted = resigned_block(adversary, block, |block| {
                block.transfers.push(transfer);
                block.header.tx_root = merkle_root(&block.transfers.iter().map(transfer_id).collect::<Vec<_>>());
            });
            (corrupted, "a transfer with a wrong nonce")
        }
        _ if validators >= 2 => {
            let rank = (block.header.rank + 1) % validators;
            (resigned_block(adversary, block, |block| block.header.rank = rank), "a rank not its own")
        }
        _ => (block.clone(), "none: a single validator has one rank"),
    }
}

/// A few duplicates of `message`, a few stale messages, and now and then a request for the
/// whole chain, to every peer: bounded, so a run stays fast.
fn spam(adversary: &mut Adversary, peers: &[NodeId], message: &Message, rewritten: &mut Rewritten) {
    if !adversary.rng.chance(250_000) {
        return;
    }
    let copies = adversary.rng.range(1, 3);
    let stale: Vec<Message> = (0..adversary.rng.range(0, 3))
        .filter_map(|_| {
            let count = adversary.replayable.len() as u64;
            (count > 0).then(|| adversary.replayable[adversary.rng.below(count) as usize].clone())
        })
        .collect();
    let ask_everything = adversary.rng.chance(100_000);
    for peer in peers {
        for _ in 0..copies {
            rewritten.actions.push(Action::SendTo { peer: *peer, message: message.clone() });
        }
        for old in &stale {
            rewritten.actions.push(Action::SendTo { peer: *peer, message: old.clone() });
        }
        if ask_everything {
            let locator = vec![Checkpoint { height: 0, hash: adversary.genesis_hash }];
            rewritten.actions.push(Action::SendTo { peer: *peer, message: Message::GetBlocks { locator } });
        }
    }
    rewritten.notes.push(format!("adversary spams {copies} copies and {} stale messages", stale.len()));
}

/// A copy of `block` changed by `change`, its header re-signed with the adversary's key.
fn resigned_block(adversary: &Adversary, block: &Arc<Block>, change: impl FnOnce(&mut Block)) -> Arc<Block> {
    let mut copy = (**block).clone();
    change(&mut copy);
    copy.header.signature = adversary.key.sign(&codec::header_signing_bytes(&copy.header));
    Arc::new(copy)
}

fn resign_report(adversary: &Adversary, report: &mut MetricReport) {
    report.signature = adversary.key.sign(&codec::report_signing_bytes(&adversary.genesis.chain_id, report));
}

/// The peers shuffled and cut in two (the first half is the smaller one when odd).
fn halves(rng: &mut SimRng, peers: &[NodeId]) -> (Vec<NodeId>, Vec<NodeId>) {
    let mut shuffled = peers.to_vec();
    for position in 0..shuffled.len() {
        let pick = position + rng.below((shuffled.len() - position) as u64) as usize;
        shuffled.swap(position, pick);
    }
    let second = shuffled.split_off(shuffled.len() / 2);
    (shuffled, second)
}

fn random_hash(rng: &mut SimRng) -> Hash {
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    Hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::parse_behaviours;

    #[test]
    fn the_cast_comes_from_the_seed_and_splits_the_honest_validators_in_two() {
        let mut options = SimOptions::new(7, 5, 60_000);
        options.byzantine = 2;
        options.behaviours = parse_behaviours("split").expect("valid");
        let cast = choose_cast(&options);
        assert_eq!(cast.byzantine.len(), 2);
        assert_eq!(cast.honest_sides.len(), 5);
        let sides_a = cast.honest_sides.values().filter(|side| **side == Side::A).count();
        assert_eq!(sides_a, 3, "groups of three and two");
        let again = choose_cast(&options);
        assert_eq!(again.byzantine, cast.byzantine);
        assert_eq!(again.honest_sides, cast.honest_sides);
        options.byzantine = 0;
        assert!(choose_cast(&options).byzantine.is_empty());
    }

    #[test]
    fn all_gives_every_dishonest_validator_at_least_one_behaviour() {
        for seed in 0..50 {
            let mut options = SimOptions::new(7, seed, 60_000);
            options.byzantine = 2;
            options.behaviours = parse_behaviours("all").expect("valid");
            let cast = choose_cast(&options);
            assert!(cast
                .byzantine
                .values()
                .all(|behaviours| !behaviours.is_empty() && !behaviours.contains(&Behaviour::All)));
        }
    }
}
