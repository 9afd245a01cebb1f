//! Scenario tests, one per etcd behaviour: revisions, Range, Put,
//! DeleteRange, Txn, compaction, limits and error texts. Each test is named
//! after the behaviour it shows.

mod common;

use common::*;
use kv::{
    Command, CompactionRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    GrpcCode, KvError, LeaseGrantRequest, Limits, PutRequest, RangeRequest, RequestOp, Response,
    ResponseOp, SortOrder, SortTarget, Store, TxnRequest,
};

fn grant(store: &mut Store, id: i64) {
    apply(
        store,
        Command::LeaseGrant(LeaseGrantRequest { ttl: 60, id }),
    )
    .expect("grant");
}

fn compact(store: &mut Store, revision: i64) -> Result<(), KvError> {
    apply(
        store,
        Command::Compact(CompactionRequest {
            revision,
            physical: false,
        }),
    )
    .map(|_| ())
}

// ---- revisions ---------------------------------------------------------

#[test]
fn revision_starts_at_one_and_each_write_raises_it_by_one() {
    let mut s = Store::default();
    assert_eq!(s.revision(), 1);
    assert_eq!(put(&mut s, b"a", b"1"), 2);
    assert_eq!(put(&mut s, b"b", b"1"), 3);
    assert_eq!(put(&mut s, b"a", b"2"), 4);
    assert_eq!(s.revision(), 4);
}

#[test]
fn per_key_create_mod_version_and_lease() {
    let mut s = Store::default();
    grant(&mut s, 7);
    put(&mut s, b"a", b"1");
    put(&mut s, b"other", b"x");
    let mut req = put_req(b"a", b"2");
    req.lease = 7;
    apply(&mut s, Command::Put(req)).expect("put");
    let kv = get(&s, b"a").expect("a");
    assert_eq!(kv.create_revision, 2);
    assert_eq!(kv.mod_revision, 4);
    assert_eq!(kv.version, 2);
    assert_eq!(kv.lease, 7);
    assert_eq!(kv.value, b"2");
}

#[test]
fn txn_with_several_writes_raises_revision_once() {
    let mut s = Store::default();
    let resp = txn(
        &mut s,
        TxnRequest {
            success: vec![
                RequestOp::Put(put_req(b"a", b"1")),
                RequestOp::Put(put_req(b"b", b"1")),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: k("zz"),
                    ..DeleteRangeRequest::default()
                }),
                RequestOp::Put(put_req(b"c", b"1")),
            ],
            ..TxnRequest::default()
        },
    )
    .expect("txn");
    assert_eq!(resp.header.revision, 2);
    assert_eq!(s.revision(), 2);
    for key in [b"a", b"b", b"c"] {
        assert_eq!(get(&s, key).expect("key").mod_revision, 2);
    }
}

#[test]
fn requests_that_change_nothing_keep_the_revision() {
    let mut s = Store::default();
    put(&mut s, b"a", b"1");
    let applied = delete(&mut s, b"nothing", b"").expect("delete");
    assert_eq!(applied.response.header().revision, 2);
    let resp = txn(
        &mut s,
        TxnRequest {
            success: vec![RequestOp::Range(range_req(b"a", b""))],
            ..TxnRequest::default()
        },
    )
    .expect("txn");
    assert_eq!(resp.header.revision, 2);
    assert_eq!(s.revision(), 2);
}

#[test]
fn recreated_key_gets_a_new_create_revision_and_version_one() {
    let mut s = Store::default();
    put(&mut s, b"a", b"1");
    put(&mut s, b"a", b"2");
    delete(&mut s, b"a", b"").expect("delete");
    put(&mut s, b"a", b"3");
    let kv = get(&s, b"a").expect("a");
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

// ---- range -------------------------------------------------------------

fn abc_store() -> Store {
    let mut s = Store::default();
    for key in ["a", "ab", "abc", "b", "c", "d"] {
        put(&mut s, key.as_bytes(), format!("v-{key}").as_bytes());
    }
    s
}

#[test]
fn range_single_key_interval_prefix_and_all_keys() {
    let s = abc_store();
    let r = |key: &str, end: &[u8]| keys(&s.range(&range_req(key.as_bytes(), end)).expect("range"));
    assert_eq!(r("ab", b""), vec![k("ab")]);
    assert_eq!(r("ab", b"c"), vec![k("ab"), k("abc"), k("b")]);
    // A prefix is [prefix, prefix with its last byte + 1).
    assert_eq!(r("a", b"b"), vec![k("a"), k("ab"), k("abc")]);
    assert_eq!(r("b", b"\0"), vec![k("b"), k("c"), k("d")]);
    assert_eq!(r("\0", b"\0").len(), 6);
    // An empty or inverted range matches nothing.
    assert!(r("c", b"b").is_empty());
    assert!(r("c", b"c").is_empty());
    assert!(r("zz", b"").is_empty());
}

#[test]
fn range_limit_sets_more_and_count_is_the_total() {
    let s = abc_store();
    let mut req = range_req(b"a", b"\0");
    req.limit = 2;
    let resp = s.range(&req).expect("range");
    assert_eq!(keys(&resp), vec![k("a"), k("ab")]);
    assert!(resp.more);
    assert_eq!(resp.count, 6);
    req.limit = 6;
    assert!(!s.range(&req).expect("range").more);
    req.limit = -1;
    assert_eq!(s.range(&req).expect("range").kvs.len(), 6);
}

#[test]
fn range_at_an_older_revision() {
    let mut s = Store::default();
    put(&mut s, b"a", b"1");
    put(&mut s, b"a", b"2");
    delete(&mut s, b"a", b"").expect("delete");
    let mut req = range_req(b"a", b"");
    for (rev, want) in [(1, None), (2, Some(&b"1"[..])), (3, Some(b"2")), (4, None)] {
        req.revision = rev;
        let resp = s.range(&req).expect("range");
        assert_eq!(resp.kvs.first().map(|kv| &kv.value[..]), want, "at {rev}");
        // The header is always the current revision, as etcd reports.
        assert_eq!(resp.header.revision, 4);
    }
}

#[test]
fn range_future_revision_is_refused() {
    let s = abc_store();
    let mut req = range_req(b"a", b"");
    req.revision = s.revision() + 1;
    let err = s.range(&req).expect_err("future");
    assert_eq!(
        err,
        KvError::FutureRevision {
            current_revision: 7
        }
    );
    assert_eq!(
        err.to_string(),
        "etcdserver: mvcc: required revision is a future revision"
    );
}

#[test]
fn range_sort_order_and_sort_target() {
    let mut s = Store::default();
    put(&mut s, b"a", b"3"); // rev 2
    put(&mut s, b"b", b"1"); // rev 3
    put(&mut s, b"c", b"2"); // rev 4
    put(&mut s, b"b", b"4"); // rev 5: b version 2, mod 5
    let sorted = |target, order| {
        let mut req = range_req(b"a", b"\0");
        req.sort_target = target;
        req.sort_order = order;
        keys(&s.range(&req).expect("range"))
    };
    let (a, b, c) = (k("a"), k("b"), k("c"));
    assert_eq!(
        sorted(SortTarget::Key, SortOrder::None),
        vec![a.clone(), b.clone(), c.clone()]
    );
    assert_eq!(
        sorted(SortTarget::Key, SortOrder::Descend),
        vec![c.clone(), b.clone(), a.clone()]
    );
    assert_eq!(
        sorted(SortTarget::Value, SortOrder::Ascend),
        vec![c.clone(), a.clone(), b.clone()]
    );
    assert_eq!(
        sorted(SortTarget::Value, SortOrder::Descend),
        vec![b.clone(), a.clone(), c.clone()]
    );
    assert_eq!(
        sorted(SortTarget::Mod, SortOrder::Descend),
        vec![b.clone(), c.clone(), a.clone()]
    );
    assert_eq!(
        sorted(SortTarget::Create, SortOrder::Descend),
        vec![c.clone(), b.clone(), a.clone()]
    );
    // Ties keep key order; version: a=1, b=2, c=1.
    assert_eq!(
        sorted(SortTarget::Version, SortOrder::Descend),
        vec![b.clone(), a.clone(), c.clone()]
    );
    // A non-key target with no order sorts ascending, as etcd does.
    assert_eq!(
        sorted(SortTarget::Mod, SortOrder::None),
        vec![a.clone(), c.clone(), b.clone()]
    );
    // Sort plus limit: the limit applies after sorting.
    let mut req = range_req(b"a", b"\0");
    req.sort_target = SortTarget::Mod;
    req.sort_order = SortOrder::Descend;
    req.limit = 1;
    let resp = s.range(&req).expect("range");
    assert_eq!((keys(&resp), resp.more, resp.count), (vec![b], true, 3));
}

#[test]
fn range_keys_only_and_count_only() {
    let s = abc_store();
    let mut req = range_req(b"a", b"\0");
    req.keys_only = true;
    let resp = s.range(&req).expect("range");
    assert_eq!(resp.kvs.len(), 6);
    assert!(
        resp.kvs
            .iter()
            .all(|kv| kv.value.is_empty() && kv.version == 1)
    );
    let mut req = range_req(b"a", b"\0");
    req.count_only = true;
    req.limit = 1;
    let resp = s.range(&req).expect("range");
    assert!(resp.kvs.is_empty());
    assert_eq!((resp.count, resp.more), (6, false));
}

#[test]
fn range_min_max_mod_and_create_revision_filters() {
    let mut s = Store::default();
    put(&mut s, b"a", b"1"); // a: create 2
    put(&mut s, b"b", b"1"); // b: create 3
    put(&mut s, b"c", b"1"); // c: create 4
    put(&mut s, b"a", b"2"); // a: mod 5
    let filtered = |f: &dyn Fn(&mut RangeRequest)| {
        let mut req = range_req(b"a", b"\0");
        f(&mut req);
        let resp = s.range(&req).expect("range");
        assert_eq!(resp.count, 3, "count is taken before the filters");
        keys(&resp)
    };
    assert_eq!(filtered(&|r| r.min_mod_revision = 4), vec![k("a"), k("c")]);
    assert_eq!(filtered(&|r| r.max_mod_revision = 3), vec![k("b")]);
    assert_eq!(
        filtered(&|r| r.min_create_revision = 3),
        vec![k("b"), k("c")]
    );
    assert_eq!(
        filtered(&|r| r.max_create_revision = 3),
        vec![k("a"), k("b")]
    );
    assert_eq!(
        filtered(&|r| {
            r.min_create_revision = 3;
            r.max_mod_revision = 3;
        }),
        vec![k("b")]
    );
    let mut req = range_req(b"a", b"\0");
    req.min_mod_revision = 3;
    req.limit = 1;
    let resp = s.range(&req).expect("range");
    assert_eq!((keys(&resp), resp.more), (vec![k("a")], true));
}

#[test]
fn keys_and_values_are_arbitrary_bytes() {
    let mut s = Store::default();
    let key = [0u8, 0xff, 0, 0xfe];
    let value = [0xc3u8, 0x28, 0, 0];
    put(&mut s, &key, &value);
    assert_eq!(get(&s, &key).expect("key").value, value);
    // The key [0] with range_end [0] is every key.
    assert_eq!(s.range(&range_req(&[0], &[0])).expect("range").count, 1);
}

#[test]
fn empty_key_is_refused_everywhere() {
    let mut s = Store::default();
    let want = KvError::EmptyKey;
    assert_eq!(s.range(&range_req(b"", b"")).expect_err("range"), want);
    assert_eq!(
        apply(&mut s, Command::Put(put_req(b"", b"v"))).expect_err("put"),
        want
    );
    assert_eq!(delete(&mut s, b"", b"\0").expect_err("delete"), want);
    let compare = Compare {
        key: Vec::new(),
        ..Compare::default()
    };
    let t = TxnRequest {
        compare: vec![compare],
        ..TxnRequest::default()
    };
    assert_eq!(txn(&mut s, t).expect_err("txn"), want);
    let t = TxnRequest {
        success: vec![RequestOp::Range(range_req(b"", b""))],
        ..TxnRequest::default()
    };
    assert_eq!(txn(&mut s, t).expect_err("txn"), want);
    assert_eq!(want.to_string(), "etcdserver: key is not provided");
    assert_eq!(s.revision(), 1);
}

// ---- put ---------------------------------------------------------------

#[test]
fn put_prev_kv_returns_the_previous_pair() {
    let mut s = Store::default();
    let mut req = put_req(b"a", b"1");
    req.prev_kv = true;
    let Response::Put(first) = apply(&mut s, Command::Put(req.clone()))
        .expect("put")
        .response
    else {
        panic!()
    };
    assert_eq!(first.prev_kv, None);
    req.value = k("2");
    let Response::Put(second) = apply(&mut s, Command::Put(req)).expect("put").response else {
        panic!()
    };
    let prev = second.prev_kv.expect("prev");
    assert_eq!(
        (prev.value, prev.mod_revision, prev.version),
        (k("1"), 2, 1)
    );
    // Without the flag, no previous pair.
    let Response::Put(third) = apply(&mut s, Command::Put(put_req(b"a", b"3")))
        .expect("put")
        .response
    else {
        panic!()
    };
    assert_eq!(third.prev_kv, None);
}

#[test]
fn put_lease_attaches_and_a_put_without_lease_detaches() {
    let mut s = Store::default();
    grant(&mut s, 5);
    let mut req = put_req(b"a", b"1");
    req.lease = 5;
    apply(&mut s, Command::Put(req)).expect("put");
    assert_eq!(get(&s, b"a").expect("a").lease, 5);
    put(&mut s, b"a", b"2");
    assert_eq!(get(&s, b"a").expect("a").lease, 0);
    let ttl = s.lease_time_to_live(&kv::LeaseTimeToLiveRequest { id: 5, keys: true }, 0);
    assert!(ttl.keys.is_empty());
}

#[test]
fn put_with_a_missing_lease_is_refused() {
    let mut s = Store::default();
    let mut req = put_req(b"a", b"1");
    req.lease = 42;
    let err = apply(&mut s, Command::Put(req)).expect_err("no lease");
    assert_eq!(err, KvError::LeaseNotFound { id: 42 });
    assert_eq!(err.to_string(), "etcdserver: requested lease not found");
    assert_eq!(err.code(), GrpcCode::NotFound);
    assert_eq!(s.revision(), 1);
}

#[test]
fn put_ignore_value_keeps_the_value() {
    let mut s = Store::default();
    grant(&mut s, 9);
    put(&mut s, b"a", b"keep");
    let req = PutRequest {
        key: k("a"),
        lease: 9,
        ignore_value: true,
        ..PutRequest::default()
    };
    apply(&mut s, Command::Put(req)).expect("put");
    let kv = get(&s, b"a").expect("a");
    assert_eq!((kv.value, kv.lease, kv.version), (k("keep"), 9, 2));
    // Needs the key, and refuses a value.
    let missing = PutRequest {
        key: k("missing"),
        ignore_value: true,
        ..PutRequest::default()
    };
    let err = apply(&mut s, Command::Put(missing)).expect_err("missing");
    assert_eq!(err, KvError::KeyNotFound);
    assert_eq!(err.to_string(), "etcdserver: key not found");
    let with_value = PutRequest {
        key: k("a"),
        value: k("x"),
        ignore_value: true,
        ..PutRequest::default()
    };
    let err = apply(&mut s, Command::Put(with_value)).expect_err("value");
    assert_eq!(err.to_string(), "etcdserver: value is provided");
}

#[test]
fn put_ignore_lease_keeps_the_lease() {
    let mut s = Store::default();
    grant(&mut s, 9);
    let mut req = put_req(b"a", b"1");
    req.lease = 9;
    apply(&mut s, Command::Put(req)).expect("put");
    let req = PutRequest {
        key: k("a"),
        value: k("2"),
        ignore_lease: true,
        ..PutRequest::default()
    };
    apply(&mut s, Command::Put(req)).expect("put");
    let kv = get(&s, b"a").expect("a");
    assert_eq!((kv.value, kv.lease), (k("2"), 9));
    let missing = PutRequest {
        key: k("missing"),
        ignore_lease: true,
        ..PutRequest::default()
    };
    assert_eq!(
        apply(&mut s, Command::Put(missing)).expect_err("missing"),
        KvError::KeyNotFound
    );
    let with_lease = PutRequest {
        key: k("a"),
        lease: 9,
        ignore_lease: true,
        ..PutRequest::default()
    };
    let err = apply(&mut s, Command::Put(with_lease)).expect_err("lease");
    assert_eq!(err.to_string(), "etcdserver: lease is provided");
}

// ---- delete range ------------------------------------------------------

#[test]
fn delete_range_counts_and_returns_prev_kvs() {
    let mut s = abc_store();
    let applied = delete(&mut s, b"a", b"b").expect("delete");
    let Response::DeleteRange(resp) = applied.response else {
        panic!()
    };
    assert_eq!(resp.deleted, 3);
    assert_eq!(
        resp.prev_kvs
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>(),
        vec![k("a"), k("ab"), k("abc")]
    );
    assert_eq!(resp.header.revision, 8);
    assert_eq!(applied.events.len(), 3);
    // One revision for the whole range.
    assert!(applied.events.iter().all(|e| e.kv.mod_revision == 8));
    // Without prev_kv: count only.
    let applied = apply(
        &mut s,
        Command::DeleteRange(DeleteRangeRequest {
            key: k("\0"),
            range_end: k("\0"),
            prev_kv: false,
        }),
    )
    .expect("delete all");
    let Response::DeleteRange(resp) = applied.response else {
        panic!()
    };
    assert_eq!((resp.deleted, resp.prev_kvs.len()), (3, 0));
    assert_eq!(s.key_count(), 0);
}

// ---- txn ---------------------------------------------------------------

fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key: k(key),
        range_end: Vec::new(),
    }
}

fn holds(s: &mut Store, c: Compare) -> bool {
    txn(
        s,
        TxnRequest {
            compare: vec![c],
            ..TxnRequest::default()
        },
    )
    .expect("txn")
    .succeeded
}

#[test]
fn txn_compares_value_version_create_mod_and_lease_with_each_relation() {
    use CompareResult::*;
    let mut s = Store::default();
    grant(&mut s, 3);
    put(&mut s, b"a", b"m");
    let mut req = put_req(b"a", b"m");
    req.lease = 3;
    apply(&mut s, Command::Put(req)).expect("put"); // a: create 2, mod 3, version 2, lease 3
    type Target = fn(i64) -> CompareTarget;
    let targets: Vec<(Target, i64)> = vec![
        (CompareTarget::Version, 2),
        (CompareTarget::CreateRevision, 2),
        (CompareTarget::ModRevision, 3),
        (CompareTarget::Lease, 3),
    ];
    for (target, actual) in targets {
        for (result, delta, want) in [
            (Equal, 0, true),
            (Equal, 1, false),
            (NotEqual, 1, true),
            (NotEqual, 0, false),
            (Greater, -1, true),
            (Greater, 0, false),
            (Less, 1, true),
            (Less, 0, false),
        ] {
            let c = cmp("a", result, target(actual + delta));
            assert_eq!(holds(&mut s, c.clone()), want, "{c:?}");
        }
    }
    for (result, value, want) in [
        (Equal, "m", true),
        (NotEqual, "m", false),
        (Greater, "l", true),
        (Less, "n", true),
        (Less, "m", false),
    ] {
        let c = cmp("a", result, CompareTarget::Value(k(value)));
        assert_eq!(holds(&mut s, c.clone()), want, "{c:?}");
    }
}

#[test]
fn txn_compare_on_a_missing_key() {
    use CompareResult::*;
    let mut s = Store::default();
    // A missing key has version, create, mod and lease 0 ...
    assert!(holds(&mut s, cmp("x", Equal, CompareTarget::Version(0))));
    assert!(holds(
        &mut s,
        cmp("x", Equal, CompareTarget::CreateRevision(0))
    ));
    assert!(holds(&mut s, cmp("x", Less, CompareTarget::ModRevision(1))));
    assert!(holds(&mut s, cmp("x", Equal, CompareTarget::Lease(0))));
    // ... and a value compare on it is always false.
    assert!(!holds(
        &mut s,
        cmp("x", Equal, CompareTarget::Value(Vec::new()))
    ));
    assert!(!holds(
        &mut s,
        cmp("x", NotEqual, CompareTarget::Value(k("v")))
    ));
}

#[test]
fn txn_compare_over_a_range_needs_every_key() {
    let mut s = abc_store();
    let mut c = cmp("a", CompareResult::Equal, CompareTarget::Version(1));
    c.range_end = k("b");
    assert!(holds(&mut s, c.clone()));
    put(&mut s, b"ab", b"again");
    assert!(!holds(&mut s, c));
}

#[test]
fn txn_runs_success_or_failure_branch() {
    let mut s = Store::default();
    put(&mut s, b"lock", b"free");
    let req = |s: &str| TxnRequest {
        compare: vec![cmp(
            "lock",
            CompareResult::Equal,
            CompareTarget::Value(k(s)),
        )],
        success: vec![RequestOp::Put(put_req(b"lock", b"taken"))],
        failure: vec![RequestOp::Range(range_req(b"lock", b""))],
    };
    let won = txn(&mut s, req("free")).expect("txn");
    assert!(won.succeeded);
    assert!(matches!(won.responses[..], [ResponseOp::Put(_)]));
    let lost = txn(&mut s, req("free")).expect("txn");
    assert!(!lost.succeeded);
    let [ResponseOp::Range(r)] = &lost.responses[..] else {
        panic!()
    };
    assert_eq!(r.kvs[0].value, k("taken"));
    assert_eq!(s.revision(), 3);
}

#[test]
fn txn_nested_transactions_run_their_own_branches() {
    let mut s = Store::default();
    put(&mut s, b"x", b"1");
    let inner = TxnRequest {
        compare: vec![cmp("x", CompareResult::Equal, CompareTarget::Value(k("2")))],
        success: vec![RequestOp::Put(put_req(b"inner-yes", b""))],
        failure: vec![RequestOp::Put(put_req(b"inner-no", b""))],
    };
    let outer = TxnRequest {
        compare: vec![cmp("x", CompareResult::Equal, CompareTarget::Value(k("1")))],
        success: vec![
            RequestOp::Put(put_req(b"outer", b"")),
            RequestOp::Txn(inner),
        ],
        failure: Vec::new(),
    };
    let resp = txn(&mut s, outer).expect("txn");
    assert!(resp.succeeded);
    let [ResponseOp::Put(_), ResponseOp::Txn(nested)] = &resp.responses[..] else {
        panic!()
    };
    assert!(!nested.succeeded);
    assert_eq!(nested.header.revision, 3);
    assert!(get(&s, b"inner-no").is_some() && get(&s, b"inner-yes").is_none());
    assert_eq!(s.revision(), 3);
}

#[test]
fn txn_compares_all_see_the_state_before_any_write() {
    let mut s = Store::default();
    // The nested compare is evaluated before the outer put runs.
    let inner = TxnRequest {
        compare: vec![cmp("k", CompareResult::Equal, CompareTarget::Version(0))],
        success: vec![RequestOp::Put(put_req(b"saw-nothing", b""))],
        failure: vec![RequestOp::Put(put_req(b"saw-put", b""))],
    };
    let outer = TxnRequest {
        success: vec![RequestOp::Put(put_req(b"k", b"v")), RequestOp::Txn(inner)],
        ..TxnRequest::default()
    };
    txn(&mut s, outer).expect("txn");
    assert!(get(&s, b"saw-nothing").is_some());
}

#[test]
fn txn_reads_see_the_writes_before_them() {
    let mut s = Store::default();
    put(&mut s, b"a", b"old");
    let resp = txn(
        &mut s,
        TxnRequest {
            success: vec![
                RequestOp::Range(range_req(b"a", b"")),
                RequestOp::Put(put_req(b"a", b"new")),
                RequestOp::Range(range_req(b"a", b"")),
                RequestOp::Range(RangeRequest {
                    revision: 2,
                    ..range_req(b"a", b"")
                }),
            ],
            ..TxnRequest::default()
        },
    )
    .expect("txn");
    let values: Vec<Vec<u8>> = resp
        .responses
        .iter()
        .filter_map(|r| match r {
            ResponseOp::Range(r) => Some(r.kvs[0].value.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(values, vec![k("old"), k("new"), k("old")]);
}

fn dup(success: Vec<RequestOp>) -> Result<(), KvError> {
    let mut s = Store::default();
    txn(
        &mut s,
        TxnRequest {
            success,
            ..TxnRequest::default()
        },
    )
    .map(|_| ())
}

fn p(key: &str) -> RequestOp {
    RequestOp::Put(put_req(key.as_bytes(), b""))
}

fn d(key: &str, end: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        key: k(key),
        range_end: k(end),
        prev_kv: false,
    })
}

fn nested(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
    RequestOp::Txn(TxnRequest {
        compare: Vec::new(),
        success,
        failure,
    })
}

#[test]
fn txn_refuses_writing_the_same_key_twice() {
    let err = dup(vec![p("a"), p("a")]).expect_err("put twice");
    assert_eq!(err, KvError::DuplicateKey);
    assert_eq!(
        err.to_string(),
        "etcdserver: duplicate key given in txn request"
    );
    assert_eq!(dup(vec![p("b"), d("a", "c")]), Err(KvError::DuplicateKey));
    assert_eq!(dup(vec![d("b", ""), p("b")]), Err(KvError::DuplicateKey));
    assert_eq!(
        dup(vec![p("a"), nested(vec![p("a")], vec![])]),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        dup(vec![
            nested(vec![p("a")], vec![]),
            nested(vec![], vec![p("a")])
        ]),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        dup(vec![d("a", "b"), nested(vec![p("a")], vec![])]),
        Err(KvError::DuplicateKey)
    );
    assert_eq!(
        dup(vec![
            nested(vec![d("a", "")], vec![]),
            nested(vec![p("a")], vec![])
        ]),
        Err(KvError::DuplicateKey)
    );
}

#[test]
fn txn_allows_what_etcd_allows() {
    // Overlapping deletes, a put next to a delete of another key, a range of
    // a key being written, and the two branches of one nested txn.
    assert_eq!(dup(vec![d("a", "c"), d("b", "d")]), Ok(()));
    assert_eq!(dup(vec![d("a", ""), p("b")]), Ok(()));
    assert_eq!(
        dup(vec![p("a"), RequestOp::Range(range_req(b"a", b""))]),
        Ok(())
    );
    assert_eq!(dup(vec![nested(vec![p("a")], vec![p("a")])]), Ok(()));
    // etcd's check lets these through too: a delete in a later nested txn
    // of a key put by an earlier one, and a `[0]` range end in a delete.
    assert_eq!(
        dup(vec![
            nested(vec![p("a")], vec![]),
            nested(vec![d("a", "")], vec![])
        ]),
        Ok(())
    );
    assert_eq!(dup(vec![d("a", "\0"), p("b")]), Ok(()));
}

#[test]
fn txn_quirk_put_then_delete_in_one_revision_deletes() {
    let mut s = Store::default();
    let resp = txn(
        &mut s,
        TxnRequest {
            success: vec![
                nested(vec![p("a")], vec![]),
                nested(vec![d("a", "")], vec![]),
            ],
            ..TxnRequest::default()
        },
    )
    .expect("txn");
    assert_eq!(resp.header.revision, 2);
    assert!(get(&s, b"a").is_none());
    let events = s.events_since(2, b"a", b"").expect("events");
    assert_eq!(events.len(), 2);
}

#[test]
fn txn_too_many_operations_is_refused() {
    let mut s = Store::default();
    let ops = |n: usize| (0..n).map(|i| p(&format!("k{i}"))).collect::<Vec<_>>();
    let ok = TxnRequest {
        success: ops(128),
        ..TxnRequest::default()
    };
    txn(&mut s, ok).expect("128 ops");
    let too_many = TxnRequest {
        failure: ops(129),
        ..TxnRequest::default()
    };
    let err = txn(&mut s, too_many).expect_err("129 ops");
    assert_eq!(err, KvError::TooManyOps { max_txn_ops: 128 });
    assert_eq!(
        err.to_string(),
        "etcdserver: too many operations in txn request"
    );
    let compares = TxnRequest {
        compare: (0..129)
            .map(|_| cmp("a", CompareResult::Equal, CompareTarget::Version(0)))
            .collect(),
        ..TxnRequest::default()
    };
    assert!(matches!(
        txn(&mut s, compares),
        Err(KvError::TooManyOps { .. })
    ));
    // A nested txn gets what its parent leaves: 100 + 29 > 128.
    let nest = TxnRequest {
        success: {
            let mut v = ops(99);
            v.push(RequestOp::Txn(TxnRequest {
                success: (0..29).map(|i| p(&format!("n{i}"))).collect(),
                ..TxnRequest::default()
            }));
            v
        },
        ..TxnRequest::default()
    };
    assert!(matches!(txn(&mut s, nest), Err(KvError::TooManyOps { .. })));
    let limits = Limits {
        max_txn_ops: 2,
        ..Limits::default()
    };
    let mut small = Store::new(limits);
    let three = TxnRequest {
        success: ops(3),
        ..TxnRequest::default()
    };
    assert_eq!(
        txn(&mut small, three),
        Err(KvError::TooManyOps { max_txn_ops: 2 })
    );
}

#[test]
fn txn_refused_by_a_state_check_changes_nothing() {
    let mut s = Store::default();
    put(&mut s, b"a", b"1");
    let before = s.state_hash();
    let mut leased = put_req(b"b", b"1");
    leased.lease = 99;
    let req = TxnRequest {
        success: vec![p("c"), RequestOp::Put(leased)],
        ..TxnRequest::default()
    };
    assert_eq!(txn(&mut s, req), Err(KvError::LeaseNotFound { id: 99 }));
    let req = TxnRequest {
        success: vec![
            p("c"),
            RequestOp::Range(RangeRequest {
                revision: 50,
                ..range_req(b"a", b"")
            }),
        ],
        ..TxnRequest::default()
    };
    assert_eq!(
        txn(&mut s, req),
        Err(KvError::FutureRevision {
            current_revision: 2
        })
    );
    // Only the branch that runs is checked.
    let mut leased = put_req(b"b", b"1");
    leased.lease = 99;
    let req = TxnRequest {
        compare: vec![cmp("a", CompareResult::Equal, CompareTarget::Value(k("1")))],
        success: vec![p("c")],
        failure: vec![RequestOp::Put(leased)],
    };
    assert_eq!(s.state_hash(), before);
    assert!(txn(&mut s, req).expect("txn").succeeded);
}

// ---- compaction --------------------------------------------------------

#[test]
fn compaction_fails_reads_below_and_keeps_reads_at_and_above() {
    let mut s = Store::default();
    for v in 1..=5 {
        put(&mut s, b"a", v.to_string().as_bytes()); // revs 2..=6
    }
    compact(&mut s, 4).expect("compact");
    assert_eq!(s.compact_revision(), 4);
    let mut req = range_req(b"a", b"");
    req.revision = 3;
    let err = s.range(&req).expect_err("compacted");
    assert_eq!(
        err,
        KvError::Compacted {
            compact_revision: 4
        }
    );
    assert_eq!(
        err.to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(err.code(), GrpcCode::OutOfRange);
    for (rev, want) in [(4, "3"), (5, "4"), (6, "5"), (0, "5")] {
        req.revision = rev;
        assert_eq!(s.range(&req).expect("range").kvs[0].value, k(want));
    }
    // Compaction does not raise the revision.
    assert_eq!(s.revision(), 6);
}

#[test]
fn compaction_errors_as_etcd() {
    let mut s = Store::default();
    put(&mut s, b"a", b"1");
    put(&mut s, b"a", b"2");
    assert_eq!(
        compact(&mut s, 4),
        Err(KvError::FutureRevision {
            current_revision: 3
        })
    );
    compact(&mut s, 3).expect("compact");
    assert_eq!(
        compact(&mut s, 3),
        Err(KvError::Compacted {
            compact_revision: 3
        })
    );
    assert_eq!(
        compact(&mut s, 2),
        Err(KvError::Compacted {
            compact_revision: 3
        })
    );
}

#[test]
fn compaction_frees_history_and_deleted_keys() {
    let mut s = Store::default();
    for i in 0..10 {
        for v in 0..5 {
            put(
                &mut s,
                format!("k{i}").as_bytes(),
                format!("{v}").as_bytes(),
            );
        }
    }
    delete(&mut s, b"k0", b"k5").expect("delete");
    assert_eq!(s.record_count(), 10 * 5 + 5);
    let rev = s.revision();
    compact(&mut s, rev - 1).expect("compact below the delete");
    // One version per live key, plus the 5 deleted keys' last puts and tombstones.
    assert_eq!(s.record_count(), 10 + 5);
    compact(&mut s, rev).expect("compact at the delete");
    // Tombstones at exactly the compact revision stay (a watch may start there).
    assert_eq!(s.record_count(), 5 + 5);
    put(&mut s, b"z", b"");
    let rev = s.revision();
    compact(&mut s, rev).expect("compact past it");
    assert_eq!(s.record_count(), 5 + 1);
    assert_eq!(s.key_count(), 6);
}

// ---- limits and error texts -------------------------------------------

#[test]
fn request_too_large_by_default_above_one_and_a_half_mebibytes() {
    let limits = Limits::default();
    assert_eq!(limits.max_request_bytes, 1_572_864);
    let fits = Command::Put(put_req(b"k", &vec![7; 1_572_864 - 64]));
    limits.check(&fits).expect("fits");
    let big = Command::Put(put_req(b"k", &vec![7; 1_572_864]));
    let err = limits.check(&big).expect_err("too large");
    assert!(matches!(
        err,
        KvError::RequestTooLarge {
            max_request_bytes: 1_572_864,
            ..
        }
    ));
    assert_eq!(err.to_string(), "etcdserver: request is too large");
    assert_eq!(err.code(), GrpcCode::InvalidArgument);
    assert_eq!(big.encoded_len(), big.encode().len());
}

#[test]
fn every_error_has_etcds_text_and_code() {
    let cases = [
        (
            KvError::EmptyKey,
            "etcdserver: key is not provided",
            GrpcCode::InvalidArgument,
        ),
        (
            KvError::KeyNotFound,
            "etcdserver: key not found",
            GrpcCode::InvalidArgument,
        ),
        (
            KvError::ValueProvided,
            "etcdserver: value is provided",
            GrpcCode::InvalidArgument,
        ),
        (
            KvError::LeaseProvided,
            "etcdserver: lease is provided",
            GrpcCode::InvalidArgument,
        ),
        (
            KvError::TooManyOps { max_txn_ops: 128 },
            "etcdserver: too many operations in txn request",
            GrpcCode::InvalidArgument,
        ),
        (
            KvError::DuplicateKey,
            "etcdserver: duplicate key given in txn request",
            GrpcCode::InvalidArgument,
        ),
        (
            KvError::Compacted {
                compact_revision: 1,
            },
            "etcdserver: mvcc: required revision has been compacted",
            GrpcCode::OutOfRange,
        ),
        (
            KvError::FutureRevision {
                current_revision: 1,
            },
            "etcdserver: mvcc: required revision is a future revision",
            GrpcCode::OutOfRange,
        ),
        (
            KvError::LeaseNotFound { id: 1 },
            "etcdserver: requested lease not found",
            GrpcCode::NotFound,
        ),
        (
            KvError::LeaseExists { id: 1 },
            "etcdserver: lease already exists",
            GrpcCode::FailedPrecondition,
        ),
        (
            KvError::LeaseTtlTooLarge { ttl: 1 },
            "etcdserver: too large lease TTL",
            GrpcCode::OutOfRange,
        ),
        (
            KvError::RequestTooLarge {
                size: 2,
                max_request_bytes: 1,
            },
            "etcdserver: request is too large",
            GrpcCode::InvalidArgument,
        ),
    ];
    for (err, text, code) in cases {
        assert_eq!(err.to_string(), text);
        assert_eq!(err.code(), code, "{err:?}");
    }
}
