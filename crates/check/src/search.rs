//! Per-key search: Wing & Gong backtracking with Lowe's memoisation.
//!
//! Each operation contributes a call event and (unless it is optional) a
//! return event; events are sorted by time into a doubly linked list. The
//! search walks the list from the front: at a call it tries to linearize the
//! operation now (removing both of its events from the list); at a return it
//! has found an operation that had to be linearized already, so it
//! backtracks. Optional operations (Info) have no return event: they may be
//! linearized at any point after their call, or never, and reaching the end
//! of the list means every required operation has been placed.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::{Op, Operation, Outcome, Value};

/// Register state: the current value, `None` when the key is absent.
type State = Option<Value>;

/// Result of checking one key.
pub(crate) struct KeyResult {
    /// Search steps spent on this key.
    pub steps: u64,
    /// The decision for this key.
    pub outcome: KeyOutcome,
}

/// Decision for one key.
pub(crate) enum KeyOutcome {
    /// A legal order exists.
    Linearizable,
    /// No legal order; `blocker` indexes the history operation that could
    /// not be linearized at the deepest point the search reached.
    Violation { blocker: usize },
    /// The step budget ran out.
    Exhausted,
}

/// The semantic effect an operation must have when linearized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Must observe exactly this state.
    Read(State),
    /// Unconditionally sets the value.
    Write(Value),
    /// Must observe `expected`, then sets `new`.
    Cas { expected: State, new: Value },
    /// Must observe anything but `expected`; no effect.
    CasFail { expected: State },
}

impl Kind {
    /// Applies the operation to `state`; `None` if it cannot happen there.
    fn step(self, state: State) -> Option<State> {
        match self {
            Kind::Read(v) => (state == v).then_some(state),
            Kind::Write(v) => Some(Some(v)),
            Kind::Cas { expected, new } => (state == expected).then_some(Some(new)),
            Kind::CasFail { expected } => (state != expected).then_some(state),
        }
    }

    /// Value this operation writes, if it writes one.
    fn written(self) -> Option<Value> {
        match self {
            Kind::Write(v) | Kind::Cas { new: v, .. } => Some(v),
            Kind::Read(_) | Kind::CasFail { .. } => None,
        }
    }

    /// Value this operation compares the register against, if any.
    fn compared(self) -> Option<Value> {
        match self {
            Kind::Read(v) | Kind::Cas { expected: v, .. } | Kind::CasFail { expected: v } => v,
            Kind::Write(_) => None,
        }
    }

    /// Value this operation needs to observe for it to be possible.
    fn needed(self) -> Option<Value> {
        match self {
            Kind::Read(v) | Kind::Cas { expected: v, .. } => v,
            Kind::Write(_) | Kind::CasFail { .. } => None,
        }
    }
}

/// An operation that takes part in the search.
#[derive(Clone, Copy, Debug)]
struct Prepared {
    kind: Kind,
    invoke: u64,
    /// Latest linearization time; `None` for optional (Info) operations,
    /// which may also never be linearized.
    ret: Option<u64>,
    /// Index in the caller's history.
    orig: usize,
}

/// Translates a recorded operation into its search form, or `None` when it
/// constrains nothing (failed writes and reads, unknown or malformed reads).
fn prepare(op: &Operation, orig: usize) -> Option<Prepared> {
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
        (Op::Cas { expected, new }, Outcome::Ok(_)) => (
            Kind::Cas {
                expected: *expected,
                new: *new,
            },
            Some(ret),
        ),
        (Op::Cas { expected, .. }, Outcome::Fail) => (
            Kind::CasFail {
                expected: *expected,
            },
            Some(ret),
        ),
        // An unknown Cas either matched and wrote, or had no effect at all,
        // which is the same as not being linearized.
        (Op::Cas { expected, new }, Outcome::Info) => (
            Kind::Cas {
                expected: *expected,
                new: *new,
            },
            None,
        ),
    };
    Some(Prepared {
        kind,
        invoke: op.invoke,
        ret,
        orig,
    })
}

/// Preprocessed form of one key's sub-history.
struct Plan {
    /// Operations that appear in the event list.
    ops: Vec<Prepared>,
    /// Sorted invocation times of the "shields" (see [`plan`]).
    shields: Vec<u64>,
    /// Register value standing for "some value nobody observes"; differs
    /// from every value any operation mentions.
    wild: Value,
}

/// Splits the prepared operations into list operations and shields.
///
/// A *shield* is an optional (Info) write whose value is never observed by
/// any read or compared by any Cas. Placing one in a linearization sets the
/// register to a value that every read and successful Cas rejects and every
/// failed Cas accepts, until the next write. Two facts make them cheap:
///
/// * Canonical position: in any linearization, a shield can be deleted, or
///   moved later to just before the first failed Cas that expects the state
///   the register had before the shield (the operations it passes over are
///   failed Cas ops that do not expect that state). So the search only ever
///   uses a shield to rescue a failed Cas that would otherwise be illegal.
/// * Interchangeability: shields differ only in their invocation time, and a
///   shield usable now stays usable (the earliest pending deadline never
///   decreases), so the search needs only *how many* were used, not which.
///
/// Without this, each such write could be placed anywhere after its
/// invocation, doubling the search space per write. Optional Cas ops with
/// unobserved new values are dropped when no failed Cas could be placed
/// after them (by the same argument they could only matter to one).
fn plan(prepared: Vec<Prepared>) -> Plan {
    let observed: HashSet<Value> = prepared.iter().filter_map(|p| p.kind.compared()).collect();
    let latest_cas_fail = prepared
        .iter()
        .filter(|p| matches!(p.kind, Kind::CasFail { .. }))
        .map(|p| p.ret.unwrap_or(u64::MAX))
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

    let mut ops = Vec::with_capacity(prepared.len());
    let mut shields = Vec::new();
    for p in prepared {
        let optional = p.ret.is_none();
        let unobserved = p.kind.written().is_some_and(|v| !observed.contains(&v));
        match p.kind {
            Kind::Write(_) if optional && unobserved => shields.push(p.invoke),
            Kind::Cas { .. }
                if optional && unobserved && latest_cas_fail.is_none_or(|t| t < p.invoke) => {}
            _ => ops.push(p),
        }
    }
    shields.sort_unstable();
    Plan { ops, shields, wild }
}

/// Cheap necessary condition: every value a required op needs must be
/// written by some (possibly optional) op invoked no later than the reader
/// returns. Returns the history index of the earliest-invoked offender.
fn unwritten_reads(ops: &[Prepared]) -> Option<usize> {
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

/// Checks the sub-history `indices` of `history` (all of one key).
pub(crate) fn check_key(history: &[Operation], indices: &[usize], budget: u64) -> KeyResult {
    let ops: Vec<Prepared> = indices
        .iter()
        .filter_map(|&i| history.get(i).and_then(|op| prepare(op, i)))
        .collect();
    let plan = plan(ops);
    if std::env::var_os("CHECK_DEBUG").is_some() {
        let opt: Vec<_> = plan.ops.iter().filter(|p| p.ret.is_none()).map(|p| (p.kind, p.invoke)).collect();
        eprintln!("ops {} shields {} optional {:?}", plan.ops.len(), plan.shields.len(), opt);
    }
    if let Some(blocker) = unwritten_reads(&plan.ops) {
        return KeyResult {
            steps: 0,
            outcome: KeyOutcome::Violation { blocker },
        };
    }
    Search::new(&plan).run(budget)
}

/// Sentinel marking "no partner" for optional operations' call nodes.
const NONE: usize = usize::MAX;
/// Index of the list head sentinel.
const HEAD: usize = 0;

/// A call or return event in the doubly linked list.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// Index into the prepared operations.
    op: usize,
    /// Whether this is a call event (else a return event).
    call: bool,
    /// For a call: its return node, or `NONE` for optional operations.
    partner: usize,
    prev: usize,
    next: usize,
}

/// The state of one key's search.
struct Search<'a> {
    ops: &'a [Prepared],
    /// Sorted invocation times of the shields.
    shields: &'a [u64],
    /// State after a shield has been placed.
    wild: State,
    nodes: Vec<Node>,
    /// Index of the tail sentinel.
    tail: usize,
    /// Per-operation position in the linearized set.
    slots: Vec<Slot>,
}

/// One linearized operation on the backtracking stack.
#[derive(Clone, Copy, Debug)]
struct Frame {
    /// Its call node.
    entry: usize,
    /// Configuration before it (and before its shield, if any).
    before: Scalars,
    /// The pass in which it was placed, to resume scanning in.
    optional_pass: bool,
}

impl<'a> Search<'a> {
    /// Builds the time-ordered event list.
    fn new(plan: &'a Plan) -> Self {
        let ops = plan.ops.as_slice();
        // (time, is_return, op): at equal times calls sort before returns so
        // that touching intervals count as concurrent (closed intervals).
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, p) in ops.iter().enumerate() {
            events.push((p.invoke, false, i));
            if let Some(ret) = p.ret {
                debug_assert!(ret >= p.invoke, "return before call");
                events.push((ret, true, i));
            }
        }
        events.sort_unstable();
        let tail = events.len() + 1;
        let mut nodes = Vec::with_capacity(events.len() + 2);
        nodes.push(Node {
            op: NONE,
            call: false,
            partner: NONE,
            prev: NONE,
            next: 1,
        });
        let mut return_node = vec![NONE; ops.len()];
        for (pos, &(_, is_return, op)) in events.iter().enumerate() {
            let idx = pos + 1;
            if is_return {
                return_node[op] = idx;
            }
            nodes.push(Node {
                op,
                call: !is_return,
                partner: NONE,
                prev: idx - 1,
                next: idx + 1,
            });
        }
        nodes.push(Node {
            op: NONE,
            call: false,
            partner: NONE,
            prev: tail - 1,
            next: NONE,
        });
        for node in nodes.iter_mut().take(tail).skip(1) {
            if node.call {
                node.partner = return_node[node.op];
            }
        }
        let mut counts = [0usize; 2];
        let slots = ops
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let optional = p.ret.is_none();
                let index = counts[usize::from(optional)];
                counts[usize::from(optional)] += 1;
                Slot {
                    optional,
                    index,
                    zobrist: mix((i as u64).wrapping_add(0x5bd1_e995)),
                }
            })
            .collect();
        Search {
            ops,
            shields: &plan.shields,
            wild: Some(plan.wild),
            nodes,
            tail,
            slots,
        }
    }

    /// Removes a node from the list, keeping its own links for `restore`.
    fn unlink(&mut self, i: usize) {
        let Node { prev, next, .. } = self.nodes[i];
        self.nodes[prev].next = next;
        self.nodes[next].prev = prev;
    }

    /// Puts a node back where `unlink` took it from.
    fn restore(&mut self, i: usize) {
        let Node { prev, next, .. } = self.nodes[i];
        self.nodes[prev].next = i;
        self.nodes[next].prev = i;
    }

    /// Removes a call node and its return node (operation linearized).
    fn lift(&mut self, call: usize) {
        debug_assert!(self.nodes[call].call);
        self.unlink(call);
        let ret = self.nodes[call].partner;
        if ret != NONE {
            self.unlink(ret);
        }
    }

    /// Undoes `lift` (in reverse order, as dancing links require).
    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].partner;
        if ret != NONE {
            self.restore(ret);
        }
        self.restore(call);
    }

    /// Whether an unused shield may be placed right before the call at
    /// `entry`. Every node before `entry` is a call, so the earliest
    /// pending deadline is the first return node after it; a shield is
    /// usable if it was invoked by then.
    fn shield_available(&self, entry: usize, used: usize) -> bool {
        if used >= self.shields.len() {
            return false;
        }
        let mut node = self.nodes[entry].next;
        while node != self.tail && self.nodes[node].call {
            node = self.nodes[node].next;
        }
        let deadline = if node == self.tail {
            u64::MAX
        } else {
            self.ops[self.nodes[node].op].ret.unwrap_or(u64::MAX)
        };
        self.shields.partition_point(|&t| t <= deadline) > used
    }

    /// Runs the search within `budget` steps.
    fn run(mut self, budget: u64) -> KeyResult {
        let mut done = Linearized::new(&self.slots);
        let mut scalars = Scalars {
            state: None,
            used: 0,
            owed: None,
        };
        let mut cache = Cache::default();
        let mut stack: Vec<Frame> = Vec::new();
        // Deepest dead end: (linearized count, op that had to be placed).
        let mut deepest: Option<(usize, usize)> = None;
        let mut steps = 0u64;
        let mut entry = self.nodes[HEAD].next;
        // Each position is scanned twice: first trying only required ops,
        // then only optional ones. Plain orders are explored before orders
        // that spend optional ops, so the cheaper (dominating)
        // configurations tend to be cached first.
        let mut optional_pass = false;
        loop {
            if entry == self.tail {
                return KeyResult {
                    steps,
                    outcome: KeyOutcome::Linearizable,
                };
            }
            if steps >= budget {
                if std::env::var_os("CHECK_DEBUG").is_some() {
                    let total: usize = cache.map.values().map(Vec::len).sum();
                    let owed = 0;
                    let mut sizes: Vec<usize> = cache.map.values().map(Vec::len).collect();
                    sizes.sort_unstable();
                    let mut used: HashMap<usize, usize> = HashMap::new();
                    for e in cache.map.values().flatten() { *used.entry(e.used).or_default() += 1; }
                    eprintln!("cache {total} buckets {} owed {owed} max bucket {:?} used {:?} deepest {:?} stack {}", cache.map.len(), &sizes[sizes.len().saturating_sub(10)..], used, deepest, stack.len());
                }
                return KeyResult {
                    steps,
                    outcome: KeyOutcome::Exhausted,
                };
            }
            steps += 1;
            let node = self.nodes[entry];
            if node.call {
                if let Some(next) = self.try_step(entry, scalars, optional_pass) {
                    let slot = self.slots[node.op];
                    done.toggle(slot);
                    // A configuration owing an optional op is reached only
                    // from its parent, which is cached; no need to cache it.
                    if next.owed.is_some() || cache.insert(&done, next) {
                        stack.push(Frame {
                            entry,
                            before: scalars,
                            optional_pass,
                        });
                        scalars = next;
                        self.lift(entry);
                        entry = self.nodes[HEAD].next;
                        optional_pass = false;
                        continue;
                    }
                    done.toggle(slot);
                }
                entry = node.next;
            } else if !optional_pass {
                optional_pass = true;
                entry = self.nodes[HEAD].next;
            } else {
                // A required op reached its return unplaced: dead end.
                if deepest.is_none_or(|(depth, _)| stack.len() > depth) {
                    deepest = Some((stack.len(), node.op));
                }
                let Some(frame) = stack.pop() else {
                    let blocker = deepest.map_or(node.op, |(_, op)| op);
                    return KeyResult {
                        steps,
                        outcome: KeyOutcome::Violation {
                            blocker: self.ops[blocker].orig,
                        },
                    };
                };
                done.toggle(self.slots[self.nodes[frame.entry].op]);
                scalars = frame.before;
                self.unlift(frame.entry);
                entry = self.nodes[frame.entry].next;
                optional_pass = frame.optional_pass;
            }
        }
    }

    /// The configuration after linearizing the call at `entry` now, or
    /// `None` if that is illegal, not in canonical form, or not tried in
    /// this pass. The plain pass tries required ops as they are; the
    /// optional pass tries optional ops, and required failed Cas ops
    /// preceded by a shield.
    fn try_step(&self, entry: usize, now: Scalars, optional_pass: bool) -> Option<Scalars> {
        let p = &self.ops[self.nodes[entry].op];
        // Canonical form: an optional op is placed only right before an op
        // that needs it, i.e. one that would be illegal without it.
        if let Some(before) = now.owed {
            if p.kind.step(before).is_some() {
                return None;
            }
        }
        let optional = p.ret.is_none();
        if optional == optional_pass {
            return p.kind.step(now.state).map(|state| Scalars {
                state,
                used: now.used,
                owed: optional.then_some(now.state),
            });
        }
        // A shield is a write, which never needs anything, so none may be
        // placed while an optional op is owed.
        let rescue = optional_pass
            && now.owed.is_none()
            && matches!(p.kind, Kind::CasFail { .. })
            && p.kind.step(now.state).is_none()
            && self.shield_available(entry, now.used);
        rescue.then(|| Scalars {
            state: p.kind.step(self.wild).unwrap_or(self.wild),
            used: now.used + 1,
            owed: None,
        })
    }
}

/// The part of a search configuration besides the linearized set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scalars {
    /// Register state.
    state: State,
    /// Shields placed so far.
    used: usize,
    /// Set right after an optional op is placed: the state before it. The
    /// next op placed must be illegal in that state (it needs the optional
    /// op), otherwise the optional op could have been placed later or not
    /// at all, and that order is explored elsewhere.
    owed: Option<State>,
}

impl Scalars {
    /// Hash contribution, combined with the linearized set's hash.
    fn hash(self) -> u64 {
        let state = |s: State| match s {
            None => 0x243f_6a88_85a3_08d3,
            Some(v) => mix(v ^ 0x1319_8a2e_0370_7344),
        };
        let owed = match self.owed {
            None => 0,
            Some(s) => mix(state(s) ^ 0x082e_fa98_ec4e_6c89),
        };
        state(self.state) ^ owed
    }
}

/// Where an operation's bit lives in [`Linearized`].
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Whether the operation is optional (tracked in the `optional` set).
    optional: bool,
    /// Bit index within its set.
    index: usize,
    /// Random key; the XOR of these identifies a set.
    zobrist: u64,
}

/// The set of linearized operations, split into required and optional ops
/// so that configurations can be compared by dominance (see [`Cache`]).
struct Linearized {
    required: Vec<u64>,
    optional: Vec<u64>,
    required_hash: u64,
}

impl Linearized {
    /// The empty set, sized for `slots`.
    fn new(slots: &[Slot]) -> Self {
        let count = |optional: bool| slots.iter().filter(|s| s.optional == optional).count();
        Linearized {
            required: vec![0; count(false).div_ceil(64)],
            optional: vec![0; count(true).div_ceil(64)],
            required_hash: 0,
        }
    }

    /// Adds or removes one operation.
    fn toggle(&mut self, slot: Slot) {
        if slot.optional {
            self.optional[slot.index / 64] ^= 1 << (slot.index % 64);
        } else {
            self.required[slot.index / 64] ^= 1 << (slot.index % 64);
            self.required_hash ^= slot.zobrist;
        }
    }
}

/// One explored configuration.
struct Explored {
    required: Box<[u64]>,
    optional: Box<[u64]>,
    used: usize,
    state: State,
}

/// Lowe's memo table of explored configurations, with dominance.
///
/// Configuration `A` dominates `B` when both have linearized the same
/// required ops and reached the same state, and `A` used a subset of `B`'s
/// optional ops and no more shields: every completion of `B` is also one of
/// `A` (unused optional ops can simply stay unused). Only configurations
/// owing nothing are cached. A cached configuration that is not on the
/// current search path has been fully explored without success, and one on
/// the path has fewer required ops than any configuration owing nothing
/// below it (only a required op settles a debt), so a configuration
/// dominated by a cached one can be skipped. Buckets are keyed by an
/// incrementally maintained hash so lookups never allocate.
#[derive(Default)]
struct Cache {
    map: HashMap<u64, Vec<Explored>, BuildHasherDefault<PassThrough>>,
}

impl Cache {
    /// Records a configuration; false if it (or one dominating it) was
    /// already explored.
    fn insert(&mut self, done: &Linearized, scalars: Scalars) -> bool {
        debug_assert!(scalars.owed.is_none());
        let hash = done.required_hash ^ scalars.hash();
        let bucket = self.map.entry(hash).or_default();
        let dominated = bucket.iter().any(|e| {
            e.state == scalars.state
                && e.used <= scalars.used
                && *e.required == *done.required
                && e.optional.iter().zip(&done.optional).all(|(a, b)| a & !b == 0)
        });
        if !dominated {
            bucket.push(Explored {
                required: done.required.as_slice().into(),
                optional: done.optional.as_slice().into(),
                used: scalars.used,
                state: scalars.state,
            });
        }
        !dominated
    }
}

/// Hasher for keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0 ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// SplitMix64 finaliser: a cheap bijective bit mixer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(kind: Kind, invoke: u64, ret: Option<u64>, orig: usize) -> Prepared {
        Prepared {
            kind,
            invoke,
            ret,
            orig,
        }
    }

    #[test]
    fn kind_step_semantics() {
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
    fn plan_pools_unobserved_info_writes() {
        let plan = plan(vec![
            prepared(Kind::Write(1), 0, None, 0), // unobserved: shield
            prepared(Kind::Write(2), 3, None, 1), // observed: kept
            prepared(Kind::Read(Some(2)), 5, Some(6), 2),
            prepared(Kind::CasFail { expected: Some(9) }, 7, Some(8), 3),
            prepared(Kind::Write(9), 4, None, 4), // compared by a Cas: kept
        ]);
        let kept: Vec<usize> = plan.ops.iter().map(|p| p.orig).collect();
        assert_eq!(kept, vec![1, 2, 3, 4]);
        assert_eq!(plan.shields, vec![0]);
        assert!(![1, 2, 9].contains(&plan.wild));
    }

    #[test]
    fn plan_drops_unobserved_info_cas_unless_a_failed_cas_follows() {
        let cas = |orig, invoke| {
            prepared(
                Kind::Cas {
                    expected: None,
                    new: 10 + orig as Value,
                },
                invoke,
                None,
                orig,
            )
        };
        let plan = plan(vec![
            cas(0, 10), // a later failed Cas may see it
            prepared(Kind::CasFail { expected: Some(1) }, 12, Some(20), 1),
            cas(2, 30), // after every failed Cas: dropped
        ]);
        let kept: Vec<usize> = plan.ops.iter().map(|p| p.orig).collect();
        assert_eq!(kept, vec![0, 1]);
    }

    #[test]
    fn shield_rescues_failed_cas() {
        // The register is absent; a failed Cas expecting absence is only
        // legal because a timed-out write (never read) landed first.
        let ops = vec![
            prepared(Kind::Write(5), 0, None, 0),
            prepared(Kind::CasFail { expected: None }, 1, Some(2), 1),
            prepared(Kind::Write(7), 3, Some(4), 2),
            prepared(Kind::Read(Some(7)), 5, Some(6), 3),
        ];
        let plan = plan(ops.clone());
        assert_eq!(plan.shields.len(), 1);
        assert!(matches!(Search::new(&plan).run(1000).outcome, KeyOutcome::Linearizable));
        // Without the write there is nothing to rescue it.
        let plan = plan_without_first(ops);
        assert!(matches!(Search::new(&plan).run(1000).outcome, KeyOutcome::Violation { blocker: 1 }));
    }

    #[test]
    fn shield_must_be_invoked_before_the_deadline() {
        // The timed-out write was invoked after the failed Cas returned.
        let plan = plan(vec![
            prepared(Kind::CasFail { expected: None }, 1, Some(2), 1),
            prepared(Kind::Write(5), 3, None, 0),
        ]);
        assert_eq!(plan.shields.len(), 1);
        assert!(matches!(Search::new(&plan).run(1000).outcome, KeyOutcome::Violation { blocker: 1 }));
    }

    fn plan_without_first(mut ops: Vec<Prepared>) -> Plan {
        ops.remove(0);
        plan(ops)
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
