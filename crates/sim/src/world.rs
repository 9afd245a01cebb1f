//! One simulated run: replicas, a network, clients and a nemesis under
//! virtual time, all drawn from one seed.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use check::{Op, Operation, Outcome};
use paxos::multi::{
    ClientId, Command, Config, Envelope, Output, ProposeError, ReadId, Record, Replica, Slot, Value,
};
use paxos::{Ballot, NodeId};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use storage::{
    Fs, ReplicaStore, SEGMENT_HEADER_BYTES, SimFs, SnapshotChunk, SnapshotOptions, SnapshotSender,
    WalOptions,
};

use crate::config::SimConfig;
use crate::kv::{Key, Kv, KvOp, KvReply};
use crate::network::{NetConfig, Network};
use crate::oracle::{Oracle, Violation};
use crate::report::RunReport;
use crate::trace::describe;

/// Length of one replica tick, in virtual microseconds.
pub const TICK_US: u64 = 10_000;
const CLIENT_TIMEOUT_US: u64 = 400_000;
const CLIENT_ATTEMPTS_MAX: u32 = 16;
const CLIENT_RETRY_US: u64 = 30_000;
const DRAIN_US_MAX: u64 = 5_000_000;
const EVENTS_MAX: u64 = 20_000_000;
/// A node snapshots its state machine (and trims its log) this often.
const SNAPSHOT_EVERY_SLOTS: u64 = 50;
/// Where each node keeps its data on its own simulated disk.
const DATA_DIR: &str = "/synod";
/// A node that could not start for a reason that may pass (a full disk, a
/// failed fsync) tries again after this long.
const RESTART_RETRY_US: u64 = 100_000;

/// Bytes per snapshot chunk on the wire: small, so that transfers take
/// several chunks and some break and resume.
const SNAPSHOT_CHUNK_BYTES: usize = 48;

/// Small checksummed blocks, so that a broken transfer resumes mid-way.
fn snapshot_options() -> SnapshotOptions {
    SnapshotOptions {
        block_bytes: 32,
        ..SnapshotOptions::default()
    }
}

/// Small segments, so that runs roll, seal and trim many of them.
fn wal_options() -> WalOptions {
    WalOptions {
        segment_bytes_max: 64 << 10,
        write_buffer_bytes_max: 64 << 10,
        record_payload_bytes_max: 16 << 10,
    }
}

/// What a client asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Read { key: Key },
    Write { seq: u64, op: KvOp },
}

/// What a node answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Read(Option<u64>),
    Applied(KvReply),
    /// Refused before anything was proposed: certainly not applied.
    NotLeader(Option<NodeId>),
    /// The leader's queue was full: certainly not applied.
    Busy,
}

#[derive(Debug)]
enum Event {
    Deliver(Envelope),
    Tick(NodeId),
    Request {
        node: NodeId,
        client: ClientId,
        attempt: u64,
        request: Request,
    },
    Reply {
        client: ClientId,
        attempt: u64,
        reply: Reply,
    },
    ClientTimeout {
        client: ClientId,
        attempt: u64,
    },
    ClientNext(ClientId),
    ClientRetry(ClientId),
    SnapshotChunk {
        to: NodeId,
        from: NodeId,
        chunk: SnapshotChunk,
    },
    /// A snapshot frozen at `slot` finished saving beside the log (as the
    /// server's background thread does), unless the node died meanwhile.
    SnapshotSaved {
        node: NodeId,
        incarnation: u64,
        slot: u64,
        image: Vec<u8>,
    },
    /// Open slots for the commands a node queued (with `batch_us`).
    Fill(NodeId),
    Nemesis,
    Restart(NodeId),
    FreeDisk(NodeId),
    Heal,
    StopClients,
    FinalReads,
}

struct Scheduled {
    time: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// A node: the replica (absent while down), its own simulated disk with the
/// real write-ahead log and snapshots on it, and its state machine and the
/// clients waiting on it.
struct Node {
    id: NodeId,
    replica: Option<Replica>,
    /// The disk survives crashes, minus what was not synced.
    fs: SimFs,
    /// The log and snapshots, open while the node runs.
    store: Option<ReplicaStore<SimFs>>,
    /// Counts the node's lives, so that work a dead life started is dropped.
    incarnation: u64,
    /// A snapshot is being saved.
    saving: bool,
    /// Acceptances appended but not yet synced; the oracle counts an
    /// acceptance once it is durable.
    unsynced: Vec<(Slot, Ballot, Value)>,
    /// A promise or acceptance was appended and not yet synced: the next
    /// output must wait for an fsync.
    barrier_pending: bool,
    /// The node refused to start on data it cannot trust: it stays down.
    refused: bool,
    kv: Kv,
    /// Writes proposed here, by `(client, seq)`: who to answer.
    writes: BTreeMap<(ClientId, u64), u64>,
    /// A `Fill` is scheduled for the commands queued here.
    fill_due: bool,
    /// Reads started here: the client, its attempt and the key.
    reads: BTreeMap<ReadId, (ClientId, u64, Key)>,
}

/// One client's operation in progress.
struct Pending {
    history_index: usize,
    request: Request,
    attempt: u64,
    attempts: u32,
    /// Some attempt may have reached the log; a give-up is then `info`.
    uncertain: bool,
}

struct Client {
    id: ClientId,
    /// Its process id in the history: its `id` until an operation ends
    /// unknown, then a fresh one, as the history format requires (an
    /// unknown operation stays open forever).
    process: u64,
    target: NodeId,
    seq: u64,
    pending: Option<Pending>,
    /// Fixed operations to run (the final reads); random ones otherwise.
    script: Option<VecDeque<Request>>,
    done: bool,
}

/// Added to a client's history process id after an unknown outcome: far
/// above every client id, so fresh ids never meet another client's.
const PROCESS_STRIDE: u64 = 1 << 32;

/// The whole simulated world of one run.
pub struct World {
    config: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    nodes: Vec<Node>,
    members: Vec<NodeId>,
    network: Network,
    clients: Vec<Client>,
    next_attempt: u64,
    next_read: ReadId,
    next_value: u64,
    oracle: Oracle,
    history: Vec<Operation>,
    trace: Option<Vec<String>>,
    faults_on: bool,
    clients_on: bool,
    heal_time: u64,
    first_ok_after_heal: Option<u64>,
    leader_changes: u64,
    events: u64,
    crashes: u64,
    /// The node whose disk got a bit flipped at rest (at most once a run).
    flipped: Option<NodeId>,
    refused_starts: u64,
}

impl World {
    /// Builds the world for `seed`.
    pub fn new(seed: u64, config: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let members: Vec<NodeId> = (1..=config.nodes as NodeId).collect();
        let nodes = members
            .iter()
            .map(|&id| {
                let fs = SimFs::new();
                let store = ReplicaStore::open(
                    fs.clone(),
                    std::path::Path::new(DATA_DIR),
                    wal_options(),
                    snapshot_options(),
                )
                .ok()
                .map(|(store, _)| store);
                Node {
                    id,
                    replica: store
                        .as_ref()
                        .map(|_| Replica::new(replica_config(&config, id, &members))),
                    refused: store.is_none(),
                    fs,
                    store,
                    unsynced: Vec::new(),
                    barrier_pending: false,
                    incarnation: 0,
                    saving: false,
                    kv: Kv::default(),
                    writes: BTreeMap::new(),
                    fill_due: false,
                    reads: BTreeMap::new(),
                }
            })
            .collect();
        let n = &config.nemesis;
        let faulty_net = NetConfig {
            delay_min_us: 200,
            delay_mean_us: if n.delay { 1_500 } else { 300 },
            loss: if n.loss { 0.05 } else { 0.0 },
            duplicate: if n.duplicate { 0.05 } else { 0.0 },
            spike: if n.delay { 0.01 } else { 0.0 },
            spike_us: 100_000,
        };
        let clients = (0..config.clients)
            .map(|i| Client {
                id: 100 + i as ClientId,
                process: 100 + i as u64,
                target: members[rng.random_range(0..members.len())],
                seq: 0,
                pending: None,
                script: None,
                done: false,
            })
            .collect();
        let trace = config.trace.then(Vec::new);
        World {
            network: Network::new(faulty_net),
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            oracle: Oracle::new(members.len()),
            nodes,
            members,
            clients,
            next_attempt: 1,
            next_read: 1,
            next_value: 1,
            history: Vec::new(),
            trace,
            faults_on: true,
            clients_on: true,
            heal_time: 0,
            first_ok_after_heal: None,
            leader_changes: 0,
            events: 0,
            crashes: 0,
            flipped: None,
            refused_starts: 0,
            config,
        }
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Scheduled {
            time: self.now + delay,
            seq: self.seq,
            event,
        });
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        if let Some(t) = &mut self.trace {
            t.push(format!("{:>10.3}ms  {}", self.now as f64 / 1000.0, line()));
        }
    }

    /// Runs to the end and judges the run.
    pub fn run(mut self) -> RunReport {
        for i in 0..self.nodes.len() {
            let offset = self.rng.random_range(0..TICK_US);
            let id = self.nodes[i].id;
            self.schedule(offset, Event::Tick(id));
        }
        for i in 0..self.clients.len() {
            let id = self.clients[i].id;
            let delay = self.rng.random_range(0..=self.config.think_us_max);
            self.schedule(delay, Event::ClientNext(id));
        }
        if self.config.nemesis.any() {
            let delay = self.nemesis_gap();
            self.schedule(delay, Event::Nemesis);
        }
        self.schedule(self.config.fault_us, Event::Heal);
        self.schedule(
            self.config.fault_us + self.config.heal_us,
            Event::StopClients,
        );

        let mut stop_at = u64::MAX;
        while let Some(next) = self.queue.pop() {
            if next.time > stop_at {
                break;
            }
            self.events += 1;
            if self.events > EVENTS_MAX {
                self.violate("event budget exhausted: the run does not settle".into());
                break;
            }
            self.now = next.time;
            if let Event::StopClients = next.event {
                stop_at = self.now + DRAIN_US_MAX;
            }
            self.handle(next.event);
            let final_reads_done = self.clients.iter().any(|c| c.script.is_some() && c.done);
            if final_reads_done && self.clients.iter().all(|c| c.done) {
                break;
            }
        }
        self.finish()
    }

    fn violate(&mut self, what: String) {
        self.oracle.violations.push(Violation {
            time_us: self.now,
            what,
        });
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Deliver(envelope) => {
                let to = envelope.to;
                let Some(node) = self.node_index(to) else {
                    return;
                };
                if self.nodes[node].replica.is_none() {
                    return;
                }
                let line = describe(&envelope);
                self.trace(|| line);
                if let Some(replica) = &mut self.nodes[node].replica {
                    replica.step(envelope);
                }
                self.process_outputs(node);
            }
            Event::Tick(id) => {
                let random = self.rng.next_u64();
                if let Some(node) = self.node_index(id)
                    && let Some(replica) = &mut self.nodes[node].replica
                {
                    replica.tick(random);
                    self.process_outputs(node);
                }
                self.schedule(TICK_US, Event::Tick(id));
            }
            Event::Request {
                node,
                client,
                attempt,
                request,
            } => self.on_request(node, client, attempt, request),
            Event::Reply {
                client,
                attempt,
                reply,
            } => self.on_reply(client, attempt, reply),
            Event::ClientTimeout { client, attempt } => self.on_timeout(client, attempt),
            Event::ClientNext(client) => self.client_next(client),
            Event::ClientRetry(client) => {
                if let Some(ci) = self.client_index(client)
                    && self.clients[ci]
                        .pending
                        .as_ref()
                        .is_some_and(|p| p.attempt == 0)
                {
                    self.client_send(ci);
                }
            }
            Event::Nemesis => {
                if self.faults_on {
                    self.nemesis();
                    let delay = self.nemesis_gap();
                    self.schedule(delay, Event::Nemesis);
                }
            }
            Event::Fill(id) => {
                if let Some(node) = self.node_index(id) {
                    self.nodes[node].fill_due = false;
                    if let Some(replica) = &mut self.nodes[node].replica {
                        replica.fill();
                        self.process_outputs(node);
                    }
                }
            }
            Event::Restart(id) => self.restart(id),
            Event::SnapshotSaved {
                node,
                incarnation,
                slot,
                image,
            } => self.snapshot_saved(node, incarnation, slot, &image),
            Event::FreeDisk(id) => {
                if let Some(node) = self.node_index(id) {
                    self.nodes[node].fs.set_capacity_bytes(None);
                    self.trace(|| format!("nemesis: n{id}'s disk has room again"));
                }
            }
            Event::SnapshotChunk { to, from, chunk } => self.receive_chunk(to, from, chunk),
            Event::Heal => self.heal(),
            Event::StopClients => {
                self.clients_on = false;
                self.trace(|| "clients stop; draining".into());
                let delay = self.config.heal_us / 4;
                self.schedule(delay.max(TICK_US), Event::FinalReads);
            }
            Event::FinalReads => self.start_final_reads(),
        }
    }

    fn node_index(&self, id: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    fn send(&mut self, envelope: Envelope) {
        let delays = self
            .network
            .deliveries(&mut self.rng, envelope.from, envelope.to);
        let Some((last, duplicates)) = delays.split_last() else {
            let line = format!("dropped {}", describe(&envelope));
            self.trace(|| line);
            return;
        };
        for delay in duplicates {
            self.schedule(*delay, Event::Deliver(envelope.clone()));
        }
        self.schedule(*last, Event::Deliver(envelope));
    }

    /// Carries out a replica's outputs in order. Persists go into the
    /// write-ahead log; before anything after them leaves the node, one
    /// fsync makes them durable (group commit), as the barrier rule requires.
    /// A failed append or fsync stops the node.
    fn process_outputs(&mut self, node: usize) {
        let Some(replica) = &mut self.nodes[node].replica else {
            return;
        };
        let outputs = replica.take_outputs();
        let id = self.nodes[node].id;
        for output in outputs {
            if !matches!(output, Output::Persist(_)) && !self.make_durable(node) {
                return;
            }
            match output {
                Output::Persist(record) => {
                    let n = &mut self.nodes[node];
                    let Some(store) = &mut n.store else {
                        return;
                    };
                    if let Err(e) = store.append(&record) {
                        self.stop_node(node, &e.to_string());
                        return;
                    }
                    n.barrier_pending |= record.is_barrier();
                    if let Record::Accept {
                        slot,
                        ballot,
                        value,
                    } = record
                    {
                        n.unsynced.push((slot, ballot, value));
                    }
                }
                // The network's delays cover a runtime holding a decision
                // back, so the simulator sends it at once.
                Output::Send(envelope) | Output::Announce(envelope) => self.send(envelope),
                Output::Apply { slot, value } => {
                    self.oracle.applied(self.now, id, slot, &value);
                    self.apply(node, &value);
                }
                Output::ReadReady { read } => {
                    if let Some((client, attempt, key)) = self.nodes[node].reads.remove(&read) {
                        let value = self.nodes[node].kv.get(key);
                        self.reply(client, attempt, Reply::Read(value));
                    }
                }
                Output::ReadAborted { read, leader } => {
                    if let Some((client, attempt, _)) = self.nodes[node].reads.remove(&read) {
                        self.reply(client, attempt, Reply::NotLeader(leader));
                    }
                }
                Output::Rejected { command, leader } => {
                    let key = (command.client, command.seq);
                    if let Some(attempt) = self.nodes[node].writes.remove(&key) {
                        self.reply(command.client, attempt, Reply::NotLeader(leader));
                    }
                }
                Output::SendSnapshot { to } => self.send_snapshot(node, to),
                Output::Elected { ballot } => {
                    self.leader_changes += 1;
                    self.trace(|| format!("n{id} elected leader with ballot {ballot}"));
                }
                Output::SteppedDown { ballot } => {
                    self.trace(|| format!("n{id} gives up ballot {ballot}"));
                }
            }
        }
        if self.make_durable(node) {
            self.maybe_snapshot(node);
        }
    }

    /// Syncs the node's log if anything was appended; false if the node
    /// had to stop.
    fn make_durable(&mut self, node: usize) -> bool {
        let id = self.nodes[node].id;
        let n = &mut self.nodes[node];
        let Some(store) = &mut n.store else {
            return false;
        };
        // Commit records alone are hints: they wait for the next barrier,
        // as the server's driver lets them (a crash may lose them).
        if !n.barrier_pending {
            return true;
        }
        match store.sync() {
            Ok(()) => {
                n.barrier_pending = false;
                for (slot, ballot, value) in std::mem::take(&mut n.unsynced) {
                    self.oracle.synced(id, slot, ballot);
                    self.oracle.accepted(self.now, id, slot, ballot, &value);
                }
                true
            }
            Err(e) => {
                self.stop_node(node, &e.to_string());
                false
            }
        }
    }

    /// Snapshots the state machine every so many slots. As the server
    /// does, the replica trims its log at once, while the log file keeps
    /// those slots until the image is durable.
    fn maybe_snapshot(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let (Some(replica), Some(store)) = (&mut n.replica, &mut n.store) else {
            return;
        };
        let applied = replica.applied();
        if n.saving || applied < replica.snapshot_slot() + SNAPSHOT_EVERY_SLOTS {
            return;
        }
        // As the server does: freeze and mark now, save and trim later
        // while the log goes on taking records (or never, if the node dies
        // first).
        store.mark_snapshot(applied);
        let image = n.kv.encode();
        replica.compact(applied);
        n.saving = true;
        let event = Event::SnapshotSaved {
            node: n.id,
            incarnation: n.incarnation,
            slot: applied,
            image,
        };
        let delay = self.rng.random_range(1_000..50_000);
        self.schedule(delay, event);
    }

    /// Saves a snapshot frozen earlier and trims the log file after it.
    fn snapshot_saved(&mut self, id: NodeId, incarnation: u64, slot: u64, image: &[u8]) {
        let Some(node) = self.node_index(id) else {
            return;
        };
        let n = &mut self.nodes[node];
        let (Some(_), Some(store)) = (&n.replica, &mut n.store) else {
            return;
        };
        if n.incarnation != incarnation {
            return;
        }
        n.saving = false;
        let saved = store
            .snapshot_writer()
            .save(slot, image)
            .and_then(|()| store.trim_after_snapshot(slot));
        if let Err(e) = saved {
            self.stop_node(node, &e.to_string());
        }
    }

    /// Streams the latest durable snapshot to a lagging peer in checksummed
    /// chunks over the faulty network; lost chunks break the transfer, which
    /// the receiver resumes when the next one comes.
    fn send_snapshot(&mut self, node: usize, to: NodeId) {
        let id = self.nodes[node].id;
        let Some(store) = &self.nodes[node].store else {
            return;
        };
        // As the server does: while a newer image is being saved, the one
        // on disk would only bring the peer back for it, so it is not read.
        let trimmed = self.nodes[node]
            .replica
            .as_ref()
            .map_or(0, |r| r.snapshot_slot());
        let Ok(Some(snapshot)) = store.latest_snapshot_from(trimmed) else {
            return;
        };
        let slot = snapshot.index;
        let sender = SnapshotSender::new(slot, snapshot.data, SNAPSHOT_CHUNK_BYTES);
        let chunks: Vec<SnapshotChunk> = sender.chunks_from(0).collect();
        let count = chunks.len();
        self.trace(|| format!("n{id} -> n{to}  snapshot up to slot {slot} in {count} chunks"));
        for (i, chunk) in chunks.into_iter().enumerate() {
            let delays = self.network.deliveries(&mut self.rng, id, to);
            for delay in delays {
                let at = delay + 100 * i as u64;
                self.schedule(
                    at,
                    Event::SnapshotChunk {
                        to,
                        from: id,
                        chunk: chunk.clone(),
                    },
                );
            }
        }
    }

    fn receive_chunk(&mut self, to: NodeId, from: NodeId, chunk: SnapshotChunk) {
        let Some(node) = self.node_index(to) else {
            return;
        };
        let n = &mut self.nodes[node];
        let (Some(replica), Some(store)) = (&mut n.replica, &mut n.store) else {
            return;
        };
        let snapshot = match store.receive(&chunk, replica.commit_index()) {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return,
            Err(
                e @ (storage::Error::InvalidChunk { .. } | storage::Error::TransferChecksum { .. }),
            ) => {
                let why = e.to_string();
                self.trace(|| format!("n{to} drops a snapshot chunk: {why}"));
                return;
            }
            Err(e) => {
                self.stop_node(node, &e.to_string());
                return;
            }
        };
        let Some(kv) = Kv::decode(&snapshot.data) else {
            self.stop_node(node, "a received snapshot does not decode");
            return;
        };
        let slot = snapshot.index;
        n.kv = kv;
        replica.install_snapshot(slot);
        self.oracle.installed_snapshot(to, slot);
        self.trace(|| format!("n{to} installs n{from}'s snapshot up to slot {slot}"));
        self.process_outputs(node);
    }

    fn apply(&mut self, node: usize, value: &Value) {
        let Value::Batch(commands) = value else {
            return;
        };
        for command in commands.iter() {
            let reply = self.nodes[node].kv.apply(command);
            let key = (command.client, command.seq);
            if let Some(attempt) = self.nodes[node].writes.remove(&key)
                && reply != KvReply::Stale
            {
                self.reply(command.client, attempt, Reply::Applied(reply));
            }
        }
    }

    fn reply(&mut self, client: ClientId, attempt: u64, reply: Reply) {
        let delay = self.rng.random_range(100..500);
        self.schedule(
            delay,
            Event::Reply {
                client,
                attempt,
                reply,
            },
        );
    }

    // ----- clients -----

    fn client_index(&self, id: ClientId) -> Option<usize> {
        self.clients.iter().position(|c| c.id == id)
    }

    fn client_next(&mut self, id: ClientId) {
        let Some(ci) = self.client_index(id) else {
            return;
        };
        if self.clients[ci].pending.is_some() || self.clients[ci].done {
            return;
        }
        let request = match &mut self.clients[ci].script {
            Some(script) => match script.pop_front() {
                Some(r) => r,
                None => {
                    self.clients[ci].done = true;
                    return;
                }
            },
            None if !self.clients_on => {
                self.clients[ci].done = true;
                return;
            }
            None => self.random_request(ci),
        };
        let key = match request {
            Request::Read { key } => key,
            Request::Write { op, .. } => match op {
                KvOp::Put { key, .. } | KvOp::Cas { key, .. } => key,
            },
        };
        let op = match request {
            Request::Read { .. } => Op::Read,
            Request::Write {
                op: KvOp::Put { value, .. },
                ..
            } => Op::Write(value),
            Request::Write {
                op: KvOp::Cas { expected, new, .. },
                ..
            } => Op::Cas { expected, new },
        };
        self.history.push(Operation {
            process: self.clients[ci].process,
            key: format!("k{key}"),
            op,
            invoke: self.now,
            complete: None,
            outcome: Outcome::Info,
        });
        self.clients[ci].pending = Some(Pending {
            history_index: self.history.len() - 1,
            request,
            attempt: 0,
            attempts: 0,
            uncertain: false,
        });
        let line = format!("client {id} invokes {}", describe_request(&request));
        self.trace(|| line);
        self.client_send(ci);
    }

    fn random_request(&mut self, ci: usize) -> Request {
        let key = self.rng.random_range(0..self.config.keys) as Key;
        let roll = self.rng.random_range(0..100);
        if roll < 40 {
            return Request::Read { key };
        }
        let client = &mut self.clients[ci];
        client.seq += 1;
        let seq = client.seq;
        let value = self.next_value;
        self.next_value += 1;
        let op = if roll < 75 {
            KvOp::Put { key, value }
        } else {
            // Expect a recent value: sometimes right, sometimes not.
            let back = self.rng.random_range(0..4);
            let expected = if value > back + 1 {
                Some(value - 1 - back)
            } else {
                None
            };
            KvOp::Cas {
                key,
                expected,
                new: value,
            }
        };
        Request::Write { seq, op }
    }

    fn client_send(&mut self, ci: usize) {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let client = &mut self.clients[ci];
        let Some(pending) = &mut client.pending else {
            return;
        };
        pending.attempt = attempt;
        pending.attempts += 1;
        let (id, node, request) = (client.id, client.target, pending.request);
        let delay = self.rng.random_range(100..500);
        self.schedule(
            delay,
            Event::Request {
                node,
                client: id,
                attempt,
                request,
            },
        );
        self.schedule(
            CLIENT_TIMEOUT_US,
            Event::ClientTimeout {
                client: id,
                attempt,
            },
        );
    }

    fn on_request(&mut self, node_id: NodeId, client: ClientId, attempt: u64, request: Request) {
        let Some(node) = self.node_index(node_id) else {
            return;
        };
        let Some(replica) = &mut self.nodes[node].replica else {
            return; // A crashed node says nothing; the client times out.
        };
        match request {
            Request::Read { key } => {
                let read = self.next_read;
                self.next_read += 1;
                match replica.read(read) {
                    Ok(()) => {
                        self.nodes[node].reads.insert(read, (client, attempt, key));
                    }
                    Err(e) => {
                        let reply = refusal(&e);
                        self.reply(client, attempt, reply);
                    }
                }
            }
            Request::Write { seq, op } => {
                let command = Command {
                    client,
                    seq,
                    payload: op.encode(),
                };
                self.oracle.proposed(client, seq, &command.payload);
                let taken = match self.config.batch_us {
                    Some(_) => replica.enqueue(command),
                    None => replica.propose(command),
                };
                match taken {
                    Ok(()) => {
                        self.nodes[node].writes.insert((client, seq), attempt);
                        if let Some(delay) = self.config.batch_us
                            && !self.nodes[node].fill_due
                        {
                            self.nodes[node].fill_due = true;
                            self.schedule(delay, Event::Fill(node_id));
                        }
                    }
                    Err(e) => {
                        let reply = refusal(&e);
                        self.reply(client, attempt, reply);
                    }
                }
            }
        }
        self.process_outputs(node);
    }

    fn on_reply(&mut self, id: ClientId, attempt: u64, reply: Reply) {
        let Some(ci) = self.client_index(id) else {
            return;
        };
        let Some(pending) = &self.clients[ci].pending else {
            return;
        };
        if pending.attempt != attempt {
            return; // An answer to an attempt already given up on.
        }
        let outcome = match (pending.request, reply) {
            (Request::Read { .. }, Reply::Read(value)) => Some(Outcome::Ok(Some(value))),
            (Request::Write { .. }, Reply::Applied(KvReply::Written | KvReply::CasOk)) => {
                Some(Outcome::Ok(None))
            }
            (Request::Write { .. }, Reply::Applied(KvReply::CasFailed)) => Some(Outcome::Fail),
            (_, Reply::NotLeader(hint)) => {
                let next = hint.unwrap_or_else(|| self.next_member(self.clients[ci].target));
                self.clients[ci].target = next;
                None
            }
            _ => None,
        };
        match outcome {
            Some(outcome) => self.complete(ci, outcome),
            None => self.retry(ci, false),
        }
    }

    fn on_timeout(&mut self, id: ClientId, attempt: u64) {
        let Some(ci) = self.client_index(id) else {
            return;
        };
        let Some(pending) = &self.clients[ci].pending else {
            return;
        };
        if pending.attempt != attempt {
            return;
        }
        let line = format!("client {id} attempt {attempt} timed out");
        self.trace(|| line);
        self.clients[ci].target = self.next_member(self.clients[ci].target);
        self.retry(ci, true);
    }

    fn next_member(&self, id: NodeId) -> NodeId {
        let i = self.members.iter().position(|m| *m == id).unwrap_or(0);
        self.members[(i + 1) % self.members.len()]
    }

    fn retry(&mut self, ci: usize, timed_out: bool) {
        let Some(pending) = &mut self.clients[ci].pending else {
            return;
        };
        pending.uncertain |= timed_out;
        pending.attempt = 0; // No attempt is current until the next is sent.
        if pending.attempts >= CLIENT_ATTEMPTS_MAX {
            // A put refused every time certainly did not happen: `fail`. A
            // CAS cannot say so (its `fail` means "compared and missed"),
            // so it stays `info`, like anything that may have happened.
            let outcome = match pending.request {
                Request::Write {
                    op: KvOp::Put { .. },
                    ..
                } if !pending.uncertain => Outcome::Fail,
                _ => Outcome::Info,
            };
            self.complete(ci, outcome);
            return;
        }
        let id = self.clients[ci].id;
        if timed_out {
            self.client_send(ci);
        } else {
            self.schedule(CLIENT_RETRY_US, Event::ClientRetry(id));
        }
    }

    fn complete(&mut self, ci: usize, outcome: Outcome) {
        let Some(pending) = self.clients[ci].pending.take() else {
            return;
        };
        let op = &mut self.history[pending.history_index];
        let certain = !matches!(outcome, Outcome::Info);
        op.complete = certain.then_some(self.now);
        op.outcome = outcome;
        if certain && self.now >= self.heal_time && self.heal_time > 0 {
            self.first_ok_after_heal.get_or_insert(self.now);
        }
        if !certain {
            self.clients[ci].process += PROCESS_STRIDE;
        }
        let id = self.clients[ci].id;
        let outcome = match &op.outcome {
            Outcome::Ok(Some(Some(v))) => format!("ok, read {v}"),
            Outcome::Ok(Some(None)) => "ok, read absent".to_string(),
            Outcome::Ok(None) => "ok".to_string(),
            Outcome::Fail => "fail".to_string(),
            Outcome::Info => "unknown (gave up)".to_string(),
        };
        let line = format!("client {id} completes {} on {}: {outcome}", op.op, op.key);
        self.trace(|| line);
        let think = self.rng.random_range(0..=self.config.think_us_max);
        self.schedule(think, Event::ClientNext(id));
    }

    fn start_final_reads(&mut self) {
        let id = 1;
        let script: VecDeque<Request> = (0..self.config.keys)
            .map(|k| Request::Read { key: k as Key })
            .collect();
        let target = self.members[0];
        self.clients.push(Client {
            id,
            process: id,
            target,
            seq: 0,
            pending: None,
            script: Some(script),
            done: false,
        });
        self.trace(|| "final reads of every key".into());
        self.client_next(id);
    }

    // ----- nemesis -----

    fn nemesis_gap(&mut self) -> u64 {
        self.rng.random_range(50_000..600_000)
    }

    fn current_leader(&self) -> Option<NodeId> {
        // The live leader with the highest ballot, as a nemesis would guess.
        self.nodes
            .iter()
            .filter_map(|n| n.replica.as_ref())
            .filter(|r| r.is_leader())
            .max_by_key(|r| r.ballot().unwrap_or(Ballot::ZERO))
            .map(|r| r.id())
    }

    fn nemesis(&mut self) {
        let n = self.config.nemesis.clone();
        let mut choices: Vec<u8> = Vec::new();
        if n.crash {
            // Crash one node (the leader half the time); now and then all
            // of them at once, as in a power loss.
            choices.extend([0, 0, 0, 1]);
        }
        if n.partition {
            if self.network.is_partitioned() {
                choices.extend([3, 3]);
            } else {
                choices.extend([2, 2]);
            }
        }
        if n.disk {
            choices.extend([4, 4]);
        }
        let Some(&choice) = choices.get(self.rng.random_range(0..choices.len().max(1))) else {
            return;
        };
        match choice {
            0 => {
                let leader = self.current_leader();
                let victim = match leader {
                    Some(l) if self.rng.random_bool(0.5) => l,
                    _ => self.members[self.rng.random_range(0..self.members.len())],
                };
                self.crash(victim);
            }
            1 => {
                self.trace(|| "nemesis: power loss, every node crashes".into());
                for id in self.members.clone() {
                    self.crash(id);
                }
            }
            2 => self.partition(),
            4 => self.disk_fault(),
            _ => {
                self.network.heal();
                self.trace(|| "nemesis: heal partition".into());
            }
        }
    }

    fn crash(&mut self, id: NodeId) {
        let Some(node) = self.node_index(id) else {
            return;
        };
        if self.nodes[node].replica.is_none() {
            return;
        }
        self.crashes += 1;
        self.trace(|| format!("nemesis: crash n{id}"));
        self.take_down(node);
    }

    /// The node's storage failed (a failed fsync, a full disk): it cannot
    /// tell what is durable, so it stops, and is restarted later.
    fn stop_node(&mut self, node: usize, why: &str) {
        let id = self.nodes[node].id;
        let why = why.to_string();
        self.trace(|| format!("n{id} stops: {why}"));
        self.take_down(node);
    }

    /// The process dies: memory is lost, and of the disk only what was
    /// synced is sure to survive.
    fn take_down(&mut self, node: usize) {
        let id = self.nodes[node].id;
        let word = self.rng.next_u64();
        let n = &mut self.nodes[node];
        n.replica = None;
        n.store = None;
        n.unsynced.clear();
        n.barrier_pending = false;
        n.incarnation += 1;
        n.saving = false;
        n.kv = Kv::default();
        n.writes.clear();
        n.reads.clear();
        n.fs.crash(word);
        let down_us = self.rng.random_range(10_000..800_000);
        self.schedule(down_us, Event::Restart(id));
    }

    fn restart(&mut self, id: NodeId) {
        let Some(node) = self.node_index(id) else {
            return;
        };
        if self.nodes[node].replica.is_some() || self.nodes[node].refused {
            return;
        }
        let fs = self.nodes[node].fs.clone();
        let (store, restored) = match ReplicaStore::open(
            fs,
            std::path::Path::new(DATA_DIR),
            wal_options(),
            snapshot_options(),
        ) {
            Ok(opened) => opened,
            Err(e) => {
                let why = e.to_string();
                match e {
                    storage::Error::NoSpace { .. }
                    | storage::Error::SyncFailed { .. }
                    | storage::Error::Poisoned => {
                        self.trace(|| format!("n{id} cannot start yet: {why}"));
                        self.schedule(RESTART_RETRY_US, Event::Restart(id));
                    }
                    storage::Error::Corrupt { .. } | storage::Error::Undecodable { .. } => {
                        self.refuse_start(node, why);
                    }
                    _ => {
                        self.violate(format!("n{id} cannot open its storage: {why}"));
                        self.nodes[node].refused = true;
                    }
                }
                return;
            }
        };
        let kv = match &restored.snapshot {
            None => Some(Kv::default()),
            Some(snapshot) => Kv::decode(&snapshot.data),
        };
        let Some(kv) = kv else {
            self.refuse_start(node, "its snapshot does not decode".into());
            return;
        };
        let durable = restored.durable;
        // Everything synced must have survived: log trimming included.
        self.oracle
            .recovered(self.now, id, durable.snapshot_slot, &durable.accepted);
        // Acceptances that reached the disk without being synced survive
        // some crashes; they count as votes from now on.
        for (slot, (ballot, value)) in &durable.accepted {
            self.oracle.accepted(self.now, id, *slot, *ballot, value);
        }
        let slot = durable.snapshot_slot;
        let config = replica_config(&self.config, id, &self.members);
        let n = &mut self.nodes[node];
        n.kv = kv;
        n.store = Some(store);
        n.replica = Some(Replica::restart(config, durable));
        self.oracle.restarted(id, slot);
        self.trace(|| format!("n{id} restarts from its disk (snapshot up to slot {slot})"));
        self.process_outputs(node);
    }

    /// The node will not start on data it cannot trust, and stays down. Only
    /// a bit the nemesis flipped may cause this: a crash alone must always
    /// recover (torn tails are cut, never refused).
    fn refuse_start(&mut self, node: usize, why: String) {
        let id = self.nodes[node].id;
        self.trace(|| format!("n{id} refuses to start: {why}"));
        self.nodes[node].refused = true;
        self.refused_starts += 1;
        if self.flipped != Some(id) {
            self.violate(format!(
                "n{id} refused to start on a disk the nemesis never corrupted: {why}"
            ));
        }
    }

    /// Disk faults: a failed fsync, a full disk, or a bit flipped at rest
    /// in data the node already made durable (once per run, so that a
    /// majority remains that can start).
    fn disk_fault(&mut self) {
        let node = self.rng.random_range(0..self.nodes.len());
        let id = self.nodes[node].id;
        match self.rng.random_range(0..5) {
            0 | 1 => {
                self.nodes[node].fs.fail_next_syncs(1);
                self.trace(|| format!("nemesis: n{id}'s next fsync fails"));
            }
            2 | 3 => {
                let fs = &self.nodes[node].fs;
                let room = self.rng.random_range(0..16_384);
                fs.set_capacity_bytes(Some(fs.used_bytes() + room));
                let full_us = self.rng.random_range(50_000..600_000);
                self.schedule(full_us, Event::FreeDisk(id));
                self.trace(|| format!("nemesis: n{id}'s disk fills up ({room} bytes left)"));
            }
            _ => {
                if self.flipped.is_some() {
                    return;
                }
                if self.nodes[node].replica.is_some() {
                    self.crash(id);
                }
                if let Some((path, offset, bit)) = self.pick_flip(node) {
                    self.flipped = Some(id);
                    let _ = self.nodes[node].fs.flip_bit(&path, offset, bit);
                    let shown = path.display().to_string();
                    self.trace(|| format!("nemesis: flip bit {bit} of {shown} at byte {offset}"));
                }
            }
        }
    }

    /// A byte in durable, checksummed data of a down node: a sealed log
    /// segment (not the newest, whose tail a crash may explain) or a
    /// snapshot.
    fn pick_flip(&mut self, node: usize) -> Option<(std::path::PathBuf, u64, u8)> {
        let fs = self.nodes[node].fs.clone();
        let wal_dir = std::path::Path::new(DATA_DIR).join("wal");
        let snap_dir = std::path::Path::new(DATA_DIR).join("snap");
        let mut candidates: Vec<(std::path::PathBuf, u64, u64)> = Vec::new();
        let mut segments: Vec<String> = fs
            .list(&wal_dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.ends_with(".wal"))
            .collect();
        segments.sort();
        segments.pop();
        for name in segments {
            let path = wal_dir.join(name);
            let bytes = fs.read_file(&path).unwrap_or_default();
            let end = bytes.iter().rposition(|b| *b != 0).unwrap_or(0) as u64;
            if end > SEGMENT_HEADER_BYTES {
                candidates.push((path, SEGMENT_HEADER_BYTES, end));
            }
        }
        for name in fs.list(&snap_dir).unwrap_or_default() {
            if name.ends_with(".snap") {
                let path = snap_dir.join(name);
                let len = fs.read_file(&path).map_or(0, |b| b.len() as u64);
                if len > 0 {
                    candidates.push((path, 0, len - 1));
                }
            }
        }
        if candidates.is_empty() {
            return None;
        }
        let (path, lo, hi) = candidates.swap_remove(self.rng.random_range(0..candidates.len()));
        let offset = self.rng.random_range(lo..=hi);
        let bit = self.rng.random_range(0..8);
        Some((path, offset, bit))
    }

    fn partition(&mut self) {
        let mut ids = self.members.clone();
        ids.shuffle(&mut self.rng);
        let kind = self.rng.random_range(0..4);
        let description = match kind {
            0 => {
                let minority = ids.len() / 2;
                let (a, b) = ids.split_at(minority);
                self.network.split(a, b);
                format!("majority/minority {:?} | {:?}", b, a)
            }
            1 => {
                let leader = self.current_leader().unwrap_or(ids[0]);
                let rest: Vec<NodeId> = ids.iter().copied().filter(|x| *x != leader).collect();
                self.network.split(&[leader], &rest);
                format!("isolate leader n{leader}")
            }
            2 => {
                // A bridge: two sides that reach each other only through one node.
                let bridge = ids[0];
                let rest = &ids[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                self.network.split(a, b);
                format!("bridge n{bridge} between {a:?} and {b:?}")
            }
            _ => {
                let from = ids[0];
                for to in &ids[1..] {
                    self.network.cut_one_way(from, *to);
                }
                format!("one-way: n{from} cannot send")
            }
        };
        self.trace(|| format!("nemesis: partition {description}"));
    }

    fn heal(&mut self) {
        self.faults_on = false;
        self.heal_time = self.now.max(1);
        self.network.heal();
        self.network.config = NetConfig::calm();
        for n in &self.nodes {
            n.fs.set_capacity_bytes(None);
            n.fs.fail_next_syncs(0);
        }
        let crashed: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.replica.is_none())
            .map(|n| n.id)
            .collect();
        self.trace(|| "heal: all links restored, all nodes restarted".into());
        for id in crashed {
            self.restart(id);
        }
    }

    // ----- the verdict -----

    fn finish(mut self) -> RunReport {
        // Replicas that applied the same prefix must hold the same state.
        let mut by_applied: BTreeMap<u64, (NodeId, u64)> = BTreeMap::new();
        for i in 0..self.nodes.len() {
            let Some(replica) = &self.nodes[i].replica else {
                continue;
            };
            let applied = replica.applied();
            let digest = self.nodes[i].kv.digest();
            let id = self.nodes[i].id;
            match by_applied.get(&applied) {
                Some((other, d)) if *d != digest => {
                    let what = format!(
                        "n{id} and n{other} applied up to slot {applied} but hold different states"
                    );
                    self.violate(what);
                }
                _ => {
                    by_applied.insert(applied, (id, digest));
                }
            }
        }
        let final_reads_done = self.clients.iter().any(|c| c.id == 1 && c.done);
        if self.first_ok_after_heal.is_none() {
            self.violate("no operation completed after the faults healed".into());
        }
        if !final_reads_done {
            self.violate("the final reads did not finish after the faults healed".into());
        }
        // Timed only to report simulation speed apart from checking speed.
        let started = std::time::Instant::now();
        let verdict = check::check(&self.history, &check::Limits::default());
        let check_time = started.elapsed();
        let commits = self.oracle.chosen_count() as u64;
        let largest_batch = self.oracle.largest_batch();
        let mut report = RunReport::new(
            &self.config,
            self.history,
            verdict,
            self.oracle.violations,
            commits,
            self.leader_changes,
            self.crashes,
            self.refused_starts,
            self.events,
            self.now,
            self.heal_time,
            self.first_ok_after_heal,
            self.trace,
            check_time,
        );
        report.largest_batch = largest_batch;
        report
    }
}

fn describe_request(request: &Request) -> String {
    let show = |v: Option<u64>| v.map_or("absent".to_string(), |v| v.to_string());
    match request {
        Request::Read { key } => format!("read k{key}"),
        Request::Write {
            seq,
            op: KvOp::Put { key, value },
        } => format!("#{seq} put k{key} = {value}"),
        Request::Write {
            seq,
            op: KvOp::Cas { key, expected, new },
        } => format!("#{seq} cas k{key} {} -> {new}", show(*expected)),
    }
}

fn refusal(e: &ProposeError) -> Reply {
    match e {
        ProposeError::NotLeader { leader, .. } => Reply::NotLeader(*leader),
        ProposeError::Busy { .. } => Reply::Busy,
    }
}

fn replica_config(config: &SimConfig, id: NodeId, members: &[NodeId]) -> Config {
    let mut c = Config::new(id, members.to_vec());
    c.bug = config.bug;
    c
}
