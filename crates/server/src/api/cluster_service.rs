//! etcd's `Cluster` service: the member list. Membership changes go through
//! synod's own reconfiguration, not this API, so they are refused.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::backend::{Backend, MemberInfo};
use super::status::unimplemented;
use super::stream::HeaderFill;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::cluster_server::Cluster;

/// The Cluster service over a [`Backend`].
#[derive(Debug)]
pub struct ClusterService<B> {
    backend: Arc<B>,
    header: HeaderFill,
}

impl<B: Backend> ClusterService<B> {
    /// The service for member `member_id` of cluster `cluster_id`.
    pub fn new(backend: Arc<B>, cluster_id: u64, member_id: u64) -> Self {
        ClusterService {
            backend,
            header: HeaderFill {
                cluster_id,
                member_id,
            },
        }
    }
}

impl From<MemberInfo> for pb::Member {
    fn from(m: MemberInfo) -> Self {
        pb::Member {
            id: m.id,
            name: m.name,
            peer_ur_ls: m.peer_urls,
            client_ur_ls: m.client_urls,
            is_learner: false,
        }
    }
}

/// Why membership changes are refused here.
const MEMBERSHIP: &str = "changing membership through etcd's Cluster API (synod reconfigures \
                          through its own Paxos reconfiguration)";

#[tonic::async_trait]
impl<B: Backend> Cluster for ClusterService<B> {
    async fn member_add(
        &self,
        _request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(unimplemented(MEMBERSHIP))
    }

    async fn member_remove(
        &self,
        _request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(unimplemented(MEMBERSHIP))
    }

    async fn member_update(
        &self,
        _request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(unimplemented(MEMBERSHIP))
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let members = self.backend.members().await?;
        Ok(Response::new(pb::MemberListResponse {
            header: self.header.fill(None),
            members: members.into_iter().map(Into::into).collect(),
        }))
    }

    async fn member_promote(
        &self,
        _request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(unimplemented(MEMBERSHIP))
    }
}
