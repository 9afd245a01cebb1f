//! Shorthands shared by the scenario tests.
#![allow(dead_code)]

use kv::{
    Applied, ApplyContext, Command, DeleteRangeRequest, KeyValue, KvError, PutRequest,
    RangeRequest, RangeResponse, Response, Store, TxnRequest, TxnResponse,
};

pub const CTX: ApplyContext = ApplyContext { now_ms: 0 };

pub fn at(now_ms: u64) -> ApplyContext {
    ApplyContext { now_ms }
}

pub fn put_req(key: &[u8], value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..PutRequest::default()
    }
}

pub fn put(store: &mut Store, key: &[u8], value: &[u8]) -> i64 {
    match apply(store, Command::Put(put_req(key, value))) {
        Ok(Applied {
            response: Response::Put(r),
            ..
        }) => r.header.revision,
        other => panic!("put failed: {other:?}"),
    }
}

pub fn apply(store: &mut Store, cmd: Command) -> Result<Applied, KvError> {
    store.apply(&cmd, CTX)
}

pub fn delete(store: &mut Store, key: &[u8], range_end: &[u8]) -> Result<Applied, KvError> {
    apply(
        store,
        Command::DeleteRange(DeleteRangeRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            prev_kv: true,
        }),
    )
}

pub fn txn(store: &mut Store, req: TxnRequest) -> Result<TxnResponse, KvError> {
    match apply(store, Command::Txn(req))?.response {
        Response::Txn(r) => Ok(r),
        other => panic!("not a txn response: {other:?}"),
    }
}

pub fn range_req(key: &[u8], range_end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..RangeRequest::default()
    }
}

pub fn get(store: &Store, key: &[u8]) -> Option<KeyValue> {
    store
        .range(&range_req(key, b""))
        .expect("range")
        .kvs
        .into_iter()
        .next()
}

pub fn keys(resp: &RangeResponse) -> Vec<Vec<u8>> {
    resp.kvs.iter().map(|kv| kv.key.clone()).collect()
}

pub fn k(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}
