//! The driver: the IO around one [`Member`]. It runs on a thread of its
//! own, hands the member client requests, peer messages, ticks and the
//! clocks, and carries out each [`Ready`] with the log file, the peer
//! connections and the client channels. Every decision is the member's;
//! the driver owns only sockets, files and threads.
//!
//! Each turn takes every input that is ready (bounded), so that the turn's
//! client commands share slots, then carries out the member's stages in
//! order: a stage's `now` effects leave, its records are appended and (if
//! a barrier is among them) made durable with one fsync, right here, and
//! only then do its `after` effects go out.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::WatchResponse;
use member::wire::Frame;
use member::{Checkpoint, Clock, Effect, Member, MemberError, PeerMessage, Ready, Reply, Request};
use paxos::NodeId;
use paxos::multi::Envelope;
use storage::SnapshotSender;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::disk::{Disk, Saved, SavedSender};
use super::metrics::NodeMetrics;
use crate::transport::TransportHandle;

/// Inputs taken in one turn at most, so a flood cannot starve the flush.
const TURN_INPUTS_MAX: usize = 1024;
/// Bytes per snapshot chunk sent to a lagging member.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Responses a watch session may have queued before its watches are
/// cancelled as too slow.
pub const WATCH_QUEUE_RESPONSES_MAX: usize = 4096;

/// Where a request's answer goes.
pub type ReplyTx = oneshot::Sender<Result<Reply, MemberError>>;
/// A read-only look at the member (status, serializable reads, hashes).
pub type QueryFn = Box<dyn FnOnce(&Member<ReplyTx>) + Send>;

/// Watch responses of one driver turn, each with its session and the
/// session's queue, for the delivery task (see [`deliver_watch_responses`]).
pub type WatchBatch = Vec<(u64, mpsc::Sender<WatchResponse>, WatchResponse)>;

/// A request for the driver.
pub enum Input {
    /// A client request for the member, answered on `reply`.
    Request {
        /// The request.
        request: Request,
        /// Where the answer goes.
        reply: ReplyTx,
    },
    /// A read-only look at the member.
    Query(QueryFn),
    /// A new watch session whose responses go to `queue`; its id on `reply`.
    WatchOpen {
        /// The session's queue.
        queue: mpsc::Sender<WatchResponse>,
        /// Where the session id goes.
        reply: oneshot::Sender<u64>,
    },
    /// A watch for a session.
    WatchCreate {
        /// The session.
        session: u64,
        /// The watch.
        request: kv::WatchCreateRequest,
    },
    /// Cancels one of a session's watches.
    WatchCancel {
        /// The session.
        session: u64,
        /// The watch.
        watch_id: i64,
    },
    /// A progress request of a session.
    WatchProgress {
        /// The session.
        session: u64,
    },
    /// The session is gone (closed by its client, or too slow).
    WatchClose {
        /// The session.
        session: u64,
    },
}

/// What woke the driver.
enum Woken {
    Tick,
    Input(Input),
    Frame(Frame),
    Saved(Result<Saved, String>),
}

/// Queues a message on its peer's connection; a peer out of reach is the
/// protocol's to live with.
fn send(transport: &TransportHandle, envelope: &Envelope) {
    if let Err(e) = transport.send(envelope) {
        debug!(%e, to = envelope.to, "send failed");
    }
}

/// The driver's state: the member, and the IO it is carried out with.
pub struct Driver {
    member: Member<ReplyTx>,
    disk: Disk,
    transport: TransportHandle,
    metrics: Arc<NodeMetrics>,
    /// The monotonic clock's zero.
    started: Instant,
    /// When the snapshot being saved was handed to the background thread.
    saving_since: Option<Instant>,
    /// Where the background thread reports, and (until `run` takes it) where
    /// the reports arrive.
    saved_tx: SavedSender,
    saved_rx: Option<mpsc::UnboundedReceiver<Result<Saved, String>>>,
    rng: u64,
    watch_sessions: HashMap<u64, mpsc::Sender<WatchResponse>>,
    next_watch_session: u64,
    /// Watch responses of this turn, handed to the delivery task at its end.
    watch_outbox: WatchBatch,
    /// Where they go: a task on the runtime that puts them on their
    /// sessions' queues (see [`deliver_watch_responses`]).
    watch_delivery: mpsc::UnboundedSender<WatchBatch>,
    /// The member table the transport was last told of.
    known_members: Vec<kv::ClusterMember>,
    /// When a configuration change removed this member: it stops
    /// [`REMOVED_STOP_DELAY`] later, once its answers (to the `member
    /// remove` itself, say) are out.
    removed_at: Option<Instant>,
}

/// How long a member removed from the cluster goes on before it stops.
const REMOVED_STOP_DELAY: Duration = Duration::from_secs(1);

/// Each member's id and address, from its peer URLs.
fn peers_of(table: &[kv::ClusterMember]) -> BTreeMap<NodeId, SocketAddr> {
    table
        .iter()
        .filter_map(|m| {
            let addr = m.peer_urls.iter().find_map(|url| peer_addr(url));
            if addr.is_none() {
                warn!(member = m.id, urls = ?m.peer_urls, "no address in a member's peer URLs");
            }
            addr.map(|addr| (m.id, addr))
        })
        .collect()
}

/// Each member's id and first peer URL: what a joining member is told.
fn directory_of(table: &[kv::ClusterMember]) -> Vec<(NodeId, String)> {
    table
        .iter()
        .filter_map(|m| m.peer_urls.first().map(|url| (m.id, url.clone())))
        .collect()
}

/// The address a peer URL names (`http://127.0.0.1:2380`): an IP literal,
/// or a name resolved once here.
pub fn peer_addr(url: &str) -> Option<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.trim_end_matches('/');
    if let Ok(addr) = host_port.parse() {
        return Some(addr);
    }
    std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()?
        .next()
}

impl Driver {
    /// A driver over a member and its recovered disk.
    pub fn new(
        member: Member<ReplyTx>,
        disk: Disk,
        transport: TransportHandle,
        metrics: Arc<NodeMetrics>,
        seed: u64,
        watch_delivery: mpsc::UnboundedSender<WatchBatch>,
    ) -> Self {
        let (saved_tx, saved_rx) = mpsc::unbounded_channel();
        // A turn's messages to each peer leave together, at the barrier or
        // at the end of the turn (`flush`), written from this thread.
        transport.cork();
        let known_members = member.members().to_vec();
        transport.set_directory(directory_of(&known_members));
        if !known_members.is_empty() {
            // A member that joined and restarts from a snapshot has its
            // peers in the table only.
            transport.set_peers(&peers_of(&known_members));
        }
        let mut driver = Driver {
            removed_at: None,
            known_members,
            member,
            disk,
            transport,
            metrics,
            started: Instant::now(),
            saving_since: None,
            saved_tx,
            saved_rx: Some(saved_rx),
            rng: seed | 1,
            watch_sessions: HashMap::new(),
            next_watch_session: 1,
            watch_outbox: Vec::new(),
            watch_delivery,
        };
        driver.set_clock();
        driver
    }

    fn random(&mut self) -> u64 {
        // Seeded from the OS: the randomness handed to the core with each
        // tick.
        member::splitmix64(&mut self.rng)
    }

    /// Hands the member the monotonic clock: deadlines, and the replicated
    /// time leases are measured by. Never the wall clock.
    fn set_clock(&mut self) {
        let clock = Clock {
            mono_ms: self.started.elapsed().as_millis() as u64,
        };
        self.member.set_clock(clock);
    }

    /// Runs until every input channel closes or storage fails.
    pub async fn run(
        mut self,
        tick: Duration,
        mut inputs: mpsc::Receiver<Input>,
        mut peers: mpsc::Receiver<Frame>,
    ) -> Result<(), String> {
        // Replay what recovery handed back before serving anything.
        self.flush()?;
        let Some(mut saved) = self.saved_rx.take() else {
            return Err("the driver runs once".into());
        };
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let woken = tokio::select! {
                _ = ticker.tick() => Woken::Tick,
                input = inputs.recv() => match input {
                    Some(input) => Woken::Input(input),
                    None => return Ok(()),
                },
                Some(frame) = peers.recv() => Woken::Frame(frame),
                Some(result) = saved.recv() => Woken::Saved(result),
            };
            self.set_clock();
            match woken {
                Woken::Tick => self.tick(),
                Woken::Input(input) => self.input(input),
                Woken::Frame(frame) => self.frame(frame)?,
                Woken::Saved(result) => self.snapshot_saved(result)?,
            }
            // Let the other tasks of this thread (peer readers, the client
            // connections served here) hand in what has arrived, so that it
            // shares this turn's slots and fsync.
            tokio::task::yield_now().await;
            for _ in 0..TURN_INPUTS_MAX {
                let mut progressed = false;
                if let Ok(input) = inputs.try_recv() {
                    self.input(input);
                    progressed = true;
                }
                // Forwarded proposals too: one fsync covers a turn's worth.
                if let Ok(frame) = peers.try_recv() {
                    self.frame(frame)?;
                    progressed = true;
                }
                if !progressed {
                    break;
                }
            }
            self.flush()?;
        }
    }

    fn tick(&mut self) {
        let random = self.random();
        self.member.tick(random);
        self.metrics
            .observe(self.member.replica(), self.member.counters());
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Request { request, reply } => self.member.request(reply, request),
            Input::Query(look) => look(&self.member),
            Input::WatchOpen { queue, reply } => {
                let session = self.next_watch_session;
                self.next_watch_session += 1;
                self.watch_sessions.insert(session, queue);
                let _ = reply.send(session);
            }
            Input::WatchCreate { session, request } => self.member.watch_create(session, &request),
            Input::WatchCancel { session, watch_id } => self.member.watch_cancel(session, watch_id),
            Input::WatchProgress { session } => self.member.watch_progress(session),
            Input::WatchClose { session } => {
                self.watch_sessions.remove(&session);
                self.member.close_watch_session(session);
            }
        }
    }

    /// A frame from a peer: snapshot chunks are reassembled on disk here,
    /// the rest is the member's.
    fn frame(&mut self, frame: Frame) -> Result<(), String> {
        let (from, message) = match frame {
            Frame::Paxos(envelope) => {
                self.member.step(envelope);
                return Ok(());
            }
            Frame::Peer { from, message, .. } => (from, message),
        };
        match message {
            PeerMessage::Chunk(chunk) => {
                let applied = self.member.replica().commit_index();
                if let Some(snapshot) = self.disk.receive(&chunk, applied)? {
                    self.member
                        .install_snapshot(from, snapshot.index, &snapshot.data)?;
                }
            }
            other => self.member.receive(from, other),
        }
        Ok(())
    }

    /// Carries out the member's [`Ready`], stage by stage: persist before
    /// send (see `member::ready`).
    fn flush(&mut self) -> Result<(), String> {
        let Ready { stages, checkpoint } = self.member.ready();
        for stage in stages {
            for effect in stage.now {
                self.effect(effect)?;
            }
            if stage.sync {
                // What may leave before the barrier leaves now, so that
                // peers work while this member syncs.
                self.transport.flush();
                let micros = self.disk.persist(&stage.records)?;
                self.metrics.fsync(micros);
            } else if !stage.records.is_empty() {
                self.disk.append(&stage.records)?;
            }
            for effect in stage.after {
                self.effect(effect)?;
            }
        }
        self.transport.flush();
        self.deliver_watches();
        self.follow_membership()?;
        match checkpoint {
            Some(checkpoint) => self.checkpoint(checkpoint),
            None => Ok(()),
        }
    }

    fn effect(&mut self, effect: Effect<ReplyTx>) -> Result<(), String> {
        match effect {
            Effect::Send(envelope) => send(&self.transport, &envelope),
            Effect::Peer { to, message } => {
                if let Err(e) = self.transport.send_peer(to, &message) {
                    debug!(%e, to, "peer message not sent");
                }
            }
            Effect::Reply { token, result } => {
                let _ = token.send(result);
            }
            Effect::Watch { session, response } => {
                if let Some(queue) = self.watch_sessions.get(&session)
                    && !self.watch_delivery.is_closed()
                {
                    self.watch_outbox.push((session, queue.clone(), response));
                }
            }
            // Observed by the simulator only; the server does not ask.
            Effect::Applied { .. } => {}
            Effect::SendSnapshot { to, min_slot } => {
                if let Some(snapshot) = self.disk.latest_snapshot_from(min_slot)? {
                    let sender =
                        SnapshotSender::new(snapshot.index, snapshot.data, SNAPSHOT_CHUNK_BYTES);
                    info!(
                        to,
                        slot = snapshot.index,
                        "sending a snapshot to a lagging member"
                    );
                    for chunk in sender.chunks_from(0) {
                        let _ = self.transport.send_peer(to, &PeerMessage::Chunk(chunk));
                        // Each chunk on its way before the next is queued:
                        // a whole snapshot may exceed the queue's bound.
                        self.transport.flush();
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands this turn's watch responses to the delivery task.
    /// After a configuration change the transport talks to the members of
    /// the new table; a member the change removed stops, as etcd's do.
    fn follow_membership(&mut self) -> Result<(), String> {
        if self
            .removed_at
            .is_some_and(|at| at.elapsed() >= REMOVED_STOP_DELAY)
        {
            return Err("the member has been permanently removed from the cluster".into());
        }
        let table = self.member.members();
        if table == self.known_members.as_slice() {
            return Ok(());
        }
        let me = self.member.id();
        let was_member = self.known_members.iter().any(|m| m.id == me);
        self.known_members = table.to_vec();
        if was_member && !table.iter().any(|m| m.id == me) {
            warn!("removed from the cluster: stopping");
            self.removed_at = Some(Instant::now());
        }
        info!(
            members = table.len(),
            "the configuration changed; peers follow it"
        );
        self.transport.set_peers(&peers_of(table));
        self.transport.set_directory(directory_of(table));
        Ok(())
    }

    fn deliver_watches(&mut self) {
        if self.watch_outbox.is_empty() {
            return;
        }
        let _ = self
            .watch_delivery
            .send(std::mem::take(&mut self.watch_outbox));
    }

    /// Saves the member's checkpoint on the background thread. The member
    /// has dropped its in-memory log up to the slot; the disk's copy for
    /// trimming goes too, and the log file keeps those slots until the
    /// image is durable.
    fn checkpoint(&mut self, checkpoint: Checkpoint) -> Result<(), String> {
        let Checkpoint {
            slot,
            image,
            compacted,
        } = checkpoint;
        let mirrored = self.disk.mark(slot);
        self.disk.discard(Box::new((compacted, mirrored)));
        self.disk.release_memory();
        self.disk.save_snapshot(
            slot,
            Box::new(move |sink| image.write_snapshot(sink)),
            self.saved_tx.clone(),
        )?;
        self.saving_since = Some(Instant::now());
        Ok(())
    }

    /// The background thread saved a snapshot (or failed to: storage errors
    /// stop the node): the log before it goes.
    fn snapshot_saved(&mut self, result: Result<Saved, String>) -> Result<(), String> {
        let saved = result?;
        self.member.snapshot_saved();
        let since = self.saving_since.take().map(|t| t.elapsed());
        let started = Instant::now();
        self.disk.trim(saved.slot, self.saved_tx.clone())?;
        let trimmed = started.elapsed();
        self.disk.release_memory();
        info!(
            slot = saved.slot,
            bytes = saved.bytes,
            total_ms = since.map_or(0, |d| d.as_millis() as u64),
            encode_ms = saved.encode.as_millis() as u64,
            write_ms = saved.write.as_millis() as u64,
            paused_ms = saved.paused.as_millis() as u64,
            trim_ms = trimmed.as_millis() as u64,
            "snapshot saved, log trimmed"
        );
        Ok(())
    }
}

/// Puts watch responses on their sessions' queues, in the order the driver
/// produced them. A session too slow to take them is closed whole (the
/// driver is asked to): its stream ends with "server stopped" and etcd's
/// clients reconnect and resume from their last revision, so nothing is
/// lost silently. Runs until the driver drops its sender.
pub async fn deliver_watch_responses(
    mut batches: mpsc::UnboundedReceiver<WatchBatch>,
    driver: mpsc::Sender<Input>,
) {
    let mut closing: Vec<u64> = Vec::new();
    while let Some(batch) = batches.recv().await {
        for (session, queue, response) in batch {
            if closing.contains(&session) || queue.try_send(response).is_ok() {
                continue;
            }
            warn!(session, "watch session too slow or gone: closing it");
            closing.push(session);
            let _ = driver.send(Input::WatchClose { session }).await;
        }
        closing.clear();
    }
}
