//! The JSON form of benchmark results: one object per line, tagged by kind,
//! appended to a file so that several runs (and several systems) collect
//! in one place for `synod bench compare`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::stats::{Latency, Measured};

/// One line of a results file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// A load run.
    Run(Box<RunRecord>),
    /// A floor measurement.
    Floor(Box<FloorRecord>),
}

/// A load run: what was asked and what was measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// The system measured, as the caller labelled it ("synod", "etcd").
    pub label: String,
    /// The figure's name, matched across systems by `compare`.
    pub name: String,
    /// The workload.
    pub workload: String,
    /// "l" or "s" for runs with gets.
    pub consistency: Option<String>,
    /// Concurrent clients (writers, for the watch workload).
    pub clients: usize,
    /// gRPC connections the clients share.
    pub conns: usize,
    /// Keys chosen from.
    pub key_space: u64,
    /// Bytes per value.
    pub val_size: usize,
    /// "leader" or "all".
    pub target: String,
    /// The endpoints the connections went to.
    pub endpoints: Vec<String>,
    /// Throughput and latency of the clients' requests.
    pub result: Measured,
    /// Event delivery, for the watch workload.
    pub watch: Option<WatchFigures>,
    /// Resident memory of the processes named by `--rss-pids`, in MiB,
    /// read right after the run.
    pub rss_mib: Vec<f64>,
    /// `--rss-settle-ms`: how long after the run `rss_settled_mib` was read.
    #[serde(default)]
    pub rss_settle_ms: u64,
    /// The same processes' resident memory read again `rss_settle_ms`
    /// after the run (empty if not asked for).
    #[serde(default)]
    pub rss_settled_mib: Vec<f64>,
}

/// Event delivery in the watch fan-out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatchFigures {
    /// Watch streams open.
    pub watchers: usize,
    /// Events received over all watchers in the measured window.
    pub events: u64,
    /// Events received per second over all watchers.
    pub events_per_sec: f64,
    /// From the writer sending a put to a watcher receiving its event.
    pub delivery_ms: Latency,
    /// Watch streams that failed or were cancelled.
    pub errors: u64,
}

/// What one write can cost at the least on this machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FloorRecord {
    /// Label of the disk or run.
    pub label: String,
    /// One append of `val_size` bytes plus fdatasync, in the data
    /// directory's file system.
    pub fsync_ms: Latency,
    /// One unary gRPC round trip over loopback to a server doing no work.
    pub grpc_ms: Latency,
    /// Median append-plus-fdatasync plus median round trip.
    pub floor_p50_ms: f64,
    /// One append plus fdatasync while two other writers do the same in
    /// the same directory: three members' logs on one disk.
    #[serde(default)]
    pub fsync_of_three_ms: Option<Latency>,
    /// One small frame there and back between two loopback TCP sockets:
    /// the leader's Accept and a follower's answer.
    #[serde(default)]
    pub peer_round_trip_ms: Option<Latency>,
    /// What a replicated write needs at the least: the client's round
    /// trip, the peer round trip and a follower's fsync among three.
    #[serde(default)]
    pub replicated_floor_p50_ms: Option<f64>,
}

/// Appends `record` as one line to `path`.
pub fn append(path: &Path, record: &Record) -> anyhow::Result<()> {
    let mut line = serde_json::to_string(record)?;
    line.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} to append results", path.display()))?;
    file.write_all(line.as_bytes())
        .with_context(|| format!("cannot write results to {}", path.display()))
}

/// Every record in the results file at `path`.
pub fn read_all(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read results file {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not a result record", path.display(), i + 1))
        })
        .collect()
}
