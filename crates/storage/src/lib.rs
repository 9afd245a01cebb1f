//! Durable storage for synod: a segmented write-ahead log, snapshots, and crash recovery, over
//! a file layer that the deterministic simulator can fault.
//!
//! Paxos is only safe if an acceptor never forgets what it promised or accepted. This crate
//! keeps that promise through crashes, torn writes, bit flips, failed fsyncs and full disks,
//! and it knows nothing of Paxos: a record is a type byte and a payload.
//!
//! # A guided tour
//!
//! - [`Fs`] / [`FsFile`]: the only way the crate touches a disk. [`StdFs`] is the real disk;
//!   [`SimFs`] is an in-memory disk that loses unsynced writes and directory entries on
//!   [`SimFs::crash`], tears the last write, flips bits, fails fsyncs and fills up, all driven
//!   by explicit calls and a caller-provided random word.
//! - [`Wal`]: append records ([`Wal::append`]), make a whole batch durable with one fdatasync
//!   ([`Wal::sync`], group commit), release the batch's waiters up to the LSN it returns. On
//!   [`Wal::open`] every intact record comes back; a torn tail is wiped; corruption anywhere
//!   else is refused with [`Error::Corrupt`] naming the file and byte offset.
//! - [`SnapshotStore`]: save and load a state machine image at an index, atomically
//!   (temp file, fsync, rename, fsync directory); then [`Wal::truncate_before`] drops the log
//!   it covers.
//! - [`SnapshotSender`] / [`SnapshotReceiver`]: ship a snapshot to a lagging replica in
//!   checksummed chunks, resuming a broken transfer from the last intact block.
//!
//! - [`ReplicaStore`]: the Multi-Paxos replica's promise, acceptances and decisions in the
//!   log, beside the state machine's snapshot; the one place where Paxos meets the disk.
//!
//! Rule 2 of DESIGN.md holds throughout: after a failed fsync the owner is poisoned, every
//! later call returns [`Error::Poisoned`], and the node must stop.
//!
//! ```
//! use storage::{Lsn, SimFs, Wal, WalOptions};
//!
//! let disk = SimFs::new();
//! let (mut wal, recovered) = Wal::open(disk.clone(), "/node/wal", WalOptions::default())?;
//! assert!(recovered.records.is_empty());
//! wal.append(1, b"promise ballot 7")?;
//! wal.append(2, b"accept slot 1")?;
//! assert_eq!(wal.sync()?, Lsn(2)); // one fdatasync for both: release both waiters
//! wal.append(2, b"accept slot 2")?; // appended, never synced
//!
//! disk.crash(0xdead_beef); // power loss: the unsynced record may be lost or torn
//! let (_wal, recovered) = Wal::open(disk.clone(), "/node/wal", WalOptions::default())?;
//! assert!(recovered.records.len() >= 2);
//! assert_eq!(recovered.records[0].payload, b"promise ballot 7");
//! # Ok::<(), storage::Error>(())
//! ```

#![deny(missing_docs)]

mod error;
mod frame;
mod fs;
pub mod replica;
mod sim_fs;
mod snapshot;
mod std_fs;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transfer;
mod wal;

pub use error::{Error, Result};
pub use frame::{RECORD_OVERHEAD_BYTES, SEGMENT_HEADER_BYTES};
pub use fs::{Fs, FsFile};
pub use replica::{RECORD_TYPE_PAXOS, ReplicaStore, Restored};
pub use sim_fs::{SimFile, SimFs};
pub use snapshot::{
    SAVE_SYNC_CHUNK_BYTES, SNAPSHOT_BLOCK_BYTES_LIMIT, SNAPSHOT_HEADER_BYTES, Snapshot,
    SnapshotOptions, SnapshotSave, SnapshotStore,
};
pub use std_fs::{StdFile, StdFs};
pub use transfer::{
    ChunkOutcome, ResumePoint, SnapshotChunk, SnapshotChunks, SnapshotReceiver, SnapshotSender,
};
pub use wal::{
    Lsn, Record, Recovered, RetiredSegments, SEGMENT_BYTES_LIMIT, SPARE_SYNC_CHUNK_BYTES,
    SegmentPreparer, SpareSegment, TornTail, Wal, WalOptions,
};
