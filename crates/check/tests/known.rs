//! Hand-built histories with known answers.

use check::{Limits, Op, Operation, Outcome, Value, Verdict, check};

fn op(
    process: u64,
    key: &str,
    op: Op,
    invoke: u64,
    complete: Option<u64>,
    outcome: Outcome,
) -> Operation {
    Operation {
        process,
        key: key.to_owned(),
        op,
        invoke,
        complete,
        outcome,
    }
}

fn write(p: u64, v: Value, inv: u64, comp: u64) -> Operation {
    op(p, "k", Op::Write(v), inv, Some(comp), Outcome::Ok(None))
}

fn write_info(p: u64, v: Value, inv: u64) -> Operation {
    op(p, "k", Op::Write(v), inv, None, Outcome::Info)
}

fn write_fail(p: u64, v: Value, inv: u64, comp: u64) -> Operation {
    op(p, "k", Op::Write(v), inv, Some(comp), Outcome::Fail)
}

fn read(p: u64, v: Option<Value>, inv: u64, comp: u64) -> Operation {
    op(p, "k", Op::Read, inv, Some(comp), Outcome::Ok(Some(v)))
}

fn cas(p: u64, expected: Option<Value>, new: Value, inv: u64, comp: u64, ok: bool) -> Operation {
    let outcome = if ok { Outcome::Ok(None) } else { Outcome::Fail };
    op(p, "k", Op::Cas { expected, new }, inv, Some(comp), outcome)
}

fn verdict(history: &[Operation]) -> Verdict {
    check(history, &Limits::default()).verdict
}

fn assert_linearizable(history: &[Operation]) {
    let v = verdict(history);
    assert_eq!(v, Verdict::Linearizable, "{v}");
}

/// Asserts a violation on key "k" and returns its window.
fn assert_violation(history: &[Operation]) -> Vec<Operation> {
    match verdict(history) {
        Verdict::NotLinearizable { key, window } => {
            assert_eq!(key, "k");
            assert!(!window.is_empty() && window.len() <= 12);
            window
        }
        other => panic!("expected a violation, got {other}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    let report = check(&[], &Limits::default());
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert_eq!((report.keys, report.ops, report.steps), (0, 0, 0));
}

#[test]
fn sequential_write_then_read() {
    assert_linearizable(&[
        read(1, None, 0, 1),
        write(1, 1, 2, 3),
        read(1, Some(1), 4, 5),
        write(2, 2, 6, 7),
        read(1, Some(2), 8, 9),
    ]);
}

#[test]
fn concurrent_writes_read_consistently_in_either_order() {
    // w1 and w2 overlap; readers agree on "2 then 1" ...
    assert_linearizable(&[
        write(1, 1, 0, 10),
        write(2, 2, 0, 10),
        read(3, Some(2), 2, 4),
        read(3, Some(1), 11, 12),
        read(4, Some(1), 13, 14),
    ]);
    // ... or on "1 then 2".
    assert_linearizable(&[
        write(1, 1, 0, 10),
        write(2, 2, 0, 10),
        read(3, Some(1), 2, 4),
        read(4, Some(1), 3, 5),
        read(3, Some(2), 11, 12),
    ]);
}

#[test]
fn cas_ok_and_cas_fail() {
    assert_linearizable(&[
        write(1, 1, 0, 1),
        cas(1, Some(1), 2, 2, 3, true),
        // Expected 1, but the register holds 2: the failure is legitimate.
        cas(2, Some(1), 3, 4, 5, false),
        cas(2, None, 4, 6, 7, false),
        read(1, Some(2), 8, 9),
    ]);
}

#[test]
fn cas_on_absent_key() {
    assert_linearizable(&[cas(1, None, 5, 0, 1, true), read(1, Some(5), 2, 3)]);
}

#[test]
fn info_write_later_observed() {
    assert_linearizable(&[
        write(1, 1, 0, 1),
        write_info(2, 2, 2),
        read(1, Some(1), 5, 6),
        // The timed-out write took effect long after its client gave up.
        read(1, Some(2), 100, 101),
    ]);
}

#[test]
fn info_write_never_observed() {
    assert_linearizable(&[
        write(1, 1, 0, 1),
        write_info(2, 2, 2),
        read(1, Some(1), 5, 6),
        read(1, Some(1), 100, 101),
    ]);
}

#[test]
fn info_cas_may_or_may_not_apply() {
    let info_cas = op(
        2,
        "k",
        Op::Cas {
            expected: Some(1),
            new: 2,
        },
        2,
        None,
        Outcome::Info,
    );
    assert_linearizable(&[
        write(1, 1, 0, 1),
        info_cas.clone(),
        read(1, Some(2), 10, 11),
    ]);
    assert_linearizable(&[write(1, 1, 0, 1), info_cas, read(1, Some(1), 10, 11)]);
}

#[test]
fn chain_of_info_cas_ops() {
    let info_cas =
        |p, expected, new, inv| op(p, "k", Op::Cas { expected, new }, inv, None, Outcome::Info);
    // Both timed-out Cas ops must have applied, in order, for the read.
    let history = [
        info_cas(1, None, 1, 0),
        info_cas(2, Some(1), 2, 1),
        read(3, Some(2), 10, 11),
    ];
    assert_linearizable(&history);
    // Value 1 can't come back once 2 was observed.
    let mut history = history.to_vec();
    history.push(read(3, Some(1), 20, 21));
    assert_violation(&history);
}

#[test]
fn info_write_explains_failed_cas() {
    // The Cas expecting absence failed: only the timed-out write (whose
    // value nobody reads) can explain it.
    let fail = cas(2, None, 7, 5, 6, false);
    assert_linearizable(&[write_info(1, 5, 0), fail.clone()]);
    assert_violation(std::slice::from_ref(&fail));
    // A write invoked only after the Cas returned cannot explain it.
    assert_violation(&[fail.clone(), write_info(1, 5, 7)]);
    // Once that write landed the key can never be absent again.
    assert_violation(&[write_info(1, 5, 0), fail, read(3, None, 8, 9)]);
}

#[test]
fn touching_intervals_are_concurrent() {
    // The read starts at the instant the write completes; closed intervals
    // make them concurrent, so the read may be ordered first.
    assert_linearizable(&[write(1, 1, 0, 10), read(2, None, 10, 20)]);
    // One tick later the write strictly precedes the read.
    assert_violation(&[write(1, 1, 0, 10), read(2, None, 11, 20)]);
}

#[test]
fn malformed_and_failed_reads_are_ignored() {
    assert_linearizable(&[
        write(1, 1, 0, 1),
        op(2, "k", Op::Read, 2, Some(3), Outcome::Ok(None)),
        op(2, "k", Op::Read, 4, Some(5), Outcome::Fail),
        op(2, "k", Op::Read, 6, None, Outcome::Info),
        read(1, Some(1), 7, 8),
    ]);
}

#[test]
fn failed_write_not_observed_is_fine() {
    assert_linearizable(&[
        write(1, 1, 0, 1),
        write_fail(2, 2, 2, 3),
        read(1, Some(1), 4, 5),
    ]);
}

#[test]
fn stale_read_after_completed_writes() {
    let stale = read(3, Some(1), 20, 21);
    let window = assert_violation(&[write(1, 1, 0, 1), write(2, 2, 10, 11), stale.clone()]);
    assert_eq!(window[0], stale);
    // The window shows the write that is being read and the one that
    // overwrote it.
    assert!(window.iter().any(|o| o.op == Op::Write(1)));
    assert!(window.iter().any(|o| o.op == Op::Write(2)));
}

#[test]
fn writes_observed_in_both_orders() {
    // w1 and w2 both span [0, 100]. Process 3 reads 1 (ending by t=20) and
    // later 2 (starting at t>=30): since each write happens once, w1 must
    // take effect before t=20 and w2 after t=30. Process 4 reads 2 by t=20
    // and 1 from t>=30, forcing w2 before t=20 and w1 after t=30. No single
    // order of the two writes satisfies both readers.
    assert_violation(&[
        write(1, 1, 0, 100),
        write(2, 2, 0, 100),
        read(3, Some(1), 10, 20),
        read(3, Some(2), 30, 40),
        read(4, Some(2), 10, 20),
        read(4, Some(1), 30, 40),
    ]);
}

#[test]
fn lost_write() {
    let lost = read(2, None, 20, 30);
    let window = assert_violation(&[write(1, 1, 0, 10), lost.clone()]);
    assert_eq!(window[0], lost);
    assert_eq!(window[1], write(1, 1, 0, 10));
}

#[test]
fn failed_write_observed() {
    let window = assert_violation(&[write_fail(1, 5, 0, 10), read(2, Some(5), 20, 30)]);
    // The window names the read and the write it should not have seen.
    assert_eq!(window[0].op, Op::Read);
    assert!(window.iter().any(|o| o.op == Op::Write(5)));
}

#[test]
fn cas_fail_when_state_must_equal_expected() {
    // After the write completes, the register certainly holds 1, so a Cas
    // expecting 1 cannot legitimately fail.
    let bad = cas(2, Some(1), 2, 20, 30, false);
    let window = assert_violation(&[write(1, 1, 0, 10), bad.clone()]);
    assert_eq!(window[0], bad);
    // With no writes at all the key is absent; a Cas expecting absence can't fail.
    assert_violation(&[cas(1, None, 2, 0, 1, false)]);
}

#[test]
fn cas_ok_with_wrong_expectation() {
    assert_violation(&[write(1, 1, 0, 10), cas(2, Some(7), 2, 20, 30, true)]);
}

#[test]
fn violation_is_reported_on_its_own_key() {
    let mut history = Vec::new();
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        let base = i as u64 * 100;
        history.push(op(
            1,
            key,
            Op::Write(base + 1),
            base,
            Some(base + 5),
            Outcome::Ok(None),
        ));
        history.push(op(
            2,
            key,
            Op::Read,
            base + 10,
            Some(base + 15),
            Outcome::Ok(Some(Some(base + 1))),
        ));
    }
    // Key "b" loses its write; keys "a" and "c" are fine.
    history.push(op(
        3,
        "b",
        Op::Read,
        150,
        Some(160),
        Outcome::Ok(Some(None)),
    ));
    let report = check(&history, &Limits::default());
    assert_eq!((report.keys, report.ops, report.ok), (3, 7, 7));
    match report.verdict {
        Verdict::NotLinearizable { key, window } => {
            assert_eq!(key, "b");
            assert!(window.iter().all(|o| o.key == "b"));
        }
        other => panic!("expected violation on b, got {other}"),
    }
    // Without the bad read every key passes.
    history.pop();
    assert_eq!(
        check(&history, &Limits::default()).verdict,
        Verdict::Linearizable
    );
}

#[test]
fn report_counts_outcomes() {
    let report = check(
        &[
            write(1, 1, 0, 1),
            write_fail(2, 2, 0, 1),
            write_info(3, 3, 0),
            read(1, Some(1), 2, 3),
        ],
        &Limits::default(),
    );
    assert_eq!(report.verdict, Verdict::Linearizable);
    assert_eq!(
        (report.keys, report.ops, report.ok, report.fail, report.info),
        (1, 4, 2, 1, 1)
    );
}

#[test]
fn budget_exhaustion_on_concurrent_writes_gives_unknown() {
    // 40 fully concurrent writes and reads of every value, then a read of
    // the absent key after everything completed. It is not linearizable,
    // but proving it requires exploring orders of 80 concurrent operations.
    let mut history = Vec::new();
    for v in 0..40u64 {
        history.push(write(v, v + 1, 0, 1000));
        history.push(read(100 + v, Some(v + 1), 0, 1000));
    }
    history.push(read(1000, None, 2000, 2001));
    let limits = Limits {
        max_steps_per_key: 1000,
    };
    let report = check(&history, &limits);
    assert_eq!(
        report.verdict,
        Verdict::Unknown {
            key: "k".to_owned()
        }
    );
    assert!(report.steps <= 1000);
}

#[test]
fn budget_exhaustion_on_info_writes_gives_unknown() {
    // 40 timed-out writes that may apply at any time, each observed once,
    // followed by a write and a read that contradicts it.
    let mut history = Vec::new();
    for v in 0..40u64 {
        history.push(write_info(v, v + 1, v));
        history.push(read(100 + v, Some(v + 1), 50 + v, 200));
    }
    history.push(write(500, 999, 300, 301));
    history.push(read(501, None, 400, 401));
    let limits = Limits {
        max_steps_per_key: 1000,
    };
    let report = check(&history, &limits);
    assert_eq!(
        report.verdict,
        Verdict::Unknown {
            key: "k".to_owned()
        }
    );
}

#[test]
fn violation_beats_unknown_on_other_keys() {
    let mut history = Vec::new();
    for v in 0..40u64 {
        history.push(write(v, v + 1, 0, 1000));
        history.push(read(100 + v, Some(v + 1), 0, 1000));
    }
    history.push(read(1000, None, 2000, 2001));
    // Key "z" is checked after "k" and has a plain lost write.
    history.push(op(1, "z", Op::Write(1), 0, Some(1), Outcome::Ok(None)));
    history.push(op(1, "z", Op::Read, 2, Some(3), Outcome::Ok(Some(None))));
    let report = check(
        &history,
        &Limits {
            max_steps_per_key: 1000,
        },
    );
    assert!(matches!(report.verdict, Verdict::NotLinearizable { ref key, .. } if key == "z"));
}

#[test]
fn display_explains_violation() {
    let v = verdict(&[write(1, 1, 0, 10), read(2, None, 20, 30)]);
    let text = v.to_string();
    assert!(text.contains("NOT linearizable"), "{text}");
    assert!(text.contains("\"k\""), "{text}");
    assert!(
        text.contains("process 2: read => absent  [20 .. 30]"),
        "{text}"
    );
    assert!(
        text.contains("process 1: write 1 => ok  [0 .. 10]"),
        "{text}"
    );
    assert!(
        Verdict::Linearizable
            .to_string()
            .starts_with("linearizable")
    );
    assert!(
        Verdict::Unknown { key: "x".into() }
            .to_string()
            .contains("budget")
    );
}

#[test]
fn window_is_capped_at_a_dozen() {
    let mut history = vec![write(0, 1, 0, 1)];
    for v in 2..32u64 {
        history.push(write(v, v, 10, 100));
        history.push(read(100 + v, Some(v), 10, 100));
    }
    // Nobody ever wrote 777; sixty operations overlap the bad read.
    let bad = read(999, Some(777), 50, 60);
    history.push(bad.clone());
    let window = assert_violation(&history);
    assert_eq!(window.len(), 12);
    assert_eq!(window[0], bad);
    // The latest write completed before the bad read is part of the context.
    assert!(window.contains(&write(0, 1, 0, 1)));
    // The rest is in invocation order.
    assert!(window[1..].windows(2).all(|w| w[0].invoke <= w[1].invoke));
}

fn delete(p: u64, inv: u64, comp: u64) -> Operation {
    op(p, "k", Op::Delete, inv, Some(comp), Outcome::Ok(None))
}

fn delete_info(p: u64, inv: u64) -> Operation {
    op(p, "k", Op::Delete, inv, None, Outcome::Info)
}

#[test]
fn a_delete_makes_the_key_absent_again() {
    assert_linearizable(&[
        write(1, 1, 0, 10),
        delete(2, 20, 30),
        read(3, None, 40, 50),
        cas(4, None, 2, 60, 70, true),
        read(3, Some(2), 80, 90),
    ]);
}

#[test]
fn a_value_read_after_a_completed_delete_is_a_violation() {
    let window = assert_violation(&[
        write(1, 1, 0, 10),
        delete(2, 20, 30),
        read(3, Some(1), 40, 50),
    ]);
    assert_eq!(window[0].op, Op::Read);
}

#[test]
fn absence_after_a_write_needs_a_delete() {
    // No delete at all: absence after the write completed is impossible.
    assert_violation(&[write(1, 1, 0, 10), read(3, None, 40, 50)]);
    // A delete whose outcome is unknown may explain it, as may a failed
    // Cas expecting a value that the delete removed.
    assert_linearizable(&[
        write(1, 1, 0, 10),
        delete_info(2, 15),
        read(3, None, 40, 50),
        cas(4, Some(1), 5, 60, 70, false),
    ]);
    // But not before the delete was invoked.
    assert_violation(&[
        write(1, 1, 0, 10),
        read(3, None, 20, 30),
        delete_info(2, 35),
    ]);
}

#[test]
fn a_delete_round_trips_through_the_history_format() {
    let history = vec![delete(2, 20, 30), delete_info(3, 40)];
    let mut text = String::new();
    check::history::write(&history, &mut text);
    assert!(text.contains("\"f\":\"delete\""), "{text}");
    let parsed = check::history::parse(&text).expect("parses");
    assert_eq!(parsed.len(), 2);
    assert!(parsed.iter().all(|o| o.op == Op::Delete));
}
