//! One authenticated link's two tasks and its outbound queue. This module owns everything that
//! happens on a link between the end of the handshake and its close: turning frames into
//! `NetEvent`s (the reader), draining the outbound queue onto the socket (the writer), pings,
//! the idle timeout, and the bound on what may wait to be sent.
//!
//! - The reader emits `PeerConnected` first, then one `MessageReceived` per `Wire::Core` frame in
//!   the order they arrived, then `PeerDisconnected` when the link ends, and only then returns
//!   (its return value is how the manager learns the link is closed). Each send waits for room in
//!   the bounded events channel: a slow driver stops the reader, the reader stops reading the
//!   socket, and TCP flow control pushes back on the peer.
//! - The reader uses the sans-IO `FrameDecoder`, so a frame header above the limit is refused as
//!   soon as its 4 bytes arrive, before anything is allocated, and memory follows the bytes that
//!   actually arrived.
//! - The writer drains a bounded queue of encoded frames ([`LinkSender`]), flushing once per
//!   batch, and sends a `Ping` every ping interval. Whoever enqueues uses `try_push`: a full
//!   queue (in frames or in bytes) is reported to the caller, who closes the link. A link is never
//!   allowed to hold more than its budget.
//! - Either task stops both through the link's stop signal; a read or write that makes no
//!   progress for the idle timeout ends the link.
//! - Both tasks count what crosses the link in the peer's [`PeerTraffic`] (bytes read and
//!   written after TLS, and when the peer last sent anything), for `/metrics`. The counters
//!   belong to the peer, not the link, so they keep growing across reconnections.

use crate::frame::{FrameDecoder, FrameError, FRAME_BYTES_MAX};
use crate::handle::NetEvent;
// Why a link ended is a fact the peer policy takes in, so it lives with the policy.
use crate::policy::LinkEnd;
use crate::wire::{PeerAddress, Wire};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tinychain_core::types::NodeId;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

/// Bytes read from the socket at a time.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Frames written before one flush: enough to batch a burst, small enough to keep latency low.
const WRITE_BATCH_FRAMES_MAX: usize = 64;

/// How long a closing link may take to send its TLS close_notify.
const CLOSE_NOTIFY_DEADLINE: Duration = Duration::from_secs(1);

/// One frame, encoded once and shared by every link it is sent on.
pub type Frame = Arc<[u8]>;

/// The outbound queue of one link, as seen by those who enqueue (the manager, and the reader for
/// pongs): bounded in frames by the channel and in bytes by a shared counter the writer
/// decrements.
#[derive(Clone, Debug)]
pub struct LinkSender {
    frames: mpsc::Sender<Frame>,
    queued_bytes: Arc<AtomicUsize>,
    queued_bytes_max: usize,
}

/// The queue is full (or its writer is gone): the caller closes the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueFull;

/// A sheddable frame was left out: the link's queue is at least half full (or gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shed;

impl LinkSender {
    /// Enqueues a frame the peer can do without (transfer gossip: the block that includes those
    /// transfers, and mempool sync, bring them anyway) only while the queue is less than half
    /// full in frames and in bytes. A peer too busy to keep up then gets fewer transfers instead
    /// of a queue full of them and a closed link: the other half stays for blocks, reports and
    /// evidence, and a link is closed only when those fill it.
    pub fn try_push_sheddable(&self, frame: Frame) -> Result<(), Shed> {
        let queued_frames = self.frames.max_capacity() - self.frames.capacity();
        if queued_frames * 2 >= self.frames.max_capacity()
            || self.queued_bytes.load(Ordering::Acquire) * 2 >= self.queued_bytes_max
        {
            return Err(Shed);
        }
        self.try_push(frame).map_err(|_| Shed)
    }

    /// Enqueues a frame without waiting. Fails if the link already holds `queued_bytes_max`
    /// bytes or its maximum number of frames.
    pub fn try_push(&self, frame: Frame) -> Result<(), QueueFull> {
        let length = frame.len();
        let before = self.queued_bytes.fetch_add(length, Ordering::AcqRel);
        if before + length > self.queued_bytes_max {
            self.queued_bytes.fetch_sub(length, Ordering::AcqRel);
            return Err(QueueFull);
        }
        self.frames.try_send(frame).map_err(|_| {
            self.queued_bytes.fetch_sub(length, Ordering::AcqRel);
            QueueFull
        })
    }
}

/// The writer's end of the queue.
#[derive(Debug)]
pub struct LinkQueue {
    frames: mpsc::Receiver<Frame>,
    queued_bytes: Arc<AtomicUsize>,
}

/// A link's outbound queue: at most `frames_max` frames and `bytes_max` bytes.
pub fn link_queue(frames_max: usize, bytes_max: usize) -> (LinkSender, LinkQueue) {
    let (sender, receiver) = mpsc::channel(frames_max);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        LinkSender { frames: sender, queued_bytes: Arc::clone(&queued_bytes), queued_bytes_max: bytes_max },
        LinkQueue { frames: receiver, queued_bytes },
    )
}

/// What has crossed the links with one peer since the transport started: bytes read from and
/// written to the TLS stream (frame bytes: TLS records and TCP headers are not counted), and
/// when a read last brought anything. Updated by the link tasks, read by `/metrics`.
#[derive(Debug, Default)]
pub struct PeerTraffic {
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    /// Unix ms of the last read that brought bytes; 0: never.
    last_received_unix_ms: AtomicU64,
}

/// A copy of one peer's [`PeerTraffic`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerTrafficFigures {
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Unix ms of the last read that brought bytes from the peer, `None` if none ever did.
    pub last_received_unix_ms: Option<u64>,
}

impl PeerTraffic {
    fn add_received(&self, bytes: usize) {
        self.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let now_ms = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
        self.last_received_unix_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    fn add_sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn figures(&self) -> PeerTrafficFigures {
        let last = self.last_received_unix_ms.load(Ordering::Relaxed);
        PeerTrafficFigures {
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            last_received_unix_ms: (last > 0).then_some(last),
        }
    }
}

/// Every peer's [`PeerTraffic`], one entry per peer that ever had a link; cheap to clone (the
/// transport and `/metrics` share one table).
#[derive(Clone, Debug, Default)]
pub struct TrafficTable {
    peers: Arc<Mutex<BTreeMap<NodeId, Arc<PeerTraffic>>>>,
}

impl TrafficTable {
    /// The peer's counters, created at zero on its first link.
    pub fn peer(&self, peer: NodeId) -> Arc<PeerTraffic> {
        // Plain counters: a panic elsewhere cannot leave the map inconsistent.
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(peers.entry(peer).or_default())
    }

    /// Every peer that ever had a link, in id order, with its figures now.
    pub fn figures(&self) -> Vec<(NodeId, PeerTrafficFigures)> {
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        peers.iter().map(|(peer, traffic)| (*peer, traffic.figures())).collect()
    }
}

/// Stops both tasks of a link; set by the manager, the reader or the writer, whoever ends it.
pub type LinkStop = Arc<watch::Sender<bool>>;

pub fn link_stop() -> LinkStop {
    Arc::new(watch::channel(false).0)
}

/// Resolves once the signal is set (or its sender is gone, which also means stop).
pub(crate) async fn stopped(receiver: &mut watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stop| *stop).await;
}

/// What the reader needs besides its socket.
pub struct ReaderContext {
    pub peer: NodeId,
    pub events: mpsc::Sender<NetEvent>,
    /// Where peer lists go (the manager).
    pub peer_lists: mpsc::Sender<(NodeId, Vec<PeerAddress>)>,
    /// This link's queue, for pongs.
    pub sender: LinkSender,
    pub stop: LinkStop,
    pub shutdown: watch::Receiver<bool>,
    pub idle_timeout: Duration,
    /// The peer's counters: bytes read and when.
    pub traffic: Arc<PeerTraffic>,
}

/// How a send toward the driver or manager ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delivery {
    Delivered,
    Stopped,
    Abandoned,
}

/// Sends on a bounded channel, giving up if the link is stopped or the transport shuts down.
async fn deliver<T>(
    channel: &mpsc::Sender<T>,
    value: T,
    stop: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> Delivery {
    tokio::select! {
        sent = channel.send(value) => if sent.is_ok() { Delivery::Delivered } else { Delivery::Abandoned },
        () = stopped(stop) => Delivery::Stopped,
        () = stopped(shutdown) => Delivery::Abandoned,
    }
}

/// The reader task: see the module docs. Returns why the link ended, after `PeerDisconnected`
/// was delivered (unless the transport is shutting down or the driver is gone).
pub async fn run_reader<R: AsyncRead + Unpin>(mut context: ReaderContext, mut reader: R) -> LinkEnd {
    let mut stop = context.stop.subscribe();
    let mut shutdown = context.shutdown.clone();
    let connected = deliver(&context.events, NetEvent::PeerConnected(context.peer), &mut stop, &mut shutdown).await;
    let end = match connected {
        Delivery::Delivered => read_frames(&mut context, &mut reader, &mut stop, &mut shutdown).await,
        Delivery::Stopped => LinkEnd::Stopped,
        Delivery::Abandoned => LinkEnd::Abandoned,
    };
    // Whatever ended the link, the writer ends with it.
    context.stop.send_replace(true);
    if !matches!(connected, Delivery::Delivered) || end == LinkEnd::Abandoned {
        // Never announced (nothing to take back), or nobody is listening any more.
        return end;
    }
    // The link is stopped now, so only a shutdown may cut this last delivery short.
    let disconnected = NetEvent::PeerDisconnected(context.peer);
    tokio::select! {
        sent = context.events.send(disconnected) => if sent.is_err() { return LinkEnd::Abandoned },
        () = stopped(&mut shutdown) => return LinkEnd::Abandoned,
    }
    end
}

async fn read_frames<R: AsyncRead + Unpin>(
    context: &mut ReaderContext,
    reader: &mut R,
    stop: &mut watch::Receiver<bool>,
    shutdown: &mut watch::Receiver<bool>,
) -> LinkEnd {
    let peer = context.peer;
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    loop {
        loop {
            let payload = match decoder.next_frame() {
                Ok(Some(payload)) => payload,
                Ok(None) => break,
                Err(error) => return frame_refused(peer, error),
            };
            let wire = match Wire::decode(&payload) {
                Ok(wire) => wire,
                Err(error) => {
                    warn!(%peer, %error, "closing link: the peer sent an undecodable payload");
                    return LinkEnd::Misbehaved { reason: error.to_string() };
                }
            };
            let delivery = match wire {
                Wire::Core(message) => {
                    let event = NetEvent::MessageReceived { from: peer, message };
                    deliver(&context.events, event, stop, shutdown).await
                }
                Wire::Ping(nonce) => {
                    let pong = Wire::Pong(nonce).to_frame().expect("a pong fits in a frame");
                    if context.sender.try_push(pong).is_err() {
                        warn!(%peer, "closing link: its outbound queue is full");
                        return LinkEnd::QueueFull;
                    }
                    Delivery::Delivered
                }
                // Any frame counts as a sign of life; a pong needs nothing more.
                Wire::Pong(_) => Delivery::Delivered,
                Wire::Peers(peers) => deliver(&context.peer_lists, (peer, peers), stop, shutdown).await,
            };
            match delivery {
                Delivery::Delivered => {}
                Delivery::Stopped => return LinkEnd::Stopped,
                Delivery::Abandoned => return LinkEnd::Abandoned,
            }
        }
        let read = tokio::select! {
            read = tokio::time::timeout(context.idle_timeout, reader.read(&mut buffer)) => read,
            () = stopped(stop) => return LinkEnd::Stopped,
            () = stopped(shutdown) => return LinkEnd::Abandoned,
        };
        match read {
            Err(_) => {
                debug!(%peer, "closing link: nothing received for the idle timeout");
                return LinkEnd::Idle;
            }
            Ok(Err(error)) => {
                debug!(%peer, %error, "closing link: read failed");
                return LinkEnd::Failed { reason: error.to_string() };
            }
            Ok(Ok(0)) => {
                debug!(%peer, "link closed by the peer");
                return LinkEnd::Closed;
            }
            Ok(Ok(count)) => {
                context.traffic.add_received(count);
                decoder.push(&buffer[..count]);
            }
        }
    }
}

fn frame_refused(peer: NodeId, error: FrameError) -> LinkEnd {
    warn!(%peer, %error, "closing link: the peer sent an invalid frame");
    LinkEnd::Misbehaved { reason: error.to_string() }
}

/// What the writer needs besides its socket.
pub struct WriterContext {
    pub peer: NodeId,
    pub queue: LinkQueue,
    pub stop: LinkStop,
    pub shutdown: watch::Receiver<bool>,
    pub ping_interval: Duration,
    /// A write that makes no progress for this long ends the link.
    pub idle_timeout: Duration,
    /// The peer's counters: bytes written.
    pub traffic: Arc<PeerTraffic>,
}

/// The writer task: see the module docs. Ends when the link is stopped, the queue's senders are
/// all gone, or a write fails; then sends close_notify (briefly) and stops the reader.
pub async fn run_writer<W: AsyncWrite + Unpin>(mut context: WriterContext, mut writer: W) {
    let peer = context.peer;
    let mut stop = context.stop.subscribe();
    let mut shutdown = context.shutdown.clone();
    let start = tokio::time::Instant::now() + context.ping_interval;
    let mut ping = tokio::time::interval_at(start, context.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping_nonce: u64 = 0;
    let mut batch: Vec<Frame> = Vec::with_capacity(WRITE_BATCH_FRAMES_MAX);
    loop {
        // Bytes of this batch taken from the queue (pings were never counted there). They stay
        // counted against the queue's budget until written.
        let mut dequeued_bytes = 0;
        tokio::select! {
            frame = context.queue.frames.recv() => match frame {
                Some(frame) => {
                    dequeued_bytes += frame.len();
                    batch.push(frame);
                    while batch.len() < WRITE_BATCH_FRAMES_MAX {
                        match context.queue.frames.try_recv() {
                            Ok(frame) => {
                                dequeued_bytes += frame.len();
                                batch.push(frame);
                            }
                            Err(_) => break,
                        }
                    }
                }
                None => break,
            },
            _ = ping.tick() => {
                ping_nonce = ping_nonce.wrapping_add(1);
                batch.push(Wire::Ping(ping_nonce).to_frame().expect("a ping fits in a frame"));
            }
            () = stopped(&mut stop) => break,
            () = stopped(&mut shutdown) => break,
        }
        let written = tokio::select! {
            written = tokio::time::timeout(context.idle_timeout, write_batch(&mut writer, &batch)) => written,
            () = stopped(&mut stop) => break,
            () = stopped(&mut shutdown) => break,
        };
        context.queue.queued_bytes.fetch_sub(dequeued_bytes, Ordering::AcqRel);
        let batch_bytes = batch.iter().map(|frame| frame.len()).sum();
        batch.clear();
        match written {
            Ok(Ok(())) => context.traffic.add_sent(batch_bytes),
            Ok(Err(error)) => {
                debug!(%peer, %error, "closing link: write failed");
                break;
            }
            Err(_) => {
                warn!(%peer, "closing link: the peer has not read for the idle timeout");
                break;
            }
        }
    }
    context.stop.send_replace(true);
    let _ = tokio::time::timeout(CLOSE_NOTIFY_DEADLINE, writer.shutdown()).await;
}

async fn write_batch<W: AsyncWrite + Unpin>(writer: &mut W, batch: &[Frame]) -> std::io::Result<()> {
    for frame in batch {
        writer.write_all(frame).await?;
    }
    writer.flush().await
}
