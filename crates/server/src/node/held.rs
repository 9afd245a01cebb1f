//! Decisions a leader holds back for one turn (see
//! [`paxos::multi::Output::Announce`]).
//!
//! At one client a leader's turn that learns a slot has three writes to
//! make: the client's answer and a decision for each peer. Written in that
//! turn, the decisions wake the peers on the leader's own core and delay
//! the answer, and the client's next request waits for the leader to go
//! idle. Held until the end of the next turn (the one the next request
//! brings, or the next tick), they leave while that turn's write is being
//! synced, off the path of any client.

use std::vec::Drain;

use paxos::multi::Envelope;

/// The held decisions, oldest first, and how many were held in an earlier
/// turn than the current one.
#[derive(Debug, Default)]
pub struct HeldDecisions {
    queue: Vec<Envelope>,
    earlier: usize,
}

impl HeldDecisions {
    /// A turn begins: everything held now leaves by its end.
    pub fn start_turn(&mut self) {
        self.earlier = self.queue.len();
    }

    /// Holds a decision until the end of the next turn at the latest.
    pub fn hold(&mut self, decision: Envelope) {
        self.queue.push(decision);
    }

    /// Every held decision, oldest first: someone waits for a decision,
    /// and those before it go first.
    pub fn take_all(&mut self) -> Drain<'_, Envelope> {
        self.earlier = 0;
        self.queue.drain(..)
    }

    /// The decisions held before this turn began, oldest first: the turn
    /// is ending, and they may wait no longer.
    pub fn take_due(&mut self) -> Drain<'_, Envelope> {
        let due = std::mem::take(&mut self.earlier);
        debug_assert!(due <= self.queue.len(), "only take_all shrinks the queue");
        self.queue.drain(..due)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos::multi::Message;

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

    fn slots(drain: Drain<'_, Envelope>) -> Vec<u64> {
        drain
            .map(|e| match e.message {
                Message::Chosen { slot, .. } => slot,
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
}
