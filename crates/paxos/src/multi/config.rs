//! How a replica is set up: membership, timeouts in ticks, and limits.

use super::membership::Membership;
use crate::ballot::NodeId;

/// A replica's configuration. Times are in ticks, whose length the caller
/// decides; every bound is named with its unit.
#[derive(Clone, Debug)]
pub struct Config {
    /// This replica's id.
    pub id: NodeId,
    /// The voters the cluster was first started with. The configuration
    /// in force later comes from the log and the snapshot, not from here.
    /// Empty for a member joining an existing cluster: its configuration
    /// is unknown until it learns one.
    pub members: Vec<NodeId>,
    /// The learners it was first started with (a member that joins an
    /// existing cluster is told the configuration it joins).
    pub learners: Vec<NodeId>,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: u32,
    /// Ticks without hearing a leader before a follower stands; the actual
    /// timeout is drawn from `[election_ticks, 2 * election_ticks)`.
    pub election_ticks: u32,
    /// Cap on the exponent of randomized exponential backoff after failed
    /// elections.
    pub backoff_exponent_max: u32,
    /// Client commands per slot at most.
    pub batch_commands_max: usize,
    /// Slots in flight (proposed, not yet chosen) at most.
    pub inflight_slots_max: usize,
    /// Commands waiting for a slot, and reads waiting for their round, at
    /// most; beyond it proposals and reads are refused as busy.
    pub queue_commands_max: usize,
    /// Decisions sent per catch-up request at most.
    pub catchup_slots_max: u64,
    /// How far past its commit index a replica accepts a slot: farther
    /// slots are refused as out of range.
    pub slot_window_max: u64,
    /// An idle leader (nothing in flight, one command to propose) sends the
    /// slot's `Accept` to a bare quorum (itself and the peers that answered
    /// first last time) instead of to every member (thrifty Paxos): at one
    /// client the third member's fsync and answer only compete for the
    /// disk and the cores with the two that matter. The others learn the
    /// slot from its `Commit`. A busy leader, whose batches gain from the
    /// first answers of all, or one whose fast peers went quiet, sends to
    /// all.
    pub thrifty: bool,
    /// A deliberately broken variant, for proving the checkers can fail.
    pub bug: Option<Bug>,
}

impl Config {
    /// A configuration with the defaults synod uses.
    pub fn new(id: NodeId, members: Vec<NodeId>) -> Self {
        Config {
            id,
            members,
            learners: Vec::new(),
            heartbeat_ticks: 2,
            election_ticks: 10,
            backoff_exponent_max: 4,
            batch_commands_max: 64,
            inflight_slots_max: 64,
            queue_commands_max: 4096,
            catchup_slots_max: 64,
            slot_window_max: 1 << 20,
            thrifty: true,
            bug: None,
        }
    }

    /// The configuration the cluster was first started with.
    pub fn initial_membership(&self) -> Membership {
        Membership {
            voters: self.members.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
        }
    }
}

/// Deliberately broken protocol variants. Never enable outside tests: each
/// exists so that a test can show the simulator catching it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bug {
    /// The acceptor forgets its promise (and the ballots it used) on restart.
    ForgetPromise,
    /// A new leader fills recovered slots with no-ops instead of adopting
    /// the highest-ballot value its promises reported.
    SkipAdoption,
    /// A replica applies each decision as it learns it, not in slot order.
    ApplyOutOfOrder,
    /// (In the member.) A leader answers a linearizable read from its own
    /// store at once, without confirming that no higher ballot exists: a
    /// deposed leader serves stale reads.
    LeaderLocalRead,
    /// (In the member.) A follower serves a read once the core has handed
    /// out the read index's slot, before its store applied it.
    FollowerReadAtCoreApplied,
    /// (In the member.) A command re-forwarded after a leader change goes
    /// under a fresh session, so the store may apply it twice.
    ReforwardTwice,
    /// (In the member.) The watchers miss the events of the last command
    /// of a slot that carries several.
    WatchDropsBatchTail,
    /// (In the member.) A follower decides lease expiry by its own view:
    /// when its clock says a lease is due, it has the lease revoked, though
    /// keep-alives it has not applied yet (or a leader's clock) say
    /// otherwise.
    LeaseExpiryByFollowerClock,
    /// A leader does not wait for a configuration change to be decided
    /// before opening the slots after it, and counts each slot's votes by
    /// the configuration it knows when they arrive: slots already in
    /// flight when a change is decided are judged by the new one.
    ConfigAppliesAtDecide,
    /// A learner's vote counts toward a slot's quorum.
    LearnerVotes,
    /// A candidate completes phase 1 with a quorum of the newest
    /// configuration it has heard of (its own accepted change included),
    /// without one of the configuration in force for the slots it recovers.
    SkipOldConfigPhase1,
}
