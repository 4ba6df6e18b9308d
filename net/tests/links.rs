//! Real TLS links on loopback between in-process nodes: connecting, delivering, reconnecting,
//! discovery and shutdown.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{free_addrs, status, wait_settled, Cluster, TestNode};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tinychain_net::discovery::{PeerAddr, PeerStore};
use tinychain_net::manager::NetConfig;
use tinychain_net::wire::{PeerAddress, Wire};

fn checked(addr: &str) -> PeerAddr {
    PeerAddr::parse(addr).expect("a host:port the tests write")
}

/// A pause long enough for a stray message to show up on loopback, used only to check that
/// something did *not* happen after the ordering checks have already passed.
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_connect_and_deliver_broadcasts_once_and_sends_to_their_target_only() {
    let cluster = Cluster::new(4);
    let mut nodes = Vec::new();
    for index in 0..4 {
        nodes.push(cluster.start(index).await);
    }
    for node in &mut nodes {
        let others = cluster.ids((0..4).filter(|other| *other != node.index));
        node.wait_connected_to(&others).await;
    }
    wait_settled(&nodes.iter().collect::<Vec<_>>(), 3).await;

    // A broadcast from node 0 reaches each other node exactly once.
    nodes[0].handle.broadcast(status(1), None).await.unwrap();
    for node in &mut nodes[1..] {
        assert_eq!(node.next_message().await, (cluster.id(0), status(1)), "node {}", node.index);
    }
    // A broadcast with an exception skips it.
    nodes[0].handle.broadcast(status(2), Some(cluster.id(2))).await.unwrap();
    for index in [1, 3] {
        assert_eq!(nodes[index].next_message().await, (cluster.id(0), status(2)));
    }

    // node 1 sends to node 2 only, then broadcasts a marker. Each link delivers in order, so a
    // node that gets the marker without the message first never got the message.
    nodes[1].handle.send_to(cluster.id(2), status(3)).await.unwrap();
    nodes[1].handle.broadcast(status(4), None).await.unwrap();
    assert_eq!(nodes[2].next_message().await, (cluster.id(1), status(3)));
    assert_eq!(nodes[2].next_message().await, (cluster.id(1), status(4)));
    for index in [0, 3] {
        assert_eq!(nodes[index].next_message().await, (cluster.id(1), status(4)), "node {index}");
    }

    // Many messages on one link arrive in order.
    for height in 100..300 {
        nodes[3].handle.send_to(cluster.id(0), status(height)).await.unwrap();
    }
    for height in 100..300 {
        assert_eq!(nodes[0].next_message().await, (cluster.id(3), status(height)));
    }
    // Each end counted the 200 frames: node 3 wrote them to node 0's link, node 0 read them
    // from node 3's, and node 0 last heard from node 3 just now.
    let frames_bytes = 200 * Wire::Core(status(100)).to_frame().unwrap().len() as u64;
    let traffic_with = |node: &TestNode, peer: usize| {
        node.task.traffic().figures().into_iter().find(|(id, _)| *id == cluster.id(peer)).unwrap().1
    };
    // The reader counts before it delivers; the writer counts once its write returned, which
    // may be just after the peer read the bytes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while traffic_with(&nodes[3], 0).bytes_sent < frames_bytes && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = traffic_with(&nodes[3], 0);
    let received = traffic_with(&nodes[0], 3);
    assert!(sent.bytes_sent >= frames_bytes, "{sent:?} against {frames_bytes} bytes of frames");
    assert!(received.bytes_received >= frames_bytes, "{received:?} against {frames_bytes} bytes of frames");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(received.last_received_unix_ms.is_some_and(|at| at <= now_ms && at + 10_000 >= now_ms), "{received:?}");

    // Nothing else arrives: no duplicate, no stray copy of the message for node 2.
    for node in &mut nodes {
        assert_eq!(node.messages_during(QUIET).await, vec![], "node {}", node.index);
        assert_eq!(node.stats().links, 3);
        assert_eq!(node.connected.len(), 3);
    }
    for node in nodes {
        node.shut_down().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_node_joins_and_a_restarted_node_comes_back() {
    let cluster = Cluster::new(4);
    let mut nodes = Vec::new();
    for index in 0..3 {
        nodes.push(cluster.start(index).await);
    }
    for node in &mut nodes {
        node.wait_connected_to(&cluster.ids((0..3).filter(|other| *other != node.index))).await;
    }

    // Validator 3 starts late: everyone links with it and hears its broadcast.
    nodes.push(cluster.start(3).await);
    for node in &mut nodes {
        node.wait_connected_to(&cluster.ids((0..4).filter(|other| *other != node.index))).await;
    }
    // Validator 3 dialed everyone as everyone redialed it: let the one-link rule finish, or the
    // broadcast may go out on a link that is about to be replaced (sending is best effort).
    wait_settled(&nodes.iter().collect::<Vec<_>>(), 3).await;
    nodes[3].handle.broadcast(status(1), None).await.unwrap();
    for node in &mut nodes[..3] {
        assert_eq!(node.next_message().await, (cluster.id(3), status(1)), "node {}", node.index);
    }

    // Validator 1 shuts down (its port is released) and restarts on the same address.
    let restarted = nodes.remove(1);
    restarted.shut_down().await;
    for node in &mut nodes {
        node.wait_connected_to(&cluster.ids((0..4).filter(|other| *other != node.index && *other != 1))).await;
    }
    let mut restarted = cluster.start(1).await;
    restarted.wait_connected_to(&cluster.ids([0, 2, 3])).await;
    for node in &mut nodes {
        node.wait_connected_to(&cluster.ids((0..4).filter(|other| *other != node.index))).await;
    }
    wait_settled(&nodes.iter().chain([&restarted]).collect::<Vec<_>>(), 3).await;
    nodes[0].handle.send_to(cluster.id(1), status(2)).await.unwrap();
    assert_eq!(restarted.next_message().await, (cluster.id(0), status(2)));
    restarted.handle.broadcast(status(3), None).await.unwrap();
    for node in &mut nodes {
        assert_eq!(node.next_message().await, (cluster.id(1), status(3)), "node {}", node.index);
    }
    nodes.push(restarted);
    for node in nodes {
        node.shut_down().await;
    }
}

/// With no yield before dialing, both nodes dial each other at once: both ends keep the same
/// single link, whichever handshake finishes first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_end_with_one_link() {
    for round in 0..5u64 {
        let cluster = Cluster::new(2);
        let config = |index| {
            let mut config = cluster.config(index);
            config.limits.dial_yield = Duration::ZERO;
            config
        };
        let (mut first, mut second) = tokio::join!(
            TestNode::start(0, config(0), PeerStore::none()),
            TestNode::start(1, config(1), PeerStore::none())
        );
        first.wait_connected_to(&cluster.ids([1])).await;
        second.wait_connected_to(&cluster.ids([0])).await;
        wait_settled(&[&first, &second], 1).await;
        // Any link replaced during the race was announced and taken back in order (checked by
        // `next_event`); now exactly one is up, and it carries messages both ways.
        first.handle.send_to(second.id, status(round)).await.unwrap();
        second.handle.send_to(first.id, status(round + 100)).await.unwrap();
        assert_eq!(second.next_message().await, (first.id, status(round)));
        assert_eq!(first.next_message().await, (second.id, status(round + 100)));
        assert_eq!((first.stats().links, second.stats().links), (1, 1));
        assert!(first.connected.contains(&second.id) && second.connected.contains(&first.id));
        first.shut_down().await;
        second.shut_down().await;
    }
}

/// What a node handed its peer store, most recent last.
type Saves = Arc<Mutex<Vec<Vec<PeerAddress>>>>;

fn recording_store(saved: Vec<PeerAddress>) -> (PeerStore, Saves) {
    let saves: Saves = Arc::default();
    let record = Arc::clone(&saves);
    let store = PeerStore::new(saved, move |peers: &[PeerAddress]| {
        record.lock().expect("not poisoned").push(peers.to_vec());
    });
    (store, saves)
}

fn last_save(saves: &Saves) -> Vec<PeerAddress> {
    saves.lock().expect("not poisoned").last().cloned().unwrap_or_default()
}

/// Configurations for validators 0 and 1 in which neither can reach the other at its genesis
/// address (each node's copy points at a port nobody listens on; the genesis hash, which the
/// handshake binds, is the real one). Only discovery can link them.
fn unreachable_from_each_other(cluster: &Cluster) -> (NetConfig, NetConfig) {
    let dead = free_addrs(2);
    let mut first = cluster.config(0);
    first.genesis.validators[1].addr = dead[0].to_string();
    let mut second = cluster.config(1);
    second.genesis.validators[0].addr = dead[1].to_string();
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_given_by_dns_name_links_nodes_that_genesis_does_not() {
    let cluster = Cluster::new(2);
    let (mut config, other) = unreachable_from_each_other(&cluster);
    let seed = format!("localhost:{}", cluster.addrs[1].port());
    config.seeds = vec![checked(&seed)];
    let (store, saves) = recording_store(Vec::new());
    let mut first = TestNode::start(0, config, store).await;
    let mut second = TestNode::start(1, other, PeerStore::none()).await;
    first.wait_connected_to(&cluster.ids([1])).await;
    second.wait_connected_to(&cluster.ids([0])).await;
    assert_eq!(
        last_save(&saves),
        vec![PeerAddress { id: cluster.id(1), addr: seed }],
        "the seed is saved once verified"
    );
    first.shut_down().await;
    second.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_address_links_nodes_and_a_removed_one_is_forgotten() {
    let cluster = Cluster::new(2);
    let (config, other) = unreachable_from_each_other(&cluster);
    let (store, saves) = recording_store(Vec::new());
    let mut first = TestNode::start(0, config, store).await;
    let mut second = TestNode::start(1, other, PeerStore::none()).await;
    let addr = cluster.addrs[1].to_string();
    first.handle.add_peer(checked(&addr)).await.unwrap();
    first.wait_connected_to(&cluster.ids([1])).await;
    second.wait_connected_to(&cluster.ids([0])).await;
    assert_eq!(last_save(&saves), vec![PeerAddress { id: cluster.id(1), addr: addr.clone() }]);
    first.handle.remove_peer(checked(&addr)).await.unwrap();
    let deadline = tokio::time::Instant::now() + common::WITHIN;
    while !last_save(&saves).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the removal reaches the peer store");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(first.stats().links, 1, "removing an address leaves the link up");
    first.shut_down().await;
    second.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_address_links_nodes_after_a_restart() {
    let cluster = Cluster::new(2);
    let (config, other) = unreachable_from_each_other(&cluster);
    // First run: only a seed links validator 0 to 1, and validator 0 saves 1's address.
    let mut seeded = config.clone();
    seeded.seeds = vec![checked(&cluster.addrs[1].to_string())];
    let (store, saves) = recording_store(Vec::new());
    let mut first = TestNode::start(0, seeded, store).await;
    let mut second = TestNode::start(1, other, PeerStore::none()).await;
    first.wait_connected_to(&cluster.ids([1])).await;
    second.wait_connected_to(&cluster.ids([0])).await;
    let saved = last_save(&saves);
    assert_eq!(saved, vec![PeerAddress { id: cluster.id(1), addr: cluster.addrs[1].to_string() }]);
    first.shut_down().await;
    // The restart: no seed and a dead genesis address; the saved address alone links them.
    let mut restarted = TestNode::start(0, config, PeerStore::new(saved, |_: &[PeerAddress]| {})).await;
    restarted.wait_connected_to(&cluster.ids([1])).await;
    wait_settled(&[&restarted, &second], 1).await;
    restarted.handle.send_to(second.id, status(9)).await.unwrap();
    assert_eq!(second.next_message().await, (restarted.id, status(9)));
    restarted.shut_down().await;
    second.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_exchange_links_nodes_that_only_a_third_can_reach() {
    let cluster = Cluster::new(3);
    let (first_config, second_config) = unreachable_from_each_other(&cluster);
    let mut first = TestNode::start(0, first_config, PeerStore::none()).await;
    let mut second = TestNode::start(1, second_config, PeerStore::none()).await;
    // Validator 2 knows everyone's real address and tells both.
    let mut third = cluster.start(2).await;
    first.wait_connected_to(&cluster.ids([1, 2])).await;
    second.wait_connected_to(&cluster.ids([0, 2])).await;
    third.wait_connected_to(&cluster.ids([0, 1])).await;
    // Both may have dialed the other at once: let the one-link rule finish before sending.
    wait_settled(&[&first, &second, &third], 2).await;
    first.handle.send_to(second.id, status(7)).await.unwrap();
    assert_eq!(second.next_message().await, (first.id, status(7)));
    for node in [first, second, third] {
        node.shut_down().await;
    }
}

/// An added address of a validator already linked is identified by TLS alone (no second link,
/// so no flap), and an added address of our own is recognised and forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_addresses_of_a_linked_validator_and_of_ourselves_are_identified_without_new_links() {
    let cluster = Cluster::new(2);
    let (store, saves) = recording_store(Vec::new());
    let mut first = TestNode::start(0, cluster.config(0), store).await;
    let mut second = cluster.start(1).await;
    first.wait_connected_to(&cluster.ids([1])).await;
    second.wait_connected_to(&cluster.ids([0])).await;
    wait_settled(&[&first, &second], 1).await;

    let other = format!("localhost:{}", cluster.addrs[1].port());
    first.handle.add_peer(checked(&format!("localhost:{}", cluster.addrs[0].port()))).await.unwrap();
    first.handle.add_peer(checked(&other)).await.unwrap();
    let deadline = tokio::time::Instant::now() + common::WITHIN;
    while last_save(&saves).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the added address is identified and saved");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(last_save(&saves), vec![PeerAddress { id: cluster.id(1), addr: other }]);
    wait_settled(&[&first, &second], 1).await;
    for node in [&mut first, &mut second] {
        assert_eq!(node.messages_during(QUIET).await, vec![]);
        assert_eq!(node.history.len(), 1, "node {}: only the first connection: {:?}", node.index, node.history);
    }
    first.shut_down().await;
    second.shut_down().await;
}
