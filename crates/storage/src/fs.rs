//! The file layer: the only way this crate touches a disk.
//!
//! The WAL and the snapshot store are written against [`Fs`], so the same code runs over real
//! files ([`crate::StdFs`]) and over the simulator's faulty disk ([`crate::SimFs`]). The
//! operations are the few a log needs, with the durability meaning spelled out, because the
//! fault model is defined in terms of them: a write is volatile until [`FsFile::sync_data`]
//! returns, and a created, renamed or removed name is volatile until [`Fs::sync_dir`] returns.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

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
        sync_dir_or_fail(fs, parent)?;
    }
    Ok(())
}

/// Syncs `dir`, making the names created, renamed or removed in it durable; a failure is
/// [`Error::SyncFailed`], on which the owner poisons itself.
pub(crate) fn sync_dir_or_fail<F: Fs + ?Sized>(fs: &F, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(|source| Error::SyncFailed {
        file: dir.to_path_buf(),
        source,
    })
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

/// Removes files no longer needed without freeing all their blocks at once, which held
/// fsyncs on the same disk for up to 25 ms for a 64 MiB file here (cut 8 MiB at a time,
/// 6 ms at most). Each file is renamed to its name plus `temp_suffix` (a name the owner's
/// recovery deletes) and the directory synced, so a crash part of the way through never
/// leaves a cut file under its real name; then each is cut down `step_bytes` at a time,
/// every cut synced and followed by `pause`, and unlinked. Renames go in the order given.
/// Returns how many files were removed.
pub(crate) fn remove_gently<F: Fs + ?Sized>(
    fs: &F,
    dir: &Path,
    paths: &[PathBuf],
    temp_suffix: &str,
    step_bytes: u64,
    pause: &mut dyn FnMut(),
) -> Result<usize> {
    let failed = |op: &'static str, file: &Path| {
        let file = file.to_path_buf();
        move |source| Error::Io { op, file, source }
    };
    let mut temps = Vec::with_capacity(paths.len());
    for path in paths {
        let mut name = path.as_os_str().to_owned();
        name.push(temp_suffix);
        let temp = PathBuf::from(name);
        fs.rename(path, &temp).map_err(failed("rename", path))?;
        temps.push(temp);
    }
    if temps.is_empty() {
        return Ok(0);
    }
    sync_dir_or_fail(fs, dir)?;
    let step_bytes = step_bytes.max(1);
    for temp in &temps {
        let mut file = fs.open(temp).map_err(failed("open", temp))?;
        let mut len_bytes = file.len_bytes().map_err(failed("stat", temp))?;
        while len_bytes > 0 {
            len_bytes = len_bytes.saturating_sub(step_bytes);
            file.set_len(len_bytes)
                .and_then(|()| file.sync_data())
                .map_err(failed("truncate", temp))?;
            pause();
        }
        drop(file);
        // The unlink need not be durable: recovery deletes what is left.
        fs.remove(temp).map_err(failed("remove", temp))?;
    }
    Ok(temps.len())
}
