//! The one interface between the node's driver and a transport: the events a transport reports
//! ([`NetEvent`]), the commands it carries out ([`NetCommand`]) and the cloneable [`NetHandle`]
//! that sends them. Both transports, the TLS connection manager (`manager::start`) and the
//! in-memory network for driver tests (`memory::MemoryNetwork`), return a `NetHandle` and a
//! bounded `mpsc::Receiver<NetEvent>`; nothing else differs for the driver.
//!
//! Contract common to every transport:
//! - Events of one peer arrive in order: `PeerConnected(p)`, then `p`'s messages in the order it
//!   sent them, then `PeerDisconnected(p)`; then, if the link comes back, `PeerConnected(p)`
//!   again. No message from `p` arrives while `p` is disconnected.
//! - The events channel is bounded. A driver that stops reading stops the readers: their links
//!   stop reading sockets and TCP pushes back on the senders. Nothing queues without bound.
//! - Sending is best effort: a message to a peer without a link is dropped, and a link whose
//!   outbound queue is full is closed rather than allowed to grow (the peer reconnects and the
//!   core's sync fills any gap).
//! - After `Shutdown` no further event is delivered and the events channel closes once the
//!   transport's tasks have ended.

use crate::discovery::PeerAddr;
use crate::tls::TlsError;
use std::net::SocketAddr;
use tinychain_core::message::Message;
use tinychain_core::types::NodeId;
use tokio::sync::mpsc;

/// What a transport reports to the driver (facts, in the past tense).
// Nearly every event is a message: boxing it would cost an allocation per message to save
// bytes in a channel slot.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// An authenticated link with this validator is up.
    PeerConnected(NodeId),
    /// The link with this validator is gone; no more messages from it until it reconnects.
    PeerDisconnected(NodeId),
    MessageReceived {
        from: NodeId,
        message: Message,
    },
}

/// What the driver asks a transport to do.
#[derive(Clone, Debug)]
pub enum NetCommand {
    /// Sends to one peer, if a link with it is up.
    SendTo { peer: NodeId, message: Message },
    /// Sends to every peer with a link up, but `except`.
    Broadcast { message: Message, except: Option<NodeId> },
    /// Closes the link with a peer that broke the protocol; the TLS transport also scores it
    /// down (a longer wait before it is dialed or accepted again).
    Disconnect { peer: NodeId, reason: String },
    /// Adds an address (`host:port`) to dial; which validator it is, the dial finds out.
    AddPeer { addr: PeerAddr },
    /// Forgets an address: it is no longer dialed or shared. Links already up stay up.
    RemovePeer { addr: PeerAddr },
    /// Closes every link, stops listening and ends the transport's tasks.
    Shutdown,
}

/// The transport's errors: what `start` can fail with, and a command sent to a stopped transport.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the network transport has stopped")]
    Stopped,
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: SocketAddr, reason: String },
    #[error("our node key {node} is not a genesis validator; only validators may join")]
    NotAValidator { node: NodeId },
    #[error("network limit {field} is invalid: {reason}")]
    BadLimit { field: &'static str, reason: String },
    #[error("TLS setup failed: {source}")]
    Tls {
        #[from]
        source: TlsError,
    },
    #[error("the network task failed: {reason}")]
    TaskFailed { reason: String },
}

/// The driver's side of a transport: cheap to clone, every method waits only for room in the
/// bounded command channel (the transports drain it without ever waiting on the driver, so this
/// cannot deadlock against the events channel).
#[derive(Clone, Debug)]
pub struct NetHandle {
    commands: mpsc::Sender<NetCommand>,
}

impl NetHandle {
    pub(crate) fn new(commands: mpsc::Sender<NetCommand>) -> NetHandle {
        NetHandle { commands }
    }

    /// Sends any command; fails only if the transport has stopped.
    pub async fn command(&self, command: NetCommand) -> Result<(), NetError> {
        self.commands.send(command).await.map_err(|_| NetError::Stopped)
    }

    pub async fn send_to(&self, peer: NodeId, message: Message) -> Result<(), NetError> {
        self.command(NetCommand::SendTo { peer, message }).await
    }

    pub async fn broadcast(&self, message: Message, except: Option<NodeId>) -> Result<(), NetError> {
        self.command(NetCommand::Broadcast { message, except }).await
    }

    pub async fn disconnect(&self, peer: NodeId, reason: impl Into<String>) -> Result<(), NetError> {
        self.command(NetCommand::Disconnect { peer, reason: reason.into() }).await
    }

    pub async fn add_peer(&self, addr: PeerAddr) -> Result<(), NetError> {
        self.command(NetCommand::AddPeer { addr }).await
    }

    pub async fn remove_peer(&self, addr: PeerAddr) -> Result<(), NetError> {
        self.command(NetCommand::RemovePeer { addr }).await
    }

    /// Asks the transport to stop. Wait for the events channel to close (or for the TLS
    /// transport's `NetTask::join`) to know it has.
    pub async fn shutdown(&self) -> Result<(), NetError> {
        self.command(NetCommand::Shutdown).await
    }
}
