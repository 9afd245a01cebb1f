//! What a member asks its runtime to do: the one place where "persist
//! before you send what depends on it" is written down.
//!
//! A [`Ready`] is a sequence of [`Stage`]s, carried out strictly in order.
//! Within a stage the runtime
//!
//! 1. carries out `now` (messages, replies and watch events that depend on
//!    nothing unsynced: they may leave while the disk works),
//! 2. appends `records` to the log, and if `sync` is set makes them durable
//!    (one fsync for all of them: group commit), stopping the node if that
//!    fails (DESIGN.md rule 2),
//! 3. only then carries out `after`.
//!
//! Holding any effect back longer is always allowed (the network may delay
//! a message, a client may be slow); doing one early never is. Records
//! without a barrier among them (commit hints) are appended without a sync.

use kv::{Store, WatchResponse};
use paxos::NodeId;
use paxos::multi::{Compacted, Envelope, Record, Slot, Value};

use crate::peer::PeerMessage;
use crate::request::{MemberError, Reply};

/// One thing for the runtime to carry out, outside the member.
#[derive(Debug)]
pub enum Effect<T> {
    /// A Paxos message for a peer.
    Send(Envelope),
    /// A member-to-member message for a peer.
    Peer {
        /// The peer.
        to: NodeId,
        /// The message.
        message: PeerMessage,
    },
    /// The answer to a request, for the token it came with.
    Reply {
        /// The caller's token.
        token: T,
        /// The answer.
        result: Result<Reply, MemberError>,
    },
    /// A watch response for a watch session the runtime keeps.
    Watch {
        /// The session (see [`crate::Member::watch_create`]).
        session: u64,
        /// The response.
        response: WatchResponse,
    },
    /// The member applied `value` at `slot` (with
    /// [`crate::Config::observe`] only): for an observer such as the
    /// simulator's oracle, in its place among the other effects.
    Applied {
        /// The slot.
        slot: Slot,
        /// Its chosen value.
        value: Value,
    },
    /// Send `to` the latest durable snapshot whose slot is at least
    /// `min_slot` (an older one would only bring the peer back for a newer
    /// one), in chunks as [`PeerMessage::Chunk`]. No image that new yet on
    /// disk: send nothing; the core asks again.
    SendSnapshot {
        /// The member that is behind.
        to: NodeId,
        /// The oldest image worth sending.
        min_slot: Slot,
    },
}

/// Effects around one barrier: `now`, then the records (synced if `sync`),
/// then `after`.
#[derive(Debug)]
pub struct Stage<T> {
    /// May be carried out before the records are durable.
    pub now: Vec<Effect<T>>,
    /// To append to the log, in order.
    pub records: Vec<Record>,
    /// A promise or an acceptance is among `records`: fsync before `after`.
    pub sync: bool,
    /// Only once `records` are durable.
    pub after: Vec<Effect<T>>,
}

impl<T> Default for Stage<T> {
    fn default() -> Self {
        Stage {
            now: Vec::new(),
            records: Vec::new(),
            sync: false,
            after: Vec::new(),
        }
    }
}

impl<T> Stage<T> {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.now.is_empty() && self.records.is_empty() && self.after.is_empty()
    }
}

/// Work for the runtime: save the store's frozen image as the snapshot at
/// `slot`, then (once it is durable) trim the log before it. The member
/// has already dropped its in-memory log up to `slot`.
pub struct Checkpoint {
    /// Every slot up to this one is in the image.
    pub slot: Slot,
    /// The store as of `slot`, sharing value bytes with the live one.
    pub image: Store,
    /// The log entries the member dropped, to be freed off the hot thread.
    pub compacted: Compacted,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}

/// Everything a member asks of its runtime after a batch of inputs.
#[derive(Debug)]
pub struct Ready<T> {
    /// Carried out in order.
    pub stages: Vec<Stage<T>>,
    /// A snapshot to save, after the stages.
    pub checkpoint: Option<Checkpoint>,
}

impl<T> Ready<T> {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty() && self.checkpoint.is_none()
    }
}
