//! A real cluster of the `synod` binary on loopback, shared by the
//! integration tests: free ports, one process per member, logs under the
//! test's temporary directory, every process killed when the test ends.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Applied slots between snapshots: small, so a member down for a while
/// catches up by snapshot.
pub const SNAPSHOT_COUNT: u64 = 20;

/// One member process.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    /// Joins a running cluster with this `--initial-cluster` (as `etcdctl
    /// member add` printed it) instead of starting with the others.
    pub joins: Option<String>,
}

/// The cluster.
pub struct Cluster {
    pub members: Vec<Member>,
    pub cluster: String,
    pub logs: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

pub fn etcdctl_path() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("etcdctl"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("etcdctl is not installed: run `bash scripts/test.sh`, which installs Debian's etcd-client")
    })
}

impl Cluster {
    pub fn start(dir: &str) -> Cluster {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("test dir");
        // Six distinct ports: each listener is held until all are chosen.
        let held: Vec<TcpListener> = (0..6)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
            .collect();
        let port = |i: usize| held[i].local_addr().expect("local addr").port();
        let members: Vec<Member> = (1..=3)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: port(2 * i - 2),
                peer_port: port(2 * i - 1),
                data_dir: root.join(format!("m{i}")),
                child: None,
                joins: None,
            })
            .collect();
        drop(held);
        let cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            members,
            cluster,
            logs: root,
        };
        for i in 0..3 {
            c.spawn(i);
        }
        for i in 0..3 {
            c.wait_healthy(i);
        }
        c
    }

    pub fn spawn(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join(format!("{}.log", m.name)))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_synod"))
            .arg("node")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg(format!(
                "--listen-client-urls=http://127.0.0.1:{}",
                m.client_port
            ))
            .arg(format!(
                "--listen-peer-urls=http://127.0.0.1:{}",
                m.peer_port
            ))
            .arg(format!(
                "--initial-cluster={}",
                m.joins.as_deref().unwrap_or(&self.cluster)
            ))
            .arg(format!(
                "--initial-cluster-state={}",
                if m.joins.is_some() { "existing" } else { "new" }
            ))
            .arg("--initial-cluster-token=test")
            .arg(format!("--snapshot-count={SNAPSHOT_COUNT}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start synod node");
        self.members[i].child = Some(child);
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.logs.join(format!("{}.log", self.members[i].name)))
            .unwrap_or_default()
    }

    pub fn http_get(&self, i: usize, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.members[i].client_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    }

    pub fn wait_healthy(&self, i: usize) {
        for _ in 0..200 {
            if self
                .http_get(i, "/health")
                .is_some_and(|b| b.contains("\"health\":\"true\""))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "member {} never became healthy; log:\n{}",
            i + 1,
            self.log(i)
        );
    }

    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| {
            self.members[i].child.is_some()
                && self
                    .http_get(i, "/metrics")
                    .is_some_and(|b| b.contains("etcd_server_is_leader 1"))
        })
    }

    pub fn endpoints(&self, live_only: bool) -> String {
        self.members
            .iter()
            .filter(|m| !live_only || m.child.is_some())
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_at(&self.endpoints(true), args, None)
    }

    pub fn ctl_at(&self, endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(etcdctl_path());
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--command-timeout=10s")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("run etcdctl");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).expect("etcdctl stdin");
        }
        child.wait_with_output().expect("etcdctl output")
    }

    /// Whether the member at `endpoint` serves `want` for `key` on a
    /// serializable read (its own store) within `tries` polls `pause` apart.
    pub fn serves_serializably(
        &self,
        endpoint: &str,
        key: &str,
        want: &str,
        tries: usize,
        pause: Duration,
    ) -> bool {
        (0..tries).any(|_| {
            let out = self.ctl_at(
                endpoint,
                &["get", key, "--consistency=s", "--print-value-only"],
                None,
            );
            let served = String::from_utf8_lossy(&out.stdout).trim() == want;
            if !served {
                std::thread::sleep(pause);
            }
            served
        })
    }

    /// Runs etcdctl and returns its stdout, failing the test on an error.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
