//! Picks the few operations a human needs to see to understand a violation.

use crate::{Op, Operation, Outcome, Value};

/// Upper bound on the window length: enough context, still readable.
const MAX_WINDOW: usize = 12;
/// How many writers of the needed value to show.
const MAX_WRITERS: usize = 3;
/// How many of the latest writes completed before the blocker to show.
const MAX_PRECEDING: usize = 2;

/// Latest instant at which `op` could have taken effect.
fn end(op: &Operation) -> u64 {
    match op.outcome {
        Outcome::Info => u64::MAX,
        _ => op.complete.unwrap_or(u64::MAX).max(op.invoke),
    }
}

/// The value `op` had to observe to succeed, if any.
fn needed(op: &Operation) -> Option<Value> {
    match (&op.op, &op.outcome) {
        (Op::Read, Outcome::Ok(Some(v))) => *v,
        (Op::Cas { expected, .. }, Outcome::Ok(_)) => *expected,
        _ => None,
    }
}

/// The value `op` writes (or attempted to write), whatever its outcome.
fn written(op: &Operation) -> Option<Value> {
    match op.op {
        Op::Write(v) | Op::Cas { new: v, .. } => Some(v),
        Op::Read | Op::Delete => None,
    }
}

/// Whether `op` carries information the checker used (dropped reads and
/// failed writes are noise in a window, unless they wrote a needed value).
fn relevant(op: &Operation) -> bool {
    match (&op.op, &op.outcome) {
        (Op::Read, Outcome::Ok(Some(_))) => true,
        (Op::Read, _) | (Op::Write(_) | Op::Delete, Outcome::Fail) => false,
        _ => true,
    }
}

/// Whether `op` certainly changed the register when it completed.
fn completed_write(op: &Operation) -> bool {
    matches!(op.op, Op::Write(_) | Op::Delete | Op::Cas { .. })
        && matches!(op.outcome, Outcome::Ok(_))
}

/// Appends `i` unless it is already present or the window is full.
fn add(chosen: &mut Vec<usize>, i: usize) {
    if chosen.len() < MAX_WINDOW && !chosen.contains(&i) {
        chosen.push(i);
    }
}

/// Builds the violation window for `blocker` among the key's `indices`:
/// the blocker first, then (in invocation order) writers of the value it
/// needed, the latest writes completed before it, and operations that
/// overlap it in time (unknown outcomes only if invoked since those
/// writes), capped at [`MAX_WINDOW`].
pub(crate) fn build(history: &[Operation], indices: &[usize], blocker: usize) -> Vec<Operation> {
    let Some(b) = history.get(blocker) else {
        return Vec::new();
    };
    let (start, stop) = (b.invoke, end(b));
    let mut chosen = vec![blocker];

    if let Some(v) = needed(b) {
        let writers = indices
            .iter()
            .copied()
            .filter(|&i| written(&history[i]) == Some(v))
            .take(MAX_WRITERS);
        for i in writers {
            add(&mut chosen, i);
        }
    }

    let mut preceding: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| {
            let op = &history[i];
            completed_write(op) && op.complete.is_some_and(|c| c < start)
        })
        .collect();
    preceding.sort_by_key(|&i| std::cmp::Reverse((history[i].complete, i)));
    preceding.truncate(MAX_PRECEDING);
    for &i in &preceding {
        add(&mut chosen, i);
    }
    // Operations with unknown outcome never end, so they overlap everything
    // after them; only those invoked since the writes shown above are
    // likely to matter to a reader.
    let context = preceding
        .iter()
        .map(|&i| history[i].invoke)
        .fold(start, u64::min);

    // Overlapping ops: completed writes first (they explain state changes),
    // then reads, then unknown outcomes; closest in time to the blocker first.
    let mut overlapping: Vec<usize> = indices
        .iter()
        .copied()
        .filter(|&i| {
            let op = &history[i];
            let recent = op.outcome != Outcome::Info || op.invoke >= context;
            relevant(op) && recent && op.invoke <= stop && end(op) >= start
        })
        .collect();
    overlapping.sort_by_key(|&i| {
        let op = &history[i];
        let rank = match (&op.op, &op.outcome) {
            (_, Outcome::Info) => 2,
            (Op::Read, _) => 1,
            _ => 0,
        };
        (rank, op.invoke.abs_diff(start), i)
    });
    for i in overlapping {
        add(&mut chosen, i);
    }

    debug_assert!(chosen.len() <= MAX_WINDOW && chosen[0] == blocker);
    chosen[1..].sort_by_key(|&i| (history[i].invoke, history[i].complete, i));
    chosen.into_iter().map(|i| history[i].clone()).collect()
}
