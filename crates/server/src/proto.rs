//! etcd's v3 API, generated at build time from `proto/` (see `build.rs`).
//!
//! The package, service, method, message and field names and the field
//! numbers are etcd's, so etcdctl and the etcd client libraries talk to
//! synod unchanged. Field names follow prost's snake case: etcd's `peerURLs`
//! is `peer_ur_ls`, `TTL` is `ttl`, `ID` is `id`.

/// The key-value records: `KeyValue` and `Event`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// The services (KV, Watch, Lease, Cluster, Maintenance), their messages,
/// server traits (`*_server`) and clients (`*_client`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}
