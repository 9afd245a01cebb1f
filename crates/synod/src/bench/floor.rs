//! `synod bench floor`: what one write costs at the least on this
//! machine, measured by the same tool as the load: one append plus
//! fdatasync in the data directory's file system, and one unary gRPC round
//! trip over loopback to a server that does no work. A write's latency
//! cannot go below their sum; the comparison prints it beside the
//! single-client put figures.
//!
//! A write replicated by three members on one disk needs more: a round
//! trip between members, and a follower's fsync while the other two
//! members sync too. Those are measured alike and summed as the
//! replicated floor.

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
    let peer = runtime.block_on(peer_round_trips(samples))?;
    let fsync_of_three = fdatasync_of_three(&args, samples)?;
    let floor = FloorRecord {
        label: args.label.clone(),
        floor_p50_ms: fsync.p50 + grpc.p50,
        replicated_floor_p50_ms: Some(grpc.p50 + peer.p50 + fsync_of_three.p50),
        fsync_ms: fsync,
        grpc_ms: grpc,
        fsync_of_three_ms: Some(fsync_of_three),
        peer_round_trip_ms: Some(peer),
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
    println!(
        "append + fdatasync, 3 writers at once: p50 {:.3} ms  p99 {:.3} ms",
        fsync_of_three.p50, fsync_of_three.p99
    );
    println!(
        "loopback TCP round trip (64 B):       p50 {:.3} ms  p99 {:.3} ms",
        peer.p50, peer.p99
    );
    println!(
        "floor of a write by 3 members on one disk (gRPC + TCP round trips + fdatasync of 3): {:.3} ms",
        grpc.p50 + peer.p50 + fsync_of_three.p50
    );
    if let Some(path) = &args.json {
        record::append(path, &Record::Floor(Box::new(floor)))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Appends `val_size` bytes and fdatasyncs, `samples` times, in a scratch
/// file that is removed afterwards.
fn append_fdatasync(args: &FloorArgs, samples: usize) -> anyhow::Result<Latency> {
    let path = args
        .dir
        .join(format!(".synod-floor-{}", std::process::id()));
    let took = timed_appends(&path, args.val_size, samples);
    let _ = std::fs::remove_file(&path);
    let mut took = took.with_context(|| format!("append + fdatasync in {}", path.display()))?;
    took.sort_unstable();
    Ok(Latency::of_sorted(&took))
}

/// Appends and fdatasyncs in three files of the directory at once, each
/// from its own thread, `samples` times each; the latencies of all three.
fn fdatasync_of_three(args: &FloorArgs, samples: usize) -> anyhow::Result<Latency> {
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let path = args
                .dir
                .join(format!(".synod-floor-{}-{i}", std::process::id()));
            let val_size = args.val_size;
            std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
                let took = timed_appends(&path, val_size, samples);
                let _ = std::fs::remove_file(&path);
                took.with_context(|| format!("append + fdatasync in {}", path.display()))
            })
        })
        .collect();
    let mut took = Vec::with_capacity(3 * samples);
    for writer in writers {
        match writer.join() {
            Ok(samples) => took.extend(samples?),
            Err(_) => anyhow::bail!("a writer thread panicked"),
        }
    }
    took.sort_unstable();
    Ok(Latency::of_sorted(&took))
}

/// Creates `path` and times `samples` appends of `val_size` bytes, each
/// made durable with fdatasync, in nanoseconds.
fn timed_appends(
    path: &std::path::Path,
    val_size: usize,
    samples: usize,
) -> std::io::Result<Vec<u64>> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)?;
    let record = vec![0x5a; val_size];
    let mut took = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        took.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    Ok(took)
}

/// Round trips of a 64-byte frame between two loopback TCP sockets (no
/// Nagle), one side echoing, on the runtime's worker threads.
async fn peer_round_trips(samples: usize) -> anyhow::Result<Latency> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const FRAME: usize = 64;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind a loopback port")?;
    let addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut frame = [0u8; FRAME];
        loop {
            if socket.read_exact(&mut frame).await.is_err() {
                return Ok::<(), std::io::Error>(());
            }
            socket.write_all(&frame).await?;
        }
    });
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .context("cannot connect over loopback")?;
    socket.set_nodelay(true)?;
    let mut frame = [0x5au8; FRAME];
    let mut took = Vec::with_capacity(samples);
    for i in 0..samples + 100 {
        let start = Instant::now();
        socket.write_all(&frame).await?;
        socket.read_exact(&mut frame).await?;
        // The first hundred warm the connection.
        if i >= 100 {
            took.push(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
    }
    drop(socket);
    let _ = echo.await;
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
