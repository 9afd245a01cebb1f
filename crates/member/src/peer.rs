//! What members say to each other beside the Paxos messages (Prepare,
//! Promise, Accept, ...): a follower hands a client command to the leader,
//! or asks it for a read index; snapshots stream to a lagging member in
//! chunks; members tell each other their client URLs.
//!
//! A forwarded command is answered by the follower itself: it waits until
//! it applies the command from the log, with the result every replica
//! computes. So the leader only ever answers "refused" or a read index.
//!
//! They travel in the same frames as the Paxos messages, encoded by one
//! codec: see [`crate::wire`].

use paxos::NodeId;
use storage::SnapshotChunk;

/// A request or answer between members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    /// "Propose this for me": the command as it goes into the log, minus
    /// the leader's time stamp, which the leader adds.
    Propose {
        /// The client session.
        client: u64,
        /// Its sequence number.
        seq: u64,
        /// The encoded `kv::Command`.
        command: Vec<u8>,
    },
    /// The leader could not take a forwarded command.
    Refused {
        /// The client session.
        client: u64,
        /// Its sequence number.
        seq: u64,
        /// Who leads now, if the refuser knows (0: nobody known).
        leader: NodeId,
    },
    /// "Confirm your leadership and tell me your applied index."
    ReadIndex {
        /// The asker's id for the read.
        id: u64,
    },
    /// The answer: serve the read once applied up to `index`; `index` 0
    /// means the leader could not confirm.
    ReadIndexReply {
        /// The asker's id for the read.
        id: u64,
        /// The leader's applied index after its quorum round.
        index: u64,
    },
    /// One chunk of a snapshot for a lagging member.
    Chunk(SnapshotChunk),
    /// "These are my client URLs", told to every peer now and then, so
    /// that `MemberList` shows every member's.
    Attributes {
        /// The sender's name (etcd's `--name`): a member added by
        /// `MemberAdd` shows it once started.
        name: String,
        /// The sender's advertised client URLs.
        client_urls: Vec<String>,
    },
    /// "Make this configuration change for me": only the leader checks a
    /// change against the table as applied and proposes it.
    ChangeMembers {
        /// The client session.
        client: u64,
        /// Its sequence number.
        seq: u64,
        /// The change.
        change: kv::MemberChange,
    },
    /// The leader refused a change (or is no leader): why, as a code of
    /// [`crate::MemberError`] (see [`crate::wire`]).
    ChangeRefused {
        /// The client session.
        client: u64,
        /// Its sequence number.
        seq: u64,
        /// Why.
        error: u8,
    },
}
