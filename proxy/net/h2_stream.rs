//! One upstream h2 connection ([`H2Conn`]) and a request's exchange on it ([`H2Exchange`]),
//! driven by the `h2` crate from the request's own task.
//!
//! hyper's h2 client sends each request through a channel to the connection's task, which
//! spawns one more task per request to await the response and hands it back through a oneshot:
//! about 9% of popgate's CPU and two extra wake-ups per request (benches/MICRO.md, issue 13).
//! Here the request opens its stream itself (`h2::client::SendRequest::send_request` only
//! queues frames for the connection's task, which remains the one task doing I/O) and awaits
//! its response head in place. What hyper did besides, done here too:
//! - the `transfer-encoding` popgate adds for HTTP/1.1 is removed (every other
//!   connection-specific field is gone already: RFC 9113 §8.2.2), and `content-length` is set
//!   from a body's known length;
//! - the request body is sent as the stream's window allows ([`RequestPipe`]); until the
//!   response head it is driven by the request's own future, after that by a task of its own;
//! - the response body gives its window back as the caller takes it
//!   ([`super::response_body::H2ResponseBody`]).
//!
//! A request a closing connection can no longer take (it received `GOAWAY`, or failed) is given
//! back unsent ([`Start::Closed`]) for the lane to send on another connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::Body as _;

use super::connect::UpstreamConn;
use super::h2_request_pipe::{PipeError, RequestPipe};
use super::response_body::H2ResponseBody;
use super::upstream_body::{UpstreamBody, declares_empty_length};
use super::upstream_error::UpstreamError;

/// The largest response head (HPACK-decoded) an upstream may send: hyper's client default, as
/// before; a larger head fails the stream rather than growing popgate's memory.
const MAX_RESPONSE_HEAD: u32 = 16 * 1024;
/// Request bytes h2 buffers per stream beyond what the upstream's window lets out (hyper's
/// client default, as before). Bounds what one slow upstream holds of a streamed body.
const MAX_SEND_BUFFER: usize = 1024 * 1024;
/// Streams assumed allowed before the upstream's `SETTINGS` arrive (hyper's client default).
const INITIAL_MAX_SEND_STREAMS: usize = 100;

/// The h2 settings of a lane's connections (receive windows, see [`super::client`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct H2Windows {
    /// Per stream.
    pub(crate) stream: u32,
    /// Per connection.
    pub(crate) connection: u32,
}

/// A lane's h2 connection to one upstream authority. Its I/O runs on a task of its own.
pub(crate) struct H2Conn {
    sender: h2::client::SendRequest<Bytes>,
    /// The connection's task ended (the connection closed or failed), or it refused a stream.
    ended: Arc<AtomicBool>,
}

/// What [`H2Conn::start`] did with a request.
pub(crate) enum Start {
    /// The stream is open (or queued behind the upstream's stream limit): await its answer.
    Sent(H2Exchange),
    /// The connection takes no new streams: the request, unsent, and why. Boxed: rare, and
    /// the request is large.
    Closed(Box<Request<UpstreamBody>>, h2::Error),
    /// The stream could not be opened; the request is gone.
    Failed(h2::Error),
}

impl H2Conn {
    /// The h2 handshake over `conn` (its preface and `SETTINGS`), the connection's task spawned
    /// on this runtime (the lane's own worker in production).
    pub(crate) async fn handshake(
        conn: UpstreamConn,
        windows: H2Windows,
    ) -> Result<Self, h2::Error> {
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(windows.stream)
            .initial_connection_window_size(windows.connection)
            .max_header_list_size(MAX_RESPONSE_HEAD)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .enable_push(false)
            .handshake::<_, Bytes>(conn)
            .await?;
        let ended = Arc::new(AtomicBool::new(false));
        let marks = EndMark(Arc::clone(&ended));
        // Outside the request's span: the connection outlives it.
        tokio::spawn(async move {
            let _marks = marks;
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream h2 connection ended with an error");
            }
        });
        Ok(Self { sender, ended })
    }

    /// Whether the connection may still take streams.
    pub(crate) fn is_live(&self) -> bool {
        !self.ended.load(Ordering::Acquire)
    }

    /// Opens a stream for `request` (absolute URI) and queues its head (and, if it has none, its
    /// end); the body follows as the returned exchange is polled. Not async: called under the
    /// lane's lock, it only queues frames for the connection's task.
    pub(crate) fn start(&self, request: Request<UpstreamBody>) -> Start {
        // A handle of its own: a handle whose stream waits for the upstream's stream limit
        // must be polled ready before it opens another, and the lane's handle is shared.
        let mut sender = self.sender.clone();
        // A fresh handle has no stream waiting, so this only reads the connection's state (and
        // registers nothing with the waker).
        if let Poll::Ready(Err(error)) = sender.poll_ready(&mut Context::from_waker(Waker::noop()))
        {
            self.ended.store(true, Ordering::Release);
            return Start::Closed(Box::new(request), error);
        }
        let (parts, body) = request.into_parts();
        let mut head = Request::from_parts(parts, ());
        // The head was rewritten for the upstream (`dataplane::headers::rewrite_request`): the
        // hop-by-hop fields, the names `Connection` lists and a `te` other than `trailers` are
        // gone. What is left is the `transfer-encoding: chunked` that `rewrite::upstream_head`
        // adds for hyper's HTTP/1.1 client; h2 refuses a head with it (and with any of the
        // others: `MalformedHeaders`, never sent).
        head.headers_mut().remove(header::TRANSFER_ENCODING);
        if let Some(len) = body.size_hint().exact()
            && (len != 0 || declares_empty_length(head.method(), head.headers()))
            && !head.headers().contains_key(header::CONTENT_LENGTH)
        {
            head.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        let end = body.is_end_stream();
        match sender.send_request(head, end) {
            Ok((answer, send)) => Start::Sent(H2Exchange {
                answer,
                // Boxed: only requests with a body have one, and it is larger than the rest.
                pipe: (!end).then(|| Box::new(RequestPipe::new(send, body))),
            }),
            Err(error) => Start::Failed(error),
        }
    }
}

/// Marks its connection ended when dropped: when the connection's task ends, however it ends.
struct EndMark(Arc<AtomicBool>);

impl Drop for EndMark {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A request's exchange on its stream: the response head, the request body sent meanwhile.
/// Dropped before the head arrives, it resets the stream (h2 does when the last reference to
/// a stream that has not ended goes).
pub(crate) struct H2Exchange {
    answer: h2::client::ResponseFuture,
    pipe: Option<Box<RequestPipe>>,
}

impl Future for H2Exchange {
    type Output = Result<Response<H2ResponseBody>, UpstreamError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(pipe) = &mut this.pipe {
            match pipe.poll(cx) {
                Poll::Ready(Ok(())) => this.pipe = None,
                // The body failed before the answer: that failure is the exchange's (so the
                // route's body limit is told as such, a 413).
                Poll::Ready(Err(PipeError::Body(error))) => {
                    return Poll::Ready(Err(UpstreamError::RequestBody(error)));
                }
                // The stream failed: the answer (a response sent early, or the reset) says how.
                Poll::Ready(Err(PipeError::Stream(_))) => this.pipe = None,
                Poll::Pending => {}
            }
        }
        let response =
            ready!(Pin::new(&mut this.answer).poll(cx)).map_err(UpstreamError::Stream)?;
        if let Some(pipe) = this.pipe.take() {
            tokio::spawn(pipe.finish());
        }
        let (parts, recv) = response.into_parts();
        let body = H2ResponseBody::new(recv, &parts.headers);
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}
