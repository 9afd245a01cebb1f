//! What clients ask a member, what it answers, and how it refuses.

use kv::{
    KvError, LeaseLeasesResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, RangeRequest,
    RangeResponse, Store,
};

/// A client's request, as the member takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Replicate a command through the log; answered once applied here.
    Propose(kv::Command),
    /// A linearizable read: answered once this member's store has applied
    /// everything the leader had committed when the read arrived there
    /// (read index), after a quorum confirmed that leader.
    Read(Query),
}

/// A read of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// etcd's `Range`.
    Range(RangeRequest),
    /// etcd's `LeaseTimeToLive`.
    LeaseTimeToLive(LeaseTimeToLiveRequest),
    /// etcd's `LeaseLeases`.
    LeaseLeases,
}

impl Query {
    /// Answers the query from `store`; `now_ms`, the replicated time, says
    /// how much time a lease has left.
    pub fn serve(&self, store: &Store, now_ms: u64) -> Result<Reply, MemberError> {
        match self {
            Query::Range(r) => Ok(Reply::Range(store.range(r)?)),
            Query::LeaseTimeToLive(r) => {
                Ok(Reply::LeaseTimeToLive(store.lease_time_to_live(r, now_ms)))
            }
            Query::LeaseLeases => Ok(Reply::LeaseLeases(store.lease_leases())),
        }
    }
}

/// A member's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The result of a proposed command, as every replica computed it.
    Command(kv::Response),
    /// A range read.
    Range(RangeResponse),
    /// A lease's time left.
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    /// Every lease.
    LeaseLeases(LeaseLeasesResponse),
}

/// Why a request was not answered with a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// The state machine refused it, with etcd's text.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// No leader is known, or the one asked could not take it; nothing was
    /// applied.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// Not applied here in time; it may or may not take effect.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The leader's queue is full; nothing was applied.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
}
