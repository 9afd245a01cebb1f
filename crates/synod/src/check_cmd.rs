//! `synod check FILE`: is a recorded history linearizable?
//!
//! Exit status: 0 linearizable, 1 not, 2 malformed file (with the line and
//! the reason), 3 the search gave up undecided.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use check::{Limits, Verdict};
use clap::Args;

/// Arguments of `synod check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The history, as JSON lines (see docs/HISTORY.md).
    file: PathBuf,
    /// Search steps per key before giving up undecided.
    #[arg(long, default_value_t = Limits::default().max_steps_per_key)]
    max_steps_per_key: u64,
}

/// Runs `synod check`.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let ops = match check::history::parse(&text) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("{}: malformed history: {e}", args.file.display());
            return Ok(ExitCode::from(2));
        }
    };
    let limits = Limits {
        max_steps_per_key: args.max_steps_per_key,
    };
    let report = check::check(&ops, &limits);
    println!(
        "{} operations on {} keys: {} ok, {} fail, {} info ({} search steps)",
        report.ops, report.keys, report.ok, report.fail, report.info, report.steps
    );
    let code = match &report.verdict {
        Verdict::Linearizable => 0,
        Verdict::NotLinearizable { .. } => 1,
        Verdict::Unknown { .. } => 3,
    };
    println!("{}", report.verdict);
    Ok(ExitCode::from(code))
}
