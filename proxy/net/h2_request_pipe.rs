//! A request body sent on an h2 stream: each frame the body yields goes out as the stream's send
//! window allows, then the end of the stream (an empty final `DATA` frame, or the trailers).
//!
//! A chunk is taken from the body before any send window is asked for: asking first would hold
//! connection window for a body that may never yield, and an upstream that only opens its window
//! once it is spent would then stall the connection's other streams. One byte is asked for with
//! the chunk in hand; h2 raises the demand to the chunk's length as it sends it.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Body as _;

use super::upstream_body::{BoxError, UpstreamBody};

/// Why a request body did not reach its end on the stream.
#[derive(Debug)]
pub(crate) enum PipeError {
    /// The caller's body failed (or was cut off at the route's limit, or stalled): the stream
    /// was reset, so the upstream sees an aborted request, never a short one.
    Body(BoxError),
    /// The stream failed (the upstream reset it, the connection ended).
    Stream(h2::Error),
}

/// A request body on its way up an h2 stream.
pub(crate) struct RequestPipe {
    send: h2::SendStream<Bytes>,
    body: UpstreamBody,
    /// A chunk taken from the body and whether it was the last, waiting for send window.
    waiting: Option<(Bytes, bool)>,
}

impl RequestPipe {
    pub(crate) fn new(send: h2::SendStream<Bytes>, body: UpstreamBody) -> Self {
        Self {
            send,
            body,
            waiting: None,
        }
    }

    /// Sends what the body yields; ready when the stream's request side ended, or failed.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PipeError>> {
        loop {
            // Registered on every poll: a reset wakes this pipe whatever else it waits for.
            if let Poll::Ready(reset) = self.send.poll_reset(cx) {
                let error = reset.map_or_else(|error| error, h2::Error::from);
                return Poll::Ready(Err(PipeError::Stream(error)));
            }
            if self.waiting.is_some() {
                ready!(self.poll_window(cx))?;
                if let Some((chunk, last)) = self.waiting.take() {
                    self.send
                        .send_data(chunk, last)
                        .map_err(PipeError::Stream)?;
                    if last {
                        return Poll::Ready(Ok(()));
                    }
                }
                continue;
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        let last = self.body.is_end_stream();
                        if chunk.is_empty() {
                            // Needs no window: straight out (it may carry the end of stream).
                            self.send
                                .send_data(chunk, last)
                                .map_err(PipeError::Stream)?;
                            if last {
                                return Poll::Ready(Ok(()));
                            }
                        } else {
                            self.send.reserve_capacity(1);
                            self.waiting = Some((chunk, last));
                        }
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            // No more data: no window is wanted.
                            self.send.reserve_capacity(0);
                            self.send
                                .send_trailers(trailers)
                                .map_err(PipeError::Stream)?;
                            return Poll::Ready(Ok(()));
                        }
                    }
                },
                Some(Err(error)) => {
                    self.send.send_reset(h2::Reason::CANCEL);
                    return Poll::Ready(Err(PipeError::Body(error)));
                }
                None => {
                    // Ended without a last chunk or trailers: an empty final frame ends it.
                    self.send
                        .send_data(Bytes::new(), true)
                        .map_err(PipeError::Stream)?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }

    /// Ready once the stream has send window for the waiting chunk.
    fn poll_window(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PipeError>> {
        while self.send.capacity() == 0 {
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(PipeError::Stream(error))),
                // The stream stopped sending (reset, or ended): nothing more can go.
                None => {
                    return Poll::Ready(Err(PipeError::Stream(h2::Reason::CANCEL.into())));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends the rest of the body after the response head arrived (on a task of its own: the
    /// upstream may read the request while it sends the response).
    pub(crate) async fn finish(mut self) {
        if let Err(error) = std::future::poll_fn(|cx| self.poll(cx)).await {
            match error {
                PipeError::Body(error) => {
                    tracing::debug!(%error, "request body failed after the upstream answered");
                }
                PipeError::Stream(error) => {
                    tracing::debug!(%error, "upstream h2 stream ended before the request body");
                }
            }
        }
    }
}
