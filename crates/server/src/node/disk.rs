//! The disk, on a thread of its own: fsync never blocks the async threads.
//!
//! The driver hands it whole batches of records; it appends them and makes
//! them durable with one fsync (group commit), then answers. Any storage
//! error is returned and stops the node (DESIGN.md rule 2).

use std::path::PathBuf;
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use paxos::multi::Record;
use storage::{
    ReplicaStore, Restored, Snapshot, SnapshotChunk, SnapshotOptions, StdFs, WalOptions,
};
use tokio::sync::oneshot;

/// Work for the disk thread.
enum Job {
    Persist {
        records: Vec<Record>,
        /// Whether to fsync after appending.
        sync: bool,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    Checkpoint {
        slot: u64,
        image: Vec<u8>,
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

/// A handle to the disk thread. Dropping it stops the thread.
#[derive(Debug, Clone)]
pub struct Disk {
    jobs: std_mpsc::Sender<Job>,
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
    std::thread::Builder::new()
        .name("synod-disk".into())
        .spawn(move || run(store, rx))
        .map_err(|source| storage::Error::Io {
            op: "spawn disk thread",
            file: dir,
            source,
        })?;
    Ok((Disk { jobs }, restored))
}

fn run(mut store: ReplicaStore<StdFs>, jobs: std_mpsc::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Persist {
                records,
                sync,
                reply,
            } => {
                let started = Instant::now();
                let result = records
                    .iter()
                    .try_for_each(|r| store.append(r))
                    .and_then(|()| if sync { store.sync() } else { Ok(()) })
                    .map(|()| started.elapsed().as_micros() as u64)
                    .map_err(|e| e.to_string());
                let _ = reply.send(result);
            }
            Job::Checkpoint { slot, image, reply } => {
                let _ = reply.send(store.checkpoint(slot, &image).map_err(|e| e.to_string()));
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
            reply,
        })
        .await
    }

    /// Appends a batch without an fsync: it becomes durable with the next
    /// [`Disk::persist`] (or is lost in a crash, which hints may be).
    pub async fn append(&self, records: Vec<Record>) -> Result<(), String> {
        self.ask(|reply| Job::Persist {
            records,
            sync: false,
            reply,
        })
        .await
        .map(drop)
    }

    /// Saves a snapshot of the state machine at `slot` and trims the log.
    pub async fn checkpoint(&self, slot: u64, image: Vec<u8>) -> Result<(), String> {
        self.ask(|reply| Job::Checkpoint { slot, image, reply })
            .await
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
