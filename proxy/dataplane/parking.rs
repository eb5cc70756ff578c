//! Parking idle HTTP/1 caller connections outside hyper, so an idle keep-alive connection holds
//! no hyper buffers (issue 13): hyper 1.x keeps its read buffer (8 KiB, growing to the head cap)
//! and its write buffer (8 KiB) for a connection's whole life and cannot release them.
//!
//! [`Parking`] sits between hyper and the rest of a connection's IO stack. A parked connection
//! holds no hyper object: [`Parking::wait`] reads its next bytes into a small inline array (no
//! heap), then the connection builds a fresh hyper HTTP/1 connection that reads those bytes
//! first. The first wait of a connection also tells HTTP/2 prior knowledge (the preface) from
//! HTTP/1.
//!
//! To leave hyper, the layer hands hyper a clean end of stream while hyper waits for the next
//! request head; hyper then ends the connection as if the caller had closed it, and the
//! connection takes its IO back (`poll_without_shutdown`). It does so only when nothing can be
//! lost: every request whose bytes hyper got was answered, those bytes end exactly at a request
//! boundary (the framing guard follows them), hyper flushed after the last answer, and the
//! connection has been idle for [`PARK_GRACE`]. Otherwise it reads from the stream as usual.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf as _, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::activity::Activity;
use super::framing_guard::FramingGuard;
use super::opening::PREFACE;
use super::progress::Deadlines;

/// How long an HTTP/1 connection stays idle inside hyper before it is parked. Under keep-alive
/// load the gap between a caller's requests is well under a millisecond, so a busy connection is
/// never parked and rebuilt per request (a rebuild allocates hyper's two buffers again), while an
/// idle caller gives them back a quarter of a second after its last answer.
pub(crate) const PARK_GRACE: Duration = Duration::from_millis(250);

/// Bytes a parked connection reads before deciding: the HTTP/2 preface's length, so one inline
/// array also tells HTTP/2 prior knowledge from HTTP/1 on a connection's first read.
const HELD: usize = PREFACE.len();

/// Whether the bytes read so far end at an HTTP/1 request boundary (the framing guard knows).
pub(crate) trait RequestBoundary {
    /// The number of request heads read, when everything read so far ends exactly where a
    /// request head would start (nothing but blank lines of the next one seen); `None` inside a
    /// head or body, or when the guard no longer follows the connection.
    fn at_boundary(&self) -> Option<u64>;
    /// Frees what the guard keeps between reads (an idle connection holds no heap).
    fn release(&mut self);
}

impl<I> RequestBoundary for FramingGuard<I> {
    fn at_boundary(&self) -> Option<u64> {
        FramingGuard::at_boundary(self)
    }

    fn release(&mut self) {
        FramingGuard::release(self);
    }
}

impl<I: RequestBoundary> RequestBoundary for Deadlines<I> {
    fn at_boundary(&self) -> Option<u64> {
        self.get_ref().at_boundary()
    }

    fn release(&mut self) {
        self.get_mut().release();
    }
}

/// What a parked connection's next bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// An HTTP/1 request begins.
    Http1,
    /// The HTTP/2 preface (prior knowledge, or h2 over TLS): the connection is never parked.
    Http2,
    /// The caller closed, or the read failed: close the connection.
    Closed,
}

/// A caller connection's IO as hyper sees it: the bytes read while parked first, then the
/// stream; and, once the connection may be parked, a clean end of stream.
#[derive(Debug)]
pub(crate) struct Parking<I> {
    inner: I,
    activity: Arc<Activity>,
    /// Bytes read while parked, not yet handed to hyper: `held[start..end]`.
    held: [u8; HELD],
    start: u8,
    end: u8,
    /// What hyper had read but not parsed when it let go (none whenever it parks: kept only so
    /// that nothing could ever be lost). Boxed: one pointer in every parked connection instead
    /// of a `Bytes` (32 bytes) that is always empty there (issue 13).
    rewind: Option<Box<Bytes>>,
    /// [`Activity::answered`] at hyper's last flush.
    flushed: u64,
    /// The connection is HTTP/1 and may be parked.
    may_park: bool,
    /// hyper was given the end of stream.
    parked: bool,
}

impl<I> Parking<I> {
    pub(crate) fn new(inner: I, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            held: [0; HELD],
            start: 0,
            end: 0,
            rewind: None,
            flushed: 0,
            may_park: false,
            parked: false,
        }
    }

    /// Whether hyper let go of the connection because this layer parked it.
    pub(crate) fn parked(&self) -> bool {
        self.parked
    }

    /// The connection goes (back) to hyper as HTTP/1: it may be parked again.
    pub(crate) fn unpark(&mut self) {
        self.may_park = true;
        self.parked = false;
    }

    /// hyper let go; `read_buf`: what it had read and not parsed, handed to the next hyper
    /// connection first.
    pub(crate) fn rewind(&mut self, read_buf: Bytes) {
        // An empty `Bytes` from hyper may still hold its read buffer: dropped here.
        self.rewind = (!read_buf.is_empty()).then(|| Box::new(read_buf));
    }
}

impl<I: RequestBoundary> Parking<I> {
    /// Whether hyper may be given the end of stream now.
    fn parkable(&self) -> bool {
        self.may_park
            && !self.parked
            && self.rewind.is_none()
            && self.start == self.end
            && self
                .inner
                .at_boundary()
                .is_some_and(|heads| self.activity.may_park(heads, self.flushed))
    }

    /// Frees what the IO stack keeps between requests: the guard's line buffer (hyper's read
    /// buffer went with an empty rewind, see [`Parking::rewind`]).
    pub(crate) fn release(&mut self) {
        self.inner.release();
    }
}

impl<I: AsyncRead + Unpin> Parking<I> {
    /// Waits, parked, for the connection's next bytes; `detect`: tell HTTP/2's preface from
    /// HTTP/1 (a connection's first bytes; later ones are HTTP/1 requests). Reads until the
    /// preface is matched or ruled out, so a sender trickling it byte by byte is still detected.
    /// `stop`, asked at each poll before reading: close instead (the drain started).
    pub(crate) async fn wait(&mut self, detect: bool, stop: impl Fn() -> bool) -> Woke {
        self.start = 0;
        self.end = 0;
        std::future::poll_fn(|cx| {
            if stop() {
                return Poll::Ready(Woke::Closed);
            }
            self.poll_wait(cx, detect)
        })
        .await
    }

    fn poll_wait(&mut self, cx: &mut Context<'_>, detect: bool) -> Poll<Woke> {
        loop {
            let end = usize::from(self.end);
            let mut buf = ReadBuf::new(&mut self.held[end..]);
            match ready!(Pin::new(&mut self.inner).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Woke::Closed),
                Ok(()) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "parked caller connection failed");
                    return Poll::Ready(Woke::Closed);
                }
            }
            // At most `HELD` (24) bytes: fits a `u8`.
            self.end += buf.filled().len() as u8;
            if !detect {
                return Poll::Ready(Woke::Http1);
            }
            let read = &self.held[..usize::from(self.end)];
            if read == PREFACE {
                return Poll::Ready(Woke::Http2);
            }
            if !PREFACE.starts_with(read) {
                return Poll::Ready(Woke::Http1);
            }
        }
    }
}

impl<I: AsyncRead + RequestBoundary + Unpin> AsyncRead for Parking<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rewind) = this.rewind.as_mut() {
            let n = rewind.len().min(buf.remaining());
            buf.put_slice(&rewind[..n]);
            rewind.advance(n);
            if rewind.is_empty() {
                this.rewind = None;
            }
            return Poll::Ready(Ok(()));
        }
        if this.start < this.end {
            let held = &this.held[usize::from(this.start)..usize::from(this.end)];
            let n = held.len().min(buf.remaining());
            buf.put_slice(&held[..n]);
            // `n` ≤ `HELD`.
            this.start += n as u8;
            return Poll::Ready(Ok(()));
        }
        if this.parked || this.parkable() {
            // End of stream: hyper, idle, ends the connection and hands the IO back.
            this.parked = true;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + RequestBoundary + Unpin> AsyncWrite for Parking<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper flushes the IO only once its write buffer is empty (`proto/h1/io.rs`,
    /// `Buffered::poll_flush`), so a flush that completes after an answer ended means no byte of
    /// it is left in hyper. The first such flush after the grace (a caller slow to read) wakes the
    /// task so that hyper reads again and the connection is parked.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        let answered = this.activity.answered();
        if answered != this.flushed {
            this.flushed = answered;
            if this.parkable() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    impl RequestBoundary for &[u8] {
        fn at_boundary(&self) -> Option<u64> {
            Some(0)
        }

        fn release(&mut self) {}
    }

    impl RequestBoundary for tokio::io::DuplexStream {
        fn at_boundary(&self) -> Option<u64> {
            None
        }

        fn release(&mut self) {}
    }

    #[tokio::test]
    async fn bytes_hyper_left_are_read_first_and_survive_release() {
        let activity = Arc::new(Activity::new(false, Arc::default()));
        let mut io = Parking::new(&b" HTTP/1.1\r\n"[..], activity);
        io.rewind(Bytes::from_static(b"GET /"));
        io.release();
        let mut read = Vec::new();
        io.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn the_first_bytes_tell_http2_from_http1_even_one_at_a_time() {
        let activity = Arc::new(Activity::new(false, Arc::default()));
        let mut h1 = Parking::new(&b"PUT / HTTP/1.1\r\n"[..], Arc::clone(&activity));
        assert_eq!(h1.wait(true, || false).await, Woke::Http1);
        let mut read = Vec::new();
        h1.read_to_end(&mut read).await.unwrap();
        assert_eq!(
            read, b"PUT / HTTP/1.1\r\n",
            "bytes read while parked are lost"
        );
        let (mut client, server) = tokio::io::duplex(64);
        let mut h2 = Parking::new(server, activity);
        let sender = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            for byte in PREFACE {
                client.write_all(&[*byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        assert_eq!(h2.wait(true, || false).await, Woke::Http2);
        drop(sender.await.unwrap());
        let mut preface = [0u8; HELD];
        h2.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface[..], PREFACE);
        let mut closed = Parking::new(&b""[..], Arc::new(Activity::new(false, Arc::default())));
        assert_eq!(closed.wait(true, || false).await, Woke::Closed);
    }
}
