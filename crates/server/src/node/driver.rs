//! The driver: one task, on a thread of its own, that owns the protocol
//! core, the state machine and the log, feeds them messages, ticks and
//! client requests, and carries out what the core asks, persists first.
//!
//! Each turn takes every input that is ready (bounded), queues the turn's
//! client commands so that they share slots, then flushes the core's
//! outputs in order: records before a barrier are appended together and
//! made durable with one fsync, right here, and only then do the sends,
//! applies and replies after them go out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::{ApplyContext, KvError, LeaseId, SessionOutcome, Store, WatchHub, WatchResponse};
use paxos::NodeId;
use paxos::multi::{
    Command, Envelope, Message, Output, ProposeError, ReadId, Record, Replica, Value,
};
use storage::SnapshotSender;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::disk::{Disk, Saved, SavedSender};
use super::forward::Forward;
use super::held::HeldDecisions;
use super::metrics::NodeMetrics;
use crate::api::ApiError;
use crate::transport::TransportHandle;

/// Inputs taken in one turn at most, so a flood cannot starve the flush.
const TURN_INPUTS_MAX: usize = 1024;
/// Bytes per snapshot chunk sent to a lagging member.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// Responses a watch session may have queued before its watches are
/// cancelled as too slow.
pub const WATCH_QUEUE_RESPONSES_MAX: usize = 4096;
/// Lease expiries proposed per tick at most.
const EXPIRE_LEASES_PER_TICK_MAX: usize = 64;

/// Serves a linearizable read once the store may answer it.
pub type ReadFn = Box<dyn FnOnce(Result<&Store, ApiError>) + Send>;
/// Runs inside the driver with full access (status, watches, local reads).
pub type LocalFn = Box<dyn FnOnce(&mut Driver) + Send>;

/// Queues a message on its peer's connection; a peer out of reach is the
/// protocol's to live with.
fn send(transport: &TransportHandle, envelope: &Envelope) {
    if let Err(e) = transport.send(envelope) {
        debug!(%e, to = envelope.to, "send failed");
    }
}

/// Watch responses of one driver turn, each with its session and the
/// session's queue, for the delivery task (see [`deliver_watch_responses`]).
pub type WatchBatch = Vec<(u64, mpsc::Sender<WatchResponse>, WatchResponse)>;

/// A request for the driver.
pub enum Input {
    /// Replicate a command and answer with its result once applied.
    Propose {
        /// The command.
        command: kv::Command,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<kv::Response, ApiError>>,
    },
    /// A linearizable read.
    Read(ReadFn),
    /// Anything else, run against the driver's state.
    Local(LocalFn),
}

struct Waiter {
    reply: oneshot::Sender<Result<kv::Response, ApiError>>,
    deadline: Instant,
    /// The leader the command was handed to, if not proposed here, and the
    /// command, to hand it to the next leader if that one is gone. Handing
    /// it on twice is safe: the store applies a `(client, seq)` once.
    forwarded: Option<(NodeId, Vec<u8>)>,
}

enum ReadWaiter {
    /// A read of ours, served here.
    Local(ReadFn, Instant),
    /// A follower's read-index request.
    Remote { from: NodeId, id: u64 },
}

/// The driver's state. Fields are visible to the node module, whose
/// [`LocalFn`]s read them.
pub struct Driver {
    pub(super) me: NodeId,
    pub(super) replica: Replica,
    pub(super) store: Store,
    pub(super) hub: WatchHub,
    disk: Disk,
    transport: TransportHandle,
    pub(super) metrics: Arc<NodeMetrics>,
    request_timeout: Duration,
    /// Applied commands between snapshots.
    snapshot_count: u64,
    /// Commands applied since the last snapshot (or start).
    applied_since_snapshot: u64,
    /// A snapshot is being encoded and saved on the background thread.
    saving: Option<Saving>,
    /// Where the background thread reports, and (until `run` takes it) where
    /// the reports arrive.
    saved_tx: SavedSender,
    saved_rx: Option<mpsc::UnboundedReceiver<Result<Saved, String>>>,
    rng: u64,
    writes: HashMap<(u64, u64), Waiter>,
    reads: HashMap<ReadId, ReadWaiter>,
    remote_reads: HashMap<u64, (ReadFn, Instant)>,
    reads_at_index: BTreeMap<u64, Vec<ReadFn>>,
    next_read: u64,
    pub(super) watch_sessions: HashMap<u64, mpsc::Sender<WatchResponse>>,
    /// Watch responses of this turn, handed to the delivery task at its end.
    watch_outbox: WatchBatch,
    /// Where they go: a task on the runtime that puts them on their
    /// sessions' queues (see [`deliver_watch_responses`]).
    watch_delivery: mpsc::UnboundedSender<WatchBatch>,
    pub(super) watch_owner: HashMap<i64, u64>,
    pub(super) next_watch_session: u64,
    expiring: HashMap<LeaseId, Instant>,
    /// Our advertised client URLs, told to peers now and then.
    client_urls: Vec<String>,
    /// The last slot applied to `store`: applies come strictly in order.
    applied_slot: u64,
    /// Each peer's client URLs, as it last told us.
    pub(super) peer_client_urls: HashMap<NodeId, Vec<String>>,
    ticks: u64,
    /// Decisions for peers held back (see `held.rs`).
    held: HeldDecisions,
    /// Commands peers handed us that are not applied yet: each of those
    /// peers waits for the decision to answer its client, so while any is
    /// in flight no decision is held back.
    forwarded: HashSet<(u64, u64)>,
}

impl Driver {
    /// A driver over a recovered replica and store.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        me: NodeId,
        replica: Replica,
        store: Store,
        disk: Disk,
        transport: TransportHandle,
        metrics: Arc<NodeMetrics>,
        request_timeout: Duration,
        snapshot_count: u64,
        seed: u64,
        watch_delivery: mpsc::UnboundedSender<WatchBatch>,
    ) -> Self {
        let (saved_tx, saved_rx) = mpsc::unbounded_channel();
        // A turn's messages to each peer leave together, at the barrier or
        // at the end of the turn (`flush`), written from this thread.
        transport.cork();
        Driver {
            me,
            applied_slot: replica.snapshot_slot(),
            replica,
            store,
            hub: WatchHub::new(),
            disk,
            transport,
            metrics,
            request_timeout,
            snapshot_count,
            applied_since_snapshot: 0,
            saving: None,
            saved_tx,
            saved_rx: Some(saved_rx),
            rng: seed | 1,
            writes: HashMap::new(),
            reads: HashMap::new(),
            remote_reads: HashMap::new(),
            reads_at_index: BTreeMap::new(),
            next_read: 1,
            watch_sessions: HashMap::new(),
            watch_outbox: Vec::new(),
            watch_delivery,
            watch_owner: HashMap::new(),
            next_watch_session: 1,
            expiring: HashMap::new(),
            client_urls: Vec::new(),
            peer_client_urls: HashMap::new(),
            ticks: 0,
            held: HeldDecisions::default(),
            forwarded: HashSet::new(),
        }
    }

    /// Sets the client URLs this member advertises to its peers.
    pub fn advertise(&mut self, client_urls: Vec<String>) {
        self.client_urls = client_urls;
    }

    fn random(&mut self) -> u64 {
        // splitmix64 over a seed from the OS: the runtime's randomness,
        // handed to the core through `tick`.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The leader's clock for lease time stamps: wall-clock milliseconds,
    /// so that a new leader's readings continue its predecessor's (the store
    /// never lets replicated time go back, and absorbs small skews).
    fn now_ms(&self) -> u64 {
        wall_clock_ms()
    }

    /// Runs until every input channel closes or storage fails.
    pub async fn run(
        mut self,
        tick: Duration,
        mut inputs: mpsc::Receiver<Input>,
        mut peers: mpsc::Receiver<Envelope>,
        mut forwards: mpsc::Receiver<(NodeId, Vec<u8>)>,
    ) -> Result<(), String> {
        // Replay what recovery handed back before serving anything.
        self.flush().await?;
        let Some(mut saved) = self.saved_rx.take() else {
            return Err("the driver runs once".into());
        };
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick(),
                input = inputs.recv() => match input {
                    Some(input) => self.input(input),
                    None => return Ok(()),
                },
                Some(envelope) = peers.recv() => self.replica.step(envelope),
                Some((from, body)) = forwards.recv() => self.forward(from, &body).await?,
                Some(result) = saved.recv() => self.snapshot_saved(result).await?,
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
                if let Ok(envelope) = peers.try_recv() {
                    self.replica.step(envelope);
                    progressed = true;
                }
                // Forwarded proposals too: one fsync covers a turn's worth.
                if let Ok((from, body)) = forwards.try_recv() {
                    self.forward(from, &body).await?;
                    progressed = true;
                }
                if !progressed {
                    break;
                }
            }
            self.flush().await?;
        }
    }

    fn tick(&mut self) {
        // What is held leaves at least once a tick (see `held.rs`).
        self.release_held();
        let random = self.random();
        self.replica.tick(random);
        let now = Instant::now();
        // Requests that waited too long: their outcome is unknown.
        let expired: Vec<(u64, u64)> = self
            .writes
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired {
            if let Some(w) = self.writes.remove(&key) {
                let _ = w.reply.send(Err(ApiError::Timeout));
            }
        }
        let expired: Vec<ReadId> = self
            .reads
            .iter()
            .filter(|(_, r)| matches!(r, ReadWaiter::Local(_, d) if *d <= now))
            .map(|(k, _)| *k)
            .collect();
        for id in expired {
            if let Some(ReadWaiter::Local(serve, _)) = self.reads.remove(&id) {
                serve(Err(ApiError::Timeout));
            }
        }
        let expired: Vec<u64> = self
            .remote_reads
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(k, _)| *k)
            .collect();
        for id in expired {
            if let Some((serve, _)) = self.remote_reads.remove(&id) {
                serve(Err(ApiError::Timeout));
            }
        }
        if self.replica.is_leader() {
            self.expire_leases(now);
        }
        self.reforward();
        self.metrics.observe(&self.replica);
        // Tell the peers our client URLs every hundred ticks.
        if self.ticks.is_multiple_of(100) {
            let frame = Forward::Attributes {
                client_urls: self.client_urls.clone(),
            }
            .encode();
            for peer in self.replica.config().members.clone() {
                if peer != self.me {
                    let _ = self.transport.send_forward(peer, &frame);
                }
            }
        }
        self.ticks += 1;
    }

    /// Commands handed to a leader that is no longer the leader go to the
    /// new one (or are proposed here if we lead now), so that a leader's
    /// death costs an election, not a request timeout.
    fn reforward(&mut self) {
        let Some(leader) = self.replica.leader() else {
            return;
        };
        let stale: Vec<(u64, u64)> = self
            .writes
            .iter()
            .filter(|(_, w)| matches!(&w.forwarded, Some((to, _)) if *to != leader))
            .map(|(k, _)| *k)
            .collect();
        for (client, seq) in stale {
            let Some(command) = self
                .writes
                .get_mut(&(client, seq))
                .and_then(|w| w.forwarded.take())
                .map(|(_, command)| command)
            else {
                continue;
            };
            if leader == self.me {
                if self.propose_local(client, seq, command).is_err() {
                    self.fail_write(client, seq, ApiError::NoLeader);
                }
                continue;
            }
            let frame = Forward::Propose {
                client,
                seq,
                command: command.clone(),
            };
            if self.transport.send_forward(leader, &frame.encode()).is_ok() {
                if let Some(w) = self.writes.get_mut(&(client, seq)) {
                    w.forwarded = Some((leader, command));
                }
            } else {
                self.fail_write(client, seq, ApiError::NoLeader);
            }
        }
    }

    /// The leader decides lease expiry and replicates it (DESIGN.md rule 3).
    fn expire_leases(&mut self, now: Instant) {
        self.expiring.retain(|_, retry_at| *retry_at > now);
        let now_ms = self.now_ms();
        let due: Vec<LeaseId> = self
            .store
            .expired_leases(now_ms, EXPIRE_LEASES_PER_TICK_MAX)
            .into_iter()
            .filter(|id| !self.expiring.contains_key(id))
            .collect();
        if due.is_empty() {
            return;
        }
        for id in &due {
            self.expiring.insert(*id, now + Duration::from_secs(1));
        }
        let command = kv::Command::LeaseExpire(kv::LeaseExpireRequest { ids: due });
        let (client, seq) = self.new_session();
        let _ = self.propose_local(client, seq, command.encode());
    }

    /// A fresh `(client, seq)`: every request is its own session, so
    /// concurrent requests never look stale to each other.
    fn new_session(&mut self) -> (u64, u64) {
        (self.random(), 1)
    }

    fn propose_local(
        &mut self,
        client: u64,
        seq: u64,
        command: Vec<u8>,
    ) -> Result<(), ProposeError> {
        let mut payload = Vec::with_capacity(8 + command.len());
        payload.extend_from_slice(&self.now_ms().to_le_bytes());
        payload.extend_from_slice(&command);
        self.metrics
            .proposals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Queued only: `flush` opens slots for the whole turn's commands at
        // once, so that they share them.
        self.replica.enqueue(Command {
            client,
            seq,
            payload,
        })
    }

    fn input(&mut self, input: Input) {
        match input {
            Input::Propose { command, reply } => {
                if let Err(e) = self.store.limits().check(&command) {
                    let _ = reply.send(Err(ApiError::Kv(e)));
                    return;
                }
                let (client, seq) = self.new_session();
                let bytes = command.encode();
                self.writes.insert(
                    (client, seq),
                    Waiter {
                        reply,
                        deadline: Instant::now() + self.request_timeout,
                        forwarded: None,
                    },
                );
                match self.propose_local(client, seq, bytes.clone()) {
                    Ok(()) => {}
                    Err(ProposeError::NotLeader {
                        leader: Some(leader),
                        ..
                    }) if leader != self.me => {
                        let frame = Forward::Propose {
                            client,
                            seq,
                            command: bytes.clone(),
                        };
                        if self
                            .transport
                            .send_forward(leader, &frame.encode())
                            .is_err()
                        {
                            self.fail_write(client, seq, ApiError::NoLeader);
                        } else if let Some(w) = self.writes.get_mut(&(client, seq)) {
                            w.forwarded = Some((leader, bytes));
                        }
                    }
                    Err(ProposeError::Busy { .. }) => {
                        self.fail_write(client, seq, ApiError::TooManyRequests)
                    }
                    Err(ProposeError::NotLeader { .. }) => {
                        self.fail_write(client, seq, ApiError::NoLeader)
                    }
                }
            }
            Input::Read(serve) => self.read(serve),
            Input::Local(run) => run(self),
        }
    }

    fn fail_write(&mut self, client: u64, seq: u64, error: ApiError) {
        if let Some(w) = self.writes.remove(&(client, seq)) {
            let _ = w.reply.send(Err(error));
        }
    }

    fn read(&mut self, serve: ReadFn) {
        let deadline = Instant::now() + self.request_timeout;
        let id = self.next_read;
        self.next_read += 1;
        if self.replica.is_leader() {
            match self.replica.read(id) {
                Ok(()) => {
                    self.reads.insert(id, ReadWaiter::Local(serve, deadline));
                }
                Err(ProposeError::Busy { .. }) => serve(Err(ApiError::TooManyRequests)),
                Err(ProposeError::NotLeader { .. }) => serve(Err(ApiError::NoLeader)),
            }
            return;
        }
        match self.replica.leader() {
            Some(leader) if leader != self.me => {
                let frame = Forward::ReadIndex { id };
                if self.transport.send_forward(leader, &frame.encode()).is_ok() {
                    self.remote_reads.insert(id, (serve, deadline));
                } else {
                    serve(Err(ApiError::NoLeader));
                }
            }
            _ => serve(Err(ApiError::NoLeader)),
        }
    }

    async fn forward(&mut self, from: NodeId, body: &[u8]) -> Result<(), String> {
        let frame = match Forward::decode(body) {
            Ok(frame) => frame,
            Err(e) => {
                warn!(from, %e, "dropping a malformed forward frame");
                return Ok(());
            }
        };
        match frame {
            Forward::Propose {
                client,
                seq,
                command,
            } => match self.propose_local(client, seq, command) {
                Ok(()) => {
                    self.forwarded.insert((client, seq));
                }
                Err(e) => {
                    let leader = match e {
                        ProposeError::NotLeader {
                            leader: Some(l), ..
                        } => l,
                        _ => 0,
                    };
                    let refused = Forward::Refused {
                        client,
                        seq,
                        leader,
                    };
                    let _ = self.transport.send_forward(from, &refused.encode());
                }
            },
            Forward::Refused { client, seq, .. } => {
                self.fail_write(client, seq, ApiError::NoLeader)
            }
            Forward::ReadIndex { id } => {
                let read = self.next_read;
                self.next_read += 1;
                if self.replica.read(read).is_ok() {
                    self.reads.insert(read, ReadWaiter::Remote { from, id });
                } else {
                    let reply = Forward::ReadIndexReply { id, index: 0 };
                    let _ = self.transport.send_forward(from, &reply.encode());
                }
            }
            Forward::ReadIndexReply { id, index } => {
                if let Some((serve, _)) = self.remote_reads.remove(&id) {
                    if index == 0 {
                        serve(Err(ApiError::NoLeader));
                    } else if index <= self.applied_slot {
                        serve(Ok(&self.store));
                    } else {
                        self.reads_at_index.entry(index).or_default().push(serve);
                    }
                }
            }
            Forward::Attributes { client_urls } => {
                self.peer_client_urls.insert(from, client_urls);
            }
            Forward::Chunk(chunk) => {
                let applied = self.replica.commit_index();
                if let Some(snapshot) = self.disk.receive(&chunk, applied)? {
                    match Store::restore(&snapshot.data, self.store.limits().clone()) {
                        Ok(store) => {
                            info!(
                                from,
                                slot = snapshot.index,
                                "installed a snapshot from a peer"
                            );
                            self.store = store;
                            self.applied_slot = snapshot.index;
                            self.applied_since_snapshot = 0;
                            self.replica.install_snapshot(snapshot.index);
                            self.serve_reads_at_index();
                        }
                        Err(e) => return Err(format!("a received snapshot does not restore: {e}")),
                    }
                }
            }
        }
        Ok(())
    }

    /// Carries out the core's outputs, persists first.
    ///
    /// A `Persist` of a promise or an acceptance is a barrier: nothing
    /// after it may happen before it is durable. Everything after the
    /// first one therefore waits for a single fsync of every record of the
    /// turn (group commit), and the outputs before it go out at once.
    /// Holding an output back is always allowed (the network may delay any
    /// message, and applies only need their order); doing one early never
    /// is. Commit records alone are appended without an fsync: they are
    /// hints, synced with the next barrier.
    async fn flush(&mut self) -> Result<(), String> {
        self.held.start_turn();
        loop {
            self.replica.fill();
            let outputs = self.replica.take_outputs();
            if outputs.is_empty() {
                break;
            }
            let first_persist = outputs
                .iter()
                .position(|o| matches!(o, Output::Persist(r) if r.is_barrier()))
                .unwrap_or(outputs.len());
            let mut records = Vec::new();
            let mut after = Vec::new();
            for (i, output) in outputs.into_iter().enumerate() {
                match output {
                    Output::Persist(record) => records.push(record),
                    other if i < first_persist => {
                        if !records.is_empty() {
                            // Hints before the first barrier: in the log
                            // before what follows them, no fsync.
                            self.disk.append(&records)?;
                            records.clear();
                        }
                        self.execute(other).await?;
                    }
                    other => after.push(other),
                }
            }
            if records.iter().any(Record::is_barrier) {
                // What may leave before the barrier leaves now, so that
                // peers work while this member syncs. The decisions of
                // earlier turns go with them: the voters' ride with this
                // turn's `Accept`.
                self.send_due_held();
                self.transport.flush();
                let micros = self.disk.persist(&records)?;
                self.metrics.fsync(micros);
            } else if !records.is_empty() {
                self.disk.append(&records)?;
            }
            for output in after {
                self.execute(output).await?;
            }
        }
        self.send_due_held();
        self.transport.flush();
        self.deliver_watches();
        self.maybe_checkpoint()
    }

    async fn execute(&mut self, output: Output) -> Result<(), String> {
        match output {
            Output::Persist(_) => {}
            Output::Send(envelope) => {
                if matches!(envelope.message, Message::Heartbeat { .. }) {
                    // It tells the commit index: the decisions it covers go
                    // first, or the peer would ask for them again.
                    self.release_held();
                }
                send(&self.transport, &envelope)
            }
            Output::Announce(decision) if self.forwarded.is_empty() => self.held.hold(decision),
            Output::Announce(decision) => {
                // A peer waits for a decision to answer its client.
                self.release_held();
                send(&self.transport, &decision);
            }
            Output::Apply { slot, value } => self.apply(slot, value),
            Output::ReadReady { read } => {
                // A linearizable read is a pause in the stream of writes
                // and asks for what is decided: every member is sent it
                // first (a peer serving the read applies up to the index;
                // the others then agree with what the reader saw).
                self.release_held();
                match self.reads.remove(&read) {
                    Some(ReadWaiter::Local(serve, _)) => serve(Ok(&self.store)),
                    Some(ReadWaiter::Remote { from, id }) => {
                        let index = self.replica.applied();
                        let reply = Forward::ReadIndexReply { id, index };
                        let _ = self.transport.send_forward(from, &reply.encode());
                    }
                    None => {}
                }
            }
            Output::ReadAborted { read, .. } => match self.reads.remove(&read) {
                Some(ReadWaiter::Local(serve, _)) => serve(Err(ApiError::NoLeader)),
                Some(ReadWaiter::Remote { from, id }) => {
                    let reply = Forward::ReadIndexReply { id, index: 0 };
                    let _ = self.transport.send_forward(from, &reply.encode());
                }
                None => {}
            },
            Output::Rejected { command, .. } => {
                self.forwarded.remove(&(command.client, command.seq));
                self.fail_write(command.client, command.seq, ApiError::NoLeader)
            }
            Output::SendSnapshot { to } => {
                // While a snapshot is being saved the log before it is gone
                // from memory but the one on disk is older: sending that
                // would only bring the peer back for the newer one. The core
                // asks again after an election timeout.
                if let Some(snapshot) = self
                    .disk
                    .latest_snapshot_from(self.replica.snapshot_slot())?
                {
                    let sender =
                        SnapshotSender::new(snapshot.index, snapshot.data, SNAPSHOT_CHUNK_BYTES);
                    info!(
                        to,
                        slot = snapshot.index,
                        "sending a snapshot to a lagging member"
                    );
                    for chunk in sender.chunks_from(0) {
                        let _ = self
                            .transport
                            .send_forward(to, &Forward::Chunk(chunk).encode());
                        // Each chunk on its way before the next is queued:
                        // a whole snapshot may exceed the queue's bound.
                        self.transport.flush();
                    }
                }
            }
            Output::Elected { ballot } => {
                info!(%ballot, "elected leader");
                self.metrics
                    .leader_changes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Leases get a fresh TTL under the new leader, as etcd does.
                let (client, seq) = self.new_session();
                let _ = self.propose_local(client, seq, kv::Command::LeaseRenewAll.encode());
            }
            Output::SteppedDown { ballot } => {
                info!(%ballot, "no longer leading");
                self.expiring.clear();
                // Their peers hand them to the next leader.
                self.forwarded.clear();
            }
        }
        Ok(())
    }

    /// Sends every held decision now, oldest first.
    fn release_held(&mut self) {
        for earlier in self.held.take_all() {
            send(&self.transport, &earlier);
        }
    }

    /// Sends the held decisions that may wait no longer this turn.
    fn send_due_held(&mut self) {
        for decision in self.held.take_due() {
            send(&self.transport, &decision);
        }
    }

    fn apply(&mut self, slot: u64, value: Value) {
        assert_eq!(slot, self.applied_slot + 1, "slots apply strictly in order");
        self.applied_slot = slot;
        if let Value::Batch(commands) = value {
            self.applied_since_snapshot += commands.len() as u64;
            for c in commands.iter() {
                self.apply_command(c);
            }
        }
        self.serve_reads_at_index();
    }

    fn apply_command(&mut self, c: &Command) {
        if !self.forwarded.is_empty() {
            self.forwarded.remove(&(c.client, c.seq));
        }
        let Some((stamp, body)) = c.payload.split_first_chunk::<8>() else {
            warn!(
                client = c.client,
                "skipping a log entry without a time stamp"
            );
            return;
        };
        let ctx = ApplyContext {
            now_ms: u64::from_le_bytes(*stamp),
        };
        let command = match kv::Command::decode(body) {
            Ok(command) => command,
            Err(e) => {
                // Every replica skips it alike: the log is deterministic.
                warn!(client = c.client, %e, "skipping an undecodable log entry");
                return;
            }
        };
        let result: Result<kv::Response, KvError> =
            match self.store.apply_session(c.client, c.seq, &command, ctx) {
                SessionOutcome::Applied(Ok(applied)) => {
                    let revision = self.store.revision();
                    let responses = self.hub.publish(revision, &applied.events);
                    self.route_watch_responses(responses);
                    Ok(applied.response)
                }
                SessionOutcome::Applied(Err(e)) => Err(e),
                SessionOutcome::Duplicate(result) => result,
                SessionOutcome::Stale { .. } => return,
            };
        if let Some(w) = self.writes.remove(&(c.client, c.seq)) {
            let _ = w.reply.send(result.map_err(ApiError::Kv));
        }
    }

    /// Serves follower reads whose read index the store has reached. The
    /// store's own apply point, not the replica's: the replica counts
    /// applies it has handed out that this driver may not have carried out
    /// yet, and serving against it would read a stale store.
    fn serve_reads_at_index(&mut self) {
        let applied = self.applied_slot;
        while let Some(entry) = self.reads_at_index.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for serve in entry.remove() {
                serve(Ok(&self.store));
            }
        }
    }

    /// Sends watch responses to their sessions. A session too slow to take
    /// them is closed whole: its stream ends with "server stopped" and etcd's
    /// clients reconnect and resume from their last revision, so nothing is
    /// lost silently.
    pub(super) fn route_watch_responses(&mut self, responses: Vec<WatchResponse>) {
        for response in responses {
            let Some(session) = self.watch_owner.get(&response.watch_id).copied() else {
                continue;
            };
            self.send_watch_response(session, response);
        }
    }

    /// Queues a response for a watch session, behind every response queued
    /// for it before. The delivery task puts it on the session's queue
    /// after this turn; waking a hundred stream tasks from the driver's
    /// thread would cost the driver more than the one hand-off.
    pub(super) fn send_watch_response(&mut self, session: u64, response: WatchResponse) {
        let Some(tx) = self.watch_sessions.get(&session) else {
            return;
        };
        if self.watch_delivery.is_closed() {
            // The runtime is stopping: nobody is left to deliver to.
            return;
        }
        self.watch_outbox.push((session, tx.clone(), response));
    }

    /// Hands this turn's watch responses to the delivery task.
    fn deliver_watches(&mut self) {
        if self.watch_outbox.is_empty() {
            return;
        }
        let _ = self
            .watch_delivery
            .send(std::mem::take(&mut self.watch_outbox));
    }

    /// Forgets a watch session and cancels its watches.
    pub(super) fn close_watch_session(&mut self, session: u64) {
        self.watch_sessions.remove(&session);
        let owned: Vec<i64> = self
            .watch_owner
            .iter()
            .filter(|(_, s)| **s == session)
            .map(|(w, _)| *w)
            .collect();
        let revision = self.store.revision();
        for watch_id in owned {
            self.watch_owner.remove(&watch_id);
            self.hub.cancel(watch_id, revision);
        }
    }

    /// Starts a snapshot once enough commands were applied since the
    /// last one. The driver only freezes a copy of the store (value bytes
    /// shared, not copied); the background thread encodes and saves it while
    /// the driver goes on serving. The replica's log is trimmed now;
    /// [`Driver::snapshot_saved`] trims the log file once the image is
    /// durable.
    fn maybe_checkpoint(&mut self) -> Result<(), String> {
        // The image must be the store's state at the slot it is saved under.
        let applied = self.applied_slot;
        debug_assert_eq!(
            applied,
            self.replica.applied(),
            "flushed: every apply carried out"
        );
        if self.saving.is_some()
            || self.applied_since_snapshot < self.snapshot_count
            || applied <= self.replica.snapshot_slot()
        {
            return Ok(());
        }
        let started = Instant::now();
        let frozen = self.store.frozen();
        let froze = started.elapsed();
        // The frozen image holds every applied slot: the two in-memory
        // copies of the log before it (the replica's, and the one the disk
        // rewrites from at a trim) go now, not when the image is on disk,
        // so a member never holds a whole snapshot interval of log beside
        // its store during the save. The log file keeps those slots until
        // the save is durable. The background thread frees them before it
        // starts the save.
        let mirrored = self.disk.mark(applied);
        let compacted = self.replica.compact(applied);
        self.disk.discard(Box::new((compacted, mirrored)));
        self.disk.release_memory();
        self.disk.save_snapshot(
            applied,
            Box::new(move |sink| frozen.write_snapshot(sink)),
            self.saved_tx.clone(),
        )?;
        self.saving = Some(Saving {
            froze,
            compacted: started.elapsed() - froze,
        });
        self.applied_since_snapshot = 0;
        Ok(())
    }

    /// The background thread saved a snapshot (or failed to: storage errors
    /// stop the node): the log before it goes.
    async fn snapshot_saved(&mut self, result: Result<Saved, String>) -> Result<(), String> {
        let saving = self.saving.take().unwrap_or_default();
        let saved = result?;
        let started = Instant::now();
        self.disk.trim(saved.slot, self.saved_tx.clone())?;
        let trimmed = started.elapsed();
        self.disk.release_memory();
        info!(
            slot = saved.slot,
            bytes = saved.bytes,
            freeze_ms = saving.froze.as_millis() as u64,
            compact_ms = saving.compacted.as_millis() as u64,
            encode_ms = saved.encode.as_millis() as u64,
            write_ms = saved.write.as_millis() as u64,
            paused_ms = saved.paused.as_millis() as u64,
            trim_ms = trimmed.as_millis() as u64,
            "snapshot saved, log trimmed"
        );
        Ok(())
    }

    /// The key-value store, for local reads.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// What the driver spent on a snapshot before handing it to the
/// background thread, reported when the save is done.
#[derive(Debug, Default)]
struct Saving {
    /// Freezing the store's copy.
    froze: Duration,
    /// Trimming the log the frozen copy covers.
    compacted: Duration,
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
            let close: LocalFn = Box::new(move |d| d.close_watch_session(session));
            let _ = driver.send(Input::Local(close)).await;
        }
        closing.clear();
    }
}
