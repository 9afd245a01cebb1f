//! Exactly-once: the replicated session table dedups retries, forgets
//! clients deterministically, and travels in snapshots.

mod common;

use common::*;
use kv::{Command, KvError, Limits, PutRequest, SESSION_WINDOW, SessionOutcome, Store};

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
    assert_eq!(retry, SessionOutcome::Duplicate(Ok(first.response.clone())));
    assert_eq!(s.state_hash(), hash);
    assert_eq!(s.revision(), 2);
    assert!(matches!(
        s.apply_session(1, 2, &cmd("a", "2"), CTX),
        SessionOutcome::Applied(Ok(_))
    ));
    // Seq 1 is still answered after seq 2: a retry may come late.
    assert_eq!(
        s.apply_session(1, 1, &cmd("a", "1"), CTX),
        SessionOutcome::Duplicate(Ok(first.response))
    );
    // Another client's seq 1 is its own.
    assert!(matches!(
        s.apply_session(2, 1, &cmd("b", "1"), CTX),
        SessionOutcome::Applied(Ok(_))
    ));
}

/// A client with many commands in flight: they reach the log in any order
/// within the window, each is applied once, and one below the window is
/// refused as stale, not applied.
#[test]
fn commands_in_flight_apply_once_in_any_order_within_the_window() {
    let mut s = Store::default();
    let w = SESSION_WINDOW;
    for seq in [3, 1, 2, 5] {
        assert!(matches!(
            s.apply_session(1, seq, &cmd("a", &seq.to_string()), CTX),
            SessionOutcome::Applied(Ok(_))
        ));
    }
    let revision = s.revision();
    for seq in [1, 2, 3, 5] {
        assert!(matches!(
            s.apply_session(1, seq, &cmd("a", "retry"), CTX),
            SessionOutcome::Duplicate(Ok(_))
        ));
    }
    assert_eq!(s.revision(), revision, "no retry was applied");
    assert_eq!(s.session_count(), 1);
    assert_eq!(s.session_answers(), 4);
    // Seq 4 was never applied: late, but inside the window, so it is new.
    assert!(matches!(
        s.apply_session(1, 4, &cmd("a", "4"), CTX),
        SessionOutcome::Applied(Ok(_))
    ));
    // A jump of a whole window forgets everything at or below 5.
    assert!(matches!(
        s.apply_session(1, 5 + w, &cmd("a", "far"), CTX),
        SessionOutcome::Applied(Ok(_))
    ));
    assert_eq!(s.session_answers(), 1);
    let revision = s.revision();
    for seq in [1, 4, 5] {
        assert_eq!(
            s.apply_session(1, seq, &cmd("a", "late"), CTX),
            SessionOutcome::Stale { latest_seq: 5 + w }
        );
    }
    assert!(matches!(
        s.apply_session(1, 6, &cmd("a", "6"), CTX),
        SessionOutcome::Applied(Ok(_))
    ));
    assert_eq!(s.revision(), revision + 1);
    // The window travels in the snapshot.
    let mut restored = Store::restore(&s.snapshot(), Limits::default()).expect("restore");
    assert_eq!(restored.state_hash(), s.state_hash());
    assert_eq!(restored.session_answers(), 2);
    assert!(matches!(
        restored.apply_session(1, 6, &cmd("a", "6"), CTX),
        SessionOutcome::Duplicate(Ok(_))
    ));
    assert!(matches!(
        restored.apply_session(1, 5, &cmd("a", "5"), CTX),
        SessionOutcome::Stale { .. }
    ));
}

/// Sequence numbers start wherever a client starts them, 0 included, and
/// the table still travels in a snapshot.
#[test]
fn a_session_from_sequence_number_zero_survives_a_snapshot() {
    let mut s = Store::default();
    assert!(matches!(
        s.apply_session(5, 0, &cmd("a", "0"), CTX),
        SessionOutcome::Applied(Ok(_))
    ));
    let mut restored = Store::restore(&s.snapshot(), Limits::default()).expect("restore");
    assert_eq!(restored.state_hash(), s.state_hash());
    assert!(matches!(
        restored.apply_session(5, 0, &cmd("a", "0"), CTX),
        SessionOutcome::Duplicate(Ok(_))
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
        max_session_answers: 3,
        ..Limits::default()
    };
    let mut s = Store::new(limits);
    for client in 1..=3 {
        s.apply_session(client, 1, &cmd("k", "v"), at(client * 10));
    }
    s.apply_session(1, 2, &cmd("k", "v"), at(40));
    // Client 1 holds two answers now: client 2, the least recently active,
    // went to keep the table at three.
    assert_eq!((s.session_count(), s.session_answers()), (2, 3));
    s.apply_session(4, 1, &cmd("k", "v"), at(50));
    assert_eq!((s.session_count(), s.session_answers()), (2, 3));
    // Client 3 went for client 4; client 2 was forgotten before it.
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
