//! Who votes and who only learns: the configuration in force for a slot.
//!
//! A configuration change is a value decided in the log like any other
//! ([`super::Value::Reconfigure`]). Decided in slot `s`, it is in force for
//! every slot after `s`. Three rules keep the log safe across changes
//! (Vertical Paxos, with the log as its master):
//!
//! 1. A slot is decided only by a quorum of the voters in force for it.
//! 2. A leader opens no slot after a change it has not seen decided, so it
//!    always knows the configuration of every slot it proposes; one change
//!    is in flight at a time.
//! 3. Phase 1 walks the slots it recovers in order and is complete only
//!    when a quorum of every configuration in force over them has
//!    promised: the configuration of the first slot it recovers, and the
//!    one each change it adopts brings in. A new configuration's first
//!    leader thereby learns what the old one may have chosen.
//!
//! And three that keep it live:
//!
//! - A change is *settled* once a quorum of the voters it brings in know
//!   every slot up to it chosen ([`super::Replica::settled`]). Until then a
//!   member it removed may still be needed for rule 3 (a candidate behind
//!   the change walks over the old configuration), so a runtime keeps it
//!   running until then.
//! - A member that joins an existing cluster does not know the
//!   configurations before the change that added it: it never stands
//!   before it has learned the configuration of the slots it would
//!   recover, and, like every replica, it answers any candidate's Prepare
//!   (promising is always safe; stickiness keeps a working leader).
//! - A change's decision is made durable at once (its `Commit` record is a
//!   barrier), so a member never forgets the configuration it learned.

use std::collections::BTreeSet;

use crate::ballot::NodeId;

/// The members of one configuration: voters make quorums, learners only
/// receive the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Membership {
    /// The acceptors whose votes decide a slot.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive every decision and vote in none.
    pub learners: BTreeSet<NodeId>,
}

impl Membership {
    /// Voters only, no learners.
    pub fn of_voters(voters: impl IntoIterator<Item = NodeId>) -> Self {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// The number of voters that makes a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether `id`'s vote counts.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters and learners, in id order.
    pub fn all(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.union(&self.learners).copied()
    }

    /// Whether `ids` hold a quorum of the voters (others are not counted).
    pub fn is_quorum<'a>(&self, ids: impl IntoIterator<Item = &'a NodeId>) -> bool {
        ids.into_iter().filter(|id| self.is_voter(**id)).count() >= self.quorum()
    }

    /// Whether it is usable: at least one voter, and nobody both a voter
    /// and a learner.
    pub fn is_valid(&self) -> bool {
        !self.voters.is_empty() && self.voters.is_disjoint(&self.learners)
    }
}
