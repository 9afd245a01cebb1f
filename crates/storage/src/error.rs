//! The one error type of the crate.
//!
//! Expected failures (a full disk, a corrupted file, a bad chunk from a peer) are variants the
//! caller can match on; each names the file, and the byte offset where one is known, so an
//! operator can find the damage. Failures after which durability is unknown poison the owner:
//! every later call returns [`Error::Poisoned`] and the node must stop (DESIGN.md, rule 2).

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Data on disk failed validation somewhere it cannot be explained by a crash (mid-log, a
    /// sealed segment, a snapshot). The node refuses to start on data it cannot trust.
    #[error(
        "corrupt {what} {} at byte offset {offset}: {reason}; refusing to use data that cannot be trusted",
        file.display()
    )]
    Corrupt {
        /// What kind of file: "WAL segment" or "snapshot".
        what: &'static str,
        /// The damaged file.
        file: PathBuf,
        /// Byte offset in `file` of the first byte that failed validation.
        offset: u64,
        /// What failed, in words.
        reason: String,
    },

    /// An fsync (file or directory) failed. Durability of everything written since the last
    /// successful sync is unknown, so the owner is poisoned and the node must stop.
    #[error("fsync of {} failed, durability is unknown and the node must stop: {source}", file.display())]
    SyncFailed {
        /// The file or directory whose sync failed.
        file: PathBuf,
        /// The error the file layer reported.
        #[source]
        source: io::Error,
    },

    /// The disk is full. The write that did not fit was trimmed away; everything acknowledged
    /// before is intact and later writes succeed once space is freed. For the WAL, records
    /// after [`crate::Wal::durable_lsn`] were discarded.
    #[error("no space left on device writing {}: {source}", file.display())]
    NoSpace {
        /// The file that could not be written.
        file: PathBuf,
        /// The error the file layer reported.
        #[source]
        source: io::Error,
    },

    /// A record passed its checksum but its contents are not a record this
    /// build understands: written by something else, or a newer version.
    #[error(
        "record {lsn} in the log under {} cannot be decoded: {reason}; refusing to use data that cannot be trusted",
        dir.display()
    )]
    Undecodable {
        /// The replica's data directory.
        dir: PathBuf,
        /// The record's log sequence number.
        lsn: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// An earlier failure left durability unknown; nothing more is done. Stop the node.
    #[error("storage is poisoned by an earlier failure; the node must stop")]
    Poisoned,

    /// A snapshot save failed part-way (its error was returned then) and was abandoned;
    /// the previous snapshot is in place.
    #[error("the snapshot save into {file} was abandoned after an earlier error")]
    SaveAbandoned {
        /// The temporary file that was removed.
        file: PathBuf,
    },

    /// The log was to be trimmed up to `slot`, but no snapshot that new is
    /// in `dir`: trimming would lose decisions, so nothing was changed.
    #[error("refusing to trim the log to slot {slot}: no snapshot that new in {}", dir.display())]
    SnapshotMissing {
        /// The snapshot directory.
        dir: PathBuf,
        /// The slot a snapshot must cover: the trim's, or a mark's above it.
        slot: u64,
    },

    /// Any other I/O failure, with the operation and file it happened on.
    #[error("failed to {op} {}: {source}", file.display())]
    Io {
        /// The operation, e.g. "read", "write", "rename".
        op: &'static str,
        /// The file or directory concerned.
        file: PathBuf,
        /// The error the file layer reported.
        #[source]
        source: io::Error,
    },

    /// A record payload larger than the configured maximum; nothing was written.
    #[error("record payload of {payload_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    RecordTooLarge {
        /// Size of the rejected payload.
        payload_bytes: usize,
        /// The configured `record_payload_bytes_max`.
        limit_bytes: u32,
    },

    /// A snapshot larger than the configured `snapshot_bytes_max` (it would be held in memory
    /// whole); raise the limit to load or save it.
    #[error(
        "snapshot {} holds {data_bytes} bytes, above the snapshot_bytes_max of {limit_bytes}",
        file.display()
    )]
    SnapshotTooLarge {
        /// The snapshot file.
        file: PathBuf,
        /// Its data size.
        data_bytes: u64,
        /// The configured limit.
        limit_bytes: u64,
    },

    /// Options that cannot work together, detected before touching the disk.
    #[error("invalid storage options: {reason}")]
    InvalidOptions {
        /// Which constraint was violated.
        reason: &'static str,
    },

    /// A snapshot chunk that cannot belong to any well-formed transfer (a peer bug, not a
    /// disk fault); nothing was written.
    #[error("invalid snapshot chunk (index {index}, offset {offset}): {reason}")]
    InvalidChunk {
        /// Snapshot index the chunk claims.
        index: u64,
        /// Byte offset the chunk claims.
        offset: u64,
        /// Which check failed.
        reason: &'static str,
    },

    /// A fully received snapshot did not match the checksum the sender announced; the partial
    /// file was discarded and the transfer must restart from offset 0.
    #[error(
        "received snapshot {index} has checksum {actual_crc:#010x}, sender announced {expected_crc:#010x}; transfer discarded"
    )]
    TransferChecksum {
        /// Snapshot index of the transfer.
        index: u64,
        /// Checksum announced in the chunks.
        expected_crc: u32,
        /// Checksum of the bytes received.
        actual_crc: u32,
    },
}

/// Whether `e` means "the device (or quota) is full", the one write failure we recover from.
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
