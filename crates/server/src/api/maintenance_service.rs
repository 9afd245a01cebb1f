//! etcd's `Maintenance` service: Status, HashKV, Hash, Alarm, Defragment,
//! Snapshot. MoveLeader and Downgrade are refused.

use std::sync::Arc;

use kv::KvError;
use tonic::{Request, Response, Status};

use super::backend::Backend;
use super::snapshot_file::SnapshotStream;
use super::status::{kv_status, unimplemented};
use super::stream::HeaderFill;
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::maintenance_server::Maintenance;

/// The etcd server version synod reports in `Status` and snapshots: the
/// API level it implements. etcdctl and the client libraries only print it
/// (or compare it against the 3.x minimum), so 3.5 is the honest choice.
pub const ETCD_VERSION: &str = "3.5.0";

/// etcd's text in `Status.errors` when no leader is known.
const NO_LEADER: &str = "etcdserver: no leader";

/// The Maintenance service over a [`Backend`].
#[derive(Debug)]
pub struct MaintenanceService<B> {
    backend: Arc<B>,
    header: HeaderFill,
}

impl<B: Backend> MaintenanceService<B> {
    /// The service for member `member_id` of cluster `cluster_id`.
    pub fn new(backend: Arc<B>, cluster_id: u64, member_id: u64) -> Self {
        MaintenanceService {
            backend,
            header: HeaderFill {
                cluster_id,
                member_id,
            },
        }
    }
}

#[tonic::async_trait]
impl<B: Backend> Maintenance for MaintenanceService<B> {
    /// No alarms are kept: GET lists none; ACTIVATE and DEACTIVATE are
    /// acknowledged and change nothing.
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let request = request.into_inner();
        if AlarmAction::try_from(request.action).is_err() {
            return Err(Status::invalid_argument(format!(
                "etcdserver: invalid alarm action: {}",
                request.action
            )));
        }
        if pb::AlarmType::try_from(request.alarm).is_err() {
            return Err(Status::invalid_argument(format!(
                "etcdserver: invalid alarm type: {}",
                request.alarm
            )));
        }
        Ok(Response::new(pb::AlarmResponse {
            header: self.header.fill(None),
            alarms: Vec::new(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let status = self.backend.status().await?;
        let mut errors = status.errors;
        if status.leader == 0 && !errors.iter().any(|e| e == NO_LEADER) {
            errors.push(NO_LEADER.to_owned());
        }
        let header = self.header.fill(Some(pb::ResponseHeader {
            revision: status.revision,
            raft_term: status.term,
            ..pb::ResponseHeader::default()
        }));
        Ok(Response::new(pb::StatusResponse {
            header,
            version: ETCD_VERSION.to_owned(),
            db_size: status.db_size,
            leader: status.leader,
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: status.applied_index,
            errors,
            db_size_in_use: status.db_size,
            is_learner: false,
            storage_version: String::new(),
            db_size_quota: 0,
            downgrade_info: Some(pb::DowngradeInfo::default()),
        }))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        // Nothing to defragment: the store keeps no free pages.
        Ok(Response::new(pb::DefragmentResponse {
            header: self.header.fill(None),
        }))
    }

    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let (hash, revision, _) = self.backend.hash_kv().await?;
        Ok(Response::new(pb::HashResponse {
            header: self.header.at(revision),
            hash,
        }))
    }

    /// The hash at the current revision (`revision` 0 or the current one).
    /// A future revision gets etcd's future-revision error, a compacted one
    /// etcd's compacted error; an older, uncompacted one is refused, since
    /// the backend hashes only its applied state.
    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let asked = request.into_inner().revision;
        let (hash, revision, compact_revision) = self.backend.hash_kv().await?;
        if asked > revision {
            return Err(kv_status(&KvError::FutureRevision {
                current_revision: revision,
            }));
        }
        if asked > 0 && asked < compact_revision {
            return Err(kv_status(&KvError::Compacted { compact_revision }));
        }
        if asked > 0 && asked != revision {
            return Err(Status::failed_precondition(format!(
                "synod: HashKV is computed at the current revision ({revision}) only, not at {asked}"
            )));
        }
        Ok(Response::new(pb::HashKvResponse {
            header: self.header.at(revision),
            hash,
            compact_revision,
            hash_revision: revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// The backend's snapshot in etcd's stream form; see
    /// [`super::snapshot_file`] for the layout.
    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let snapshot = self.backend.snapshot().await?;
        Ok(Response::new(SnapshotStream::new(
            snapshot,
            self.header.fill(None),
            ETCD_VERSION,
        )))
    }

    async fn move_leader(
        &self,
        _request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        Err(unimplemented(
            "MoveLeader (Paxos leadership is not transferable on request)",
        ))
    }

    async fn downgrade(
        &self,
        _request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}
