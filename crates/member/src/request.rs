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
    /// A configuration change (etcd's `MemberAdd`, `MemberRemove`,
    /// `MemberUpdate`, `MemberPromote`): checked by the leader against the
    /// table as applied, then decided in the log; answered with the table
    /// after it once applied here.
    ChangeMembers(kv::MemberChange),
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
    /// A configuration change refused, with etcd's text.
    #[error(transparent)]
    Cluster(#[from] kv::ClusterError),
    /// A learner serves serializable reads and status only.
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
}

impl MemberError {
    /// A one-byte code for the errors a leader sends back for a forwarded
    /// configuration change (`PeerMessage::ChangeRefused`).
    pub fn code(&self) -> u8 {
        use kv::ClusterError as C;
        match self {
            MemberError::NoLeader | MemberError::Kv(_) => 1,
            MemberError::Timeout => 2,
            MemberError::TooManyRequests => 3,
            MemberError::NotSupportedForLearner => 4,
            MemberError::Cluster(e) => match e {
                C::MemberNotFound => 10,
                C::PeerUrlExists => 11,
                C::MemberExists => 12,
                C::NotLearner => 13,
                C::LearnerNotReady => 14,
                C::TooManyLearners => 15,
                C::NotEnoughStartedMembers => 16,
                C::Unhealthy => 17,
                C::NoVoterLeft => 18,
            },
        }
    }

    /// The error a code stands for; an unknown one reads as "no leader"
    /// (nothing was applied).
    pub fn from_code(code: u8) -> MemberError {
        use kv::ClusterError as C;
        match code {
            2 => MemberError::Timeout,
            3 => MemberError::TooManyRequests,
            4 => MemberError::NotSupportedForLearner,
            10 => C::MemberNotFound.into(),
            11 => C::PeerUrlExists.into(),
            12 => C::MemberExists.into(),
            13 => C::NotLearner.into(),
            14 => C::LearnerNotReady.into(),
            15 => C::TooManyLearners.into(),
            16 => C::NotEnoughStartedMembers.into(),
            17 => C::Unhealthy.into(),
            18 => C::NoVoterLeft.into(),
            _ => MemberError::NoLeader,
        }
    }
}
