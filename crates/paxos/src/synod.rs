//! Single-decree Paxos: Lamport's Synod protocol, which chooses one value once.
//!
//! The three roles are kept apart as plain structs so that the classic
//! scenarios (dueling proposers, a proposer that must adopt a value it did not
//! propose) can be replayed message by message. Every handler takes one
//! message and returns the reply; the caller delivers it. Nothing here reads a
//! clock or draws a random number: retries and timeouts belong to the caller.
//!
//! Persistence: in a real node an acceptor's promise and acceptance reach
//! stable storage before its reply leaves the node (DESIGN rule 1). The
//! Multi-Paxos core expresses that as `Persist` outputs; here the caller does
//! it, by saving [`Acceptor::promised`] and [`Acceptor::accepted`] after a
//! handler changed them and before sending the handler's reply.
//!
//! ```
//! use paxos::synod::{Acceptor, Learner, Message, Proposer};
//!
//! let mut acceptors: Vec<Acceptor<&str>> = (0..3).map(|_| Acceptor::new()).collect();
//! let mut proposer = Proposer::new(1, 3, "v");
//! let mut learner = Learner::new(3);
//!
//! let ballot = proposer.prepare();
//! let mut accept = None;
//! for (i, acceptor) in acceptors.iter_mut().enumerate() {
//!     if let Message::Promise(p) = acceptor.on_prepare(ballot) {
//!         accept = accept.or(proposer.on_promise(i as u64 + 1, p.ballot, p.accepted));
//!     }
//! }
//! let accept = accept.expect("three promises form a quorum");
//! for (i, acceptor) in acceptors.iter_mut().enumerate() {
//!     if let Message::Accepted(a) = acceptor.on_accept(accept.ballot, accept.value) {
//!         learner.on_accepted(i as u64 + 1, a.ballot, a.value);
//!     }
//! }
//! assert_eq!(learner.chosen(), Some(&"v"));
//! ```

use std::collections::BTreeMap;
use std::fmt::Debug;

use crate::ballot::{Ballot, NodeId};

/// Phase 1a: a proposer asks the acceptors to promise to ignore lower ballots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prepare {
    /// The ballot the proposer wants to lead with.
    pub ballot: Ballot,
}

/// Phase 1b: an acceptor's promise, reporting what it already accepted so the
/// proposer can adopt it instead of its own value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Promise<V> {
    /// The ballot promised (the one the `Prepare` carried).
    pub ballot: Ballot,
    /// The acceptor's highest accepted proposal, if it accepted any.
    pub accepted: Option<(Ballot, V)>,
}

/// Phase 2a: a proposer that holds a quorum of promises asks the acceptors to
/// accept a value at its ballot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accept<V> {
    /// The ballot the promises were given for.
    pub ballot: Ballot,
    /// The adopted value, or the proposer's own if no promise reported one.
    pub value: V,
}

/// Phase 2b: an acceptor accepted a proposal. It carries the value because
/// learners, not only the proposer, count these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted<V> {
    /// The ballot accepted.
    pub ballot: Ballot,
    /// The value accepted at that ballot.
    pub value: V,
}

/// Rejection of a `Prepare` or `Accept`: tells the proposer to stop early and
/// what it must outbid next time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The refused ballot.
    pub ballot: Ballot,
    /// The acceptor's promise, which the refused ballot does not exceed.
    pub higher: Ballot,
}

/// Every message of the Synod protocol, for callers that route them as one
/// type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<V> {
    /// Phase 1a.
    Prepare(Prepare),
    /// Phase 1b.
    Promise(Promise<V>),
    /// Phase 2a.
    Accept(Accept<V>),
    /// Phase 2b.
    Accepted(Accepted<V>),
    /// Rejection of either phase.
    Nack(Nack),
}

impl<V> Message<V> {
    /// The ballot the message is about, so a router can check it before
    /// anything else.
    pub fn ballot(&self) -> Ballot {
        match self {
            Message::Prepare(m) => m.ballot,
            Message::Promise(m) => m.ballot,
            Message::Accept(m) => m.ballot,
            Message::Accepted(m) => m.ballot,
            Message::Nack(m) => m.ballot,
        }
    }
}

impl<V> From<Prepare> for Message<V> {
    fn from(m: Prepare) -> Self {
        Message::Prepare(m)
    }
}

impl<V> From<Promise<V>> for Message<V> {
    fn from(m: Promise<V>) -> Self {
        Message::Promise(m)
    }
}

impl<V> From<Accept<V>> for Message<V> {
    fn from(m: Accept<V>) -> Self {
        Message::Accept(m)
    }
}

impl<V> From<Accepted<V>> for Message<V> {
    fn from(m: Accepted<V>) -> Self {
        Message::Accepted(m)
    }
}

impl<V> From<Nack> for Message<V> {
    fn from(m: Nack) -> Self {
        Message::Nack(m)
    }
}

/// The smallest number of acceptors that makes a majority of `acceptors`: any
/// two such sets intersect, which is what carries a chosen value forward.
pub fn quorum(acceptors: usize) -> usize {
    acceptors / 2 + 1
}

/// A ballot a proposer can legitimately lead with: not the "nothing yet"
/// ballot and not a far-future round.
fn is_real(ballot: Ballot) -> bool {
    ballot != Ballot::ZERO && ballot.is_plausible()
}

/// The acceptor: the memory of the protocol. Its two fields are the stable
/// state that must survive a restart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acceptor<V> {
    promised: Ballot,
    accepted: Option<(Ballot, V)>,
}

impl<V: Clone + Eq + Debug> Default for Acceptor<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Clone + Eq + Debug> Acceptor<V> {
    /// A fresh acceptor that has promised and accepted nothing.
    pub fn new() -> Self {
        Acceptor {
            promised: Ballot::ZERO,
            accepted: None,
        }
    }

    /// An acceptor recovered from the state its caller persisted.
    pub fn restore(promised: Ballot, accepted: Option<(Ballot, V)>) -> Self {
        debug_assert!(
            accepted.as_ref().is_none_or(|(b, _)| *b <= promised),
            "an acceptor never accepts above its promise"
        );
        Acceptor { promised, accepted }
    }

    /// The highest ballot promised: lower `Prepare`s and `Accept`s are refused.
    /// Stable state: persist it before replying.
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// The highest-ballot proposal accepted, reported in every promise.
    /// Stable state: persist it before replying.
    pub fn accepted(&self) -> Option<&(Ballot, V)> {
        self.accepted.as_ref()
    }

    /// Phase 1b. Promises a ballot above the current promise, answers a
    /// duplicate `Prepare` of the promised ballot again (idempotent), and
    /// refuses anything lower with a `Nack` carrying the promise.
    pub fn on_prepare(&mut self, ballot: Ballot) -> Message<V> {
        if !is_real(ballot) || ballot < self.promised {
            return Nack {
                ballot,
                higher: self.promised,
            }
            .into();
        }
        self.promised = ballot;
        self.check();
        Promise {
            ballot,
            accepted: self.accepted.clone(),
        }
        .into()
    }

    /// Phase 2b. Accepts at a ballot at least as high as the promise (raising
    /// the promise to it); refuses anything lower with a `Nack`.
    pub fn on_accept(&mut self, ballot: Ballot, value: V) -> Message<V> {
        if !is_real(ballot) || ballot < self.promised {
            return Nack {
                ballot,
                higher: self.promised,
            }
            .into();
        }
        self.promised = ballot;
        self.accepted = Some((ballot, value.clone()));
        self.check();
        Accepted { ballot, value }.into()
    }

    fn check(&self) {
        debug_assert!(
            self.accepted
                .as_ref()
                .is_none_or(|(b, _)| *b <= self.promised),
            "an acceptor never accepts above its promise"
        );
    }
}

/// Where a proposer is in its current round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No round in progress: never started, or the last one was abandoned.
    Idle,
    /// Phase 1: `Prepare` sent, collecting promises.
    Preparing,
    /// Phase 2: `Accept` sent, waiting for a quorum of `Accepted`.
    Accepting,
    /// A quorum accepted this proposer's `Accept`: its proposal is chosen.
    Chosen,
}

/// The proposer: drives one ballot at a time through the two phases. Retrying
/// (and when) is the caller's decision; the proposer only guarantees that its
/// next ballot outbids everything it has seen.
#[derive(Clone, Debug)]
pub struct Proposer<V> {
    id: NodeId,
    quorum: usize,
    value: V,
    phase: Phase,
    ballot: Ballot,
    max_seen: Ballot,
    promised_by: Vec<NodeId>,
    /// The highest-ballot accepted proposal among this round's promises.
    adopted: Option<(Ballot, V)>,
    proposal: Option<V>,
    accepted_by: Vec<NodeId>,
}

impl<V: Clone + Eq + Debug> Proposer<V> {
    /// A proposer `id` that wants `value` chosen by `acceptors` acceptors.
    pub fn new(id: NodeId, acceptors: usize, value: V) -> Self {
        debug_assert!(acceptors > 0, "a proposer needs acceptors");
        Proposer {
            id,
            quorum: quorum(acceptors),
            value,
            phase: Phase::Idle,
            ballot: Ballot::ZERO,
            max_seen: Ballot::ZERO,
            promised_by: Vec::new(),
            adopted: None,
            proposal: None,
            accepted_by: Vec::new(),
        }
    }

    /// This proposer's node id, the low-order part of each of its ballots.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// How many promises (and acceptances) make a majority.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// The value this proposer wants, proposed only if no promise reports an
    /// accepted one.
    pub fn value(&self) -> &V {
        &self.value
    }

    /// Where the current round stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The ballot of the round in progress, if one is: the ballot that
    /// promises, `Accepted`s and `Nack`s are matched against.
    pub fn ballot(&self) -> Option<Ballot> {
        match self.phase {
            Phase::Preparing | Phase::Accepting => Some(self.ballot),
            Phase::Idle | Phase::Chosen => None,
        }
    }

    /// The highest ballot this proposer has used or heard of; the next
    /// `prepare` outbids it. A real node persists it (a restarted node must
    /// not reuse a ballot it may have sent).
    pub fn max_seen(&self) -> Ballot {
        self.max_seen
    }

    /// The value sent in phase 2 of the current round, once there is one.
    pub fn proposal(&self) -> Option<&V> {
        match self.phase {
            Phase::Accepting | Phase::Chosen => self.proposal.as_ref(),
            Phase::Idle | Phase::Preparing => None,
        }
    }

    /// Starts phase 1 with the smallest own ballot above everything seen, and
    /// returns it for the caller to send as `Prepare` to every acceptor. Any
    /// round in progress is abandoned.
    pub fn prepare(&mut self) -> Ballot {
        let ballot = Ballot::next_above(self.max_seen, self.id);
        debug_assert!(ballot > self.ballot, "ballots only grow");
        self.ballot = ballot;
        self.max_seen = ballot;
        self.phase = Phase::Preparing;
        self.promised_by.clear();
        self.adopted = None;
        self.proposal = None;
        self.accepted_by.clear();
        ballot
    }

    /// Collects a promise from acceptor `from`. Promises for another ballot,
    /// or after phase 1 ended, and repeats from the same acceptor are ignored.
    /// The promise that completes a quorum yields the `Accept` to send: the
    /// value accepted at the highest ballot among the promises, else this
    /// proposer's own value.
    pub fn on_promise(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        accepted: Option<(Ballot, V)>,
    ) -> Option<Accept<V>> {
        if self.phase != Phase::Preparing || ballot != self.ballot {
            return None;
        }
        if accepted.as_ref().is_some_and(|(b, _)| *b > ballot) {
            // An acceptor cannot promise `ballot` having accepted above it:
            // a malformed promise changes nothing.
            return None;
        }
        if self.promised_by.contains(&from) {
            return None;
        }
        self.promised_by.push(from);
        if let Some((b, v)) = accepted
            && self.adopted.as_ref().is_none_or(|(a, _)| b > *a)
        {
            self.adopted = Some((b, v));
        }
        if self.promised_by.len() < self.quorum {
            return None;
        }
        debug_assert_eq!(self.promised_by.len(), self.quorum);
        let value = match &self.adopted {
            Some((_, v)) => v.clone(),
            None => self.value.clone(),
        };
        self.phase = Phase::Accepting;
        self.proposal = Some(value.clone());
        Some(Accept { ballot, value })
    }

    /// Takes a refusal: remembers `higher` so the next ballot outbids it, and
    /// abandons the round if the `Nack` was for it. Returns whether it was,
    /// i.e. whether the caller should retry.
    pub fn on_nack(&mut self, ballot: Ballot, higher: Ballot) -> bool {
        if higher.is_plausible() && higher > self.max_seen {
            self.max_seen = higher;
        }
        if self.ballot() != Some(ballot) {
            return false;
        }
        self.phase = Phase::Idle;
        true
    }

    /// Gives up the round in progress without having heard of a higher
    /// ballot, e.g. when the caller's timer for it expired. Late promises and
    /// `Accepted`s for it are ignored from now on.
    pub fn abandon(&mut self) {
        if matches!(self.phase, Phase::Preparing | Phase::Accepting) {
            self.phase = Phase::Idle;
        }
    }

    /// Counts an `Accepted` for this proposer's phase 2 from acceptor `from`.
    /// Returns true once, when a quorum accepted: the proposal is chosen.
    pub fn on_accepted(&mut self, from: NodeId, ballot: Ballot) -> bool {
        if self.phase != Phase::Accepting || ballot != self.ballot {
            return false;
        }
        if self.accepted_by.contains(&from) {
            return false;
        }
        self.accepted_by.push(from);
        if self.accepted_by.len() < self.quorum {
            return false;
        }
        self.phase = Phase::Chosen;
        true
    }
}

/// One ballot's tally at a learner.
#[derive(Clone, Debug)]
struct Tally<V> {
    value: V,
    from: Vec<NodeId>,
}

/// The learner: finds out what was chosen by counting `Accepted` messages. A
/// value is chosen once a quorum of acceptors accepted it at one ballot.
#[derive(Clone, Debug)]
pub struct Learner<V> {
    quorum: usize,
    tallies: BTreeMap<Ballot, Tally<V>>,
    chosen: Option<V>,
}

impl<V: Clone + Eq + Debug> Learner<V> {
    /// A learner for a group of `acceptors` acceptors.
    pub fn new(acceptors: usize) -> Self {
        debug_assert!(acceptors > 0, "a learner needs acceptors");
        Learner {
            quorum: quorum(acceptors),
            tallies: BTreeMap::new(),
            chosen: None,
        }
    }

    /// Counts acceptor `from`'s `Accepted`. Returns the value when this
    /// message completes a quorum for its ballot (once per ballot); repeats
    /// from one acceptor count once. Paxos guarantees every such value is the
    /// first one chosen; this is asserted in debug builds.
    pub fn on_accepted(&mut self, from: NodeId, ballot: Ballot, value: V) -> Option<&V> {
        let quorum = self.quorum;
        let tally = self.tallies.entry(ballot).or_insert_with(|| Tally {
            value: value.clone(),
            from: Vec::new(),
        });
        if tally.value != value || tally.from.contains(&from) {
            // One ballot carries one value; a second one is malformed input.
            return None;
        }
        tally.from.push(from);
        if tally.from.len() != quorum {
            return None;
        }
        match &self.chosen {
            None => self.chosen = Some(value),
            Some(chosen) => debug_assert_eq!(
                chosen, &value,
                "agreement violated: a second value was chosen"
            ),
        }
        Some(&tally.value)
    }

    /// The chosen value, once learned. It never changes afterwards.
    pub fn chosen(&self) -> Option<&V> {
        self.chosen.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(round: u64, node: NodeId) -> Ballot {
        Ballot::new(round, node)
    }

    #[test]
    fn acceptor_promises_higher_and_repeats_duplicate() {
        let mut a: Acceptor<u8> = Acceptor::new();
        assert!(matches!(a.on_prepare(b(1, 1)), Message::Promise(_)));
        assert!(matches!(a.on_prepare(b(1, 1)), Message::Promise(_)));
        assert_eq!(
            a.on_prepare(b(0, 9)),
            Message::Nack(Nack {
                ballot: b(0, 9),
                higher: b(1, 1)
            })
        );
        assert_eq!(a.promised(), b(1, 1));
    }

    #[test]
    fn acceptor_refuses_zero_and_far_future_ballots() {
        let mut a: Acceptor<u8> = Acceptor::new();
        assert!(matches!(a.on_prepare(Ballot::ZERO), Message::Nack(_)));
        let far = b(Ballot::MAX_ROUND + 1, 1);
        assert!(matches!(a.on_prepare(far), Message::Nack(_)));
        assert!(matches!(a.on_accept(far, 1), Message::Nack(_)));
        assert_eq!(a, Acceptor::new());
    }

    #[test]
    fn acceptor_accepts_at_or_above_promise() {
        let mut a = Acceptor::new();
        a.on_prepare(b(2, 1));
        assert!(matches!(a.on_accept(b(1, 1), 7), Message::Nack(_)));
        assert!(matches!(a.on_accept(b(2, 1), 7), Message::Accepted(_)));
        assert!(matches!(a.on_accept(b(3, 2), 8), Message::Accepted(_)));
        assert_eq!(a.promised(), b(3, 2));
        assert_eq!(a.accepted(), Some(&(b(3, 2), 8)));
    }

    #[test]
    fn proposer_ignores_stale_promises_and_nacks() {
        let mut p = Proposer::new(1, 3, 'p');
        let first = p.prepare();
        let second = p.prepare();
        assert!(second > first);
        assert_eq!(p.on_promise(2, first, None), None);
        assert_eq!(p.on_promise(3, first, None), None);
        assert!(!p.on_nack(first, b(9, 9)));
        assert_eq!(p.phase(), Phase::Preparing);
        assert_eq!(p.max_seen(), b(9, 9));
        assert_eq!(p.on_promise(2, second, None), None);
        assert_eq!(
            p.on_promise(3, second, None),
            Some(Accept {
                ballot: second,
                value: 'p'
            })
        );
    }

    #[test]
    fn abandoned_round_ignores_late_promises() {
        let mut p = Proposer::new(1, 3, 0u8);
        let ballot = p.prepare();
        p.on_promise(2, ballot, None);
        p.abandon();
        assert_eq!(p.phase(), Phase::Idle);
        assert_eq!(p.on_promise(3, ballot, None), None);
        assert!(p.prepare() > ballot);
    }

    #[test]
    fn proposer_ignores_implausible_higher() {
        let mut p = Proposer::new(1, 3, 0u8);
        let ballot = p.prepare();
        assert!(p.on_nack(ballot, b(u64::MAX, 2)));
        assert!(p.prepare() < b(Ballot::MAX_ROUND, 0));
    }

    #[test]
    fn proposer_learns_its_proposal_chosen() {
        let mut p = Proposer::new(1, 3, 5u8);
        let ballot = p.prepare();
        p.on_promise(1, ballot, None);
        assert!(p.on_promise(2, ballot, None).is_some());
        assert!(!p.on_accepted(1, ballot));
        assert!(!p.on_accepted(1, ballot));
        assert!(p.on_accepted(3, ballot));
        assert_eq!(p.phase(), Phase::Chosen);
        assert_eq!(p.proposal(), Some(&5));
    }

    #[test]
    fn learner_needs_a_quorum_at_one_ballot() {
        let mut l = Learner::new(3);
        assert_eq!(l.on_accepted(1, b(1, 1), 'a'), None);
        assert_eq!(l.on_accepted(2, b(2, 2), 'a'), None);
        assert_eq!(l.on_accepted(1, b(1, 1), 'a'), None);
        assert_eq!(l.chosen(), None);
        assert_eq!(l.on_accepted(3, b(1, 1), 'a'), Some(&'a'));
        assert_eq!(l.chosen(), Some(&'a'));
        assert_eq!(l.on_accepted(1, b(1, 1), 'a'), None);
    }

    #[test]
    fn learner_ignores_a_second_value_at_one_ballot() {
        let mut l = Learner::new(3);
        l.on_accepted(1, b(1, 1), 'a');
        assert_eq!(l.on_accepted(2, b(1, 1), 'z'), None);
        assert_eq!(l.chosen(), None);
    }
}
