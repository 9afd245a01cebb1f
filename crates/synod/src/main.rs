//! synod: a Paxos-replicated key-value store, and a laboratory of the
//! protocols it is built from. This binary is its front door.

mod bench;
mod check_cmd;
mod node_cmd;
mod rng;
mod sim_cmd;
mod torture;

use clap::{Parser, Subcommand};

/// synod's command line.
#[derive(Parser, Debug)]
#[command(
    name = "synod",
    version,
    about = "A Paxos-replicated key-value store speaking etcd's v3 API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a 3-member cluster on loopback (etcd's demo ports) and print
    /// what to try.
    Demo(node_cmd::DemoArgs),
    /// Run one member, configured with etcd's flags.
    Node(node_cmd::NodeArgs),
    /// Run the deterministic simulator over many seeds, or trace one.
    Sim(sim_cmd::SimArgs),
    /// Check a recorded history (JSON lines) for linearizability.
    Check(check_cmd::CheckArgs),
    /// Drive an etcd v3 endpoint (synod or etcd) with a closed-loop load
    /// and report throughput and latency; also `bench floor` and
    /// `bench compare`.
    Bench(bench::BenchArgs),
    /// Run real members under crashes, pauses and partitions, record a
    /// client history and check it.
    Torture(torture::TortureArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim_cmd::run(args),
        Command::Check(args) => check_cmd::run(args),
        Command::Torture(args) => torture::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Node(args) => serve(args.log_level.level(), || node_cmd::node(args)),
        Command::Demo(args) => serve(args.log_level.level(), || node_cmd::demo(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Runs a server command on a multi-threaded runtime, with logs on stderr
/// up to `level` (`--log-level`).
fn serve<F, Fut>(level: tracing::Level, run: F) -> anyhow::Result<std::process::ExitCode>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<std::process::ExitCode>>,
{
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}
