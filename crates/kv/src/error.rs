//! The errors a request can get, with etcd's texts.
//!
//! Each variant's message is exactly the `desc` of etcd's gRPC error
//! (`api/v3rpc/rpctypes/error.go`), so clients that match on the text keep
//! working; [`KvError::code`] gives the gRPC status code etcd uses. Fields
//! carry the details for logs and for the caller, not for the message.

use crate::types::{LeaseId, Revision};

/// A request refused by the state machine. A refused request changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// A key field is empty.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a non-empty value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A transaction has more compares or operations than the limit.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps {
        /// The limit in force.
        max_txn_ops: usize,
    },
    /// A transaction writes the same key twice (etcd's interval rule).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A read, watch or compaction below the compacted revision.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted {
        /// The revision history was compacted at.
        compact_revision: Revision,
    },
    /// A read or compaction above the current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision {
        /// The store's current revision.
        current_revision: Revision,
    },
    /// The lease does not exist (or has expired and awaits revocation).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound {
        /// The lease asked for.
        id: LeaseId,
    },
    /// A grant asked for an id already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists {
        /// The lease asked for.
        id: LeaseId,
    },
    /// A grant asked for a TTL above the maximum.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge {
        /// The TTL asked for, in seconds.
        ttl: i64,
    },
    /// The encoded request is larger than the limit.
    #[error("etcdserver: request is too large")]
    RequestTooLarge {
        /// Encoded size in bytes.
        size: usize,
        /// The limit in bytes.
        max_request_bytes: usize,
    },
}

/// gRPC status codes the errors map to, as etcd maps them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcCode {
    /// `codes.InvalidArgument` (3).
    InvalidArgument,
    /// `codes.NotFound` (5).
    NotFound,
    /// `codes.FailedPrecondition` (9).
    FailedPrecondition,
    /// `codes.OutOfRange` (11).
    OutOfRange,
}

impl KvError {
    /// The gRPC status code etcd answers this error with.
    pub fn code(&self) -> GrpcCode {
        match self {
            KvError::EmptyKey
            | KvError::KeyNotFound
            | KvError::ValueProvided
            | KvError::LeaseProvided
            | KvError::TooManyOps { .. }
            | KvError::DuplicateKey
            | KvError::RequestTooLarge { .. } => GrpcCode::InvalidArgument,
            KvError::Compacted { .. }
            | KvError::FutureRevision { .. }
            | KvError::LeaseTtlTooLarge { .. } => GrpcCode::OutOfRange,
            KvError::LeaseNotFound { .. } => GrpcCode::NotFound,
            KvError::LeaseExists { .. } => GrpcCode::FailedPrecondition,
        }
    }
}
