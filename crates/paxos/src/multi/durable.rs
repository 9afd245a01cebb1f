//! The state an acceptor must never forget, as records to persist.

use std::collections::BTreeMap;

use super::membership::Membership;
use super::message::{Slot, Value};
use super::take_through;
use crate::ballot::Ballot;

/// A change to stable state. The core emits these as `Output::Persist`; the
/// runtime makes them durable before anything after them leaves the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The highest ballot promised. A proposer promises its own ballot before
    /// sending `Prepare`, so a restarted node never reuses a ballot.
    Promise(Ballot),
    /// An acceptance of `value` for `slot` at `ballot`.
    Accept {
        /// The slot.
        slot: Slot,
        /// The ballot accepted.
        ballot: Ballot,
        /// The value accepted.
        value: Value,
    },
    /// A decision learned. Only a hint for faster restarts: losing one is
    /// safe, the replica learns it again from the leader.
    Commit {
        /// The slot.
        slot: Slot,
        /// The chosen value.
        value: Value,
    },
}

impl Record {
    /// Whether outputs after this record must wait until it is durable.
    /// Promises and acceptances must (persist before you promise); a
    /// commit is a hint that may reach the disk with the next sync, or be
    /// lost in a crash, so it never costs an fsync of its own. Except a
    /// configuration change's: a member that joined learns its
    /// configuration from it, and one that forgot it after a crash would
    /// know no voter to answer or to ask until a leader found it.
    pub fn is_barrier(&self) -> bool {
        match self {
            Record::Commit { value, .. } => value.membership().is_some(),
            _ => true,
        }
    }
}

/// Everything a replica recovers from stable storage on restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    /// Slots up to here live in the state machine's snapshot, not the log.
    pub snapshot_slot: Slot,
    /// The configuration in force after `snapshot_slot`, as the snapshot
    /// recorded it; `None` means the one the replica was first started
    /// with (no change has been decided up to the snapshot).
    pub membership: Option<Membership>,
    /// The highest ballot promised (or used as a proposer).
    pub promised: Ballot,
    /// Per slot, the latest acceptance.
    pub accepted: BTreeMap<Slot, (Ballot, Value)>,
    /// Decisions known.
    pub committed: BTreeMap<Slot, Value>,
}

impl Durable {
    /// Folds one record into the state, as recovery replays the log.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Promise(ballot) => {
                if *ballot > self.promised {
                    self.promised = *ballot;
                }
            }
            Record::Accept {
                slot,
                ballot,
                value,
            } => {
                if *ballot > self.promised {
                    self.promised = *ballot;
                }
                if *slot > self.snapshot_slot {
                    self.accepted.insert(*slot, (*ballot, value.clone()));
                }
            }
            Record::Commit { slot, value } => {
                if *slot > self.snapshot_slot {
                    self.committed.insert(*slot, value.clone());
                }
            }
        }
    }

    /// A snapshot covers every slot up to `slot`: the log before it is no
    /// longer needed. Returns the entries dropped (in a `Durable` of their
    /// own, nothing else set), for the caller to free where it costs least.
    pub fn compact(&mut self, slot: Slot) -> Durable {
        if slot <= self.snapshot_slot {
            return Durable::default();
        }
        self.snapshot_slot = slot;
        Durable {
            accepted: take_through(&mut self.accepted, slot),
            committed: take_through(&mut self.committed, slot),
            ..Durable::default()
        }
    }
}
