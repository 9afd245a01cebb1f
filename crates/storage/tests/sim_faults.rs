//! The WAL on the simulated faulty disk: power losses that drop unsynced writes and
//! directory entries and tear the last write, failed fsyncs, and a full disk. Every run is
//! driven by one seed and replays exactly.

use std::path::{Path, PathBuf};

use storage::testing::{record_for_lsn, splitmix64};
use storage::{Error, Fs, FsFile, Lsn, SimFs, Wal, WalOptions};

const EXTRA_PAYLOAD_BYTES_MAX: usize = 60;

fn options() -> WalOptions {
    WalOptions {
        segment_bytes_max: 2048,
        write_buffer_bytes_max: 512,
        record_payload_bytes_max: 200,
    }
}

fn dir() -> PathBuf {
    PathBuf::from("/node/wal")
}

/// What one seeded run saw; equal across two runs of the same seed.
#[derive(Debug, Default, PartialEq, Eq)]
struct RunStats {
    crashes: u32,
    torn_tails: u32,
    sync_failures: u32,
    no_space: u32,
    acknowledged: u64,
    recovered_last_lsn: u64,
    first_lsn: u64,
    digest: u64,
}

/// Check a recovered log against what was acknowledged: contiguous LSNs, nothing below the
/// truncation point missing that should be there, every acknowledged record present, every
/// record's content the one written for its LSN.
fn verify(seed: u64, records: &[storage::Record], truncated_before: u64, acknowledged: u64) -> u64 {
    let first = records.first().map_or(acknowledged + 1, |r| r.lsn.0);
    assert!(
        first <= truncated_before.max(1),
        "seed {seed}: log starts at {first}, but only records before {truncated_before} were released"
    );
    let mut digest = 0u64;
    for (i, record) in records.iter().enumerate() {
        let lsn = first + i as u64;
        assert_eq!(record.lsn, Lsn(lsn), "seed {seed}: LSN gap");
        let (record_type, payload) = record_for_lsn(lsn, EXTRA_PAYLOAD_BYTES_MAX);
        assert!(
            record.record_type == record_type && record.payload == payload,
            "seed {seed}: record {lsn} altered or invented"
        );
        digest = digest.rotate_left(5) ^ lsn ^ u64::from(record.record_type);
    }
    let last = records.last().map_or(first - 1, |r| r.lsn.0);
    assert!(
        last >= acknowledged,
        "seed {seed}: acknowledged up to {acknowledged}, recovered up to {last}"
    );
    digest
}

/// Power loss, then start the node again with the disk's space freed. A start whose own
/// syncs fail (an armed failure outlives the reboot) stops, and is retried after another
/// power loss, as an operator or supervisor would.
fn restart(
    seed: u64,
    fs: &SimFs,
    rng: &mut u64,
    stats: &mut RunStats,
) -> (Wal<SimFs>, storage::Recovered) {
    for _attempt in 0..4 {
        fs.crash(splitmix64(rng));
        fs.set_capacity_bytes(None);
        stats.crashes += 1;
        match Wal::open(fs.clone(), dir(), options()) {
            Ok(opened) => return opened,
            Err(Error::SyncFailed { .. }) => stats.sync_failures += 1,
            Err(e) => panic!("seed {seed}: restart refused: {e}"),
        }
    }
    panic!("seed {seed}: node did not start in 4 attempts");
}

/// One seeded run: random batches, syncs, truncations, armed fsync failures, a shrinking
/// disk, and power losses; after every power loss the log is reopened and verified.
fn run(seed: u64) -> RunStats {
    let fs = SimFs::new();
    let mut rng = seed;
    let mut stats = RunStats::default();
    let (mut wal, _) = Wal::open(fs.clone(), dir(), options()).expect("open");
    let mut acknowledged = 0u64;
    let mut truncated_before = 1u64;
    let mut must_restart = false;
    for _step in 0..300 {
        let roll = splitmix64(&mut rng) % 100;
        if must_restart || roll < 5 {
            drop(wal);
            let (reopened, recovered) = restart(seed, &fs, &mut rng, &mut stats);
            stats.torn_tails += u32::from(recovered.torn_tail.is_some());
            stats.digest ^= verify(seed, &recovered.records, truncated_before, acknowledged);
            // Whatever survived is durable now: the reopened log synced it.
            acknowledged = reopened.durable_lsn().0;
            wal = reopened;
            must_restart = false;
        } else if roll < 60 {
            for _ in 0..1 + splitmix64(&mut rng) % 8 {
                let (record_type, payload) =
                    record_for_lsn(wal.next_lsn().0, EXTRA_PAYLOAD_BYTES_MAX);
                match wal.append(record_type, &payload) {
                    Ok(_) => {}
                    Err(Error::NoSpace { .. }) => {
                        stats.no_space += 1;
                        assert_eq!(wal.next_lsn(), wal.durable_lsn().next());
                        break;
                    }
                    Err(Error::SyncFailed { .. }) => {
                        stats.sync_failures += 1;
                        must_restart = true;
                        break;
                    }
                    Err(e) => panic!("seed {seed}: append: {e}"),
                }
            }
        } else if roll < 85 {
            match wal.sync() {
                Ok(lsn) => {
                    assert!(lsn.0 >= acknowledged);
                    acknowledged = lsn.0;
                }
                Err(Error::NoSpace { .. }) => stats.no_space += 1,
                Err(Error::SyncFailed { .. }) => {
                    stats.sync_failures += 1;
                    assert!(wal.is_poisoned());
                    assert!(matches!(wal.append(1, b"x"), Err(Error::Poisoned)));
                    assert!(matches!(wal.sync(), Err(Error::Poisoned)));
                    must_restart = true;
                }
                Err(e) => panic!("seed {seed}: sync: {e}"),
            }
        } else if roll < 90 {
            let upto = 1 + splitmix64(&mut rng) % (acknowledged + 1);
            match wal.truncate_before(Lsn(upto)) {
                Ok(_) => truncated_before = truncated_before.max(upto),
                Err(Error::SyncFailed { .. }) => {
                    // The removals may or may not survive: either way only records below
                    // `upto` can go.
                    truncated_before = truncated_before.max(upto);
                    stats.sync_failures += 1;
                    must_restart = true;
                }
                Err(e) => panic!("seed {seed}: truncate: {e}"),
            }
        } else if roll < 93 {
            fs.fail_next_syncs(1);
        } else {
            // The disk fills up: room for a little more than what is used.
            let slack_bytes = splitmix64(&mut rng) % 3000;
            fs.set_capacity_bytes(Some(fs.used_bytes() + slack_bytes));
        }
    }
    drop(wal);
    let (wal, recovered) = restart(seed, &fs, &mut rng, &mut stats);
    stats.digest ^= verify(seed, &recovered.records, truncated_before, acknowledged);
    stats.acknowledged = acknowledged;
    stats.recovered_last_lsn = recovered.records.last().map_or(0, |r| r.lsn.0);
    stats.first_lsn = wal.first_lsn().0;
    stats
}

#[test]
fn random_power_losses_never_lose_an_acknowledged_record() {
    let mut total = RunStats::default();
    let seeds = 300;
    for seed in 0..seeds {
        let stats = run(seed);
        total.crashes += stats.crashes;
        total.torn_tails += stats.torn_tails;
        total.sync_failures += stats.sync_failures;
        total.no_space += stats.no_space;
        total.acknowledged += stats.acknowledged;
        assert!(stats.recovered_last_lsn >= stats.acknowledged);
        total.recovered_last_lsn += stats.recovered_last_lsn;
    }
    eprintln!(
        "{seeds} seeds: {} power losses, {} torn tails wiped, {} failed fsyncs, {} full-disk \
         errors; {} records acknowledged, none lost",
        total.crashes, total.torn_tails, total.sync_failures, total.no_space, total.acknowledged
    );
    assert!(total.crashes > 1000 && total.torn_tails > 100);
    assert!(total.sync_failures > 50 && total.no_space > 50);
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [1, 7, 42, 1234] {
        assert_eq!(run(seed), run(seed), "seed {seed} diverged");
    }
}

fn append_synced(wal: &mut Wal<SimFs>, count: u64) -> Lsn {
    for _ in 0..count {
        let (record_type, payload) = record_for_lsn(wal.next_lsn().0, EXTRA_PAYLOAD_BYTES_MAX);
        wal.append(record_type, &payload).expect("append");
    }
    wal.sync().expect("sync")
}

#[test]
fn a_full_disk_fails_only_what_did_not_fit_and_serves_again_once_space_is_freed() {
    let fs = SimFs::new();
    let (mut wal, _) = Wal::open(fs.clone(), dir(), options()).expect("open");
    let acknowledged = append_synced(&mut wal, 100);
    assert!(wal.segment_count() >= 2);
    // No room for another segment.
    fs.set_capacity_bytes(Some(fs.used_bytes() + 100));
    let mut failures = 0;
    let mut last_ok = acknowledged;
    for _ in 0..200 {
        let (record_type, payload) = record_for_lsn(wal.next_lsn().0, EXTRA_PAYLOAD_BYTES_MAX);
        match wal.append(record_type, &payload) {
            Ok(_) => last_ok = wal.sync().expect("sync in the current segment"),
            Err(Error::NoSpace { file, .. }) => {
                failures += 1;
                assert!(
                    file.to_string_lossy().ends_with(".wal.tmp"),
                    "{}",
                    file.display()
                );
                assert_eq!(wal.durable_lsn(), last_ok);
                assert_eq!(wal.next_lsn(), last_ok.next());
                assert_eq!(wal.sync().expect("nothing to sync"), last_ok);
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(failures > 0, "the disk never filled up");
    assert!(!wal.is_poisoned());
    let names = fs.list(&dir()).expect("list");
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");

    // Power loss while full: everything acknowledged is there.
    drop(wal);
    fs.crash(99);
    let (mut wal, recovered) = Wal::open(fs.clone(), dir(), options()).expect("open while full");
    assert_eq!(recovered.records.len() as u64, last_ok.0);

    // A snapshot lets the old segments go; the freed space takes new segments.
    let removed = wal.truncate_before(last_ok).expect("truncate");
    assert!(removed >= 1);
    let more = append_synced(&mut wal, 60);
    assert_eq!(more.0, last_ok.0 + 60);
    drop(wal);
    fs.crash(5);
    let (_wal, recovered) = Wal::open(fs.clone(), dir(), options()).expect("reopen");
    assert_eq!(recovered.records.last().map(|r| r.lsn), Some(more));
}

#[test]
fn a_failed_fsync_poisons_the_log_and_nothing_acknowledged_is_lost() {
    for rng_word in 0..50 {
        let fs = SimFs::new();
        let (mut wal, _) = Wal::open(fs.clone(), dir(), options()).expect("open");
        let acknowledged = append_synced(&mut wal, 10);
        wal.append(1, b"in the failed batch").expect("append");
        fs.fail_next_syncs(1);
        assert!(matches!(wal.sync(), Err(Error::SyncFailed { .. })));
        assert!(matches!(wal.append(1, b"later"), Err(Error::Poisoned)));
        assert!(matches!(wal.sync(), Err(Error::Poisoned)));
        assert!(matches!(wal.truncate_before(Lsn(5)), Err(Error::Poisoned)));
        drop(wal);
        fs.crash(rng_word);
        let (_wal, recovered) = Wal::open(fs.clone(), dir(), options()).expect("restart");
        assert!(recovered.records.len() as u64 >= acknowledged.0);
        assert!(recovered.records.len() as u64 <= acknowledged.0 + 1);
    }
}

#[test]
fn a_failed_fsync_while_rolling_a_segment_poisons_the_log() {
    // 100-byte payloads make 109-byte records: 18 fit in a 2048-byte segment after its
    // 24-byte header, the 19th rolls. A roll syncs the old segment, then the new segment
    // (under its temp name), then the directory: fail each in turn.
    let payload = [0xA5u8; 100];
    for syncs_before_failure in 0..3 {
        let fs = SimFs::new();
        let (mut wal, _) = Wal::open(fs.clone(), dir(), options()).expect("open");
        for _ in 0..17 {
            wal.append(1, &payload).expect("append");
        }
        assert_eq!(wal.sync().expect("sync"), Lsn(17));
        wal.append(1, &payload).expect("18th record fits");
        assert_eq!(wal.segment_count(), 1);
        fs.fail_syncs(syncs_before_failure, 1);
        let result = wal.append(1, &payload);
        assert!(
            matches!(result, Err(Error::SyncFailed { .. })),
            "sync {syncs_before_failure} of the roll: {result:?}"
        );
        assert!(matches!(wal.append(1, &payload), Err(Error::Poisoned)));
        drop(wal);
        fs.crash(syncs_before_failure.into());
        let (_wal, recovered) = Wal::open(fs.clone(), dir(), options()).expect("restart");
        let durable = if syncs_before_failure == 0 { 17 } else { 18 };
        assert!(recovered.records.len() >= durable);
        assert!(recovered.records.len() <= 18);
        let names = fs.list(&dir()).expect("list");
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }
}

#[test]
fn the_simulated_disk_loses_unsynced_names_and_tears_writes() {
    let d = Path::new("/d");
    // A synced file whose name was never synced may or may not survive; one whose directory
    // was synced always does.
    let mut lost = 0;
    for rng_word in 0..50 {
        let fs = SimFs::new();
        let mut file = fs.create_new(&d.join("a")).expect("create");
        file.write_all_at(b"durable", 0).expect("write");
        file.sync_all().expect("sync");
        fs.crash(rng_word);
        match fs.read_file(&d.join("a")) {
            None => lost += 1,
            Some(bytes) => assert_eq!(bytes, b"durable"),
        }
        let mut file = fs.create_new(&d.join("b")).expect("create");
        file.write_all_at(b"durable", 0).expect("write");
        file.sync_all().expect("sync");
        fs.sync_dir(d).expect("sync dir");
        fs.crash(rng_word);
        assert_eq!(fs.read_file(&d.join("b")).as_deref(), Some(&b"durable"[..]));
    }
    assert!(
        lost > 10 && lost < 40,
        "unsynced names lost {lost} times of 50"
    );

    let mut seen_lengths = std::collections::BTreeSet::new();
    for rng_word in 0..200 {
        // Each crash settles the unsynced write for good, so tear it on fresh disks.
        let fs = SimFs::new();
        let mut file = fs.create_new(&d.join("b")).expect("create");
        fs.sync_dir(d).expect("sync dir");
        file.write_all_at(b"0123456789", 0).expect("write");
        file.sync_all().expect("sync");
        file.write_all_at(b"abcdefghij", 10).expect("write");
        fs.crash(rng_word);
        let after = fs.read_file(&d.join("b")).expect("synced file survives");
        assert!(after.len() >= 10 && after.len() <= 20);
        assert_eq!(&after[..10], b"0123456789");
        assert_eq!(&after[10..], &b"abcdefghij"[..after.len() - 10]);
        assert!(
            file.len_bytes().is_err(),
            "handle must be stale after a crash"
        );
        seen_lengths.insert(after.len());
    }
    assert!(
        seen_lengths.len() > 5,
        "tearing too regular: {seen_lengths:?}"
    );
}
