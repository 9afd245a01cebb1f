//! The members of a torture run: `synod node` processes on loopback, one
//! fault-injection proxy per directed peer link, signals, health probes.
//! Every process is stopped (SIGCONT, then SIGKILL) when the cluster is
//! dropped, also on an error or a panic.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::proxy::Proxy;

/// Applied slots between snapshots: small, so a member that was down
/// catches up by snapshot too.
const SNAPSHOT_COUNT: u64 = 100;

/// One member.
pub struct Member {
    /// Its name in --initial-cluster.
    pub name: String,
    /// gRPC, /health and /metrics.
    pub client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// What a cluster is started with.
pub struct ClusterConfig {
    /// The `synod` binary.
    pub bin: PathBuf,
    /// Data directories, logs and the pid file go here.
    pub dir: PathBuf,
    /// Number of members.
    pub nodes: usize,
    /// libfaketime, to run every member under a wall clock the nemesis can
    /// step (the monotonic clock left true); `None`: the real clock.
    pub faketime: Option<PathBuf>,
}

/// Where libfaketime lives on Debian (the `faketime` package) and on other
/// common layouts; `SYNOD_LIBFAKETIME` names another.
pub fn find_libfaketime() -> Option<PathBuf> {
    let named = std::env::var_os("SYNOD_LIBFAKETIME").map(PathBuf::from);
    let known = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ];
    named
        .into_iter()
        .chain(known.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// The running cluster.
pub struct Cluster {
    /// The members, by index.
    pub members: Vec<Member>,
    /// `proxies[i][j]`: the link i -> j (`None` for i == j).
    proxies: Vec<Vec<Option<Proxy>>>,
    initial_cluster: Vec<String>,
    config: ClusterConfig,
}

/// A free loopback port, and the listener that holds it: keep it until
/// every port of the cluster is chosen and the proxies listen, so that no
/// two of them get the same number.
fn free_port() -> anyhow::Result<(u16, TcpListener)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok((listener.local_addr()?.port(), listener))
}

/// Sends `signal` (e.g. "STOP") to the processes `pids` with one `kill`.
fn signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Cluster {
    /// Starts the proxies and every member; does not wait for health.
    pub async fn start(config: ClusterConfig) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(config.dir.join("logs"))
            .with_context(|| format!("cannot create {}", config.dir.display()))?;
        let mut members = Vec::with_capacity(config.nodes);
        let mut held = Vec::with_capacity(2 * config.nodes);
        for i in 0..config.nodes {
            let data_dir = config.dir.join(format!("n{}", i + 1));
            let _ = std::fs::remove_dir_all(&data_dir);
            let (client_port, client) = free_port()?;
            let (peer_port, peer) = free_port()?;
            held.extend([client, peer]);
            members.push(Member {
                name: format!("n{}", i + 1),
                client_port,
                peer_port,
                data_dir,
                child: None,
                paused: false,
            });
        }
        let mut proxies = Vec::with_capacity(config.nodes);
        for i in 0..config.nodes {
            let mut row = Vec::with_capacity(config.nodes);
            for (j, m) in members.iter().enumerate() {
                if i == j {
                    row.push(None);
                } else {
                    let target = SocketAddr::from(([127, 0, 0, 1], m.peer_port));
                    row.push(Some(Proxy::start(target).await.context("start a proxy")?));
                }
            }
            proxies.push(row);
        }
        let initial_cluster = (0..config.nodes)
            .map(|i| {
                members
                    .iter()
                    .enumerate()
                    .map(|(j, m)| {
                        let port = match &proxies[i][j] {
                            Some(p) => p.addr.port(),
                            None => m.peer_port,
                        };
                        format!("{}=http://127.0.0.1:{port}", m.name)
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        let mut cluster = Cluster {
            members,
            proxies,
            initial_cluster,
            config,
        };
        drop(held);
        for i in 0..cluster.members.len() {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// The directory of the run.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Starts member `i` (again).
    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.dir.join("logs").join(format!("{}.log", m.name)))
            .context("open a member's log")?;
        let mut cmd = Command::new(&self.config.bin);
        cmd.arg("node")
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
            .arg(format!("--initial-cluster={}", self.initial_cluster[i]))
            .arg("--initial-cluster-token=torture")
            .arg(format!("--snapshot-count={SNAPSHOT_COUNT}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(lib) = &self.config.faketime {
            // The offset is read from a file, at most once a second, so the
            // nemesis can step a running member's wall clock.
            let file = self.clock_file(i);
            if !file.exists() {
                std::fs::write(&file, "+0").context("write a member's clock offset")?;
            }
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", &file)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = cmd.spawn().context("start synod node")?;
        self.members[i].child = Some(child);
        self.members[i].paused = false;
        self.write_pids();
        Ok(())
    }

    fn clock_file(&self, i: usize) -> PathBuf {
        self.config
            .dir
            .join(format!("{}.faketime", self.members[i].name))
    }

    /// Whether the members run under libfaketime.
    pub fn can_step_clocks(&self) -> bool {
        self.config.faketime.is_some()
    }

    /// Steps member `i`'s wall clock to `offset` from true time (libfaketime's
    /// form: "+2h", "-2h", "+0"); its monotonic clock does not move. An
    /// error if the cluster runs without libfaketime.
    pub fn step_clock(&self, i: usize, offset: &str) -> anyhow::Result<()> {
        if self.config.faketime.is_none() {
            anyhow::bail!("clock faults need libfaketime");
        }
        std::fs::write(self.clock_file(i), offset).context("step a member's wall clock")
    }

    /// SIGKILLs member `i` (resuming it first if paused).
    pub fn kill(&mut self, i: usize) {
        self.kill_all_of(&[i]);
    }

    /// SIGKILLs every member at once: one `kill` for all of them.
    pub fn kill_all(&mut self) {
        let all: Vec<usize> = (0..self.members.len()).collect();
        self.kill_all_of(&all);
    }

    fn kill_all_of(&mut self, which: &[usize]) {
        let pids: Vec<u32> = which
            .iter()
            .filter_map(|&i| self.members[i].child.as_ref().map(Child::id))
            .collect();
        signal("KILL", &pids);
        signal("CONT", &pids);
        for &i in which {
            if let Some(mut child) = self.members[i].child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            self.members[i].paused = false;
        }
        self.write_pids();
    }

    /// SIGSTOPs member `i`.
    pub fn pause(&mut self, i: usize) {
        if let Some(child) = &self.members[i].child {
            signal("STOP", &[child.id()]);
            self.members[i].paused = true;
        }
    }

    /// SIGCONTs member `i`.
    pub fn resume(&mut self, i: usize) {
        if let Some(child) = &self.members[i].child {
            signal("CONT", &[child.id()]);
        }
        self.members[i].paused = false;
    }

    /// Cuts both directions of the link between `a` and `b`.
    pub fn cut(&self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            if let Some(p) = &self.proxies[x][y] {
                p.cut();
            }
        }
    }

    /// Restores every link.
    pub fn heal_links(&self) {
        for p in self.proxies.iter().flatten().flatten() {
            p.restore();
        }
    }

    /// Heals everything: links restored, paused members resumed, dead ones
    /// restarted.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        self.heal_links();
        for i in 0..self.members.len() {
            if self.config.faketime.is_some() {
                self.step_clock(i, "+0")?;
            }
            if self.members[i].paused {
                self.resume(i);
            }
            if self.members[i].child.is_none() {
                self.spawn(i)?;
            }
        }
        Ok(())
    }

    /// The client URL of member `i`.
    pub fn client_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Whether member `i` answers /health with a known leader.
    pub async fn healthy(&self, i: usize) -> bool {
        http_get(self.members[i].client_port, "/health")
            .await
            .is_some_and(|b| b.contains("\"health\":\"true\""))
    }

    /// The member that reports itself leader, if any (running ones only).
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() || self.members[i].paused {
                continue;
            }
            if http_get(self.members[i].client_port, "/metrics")
                .await
                .is_some_and(|b| b.contains("etcd_server_is_leader 1"))
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits until every member is healthy, or `timeout` passed.
    pub async fn wait_all_healthy(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for i in 0..self.members.len() {
                if !self.healthy(i).await {
                    all = false;
                    break;
                }
            }
            if all {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The member processes' pids, one a line, in DIR/pids: whoever drives
    /// this process can clean up after it even if it is killed itself.
    fn write_pids(&self) {
        let text: String = self
            .members
            .iter()
            .filter_map(|m| m.child.as_ref().map(|c| format!("{}\n", c.id())))
            .collect();
        let _ = std::fs::write(self.config.dir.join("pids"), text);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.heal_links();
        self.kill_all();
    }
}

/// A tiny HTTP/1.1 GET with a short timeout (a paused member never answers).
pub async fn http_get(port: u16, path: &str) -> Option<String> {
    let fetch = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        Some(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_millis(500), fetch)
        .await
        .ok()
        .flatten()
}
