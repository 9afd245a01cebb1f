//! Three members wired by hand: every message is held until the test lets
//! it through, and every `Ready` is carried out stage by stage, with the
//! persist-before-send rule checked on every message that leaves.

use std::collections::{BTreeSet, HashMap};

use kv::{Limits, PutRequest, RangeRequest, Store};
use member::{Clock, Config, Effect, Member, MemberError, PeerMessage, Query, Reply, Request};
use paxos::multi::{Config as PaxosConfig, Envelope, Message, Record, Replica};
use paxos::{Ballot, NodeId};

/// A message in flight.
#[derive(Clone, Debug)]
enum Wire {
    Paxos(Envelope),
    Peer {
        from: NodeId,
        to: NodeId,
        message: PeerMessage,
    },
}

impl Wire {
    fn to(&self) -> NodeId {
        match self {
            Wire::Paxos(e) => e.to,
            Wire::Peer { to, .. } => *to,
        }
    }
    fn from(&self) -> NodeId {
        match self {
            Wire::Paxos(e) => e.from,
            Wire::Peer { from, .. } => *from,
        }
    }
}

/// What each member has made durable, as its runtime would have it.
#[derive(Default)]
struct Disk {
    promised: Ballot,
    accepted: BTreeSet<(u64, Ballot)>,
}

struct Cluster {
    members: HashMap<NodeId, Member<u64>>,
    disks: HashMap<NodeId, Disk>,
    wire: Vec<Wire>,
    replies: HashMap<u64, Result<Reply, MemberError>>,
    now_ms: u64,
    random: u64,
}

impl Cluster {
    fn new() -> Self {
        let ids = vec![1, 2, 3];
        let members = ids
            .iter()
            .map(|&id| {
                let replica = Replica::new(PaxosConfig::new(id, ids.clone()));
                let config = Config {
                    seed: id,
                    ..Config::default()
                };
                (
                    id,
                    Member::new(replica, Store::new(Limits::default()), config),
                )
            })
            .collect();
        Cluster {
            members,
            disks: ids.iter().map(|&id| (id, Disk::default())).collect(),
            wire: Vec::new(),
            replies: HashMap::new(),
            now_ms: 0,
            random: 7,
        }
    }

    fn member(&mut self, id: NodeId) -> &mut Member<u64> {
        let clock = Clock {
            mono_ms: self.now_ms,
        };
        let m = self.members.get_mut(&id).expect("a member of the cluster");
        m.set_clock(clock);
        m
    }

    /// Carries out `id`'s `Ready`, checking that nothing that reveals a
    /// promise or an acceptance leaves before it is durable.
    fn ready(&mut self, id: NodeId) {
        let ready = self.member(id).ready();
        for stage in ready.stages {
            for effect in stage.now {
                self.effect(id, effect);
            }
            let disk = self.disks.get_mut(&id).expect("a disk per member");
            if stage.sync {
                for record in &stage.records {
                    match record {
                        Record::Promise(b) => disk.promised = disk.promised.max(*b),
                        Record::Accept { slot, ballot, .. } => {
                            disk.accepted.insert((*slot, *ballot));
                        }
                        Record::Commit { .. } => {}
                    }
                }
            } else {
                assert!(
                    stage.records.iter().all(|r| !r.is_barrier()),
                    "a promise or an acceptance in a stage without a sync"
                );
            }
            for effect in stage.after {
                self.effect(id, effect);
            }
        }
        if let Some(checkpoint) = ready.checkpoint {
            drop(checkpoint);
            self.member(id).snapshot_saved();
        }
    }

    fn effect(&mut self, id: NodeId, effect: Effect<u64>) {
        match effect {
            Effect::Send(envelope) => {
                let disk = &self.disks[&id];
                match &envelope.message {
                    Message::Prepare { ballot, .. } | Message::Promise { ballot, .. } => {
                        assert!(
                            disk.promised >= *ballot,
                            "n{id} sent {envelope:?} before its ballot was durable"
                        )
                    }
                    Message::Accepted { ballot, slot } => assert!(
                        disk.accepted.contains(&(*slot, *ballot)),
                        "n{id} sent {envelope:?} before its acceptance was durable"
                    ),
                    _ => {}
                }
                self.wire.push(Wire::Paxos(envelope));
            }
            Effect::Peer { to, message } => self.wire.push(Wire::Peer {
                from: id,
                to,
                message,
            }),
            Effect::Reply { token, result } => {
                assert!(
                    self.replies.insert(token, result).is_none(),
                    "request {token} answered twice"
                );
            }
            Effect::Watch { .. } | Effect::Applied { .. } | Effect::SendSnapshot { .. } => {}
        }
    }

    /// Delivers the messages in flight that `pass` lets through (the rest
    /// stay in flight), until none is left that it lets through.
    fn deliver(&mut self, pass: impl Fn(&Wire) -> bool) {
        for _ in 0..10_000 {
            let Some(i) = self.wire.iter().position(&pass) else {
                return;
            };
            let wire = self.wire.remove(i);
            let to = wire.to();
            match wire {
                Wire::Paxos(envelope) => self.member(to).step(envelope),
                Wire::Peer { from, message, .. } => self.member(to).receive(from, message),
            }
            self.ready(to);
        }
        panic!("the messages never settled");
    }

    /// One tick on every member `up` lets through, then every message
    /// delivered that `pass` lets through (the rest are lost).
    fn tick_some(&mut self, up: impl Fn(NodeId) -> bool, pass: impl Fn(&Wire) -> bool + Copy) {
        self.now_ms += 10;
        for id in [1, 2, 3].into_iter().filter(|id| up(*id)) {
            self.random = self
                .random
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1);
            let random = self.random;
            self.member(id).tick(random);
            self.ready(id);
        }
        self.deliver(pass);
    }

    /// One tick everywhere, then every message delivered that `pass` lets
    /// through.
    fn tick(&mut self, pass: impl Fn(&Wire) -> bool + Copy) {
        self.tick_some(|_| true, pass);
    }

    /// One tick with `dead` down: nothing from it or to it, ever.
    fn tick_without(&mut self, dead: NodeId) {
        let alive = move |w: &Wire| w.from() != dead && w.to() != dead;
        self.tick_some(|id| id != dead, alive);
        self.wire.retain(alive);
    }

    fn leader(&self) -> Option<NodeId> {
        self.members
            .values()
            .find(|m| m.replica().is_leader())
            .map(|m| m.id())
    }

    fn elect(&mut self, pass: impl Fn(&Wire) -> bool + Copy) -> NodeId {
        for _ in 0..1_000 {
            self.tick(pass);
            if let Some(leader) = self.leader() {
                // Its first slot (the lease renewal) decided everywhere.
                for _ in 0..5 {
                    self.tick(pass);
                }
                return leader;
            }
        }
        panic!("no leader elected");
    }

    fn request(&mut self, at: NodeId, token: u64, request: Request) {
        self.member(at).request(token, request);
        self.ready(at);
    }
}

fn put(key: &str, value: &str) -> Request {
    Request::Propose(kv::Command::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    }))
}

fn get(key: &str) -> Request {
    Request::Read(Query::Range(RangeRequest {
        key: key.into(),
        ..RangeRequest::default()
    }))
}

fn value_of(reply: &Result<Reply, MemberError>) -> Option<Vec<u8>> {
    match reply {
        Ok(Reply::Range(r)) => r.kvs.first().map(|kv| kv.value.clone()),
        other => panic!("not a range answer: {other:?}"),
    }
}

fn all(_: &Wire) -> bool {
    true
}

#[test]
fn a_write_at_a_follower_goes_through_the_leader_and_is_answered_where_it_came_in() {
    let mut c = Cluster::new();
    let leader = c.elect(all);
    let follower = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(1);
    c.request(follower, 1, put("k", "v1"));
    assert!(
        c.wire.iter().any(|w| matches!(w, Wire::Peer { to, message: PeerMessage::Propose { .. }, .. } if *to == leader)),
        "the follower hands the command to the leader"
    );
    c.deliver(all);
    for _ in 0..3 {
        c.tick(all);
    }
    match c.replies.get(&1) {
        Some(Ok(Reply::Command(kv::Response::Put(_)))) => {}
        other => panic!("the put was not answered at the follower: {other:?}"),
    }
    for id in [1, 2, 3] {
        let store = c.members[&id].store();
        let got = store
            .range(&RangeRequest {
                key: b"k".to_vec(),
                ..RangeRequest::default()
            })
            .map(|r| r.kvs.first().map(|kv| kv.value.clone()));
        assert_eq!(got, Ok(Some(b"v1".to_vec())), "n{id}");
    }
}

#[test]
fn a_follower_serves_a_linearizable_read_only_once_its_store_reached_the_read_index() {
    let mut c = Cluster::new();
    let leader = c.elect(all);
    let lagging = [1, 2, 3].into_iter().find(|id| *id != leader).unwrap_or(1);
    // The lagging member hears no Paxos message for now: it votes in
    // nothing and learns no decision.
    let cut = move |w: &Wire| !(matches!(w, Wire::Paxos(_)) && w.to() == lagging);
    c.request(leader, 1, put("k", "new"));
    c.deliver(cut);
    c.tick(cut);
    assert!(
        matches!(c.replies.get(&1), Some(Ok(_))),
        "{:?}",
        c.replies.get(&1)
    );

    c.request(lagging, 2, get("k"));
    c.deliver(cut);
    for _ in 0..3 {
        c.tick(cut);
    }
    assert!(
        !c.replies.contains_key(&2),
        "answered before the store applied the leader's index: {:?}",
        c.replies.get(&2)
    );
    c.deliver(all);
    for _ in 0..3 {
        c.tick(all);
    }
    assert_eq!(
        c.replies.get(&2).map(value_of),
        Some(Some(b"new".to_vec())),
        "the read sees the write acknowledged before it began"
    );
}

#[test]
fn a_command_handed_to_a_leader_that_dies_goes_to_the_next_one_and_applies_once() {
    let mut c = Cluster::new();
    let first = c.elect(all);
    let asker = [1, 2, 3].into_iter().find(|id| *id != first).unwrap_or(1);
    let revision_before = c.members[&asker].store().revision();
    c.request(asker, 1, put("k", "once"));
    // The old leader takes the command and proposes it, then dies: nothing
    // more from it or to it.
    let to_first = move |w: &Wire| w.to() == first;
    c.deliver(to_first);
    c.wire.retain(|w| w.from() != first && w.to() != first);
    let mut next = None;
    for _ in 0..2_000 {
        c.tick_without(first);
        next = [1, 2, 3]
            .into_iter()
            .find(|id| *id != first && c.members[id].replica().is_leader());
        if next.is_some() && c.replies.contains_key(&1) {
            break;
        }
    }
    assert!(next.is_some(), "a new leader among the two left");
    match c.replies.get(&1) {
        Some(Ok(Reply::Command(kv::Response::Put(_)))) => {}
        other => panic!("the put was not answered: {other:?}"),
    }
    let store = c.members[&asker].store();
    // The new leader's lease renewal, and the put: once.
    let puts = store.revision() - revision_before;
    assert_eq!(
        puts,
        1,
        "the put applied once (revision {revision_before} -> {})",
        store.revision()
    );
}

fn key_present(c: &Cluster, at: NodeId, key: &str) -> bool {
    c.members[&at]
        .store()
        .range(&RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        })
        .map(|r| !r.kvs.is_empty())
        .unwrap_or(false)
}

#[test]
fn a_lease_is_measured_by_the_monotonic_clock_and_outlives_a_leader_change_by_its_ttl_at_most() {
    let mut c = Cluster::new();
    let first = c.elect(all);
    c.request(
        first,
        1,
        Request::Propose(kv::Command::LeaseGrant(kv::LeaseGrantRequest {
            ttl: 5,
            id: 7,
        })),
    );
    c.request(
        first,
        2,
        Request::Propose(kv::Command::Put(PutRequest {
            key: b"lock".to_vec(),
            value: b"held".to_vec(),
            lease: 7,
            ..PutRequest::default()
        })),
    );
    for _ in 0..5 {
        c.tick(all);
    }
    assert!(
        matches!(c.replies.get(&2), Some(Ok(_))),
        "{:?}",
        c.replies.get(&2)
    );
    // 3 s on: the key is there everywhere.
    while c.now_ms < 3_000 {
        c.tick(all);
    }
    let survivor = [1, 2, 3].into_iter().find(|id| *id != first).unwrap_or(1);
    assert!(key_present(&c, survivor, "lock"));
    // The leader dies; the next one renews every lease from its own
    // measure of the replicated time, which went on from the stamps.
    c.wire.retain(|w| w.from() != first && w.to() != first);
    let mut next = None;
    while next.is_none() {
        assert!(c.now_ms < 20_000, "no new leader");
        c.tick_without(first);
        next = [1, 2, 3]
            .into_iter()
            .find(|id| *id != first && c.members[id].replica().is_leader());
    }
    let Some(next) = next else { unreachable!() };
    let elected_at = c.now_ms;
    let replicated_then = c.members[&next].now_ms();
    assert!(
        replicated_then >= 3_000,
        "the new leader's replicated time went on from the stamps: {replicated_then} ms"
    );
    let mut gone_at = None;
    while c.now_ms < elected_at + 8_000 {
        c.tick_without(first);
        if gone_at.is_none() && !key_present(&c, next, "lock") {
            gone_at = Some(c.now_ms);
        }
    }
    let gone_at = gone_at.expect("the lease expired under the new leader");
    let after = gone_at - elected_at;
    // A fresh TTL of 5 s from the renewal: not before, and within a tick
    // or two and the expiry's own round trip after.
    assert!(
        (5_000..5_500).contains(&after),
        "the key went {after} ms after the new leader was elected"
    );
}
