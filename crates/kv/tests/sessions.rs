//! Exactly-once: the replicated session table dedups retries, forgets
//! clients deterministically, and travels in snapshots.

mod common;

use common::*;
use kv::{Command, KvError, Limits, PutRequest, SessionOutcome, Store};

fn cmd(key: &str, value: &str) -> Command {
    Command::Put(put_req(key.as_bytes(), value.as_bytes()))
}

#[test]
fn a_retry_is_answered_from_the_table_and_not_applied_twice() {
    let mut s = Store::default();
    let SessionOutcome::Applied(Ok(first)) = s.apply_session(1, 1, &cmd("a", "1"), CTX) else {
        panic!()
    };
    let hash = s.state_hash();
    let retry = s.apply_session(1, 1, &cmd("a", "1"), CTX);
    assert_eq!(retry, SessionOutcome::Duplicate(Ok(first.response)));
    assert_eq!(s.state_hash(), hash);
    assert_eq!(s.revision(), 2);
    assert!(matches!(
        s.apply_session(1, 2, &cmd("a", "2"), CTX),
        SessionOutcome::Applied(Ok(_))
    ));
    assert_eq!(
        s.apply_session(1, 1, &cmd("a", "1"), CTX),
        SessionOutcome::Stale { latest_seq: 2 }
    );
    // Another client's seq 1 is its own.
    assert!(matches!(
        s.apply_session(2, 1, &cmd("b", "1"), CTX),
        SessionOutcome::Applied(Ok(_))
    ));
}

#[test]
fn a_refusal_is_remembered_too() {
    let mut s = Store::default();
    let bad = Command::Put(PutRequest {
        key: k("a"),
        lease: 5,
        ..PutRequest::default()
    });
    let SessionOutcome::Applied(Err(err)) = s.apply_session(1, 1, &bad, CTX) else {
        panic!()
    };
    assert_eq!(err, KvError::LeaseNotFound { id: 5 });
    assert_eq!(
        s.apply_session(1, 1, &bad, CTX),
        SessionOutcome::Duplicate(Err(err))
    );
}

#[test]
fn idle_clients_are_forgotten_by_leader_time() {
    let limits = Limits {
        session_ttl_ms: 1_000,
        ..Limits::default()
    };
    let mut s = Store::new(limits);
    s.apply_session(1, 1, &cmd("a", "1"), at(0));
    s.apply_session(2, 1, &cmd("b", "1"), at(600));
    assert_eq!(s.session_count(), 2);
    s.apply_session(3, 1, &cmd("c", "1"), at(1_500));
    assert_eq!(
        s.session_count(),
        2,
        "client 1 was silent for more than 1 s"
    );
    // Forgotten: the retry is applied again (the documented limit).
    assert!(matches!(
        s.apply_session(1, 1, &cmd("a", "1"), at(1_500)),
        SessionOutcome::Applied(_)
    ));
}

#[test]
fn the_table_is_bounded_least_recently_active_first() {
    let limits = Limits {
        max_sessions: 3,
        ..Limits::default()
    };
    let mut s = Store::new(limits);
    for client in 1..=3 {
        s.apply_session(client, 1, &cmd("k", "v"), at(client * 10));
    }
    s.apply_session(1, 2, &cmd("k", "v"), at(40));
    s.apply_session(4, 1, &cmd("k", "v"), at(50));
    assert_eq!(s.session_count(), 3);
    // Client 2 was the least recently active.
    assert!(matches!(
        s.apply_session(2, 1, &cmd("k", "v"), at(60)),
        SessionOutcome::Applied(_)
    ));
    assert!(matches!(
        s.apply_session(4, 1, &cmd("k", "v"), at(60)),
        SessionOutcome::Duplicate(_)
    ));
}

#[test]
fn the_table_is_in_the_snapshot_and_the_hash() {
    let mut s = Store::default();
    s.apply_session(9, 4, &cmd("a", "1"), CTX);
    let mut restored = Store::restore(&s.snapshot(), Limits::default()).expect("restore");
    assert_eq!(restored.state_hash(), s.state_hash());
    assert!(matches!(
        restored.apply_session(9, 4, &cmd("a", "1"), CTX),
        SessionOutcome::Duplicate(Ok(_))
    ));
    let mut other = Store::default();
    other.apply(&cmd("a", "1"), CTX).expect("put");
    assert_ne!(
        other.state_hash(),
        s.state_hash(),
        "same data, different sessions"
    );
}

/// The table keeps a plain put's answer as its revision and every other
/// answer whole: each kind is answered alike on a retry, before and after
/// a snapshot, and a restored store encodes to the same bytes.
#[test]
fn every_kind_of_answer_survives_a_retry_and_a_snapshot() {
    let mut s = Store::default();
    let with_prev = Command::Put(PutRequest {
        prev_kv: true,
        ..put_req(b"a", b"2")
    });
    let refused = Command::Put(PutRequest {
        lease: 5,
        ..put_req(b"b", b"1")
    });
    let commands = [(1, cmd("a", "1")), (2, with_prev), (3, refused)];
    let mut answers = Vec::new();
    for (client, command) in &commands {
        let SessionOutcome::Applied(result) = s.apply_session(*client, 1, command, CTX) else {
            panic!("applied")
        };
        answers.push(result.map(|applied| applied.response));
    }
    assert!(matches!(&answers[1], Ok(kv::Response::Put(p)) if p.prev_kv.is_some()));
    assert!(answers[2].is_err());
    let snapshot = s.snapshot();
    let mut restored = Store::restore(&snapshot, Limits::default()).expect("restore");
    assert_eq!(restored.snapshot(), snapshot);
    for store in [&mut s, &mut restored] {
        for ((client, command), answer) in commands.iter().zip(&answers) {
            assert_eq!(
                store.apply_session(*client, 1, command, CTX),
                SessionOutcome::Duplicate(answer.clone())
            );
        }
    }
    assert_eq!(restored.state_hash(), s.state_hash());
}
