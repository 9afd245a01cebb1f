//! Safety invariants checked at every step, by an oracle that sees every
//! acceptance as it is persisted and every apply.

use std::collections::{BTreeMap, BTreeSet};

use kv::Fnv64;
use kv::codec::Sink;
use paxos::multi::{ClientId, Message, Slot, Value};
use paxos::{Ballot, NodeId};

use crate::trace::short_value;

/// A broken safety property, with what the oracle saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time, in microseconds.
    pub time_us: u64,
    /// What broke.
    pub what: String,
}

/// One value accepted in one slot at one ballot, and who accepted it.
type Votes = (Value, BTreeSet<NodeId>);

/// The all-seeing judge of one run.
#[derive(Debug, Default)]
pub struct Oracle {
    /// The voters in force from each slot on, as the chosen configuration
    /// changes say: a slot is chosen only by a quorum of its own.
    configs: BTreeMap<Slot, BTreeSet<NodeId>>,
    /// Per slot and ballot, each value accepted and who accepted it.
    votes: BTreeMap<(Slot, Ballot), Vec<Votes>>,
    /// Values chosen so far: a quorum accepted them at one ballot.
    chosen: BTreeMap<Slot, Value>,
    /// Every command a client submitted under its own session.
    proposed: BTreeSet<(ClientId, u64, Vec<u8>)>,
    /// Every command a client submitted without a session of its own (the
    /// member it asked numbers it in the member's session).
    proposed_sessionless: BTreeSet<Vec<u8>>,
    /// The value digest every replica must apply at each slot.
    canonical: BTreeMap<Slot, u64>,
    /// Per node, the last slot it applied (or restored from a snapshot).
    last_applied: BTreeMap<NodeId, Slot>,
    /// Per node and slot, the highest ballot it accepted durably (synced):
    /// a restart must find at least that.
    durable: BTreeMap<NodeId, BTreeMap<Slot, Ballot>>,
    /// Per node, the highest promise it made durable (its own ballots
    /// included): no message may reveal a higher one, and no restart may
    /// come back with a lower one.
    promised: BTreeMap<NodeId, Ballot>,
    /// What broke.
    pub violations: Vec<Violation>,
}

/// Bytes a member puts before a command in the log: the leader's time stamp.
pub const STAMP_BYTES: usize = 8;

/// A command the members propose of their own accord (a new leader's
/// lease renewal, a lease expiry), not on a client's behalf.
fn member_command(body: &[u8]) -> bool {
    matches!(
        kv::Command::decode(body),
        Ok(kv::Command::LeaseRenewAll | kv::Command::LeaseExpire(_))
    )
}

/// A digest of a value, for comparing applied sequences cheaply.
pub fn value_digest(value: &Value) -> u64 {
    let mut h = Fnv64::default();
    match value {
        Value::Noop => h.put(&[0]),
        Value::Reconfigure(change) => {
            h.put(&[2]);
            for id in change.membership.voters.iter() {
                h.put(&id.to_le_bytes());
            }
            h.put(&[3]);
            for id in change.membership.learners.iter() {
                h.put(&id.to_le_bytes());
            }
            let c = &change.command;
            h.put(&c.client.to_le_bytes());
            h.put(&c.seq.to_le_bytes());
            h.put(&c.payload);
        }
        Value::Batch(commands) => {
            for c in commands.iter() {
                h.put(&c.client.to_le_bytes());
                h.put(&c.seq.to_le_bytes());
                h.put(&c.payload);
            }
        }
    }
    h.0
}

impl Oracle {
    /// An oracle for a cluster first started with voters 1 to `members`.
    pub fn new(members: usize) -> Self {
        let mut configs = BTreeMap::new();
        configs.insert(1, (1..=members as NodeId).collect());
        Oracle {
            configs,
            ..Oracle::default()
        }
    }

    /// The voters in force for `slot`.
    pub fn voters_at(&self, slot: Slot) -> &BTreeSet<NodeId> {
        static NONE: BTreeSet<NodeId> = BTreeSet::new();
        self.configs
            .range(..=slot)
            .next_back()
            .map_or(&NONE, |(_, voters)| voters)
    }

    /// Whether `voters` hold a quorum of the voters in force for `slot`.
    fn is_quorum(&self, slot: Slot, voters: &BTreeSet<NodeId>) -> bool {
        let config = self.voters_at(slot);
        voters.intersection(config).count() > config.len() / 2
    }

    /// Whether a quorum of `slot`'s voters accepted `value` at one ballot.
    fn certified(&self, slot: Slot, value: &Value) -> bool {
        self.votes
            .range((slot, Ballot::ZERO)..=(slot, Ballot::new(u64::MAX, u64::MAX)))
            .flat_map(|(_, values)| values)
            .any(|(v, voters)| v == value && self.is_quorum(slot, voters))
    }

    /// A configuration change was chosen in `slot`: its voters are in force
    /// after it. What was taken as chosen after it by the old voters alone
    /// is judged again by the new ones.
    fn config_chosen(&mut self, time_us: u64, slot: Slot, voters: BTreeSet<NodeId>) {
        if self.configs.get(&(slot + 1)) == Some(&voters) {
            return;
        }
        self.configs.insert(slot + 1, voters);
        let later: Vec<Slot> = self.chosen.range(slot + 1..).map(|(s, _)| *s).collect();
        for s in later {
            if let Some(value) = self.chosen.get(&s)
                && !self.certified(s, value)
            {
                self.chosen.remove(&s);
            }
        }
        let votes: Vec<(Slot, Ballot, Value)> = self
            .votes
            .range((slot + 1, Ballot::ZERO)..)
            .flat_map(|((s, b), values)| values.iter().map(move |(v, _)| (*s, *b, v.clone())))
            .collect();
        for (s, b, v) in votes {
            self.judge(time_us, s, b, &v);
        }
    }

    fn violate(&mut self, time_us: u64, what: String) {
        self.violations.push(Violation { time_us, what });
    }

    /// `node`'s acceptance of `slot` at `ballot` was synced to its disk
    /// (which promises `ballot` too: an acceptor accepts only at or above
    /// its promise).
    pub fn synced(&mut self, node: NodeId, slot: Slot, ballot: Ballot) {
        self.synced_promise(node, ballot);
        let highest = self
            .durable
            .entry(node)
            .or_default()
            .entry(slot)
            .or_insert(ballot);
        *highest = (*highest).max(ballot);
    }

    /// `node`'s promise of `ballot` (or its own new ballot) was synced.
    pub fn synced_promise(&mut self, node: NodeId, ballot: Ballot) {
        let highest = self.promised.entry(node).or_insert(ballot);
        *highest = (*highest).max(ballot);
    }

    /// `node` sends `message`: what it reveals (a promise, a ballot of its
    /// own, an acceptance) must already be durable there. An acceptor
    /// acknowledges an `Accept` for a slot in its snapshot (`trimmed`) without
    /// persisting anything: the slot is chosen and applied there.
    pub fn sent(&mut self, time_us: u64, node: NodeId, message: &Message, trimmed: Slot) {
        let promised = self.promised.get(&node).copied().unwrap_or(Ballot::ZERO);
        let what = match message {
            Message::Prepare { ballot, .. } if *ballot > promised => "its Prepare",
            Message::Promise { ballot, .. } if *ballot > promised => "its Promise",
            Message::Accepted { ballot, slot }
                if *slot > trimmed
                    && self
                        .durable
                        .get(&node)
                        .and_then(|slots| slots.get(slot))
                        .is_none_or(|b| b < ballot) =>
            {
                "its Accepted"
            }
            _ => return,
        };
        self.violate(
            time_us,
            format!("n{node} sent {what} before it was durable: {message:?}"),
        );
    }

    /// `node` restarted promising `promised`: never less than it had made
    /// durable before.
    pub fn restarted_promise(&mut self, time_us: u64, node: NodeId, promised: Ballot) {
        if let Some(&durable) = self.promised.get(&node)
            && promised < durable
        {
            self.violate(
                time_us,
                format!("n{node} restarted promising {promised}, below the {durable} it had made durable"),
            );
        }
    }

    /// A node restarted with `accepted` from its disk, whose snapshot
    /// covers up to `snapshot_slot`: every acceptance it had synced after
    /// that must be there, at its ballot or a later one. (Persist before you
    /// promise is worth nothing if the log loses what was persisted.)
    pub fn recovered(
        &mut self,
        time_us: u64,
        node: NodeId,
        snapshot_slot: Slot,
        accepted: &BTreeMap<Slot, (Ballot, Value)>,
    ) {
        let Some(durable) = self.durable.get_mut(&node) else {
            return;
        };
        *durable = durable.split_off(&(snapshot_slot + 1));
        let lost: Vec<(Slot, Ballot)> = durable
            .iter()
            .filter(|(slot, ballot)| accepted.get(slot).is_none_or(|(b, _)| b < ballot))
            .map(|(slot, ballot)| (*slot, *ballot))
            .collect();
        for (slot, ballot) in lost {
            self.violate(
                time_us,
                format!("n{node} restarted without its synced acceptance of slot {slot} at ballot {ballot}"),
            );
        }
    }

    /// Slots known chosen so far.
    pub fn chosen_count(&self) -> usize {
        self.chosen.len()
    }

    /// The most commands one chosen slot carries.
    pub fn largest_batch(&self) -> usize {
        self.chosen
            .values()
            .map(|value| value.commands().len())
            .max()
            .unwrap_or(0)
    }

    /// A client submitted this command (its body: the log entry holds it
    /// after the leader's [`STAMP_BYTES`] time stamp).
    pub fn proposed(&mut self, client: ClientId, seq: u64, body: &[u8]) {
        self.proposed.insert((client, seq, body.to_vec()));
    }

    /// A client submitted this command through a member's session, as
    /// etcd's clients do: any session may carry it.
    pub fn proposed_sessionless(&mut self, body: &[u8]) {
        self.proposed_sessionless.insert(body.to_vec());
    }

    /// `node` made its acceptance of `value` for `slot` at `ballot` durable.
    pub fn accepted(
        &mut self,
        time_us: u64,
        node: NodeId,
        slot: Slot,
        ballot: Ballot,
        value: &Value,
    ) {
        let entry = self.votes.entry((slot, ballot)).or_default();
        if entry.iter().any(|(v, _)| v != value) {
            self.violations.push(Violation {
                time_us,
                what: format!("slot {slot}: two different values accepted at ballot {ballot}"),
            });
        }
        let voters = match entry.iter_mut().find(|(v, _)| v == value) {
            Some((_, voters)) => voters,
            None => {
                entry.push((value.clone(), BTreeSet::new()));
                let last = entry.len() - 1;
                &mut entry[last].1
            }
        };
        voters.insert(node);
        self.judge(time_us, slot, ballot, value);
    }

    /// Whether the votes for `value` in `slot` at `ballot` choose it, and
    /// if so, whether that agrees with what was chosen there before.
    fn judge(&mut self, time_us: u64, slot: Slot, ballot: Ballot, value: &Value) {
        let chooses = self.votes.get(&(slot, ballot)).is_some_and(|values| {
            values
                .iter()
                .any(|(v, voters)| v == value && self.is_quorum(slot, voters))
        });
        if !chooses {
            return;
        }
        match self.chosen.get(&slot) {
            Some(existing) if existing != value => {
                let what = format!(
                    "slot {slot} chosen twice: {} and then {} at ballot {ballot}",
                    short_value(existing),
                    short_value(value)
                );
                self.violate(time_us, what);
            }
            Some(_) => {}
            None => {
                if let Value::Batch(commands) = value {
                    for c in commands.iter() {
                        let body = c.payload.get(STAMP_BYTES..).unwrap_or_default();
                        if !member_command(body)
                            && !self.proposed.contains(&(c.client, c.seq, body.to_vec()))
                            && !self.proposed_sessionless.contains(body)
                        {
                            let what = format!(
                                "slot {slot} chose a command no client proposed: client {} seq {}",
                                c.client, c.seq
                            );
                            self.violate(time_us, what);
                        }
                    }
                }
                self.chosen.insert(slot, value.clone());
                if let Some(next) = value.membership() {
                    self.config_chosen(time_us, slot, next.voters.clone());
                }
            }
        }
    }

    /// `node` (re)started from a snapshot covering slots up to `slot` (0 if
    /// none): its applies resume after it.
    pub fn restarted(&mut self, node: NodeId, slot: Slot) {
        self.last_applied.insert(node, slot);
    }

    /// `node` installed a snapshot received from a peer, up to `slot`.
    pub fn installed_snapshot(&mut self, node: NodeId, slot: Slot) {
        self.last_applied.insert(node, slot);
    }

    /// `node` applied `value` for `slot`: it must be the chosen value, the
    /// slot must follow the node's previous one, and every replica must
    /// apply the same value there.
    pub fn applied(&mut self, time_us: u64, node: NodeId, slot: Slot, value: &Value) {
        match self.chosen.get(&slot) {
            Some(chosen) if chosen == value => {}
            Some(_) => self.violate(
                time_us,
                format!("n{node} applied slot {slot} with a value that was not chosen"),
            ),
            None => {
                let voters = self.voters_at(slot).clone();
                self.violate(
                    time_us,
                    format!(
                        "n{node} applied slot {slot} before any value was chosen for it \
                         by a quorum of its voters {voters:?}"
                    ),
                )
            }
        }
        if let Some(next) = value.membership() {
            self.config_chosen(time_us, slot, next.voters.clone());
        }
        let last = self.last_applied.insert(node, slot).unwrap_or(0);
        if slot != last + 1 {
            self.violate(
                time_us,
                format!("n{node} applied slot {slot} right after slot {last}: out of order"),
            );
        }
        let digest = value_digest(value);
        match self.canonical.get(&slot) {
            None => {
                self.canonical.insert(slot, digest);
            }
            Some(expected) if *expected == digest => {}
            Some(_) => self.violate(
                time_us,
                format!("replicas' applied logs differ at slot {slot} (n{node} differs)"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paxos::multi::Command;

    fn batch(seq: u64) -> Value {
        Value::Batch(
            vec![Command {
                client: 1,
                seq,
                // A time stamp, then the body.
                payload: [[0; STAMP_BYTES].as_slice(), &[seq as u8]].concat(),
            }]
            .into(),
        )
    }

    #[test]
    fn catches_a_restart_that_lost_a_synced_acceptance() {
        let mut o = Oracle::new(3);
        let (b1, b2) = (Ballot::new(1, 1), Ballot::new(2, 2));
        o.synced(2, 5, b1);
        o.synced(2, 6, b2);
        let mut disk = BTreeMap::new();
        disk.insert(5, (b1, batch(1)));
        disk.insert(6, (b2, batch(2)));
        o.recovered(10, 2, 0, &disk);
        assert!(o.violations.is_empty(), "{:?}", o.violations);
        // A broken log: slot 6 gone, slot 5 back at an older ballot.
        disk.remove(&6);
        disk.insert(5, (Ballot::new(0, 3), batch(1)));
        o.recovered(20, 2, 0, &disk);
        assert_eq!(o.violations.len(), 2, "{:?}", o.violations);
        // A snapshot covering them forgives both.
        o.recovered(30, 2, 6, &BTreeMap::new());
        assert_eq!(o.violations.len(), 2);
    }

    #[test]
    fn catches_two_values_chosen_for_one_slot() {
        let mut o = Oracle::new(3);
        o.proposed(1, 1, &[1]);
        o.proposed(1, 2, &[2]);
        let b1 = Ballot::new(1, 1);
        let b2 = Ballot::new(2, 2);
        o.accepted(0, 1, 5, b1, &batch(1));
        o.accepted(0, 2, 5, b1, &batch(1));
        assert!(o.violations.is_empty());
        o.accepted(1, 2, 5, b2, &batch(2));
        o.accepted(1, 3, 5, b2, &batch(2));
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);
    }

    #[test]
    fn catches_an_invented_command_and_a_diverging_apply() {
        let mut o = Oracle::new(3);
        let b = Ballot::new(1, 1);
        o.accepted(0, 1, 1, b, &batch(7));
        o.accepted(0, 2, 1, b, &batch(7));
        assert_eq!(o.violations.len(), 1, "never proposed");
        o.proposed(1, 8, &[8]);
        o.accepted(0, 1, 2, b, &batch(8));
        o.accepted(0, 2, 2, b, &batch(8));
        o.applied(0, 1, 1, &batch(7));
        o.applied(0, 2, 2, &batch(8));
        assert_eq!(o.violations.len(), 2, "{:?}", o.violations);
    }

    fn change(voters: &[NodeId]) -> Value {
        Value::Reconfigure(std::sync::Arc::new(paxos::multi::Reconfiguration {
            membership: paxos::multi::Membership::of_voters(voters.iter().copied()),
            command: Command {
                client: 9,
                seq: 1,
                payload: vec![0; STAMP_BYTES],
            },
        }))
    }

    #[test]
    fn judges_each_slot_by_the_voters_in_force_for_it() {
        let mut o = Oracle::new(3);
        o.proposed(1, 1, &[1]);
        o.proposed(1, 2, &[2]);
        let b = Ballot::new(1, 1);
        // Slot 1 replaces voters 2 and 3 by 4 and 5.
        o.accepted(0, 1, 1, b, &change(&[1, 4, 5]));
        o.accepted(0, 2, 1, b, &change(&[1, 4, 5]));
        o.applied(0, 1, 1, &change(&[1, 4, 5]));
        assert!(o.violations.is_empty(), "{:?}", o.violations);
        assert_eq!(o.voters_at(2), &[1, 4, 5].into_iter().collect());
        // Slot 2 accepted by the old voters 2 and 3 only: not chosen.
        o.accepted(0, 2, 2, b, &batch(1));
        o.accepted(0, 3, 2, b, &batch(1));
        o.applied(0, 1, 2, &batch(1));
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);
        assert!(o.violations[0].what.contains("quorum of its voters"));
        // By 4 and 5 it is.
        o.accepted(0, 4, 3, b, &batch(2));
        o.accepted(0, 5, 3, b, &batch(2));
        o.applied(0, 1, 3, &batch(2));
        assert_eq!(o.violations.len(), 1, "{:?}", o.violations);
    }
}
