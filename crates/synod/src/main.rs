//! synod: a Paxos-replicated key-value store, and a laboratory of the
//! protocols it is built from. This binary is its front door.

mod sim_cmd;

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
    /// Run the deterministic simulator over many seeds, or trace one.
    Sim(sim_cmd::SimArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sim(args) => sim_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
