//! What the transport counts, and a snapshot of it for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use paxos::NodeId;

/// Live counters of one peer's outbound side.
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub(crate) connected: AtomicBool,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) write_failures: AtomicU64,
}

/// Live counters of the listener and every inbound connection.
#[derive(Debug, Default)]
pub(crate) struct InboundCounters {
    pub(crate) frames_received: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) connections_busy: AtomicU64,
    pub(crate) frame_errors: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) misaddressed: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub(crate) fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// One peer's outbound side at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerMetrics {
    /// An authenticated connection to the peer is open.
    pub connected: bool,
    /// Frames waiting in the queue; never above `queue_frames_max`.
    pub queue_frames: usize,
    /// Bytes waiting in the queue; never above `queue_bytes_max`.
    pub queue_bytes: usize,
    /// Frames dropped because the queue was full (the peer is down or slow).
    pub frames_dropped: u64,
    /// Frames written to the peer's socket.
    pub frames_sent: u64,
    /// Bytes written to the peer's socket, length prefixes included.
    pub bytes_sent: u64,
    /// Connections opened and authenticated.
    pub connects: u64,
    /// Dials or handshakes that failed.
    pub connect_failures: u64,
    /// Connections lost while writing (their in-flight frames are lost).
    pub write_failures: u64,
}

/// The whole transport at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportMetrics {
    /// Outbound side, per peer.
    pub peers: BTreeMap<NodeId, PeerMetrics>,
    /// Envelopes delivered to the core.
    pub frames_received: u64,
    /// Payload bytes of those envelopes.
    pub bytes_received: u64,
    /// Inbound connections refused by the handshake (stranger, wrong token,
    /// not a member, garbage, timeout).
    pub handshakes_refused: u64,
    /// Inbound connections closed at once because too many handshakes were
    /// pending.
    pub connections_busy: u64,
    /// Authenticated connections closed on a bad frame (oversized, truncated).
    pub frame_errors: u64,
    /// Authenticated connections closed on a frame that did not decode.
    pub decode_errors: u64,
    /// Authenticated connections closed on an envelope whose `from` or `to`
    /// did not match the connection.
    pub misaddressed: u64,
}

impl TransportMetrics {
    /// Appends the metrics in the Prometheus text format, names prefixed
    /// `synod_peer_`.
    pub fn write_prometheus(&self, out: &mut String) {
        type PeerField = fn(&PeerMetrics) -> u64;
        let per_peer: [(&str, &str, &str, PeerField); 9] = [
            (
                "connected",
                "gauge",
                "1 if an authenticated connection is open",
                |p| u64::from(p.connected),
            ),
            ("queue_frames", "gauge", "frames waiting to be sent", |p| {
                p.queue_frames as u64
            }),
            ("queue_bytes", "gauge", "bytes waiting to be sent", |p| {
                p.queue_bytes as u64
            }),
            (
                "frames_dropped_total",
                "counter",
                "frames dropped by a full queue",
                |p| p.frames_dropped,
            ),
            ("frames_sent_total", "counter", "frames written", |p| {
                p.frames_sent
            }),
            ("bytes_sent_total", "counter", "bytes written", |p| {
                p.bytes_sent
            }),
            (
                "connects_total",
                "counter",
                "authenticated connections opened",
                |p| p.connects,
            ),
            (
                "connect_failures_total",
                "counter",
                "failed dials or handshakes",
                |p| p.connect_failures,
            ),
            (
                "write_failures_total",
                "counter",
                "connections lost while writing",
                |p| p.write_failures,
            ),
        ];
        for (name, kind, help, field) in per_peer {
            let _ = writeln!(out, "# HELP synod_peer_{name} {help}");
            let _ = writeln!(out, "# TYPE synod_peer_{name} {kind}");
            for (id, peer) in &self.peers {
                let _ = writeln!(out, "synod_peer_{name}{{peer=\"{id}\"}} {}", field(peer));
            }
        }
        let totals = [
            (
                "received_frames_total",
                "envelopes delivered to the core",
                self.frames_received,
            ),
            (
                "received_bytes_total",
                "payload bytes delivered",
                self.bytes_received,
            ),
            (
                "handshakes_refused_total",
                "inbound connections refused",
                self.handshakes_refused,
            ),
            (
                "connections_busy_total",
                "inbound connections shed",
                self.connections_busy,
            ),
            (
                "frame_errors_total",
                "connections closed on a bad frame",
                self.frame_errors,
            ),
            (
                "decode_errors_total",
                "connections closed on an undecodable frame",
                self.decode_errors,
            ),
            (
                "misaddressed_total",
                "connections closed on a misaddressed envelope",
                self.misaddressed,
            ),
        ];
        for (name, help, value) in totals {
            let _ = writeln!(out, "# HELP synod_peer_{name} {help}");
            let _ = writeln!(out, "# TYPE synod_peer_{name} counter");
            let _ = writeln!(out, "synod_peer_{name} {value}");
        }
    }
}
