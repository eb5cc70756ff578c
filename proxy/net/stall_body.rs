//! A request body that fails once the caller keeps it waiting too long: the per-stream
//! `limits.request_body_timeout` of HTTP/2, where the connection-wide read deadline of HTTP/1
//! (`dataplane/progress.rs`) would take every other stream down with the stalled one.
//!
//! Only waiting counts: the clock starts when the body is polled and the caller has sent nothing
//! more, and stops at the next frame. While the upstream is not taking the body (its flow control
//! or socket is full) the body is not polled, so a slow upstream never counts against the caller.
//! When the clock runs out the body ends with [`BodyStalled`], which aborts the upstream exchange
//! (hyper resets its HTTP/2 stream or closes its HTTP/1.1 connection), and the shared
//! [`StallFlag`] tells the forwarder to answer `408` if the upstream has not answered yet.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::metrics;

/// Why a request body was cut off.
#[derive(Debug, thiserror::Error)]
#[error("the request body made no progress for {} ms", .limit.as_millis())]
pub(crate) struct BodyStalled {
    /// The deadline that passed.
    pub(crate) limit: Duration,
}

/// Set once a [`StallTimed`] body was cut off; kept by the forwarder to tell a stall from an
/// upstream failure.
#[derive(Clone, Debug, Default)]
pub(crate) struct StallFlag(Arc<AtomicBool>);

impl StallFlag {
    /// Whether the body it belongs to was cut off for stalling.
    pub(crate) fn stalled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// `B`, failing with [`BodyStalled`] after `limit` of waiting for the caller.
#[derive(Debug)]
pub struct StallTimed<B> {
    body: B,
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    flag: StallFlag,
}

impl<B> StallTimed<B> {
    /// `body` with the deadline `limit`, and the flag it sets when cut off.
    pub(crate) fn new(body: B, limit: Duration) -> (Self, StallFlag) {
        let flag = StallFlag::default();
        let timed = Self {
            body,
            limit,
            sleep: None,
            flag: flag.clone(),
        };
        (timed, flag)
    }
}

impl<B> Body for StallTimed<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Pending => {
                let limit = this.limit;
                let sleep = this.sleep.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + limit))
                });
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.sleep = None;
                this.flag.0.store(true, Ordering::Release);
                metrics::connections::body_stalled("http2", "request");
                tracing::info!(
                    limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                    "request body stalled; stream ended"
                );
                Poll::Ready(Some(Err(Box::new(BodyStalled { limit }))))
            }
            ready => {
                this.sleep = None;
                ready.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt as _;

    /// One data frame, then nothing ever again.
    struct OneThenSilence(Option<Bytes>);

    impl Body for OneThenSilence {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match self.get_mut().0.take() {
                Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_fails_after_the_limit_and_sets_the_flag() {
        let limit = Duration::from_millis(200);
        let body = OneThenSilence(Some(Bytes::from_static(b"a")));
        let (mut body, flag) = StallTimed::new(body, limit);
        assert!(body.frame().await.unwrap().is_ok());
        assert!(!flag.stalled());
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<BodyStalled>(), "{err}");
        assert!(flag.stalled());
        assert!(started.elapsed() >= limit);
    }
}
