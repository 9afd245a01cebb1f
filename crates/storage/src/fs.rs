//! The file layer: the only way this crate touches a disk.
//!
//! The WAL and the snapshot store are written against [`Fs`], so the same code runs over real
//! files ([`crate::StdFs`]) and over the simulator's faulty disk ([`crate::SimFs`]). The
//! operations are the few a log needs, with the durability meaning spelled out, because the
//! fault model is defined in terms of them: a write is volatile until [`FsFile::sync_data`]
//! returns, and a created, renamed or removed name is volatile until [`Fs::sync_dir`] returns.

use std::fmt::Debug;
use std::io;
use std::path::Path;

use crate::error::{Error, Result};

/// An open file. Offsets are absolute; there is no cursor, so no hidden state to get wrong.
pub trait FsFile: Debug {
    /// Current length of the file in bytes, including unsynced writes.
    fn len_bytes(&self) -> io::Result<u64>;

    /// Fill `buf` from `offset`; fails with `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Write all of `data` at `offset`, extending the file if needed. Volatile until synced.
    /// On a full disk a prefix may have been written before the error.
    fn write_all_at(&mut self, data: &[u8], offset: u64) -> io::Result<()>;

    /// Make the file's data (and the metadata needed to read it back) durable: fdatasync.
    fn sync_data(&mut self) -> io::Result<()>;

    /// Make the file's data and all its metadata durable: fsync.
    fn sync_all(&mut self) -> io::Result<()>;

    /// Truncate or extend (with zeros) to exactly `len_bytes`. Volatile until synced.
    fn set_len(&mut self, len_bytes: u64) -> io::Result<()>;

    /// Extend the file with zeros to `len_bytes` and reserve the space, so later writes below
    /// `len_bytes` neither fail for lack of space nor need a metadata flush to become durable.
    /// Does nothing if the file is already that long. Volatile until synced.
    fn allocate(&mut self, len_bytes: u64) -> io::Result<()>;
}

/// A directory tree of files. Names are volatile until the parent directory is synced.
pub trait Fs: Debug {
    /// The open-file handle type.
    type File: FsFile;

    /// Create `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Create a new, empty file; fails with `AlreadyExists` if `path` exists.
    fn create_new(&self, path: &Path) -> io::Result<Self::File>;

    /// Open an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Self::File>;

    /// Atomically replace `to` with `from` (both in the same directory).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Remove a file.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Names (not paths) of the files in `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Make the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// Create `dir` if missing and sync its parent, so that a new node's directory (and so every
/// record later acknowledged in it) cannot vanish in a crash. Grandparents created on the way
/// are not synced: deployment creates those.
pub(crate) fn ensure_dir<F: Fs + ?Sized>(fs: &F, dir: &Path) -> Result<()> {
    fs.create_dir_all(dir).map_err(|source| Error::Io {
        op: "create directory",
        file: dir.to_path_buf(),
        source,
    })?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs.sync_dir(parent).map_err(|source| Error::SyncFailed {
            file: parent.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Create `path` afresh for writing, removing what a crash may have left under that
/// (temporary) name.
pub(crate) fn create_fresh<F: Fs + ?Sized>(fs: &F, path: &Path) -> Result<F::File> {
    let failed = |op: &'static str| {
        move |source| Error::Io {
            op,
            file: path.to_path_buf(),
            source,
        }
    };
    match fs.remove(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(failed("remove")(source)),
    }
    fs.create_new(path).map_err(failed("create"))
}
