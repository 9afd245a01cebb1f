//! What the gRPC services need from a node. The node runtime implements it
//! over the replicated log; tests implement it over a single local store.

use std::future::Future;

use kv::{KvError, WatchCreateRequest, WatchResponse};
use tokio::sync::mpsc;

/// Why a request could not be served. Each maps to etcd's gRPC status
/// code and text (see `api::status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The state machine refused the request, with etcd's text.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// No leader is known (an election is under way or a quorum is gone).
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The request was proposed but did not complete in time; it may or
    /// may not have taken effect.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The node is shutting down or stopped.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The node is overloaded; try again.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// A configuration change refused, with etcd's text.
    #[error(transparent)]
    Cluster(#[from] kv::ClusterError),
    /// A learner serves serializable reads and status only.
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
}

impl From<member::MemberError> for ApiError {
    fn from(e: member::MemberError) -> Self {
        match e {
            member::MemberError::Kv(e) => ApiError::Kv(e),
            member::MemberError::NoLeader => ApiError::NoLeader,
            member::MemberError::Timeout => ApiError::Timeout,
            member::MemberError::TooManyRequests => ApiError::TooManyRequests,
            member::MemberError::Cluster(e) => ApiError::Cluster(e),
            member::MemberError::NotSupportedForLearner => ApiError::NotSupportedForLearner,
        }
    }
}

/// A member as `MemberList` reports it: a row of the replicated member
/// table, with what the member published filled in.
pub type MemberInfo = kv::ClusterMember;

/// A member of the replicated table, with the name and client URLs it
/// published where the table has none (a member `MemberAdd` added has none
/// until it started: etcd's "unstarted").
pub fn published_member(
    m: &kv::ClusterMember,
    published_name: Option<&String>,
    published: Option<&Vec<String>>,
) -> MemberInfo {
    let mut info = m.clone();
    if info.name.is_empty() {
        info.name = published_name.cloned().unwrap_or_default();
    }
    if info.client_urls.is_empty() {
        info.client_urls = published.cloned().unwrap_or_default();
    }
    info
}

/// What `Status` and response headers report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// The cluster's id.
    pub cluster_id: u64,
    /// This member's id.
    pub member_id: u64,
    /// The leader's member id, 0 if none is known.
    pub leader: u64,
    /// The key-value store's revision.
    pub revision: i64,
    /// The leader's ballot round: etcd's "raft term".
    pub term: u64,
    /// The highest slot known chosen: etcd's "raft index".
    pub commit_index: u64,
    /// The highest slot applied: etcd's "raft applied index".
    pub applied_index: u64,
    /// Bytes of state (the snapshot size is a fair stand-in for etcd's db size).
    pub db_size: i64,
    /// Active alarms' texts (e.g. "NOSPACE"); empty when healthy.
    pub errors: Vec<String>,
}

/// A watch registered with the node: events arrive on the receiver until
/// it is cancelled or the node stops.
#[derive(Debug)]
pub struct WatchStream {
    /// Every response for this watcher's watches, in revision order.
    pub responses: mpsc::Receiver<WatchResponse>,
}

/// The node, as the gRPC services see it. Every method is safe to call
/// concurrently from many requests.
pub trait Backend: Send + Sync + 'static {
    /// Replicates a modifying command and answers once it is applied.
    fn propose(
        &self,
        command: kv::Command,
    ) -> impl Future<Output = Result<kv::Response, ApiError>> + Send;

    /// A range read: linearizable (read-index at the leader) unless
    /// `serializable`, which reads this member's applied state.
    fn range(
        &self,
        request: kv::RangeRequest,
        serializable: bool,
    ) -> impl Future<Output = Result<kv::RangeResponse, ApiError>> + Send;

    /// Lease time-to-live, read at the leader.
    fn lease_time_to_live(
        &self,
        request: kv::LeaseTimeToLiveRequest,
    ) -> impl Future<Output = Result<kv::LeaseTimeToLiveResponse, ApiError>> + Send;

    /// Every lease, read at the leader.
    fn lease_leases(
        &self,
    ) -> impl Future<Output = Result<kv::LeaseLeasesResponse, ApiError>> + Send;

    /// Opens a watch session: one per gRPC Watch stream. Creates, cancels
    /// and progress requests of that stream go through the returned id.
    fn watch_open(&self) -> impl Future<Output = Result<(u64, WatchStream), ApiError>> + Send;

    /// Creates a watch in session `session`; its created response and
    /// events arrive on the session's stream.
    fn watch_create(
        &self,
        session: u64,
        request: WatchCreateRequest,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Cancels a watch of session `session`.
    fn watch_cancel(&self, session: u64, watch_id: i64) -> impl Future<Output = ()> + Send;

    /// Asks for a progress notification on session `session`.
    fn watch_progress(&self, session: u64) -> impl Future<Output = ()> + Send;

    /// Closes a watch session (the client went away).
    fn watch_close(&self, session: u64) -> impl Future<Output = ()> + Send;

    /// The node's status.
    fn status(&self) -> impl Future<Output = Result<NodeStatus, ApiError>> + Send;

    /// The members of the cluster.
    fn members(&self) -> impl Future<Output = Result<Vec<MemberInfo>, ApiError>> + Send;

    /// A configuration change (etcd's `MemberAdd`, `MemberRemove`,
    /// `MemberUpdate`, `MemberPromote`), decided in the log; answers with
    /// the members after it.
    fn change_members(
        &self,
        change: kv::MemberChange,
    ) -> impl Future<Output = Result<Vec<MemberInfo>, ApiError>> + Send;

    /// The state hash at the applied point, with the revision and compact
    /// revision it covers: `(hash, revision, compact_revision)`.
    fn hash_kv(&self) -> impl Future<Output = Result<(u32, i64, i64), ApiError>> + Send;

    /// A snapshot of the whole state, as bytes.
    fn snapshot(&self) -> impl Future<Output = Result<Vec<u8>, ApiError>> + Send;
}
