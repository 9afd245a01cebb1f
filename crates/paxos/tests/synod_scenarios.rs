//! The classic single-decree Paxos scenarios, replayed message by message.
//!
//! Each step below delivers one message by hand, in the order the scenario
//! prescribes, so a reader can follow the protocol as if on a whiteboard. A
//! learner is shown every `Accepted` as it leaves an acceptor, and checks
//! after every step that the chosen value, once there is one, never changes.

use paxos::Ballot;
use paxos::NodeId;
use paxos::synod::{Accept, Acceptor, Learner, Message, Nack, Phase, Promise, Proposer};

/// Proposer ids: the low-order part of their ballots.
const A: NodeId = 1;
const B: NodeId = 2;
/// Acceptor ids, as they sign their replies.
const X: NodeId = 10;
const Y: NodeId = 11;
const Z: NodeId = 12;

/// A learner that sees every `Accepted` and remembers the first value chosen,
/// so that every step can assert it has not changed since.
struct Watch {
    learner: Learner<&'static str>,
    first: Option<&'static str>,
}

impl Watch {
    fn new(acceptors: usize) -> Self {
        Watch {
            learner: Learner::new(acceptors),
            first: None,
        }
    }

    /// Shows the learner an acceptor's reply (anything but `Accepted` is not
    /// for it) and checks agreement.
    fn see(&mut self, from: NodeId, reply: &Message<&'static str>) {
        if let Message::Accepted(a) = reply {
            self.learner.on_accepted(from, a.ballot, a.value);
        }
        self.check();
    }

    fn check(&mut self) {
        match (self.first, self.learner.chosen()) {
            (None, Some(v)) => self.first = Some(v),
            (Some(first), chosen) => assert_eq!(chosen, Some(&first), "chosen value changed"),
            (None, None) => {}
        }
    }

    fn chosen(&self) -> Option<&'static str> {
        self.learner.chosen().copied()
    }
}

/// The promise inside an acceptor's reply; the scenario says it must be one.
fn promise(reply: Message<&'static str>) -> Promise<&'static str> {
    match reply {
        Message::Promise(p) => p,
        other => panic!("expected a Promise, got {other:?}"),
    }
}

/// The nack inside an acceptor's reply; the scenario says it must be one.
fn nack(reply: Message<&'static str>) -> Nack {
    match reply {
        Message::Nack(n) => n,
        other => panic!("expected a Nack, got {other:?}"),
    }
}

/// Delivers a promise to a proposer.
fn deliver_promise(
    proposer: &mut Proposer<&'static str>,
    from: NodeId,
    p: Promise<&'static str>,
) -> Option<Accept<&'static str>> {
    proposer.on_promise(from, p.ballot, p.accepted)
}

/// Scenario (a), first variant: A's value is accepted by one acceptor only
/// (not chosen) when B's higher Prepare arrives. B's quorum of promises
/// includes that acceptor, so B must propose vA, not vB.
#[test]
fn b_adopts_a_value_accepted_by_a_minority() {
    let (mut x, mut y, mut z) = (Acceptor::new(), Acceptor::new(), Acceptor::new());
    let mut a = Proposer::new(A, 3, "vA");
    let mut b = Proposer::new(B, 3, "vB");
    let mut watch = Watch::new(3);

    // 1. A starts phase 1. Its Prepare reaches X and Y first; both promise,
    //    reporting nothing accepted. Two promises are a quorum of three.
    let ba = a.prepare();
    assert_eq!(deliver_promise(&mut a, X, promise(x.on_prepare(ba))), None);
    let accept_a =
        deliver_promise(&mut a, Y, promise(y.on_prepare(ba))).expect("X and Y form a quorum for A");
    // With no accepted value reported, A proposes its own.
    assert_eq!(accept_a.value, "vA");

    // 2. A's Accept(ba, vA) reaches X only; X accepts. One acceptance is not
    //    a quorum: nothing is chosen yet.
    let reply = x.on_accept(accept_a.ballot, accept_a.value);
    watch.see(X, &reply);
    assert_eq!(watch.chosen(), None);

    // 3. B starts phase 1 with a higher ballot. Its Prepare reaches Z first:
    //    Z promises, having accepted nothing.
    let bb = b.prepare();
    assert!(bb > ba);
    assert_eq!(deliver_promise(&mut b, Z, promise(z.on_prepare(bb))), None);

    // 4. B's Prepare reaches X: X promises and reports (ba, vA). With Z that
    //    is a quorum, and B must adopt vA instead of its own vB.
    let px = promise(x.on_prepare(bb));
    assert_eq!(px.accepted, Some((ba, "vA")));
    let accept_b = deliver_promise(&mut b, X, px).expect("Z and X form a quorum for B");
    assert_eq!(accept_b.ballot, bb);
    assert_eq!(accept_b.value, "vA", "B adopts the accepted value, not vB");

    // 5. B's Prepare finally reaches Y, which promises bb. B already left
    //    phase 1, so the late promise changes nothing.
    assert_eq!(deliver_promise(&mut b, Y, promise(y.on_prepare(bb))), None);

    // 6. A's Accept, late, reaches Y: Y promised bb now, so it refuses with a
    //    Nack carrying bb. A abandons its round.
    let n = nack(y.on_accept(accept_a.ballot, accept_a.value));
    assert_eq!(n.higher, bb);
    assert!(a.on_nack(n.ballot, n.higher));
    assert_eq!(a.phase(), Phase::Idle);

    // 7. B's Accept(bb, vA) reaches X, Y and Z; the learner learns vA once
    //    two of them accepted.
    for (id, acc) in [(X, &mut x), (Y, &mut y), (Z, &mut z)] {
        let reply = acc.on_accept(accept_b.ballot, accept_b.value);
        watch.see(id, &reply);
    }
    assert_eq!(watch.chosen(), Some("vA"));

    // 8. A retries above bb. Every promise reports (bb, vA), so A too
    //    proposes vA, and its acceptances leave the chosen value unchanged.
    let ba2 = a.prepare();
    assert!(ba2 > bb);
    let mut accept_a2 = None;
    for (id, acc) in [(X, &mut x), (Y, &mut y), (Z, &mut z)] {
        let p = promise(acc.on_prepare(ba2));
        assert_eq!(p.accepted, Some((bb, "vA")));
        accept_a2 = accept_a2.or(deliver_promise(&mut a, id, p));
    }
    let accept_a2 = accept_a2.expect("three promises");
    assert_eq!(accept_a2.value, "vA");
    for (id, acc) in [(X, &mut x), (Y, &mut y), (Z, &mut z)] {
        let reply = acc.on_accept(accept_a2.ballot, accept_a2.value);
        watch.see(id, &reply);
    }
    assert_eq!(watch.chosen(), Some("vA"));
}

/// Scenario (a), second variant: A's value is chosen (accepted by X and Y)
/// before B's Prepare arrives anywhere. Any quorum B can gather includes X or
/// Y, so B proposes vA and the chosen value stays vA.
#[test]
fn b_reproposes_a_value_already_chosen() {
    let (mut x, mut y, mut z) = (Acceptor::new(), Acceptor::new(), Acceptor::new());
    let mut a = Proposer::new(A, 3, "vA");
    let mut b = Proposer::new(B, 3, "vB");
    let mut watch = Watch::new(3);

    // 1. A's Prepare reaches X and Y, which promise: a quorum.
    let ba = a.prepare();
    assert_eq!(deliver_promise(&mut a, X, promise(x.on_prepare(ba))), None);
    let accept_a =
        deliver_promise(&mut a, Y, promise(y.on_prepare(ba))).expect("X and Y are a quorum");

    // 2. A's Accept reaches X and Y; both accept. vA is chosen now, and the
    //    learner knows it.
    for (id, acc) in [(X, &mut x), (Y, &mut y)] {
        let reply = acc.on_accept(accept_a.ballot, accept_a.value);
        watch.see(id, &reply);
        assert!(a.on_accepted(id, accept_a.ballot) == (id == Y));
    }
    assert_eq!(watch.chosen(), Some("vA"));
    assert_eq!(a.phase(), Phase::Chosen);

    // 3. B's higher Prepare reaches Z first: Z promises, reports nothing.
    let bb = b.prepare();
    assert_eq!(deliver_promise(&mut b, Z, promise(z.on_prepare(bb))), None);

    // 4. Then X: X promises and reports (ba, vA). Z and X are a quorum; B
    //    proposes vA.
    let accept_b = deliver_promise(&mut b, X, promise(x.on_prepare(bb))).expect("quorum");
    assert_eq!(accept_b.value, "vA");

    // 5. Then Y (late for phase 1, ignored by B). A's Accept never reached Z;
    //    were it to arrive now, Z would refuse it: Z promised bb.
    assert_eq!(deliver_promise(&mut b, Y, promise(y.on_prepare(bb))), None);
    let n = nack(z.on_accept(accept_a.ballot, accept_a.value));
    assert_eq!(n.higher, bb);
    watch.check();

    // 6. B's Accept(bb, vA) reaches every acceptor. A second quorum forms at
    //    bb, for the same value: the chosen value stays vA.
    for (id, acc) in [(Z, &mut z), (X, &mut x), (Y, &mut y)] {
        let reply = acc.on_accept(accept_b.ballot, accept_b.value);
        watch.see(id, &reply);
        assert_eq!(watch.chosen(), Some("vA"));
    }
}

/// The same variant with B's quorum being Z and Y instead: every majority
/// meets the two acceptors that chose vA.
#[test]
fn every_quorum_meets_the_chosen_value() {
    let (mut x, mut y, mut z) = (Acceptor::new(), Acceptor::new(), Acceptor::new());
    let mut a = Proposer::new(A, 3, "vA");
    let mut b = Proposer::new(B, 3, "vB");
    let mut watch = Watch::new(3);

    // A gets promises from X and Y and both accept vA: chosen.
    let ba = a.prepare();
    deliver_promise(&mut a, X, promise(x.on_prepare(ba)));
    let accept_a = deliver_promise(&mut a, Y, promise(y.on_prepare(ba))).expect("quorum");
    for (id, acc) in [(X, &mut x), (Y, &mut y)] {
        let reply = acc.on_accept(accept_a.ballot, accept_a.value);
        watch.see(id, &reply);
    }
    assert_eq!(watch.chosen(), Some("vA"));

    // B's quorum is Z then Y; Y reports (ba, vA).
    let bb = b.prepare();
    deliver_promise(&mut b, Z, promise(z.on_prepare(bb)));
    let accept_b = deliver_promise(&mut b, Y, promise(y.on_prepare(bb))).expect("quorum");
    assert_eq!(accept_b.value, "vA");
    for (id, acc) in [(Z, &mut z), (Y, &mut y)] {
        let reply = acc.on_accept(accept_b.ballot, accept_b.value);
        watch.see(id, &reply);
    }
    assert_eq!(watch.chosen(), Some("vA"));
}

/// Scenario (b): an acceptor that accepted (5, "A") and then promised 8
/// answers Prepare(10) with a Promise carrying (5, "A"). A proposer whose
/// quorum holds two such promises (the third promise is empty) proposes "A"
/// at ballot 10, not its own value.
#[test]
fn proposer_adopts_the_reported_value_at_its_own_ballot() {
    // Five acceptors, quorum three. Two of them went through ballots 5 and 8.
    let ids: [NodeId; 5] = [10, 11, 12, 13, 14];
    let mut acceptors: Vec<Acceptor<&'static str>> = (0..5).map(|_| Acceptor::new()).collect();
    for acc in &mut acceptors[..2] {
        // Proposer 1 prepared and got "A" accepted at round 5; proposer 3
        // then prepared round 8 and vanished.
        promise(acc.on_prepare(Ballot::new(5, 1)));
        assert!(matches!(
            acc.on_accept(Ballot::new(5, 1), "A"),
            Message::Accepted(_)
        ));
        promise(acc.on_prepare(Ballot::new(8, 3)));
        assert_eq!(acc.promised(), Ballot::new(8, 3));
        assert_eq!(acc.accepted(), Some(&(Ballot::new(5, 1), "A")));
    }

    // Our proposer (node 2) heard of round 9 through a Nack, so its next
    // ballot is round 10.
    let mut p = Proposer::new(2, 5, "mine");
    let first = p.prepare();
    assert!(p.on_nack(first, Ballot::new(9, 4)));
    let b10 = p.prepare();
    assert_eq!(b10, Ballot::new(10, 2));

    // The two acceptors answer Prepare(10) with (5, "A").
    for (acc, &id) in acceptors[..2].iter_mut().zip(&ids) {
        let reply = promise(acc.on_prepare(b10));
        assert_eq!(reply.accepted, Some((Ballot::new(5, 1), "A")));
        assert_eq!(deliver_promise(&mut p, id, reply), None);
    }
    // A third, empty promise completes the quorum.
    let reply = promise(acceptors[2].on_prepare(b10));
    assert_eq!(reply.accepted, None);
    let accept = deliver_promise(&mut p, ids[2], reply);

    assert_eq!(
        accept,
        Some(Accept {
            ballot: b10,
            value: "A"
        }),
        "the proposer proposes the reported value at its own ballot"
    );
    assert_eq!(p.proposal(), Some(&"A"));
}

/// Among several reported proposals the one with the highest ballot wins,
/// whatever order the promises arrive in.
#[test]
fn the_highest_accepted_ballot_wins() {
    for order in [[0usize, 1, 2], [2, 1, 0], [1, 0, 2]] {
        let reports = [
            Some((Ballot::new(3, 1), "C")),
            Some((Ballot::new(5, 3), "A")),
            None,
        ];
        // The proposer heard of round 9, so it leads with round 10.
        let mut p = Proposer::new(2, 5, "mine");
        let stale = p.prepare();
        p.on_nack(stale, Ballot::new(9, 4));
        let ballot = p.prepare();
        let mut accept = None;
        for i in order {
            accept = accept.or(p.on_promise(10 + i as NodeId, ballot, reports[i]));
        }
        assert_eq!(accept.map(|a| a.value), Some("A"), "order {order:?}");
    }
}

/// A Nack carries the acceptor's higher promise, and the proposer's next
/// ballot outbids it.
#[test]
fn nack_carries_the_higher_ballot_and_the_retry_outbids_it() {
    let mut x = Acceptor::new();
    let mut a = Proposer::new(A, 3, "vA");
    let mut b = Proposer::new(B, 3, "vB");

    // B's Prepare reaches X first; B owns a higher ballot than A's first one.
    let bb = b.prepare();
    promise(x.on_prepare(bb));

    // A's lower Prepare is refused, and the Nack says what to outbid.
    let ba = a.prepare();
    assert!(ba < bb);
    let n = nack(x.on_prepare(ba));
    assert_eq!(
        n,
        Nack {
            ballot: ba,
            higher: bb
        }
    );
    assert!(a.on_nack(n.ballot, n.higher), "the Nack was for A's round");
    assert_eq!(a.ballot(), None, "A stopped early");

    // A's retry is above the Nack's ballot, and X promises it.
    let ba2 = a.prepare();
    assert!(ba2 > bb);
    assert_eq!(ba2.node, A);
    promise(x.on_prepare(ba2));

    // A Nack that arrives for an old round only raises what A has seen.
    assert!(!a.on_nack(ba, Ballot::new(40, B)));
    assert_eq!(a.ballot(), Some(ba2));
    assert_eq!(a.prepare(), Ballot::new(41, A));
}

/// A promise repeated by one acceptor (a duplicated message, or a duplicate
/// Prepare answered again) counts once: two copies are not a quorum.
#[test]
fn duplicate_promises_do_not_make_a_quorum() {
    let mut x = Acceptor::new();
    let mut y = Acceptor::new();
    let mut a = Proposer::new(A, 3, "vA");
    let ba = a.prepare();

    // X answers the same Prepare twice (idempotently) and the network also
    // duplicates one copy: three promises, one acceptor.
    let p1 = promise(x.on_prepare(ba));
    let p2 = promise(x.on_prepare(ba));
    assert_eq!(p1, p2, "a duplicate Prepare gets the same answer");
    assert_eq!(deliver_promise(&mut a, X, p1.clone()), None);
    assert_eq!(deliver_promise(&mut a, X, p2), None);
    assert_eq!(deliver_promise(&mut a, X, p1), None);
    assert_eq!(a.phase(), Phase::Preparing);

    // A promise from a second acceptor is what completes the quorum.
    let accept = deliver_promise(&mut a, Y, promise(y.on_prepare(ba)));
    assert_eq!(
        accept,
        Some(Accept {
            ballot: ba,
            value: "vA"
        })
    );
}

/// Duplicate Accepted messages do not make a learner learn either.
#[test]
fn duplicate_accepted_do_not_make_a_quorum() {
    let mut x = Acceptor::new();
    let mut watch = Watch::new(3);
    let ballot = Ballot::new(1, A);
    let first = x.on_accept(ballot, "vA");
    let again = x.on_accept(ballot, "vA");
    assert_eq!(first, again, "a duplicate Accept gets the same answer");
    watch.see(X, &first);
    watch.see(X, &again);
    assert_eq!(watch.chosen(), None);
}
