//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use server::proto::etcdserverpb::kv_server::Kv;
use server::proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use server::proto::mvccpb::KeyValue;
use tonic::{Request, Response, Status};

/// A tiny KV service over a map: enough to see requests and responses cross
/// the generated code and the wire intact.
#[derive(Debug, Default)]
pub struct MapKv {
    state: Mutex<(i64, BTreeMap<Vec<u8>, KeyValue>)>,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        cluster_id: 1,
        member_id: 1,
        revision,
        raft_term: 1,
    })
}

#[tonic::async_trait]
impl Kv for MapKv {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let request = request.into_inner();
        let state = self
            .state
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        let kvs: Vec<KeyValue> = if request.range_end.is_empty() {
            state.1.get(&request.key).cloned().into_iter().collect()
        } else {
            state
                .1
                .range(request.key.clone()..request.range_end.clone())
                .map(|(_, kv)| kv.clone())
                .collect()
        };
        Ok(Response::new(RangeResponse {
            header: header(state.0),
            count: kvs.len() as i64,
            kvs,
            more: false,
        }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let request = request.into_inner();
        if request.key.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        let mut state = self
            .state
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        state.0 += 1;
        let revision = state.0;
        let prev = state.1.get(&request.key).cloned();
        let kv = KeyValue {
            key: request.key.clone(),
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: request.value,
            lease: request.lease,
        };
        state.1.insert(request.key, kv);
        Ok(Response::new(PutResponse {
            header: header(revision),
            prev_kv: if request.prev_kv { prev } else { None },
        }))
    }

    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}
