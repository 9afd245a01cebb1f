//! A Multi-Paxos replica's stable state: its promise, its acceptances and
//! the decisions it learned, in the write-ahead log, beside the state
//! machine's latest snapshot.
//!
//! This is the one place where Paxos meets the disk. The core emits
//! [`paxos::multi::Record`]s; [`ReplicaStore::append`] buffers them and
//! [`ReplicaStore::sync`] makes them durable with one fsync before the
//! runtime lets anything that depends on them leave the node. After the
//! runtime saves a snapshot, [`ReplicaStore::checkpoint`] rewrites what the
//! log must still hold (the promise and everything after the snapshot) and
//! drops the segments before it: trimming follows the applied point of a
//! snapshot, never the chosen point alone.

use std::path::{Path, PathBuf};

use paxos::multi::{Durable, Record as PaxosRecord, codec};

use crate::error::{Error, Result};
use crate::fs::Fs;
use crate::snapshot::{Snapshot, SnapshotOptions, SnapshotStore};
use crate::transfer::{ChunkOutcome, SnapshotChunk, SnapshotReceiver};
use crate::wal::{RetiredSegments, SegmentPreparer, SpareSegment, TornTail, Wal, WalOptions};

/// The WAL record type of an encoded [`paxos::multi::Record`].
pub const RECORD_TYPE_PAXOS: u8 = 1;

/// What a replica finds on disk when it starts.
#[derive(Debug, Default)]
pub struct Restored {
    /// The acceptor's and learner's state, to hand to `Replica::restart`.
    pub durable: Durable,
    /// The state machine's latest snapshot, if one was saved; its index is
    /// `durable.snapshot_slot`.
    pub snapshot: Option<Snapshot>,
    /// A torn tail the log wiped during recovery (a crash mid-write).
    pub torn_tail: Option<TornTail>,
}

/// The log and snapshots of one replica.
#[derive(Debug)]
pub struct ReplicaStore<F: Fs + Clone> {
    wal: Wal<F>,
    snapshots: SnapshotStore<F>,
    /// Snapshots arriving in chunks from a peer land beside our own.
    receiver: SnapshotReceiver<F>,
    /// What the log holds, so that a checkpoint can rewrite it.
    mirror: Durable,
    dirty: bool,
    /// Where the log stood when the state machine was frozen for a
    /// snapshot ([`Self::mark_snapshot`]).
    mark: Option<SnapshotMark>,
}

/// The log's position when a snapshot's state was frozen, and the slots
/// after the snapshot that had records before that position.
#[derive(Debug)]
struct SnapshotMark {
    slot: u64,
    lsn: crate::wal::Lsn,
    slots: Vec<u64>,
}

impl<F: Fs + Clone> ReplicaStore<F> {
    /// Opens (or creates) the store under `dir` and recovers it. Refuses,
    /// with the file and offset, data it cannot trust.
    pub fn open(
        fs: F,
        dir: &Path,
        options: WalOptions,
        snapshot_options: SnapshotOptions,
    ) -> Result<(Self, Restored)> {
        // A transfer that completed before a crash is installed first, so
        // that the snapshot loaded below is the newest.
        let receiver = SnapshotReceiver::open(fs.clone(), dir.join("snap"), snapshot_options)?;
        let snapshots = SnapshotStore::open(fs.clone(), dir.join("snap"), snapshot_options)?;
        let snapshot = snapshots.load_latest()?;
        let (wal, recovered) = Wal::open(fs, dir.join("wal"), options)?;
        let mut durable = Durable {
            snapshot_slot: snapshot.as_ref().map_or(0, |s| s.index),
            ..Durable::default()
        };
        for record in &recovered.records {
            if record.record_type != RECORD_TYPE_PAXOS {
                return Err(undecodable(
                    dir,
                    record.lsn.0,
                    format!("unknown record type {}", record.record_type),
                ));
            }
            let decoded = codec::decode_record(&record.payload)
                .map_err(|e| undecodable(dir, record.lsn.0, e.to_string()))?;
            durable.apply(&decoded);
        }
        let store = ReplicaStore {
            wal,
            snapshots,
            receiver,
            mirror: durable.clone(),
            dirty: false,
            mark: None,
        };
        Ok((
            store,
            Restored {
                durable,
                snapshot,
                torn_tail: recovered.torn_tail,
            },
        ))
    }

    /// Buffers a record; it is durable only after the next [`Self::sync`].
    pub fn append(&mut self, record: &PaxosRecord) -> Result<()> {
        let mut payload = Vec::with_capacity(64);
        codec::encode_record(record, &mut payload);
        self.wal.append(RECORD_TYPE_PAXOS, &payload)?;
        self.mirror.apply(record);
        self.dirty = true;
        Ok(())
    }

    /// Makes everything appended durable with one fsync (none if nothing
    /// was appended). An error means durability is unknown: stop the node.
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.wal.sync()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Whether records were appended since the last sync.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Saves the state machine's image at `slot` (everything up to `slot`
    /// applied), rewrites what the log must keep, and drops the rest.
    pub fn checkpoint(&mut self, slot: u64, image: &[u8]) -> Result<()> {
        self.sync()?;
        self.snapshots.save(slot, image)?;
        self.trim_log(slot)?.remove().map(drop)
    }

    /// A preparer of spare log segments, to run on another thread; hand
    /// what it makes to [`Self::offer_spare`].
    pub fn segment_preparer(&self) -> SegmentPreparer<F> {
        self.wal.segment_preparer()
    }

    /// Whether the log would like a spare segment for its next roll.
    pub fn needs_spare(&self) -> bool {
        self.wal.needs_spare()
    }

    /// Gives the log a spare segment, so its next roll does not stall.
    pub fn offer_spare(&mut self, spare: SpareSegment<F::File>) {
        self.wal.offer_spare(spare);
    }

    /// A second handle on this store's snapshot directory, to save a
    /// snapshot on another thread while the log goes on taking records.
    /// Once its `save` returns, call [`Self::trim_after_snapshot`] here.
    pub fn snapshot_writer(&self) -> SnapshotStore<F> {
        self.snapshots.another_handle()
    }

    /// Notes that the state machine was frozen at `slot` for a snapshot:
    /// every record appended so far is covered by the snapshot or listed
    /// here, so [`Self::trim_after_snapshot`] need not rewrite the records
    /// appended after this point, only the few slots after `slot` that
    /// were already in the log (decisions in flight).
    ///
    /// The in-memory copy of the log up to `slot` is dropped now (the
    /// records stay on disk): no trim may go below it, so nothing will
    /// rewrite them. Until a snapshot at `slot` or later is saved, a trim
    /// is refused. Returns what was dropped, for the caller to free where
    /// it costs least.
    pub fn mark_snapshot(&mut self, slot: u64) -> Durable {
        let dropped = self.mirror.compact(slot);
        let after = slot + 1;
        let mut slots: Vec<u64> = self
            .mirror
            .accepted
            .range(after..)
            .map(|(s, _)| *s)
            .chain(self.mirror.committed.range(after..).map(|(s, _)| *s))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        self.mark = Some(SnapshotMark {
            slot,
            lsn: self.wal.next_lsn(),
            slots,
        });
        dropped
    }

    /// The second half of [`Self::checkpoint`] for a snapshot at `slot`
    /// saved through [`Self::snapshot_writer`]: drops the log the snapshot
    /// covers. Refuses if no snapshot that new is on disk, as trimming
    /// before one would lose decisions. After [`Self::mark_snapshot`] at
    /// the same slot, only the promise and the marked slots are written
    /// again (with their latest records, so nothing newer is undone);
    /// without it, everything the log must keep is.
    pub fn trim_after_snapshot(&mut self, slot: u64) -> Result<()> {
        self.trim_after_snapshot_retiring(slot)?.remove().map(drop)
    }

    /// [`Self::trim_after_snapshot`], leaving the removal of the dropped
    /// segments' files to the caller, so that a server can do it off the
    /// thread that serves.
    pub fn trim_after_snapshot_retiring(&mut self, slot: u64) -> Result<RetiredSegments<F>> {
        // A mark dropped the copy of the log up to its slot: a trim that
        // rewrites from the copy needs a snapshot at least that new.
        let needed = slot.max(self.mirror.snapshot_slot);
        let latest = self.snapshots.latest_index()?;
        if latest.is_none_or(|index| index < needed) {
            return Err(Error::SnapshotMissing {
                dir: self.snapshots.dir().to_path_buf(),
                slot: needed,
            });
        }
        self.sync()?;
        match self.mark.take() {
            Some(mark) if mark.slot == slot => self.trim_from_mark(mark),
            _ => self.trim_log(slot),
        }
    }

    /// Trims after a snapshot at `mark.slot`: records from `mark.lsn` on
    /// stay where they are; the promise and the marked slots' latest
    /// records are appended again; segments wholly before `mark.lsn` go.
    fn trim_from_mark(&mut self, mark: SnapshotMark) -> Result<RetiredSegments<F>> {
        // The mark already dropped the mirror up to its slot.
        debug_assert!(self.mirror.snapshot_slot >= mark.slot);
        self.append(&PaxosRecord::Promise(self.mirror.promised))?;
        for slot in &mark.slots {
            if let Some((ballot, value)) = self.mirror.accepted.get(slot).cloned() {
                self.append(&PaxosRecord::Accept {
                    slot: *slot,
                    ballot,
                    value,
                })?;
            }
            if let Some(value) = self.mirror.committed.get(slot).cloned() {
                self.append(&PaxosRecord::Commit { slot: *slot, value })?;
            }
        }
        self.sync()?;
        self.wal.retire_before(mark.lsn)
    }

    /// Takes one chunk of a peer's snapshot. When the last one arrives the
    /// snapshot is verified, installed durably, and returned; the log
    /// before it is trimmed as after a checkpoint. Chunks of a snapshot no
    /// newer than `applied` are ignored.
    pub fn receive(&mut self, chunk: &SnapshotChunk, applied: u64) -> Result<Option<Snapshot>> {
        if chunk.index <= applied {
            return Ok(None);
        }
        match self.receiver.accept(chunk)? {
            ChunkOutcome::Continue { .. } => Ok(None),
            ChunkOutcome::Installed { index } => {
                let Some(snapshot) = self.snapshots.load_latest()? else {
                    return Ok(None);
                };
                debug_assert!(snapshot.index >= index);
                self.sync()?;
                self.trim_log(snapshot.index)?.remove()?;
                Ok(Some(snapshot))
            }
        }
    }

    /// Rewrites what the log must keep after a snapshot at `slot` (the
    /// promise, and every acceptance and decision after it), then drops the
    /// segments before the rewrite.
    fn trim_log(&mut self, slot: u64) -> Result<RetiredSegments<F>> {
        // A full rewrite supersedes any mark.
        self.mark = None;
        self.mirror.compact(slot);
        let first = self.wal.next_lsn();
        let keep = self.mirror.clone();
        self.append(&PaxosRecord::Promise(keep.promised))?;
        for (slot, (ballot, value)) in &keep.accepted {
            self.append(&PaxosRecord::Accept {
                slot: *slot,
                ballot: *ballot,
                value: value.clone(),
            })?;
        }
        for (slot, value) in &keep.committed {
            self.append(&PaxosRecord::Commit {
                slot: *slot,
                value: value.clone(),
            })?;
        }
        self.sync()?;
        debug_assert_eq!(self.mirror, keep);
        self.wal.retire_before(first)
    }

    /// The latest saved snapshot, to send a lagging peer, if it covers at
    /// least `min_slot`: while a newer one is being saved, the older image
    /// would only bring the peer back, so it is not read.
    pub fn latest_snapshot_from(&self, min_slot: u64) -> Result<Option<Snapshot>> {
        self.snapshots.load_latest_from(min_slot)
    }

    /// Write-ahead log segments on disk now.
    pub fn segment_count(&self) -> usize {
        self.wal.segment_count()
    }
}

fn undecodable(dir: &Path, lsn: u64, reason: String) -> Error {
    Error::Undecodable {
        dir: PathBuf::from(dir),
        lsn,
        reason,
    }
}
