//! Per-key search: Wing & Gong backtracking with Lowe's memoisation.
//!
//! Each required operation contributes a call and a return event; events
//! are sorted by time into a doubly linked list. The search walks the list
//! from the front: at a call it tries to linearize the operation now
//! (removing both of its events from the list); at a return it has found an
//! operation that had to be linearized already, so it backtracks. Reaching
//! the end of the list means every required operation has been placed.
//!
//! Optional (Info) operations are not in the list. If a history is
//! linearizable at all, it has a linearization in which every optional op
//! that is used belongs to a *chain* placed right before a required op that
//! is illegal in the state before the chain and legal after it, where each
//! chain member after the first is a Cas enabled by its predecessor (the
//! first may be a write, a delete or a Cas). (Any
//! other use can be moved later or deleted: an optional op has no deadline,
//! and moving it past an op that does not need it changes nothing that op
//! observes; a chain followed by an op legal without it can be moved past
//! that op or dropped.) So at each position the search first tries the
//! available required ops as they are and only then, in a second pass,
//! tries rescuing the illegal ones with chains of optional ops, or with a
//! shield (see [`model::plan`]) for a failed Cas.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::Operation;
use crate::model::{self, Kind, Optional, Plan, Required, State};

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

/// Checks the sub-history `indices` of `history` (all of one key).
pub(crate) fn check_key(history: &[Operation], indices: &[usize], budget: u64) -> KeyResult {
    let prepared: Vec<model::Prepared> = indices
        .iter()
        .filter_map(|&i| history.get(i).and_then(|op| model::prepare(op, i)))
        .collect();
    if let Some(blocker) = model::unwritten_reads(&prepared) {
        return KeyResult {
            steps: 0,
            outcome: KeyOutcome::Violation { blocker },
        };
    }
    let plan = model::plan(prepared);
    Search::new(&plan).run(budget)
}

/// Sentinel for "no node".
const NONE: usize = usize::MAX;
/// Index of the list head sentinel.
const HEAD: usize = 0;

/// A call or return event in the doubly linked list.
#[derive(Clone, Copy, Debug)]
struct Node {
    /// Index into the required operations.
    op: usize,
    /// Whether this is a call event (else a return event).
    call: bool,
    /// For a call: its return node.
    partner: usize,
    prev: usize,
    next: usize,
}

/// What must be produced by a rescue chain.
#[derive(Clone, Copy, Debug)]
enum Want {
    /// The register must end up in this state (a value, or absent).
    Is(State),
    /// The register must end up holding anything but this.
    Not(State),
}

/// A way to make an illegal required op legal: optional ops placed right
/// before it, in order, or one shield.
#[derive(Clone, Debug)]
enum Rescue {
    Chain(Vec<usize>),
    Shield,
}

/// Which pass the scan is in at the current position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Trying required ops as they are.
    Plain,
    /// Trying rescues, starting from the given alternative.
    Rescue(usize),
}

/// One placed required op (with its rescue) on the backtracking stack.
#[derive(Clone, Debug)]
struct Frame {
    /// Its call node.
    entry: usize,
    /// Configuration before it.
    before: Scalars,
    /// The pass that placed it, to resume scanning from.
    pass: Pass,
    /// Optional ops placed just before it.
    chain: Vec<usize>,
}

/// The part of a search configuration besides the linearized set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scalars {
    /// Register state.
    state: State,
    /// Shields placed so far.
    used: usize,
}

/// The state of one key's search.
struct Search<'a> {
    required: &'a [Required],
    optional: &'a [Optional],
    /// Sorted invocation times of the shields.
    shields: &'a [u64],
    /// State after a shield has been placed.
    wild: State,
    /// For each state, the optional ops that leave it (ascending index):
    /// writers of a value, and deletes for absence.
    producers: HashMap<State, Vec<usize>>,
    nodes: Vec<Node>,
    /// Index of the tail sentinel.
    tail: usize,
    /// Random per-required-op keys; their XOR identifies a set.
    zobrist: Vec<u64>,
}

impl<'a> Search<'a> {
    /// Builds the time-ordered event list.
    fn new(plan: &'a Plan) -> Self {
        let required = plan.required.as_slice();
        // (time, is_return, op): at equal times calls sort before returns so
        // that touching intervals count as concurrent (closed intervals).
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(required.len() * 2);
        for (i, r) in required.iter().enumerate() {
            events.push((r.invoke, false, i));
            events.push((r.ret, true, i));
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
        let mut return_node = vec![NONE; required.len()];
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
                debug_assert_ne!(node.partner, NONE, "call without return");
            }
        }
        let mut producers: HashMap<State, Vec<usize>> = HashMap::new();
        for (i, o) in plan.optional.iter().enumerate() {
            if let Some(s) = o.kind.writes() {
                producers.entry(s).or_default().push(i);
            }
        }
        let zobrist = (0..required.len() as u64)
            .map(|i| mix(i.wrapping_add(0x5bd1_e995)))
            .collect();
        Search {
            required,
            optional: &plan.optional,
            shields: &plan.shields,
            wild: Some(plan.wild),
            producers,
            nodes,
            tail,
            zobrist,
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
        self.unlink(self.nodes[call].partner);
    }

    /// Undoes `lift` (in reverse order, as dancing links require).
    fn unlift(&mut self, call: usize) {
        self.restore(self.nodes[call].partner);
        self.restore(call);
    }

    /// The earliest return time among unplaced required ops, given that
    /// every node before `entry` is a call: optional ops and shields
    /// invoked later than this cannot be placed before `entry`'s op.
    fn deadline(&self, entry: usize) -> u64 {
        let mut node = self.nodes[entry].next;
        while node != self.tail && self.nodes[node].call {
            node = self.nodes[node].next;
        }
        if node == self.tail {
            u64::MAX
        } else {
            self.required[self.nodes[node].op].ret
        }
    }

    /// All ways to make the (currently illegal) op at `entry` legal by
    /// placing optional ops or a shield right before it. Adds the work done
    /// to `steps` and gives up early once it exceeds `budget`.
    fn rescues(
        &self,
        entry: usize,
        now: Scalars,
        done: &Linearized,
        steps: &mut u64,
        budget: u64,
    ) -> Vec<Rescue> {
        let kind = self.required[self.nodes[entry].op].kind;
        debug_assert!(kind.step(now.state).is_none());
        let deadline = self.deadline(entry);
        let mut finder = ChainFinder {
            search: self,
            state: now.state,
            available: self.optional.partition_point(|o| o.invoke <= deadline),
            done,
            suffix: Vec::new(),
            found: Vec::new(),
            steps,
            budget,
        };
        let want = match kind {
            // Absence too: an optional delete may rescue it.
            Kind::Read(s) | Kind::Cas { expected: s, .. } => Want::Is(s),
            Kind::CasFail { expected } => {
                if self.shields.partition_point(|&t| t <= deadline) > now.used {
                    finder.found.push(Rescue::Shield);
                }
                Want::Not(expected)
            }
            // Writes and deletes are always legal.
            Kind::Write(_) | Kind::Delete => return finder.found,
        };
        finder.find(want);
        finder.found
    }

    /// Applies `rescue` and then the op at `entry` to `now`, updating
    /// `done`. Returns the new configuration and the chain placed.
    fn apply(
        &self,
        entry: usize,
        now: Scalars,
        rescue: &Rescue,
        done: &mut Linearized,
    ) -> Option<(Scalars, Vec<usize>)> {
        let kind = self.required[self.nodes[entry].op].kind;
        let (before_op, used, chain) = match rescue {
            Rescue::Shield => (self.wild, now.used + 1, Vec::new()),
            Rescue::Chain(chain) => {
                let mut state = now.state;
                for &o in chain {
                    let next = self.optional[o].kind.step(state);
                    debug_assert!(next.is_some(), "chain step illegal");
                    state = next?;
                }
                (state, now.used, chain.clone())
            }
        };
        let state = kind.step(before_op)?;
        for &o in &chain {
            done.toggle_optional(o);
        }
        Some((Scalars { state, used }, chain))
    }

    /// Runs the search within `budget` steps.
    fn run(mut self, budget: u64) -> KeyResult {
        let mut done = Linearized::new(self.required.len(), self.optional.len());
        let mut now = Scalars {
            state: None,
            used: 0,
        };
        let mut cache = Cache::default();
        let mut stack: Vec<Frame> = Vec::new();
        // Deepest dead end: (ops placed, required op that had to be placed).
        let mut deepest: Option<(usize, usize)> = None;
        let mut steps = 0u64;
        let mut entry = self.nodes[HEAD].next;
        let mut pass = Pass::Plain;
        loop {
            if entry == self.tail {
                return KeyResult {
                    steps,
                    outcome: KeyOutcome::Linearizable,
                };
            }
            if steps >= budget {
                return KeyResult {
                    steps,
                    outcome: KeyOutcome::Exhausted,
                };
            }
            steps += 1;
            let node = self.nodes[entry];
            if !node.call {
                if pass == Pass::Plain {
                    // Every plain option here failed; now try rescues.
                    pass = Pass::Rescue(0);
                    entry = self.nodes[HEAD].next;
                    continue;
                }
                // A required op reached its return unplaced: dead end.
                if deepest.is_none_or(|(depth, _)| stack.len() > depth) {
                    deepest = Some((stack.len(), node.op));
                }
                let Some(frame) = stack.pop() else {
                    let blocker = deepest.map_or(node.op, |(_, op)| op);
                    return KeyResult {
                        steps,
                        outcome: KeyOutcome::Violation {
                            blocker: self.required[blocker].orig,
                        },
                    };
                };
                done.toggle_required(
                    self.nodes[frame.entry].op,
                    self.zobrist[self.nodes[frame.entry].op],
                );
                for &o in &frame.chain {
                    done.toggle_optional(o);
                }
                now = frame.before;
                self.unlift(frame.entry);
                (entry, pass) = match frame.pass {
                    Pass::Plain => (self.nodes[frame.entry].next, Pass::Plain),
                    Pass::Rescue(alt) => (frame.entry, Pass::Rescue(alt + 1)),
                };
                continue;
            }

            let op = node.op;
            let legal = self.required[op].kind.step(now.state);
            let placed = match (pass, legal) {
                (Pass::Plain, Some(state)) => {
                    let next = Scalars {
                        state,
                        used: now.used,
                    };
                    self.commit(&mut done, &mut cache, entry, next).then_some((
                        Pass::Plain,
                        next,
                        Vec::new(),
                    ))
                }
                (Pass::Rescue(first), None) => {
                    let rescues = self.rescues(entry, now, &done, &mut steps, budget);
                    rescues
                        .iter()
                        .enumerate()
                        .skip(first)
                        .find_map(|(alt, rescue)| {
                            let (next, chain) = self.apply(entry, now, rescue, &mut done)?;
                            if self.commit(&mut done, &mut cache, entry, next) {
                                Some((Pass::Rescue(alt), next, chain))
                            } else {
                                for &o in &chain {
                                    done.toggle_optional(o);
                                }
                                None
                            }
                        })
                }
                _ => None,
            };
            match placed {
                Some((placed_pass, next, chain)) => {
                    stack.push(Frame {
                        entry,
                        before: now,
                        pass: placed_pass,
                        chain,
                    });
                    now = next;
                    self.lift(entry);
                    entry = self.nodes[HEAD].next;
                    pass = Pass::Plain;
                }
                None => {
                    entry = node.next;
                    if let Pass::Rescue(_) = pass {
                        pass = Pass::Rescue(0);
                    }
                }
            }
        }
    }

    /// Marks the op at `entry` linearized in `done` and records the
    /// resulting configuration; if it was already explored (or dominated),
    /// undoes the mark and returns false.
    fn commit(
        &self,
        done: &mut Linearized,
        cache: &mut Cache,
        entry: usize,
        next: Scalars,
    ) -> bool {
        let op = self.nodes[entry].op;
        done.toggle_required(op, self.zobrist[op]);
        if cache.insert(done, next) {
            true
        } else {
            done.toggle_required(op, self.zobrist[op]);
            false
        }
    }
}

/// Depth-first enumeration of rescue chains, built backwards from the op
/// that must end the chain.
struct ChainFinder<'s, 'a> {
    search: &'s Search<'a>,
    /// Register state before the chain.
    state: State,
    /// Optional ops with an index below this were invoked in time.
    available: usize,
    done: &'s Linearized,
    /// Ops already chosen to end the chain, last first.
    suffix: Vec<usize>,
    /// Rescues found so far.
    found: Vec<Rescue>,
    steps: &'s mut u64,
    budget: u64,
}

impl ChainFinder<'_, '_> {
    /// Finds chains that, started in `self.state`, leave the register as
    /// `want` says, each followed by `self.suffix`.
    fn find(&mut self, want: Want) {
        match want {
            Want::Is(v) => {
                // Producers are in ascending index order (invocation time).
                let (search, available) = (self.search, self.available);
                let producers = search.producers.get(&v).map_or(&[][..], Vec::as_slice);
                for &o in producers.iter().take_while(|&&o| o < available) {
                    if !self.consider(o, want) {
                        return;
                    }
                }
            }
            Want::Not(_) => {
                for o in 0..self.available {
                    if !self.consider(o, want) {
                        return;
                    }
                }
            }
        }
    }

    /// Considers ending the chain (before the suffix) with optional op `o`;
    /// false once the budget is spent.
    fn consider(&mut self, o: usize, want: Want) -> bool {
        *self.steps += 1;
        if *self.steps > self.budget {
            return false;
        }
        if self.done.has_optional(o) || self.suffix.contains(&o) {
            return true;
        }
        let kind = self.search.optional[o].kind;
        let Some(leaves) = kind.writes() else {
            return true;
        };
        if matches!(want, Want::Not(e) if e == leaves) {
            return true;
        }
        match kind {
            Kind::Cas { expected, .. } if expected != self.state => {
                // Needs its own predecessor leaving `expected` (a write, a
                // delete for absence, or a Cas). Chains that pass through
                // the starting state again are pointless: not explored.
                self.suffix.push(o);
                self.find(Want::Is(expected));
                self.suffix.pop();
            }
            _ => {
                let mut chain = Vec::with_capacity(self.suffix.len() + 1);
                chain.push(o);
                chain.extend(self.suffix.iter().rev());
                self.found.push(Rescue::Chain(chain));
            }
        }
        *self.steps <= self.budget
    }
}

/// The set of linearized operations, split into required and optional ops
/// so that configurations can be compared by dominance (see [`Cache`]).
struct Linearized {
    required: Vec<u64>,
    optional: Vec<u64>,
    required_hash: u64,
}

impl Linearized {
    /// The empty set.
    fn new(required: usize, optional: usize) -> Self {
        Linearized {
            required: vec![0; required.div_ceil(64)],
            optional: vec![0; optional.div_ceil(64)],
            required_hash: 0,
        }
    }

    /// Adds or removes a required op with the given random key.
    fn toggle_required(&mut self, i: usize, zobrist: u64) {
        self.required[i / 64] ^= 1 << (i % 64);
        self.required_hash ^= zobrist;
    }

    /// Adds or removes an optional op.
    fn toggle_optional(&mut self, i: usize) {
        self.optional[i / 64] ^= 1 << (i % 64);
    }

    /// Whether an optional op has been used.
    fn has_optional(&self, i: usize) -> bool {
        self.optional[i / 64] & (1 << (i % 64)) != 0
    }
}

/// One explored configuration, stored compactly: a linearized set is
/// nearly always "everything up to some point, part of a short frontier,
/// nothing after", so only the words between the leading all-ones words and
/// the trailing zero words are kept.
struct Explored {
    /// Number of leading all-ones words of the required set.
    ones: u32,
    /// How many of `words` belong to the required set.
    split: u32,
    /// The required set's middle words, then the optional set's words up to
    /// its last nonzero one.
    words: Box<[u64]>,
    scalars: Scalars,
}

/// The middle of a bitset: (leading all-ones words, end of nonzero words).
fn frontier(words: &[u64]) -> (usize, usize) {
    let ones = words.iter().take_while(|&&w| w == !0).count();
    let end = words.iter().rposition(|&w| w != 0).map_or(0, |i| i + 1);
    (ones, end.max(ones))
}

impl Explored {
    fn new(done: &Linearized, scalars: Scalars) -> Self {
        let (ones, end) = frontier(&done.required);
        let (_, optional_end) = frontier(&done.optional);
        let middle = &done.required[ones..end];
        let mut words = Vec::with_capacity(middle.len() + optional_end);
        words.extend_from_slice(middle);
        words.extend_from_slice(&done.optional[..optional_end]);
        Explored {
            ones: ones as u32,
            split: middle.len() as u32,
            words: words.into_boxed_slice(),
            scalars,
        }
    }

    /// Whether this configuration dominates `done` with `scalars`, whose
    /// required set's frontier is `(ones, end)`.
    fn dominates(&self, done: &Linearized, (ones, end): (usize, usize), scalars: Scalars) -> bool {
        let (required, optional) = self.words.split_at(self.split as usize);
        self.scalars.state == scalars.state
            && self.scalars.used <= scalars.used
            && self.ones as usize == ones
            && *required == done.required[ones..end]
            && optional
                .iter()
                .zip(&done.optional)
                .all(|(a, b)| a & !b == 0)
    }
}

/// Lowe's memo table of explored configurations, with dominance.
///
/// Configuration `A` dominates `B` when both have linearized the same
/// required ops and reached the same state, and `A` used a subset of `B`'s
/// optional ops and no more shields: every completion of `B` is also one of
/// `A` (unused optional ops can simply stay unused). A cached configuration
/// that is not on the current search path has been fully explored without
/// success, and those on the path have fewer required ops, so any
/// configuration dominated by a cached one can be skipped. Buckets are keyed
/// by an incrementally maintained hash so that lookups never allocate.
#[derive(Default)]
struct Cache {
    map: HashMap<u64, Vec<Explored>, BuildHasherDefault<PassThrough>>,
}

impl Cache {
    /// Records a configuration; false if it (or one dominating it) was
    /// already explored.
    fn insert(&mut self, done: &Linearized, scalars: Scalars) -> bool {
        let state = match scalars.state {
            None => 0x243f_6a88_85a3_08d3,
            Some(v) => mix(v ^ 0x1319_8a2e_0370_7344),
        };
        let bucket = self.map.entry(done.required_hash ^ state).or_default();
        let frontier = frontier(&done.required);
        if bucket.iter().any(|e| e.dominates(done, frontier, scalars)) {
            return false;
        }
        bucket.push(Explored::new(done, scalars));
        true
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
