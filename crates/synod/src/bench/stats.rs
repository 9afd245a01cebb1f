//! What a benchmark run measured, and how it is summarized: every latency
//! is kept (a few bytes per operation), so percentiles are exact rather
//! than read off a histogram's buckets.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What one client (or watcher) saw. Merged after the run.
#[derive(Default)]
pub struct Recorder {
    /// Latency of every successful operation, in nanoseconds.
    pub latencies_ns: Vec<u64>,
    /// Failed operations by their gRPC status message.
    pub errors: BTreeMap<String, u64>,
    /// Operations that got no answer within the timeout.
    pub timeouts: u64,
    /// Compare-and-set transactions whose compare held.
    pub cas_succeeded: u64,
    /// Compare-and-set transactions whose compare failed.
    pub cas_failed: u64,
    /// The highest store revision a response reported.
    pub revision: i64,
    /// When the last measured operation ended: a run of a fixed number of
    /// operations is measured up to here.
    pub last_end: Option<std::time::Instant>,
    /// Every measured operation as (client, start since the plan's epoch,
    /// latency) in nanoseconds, when a timeline was asked for.
    pub timeline: Vec<(usize, u64, u64)>,
}

impl Recorder {
    /// Adds everything `other` saw.
    pub fn merge(&mut self, other: Recorder) {
        self.latencies_ns.extend(other.latencies_ns);
        for (message, n) in other.errors {
            *self.errors.entry(message).or_default() += n;
        }
        self.timeouts += other.timeouts;
        self.cas_succeeded += other.cas_succeeded;
        self.cas_failed += other.cas_failed;
        self.revision = self.revision.max(other.revision);
        self.last_end = self.last_end.max(other.last_end);
        self.timeline.extend(other.timeline);
    }

    /// Counts an error under its message.
    pub fn error(&mut self, message: String) {
        *self.errors.entry(message).or_default() += 1;
    }

    /// The summary over a measured window of `window`.
    pub fn summarize(mut self, window: Duration) -> Measured {
        self.latencies_ns.sort_unstable();
        let ops = self.latencies_ns.len() as u64;
        let secs = window.as_secs_f64().max(f64::MIN_POSITIVE);
        Measured {
            ops,
            seconds: window.as_secs_f64(),
            throughput: ops as f64 / secs,
            latency_ms: Latency::of_sorted(&self.latencies_ns),
            errors: self.errors.values().sum(),
            timeouts: self.timeouts,
            error_kinds: self.errors,
            cas_succeeded: self.cas_succeeded,
            cas_failed: self.cas_failed,
            revision: self.revision,
        }
    }
}

/// Throughput and latency over the measured window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Measured {
    /// Successful operations.
    pub ops: u64,
    /// Length of the measured window.
    pub seconds: f64,
    /// Successful operations per second.
    pub throughput: f64,
    /// Latency of the successful operations.
    pub latency_ms: Latency,
    /// Failed operations (timeouts not included).
    pub errors: u64,
    /// Operations unanswered within the timeout.
    pub timeouts: u64,
    /// Failed operations by message.
    pub error_kinds: BTreeMap<String, u64>,
    /// Compare-and-set transactions whose compare held.
    #[serde(default)]
    pub cas_succeeded: u64,
    /// Compare-and-set transactions whose compare failed.
    #[serde(default)]
    pub cas_failed: u64,
    /// The store's revision at the end (one per write since the cluster
    /// started): what the members hold in history when memory is read.
    #[serde(default)]
    pub revision: i64,
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Percentiles of `sorted` (nanoseconds, ascending); zeros if empty.
    pub fn of_sorted(sorted: &[u64]) -> Latency {
        if sorted.is_empty() {
            return Latency::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        let sum: u128 = sorted.iter().map(|&n| u128::from(n)).sum();
        Latency {
            p50: ms(percentile(sorted, 0.50)),
            p90: ms(percentile(sorted, 0.90)),
            p99: ms(percentile(sorted, 0.99)),
            p999: ms(percentile(sorted, 0.999)),
            max: ms(sorted[sorted.len() - 1]),
            mean: sum as f64 / sorted.len() as f64 / 1e6,
        }
    }
}

/// The nearest-rank percentile `q` (0..=1) of a non-empty ascending slice.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    debug_assert!(!sorted.is_empty() && (0.0..=1.0).contains(&q));
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), 500);
        assert_eq!(percentile(&v, 0.99), 990);
        assert_eq!(percentile(&v, 0.999), 999);
        assert_eq!(percentile(&v, 1.0), 1000);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 0.999), 7);
    }

    #[test]
    fn summary_counts_only_successes_in_throughput() {
        let mut r = Recorder {
            latencies_ns: vec![2_000_000, 1_000_000, 3_000_000, 4_000_000],
            ..Recorder::default()
        };
        r.error("etcdserver: too many requests".into());
        r.error("etcdserver: too many requests".into());
        r.timeouts = 1;
        let m = r.summarize(Duration::from_secs(2));
        assert_eq!(m.ops, 4);
        assert_eq!(m.throughput, 2.0);
        assert_eq!(m.errors, 2);
        assert_eq!(m.timeouts, 1);
        assert_eq!(m.latency_ms.p50, 2.0);
        assert_eq!(m.latency_ms.max, 4.0);
        assert_eq!(m.latency_ms.mean, 2.5);
    }
}
