//! The body an upstream answered with: hyper's over an HTTP/1.1 connection, or an h2 stream's,
//! read by popgate itself (see [`super::h2_stream`]).
//!
//! An h2 stream's body gives its receive window back as each chunk is taken, so an upstream
//! sends more only as fast as the caller reads (the stream window bounds what a stalled caller
//! holds: `client.rs`, `H2_STREAM_WINDOW`).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::upstream_body::BoxError;

/// An upstream response body, either protocol.
#[derive(Debug)]
pub enum ResponseBody {
    /// Over an HTTP/1.1 connection (hyper's client).
    Http1(Incoming),
    /// An h2 stream's.
    H2(H2ResponseBody),
    /// Over an HTTP/1.1 connection read by popgate's own codec (bodiless requests).
    Own(crate::net::h1_own::OwnBody),
}

/// An h2 stream's response body.
#[derive(Debug)]
pub struct H2ResponseBody {
    recv: h2::RecvStream,
    /// The data frames have ended; the trailers (if any) come next.
    data_done: bool,
    /// What `content-length` declared and is not received yet (h2 itself checks the sum).
    remaining: Option<u64>,
}

impl H2ResponseBody {
    /// The body of a response whose head is `headers`.
    pub(crate) fn new(recv: h2::RecvStream, headers: &HeaderMap) -> Self {
        let remaining = if recv.is_end_stream() {
            Some(0)
        } else {
            declared_length(headers)
        };
        Self {
            recv,
            data_done: false,
            remaining,
        }
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The caller has it now: the upstream may send this much more.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    if let Some(remaining) = &mut self.remaining {
                        *remaining = remaining.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(ended_early(error)),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(error) => Poll::Ready(ended_early(error)),
        }
    }
}

/// A stream error while reading the body: a failure, whatever its reason, `NO_ERROR` included.
///
/// An upstream that answered in full before reading the whole request may reset the stream with
/// `NO_ERROR` to stop the rest of it (RFC 9113 §8.1), but only after its END_STREAM; h2 keeps
/// an END_STREAM that came before a reset (`Cause::ErrorAfterEndStream` in its stream state), so
/// such a body ends with `None` like any other. An error here therefore means the answer was
/// cut off: passed on as the end, it would reach a chunked caller as if whole.
fn ended_early(error: h2::Error) -> Option<Result<Frame<Bytes>, BoxError>> {
    Some(Err(error.into()))
}

/// The single length `content-length` declares (digits only, every value alike), if any.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let mut declared = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        for part in value.to_str().ok()?.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n = part.parse::<u64>().ok()?;
            if declared.is_some_and(|d| d != n) {
                return None;
            }
            declared = Some(n);
        }
    }
    declared
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ResponseBody::H2(body) => body.poll_frame(cx),
            ResponseBody::Own(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Http1(body) => body.is_end_stream(),
            ResponseBody::H2(body) => body.recv.is_end_stream(),
            ResponseBody::Own(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Http1(body) => body.size_hint(),
            ResponseBody::Own(body) => body.size_hint(),
            ResponseBody::H2(body) => match body.remaining {
                _ if body.recv.is_end_stream() => SizeHint::with_exact(0),
                Some(remaining) => SizeHint::with_exact(remaining),
                None => SizeHint::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(http::header::CONTENT_LENGTH, v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn a_declared_length_is_read_only_when_it_is_one_number() {
        assert_eq!(declared_length(&headers(&[])), None);
        assert_eq!(declared_length(&headers(&["12"])), Some(12));
        assert_eq!(declared_length(&headers(&["12", "12"])), Some(12));
        assert_eq!(declared_length(&headers(&["12, 12"])), Some(12));
        for bad in [
            &["12", "13"][..],
            &["+12"],
            &["-1"],
            &["1 2"],
            &[""],
            &["99999999999999999999"],
        ] {
            assert_eq!(declared_length(&headers(bad)), None, "{bad:?}");
        }
    }
}
