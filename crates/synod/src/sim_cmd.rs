//! `synod sim`: many seeds with a progress bar and a summary, or one seed
//! traced message by message.

use std::io::IsTerminal;
use std::ops::Range;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use paxos::multi::Bug;
use sim::{Nemesis, RunReport, SimConfig};

/// Arguments of `synod sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Seeds to run, as `A..B` (B excluded) or `A..=B`.
    #[arg(long, default_value = "1..100", conflicts_with = "seed")]
    seeds: String,
    /// Run one seed only (with --trace to print it message by message).
    #[arg(long)]
    seed: Option<u64>,
    /// Faults to inject: all, none, or a comma list of crash, partition,
    /// loss, duplicate, delay, disk, clock, membership.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Replicas in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 5)]
    clients: usize,
    /// Milliseconds a client waits, at most, between operations (0: a
    /// closed loop as tight as the cluster allows).
    #[arg(long, default_value_t = 20.0)]
    think_ms: f64,
    /// Virtual seconds with faults on, before everything heals.
    #[arg(long, default_value_t = 4.0)]
    fault_secs: f64,
    /// Print the run message by message (with --seed).
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Write the run's client history to this file, as JSON lines that
    /// `synod check` reads (with --seed).
    #[arg(long, requires = "seed")]
    history: Option<std::path::PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run a deliberately broken protocol, to watch the checkers catch it.
    #[arg(long, value_enum)]
    bug: Option<BugArg>,
    /// Batch commands as the server does: a leader queues them and opens
    /// slots for the lot this many virtual milliseconds after the first
    /// (default: a slot per command as it arrives).
    #[arg(long)]
    batch_ms: Option<f64>,
}

/// The broken variants, as named on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum BugArg {
    /// Acceptors forget their promise on restart.
    ForgetPromise,
    /// A new leader does not adopt the values phase 1 reported.
    SkipAdoption,
    /// Replicas apply decisions as they learn them, out of order.
    ApplyOutOfOrder,
    /// A leader serves linearizable reads from its store, unconfirmed.
    LeaderLocalRead,
    /// A follower serves a read before its store applied the read index.
    FollowerReadAtCoreApplied,
    /// A re-forwarded command goes under a fresh session.
    ReforwardTwice,
    /// Watchers miss the last command's events of a slot with several.
    WatchDropsBatchTail,
    /// A follower's clock decides a lease's expiry.
    LeaseExpiryByFollowerClock,
    /// A leader opens slots past an undecided configuration change and
    /// counts their votes by whatever configuration it knows then.
    ConfigAppliesAtDecide,
    /// A learner's vote counts toward a quorum.
    LearnerVotes,
    /// A candidate completes phase 1 with the newest configuration it has
    /// heard of, without a quorum of the one in force.
    SkipOldConfigPhase1,
}

impl From<BugArg> for Bug {
    fn from(b: BugArg) -> Bug {
        match b {
            BugArg::ForgetPromise => Bug::ForgetPromise,
            BugArg::SkipAdoption => Bug::SkipAdoption,
            BugArg::ApplyOutOfOrder => Bug::ApplyOutOfOrder,
            BugArg::LeaderLocalRead => Bug::LeaderLocalRead,
            BugArg::FollowerReadAtCoreApplied => Bug::FollowerReadAtCoreApplied,
            BugArg::ReforwardTwice => Bug::ReforwardTwice,
            BugArg::WatchDropsBatchTail => Bug::WatchDropsBatchTail,
            BugArg::LeaseExpiryByFollowerClock => Bug::LeaseExpiryByFollowerClock,
            BugArg::ConfigAppliesAtDecide => Bug::ConfigAppliesAtDecide,
            BugArg::LearnerVotes => Bug::LearnerVotes,
            BugArg::SkipOldConfigPhase1 => Bug::SkipOldConfigPhase1,
        }
    }
}

fn parse_seeds(s: &str) -> anyhow::Result<Range<u64>> {
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        bail!("--seeds takes a range like 1..1000, not {s:?}");
    };
    let a: u64 = a
        .trim()
        .parse()
        .with_context(|| format!("bad start in --seeds {s:?}"))?;
    let b: u64 = b
        .trim()
        .parse()
        .with_context(|| format!("bad end in --seeds {s:?}"))?;
    let end = if inclusive { b.saturating_add(1) } else { b };
    if end <= a {
        bail!("--seeds {s:?} is empty");
    }
    Ok(a..end)
}

/// Totals over many runs.
#[derive(Default)]
struct Totals {
    runs: u64,
    failed: Vec<u64>,
    undecided: Vec<u64>,
    attempted: u64,
    ok: u64,
    fail: u64,
    info: u64,
    commits: u64,
    largest_batch: usize,
    watch_events: u64,
    leases: u64,
    leader_changes: u64,
    member_changes: u64,
    member_changes_max: u64,
    crashes: u64,
    refused_starts: u64,
    sim_us: u64,
    cpu: Duration,
    check: Duration,
    recovery_us: Vec<u64>,
}

/// Runs `synod sim`.
pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let nemesis: Nemesis = args
        .nemesis
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    if !(args.fault_secs >= 0.0 && args.fault_secs <= 3600.0) {
        bail!("--fault-secs must be between 0 and 3600");
    }
    if !(args.think_ms >= 0.0 && args.think_ms <= 60_000.0) {
        bail!("--think-ms must be between 0 and 60000");
    }
    if let Some(ms) = args.batch_ms
        && !(ms > 0.0 && ms <= 1_000.0)
    {
        bail!("--batch-ms must be above 0 and at most 1000");
    }
    let config = SimConfig {
        nodes: args.nodes as usize,
        clients: args.clients.clamp(1, 64),
        fault_us: (args.fault_secs * 1e6) as u64,
        think_us_max: (args.think_ms * 1e3) as u64,
        nemesis: nemesis.clone(),
        bug: args.bug.map(Bug::from),
        trace: args.trace,
        batch_us: args.batch_ms.map(|ms| ((ms * 1e3) as u64).max(1)),
        ..SimConfig::default()
    };
    let replay = |seed: u64| {
        let bug = args
            .bug
            .map(|b| {
                format!(
                    " --bug {}",
                    b.to_possible_value()
                        .map(|v| v.get_name().to_string())
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let batch = args
            .batch_ms
            .map(|ms| format!(" --batch-ms {ms}"))
            .unwrap_or_default();
        format!(
            "synod sim --seed {seed} --nemesis {nemesis} --nodes {} --clients {} --think-ms {} --fault-secs {}{bug}{batch} --trace",
            args.nodes, args.clients, args.think_ms, args.fault_secs
        )
    };

    if config.bug.is_some() {
        // A broken variant trips the code's own assertions; each is
        // reported as the run's violation, not printed as a crash.
        std::panic::set_hook(Box::new(|_| {}));
    }
    if let Some(seed) = args.seed {
        let started = Instant::now();
        let report = sim::run(seed, &config);
        if let Some(trace) = &report.trace {
            for line in trace {
                println!("{line}");
            }
        }
        if let Some(path) = &args.history {
            // Virtual microseconds become the format's nanoseconds.
            let history: Vec<check::Operation> = report
                .history
                .iter()
                .cloned()
                .map(|mut op| {
                    op.invoke *= 1000;
                    op.complete = op.complete.map(|t| t * 1000);
                    op
                })
                .collect();
            let mut out = String::new();
            check::history::write(&history, &mut out);
            std::fs::write(path, out)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let mut totals = Totals::default();
        add(&mut totals, seed, &report, started.elapsed());
        print_failures(seed, &report, &replay);
        print_summary(&totals, &config);
        return Ok(if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    let seeds = parse_seeds(&args.seeds)?;
    let count = seeds.end - seeds.start;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(count);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} seeds  {msg}  [{elapsed_precise}, eta {eta}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let next = AtomicU64::new(seeds.start);
    let totals = Mutex::new(Totals::default());
    let wall = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let started = Instant::now();
                    let report = sim::run(seed, &config);
                    let cpu = started.elapsed();
                    if !report.passed() {
                        bar.suspend(|| print_failures(seed, &report, &replay));
                    }
                    let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                    add(&mut t, seed, &report, cpu);
                    bar.set_message(format!("{} violations", t.failed.len()));
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    let totals = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    print_summary(&totals, &config);
    println!(
        "wall time: {:.1} s on {jobs} threads",
        wall.elapsed().as_secs_f64()
    );
    Ok(if totals.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn add(t: &mut Totals, seed: u64, report: &RunReport, cpu: Duration) {
    t.runs += 1;
    if !report.passed() {
        t.failed.push(seed);
    }
    if report.undecided {
        t.undecided.push(seed);
    }
    t.attempted += report.ops_attempted;
    t.ok += report.ok;
    t.fail += report.fail;
    t.info += report.info;
    t.commits += report.commits;
    t.largest_batch = t.largest_batch.max(report.largest_batch);
    t.watch_events += report.watch_events;
    t.leases += report.leases;
    t.leader_changes += report.leader_changes;
    t.member_changes += report.member_changes;
    t.member_changes_max = t.member_changes_max.max(report.member_changes);
    t.crashes += report.crashes;
    t.refused_starts += report.refused_starts;
    t.sim_us += report.sim_time_us;
    t.cpu += cpu.saturating_sub(report.check_time);
    t.check += report.check_time;
    if let Some(r) = report.recovery_us {
        t.recovery_us.push(r);
    }
}

fn print_failures(seed: u64, report: &RunReport, replay: &dyn Fn(u64) -> String) {
    if report.passed() {
        return;
    }
    let first = &report.violations[0];
    println!(
        "seed {seed}: VIOLATION at {:.3} ms: {}{}\n  replay: {}",
        first.time_us as f64 / 1000.0,
        first.what,
        if report.violations.len() > 1 {
            format!(" (+{} more)", report.violations.len() - 1)
        } else {
            String::new()
        },
        replay(seed)
    );
}

fn print_summary(t: &Totals, config: &SimConfig) {
    let completed = t.ok + t.fail;
    let sim_secs = t.sim_us as f64 / 1e6;
    let cpu_secs = t.cpu.as_secs_f64().max(1e-9);
    let mut recovery = t.recovery_us.clone();
    recovery.sort_unstable();
    let median_recovery = recovery.get(recovery.len() / 2).copied().unwrap_or(0);
    let max_recovery = recovery.last().copied().unwrap_or(0);
    println!(
        "{} runs, {} nodes, nemesis {}: {} with violations, {} undecided by the checker",
        t.runs,
        config.nodes,
        config.nemesis,
        t.failed.len(),
        t.undecided.len()
    );
    println!(
        "operations: {} attempted, {} completed ({:.1}%): {} ok, {} fail, {} info",
        t.attempted,
        completed,
        100.0 * completed as f64 / (t.attempted.max(1)) as f64,
        t.ok,
        t.fail,
        t.info
    );
    println!(
        "leader changes: {} ({:.2} per run); crashes: {}; starts refused on corrupt data: {}; recovery after heal: median {:.0} ms, max {:.0} ms",
        t.leader_changes,
        t.leader_changes as f64 / t.runs.max(1) as f64,
        t.crashes,
        t.refused_starts,
        median_recovery as f64 / 1000.0,
        max_recovery as f64 / 1000.0
    );
    if t.member_changes > 0 {
        println!(
            "configuration changes: {} applied ({:.2} per run, at most {} in one)",
            t.member_changes,
            t.member_changes as f64 / t.runs.max(1) as f64,
            t.member_changes_max
        );
    }
    println!(
        "commits: {} slots, {:.0} per simulated second, {:.0} per CPU-second of simulation; the fullest slot held {} command{}",
        t.commits,
        t.commits as f64 / sim_secs.max(1e-9),
        t.commits as f64 / cpu_secs,
        t.largest_batch,
        if t.largest_batch == 1 { "" } else { "s" }
    );
    println!(
        "watches: {} events seen by the watchers, each checked against the committed history; leases: {} granted, kept alive and seen gone, none early or late",
        t.watch_events, t.leases
    );
    println!(
        "CPU time: {:.1} s simulating, {:.1} s checking linearizability",
        t.cpu.as_secs_f64(),
        t.check.as_secs_f64()
    );
    if !t.failed.is_empty() {
        let shown: Vec<String> = t.failed.iter().take(20).map(|s| s.to_string()).collect();
        println!("failing seeds: {}", shown.join(" "));
    }
}
