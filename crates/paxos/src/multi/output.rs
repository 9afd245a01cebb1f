//! What the core asks its runtime to do, and how a proposal is refused.

use std::fmt;

use super::durable::Record;
use super::message::{Command, Envelope, Slot, Value};
use crate::ballot::{Ballot, NodeId};

/// Identifies a read-index read, chosen by the caller.
pub type ReadId = u64;

/// One thing for the runtime to do.
///
/// Outputs are executed in the order given, and a `Persist` is a barrier:
/// nothing after it may take effect outside the node (a send, an apply, a
/// reply) until the record is durable. Records before a barrier may be made
/// durable together, with one fsync (group commit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Make this record durable.
    Persist(Record),
    /// Send this message to a peer.
    Send(Envelope),
    /// Tell a peer that a slot is decided (`Chosen`, or `Commit` with the
    /// value for one that did not vote). Nothing in the protocol waits for
    /// it, since the leader has learned the value itself, so the runtime
    /// may hold it back for a while (it must still send it, for peers
    /// apply only what they learn) and let the leader's answers to its
    /// clients leave first. A peer that handed the leader a client's
    /// command does wait for it to answer that client; only the runtime
    /// knows of those.
    Announce(Envelope),
    /// `value` is chosen for `slot`: apply it to the state machine. Applies
    /// come strictly in slot order.
    Apply {
        /// The slot, one above the previous apply.
        slot: Slot,
        /// The chosen value.
        value: Value,
    },
    /// The read may now be served from the state machine as applied so far:
    /// a quorum confirmed no higher ballot exists and everything committed
    /// before the read arrived has been applied.
    ReadReady {
        /// The read.
        read: ReadId,
        /// Its read index: the commit index when the read arrived. The
        /// state machine must have applied at least this far to serve it.
        index: Slot,
    },
    /// The read cannot be served here any more: leadership was lost.
    ReadAborted {
        /// The read.
        read: ReadId,
        /// Who may lead now, if known.
        leader: Option<NodeId>,
    },
    /// A queued command was dropped before it got a slot: leadership was
    /// lost. It was never proposed, so it is safe to send elsewhere.
    Rejected {
        /// The command, handed back.
        command: Command,
        /// Who may lead now, if known.
        leader: Option<NodeId>,
    },
    /// Send `to` the latest durable snapshot of the state machine: it asked
    /// for slots this replica has already trimmed. When installed there,
    /// the receiver's runtime calls `Replica::install_snapshot`.
    SendSnapshot {
        /// The replica that is behind.
        to: NodeId,
    },
    /// This replica became leader with `ballot`.
    Elected {
        /// The ballot it leads with.
        ballot: Ballot,
    },
    /// This replica stopped leading or standing for election.
    SteppedDown {
        /// The ballot it gave up.
        ballot: Ballot,
    },
}

/// Why a proposal or read was not taken. The command is handed back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader proposes; `leader` is the best guess of who leads.
    NotLeader {
        /// The command, handed back (`None` for reads).
        command: Option<Command>,
        /// Who may lead, if known.
        leader: Option<NodeId>,
    },
    /// The leader's queue (of commands or of reads) is full; try again later.
    Busy {
        /// The command, handed back (`None` for reads).
        command: Option<Command>,
    },
    /// A configuration change is already in flight (one at a time), or the
    /// one asked for has no voter.
    Reconfiguring {
        /// The change's command, handed back.
        command: Option<Command>,
    },
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader {
                leader: Some(id), ..
            } => write!(f, "not the leader (try node {id})"),
            ProposeError::NotLeader { leader: None, .. } => write!(f, "no leader"),
            ProposeError::Busy { .. } => write!(f, "too many requests queued"),
            ProposeError::Reconfiguring { .. } => {
                write!(f, "a configuration change is in progress")
            }
        }
    }
}

impl std::error::Error for ProposeError {}
