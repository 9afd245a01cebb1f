//! Leases: grant, revoke, keep-alive, leader-decided expiry, and the reads
//! `TimeToLive` and `Leases`.
//!
//! Time is replicated (DESIGN.md rule 3): each lease's deadline is computed
//! from the leader's time stamp on the command that granted or refreshed
//! it, so every replica holds the same deadline. Only the leader looks at
//! [`Store::expired_leases`] with its own clock, and what it finds there
//! takes effect when its `LeaseExpire` command is applied.

use std::collections::{BTreeMap, BTreeSet};

use crate::command::{
    Applied, LeaseExpireRequest, LeaseExpireResponse, LeaseRenewAllResponse, Response,
};
use crate::error::KvError;
use crate::store::{Key, Store, WriteTxn};
use crate::types::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseId, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse, NO_LEASE, ResponseHeader,
};

/// One lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Granted TTL in seconds.
    pub(crate) ttl_s: i64,
    /// Leader time at which it expires, in milliseconds.
    pub(crate) expiry_ms: u64,
    /// Keys attached (derived from the index; not in snapshots).
    pub(crate) keys: BTreeSet<Key>,
}

/// The lease table, with an index by deadline so expiry needs no scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Lessor {
    pub(crate) leases: BTreeMap<LeaseId, Lease>,
    by_expiry: BTreeSet<(u64, LeaseId)>,
    /// Next id tried when a grant leaves the id to the store.
    pub(crate) next_id: LeaseId,
}

/// `now + ttl`, saturating: a huge TTL never wraps into the past.
fn deadline(now_ms: u64, ttl_s: i64) -> u64 {
    let ttl_ms = u64::try_from(ttl_s).unwrap_or(0).saturating_mul(1000);
    now_ms.saturating_add(ttl_ms)
}

impl Lessor {
    /// Whether the lease exists.
    pub(crate) fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// Adds a lease (no keys yet).
    pub(crate) fn insert(&mut self, id: LeaseId, ttl_s: i64, expiry_ms: u64) {
        debug_assert!(!self.leases.contains_key(&id));
        self.leases.insert(
            id,
            Lease {
                ttl_s,
                expiry_ms,
                keys: BTreeSet::new(),
            },
        );
        self.by_expiry.insert((expiry_ms, id));
    }

    fn set_expiry(&mut self, id: LeaseId, expiry_ms: u64) {
        if let Some(lease) = self.leases.get_mut(&id) {
            self.by_expiry.remove(&(lease.expiry_ms, id));
            lease.expiry_ms = expiry_ms;
            self.by_expiry.insert((expiry_ms, id));
        }
    }

    fn remove(&mut self, id: LeaseId) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.by_expiry.remove(&(lease.expiry_ms, id));
        Some(lease)
    }

    /// Records that `key` now carries lease `id`.
    pub(crate) fn attach(&mut self, id: LeaseId, key: Key) {
        let lease = self.leases.get_mut(&id);
        debug_assert!(
            lease.is_some(),
            "attach to a lease that was checked to exist"
        );
        if let Some(lease) = lease {
            lease.keys.insert(key);
        }
    }

    /// Records that `key` no longer carries lease `id`.
    pub(crate) fn detach(&mut self, id: LeaseId, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            let removed = lease.keys.remove(key);
            debug_assert!(removed, "a key's lease lists the key");
        }
    }

    /// The id a grant with id 0 gets: the next free one from a replicated
    /// counter, so every replica picks the same.
    fn allocate(&mut self) -> LeaseId {
        loop {
            let id = if self.next_id <= NO_LEASE {
                1
            } else {
                self.next_id
            };
            self.next_id = id.checked_add(1).unwrap_or(1);
            if !self.leases.contains_key(&id) {
                return id;
            }
        }
    }

    /// Leases whose deadline is at or before `now_ms`, soonest first.
    fn expired(&self, now_ms: u64) -> impl Iterator<Item = LeaseId> + '_ {
        self.by_expiry
            .iter()
            .take_while(move |(expiry, _)| *expiry <= now_ms)
            .map(|&(_, id)| id)
    }
}

impl Store {
    fn header(&self) -> ResponseHeader {
        ResponseHeader {
            revision: self.revision,
        }
    }

    /// etcd's `lessor.Grant`: a too-large TTL is refused before a taken id;
    /// a TTL below the minimum is raised to it. Does not raise the revision.
    pub(crate) fn apply_lease_grant(
        &mut self,
        req: &LeaseGrantRequest,
        now_ms: u64,
    ) -> Result<Applied, KvError> {
        if req.ttl > self.limits.max_lease_ttl_s {
            return Err(KvError::LeaseTtlTooLarge { ttl: req.ttl });
        }
        if req.id != NO_LEASE && self.lessor.contains(req.id) {
            return Err(KvError::LeaseExists { id: req.id });
        }
        let id = if req.id == NO_LEASE {
            self.lessor.allocate()
        } else {
            req.id
        };
        let ttl = req.ttl.max(self.limits.min_lease_ttl_s);
        self.lessor.insert(id, ttl, deadline(now_ms, ttl));
        Ok(Applied {
            response: Response::LeaseGrant(LeaseGrantResponse {
                header: self.header(),
                id,
                ttl,
                error: String::new(),
            }),
            events: Vec::new(),
        })
    }

    /// Deletes every key of a lease in one revision (sorted by key, as etcd)
    /// and forgets the lease.
    fn revoke(&mut self, id: LeaseId) -> Option<Vec<crate::types::Event>> {
        let keys: Vec<Key> = self.lessor.leases.get(&id)?.keys.iter().cloned().collect();
        let mut w = WriteTxn::new(self);
        for key in &keys {
            let deleted = w.delete_key(key);
            debug_assert!(deleted.is_some(), "an attached key is live");
        }
        let events = w.finish();
        let lease = self.lessor.remove(id);
        debug_assert!(lease.is_some_and(|l| l.keys.is_empty()));
        Some(events)
    }

    /// Applies `LeaseRevoke`.
    pub(crate) fn apply_lease_revoke(
        &mut self,
        req: &LeaseRevokeRequest,
    ) -> Result<Applied, KvError> {
        let events = self
            .revoke(req.id)
            .ok_or(KvError::LeaseNotFound { id: req.id })?;
        Ok(Applied {
            response: Response::LeaseRevoke(LeaseRevokeResponse {
                header: self.header(),
            }),
            events,
        })
    }

    /// Applies a keep-alive the leader accepted: the deadline restarts at
    /// the command's time. A lease already past its deadline cannot be saved
    /// (etcd answers a renew of an expired lease with "not found" once the
    /// revoke goes through); it waits for the leader's `LeaseExpire`.
    pub(crate) fn apply_lease_keep_alive(
        &mut self,
        req: &LeaseKeepAliveRequest,
        now_ms: u64,
    ) -> Result<Applied, KvError> {
        let not_found = KvError::LeaseNotFound { id: req.id };
        let lease = self.lessor.leases.get(&req.id).ok_or(not_found.clone())?;
        if lease.expiry_ms <= now_ms {
            return Err(not_found);
        }
        let ttl = lease.ttl_s;
        self.lessor.set_expiry(req.id, deadline(now_ms, ttl));
        Ok(Applied {
            response: Response::LeaseKeepAlive(LeaseKeepAliveResponse {
                header: self.header(),
                id: req.id,
                ttl,
            }),
            events: Vec::new(),
        })
    }

    /// Applies the leader's expiry decision: revokes each listed lease that
    /// still exists and is still past its deadline at the command's time;
    /// skips the others (revoked meanwhile, or kept alive by a keep-alive
    /// ordered before this command).
    pub(crate) fn apply_lease_expire(&mut self, req: &LeaseExpireRequest, now_ms: u64) -> Applied {
        let mut revoked = Vec::new();
        let mut events = Vec::new();
        for &id in &req.ids {
            let due = self
                .lessor
                .leases
                .get(&id)
                .is_some_and(|l| l.expiry_ms <= now_ms);
            if due && let Some(mut evs) = self.revoke(id) {
                revoked.push(id);
                events.append(&mut evs);
            }
        }
        Applied {
            response: Response::LeaseExpire(LeaseExpireResponse {
                header: self.header(),
                revoked,
            }),
            events,
        }
    }

    /// Applies a new leader's renewal: every lease's deadline becomes the
    /// command's time plus its TTL.
    pub(crate) fn apply_lease_renew_all(&mut self, now_ms: u64) -> Applied {
        let ids: Vec<(LeaseId, i64)> = self
            .lessor
            .leases
            .iter()
            .map(|(&id, l)| (id, l.ttl_s))
            .collect();
        for &(id, ttl) in &ids {
            self.lessor.set_expiry(id, deadline(now_ms, ttl));
        }
        Applied {
            response: Response::LeaseRenewAll(LeaseRenewAllResponse {
                header: self.header(),
                renewed: u64::try_from(ids.len()).unwrap_or(u64::MAX),
            }),
            events: Vec::new(),
        }
    }

    /// For the leader: up to `max_count` leases whose deadline is at or
    /// before `now_ms` (the leader's clock), soonest first. The leader
    /// proposes them in a `LeaseExpire` command; nothing expires until then.
    /// A `now_ms` behind the latest applied stamp counts as that stamp, as
    /// in every other use of time here.
    pub fn expired_leases(&self, now_ms: u64, max_count: usize) -> Vec<LeaseId> {
        self.lessor
            .expired(now_ms.max(self.clock_ms))
            .take(max_count)
            .collect()
    }

    /// etcd's `LeaseTimeToLive`, a read: remaining whole seconds at `now_ms`
    /// (0 once past the deadline), or TTL -1 for a lease that does not exist,
    /// as etcd answers.
    pub fn lease_time_to_live(
        &self,
        req: &LeaseTimeToLiveRequest,
        now_ms: u64,
    ) -> LeaseTimeToLiveResponse {
        let now_ms = now_ms.max(self.clock_ms);
        match self.lessor.leases.get(&req.id) {
            None => LeaseTimeToLiveResponse {
                header: self.header(),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
            Some(lease) => LeaseTimeToLiveResponse {
                header: self.header(),
                id: req.id,
                ttl: i64::try_from(lease.expiry_ms.saturating_sub(now_ms) / 1000)
                    .unwrap_or(i64::MAX),
                granted_ttl: lease.ttl_s,
                keys: if req.keys {
                    lease.keys.iter().map(|k| k.to_vec()).collect()
                } else {
                    Vec::new()
                },
            },
        }
    }

    /// etcd's `LeaseLeases`, a read: every lease in id order.
    pub fn lease_leases(&self) -> LeaseLeasesResponse {
        LeaseLeasesResponse {
            header: self.header(),
            leases: self
                .lessor
                .leases
                .keys()
                .map(|&id| LeaseStatus { id })
                .collect(),
        }
    }

    /// The leader time at which a lease expires, if it exists.
    pub fn lease_deadline_ms(&self, id: LeaseId) -> Option<u64> {
        self.lessor.leases.get(&id).map(|l| l.expiry_ms)
    }
}
