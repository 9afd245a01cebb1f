//! The Paxos replica's state through the log: what was synced survives a
//! crash, and a checkpoint keeps the promise and everything after the
//! snapshot while dropping the log before it.

use std::path::Path;

use paxos::Ballot;
use paxos::multi::{Command, Record, Value};
use storage::{ReplicaStore, RetiredSegments, SimFs, SnapshotOptions, WalOptions};

fn options() -> WalOptions {
    WalOptions {
        segment_bytes_max: 4 << 10,
        write_buffer_bytes_max: 8 << 10,
        record_payload_bytes_max: 1 << 10,
    }
}

fn value(seq: u64) -> Value {
    Value::Batch(
        vec![Command {
            client: 1,
            seq,
            payload: vec![0, 1, 2, seq as u8],
        }]
        .into(),
    )
}

#[test]
fn synced_state_survives_a_crash_and_unsynced_may_not() {
    let fs = SimFs::new();
    let dir = Path::new("/n1");
    let (mut store, restored) =
        ReplicaStore::open(fs.clone(), dir, options(), SnapshotOptions::default()).expect("open");
    assert_eq!(restored.durable.promised, Ballot::ZERO);
    store
        .append(&Record::Promise(Ballot::new(3, 2)))
        .expect("append");
    store
        .append(&Record::Accept {
            slot: 1,
            ballot: Ballot::new(3, 2),
            value: value(1),
        })
        .expect("append");
    store.sync().expect("sync");
    // Appended, never synced: a crash may keep or lose it, never garble it.
    store
        .append(&Record::Accept {
            slot: 2,
            ballot: Ballot::new(3, 2),
            value: value(2),
        })
        .expect("append");
    drop(store);
    fs.crash(7);
    let (_, restored) =
        ReplicaStore::open(fs, dir, options(), SnapshotOptions::default()).expect("reopen");
    assert_eq!(restored.durable.promised, Ballot::new(3, 2));
    assert_eq!(
        restored.durable.accepted.get(&1),
        Some(&(Ballot::new(3, 2), value(1)))
    );
    if let Some(entry) = restored.durable.accepted.get(&2) {
        assert_eq!(entry, &(Ballot::new(3, 2), value(2)));
    }
}

#[test]
fn a_checkpoint_keeps_the_promise_and_the_slots_after_it() {
    let fs = SimFs::new();
    let dir = Path::new("/n1");
    let (mut store, _) =
        ReplicaStore::open(fs.clone(), dir, options(), SnapshotOptions::default()).expect("open");
    store
        .append(&Record::Promise(Ballot::new(9, 1)))
        .expect("append");
    for slot in 1..=200 {
        store
            .append(&Record::Accept {
                slot,
                ballot: Ballot::new(9, 1),
                value: value(slot),
            })
            .expect("append");
        if slot <= 190 {
            store
                .append(&Record::Commit {
                    slot,
                    value: value(slot),
                })
                .expect("append");
        }
        store.sync().expect("sync");
    }
    let before = store.segment_count();
    store.checkpoint(150, b"state at 150").expect("checkpoint");
    assert!(store.segment_count() < before, "old segments dropped");
    drop(store);
    fs.crash(1);
    let (_, restored) =
        ReplicaStore::open(fs, dir, options(), SnapshotOptions::default()).expect("reopen");
    let d = restored.durable;
    assert_eq!(
        d.promised,
        Ballot::new(9, 1),
        "the promise outlives trimming"
    );
    assert_eq!(d.snapshot_slot, 150);
    assert_eq!(
        d.accepted.keys().copied().collect::<Vec<_>>(),
        (151..=200).collect::<Vec<_>>()
    );
    assert_eq!(
        d.committed.keys().copied().collect::<Vec<_>>(),
        (151..=190).collect::<Vec<_>>()
    );
    let snapshot = restored.snapshot.expect("snapshot");
    assert_eq!(
        (snapshot.index, snapshot.data.as_slice()),
        (150, &b"state at 150"[..])
    );
}

fn open(fs: &SimFs, dir: &Path) -> ReplicaStore<SimFs> {
    ReplicaStore::open(fs.clone(), dir, options(), SnapshotOptions::default())
        .expect("open")
        .0
}

/// The durable state a crash and a restart give back.
fn crash_and_reopen(fs: SimFs, dir: &Path, word: u64) -> storage::Restored {
    fs.crash(word);
    ReplicaStore::open(fs, dir, options(), SnapshotOptions::default())
        .expect("reopen")
        .1
}

/// A store under `dir` that promised ballot 4 and accepted `value(slot)`
/// for slots `1..=last`, each synced.
fn with_accepted(fs: &SimFs, dir: &Path, last: u64) -> ReplicaStore<SimFs> {
    let mut store = open(fs, dir);
    store
        .append(&Record::Promise(Ballot::new(4, 2)))
        .expect("append");
    for slot in 1..=last {
        accept(&mut store, slot, 4, value(slot));
        store.sync().expect("sync");
    }
    store
}

/// A store as [`with_accepted`] up to slot 200, with a snapshot saved at
/// 150 and the log trimmed to it, the dropped segments not yet removed.
fn retired_at_150(fs: &SimFs, dir: &Path) -> (ReplicaStore<SimFs>, RetiredSegments<SimFs>) {
    let mut store = with_accepted(fs, dir, 200);
    store.mark_snapshot(150);
    store
        .snapshot_writer()
        .save(150, b"state at 150")
        .expect("save");
    let retired = store.trim_after_snapshot_retiring(150).expect("trim");
    assert!(!retired.is_empty(), "the trim drops whole segments");
    (store, retired)
}

fn accept(store: &mut ReplicaStore<SimFs>, slot: u64, round: u64, value: Value) {
    store
        .append(&Record::Accept {
            slot,
            ballot: Ballot::new(round, 2),
            value,
        })
        .expect("append");
}

#[test]
fn a_snapshot_saved_on_the_side_then_trimmed_matches_a_checkpoint() {
    let fs = SimFs::new();
    let dir = Path::new("/n2");
    let mut store = with_accepted(&fs, dir, 120);
    // Trimming before a snapshot that new exists is refused.
    let refused = store.trim_after_snapshot(100).expect_err("no snapshot yet");
    assert!(
        refused.to_string().contains("no snapshot that new"),
        "{refused}"
    );
    // The writer saves while the log goes on taking records.
    let mut writer = store.snapshot_writer();
    writer.save(100, b"state at 100").expect("save");
    for slot in 121..=130 {
        accept(&mut store, slot, 4, value(slot));
    }
    store.trim_after_snapshot(100).expect("trim");
    drop(store);
    let restored = crash_and_reopen(fs, dir, 7);
    let d = restored.durable;
    assert_eq!(d.promised, Ballot::new(4, 2));
    assert_eq!(d.snapshot_slot, 100);
    assert_eq!(
        d.accepted.keys().copied().collect::<Vec<_>>(),
        (101..=130).collect::<Vec<_>>(),
        "records appended during the save survive the trim"
    );
    let snapshot = restored.snapshot.expect("snapshot");
    assert_eq!(snapshot.index, 100);
}

#[test]
fn a_marked_trim_keeps_later_records_in_place_and_undoes_nothing_newer() {
    let fs = SimFs::new();
    let dir = Path::new("/n3");
    let mut store = open(&fs, dir);
    store
        .append(&Record::Promise(Ballot::new(4, 2)))
        .expect("append");
    // Slots 391..=400 reach the log first, in its oldest segment (a
    // new leader's recovered slots can), then 1..=390.
    for slot in (391..=400).chain(1..=390) {
        accept(&mut store, slot, 4, value(slot * 1000 + 4));
        store.sync().expect("sync");
    }
    // Frozen at 390: slots 391..=400 are in the log before the mark, in a
    // segment the trim drops, so they must be written again.
    store.mark_snapshot(390);
    let mut writer = store.snapshot_writer();
    // While the snapshot is saved: more slots, and slot 395 accepted again
    // at a higher ballot, which the trim must not undo.
    for slot in 401..=500 {
        accept(&mut store, slot, 4, value(slot * 1000 + 4));
    }
    accept(&mut store, 395, 9, value(395 * 1000 + 9));
    store.sync().expect("sync");
    writer.save(390, b"state at 390").expect("save");
    store.trim_after_snapshot(390).expect("trim");
    let first_segment_kept = {
        use storage::Fs;
        fs.list(&dir.join("wal"))
            .expect("list")
            .contains(&"00000000000000000001.wal".to_string())
    };
    assert!(!first_segment_kept, "segments before the mark dropped");
    drop(store);
    let d = crash_and_reopen(fs, dir, 5).durable;
    assert_eq!(d.snapshot_slot, 390);
    assert_eq!(d.promised, Ballot::new(9, 2));
    assert_eq!(
        d.accepted.keys().copied().collect::<Vec<_>>(),
        (391..=500).collect::<Vec<_>>()
    );
    assert_eq!(
        d.accepted.get(&395),
        Some(&(Ballot::new(9, 2), value(395 * 1000 + 9))),
        "the newer acceptance survives"
    );
    assert_eq!(
        d.accepted.get(&398).map(|(b, _)| *b),
        Some(Ballot::new(4, 2))
    );
}

#[test]
fn a_mark_drops_the_memory_copy_but_not_the_records_and_no_trim_goes_below_it() {
    let fs = SimFs::new();
    let dir = Path::new("/n6");
    let mut store = with_accepted(&fs, dir, 200);
    let dropped = store.mark_snapshot(150);
    assert_eq!(
        dropped.accepted.keys().copied().collect::<Vec<_>>(),
        (1..=150).collect::<Vec<_>>(),
        "the copy up to the mark is handed back"
    );
    // An older snapshot lands (a save begun before the mark): trimming at
    // it would rewrite the log from a copy that no longer holds 101..=150.
    store
        .snapshot_writer()
        .save(100, b"state at 100")
        .expect("save");
    let refused = store.trim_after_snapshot(100).expect_err("below the mark");
    assert!(refused.to_string().contains("150"), "{refused}");
    // A crash before the snapshot at the mark is saved: every record is
    // still on disk.
    drop(store);
    let d = crash_and_reopen(fs.clone(), dir, 11).durable;
    assert_eq!(d.snapshot_slot, 100);
    assert_eq!(
        d.accepted.keys().copied().collect::<Vec<_>>(),
        (101..=200).collect::<Vec<_>>(),
        "marking wrote and removed nothing"
    );
}

#[test]
fn retired_segments_stay_until_removed_and_either_way_recovery_agrees() {
    use storage::Fs;
    let first_segment = "00000000000000000001.wal".to_string();
    for remove in [false, true] {
        let fs = SimFs::new();
        let dir = Path::new("/n4");
        let (mut store, retired) = retired_at_150(&fs, dir);
        let listed = |fs: &SimFs| fs.list(&dir.join("wal")).expect("list");
        assert!(
            listed(&fs).contains(&first_segment),
            "a retired segment stays on disk until removed"
        );
        // The log goes on while the files wait for removal.
        accept(&mut store, 201, 4, value(201));
        store.sync().expect("sync");
        if remove {
            let count = retired.len();
            assert_eq!(retired.remove().expect("remove"), count);
            assert!(!listed(&fs).contains(&first_segment));
        } else {
            // A crash before the removal: the files are read again.
            drop(retired);
        }
        drop(store);
        let d = crash_and_reopen(fs, dir, 3).durable;
        assert_eq!(d.snapshot_slot, 150, "removed: {remove}");
        assert_eq!(d.promised, Ballot::new(4, 2));
        assert_eq!(
            d.accepted.keys().copied().collect::<Vec<_>>(),
            (151..=201).collect::<Vec<_>>(),
            "removed: {remove}"
        );
    }
}

#[test]
fn a_paced_removal_cut_short_by_a_crash_at_any_step_recovers_the_same_log() {
    use storage::Fs;
    let dir = Path::new("/n5");
    let wal_files = |fs: &SimFs| fs.list(&dir.join("wal")).expect("list");
    // `crash_at` counts the pauses (one after each synced cut); `None`
    // lets the removal finish.
    let run = |crash_at: Option<usize>| -> (usize, Vec<String>) {
        let fs = SimFs::new();
        let (store, retired) = retired_at_150(&fs, dir);
        let count = retired.len();
        let mut pauses = 0;
        let crasher = fs.clone();
        let outcome = retired.remove_paced(100, || {
            if crash_at == Some(pauses) {
                crasher.crash(pauses as u64 + 7);
            }
            pauses += 1;
        });
        // After a crash the removal goes on against the rebooted disk (its
        // file handles fail, names still resolve); what counts is below.
        if crash_at.is_none() {
            assert_eq!(outcome.expect("removed"), count);
        }
        drop(store);
        let d = crash_and_reopen(fs.clone(), dir, 3).durable;
        assert_eq!(d.snapshot_slot, 150, "crash at pause {crash_at:?}");
        assert_eq!(d.promised, Ballot::new(4, 2));
        assert_eq!(
            d.accepted.keys().copied().collect::<Vec<_>>(),
            (151..=200).collect::<Vec<_>>(),
            "crash at pause {crash_at:?}"
        );
        (pauses, wal_files(&fs))
    };
    let (pauses, left) = run(None);
    assert!(pauses > 2, "several cuts per segment: {pauses}");
    assert!(
        left.iter().all(|name| !name.ends_with(".tmp")),
        "nothing temporary is left: {left:?}"
    );
    for crash_at in 0..pauses {
        let (_, left) = run(Some(crash_at));
        assert!(
            left.iter().all(|name| !name.ends_with(".tmp")),
            "recovery deleted the cut files: {left:?}"
        );
    }
}

/// A store that accepted slots 1..=200 at ballot 4.2, then promised 12.3
/// (a candidate's `Prepare`; nothing accepted at it since), then logged
/// commits enough that the promise's segment is older than slot 150's.
fn promised_above_every_acceptance(fs: &SimFs, dir: &Path) -> ReplicaStore<SimFs> {
    let mut store = with_accepted(fs, dir, 200);
    store
        .append(&Record::Promise(Ballot::new(12, 3)))
        .expect("append");
    store.sync().expect("sync");
    for slot in 1..=200 {
        store
            .append(&Record::Commit {
                slot,
                value: value(slot),
            })
            .expect("append");
    }
    store.sync().expect("sync");
    store
}

#[test]
fn a_promise_above_every_acceptance_survives_snapshot_trim_and_reopen() {
    // The trim after a snapshot saved on the side (mark, save, trim).
    let fs = SimFs::new();
    let dir = Path::new("/n1");
    let mut store = promised_above_every_acceptance(&fs, dir);
    let before = store.segment_count();
    store.mark_snapshot(150);
    store
        .snapshot_writer()
        .save(150, b"state at 150")
        .expect("save");
    store.trim_after_snapshot(150).expect("trim");
    assert!(
        store.segment_count() < before,
        "the promise's segment is gone"
    );
    drop(store);
    let restored = crash_and_reopen(fs, dir, 3);
    assert_eq!(restored.durable.promised, Ballot::new(12, 3));

    // The trim of a checkpoint (a full rewrite).
    let fs = SimFs::new();
    let mut store = promised_above_every_acceptance(&fs, dir);
    let before = store.segment_count();
    store.checkpoint(150, b"state at 150").expect("checkpoint");
    assert!(
        store.segment_count() < before,
        "the promise's segment is gone"
    );
    drop(store);
    let restored = crash_and_reopen(fs, dir, 4);
    assert_eq!(restored.durable.promised, Ballot::new(12, 3));
}
