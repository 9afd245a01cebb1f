//! The disk: the log, written by the driver itself, and a background
//! thread for the slow work beside it.
//!
//! The driver runs on a thread of its own (not a runtime worker), so it
//! appends and fsyncs inline: a turn's records are made durable with one
//! fsync (group commit) without a hand-off to another thread and back,
//! which a replicated write would otherwise pay on every member. Any
//! storage error is returned and stops the node (DESIGN.md rule 2).
//! Snapshot encoding and saving, the zero-filling of the log's next
//! segment and the removal of trimmed ones run on the background thread.

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use paxos::multi::Record;
use storage::{
    ReplicaStore, Restored, RetiredSegments, SAVE_SYNC_CHUNK_BYTES, SPARE_SYNC_CHUNK_BYTES,
    SegmentPreparer, Snapshot, SnapshotChunk, SnapshotOptions, SnapshotStore, SpareSegment,
    StdFile, StdFs, WalOptions,
};
use tracing::{info, warn};

/// How often the background thread, when idle, hands freed memory back.
const RELEASE_MEMORY_EVERY: Duration = Duration::from_secs(2);

/// A log write or trim taking this long is logged: replies wait for it.
const SLOW_WRITE: Duration = Duration::from_millis(50);

/// Work for the background thread.
enum Background {
    /// Encode and save a snapshot.
    Save {
        slot: u64,
        image: ImageWriter,
        reply: SavedSender,
    },
    /// Zero-fill a spare log segment and hand it to the log's owner,
    /// spreading the writes over about `spread` (see [`spare_spread`]).
    PrepareSpare { spread: Duration },
    /// Hand freed heap memory back to the kernel (after a snapshot: a
    /// trim of a large heap took up to 38 ms, which the driver would stall
    /// for).
    ReleaseMemory,
    /// Drop what the driver no longer needs (the log a compaction trimmed
    /// from memory): freeing it is work the driver need not wait for.
    Discard(Box<dyn Send>),
    /// Remove the files of segments the log dropped; a failure is reported
    /// on `reply` and stops the node.
    Remove {
        retired: RetiredSegments<StdFs>,
        reply: SavedSender,
    },
}

/// Writes a state machine image, piece by piece, into the sink it is
/// given, stopping at the sink's first error.
pub type ImageWriter = Box<
    dyn FnOnce(&mut dyn FnMut(&[u8]) -> Result<(), storage::Error>) -> Result<(), storage::Error>
        + Send,
>;

/// Where the background thread reports each save.
pub type SavedSender = tokio::sync::mpsc::UnboundedSender<Result<Saved, String>>;

/// A snapshot the background thread saved.
#[derive(Debug, Clone, Copy)]
pub struct Saved {
    /// The slot it covers.
    pub slot: u64,
    /// Its size.
    pub bytes: u64,
    /// Time spent encoding it.
    pub encode: Duration,
    /// Time spent writing and syncing it (interleaved with encoding: the
    /// image goes to the file in pieces and is never held whole).
    pub write: Duration,
    /// Time spent pausing between pieces (and between the cuts that
    /// remove the older snapshot), to leave the disk to the log.
    pub paused: Duration,
}

/// The log, owned by the driver, and a handle to the background thread
/// (which stops when this is dropped).
#[derive(Debug)]
pub struct Disk {
    store: ReplicaStore<StdFs>,
    background: std_mpsc::Sender<Background>,
    spares: std_mpsc::Receiver<SpareSegment<StdFile>>,
    /// A spare segment was asked for and has not arrived yet.
    spare_asked: bool,
    /// When the last one was asked for: a roll had just used the one
    /// before, so the time between asks is how long a segment lasts.
    spare_last_asked: Option<Instant>,
}

/// The longest a spare segment's zero-filling is spread over.
const SPARE_SPREAD_MAX: Duration = Duration::from_secs(2);

/// The zero-filling of the spare asked for when the store opens: quick, as
/// no client writes yet.
const SPARE_SPREAD_AT_OPEN: Duration = Duration::from_millis(250);

/// How long to spread the zero-filling of a spare over, given how long the
/// last segment lasted: a quarter of that, so the spare is ready well
/// before the roll that needs it, and at most [`SPARE_SPREAD_MAX`]. The
/// first spare, with nothing to go by, takes half of that: a log that
/// fills a segment faster than that has its roll fill its own segment.
fn spare_spread(segment_lasted: Option<Duration>) -> Duration {
    match segment_lasted {
        Some(lasted) => (lasted / 4).min(SPARE_SPREAD_MAX),
        None => SPARE_SPREAD_MAX / 2,
    }
}

/// Opens the store under `dir` (recovering it) and starts the background
/// thread.
pub fn open(dir: PathBuf) -> Result<(Disk, Restored), storage::Error> {
    let (store, restored) = ReplicaStore::open(
        StdFs,
        &dir,
        WalOptions::default(),
        SnapshotOptions::default(),
    )?;
    let (background, background_rx) = std_mpsc::channel::<Background>();
    let (spares_tx, spares) = std_mpsc::channel::<SpareSegment<StdFile>>();
    let writer = store.snapshot_writer();
    let preparer = store.segment_preparer();
    std::thread::Builder::new()
        .name("synod-background".into())
        .spawn(move || run_background(writer, preparer, background_rx, spares_tx))
        .map_err(|source| storage::Error::Io {
            op: "spawn the background thread",
            file: dir.clone(),
            source,
        })?;
    let mut disk = Disk {
        store,
        background,
        spares,
        spare_asked: false,
        spare_last_asked: None,
    };
    // The first spare is filled while the member starts and elects, not
    // under its first clients' writes.
    disk.keep_spare_within(Some(SPARE_SPREAD_AT_OPEN));
    Ok((disk, restored))
}

/// The background thread: encodes and saves snapshots, zero-fills the
/// log's next segment, removes trimmed ones and hands freed memory back,
/// beside the log, so that neither the driver nor the log waits for them.
fn run_background(
    mut writer: SnapshotStore<StdFs>,
    mut preparer: SegmentPreparer<StdFs>,
    jobs: std_mpsc::Receiver<Background>,
    spares: std_mpsc::Sender<SpareSegment<StdFile>>,
) {
    super::tuning::lower_thread_priority();
    loop {
        let job = match jobs.recv_timeout(RELEASE_MEMORY_EVERY) {
            Ok(job) => job,
            Err(std_mpsc::RecvTimeoutError::Timeout) => {
                // Heap pages freed by request traffic go back to the kernel.
                super::tuning::release_free_memory();
                continue;
            }
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        };
        match job {
            Background::Save { slot, image, reply } => {
                let _ = reply.send(save(&mut writer, slot, image).map_err(|e| e.to_string()));
            }
            Background::PrepareSpare { spread } => {
                let started = Instant::now();
                let pieces = preparer.len_bytes().div_ceil(SPARE_SYNC_CHUNK_BYTES).max(1);
                let step = spread / u32::try_from(pieces).unwrap_or(u32::MAX);
                // Each piece is due `step` after the one before: the pause is
                // what is left of that after the piece's own write and sync,
                // so a slow disk does not stretch the fill past `spread`.
                let mut due = started;
                let pause = || {
                    due += step;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                };
                match preparer.prepare_paced(pause) {
                    Ok(spare) => {
                        let took_ms = started.elapsed().as_millis() as u64;
                        info!(took_ms, "spare log segment prepared");
                        let _ = spares.send(spare);
                    }
                    // The roll then fills its own segment, and reports a
                    // disk that is really failing.
                    Err(e) => warn!(%e, "could not prepare a spare log segment"),
                }
            }
            Background::ReleaseMemory => super::tuning::release_free_memory(),
            Background::Discard(garbage) => drop(garbage),
            Background::Remove { retired, reply } => {
                let started = Instant::now();
                let pause = || std::thread::sleep(RETIRE_PAUSE);
                match retired.remove_paced(RETIRE_STEP_BYTES, pause) {
                    Ok(removed) => {
                        let took = started.elapsed();
                        info!(
                            removed,
                            took_ms = took.as_millis() as u64,
                            "log segments removed"
                        );
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("removing trimmed log segments: {e}")));
                    }
                }
            }
        }
    }
}

/// A trimmed segment's or an older snapshot's file is cut down by this
/// much at a time before it is unlinked, each cut followed by
/// [`RETIRE_PAUSE`]: the disk frees it in pieces instead of at once (see
/// `RetiredSegments::remove_paced`, `SnapshotSave::finish_paced`).
const RETIRE_STEP_BYTES: u64 = 8 << 20;
/// Pause after each cut of a removed file (a 64 MiB segment: 8 cuts).
const RETIRE_PAUSE: Duration = Duration::from_millis(5);

/// Pause after each synced piece of a snapshot, so that the log's fsyncs
/// on the same disk find it idle more often: beside three 55 MB saves in
/// 512 KiB pieces, three fsync loops took 0.98 ms at the median and 6.3 ms
/// at the 99th percentile without it, 0.38 and 1.7 ms with it
/// (`bench/fsync_beside_bulk.py`, docs/BENCHMARKS.md).
const SAVE_PAUSE: Duration = Duration::from_millis(2);

/// Streams the image into a new snapshot file, timing the writes apart
/// from the encoding between them, pausing after each synced piece.
fn save(
    writer: &mut SnapshotStore<StdFs>,
    slot: u64,
    image: ImageWriter,
) -> Result<Saved, storage::Error> {
    let started = Instant::now();
    let mut write = Duration::ZERO;
    let mut paused = Duration::ZERO;
    let mut save = writer.begin(slot)?;
    image(&mut |piece| {
        for part in piece.chunks(SAVE_SYNC_CHUNK_BYTES) {
            let at = Instant::now();
            save.write(part)?;
            write += at.elapsed();
            if part.len() == SAVE_SYNC_CHUNK_BYTES {
                std::thread::sleep(SAVE_PAUSE);
                paused += SAVE_PAUSE;
            }
        }
        Ok(())
    })?;
    let at = Instant::now();
    let mut removing = Duration::ZERO;
    let bytes = save.finish_paced(RETIRE_STEP_BYTES, || {
        std::thread::sleep(RETIRE_PAUSE);
        removing += RETIRE_PAUSE;
    })?;
    write += at.elapsed().saturating_sub(removing);
    paused += removing;
    Ok(Saved {
        slot,
        bytes,
        encode: started.elapsed().saturating_sub(write + paused),
        write,
        paused,
    })
}

impl Disk {
    /// Keeps a zero-filled segment ready for the log's next roll.
    fn keep_spare(&mut self) {
        self.keep_spare_within(None);
    }

    /// [`Disk::keep_spare`], the zero-filling spread over `spread` if given,
    /// else by [`spare_spread`].
    fn keep_spare_within(&mut self, spread: Option<Duration>) {
        if let Ok(spare) = self.spares.try_recv() {
            self.store.offer_spare(spare);
            self.spare_asked = false;
        }
        if !self.spare_asked && self.store.needs_spare() {
            let now = Instant::now();
            let spread =
                spread.unwrap_or_else(|| spare_spread(self.spare_last_asked.map(|at| now - at)));
            self.spare_last_asked = Some(now);
            self.spare_asked = self
                .background
                .send(Background::PrepareSpare { spread })
                .is_ok();
        }
    }

    fn write(&mut self, records: &[Record], sync: bool) -> Result<Duration, String> {
        self.keep_spare();
        let started = Instant::now();
        records
            .iter()
            .try_for_each(|r| self.store.append(r))
            .and_then(|()| if sync { self.store.sync() } else { Ok(()) })
            .map_err(|e| e.to_string())?;
        let took = started.elapsed();
        if took >= SLOW_WRITE {
            info!(
                records = records.len(),
                sync,
                took_ms = took.as_millis() as u64,
                "slow log write (every reply waits for it)"
            );
        }
        Ok(took)
    }

    /// Appends and fsyncs a batch; returns the time it took, in microseconds.
    pub fn persist(&mut self, records: &[Record]) -> Result<u64, String> {
        self.write(records, true)
            .map(|took| took.as_micros() as u64)
    }

    /// Appends a batch without an fsync: in the log before any later
    /// batch, and durable with the next [`Disk::persist`] (or lost in a
    /// crash, which hints may be).
    pub fn append(&mut self, records: &[Record]) -> Result<(), String> {
        self.write(records, false).map(|_| ())
    }

    /// Encodes (with `image`) and saves a snapshot at `slot` on the
    /// background thread, which answers on `reply`. Then [`Disk::trim`] drops
    /// the log it covers.
    pub fn save_snapshot(
        &self,
        slot: u64,
        image: ImageWriter,
        reply: SavedSender,
    ) -> Result<(), String> {
        self.background
            .send(Background::Save { slot, image, reply })
            .map_err(|_| "the background thread has stopped".to_string())
    }

    /// Notes, in order with the records before it, that the state machine
    /// was frozen at `slot` for a snapshot, so that the trim after it
    /// rewrites little. Returns the in-memory copy of the log it covers,
    /// for [`Disk::discard`].
    pub fn mark(&mut self, slot: u64) -> paxos::multi::Durable {
        self.store.mark_snapshot(slot)
    }

    /// Trims the log after the snapshot at `slot` was saved. The dropped
    /// segments' files are removed by the background thread, which reports
    /// a failure on `reply`.
    pub fn trim(&mut self, slot: u64, reply: SavedSender) -> Result<(), String> {
        let started = Instant::now();
        let retired = self
            .store
            .trim_after_snapshot_retiring(slot)
            .map_err(|e| e.to_string())?;
        let took = started.elapsed();
        if took >= SLOW_WRITE {
            info!(slot, took_ms = took.as_millis() as u64, "slow log trim");
        }
        if retired.is_empty() {
            return Ok(());
        }
        self.background
            .send(Background::Remove { retired, reply })
            .map_err(|_| "the background thread has stopped".to_string())
    }

    /// Has the background thread drop `garbage`.
    pub fn discard(&self, garbage: Box<dyn Send>) {
        // If the thread has stopped, the returned error drops it here.
        let _ = self.background.send(Background::Discard(garbage));
    }

    /// Has the background thread hand freed memory back to the kernel.
    pub fn release_memory(&self) {
        let _ = self.background.send(Background::ReleaseMemory);
    }

    /// The latest saved snapshot, if it covers at least `min_slot`.
    pub fn latest_snapshot_from(&self, min_slot: u64) -> Result<Option<Snapshot>, String> {
        self.store
            .latest_snapshot_from(min_slot)
            .map_err(|e| e.to_string())
    }

    /// Takes a chunk of a peer's snapshot; the whole snapshot once installed.
    pub fn receive(
        &mut self,
        chunk: &SnapshotChunk,
        applied: u64,
    ) -> Result<Option<Snapshot>, String> {
        self.store
            .receive(chunk, applied)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_is_spread_over_a_quarter_of_a_segment_s_life_within_bounds() {
        let secs = Duration::from_secs;
        assert_eq!(spare_spread(Some(secs(4))), secs(1));
        assert_eq!(
            spare_spread(Some(Duration::from_millis(400))),
            Duration::from_millis(100)
        );
        assert_eq!(spare_spread(Some(secs(60))), SPARE_SPREAD_MAX);
        assert_eq!(spare_spread(None), SPARE_SPREAD_MAX / 2);
    }
}
