//! What one caller request did, as the data plane sees it: counted in its route's metrics when
//! answered, and written to the access log when that is on, as one line when the response body
//! ends (or is cut short) with the body bytes counted both ways. Never holds the URI, a header or
//! a body: the access log must not leak a query string or a credential (the request's host is
//! kept, its path and query are not).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, Response, StatusCode};

use super::{InFlight, RouteMetrics};
use crate::access::Caller;
use crate::logging;

/// One request's observations, from arrival to its response head.
#[derive(Debug)]
pub(crate) struct Observed {
    started: Instant,
    method: Method,
    route: Option<(Arc<str>, Arc<RouteMetrics>)>,
    _in_flight: Option<InFlight>,
    upstream_status: Option<u16>,
    upstream_time: Duration,
    upstream_sends: u32,
    token_wait: Duration,
    /// The request's host (kept only while the access log is on).
    host: Option<Box<str>>,
    /// The request body bytes passed upstream (only while the access log is on).
    received: Option<Arc<AtomicU64>>,
}

impl Observed {
    /// Starts observing `request` (its method only).
    pub(crate) fn start<B>(request: &Request<B>) -> Self {
        Self {
            started: Instant::now(),
            method: request.method().clone(),
            route: None,
            _in_flight: None,
            upstream_status: None,
            upstream_time: Duration::ZERO,
            upstream_sends: 0,
            token_wait: Duration::ZERO,
            host: None,
            received: logging::access_log().then(Arc::default),
        }
    }

    /// The host the request named (recorded for the access log only when it is on).
    pub(crate) fn host(&mut self, host: Option<&str>) {
        if logging::access_log() {
            self.host = host.map(Into::into);
        }
    }

    /// The request waited `waited` for its route's token.
    pub(crate) fn token_wait(&mut self, waited: Duration) {
        self.token_wait += waited;
    }

    /// The request matched `route` (a configured name) whose metric handles are `handles`
    /// (`RouteSlot::metrics`): counted in flight from now.
    pub(crate) fn routed(&mut self, route: &Arc<str>, handles: Arc<RouteMetrics>) {
        self._in_flight = Some(handles.in_flight());
        self.route = Some((Arc::clone(route), handles));
    }

    /// The handles this request counts in: its route's, or the unrouted ones.
    pub(crate) fn handles(&self) -> Arc<RouteMetrics> {
        match &self.route {
            Some((_, handles)) => Arc::clone(handles),
            None => super::unrouted(),
        }
    }

    /// What the request body sent upstream reports to the access log (`None` while it is off).
    pub(crate) fn request_body_report(&self) -> Option<Box<Report>> {
        let to = Arc::clone(self.received.as_ref()?);
        Some(Box::new(Report::Request { passed: 0, to }))
    }

    /// One upstream send, begun at `sent`, ended with `result` (a timeout, an error or a head).
    pub(crate) fn upstream<B, E, T>(
        &mut self,
        sent: Instant,
        result: &Result<Result<Response<B>, E>, T>,
    ) {
        let elapsed = sent.elapsed();
        self.upstream_time += elapsed;
        self.upstream_sends += 1;
        self.upstream_status = match result {
            Ok(Ok(response)) => Some(response.status().as_u16()),
            _ => None,
        };
        if let Some((_, handles)) = &self.route {
            handles.upstream(elapsed);
        }
    }

    /// The answer's head is going back: count it. While the access log is on, returns the
    /// request's line, to be written when the answer's body ends ([`AccessLine::follow`]);
    /// `caller` is who sent it, `request_id` its `x-request-id`.
    pub(crate) fn finish<B>(
        self,
        response: &Response<B>,
        listener_default_port: u16,
        caller: &Caller,
        request_id: &HeaderValue,
    ) -> Option<AccessLine> {
        let status = response.status().as_u16();
        match &self.route {
            Some((_, handles)) => handles.answered(status, self.started),
            None => super::unrouted().answered(status, self.started),
        }
        let received = self.received?;
        Some(AccessLine {
            span: tracing::Span::current(),
            started: self.started,
            head: self.started.elapsed(),
            route: self.route.map(|(name, _)| name),
            method: self.method,
            host: self.host,
            caller: caller.to_string(),
            request_id: request_id.clone(),
            status,
            upstream_status: self.upstream_status,
            upstream_sends: self.upstream_sends,
            token_wait: self.token_wait,
            upstream_time: self.upstream_time,
            received,
            sent: 0,
            tls: listener_default_port == 443,
            written: false,
        })
    }
}

/// How a response body ended, as the access log says it (`outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every byte was passed to the caller's connection.
    Complete,
    /// The body was dropped before its end: the caller went away (or reset its stream), or the
    /// connection was closed under it (a deadline, the drain's end).
    Aborted,
    /// The upstream's body failed part-way; the caller's connection is cut.
    UpstreamError,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Aborted => "aborted",
            Outcome::UpstreamError => "upstream_error",
        }
    }
}

/// What a counted body reports besides its route's byte counter, while the access log is on.
// Always boxed where it is held (`Counted`'s `Option<Box<Report>>`), so the variants' sizes cost
// nothing; boxing the line as well would be a second allocation per response.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Report {
    /// A request body sent upstream: the most bytes one send passed (a replay sends the same
    /// bytes again, and they were received from the caller once).
    Request {
        /// The bytes this send passed.
        passed: u64,
        /// The request's count, read by its line.
        to: Arc<AtomicU64>,
    },
    /// A response body passed back: its request's line, written when the body ends.
    Response(AccessLine),
}

impl Report {
    /// `n` more data bytes passed.
    pub(crate) fn passed(&mut self, n: u64) {
        match self {
            Report::Request { passed, to } => {
                *passed += n;
                to.fetch_max(*passed, Ordering::Relaxed);
            }
            Report::Response(line) => line.sent += n,
        }
    }

    /// The body ended with `outcome`: a response's line is written.
    pub(crate) fn end(&mut self, outcome: Outcome) {
        if let Report::Response(line) = self {
            line.write(outcome);
        }
    }
}

/// One request's access-log line, written once: when its response body ends or fails, or, if it
/// is dropped first, as aborted with the bytes sent so far.
#[derive(Debug)]
pub(crate) struct AccessLine {
    /// The request's span: the line is written in it, wherever the body ends.
    span: tracing::Span,
    started: Instant,
    /// From the request's arrival to its response head.
    head: Duration,
    route: Option<Arc<str>>,
    method: Method,
    host: Option<Box<str>>,
    caller: String,
    request_id: HeaderValue,
    status: u16,
    upstream_status: Option<u16>,
    upstream_sends: u32,
    token_wait: Duration,
    upstream_time: Duration,
    /// Request body bytes passed upstream (the most of any one send).
    received: Arc<AtomicU64>,
    /// Response body bytes passed to the caller's connection.
    sent: u64,
    tls: bool,
    written: bool,
}

impl AccessLine {
    /// The status the caller gets (the answer may have been replaced after its head was counted:
    /// a request cut off while forwarding gets 413).
    pub(crate) fn status(&mut self, status: StatusCode) {
        self.status = status.as_u16();
    }

    /// A body of `len` bytes (popgate's own answer, one buffer) was handed back whole.
    pub(crate) fn write_whole(mut self, len: u64) {
        self.sent = len;
        self.write(Outcome::Complete);
    }

    /// Writes the line (once).
    pub(crate) fn write(&mut self, outcome: Outcome) {
        if std::mem::replace(&mut self.written, true) {
            return;
        }
        let _entered = self.span.enter();
        tracing::info!(
            target: logging::ACCESS_TARGET,
            route = self.route.as_deref().unwrap_or(super::UNROUTED),
            method = %self.method,
            host = self.host.as_deref(),
            caller = %self.caller,
            request_id = self.request_id.to_str().unwrap_or(""),
            status = self.status,
            upstream_status = self.upstream_status,
            upstream_sends = self.upstream_sends,
            outcome = outcome.as_str(),
            duration_ms = duration_ms(self.started.elapsed()),
            head_ms = duration_ms(self.head),
            token_wait_ms = duration_ms(self.token_wait),
            upstream_ms = duration_ms(self.upstream_time),
            bytes_received = self.received.load(Ordering::Relaxed),
            bytes_sent = self.sent,
            listener = if self.tls { "tls" } else { "plain" },
            "request"
        );
    }
}

impl Drop for AccessLine {
    /// A line never written by its body's end: the body was dropped first.
    fn drop(&mut self) {
        self.write(Outcome::Aborted);
    }
}

fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
