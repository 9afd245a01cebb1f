//! The deterministic simulator: the same protocol core and state machine as
//! the server, with the network, disk, clock and randomness replaced.
//!
//! One `u64` seed reproduces a whole run bit for bit: message delays, loss,
//! duplication, partitions, crashes, client workload. While faults are on,
//! an [`oracle`] checks safety at every step (one chosen value per slot,
//! judged from every acceptance; only proposed commands chosen; identical
//! applied prefixes). Then the faults heal and the run must make progress;
//! at the end the client history must be linearizable, which also catches
//! any acknowledged write that was lost.
#![deny(missing_docs)]

pub mod config;
pub mod duel;
pub mod network;
pub mod oracle;
pub mod report;
pub mod trace;
pub mod world;

pub use config::{CLOCK_DRIFT_PPM_MAX, Nemesis, SimConfig};
pub use report::RunReport;

/// Runs one seed. An assertion that fails inside the code under test (the
/// core, the member, the store) ends the run as a violation.
pub fn run(seed: u64, config: &SimConfig) -> RunReport {
    let run = std::panic::AssertUnwindSafe(|| world::World::new(seed, config.clone()).run());
    std::panic::catch_unwind(run)
        .unwrap_or_else(|payload| RunReport::panicked(panic_message(payload.as_ref())))
}

/// The message a panic carried.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}
