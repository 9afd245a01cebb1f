//! One simulated run: replicas, a network, clients and a nemesis under
//! virtual time, all drawn from one seed.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use check::{Op, Operation, Outcome};
use kv::{
    Compare, CompareResult, CompareTarget, EventType, Limits, MemberChange, PutRequest,
    RangeRequest, RequestOp, Store, TxnRequest, WatchCreateRequest, WatchResponse,
};
use member::{
    Checkpoint, Clock, Config as MemberConfig, Effect, Member, MemberError, PeerMessage, Query,
    Reply as MemberReply, Request as MemberRequest,
};
use paxos::multi::{ClientId, Config, Envelope, Membership, Record, Replica};
use paxos::{Ballot, NodeId};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use storage::{
    Fs, ReplicaStore, SEGMENT_HEADER_BYTES, SimFs, SnapshotChunk, SnapshotOptions, SnapshotSender,
    WalOptions,
};

use crate::config::{CLOCK_DRIFT_PPM_MAX, SimConfig};
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
/// A node snapshots its state machine (and trims its log) after this many
/// applied commands.
const SNAPSHOT_EVERY_COMMANDS: u64 = 50;
/// The chance that a node crashes between writing a step's records and
/// syncing them (after the step's first messages left).
const CRASH_BEFORE_SYNC: f64 = 0.002;
/// The chance that a node crashes right after saving a snapshot and
/// trimming its log.
const CRASH_AFTER_TRIM: f64 = 0.05;
/// A turn ends at most this long after the input that began it, in
/// virtual microseconds.
const TURN_US_MAX: u64 = 500;
/// A member answers "request timed out" after this long (virtual ms).
const REQUEST_TIMEOUT_MS: u64 = 1_000;
/// Where each node keeps its data on its own simulated disk.
const DATA_DIR: &str = "/synod";
/// A node that could not start for a reason that may pass (a full disk, a
/// failed fsync) tries again after this long.
const RESTART_RETRY_US: u64 = 100_000;

/// Bytes per snapshot chunk on the wire: small, so that transfers take
/// several chunks and some break and resume.
const SNAPSHOT_CHUNK_BYTES: usize = 256;

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

/// A key: the simulator uses a handful, named `k0`, `k1`, ...
type Key = u8;

/// A client's write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KvOp {
    /// Set `key` to `value`.
    Put { key: Key, value: u64 },
    /// Make `key` absent.
    Delete { key: Key },
    /// Set `key` to `new` if it holds `expected` (`None`: absent): an etcd
    /// transaction comparing the value (or the create revision with 0).
    Cas {
        key: Key,
        expected: Option<u64>,
        new: u64,
    },
}

impl KvOp {
    /// The etcd command that carries it out.
    fn command(&self) -> kv::Command {
        let put = |key: Key, value: u64| PutRequest {
            key: key_bytes(key),
            value: value.to_string().into_bytes(),
            ..PutRequest::default()
        };
        match *self {
            KvOp::Put { key, value } => kv::Command::Put(put(key, value)),
            KvOp::Delete { key } => kv::Command::DeleteRange(kv::DeleteRangeRequest {
                key: key_bytes(key),
                ..kv::DeleteRangeRequest::default()
            }),
            KvOp::Cas { key, expected, new } => {
                let target = match expected {
                    Some(v) => CompareTarget::Value(v.to_string().into_bytes()),
                    None => CompareTarget::CreateRevision(0),
                };
                kv::Command::Txn(TxnRequest {
                    compare: vec![Compare {
                        result: CompareResult::Equal,
                        target,
                        key: key_bytes(key),
                        range_end: Vec::new(),
                    }],
                    success: vec![RequestOp::Put(put(key, new))],
                    failure: Vec::new(),
                })
            }
        }
    }
}

fn key_bytes(key: Key) -> Vec<u8> {
    format!("k{key}").into_bytes()
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KvReply {
    Written,
    Deleted,
    CasOk,
    CasFailed,
}

/// Who a member answers: the client and its attempt.
type Token = (ClientId, u64);

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
    /// No leader known: try another member. Not applied by this attempt,
    /// but an earlier one handed to a former leader may still be.
    NotLeader,
    /// The leader's queue was full.
    Busy,
    /// The member gave up waiting: it may or may not have been applied.
    Unknown,
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
    /// A member-to-member message (forwarded commands, read indexes,
    /// snapshot chunks).
    DeliverPeer {
        from: NodeId,
        to: NodeId,
        message: PeerMessage,
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
    /// The end of a node's turn: its member's `Ready` is carried out,
    /// covering every input since the last (unless the node died since).
    Turn {
        node: NodeId,
        incarnation: u64,
    },
    Nemesis,
    Restart(NodeId),
    FreeDisk(NodeId),
    Heal,
    StopClients,
    FinalReads,
    /// The lease client takes its next step.
    LeaseNext,
    /// A member's answer to the lease client.
    LeaseReply {
        attempt: u64,
        answer: LeaseAnswer,
    },
    /// The lease client gives up waiting.
    LeaseTimeout {
        attempt: u64,
    },
    /// A watcher (re)opens its stream on a member.
    WatchConnect(usize),
    /// A watch response reaches its watcher (in stream order).
    WatchDeliver {
        watcher: usize,
        session: u64,
        response: WatchResponse,
    },
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

/// A node: the member (absent while down) and its own simulated disk with
/// the real write-ahead log and snapshots on it.
struct Node {
    id: NodeId,
    /// The replica, the real key-value store and every decision around
    /// them, as the server runs them.
    member: Option<Member<Token>>,
    /// The disk survives crashes, minus what was not synced.
    fs: SimFs,
    /// The log and snapshots, open while the node runs.
    store: Option<ReplicaStore<SimFs>>,
    /// Counts the node's lives, so that work a dead life started is dropped.
    incarnation: u64,
    /// The node refused to start on data it cannot trust: it stays down.
    refused: bool,
    /// A `Fill` is scheduled for the commands queued here.
    fill_due: bool,
    /// A `Turn` is scheduled: inputs taken meanwhile join it.
    turn_due: bool,
    /// When this life of the node began: its monotonic clock starts from
    /// zero there, as the server's does at each start.
    started_at: u64,
    /// How fast this life's clock runs, in parts per million off true
    /// time (the clock nemesis; 0 otherwise).
    drift_ppm: i64,
    /// Frozen until then (the clock nemesis): inputs wait, the clock runs.
    paused_until: u64,
    /// The voters it was first started with: the initial cluster's, or
    /// none for a member that joined later (it learns its configuration).
    initial_voters: Vec<NodeId>,
    /// Removed from the cluster: stopped for good, as etcd's members stop.
    removed: bool,
}

impl Node {
    /// A node with an empty disk, started from `initial_voters` (none: a
    /// member joining a running cluster), its life's randomness from `seed`.
    fn fresh(
        config: &SimConfig,
        id: NodeId,
        initial_voters: Vec<NodeId>,
        seed: u64,
        now: u64,
    ) -> Node {
        let fs = SimFs::new();
        let store = ReplicaStore::open(
            fs.clone(),
            std::path::Path::new(DATA_DIR),
            wal_options(),
            snapshot_options(),
        )
        .ok()
        .map(|(store, _)| store);
        let member = store.as_ref().map(|_| {
            Member::new(
                Replica::new(replica_config(config, id, &initial_voters)),
                Store::new(Limits::default()),
                member_config(config, seed, &initial_voters),
            )
        });
        Node {
            id,
            refused: member.is_none(),
            member,
            fs,
            store,
            incarnation: 0,
            fill_due: false,
            turn_due: false,
            started_at: now,
            drift_ppm: drift_ppm(config, seed),
            paused_until: 0,
            initial_voters,
            removed: false,
        }
    }
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
    /// A session of its own (`seq` numbers its writes, and a retry resends
    /// the same pair), or none, as etcd's clients: the member it asks
    /// numbers its writes in the member's session, and a write whose
    /// outcome is unknown is not sent again (a resend would be a new
    /// write).
    own_session: bool,
    seq: u64,
    pending: Option<Pending>,
    /// Fixed operations to run (the final reads); random ones otherwise.
    script: Option<VecDeque<Request>>,
    done: bool,
}

/// A watch stream open on a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stream {
    node: NodeId,
    /// The member's watch session.
    session: u64,
}

/// One event as a watcher saw it: revision, key, put (or delete), value.
type SeenEvent = (i64, Vec<u8>, bool, Vec<u8>);

/// A client watching every key the clients write, as etcd's clients do:
/// on a broken stream it reconnects to another member and resumes from the
/// revision after the last event it saw.
struct Watcher {
    target: NodeId,
    stream: Option<Stream>,
    /// The first revision not seen yet.
    next_revision: i64,
    /// Everything seen, in order.
    seen: Vec<SeenEvent>,
    /// The last delivery's time: a stream delivers in order.
    last_delivery: u64,
}

/// The lease client's id in tokens: apart from the clients' (100 on).
const LEASE_CLIENT: ClientId = 99;
/// The nemesis's own id in tokens, for the configuration changes it asks.
const NEMESIS_CLIENT: ClientId = 98;
/// Voters the membership nemesis keeps the cluster between.
const VOTERS_MIN: usize = 3;
const VOTERS_MAX: usize = 5;
/// The TTL of the lease client's leases, in seconds (the store's minimum).
const LEASE_TTL_S: i64 = 2;
/// After the faults heal, a lease's key must be gone this long after its
/// TTL ran out from the last keep-alive or leader change: ticks, the
/// expiry's own round, a retry of a lost one.
const LEASE_LATE_US: u64 = 1_500_000;

/// What a member answered the lease client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseAnswer {
    Granted,
    /// A keep-alive's answer: the TTL (0: the lease is gone).
    KeptAlive(i64),
    Put,
    /// The key is there (or not).
    Present(bool),
    /// Refused, timed out, or the lease no longer exists for a put.
    Failed,
}

/// The lease client's steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseStep {
    Grant,
    Put,
    KeepAlive,
    Read,
}

/// One client holding a key on a lease, as a lock holder does: grant,
/// put, keep alive a few times, stop, and watch the key go. The lease
/// oracle: the key never disappears before the TTL has run out from the
/// last acknowledged keep-alive, and, once the faults healed, it is gone
/// soon after the TTL ran out from the last keep-alive sent or the last
/// leader change, whichever is later.
struct LeaseClient {
    target: NodeId,
    step: LeaseStep,
    /// The attempt awaited (0: none).
    attempt: u64,
    /// When the awaited request was sent.
    sent: u64,
    lease: i64,
    /// Send time of the latest acknowledged grant or keep-alive.
    acked_at: u64,
    /// Send time of the latest grant or keep-alive sent.
    renewed_at: u64,
    keepalives_left: u32,
    /// Leases checked to the end (granted, kept, seen gone).
    leases_done: u64,
}

/// Liveness: once every fault has healed, some client operation must
/// complete within this long. It covers a restart, an election with
/// backoff, a pause the nemesis began just before the heal (up to 2 s),
/// and a client's retry timer.
const RECOVERY_US_MAX: u64 = 5_000_000;

/// Watchers per run.
const WATCHERS: usize = 2;
/// A watcher whose stream broke reconnects after up to this long.
const WATCH_RECONNECT_US: u64 = 100_000;

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
    watchers: Vec<Watcher>,
    lease_client: LeaseClient,
    /// The last time some member became leader.
    last_elected_at: u64,
    next_watch_session: u64,
    /// Serializable reads: the member, the key, the revision it reported
    /// and the value it read.
    serializable_reads: Vec<(NodeId, Key, i64, Option<Vec<u8>>)>,
    next_attempt: u64,
    next_value: u64,
    /// Until then every node draws the same election timeout (the
    /// dueling-candidates nemesis).
    lockstep_until: u64,
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
    /// The id the next member added gets (ids are never reused).
    next_node_id: NodeId,
    /// Members added to the cluster by a change not yet applied, with the
    /// nemesis request that adds them.
    joining: BTreeMap<NodeId, u64>,
    /// The slot of the last configuration change applied somewhere.
    config_slot: u64,
    /// Configuration changes applied.
    member_changes: u64,
    /// Members a change removed, by the change's slot: they keep running
    /// until the change has settled (the voters it brings in know every
    /// slot up to it), then stop for good.
    leaving: BTreeMap<u64, Vec<NodeId>>,
}

impl World {
    /// Builds the world for `seed`.
    pub fn new(seed: u64, config: SimConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let members: Vec<NodeId> = (1..=config.nodes as NodeId).collect();
        let nodes = members
            .iter()
            .map(|&id| Node::fresh(&config, id, members.clone(), rng.next_u64(), 0))
            .collect();
        let n = &config.nemesis;
        let faulty_net = NetConfig {
            delay_min_us: 200,
            delay_mean_us: if n.delay { 1_500 } else { 300 },
            loss: if n.loss { 0.05 } else { 0.0 },
            duplicate: if n.duplicate { 0.05 } else { 0.0 },
            spike: if n.delay { 0.01 } else { 0.0 },
            spike_us: 100_000,
            hold: if n.delay { 0.001 } else { 0.0 },
            hold_us: (500_000, 3_000_000),
        };
        let clients = (0..config.clients)
            .map(|i| Client {
                id: 100 + i as ClientId,
                process: 100 + i as u64,
                target: members[rng.random_range(0..members.len())],
                own_session: i % 2 == 0,
                seq: 0,
                pending: None,
                script: None,
                done: false,
            })
            .collect();
        let watchers = (0..WATCHERS)
            .map(|_| Watcher {
                target: members[rng.random_range(0..members.len())],
                stream: None,
                next_revision: 1,
                seen: Vec::new(),
                last_delivery: 0,
            })
            .collect();
        let lease_client = LeaseClient {
            target: members[rng.random_range(0..members.len())],
            step: LeaseStep::Grant,
            attempt: 0,
            sent: 0,
            lease: 1,
            acked_at: 0,
            renewed_at: 0,
            keepalives_left: 0,
            leases_done: 0,
        };
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
            watchers,
            lease_client,
            last_elected_at: 0,
            next_watch_session: 1,
            serializable_reads: Vec::new(),
            next_attempt: 1,
            next_value: 1,
            lockstep_until: 0,
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
            next_node_id: config.nodes as NodeId + 1,
            joining: BTreeMap::new(),
            config_slot: 0,
            member_changes: 0,
            leaving: BTreeMap::new(),
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
        for w in 0..self.watchers.len() {
            let delay = self.rng.random_range(0..WATCH_RECONNECT_US);
            self.schedule(delay, Event::WatchConnect(w));
        }
        let delay = self.rng.random_range(0..100_000);
        self.schedule(delay, Event::LeaseNext);
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
            // An invariant the code asserts (in the core, the member, the
            // store) ends the run as a violation, with the history so far.
            let event = next.event;
            let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.handle(event);
            }));
            if let Err(payload) = handled {
                let what = crate::panic_message(payload.as_ref());
                self.violate(format!("an invariant assertion failed: {what}"));
                break;
            }
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
        // A paused node takes nothing until it resumes; then it takes it
        // all, its clock having run on.
        if let Some(node) = self.paused_target(&event) {
            let wait = self.nodes[node].paused_until - self.now;
            self.schedule(wait, event);
            return;
        }
        match event {
            Event::Deliver(envelope) => {
                let to = envelope.to;
                let Some(node) = self.node_index(to) else {
                    return;
                };
                if self.nodes[node].member.is_none() {
                    return;
                }
                let line = describe(&envelope);
                self.trace(|| line);
                if let Some(member) = self.member(node) {
                    member.step(envelope);
                }
                self.end_turn_soon(node);
            }
            Event::DeliverPeer { from, to, message } => self.deliver_peer(from, to, message),
            Event::Tick(id) => {
                // In lockstep every node draws the same election timeout:
                // followers that lost their leader stand together.
                let random = if self.now < self.lockstep_until {
                    0
                } else {
                    self.rng.next_u64()
                };
                if let Some(node) = self.node_index(id)
                    && let Some(member) = self.member(node)
                {
                    member.tick(random);
                    self.end_turn_soon(node);
                }
                if !self.leaving.is_empty() {
                    self.retire_leavers();
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
                    if let Some(member) = self.member(node) {
                        member.fill();
                        self.process(node);
                    }
                }
            }
            Event::Restart(id) => self.restart(id),
            Event::Turn { node, incarnation } => {
                if let Some(i) = self.node_index(node)
                    && self.nodes[i].incarnation == incarnation
                {
                    self.nodes[i].turn_due = false;
                    self.process(i);
                }
            }
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
            Event::Heal => self.heal(),
            Event::StopClients => {
                self.clients_on = false;
                self.trace(|| "clients stop; draining".into());
                let delay = self.config.heal_us / 4;
                self.schedule(delay.max(TICK_US), Event::FinalReads);
            }
            Event::FinalReads => self.start_final_reads(),
            Event::LeaseNext => self.lease_send(),
            Event::LeaseReply { attempt, answer } => self.lease_reply(attempt, answer),
            Event::LeaseTimeout { attempt } => self.lease_reply(attempt, LeaseAnswer::Failed),
            Event::WatchConnect(w) => self.watch_connect(w),
            Event::WatchDeliver {
                watcher,
                session,
                response,
            } => self.watch_deliver(watcher, session, response),
        }
    }

    /// Whether the node is frozen by the clock nemesis now.
    fn is_paused(&self, node: usize) -> bool {
        self.nodes[node].paused_until > self.now
    }

    /// The paused node `event` is for, if it is for one.
    fn paused_target(&self, event: &Event) -> Option<usize> {
        let id = match event {
            Event::Deliver(envelope) => envelope.to,
            Event::DeliverPeer { to, .. } => *to,
            Event::Tick(id) | Event::Fill(id) => *id,
            Event::Request { node, .. }
            | Event::Turn { node, .. }
            | Event::SnapshotSaved { node, .. } => *node,
            _ => return None,
        };
        let node = self.node_index(id)?;
        self.is_paused(node).then_some(node)
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

    /// Ends the node's turn a little later, as the server's driver takes
    /// every input that has arrived before it carries out a turn's
    /// `Ready`: inputs that arrive meanwhile join the turn (several
    /// messages stepped before one `Ready`, a read index answered between
    /// a decision's arrival and its apply), and a crash before the turn
    /// ends loses what it would have sent.
    fn end_turn_soon(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.turn_due || n.member.is_none() {
            return;
        }
        n.turn_due = true;
        let event = Event::Turn {
            node: n.id,
            incarnation: n.incarnation,
        };
        let delay = self.rng.random_range(0..TURN_US_MAX);
        self.schedule(delay, event);
    }

    /// The member of a running node, with its clocks set to now.
    fn member(&mut self, node: usize) -> Option<&mut Member<Token>> {
        let n = &self.nodes[node];
        let elapsed_us = u128::from(self.now.saturating_sub(n.started_at));
        let rate = (1_000_000 + i128::from(n.drift_ppm)) as u128;
        let clock = Clock {
            mono_ms: (elapsed_us * rate / 1_000_000_000) as u64,
        };
        let member = self.nodes[node].member.as_mut()?;
        member.set_clock(clock);
        Some(member)
    }

    /// Carries out the member's `Ready` as the server's driver does, stage
    /// by stage: a stage's `now` effects, its records appended and (at a
    /// barrier) synced, then its `after` effects. A failed append or sync
    /// stops the node.
    fn process(&mut self, node: usize) {
        let id = self.nodes[node].id;
        let Some(member) = &mut self.nodes[node].member else {
            return;
        };
        let elections = member.counters().leader_changes;
        let ready = member.ready();
        let elected = member.counters().leader_changes - elections;
        if elected > 0 {
            self.leader_changes += elected;
            self.last_elected_at = self.now;
            let ballot = member.replica().ballot().unwrap_or(Ballot::ZERO);
            self.trace(|| format!("n{id} elected leader with ballot {ballot}"));
        }
        for stage in ready.stages {
            for effect in stage.now {
                self.effect(node, effect);
            }
            if !stage.records.is_empty() {
                let n = &mut self.nodes[node];
                let Some(store) = &mut n.store else {
                    return;
                };
                for record in &stage.records {
                    if let Err(e) = store.append(record) {
                        self.stop_node(node, &e.to_string());
                        return;
                    }
                }
                if stage.sync {
                    // A crash inside the step: some of its messages are
                    // out, its records written but not synced.
                    if self.faults_on
                        && self.config.nemesis.crash
                        && self.rng.random_bool(CRASH_BEFORE_SYNC)
                    {
                        self.trace(|| format!("nemesis: crash n{id} before its fsync"));
                        self.crashes += 1;
                        self.take_down(node);
                        return;
                    }
                    let Some(store) = &mut self.nodes[node].store else {
                        return;
                    };
                    if let Err(e) = store.sync() {
                        self.stop_node(node, &e.to_string());
                        return;
                    }
                    // Durable now: the oracle counts the acceptances.
                    for record in &stage.records {
                        match record {
                            Record::Accept {
                                slot,
                                ballot,
                                value,
                            } => {
                                self.oracle.synced(id, *slot, *ballot);
                                self.oracle.accepted(self.now, id, *slot, *ballot, value);
                            }
                            Record::Promise(ballot) => self.oracle.synced_promise(id, *ballot),
                            Record::Commit { .. } => {}
                        }
                    }
                }
            }
            for effect in stage.after {
                self.effect(node, effect);
            }
            if self.nodes[node].member.is_none() {
                return;
            }
        }
        if let Some(checkpoint) = ready.checkpoint {
            self.checkpoint(node, checkpoint);
        }
        // Timed batching: commands queued here (a client's, a peer's, the
        // member's own) get slots at the next `Fill`.
        if let Some(delay) = self.config.batch_us {
            let n = &mut self.nodes[node];
            if !n.fill_due && n.member.as_ref().is_some_and(|m| m.replica().queued() > 0) {
                n.fill_due = true;
                self.schedule(delay, Event::Fill(id));
            }
        }
    }

    /// Carries out one effect of a member's `Ready`.
    fn effect(&mut self, node: usize, effect: Effect<Token>) {
        let id = self.nodes[node].id;
        match effect {
            Effect::Send(envelope) => {
                let trimmed = self.nodes[node]
                    .member
                    .as_ref()
                    .map_or(0, |m| m.replica().snapshot_slot());
                self.oracle.sent(self.now, id, &envelope.message, trimmed);
                self.send(envelope)
            }
            Effect::Peer { to, message } => self.send_peer(id, to, message),
            Effect::Reply {
                token: (LEASE_CLIENT, attempt),
                result,
            } => {
                let answer = lease_answer(result);
                let delay = self.rng.random_range(100..500);
                self.schedule(delay, Event::LeaseReply { attempt, answer });
            }
            Effect::Reply {
                token: (NEMESIS_CLIENT, attempt),
                result,
            } => self.change_answered(attempt, result),
            Effect::Reply {
                token: (client, attempt),
                result,
            } => {
                let reply = client_reply(result);
                self.reply(client, attempt, reply);
            }
            Effect::Watch { session, response } => self.watch_send(id, session, response),
            Effect::Applied { slot, value } => {
                self.oracle.applied(self.now, id, slot, &value);
                if let Some(membership) = value.membership() {
                    self.config_applied(slot, membership.clone());
                }
            }
            Effect::SendSnapshot { to, min_slot } => self.send_snapshot(node, to, min_slot),
        }
    }

    /// Snapshots the state machine, as the server does: the member has
    /// frozen the store and trimmed its log; the log file is marked now
    /// and trimmed once the image is saved (later, or never if the node
    /// dies first).
    fn checkpoint(&mut self, node: usize, checkpoint: Checkpoint) {
        let n = &mut self.nodes[node];
        let Some(store) = &mut n.store else {
            return;
        };
        store.mark_snapshot(checkpoint.slot);
        let event = Event::SnapshotSaved {
            node: n.id,
            incarnation: n.incarnation,
            slot: checkpoint.slot,
            image: checkpoint.image.snapshot(),
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
        let (Some(member), Some(store)) = (&mut n.member, &mut n.store) else {
            return;
        };
        if n.incarnation != incarnation {
            return;
        }
        let saved = store
            .snapshot_writer()
            .save(slot, image)
            .and_then(|()| store.trim_after_snapshot(slot));
        member.snapshot_saved();
        if let Err(e) = saved {
            self.stop_node(node, &e.to_string());
            return;
        }
        // A crash right after a snapshot and a trim.
        if self.faults_on && self.config.nemesis.crash && self.rng.random_bool(CRASH_AFTER_TRIM) {
            self.trace(|| format!("nemesis: crash n{id} right after its snapshot and trim"));
            self.crashes += 1;
            self.take_down(node);
        }
    }

    /// Sends a member-to-member message over the faulty network.
    fn send_peer(&mut self, from: NodeId, to: NodeId, message: PeerMessage) {
        let delays = self.network.deliveries(&mut self.rng, from, to);
        if delays.is_empty() {
            self.trace(|| format!("dropped n{from} -> n{to}  {}", describe_peer(&message)));
        }
        for delay in delays {
            self.schedule(
                delay,
                Event::DeliverPeer {
                    from,
                    to,
                    message: message.clone(),
                },
            );
        }
    }

    fn deliver_peer(&mut self, from: NodeId, to: NodeId, message: PeerMessage) {
        let Some(node) = self.node_index(to) else {
            return;
        };
        if self.nodes[node].member.is_none() {
            return;
        }
        let line = format!("n{from} -> n{to}  {}", describe_peer(&message));
        self.trace(|| line);
        match message {
            PeerMessage::Chunk(chunk) => self.receive_chunk(node, from, chunk),
            other => {
                if let Some(member) = self.member(node) {
                    member.receive(from, other);
                }
                self.end_turn_soon(node);
            }
        }
    }

    /// Streams the latest durable snapshot to a lagging peer in checksummed
    /// chunks over the faulty network; lost chunks break the transfer, which
    /// the receiver resumes when the next one comes.
    fn send_snapshot(&mut self, node: usize, to: NodeId, min_slot: u64) {
        let id = self.nodes[node].id;
        let Some(store) = &self.nodes[node].store else {
            return;
        };
        let Ok(Some(snapshot)) = store.latest_snapshot_from(min_slot) else {
            return;
        };
        let slot = snapshot.index;
        let sender = SnapshotSender::new(slot, snapshot.data, SNAPSHOT_CHUNK_BYTES);
        let chunks: Vec<SnapshotChunk> = sender.chunks_from(0).collect();
        let count = chunks.len();
        self.trace(|| format!("n{id} -> n{to}  snapshot up to slot {slot} in {count} chunks"));
        // One stream, as over the transport's TCP connection: chunks may be
        // lost or repeated, but never overtake one another.
        let mut last_at = 0;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let delays = self.network.deliveries(&mut self.rng, id, to);
            for delay in delays {
                let at = (delay + 100 * i as u64).max(last_at + 1);
                last_at = at;
                self.schedule(
                    at,
                    Event::DeliverPeer {
                        from: id,
                        to,
                        message: PeerMessage::Chunk(chunk.clone()),
                    },
                );
            }
        }
    }

    fn receive_chunk(&mut self, node: usize, from: NodeId, chunk: SnapshotChunk) {
        let to = self.nodes[node].id;
        let n = &mut self.nodes[node];
        let (Some(member), Some(store)) = (&mut n.member, &mut n.store) else {
            return;
        };
        let snapshot = match store.receive(&chunk, member.replica().commit_index()) {
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
        let slot = snapshot.index;
        if let Err(why) = member.install_snapshot(from, slot, &snapshot.data) {
            self.stop_node(node, &why);
            return;
        }
        self.oracle.installed_snapshot(to, slot);
        self.trace(|| format!("n{to} installs n{from}'s snapshot up to slot {slot}"));
        self.process(node);
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
                KvOp::Put { key, .. } | KvOp::Delete { key } | KvOp::Cas { key, .. } => key,
            },
        };
        let op = match request {
            Request::Read { .. } => Op::Read,
            Request::Write {
                op: KvOp::Put { value, .. },
                ..
            } => Op::Write(value),
            Request::Write {
                op: KvOp::Delete { .. },
                ..
            } => Op::Delete,
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
        if roll < 10 {
            self.serializable_read(ci, key);
        }
        if roll < 40 {
            return Request::Read { key };
        }
        let client = &mut self.clients[ci];
        client.seq += 1;
        let seq = client.seq;
        let value = self.next_value;
        self.next_value += 1;
        let op = if roll < 68 {
            KvOp::Put { key, value }
        } else if roll < 78 {
            KvOp::Delete { key }
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

    /// A serializable read at the client's member, beside its next
    /// operation: served from that member's store as it is, so it may be
    /// stale, but it must be the committed history's state at the revision
    /// it reports (checked at the end).
    fn serializable_read(&mut self, ci: usize, key: Key) {
        let target = self.clients[ci].target;
        let Some(node) = self.node_index(target) else {
            return;
        };
        if self.is_paused(node) {
            return;
        }
        let range = RangeRequest {
            key: key_bytes(key),
            ..RangeRequest::default()
        };
        let Some(member) = self.member(node) else {
            return;
        };
        if let Ok(MemberReply::Range(r)) = member.serve_serializable(&Query::Range(range)) {
            let value = r.kvs.first().map(|kv| kv.value.clone());
            let revision = r.header.revision;
            self.trace(|| {
                format!("serializable read of k{key} on n{target} at revision {revision}")
            });
            self.serializable_reads.push((target, key, revision, value));
        }
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
        let own_session = self
            .client_index(client)
            .is_none_or(|ci| self.clients[ci].own_session);
        if let Request::Write { seq, op } = request {
            if own_session {
                self.oracle.proposed(client, seq, &op.command().encode());
            } else {
                self.oracle.proposed_sessionless(&op.command().encode());
            }
        }
        let Some(member) = self.member(node) else {
            return; // A crashed node says nothing; the client times out.
        };
        let token = (client, attempt);
        match request {
            Request::Read { key } => {
                let range = RangeRequest {
                    key: key_bytes(key),
                    ..RangeRequest::default()
                };
                member.request(token, MemberRequest::Read(Query::Range(range)));
            }
            // The client's own session: a retry, here or elsewhere, is
            // applied once.
            Request::Write { seq, op } if own_session => {
                member.propose_as(token, client, seq, op.command())
            }
            // The member's session: its forwarding and re-forwarding
            // after a leader change must apply the write once.
            Request::Write { op, .. } => {
                member.request(token, MemberRequest::Propose(op.command()))
            }
        }
        self.end_turn_soon(node);
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
        let pending_request = pending.request;
        let outcome = match (pending.request, reply) {
            (Request::Read { .. }, Reply::Read(value)) => Some(Outcome::Ok(Some(value))),
            (
                Request::Write { .. },
                Reply::Applied(KvReply::Written | KvReply::Deleted | KvReply::CasOk),
            ) => Some(Outcome::Ok(None)),
            (Request::Write { .. }, Reply::Applied(KvReply::CasFailed)) => Some(Outcome::Fail),
            (_, Reply::NotLeader) => {
                // As etcd's clients do: another endpoint.
                self.clients[ci].target = self.next_member(self.clients[ci].target);
                None
            }
            _ => None,
        };
        match outcome {
            Some(outcome) => self.complete(ci, outcome),
            // A member that refuses a command it handed to a former leader
            // cannot say whether that one will still decide it.
            None => self.retry(ci, matches!(pending_request, Request::Write { .. })),
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
        next_of(&self.members, id)
    }

    fn retry(&mut self, ci: usize, uncertain: bool) {
        let own_session = self.clients[ci].own_session;
        let Some(pending) = &mut self.clients[ci].pending else {
            return;
        };
        pending.uncertain |= uncertain;
        pending.attempt = 0; // No attempt is current until the next is sent.
        let resend_is_new_write = !own_session && matches!(pending.request, Request::Write { .. });
        if resend_is_new_write && pending.uncertain {
            self.complete(ci, Outcome::Info);
            return;
        }
        if pending.attempts >= CLIENT_ATTEMPTS_MAX {
            // A put refused every time certainly did not happen: `fail`. A
            // CAS cannot say so (its `fail` means "compared and missed"),
            // so it stays `info`, like anything that may have happened.
            let outcome = match pending.request {
                Request::Write {
                    op: KvOp::Put { .. } | KvOp::Delete { .. },
                    ..
                } if !pending.uncertain => Outcome::Fail,
                _ => Outcome::Info,
            };
            self.complete(ci, outcome);
            return;
        }
        let id = self.clients[ci].id;
        self.schedule(CLIENT_RETRY_US, Event::ClientRetry(id));
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
            own_session: true,
            seq: 0,
            pending: None,
            script: Some(script),
            done: false,
        });
        self.trace(|| "final reads of every key".into());
        self.client_next(id);
    }

    // ----- the lease client -----

    /// Sends the lease client's current step to its member.
    fn lease_send(&mut self) {
        if self.lease_client.attempt != 0 {
            return;
        }
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let lc = &mut self.lease_client;
        lc.attempt = attempt;
        lc.sent = self.now;
        let lease = lc.lease;
        let request = match lc.step {
            LeaseStep::Grant => {
                lc.renewed_at = self.now;
                MemberRequest::Propose(kv::Command::LeaseGrant(kv::LeaseGrantRequest {
                    ttl: LEASE_TTL_S,
                    id: lease,
                }))
            }
            LeaseStep::Put => MemberRequest::Propose(kv::Command::Put(PutRequest {
                key: lease_key(lease),
                value: lease.to_string().into_bytes(),
                lease,
                ..PutRequest::default()
            })),
            LeaseStep::KeepAlive => {
                lc.renewed_at = self.now;
                MemberRequest::Propose(kv::Command::LeaseKeepAlive(kv::LeaseKeepAliveRequest {
                    id: lease,
                }))
            }
            LeaseStep::Read => MemberRequest::Read(Query::Range(RangeRequest {
                key: lease_key(lease),
                ..RangeRequest::default()
            })),
        };
        let step = lc.step;
        let target = lc.target;
        self.trace(|| format!("lease client: {step:?} lease {lease} on n{target}"));
        self.schedule(CLIENT_TIMEOUT_US, Event::LeaseTimeout { attempt });
        // Its commands go under its own session, one sequence number per
        // attempt: one at a time, so they reach the log in order.
        if let MemberRequest::Propose(command) = &request {
            self.oracle
                .proposed(LEASE_CLIENT, attempt, &command.encode());
        }
        // A paused member reads nothing: the lease client times out.
        if let Some(node) = self.node_index(target)
            && !self.is_paused(node)
            && let Some(member) = self.member(node)
        {
            match request {
                MemberRequest::Propose(command) => {
                    member.propose_as((LEASE_CLIENT, attempt), LEASE_CLIENT, attempt, command)
                }
                read => member.request((LEASE_CLIENT, attempt), read),
            }
            self.end_turn_soon(node);
        }
    }

    /// The lease client takes an answer, judges what it says of the lease,
    /// and goes on.
    fn lease_reply(&mut self, attempt: u64, answer: LeaseAnswer) {
        if self.lease_client.attempt != attempt {
            return;
        }
        self.lease_client.attempt = 0;
        let ttl_us = LEASE_TTL_S as u64 * 1_000_000;
        let now = self.now;
        let lc = &mut self.lease_client;
        let lease = lc.lease;
        // The lease is seen gone now: never before its TTL ran out from
        // the last acknowledged keep-alive.
        // A leader's clock running fast ends a lease early by its drift.
        let drift_us = if self.config.nemesis.clock {
            ttl_us * CLOCK_DRIFT_PPM_MAX / 1_000_000
        } else {
            0
        };
        let early = |acked_at: u64| {
            (now + drift_us < acked_at + ttl_us).then(|| {
                format!(
                    "lease {lease} was gone {} ms after its last acknowledged keep-alive was sent, before its {LEASE_TTL_S} s TTL",
                    (now - acked_at) / 1000
                )
            })
        };
        let mut problem = None;
        let (next_step, delay) = match (lc.step, answer) {
            (LeaseStep::Grant, LeaseAnswer::Granted) => {
                lc.acked_at = lc.sent;
                (LeaseStep::Put, 0)
            }
            (LeaseStep::Put, LeaseAnswer::Put) => {
                lc.keepalives_left = self.rng.random_range(0..4);
                (LeaseStep::KeepAlive, 500_000)
            }
            (LeaseStep::KeepAlive, LeaseAnswer::KeptAlive(ttl)) if ttl > 0 => {
                lc.acked_at = lc.sent;
                lc.keepalives_left = lc.keepalives_left.saturating_sub(1);
                if lc.keepalives_left == 0 {
                    (LeaseStep::Read, 300_000)
                } else {
                    (LeaseStep::KeepAlive, 500_000)
                }
            }
            (LeaseStep::KeepAlive, LeaseAnswer::KeptAlive(_)) => {
                problem = early(lc.acked_at);
                (LeaseStep::Grant, 0)
            }
            (LeaseStep::Read, LeaseAnswer::Present(true)) => {
                let since = lc.renewed_at.max(self.last_elected_at);
                if !self.faults_on && lc.sent > self.heal_time.max(since) + ttl_us + LEASE_LATE_US {
                    problem = Some(format!(
                        "lease {lease}'s key still there {} ms after its last keep-alive or leader change",
                        (lc.sent - since) / 1000
                    ));
                }
                (LeaseStep::Read, 300_000)
            }
            (LeaseStep::Read, LeaseAnswer::Present(false)) => {
                problem = early(lc.acked_at);
                lc.leases_done += 1;
                (LeaseStep::Grant, 0)
            }
            // A grant or a put that failed or may not have happened: a
            // new lease (the old one, if it exists, expires on its own).
            (LeaseStep::Grant | LeaseStep::Put, LeaseAnswer::Failed) => {
                lc.target = next_of(&self.members, lc.target);
                lc.lease += 1;
                (LeaseStep::Grant, CLIENT_RETRY_US)
            }
            (step, LeaseAnswer::Failed) => {
                lc.target = next_of(&self.members, lc.target);
                (step, CLIENT_RETRY_US)
            }
            (step, other) => {
                problem = Some(format!("lease client: {other:?} is no answer to {step:?}"));
                (step, CLIENT_RETRY_US)
            }
        };
        if next_step == LeaseStep::Grant
            && matches!(lc.step, LeaseStep::KeepAlive | LeaseStep::Read)
        {
            // Done with this lease; never reuse an id.
            lc.lease += 1;
        }
        lc.step = next_step;
        if let Some(what) = problem {
            self.violate(what);
        }
        self.schedule(delay.max(1), Event::LeaseNext);
    }

    // ----- watchers -----

    /// Opens a watch on every client key from the watcher's next revision,
    /// on its member (or the next one, if that is down).
    fn watch_connect(&mut self, w: usize) {
        if self.watchers[w].stream.is_some() {
            return;
        }
        let target = self.watchers[w].target;
        let Some(node) = self.node_index(target) else {
            return;
        };
        if self.nodes[node].member.is_none() || self.is_paused(node) {
            self.watchers[w].target = self.next_member(target);
            let delay = self.rng.random_range(1_000..WATCH_RECONNECT_US);
            self.schedule(delay, Event::WatchConnect(w));
            return;
        }
        let session = self.next_watch_session;
        self.next_watch_session += 1;
        let start_revision = self.watchers[w].next_revision;
        self.watchers[w].stream = Some(Stream {
            node: target,
            session,
        });
        self.trace(|| format!("watcher {w} watches on n{target} from revision {start_revision}"));
        let request = WatchCreateRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            start_revision,
            ..WatchCreateRequest::default()
        };
        if let Some(member) = self.member(node) {
            member.watch_create(session, &request);
        }
        self.end_turn_soon(node);
    }

    /// A member sends a watch response on a session: it reaches the
    /// watcher after the ones before it.
    fn watch_send(&mut self, from: NodeId, session: u64, response: WatchResponse) {
        let Some(w) = self.watchers.iter().position(|w| {
            w.stream
                == Some(Stream {
                    node: from,
                    session,
                })
        }) else {
            return;
        };
        let at =
            (self.now + self.rng.random_range(100..500)).max(self.watchers[w].last_delivery + 1);
        self.watchers[w].last_delivery = at;
        self.schedule(
            at - self.now,
            Event::WatchDeliver {
                watcher: w,
                session,
                response,
            },
        );
    }

    /// The watcher takes a response: events must come in revision order,
    /// each revision once; a cancel breaks the stream.
    fn watch_deliver(&mut self, w: usize, session: u64, response: WatchResponse) {
        let Some(stream) = self.watchers[w].stream else {
            return;
        };
        if stream.session != session {
            return;
        }
        if response.canceled {
            self.watchers[w].stream = None;
            self.watchers[w].target = self.next_member(stream.node);
            let delay = self.rng.random_range(1_000..WATCH_RECONNECT_US);
            self.schedule(delay, Event::WatchConnect(w));
            return;
        }
        let mut last = None;
        for event in &response.events {
            let revision = event.kv.mod_revision;
            let next = self.watchers[w].next_revision;
            if revision < next && last != Some(revision) {
                let what = format!(
                    "watcher {w} on n{} got an event at revision {revision} after revision {}: repeated or out of order",
                    stream.node,
                    next - 1
                );
                self.violate(what);
            }
            last = Some(revision);
            self.watchers[w].seen.push((
                revision,
                event.kv.key.clone(),
                event.r#type == EventType::Put,
                event.kv.value.clone(),
            ));
        }
        if let Some(revision) = last {
            self.watchers[w].next_revision = revision + 1;
        }
    }

    /// The committed history as the running member furthest ahead holds
    /// it: every store's history is a prefix of it.
    fn reference_store(&self) -> Option<&Store> {
        self.nodes
            .iter()
            .filter_map(|n| n.member.as_ref())
            .map(|m| m.store())
            .max_by_key(|s| s.revision())
    }

    /// Every watcher must have seen exactly the committed history of the
    /// client keys, up to the last revision it saw: in order, each event
    /// once, none missing, across reconnections. The history is read from
    /// the member furthest ahead. Returns the events checked.
    fn judge_watchers(&mut self) -> u64 {
        let Some(reference) = self.reference_store() else {
            return 0;
        };
        let history: Vec<SeenEvent> = match reference.events_since(1, b"k", b"l") {
            Ok(events) => events
                .into_iter()
                .map(|e| {
                    (
                        e.kv.mod_revision,
                        e.kv.key,
                        e.r#type == EventType::Put,
                        e.kv.value,
                    )
                })
                .collect(),
            Err(e) => {
                self.violate(format!("the committed history cannot be read: {e}"));
                return 0;
            }
        };
        let mut checked = 0;
        let mut problems = Vec::new();
        for (w, watcher) in self.watchers.iter().enumerate() {
            let upto = watcher.next_revision;
            let expected: Vec<&SeenEvent> = history.iter().filter(|e| e.0 < upto).collect();
            let seen: Vec<&SeenEvent> = watcher.seen.iter().collect();
            checked += seen.len() as u64;
            if seen != expected {
                let at = seen
                    .iter()
                    .zip(&expected)
                    .position(|(a, b)| a != b)
                    .unwrap_or(seen.len().min(expected.len()));
                let show = |e: Option<&&SeenEvent>| {
                    e.map_or("nothing".to_string(), |e| {
                        format!("revision {} {}", e.0, String::from_utf8_lossy(&e.1))
                    })
                };
                problems.push(format!(
                    "watcher {w} saw {} events, the committed history has {} up to revision {}: event {at} is {} where the history has {}",
                    seen.len(),
                    expected.len(),
                    upto - 1,
                    show(seen.get(at)),
                    show(expected.get(at)),
                ));
            }
        }
        for what in problems {
            self.violate(what);
        }
        checked
    }

    /// Every client write carries a value no other write carries, so the
    /// committed history holds each value at most once: a write applied
    /// twice (a retry or a re-forward under a new session) shows as its
    /// value twice.
    fn judge_exactly_once(&mut self) {
        let Some(reference) = self.reference_store() else {
            return;
        };
        let Ok(events) = reference.events_since(1, b"k", b"l") else {
            return; // judge_watchers reports it.
        };
        let mut seen = BTreeMap::new();
        let mut problems = Vec::new();
        for e in events.iter().filter(|e| e.r#type == EventType::Put) {
            if let Some(first) = seen.insert(e.kv.value.as_slice(), e.kv.mod_revision) {
                problems.push(format!(
                    "the write of value {} was applied twice: at revisions {first} and {}",
                    String::from_utf8_lossy(&e.kv.value),
                    e.kv.mod_revision
                ));
            }
        }
        for what in problems {
            self.violate(what);
        }
    }

    /// Every serializable read must be the committed history's state of its
    /// key at the revision it reported (read from the member furthest
    /// ahead): stale is allowed, anything else is not.
    fn judge_serializable_reads(&mut self) {
        let Some(reference) = self.reference_store() else {
            return;
        };
        let mut problems = Vec::new();
        for (node, key, revision, value) in &self.serializable_reads {
            let at = RangeRequest {
                key: key_bytes(*key),
                revision: *revision,
                ..RangeRequest::default()
            };
            let committed = reference
                .range(&at)
                .map(|r| r.kvs.first().map(|kv| kv.value.clone()));
            if committed.as_ref() != Ok(value) {
                problems.push(format!(
                    "a serializable read of k{key} on n{node} at revision {revision} saw {:?}, the committed history has {:?}",
                    value.as_ref().map(|v| String::from_utf8_lossy(v).to_string()),
                    committed
                ));
            }
        }
        for what in problems {
            self.violate(what);
        }
    }

    // ----- nemesis -----

    fn nemesis_gap(&mut self) -> u64 {
        self.rng.random_range(50_000..600_000)
    }

    fn current_leader(&self) -> Option<NodeId> {
        // The live leader with the highest ballot, as a nemesis would guess.
        self.nodes
            .iter()
            .filter_map(|n| n.member.as_ref().map(|m| m.replica()))
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
                choices.extend([3, 5]);
            } else {
                choices.extend([2, 2]);
            }
        }
        if n.disk {
            choices.extend([4, 4]);
        }
        if n.clock {
            choices.push(6);
        }
        if n.crash || n.clock {
            choices.push(7);
        }
        if n.membership {
            choices.extend([8, 8, 8, 8]);
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
            6 => self.pause(),
            7 => self.dueling_candidates(),
            8 => self.reconfigure(),
            5 => {
                let pick = self.rng.random_range(0..64);
                if let Some((a, b)) = self.network.heal_one(pick) {
                    self.trace(|| format!("nemesis: heal the link n{a} - n{b} only"));
                }
            }
            _ => {
                self.network.heal();
                self.trace(|| "nemesis: heal partition".into());
            }
        }
    }

    /// Asks the leader for a configuration change, as an operator would:
    /// add a learner (a fresh member with an empty disk), promote it or
    /// remove it, remove a voter, replace a voter by a fresh one in one
    /// change, grow 3 voters to 5 in one change or shrink 5 to 3. Voters
    /// stay between [`VOTERS_MIN`] and [`VOTERS_MAX`].
    fn reconfigure(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let Some(node) = self.node_index(leader) else {
            return;
        };
        let Some(member) = self.nodes[node].member.as_ref() else {
            return;
        };
        if member.replica().reconfiguring() {
            return;
        }
        let membership = member.replica().membership().clone();
        let voters: Vec<NodeId> = membership.voters.iter().copied().collect();
        let pick = |rng: &mut ChaCha8Rng, from: &[NodeId]| from[rng.random_range(0..from.len())];
        let roll = self.rng.random_range(0..4);
        let mut fresh = Vec::new();
        let change = if let Some(&learner) = membership.learners.first() {
            if self.rng.random_bool(0.7) {
                MemberChange::Promote { id: learner }
            } else {
                MemberChange::Remove { id: learner }
            }
        } else {
            match (voters.len(), roll) {
                (n, 0) if n < VOTERS_MAX => {
                    let id = self.spawn_node();
                    fresh.push(id);
                    MemberChange::Add {
                        id,
                        peer_urls: vec![sim_url(id)],
                        is_learner: true,
                    }
                }
                (n, 1) if n + 2 <= VOTERS_MAX => {
                    let (a, b) = (self.spawn_node(), self.spawn_node());
                    fresh.extend([a, b]);
                    MemberChange::Replace {
                        remove: Vec::new(),
                        add: vec![(a, vec![sim_url(a)]), (b, vec![sim_url(b)])],
                    }
                }
                (n, 1) if n >= VOTERS_MIN + 2 => {
                    let mut gone = voters.clone();
                    gone.shuffle(&mut self.rng);
                    gone.truncate(2);
                    MemberChange::Replace {
                        remove: gone,
                        add: Vec::new(),
                    }
                }
                (n, 2) if n > VOTERS_MIN => MemberChange::Remove {
                    id: pick(&mut self.rng, &voters),
                },
                _ => {
                    // A member whose disk was wiped comes back as a new one.
                    let victim = pick(&mut self.rng, &voters);
                    let id = self.spawn_node();
                    fresh.push(id);
                    MemberChange::Replace {
                        remove: vec![victim],
                        add: vec![(id, vec![sim_url(id)])],
                    }
                }
            }
        };
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        for id in &fresh {
            self.joining.insert(*id, attempt);
        }
        self.trace(|| format!("nemesis: ask n{leader} for {change:?}"));
        if let Some(member) = self.member(node) {
            member.request(
                (NEMESIS_CLIENT, attempt),
                MemberRequest::ChangeMembers(change),
            );
        }
        self.end_turn_soon(node);
    }

    /// A new member with an empty disk, started knowing nothing of its
    /// configuration (as a member joining an existing cluster).
    fn spawn_node(&mut self) -> NodeId {
        let id = self.next_node_id;
        self.next_node_id += 1;
        let seed = self.rng.next_u64();
        self.nodes
            .push(Node::fresh(&self.config, id, Vec::new(), seed, self.now));
        self.members.push(id);
        self.schedule(TICK_US, Event::Tick(id));
        self.trace(|| format!("nemesis: start n{id} with an empty disk"));
        id
    }

    /// The leader answered a change the nemesis asked for. Refused, the
    /// members it would have added are stopped.
    fn change_answered(&mut self, attempt: u64, result: Result<MemberReply, MemberError>) {
        let shown = match &result {
            Ok(_) => "applied".to_string(),
            Err(e) => e.to_string(),
        };
        self.trace(|| format!("nemesis: change #{attempt}: {shown}"));
        if matches!(result, Err(ref e) if *e != MemberError::Timeout) {
            let orphans: Vec<NodeId> = self
                .joining
                .iter()
                .filter(|(_, a)| **a == attempt)
                .map(|(id, _)| *id)
                .collect();
            for id in orphans {
                self.joining.remove(&id);
                self.remove_node(id);
            }
        }
    }

    /// A configuration change was applied (by the first member to apply
    /// it): the members it removed stop for good.
    fn config_applied(&mut self, slot: u64, membership: Membership) {
        if slot <= self.config_slot {
            return;
        }
        self.config_slot = slot;
        self.member_changes += 1;
        self.joining.retain(|id, _| !membership.contains(*id));
        let gone: Vec<NodeId> = self
            .members
            .iter()
            .copied()
            .filter(|id| !membership.contains(*id) && !self.joining.contains_key(id))
            .collect();
        if !gone.is_empty() {
            self.trace(|| format!("{gone:?} leave once the change in slot {slot} settles"));
            self.leaving.insert(slot, gone);
        }
    }

    /// Stops the members whose removal has settled, as the leader sees it.
    fn retire_leavers(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        let Some(replica) = self
            .node_index(leader)
            .and_then(|i| self.nodes[i].member.as_ref())
            .map(|m| m.replica())
        else {
            return;
        };
        let settled: Vec<u64> = self
            .leaving
            .keys()
            .copied()
            .filter(|slot| replica.settled(*slot))
            .collect();
        for slot in settled {
            for id in self.leaving.remove(&slot).unwrap_or_default() {
                self.remove_node(id);
            }
        }
    }

    /// Stops a member removed from the cluster, for good.
    fn remove_node(&mut self, id: NodeId) {
        let Some(node) = self.node_index(id) else {
            return;
        };
        self.trace(|| format!("n{id} is removed from the cluster and stops"));
        self.nodes[node].removed = true;
        if self.nodes[node].member.is_some() {
            self.take_down(node);
        }
        self.members.retain(|m| *m != id);
    }

    /// Freezes a node (the leader half the time) for 0.1-2 s: a deposed
    /// leader that wakes still believing it leads, with a clock that
    /// jumped.
    fn pause(&mut self) {
        let victim = match self.current_leader() {
            Some(l) if self.rng.random_bool(0.5) => l,
            _ => self.members[self.rng.random_range(0..self.members.len())],
        };
        let Some(node) = self.node_index(victim) else {
            return;
        };
        let pause_us = self.rng.random_range(100_000..2_000_000);
        let until = &mut self.nodes[node].paused_until;
        *until = (*until).max(self.now + pause_us);
        self.trace(|| format!("nemesis: pause n{victim} for {} ms", pause_us / 1000));
    }

    /// Simultaneous candidates, on purpose: for two seconds every node
    /// draws the same election timeout, and the leader goes (crashed, or
    /// paused if only the clock nemesis is on), so the followers, which
    /// heard its last heartbeat together, stand at once and duel.
    fn dueling_candidates(&mut self) {
        let Some(leader) = self.current_leader() else {
            return;
        };
        self.lockstep_until = self.now + 2_000_000;
        self.trace(|| format!("nemesis: dueling candidates after n{leader} goes"));
        if self.config.nemesis.crash {
            self.crash(leader);
        } else if let Some(node) = self.node_index(leader) {
            let until = &mut self.nodes[node].paused_until;
            *until = (*until).max(self.now + 1_000_000);
        }
    }

    fn crash(&mut self, id: NodeId) {
        let Some(node) = self.node_index(id) else {
            return;
        };
        if self.nodes[node].member.is_none() {
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
        // Its watch streams break; their watchers reconnect elsewhere.
        for w in 0..self.watchers.len() {
            if self.watchers[w].stream.is_some_and(|s| s.node == id) {
                self.watchers[w].stream = None;
                let delay = self.rng.random_range(1_000..WATCH_RECONNECT_US);
                self.schedule(delay, Event::WatchConnect(w));
            }
        }
        let word = self.rng.next_u64();
        let n = &mut self.nodes[node];
        n.member = None;
        n.store = None;
        n.paused_until = 0;
        n.incarnation += 1;
        n.fill_due = false;
        n.turn_due = false;
        n.fs.crash(word);
        let down_us = self.rng.random_range(10_000..800_000);
        self.schedule(down_us, Event::Restart(id));
    }

    fn restart(&mut self, id: NodeId) {
        let Some(node) = self.node_index(id) else {
            return;
        };
        if self.nodes[node].member.is_some() || self.nodes[node].refused || self.nodes[node].removed
        {
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
            None => Ok(Store::new(Limits::default())),
            Some(snapshot) => Store::restore(&snapshot.data, Limits::default()),
        };
        let kv = match kv {
            Ok(kv) => kv,
            Err(e) => {
                self.refuse_start(node, format!("its snapshot does not restore: {e}"));
                return;
            }
        };
        let mut durable = restored.durable;
        // The configuration in force after the snapshot is the one its
        // member table makes (none: no change yet, the initial one).
        durable.membership = member::membership_of(kv.members());
        // Everything synced must have survived: log trimming included.
        self.oracle
            .recovered(self.now, id, durable.snapshot_slot, &durable.accepted);
        // Acceptances that reached the disk without being synced survive
        // some crashes; they count as votes from now on.
        for (slot, (ballot, value)) in &durable.accepted {
            self.oracle.accepted(self.now, id, *slot, *ballot, value);
        }
        let slot = durable.snapshot_slot;
        let promised_on_disk = durable.promised;
        let accepted_on_disk = durable.accepted.clone();
        let initial = self.nodes[node].initial_voters.clone();
        let config = replica_config(&self.config, id, &initial);
        let seed = self.rng.next_u64();
        let n = &mut self.nodes[node];
        n.store = Some(store);
        n.started_at = self.now;
        n.drift_ppm = drift_ppm(&self.config, seed);
        n.member = Some(Member::new(
            Replica::restart(config, durable),
            kv,
            member_config(&self.config, seed, &initial),
        ));
        self.oracle.restarted(id, slot);
        if let Some(member) = &self.nodes[node].member {
            let promised = member.replica().promised();
            self.oracle.restarted_promise(self.now, id, promised);
        }
        // What the disk holds now is durable, synced or not before the
        // crash: the replica may reveal it again.
        self.oracle.synced_promise(id, promised_on_disk);
        for (slot, (ballot, _)) in &accepted_on_disk {
            self.oracle.synced(id, *slot, *ballot);
        }
        self.trace(|| format!("n{id} restarts from its disk (snapshot up to slot {slot})"));
        self.process(node);
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
                if self.nodes[node].member.is_some() {
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
            .filter(|n| n.member.is_none())
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
            let Some(member) = &self.nodes[i].member else {
                continue;
            };
            let applied = member.applied_slot();
            let digest = member.store().state_hash();
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
        let watch_events = self.judge_watchers();
        self.judge_exactly_once();
        self.judge_serializable_reads();
        let final_reads_done = self.clients.iter().any(|c| c.id == 1 && c.done);
        match self.first_ok_after_heal {
            None => self.violate("no operation completed after the faults healed".into()),
            Some(at) if at - self.heal_time > RECOVERY_US_MAX => self.violate(format!(
                "the first operation after the heal completed {} ms after it, beyond the {} ms bound",
                (at - self.heal_time) / 1000,
                RECOVERY_US_MAX / 1000
            )),
            Some(_) => {}
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
        report.watch_events = watch_events;
        report.leases = self.lease_client.leases_done;
        report.member_changes = self.member_changes;
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
            op: KvOp::Delete { key },
        } => format!("#{seq} delete k{key}"),
        Request::Write {
            seq,
            op: KvOp::Cas { key, expected, new },
        } => format!("#{seq} cas k{key} {} -> {new}", show(*expected)),
    }
}

/// The lease client's key for a lease: one key per lease, so that a late
/// put of an abandoned lease never touches the current one's.
fn lease_key(lease: i64) -> Vec<u8> {
    format!("lease/{lease}").into_bytes()
}

/// The member after `id` in `members`, round the ring.
fn next_of(members: &[NodeId], id: NodeId) -> NodeId {
    let i = members.iter().position(|m| *m == id).unwrap_or(0);
    members[(i + 1) % members.len()]
}

/// What a member's answer tells the lease client.
fn lease_answer(result: Result<MemberReply, MemberError>) -> LeaseAnswer {
    match result {
        Ok(MemberReply::Command(kv::Response::LeaseGrant(g))) if g.error.is_empty() => {
            LeaseAnswer::Granted
        }
        Ok(MemberReply::Command(kv::Response::LeaseKeepAlive(k))) => LeaseAnswer::KeptAlive(k.ttl),
        Ok(MemberReply::Command(kv::Response::Put(_))) => LeaseAnswer::Put,
        Ok(MemberReply::Range(r)) => LeaseAnswer::Present(!r.kvs.is_empty()),
        _ => LeaseAnswer::Failed,
    }
}

/// What a member's answer tells a client.
fn client_reply(result: Result<MemberReply, MemberError>) -> Reply {
    match result {
        Ok(MemberReply::Range(r)) => Reply::Read(
            r.kvs
                .first()
                .and_then(|kv| std::str::from_utf8(&kv.value).ok()?.parse().ok()),
        ),
        Ok(MemberReply::Command(kv::Response::Put(_))) => Reply::Applied(KvReply::Written),
        Ok(MemberReply::Command(kv::Response::DeleteRange(_))) => Reply::Applied(KvReply::Deleted),
        Ok(MemberReply::Command(kv::Response::Txn(t))) => Reply::Applied(if t.succeeded {
            KvReply::CasOk
        } else {
            KvReply::CasFailed
        }),
        Err(MemberError::NoLeader | MemberError::NotSupportedForLearner) => Reply::NotLeader,
        Err(MemberError::TooManyRequests) => Reply::Busy,
        Ok(_) | Err(MemberError::Timeout | MemberError::Kv(_) | MemberError::Cluster(_)) => {
            Reply::Unknown
        }
    }
}

/// A member's settings in the simulator: small snapshot intervals, so that
/// runs save, trim, ship and install many.
/// A node life's clock drift under the clock nemesis, from its seed (so
/// that runs without it draw the same numbers as before).
fn drift_ppm(config: &SimConfig, seed: u64) -> i64 {
    if !config.nemesis.clock {
        return 0;
    }
    let span = 2 * CLOCK_DRIFT_PPM_MAX + 1;
    (seed % span) as i64 - CLOCK_DRIFT_PPM_MAX as i64
}

/// A member's settings; `initial` are the voters it was first started
/// with (none for a member that joined later).
fn member_config(config: &SimConfig, seed: u64, initial: &[NodeId]) -> MemberConfig {
    MemberConfig {
        initial_members: initial.iter().map(|id| sim_member(*id, false)).collect(),
        request_timeout_ms: REQUEST_TIMEOUT_MS,
        snapshot_count: SNAPSHOT_EVERY_COMMANDS,
        seed,
        fill_on_ready: config.batch_us.is_none(),
        observe: true,
        ..MemberConfig::default()
    }
}

/// A member-to-member message, for the trace.
fn describe_peer(message: &PeerMessage) -> String {
    match message {
        PeerMessage::Propose { client, seq, .. } => format!("Propose c{client}#{seq}"),
        PeerMessage::Refused {
            client,
            seq,
            leader,
        } => {
            format!("Refused c{client}#{seq} (leader n{leader})")
        }
        PeerMessage::ReadIndex { id } => format!("ReadIndex #{id}"),
        PeerMessage::ReadIndexReply { id, index } => format!("ReadIndexReply #{id} index {index}"),
        PeerMessage::Chunk(c) => format!("Chunk of slot {} at {}", c.index, c.offset),
        PeerMessage::Attributes { .. } => "Attributes".into(),
        PeerMessage::ChangeMembers {
            client,
            seq,
            change,
        } => format!("ChangeMembers c{client}#{seq} {change:?}"),
        PeerMessage::ChangeRefused { client, seq, error } => {
            format!(
                "ChangeRefused c{client}#{seq} ({})",
                MemberError::from_code(*error)
            )
        }
    }
}

/// How the simulator's members are shown in the member table.
fn sim_member(id: NodeId, is_learner: bool) -> kv::ClusterMember {
    kv::ClusterMember {
        id,
        name: format!("n{id}"),
        peer_urls: vec![sim_url(id)],
        client_urls: Vec::new(),
        is_learner,
    }
}

fn sim_url(id: NodeId) -> String {
    format!("sim://n{id}")
}

fn replica_config(config: &SimConfig, id: NodeId, members: &[NodeId]) -> Config {
    let mut c = Config::new(id, members.to_vec());
    c.bug = config.bug;
    c
}
