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
pub mod kv;
pub mod network;
pub mod oracle;
pub mod report;
pub mod trace;
pub mod world;

pub use config::{Nemesis, SimConfig};
pub use report::RunReport;

/// Runs one seed.
pub fn run(seed: u64, config: &SimConfig) -> RunReport {
    world::World::new(seed, config.clone()).run()
}
