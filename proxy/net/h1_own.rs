//! A bodiless request on an HTTP/1.1 upstream connection through popgate's own codec
//! ([`super::h1_codec`]), in the request's own task: the head written, the response head parsed
//! in the poll that reads it, the body read as the caller takes it, and the connection given
//! back to the pool by the body at its end (when the answer allows another request on it).
//!
//! Against hyper's client for the same requests (benches/MICRO.md, tenth session): −3.5%
//! instructions per request, +5.4% requests per CPU-second. A request whose write fails on a
//! reused connection is given back unsent (the upstream had closed it); once written, never sent
//! again.

use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Bytes, BytesMut};
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadBuf};

use crate::net::connect::UpstreamConn;
use crate::net::h1_codec::chunked::{ChunkedDecoder, Decoded};
use crate::net::h1_codec::framing::{self, BodyFraming, Interim};
use crate::net::h1_codec::request_head::{self, RequestFraming};
use crate::net::h1_codec::response_head;
use crate::net::upstream_body::{BoxError, UpstreamBody, declares_empty_length};

/// Bytes a read asks for at least.
const READ_RESERVE: usize = 16 * 1024;

/// An HTTP/1.1 connection read and written by popgate's codec.
pub(crate) struct OwnConn {
    /// Boxed: the TLS stream is large, and the connection moves between the pool, the exchange
    /// and the body.
    pub(crate) io: Box<UpstreamConn>,
    buf: BytesMut,
}

/// Where a finished body's connection goes.
pub(crate) type GiveBack = Box<dyn FnOnce(OwnConn) + Send + Sync>;

impl OwnConn {
    pub(crate) fn new(io: Box<UpstreamConn>) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Open and idle: the upstream neither closed it nor sent anything since.
    pub(crate) fn is_idle(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut read = ReadBuf::new(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut *self.io)
            .poll_read(&mut cx, &mut read)
            .is_pending()
    }

    /// Whether nothing is left unread (a connection handed to hyper must not hold bytes).
    pub(crate) fn is_clean(&self) -> bool {
        self.buf.is_empty()
    }
}

/// Why an exchange through the codec failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OwnError {
    #[error("the upstream connection failed")]
    Io(#[from] std::io::Error),
    #[error("the upstream closed the connection before its response")]
    Closed,
    #[error(transparent)]
    Head(#[from] response_head::HeadError),
    #[error(transparent)]
    Framing(#[from] framing::FramingError),
    #[error(transparent)]
    Chunk(#[from] crate::net::h1_codec::chunked::ChunkError),
    #[error("the upstream closed the connection before the end of the response body")]
    BodyCut,
}

/// Sends bodiless `request` on `conn` and reads the response head. The request is only borrowed
/// (the caller keeps it, e.g. for a replay without a copy: [`super::kept_head`]), which also
/// keeps it out of this future. `Err((error, true))` when the request was certainly not written
/// (the first write failed).
pub(crate) async fn exchange(
    mut conn: OwnConn,
    request: &Request<UpstreamBody>,
    give_back: GiveBack,
) -> Result<Response<OwnBody>, (OwnError, bool)> {
    let method = request.method();
    let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let framing = if declares_empty_length(method, request.headers()) {
        RequestFraming::Length(0)
    } else {
        RequestFraming::None
    };
    let mut head = BytesMut::new();
    request_head::write(method, target, request.headers(), framing, &mut head);
    if let Err(error) = conn.io.write_all(&head).await {
        return Err((error.into(), true));
    }
    conn.io
        .flush()
        .await
        .map_err(|e| (OwnError::from(e), false))?;
    let head = loop {
        match response_head::take(&mut conn.buf).map_err(|e| (e.into(), false))? {
            Some(head) => match framing::interim(head.status).map_err(|e| (e.into(), false))? {
                Interim::Skip => continue,
                Interim::Final => break head,
            },
            None => {
                conn.buf.reserve(READ_RESERVE);
                let n = conn
                    .io
                    .read_buf(&mut conn.buf)
                    .await
                    .map_err(|e| (e.into(), false))?;
                if n == 0 {
                    return Err((OwnError::Closed, false));
                }
            }
        }
    };
    let (body_framing, reusable) =
        framing::framing(method, head.status, head.version, &head.headers)
            .map_err(|e| (e.into(), false))?;
    let state = match body_framing {
        BodyFraming::Empty | BodyFraming::Length(0) => State::Done,
        BodyFraming::Length(n) => State::Length(n),
        BodyFraming::Chunked => State::Chunked(ChunkedDecoder::new()),
        BodyFraming::UntilClose => State::UntilClose,
    };
    let mut body = OwnBody {
        conn: Some(conn),
        state,
        reusable,
        give_back: Some(give_back),
    };
    if matches!(body.state, State::Done) {
        body.finish();
    }
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = Version::HTTP_11;
    *response.headers_mut() = head.headers;
    Ok(response)
}

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// A response body read from its connection as the caller takes it.
pub struct OwnBody {
    conn: Option<OwnConn>,
    state: State,
    reusable: bool,
    give_back: Option<GiveBack>,
}

impl std::fmt::Debug for OwnBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnBody")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl OwnBody {
    /// The body has ended: the connection goes back to the pool if it may carry another request.
    fn finish(&mut self) {
        self.state = State::Done;
        let conn = self.conn.take();
        if let (Some(conn), Some(give_back)) = (conn, self.give_back.take())
            && self.reusable
            && conn.buf.is_empty()
        {
            give_back(conn);
        }
    }

    /// Reads more into the buffer: `Ok(false)` at the upstream's close.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, OwnError>> {
        let Some(conn) = &mut self.conn else {
            return Poll::Ready(Ok(false));
        };
        conn.buf.reserve(READ_RESERVE);
        // tokio's read into spare capacity, polled once (dropping it unfinished loses nothing).
        let read = std::pin::pin!(conn.io.read_buf(&mut conn.buf));
        let n = ready!(std::future::Future::poll(read, cx))?;
        Poll::Ready(Ok(n > 0))
    }
}

impl Body for OwnBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = &mut this.conn else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(remaining) => {
                    if !conn.buf.is_empty() {
                        let n = usize::try_from(*remaining)
                            .map_or(conn.buf.len(), |r| r.min(conn.buf.len()));
                        let data = conn.buf.split_to(n).freeze();
                        *remaining -= n as u64;
                        if *remaining == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::Chunked(decoder) => match decoder.decode(&mut conn.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(trailers)) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(error) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(OwnError::from(error).into())));
                    }
                },
                State::UntilClose => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match ready!(this.poll_more(cx)) {
                Ok(true) => {}
                Ok(false) if matches!(this.state, State::UntilClose) => {
                    this.reusable = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(false) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(OwnError::BodyCut.into())));
                }
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
