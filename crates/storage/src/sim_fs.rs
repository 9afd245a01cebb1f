//! [`Fs`] in memory with a fault model, for the deterministic simulator and the crash tests.
//!
//! Each file keeps two images: the durable one (what survives a crash) and the current one
//! (what reads see), plus the list of writes made since the last sync. Each directory keeps
//! the list of entry changes made since its last `sync_dir`. [`SimFs::crash`] throws away a
//! random suffix of both lists, tearing the last write it keeps, exactly like a machine that
//! lost power with dirty pages in its cache. Faults are injected only through explicit calls
//! and a caller-provided random word: no clock, no thread, no OS randomness, so a simulated
//! run replays from its seed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::fs::{Fs, FsFile};

/// Unsynced operations kept per file; older ones are written back (made durable), as a
/// kernel writes back dirty pages on its own. Bounds memory in long simulations.
const PENDING_OPS_PER_FILE_MAX: usize = 4096;

/// Unsynced entry changes kept per directory; older ones are written back.
const PENDING_DIR_OPS_PER_DIR_MAX: usize = 4096;

/// An in-memory, deterministic, faultable file system. Cloning gives another handle to the
/// same disk, so the simulator can keep one to inject faults while the WAL owns another.
#[derive(Debug, Clone, Default)]
pub struct SimFs {
    state: Rc<RefCell<SimState>>,
}

/// A handle to a file in a [`SimFs`]. It goes stale at the next crash, like a process's
/// file descriptors do when the machine reboots.
#[derive(Debug)]
pub struct SimFile {
    state: Rc<RefCell<SimState>>,
    inode: u64,
    boot: u64,
}

/// Bytes of a file: `data` holds the prefix that was ever written; the rest up to `len_bytes`
/// reads as zeros. Preallocated segments thus cost no memory until written.
#[derive(Debug, Clone, Default)]
struct Content {
    len_bytes: u64,
    data: Vec<u8>,
}

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen { len_bytes: u64 },
}

#[derive(Debug, Clone)]
enum DirOp {
    Link { name: PathBuf, inode: u64 },
    Unlink { name: PathBuf },
    Rename { from: PathBuf, to: PathBuf },
}

#[derive(Debug, Default)]
struct Inode {
    durable: Content,
    current: Content,
    pending: Vec<FileOp>,
}

#[derive(Debug, Default)]
struct SimState {
    /// Names as the running system sees them.
    names: BTreeMap<PathBuf, u64>,
    /// Names as they would be found after a crash.
    durable_names: BTreeMap<PathBuf, u64>,
    /// Entry changes not yet made durable, per parent directory, oldest first.
    pending_dir_ops: BTreeMap<PathBuf, Vec<DirOp>>,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    capacity_bytes: Option<u64>,
    /// Syncs that still succeed before the armed failures.
    syncs_to_pass: u32,
    /// Syncs that fail once `syncs_to_pass` is spent.
    syncs_to_fail: u32,
    /// Incremented by every crash; handles from an earlier boot are stale.
    boot: u64,
}

impl Content {
    fn write(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset as usize + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset as usize..end].copy_from_slice(bytes);
        self.len_bytes = self.len_bytes.max(end as u64);
        debug_assert!(self.data.len() as u64 <= self.len_bytes);
    }

    fn set_len(&mut self, len_bytes: u64) {
        self.len_bytes = len_bytes;
        if self.data.len() as u64 > len_bytes {
            self.data.truncate(len_bytes as usize);
        }
    }

    fn apply(&mut self, op: &FileOp) {
        match op {
            FileOp::Write { offset, data } => self.write(*offset, data),
            FileOp::SetLen { len_bytes } => self.set_len(*len_bytes),
        }
    }

    fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|end| *end <= self.len_bytes)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end"))?;
        let start = (offset as usize).min(self.data.len());
        let stored_end = (end as usize).min(self.data.len());
        let stored_bytes = stored_end - start;
        buf[..stored_bytes].copy_from_slice(&self.data[start..stored_end]);
        buf[stored_bytes..].fill(0);
        debug_assert!(end <= self.len_bytes);
        Ok(())
    }

    fn flip_bit(&mut self, offset: u64, bit: u8) {
        if offset >= self.len_bytes {
            return;
        }
        if self.data.len() as u64 <= offset {
            self.data.resize(offset as usize + 1, 0);
        }
        self.data[offset as usize] ^= 1 << (bit % 8);
    }
}

/// splitmix64: a tiny, well-mixed generator for turning one caller word into many choices.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough value in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0);
        self.next() % bound
    }
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn apply_dir_op(names: &mut BTreeMap<PathBuf, u64>, op: &DirOp) {
    match op {
        DirOp::Link { name, inode } => {
            names.insert(name.clone(), *inode);
        }
        DirOp::Unlink { name } => {
            names.remove(name);
        }
        DirOp::Rename { from, to } => {
            if let Some(inode) = names.remove(from) {
                names.insert(to.clone(), inode);
            }
        }
    }
}

impl SimState {
    fn used_bytes(&self) -> u64 {
        let mut live: Vec<u64> = self.names.values().copied().collect();
        live.sort_unstable();
        live.dedup();
        live.iter()
            .filter_map(|inode| self.inodes.get(inode))
            .map(|inode| inode.current.len_bytes)
            .sum()
    }

    fn free_bytes(&self) -> u64 {
        match self.capacity_bytes {
            None => u64::MAX,
            Some(capacity) => capacity.saturating_sub(self.used_bytes()),
        }
    }

    fn push_dir_op(&mut self, dir: PathBuf, op: DirOp) {
        let ops = self.pending_dir_ops.entry(dir).or_default();
        ops.push(op);
        if ops.len() > PENDING_DIR_OPS_PER_DIR_MAX {
            let oldest = ops.remove(0);
            apply_dir_op(&mut self.durable_names, &oldest);
        }
    }

    fn push_file_op(&mut self, inode: u64, op: FileOp) {
        if let Some(node) = self.inodes.get_mut(&inode) {
            node.current.apply(&op);
            node.pending.push(op);
            if node.pending.len() > PENDING_OPS_PER_FILE_MAX {
                let oldest = node.pending.remove(0);
                node.durable.apply(&oldest);
            }
        }
    }

    /// Drop inodes that no name, current or durable, refers to.
    /// Drops inodes no name can ever reach again. A link still pending in a
    /// directory counts: a crash may make it durable (create, then unlink,
    /// then a crash that keeps only the create), so its inode must survive.
    fn collect_garbage(&mut self) {
        let names = &self.names;
        let durable = &self.durable_names;
        let pending = &self.pending_dir_ops;
        self.inodes.retain(|inode, _| {
            names.values().any(|i| i == inode)
                || durable.values().any(|i| i == inode)
                || pending
                    .values()
                    .flatten()
                    .any(|op| matches!(op, DirOp::Link { inode: linked, .. } if linked == inode))
        });
    }

    fn take_sync_failure(&mut self) -> io::Result<()> {
        if self.syncs_to_fail == 0 {
            return Ok(());
        }
        if self.syncs_to_pass > 0 {
            self.syncs_to_pass -= 1;
            return Ok(());
        }
        if self.syncs_to_fail > 0 {
            self.syncs_to_fail -= 1;
            return Err(io::Error::other("simulated fsync failure (EIO)"));
        }
        Ok(())
    }

    fn inode_mut(&mut self, inode: u64, boot: u64) -> io::Result<&mut Inode> {
        if boot != self.boot {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "stale file handle from before a simulated crash",
            ));
        }
        self.inodes
            .get_mut(&inode)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "file was removed"))
    }
}

impl SimFs {
    /// A new, empty disk with unlimited capacity and no faults armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulate a power loss and reboot. For every file, a random prefix of its unsynced
    /// writes survives and the last surviving write may be torn (only a prefix of its bytes
    /// reached the disk); for every directory, a random prefix of its unsynced entry changes
    /// survives. Everything synced survives. All choices come from `rng_word`. Open handles
    /// go stale; reopen through the file system.
    pub fn crash(&self, rng_word: u64) {
        let mut rng = SplitMix(rng_word);
        let mut state = self.state.borrow_mut();
        for node in state.inodes.values_mut() {
            let pending = std::mem::take(&mut node.pending);
            let kept_ops = rng.below(pending.len() as u64 + 1) as usize;
            let tear_last = rng.below(2) == 0;
            for (i, op) in pending.iter().take(kept_ops).enumerate() {
                match op {
                    FileOp::Write { offset, data } if tear_last && i + 1 == kept_ops => {
                        let kept_bytes = rng.below(data.len() as u64 + 1) as usize;
                        node.durable.write(*offset, &data[..kept_bytes]);
                    }
                    _ => node.durable.apply(op),
                }
            }
            node.current = node.durable.clone();
        }
        let pending_dirs = std::mem::take(&mut state.pending_dir_ops);
        for ops in pending_dirs.values() {
            let kept_ops = rng.below(ops.len() as u64 + 1) as usize;
            for op in ops.iter().take(kept_ops) {
                apply_dir_op(&mut state.durable_names, op);
            }
        }
        state.names = state.durable_names.clone();
        state.collect_garbage();
        state.boot += 1;
    }

    /// Flip one bit of a file, in what reads see and in what survives a crash: media
    /// corruption. Offsets past the end are ignored.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let inode = *state.names.get(path).ok_or_else(|| not_found(path))?;
        let node = state
            .inodes
            .get_mut(&inode)
            .ok_or_else(|| not_found(path))?;
        node.current.flip_bit(offset, bit);
        node.durable.flip_bit(offset, bit);
        Ok(())
    }

    /// Limit the disk to `capacity_bytes` (`None`: unlimited). Growing a file past it fails
    /// with `StorageFull`, after writing the prefix that fits, as a real full disk does.
    pub fn set_capacity_bytes(&self, capacity_bytes: Option<u64>) {
        self.state.borrow_mut().capacity_bytes = capacity_bytes;
    }

    /// Make the next `count` syncs (file or directory) fail with an I/O error, changing
    /// nothing durable.
    pub fn fail_next_syncs(&self, count: u32) {
        self.fail_syncs(0, count);
    }

    /// Let the next `skip` syncs (file or directory) succeed, then fail `count`: aims a
    /// failure at one step of a multi-sync operation such as a segment roll.
    pub fn fail_syncs(&self, skip: u32, count: u32) {
        let mut state = self.state.borrow_mut();
        state.syncs_to_pass = skip;
        state.syncs_to_fail = count;
    }

    /// Bytes used by the files that currently have a name.
    pub fn used_bytes(&self) -> u64 {
        self.state.borrow().used_bytes()
    }

    /// The current content of a file, for tests and checkers; `None` if it does not exist.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        let node = state.inodes.get(state.names.get(path)?)?;
        let mut bytes = vec![0u8; node.current.len_bytes as usize];
        node.current.read(&mut bytes, 0).ok()?;
        Some(bytes)
    }
}

impl SimFile {
    fn with_inode<T>(&self, f: impl FnOnce(&mut Inode) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.state.borrow_mut();
        f(state.inode_mut(self.inode, self.boot)?)
    }

    /// Apply a growing write, writing only the prefix that fits on the disk.
    fn grow_op(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let free_bytes = state.free_bytes();
        let len_bytes = state.inode_mut(self.inode, self.boot)?.current.len_bytes;
        let end = offset + data.len() as u64;
        let growth_bytes = end.saturating_sub(len_bytes);
        if growth_bytes <= free_bytes {
            state.push_file_op(
                self.inode,
                FileOp::Write {
                    offset,
                    data: data.to_vec(),
                },
            );
            return Ok(());
        }
        let fits_end = len_bytes + free_bytes;
        if fits_end > offset {
            let prefix = data[..(fits_end - offset) as usize].to_vec();
            state.push_file_op(
                self.inode,
                FileOp::Write {
                    offset,
                    data: prefix,
                },
            );
        }
        Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "simulated disk full",
        ))
    }
}

impl FsFile for SimFile {
    fn len_bytes(&self) -> io::Result<u64> {
        self.with_inode(|node| Ok(node.current.len_bytes))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.with_inode(|node| node.current.read(buf, offset))
    }

    fn write_all_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        self.grow_op(offset, data)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.inode_mut(self.inode, self.boot)?;
        state.take_sync_failure()?;
        let node = state.inode_mut(self.inode, self.boot)?;
        for op in std::mem::take(&mut node.pending) {
            node.durable.apply(&op);
        }
        debug_assert_eq!(node.durable.len_bytes, node.current.len_bytes);
        Ok(())
    }

    fn sync_all(&mut self) -> io::Result<()> {
        // The model has no metadata apart from the length, which sync_data covers already.
        self.sync_data()
    }

    fn set_len(&mut self, len_bytes: u64) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        let current_bytes = state.inode_mut(self.inode, self.boot)?.current.len_bytes;
        if len_bytes > current_bytes && len_bytes - current_bytes > state.free_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "simulated disk full",
            ));
        }
        state.push_file_op(self.inode, FileOp::SetLen { len_bytes });
        Ok(())
    }

    fn allocate(&mut self, len_bytes: u64) -> io::Result<()> {
        // Like fallocate(2): all or nothing.
        if len_bytes <= self.len_bytes()? {
            return Ok(());
        }
        self.set_len(len_bytes)
    }
}

impl Fs for SimFs {
    type File = SimFile;

    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        // Directories are implicit: a file's directory is its path's parent.
        Ok(())
    }

    fn create_new(&self, path: &Path) -> io::Result<SimFile> {
        let mut state = self.state.borrow_mut();
        if state.names.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: already exists", path.display()),
            ));
        }
        let inode = state.next_inode;
        state.next_inode += 1;
        state.inodes.insert(inode, Inode::default());
        state.names.insert(path.to_path_buf(), inode);
        state.push_dir_op(
            parent_of(path),
            DirOp::Link {
                name: path.to_path_buf(),
                inode,
            },
        );
        Ok(SimFile {
            state: Rc::clone(&self.state),
            inode,
            boot: state.boot,
        })
    }

    fn open(&self, path: &Path) -> io::Result<SimFile> {
        let state = self.state.borrow();
        let inode = *state.names.get(path).ok_or_else(|| not_found(path))?;
        Ok(SimFile {
            state: Rc::clone(&self.state),
            inode,
            boot: state.boot,
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let dir = parent_of(from);
        if dir != parent_of(to) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "SimFs renames only within one directory",
            ));
        }
        let mut state = self.state.borrow_mut();
        let inode = state.names.remove(from).ok_or_else(|| not_found(from))?;
        state.names.insert(to.to_path_buf(), inode);
        state.push_dir_op(
            dir,
            DirOp::Rename {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
            },
        );
        state.collect_garbage();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.names.remove(path).ok_or_else(|| not_found(path))?;
        state.push_dir_op(
            parent_of(path),
            DirOp::Unlink {
                name: path.to_path_buf(),
            },
        );
        state.collect_garbage();
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.borrow();
        Ok(state
            .names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.borrow_mut();
        state.take_sync_failure()?;
        let ops = state.pending_dir_ops.remove(dir).unwrap_or_default();
        for op in &ops {
            apply_dir_op(&mut state.durable_names, op);
        }
        state.collect_garbage();
        Ok(())
    }
}

#[cfg(test)]
mod garbage_tests {
    use super::*;

    #[test]
    fn a_file_created_and_removed_before_a_crash_that_keeps_only_its_creation_is_readable() {
        // Try many crash words: some keep the create and drop the unlink.
        for word in 0..64u64 {
            let fs = SimFs::new();
            let dir = Path::new("/d");
            fs.create_dir_all(dir).expect("dir");
            fs.sync_dir(Path::new("/")).expect("sync root");
            let path = dir.join("f");
            let mut file = fs.create_new(&path).expect("create");
            file.write_all_at(b"abc", 0).expect("write");
            drop(file);
            fs.remove(&path).expect("remove");
            fs.crash(word);
            if let Ok(file) = fs.open(&path) {
                // The name survived: the file must be there to read, not a dangling entry.
                file.len_bytes().expect("a surviving name has its file");
            }
        }
    }
}
