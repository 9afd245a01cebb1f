//! Where value bytes live: an arena of large segments.
//!
//! Values are appended to the active segment; a record points at its bytes
//! with a [`ValueRef`] (segment, offset, length): 12 bytes instead of a
//! 16-byte box plus the allocator's per-chunk overhead. The reason is
//! resident memory, not only size: freed values that were small heap
//! chunks would stay resident as long as any neighbour on their page lives
//! (the allocator cannot return a partly used page), and after a compaction
//! most pages would still hold a survivor. Segments are freed whole instead:
//! a segment with no live value left is dropped at once, and one mostly
//! dead is evacuated (its live values copied to the active segment) and
//! then dropped. Segments after the first are 64 MiB, above glibc's mmap
//! threshold, so freeing one returns its memory to the kernel at once.

use std::sync::Arc;

/// Segment size once the store is larger than one segment.
pub(crate) const SEGMENT_BYTES: usize = 64 << 20;

/// Where a value's bytes are; the empty value needs no bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ValueRef {
    seg: u32,
    off: u32,
    len: u32,
}

impl ValueRef {
    /// Length in bytes.
    pub(crate) fn len(self) -> usize {
        self.len as usize
    }

    /// Segment the bytes are in.
    pub(crate) fn segment(self) -> usize {
        self.seg as usize
    }
}

#[derive(Clone, Debug, Default)]
struct Segment {
    /// Shared with frozen copies of the store ([`Values::seal`]); only the
    /// active segment is ever written, and it is never shared.
    bytes: Arc<Vec<u8>>,
    /// Bytes of this segment still referenced by a record.
    live: usize,
}

/// The arena.
#[derive(Clone, Debug)]
pub(crate) struct Values {
    segments: Vec<Segment>,
    /// Segment new values go to.
    active: usize,
    /// Size of a full segment ([`SEGMENT_BYTES`]; tests use tiny ones to
    /// exercise evacuation).
    segment_bytes: usize,
    /// The active segment may be shared: the next value opens a new one.
    sealed: bool,
}

impl Default for Values {
    fn default() -> Self {
        Values::with_segment_bytes(SEGMENT_BYTES)
    }
}

impl Values {
    /// An empty arena with segments of `segment_bytes`.
    pub(crate) fn with_segment_bytes(segment_bytes: usize) -> Values {
        Values {
            segments: Vec::new(),
            active: 0,
            segment_bytes: segment_bytes.max(1),
            sealed: false,
        }
    }

    /// The bytes of a value.
    pub(crate) fn get(&self, r: ValueRef) -> &[u8] {
        if r.len == 0 {
            return &[];
        }
        let start = r.off as usize;
        let bytes = self
            .segments
            .get(r.seg as usize)
            .and_then(|s| s.bytes.get(start..start + r.len as usize));
        debug_assert!(bytes.is_some(), "a value ref points into a live segment");
        bytes.unwrap_or(&[])
    }

    /// Stores a value.
    pub(crate) fn store(&mut self, value: &[u8]) -> ValueRef {
        if value.is_empty() {
            return ValueRef::default();
        }
        let seg = self.segment_with_room(value.len());
        let segment = &mut self.segments[seg];
        let off = segment.bytes.len();
        debug_assert_eq!(
            Arc::strong_count(&segment.bytes),
            1,
            "the active segment is never shared"
        );
        Arc::make_mut(&mut segment.bytes).extend_from_slice(value);
        segment.live += value.len();
        // Segments hold at most SEGMENT_BYTES, or one value larger than
        // that; values are bounded by the request size limit.
        debug_assert!(off <= u32::MAX as usize && value.len() <= u32::MAX as usize);
        ValueRef {
            seg: seg as u32,
            off: off as u32,
            len: value.len() as u32,
        }
    }

    fn segment_with_room(&mut self, need: usize) -> usize {
        if let Some(active) = self.segments.get(self.active)
            && !self.sealed
        {
            let len = active.bytes.len();
            if len == 0 || len + need <= self.segment_bytes {
                return self.active;
            }
        }
        self.sealed = false;
        // A new segment: the first grows by doubling (small stores stay
        // small); later ones take their full size at once.
        let bytes = if self.segments.iter().any(|s| s.bytes.capacity() > 0) {
            Vec::with_capacity(self.segment_bytes.max(need))
        } else {
            Vec::new()
        };
        let segment = Segment {
            bytes: Arc::new(bytes),
            live: 0,
        };
        let free = self
            .segments
            .iter()
            .position(|s| s.bytes.capacity() == 0 && s.live == 0);
        self.active = match free {
            Some(slot) => {
                self.segments[slot] = segment;
                slot
            }
            None => {
                self.segments.push(segment);
                self.segments.len() - 1
            }
        };
        self.active
    }

    /// A value is no longer referenced.
    pub(crate) fn release(&mut self, r: ValueRef) {
        if r.len == 0 {
            return;
        }
        if let Some(s) = self.segments.get_mut(r.seg as usize) {
            debug_assert!(s.live >= r.len as usize);
            s.live = s.live.saturating_sub(r.len as usize);
        }
    }

    /// Frees segments with nothing live, and returns the segments worth
    /// evacuating (less than half live) as a mask by segment number, or
    /// `None` if there are none. The active segment is never chosen.
    pub(crate) fn reclaim(&mut self) -> Option<Vec<bool>> {
        let active = self.active;
        for (i, s) in self.segments.iter_mut().enumerate() {
            if i != active && s.live == 0 && s.bytes.capacity() > 0 {
                s.bytes = Arc::default();
            }
        }
        let mask: Vec<bool> = self
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| i != active && s.live > 0 && s.live * 2 < s.bytes.len())
            .collect();
        mask.iter().any(|&m| m).then_some(mask)
    }

    /// Moves a value out of an evacuated segment into the active one.
    pub(crate) fn relocate(&mut self, r: ValueRef) -> ValueRef {
        let bytes = self.get(r).to_vec();
        self.release(r);
        self.store(&bytes)
    }

    /// Drops the evacuated segments (every value moved out).
    pub(crate) fn drop_segments(&mut self, mask: &[bool]) {
        for (s, &evacuated) in self.segments.iter_mut().zip(mask) {
            if evacuated {
                debug_assert_eq!(s.live, 0, "every live value was moved out");
                s.bytes = Arc::default();
                s.live = 0;
            }
        }
    }

    /// Stops writing to the active segment, so that a copy of the arena
    /// made now shares every segment and no later write touches them: a
    /// frozen copy costs a reference per segment, not the bytes.
    pub(crate) fn seal(&mut self) {
        self.sealed = true;
    }

    /// Bytes held by segments (capacity), for statistics.
    pub(crate) fn held_bytes(&self) -> usize {
        self.segments.iter().map(|s| s.bytes.capacity()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_arena_never_writes_to_a_segment_a_copy_holds() {
        let mut values = Values::with_segment_bytes(64);
        let a = values.store(b"first");
        values.seal();
        let copy = values.clone();
        let b = values.store(b"second");
        assert_ne!(a.segment(), b.segment(), "a new value opens a new segment");
        // Evacuate the first segment in the original: the copy still reads it.
        let moved = values.relocate(a);
        if let Some(mask) = values.reclaim() {
            values.drop_segments(&mask);
        }
        assert_eq!(values.get(moved), b"first");
        assert_eq!(values.get(b), b"second");
        assert_eq!(copy.get(a), b"first");
        // Unsealed, writes go on in the active segment.
        let c = values.store(b"third");
        assert_eq!(c.segment(), moved.segment());
    }
}
