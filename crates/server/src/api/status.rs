//! Errors as gRPC statuses, with etcd's codes and texts.
//!
//! etcd's clients recognise server errors by the status message (clientv3's
//! `rpctypes.Error` looks the text up in a table; etcdctl prints it), so the
//! texts here are etcd's `rpctypes` descriptions to the byte, and the codes
//! are the ones etcd pairs with them.

use kv::{GrpcCode, KvError};
use tonic::{Code, Status};

use super::backend::ApiError;
use super::convert::ConvertError;

/// The gRPC code for one of kv's codes.
pub fn grpc_code(code: GrpcCode) -> Code {
    match code {
        GrpcCode::InvalidArgument => Code::InvalidArgument,
        GrpcCode::NotFound => Code::NotFound,
        GrpcCode::FailedPrecondition => Code::FailedPrecondition,
        GrpcCode::OutOfRange => Code::OutOfRange,
    }
}

/// A state machine refusal, with etcd's code and text (e.g. a compacted
/// revision: `OutOfRange`, "etcdserver: mvcc: required revision has been
/// compacted").
pub fn kv_status(err: &KvError) -> Status {
    Status::new(grpc_code(err.code()), err.to_string())
}

/// The gRPC code etcd answers an [`ApiError`] with.
pub fn api_code(err: &ApiError) -> Code {
    match err {
        ApiError::Kv(e) => grpc_code(e.code()),
        ApiError::NoLeader | ApiError::Timeout | ApiError::Stopped => Code::Unavailable,
        ApiError::TooManyRequests => Code::ResourceExhausted,
        ApiError::NotSupportedForLearner => Code::Unavailable,
        ApiError::Cluster(e) => match e {
            kv::ClusterError::MemberNotFound => Code::NotFound,
            kv::ClusterError::Unhealthy => Code::Unavailable,
            kv::ClusterError::PeerUrlExists
            | kv::ClusterError::MemberExists
            | kv::ClusterError::NotLearner
            | kv::ClusterError::LearnerNotReady
            | kv::ClusterError::TooManyLearners
            | kv::ClusterError::NotEnoughStartedMembers
            | kv::ClusterError::NoVoterLeft => Code::FailedPrecondition,
        },
    }
}

/// An [`ApiError`] as etcd answers it.
pub fn api_status(err: &ApiError) -> Status {
    Status::new(api_code(err), err.to_string())
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        api_status(&err)
    }
}

impl From<ConvertError> for Status {
    /// A malformed request: always `InvalidArgument` (etcd's own text where
    /// etcd has one, e.g. "etcdserver: invalid sort option").
    fn from(err: ConvertError) -> Status {
        Status::invalid_argument(err.to_string())
    }
}

/// The answer to an etcd Cluster/Maintenance call synod does not offer.
pub fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("synod: {what} is not supported"))
}

/// The backend answered a command with a response of another kind: a bug,
/// reported rather than panicked on.
pub fn mismatched(what: &str) -> Status {
    Status::internal(format!(
        "synod: backend answered {what} with another response kind"
    ))
}

/// Checks a command against etcd's limits, so that a bad request is
/// answered without touching the log, then proposes it.
pub async fn checked_propose<B: super::Backend>(
    backend: &B,
    limits: &kv::Limits,
    command: kv::Command,
) -> Result<kv::Response, Status> {
    limits.check(&command).map_err(|e| kv_status(&e))?;
    Ok(backend.propose(command).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(err: ApiError, code: Code, text: &str) {
        let status = Status::from(err);
        assert_eq!(status.code(), code, "{text}");
        assert_eq!(status.message(), text);
    }

    #[test]
    fn codes_and_texts_are_etcds() {
        check(
            ApiError::Kv(KvError::Compacted {
                compact_revision: 3,
            }),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        );
        check(
            ApiError::Kv(KvError::FutureRevision {
                current_revision: 3,
            }),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        );
        check(
            ApiError::Kv(KvError::LeaseNotFound { id: 1 }),
            Code::NotFound,
            "etcdserver: requested lease not found",
        );
        check(
            ApiError::Kv(KvError::LeaseExists { id: 1 }),
            Code::FailedPrecondition,
            "etcdserver: lease already exists",
        );
        check(
            ApiError::Kv(KvError::LeaseTtlTooLarge { ttl: 1 }),
            Code::OutOfRange,
            "etcdserver: too large lease TTL",
        );
        check(
            ApiError::Kv(KvError::RequestTooLarge {
                size: 2,
                max_request_bytes: 1,
            }),
            Code::InvalidArgument,
            "etcdserver: request is too large",
        );
        check(
            ApiError::Kv(KvError::TooManyOps { max_txn_ops: 128 }),
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request",
        );
        check(
            ApiError::Kv(KvError::EmptyKey),
            Code::InvalidArgument,
            "etcdserver: key is not provided",
        );
        check(
            ApiError::Kv(KvError::DuplicateKey),
            Code::InvalidArgument,
            "etcdserver: duplicate key given in txn request",
        );
        check(
            ApiError::Kv(KvError::KeyNotFound),
            Code::InvalidArgument,
            "etcdserver: key not found",
        );
        check(
            ApiError::Kv(KvError::ValueProvided),
            Code::InvalidArgument,
            "etcdserver: value is provided",
        );
        check(
            ApiError::Kv(KvError::LeaseProvided),
            Code::InvalidArgument,
            "etcdserver: lease is provided",
        );
        check(
            ApiError::NoLeader,
            Code::Unavailable,
            "etcdserver: no leader",
        );
        check(
            ApiError::Timeout,
            Code::Unavailable,
            "etcdserver: request timed out",
        );
        check(
            ApiError::Stopped,
            Code::Unavailable,
            "etcdserver: server stopped",
        );
        check(
            ApiError::TooManyRequests,
            Code::ResourceExhausted,
            "etcdserver: too many requests",
        );
        check(
            ApiError::NotSupportedForLearner,
            Code::Unavailable,
            "etcdserver: rpc not supported for learner",
        );
        check(
            ApiError::Cluster(kv::ClusterError::MemberNotFound),
            Code::NotFound,
            "etcdserver: member not found",
        );
        check(
            ApiError::Cluster(kv::ClusterError::PeerUrlExists),
            Code::FailedPrecondition,
            "etcdserver: Peer URLs already exists",
        );
        check(
            ApiError::Cluster(kv::ClusterError::LearnerNotReady),
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member which is in sync with leader",
        );
        check(
            ApiError::Cluster(kv::ClusterError::NotEnoughStartedMembers),
            Code::FailedPrecondition,
            "etcdserver: re-configuration failed due to not enough started members",
        );
    }

    #[test]
    fn malformed_requests_are_invalid_arguments() {
        let status = Status::from(ConvertError::InvalidSortOption);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "etcdserver: invalid sort option");
        let status = Status::from(ConvertError::EmptyRequestOp);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "etcdserver: key not found");
        let status = Status::from(ConvertError::UnknownEnum {
            field: "compare target",
            value: 9,
        });
        assert_eq!(status.code(), Code::InvalidArgument);
    }
}
