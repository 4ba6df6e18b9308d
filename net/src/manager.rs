//! The connection manager: the TLS transport between validators, as a tokio shell around the
//! sans-IO peer policy (`policy`). The shell owns the listener, the sockets, TLS, the handshake
//! deadline, the link tasks and the channels; it reports what happens on them to the
//! [`PeerPolicy`] and carries out what the policy orders (dial, admit or refuse, start or close a
//! link, send our peer list, save the peer list). Every decision about peers (dialing, backoff,
//! admission caps, one link per pair, bans, peer exchange) is the policy's, and its rules are
//! written there. It decides nothing about what to send: the core does.
//!
//! # The driver contract
//!
//! [`start`] returns a [`NetHandle`], the bounded receiver of [`NetEvent`]s and a [`NetTask`].
//! - **Order.** Each link has one reader task that delivers `PeerConnected(p)`, then `p`'s
//!   messages in the order they arrived, then `PeerDisconnected(p)`. A new link with `p` starts
//!   delivering only after the previous link's `PeerDisconnected(p)` was delivered (the policy
//!   starts a link only once the one it replaces has closed, and a link counts as closed when its
//!   reader has returned), so for each peer the driver sees connected / messages / disconnected,
//!   in that order, every time.
//! - **Back-pressure.** The events channel is bounded (`NetLimits::events_capacity`). When it is
//!   full, readers wait: they stop reading their sockets and TCP pushes back on the peers. The
//!   manager itself never waits on the driver, so `NetHandle` commands are always drained and a
//!   driver blocked on a command cannot deadlock against a full events channel.
//! - **Full queues.** Each link has a bounded outbound queue (`link_queue_frames_max` frames and
//!   `link_queue_bytes_max` bytes). A command that finds a peer's queue full closes that peer's
//!   link instead of growing memory: the peer is slow or stuck, the link is redialed with backoff,
//!   and the core's sync fills whatever was lost. Sending is best effort in general: a message
//!   for a peer without a link is dropped.
//! - **Gossip gives way.** Transfer gossip (`Message::Transfers`) is queued on a link only while
//!   its queue is less than half full; past that it is left out (`NetStats::transfer_batches_shed`)
//!   and the peer gets those transfers in the block, or by mempool sync. Under overload a peer
//!   that is busy rather than stuck thus keeps its link (blocks, reports and evidence have the
//!   other half of the queue); before, a flood of gossip filled the queue, closed the link and
//!   split the network into branches that later had to be reorganised.
//! - **Shutdown.** `NetCommand::Shutdown` (or dropping every `NetHandle`) closes every link, stops
//!   listening and ends every task; no event is delivered after it, and the events channel closes
//!   when the last task has ended. [`NetTask::join`] waits for that.
//! - **Traffic.** [`NetTask::traffic`] shares each peer's byte counters and last-seen time
//!   (`link::PeerTraffic`), which its link tasks update, for the node's `/metrics`.
//!
//! # The shell
//!
//! One manager task runs one loop: it takes the next command, peer list, accepted connection,
//! ended task or timer, turns it into a [`PolicyInput`] with the time since the transport started,
//! and carries out every [`PolicyOutput`] in order before the next; then it sleeps until the
//! policy's `next_timeout`. The policy's jitter is seeded once from the OS.
//!
//! A dial or an accepted connection runs the whole handshake (DNS and TCP for a dial, then TLS
//! 1.3, then the Hello/Proof challenge-response of `handshake`) under one deadline
//! (`handshake_deadline`). Any failure closes the connection without a word to the peer and is
//! logged at debug. An authenticated connection is held here until the policy starts or closes
//! it. Each started link has a reader and a writer task (`link`), which also keep it alive with
//! pings and end it after `idle_timeout` without traffic.

use crate::discovery::{genesis_validators, PeerAddr, PeerStore};
use crate::frame::{read_frame, write_frame, FrameError};
use crate::handle::{NetCommand, NetError, NetEvent, NetHandle};
use crate::handshake::{
    decode_hello, decode_proof, encode_hello, encode_proof, exporter_context, finish, random_nonce, respond,
    start as start_handshake, HandshakeError, Local, Role, EXPORTER_KEY_BYTES, EXPORTER_LABEL,
    HANDSHAKE_MESSAGE_BYTES_MAX,
};
use crate::link::{
    link_queue, link_stop, run_reader, run_writer, stopped, Frame, LinkSender, LinkStop, ReaderContext, TrafficTable,
    WriterContext,
};
pub use crate::policy::NetStats;
use crate::policy::{
    ConnectionId, DialOutcome, LinkEnd, PeerPolicy, PolicyConfig, PolicyInput, PolicyLimits, PolicyOutput,
};
use crate::tls::{
    client_config, exporter_key, node_certificate, peer_node_id, peer_server_name, server_config, NodeCertificate,
    TlsError,
};
use crate::wire::{PeerAddress, Wire};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
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
    /// Extra wait before dialing a peer whose node id is lower than ours (see `policy`).
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
    /// The limits the peer policy applies, in milliseconds (rounded up, so no limit above zero
    /// becomes zero).
    pub fn policy_limits(&self) -> PolicyLimits {
        let millis = |duration: Duration| u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
        PolicyLimits {
            pending_handshakes_max: self.pending_handshakes_max,
            pending_handshakes_per_ip_max: self.pending_handshakes_per_ip_max,
            backoff_initial_ms: millis(self.backoff_initial),
            backoff_max_ms: millis(self.backoff_max),
            dial_yield_ms: millis(self.dial_yield),
            link_stable_after_ms: millis(self.link_stable_after),
            misbehavior_ban_initial_ms: millis(self.misbehavior_ban_initial),
            misbehavior_ban_max_ms: millis(self.misbehavior_ban_max),
            unidentified_addresses_max: self.unidentified_addresses_max,
        }
    }

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

/// The running transport: its listening address, its counters, and its end.
#[derive(Debug)]
pub struct NetTask {
    join: tokio::task::JoinHandle<()>,
    counters: Arc<Mutex<NetStats>>,
    traffic: TrafficTable,
    local_addr: SocketAddr,
}

impl NetTask {
    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> NetStats {
        lock(&self.counters).clone()
    }

    /// Each peer's bytes in and out and when it last sent anything (shared: the figures keep
    /// changing after this returns).
    pub fn traffic(&self) -> TrafficTable {
        self.traffic.clone()
    }

    /// Waits until the transport has stopped (after `Shutdown`, or once every handle is gone).
    pub async fn join(self) -> Result<(), NetError> {
        self.join.await.map_err(|error| NetError::TaskFailed { reason: error.to_string() })
    }
}

/// The counters are plain numbers: a panic elsewhere cannot leave them inconsistent in a way
/// that matters, so a poisoned lock is used as is.
fn lock(counters: &Mutex<NetStats>) -> MutexGuard<'_, NetStats> {
    counters.lock().unwrap_or_else(PoisonError::into_inner)
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
    chain_id: String,
    exporter_context: Vec<u8>,
    validators: Arc<BTreeSet<NodeId>>,
    certificate: NodeCertificate,
    acceptor: TlsAcceptor,
    limits: NetLimits,
    events: mpsc::Sender<NetEvent>,
    peer_lists: mpsc::Sender<(NodeId, Vec<PeerAddress>)>,
    shutdown: watch::Receiver<bool>,
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

/// An admitted connection's handshake.
async fn inbound(context: Arc<Context>, connection: ConnectionId, tcp: TcpStream, remote: SocketAddr) -> TaskExit {
    let result = under_deadline(&context, accept_inbound(&context, tcp)).await;
    let result = match result {
        Ok(authenticated) => Some(authenticated),
        Err(error) => {
            debug!(%remote, %connection, %error, "refusing inbound connection");
            None
        }
    };
    TaskExit::Inbound { connection, result }
}

/// What a task of the transport returns to the manager.
enum TaskExit {
    Inbound { connection: ConnectionId, result: Option<(NodeId, TlsStream<TcpStream>)> },
    Dialed { connection: ConnectionId, result: Result<Option<TlsStream<TcpStream>>, SetupError> },
    Reader { connection: ConnectionId, end: LinkEnd },
    Writer,
}

/// Whose connection a task serves, so the policy hears of its end even if the task panics.
#[derive(Clone, Copy, Debug)]
enum TaskOwner {
    Inbound { connection: ConnectionId },
    Dial { connection: ConnectionId },
    Reader { connection: ConnectionId, peer: NodeId },
}

/// A started link's handles: its outbound queue and its stop signal.
struct LinkIo {
    sender: LinkSender,
    stop: LinkStop,
}

struct Manager {
    context: Arc<Context>,
    policy: PeerPolicy,
    /// Time zero of the policy's clock.
    epoch: Instant,
    peer_store: PeerStore,
    /// The connection that just arrived, while the policy decides on it.
    arrived: Option<(TcpStream, SocketAddr)>,
    /// Authenticated connections the policy has neither started nor closed yet.
    held: BTreeMap<ConnectionId, TlsStream<TcpStream>>,
    links: BTreeMap<ConnectionId, LinkIo>,
    tasks: JoinSet<TaskExit>,
    owners: HashMap<tokio::task::Id, TaskOwner>,
    counters: Arc<Mutex<NetStats>>,
    /// `NetStats::transfer_batches_shed`: counted here, where the queues are.
    transfer_batches_shed: u64,
    traffic: TrafficTable,
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
    let counters = Arc::new(Mutex::new(NetStats::default()));
    let traffic = TrafficTable::default();

    // Jitter only spreads retries out; without OS randomness the retries merely line up.
    let policy_config = PolicyConfig { local, limits: limits.policy_limits(), rng_seed: getrandom::u64().unwrap_or(0) };
    let policy = PeerPolicy::new(policy_config, &genesis, &peer_store.saved, &seeds, 0);
    let context = Arc::new(Context {
        key,
        exporter_context: exporter_context(&genesis.chain_id, &genesis_hash),
        chain_id: genesis.chain_id,
        validators,
        certificate,
        acceptor,
        limits,
        events: events_sender,
        peer_lists: peer_lists_sender,
        shutdown: shutdown_receiver,
    });
    let manager = Manager {
        context,
        policy,
        epoch: Instant::now(),
        peer_store,
        arrived: None,
        held: BTreeMap::new(),
        links: BTreeMap::new(),
        tasks: JoinSet::new(),
        owners: HashMap::new(),
        counters: Arc::clone(&counters),
        transfer_batches_shed: 0,
        traffic: traffic.clone(),
        commands,
        peer_lists,
        shutdown,
    };
    info!(%local, %local_addr, "network listening");
    let join = tokio::spawn(manager.run(listener));
    Ok((NetHandle::new(command_sender), events, NetTask { join, counters, traffic, local_addr }))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Manager {
    async fn run(mut self, listener: TcpListener) {
        self.step(PolicyInput::TimerFired);
        loop {
            self.publish_stats();
            let wake_at = self.policy.next_timeout().map(|at_ms| self.epoch + Duration::from_millis(at_ms));
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(NetCommand::Shutdown) => break,
                    Some(command) => self.on_command(command),
                },
                Some((from, peers)) = self.peer_lists.recv() => self.step(PolicyInput::PeerListReceived { from, peers }),
                accepted = listener.accept() => match accepted {
                    Ok((tcp, remote)) => self.on_accept(tcp, remote),
                    Err(error) => {
                        warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
                Some(joined) = self.tasks.join_next_with_id() => self.on_task_exit(joined),
                () = sleep_until(wake_at) => self.step(PolicyInput::TimerFired),
            }
        }
        drop(listener);
        self.shut_down().await;
    }

    /// Milliseconds since the transport started: the policy's clock.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Hands one fact to the policy and carries out its orders, in order.
    fn step(&mut self, input: PolicyInput) {
        let outputs = self.policy.handle(self.now_ms(), input);
        for output in outputs {
            self.carry_out(output);
        }
    }

    fn carry_out(&mut self, output: PolicyOutput) {
        match output {
            PolicyOutput::Dial { connection, peer, addr, purpose } => {
                let context = Arc::clone(&self.context);
                let complete = purpose.authenticates();
                let task = self.tasks.spawn(async move {
                    // An identification that does not authenticate stops after TLS.
                    let result = under_deadline(&context, dial(&context, peer, &addr, complete)).await;
                    TaskExit::Dialed { connection, result }
                });
                self.owners.insert(task.id(), TaskOwner::Dial { connection });
            }
            PolicyOutput::Admit { connection, .. } => {
                let (tcp, remote) = self.arrived.take().expect("the policy admits the connection that just arrived");
                // Frames are small and latency matters more than packet count.
                let _ = tcp.set_nodelay(true);
                let context = Arc::clone(&self.context);
                let task = self.tasks.spawn(inbound(context, connection, tcp, remote));
                self.owners.insert(task.id(), TaskOwner::Inbound { connection });
            }
            PolicyOutput::Refuse { .. } => {
                let refused = self.arrived.take();
                assert!(refused.is_some(), "the policy refuses the connection that just arrived");
            }
            PolicyOutput::StartLink { connection, peer, outbound } => {
                let stream = self.held.remove(&connection).expect("the policy starts a held connection");
                self.start_link(connection, peer, outbound, stream);
            }
            PolicyOutput::SendPeerList { connection, peers } => {
                let link = self.links.get(&connection).expect("the policy sends peer lists on started links");
                match Wire::Peers(peers).to_frame() {
                    Ok(frame) => {
                        // A new link's queue is empty: this cannot fail, and if it did the peer
                        // would only miss our addresses.
                        let _ = link.sender.try_push(frame);
                    }
                    Err(error) => error!(%error, "our own peer list does not fit in a frame"),
                }
            }
            PolicyOutput::Close { connection, .. } => {
                if self.held.remove(&connection).is_some() {
                    return;
                }
                let link = self.links.get(&connection).expect("the policy closes held connections and started links");
                link.stop.send_replace(true);
            }
            PolicyOutput::SavePeers { peers } => (self.peer_store.save)(&peers),
        }
    }

    fn on_accept(&mut self, tcp: TcpStream, remote: SocketAddr) {
        self.arrived = Some((tcp, remote));
        self.step(PolicyInput::InboundArrived { ip: remote.ip() });
        assert!(self.arrived.is_none(), "the policy admits or refuses every connection that arrives");
    }

    fn on_task_exit(&mut self, joined: Result<(tokio::task::Id, TaskExit), tokio::task::JoinError>) {
        let (id, exit) = match joined {
            Ok(joined) => joined,
            Err(join_error) => {
                error!(error = %join_error, "a network task failed");
                if let Some(owner) = self.owners.remove(&join_error.id()) {
                    self.on_task_failed(owner);
                }
                return;
            }
        };
        self.owners.remove(&id);
        match exit {
            TaskExit::Inbound { connection, result } => {
                let peer = result.map(|(peer, stream)| {
                    self.held.insert(connection, stream);
                    peer
                });
                self.step(PolicyInput::InboundHandshakeFinished { connection, peer });
            }
            TaskExit::Dialed { connection, result } => {
                let outcome = match result {
                    Ok(Some(stream)) => {
                        self.held.insert(connection, stream);
                        DialOutcome::Authenticated
                    }
                    Ok(None) => DialOutcome::Identified,
                    Err(SetupError::ReachedAnother { found }) => DialOutcome::ReachedAnother { found },
                    Err(error) => DialOutcome::Failed { reason: error.to_string() },
                };
                self.step(PolicyInput::DialFinished { connection, outcome });
            }
            TaskExit::Reader { connection, end } => {
                self.links.remove(&connection);
                self.step(PolicyInput::LinkClosed { connection, end });
            }
            TaskExit::Writer => {}
        }
    }

    /// A task panicked: its connection ended, and the policy is told so as for a failure.
    fn on_task_failed(&mut self, owner: TaskOwner) {
        let input = match owner {
            TaskOwner::Inbound { connection } => PolicyInput::InboundHandshakeFinished { connection, peer: None },
            TaskOwner::Dial { connection } => {
                let outcome = DialOutcome::Failed { reason: "the dial task failed".into() };
                PolicyInput::DialFinished { connection, outcome }
            }
            TaskOwner::Reader { connection, peer } => {
                // The reader could not take its announcement back itself.
                let _ = self.context.events.try_send(NetEvent::PeerDisconnected(peer));
                if let Some(link) = self.links.remove(&connection) {
                    link.stop.send_replace(true);
                }
                let end = LinkEnd::Failed { reason: "the reader task failed".into() };
                PolicyInput::LinkClosed { connection, end }
            }
        };
        self.step(input);
    }

    /// Starts a link's reader and writer.
    fn start_link(&mut self, connection: ConnectionId, peer: NodeId, outbound: bool, stream: TlsStream<TcpStream>) {
        let limits = &self.context.limits;
        let (sender, queue) = link_queue(limits.link_queue_frames_max, limits.link_queue_bytes_max);
        let stop = link_stop();
        let traffic = self.traffic.peer(peer);
        let (reader, writer) = tokio::io::split(stream);
        let reader_context = ReaderContext {
            peer,
            events: self.context.events.clone(),
            peer_lists: self.context.peer_lists.clone(),
            sender: sender.clone(),
            stop: Arc::clone(&stop),
            shutdown: self.context.shutdown.clone(),
            idle_timeout: limits.idle_timeout,
            traffic: Arc::clone(&traffic),
        };
        let writer_context = WriterContext {
            peer,
            queue,
            stop: Arc::clone(&stop),
            shutdown: self.context.shutdown.clone(),
            ping_interval: limits.ping_interval,
            idle_timeout: limits.idle_timeout,
            traffic,
        };
        let reader_task = self.tasks.spawn(async move {
            let end = run_reader(reader_context, reader).await;
            TaskExit::Reader { connection, end }
        });
        self.owners.insert(reader_task.id(), TaskOwner::Reader { connection, peer });
        self.tasks.spawn(async move {
            run_writer(writer_context, writer).await;
            TaskExit::Writer
        });
        debug!(%peer, %connection, outbound, "link tasks started");
        self.links.insert(connection, LinkIo { sender, stop });
    }

    fn on_command(&mut self, command: NetCommand) {
        match command {
            NetCommand::SendTo { peer, message } => {
                let sheddable = is_sheddable(&message);
                if let Some(frame) = core_frame(message) {
                    self.enqueue(peer, frame, sheddable);
                }
            }
            NetCommand::Broadcast { message, except } => {
                let sheddable = is_sheddable(&message);
                let Some(frame) = core_frame(message) else {
                    return;
                };
                let targets: Vec<NodeId> =
                    self.policy.links_up().map(|(peer, _)| peer).filter(|peer| Some(*peer) != except).collect();
                for peer in targets {
                    self.enqueue(peer, Arc::clone(&frame), sheddable);
                }
            }
            NetCommand::Disconnect { peer, reason } => self.step(PolicyInput::DisconnectRequested { peer, reason }),
            NetCommand::AddPeer { addr } => self.step(PolicyInput::PeerAddressAdded { addr }),
            NetCommand::RemovePeer { addr } => self.step(PolicyInput::PeerAddressRemoved { addr }),
            NetCommand::Shutdown => unreachable!("the run loop handles Shutdown"),
        }
    }

    /// Queues a frame on a peer's link; a full queue closes the link, and a sheddable frame
    /// finding the queue half full is left out instead (see the module docs).
    fn enqueue(&mut self, peer: NodeId, frame: Frame, sheddable: bool) {
        let Some(connection) = self.policy.link_of(&peer) else {
            debug!(%peer, "dropping a message: no link with the peer");
            return;
        };
        let link = self.links.get(&connection).expect("the policy's links are started");
        if sheddable {
            if link.sender.try_push_sheddable(frame).is_err() {
                self.transfer_batches_shed += 1;
                debug!(%peer, "shedding a transfer batch: the link's queue is half full");
            }
            return;
        }
        if link.sender.try_push(frame).is_err() {
            self.step(PolicyInput::LinkQueueFilled { connection });
        }
    }

    fn publish_stats(&self) {
        *lock(&self.counters) = NetStats { transfer_batches_shed: self.transfer_batches_shed, ..self.policy.stats() };
    }

    async fn shut_down(mut self) {
        info!("network shutting down");
        self.shutdown.send_replace(true);
        self.held.clear();
        for link in self.links.values() {
            link.stop.send_replace(true);
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
        let mut stats = lock(&self.counters);
        stats.links = 0;
        stats.dials_in_flight = 0;
        stats.pending_handshakes = 0;
    }
}

/// Whether a message may be left out when the peer's queue is half full: transfer gossip only.
fn is_sheddable(message: &Message) -> bool {
    matches!(message, Message::Transfers(_))
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

    #[test]
    fn limits_are_checked() {
        assert!(NetLimits::default().check().is_ok());
        let inverted = NetLimits { ping_interval: Duration::from_secs(30), ..NetLimits::default() };
        assert!(matches!(inverted.check(), Err(NetError::BadLimit { field: "ping_interval", .. })));
        let zero = NetLimits { pending_handshakes_per_ip_max: 0, ..NetLimits::default() };
        assert!(matches!(zero.check(), Err(NetError::BadLimit { field: "pending_handshakes_per_ip_max", .. })));
    }

    #[test]
    fn the_policy_gets_the_same_defaults_in_milliseconds() {
        assert_eq!(NetLimits::default().policy_limits(), PolicyLimits::default());
        let tiny = NetLimits {
            backoff_initial: Duration::from_micros(10),
            dial_yield: Duration::ZERO,
            ..NetLimits::default()
        };
        let limits = tiny.policy_limits();
        assert_eq!(limits.backoff_initial_ms, 1, "a limit above zero stays above zero");
        assert_eq!(limits.dial_yield_ms, 0);
    }
}
