//! etcd's `Cluster` service: the member list and the configuration
//! changes, each decided in the log (see `paxos::multi::membership`), with
//! etcd's checks and errors.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::backend::{Backend, MemberInfo};
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
            is_learner: m.is_learner,
        }
    }
}

/// A fresh member id: random and never reused, as etcd's.
fn fresh_member_id() -> Result<u64, Status> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| {
        Status::unavailable(format!("etcdserver: no randomness for a member id: {e}"))
    })?;
    Ok(u64::from_le_bytes(bytes).max(1))
}

/// Peer URLs as etcd checks them: at least one, each a URL.
fn check_peer_urls(urls: &[String]) -> Result<(), Status> {
    if urls.is_empty() {
        return Err(Status::invalid_argument(
            "etcdserver: member peer URLs must not be empty",
        ));
    }
    for url in urls {
        let valid = url
            .split_once("://")
            .is_some_and(|(scheme, rest)| !scheme.is_empty() && !rest.is_empty());
        if !valid {
            return Err(Status::invalid_argument(format!(
                "etcdserver: invalid peer URL {url:?}: URLs must look like http://host:port"
            )));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl<B: Backend> Cluster for ClusterService<B> {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let request = request.into_inner();
        check_peer_urls(&request.peer_ur_ls)?;
        let id = fresh_member_id()?;
        let members = self
            .backend
            .change_members(kv::MemberChange::Add {
                id,
                peer_urls: request.peer_ur_ls,
                is_learner: request.is_learner,
            })
            .await?;
        let member = members.iter().find(|m| m.id == id).cloned().map(Into::into);
        Ok(Response::new(pb::MemberAddResponse {
            header: self.header.fill(None),
            member,
            members: members.into_iter().map(Into::into).collect(),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let id = request.into_inner().id;
        let members = self
            .backend
            .change_members(kv::MemberChange::Remove { id })
            .await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: self.header.fill(None),
            members: members.into_iter().map(Into::into).collect(),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        check_peer_urls(&request.peer_ur_ls)?;
        let members = self
            .backend
            .change_members(kv::MemberChange::Update {
                id: request.id,
                peer_urls: request.peer_ur_ls,
            })
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: self.header.fill(None),
            members: members.into_iter().map(Into::into).collect(),
        }))
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
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let id = request.into_inner().id;
        let members = self
            .backend
            .change_members(kv::MemberChange::Promote { id })
            .await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: self.header.fill(None),
            members: members.into_iter().map(Into::into).collect(),
        }))
    }
}
