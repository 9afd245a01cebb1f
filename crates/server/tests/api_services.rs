//! The etcd services end to end: `api::routes` over a `MemBackend`, served
//! by tonic on loopback and driven with the generated etcd clients.

use std::sync::Arc;
use std::time::Duration;

use server::api::snapshot_file;
use server::api::{self, ApiConfig, Backend, MemBackend, MemConfig};
use server::proto::etcdserverpb as pb;
use server::proto::etcdserverpb::cluster_client::ClusterClient;
use server::proto::etcdserverpb::kv_client::KvClient;
use server::proto::etcdserverpb::lease_client::LeaseClient;
use server::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use server::proto::etcdserverpb::watch_client::WatchClient;
use server::proto::mvccpb;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tonic::Code;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};

/// Bounds each test so a hang fails instead of running forever.
const TEST_BOUND: Duration = Duration::from_secs(60);

/// A served backend and a channel to it.
struct Served {
    backend: Arc<MemBackend>,
    channel: Channel,
    config: ApiConfig,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Served {
    fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone())
    }
    fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone())
    }
    fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone())
    }
    fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone())
    }
    fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone())
    }
}

async fn serve_with(backend: MemBackend, configure: impl FnOnce(&mut ApiConfig)) -> Served {
    let backend = Arc::new(backend);
    let mut config = ApiConfig::new(backend.config().cluster_id, backend.config().member_id);
    configure(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let routes = api::routes_with(Arc::clone(&backend), &config);
    tokio::spawn(
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    Served {
        backend,
        channel,
        config,
        stop: Some(stop),
    }
}

async fn serve() -> Served {
    serve_with(MemBackend::default(), |_| {}).await
}

async fn put(kv: &mut KvClient<Channel>, key: &[u8], value: &[u8]) -> i64 {
    kv.put(pb::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
    .header
    .expect("header")
    .revision
}

async fn get(kv: &mut KvClient<Channel>, request: pb::RangeRequest) -> pb::RangeResponse {
    kv.range(request).await.expect("range").into_inner()
}

fn range(key: &[u8], range_end: &[u8]) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

fn keys(kvs: &[mvccpb::KeyValue]) -> Vec<Vec<u8>> {
    kvs.iter().map(|kv| kv.key.clone()).collect()
}

fn assert_status(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, text: &str) {
    let status = result.expect_err(text);
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(status.message(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_single_prefix_revision_sort_and_limit() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut kv = served.kv();
        assert_eq!(put(&mut kv, b"fruit/apple", b"red").await, 2);
        assert_eq!(put(&mut kv, b"fruit/cherry", b"dark").await, 3);
        assert_eq!(put(&mut kv, b"fruit/banana", b"yellow").await, 4);
        assert_eq!(put(&mut kv, b"veg/leek", b"green").await, 5);
        assert_eq!(put(&mut kv, b"fruit/apple", b"green").await, 6);

        // Single key, with etcd's header.
        let one = get(&mut kv, range(b"fruit/apple", b"")).await;
        let header = one.header.expect("header");
        assert_eq!(header.revision, 6);
        assert_eq!(header.cluster_id, served.config.cluster_id);
        assert_eq!(header.member_id, served.config.member_id);
        assert_eq!(one.count, 1);
        let apple = &one.kvs[0];
        assert_eq!(
            (
                apple.value.as_slice(),
                apple.version,
                apple.create_revision,
                apple.mod_revision
            ),
            (&b"green"[..], 2, 2, 6)
        );

        // Prefix (etcdctl --prefix: range_end is the key plus one).
        let fruit = get(&mut kv, range(b"fruit/", b"fruit0")).await;
        assert_eq!(
            keys(&fruit.kvs),
            vec![
                b"fruit/apple".to_vec(),
                b"fruit/banana".to_vec(),
                b"fruit/cherry".to_vec()
            ]
        );
        // From a key on (range_end = [0]).
        let from = get(&mut kv, range(b"fruit/banana", b"\0")).await;
        assert_eq!(from.count, 3);

        // An older revision.
        let old = get(
            &mut kv,
            pb::RangeRequest {
                revision: 3,
                ..range(b"fruit/", b"fruit0")
            },
        )
        .await;
        assert_eq!(
            keys(&old.kvs),
            vec![b"fruit/apple".to_vec(), b"fruit/cherry".to_vec()]
        );
        assert_eq!(old.kvs[0].value, b"red");

        // Sort by mod revision, descending, with a limit.
        let sorted = get(
            &mut kv,
            pb::RangeRequest {
                sort_order: pb::range_request::SortOrder::Descend as i32,
                sort_target: pb::range_request::SortTarget::Mod as i32,
                limit: 2,
                ..range(b"fruit/", b"fruit0")
            },
        )
        .await;
        assert_eq!(
            keys(&sorted.kvs),
            vec![b"fruit/apple".to_vec(), b"fruit/banana".to_vec()]
        );
        assert!(sorted.more);
        assert_eq!(sorted.count, 3);

        // Keys only, count only, serializable.
        let keys_only = get(
            &mut kv,
            pb::RangeRequest {
                keys_only: true,
                serializable: true,
                ..range(b"\0", b"\0")
            },
        )
        .await;
        assert_eq!(keys_only.kvs.len(), 4);
        assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));
        let count_only = get(
            &mut kv,
            pb::RangeRequest {
                count_only: true,
                ..range(b"\0", b"\0")
            },
        )
        .await;
        assert_eq!((count_only.count, count_only.kvs.len()), (4, 0));

        // A missing key is an empty answer, not an error.
        let none = get(&mut kv, range(b"nope", b"")).await;
        assert_eq!((none.count, none.kvs.len()), (0, 0));

        // etcd's request checks.
        assert_status(
            kv.range(range(b"", b"")).await,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        );
        assert_status(
            kv.range(pb::RangeRequest {
                sort_order: 9,
                ..range(b"k", b"")
            })
            .await,
            Code::InvalidArgument,
            "etcdserver: invalid sort option",
        );
        assert_status(
            kv.put(pb::PutRequest::default()).await,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        );
        assert_status(
            kv.put(pb::PutRequest {
                key: b"absent".to_vec(),
                ignore_value: true,
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "etcdserver: key not found",
        );
        assert_status(
            kv.range(pb::RangeRequest {
                revision: 100,
                ..range(b"k", b"")
            })
            .await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_prev_kv_and_delete_with_prev_kv() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut kv = served.kv();
        put(&mut kv, b"a", b"1").await;
        let answer = kv
            .put(pb::PutRequest {
                key: b"a".to_vec(),
                value: b"2".to_vec(),
                prev_kv: true,
                ..Default::default()
            })
            .await
            .expect("put")
            .into_inner();
        assert_eq!(answer.prev_kv.expect("prev").value, b"1");
        put(&mut kv, b"b", b"3").await;
        put(&mut kv, b"c", b"4").await;

        let one = kv
            .delete_range(pb::DeleteRangeRequest {
                key: b"a".to_vec(),
                prev_kv: true,
                ..Default::default()
            })
            .await
            .expect("delete")
            .into_inner();
        assert_eq!(one.deleted, 1);
        assert_eq!(one.prev_kvs.len(), 1);
        assert_eq!(one.prev_kvs[0].value, b"2");
        assert_eq!(one.header.expect("header").revision, 6);

        let rest = kv
            .delete_range(pb::DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: b"z".to_vec(),
                prev_kv: true,
            })
            .await
            .expect("delete range")
            .into_inner();
        assert_eq!(rest.deleted, 2);
        assert_eq!(keys(&rest.prev_kvs), vec![b"b".to_vec(), b"c".to_vec()]);

        // Deleting nothing does not raise the revision.
        let nothing = kv
            .delete_range(pb::DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: b"z".to_vec(),
                prev_kv: false,
            })
            .await
            .expect("delete nothing")
            .into_inner();
        assert_eq!(nothing.deleted, 0);
        assert_eq!(nothing.header.expect("header").revision, 7);
    })
    .await
    .expect("test bound");
}

fn compare(
    key: &[u8],
    result: pb::compare::CompareResult,
    union: pb::compare::TargetUnion,
) -> pb::Compare {
    use pb::compare::{CompareTarget as T, TargetUnion as U};
    let target = match union {
        U::Version(_) => T::Version,
        U::CreateRevision(_) => T::Create,
        U::ModRevision(_) => T::Mod,
        U::Value(_) => T::Value,
        U::Lease(_) => T::Lease,
    };
    pb::Compare {
        result: result as i32,
        target: target as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(union),
    }
}

fn op_put(key: &[u8], value: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}

fn op_get(key: &[u8]) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestRange(range(key, b""))),
    }
}

fn op_txn(txn: pb::TxnRequest) -> pb::RequestOp {
    pb::RequestOp {
        request: Some(pb::request_op::Request::RequestTxn(txn)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_with_compares_branches_and_nesting() {
    use pb::compare::CompareResult as R;
    use pb::compare::TargetUnion as U;
    use pb::response_op::Response as W;
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut kv = served.kv();
        put(&mut kv, b"cfg/a", b"1").await; // rev 2
        put(&mut kv, b"cfg/b", b"1").await; // rev 3

        // Every compare target, all true: the success branch runs, with a
        // nested transaction whose own compare fails.
        let txn = pb::TxnRequest {
            compare: vec![
                compare(b"cfg/a", R::Equal, U::Value(b"1".to_vec())),
                compare(b"cfg/a", R::Equal, U::Version(1)),
                compare(b"cfg/b", R::Greater, U::ModRevision(2)),
                compare(b"cfg/a", R::Less, U::CreateRevision(3)),
                compare(b"cfg/a", R::Equal, U::Lease(0)),
                compare(b"cfg/missing", R::Equal, U::Version(0)),
                // A range compare: every key under cfg/ has value "1".
                pb::Compare {
                    range_end: b"cfg0".to_vec(),
                    ..compare(b"cfg/", R::Equal, U::Value(b"1".to_vec()))
                },
            ],
            success: vec![
                op_put(b"cfg/c", b"2"),
                op_get(b"cfg/a"),
                op_txn(pb::TxnRequest {
                    compare: vec![compare(b"cfg/a", R::NotEqual, U::Value(b"1".to_vec()))],
                    success: vec![op_put(b"cfg/never", b"x")],
                    failure: vec![op_put(b"cfg/d", b"3"), op_get(b"cfg/c")],
                }),
            ],
            failure: vec![op_put(b"cfg/failed", b"x")],
        };
        let answer = kv.txn(txn).await.expect("txn").into_inner();
        assert!(answer.succeeded);
        let header = answer.header.expect("header");
        assert_eq!(header.revision, 4);
        assert_eq!(header.member_id, served.config.member_id);
        assert_eq!(answer.responses.len(), 3);
        let Some(W::ResponseRange(read)) = &answer.responses[1].response else {
            panic!("range response expected: {:?}", answer.responses[1]);
        };
        assert_eq!(read.kvs[0].value, b"1");
        let Some(W::ResponseTxn(nested)) = &answer.responses[2].response else {
            panic!("nested txn response expected");
        };
        assert!(!nested.succeeded);
        let Some(W::ResponseRange(nested_read)) = &nested.responses[1].response else {
            panic!("nested range response expected");
        };
        // The nested read sees the outer put of the same transaction.
        assert_eq!(nested_read.kvs[0].value, b"2");
        let all = get(&mut kv, range(b"cfg/", b"cfg0")).await;
        assert_eq!(
            keys(&all.kvs),
            vec![
                b"cfg/a".to_vec(),
                b"cfg/b".to_vec(),
                b"cfg/c".to_vec(),
                b"cfg/d".to_vec()
            ]
        );
        assert!(all.kvs.iter().all(|kv| kv.mod_revision <= 4));

        // A false compare: the failure branch.
        let answer = kv
            .txn(pb::TxnRequest {
                compare: vec![compare(b"cfg/a", R::Greater, U::Version(5))],
                success: vec![op_put(b"cfg/x", b"x")],
                failure: vec![op_get(b"cfg/d")],
            })
            .await
            .expect("txn")
            .into_inner();
        assert!(!answer.succeeded);
        assert_eq!(
            answer.header.expect("header").revision,
            4,
            "read-only branch"
        );

        // etcd's request checks.
        assert_status(
            kv.txn(pb::TxnRequest {
                success: vec![op_put(b"k", b"1"), op_put(b"k", b"2")],
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        );
        assert_status(
            kv.txn(pb::TxnRequest {
                success: (0..129)
                    .map(|i| op_put(format!("k{i}").as_bytes(), b"v"))
                    .collect(),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        );
        assert_status(
            kv.txn(pb::TxnRequest {
                compare: vec![compare(b"", R::Equal, U::Version(0))],
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        );
        assert_status(
            kv.txn(pb::TxnRequest {
                success: vec![pb::RequestOp { request: None }],
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "etcdserver: key not found",
        );
        let bad_compare = pb::Compare {
            target: 17,
            ..compare(b"k", R::Equal, U::Version(0))
        };
        let status = kv
            .txn(pb::TxnRequest {
                compare: vec![bad_compare],
                ..Default::default()
            })
            .await
            .expect_err("unknown compare target");
        assert_eq!(status.code(), Code::InvalidArgument);
        // None of the refused transactions changed anything.
        let after = get(&mut kv, range(b"\0", b"\0")).await;
        assert_eq!(after.header.expect("header").revision, 4);
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_then_reads_below_it_are_out_of_range() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut kv = served.kv();
        for i in 0..5 {
            put(&mut kv, b"key", format!("v{i}").as_bytes()).await; // revs 2..=6
        }
        let compacted = kv
            .compact(pb::CompactionRequest {
                revision: 4,
                physical: true,
            })
            .await
            .expect("compact")
            .into_inner();
        assert_eq!(compacted.header.expect("header").revision, 6);
        assert_status(
            kv.range(pb::RangeRequest {
                revision: 3,
                ..range(b"key", b"")
            })
            .await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        let at = get(
            &mut kv,
            pb::RangeRequest {
                revision: 4,
                ..range(b"key", b"")
            },
        )
        .await;
        assert_eq!(at.kvs[0].value, b"v2");
        assert_status(
            kv.compact(pb::CompactionRequest {
                revision: 3,
                physical: false,
            })
            .await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        assert_status(
            kv.compact(pb::CompactionRequest {
                revision: 60,
                physical: false,
            })
            .await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_get_etcds_text_and_change_nothing() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut kv = served.kv();
        let two_mib = vec![0xab_u8; 2 * 1024 * 1024];
        assert_status(
            kv.put(pb::PutRequest {
                key: b"big".to_vec(),
                value: two_mib.clone(),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "etcdserver: request is too large",
        );
        assert_status(
            kv.txn(pb::TxnRequest {
                success: vec![op_put(b"big", &two_mib)],
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "etcdserver: request is too large",
        );
        // Just under the limit is fine.
        let under = vec![1u8; 1024 * 1024];
        assert_eq!(put(&mut kv, b"big", &under).await, 2);
        let read = get(&mut kv, range(b"big", b"")).await;
        assert_eq!(read.kvs[0].value.len(), under.len());
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_values_are_arbitrary_bytes() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut kv = served.kv();
        let nasty: [&[u8]; 5] = [
            b"\0",
            b"nul\0inside",
            &[0xff, 0xfe, 0x00, 0x80],
            &[0xc3, 0x28], // invalid UTF-8
            b"\0\0\xff",
        ];
        for key in nasty {
            let value = [key, &b"\0\xff\x80"[..]].concat();
            put(&mut kv, key, &value).await;
            let read = get(&mut kv, range(key, b"")).await;
            assert_eq!(read.kvs.len(), 1, "{key:?}");
            assert_eq!(read.kvs[0].key, key);
            assert_eq!(read.kvs[0].value, value);
        }
        // All of them, in byte order.
        let all = get(&mut kv, range(b"\0", b"\0")).await;
        let mut expected: Vec<Vec<u8>> = nasty.iter().map(|k| k.to_vec()).collect();
        expected.sort();
        assert_eq!(keys(&all.kvs), expected);
        // A range over binary bounds.
        let low = get(&mut kv, range(b"\0", b"\x01")).await;
        assert_eq!(keys(&low.kvs), vec![b"\0".to_vec(), b"\0\0\xff".to_vec()]);
        let deleted = kv
            .delete_range(pb::DeleteRangeRequest {
                key: vec![0xff],
                range_end: vec![0],
                prev_kv: true,
            })
            .await
            .expect("delete")
            .into_inner();
        assert_eq!(keys(&deleted.prev_kvs), vec![vec![0xff, 0xfe, 0x00, 0x80]]);
    })
    .await
    .expect("test bound");
}

// ---------------------------------------------------------------------------
// Watch.
// ---------------------------------------------------------------------------

/// A client watch stream: requests in, responses out.
struct WatchSession {
    requests: mpsc::Sender<pb::WatchRequest>,
    responses: tonic::Streaming<pb::WatchResponse>,
}

impl WatchSession {
    async fn open(served: &Served) -> WatchSession {
        let (requests, rx) = mpsc::channel(16);
        let responses = served
            .watch()
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch stream")
            .into_inner();
        WatchSession {
            requests,
            responses,
        }
    }

    async fn send(&self, request: pb::watch_request::RequestUnion) {
        self.requests
            .send(pb::WatchRequest {
                request_union: Some(request),
            })
            .await
            .expect("send watch request");
    }

    async fn create(&self, create: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(create))
            .await;
    }

    async fn cancel(&self, watch_id: i64) {
        self.send(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id },
        ))
        .await;
    }

    async fn next(&mut self) -> pb::WatchResponse {
        self.responses
            .message()
            .await
            .expect("watch response")
            .expect("stream open")
    }
}

fn watch_prefix(prefix: &[u8], end: &[u8]) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: prefix.to_vec(),
        range_end: end.to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_a_concurrent_writer_in_order_and_cancel_stops_it() {
    const WRITES: usize = 60;
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut session = WatchSession::open(&served).await;
        session.create(watch_prefix(b"w/", b"w0")).await;
        let created = session.next().await;
        assert!(created.created && !created.canceled);
        assert_eq!(
            created.watch_id, 0,
            "etcd numbers a stream's watchers from 0"
        );
        assert_eq!(
            created.header.expect("header").member_id,
            served.config.member_id
        );

        let mut writer_kv = served.kv();
        let writer = tokio::spawn(async move {
            for i in 0..WRITES {
                // Every fifth write deletes the key written just before, so
                // each write is one event.
                let key = if i % 5 == 4 {
                    format!("w/{}", (i - 1) % 7)
                } else {
                    format!("w/{}", i % 7)
                };
                if i % 5 == 4 {
                    writer_kv
                        .delete_range(pb::DeleteRangeRequest {
                            key: key.into_bytes(),
                            ..Default::default()
                        })
                        .await
                        .expect("delete");
                } else {
                    put(&mut writer_kv, key.as_bytes(), format!("{i}").as_bytes()).await;
                }
                // Noise outside the watched range.
                put(&mut writer_kv, b"other", b"x").await;
            }
        });

        // Every change to w/, in revision order, none missing, none twice.
        let mut revisions = Vec::new();
        let mut deletes = 0;
        while revisions.len() < WRITES {
            let response = session.next().await;
            assert_eq!(response.watch_id, 0);
            for event in response.events {
                let kv = event.kv.expect("kv");
                assert!(kv.key.starts_with(b"w/"), "{kv:?}");
                if event.r#type == mvccpb::event::EventType::Delete as i32 {
                    deletes += 1;
                }
                revisions.push(kv.mod_revision);
            }
        }
        writer.await.expect("writer");
        assert_eq!(revisions.len(), WRITES);
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
        assert!(deletes > 0);

        // Cancel: the canceled answer, then nothing more for watcher 0. A
        // second watcher proves it: its event is the next response.
        session.cancel(0).await;
        let canceled = session.next().await;
        assert_eq!((canceled.watch_id, canceled.canceled), (0, true));
        session.create(watch_prefix(b"z", b"")).await;
        let created = session.next().await;
        assert!(created.created);
        assert_eq!(created.watch_id, 1);
        let mut kv = served.kv();
        put(&mut kv, b"w/after-cancel", b"x").await;
        let rev = put(&mut kv, b"z", b"x").await;
        let next = session.next().await;
        assert_eq!(next.watch_id, 1);
        assert_eq!(next.events[0].kv.as_ref().expect("kv").mod_revision, rev);
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_history_filters_and_prev_kv() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut kv = served.kv();
        put(&mut kv, b"h", b"1").await; // 2
        put(&mut kv, b"h", b"2").await; // 3
        kv.delete_range(pb::DeleteRangeRequest {
            key: b"h".to_vec(),
            ..Default::default()
        })
        .await
        .expect("delete"); // 4
        put(&mut kv, b"h", b"3").await; // 5

        let mut session = WatchSession::open(&served).await;
        // History from revision 3, with previous values.
        session
            .create(pb::WatchCreateRequest {
                start_revision: 3,
                prev_kv: true,
                ..watch_prefix(b"h", b"")
            })
            .await;
        assert!(session.next().await.created);
        let history = session.next().await;
        let seen: Vec<(i32, i64)> = history
            .events
            .iter()
            .map(|e| (e.r#type, e.kv.as_ref().expect("kv").mod_revision))
            .collect();
        assert_eq!(seen, vec![(0, 3), (1, 4), (0, 5)]);
        assert_eq!(
            history.events[0].prev_kv.as_ref().expect("prev").value,
            b"1"
        );
        assert_eq!(
            history.events[1].prev_kv.as_ref().expect("prev").value,
            b"2"
        );
        assert!(
            history.events[2].prev_kv.is_none(),
            "a re-creation has no prev"
        );

        // NOPUT from the start: only the delete.
        session
            .create(pb::WatchCreateRequest {
                start_revision: 2,
                filters: vec![pb::watch_create_request::FilterType::Noput as i32],
                ..watch_prefix(b"h", b"")
            })
            .await;
        let created = session.next().await;
        assert_eq!((created.created, created.watch_id), (true, 1));
        let deletes = session.next().await;
        assert_eq!(deletes.watch_id, 1);
        assert_eq!(deletes.events.len(), 1);
        assert_eq!(deletes.events[0].r#type, 1);
        assert!(deletes.events[0].prev_kv.is_none(), "prev_kv not asked for");
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_is_canceled_with_the_compact_revision() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut kv = served.kv();
        for i in 0..4 {
            put(&mut kv, b"c", format!("{i}").as_bytes()).await; // 2..=5
        }
        kv.compact(pb::CompactionRequest {
            revision: 4,
            physical: false,
        })
        .await
        .expect("compact");
        let mut session = WatchSession::open(&served).await;
        session
            .create(pb::WatchCreateRequest {
                start_revision: 2,
                ..watch_prefix(b"c", b"")
            })
            .await;
        let created = session.next().await;
        assert!(created.created);
        let canceled = session.next().await;
        assert_eq!(canceled.watch_id, created.watch_id);
        assert!(canceled.canceled);
        assert_eq!(canceled.compact_revision, 4);
        assert!(canceled.events.is_empty());
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_creates_are_answered_in_create_order() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut session = WatchSession::open(&served).await;
        // An unknown filter, an empty range, a good one, a duplicate id.
        session
            .create(pb::WatchCreateRequest {
                filters: vec![7],
                ..watch_prefix(b"a", b"")
            })
            .await;
        session.create(watch_prefix(b"b", b"a")).await;
        session
            .create(pb::WatchCreateRequest {
                watch_id: 5,
                ..watch_prefix(b"a", b"")
            })
            .await;
        session
            .create(pb::WatchCreateRequest {
                watch_id: 5,
                ..watch_prefix(b"b", b"")
            })
            .await;
        let bad_filter = session.next().await;
        assert!(bad_filter.created && bad_filter.canceled);
        assert_eq!(bad_filter.watch_id, -1);
        assert!(
            bad_filter.cancel_reason.contains("watch filter"),
            "{bad_filter:?}"
        );
        let empty = session.next().await;
        assert!(empty.created && empty.canceled);
        assert_eq!(empty.watch_id, -1);
        assert_eq!(empty.cancel_reason, "mvcc: watcher range is empty");
        let good = session.next().await;
        assert!(good.created && !good.canceled);
        assert_eq!(good.watch_id, 5);
        let duplicate = session.next().await;
        assert!(duplicate.created && duplicate.canceled);
        assert_eq!(duplicate.watch_id, 5);
        assert_eq!(duplicate.cancel_reason, "mvcc: duplicate watch ID provided");
        // Watcher 5 still works.
        let rev = put(&mut served.kv(), b"a", b"1").await;
        let event = session.next().await;
        assert_eq!(event.watch_id, 5);
        assert_eq!(event.events[0].kv.as_ref().expect("kv").mod_revision, rev);
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_requests_and_periodic_progress_notifications() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve_with(MemBackend::default(), |config| {
            config.watch_progress_interval = Some(Duration::from_millis(50));
        })
        .await;
        let rev = put(&mut served.kv(), b"p", b"1").await;
        let mut session = WatchSession::open(&served).await;
        session.create(watch_prefix(b"p", b"")).await;
        assert!(session.next().await.created);
        session
            .send(pb::watch_request::RequestUnion::ProgressRequest(
                pb::WatchProgressRequest {},
            ))
            .await;
        let progress = session.next().await;
        assert_eq!(progress.watch_id, -1);
        assert!(progress.events.is_empty() && !progress.created && !progress.canceled);
        assert_eq!(progress.header.expect("header").revision, rev);

        // A progress_notify watcher gets notifications without asking.
        session
            .create(pb::WatchCreateRequest {
                progress_notify: true,
                ..watch_prefix(b"q", b"")
            })
            .await;
        let created = session.next().await;
        assert!(created.created);
        let notified = session.next().await;
        assert!(notified.events.is_empty() && !notified.canceled);
        assert_eq!(notified.header.expect("header").revision, rev);
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_responses_are_fragmented_for_watchers_that_ask() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve_with(MemBackend::default(), |config| {
            config.limits.max_request_bytes = 4096;
        })
        .await;
        let mut kv = served.kv();
        let value = vec![b'v'; 1000];
        for i in 0..10 {
            put(&mut kv, format!("f/{i}").as_bytes(), &value).await;
        }
        let mut session = WatchSession::open(&served).await;
        session
            .create(pb::WatchCreateRequest {
                fragment: true,
                prev_kv: true,
                ..watch_prefix(b"f/", b"f0")
            })
            .await;
        assert!(session.next().await.created);
        session
            .create(pb::WatchCreateRequest {
                prev_kv: true,
                ..watch_prefix(b"f/", b"f0")
            })
            .await;
        let whole_id = session.next().await.watch_id;
        // One small request deletes all ten keys at one revision: with the
        // previous values, ~10 KB of events, above the 4 KiB limit.
        kv.delete_range(pb::DeleteRangeRequest {
            key: b"f/".to_vec(),
            range_end: b"f0".to_vec(),
            prev_kv: false,
        })
        .await
        .expect("delete range");
        let mut fragmented = Vec::new();
        let mut whole = None;
        while whole.is_none()
            || fragmented
                .last()
                .is_none_or(|f: &pb::WatchResponse| f.fragment)
        {
            let response = session.next().await;
            if response.watch_id == whole_id {
                whole = Some(response);
            } else {
                fragmented.push(response);
            }
        }
        let whole = whole.expect("whole");
        assert_eq!(whole.events.len(), 10);
        assert!(!whole.fragment);
        assert!(fragmented.len() > 1, "{} pieces", fragmented.len());
        let events: Vec<_> = fragmented.iter().flat_map(|f| f.events.clone()).collect();
        assert_eq!(events, whole.events);
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_session_is_closed_when_the_client_goes_away() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut session = WatchSession::open(&served).await;
        session.create(watch_prefix(b"x", b"")).await;
        assert!(session.next().await.created);
        assert_eq!(served.backend.session_count().await, 1);
        // Half-closing (no more requests) keeps the watchers, as in etcd.
        let WatchSession {
            requests,
            mut responses,
        } = session;
        drop(requests);
        let rev = put(&mut served.kv(), b"x", b"1").await;
        let event = responses.message().await.expect("response").expect("open");
        assert_eq!(event.events[0].kv.as_ref().expect("kv").mod_revision, rev);
        // Going away closes the session.
        drop(responses);
        let mut polls = 0;
        while served.backend.session_count().await > 0 {
            polls += 1;
            assert!(polls < 500, "session never closed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("test bound");
}

// ---------------------------------------------------------------------------
// Lease.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_keep_alive_stream_and_revoke_deletes_attached_keys() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut lease = served.lease();
        let mut kv = served.kv();
        let granted = lease
            .lease_grant(pb::LeaseGrantRequest { ttl: 30, id: 0 })
            .await
            .expect("grant")
            .into_inner();
        assert!(granted.id != 0);
        assert_eq!(granted.ttl, 30);
        assert_eq!(
            granted.header.expect("header").member_id,
            served.config.member_id
        );
        let id = granted.id;
        for key in [&b"l/a"[..], b"l/b"] {
            kv.put(pb::PutRequest {
                key: key.to_vec(),
                value: b"v".to_vec(),
                lease: id,
                ..Default::default()
            })
            .await
            .expect("put with lease");
        }

        // The keep-alive stream: one answer per request, in order; an
        // unknown lease gets TTL 0, not an error.
        let (requests, rx) = mpsc::channel(4);
        let mut answers = lease
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .expect("keep-alive stream")
            .into_inner();
        for ask in [id, 0x7777, id] {
            requests
                .send(pb::LeaseKeepAliveRequest { id: ask })
                .await
                .expect("send");
            let answer = answers.message().await.expect("answer").expect("open");
            assert_eq!(answer.id, ask);
            assert_eq!(answer.ttl, if ask == id { 30 } else { 0 });
            assert_eq!(
                answer.header.expect("header").member_id,
                served.config.member_id
            );
        }
        drop(requests);
        assert!(answers.message().await.expect("clean end").is_none());

        let ttl = lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: true })
            .await
            .expect("ttl")
            .into_inner();
        assert_eq!(ttl.granted_ttl, 30);
        assert!(ttl.ttl > 0 && ttl.ttl <= 30);
        assert_eq!(ttl.keys, vec![b"l/a".to_vec(), b"l/b".to_vec()]);
        let leases = lease
            .lease_leases(pb::LeaseLeasesRequest {})
            .await
            .expect("leases")
            .into_inner();
        assert_eq!(leases.leases, vec![pb::LeaseStatus { id }]);

        let before = get(&mut kv, range(b"l/", b"l0")).await;
        let revoked = lease
            .lease_revoke(pb::LeaseRevokeRequest { id })
            .await
            .expect("revoke")
            .into_inner();
        assert_eq!(
            revoked.header.expect("header").revision,
            before.header.expect("header").revision + 1,
            "both keys go in one revision"
        );
        let after = get(&mut kv, range(b"l/", b"l0")).await;
        assert_eq!(after.count, 0);
        let ttl = lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: false })
            .await
            .expect("ttl of a revoked lease")
            .into_inner();
        assert_eq!(ttl.ttl, -1);
        assert_status(
            lease.lease_revoke(pb::LeaseRevokeRequest { id }).await,
            Code::NotFound,
            "etcdserver: requested lease not found",
        );
        assert_status(
            kv.put(pb::PutRequest {
                key: b"k".to_vec(),
                lease: id,
                ..Default::default()
            })
            .await,
            Code::NotFound,
            "etcdserver: requested lease not found",
        );
        let again = lease
            .lease_grant(pb::LeaseGrantRequest { ttl: 5, id: 42 })
            .await
            .expect("grant with id")
            .into_inner();
        assert_eq!(again.id, 42);
        assert_status(
            lease
                .lease_grant(pb::LeaseGrantRequest { ttl: 5, id: 42 })
                .await,
            Code::FailedPrecondition,
            "etcdserver: lease already exists",
        );
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_on_the_backends_clock() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve_with(MemBackend::with_manual_clock(MemConfig::default()), |_| {}).await;
        let mut lease = served.lease();
        let mut kv = served.kv();
        let id = lease
            .lease_grant(pb::LeaseGrantRequest { ttl: 5, id: 0 })
            .await
            .expect("grant")
            .into_inner()
            .id;
        kv.put(pb::PutRequest {
            key: b"ephemeral".to_vec(),
            lease: id,
            ..Default::default()
        })
        .await
        .expect("put");
        served.backend.advance_clock(4_000);
        assert_eq!(get(&mut kv, range(b"ephemeral", b"")).await.count, 1);
        served.backend.advance_clock(2_000);
        assert_eq!(get(&mut kv, range(b"ephemeral", b"")).await.count, 0);
        let ttl = lease
            .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: false })
            .await
            .expect("ttl")
            .into_inner();
        assert_eq!(ttl.ttl, -1);
    })
    .await
    .expect("test bound");
}

// ---------------------------------------------------------------------------
// Cluster and Maintenance.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_and_membership_changes_a_single_store_refuses() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut cluster = served.cluster();
        let list = cluster
            .member_list(pb::MemberListRequest { linearizable: true })
            .await
            .expect("member list")
            .into_inner();
        let config = served.backend.config();
        assert_eq!(list.header.expect("header").cluster_id, config.cluster_id);
        assert_eq!(list.members.len(), 1);
        let me = &list.members[0];
        assert_eq!(me.id, config.member_id);
        assert_eq!(me.name, config.name);
        assert_eq!(me.peer_ur_ls, config.peer_urls);
        assert_eq!(me.client_ur_ls, config.client_urls);
        assert!(!me.is_learner);
        // Malformed peer URLs are refused before anything is asked.
        let refused = cluster
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec![],
                is_learner: true,
            })
            .await
            .expect_err("member add without peer URLs");
        assert_eq!(refused.code(), Code::InvalidArgument);
        let refused = cluster
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec!["127.0.0.1:9".into()],
                is_learner: true,
            })
            .await
            .expect_err("member add with a peer URL that is no URL");
        assert_eq!(refused.code(), Code::InvalidArgument);
        // The single-store backend has no log to decide a change in: it
        // refuses as etcd does while it cannot take one.
        let refused = cluster
            .member_add(pb::MemberAddRequest {
                peer_ur_ls: vec!["http://127.0.0.1:9".into()],
                is_learner: false,
            })
            .await
            .expect_err("member add");
        assert_eq!(refused.code(), Code::Unavailable);
        assert_eq!(refused.message(), "etcdserver: unhealthy cluster");
        let refused = cluster
            .member_remove(pb::MemberRemoveRequest { id: 1 })
            .await
            .expect_err("member remove");
        assert_eq!(refused.code(), Code::Unavailable);
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_hash_kv_alarm_and_defragment() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut maintenance = served.maintenance();
        let rev = put(&mut served.kv(), b"s", b"1").await;
        let status = maintenance
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        let header = status.header.expect("header");
        assert_eq!(header.member_id, served.config.member_id);
        assert_eq!(header.revision, rev);
        assert_eq!(header.raft_term, 1);
        assert_eq!(status.version, api::ETCD_VERSION);
        assert_eq!(status.leader, served.config.member_id);
        assert_eq!(status.raft_term, 1);
        assert!(status.raft_index >= 1);
        assert_eq!(status.raft_index, status.raft_applied_index);
        assert!(status.db_size > 0);
        assert!(status.errors.is_empty());

        let first = maintenance
            .hash_kv(pb::HashKvRequest { revision: 0 })
            .await
            .expect("hashkv")
            .into_inner();
        let second = maintenance
            .hash_kv(pb::HashKvRequest { revision: rev })
            .await
            .expect("hashkv at the current revision")
            .into_inner();
        assert_eq!(first.hash, second.hash, "stable without writes");
        assert_eq!(first.hash_revision, rev);
        assert_eq!(first.compact_revision, 0);
        assert_eq!(first.header.expect("header").revision, rev);
        put(&mut served.kv(), b"s", b"2").await;
        let third = maintenance
            .hash_kv(pb::HashKvRequest { revision: 0 })
            .await
            .expect("hashkv")
            .into_inner();
        assert_ne!(third.hash, first.hash, "a write changes the hash");
        assert_status(
            maintenance
                .hash_kv(pb::HashKvRequest { revision: 999 })
                .await,
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
        let hash = maintenance
            .hash(pb::HashRequest {})
            .await
            .expect("hash")
            .into_inner();
        assert_eq!(hash.hash, third.hash);

        let alarms = maintenance
            .alarm(pb::AlarmRequest::default())
            .await
            .expect("alarm list")
            .into_inner();
        assert!(alarms.alarms.is_empty());
        let activated = maintenance
            .alarm(pb::AlarmRequest {
                action: pb::alarm_request::AlarmAction::Activate as i32,
                member_id: served.config.member_id,
                alarm: pb::AlarmType::Nospace as i32,
            })
            .await
            .expect("alarm activate")
            .into_inner();
        assert!(activated.alarms.is_empty());
        let bad = maintenance
            .alarm(pb::AlarmRequest {
                action: 9,
                ..Default::default()
            })
            .await
            .expect_err("unknown alarm action");
        assert_eq!(bad.code(), Code::InvalidArgument);
        maintenance
            .defragment(pb::DefragmentRequest {})
            .await
            .expect("defragment");
        let refused = maintenance
            .move_leader(pb::MoveLeaderRequest { target_id: 1 })
            .await
            .expect_err("move leader");
        assert_eq!(refused.code(), Code::Unimplemented);
    })
    .await
    .expect("test bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_stream_reassembles_to_the_backends_bytes() {
    tokio::time::timeout(TEST_BOUND, async {
        let served = serve().await;
        let mut kv = served.kv();
        // Enough data for several 64 KiB messages, binary keys included.
        let value = vec![0x5a_u8; 10_000];
        for i in 0u32..30 {
            let key = [&b"snap\0"[..], &i.to_be_bytes()].concat();
            put(&mut kv, &key, &value).await;
        }
        let expected = served.backend.snapshot().await.expect("backend snapshot");
        let mut stream = served
            .maintenance()
            .snapshot(pb::SnapshotRequest {})
            .await
            .expect("snapshot")
            .into_inner();
        let mut file = Vec::new();
        let mut messages = 0;
        let mut last_remaining = u64::MAX;
        while let Some(message) = stream.message().await.expect("snapshot message") {
            messages += 1;
            assert!(message.remaining_bytes <= last_remaining);
            last_remaining = message.remaining_bytes;
            assert_eq!(message.version, api::ETCD_VERSION);
            file.extend_from_slice(&message.blob);
        }
        assert!(messages > 3, "{messages} messages");
        // etcdctl's rule: 512-byte sectors plus a 32-byte sha256.
        assert_eq!(file.len() % 512, 32);
        let inner = snapshot_file::open(&file).expect("checksum and envelope");
        assert_eq!(inner, expected.as_slice());
        let restored =
            kv::Store::restore(inner, kv::Limits::default()).expect("restores into a store");
        assert_eq!(restored.revision(), 31);
    })
    .await
    .expect("test bound");
}
