//! One replica: proposer, acceptor and learner of every slot.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::config::{Bug, Config};
use super::durable::{Durable, Record};
use super::membership::Membership;
use super::message::{AcceptedEntry, Command, Envelope, Message, Reconfiguration, Slot, Value};
use super::output::{Output, ProposeError, ReadId};
use super::take_through;
use crate::ballot::{Ballot, NodeId};

/// What a replica is doing as a proposer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Following a leader (or waiting to stand).
    Follower,
    /// Running phase 1 for a ballot of its own.
    Candidate,
    /// Won phase 1; running phase 2 for new slots.
    Leader,
}

/// Phase 1 in progress.
#[derive(Debug)]
struct Candidate {
    ballot: Ballot,
    first_slot: Slot,
    promises: BTreeMap<NodeId, Vec<AcceptedEntry>>,
    /// Who was sent the `Prepare`: the voters of the first slot's
    /// configuration, and of each change adopted since.
    asked: BTreeSet<NodeId>,
    /// Commands a leader queued before it stood again (after its own
    /// configuration change): the new leadership proposes them, or hands
    /// them back if it loses.
    carried: VecDeque<Command>,
}

/// A leader's configuration change not yet seen decided.
#[derive(Debug)]
struct PendingChange {
    slot: Slot,
    membership: Membership,
    /// A quorum of the new configuration promised this leader's ballot:
    /// true for a change its phase 1 adopted (the walk asked them), false
    /// for one it proposed itself, after which it stands again so that
    /// the new voters promise before it opens a slot they decide.
    prepared: bool,
}

/// A slot the leader proposed and has not yet seen chosen.
#[derive(Debug)]
struct Proposal {
    value: Value,
    votes: BTreeSet<NodeId>,
    sent_tick: u64,
    /// Sent to a bare quorum ([`Config::thrifty`]), not to every member.
    thrifty: bool,
}

/// A read-index read waiting for its quorum round and its apply point.
#[derive(Debug)]
struct PendingRead {
    id: ReadId,
    read_index: Slot,
    round: u64,
}

/// Phase 2 state of a leader.
#[derive(Debug)]
struct Leader {
    ballot: Ballot,
    next_slot: Slot,
    inflight: BTreeMap<Slot, Proposal>,
    queue: VecDeque<Command>,
    /// The last slot phase 1 recovered; no read is served before it is
    /// applied, as the commit point is not known to be current until then.
    recovered_upto: Slot,
    heartbeat_elapsed: u32,
    started_round: u64,
    confirmed_round: u64,
    round_wanted: bool,
    /// The peers whose `Accepted` completed the quorum of the last slot
    /// sent to every member: where an idle leader sends its next `Accept`
    /// ([`Config::thrifty`]).
    fastest: Vec<NodeId>,
    /// The tick `fastest` was found at. It holds for one heartbeat
    /// interval: a peer that turned slow is found out by the next slot
    /// sent to all.
    fastest_tick: u64,
    /// Per member, the highest read round it acknowledged at our ballot.
    acked_round: BTreeMap<NodeId, u64>,
    /// Per member, the tick of its last acknowledgement (check-quorum).
    acked_tick: BTreeMap<NodeId, u64>,
    reads: Vec<PendingRead>,
    /// Per member, the commit index it last acknowledged with.
    peer_commit: BTreeMap<NodeId, Slot>,
    /// This leader's configuration change not yet seen decided, and the
    /// configuration it brings: no slot after it opens until it is decided
    /// (rule 2 of [`super::membership`]).
    change: Option<PendingChange>,
    /// Recovered slots after an undecided change, proposed once it is.
    deferred: BTreeMap<Slot, Value>,
}

#[derive(Debug)]
enum State {
    Follower,
    Candidate(Candidate),
    Leader(Box<Leader>),
}

/// The log a compaction took out of a replica's memory. Dropping it frees
/// every value of the trimmed slots, which took 8-30 ms for 100,000
/// commands on a loaded member: a runtime may drop it off the thread that
/// serves.
#[derive(Debug, Default)]
#[expect(dead_code, reason = "held only to be dropped")]
pub struct Compacted {
    accepted: BTreeMap<Slot, (Ballot, Value)>,
    chosen: BTreeMap<Slot, Value>,
}

/// A Multi-Paxos replica as a plain state machine. See the module docs for
/// how to drive it.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    /// Each configuration keyed by the first slot it is in force for; the
    /// one at key 0 is in force from the snapshot on (or from slot 1).
    memberships: BTreeMap<Slot, Membership>,
    // Acceptor.
    promised: Ballot,
    accepted: BTreeMap<Slot, (Ballot, Value)>,
    // Learner.
    chosen: BTreeMap<Slot, Value>,
    commit_index: Slot,
    applied: Slot,
    /// Slots up to here are in the state machine's snapshot, trimmed here.
    snapshot_slot: Slot,
    /// Per peer, when we last asked the runtime to send it our snapshot.
    snapshot_sent_tick: BTreeMap<NodeId, u64>,
    applied_out_of_order: BTreeSet<Slot>,
    // Proposer.
    state: State,
    max_seen: Ballot,
    leader: Option<NodeId>,
    leader_commit: Slot,
    /// The tick of our last catch-up request: at most one per tick.
    catchup_tick: Option<u64>,
    election_elapsed: u32,
    /// 0 means "draw a fresh randomized timeout at the next tick".
    election_timeout: u32,
    backoff_attempt: u32,
    now_tick: u64,
    outputs: Vec<Output>,
    loopback: VecDeque<Message>,
}

impl Replica {
    /// A replica that has never run.
    pub fn new(config: Config) -> Self {
        Replica::restart(config, Durable::default())
    }

    /// A replica restarting from what it persisted. Decisions it recorded
    /// are applied again, in order, through the outputs.
    pub fn restart(config: Config, durable: Durable) -> Self {
        // Without voters it is unknown: a member that joined an existing
        // cluster learns it from the log or a snapshot, and neither stands
        // nor leads before.
        let membership = durable
            .membership
            .clone()
            .unwrap_or_else(|| config.initial_membership());
        assert!(config.heartbeat_ticks > 0 && config.election_ticks > config.heartbeat_ticks);
        let promised = if config.bug == Some(Bug::ForgetPromise) {
            Ballot::ZERO
        } else {
            durable.promised
        };
        let snapshot_slot = durable.snapshot_slot;
        let mut accepted = durable.accepted;
        let mut chosen = durable.committed;
        take_through(&mut accepted, snapshot_slot);
        take_through(&mut chosen, snapshot_slot);
        let mut memberships = BTreeMap::new();
        memberships.insert(0, membership);
        for (slot, value) in &chosen {
            if let Some(next) = value.membership() {
                memberships.insert(slot + 1, next.clone());
            }
        }
        let mut replica = Replica {
            config,
            memberships,
            promised,
            accepted,
            chosen,
            commit_index: snapshot_slot,
            applied: snapshot_slot,
            snapshot_slot,
            snapshot_sent_tick: BTreeMap::new(),
            applied_out_of_order: BTreeSet::new(),
            state: State::Follower,
            max_seen: promised,
            leader: None,
            leader_commit: 0,
            catchup_tick: None,
            election_elapsed: 0,
            election_timeout: 0,
            backoff_attempt: 0,
            now_tick: 0,
            outputs: Vec::new(),
            loopback: VecDeque::new(),
        };
        replica.advance();
        replica
    }

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its current role.
    pub fn role(&self) -> Role {
        match self.state {
            State::Follower => Role::Follower,
            State::Candidate(_) => Role::Candidate,
            State::Leader(_) => Role::Leader,
        }
    }

    /// Whether it leads now.
    pub fn is_leader(&self) -> bool {
        matches!(self.state, State::Leader(_))
    }

    /// Who it believes leads (itself included), if anyone.
    pub fn leader(&self) -> Option<NodeId> {
        if self.is_leader() {
            Some(self.config.id)
        } else {
            self.leader
        }
    }

    /// The ballot it leads or stands with, if any.
    pub fn ballot(&self) -> Option<Ballot> {
        match &self.state {
            State::Follower => None,
            State::Candidate(c) => Some(c.ballot),
            State::Leader(l) => Some(l.ballot),
        }
    }

    /// The newest configuration this replica knows to be decided: who may
    /// stand, whose Prepare it answers, whether it is a learner. It may be
    /// ahead of the slots it has applied (a member that just joined, or a
    /// leader that removed itself, knows before it has caught up).
    pub fn membership(&self) -> &Membership {
        self.memberships
            .last_key_value()
            .map(|(_, membership)| membership)
            .unwrap_or_else(|| self.membership_at(0))
    }

    /// The configuration in force for `slot`, as far as this replica knows
    /// the decisions before it.
    pub fn membership_at(&self, slot: Slot) -> &Membership {
        membership_in(&self.memberships, slot)
    }

    /// A leader's view of a member: the commit index it last acknowledged
    /// a heartbeat with, and whether it did so within two election
    /// timeouts (etcd's "started" member). `None` when not leading.
    pub fn peer_progress(&self, id: NodeId) -> Option<(Slot, bool)> {
        let State::Leader(leader) = &self.state else {
            return None;
        };
        if id == self.config.id {
            return Some((self.commit_index, true));
        }
        let horizon = self
            .now_tick
            .saturating_sub(u64::from(self.config.election_ticks) * 2);
        let live = leader.acked_tick.get(&id).is_some_and(|t| *t >= horizon)
            && leader.acked_round.contains_key(&id);
        Some((leader.peer_commit.get(&id).copied().unwrap_or(0), live))
    }

    /// Whether the configuration change decided in `slot` has settled, as
    /// far as this leader can tell: a quorum of the voters it brings in
    /// know every slot up to it chosen. Until then a member it removed may
    /// still be needed (a candidate behind `slot` completes phase 1 with
    /// the old voters), so it should keep running. Always false off a
    /// leader.
    pub fn settled(&self, slot: Slot) -> bool {
        let State::Leader(leader) = &self.state else {
            return false;
        };
        if self.commit_index < slot {
            return false;
        }
        let next = self.membership_at(slot + 1);
        let caught_up = next.voters.iter().filter(|id| {
            **id == self.config.id || leader.peer_commit.get(id).is_some_and(|c| *c >= slot)
        });
        caught_up.count() >= next.quorum()
    }

    /// Whether this leader has a configuration change in flight: another
    /// must wait until it is decided.
    pub fn reconfiguring(&self) -> bool {
        matches!(&self.state, State::Leader(l) if l.change.is_some())
    }

    /// The highest ballot promised.
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// Every slot up to here is known chosen.
    pub fn commit_index(&self) -> Slot {
        self.commit_index
    }

    /// Every slot up to here has been handed out as `Output::Apply`.
    pub fn applied(&self) -> Slot {
        self.applied
    }

    /// Slots up to here are trimmed into the state machine's snapshot.
    pub fn snapshot_slot(&self) -> Slot {
        self.snapshot_slot
    }

    /// The runtime froze a snapshot of the state machine covering every
    /// slot up to `slot`: trim the log before it. Trimming follows the
    /// applied point of a snapshot, never the chosen point alone. The
    /// runtime may call this before the snapshot is durable, as long as it
    /// keeps those slots' records on disk until it is: the decisions are
    /// final, so answering for them (Promise, Accepted, catch-up by
    /// snapshot) needs no copy in memory, and a restart recovers them from
    /// the disk. Returns what was trimmed, for the runtime to drop where it
    /// costs least.
    pub fn compact(&mut self, slot: Slot) -> Compacted {
        assert!(slot <= self.applied, "a snapshot covers only applied slots");
        if slot <= self.snapshot_slot {
            return Compacted::default();
        }
        self.snapshot_slot = slot;
        self.forget_memberships_through(slot);
        Compacted {
            accepted: take_through(&mut self.accepted, slot),
            chosen: take_through(&mut self.chosen, slot),
        }
    }

    /// The runtime installed a snapshot received from a peer, covering
    /// every slot up to `slot`, into the state machine (and made it
    /// durable). `membership` is the configuration the snapshot records
    /// as in force after it (`None`: no change was decided up to it).
    /// Applying resumes after it.
    pub fn install_snapshot(&mut self, slot: Slot, membership: Option<Membership>) {
        if slot <= self.commit_index {
            return;
        }
        // A leader that was this far behind may hold a change and slots
        // the snapshot decided otherwise: it lets someone current lead.
        self.step_down(None);
        self.commit_index = slot;
        self.applied = slot;
        self.snapshot_slot = slot;
        // Applies handed out but not yet taken are in the snapshot now.
        self.outputs
            .retain(|o| !matches!(o, Output::Apply { slot: s, .. } if *s <= slot));
        self.forget_memberships_through(slot);
        if let Some(membership) = membership.filter(Membership::is_valid) {
            self.memberships.insert(0, membership);
        }
        take_through(&mut self.accepted, slot);
        take_through(&mut self.chosen, slot);
        self.advance();
        self.drain_loopback();
    }

    /// Slots proposed by this leader and not yet chosen (0 if not leading).
    pub fn inflight(&self) -> usize {
        match &self.state {
            State::Leader(l) => l.inflight.len(),
            _ => 0,
        }
    }

    /// Commands queued by [`Replica::enqueue`] that have no slot yet.
    pub fn queued(&self) -> usize {
        match &self.state {
            State::Leader(l) => l.queue.len(),
            _ => 0,
        }
    }

    /// Takes the outputs produced so far, to be carried out in order.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// Time passes by one tick. `random` is fresh randomness from the caller,
    /// used when a randomized timeout must be drawn.
    pub fn tick(&mut self, random: u64) {
        self.now_tick += 1;
        if self.election_timeout == 0 {
            let base = self.config.election_ticks;
            let exponent = self.backoff_attempt.min(self.config.backoff_exponent_max);
            let spread = u64::from(base) << exponent;
            let extra = u32::try_from(random % spread).unwrap_or(u32::MAX);
            self.election_timeout = base.saturating_add(extra).max(1);
        }
        match &mut self.state {
            State::Follower => {
                self.election_elapsed += 1;
                // A learner, or a member removed, never stands; nor one that
                // does not know the configuration of the slots it would
                // recover (it joined and is still catching up).
                if self.election_elapsed >= self.election_timeout
                    && self.membership().is_voter(self.config.id)
                    && !self.membership_at(self.commit_index + 1).voters.is_empty()
                {
                    self.stand();
                }
            }
            State::Candidate(_) => {
                self.election_elapsed += 1;
                if self.election_elapsed >= self.election_timeout {
                    // Phase 1 did not gather a quorum in time: back off more.
                    self.backoff_attempt = self.backoff_attempt.saturating_add(1);
                    self.stand();
                }
            }
            State::Leader(leader) => {
                leader.heartbeat_elapsed += 1;
                if leader.heartbeat_elapsed >= self.config.heartbeat_ticks {
                    self.start_read_round();
                    self.retransmit();
                    self.check_quorum();
                }
            }
        }
        self.drain_loopback();
    }

    /// Proposes a client command. Only the leader takes it; otherwise the
    /// command is handed back with a hint of who leads.
    pub fn propose(&mut self, command: Command) -> Result<(), ProposeError> {
        self.enqueue(command)?;
        self.fill();
        Ok(())
    }

    /// Proposes a configuration change: `membership` is in force for every
    /// slot after the one that decides it, and `command` is applied with
    /// it. One change at a time: while one is in flight another is
    /// refused, and no slot after it opens until it is decided.
    pub fn reconfigure(
        &mut self,
        membership: Membership,
        command: Command,
    ) -> Result<(), ProposeError> {
        let State::Leader(leader) = &mut self.state else {
            return Err(ProposeError::NotLeader {
                command: Some(command),
                leader: self.leader,
            });
        };
        if leader.change.is_some() || !membership.is_valid() {
            return Err(ProposeError::Reconfiguring {
                command: Some(command),
            });
        }
        let slot = leader.next_slot;
        leader.next_slot += 1;
        let value = Value::Reconfigure(std::sync::Arc::new(Reconfiguration {
            membership,
            command,
        }));
        self.propose_slot(slot, value);
        self.drain_loopback();
        Ok(())
    }

    /// Queues a client command without opening a slot for it yet. A caller
    /// that gathers many commands at once (a server turn) queues them all
    /// and then calls [`Replica::fill`] once, so that they share slots: one
    /// `Accept`, one acceptance record and one decision for the lot,
    /// instead of one each.
    pub fn enqueue(&mut self, command: Command) -> Result<(), ProposeError> {
        let State::Leader(leader) = &mut self.state else {
            return Err(ProposeError::NotLeader {
                command: Some(command),
                leader: self.leader,
            });
        };
        if leader.queue.len() >= self.config.queue_commands_max {
            return Err(ProposeError::Busy {
                command: Some(command),
            });
        }
        leader.queue.push_back(command);
        Ok(())
    }

    /// Opens slots for the queued commands, batched, while the pipeline has
    /// room (what is left goes as slots are chosen).
    pub fn fill(&mut self) {
        self.fill_slots();
        self.drain_loopback();
    }

    /// Starts a linearizable read that does not write to the log. When
    /// `Output::ReadReady { read, .. }` comes out, the caller serves it from its
    /// state machine as applied at that moment.
    pub fn read(&mut self, read: ReadId) -> Result<(), ProposeError> {
        let State::Leader(leader) = &mut self.state else {
            return Err(ProposeError::NotLeader {
                command: None,
                leader: self.leader,
            });
        };
        if leader.reads.len() >= self.config.queue_commands_max {
            return Err(ProposeError::Busy { command: None });
        }
        let read_index = self.commit_index.max(leader.recovered_upto);
        let round = leader.started_round + 1;
        leader.reads.push(PendingRead {
            id: read,
            read_index,
            round,
        });
        if leader.started_round == leader.confirmed_round {
            self.start_read_round();
        } else {
            leader.round_wanted = true;
        }
        self.drain_loopback();
        Ok(())
    }

    /// Handles a message from a peer. Anything malformed, from a stranger,
    /// with an implausible ballot or an out-of-range slot is ignored.
    pub fn step(&mut self, envelope: Envelope) {
        // Anyone may tell us a decision or lead us: a member that joined
        // after our last known configuration may be the leader. Votes and
        // promises count only from the voters of the configuration in
        // force for their slot, and a Prepare only from a voter.
        if envelope.to != self.config.id || envelope.from == self.config.id {
            return;
        }
        if !self.plausible(envelope.from, &envelope.message) {
            return;
        }
        self.handle(envelope.from, envelope.message);
        self.drain_loopback();
    }

    /// Whether a message from a member is well-formed enough to act on.
    fn plausible(&self, from: NodeId, message: &Message) -> bool {
        if let Some(ballot) = message.proposer_ballot()
            && (ballot.node != from || !ballot.is_plausible())
        {
            return false;
        }
        let slot_ok = |slot: Slot| {
            slot >= 1
                && slot
                    <= self
                        .commit_index
                        .saturating_add(self.config.slot_window_max)
        };
        match message {
            Message::Prepare { first_slot, .. } => *first_slot >= 1,
            Message::Promise {
                ballot, accepted, ..
            } => {
                ballot.node == self.config.id
                    && accepted
                        .iter()
                        .all(|e| e.slot >= 1 && e.ballot <= *ballot && e.ballot.is_plausible())
            }
            Message::Accept { slot, .. } => slot_ok(*slot),
            Message::Accepted { ballot, slot } => ballot.node == self.config.id && *slot >= 1,
            Message::Nack { ballot, higher } => {
                ballot.node == self.config.id && higher.is_plausible()
            }
            Message::Commit { slot, .. } | Message::Chosen { slot, .. } => slot_ok(*slot),
            Message::Heartbeat { .. } => true,
            Message::HeartbeatAck { ballot, .. } => ballot.node == self.config.id,
            Message::CatchUp { from } => *from >= 1,
        }
    }

    fn handle(&mut self, from: NodeId, message: Message) {
        match message {
            Message::Prepare { ballot, first_slot } => self.on_prepare(from, ballot, first_slot),
            Message::Promise {
                ballot,
                accepted,
                snapshot_slot,
            } => self.on_promise(from, ballot, accepted, snapshot_slot),
            Message::Accept {
                ballot,
                slot,
                value,
            } => self.on_accept(from, ballot, slot, value),
            Message::Accepted { ballot, slot } => self.on_accepted(from, ballot, slot),
            Message::Nack { ballot, higher } => self.on_nack(ballot, higher),
            Message::Commit { slot, value } => self.learn(slot, value),
            Message::Chosen { ballot, slot } => self.on_chosen(ballot, slot),
            Message::Heartbeat {
                ballot,
                commit_index,
                round,
            } => self.on_heartbeat(from, ballot, commit_index, round),
            Message::HeartbeatAck {
                ballot,
                round,
                commit_index,
            } => self.on_heartbeat_ack(from, ballot, round, commit_index),
            Message::CatchUp { from: first } => self.on_catch_up(from, first),
        }
    }

    fn send(&mut self, to: NodeId, message: Message) {
        if to == self.config.id {
            self.loopback.push_back(message);
        } else {
            self.outputs.push(Output::Send(Envelope {
                from: self.config.id,
                to,
                message,
            }));
        }
    }

    /// Sends to each of `to`, this replica last if among them (through the
    /// loopback, so its own acceptor handles it like any other, persist
    /// included).
    fn send_all(&mut self, to: impl IntoIterator<Item = NodeId>, message: Message) {
        let me = self.config.id;
        let mut to_me = false;
        for id in to {
            if id == me {
                to_me = true;
            } else {
                self.send(id, message.clone());
            }
        }
        if to_me {
            self.send(me, message);
        }
    }

    /// Whose votes count for `slot`: its configuration's voters (and, in a
    /// broken variant, its learners).
    fn counts_vote(&self, slot: Slot, id: NodeId) -> bool {
        let membership = self.membership_at(slot);
        membership.is_voter(id)
            || (self.config.bug == Some(Bug::LearnerVotes) && membership.learners.contains(&id))
    }

    /// The members an `Accept` for `slot` goes to: those whose vote counts.
    fn acceptors(&self, slot: Slot) -> Vec<NodeId> {
        let learner_votes = self.config.bug == Some(Bug::LearnerVotes);
        acceptors_of(self.membership_at(slot), learner_votes).collect()
    }

    /// The configurations a leader's quorum rounds (read confirmation,
    /// check-quorum) must each reach: the one in force for the next slot
    /// to decide and the one its change in flight brings in.
    fn leading_memberships(&self) -> Vec<&Membership> {
        let mut all = vec![self.membership_at(self.commit_index + 1)];
        if self.membership() != all[0] {
            all.push(self.membership());
        }
        if let State::Leader(leader) = &self.state
            && let Some(change) = &leader.change
        {
            all.push(&change.membership);
        }
        all
    }

    /// Everyone a leader keeps informed: the members, voters and learners,
    /// of the configurations it leads.
    fn audience(&self) -> BTreeSet<NodeId> {
        self.leading_memberships()
            .into_iter()
            .flat_map(Membership::all)
            .collect()
    }

    /// Keeps the configuration in force after `slot` (at key 0) and every
    /// later one; the ones before are no longer needed.
    fn forget_memberships_through(&mut self, slot: Slot) {
        let current = self.membership_at(slot + 1).clone();
        self.memberships = self.memberships.split_off(&(slot + 2));
        self.memberships.insert(0, current);
    }

    /// Handles messages this replica sent itself, in order. Each handler
    /// emits its persists before its sends, so the barrier rule holds for the
    /// replica's own acceptor too.
    fn drain_loopback(&mut self) {
        let me = self.config.id;
        // Bounded: each self-message yields at most a few more.
        let mut budget = 1_000_000u32;
        while let Some(message) = self.loopback.pop_front() {
            budget -= 1;
            assert!(budget > 0, "loopback does not terminate");
            self.handle(me, message);
        }
    }

    fn persist(&mut self, record: Record) {
        self.outputs.push(Output::Persist(record));
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        self.election_timeout = 0;
    }

    /// Notes a ballot seen on the wire; a higher one ends our own bid.
    fn observe(&mut self, ballot: Ballot) {
        if ballot > self.max_seen {
            self.max_seen = ballot;
        }
        if let Some(own) = self.ballot()
            && ballot > own
        {
            self.step_down(Some(ballot.node));
        }
    }

    fn step_down(&mut self, leader: Option<NodeId>) {
        let state = std::mem::replace(&mut self.state, State::Follower);
        let ballot = match state {
            State::Follower => return,
            State::Candidate(c) => {
                for command in c.carried {
                    self.outputs.push(Output::Rejected { command, leader });
                }
                c.ballot
            }
            State::Leader(l) => {
                for read in l.reads {
                    self.outputs.push(Output::ReadAborted {
                        read: read.id,
                        leader,
                    });
                }
                for command in l.queue {
                    self.outputs.push(Output::Rejected { command, leader });
                }
                l.ballot
            }
        };
        self.leader = leader;
        self.reset_election_timer();
        self.outputs.push(Output::SteppedDown { ballot });
    }

    // ----- acceptor -----

    /// Refuses `ballot`, naming the promise it lost to, so its proposer
    /// stops early.
    fn nack(&mut self, to: NodeId, ballot: Ballot) {
        let higher = self.promised;
        self.send(to, Message::Nack { ballot, higher });
    }

    /// Whether this replica knows a live leader: it leads, or it heard
    /// from its leader within an election timeout.
    fn leader_is_live(&self) -> bool {
        match self.state {
            State::Leader(_) => true,
            State::Candidate(_) => false,
            State::Follower => {
                self.leader.is_some() && self.election_elapsed < self.config.election_ticks
            }
        }
    }

    fn on_prepare(&mut self, from: NodeId, ballot: Ballot, first_slot: Slot) {
        if from != self.config.id
            && ballot > self.promised
            && Some(from) != self.leader
            && self.leader_is_live()
        {
            // Leader stickiness: while a live leader is known, a candidate
            // that merely missed its heartbeats (a restarted or partitioned
            // member, or one removed that has not heard so) is not promised
            // anything, so it cannot depose a working leader. Not promising
            // is always safe. Otherwise any candidate is answered, whatever
            // configuration this replica knows: promising is safe too, and
            // this replica may be the one behind (a voter added by a change
            // it has not learned needs its promise to lead).
            return;
        }
        if ballot < self.promised {
            self.nack(from, ballot);
            return;
        }
        if ballot > self.promised {
            self.promised = ballot;
            self.persist(Record::Promise(ballot));
        }
        self.observe(ballot);
        if from != self.config.id {
            // Give the candidate time to finish before standing ourselves.
            self.reset_election_timer();
        }
        let from_slot = first_slot.max(self.snapshot_slot + 1);
        let accepted = self
            .accepted
            .range(from_slot..)
            .map(|(slot, (b, v))| AcceptedEntry {
                slot: *slot,
                ballot: *b,
                value: v.clone(),
            })
            .collect();
        let snapshot_slot = self.snapshot_slot;
        self.send(
            from,
            Message::Promise {
                ballot,
                accepted,
                snapshot_slot,
            },
        );
    }

    fn on_accept(&mut self, from: NodeId, ballot: Ballot, slot: Slot, value: Value) {
        if ballot < self.promised {
            self.nack(from, ballot);
            return;
        }
        if slot <= self.snapshot_slot {
            // Chosen, applied and trimmed here. A ballot at or above our
            // promise either comes from a leader whose phase 1 covered this
            // slot (so it carries the chosen value) or from one that would
            // have had our vote anyway; acknowledging keeps such a leader
            // live. Nothing changes here, so nothing needs persisting.
            self.send(from, Message::Accepted { ballot, slot });
            return;
        }
        self.promised = ballot;
        self.observe(ballot);
        if from != self.config.id {
            self.leader = Some(from);
            self.reset_election_timer();
        }
        let duplicate = self
            .accepted
            .get(&slot)
            .is_some_and(|(b, v)| *b == ballot && *v == value);
        if !duplicate {
            assert!(
                self.accepted.get(&slot).is_none_or(|(b, _)| *b <= ballot),
                "an acceptance is only ever replaced by a higher ballot"
            );
            self.accepted.insert(slot, (ballot, value.clone()));
            self.persist(Record::Accept {
                slot,
                ballot,
                value,
            });
        }
        self.send(from, Message::Accepted { ballot, slot });
    }

    fn on_heartbeat(&mut self, from: NodeId, ballot: Ballot, commit_index: Slot, round: u64) {
        if ballot < self.promised {
            self.nack(from, ballot);
            if commit_index > self.commit_index && !self.is_leader() {
                // A leader that knows more decisions than we do: our Nack
                // tells it to outbid our promise; meanwhile we stop
                // standing (a lagging candidate that cannot win would
                // otherwise outbid it again and again) and catch up.
                self.step_down(Some(from));
                self.reset_election_timer();
                self.catch_up_from(from);
            }
            return;
        }
        self.observe(ballot);
        self.leader = Some(from);
        self.leader_commit = self.leader_commit.max(commit_index);
        self.backoff_attempt = 0;
        self.reset_election_timer();
        let own_commit = self.commit_index;
        self.send(
            from,
            Message::HeartbeatAck {
                ballot,
                round,
                commit_index: own_commit,
            },
        );
        if commit_index > self.commit_index {
            self.catch_up_from(from);
        }
    }

    /// Asks `from` for the decisions after our commit index, at most once
    /// a tick.
    fn catch_up_from(&mut self, from: NodeId) {
        if self.catchup_tick != Some(self.now_tick) {
            self.catchup_tick = Some(self.now_tick);
            self.send(
                from,
                Message::CatchUp {
                    from: self.commit_index + 1,
                },
            );
        }
    }

    // ----- learner -----

    fn learn(&mut self, slot: Slot, value: Value) {
        if slot <= self.commit_index && self.config.bug != Some(Bug::ApplyOutOfOrder) {
            assert!(
                self.chosen.get(&slot).is_none_or(|v| *v == value),
                "slot {slot} chosen twice with different values"
            );
            return;
        }
        if let Some(known) = self.chosen.get(&slot) {
            assert!(
                *known == value,
                "slot {slot} chosen twice with different values"
            );
            return;
        }
        // A follower told the value of a slot it already accepted keeps one
        // copy of it, not two, until the log is trimmed.
        let value = match self.accepted.get(&slot) {
            Some((_, accepted)) if *accepted == value => accepted.clone(),
            _ => value,
        };
        // A decision this leader did not make (another value where it
        // proposed one, a slot it never opened) proves a leader of another
        // ballot: it steps down rather than go on beside it.
        let overtaken = match &self.state {
            State::Leader(leader) => match leader.inflight.get(&slot) {
                Some(proposal) => proposal.value != value,
                None => slot >= leader.next_slot || leader.deferred.contains_key(&slot),
            },
            _ => false,
        };
        if let Some(next) = value.membership() {
            let me = self.config.id;
            if next.is_voter(me) && !self.membership().is_voter(me) {
                // Just made a voter: hear from the leader before standing.
                self.reset_election_timer();
            }
            self.memberships.insert(slot + 1, next.clone());
        }
        self.chosen.insert(slot, value.clone());
        self.persist(Record::Commit { slot, value });
        let mut released = BTreeMap::new();
        let mut restand = false;
        if let State::Leader(leader) = &mut self.state {
            leader.inflight.remove(&slot);
            if leader.change.as_ref().is_some_and(|c| c.slot == slot) {
                // Decided (ours or, if we lost the slot, another's): the
                // slots after it have a known configuration now.
                restand = leader.change.take().is_some_and(|c| !c.prepared);
                released = std::mem::take(&mut leader.deferred);
            }
        }
        self.advance();
        if overtaken {
            self.step_down(None);
        } else if restand && self.membership_at(slot + 1).is_voter(self.config.id) {
            // Our own change: the voters it brings in have not promised our
            // ballot, and a leader of a lower one may still believe it
            // leads. Stand again before opening a slot they decide.
            self.restand();
            return;
        }
        for (slot, value) in released {
            self.propose_slot(slot, value);
        }
        self.fill_slots();
        self.leave_if_removed();
    }

    /// A leader stands again with a fresh ballot, keeping its queue for
    /// the next leadership.
    fn restand(&mut self) {
        let carried = match &mut self.state {
            State::Leader(leader) => std::mem::take(&mut leader.queue),
            _ => return,
        };
        self.stand();
        if let State::Candidate(candidate) = &mut self.state {
            candidate.carried = carried;
        }
    }

    /// A leader that is no voter of the configuration it now leads (it
    /// removed itself) steps down once its change is decided, so that the
    /// remaining voters elect one of their own.
    fn leave_if_removed(&mut self) {
        let State::Leader(leader) = &self.state else {
            return;
        };
        if leader.change.is_none()
            && !self
                .membership_at(leader.next_slot)
                .is_voter(self.config.id)
        {
            self.step_down(None);
        }
    }

    /// Moves the commit index over every contiguous decision and applies
    /// them in order.
    fn advance(&mut self) {
        let out_of_order = self.config.bug == Some(Bug::ApplyOutOfOrder);
        if out_of_order {
            // Broken on purpose: apply whatever is known, as it is learned.
            let fresh: Vec<(Slot, Value)> = self
                .chosen
                .iter()
                .filter(|(s, _)| !self.applied_out_of_order.contains(s))
                .map(|(s, v)| (*s, v.clone()))
                .collect();
            for (slot, value) in fresh {
                self.applied_out_of_order.insert(slot);
                self.outputs.push(Output::Apply { slot, value });
            }
        }
        while let Some(value) = self.chosen.get(&(self.commit_index + 1)) {
            self.commit_index += 1;
            if !out_of_order {
                assert_eq!(self.applied + 1, self.commit_index, "slots apply in order");
                self.outputs.push(Output::Apply {
                    slot: self.commit_index,
                    value: value.clone(),
                });
            }
            self.applied = self.commit_index;
        }
        self.serve_reads();
    }

    fn on_catch_up(&mut self, from: NodeId, first: Slot) {
        if first <= self.snapshot_slot {
            // Those decisions live only in the snapshot now; send it, but not
            // more often than once an election timeout per peer.
            let due = self
                .snapshot_sent_tick
                .get(&from)
                .is_none_or(|t| *t + u64::from(self.config.election_ticks) <= self.now_tick);
            if due {
                self.snapshot_sent_tick.insert(from, self.now_tick);
                self.outputs.push(Output::SendSnapshot { to: from });
            }
            return;
        }
        let last = self
            .commit_index
            .min(first.saturating_add(self.config.catchup_slots_max - 1));
        for slot in first..=last {
            if let Some(value) = self.chosen.get(&slot).cloned() {
                self.send(from, Message::Commit { slot, value });
            }
        }
    }

    // ----- proposer: phase 1 -----

    /// Stands for election: a fresh ballot above all seen, promised to
    /// ourselves and persisted before any `Prepare` leaves.
    fn stand(&mut self) {
        self.step_down(None);
        let ballot = Ballot::next_above(self.max_seen.max(self.promised), self.config.id);
        self.promised = ballot;
        self.max_seen = ballot;
        self.persist(Record::Promise(ballot));
        let first_slot = self.commit_index + 1;
        let asked = if self.config.bug == Some(Bug::SkipOldConfigPhase1) {
            self.newest_membership_heard(first_slot).voters.clone()
        } else {
            self.membership_at(first_slot).voters.clone()
        };
        self.state = State::Candidate(Candidate {
            ballot,
            first_slot,
            promises: BTreeMap::new(),
            asked: asked.clone(),
            carried: VecDeque::new(),
        });
        self.leader = None;
        self.election_elapsed = 0;
        self.election_timeout = 0;
        self.send_all(asked, Message::Prepare { ballot, first_slot });
    }

    /// The newest configuration this replica has heard of from `first_slot`
    /// on, decided or only accepted: what the broken variant
    /// `skip-old-config-phase1` completes phase 1 against.
    fn newest_membership_heard(&self, first_slot: Slot) -> &Membership {
        let accepted = self
            .accepted
            .range(first_slot..)
            .filter_map(|(slot, (_, value))| value.membership().map(|m| (*slot, m)));
        let known = self
            .memberships
            .iter()
            .filter(|(key, _)| **key > first_slot)
            .map(|(key, m)| (key - 1, m));
        accepted
            .chain(known)
            .max_by_key(|(slot, _)| *slot)
            .map_or_else(|| self.membership_at(first_slot), |(_, m)| m)
    }

    /// Phase 1's walk (rule 3 of [`super::membership`]): over every slot
    /// from the first unknown one on, in order, the value to adopt (the
    /// highest-ballot one the voters of that slot's configuration
    /// reported, or the decision if known), checking that a quorum of each
    /// configuration in force on the way has promised. `Err` names a
    /// configuration short of a quorum.
    fn recover(&self, candidate: &Candidate) -> Result<BTreeMap<Slot, Value>, Membership> {
        let skip_old = self.config.bug == Some(Bug::SkipOldConfigPhase1);
        let promised = || candidate.promises.keys();
        let mut membership = self.membership_at(candidate.first_slot);
        if skip_old {
            membership = self.newest_membership_heard(candidate.first_slot);
        } else if !membership.is_quorum(promised()) {
            return Err(membership.clone());
        }
        let mut reported: BTreeMap<Slot, Vec<(NodeId, &AcceptedEntry)>> = BTreeMap::new();
        for (from, entries) in &candidate.promises {
            for entry in entries {
                if entry.slot >= candidate.first_slot {
                    reported.entry(entry.slot).or_default().push((*from, entry));
                }
            }
        }
        let mut slots: BTreeSet<Slot> = reported.keys().copied().collect();
        slots.extend(self.chosen.range(candidate.first_slot..).map(|(s, _)| *s));
        let mut adopted = BTreeMap::new();
        for slot in slots {
            let value = match self.chosen.get(&slot) {
                Some(value) => value,
                None => {
                    let best = reported
                        .get(&slot)
                        .into_iter()
                        .flatten()
                        .filter(|(from, _)| skip_old || membership.is_voter(*from))
                        .max_by_key(|(_, entry)| entry.ballot);
                    let Some((_, entry)) = best else {
                        continue;
                    };
                    &entry.value
                }
            };
            adopted.insert(slot, value.clone());
            if let Some(next) = value.membership() {
                if skip_old {
                    continue;
                }
                membership = next;
                if !membership.is_quorum(promised()) {
                    return Err(membership.clone());
                }
            }
        }
        if skip_old && !membership.is_quorum(promised()) {
            return Err(membership.clone());
        }
        Ok(adopted)
    }

    fn on_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        accepted: Vec<AcceptedEntry>,
        snapshot_slot: Slot,
    ) {
        let State::Candidate(candidate) = &mut self.state else {
            return;
        };
        if candidate.ballot != ballot {
            return;
        }
        if snapshot_slot >= candidate.first_slot {
            // The promiser trimmed slots we do not know are chosen: we are too
            // far behind to lead. Fetch its snapshot and let it stand.
            self.backoff_attempt = self.backoff_attempt.saturating_add(1);
            self.step_down(None);
            let first = self.commit_index + 1;
            self.send(from, Message::CatchUp { from: first });
            return;
        }
        candidate.promises.insert(from, accepted);
        let State::Candidate(candidate) = &self.state else {
            return;
        };
        match self.recover(candidate) {
            Ok(adopted) => self.become_leader(adopted),
            Err(short) => {
                // A change it adopts brings in voters not asked yet.
                let State::Candidate(candidate) = &mut self.state else {
                    return;
                };
                let fresh: Vec<NodeId> =
                    short.voters.difference(&candidate.asked).copied().collect();
                candidate.asked.extend(fresh.iter().copied());
                let prepare = Message::Prepare {
                    ballot: candidate.ballot,
                    first_slot: candidate.first_slot,
                };
                self.send_all(fresh, prepare);
            }
        }
    }

    fn on_nack(&mut self, ballot: Ballot, higher: Ballot) {
        if higher > self.max_seen {
            self.max_seen = higher;
        }
        if self.ballot() == Some(ballot) && higher > ballot {
            if self.role() == Role::Candidate {
                self.backoff_attempt = self.backoff_attempt.saturating_add(1);
            }
            self.step_down(Some(higher.node));
        }
    }

    /// Phase 1 won: adopt, for every slot from the first unchosen one on, the
    /// value with the highest ballot any promise reported, fill holes with
    /// no-ops, and propose them all with our ballot.
    fn become_leader(&mut self, mut best: BTreeMap<Slot, Value>) {
        let State::Candidate(candidate) = std::mem::replace(&mut self.state, State::Follower)
        else {
            return;
        };
        let ballot = candidate.ballot;
        let last_reported = best.keys().next_back().copied().unwrap_or(0);
        let last_known = self.chosen.keys().next_back().copied().unwrap_or(0);
        let recovered_upto = last_reported.max(last_known).max(candidate.first_slot - 1);
        let mut leader = Leader {
            ballot,
            next_slot: recovered_upto + 1,
            inflight: BTreeMap::new(),
            queue: VecDeque::new(),
            recovered_upto,
            heartbeat_elapsed: 0,
            started_round: 0,
            confirmed_round: 0,
            round_wanted: false,
            acked_round: BTreeMap::new(),
            acked_tick: BTreeMap::new(),
            fastest: Vec::new(),
            fastest_tick: 0,
            reads: Vec::new(),
            change: None,
            deferred: BTreeMap::new(),
            peer_commit: BTreeMap::new(),
        };
        leader.queue = candidate.carried;
        for member in self.audience() {
            leader.acked_tick.insert(member, self.now_tick);
        }
        self.state = State::Leader(Box::new(leader));
        self.leader = Some(self.config.id);
        self.backoff_attempt = 0;
        self.outputs.push(Output::Elected { ballot });
        let skip_adoption = self.config.bug == Some(Bug::SkipAdoption);
        for slot in candidate.first_slot..=recovered_upto {
            if self.chosen.contains_key(&slot) {
                continue;
            }
            let value = match best.remove(&slot) {
                Some(value) if !skip_adoption => value,
                _ => Value::Noop,
            };
            self.propose_slot(slot, value);
        }
        if let State::Leader(leader) = &mut self.state
            && let Some(change) = &mut leader.change
        {
            // Adopted by the walk, which had a quorum of its voters promise.
            change.prepared = true;
        }
        self.start_read_round();
        self.fill_slots();
    }

    // ----- proposer: phase 2 -----

    fn propose_slot(&mut self, slot: Slot, value: Value) {
        let at_decide = self.config.bug == Some(Bug::ConfigAppliesAtDecide);
        let now = self.now_tick;
        let State::Leader(leader) = &mut self.state else {
            return;
        };
        if let Some(change) = &leader.change
            && slot > change.slot
            && !at_decide
        {
            // Its configuration is not known until the change is decided.
            leader.deferred.insert(slot, value);
            return;
        }
        if let Some(next) = value.membership() {
            debug_assert!(
                leader.change.is_none() || at_decide,
                "one configuration change in flight at a time"
            );
            leader.change = Some(PendingChange {
                slot,
                membership: next.clone(),
                prepared: false,
            });
            for member in next.all() {
                leader.acked_tick.entry(member).or_insert(now);
            }
        }
        let ballot = leader.ballot;
        let lone = matches!(&value, Value::Batch(commands) if commands.len() == 1);
        let thrifty = if lone { self.thrifty_peers() } else { None };
        let State::Leader(leader) = &mut self.state else {
            return;
        };
        leader.inflight.insert(
            slot,
            Proposal {
                value: value.clone(),
                votes: BTreeSet::new(),
                sent_tick: self.now_tick,
                thrifty: thrifty.is_some(),
            },
        );
        let accept = Message::Accept {
            ballot,
            slot,
            value,
        };
        match thrifty {
            Some(peers) => {
                for to in peers {
                    self.send(to, accept.clone());
                }
                // Last, as in a broadcast: its own acceptance after the sends.
                self.send(self.config.id, accept);
            }
            None => {
                let to = self.acceptors(slot);
                self.send_all(to, accept);
            }
        }
    }

    /// The peers that, with this leader, make a quorum to send a lone
    /// command's `Accept` to; `None` means every member. Only when nothing
    /// is in flight (a busy leader wants the first answers of all), only
    /// while the last slot sent to all is less than a heartbeat interval
    /// old, and only peers heard from within two heartbeats (a peer gone
    /// quiet would hold the slot until the retransmit).
    fn thrifty_peers(&self) -> Option<Vec<NodeId>> {
        let State::Leader(leader) = &self.state else {
            return None;
        };
        let fresh = leader.fastest_tick + u64::from(self.config.heartbeat_ticks) > self.now_tick;
        if !self.config.thrifty || !leader.inflight.is_empty() || !fresh {
            return None;
        }
        let membership = self.membership_at(leader.next_slot);
        if !membership.is_voter(self.config.id) || self.config.bug.is_some() {
            return None;
        }
        let need = membership.quorum() - 1;
        let horizon = self
            .now_tick
            .saturating_sub(u64::from(self.config.heartbeat_ticks) * 2);
        let peers: Vec<NodeId> = leader
            .fastest
            .iter()
            .filter(|p| membership.is_voter(**p))
            .take(need)
            .copied()
            .collect();
        let live = peers.iter().all(|p| {
            leader
                .acked_tick
                .get(p)
                .is_some_and(|tick| *tick >= horizon)
        });
        (peers.len() == need && live).then_some(peers)
    }

    /// Moves queued commands into new slots, batching, while the pipeline
    /// has room.
    fn fill_slots(&mut self) {
        loop {
            let State::Leader(leader) = &mut self.state else {
                return;
            };
            if leader.queue.is_empty()
                || leader.inflight.len() >= self.config.inflight_slots_max
                || (leader.change.is_some() && self.config.bug != Some(Bug::ConfigAppliesAtDecide))
            {
                return;
            }
            let n = leader.queue.len().min(self.config.batch_commands_max);
            let batch: Vec<Command> = leader.queue.drain(..n).collect();
            let slot = leader.next_slot;
            leader.next_slot += 1;
            self.propose_slot(slot, Value::Batch(batch.into()));
        }
    }

    fn on_accepted(&mut self, from: NodeId, ballot: Ballot, slot: Slot) {
        if !self.counts_vote(slot, from) {
            return;
        }
        let membership = membership_in(&self.memberships, slot);
        let quorum = membership.quorum();
        let State::Leader(leader) = &mut self.state else {
            return;
        };
        if leader.ballot != ballot {
            return;
        }
        let Some(proposal) = leader.inflight.get_mut(&slot) else {
            return;
        };
        proposal.votes.insert(from);
        if proposal.votes.len() < quorum {
            return;
        }
        let Some(proposal) = leader.inflight.remove(&slot) else {
            return;
        };
        let me = self.config.id;
        if !proposal.thrifty {
            // The first to answer: the next idle slots' quorum.
            leader.fastest.clear();
            leader.fastest.extend(
                proposal
                    .votes
                    .iter()
                    .filter(|v| **v != me && membership.is_voter(**v))
                    .take(quorum - 1),
            );
            leader.fastest_tick = self.now_tick;
        }
        // Everyone of the slot's configuration and of the one after it (a
        // change's decision reaches the members it removes and adds).
        let mut to: Vec<NodeId> = membership.all().collect();
        if proposal.value.membership().is_some() {
            to.extend(membership_in(&self.memberships, slot + 1).all());
            if let Some(next) = proposal.value.membership() {
                to.extend(next.all());
            }
            to.sort_unstable();
            to.dedup();
        }
        for to in to {
            if to == me {
                continue;
            }
            // Those that voted hold the value: the decision alone will do.
            let message = if proposal.votes.contains(&to) {
                Message::Chosen { ballot, slot }
            } else {
                Message::Commit {
                    slot,
                    value: proposal.value.clone(),
                }
            };
            self.outputs.push(Output::Announce(Envelope {
                from: me,
                to,
                message,
            }));
        }
        self.learn(slot, proposal.value);
    }

    /// The value this acceptor accepted for `slot` at `ballot` is chosen.
    /// Without that acceptance (it was replaced, trimmed or never arrived)
    /// there is nothing to learn here: the heartbeat's commit index will
    /// bring the decision through catch-up.
    fn on_chosen(&mut self, ballot: Ballot, slot: Slot) {
        let value = match self.accepted.get(&slot) {
            Some((accepted, value)) if *accepted == ballot => value.clone(),
            _ => return,
        };
        self.learn(slot, value);
    }

    /// Resends `Accept` for slots that have waited too long, to the members
    /// that have not answered.
    fn retransmit(&mut self) {
        const RETRANSMIT_SLOTS_MAX: usize = 256;
        let learner_votes = self.config.bug == Some(Bug::LearnerVotes);
        let State::Leader(leader) = &mut self.state else {
            return;
        };
        let due = self
            .now_tick
            .saturating_sub(u64::from(self.config.heartbeat_ticks) * 2);
        let ballot = leader.ballot;
        let mut resend = Vec::new();
        for (slot, proposal) in leader.inflight.iter_mut() {
            if resend.len() >= RETRANSMIT_SLOTS_MAX {
                break;
            }
            if proposal.sent_tick <= due {
                proposal.sent_tick = self.now_tick;
                // To every member that has not answered: no longer thrifty.
                proposal.thrifty = false;
                let membership = membership_in(&self.memberships, *slot);
                for member in acceptors_of(membership, learner_votes) {
                    if member != self.config.id && !proposal.votes.contains(&member) {
                        resend.push((member, *slot, proposal.value.clone()));
                    }
                }
            }
        }
        if !resend.is_empty() {
            // Someone did not answer in time: all members get the next
            // slots until a quorum answers again.
            leader.fastest.clear();
        }
        for (to, slot, value) in resend {
            self.send(
                to,
                Message::Accept {
                    ballot,
                    slot,
                    value,
                },
            );
        }
    }

    /// A leader that has not heard from a quorum for an election timeout
    /// steps down, so that clients stop waiting on it.
    fn check_quorum(&mut self) {
        let State::Leader(leader) = &mut self.state else {
            return;
        };
        let horizon = self
            .now_tick
            .saturating_sub(u64::from(self.config.election_ticks) * 2);
        let me = self.config.id;
        let live: Vec<NodeId> = leader
            .acked_tick
            .iter()
            .filter(|(id, tick)| **id == me || **tick >= horizon)
            .map(|(id, _)| *id)
            .collect();
        let cut_off = self
            .leading_memberships()
            .iter()
            .any(|m| !m.is_quorum(&live));
        if cut_off {
            self.step_down(None);
        }
    }

    // ----- reads -----

    fn start_read_round(&mut self) {
        let me = self.config.id;
        let commit_index = self.commit_index;
        let audience = self.audience();
        let State::Leader(leader) = &mut self.state else {
            return;
        };
        leader.heartbeat_elapsed = 0;
        leader.started_round += 1;
        leader.round_wanted = false;
        let round = leader.started_round;
        let ballot = leader.ballot;
        leader.acked_round.insert(me, round);
        leader.acked_tick.insert(me, self.now_tick);
        for to in audience {
            if to != me {
                self.send(
                    to,
                    Message::Heartbeat {
                        ballot,
                        commit_index,
                        round,
                    },
                );
            }
        }
        self.confirm_rounds();
    }

    fn on_heartbeat_ack(&mut self, from: NodeId, ballot: Ballot, round: u64, commit_index: Slot) {
        let now = self.now_tick;
        let State::Leader(leader) = &mut self.state else {
            return;
        };
        if leader.ballot != ballot || round > leader.started_round {
            return;
        }
        leader.peer_commit.insert(from, commit_index);
        let acked = leader.acked_round.entry(from).or_insert(0);
        *acked = (*acked).max(round);
        leader.acked_tick.insert(from, now);
        self.confirm_rounds();
        // A follower acking at our ballot has promised nothing higher.
    }

    /// The highest round a quorum acknowledged is confirmed; reads waiting
    /// on it may go once applied far enough.
    fn confirm_rounds(&mut self) {
        let State::Leader(leader) = &self.state else {
            return;
        };
        // The highest round a quorum of every configuration it leads
        // acknowledged.
        let confirmed = self
            .leading_memberships()
            .into_iter()
            .map(|membership| {
                let mut rounds: Vec<u64> = leader
                    .acked_round
                    .iter()
                    .filter(|(id, _)| membership.is_voter(**id))
                    .map(|(_, round)| *round)
                    .collect();
                rounds.sort_unstable_by(|a, b| b.cmp(a));
                rounds.get(membership.quorum() - 1).copied().unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        let State::Leader(leader) = &mut self.state else {
            return;
        };
        if confirmed > leader.confirmed_round {
            leader.confirmed_round = confirmed;
        }
        let restart = leader.round_wanted && leader.confirmed_round == leader.started_round;
        self.serve_reads();
        if restart {
            self.start_read_round();
        }
    }

    fn serve_reads(&mut self) {
        let applied = self.applied;
        let State::Leader(leader) = &mut self.state else {
            return;
        };
        let confirmed = leader.confirmed_round;
        let mut ready = Vec::new();
        leader.reads.retain(|read| {
            let go = read.round <= confirmed && read.read_index <= applied;
            if go {
                ready.push((read.id, read.read_index));
            }
            !go
        });
        for (read, index) in ready {
            self.outputs.push(Output::ReadReady { read, index });
        }
    }
}

/// Whose votes a slot of `membership` is asked for: its voters (and, in
/// the broken variant `learner-votes`, its learners).
fn acceptors_of(membership: &Membership, learner_votes: bool) -> impl Iterator<Item = NodeId> + '_ {
    let learners = membership.learners.iter().filter(move |_| learner_votes);
    membership.voters.iter().chain(learners).copied()
}

/// The configuration in force for `slot` in a map keyed by first slot; a
/// free function so that callers may hold it beside a leader's state.
fn membership_in(memberships: &BTreeMap<Slot, Membership>, slot: Slot) -> &Membership {
    memberships
        .range(..=slot)
        .next_back()
        .map(|(_, membership)| membership)
        .expect("a configuration is in force from key 0 on")
}
