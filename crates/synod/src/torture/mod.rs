//! `synod torture`: real `synod node` processes under crashes, pauses and
//! partitions while clients record every operation; then the history is
//! checked.

use std::process::ExitCode;

use clap::Args;

/// Arguments of `synod torture`.
#[derive(Args, Debug)]
pub struct TortureArgs {
    /// Seed of the nemesis schedule and the workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs `synod torture`.
pub fn run(args: TortureArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("synod torture (seed {}) is not built yet", args.seed)
}
