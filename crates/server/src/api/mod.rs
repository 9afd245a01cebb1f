//! The etcd v3 gRPC services, written against [`Backend`].
//!
//! [`routes`] gives the five services etcdctl and etcd's client libraries
//! use (KV, Watch, Lease, Cluster, Maintenance), ready for
//! [`crate::client_port::router`] or a tonic server. Each service turns
//! requests into [`kv`] types ([`convert`]), checks writes against etcd's
//! limits before anything is proposed, calls the [`Backend`], and answers
//! errors with etcd's gRPC codes and texts ([`status`]).
//!
//! # The backend contract
//!
//! What the services rely on; [`MemBackend`] is a reference implementation
//! over one local store.
//!
//! - **`propose`** applies the command in log order and answers with the
//!   [`kv::Response`] of the same kind (a `Put` gets `Response::Put`, ...).
//!   The services have already run [`kv::Limits::check`] on it (with the
//!   limits every replica runs with), so size, empty keys, txn operation
//!   counts and duplicate keys are never the backend's concern; refusals that
//!   depend on state (a missing lease, a compacted revision) come back as
//!   [`ApiError::Kv`] with the store's error.
//! - **`range`** is linearizable unless `serializable`.
//! - **Watch sessions.** `watch_open` is called once per gRPC Watch stream
//!   and `watch_close` once when that stream ends (the client went away or
//!   its requests broke off). Watch ids belong to the session, as etcd's
//!   belong to the stream: a create with `watch_id` 0 gets the lowest free
//!   id, the first one 0 ([`kv::WatchHub`] does exactly this, one hub per
//!   session). On the session's stream:
//!   - every create accepted by `watch_create` (which returned `Ok`) gets
//!     exactly one response with `created` set, and the `created` responses
//!     come **in the order of the creates** (etcd's clients match them to
//!     their oldest pending create); a create refused by the hub (a
//!     duplicate id) gets `created` and `canceled` with the reason;
//!   - then the history from `start_revision`, then live events, in
//!     revision order with no gap and no repeat; a compacted
//!     `start_revision` gets, after `created`, a `canceled` response
//!     carrying the compact revision;
//!   - `watch_cancel` of a live watcher yields a `canceled` response
//!     (nothing for an unknown id);
//!   - `watch_progress` yields a response with watch id -1 and a revision
//!     `R` such that every event at or below `R` has already been put on the
//!     stream.
//!
//!   `watch_create` may also refuse with `Err(ApiError::Kv(..))`, which the
//!   service answers like etcd (`created` + `canceled`, watch id -1, the
//!   error text as `cancel_reason`); any other error ends the gRPC stream
//!   with that error. If the backend ends a session's stream itself, the
//!   client gets `Unavailable` "etcdserver: server stopped" and, being an
//!   etcd client, reconnects and resumes from its last revision.
//! - **Lease keep-alive** of a lease that does not exist (or has expired)
//!   is `Err(ApiError::Kv(KvError::LeaseNotFound))`; the stream answers it
//!   with TTL 0, as etcd does.
//! - **`hash_kv`** hashes the applied state at the revision it reports;
//!   replicas at the same revision must agree. **`snapshot`** returns bytes
//!   [`kv::Store::restore`] accepts (the services wrap them for etcdctl; see
//!   [`snapshot_file`]).
//! - **Headers.** `cluster_id` and `member_id` are fixed per member and are
//!   given to [`routes`]; response revisions come from the store's answers;
//!   `raft_term` is reported by `Status` only (0 elsewhere: it would cost a
//!   status round trip per request).

use std::sync::Arc;
use std::time::Duration;

use kv::Limits;

use crate::proto::etcdserverpb::cluster_server::ClusterServer;
use crate::proto::etcdserverpb::kv_server::KvServer;
use crate::proto::etcdserverpb::lease_server::LeaseServer;
use crate::proto::etcdserverpb::maintenance_server::MaintenanceServer;
use crate::proto::etcdserverpb::watch_server::WatchServer;

pub mod backend;
pub mod cluster_service;
pub mod convert;
pub mod kv_service;
pub mod lease_service;
pub mod maintenance_service;
pub mod mem_backend;
pub mod snapshot_file;
pub mod status;
pub mod stream;
pub mod watch_service;

pub use backend::{ApiError, Backend, MemberInfo, NodeStatus, WatchStream, published_member};
pub use cluster_service::ClusterService;
pub use convert::ConvertError;
pub use kv_service::KvService;
pub use lease_service::LeaseService;
pub use maintenance_service::{ETCD_VERSION, MaintenanceService};
pub use mem_backend::{MemBackend, MemConfig};
pub use watch_service::WatchService;

/// Largest gRPC message the services decode by default: well above etcd's
/// 1.5 MiB `--max-request-bytes`, so that a request over the limit is
/// decoded and answered with etcd's "etcdserver: request is too large"
/// rather than cut off by the transport (requests beyond this get gRPC's
/// `ResourceExhausted`).
pub const DEFAULT_MAX_DECODING_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// Room for gRPC and protobuf framing on top of `max_request_bytes` (etcd
/// allows 512 KiB).
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// How the services answer.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The cluster id in every response header.
    pub cluster_id: u64,
    /// This member's id in every response header.
    pub member_id: u64,
    /// The request limits, the same on every replica.
    pub limits: Limits,
    /// Largest request message decoded; raised to at least
    /// `limits.max_request_bytes` plus framing room.
    pub max_decoding_message_size: usize,
    /// Period of watch progress notifications (`None`: never); etcd's
    /// default is 10 minutes.
    pub watch_progress_interval: Option<Duration>,
}

impl ApiConfig {
    /// etcd's defaults for member `member_id` of cluster `cluster_id`.
    pub fn new(cluster_id: u64, member_id: u64) -> Self {
        ApiConfig {
            cluster_id,
            member_id,
            limits: Limits::default(),
            max_decoding_message_size: DEFAULT_MAX_DECODING_MESSAGE_SIZE,
            watch_progress_interval: Some(watch_service::DEFAULT_PROGRESS_INTERVAL),
        }
    }
}

/// The five etcd services over `backend`, with etcd's defaults.
pub fn routes<B: Backend>(
    backend: Arc<B>,
    cluster_id: u64,
    member_id: u64,
) -> tonic::service::Routes {
    routes_with(backend, &ApiConfig::new(cluster_id, member_id))
}

/// The five etcd services over `backend`, configured.
pub fn routes_with<B: Backend>(backend: Arc<B>, config: &ApiConfig) -> tonic::service::Routes {
    let (cluster_id, member_id) = (config.cluster_id, config.member_id);
    let max = config
        .max_decoding_message_size
        .max(config.limits.max_request_bytes + GRPC_OVERHEAD_BYTES);
    let kv = KvService::new(Arc::clone(&backend), cluster_id, member_id)
        .with_limits(config.limits.clone());
    let watch = WatchService::new(Arc::clone(&backend), cluster_id, member_id)
        .with_limits(&config.limits)
        .with_progress_interval(config.watch_progress_interval);
    let lease = LeaseService::new(Arc::clone(&backend), cluster_id, member_id)
        .with_limits(config.limits.clone());
    let cluster = ClusterService::new(Arc::clone(&backend), cluster_id, member_id);
    let maintenance = MaintenanceService::new(backend, cluster_id, member_id);
    tonic::service::Routes::new(KvServer::new(kv).max_decoding_message_size(max))
        .add_service(WatchServer::new(watch).max_decoding_message_size(max))
        .add_service(LeaseServer::new(lease).max_decoding_message_size(max))
        .add_service(ClusterServer::new(cluster).max_decoding_message_size(max))
        .add_service(MaintenanceServer::new(maintenance).max_decoding_message_size(max))
}
