//! The bounded outbound queue of one peer.
//!
//! Paxos tolerates lost messages (every phase is retried) but not a node
//! that runs out of memory because a peer is down. So the queue has a hard
//! bound in frames and in bytes, and when full it drops its oldest frames:
//! newer messages (a higher ballot, a later commit index) supersede older
//! ones, so they are the ones worth keeping.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// A drop-oldest queue of ready-to-write frames, one producer side shared by
/// callers of `send`, one consumer (the peer's writer task).
#[derive(Debug)]
pub(crate) struct FrameQueue {
    state: Mutex<State>,
    ready: Notify,
    frames_max: usize,
    bytes_max: usize,
    dropped_frames: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl FrameQueue {
    /// A queue holding at most `frames_max` frames and `bytes_max` bytes.
    /// Both bounds are at least 1.
    pub(crate) fn new(frames_max: usize, bytes_max: usize) -> Self {
        assert!(
            frames_max >= 1 && bytes_max >= 1,
            "queue bounds must be positive"
        );
        FrameQueue {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            frames_max,
            bytes_max,
            dropped_frames: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue inconsistent
        // (each critical section keeps `bytes` in step), so carry on.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends a frame, dropping the oldest frames until both bounds hold.
    /// Returns how many frames were dropped.
    pub(crate) fn push(&self, frame: Vec<u8>) -> usize {
        let mut dropped = 0;
        {
            let mut state = self.state();
            while !state.frames.is_empty()
                && (state.frames.len() >= self.frames_max
                    || state.bytes + frame.len() > self.bytes_max)
            {
                if let Some(old) = state.frames.pop_front() {
                    state.bytes -= old.len();
                    dropped += 1;
                }
            }
            state.bytes += frame.len();
            state.frames.push_back(frame);
            debug_assert!(state.frames.len() <= self.frames_max);
        }
        if dropped > 0 {
            self.dropped_frames
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        self.ready.notify_one();
        dropped
    }

    /// Moves up to `frames_max` frames from the front into `out`.
    pub(crate) fn pop_batch(&self, out: &mut Vec<Vec<u8>>, frames_max: usize) {
        let mut state = self.state();
        let n = frames_max.min(state.frames.len());
        let mut taken = 0;
        for frame in state.frames.drain(..n) {
            taken += frame.len();
            out.push(frame);
        }
        state.bytes -= taken;
    }

    /// Waits until a frame may be there. Spurious wake-ups are possible: the
    /// caller drains with `pop_batch` and comes back.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Drops every queued frame (counted as dropped); returns how many.
    pub(crate) fn clear(&self) -> usize {
        let dropped = {
            let mut state = self.state();
            let n = state.frames.len();
            state.frames.clear();
            state.bytes = 0;
            n
        };
        self.dropped_frames
            .fetch_add(dropped as u64, Ordering::Relaxed);
        dropped
    }

    /// Frames and bytes queued now.
    pub(crate) fn depth(&self) -> (usize, usize) {
        let state = self.state();
        (state.frames.len(), state.bytes)
    }

    /// Frames dropped so far because the queue was full.
    pub(crate) fn dropped_frames(&self) -> u64 {
        self.dropped_frames.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_oldest_and_stays_bounded() {
        let q = FrameQueue::new(3, 1000);
        for i in 0..10u8 {
            q.push(vec![i]);
        }
        assert_eq!(q.depth(), (3, 3));
        assert_eq!(q.dropped_frames(), 7);
        let mut out = Vec::new();
        q.pop_batch(&mut out, 10);
        assert_eq!(out, vec![vec![7], vec![8], vec![9]]);
        assert_eq!(q.depth(), (0, 0));
    }

    #[test]
    fn byte_bound_holds_and_an_oversized_frame_alone_is_kept() {
        let q = FrameQueue::new(100, 10);
        q.push(vec![0; 4]);
        q.push(vec![0; 4]);
        assert_eq!(q.depth(), (2, 8));
        q.push(vec![0; 4]);
        assert_eq!(q.depth(), (2, 8));
        // A frame above the byte bound evicts everything and then waits alone:
        // the caller bounds single frames by the frame limit.
        q.push(vec![0; 20]);
        assert_eq!(q.depth(), (1, 20));
    }
}
