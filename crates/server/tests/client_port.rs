//! gRPC and plain HTTP/1.1 on one client port, as etcd serves them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use server::client_port::{self, ClientPortConfig, Health};
use server::proto::etcdserverpb::kv_client::KvClient;
use server::proto::etcdserverpb::kv_server::KvServer;
use server::proto::etcdserverpb::{PutRequest, RangeRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bounds the whole test so a hang fails instead of running forever.
const TEST_BOUND: Duration = Duration::from_secs(30);

/// One HTTP/1.1 GET; returns the whole response as text.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: synod\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

/// Connects a gRPC client, puts `key` = "v" and reads it back; returns the
/// client, whose connection stays open while it lives.
async fn put_and_read_back(
    addr: std::net::SocketAddr,
    key: &[u8],
) -> KvClient<tonic::transport::Channel> {
    let mut client = KvClient::connect(format!("http://{addr}"))
        .await
        .expect("grpc connect");
    client
        .put(PutRequest {
            key: key.to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .expect("put");
    let range = client
        .range(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    assert_eq!(range.kvs[0].value, b"v");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_grpc_share_one_port() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let healthy = Arc::new(AtomicBool::new(true));
    let health: client_port::HealthFn = {
        let healthy = Arc::clone(&healthy);
        Arc::new(move || {
            if healthy.load(Ordering::Relaxed) {
                Health::ok()
            } else {
                Health {
                    healthy: false,
                    reason: "no leader".into(),
                }
            }
        })
    };
    let metrics: client_port::MetricsFn = Arc::new(|| "synod_test_metric 42\n".to_string());
    let grpc = tonic::service::Routes::new(KvServer::new(common::MapKv::default()));
    let router = client_port::router(grpc, health, metrics);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(client_port::serve(
        listener,
        router,
        ClientPortConfig::default(),
        async {
            let _ = stop_rx.await;
        },
    ));

    tokio::time::timeout(TEST_BOUND, async {
        let response = http_get(addr, "/health").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("content-type: application/json")
        );
        assert!(
            response.ends_with(r#"{"health":"true","reason":""}"#),
            "{response}"
        );

        healthy.store(false, Ordering::Relaxed);
        let response = http_get(addr, "/health").await;
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        assert!(
            response.ends_with(r#"{"health":"false","reason":"no leader"}"#),
            "{response}"
        );

        let response = http_get(addr, "/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("synod_test_metric 42\n"), "{response}");

        // gRPC over HTTP/2 on the same port, while an HTTP/1.1 client also
        // holds a connection open.
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        let client = put_and_read_back(addr, b"k\0\xff").await;
        idle.write_all(b"GET /health HTTP/1.1\r\nHost: synod\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = Vec::new();
        idle.read_to_end(&mut response).await.expect("read");
        assert!(response.starts_with(b"HTTP/1.1 503"));

        // An unknown gRPC method answers Unimplemented, not an HTTP error.
        let unknown = http_get(addr, "/nothing-here").await;
        assert!(unknown.starts_with("HTTP/1.1 200 OK"), "{unknown}");
        assert!(
            unknown.to_ascii_lowercase().contains("grpc-status: 12"),
            "{unknown}"
        );
        drop(client);
    })
    .await
    .expect("test finished within its bound");

    let _ = stop_tx.send(());
    tokio::time::timeout(TEST_BOUND, served)
        .await
        .expect("serve stopped within its bound")
        .expect("serve task")
        .expect("serve ran");
}

/// Sends one HTTP/1.1 GET on an open connection, reads its answer, and
/// returns the last line of its body.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: synod\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "connection closed before the answer");
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((_, body)) = text.split_once("\r\n\r\n")
            && body.ends_with('\n')
        {
            return body.trim_end().lines().last().unwrap_or("").to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_connections_are_served_in_the_lane_and_the_rest_by_the_workers() {
    // The lane: a single-threaded runtime on a thread of its own, as the
    // node's driver is.
    let (lane_stop, lane_stopped) = tokio::sync::oneshot::channel::<()>();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let lane_thread = std::thread::Builder::new()
        .name("lane-thread".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("lane runtime");
            handle_tx.send(runtime.handle().clone()).expect("send");
            runtime.block_on(async {
                let _ = lane_stopped.await;
            });
        })
        .expect("lane thread");
    let lane = handle_rx.recv().expect("lane handle");

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    // /metrics answers with the name of the thread that serves it.
    let metrics: client_port::MetricsFn = Arc::new(|| {
        format!(
            "{}\n",
            std::thread::current().name().unwrap_or("unnamed thread")
        )
    });
    let grpc = tonic::service::Routes::new(KvServer::new(common::MapKv::default()));
    let router = client_port::router(grpc, Arc::new(Health::ok), metrics);
    let config = ClientPortConfig {
        lane: Some(client_port::Lane {
            runtime: lane,
            connections_max: 2,
        }),
        ..ClientPortConfig::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(client_port::serve(listener, router, config, async {
        let _ = stop_rx.await;
    }));

    tokio::time::timeout(TEST_BOUND, async {
        // gRPC first: it takes a place in the lane and works there.
        let client = put_and_read_back(addr, b"k").await;

        let mut second = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(get_on(&mut second, "/metrics").await, "lane-thread");
        // The lane is full: the third is served by a worker, and stays
        // there on its next request.
        let mut third = TcpStream::connect(addr).await.expect("connect");
        let worker = get_on(&mut third, "/metrics").await;
        assert_ne!(worker, "lane-thread");
        assert_ne!(get_on(&mut third, "/metrics").await, "lane-thread");
        assert_eq!(get_on(&mut second, "/metrics").await, "lane-thread");

        // A closed lane connection frees its place for a later one, once
        // the server has seen it close.
        drop(client);
        let mut freed = false;
        for _ in 0..200 {
            let mut next = TcpStream::connect(addr).await.expect("connect");
            if get_on(&mut next, "/metrics").await == "lane-thread" {
                freed = true;
                break;
            }
            drop(next);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(freed, "no later connection was served in the lane");
    })
    .await
    .expect("test finished within its bound");

    let _ = stop_tx.send(());
    tokio::time::timeout(TEST_BOUND, served)
        .await
        .expect("serve stopped within its bound")
        .expect("serve task")
        .expect("serve ran");
    let _ = lane_stop.send(());
    lane_thread.join().expect("lane thread");
}
