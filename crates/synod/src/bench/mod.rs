//! `synod bench`: a closed-loop load generator over etcd's v3 gRPC API.
//!
//! It speaks through the project's own client stubs, generated from the
//! same hand-written protos the server uses, so it drives synod and a real
//! etcd alike, and a comparison measures the servers, not two clients.
//! `synod bench floor` measures what one write costs at the least on this
//! machine; `synod bench compare` prints two systems' results side by side.

mod compare;
mod conn;
mod floor;
mod record;
mod stats;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use server::proto::etcdserverpb::PutRequest;
use server::proto::etcdserverpb::StatusRequest;
use server::proto::etcdserverpb::kv_client::KvClient;
use server::proto::etcdserverpb::maintenance_client::MaintenanceClient;

use conn::Conn;
use record::{Record, RunRecord, WatchFigures};
use stats::Recorder;
use workload::{Consistency, Plan, Workload};

/// Arguments of `synod bench`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, args_override_self = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Measure the floor of one write: an append plus fdatasync on the
    /// data disk, and a loopback gRPC round trip.
    Floor(floor::FloorArgs),
    /// Print the figures of two systems from results files side by side,
    /// with their ratio.
    Compare(compare::CompareArgs),
}

/// Which members the clients talk to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Only the member that leads now (found with Maintenance.Status).
    Leader,
    /// Every endpoint given, connections spread round-robin.
    All,
}

/// Arguments of a load run.
#[derive(Args, Debug)]
struct RunArgs {
    /// What the clients do.
    #[arg(long, value_enum, default_value = "put")]
    workload: Workload,
    /// Gets are linearizable (l) or serializable (s).
    #[arg(long, value_enum, default_value = "l")]
    consistency: Consistency,
    /// Client URLs, comma-separated.
    #[arg(long, default_value = "http://127.0.0.1:2379", value_delimiter = ',')]
    endpoints: Vec<String>,
    /// Send to the leader only, or to every endpoint.
    #[arg(long, value_enum, default_value = "all")]
    target: Target,
    /// Concurrent closed-loop clients (writers, for the watch workload).
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// gRPC connections the clients share (default: one per client).
    #[arg(long)]
    conns: Option<usize>,
    /// Watch streams, for the watch workload.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Keys to choose from, uniformly.
    #[arg(long, default_value_t = 10_000)]
    key_space: u64,
    /// Digits of a key's number; keys are "bench/" and the number.
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    /// Bytes per value (at least 8: values carry a time stamp).
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Seconds to measure, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many measured operations instead of a duration.
    #[arg(long)]
    total: Option<u64>,
    /// Seconds of load before measuring starts (connections warm, caches
    /// filled); not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Milliseconds one request may take before it counts as a timeout.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Write every key of the key space first (for get workloads).
    #[arg(long)]
    prefill: bool,
    /// Seed of the clients' key choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Name of the system measured, recorded with the results.
    #[arg(long, default_value = "synod")]
    label: String,
    /// Name of the figure (default: workload, consistency and clients),
    /// which `compare` matches across systems.
    #[arg(long)]
    name: Option<String>,
    /// Append the results as one JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write every measured operation to this file, one line each: client,
    /// start (ms since the UNIX epoch, to set beside the members' logs) and
    /// latency (ms), in order of start;
    /// shows whether slow operations bunch in time (a stall) or belong to
    /// some clients (unfairness).
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// Process ids whose resident memory is read after the run.
    #[arg(long, value_delimiter = ',')]
    rss_pids: Vec<u32>,
    /// Read their resident memory again this many milliseconds after the
    /// run (0: only right after it), to see it once background work that
    /// the run started (a snapshot's save, a collector) has finished.
    #[arg(long, default_value_t = 0)]
    rss_settle_ms: u64,
}

/// Runs `synod bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(BenchCommand::Floor(floor)) => floor::run(floor),
        Some(BenchCommand::Compare(compare)) => compare::run(compare),
        None => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(load(args.run))
        }
    }
}

/// Connects to `url` (`http://` is assumed if no scheme is given, as
/// etcdctl does) within a few seconds.
pub(super) async fn connect(url: &str) -> anyhow::Result<Conn> {
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    conn::connect(&url).await
}

/// The endpoint of the member that leads now.
async fn find_leader(endpoints: &[String]) -> anyhow::Result<String> {
    for url in endpoints {
        let Ok(channel) = connect(url).await else {
            continue;
        };
        let Ok(status) = MaintenanceClient::new(channel)
            .status(StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
        else {
            continue;
        };
        let me = status.header.map_or(0, |h| h.member_id);
        if status.leader != 0 && status.leader == me {
            return Ok(url.clone());
        }
    }
    bail!("no endpoint of {endpoints:?} says it is the leader")
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    let template = format!("{what} {{elapsed_precise}} [{{bar:30}}] {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Writes every key of the key space once, from up to 64 tasks.
async fn prefill(args: &RunArgs, channels: &[Conn]) -> anyhow::Result<()> {
    let bar = progress_bar(args.key_space, "prefill");
    let next = Arc::new(AtomicU64::new(0));
    let tasks = args.clients.clamp(1, 64);
    let mut handles = Vec::new();
    for t in 0..tasks {
        let mut kv = KvClient::new(channels[t % channels.len()].clone());
        let next = Arc::clone(&next);
        let bar = bar.clone();
        let (space, width, size) = (args.key_space, args.key_size, args.val_size);
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= space {
                    return Ok::<(), tonic::Status>(());
                }
                let key = format!("{}{i:0width$}", workload::KEY_PREFIX).into_bytes();
                let request = PutRequest {
                    key,
                    value: vec![b'v'; size],
                    ..Default::default()
                };
                kv.put(request).await?;
                bar.inc(1);
            }
        }));
    }
    for handle in handles {
        handle
            .await
            .context("a prefill task panicked")?
            .map_err(|s| anyhow::anyhow!("prefill failed: {}", s.message()))?;
    }
    bar.finish_and_clear();
    Ok(())
}

async fn load(args: RunArgs) -> anyhow::Result<ExitCode> {
    if args.clients == 0 || args.key_space == 0 {
        bail!("--clients and --key-space must be at least 1");
    }
    if args.val_size < 8 {
        bail!("--val-size must be at least 8: values carry a time stamp");
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0) {
        bail!("--duration must be positive and --warmup not negative");
    }
    if args.endpoints.is_empty() {
        bail!("--endpoints names no endpoint");
    }
    let targets = match args.target {
        Target::Leader => vec![find_leader(&args.endpoints).await?],
        Target::All => args.endpoints.clone(),
    };
    let conns = args.conns.unwrap_or(args.clients).max(1);
    let mut channels = Vec::with_capacity(conns);
    for j in 0..conns {
        channels.push(connect(&targets[j % targets.len()]).await?);
    }
    if args.prefill {
        prefill(&args, &channels).await?;
    }

    let epoch = Instant::now();
    let epoch_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let watching = args.workload == Workload::Watch;
    // Watch streams are opened and confirmed before the clock starts:
    // creating them is not the load being measured.
    let (plan_tx, plan_rx) = tokio::sync::watch::channel(None);
    let mut watcher_handles = Vec::new();
    if watching {
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(args.watchers.max(1));
        for w in 0..args.watchers {
            watcher_handles.push(tokio::spawn(workload::watcher(
                channels[w % channels.len()].clone(),
                epoch,
                ready_tx.clone(),
                plan_rx.clone(),
            )));
        }
        drop(ready_tx);
        let setup = Duration::from_secs(10);
        let deadline = Instant::now() + setup;
        for confirmed in 0..args.watchers {
            match tokio::time::timeout_at(deadline.into(), ready_rx.recv()).await {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(e))) => bail!("a watcher could not start: {e}"),
                Ok(None) | Err(_) => bail!(
                    "only {confirmed} of {} watchers started within {setup:?}",
                    args.watchers
                ),
            }
        }
    }
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let stop_at = match args.total {
        Some(_) => measure_from + Duration::from_secs(24 * 3600),
        None => measure_from + Duration::from_secs_f64(args.duration),
    };
    let plan = Arc::new(Plan {
        workload: args.workload,
        consistency: args.consistency,
        key_space: args.key_space,
        key_size: args.key_size,
        val_size: args.val_size,
        timeout: Duration::from_millis(args.timeout_ms),
        epoch,
        measure_from,
        stop_at,
        budget: AtomicU64::new(args.total.unwrap_or(u64::MAX)),
        done: AtomicU64::new(0),
        timeline: args.timeline.is_some(),
    });
    let _ = plan_tx.send(Some(Arc::clone(&plan)));

    let mut handles = Vec::with_capacity(args.clients);
    for c in 0..args.clients {
        let channel = channels[c % channels.len()].clone();
        handles.push(tokio::spawn(workload::client(
            Arc::clone(&plan),
            channel,
            c,
            args.seed,
        )));
    }

    let bar = match args.total {
        Some(total) => progress_bar(total, &format!("{:?}", args.workload).to_lowercase()),
        None => progress_bar(
            u64::try_from((stop_at - start).as_millis()).unwrap_or(u64::MAX),
            &format!("{:?}", args.workload).to_lowercase(),
        ),
    };
    let mut last = (Instant::now(), 0u64);
    while !handles.iter().all(|h| h.is_finished()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Instant::now();
        let done = plan.done.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
        last = (now, done);
        match args.total {
            Some(total) => bar.set_position(total - plan.budget.load(Ordering::Relaxed).min(total)),
            None => bar.set_position(u64::try_from((now - start).as_millis()).unwrap_or(0)),
        }
        let phase = if now < measure_from {
            "warming up, "
        } else {
            ""
        };
        bar.set_message(format!("{phase}{done} ops, {rate:.0}/s"));
    }
    bar.finish_and_clear();
    let mut recorder = Recorder::default();
    for handle in handles {
        recorder.merge(handle.await.context("a client task panicked")?);
    }
    // A fixed number of operations is measured up to the end of the last
    // one, not up to when the progress loop above noticed (up to 250 ms
    // later).
    let measured_until = match args.total {
        Some(_) => recorder.last_end.unwrap_or_else(Instant::now),
        None => stop_at,
    };
    let window = measured_until.saturating_duration_since(measure_from);
    let mut watch = None;
    if watching {
        let mut events = Recorder::default();
        for handle in watcher_handles {
            events.merge(handle.await.context("a watcher task panicked")?);
        }
        let delivered = events.summarize(window);
        watch = Some(WatchFigures {
            watchers: args.watchers,
            events: delivered.ops,
            events_per_sec: delivered.throughput,
            delivery_ms: delivered.latency_ms,
            errors: delivered.errors,
        });
    }
    if let Some(path) = &args.timeline {
        write_timeline(path, epoch_unix, &mut recorder.timeline)?;
    }
    let result = recorder.summarize(window);
    let rss_now: Vec<f64> = args.rss_pids.iter().map(|&pid| rss_mib(pid)).collect();
    let mut rss_settled_mib = Vec::new();
    if args.rss_settle_ms > 0 && !args.rss_pids.is_empty() {
        tokio::time::sleep(Duration::from_millis(args.rss_settle_ms)).await;
        rss_settled_mib = args.rss_pids.iter().map(|&pid| rss_mib(pid)).collect();
    }
    let consistency = matches!(args.workload, Workload::Get | Workload::Mixed)
        .then(|| format!("{:?}", args.consistency).to_lowercase());
    let workload_name = format!("{:?}", args.workload).to_lowercase();
    let name = args.name.clone().unwrap_or_else(|| match &consistency {
        Some(c) => format!("{workload_name} {c} c={}", args.clients),
        None => format!("{workload_name} c={}", args.clients),
    });
    let run = RunRecord {
        label: args.label.clone(),
        name,
        workload: workload_name,
        consistency,
        clients: args.clients,
        conns,
        key_space: args.key_space,
        val_size: args.val_size,
        target: format!("{:?}", args.target).to_lowercase(),
        endpoints: targets,
        result,
        watch,
        rss_mib: rss_now,
        rss_settle_ms: args.rss_settle_ms,
        rss_settled_mib,
    };
    print!("{}", render(&run));
    if let Some(path) = &args.json {
        record::append(path, &Record::Run(Box::new(run)))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Resident memory of process `pid` in MiB (NaN if it cannot be read).
fn rss_mib(pid: u32) -> f64 {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return f64::NAN;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The terminal table of one run.
fn render(run: &RunRecord) -> String {
    use std::fmt::Write;
    let r = &run.result;
    let l = &r.latency_ms;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} · {}: {} clients, {} connections, {}-byte values, {} keys, target {} ({})",
        run.label,
        run.name,
        run.clients,
        run.conns,
        run.val_size,
        run.key_space,
        run.target,
        run.endpoints.join(",")
    );
    let _ = writeln!(
        out,
        "  throughput  {:>10.1} ops/s   ({} ops in {:.2} s)",
        r.throughput, r.ops, r.seconds
    );
    let _ = writeln!(
        out,
        "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    );
    let _ = writeln!(
        out,
        "  errors      {}   timeouts {}   store revision {}",
        r.errors, r.timeouts, r.revision
    );
    for (message, n) in &r.error_kinds {
        let _ = writeln!(out, "    {n} x {message}");
    }
    if run.workload == "txn" {
        let _ = writeln!(
            out,
            "  cas         {} succeeded, {} found a newer revision",
            r.cas_succeeded, r.cas_failed
        );
    }
    if let Some(w) = &run.watch {
        let d = &w.delivery_ms;
        let _ = writeln!(
            out,
            "  watch       {} watchers: {} events, {:.1} events/s, {} stream errors",
            w.watchers, w.events, w.events_per_sec, w.errors
        );
        let _ = writeln!(
            out,
            "  delivery ms p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            d.p50, d.p90, d.p99, d.p999, d.max
        );
    }
    if !run.rss_mib.is_empty() {
        let rss: Vec<String> = run.rss_mib.iter().map(|m| format!("{m:.1}")).collect();
        let _ = writeln!(out, "  rss MiB     {}", rss.join("  "));
    }
    if !run.rss_settled_mib.is_empty() {
        let rss: Vec<String> = run
            .rss_settled_mib
            .iter()
            .map(|m| format!("{m:.1}"))
            .collect();
        let _ = writeln!(
            out,
            "  rss MiB     {} ({} ms after the run)",
            rss.join("  "),
            run.rss_settle_ms
        );
    }
    out
}

/// Writes `--timeline`'s file: `client start_ms latency_ms` per line, by
/// start.
fn write_timeline(
    path: &Path,
    epoch_unix: Duration,
    timeline: &mut [(usize, u64, u64)],
) -> anyhow::Result<()> {
    use std::io::Write as _;
    timeline.sort_unstable_by_key(|&(_, start, _)| start);
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for &(client, start, latency) in timeline.iter() {
        writeln!(
            out,
            "{client} {:.3} {:.3}",
            epoch_unix.as_secs_f64() * 1e3 + start as f64 / 1e6,
            latency as f64 / 1e6
        )?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}
