//! The node's figures, in Prometheus' text format under etcd's metric
//! names where they mean the same, so dashboards written for etcd work.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use paxos::multi::Replica;

/// Upper bounds of the fsync latency buckets, in seconds (etcd's buckets).
const FSYNC_BUCKETS_S: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// Counters and gauges the driver updates and the metrics page reads.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// 1 while this member leads.
    pub is_leader: AtomicU64,
    /// 1 while a leader is known.
    pub has_leader: AtomicU64,
    /// The leader's id, 0 if none.
    pub leader: AtomicU64,
    /// The current ballot round (etcd's term).
    pub ballot_round: AtomicU64,
    /// Highest slot known chosen.
    pub commit_index: AtomicU64,
    /// Highest slot applied.
    pub applied_index: AtomicU64,
    /// Commands proposed by this member.
    pub proposals: AtomicU64,
    /// Times this member became leader.
    pub leader_changes: AtomicU64,
    fsync_buckets: [AtomicU64; 14],
    fsync_count: AtomicU64,
    fsync_sum_us: AtomicU64,
}

impl NodeMetrics {
    /// Copies the replica's state and the member's counters into the
    /// gauges, once a tick.
    pub fn observe(&self, replica: &Replica, counters: member::Counters) {
        self.proposals.store(counters.proposals, Ordering::Relaxed);
        self.leader_changes
            .store(counters.leader_changes, Ordering::Relaxed);
        let leader = replica.leader().unwrap_or(0);
        self.is_leader
            .store(u64::from(replica.is_leader()), Ordering::Relaxed);
        self.has_leader
            .store(u64::from(leader != 0), Ordering::Relaxed);
        self.leader.store(leader, Ordering::Relaxed);
        self.ballot_round
            .store(replica.promised().round, Ordering::Relaxed);
        self.commit_index
            .store(replica.commit_index(), Ordering::Relaxed);
        self.applied_index
            .store(replica.applied(), Ordering::Relaxed);
    }

    /// Records one fsync's latency.
    pub fn fsync(&self, micros: u64) {
        let seconds = micros as f64 / 1e6;
        for (bound, bucket) in FSYNC_BUCKETS_S.iter().zip(&self.fsync_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        self.fsync_sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// The page, with the peer queue depths appended by the caller.
    pub fn render(&self, out: &mut String) {
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        gauge(
            "etcd_server_has_leader",
            "Whether a leader exists: 1 is existence, 0 is not.",
            "gauge",
            g(&self.has_leader),
        );
        gauge(
            "etcd_server_is_leader",
            "Whether this member is the leader: 1 if is, 0 otherwise.",
            "gauge",
            g(&self.is_leader),
        );
        gauge(
            "synod_leader_id",
            "The leader's member id, 0 if none is known.",
            "gauge",
            g(&self.leader),
        );
        gauge(
            "synod_paxos_ballot_round",
            "The highest ballot round this member promised (etcd's term).",
            "gauge",
            g(&self.ballot_round),
        );
        gauge(
            "synod_paxos_commit_index",
            "The highest slot known chosen, all before it chosen too.",
            "gauge",
            g(&self.commit_index),
        );
        gauge(
            "synod_paxos_applied_index",
            "The highest slot applied to the state machine.",
            "gauge",
            g(&self.applied_index),
        );
        gauge(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            "gauge",
            g(&self.commit_index),
        );
        gauge(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            "gauge",
            g(&self.applied_index),
        );
        gauge(
            "synod_proposals_total",
            "Commands this member proposed.",
            "counter",
            g(&self.proposals),
        );
        gauge(
            "etcd_server_leader_changes_seen_total",
            "Times this member became leader.",
            "counter",
            g(&self.leader_changes),
        );
        let name = "etcd_disk_wal_fsync_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} The latency distributions of fsync called by WAL.\n# TYPE {name} histogram"
        );
        for (bound, bucket) in FSYNC_BUCKETS_S.iter().zip(&self.fsync_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", g(bucket));
        }
        let count = g(&self.fsync_count);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", g(&self.fsync_sum_us) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}
