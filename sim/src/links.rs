//! The connection model: every core runs the server's peer policy
//! (`tinychain_net::policy::PeerPolicy`) on virtual time, and this module plays the TLS shell
//! around it (`tinychain_net::manager`): it carries out the policy's orders on simulated
//! connections and reports back what happened to them. The engine sends a core's messages only
//! on the links its policy keeps, and tells its driver `PeerConnected`/`PeerDisconnected` when a
//! link starts and ends, as the server's link reader does.
//!
//! # The model
//!
//! - **Addresses.** Each validator's genesis address is a synthetic `n<i>.sim:7740`; a dial to it
//!   reaches core `i`, or, for a validator that splits, its core on the dialer's side.
//! - **Dialing.** A dial's SYN reaches the target one network delay later. Across a partition
//!   (either direction cut) it is lost, and resent 1 s and 3 s after the dial began as Linux
//!   does; if none gets through in time the dial fails at the handshake deadline ("connect timed
//!   out"). A target that crashed answers with a reset ("connection refused", one round trip
//!   after the SYN). A dial to or from a paused core fails at the deadline too ("handshake timed
//!   out": the process accepts nothing and answers nothing). Otherwise the target's policy is
//!   told `InboundArrived` (it admits or refuses), and three round trips after the SYN (TCP,
//!   TLS 1.3, the Hello/Proof challenge-response) both ends learn the handshake authenticated,
//!   the dialer first. A crash, a partition or a pause during the handshake fails it the same
//!   ways.
//! - **Links.** A started end (`StartLink`) is announced to its core's driver (`PeerConnected`);
//!   messages are carried only between two started ends (a message for an end that is
//!   authenticated but not yet started waits for it, as bytes wait in a socket). When one end
//!   closes (the policy's `Close`, an idle timeout, a crash), the other learns one network delay
//!   later (a FIN, or a reset after a crash), or, when the partition blocks that direction, not
//!   until the path opens again or its own idle timeout fires.
//! - **Keep-alive.** Pings are not sent as messages: a started end is idle while nothing can
//!   reach it (the direction towards it is partitioned, the peer is paused, or the peer's end is
//!   gone and no FIN can arrive). An end idle for `idle_timeout_ms` closes (`LinkEnd::Idle`), as
//!   the server's link reader does when neither pings nor messages arrive. An honest peer's
//!   reports alone arrive every block, so "nothing arrives" means "nothing can".
//! - **Pauses.** A paused core's policy takes nothing in: what it is told (a failed dial, a
//!   closed link, its timer, its own idle timeouts) waits and is handed in, in order, when it
//!   resumes, after the messages that waited for it.
//! - **Timing and randomness.** The policy's clock is virtual time (monotonic, never skewed: the
//!   shell uses a monotonic clock too). Each core's policy is seeded from the core's own stream
//!   (`peer-policy n<i>`, a new seed at each restart) so the backoff jitter is the seed's; the
//!   connection delays come from the `links` stream, so the connection model does not reshuffle
//!   the latencies of messages.
//!
//! # Split validators
//!
//! A splitting validator's two cores ("n1" and "n1b", one key) run a policy each, like every
//! core. A dial to the validator's address reaches its core on the dialer's side; a split core's
//! dial to an honest validator of the other group reaches nobody (it times out, as if that
//! group were partitioned away for good, and is retried at the backoff's pace). Partitions never
//! cut a connection that has a split core at one end, as they never cut its messages.
//!
//! # Not modelled
//!
//! Peer exchange (every address is in genesis, so it would teach nothing), full outbound queues
//! (the network model has no per-link buffer) and seed or added addresses (the simulator
//! configures none).

use crate::engine::Sent;
use crate::network::NetworkModel;
use crate::rng::SimRng;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use tinychain_core::genesis::Genesis;
use tinychain_core::types::NodeId;
use tinychain_net::discovery::PeerAddress;
use tinychain_net::policy::{
    CloseReason, ConnectionId, DialOutcome, LinkEnd, LinkTimings, PeerPolicy, PolicyConfig, PolicyInput, PolicyLimits,
    PolicyOutput,
};

/// Round trips from a dial's start to the end of its handshake: TCP, TLS 1.3 and the
/// Hello/Proof challenge-response.
const HANDSHAKE_ROUND_TRIPS: u64 = 3;

/// When a dial sends its TCP SYN, after the dial began: once, then again as Linux retransmits it
/// (initial timeout 1 s, doubling) while the handshake deadline lasts. A dial into a partition
/// that heals in time succeeds at the next SYN.
const SYN_SENT_AFTER_MS: [u64; 3] = [0, 1_000, 3_000];

/// The port of every synthetic validator address (the server's default peer port).
const PEER_PORT: u16 = 7740;

/// A simulated connection, by its index in `Links::wires`.
pub type WireId = usize;

/// The genesis address of validator `index`.
pub fn validator_address(index: usize) -> String {
    format!("n{index}.sim:{PEER_PORT}")
}

/// The source address a validator's connections come from.
fn validator_ip(index: usize) -> IpAddr {
    let index = u32::try_from(index).expect("validator counts are small");
    IpAddr::V4(Ipv4Addr::from(0x0a00_0001 + index))
}

/// Something the connection model will do at a later virtual time; the engine keeps it in its
/// queue and hands it back to [`Links::on_step`].
#[derive(Clone, Debug)]
pub enum LinkStep {
    /// The policy's `next_timeout` came.
    PolicyTimer { core: usize, generation: u64 },
    /// A dial's SYN number `syn` (see `SYN_SENT_AFTER_MS`) reaches its target, if it can.
    Connect { wire: WireId, syn: usize },
    /// The handshake's last message arrives: both ends are authenticated.
    Authenticate { wire: WireId },
    /// The dial failed, and the dialer learns it now.
    DialFailed { wire: WireId, reason: &'static str },
    /// The inbound handshake failed, and the acceptor learns it now.
    InboundFailed { wire: WireId },
    /// The other end's FIN (or, after a crash, its reset) reaches end `end`.
    PeerClosed { wire: WireId, end: usize, reset: bool },
    /// End `end` has heard nothing since `since_ms`: idle if that is still so.
    IdleCheck { wire: WireId, end: usize, since_ms: u64 },
    /// The core's driver asked to drop a peer that broke the protocol.
    DisconnectRequested { core: usize, incarnation: u64, peer: NodeId, reason: String },
}

/// What the engine must do, in order, after a call into the connection model.
#[derive(Debug)]
pub enum LinkEffect {
    /// Keep this step in the queue until `at_ms`.
    Schedule { at_ms: u64, step: LinkStep },
    /// Tell core `core`'s driver that validator `peer` connected.
    Connected { core: usize, peer: usize },
    /// Tell core `core`'s driver that validator `peer` disconnected.
    Disconnected { core: usize, peer: usize },
    /// Deliver a message that waited for its end to start.
    Deliver { from: usize, to: usize, message: Arc<Sent> },
    /// A trace line on core `core`.
    Trace { core: usize, text: String },
}

/// What becomes of a message that reaches core `to` on a wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The receiving end is started: deliver it.
    Deliver,
    /// The receiving end is authenticated but not started yet: it waits (`Links::hold`).
    Wait,
    /// The receiving end is closed: the bytes are lost with the connection.
    Drop,
}

const DIALER: usize = 0;
const ACCEPTOR: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EndState {
    /// The acceptor's end before its policy admitted the connection.
    NotAccepted,
    Handshaking,
    /// Authenticated, held until the policy starts or closes it.
    Held,
    Started,
    Closed,
}

#[derive(Debug)]
struct End {
    core: usize,
    connection: Option<ConnectionId>,
    state: EndState,
    /// Since when nothing can reach this (started) end.
    silent_since_ms: Option<u64>,
    /// The other end is closed (or its core crashed).
    remote_closed: bool,
    /// The other end's close is on its way here (or has arrived).
    close_sent: bool,
    /// It arrived while this end was held: the link ends as soon as it starts.
    close_arrived: bool,
    /// The close was a reset (the other core crashed).
    reset: bool,
    /// Messages that arrived while this end was held.
    waiting: Vec<(usize, Arc<Sent>)>,
}

impl End {
    fn new(core: usize, connection: Option<ConnectionId>, state: EndState) -> End {
        End {
            core,
            connection,
            state,
            silent_since_ms: None,
            remote_closed: false,
            close_sent: false,
            close_arrived: false,
            reset: false,
            waiting: Vec::new(),
        }
    }

    fn is_alive(&self) -> bool {
        matches!(self.state, EndState::Handshaking | EndState::Held | EndState::Started)
    }
}

#[derive(Debug)]
struct Wire {
    ends: [End; 2],
    dialed_at_ms: u64,
    /// The one-way delay drawn for this connection's handshake and closes.
    one_way_ms: u64,
    /// The dial runs the whole handshake (rather than stop after TLS to identify an address).
    authenticates: bool,
    /// The validator whose address was dialed.
    target_validator: usize,
    /// When the SYN that got through was sent.
    syn_sent_at_ms: u64,
}

impl Wire {
    fn end_of(&self, core: usize) -> usize {
        if self.ends[DIALER].core == core {
            DIALER
        } else {
            assert_eq!(self.ends[ACCEPTOR].core, core, "a wire carries messages between its two cores only");
            ACCEPTOR
        }
    }
}

struct CoreLinks {
    validator: usize,
    is_split: bool,
    /// None while the core is down.
    policy: Option<PeerPolicy>,
    /// Seeds each start's policy.
    rng: SimRng,
    /// Counts the core's starts: a step for an earlier one is void.
    incarnation: u64,
    paused: bool,
    /// Steps that came while the core was paused, handed in when it resumes.
    deferred: Vec<LinkStep>,
    timer_at_ms: Option<u64>,
    timer_generation: u64,
    /// Per validator: the wire of the started link and the core at its other end.
    link_to: Vec<Option<(WireId, usize)>>,
    /// The wires of this core's policy's connections that are still alive.
    wires_of: BTreeMap<ConnectionId, WireId>,
    /// What the policy last asked its peer store to save (it survives a crash).
    saved_peers: Vec<PeerAddress>,
}

/// The connection model of every core: see the module docs.
pub struct Links {
    genesis: Genesis,
    /// The server's defaults, both: the simulator models a network of default-configured nodes.
    limits: PolicyLimits,
    timings: LinkTimings,
    cores: Vec<CoreLinks>,
    /// `routes[core][validator]`: the core a dial from `core` to `validator`'s address reaches.
    routes: Vec<Vec<Option<usize>>>,
    /// Genesis address -> validator.
    addresses: BTreeMap<String, usize>,
    /// Every connection ever dialed (a run makes a few thousand at most).
    wires: Vec<Wire>,
    /// Connection delays (the `links` stream).
    rng: SimRng,
    /// The wire whose `InboundArrived` the acceptor's policy is deciding on.
    arriving: Option<WireId>,
}

impl Links {
    /// The model for `core_validators.len()` cores (core `i` signs as `core_validators[i]`);
    /// `routes` as in the field's docs; `is_split[i]`: core `i` is a split validator's, which
    /// partitions never cut. No policy runs until [`Links::start_core`].
    pub fn new(
        seed: u64,
        genesis: &Genesis,
        core_validators: &[usize],
        is_split: &[bool],
        routes: Vec<Vec<Option<usize>>>,
    ) -> Links {
        let validators = genesis.validators.len();
        let addresses =
            genesis.validators.iter().enumerate().map(|(index, entry)| (entry.addr.clone(), index)).collect();
        let cores = core_validators
            .iter()
            .zip(is_split)
            .enumerate()
            .map(|(core, (validator, is_split))| {
                let name = if core == *validator { format!("n{validator}") } else { format!("n{validator}b") };
                CoreLinks {
                    validator: *validator,
                    is_split: *is_split,
                    policy: None,
                    rng: SimRng::stream(seed, &format!("peer-policy {name}")),
                    incarnation: 0,
                    paused: false,
                    deferred: Vec::new(),
                    timer_at_ms: None,
                    timer_generation: 0,
                    link_to: vec![None; validators],
                    wires_of: BTreeMap::new(),
                    saved_peers: Vec::new(),
                }
            })
            .collect();
        Links {
            genesis: genesis.clone(),
            limits: PolicyLimits::default(),
            timings: LinkTimings::default(),
            cores,
            routes,
            addresses,
            wires: Vec::new(),
            rng: SimRng::stream(seed, "links"),
            arriving: None,
        }
    }

    /// The started link from `core` to `validator`: its wire and the core at the other end.
    pub fn link_to(&self, core: usize, validator: usize) -> Option<(WireId, usize)> {
        self.cores[core].link_to[validator]
    }

    /// The validators `core` has a started link with, in validator order.
    pub fn linked_validators(&self, core: usize) -> impl Iterator<Item = usize> + '_ {
        self.cores[core].link_to.iter().enumerate().filter_map(|(validator, link)| link.map(|_| validator))
    }

    /// Does every pair of `cores` that can reach each other have a started link at both ends?
    pub fn is_meshed(&self, cores: &[usize]) -> bool {
        cores.iter().all(|&a| {
            cores.iter().all(|&b| {
                let (validator_a, validator_b) = (self.cores[a].validator, self.cores[b].validator);
                validator_a == validator_b
                    || self.routes[a][validator_b] != Some(b)
                    || (self.cores[a].link_to[validator_b].is_some() && self.cores[b].link_to[validator_a].is_some())
            })
        })
    }

    /// What becomes of a message reaching core `to` on `wire` now.
    pub fn arrival(&self, wire: WireId, to: usize) -> Arrival {
        let wire = &self.wires[wire];
        match wire.ends[wire.end_of(to)].state {
            EndState::Started => Arrival::Deliver,
            EndState::Held => Arrival::Wait,
            _ => Arrival::Drop,
        }
    }

    /// Keeps a message for a held end until it starts (see [`Arrival::Wait`]).
    pub fn hold(&mut self, wire: WireId, from: usize, to: usize, message: Arc<Sent>) {
        let wire = &mut self.wires[wire];
        let end = wire.end_of(to);
        wire.ends[end].waiting.push((from, message));
    }

    /// The step that hands core `core`'s policy its driver's request to drop `peer` (scheduled
    /// by the engine after the step that asked, as a server's driver sends its transport a
    /// command).
    pub fn disconnect_requested(&self, core: usize, peer: NodeId, reason: String) -> LinkStep {
        LinkStep::DisconnectRequested { core, incarnation: self.cores[core].incarnation, peer, reason }
    }

    /// Starts (or restarts) core `core`'s policy: a new process with what its peer store saved.
    pub fn start_core(&mut self, core: usize, now_ms: u64, network: &NetworkModel) -> Vec<LinkEffect> {
        let links = &mut self.cores[core];
        assert!(links.policy.is_none(), "a core starts once per crash");
        let local = self.genesis.validators[links.validator].id;
        let config = PolicyConfig { local, limits: self.limits.clone(), rng_seed: links.rng.next_u64() };
        links.policy = Some(PeerPolicy::new(config, &self.genesis, &links.saved_peers, &[], now_ms));
        links.incarnation += 1;
        links.paused = false;
        let mut effects = Vec::new();
        self.handle(core, PolicyInput::TimerFired, now_ms, network, &mut effects);
        effects
    }

    /// Core `core` crashed: its policy is gone with the process, its connections end at once on
    /// its side, and each peer learns from a reset one network delay later (when the path to it
    /// is open; otherwise when it opens, or by the peer's idle timeout).
    pub fn crash_core(&mut self, core: usize, now_ms: u64, network: &NetworkModel) -> Vec<LinkEffect> {
        let links = &mut self.cores[core];
        if links.policy.take().is_none() {
            return Vec::new();
        }
        links.incarnation += 1;
        links.paused = false;
        links.deferred.clear();
        links.timer_at_ms = None;
        links.timer_generation += 1;
        links.link_to.fill(None);
        let wires: Vec<WireId> = std::mem::take(&mut links.wires_of).into_values().collect();
        let mut effects = Vec::new();
        for wire in wires {
            let end = self.wires[wire].end_of(core);
            let was = self.wires[wire].ends[end].state;
            self.wires[wire].ends[end].state = EndState::Closed;
            if matches!(was, EndState::Held | EndState::Started) {
                self.tell_remote(wire, end, true, now_ms, network, &mut effects);
            }
        }
        effects
    }

    /// Core `core` stops taking anything in until it resumes; its peers hear nothing from it.
    pub fn pause_core(&mut self, core: usize, now_ms: u64, network: &NetworkModel) -> Vec<LinkEffect> {
        self.cores[core].paused = true;
        let mut effects = Vec::new();
        self.refresh_silence(now_ms, network, &mut effects);
        effects
    }

    /// Core `core` resumes: what it was told while paused is handed in now, in order.
    pub fn resume_core(&mut self, core: usize, now_ms: u64, network: &NetworkModel) -> Vec<LinkEffect> {
        let mut effects = Vec::new();
        if !std::mem::replace(&mut self.cores[core].paused, false) {
            return effects;
        }
        for step in std::mem::take(&mut self.cores[core].deferred) {
            effects.extend(self.on_step(step, now_ms, network));
        }
        self.refresh_silence(now_ms, network, &mut effects);
        effects
    }

    /// The partitions changed: ends cut off start (or stop) counting towards their idle
    /// timeout, and closes that could not get through are sent now.
    pub fn network_changed(&mut self, now_ms: u64, network: &NetworkModel) -> Vec<LinkEffect> {
        let mut effects = Vec::new();
        for wire in 0..self.wires.len() {
            for end in [DIALER, ACCEPTOR] {
                let this = &self.wires[wire].ends[end];
                if this.is_alive() && this.remote_closed && !this.close_sent {
                    let remote = self.wires[wire].ends[1 - end].core;
                    if self.is_path_open(network, remote, this.core) {
                        let reset = this.reset;
                        self.send_close(wire, end, reset, now_ms, &mut effects);
                    }
                }
            }
        }
        self.refresh_silence(now_ms, network, &mut effects);
        effects
    }

    /// Carries out a step that came due.
    pub fn on_step(&mut self, step: LinkStep, now_ms: u64, network: &NetworkModel) -> Vec<LinkEffect> {
        let mut effects = Vec::new();
        if let Some(core) = self.core_to_tell(&step) {
            if self.cores[core].paused {
                self.cores[core].deferred.push(step);
                return effects;
            }
        }
        match step {
            LinkStep::PolicyTimer { core, generation } => {
                let links = &mut self.cores[core];
                if links.policy.is_some() && links.timer_generation == generation {
                    links.timer_at_ms = None;
                    self.handle(core, PolicyInput::TimerFired, now_ms, network, &mut effects);
                }
            }
            LinkStep::Connect { wire, syn } => self.on_connect(wire, syn, now_ms, network, &mut effects),
            LinkStep::Authenticate { wire } => self.on_authenticate(wire, now_ms, network, &mut effects),
            LinkStep::DialFailed { wire, reason } => self.on_dial_failed(wire, reason, now_ms, network, &mut effects),
            LinkStep::InboundFailed { wire } => {
                let end = &mut self.wires[wire].ends[ACCEPTOR];
                if end.state == EndState::Handshaking {
                    end.state = EndState::Closed;
                    let (core, connection) = (end.core, end.connection.expect("admitted"));
                    self.cores[core].wires_of.remove(&connection);
                    let input = PolicyInput::InboundHandshakeFinished { connection, peer: None };
                    self.handle(core, input, now_ms, network, &mut effects);
                }
            }
            LinkStep::PeerClosed { wire, end, reset } => {
                let this = &mut self.wires[wire].ends[end];
                match this.state {
                    EndState::Started => {
                        let link_end =
                            if reset { LinkEnd::Failed { reason: "connection reset".into() } } else { LinkEnd::Closed };
                        self.close_started(wire, end, link_end, now_ms, network, &mut effects);
                    }
                    EndState::Held => this.close_arrived = true,
                    _ => {}
                }
            }
            LinkStep::IdleCheck { wire, end, since_ms } => {
                let this = &self.wires[wire].ends[end];
                if this.state == EndState::Started && this.silent_since_ms == Some(since_ms) {
                    self.close_started(wire, end, LinkEnd::Idle, now_ms, network, &mut effects);
                }
            }
            LinkStep::DisconnectRequested { core, incarnation, peer, reason } => {
                let links = &self.cores[core];
                if links.policy.is_some() && links.incarnation == incarnation {
                    self.handle(core, PolicyInput::DisconnectRequested { peer, reason }, now_ms, network, &mut effects);
                }
            }
        }
        effects
    }

    /// The core whose policy a step informs alone (None: a step that involves both ends, or
    /// whose first packet reaches a kernel rather than a process).
    fn core_to_tell(&self, step: &LinkStep) -> Option<usize> {
        match step {
            LinkStep::PolicyTimer { core, .. } | LinkStep::DisconnectRequested { core, .. } => Some(*core),
            LinkStep::Connect { .. } | LinkStep::Authenticate { .. } => None,
            LinkStep::DialFailed { wire, .. } => Some(self.wires[*wire].ends[DIALER].core),
            LinkStep::InboundFailed { wire } => Some(self.wires[*wire].ends[ACCEPTOR].core),
            LinkStep::PeerClosed { wire, end, .. } | LinkStep::IdleCheck { wire, end, .. } => {
                Some(self.wires[*wire].ends[*end].core)
            }
        }
    }

    /// Can a packet from core `from` reach core `to` now? Partitions never cut a split core.
    fn is_path_open(&self, network: &NetworkModel, from: usize, to: usize) -> bool {
        let (from, to) = (&self.cores[from], &self.cores[to]);
        from.is_split || to.is_split || !network.blocked[from.validator][to.validator]
    }

    fn one_way_ms(&mut self, network: &NetworkModel) -> u64 {
        network.latency_ms + self.rng.range(0, network.jitter_ms)
    }

    /// Hands `input` to core `core`'s policy and carries out its orders, in order.
    fn handle(
        &mut self,
        core: usize,
        input: PolicyInput,
        now_ms: u64,
        network: &NetworkModel,
        effects: &mut Vec<LinkEffect>,
    ) {
        let policy = self.cores[core].policy.as_mut().expect("only a running core's policy is told anything");
        let outputs = policy.handle(now_ms, input);
        for output in outputs {
            self.carry_out(core, output, now_ms, network, effects);
        }
        self.arm_timer(core, now_ms, effects);
    }

    /// Keeps one timer step in the queue at the policy's `next_timeout`.
    fn arm_timer(&mut self, core: usize, now_ms: u64, effects: &mut Vec<LinkEffect>) {
        let links = &mut self.cores[core];
        let Some(policy) = &links.policy else { return };
        let next_ms = policy.next_timeout().map(|at_ms| at_ms.max(now_ms));
        if next_ms == links.timer_at_ms {
            return;
        }
        links.timer_at_ms = next_ms;
        links.timer_generation += 1;
        if let Some(at_ms) = next_ms {
            let step = LinkStep::PolicyTimer { core, generation: links.timer_generation };
            effects.push(LinkEffect::Schedule { at_ms, step });
        }
    }

    fn carry_out(
        &mut self,
        core: usize,
        output: PolicyOutput,
        now_ms: u64,
        network: &NetworkModel,
        effects: &mut Vec<LinkEffect>,
    ) {
        match output {
            PolicyOutput::Dial { connection, peer: _, addr, purpose } => {
                self.dial(core, connection, &addr, purpose.authenticates(), now_ms, network, effects);
            }
            PolicyOutput::Admit { connection, ip: _ } => {
                let wire = self.arriving.take().expect("an admission answers the connection that arrived");
                let end = &mut self.wires[wire].ends[ACCEPTOR];
                end.connection = Some(connection);
                end.state = EndState::Handshaking;
                self.cores[core].wires_of.insert(connection, wire);
                let at_ms = self.wires[wire].syn_sent_at_ms + 2 * HANDSHAKE_ROUND_TRIPS * self.wires[wire].one_way_ms;
                effects.push(LinkEffect::Schedule { at_ms: at_ms.max(now_ms), step: LinkStep::Authenticate { wire } });
            }
            PolicyOutput::Refuse { ip: _ } => {
                let wire = self.arriving.take().expect("a refusal answers the connection that arrived");
                let at_ms = now_ms + self.wires[wire].one_way_ms;
                let step = LinkStep::DialFailed { wire, reason: "closed in the handshake" };
                effects.push(LinkEffect::Schedule { at_ms, step });
            }
            PolicyOutput::StartLink { connection, peer, outbound } => {
                self.start_link(core, connection, peer, outbound, now_ms, network, effects);
            }
            // Every address is in genesis: peer exchange would teach nothing.
            PolicyOutput::SendPeerList { .. } => {}
            PolicyOutput::Close { connection, peer, reason } => {
                let wire = *self.cores[core].wires_of.get(&connection).expect("the policy closes its own connections");
                let end = self.wires[wire].end_of(core);
                match self.wires[wire].ends[end].state {
                    EndState::Started => {
                        // As in the shell: the link is stopped and its reader returns.
                        let text = close_reason_text(reason);
                        self.close_started_with(wire, end, LinkEnd::Stopped, text, now_ms, network, effects);
                    }
                    EndState::Held => {
                        self.wires[wire].ends[end].state = EndState::Closed;
                        self.cores[core].wires_of.remove(&connection);
                        let peer = self.validator_of(&peer);
                        let text = format!("link dropped n{peer} before starting: {}", close_reason_text(reason));
                        effects.push(LinkEffect::Trace { core, text });
                        self.tell_remote(wire, end, false, now_ms, network, effects);
                    }
                    state => panic!("the policy closes only authenticated connections, not one {state:?}"),
                }
            }
            PolicyOutput::SavePeers { peers } => self.cores[core].saved_peers = peers,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn dial(
        &mut self,
        core: usize,
        connection: ConnectionId,
        addr: &str,
        authenticates: bool,
        now_ms: u64,
        network: &NetworkModel,
        effects: &mut Vec<LinkEffect>,
    ) {
        let validator = *self.addresses.get(addr).expect("the simulated policies dial genesis addresses only");
        let target = self.routes[core][validator];
        let one_way_ms = self.one_way_ms(network);
        let wire = self.wires.len();
        self.wires.push(Wire {
            ends: [
                End::new(core, Some(connection), EndState::Handshaking),
                End::new(target.unwrap_or(core), None, EndState::NotAccepted),
            ],
            dialed_at_ms: now_ms,
            one_way_ms,
            authenticates,
            target_validator: validator,
            syn_sent_at_ms: now_ms,
        });
        self.cores[core].wires_of.insert(connection, wire);
        let step = match target {
            Some(_) => (now_ms + one_way_ms, LinkStep::Connect { wire, syn: 0 }),
            // A split core's dial towards the other group: nobody answers.
            None => (
                now_ms + self.timings.handshake_deadline_ms,
                LinkStep::DialFailed { wire, reason: "connect timed out" },
            ),
        };
        effects.push(LinkEffect::Schedule { at_ms: step.0, step: step.1 });
    }

    /// A dial's SYN reaches its target (or would, were the path open).
    fn on_connect(
        &mut self,
        wire: WireId,
        syn: usize,
        now_ms: u64,
        network: &NetworkModel,
        effects: &mut Vec<LinkEffect>,
    ) {
        let (dialer, target) = (self.wires[wire].ends[DIALER].core, self.wires[wire].ends[ACCEPTOR].core);
        if self.wires[wire].ends[DIALER].state != EndState::Handshaking {
            return;
        }
        let (dialed_at_ms, one_way_ms) = (self.wires[wire].dialed_at_ms, self.wires[wire].one_way_ms);
        let deadline_ms = dialed_at_ms + self.timings.handshake_deadline_ms;
        let is_cut = !self.is_path_open(network, dialer, target) || !self.is_path_open(network, target, dialer);
        if is_cut {
            // Lost in the partition: the next SYN may get through, if it leaves time to finish.
            let next_at_ms = SYN_SENT_AFTER_MS
                .get(syn + 1)
                .map(|after_ms| dialed_at_ms + after_ms + one_way_ms)
                .filter(|at_ms| at_ms + 2 * HANDSHAKE_ROUND_TRIPS * one_way_ms < deadline_ms);
            let step = match next_at_ms {
                Some(at_ms) => (at_ms, LinkStep::Connect { wire, syn: syn + 1 }),
                None => (deadline_ms, LinkStep::DialFailed { wire, reason: "connect timed out" }),
            };
            effects.push(LinkEffect::Schedule { at_ms: step.0, step: step.1 });
            return;
        }
        self.wires[wire].syn_sent_at_ms = dialed_at_ms + SYN_SENT_AFTER_MS[syn];
        let failure = if self.cores[target].policy.is_none() {
            Some((now_ms + one_way_ms, "connection refused"))
        } else if self.cores[dialer].paused || self.cores[target].paused {
            Some((deadline_ms, "handshake timed out"))
        } else {
            None
        };
        if let Some((at_ms, reason)) = failure {
            effects.push(LinkEffect::Schedule { at_ms, step: LinkStep::DialFailed { wire, reason } });
            return;
        }
        self.arriving = Some(wire);
        let ip = validator_ip(self.cores[dialer].validator);
        self.handle(target, PolicyInput::InboundArrived { ip }, now_ms, network, effects);
        assert!(self.arriving.is_none(), "the policy admits or refuses every connection that arrives");
    }

    /// The handshake's last message arrives: both ends learn it authenticated, the dialer first.
    fn on_authenticate(&mut self, wire: WireId, now_ms: u64, network: &NetworkModel, effects: &mut Vec<LinkEffect>) {
        let (dialer, acceptor) = (self.wires[wire].ends[DIALER].core, self.wires[wire].ends[ACCEPTOR].core);
        let dialer_alive = self.wires[wire].ends[DIALER].state == EndState::Handshaking;
        let acceptor_alive = self.wires[wire].ends[ACCEPTOR].state == EndState::Handshaking;
        match (dialer_alive, acceptor_alive) {
            (false, false) => {}
            // One side crashed during the handshake: the other gets a reset.
            (true, false) => {
                let step = LinkStep::DialFailed { wire, reason: "connection reset" };
                effects.push(LinkEffect::Schedule { at_ms: now_ms, step });
            }
            (false, true) => {
                effects.push(LinkEffect::Schedule { at_ms: now_ms, step: LinkStep::InboundFailed { wire } })
            }
            (true, true) => {
                let is_cut =
                    !self.is_path_open(network, dialer, acceptor) || !self.is_path_open(network, acceptor, dialer);
                if is_cut || self.cores[dialer].paused || self.cores[acceptor].paused {
                    let at_ms = (self.wires[wire].dialed_at_ms + self.timings.handshake_deadline_ms).max(now_ms);
                    let reason = if is_cut { "connect timed out" } else { "handshake timed out" };
                    effects.push(LinkEffect::Schedule { at_ms, step: LinkStep::DialFailed { wire, reason } });
                    effects.push(LinkEffect::Schedule { at_ms, step: LinkStep::InboundFailed { wire } });
                    return;
                }
                let dialer_connection = self.wires[wire].ends[DIALER].connection.expect("dialed");
                let acceptor_connection = self.wires[wire].ends[ACCEPTOR].connection.expect("admitted");
                if !self.wires[wire].authenticates {
                    // An identification stops after TLS: the acceptor's handshake then fails.
                    self.wires[wire].ends[DIALER].state = EndState::Closed;
                    self.wires[wire].ends[ACCEPTOR].state = EndState::Closed;
                    self.cores[dialer].wires_of.remove(&dialer_connection);
                    self.cores[acceptor].wires_of.remove(&acceptor_connection);
                    let input =
                        PolicyInput::DialFinished { connection: dialer_connection, outcome: DialOutcome::Identified };
                    self.handle(dialer, input, now_ms, network, effects);
                    let input = PolicyInput::InboundHandshakeFinished { connection: acceptor_connection, peer: None };
                    self.handle(acceptor, input, now_ms, network, effects);
                    return;
                }
                self.wires[wire].ends[DIALER].state = EndState::Held;
                self.wires[wire].ends[ACCEPTOR].state = EndState::Held;
                let input =
                    PolicyInput::DialFinished { connection: dialer_connection, outcome: DialOutcome::Authenticated };
                self.handle(dialer, input, now_ms, network, effects);
                // The dialer's policy may have stopped at its end already (a crash cannot happen
                // here, but a close can): the acceptor learns of it from a FIN, as over TCP.
                let dialer_id = self.genesis.validators[self.cores[dialer].validator].id;
                let input =
                    PolicyInput::InboundHandshakeFinished { connection: acceptor_connection, peer: Some(dialer_id) };
                self.handle(acceptor, input, now_ms, network, effects);
            }
        }
    }

    fn on_dial_failed(
        &mut self,
        wire: WireId,
        reason: &'static str,
        now_ms: u64,
        network: &NetworkModel,
        effects: &mut Vec<LinkEffect>,
    ) {
        let end = &mut self.wires[wire].ends[DIALER];
        if end.state != EndState::Handshaking {
            return;
        }
        end.state = EndState::Closed;
        let (core, connection) = (end.core, end.connection.expect("dialed"));
        self.cores[core].wires_of.remove(&connection);
        let target = self.wires[wire].target_validator;
        effects.push(LinkEffect::Trace { core, text: format!("dial n{target} failed: {reason}") });
        let input =
            PolicyInput::DialFinished { connection, outcome: DialOutcome::Failed { reason: reason.to_string() } };
        self.handle(core, input, now_ms, network, effects);
    }

    fn validator_of(&self, id: &NodeId) -> usize {
        self.genesis.validator_index(id).expect("policies know genesis validators only")
    }

    #[allow(clippy::too_many_arguments)]
    fn start_link(
        &mut self,
        core: usize,
        connection: ConnectionId,
        peer: NodeId,
        outbound: bool,
        now_ms: u64,
        network: &NetworkModel,
        effects: &mut Vec<LinkEffect>,
    ) {
        let wire = *self.cores[core].wires_of.get(&connection).expect("the policy starts its own connections");
        let end = self.wires[wire].end_of(core);
        assert_eq!(self.wires[wire].ends[end].state, EndState::Held, "a link starts once, after authenticating");
        self.wires[wire].ends[end].state = EndState::Started;
        let peer = self.validator_of(&peer);
        let remote = self.wires[wire].ends[1 - end].core;
        assert!(self.cores[core].link_to[peer].is_none(), "one started link per peer: the policy's rule");
        self.cores[core].link_to[peer] = Some((wire, remote));
        let how = if outbound { "dialed" } else { "accepted" };
        effects.push(LinkEffect::Trace { core, text: format!("link up n{peer} ({how})") });
        effects.push(LinkEffect::Connected { core, peer });
        for (from, message) in std::mem::take(&mut self.wires[wire].ends[end].waiting) {
            effects.push(LinkEffect::Deliver { from, to: core, message });
        }
        let this = &self.wires[wire].ends[end];
        if this.close_arrived {
            let link_end =
                if this.reset { LinkEnd::Failed { reason: "connection reset".into() } } else { LinkEnd::Closed };
            self.close_started(wire, end, link_end, now_ms, network, effects);
            return;
        }
        self.refresh_end_silence(wire, end, now_ms, network, effects);
    }

    /// A started end ends for `link_end` (its reader returned): the driver hears the peer
    /// disconnect, the other end is told, then the policy.
    fn close_started(
        &mut self,
        wire: WireId,
        end: usize,
        link_end: LinkEnd,
        now_ms: u64,
        network: &NetworkModel,
        effects: &mut Vec<LinkEffect>,
    ) {
        let text = match &link_end {
            LinkEnd::Closed => "closed by peer".to_string(),
            LinkEnd::Failed { reason } => reason.clone(),
            LinkEnd::Idle => "idle".to_string(),
            other => format!("{other:?}"),
        };
        self.close_started_with(wire, end, link_end, text, now_ms, network, effects);
    }

    #[allow(clippy::too_many_arguments)]
    fn close_started_with(
        &mut self,
        wire: WireId,
        end: usize,
        link_end: LinkEnd,
        text: String,
        now_ms: u64,
        network: &NetworkModel,
        effects: &mut Vec<LinkEffect>,
    ) {
        let this = &mut self.wires[wire].ends[end];
        assert_eq!(this.state, EndState::Started, "only a started link has a reader to return");
        this.state = EndState::Closed;
        this.silent_since_ms = None;
        let (core, connection) = (this.core, this.connection.expect("a started end has its connection"));
        let remote = self.wires[wire].ends[1 - end].core;
        let peer = self.cores[remote].validator;
        self.cores[core].wires_of.remove(&connection);
        assert_eq!(self.cores[core].link_to[peer].map(|(id, _)| id), Some(wire), "the started link with the peer");
        self.cores[core].link_to[peer] = None;
        effects.push(LinkEffect::Trace { core, text: format!("link down n{peer}: {text}") });
        effects.push(LinkEffect::Disconnected { core, peer });
        self.tell_remote(wire, end, false, now_ms, network, effects);
        self.handle(core, PolicyInput::LinkClosed { connection, end: link_end }, now_ms, network, effects);
    }

    /// End `end` of `wire` is gone: the other end hears of it one network delay later if the
    /// path to it is open.
    fn tell_remote(
        &mut self,
        wire: WireId,
        end: usize,
        reset: bool,
        now_ms: u64,
        network: &NetworkModel,
        effects: &mut Vec<LinkEffect>,
    ) {
        let other = 1 - end;
        let (from, to) = (self.wires[wire].ends[end].core, self.wires[wire].ends[other].core);
        let remote = &mut self.wires[wire].ends[other];
        if !remote.is_alive() || remote.remote_closed {
            return;
        }
        remote.remote_closed = true;
        remote.reset = reset;
        if self.is_path_open(network, from, to) {
            self.send_close(wire, other, reset, now_ms, effects);
        } else {
            self.refresh_end_silence(wire, other, now_ms, network, effects);
        }
    }

    fn send_close(&mut self, wire: WireId, end: usize, reset: bool, now_ms: u64, effects: &mut Vec<LinkEffect>) {
        self.wires[wire].ends[end].close_sent = true;
        let at_ms = now_ms + self.wires[wire].one_way_ms;
        effects.push(LinkEffect::Schedule { at_ms, step: LinkStep::PeerClosed { wire, end, reset } });
    }

    /// Every started end starts or stops counting towards its idle timeout.
    fn refresh_silence(&mut self, now_ms: u64, network: &NetworkModel, effects: &mut Vec<LinkEffect>) {
        for wire in 0..self.wires.len() {
            for end in [DIALER, ACCEPTOR] {
                self.refresh_end_silence(wire, end, now_ms, network, effects);
            }
        }
    }

    /// An end is silent while nothing can reach it: the direction towards it is cut, its peer is
    /// paused, or its peer's end is gone and the close cannot get through.
    fn refresh_end_silence(
        &mut self,
        wire: WireId,
        end: usize,
        now_ms: u64,
        network: &NetworkModel,
        effects: &mut Vec<LinkEffect>,
    ) {
        let this = &self.wires[wire].ends[end];
        if this.state != EndState::Started {
            return;
        }
        let remote = self.wires[wire].ends[1 - end].core;
        let is_silent = this.remote_closed
            || self.cores[remote].paused
            || self.cores[remote].policy.is_none()
            || !self.is_path_open(network, remote, this.core);
        let this = &mut self.wires[wire].ends[end];
        match (is_silent, this.silent_since_ms) {
            (true, None) => {
                this.silent_since_ms = Some(now_ms);
                let step = LinkStep::IdleCheck { wire, end, since_ms: now_ms };
                effects.push(LinkEffect::Schedule { at_ms: now_ms + self.timings.idle_timeout_ms, step });
            }
            (false, Some(_)) => this.silent_since_ms = None,
            _ => {}
        }
    }
}

fn close_reason_text(reason: CloseReason) -> String {
    match reason {
        CloseReason::Banned => "banned",
        CloseReason::Duplicate => "duplicate",
        CloseReason::Replaced => "replaced",
        CloseReason::ScoredDown => "scored down",
        CloseReason::QueueFull => "queue full",
    }
    .to_string()
}
