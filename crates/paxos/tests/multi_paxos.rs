//! Multi-Paxos replicas driven by hand through a lossless FIFO network:
//! election, phase-1 value adoption, ordered apply, persist-before-send,
//! read-index, catch-up, restart, and hostile messages.

use std::collections::VecDeque;

use paxos::Ballot;
use paxos::multi::{
    AcceptedEntry, Command, Config, Durable, Envelope, Message, Output, Record, Replica, Role,
    Slot, Value,
};

/// A cluster whose network delivers in order unless told to drop.
struct Cluster {
    replicas: Vec<Replica>,
    disks: Vec<Durable>,
    wire: VecDeque<Envelope>,
    applied: Vec<Vec<(Slot, Value)>>,
    ready_reads: Vec<(u64, u64)>,
    down: Vec<bool>,
}

impl Cluster {
    fn new(n: u64) -> Self {
        let members: Vec<u64> = (1..=n).collect();
        Cluster {
            replicas: members
                .iter()
                .map(|&id| Replica::new(Config::new(id, members.clone())))
                .collect(),
            disks: vec![Durable::default(); n as usize],
            wire: VecDeque::new(),
            applied: vec![Vec::new(); n as usize],
            ready_reads: Vec::new(),
            down: vec![false; n as usize],
        }
    }

    fn collect(&mut self, i: usize) {
        let mut persisted_since_send = true;
        for output in self.replicas[i].take_outputs() {
            match output {
                Output::Persist(r) => {
                    self.disks[i].apply(&r);
                    persisted_since_send = true;
                }
                Output::Send(e) | Output::Announce(e) => {
                    assert!(persisted_since_send);
                    self.wire.push_back(e);
                }
                Output::Apply { slot, value } => self.applied[i].push((slot, value)),
                Output::ReadReady { read, .. } => self.ready_reads.push((i as u64 + 1, read)),
                _ => {}
            }
        }
    }

    /// Delivers everything on the wire, dropping what goes to a down node.
    fn settle(&mut self) {
        let mut budget = 100_000;
        while let Some(e) = self.wire.pop_front() {
            budget -= 1;
            assert!(budget > 0, "messages never settle");
            let to = (e.to - 1) as usize;
            if self.down[to] || self.down[(e.from - 1) as usize] {
                continue;
            }
            self.replicas[to].step(e);
            self.collect(to);
        }
    }

    fn tick_all(&mut self, ticks: u32) {
        for t in 0..ticks {
            for i in 0..self.replicas.len() {
                if !self.down[i] {
                    // Distinct randomness per node so timeouts differ.
                    self.replicas[i].tick((i as u64 + 1) * 7 + u64::from(t) * 13);
                    self.collect(i);
                }
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<usize> {
        (0..self.replicas.len()).find(|&i| !self.down[i] && self.replicas[i].is_leader())
    }

    fn propose(&mut self, i: usize, client: u64, seq: u64) {
        self.replicas[i]
            .propose(Command {
                client,
                seq,
                payload: vec![seq as u8],
            })
            .expect("the leader takes proposals");
        self.collect(i);
        self.settle();
    }
}

#[test]
fn a_leader_is_elected_and_commands_apply_in_order_everywhere() {
    let mut c = Cluster::new(3);
    c.tick_all(40);
    let leader = c.leader().expect("a leader after 40 ticks");
    for seq in 1..=20 {
        c.propose(leader, 7, seq);
    }
    c.tick_all(4);
    for i in 0..3 {
        let slots: Vec<Slot> = c.applied[i].iter().map(|(s, _)| *s).collect();
        assert_eq!(
            slots,
            (1..=slots.len() as u64).collect::<Vec<_>>(),
            "in order"
        );
        assert_eq!(
            c.applied[i], c.applied[leader],
            "replica {i} applied the same log"
        );
    }
    let commands: usize = c.applied[leader]
        .iter()
        .map(|(_, v)| v.commands().len())
        .sum();
    assert_eq!(commands, 20);
}

#[test]
fn commands_queued_together_share_one_slot() {
    let mut c = Cluster::new(3);
    c.tick_all(40);
    let leader = c.leader().expect("a leader after 40 ticks");
    let before = c.applied[leader].len();
    for seq in 1..=10 {
        c.replicas[leader]
            .enqueue(Command {
                client: 9,
                seq,
                payload: vec![seq as u8],
            })
            .expect("the leader queues commands");
    }
    c.collect(leader);
    assert!(c.wire.is_empty(), "queued commands wait for fill");
    c.replicas[leader].fill();
    c.collect(leader);
    c.settle();
    let slots = &c.applied[leader][before..];
    assert_eq!(slots.len(), 1, "ten commands, one slot: {slots:?}");
    match &slots[0].1 {
        Value::Batch(batch) => {
            let seqs: Vec<u64> = batch.iter().map(|c| c.seq).collect();
            assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "in queue order");
        }
        other => panic!("a batch, not {other:?}"),
    }
    for i in 0..3 {
        assert_eq!(c.applied[i], c.applied[leader], "replica {i}");
    }
}

#[test]
fn a_follower_told_a_value_it_accepted_keeps_one_copy() {
    let mut r = Replica::new(Config::new(2, vec![1, 2, 3]));
    let command = |seq| Command {
        client: 7,
        seq,
        payload: vec![0xAB; 300],
    };
    let accepted: std::sync::Arc<[Command]> = vec![command(1), command(2)].into();
    r.step(Envelope {
        from: 1,
        to: 2,
        message: Message::Accept {
            ballot: Ballot::new(1, 1),
            slot: 1,
            value: Value::Batch(accepted.clone()),
        },
    });
    r.take_outputs();
    // The same commands, decoded anew from a Commit.
    let told: std::sync::Arc<[Command]> = vec![command(1), command(2)].into();
    r.step(Envelope {
        from: 1,
        to: 2,
        message: Message::Commit {
            slot: 1,
            value: Value::Batch(told.clone()),
        },
    });
    let applied = r
        .take_outputs()
        .into_iter()
        .find_map(|o| match o {
            Output::Apply {
                slot: 1,
                value: Value::Batch(batch),
            } => Some(batch),
            _ => None,
        })
        .expect("slot 1 applies");
    assert_eq!(applied, told, "the chosen commands");
    assert!(
        std::sync::Arc::ptr_eq(&applied, &accepted),
        "the accepted copy is kept, the told one dropped"
    );
}

#[test]
fn an_acceptor_persists_before_it_answers() {
    let mut r = Replica::new(Config::new(2, vec![1, 2, 3]));
    r.step(Envelope {
        from: 1,
        to: 2,
        message: Message::Prepare {
            ballot: Ballot::new(1, 1),
            first_slot: 1,
        },
    });
    let out = r.take_outputs();
    assert!(matches!(out[0], Output::Persist(Record::Promise(b)) if b == Ballot::new(1, 1)));
    assert!(matches!(&out[1], Output::Send(e) if matches!(e.message, Message::Promise { .. })));
    r.step(Envelope {
        from: 1,
        to: 2,
        message: Message::Accept {
            ballot: Ballot::new(1, 1),
            slot: 1,
            value: Value::Noop,
        },
    });
    let out = r.take_outputs();
    assert!(matches!(
        out[0],
        Output::Persist(Record::Accept { slot: 1, .. })
    ));
    assert!(
        matches!(&out[1], Output::Send(e) if matches!(e.message, Message::Accepted { slot: 1, .. }))
    );
    // A lower ballot is refused with the promise it lost to.
    r.step(Envelope {
        from: 3,
        to: 2,
        message: Message::Prepare {
            ballot: Ballot::new(0, 3),
            first_slot: 1,
        },
    });
    let out = r.take_outputs();
    assert_eq!(
        out,
        vec![Output::Send(Envelope {
            from: 2,
            to: 3,
            message: Message::Nack {
                ballot: Ballot::new(0, 3),
                higher: Ballot::new(1, 1)
            }
        })]
    );
}

#[test]
fn a_new_leader_adopts_the_highest_ballot_value_and_fills_holes_with_noop() {
    // Node 1 of five stands; its own promise and those of nodes 2 and 3
    // make the quorum, and 2 and 3 report acceptances from earlier leaders.
    let mut r = Replica::new(Config::new(1, vec![1, 2, 3, 4, 5]));
    // It has seen ballot 2.3 go by, so it stands above it.
    r.step(Envelope {
        from: 3,
        to: 1,
        message: Message::Heartbeat {
            ballot: Ballot::new(2, 3),
            commit_index: 0,
            round: 1,
        },
    });
    for t in 0..100 {
        r.tick(t);
        if r.role() == Role::Candidate {
            break;
        }
    }
    let ballot = r.ballot().expect("standing");
    r.take_outputs();
    let v = |seq| {
        Value::Batch(
            vec![Command {
                client: 1,
                seq,
                payload: vec![],
            }]
            .into(),
        )
    };
    let promise = |accepted| Message::Promise {
        ballot,
        accepted,
        snapshot_slot: 0,
    };
    r.step(Envelope {
        from: 2,
        to: 1,
        message: promise(vec![
            AcceptedEntry {
                slot: 1,
                ballot: Ballot::new(1, 2),
                value: v(1),
            },
            AcceptedEntry {
                slot: 3,
                ballot: Ballot::new(1, 3),
                value: v(3),
            },
        ]),
    });
    r.step(Envelope {
        from: 3,
        to: 1,
        message: promise(vec![AcceptedEntry {
            slot: 1,
            ballot: Ballot::new(2, 3),
            value: v(9),
        }]),
    });
    assert!(r.is_leader());
    // A late promise changes nothing.
    r.step(Envelope {
        from: 4,
        to: 1,
        message: promise(vec![AcceptedEntry {
            slot: 1,
            ballot: Ballot::new(2, 4),
            value: v(4),
        }]),
    });
    let accepts: Vec<(Slot, Value)> = r
        .take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Send(Envelope {
                to: 2,
                message: Message::Accept { slot, value, .. },
                ..
            }) => Some((slot, value)),
            _ => None,
        })
        .collect();
    assert_eq!(accepts, vec![(1, v(9)), (2, Value::Noop), (3, v(3))]);
}

#[test]
fn a_read_waits_for_a_quorum_round_and_never_touches_the_log() {
    let mut c = Cluster::new(3);
    c.tick_all(40);
    let leader = c.leader().expect("leader");
    c.propose(leader, 1, 1);
    let log_before: usize = c.applied[leader].len();
    c.down = vec![true; 3];
    c.down[leader] = false;
    c.replicas[leader].read(42).expect("leader reads");
    c.collect(leader);
    c.settle();
    assert!(
        c.ready_reads.is_empty(),
        "no quorum confirmed the ballot yet"
    );
    c.down = vec![false; 3];
    // The next heartbeat round reaches the followers.
    c.tick_all(3);
    assert_eq!(c.ready_reads, vec![(leader as u64 + 1, 42)]);
    assert_eq!(c.applied[leader].len(), log_before, "reads write nothing");
    // Followers refuse reads and name the leader.
    let follower = (leader + 1) % 3;
    assert!(c.replicas[follower].read(1).is_err());
}

#[test]
fn a_restarted_replica_keeps_its_promise_and_catches_up() {
    let mut c = Cluster::new(3);
    c.tick_all(40);
    let leader = c.leader().expect("leader");
    let lagger = (leader + 1) % 3;
    c.down[lagger] = true;
    for seq in 1..=150 {
        c.propose(leader, 1, seq);
    }
    let promised = c.replicas[lagger].promised();
    // Restart from its disk: same promise, nothing applied beyond the disk.
    let config = c.replicas[lagger].config().clone();
    c.replicas[lagger] = Replica::restart(config, c.disks[lagger].clone());
    c.applied[lagger].clear();
    c.collect(lagger);
    assert_eq!(c.replicas[lagger].promised(), promised);
    c.down[lagger] = false;
    c.tick_all(20);
    assert_eq!(
        c.applied[lagger], c.applied[leader],
        "caught up on every slot"
    );
    assert!(c.replicas[lagger].commit_index() >= 150);
}

#[test]
fn hostile_messages_are_ignored_without_panic() {
    // Replica 2 follows leader 1 at ballot 5.1.
    let (fid, lid) = (2, 1);
    let mut r = Replica::new(Config::new(fid, vec![1, 2, 3]));
    let leading = Ballot::new(5, lid);
    r.step(Envelope {
        from: lid,
        to: fid,
        message: Message::Prepare {
            ballot: leading,
            first_slot: 1,
        },
    });
    r.take_outputs();
    let hostile = vec![
        // A member using someone else's ballot.
        Envelope {
            from: lid,
            to: fid,
            message: Message::Prepare {
                ballot: Ballot::new(1_000, 3),
                first_slot: 1,
            },
        },
        // A far-future ballot.
        Envelope {
            from: lid,
            to: fid,
            message: Message::Accept {
                ballot: Ballot::new(u64::MAX, lid),
                slot: 1,
                value: Value::Noop,
            },
        },
        // Slots out of range.
        Envelope {
            from: lid,
            to: fid,
            message: Message::Accept {
                ballot: leading,
                slot: u64::MAX,
                value: Value::Noop,
            },
        },
        Envelope {
            from: lid,
            to: fid,
            message: Message::Commit {
                slot: 0,
                value: Value::Noop,
            },
        },
        Envelope {
            from: lid,
            to: fid,
            message: Message::CatchUp { from: 0 },
        },
        // Replies to ballots the receiver never used.
        Envelope {
            from: lid,
            to: fid,
            message: Message::Promise {
                ballot: Ballot::new(5, 77),
                accepted: vec![],
                snapshot_slot: 0,
            },
        },
        Envelope {
            from: lid,
            to: fid,
            message: Message::Nack {
                ballot: Ballot::new(1, fid),
                higher: Ballot::new(u64::MAX, 3),
            },
        },
        // Addressed to someone else.
        Envelope {
            from: lid,
            to: 42,
            message: Message::CatchUp { from: 1 },
        },
    ];
    for e in hostile {
        r.step(e);
    }
    assert!(r.take_outputs().is_empty(), "all ignored");
    assert_eq!(r.promised(), leading);
    // A sender in no configuration this replica knows may be a voter added
    // by a change it has not learned yet: its Prepare is answered like any
    // other (promising is safe; the transport keeps strangers out), after
    // the promise is persisted.
    let mut newcomer = Replica::new(Config::new(fid, vec![1, 2, 3]));
    newcomer.step(Envelope {
        from: 99,
        to: fid,
        message: Message::Prepare {
            ballot: Ballot::new(1_000, 99),
            first_slot: 1,
        },
    });
    let outputs = newcomer.take_outputs();
    assert!(
        matches!(outputs.first(), Some(Output::Persist(Record::Promise(b))) if b.node == 99),
        "{outputs:?}"
    );
    assert!(outputs.iter().any(|o| matches!(
        o,
        Output::Send(Envelope {
            to: 99,
            message: Message::Promise { .. },
            ..
        })
    )));
    // A stale ballot is answered with a Nack, and changes nothing.
    r.step(Envelope {
        from: 3,
        to: fid,
        message: Message::Accept {
            ballot: Ballot::new(4, 3),
            slot: 1,
            value: Value::Noop,
        },
    });
    let out = r.take_outputs();
    assert_eq!(
        out,
        vec![Output::Send(Envelope {
            from: fid,
            to: 3,
            message: Message::Nack {
                ballot: Ballot::new(4, 3),
                higher: leading
            }
        })]
    );
    // The real leader is still followed.
    r.step(Envelope {
        from: lid,
        to: fid,
        message: Message::Accept {
            ballot: leading,
            slot: 1,
            value: Value::Noop,
        },
    });
    let out = r.take_outputs();
    assert!(matches!(
        &out[..],
        [
            Output::Persist(_),
            Output::Send(Envelope {
                message: Message::Accepted { slot: 1, .. },
                ..
            })
        ]
    ));
}

/// Who the wire carries each kind of message to, for one slot.
fn recipients(wire: &VecDeque<Envelope>, kind: &str, slot: Slot) -> Vec<u64> {
    let mut to: Vec<u64> = wire
        .iter()
        .filter(|e| {
            e.message.kind() == kind
                && match &e.message {
                    Message::Accept { slot: s, .. }
                    | Message::Commit { slot: s, .. }
                    | Message::Chosen { slot: s, .. } => *s == slot,
                    _ => false,
                }
        })
        .map(|e| e.to)
        .collect();
    to.sort_unstable();
    to
}

/// Proposes one command at the leader and returns the slot it took,
/// leaving the leader's messages on the wire.
fn propose_unsettled(c: &mut Cluster, leader: usize, seq: u64) -> Slot {
    let before = c.replicas[leader].commit_index();
    c.replicas[leader]
        .propose(Command {
            client: 11,
            seq,
            payload: vec![seq as u8],
        })
        .expect("the leader takes proposals");
    c.collect(leader);
    let slot = c
        .wire
        .iter()
        .find_map(|e| match &e.message {
            Message::Accept { slot, .. } => Some(*slot),
            _ => None,
        })
        .expect("an Accept for the new slot");
    assert!(slot > before);
    slot
}

/// Elects a leader and has it choose one slot sent to every member, so
/// that it knows which peer answers first. Returns the leader's index and
/// its peers' ids, the first to answer first (the wire delivers in order).
fn elect_and_propose_one(c: &mut Cluster) -> (usize, Vec<u64>) {
    c.tick_all(40);
    let leader = c.leader().expect("a leader after 40 ticks");
    let me = leader as u64 + 1;
    let peers: Vec<u64> = (1..=3).filter(|&id| id != me).collect();
    c.propose(leader, 11, 1);
    (leader, peers)
}

#[test]
fn an_idle_leader_sends_a_lone_command_to_the_peer_that_answered_first() {
    let mut c = Cluster::new(3);
    let (leader, peers) = elect_and_propose_one(&mut c);

    // The wire delivers in order: the first peer's Accepted came first.
    let slot = propose_unsettled(&mut c, leader, 2);
    assert_eq!(recipients(&c.wire, "Accept", slot), vec![peers[0]]);
    c.settle();
    for i in 0..3 {
        assert_eq!(c.applied[i], c.applied[leader], "replica {i}");
        assert_eq!(c.replicas[i].commit_index(), slot, "replica {i}");
    }
    // Only the voters made the slot durable; the other holds no acceptance.
    let left_out = (peers[1] - 1) as usize;
    let voter = (peers[0] - 1) as usize;
    let accepted_at = |d: &Durable| d.accepted.contains_key(&slot);
    assert!(accepted_at(&c.disks[voter]));
    assert!(accepted_at(&c.disks[leader]));
    assert!(!accepted_at(&c.disks[left_out]));
}

#[test]
fn a_leader_announces_fresh_decisions_but_sends_catch_up_answers() {
    let mut c = Cluster::new(3);
    let (leader, peers) = elect_and_propose_one(&mut c);
    let slot = propose_unsettled(&mut c, leader, 2);
    let voter = (peers[0] - 1) as usize;
    let accept = c.wire.pop_front().expect("the Accept");
    assert!(c.wire.is_empty(), "a lone command goes to one peer");
    c.replicas[voter].step(accept);
    let accepted = c.replicas[voter]
        .take_outputs()
        .into_iter()
        .find_map(|o| match o {
            Output::Send(e) if matches!(e.message, Message::Accepted { .. }) => Some(e),
            _ => None,
        })
        .expect("the voter's Accepted");
    c.replicas[leader].step(accepted);
    let outputs = c.replicas[leader].take_outputs();
    // The decisions are announcements, which a runtime may hold back; none
    // is a plain send.
    let mut announced: Vec<(u64, &str)> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Announce(e) => Some((e.to, e.message.kind())),
            _ => None,
        })
        .collect();
    announced.sort();
    let mut expected = vec![(peers[0], "Chosen"), (peers[1], "Commit")];
    expected.sort();
    assert_eq!(announced, expected);
    assert!(
        !outputs.iter().any(|o| matches!(o, Output::Send(e)
            if matches!(e.message, Message::Commit { .. } | Message::Chosen { .. }))),
        "{outputs:?}"
    );
    assert!(
        outputs.contains(&Output::Apply {
            slot,
            value: Value::Batch(
                vec![Command {
                    client: 11,
                    seq: 2,
                    payload: vec![2]
                }]
                .into()
            ),
        })
    );

    // A lagging peer asking for decisions waits on them: those are sends.
    c.replicas[leader].step(Envelope {
        from: peers[1],
        to: leader as u64 + 1,
        message: Message::CatchUp { from: slot },
    });
    let answers = c.replicas[leader].take_outputs();
    assert!(
        answers.iter().any(|o| matches!(o, Output::Send(Envelope { to, message: Message::Commit { slot: s, .. }, .. })
            if *to == peers[1] && *s == slot)),
        "{answers:?}"
    );
    assert!(!answers.iter().any(|o| matches!(o, Output::Announce(_))));
}

#[test]
fn the_decision_of_a_thrifty_slot_carries_the_value_to_the_member_left_out() {
    let mut c = Cluster::new(3);
    let (leader, peers) = elect_and_propose_one(&mut c);
    let slot = propose_unsettled(&mut c, leader, 2);
    // Deliver the Accept, then the leader's reaction to its answer.
    let mut decisions = VecDeque::new();
    let mut budget = 100;
    while let Some(e) = c.wire.pop_front() {
        budget -= 1;
        assert!(budget > 0);
        if matches!(e.message, Message::Commit { .. } | Message::Chosen { .. }) {
            decisions.push_back(e);
            continue;
        }
        let to = (e.to - 1) as usize;
        c.replicas[to].step(e);
        c.collect(to);
    }
    assert_eq!(recipients(&decisions, "Chosen", slot), vec![peers[0]]);
    assert_eq!(recipients(&decisions, "Commit", slot), vec![peers[1]]);
}

#[test]
fn a_busy_leader_sends_to_every_member() {
    let mut c = Cluster::new(3);
    let (leader, peers) = elect_and_propose_one(&mut c);
    // Two commands in one slot: not a lone command.
    for seq in 2..=3 {
        c.replicas[leader]
            .enqueue(Command {
                client: 11,
                seq,
                payload: vec![seq as u8],
            })
            .expect("the leader queues commands");
    }
    c.replicas[leader].fill();
    c.collect(leader);
    let batch_slot = c.replicas[leader].commit_index() + 1;
    assert_eq!(recipients(&c.wire, "Accept", batch_slot), peers);
    // A lone command while that slot is in flight: also to all.
    c.replicas[leader]
        .propose(Command {
            client: 11,
            seq: 4,
            payload: vec![4],
        })
        .expect("the leader takes proposals");
    c.collect(leader);
    assert_eq!(recipients(&c.wire, "Accept", batch_slot + 1), peers);
    c.settle();
    for i in 0..3 {
        assert_eq!(c.applied[i], c.applied[leader], "replica {i}");
    }
}

#[test]
fn a_slot_whose_fast_peer_went_down_is_retransmitted_to_all_and_chosen() {
    let mut c = Cluster::new(3);
    let (leader, peers) = elect_and_propose_one(&mut c);
    let fast = (peers[0] - 1) as usize;
    let other = (peers[1] - 1) as usize;
    c.down[fast] = true;
    let slot = propose_unsettled(&mut c, leader, 2);
    assert_eq!(recipients(&c.wire, "Accept", slot), vec![peers[0]]);
    c.settle();
    assert!(c.replicas[leader].commit_index() < slot, "not yet chosen");
    // The retransmit goes to both peers; the live one makes the quorum.
    for _ in 0..10 {
        if c.replicas[leader].commit_index() == slot {
            break;
        }
        c.tick_all(1);
    }
    assert_eq!(c.replicas[leader].commit_index(), slot);
    assert_eq!(c.applied[other], c.applied[leader]);
    // The next lone command goes to the peer that answered.
    let next = propose_unsettled(&mut c, leader, 3);
    assert_eq!(recipients(&c.wire, "Accept", next), vec![peers[1]]);
    c.settle();
    assert_eq!(c.replicas[leader].commit_index(), next);
}

#[test]
fn with_thrifty_off_every_slot_goes_to_every_member() {
    let mut c = Cluster::new(3);
    for r in &mut c.replicas {
        *r = Replica::new(Config {
            thrifty: false,
            ..r.config().clone()
        });
    }
    let (leader, peers) = elect_and_propose_one(&mut c);
    let slot = propose_unsettled(&mut c, leader, 2);
    assert_eq!(recipients(&c.wire, "Accept", slot), peers);
}

#[test]
fn a_heartbeat_interval_after_the_last_slot_sent_to_all_the_next_goes_to_all() {
    let mut c = Cluster::new(3);
    let (leader, peers) = elect_and_propose_one(&mut c);
    let thrifty = propose_unsettled(&mut c, leader, 2);
    assert_eq!(recipients(&c.wire, "Accept", thrifty), vec![peers[0]]);
    c.settle();
    // A thrifty slot's answer does not renew the choice: a peer that
    // turned slow would never be found out.
    let heartbeat_ticks = c.replicas[leader].config().heartbeat_ticks;
    c.tick_all(heartbeat_ticks);
    let probe = propose_unsettled(&mut c, leader, 3);
    assert_eq!(recipients(&c.wire, "Accept", probe), peers);
    c.settle();
    let after = propose_unsettled(&mut c, leader, 4);
    assert_eq!(recipients(&c.wire, "Accept", after), vec![peers[0]]);
    c.settle();
    for i in 0..3 {
        assert_eq!(c.applied[i], c.applied[leader], "replica {i}");
    }
}

#[test]
fn a_leader_counts_no_accepted_of_its_own_earlier_ballot() {
    // Five members that all promised ballots of round 5 before (as after
    // an earlier leadership each): whoever leads now leads at round 6 or
    // above, and round 5 is an earlier ballot of its own.
    let mut c = Cluster::new(5);
    for i in 0..5 {
        let id = i as u64 + 1;
        let durable = Durable {
            promised: Ballot::new(5, id),
            ..Durable::default()
        };
        c.replicas[i] = Replica::restart(Config::new(id, (1..=5).collect()), durable);
    }
    c.tick_all(60);
    let leader = c.leader().expect("a leader after 60 ticks");
    let me = leader as u64 + 1;
    let ballot = c.replicas[leader].ballot().expect("a leader has a ballot");
    assert!(ballot.round >= 6);
    c.tick_all(4);
    // Its next slot reaches nobody but itself.
    for i in 0..5 {
        c.down[i] = i != leader;
    }
    let slot = propose_unsettled(&mut c, leader, 1);
    c.settle();
    let late = |from: u64, ballot: Ballot| Envelope {
        from,
        to: me,
        message: Message::Accepted { ballot, slot },
    };
    let others: Vec<u64> = (1..=5).filter(|&id| id != me).collect();
    // Late votes for the same slot at its own earlier ballot: with its own
    // they would make a quorum of three, but they are votes for whatever
    // it proposed there then, not for this value.
    for &from in &others[..2] {
        c.replicas[leader].step(late(from, Ballot::new(5, me)));
        c.collect(leader);
    }
    assert!(
        c.applied[leader].iter().all(|(s, _)| *s != slot),
        "slot {slot} counted as chosen with votes of another ballot"
    );
    // The same votes at its current ballot do choose it.
    for &from in &others[..2] {
        c.replicas[leader].step(late(from, ballot));
        c.collect(leader);
    }
    assert!(c.applied[leader].iter().any(|(s, _)| *s == slot));
}

#[test]
fn a_follower_acknowledges_no_heartbeat_below_its_promise() {
    // Member 2 has promised member 3's ballot 4.3; member 1, deposed at
    // ballot 2.1 without knowing it, still reaches it. An acknowledgement
    // would confirm member 1's read round, so that it served reads
    // without the writes of the new leader.
    let members: Vec<u64> = vec![1, 2, 3];
    let mut follower = Replica::new(Config::new(2, members));
    follower.step(Envelope {
        from: 3,
        to: 2,
        message: Message::Prepare {
            ballot: Ballot::new(4, 3),
            first_slot: 1,
        },
    });
    let promised = follower.take_outputs();
    assert!(
        promised.iter().any(|o| matches!(
            o,
            Output::Send(Envelope {
                message: Message::Promise { .. },
                ..
            })
        )),
        "{promised:?}"
    );
    follower.step(Envelope {
        from: 1,
        to: 2,
        message: Message::Heartbeat {
            ballot: Ballot::new(2, 1),
            commit_index: 0,
            round: 7,
        },
    });
    let answer: Vec<Message> = follower
        .take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Send(e) if e.to == 1 => Some(e.message),
            _ => None,
        })
        .collect();
    assert!(
        !answer
            .iter()
            .any(|m| matches!(m, Message::HeartbeatAck { .. })),
        "{answer:?}"
    );
    assert!(
        answer
            .iter()
            .any(|m| matches!(m, Message::Nack { higher, .. } if *higher == Ballot::new(4, 3))),
        "the deposed leader is told of the higher ballot: {answer:?}"
    );
}

#[test]
fn a_snapshot_installed_mid_turn_drops_the_applies_it_covers() {
    // A follower learns slots 1-3; before its runtime takes the applies, a
    // snapshot up to slot 5 is installed: applying 1-3 after it would go
    // back in time.
    let mut r = Replica::new(Config::new(2, vec![1, 2, 3]));
    for slot in 1..=3 {
        r.step(Envelope {
            from: 1,
            to: 2,
            message: Message::Commit {
                slot,
                value: Value::Noop,
            },
        });
    }
    r.install_snapshot(5, None);
    let applies: Vec<Slot> = r
        .take_outputs()
        .into_iter()
        .filter_map(|o| match o {
            Output::Apply { slot, .. } => Some(slot),
            _ => None,
        })
        .collect();
    assert!(applies.is_empty(), "{applies:?}");
    assert_eq!(r.applied(), 5);
    r.step(Envelope {
        from: 1,
        to: 2,
        message: Message::Commit {
            slot: 6,
            value: Value::Noop,
        },
    });
    assert!(
        r.take_outputs()
            .iter()
            .any(|o| matches!(o, Output::Apply { slot: 6, .. }))
    );
}
