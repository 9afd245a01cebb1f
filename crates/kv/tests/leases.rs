//! Leases with replicated time: grant, revoke, keep-alive, leader-decided
//! expiry, a new leader's renewal, and the lease reads.

mod common;

use common::*;
use kv::{
    Command, KvError, LeaseExpireRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, LeaseTimeToLiveRequest, Limits, PutRequest, Response, Store,
};

fn grant_at(
    s: &mut Store,
    id: i64,
    ttl: i64,
    now_ms: u64,
) -> Result<kv::LeaseGrantResponse, KvError> {
    match s
        .apply(
            &Command::LeaseGrant(LeaseGrantRequest { ttl, id }),
            at(now_ms),
        )?
        .response
    {
        Response::LeaseGrant(r) => Ok(r),
        other => panic!("{other:?}"),
    }
}

fn put_leased(s: &mut Store, key: &[u8], lease: i64) {
    let req = PutRequest {
        key: key.to_vec(),
        value: b"v".to_vec(),
        lease,
        ..PutRequest::default()
    };
    s.apply(&Command::Put(req), CTX).expect("put");
}

fn ttl_of(s: &Store, id: i64, now_ms: u64) -> kv::LeaseTimeToLiveResponse {
    s.lease_time_to_live(&LeaseTimeToLiveRequest { id, keys: true }, now_ms)
}

#[test]
fn grant_with_a_requested_id_or_a_new_one() {
    let mut s = Store::default();
    let r = grant_at(&mut s, 100, 10, 0).expect("grant");
    assert_eq!((r.id, r.ttl), (100, 10));
    let a = grant_at(&mut s, 0, 10, 0).expect("grant");
    let b = grant_at(&mut s, 0, 10, 0).expect("grant");
    assert!(a.id > 0 && b.id > 0 && a.id != b.id && a.id != 100);
    // Deterministic: another replica picks the same ids.
    let mut other = Store::default();
    grant_at(&mut other, 100, 10, 0).expect("grant");
    assert_eq!(grant_at(&mut other, 0, 10, 0).expect("grant").id, a.id);
    // Granting does not raise the revision.
    assert_eq!(s.revision(), 1);
}

#[test]
fn grant_errors_and_minimum_ttl() {
    let mut s = Store::default();
    grant_at(&mut s, 1, 10, 0).expect("grant");
    let err = grant_at(&mut s, 1, 10, 0).expect_err("exists");
    assert_eq!(err, KvError::LeaseExists { id: 1 });
    assert_eq!(err.to_string(), "etcdserver: lease already exists");
    // A too-large TTL is reported before a taken id, as etcd does.
    let err = grant_at(&mut s, 1, 9_000_000_001, 0).expect_err("too large");
    assert_eq!(err.to_string(), "etcdserver: too large lease TTL");
    assert_eq!(
        grant_at(&mut s, 2, 9_000_000_000, 0).expect("max").ttl,
        9_000_000_000
    );
    // Below the minimum (etcd's default 2 s) the TTL is raised.
    assert_eq!(grant_at(&mut s, 3, 1, 0).expect("min").ttl, 2);
    assert_eq!(grant_at(&mut s, 4, -5, 0).expect("min").ttl, 2);
}

#[test]
fn revoke_deletes_the_attached_keys_in_one_revision() {
    let mut s = Store::default();
    grant_at(&mut s, 7, 60, 0).expect("grant");
    put_leased(&mut s, b"b", 7);
    put_leased(&mut s, b"a", 7);
    put(&mut s, b"c", b"unleased");
    let applied = s
        .apply(&Command::LeaseRevoke(LeaseRevokeRequest { id: 7 }), CTX)
        .expect("revoke");
    assert_eq!(applied.response.header().revision, 5);
    let deleted: Vec<_> = applied
        .events
        .iter()
        .map(|e| (e.kv.key.clone(), e.kv.mod_revision))
        .collect();
    assert_eq!(deleted, vec![(k("a"), 5), (k("b"), 5)]);
    assert!(get(&s, b"a").is_none() && get(&s, b"b").is_none() && get(&s, b"c").is_some());
    assert_eq!(ttl_of(&s, 7, 0).ttl, -1);
    let err = s
        .apply(&Command::LeaseRevoke(LeaseRevokeRequest { id: 7 }), CTX)
        .expect_err("gone");
    assert_eq!(err, KvError::LeaseNotFound { id: 7 });
    // A lease without keys revokes without a new revision.
    grant_at(&mut s, 8, 60, 0).expect("grant");
    s.apply(&Command::LeaseRevoke(LeaseRevokeRequest { id: 8 }), CTX)
        .expect("revoke");
    assert_eq!(s.revision(), 5);
}

#[test]
fn keep_alive_restarts_the_deadline_from_the_leaders_time() {
    let mut s = Store::default();
    grant_at(&mut s, 1, 10, 1_000).expect("grant");
    assert_eq!(s.lease_deadline_ms(1), Some(11_000));
    assert_eq!(ttl_of(&s, 1, 5_500).ttl, 5);
    let applied = s
        .apply(
            &Command::LeaseKeepAlive(LeaseKeepAliveRequest { id: 1 }),
            at(8_000),
        )
        .expect("keep-alive");
    let Response::LeaseKeepAlive(r) = applied.response else {
        panic!()
    };
    assert_eq!((r.id, r.ttl), (1, 10));
    assert_eq!(s.lease_deadline_ms(1), Some(18_000));
    let t = ttl_of(&s, 1, 8_000);
    assert_eq!((t.ttl, t.granted_ttl), (10, 10));
    // Unknown lease.
    let err = s
        .apply(
            &Command::LeaseKeepAlive(LeaseKeepAliveRequest { id: 2 }),
            at(8_000),
        )
        .expect_err("unknown");
    assert_eq!(err, KvError::LeaseNotFound { id: 2 });
    // Past its deadline a lease cannot be kept alive; it awaits expiry.
    let err = s
        .apply(
            &Command::LeaseKeepAlive(LeaseKeepAliveRequest { id: 1 }),
            at(18_000),
        )
        .expect_err("expired");
    assert_eq!(err, KvError::LeaseNotFound { id: 1 });
    assert_eq!(ttl_of(&s, 1, 20_000).ttl, 0);
}

#[test]
fn expiry_is_decided_by_the_leader_and_applied_as_a_command() {
    let mut s = Store::default();
    grant_at(&mut s, 1, 10, 0).expect("grant");
    grant_at(&mut s, 2, 20, 0).expect("grant");
    grant_at(&mut s, 3, 5, 0).expect("grant");
    put_leased(&mut s, b"k1", 1);
    put_leased(&mut s, b"k3", 3);
    // Nothing expires by itself, whatever time a reader asks about.
    assert!(get(&s, b"k1").is_some());
    assert_eq!(s.expired_leases(9_999, 10), vec![3]);
    assert_eq!(s.expired_leases(10_000, 10), vec![3, 1]);
    assert_eq!(s.expired_leases(10_000, 1), vec![3]);
    // A keep-alive ordered before the expiry command saves lease 1.
    s.apply(
        &Command::LeaseKeepAlive(LeaseKeepAliveRequest { id: 1 }),
        at(9_000),
    )
    .expect("keep-alive");
    let applied = s
        .apply(
            &Command::LeaseExpire(LeaseExpireRequest {
                ids: vec![3, 1, 2, 99],
            }),
            at(10_000),
        )
        .expect("expire");
    let Response::LeaseExpire(r) = &applied.response else {
        panic!()
    };
    assert_eq!(r.revoked, vec![3]);
    assert_eq!(applied.events.len(), 1);
    assert!(get(&s, b"k3").is_none() && get(&s, b"k1").is_some());
    assert_eq!(
        s.lease_leases()
            .leases
            .iter()
            .map(|l| l.id)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
}

#[test]
fn each_expired_lease_takes_its_own_revision() {
    let mut s = Store::default();
    grant_at(&mut s, 1, 2, 0).expect("grant");
    grant_at(&mut s, 2, 2, 0).expect("grant");
    put_leased(&mut s, b"a", 1);
    put_leased(&mut s, b"b", 2);
    let applied = s
        .apply(
            &Command::LeaseExpire(LeaseExpireRequest { ids: vec![1, 2] }),
            at(2_000),
        )
        .expect("expire");
    let revs: Vec<_> = applied.events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revs, vec![4, 5]);
}

#[test]
fn a_new_leader_gives_every_lease_a_fresh_ttl() {
    let mut s = Store::default();
    grant_at(&mut s, 1, 10, 0).expect("grant");
    grant_at(&mut s, 2, 30, 0).expect("grant");
    let applied = s.apply(&Command::LeaseRenewAll, at(9_000)).expect("renew");
    let Response::LeaseRenewAll(r) = applied.response else {
        panic!()
    };
    assert_eq!(r.renewed, 2);
    assert_eq!(s.lease_deadline_ms(1), Some(19_000));
    assert_eq!(s.lease_deadline_ms(2), Some(39_000));
    assert!(s.expired_leases(12_000, 10).is_empty());
}

#[test]
fn replicated_time_never_goes_backwards() {
    let mut s = Store::default();
    grant_at(&mut s, 1, 10, 50_000).expect("grant");
    // A new leader whose clock is behind stamps an older time: the store
    // keeps the latest stamp, so the renewed deadline is not in the past.
    s.apply(&Command::LeaseRenewAll, at(1_000)).expect("renew");
    assert_eq!(s.clock_ms(), 50_000);
    assert_eq!(s.lease_deadline_ms(1), Some(60_000));
}

#[test]
fn time_to_live_lists_keys_and_answers_minus_one_for_unknown_leases() {
    let mut s = Store::default();
    grant_at(&mut s, 1, 10, 0).expect("grant");
    put_leased(&mut s, b"y", 1);
    put_leased(&mut s, b"x", 1);
    let t = ttl_of(&s, 1, 2_500);
    assert_eq!((t.id, t.ttl, t.granted_ttl), (1, 7, 10));
    assert_eq!(t.keys, vec![k("x"), k("y")]);
    let no_keys = s.lease_time_to_live(&LeaseTimeToLiveRequest { id: 1, keys: false }, 0);
    assert!(no_keys.keys.is_empty());
    let unknown = ttl_of(&s, 5, 0);
    assert_eq!((unknown.id, unknown.ttl), (5, -1));
}

#[test]
fn lease_list_is_in_id_order() {
    let mut s = Store::new(Limits::default());
    for id in [30, 10, 20] {
        grant_at(&mut s, id, 10, 0).expect("grant");
    }
    let ids: Vec<_> = s.lease_leases().leases.iter().map(|l| l.id).collect();
    assert_eq!(ids, vec![10, 20, 30]);
}
