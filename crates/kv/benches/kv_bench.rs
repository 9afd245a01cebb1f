//! Memory and apply-throughput benchmark of the kv state machine.
//!
//! Run: `cargo bench -p kv --bench kv_bench` (about two minutes, peaks near
//! 5 GiB). `KV_BENCH_KEYS=100000` makes it quicker and smaller.
//!
//! Memory: 1,000,000 keys of 32 bytes with 256-byte values, one revision
//! each; then 10 overwrites of every key and a compaction at the last
//! revision. Reported: the process's resident memory (`VmRSS` from
//! `/proc/self/status`), the bytes live on the heap (a counting allocator
//! wraps the system one), and both as a ratio to the raw key and value
//! bytes. After the compaction, glibc keeps the freed chunks mapped; the RSS
//! is reported as is and after `malloc_trim(0)` returns them to the kernel.
//!
//! Throughput: commands applied per second on one core, for puts and for
//! 4-put transactions with one compare, with commands built beforehand;
//! also decode plus apply, as a replica does with log entries.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use kv::{
    ApplyContext, Command, CompactionRequest, Compare, CompareResult, CompareTarget, PutRequest,
    RequestOp, Store, TxnRequest,
};

/// Counts bytes live on the heap, so the store's own footprint can be told
/// apart from what the allocator keeps cached.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; only adds counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe extern "C" {
    fn malloc_trim(pad: usize) -> i32;
    fn mallopt(param: i32, value: i32) -> i32;
}

/// Fixes glibc's mmap threshold at 1 MiB, as a synod member does
/// (`server::node::tuning`): without it the threshold rises after the first
/// large free, and what a store frees stays in the heap until a trim.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters. M_MMAP_THRESHOLD is -3.
    unsafe {
        mallopt(-3, 1 << 20);
    }
}

fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: glibc's malloc_trim takes no pointers and is thread-safe.
    unsafe {
        malloc_trim(0);
    }
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

const KEY_BYTES: usize = 32;
const VALUE_BYTES: usize = 256;

/// The i-th key: 32 bytes, distinct, visited in a scrambled order by callers.
fn key(i: usize) -> Vec<u8> {
    let k = format!("key/{i:028}");
    debug_assert_eq!(k.len(), KEY_BYTES);
    k.into_bytes()
}

fn value(i: usize, round: usize) -> Vec<u8> {
    let mut v = vec![(i as u8) ^ (round as u8); VALUE_BYTES];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

/// A permutation of 0..n (n coprime stride), so inserts are not in key order.
fn scrambled(n: usize) -> impl Iterator<Item = usize> {
    let stride = 7_919_usize;
    (0..n).map(move |i| (i * stride) % n)
}

fn put(i: usize, round: usize) -> Command {
    Command::Put(PutRequest {
        key: key(i),
        value: value(i, round),
        ..PutRequest::default()
    })
}

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

struct Row {
    what: &'static str,
    rss: usize,
    live: usize,
}

fn main() {
    let n: usize = std::env::var("KV_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    assert!(
        !n.is_multiple_of(7_919),
        "the stride must be coprime with n"
    );
    tune_allocator();
    let raw = n * (KEY_BYTES + VALUE_BYTES);
    let ctx = ApplyContext { now_ms: 0 };
    let base_rss = rss_bytes();
    let base_live = LIVE.load(Relaxed);
    println!(
        "kv memory and apply benchmark: {n} keys x ({KEY_BYTES} B key + {VALUE_BYTES} B value), raw {:.1} MiB",
        mib(raw)
    );
    println!("process baseline: RSS {:.1} MiB", mib(base_rss));

    // ---- memory ----
    let mut rows = Vec::new();
    let mut store = Store::default();
    let t = Instant::now();
    for i in scrambled(n) {
        store.apply(&put(i, 0), ctx).expect("put");
    }
    let load_s = t.elapsed().as_secs_f64();
    rows.push(Row {
        what: "after load (1 revision per key)",
        rss: rss_bytes(),
        live: LIVE.load(Relaxed) - base_live,
    });

    let t = Instant::now();
    for round in 1..=10 {
        for i in scrambled(n) {
            store.apply(&put(i, round), ctx).expect("put");
        }
    }
    let overwrite_s = t.elapsed().as_secs_f64();
    rows.push(Row {
        what: "after 10 overwrites (11 revisions per key)",
        rss: rss_bytes(),
        live: LIVE.load(Relaxed) - base_live,
    });
    let t = Instant::now();
    let revision = store.revision();
    store
        .apply(
            &Command::Compact(CompactionRequest {
                revision,
                physical: true,
            }),
            ctx,
        )
        .expect("compact");
    let compact_s = t.elapsed().as_secs_f64();
    assert_eq!(store.record_count(), n);
    rows.push(Row {
        what: "after compaction (RSS as is)",
        rss: rss_bytes(),
        live: LIVE.load(Relaxed) - base_live,
    });
    trim();
    rows.push(Row {
        what: "after compaction + malloc_trim(0)",
        rss: rss_bytes(),
        live: LIVE.load(Relaxed) - base_live,
    });
    let t = Instant::now();
    let hash = store.state_hash();
    let hash_s = t.elapsed().as_secs_f64();

    println!();
    println!("| state | VmRSS MiB | VmRSS / raw | live heap MiB | live heap / raw |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.2}x | {:.1} | {:.2}x |",
            r.what,
            mib(r.rss),
            r.rss as f64 / raw as f64,
            mib(r.live),
            r.live as f64 / raw as f64
        );
    }
    println!();
    println!(
        "load {:.1} s ({:.0} puts/s incl. building commands), 10 overwrites {:.1} s, compaction {:.2} s, state hash {:.2} s ({hash:016x})",
        load_s,
        n as f64 / load_s,
        overwrite_s,
        compact_s,
        hash_s
    );
    drop(store);
    trim();

    // ---- snapshot ----
    // A snapshot freezes a copy on the serving thread (what that stall
    // costs), then encodes it on another; here both on this one, for a
    // tenth of the keys with 11 revisions each.
    let keys = (n / 10).max(1);
    let mut store = Store::default();
    for round in 0..=10 {
        for i in 0..keys {
            store.apply(&put(i, round), ctx).expect("put");
        }
    }
    let t = Instant::now();
    let frozen = store.frozen();
    let freeze_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut snapshot_bytes = 0;
    frozen
        .write_snapshot(|piece| {
            snapshot_bytes += piece.len();
            Ok::<(), std::convert::Infallible>(())
        })
        .expect("infallible");
    let encode_s = t.elapsed().as_secs_f64();
    println!();
    println!(
        "snapshot of {keys} keys, {} records: freeze {:.1} ms (the serving thread's stall), encode {:.0} ms, {:.1} MiB",
        store.record_count(),
        freeze_s * 1e3,
        encode_s * 1e3,
        mib(snapshot_bytes)
    );
    drop(frozen);
    drop(store);
    trim();

    // ---- throughput ----
    let ops = n;
    let working_set = (n / 10).max(1);
    let puts: Vec<Command> = scrambled(ops).map(|i| put(i % working_set, i)).collect();
    let txns: Vec<Command> = scrambled(ops / 4)
        .map(|i| {
            let base = (i * 4) % working_set;
            Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Greater,
                    target: CompareTarget::Version(-1),
                    key: key(base),
                    range_end: Vec::new(),
                }],
                success: (0..4)
                    .map(|j| {
                        RequestOp::Put(PutRequest {
                            key: key((base + j) % working_set),
                            value: value(i, j),
                            ..PutRequest::default()
                        })
                    })
                    .collect(),
                failure: Vec::new(),
            })
        })
        .collect();
    println!();
    println!("apply throughput, one core, {working_set} distinct keys, {VALUE_BYTES} B values:");
    println!("| workload | commands | seconds | commands/s | key writes/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let bench = |name: &str, cmds: &[Command], writes_per_cmd: usize, decode: bool| {
        let mut store = Store::default();
        let encoded: Vec<Vec<u8>> = if decode {
            cmds.iter().map(Command::encode).collect()
        } else {
            Vec::new()
        };
        let t = Instant::now();
        if decode {
            for bytes in &encoded {
                let cmd = Command::decode(bytes).expect("decode");
                black_box(store.apply(&cmd, ctx).expect("apply"));
            }
        } else {
            for cmd in cmds {
                black_box(store.apply(cmd, ctx).expect("apply"));
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!(
            "| {name} | {} | {s:.2} | {:.0} | {:.0} |",
            cmds.len(),
            cmds.len() as f64 / s,
            (cmds.len() * writes_per_cmd) as f64 / s
        );
    };
    bench("put", &puts, 1, false);
    bench("txn: 1 compare + 4 puts", &txns, 4, false);
    bench("put, decoded from log bytes", &puts, 1, true);
    bench("txn, decoded from log bytes", &txns, 4, true);
}
