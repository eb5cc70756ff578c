//! What one caller request did, as the data plane sees it: counted in its route's metrics when
//! answered, and written to the access log when that is on. Never holds the URI, a header or a
//! body: the access log must not leak a query string or a credential (the request's host is kept,
//! its path and query are not).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, Request, Response, header};

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
    /// The caller's declared body length.
    request_bytes: Option<u64>,
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
            request_bytes: content_length(request.headers()),
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

    /// The answer is going back: count it, and write the access-log event when that is on
    /// (`caller` is who sent it, `request_id` its `x-request-id`).
    pub(crate) fn finish<B>(
        self,
        response: &Response<B>,
        listener_default_port: u16,
        caller: &Caller,
        request_id: &HeaderValue,
    ) {
        let status = response.status().as_u16();
        let route = match &self.route {
            Some((name, handles)) => {
                handles.answered(status, self.started);
                name.as_ref()
            }
            None => {
                super::unrouted().answered(status, self.started);
                super::UNROUTED
            }
        };
        if !logging::access_log() {
            return;
        }
        // The declared length of the answer; a streamed body of unknown length logs none.
        let bytes = content_length(response.headers());
        tracing::info!(
            target: logging::ACCESS_TARGET,
            route,
            method = %self.method,
            host = self.host.as_deref(),
            caller = %caller,
            request_id = request_id.to_str().unwrap_or(""),
            status,
            upstream_status = self.upstream_status,
            upstream_sends = self.upstream_sends,
            duration_ms = duration_ms(self.started.elapsed()),
            token_wait_ms = duration_ms(self.token_wait),
            upstream_ms = duration_ms(self.upstream_time),
            bytes,
            request_bytes = self.request_bytes,
            listener = if listener_default_port == 443 { "tls" } else { "plain" },
            "request"
        );
    }
}

/// A message's declared body length; `None` for a streamed body of unknown length.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
