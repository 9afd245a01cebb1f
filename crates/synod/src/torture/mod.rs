//! `synod torture`: real `synod node` processes under crashes, pauses,
//! partitions and wall-clock steps while clients record every operation;
//! then the history is checked, and a lease holder's key is judged by the
//! lease oracle (`leases.rs`).
//!
//! A cluster of `--nodes` members runs on loopback; every directed peer
//! link i -> j goes through a proxy the nemesis can cut. `--clients`
//! clients read, write unique values and compare-and-set on `--keys` keys
//! through the etcd v3 API. A nemesis drawn from `--seed` SIGKILLs and
//! restarts members (the leader half of the time), SIGSTOPs and SIGCONTs
//! them, partitions the cluster (majority/minority, isolated leader,
//! bridge), and steps members' wall clocks by two hours either way under
//! libfaketime (their monotonic clocks untouched), healing each fault after
//! a while and everything at the end.
//! The history (docs/HISTORY.md) goes to `--history` or DIR/history.jsonl.
//!
//! Exit status: 0 linearizable, 1 not, 3 the checker gave up undecided,
//! 2 the run itself failed. `--power-loss` instead kills every member at
//! once while writers run, restarts them and checks every acknowledged
//! write is still there (exit 0 if so, 1 if not).

mod cluster;
mod leases;
mod proxy;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use check::{Limits, Outcome, Verdict};
use clap::{Args, ValueEnum};

use cluster::{Cluster, ClusterConfig, find_libfaketime};
use leases::LeaseOracle;
use workload::{Rng, Shared};

/// Which faults the nemesis injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Faults {
    /// Kills, pauses, partitions, and wall-clock steps if libfaketime is
    /// installed.
    All,
    /// Partitions only.
    Partition,
    /// Kills and restarts only.
    Kill,
    /// Pauses only.
    Pause,
    /// Wall-clock steps of two hours either way on running members, by
    /// libfaketime (Debian's `faketime`); the monotonic clock untouched.
    Clock,
    /// No faults.
    None,
}

/// Arguments of `synod torture`.
#[derive(Args, Debug)]
pub struct TortureArgs {
    /// Seed of the nemesis schedule and the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How long the clients and the nemesis run, in seconds.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Cluster members.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Keys the clients work on.
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// Working directory: data, logs, pids, history (default: a fresh one
    /// under the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// UNSAFE: clients read from their member's local state (serializable
    /// reads) yet record the reads as linearizable, to show the checker
    /// rejects the stale reads that produces. The members run as always:
    /// `synod node` has no unsafe read path.
    #[arg(long)]
    unsafe_local_reads: bool,
    /// UNSAFE: the lease oracle believes every TTL is twice what was
    /// granted, to show it rejects the keys that then seem to go early.
    #[arg(long)]
    unsafe_double_lease_ttl: bool,
    /// Where to write the history (default: DIR/history.jsonl).
    #[arg(long)]
    history: Option<PathBuf>,
    /// Which faults the nemesis injects.
    #[arg(long, value_enum, default_value_t = Faults::All)]
    faults: Faults,
    /// Run the power-loss test instead: writers, every member SIGKILLed at
    /// once, restart, every acknowledged write must be there.
    #[arg(long)]
    power_loss: bool,
    /// The `synod` binary to start members with (default: this one).
    #[arg(long, hide = true)]
    bin: Option<PathBuf>,
}

/// Runs `synod torture`.
pub fn run(args: TortureArgs) -> anyhow::Result<ExitCode> {
    if args.nodes == 0 || args.clients == 0 || args.keys == 0 {
        bail!("--nodes, --clients and --keys must be at least 1");
    }
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot find the synod binary")?,
    };
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "synod-torture-{}-{}",
            args.seed,
            std::process::id()
        ))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let history = args
        .history
        .clone()
        .unwrap_or_else(|| dir.join("history.jsonl"));
    let faketime = match args.faults {
        Faults::Clock => Some(find_libfaketime().context(
            "--faults clock needs libfaketime (Debian's faketime package; or SYNOD_LIBFAKETIME=PATH)",
        )?),
        Faults::All if !args.power_loss => {
            let found = find_libfaketime();
            if found.is_none() {
                println!("note: no libfaketime, so no wall-clock steps (install Debian's faketime)");
            }
            found
        }
        _ => None,
    };
    let config = ClusterConfig {
        bin,
        dir,
        nodes: args.nodes,
        faketime,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    if args.power_loss {
        runtime.block_on(power_loss(config, args.seed))
    } else {
        runtime.block_on(torture(config, &args, history))
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// One healed fault: when, and what.
struct Heal {
    at: u64,
    what: String,
}

async fn torture(
    config: ClusterConfig,
    args: &TortureArgs,
    path: PathBuf,
) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    println!(
        "torture: seed {}, {} nodes, {} clients, {} keys, {} s, faults {:?}{}, dir {}",
        args.seed,
        args.nodes,
        args.clients,
        args.keys,
        args.duration_secs,
        args.faults,
        if args.unsafe_local_reads {
            ", UNSAFE local reads"
        } else {
            ""
        },
        config.dir.display()
    );
    let mut cluster = Cluster::start(config).await?;
    if !cluster.wait_all_healthy(Duration::from_secs(30)).await {
        bail!(
            "the cluster never became healthy; logs in {}",
            cluster.dir().join("logs").display()
        );
    }
    let urls = (0..args.nodes).map(|i| cluster.client_url(i)).collect();
    let shared = Shared::new(start, urls, args.keys, args.unsafe_local_reads);
    // Only wall-clock steps leave leadership alone: then lateness is judged.
    let lease_oracle = Arc::new(LeaseOracle::new(
        (0..args.nodes).map(|i| cluster.client_url(i)).collect(),
        matches!(args.faults, Faults::Clock | Faults::None),
        args.unsafe_double_lease_ttl,
    ));
    let lease_task = tokio::spawn({
        let oracle = Arc::clone(&lease_oracle);
        let seed = args.seed;
        async move { oracle.run(seed).await }
    });
    let workload_start = shared.now();
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            tokio::spawn(workload::client(
                Arc::clone(&shared),
                i,
                args.clients,
                args.seed,
            ))
        })
        .collect();

    let mut heals = Vec::new();
    let until = Instant::now() + Duration::from_secs(args.duration_secs);
    let mut rng = Rng::new(args.seed);
    let nemesis = nemesis(
        &mut cluster,
        &mut rng,
        args.faults,
        until,
        &shared,
        &mut heals,
    )
    .await;

    // Heal everything, whatever the nemesis left behind.
    let final_heal = shared.now();
    let healed = cluster.heal_all();
    println!("[{:7.3}] heal everything", secs(final_heal));
    heals.push(Heal {
        at: final_heal,
        what: "final heal".into(),
    });
    let all_healthy = cluster.wait_all_healthy(Duration::from_secs(30)).await;
    let health_time = shared.now().saturating_sub(final_heal);
    // Let the clients see the healed cluster for a moment, then stop them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let workload_end = shared.now();
    shared.stop.store(true, Ordering::Relaxed);
    for c in clients {
        let abort = c.abort_handle();
        if tokio::time::timeout(Duration::from_secs(10), c)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    lease_oracle.stop.store(true, Ordering::Relaxed);
    let abort = lease_task.abort_handle();
    // The lease in hand runs to its end: its TTL and the lateness bound.
    if tokio::time::timeout(Duration::from_secs(20), lease_task)
        .await
        .is_err()
    {
        abort.abort();
    }
    let final_reads = workload::final_reads(&shared, 1_000_000, Duration::from_secs(20)).await;
    drop(cluster);
    nemesis?;
    healed?;

    let history = shared.history();
    let mut text = String::new();
    check::history::write(&history, &mut text);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;

    let report = check::check(&history, &Limits::default());
    println!("history: {}", path.display());
    println!(
        "operations: {} on {} keys: {} ok, {} fail, {} info",
        report.ops, report.keys, report.ok, report.fail, report.info
    );
    println!(
        "final reads: {final_reads}/{} keys read after the final heal; all members healthy {} s after it{}",
        args.keys,
        format_args!("{:.3}", secs(health_time)),
        if all_healthy {
            ""
        } else {
            " (NOT all healthy)"
        }
    );
    let mut ok_times: Vec<u64> = history
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok(_)))
        .filter_map(|o| o.complete)
        .filter(|&t| t <= workload_end)
        .collect();
    ok_times.sort_unstable();
    let (mut gap, mut gap_from, mut prev) = (0, workload_start, workload_start);
    for &t in ok_times.iter().chain(std::iter::once(&workload_end)) {
        if t.saturating_sub(prev) > gap {
            gap = t - prev;
            gap_from = prev;
        }
        prev = prev.max(t);
    }
    println!(
        "longest unavailability window: {:.3} s (from {:.3} s to {:.3} s)",
        secs(gap),
        secs(gap_from),
        secs(gap_from + gap)
    );
    for heal in &heals {
        let next = ok_times.iter().find(|&&t| t >= heal.at);
        match next {
            Some(t) => println!(
                "recovery after {} at {:.3} s: {:.3} s",
                heal.what,
                secs(heal.at),
                secs(t - heal.at)
            ),
            None => println!(
                "recovery after {} at {:.3} s: no successful operation after it",
                heal.what,
                secs(heal.at)
            ),
        }
    }
    let leases = lease_oracle.findings();
    let verdict = if !leases.problems.is_empty() {
        format!("NOT as granted: {}", leases.problems.join("; "))
    } else if matches!(args.faults, Faults::Clock | Faults::None) {
        "none early, none late".to_string()
    } else {
        "none early (lateness not judged across leader changes)".to_string()
    };
    println!("leases: {} held to the end, {verdict}", leases.checked);
    let linearizable = match &report.verdict {
        Verdict::Linearizable => "yes",
        Verdict::NotLinearizable { .. } => "NO",
        Verdict::Unknown { .. } => "undecided",
    };
    println!("linearizable: {linearizable}");
    println!("{}", report.verdict);
    // A lease broken is as bad as a history that is not linearizable.
    let code = match &report.verdict {
        _ if !leases.problems.is_empty() => 1,
        Verdict::Linearizable => 0,
        Verdict::NotLinearizable { .. } => 1,
        Verdict::Unknown { .. } => 3,
    };
    Ok(ExitCode::from(code))
}

/// Picks the leader half of the time (if one is known), else any member.
fn pick(rng: &mut Rng, leader: Option<usize>, n: usize) -> usize {
    match leader {
        Some(l) if rng.chance(50) => l,
        _ => rng.below(n as u64) as usize,
    }
}

fn shuffled(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

fn names(cluster: &Cluster, group: &[usize]) -> String {
    let names: Vec<&str> = group
        .iter()
        .map(|&i| cluster.members[i].name.as_str())
        .collect();
    format!("{{{}}}", names.join(","))
}

/// Injects one fault at a time until `until`, each healed before the next.
async fn nemesis(
    cluster: &mut Cluster,
    rng: &mut Rng,
    faults: Faults,
    until: Instant,
    shared: &Shared,
    heals: &mut Vec<Heal>,
) -> anyhow::Result<()> {
    let n = cluster.members.len();
    let ms = |v: u64| Duration::from_millis(v);
    loop {
        let wait = ms(rng.between(1000, 4000));
        let now = Instant::now();
        if now + wait >= until {
            tokio::time::sleep(until.saturating_duration_since(now)).await;
            return Ok(());
        }
        tokio::time::sleep(wait).await;
        let kind = match faults {
            Faults::None => continue,
            Faults::Kill => 0,
            Faults::Pause => 1,
            Faults::Partition => 2,
            Faults::Clock => 3,
            Faults::All => match rng.below(100) {
                0..30 => 0,
                30..50 => 1,
                50..85 => 2,
                _ if cluster.can_step_clocks() => 3,
                _ => 2,
            },
        };
        let leader = cluster.leader().await;
        let t = shared.now();
        let what = match kind {
            0 => {
                let victim = pick(rng, leader, n);
                let name = cluster.members[victim].name.clone();
                let tag = if Some(victim) == leader {
                    " (leader)"
                } else {
                    ""
                };
                println!("[{:7.3}] SIGKILL {name}{tag}", secs(t));
                cluster.kill(victim);
                tokio::time::sleep(ms(rng.between(500, 2500))).await;
                cluster.spawn(victim)?;
                format!("restart of {name}")
            }
            1 => {
                let victim = pick(rng, leader, n);
                let name = cluster.members[victim].name.clone();
                let tag = if Some(victim) == leader {
                    " (leader)"
                } else {
                    ""
                };
                println!("[{:7.3}] SIGSTOP {name}{tag}", secs(t));
                cluster.pause(victim);
                tokio::time::sleep(ms(rng.between(1000, 2000))).await;
                cluster.resume(victim);
                format!("SIGCONT of {name}")
            }
            3 => {
                let victim = pick(rng, leader, n);
                let name = cluster.members[victim].name.clone();
                let offset = if rng.chance(50) { "+2h" } else { "-2h" };
                let tag = if Some(victim) == leader {
                    " (leader)"
                } else {
                    ""
                };
                println!("[{:7.3}] step {name}'s wall clock {offset}{tag}", secs(t));
                cluster.step_clock(victim, offset)?;
                tokio::time::sleep(ms(rng.between(3000, 6000))).await;
                cluster.step_clock(victim, "+0")?;
                format!("{name}'s wall clock back to true time")
            }
            _ => {
                let order = shuffled(rng, n);
                let desc = match rng.below(3) {
                    0 => {
                        // Majority / minority.
                        let (minority, majority) = order.split_at(n / 2);
                        for &a in minority {
                            for &b in majority {
                                cluster.cut(a, b);
                            }
                        }
                        format!(
                            "partition {} | {}",
                            names(cluster, minority),
                            names(cluster, majority)
                        )
                    }
                    1 => {
                        let l = leader.unwrap_or(order[0]);
                        for b in (0..n).filter(|&b| b != l) {
                            cluster.cut(l, b);
                        }
                        format!(
                            "isolate {}{}",
                            cluster.members[l].name,
                            if leader.is_some() { " (leader)" } else { "" }
                        )
                    }
                    _ => {
                        // Bridge: two halves that see only the bridge member.
                        let bridge = order[0];
                        let rest = &order[1..];
                        let (a, b) = rest.split_at(rest.len() / 2);
                        for &x in a {
                            for &y in b {
                                cluster.cut(x, y);
                            }
                        }
                        format!(
                            "bridge {} - {} - {}",
                            names(cluster, a),
                            cluster.members[bridge].name,
                            names(cluster, b)
                        )
                    }
                };
                println!("[{:7.3}] {desc}", secs(t));
                tokio::time::sleep(ms(rng.between(2000, 5000))).await;
                cluster.heal_links();
                format!("heal of {desc}")
            }
        };
        let at = shared.now();
        println!("[{:7.3}] {what}", secs(at));
        heals.push(Heal { at, what });
    }
}

/// The power-loss test: writers on distinct keys, every member SIGKILLed
/// at once, restart, every acknowledged write read back.
async fn power_loss(config: ClusterConfig, seed: u64) -> anyhow::Result<ExitCode> {
    const WRITERS: usize = 4;
    let nodes = config.nodes;
    println!(
        "power loss: {nodes} nodes, {WRITERS} writers, seed {seed}, dir {}",
        config.dir.display()
    );
    let mut cluster = Cluster::start(config).await?;
    if !cluster.wait_all_healthy(Duration::from_secs(30)).await {
        bail!("the cluster never became healthy");
    }
    let urls: Arc<Vec<String>> = Arc::new((0..nodes).map(|i| cluster.client_url(i)).collect());
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (urls, acked, stop) = (Arc::clone(&urls), Arc::clone(&acked), Arc::clone(&stop));
            let mut rng = Rng::new(seed.wrapping_add(w as u64 + 1));
            tokio::spawn(async move {
                let mut conn = None;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Some(kv) = conn.as_mut() else {
                        conn =
                            workload::connect(&urls[rng.below(urls.len() as u64) as usize]).await;
                        if conn.is_none() {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        continue;
                    };
                    i += 1;
                    let key = format!("pl-{w}-{i}");
                    let value = (w as u64) << 40 | i;
                    if workload::write(kv, &key, value).await.is_some() {
                        if let Ok(mut a) = acked.lock() {
                            a.push((key, value));
                        }
                    } else {
                        conn = None;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = acked.lock().map(|a| a.len()).unwrap_or(0);
    cluster.kill_all();
    println!("SIGKILL every member at once ({before} writes acknowledged so far)");
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let abort = w.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), w)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let acked: Vec<(String, u64)> = acked.lock().map(|a| a.clone()).unwrap_or_default();
    cluster.heal_all()?;
    let restarted = Instant::now();
    if !cluster.wait_all_healthy(Duration::from_secs(30)).await {
        bail!("the cluster never became healthy after the restart");
    }
    println!(
        "restarted every member; healthy after {:.3} s",
        restarted.elapsed().as_secs_f64()
    );
    let (mut found, mut missing, mut wrong) = (0usize, Vec::new(), 0usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut member = 0;
    let mut conn = None;
    for (key, value) in &acked {
        loop {
            if Instant::now() > deadline {
                bail!("could not read back the acknowledged writes in time");
            }
            let Some(kv) = conn.as_mut() else {
                member = (member + 1) % nodes;
                conn = workload::connect(&urls[member]).await;
                continue;
            };
            match workload::read(kv, key, false).await {
                Ok(Some(v)) if v == *value => found += 1,
                Ok(Some(_)) => wrong += 1,
                Ok(None) => missing.push(key.clone()),
                Err(_) => {
                    conn = None;
                    continue;
                }
            }
            break;
        }
    }
    drop(cluster);
    println!(
        "writes acknowledged: {}; found after restart: {found}; missing: {}; wrong value: {wrong}",
        acked.len(),
        missing.len()
    );
    if !missing.is_empty() {
        println!(
            "missing keys (first 10): {:?}",
            &missing[..missing.len().min(10)]
        );
    }
    let ok = missing.is_empty() && wrong == 0 && !acked.is_empty();
    println!("power loss: {}", if ok { "PASS" } else { "FAIL" });
    Ok(ExitCode::from(if ok { 0 } else { 1 }))
}
