//! Bodies make progress or are cut off: a caller connection's IO with two deadlines.
//!
//! - **Request body** (`limits.request_body_timeout`): while an HTTP/1 request body is due (the
//!   framing guard is inside one) and popgate waits to read it, a caller that sends nothing for
//!   this long gets its connection closed. Without it, a caller declaring `content-length: 65536`
//!   and sending nothing holds its read-ahead buffer and upstream connection until the request
//!   timeout.
//! - **Response** (`limits.response_body_timeout`): a write to the caller that cannot proceed for
//!   this long (the caller stopped reading; its socket buffer is full) closes the connection, which
//!   drops the response body and with it the upstream connection it was streaming from.
//!
//! On HTTP/2 the same two deadlines apply per stream instead (`stream_deadlines.rs`,
//! `net/stall_body.rs`): a stalled stream must not take its connection's other streams with it.
//! Both count in `popgate_body_stalls_total`.
//!
//! Only waiting counts: the clock starts when a read or write is refused for want of the peer and
//! stops at the next byte moved, so a slow upstream (which makes popgate stop reading) never
//! counts against the caller.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics;

/// Tells the deadline wrapper whether a request body is due on the connection.
pub(crate) trait BodyDue {
    /// True while the caller owes bytes of a request body (not between requests, not on HTTP/2).
    fn body_due(&self) -> bool;
}

/// One deadline: armed when waiting starts, cleared on progress.
#[derive(Debug)]
struct Stall {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Stall {
    fn new(limit: Duration) -> Self {
        Self { limit, sleep: None }
    }

    fn progress(&mut self) {
        self.sleep = None;
    }

    /// Called when the peer kept us waiting: `Ready` once the deadline has passed.
    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + limit)));
        sleep.as_mut().poll(cx)
    }
}

/// The caller's IO with the request-body and response deadlines.
#[derive(Debug)]
pub(crate) struct Deadlines<I> {
    inner: I,
    read: Stall,
    write: Stall,
}

impl<I> Deadlines<I> {
    pub(crate) fn new(inner: I, request_body: Duration, response_body: Duration) -> Self {
        Self {
            inner,
            read: Stall::new(request_body),
            write: Stall::new(response_body),
        }
    }

    /// The wrapped stream.
    pub(crate) fn get_ref(&self) -> &I {
        &self.inner
    }

    /// The wrapped stream, mutably.
    pub(crate) fn get_mut(&mut self) -> &mut I {
        &mut self.inner
    }
}

fn stalled(what: &str, limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what} made no progress for {} ms", limit.as_millis()),
    )
}

impl<I: AsyncRead + BodyDue + Unpin> AsyncRead for Deadlines<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending if this.inner.body_due() => {
                ready!(this.read.waiting(cx));
                metrics::connections::body_stalled("http1", "request");
                tracing::info!(
                    limit_ms = this.read.limit.as_millis() as u64,
                    "request body stalled; connection closed"
                );
                Poll::Ready(Err(stalled("the request body", this.read.limit)))
            }
            Poll::Pending => {
                this.read.progress();
                Poll::Pending
            }
            ready => {
                this.read.progress();
                ready
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> Deadlines<I> {
    /// Passes a write-side poll through, timing how long the caller keeps it pending.
    fn write_side<T>(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut I>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Pending => {
                ready!(self.write.waiting(cx));
                metrics::connections::body_stalled("http1", "response");
                tracing::info!(
                    limit_ms = self.write.limit.as_millis() as u64,
                    "caller stopped reading the response; connection closed"
                );
                Poll::Ready(Err(stalled("writing to the caller", self.write.limit)))
            }
            ready => {
                self.write.progress();
                ready
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Deadlines<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_side(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .write_side(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().write_side(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().write_side(cx, |io, cx| io.poll_shutdown(cx))
    }
}
