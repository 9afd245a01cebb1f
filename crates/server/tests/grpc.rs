//! The generated etcd API end to end: a tonic server with a tiny in-test KV
//! service, called through the generated client over loopback TCP.

mod common;

use std::time::Duration;

use server::proto::etcdserverpb::kv_client::KvClient;
use server::proto::etcdserverpb::kv_server::KvServer;
use server::proto::etcdserverpb::{PutRequest, RangeRequest, TxnRequest};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// Bounds the whole test so a hang fails instead of running forever.
const TEST_BOUND: Duration = Duration::from_secs(30);

#[tokio::test]
async fn kv_put_and_range_round_trip_binary_keys() {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(
        Server::builder()
            .add_service(KvServer::new(common::MapKv::default()))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stop_rx.await;
            }),
    );

    tokio::time::timeout(TEST_BOUND, async {
        let mut client = KvClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        let keys: [&[u8]; 4] = [b"plain", b"nul\0inside", b"\0", &[0xff, 0xfe, 0x00, 0x80]];
        for (i, key) in keys.iter().enumerate() {
            let value = [key, &b"\0\xff"[..]].concat();
            let put = client
                .put(PutRequest {
                    key: key.to_vec(),
                    value: value.clone(),
                    prev_kv: true,
                    ..Default::default()
                })
                .await
                .expect("put")
                .into_inner();
            assert_eq!(put.header.expect("header").revision, i as i64 + 1);
            assert!(put.prev_kv.is_none(), "first put has no previous value");

            let range = client
                .range(RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })
                .await
                .expect("range")
                .into_inner();
            assert_eq!(range.count, 1);
            assert_eq!(range.kvs[0].key, key.to_vec());
            assert_eq!(range.kvs[0].value, value);
            assert_eq!(range.kvs[0].version, 1);
        }

        // Overwrite returns the previous value intact.
        let put = client
            .put(PutRequest {
                key: vec![0xff, 0xfe, 0x00, 0x80],
                value: b"new".to_vec(),
                prev_kv: true,
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        let prev = put.prev_kv.expect("prev_kv");
        assert_eq!(
            prev.value,
            [&[0xff, 0xfe, 0x00, 0x80][..], b"\0\xff"].concat()
        );

        // A range over everything sees the keys in byte order.
        let all = client
            .range(RangeRequest {
                key: vec![0],
                range_end: vec![0xff, 0xff],
                ..Default::default()
            })
            .await
            .expect("range")
            .into_inner();
        let got: Vec<Vec<u8>> = all.kvs.into_iter().map(|kv| kv.key).collect();
        let mut want: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        want.sort();
        assert_eq!(got, want);

        // Errors carry their code and message through.
        let empty = client
            .put(PutRequest::default())
            .await
            .expect_err("empty key");
        assert_eq!(empty.code(), tonic::Code::InvalidArgument);
        assert_eq!(empty.message(), "etcdserver: key is not provided");
        let txn = client.txn(TxnRequest::default()).await.expect_err("txn");
        assert_eq!(txn.code(), tonic::Code::Unimplemented);
    })
    .await
    .expect("test finished within its bound");

    let _ = stop_tx.send(());
    served.await.expect("server task").expect("server ran");
}

#[test]
fn services_are_named_as_etcd_names_them() {
    use server::proto::etcdserverpb::{
        cluster_server, kv_server, lease_server, maintenance_server, watch_server,
    };
    assert_eq!(kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(maintenance_server::SERVICE_NAME, "etcdserverpb.Maintenance");
}
