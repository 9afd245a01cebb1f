//! What a simulated run looks like: cluster size, workload, faults.

use std::fmt;
use std::str::FromStr;

use paxos::multi::Bug;

/// Which faults the nemesis injects while faults are on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Nemesis {
    /// Crash nodes (losing everything not persisted) and restart them.
    pub crash: bool,
    /// Partitions: majority/minority, isolated leader, bridge, one-way.
    pub partition: bool,
    /// Lose messages.
    pub loss: bool,
    /// Deliver some messages twice.
    pub duplicate: bool,
    /// Long and uneven delays, which reorder messages.
    pub delay: bool,
    /// Disk faults: failed fsyncs, full disks, bits flipped at rest (and
    /// crashes then also lose or tear unsynced writes, as always).
    pub disk: bool,
    /// Clock faults: each life of a node has a monotonic clock running
    /// fast or slow (by up to [`CLOCK_DRIFT_PPM_MAX`]), and nodes pause,
    /// frozen for a while (a stalled VM, a long collection) as their clock
    /// runs on, then take everything that piled up. No wall clock is
    /// stepped: nothing in a member reads one.
    pub clock: bool,
    /// Configuration changes: learners added and promoted, voters removed,
    /// a member replaced by a fresh one with an empty disk, growing 3 to 5
    /// and shrinking back, in single and in multi-member changes.
    pub membership: bool,
}

/// The largest drift of a node's clock under the clock nemesis, in parts
/// per million (2%: far beyond a healthy clock, to make drift visible).
pub const CLOCK_DRIFT_PPM_MAX: u64 = 20_000;

impl Nemesis {
    /// Every fault.
    pub fn all() -> Self {
        Nemesis {
            crash: true,
            partition: true,
            loss: true,
            duplicate: true,
            delay: true,
            disk: true,
            clock: true,
            membership: true,
        }
    }

    /// Whether any fault is on.
    pub fn any(&self) -> bool {
        self.crash
            || self.partition
            || self.loss
            || self.duplicate
            || self.delay
            || self.disk
            || self.clock
            || self.membership
    }
}

/// The names the command line accepts.
pub const NEMESIS_NAMES: &str = "all, none, or a comma list of crash, partition, loss, duplicate, delay, disk, clock, membership";

impl FromStr for Nemesis {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut n = Nemesis::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => n = Nemesis::all(),
                "none" => {}
                "crash" => n.crash = true,
                "partition" => n.partition = true,
                "loss" => n.loss = true,
                "duplicate" => n.duplicate = true,
                "delay" => n.delay = true,
                "disk" => n.disk = true,
                "clock" => n.clock = true,
                "membership" => n.membership = true,
                other => return Err(format!("unknown fault {other:?}; expected {NEMESIS_NAMES}")),
            }
        }
        Ok(n)
    }
}

impl fmt::Display for Nemesis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Nemesis::all() {
            return write!(f, "all");
        }
        let names: Vec<&str> = [
            (self.crash, "crash"),
            (self.partition, "partition"),
            (self.loss, "loss"),
            (self.duplicate, "duplicate"),
            (self.delay, "delay"),
            (self.disk, "disk"),
            (self.clock, "clock"),
            (self.membership, "membership"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        if names.is_empty() {
            write!(f, "none")
        } else {
            write!(f, "{}", names.join(","))
        }
    }
}

/// One run's setup. Everything else comes from the seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Replicas in the cluster.
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the clients work on (few, so that operations collide).
    pub keys: usize,
    /// A client waits up to this long between operations, in microseconds.
    pub think_us_max: u64,
    /// Virtual time with faults on, in microseconds.
    pub fault_us: u64,
    /// Virtual time after healing, in which the cluster must make progress.
    pub heal_us: u64,
    /// The faults.
    pub nemesis: Nemesis,
    /// A deliberately broken protocol variant, for tests of the checkers.
    pub bug: Option<Bug>,
    /// Record a message-by-message trace.
    pub trace: bool,
    /// Batch client commands as the server does: a leader queues each
    /// command as it arrives (`Replica::enqueue`) and opens slots for the
    /// queue this many microseconds after the first of them (`fill`), so
    /// that commands share slots and leadership can change in between.
    /// `None`: each command gets its slot on arrival (`propose`).
    pub batch_us: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 3,
            clients: 5,
            keys: 3,
            think_us_max: 20_000,
            fault_us: 4_000_000,
            heal_us: 2_000_000,
            nemesis: Nemesis::all(),
            bug: None,
            trace: false,
            batch_us: None,
        }
    }
}
