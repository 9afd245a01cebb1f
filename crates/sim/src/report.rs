//! What one run found, and the figures it measured.

use check::{Operation, Outcome, Report as CheckReport, Verdict};

use crate::config::SimConfig;
use crate::oracle::Violation;

/// The result of one run.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Safety and liveness violations, linearizability included.
    pub violations: Vec<Violation>,
    /// The linearizability search gave up on some key (neither verdict).
    pub undecided: bool,
    /// Operations clients started (final reads included).
    pub ops_attempted: u64,
    /// Operations that completed `ok`.
    pub ok: u64,
    /// Operations that completed `fail` (certainly no effect, or a CAS miss).
    pub fail: u64,
    /// Operations whose outcome stayed unknown.
    pub info: u64,
    /// Slots chosen.
    pub commits: u64,
    /// The most commands one chosen slot carried.
    pub largest_batch: usize,
    /// Watch events the watchers saw, each checked against the committed
    /// history.
    pub watch_events: u64,
    /// Leases the lease client saw through (granted, kept alive, gone),
    /// each judged by the lease oracle.
    pub leases: u64,
    /// Times some replica became leader.
    pub leader_changes: u64,
    /// Configuration changes applied (the membership nemesis).
    pub member_changes: u64,
    /// Crashes the nemesis caused.
    pub crashes: u64,
    /// Restarts refused because the node's data failed validation (a bit
    /// flipped at rest): the node stays down rather than trust it.
    pub refused_starts: u64,
    /// Events simulated.
    pub events: u64,
    /// Virtual time simulated, in microseconds.
    pub sim_time_us: u64,
    /// From healing to the first completed operation, in microseconds.
    pub recovery_us: Option<u64>,
    /// The client history.
    pub history: Vec<Operation>,
    /// The message-by-message trace, when asked for.
    pub trace: Option<Vec<String>>,
    /// Time the linearizability check took (the rest of a run's time is
    /// simulation).
    pub check_time: std::time::Duration,
}

impl RunReport {
    /// A run cut short by an invariant the code asserts (a value chosen
    /// twice for a slot, an apply out of order, a read served below its
    /// index): the assertion's message is the violation.
    pub fn panicked(what: String) -> Self {
        RunReport {
            violations: vec![Violation {
                time_us: 0,
                what: format!("an invariant assertion failed: {what}"),
            }],
            ..RunReport::default()
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        _config: &SimConfig,
        history: Vec<Operation>,
        check: CheckReport,
        mut violations: Vec<Violation>,
        commits: u64,
        leader_changes: u64,
        crashes: u64,
        refused_starts: u64,
        events: u64,
        sim_time_us: u64,
        heal_time: u64,
        first_ok_after_heal: Option<u64>,
        trace: Option<Vec<String>>,
        check_time: std::time::Duration,
    ) -> Self {
        let mut undecided = false;
        match &check.verdict {
            Verdict::Linearizable => {}
            Verdict::Unknown { .. } => undecided = true,
            Verdict::NotLinearizable { .. } => violations.push(Violation {
                time_us: sim_time_us,
                what: format!("history not linearizable: {}", check.verdict),
            }),
        }
        let count =
            |f: fn(&Outcome) -> bool| history.iter().filter(|o| f(&o.outcome)).count() as u64;
        RunReport {
            violations,
            undecided,
            ops_attempted: history.len() as u64,
            ok: count(|o| matches!(o, Outcome::Ok(_))),
            fail: count(|o| matches!(o, Outcome::Fail)),
            info: count(|o| matches!(o, Outcome::Info)),
            commits,
            largest_batch: 0,
            watch_events: 0,
            leases: 0,
            leader_changes,
            member_changes: 0,
            crashes,
            refused_starts,
            events,
            sim_time_us,
            recovery_us: first_ok_after_heal.map(|t| t.saturating_sub(heal_time)),
            history,
            trace,
            check_time,
        }
    }

    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}
