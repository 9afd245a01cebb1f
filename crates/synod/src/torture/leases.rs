//! The lease oracle of a torture run: one client holds a key on a lease
//! the way a lock holder does (grant, put, keep alive a few times, stop)
//! and watches the key go.
//!
//! - Never early: the key is never gone before the TTL has run out from
//!   the send time of the last keep-alive (or grant) that was acknowledged.
//!   A wall-clock step on any member must not change that.
//! - Not late, when asked (`judge_late`: runs without kills, pauses or
//!   partitions, where no leader change resets the TTL): the key is gone
//!   within [`LATE_MAX`] after the TTL ran out from the moment the last
//!   keep-alive's answer arrived (the renewal happened before that).
//!
//! Times are this process's monotonic clock, never a wall clock.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use server::proto::etcdserverpb::kv_client::KvClient;
use server::proto::etcdserverpb::lease_client::LeaseClient;
use server::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest,
};
use tonic::transport::{Channel, Endpoint};

use super::workload::Rng;

/// The TTL the client asks for, in seconds.
pub const TTL_S: i64 = 4;
/// How long after its TTL ran out a key may still be seen, when lateness
/// is judged: ticks, the expiry's own round, a lost expiry's retry.
pub const LATE_MAX: Duration = Duration::from_secs(3);
/// Each request's own bound.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Between two looks at the key once the keep-alives stopped.
const POLL: Duration = Duration::from_millis(200);

/// What the lease oracle found.
#[derive(Default)]
pub struct Findings {
    /// Leases seen through to the end: granted, kept alive, seen gone.
    pub checked: u64,
    /// What broke, one line each.
    pub problems: Vec<String>,
}

/// Shared with the torture driver.
pub struct LeaseOracle {
    urls: Vec<String>,
    /// Judge lateness too.
    judge_late: bool,
    /// UNSAFE, to show the oracle can fail: believe the TTL is twice what
    /// was granted, so a key that goes on time looks early.
    believe_double_ttl: bool,
    /// Set to stop after the lease in hand.
    pub stop: AtomicBool,
    findings: Mutex<Findings>,
}

enum Step {
    /// The lease ended as it should; one more checked.
    Checked,
    /// A request failed or timed out: this lease tells nothing more.
    Abandoned,
}

impl LeaseOracle {
    /// An oracle on the members at `urls`.
    pub fn new(urls: Vec<String>, judge_late: bool, believe_double_ttl: bool) -> Self {
        LeaseOracle {
            urls,
            judge_late,
            believe_double_ttl,
            stop: AtomicBool::new(false),
            findings: Mutex::new(Findings::default()),
        }
    }

    /// What was found so far.
    pub fn findings(&self) -> Findings {
        self.findings
            .lock()
            .map(|f| Findings {
                checked: f.checked,
                problems: f.problems.clone(),
            })
            .unwrap_or_default()
    }

    /// `what` is seen gone now: never before `ttl` ran out from `acked_at`,
    /// the send time of the last acknowledged grant or keep-alive.
    fn judge_gone(&self, what: &str, acked_at: Instant, ttl: Duration) {
        let held = acked_at.elapsed();
        if held < ttl {
            self.problem(format!(
                "{what} was gone {} ms after its last acknowledged keep-alive was sent, before its {} s TTL",
                held.as_millis(),
                ttl.as_secs()
            ));
        }
    }

    fn problem(&self, what: String) {
        println!("lease oracle: {what}");
        if let Ok(mut f) = self.findings.lock() {
            f.problems.push(what);
        }
    }

    /// Holds leases one after another until stopped.
    pub async fn run(&self, seed: u64) {
        let mut rng = Rng::new(seed ^ 0x1ea5e);
        let mut n = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let url = &self.urls[rng.below(self.urls.len() as u64) as usize];
            match self.one_lease(url, n, &mut rng).await {
                Step::Checked => {
                    if let Ok(mut f) = self.findings.lock() {
                        f.checked += 1;
                    }
                }
                Step::Abandoned => tokio::time::sleep(POLL).await,
            }
        }
    }

    async fn one_lease(&self, url: &str, n: u64, rng: &mut Rng) -> Step {
        let Some(channel) = connect(url).await else {
            return Step::Abandoned;
        };
        let mut leases = LeaseClient::new(channel.clone());
        let mut kv = KvClient::new(channel);
        let key = format!("lease-{n}").into_bytes();
        let ttl = Duration::from_secs(TTL_S as u64) * if self.believe_double_ttl { 2 } else { 1 };

        let sent = Instant::now();
        let grant = LeaseGrantRequest { ttl: TTL_S, id: 0 };
        let Ok(Ok(granted)) = tokio::time::timeout(OP_TIMEOUT, leases.lease_grant(grant)).await
        else {
            return Step::Abandoned;
        };
        let id = granted.into_inner().id;
        let mut acked_at = sent;
        let put = PutRequest {
            key: key.clone(),
            value: b"held".to_vec(),
            lease: id,
            ..Default::default()
        };
        if !matches!(
            tokio::time::timeout(OP_TIMEOUT, kv.put(put)).await,
            Ok(Ok(_))
        ) {
            return Step::Abandoned;
        }
        // Until then the lease was renewed at the latest (for lateness).
        let mut renewed_by = Instant::now();
        for _ in 0..rng.between(1, 4) {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let sent = Instant::now();
            let request = tokio_stream::iter([LeaseKeepAliveRequest { id }]);
            let Ok(Ok(response)) =
                tokio::time::timeout(OP_TIMEOUT, leases.lease_keep_alive(request)).await
            else {
                return Step::Abandoned;
            };
            let mut stream = response.into_inner();
            match tokio::time::timeout(OP_TIMEOUT, stream.message()).await {
                Ok(Ok(Some(answer))) if answer.ttl > 0 => {
                    acked_at = sent;
                    renewed_by = Instant::now();
                }
                Ok(Ok(Some(_))) => {
                    // The lease is gone while being kept alive.
                    self.judge_gone(&format!("lease {id}"), acked_at, ttl);
                    return Step::Checked;
                }
                _ => return Step::Abandoned,
            }
        }
        // Stop keeping it alive; watch the key go.
        loop {
            tokio::time::sleep(POLL).await;
            let sent = Instant::now();
            let read = RangeRequest {
                key: key.clone(),
                ..Default::default()
            };
            let Ok(Ok(answer)) = tokio::time::timeout(OP_TIMEOUT, kv.range(read)).await else {
                return Step::Abandoned;
            };
            let present = !answer.into_inner().kvs.is_empty();
            if !present {
                self.judge_gone(&format!("lease {id}'s key"), acked_at, ttl);
                return Step::Checked;
            }
            let since = sent.saturating_duration_since(renewed_by);
            if self.judge_late && since > ttl + LATE_MAX {
                self.problem(format!(
                    "lease {id}'s key was still there {} ms after its last keep-alive was answered, beyond its {} s TTL and {} s more",
                    since.as_millis(),
                    ttl.as_secs(),
                    LATE_MAX.as_secs()
                ));
                return Step::Checked;
            }
            if since > ttl * 10 {
                // Unjudged, and long enough: move on.
                return Step::Abandoned;
            }
        }
    }
}

async fn connect(url: &str) -> Option<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(OP_TIMEOUT);
    tokio::time::timeout(Duration::from_secs(1), endpoint.connect())
        .await
        .ok()?
        .ok()
}
