//! The connection manager: the TLS transport between validators. It owns the listener, every
//! dial, the admission of authenticated links (one per peer), reconnection with backoff, the
//! scoring down of peers that break the protocol, and routing the driver's commands to links.
//! It decides nothing about what to send: the core does.
//!
//! # The driver contract
//!
//! [`start`] returns a [`NetHandle`], the bounded receiver of [`NetEvent`]s and a [`NetTask`].
//! - **Order.** Each link has one reader task that delivers `PeerConnected(p)`, then `p`'s
//!   messages in the order they arrived, then `PeerDisconnected(p)`. A new link with `p` starts
//!   delivering only after the previous link's `PeerDisconnected(p)` was delivered, so for each
//!   peer the driver sees connected / messages / disconnected, in that order, every time.
//! - **Back-pressure.** The events channel is bounded (`NetLimits::events_capacity`). When it is
//!   full, readers wait: they stop reading their sockets and TCP pushes back on the peers. The
//!   manager itself never waits on the driver, so `NetHandle` commands are always drained and a
//!   driver blocked on a command cannot deadlock against a full events channel.
//! - **Full queues.** Each link has a bounded outbound queue (`link_queue_frames_max` frames and
//!   `link_queue_bytes_max` bytes). A command that finds a peer's queue full closes that peer's
//!   link instead of growing memory: the peer is slow or stuck, the link is redialed with backoff,
//!   and the core's sync fills whatever was lost. Sending is best effort in general: a message
//!   for a peer without a link is dropped.
//! - **Shutdown.** `NetCommand::Shutdown` (or dropping every `NetHandle`) closes every link, stops
//!   listening and ends every task; no event is delivered after it, and the events channel closes
//!   when the last task has ended. [`NetTask::join`] waits for that.
//!
//! # Links
//!
//! Every genesis validator but ourselves is dialed, at each address the address book holds for
//! it in turn (genesis, saved, learned by peer exchange or identified from a seed or `AddPeer`),
//! while there is no link with it. Failures back off exponentially (`backoff_initial` doubling to
//! `backoff_max`) plus up to half again of random jitter; a link that stayed up for
//! `link_stable_after` resets the backoff.
//!
//! A dial or an accepted connection runs the whole handshake (DNS and TCP for a dial, then TLS
//! 1.3, then the Hello/Proof challenge-response of `handshake`) under one deadline
//! (`handshake_deadline`). Any failure closes the connection without a word to the peer and is
//! logged here at debug. Connections still in the handshake are capped in total and per source
//! IP; refused ones are closed at once. Authenticated links do not count against either cap, and
//! dials we make do not either: on one machine every peer comes from 127.0.0.1, and a flood from
//! one address can delay an honest validator's dial to us but not ours to it.
//!
//! **One link per pair.** When two authenticated links with one peer exist (both dialed at once),
//! both ends keep the link whose dialer has the lower node id; if one node dialed both, the newer
//! link is kept (that node dials only when it has no link, so it considers the older one gone).
//! Both ends apply the same rule to the same facts, so they keep the same link. To make the race
//! rare, a node waits `dial_yield` longer before dialing a peer with a lower id than its own
//! (whose dial would win anyway).
//!
//! **Scoring down.** A peer that sends an oversized or empty frame or an undecodable payload, or
//! that the driver disconnects (the core does so only for a forgery), is banned for
//! `misbehavior_ban_initial`, doubling with each offence up to `misbehavior_ban_max`: it is not
//! dialed and its inbound links are closed right after authentication until the ban ends.
//! Everything else (a closed socket, a failed write, an idle timeout) only costs the usual
//! backoff.

use crate::discovery::{genesis_validators, AddressBook, AddressSource, Identified, PeerAddr, PeerStore};
use crate::frame::{read_frame, write_frame, FrameError};
use crate::handle::{NetCommand, NetError, NetEvent, NetHandle};
use crate::handshake::{
    decode_hello, decode_proof, encode_hello, encode_proof, exporter_context, finish, random_nonce, respond,
    start as start_handshake, HandshakeError, Local, Role, EXPORTER_KEY_BYTES, EXPORTER_LABEL,
    HANDSHAKE_MESSAGE_BYTES_MAX,
};
use crate::link::{
    link_queue, link_stop, run_reader, run_writer, stopped, Frame, LinkEnd, LinkSender, LinkStop, ReaderContext,
    WriterContext,
};
use crate::tls::{
    client_config, exporter_key, node_certificate, peer_node_id, peer_server_name, server_config, NodeCertificate,
    TlsError,
};
use crate::wire::{PeerAddress, Wire};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tinychain_core::crypto::Keypair;
use tinychain_core::genesis::Genesis;
use tinychain_core::message::Message;
use tinychain_core::types::{Hash, NodeId};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use tracing::{debug, error, info, warn};

/// Peer lists waiting for the manager (each is one `Wire::Peers`; readers wait when it is full).
const PEER_LISTS_CAPACITY: usize = 64;

/// How long the manager waits before accepting again after `accept` failed (for example when the
/// process is out of file descriptors), so the failure does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// How long shutdown waits for tasks to end on their own before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Tunable limits of the TLS transport, with the defaults DESIGN.md sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetLimits {
    /// The whole handshake (DNS, TCP, TLS, Hello/Proof) must finish within this.
    pub handshake_deadline: Duration,
    /// Inbound connections still in the handshake, in total.
    pub pending_handshakes_max: usize,
    /// Inbound connections still in the handshake, per source IP address.
    pub pending_handshakes_per_ip_max: usize,
    /// A link on which nothing arrives for this long is closed (pings keep honest links busy).
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    /// Frames waiting to be written on one link; past this the link is closed.
    pub link_queue_frames_max: usize,
    /// Bytes waiting to be written on one link; past this the link is closed.
    pub link_queue_bytes_max: usize,
    /// Events waiting for the driver.
    pub events_capacity: usize,
    /// Commands waiting for the manager.
    pub commands_capacity: usize,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Extra wait before dialing a peer whose node id is lower than ours (see the module docs).
    pub dial_yield: Duration,
    /// A link up this long resets its peer's backoff when it closes.
    pub link_stable_after: Duration,
    pub misbehavior_ban_initial: Duration,
    pub misbehavior_ban_max: Duration,
    /// Seed and manual addresses waiting to be identified.
    pub unidentified_addresses_max: usize,
}

impl Default for NetLimits {
    fn default() -> NetLimits {
        NetLimits {
            handshake_deadline: Duration::from_secs(5),
            pending_handshakes_max: 64,
            pending_handshakes_per_ip_max: 8,
            idle_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(10),
            link_queue_frames_max: 1024,
            link_queue_bytes_max: 64 * 1024 * 1024,
            events_capacity: 1024,
            commands_capacity: 1024,
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            dial_yield: Duration::from_millis(500),
            link_stable_after: Duration::from_secs(10),
            misbehavior_ban_initial: Duration::from_secs(10),
            misbehavior_ban_max: Duration::from_secs(600),
            unidentified_addresses_max: 64,
        }
    }
}

impl NetLimits {
    fn check(&self) -> Result<(), NetError> {
        let bad = |field: &'static str, reason: &str| Err(NetError::BadLimit { field, reason: reason.to_string() });
        let zero_checks: [(&'static str, bool); 11] = [
            ("handshake_deadline", self.handshake_deadline.is_zero()),
            ("pending_handshakes_max", self.pending_handshakes_max == 0),
            ("pending_handshakes_per_ip_max", self.pending_handshakes_per_ip_max == 0),
            ("idle_timeout", self.idle_timeout.is_zero()),
            ("ping_interval", self.ping_interval.is_zero()),
            ("link_queue_frames_max", self.link_queue_frames_max == 0),
            ("link_queue_bytes_max", self.link_queue_bytes_max == 0),
            ("events_capacity", self.events_capacity == 0),
            ("commands_capacity", self.commands_capacity == 0),
            ("backoff_initial", self.backoff_initial.is_zero()),
            ("misbehavior_ban_initial", self.misbehavior_ban_initial.is_zero()),
        ];
        if let Some((field, _)) = zero_checks.iter().find(|(_, is_zero)| *is_zero) {
            return bad(field, "must be above zero");
        }
        if self.ping_interval >= self.idle_timeout {
            return bad("ping_interval", "must be below idle_timeout, or idle links with honest peers would close");
        }
        if self.backoff_max < self.backoff_initial {
            return bad("backoff_max", "must be at least backoff_initial");
        }
        if self.misbehavior_ban_max < self.misbehavior_ban_initial {
            return bad("misbehavior_ban_max", "must be at least misbehavior_ban_initial");
        }
        Ok(())
    }
}

/// What the TLS transport is started with.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Where to listen for peers (default port 7740).
    pub listen_addr: SocketAddr,
    pub key: Keypair,
    /// The validator set, each validator's address, and the chain id.
    pub genesis: Genesis,
    /// The genesis block hash: bound into every handshake (the exporter context).
    pub genesis_hash: Hash,
    /// `host:port` addresses of validators to ask (DNS names allowed); which validator each is,
    /// a dial finds out.
    pub seeds: Vec<PeerAddr>,
    pub limits: NetLimits,
}

/// Counters for live metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Authenticated links that carry messages (announced, or about to be); a link being closed
    /// or replaced is not counted.
    pub links: usize,
    /// Dials (and identifications of seed or manual addresses) in progress.
    pub dials_in_flight: usize,
    /// Inbound connections in the handshake now, and the most there ever were.
    pub pending_handshakes: usize,
    pub pending_handshakes_peak: usize,
    /// The most inbound connections in the handshake there ever were from one IP address.
    pub pending_handshakes_per_ip_peak: usize,
    /// Inbound connections closed at once because a pending-handshake cap was reached.
    pub connections_refused_at_cap: u64,
    /// Inbound handshakes that failed or missed the deadline.
    pub inbound_handshakes_failed: u64,
    /// Links closed because their outbound queue was full.
    pub links_dropped_queue_full: u64,
    /// Times a peer was scored down.
    pub peers_scored_down: u64,
}

/// The running transport: its listening address, its counters, and its end.
#[derive(Debug)]
pub struct NetTask {
    join: tokio::task::JoinHandle<()>,
    counters: Arc<Mutex<Counters>>,
    local_addr: SocketAddr,
}

impl NetTask {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> NetStats {
        lock(&self.counters).stats.clone()
    }

    /// Waits until the transport has stopped (after `Shutdown`, or once every handle is gone).
    pub async fn join(self) -> Result<(), NetError> {
        self.join.await.map_err(|error| NetError::TaskFailed { reason: error.to_string() })
    }
}

#[derive(Debug, Default)]
struct Counters {
    stats: NetStats,
    pending_per_ip: BTreeMap<IpAddr, usize>,
}

/// The counters are plain numbers: a panic elsewhere cannot leave them inconsistent in a way
/// that matters, so a poisoned lock is used as is.
fn lock(counters: &Mutex<Counters>) -> MutexGuard<'_, Counters> {
    counters.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One inbound connection's place under the pending-handshake caps, released when dropped (the
/// handshake ended, whichever way, or its task was aborted).
#[derive(Debug)]
struct PendingSlot {
    counters: Arc<Mutex<Counters>>,
    ip: IpAddr,
}

impl PendingSlot {
    fn acquire(counters: &Arc<Mutex<Counters>>, ip: IpAddr, limits: &NetLimits) -> Option<PendingSlot> {
        let mut guard = lock(counters);
        let from_ip = guard.pending_per_ip.get(&ip).copied().unwrap_or(0);
        if guard.stats.pending_handshakes >= limits.pending_handshakes_max
            || from_ip >= limits.pending_handshakes_per_ip_max
        {
            guard.stats.connections_refused_at_cap += 1;
            return None;
        }
        guard.stats.pending_handshakes += 1;
        guard.stats.pending_handshakes_peak = guard.stats.pending_handshakes_peak.max(guard.stats.pending_handshakes);
        guard.pending_per_ip.insert(ip, from_ip + 1);
        guard.stats.pending_handshakes_per_ip_peak = guard.stats.pending_handshakes_per_ip_peak.max(from_ip + 1);
        Some(PendingSlot { counters: Arc::clone(counters), ip })
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        let mut guard = lock(&self.counters);
        assert!(guard.stats.pending_handshakes > 0, "a held slot is counted");
        guard.stats.pending_handshakes -= 1;
        let from_ip = guard.pending_per_ip.get_mut(&self.ip).expect("a held slot counts its IP address");
        *from_ip -= 1;
        if *from_ip == 0 {
            guard.pending_per_ip.remove(&self.ip);
        }
    }
}

/// Exponential backoff: each failure returns the current wait and doubles the next, up to a cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration) -> Backoff {
        Backoff { next: initial }
    }

    fn after_failure(&mut self, max: Duration) -> Duration {
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(max);
        wait
    }
}

/// Adds up to half of `wait` again, from `random`, so nodes that failed together do not all
/// retry together.
fn with_jitter(wait: Duration, random: u64) -> Duration {
    let spread_ns = u64::try_from(wait.as_nanos() / 2).unwrap_or(u64::MAX);
    wait + Duration::from_nanos(random % spread_ns.saturating_add(1))
}

/// Random bits for jitter from the OS (the network may use OS randomness; the core may not).
fn random_u64() -> u64 {
    // Jitter only spreads retries out; without randomness the retries merely line up.
    getrandom::u64().unwrap_or(0)
}

/// The ban after the `offences`-th offence: the initial ban, doubling, up to the maximum.
fn misbehavior_ban(offences: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = offences.saturating_sub(1).min(20);
    initial.saturating_mul(1u32 << doublings).min(max)
}

/// The one-link-per-pair rule, applied by both ends to the same facts: does a new authenticated
/// link replace the existing one? `*_outbound` says whether we dialed the link.
fn keeps_new_link(local: NodeId, peer: NodeId, existing_outbound: bool, new_outbound: bool) -> bool {
    if existing_outbound == new_outbound {
        // One node dialed both: it dials only without a link, so it has given the older up.
        return true;
    }
    let dialer = |outbound: bool| if outbound { local } else { peer };
    dialer(new_outbound) < dialer(existing_outbound)
}

/// Why setting up a connection failed: logged locally, never told to the peer.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("cannot resolve {addr}: {reason}")]
    Resolve { addr: String, reason: String },
    #[error("cannot connect: {reason}")]
    Connect { reason: String },
    #[error("TLS handshake failed: {reason}")]
    Tls { reason: String },
    #[error("a different validator, {found}, answered")]
    ReachedAnother { found: NodeId },
    #[error("TLS session: {source}")]
    TlsSession {
        #[from]
        source: TlsError,
    },
    #[error("handshake frame: {source}")]
    Frame {
        #[from]
        source: FrameError,
    },
    #[error("authentication: {source}")]
    Handshake {
        #[from]
        source: HandshakeError,
    },
    #[error("the handshake deadline passed")]
    Deadline,
    #[error("the transport is shutting down")]
    ShuttingDown,
}

/// The validator the dialer's certificate verifier found instead of the one it expected, if that
/// is why the TLS handshake failed. It is the certificate's claim, not yet proven.
fn reached_another(error: &std::io::Error) -> Option<NodeId> {
    let rustls_error = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = rustls_error else {
        return None;
    };
    match other.0.downcast_ref::<TlsError>()? {
        TlsError::UnexpectedPeer { got, .. } => Some(*got),
        _ => None,
    }
}

/// What every task of the transport shares. Immutable.
struct Context {
    key: Keypair,
    local: NodeId,
    chain_id: String,
    exporter_context: Vec<u8>,
    validators: Arc<BTreeSet<NodeId>>,
    certificate: NodeCertificate,
    acceptor: TlsAcceptor,
    limits: NetLimits,
    events: mpsc::Sender<NetEvent>,
    peer_lists: mpsc::Sender<(NodeId, Vec<PeerAddress>)>,
    shutdown: watch::Receiver<bool>,
    counters: Arc<Mutex<Counters>>,
}

/// Hello, Proof and the checks of `handshake`, over an established TLS session.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    context: &Context,
    stream: &mut S,
    role: Role,
    certificate_key: NodeId,
    exporter: &[u8; EXPORTER_KEY_BYTES],
) -> Result<NodeId, SetupError> {
    let local = Local { key: &context.key, chain_id: &context.chain_id, role };
    let ours = start_handshake(&local, random_nonce());
    write_frame(stream, &encode_hello(&ours)).await?;
    let theirs = decode_hello(&read_frame(stream, HANDSHAKE_MESSAGE_BYTES_MAX).await?)?;
    let proof = respond(&local, &ours, &theirs, exporter)?;
    write_frame(stream, &encode_proof(&proof)).await?;
    let their_proof = decode_proof(&read_frame(stream, HANDSHAKE_MESSAGE_BYTES_MAX).await?)?;
    // Existing links are not looked at here: the manager applies the one-link rule when it
    // registers the link, together with every other link of that peer.
    let peer = finish(
        &local,
        &ours,
        &theirs,
        exporter,
        &their_proof,
        &certificate_key,
        |node| context.validators.contains(node),
        |_| false,
    )?;
    Ok(peer)
}

async fn accept_inbound(context: &Context, tcp: TcpStream) -> Result<(NodeId, TlsStream<TcpStream>), SetupError> {
    let mut tls = context.acceptor.accept(tcp).await.map_err(|error| SetupError::Tls { reason: error.to_string() })?;
    let (_, connection) = tls.get_ref();
    let certificate_key = peer_node_id(connection)?;
    let exporter = exporter_key(connection, EXPORTER_LABEL, &context.exporter_context)?;
    let peer = authenticate(context, &mut tls, Role::Server, certificate_key, &exporter).await?;
    Ok((peer, tls.into()))
}

/// Dials `addr` expecting `expected`. With `complete`, runs the whole handshake and returns the
/// authenticated link; without, stops after TLS (which proved who is there) and returns `None`.
async fn dial(
    context: &Context,
    expected: NodeId,
    addr: &str,
    complete: bool,
) -> Result<Option<TlsStream<TcpStream>>, SetupError> {
    let targets: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|error| SetupError::Resolve { addr: addr.to_string(), reason: error.to_string() })?
        .collect();
    let mut tcp = None;
    let mut last_error = String::from("the name resolved to no address");
    for target in targets {
        match TcpStream::connect(target).await {
            Ok(stream) => {
                tcp = Some(stream);
                break;
            }
            Err(error) => last_error = error.to_string(),
        }
    }
    let tcp = tcp.ok_or(SetupError::Connect { reason: last_error })?;
    // Frames are small and latency matters more than packet count.
    let _ = tcp.set_nodelay(true);
    let config = client_config(&context.certificate, Arc::clone(&context.validators), expected)?;
    let mut tls = TlsConnector::from(config).connect(peer_server_name(), tcp).await.map_err(|error| {
        match reached_another(&error) {
            Some(found) => SetupError::ReachedAnother { found },
            None => SetupError::Tls { reason: error.to_string() },
        }
    })?;
    if !complete {
        return Ok(None);
    }
    let (_, connection) = tls.get_ref();
    let certificate_key = peer_node_id(connection)?;
    let exporter = exporter_key(connection, EXPORTER_LABEL, &context.exporter_context)?;
    let peer = authenticate(context, &mut tls, Role::Client, certificate_key, &exporter).await?;
    assert_eq!(peer, expected, "the dialer's verifier admits only the validator it expects");
    Ok(Some(tls.into()))
}

/// Runs `work` under the handshake deadline, or until shutdown.
async fn under_deadline<T>(
    context: &Context,
    work: impl std::future::Future<Output = Result<T, SetupError>>,
) -> Result<T, SetupError> {
    let mut shutdown = context.shutdown.clone();
    tokio::select! {
        result = tokio::time::timeout(context.limits.handshake_deadline, work) => result.unwrap_or(Err(SetupError::Deadline)),
        () = stopped(&mut shutdown) => Err(SetupError::ShuttingDown),
    }
}

/// An accepted connection's handshake. The pending slot is released as soon as it is over.
async fn inbound(context: Arc<Context>, tcp: TcpStream, remote: SocketAddr, slot: PendingSlot) -> TaskExit {
    let result = under_deadline(&context, accept_inbound(&context, tcp)).await;
    drop(slot);
    match result {
        Ok((peer, stream)) => TaskExit::Inbound(Some((peer, stream))),
        Err(error) => {
            debug!(%remote, %error, "refusing inbound connection");
            lock(&context.counters).stats.inbound_handshakes_failed += 1;
            TaskExit::Inbound(None)
        }
    }
}

/// A dial's result, for the manager.
struct DialOutcome {
    expected: NodeId,
    addr: String,
    /// An identification of an unidentified (seed or manual) address.
    probe: bool,
    /// The attempt counts as `expected`'s dial (it was marked in flight for it).
    holds_dial: bool,
    result: Result<Option<TlsStream<TcpStream>>, SetupError>,
}

/// What a task of the transport returns to the manager.
enum TaskExit {
    Inbound(Option<(NodeId, TlsStream<TcpStream>)>),
    Dialed(DialOutcome),
    Reader { peer: NodeId, link_id: u64, end: LinkEnd },
    Writer,
}

/// What the manager must clean up if a task panics.
#[derive(Clone, Debug)]
enum TaskOwner {
    Reader { peer: NodeId, link_id: u64 },
    Dial { holds: Option<NodeId>, probe: Option<String> },
}

#[derive(Debug)]
struct DialState {
    backoff: Backoff,
    due_at: Instant,
    in_flight: bool,
    /// Dials made so far: picks the next address in turn.
    attempts: usize,
    offences: u32,
    banned_until: Option<Instant>,
}

impl DialState {
    fn is_banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|until| until > now)
    }
}

#[derive(Debug)]
struct ActiveLink {
    id: u64,
    outbound: bool,
    sender: LinkSender,
    stop: LinkStop,
    established_at: Instant,
    /// Stop was sent; the reader has not returned yet.
    closing: bool,
}

impl ActiveLink {
    fn close(&mut self) {
        if !self.closing {
            self.closing = true;
            self.stop.send_replace(true);
        }
    }
}

/// An authenticated link that won the one-link rule, waiting for the link it replaces to close.
struct WaitingLink {
    id: u64,
    outbound: bool,
    stream: TlsStream<TcpStream>,
}

struct PeerSlot {
    dial: DialState,
    active: Option<ActiveLink>,
    waiting: Option<WaitingLink>,
}

impl PeerSlot {
    /// Nothing up, nothing coming: this peer may be dialed.
    fn is_idle(&self) -> bool {
        self.active.is_none() && self.waiting.is_none() && !self.dial.in_flight
    }
}

#[derive(Debug)]
struct ProbeState {
    backoff: Backoff,
    due_at: Instant,
    in_flight: bool,
}

struct Manager {
    context: Arc<Context>,
    book: AddressBook,
    peers: BTreeMap<NodeId, PeerSlot>,
    probes: BTreeMap<String, ProbeState>,
    peer_store: PeerStore,
    /// What the peer store was last given (or held at start).
    saved: Vec<PeerAddress>,
    tasks: JoinSet<TaskExit>,
    owners: HashMap<tokio::task::Id, TaskOwner>,
    next_link_id: u64,
    commands: mpsc::Receiver<NetCommand>,
    peer_lists: mpsc::Receiver<(NodeId, Vec<PeerAddress>)>,
    shutdown: watch::Sender<bool>,
}

/// Starts the TLS transport: binds the listener, then dials every validator. See the module docs
/// for the driver contract.
pub async fn start(
    config: NetConfig,
    peer_store: PeerStore,
) -> Result<(NetHandle, mpsc::Receiver<NetEvent>, NetTask), NetError> {
    let NetConfig { listen_addr, key, genesis, genesis_hash, seeds, limits } = config;
    limits.check()?;
    let local = key.address();
    let validators = Arc::new(genesis_validators(&genesis));
    if !validators.contains(&local) {
        return Err(NetError::NotAValidator { node: local });
    }
    let certificate = node_certificate(&key)?;
    let acceptor = TlsAcceptor::from(server_config(&certificate, Arc::clone(&validators))?);
    let listener = TcpListener::bind(listen_addr)
        .await
        .map_err(|error| NetError::Listen { addr: listen_addr, reason: error.to_string() })?;
    let local_addr =
        listener.local_addr().map_err(|error| NetError::Listen { addr: listen_addr, reason: error.to_string() })?;

    let (command_sender, commands) = mpsc::channel(limits.commands_capacity);
    let (events_sender, events) = mpsc::channel(limits.events_capacity);
    let (peer_lists_sender, peer_lists) = mpsc::channel(PEER_LISTS_CAPACITY);
    let (shutdown, shutdown_receiver) = watch::channel(false);
    let counters = Arc::new(Mutex::new(Counters::default()));

    let mut book = AddressBook::new(&genesis, local, limits.unidentified_addresses_max);
    book.load_saved(&peer_store.saved);
    let now = Instant::now();
    let mut probes = BTreeMap::new();
    for seed in &seeds {
        if book.add_unidentified(seed, AddressSource::Seed) {
            probes.insert(
                seed.to_string(),
                ProbeState { backoff: Backoff::new(limits.backoff_initial), due_at: now, in_flight: false },
            );
        } else {
            debug!(%seed, "seed address already known");
        }
    }
    let peers = book
        .validators()
        .map(|id| {
            let due_at = if *id < local { now + limits.dial_yield } else { now };
            let dial = DialState {
                backoff: Backoff::new(limits.backoff_initial),
                due_at,
                in_flight: false,
                attempts: 0,
                offences: 0,
                banned_until: None,
            };
            (*id, PeerSlot { dial, active: None, waiting: None })
        })
        .collect();
    let saved = book.persistent();
    let context = Arc::new(Context {
        key,
        local,
        exporter_context: exporter_context(&genesis.chain_id, &genesis_hash),
        chain_id: genesis.chain_id,
        validators,
        certificate,
        acceptor,
        limits,
        events: events_sender,
        peer_lists: peer_lists_sender,
        shutdown: shutdown_receiver,
        counters: Arc::clone(&counters),
    });
    let manager = Manager {
        context,
        book,
        peers,
        probes,
        peer_store,
        saved,
        tasks: JoinSet::new(),
        owners: HashMap::new(),
        next_link_id: 0,
        commands,
        peer_lists,
        shutdown,
    };
    info!(%local, %local_addr, "network listening");
    let join = tokio::spawn(manager.run(listener));
    Ok((NetHandle::new(command_sender), events, NetTask { join, counters, local_addr }))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Manager {
    async fn run(mut self, listener: TcpListener) {
        loop {
            self.start_due_dials(Instant::now());
            self.publish_stats();
            let wake_at = self.next_dial_at();
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(NetCommand::Shutdown) => break,
                    Some(command) => self.on_command(command),
                },
                Some((peer, peers)) = self.peer_lists.recv() => self.on_peer_list(peer, &peers),
                accepted = listener.accept() => match accepted {
                    Ok((tcp, remote)) => self.on_accept(tcp, remote),
                    Err(error) => {
                        warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
                Some(joined) = self.tasks.join_next_with_id() => self.on_task_exit(joined),
                () = sleep_until(wake_at) => {}
            }
        }
        drop(listener);
        self.shut_down().await;
    }

    fn on_accept(&mut self, tcp: TcpStream, remote: SocketAddr) {
        let ip = remote.ip().to_canonical();
        let Some(slot) = PendingSlot::acquire(&self.context.counters, ip, &self.context.limits) else {
            debug!(%remote, "refusing connection: too many pending handshakes");
            return;
        };
        let _ = tcp.set_nodelay(true);
        let context = Arc::clone(&self.context);
        self.tasks.spawn(inbound(context, tcp, remote, slot));
    }

    fn on_task_exit(&mut self, joined: Result<(tokio::task::Id, TaskExit), tokio::task::JoinError>) {
        match joined {
            Ok((id, exit)) => {
                self.owners.remove(&id);
                match exit {
                    TaskExit::Inbound(Some((peer, stream))) => self.on_authenticated(peer, false, stream),
                    TaskExit::Inbound(None) | TaskExit::Writer => {}
                    TaskExit::Dialed(outcome) => self.on_dialed(outcome),
                    TaskExit::Reader { peer, link_id, end } => self.on_link_closed(peer, link_id, end),
                }
            }
            Err(join_error) => {
                error!(error = %join_error, "a network task failed");
                match self.owners.remove(&join_error.id()) {
                    Some(TaskOwner::Reader { peer, link_id }) => {
                        // The reader could not take its announcement back itself.
                        let _ = self.context.events.try_send(NetEvent::PeerDisconnected(peer));
                        let end = LinkEnd::Failed { reason: "the reader task failed".into() };
                        self.on_link_closed(peer, link_id, end);
                    }
                    Some(TaskOwner::Dial { holds, probe }) => {
                        let now = Instant::now();
                        if let Some(peer) = holds {
                            if let Some(slot) = self.peers.get_mut(&peer) {
                                slot.dial.in_flight = false;
                            }
                            self.dial_failed(peer, now);
                        }
                        let backoff_max = self.context.limits.backoff_max;
                        if let Some(state) = probe.and_then(|addr| self.probes.get_mut(&addr)) {
                            state.in_flight = false;
                            state.due_at = now + with_jitter(state.backoff.after_failure(backoff_max), random_u64());
                        }
                    }
                    None => {}
                }
            }
        }
    }

    /// A link passed the handshake: apply the ban and the one-link rule, then announce it (or
    /// keep it waiting for the link it replaces to close).
    fn on_authenticated(&mut self, peer: NodeId, outbound: bool, stream: TlsStream<TcpStream>) {
        let now = Instant::now();
        let local = self.context.local;
        let slot = self.peers.get_mut(&peer).expect("the handshake admits only genesis validators other than us");
        if slot.dial.is_banned(now) {
            debug!(%peer, "closing a link: the peer is scored down");
            return;
        }
        let incumbent = match (&slot.waiting, &slot.active) {
            (Some(waiting), _) => Some(waiting.outbound),
            (None, Some(active)) if !active.closing => Some(active.outbound),
            _ => None,
        };
        if let Some(incumbent_outbound) = incumbent {
            if !keeps_new_link(local, peer, incumbent_outbound, outbound) {
                debug!(%peer, outbound, "closing a duplicate link: the one-link rule keeps the existing one");
                return;
            }
            debug!(%peer, outbound, "replacing a link: the one-link rule keeps the new one");
        }
        let id = self.next_link_id;
        self.next_link_id += 1;
        match &mut slot.active {
            Some(active) => {
                active.close();
                slot.waiting = Some(WaitingLink { id, outbound, stream });
            }
            None => self.activate(peer, WaitingLink { id, outbound, stream }),
        }
    }

    /// Starts a link's reader and writer and sends it our peer list.
    fn activate(&mut self, peer: NodeId, link: WaitingLink) {
        let limits = &self.context.limits;
        let (sender, queue) = link_queue(limits.link_queue_frames_max, limits.link_queue_bytes_max);
        let stop = link_stop();
        match Wire::Peers(self.book.shareable()).to_frame() {
            Ok(frame) => {
                let _ = sender.try_push(frame);
            }
            Err(error) => error!(%error, "our own peer list does not fit in a frame"),
        }
        let (reader, writer) = tokio::io::split(link.stream);
        let reader_context = ReaderContext {
            peer,
            events: self.context.events.clone(),
            peer_lists: self.context.peer_lists.clone(),
            sender: sender.clone(),
            stop: Arc::clone(&stop),
            shutdown: self.context.shutdown.clone(),
            idle_timeout: limits.idle_timeout,
        };
        let writer_context = WriterContext {
            peer,
            queue,
            stop: Arc::clone(&stop),
            shutdown: self.context.shutdown.clone(),
            ping_interval: limits.ping_interval,
            idle_timeout: limits.idle_timeout,
        };
        let link_id = link.id;
        let reader_task = self.tasks.spawn(async move {
            let end = run_reader(reader_context, reader).await;
            TaskExit::Reader { peer, link_id, end }
        });
        self.owners.insert(reader_task.id(), TaskOwner::Reader { peer, link_id });
        self.tasks.spawn(async move {
            run_writer(writer_context, writer).await;
            TaskExit::Writer
        });
        info!(%peer, outbound = link.outbound, "link up");
        let slot = self.peers.get_mut(&peer).expect("only validators get links");
        slot.active = Some(ActiveLink {
            id: link_id,
            outbound: link.outbound,
            sender,
            stop,
            established_at: Instant::now(),
            closing: false,
        });
    }

    fn on_link_closed(&mut self, peer: NodeId, link_id: u64, end: LinkEnd) {
        let now = Instant::now();
        let limits = self.context.limits.clone();
        let slot = self.peers.get_mut(&peer).expect("only validators get links");
        let active = slot.active.take().expect("a reader ends only while its link is active");
        assert_eq!(active.id, link_id, "a peer's link is replaced only after it has closed");
        info!(%peer, ?end, "link down");
        if now.duration_since(active.established_at) >= limits.link_stable_after {
            slot.dial.backoff = Backoff::new(limits.backoff_initial);
        }
        if end == LinkEnd::QueueFull {
            lock(&self.context.counters).stats.links_dropped_queue_full += 1;
        }
        if let LinkEnd::Misbehaved { reason } = &end {
            self.score_down(peer, reason);
        } else {
            self.schedule_dial(peer, now);
        }
        let slot = self.peers.get_mut(&peer).expect("only validators get links");
        if let Some(waiting) = slot.waiting.take() {
            self.activate(peer, waiting);
        }
    }

    /// Sets a peer's next dial after the current backoff (and after any ban).
    fn schedule_dial(&mut self, peer: NodeId, now: Instant) {
        let limits = &self.context.limits;
        let local = self.context.local;
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        let mut wait = with_jitter(slot.dial.backoff.after_failure(limits.backoff_max), random_u64());
        if peer < local {
            wait += limits.dial_yield;
        }
        slot.dial.due_at = (now + wait).max(slot.dial.banned_until.unwrap_or(now));
    }

    /// A new address is known for `peer`: if nothing is up or coming, try it soon.
    fn dial_new_address_soon(&mut self, peer: NodeId, now: Instant) {
        let count = self.book.addresses_of(&peer).len();
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        if slot.is_idle() && count > 0 {
            // The newest address is the last one filed.
            slot.dial.attempts = count - 1;
            slot.dial.due_at = slot.dial.due_at.min(now);
        }
    }

    fn score_down(&mut self, peer: NodeId, reason: &str) {
        let now = Instant::now();
        let limits = &self.context.limits;
        let Some(slot) = self.peers.get_mut(&peer) else {
            debug!(%peer, "ignoring a disconnection of a node that is not a peer");
            return;
        };
        slot.dial.offences = slot.dial.offences.saturating_add(1);
        let ban = misbehavior_ban(slot.dial.offences, limits.misbehavior_ban_initial, limits.misbehavior_ban_max);
        slot.dial.banned_until = Some(now + ban);
        slot.dial.due_at = now + ban;
        slot.waiting = None;
        if let Some(active) = &mut slot.active {
            active.close();
        }
        lock(&self.context.counters).stats.peers_scored_down += 1;
        let ban_ms = u64::try_from(ban.as_millis()).unwrap_or(u64::MAX);
        warn!(%peer, reason, ban_ms, offences = slot.dial.offences, "scoring peer down");
    }

    fn on_dialed(&mut self, outcome: DialOutcome) {
        let now = Instant::now();
        let DialOutcome { expected, addr, probe, holds_dial, result } = outcome;
        if probe {
            if let Some(state) = self.probes.get_mut(&addr) {
                state.in_flight = false;
            }
        }
        if holds_dial {
            if let Some(slot) = self.peers.get_mut(&expected) {
                slot.dial.in_flight = false;
            }
        }
        match result {
            Ok(stream) => {
                if probe {
                    self.book.identify(&addr, Identified::Validator { id: expected, verified: true });
                    self.probes.remove(&addr);
                    info!(addr, validator = %expected, "identified a seed or manual address");
                } else {
                    self.book.mark_verified(expected, &addr);
                }
                // Saved before the link is announced, so a driver that sees the peer connect
                // can rely on the address being stored.
                self.save_peers();
                if let Some(stream) = stream {
                    self.on_authenticated(expected, true, stream);
                }
            }
            Err(SetupError::ReachedAnother { found }) => {
                if probe {
                    let identified = if found == self.context.local {
                        Identified::Ourselves
                    } else {
                        Identified::Validator { id: found, verified: false }
                    };
                    self.book.identify(&addr, identified);
                    self.probes.remove(&addr);
                    info!(addr, validator = %found, "identified a seed or manual address");
                } else {
                    debug!(%expected, addr, %found, "dial reached another validator");
                    self.book.reached_another(expected, &addr, found);
                    self.dial_failed(expected, now);
                }
                self.dial_new_address_soon(found, now);
            }
            Err(error) => {
                debug!(%expected, addr, probe, %error, "dial failed");
                if probe {
                    let backoff_max = self.context.limits.backoff_max;
                    if let Some(state) = self.probes.get_mut(&addr) {
                        state.due_at = now + with_jitter(state.backoff.after_failure(backoff_max), random_u64());
                    }
                } else {
                    self.dial_failed(expected, now);
                }
            }
        }
        self.save_peers();
    }

    fn dial_failed(&mut self, peer: NodeId, now: Instant) {
        if let Some(slot) = self.peers.get_mut(&peer) {
            slot.dial.attempts = slot.dial.attempts.wrapping_add(1);
        }
        self.schedule_dial(peer, now);
    }

    /// Starts every dial and identification that is due.
    fn start_due_dials(&mut self, now: Instant) {
        for (peer, slot) in &mut self.peers {
            if !slot.is_idle() || slot.dial.due_at > now || slot.dial.is_banned(now) {
                continue;
            }
            let Some(addr) = self.book.dial_address(peer, slot.dial.attempts) else {
                continue;
            };
            slot.dial.in_flight = true;
            let attempt = Attempt { expected: *peer, addr: addr.to_string(), probe: false, holds_dial: true };
            spawn_dial(&mut self.tasks, &mut self.owners, &self.context, attempt);
        }
        let due: Vec<String> = self
            .probes
            .iter()
            .filter(|(_, state)| !state.in_flight && state.due_at <= now)
            .map(|(addr, _)| addr.clone())
            .collect();
        for addr in due {
            // Expect a validator with nothing up or coming: if the address is that one's, the
            // identification becomes its link. Otherwise expect anyone and stop after TLS, which
            // is enough to learn who is there without making a second link.
            let idle = self.peers.iter().find(|(_, slot)| slot.is_idle() && !slot.dial.is_banned(now));
            let (expected, holds_dial) = match idle {
                Some((peer, _)) => (*peer, true),
                None => match self.peers.keys().next() {
                    Some(peer) => (*peer, false),
                    None => return,
                },
            };
            if holds_dial {
                self.peers.get_mut(&expected).expect("chosen among the peers").dial.in_flight = true;
            }
            self.probes.get_mut(&addr).expect("chosen among the probes").in_flight = true;
            let attempt = Attempt { expected, addr, probe: true, holds_dial };
            spawn_dial(&mut self.tasks, &mut self.owners, &self.context, attempt);
        }
    }

    /// When the next dial or identification is due, if any is waiting.
    fn next_dial_at(&self) -> Option<Instant> {
        let dials = self
            .peers
            .iter()
            .filter(|(peer, slot)| slot.is_idle() && self.book.dial_address(peer, 0).is_some())
            .map(|(_, slot)| slot.dial.due_at.max(slot.dial.banned_until.unwrap_or(slot.dial.due_at)));
        // With no other validator there is nobody to expect at an unidentified address.
        let probes =
            self.probes.values().filter(|state| !state.in_flight && !self.peers.is_empty()).map(|state| state.due_at);
        dials.chain(probes).min()
    }

    fn on_command(&mut self, command: NetCommand) {
        match command {
            NetCommand::SendTo { peer, message } => {
                if let Some(frame) = core_frame(message) {
                    self.enqueue(peer, frame);
                }
            }
            NetCommand::Broadcast { message, except } => {
                let Some(frame) = core_frame(message) else {
                    return;
                };
                let targets: Vec<NodeId> = self
                    .peers
                    .iter()
                    .filter(|(peer, slot)| Some(**peer) != except && slot.active.as_ref().is_some_and(|a| !a.closing))
                    .map(|(peer, _)| *peer)
                    .collect();
                for peer in targets {
                    self.enqueue(peer, Arc::clone(&frame));
                }
            }
            NetCommand::Disconnect { peer, reason } => self.score_down(peer, &reason),
            NetCommand::AddPeer { addr } => {
                if self.book.add_unidentified(&addr, AddressSource::Manual) {
                    info!(%addr, "added a peer address");
                    let state = ProbeState {
                        backoff: Backoff::new(self.context.limits.backoff_initial),
                        due_at: Instant::now(),
                        in_flight: false,
                    };
                    self.probes.insert(addr.to_string(), state);
                } else {
                    debug!(%addr, "peer address already known");
                }
            }
            NetCommand::RemovePeer { addr } => {
                if self.book.remove(addr.as_str()) {
                    info!(%addr, "removed a peer address");
                    self.probes.remove(addr.as_str());
                    self.save_peers();
                }
            }
            NetCommand::Shutdown => unreachable!("the run loop handles Shutdown"),
        }
    }

    /// Queues a frame on a peer's link; a full queue closes the link (see the module docs).
    fn enqueue(&mut self, peer: NodeId, frame: Frame) {
        let Some(active) = self.peers.get_mut(&peer).and_then(|slot| slot.active.as_mut()).filter(|a| !a.closing)
        else {
            debug!(%peer, "dropping a message: no link with the peer");
            return;
        };
        if active.sender.try_push(frame).is_err() {
            warn!(%peer, "closing link: its outbound queue is full");
            active.close();
            lock(&self.context.counters).stats.links_dropped_queue_full += 1;
        }
    }

    fn on_peer_list(&mut self, from: NodeId, peers: &[PeerAddress]) {
        let now = Instant::now();
        let before: BTreeMap<NodeId, usize> =
            self.book.validators().map(|id| (*id, self.book.addresses_of(id).len())).collect();
        let learned = self.book.learn(peers);
        if learned == 0 {
            return;
        }
        debug!(%from, learned, "learned validator addresses");
        let grown: Vec<NodeId> = before
            .into_iter()
            .filter(|(id, count)| self.book.addresses_of(id).len() > *count)
            .map(|(id, _)| id)
            .collect();
        for peer in grown {
            self.dial_new_address_soon(peer, now);
        }
    }

    /// Hands the peer store the persistent addresses, if they changed.
    fn save_peers(&mut self) {
        let persistent = self.book.persistent();
        if persistent != self.saved {
            (self.peer_store.save)(&persistent);
            self.saved = persistent;
        }
    }

    fn publish_stats(&self) {
        let links = self.peers.values().filter(|slot| slot.active.as_ref().is_some_and(|a| !a.closing)).count();
        let dials = self.owners.values().filter(|owner| matches!(owner, TaskOwner::Dial { .. })).count();
        let mut guard = lock(&self.context.counters);
        guard.stats.links = links;
        guard.stats.dials_in_flight = dials;
    }

    async fn shut_down(mut self) {
        info!("network shutting down");
        self.shutdown.send_replace(true);
        for slot in self.peers.values_mut() {
            slot.waiting = None;
            if let Some(active) = &mut slot.active {
                active.close();
            }
        }
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                joined = self.tasks.join_next() => if joined.is_none() { break },
                Some(_) = self.peer_lists.recv() => {}
                () = &mut grace => {
                    warn!(tasks = self.tasks.len(), "aborting network tasks that did not stop in time");
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        let mut guard = lock(&self.context.counters);
        guard.stats.links = 0;
        guard.stats.dials_in_flight = 0;
    }
}

/// A dial to start.
struct Attempt {
    expected: NodeId,
    addr: String,
    probe: bool,
    holds_dial: bool,
}

fn spawn_dial(
    tasks: &mut JoinSet<TaskExit>,
    owners: &mut HashMap<tokio::task::Id, TaskOwner>,
    context: &Arc<Context>,
    attempt: Attempt,
) {
    let Attempt { expected, addr, probe, holds_dial } = attempt;
    let owner = TaskOwner::Dial { holds: holds_dial.then_some(expected), probe: probe.then(|| addr.clone()) };
    let context = Arc::clone(context);
    let task = tasks.spawn(async move {
        // An identification that holds no dial stops after TLS (see `start_due_dials`).
        let result = under_deadline(&context, dial(&context, expected, &addr, holds_dial)).await;
        TaskExit::Dialed(DialOutcome { expected, addr, probe, holds_dial, result })
    });
    owners.insert(task.id(), owner);
}

/// A core message's frame, or `None` (logged) if it does not fit, which the core's limits rule
/// out: dropping it is safer than taking the transport down.
fn core_frame(message: Message) -> Option<Frame> {
    let kind = message.kind();
    match Wire::Core(message).to_frame() {
        Ok(frame) => Some(frame),
        Err(error) => {
            error!(kind, %error, "dropping a message that does not fit in a frame");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinychain_core::testkit::validator_key;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitter_adds_at_most_half() {
        let mut backoff = Backoff::new(Duration::from_millis(250));
        let waits: Vec<u64> =
            (0..10).map(|_| backoff.after_failure(Duration::from_secs(30)).as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
        let wait = Duration::from_millis(1000);
        assert_eq!(with_jitter(wait, 0), wait);
        for random in [1, 12345, u64::MAX, 500_000_000, 499_999_999] {
            let jittered = with_jitter(wait, random);
            assert!(jittered >= wait && jittered <= wait + wait / 2, "{jittered:?}");
        }
    }

    #[test]
    fn bans_double_per_offence_up_to_the_maximum() {
        let initial = Duration::from_secs(10);
        let max = Duration::from_secs(600);
        let bans: Vec<u64> = (1..=9).map(|offences| misbehavior_ban(offences, initial, max).as_secs()).collect();
        assert_eq!(bans, [10, 20, 40, 80, 160, 320, 600, 600, 600]);
        assert_eq!(misbehavior_ban(u32::MAX, initial, max), max);
    }

    #[test]
    fn both_ends_keep_the_same_link() {
        let low = validator_key(0).address().min(validator_key(1).address());
        let high = validator_key(0).address().max(validator_key(1).address());
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

    #[test]
    fn pending_slots_hold_both_caps_and_release_on_drop() {
        let limits = NetLimits { pending_handshakes_max: 3, pending_handshakes_per_ip_max: 2, ..NetLimits::default() };
        let counters = Arc::new(Mutex::new(Counters::default()));
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        let a = PendingSlot::acquire(&counters, one, &limits).unwrap();
        let b = PendingSlot::acquire(&counters, one, &limits).unwrap();
        assert!(PendingSlot::acquire(&counters, one, &limits).is_none(), "per-address cap");
        let c = PendingSlot::acquire(&counters, two, &limits).unwrap();
        assert!(PendingSlot::acquire(&counters, two, &limits).is_none(), "total cap");
        drop(a);
        let d = PendingSlot::acquire(&counters, one, &limits).unwrap();
        drop((b, c, d));
        let stats = lock(&counters).stats.clone();
        assert_eq!(stats.pending_handshakes, 0);
        assert_eq!(stats.pending_handshakes_peak, 3);
        assert_eq!(stats.pending_handshakes_per_ip_peak, 2);
        assert_eq!(stats.connections_refused_at_cap, 2);
        assert!(lock(&counters).pending_per_ip.is_empty());
    }

    #[test]
    fn limits_are_checked() {
        assert!(NetLimits::default().check().is_ok());
        let inverted = NetLimits { ping_interval: Duration::from_secs(30), ..NetLimits::default() };
        assert!(matches!(inverted.check(), Err(NetError::BadLimit { field: "ping_interval", .. })));
        let zero = NetLimits { pending_handshakes_per_ip_max: 0, ..NetLimits::default() };
        assert!(matches!(zero.check(), Err(NetError::BadLimit { field: "pending_handshakes_per_ip_max", .. })));
    }
}
