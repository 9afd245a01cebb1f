//! A real 3-member cluster of the `synod` binary on loopback, driven by
//! Debian's etcdctl as an etcd user would drive etcd. The README's test
//! command installs etcdctl; without it this test fails, it does not skip.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{Cluster, SNAPSHOT_COUNT, etcdctl_path};

fn json_number(json: &str, field: &str) -> i64 {
    let at = json
        .find(&format!("\"{field}\":"))
        .unwrap_or_else(|| panic!("{field} in {json}"));
    json[at + field.len() + 3..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '-')
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{field} is a number in {json}"))
}

#[test]
fn etcdctl_drives_a_three_member_cluster_through_a_leader_kill() {
    let mut c = Cluster::start("etcdctl");

    // put / get, single and prefix, sort and limit, at an older revision.
    assert_eq!(c.ok(&["put", "foo", "bar"]), "OK\n");
    assert_eq!(c.ok(&["get", "foo"]), "foo\nbar\n");
    let first = c.ok(&["get", "foo", "-w", "json"]);
    let rev = json_number(&first, "revision");
    for k in ["k1", "k2", "k3"] {
        c.ok(&["put", k, &format!("v-{k}")]);
    }
    assert_eq!(
        c.ok(&["get", "--prefix", "k"]),
        "k1\nv-k1\nk2\nv-k2\nk3\nv-k3\n"
    );
    assert_eq!(
        c.ok(&["get", "--prefix", "k", "--limit=2"]),
        "k1\nv-k1\nk2\nv-k2\n"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "--prefix",
            "k",
            "--sort-by=KEY",
            "--order=DESCEND",
            "--keys-only"
        ]),
        "k3\n\nk2\n\nk1\n\n"
    );
    c.ok(&["put", "foo", "bar2"]);
    assert_eq!(c.ok(&["get", "foo", &format!("--rev={rev}")]), "foo\nbar\n");
    assert_eq!(
        c.ok(&["get", "foo", "--consistency=s"]).lines().nth(1),
        Some("bar2")
    );
    assert_eq!(c.ok(&["del", "k1"]), "1\n");

    // txn, as etcdctl reads it from stdin: compares, blank, success, blank, failure.
    let out = c.ctl_at(
        &c.endpoints(true),
        &["txn"],
        Some("value(\"foo\") = \"bar2\"\n\nput foo bar3\n\nput foo nope\n\n"),
    );
    let txn = String::from_utf8_lossy(&out.stdout);
    assert!(
        txn.starts_with("SUCCESS"),
        "txn: {txn}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(c.ok(&["get", "foo", "--print-value-only"]), "bar3\n");

    // watch, with a concurrent writer. It watches from the next revision,
    // so no event is missed however long the watch takes to register.
    let next = json_number(&c.ok(&["get", "foo", "-w", "json"]), "revision") + 1;
    let mut watcher = Command::new(etcdctl_path())
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", c.endpoints(true)))
        .args(["watch", "w", &format!("--rev={next}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    c.ok(&["put", "w", "1"]);
    c.ok(&["put", "w", "2"]);
    c.ok(&["del", "w"]);
    let mut lines = BufReader::new(watcher.stdout.take().expect("watch stdout")).lines();
    let mut seen = Vec::new();
    while seen.len() < 8 {
        match lines.next() {
            Some(Ok(line)) => seen.push(line),
            _ => break,
        }
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert_eq!(seen, ["PUT", "w", "1", "PUT", "w", "2", "DELETE", "w"]);

    // leases: grant, attach, keep alive, revoke deletes the attached key.
    let granted = c.ok(&["lease", "grant", "60"]);
    let lease = granted
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    assert!(granted.contains("granted with TTL(60s)"), "{granted}");
    c.ok(&["put", "leased", "x", &format!("--lease={lease}")]);
    let kept = c.ok(&["lease", "keep-alive", "--once", &lease]);
    assert!(kept.contains("keepalived with TTL("), "{kept}");
    let ttl = c.ok(&["lease", "timetolive", &lease, "--keys"]);
    assert!(ttl.contains("leased"), "{ttl}");
    assert!(c.ok(&["lease", "list"]).contains(&lease));
    assert!(c.ok(&["lease", "revoke", &lease]).contains("revoked"));
    assert_eq!(c.ok(&["get", "leased"]), "");

    // lock: two competing holders never overlap.
    let trail = c.logs.join("lock-trail");
    let holder = |who: &str| {
        Command::new(etcdctl_path())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", c.endpoints(true)))
            .args(["lock", "the-lock", "--", "sh", "-c"])
            .arg(format!(
                "echo {who}-in >> {0}; sleep 0.7; echo {who}-out >> {0}",
                trail.display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl lock")
    };
    let mut a = holder("a");
    let mut b = holder("b");
    assert!(a.wait().expect("lock a").success());
    assert!(b.wait().expect("lock b").success());
    let order = std::fs::read_to_string(&trail).expect("lock trail");
    let order: Vec<&str> = order.lines().collect();
    assert!(
        order == ["a-in", "a-out", "b-in", "b-out"] || order == ["b-in", "b-out", "a-in", "a-out"],
        "the lock was held by both at once: {order:?}"
    );

    // elect: the second candidate leads only once the first is gone.
    let campaign = |value: &str| {
        Command::new(etcdctl_path())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", c.endpoints(true)))
            .args(["elect", "the-election", value])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl elect")
    };
    let mut first = campaign("p1");
    let mut first_out = BufReader::new(first.stdout.take().expect("stdout")).lines();
    let announced: Vec<String> = (0..2).filter_map(|_| first_out.next()?.ok()).collect();
    assert!(
        announced.len() == 2 && announced[1] == "p1",
        "first leads: {announced:?}"
    );
    let mut second = campaign("p2");
    let (tx, rx) = std::sync::mpsc::channel();
    let second_out = second.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(second_out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    assert!(
        rx.recv_timeout(Duration::from_millis(1500)).is_err(),
        "the second candidate must wait while the first leads"
    );
    let _ = first.kill();
    let _ = first.wait();
    // The first's lease must expire (etcdctl's session TTL is 60 s) unless
    // it revoked it; etcdctl killed by a signal does not, so resign by
    // deleting its key the way an operator would.
    let key = announced[0].clone();
    c.ok(&["del", &key]);
    let mut lines = Vec::new();
    while lines.len() < 2 {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(
        lines.get(1).map(String::as_str),
        Some("p2"),
        "second leads next: {lines:?}"
    );

    // Bad input: a 2 MiB value is refused with etcd's text, garbage on the
    // peer port is refused, and the cluster keeps serving.
    // 2 MB: under etcdctl's own 2 MiB send limit, over the server's 1.5 MiB.
    let big = "x".repeat(2_000_000);
    let out = c.ctl_at(&c.endpoints(true), &["put", "big"], Some(&big));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("etcdserver: request is too large"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    {
        let mut stranger =
            TcpStream::connect(("127.0.0.1", c.members[0].peer_port)).expect("peer port");
        let _ = stranger.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\xff\xfe garbage garbage");
        let _ = stranger.write_all(&[0xff; 4096]);
    }
    assert_eq!(c.ok(&["put", "after-garbage", "ok"]), "OK\n");
    assert_eq!(c.ok(&["get", "big"]), "");

    // Every member learns the write, the one left out of the vote too (its
    // decision is held until the leader's next tick or heartbeat), and
    // serves it from its own store.
    for m in &c.members {
        let me = format!("127.0.0.1:{}", m.client_port);
        let served =
            c.serves_serializably(&me, "after-garbage", "ok", 100, Duration::from_millis(50));
        assert!(served, "{} never served the write serializably", m.name);
    }

    // Prometheus metrics as etcd names them, gRPC calls counted per method.
    let metrics: String = (0..3).filter_map(|i| c.http_get(i, "/metrics")).collect();
    for needle in [
        "etcd_server_has_leader 1",
        "etcd_disk_wal_fsync_duration_seconds_count",
        "grpc_server_started_total{grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}",
        "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Put\",grpc_service=\"etcdserverpb.KV\",grpc_type=\"unary\"}",
        "grpc_server_handled_total{grpc_code=\"InvalidArgument\",grpc_method=\"Put\"",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}");
    }

    // cluster and maintenance: every member's client URL is known.
    std::thread::sleep(Duration::from_millis(1200));
    let members = c.ok(&["member", "list"]);
    assert_eq!(members.lines().count(), 3);
    for m in &c.members {
        assert!(
            members.contains(&format!(
                "{}, http://127.0.0.1:{}, http://127.0.0.1:{}",
                m.name, m.peer_port, m.client_port
            )),
            "{members}"
        );
    }
    assert_eq!(c.ok(&["endpoint", "status"]).lines().count(), 3);
    // etcdctl 3.4 reports health on stderr.
    let health = c.ctl(&["endpoint", "health"]);
    assert!(health.status.success(), "{health:?}");
    assert_eq!(
        String::from_utf8_lossy(&health.stderr)
            .matches("is healthy")
            .count(),
        3,
        "{health:?}"
    );
    let hashes = c.ok(&["endpoint", "hashkv"]);
    assert_eq!(hashes.lines().count(), 3, "{hashes}");
    let now = json_number(&c.ok(&["get", "foo", "-w", "json"]), "revision");
    assert!(
        c.ok(&["compaction", &now.to_string()])
            .contains(&format!("compacted revision {now}"))
    );
    let old = c.ctl(&["get", "foo", &format!("--rev={rev}")]);
    assert!(
        String::from_utf8_lossy(&old.stderr).contains("required revision has been compacted"),
        "{old:?}"
    );
    let snap = c.logs.join("snap.db");
    let saved = c.ctl_at(
        &format!("127.0.0.1:{}", c.members[0].client_port),
        &["snapshot", "save", snap.to_str().expect("path")],
        None,
    );
    assert!(saved.status.success(), "snapshot save: {saved:?}");

    // SIGKILL the leader: writes resume once a new leader is elected.
    let leader = c.leader().expect("a leader");
    let killed = Instant::now();
    if let Some(mut child) = c.members[leader].child.take() {
        child.kill().expect("kill the leader");
        let _ = child.wait();
    }
    let mut resumed = None;
    for attempt in 0..100 {
        let out = c.ctl_at(
            &c.endpoints(true),
            &["put", "after", &attempt.to_string()],
            None,
        );
        if out.status.success() {
            resumed = Some(killed.elapsed());
            break;
        }
    }
    let resumed = resumed.expect("writes resumed after the leader was killed");
    eprintln!(
        "leader kill: first successful write {} ms after SIGKILL",
        resumed.as_millis()
    );

    // Write well past a snapshot while it is down, then restart it: it
    // catches up (by snapshot) and serves the same data.
    for i in 0..(3 * SNAPSHOT_COUNT) {
        c.ok(&["put", &format!("bulk{i:03}"), &i.to_string()]);
    }
    c.spawn(leader);
    c.wait_healthy(leader);
    let me = format!("127.0.0.1:{}", c.members[leader].client_port);
    let last = format!("bulk{:03}", 3 * SNAPSHOT_COUNT - 1);
    let caught_up = c.serves_serializably(
        &me,
        &last,
        &(3 * SNAPSHOT_COUNT - 1).to_string(),
        100,
        Duration::from_millis(100),
    );
    assert!(
        caught_up,
        "the restarted member caught up; log:\n{}",
        c.log(leader)
    );
    assert!(
        c.log(leader).contains("installed a snapshot from a peer"),
        "it was far behind, so it caught up by snapshot"
    );
    // Every member serves the same data.
    for i in 0..3 {
        let at = format!("127.0.0.1:{}", c.members[i].client_port);
        let out = c.ctl_at(
            &at,
            &["get", "--prefix", "bulk", "--keys-only", "--consistency=s"],
            None,
        );
        let keys = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .count();
        assert_eq!(
            keys as u64,
            3 * SNAPSHOT_COUNT,
            "member {} has every key",
            i + 1
        );
    }
}
