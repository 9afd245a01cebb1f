//! `synod bench floor`: what one replicated write costs at the least on
//! this machine, measured by the same tool as the load: one append plus
//! fdatasync in the data directory's file system, and one unary gRPC round
//! trip over loopback to a server that does no work. A write's latency
//! cannot go below their sum; the comparison prints it beside the
//! single-client put figures.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use server::api::{self, MemBackend, MemConfig};
use server::proto::etcdserverpb::RangeRequest;
use server::proto::etcdserverpb::kv_client::KvClient;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use super::record::{self, FloorRecord, Record};
use super::stats::Latency;

/// Arguments of `synod bench floor`.
#[derive(Args, Debug)]
pub struct FloorArgs {
    /// A directory on the disk the members keep their data on.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Samples of each measurement.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// Bytes per append.
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Label recorded with the results.
    #[arg(long, default_value = "floor")]
    label: String,
    /// Append the results as one JSON line to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs `synod bench floor`.
pub fn run(args: FloorArgs) -> anyhow::Result<ExitCode> {
    let samples = args.samples.max(1);
    let fsync = append_fdatasync(&args, samples)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let grpc = runtime.block_on(grpc_round_trips(samples))?;
    let floor = FloorRecord {
        label: args.label.clone(),
        floor_p50_ms: fsync.p50 + grpc.p50,
        fsync_ms: fsync,
        grpc_ms: grpc,
    };
    println!(
        "append {} B + fdatasync in {}: p50 {:.3} ms  p99 {:.3} ms",
        args.val_size,
        args.dir.display(),
        floor.fsync_ms.p50,
        floor.fsync_ms.p99
    );
    println!(
        "loopback gRPC round trip:            p50 {:.3} ms  p99 {:.3} ms",
        floor.grpc_ms.p50, floor.grpc_ms.p99
    );
    println!(
        "floor of one write (sum of medians):  {:.3} ms",
        floor.floor_p50_ms
    );
    if let Some(path) = &args.json {
        record::append(path, &Record::Floor(floor))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Appends `val_size` bytes and fdatasyncs, `samples` times, in a scratch
/// file that is removed afterwards.
fn append_fdatasync(args: &FloorArgs, samples: usize) -> anyhow::Result<Latency> {
    let path = args
        .dir
        .join(format!(".synod-floor-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let record = vec![0x5a; args.val_size];
    let mut took = Vec::with_capacity(samples);
    let result = (|| -> std::io::Result<()> {
        for _ in 0..samples {
            let start = Instant::now();
            file.write_all(&record)?;
            file.sync_data()?;
            took.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result.with_context(|| format!("append + fdatasync in {}", path.display()))?;
    took.sort_unstable();
    Ok(Latency::of_sorted(&took))
}

/// Unary round trips to an in-process etcd API over an empty in-memory
/// store, on a loopback socket.
async fn grpc_round_trips(samples: usize) -> anyhow::Result<Latency> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a loopback port")?;
    let addr = listener.local_addr()?;
    let backend = Arc::new(MemBackend::new(MemConfig::default()));
    let config = backend.config().clone();
    let routes = api::routes(backend, config.cluster_id, config.member_id);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    let mut kv = KvClient::new(super::connect(&format!("http://{addr}")).await?);
    let request = RangeRequest {
        key: b"floor".to_vec(),
        serializable: true,
        ..Default::default()
    };
    // Warm the connection first.
    for _ in 0..100 {
        kv.range(request.clone()).await?;
    }
    let mut took = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        kv.range(request.clone()).await?;
        took.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    let _ = stop.send(());
    let _ = server.await;
    took.sort_unstable();
    Ok(Latency::of_sorted(&took))
}
