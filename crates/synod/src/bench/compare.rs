//! `synod bench compare`: two systems' figures side by side, from the
//! results files `synod bench --json` appended to, with the ratio of each.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;

use super::record::{self, Record, RunRecord};

/// Arguments of `synod bench compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Results files (JSON lines from `synod bench --json`).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Label of the system measured.
    #[arg(long, default_value = "synod")]
    candidate: String,
    /// Label of the system it is measured against.
    #[arg(long, default_value = "etcd")]
    baseline: String,
    /// Print a Markdown table instead of plain text.
    #[arg(long)]
    markdown: bool,
}

/// Whether a larger figure is the better one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Higher,
    Lower,
}

/// One row: a figure of both systems.
struct Row {
    figure: String,
    candidate: f64,
    baseline: f64,
    better: Better,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.candidate / self.baseline
    }

    fn verdict(&self) -> &'static str {
        let ratio = self.ratio();
        if !ratio.is_finite() {
            return "";
        }
        match (self.better, ratio) {
            (_, r) if (r - 1.0).abs() < 0.005 => "same",
            (Better::Higher, r) if r > 1.0 => "better",
            (Better::Lower, r) if r < 1.0 => "better",
            _ => "worse",
        }
    }
}

/// The rows comparing one figure name.
fn rows(c: &RunRecord, b: &RunRecord) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut row = |what: &str, candidate: f64, baseline: f64, better: Better| {
        rows.push(Row {
            figure: format!("{} {what}", c.name),
            candidate,
            baseline,
            better,
        });
    };
    let (cr, br) = (&c.result, &b.result);
    row("ops/s", cr.throughput, br.throughput, Better::Higher);
    row(
        "p50 ms",
        cr.latency_ms.p50,
        br.latency_ms.p50,
        Better::Lower,
    );
    row(
        "p90 ms",
        cr.latency_ms.p90,
        br.latency_ms.p90,
        Better::Lower,
    );
    row(
        "p99 ms",
        cr.latency_ms.p99,
        br.latency_ms.p99,
        Better::Lower,
    );
    row(
        "p99.9 ms",
        cr.latency_ms.p999,
        br.latency_ms.p999,
        Better::Lower,
    );
    let (ce, be) = (cr.errors + cr.timeouts, br.errors + br.timeouts);
    if ce + be > 0 {
        row("errors+timeouts", ce as f64, be as f64, Better::Lower);
    }
    if let (Some(cw), Some(bw)) = (&c.watch, &b.watch) {
        row(
            "events/s",
            cw.events_per_sec,
            bw.events_per_sec,
            Better::Higher,
        );
        row(
            "delivery p50 ms",
            cw.delivery_ms.p50,
            bw.delivery_ms.p50,
            Better::Lower,
        );
        row(
            "delivery p99 ms",
            cw.delivery_ms.p99,
            bw.delivery_ms.p99,
            Better::Lower,
        );
    }
    let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
    if !c.rss_mib.is_empty() && !b.rss_mib.is_empty() {
        row(
            "RSS per member, max MiB",
            max(&c.rss_mib),
            max(&b.rss_mib),
            Better::Lower,
        );
        // A faster system holds more history after a run of the same
        // length: memory per revision held is the like-for-like figure.
        if cr.revision > 0 && br.revision > 0 {
            let per = |rss: f64, revisions: i64| rss * 1024.0 / revisions as f64;
            row(
                "revisions held (after run)",
                cr.revision as f64,
                br.revision as f64,
                Better::Higher,
            );
            row(
                "RSS KiB per revision held",
                per(max(&c.rss_mib), cr.revision),
                per(max(&b.rss_mib), br.revision),
                Better::Lower,
            );
        }
    }
    if !c.rss_settled_mib.is_empty() && !b.rss_settled_mib.is_empty() {
        let label = if c.rss_settle_ms == b.rss_settle_ms {
            format!(
                "RSS per member {} s after, max MiB",
                c.rss_settle_ms as f64 / 1000.0
            )
        } else {
            format!(
                "RSS per member {} / {} s after, max MiB",
                c.rss_settle_ms as f64 / 1000.0,
                b.rss_settle_ms as f64 / 1000.0
            )
        };
        row(
            &label,
            max(&c.rss_settled_mib),
            max(&b.rss_settled_mib),
            Better::Lower,
        );
    }
    rows
}

/// Runs `synod bench compare`.
pub fn run(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let mut records = Vec::new();
    for file in &args.files {
        records.extend(record::read_all(file)?);
    }
    let runs = |label: &str| -> Vec<RunRecord> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Run(run) if run.label == label => Some(run.as_ref().clone()),
                _ => None,
            })
            .collect()
    };
    let (candidates, baselines) = (runs(&args.candidate), runs(&args.baseline));
    let mut table = Vec::new();
    for c in &candidates {
        // The latest run of the same name, if the file holds several.
        if let Some(b) = baselines.iter().rev().find(|b| b.name == c.name) {
            table.extend(rows(c, b));
        }
    }
    if table.is_empty() {
        bail!(
            "no figure was measured for both {:?} and {:?} in {:?}",
            args.candidate,
            args.baseline,
            args.files
        );
    }
    let (cl, bl) = (&args.candidate, &args.baseline);
    if args.markdown {
        println!("| figure | {cl} | {bl} | {cl}/{bl} | |");
        println!("| --- | ---: | ---: | ---: | --- |");
        for r in &table {
            println!(
                "| {} | {} | {} | {:.2}x | {} |",
                r.figure,
                number(r.candidate),
                number(r.baseline),
                r.ratio(),
                r.verdict()
            );
        }
    } else {
        println!(
            "{:<40} {:>12} {:>12} {:>10}",
            "figure",
            cl,
            bl,
            format!("{cl}/{bl}")
        );
        for r in &table {
            println!(
                "{:<40} {:>12} {:>12} {:>9.2}x  {}",
                r.figure,
                number(r.candidate),
                number(r.baseline),
                r.ratio(),
                r.verdict()
            );
        }
    }
    for r in records.iter().filter_map(|r| match r {
        Record::Floor(f) => Some(f),
        _ => None,
    }) {
        println!(
            "floor ({}): append+fdatasync p50 {:.3} ms + loopback gRPC round trip p50 {:.3} ms = {:.3} ms",
            r.label, r.fsync_ms.p50, r.grpc_ms.p50, r.floor_p50_ms
        );
        if let (Some(three), Some(peer), Some(floor)) = (
            &r.fsync_of_three_ms,
            &r.peer_round_trip_ms,
            r.replicated_floor_p50_ms,
        ) {
            println!(
                "replicated floor ({}): gRPC round trip p50 {:.3} ms + loopback TCP round trip p50 {:.3} ms + append+fdatasync with 3 writers p50 {:.3} ms = {:.3} ms",
                r.label, r.grpc_ms.p50, peer.p50, three.p50, floor
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A figure printed with as many decimals as its size warrants.
fn number(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::Measured;

    #[test]
    fn verdicts_follow_the_direction_of_each_figure() {
        let row = |c, b, better| Row {
            figure: String::new(),
            candidate: c,
            baseline: b,
            better,
        };
        assert_eq!(row(2.0, 1.0, Better::Higher).verdict(), "better");
        assert_eq!(row(2.0, 1.0, Better::Lower).verdict(), "worse");
        assert_eq!(row(0.5, 1.0, Better::Lower).verdict(), "better");
        assert_eq!(row(1.001, 1.0, Better::Lower).verdict(), "same");
        assert_eq!(row(1.0, 0.0, Better::Lower).verdict(), "");
        assert_eq!(row(3.0, 2.0, Better::Higher).ratio(), 1.5);
    }

    fn run(label: &str, rss: Vec<f64>, settled: Vec<f64>) -> RunRecord {
        RunRecord {
            label: label.into(),
            name: "put c=1".into(),
            workload: "put".into(),
            consistency: None,
            clients: 1,
            conns: 1,
            key_space: 10,
            val_size: 8,
            target: "leader".into(),
            endpoints: Vec::new(),
            result: Measured {
                revision: 11,
                ..Measured::default()
            },
            watch: None,
            rss_mib: rss,
            rss_settle_ms: 3000,
            rss_settled_mib: settled,
        }
    }

    #[test]
    fn memory_read_again_after_the_run_gets_its_own_row_when_both_have_it() {
        let synod = run("synod", vec![140.0, 120.0], vec![118.0, 110.0]);
        let etcd = run("etcd", vec![150.0], vec![145.0]);
        let both = rows(&synod, &etcd);
        let settled = both
            .iter()
            .find(|r| r.figure == "put c=1 RSS per member 3 s after, max MiB")
            .expect("a row for the memory read after the run");
        assert_eq!((settled.candidate, settled.baseline), (118.0, 145.0));
        assert_eq!(settled.verdict(), "better");
        let now = both
            .iter()
            .find(|r| r.figure == "put c=1 RSS per member, max MiB")
            .expect("the row for the memory read right after");
        assert_eq!((now.candidate, now.baseline), (140.0, 150.0));

        let without = run("etcd", vec![150.0], Vec::new());
        assert!(
            !rows(&synod, &without)
                .iter()
                .any(|r| r.figure.contains(" s after")),
            "no row when one side was not read again"
        );
    }
}
