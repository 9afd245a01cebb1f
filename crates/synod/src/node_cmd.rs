//! `synod node` (one member, etcd's flags) and `synod demo` (a 3-member
//! cluster on loopback in one process).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use server::api::Backend;
use server::node::{DRIVER_CONNECTIONS_DEFAULT, MemberConfig, Node, NodeConfig};

/// Arguments of `synod node`; each also reads `SYNOD_<FLAG>` from the
/// environment, as etcd reads `ETCD_<FLAG>`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// How much the member logs, by etcd's names.
    #[arg(long, env = "SYNOD_LOG_LEVEL", value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Human-readable name for this member.
    #[arg(long, env = "SYNOD_NAME", default_value = "default")]
    name: String,
    /// Path to the data directory (default: <name>.synod).
    #[arg(long, env = "SYNOD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URL to listen on for client traffic (gRPC, /health, /metrics).
    #[arg(
        long,
        env = "SYNOD_LISTEN_CLIENT_URLS",
        default_value = "http://127.0.0.1:2379"
    )]
    listen_client_urls: String,
    /// Client URL to advertise to the cluster (default: the listen URL).
    #[arg(long, env = "SYNOD_ADVERTISE_CLIENT_URLS")]
    advertise_client_urls: Option<String>,
    /// URL to listen on for peer traffic.
    #[arg(
        long,
        env = "SYNOD_LISTEN_PEER_URLS",
        default_value = "http://127.0.0.1:2380"
    )]
    listen_peer_urls: String,
    /// This member's peer URL as the others know it (must match its entry
    /// in --initial-cluster).
    #[arg(long, env = "SYNOD_INITIAL_ADVERTISE_PEER_URLS")]
    initial_advertise_peer_urls: Option<String>,
    /// Every member as name=peer-url, comma-separated.
    #[arg(
        long,
        env = "SYNOD_INITIAL_CLUSTER",
        default_value = "default=http://127.0.0.1:2380"
    )]
    initial_cluster: String,
    /// "new" to start a cluster, "existing" to join a running one that
    /// `etcdctl member add` made this member part of (it asks the members in
    /// --initial-cluster for its id, then catches up by snapshot and log).
    #[arg(long, env = "SYNOD_INITIAL_CLUSTER_STATE", default_value = "new")]
    initial_cluster_state: String,
    /// Learners the cluster may hold at once.
    #[arg(long, env = "SYNOD_MAX_LEARNERS", default_value_t = 1)]
    max_learners: usize,
    /// Refuse a membership change that would leave fewer started voters
    /// than a quorum of the new configuration.
    #[arg(
        long,
        env = "SYNOD_STRICT_RECONFIG_CHECK",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    strict_reconfig_check: bool,
    /// Secret shared by the members: peers prove membership with it.
    #[arg(
        long,
        env = "SYNOD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    initial_cluster_token: String,
    /// Applied commands between snapshots (each trims the log).
    #[arg(long, env = "SYNOD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    snapshot_count: u64,
    /// Time between the leader's heartbeats, in milliseconds.
    #[arg(long, env = "SYNOD_HEARTBEAT_INTERVAL", default_value_t = 50)]
    heartbeat_interval: u64,
    /// Time without a leader before a member stands for election, in
    /// milliseconds (randomized up to twice this).
    #[arg(long, env = "SYNOD_ELECTION_TIMEOUT", default_value_t = 500)]
    election_timeout: u64,
    /// Client connections served on the member's protocol thread itself
    /// (the first to connect): their requests skip a hand-off between
    /// threads each way. 0 serves every connection on the worker threads.
    #[arg(long, env = "SYNOD_DRIVER_CONNECTIONS", default_value_t = DRIVER_CONNECTIONS_DEFAULT)]
    driver_connections: usize,
}

/// Arguments of `synod demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the three members keep their data.
    #[arg(long, env = "SYNOD_DATA_DIR", default_value = "synod-data")]
    data_dir: PathBuf,
    /// How much the members log: failures only by default, so that the
    /// banner is what a newcomer sees (the members starting one after
    /// another warn that they cannot reach each other yet).
    #[arg(long, env = "SYNOD_LOG_LEVEL", value_enum, default_value_t = LogLevel::Error)]
    pub log_level: LogLevel,
}

/// etcd's `--log-level` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything, for digging.
    Debug,
    /// What a member does: starts, peers, elections, snapshots.
    Info,
    /// Only what may need attention.
    Warn,
    /// Only failures.
    Error,
    /// As `error` (etcd's name).
    Panic,
    /// As `error` (etcd's name).
    Fatal,
}

impl LogLevel {
    /// The most verbose level logged.
    pub fn level(self) -> tracing::Level {
        match self {
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => tracing::Level::ERROR,
        }
    }
}

/// Parses `http://host:port` (the first of a comma-separated list).
pub fn parse_url(url: &str) -> anyhow::Result<SocketAddr> {
    let first = url.split(',').next().unwrap_or("").trim();
    let rest = if let Some(rest) = first.strip_prefix("http://") {
        rest
    } else if first.starts_with("https://") || first.starts_with("unix") {
        bail!("{first:?}: only http:// URLs are supported for now");
    } else {
        bail!("{first:?} is not a URL like http://127.0.0.1:2379");
    };
    let hostport = rest.trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {hostport:?} in {first:?}"))?
        .next()
        .with_context(|| format!("{hostport:?} resolves to no address"))
}

fn parse_cluster(spec: &str) -> anyhow::Result<Vec<MemberConfig>> {
    let mut members = Vec::new();
    for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .with_context(|| format!("--initial-cluster entry {entry:?} is not name=url"))?;
        if members.iter().any(|m: &MemberConfig| m.name == name) {
            bail!("--initial-cluster names {name:?} twice");
        }
        members.push(MemberConfig {
            name: name.to_string(),
            peer_url: url.to_string(),
            peer_addr: parse_url(url)?,
        });
    }
    if members.is_empty() {
        bail!("--initial-cluster is empty");
    }
    Ok(members)
}

fn config_from(args: &NodeArgs) -> anyhow::Result<NodeConfig> {
    if !matches!(args.initial_cluster_state.as_str(), "new" | "existing") {
        bail!("--initial-cluster-state must be \"new\" or \"existing\"");
    }
    let members = parse_cluster(&args.initial_cluster)?;
    let Some(me) = members.iter().find(|m| m.name == args.name) else {
        bail!(
            "--name {:?} does not appear in --initial-cluster {:?}",
            args.name,
            args.initial_cluster
        );
    };
    if let Some(advertised) = &args.initial_advertise_peer_urls {
        let first = advertised.split(',').next().unwrap_or("").trim();
        if first != me.peer_url {
            bail!(
                "--initial-advertise-peer-urls {first:?} does not match {:?} in --initial-cluster",
                me.peer_url
            );
        }
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.synod", args.name)));
    let mut config = NodeConfig::new(args.name.clone(), data_dir);
    config.listen_client = parse_url(&args.listen_client_urls)?;
    config.listen_peer = parse_url(&args.listen_peer_urls)?;
    config.advertise_client_urls = args
        .advertise_client_urls
        .as_deref()
        .unwrap_or(&args.listen_client_urls)
        .split(',')
        .map(|u| u.trim().to_string())
        .collect();
    config.members = members;
    config.cluster_token = args.initial_cluster_token.clone();
    config.join = args.initial_cluster_state == "existing";
    config.max_learners = args.max_learners;
    config.strict_reconfig_check = args.strict_reconfig_check;
    if args.snapshot_count == 0 {
        bail!("--snapshot-count must be positive");
    }
    config.snapshot_count = args.snapshot_count;
    config.driver_connections = args.driver_connections;
    let tick_ms = config.tick.as_millis().max(1) as u64;
    if args.heartbeat_interval < tick_ms || args.election_timeout < 3 * args.heartbeat_interval {
        bail!(
            "--heartbeat-interval must be at least {tick_ms} ms and --election-timeout at least three heartbeats"
        );
    }
    config.heartbeat_ticks = u32::try_from(args.heartbeat_interval / tick_ms).unwrap_or(u32::MAX);
    config.election_ticks = u32::try_from(args.election_timeout / tick_ms).unwrap_or(u32::MAX);
    Ok(config)
}

/// Runs `synod node` until Ctrl-C or a storage failure.
pub async fn node(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let config = config_from(&args)?;
    let mut node = Node::start(config)
        .await
        .context("cannot start the member")?;
    tokio::select! {
        result = node.stopped() => {
            let reason = result.err().unwrap_or_else(|| "stopped".into());
            // Answers already made (to the `member remove` that removed this
            // member, say) still reach their clients.
            node.shutdown().await;
            bail!("the member stopped: {reason}");
        }
        _ = tokio::signal::ctrl_c() => {
            eprintln!("stopping");
            node.shutdown().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The three members of the demo: etcd's Procfile ports.
const DEMO: [(&str, u16, u16); 3] = [
    ("infra1", 2379, 2380),
    ("infra2", 22379, 22380),
    ("infra3", 32379, 32380),
];

/// Runs `synod demo`: three members on loopback until Ctrl-C.
pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let cluster: Vec<String> = DEMO
        .iter()
        .map(|(name, _, peer)| format!("{name}=http://127.0.0.1:{peer}"))
        .collect();
    let cluster = cluster.join(",");
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let fresh = std::fs::read_dir(&args.data_dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    let mut nodes = Vec::new();
    for (name, client, peer) in DEMO {
        let node_args = NodeArgs {
            log_level: args.log_level,
            name: name.to_string(),
            data_dir: Some(args.data_dir.join(name)),
            listen_client_urls: format!("http://127.0.0.1:{client}"),
            advertise_client_urls: None,
            listen_peer_urls: format!("http://127.0.0.1:{peer}"),
            initial_advertise_peer_urls: None,
            initial_cluster: cluster.clone(),
            initial_cluster_state: "new".into(),
            max_learners: 1,
            strict_reconfig_check: true,
            initial_cluster_token: "synod-demo".into(),
            snapshot_count: 100_000,
            heartbeat_interval: 50,
            election_timeout: 500,
            driver_connections: DRIVER_CONNECTIONS_DEFAULT,
        };
        let config = config_from(&node_args)?;
        let node = Node::start(config).await.with_context(|| {
            format!("cannot start {name} (is something else on port {client} or {peer}?)")
        })?;
        nodes.push(node);
    }
    // The banner comes once the cluster serves: every member knows its
    // leader (or after 10 s, whatever the state).
    for _ in 0..100 {
        let mut led = 0;
        for node in &nodes {
            if node.handle().status().await.is_ok_and(|s| s.leader != 0) {
                led += 1;
            }
        }
        if led == nodes.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let endpoints = "127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379";
    println!(
        "synod demo: 3 members on loopback, data in {} ({})",
        args.data_dir.display(),
        if fresh {
            "new"
        } else {
            "found from an earlier run"
        }
    );
    for (name, client, peer) in DEMO {
        println!("  {name}: clients http://127.0.0.1:{client}  peers http://127.0.0.1:{peer}");
    }
    println!("\nTry, in another terminal (etcdctl v3):");
    println!("  export ETCDCTL_API=3 ENDPOINTS={endpoints}");
    println!("  etcdctl --endpoints=$ENDPOINTS put greeting hello");
    println!("  etcdctl --endpoints=$ENDPOINTS get greeting");
    println!("  etcdctl --endpoints=$ENDPOINTS get --prefix ''");
    println!("  etcdctl --endpoints=$ENDPOINTS watch greeting        # then put again elsewhere");
    println!("  etcdctl --endpoints=$ENDPOINTS lease grant 30");
    println!("  etcdctl --endpoints=$ENDPOINTS member list -w table");
    println!("  etcdctl --endpoints=$ENDPOINTS endpoint status -w table");
    println!("  curl http://127.0.0.1:2379/health    curl http://127.0.0.1:2379/metrics");
    println!("\nCtrl-C stops the cluster; run again and it finds its data.");
    let mut stopped = Vec::new();
    for node in nodes.iter_mut() {
        stopped.push(Box::pin(node.stopped()));
    }
    tokio::select! {
        (result, index, _) = futures_select_all(stopped) => {
            let reason = result.err().unwrap_or_else(|| "stopped".into());
            bail!("{} stopped: {reason}", DEMO[index].0);
        }
        _ = tokio::signal::ctrl_c() => {}
    }
    println!("stopping");
    for node in nodes {
        node.shutdown().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits for the first of several futures (a tiny `select_all`).
async fn futures_select_all<F>(mut futures: Vec<std::pin::Pin<Box<F>>>) -> (F::Output, usize, ())
where
    F: std::future::Future,
{
    std::future::poll_fn(move |cx| {
        for (i, f) in futures.iter_mut().enumerate() {
            if let std::task::Poll::Ready(out) = f.as_mut().poll(cx) {
                return std::task::Poll::Ready((out, i, ()));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_clusters_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_url("http://127.0.0.1:2379").ok(),
            Some(SocketAddr::from(([127, 0, 0, 1], 2379)))
        );
        assert!(parse_url("https://127.0.0.1:2379").is_err());
        assert!(parse_url("127.0.0.1:2379").is_err());
        let members = parse_cluster("a=http://127.0.0.1:1,b=http://127.0.0.1:2").expect("parses");
        assert_eq!(members.len(), 2);
        assert!(parse_cluster("a=http://127.0.0.1:1,a=http://127.0.0.1:2").is_err());
        assert!(parse_cluster("nonsense").is_err());
    }
}
