//! A connection whose writes are gathered while its answers come in a
//! burst.
//!
//! hyper's HTTP/2 connection writes what its streams have queued each time
//! its task runs, and writes a data frame of more than 256 bytes with a
//! system call of its own. The connection task runs as soon as one stream
//! queues a frame, so when one put reaches 100 watchers on 10 connections,
//! almost every watch response went out in a write of its own (78 writes
//! per put, `strace -c`), each costing the member a system call and the
//! client a wake-up. On a connection that carries a watch ([`BurstHint`]),
//! the frames go to a buffer; a flush that comes soon after the previous
//! write (a burst: the watchers of one put) first yields once, to the back
//! of the worker's queue, so that the stream tasks already queued add
//! their frames and the rest of the burst leaves in one write. A lone
//! answer is written at once, and a connection that carries no watch
//! writes as before: there the yield cost unary answers more than the
//! gathering saved.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A flush this soon after the previous write is taken for part of a
/// burst.
const BURST: Duration = Duration::from_micros(300);

/// Buffered bytes past which a write first sends what is buffered, so a
/// large answer streams out instead of being held whole.
const GATHER_MAX_BYTES: usize = 64 << 10;

/// Capacity kept after a write: one large answer does not keep its buffer
/// for the life of the connection.
const KEEP_BYTES: usize = 16 << 10;

/// Marks a connection whose answers come in bursts (a watch's events), so
/// that its writes are gathered. A service finds it among the request's
/// extensions; once marked, the connection stays marked.
#[derive(Clone, Debug, Default)]
pub struct BurstHint(Arc<AtomicBool>);

impl BurstHint {
    /// Says that this request's connection carries bursts of answers.
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A connection that gathers its writes once its hint is marked. Without
/// a hint it never does: a connection whose task shares its thread with
/// the driver passes its writes through, since a yield there would let a
/// whole turn, fsync included, run before the answer leaves.
#[derive(Debug)]
pub(crate) struct Gather<T> {
    inner: T,
    hint: Option<BurstHint>,
    buf: Vec<u8>,
    /// Bytes of `buf` already written.
    sent: usize,
    /// This batch's flush has yielded once already.
    yielded: bool,
    /// When the last batch was written.
    last_sent: Option<Instant>,
    /// A flush this soon after the last batch yields first ([`BURST`]).
    burst: Duration,
}

impl<T> Gather<T> {
    /// Wraps `inner`, gathering its writes once `hint` is marked.
    pub(crate) fn new(inner: T, hint: Option<BurstHint>) -> Self {
        Gather {
            inner,
            hint,
            buf: Vec::new(),
            sent: 0,
            yielded: false,
            last_sent: None,
            burst: BURST,
        }
    }
}

impl<T: AsyncWrite + Unpin> Gather<T> {
    /// Whether writes go to the buffer: the hint is marked, or the buffer
    /// still holds bytes from when it was.
    fn gathering(&self) -> bool {
        !self.buf.is_empty() || self.hint.as_ref().is_some_and(BurstHint::is_marked)
    }

    /// Writes out everything buffered.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        if self.buf.capacity() > KEEP_BYTES {
            self.buf.shrink_to(KEEP_BYTES);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Gather<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gather<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.gathering() {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        if this.buf.len() >= GATHER_MAX_BYTES {
            ready!(this.poll_send(cx))?;
        }
        let mut n = 0;
        for slice in bufs {
            this.buf.extend_from_slice(slice);
            n += slice.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        // h2 asks once, at the start. Gathered, a frame's pieces are
        // copied once into the buffer; h2 chains larger payloads instead of
        // copying them itself, as it does over the socket.
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.sent < this.buf.len() {
            let now = Instant::now();
            let in_burst = this
                .last_sent
                .is_some_and(|at| now.saturating_duration_since(at) < this.burst);
            if in_burst && !this.yielded {
                // To the back of the queue: the tasks queued before this
                // one run, and their frames join this write.
                this.yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            ready!(this.poll_send(cx))?;
            this.last_sent = Some(now);
        }
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    /// Records each write the connection makes.
    #[derive(Default)]
    struct Socket {
        writes: Vec<Vec<u8>>,
    }

    impl AsyncWrite for Socket {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            data: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().writes.push(data.to_vec());
            Poll::Ready(Ok(data.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn write(conn: &mut Gather<Socket>, cx: &mut Context<'_>, data: &[u8]) {
        let written = Pin::new(conn).poll_write(cx, data);
        assert!(matches!(written, Poll::Ready(Ok(n)) if n == data.len()));
    }

    fn flush(conn: &mut Gather<Socket>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(conn).poll_flush(cx)
    }

    fn marked(burst: Duration) -> Gather<Socket> {
        let hint = BurstHint::default();
        hint.mark();
        let mut conn = Gather::new(Socket::default(), Some(hint));
        conn.burst = burst;
        conn
    }

    #[test]
    fn a_connection_without_a_watch_writes_each_frame_through() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        for hint in [None, Some(BurstHint::default())] {
            let mut conn = Gather::new(Socket::default(), hint);
            conn.burst = Duration::MAX;
            write(&mut conn, &mut cx, b"one");
            assert_eq!(
                conn.inner.writes,
                [b"one".to_vec()],
                "written before any flush"
            );
            assert!(flush(&mut conn, &mut cx).is_ready());
            write(&mut conn, &mut cx, b"two");
            assert!(flush(&mut conn, &mut cx).is_ready(), "never yields");
            assert_eq!(conn.inner.writes.len(), 2);
        }
        assert_eq!(wakes.0.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_watching_connection_gathers_a_burst_into_one_write() {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        let mut conn = marked(Duration::MAX);
        // The first frame of a burst leaves at its flush.
        write(&mut conn, &mut cx, b"a");
        assert!(conn.inner.writes.is_empty(), "held until the flush");
        assert!(flush(&mut conn, &mut cx).is_ready());
        assert_eq!(conn.inner.writes, [b"a".to_vec()]);
        // The next flush comes within the burst: it yields once, waking
        // its task, and the frames queued meanwhile join its write.
        write(&mut conn, &mut cx, b"b");
        assert!(flush(&mut conn, &mut cx).is_pending());
        assert_eq!(
            wakes.0.load(Ordering::Relaxed),
            1,
            "the yield wakes its task"
        );
        write(&mut conn, &mut cx, b"c");
        assert!(flush(&mut conn, &mut cx).is_ready());
        assert_eq!(conn.inner.writes, [b"a".to_vec(), b"bc".to_vec()]);
        // Nothing buffered: a flush passes straight to the socket.
        assert!(flush(&mut conn, &mut cx).is_ready());
        assert_eq!(conn.inner.writes.len(), 2);
    }

    #[test]
    fn a_lone_answer_is_written_at_its_flush() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut conn = marked(Duration::ZERO);
        for frame in [b"x", b"y"] {
            write(&mut conn, &mut cx, frame);
            assert!(flush(&mut conn, &mut cx).is_ready(), "no burst: no yield");
        }
        assert_eq!(conn.inner.writes, [b"x".to_vec(), b"y".to_vec()]);
    }

    #[test]
    fn shutdown_writes_what_is_gathered_first() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut conn = marked(Duration::MAX);
        write(&mut conn, &mut cx, b"last");
        assert!(Pin::new(&mut conn).poll_shutdown(&mut cx).is_ready());
        assert_eq!(conn.inner.writes, [b"last".to_vec()]);
    }

    #[test]
    fn a_large_answer_streams_out_past_the_gathering_bound() {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut conn = marked(Duration::MAX);
        let piece = vec![7u8; 16 << 10];
        for _ in 0..5 {
            write(&mut conn, &mut cx, &piece);
        }
        // Four pieces reach the bound; the fifth write sends them first.
        assert_eq!(conn.inner.writes.len(), 1);
        assert_eq!(conn.inner.writes[0].len(), GATHER_MAX_BYTES);
        assert_eq!(conn.buf.len(), piece.len());
    }
}
