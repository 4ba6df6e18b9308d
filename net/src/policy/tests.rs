//! The peer policy on virtual time: no sockets, no clock, no OS randomness. Each test hands the
//! policy facts at chosen times and checks the orders it gives.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use super::*;
use std::collections::{BTreeSet, VecDeque};
use tinychain_core::testkit::{fast_genesis, validator_key};

const SEED: u64 = 7;

fn id(index: usize) -> NodeId {
    validator_key(index).address()
}

/// Where `fast_genesis` puts validator `index`.
fn genesis_address(index: usize) -> String {
    format!("127.0.0.1:{}", 7740 + index)
}

fn checked(addr: &str) -> PeerAddr {
    PeerAddr::parse(addr).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Limits without the dial yield, so every peer is dialed at once (tests of the yield set it).
fn no_yield() -> PolicyLimits {
    PolicyLimits { dial_yield_ms: 0, ..PolicyLimits::default() }
}

/// The policy of validator `local` in a genesis of `validators`, created at time 0.
fn policy(validators: usize, local: usize, limits: PolicyLimits, rng_seed: u64) -> PeerPolicy {
    policy_with(&fast_genesis(validators, 0), local, limits, rng_seed, &[], &[])
}

fn policy_with(
    genesis: &Genesis,
    local: usize,
    limits: PolicyLimits,
    rng_seed: u64,
    saved: &[PeerAddress],
    seeds: &[PeerAddr],
) -> PeerPolicy {
    PeerPolicy::new(PolicyConfig { local: id(local), limits, rng_seed }, genesis, saved, seeds, 0)
}

/// The dials among `outputs`.
fn dials(outputs: &[PolicyOutput]) -> Vec<(ConnectionId, NodeId, String, DialPurpose)> {
    outputs
        .iter()
        .filter_map(|output| match output {
            PolicyOutput::Dial { connection, peer, addr, purpose } => {
                Some((*connection, *peer, addr.clone(), *purpose))
            }
            _ => None,
        })
        .collect()
}

/// The one dial among `outputs`.
fn one_dial(outputs: &[PolicyOutput]) -> (ConnectionId, NodeId, String, DialPurpose) {
    let mut found = dials(outputs);
    assert_eq!(found.len(), 1, "one dial expected: {outputs:?}");
    found.remove(0)
}

fn failed() -> DialOutcome {
    DialOutcome::Failed { reason: "connection refused".into() }
}

/// The connection the policy admitted, or `None` if it refused.
fn admitted(outputs: &[PolicyOutput]) -> Option<ConnectionId> {
    let admissions: Vec<Option<ConnectionId>> = outputs
        .iter()
        .filter_map(|output| match output {
            PolicyOutput::Admit { connection, .. } => Some(Some(*connection)),
            PolicyOutput::Refuse { .. } => Some(None),
            _ => None,
        })
        .collect();
    assert_eq!(admissions.len(), 1, "one admission or refusal expected: {outputs:?}");
    admissions[0]
}

/// Dials the only other validator at once and fails every dial; returns the times of the first
/// `count` dials (each one at the policy's `next_timeout`).
fn times_of_failing_dials(rng_seed: u64, count: usize) -> Vec<u64> {
    let mut policy = policy(2, 0, no_yield(), rng_seed);
    let mut now_ms = 0;
    let mut outputs = policy.handle(now_ms, PolicyInput::TimerFired);
    let mut times = Vec::new();
    while times.len() < count {
        let (connection, peer, _, _) = one_dial(&outputs);
        assert_eq!(peer, id(1));
        times.push(now_ms);
        let after = policy.handle(now_ms, PolicyInput::DialFinished { connection, outcome: failed() });
        assert!(dials(&after).is_empty(), "a failed dial is not retried at once: {after:?}");
        now_ms = policy.next_timeout().unwrap();
        outputs = policy.handle(now_ms, PolicyInput::TimerFired);
    }
    times
}

#[test]
fn backoff_doubles_up_to_the_cap_and_jitter_adds_at_most_half() {
    let mut backoff = Backoff::new(250);
    let waits: Vec<u64> = (0..10).map(|_| backoff.after_failure(30_000)).collect();
    assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    assert_eq!(with_jitter(1000, 0), 1000);
    for random in [1, 12345, u64::MAX, 500, 499, 501] {
        let jittered = with_jitter(1000, random);
        assert!((1000..=1500).contains(&jittered), "{jittered}");
    }
    assert_eq!(with_jitter(1000, 500), 1500, "the whole half is reachable");
    assert_eq!(with_jitter(1, u64::MAX), 1);
}

#[test]
fn failed_dials_back_off_within_the_jitter_bounds_and_one_seed_gives_the_same_times() {
    let times = times_of_failing_dials(SEED, 12);
    let mut base_ms = 250;
    for pair in times.windows(2) {
        let wait_ms = pair[1] - pair[0];
        assert!(wait_ms >= base_ms && wait_ms <= base_ms + base_ms / 2, "wait {wait_ms} for a backoff of {base_ms}");
        base_ms = (base_ms * 2).min(30_000);
    }
    assert_eq!(times_of_failing_dials(SEED, 12), times, "the same seed gives the same dial times");
    assert_ne!(times_of_failing_dials(SEED + 1, 12), times, "another seed spreads them differently");
}

#[test]
fn next_timeout_is_exactly_when_the_next_dial_is_due() {
    // Four validators, all dials failing, with the yield for lower ids: at each timeout a dial
    // starts, and one millisecond before it none does.
    let mut policy = policy(4, 2, PolicyLimits::default(), SEED);
    let mut outputs = policy.handle(0, PolicyInput::TimerFired);
    let lower: BTreeSet<NodeId> = (0..4).map(id).filter(|peer| *peer < id(2)).collect();
    let started: BTreeSet<NodeId> = dials(&outputs).into_iter().map(|(_, peer, _, _)| peer).collect();
    let higher: BTreeSet<NodeId> = (0..4).filter(|index| *index != 2).map(id).filter(|peer| *peer > id(2)).collect();
    assert_eq!(started, higher, "peers with a higher id are dialed at once");
    let yielding = if lower.is_empty() { None } else { Some(500) };
    assert_eq!(policy.next_timeout(), yielding, "the peers with a lower id wait the dial yield");
    let mut now_ms = 0;
    for _ in 0..30 {
        for (connection, ..) in dials(&outputs) {
            let after = policy.handle(now_ms, PolicyInput::DialFinished { connection, outcome: failed() });
            assert!(dials(&after).is_empty());
        }
        let due_ms = policy.next_timeout().unwrap();
        assert!(due_ms > now_ms, "the timeout is ahead of now");
        let early = policy.handle(due_ms - 1, PolicyInput::TimerFired);
        assert!(dials(&early).is_empty(), "nothing is due a millisecond early: {early:?}");
        now_ms = due_ms;
        outputs = policy.handle(now_ms, PolicyInput::TimerFired);
        assert!(!dials(&outputs).is_empty(), "a dial starts at the timeout");
    }
}

/// Dials validator 1 from validator 0 at time 0 and authenticates it: returns the link.
fn linked(policy: &mut PeerPolicy) -> ConnectionId {
    let (connection, ..) = one_dial(&policy.handle(0, PolicyInput::TimerFired));
    let outputs = policy.handle(0, PolicyInput::DialFinished { connection, outcome: DialOutcome::Authenticated });
    assert_eq!(outputs[0], PolicyOutput::StartLink { connection, peer: id(1), outbound: true });
    assert!(matches!(&outputs[1], PolicyOutput::SendPeerList { connection: on, .. } if *on == connection));
    assert_eq!(policy.link_of(&id(1)), Some(connection));
    connection
}

#[test]
fn a_ban_blocks_dialing_and_admission_until_it_ends_and_doubles_per_offence() {
    let mut policy = policy(2, 0, no_yield(), SEED);
    let link = linked(&mut policy);

    // The driver disconnects the peer at 1 s: the link closes and the peer is banned for 10 s.
    let reason = "forged a signature".to_string();
    let outputs = policy.handle(1_000, PolicyInput::DisconnectRequested { peer: id(1), reason });
    assert_eq!(outputs, [PolicyOutput::Close { connection: link, peer: id(1), reason: CloseReason::ScoredDown }]);
    assert_eq!(policy.link_of(&id(1)), None, "a closing link carries nothing");
    let outputs = policy.handle(1_000, PolicyInput::LinkClosed { connection: link, end: LinkEnd::Stopped });
    assert!(outputs.is_empty(), "{outputs:?}");
    assert_eq!(policy.next_timeout(), Some(11_000), "the next dial is at the ban's end");
    assert_eq!(policy.stats().peers_scored_down, 1);

    // It dials us during the ban: the handshake succeeds, then the link is closed unannounced.
    let inbound = admitted(&policy.handle(5_000, PolicyInput::InboundArrived { ip: ip("127.0.0.1") })).unwrap();
    let outputs =
        policy.handle(5_000, PolicyInput::InboundHandshakeFinished { connection: inbound, peer: Some(id(1)) });
    assert_eq!(outputs, [PolicyOutput::Close { connection: inbound, peer: id(1), reason: CloseReason::Banned }]);

    assert!(dials(&policy.handle(10_999, PolicyInput::TimerFired)).is_empty());
    let (connection, ..) = one_dial(&policy.handle(11_000, PolicyInput::TimerFired));
    let outputs = policy.handle(11_000, PolicyInput::DialFinished { connection, outcome: DialOutcome::Authenticated });
    assert!(outputs.contains(&PolicyOutput::StartLink { connection, peer: id(1), outbound: true }));

    // A second offence (an invalid frame this time) bans it for twice as long.
    let end = LinkEnd::Misbehaved { reason: "oversized frame".into() };
    let outputs = policy.handle(12_000, PolicyInput::LinkClosed { connection, end });
    assert!(outputs.is_empty(), "{outputs:?}");
    assert_eq!(policy.next_timeout(), Some(32_000));
    assert_eq!(policy.stats().peers_scored_down, 2);
    let inbound = admitted(&policy.handle(31_999, PolicyInput::InboundArrived { ip: ip("127.0.0.1") })).unwrap();
    let outputs =
        policy.handle(31_999, PolicyInput::InboundHandshakeFinished { connection: inbound, peer: Some(id(1)) });
    assert_eq!(outputs, [PolicyOutput::Close { connection: inbound, peer: id(1), reason: CloseReason::Banned }]);
    // After the ban an inbound link is taken again.
    let inbound = admitted(&policy.handle(32_000, PolicyInput::InboundArrived { ip: ip("127.0.0.1") })).unwrap();
    let outputs =
        policy.handle(32_000, PolicyInput::InboundHandshakeFinished { connection: inbound, peer: Some(id(1)) });
    assert!(outputs.contains(&PolicyOutput::StartLink { connection: inbound, peer: id(1), outbound: false }));
}

#[test]
fn bans_double_per_offence_up_to_the_maximum() {
    let bans: Vec<u64> = (1..=9).map(|offences| misbehavior_ban_ms(offences, 10_000, 600_000) / 1000).collect();
    assert_eq!(bans, [10, 20, 40, 80, 160, 320, 600, 600, 600]);
    assert_eq!(misbehavior_ban_ms(u32::MAX, 10_000, 600_000), 600_000);
}

#[test]
fn the_one_link_rule_gives_both_ends_the_same_answer() {
    let low = id(0).min(id(1));
    let high = id(0).max(id(1));
    // Each case: (existing link dialed by the low node?, new link dialed by the low node?).
    for (existing_by_low, new_by_low) in [(true, false), (false, true), (true, true), (false, false)] {
        // On the low node, "outbound" means dialed by the low node; on the high node, the opposite.
        let low_keeps_new = keeps_new_link(low, high, existing_by_low, new_by_low);
        let high_keeps_new = keeps_new_link(high, low, !existing_by_low, !new_by_low);
        assert_eq!(low_keeps_new, high_keeps_new, "existing by low {existing_by_low}, new by low {new_by_low}");
    }
    // Different dialers: the low node's dial wins, whichever came first.
    assert!(keeps_new_link(low, high, false, true));
    assert!(!keeps_new_link(low, high, true, false));
    assert!(keeps_new_link(high, low, true, false));
    assert!(!keeps_new_link(high, low, false, true));
    // One dialer twice: the newer wins.
    assert!(keeps_new_link(low, high, true, true));
    assert!(keeps_new_link(high, low, true, true));
}

/// One end of a pair in the simultaneous-dial test: its policy, which physical connection each
/// of its connection ids is, and which it has started and not closed.
struct End {
    policy: PeerPolicy,
    physical: BTreeMap<ConnectionId, &'static str>,
    live: BTreeSet<&'static str>,
}

impl End {
    /// Hands in one fact and carries out the orders: a started link's close is answered by its
    /// reader returning, which may start the link that waited for it.
    fn handle(&mut self, input: PolicyInput) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            for output in self.policy.handle(0, input) {
                match output {
                    PolicyOutput::StartLink { connection, .. } => {
                        assert!(self.live.insert(self.physical[&connection]));
                    }
                    // A held connection is only dropped; a started one's reader returns.
                    PolicyOutput::Close { connection, .. } if self.live.remove(self.physical[&connection]) => {
                        inputs.push_back(PolicyInput::LinkClosed { connection, end: LinkEnd::Stopped });
                    }
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn two_policies_that_dial_each_other_at_once_keep_the_same_link_at_both_ends() {
    // Both handshakes complete at both ends, in every order at each end.
    for (first_order, second_order) in [(false, false), (false, true), (true, false), (true, true)] {
        let mut first = End { policy: policy(2, 0, no_yield(), 1), physical: BTreeMap::new(), live: BTreeSet::new() };
        let mut second = End { policy: policy(2, 1, no_yield(), 2), physical: BTreeMap::new(), live: BTreeSet::new() };
        // Link "a" is first's dial, link "b" second's.
        let (first_dial, ..) = one_dial(&first.policy.handle(0, PolicyInput::TimerFired));
        let (second_dial, ..) = one_dial(&second.policy.handle(0, PolicyInput::TimerFired));
        let second_inbound = admitted(&second.policy.handle(0, PolicyInput::InboundArrived { ip: ip("127.0.0.1") }));
        let first_inbound = admitted(&first.policy.handle(0, PolicyInput::InboundArrived { ip: ip("127.0.0.1") }));
        let (first_inbound, second_inbound) = (first_inbound.unwrap(), second_inbound.unwrap());
        first.physical.extend([(first_dial, "a"), (first_inbound, "b")]);
        second.physical.extend([(second_inbound, "a"), (second_dial, "b")]);

        let dialed = |connection| PolicyInput::DialFinished { connection, outcome: DialOutcome::Authenticated };
        let accepted = |connection, peer| PolicyInput::InboundHandshakeFinished { connection, peer: Some(peer) };
        let mut first_inputs = vec![dialed(first_dial), accepted(first_inbound, id(1))];
        let mut second_inputs = vec![accepted(second_inbound, id(0)), dialed(second_dial)];
        if first_order {
            first_inputs.reverse();
        }
        if second_order {
            second_inputs.reverse();
        }
        for input in first_inputs {
            first.handle(input);
        }
        for input in second_inputs {
            second.handle(input);
        }
        let kept = if id(0) < id(1) { "a" } else { "b" };
        let case = format!("orders {first_order} {second_order}");
        assert_eq!(first.live, BTreeSet::from([kept]), "{case}: the lower id's dial is kept");
        assert_eq!(second.live, first.live, "{case}: both ends keep the same link");
        assert_eq!(first.physical[&first.policy.link_of(&id(1)).unwrap()], kept);
        assert_eq!(second.physical[&second.policy.link_of(&id(0)).unwrap()], kept);
    }
}

#[test]
fn a_node_that_dials_again_replaces_the_link_its_peer_still_holds() {
    // The peer still holds the old inbound link when the same node's new dial arrives: the newer
    // is kept, and it starts only after the older has closed.
    let mut policy = policy(2, 0, no_yield(), SEED);
    let old = admitted(&policy.handle(0, PolicyInput::InboundArrived { ip: ip("127.0.0.1") })).unwrap();
    let _ = policy.handle(0, PolicyInput::InboundHandshakeFinished { connection: old, peer: Some(id(1)) });
    assert_eq!(policy.link_of(&id(1)), Some(old));
    let new = admitted(&policy.handle(10, PolicyInput::InboundArrived { ip: ip("127.0.0.1") })).unwrap();
    let outputs = policy.handle(10, PolicyInput::InboundHandshakeFinished { connection: new, peer: Some(id(1)) });
    assert_eq!(outputs, [PolicyOutput::Close { connection: old, peer: id(1), reason: CloseReason::Replaced }]);
    assert_eq!(policy.stats().links, 0, "the replaced link is closing; the new one has not started");
    let outputs = policy.handle(20, PolicyInput::LinkClosed { connection: old, end: LinkEnd::Stopped });
    assert!(outputs.contains(&PolicyOutput::StartLink { connection: new, peer: id(1), outbound: false }));
    assert_eq!(policy.link_of(&id(1)), Some(new));
}

#[test]
fn handshake_caps_hold_per_address_and_in_total_and_release_when_handshakes_end() {
    let limits = PolicyLimits { pending_handshakes_max: 3, pending_handshakes_per_ip_max: 2, ..no_yield() };
    let mut policy = policy(4, 0, limits, SEED);
    // Our own dials are under way and count against neither cap.
    assert_eq!(dials(&policy.handle(0, PolicyInput::TimerFired)).len(), 3);
    let first = arrive(&mut policy, "127.0.0.1").unwrap();
    let second = arrive(&mut policy, "127.0.0.1").unwrap();
    assert_eq!(arrive(&mut policy, "127.0.0.1"), None, "per-address cap");
    assert_eq!(arrive(&mut policy, "::ffff:127.0.0.1"), None, "an IPv4-mapped address is the same address");
    let third = arrive(&mut policy, "127.0.0.2").unwrap();
    assert_eq!(arrive(&mut policy, "127.0.0.3"), None, "total cap");

    // A failed handshake releases its place.
    let _ = policy.handle(0, PolicyInput::InboundHandshakeFinished { connection: first, peer: None });
    let fourth = arrive(&mut policy, "127.0.0.1").unwrap();
    // An authenticated one does too: links do not count.
    let outputs = policy.handle(0, PolicyInput::InboundHandshakeFinished { connection: fourth, peer: Some(id(1)) });
    assert!(outputs.contains(&PolicyOutput::StartLink { connection: fourth, peer: id(1), outbound: false }));
    let fifth = arrive(&mut policy, "127.0.0.1");
    assert!(fifth.is_some(), "an authenticated link leaves its address's place free");

    let stats = policy.stats();
    assert_eq!(stats.pending_handshakes, 3);
    assert_eq!(stats.pending_handshakes_peak, 3);
    assert_eq!(stats.pending_handshakes_per_ip_peak, 2);
    assert_eq!(stats.connections_refused_at_cap, 3);
    assert_eq!(stats.inbound_handshakes_failed, 1);
    for connection in [second, third, fifth.unwrap()] {
        let _ = policy.handle(0, PolicyInput::InboundHandshakeFinished { connection, peer: None });
    }
    assert_eq!(policy.stats().pending_handshakes, 0);
    assert!(policy.pending_per_ip.is_empty(), "no address keeps a count of zero");
}

/// A connection from `from` arrives at time 0: the connection admitted, or `None` if refused.
fn arrive(policy: &mut PeerPolicy, from: &str) -> Option<ConnectionId> {
    admitted(&policy.handle(0, PolicyInput::InboundArrived { ip: ip(from) }))
}

/// Fails the dial of validator 1 three times, then links it; returns the link and the time.
fn linked_after_three_failures(policy: &mut PeerPolicy) -> (ConnectionId, u64) {
    let mut outputs = policy.handle(0, PolicyInput::TimerFired);
    let mut now_ms = 0;
    for _ in 0..3 {
        let (connection, ..) = one_dial(&outputs);
        let _ = policy.handle(now_ms, PolicyInput::DialFinished { connection, outcome: failed() });
        now_ms = policy.next_timeout().unwrap();
        outputs = policy.handle(now_ms, PolicyInput::TimerFired);
    }
    let (connection, ..) = one_dial(&outputs);
    let _ = policy.handle(now_ms, PolicyInput::DialFinished { connection, outcome: DialOutcome::Authenticated });
    (connection, now_ms)
}

#[test]
fn a_link_that_stayed_up_resets_the_backoff_and_a_short_one_does_not() {
    // Three failures leave the next backoff at 2 s.
    let mut stable = policy(2, 0, no_yield(), SEED);
    let (link, up_at_ms) = linked_after_three_failures(&mut stable);
    let closed_at_ms = up_at_ms + 10_000;
    let _ = stable.handle(closed_at_ms, PolicyInput::LinkClosed { connection: link, end: LinkEnd::Closed });
    let wait_ms = stable.next_timeout().unwrap() - closed_at_ms;
    assert!((250..=375).contains(&wait_ms), "a link up for link_stable_after starts over: {wait_ms}");

    let mut short = policy(2, 0, no_yield(), SEED);
    let (link, up_at_ms) = linked_after_three_failures(&mut short);
    let closed_at_ms = up_at_ms + 9_999;
    let _ = short.handle(closed_at_ms, PolicyInput::LinkClosed { connection: link, end: LinkEnd::Idle });
    let wait_ms = short.next_timeout().unwrap() - closed_at_ms;
    assert!((2_000..=3_000).contains(&wait_ms), "a short-lived link keeps backing off: {wait_ms}");
    assert_eq!(short.stats().peers_scored_down, 0, "an idle link is not misbehaviour");
}

#[test]
fn a_seed_is_probed_then_identified_and_filed_and_its_validator_dialed_there() {
    let seed = checked("seed.example:7000");
    let mut policy = policy_with(&fast_genesis(2, 0), 0, no_yield(), SEED, &[], std::slice::from_ref(&seed));
    let outputs = policy.handle(0, PolicyInput::TimerFired);
    // Validator 1's genesis address is dialed; the seed is probed expecting validator 1, which
    // has a dial coming, so the probe stops after TLS.
    let found = dials(&outputs);
    assert_eq!(found.len(), 2, "{outputs:?}");
    assert_eq!(found[0].1, id(1));
    assert_eq!((found[0].2.as_str(), found[0].3), (genesis_address(1).as_str(), DialPurpose::Connect { attempt: 0 }));
    assert_eq!((found[1].1, found[1].2.as_str()), (id(1), seed.as_str()));
    assert_eq!(found[1].3, DialPurpose::Identify { authenticate: false });
    assert_eq!(policy.address_book().unidentified().collect::<Vec<_>>(), [seed.as_str()]);

    // TLS proves validator 1 is at the seed: filed as verified and saved.
    let outputs =
        policy.handle(10, PolicyInput::DialFinished { connection: found[1].0, outcome: DialOutcome::Identified });
    let saved = vec![PeerAddress { id: id(1), addr: seed.to_string() }];
    assert_eq!(outputs, [PolicyOutput::SavePeers { peers: saved }]);
    assert_eq!(policy.address_book().unidentified().count(), 0);
    // The genesis address fails: the next dial goes to the seed's address.
    let _ = policy.handle(20, PolicyInput::DialFinished { connection: found[0].0, outcome: failed() });
    let due_ms = policy.next_timeout().unwrap();
    let (_, peer, addr, purpose) = one_dial(&policy.handle(due_ms, PolicyInput::TimerFired));
    assert_eq!((peer, addr.as_str(), purpose), (id(1), seed.as_str(), DialPurpose::Connect { attempt: 1 }));
}

#[test]
fn a_seed_probe_for_a_validator_without_an_address_becomes_its_link_after_saving_it() {
    let mut genesis = fast_genesis(3, 0);
    genesis.validators[1].addr = "nowhere".into();
    genesis.validators[2].addr = "nowhere".into();
    let seeds = [checked("seed.example:7000"), checked("me.example:7000")];
    let mut policy = policy_with(&genesis, 0, no_yield(), SEED, &[], &seeds);
    let lowest = id(1).min(id(2));
    let other = id(1).max(id(2));
    let outputs = policy.handle(0, PolicyInput::TimerFired);
    let found = dials(&outputs);
    assert_eq!(found.len(), 2, "only the seeds are dialed: {outputs:?}");
    // Probes go in address order; each expects an idle validator, in id order, and holds its dial.
    assert_eq!((found[0].1, found[0].2.as_str()), (lowest, "me.example:7000"));
    assert_eq!((found[1].1, found[1].2.as_str()), (other, "seed.example:7000"));
    assert!(found.iter().all(|dial| dial.3 == DialPurpose::Identify { authenticate: true }));

    // One is our own address: forgotten, nobody dialed there.
    let outputs = policy.handle(
        5,
        PolicyInput::DialFinished { connection: found[0].0, outcome: DialOutcome::ReachedAnother { found: id(0) } },
    );
    assert!(outputs.is_empty(), "{outputs:?}");
    assert!(!policy.address_book().knows("me.example:7000"));
    // The other is the validator expected: saved first, then started as its link.
    let outputs =
        policy.handle(10, PolicyInput::DialFinished { connection: found[1].0, outcome: DialOutcome::Authenticated });
    let saved = vec![PeerAddress { id: other, addr: "seed.example:7000".into() }];
    assert_eq!(outputs[0], PolicyOutput::SavePeers { peers: saved });
    assert_eq!(outputs[1], PolicyOutput::StartLink { connection: found[1].0, peer: other, outbound: true });
    assert_eq!(policy.next_timeout(), None, "nothing left to dial: the lowest has no address");
}

#[test]
fn a_probe_that_reaches_another_validator_files_the_address_unverified_and_dials_it_at_once() {
    let seed = checked("seed.example:7000");
    let mut policy = policy_with(&fast_genesis(3, 0), 0, no_yield(), SEED, &[], std::slice::from_ref(&seed));
    let outputs = policy.handle(0, PolicyInput::TimerFired);
    let found = dials(&outputs);
    let probe = found.iter().find(|dial| dial.2 == seed.as_str()).unwrap();
    // The genesis dial of validator 2 fails; the probe then finds validator 2 at the seed.
    let genesis_dial = found.iter().find(|dial| dial.1 == id(2) && dial.2 != seed.as_str()).unwrap();
    let _ = policy.handle(1, PolicyInput::DialFinished { connection: genesis_dial.0, outcome: failed() });
    let outcome = DialOutcome::ReachedAnother { found: id(2) };
    let outputs = policy.handle(2, PolicyInput::DialFinished { connection: probe.0, outcome });
    let (_, peer, addr, purpose) = one_dial(&outputs);
    assert_eq!((peer, addr.as_str(), purpose), (id(2), seed.as_str(), DialPurpose::Connect { attempt: 1 }));
    assert!(!outputs.iter().any(|output| matches!(output, PolicyOutput::SavePeers { .. })), "unverified: not saved");
}

#[test]
fn peer_exchange_makes_a_backing_off_peer_try_the_new_address_at_once() {
    let mut policy = policy(3, 0, no_yield(), SEED);
    let outputs = policy.handle(0, PolicyInput::TimerFired);
    let to_two = dials(&outputs).into_iter().find(|dial| dial.1 == id(2)).unwrap();
    let _ = policy.handle(0, PolicyInput::DialFinished { connection: to_two.0, outcome: failed() });
    let moved = PeerAddress { id: id(2), addr: "moved.example:7742".into() };
    let junk = PeerAddress { id: id(2), addr: "not an address".into() };
    let outputs = policy.handle(50, PolicyInput::PeerListReceived { from: id(1), peers: vec![moved, junk] });
    let (_, peer, addr, purpose) = one_dial(&outputs);
    assert_eq!((peer, addr.as_str(), purpose), (id(2), "moved.example:7742", DialPurpose::Connect { attempt: 1 }));
}

#[test]
fn a_removed_address_is_no_longer_dialed_or_saved() {
    let saved = [PeerAddress { id: id(1), addr: "saved.example:1".into() }];
    let mut policy = policy_with(&fast_genesis(2, 0), 0, no_yield(), SEED, &saved, &[]);
    let (connection, _, addr, _) = one_dial(&policy.handle(0, PolicyInput::TimerFired));
    assert_eq!(addr, genesis_address(1));
    let outputs = policy.handle(1, PolicyInput::PeerAddressRemoved { addr: checked("saved.example:1") });
    assert_eq!(outputs, [PolicyOutput::SavePeers { peers: vec![] }]);
    let outputs = policy.handle(2, PolicyInput::PeerAddressRemoved { addr: checked(&genesis_address(1)) });
    assert!(outputs.is_empty(), "a genesis address was never saved: {outputs:?}");
    let outputs = policy.handle(3, PolicyInput::DialFinished { connection, outcome: failed() });
    assert!(outputs.is_empty(), "{outputs:?}");
    assert_eq!(policy.next_timeout(), None, "no address left to dial");

    // An added address is probed at once; removed while in flight, it is not probed again.
    let added = checked("added.example:9");
    let (probe, _, addr, _) = one_dial(&policy.handle(4, PolicyInput::PeerAddressAdded { addr: added.clone() }));
    assert_eq!(addr, added.as_str());
    let _ = policy.handle(5, PolicyInput::PeerAddressRemoved { addr: added });
    let outputs = policy.handle(6, PolicyInput::DialFinished { connection: probe, outcome: failed() });
    assert!(outputs.is_empty(), "{outputs:?}");
    assert_eq!(policy.next_timeout(), None);
}

#[test]
fn a_full_queue_closes_the_link_once_and_costs_only_backoff() {
    let mut policy = policy(2, 0, no_yield(), SEED);
    let link = linked(&mut policy);
    let outputs = policy.handle(5, PolicyInput::LinkQueueFilled { connection: link });
    assert_eq!(outputs, [PolicyOutput::Close { connection: link, peer: id(1), reason: CloseReason::QueueFull }]);
    assert!(policy.handle(6, PolicyInput::LinkQueueFilled { connection: link }).is_empty(), "closing already");
    let _ = policy.handle(7, PolicyInput::LinkClosed { connection: link, end: LinkEnd::Stopped });
    let stats = policy.stats();
    assert_eq!((stats.links_dropped_queue_full, stats.peers_scored_down, stats.links), (1, 0, 0));
    assert!(policy.next_timeout().unwrap() <= 7 + 375);
}

/// A small world around one policy: four validators and a seed; dials fail twice in three, links
/// go idle after a while, a peer is disconnected, peer lists arrive. The world's own choices are
/// fixed, so only the policy's seed can change what happens. Returns the log of every input and
/// the outputs it gave.
fn scripted_run(rng_seed: u64) -> String {
    let mut policy =
        policy_with(&fast_genesis(4, 0), 1, PolicyLimits::default(), rng_seed, &[], &[checked("seed.example:1")]);
    let mut log = String::new();
    let mut scheduled: BTreeMap<(u64, u64), PolicyInput> = BTreeMap::new();
    let mut sequence = 0u64;
    let mut schedule = |scheduled: &mut BTreeMap<(u64, u64), PolicyInput>, at_ms: u64, input: PolicyInput| {
        sequence += 1;
        scheduled.insert((at_ms, sequence), input);
    };
    schedule(&mut scheduled, 0, PolicyInput::TimerFired);
    schedule(&mut scheduled, 700, PolicyInput::InboundArrived { ip: ip("10.0.0.9") });
    schedule(&mut scheduled, 9_000, PolicyInput::DisconnectRequested { peer: id(2), reason: "forgery".into() });
    let list = vec![PeerAddress { id: id(3), addr: "three.example:7743".into() }];
    schedule(&mut scheduled, 12_000, PolicyInput::PeerListReceived { from: id(0), peers: list });
    let mut now_ms = 0;
    while now_ms < 120_000 {
        let next_scheduled = scheduled.keys().next().copied();
        let input = match (next_scheduled, policy.next_timeout()) {
            (Some((at_ms, _)), Some(timeout_ms)) if timeout_ms < at_ms => {
                now_ms = timeout_ms;
                PolicyInput::TimerFired
            }
            (Some(key), _) => {
                now_ms = key.0;
                scheduled.remove(&key).unwrap()
            }
            (None, Some(timeout_ms)) => {
                now_ms = timeout_ms;
                PolicyInput::TimerFired
            }
            (None, None) => break,
        };
        let outputs = policy.handle(now_ms, input.clone());
        log.push_str(&format!("{now_ms} {input:?} -> {outputs:?}\n"));
        for output in outputs {
            match output {
                PolicyOutput::Dial { connection, purpose, .. } => {
                    let outcome = match (connection.0 % 3, purpose.authenticates()) {
                        (2, true) => DialOutcome::Authenticated,
                        (2, false) => DialOutcome::Identified,
                        _ => failed(),
                    };
                    schedule(&mut scheduled, now_ms + 40, PolicyInput::DialFinished { connection, outcome });
                }
                PolicyOutput::Admit { connection, .. } => {
                    let input = PolicyInput::InboundHandshakeFinished { connection, peer: None };
                    schedule(&mut scheduled, now_ms + 5_000, input);
                }
                PolicyOutput::StartLink { connection, .. } => {
                    let input = PolicyInput::LinkClosed { connection, end: LinkEnd::Idle };
                    schedule(&mut scheduled, now_ms + 15_000, input);
                }
                PolicyOutput::Close { connection, .. } => {
                    // A started link's reader returns at once; a held connection was dropped.
                    let key = scheduled.iter().find_map(|(key, input)| {
                        matches!(input, PolicyInput::LinkClosed { connection: on, .. } if *on == connection)
                            .then_some(*key)
                    });
                    if let Some(key) = key {
                        scheduled.remove(&key);
                        schedule(&mut scheduled, now_ms, PolicyInput::LinkClosed { connection, end: LinkEnd::Stopped });
                    }
                }
                PolicyOutput::Refuse { .. } | PolicyOutput::SendPeerList { .. } | PolicyOutput::SavePeers { .. } => {}
            }
        }
    }
    log
}

#[test]
fn the_same_seed_and_inputs_give_byte_identical_outputs() {
    let first = scripted_run(SEED);
    assert!(first.lines().count() > 50, "the script exercises the policy:\n{first}");
    for needle in ["StartLink", "SavePeers", "Identify", "Admit", "ScoredDown"] {
        assert!(first.contains(needle), "the script reaches {needle}:\n{first}");
    }
    assert_eq!(scripted_run(SEED), first, "one seed, one history");
    assert_ne!(scripted_run(SEED + 1), first, "the seed drives the jitter");
}

/// The connection timings a model of the shell reads are the shell's own defaults.
#[cfg(feature = "transport")]
#[test]
fn link_timings_are_the_transport_defaults() {
    let limits = crate::manager::NetLimits::default();
    let millis = |duration: std::time::Duration| u64::try_from(duration.as_millis()).unwrap();
    let expected = LinkTimings {
        handshake_deadline_ms: millis(limits.handshake_deadline),
        ping_interval_ms: millis(limits.ping_interval),
        idle_timeout_ms: millis(limits.idle_timeout),
    };
    assert_eq!(LinkTimings::default(), expected);
}
