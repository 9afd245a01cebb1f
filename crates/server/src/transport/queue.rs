//! The bounded outbound queue of one peer, and who writes it to the socket.
//!
//! Paxos tolerates lost messages (every phase is retried) but not a node
//! that runs out of memory because a peer is down. So the queue has a hard
//! bound in frames and in bytes, and when full it drops its oldest frames:
//! newer messages (a higher ballot, a later commit index) supersede older
//! ones, so they are the ones worth keeping.
//!
//! Two writers share the connection, one at a time under the queue's lock:
//! - the sender itself, when nothing is being written: it writes what is
//!   queued straight into the socket without blocking ([`FrameQueue::kick`]).
//!   On a replicated write's critical path that saves a wake-up of another
//!   thread on each member the message passes.
//! - the peer's writer task otherwise: it takes over whatever the socket
//!   would not take at once, and everything queued while it writes.
//!
//! Bytes go out in queue order and frames never interleave: a frame cut
//! short by a full socket is finished (by the writer task) before anything
//! else is written.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Frames gathered into one direct write.
const DIRECT_FRAMES_MAX: usize = 64;

/// A drop-oldest queue of ready-to-write frames, shared by callers of
/// `send` and the peer's writer task.
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
    /// The open connection, while there is one.
    stream: Option<Arc<TcpStream>>,
    /// The writer task holds bytes taken from the queue and not yet
    /// written; nobody else may write until it is done.
    writing: bool,
    /// The unwritten end of a frame a direct write cut short; the writer
    /// task writes it before anything else. Never dropped for room: the
    /// peer would read garbage.
    partial: Option<Vec<u8>>,
}

/// What a direct write put into the socket.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// Frames taken from the queue (a frame cut short counts: the writer
    /// task finishes it).
    pub(crate) frames: usize,
    /// Bytes written.
    pub(crate) bytes: usize,
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
    /// Returns how many frames were dropped. The frame waits for
    /// [`FrameQueue::kick`].
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
        dropped
    }

    /// Gets what is queued on its way: written here and now when the
    /// connection is idle and the socket takes it, else handed to the
    /// writer task. Never blocks.
    pub(crate) fn kick(&self) -> Written {
        let mut written = Written::default();
        let mut state = self.state();
        loop {
            if state.frames.is_empty() {
                return written;
            }
            let result = {
                let st = &*state;
                let Some(stream) = st.stream.as_ref().filter(|_| !st.writing) else {
                    break;
                };
                let mut slices = [IoSlice::new(&[]); DIRECT_FRAMES_MAX];
                let mut n = 0;
                for (slot, frame) in slices.iter_mut().zip(&st.frames) {
                    *slot = IoSlice::new(frame);
                    n += 1;
                }
                stream.try_write_vectored(&slices[..n])
            };
            match result {
                Ok(0) | Err(_) => break,
                Ok(mut bytes) => {
                    written.bytes += bytes;
                    while bytes > 0 {
                        let Some(mut frame) = state.frames.pop_front() else {
                            break;
                        };
                        state.bytes -= frame.len();
                        written.frames += 1;
                        if bytes < frame.len() {
                            frame.drain(..bytes);
                            debug_assert!(state.partial.is_none());
                            state.partial = Some(frame);
                            state.writing = true;
                            break;
                        }
                        bytes -= frame.len();
                    }
                    if state.writing {
                        break;
                    }
                }
            }
        }
        drop(state);
        // The socket is full, failed, busy or not there: the writer task
        // takes it from here (and finds out about a failure itself).
        self.ready.notify_one();
        written
    }

    /// For the writer task: appends to `out` the rest of a cut-short frame
    /// and up to `frames_max` queued frames, and marks the connection busy
    /// until a call finds nothing. Returns the frames taken.
    pub(crate) fn take_for_writer(&self, out: &mut Vec<u8>, frames_max: usize) -> usize {
        let mut state = self.state();
        let rest = state.partial.take();
        if let Some(rest) = &rest {
            out.extend_from_slice(rest);
        }
        let n = frames_max.min(state.frames.len());
        let mut taken = 0;
        for frame in state.frames.drain(..n) {
            taken += frame.len();
            out.extend_from_slice(&frame);
        }
        state.bytes -= taken;
        state.writing = rest.is_some() || n > 0;
        n
    }

    /// A connection opened: direct writes may use it.
    pub(crate) fn attach(&self, stream: Arc<TcpStream>) {
        let mut state = self.state();
        state.stream = Some(stream);
        state.writing = false;
        state.partial = None;
    }

    /// The connection closed. A cut-short frame is dropped with it: the
    /// next connection starts on a frame boundary.
    pub(crate) fn detach(&self) {
        let mut state = self.state();
        state.stream = None;
        state.writing = false;
        state.partial = None;
    }

    /// Waits until a frame may be there. Spurious wake-ups are possible: the
    /// caller drains with `take_for_writer` and comes back.
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
        assert_eq!(q.take_for_writer(&mut out, 10), 3);
        assert_eq!(out, vec![7, 8, 9]);
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

    /// Connected loopback sockets: (the side the queue writes, the reader).
    async fn socket_pair() -> (Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let dialed = dialed.expect("connect");
        let (accepted, _) = accepted.expect("accept");
        (Arc::new(dialed), accepted)
    }

    fn frame(tag: u8, len: usize) -> Vec<u8> {
        vec![tag; len]
    }

    #[tokio::test]
    async fn an_idle_connection_is_written_directly_in_queue_order() {
        use tokio::io::AsyncReadExt;
        let (writer, mut reader) = socket_pair().await;
        let q = FrameQueue::new(100, 1 << 20);
        // Nothing attached: the frame waits for the writer task.
        q.push(frame(1, 3));
        assert_eq!(q.kick(), Written::default());
        q.attach(Arc::clone(&writer));
        q.push(frame(2, 2));
        assert_eq!(
            q.kick(),
            Written {
                frames: 2,
                bytes: 5
            }
        );
        assert_eq!(q.depth(), (0, 0));
        let mut got = [0u8; 5];
        reader.read_exact(&mut got).await.expect("read");
        assert_eq!(got, [1, 1, 1, 2, 2]);
    }

    #[tokio::test]
    async fn a_frame_cut_short_is_finished_by_the_writer_before_anything_else() {
        use tokio::io::AsyncReadExt;
        let (writer, mut reader) = socket_pair().await;
        let q = FrameQueue::new(1000, 1 << 30);
        q.attach(Arc::clone(&writer));
        // Frames far larger than the socket buffers: the socket takes only
        // the start of the queue, cutting a frame in two.
        let big = (1 << 20) + 7;
        let frames = 16u8;
        for tag in 0..frames {
            q.push(frame(tag, big));
        }
        let direct = q.kick();
        assert!(direct.bytes > 0, "an idle socket takes something");
        assert!(
            direct.bytes < big * frames as usize,
            "the socket buffer is smaller"
        );
        assert_ne!(direct.bytes % big, 0, "the socket cut a frame");
        // Busy now, even once the socket has room again: later kicks leave
        // everything to the writer task.
        let mut all = vec![0u8; direct.bytes];
        reader.read_exact(&mut all).await.expect("read");
        q.push(frame(frames, 7));
        assert_eq!(q.kick(), Written::default());
        let reading = tokio::spawn(async move {
            reader.read_to_end(&mut all).await.expect("read");
            all
        });
        // The writer task's part, done here by hand.
        let mut out = Vec::new();
        loop {
            out.clear();
            q.take_for_writer(&mut out, 4);
            if out.is_empty() {
                break;
            }
            let mut rest: &[u8] = &out;
            while !rest.is_empty() {
                writer.writable().await.expect("writable");
                match writer.try_write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write: {e}"),
                }
            }
        }
        // Idle again: a direct write goes through.
        q.push(frame(frames + 1, 5));
        assert_eq!(q.kick().frames, 1);
        drop(q);
        // Close the write side so the reader sees the end.
        let writer = Arc::try_unwrap(writer).expect("last reference");
        drop(writer);
        let all = reading.await.expect("reader task");
        let mut expected = Vec::new();
        for tag in 0..frames {
            expected.extend(frame(tag, big));
        }
        expected.extend(frame(frames, 7));
        expected.extend(frame(frames + 1, 5));
        assert_eq!(all.len(), expected.len());
        assert!(all == expected, "bytes out of order or interleaved");
    }
}
