//! Hostile peers against a running node, over real sockets and real TLS on loopback. Each
//! attack is refused and its connection closed, and the node keeps talking to its honest peer.
//! TLS-level refusals (a TLS 1.2 client, a client without a certificate, a copied certificate)
//! are tested against the rustls configurations in `tls.rs` and not repeated here.
//!
//! Every test runs honest validators 0 and 1; the attacker holds the keys of validators 2..5,
//! whose genesis addresses nobody listens on.

// Test helpers may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{status, Cluster, TestNode, WITHIN};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tinychain_core::crypto::Keypair;
use tinychain_core::testkit::{seeded_key, validator_key};
use tinychain_net::discovery::genesis_validators;
use tinychain_net::frame::{read_frame, write_frame};
use tinychain_net::handle::NetEvent;
use tinychain_net::handshake::{
    decode_hello, decode_proof, encode_hello, encode_proof, exporter_context, finish, proof_signing_bytes,
    random_nonce, respond, start, Hello, Local, Proof, Role, EXPORTER_LABEL, HANDSHAKE_MESSAGE_BYTES_MAX,
};
use tinychain_net::tls::{client_config, exporter_key, node_certificate, peer_server_name};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Long enough for a refused message or link to show up on loopback if it were going to.
const QUIET: Duration = Duration::from_millis(300);

/// Honest validators 0 and 1, connected to each other.
async fn honest_pair(cluster: &Cluster) -> (TestNode, TestNode) {
    let mut first = cluster.start(0).await;
    let mut second = cluster.start(1).await;
    first.wait_connected_to(&cluster.ids([1])).await;
    second.wait_connected_to(&cluster.ids([0])).await;
    (first, second)
}

/// The two honest nodes still exchange messages both ways (and nothing else arrived first).
async fn still_talking(first: &mut TestNode, second: &mut TestNode, height: u64) {
    first.handle.send_to(second.id, status(height)).await.unwrap();
    assert_eq!(second.next_message().await, (first.id, status(height)));
    second.handle.send_to(first.id, status(height + 1)).await.unwrap();
    assert_eq!(first.next_message().await, (second.id, status(height + 1)));
    assert!(first.connected.contains(&second.id) && second.connected.contains(&first.id));
}

/// TLS to validator `target` of the cluster, presenting `key`'s certificate.
async fn tls_connect(cluster: &Cluster, key: &Keypair, target: usize) -> std::io::Result<TlsStream<TcpStream>> {
    let validators = Arc::new(genesis_validators(&cluster.genesis));
    let certificate = node_certificate(key).expect("test keys make certificates");
    let config = client_config(&certificate, validators, cluster.id(target)).expect("client config");
    let tcp = TcpStream::connect(cluster.addrs[target]).await?;
    TlsConnector::from(config).connect(peer_server_name(), tcp).await
}

fn session_key(cluster: &Cluster, tls: &TlsStream<TcpStream>) -> [u8; 32] {
    let context = exporter_context(&cluster.genesis.chain_id, &cluster.genesis_hash);
    exporter_key(tls.get_ref().1, EXPORTER_LABEL, &context).expect("the TLS handshake is complete")
}

/// Runs the honest handshake as `key` and returns the link with the hello and proof we sent.
async fn authenticate_as(cluster: &Cluster, key: &Keypair, target: usize) -> (TlsStream<TcpStream>, Hello, Proof) {
    let mut tls = tls_connect(cluster, key, target).await.expect("TLS as a validator");
    let exporter = session_key(cluster, &tls);
    let local = Local { key, chain_id: &cluster.genesis.chain_id, role: Role::Client };
    let ours = start(&local, random_nonce());
    write_frame(&mut tls, &encode_hello(&ours)).await.unwrap();
    let theirs = decode_hello(&read_frame(&mut tls, HANDSHAKE_MESSAGE_BYTES_MAX).await.unwrap()).unwrap();
    let proof = respond(&local, &ours, &theirs, &exporter).unwrap();
    write_frame(&mut tls, &encode_proof(&proof)).await.unwrap();
    let their_proof = decode_proof(&read_frame(&mut tls, HANDSHAKE_MESSAGE_BYTES_MAX).await.unwrap()).unwrap();
    let validators = genesis_validators(&cluster.genesis);
    let server = finish(
        &local,
        &ours,
        &theirs,
        &exporter,
        &their_proof,
        &cluster.id(target),
        |id| validators.contains(id),
        |_| false,
    );
    assert_eq!(server, Ok(cluster.id(target)));
    (tls, ours, proof)
}

/// Reads until the node closes the connection and returns how long that took. Fails if the
/// connection is still open after `within` (an accepted link stays open: pings keep it busy).
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Duration {
    let started = tokio::time::Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => panic!("the connection is still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// Waits until `condition` holds; fails the test if it does not within `WITHIN`.
async fn eventually(condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WITHIN;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "the condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// No event about `peer` arrives at `node` for a while.
async fn no_link_with(node: &mut TestNode, peer: usize) {
    let peer = validator_key(peer).address();
    while let Some(event) = node.next_event(QUIET).await {
        assert_ne!(event, NetEvent::PeerConnected(peer), "the attacker got a link");
    }
    assert!(!node.connected.contains(&peer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_outside_genesis_is_refused() {
    let cluster = Cluster::new(6);
    let (mut first, mut second) = honest_pair(&cluster).await;
    let outsider = seeded_key("outsider", 0);
    // TLS 1.3 lets the client finish before the server has checked its certificate: the refusal
    // shows as a closed connection on the client's next read.
    if let Ok(mut tls) = tls_connect(&cluster, &outsider, 0).await {
        let local = Local { key: &outsider, chain_id: &cluster.genesis.chain_id, role: Role::Client };
        let _ = write_frame(&mut tls, &encode_hello(&start(&local, random_nonce()))).await;
        closed_within(&mut tls, WITHIN).await;
    }
    assert_eq!(first.stats().links, 1);
    still_talking(&mut first, &mut second, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_claiming_another_validator_than_the_certificate_is_refused() {
    let cluster = Cluster::new(6);
    let (mut first, mut second) = honest_pair(&cluster).await;
    // The attacker holds validator 2's key and certificate, and claims to be validator 3.
    let key = validator_key(2);
    let mut tls = tls_connect(&cluster, &key, 0).await.expect("validator 2's certificate passes TLS");
    let exporter = session_key(&cluster, &tls);
    let claimed = Hello {
        version: tinychain_net::handshake::PROTOCOL_VERSION,
        chain_id: cluster.genesis.chain_id.clone(),
        node_id: cluster.id(3),
        nonce: random_nonce(),
    };
    write_frame(&mut tls, &encode_hello(&claimed)).await.unwrap();
    let theirs = decode_hello(&read_frame(&mut tls, HANDSHAKE_MESSAGE_BYTES_MAX).await.unwrap()).unwrap();
    let bytes = proof_signing_bytes(&cluster.genesis.chain_id, Role::Client, &exporter, &claimed, &theirs);
    write_frame(&mut tls, &encode_proof(&Proof { signature: key.sign(&bytes) })).await.unwrap();
    closed_within(&mut tls, WITHIN).await;
    no_link_with(&mut first, 2).await;
    no_link_with(&mut first, 3).await;
    still_talking(&mut first, &mut second, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_replayed_from_another_session_is_refused() {
    let cluster = Cluster::new(6);
    let (mut first, mut second) = honest_pair(&cluster).await;
    let key = validator_key(2);
    // A genuine session, recorded, then closed.
    let (recorded_session, recorded_hello, recorded_proof) = authenticate_as(&cluster, &key, 0).await;
    first.wait_connected_to(&cluster.ids([1, 2])).await;
    drop(recorded_session);
    first.wait_connected_to(&cluster.ids([1])).await;

    // A new TLS session replays the recorded hello and proof: K differs, so the proof fails.
    let mut tls = tls_connect(&cluster, &key, 0).await.expect("TLS as validator 2");
    write_frame(&mut tls, &encode_hello(&recorded_hello)).await.unwrap();
    read_frame(&mut tls, HANDSHAKE_MESSAGE_BYTES_MAX).await.expect("the node's hello");
    write_frame(&mut tls, &encode_proof(&recorded_proof)).await.unwrap();
    closed_within(&mut tls, WITHIN).await;
    no_link_with(&mut first, 2).await;
    still_talking(&mut first, &mut second, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_client_sending_garbage_is_refused() {
    let cluster = Cluster::new(6);
    let (mut first, mut second) = honest_pair(&cluster).await;
    let mut tcp = TcpStream::connect(cluster.addrs[0]).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: tinychain\r\n\r\n").await.unwrap();
    tcp.write_all(&[0x5a; 2048]).await.unwrap();
    closed_within(&mut tcp, WITHIN).await;
    eventually(|| first.stats().inbound_handshakes_failed == 1).await;
    still_talking(&mut first, &mut second, 40).await;
}

/// A validator that sends `bytes` once authenticated is disconnected, scored down, and refused
/// when it comes straight back.
async fn authenticated_peer_sending(bytes: &[u8], attacker: usize, height: u64) {
    let cluster = Cluster::new(6);
    let (mut first, mut second) = honest_pair(&cluster).await;
    let key = validator_key(attacker);
    let (mut tls, _, _) = authenticate_as(&cluster, &key, 0).await;
    first.wait_connected_to(&cluster.ids([1, attacker])).await;
    tls.write_all(bytes).await.unwrap();
    tls.flush().await.unwrap();
    closed_within(&mut tls, WITHIN).await;
    first.wait_connected_to(&cluster.ids([1])).await;
    eventually(|| first.stats().peers_scored_down == 1).await;

    // Straight back: the handshake succeeds, then the node closes the link unannounced.
    let (mut again, _, _) = authenticate_as(&cluster, &key, 0).await;
    closed_within(&mut again, WITHIN).await;
    no_link_with(&mut first, attacker).await;
    still_talking(&mut first, &mut second, height).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_header_claiming_4_gib_closes_the_link_and_scores_the_peer_down() {
    // The reader refuses the length as soon as the 4 header bytes arrive, before allocating
    // (`frame::tests::a_header_claiming_4_gib_is_rejected_before_allocating` pins that).
    authenticated_peer_sending(&u32::MAX.to_be_bytes(), 3, 50).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_payload_closes_the_link_and_scores_the_peer_down() {
    let mut frame = 9u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0xee; 9]);
    authenticated_peer_sending(&frame, 4, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_says_nothing_is_dropped_at_the_handshake_deadline() {
    let cluster = Cluster::new(6);
    let (mut first, mut second) = honest_pair(&cluster).await;
    // One says nothing at all; the other finishes TLS as a validator and then says nothing.
    let mut silent_tcp = TcpStream::connect(cluster.addrs[0]).await.unwrap();
    let mut silent_tls = tls_connect(&cluster, &validator_key(5), 0).await.expect("TLS as validator 5");
    let (tcp_after, tls_after) =
        tokio::join!(closed_within(&mut silent_tcp, WITHIN), closed_within(&mut silent_tls, WITHIN));
    // The deadline is 5 s from accepting; these bounds only say "at the deadline, not at once
    // and not never", whatever the machine's load.
    for after in [tcp_after, tls_after] {
        assert!(after >= Duration::from_secs(3), "dropped after {after:?}, before the deadline");
        assert!(after <= Duration::from_secs(15), "dropped after {after:?}");
    }
    // The node counts a refusal just after closing the connection.
    eventually(|| first.stats().pending_handshakes == 0 && first.stats().inbound_handshakes_failed == 2).await;
    no_link_with(&mut first, 5).await;
    still_talking(&mut first, &mut second, 70).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_connections_at_once_hold_the_caps_and_honest_validators_still_get_in() {
    let cluster = Cluster::new(6);
    let (mut first, mut second) = honest_pair(&cluster).await;
    let target = cluster.addrs[0];
    // Half from 127.0.0.1, half spread over 20 other loopback addresses (where the system
    // allows binding them): together they exceed both the per-address and the total cap.
    let attempts = (0..200u8).map(|index| async move {
        let source = if index < 100 { Ipv4Addr::new(127, 0, 0, 1) } else { Ipv4Addr::new(127, 0, 0, 2 + index % 20) };
        let socket = TcpSocket::new_v4().ok()?;
        if socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).is_err() {
            socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).ok()?;
        }
        let mut stream = socket.connect(target).await.ok()?;
        if index % 4 == 0 {
            let _ = stream.write_all(&[0xff; 512]).await;
        }
        Some(stream)
    });
    let flood: Vec<TcpStream> = futures_join_all(attempts).await.into_iter().flatten().collect();
    assert!(flood.len() >= 150, "the connections were made ({})", flood.len());

    // While the silent ones hold their slots, a late validator joins.
    let mut late = cluster.start(2).await;
    late.wait_connected_to(&cluster.ids([0, 1])).await;
    first.wait_connected_to(&cluster.ids([1, 2])).await;

    let stats = first.stats();
    assert!(stats.pending_handshakes_peak <= 64, "{stats:?}");
    assert_eq!(stats.pending_handshakes_per_ip_peak, 8, "127.0.0.1 reached its cap and no more: {stats:?}");
    if std::net::TcpListener::bind("127.0.0.2:0").is_ok() {
        assert_eq!(stats.pending_handshakes_peak, 64, "the other addresses reached the total cap: {stats:?}");
    }
    assert!(stats.connections_refused_at_cap > 0, "{stats:?}");
    still_talking(&mut first, &mut second, 80).await;
    late.handle.send_to(first.id, status(90)).await.unwrap();
    assert_eq!(first.next_message().await, (late.id, status(90)));
    drop(flood);
}

/// Awaits every future, concurrently (no extra dependency for `join_all`).
async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("a connection attempt does not panic"));
    }
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_peer_that_goes_silent_is_dropped_at_the_idle_timeout() {
    let cluster = Cluster::new(6);
    let mut config = cluster.config(0);
    config.limits.idle_timeout = Duration::from_secs(1);
    config.limits.ping_interval = Duration::from_millis(200);
    let mut first = TestNode::start(0, config, tinychain_net::discovery::PeerStore::none()).await;
    let mut second = cluster.start(1).await;
    first.wait_connected_to(&cluster.ids([1])).await;
    // Reads (so its socket drains) but never writes, not even a pong.
    let (mut tls, _, _) = authenticate_as(&cluster, &validator_key(2), 0).await;
    first.wait_connected_to(&cluster.ids([1, 2])).await;
    closed_within(&mut tls, WITHIN).await;
    first.wait_connected_to(&cluster.ids([1])).await;
    assert_eq!(first.stats().peers_scored_down, 0, "silence is not misbehaviour");
    // The honest link, quiet but pinging, outlived several idle timeouts.
    assert!(first.history.iter().all(|event| *event != NetEvent::PeerDisconnected(second.id)));
    still_talking(&mut first, &mut second, 100).await;
}

/// Node 0 (its link queues bounded at 4 MiB) linked with node 1, which reads, and with a
/// validator-2 connection that authenticates and then never reads: its socket buffers fill,
/// then its link's queue, as a peer whose event loop is far behind.
async fn linked_with_a_stuck_peer(cluster: &Cluster) -> (TestNode, TestNode, TlsStream<TcpStream>) {
    let mut config = cluster.config(0);
    config.limits.link_queue_bytes_max = 4 * 1024 * 1024;
    let mut first = TestNode::start(0, config, tinychain_net::discovery::PeerStore::none()).await;
    let mut second = cluster.start(1).await;
    first.wait_connected_to(&cluster.ids([1])).await;
    second.wait_connected_to(&cluster.ids([0])).await;
    let (stuck, _, _) = authenticate_as(cluster, &validator_key(2), 0).await;
    first.wait_connected_to(&cluster.ids([1, 2])).await;
    (first, second, stuck)
}

/// A message of about 1 MiB that is not gossip (a sync request with a long locator).
fn big_message(height: u64) -> tinychain_core::message::Message {
    tinychain_core::message::Message::GetBlocks {
        locator: vec![
            tinychain_core::types::Checkpoint { height, hash: tinychain_core::types::Hash([7; 32]) };
            1024 * 1024 / 40
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_gossip_to_a_peer_that_falls_behind_is_shed_and_its_link_kept() {
    let cluster = Cluster::new(6);
    let (mut first, mut second, stuck) = linked_with_a_stuck_peer(&cluster).await;

    // 48 batches of about 1 MiB: far more than socket buffers and the 4 MiB queue hold.
    let batch = |nonce: u64| {
        let transfer = tinychain_core::types::Transfer {
            chain_id: "hostile".into(),
            from: validator_key(3).address(),
            to: validator_key(4).address(),
            amount: 1,
            fee: 1,
            nonce,
            signature: tinychain_core::types::Signature([9; 64]),
        };
        tinychain_core::message::Message::Transfers(vec![transfer; 1024 * 1024 / 180])
    };
    for nonce in 0..48 {
        first.handle.broadcast(batch(nonce), None).await.unwrap();
        assert_eq!(second.next_message().await, (first.id, batch(nonce)), "the peer that keeps up gets everything");
    }
    let stats = first.stats();
    assert!(stats.transfer_batches_shed > 0, "the stuck peer's half-full queue sheds gossip: {stats:?}");
    assert_eq!(stats.links_dropped_queue_full, 0, "gossip alone never closes a link");
    assert_eq!(stats.links, 2, "both links are up: {stats:?}");
    assert!(first.history.iter().all(|event| !matches!(event, NetEvent::PeerDisconnected(_))));

    // What is not gossip still fills the queue and closes the link, as before.
    for height in 0..8 {
        first.handle.broadcast(big_message(height), None).await.unwrap();
        assert_eq!(second.next_message().await, (first.id, big_message(height)));
    }
    first.wait_connected_to(&cluster.ids([1])).await;
    assert_eq!(first.stats().links_dropped_queue_full, 1);
    drop(stuck);
    still_talking(&mut first, &mut second, 120).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_loses_its_link_instead_of_growing_our_memory() {
    let cluster = Cluster::new(6);
    let (mut first, mut second, stuck) = linked_with_a_stuck_peer(&cluster).await;

    // 48 messages of 1 MiB each: far more than socket buffers and the 4 MiB queue hold.
    // One at a time, so the honest peer's queue never holds more than one; the stuck peer's
    // only grows.
    for height in 0..48 {
        first.handle.broadcast(big_message(height), None).await.unwrap();
        assert_eq!(second.next_message().await, (first.id, big_message(height)), "the honest peer gets everything");
    }
    first.wait_connected_to(&cluster.ids([1])).await;
    assert_eq!(first.stats().links_dropped_queue_full, 1);
    assert_eq!(first.stats().peers_scored_down, 0, "being slow is not misbehaviour");
    drop(stuck);
    still_talking(&mut first, &mut second, 110).await;
}
