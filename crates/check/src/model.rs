//! The register model and the translation of one key's recorded operations
//! into the form the search works on.

use std::collections::{HashMap, HashSet};

use crate::{Op, Operation, Outcome, Value};

/// Register state: the current value, `None` when the key is absent.
pub(crate) type State = Option<Value>;

/// The semantic effect an operation must have when linearized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Must observe exactly this state.
    Read(State),
    /// Unconditionally sets the value.
    Write(Value),
    /// Unconditionally makes the key absent.
    Delete,
    /// Must observe `expected`, then sets `new`.
    Cas { expected: State, new: Value },
    /// Must observe anything but `expected`; no effect.
    CasFail { expected: State },
}

impl Kind {
    /// Applies the operation to `state`; `None` if it cannot happen there.
    pub(crate) fn step(self, state: State) -> Option<State> {
        match self {
            Kind::Read(v) => (state == v).then_some(state),
            Kind::Write(v) => Some(Some(v)),
            Kind::Delete => Some(None),
            Kind::Cas { expected, new } => (state == expected).then_some(Some(new)),
            Kind::CasFail { expected } => (state != expected).then_some(state),
        }
    }

    /// Value this operation writes, if it writes one (a delete writes
    /// none: it leaves the key absent).
    pub(crate) fn written(self) -> Option<Value> {
        match self {
            Kind::Write(v) | Kind::Cas { new: v, .. } => Some(v),
            Kind::Read(_) | Kind::CasFail { .. } | Kind::Delete => None,
        }
    }

    /// The state this operation leaves, if it changes the register.
    pub(crate) fn writes(self) -> Option<State> {
        match self {
            Kind::Write(v) | Kind::Cas { new: v, .. } => Some(Some(v)),
            Kind::Delete => Some(None),
            Kind::Read(_) | Kind::CasFail { .. } => None,
        }
    }

    /// Value this operation compares the register against, if any.
    pub(crate) fn compared(self) -> Option<Value> {
        match self {
            Kind::Read(v) | Kind::Cas { expected: v, .. } | Kind::CasFail { expected: v } => v,
            Kind::Write(_) | Kind::Delete => None,
        }
    }

    /// Value the register must hold for this operation to be legal.
    fn needed(self) -> Option<Value> {
        match self {
            Kind::Read(v) | Kind::Cas { expected: v, .. } => v,
            Kind::Write(_) | Kind::Delete | Kind::CasFail { .. } => None,
        }
    }
}

/// An operation that constrains the search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prepared {
    pub(crate) kind: Kind,
    pub(crate) invoke: u64,
    /// Latest linearization time; `None` for optional (Info) operations,
    /// which may also never be linearized.
    pub(crate) ret: Option<u64>,
    /// Index in the caller's history.
    pub(crate) orig: usize,
}

/// Translates a recorded operation into its search form, or `None` when it
/// constrains nothing (failed writes and reads, unknown or malformed reads).
pub(crate) fn prepare(op: &Operation, orig: usize) -> Option<Prepared> {
    // A completion missing on an operation that claims a definite outcome
    // is malformed; the op still happened, at some time after invoke.
    let ret = op.complete.unwrap_or(u64::MAX).max(op.invoke);
    let (kind, ret) = match (&op.op, &op.outcome) {
        (Op::Read, Outcome::Ok(Some(v))) => (Kind::Read(*v), Some(ret)),
        // Ok(None) on a read is malformed; Fail/Info reads observed nothing.
        (Op::Read, _) => return None,
        (Op::Write(v), Outcome::Ok(_)) => (Kind::Write(*v), Some(ret)),
        (Op::Write(v), Outcome::Info) => (Kind::Write(*v), None),
        (Op::Write(_), Outcome::Fail) => return None,
        (Op::Delete, Outcome::Ok(_)) => (Kind::Delete, Some(ret)),
        (Op::Delete, Outcome::Info) => (Kind::Delete, None),
        (Op::Delete, Outcome::Fail) => return None,
        (&Op::Cas { expected, new }, Outcome::Ok(_)) => (Kind::Cas { expected, new }, Some(ret)),
        (&Op::Cas { expected, .. }, Outcome::Fail) => (Kind::CasFail { expected }, Some(ret)),
        // An unknown Cas either matched and wrote, or had no effect at all,
        // which is the same as not being linearized.
        (&Op::Cas { expected, new }, Outcome::Info) => (Kind::Cas { expected, new }, None),
    };
    Some(Prepared {
        kind,
        invoke: op.invoke,
        ret,
        orig,
    })
}

/// A required operation: it must be linearized within `[invoke, ret]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Required {
    pub(crate) kind: Kind,
    pub(crate) invoke: u64,
    pub(crate) ret: u64,
    /// Index in the caller's history.
    pub(crate) orig: usize,
}

/// An optional operation: it may be linearized at any time after `invoke`,
/// or never. Only writes and successful Cas ops are optional.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Optional {
    pub(crate) kind: Kind,
    pub(crate) invoke: u64,
}

/// One key's sub-history, ready for the search.
pub(crate) struct Plan {
    /// Required operations.
    pub(crate) required: Vec<Required>,
    /// Optional operations other than shields, sorted by invocation time.
    pub(crate) optional: Vec<Optional>,
    /// Sorted invocation times of the "shields" (see [`plan`]).
    pub(crate) shields: Vec<u64>,
    /// Register value standing for "some value nobody observes"; differs
    /// from every value any operation mentions.
    pub(crate) wild: Value,
}

/// Splits the prepared operations into required ops, optional ops and
/// shields.
///
/// A *shield* is an optional write whose value no operation ever compares
/// against. Placing one sets the register to a value that every read and
/// successful Cas rejects and every failed Cas accepts, until the next
/// write; so shields only ever serve to make a failed Cas legal. They differ
/// only in their invocation time, and a shield usable at some point stays
/// usable later, so the search tracks only how many were used, not which:
/// without this, each one would double the search space.
///
/// Optional Cas ops whose new value is never compared and that are invoked
/// after every failed Cas has returned are dropped: they could only ever
/// matter to a failed Cas.
pub(crate) fn plan(prepared: Vec<Prepared>) -> Plan {
    let compared: HashSet<Value> = prepared.iter().filter_map(|p| p.kind.compared()).collect();
    let latest_cas_fail = prepared
        .iter()
        .filter(|p| matches!(p.kind, Kind::CasFail { .. }))
        .filter_map(|p| p.ret)
        .max();
    let mentioned: HashSet<Value> = prepared
        .iter()
        .flat_map(|p| [p.kind.compared(), p.kind.written()])
        .flatten()
        .collect();
    let mut wild = u64::MAX;
    while mentioned.contains(&wild) {
        wild -= 1;
    }

    let mut required = Vec::new();
    let mut optional = Vec::new();
    let mut shields = Vec::new();
    for p in prepared {
        let Some(ret) = p.ret else {
            let uncompared = p.kind.written().is_some_and(|v| !compared.contains(&v));
            match p.kind {
                Kind::Write(_) if uncompared => shields.push(p.invoke),
                Kind::Cas { .. } if uncompared && latest_cas_fail.is_none_or(|t| t < p.invoke) => {}
                kind => optional.push(Optional {
                    kind,
                    invoke: p.invoke,
                }),
            }
            continue;
        };
        debug_assert!(ret >= p.invoke, "return before call");
        required.push(Required {
            kind: p.kind,
            invoke: p.invoke,
            ret,
            orig: p.orig,
        });
    }
    optional.sort_by_key(|o| o.invoke);
    shields.sort_unstable();
    Plan {
        required,
        optional,
        shields,
        wild,
    }
}

/// Cheap necessary condition, checked before searching: every value a
/// required op needs must be written by some op invoked no later than that
/// op returns. Returns the history index of the earliest-invoked offender.
pub(crate) fn unwritten_reads(ops: &[Prepared]) -> Option<usize> {
    let mut first_writer: HashMap<Value, u64> = HashMap::new();
    for p in ops {
        if let Some(v) = p.kind.written() {
            let t = first_writer.entry(v).or_insert(p.invoke);
            *t = (*t).min(p.invoke);
        }
    }
    ops.iter()
        .filter(|p| {
            let (Some(ret), Some(v)) = (p.ret, p.kind.needed()) else {
                return false;
            };
            first_writer.get(&v).is_none_or(|&w| w > ret)
        })
        .min_by_key(|p| (p.invoke, p.orig))
        .map(|p| p.orig)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn prepared(kind: Kind, invoke: u64, ret: Option<u64>, orig: usize) -> Prepared {
        Prepared {
            kind,
            invoke,
            ret,
            orig,
        }
    }

    #[test]
    fn step_semantics() {
        assert_eq!(Kind::Read(None).step(None), Some(None));
        assert_eq!(Kind::Read(Some(1)).step(None), None);
        assert_eq!(Kind::Write(3).step(Some(1)), Some(Some(3)));
        let cas = Kind::Cas {
            expected: Some(1),
            new: 2,
        };
        assert_eq!(cas.step(Some(1)), Some(Some(2)));
        assert_eq!(cas.step(None), None);
        let fail = Kind::CasFail { expected: None };
        assert_eq!(fail.step(None), None);
        assert_eq!(fail.step(Some(4)), Some(Some(4)));
    }

    #[test]
    fn plan_pools_uncompared_info_writes() {
        let plan = plan(vec![
            prepared(Kind::Write(1), 0, None, 0), // never compared: shield
            prepared(Kind::Write(2), 3, None, 1), // read: optional
            prepared(Kind::Read(Some(2)), 5, Some(6), 2),
            prepared(Kind::CasFail { expected: Some(9) }, 7, Some(8), 3),
            prepared(Kind::Write(9), 4, None, 4), // compared by a Cas: optional
        ]);
        let required: Vec<usize> = plan.required.iter().map(|r| r.orig).collect();
        assert_eq!(required, vec![2, 3]);
        let optional: Vec<Kind> = plan.optional.iter().map(|o| o.kind).collect();
        assert_eq!(optional, vec![Kind::Write(2), Kind::Write(9)]);
        assert_eq!(plan.shields, vec![0]);
        assert!(![1, 2, 9].contains(&plan.wild));
    }

    #[test]
    fn plan_drops_uncompared_info_cas_unless_a_failed_cas_follows() {
        let cas = |new, invoke| {
            prepared(
                Kind::Cas {
                    expected: None,
                    new,
                },
                invoke,
                None,
                0,
            )
        };
        let plan = plan(vec![
            cas(10, 10), // a later failed Cas may need it
            prepared(Kind::CasFail { expected: Some(1) }, 12, Some(20), 1),
            cas(12, 30), // after every failed Cas: dropped
        ]);
        let optional: Vec<u64> = plan.optional.iter().map(|o| o.invoke).collect();
        assert_eq!(optional, vec![10]);
    }

    #[test]
    fn unwritten_read_is_detected_before_search() {
        let ops = vec![
            prepared(Kind::Read(Some(9)), 0, Some(5), 3),
            prepared(Kind::Write(9), 6, Some(7), 4),
        ];
        assert_eq!(unwritten_reads(&ops), Some(3));
        let ops = vec![
            prepared(Kind::Write(9), 5, Some(7), 4),
            prepared(Kind::Read(Some(9)), 0, Some(5), 3),
        ];
        assert_eq!(unwritten_reads(&ops), None);
    }
}
