//! Configuration changes in the Multi-Paxos core, driven by hand: growing
//! and shrinking in one change, learners that never count, one change at a
//! time, and the classic unsafe interleaving (two overlapping changes and
//! a leader change in the middle) replayed against the rule and against a
//! broken variant.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use paxos::NodeId;
use paxos::multi::{
    Bug, Command, Config, Envelope, Membership, Message, Output, ProposeError, Replica, Slot, Value,
};

/// Replicas keyed by id over a FIFO network that can lose what `lose` says.
struct Cluster {
    replicas: BTreeMap<NodeId, Replica>,
    wire: VecDeque<Envelope>,
    applied: BTreeMap<NodeId, BTreeMap<Slot, Value>>,
    down: BTreeSet<NodeId>,
    /// Up, but their clocks stand still: they take no tick.
    frozen: BTreeSet<NodeId>,
    lose: Box<dyn Fn(&Envelope) -> bool>,
    /// Every `Accept` sent, as (to, slot).
    accepts: Vec<(NodeId, Slot)>,
}

impl Cluster {
    /// `voters` start as the configuration; `spare` replicas run too,
    /// knowing that configuration, outside it until a change adds them.
    fn new(voters: &[NodeId], spare: &[NodeId], bug: Option<Bug>) -> Self {
        let replicas = voters
            .iter()
            .chain(spare)
            .map(|&id| {
                let mut config = Config::new(id, voters.to_vec());
                config.bug = bug;
                (id, Replica::new(config))
            })
            .collect();
        Cluster {
            replicas,
            wire: VecDeque::new(),
            applied: BTreeMap::new(),
            down: BTreeSet::new(),
            frozen: BTreeSet::new(),
            lose: Box::new(|_| false),
            accepts: Vec::new(),
        }
    }

    fn collect(&mut self, id: NodeId) {
        let Some(r) = self.replicas.get_mut(&id) else {
            return;
        };
        for output in r.take_outputs() {
            match output {
                Output::Send(e) | Output::Announce(e) => {
                    if let Message::Accept { slot, .. } = e.message {
                        self.accepts.push((e.to, slot));
                    }
                    self.wire.push_back(e);
                }
                Output::Apply { slot, value } => {
                    self.applied.entry(id).or_default().insert(slot, value);
                }
                _ => {}
            }
        }
    }

    fn settle(&mut self) {
        let mut budget = 200_000;
        while let Some(e) = self.wire.pop_front() {
            budget -= 1;
            assert!(budget > 0, "messages never settle");
            if self.down.contains(&e.to) || self.down.contains(&e.from) || (self.lose)(&e) {
                continue;
            }
            let to = e.to;
            if let Some(r) = self.replicas.get_mut(&to) {
                r.step(e);
            }
            self.collect(to);
        }
    }

    fn tick(&mut self, ticks: u64) {
        for t in 0..ticks {
            let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
            for id in ids {
                if !self.down.contains(&id) && !self.frozen.contains(&id) {
                    if let Some(r) = self.replicas.get_mut(&id) {
                        r.tick(id * 7919 + t * 13);
                    }
                    self.collect(id);
                }
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.replicas
            .iter()
            .find(|(id, r)| !self.down.contains(id) && r.is_leader())
            .map(|(id, _)| *id)
    }

    fn replica(&mut self, id: NodeId) -> &mut Replica {
        self.replicas.get_mut(&id).expect("a replica of the test")
    }

    fn propose(&mut self, id: NodeId, seq: u64) {
        self.replica(id)
            .propose(command(seq))
            .expect("the leader takes proposals");
        self.collect(id);
        self.settle();
    }

    fn reconfigure(&mut self, id: NodeId, membership: Membership) -> Result<(), ProposeError> {
        let seq = 1_000 + self.accepts.len() as u64;
        let result = self.replica(id).reconfigure(membership, command(seq));
        self.collect(id);
        self.settle();
        result
    }

    /// The value each replica applied at `slot`, by replica.
    fn applied_at(&self, slot: Slot) -> BTreeMap<NodeId, &Value> {
        self.applied
            .iter()
            .filter_map(|(id, log)| log.get(&slot).map(|v| (*id, v)))
            .collect()
    }

    /// Fails if two replicas applied different values at one slot.
    fn assert_one_value_per_slot(&self) {
        let mut seen: BTreeMap<Slot, (NodeId, &Value)> = BTreeMap::new();
        for (id, log) in &self.applied {
            for (slot, value) in log {
                let (first, v) = *seen.entry(*slot).or_insert((*id, value));
                assert_eq!(v, value, "slot {slot}: replica {first} and {id} differ");
            }
        }
    }

    /// Whether `seq` was applied by `id`.
    fn has_applied(&self, id: NodeId, seq: u64) -> bool {
        self.applied.get(&id).is_some_and(|log| {
            log.values()
                .any(|v| v.commands().iter().any(|c| c.seq == seq))
        })
    }
}

fn command(seq: u64) -> Command {
    Command {
        client: 7,
        seq,
        payload: seq.to_le_bytes().to_vec(),
    }
}

fn voters(ids: &[NodeId]) -> Membership {
    Membership::of_voters(ids.iter().copied())
}

#[test]
fn growing_three_to_five_in_one_change_lets_the_new_majority_decide() {
    let mut c = Cluster::new(&[1, 2, 3], &[4, 5], None);
    c.tick(40);
    let leader = c.leader().expect("a leader");
    c.propose(leader, 1);
    c.reconfigure(leader, voters(&[1, 2, 3, 4, 5]))
        .expect("the change is taken");
    c.tick(10);
    for id in 1..=5 {
        assert_eq!(c.replica(id).membership(), &voters(&[1, 2, 3, 4, 5]));
        assert!(c.has_applied(id, 1), "replica {id} caught up");
    }
    // Two of the old three gone: the new five still have a majority.
    let old: Vec<NodeId> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    c.down.insert(old[0]);
    c.down.insert(old[1]);
    c.propose(leader, 2);
    c.tick(4);
    for id in [leader, 4, 5] {
        assert!(
            c.has_applied(id, 2),
            "replica {id} applied under the new quorum"
        );
    }
    c.assert_one_value_per_slot();
}

#[test]
fn shrinking_to_one_voter_needs_only_that_voter() {
    let mut c = Cluster::new(&[1, 2, 3], &[], None);
    c.tick(40);
    let leader = c.leader().expect("a leader");
    c.reconfigure(leader, voters(&[leader])).expect("taken");
    c.tick(4);
    for id in [1, 2, 3] {
        if id != leader {
            c.down.insert(id);
        }
    }
    c.propose(leader, 9);
    assert!(c.has_applied(leader, 9), "decided by a quorum of one");
}

#[test]
fn a_learner_gets_the_log_but_its_vote_never_counts() {
    for bug in [None, Some(Bug::LearnerVotes)] {
        let mut c = Cluster::new(&[1, 2, 3], &[4], bug);
        c.tick(40);
        let leader = c.leader().expect("a leader");
        let mut with_learner = voters(&[1, 2, 3]);
        with_learner.learners.insert(4);
        c.reconfigure(leader, with_learner).expect("taken");
        c.propose(leader, 1);
        c.tick(4);
        assert!(c.has_applied(4, 1), "the learner receives the log");
        // The learner never stands.
        assert!(!c.replica(4).is_leader());
        // Leader and learner alone are not a quorum of the voters.
        for id in [1, 2, 3] {
            if id != leader {
                c.down.insert(id);
            }
        }
        c.replica(leader).propose(command(2)).expect("queued");
        c.collect(leader);
        c.settle();
        let decided = c.has_applied(leader, 2);
        assert_eq!(
            decided,
            bug.is_some(),
            "decided with a learner's vote ({bug:?})"
        );
    }
}

#[test]
fn one_change_at_a_time_and_no_slot_opens_after_an_undecided_one() {
    let mut c = Cluster::new(&[1, 2, 3], &[4], None);
    c.tick(40);
    let leader = c.leader().expect("a leader");
    c.propose(leader, 1);
    for id in [1, 2, 3] {
        if id != leader {
            c.down.insert(id);
        }
    }
    c.reconfigure(leader, voters(&[1, 2, 3, 4]))
        .expect("the first change is taken");
    let change_slot = c.replica(leader).commit_index() + 1;
    assert!(c.replica(leader).reconfiguring());
    let second = c.reconfigure(leader, voters(&[1, 2, 3]));
    assert!(
        matches!(second, Err(ProposeError::Reconfiguring { .. })),
        "{second:?}"
    );
    c.replica(leader).propose(command(2)).expect("queued");
    c.collect(leader);
    c.settle();
    assert!(
        c.accepts.iter().all(|(_, slot)| *slot <= change_slot),
        "no Accept beyond the undecided change: {:?}",
        c.accepts
    );
    // Once the change is decided, the queued command goes to the new
    // configuration's voters, the new one among them.
    c.down.clear();
    c.tick(6);
    assert!(!c.replica(leader).reconfiguring());
    assert!(c.has_applied(4, 2));
    assert!(c.accepts.contains(&(4, change_slot + 1)));
    c.assert_one_value_per_slot();
}

#[test]
fn a_removed_leader_steps_down_and_the_rest_go_on() {
    let mut c = Cluster::new(&[1, 2, 3], &[], None);
    c.tick(40);
    let leader = c.leader().expect("a leader");
    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|id| *id != leader).collect();
    c.reconfigure(leader, voters(&rest)).expect("taken");
    assert!(!c.replica(leader).is_leader(), "stepped down at once");
    c.tick(60);
    let next = c.leader().expect("a new leader");
    assert!(rest.contains(&next));
    c.propose(next, 5);
    assert!(c.has_applied(rest[0], 5) && c.has_applied(rest[1], 5));
    // The removed member still learns nothing new: it is not told.
    assert!(!c.has_applied(leader, 5));
}

/// The classic unsafe interleaving. Voters {l, p, q}, `l` leading, has
/// `x` chosen in slot k by {l, p} (q never hears of it), then a change
/// replacing l by 6 chosen in slot k+1 by {p, q}. p goes down. q knows the
/// change is decided but not what slot k holds. A candidate that completes
/// phase 1 with a quorum of the new configuration alone ({q, 6}) fills
/// slot k with a no-op, which {l, q} then accept: two values chosen for
/// one slot. The rule makes q ask the old configuration first, learn `x`
/// from l, and re-propose it. Returns the cluster and (l, p, q, k).
fn overlapping_changes_and_a_leader_change(bug: Option<Bug>) -> (Cluster, [NodeId; 3], Slot) {
    let mut c = Cluster::new(&[1, 2, 3], &[6], bug);
    c.tick(40);
    let l = c.leader().expect("a leader");
    let others: Vec<NodeId> = [1, 2, 3].into_iter().filter(|id| *id != l).collect();
    let (p, q) = (others[0], others[1]);
    c.propose(l, 1);
    let k = c.replica(l).commit_index() + 1;
    // Slot k reaches l and p only, and q never learns it.
    c.lose = Box::new(move |e| {
        e.to == q
            && matches!(&e.message,
                Message::Accept { slot, .. } | Message::Commit { slot, .. } | Message::Chosen { slot, .. }
                    if *slot == k)
    });
    c.propose(l, 2);
    assert!(c.has_applied(p, 2) && !c.has_applied(q, 2));
    c.reconfigure(l, voters(&[p, q, 6])).expect("taken");
    assert_eq!(c.replica(q).membership_at(k + 2), &voters(&[p, q, 6]));
    assert!(c.replica(q).commit_index() < k, "q does not know slot k");
    // l removed itself and stepped down; p goes down; decisions no longer
    // reach l (so that it cannot notice a conflict and stop the replay).
    assert!(!c.replica(l).is_leader());
    c.down.insert(p);
    c.lose = Box::new(move |e| {
        e.to == l && matches!(e.message, Message::Commit { .. } | Message::Chosen { .. })
    });
    c.tick(80);
    (c, [l, p, q], k)
}

#[test]
fn the_unsafe_interleaving_cannot_choose_two_values() {
    let (mut c, [_, _, q], _) = overlapping_changes_and_a_leader_change(None);
    let leader = c.leader().expect("a leader of the new configuration");
    assert!(leader == q || leader == 6, "{leader} leads");
    c.assert_one_value_per_slot();
    assert!(
        c.has_applied(leader, 2),
        "the new leader re-proposed what slot k held"
    );
    c.propose(leader, 3);
    assert!(c.has_applied(6, 3) && c.has_applied(q, 3));
}

#[test]
fn skipping_the_old_configurations_phase_1_chooses_two_values() {
    let (c, [_, p, q], k) = overlapping_changes_and_a_leader_change(Some(Bug::SkipOldConfigPhase1));
    let leader = c.leader().expect("a leader of the new configuration");
    assert!(leader == q || leader == 6, "{leader} leads");
    let at_k = c.applied_at(k);
    assert!(at_k.contains_key(&p) && at_k.contains_key(&q), "{at_k:?}");
    assert_ne!(at_k[&p], at_k[&q], "two values chosen at slot {k}");
}

/// A deposed leader that has not noticed: cut off from the other two
/// voters, it still leads at its old ballot with slots in flight when a new
/// leader (a higher ballot) grows the configuration to five. The decision
/// reaches it. If it took the new configuration and went on, its slots
/// could be decided by itself and the two new voters, which never promised
/// the new leader's ballot, while the new leader decides other values for
/// the same slots. It must step down, and the new leader must have the new
/// voters promise before it opens a slot they decide.
#[test]
fn a_deposed_leader_that_learns_a_change_does_not_decide_with_the_new_voters() {
    let mut c = Cluster::new(&[1, 2, 3], &[4, 5], None);
    c.tick(40);
    let old = c.leader().expect("a leader");
    let rest: Vec<NodeId> = [1, 2, 3].into_iter().filter(|id| *id != old).collect();
    c.propose(old, 1);
    // Cut off from the other voters, except that decisions reach it.
    let cut = rest.clone();
    c.lose = Box::new(move |e| {
        let across =
            (e.from == old && cut.contains(&e.to)) || (e.to == old && cut.contains(&e.from));
        across && !(e.to == old && matches!(e.message, Message::Commit { .. }))
    });
    for seq in [2, 3] {
        c.replica(old)
            .propose(command(seq))
            .expect("it still leads");
        c.collect(old);
        c.settle();
    }
    // Its clock stands still (it never notices it lost its quorum); the
    // others elect a new leader, which grows the configuration.
    c.frozen.insert(old);
    for _ in 0..80 {
        c.tick(1);
        if rest.iter().any(|id| c.replica(*id).is_leader()) {
            break;
        }
    }
    let new = rest
        .iter()
        .copied()
        .find(|id| c.replica(*id).is_leader())
        .expect("a new leader among the other two");
    c.reconfigure(new, voters(&[1, 2, 3, 4, 5])).expect("taken");
    assert!(
        !c.replica(old).is_leader(),
        "the deposed leader learned a decision it did not make and steps down"
    );
    // Its clock runs again and everything heals: whatever it had in flight
    // and whatever the new leader proposes, each slot gets one value.
    c.frozen.clear();
    c.lose = Box::new(|_| false);
    c.tick(60);
    let leader = c.leader().expect("a leader");
    c.propose(leader, 9);
    c.tick(10);
    c.assert_one_value_per_slot();
    for id in 1..=5 {
        assert!(c.has_applied(id, 9), "replica {id}");
    }
}
