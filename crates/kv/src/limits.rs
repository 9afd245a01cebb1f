//! The configured limits, etcd's defaults, and the checks a request must pass
//! before it is proposed.
//!
//! Every replica must run with the same [`Limits`]: they decide which
//! commands are refused, and refusals are part of the replicated outcome.

use crate::command::Command;
use crate::error::KvError;
use crate::txn;
use crate::types::{DeleteRangeRequest, PutRequest, RangeRequest};

/// etcd's default `--max-request-bytes`: 1.5 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// etcd's `MaxLeaseTTL`: 9,000,000,000 seconds.
pub const MAX_LEASE_TTL_S: i64 = 9_000_000_000;
/// etcd's minimum lease TTL with its default election timeout (1 s):
/// ceil(1.5 × election timeout) = 2 s.
pub const DEFAULT_MIN_LEASE_TTL_S: i64 = 2;

/// Limits of the state machine; the defaults are etcd's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded command accepted, in bytes (etcd:
    /// `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most compares, or operations per branch, in a transaction, counted
    /// along every nesting path as etcd counts (etcd: `--max-txn-ops`).
    pub max_txn_ops: usize,
    /// Granted TTLs below this are raised to it, in seconds.
    pub min_lease_ttl_s: i64,
    /// Grants above this TTL are refused, in seconds.
    pub max_lease_ttl_s: i64,
    /// Most answers the exactly-once table holds over all its clients
    /// (each keeps up to a window of them); the least recently active
    /// client is forgotten first.
    pub max_session_answers: usize,
    /// A client silent for longer than this (leader-stamped time) is
    /// forgotten, in milliseconds.
    pub session_ttl_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            min_lease_ttl_s: DEFAULT_MIN_LEASE_TTL_S,
            max_lease_ttl_s: MAX_LEASE_TTL_S,
            max_session_answers: 65_536,
            session_ttl_ms: 10 * 60 * 1000,
        }
    }
}

impl Limits {
    /// Everything a command must satisfy regardless of the store's state:
    /// its encoded size, then the request checks etcd's gRPC layer makes
    /// (empty keys, `ignore_*` with a value or lease, the number of txn
    /// operations, the duplicate-key rule). The server calls this before
    /// proposing, so refused commands never reach the log.
    pub fn check(&self, cmd: &Command) -> Result<(), KvError> {
        let size = cmd.encoded_len();
        if size > self.max_request_bytes {
            return Err(KvError::RequestTooLarge {
                size,
                max_request_bytes: self.max_request_bytes,
            });
        }
        self.check_request(cmd)
    }

    /// The state-independent request checks of [`Limits::check`] without the
    /// size check; `apply` runs these too, so a command that slipped past
    /// the server is refused alike on every replica.
    pub fn check_request(&self, cmd: &Command) -> Result<(), KvError> {
        match cmd {
            Command::Put(req) => check_put(req),
            Command::DeleteRange(req) => check_delete(req),
            Command::Txn(req) => {
                txn::check_txn_request(req, self.max_txn_ops)?;
                txn::check_intervals(&req.success)?;
                txn::check_intervals(&req.failure)?;
                Ok(())
            }
            Command::Compact(_)
            | Command::LeaseGrant(_)
            | Command::LeaseRevoke(_)
            | Command::LeaseKeepAlive(_)
            | Command::LeaseExpire(_)
            | Command::LeaseRenewAll
            | Command::SetMembers(_) => Ok(()),
        }
    }
}

/// etcd's `checkRangeRequest`.
pub(crate) fn check_range(req: &RangeRequest) -> Result<(), KvError> {
    if req.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkPutRequest`.
pub(crate) fn check_put(req: &PutRequest) -> Result<(), KvError> {
    if req.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if req.ignore_lease && req.lease != crate::types::NO_LEASE {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// etcd's `checkDeleteRequest`.
pub(crate) fn check_delete(req: &DeleteRangeRequest) -> Result<(), KvError> {
    if req.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}
