//! What one caller request did, as the data plane sees it: counted in its route's metrics when
//! answered, and written to the access log when that is on. Never holds the URI, a header or a
//! body: the access log must not leak a query string or a credential.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, header};

use super::{InFlight, RouteMetrics};
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
        }
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

    /// The answer is going back: count it, and write the access-log event when that is on.
    pub(crate) fn finish<B>(self, response: &Response<B>, listener_default_port: u16) {
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
        let bytes = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        tracing::info!(
            target: logging::ACCESS_TARGET,
            route,
            method = %self.method,
            status,
            upstream_status = self.upstream_status,
            upstream_sends = self.upstream_sends,
            duration_ms = duration_ms(self.started.elapsed()),
            upstream_ms = duration_ms(self.upstream_time),
            bytes,
            listener = if listener_default_port == 443 { "tls" } else { "plain" },
            "request"
        );
    }
}

fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
