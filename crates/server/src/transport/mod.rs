//! The peer transport: frames between members over TCP, each a Paxos
//! message or one of the member's own ([`member::wire::Frame`], one codec).
//!
//! Each member dials every peer and uses that connection to send, and
//! accepts its peers' connections to receive: two connections per pair, each
//! one-way after the handshake. That keeps each side simple (a writer task
//! per peer, a reader task per inbound connection) and means a member's
//! messages to a peer never wait behind the peer's messages to it.
//!
//! A node runs these tasks on its driver's thread ([`Transport::start_in`]),
//! and the driver writes to an idle connection itself (see `queue.rs`): a
//! message crosses no other thread of the member on its way in or out.
//!
//! - Membership is proved on connect ([`wire`]): a process without the
//!   cluster token, or whose id is not a member, is refused and logged, and
//!   none of its bytes reach the core.
//! - Every frame read is bounded ([`TransportConfig::frame_bytes_max`]); a
//!   frame too large, truncated, undecodable, or claiming another sender
//!   closes that connection only.
//! - Every queue is bounded: the outbound queue of each peer drops its oldest
//!   frames when full (counted in [`PeerMetrics::frames_dropped`]), and the
//!   inbound channel to the core pushes back on the sockets when full.
//! - A lost connection is redialled with exponential backoff and jitter,
//!   bounded by [`TransportConfig::reconnect_backoff_ms_max`].
//!
//! Loss, duplication and reordering across reconnects are left to the
//! protocol, which tolerates all three.

mod metrics;
mod queue;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use member::PeerMessage;
use member::wire::{Frame, decode_frame, encode_envelope, encode_peer};
use paxos::NodeId;
use paxos::multi::Envelope;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use metrics::{InboundCounters, PeerCounters, bump, read};
pub use metrics::{PeerMetrics, TransportMetrics};
use queue::FrameQueue;

/// Connections the kernel holds for the listener before they are accepted.
const LISTEN_BACKLOG: u32 = 1024;

/// The largest frame [`TransportConfig::frame_bytes_max`] may allow.
pub const FRAME_BYTES_HARD_MAX: u32 = 256 << 20;

/// How to run the transport. Build one with [`TransportConfig::new`], which
/// fills in the bounds, and adjust fields as needed.
#[derive(Clone)]
pub struct TransportConfig {
    /// This member's id.
    pub me: NodeId,
    /// Where to accept peers' connections.
    pub listen: SocketAddr,
    /// Every member's peer address. An entry for `me` is ignored; the keys
    /// other than `me` are the members allowed to connect.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The secret shared by the cluster's members; proves membership.
    pub token: String,
    /// Frames a peer's outbound queue holds before dropping its oldest.
    pub queue_frames_max: usize,
    /// Bytes a peer's outbound queue holds before dropping its oldest
    /// frames; at least one largest frame.
    pub queue_bytes_max: usize,
    /// Envelopes waiting for the core before inbound connections stop
    /// reading (pushing back on the senders).
    pub inbound_envelopes_max: usize,
    /// Largest frame payload sent or accepted; a peer announcing more is
    /// disconnected.
    pub frame_bytes_max: u32,
    /// Time a handshake (dial included) may take.
    pub handshake_timeout_ms: u64,
    /// Time one batch of writes may take before the connection is deemed
    /// stuck and redialled.
    pub write_timeout_ms: u64,
    /// First delay before redialling a peer.
    pub reconnect_backoff_ms_min: u64,
    /// Longest delay between redials of a peer.
    pub reconnect_backoff_ms_max: u64,
    /// Inbound connections still in their handshake; more are closed at
    /// once, so strangers cannot tie up the listener.
    pub handshakes_pending_max: usize,
    /// Frames written per batch before the writer flushes.
    pub write_batch_frames_max: usize,
    /// Drop what is queued for a peer that cannot be reached, instead of
    /// delivering old frames once it is back: a member that restarts then
    /// catches up from the leader (by snapshot if it is far behind).
    pub drop_queue_when_unreachable: bool,
}

impl TransportConfig {
    /// A configuration with the default bounds: 16 MiB frames, 4096-frame
    /// and 64 MiB queues, 50 ms to 5 s redial backoff.
    pub fn new(
        me: NodeId,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
        token: impl Into<String>,
    ) -> Self {
        TransportConfig {
            me,
            listen,
            peers,
            token: token.into(),
            queue_frames_max: 4096,
            queue_bytes_max: 64 << 20,
            inbound_envelopes_max: 4096,
            frame_bytes_max: 16 << 20,
            handshake_timeout_ms: 5_000,
            write_timeout_ms: 10_000,
            reconnect_backoff_ms_min: 50,
            reconnect_backoff_ms_max: 5_000,
            handshakes_pending_max: 64,
            write_batch_frames_max: 256,
            drop_queue_when_unreachable: false,
        }
    }

    fn validate(&self) -> Result<(), StartError> {
        if self.token.is_empty() {
            return Err(StartError::EmptyToken);
        }
        let positive = [
            ("queue_frames_max", self.queue_frames_max as u64),
            ("inbound_envelopes_max", self.inbound_envelopes_max as u64),
            ("frame_bytes_max", u64::from(self.frame_bytes_max)),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("write_timeout_ms", self.write_timeout_ms),
            ("reconnect_backoff_ms_min", self.reconnect_backoff_ms_min),
            ("handshakes_pending_max", self.handshakes_pending_max as u64),
            ("write_batch_frames_max", self.write_batch_frames_max as u64),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(StartError::Zero(name));
        }
        if self.frame_bytes_max > FRAME_BYTES_HARD_MAX {
            return Err(StartError::FrameLimit(self.frame_bytes_max));
        }
        let frame_max = self.frame_bytes_max as usize + wire::LENGTH_PREFIX_BYTES;
        if self.queue_bytes_max < frame_max {
            return Err(StartError::QueueSmallerThanFrame {
                queue_bytes_max: self.queue_bytes_max,
                frame_bytes_max: self.frame_bytes_max,
            });
        }
        if self.reconnect_backoff_ms_max < self.reconnect_backoff_ms_min {
            return Err(StartError::Backoff);
        }
        Ok(())
    }
}

impl fmt::Debug for TransportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the token.
        f.debug_struct("TransportConfig")
            .field("me", &self.me)
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("token", &"<redacted>")
            .field("queue_frames_max", &self.queue_frames_max)
            .field("queue_bytes_max", &self.queue_bytes_max)
            .field("inbound_envelopes_max", &self.inbound_envelopes_max)
            .field("frame_bytes_max", &self.frame_bytes_max)
            .field("handshake_timeout_ms", &self.handshake_timeout_ms)
            .field("write_timeout_ms", &self.write_timeout_ms)
            .field("reconnect_backoff_ms_min", &self.reconnect_backoff_ms_min)
            .field("reconnect_backoff_ms_max", &self.reconnect_backoff_ms_max)
            .field("handshakes_pending_max", &self.handshakes_pending_max)
            .field("write_batch_frames_max", &self.write_batch_frames_max)
            .finish()
    }
}

/// Why the transport could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// An empty token would let anyone in.
    #[error("the cluster token is empty")]
    EmptyToken,
    /// A bound is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// The frame limit is above [`FRAME_BYTES_HARD_MAX`].
    #[error("frame_bytes_max {0} is above the hard limit {FRAME_BYTES_HARD_MAX}")]
    FrameLimit(u32),
    /// A queue could not hold even one largest frame.
    #[error(
        "queue_bytes_max {queue_bytes_max} cannot hold one frame of frame_bytes_max {frame_bytes_max}"
    )]
    QueueSmallerThanFrame {
        /// The queue bound.
        queue_bytes_max: usize,
        /// The frame bound.
        frame_bytes_max: u32,
    },
    /// The backoff bounds are upside down.
    #[error("reconnect_backoff_ms_max is below reconnect_backoff_ms_min")]
    Backoff,
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Why an envelope was not queued. The caller keeps its envelope (it was
/// lent), so it can log it or try elsewhere.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SendError {
    /// The recipient is not a peer of this member (or is this member).
    #[error("member {0} is not a peer of this member")]
    UnknownPeer(NodeId),
    /// The envelope claims another sender; peers would drop the connection.
    #[error("envelope is from {from}, but this member is {me}")]
    NotFromMe {
        /// The envelope's sender.
        from: NodeId,
        /// This member.
        me: NodeId,
    },
    /// The encoded envelope is above the frame limit; peers would refuse it.
    #[error("encoded envelope of {len} bytes is above the frame limit of {max} bytes")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The transport was shut down.
    #[error("the transport is shut down")]
    Closed,
}

/// Starts transports.
#[derive(Debug)]
pub struct Transport;

impl Transport {
    /// Binds `config.listen` and starts the transport: a listener task and
    /// one writer task per peer. Returns the handle to send with and the
    /// channel of envelopes received, bounded by `inbound_envelopes_max`.
    pub async fn start(
        config: TransportConfig,
    ) -> Result<(TransportHandle, mpsc::Receiver<Frame>), StartError> {
        Self::start_in(&tokio::runtime::Handle::current(), config)
    }

    /// Like [`Transport::start`], with every task (and so every socket) on
    /// `runtime`. The node puts them on its driver's thread: an envelope
    /// read there reaches the core without waking another thread, and the
    /// core's own writes need no other thread either.
    pub fn start_in(
        runtime: &tokio::runtime::Handle,
        config: TransportConfig,
    ) -> Result<(TransportHandle, mpsc::Receiver<Frame>), StartError> {
        config.validate()?;
        let bind_error = |source| StartError::Bind {
            addr: config.listen,
            source,
        };
        let listener = {
            // Registered with `runtime`'s reactor, and bound as tokio's
            // `TcpListener::bind` binds (SO_REUSEADDR on Unix).
            let _inside = runtime.enter();
            let socket = if config.listen.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            }
            .map_err(bind_error)?;
            socket.set_reuseaddr(true).map_err(bind_error)?;
            socket.bind(config.listen).map_err(bind_error)?;
            socket.listen(LISTEN_BACKLOG).map_err(bind_error)?
        };
        Self::launch(runtime, listener, config)
    }

    /// Like [`Transport::start`] on a listener already bound (`config.listen`
    /// is ignored): lets tests bind port 0 for every member first.
    pub async fn start_on(
        listener: TcpListener,
        config: TransportConfig,
    ) -> Result<(TransportHandle, mpsc::Receiver<Frame>), StartError> {
        config.validate()?;
        Self::launch(&tokio::runtime::Handle::current(), listener, config)
    }

    /// Starts the tasks on `runtime`; the configuration is validated.
    fn launch(
        runtime: &tokio::runtime::Handle,
        listener: TcpListener,
        config: TransportConfig,
    ) -> Result<(TransportHandle, mpsc::Receiver<Frame>), StartError> {
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_envelopes_max);
        let members: BTreeSet<NodeId> = config
            .peers
            .keys()
            .copied()
            .filter(|id| *id != config.me)
            .collect();
        let peers: BTreeMap<NodeId, Arc<Peer>> = config
            .peers
            .iter()
            .filter(|(id, _)| **id != config.me)
            .map(|(id, addr)| {
                let peer = Peer {
                    id: *id,
                    addr: *addr,
                    queue: FrameQueue::new(config.queue_frames_max, config.queue_bytes_max),
                    counters: PeerCounters::default(),
                };
                (*id, Arc::new(peer))
            })
            .collect();
        let shared = Arc::new(Shared {
            me: config.me,
            token: config.token.clone().into_bytes(),
            members: RwLock::new(members),
            directory: RwLock::new(Vec::new()),
            config,
            inbound_tx,
            inbound: InboundCounters::default(),
            authenticated: Mutex::new(HashMap::new()),
            connection_serial: AtomicU64::new(0),
        });

        let tasks = vec![runtime.spawn(run_listener(listener, Arc::clone(&shared)))];
        let dialers = peers
            .values()
            .map(|peer| {
                let task = runtime.spawn(run_dialer(Arc::clone(&shared), Arc::clone(peer)));
                (peer.id, task)
            })
            .collect();
        info!(me = shared.me, %local_addr, peers = peers.len(), "peer transport started");
        let inner = Inner {
            shared,
            peers: RwLock::new(peers),
            local_addr,
            closed: AtomicBool::new(false),
            corked: AtomicBool::new(false),
            tasks: Mutex::new(tasks),
            dialers: Mutex::new(dialers),
            runtime: runtime.clone(),
        };
        Ok((
            TransportHandle {
                inner: Arc::new(inner),
            },
            inbound_rx,
        ))
    }
}

/// How long a member removed by a configuration change is still sent to:
/// the decision that removed it, and the slots before it, must reach it so
/// that it learns it was removed and stops.
pub const REMOVED_PEER_GRACE: Duration = Duration::from_secs(10);

/// Sends envelopes to peers and reports on the transport. Cheap to clone;
/// when the last clone is dropped the transport stops.
#[derive(Clone, Debug)]
pub struct TransportHandle {
    inner: Arc<Inner>,
}

impl TransportHandle {
    /// Queues a member's message (a client command for the leader, a read
    /// index, a snapshot chunk) for `to`, without waiting; the same bounded
    /// queue and drop-oldest rule as envelopes.
    pub fn send_peer(&self, to: NodeId, message: &PeerMessage) -> Result<(), SendError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let peers = inner.peers();
        let peer = peers.get(&to).ok_or(SendError::UnknownPeer(to))?;
        let mut frame = vec![0u8; wire::LENGTH_PREFIX_BYTES];
        encode_peer(inner.shared.me, to, message, &mut frame);
        self.enqueue(peer, frame)
    }

    /// Queues an envelope for its recipient without waiting. A full queue
    /// drops its oldest frame to make room (counted, not an error): a peer
    /// that is down must not make this member wait or grow.
    pub fn send(&self, envelope: &Envelope) -> Result<(), SendError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        let me = inner.shared.me;
        if envelope.from != me {
            return Err(SendError::NotFromMe {
                from: envelope.from,
                me,
            });
        }
        let peers = inner.peers();
        let peer = peers
            .get(&envelope.to)
            .ok_or(SendError::UnknownPeer(envelope.to))?;
        // Encode straight behind a placeholder prefix: one buffer, no copy.
        let mut frame = vec![0u8; wire::LENGTH_PREFIX_BYTES];
        encode_envelope(envelope, &mut frame);
        self.enqueue(peer, frame)
    }

    /// From now on, frames sent wait for [`TransportHandle::flush`]: a
    /// caller that sends in bursts (the driver, once per turn) gets each
    /// burst to a peer into one write.
    pub fn cork(&self) {
        self.inner.corked.store(true, Ordering::Release);
    }

    /// Gets every peer's queued frames on their way: written at once where
    /// the connection is idle and the socket takes them, else handed to the
    /// peer's writer task. Never blocks.
    pub fn flush(&self) {
        for peer in self.inner.peers().values() {
            peer.kick();
        }
    }

    /// Every member's id and peer URL, told to a member that joins and
    /// asks (see [`wire::ask_directory`]).
    pub fn set_directory(&self, directory: Vec<(NodeId, String)>) {
        *self
            .inner
            .shared
            .directory
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = directory;
    }

    /// The members to talk to from now on, by id and address: a member a
    /// configuration change added gets a dialer and may connect; one it
    /// removed may no longer connect, and is forgotten (its queue dropped)
    /// after [`REMOVED_PEER_GRACE`], time for the decision that removed it
    /// to reach it; one whose address changed is redialled there. `me` is
    /// skipped.
    pub fn set_peers(&self, wanted: &BTreeMap<NodeId, SocketAddr>) {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let me = inner.shared.me;
        let mut peers = inner
            .peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let moved: Vec<NodeId> = peers
            .iter()
            .filter(|(id, peer)| wanted.get(id).is_some_and(|addr| *addr != peer.addr))
            .map(|(id, _)| *id)
            .collect();
        for id in moved {
            inner.forget_peer(&mut peers, id);
        }
        for id in peers.keys().filter(|id| !wanted.contains_key(id)) {
            let (inner, id) = (Arc::clone(inner), *id);
            inner.runtime.clone().spawn(async move {
                tokio::time::sleep(REMOVED_PEER_GRACE).await;
                if inner.shared.members_now().contains(&id) {
                    return; // added back meanwhile
                }
                let mut peers = inner
                    .peers
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                inner.forget_peer(&mut peers, id);
            });
        }
        let mut dialers = inner.dialers();
        for (id, addr) in wanted {
            if *id == me || peers.contains_key(id) {
                continue;
            }
            let config = &inner.shared.config;
            let peer = Arc::new(Peer {
                id: *id,
                addr: *addr,
                queue: FrameQueue::new(config.queue_frames_max, config.queue_bytes_max),
                counters: PeerCounters::default(),
            });
            let task = inner
                .runtime
                .spawn(run_dialer(Arc::clone(&inner.shared), Arc::clone(&peer)));
            dialers.insert(*id, task);
            peers.insert(*id, peer);
            info!(me, peer = id, %addr, "peer added");
        }
        *inner
            .shared
            .members
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            wanted.keys().copied().filter(|id| *id != me).collect();
    }

    /// Fills in the length prefix of a frame built behind a placeholder and
    /// queues it for `peer` (a full queue drops its oldest frames, counted);
    /// sends it now unless corked.
    fn enqueue(&self, peer: &Peer, mut frame: Vec<u8>) -> Result<(), SendError> {
        let max = self.inner.shared.config.frame_bytes_max;
        let len = frame.len() - wire::LENGTH_PREFIX_BYTES;
        let prefix = match u32::try_from(len) {
            Ok(prefix) if prefix <= max => prefix,
            _ => return Err(SendError::TooLarge { len, max }),
        };
        frame[..wire::LENGTH_PREFIX_BYTES].copy_from_slice(&prefix.to_le_bytes());
        let dropped = peer.queue.push(frame);
        if dropped > 0 {
            debug!(
                peer = peer.id,
                dropped, "peer queue full: dropped oldest frames"
            );
        }
        if !self.inner.corked.load(Ordering::Acquire) {
            peer.kick();
        }
        Ok(())
    }

    /// Frames queued for each peer now.
    pub fn queue_depths(&self) -> BTreeMap<NodeId, usize> {
        self.inner
            .peers()
            .iter()
            .map(|(id, peer)| (*id, peer.queue.depth().0))
            .collect()
    }

    /// A snapshot of every counter.
    pub fn metrics(&self) -> TransportMetrics {
        let inner = &self.inner;
        let peers = inner
            .peers()
            .iter()
            .map(|(id, peer)| {
                let (queue_frames, queue_bytes) = peer.queue.depth();
                let c = &peer.counters;
                let metrics = PeerMetrics {
                    connected: c.connected.load(Ordering::Relaxed),
                    queue_frames,
                    queue_bytes,
                    frames_dropped: peer.queue.dropped_frames(),
                    frames_sent: read(&c.frames_sent),
                    bytes_sent: read(&c.bytes_sent),
                    connects: read(&c.connects),
                    connect_failures: read(&c.connect_failures),
                    write_failures: read(&c.write_failures),
                };
                (*id, metrics)
            })
            .collect();
        let c = &inner.shared.inbound;
        TransportMetrics {
            peers,
            frames_received: read(&c.frames_received),
            bytes_received: read(&c.bytes_received),
            handshakes_refused: read(&c.handshakes_refused),
            connections_busy: read(&c.connections_busy),
            frame_errors: read(&c.frame_errors),
            decode_errors: read(&c.decode_errors),
            misaddressed: read(&c.misaddressed),
        }
    }

    /// The address the listener is bound to (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This member's id.
    pub fn me(&self) -> NodeId {
        self.inner.shared.me
    }

    /// Stops every task and closes every connection and the listener; once
    /// it returns the listen port can be bound again. Later sends fail with
    /// [`SendError::Closed`].
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let mut tasks = std::mem::take(&mut *self.inner.tasks());
        tasks.extend(std::mem::take(&mut *self.inner.dialers()).into_values());
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            // Cancelled tasks report a JoinError; nothing else to learn.
            let _ = task.await;
        }
        info!(me = self.inner.shared.me, "peer transport stopped");
    }
}

/// What the handle owns; dropping it stops the tasks.
#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    /// The members talked to; changed only by [`TransportHandle::set_peers`].
    peers: RwLock<BTreeMap<NodeId, Arc<Peer>>>,
    local_addr: SocketAddr,
    closed: AtomicBool,
    /// Sends wait for `flush` (see [`TransportHandle::cork`]).
    corked: AtomicBool,
    /// The listener's task.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Each peer's dialer task.
    dialers: Mutex<BTreeMap<NodeId, JoinHandle<()>>>,
    /// Where dialers of members added later run.
    runtime: tokio::runtime::Handle,
}

impl Inner {
    fn tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn dialers(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, JoinHandle<()>>> {
        self.dialers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn peers(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<NodeId, Arc<Peer>>> {
        self.peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops talking to `id`: its dialer, queue and inbound connection go.
    fn forget_peer(&self, peers: &mut BTreeMap<NodeId, Arc<Peer>>, id: NodeId) {
        if peers.remove(&id).is_none() {
            return;
        }
        if let Some(task) = self.dialers().remove(&id) {
            task.abort();
        }
        if let Some((_, connection)) = self.shared.authenticated().remove(&id) {
            connection.notify_one();
        }
        info!(me = self.shared.me, peer = id, "peer forgotten");
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks().iter() {
            task.abort();
        }
    }
}

/// State the tasks share.
#[derive(Debug)]
struct Shared {
    me: NodeId,
    token: Vec<u8>,
    /// Who may connect: the members of the configuration in force.
    members: RwLock<BTreeSet<NodeId>>,
    /// Every member's id and peer URL, for a member joining.
    directory: RwLock<Vec<(NodeId, String)>>,
    config: TransportConfig,
    inbound_tx: mpsc::Sender<Frame>,
    inbound: InboundCounters,
    /// The current inbound connection of each member, so a newer one (the
    /// peer restarted or redialled) retires the older: at most one per
    /// member.
    authenticated: Mutex<HashMap<NodeId, (u64, Arc<Notify>)>>,
    connection_serial: AtomicU64,
}

impl Shared {
    /// Who may connect now.
    fn members_now(&self) -> BTreeSet<NodeId> {
        self.members
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn authenticated(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, (u64, Arc<Notify>)>> {
        self.authenticated
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One peer's outbound side.
#[derive(Debug)]
struct Peer {
    id: NodeId,
    addr: SocketAddr,
    queue: FrameQueue,
    counters: PeerCounters,
}

impl Peer {
    /// See [`FrameQueue::kick`]; counts what went out directly.
    fn kick(&self) {
        let written = self.queue.kick();
        if written.frames > 0 {
            self.sent(written.frames, written.bytes);
        }
    }

    /// Counts frames and bytes written to the peer's socket, by either
    /// writer.
    fn sent(&self, frames: usize, bytes: usize) {
        self.counters
            .frames_sent
            .fetch_add(frames as u64, Ordering::Relaxed);
        self.counters
            .bytes_sent
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------ outbound

/// Exponential backoff with "equal jitter": each delay is drawn from
/// [base/2, base], and base doubles up to the maximum. The jitter keeps
/// members that lost a peer at the same moment from redialling in step.
struct Backoff {
    base_ms: u64,
    min_ms: u64,
    max_ms: u64,
    rng: u64,
}

impl Backoff {
    fn new(min_ms: u64, max_ms: u64, seed: u64) -> Self {
        Backoff {
            base_ms: min_ms,
            min_ms,
            max_ms,
            rng: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.base_ms = self.min_ms;
    }

    fn next_delay(&mut self) -> Duration {
        // xorshift64: jitter needs spread, not secrecy.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = self.base_ms / 2;
        let delay_ms = half + self.rng % (self.base_ms - half + 1);
        self.base_ms = self.base_ms.saturating_mul(2).min(self.max_ms);
        Duration::from_millis(delay_ms)
    }
}

fn jitter_seed(me: NodeId, peer: NodeId) -> u64 {
    let mut seed = [0u8; 8];
    match getrandom::fill(&mut seed) {
        Ok(()) => u64::from_le_bytes(seed),
        // Without OS randomness, members still differ by id.
        Err(_) => me.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ peer,
    }
}

/// Keeps one peer connected and drains its queue into the connection.
async fn run_dialer(shared: Arc<Shared>, peer: Arc<Peer>) {
    let config = &shared.config;
    let mut backoff = Backoff::new(
        config.reconnect_backoff_ms_min,
        config.reconnect_backoff_ms_max,
        jitter_seed(shared.me, peer.id),
    );
    let handshake_timeout = Duration::from_millis(config.handshake_timeout_ms);
    // Log the first failure of a streak loudly, the rest quietly.
    let mut failing = false;
    loop {
        let dialed = tokio::time::timeout(handshake_timeout, dial(&shared, &peer)).await;
        match dialed {
            Ok(Ok(stream)) => {
                backoff.reset();
                failing = false;
                bump(&peer.counters.connects);
                peer.counters.connected.store(true, Ordering::Relaxed);
                info!(me = shared.me, peer = peer.id, addr = %peer.addr, "connected to peer");
                let ended = pump(&shared, &peer, stream).await;
                peer.counters.connected.store(false, Ordering::Relaxed);
                warn!(me = shared.me, peer = peer.id, reason = %ended, "lost connection to peer");
            }
            Ok(Err(error)) => {
                bump(&peer.counters.connect_failures);
                if config.drop_queue_when_unreachable {
                    peer.queue.clear();
                }
                if failing {
                    debug!(me = shared.me, peer = peer.id, addr = %peer.addr, %error, "cannot reach peer");
                } else {
                    warn!(me = shared.me, peer = peer.id, addr = %peer.addr, %error, "cannot reach peer");
                }
                failing = true;
            }
            Err(_) => {
                bump(&peer.counters.connect_failures);
                if !failing {
                    warn!(me = shared.me, peer = peer.id, addr = %peer.addr, "peer dial timed out");
                }
                failing = true;
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Why a dial failed.
#[derive(Debug, Error)]
enum DialError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("handshake: {0}")]
    Handshake(#[from] wire::HandshakeError),
}

async fn dial(shared: &Shared, peer: &Peer) -> Result<TcpStream, DialError> {
    let mut stream = TcpStream::connect(peer.addr)
        .await
        .map_err(DialError::Connect)?;
    // Paxos messages are small and latency-bound.
    stream.set_nodelay(true).map_err(DialError::Connect)?;
    wire::dial(&mut stream, shared.me, peer.id, &shared.token).await?;
    Ok(stream)
}

/// Why an outbound connection ended.
#[derive(Debug, Error)]
enum PumpEnd {
    #[error("peer closed the connection")]
    ClosedByPeer,
    #[error("peer sent data on a send-only connection")]
    UnexpectedData,
    #[error("write failed: {0}")]
    Write(std::io::Error),
    #[error("write stalled beyond the write timeout")]
    WriteTimeout,
}

/// Writes queued frames until the connection fails, taking turns with
/// direct writes by senders (see [`FrameQueue::kick`]). Also watches the
/// read side: the acceptor never writes after the handshake, so any read
/// result means the connection is gone (or broken), and the dialer redials
/// at once rather than finding out on the next write.
async fn pump(shared: &Shared, peer: &Peer, stream: TcpStream) -> PumpEnd {
    let stream = Arc::new(stream);
    peer.queue.attach(Arc::clone(&stream));
    // Detached however the pump ends, aborted included: the queue must not
    // keep a closed transport's connection open, nor write into it.
    let _attached = Attached(&peer.queue);
    pump_attached(shared, peer, &stream).await
}

/// Detaches the connection from the queue when dropped.
struct Attached<'a>(&'a FrameQueue);

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.0.detach();
    }
}

async fn pump_attached(shared: &Shared, peer: &Peer, stream: &TcpStream) -> PumpEnd {
    let config = &shared.config;
    let write_timeout = Duration::from_millis(config.write_timeout_ms);
    let mut out: Vec<u8> = Vec::with_capacity(64 << 10);
    loop {
        // Drain first: frames queued while disconnected go out now, and a
        // wake-up consumed by a previous connection is not needed.
        loop {
            out.clear();
            let frames = peer
                .queue
                .take_for_writer(&mut out, config.write_batch_frames_max);
            if out.is_empty() {
                break;
            }
            match tokio::time::timeout(write_timeout, write_all(stream, &out)).await {
                Ok(Ok(())) => peer.sent(frames, out.len()),
                Ok(Err(error)) => {
                    bump(&peer.counters.write_failures);
                    return PumpEnd::Write(error);
                }
                Err(_) => {
                    bump(&peer.counters.write_failures);
                    return PumpEnd::WriteTimeout;
                }
            }
            // Keep one huge frame from pinning its buffer.
            if out.capacity() > 1 << 20 {
                out = Vec::with_capacity(64 << 10);
            }
        }
        tokio::select! {
            () = peer.queue.ready() => {}
            ended = closed(stream) => return ended,
        }
    }
}

/// Writes all of `buf` through a socket shared with direct writers (who
/// only write while the queue says nobody else does).
async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Resolves when the send-only connection shows any sign from the other
/// side: a close, unexpected bytes, or an error.
async fn closed(stream: &TcpStream) -> PumpEnd {
    let mut probe = [0u8; 1];
    loop {
        if let Err(error) = stream.readable().await {
            return PumpEnd::Write(error);
        }
        match stream.try_read(&mut probe) {
            Ok(0) => return PumpEnd::ClosedByPeer,
            Ok(_) => return PumpEnd::UnexpectedData,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return PumpEnd::Write(error),
        }
    }
}

// ------------------------------------------------------------------- inbound

/// Accepts peers' connections; each gets its own task, all owned here so
/// they end with the listener.
async fn run_listener(listener: TcpListener, shared: Arc<Shared>) {
    let pending = Arc::new(Semaphore::new(shared.config.handshakes_pending_max));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so their results do not pile up.
        while connections.try_join_next().is_some() {}
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let Ok(permit) = Arc::clone(&pending).try_acquire_owned() else {
                        bump(&shared.inbound.connections_busy);
                        warn!(me = shared.me, %addr, "too many pending peer handshakes: closing connection");
                        continue;
                    };
                    connections.spawn(serve_inbound(Arc::clone(&shared), stream, addr, permit));
                }
                Err(error) => {
                    // Typically out of file descriptors: wait rather than spin.
                    warn!(me = shared.me, %error, "peer accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Removes a member's connection from the registry when its task ends,
/// unless a newer connection already replaced it.
struct Registered<'a> {
    shared: &'a Shared,
    peer: NodeId,
    serial: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut authenticated = self.shared.authenticated();
        if authenticated
            .get(&self.peer)
            .is_some_and(|(serial, _)| *serial == self.serial)
        {
            authenticated.remove(&self.peer);
        }
    }
}

/// Authenticates one inbound connection, then delivers its envelopes to the
/// core until it ends. Any error ends this connection only.
async fn serve_inbound(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    addr: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let me = shared.me;
    // Not fatal: only latency suffers.
    let _ = stream.set_nodelay(true);
    let timeout = Duration::from_millis(shared.config.handshake_timeout_ms);
    let members = shared.members_now();
    let handshake = wire::accept(&mut stream, me, &members, &shared.token);
    let peer = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(wire::Dialer::Member(peer))) => peer,
        Ok(Ok(wire::Dialer::Newcomer)) => {
            let directory = shared
                .directory
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone();
            let frame = wire::encode_directory(&directory);
            let sent = wire::write_frame(&mut stream, &frame).await;
            info!(me, %addr, ok = sent.is_ok(), "told a joining member the directory");
            return;
        }
        Ok(Err(error)) => {
            bump(&shared.inbound.handshakes_refused);
            warn!(me, %addr, %error, "refused peer connection");
            return;
        }
        Err(_) => {
            bump(&shared.inbound.handshakes_refused);
            warn!(me, %addr, "refused peer connection: handshake timed out");
            return;
        }
    };
    drop(permit);

    let serial = shared.connection_serial.fetch_add(1, Ordering::Relaxed);
    let retire = Arc::new(Notify::new());
    let previous = shared
        .authenticated()
        .insert(peer, (serial, Arc::clone(&retire)));
    if let Some((_, older)) = previous {
        older.notify_one();
    }
    let _registered = Registered {
        shared: &shared,
        peer,
        serial,
    };
    info!(me, peer, %addr, "peer connected");

    // Frames arrive in bursts: one read takes many.
    let mut stream = tokio::io::BufReader::with_capacity(64 << 10, stream);
    let mut buf = Vec::new();
    loop {
        let frame = tokio::select! {
            frame = wire::read_frame(&mut stream, shared.config.frame_bytes_max, &mut buf) => frame,
            () = retire.notified() => {
                debug!(me, peer, %addr, "older connection retired by a newer one");
                return;
            }
        };
        match frame {
            Ok(()) => {}
            Err(wire::FrameError::Closed) => {
                info!(me, peer, %addr, "peer disconnected");
                return;
            }
            Err(error) => {
                bump(&shared.inbound.frame_errors);
                warn!(me, peer, %addr, %error, "closing peer connection: bad frame");
                return;
            }
        }
        let frame = match decode_frame(&buf) {
            Ok(frame) => frame,
            Err(error) => {
                bump(&shared.inbound.decode_errors);
                warn!(me, peer, %addr, %error, "closing peer connection: undecodable frame");
                return;
            }
        };
        if frame.from() != peer || frame.to() != me {
            bump(&shared.inbound.misaddressed);
            warn!(
                me,
                peer,
                %addr,
                from = frame.from(),
                to = frame.to(),
                "closing peer connection: frame does not match the connection"
            );
            return;
        }
        // Counted before delivery, so whoever holds the frame sees it
        // counted.
        bump(&shared.inbound.frames_received);
        shared
            .inbound
            .bytes_received
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        // Waits while the core is behind: the socket stops being read and
        // the sender's bounded queue absorbs (and sheds) the excess.
        if shared.inbound_tx.send(frame).await.is_err() {
            debug!(me, "core stopped receiving; closing peer connection");
            return;
        }
        // Keep one huge frame from pinning its buffer for the connection's
        // life.
        if buf.capacity() > 1 << 20 {
            buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_within_bounds_and_resets() {
        let mut backoff = Backoff::new(50, 1_000, 7);
        let mut last_base = 0;
        for _ in 0..20 {
            let base = backoff.base_ms;
            let delay = backoff.next_delay().as_millis() as u64;
            assert!(
                delay >= base / 2 && delay <= base,
                "{delay} outside [{}, {base}]",
                base / 2
            );
            assert!(base >= last_base && base <= 1_000);
            last_base = base;
        }
        assert_eq!(backoff.base_ms, 1_000);
        backoff.reset();
        assert_eq!(backoff.base_ms, 50);
    }

    #[test]
    fn config_refuses_empty_token_and_zero_bounds() {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let config = TransportConfig::new(1, addr, BTreeMap::new(), "");
        assert!(matches!(config.validate(), Err(StartError::EmptyToken)));
        let mut config = TransportConfig::new(1, addr, BTreeMap::new(), "t");
        assert!(config.validate().is_ok());
        config.queue_frames_max = 0;
        assert!(matches!(
            config.validate(),
            Err(StartError::Zero("queue_frames_max"))
        ));
        let mut config = TransportConfig::new(1, addr, BTreeMap::new(), "t");
        config.queue_bytes_max = 10;
        assert!(matches!(
            config.validate(),
            Err(StartError::QueueSmallerThanFrame { .. })
        ));
        assert!(
            !format!("{config:?}").contains("\"t\""),
            "token must not be printed"
        );
    }
}
