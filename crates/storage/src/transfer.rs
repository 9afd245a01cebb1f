//! Snapshot transfer to a replica too far behind: pure pieces the lead's protocol carries.
//!
//! The leader wraps its snapshot in a [`SnapshotSender`] and sends [`SnapshotChunk`]s; the
//! follower feeds them to a [`SnapshotReceiver`], which writes them into a partial file in
//! the snapshot format (so every completed block is checksummed on disk), answers with the
//! offset it wants next, verifies the whole checksum at the end and installs the snapshot
//! atomically. After a crash or a broken connection, [`SnapshotReceiver::open`] finds how
//! much of the partial file is intact and [`SnapshotReceiver::resume_point`] tells the leader
//! where to resume. Nothing here does network I/O, so the simulator can drop, duplicate and
//! reorder chunks at will.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, is_no_space};
use crate::fs::{Fs, FsFile};
use crate::snapshot::{
    BlockWriter, Header, SNAPSHOT_HEADER_BYTES, SnapshotOptions, corrupt, install, io_error,
    verify_blocks,
};

/// Name of the receiver's partial file inside the snapshot directory.
const PARTIAL_NAME: &str = "snapshot-receive.partial";

/// One piece of a snapshot in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// Log index of the snapshot; with `total_len` and `checksum` it identifies the transfer.
    pub index: u64,
    /// Where `data` starts in the snapshot.
    pub offset: u64,
    /// Size of the whole snapshot.
    pub total_len: u64,
    /// crc32c of the whole snapshot, checked by the receiver before installing.
    pub checksum: u32,
    /// The bytes `offset..offset + data.len()` of the snapshot.
    pub data: Vec<u8>,
}

/// The leader's side: cuts a snapshot into chunks, from any offset the follower asks for.
#[derive(Debug, Clone)]
pub struct SnapshotSender {
    index: u64,
    data: Vec<u8>,
    checksum: u32,
    chunk_bytes: usize,
}

impl SnapshotSender {
    /// Prepare to send `data`, the snapshot at `index`, in chunks of at most `chunk_bytes`
    /// (at least 1).
    pub fn new(index: u64, data: Vec<u8>, chunk_bytes: usize) -> Self {
        Self {
            index,
            checksum: crc32c::crc32c(&data),
            data,
            chunk_bytes: chunk_bytes.max(1),
        }
    }

    /// Log index of the snapshot.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Size of the snapshot.
    pub fn total_len(&self) -> u64 {
        self.data.len() as u64
    }

    /// crc32c of the snapshot.
    pub fn checksum(&self) -> u32 {
        self.checksum
    }

    /// The chunk starting at `offset`; `None` past the end. An empty snapshot is one empty
    /// chunk at offset 0, so that it can be installed too.
    pub fn chunk_at(&self, offset: u64) -> Option<SnapshotChunk> {
        let total_len = self.total_len();
        if offset > total_len || (offset == total_len && total_len != 0) {
            return None;
        }
        let end = (offset + self.chunk_bytes as u64).min(total_len);
        Some(SnapshotChunk {
            index: self.index,
            offset,
            total_len,
            checksum: self.checksum,
            data: self.data[offset as usize..end as usize].to_vec(),
        })
    }

    /// The chunks from `offset` to the end, in order: resume a transfer where the receiver
    /// asks.
    pub fn chunks_from(&self, offset: u64) -> SnapshotChunks<'_> {
        SnapshotChunks {
            sender: self,
            next_offset: Some(offset),
        }
    }
}

/// Iterator over the chunks of a [`SnapshotSender`].
#[derive(Debug)]
pub struct SnapshotChunks<'a> {
    sender: &'a SnapshotSender,
    next_offset: Option<u64>,
}

impl Iterator for SnapshotChunks<'_> {
    type Item = SnapshotChunk;

    fn next(&mut self) -> Option<SnapshotChunk> {
        let chunk = self.sender.chunk_at(self.next_offset?)?;
        let end = chunk.offset + chunk.data.len() as u64;
        self.next_offset = (end < chunk.total_len).then_some(end);
        Some(chunk)
    }
}

/// What the receiver wants after a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Send the chunk of snapshot `index` at `next_offset` next. Also the answer to a
    /// duplicate, out-of-order or stale chunk, which changes nothing.
    Continue {
        /// The snapshot being received.
        index: u64,
        /// The first byte not yet received.
        next_offset: u64,
    },
    /// The snapshot is complete, verified and durably installed in the snapshot directory.
    Installed {
        /// Its log index.
        index: u64,
    },
}

/// Where an interrupted transfer stands, to tell the leader after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumePoint {
    /// Log index of the snapshot being received.
    pub index: u64,
    /// Its size.
    pub total_len: u64,
    /// Its checksum.
    pub checksum: u32,
    /// The first byte not yet received (intact on disk).
    pub offset: u64,
}

#[derive(Debug)]
struct Partial<File> {
    file: File,
    writer: BlockWriter,
}

/// The follower's side: receives chunks into a partial file and installs the snapshot.
#[derive(Debug)]
pub struct SnapshotReceiver<F: Fs> {
    fs: F,
    dir: PathBuf,
    options: SnapshotOptions,
    partial: Option<Partial<F::File>>,
    installed_on_open: Option<u64>,
    poisoned: bool,
}

impl<F: Fs> SnapshotReceiver<F> {
    /// Open the receiver over the snapshot directory `dir`. A partial file left by an earlier
    /// run is checked block by block and kept up to its last intact block; if it turns out
    /// complete and correct it is installed now (see [`Self::installed_on_open`]).
    pub fn open(fs: F, dir: impl Into<PathBuf>, options: SnapshotOptions) -> Result<Self> {
        options.validate()?;
        let dir = dir.into();
        crate::fs::ensure_dir(&fs, &dir)?;
        let mut receiver = Self {
            fs,
            dir,
            options,
            partial: None,
            installed_on_open: None,
            poisoned: false,
        };
        let path = receiver.partial_path();
        let file = match receiver.fs.open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(receiver),
            Err(source) => return Err(io_error("open", &path)(source)),
        };
        let Some(writer) = receiver.resume_writer(&file)? else {
            // Not even the header survived: start over when the next transfer begins.
            drop(file);
            receiver.remove_partial()?;
            return Ok(receiver);
        };
        let mut partial = Partial { file, writer };
        // Cut what follows the intact prefix, so stale bytes never pass for data.
        let keep_bytes = writer
            .header
            .block_pos(writer.written_bytes / u64::from(writer.header.block_bytes));
        if writer.written_bytes < writer.header.data_len {
            partial
                .file
                .set_len(keep_bytes)
                .map_err(io_error("truncate", &path))?;
        }
        receiver.partial = Some(partial);
        if writer.written_bytes == writer.header.data_len {
            match receiver.finish() {
                Ok(()) => receiver.installed_on_open = Some(writer.header.index),
                // All blocks intact but not the announced snapshot: it was discarded, and
                // the leader will be asked for offset 0.
                Err(Error::TransferChecksum { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(receiver)
    }

    /// The transfer in progress, if any, and the offset to resume it from.
    pub fn resume_point(&self) -> Option<ResumePoint> {
        self.partial.as_ref().map(|partial| ResumePoint {
            index: partial.writer.header.index,
            total_len: partial.writer.header.data_len,
            checksum: partial.writer.header.data_crc,
            offset: partial.writer.written_bytes,
        })
    }

    /// The index of a snapshot that [`Self::open`] found fully received and installed.
    pub fn installed_on_open(&self) -> Option<u64> {
        self.installed_on_open
    }

    /// Take one chunk. A chunk at offset 0 of a snapshot other than the one in progress (and
    /// not older) starts a new transfer; a chunk at the expected offset is written; any other
    /// chunk changes nothing. The answer says what to send next, or that the snapshot is
    /// installed. A mismatching whole-snapshot checksum returns
    /// [`Error::TransferChecksum`] and discards the transfer.
    pub fn accept(&mut self, chunk: &SnapshotChunk) -> Result<ChunkOutcome> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        self.check_chunk(chunk)?;
        let current = self.partial.as_ref().map(|p| p.writer.header);
        let same_transfer = current.is_some_and(|header| {
            (header.index, header.data_len, header.data_crc)
                == (chunk.index, chunk.total_len, chunk.checksum)
        });
        if !same_transfer {
            if let (Some(header), Some(partial)) = (current, self.partial.as_ref())
                && chunk.index < header.index
            {
                return Ok(ChunkOutcome::Continue {
                    index: header.index,
                    next_offset: partial.writer.written_bytes,
                });
            }
            if chunk.offset != 0 {
                return Ok(ChunkOutcome::Continue {
                    index: chunk.index,
                    next_offset: 0,
                });
            }
            self.start(chunk)?;
        }
        let path = self.partial_path();
        let Some(partial) = self.partial.as_mut() else {
            unreachable!("start() returns Ok only with a partial transfer");
        };
        if chunk.offset != partial.writer.written_bytes {
            return Ok(ChunkOutcome::Continue {
                index: chunk.index,
                next_offset: partial.writer.written_bytes,
            });
        }
        // Commit progress only after every write succeeded, so a failed write (a full disk)
        // is simply retried from the same offset.
        let mut writer = partial.writer;
        if let Err(source) = writer.write(&mut partial.file, &chunk.data) {
            if is_no_space(&source) {
                return Err(Error::NoSpace { file: path, source });
            }
            return Err(io_error("write", &path)(source));
        }
        debug_assert_eq!(writer.written_bytes, chunk.offset + chunk.data.len() as u64);
        partial.writer = writer;
        if writer.written_bytes < writer.header.data_len {
            return Ok(ChunkOutcome::Continue {
                index: chunk.index,
                next_offset: writer.written_bytes,
            });
        }
        self.finish()?;
        Ok(ChunkOutcome::Installed { index: chunk.index })
    }

    /// Whether an earlier failed sync left durability unknown; if so the node must stop.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn partial_path(&self) -> PathBuf {
        self.dir.join(PARTIAL_NAME)
    }

    fn check_chunk(&self, chunk: &SnapshotChunk) -> Result<()> {
        let invalid = |reason| Error::InvalidChunk {
            index: chunk.index,
            offset: chunk.offset,
            reason,
        };
        if chunk.data.len() > self.options.chunk_bytes_max {
            return Err(invalid("chunk is larger than chunk_bytes_max"));
        }
        if chunk.total_len > self.options.snapshot_bytes_max {
            return Err(invalid("snapshot is larger than snapshot_bytes_max"));
        }
        let end = chunk.offset.checked_add(chunk.data.len() as u64);
        if end.is_none_or(|end| end > chunk.total_len) {
            return Err(invalid("chunk runs past the snapshot's total length"));
        }
        Ok(())
    }

    /// Read the partial file's header and intact blocks; `None` if the header is unusable.
    fn resume_writer(&self, file: &F::File) -> Result<Option<BlockWriter>> {
        let path = self.partial_path();
        let file_bytes = file.len_bytes().map_err(io_error("stat", &path))?;
        if file_bytes < SNAPSHOT_HEADER_BYTES {
            return Ok(None);
        }
        let mut header_bytes = [0u8; SNAPSHOT_HEADER_BYTES as usize];
        file.read_exact_at(&mut header_bytes, 0)
            .map_err(io_error("read", &path))?;
        let Ok(header) = Header::decode(&header_bytes) else {
            return Ok(None);
        };
        if header.data_len > self.options.snapshot_bytes_max {
            return Ok(None);
        }
        // Damage after the intact prefix is what a crash leaves; it is received again.
        let check = verify_blocks(file, &header, None).map_err(io_error("read", &path))?;
        debug_assert!(check.intact_bytes <= header.data_len);
        Ok(Some(BlockWriter::resumed(
            header,
            check.intact_bytes,
            check.data_crc,
        )))
    }

    fn remove_partial(&mut self) -> Result<()> {
        self.partial = None;
        let path = self.partial_path();
        match self.fs.remove(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(io_error("remove", &path)(source)),
        }
    }

    /// Begin receiving the snapshot `chunk` belongs to, replacing any other partial file.
    fn start(&mut self, chunk: &SnapshotChunk) -> Result<()> {
        self.remove_partial()?;
        let path = self.partial_path();
        let mut file = self
            .fs
            .create_new(&path)
            .map_err(io_error("create", &path))?;
        let header = Header {
            index: chunk.index,
            block_bytes: self.options.block_bytes,
            data_len: chunk.total_len,
            data_crc: chunk.checksum,
        };
        if let Err(source) = file.write_all_at(&header.encode(), 0) {
            drop(file);
            self.remove_partial()?;
            if is_no_space(&source) {
                return Err(Error::NoSpace { file: path, source });
            }
            return Err(io_error("write", &path)(source));
        }
        self.partial = Some(Partial {
            file,
            writer: BlockWriter::new(header),
        });
        Ok(())
    }

    /// All bytes are in: verify the whole checksum and install atomically.
    fn finish(&mut self) -> Result<()> {
        let path = self.partial_path();
        let Some(mut partial) = self.partial.take() else {
            return Ok(());
        };
        let header = partial.writer.header;
        debug_assert_eq!(partial.writer.written_bytes, header.data_len);
        let actual_crc = partial.writer.data_crc;
        if actual_crc != header.data_crc {
            drop(partial);
            self.remove_partial()?;
            return Err(Error::TransferChecksum {
                index: header.index,
                expected_crc: header.data_crc,
                actual_crc,
            });
        }
        let file_bytes = partial.file.len_bytes().map_err(io_error("stat", &path))?;
        if file_bytes != header.file_bytes() {
            return Err(corrupt(
                &path,
                file_bytes.min(header.file_bytes()),
                format!(
                    "received file is {file_bytes} bytes, expected {}",
                    header.file_bytes()
                ),
            ));
        }
        install(
            &self.fs,
            &self.dir,
            &mut partial.file,
            &path,
            header.index,
            None,
        )
        .inspect_err(|e| {
            if matches!(e, Error::SyncFailed { .. }) {
                self.poisoned = true;
            }
        })
    }

    /// The snapshot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
