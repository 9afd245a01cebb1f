//! [`Fs`] over real files, for production and for the crash tests on a real disk.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::fs::{Fs, FsFile};

/// Zeros written per call while preallocating; bounds the buffer, not the file.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// The real file system (Unix). `sync_data` is `fdatasync`, `sync_all` is `fsync`, and
/// `sync_dir` fsyncs the directory itself, which is what makes a create or rename durable.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

/// A real open file.
#[derive(Debug)]
pub struct StdFile {
    file: File,
}

impl FsFile for StdFile {
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn write_all_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.file, data, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }

    fn set_len(&mut self, len_bytes: u64) -> io::Result<()> {
        self.file.set_len(len_bytes)
    }

    fn allocate(&mut self, len_bytes: u64) -> io::Result<()> {
        // Zeros are written for real rather than with fallocate(2): ext4 and xfs keep
        // fallocated extents "unwritten", and the first write into one changes metadata, so
        // each fdatasync would flush the journal too. Written zeros make every later WAL
        // write a pure data overwrite (measured: 113 us vs 354 us per 68 KiB fdatasync here).
        let mut offset = self.len_bytes()?;
        let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES];
        while offset < len_bytes {
            let chunk_bytes = (len_bytes - offset).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
            self.write_all_at(&zeros[..chunk_bytes], offset)?;
            offset += chunk_bytes as u64;
        }
        debug_assert!(self.len_bytes()? >= len_bytes);
        Ok(())
    }
}

impl Fs for StdFs {
    type File = StdFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn create_new(&self, path: &Path) -> io::Result<StdFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(StdFile { file })
    }

    fn open(&self, path: &Path) -> io::Result<StdFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(StdFile { file })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            // Names that are not UTF-8 cannot be ours; skip them rather than fail.
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}
