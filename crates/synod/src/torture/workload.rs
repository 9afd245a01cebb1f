//! The clients of a torture run: each a tokio task with its own etcd v3
//! connection to a random member, doing reads, writes of unique values,
//! deletes and compare-and-sets on a few keys, recording every operation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use check::{Op, Operation, Outcome};
use server::proto::etcdserverpb::kv_client::KvClient;
use server::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare,
    request_op,
};
use tonic::transport::{Channel, Endpoint};

pub use crate::rng::Rng;

/// How long a client waits for one answer before calling it unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// State the clients share with the driver.
pub struct Shared {
    start: Instant,
    ops: Mutex<Vec<Operation>>,
    next_value: AtomicU64,
    last: Mutex<Vec<Option<u64>>>,
    /// Set to end the workload.
    pub stop: AtomicBool,
    urls: Vec<String>,
    keys: usize,
    /// Read from the member's local state (etcd's serializable reads) but
    /// record the reads as linearizable: a deliberately wrong history, to
    /// show the checker rejects the stale reads that produces.
    local_reads: bool,
}

impl Shared {
    /// For `keys` keys on the members at `urls`; `local_reads`: see
    /// [`Shared::local_reads`].
    pub fn new(start: Instant, urls: Vec<String>, keys: usize, local_reads: bool) -> Arc<Shared> {
        Arc::new(Shared {
            start,
            ops: Mutex::new(Vec::new()),
            next_value: AtomicU64::new(1),
            last: Mutex::new(vec![None; keys]),
            stop: AtomicBool::new(false),
            urls,
            keys: keys.max(1),
            local_reads,
        })
    }

    /// Nanoseconds since the start of the run.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn record(&self, op: Operation) {
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
    }

    /// The history recorded so far.
    pub fn history(&self) -> Vec<Operation> {
        self.ops.lock().map(|o| o.clone()).unwrap_or_default()
    }

    fn last(&self, key: usize) -> Option<u64> {
        self.last.lock().ok().and_then(|l| l[key])
    }

    fn set_last(&self, key: usize, value: Option<u64>) {
        if let Ok(mut l) = self.last.lock() {
            l[key] = value;
        }
    }
}

/// An etcd v3 KV client.
pub type Kv = KvClient<Channel>;

/// Connects to `url`, or `None` within about a second.
pub async fn connect(url: &str) -> Option<Kv> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(OP_TIMEOUT);
    let channel = tokio::time::timeout(Duration::from_secs(1), endpoint.connect())
        .await
        .ok()?
        .ok()?;
    Some(KvClient::new(channel))
}

/// The key's name in the store.
pub fn key_name(key: usize) -> String {
    format!("k{key}")
}

/// Reads `key` linearizably, or from the member's local state if
/// `serializable`: `Ok(value)` (`None` for missing), `Err(true)` on a
/// timeout, `Err(false)` on an error.
pub async fn read(kv: &mut Kv, key: &str, serializable: bool) -> Result<Option<u64>, bool> {
    let req = RangeRequest {
        key: key.as_bytes().to_vec(),
        serializable,
        ..Default::default()
    };
    match tokio::time::timeout(OP_TIMEOUT, kv.range(req)).await {
        Err(_) => Err(true),
        Ok(Err(_)) => Err(false),
        Ok(Ok(resp)) => match resp.into_inner().kvs.first() {
            None => Ok(None),
            Some(kv) => std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or(false),
        },
    }
}

/// Puts `value` under `key`: `Some(true)` acknowledged, `None` unknown.
pub async fn write(kv: &mut Kv, key: &str, value: u64) -> Option<bool> {
    let req = PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.to_string().into_bytes(),
        ..Default::default()
    };
    match tokio::time::timeout(OP_TIMEOUT, kv.put(req)).await {
        Ok(Ok(_)) => Some(true),
        _ => None,
    }
}

/// Deletes `key`: `Some(true)` acknowledged, `None` unknown.
pub async fn delete(kv: &mut Kv, key: &str) -> Option<bool> {
    let req = DeleteRangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    match tokio::time::timeout(OP_TIMEOUT, kv.delete_range(req)).await {
        Ok(Ok(_)) => Some(true),
        _ => None,
    }
}

/// Compare-and-set: `Some(true)` swapped, `Some(false)` did not match,
/// `None` unknown.
pub async fn cas(kv: &mut Kv, key: &str, expected: Option<u64>, new: u64) -> Option<bool> {
    let compare = match expected {
        Some(v) => Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Value as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(compare::TargetUnion::Value(v.to_string().into_bytes())),
            ..Default::default()
        },
        None => Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Create as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(compare::TargetUnion::CreateRevision(0)),
            ..Default::default()
        },
    };
    let req = TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value: new.to_string().into_bytes(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    };
    match tokio::time::timeout(OP_TIMEOUT, kv.txn(req)).await {
        Ok(Ok(resp)) => Some(resp.into_inner().succeeded),
        _ => None,
    }
}

/// One client: runs until `shared.stop`. Process ids are `index`, then
/// `index + clients`, ... (a fresh one after each unknown outcome).
pub async fn client(shared: Arc<Shared>, index: usize, clients: usize, seed: u64) {
    let mut rng =
        Rng::new(seed.wrapping_add((index as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)));
    let mut process = index as u64;
    let mut conn: Option<Kv> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(kv) = conn.as_mut() else {
            let url = &shared.urls[rng.below(shared.urls.len() as u64) as usize];
            conn = connect(url).await;
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            continue;
        };
        let key = rng.below(shared.keys as u64) as usize;
        let name = key_name(key);
        let roll = rng.below(100);
        let invoke = shared.now();
        let (op, outcome) = if roll < 40 {
            let outcome = match read(kv, &name, shared.local_reads).await {
                Ok(v) => {
                    shared.set_last(key, v);
                    Outcome::Ok(Some(v))
                }
                // A read that failed constrains nothing: the format has no
                // `fail` for reads.
                Err(_) => Outcome::Info,
            };
            (Op::Read, outcome)
        } else {
            let value = shared.next_value.fetch_add(1, Ordering::Relaxed);
            if roll < 63 {
                let outcome = match write(kv, &name, value).await {
                    Some(_) => {
                        shared.set_last(key, Some(value));
                        Outcome::Ok(None)
                    }
                    None => Outcome::Info,
                };
                (Op::Write(value), outcome)
            } else if roll < 70 {
                let outcome = match delete(kv, &name).await {
                    Some(_) => {
                        shared.set_last(key, None);
                        Outcome::Ok(None)
                    }
                    None => Outcome::Info,
                };
                (Op::Delete, outcome)
            } else {
                let expected = shared.last(key);
                let outcome = match cas(kv, &name, expected, value).await {
                    Some(true) => {
                        shared.set_last(key, Some(value));
                        Outcome::Ok(None)
                    }
                    Some(false) => Outcome::Fail,
                    None => Outcome::Info,
                };
                (
                    Op::Cas {
                        expected,
                        new: value,
                    },
                    outcome,
                )
            }
        };
        let complete = shared.now();
        let failed = !matches!(outcome, Outcome::Ok(_))
            && !matches!(op, Op::Cas { .. } if outcome == Outcome::Fail);
        let unknown = outcome == Outcome::Info;
        shared.record(Operation {
            process,
            key: name,
            op,
            invoke,
            complete: Some(complete),
            outcome,
        });
        if unknown {
            process += clients as u64;
        }
        if failed {
            // Try another member: this one may be cut off, paused or dead.
            conn = None;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
    }
}

/// Reads every key through a fresh connection (any member that answers),
/// recording the reads as process `process`; gives up after `timeout`.
pub async fn final_reads(shared: &Shared, process: u64, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    let mut done = 0;
    for key in 0..shared.keys {
        let name = key_name(key);
        let mut member = key;
        while Instant::now() < deadline {
            member = (member + 1) % shared.urls.len();
            let Some(mut kv) = connect(&shared.urls[member]).await else {
                continue;
            };
            let invoke = shared.now();
            let result = read(&mut kv, &name, shared.local_reads).await;
            let complete = shared.now();
            let outcome = match result {
                Ok(v) => Outcome::Ok(Some(v)),
                Err(_) => Outcome::Info,
            };
            let ok = matches!(outcome, Outcome::Ok(_));
            shared.record(Operation {
                process,
                key: name.clone(),
                op: Op::Read,
                invoke,
                complete: Some(complete),
                outcome,
            });
            if ok {
                done += 1;
                break;
            }
        }
    }
    done
}
