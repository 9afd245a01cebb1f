//! Snapshot and restore: byte-for-byte deterministic, the state hash agrees
//! across replicas, and damaged snapshots are refused without a panic.

mod common;

use common::*;
use kv::{Command, CompactionRequest, LeaseGrantRequest, Limits, PutRequest, SnapshotError, Store};

fn busy_store() -> Store {
    let mut s = Store::default();
    s.apply(
        &Command::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 5 }),
        at(10),
    )
    .expect("grant");
    for i in 0..20u8 {
        let key = vec![b'k', i % 7, 0xff];
        put(&mut s, &key, &[i, 0, i]);
    }
    let leased = PutRequest {
        key: k("leased"),
        value: k("v"),
        lease: 5,
        ..PutRequest::default()
    };
    s.apply(&Command::Put(leased), at(20)).expect("put");
    delete(&mut s, &[b'k', 3], &[b'k', 5]).expect("delete");
    s.apply(
        &Command::Compact(CompactionRequest {
            revision: 12,
            physical: true,
        }),
        CTX,
    )
    .expect("compact");
    s.apply_session(77, 3, &Command::Put(put_req(b"s", b"x")), at(30));
    s
}

#[test]
fn a_frozen_copy_keeps_its_state_while_the_store_goes_on() {
    let mut s = busy_store();
    let at_freeze = s.snapshot();
    let frozen = s.frozen();
    // The original keeps writing: new keys, overwrites of frozen values,
    // deletes, a compaction that frees and evacuates segments.
    for i in 0..50u8 {
        put(&mut s, &[b'k', i % 7, 0xff], &[i; 40]);
        put(&mut s, &[b'n', i], &[i; 300]);
    }
    delete(&mut s, b"k", b"l").expect("delete");
    let revision = s.revision();
    s.apply(
        &Command::Compact(CompactionRequest {
            revision,
            physical: true,
        }),
        CTX,
    )
    .expect("compact");
    assert_eq!(
        frozen.snapshot(),
        at_freeze,
        "the copy is the state at freeze"
    );
    // And the original is intact: it restores to itself.
    let restored = Store::restore(&s.snapshot(), Limits::default()).expect("restore");
    assert_eq!(restored.state_hash(), s.state_hash());
    assert_ne!(restored.state_hash(), frozen.state_hash());
}

#[test]
fn restore_gives_back_the_same_state_byte_for_byte() {
    let s = busy_store();
    let snap = s.snapshot();
    let restored = Store::restore(&snap, Limits::default()).expect("restore");
    assert_eq!(restored.snapshot(), snap);
    assert_eq!(restored.state_hash(), s.state_hash());
    assert_eq!(restored.revision(), s.revision());
    assert_eq!(restored.compact_revision(), 12);
    // History, leases and replay all work the same after restore.
    for rev in [12, 15, s.revision()] {
        let mut req = range_req(b"\0", b"\0");
        req.revision = rev;
        assert_eq!(restored.range(&req), s.range(&req));
    }
    assert_eq!(
        restored.events_since(12, b"\0", b"\0"),
        s.events_since(12, b"\0", b"\0")
    );
    let ttl = kv::LeaseTimeToLiveRequest { id: 5, keys: true };
    assert_eq!(
        restored.lease_time_to_live(&ttl, 0),
        s.lease_time_to_live(&ttl, 0)
    );
}

#[test]
fn replicas_applying_the_same_commands_have_the_same_hash() {
    let a = busy_store();
    let b = busy_store();
    assert_eq!(a.snapshot(), b.snapshot());
    assert_eq!(a.state_hash(), b.state_hash());
    let mut c = busy_store();
    put(&mut c, b"one more", b"");
    assert_ne!(c.state_hash(), a.state_hash());
}

#[test]
fn snapshots_with_the_older_fnv_trailer_still_restore() {
    let s = busy_store();
    let snap = s.snapshot();
    let body = &snap[..snap.len() - 8];
    let trailer = u64::from_le_bytes(snap[snap.len() - 8..].try_into().expect("8 bytes"));
    assert_eq!(
        trailer >> 32,
        kv::CRC_TAG,
        "new snapshots carry the CRC tag"
    );
    // Written before the CRC: the same body, the state hash as trailer.
    let mut older = body.to_vec();
    older.extend_from_slice(&s.state_hash().to_le_bytes());
    let restored = Store::restore(&older, Limits::default()).expect("restore");
    assert_eq!(restored.snapshot(), snap);
    // A trailer that is neither is refused.
    let mut wrong = body.to_vec();
    wrong.extend_from_slice(&(s.state_hash() ^ 1).to_le_bytes());
    assert!(matches!(
        Store::restore(&wrong, Limits::default()),
        Err(SnapshotError::Checksum)
    ));
}

#[test]
fn a_restored_replica_continues_in_step() {
    let mut a = busy_store();
    let mut b = Store::restore(&a.snapshot(), Limits::default()).expect("restore");
    for store in [&mut a, &mut b] {
        put(store, b"after", b"1");
        store
            .apply(&Command::LeaseRenewAll, at(100))
            .expect("renew");
        store
            .apply(
                &Command::Compact(CompactionRequest {
                    revision: 20,
                    physical: false,
                }),
                CTX,
            )
            .expect("compact");
    }
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn every_damaged_byte_is_refused_without_a_panic() {
    let snap = busy_store().snapshot();
    for i in 0..snap.len() {
        let mut bad = snap.clone();
        bad[i] ^= 0x5a;
        assert!(Store::restore(&bad, Limits::default()).is_err(), "byte {i}");
    }
    for cut in [0, 1, 8, snap.len() / 2, snap.len() - 1] {
        assert!(Store::restore(&snap[..cut], Limits::default()).is_err());
    }
    assert_eq!(
        Store::restore(b"definitely not a snapshot", Limits::default()).err(),
        Some(SnapshotError::Checksum)
    );
}

#[test]
fn inconsistent_snapshots_are_refused_even_with_a_good_checksum() {
    // Rebuild a snapshot with a bad body and a matching checksum.
    let snap = busy_store().snapshot();
    let mut body = snap[..snap.len() - 8].to_vec();
    body[9] = 0; // revision (zig-zag varint) := 0
    let mut hash = kv::Fnv64::default();
    kv::codec::Sink::put(&mut hash, &body);
    body.extend_from_slice(&hash.0.to_le_bytes());
    assert!(matches!(
        Store::restore(&body, Limits::default()),
        Err(SnapshotError::Inconsistent(_)) | Err(SnapshotError::Decode(_))
    ));
}

#[test]
fn an_empty_store_round_trips() {
    let s = Store::default();
    let restored = Store::restore(&s.snapshot(), Limits::default()).expect("restore");
    assert_eq!(restored.state_hash(), s.state_hash());
}

#[test]
fn a_snapshot_written_in_pieces_is_the_same_bytes() {
    // Large enough for several pieces.
    let mut s = Store::default();
    let value = vec![7u8; 4096];
    for i in 0..600u32 {
        put(&mut s, &i.to_be_bytes(), &value);
    }
    let whole = s.snapshot();
    assert!(
        whole.len() > 2 * kv::SNAPSHOT_PIECE_BYTES,
        "{}",
        whole.len()
    );
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    s.write_snapshot(|piece| {
        pieces.push(piece.to_vec());
        Ok::<(), ()>(())
    })
    .expect("write");
    assert!(pieces.len() >= 3, "{} pieces", pieces.len());
    assert!(
        pieces
            .iter()
            .all(|p| p.len() <= kv::SNAPSHOT_PIECE_BYTES + 4096 + 64)
    );
    // The pieces make a snapshot whose checksum (kept across pieces) holds
    // and which restores to the same state (the hash reads the state
    // directly, not through the pieces).
    let joined = pieces.concat();
    assert_eq!(joined.len(), whole.len());
    let restored = Store::restore(&joined, Limits::default()).expect("the pieces restore");
    assert_eq!(restored.state_hash(), s.state_hash());
    // The first error stops the output and is returned.
    let mut calls = 0;
    let result = s.write_snapshot(|_| {
        calls += 1;
        if calls == 2 { Err("disk full") } else { Ok(()) }
    });
    assert_eq!(result, Err("disk full"));
    assert_eq!(calls, 2, "nothing is handed out after the error");
}

#[test]
fn sessions_across_the_id_range_survive_freeze_and_restore() {
    let mut s = Store::default();
    // Ids spread over every shard of the table, in no order.
    let ids: Vec<u64> = (0..500u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    for (i, &id) in ids.iter().enumerate() {
        s.apply_session(id, 1, &Command::Put(put_req(b"k", &[i as u8])), at(10));
    }
    let frozen = s.frozen();
    let at_freeze = s.snapshot();
    // The live table goes on changing: new sessions, later seqs.
    for (i, &id) in ids.iter().enumerate().take(100) {
        s.apply_session(id, 2, &Command::Put(put_req(b"k", &[i as u8])), at(20));
        s.apply_session(id ^ 1, 1, &Command::Put(put_req(b"j", &[i as u8])), at(20));
    }
    assert_eq!(
        frozen.snapshot(),
        at_freeze,
        "the frozen copy kept its state"
    );
    let restored = Store::restore(&s.snapshot(), Limits::default()).expect("restore");
    assert_eq!(restored.snapshot(), s.snapshot());
    assert_eq!(restored.session_count(), 600);
}
