//! The segmented write-ahead log.
//!
//! Records are appended into an in-memory batch; [`Wal::sync`] writes the batch and makes it
//! durable with one fdatasync (group commit) and returns the LSN up to which the caller may now
//! release its waiters. Segments are preallocated with written zeros when they are created, so
//! a sync is a pure data overwrite and costs what a raw fdatasync costs.
//!
//! Recovery ([`Wal::open`]) trusts only what it can prove: records must be contiguous,
//! checksummed, and in segments whose LSNs join up. Damage at the very tail of the last
//! segment is what a crash during an unsynced write leaves, so it is zeroed and reported as a
//! [`TornTail`]; damage anywhere else, or damage followed by an intact record, is reported as
//! [`Error::Corrupt`] naming the file and byte offset, and the log refuses to open.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, is_no_space};
use crate::frame::{
    self, Frame, RECORD_OVERHEAD_BYTES, SEGMENT_HEADER_BYTES, check_segment_header, decode_record,
    encode_record, find_record,
};
use crate::fs::{Fs, FsFile};

/// Largest segment this crate creates or reads into memory during recovery.
pub const SEGMENT_BYTES_LIMIT: u64 = 1 << 30;

/// Zeros written per call when a torn tail is wiped.
const WIPE_CHUNK_BYTES: usize = 64 << 10;

const SEGMENT_SUFFIX: &str = ".wal";
const TEMP_SUFFIX: &str = ".wal.tmp";
const SEGMENT_NAME_DIGITS: usize = 20;

/// Log sequence number: the position of a record in the log, starting at 1. `Lsn(0)` means
/// "no record", e.g. the durable LSN of an empty log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One record as recovered from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its position in the log.
    pub lsn: Lsn,
    /// The caller's record type; this crate gives it no meaning.
    pub record_type: u8,
    /// The caller's bytes.
    pub payload: Vec<u8>,
}

/// Damage at the end of the log that a crash explains, wiped during recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The last segment, where the damage was.
    pub file: PathBuf,
    /// Byte offset of the first damaged byte (the end of the last intact record).
    pub offset: u64,
    /// How many bytes, from `offset` to the last non-zero byte, were wiped.
    pub bytes_dropped: u64,
}

/// What [`Wal::open`] found.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Every intact record, oldest first, with contiguous LSNs.
    pub records: Vec<Record>,
    /// The torn tail that was wiped, if there was one.
    pub torn_tail: Option<TornTail>,
}

/// Sizes of the log. Every buffer the log keeps is bounded by one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// Size of each segment file, preallocated when it is created. A record that does not fit
    /// in the current segment goes into a new one.
    pub segment_bytes_max: u64,
    /// Encoded records buffered in memory before they are written to the file (without a
    /// sync). Must hold at least one record of `record_payload_bytes_max`.
    pub write_buffer_bytes_max: usize,
    /// Largest payload one record may carry.
    pub record_payload_bytes_max: u32,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes_max: 64 << 20,
            write_buffer_bytes_max: 4 << 20,
            record_payload_bytes_max: 1 << 20,
        }
    }
}

impl WalOptions {
    fn record_bytes_max(&self) -> u64 {
        RECORD_OVERHEAD_BYTES as u64 + u64::from(self.record_payload_bytes_max)
    }

    fn validate(&self) -> Result<()> {
        if self.segment_bytes_max > SEGMENT_BYTES_LIMIT {
            return Err(Error::InvalidOptions {
                reason: "segment_bytes_max is above SEGMENT_BYTES_LIMIT",
            });
        }
        if self.segment_bytes_max < SEGMENT_HEADER_BYTES + self.record_bytes_max() {
            return Err(Error::InvalidOptions {
                reason: "segment_bytes_max cannot hold the header and one largest record",
            });
        }
        if (self.write_buffer_bytes_max as u64) < self.record_bytes_max() {
            return Err(Error::InvalidOptions {
                reason: "write_buffer_bytes_max cannot hold one largest record",
            });
        }
        Ok(())
    }
}

/// A segment on disk, known by its first LSN.
#[derive(Debug, Clone)]
struct Segment {
    first_lsn: Lsn,
    path: PathBuf,
}

/// The segment being appended to.
#[derive(Debug)]
struct Active<File> {
    file: File,
    path: PathBuf,
    first_lsn: Lsn,
    /// Preallocated size; records never go past it.
    capacity_bytes: u64,
    /// Offset where the next write goes; everything before it was written.
    written_bytes: u64,
    /// Everything before this offset is durable.
    durable_bytes: u64,
    /// Encoded records not yet written; at most `write_buffer_bytes_max`.
    pending: Vec<u8>,
}

/// What the scan of one segment found.
struct SegmentScan {
    /// Offset just past the last intact record.
    end_bytes: u64,
    file_bytes: u64,
    /// Garbage after `end_bytes` in the last segment, up to this offset, to be wiped.
    torn_end_bytes: Option<u64>,
}

/// A segmented write-ahead log over a file layer `F`.
#[derive(Debug)]
pub struct Wal<F: Fs> {
    fs: F,
    dir: PathBuf,
    options: WalOptions,
    /// Every segment on disk, oldest first; the active one, if any, is last.
    segments: VecDeque<Segment>,
    /// `None` only after a roll failed for lack of space; the next append retries.
    active: Option<Active<F::File>>,
    next_lsn: Lsn,
    durable_lsn: Lsn,
    poisoned: bool,
    /// A segment zero-filled ahead of need by a [`SegmentPreparer`]: the
    /// next roll renames it into place instead of filling one then.
    spare: Option<SpareSegment<F::File>>,
}

/// A segment file zero-filled and synced ahead of need, under a temporary
/// name (so a crash leaves nothing the log would read).
#[derive(Debug)]
pub struct SpareSegment<File> {
    file: File,
    temp: PathBuf,
    len_bytes: u64,
}

/// Segment files a [`Wal`] no longer reads ([`Wal::retire_before`]), to remove off the
/// thread that serves: unlinking a 64 MiB segment and syncing the directory took 14-63 ms
/// on a loaded member here.
#[derive(Debug)]
#[must_use = "the files stay on disk until removed"]
pub struct RetiredSegments<F: Fs> {
    fs: F,
    dir: PathBuf,
    /// Oldest first.
    paths: Vec<PathBuf>,
}

impl<F: Fs> RetiredSegments<F> {
    /// How many segment files wait for removal.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Removes the files, oldest first so that a crash part-way leaves a contiguous log,
    /// and syncs the directory. Returns how many were removed.
    pub fn remove(self) -> Result<usize> {
        let mut removed = 0;
        for path in &self.paths {
            self.fs.remove(path).map_err(io_error("remove", path))?;
            removed += 1;
        }
        if removed > 0 {
            crate::fs::sync_dir_or_fail(&self.fs, &self.dir)?;
        }
        Ok(removed)
    }

    /// Removes the files as [`RetiredSegments::remove`] does, but gently for the disk (see
    /// `fs::remove_gently`): renamed oldest first to temporary names that recovery deletes,
    /// then cut down by `step_bytes` at a time, every cut synced and followed by `pause`,
    /// and unlinked. Returns how many were removed.
    pub fn remove_paced(self, step_bytes: u64, mut pause: impl FnMut()) -> Result<usize> {
        crate::fs::remove_gently(
            &self.fs,
            &self.dir,
            &self.paths,
            TEMP_SUFFIX,
            step_bytes,
            &mut pause,
        )
    }
}

/// Prepares spare segments for a [`Wal`] on another thread, so that a roll
/// does not stall appends while 64 MiB of zeros are written.
#[derive(Debug)]
pub struct SegmentPreparer<F: Fs> {
    fs: F,
    dir: PathBuf,
    len_bytes: u64,
    next: u64,
}

/// Zeros written between syncs while preparing a spare: the writeback goes
/// to the disk in small pieces, so a log fsync queued behind one waits
/// little (three members filling 4 MiB pieces at once halved a cluster's
/// throughput for half a second here; paced 256 KiB pieces left the fsyncs
/// beside them at 0.8 ms at the 99th percentile, against 26 ms).
pub const SPARE_SYNC_CHUNK_BYTES: u64 = 256 << 10;

impl<F: Fs> SegmentPreparer<F> {
    /// Size of the segments it prepares.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Zero-fills and syncs a new spare segment.
    pub fn prepare(&mut self) -> Result<SpareSegment<F::File>> {
        self.prepare_paced(|| {})
    }

    /// Zero-fills and syncs a new spare segment, calling `pause` after each
    /// [`SPARE_SYNC_CHUNK_BYTES`] are synced: the caller can spread the
    /// writes over time and leave the disk to the log's own fsyncs.
    pub fn prepare_paced(&mut self, mut pause: impl FnMut()) -> Result<SpareSegment<F::File>> {
        self.next += 1;
        let temp = self
            .dir
            .join(format!("spare-{:08}{TEMP_SUFFIX}", self.next));
        let mut file = self
            .fs
            .create_new(&temp)
            .map_err(io_error("create", &temp))?;
        let mut filled = 0;
        while filled < self.len_bytes {
            filled = (filled + SPARE_SYNC_CHUNK_BYTES).min(self.len_bytes);
            let step = file.allocate(filled).and_then(|()| file.sync_data());
            if let Err(source) = step {
                let _ = self.fs.remove(&temp);
                if is_no_space(&source) {
                    return Err(Error::NoSpace { file: temp, source });
                }
                return Err(io_error("preallocate", &temp)(source));
            }
            if filled < self.len_bytes {
                pause();
            }
        }
        file.sync_all().map_err(|source| Error::SyncFailed {
            file: temp.clone(),
            source,
        })?;
        Ok(SpareSegment {
            file,
            temp,
            len_bytes: self.len_bytes,
        })
    }
}

fn segment_name(first_lsn: Lsn) -> String {
    format!(
        "{:0width$}{SEGMENT_SUFFIX}",
        first_lsn.0,
        width = SEGMENT_NAME_DIGITS
    )
}

fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

fn io_error(op: &'static str, file: &Path) -> impl FnOnce(io::Error) -> Error {
    let file = file.to_path_buf();
    move |source| Error::Io { op, file, source }
}

fn corrupt(file: &Path, offset: u64, reason: String) -> Error {
    Error::Corrupt {
        what: "WAL segment",
        file: file.to_path_buf(),
        offset,
        reason,
    }
}

/// Overwrite `from..to` of `file` with zeros.
fn wipe<File: FsFile>(file: &mut File, from: u64, to: u64) -> io::Result<()> {
    let zeros = [0u8; WIPE_CHUNK_BYTES];
    let mut offset = from;
    while offset < to {
        let chunk_bytes = (to - offset).min(WIPE_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..chunk_bytes], offset)?;
        offset += chunk_bytes as u64;
    }
    Ok(())
}

impl<F: Fs> Wal<F> {
    /// Open the log in `dir` (created if missing), recovering every intact record.
    ///
    /// A torn tail in the last segment is wiped and reported in [`Recovered::torn_tail`]. Any
    /// other damage returns [`Error::Corrupt`] naming the file and byte offset, and leaves
    /// every segment as it found it. The last segment is synced before returning, so every recovered
    /// record is durable even if it was only in the OS cache when the previous process died.
    pub fn open(fs: F, dir: impl Into<PathBuf>, options: WalOptions) -> Result<(Self, Recovered)> {
        options.validate()?;
        let dir = dir.into();
        crate::fs::ensure_dir(&fs, &dir)?;

        let mut segments = Vec::new();
        let mut temps_removed = false;
        for name in fs.list(&dir).map_err(io_error("list", &dir))? {
            let path = dir.join(&name);
            if name.ends_with(TEMP_SUFFIX) {
                // A segment whose creation did not finish: it never held a record.
                fs.remove(&path).map_err(io_error("remove", &path))?;
                temps_removed = true;
            } else if let Some(first_lsn) = parse_segment_name(&name) {
                segments.push(Segment { first_lsn, path });
            }
        }
        if temps_removed {
            crate::fs::sync_dir_or_fail(&fs, &dir)?;
        }
        segments.sort_by_key(|segment| segment.first_lsn);

        let mut recovered = Recovered::default();
        let mut last_scan = None;
        let mut previous_end: Option<(&Segment, u64)> = None;
        for (i, segment) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            let expected_lsn = recovered
                .records
                .last()
                .map_or(segment.first_lsn, |record| record.lsn.next());
            if let Some((previous, end_bytes)) = previous_end
                && expected_lsn != segment.first_lsn
            {
                return Err(corrupt(
                    &previous.path,
                    end_bytes,
                    format!(
                        "records end before LSN {expected_lsn}, but the next segment {} starts at LSN {}",
                        segment.path.display(),
                        segment.first_lsn
                    ),
                ));
            }
            let scan = scan_segment(&fs, segment, is_last, &mut recovered.records)?;
            previous_end = Some((segment, scan.end_bytes));
            last_scan = Some(scan);
        }

        let mut wal = Wal {
            fs,
            dir,
            options,
            segments: segments.into(),
            active: None,
            next_lsn: recovered.records.last().map_or(Lsn(1), |r| r.lsn.next()),
            durable_lsn: Lsn(0),
            poisoned: false,
            spare: None,
        };
        match (wal.segments.back().cloned(), last_scan) {
            (Some(segment), Some(scan)) => {
                recovered.torn_tail = wal.reopen_active(&segment, &scan)?;
            }
            _ => {
                let active = wal.create_segment(wal.next_lsn)?;
                wal.segments.push_back(Segment {
                    first_lsn: active.first_lsn,
                    path: active.path.clone(),
                });
                wal.active = Some(active);
            }
        }
        wal.durable_lsn = Lsn(wal.next_lsn.0 - 1);
        Ok((wal, recovered))
    }

    /// Append a record to the current batch and return its LSN. It is not durable until a
    /// [`Wal::sync`] returns an LSN at least as large. May write (but not sync) the batch when
    /// the write buffer is full, and syncs the current segment when it has to roll to a new
    /// one.
    pub fn append(&mut self, record_type: u8, payload: &[u8]) -> Result<Lsn> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if payload.len() > self.options.record_payload_bytes_max as usize {
            return Err(Error::RecordTooLarge {
                payload_bytes: payload.len(),
                limit_bytes: self.options.record_payload_bytes_max,
            });
        }
        let record_bytes = (RECORD_OVERHEAD_BYTES + payload.len()) as u64;
        let fits = self.active.as_ref().is_some_and(|active| {
            active.written_bytes + active.pending.len() as u64 + record_bytes
                <= active.capacity_bytes
        });
        if !fits {
            self.roll()?;
        }
        let buffer_full = self.active.as_ref().is_some_and(|active| {
            active.pending.len() as u64 + record_bytes > self.options.write_buffer_bytes_max as u64
        });
        if buffer_full {
            self.flush()?;
        }
        let Some(active) = self.active.as_mut() else {
            unreachable!("roll() returns Ok only with an active segment");
        };
        let before_bytes = active.pending.len();
        encode_record(
            &mut active.pending,
            active.first_lsn.0,
            record_type,
            payload,
        );
        debug_assert_eq!(
            active.pending.len() as u64,
            before_bytes as u64 + record_bytes
        );
        debug_assert!(active.pending.len() <= self.options.write_buffer_bytes_max);
        debug_assert!(active.written_bytes + active.pending.len() as u64 <= active.capacity_bytes);
        let lsn = self.next_lsn;
        self.next_lsn = lsn.next();
        Ok(lsn)
    }

    /// Make every appended record durable with one write and one fdatasync (group commit),
    /// and return the durable LSN: the caller releases the waiters of records up to it.
    /// A failed fdatasync poisons the log ([`Error::SyncFailed`], then [`Error::Poisoned`]).
    /// A full disk returns [`Error::NoSpace`] and discards the records after
    /// [`Wal::durable_lsn`]; the log stays usable.
    pub fn sync(&mut self) -> Result<Lsn> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.next_lsn == self.durable_lsn.next() {
            return Ok(self.durable_lsn);
        }
        self.flush()?;
        let Some(active) = self.active.as_mut() else {
            unreachable!("records after the durable LSN live in the active segment");
        };
        if let Err(source) = active.file.sync_data() {
            self.poisoned = true;
            return Err(Error::SyncFailed {
                file: active.path.clone(),
                source,
            });
        }
        debug_assert!(active.pending.is_empty());
        active.durable_bytes = active.written_bytes;
        self.durable_lsn = Lsn(self.next_lsn.0 - 1);
        Ok(self.durable_lsn)
    }

    /// How many of the oldest segments hold only records below `lsn`: each
    /// one whose successor starts at or below it. The active segment (the
    /// last) is never among them.
    fn segments_wholly_before(&self, lsn: Lsn) -> usize {
        self.segments
            .iter()
            .skip(1)
            .take_while(|next| next.first_lsn <= lsn)
            .count()
    }

    /// Like [`Wal::truncate_before`], but the log only forgets the segments: removing their
    /// files is left to the returned [`RetiredSegments`], on whichever thread can wait for
    /// it. Files not yet removed when the node stops are read again at recovery, as after a
    /// crash between a snapshot and its trim.
    pub fn retire_before(&mut self, lsn: Lsn) -> Result<RetiredSegments<F>>
    where
        F: Clone,
    {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let whole = self.segments_wholly_before(lsn);
        let paths = self.segments.drain(..whole).map(|s| s.path).collect();
        Ok(RetiredSegments {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            paths,
        })
    }

    /// Remove whole segments all of whose records are below `lsn`, e.g. once a snapshot
    /// covers them. The segment holding `lsn - 1`, and the active one, stay. Returns how many
    /// segments were removed.
    pub fn truncate_before(&mut self, lsn: Lsn) -> Result<usize> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let mut removed = 0;
        let mut result = Ok(());
        // Oldest first, so that a crash part-way leaves a contiguous log.
        for _ in 0..self.segments_wholly_before(lsn) {
            let path = self.segments[0].path.clone();
            if let Err(source) = self.fs.remove(&path) {
                result = Err(Error::Io {
                    op: "remove",
                    file: path,
                    source,
                });
                break;
            }
            self.segments.pop_front();
            removed += 1;
        }
        if removed > 0
            && let Err(source) = self.fs.sync_dir(&self.dir)
        {
            self.poisoned = true;
            return Err(Error::SyncFailed {
                file: self.dir.clone(),
                source,
            });
        }
        result.map(|()| removed)
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Every record up to this LSN is durable (`Lsn(0)`: none yet).
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// LSN of the oldest record still on disk (or of the next one, for an empty log).
    pub fn first_lsn(&self) -> Lsn {
        self.segments
            .front()
            .map_or(self.next_lsn, |segment| segment.first_lsn)
    }

    /// How many segment files the log has.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Whether an earlier failure left durability unknown; if so the node must stop.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Write the pending batch (no sync). On a full disk, discard everything not durable.
    fn flush(&mut self) -> Result<()> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        if active.pending.is_empty() {
            return Ok(());
        }
        debug_assert!(active.written_bytes + active.pending.len() as u64 <= active.capacity_bytes);
        match active
            .file
            .write_all_at(&active.pending, active.written_bytes)
        {
            Ok(()) => {
                active.written_bytes += active.pending.len() as u64;
                active.pending.clear();
                debug_assert!(active.written_bytes <= active.capacity_bytes);
                Ok(())
            }
            Err(source) if is_no_space(&source) => {
                let path = active.path.clone();
                self.discard_unsynced()?;
                Err(Error::NoSpace { file: path, source })
            }
            Err(source) => {
                self.poisoned = true;
                Err(Error::Io {
                    op: "write",
                    file: active.path.clone(),
                    source,
                })
            }
        }
    }

    /// After a full disk: zero everything written past the durable point and rewind, so the
    /// file is again a clean prefix of acknowledged records.
    fn discard_unsynced(&mut self) -> Result<()> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let dirty_end =
            (active.written_bytes + active.pending.len() as u64).min(active.capacity_bytes);
        active.pending.clear();
        let wiped = wipe(&mut active.file, active.durable_bytes, dirty_end)
            .and_then(|()| active.file.sync_data());
        if let Err(source) = wiped {
            self.poisoned = true;
            return Err(Error::SyncFailed {
                file: active.path.clone(),
                source,
            });
        }
        active.written_bytes = active.durable_bytes;
        self.next_lsn = self.durable_lsn.next();
        Ok(())
    }

    /// A preparer of spare segments for this log, to run on another thread.
    pub fn segment_preparer(&self) -> SegmentPreparer<F>
    where
        F: Clone,
    {
        SegmentPreparer {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            len_bytes: self.options.segment_bytes_max,
            next: 0,
        }
    }

    /// Whether the log holds no spare segment (one should be prepared).
    pub fn needs_spare(&self) -> bool {
        self.spare.is_none()
    }

    /// Hands the log a spare segment for its next roll. A second one is
    /// not needed: it is removed.
    pub fn offer_spare(&mut self, spare: SpareSegment<F::File>) {
        if self.spare.is_some() || spare.len_bytes < self.options.segment_bytes_max {
            let _ = self.fs.remove(&spare.temp);
            return;
        }
        self.spare = Some(spare);
    }

    /// Seal the active segment (syncing it, so the next one never exists without it being
    /// complete) and start a new one at the next LSN.
    fn roll(&mut self) -> Result<()> {
        if self.active.is_some() {
            self.sync()?;
            self.active = None;
        }
        let active = self.create_segment(self.next_lsn)?;
        self.segments.push_back(Segment {
            first_lsn: active.first_lsn,
            path: active.path.clone(),
        });
        self.active = Some(active);
        Ok(())
    }

    /// Create a preallocated segment under a temporary name, sync it, rename it into place
    /// and sync the directory: a segment with its final name is always complete.
    fn create_segment(&mut self, first_lsn: Lsn) -> Result<Active<F::File>> {
        let path = self.dir.join(segment_name(first_lsn));
        let header = frame::segment_header(first_lsn.0);
        // A spare is already zero-filled and synced: only its header is new.
        let (temp, mut file, prepared) = match self.spare.take() {
            Some(SpareSegment { mut file, temp, .. }) => {
                let prepared = file.write_all_at(&header, 0);
                (temp, file, prepared)
            }
            None => {
                let temp = self.dir.join(format!("{:020}{TEMP_SUFFIX}", first_lsn.0));
                let mut file = crate::fs::create_fresh(&self.fs, &temp)?;
                let prepared = file
                    .write_all_at(&header, 0)
                    .and_then(|()| file.allocate(self.options.segment_bytes_max));
                (temp, file, prepared)
            }
        };
        if let Err(source) = prepared {
            // Best effort: a leftover temp file is removed by the next open anyway.
            let _ = self.fs.remove(&temp);
            if is_no_space(&source) {
                return Err(Error::NoSpace { file: temp, source });
            }
            return Err(io_error("preallocate", &temp)(source));
        }
        if let Err(source) = file.sync_all() {
            self.poisoned = true;
            return Err(Error::SyncFailed { file: temp, source });
        }
        self.fs
            .rename(&temp, &path)
            .map_err(io_error("rename", &temp))?;
        if let Err(source) = self.fs.sync_dir(&self.dir) {
            self.poisoned = true;
            return Err(Error::SyncFailed {
                file: self.dir.clone(),
                source,
            });
        }
        let capacity_bytes = file.len_bytes().map_err(io_error("stat", &path))?;
        debug_assert!(capacity_bytes >= self.options.segment_bytes_max);
        Ok(Active {
            file,
            path,
            first_lsn,
            capacity_bytes,
            written_bytes: SEGMENT_HEADER_BYTES,
            durable_bytes: SEGMENT_HEADER_BYTES,
            pending: Vec::new(),
        })
    }

    /// Make the last recovered segment the active one: wipe its torn tail, top its
    /// preallocation up, and sync it.
    fn reopen_active(&mut self, segment: &Segment, scan: &SegmentScan) -> Result<Option<TornTail>> {
        let path = &segment.path;
        let mut file = self.fs.open(path).map_err(io_error("open", path))?;
        let torn_tail = scan.torn_end_bytes.map(|torn_end| TornTail {
            file: path.clone(),
            offset: scan.end_bytes,
            bytes_dropped: torn_end - scan.end_bytes,
        });
        if let Some(torn) = &torn_tail {
            wipe(&mut file, torn.offset, torn.offset + torn.bytes_dropped)
                .map_err(io_error("wipe torn tail of", path))?;
        }
        let mut capacity_bytes = scan.file_bytes;
        if capacity_bytes < self.options.segment_bytes_max {
            match file.allocate(self.options.segment_bytes_max) {
                Ok(()) => capacity_bytes = self.options.segment_bytes_max,
                // Keep the segment as it is; the log rolls earlier, when space is back.
                Err(e) if is_no_space(&e) => {}
                Err(source) => return Err(io_error("preallocate", path)(source)),
            }
        }
        file.sync_all().map_err(|source| Error::SyncFailed {
            file: path.clone(),
            source,
        })?;
        debug_assert!(scan.end_bytes <= capacity_bytes);
        self.active = Some(Active {
            file,
            path: path.clone(),
            first_lsn: segment.first_lsn,
            capacity_bytes,
            written_bytes: scan.end_bytes,
            durable_bytes: scan.end_bytes,
            pending: Vec::new(),
        });
        Ok(torn_tail)
    }
}

/// Read and check one segment, appending its intact records to `records`.
fn scan_segment<F: Fs>(
    fs: &F,
    segment: &Segment,
    is_last: bool,
    records: &mut Vec<Record>,
) -> Result<SegmentScan> {
    let path = &segment.path;
    let file = fs.open(path).map_err(io_error("open", path))?;
    let file_bytes = file.len_bytes().map_err(io_error("stat", path))?;
    if file_bytes > SEGMENT_BYTES_LIMIT {
        return Err(corrupt(
            path,
            SEGMENT_BYTES_LIMIT,
            format!("file of {file_bytes} bytes is larger than any segment"),
        ));
    }
    let mut bytes = vec![0u8; file_bytes as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(io_error("read", path))?;
    debug_assert_eq!(bytes.len() as u64, file_bytes);
    check_segment_header(&bytes, segment.first_lsn.0)
        .map_err(|(offset, reason)| corrupt(path, offset, reason))?;

    let seed = segment.first_lsn.0;
    let mut offset = SEGMENT_HEADER_BYTES as usize;
    let mut lsn = segment.first_lsn;
    let stop_reason = loop {
        match decode_record(&bytes, offset, seed) {
            Frame::Record {
                record_type,
                payload,
                end,
            } => {
                debug_assert!(end > offset && end <= bytes.len());
                records.push(Record {
                    lsn,
                    record_type,
                    payload: payload.to_vec(),
                });
                lsn = lsn.next();
                offset = end;
            }
            Frame::End => {
                break "zero length marks the end of the records, yet non-zero bytes follow"
                    .to_owned();
            }
            Frame::Bad(reason) => break reason,
        }
    };
    let end_bytes = offset as u64;
    let nonzero_end = bytes[offset..]
        .iter()
        .rposition(|b| *b != 0)
        .map(|i| offset + i + 1);
    let Some(nonzero_end) = nonzero_end else {
        return Ok(SegmentScan {
            end_bytes,
            file_bytes,
            torn_end_bytes: None,
        });
    };
    if !is_last {
        return Err(corrupt(
            path,
            end_bytes,
            format!("{stop_reason} (in a sealed segment, not the tail of the log)"),
        ));
    }
    if let Some(valid_at) = find_record(&bytes, offset + 1, nonzero_end, seed) {
        return Err(corrupt(
            path,
            end_bytes,
            format!("{stop_reason}, but an intact record follows at byte offset {valid_at}"),
        ));
    }
    Ok(SegmentScan {
        end_bytes,
        file_bytes,
        torn_end_bytes: Some(nonzero_end as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort() {
        assert_eq!(segment_name(Lsn(42)), "00000000000000000042.wal");
        assert_eq!(parse_segment_name(&segment_name(Lsn(42))), Some(Lsn(42)));
        assert_eq!(parse_segment_name("42.wal"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.wal"), None);
    }

    #[test]
    fn options_are_checked() {
        assert!(WalOptions::default().validate().is_ok());
        let tiny = WalOptions {
            segment_bytes_max: 100,
            ..WalOptions::default()
        };
        assert!(matches!(tiny.validate(), Err(Error::InvalidOptions { .. })));
    }
}
