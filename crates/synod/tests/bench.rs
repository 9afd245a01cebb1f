//! `synod bench` against a real 3-member cluster: every workload does what
//! it says (the writes land, compare-and-sets take turns, every watcher sees
//! every event), the JSON results add up, and `compare` pairs two systems'
//! figures.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::Cluster;

fn synod(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .output()
        .expect("run synod")
}

fn ok(args: &[&str]) -> String {
    let out = synod(args);
    assert!(
        out.status.success(),
        "synod {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last JSON line of a results file.
fn last_record(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("results file");
    let line = text.lines().last().expect("a record");
    serde_json::from_str(line).expect("a JSON record")
}

fn number(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut at = v;
    for p in path {
        at = &at[*p];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is a number in {v}"))
}

#[test]
fn bench_workloads_do_what_they_say_against_a_cluster() {
    let c = Cluster::start("bench");
    let endpoints = c.endpoints(false);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-results");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let results = dir.join("results.jsonl");
    let results_s = results.to_str().expect("path");
    let base = [
        "bench",
        "--endpoints",
        endpoints.as_str(),
        "--warmup",
        "0",
        "--key-space",
        "50",
        "--json",
        results_s,
    ];
    let run = |extra: &[&str]| -> (String, serde_json::Value) {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let table = ok(&args);
        (table, last_record(&results))
    };

    // Puts: exactly the asked number, all acknowledged, and they are in
    // the store (50 keys, one revision per put).
    let timeline = dir.join("timeline.txt");
    let (table, put) = run(&[
        "--workload",
        "put",
        "--clients",
        "8",
        "--total",
        "300",
        "--timeline",
        timeline.to_str().expect("path"),
    ]);
    assert!(table.contains("throughput"), "{table}");
    // The timeline has every measured put: its client, when it started
    // (ms since the UNIX epoch, in order) and how long it took.
    let lines = std::fs::read_to_string(&timeline).expect("timeline written");
    let ops: Vec<(usize, f64, f64)> = lines
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 3, "{line}");
            let parse = |s: &str| s.parse::<f64>().expect("a number");
            (f[0].parse().expect("client"), parse(f[1]), parse(f[2]))
        })
        .collect();
    assert_eq!(ops.len(), 300);
    assert!(
        ops.iter()
            .all(|&(client, _, latency)| client < 8 && latency > 0.0)
    );
    assert!(ops.windows(2).all(|w| w[0].1 <= w[1].1), "sorted by start");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as f64;
    assert!(
        ops.iter()
            .all(|&(_, start, _)| start <= now_ms && start > now_ms - 600_000.0)
    );
    assert_eq!(number(&put, &["result", "ops"]), 300.0);
    assert_eq!(number(&put, &["result", "errors"]), 0.0);
    assert_eq!(number(&put, &["result", "timeouts"]), 0.0);
    assert!(number(&put, &["result", "throughput"]) > 0.0);
    let (p50, p99) = (
        number(&put, &["result", "latency_ms", "p50"]),
        number(&put, &["result", "latency_ms", "p99"]),
    );
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");
    let count = c.ok(&["get", "bench/", "--prefix", "--keys-only", "-w", "json"]);
    let keys: serde_json::Value = serde_json::from_str(&count).expect("etcdctl json");
    let n = keys["count"].as_u64().expect("count");
    assert!((1..=50).contains(&n), "{count}");
    let revision = keys["header"]["revision"].as_u64().expect("revision");
    assert!(revision > 300, "{count}");
    // The run reports the revision its last answers carried.
    assert_eq!(number(&put, &["result", "revision"]), revision as f64);

    // Linearizable gets over a prefilled key space, from every member.
    let (_, get) = run(&[
        "--workload",
        "get",
        "--clients",
        "4",
        "--total",
        "200",
        "--prefill",
    ]);
    assert_eq!(get["name"], "get l c=4");
    assert_eq!(number(&get, &["result", "ops"]), 200.0);
    assert_eq!(number(&get, &["result", "errors"]), 0.0);

    // Compare-and-set: each client owns a key; only its first try, made
    // before it knows the key's revision, can find a newer one.
    let (table, txn) = run(&["--workload", "txn", "--clients", "4", "--total", "100"]);
    let succeeded = number(&txn, &["result", "cas_succeeded"]);
    let failed = number(&txn, &["result", "cas_failed"]);
    assert_eq!(succeeded + failed, 100.0, "{table}");
    assert!(failed <= 4.0, "{table}");

    // Watch fan-out: every watcher gets every measured put, once.
    let (table, watch) = run(&[
        "--workload",
        "watch",
        "--clients",
        "1",
        "--watchers",
        "5",
        "--conns",
        "2",
        "--duration",
        "1",
    ]);
    let puts = number(&watch, &["result", "ops"]);
    assert!(puts > 0.0, "{table}");
    assert_eq!(number(&watch, &["watch", "events"]), 5.0 * puts, "{table}");
    assert_eq!(number(&watch, &["watch", "errors"]), 0.0, "{table}");

    // Leader only: the figure names the one endpoint it went to.
    let (_, leader) = run(&[
        "--workload",
        "put",
        "--clients",
        "2",
        "--total",
        "20",
        "--target",
        "leader",
    ]);
    assert_eq!(leader["endpoints"].as_array().map(Vec::len), Some(1));
    assert_eq!(leader["target"], "leader");

    // The floor, and a comparison of two labelled runs of one figure.
    let floor = ok(&[
        "bench",
        "floor",
        "--dir",
        dir.to_str().expect("path"),
        "--samples",
        "50",
        "--json",
        results_s,
    ]);
    assert!(floor.contains("fdatasync"), "{floor}");
    assert!(floor.contains("3 writers at once"), "{floor}");
    assert!(floor.contains("floor of a write by 3 members"), "{floor}");
    let mut again: Vec<&str> = base.to_vec();
    again.extend([
        "--workload",
        "put",
        "--clients",
        "8",
        "--total",
        "300",
        "--label",
        "other",
    ]);
    ok(&again);
    let table = ok(&[
        "bench",
        "compare",
        results_s,
        "--candidate",
        "synod",
        "--baseline",
        "other",
    ]);
    assert!(table.contains("put c=8 ops/s"), "{table}");
    assert!(table.contains("floor"), "{table}");
    assert!(table.contains("replicated floor"), "{table}");
    let none = synod(&["bench", "compare", results_s, "--baseline", "nobody"]);
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no figure was measured for both"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
}

#[test]
fn bench_refuses_an_endpoint_it_cannot_reach() {
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = synod(&["bench", "--endpoints", &url, "--total", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect to"), "{stderr}");
}
