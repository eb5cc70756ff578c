//! The response-side body deadline of one HTTP/2 stream (`limits.response_body_timeout`): a
//! response the caller does not accept for this long is aborted, which releases the upstream
//! exchange it streams from (its HTTP/1.1 connection and pool slot, or its HTTP/2 stream) and the
//! request's in-flight count, while the connection's other streams go on.
//!
//! HTTP/1 has this deadline on the connection's writes (`progress.rs`). On HTTP/2 a caller that
//! keeps its stream's receive window at 0 (never sends WINDOW_UPDATE) makes hyper wait for send
//! capacity: nothing is written, so no write deadline runs, and hyper does not poll the body
//! meanwhile, so a timer inside `poll_frame` would never be looked at. Hence a watchdog task per
//! streamed response: it notes when hyper last took a frame and, if hyper has not come back for
//! the next one within the deadline, drops the body from under it. Only waiting for the caller
//! counts: while the body itself is pending (a slow upstream) the clock is stopped.
//!
//! What stays: hyper holds the stream open until the caller opens its window again (h2 offers a
//! server no way to reset a stream whose send is parked on flow control), with the one chunk it
//! had taken. The next poll then fails and hyper resets the stream. With no request left in
//! flight the connection becomes idle, so the keep-alive deadline closes it.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::locks::lock_unpoisoned;
use crate::metrics;

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a response was aborted.
#[derive(Debug, thiserror::Error)]
#[error("the caller accepted none of the response for {} ms", .0.as_millis())]
struct Unaccepted(Duration);

/// A response body under the per-stream deadline.
#[derive(Debug)]
pub(crate) struct StreamDeadline<B> {
    shared: Arc<Shared<B>>,
    limit: Duration,
    watchdog: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared<B> {
    state: Mutex<State<B>>,
}

#[derive(Debug)]
struct State<B> {
    /// `None` once aborted (or ended).
    body: Option<B>,
    aborted: bool,
    /// Since when a frame handed to hyper has not been followed by its next poll: hyper is
    /// waiting for the caller's flow control. `None` while hyper polls, or the body is pending.
    handed_at: Option<Instant>,
    /// hyper's task, woken on abort so it sees the end as soon as it polls.
    waker: Option<Waker>,
}

impl<B> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        // Critical sections only move fields and poll the body; a panic inside a body's poll
        // leaves at worst a body that is polled again, which a poisoned body can answer itself.
        lock_unpoisoned(&self.state)
    }
}

impl<B> StreamDeadline<B> {
    /// `body`, aborted once the caller leaves a frame unaccepted for `limit`.
    pub(crate) fn new(body: B, limit: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    body: Some(body),
                    aborted: false,
                    handed_at: None,
                    waker: None,
                }),
            }),
            limit,
            watchdog: None,
        }
    }
}

impl<B> Drop for StreamDeadline<B> {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.abort();
        }
    }
}

/// Waits for the deadline of the frame handed last; aborts the body when hyper has not come back.
async fn watch<B>(shared: Arc<Shared<B>>, limit: Duration) {
    loop {
        let due = match shared.lock().handed_at {
            Some(since) => since + limit,
            // hyper is polling, or the upstream is slow: look again a deadline later.
            None => Instant::now() + limit,
        };
        tokio::time::sleep_until(due).await;
        let mut state = shared.lock();
        let Some(since) = state.handed_at else {
            continue;
        };
        if since + limit > Instant::now() {
            continue;
        }
        let body = state.body.take();
        state.aborted = true;
        let waker = state.waker.take();
        drop(state);
        // Dropped outside the lock: this ends the upstream exchange and the in-flight count.
        drop(body);
        metrics::connections::body_stalled("http2", "response");
        tracing::info!(
            limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            "caller stopped accepting the response; stream aborted"
        );
        if let Some(waker) = waker {
            waker.wake();
        }
        return;
    }
}

impl<B> Body for StreamDeadline<B>
where
    B: Body + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.get_mut();
        let mut state = this.shared.lock();
        state.handed_at = None;
        let Some(body) = state.body.as_mut() else {
            return Poll::Ready(
                state
                    .aborted
                    .then(|| Err(Box::new(Unaccepted(this.limit)) as BoxError)),
            );
        };
        let polled = Pin::new(body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) if frame.is_data() && !body_ended(&state) => {
                state.handed_at = Some(Instant::now());
                if state
                    .waker
                    .as_ref()
                    .is_none_or(|w| !w.will_wake(cx.waker()))
                {
                    state.waker = Some(cx.waker().clone());
                }
                drop(state);
                if this.watchdog.is_none() {
                    let shared = Arc::clone(&this.shared);
                    this.watchdog = Some(tokio::spawn(watch(shared, this.limit)));
                }
            }
            Poll::Ready(None | Some(Err(_))) => {
                state.body = None;
                drop(state);
                if let Some(watchdog) = this.watchdog.take() {
                    watchdog.abort();
                }
            }
            _ => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        body_ended(&self.shared.lock())
    }

    fn size_hint(&self) -> SizeHint {
        self.shared
            .lock()
            .body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

fn body_ended<B: Body>(state: &State<B>) -> bool {
    match &state.body {
        Some(body) => body.is_end_stream(),
        None => !state.aborted,
    }
}
