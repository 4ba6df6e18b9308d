//! The peer policy: every decision the connection manager makes about peers, as a sans-IO state
//! machine in the manner of quinn-proto's `Endpoint` and str0m's `Rtc`. It owns the address book
//! (`discovery`), dialing and its backoff with jitter, the admission of inbound connections under
//! the handshake caps, the one-link-per-pair rule, bans for misbehaviour, peer exchange and what
//! the peer store is asked to save. It owns no socket, no task, no clock and no OS randomness, so
//! tests run it on virtual time and the simulator can run it as the server does.
//!
//! # The driver contract
//!
//! - **Time comes in.** Every call takes `now_ms`: milliseconds on one monotonic clock of the
//!   caller's choosing (the TLS shell counts from its start; a simulator uses virtual time). A
//!   `now_ms` below one already seen is taken as the one already seen.
//! - **Facts in, orders out.** The caller reports what happened as a [`PolicyInput`] (in the past
//!   tense) to [`PeerPolicy::handle`], and carries out the [`PolicyOutput`]s it returns, in
//!   order, before the next input. Every call also starts whatever dial became due.
//! - **Timer.** [`PeerPolicy::next_timeout`] is when the next dial or identification is due (a
//!   ban's end included); once `now_ms` reaches it, the caller hands in
//!   [`PolicyInput::TimerFired`]. It changes with every input, so ask again after each.
//! - **Connections.** The policy names every connection it dials or admits ([`ConnectionId`]) and
//!   the caller reports the end of each exactly once: a `Dial` with `DialFinished`, an `Admit`
//!   with `InboundHandshakeFinished`, a `StartLink` with `LinkClosed`. A connection that
//!   authenticated is held by the caller until the policy starts it (`StartLink`) or closes it
//!   (`Close`); closing one never started needs no report.
//! - **Randomness.** Jitter comes from a ChaCha8 stream the policy owns, seeded by the caller
//!   ([`PolicyConfig::rng_seed`]: the shell draws it from the OS once, a simulator from its run
//!   seed). The same seed and the same inputs give the same outputs, byte for byte.
//! - **Queries.** [`PeerPolicy::link_of`] and [`PeerPolicy::links_up`] say which link carries a
//!   peer's messages; [`PeerPolicy::stats`] gives the counters.
//!
//! # Rules
//!
//! **Dialing.** Every genesis validator but ourselves is dialed, at each address the address book
//! holds for it in turn (genesis, saved, learned by peer exchange or identified from a seed or an
//! added address), while there is no link with it and none coming. Failures back off
//! exponentially (`backoff_initial_ms` doubling to `backoff_max_ms`) plus up to half again of
//! random jitter; a link that stayed up for `link_stable_after_ms` resets the backoff. A new
//! address for a validator with nothing up or coming is dialed at once.
//!
//! **Identification.** A seed or added address (`host:port`, DNS names allowed) is dialed to
//! learn whose it is, expecting a validator with nothing up or coming: if the address is that
//! one's, the identification becomes its link; otherwise it stops after TLS, which is enough to
//! learn who is there without making a second link. The address is then filed under the validator
//! found (verified if the handshake proved it), or forgotten if it is ours. A failed
//! identification backs off like a dial.
//!
//! **Admission.** Inbound connections still in the handshake are capped in total
//! (`pending_handshakes_max`) and per source IP (`pending_handshakes_per_ip_max`); refused ones
//! are closed at once. Authenticated links do not count against either cap, and dials we make do
//! not either: on one machine every peer comes from 127.0.0.1, and a flood from one address can
//! delay an honest validator's dial to us but not ours to it.
//!
//! **One link per pair.** When two authenticated links with one peer exist (both dialed at once),
//! both ends keep the link whose dialer has the lower node id; if one node dialed both, the newer
//! link is kept (that node dials only when it has no link, so it considers the older one gone).
//! Both ends apply the same rule to the same facts, so they keep the same link. A winner waits
//! for the link it replaces to close before it starts, so the driver sees each peer's links one
//! after the other. To make the race rare, a node waits `dial_yield_ms` longer before dialing a
//! peer with a lower id than its own (whose dial would win anyway).
//!
//! **Scoring down.** A peer whose link ends in misbehaviour (an oversized or empty frame, an
//! undecodable payload) or that the driver disconnects (the core does so only for a forgery) is
//! banned for `misbehavior_ban_initial_ms`, doubling with each offence up to
//! `misbehavior_ban_max_ms`: it is not dialed and its links are closed right after
//! authentication until the ban ends. Everything else (a clean close, a failed socket, an idle
//! link, a full outbound queue) only costs the usual backoff.
//!
//! **Peer exchange and saving.** Each new link is first sent our shareable addresses (genesis and
//! verified ones); lists received go into the address book. Whenever the verified, non-genesis
//! addresses change, the peer store is asked to save them, before any link the change came with
//! is started (so a driver that sees the peer connect can rely on the address being stored).

use crate::discovery::{AddressBook, AddressSource, Identified, PeerAddr, PeerAddress};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::IpAddr;
use tinychain_core::genesis::Genesis;
use tinychain_core::types::NodeId;
use tracing::{debug, info, warn};

/// A connection the policy dialed or admitted, named by the policy and never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

impl std::fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// The policy's limits, in milliseconds (the TLS shell converts its `NetLimits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Inbound connections still in the handshake, in total.
    pub pending_handshakes_max: usize,
    /// Inbound connections still in the handshake, per source IP address.
    pub pending_handshakes_per_ip_max: usize,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Extra wait before dialing a peer whose node id is lower than ours.
    pub dial_yield_ms: u64,
    /// A link up this long resets its peer's backoff when it closes.
    pub link_stable_after_ms: u64,
    pub misbehavior_ban_initial_ms: u64,
    pub misbehavior_ban_max_ms: u64,
    /// Seed and added addresses waiting to be identified.
    pub unidentified_addresses_max: usize,
}

impl Default for PolicyLimits {
    /// The defaults DESIGN.md sets (the same as `NetLimits::default()`, which a test checks).
    fn default() -> PolicyLimits {
        PolicyLimits {
            pending_handshakes_max: 64,
            pending_handshakes_per_ip_max: 8,
            backoff_initial_ms: 250,
            backoff_max_ms: 30_000,
            dial_yield_ms: 500,
            link_stable_after_ms: 10_000,
            misbehavior_ban_initial_ms: 10_000,
            misbehavior_ban_max_ms: 600_000,
            unidentified_addresses_max: 64,
        }
    }
}

/// The timings the TLS shell enforces on every connection, in milliseconds. The policy does not
/// apply them (the shell's tasks do: `manager` for the handshake deadline, `link` for pings and
/// the idle timeout); they are here, built without the transport, so that a model of the shell
/// (the simulator's connection model) uses the server's very numbers. The defaults are
/// `NetLimits::default()`'s, which a test checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkTimings {
    /// A dial or an accepted connection must authenticate within this (DNS, TCP, TLS,
    /// Hello/Proof); a dial to an address that does not answer fails when it runs out.
    pub handshake_deadline_ms: u64,
    /// Each end of a started link sends a ping this often.
    pub ping_interval_ms: u64,
    /// A started link on which nothing arrives for this long is closed (`LinkEnd::Idle`).
    pub idle_timeout_ms: u64,
}

impl Default for LinkTimings {
    fn default() -> LinkTimings {
        LinkTimings { handshake_deadline_ms: 5_000, ping_interval_ms: 10_000, idle_timeout_ms: 30_000 }
    }
}

/// What the policy is started with besides the genesis and the stored addresses.
#[derive(Clone, Debug)]
pub struct PolicyConfig {
    /// Our node id.
    pub local: NodeId,
    pub limits: PolicyLimits,
    /// Seeds the jitter's random stream.
    pub rng_seed: u64,
}

/// What happened, as the caller saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyInput {
    /// `next_timeout` was reached (every input runs what is due; this one does nothing else).
    TimerFired,
    /// A connection from `ip` arrived at the listener; the policy admits or refuses it.
    InboundArrived { ip: IpAddr },
    /// An admitted connection's handshake ended: authenticated as `peer`, or failed (`None`: TLS,
    /// the challenge-response or the deadline).
    InboundHandshakeFinished { connection: ConnectionId, peer: Option<NodeId> },
    /// A dial ended.
    DialFinished { connection: ConnectionId, outcome: DialOutcome },
    /// A started link ended (its reader returned), and how.
    LinkClosed { connection: ConnectionId, end: LinkEnd },
    /// A started link's outbound queue had no room for a message.
    LinkQueueFilled { connection: ConnectionId },
    /// The driver asked to disconnect a peer that broke the protocol.
    DisconnectRequested { peer: NodeId, reason: String },
    /// An operator added an address (`add_peer`).
    PeerAddressAdded { addr: PeerAddr },
    /// An operator removed an address (`remove_peer`).
    PeerAddressRemoved { addr: PeerAddr },
    /// An authenticated peer sent its address list (peer exchange).
    PeerListReceived { from: NodeId, peers: Vec<PeerAddress> },
}

/// Why a started link ended (the TLS shell's reader returns it; a simulator models it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEnd {
    /// The peer closed the connection.
    Closed,
    /// The socket failed.
    Failed { reason: String },
    /// Nothing arrived for the idle timeout (an honest peer pings more often than that).
    Idle,
    /// The manager or the writer stopped the link (the reason was logged where it happened).
    Stopped,
    /// The link's outbound queue was full when the reader had a pong to send.
    QueueFull,
    /// The peer broke the protocol: an oversized or empty frame, or an undecodable payload.
    Misbehaved { reason: String },
    /// The driver dropped its events receiver, or the transport is shutting down.
    Abandoned,
}

/// How a dial ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DialOutcome {
    /// The whole handshake authenticated the validator expected: the connection is an outbound
    /// link, held by the caller for the policy to start or close.
    Authenticated,
    /// TLS proved the validator expected is there, and the dial stopped there as asked
    /// (`DialPurpose::Identify { authenticate: false }`).
    Identified,
    /// The certificate named another validator (or us): its claim, not proven.
    ReachedAnother { found: NodeId },
    /// Anything else: DNS, TCP, TLS, the challenge-response or the deadline.
    Failed { reason: String },
}

/// Why a dial is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialPurpose {
    /// A link with the peer, at its address number `attempt` (each known address in turn).
    Connect { attempt: usize },
    /// Whose is this seed or added address? With `authenticate`, run the whole handshake (the
    /// peer expected has nothing up or coming, so if it is there this becomes its link);
    /// without, stop after TLS.
    Identify { authenticate: bool },
}

impl DialPurpose {
    /// Does the dial run the whole handshake (rather than stop after TLS)?
    pub fn authenticates(self) -> bool {
        match self {
            DialPurpose::Connect { .. } => true,
            DialPurpose::Identify { authenticate } => authenticate,
        }
    }
}

/// Why the policy closes a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// It authenticated a peer that is banned.
    Banned,
    /// The one-link rule keeps the link the peer already has.
    Duplicate,
    /// The one-link rule keeps a newer link instead.
    Replaced,
    /// The peer misbehaved or the driver disconnected it: it is banned.
    ScoredDown,
    /// Its outbound queue was full: the peer is slow or stuck.
    QueueFull,
}

/// What the caller must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyOutput {
    /// Dial `addr` expecting `peer`; report `DialFinished` for `connection`.
    Dial { connection: ConnectionId, peer: NodeId, addr: String, purpose: DialPurpose },
    /// Run the handshake on the connection that just arrived (`InboundArrived`); report
    /// `InboundHandshakeFinished` for `connection`.
    Admit { connection: ConnectionId, ip: IpAddr },
    /// Close the connection that just arrived, at once: a handshake cap is reached.
    Refuse { ip: IpAddr },
    /// Start the held, authenticated `connection` as the link with `peer`: announce it to the
    /// driver and carry messages; report `LinkClosed` when it ends.
    StartLink { connection: ConnectionId, peer: NodeId, outbound: bool },
    /// Send these addresses on the link (peer exchange).
    SendPeerList { connection: ConnectionId, peers: Vec<PeerAddress> },
    /// Close the connection: a started link is stopped (its `LinkClosed` follows), a held one is
    /// dropped.
    Close { connection: ConnectionId, peer: NodeId, reason: CloseReason },
    /// Replace what the peer store holds with this list.
    SavePeers { peers: Vec<PeerAddress> },
}

/// Counters for live metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Authenticated links that carry messages (started, or about to be); a link being closed
    /// or replaced is not counted.
    pub links: usize,
    /// Dials (and identifications of seed or added addresses) in progress.
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
    /// Transfer gossip messages left out because the link's queue was half full (counted by the
    /// shell, which holds the queues; the policy leaves it 0).
    pub transfer_batches_shed: u64,
}

/// Exponential backoff: each failure returns the current wait and doubles the next, up to a cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Backoff {
    next_ms: u64,
}

impl Backoff {
    fn new(initial_ms: u64) -> Backoff {
        Backoff { next_ms: initial_ms }
    }

    fn after_failure(&mut self, max_ms: u64) -> u64 {
        let wait_ms = self.next_ms;
        self.next_ms = self.next_ms.saturating_mul(2).min(max_ms);
        wait_ms
    }
}

/// Adds up to half of `wait_ms` again, from `random`, so nodes that failed together do not all
/// retry together.
fn with_jitter(wait_ms: u64, random: u64) -> u64 {
    let spread_ms = wait_ms / 2;
    wait_ms.saturating_add(random % spread_ms.saturating_add(1))
}

/// The ban after the `offences`-th offence: the initial ban, doubling, up to the maximum.
fn misbehavior_ban_ms(offences: u32, initial_ms: u64, max_ms: u64) -> u64 {
    let doublings = offences.saturating_sub(1).min(20);
    initial_ms.saturating_mul(1u64 << doublings).min(max_ms)
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

#[derive(Clone, Debug)]
struct DialState {
    backoff: Backoff,
    due_at_ms: u64,
    in_flight: bool,
    /// Dials made so far: picks the next address in turn.
    attempts: usize,
    offences: u32,
    banned_until_ms: Option<u64>,
}

impl DialState {
    fn is_banned(&self, now_ms: u64) -> bool {
        self.banned_until_ms.is_some_and(|until_ms| until_ms > now_ms)
    }
}

#[derive(Clone, Debug)]
struct ActiveLink {
    connection: ConnectionId,
    outbound: bool,
    established_at_ms: u64,
    /// Close was ordered; `LinkClosed` has not come yet.
    closing: bool,
}

/// An authenticated link that won the one-link rule, waiting for the link it replaces to close.
#[derive(Clone, Debug)]
struct WaitingLink {
    connection: ConnectionId,
    outbound: bool,
}

#[derive(Clone, Debug)]
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

#[derive(Clone, Debug)]
struct ProbeState {
    backoff: Backoff,
    due_at_ms: u64,
    in_flight: bool,
}

/// A dial in progress.
#[derive(Clone, Debug)]
struct DialAttempt {
    expected: NodeId,
    addr: String,
    /// An identification of an unidentified (seed or added) address.
    probe: bool,
    /// The attempt counts as `expected`'s dial (it was marked in flight for it).
    holds_dial: bool,
}

/// What the policy knows of one connection it named.
#[derive(Clone, Debug)]
enum Connection {
    /// Admitted, in the handshake, holding a place under the caps.
    Inbound {
        ip: IpAddr,
    },
    Dial(DialAttempt),
    /// Authenticated: a peer's active link, or the one waiting to replace it.
    Link {
        peer: NodeId,
    },
}

/// The peer policy: see the module docs.
#[derive(Debug)]
pub struct PeerPolicy {
    local: NodeId,
    limits: PolicyLimits,
    rng: ChaCha8Rng,
    /// The latest time handed in.
    now_ms: u64,
    book: AddressBook,
    peers: BTreeMap<NodeId, PeerSlot>,
    probes: BTreeMap<String, ProbeState>,
    connections: BTreeMap<ConnectionId, Connection>,
    pending_per_ip: BTreeMap<IpAddr, usize>,
    /// What the peer store was last asked to save (or held at start).
    saved: Vec<PeerAddress>,
    next_connection: u64,
    stats: NetStats,
    out: Vec<PolicyOutput>,
}

impl PeerPolicy {
    /// A policy for `config.local` among the validators of `genesis`, with the addresses the
    /// peer store held (`saved`) and the configured seeds. Nothing is dialed until the first
    /// `handle` (the caller sends `TimerFired` to begin).
    pub fn new(
        config: PolicyConfig,
        genesis: &Genesis,
        saved: &[PeerAddress],
        seeds: &[PeerAddr],
        now_ms: u64,
    ) -> PeerPolicy {
        let PolicyConfig { local, limits, rng_seed } = config;
        assert!(limits.backoff_initial_ms > 0, "a zero backoff would redial in a loop");
        assert!(limits.backoff_max_ms >= limits.backoff_initial_ms, "the backoff cap is below its start");
        assert!(limits.misbehavior_ban_initial_ms > 0, "a zero ban is no ban");
        assert!(limits.misbehavior_ban_max_ms >= limits.misbehavior_ban_initial_ms, "the ban cap is below its start");
        let mut book = AddressBook::new(genesis, local, limits.unidentified_addresses_max);
        book.load_saved(saved);
        let mut probes = BTreeMap::new();
        for seed in seeds {
            if book.add_unidentified(seed, AddressSource::Seed) {
                let probe = ProbeState {
                    backoff: Backoff::new(limits.backoff_initial_ms),
                    due_at_ms: now_ms,
                    in_flight: false,
                };
                probes.insert(seed.to_string(), probe);
            } else {
                debug!(%seed, "seed address already known");
            }
        }
        let peers = book
            .validators()
            .map(|id| {
                let due_at_ms = if *id < local { now_ms.saturating_add(limits.dial_yield_ms) } else { now_ms };
                let dial = DialState {
                    backoff: Backoff::new(limits.backoff_initial_ms),
                    due_at_ms,
                    in_flight: false,
                    attempts: 0,
                    offences: 0,
                    banned_until_ms: None,
                };
                (*id, PeerSlot { dial, active: None, waiting: None })
            })
            .collect();
        let saved = book.persistent();
        PeerPolicy {
            local,
            limits,
            rng: ChaCha8Rng::seed_from_u64(rng_seed),
            now_ms,
            book,
            peers,
            probes,
            connections: BTreeMap::new(),
            pending_per_ip: BTreeMap::new(),
            saved,
            next_connection: 0,
            stats: NetStats::default(),
            out: Vec::new(),
        }
    }

    /// Takes one fact and returns what to do about it (see the module docs), then starts every
    /// dial that is due.
    #[must_use]
    pub fn handle(&mut self, now_ms: u64, input: PolicyInput) -> Vec<PolicyOutput> {
        let now_ms = now_ms.max(self.now_ms);
        self.now_ms = now_ms;
        match input {
            PolicyInput::TimerFired => {}
            PolicyInput::InboundArrived { ip } => self.on_inbound_arrived(ip),
            PolicyInput::InboundHandshakeFinished { connection, peer } => {
                self.on_inbound_handshake_finished(now_ms, connection, peer);
            }
            PolicyInput::DialFinished { connection, outcome } => self.on_dial_finished(now_ms, connection, outcome),
            PolicyInput::LinkClosed { connection, end } => self.on_link_closed(now_ms, connection, end),
            PolicyInput::LinkQueueFilled { connection } => self.on_link_queue_filled(connection),
            PolicyInput::DisconnectRequested { peer, reason } => self.score_down(now_ms, peer, &reason),
            PolicyInput::PeerAddressAdded { addr } => self.on_peer_address_added(now_ms, &addr),
            PolicyInput::PeerAddressRemoved { addr } => self.on_peer_address_removed(&addr),
            PolicyInput::PeerListReceived { from, peers } => self.on_peer_list(now_ms, from, &peers),
        }
        self.start_due_dials(now_ms);
        std::mem::take(&mut self.out)
    }

    /// When the next dial or identification is due (a ban's end included), if any is waiting.
    pub fn next_timeout(&self) -> Option<u64> {
        let dials = self
            .peers
            .iter()
            .filter(|(peer, slot)| slot.is_idle() && self.book.dial_address(peer, 0).is_some())
            .map(|(_, slot)| slot.dial.due_at_ms.max(slot.dial.banned_until_ms.unwrap_or(slot.dial.due_at_ms)));
        // With no other validator there is nobody to expect at an unidentified address.
        let probes = self
            .probes
            .values()
            .filter(|probe| !probe.in_flight && !self.peers.is_empty())
            .map(|probe| probe.due_at_ms);
        dials.chain(probes).min()
    }

    /// The link that carries messages to `peer`: started and not being closed.
    pub fn link_of(&self, peer: &NodeId) -> Option<ConnectionId> {
        let active = self.peers.get(peer)?.active.as_ref()?;
        (!active.closing).then_some(active.connection)
    }

    /// Every peer with a link that carries messages, in id order.
    pub fn links_up(&self) -> impl Iterator<Item = (NodeId, ConnectionId)> + '_ {
        self.peers.keys().filter_map(|peer| self.link_of(peer).map(|connection| (*peer, connection)))
    }

    pub fn stats(&self) -> NetStats {
        let mut stats = self.stats.clone();
        stats.links = self.links_up().count();
        stats.dials_in_flight =
            self.connections.values().filter(|connection| matches!(connection, Connection::Dial(_))).count();
        stats.pending_handshakes = self.pending_per_ip.values().sum();
        stats
    }

    pub fn address_book(&self) -> &AddressBook {
        &self.book
    }

    fn new_connection(&mut self) -> ConnectionId {
        let connection = ConnectionId(self.next_connection);
        self.next_connection += 1;
        connection
    }

    fn on_inbound_arrived(&mut self, ip: IpAddr) {
        // An IPv4 peer seen through an IPv6 socket counts as the IPv4 address it is.
        let ip = ip.to_canonical();
        let pending = self.pending_per_ip.values().sum::<usize>();
        let from_ip = self.pending_per_ip.get(&ip).copied().unwrap_or(0);
        if pending >= self.limits.pending_handshakes_max || from_ip >= self.limits.pending_handshakes_per_ip_max {
            debug!(%ip, pending, from_ip, "refusing connection: too many pending handshakes");
            self.stats.connections_refused_at_cap += 1;
            self.out.push(PolicyOutput::Refuse { ip });
            return;
        }
        self.pending_per_ip.insert(ip, from_ip + 1);
        self.stats.pending_handshakes_peak = self.stats.pending_handshakes_peak.max(pending + 1);
        self.stats.pending_handshakes_per_ip_peak = self.stats.pending_handshakes_per_ip_peak.max(from_ip + 1);
        let connection = self.new_connection();
        self.connections.insert(connection, Connection::Inbound { ip });
        self.out.push(PolicyOutput::Admit { connection, ip });
    }

    fn on_inbound_handshake_finished(&mut self, now_ms: u64, connection: ConnectionId, peer: Option<NodeId>) {
        let Some(Connection::Inbound { ip }) = self.connections.remove(&connection) else {
            panic!("{connection} finished an inbound handshake it was not admitted for");
        };
        let from_ip = self.pending_per_ip.get_mut(&ip).expect("an admitted connection counts its IP address");
        *from_ip -= 1;
        if *from_ip == 0 {
            self.pending_per_ip.remove(&ip);
        }
        match peer {
            Some(peer) => self.on_authenticated(now_ms, connection, peer, false),
            None => self.stats.inbound_handshakes_failed += 1,
        }
    }

    /// A link passed the handshake: apply the ban and the one-link rule, then start it (or keep
    /// it waiting for the link it replaces to close).
    fn on_authenticated(&mut self, now_ms: u64, connection: ConnectionId, peer: NodeId, outbound: bool) {
        let local = self.local;
        let slot = self.peers.get_mut(&peer).expect("the handshake admits only genesis validators other than us");
        if slot.dial.is_banned(now_ms) {
            debug!(%peer, %connection, "closing a link: the peer is scored down");
            self.out.push(PolicyOutput::Close { connection, peer, reason: CloseReason::Banned });
            return;
        }
        let incumbent = match (&slot.waiting, &slot.active) {
            (Some(waiting), _) => Some(waiting.outbound),
            (None, Some(active)) if !active.closing => Some(active.outbound),
            _ => None,
        };
        if let Some(incumbent_outbound) = incumbent {
            if !keeps_new_link(local, peer, incumbent_outbound, outbound) {
                debug!(%peer, %connection, outbound, "closing a duplicate link: the one-link rule keeps the existing one");
                self.out.push(PolicyOutput::Close { connection, peer, reason: CloseReason::Duplicate });
                return;
            }
            debug!(%peer, %connection, outbound, "replacing a link: the one-link rule keeps the new one");
        }
        self.connections.insert(connection, Connection::Link { peer });
        if slot.active.is_none() {
            self.start_link(now_ms, peer, WaitingLink { connection, outbound });
            return;
        }
        let active = slot.active.as_mut().expect("checked just above");
        if !active.closing {
            active.closing = true;
            self.out.push(PolicyOutput::Close { connection: active.connection, peer, reason: CloseReason::Replaced });
        }
        if let Some(replaced) = slot.waiting.replace(WaitingLink { connection, outbound }) {
            self.connections.remove(&replaced.connection);
            self.out.push(PolicyOutput::Close { connection: replaced.connection, peer, reason: CloseReason::Replaced });
        }
    }

    /// Starts a link and sends it our peer list.
    fn start_link(&mut self, now_ms: u64, peer: NodeId, link: WaitingLink) {
        let WaitingLink { connection, outbound } = link;
        info!(%peer, %connection, outbound, "link up");
        self.out.push(PolicyOutput::StartLink { connection, peer, outbound });
        self.out.push(PolicyOutput::SendPeerList { connection, peers: self.book.shareable() });
        let slot = self.peers.get_mut(&peer).expect("only validators get links");
        assert!(slot.active.is_none(), "a link starts only once the one it replaces has closed");
        slot.active = Some(ActiveLink { connection, outbound, established_at_ms: now_ms, closing: false });
    }

    fn on_link_closed(&mut self, now_ms: u64, connection: ConnectionId, end: LinkEnd) {
        let Some(Connection::Link { peer }) = self.connections.remove(&connection) else {
            panic!("{connection} closed, but it is not a link");
        };
        let slot = self.peers.get_mut(&peer).expect("only validators get links");
        let active = slot.active.take().expect("a link closes only once started");
        assert_eq!(active.connection, connection, "a peer's link is replaced only after it has closed");
        info!(%peer, %connection, ?end, "link down");
        if now_ms.saturating_sub(active.established_at_ms) >= self.limits.link_stable_after_ms {
            slot.dial.backoff = Backoff::new(self.limits.backoff_initial_ms);
        }
        if end == LinkEnd::QueueFull {
            self.stats.links_dropped_queue_full += 1;
        }
        if let LinkEnd::Misbehaved { reason } = &end {
            self.score_down(now_ms, peer, reason);
        } else {
            self.schedule_dial(now_ms, peer);
        }
        let slot = self.peers.get_mut(&peer).expect("only validators get links");
        if let Some(waiting) = slot.waiting.take() {
            self.start_link(now_ms, peer, waiting);
        }
    }

    fn on_link_queue_filled(&mut self, connection: ConnectionId) {
        let Some(Connection::Link { peer }) = self.connections.get(&connection) else {
            debug!(%connection, "ignoring a full queue: not a link any more");
            return;
        };
        let peer = *peer;
        let active = self.peers.get_mut(&peer).and_then(|slot| slot.active.as_mut());
        let Some(active) = active.filter(|active| active.connection == connection && !active.closing) else {
            debug!(%peer, %connection, "ignoring a full queue: the link is closing already");
            return;
        };
        warn!(%peer, %connection, "closing link: its outbound queue is full");
        active.closing = true;
        self.stats.links_dropped_queue_full += 1;
        self.out.push(PolicyOutput::Close { connection, peer, reason: CloseReason::QueueFull });
    }

    /// Sets a peer's next dial after the current backoff (and after any ban).
    fn schedule_dial(&mut self, now_ms: u64, peer: NodeId) {
        let limits = &self.limits;
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        let mut wait_ms = with_jitter(slot.dial.backoff.after_failure(limits.backoff_max_ms), self.rng.next_u64());
        if peer < self.local {
            wait_ms = wait_ms.saturating_add(limits.dial_yield_ms);
        }
        slot.dial.due_at_ms = now_ms.saturating_add(wait_ms).max(slot.dial.banned_until_ms.unwrap_or(now_ms));
    }

    /// A new address is known for `peer`: if nothing is up or coming, try it soon.
    fn dial_new_address_soon(&mut self, now_ms: u64, peer: NodeId) {
        let count = self.book.addresses_of(&peer).len();
        let Some(slot) = self.peers.get_mut(&peer) else {
            return;
        };
        if slot.is_idle() && count > 0 {
            // The newest address is the last one filed.
            slot.dial.attempts = count - 1;
            slot.dial.due_at_ms = slot.dial.due_at_ms.min(now_ms);
        }
    }

    fn score_down(&mut self, now_ms: u64, peer: NodeId, reason: &str) {
        let limits = &self.limits;
        let Some(slot) = self.peers.get_mut(&peer) else {
            debug!(%peer, "ignoring a disconnection of a node that is not a peer");
            return;
        };
        slot.dial.offences = slot.dial.offences.saturating_add(1);
        let ban_ms =
            misbehavior_ban_ms(slot.dial.offences, limits.misbehavior_ban_initial_ms, limits.misbehavior_ban_max_ms);
        slot.dial.banned_until_ms = Some(now_ms.saturating_add(ban_ms));
        slot.dial.due_at_ms = now_ms.saturating_add(ban_ms);
        warn!(%peer, reason, ban_ms, offences = slot.dial.offences, "scoring peer down");
        if let Some(waiting) = slot.waiting.take() {
            self.connections.remove(&waiting.connection);
            self.out.push(PolicyOutput::Close {
                connection: waiting.connection,
                peer,
                reason: CloseReason::ScoredDown,
            });
        }
        if let Some(active) = slot.active.as_mut().filter(|active| !active.closing) {
            active.closing = true;
            self.out.push(PolicyOutput::Close { connection: active.connection, peer, reason: CloseReason::ScoredDown });
        }
        self.stats.peers_scored_down += 1;
    }

    fn on_dial_finished(&mut self, now_ms: u64, connection: ConnectionId, outcome: DialOutcome) {
        let Some(Connection::Dial(attempt)) = self.connections.remove(&connection) else {
            panic!("{connection} finished a dial that was not ordered");
        };
        let DialAttempt { expected, addr, probe, holds_dial } = attempt;
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
        match outcome {
            DialOutcome::Authenticated | DialOutcome::Identified => {
                let authenticated = outcome == DialOutcome::Authenticated;
                assert_eq!(authenticated, holds_dial, "a dial runs the whole handshake exactly when asked to");
                if probe {
                    self.book.identify(&addr, Identified::Validator { id: expected, verified: true });
                    self.probes.remove(&addr);
                    info!(addr, validator = %expected, "identified a seed or added address");
                } else {
                    self.book.mark_verified(expected, &addr);
                }
                // Saved before the link is started, so a driver that sees the peer connect can
                // rely on the address being stored.
                self.save_peers();
                if authenticated {
                    self.on_authenticated(now_ms, connection, expected, true);
                }
            }
            DialOutcome::ReachedAnother { found } => {
                if probe {
                    let identified = if found == self.local {
                        Identified::Ourselves
                    } else {
                        Identified::Validator { id: found, verified: false }
                    };
                    self.book.identify(&addr, identified);
                    self.probes.remove(&addr);
                    info!(addr, validator = %found, "identified a seed or added address");
                } else {
                    debug!(%expected, addr, %found, "dial reached another validator");
                    self.book.reached_another(expected, &addr, found);
                    self.dial_failed(now_ms, expected);
                }
                self.dial_new_address_soon(now_ms, found);
            }
            DialOutcome::Failed { reason } => {
                debug!(%expected, addr, probe, reason, "dial failed");
                if probe {
                    let backoff_max_ms = self.limits.backoff_max_ms;
                    if let Some(state) = self.probes.get_mut(&addr) {
                        let wait_ms = with_jitter(state.backoff.after_failure(backoff_max_ms), self.rng.next_u64());
                        state.due_at_ms = now_ms.saturating_add(wait_ms);
                    }
                } else {
                    self.dial_failed(now_ms, expected);
                }
            }
        }
        self.save_peers();
    }

    fn dial_failed(&mut self, now_ms: u64, peer: NodeId) {
        if let Some(slot) = self.peers.get_mut(&peer) {
            slot.dial.attempts = slot.dial.attempts.wrapping_add(1);
        }
        self.schedule_dial(now_ms, peer);
    }

    /// Starts every dial and identification that is due.
    fn start_due_dials(&mut self, now_ms: u64) {
        let due: Vec<(NodeId, String, usize)> = self
            .peers
            .iter()
            .filter(|(_, slot)| slot.is_idle() && slot.dial.due_at_ms <= now_ms && !slot.dial.is_banned(now_ms))
            .filter_map(|(peer, slot)| {
                let addr = self.book.dial_address(peer, slot.dial.attempts)?;
                Some((*peer, addr.to_string(), slot.dial.attempts))
            })
            .collect();
        for (peer, addr, attempt) in due {
            self.peers.get_mut(&peer).expect("chosen among the peers").dial.in_flight = true;
            let purpose = DialPurpose::Connect { attempt };
            self.start_dial(DialAttempt { expected: peer, addr, probe: false, holds_dial: true }, purpose);
        }
        let due: Vec<String> = self
            .probes
            .iter()
            .filter(|(_, probe)| !probe.in_flight && probe.due_at_ms <= now_ms)
            .map(|(addr, _)| addr.clone())
            .collect();
        for addr in due {
            // Expect a validator with nothing up or coming (see "Identification" in the docs).
            let idle = self.peers.iter().find(|(_, slot)| slot.is_idle() && !slot.dial.is_banned(now_ms));
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
            let purpose = DialPurpose::Identify { authenticate: holds_dial };
            self.start_dial(DialAttempt { expected, addr, probe: true, holds_dial }, purpose);
        }
    }

    fn start_dial(&mut self, attempt: DialAttempt, purpose: DialPurpose) {
        let connection = self.new_connection();
        let (peer, addr) = (attempt.expected, attempt.addr.clone());
        self.connections.insert(connection, Connection::Dial(attempt));
        self.out.push(PolicyOutput::Dial { connection, peer, addr, purpose });
    }

    fn on_peer_address_added(&mut self, now_ms: u64, addr: &PeerAddr) {
        if !self.book.add_unidentified(addr, AddressSource::Manual) {
            debug!(%addr, "peer address already known");
            return;
        }
        info!(%addr, "added a peer address");
        let probe =
            ProbeState { backoff: Backoff::new(self.limits.backoff_initial_ms), due_at_ms: now_ms, in_flight: false };
        self.probes.insert(addr.to_string(), probe);
    }

    fn on_peer_address_removed(&mut self, addr: &PeerAddr) {
        if self.book.remove(addr.as_str()) {
            info!(%addr, "removed a peer address");
            self.probes.remove(addr.as_str());
            self.save_peers();
        }
    }

    fn on_peer_list(&mut self, now_ms: u64, from: NodeId, peers: &[PeerAddress]) {
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
            self.dial_new_address_soon(now_ms, peer);
        }
    }

    /// Asks the peer store to save the persistent addresses, if they changed.
    fn save_peers(&mut self) {
        let persistent = self.book.persistent();
        if persistent != self.saved {
            self.saved = persistent.clone();
            self.out.push(PolicyOutput::SavePeers { peers: persistent });
        }
    }
}

#[cfg(test)]
mod tests;
