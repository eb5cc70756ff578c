//! Body bytes per route: a body wrapper that adds each data frame's length to a counter as the
//! frame passes, so streamed bodies are counted as they flow (nothing is buffered) and an aborted
//! body counts what got through. While the access log is on, the same count goes to the
//! request's access-log line ([`Report`]), which a response body writes when it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf as _;
use http_body::{Body, Frame, SizeHint};
use prometheus::IntCounter;

use super::request::{AccessLine, Outcome, Report};

/// `inner`, counting its data bytes into `counter`.
#[derive(Debug)]
pub struct Counted<B> {
    inner: B,
    counter: IntCounter,
    /// Where the bytes also go for the access log; `None` while it is off (nothing more to do).
    report: Option<Box<Report>>,
}

impl<B> Counted<B> {
    /// Counts `inner`'s data bytes into `counter` as they are polled.
    pub fn new(inner: B, counter: IntCounter) -> Self {
        Self {
            inner,
            counter,
            report: None,
        }
    }

    /// This body, also reporting its bytes (and, for a response, its end) to `report`.
    pub(crate) fn reporting(mut self, report: Option<Box<Report>>) -> Self {
        self.report = report;
        self
    }
}

impl<B: Body> Counted<B> {
    /// This response body, writing `line` when it ends: at once if it has nothing to send.
    pub(crate) fn logged(self, mut line: AccessLine) -> Self {
        if self.inner.is_end_stream() {
            line.write(Outcome::Complete);
            return self;
        }
        self.reporting(Some(Box::new(Report::Response(line))))
    }
}

impl<B> Body for Counted<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let n = data.remaining() as u64;
            this.counter.inc_by(n);
            if let Some(report) = &mut this.report {
                report.passed(n);
            }
        }
        if let Some(report) = &mut this.report {
            let ended = match &polled {
                Poll::Ready(None) => Some(Outcome::Complete),
                Poll::Ready(Some(Err(_))) => Some(Outcome::UpstreamError),
                Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => Some(Outcome::Complete),
                _ => None,
            };
            if let Some(outcome) = ended {
                report.end(outcome);
                this.report = None;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt as _;
    use std::collections::VecDeque;

    /// Frames handed out one per poll.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }
    }

    #[tokio::test]
    async fn counts_every_data_byte_and_no_trailer() {
        let counter = IntCounter::new("t", "t").unwrap();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("long trailer value"));
        let frames = Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"hello ")),
            Frame::data(Bytes::from_static(b"world")),
            Frame::trailers(trailers),
        ]));
        let collected = Counted::new(frames, counter.clone())
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&collected[..], b"hello world");
        assert_eq!(counter.get(), 11);
    }
}
