//! The simulated network: per-link delay, loss, duplication, reordering
//! (from random delays) and partitions, one-way links included.

use std::collections::BTreeSet;

use paxos::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// How links behave while faults are on.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The smallest one-way delay, in microseconds.
    pub delay_min_us: u64,
    /// The mean of the exponential part added to it, in microseconds.
    pub delay_mean_us: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message is held up by a long delay spike.
    pub spike: f64,
    /// The length of a delay spike, in microseconds.
    pub spike_us: u64,
    /// Probability that a message is held back for a long while (through
    /// several elections) and delivered late.
    pub hold: f64,
    /// The range of such a hold, in microseconds.
    pub hold_us: (u64, u64),
}

impl NetConfig {
    /// A calm network: short delays, nothing lost.
    pub fn calm() -> Self {
        NetConfig {
            delay_min_us: 200,
            delay_mean_us: 300,
            loss: 0.0,
            duplicate: 0.0,
            spike: 0.0,
            spike_us: 0,
            hold: 0.0,
            hold_us: (0, 0),
        }
    }
}

/// The links between nodes and which of them are cut.
#[derive(Clone, Debug)]
pub struct Network {
    /// Current behaviour of every link that is not cut.
    pub config: NetConfig,
    /// Directed links `(from, to)` that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// A network with no cut links.
    pub fn new(config: NetConfig) -> Self {
        Network {
            config,
            cut: BTreeSet::new(),
        }
    }

    /// Delays, one per copy to deliver (none: lost).
    pub fn deliveries(&self, rng: &mut ChaCha8Rng, from: NodeId, to: NodeId) -> Vec<u64> {
        if self.cut.contains(&(from, to)) {
            return Vec::new();
        }
        let c = &self.config;
        if c.loss > 0.0 && rng.random_bool(c.loss) {
            return Vec::new();
        }
        let copies = if c.duplicate > 0.0 && rng.random_bool(c.duplicate) {
            2
        } else {
            1
        };
        (0..copies).map(|_| self.delay(rng)).collect()
    }

    /// One delay drawn from the link's distribution.
    pub fn delay(&self, rng: &mut ChaCha8Rng) -> u64 {
        let c = &self.config;
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        let exp = (-(u.ln()) * c.delay_mean_us as f64) as u64;
        let spike = if c.spike > 0.0 && rng.random_bool(c.spike) {
            rng.random_range(0..=c.spike_us)
        } else {
            0
        };
        let hold = if c.hold > 0.0 && rng.random_bool(c.hold) {
            rng.random_range(c.hold_us.0..=c.hold_us.1)
        } else {
            0
        };
        c.delay_min_us + exp.min(c.delay_mean_us * 20) + spike + hold
    }

    /// Cuts every link between the two groups, both ways.
    pub fn split(&mut self, a: &[NodeId], b: &[NodeId]) {
        for x in a {
            for y in b {
                self.cut.insert((*x, *y));
                self.cut.insert((*y, *x));
            }
        }
    }

    /// Cuts one direction of a link.
    pub fn cut_one_way(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    /// Restores one cut link, both ways, chosen by `pick` among the cut
    /// ones: a partition that heals piece by piece (a deposed leader that
    /// reaches one follower again before the rest).
    pub fn heal_one(&mut self, pick: usize) -> Option<(NodeId, NodeId)> {
        let (a, b) = *self.cut.iter().nth(pick % self.cut.len().max(1))?;
        self.cut.remove(&(a, b));
        self.cut.remove(&(b, a));
        Some((a, b))
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Whether any link is cut.
    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }
}
