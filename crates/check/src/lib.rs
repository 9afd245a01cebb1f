//! Linearizability checker for key-value histories.
//!
//! The simulator and the end-to-end tests record every client request as an
//! [`Operation`]; [`check`] then decides whether the whole history could have
//! been produced by a single atomic register per key.
//!
//! The search is Wing & Gong's backtracking over linearization points with
//! Lowe's memoisation: a configuration (set of already linearized operations,
//! register state) is explored at most once. Keys are independent registers,
//! so each key's sub-history is checked on its own (P-compositionality), which
//! keeps the search small. A step budget ([`Limits`]) turns pathological
//! searches into [`Verdict::Unknown`] instead of hanging.
//!
//! Operations with unknown outcome ([`Outcome::Info`]) are what makes such
//! searches blow up, since each may take effect at any later time or never.
//! The checker only places one where some completed operation needs it,
//! pools those whose value nobody ever observes, and prefers configurations
//! that used fewer of them; thousands of operations per key with a few
//! percent of timeouts typically check in milliseconds.
//!
//! # Semantics
//!
//! Each key is a register that starts absent. Reads that failed, timed out
//! or carry no value constrain nothing and are ignored, as are failed
//! writes (they certainly did not happen). A failed Cas happened and saw a
//! value other than the one it expected. Unknown writes and Cas ops may take
//! effect once, at any time after their invocation, or never. Values are
//! meant to be unique per key (it makes violations easy to explain), but
//! the checker is correct without that.
//!
//! # Time semantics
//!
//! Every operation occupies the closed interval `[invoke, complete]`. An
//! operation `A` precedes `B` (so `A` must be linearized before `B`) only if
//! `A.complete < B.invoke`; when `A.complete == B.invoke` the two are treated
//! as concurrent. This is the conservative choice: equal timestamps never
//! produce a false violation.
#![deny(missing_docs)]

pub mod history;

mod model;
mod search;
mod window;

use std::collections::BTreeMap;
use std::fmt;

/// A value stored under a key; writers use unique integers so a read
/// identifies exactly which write it observed.
pub type Value = u64;

/// What a client asked the store to do (the request, independent of its result).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `get(key)`.
    Read,
    /// `put(key, value)`.
    Write(Value),
    /// `delete(key)`: the key is absent afterwards, whether or not it was
    /// there.
    Delete,
    /// Compare-and-set: if the current value equals `expected` then store
    /// `new`. `expected == None` means "the key is absent".
    Cas {
        /// Value the key must hold for the swap to happen (`None` = absent).
        expected: Option<Value>,
        /// Value stored when the comparison matches.
        new: Value,
    },
}

/// How an operation ended, as observed by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Completed. For Read: `Some(the value read)` where the inner `None`
    /// means the key was missing. For Write/Cas: `None` (a Cas that is Ok
    /// matched its comparison and wrote its new value).
    Ok(Option<Option<Value>>),
    /// Read: never produced. Write: certainly did not take effect. Cas: the
    /// comparison did not match (it happened, observed a value different from
    /// `expected`, and had no effect).
    Fail,
    /// Unknown outcome (timeout, crash): may or may not have taken effect, at
    /// any time after invoke. Also used for operations with no completion.
    Info,
}

/// One client request and its result: the unit a history is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Client id that issued the request (only used for reporting).
    pub process: u64,
    /// Key the request addressed; keys are checked independently.
    pub key: String,
    /// The request itself.
    pub op: Op,
    /// Time the request was sent (any monotone unit, e.g. ns).
    pub invoke: u64,
    /// Time the response arrived; `None` when there was none (Info).
    pub complete: Option<u64>,
    /// The response.
    pub outcome: Outcome,
}

/// Bounds on the search so that a pathological history yields
/// [`Verdict::Unknown`] rather than running forever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of search steps spent on any single key. A step is
    /// one visit of a call/return event or one candidate considered for
    /// placing an Info operation; a million steps typically take a fraction
    /// of a second.
    pub max_steps_per_key: u64,
}

impl Default for Limits {
    /// Generous enough for thousands of operations per key with realistic
    /// concurrency, while still bounding the time spent on adversarial input.
    fn default() -> Self {
        Limits {
            max_steps_per_key: 5_000_000,
        }
    }
}

/// The checker's answer for a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's sub-history has a legal sequential order.
    Linearizable,
    /// Some key's sub-history has no legal order.
    NotLinearizable {
        /// The offending key.
        key: String,
        /// A short excerpt (at most a dozen operations) explaining the
        /// failure. `window[0]` is the operation the search could not
        /// linearize at the deepest point it reached; the rest (operations
        /// concurrent with it, writers of the value it needed and the latest
        /// writes completed before it) follow in invocation order.
        window: Vec<Operation>,
    },
    /// The step budget ran out for this key before a decision was reached
    /// (no violation was found on the keys that were decided).
    Unknown {
        /// The key whose search was abandoned.
        key: String,
    },
}

/// Verdict plus statistics, so callers can tell a vacuous pass (e.g. an empty
/// history) from a meaningful one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The decision.
    pub verdict: Verdict,
    /// Number of distinct keys in the history.
    pub keys: usize,
    /// Number of operations in the history.
    pub ops: usize,
    /// Operations whose outcome was [`Outcome::Ok`].
    pub ok: usize,
    /// Operations whose outcome was [`Outcome::Fail`].
    pub fail: usize,
    /// Operations whose outcome was [`Outcome::Info`].
    pub info: usize,
    /// Total search steps spent over all keys that were checked.
    pub steps: u64,
}

/// Decides whether `history` is linearizable with respect to a map of
/// independent registers (each key starts absent).
///
/// Keys are checked in lexicographic order; the first key found to be
/// non-linearizable is reported immediately. If no key is non-linearizable
/// but some key exhausted its budget, the first such key is reported as
/// [`Verdict::Unknown`].
pub fn check(history: &[Operation], limits: &Limits) -> Report {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let (mut ok, mut fail, mut info) = (0, 0, 0);
    for (i, op) in history.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(i);
        match op.outcome {
            Outcome::Ok(_) => ok += 1,
            Outcome::Fail => fail += 1,
            Outcome::Info => info += 1,
        }
    }
    let mut report = Report {
        verdict: Verdict::Linearizable,
        keys: by_key.len(),
        ops: history.len(),
        ok,
        fail,
        info,
        steps: 0,
    };
    let mut unknown: Option<&str> = None;
    for (key, indices) in &by_key {
        let result = search::check_key(history, indices, limits.max_steps_per_key);
        report.steps = report.steps.saturating_add(result.steps);
        match result.outcome {
            search::KeyOutcome::Linearizable => {}
            search::KeyOutcome::Exhausted => {
                unknown.get_or_insert(key);
            }
            search::KeyOutcome::Violation { blocker } => {
                report.verdict = Verdict::NotLinearizable {
                    key: (*key).to_owned(),
                    window: window::build(history, indices, blocker),
                };
                return report;
            }
        }
    }
    if let Some(key) = unknown {
        report.verdict = Verdict::Unknown {
            key: key.to_owned(),
        };
    }
    report
}

impl fmt::Display for Op {
    /// Compact human form used in violation reports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Read => write!(f, "read"),
            Op::Write(v) => write!(f, "write {v}"),
            Op::Delete => write!(f, "delete"),
            Op::Cas { expected, new } => {
                write!(f, "cas {} -> {new}", ValueOrAbsent(*expected))
            }
        }
    }
}

impl fmt::Display for Operation {
    /// One line: who, what, result and the time interval.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "process {}: {}", self.process, self.op)?;
        match (&self.op, &self.outcome) {
            (Op::Read, Outcome::Ok(Some(v))) => write!(f, " => {}", ValueOrAbsent(*v))?,
            (Op::Read, Outcome::Ok(None)) => write!(f, " => ok (no value recorded)")?,
            (_, Outcome::Ok(_)) => write!(f, " => ok")?,
            (Op::Cas { .. }, Outcome::Fail) => write!(f, " => fail (mismatch)")?,
            (_, Outcome::Fail) => write!(f, " => fail")?,
            (_, Outcome::Info) => write!(f, " => info (outcome unknown)")?,
        }
        match self.complete {
            Some(c) if !matches!(self.outcome, Outcome::Info) => {
                write!(f, "  [{} .. {}]", self.invoke, c)
            }
            _ => write!(f, "  [{} .. never]", self.invoke),
        }
    }
}

impl fmt::Display for Verdict {
    /// Multi-line explanation meant to be printed as-is to a human.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => {
                write!(f, "linearizable: every key has a legal sequential order")
            }
            Verdict::NotLinearizable { key, window } => {
                writeln!(
                    f,
                    "NOT linearizable: key {key:?} has no legal sequential order."
                )?;
                let Some((first, rest)) = window.split_first() else {
                    return Ok(());
                };
                writeln!(
                    f,
                    "  No order consistent with real time and register semantics can place:"
                )?;
                writeln!(f, "    {first}")?;
                if !rest.is_empty() {
                    writeln!(
                        f,
                        "  Related operations (concurrent with it, writers of the value it needed, \
                         latest writes completed before it), by invocation time:"
                    )?;
                    for op in rest {
                        writeln!(f, "    {op}")?;
                    }
                }
                Ok(())
            }
            Verdict::Unknown { key } => write!(
                f,
                "unknown: the search budget was exhausted on key {key:?} before a decision \
                 (no violation found elsewhere; raise Limits::max_steps_per_key)"
            ),
        }
    }
}

/// Formats an optional register value, spelling out the absent case.
struct ValueOrAbsent(Option<Value>);

impl fmt::Display for ValueOrAbsent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v}"),
            None => write!(f, "absent"),
        }
    }
}
