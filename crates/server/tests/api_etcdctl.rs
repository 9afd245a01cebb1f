//! Real etcdctl against `api::routes` over a `MemBackend`. Both tests are
//! ignored: the suite does not depend on etcdctl. Run them by hand:
//!
//! ```text
//! cargo test -p server --test api_etcdctl -- --ignored --nocapture etcdctl_transcript
//! SYNOD_SERVE_SECS=600 cargo test -p server --test api_etcdctl -- --ignored --nocapture serve_for_etcdctl
//! ```
//!
//! The port is 23790 on 127.0.0.1 unless `SYNOD_ETCDCTL_PORT` says
//! otherwise; `ETCDCTL` names the binary (default `etcdctl`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use server::api::{self, Backend, MemBackend, MemConfig};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

fn addr() -> SocketAddr {
    let port: u16 = std::env::var("SYNOD_ETCDCTL_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(23790);
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Serves the five services over `backend` on `addr` until the returned
/// sender is dropped or fired.
async fn serve(backend: Arc<MemBackend>, addr: SocketAddr) -> tokio::sync::oneshot::Sender<()> {
    let listener = TcpListener::bind(addr)
        .await
        .expect("bind the etcdctl port");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = backend.config().clone();
    let routes = api::routes(backend, config.cluster_id, config.member_id);
    tokio::spawn(
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    stop
}

fn mem_backend(addr: SocketAddr) -> Arc<MemBackend> {
    let backend = Arc::new(MemBackend::new(MemConfig {
        client_urls: vec![format!("http://{addr}")],
        ..MemConfig::default()
    }));
    backend.spawn_lease_expiry(Duration::from_millis(200));
    backend
}

/// Serves a `MemBackend` for manual etcdctl sessions, for
/// `SYNOD_SERVE_SECS` seconds (default 300).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "serves until SYNOD_SERVE_SECS elapse; for manual etcdctl use"]
async fn serve_for_etcdctl() {
    let addr = addr();
    let secs: u64 = std::env::var("SYNOD_SERVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let _stop = serve(mem_backend(addr), addr).await;
    println!("serving etcd API on {addr} for {secs}s");
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

/// One etcdctl run: exit success, stdout, stderr.
fn etcdctl(addr: SocketAddr, args: &[&str], stdin: Option<&[u8]>) -> (bool, String, String) {
    let binary = std::env::var("ETCDCTL").unwrap_or_else(|_| "etcdctl".to_owned());
    let mut child = Command::new(binary)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={addr}"))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run etcdctl");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(bytes) = stdin {
            input.write_all(bytes).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("etcdctl output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("$ etcdctl {}", args.join(" "));
    print!("{stdout}");
    if !stderr.is_empty() {
        print!("[stderr] {stderr}");
    }
    (out.status.success(), stdout, stderr)
}

/// Runs etcdctl and expects success with `expected` in its output.
fn ok(addr: SocketAddr, args: &[&str], stdin: Option<&[u8]>, expected: &str) -> String {
    let (success, stdout, stderr) = etcdctl(addr, args, stdin);
    assert!(success, "etcdctl {args:?} failed: {stderr}");
    assert!(
        stdout.contains(expected),
        "etcdctl {args:?}: {expected:?} not in {stdout:?}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs etcdctl on PATH and a free port 23790"]
async fn etcdctl_transcript() {
    let addr = addr();
    let backend = mem_backend(addr);
    let _stop = serve(Arc::clone(&backend), addr).await;
    let run = {
        let backend = Arc::clone(&backend);
        move || transcript(addr, &backend)
    };
    tokio::time::timeout(Duration::from_secs(120), tokio::task::spawn_blocking(run))
        .await
        .expect("bounded")
        .expect("transcript");
}

fn transcript(addr: SocketAddr, backend: &Arc<MemBackend>) {
    ok(addr, &["put", "foo", "bar"], None, "OK");
    ok(addr, &["get", "foo"], None, "foo\nbar\n");
    ok(addr, &["put", "fox", "quick"], None, "OK");
    ok(
        addr,
        &["get", "--prefix", "fo", "--print-value-only"],
        None,
        "bar\nquick\n",
    );
    ok(addr, &["get", "foo", "-w", "json"], None, "\"revision\":3");
    ok(addr, &["get", "foo", "--rev=2"], None, "bar");

    // Interactive txn: compares, then success ops, then failure ops.
    let script = b"mod(\"foo\") > \"0\"\nvalue(\"fox\") = \"quick\"\n\nput foo baz\nget fox\n\nput foo nope\n\n";
    ok(addr, &["txn"], Some(script), "SUCCESS");
    ok(addr, &["get", "foo", "--print-value-only"], None, "baz");
    let script = b"version(\"foo\") = \"100\"\n\nput foo nope\n\nget foo\n\n";
    ok(addr, &["txn"], Some(script), "FAILURE");

    // Watch with a concurrent writer.
    let binary = std::env::var("ETCDCTL").unwrap_or_else(|_| "etcdctl".to_owned());
    let mut watcher = Command::new(binary)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={addr}"))
        .args(["watch", "--prefix", "w/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let stdout = watcher.stdout.take().expect("watch stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // The watch is in place once a write shows up; keep writing until then.
    let mut seen = Vec::new();
    for attempt in 0..50 {
        ok(addr, &["put", &format!("w/{attempt}"), "v"], None, "OK");
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
            break;
        }
    }
    ok(addr, &["put", "w/last", "final"], None, "OK");
    ok(addr, &["del", "w/last"], None, "1");
    while !seen.windows(2).any(|w| w == ["DELETE", "w/last"]) {
        seen.push(
            lines_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("watch output"),
        );
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    println!("[watch output]\n{}", seen.join("\n"));
    assert!(
        seen.windows(3).any(|w| w == ["PUT", "w/last", "final"]),
        "{seen:?}"
    );
    assert!(
        seen.windows(2).any(|w| w == ["DELETE", "w/last"]),
        "{seen:?}"
    );

    // Leases.
    let granted = ok(
        addr,
        &["lease", "grant", "60"],
        None,
        "granted with TTL(60s)",
    );
    let id = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_owned();
    ok(addr, &["put", "--lease", &id, "leased", "v"], None, "OK");
    ok(
        addr,
        &["lease", "keep-alive", "--once", &id],
        None,
        "keepalived with TTL(60)",
    );
    ok(
        addr,
        &["lease", "timetolive", "--keys", &id],
        None,
        "attached keys([leased])",
    );
    ok(addr, &["lease", "list"], None, &id);
    ok(addr, &["lease", "revoke", &id], None, "revoked");
    let (_, stdout, _) = etcdctl(addr, &["get", "leased"], None);
    assert!(stdout.is_empty(), "revoked lease's key is gone");
    let (success, _, stderr) = etcdctl(addr, &["lease", "revoke", &id], None);
    assert!(!success && stderr.contains("etcdserver: requested lease not found"));

    // Cluster and maintenance.
    ok(addr, &["member", "list"], None, "started, synod-mem");
    ok(addr, &["member", "list", "-w", "table"], None, "synod-mem");
    ok(addr, &["endpoint", "status", "-w", "table"], None, "3.5.0");
    ok(
        addr,
        &["endpoint", "status", "-w", "json"],
        None,
        "\"version\":\"3.5.0\"",
    );
    let (success, stdout, stderr) = etcdctl(addr, &["endpoint", "health"], None);
    assert!(success, "{stderr}");
    assert!(stdout.contains("is healthy") || stderr.contains("is healthy"));
    ok(addr, &["endpoint", "hashkv"], None, &addr.to_string());
    ok(addr, &["alarm", "list"], None, "");
    ok(addr, &["defrag"], None, "Finished defragmenting");

    let path = std::env::temp_dir().join(format!("synod-etcdctl-{}.db", std::process::id()));
    let path_text = path.to_string_lossy().into_owned();
    let saved = etcdctl(addr, &["snapshot", "save", &path_text], None);
    assert!(saved.0, "snapshot save failed: {}", saved.2);
    assert!(saved.1.contains("Snapshot saved at") || saved.2.contains("Snapshot saved at"));
    let file = std::fs::read(&path).expect("saved snapshot");
    let _ = std::fs::remove_file(&path);
    let inner = api::snapshot_file::open(&file).expect("the saved file opens");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let expected = runtime.block_on(backend.snapshot()).expect("snapshot");
    assert_eq!(
        inner,
        expected.as_slice(),
        "etcdctl saved the backend's snapshot"
    );

    // Errors with etcd's texts.
    ok(addr, &["compaction", "3"], None, "compacted revision 3");
    let (success, _, stderr) = etcdctl(addr, &["get", "foo", "--rev=2"], None);
    assert!(!success && stderr.contains("etcdserver: mvcc: required revision has been compacted"));
    let big = vec![b'x'; 1536 * 1024 + 100];
    let (success, _, stderr) = etcdctl(addr, &["put", "big"], Some(&big));
    assert!(
        !success && stderr.contains("etcdserver: request is too large"),
        "{stderr}"
    );
    ok(addr, &["del", "--prev-kv", "foo"], None, "baz");
}
