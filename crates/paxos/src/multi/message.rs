//! What replicas say to each other, named after the protocol's phases.

use super::membership::Membership;
use crate::ballot::{Ballot, NodeId};

/// A position in the replicated log; each slot is one single-decree instance.
/// Slots start at 1, so 0 means "nothing yet".
pub type Slot = u64;

/// Identifies a client session for exactly-once application.
pub type ClientId = u64;

/// One client command. `(client, seq)` makes retries recognisable: the state
/// machine applies each pair once and answers repeats from its reply cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Command {
    /// The client session that issued it.
    pub client: ClientId,
    /// The client's sequence number, raised by one per new command.
    pub seq: u64,
    /// The operation, opaque to the protocol.
    pub payload: Vec<u8>,
}

/// What a slot decides.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// Fills a hole found by a new leader; applies nothing.
    Noop,
    /// Client commands decided together (batching), applied in order.
    /// Shared: a value is held by the proposal, the acceptor, the learner
    /// and every message and record that carries it, and copying it for
    /// each would cost an allocation per command.
    Batch(std::sync::Arc<[Command]>),
    /// A configuration change (see [`super::membership`]): in force for
    /// every slot after the one that decides it. Its command is applied to
    /// the state machine like any other, which keeps the members' details
    /// (names, addresses) and answers the client that asked.
    Reconfigure(std::sync::Arc<Reconfiguration>),
}

impl Value {
    /// The configuration this value brings in, if it is a change.
    pub fn membership(&self) -> Option<&Membership> {
        match self {
            Value::Reconfigure(change) => Some(&change.membership),
            _ => None,
        }
    }

    /// The client commands it carries, in order.
    pub fn commands(&self) -> &[Command] {
        match self {
            Value::Noop => &[],
            Value::Batch(commands) => commands,
            Value::Reconfigure(change) => std::slice::from_ref(&change.command),
        }
    }
}

/// A configuration change as decided in a slot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reconfiguration {
    /// The configuration in force after the slot.
    pub membership: Membership,
    /// The state machine's side of the change.
    pub command: Command,
}

/// An acceptance an acceptor reports in its promise: the slot, the ballot it
/// was accepted at, and the value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedEntry {
    /// The slot.
    pub slot: Slot,
    /// The ballot of the acceptance.
    pub ballot: Ballot,
    /// The value accepted.
    pub value: Value,
}

/// A protocol message between replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Phase 1a, for every slot from `first_slot` on: "promise to ignore
    /// ballots below mine and tell me what you accepted".
    Prepare {
        /// The candidate's ballot.
        ballot: Ballot,
        /// The candidate's first slot not known to be chosen.
        first_slot: Slot,
    },
    /// Phase 1b: the promise, with every acceptance at or after `first_slot`.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// Acceptances at or after the prepare's `first_slot`, and after
        /// `snapshot_slot`.
        accepted: Vec<AcceptedEntry>,
        /// Slots up to here are chosen, applied and trimmed into a snapshot:
        /// a candidate behind it must fetch the snapshot, not lead.
        snapshot_slot: Slot,
    },
    /// Phase 2a: "accept this value for this slot at my ballot".
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
        /// The value proposed.
        value: Value,
    },
    /// Phase 2b: the acceptor accepted the leader's value for `slot`.
    Accepted {
        /// The ballot accepted.
        ballot: Ballot,
        /// The slot.
        slot: Slot,
    },
    /// A refusal: the acceptor promised `higher`, so `ballot` cannot win.
    /// Tells the proposer to stop early and outbid `higher` if it must.
    Nack {
        /// The refused ballot.
        ballot: Ballot,
        /// The ballot the acceptor has promised.
        higher: Ballot,
    },
    /// The decision for `slot` (Lamport's "Success" message).
    Commit {
        /// The slot decided.
        slot: Slot,
        /// The chosen value.
        value: Value,
    },
    /// The decision for `slot` without its value, sent to an acceptor that
    /// voted for it: "what you accepted at `ballot` is chosen". One ballot
    /// proposes one value per slot, so the acceptor's own copy is the
    /// chosen value; an acceptor without it ignores this and catches up.
    Chosen {
        /// The leader's ballot, at which the value was accepted.
        ballot: Ballot,
        /// The slot decided.
        slot: Slot,
    },
    /// The leader is alive; also the quorum round that confirms a read-index.
    Heartbeat {
        /// The leader's ballot.
        ballot: Ballot,
        /// Every slot up to here is chosen; a follower behind it catches up.
        commit_index: Slot,
        /// The read round this heartbeat opens.
        round: u64,
    },
    /// "I have promised nothing above your ballot" as of `round`.
    HeartbeatAck {
        /// The leader's ballot, echoed.
        ballot: Ballot,
        /// The round acknowledged.
        round: u64,
        /// The acknowledger's commit index: how far behind it is (a
        /// learner is promoted only once it has caught up).
        commit_index: Slot,
    },
    /// A lagging replica asks the leader for the decisions from `from` on.
    CatchUp {
        /// The first slot the asker lacks.
        from: Slot,
    },
}

impl Message {
    /// The ballot the message speaks for, if it carries one whose owner must
    /// be its sender (a proposer only ever uses its own ballots).
    pub fn proposer_ballot(&self) -> Option<Ballot> {
        match self {
            Message::Prepare { ballot, .. }
            | Message::Accept { ballot, .. }
            | Message::Chosen { ballot, .. }
            | Message::Heartbeat { ballot, .. } => Some(*ballot),
            _ => None,
        }
    }

    /// A short name for traces and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Prepare { .. } => "Prepare",
            Message::Promise { .. } => "Promise",
            Message::Accept { .. } => "Accept",
            Message::Accepted { .. } => "Accepted",
            Message::Nack { .. } => "Nack",
            Message::Commit { .. } => "Commit",
            Message::Chosen { .. } => "Chosen",
            Message::Heartbeat { .. } => "Heartbeat",
            Message::HeartbeatAck { .. } => "HeartbeatAck",
            Message::CatchUp { .. } => "CatchUp",
        }
    }
}

/// A message with its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The sender.
    pub from: NodeId,
    /// The recipient.
    pub to: NodeId,
    /// The message.
    pub message: Message,
}
