//! A synod member's runtime: the sans-IO [`member::Member`] (the Paxos
//! core, the key-value store and every decision around them) joined to the
//! disk, the peer transport and the client port.
//!
//! `Node::start` goes in five steps: check the configuration, recover the
//! data directory into a member, start the peer transport, start the driver
//! thread, serve clients.
//!
//! ```text
//!  gRPC (api::*) ──► NodeHandle ──► Driver thread ◄── peers (transport)
//!                                    │  Member: decides, answers with Ready
//!                                    │  + the log (storage::ReplicaStore, fsync)
//!                                    │  + the first client connections (the lane)
//!                                    ▼
//!                           background thread (snapshots, spare segments)
//! ```
//!
//! The driver thread runs a single-threaded runtime that also carries the
//! peer transport and the first [`NodeConfig::driver_connections`] client
//! connections, so that a lone client's write crosses no thread inside the
//! member; other clients' connections are served by the runtime's worker
//! threads, in parallel with it.

mod disk;
mod driver;
mod metrics;
mod tuning;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kv::{Limits, Store, WatchCreateRequest};
use member::{Member, Query, Reply, Request};
use paxos::NodeId;
use paxos::multi::{Config as PaxosConfig, Replica};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info};

use crate::api::{ApiError, Backend, MemberInfo, NodeStatus, WatchStream};
use crate::client_port::{self, ClientPortConfig, Health};
use crate::transport::{Transport, TransportConfig, TransportHandle};
use driver::{Driver, Input, ReplyTx, WATCH_QUEUE_RESPONSES_MAX};
pub use metrics::NodeMetrics;

/// Client connections served on the driver's thread by default: one
/// client's, and a second for a tool beside it.
pub const DRIVER_CONNECTIONS_DEFAULT: usize = 2;

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    /// `--name` of that member.
    pub name: String,
    /// Its peer URL, as given in `--initial-cluster`.
    pub peer_url: String,
    /// The address its peer URL names.
    pub peer_addr: SocketAddr,
}

/// Everything a member needs to start, with etcd's flag names in the docs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `--name`.
    pub name: String,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// `--listen-client-urls` (one address).
    pub listen_client: SocketAddr,
    /// `--advertise-client-urls`.
    pub advertise_client_urls: Vec<String>,
    /// `--listen-peer-urls` (one address).
    pub listen_peer: SocketAddr,
    /// `--initial-cluster`, this member included.
    pub members: Vec<MemberConfig>,
    /// `--initial-cluster-token`: peers prove membership with it.
    pub cluster_token: String,
    /// Length of one protocol tick.
    pub tick: Duration,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: u32,
    /// Ticks without a leader before standing for election.
    pub election_ticks: u32,
    /// A request not applied by then is answered "request timed out".
    pub request_timeout: Duration,
    /// Snapshot the state machine and trim the log after this many applied
    /// commands (etcd's --snapshot-count, which counts entries the same way).
    pub snapshot_count: u64,
    /// Client connections served on the driver's own thread at once (see
    /// [`client_port::Lane`]); the rest are served by the runtime's workers.
    pub driver_connections: usize,
    /// `--initial-cluster-state existing`: join a running cluster that a
    /// `MemberAdd` made this member part of, instead of starting one.
    pub join: bool,
    /// `--max-learners`.
    pub max_learners: usize,
    /// `--strict-reconfig-check`.
    pub strict_reconfig_check: bool,
}

impl NodeConfig {
    /// Defaults for everything but the addresses and the membership.
    pub fn new(name: impl Into<String>, data_dir: PathBuf) -> Self {
        NodeConfig {
            name: name.into(),
            data_dir,
            listen_client: SocketAddr::from(([127, 0, 0, 1], 2379)),
            advertise_client_urls: Vec::new(),
            listen_peer: SocketAddr::from(([127, 0, 0, 1], 2380)),
            members: Vec::new(),
            cluster_token: "synod-cluster".into(),
            tick: Duration::from_millis(10),
            heartbeat_ticks: 5,
            election_ticks: 50,
            request_timeout: Duration::from_secs(5),
            snapshot_count: 100_000,
            driver_connections: DRIVER_CONNECTIONS_DEFAULT,
            join: false,
            max_learners: 1,
            strict_reconfig_check: true,
        }
    }

    /// A member's id: a hash of its name and the cluster token, so every
    /// member computes the same ids even when each reaches the others by
    /// different addresses (through proxies, say).
    pub fn member_id(&self, member: &MemberConfig) -> u64 {
        fnv(&[member.name.as_bytes(), b"\0", self.cluster_token.as_bytes()]).max(1)
    }

    /// This member's id, if its name is in the initial cluster.
    pub fn my_id(&self) -> Option<u64> {
        self.members
            .iter()
            .find(|m| m.name == self.name)
            .map(|m| self.member_id(m))
    }

    /// The cluster id: a hash of every member id and the token.
    pub fn cluster_id(&self) -> u64 {
        let mut ids: Vec<u64> = self.members.iter().map(|m| self.member_id(m)).collect();
        ids.sort_unstable();
        let mut bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        bytes.extend_from_slice(self.cluster_token.as_bytes());
        fnv(&[&bytes])
    }
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The driver's thread or its runtime could not be started.
    #[error("cannot start the driver thread or its runtime: {0}")]
    Thread(#[source] std::io::Error),
    /// The data directory could not be opened or trusted.
    #[error("cannot use data directory {dir}: {source}")]
    Storage {
        /// The directory.
        dir: PathBuf,
        /// What went wrong.
        #[source]
        source: storage::Error,
    },
    /// The snapshot on disk does not restore.
    #[error("the snapshot in {dir} does not restore: {reason}")]
    Snapshot {
        /// The directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The peer port could not be bound.
    #[error("cannot start the peer transport: {0}")]
    Transport(String),
    /// The client port could not be bound.
    #[error("cannot listen for clients on {addr}: {source}")]
    ClientPort {
        /// The address.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// The node as the gRPC services see it: cheap to clone.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    inputs: mpsc::Sender<Input>,
    member_id: u64,
    cluster_id: u64,
    /// This member's name and client URLs: shown for it before it has
    /// told its peers.
    name: String,
    advertise_client_urls: Vec<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Input")
    }
}

/// A running member.
#[derive(Debug)]
pub struct Node {
    handle: NodeHandle,
    metrics: Arc<NodeMetrics>,
    transport: TransportHandle,
    /// The driver's outcome, when its thread ends.
    driver: oneshot::Receiver<Result<(), String>>,
    /// Tells the driver's thread to stop.
    stop_driver: Option<oneshot::Sender<()>>,
    client: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
    client_addr: SocketAddr,
}

impl Node {
    /// Recovers the data directory, binds the peer and client ports, and
    /// starts serving.
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        tuning::tune_allocator();
        check_config(&config)?;
        let identity = identity(&config).await?;
        let me = identity.me;
        let (disk, member) = recover(&config, &identity)?;
        // The driver's runtime, built first so that the peer transport and
        // the first client connections can run on it.
        let runtime = DriverRuntime::build()?;
        let lane = runtime.handle()?;
        let (transport, peers) = start_transport(&config, &identity, &lane)?;
        let metrics = Arc::new(NodeMetrics::default());
        let driver = start_driver(&config, member, disk, &transport, &metrics, runtime, peers)?;
        let handle = NodeHandle::new(&config, me, driver.inputs.clone());
        let clients = serve_clients(&config, &handle, &metrics, &transport, lane).await?;
        info!(name = %config.name, id = format!("{me:x}"), client = %clients.addr, peer = %transport.local_addr(), "member started");
        Ok(Node {
            handle,
            metrics,
            transport,
            driver: driver.done,
            stop_driver: Some(driver.stop),
            client: clients.task,
            shutdown: clients.shutdown,
            client_addr: clients.addr,
        })
    }

    /// The address clients reach this member on.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The handle the services use.
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// The member's figures.
    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// Waits until the member stops on its own (a storage failure), with
    /// the reason.
    pub async fn stopped(&mut self) -> Result<(), String> {
        match (&mut self.driver).await {
            Ok(result) => result,
            Err(_) => Err("the driver thread ended without a word (it panicked)".into()),
        }
    }

    /// Stops serving clients and peers, and waits for the tasks to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.client.await;
        self.transport.shutdown().await;
        drop(self.handle);
        if let Some(stop) = self.stop_driver {
            let _ = stop.send(());
        }
        let _ = self.driver.await;
    }
}

/// The driver's runtime until the driver's thread takes it. `Node::start`
/// is async, and a runtime dropped there (an early return: the peer port is
/// taken, the thread cannot start) may not wait for its tasks, so it shuts
/// down in the background instead of panicking.
struct DriverRuntime(Option<tokio::runtime::Runtime>);

impl DriverRuntime {
    fn build() -> Result<Self, StartError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(StartError::Thread)?;
        Ok(DriverRuntime(Some(runtime)))
    }

    fn handle(&self) -> Result<tokio::runtime::Handle, StartError> {
        self.0.as_ref().map(|r| r.handle().clone()).ok_or_else(|| {
            StartError::Thread(std::io::Error::other("the driver's runtime is gone"))
        })
    }

    fn into_runtime(mut self) -> Option<tokio::runtime::Runtime> {
        self.0.take()
    }
}

impl Drop for DriverRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Step 1: the configuration holds together.
fn check_config(config: &NodeConfig) -> Result<(), StartError> {
    if config.my_id().is_none() {
        return Err(StartError::Config(format!(
            "--name {:?} is not in --initial-cluster",
            config.name
        )));
    }
    if config.election_ticks <= config.heartbeat_ticks * 2 {
        return Err(StartError::Config(
            "the election timeout must be well above the heartbeat interval".into(),
        ));
    }
    Ok(())
}

/// Who this member is: a member of the initial cluster (its id a hash of
/// its name), or one that joined later (its id drawn by `MemberAdd`,
/// kept in the data directory once learned).
struct Identity {
    me: NodeId,
    /// Joined a running cluster: it learns its configuration from the log
    /// or a snapshot, not from the flags.
    joined: bool,
    /// Every member's id and peer URL, as a member told it (joining).
    directory: Vec<(NodeId, String)>,
}

/// The file a member that joined keeps its id in.
const JOINED_ID_FILE: &str = "member-id";

/// Bounds how long a joining member keeps asking for the directory.
const JOIN_ATTEMPTS_MAX: u32 = 20;

async fn identity(config: &NodeConfig) -> Result<Identity, StartError> {
    let path = config.data_dir.join(JOINED_ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let me = u64::from_str_radix(text.trim(), 16).map_err(|_| {
            StartError::Config(format!("{} does not hold a member id", path.display()))
        })?;
        return Ok(Identity {
            me,
            joined: true,
            directory: Vec::new(),
        });
    }
    let own_url = config
        .members
        .iter()
        .find(|m| m.name == config.name)
        .map(|m| m.peer_url.clone())
        .unwrap_or_default();
    if !config.join {
        return Ok(Identity {
            me: config.my_id().unwrap_or(0),
            joined: false,
            directory: Vec::new(),
        });
    }
    let mut last_error = String::from("no other member in --initial-cluster");
    for attempt in 0..JOIN_ATTEMPTS_MAX {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for m in config.members.iter().filter(|m| m.name != config.name) {
            match ask_directory(m.peer_addr, &config.cluster_token).await {
                Ok(directory) => {
                    let Some(&(me, _)) = directory.iter().find(|(_, url)| *url == own_url) else {
                        return Err(StartError::Config(format!(
                            "the cluster has no member with peer URL {own_url}: add it first \
                             (etcdctl member add {} --peer-urls={own_url})",
                            config.name
                        )));
                    };
                    std::fs::create_dir_all(&config.data_dir)
                        .and_then(|()| std::fs::write(&path, format!("{me:x}\n")))
                        .map_err(|source| {
                            StartError::Config(format!(
                                "cannot keep the member id in {}: {source}",
                                path.display()
                            ))
                        })?;
                    info!(id = format!("{me:x}"), from = %m.name, "joining the cluster");
                    return Ok(Identity {
                        me,
                        joined: true,
                        directory,
                    });
                }
                Err(e) => last_error = format!("{} ({}): {e}", m.name, m.peer_url),
            }
        }
    }
    Err(StartError::Config(format!(
        "could not retrieve the cluster's members from --initial-cluster: {last_error}"
    )))
}

/// Asks the member at `addr` for the directory, as a joining member.
async fn ask_directory(addr: SocketAddr, token: &str) -> Result<Vec<(NodeId, String)>, String> {
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        crate::transport::wire::ask_directory(&mut stream, token.as_bytes())
            .await
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), ask)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Step 2: the data directory recovered, and the member over it: the
/// replica from the log, the store from the latest snapshot.
fn recover(
    config: &NodeConfig,
    identity: &Identity,
) -> Result<(disk::Disk, Member<ReplyTx>), StartError> {
    let me = identity.me;
    let (disk, restored) =
        disk::open(config.data_dir.clone()).map_err(|source| StartError::Storage {
            dir: config.data_dir.clone(),
            source,
        })?;
    let store = match &restored.snapshot {
        Some(snapshot) => {
            Store::restore(&snapshot.data, Limits::default()).map_err(|e| StartError::Snapshot {
                dir: config.data_dir.clone(),
                reason: e.to_string(),
            })?
        }
        None => Store::new(Limits::default()),
    };
    if let Some(torn) = &restored.torn_tail {
        info!(file = %torn.file.display(), offset = torn.offset, "cut a torn write at the end of the log");
    }
    // A member that joined knows no configuration from its flags: it
    // learns one from the log or a snapshot.
    let ids: Vec<NodeId> = if identity.joined {
        Vec::new()
    } else {
        config.members.iter().map(|m| config.member_id(m)).collect()
    };
    let mut paxos = PaxosConfig::new(me, ids);
    paxos.heartbeat_ticks = config.heartbeat_ticks;
    paxos.election_ticks = config.election_ticks;
    let mut durable = restored.durable;
    // The configuration in force after the snapshot is the one its member
    // table makes (none: no change yet, the initial one).
    durable.membership = member::membership_of(store.members());
    let replica = Replica::restart(paxos, durable);
    let mut member = Member::new(
        replica,
        store,
        member::Config {
            request_timeout_ms: config.request_timeout.as_millis() as u64,
            snapshot_count: config.snapshot_count,
            seed: random_seed(),
            fill_on_ready: true,
            observe: false,
            max_learners: config.max_learners,
            strict_reconfig_check: config.strict_reconfig_check,
            initial_members: config
                .members
                .iter()
                .filter(|_| !identity.joined)
                .map(|m| kv::ClusterMember {
                    id: config.member_id(m),
                    name: m.name.clone(),
                    peer_urls: vec![m.peer_url.clone()],
                    client_urls: Vec::new(),
                    is_learner: false,
                })
                .collect(),
        },
    );
    member.advertise(config.name.clone(), config.advertise_client_urls.clone());
    Ok((disk, member))
}

/// Step 3: the peer port, on the driver's runtime.
fn start_transport(
    config: &NodeConfig,
    identity: &Identity,
    runtime: &tokio::runtime::Handle,
) -> Result<(TransportHandle, Peers), StartError> {
    let me = identity.me;
    // A member that joined starts with the members it was told of; one
    // that restarts after joining, with none until its table is applied.
    let peers: BTreeMap<NodeId, SocketAddr> = if identity.joined {
        identity
            .directory
            .iter()
            .filter_map(|(id, url)| driver::peer_addr(url).map(|addr| (*id, addr)))
            .collect()
    } else {
        config
            .members
            .iter()
            .map(|m| (config.member_id(m), m.peer_addr))
            .collect()
    };
    let mut transport_config =
        TransportConfig::new(me, config.listen_peer, peers, config.cluster_token.clone());
    // A restarted member must hear its leader well within an election
    // timeout, so redial quickly.
    transport_config.reconnect_backoff_ms_max =
        (config.tick * config.heartbeat_ticks).as_millis().max(10) as u64;
    transport_config.drop_queue_when_unreachable = true;
    Transport::start_in(runtime, transport_config).map_err(|e| StartError::Transport(e.to_string()))
}

/// What peers send: Paxos messages and member-to-member messages, in one
/// stream of frames.
type Peers = mpsc::Receiver<member::wire::Frame>;

/// The running driver: where its inputs go, how to stop it, and its end.
struct RunningDriver {
    inputs: mpsc::Sender<Input>,
    stop: oneshot::Sender<()>,
    done: oneshot::Receiver<Result<(), String>>,
}

/// Step 4: the driver, on a thread of its own: it blocks on its log's
/// fsyncs, which must not hold up a runtime worker's other tasks.
fn start_driver(
    config: &NodeConfig,
    member: Member<ReplyTx>,
    disk: disk::Disk,
    transport: &TransportHandle,
    metrics: &Arc<NodeMetrics>,
    runtime: DriverRuntime,
    peers: Peers,
) -> Result<RunningDriver, StartError> {
    let (watch_tx, watch_rx) = mpsc::unbounded_channel();
    let driver = Driver::new(
        member,
        disk,
        transport.clone(),
        Arc::clone(metrics),
        random_seed(),
        watch_tx,
    );
    let (inputs, inputs_rx) = mpsc::channel(8192);
    tokio::spawn(driver::deliver_watch_responses(watch_rx, inputs.clone()));
    let tick = config.tick;
    let (stop, stopped) = oneshot::channel::<()>();
    let (done_tx, done) = oneshot::channel();
    let run = move || {
        let result = match runtime.into_runtime() {
            Some(runtime) => runtime.block_on(async move {
                tokio::select! {
                    result = driver.run(tick, inputs_rx, peers) => result,
                    _ = stopped => Ok(()),
                }
            }),
            None => Err("the driver's runtime was already taken".into()),
        };
        if let Err(e) = &result {
            error!(error = %e, "the node stops");
        }
        let _ = done_tx.send(result);
    };
    std::thread::Builder::new()
        .name("synod-driver".into())
        .spawn(run)
        .map_err(StartError::Thread)?;
    Ok(RunningDriver { inputs, stop, done })
}

/// The client port, serving.
struct ServingClients {
    addr: SocketAddr,
    task: JoinHandle<()>,
    shutdown: watch::Sender<bool>,
}

/// Step 5: the client port: gRPC, /health and /metrics, the first
/// connections on the driver's runtime (`lane`).
async fn serve_clients(
    config: &NodeConfig,
    handle: &NodeHandle,
    metrics: &Arc<NodeMetrics>,
    transport: &TransportHandle,
    lane: tokio::runtime::Handle,
) -> Result<ServingClients, StartError> {
    let listener = tokio::net::TcpListener::bind(config.listen_client)
        .await
        .map_err(|source| StartError::ClientPort {
            addr: config.listen_client,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| StartError::ClientPort {
            addr: config.listen_client,
            source,
        })?;
    let routes = crate::api::routes(
        Arc::new(handle.clone()),
        handle.cluster_id,
        handle.member_id,
    );
    let health_metrics = Arc::clone(metrics);
    let health: client_port::HealthFn = Arc::new(move || {
        let has_leader = health_metrics.has_leader.load(Ordering::Relaxed) == 1;
        Health {
            healthy: has_leader,
            reason: if has_leader {
                String::new()
            } else {
                "RAFT NO LEADER".into()
            },
        }
    });
    let page_metrics = Arc::clone(metrics);
    let page_transport = transport.clone();
    let metrics_fn: client_port::MetricsFn = Arc::new(move || {
        let mut out = String::new();
        page_metrics.render(&mut out);
        page_transport.metrics().write_prometheus(&mut out);
        out
    });
    let router = client_port::router(routes, health, metrics_fn);
    let (shutdown, mut shutdown_rx) = watch::channel(false);
    let port_config = ClientPortConfig {
        lane: Some(client_port::Lane {
            runtime: lane,
            connections_max: config.driver_connections,
        }),
        ..ClientPortConfig::default()
    };
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown_rx.wait_for(|stop| *stop).await;
        };
        if let Err(e) = client_port::serve(listener, router, port_config, stop).await {
            error!(error = %e, "client port stopped");
        }
    });
    Ok(ServingClients {
        addr,
        task,
        shutdown,
    })
}

/// FNV-1a: ids must be the same on every member and every run.
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // The seed only spreads election timeouts and session ids apart.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        return nanos ^ u64::from(std::process::id());
    }
    u64::from_le_bytes(bytes)
}

impl NodeHandle {
    /// The handle the services get: the driver's inputs and the static
    /// facts of the cluster.
    fn new(config: &NodeConfig, me: NodeId, inputs: mpsc::Sender<Input>) -> Self {
        NodeHandle {
            inputs,
            member_id: me,
            cluster_id: config.cluster_id(),
            name: config.name.clone(),
            advertise_client_urls: config.advertise_client_urls.clone(),
            timeout: config.request_timeout,
        }
    }

    /// Hands the driver an input; the driver is gone if it cannot take it.
    async fn input(&self, input: Input) -> Result<(), ApiError> {
        self.inputs.send(input).await.map_err(|_| ApiError::Stopped)
    }

    /// A read-only look at the member, on the driver's thread.
    async fn query<T: Send + 'static>(
        &self,
        look: impl FnOnce(&Member<ReplyTx>) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.input(Input::Query(Box::new(move |m| {
            let _ = tx.send(look(m));
        })))
        .await?;
        rx.await.map_err(|_| ApiError::Stopped)
    }

    /// A request for the member, and its answer. The member times requests
    /// out itself; this bound only guards against a stuck driver.
    async fn request(&self, request: Request) -> Result<Reply, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.input(Input::Request { request, reply }).await?;
        match tokio::time::timeout(self.timeout * 2, rx).await {
            Ok(Ok(result)) => result.map_err(ApiError::from),
            Ok(Err(_)) => Err(ApiError::Stopped),
            Err(_) => Err(ApiError::Timeout),
        }
    }

    /// A read: linearizable through the member's read index, or served
    /// from this member's store as it is.
    async fn read(&self, query: Query, serializable: bool) -> Result<Reply, ApiError> {
        if serializable {
            self.query(move |m| m.serve_serializable(&query))
                .await?
                .map_err(ApiError::from)
        } else {
            self.request(Request::Read(query)).await
        }
    }
}

/// A reply of another kind than the request's: a bug, not a client error.
fn mismatched(reply: Reply) -> ApiError {
    error!(?reply, "the member answered with a reply of another kind");
    ApiError::Stopped
}

// The futures are spelled out to show they are `Send`, as the trait asks.
#[allow(clippy::manual_async_fn)]
impl Backend for NodeHandle {
    fn propose(
        &self,
        command: kv::Command,
    ) -> impl Future<Output = Result<kv::Response, ApiError>> + Send {
        async move {
            match self.request(Request::Propose(command)).await? {
                Reply::Command(response) => Ok(response),
                other => Err(mismatched(other)),
            }
        }
    }

    fn range(
        &self,
        request: kv::RangeRequest,
        serializable: bool,
    ) -> impl Future<Output = Result<kv::RangeResponse, ApiError>> + Send {
        async move {
            match self.read(Query::Range(request), serializable).await? {
                Reply::Range(response) => Ok(response),
                other => Err(mismatched(other)),
            }
        }
    }

    fn lease_time_to_live(
        &self,
        request: kv::LeaseTimeToLiveRequest,
    ) -> impl Future<Output = Result<kv::LeaseTimeToLiveResponse, ApiError>> + Send {
        async move {
            match self.read(Query::LeaseTimeToLive(request), false).await? {
                Reply::LeaseTimeToLive(response) => Ok(response),
                other => Err(mismatched(other)),
            }
        }
    }

    fn lease_leases(
        &self,
    ) -> impl Future<Output = Result<kv::LeaseLeasesResponse, ApiError>> + Send {
        async move {
            match self.read(Query::LeaseLeases, false).await? {
                Reply::LeaseLeases(response) => Ok(response),
                other => Err(mismatched(other)),
            }
        }
    }

    fn watch_open(&self) -> impl Future<Output = Result<(u64, WatchStream), ApiError>> + Send {
        async move {
            let (queue, responses) = mpsc::channel(WATCH_QUEUE_RESPONSES_MAX);
            let (reply, session) = oneshot::channel();
            self.input(Input::WatchOpen { queue, reply }).await?;
            let session = session.await.map_err(|_| ApiError::Stopped)?;
            Ok((session, WatchStream { responses }))
        }
    }

    fn watch_create(
        &self,
        session: u64,
        request: WatchCreateRequest,
    ) -> impl Future<Output = Result<(), ApiError>> + Send {
        async move { self.input(Input::WatchCreate { session, request }).await }
    }

    fn watch_cancel(&self, session: u64, watch_id: i64) -> impl Future<Output = ()> + Send {
        async move {
            let _ = self.input(Input::WatchCancel { session, watch_id }).await;
        }
    }

    fn watch_progress(&self, session: u64) -> impl Future<Output = ()> + Send {
        async move {
            let _ = self.input(Input::WatchProgress { session }).await;
        }
    }

    fn watch_close(&self, session: u64) -> impl Future<Output = ()> + Send {
        async move {
            let _ = self.input(Input::WatchClose { session }).await;
        }
    }

    fn status(&self) -> impl Future<Output = Result<NodeStatus, ApiError>> + Send {
        let (cluster_id, member_id) = (self.cluster_id, self.member_id);
        async move {
            self.query(move |m| NodeStatus {
                cluster_id,
                member_id,
                leader: m.replica().leader().unwrap_or(0),
                revision: m.store().revision(),
                term: m.replica().promised().round,
                commit_index: m.replica().commit_index(),
                applied_index: m.replica().applied(),
                db_size: m.store().value_bytes_held() as i64,
                errors: Vec::new(),
            })
            .await
        }
    }

    fn members(&self) -> impl Future<Output = Result<Vec<MemberInfo>, ApiError>> + Send {
        let me = self.member_id;
        let own = self.advertise_client_urls.clone();
        let own_name = self.name.clone();
        async move {
            self.query(move |m| {
                m.members()
                    .iter()
                    .map(|t| {
                        let (name, urls) = if t.id == me {
                            (Some(&own_name), Some(&own))
                        } else {
                            (m.peer_names().get(&t.id), m.peer_client_urls().get(&t.id))
                        };
                        crate::api::published_member(t, name, urls)
                    })
                    .collect()
            })
            .await
        }
    }

    fn change_members(
        &self,
        change: kv::MemberChange,
    ) -> impl Future<Output = Result<Vec<MemberInfo>, ApiError>> + Send {
        async move {
            match self.request(Request::ChangeMembers(change)).await? {
                // The table after the change, with what is known of names
                // and client URLs (this member may be the one removed,
                // about to stop: nothing more is asked of it).
                Reply::Command(kv::Response::SetMembers(done)) => {
                    let mut known = self.members().await.unwrap_or_default();
                    known.retain(|m| done.members.iter().any(|t| t.id == m.id));
                    for t in &done.members {
                        if !known.iter().any(|m| m.id == t.id) {
                            known.push(t.clone());
                        }
                    }
                    Ok(known)
                }
                other => Err(mismatched(other)),
            }
        }
    }

    fn hash_kv(&self) -> impl Future<Output = Result<(u32, i64, i64), ApiError>> + Send {
        async move {
            self.query(|m| {
                let store = m.store();
                let hash = store.state_hash();
                (
                    (hash ^ (hash >> 32)) as u32,
                    store.revision(),
                    store.compact_revision(),
                )
            })
            .await
        }
    }

    fn snapshot(&self) -> impl Future<Output = Result<Vec<u8>, ApiError>> + Send {
        async move { self.query(|m| m.store().snapshot()).await }
    }
}
