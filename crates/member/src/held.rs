//! Decisions a leader holds back (see [`paxos::multi::Output::Announce`]).
//!
//! At one client a leader's turn that learns a slot has three writes to
//! make: the client's answer and a decision for each peer. Written in that
//! turn, the decisions wake the peers on the leader's own core and delay
//! the answer, and the client's next request waits for the leader to go
//! idle. So they wait:
//!
//! - A `Chosen` for a member that voted leaves by the end of the next turn
//!   (the one the next request brings, or the next tick). When that turn
//!   syncs, it leaves with the turn's `Accept`, in the same write to the
//!   same peer.
//! - A `Commit` with the value for the member that did not vote is the one
//!   write that wakes a third process for each put: it waits for the next
//!   tick, heartbeat or linearizable read, or until [`COMMITS_HELD_MAX`]
//!   are held, and then they go together.

use paxos::multi::{Envelope, Message};

/// `Commit`s held at most: past it they leave at the end of the turn.
/// One tick of puts at one client is about 25.
pub const COMMITS_HELD_MAX: usize = 64;

/// The held decisions, oldest first.
#[derive(Debug, Default)]
pub struct HeldDecisions {
    /// `Chosen` for the voters.
    chosen: Vec<Envelope>,
    /// How many of `chosen` were held in an earlier turn than this one.
    earlier: usize,
    /// `Commit` for the member left out of the vote.
    commits: Vec<Envelope>,
}

impl HeldDecisions {
    /// A turn begins: every `Chosen` held now leaves by its end.
    pub fn start_turn(&mut self) {
        self.earlier = self.chosen.len();
    }

    /// Holds a decision.
    pub fn hold(&mut self, decision: Envelope) {
        match decision.message {
            Message::Commit { .. } => self.commits.push(decision),
            _ => self.chosen.push(decision),
        }
    }

    /// Every held decision, oldest first for each peer: someone waits for
    /// a decision (or the tick has come), and those before it go first.
    pub fn take_all(&mut self) -> impl Iterator<Item = Envelope> + '_ {
        self.earlier = 0;
        self.chosen.drain(..).chain(self.commits.drain(..))
    }

    /// What may wait no longer at the end of a turn, oldest first for each
    /// peer: the `Chosen` held before the turn began, and the `Commit`s if
    /// [`COMMITS_HELD_MAX`] are held.
    pub fn take_due(&mut self) -> impl Iterator<Item = Envelope> + '_ {
        let due = std::mem::take(&mut self.earlier);
        debug_assert!(due <= self.chosen.len(), "only take_all shrinks the queue");
        let commits = if self.commits.len() >= COMMITS_HELD_MAX {
            self.commits.len()
        } else {
            0
        };
        self.chosen
            .drain(..due)
            .chain(self.commits.drain(..commits))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.chosen.len() + self.commits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(slot: u64) -> Envelope {
        Envelope {
            from: 1,
            to: 2,
            message: Message::Chosen {
                ballot: paxos::Ballot::new(1, 1),
                slot,
            },
        }
    }

    fn commit(slot: u64) -> Envelope {
        Envelope {
            from: 1,
            to: 3,
            message: Message::Commit {
                slot,
                value: paxos::multi::Value::Noop,
            },
        }
    }

    fn slots(drain: impl Iterator<Item = Envelope>) -> Vec<u64> {
        drain
            .map(|e| match e.message {
                Message::Chosen { slot, .. } | Message::Commit { slot, .. } => slot,
                other => panic!("not a decision: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_decision_leaves_at_the_end_of_the_turn_after_the_one_that_held_it() {
        let mut held = HeldDecisions::default();
        held.start_turn();
        held.hold(chosen(1));
        assert_eq!(
            slots(held.take_due()),
            Vec::<u64>::new(),
            "not in its own turn"
        );
        held.start_turn();
        held.hold(chosen(2));
        assert_eq!(slots(held.take_due()), vec![1]);
        held.start_turn();
        assert_eq!(slots(held.take_due()), vec![2]);
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn no_decision_outlives_two_turn_ends() {
        let mut held = HeldDecisions::default();
        for turn in 0..50u64 {
            held.start_turn();
            for slot in 0..turn % 4 {
                held.hold(chosen(turn * 10 + slot));
            }
            let due = slots(held.take_due());
            assert!(
                due.iter().all(|s| s / 10 + 1 == turn),
                "turn {turn}: {due:?}"
            );
            assert_eq!(held.len() as u64, turn % 4);
        }
    }

    #[test]
    fn taking_all_keeps_the_order_and_leaves_nothing_due() {
        let mut held = HeldDecisions::default();
        held.start_turn();
        held.hold(chosen(1));
        held.start_turn();
        held.hold(chosen(2));
        assert_eq!(slots(held.take_all()), vec![1, 2]);
        held.hold(chosen(3));
        assert_eq!(slots(held.take_due()), Vec::<u64>::new());
        held.start_turn();
        assert_eq!(slots(held.take_due()), vec![3]);
    }

    #[test]
    fn commits_wait_past_turn_ends_until_taken_or_too_many() {
        let mut held = HeldDecisions::default();
        held.start_turn();
        held.hold(chosen(1));
        held.hold(commit(1));
        held.start_turn();
        assert_eq!(slots(held.take_due()), vec![1], "the chosen only");
        for turn in 0..5 {
            held.start_turn();
            assert_eq!(slots(held.take_due()), Vec::<u64>::new(), "turn {turn}");
        }
        held.hold(commit(2));
        assert_eq!(slots(held.take_all()), vec![1, 2]);
        assert_eq!(held.len(), 0);

        let mut slot = 10;
        while held.len() < COMMITS_HELD_MAX - 1 {
            held.hold(commit(slot));
            slot += 1;
        }
        held.start_turn();
        assert_eq!(slots(held.take_due()).len(), 0, "one short of the bound");
        held.hold(commit(slot));
        held.start_turn();
        let due = slots(held.take_due());
        assert_eq!(due.len(), COMMITS_HELD_MAX, "all of them at the bound");
        assert!(due.windows(2).all(|w| w[0] < w[1]), "in order: {due:?}");
        assert_eq!(held.len(), 0);
    }
}
