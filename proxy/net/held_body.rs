//! An upstream response body that keeps its request's pool slot ([`Admission`]) until the body
//! ends, fails or is dropped, and over HTTP/1.1 its connection ([`Lease`]), which goes back to
//! the lane's pool only when the body ended complete (never after an error or an early drop:
//! such a connection is closed).
//!
//! Over HTTP/1.1 the upstream connection stays busy until the whole response body has passed:
//! only then does it go back to the pool. Released at the response head, the slot
//! would let the next caller in while the connection is still streaming; that caller finds no
//! idle connection and waits for a dial in the connector (bounded by the connect timeout, not by
//! `upstream_pool`) and fails as busy there. Held to the body's end, `max_connections_per_host`
//! bounds the exchanges in flight, and everyone else waits in the gate's timed line.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::http1_pool::Lease;
use super::pool_gate::Admission;
use super::response_body::ResponseBody;
use super::upstream_body::BoxError;

/// The upstream's response body, holding its pool slot (and HTTP/1.1 connection) until it ends.
#[derive(Debug)]
pub struct HeldBody {
    body: ResponseBody,
    /// `None` once the body ended (or for an h2 exchange, which holds no slot).
    admission: Option<Admission>,
    /// The HTTP/1.1 connection from popgate's pool; `None` once given back or closed (or on h2).
    lease: Option<Lease>,
}

impl HeldBody {
    /// `body`, holding `admission` (and `lease`, its connection) until it ends.
    pub(crate) fn new(body: ResponseBody, admission: Admission, lease: Option<Lease>) -> Self {
        let admission = (!admission.multiplexed()).then_some(admission);
        Self {
            body,
            admission,
            lease,
        }
    }

    /// The body ended complete: the connection goes back to the pool, then the slot is freed.
    fn ended(&mut self) {
        match self.lease.take() {
            Some(lease) => lease.give_back(self.admission.take()),
            None => self.admission = None,
        }
    }
}

impl Drop for HeldBody {
    /// A body nobody read to its end (one with nothing to read, e.g. `204` or `HEAD`, is often
    /// never polled): its connection is reused only if the body is in fact complete.
    fn drop(&mut self) {
        if self.lease.is_some() && self.body.is_end_stream() {
            self.ended();
        }
    }
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            // The end: the connection is reused and the slot is free.
            Poll::Ready(None) => this.ended(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.ended(),
            // An error: the connection is closed, the slot is free.
            Poll::Ready(Some(Err(_))) => {
                this.lease = None;
                this.admission = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
