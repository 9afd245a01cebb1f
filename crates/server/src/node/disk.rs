//! The disk, on a thread of its own: fsync never blocks the async threads.
//!
//! The driver hands it whole batches of records; it appends them and makes
//! them durable with one fsync (group commit), then answers. Any storage
//! error is returned and stops the node (DESIGN.md rule 2).

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use paxos::multi::Record;
use storage::{
    ReplicaStore, Restored, SegmentPreparer, Snapshot, SnapshotChunk, SnapshotOptions,
    SnapshotStore, SpareSegment, StdFile, StdFs, WalOptions,
};
use tokio::sync::oneshot;
use tracing::{info, warn};

/// How often the background thread, when idle, hands freed memory back.
const RELEASE_MEMORY_EVERY: Duration = Duration::from_secs(2);

/// A log write or trim taking this long is logged: replies wait for it.
const SLOW_WRITE: Duration = Duration::from_millis(50);

/// Work for the disk thread.
enum Job {
    Persist {
        records: Vec<Record>,
        /// Whether to fsync after appending.
        sync: bool,
        /// Where the outcome goes; none for an append nobody waits on,
        /// whose failure is reported to the next job instead.
        reply: Option<oneshot::Sender<Result<u64, String>>>,
    },
    /// The state machine was frozen at `slot` for a snapshot: note where
    /// the log stands, so the trim after it rewrites little.
    Mark { slot: u64 },
    /// The snapshot at `slot` is saved (by the background thread): trim.
    Trim {
        slot: u64,
        reply: oneshot::Sender<Result<(), String>>,
    },
    LatestSnapshot {
        reply: oneshot::Sender<Result<Option<Snapshot>, String>>,
    },
    Receive {
        chunk: SnapshotChunk,
        applied: u64,
        reply: oneshot::Sender<Result<Option<Snapshot>, String>>,
    },
}

/// Work for the background thread.
enum Background {
    /// Encode and save a snapshot.
    Save {
        slot: u64,
        image: ImageWriter,
        reply: SavedSender,
    },
    /// Zero-fill a spare log segment and hand it to the disk thread.
    PrepareSpare,
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
}

/// A handle to the disk thread and the background thread. Dropping it
/// stops them.
#[derive(Debug, Clone)]
pub struct Disk {
    jobs: std_mpsc::Sender<Job>,
    background: std_mpsc::Sender<Background>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// Opens the store under `dir` (recovering it) and starts the disk thread.
pub fn open(dir: PathBuf) -> Result<(Disk, Restored), storage::Error> {
    let (store, restored) = ReplicaStore::open(
        StdFs,
        &dir,
        WalOptions::default(),
        SnapshotOptions::default(),
    )?;
    let (jobs, rx) = std_mpsc::channel::<Job>();
    let (background, background_rx) = std_mpsc::channel::<Background>();
    let (spares, spares_rx) = std_mpsc::channel::<SpareSegment<StdFile>>();
    let writer = store.snapshot_writer();
    let preparer = store.segment_preparer();
    let spawn_error = |source| storage::Error::Io {
        op: "spawn disk thread",
        file: dir.clone(),
        source,
    };
    let to_background = background.clone();
    std::thread::Builder::new()
        .name("synod-disk".into())
        .spawn(move || run(store, rx, to_background, spares_rx))
        .map_err(spawn_error)?;
    std::thread::Builder::new()
        .name("synod-background".into())
        .spawn(move || run_background(writer, preparer, background_rx, spares))
        .map_err(spawn_error)?;
    Ok((Disk { jobs, background }, restored))
}

/// The background thread: encodes and saves snapshots, and zero-fills the
/// log's next segment, beside the log, so that neither the driver nor the
/// log waits for them.
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
            Background::PrepareSpare => match preparer.prepare() {
                Ok(spare) => {
                    let _ = spares.send(spare);
                }
                // The roll then fills its own segment, and reports a
                // disk that is really failing.
                Err(e) => warn!(%e, "could not prepare a spare log segment"),
            },
        }
    }
}

/// Streams the image into a new snapshot file, timing the writes apart
/// from the encoding between them.
fn save(
    writer: &mut SnapshotStore<StdFs>,
    slot: u64,
    image: ImageWriter,
) -> Result<Saved, storage::Error> {
    let started = Instant::now();
    let mut write = Duration::ZERO;
    let mut save = writer.begin(slot)?;
    image(&mut |piece| {
        let at = Instant::now();
        let written = save.write(piece);
        write += at.elapsed();
        written
    })?;
    let at = Instant::now();
    let bytes = save.finish()?;
    write += at.elapsed();
    Ok(Saved {
        slot,
        bytes,
        encode: started.elapsed().saturating_sub(write),
        write,
    })
}

fn run(
    mut store: ReplicaStore<StdFs>,
    jobs: std_mpsc::Receiver<Job>,
    background: std_mpsc::Sender<Background>,
    spares: std_mpsc::Receiver<SpareSegment<StdFile>>,
) {
    // A failed append nobody waited on: every later job fails with it, so
    // the node stops on its next persist (DESIGN.md rule 2).
    let mut failed: Option<String> = None;
    let mut spare_asked = false;
    while let Ok(job) = jobs.recv() {
        // Keep a zero-filled segment ready for the next roll.
        if let Ok(spare) = spares.try_recv() {
            store.offer_spare(spare);
            spare_asked = false;
        }
        if !spare_asked && store.needs_spare() {
            spare_asked = background.send(Background::PrepareSpare).is_ok();
        }
        if let Some(error) = &failed {
            job.fail(error);
            continue;
        }
        match job {
            Job::Persist {
                records,
                sync,
                reply,
            } => {
                let started = Instant::now();
                let written = records
                    .iter()
                    .try_for_each(|r| store.append(r))
                    .and_then(|()| if sync { store.sync() } else { Ok(()) });
                let took = started.elapsed();
                if took >= SLOW_WRITE {
                    info!(
                        records = records.len(),
                        sync,
                        took_ms = took.as_millis() as u64,
                        "slow log write (every reply waits for it)"
                    );
                }
                let result = written
                    .map(|()| took.as_micros() as u64)
                    .map_err(|e| e.to_string());
                match (reply, result) {
                    (Some(reply), result) => {
                        let _ = reply.send(result);
                    }
                    (None, Err(e)) => failed = Some(e),
                    (None, Ok(_)) => {}
                }
            }
            Job::Mark { slot } => store.mark_snapshot(slot),
            Job::Trim { slot, reply } => {
                let started = Instant::now();
                let _ = reply.send(store.trim_after_snapshot(slot).map_err(|e| e.to_string()));
                let took = started.elapsed();
                if took >= SLOW_WRITE {
                    info!(slot, took_ms = took.as_millis() as u64, "slow log trim");
                }
            }
            Job::LatestSnapshot { reply } => {
                let _ = reply.send(store.latest_snapshot().map_err(|e| e.to_string()));
            }
            Job::Receive {
                chunk,
                applied,
                reply,
            } => {
                let _ = reply.send(store.receive(&chunk, applied).map_err(|e| e.to_string()));
            }
        }
    }
}

impl Job {
    /// Answers the job with `error` without doing it.
    fn fail(self, error: &str) {
        let error = format!("an earlier write failed: {error}");
        match self {
            Job::Persist { reply, .. } => {
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
            }
            Job::Trim { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Job::Mark { .. } => {}
            Job::LatestSnapshot { reply } => {
                let _ = reply.send(Err(error));
            }
            Job::Receive { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

impl Disk {
    async fn ask<T>(
        &self,
        job: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Job,
    ) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(job(tx))
            .map_err(|_| "the disk thread has stopped".to_string())?;
        rx.await
            .map_err(|_| "the disk thread has stopped".to_string())?
    }

    /// Appends and fsyncs a batch; returns the time it took, in microseconds.
    pub async fn persist(&self, records: Vec<Record>) -> Result<u64, String> {
        self.ask(|reply| Job::Persist {
            records,
            sync: true,
            reply: Some(reply),
        })
        .await
    }

    /// Queues a batch to append without an fsync, and does not wait: the
    /// disk thread takes jobs in order, so it is in the log before any
    /// later batch, and durable with the next [`Disk::persist`] (or lost
    /// in a crash, which hints may be). A failure surfaces at the next job.
    pub fn append(&self, records: Vec<Record>) -> Result<(), String> {
        self.jobs
            .send(Job::Persist {
                records,
                sync: false,
                reply: None,
            })
            .map_err(|_| "the disk thread has stopped".to_string())
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
    /// was frozen at `slot` for a snapshot. Does not wait.
    pub fn mark(&self, slot: u64) -> Result<(), String> {
        self.jobs
            .send(Job::Mark { slot })
            .map_err(|_| "the disk thread has stopped".to_string())
    }

    /// Trims the log after the snapshot at `slot` was saved.
    pub async fn trim(&self, slot: u64) -> Result<(), String> {
        self.ask(|reply| Job::Trim { slot, reply }).await
    }

    /// The latest saved snapshot.
    pub async fn latest_snapshot(&self) -> Result<Option<Snapshot>, String> {
        self.ask(|reply| Job::LatestSnapshot { reply }).await
    }

    /// Takes a chunk of a peer's snapshot; the whole snapshot once installed.
    pub async fn receive(
        &self,
        chunk: SnapshotChunk,
        applied: u64,
    ) -> Result<Option<Snapshot>, String> {
        self.ask(|reply| Job::Receive {
            chunk,
            applied,
            reply,
        })
        .await
    }
}
