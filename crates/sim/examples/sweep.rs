//! Runs a range of seeds with every fault on and prints how many failed
//! and the first violation: the simulator alone, without the server, so
//! that `scripts/mutants.sh` rebuilds little for each mutant.
//!
//! `cargo run --release -p sim --example sweep -- NODES FIRST END`

use sim::{Nemesis, SimConfig};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or(0))
        .collect();
    let (nodes, first, end) = match args.as_slice() {
        [nodes, first, end] => (*nodes as usize, *first, *end),
        _ => {
            eprintln!("usage: sweep NODES FIRST END");
            std::process::exit(2);
        }
    };
    let config = SimConfig {
        nodes,
        nemesis: Nemesis::all(),
        ..SimConfig::default()
    };
    // A broken variant trips the code's own assertions; each is the run's
    // violation, not a crash to print.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = 0;
    let mut first_violation = None;
    for seed in first..end {
        let report = sim::run(seed, &config);
        if let Some(v) = report.violations.first() {
            failed += 1;
            first_violation.get_or_insert_with(|| format!("seed {seed}: {}", v.what));
        }
    }
    println!("{failed} with violations of {} runs", end - first);
    if let Some(v) = first_violation {
        println!("{v}");
    }
}
