//! etcd's `KV` service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Reads go to [`Backend::range`]; every write becomes a [`kv::Command`],
//! is checked against the [`Limits`] (size, empty keys, txn operation count,
//! duplicate keys) so a bad request is answered without touching the log,
//! and is then proposed.

use std::sync::Arc;

use kv::{Command, KvError, Limits};
use tonic::{Request, Response, Status};

use super::backend::Backend;
use super::status::{checked_propose, kv_status, mismatched};
use super::stream::HeaderFill;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::kv_server::Kv;

/// The KV service over a [`Backend`].
#[derive(Debug)]
pub struct KvService<B> {
    backend: Arc<B>,
    header: HeaderFill,
    limits: Limits,
}

impl<B: Backend> KvService<B> {
    /// The service for member `member_id` of cluster `cluster_id`, with
    /// etcd's default limits.
    pub fn new(backend: Arc<B>, cluster_id: u64, member_id: u64) -> Self {
        KvService {
            backend,
            header: HeaderFill {
                cluster_id,
                member_id,
            },
            limits: Limits::default(),
        }
    }

    /// The same service checking requests against `limits` (every replica
    /// must run with the same limits).
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    async fn propose(&self, command: Command) -> Result<kv::Response, Status> {
        checked_propose(self.backend.as_ref(), &self.limits, command).await
    }
}

#[tonic::async_trait]
impl<B: Backend> Kv for KvService<B> {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let request = request.into_inner();
        // etcd's checkRangeRequest: the empty key first, then sort options.
        if request.key.is_empty() {
            return Err(kv_status(&KvError::EmptyKey));
        }
        let serializable = request.serializable;
        let request = kv::RangeRequest::try_from(request)?;
        let answer = self.backend.range(request, serializable).await?;
        let mut answer = pb::RangeResponse::from(answer);
        answer.header = self.header.fill(answer.header);
        Ok(Response::new(answer))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let command = Command::Put(request.into_inner().into());
        let kv::Response::Put(answer) = self.propose(command).await? else {
            return Err(mismatched("a put"));
        };
        let mut answer = pb::PutResponse::from(answer);
        answer.header = self.header.fill(answer.header);
        Ok(Response::new(answer))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let command = Command::DeleteRange(request.into_inner().into());
        let kv::Response::DeleteRange(answer) = self.propose(command).await? else {
            return Err(mismatched("a delete"));
        };
        let mut answer = pb::DeleteRangeResponse::from(answer);
        answer.header = self.header.fill(answer.header);
        Ok(Response::new(answer))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let command = Command::Txn(request.into_inner().try_into()?);
        let kv::Response::Txn(answer) = self.propose(command).await? else {
            return Err(mismatched("a txn"));
        };
        let mut answer = pb::TxnResponse::from(answer);
        answer.header = self.header.fill(answer.header);
        Ok(Response::new(answer))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let command = Command::Compact(request.into_inner().into());
        let kv::Response::Compact(answer) = self.propose(command).await? else {
            return Err(mismatched("a compaction"));
        };
        let mut answer = pb::CompactionResponse::from(answer);
        answer.header = self.header.fill(answer.header);
        Ok(Response::new(answer))
    }
}
