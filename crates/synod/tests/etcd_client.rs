//! etcd's Rust client (the `etcd-client` crate), unmodified, against a real
//! 3-member synod cluster: keys of arbitrary bytes, ranges, txn, watch with a
//! concurrent writer, leases, cluster and maintenance calls.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, WatchOptions,
};

mod common;
use common::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_rust_client_works_unchanged() {
    let cluster = Cluster::start("etcd-client");
    let endpoints: Vec<String> = cluster
        .members
        .iter()
        .map(|m| format!("http://127.0.0.1:{}", m.client_port))
        .collect();
    let mut client = Client::connect(&endpoints, None).await.expect("connect");

    // Keys are bytes: NUL and non-UTF-8 round-trip.
    let odd_key = b"k\0\xff\xfe".to_vec();
    client
        .put(odd_key.clone(), b"v\0\x80".to_vec(), None)
        .await
        .expect("put");
    let got = client.get(odd_key.clone(), None).await.expect("get");
    assert_eq!(got.kvs()[0].key(), odd_key.as_slice());
    assert_eq!(got.kvs()[0].value(), b"v\0\x80");

    // Prefix, sort, limit, count, older revision.
    for i in 0..5 {
        client
            .put(format!("p/{i}"), format!("{i}"), None)
            .await
            .expect("put");
    }
    let page = client
        .get(
            "p/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_limit(2)
                    .with_sort(SortTarget::Key, SortOrder::Descend),
            ),
        )
        .await
        .expect("range");
    assert_eq!(page.count(), 5);
    assert!(page.more());
    let keys: Vec<&[u8]> = page.kvs().iter().map(|kv| kv.key()).collect();
    assert_eq!(keys, [b"p/4".as_slice(), b"p/3"]);
    let rev = page.header().expect("header").revision();
    client.put("p/0", "changed", None).await.expect("put");
    let old = client
        .get("p/0", Some(GetOptions::new().with_revision(rev)))
        .await
        .expect("old revision");
    assert_eq!(old.kvs()[0].value(), b"0");
    let deleted = client
        .delete(
            "p/1",
            Some(etcd_client::DeleteOptions::new().with_prev_key()),
        )
        .await
        .expect("delete");
    assert_eq!(deleted.deleted(), 1);
    assert_eq!(deleted.prev_kvs()[0].value(), b"1");

    // Txn: compare and swap.
    let txn = Txn::new()
        .when([Compare::value("p/0", CompareOp::Equal, "changed")])
        .and_then([TxnOp::put("p/0", "swapped", None)])
        .or_else([TxnOp::put("p/0", "lost", None)]);
    assert!(client.txn(txn).await.expect("txn").succeeded());
    let now = client.get("p/0", None).await.expect("get");
    assert_eq!(now.kvs()[0].value(), b"swapped");

    // Watch with a concurrent writer.
    let mut stream = client
        .watch("w/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    let mut writer = client.clone();
    let writes = tokio::spawn(async move {
        for i in 0..5 {
            writer.put(format!("w/{i}"), "x", None).await.expect("put");
        }
        writer.delete("w/0", None).await.expect("delete");
    });
    let mut events = Vec::new();
    while events.len() < 6 {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("events arrive")
            .expect("stream")
            .expect("open");
        for e in message.events() {
            let kind = if e.event_type() == EventType::Put {
                "put"
            } else {
                "delete"
            };
            let key = String::from_utf8_lossy(e.kv().expect("kv").key()).into_owned();
            events.push(format!("{kind} {key}"));
        }
    }
    writes.await.expect("writer");
    assert_eq!(
        events,
        [
            "put w/0",
            "put w/1",
            "put w/2",
            "put w/3",
            "put w/4",
            "delete w/0"
        ]
    );
    drop(stream);

    // Leases: grant, attach, keep alive, revoke deletes the key.
    let lease = client.lease_grant(30, None).await.expect("grant");
    client
        .put(
            "leased",
            "x",
            Some(PutOptions::new().with_lease(lease.id())),
        )
        .await
        .expect("put with lease");
    let (mut keeper, mut keep_stream) = client
        .lease_keep_alive(lease.id())
        .await
        .expect("keep alive");
    keeper.keep_alive().await.expect("send keep alive");
    let kept = keep_stream
        .message()
        .await
        .expect("stream")
        .expect("answer");
    assert_eq!(kept.id(), lease.id());
    assert!(kept.ttl() > 0);
    client.lease_revoke(lease.id()).await.expect("revoke");
    assert!(
        client
            .get("leased", None)
            .await
            .expect("get")
            .kvs()
            .is_empty()
    );

    // Cluster and maintenance.
    let members = client.member_list().await.expect("members");
    assert_eq!(members.members().len(), 3);
    let status = client.status().await.expect("status");
    assert!(status.leader() != 0);
    let hash = client.hash_kv(0).await.expect("hashkv");
    assert_eq!(hash.hash(), client.hash_kv(0).await.expect("hashkv").hash());
    let latest = client
        .get("p/0", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    client.compact(latest, None).await.expect("compact");
    let gone = client
        .get("p/0", Some(GetOptions::new().with_revision(rev)))
        .await
        .expect_err("compacted");
    assert!(
        gone.to_string()
            .contains("required revision has been compacted"),
        "{gone}"
    );

    // A value above the request limit is refused with etcd's text.
    let big = vec![b'x'; 1_600_000];
    let refused = client.put("big", big, None).await.expect_err("too large");
    assert!(
        refused.to_string().contains("request is too large"),
        "{refused}"
    );
    assert!(client.get("big", None).await.expect("get").kvs().is_empty());
}

/// A watcher that stops reading must not make its member hold every event
/// for it: once its queue is full its session is closed, its stream ends
/// with an error (etcd's clients then resume from their last revision),
/// and other watchers go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_cut_off_and_others_go_on() {
    const PUTS: usize = 12_000;
    let cluster = Cluster::start("etcd-client-slow-watcher");
    let endpoint = format!("http://127.0.0.1:{}", cluster.members[0].client_port);
    // Each watcher on its own connection, so that flow control on the one
    // that does not read holds up nothing else.
    let mut slow_client = Client::connect([endpoint.as_str()], None)
        .await
        .expect("connect");
    let mut slow = slow_client
        .watch("s/", Some(WatchOptions::new().with_prefix()))
        .await
        .expect("watch");
    let writer = Client::connect([endpoint.as_str()], None)
        .await
        .expect("connect");
    let value = vec![b'v'; 1024];
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let mut writer = writer.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in (t..PUTS).step_by(32) {
                    writer
                        .put(format!("s/{i}"), value.clone(), None)
                        .await
                        .expect("put");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    // Now read: the stream must end (with an error) before every event.
    let mut seen = 0usize;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.message()).await {
            Err(_) => panic!("the slow watcher's stream neither ended nor delivered"),
            Ok(Ok(Some(message))) => seen += message.events().len(),
            Ok(Ok(None)) => break "ended".to_string(),
            Ok(Err(e)) => break e.to_string(),
        }
        assert!(
            seen < PUTS,
            "every event was held for a watcher that did not read"
        );
    };
    assert!(seen < PUTS, "{seen} events, then {ended}");
    // The member serves on: a new watcher sees a new write.
    let mut fresh_client = Client::connect([endpoint.as_str()], None)
        .await
        .expect("connect");
    let mut fresh = fresh_client.watch("s/after", None).await.expect("watch");
    let mut writer = writer.clone();
    writer.put("s/after", "x", None).await.expect("put");
    let event = loop {
        let message = tokio::time::timeout(Duration::from_secs(10), fresh.message())
            .await
            .expect("an event arrives")
            .expect("stream")
            .expect("open");
        if let Some(event) = message.events().first() {
            break event.clone();
        }
    };
    assert_eq!(event.kv().expect("kv").key(), b"s/after");
}
