//! The member: every decision a synod node makes, as one plain struct.

use std::collections::{BTreeMap, BTreeSet};

use kv::codec::Sink;
use kv::{ApplyContext, Fnv64, KvError, LeaseId, SessionOutcome, Store, WatchHub, WatchResponse};
use paxos::multi::{
    Bug, Command, Envelope, Membership, Message, Output, ProposeError, ReadId, Replica, Slot, Value,
};
use paxos::{Ballot, NodeId};
use tracing::{info, warn};

use crate::held::HeldDecisions;
use crate::peer::PeerMessage;
use crate::ready::{Checkpoint, Effect, Ready, Stage};
use crate::request::{MemberError, Query, Reply, Request};

/// Lease expiries proposed per tick at most.
const EXPIRE_LEASES_PER_TICK_MAX: usize = 64;
/// A lease whose expiry was proposed is proposed again after this long if
/// it is still there (the first proposal may have been lost with a leader).
const EXPIRE_RETRY_MS: u64 = 1_000;
/// Ticks between telling the peers our client URLs.
const ATTRIBUTES_EVERY_TICKS: u64 = 100;

/// The runtime's clock, handed in (the member reads none of its own).
///
/// Only a monotonic clock: request deadlines, and the replicated time that
/// leases are measured by (see [`Member::now_ms`]). No wall clock enters
/// the member, so a step of the wall clock (a bad NTP step, an operator's
/// `date -s`) changes no lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// Milliseconds from any fixed origin; never goes back.
    pub mono_ms: u64,
}

/// A member's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// A request not answered by then is answered "request timed out".
    pub request_timeout_ms: u64,
    /// Snapshot the store and trim the log after this many applied
    /// commands (etcd's --snapshot-count).
    pub snapshot_count: u64,
    /// Seeds the member's session ids; distinct per member and per start.
    pub seed: u64,
    /// Open slots for queued commands at every [`Member::ready`] (the
    /// server: a turn's commands share slots); if false, only at
    /// [`Member::fill`] (the simulator's timed batching).
    pub fill_on_ready: bool,
    /// Report every applied slot as an [`Effect::Applied`].
    pub observe: bool,
    /// Learners at most (etcd's `--max-learners`).
    pub max_learners: usize,
    /// The member table the cluster was first started with (from the
    /// runtime's flags). The replicated table stays empty until the first
    /// change, which carries the whole table: so every replica, one that
    /// joined later included, holds the same state at every slot. Empty
    /// for a member that joins an existing cluster: it learns the table
    /// from the log or a snapshot.
    pub initial_members: Vec<kv::ClusterMember>,
    /// Refuse a change that would leave fewer started voters than a
    /// quorum of the new configuration (etcd's `--strict-reconfig-check`).
    pub strict_reconfig_check: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            request_timeout_ms: 5_000,
            snapshot_count: 100_000,
            seed: 1,
            fill_on_ready: true,
            observe: false,
            max_learners: 1,
            strict_reconfig_check: true,
            initial_members: Vec::new(),
        }
    }
}

/// A client waiting for its command to be applied here.
struct Waiter<T> {
    token: T,
    deadline_ms: u64,
    /// The leader the command was handed to, if not proposed here, and the
    /// command, to hand it to the next leader if that one is gone. Handing
    /// it on twice is safe: the store applies a `(client, seq)` once.
    forwarded: Option<(NodeId, Vec<u8>)>,
}

/// A linearizable read waiting to be served here.
struct PendingRead<T> {
    token: T,
    query: Query,
    deadline_ms: u64,
}

enum ReadWaiter<T> {
    /// A read of ours, served here.
    Local(PendingRead<T>),
    /// A follower's read-index request.
    Remote { from: NodeId, id: u64 },
}

/// Counters a runtime may publish.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Commands proposed by this member.
    pub proposals: u64,
    /// Times this member became leader.
    pub leader_changes: u64,
}

/// One member: the Multi-Paxos replica, the key-value store and every
/// decision around them (forwarding to the leader, read-index reads, lease
/// expiry, held decisions, snapshots, watch routing). Inputs are method
/// calls; [`Member::ready`] says what the runtime must do, in order.
pub struct Member<T> {
    me: NodeId,
    config: Config,
    replica: Replica,
    store: Store,
    hub: WatchHub,
    clock: Clock,
    /// The replicated time as this member measures it: a time stamp it
    /// found ahead of its own measure, and the monotonic reading then.
    /// `None` until the runtime first hands in its clock.
    time_base: Option<(u64, u64)>,
    rng: u64,
    /// Effects produced since they were last placed in a stage.
    outbox: Vec<Effect<T>>,
    writes: BTreeMap<(u64, u64), Waiter<T>>,
    reads: BTreeMap<ReadId, ReadWaiter<T>>,
    /// Our reads whose index we asked the leader for, by our id.
    /// Each with the member asked: only its answer serves the read.
    remote_reads: BTreeMap<u64, (NodeId, PendingRead<T>)>,
    /// Reads the leader gave an index for, waiting for the store to get
    /// there.
    reads_at_index: BTreeMap<Slot, Vec<PendingRead<T>>>,
    /// Read ids start at a random number each life: an answer to a read
    /// of an earlier life, delayed in the network, must not serve a read
    /// of this one.
    next_read: u64,
    /// Which watch session owns each watch.
    watch_owner: BTreeMap<i64, u64>,
    /// Leases whose expiry this leader proposed, with when to retry.
    expiring: BTreeMap<LeaseId, u64>,
    /// The last slot applied to `store`: applies come strictly in order.
    applied_slot: Slot,
    applied_since_snapshot: u64,
    /// A snapshot is being saved by the runtime.
    saving: bool,
    held: HeldDecisions,
    /// Commands peers handed us that are not applied yet: each of those
    /// peers waits for the decision to answer its client, so while any is
    /// in flight no decision is held back.
    forwarded: BTreeSet<(u64, u64)>,
    /// This member's name and client URLs, told to its peers.
    name: String,
    client_urls: Vec<String>,
    peer_client_urls: BTreeMap<NodeId, Vec<String>>,
    /// Each peer's name, as it told us.
    peer_names: BTreeMap<NodeId, String>,
    ticks: u64,
    counters: Counters,
    /// The session of the commands this leader proposes of its own accord
    /// (lease renewals and expiries), and its next sequence number.
    leader_session: Option<(u64, u64)>,
    /// The session of the commands clients send through this member:
    /// `(client, next seq)`, client 0 until the first command.
    session: (u64, u64),
}

/// The next word of splitmix64 over `state`: a small, fast generator for
/// a runtime's randomness (seeded from the OS) and the member's session
/// ids (seeded by the runtime).
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The protocol core's configuration for a member table: its voters and
/// learners. `None` for an empty table (nothing seeded yet).
pub fn membership_of(members: &[kv::ClusterMember]) -> Option<Membership> {
    if members.is_empty() {
        return None;
    }
    let (learners, voters): (Vec<_>, Vec<_>) = members.iter().partition(|m| m.is_learner);
    Some(Membership {
        voters: voters.iter().map(|m| m.id).collect(),
        learners: learners.iter().map(|m| m.id).collect(),
    })
}

/// The client id of a leadership's own session: a hash of its ballot, with
/// the top bit set, apart from the ids clients draw.
fn leader_client_id(ballot: Ballot) -> u64 {
    let mut h = Fnv64::default();
    h.put(&ballot.round.to_le_bytes());
    h.put(&ballot.node.to_le_bytes());
    h.0 | 1 << 63
}

impl<T> Member<T> {
    /// A member over a replica and a store recovered to the same slot.
    pub fn new(replica: Replica, store: Store, config: Config) -> Self {
        let next_read = splitmix64(&mut config.seed.clone()) >> 1;
        Member {
            me: replica.id(),
            applied_slot: replica.snapshot_slot(),
            rng: config.seed | 1,
            config,
            replica,
            store,
            hub: WatchHub::new(),
            clock: Clock::default(),
            time_base: None,
            outbox: Vec::new(),
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            remote_reads: BTreeMap::new(),
            reads_at_index: BTreeMap::new(),
            next_read,
            watch_owner: BTreeMap::new(),
            expiring: BTreeMap::new(),
            applied_since_snapshot: 0,
            saving: false,
            held: HeldDecisions::default(),
            forwarded: BTreeSet::new(),
            client_urls: Vec::new(),
            peer_client_urls: BTreeMap::new(),
            name: String::new(),
            peer_names: BTreeMap::new(),
            ticks: 0,
            counters: Counters::default(),
            leader_session: None,
            session: (0, 1),
        }
    }

    // ----- what the runtime may look at -----

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// The protocol core, for status and metrics.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The store as applied so far: serializable reads, status, hashes.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The last slot applied to the store.
    pub fn applied_slot(&self) -> Slot {
        self.applied_slot
    }

    /// Each peer's client URLs, as it last told us.
    pub fn peer_client_urls(&self) -> &BTreeMap<NodeId, Vec<String>> {
        &self.peer_client_urls
    }

    /// Each peer's name, as it last told us: a member added by `MemberAdd`
    /// has none in the table until it started and said so.
    pub fn peer_names(&self) -> &BTreeMap<NodeId, String> {
        &self.peer_names
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Answers a serializable read from this member's store as it is.
    pub fn serve_serializable(&self, query: &Query) -> Result<Reply, MemberError> {
        query.serve(&self.store, self.now_ms())
    }

    /// The replicated time now, in milliseconds: the leader stamps commands
    /// with it, and leases expire by it (DESIGN.md rule 3). Each member
    /// measures it with its monotonic clock from the latest stamp it has
    /// applied that was ahead of its own measure, so a new leader goes on
    /// from where the stamps it applied left off, and it never goes back.
    pub fn now_ms(&self) -> u64 {
        self.measured_ms().max(self.store.clock_ms())
    }

    // ----- inputs -----

    /// The runtime's monotonic clock now; call before the inputs of a turn.
    pub fn set_clock(&mut self, clock: Clock) {
        debug_assert!(
            clock.mono_ms >= self.clock.mono_ms,
            "the monotonic clock went back"
        );
        self.clock = clock;
        if self.time_base.is_none() {
            self.time_base = Some((self.store.clock_ms(), clock.mono_ms));
        }
    }

    /// Takes the store's replicated time as the base of the measure when
    /// it is ahead of it (a stamp from a leader, or from before a restart).
    fn sync_time(&mut self) {
        let replicated = self.store.clock_ms();
        if replicated > self.measured_ms() {
            self.time_base = Some((replicated, self.clock.mono_ms));
        }
    }

    /// The replicated time by this member's own measure alone.
    fn measured_ms(&self) -> u64 {
        self.time_base.map_or(0, |(ms, at)| {
            ms.saturating_add(self.clock.mono_ms.saturating_sub(at))
        })
    }

    /// Sets the name and client URLs this member tells its peers.
    pub fn advertise(&mut self, name: String, client_urls: Vec<String>) {
        self.name = name;
        self.client_urls = client_urls;
    }

    /// A client's request, answered later with `token` in an
    /// [`Effect::Reply`]. Commands share the member's session, in order.
    pub fn request(&mut self, token: T, request: Request) {
        if self.is_learner() {
            // A learner serves serializable reads and status only.
            self.reply(token, Err(MemberError::NotSupportedForLearner));
            return;
        }
        match request {
            Request::Propose(command) => {
                let (client, seq) = self.client_session();
                self.propose_as(token, client, seq, command);
            }
            Request::Read(query) => self.read(token, query),
            Request::ChangeMembers(change) => {
                let (client, seq) = self.client_session();
                self.change_members(token, client, seq, change);
            }
        }
    }

    /// The member table in force: the replicated one, or the initial one
    /// until the first change (etcd's `MemberList`).
    pub fn members(&self) -> &[kv::ClusterMember] {
        if self.store.members().is_empty() {
            &self.config.initial_members
        } else {
            self.store.members()
        }
    }

    /// Whether this member is a learner of the configuration in force.
    pub fn is_learner(&self) -> bool {
        self.replica.membership().learners.contains(&self.me)
    }

    /// Asks the leader (this member or the one it knows) to make a
    /// configuration change; answered once the change is applied here.
    fn change_members(&mut self, token: T, client: u64, seq: u64, change: kv::MemberChange) {
        self.writes.insert(
            (client, seq),
            Waiter {
                token,
                deadline_ms: self.clock.mono_ms + self.config.request_timeout_ms,
                forwarded: None,
            },
        );
        if self.replica.is_leader() {
            if let Err(e) = self.reconfigure_local(client, seq, &change) {
                self.fail_write(client, seq, e);
            }
            return;
        }
        match self.replica.leader() {
            Some(leader) if leader != self.me => self.outbox.push(Effect::Peer {
                to: leader,
                message: PeerMessage::ChangeMembers {
                    client,
                    seq,
                    change,
                },
            }),
            _ => self.fail_write(client, seq, MemberError::NoLeader),
        }
    }

    /// The leader checks a change against the member table as applied
    /// (etcd's checks and texts) and proposes it: the new table for the
    /// store, the configuration it makes for the core.
    fn reconfigure_local(
        &mut self,
        client: u64,
        seq: u64,
        change: &kv::MemberChange,
    ) -> Result<(), MemberError> {
        use kv::ClusterError;
        if !self.replica.is_leader() {
            return Err(MemberError::NoLeader);
        }
        // One change at a time, and only once the last one is applied
        // here: the table it is checked against must be the one in force.
        let current = membership_of(self.members());
        if self.replica.reconfiguring() || current.as_ref() != Some(self.replica.membership()) {
            return Err(ClusterError::Unhealthy.into());
        }
        let table = change.apply_to(self.members(), self.config.max_learners)?;
        let next = membership_of(&table).ok_or(ClusterError::NoVoterLeft)?;
        if let kv::MemberChange::Promote { id } = change {
            // etcd's rule: the learner has at least 90% of the leader's log.
            let (commit, live) = self.replica.peer_progress(*id).unwrap_or((0, false));
            let leader_commit = self.replica.commit_index();
            if !live || commit < leader_commit - leader_commit / 10 {
                return Err(ClusterError::LearnerNotReady.into());
            }
        }
        if self.config.strict_reconfig_check {
            let started = next
                .voters
                .iter()
                .filter(|id| {
                    self.replica
                        .peer_progress(**id)
                        .is_some_and(|(_, live)| live)
                })
                .count();
            if started < next.quorum() {
                return Err(ClusterError::NotEnoughStartedMembers.into());
            }
        }
        let body = kv::Command::SetMembers(kv::SetMembersRequest { members: table }).encode();
        let mut payload = Vec::with_capacity(8 + body.len());
        payload.extend_from_slice(&self.now_ms().to_le_bytes());
        payload.extend_from_slice(&body);
        self.counters.proposals += 1;
        let command = Command {
            client,
            seq,
            payload,
        };
        self.replica
            .reconfigure(next, command)
            .map_err(|e| match e {
                ProposeError::NotLeader { .. } => MemberError::NoLeader,
                ProposeError::Busy { .. } => MemberError::TooManyRequests,
                ProposeError::Reconfiguring { .. } => ClusterError::Unhealthy.into(),
            })
    }

    /// Proposes `command` under the client's own session `(client, seq)`:
    /// a retry of the same pair, here or at another member, is applied once.
    pub fn propose_as(&mut self, token: T, client: u64, seq: u64, command: kv::Command) {
        if let Err(e) = self.store.limits().check(&command) {
            self.reply(token, Err(MemberError::Kv(e)));
            return;
        }
        let bytes = command.encode();
        if let Some(old) = self.writes.insert(
            (client, seq),
            Waiter {
                token,
                deadline_ms: self.clock.mono_ms + self.config.request_timeout_ms,
                forwarded: None,
            },
        ) {
            // The same session retried here before the first answer: the
            // first caller gave up on it.
            self.reply(old.token, Err(MemberError::Timeout));
        }
        match self.propose_local(client, seq, &bytes) {
            Ok(()) => {}
            Err(ProposeError::NotLeader {
                leader: Some(leader),
                ..
            }) if leader != self.me => {
                self.outbox.push(Effect::Peer {
                    to: leader,
                    message: PeerMessage::Propose {
                        client,
                        seq,
                        command: bytes.clone(),
                    },
                });
                if let Some(w) = self.writes.get_mut(&(client, seq)) {
                    w.forwarded = Some((leader, bytes));
                }
            }
            Err(ProposeError::Busy { .. } | ProposeError::Reconfiguring { .. }) => {
                self.fail_write(client, seq, MemberError::TooManyRequests)
            }
            Err(ProposeError::NotLeader { .. }) => {
                self.fail_write(client, seq, MemberError::NoLeader)
            }
        }
    }

    /// A Paxos message from a peer.
    pub fn step(&mut self, envelope: Envelope) {
        self.replica.step(envelope);
    }

    /// A member-to-member message from a peer. Snapshot chunks are the
    /// runtime's to reassemble on disk: it hands a whole image to
    /// [`Member::install_snapshot`].
    pub fn receive(&mut self, from: NodeId, message: PeerMessage) {
        match message {
            PeerMessage::Propose {
                client,
                seq,
                command,
            } => match self.propose_local(client, seq, &command) {
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
                    self.outbox.push(Effect::Peer {
                        to: from,
                        message: PeerMessage::Refused {
                            client,
                            seq,
                            leader,
                        },
                    });
                }
            },
            PeerMessage::Refused { client, seq, .. } => {
                self.fail_write(client, seq, MemberError::NoLeader)
            }
            PeerMessage::ReadIndex { id } => {
                let read = self.next_read_id();
                if self.replica.read(read).is_ok() {
                    self.reads.insert(read, ReadWaiter::Remote { from, id });
                } else {
                    self.outbox.push(Effect::Peer {
                        to: from,
                        message: PeerMessage::ReadIndexReply { id, index: 0 },
                    });
                }
            }
            PeerMessage::ReadIndexReply { id, index } => {
                let asked = self.remote_reads.get(&id).map(|(asked, _)| *asked);
                if asked == Some(from)
                    && let Some((_, read)) = self.remote_reads.remove(&id)
                {
                    let applied = if self.bug(Bug::FollowerReadAtCoreApplied) {
                        self.replica.applied()
                    } else {
                        self.applied_slot
                    };
                    if index == 0 {
                        self.reply(read.token, Err(MemberError::NoLeader));
                    } else if index <= applied {
                        assert!(
                            self.applied_slot >= index,
                            "a read is never served below its read index"
                        );
                        self.serve(read);
                    } else {
                        self.reads_at_index.entry(index).or_default().push(read);
                    }
                }
            }
            PeerMessage::Attributes { name, client_urls } => {
                self.peer_client_urls.insert(from, client_urls);
                self.peer_names.insert(from, name);
            }
            PeerMessage::ChangeMembers {
                client,
                seq,
                change,
            } => match self.reconfigure_local(client, seq, &change) {
                Ok(()) => {
                    self.forwarded.insert((client, seq));
                }
                Err(e) => self.outbox.push(Effect::Peer {
                    to: from,
                    message: PeerMessage::ChangeRefused {
                        client,
                        seq,
                        error: e.code(),
                    },
                }),
            },
            PeerMessage::ChangeRefused { client, seq, error } => {
                self.fail_write(client, seq, MemberError::from_code(error));
            }
            PeerMessage::Chunk(_) => {
                warn!(from, "a snapshot chunk reached the member, not the runtime");
            }
        }
    }

    /// A snapshot image received from a peer and made durable by the
    /// runtime: the store becomes it, and the log before it is dropped.
    pub fn install_snapshot(
        &mut self,
        from: NodeId,
        slot: Slot,
        image: &[u8],
    ) -> Result<(), String> {
        let store = Store::restore(image, self.store.limits().clone())
            .map_err(|e| format!("a received snapshot does not restore: {e}"))?;
        info!(from, slot, "installed a snapshot from a peer");
        self.store = store;
        self.applied_slot = slot;
        self.applied_since_snapshot = 0;
        self.replica
            .install_snapshot(slot, membership_of(self.store.members()));
        self.sync_time();
        // The watches here saw none of the applies the image covers: they
        // get those events from its history, in order, before any later.
        for response in self.hub.catch_up(&self.store) {
            let owner = if response.canceled {
                self.watch_owner.remove(&response.watch_id)
            } else {
                self.watch_owner.get(&response.watch_id).copied()
            };
            if let Some(session) = owner {
                self.outbox.push(Effect::Watch { session, response });
            }
        }
        self.serve_reads_at_index();
        Ok(())
    }

    /// The runtime saved the snapshot of the last [`Checkpoint`] (and
    /// trims the log before it); another may start.
    pub fn snapshot_saved(&mut self) {
        self.saving = false;
    }

    /// One protocol tick, with a random word for the core's election
    /// backoff.
    pub fn tick(&mut self, random: u64) {
        // What is held leaves at least once a tick (see `held.rs`).
        self.release_held();
        self.replica.tick(random);
        let now = self.clock.mono_ms;
        // Requests that waited too long: their outcome is unknown.
        let expired: Vec<(u64, u64)> = self
            .writes
            .iter()
            .filter(|(_, w)| w.deadline_ms <= now)
            .map(|(k, _)| *k)
            .collect();
        for (client, seq) in expired {
            self.fail_write(client, seq, MemberError::Timeout);
        }
        let expired: Vec<ReadId> = self
            .reads
            .iter()
            .filter(|(_, r)| matches!(r, ReadWaiter::Local(p) if p.deadline_ms <= now))
            .map(|(k, _)| *k)
            .collect();
        for id in expired {
            if let Some(ReadWaiter::Local(read)) = self.reads.remove(&id) {
                self.reply(read.token, Err(MemberError::Timeout));
            }
        }
        let expired: Vec<u64> = self
            .remote_reads
            .iter()
            .filter(|(_, (_, r))| r.deadline_ms <= now)
            .map(|(k, _)| *k)
            .collect();
        for id in expired {
            if let Some((_, read)) = self.remote_reads.remove(&id) {
                self.reply(read.token, Err(MemberError::Timeout));
            }
        }
        let mut late = Vec::new();
        for reads in self.reads_at_index.values_mut() {
            let (gone, kept) = std::mem::take(reads)
                .into_iter()
                .partition(|r| r.deadline_ms <= now);
            *reads = kept;
            late.extend(gone);
        }
        self.reads_at_index.retain(|_, reads| !reads.is_empty());
        for read in late {
            self.reply(read.token, Err(MemberError::Timeout));
        }
        if self.replica.is_leader() {
            self.expire_leases();
        } else if self.bug(Bug::LeaseExpiryByFollowerClock) {
            self.revoke_leases_due_here();
        }
        self.reforward();
        if self.ticks.is_multiple_of(ATTRIBUTES_EVERY_TICKS) {
            let peers: Vec<NodeId> = self.replica.membership().all().collect();
            for peer in peers {
                if peer != self.me {
                    self.outbox.push(Effect::Peer {
                        to: peer,
                        message: PeerMessage::Attributes {
                            name: self.name.clone(),
                            client_urls: self.client_urls.clone(),
                        },
                    });
                }
            }
        }
        self.ticks += 1;
    }

    /// Opens slots for the queued commands now (with
    /// [`Config::fill_on_ready`] off).
    pub fn fill(&mut self) {
        self.replica.fill();
    }

    // ----- watches -----

    /// Creates a watch for `session`; its responses come as
    /// [`Effect::Watch`] for that session.
    pub fn watch_create(&mut self, session: u64, request: &kv::WatchCreateRequest) {
        let responses = self.hub.create(&self.store, request);
        for r in &responses {
            if r.created && !r.canceled {
                self.watch_owner.insert(r.watch_id, session);
            }
        }
        for response in responses {
            // The created response (and any refusal) go to this session
            // even when the watch was not kept.
            self.outbox.push(Effect::Watch { session, response });
        }
    }

    /// Cancels one of `session`'s watches.
    pub fn watch_cancel(&mut self, session: u64, watch_id: i64) {
        if self.watch_owner.get(&watch_id) == Some(&session) {
            self.watch_owner.remove(&watch_id);
            let revision = self.store.revision();
            if let Some(response) = self.hub.cancel(watch_id, revision) {
                self.outbox.push(Effect::Watch { session, response });
            }
        }
    }

    /// Answers a progress request with the store's revision.
    pub fn watch_progress(&mut self, session: u64) {
        let response = WatchResponse {
            header: kv::ResponseHeader {
                revision: self.store.revision(),
            },
            watch_id: -1,
            ..WatchResponse::default()
        };
        self.outbox.push(Effect::Watch { session, response });
    }

    /// Forgets a watch session and cancels its watches.
    pub fn close_watch_session(&mut self, session: u64) {
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

    // ----- output -----

    /// Everything the inputs since the last call ask of the runtime, in
    /// stages around each barrier (see [`crate::ready`]).
    pub fn ready(&mut self) -> Ready<T> {
        self.held.start_turn();
        let mut stages = Vec::new();
        let mut stage = Stage {
            now: std::mem::take(&mut self.outbox),
            ..Stage::default()
        };
        loop {
            if self.config.fill_on_ready {
                self.replica.fill();
            }
            let outputs = self.replica.take_outputs();
            if outputs.is_empty() {
                break;
            }
            let first_barrier = outputs
                .iter()
                .position(|o| matches!(o, Output::Persist(r) if r.is_barrier()))
                .unwrap_or(outputs.len());
            let mut after = Vec::new();
            for (i, output) in outputs.into_iter().enumerate() {
                match output {
                    Output::Persist(record) => stage.records.push(record),
                    other if i < first_barrier => self.execute(other),
                    other => after.push(other),
                }
            }
            stage.now.append(&mut self.outbox);
            if stage.records.iter().any(|r| r.is_barrier()) {
                stage.sync = true;
                // The decisions of earlier turns leave before the sync, so
                // that the voters' ride with this turn's `Accept`.
                self.send_due_held();
                stage.now.append(&mut self.outbox);
            }
            for output in after {
                self.execute(output);
            }
            stage.after.append(&mut self.outbox);
            stages.push(std::mem::take(&mut stage));
        }
        self.send_due_held();
        stage.now.append(&mut self.outbox);
        if !stage.is_empty() {
            stages.push(stage);
        }
        Ready {
            stages,
            checkpoint: self.checkpoint(),
        }
    }

    // ----- inside -----

    /// A deliberately broken variant is on (the simulator's `--bug`).
    fn bug(&self, bug: Bug) -> bool {
        self.replica.config().bug == Some(bug)
    }

    fn random(&mut self) -> u64 {
        splitmix64(&mut self.rng)
    }

    /// The next `(client, seq)` of this leadership's own session.
    fn leader_session(&mut self) -> (u64, u64) {
        let (client, seq) = self
            .leader_session
            .get_or_insert((leader_client_id(Ballot::ZERO), 1));
        let session = (*client, *seq);
        *seq += 1;
        session
    }

    /// A client id of its own: random, with the top bit clear, apart from
    /// the leaderships' ids.
    fn fresh_client_id(&mut self) -> u64 {
        self.random() & !(1 << 63)
    }

    /// The next `(client, seq)` of the session the requests entering here
    /// share (DESIGN.md rule 4). The session table remembers a window of
    /// answers per client, so every command still in flight must stay
    /// within [`kv::SESSION_WINDOW`] of the newest: when the oldest lags
    /// that far (a request stuck through elections while thousands pass),
    /// the member starts a new session and the old one drains.
    fn client_session(&mut self) -> (u64, u64) {
        let (client, next) = self.session;
        let oldest = self
            .writes
            .range((client, 0)..=(client, u64::MAX))
            .next()
            .map(|(&(_, seq), _)| seq);
        if client == 0 || oldest.is_some_and(|oldest| next - oldest >= kv::SESSION_WINDOW) {
            self.session = (self.fresh_client_id(), 1);
        }
        let (client, seq) = self.session;
        self.session.1 += 1;
        debug_assert!(
            self.writes
                .range((client, 0)..=(client, u64::MAX))
                .all(|(&(_, s), _)| seq - s < kv::SESSION_WINDOW),
            "a command in flight fell out of its session's window"
        );
        (client, seq)
    }

    fn next_read_id(&mut self) -> u64 {
        let id = self.next_read;
        self.next_read += 1;
        id
    }

    fn reply(&mut self, token: T, result: Result<Reply, MemberError>) {
        self.outbox.push(Effect::Reply { token, result });
    }

    fn fail_write(&mut self, client: u64, seq: u64, error: MemberError) {
        if let Some(w) = self.writes.remove(&(client, seq)) {
            self.reply(w.token, Err(error));
        }
    }

    fn serve(&mut self, read: PendingRead<T>) {
        let result = read.query.serve(&self.store, self.now_ms());
        self.reply(read.token, result);
    }

    /// Queues a command for a slot, stamped with the leader's clock (lease
    /// time is measured by it, DESIGN.md rule 3).
    fn propose_local(&mut self, client: u64, seq: u64, command: &[u8]) -> Result<(), ProposeError> {
        let mut payload = Vec::with_capacity(8 + command.len());
        payload.extend_from_slice(&self.now_ms().to_le_bytes());
        payload.extend_from_slice(command);
        self.counters.proposals += 1;
        // Queued only: `ready` opens slots for the whole turn's commands at
        // once, so that they share them.
        self.replica.enqueue(Command {
            client,
            seq,
            payload,
        })
    }

    fn read(&mut self, token: T, query: Query) {
        let read = PendingRead {
            token,
            query,
            deadline_ms: self.clock.mono_ms + self.config.request_timeout_ms,
        };
        let id = self.next_read_id();
        if self.replica.is_leader() && self.bug(Bug::LeaderLocalRead) {
            self.serve(read);
            return;
        }
        if self.replica.is_leader() {
            match self.replica.read(id) {
                Ok(()) => {
                    self.reads.insert(id, ReadWaiter::Local(read));
                }
                Err(ProposeError::Busy { .. } | ProposeError::Reconfiguring { .. }) => {
                    self.reply(read.token, Err(MemberError::TooManyRequests))
                }
                Err(ProposeError::NotLeader { .. }) => {
                    self.reply(read.token, Err(MemberError::NoLeader))
                }
            }
            return;
        }
        match self.replica.leader() {
            Some(leader) if leader != self.me => {
                self.outbox.push(Effect::Peer {
                    to: leader,
                    message: PeerMessage::ReadIndex { id },
                });
                self.remote_reads.insert(id, (leader, read));
            }
            _ => self.reply(read.token, Err(MemberError::NoLeader)),
        }
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
                if self.propose_local(client, seq, &command).is_err() {
                    self.fail_write(client, seq, MemberError::NoLeader);
                }
                continue;
            }
            let (as_client, as_seq) = if self.bug(Bug::ReforwardTwice) {
                (self.fresh_client_id(), 1)
            } else {
                (client, seq)
            };
            self.outbox.push(Effect::Peer {
                to: leader,
                message: PeerMessage::Propose {
                    client: as_client,
                    seq: as_seq,
                    command: command.clone(),
                },
            });
            if let Some(w) = self.writes.get_mut(&(client, seq)) {
                w.forwarded = Some((leader, command));
            }
        }
    }

    /// The leases due by this member's replicated time that are not being
    /// expired already; they count as being expired from now until a retry
    /// is due.
    fn leases_due_here(&mut self) -> Vec<LeaseId> {
        let now = self.clock.mono_ms;
        self.expiring.retain(|_, retry_at| *retry_at > now);
        let due: Vec<LeaseId> = self
            .store
            .expired_leases(self.now_ms(), EXPIRE_LEASES_PER_TICK_MAX)
            .into_iter()
            .filter(|id| !self.expiring.contains_key(id))
            .collect();
        for id in &due {
            self.expiring.insert(*id, now + EXPIRE_RETRY_MS);
        }
        due
    }

    /// The leader decides lease expiry and replicates it (DESIGN.md rule 3).
    fn expire_leases(&mut self) {
        let due = self.leases_due_here();
        if due.is_empty() {
            return;
        }
        let command = kv::Command::LeaseExpire(kv::LeaseExpireRequest { ids: due });
        let (client, seq) = self.leader_session();
        let _ = self.propose_local(client, seq, &command.encode());
    }

    /// The broken variant `lease-expiry-by-follower-clock`: a follower has
    /// the leases its own store and clock say are due revoked outright.
    fn revoke_leases_due_here(&mut self) {
        let Some(leader) = self.replica.leader().filter(|l| *l != self.me) else {
            return;
        };
        for id in self.leases_due_here() {
            let command = kv::Command::LeaseRevoke(kv::LeaseRevokeRequest { id });
            let (client, seq) = self.client_session();
            self.outbox.push(Effect::Peer {
                to: leader,
                message: PeerMessage::Propose {
                    client,
                    seq,
                    command: command.encode(),
                },
            });
        }
    }

    fn execute(&mut self, output: Output) {
        match output {
            Output::Persist(_) => {}
            Output::Send(envelope) => {
                if matches!(envelope.message, Message::Heartbeat { .. }) {
                    // It tells the commit index: the decisions it covers go
                    // first, or the peer would ask for them again.
                    self.release_held();
                }
                self.outbox.push(Effect::Send(envelope));
            }
            Output::Announce(decision) if self.forwarded.is_empty() => self.held.hold(decision),
            Output::Announce(decision) => {
                // A peer waits for a decision to answer its client.
                self.release_held();
                self.outbox.push(Effect::Send(decision));
            }
            Output::Apply { slot, value } => self.apply(slot, value),
            Output::ReadReady { read, index } => {
                // A linearizable read is a pause in the stream of writes
                // and asks for what is decided: every member is sent it
                // first (a peer serving the read applies up to the index;
                // the others then agree with what the reader saw).
                self.release_held();
                match self.reads.remove(&read) {
                    Some(ReadWaiter::Local(read)) => {
                        assert!(
                            self.applied_slot >= index,
                            "a read is never served below its read index"
                        );
                        self.serve(read)
                    }
                    Some(ReadWaiter::Remote { from, id }) => {
                        let index = self.replica.applied();
                        self.outbox.push(Effect::Peer {
                            to: from,
                            message: PeerMessage::ReadIndexReply { id, index },
                        });
                    }
                    None => {}
                }
            }
            Output::ReadAborted { read, .. } => match self.reads.remove(&read) {
                Some(ReadWaiter::Local(read)) => self.reply(read.token, Err(MemberError::NoLeader)),
                Some(ReadWaiter::Remote { from, id }) => self.outbox.push(Effect::Peer {
                    to: from,
                    message: PeerMessage::ReadIndexReply { id, index: 0 },
                }),
                None => {}
            },
            Output::Rejected { command, .. } => {
                self.forwarded.remove(&(command.client, command.seq));
                self.fail_write(command.client, command.seq, MemberError::NoLeader)
            }
            Output::SendSnapshot { to } => {
                // While a snapshot is being saved the log before it is gone
                // from memory but the image on disk is older: sending that
                // would only bring the peer back for the newer one.
                self.outbox.push(Effect::SendSnapshot {
                    to,
                    min_slot: self.replica.snapshot_slot(),
                });
            }
            Output::Elected { ballot } => {
                info!(%ballot, "elected leader");
                self.counters.leader_changes += 1;
                // One session for what this leadership proposes of its own
                // accord: its commands take slots in order, so their
                // sequence numbers rise in the log, and no two leaderships
                // share a session (a ballot is never used twice).
                self.leader_session = Some((leader_client_id(ballot), 1));
                // Leases get a fresh TTL under the new leader, as etcd does.
                let (client, seq) = self.leader_session();
                let _ = self.propose_local(client, seq, &kv::Command::LeaseRenewAll.encode());
            }
            Output::SteppedDown { ballot } => {
                info!(%ballot, "no longer leading");
                self.expiring.clear();
                // Their peers hand them to the next leader.
                self.forwarded.clear();
            }
        }
    }

    /// Sends every held decision now, oldest first.
    fn release_held(&mut self) {
        for earlier in self.held.take_all() {
            self.outbox.push(Effect::Send(earlier));
        }
    }

    /// Sends the held decisions that may wait no longer this turn.
    fn send_due_held(&mut self) {
        for decision in self.held.take_due() {
            self.outbox.push(Effect::Send(decision));
        }
    }

    fn apply(&mut self, slot: Slot, value: Value) {
        assert_eq!(slot, self.applied_slot + 1, "slots apply strictly in order");
        self.applied_slot = slot;
        let commands = value.commands();
        if !commands.is_empty() {
            self.applied_since_snapshot += commands.len() as u64;
            let drop_tail = commands.len() > 1 && self.bug(Bug::WatchDropsBatchTail);
            for (i, c) in commands.iter().enumerate() {
                let publish = !(drop_tail && i + 1 == commands.len());
                self.apply_command(c, publish);
            }
        }
        self.sync_time();
        if self.config.observe {
            self.outbox.push(Effect::Applied { slot, value });
        }
        self.serve_reads_at_index();
    }

    /// Applies one command; its watch events go out if `publish` (always,
    /// but in a broken variant).
    fn apply_command(&mut self, c: &Command, publish: bool) {
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
        let outcome = self.store.apply_session(c.client, c.seq, &command, ctx);
        if matches!(command, kv::Command::SetMembers(_))
            && !matches!(outcome, SessionOutcome::Applied(_))
        {
            // A configuration change is in force whatever the session
            // table says of its command: the member table must follow it,
            // or the core and the table would disagree. Replacing the table
            // twice changes nothing.
            if let Err(e) = self.store.apply(&command, ctx) {
                warn!(%e, "a configuration change's member table did not apply");
            }
        }
        let result: Result<kv::Response, KvError> = match outcome {
            SessionOutcome::Applied(Ok(applied)) => {
                let revision = self.store.revision();
                let responses = self.hub.publish(revision, &applied.events);
                if publish {
                    self.route_watch_responses(responses);
                }
                Ok(applied.response)
            }
            SessionOutcome::Applied(Err(e)) => Err(e),
            SessionOutcome::Duplicate(result) => result,
            SessionOutcome::Stale { .. } => return,
        };
        if let Some(w) = self.writes.remove(&(c.client, c.seq)) {
            self.reply(w.token, result.map(Reply::Command).map_err(MemberError::Kv));
        }
    }

    /// Serves follower reads whose read index the store has reached. The
    /// store's own apply point, not the replica's: the replica counts
    /// applies it has handed out that may not be carried out yet, and
    /// serving against it would read a stale store.
    fn serve_reads_at_index(&mut self) {
        let applied = self.applied_slot;
        while let Some(entry) = self.reads_at_index.first_entry() {
            if *entry.key() > applied {
                break;
            }
            for read in entry.remove() {
                self.serve(read);
            }
        }
    }

    fn route_watch_responses(&mut self, responses: Vec<WatchResponse>) {
        for response in responses {
            if let Some(&session) = self.watch_owner.get(&response.watch_id) {
                self.outbox.push(Effect::Watch { session, response });
            }
        }
    }

    /// Starts a snapshot once enough commands were applied since the last
    /// one: the store is frozen (value bytes shared, not copied) and the
    /// replica's log before it dropped now; the runtime saves the image
    /// and trims the log file once it is durable.
    fn checkpoint(&mut self) -> Option<Checkpoint> {
        let applied = self.applied_slot;
        assert_eq!(
            applied,
            self.replica.applied(),
            "at the end of a batch every apply the core handed out is carried out"
        );
        if self.saving
            || self.applied_since_snapshot < self.config.snapshot_count
            || applied <= self.replica.snapshot_slot()
        {
            return None;
        }
        let image = self.store.frozen();
        let compacted = self.replica.compact(applied);
        self.saving = true;
        self.applied_since_snapshot = 0;
        Some(Checkpoint {
            slot: applied,
            image,
            compacted,
        })
    }
}

impl<T> std::fmt::Debug for Member<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("me", &self.me)
            .field("applied_slot", &self.applied_slot)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv::{Limits, PutRequest};
    use paxos::multi::Config as ReplicaConfig;

    fn member() -> Member<u64> {
        Member::new(
            Replica::new(ReplicaConfig::new(1, vec![1])),
            Store::new(Limits::default()),
            Config {
                request_timeout_ms: 60_000,
                snapshot_count: 1_000_000,
                seed: 7,
                fill_on_ready: true,
                observe: false,
                ..Config::default()
            },
        )
    }

    fn put(key: &str) -> Request {
        Request::Propose(kv::Command::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        }))
    }

    /// Ticks the lone member until it leads.
    fn lead(m: &mut Member<u64>) {
        for now in 0..1_000 {
            m.set_clock(Clock { mono_ms: now * 10 });
            m.tick(now);
            let _ = m.ready();
            if m.replica().is_leader() {
                return;
            }
        }
        panic!("a lone member never led");
    }

    /// Runs the member until it answers `tokens` requests.
    fn answers(m: &mut Member<u64>, tokens: usize) -> BTreeMap<u64, Result<Reply, MemberError>> {
        let mut got = BTreeMap::new();
        for now in 1_000..2_000 {
            m.set_clock(Clock { mono_ms: now * 10 });
            m.tick(now);
            for stage in m.ready().stages {
                for effect in stage.now.into_iter().chain(stage.after) {
                    if let Effect::Reply { token, result } = effect {
                        got.insert(token, result);
                    }
                }
            }
            if got.len() == tokens {
                return got;
            }
        }
        panic!("only {} of {tokens} answered", got.len());
    }

    #[test]
    fn requests_share_the_members_session_and_each_applies_once() {
        let mut m = member();
        lead(&mut m);
        for token in 0..5 {
            m.request(token, put(&format!("k{token}")));
        }
        let got = answers(&mut m, 5);
        assert!(
            got.values().all(|r| matches!(r, Ok(Reply::Command(_)))),
            "{got:?}"
        );
        // One client for all five, each answer remembered once; not five
        // sessions of one answer each. (The other session is the
        // leadership's own, of its lease renewal on election.)
        assert_eq!(m.store().session_count(), 2);
        assert_eq!(m.store().session_answers(), 6);
        assert_eq!(m.store().revision(), 6);
    }

    #[test]
    fn a_command_lagging_a_window_behind_moves_the_member_to_a_new_session() {
        let mut m = member();
        let (client, first) = m.client_session();
        // The first command is still in flight.
        m.writes.insert(
            (client, first),
            Waiter {
                token: 0,
                deadline_ms: u64::MAX,
                forwarded: None,
            },
        );
        for expected in first + 1..first + kv::SESSION_WINDOW {
            assert_eq!(m.client_session(), (client, expected));
        }
        let (next, seq) = m.client_session();
        assert_ne!(next, client, "the window is full: a new session");
        assert_eq!(seq, 1);
        assert_eq!(next >> 63, 0, "apart from the leaderships' ids");
        // Once the laggard is answered, the new session simply goes on.
        m.writes.clear();
        assert_eq!(m.client_session(), (next, 2));
    }
}
