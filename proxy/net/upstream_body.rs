//! The body popgate sends upstream: the caller's stream as is, or — for bodies small enough to
//! replay after a `401 invalid_token` — the chunks read ahead, shared (not copied) with the replay.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;
use http_body_util::Limited;
use hyper::body::Incoming;

use super::read_ahead_budget::{Budget, Reservation};
use super::stall_body::{StallFlag, StallTimed};
use super::trailers::filter_request_trailers;
use crate::metrics::RouteMetrics;
use crate::metrics::body_bytes::Counted;
use crate::metrics::request::Report;

pub(crate) use crate::config::limits::MAX_REPLAY_BODY;

/// How long to read ahead before streaming what arrived, whether or not the length was declared:
/// a caller that sends slowly or waits for the response before sending more must never stall on
/// us, and one that declares a length and stalls must not hold its share of the read-ahead budget
/// (the stall itself is then cut off by `limits.request_body_timeout`).
pub(crate) const REPLAY_READ_AHEAD_WAIT: Duration = Duration::from_secs(1);

/// A request body on its way upstream.
#[derive(Debug)]
pub enum UpstreamBody {
    /// The caller's body, streamed.
    Streaming(Incoming),
    /// A body read whole ahead of sending (cloning shares the chunks).
    Buffered {
        chunks: VecDeque<Bytes>,
        trailers: Option<HeaderMap>,
        /// Its share of the process's read-ahead budget, shared with replay copies.
        reserved: Option<Arc<Reservation>>,
    },
    /// What was read ahead, then the rest of the caller's stream.
    Prefixed {
        prefix: VecDeque<Bytes>,
        rest: Incoming,
        reserved: Option<Arc<Reservation>>,
    },
    /// A body under a route's `max_body_bytes`: it fails with
    /// [`http_body_util::LengthLimitError`] once more bytes pass, so the upstream sees an aborted
    /// body, never the excess.
    Limited(Box<Limited<UpstreamBody>>),
    /// A body whose data bytes are counted in its route's metrics as they are sent.
    Counted(Box<Counted<UpstreamBody>>),
    /// A body that fails with [`super::stall_body::BodyStalled`] once the caller sends nothing
    /// for the deadline (HTTP/2 callers; see `stall_body.rs`).
    Timed(Box<StallTimed<UpstreamBody>>),
}

/// The error a body sent upstream ends with: the caller's read error, or `LengthLimitError`.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether an empty request body goes upstream declared as `content-length: 0`, over either
/// protocol: when the caller declared it so, or when the method anticipates content (RFC 9110
/// §8.6: a user agent sends no length for a request without content whose method defines no
/// meaning for one: `GET`, `HEAD`, `DELETE`, `CONNECT`, `OPTIONS`, `TRACE`). Everything else,
/// extension methods included, gets the length, so the upstream never waits for a body.
pub(crate) fn declares_empty_length(method: &Method, headers: &HeaderMap) -> bool {
    headers.contains_key(CONTENT_LENGTH)
        || !matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::DELETE
                | Method::CONNECT
                | Method::OPTIONS
                | Method::TRACE
        )
}

impl UpstreamBody {
    /// A copy of a buffered body for a replay (the chunks are shared); `None` for streams.
    pub fn replayable(&self) -> Option<UpstreamBody> {
        match self {
            UpstreamBody::Buffered {
                chunks,
                trailers,
                reserved,
            } => Some(UpstreamBody::Buffered {
                chunks: chunks.clone(),
                trailers: trailers.clone(),
                reserved: reserved.clone(),
            }),
            _ => None,
        }
    }

    /// Data bytes known to be held (read ahead); `None` while part of the body is still a stream.
    pub fn buffered_len(&self) -> Option<u64> {
        match self {
            UpstreamBody::Buffered { chunks, .. } => {
                Some(chunks.iter().map(|c| c.len() as u64).sum())
            }
            _ => None,
        }
    }

    /// This body, failing once more than `max` data bytes have passed. A limit beyond `usize`
    /// cannot be reached in memory-sized reads, so it saturates.
    pub fn limited(self, max: u64) -> Self {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        UpstreamBody::Limited(Box::new(Limited::new(self, max)))
    }

    /// This body, its data bytes counted by `route`'s `popgate_request_body_bytes_total` as
    /// they are sent, and reported to the request's access-log line when `report` is given.
    pub(crate) fn counted(self, route: &RouteMetrics, report: Option<Box<Report>>) -> Self {
        UpstreamBody::Counted(Box::new(route.count_request_body(self).reporting(report)))
    }

    /// This body, cut off once the caller keeps it waiting for `limit`; the flag says whether it
    /// was.
    pub(crate) fn stall_timed(self, limit: Duration) -> (Self, StallFlag) {
        let (timed, flag) = StallTimed::new(self, limit);
        (UpstreamBody::Timed(Box::new(timed)), flag)
    }

    /// An empty body.
    pub fn empty() -> Self {
        UpstreamBody::Buffered {
            chunks: VecDeque::new(),
            trailers: None,
            reserved: None,
        }
    }

    /// The next frame as the caller sent it (trailers not yet filtered).
    fn poll_raw_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self {
            UpstreamBody::Streaming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Buffered {
                chunks, trailers, ..
            } => match chunks.pop_front() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None => Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t)))),
            },
            UpstreamBody::Prefixed { prefix, rest, .. } => match prefix.pop_front() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None => Pin::new(rest).poll_frame(cx).map_err(Into::into),
            },
            UpstreamBody::Limited(body) => Pin::new(body.as_mut()).poll_frame(cx),
            UpstreamBody::Counted(body) => Pin::new(body.as_mut()).poll_frame(cx),
            UpstreamBody::Timed(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // The caller's trailers are filtered like its headers, whichever way the body came.
        self.get_mut()
            .poll_raw_frame(cx)
            .map_ok(|frame| match frame.into_trailers() {
                Ok(mut trailers) => {
                    filter_request_trailers(&mut trailers);
                    Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Streaming(body) => body.is_end_stream(),
            UpstreamBody::Buffered {
                chunks, trailers, ..
            } => chunks.is_empty() && trailers.is_none(),
            UpstreamBody::Prefixed { prefix, rest, .. } => {
                prefix.is_empty() && rest.is_end_stream()
            }
            UpstreamBody::Limited(body) => body.is_end_stream(),
            UpstreamBody::Counted(body) => body.is_end_stream(),
            UpstreamBody::Timed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let len = |chunks: &VecDeque<Bytes>| chunks.iter().map(|c| c.len() as u64).sum::<u64>();
        match self {
            UpstreamBody::Streaming(body) => body.size_hint(),
            UpstreamBody::Buffered { chunks, .. } => SizeHint::with_exact(len(chunks)),
            UpstreamBody::Prefixed { prefix, rest, .. } => {
                let read = len(prefix);
                let hint = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(hint.lower().saturating_add(read));
                if let Some(upper) = hint.upper() {
                    out.set_upper(upper.saturating_add(read));
                }
                out
            }
            UpstreamBody::Limited(body) => body.size_hint(),
            UpstreamBody::Counted(body) => body.size_hint(),
            UpstreamBody::Timed(body) => body.size_hint(),
        }
    }
}

/// Why the caller's body could not be read ahead.
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
pub(crate) struct ReadAheadError(hyper::Error);

/// Prepares a caller's body: bodies known to exceed [`MAX_REPLAY_BODY`] stream untouched, and so
/// do bodies that find the process's read-ahead budget spent; others are read ahead up to that
/// size for at most [`REPLAY_READ_AHEAD_WAIT`] and come back `Buffered` (replayable) when
/// complete, `Prefixed` otherwise.
pub(crate) async fn read_ahead(body: Incoming) -> Result<UpstreamBody, ReadAheadError> {
    read_ahead_within(body, Budget::process()).await
}

async fn read_ahead_within(
    body: Incoming,
    budget: &'static Budget,
) -> Result<UpstreamBody, ReadAheadError> {
    if body.is_end_stream() {
        return Ok(UpstreamBody::empty());
    }
    let hint = body.size_hint();
    if hint.lower() > MAX_REPLAY_BODY {
        return Ok(UpstreamBody::Streaming(body));
    }
    // The share a read-ahead may fill: the declared length, else the replay cap.
    let share = hint.exact().unwrap_or(MAX_REPLAY_BODY).min(MAX_REPLAY_BODY);
    let Some(reserved) = budget.reserve(share) else {
        tracing::info!(
            share,
            in_use = budget.used(),
            "read-ahead budget spent; body streamed without a replay"
        );
        return Ok(UpstreamBody::Streaming(body));
    };
    let reserved = Some(reserved);
    let mut body = body;
    let mut chunks = VecDeque::new();
    let mut read = 0u64;
    let deadline = tokio::time::Instant::now() + REPLAY_READ_AHEAD_WAIT;
    loop {
        let next = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(frame) => frame,
            Err(_) => {
                return Ok(UpstreamBody::Prefixed {
                    prefix: chunks,
                    rest: body,
                    reserved,
                });
            }
        };
        match next {
            None => {
                return Ok(UpstreamBody::Buffered {
                    chunks,
                    trailers: None,
                    reserved,
                });
            }
            Some(Err(e)) => return Err(ReadAheadError(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    read += data.len() as u64;
                    chunks.push_back(data);
                    if read > MAX_REPLAY_BODY {
                        return Ok(UpstreamBody::Prefixed {
                            prefix: chunks,
                            rest: body,
                            reserved,
                        });
                    }
                }
                Err(frame) => {
                    // Trailers end the body.
                    return Ok(UpstreamBody::Buffered {
                        chunks,
                        trailers: frame.into_trailers().ok(),
                        reserved,
                    });
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffered(list: &[&'static str]) -> UpstreamBody {
        UpstreamBody::Buffered {
            chunks: list
                .iter()
                .map(|c| Bytes::from_static(c.as_bytes()))
                .collect(),
            trailers: None,
            reserved: None,
        }
    }

    #[tokio::test]
    async fn limited_body_passes_up_to_the_limit_and_fails_beyond() {
        let ok = buffered(&["abc", "de"]).limited(5).collect().await;
        assert_eq!(ok.unwrap().to_bytes(), "abcde");
        let err = buffered(&["abc", "def"])
            .limited(5)
            .collect()
            .await
            .unwrap_err();
        assert!(err.is::<http_body_util::LengthLimitError>(), "{err}");
    }
}
