//! Benchmarks of the TLS transport on loopback, hand-timed (best of N repetitions): every
//! measurement needs sockets, tasks and, for the link, two running transports set up first, and
//! the point is the table printed at the end, which sets each layer next to the one below it.
//!
//! - `net::handshake/stack=...`: sequential connections to a listener, each complete at both ends
//!   before the next one starts. `tcp` is connect + accept (the machine's limit); `tls` adds TLS
//!   1.3 with node certificates (`tls::server_config` / `client_config`, the client configuration
//!   built per dial as the manager does); `tls+auth` adds the Hello/Proof challenge-response of
//!   `handshake` in frames: the whole handshake of a link.
//! - `net::link/bytes=N,stack=...`: one stream of frames of N bytes (the frame of a `Wire::Core`
//!   envelope: a transfer, and a block of about 1 MiB) from one end to the other, timed until the
//!   last one arrives. `tcp` (the machine's limit) and `tls` write the pre-encoded payload with
//!   `frame::write_frame` and read it with `frame::read_frame` through a 16 KiB buffer, as the
//!   link's reader reads; like the link's writer, they make one socket write (and over TLS one
//!   record) per frame. `link` goes through the whole transport (`manager::start` for two
//!   validators, `NetHandle::send_to`, counting `NetEvent::MessageReceived`), which adds
//!   encoding, the command channel, the manager, the link's queue and writer, the reader's
//!   decoding and the events channel. Its sender keeps at most half of the link's outbound queue
//!   in flight: a full queue closes the link, by design.
//!
//! Both ends run in this process on one runtime with a worker per core, so each figure is what
//! the machine does for both ends together. Repetitions take turns between the stacks, so load
//! from elsewhere on a shared machine weighs on each alike; the lines before the table give the
//! median next to the best. The table ends with one core's Ed25519 and `Wire` codec rates, the
//! CPU costs the handshake and the link add.
//!
//! Run with `cargo bench --bench net` (about 20 s on the 2-core dev machine). Without `--bench`
//! (as under `cargo test --benches`) it runs once with tiny counts, as a smoke test.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tinychain_core::crypto::{verify_strict, Keypair};
use tinychain_core::genesis::genesis_block;
use tinychain_core::message::Message;
use tinychain_core::testkit::{account_key, fast_genesis, sign_transfer, validator_key};
use tinychain_core::types::{Block, BlockHeader, Hash, NodeId, Signature, Transfer};
use tinychain_net::discovery::PeerStore;
use tinychain_net::frame::{read_frame, write_frame, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};
use tinychain_net::handle::{NetEvent, NetHandle};
use tinychain_net::handshake::{
    decode_hello, decode_proof, encode_hello, encode_proof, exporter_context, finish, random_nonce, respond,
    start as start_handshake, Local, Role, EXPORTER_KEY_BYTES, EXPORTER_LABEL, HANDSHAKE_MESSAGE_BYTES_MAX,
};
use tinychain_net::manager::{self, NetConfig, NetLimits, NetTask};
use tinychain_net::tls::{
    client_config, exporter_key, node_certificate, peer_node_id, peer_server_name, server_config, NodeCertificate,
};
use tinychain_net::wire::Wire;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::client::TlsStream as ClientTlsStream;
use tokio_rustls::server::TlsStream as ServerTlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How much to measure: the full run, or the smoke run without `--bench`.
#[derive(Clone, Copy, Debug)]
struct Counts {
    repetitions: usize,
    tcp_connects: usize,
    handshakes: usize,
    small_messages: usize,
    large_messages: usize,
    signatures: usize,
    /// Encodings and decodings of the small message timed for the codec reference (a hundredth
    /// of that for the large one).
    codings: usize,
}

const FULL: Counts = Counts {
    repetitions: 10,
    tcp_connects: 1_000,
    handshakes: 200,
    small_messages: 50_000,
    large_messages: 100,
    signatures: 2_000,
    codings: 20_000,
};

const SMOKE: Counts = Counts {
    repetitions: 1,
    tcp_connects: 10,
    handshakes: 5,
    small_messages: 1_000,
    large_messages: 3,
    signatures: 10,
    codings: 100,
};

/// The large message's wire payload is at most this (and within a transfer of it).
const LARGE_PAYLOAD_BYTES: usize = 1 << 20;

/// What the link's reader reads from its socket at a time; the baselines read through a buffer
/// of the same size.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Longest wait for anything that should happen (a link coming up, the next message).
const WITHIN: Duration = Duration::from_secs(20);

/// Ed25519 signature operations in one complete handshake, over both ends: TLS 1.3
/// `CertificateVerify` and the challenge-response proof, each signed by one end and verified by
/// the other, in both directions.
const HANDSHAKE_SIGNS: usize = 4;
const HANDSHAKE_VERIFIES: usize = 4;

fn main() {
    let counts = if std::env::args().any(|arg| arg == "--bench") { FULL } else { SMOKE };
    let cores = std::thread::available_parallelism().map_or(1, |cores| cores.get());
    let (sign_rate, verify_rate) = ed25519_rates(&counts);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("a tokio runtime builds");
    // Everything runs on the workers: `block_on` itself would add a third busy thread.
    let results =
        runtime.block_on(async move { tokio::spawn(run(counts)).await }).expect("the benchmark task does not panic");
    let runs = if counts.repetitions == 1 { "one run".to_string() } else { format!("best of {}", counts.repetitions) };
    println!();
    println!("net benchmark (loopback, {cores} cores, {runs}; both ends in this process)");
    println!(
        "handshakes/s         plain TCP connect: {}   TLS 1.3 only: {}   full TLS 1.3 + challenge-response: {}",
        whole(results.tcp_connects),
        whole(results.tls_handshakes),
        whole(results.full_handshakes),
    );
    for (label, unit, rates) in [
        (format!("small msgs/s ({} B)", results.small_frame_bytes), Unit::Messages, &results.small),
        ("MB/s (1 MiB msgs)".to_string(), Unit::Megabytes, &results.large),
    ] {
        println!(
            "{label:<20} plain TCP: {}   TLS: {}   tinychain link: {} ({:.0}% of plain TCP, {:.0}% of TLS)",
            unit.show(rates.tcp),
            unit.show(rates.tls),
            unit.show(rates.link),
            100.0 * rates.link / rates.tcp,
            100.0 * rates.link / rates.tls,
        );
    }
    let signing_us = 1e6 * (HANDSHAKE_SIGNS as f64 / sign_rate + HANDSHAKE_VERIFIES as f64 / verify_rate);
    println!(
        "one core, for reference: ed25519 sign {}/s, verify_strict {}/s (a full handshake signs {HANDSHAKE_SIGNS} \
         and verifies {HANDSHAKE_VERIFIES}: {signing_us:.0} us of its {:.0} us)",
        whole(sign_rate),
        whole(verify_rate),
        1e6 / results.full_handshakes,
    );
    let [small_codec, large_codec] = results.codec;
    println!(
        "one core, for reference: Wire encode+frame / decode of the transfer {}/s / {}/s, of the block {:.0} / {:.0} MB/s",
        whole(small_codec.encode),
        whole(small_codec.decode),
        large_codec.encode * megabytes(results.large_frame_bytes),
        large_codec.decode * megabytes(results.large_frame_bytes),
    );
    println!(
        "frames: transfer {} B, block {} B ({} transfers); MB = 10^6 bytes of frames",
        results.small_frame_bytes, results.large_frame_bytes, results.large_transfers
    );
}

/// Rates per second (messages for small frames, MB for large ones).
#[derive(Clone, Copy, Debug, Default)]
struct StackRates {
    tcp: f64,
    tls: f64,
    link: f64,
}

#[derive(Debug)]
struct Results {
    tcp_connects: f64,
    tls_handshakes: f64,
    full_handshakes: f64,
    small: StackRates,
    large: StackRates,
    small_frame_bytes: usize,
    large_frame_bytes: usize,
    large_transfers: usize,
    codec: [CodecRates; 2],
}

/// One core's `Wire` encodings (to a frame) and decodings per second of one message.
#[derive(Clone, Copy, Debug, Default)]
struct CodecRates {
    encode: f64,
    decode: f64,
}

async fn run(counts: Counts) -> Results {
    let fixture = Arc::new(Fixture::new());
    let repetitions = counts.repetitions;

    // Repetitions take turns between the stacks, so load from elsewhere on a shared machine
    // weighs on each stack alike.
    let handshakes = [
        (Handshake::Tcp, counts.tcp_connects),
        (Handshake::Tls, counts.handshakes),
        (Handshake::Full, counts.handshakes),
    ];
    let mut handshake_durations: [Vec<Duration>; 3] = Default::default();
    for _ in 0..repetitions {
        for ((handshake, count), durations) in handshakes.iter().zip(&mut handshake_durations) {
            durations.push(connections(Arc::clone(&fixture), *handshake, *count).await);
        }
    }
    let handshake_rates: Vec<f64> = handshakes
        .iter()
        .zip(handshake_durations)
        .map(|((handshake, count), durations)| {
            report(&format!("net::handshake/stack={}", handshake.name()), *count, None, durations)
        })
        .collect();

    let transfer = sign_transfer(&account_key(0), &fixture.chain_id, account_key(1).address(), 5, 1, 0);
    let (block, large_transfers) = large_block(&fixture.chain_id, &transfer);
    let cases = [
        Case::new(Message::Transfers(vec![transfer]), counts.small_messages, false),
        Case::new(block, counts.large_messages, true),
    ];
    // Nothing else runs yet: this briefly holds one worker, timing one core.
    let codec = cases.each_ref().map(|case| {
        let codings = if case.in_megabytes { counts.codings / 100 } else { counts.codings };
        codec_rates(&case.message, codings.max(1), repetitions)
    });

    let limits = NetLimits::default();
    let (sender, mut receiver) = linked_pair(&limits).await;
    let mut stack_rates = [StackRates::default(); 2];
    for (case, rates) in cases.iter().zip(&mut stack_rates) {
        let window = in_flight_max(&limits, case.frame_bytes);
        let (mut tcp, mut tls, mut link) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..repetitions {
            let payload = &case.payload;
            tcp.push(stream_frames(Arc::clone(&fixture), Baseline::Tcp, Arc::clone(payload), case.count).await);
            tls.push(stream_frames(Arc::clone(&fixture), Baseline::Tls, Arc::clone(payload), case.count).await);
            link.push(time_link(&sender, &mut receiver, &case.message, case.count, window).await);
        }
        rates.tcp = case.report("tcp", tcp);
        rates.tls = case.report("tls", tls);
        rates.link = case.report("link", link);
    }
    sender.shut_down().await;
    receiver.shut_down().await;

    let [small, large] = stack_rates;
    let [small_frame_bytes, large_frame_bytes] = cases.each_ref().map(|case| case.frame_bytes);
    Results {
        tcp_connects: handshake_rates[0],
        tls_handshakes: handshake_rates[1],
        full_handshakes: handshake_rates[2],
        small,
        large,
        small_frame_bytes,
        large_frame_bytes,
        large_transfers,
        codec,
    }
}

/// One message measured over every stack.
struct Case {
    message: Message,
    /// Messages sent per run.
    count: usize,
    /// The payload every stack carries: the link's frame of the message, without its header.
    payload: Arc<[u8]>,
    frame_bytes: usize,
    /// Rates are reported in MB per second rather than messages per second.
    in_megabytes: bool,
}

impl Case {
    fn new(message: Message, count: usize, in_megabytes: bool) -> Case {
        let payload: Arc<[u8]> = Wire::Core(message.clone()).encode().into();
        let frame_bytes = payload.len() + FRAME_HEADER_BYTES;
        Case { message, count, payload, frame_bytes, in_megabytes }
    }

    /// Prints one stack's runs and returns its best rate, in messages or MB per second.
    fn report(&self, stack: &str, durations: Vec<Duration>) -> f64 {
        let name = format!("net::link/bytes={},stack={stack}", self.frame_bytes);
        let rate = report(&name, self.count, Some(self.frame_bytes), durations);
        if self.in_megabytes {
            rate * megabytes(self.frame_bytes)
        } else {
            rate
        }
    }
}

fn megabytes(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

/// Prints the best and median rates of `items` per run and returns the best rate in items per
/// second.
fn report(name: &str, items: usize, frame_bytes: Option<usize>, mut durations: Vec<Duration>) -> f64 {
    durations.sort();
    let rate = |duration: Duration| items as f64 / duration.as_secs_f64();
    let best = rate(durations[0]);
    let median = rate(durations[durations.len() / 2]);
    let throughput = match frame_bytes {
        Some(bytes) => format!(", {:.0} MB/s best", best * megabytes(bytes)),
        None => String::new(),
    };
    println!(
        "{name:<40} {items:>6} in {:>8.2} ms: {}/s best, {}/s median{throughput}",
        durations[0].as_secs_f64() * 1e3,
        whole(best),
        whole(median),
    );
    best
}

fn whole(rate: f64) -> String {
    if rate >= 100_000.0 {
        format!("{:.0}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

#[derive(Clone, Copy, Debug)]
enum Unit {
    Messages,
    Megabytes,
}

impl Unit {
    fn show(self, rate: f64) -> String {
        match self {
            Unit::Messages => whole(rate),
            Unit::Megabytes => format!("{rate:.0}"),
        }
    }
}

/// One core's Ed25519 signs and strict verifications per second, for reference.
fn ed25519_rates(counts: &Counts) -> (f64, f64) {
    let key = validator_key(0);
    let signer = key.address();
    let message = [7u8; 200];
    let signature = key.sign(&message);
    let mut best_sign = Duration::MAX;
    let mut best_verify = Duration::MAX;
    for _ in 0..counts.repetitions {
        let started = Instant::now();
        for _ in 0..counts.signatures {
            black_box(key.sign(black_box(&message)));
        }
        best_sign = best_sign.min(started.elapsed());
        let started = Instant::now();
        for _ in 0..counts.signatures {
            assert!(verify_strict(black_box(&signer), black_box(&message), black_box(&signature)));
        }
        best_verify = best_verify.min(started.elapsed());
    }
    let rate = |duration: Duration| counts.signatures as f64 / duration.as_secs_f64();
    (rate(best_sign), rate(best_verify))
}

/// What the link adds per message on one core: the sender's encoding into a frame (as the
/// manager does for `send_to`) and the receiver's decoding (as the link's reader does).
fn codec_rates(message: &Message, count: usize, repetitions: usize) -> CodecRates {
    let wire = Wire::Core(message.clone());
    let frame = wire.to_frame().expect("the message fits in a frame");
    let payload = &frame[FRAME_HEADER_BYTES..];
    let mut best_encode = Duration::MAX;
    let mut best_decode = Duration::MAX;
    for _ in 0..repetitions {
        let started = Instant::now();
        for _ in 0..count {
            black_box(Wire::Core(black_box(message).clone()).to_frame().expect("the message fits in a frame"));
        }
        best_encode = best_encode.min(started.elapsed());
        let started = Instant::now();
        for _ in 0..count {
            black_box(Wire::decode(black_box(payload)).expect("the payload decodes"));
        }
        best_decode = best_decode.min(started.elapsed());
    }
    let rate = |duration: Duration| count as f64 / duration.as_secs_f64();
    CodecRates { encode: rate(best_encode), decode: rate(best_decode) }
}

/// Two validators of a test genesis: validator 0 dials (the client), validator 1 listens.
struct Fixture {
    keys: [Keypair; 2],
    certificates: [NodeCertificate; 2],
    validators: Arc<BTreeSet<NodeId>>,
    chain_id: String,
    exporter_context: Vec<u8>,
}

const CLIENT: usize = 0;
const SERVER: usize = 1;

impl Fixture {
    fn new() -> Fixture {
        let genesis = fast_genesis(2, 0);
        let genesis_hash = genesis_block(&genesis).1.tip.hash;
        let keys = [validator_key(CLIENT), validator_key(SERVER)];
        let certificates = keys.clone().map(|key| node_certificate(&key).expect("a node certificate"));
        let validators = Arc::new(keys.iter().map(Keypair::address).collect());
        Fixture {
            exporter_context: exporter_context(&genesis.chain_id, &genesis_hash),
            chain_id: genesis.chain_id,
            keys,
            certificates,
            validators,
        }
    }

    fn id(&self, index: usize) -> NodeId {
        self.keys[index].address()
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config: Arc<rustls::ServerConfig> =
            server_config(&self.certificates[SERVER], Arc::clone(&self.validators)).expect("a server config");
        TlsAcceptor::from(config)
    }

    /// A dialer's configuration, built per dial as the manager builds it.
    fn connector(&self) -> TlsConnector {
        let config: Arc<rustls::ClientConfig> =
            client_config(&self.certificates[CLIENT], Arc::clone(&self.validators), self.id(SERVER))
                .expect("a client config");
        TlsConnector::from(config)
    }

    /// TLS 1.3 over `tcp` as the listening validator.
    async fn accept_tls(&self, acceptor: &TlsAcceptor, tcp: TcpStream) -> ServerTlsStream<TcpStream> {
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        acceptor.accept(tcp).await.expect("the TLS handshake succeeds")
    }

    /// TLS 1.3 to `addr` as the dialing validator.
    async fn dial_tls(&self, addr: SocketAddr) -> ClientTlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.expect("connect on loopback");
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        self.connector().connect(peer_server_name(), tcp).await.expect("the TLS handshake succeeds")
    }

    /// The challenge-response after TLS, as the manager runs it: Hello, Proof, every check.
    /// Returns the authenticated peer.
    async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        index: usize,
        role: Role,
        stream: &mut S,
        certificate_key: NodeId,
        exporter: &[u8; EXPORTER_KEY_BYTES],
    ) -> NodeId {
        let local = Local { key: &self.keys[index], chain_id: &self.chain_id, role };
        let ours = start_handshake(&local, random_nonce());
        write_frame(stream, &encode_hello(&ours)).await.expect("send the hello");
        let hello = read_frame(stream, HANDSHAKE_MESSAGE_BYTES_MAX).await.expect("receive the hello");
        let theirs = decode_hello(&hello).expect("a valid hello");
        let proof = respond(&local, &ours, &theirs, exporter).expect("the peer's hello is acceptable");
        write_frame(stream, &encode_proof(&proof)).await.expect("send the proof");
        let proof = read_frame(stream, HANDSHAKE_MESSAGE_BYTES_MAX).await.expect("receive the proof");
        let their_proof = decode_proof(&proof).expect("a valid proof");
        let is_validator = |node: &NodeId| self.validators.contains(node);
        finish(&local, &ours, &theirs, exporter, &their_proof, &certificate_key, is_validator, |_| false)
            .expect("the peer authenticates")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handshake {
    Tcp,
    Tls,
    Full,
}

impl Handshake {
    fn name(self) -> &'static str {
        match self {
            Handshake::Tcp => "tcp",
            Handshake::Tls => "tls",
            Handshake::Full => "tls+auth",
        }
    }
}

/// `count` sequential connections, each established (and for `Full`, authenticated) at both ends
/// before the next starts. Returns the time they took.
async fn connections(fixture: Arc<Fixture>, handshake: Handshake, count: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("a bound listener has an address");
    let (done_sender, mut done) = mpsc::channel::<()>(1);
    let server_fixture = Arc::clone(&fixture);
    let server = tokio::spawn(async move {
        let fixture = server_fixture;
        let acceptor = fixture.acceptor();
        for _ in 0..count {
            let (tcp, _) = listener.accept().await.expect("accept on loopback");
            if handshake != Handshake::Tcp {
                let mut tls = fixture.accept_tls(&acceptor, tcp).await;
                if handshake == Handshake::Full {
                    let (_, connection) = tls.get_ref();
                    let certificate_key = peer_node_id(connection).expect("the client's node id");
                    let exporter = exporter_key(connection, EXPORTER_LABEL, &fixture.exporter_context)
                        .expect("the session's exporter key");
                    let peer = fixture.authenticate(SERVER, Role::Server, &mut tls, certificate_key, &exporter).await;
                    assert_eq!(peer, fixture.id(CLIENT));
                }
            }
            done_sender.send(()).await.expect("the client waits for every connection");
        }
    });
    let started = Instant::now();
    for _ in 0..count {
        if handshake == Handshake::Tcp {
            let tcp = TcpStream::connect(addr).await.expect("connect on loopback");
            tcp.set_nodelay(true).expect("TCP_NODELAY");
            done.recv().await.expect("the listener accepted");
            continue;
        }
        let mut tls = fixture.dial_tls(addr).await;
        if handshake == Handshake::Full {
            let (_, connection) = tls.get_ref();
            let certificate_key = peer_node_id(connection).expect("the server's node id");
            let exporter = exporter_key(connection, EXPORTER_LABEL, &fixture.exporter_context)
                .expect("the session's exporter key");
            let peer = fixture.authenticate(CLIENT, Role::Client, &mut tls, certificate_key, &exporter).await;
            assert_eq!(peer, fixture.id(SERVER));
        }
        done.recv().await.expect("the listener finished its side");
    }
    let elapsed = started.elapsed();
    server.await.expect("the listener does not panic");
    elapsed
}

/// A transport below the link, carrying frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Baseline {
    Tcp,
    Tls,
}

/// A fresh connection over `stack` (set up untimed), then `count` frames of `payload` from the
/// dialer to the listener. Returns the time from the first write until the last frame was read.
async fn stream_frames(fixture: Arc<Fixture>, stack: Baseline, payload: Arc<[u8]>, count: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("a bound listener has an address");
    let accepting = tokio::spawn(async move { listener.accept().await.expect("accept on loopback").0 });
    match stack {
        Baseline::Tcp => {
            let client = TcpStream::connect(addr).await.expect("connect on loopback");
            client.set_nodelay(true).expect("TCP_NODELAY");
            let server = accepting.await.expect("the accept task does not panic");
            server.set_nodelay(true).expect("TCP_NODELAY");
            time_frames(server, client, payload, count).await
        }
        Baseline::Tls => {
            let server_fixture = Arc::clone(&fixture);
            let server = tokio::spawn(async move {
                let tcp = accepting.await.expect("the accept task does not panic");
                server_fixture.accept_tls(&server_fixture.acceptor(), tcp).await
            });
            let client = fixture.dial_tls(addr).await;
            let server = server.await.expect("the TLS accept does not panic");
            time_frames(server, client, payload, count).await
        }
    }
}

async fn time_frames<R, W>(reader: R, mut writer: W, payload: Arc<[u8]>, count: usize) -> Duration
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let expected = Arc::clone(&payload);
    let started = Instant::now();
    let reading = tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
        let mut last = Vec::new();
        for _ in 0..count {
            last = read_frame(&mut reader, FRAME_BYTES_MAX).await.expect("read a frame");
        }
        last
    });
    let writing = tokio::spawn(async move {
        for _ in 0..count {
            write_frame(&mut writer, &payload).await.expect("write a frame");
        }
        // Kept open until the reader is done: closing could race the last frames.
        writer
    });
    let last = reading.await.expect("the reader does not panic");
    let elapsed = started.elapsed();
    let _writer = writing.await.expect("the writer does not panic");
    assert_eq!(last[..], expected[..], "the last frame arrived intact");
    elapsed
}

/// A running transport and its driver's ends.
struct Node {
    id: NodeId,
    handle: NetHandle,
    events: mpsc::Receiver<NetEvent>,
    task: NetTask,
}

impl Node {
    async fn shut_down(mut self) {
        self.handle.shutdown().await.expect("the transport is running");
        tokio::time::timeout(WITHIN, self.task.join())
            .await
            .expect("shutdown ends the transport")
            .expect("the transport ends cleanly");
        while self.events.recv().await.is_some() {}
    }
}

/// Distinct free loopback addresses: bound (so they are distinct), then released for the nodes.
fn free_addrs(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")).collect();
    listeners.iter().map(|listener| listener.local_addr().expect("a bound listener has an address")).collect()
}

/// Two validators' transports (`manager::start`) with one settled link between them: no dial or
/// handshake in progress, so no simultaneous-dial race can replace the link mid-measurement.
async fn linked_pair(limits: &NetLimits) -> (Node, Node) {
    let addrs = free_addrs(2);
    let mut genesis = fast_genesis(2, 0);
    for (validator, addr) in genesis.validators.iter_mut().zip(&addrs) {
        validator.addr = addr.to_string();
    }
    let genesis_hash = genesis_block(&genesis).1.tip.hash;
    let mut nodes = Vec::new();
    for (index, addr) in addrs.iter().enumerate() {
        let key = validator_key(index);
        let id = key.address();
        let config = NetConfig {
            listen_addr: *addr,
            key,
            genesis: genesis.clone(),
            genesis_hash,
            seeds: Vec::new(),
            limits: limits.clone(),
        };
        let (handle, events, task) = manager::start(config, PeerStore::none()).await.expect("the transport starts");
        nodes.push(Node { id, handle, events, task });
    }
    for node in &mut nodes {
        let event = tokio::time::timeout(WITHIN, node.events.recv()).await.expect("the nodes link up");
        assert!(matches!(event, Some(NetEvent::PeerConnected(_))), "{event:?}");
    }
    let deadline = Instant::now() + WITHIN;
    while !nodes.iter().all(|node| {
        let stats = node.task.stats();
        stats.links == 1 && stats.dials_in_flight == 0 && stats.pending_handshakes == 0
    }) {
        assert!(Instant::now() < deadline, "the link did not settle");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let receiver = nodes.pop().expect("two nodes");
    let sender = nodes.pop().expect("two nodes");
    (sender, receiver)
}

/// Messages the sender may have sent and the receiver not yet seen: at most half of the link's
/// outbound queue, in frames and in bytes, so the queue never fills (which closes the link).
fn in_flight_max(limits: &NetLimits, frame_bytes: usize) -> usize {
    (limits.link_queue_frames_max / 2).min(limits.link_queue_bytes_max / frame_bytes / 2).max(1)
}

/// `count` copies of `message` from `sender` to `receiver` through the transports, at most
/// `window` in flight. Returns the time from the first send until the last one was received.
async fn time_link(sender: &Node, receiver: &mut Node, message: &Message, count: usize, window: usize) -> Duration {
    let dropped_before = sender.task.stats().links_dropped_queue_full;
    let window = Arc::new(Semaphore::new(window));
    let started = Instant::now();
    let sending = tokio::spawn({
        let handle = sender.handle.clone();
        let peer = receiver.id;
        let message = message.clone();
        let window = Arc::clone(&window);
        async move {
            for _ in 0..count {
                window.acquire().await.expect("the window stays open").forget();
                handle.send_to(peer, message.clone()).await.expect("the transport is running");
            }
        }
    });
    let mut last = None;
    for _ in 0..count {
        let event = tokio::time::timeout(WITHIN, receiver.events.recv())
            .await
            .expect("the next message arrives (was the link dropped?)")
            .expect("the events channel is open");
        match event {
            NetEvent::MessageReceived { from, message } if from == sender.id => {
                last = Some(message);
                window.add_permits(1);
            }
            other => panic!("unexpected event during the measurement: {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    sending.await.expect("the sender does not panic");
    assert_eq!(last.as_ref(), Some(message), "the last message arrived intact");
    assert_eq!(sender.task.stats().links_dropped_queue_full, dropped_before, "the link's queue never filled");
    elapsed
}

/// A block whose `Wire::Core` payload is just under [`LARGE_PAYLOAD_BYTES`]: copies of
/// `transfer` with distinct nonces (the transport checks no signature). Returns it and its
/// number of transfers.
fn large_block(chain_id: &str, transfer: &Transfer) -> (Message, usize) {
    let header = BlockHeader {
        chain_id: chain_id.to_string(),
        height: 1,
        prev_hash: Hash([1; 32]),
        timestamp_ms: 1,
        producer: validator_key(0).address(),
        rank: 0,
        tx_root: Hash([2; 32]),
        report_root: Hash([3; 32]),
        evidence_root: tinychain_core::crypto::merkle_root(&[]),
        state_root: Hash([4; 32]),
        signature: Signature([5; 64]),
    };
    let block = |transfers: Vec<Transfer>| {
        Message::Block(Arc::new(Block { header: header.clone(), transfers, reports: Vec::new(), evidence: Vec::new() }))
    };
    let empty_bytes = Wire::Core(block(Vec::new())).encode().len();
    let transfer_bytes = Wire::Core(block(vec![transfer.clone()])).encode().len() - empty_bytes;
    let count = (LARGE_PAYLOAD_BYTES - empty_bytes) / transfer_bytes;
    let transfers = (0..count as u64).map(|nonce| Transfer { nonce, ..transfer.clone() }).collect();
    let message = block(transfers);
    assert!(Wire::Core(message.clone()).encode().len() <= LARGE_PAYLOAD_BYTES);
    (message, count)
}
