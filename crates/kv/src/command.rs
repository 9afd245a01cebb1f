//! What goes into the replicated log, and what applying it gives back.
//!
//! A [`Command`] is a modifying request (reads are not commands: they are
//! served at the leader's applied point). Each is applied with an
//! [`ApplyContext`] stamped by the leader when it proposed the command, so
//! every replica computes lease deadlines from the same time.

use crate::cluster::{SetMembersRequest, SetMembersResponse};
use crate::types::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, Event,
    LeaseGrantRequest, LeaseGrantResponse, LeaseId, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, ResponseHeader, TxnRequest,
    TxnResponse,
};

/// Replicated facts that come with a command: the leader's clock reading
/// when it proposed it (DESIGN.md rule 3: never a replica's own clock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyContext {
    /// Leader-stamped time in milliseconds. The store never lets its time go
    /// backwards: an older stamp (from a new leader with a slower clock)
    /// counts as the latest stamp seen.
    pub now_ms: u64,
}

/// Revoke leases the leader found expired. Applied only to those that are
/// still expired at the command's time stamp: a keep-alive ordered before it
/// in the log wins.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseExpireRequest {
    /// The leases, as returned by [`crate::Store::expired_leases`].
    pub ids: Vec<LeaseId>,
}

/// The answer to a [`LeaseExpireRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseExpireResponse {
    /// Header; the revision after the last revocation.
    pub header: ResponseHeader,
    /// The leases actually revoked, in the order applied; each took its own
    /// revision if it had keys, as etcd revokes each lease separately.
    pub revoked: Vec<LeaseId>,
}

/// The answer to [`Command::LeaseRenewAll`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRenewAllResponse {
    /// Header; the current revision.
    pub header: ResponseHeader,
    /// How many leases got a fresh TTL.
    pub renewed: u64,
}

/// A modifying request, as replicated in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// etcd's `Put`.
    Put(PutRequest),
    /// etcd's `DeleteRange`.
    DeleteRange(DeleteRangeRequest),
    /// etcd's `Txn`.
    Txn(TxnRequest),
    /// etcd's `Compact`.
    Compact(CompactionRequest),
    /// etcd's `LeaseGrant`.
    LeaseGrant(LeaseGrantRequest),
    /// etcd's `LeaseRevoke`.
    LeaseRevoke(LeaseRevokeRequest),
    /// A keep-alive the leader accepted: the lease's deadline restarts at the
    /// command's time stamp.
    LeaseKeepAlive(LeaseKeepAliveRequest),
    /// Leader-decided expiry of the given leases.
    LeaseExpire(LeaseExpireRequest),
    /// A new leader's first command: every lease gets a fresh TTL from the
    /// command's time stamp, as etcd's lessor does on promotion, so no lease
    /// expires because of the leader change itself.
    LeaseRenewAll,
    /// A configuration change's side in the state machine: the member
    /// table after it.
    SetMembers(SetMembersRequest),
}

/// The answer to a [`Command`], one variant per command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// Answer to [`Command::Put`].
    Put(PutResponse),
    /// Answer to [`Command::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Answer to [`Command::Txn`].
    Txn(TxnResponse),
    /// Answer to [`Command::Compact`].
    Compact(CompactionResponse),
    /// Answer to [`Command::LeaseGrant`].
    LeaseGrant(LeaseGrantResponse),
    /// Answer to [`Command::LeaseRevoke`].
    LeaseRevoke(LeaseRevokeResponse),
    /// Answer to [`Command::LeaseKeepAlive`].
    LeaseKeepAlive(LeaseKeepAliveResponse),
    /// Answer to [`Command::LeaseExpire`].
    LeaseExpire(LeaseExpireResponse),
    /// Answer to [`Command::LeaseRenewAll`].
    LeaseRenewAll(LeaseRenewAllResponse),
    /// Answer to [`Command::SetMembers`].
    SetMembers(SetMembersResponse),
}

impl Response {
    /// The header, whatever the kind of response.
    pub fn header(&self) -> ResponseHeader {
        match self {
            Response::Put(r) => r.header,
            Response::DeleteRange(r) => r.header,
            Response::Txn(r) => r.header,
            Response::Compact(r) => r.header,
            Response::LeaseGrant(r) => r.header,
            Response::LeaseRevoke(r) => r.header,
            Response::LeaseKeepAlive(r) => r.header,
            Response::LeaseExpire(r) => r.header,
            Response::LeaseRenewAll(r) => r.header,
            Response::SetMembers(r) => r.header,
        }
    }
}

/// What applying a command produced: the answer for the client and the
/// watch events for the watch hub, in revision order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The answer.
    pub response: Response,
    /// Every change the command made, with `prev_kv` always filled in (the
    /// hub drops it for watchers that did not ask).
    pub events: Vec<Event>,
}
