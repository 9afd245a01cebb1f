//! Golden encodings: the hand-written protos must put etcd's field numbers
//! on the wire. Each expected byte string is written from etcd's rpc.proto
//! and kv.proto field numbers by hand (tag = number << 3 | wire type).

use prost::Message;
use server::proto::etcdserverpb::{
    Compare, LeaseGrantResponse, Member, PutRequest, RangeRequest, RequestOp, StatusResponse,
    TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse, compare, request_op,
    watch_request,
};
use server::proto::mvccpb::{Event, KeyValue, event};

#[test]
fn put_request_fields() {
    let put = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 5,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    assert_eq!(
        put.encode_to_vec(),
        [
            0x0a, 1, b'k', 0x12, 1, b'v', 0x18, 5, 0x20, 1, 0x28, 1, 0x30, 1
        ]
    );
}

#[test]
fn range_request_fields() {
    let range = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 1,
        revision: 2,
        sort_order: 2,  // DESCEND
        sort_target: 4, // VALUE
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 3,
        max_mod_revision: 4,
        min_create_revision: 5,
        max_create_revision: 6,
    };
    assert_eq!(
        range.encode_to_vec(),
        [
            0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 1, 0x20, 2, 0x28, 2, 0x30, 4, 0x38, 1, 0x40, 1,
            0x48, 1, 0x50, 3, 0x58, 4, 0x60, 5, 0x68, 6
        ]
    );
}

#[test]
fn compare_oneof_and_range_end_64() {
    let cmp = Compare {
        result: 3, // NOT_EQUAL
        target: 4, // LEASE
        key: b"k".to_vec(),
        target_union: Some(compare::TargetUnion::Lease(7)),
        range_end: b"z".to_vec(),
    };
    // range_end = 64: tag 64 << 3 | 2 = 514 = varint [0x82, 0x04].
    assert_eq!(
        cmp.encode_to_vec(),
        [
            0x08, 3, 0x10, 4, 0x1a, 1, b'k', 0x40, 7, 0x82, 0x04, 1, b'z'
        ]
    );
    let value = Compare {
        target_union: Some(compare::TargetUnion::Value(b"x".to_vec())),
        ..Default::default()
    };
    assert_eq!(value.encode_to_vec(), [0x3a, 1, b'x']);
}

#[test]
fn txn_nests_request_ops() {
    let txn = TxnRequest {
        compare: vec![],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestTxn(TxnRequest::default())),
        }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest::default())),
        }],
    };
    // success = 2 holding request_txn = 4 (empty); failure = 3 holding request_put = 2.
    assert_eq!(txn.encode_to_vec(), [0x12, 2, 0x22, 0, 0x1a, 2, 0x12, 0]);
}

#[test]
fn watch_fields() {
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                key: b"k".to_vec(),
                start_revision: 9,
                progress_notify: true,
                filters: vec![1], // NODELETE
                prev_kv: true,
                watch_id: 3,
                fragment: true,
                ..Default::default()
            },
        )),
    };
    assert_eq!(
        create.encode_to_vec(),
        [
            0x0a, 16, 0x0a, 1, b'k', 0x18, 9, 0x20, 1, 0x2a, 1, 1, 0x30, 1, 0x38, 3, 0x40, 1
        ]
    );
    let response = WatchResponse {
        watch_id: 3,
        created: true,
        canceled: true,
        compact_revision: 4,
        cancel_reason: "x".into(),
        fragment: true,
        events: vec![Event {
            r#type: event::EventType::Delete as i32,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                create_revision: 1,
                mod_revision: 2,
                version: 3,
                value: b"v".to_vec(),
                lease: 4,
            }),
            prev_kv: None,
        }],
        header: None,
    };
    assert_eq!(
        response.encode_to_vec(),
        [
            0x10, 3, 0x18, 1, 0x20, 1, 0x28, 4, 0x32, 1, b'x', 0x38, 1, // fields 2..7
            0x5a, 18, // events = 11
            0x08, 1, 0x12, 14, // Event.type, Event.kv
            0x0a, 1, b'k', 0x10, 1, 0x18, 2, 0x20, 3, 0x2a, 1, b'v', 0x30, 4
        ]
    );
}

#[test]
fn lease_member_and_status_fields() {
    let grant = LeaseGrantResponse {
        header: None,
        id: 1,
        ttl: 2,
        error: "e".into(),
    };
    assert_eq!(grant.encode_to_vec(), [0x10, 1, 0x18, 2, 0x22, 1, b'e']);
    let member = Member {
        id: 1,
        name: "n".into(),
        peer_ur_ls: vec!["p".into()],
        client_ur_ls: vec!["c".into()],
        is_learner: true,
    };
    assert_eq!(
        member.encode_to_vec(),
        [
            0x08, 1, 0x12, 1, b'n', 0x1a, 1, b'p', 0x22, 1, b'c', 0x28, 1
        ]
    );
    let status = StatusResponse {
        version: "3.6.0".into(),
        leader: 2,
        raft_index: 3,
        raft_term: 4,
        raft_applied_index: 5,
        db_size_in_use: 6,
        ..Default::default()
    };
    assert_eq!(
        status.encode_to_vec(),
        [
            0x12, 5, b'3', b'.', b'6', b'.', b'0', 0x20, 2, 0x28, 3, 0x30, 4, 0x38, 5, 0x48, 6
        ]
    );
}
