//! Snapshots: a state machine image at a log index, stored so that a crash never leaves a
//! half-written one in place and damage is found and located before the image is used.
//!
//! ```text
//! file   = header block*
//! header = "SYNODSNP" version:u32 block_bytes:u32 index:u64 data_len:u64 data_crc:u32
//!          header_crc:u32                                          (40 bytes, little endian)
//! block  = crc:u32 data                   (data: block_bytes, the last block may be shorter)
//! crc    = crc32c(index ‖ data offset ‖ data)      data_crc = crc32c(all data)
//! ```
//!
//! Per-block checksums let a refusal name the offset of the damaged block, and let a
//! [`crate::SnapshotReceiver`] find after a crash how much of a partial transfer is intact
//! and resume from there. A snapshot is written under a temporary name, synced, renamed into
//! place and the directory synced; only then are older snapshots removed.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, is_no_space};
use crate::frame::{read_u32, read_u64};
use crate::fs::{Fs, FsFile};

/// Bytes of the snapshot file header.
pub const SNAPSHOT_HEADER_BYTES: u64 = 40;

/// Largest block size a snapshot file may declare; bounds the read buffer of verification.
pub const SNAPSHOT_BLOCK_BYTES_LIMIT: u32 = 16 << 20;

const SNAPSHOT_MAGIC: [u8; 8] = *b"SYNODSNP";
const SNAPSHOT_VERSION: u32 = 1;
const BLOCK_CRC_BYTES: u64 = 4;
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";
const INDEX_DIGITS: usize = 20;

/// Sizes for snapshots; every buffer is bounded by one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Data bytes per checksummed block: the granularity of damage reports and of resuming
    /// a transfer.
    pub block_bytes: u32,
    /// Largest snapshot accepted, saved or loaded (it is held in memory whole).
    pub snapshot_bytes_max: u64,
    /// Largest chunk a receiver accepts from a sender.
    pub chunk_bytes_max: usize,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        Self {
            block_bytes: 64 << 10,
            snapshot_bytes_max: 1 << 30,
            chunk_bytes_max: 4 << 20,
        }
    }
}

impl SnapshotOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.block_bytes == 0 || self.block_bytes > SNAPSHOT_BLOCK_BYTES_LIMIT {
            return Err(Error::InvalidOptions {
                reason: "block_bytes must be in 1..=SNAPSHOT_BLOCK_BYTES_LIMIT",
            });
        }
        if self.chunk_bytes_max == 0 {
            return Err(Error::InvalidOptions {
                reason: "chunk_bytes_max must be positive",
            });
        }
        Ok(())
    }
}

/// A loaded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The log index the image reflects; the caller gives it meaning.
    pub index: u64,
    /// The image.
    pub data: Vec<u8>,
}

/// The decoded header of a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) index: u64,
    pub(crate) block_bytes: u32,
    pub(crate) data_len: u64,
    pub(crate) data_crc: u32,
}

impl Header {
    pub(crate) fn encode(&self) -> [u8; SNAPSHOT_HEADER_BYTES as usize] {
        let mut bytes = [0u8; SNAPSHOT_HEADER_BYTES as usize];
        bytes[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
        bytes[8..12].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.block_bytes.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.index.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.data_len.to_le_bytes());
        bytes[32..36].copy_from_slice(&self.data_crc.to_le_bytes());
        let crc = crc32c::crc32c(&bytes[0..36]);
        bytes[36..40].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decode and check a header; on failure the offset of the bad field and why.
    pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<Header, (u64, String)> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES as usize {
            return Err((
                bytes.len() as u64,
                format!(
                    "file of {} bytes is shorter than the {SNAPSHOT_HEADER_BYTES}-byte header",
                    bytes.len()
                ),
            ));
        }
        if bytes[0..8] != SNAPSHOT_MAGIC {
            return Err((0, "bad magic, not a synod snapshot".to_owned()));
        }
        if crc32c::crc32c(&bytes[0..36]) != read_u32(bytes, 36) {
            return Err((
                0,
                format!("header (bytes 0..{SNAPSHOT_HEADER_BYTES}) checksum mismatch"),
            ));
        }
        let version = read_u32(bytes, 8);
        if version != SNAPSHOT_VERSION {
            return Err((8, format!("unsupported snapshot version {version}")));
        }
        let block_bytes = read_u32(bytes, 12);
        if block_bytes == 0 || block_bytes > SNAPSHOT_BLOCK_BYTES_LIMIT {
            return Err((12, format!("block size {block_bytes} out of range")));
        }
        Ok(Header {
            index: read_u64(bytes, 16),
            block_bytes,
            data_len: read_u64(bytes, 24),
            data_crc: read_u32(bytes, 32),
        })
    }

    pub(crate) fn block_count(&self) -> u64 {
        self.data_len.div_ceil(u64::from(self.block_bytes))
    }

    /// Size of a complete file with this header.
    pub(crate) fn file_bytes(&self) -> u64 {
        SNAPSHOT_HEADER_BYTES + self.data_len + BLOCK_CRC_BYTES * self.block_count()
    }

    /// File offset of block `block` (its checksum field).
    pub(crate) fn block_pos(&self, block: u64) -> u64 {
        SNAPSHOT_HEADER_BYTES + block * (BLOCK_CRC_BYTES + u64::from(self.block_bytes))
    }

    /// Data bytes in block `block`.
    pub(crate) fn block_data_bytes(&self, block: u64) -> u64 {
        let start = block * u64::from(self.block_bytes);
        (self.data_len - start).min(u64::from(self.block_bytes))
    }
}

/// Initial checksum state of the block that starts at `data_offset`.
pub(crate) fn block_crc_seed(index: u64, data_offset: u64) -> u32 {
    let crc = crc32c::crc32c(&index.to_le_bytes());
    crc32c::crc32c_append(crc, &data_offset.to_le_bytes())
}

/// Writes snapshot data into the block layout, in pieces of any size, keeping the running
/// checksums. Copyable so a caller can commit its progress only once the writes succeeded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockWriter {
    pub(crate) header: Header,
    /// Data bytes written so far.
    pub(crate) written_bytes: u64,
    /// Checksum of the data written so far.
    pub(crate) data_crc: u32,
    /// Running checksum of the current, unfinished block.
    block_crc: u32,
}

impl BlockWriter {
    pub(crate) fn new(header: Header) -> Self {
        Self {
            header,
            written_bytes: 0,
            data_crc: 0,
            block_crc: block_crc_seed(header.index, 0),
        }
    }

    /// A writer that resumes after `written_bytes`, a block boundary, with `data_crc` the
    /// checksum of those bytes.
    pub(crate) fn resumed(header: Header, written_bytes: u64, data_crc: u32) -> Self {
        debug_assert!(
            written_bytes.is_multiple_of(u64::from(header.block_bytes))
                || written_bytes == header.data_len
        );
        Self {
            header,
            written_bytes,
            data_crc,
            block_crc: block_crc_seed(header.index, written_bytes),
        }
    }

    /// Write the next `data` bytes of the snapshot.
    pub(crate) fn write<File: FsFile>(
        &mut self,
        file: &mut File,
        mut data: &[u8],
    ) -> io::Result<()> {
        let block_bytes = u64::from(self.header.block_bytes);
        debug_assert!(self.written_bytes + data.len() as u64 <= self.header.data_len);
        while !data.is_empty() {
            let block = self.written_bytes / block_bytes;
            let in_block = self.written_bytes % block_bytes;
            let room_bytes = self.header.block_data_bytes(block) - in_block;
            let piece_bytes = room_bytes.min(data.len() as u64) as usize;
            let (piece, rest) = data.split_at(piece_bytes);
            let pos = self.header.block_pos(block) + BLOCK_CRC_BYTES + in_block;
            file.write_all_at(piece, pos)?;
            self.block_crc = crc32c::crc32c_append(self.block_crc, piece);
            self.data_crc = crc32c::crc32c_append(self.data_crc, piece);
            self.written_bytes += piece_bytes as u64;
            if piece_bytes as u64 == room_bytes {
                // Block complete: its checksum goes in front of it.
                file.write_all_at(&self.block_crc.to_le_bytes(), self.header.block_pos(block))?;
                self.block_crc = block_crc_seed(self.header.index, self.written_bytes);
            }
            data = rest;
        }
        debug_assert!(self.written_bytes <= self.header.data_len);
        Ok(())
    }
}

impl BlockWriter {
    /// A writer for data whose length is not known yet: every block is
    /// taken as full until [`BlockWriter::close`] says where the data ends.
    fn streaming(index: u64, block_bytes: u32) -> Self {
        Self::new(Header {
            index,
            block_bytes,
            data_len: u64::MAX,
            data_crc: 0,
        })
    }

    /// Ends streamed data: writes the checksum of a partial last block and
    /// returns the true header.
    fn close<File: FsFile>(&mut self, file: &mut File) -> io::Result<Header> {
        let block_bytes = u64::from(self.header.block_bytes);
        if !self.written_bytes.is_multiple_of(block_bytes) {
            let block = self.written_bytes / block_bytes;
            file.write_all_at(&self.block_crc.to_le_bytes(), self.header.block_pos(block))?;
        }
        self.header.data_len = self.written_bytes;
        self.header.data_crc = self.data_crc;
        Ok(self.header)
    }
}

/// What [`verify_blocks`] found.
#[derive(Debug)]
pub(crate) struct BlockCheck {
    /// Data bytes intact from the start: a block boundary, or `data_len`.
    pub(crate) intact_bytes: u64,
    /// Checksum of those bytes.
    pub(crate) data_crc: u32,
    /// The first damage: file offset and why.
    pub(crate) damage: Option<(u64, String)>,
}

/// Verify the blocks of a snapshot file from the start, appending intact data to `sink`.
pub(crate) fn verify_blocks<File: FsFile>(
    file: &File,
    header: &Header,
    mut sink: Option<&mut Vec<u8>>,
) -> io::Result<BlockCheck> {
    let file_bytes = file.len_bytes()?;
    let mut buf = vec![0u8; (BLOCK_CRC_BYTES + u64::from(header.block_bytes)) as usize];
    let mut data_crc = 0;
    let mut intact_bytes = 0;
    for block in 0..header.block_count() {
        let pos = header.block_pos(block);
        let data_bytes = header.block_data_bytes(block);
        let frame_bytes = BLOCK_CRC_BYTES + data_bytes;
        if pos + frame_bytes > file_bytes {
            return Ok(BlockCheck {
                intact_bytes,
                data_crc,
                damage: Some((file_bytes, format!("file ends inside block {block}"))),
            });
        }
        let frame = &mut buf[..frame_bytes as usize];
        file.read_exact_at(frame, pos)?;
        let (crc, data) = frame.split_at(BLOCK_CRC_BYTES as usize);
        let expected = crc32c::crc32c_append(block_crc_seed(header.index, intact_bytes), data);
        if read_u32(crc, 0) != expected {
            let reason = format!(
                "block {block} (data bytes {intact_bytes}..{}) checksum mismatch",
                intact_bytes + data_bytes
            );
            return Ok(BlockCheck {
                intact_bytes,
                data_crc,
                damage: Some((pos, reason)),
            });
        }
        data_crc = crc32c::crc32c_append(data_crc, data);
        if let Some(sink) = sink.as_deref_mut() {
            sink.extend_from_slice(data);
        }
        intact_bytes += data_bytes;
    }
    debug_assert_eq!(intact_bytes, header.data_len);
    Ok(BlockCheck {
        intact_bytes,
        data_crc,
        damage: None,
    })
}

pub(crate) fn snapshot_name(index: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{index:0INDEX_DIGITS$}{SNAPSHOT_SUFFIX}")
}

fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SNAPSHOT_PREFIX)?
        .strip_suffix(SNAPSHOT_SUFFIX)?;
    if digits.len() != INDEX_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn io_error(op: &'static str, file: &Path) -> impl FnOnce(io::Error) -> Error {
    let file = file.to_path_buf();
    move |source| Error::Io { op, file, source }
}

pub(crate) fn corrupt(file: &Path, offset: u64, reason: String) -> Error {
    Error::Corrupt {
        what: "snapshot",
        file: file.to_path_buf(),
        offset,
        reason,
    }
}

/// Indexes of the complete snapshots in `dir`, ascending.
pub(crate) fn list_snapshots<F: Fs>(fs: &F, dir: &Path) -> Result<Vec<u64>> {
    let mut indexes: Vec<u64> = fs
        .list(dir)
        .map_err(io_error("list", dir))?
        .iter()
        .filter_map(|name| parse_snapshot_name(name))
        .collect();
    indexes.sort_unstable();
    Ok(indexes)
}

/// How older snapshots are removed once a new one is in place: at once, or cut down
/// `step_bytes` at a time with `pause` after each cut (see `fs::remove_gently`).
pub(crate) type Pacing<'a> = Option<(u64, &'a mut dyn FnMut())>;

/// Make a fully written temp snapshot durable, rename it into place, make that durable, then
/// remove older snapshots (paced by `pacing`). Any failed sync is returned as
/// [`Error::SyncFailed`]; the caller poisons itself.
pub(crate) fn install<F: Fs>(
    fs: &F,
    dir: &Path,
    file: &mut F::File,
    temp: &Path,
    index: u64,
    pacing: Pacing<'_>,
) -> Result<()> {
    file.sync_all().map_err(|source| Error::SyncFailed {
        file: temp.to_path_buf(),
        source,
    })?;
    let path = dir.join(snapshot_name(index));
    fs.rename(temp, &path).map_err(io_error("rename", temp))?;
    crate::fs::sync_dir_or_fail(fs, dir)?;
    let older: Vec<u64> = list_snapshots(fs, dir)?
        .into_iter()
        .filter(|i| *i < index)
        .collect();
    if let Some((step_bytes, pause)) = pacing {
        let paths: Vec<PathBuf> = older.iter().map(|i| dir.join(snapshot_name(*i))).collect();
        crate::fs::remove_gently(fs, dir, &paths, TEMP_SUFFIX, step_bytes, pause)?;
        return Ok(());
    }
    for old in &older {
        let old_path = dir.join(snapshot_name(*old));
        fs.remove(&old_path)
            .map_err(io_error("remove", &old_path))?;
    }
    if !older.is_empty() {
        crate::fs::sync_dir_or_fail(fs, dir)?;
    }
    Ok(())
}

/// Snapshot bytes written between syncs while saving: a log fsync queued
/// behind one piece's writeback waits for little (beside three 55 MB saves
/// in 8 MiB pieces, three fsync loops took 9.3 ms at the median; in
/// 512 KiB pieces, 0.98 ms).
pub const SAVE_SYNC_CHUNK_BYTES: usize = 512 << 10;

/// A snapshot being written (see [`SnapshotStore::begin`]). The data goes
/// to a temporary file, synced every [`SAVE_SYNC_CHUNK_BYTES`] so that its writeback is
/// spread out and the log's fsyncs on the same disk never queue behind all
/// of it; the header goes last, once the length and checksum are known.
#[derive(Debug)]
pub struct SnapshotSave<'a, F: Fs> {
    store: &'a mut SnapshotStore<F>,
    /// `None` once finished or failed.
    file: Option<F::File>,
    temp: PathBuf,
    index: u64,
    writer: BlockWriter,
    unsynced_bytes: usize,
}

impl<F: Fs> SnapshotSave<'_, F> {
    /// Appends the next bytes of the image. After an error the save is
    /// abandoned (the temporary file removed) and every later call fails.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(Error::SaveAbandoned {
                file: self.temp.clone(),
            });
        };
        let total = self.writer.written_bytes + data.len() as u64;
        if total > self.store.options.snapshot_bytes_max {
            let error = Error::SnapshotTooLarge {
                file: self.store.dir.join(snapshot_name(self.index)),
                data_bytes: total,
                limit_bytes: self.store.options.snapshot_bytes_max,
            };
            return Err(self.abandon(error));
        }
        for piece in data.chunks(SAVE_SYNC_CHUNK_BYTES) {
            if let Err(source) = self.writer.write(file, piece) {
                let error = if is_no_space(&source) {
                    Error::NoSpace {
                        file: self.temp.clone(),
                        source,
                    }
                } else {
                    io_error("write", &self.temp)(source)
                };
                return Err(self.abandon(error));
            }
            self.unsynced_bytes += piece.len();
            if self.unsynced_bytes >= SAVE_SYNC_CHUNK_BYTES {
                self.unsynced_bytes = 0;
                if let Err(source) = file.sync_data() {
                    // Durability is unknown: stop (DESIGN.md rule 2).
                    self.store.poisoned = true;
                    let error = Error::SyncFailed {
                        file: self.temp.clone(),
                        source,
                    };
                    return Err(self.abandon(error));
                }
            }
        }
        Ok(())
    }

    /// Writes the header, syncs, renames the file into place, syncs the
    /// directory and removes older snapshots; returns the image's size.
    /// When this returns `Ok`, the log before the index may be truncated.
    pub fn finish(self) -> Result<u64> {
        self.finish_with(None)
    }

    /// Like [`SnapshotSave::finish`], but the older snapshots' files are cut
    /// down `step_bytes` at a time, each cut synced and followed by `pause`,
    /// before they are unlinked, so the disk frees them in pieces.
    pub fn finish_paced(self, step_bytes: u64, mut pause: impl FnMut()) -> Result<u64> {
        self.finish_with(Some((step_bytes, &mut pause)))
    }

    fn finish_with(mut self, pacing: Pacing<'_>) -> Result<u64> {
        let Some(mut file) = self.file.take() else {
            return Err(Error::SaveAbandoned {
                file: self.temp.clone(),
            });
        };
        let header = match self
            .writer
            .close(&mut file)
            .and_then(|header| file.write_all_at(&header.encode(), 0).map(|()| header))
        {
            Ok(header) => header,
            Err(source) => {
                self.file = Some(file);
                return Err(self.abandon(io_error("write", &self.temp)(source)));
            }
        };
        let store = &mut *self.store;
        let installed = install(
            &store.fs, &store.dir, &mut file, &self.temp, self.index, pacing,
        );
        installed.inspect_err(|e| {
            if matches!(e, Error::SyncFailed { .. }) {
                store.poisoned = true;
            }
        })?;
        Ok(header.data_len)
    }

    /// Removes the temporary file and hands back `error`.
    fn abandon(&mut self, error: Error) -> Error {
        self.file = None;
        let _ = self.store.fs.remove(&self.temp);
        error
    }
}

impl<F: Fs> Drop for SnapshotSave<'_, F> {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = self.store.fs.remove(&self.temp);
        }
    }
}

/// The snapshots of one node, in one directory.
#[derive(Debug)]
pub struct SnapshotStore<F: Fs> {
    fs: F,
    dir: PathBuf,
    options: SnapshotOptions,
    poisoned: bool,
}

impl<F: Fs> SnapshotStore<F> {
    /// Open the store in `dir` (created if missing), removing temp files of saves that a
    /// crash interrupted.
    pub fn open(fs: F, dir: impl Into<PathBuf>, options: SnapshotOptions) -> Result<Self> {
        options.validate()?;
        let dir = dir.into();
        crate::fs::ensure_dir(&fs, &dir)?;
        let mut removed = false;
        for name in fs.list(&dir).map_err(io_error("list", &dir))? {
            if name.ends_with(TEMP_SUFFIX) {
                let path = dir.join(&name);
                fs.remove(&path).map_err(io_error("remove", &path))?;
                removed = true;
            }
        }
        if removed {
            crate::fs::sync_dir_or_fail(&fs, &dir)?;
        }
        Ok(Self {
            fs,
            dir,
            options,
            poisoned: false,
        })
    }

    /// Durably store `data` as the snapshot at `index`, then remove older snapshots. When this
    /// returns `Ok`, the log before `index` may be truncated. On a full disk the previous
    /// snapshot is untouched and [`Error::NoSpace`] is returned; a failed sync poisons.
    pub fn save(&mut self, index: u64, data: &[u8]) -> Result<()> {
        let mut save = self.begin(index)?;
        save.write(data)?;
        save.finish().map(|_| ())
    }

    /// Starts the snapshot at `index`, to be written piece by piece (so a
    /// large image never has to be held in memory whole) and then
    /// [`SnapshotSave::finish`]ed, with the guarantees of [`Self::save`].
    /// Dropping it unfinished leaves the previous snapshot in place.
    pub fn begin(&mut self, index: u64) -> Result<SnapshotSave<'_, F>> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let temp = self.dir.join(format!(
            "{SNAPSHOT_PREFIX}{index:0INDEX_DIGITS$}{TEMP_SUFFIX}"
        ));
        let file = crate::fs::create_fresh(&self.fs, &temp)?;
        let writer = BlockWriter::streaming(index, self.options.block_bytes);
        Ok(SnapshotSave {
            store: self,
            file: Some(file),
            temp,
            index,
            writer,
            unsynced_bytes: 0,
        })
    }

    /// Load the newest snapshot, verifying every checksum. A damaged snapshot is refused with
    /// [`Error::Corrupt`] naming the file and offset; there is no silent fallback to an older
    /// one, since the log it would need may already be gone.
    pub fn load_latest(&self) -> Result<Option<Snapshot>> {
        self.load_latest_from(0)
    }

    /// Like [`SnapshotStore::load_latest`], but only a snapshot covering at least
    /// `min_index`: an older one, known by its name, is not read at all.
    pub fn load_latest_from(&self, min_index: u64) -> Result<Option<Snapshot>> {
        let Some(index) = list_snapshots(&self.fs, &self.dir)?.pop() else {
            return Ok(None);
        };
        if index < min_index {
            return Ok(None);
        }
        let path = self.dir.join(snapshot_name(index));
        let file = self.fs.open(&path).map_err(io_error("open", &path))?;
        let file_bytes = file.len_bytes().map_err(io_error("stat", &path))?;
        let mut header_bytes = [0u8; SNAPSHOT_HEADER_BYTES as usize];
        let header_read = (file_bytes as usize).min(header_bytes.len());
        file.read_exact_at(&mut header_bytes[..header_read], 0)
            .map_err(io_error("read", &path))?;
        let header = Header::decode(&header_bytes[..header_read])
            .map_err(|(offset, reason)| corrupt(&path, offset, reason))?;
        if header.index != index {
            return Err(corrupt(
                &path,
                16,
                format!("header says index {}, file name says {index}", header.index),
            ));
        }
        if header.data_len > self.options.snapshot_bytes_max {
            // The header checksum passed, so the size is real: a configuration problem.
            return Err(Error::SnapshotTooLarge {
                file: path,
                data_bytes: header.data_len,
                limit_bytes: self.options.snapshot_bytes_max,
            });
        }
        if file_bytes != header.file_bytes() {
            return Err(corrupt(
                &path,
                file_bytes.min(header.file_bytes()),
                format!(
                    "file is {file_bytes} bytes, its header implies {}",
                    header.file_bytes()
                ),
            ));
        }
        let mut data = Vec::with_capacity(header.data_len as usize);
        let check =
            verify_blocks(&file, &header, Some(&mut data)).map_err(io_error("read", &path))?;
        if let Some((offset, reason)) = check.damage {
            return Err(corrupt(&path, offset, reason));
        }
        debug_assert_eq!(check.intact_bytes, header.data_len);
        if check.data_crc != header.data_crc {
            return Err(corrupt(&path, 32, "data checksum mismatch".to_owned()));
        }
        Ok(Some(Snapshot { index, data }))
    }

    /// Index of the newest snapshot on disk, from its name, without reading it.
    pub fn latest_index(&self) -> Result<Option<u64>> {
        Ok(list_snapshots(&self.fs, &self.dir)?.pop())
    }

    /// Whether an earlier failed sync left durability unknown; if so the node must stop.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl<F: Fs + Clone> SnapshotStore<F> {
    /// Another handle on the same directory, for saving on another thread.
    /// Saves are atomic (a temporary file renamed into place), so two
    /// handles never see each other's half-written files.
    pub fn another_handle(&self) -> SnapshotStore<F> {
        SnapshotStore {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            options: self.options,
            poisoned: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_snapshot_name(&snapshot_name(7)), Some(7));
        assert_eq!(parse_snapshot_name("snapshot-7.snap"), None);
    }

    #[test]
    fn header_round_trips_and_layout_adds_up() {
        let header = Header {
            index: 9,
            block_bytes: 10,
            data_len: 25,
            data_crc: 3,
        };
        assert_eq!(Header::decode(&header.encode()), Ok(header));
        assert_eq!(header.block_count(), 3);
        assert_eq!(header.file_bytes(), 40 + 25 + 12);
        assert_eq!(header.block_pos(2), 40 + 28);
        assert_eq!(header.block_data_bytes(2), 5);
    }
}
