//! The connection model (`links`): every core runs the server's peer policy, and the links it
//! keeps are what carry messages. These tests read the trace's `link` and `dial` lines and check
//! what a server would do: links cut by a partition stay up until the idle timeout, then the
//! policies redial with a backoff whose jitter is the seed's; a crash resets its peers' links at
//! once; a one-way cut or a long pause closes links from the side that hears nothing.

use tinychain_net::policy::{LinkTimings, PolicyLimits};
use tinychain_sim::engine::Simulation;
use tinychain_sim::faults::FaultEvent;
use tinychain_sim::options::SimOptions;

/// One trace line: virtual time, the core, what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    at_ms: u64,
    who: String,
    text: String,
}

fn parse(line: &str) -> Line {
    let mut words = line.split_whitespace();
    let time = words.next().expect("a time");
    let (seconds, millis) = time.split_once('.').expect("seconds.millis");
    let at_ms = seconds.parse::<u64>().expect("seconds") * 1_000 + millis.parse::<u64>().expect("millis");
    let who = words.next().expect("who").to_string();
    Line { at_ms, who, text: words.collect::<Vec<_>>().join(" ") }
}

/// Runs 4 nodes with fixed latency (20 ms, no jitter), so the connection model's only random
/// choices are the policies' backoff jitter; returns the link and dial lines and the report's
/// verdict.
fn run(seed: u64, duration_ms: u64, scripted: Vec<(u64, FaultEvent)>) -> (Vec<Line>, Vec<Line>) {
    let mut options = SimOptions::new(4, seed, duration_ms);
    options.tx_rate_per_s = 2;
    options.jitter_ms = 0;
    options.scripted = scripted;
    options.keep_trace = true;
    let mut simulation = Simulation::new(options);
    simulation.run_until(duration_ms);
    let report = simulation.report();
    assert!(report.passed(), "seed {seed}: {:?} {}", report.violations, report.liveness);
    let lines: Vec<Line> = simulation.trace_lines().iter().map(|line| parse(line)).collect();
    let links = lines.iter().filter(|line| line.text.starts_with("link ")).cloned().collect();
    let dials = lines.iter().filter(|line| line.text.starts_with("dial ")).cloned().collect();
    (links, dials)
}

fn between(lines: &[Line], from_ms: u64, to_ms: u64) -> impl Iterator<Item = &Line> {
    lines.iter().filter(move |line| (from_ms..to_ms).contains(&line.at_ms))
}

const PARTITION_MS: u64 = 10_000;
const HEAL_MS: u64 = 100_000;

/// n0 and n1 cut off from n2 and n3 for 90 s.
fn partition_two_two() -> Vec<(u64, FaultEvent)> {
    vec![
        (PARTITION_MS, FaultEvent::Partition { group: vec![0, 1], one_way: false }),
        (HEAL_MS, FaultEvent::Heal),
        (HEAL_MS + 5_000, FaultEvent::HealAll),
    ]
}

fn is_cross(line: &Line) -> bool {
    let side = |name: &str| matches!(name, "n0" | "n1");
    let peer = line.text.split_whitespace().nth(2).expect("link up|down nX").trim_end_matches(':');
    side(&line.who) != side(peer)
}

#[test]
fn partitioned_links_idle_out_then_come_back_after_the_heal() {
    let timings = LinkTimings::default();
    let limits = PolicyLimits::default();
    let (links, dials) = run(21, 200_000, partition_two_two());
    // Everyone linked with everyone at start: 6 pairs, both ends.
    assert_eq!(between(&links, 0, 1_000).filter(|line| line.text.starts_with("link up")).count(), 12);
    // Cut links carry nothing but stay up until the idle timeout, then close at both ends.
    let idle_at_ms = PARTITION_MS + timings.idle_timeout_ms;
    assert_eq!(between(&links, 1_000, idle_at_ms).count(), 0, "nothing closes before the idle timeout");
    let downs: Vec<&Line> = between(&links, idle_at_ms, idle_at_ms + 1).collect();
    assert_eq!(downs.len(), 8, "4 cross pairs, both ends: {downs:?}");
    assert!(downs.iter().all(|line| line.text.ends_with(": idle") && is_cross(line)), "{downs:?}");
    // While cut, the policies keep dialing across, each dial failing at the handshake deadline,
    // and no cross link comes up.
    let failed: Vec<&Line> = between(&dials, idle_at_ms, HEAL_MS).collect();
    assert!(failed.len() >= 8, "redials during the partition: {failed:?}");
    assert!(failed.iter().all(|line| line.text.ends_with("failed: connect timed out")), "{failed:?}");
    assert_eq!(between(&links, idle_at_ms + 1, HEAL_MS).count(), 0);
    // After the heal every cross pair is linked again (at both ends) within one backoff at its
    // cap with its jitter, the yield, and a dial's deadline.
    let redial_bound_ms = limits.backoff_max_ms * 3 / 2 + limits.dial_yield_ms + timings.handshake_deadline_ms;
    assert_eq!(linked_at(&links, HEAL_MS).len(), 4, "only the pairs on one side are linked at the heal");
    assert_eq!(linked_at(&links, HEAL_MS + redial_bound_ms).len(), 12, "{links:?}");
    let after: Vec<&Line> = between(&links, HEAL_MS, u64::MAX).collect();
    assert!(after.iter().all(|line| is_cross(line)), "links that never went down stay up: {after:?}");
    assert_eq!(between(&links, HEAL_MS + redial_bound_ms, u64::MAX).count(), 0, "and they stay up");
}

/// When the cross links came back after the heal: the redial times.
fn redial_times(seed: u64) -> Vec<Line> {
    let (links, _) = run(seed, 200_000, partition_two_two());
    between(&links, HEAL_MS, u64::MAX).cloned().collect()
}

#[test]
fn redial_times_come_from_the_seed() {
    let first = redial_times(21);
    assert_eq!(first.len(), 8);
    assert_eq!(redial_times(21), first, "one seed, one history");
    // Latency is fixed: only the backoff's jitter differs between seeds.
    let others: Vec<Vec<Line>> = [22, 23].into_iter().map(redial_times).collect();
    assert!(others.iter().all(|other| other != &first), "the seed drives the jitter: {first:?} {others:?}");
    let times = |lines: &[Line]| lines.iter().map(|line| line.at_ms).collect::<Vec<u64>>();
    assert_ne!(times(&others[0]), times(&others[1]));
}

#[test]
fn a_crash_resets_its_peers_links_at_once_and_a_restart_redials() {
    const CRASH_MS: u64 = 20_000;
    const RESTART_MS: u64 = 30_000;
    let scripted =
        vec![(CRASH_MS, FaultEvent::Crash(1)), (RESTART_MS, FaultEvent::Restart(1)), (35_000, FaultEvent::HealAll)];
    let (links, dials) = run(5, 60_000, scripted);
    // One network delay (20 ms) after the crash, each peer's link resets.
    let resets: Vec<&Line> = between(&links, CRASH_MS, RESTART_MS).collect();
    assert_eq!(resets.len(), 3, "{resets:?}");
    for line in &resets {
        assert_eq!(line.at_ms, CRASH_MS + 20, "{line:?}");
        assert_eq!(line.text, "link down n1: connection reset");
    }
    // Its peers' redials are refused (a reset one round trip later) while it is down.
    let refused: Vec<&Line> = between(&dials, CRASH_MS, RESTART_MS).collect();
    assert!(!refused.is_empty() && refused.iter().all(|line| line.text == "dial n1 failed: connection refused"));
    // Restarted, it is linked with all three within a second (a yield and a handshake).
    let ups: Vec<&Line> = between(&links, RESTART_MS, RESTART_MS + 1_000).collect();
    assert_eq!(ups.len(), 6, "{ups:?}");
    assert!(ups.iter().all(|line| line.text.starts_with("link up")));
}

#[test]
fn a_one_way_cut_closes_from_the_side_that_hears_nothing() {
    // n0 can still send but hears nothing: its ends go idle, and their FINs reach the others.
    let scripted = vec![
        (PARTITION_MS, FaultEvent::Partition { group: vec![0], one_way: true }),
        (80_000, FaultEvent::Heal),
        (85_000, FaultEvent::HealAll),
    ];
    let (links, _) = run(9, 150_000, scripted);
    let idle_at_ms = PARTITION_MS + LinkTimings::default().idle_timeout_ms;
    let downs: Vec<&Line> = between(&links, idle_at_ms, idle_at_ms + 1_000).collect();
    assert_eq!(downs.len(), 6, "{downs:?}");
    for line in &downs {
        if line.who == "n0" {
            assert_eq!(line.at_ms, idle_at_ms);
            assert!(line.text.ends_with(": idle"), "{line:?}");
        } else {
            assert_eq!(line.at_ms, idle_at_ms + 20, "a FIN one delay later: {line:?}");
            assert_eq!(line.text, "link down n0: closed by peer");
        }
    }
}

#[test]
fn a_pause_longer_than_the_idle_timeout_closes_its_links_and_they_come_back() {
    const PAUSE_MS: u64 = 20_000;
    const RESUME_MS: u64 = 55_000;
    let scripted =
        vec![(PAUSE_MS, FaultEvent::Pause(2)), (RESUME_MS, FaultEvent::Resume(2)), (60_000, FaultEvent::HealAll)];
    let (links, _) = run(13, 90_000, scripted);
    let idle_at_ms = PAUSE_MS + LinkTimings::default().idle_timeout_ms;
    // Its peers hear nothing for the idle timeout and close; it is told when it resumes.
    let downs: Vec<&Line> = between(&links, idle_at_ms, RESUME_MS).collect();
    assert_eq!(downs.len(), 3, "{downs:?}");
    assert!(downs.iter().all(|line| line.at_ms == idle_at_ms && line.text == "link down n2: idle"));
    let told: Vec<&Line> = between(&links, RESUME_MS, RESUME_MS + 1).collect();
    assert_eq!(told.len(), 3, "{told:?}");
    assert!(told.iter().all(|line| line.who == "n2" && line.text.ends_with(": closed by peer")));
    // Its redials may race its peers' (the one-link rule then keeps one link per pair): two
    // seconds on, every pair is linked at both ends.
    assert_eq!(linked_at(&links, RESUME_MS + 2_000).len(), 12, "{links:?}");
}

/// Which (core, peer) ends are up at `at_ms`, replaying the link lines.
fn linked_at(links: &[Line], at_ms: u64) -> std::collections::BTreeSet<(String, String)> {
    let mut up = std::collections::BTreeSet::new();
    for line in links.iter().filter(|line| line.at_ms <= at_ms) {
        let words: Vec<&str> = line.text.split_whitespace().collect();
        let end = (line.who.clone(), words[2].trim_end_matches(':').to_string());
        match words[1] {
            "up" => assert!(up.insert(end), "one started link per peer: {line:?}"),
            "down" => assert!(up.remove(&end), "only a started link goes down: {line:?}"),
            _ => {}
        }
    }
    up
}
