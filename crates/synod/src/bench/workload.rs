//! The operations a benchmark client issues, over the project's own etcd
//! v3 client stubs. Each client is a closed loop: it sends one request,
//! waits for its answer, records it and sends the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use server::proto::etcdserverpb::kv_client::KvClient;
use server::proto::etcdserverpb::watch_client::WatchClient;
use server::proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
    compare, request_op, response_op, watch_request,
};

use super::conn::Conn;
use super::stats::Recorder;
use crate::rng::Rng;

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Put a value under a random key.
    Put,
    /// Get a random key.
    Get,
    /// Half gets, half puts.
    Mixed,
    /// Compare-and-set: a transaction that puts a key only if its
    /// mod_revision is the one the client last saw, else reads it.
    Txn,
    /// Watch fan-out: watchers on one prefix, `--clients` writers putting
    /// under it; measures event delivery.
    Watch,
}

/// How gets are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable: confirmed with the leader (etcd's default).
    L,
    /// Serializable: served from the member's local state.
    S,
}

/// The prefix of every key the benchmark writes, so it never touches
/// anything else in the store.
pub const KEY_PREFIX: &str = "bench/";
/// The prefix the watch workload's writers write under.
pub const WATCH_PREFIX: &str = "bench-watch/";

/// What every client of a run shares.
pub struct Plan {
    /// The workload.
    pub workload: Workload,
    /// Consistency of gets.
    pub consistency: Consistency,
    /// Keys to choose from.
    pub key_space: u64,
    /// Digits of a key's number (its length after the prefix).
    pub key_size: usize,
    /// Bytes per value.
    pub val_size: usize,
    /// How long one request may take before it counts as a timeout.
    pub timeout: Duration,
    /// The clock every latency and watch stamp is read from.
    pub epoch: Instant,
    /// Operations count from here (the warm-up ends).
    pub measure_from: Instant,
    /// No operation starts after this.
    pub stop_at: Instant,
    /// Measured operations still allowed to start (`u64::MAX`: unbounded).
    pub budget: AtomicU64,
    /// Operations completed, warm-up included, for progress.
    pub done: AtomicU64,
    /// Keep every operation's start and latency (see `--timeline`).
    pub timeline: bool,
}

impl Plan {
    /// The name of key number `i`.
    pub fn key(&self, i: u64) -> Vec<u8> {
        format!("{KEY_PREFIX}{i:0width$}", width = self.key_size).into_bytes()
    }

    /// Claims the right to start one more operation; false once the run is
    /// over.
    fn claim(&self, now: Instant) -> bool {
        if now >= self.stop_at {
            return false;
        }
        if now < self.measure_from {
            return true;
        }
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    }

    /// A value of `val_size` bytes whose first 8 carry `stamp_ns`.
    fn value(&self, stamp_ns: u64) -> Vec<u8> {
        let mut value = vec![b'v'; self.val_size.max(8)];
        value[..8].copy_from_slice(&stamp_ns.to_le_bytes());
        value.truncate(self.val_size.max(8));
        value
    }

    fn since_epoch_ns(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// One client's closed loop over `channel` until the plan's end.
pub async fn client(plan: Arc<Plan>, channel: Conn, index: usize, seed: u64) -> Recorder {
    let mut kv = KvClient::new(channel);
    let mut rng = Rng::new(seed.wrapping_add(index as u64 + 1));
    let mut recorder = Recorder::default();
    // The compare-and-set workload: each client owns one key (shared when
    // there are more clients than keys) and the mod_revision it last saw.
    let cas_key = plan.key(index as u64 % plan.key_space.max(1));
    let mut cas_revision = 0i64;
    loop {
        let start = Instant::now();
        if !plan.claim(start) {
            break;
        }
        let key = if plan.workload == Workload::Watch {
            format!("{WATCH_PREFIX}{index}").into_bytes()
        } else {
            plan.key(rng.below(plan.key_space))
        };
        let put = match plan.workload {
            Workload::Put | Workload::Watch => true,
            Workload::Get | Workload::Txn => false,
            Workload::Mixed => rng.chance(50),
        };
        // Each request yields the revision its answer carried.
        let outcome: Result<i64, tonic::Status> = if plan.workload == Workload::Txn {
            let request = cas_request(&cas_key, cas_revision, plan.value(0));
            within(plan.timeout, kv.txn(request)).await.map(|response| {
                if start >= plan.measure_from {
                    if response.succeeded {
                        recorder.cas_succeeded += 1;
                    } else {
                        recorder.cas_failed += 1;
                    }
                }
                cas_revision = revision_after_cas(&response, cas_revision);
                header_revision(&response.header)
            })
        } else if put {
            let request = PutRequest {
                key,
                value: plan.value(plan.since_epoch_ns(start)),
                ..Default::default()
            };
            within(plan.timeout, kv.put(request))
                .await
                .map(|r| header_revision(&r.header))
        } else {
            let request = RangeRequest {
                key,
                serializable: plan.consistency == Consistency::S,
                ..Default::default()
            };
            within(plan.timeout, kv.range(request))
                .await
                .map(|r| header_revision(&r.header))
        };
        if let Ok(revision) = outcome {
            recorder.revision = recorder.revision.max(revision);
        }
        let end = Instant::now();
        plan.done.fetch_add(1, Ordering::Relaxed);
        if start < plan.measure_from {
            continue;
        }
        recorder.last_end = recorder.last_end.max(Some(end));
        match outcome {
            Ok(_) => {
                let latency = u64::try_from((end - start).as_nanos()).unwrap_or(u64::MAX);
                recorder.latencies_ns.push(latency);
                if plan.timeline {
                    let started = plan.since_epoch_ns(start);
                    recorder.timeline.push((index, started, latency));
                }
            }
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => recorder.timeouts += 1,
            Err(status) => {
                recorder.error(status.message().to_owned());
                // An unavailable member would otherwise be hammered in a
                // tight loop; errors are counted, not raced.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    recorder
}

/// The answer to a unary call, or a deadline-exceeded status once
/// `timeout` passes without one.
async fn within<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(tonic::Status::deadline_exceeded("timeout")),
        Ok(result) => result.map(tonic::Response::into_inner),
    }
}

/// The revision in a response header (0 without one).
fn header_revision(header: &Option<server::proto::etcdserverpb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

/// A transaction: if `key`'s mod_revision is `revision`, put `value`; else
/// read the key, to learn its revision for the next try.
fn cas_request(key: &[u8], revision: i64, value: Vec<u8>) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Mod as i32,
            key: key.to_vec(),
            target_union: Some(compare::TargetUnion::ModRevision(revision)),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.to_vec(),
                value,
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestRange(RangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })),
        }],
    }
}

/// The key's mod_revision after a compare-and-set answered `response`.
fn revision_after_cas(response: &server::proto::etcdserverpb::TxnResponse, before: i64) -> i64 {
    if response.succeeded {
        return response.header.as_ref().map_or(before, |h| h.revision);
    }
    response
        .responses
        .iter()
        .find_map(|r| match &r.response {
            Some(response_op::Response::ResponseRange(range)) => {
                Some(range.kvs.first().map_or(0, |kv| kv.mod_revision))
            }
            _ => None,
        })
        .unwrap_or(before)
}

/// One watcher of the fan-out: opens a watch on [`WATCH_PREFIX`], reports
/// on `ready` once the server confirmed it, waits for the run's plan, then
/// records the delivery latency of every event (its arrival minus the
/// stamp its writer put in the value, both read from `epoch`) until the
/// plan's end.
pub async fn watcher(
    channel: Conn,
    epoch: Instant,
    ready: tokio::sync::mpsc::Sender<Result<(), String>>,
    mut plan: tokio::sync::watch::Receiver<Option<Arc<Plan>>>,
) -> Recorder {
    let mut recorder = Recorder::default();
    let mut client = WatchClient::new(channel);
    let prefix = WATCH_PREFIX.as_bytes().to_vec();
    let mut range_end = prefix.clone();
    if let Some(last) = range_end.last_mut() {
        *last += 1;
    }
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: prefix,
                range_end,
                ..Default::default()
            },
        )),
    };
    // The request stream stays open (a closed one ends the watch) until
    // this function returns and drops the sender.
    let (requests, request_rx) = tokio::sync::mpsc::channel(1);
    let _ = requests.send(create).await;
    let stream = tokio_stream::wrappers::ReceiverStream::new(request_rx);
    let mut responses = match client.watch(stream).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let _ = ready.send(Err(status.message().to_owned())).await;
            return recorder;
        }
    };
    match responses.message().await {
        Ok(Some(message)) if message.created && !message.canceled => {
            let _ = ready.send(Ok(())).await;
        }
        Ok(Some(message)) => {
            let _ = ready
                .send(Err(format!("watch not created: {}", message.cancel_reason)))
                .await;
            return recorder;
        }
        Ok(None) => {
            let _ = ready.send(Err("the watch stream ended".into())).await;
            return recorder;
        }
        Err(status) => {
            let _ = ready.send(Err(status.message().to_owned())).await;
            return recorder;
        }
    }
    drop(ready);
    let plan = match plan.wait_for(Option::is_some).await {
        Ok(plan) => match plan.as_ref() {
            Some(plan) => Arc::clone(plan),
            None => return recorder,
        },
        Err(_) => return recorder,
    };
    debug_assert_eq!(plan.epoch, epoch, "stamps and arrivals share one clock");
    // Events still on their way when the writers stop get a moment to
    // arrive; later ones would be slower than any figure worth reporting.
    let deadline = plan.stop_at + plan.timeout.min(Duration::from_secs(1));
    let measure_from_ns = plan.since_epoch_ns(plan.measure_from);
    loop {
        let message = match tokio::time::timeout_at(deadline.into(), responses.message()).await {
            Err(_) => break,
            Ok(Err(status)) => {
                recorder.error(status.message().to_owned());
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(message))) => message,
        };
        if message.canceled {
            recorder.error(format!("watch canceled: {}", message.cancel_reason));
            break;
        }
        let now_ns = plan.since_epoch_ns(Instant::now());
        for event in &message.events {
            let Some(stamp) = event.kv.as_ref().and_then(|kv| kv.value.first_chunk::<8>()) else {
                continue;
            };
            let sent_ns = u64::from_le_bytes(*stamp);
            if sent_ns >= measure_from_ns {
                recorder.latencies_ns.push(now_ns.saturating_sub(sent_ns));
            }
        }
    }
    drop(requests);
    recorder
}
