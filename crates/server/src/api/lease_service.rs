//! etcd's `Lease` service: grant, revoke, the keep-alive stream, and the
//! two lease reads.
//!
//! Grants, revocations and keep-alives are commands: the leader stamps them
//! with its clock (DESIGN.md rule 3) and every replica applies them alike.

use std::sync::Arc;

use kv::{Command, KvError, Limits};
use tonic::{Request, Response, Status, Streaming};

use super::backend::{ApiError, Backend};
use super::status::{checked_propose, mismatched};
use super::stream::{ChannelStream, HeaderFill};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::lease_server::Lease;

/// Keep-alive answers in flight per stream before the task waits.
const KEEP_ALIVE_BUFFER: usize = 16;

/// The Lease service over a [`Backend`].
#[derive(Debug)]
pub struct LeaseService<B> {
    backend: Arc<B>,
    header: HeaderFill,
    limits: Limits,
}

impl<B: Backend> LeaseService<B> {
    /// The service for member `member_id` of cluster `cluster_id`.
    pub fn new(backend: Arc<B>, cluster_id: u64, member_id: u64) -> Self {
        LeaseService {
            backend,
            header: HeaderFill {
                cluster_id,
                member_id,
            },
            limits: Limits::default(),
        }
    }

    /// The same service checking requests against `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    async fn propose(&self, command: Command) -> Result<kv::Response, Status> {
        checked_propose(self.backend.as_ref(), &self.limits, command).await
    }
}

/// One keep-alive, as etcd's stream answers it: the lease's TTL, or TTL 0
/// (not an error) when the lease does not exist or has expired.
async fn keep_alive_once<B: Backend>(
    backend: &B,
    request: pb::LeaseKeepAliveRequest,
) -> Result<pb::LeaseKeepAliveResponse, Status> {
    let id = request.id;
    match backend
        .propose(Command::LeaseKeepAlive(request.into()))
        .await
    {
        Ok(kv::Response::LeaseKeepAlive(answer)) => Ok(answer.into()),
        Ok(_) => Err(mismatched("a keep-alive")),
        Err(ApiError::Kv(KvError::LeaseNotFound { .. })) => Ok(pb::LeaseKeepAliveResponse {
            header: None,
            id,
            ttl: 0,
        }),
        Err(error) => Err(error.into()),
    }
}

#[tonic::async_trait]
impl<B: Backend> Lease for LeaseService<B> {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let command = Command::LeaseGrant(request.into_inner().into());
        let kv::Response::LeaseGrant(answer) = self.propose(command).await? else {
            return Err(mismatched("a lease grant"));
        };
        let mut answer = pb::LeaseGrantResponse::from(answer);
        answer.header = self.header.fill(answer.header);
        Ok(Response::new(answer))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let command = Command::LeaseRevoke(request.into_inner().into());
        let kv::Response::LeaseRevoke(answer) = self.propose(command).await? else {
            return Err(mismatched("a lease revoke"));
        };
        let mut answer = pb::LeaseRevokeResponse::from(answer);
        answer.header = self.header.fill(answer.header);
        Ok(Response::new(answer))
    }

    type LeaseKeepAliveStream = ChannelStream<pb::LeaseKeepAliveResponse>;

    /// One answer per request, in order. The stream ends when the client
    /// closes its side or goes away, or with the error of a keep-alive the
    /// node could not serve (no leader, stopped, ...), as etcd's does.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, stream) = ChannelStream::channel(KEEP_ALIVE_BUFFER);
        let backend = Arc::clone(&self.backend);
        let header = self.header;
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    () = tx.closed() => break,
                    next = inbound.message() => next,
                };
                // End of the client's side, or a broken stream: done.
                let Ok(Some(request)) = next else { break };
                match keep_alive_once(backend.as_ref(), request).await {
                    Ok(mut answer) => {
                        answer.header = header.fill(answer.header);
                        if tx.send(Ok(answer)).await.is_err() {
                            break;
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let answer = self
            .backend
            .lease_time_to_live(request.into_inner().into())
            .await?;
        let mut answer = pb::LeaseTimeToLiveResponse::from(answer);
        answer.header = self.header.fill(answer.header);
        Ok(Response::new(answer))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let answer = self.backend.lease_leases().await?;
        let mut answer = pb::LeaseLeasesResponse::from(answer);
        answer.header = self.header.fill(answer.header);
        Ok(Response::new(answer))
    }
}
