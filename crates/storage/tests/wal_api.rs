//! The WAL's contract, one behaviour per test: LSNs, group commit, limits, truncation,
//! and options that change between runs.

use std::path::PathBuf;

use storage::{Error, Lsn, SimFs, Wal, WalOptions};

fn dir() -> PathBuf {
    PathBuf::from("/node/wal")
}

fn small() -> WalOptions {
    WalOptions {
        segment_bytes_max: 1024,
        write_buffer_bytes_max: 512,
        record_payload_bytes_max: 100,
    }
}

#[test]
fn lsns_are_contiguous_across_restarts_and_sync_returns_the_durable_lsn() {
    let fs = SimFs::new();
    let (mut wal, _) = Wal::open(fs.clone(), dir(), small()).expect("open");
    assert_eq!((wal.next_lsn(), wal.durable_lsn()), (Lsn(1), Lsn(0)));
    assert_eq!(wal.sync().expect("empty sync"), Lsn(0));
    assert_eq!(wal.append(0, b"").expect("empty payload"), Lsn(1));
    assert_eq!(wal.append(255, b"x").expect("append"), Lsn(2));
    assert_eq!(wal.durable_lsn(), Lsn(0), "append alone is not durable");
    assert_eq!(wal.sync().expect("sync"), Lsn(2));
    drop(wal);
    let (wal, recovered) = Wal::open(fs, dir(), small()).expect("reopen");
    let got: Vec<_> = recovered
        .records
        .iter()
        .map(|r| (r.lsn, r.record_type, r.payload.clone()))
        .collect();
    assert_eq!(got, vec![(Lsn(1), 0, vec![]), (Lsn(2), 255, b"x".to_vec())]);
    assert_eq!((wal.next_lsn(), wal.durable_lsn()), (Lsn(3), Lsn(2)));
}

#[test]
fn an_oversized_record_is_refused_and_changes_nothing() {
    let fs = SimFs::new();
    let (mut wal, _) = Wal::open(fs, dir(), small()).expect("open");
    let err = wal.append(1, &[0; 101]).expect_err("too large");
    assert!(matches!(
        err,
        Error::RecordTooLarge {
            payload_bytes: 101,
            limit_bytes: 100
        }
    ));
    assert_eq!(wal.next_lsn(), Lsn(1));
    assert!(!wal.is_poisoned());
}

#[test]
fn options_that_cannot_work_are_refused_before_touching_the_disk() {
    let fs = SimFs::new();
    let bad = WalOptions {
        write_buffer_bytes_max: 50,
        ..small()
    };
    assert!(matches!(
        Wal::open(fs.clone(), dir(), bad),
        Err(Error::InvalidOptions { .. })
    ));
    assert!(
        fs.read_file(&dir().join("00000000000000000001.wal"))
            .is_none()
    );
}

#[test]
fn a_log_reopened_with_smaller_limits_keeps_every_record() {
    let fs = SimFs::new();
    let (mut wal, _) = Wal::open(fs.clone(), dir(), WalOptions::default()).expect("open");
    for i in 0..10u8 {
        wal.append(i, &vec![i; 5000]).expect("append");
    }
    wal.sync().expect("sync");
    drop(wal);
    let (mut wal, recovered) = Wal::open(fs, dir(), small()).expect("reopen with small limits");
    assert_eq!(recovered.records.len(), 10);
    assert!(recovered.records.iter().all(|r| r.payload.len() == 5000));
    assert!(recovered.torn_tail.is_none());
    assert_eq!(wal.append(1, b"small").expect("append"), Lsn(11));
}

#[test]
fn truncate_before_removes_only_whole_segments_below_the_point() {
    let fs = SimFs::new();
    let (mut wal, _) = Wal::open(fs.clone(), dir(), small()).expect("open");
    for _ in 0..100 {
        wal.append(1, &[7; 40]).expect("append");
    }
    wal.sync().expect("sync");
    let segments = wal.segment_count();
    assert!(segments >= 5, "{segments} segments");
    // 20 records of 49 bytes fit in a 1024-byte segment after its 24-byte header.
    assert_eq!(wal.truncate_before(Lsn(20)).expect("truncate"), 0);
    assert_eq!(wal.truncate_before(Lsn(21)).expect("truncate"), 1);
    assert_eq!(wal.first_lsn(), Lsn(21));
    assert_eq!(
        wal.truncate_before(Lsn(1000)).expect("truncate"),
        segments - 2
    );
    assert_eq!(wal.segment_count(), 1, "the active segment always stays");
    drop(wal);
    fs.crash(3);
    let (wal, recovered) = Wal::open(fs, dir(), small()).expect("reopen");
    assert_eq!(
        recovered.records.first().map(|r| r.lsn),
        Some(wal.first_lsn())
    );
    assert_eq!(recovered.records.last().map(|r| r.lsn), Some(Lsn(100)));
}

#[test]
fn group_commit_makes_a_whole_batch_durable_with_one_sync() {
    let fs = SimFs::new();
    let (mut wal, _) = Wal::open(fs.clone(), dir(), small()).expect("open");
    for _ in 0..10 {
        wal.append(1, &[1; 30]).expect("append");
    }
    // Exactly one sync is needed: if it is made to fail, nothing of the batch is durable.
    fs.fail_next_syncs(1);
    assert!(matches!(wal.sync(), Err(Error::SyncFailed { .. })));
    drop(wal);
    fs.fail_next_syncs(0);
    let (mut wal, _) = Wal::open(fs.clone(), dir(), small()).expect("reopen");
    for _ in 0..10 {
        wal.append(1, &[1; 30]).expect("append");
    }
    // With one sync allowed to pass and the next armed to fail, the batch is durable.
    fs.fail_syncs(1, 1);
    let durable = wal.sync().expect("one sync suffices");
    drop(wal);
    fs.crash(1);
    fs.fail_next_syncs(0);
    let (_wal, recovered) = Wal::open(fs, dir(), small()).expect("reopen");
    assert!(recovered.records.len() as u64 >= durable.0);
}

#[test]
fn a_spare_segment_prepared_elsewhere_becomes_the_next_segment() {
    let fs = SimFs::new();
    let (mut wal, _) = Wal::open(fs.clone(), dir(), small()).expect("open");
    let mut preparer = wal.segment_preparer();
    assert!(wal.needs_spare());
    wal.offer_spare(preparer.prepare().expect("prepare"));
    assert!(!wal.needs_spare());
    // A second spare is not kept.
    wal.offer_spare(preparer.prepare().expect("prepare"));
    let spares = |fs: &SimFs| {
        use storage::Fs;
        fs.list(&dir())
            .expect("list")
            .into_iter()
            .filter(|n| n.starts_with("spare-"))
            .count()
    };
    assert_eq!(spares(&fs), 1);
    let mut last = Lsn(0);
    while wal.segment_count() < 2 {
        last = wal.append(7, &[0xab; 100]).expect("append");
    }
    wal.sync().expect("sync");
    assert!(wal.needs_spare(), "the roll used the spare");
    assert_eq!(spares(&fs), 0, "renamed into place");
    drop(wal);
    fs.crash(3);
    let (_, recovered) = Wal::open(fs, dir(), small()).expect("reopen");
    assert_eq!(recovered.records.last().map(|r| r.lsn), Some(last));
    assert!(recovered.records.iter().all(|r| r.payload == [0xab; 100]));
}

#[test]
fn a_paced_spare_pauses_between_synced_pieces_and_serves_the_next_roll() {
    let fs = SimFs::new();
    let options = WalOptions {
        segment_bytes_max: 2 * storage::SPARE_SYNC_CHUNK_BYTES + 100,
        ..small()
    };
    let (mut wal, _) = Wal::open(fs.clone(), dir(), options).expect("open");
    let mut preparer = wal.segment_preparer();
    let mut pauses = 0;
    let spare = preparer.prepare_paced(|| pauses += 1).expect("prepare");
    // Three pieces (two whole, one of 100 bytes): a pause between each.
    assert_eq!(pauses, 2);
    wal.offer_spare(spare);
    assert!(!wal.needs_spare());
    let mut last = Lsn(0);
    while wal.segment_count() < 2 {
        last = wal.append(7, &[0xcd; 100]).expect("append");
    }
    wal.sync().expect("sync");
    assert!(wal.needs_spare(), "the roll used the paced spare");
    drop(wal);
    fs.crash(5);
    let (_, recovered) = Wal::open(fs, dir(), options).expect("reopen");
    assert_eq!(recovered.records.last().map(|r| r.lsn), Some(last));
}
