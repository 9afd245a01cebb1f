//! Crash at every record boundary and inside records, on the simulated disk and on real
//! files: damage at the tail of the log is what a crash leaves, so recovery must return
//! exactly the records before it and carry on; damage anywhere else must be refused with an
//! error that names the file and the byte offset of the damaged record.

mod common;

use std::path::{Path, PathBuf};

use storage::testing::record_for_lsn;
use storage::{
    Error, Fs, FsFile, Lsn, RECORD_OVERHEAD_BYTES, SEGMENT_HEADER_BYTES, SimFs, StdFs, Wal,
    WalOptions,
};

use common::TempDir;

const RECORDS: u64 = 12;
const EXTRA_PAYLOAD_BYTES_MAX: usize = 40;

fn options(segment_bytes_max: u64) -> WalOptions {
    WalOptions {
        segment_bytes_max,
        write_buffer_bytes_max: 4096,
        record_payload_bytes_max: 256,
    }
}

/// Write records 1..=count, syncing every `sync_every`, and return them.
fn build_log<F: Fs + Clone>(
    fs: &F,
    dir: &Path,
    opts: WalOptions,
    count: u64,
) -> Vec<(u8, Vec<u8>)> {
    let (mut wal, recovered) = Wal::open(fs.clone(), dir, opts).expect("open empty log");
    assert!(recovered.records.is_empty());
    let mut expected = Vec::new();
    for lsn in 1..=count {
        let (record_type, payload) = record_for_lsn(lsn, EXTRA_PAYLOAD_BYTES_MAX);
        assert_eq!(wal.append(record_type, &payload).expect("append"), Lsn(lsn));
        if lsn % 3 == 0 {
            wal.sync().expect("sync");
        }
        expected.push((record_type, payload));
    }
    assert_eq!(wal.sync().expect("sync"), Lsn(count));
    expected
}

fn segment_paths<F: Fs>(fs: &F, dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs
        .list(dir)
        .expect("list")
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .map(|name| dir.join(name))
        .collect();
    paths.sort();
    paths
}

fn read_all<F: Fs>(fs: &F, path: &Path) -> Vec<u8> {
    let file = fs.open(path).expect("open");
    let mut bytes = vec![0u8; file.len_bytes().expect("len") as usize];
    file.read_exact_at(&mut bytes, 0).expect("read");
    bytes
}

fn save<F: Fs>(fs: &F, dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    segment_paths(fs, dir)
        .into_iter()
        .map(|path| {
            let bytes = read_all(fs, &path);
            (path, bytes)
        })
        .collect()
}

/// Put the saved segments back exactly as they were (and drop any segment created since).
fn restore<F: Fs>(fs: &F, dir: &Path, saved: &[(PathBuf, Vec<u8>)]) {
    for path in segment_paths(fs, dir) {
        if !saved.iter().any(|(p, _)| *p == path) {
            fs.remove(&path).expect("remove extra segment");
        }
    }
    for (path, bytes) in saved {
        let mut file = match fs.open(path) {
            Ok(file) => file,
            Err(_) => fs.create_new(path).expect("recreate"),
        };
        file.set_len(bytes.len() as u64).expect("set_len");
        file.write_all_at(bytes, 0).expect("write");
        file.sync_all().expect("sync");
    }
    fs.sync_dir(dir).expect("sync dir");
}

/// Byte ranges of the records of a single-segment log.
fn record_ranges(expected: &[(u8, Vec<u8>)]) -> Vec<(u64, u64)> {
    let mut start = SEGMENT_HEADER_BYTES;
    expected
        .iter()
        .map(|(_, payload)| {
            let end = start + (RECORD_OVERHEAD_BYTES + payload.len()) as u64;
            let range = (start, end);
            start = end;
            range
        })
        .collect()
}

/// Offsets to damage for record `(start, end)`: its boundary, inside its length, checksum,
/// type and payload, and its last byte.
fn offsets_in(start: u64, end: u64) -> Vec<u64> {
    let mut offsets = vec![
        start,
        start + 1,
        start + 4,
        start + 8,
        start + 9,
        (start + end) / 2,
        end - 1,
    ];
    offsets.retain(|o| *o < end);
    offsets.dedup();
    offsets
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The file ends at the offset: a crash before the size grew.
    Truncate,
    /// Zeros from the offset on: a crash before preallocated space was overwritten.
    Zero,
    /// One flipped bit at the offset: a torn or rotten write.
    Flip,
}

fn apply<F: Fs>(fs: &F, path: &Path, offset: u64, data_end: u64, damage: Damage) {
    let mut file = fs.open(path).expect("open");
    match damage {
        Damage::Truncate => file.set_len(offset).expect("truncate"),
        Damage::Zero => {
            let zeros = vec![0u8; (data_end - offset) as usize];
            file.write_all_at(&zeros, offset).expect("zero");
        }
        Damage::Flip => {
            let mut byte = [0u8; 1];
            file.read_exact_at(&mut byte, offset).expect("read");
            byte[0] ^= 1 << (offset % 8);
            file.write_all_at(&byte, offset).expect("flip");
        }
    }
    file.sync_all().expect("sync");
}

fn assert_records(records: &[storage::Record], expected: &[(u8, Vec<u8>)]) {
    assert_eq!(records.len(), expected.len(), "recovered record count");
    for (i, (record, (record_type, payload))) in records.iter().zip(expected).enumerate() {
        assert_eq!(record.lsn, Lsn(i as u64 + 1));
        assert_eq!(
            record.record_type, *record_type,
            "type of LSN {}",
            record.lsn
        );
        assert_eq!(&record.payload, payload, "payload of LSN {}", record.lsn);
    }
}

fn assert_corrupt_at<T: std::fmt::Debug>(result: Result<T, Error>, file: &Path, offset: u64) {
    match result {
        Err(Error::Corrupt {
            file: bad_file,
            offset: bad_offset,
            ..
        }) => {
            assert_eq!(bad_file, file, "file named by the refusal");
            assert_eq!(bad_offset, offset, "offset named by the refusal");
        }
        other => panic!(
            "expected Corrupt at {}:{offset}, got {other:?}",
            file.display()
        ),
    }
}

/// Tail damage: cut, zero or flip the log at every boundary and inside every record; reopen
/// must return exactly the records before the damage, and the log must take appends again.
fn tail_damage_recovers_prefix<F: Fs + Clone>(fs: F, dir: &Path) -> usize {
    let opts = options(64 << 10);
    let expected = build_log(&fs, dir, opts, RECORDS);
    let saved = save(&fs, dir);
    assert_eq!(saved.len(), 1);
    let path = saved[0].0.clone();
    let ranges = record_ranges(&expected);
    let data_end = ranges.last().map(|r| r.1).unwrap_or(SEGMENT_HEADER_BYTES);
    let mut cases = 0;
    for damage in [Damage::Truncate, Damage::Zero, Damage::Flip] {
        for (i, (start, end)) in ranges.iter().enumerate() {
            // A flip anywhere but in the last record is mid-log damage (the other test).
            if matches!(damage, Damage::Flip) && i + 1 != ranges.len() {
                continue;
            }
            for offset in offsets_in(*start, *end) {
                restore(&fs, dir, &saved);
                apply(&fs, &path, offset, data_end, damage);
                let (mut wal, recovered) = Wal::open(fs.clone(), dir, opts)
                    .unwrap_or_else(|e| panic!("{damage:?} at {offset}: {e}"));
                assert_records(&recovered.records, &expected[..i]);
                let torn = recovered.torn_tail.as_ref();
                let damaged_bytes_left = offset != *start || matches!(damage, Damage::Flip);
                assert_eq!(torn.is_some(), damaged_bytes_left, "{damage:?} at {offset}");
                if let Some(torn) = torn {
                    assert_eq!((torn.file.as_path(), torn.offset), (path.as_path(), *start));
                }
                // The log carries on from the recovered prefix.
                let lsn = wal.append(7, b"after recovery").expect("append");
                assert_eq!(lsn, Lsn(i as u64 + 1));
                assert_eq!(wal.sync().expect("sync"), lsn);
                drop(wal);
                let (_wal, again) = Wal::open(fs.clone(), dir, opts).expect("reopen");
                assert_records(&again.records[..i], &expected[..i]);
                assert_eq!(again.records.len(), i + 1);
                assert_eq!(again.records[i].payload, b"after recovery");
                assert!(again.torn_tail.is_none());
                cases += 1;
            }
        }
    }
    cases
}

/// Mid-log damage: flip a bit in the length, checksum, type or payload of any record that
/// has an intact record after it, or zero it out; the log must refuse to open, naming the
/// segment and the offset of the damaged record.
fn mid_log_damage_is_refused<F: Fs + Clone>(fs: F, dir: &Path) -> usize {
    let opts = options(64 << 10);
    let expected = build_log(&fs, dir, opts, RECORDS);
    let saved = save(&fs, dir);
    let path = saved[0].0.clone();
    let ranges = record_ranges(&expected);
    let mut cases = 0;
    for (start, end) in &ranges[..ranges.len() - 1] {
        for offset in offsets_in(*start, *end) {
            restore(&fs, dir, &saved);
            apply(&fs, &path, offset, *end, Damage::Flip);
            assert_corrupt_at(Wal::open(fs.clone(), dir, opts), &path, *start);
            cases += 1;
        }
        // A lost sector: the record reads as zeros, intact records follow.
        restore(&fs, dir, &saved);
        let mut file = fs.open(&path).expect("open");
        file.write_all_at(&vec![0u8; (end - start) as usize], *start)
            .expect("zero");
        file.sync_all().expect("sync");
        drop(file);
        assert_corrupt_at(Wal::open(fs.clone(), dir, opts), &path, *start);
        cases += 1;
    }
    // The refused log was not modified: once repaired, it opens with every record.
    restore(&fs, dir, &saved);
    let (_wal, recovered) = Wal::open(fs.clone(), dir, opts).expect("open repaired log");
    assert_records(&recovered.records, &expected);
    cases
}

/// Many segments: damage in a sealed (non-last) segment is refused wherever it is, even a
/// cut at a record boundary (the next segment's first LSN no longer joins up); a missing
/// middle segment is refused; damage at the tail of the last segment is a torn tail.
fn segment_damage<F: Fs + Clone>(fs: F, dir: &Path) -> usize {
    let opts = options(1024);
    let expected = build_log(&fs, dir, opts, 80);
    let saved = save(&fs, dir);
    assert!(
        saved.len() >= 4,
        "want several segments, got {}",
        saved.len()
    );
    let mut cases = 0;
    let (sealed, sealed_bytes) = &saved[1];
    let data_end = sealed_bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i + 1) as u64;

    // A bit flip in the header.
    restore(&fs, dir, &saved);
    apply(&fs, sealed, 13, data_end, Damage::Flip);
    assert_corrupt_at(Wal::open(fs.clone(), dir, opts), sealed, 0);
    cases += 1;

    // Every byte of the sealed segment's records, flipped.
    for offset in (SEGMENT_HEADER_BYTES..data_end).step_by(7) {
        restore(&fs, dir, &saved);
        apply(&fs, sealed, offset, data_end, Damage::Flip);
        match Wal::open(fs.clone(), dir, opts) {
            Err(Error::Corrupt {
                file, offset: at, ..
            }) => {
                assert_eq!(&file, sealed);
                assert!(
                    at <= offset,
                    "refusal at {at} is after the damage at {offset}"
                );
            }
            other => panic!("flip at {offset} in a sealed segment: {other:?}"),
        }
        cases += 1;
    }

    // Cut or zero the sealed segment's tail anywhere, even at a record boundary.
    for cut in [
        data_end - 1,
        data_end - 10,
        SEGMENT_HEADER_BYTES + 1,
        SEGMENT_HEADER_BYTES,
    ] {
        for damage in [Damage::Truncate, Damage::Zero] {
            restore(&fs, dir, &saved);
            apply(&fs, sealed, cut, data_end, damage);
            let result = Wal::open(fs.clone(), dir, opts);
            assert!(
                matches!(&result, Err(Error::Corrupt { file, .. }) if file == sealed),
                "{damage:?} at {cut} of a sealed segment: {result:?}"
            );
            cases += 1;
        }
    }

    // A missing middle segment.
    restore(&fs, dir, &saved);
    fs.remove(&saved[2].0).expect("remove");
    let result = Wal::open(fs.clone(), dir, opts);
    assert!(
        matches!(&result, Err(Error::Corrupt { file, .. }) if *file == saved[1].0),
        "missing segment: {result:?}"
    );
    cases += 1;

    // Tail of the last segment: a torn tail, recovered up to the damage.
    let (last, last_bytes) = saved.last().expect("segments");
    let last_end = last_bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i + 1) as u64;
    restore(&fs, dir, &saved);
    apply(&fs, last, last_end - 3, last_end, Damage::Zero);
    let (_wal, recovered) = Wal::open(fs.clone(), dir, opts).expect("torn tail");
    assert_records(&recovered.records, &expected[..expected.len() - 1]);
    assert_eq!(recovered.torn_tail.map(|t| t.file), Some(last.clone()));
    cases += 1;
    cases
}

#[test]
fn tail_damage_recovers_the_prefix_on_the_simulated_disk() {
    let cases = tail_damage_recovers_prefix(SimFs::new(), Path::new("/node/wal"));
    eprintln!("simulated disk: {cases} tail-damage cases");
}

#[test]
fn tail_damage_recovers_the_prefix_on_real_files() {
    let dir = TempDir::new("tail");
    let cases = tail_damage_recovers_prefix(StdFs, dir.path());
    eprintln!("real files: {cases} tail-damage cases");
}

#[test]
fn mid_log_damage_is_refused_on_the_simulated_disk() {
    let cases = mid_log_damage_is_refused(SimFs::new(), Path::new("/node/wal"));
    eprintln!("simulated disk: {cases} mid-log damage cases");
}

#[test]
fn mid_log_damage_is_refused_on_real_files() {
    let dir = TempDir::new("mid");
    let cases = mid_log_damage_is_refused(StdFs, dir.path());
    eprintln!("real files: {cases} mid-log damage cases");
}

#[test]
fn segment_damage_on_the_simulated_disk() {
    segment_damage(SimFs::new(), Path::new("/node/wal"));
}

#[test]
fn segment_damage_on_real_files() {
    let dir = TempDir::new("segments");
    segment_damage(StdFs, dir.path());
}

#[test]
fn refusal_of_a_corrupted_middle_record_names_file_and_offset() {
    let dir = TempDir::new("refusal");
    let opts = options(64 << 10);
    let expected = build_log(&StdFs, dir.path(), opts, RECORDS);
    let path = segment_paths(&StdFs, dir.path())[0].clone();
    let (start, _) = record_ranges(&expected)[5];
    apply(&StdFs, &path, start + 12, 0, Damage::Flip);
    let err = Wal::open(StdFs, dir.path(), opts).expect_err("must refuse");
    eprintln!("refusal: {err}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()));
    assert!(message.contains(&format!("byte offset {start}")));
}
