//! The older versions of every key, in fixed-size chunks shared
//! copy-on-write.
//!
//! A snapshot freezes a copy of the store on the serving thread (see
//! [`crate::store::Store::frozen`]). With history in one vector that copy
//! cost a pass over every record ever kept: 17 ms for 704,000 records on an
//! idle core, and 40-125 ms on a loaded member, during which no request was
//! served. In chunks behind `Arc`s the copy costs a pointer per chunk, and
//! the serving side copies a chunk only when it next changes one that the
//! copy still shares: the last chunk on the next write, older ones only if
//! a compaction reaches them before the snapshot is saved.

use std::sync::Arc;

use crate::store::Record;

/// Records per chunk, as a power of two (positions split with a shift and
/// a mask: a division per lookup slowed encoding by a third): 32,768, about
/// 1.75 MiB of 56-byte records. Above the allocator's mmap threshold
/// (`server::node::tuning`), so a chunk freed by a compaction's rebuild goes
/// back to the kernel at once, as the single vector did (below it, 125 MiB
/// of 11,000,000 records stayed resident until a `malloc_trim`); 336 chunks
/// for 11,000,000 records.
const CHUNK_SHIFT: u32 = 15;

/// A vector of records addressed by position, stored in shared chunks.
#[derive(Clone, Debug)]
pub(crate) struct History {
    chunks: Vec<Arc<Vec<Record>>>,
    len: usize,
    chunk_shift: u32,
}

impl Default for History {
    fn default() -> Self {
        History::with_chunk_shift(CHUNK_SHIFT)
    }
}

impl History {
    /// An empty history with chunks of `1 << chunk_shift` records (tests
    /// use tiny ones, so that a few records cross chunk boundaries).
    pub(crate) fn with_chunk_shift(chunk_shift: u32) -> History {
        debug_assert!(chunk_shift < 32, "chunks of a sane size");
        History {
            chunks: Vec::new(),
            len: 0,
            chunk_shift,
        }
    }

    /// An empty history with the same chunk size.
    pub(crate) fn emptied(&self) -> History {
        History::with_chunk_shift(self.chunk_shift)
    }

    fn chunk_records(&self) -> usize {
        1 << self.chunk_shift
    }

    /// The chunk holding position `i`, and `i`'s place in it.
    fn split(&self, i: usize) -> (usize, usize) {
        (i >> self.chunk_shift, i & (self.chunk_records() - 1))
    }

    /// Records held, dead slots included.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no record is held.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The record at `i`.
    pub(crate) fn get(&self, i: usize) -> Option<&Record> {
        let (chunk, at) = self.split(i);
        self.chunks.get(chunk)?.get(at)
    }

    /// The record at `i`, for change; copies its chunk first if a frozen
    /// copy shares it.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut Record> {
        let (chunk, at) = self.split(i);
        Arc::make_mut(self.chunks.get_mut(chunk)?).get_mut(at)
    }

    /// Appends a record and returns its position.
    pub(crate) fn push(&mut self, record: Record) -> usize {
        let at = self.len;
        let chunk_records = self.chunk_records();
        if self.chunks.last().is_none_or(|c| c.len() == chunk_records) {
            self.chunks
                .push(Arc::new(Vec::with_capacity(chunk_records)));
        }
        if let Some(last) = self.chunks.last_mut() {
            if Arc::strong_count(last) > 1 || Arc::weak_count(last) > 0 {
                // Shared with a frozen copy: copy it at its full capacity,
                // so that filling it never reallocates.
                let mut own = Vec::with_capacity(chunk_records);
                own.extend_from_slice(last);
                *last = Arc::new(own);
            }
            Arc::make_mut(last).push(record);
        }
        self.len += 1;
        debug_assert_eq!(
            self.chunks.len(),
            self.len.div_ceil(chunk_records),
            "every chunk but the last is full"
        );
        at
    }

    /// Every record, in position order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Record> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Every record, for change; copies every chunk a frozen copy shares.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Record> {
        self.chunks
            .iter_mut()
            .flat_map(|c| Arc::make_mut(c).iter_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NONE;
    use crate::values::ValueRef;

    fn record(rev: i64) -> Record {
        Record {
            mod_revision: rev,
            create_revision: 1,
            version: rev,
            lease: 0,
            sub: 0,
            value: ValueRef::default(),
            prev: NONE,
        }
    }

    #[test]
    fn positions_run_across_chunks() {
        let mut h = History::with_chunk_shift(1);
        for rev in 1..=10 {
            assert_eq!(h.push(record(rev)), (rev - 1) as usize);
        }
        assert_eq!(h.len(), 10);
        assert_eq!(h.get(7).map(|r| r.mod_revision), Some(8));
        assert!(h.get(10).is_none());
        let revs: Vec<i64> = h.iter().map(|r| r.mod_revision).collect();
        assert_eq!(revs, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn a_copy_keeps_its_records_while_the_original_changes() {
        let mut h = History::with_chunk_shift(2);
        for rev in 1..=6 {
            h.push(record(rev));
        }
        let copy = h.clone();
        // Into the shared, half-full last chunk, and into a full one.
        h.push(record(7));
        if let Some(r) = h.get_mut(1) {
            r.mod_revision = 0;
        }
        for r in h.iter_mut().skip(4) {
            r.version = -1;
        }
        let original: Vec<(i64, i64)> = h.iter().map(|r| (r.mod_revision, r.version)).collect();
        assert_eq!(
            original,
            vec![(1, 1), (0, 2), (3, 3), (4, 4), (5, -1), (6, -1), (7, -1)]
        );
        let copied: Vec<(i64, i64)> = copy.iter().map(|r| (r.mod_revision, r.version)).collect();
        assert_eq!(copied, (1..=6).map(|r| (r, r)).collect::<Vec<_>>());
        // The original's last chunk was copied at full capacity.
        assert_eq!(h.chunks[1].capacity(), 4);
    }
}
