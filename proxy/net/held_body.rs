//! An upstream response body that keeps its request's pool slot ([`Admission`]) until the body
//! ends, fails or is dropped.
//!
//! Over HTTP/1.1 the upstream connection stays busy until the whole response body has passed:
//! only then does hyper-util put it back in the pool. Released at the response head, the slot
//! would let the next caller in while the connection is still streaming; that caller finds no
//! idle connection and waits for a dial in the connector (bounded by the connect timeout, not by
//! `upstream_pool`) and fails as busy there. Held to the body's end, `max_connections_per_host`
//! bounds the exchanges in flight, and everyone else waits in the gate's timed line.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::pool_gate::Admission;

/// The upstream's response body, holding its pool slot until it ends.
#[derive(Debug)]
pub struct HeldBody {
    body: Incoming,
    /// `None` once the body ended (or for an h2 exchange, which holds no slot).
    admission: Option<Admission>,
}

impl HeldBody {
    /// `body`, holding `admission` until it ends.
    pub(crate) fn new(body: Incoming, admission: Admission) -> Self {
        let admission = (!admission.multiplexed()).then_some(admission);
        Self { body, admission }
    }
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            // The end, or an error (the connection is not reused): the slot is free.
            Poll::Ready(None | Some(Err(_))) => this.admission = None,
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.admission = None,
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
