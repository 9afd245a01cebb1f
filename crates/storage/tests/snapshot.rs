//! Snapshots: atomic save and verified load on both disks, refusal of a damaged snapshot
//! naming the file and offset, and chunked transfer that survives duplicates, reordering,
//! stale senders, tampering, crashes and restarts.

mod common;

use std::path::{Path, PathBuf};

use storage::testing::splitmix64;
use storage::{
    ChunkOutcome, Error, Fs, FsFile, SNAPSHOT_HEADER_BYTES, SimFs, Snapshot, SnapshotOptions,
    SnapshotReceiver, SnapshotSender, SnapshotStore, StdFs,
};

use common::TempDir;

const BLOCK_BYTES: u32 = 256;

fn options() -> SnapshotOptions {
    SnapshotOptions {
        block_bytes: BLOCK_BYTES,
        snapshot_bytes_max: 1 << 20,
        chunk_bytes_max: 4096,
    }
}

fn image(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len).map(|_| splitmix64(&mut state) as u8).collect()
}

fn snapshot_files<F: Fs>(fs: &F, dir: &Path) -> Vec<String> {
    let mut names = fs.list(dir).expect("list");
    names.sort();
    names
}

fn save_and_load<F: Fs + Clone>(fs: F, dir: &Path) {
    let mut store = SnapshotStore::open(fs.clone(), dir, options()).expect("open");
    assert_eq!(store.load_latest().expect("load"), None);
    let sizes = [0, 1, 255, 256, 257, 1000, 5 * 256];
    for (i, len) in sizes.iter().enumerate() {
        let index = 10 + i as u64;
        let data = image(index, *len);
        store.save(index, &data).expect("save");
        let loaded = store.load_latest().expect("load");
        assert_eq!(loaded, Some(Snapshot { index, data }));
        // Older snapshots are gone once the new one is durable.
        assert_eq!(
            snapshot_files(&fs, dir),
            vec![format!("snapshot-{index:020}.snap")]
        );
    }
    let newest = 10 + sizes.len() as u64 - 1;
    // Asked for one at least as new as a slot: the newest if it is, else none.
    assert_eq!(
        store
            .load_latest_from(newest)
            .expect("load")
            .map(|s| s.index),
        Some(newest)
    );
    assert_eq!(store.load_latest_from(newest + 1).expect("load"), None);
    drop(store);
    let store = SnapshotStore::open(fs, dir, options()).expect("reopen");
    assert_eq!(store.latest_index().expect("index"), Some(newest));
}

#[test]
fn save_and_load_on_the_simulated_disk() {
    save_and_load(SimFs::new(), Path::new("/node/snap"));
}

#[test]
fn save_and_load_on_real_files() {
    let dir = TempDir::new("snap-save");
    save_and_load(StdFs, dir.path());
}

#[test]
fn a_save_written_in_pieces_is_the_same_file_as_one_written_whole() {
    let dir = TempDir::new("snap-pieces");
    let whole_dir = dir.path().join("whole");
    let pieces_dir = dir.path().join("pieces");
    for len in [0, 1, 255, 256, 257, 1000, 5 * 256] {
        let data = image(len as u64, len);
        let mut whole = SnapshotStore::open(StdFs, &whole_dir, options()).expect("open");
        whole.save(7, &data).expect("save");
        let mut pieces = SnapshotStore::open(StdFs, &pieces_dir, options()).expect("open");
        let mut save = pieces.begin(7).expect("begin");
        // Pieces that straddle block boundaries, and an empty one.
        let mut rest = &data[..];
        for size in [3, 0, 250, 300, 1].iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at((*size).min(rest.len()));
            save.write(piece).expect("write");
            rest = tail;
        }
        assert_eq!(save.finish().expect("finish"), len as u64);
        let name = "snapshot-00000000000000000007.snap";
        let read = |d: &Path| std::fs::read(d.join(name)).expect("read the file");
        assert_eq!(read(&pieces_dir), read(&whole_dir), "{len} bytes");
        assert_eq!(
            pieces.load_latest().expect("load"),
            Some(Snapshot { index: 7, data })
        );
    }
}

#[test]
fn a_save_abandoned_or_too_large_keeps_the_previous_snapshot() {
    let dir = TempDir::new("snap-abandon");
    let mut store = SnapshotStore::open(StdFs, dir.path(), options()).expect("open");
    store.save(1, &image(1, 700)).expect("save");
    // Dropped unfinished: the temporary file goes, the old snapshot stays.
    let mut save = store.begin(2).expect("begin");
    save.write(&image(2, 600)).expect("write");
    drop(save);
    assert_eq!(
        snapshot_files(&StdFs, dir.path()),
        vec!["snapshot-00000000000000000001.snap".to_string()]
    );
    // Past the size limit, found while writing.
    let mut save = store.begin(3).expect("begin");
    let piece = image(3, 64 << 10);
    let mut failed = None;
    for _ in 0..20 {
        if let Err(e) = save.write(&piece) {
            failed = Some(e);
            break;
        }
    }
    assert!(
        matches!(failed, Some(Error::SnapshotTooLarge { .. })),
        "{failed:?}"
    );
    assert!(
        matches!(save.finish(), Err(Error::SaveAbandoned { .. })),
        "a failed save cannot be finished"
    );
    assert_eq!(
        store.load_latest().expect("load"),
        Some(Snapshot {
            index: 1,
            data: image(1, 700)
        })
    );
    assert_eq!(snapshot_files(&StdFs, dir.path()).len(), 1);
}

#[test]
fn a_crash_during_save_keeps_the_previous_snapshot() {
    let dir = Path::new("/node/snap");
    for rng_word in 0..100 {
        let fs = SimFs::new();
        let mut store = SnapshotStore::open(fs.clone(), dir, options()).expect("open");
        store.save(1, &image(1, 700)).expect("save");
        // Fail the first sync of the next save: the temp file's.
        fs.fail_next_syncs(1);
        assert!(matches!(
            store.save(2, &image(2, 900)),
            Err(Error::SyncFailed { .. })
        ));
        assert!(store.is_poisoned());
        assert!(matches!(store.save(3, b"x"), Err(Error::Poisoned)));
        drop(store);
        fs.crash(rng_word);
        let store = SnapshotStore::open(fs.clone(), dir, options()).expect("restart");
        let loaded = store.load_latest().expect("load").expect("a snapshot");
        assert_eq!(
            loaded,
            Snapshot {
                index: 1,
                data: image(1, 700)
            }
        );
        assert!(
            snapshot_files(&fs, dir)
                .iter()
                .all(|n| !n.ends_with(".tmp"))
        );

        // A crash right after a save returned keeps the new one.
        let mut store = store;
        store.save(4, &image(4, 300)).expect("save");
        drop(store);
        fs.crash(rng_word ^ 0xFFFF);
        let store = SnapshotStore::open(fs.clone(), dir, options()).expect("restart");
        assert_eq!(store.load_latest().expect("load").map(|s| s.index), Some(4));
    }
}

/// Flip a bit of a saved snapshot at `offset`; loading must be refused, naming the file
/// and `expected_offset`.
fn assert_refused<F: Fs + Clone>(fs: &F, dir: &Path, offset: u64, expected_offset: u64) -> String {
    let mut store = SnapshotStore::open(fs.clone(), dir, options()).expect("open");
    store.save(7, &image(7, 1000)).expect("save");
    let path = dir.join("snapshot-00000000000000000007.snap");
    let mut file = fs.open(&path).expect("open");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).expect("read");
    byte[0] ^= 0x10;
    file.write_all_at(&byte, offset).expect("write");
    file.sync_all().expect("sync");
    match store.load_latest() {
        Err(err @ Error::Corrupt { .. }) => {
            let Error::Corrupt {
                file, offset: at, ..
            } = &err
            else {
                unreachable!()
            };
            assert_eq!(file, &path);
            assert_eq!(*at, expected_offset, "flip at {offset}: {err}");
            err.to_string()
        }
        other => panic!("flip at {offset}: expected Corrupt, got {other:?}"),
    }
}

fn corrupted_snapshots_are_refused<F: Fs + Clone>(fs: F, dir: &Path) -> String {
    let block_frame = 4 + u64::from(BLOCK_BYTES);
    // Header fields: caught by the header checksum, reported at offset 0.
    for offset in [0, 8, 12, 16, 24, 32, 36] {
        assert_refused(&fs, dir, offset, 0);
    }
    // Block checksums and data: reported at the damaged block.
    for block in 0..4u64 {
        let pos = SNAPSHOT_HEADER_BYTES + block * block_frame;
        assert_refused(&fs, dir, pos, pos);
        assert_refused(&fs, dir, pos + 4, pos);
        if block < 3 {
            assert_refused(&fs, dir, pos + block_frame - 1, pos);
        }
    }
    // The message for a flipped data byte in the third block.
    let pos = SNAPSHOT_HEADER_BYTES + 2 * block_frame;
    let message = assert_refused(&fs, dir, pos + 100, pos);
    // A cut file.
    let mut store = SnapshotStore::open(fs.clone(), dir, options()).expect("open");
    store.save(8, &image(8, 1000)).expect("save");
    let path = dir.join("snapshot-00000000000000000008.snap");
    let mut file = fs.open(&path).expect("open");
    file.set_len(500).expect("cut");
    file.sync_all().expect("sync");
    assert!(matches!(
        store.load_latest(),
        Err(Error::Corrupt { offset: 500, .. })
    ));
    message
}

#[test]
fn corrupted_snapshots_are_refused_on_the_simulated_disk() {
    corrupted_snapshots_are_refused(SimFs::new(), Path::new("/node/snap"));
}

#[test]
fn corrupted_snapshots_are_refused_on_real_files() {
    let dir = TempDir::new("snap-corrupt");
    let message = corrupted_snapshots_are_refused(StdFs, dir.path());
    eprintln!("refusal: {message}");
    assert!(message.contains("snapshot-00000000000000000007.snap"));
    assert!(message.contains("byte offset 560"));
}

fn receive_all<F: Fs>(
    receiver: &mut SnapshotReceiver<F>,
    sender: &SnapshotSender,
    from: u64,
) -> ChunkOutcome {
    let mut outcome = None;
    for chunk in sender.chunks_from(from) {
        outcome = Some(receiver.accept(&chunk).expect("accept"));
    }
    outcome.expect("at least one chunk")
}

fn transfer<F: Fs + Clone>(fs: F, dir: &Path) {
    for (len, chunk_bytes) in [
        (0, 100),
        (1, 100),
        (1000, 100),
        (1000, 256),
        (3000, 777),
        (4096, 4096),
    ] {
        let data = image(len as u64, len);
        let sender = SnapshotSender::new(20 + len as u64, data.clone(), chunk_bytes);
        let mut receiver = SnapshotReceiver::open(fs.clone(), dir, options()).expect("open");
        assert_eq!(receiver.resume_point(), None);
        let outcome = receive_all(&mut receiver, &sender, 0);
        assert_eq!(
            outcome,
            ChunkOutcome::Installed {
                index: sender.index()
            }
        );
        let store = SnapshotStore::open(fs.clone(), dir, options()).expect("store");
        assert_eq!(
            store.load_latest().expect("load"),
            Some(Snapshot {
                index: sender.index(),
                data
            })
        );
    }
}

#[test]
fn transfer_on_the_simulated_disk() {
    transfer(SimFs::new(), Path::new("/node/snap"));
}

#[test]
fn transfer_on_real_files() {
    let dir = TempDir::new("snap-transfer");
    transfer(StdFs, dir.path());
}

#[test]
fn duplicate_reordered_and_stale_chunks_change_nothing() {
    let fs = SimFs::new();
    let dir = Path::new("/node/snap");
    let data = image(3, 2000);
    let sender = SnapshotSender::new(30, data.clone(), 300);
    let chunks: Vec<_> = sender.chunks_from(0).collect();
    let mut receiver = SnapshotReceiver::open(fs.clone(), dir, options()).expect("open");
    // A chunk from the middle before the start: asked to start from 0.
    assert_eq!(
        receiver.accept(&chunks[2]).expect("accept"),
        ChunkOutcome::Continue {
            index: 30,
            next_offset: 0
        }
    );
    receiver.accept(&chunks[0]).expect("accept");
    receiver.accept(&chunks[1]).expect("accept");
    // Duplicate and skipped-ahead chunks: asked for 600 again.
    for chunk in [&chunks[0], &chunks[1], &chunks[3]] {
        assert_eq!(
            receiver.accept(chunk).expect("accept"),
            ChunkOutcome::Continue {
                index: 30,
                next_offset: 600
            }
        );
    }
    // A stale sender of an older snapshot is ignored.
    let old = SnapshotSender::new(29, image(29, 2000), 300);
    for chunk in old.chunks_from(0).take(2) {
        assert_eq!(
            receiver.accept(&chunk).expect("accept"),
            ChunkOutcome::Continue {
                index: 30,
                next_offset: 600
            }
        );
    }
    // Out-of-bounds chunks are rejected outright.
    let mut bad = chunks[2].clone();
    bad.offset = 1900;
    assert!(matches!(
        receiver.accept(&bad),
        Err(Error::InvalidChunk { .. })
    ));
    // The rest completes the transfer.
    let outcome = receive_all(&mut receiver, &sender, 600);
    assert_eq!(outcome, ChunkOutcome::Installed { index: 30 });
    let store = SnapshotStore::open(fs, dir, options()).expect("store");
    assert_eq!(
        store.load_latest().expect("load"),
        Some(Snapshot { index: 30, data })
    );
}

#[test]
fn a_newer_snapshot_replaces_a_transfer_in_progress() {
    let fs = SimFs::new();
    let dir = Path::new("/node/snap");
    let first = SnapshotSender::new(40, image(40, 1500), 500);
    let second = SnapshotSender::new(41, image(41, 1200), 500);
    let mut receiver = SnapshotReceiver::open(fs.clone(), dir, options()).expect("open");
    receiver
        .accept(&first.chunk_at(0).expect("chunk"))
        .expect("accept");
    assert_eq!(
        receive_all(&mut receiver, &second, 0),
        ChunkOutcome::Installed { index: 41 }
    );
    assert_eq!(receiver.resume_point(), None);
}

#[test]
fn a_tampered_transfer_is_discarded_and_restarts() {
    let fs = SimFs::new();
    let dir = Path::new("/node/snap");
    let data = image(5, 1000);
    let sender = SnapshotSender::new(50, data.clone(), 400);
    let mut receiver = SnapshotReceiver::open(fs.clone(), dir, options()).expect("open");
    let mut chunks: Vec<_> = sender.chunks_from(0).collect();
    chunks[1].data[17] ^= 1;
    receiver.accept(&chunks[0]).expect("accept");
    receiver.accept(&chunks[1]).expect("accept");
    let err = receiver.accept(&chunks[2]).expect_err("checksum must fail");
    assert!(
        matches!(err, Error::TransferChecksum { index: 50, .. }),
        "{err}"
    );
    assert_eq!(receiver.resume_point(), None);
    assert_eq!(
        receive_all(&mut receiver, &sender, 0),
        ChunkOutcome::Installed { index: 50 }
    );
    let store = SnapshotStore::open(fs, dir, options()).expect("store");
    assert_eq!(
        store.load_latest().expect("load"),
        Some(Snapshot { index: 50, data })
    );
}

/// Break a transfer after `delivered_chunks`, lose power (or just restart), reopen the
/// receiver, resume from the point it reports, and finish.
#[test]
fn a_broken_transfer_resumes_after_a_crash() {
    let dir = Path::new("/node/snap");
    let data = image(6, 3000);
    let sender = SnapshotSender::new(60, data.clone(), 333);
    let chunk_count = sender.chunks_from(0).count();
    let mut resumed_past_zero = 0;
    for rng_word in 0..200u64 {
        let fs = SimFs::new();
        let delivered_chunks = 1 + (rng_word as usize % (chunk_count - 1));
        let mut receiver = SnapshotReceiver::open(fs.clone(), dir, options()).expect("open");
        for chunk in sender.chunks_from(0).take(delivered_chunks) {
            receiver.accept(&chunk).expect("accept");
        }
        let delivered_bytes = (delivered_chunks * 333) as u64;
        drop(receiver);
        fs.crash(rng_word);
        let mut receiver = SnapshotReceiver::open(fs.clone(), dir, options()).expect("reopen");
        let resume = receiver.resume_point().map_or(0, |point| {
            assert_eq!((point.index, point.total_len), (60, 3000));
            point.offset
        });
        assert!(resume <= delivered_bytes);
        assert_eq!(
            resume % u64::from(BLOCK_BYTES),
            0,
            "resume at a block boundary"
        );
        resumed_past_zero += u32::from(resume > 0);
        assert_eq!(
            receive_all(&mut receiver, &sender, resume),
            ChunkOutcome::Installed { index: 60 }
        );
        let store = SnapshotStore::open(fs, dir, options()).expect("store");
        assert_eq!(
            store.load_latest().expect("load"),
            Some(Snapshot {
                index: 60,
                data: data.clone()
            })
        );
    }
    assert!(
        resumed_past_zero > 50,
        "resumed past 0 only {resumed_past_zero} times"
    );
}

#[test]
fn a_broken_transfer_resumes_after_a_restart_on_real_files() {
    let dir = TempDir::new("snap-resume");
    let data = image(8, 5000);
    let sender = SnapshotSender::new(80, data.clone(), 700);
    let mut receiver = SnapshotReceiver::open(StdFs, dir.path(), options()).expect("open");
    for chunk in sender.chunks_from(0).take(4) {
        receiver.accept(&chunk).expect("accept");
    }
    drop(receiver);
    let mut receiver = SnapshotReceiver::open(StdFs, dir.path(), options()).expect("reopen");
    let point = receiver.resume_point().expect("a transfer in progress");
    // 2800 bytes were delivered; the last complete block ends at 2560.
    assert_eq!(point.offset, 2560);
    assert_eq!(
        receive_all(&mut receiver, &sender, point.offset),
        ChunkOutcome::Installed { index: 80 }
    );
    let store = SnapshotStore::open(StdFs, dir.path(), options()).expect("store");
    assert_eq!(
        store.load_latest().expect("load"),
        Some(Snapshot { index: 80, data })
    );
}

#[test]
fn a_complete_transfer_whose_install_failed_is_installed_on_restart() {
    let fs = SimFs::new();
    let dir = PathBuf::from("/node/snap");
    let data = image(9, 1000);
    let sender = SnapshotSender::new(90, data.clone(), 250);
    let mut receiver = SnapshotReceiver::open(fs.clone(), &dir, options()).expect("open");
    let chunks: Vec<_> = sender.chunks_from(0).collect();
    for chunk in &chunks[..chunks.len() - 1] {
        receiver.accept(chunk).expect("accept");
    }
    fs.fail_next_syncs(1);
    let last = chunks.last().expect("chunks");
    assert!(matches!(
        receiver.accept(last),
        Err(Error::SyncFailed { .. })
    ));
    assert!(matches!(receiver.accept(last), Err(Error::Poisoned)));
    drop(receiver);
    // The process restarts (no power loss): the complete partial file is still there.
    let receiver = SnapshotReceiver::open(fs.clone(), &dir, options()).expect("restart");
    assert_eq!(receiver.installed_on_open(), Some(90));
    assert_eq!(receiver.resume_point(), None);
    let store = SnapshotStore::open(fs, &dir, options()).expect("store");
    assert_eq!(
        store.load_latest().expect("load"),
        Some(Snapshot { index: 90, data })
    );
}

#[test]
fn a_paced_save_cut_short_by_a_crash_at_any_step_loads_the_new_snapshot() {
    let dir = Path::new("/snaps-paced");
    let old = image(1, 1000);
    let new = image(2, 700);
    // `crash_at` counts the pauses (one after each synced cut of the older
    // snapshot); `None` lets the save finish.
    let run = |crash_at: Option<usize>| -> (usize, Vec<String>) {
        let fs = SimFs::new();
        let mut store = SnapshotStore::open(fs.clone(), dir, options()).expect("open");
        store.save(5, &old).expect("save the older snapshot");
        let mut save = store.begin(9).expect("begin");
        save.write(&new).expect("write");
        let mut pauses = 0;
        let crasher = fs.clone();
        let finished = save.finish_paced(100, || {
            if crash_at == Some(pauses) {
                crasher.crash(pauses as u64 + 11);
            }
            pauses += 1;
        });
        if crash_at.is_none() {
            assert_eq!(finished.expect("finish"), new.len() as u64);
        }
        drop(store);
        fs.crash(3);
        let store = SnapshotStore::open(fs.clone(), dir, options()).expect("reopen");
        assert_eq!(
            store.load_latest().expect("load"),
            Some(Snapshot {
                index: 9,
                data: new.clone()
            }),
            "crash at pause {crash_at:?}"
        );
        (pauses, snapshot_files(&fs, dir))
    };
    let (pauses, left) = run(None);
    assert!(pauses > 2, "several cuts: {pauses}");
    assert_eq!(left, vec![format!("snapshot-{:020}.snap", 9)]);
    for crash_at in 0..pauses {
        let (_, left) = run(Some(crash_at));
        assert_eq!(
            left,
            vec![format!("snapshot-{:020}.snap", 9)],
            "crash at pause {crash_at:?}"
        );
    }
}
