//! Cross-checks the checker against a brute-force reference on many small
//! random histories (linearizable or not), including duplicate values,
//! Info operations, failed Cas ops and deletes: the checker's pruning (shields,
//! canonical placement of optional ops, dominance) must never change the
//! answer.

use std::collections::HashSet;

use check::{Limits, Op, Operation, Outcome, Value, Verdict, check};

/// Tiny xorshift64* generator so the tests need no external crates.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Operation semantics in the reference: what must hold and what it does.
#[derive(Clone, Copy)]
struct RefOp {
    invoke: u64,
    /// `None` for optional (Info) operations.
    complete: Option<u64>,
    op: RefKind,
}

#[derive(Clone, Copy)]
enum RefKind {
    Read(Option<Value>),
    Write(Value),
    Delete,
    Cas(Option<Value>, Value),
    CasFail(Option<Value>),
}

impl RefKind {
    fn apply(self, state: Option<Value>) -> Option<Option<Value>> {
        match self {
            RefKind::Read(v) => (v == state).then_some(state),
            RefKind::Write(v) => Some(Some(v)),
            RefKind::Delete => Some(None),
            RefKind::Cas(e, n) => (e == state).then_some(Some(n)),
            RefKind::CasFail(e) => (e != state).then_some(state),
        }
    }
}

/// Straight from the specification of the history format.
fn to_ref(o: &Operation) -> Option<RefOp> {
    let required = |op| RefOp {
        invoke: o.invoke,
        complete: Some(o.complete.unwrap_or(u64::MAX).max(o.invoke)),
        op,
    };
    let optional = |op| RefOp {
        invoke: o.invoke,
        complete: None,
        op,
    };
    match (&o.op, &o.outcome) {
        (Op::Read, Outcome::Ok(Some(v))) => Some(required(RefKind::Read(*v))),
        (Op::Read, _) | (Op::Write(_) | Op::Delete, Outcome::Fail) => None,
        (Op::Delete, Outcome::Ok(_)) => Some(required(RefKind::Delete)),
        (Op::Delete, Outcome::Info) => Some(optional(RefKind::Delete)),
        (Op::Write(v), Outcome::Ok(_)) => Some(required(RefKind::Write(*v))),
        (Op::Write(v), Outcome::Info) => Some(optional(RefKind::Write(*v))),
        (Op::Cas { expected, new }, Outcome::Ok(_)) => {
            Some(required(RefKind::Cas(*expected, *new)))
        }
        (Op::Cas { expected, .. }, Outcome::Fail) => Some(required(RefKind::CasFail(*expected))),
        (Op::Cas { expected, new }, Outcome::Info) => Some(optional(RefKind::Cas(*expected, *new))),
    }
}

/// Exhaustive search over all orders consistent with real time: an op may
/// go next once every required op that completed before it was invoked is
/// placed. Optional ops may be skipped. Memoised on (placed set, state).
fn reference(ops: &[RefOp]) -> bool {
    fn go(
        ops: &[RefOp],
        placed: u32,
        state: Option<Value>,
        seen: &mut HashSet<(u32, Option<Value>)>,
    ) -> bool {
        let all_required = ops
            .iter()
            .enumerate()
            .all(|(i, o)| o.complete.is_none() || placed & (1 << i) != 0);
        if all_required {
            return true;
        }
        if !seen.insert((placed, state)) {
            return false;
        }
        for (i, o) in ops.iter().enumerate() {
            if placed & (1 << i) != 0 {
                continue;
            }
            let minimal = ops
                .iter()
                .enumerate()
                .all(|(j, r)| placed & (1 << j) != 0 || r.complete.is_none_or(|c| c >= o.invoke));
            if !minimal {
                continue;
            }
            if let Some(next) = o.op.apply(state)
                && go(ops, placed | (1 << i), next, seen)
            {
                return true;
            }
        }
        false
    }
    go(ops, 0, None, &mut HashSet::new())
}

/// A random single-key history of 2..=9 operations. With `unique`, every
/// write/Cas writes a distinct value; otherwise values come from {1, 2, 3}.
/// Reads and Cas expectations pick from the values written in the history
/// (or absence), so most histories need a real search to decide. With
/// `deletes`, a quarter of the writes are deletes instead.
fn random_history(rng: &mut Rng, unique: bool, deletes: bool) -> Vec<Operation> {
    let n = 2 + rng.below(11);
    let written: Vec<Value> = (0..n)
        .map(|i| if unique { 10 + i } else { 1 + rng.below(3) })
        .collect();
    let observe = |rng: &mut Rng| {
        let i = rng.below(n + 1);
        written.get(i as usize).copied()
    };
    (0..n)
        .map(|i| {
            let invoke = rng.below(30);
            let complete = invoke + rng.below(12);
            let (op, outcome) = match rng.below(3) {
                0 => (
                    Op::Read,
                    match rng.below(10) {
                        0 => Outcome::Fail,
                        1 => Outcome::Info,
                        2 => Outcome::Ok(None),
                        _ => Outcome::Ok(Some(observe(rng))),
                    },
                ),
                1 => (
                    if deletes && rng.below(4) == 0 {
                        Op::Delete
                    } else {
                        Op::Write(written[i as usize])
                    },
                    match rng.below(5) {
                        0 => Outcome::Fail,
                        1 | 2 => Outcome::Info,
                        _ => Outcome::Ok(None),
                    },
                ),
                _ => (
                    Op::Cas {
                        expected: observe(rng),
                        new: written[i as usize],
                    },
                    match rng.below(5) {
                        0 | 1 => Outcome::Fail,
                        2 => Outcome::Info,
                        _ => Outcome::Ok(None),
                    },
                ),
            };
            let complete = (outcome != Outcome::Info).then_some(complete);
            Operation {
                process: i,
                key: "k".to_owned(),
                op,
                invoke,
                complete,
                outcome,
            }
        })
        .collect()
}

fn cross_check(seeds: std::ops::Range<u64>, unique: bool, deletes: bool) -> (usize, usize) {
    let (mut yes, mut no) = (0, 0);
    for seed in seeds {
        let mut rng = Rng::new(seed);
        let history = random_history(&mut rng, unique, deletes);
        let refs: Vec<RefOp> = history.iter().filter_map(to_ref).collect();
        let expected = reference(&refs);
        let verdict = check(&history, &Limits::default()).verdict;
        match (&verdict, expected) {
            (Verdict::Linearizable, true) => yes += 1,
            (Verdict::NotLinearizable { window, .. }, false) => {
                assert!(!window.is_empty() && window.len() <= 12);
                no += 1;
            }
            _ => panic!(
                "seed {seed}: reference says {expected}, checker says {verdict}\n{history:#?}"
            ),
        }
    }
    eprintln!("linearizable {yes}, not {no}");
    (yes, no)
}

#[test]
fn agrees_with_brute_force_unique_values() {
    let (yes, no) = cross_check(0..20_000, true, false);
    assert!(yes > 2000 && no > 2000, "linearizable {yes}, not {no}");
}

#[test]
fn agrees_with_brute_force_duplicate_values() {
    let (yes, no) = cross_check(100_000..120_000, false, false);
    assert!(yes > 2000 && no > 2000, "linearizable {yes}, not {no}");
}

/// Deletes make the key absent again: a read of absence, or a Cas
/// expecting it, after the key was written needs one, and an unknown
/// delete may be that one.
#[test]
fn agrees_with_brute_force_with_deletes() {
    let (yes, no) = cross_check(200_000..220_000, true, true);
    assert!(yes > 2000 && no > 2000, "linearizable {yes}, not {no}");
    let (yes, no) = cross_check(300_000..320_000, false, true);
    assert!(yes > 2000 && no > 2000, "linearizable {yes}, not {no}");
}
