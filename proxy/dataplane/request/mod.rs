//! One caller request, as a pipeline of named steps, one file each:
//!
//! guard → route → authorize → token → rewrite → send → pass back
//!
//! Each step returns `Result<Next, Response>`: `Ok` carries what the next step needs, `Err` is
//! popgate's own answer, sent back at once. Bodies pass through as `Incoming` both ways (hyper
//! polls the source only as fast as the sink accepts), so nothing is buffered whole.

// The `Err` of a step is the early answer itself (152 bytes), moved once to the caller; boxing it
// would cost an allocation per refusal for nothing.
#![allow(clippy::result_large_err)]

mod authorize;
mod guard;
mod path;
pub mod request_id;
mod respond;
pub mod rewrite;
mod route;
mod send;
mod token;
mod tunnel_host;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tracing::Instrument as _;

use crate::access::Caller;
use crate::dataplane::framing_guard::Verdict;
use crate::dataplane::limits::RequestLimits;
use crate::logging::trace_context;
use crate::metrics::body_bytes::Counted;
use crate::metrics::request::{AccessLine, Observed};
use crate::net::held_body::HeldBody;
use crate::route::slot::RouteSlot;
use crate::route::table::RouteTable;

pub use send::REPLAY_TOKEN_WAIT;
pub use token::FIRST_TOKEN_WAIT;

/// The route table the data plane reads: each route's payload is its snapshot slot.
pub type DataplaneTable = RouteTable<Arc<RouteSlot>>;

/// The body popgate answers with: the upstream's streamed body (holding its pool slot until it
/// ends, its bytes counted as they pass), or its own JSON.
pub type ProxyBody = Either<Counted<HeldBody>, Full<Bytes>>;

/// What a step hands on, or the answer that ends the request early.
type Step<T> = Result<T, Response<ProxyBody>>;

/// One caller connection as the request path sees it.
#[derive(Debug)]
pub(crate) struct Connection {
    /// Who connected (the routes' `allow` rules are checked against it).
    pub caller: Caller,
    /// The port a request target without one means: 80 on plain listeners, 443 on TLS.
    pub default_port: u16,
    guard: guard::ConnectionGuard,
    /// Inside a CONNECT tunnel: the tunnel's host (a route-table lookup key), which every
    /// request must name.
    tunnel: Option<Box<str>>,
    /// The listener's, shared: one pointer in every connection (a parked one too, issue 13).
    rules: Arc<RequestRules>,
}

/// What every connection checks its requests against; built once, shared by `Arc`.
#[derive(Debug)]
pub(crate) struct RequestRules {
    /// The head limits each request is held to.
    pub limits: RequestLimits,
    /// `limits.request_body_timeout`, applied per stream to HTTP/2 request bodies (HTTP/1's is
    /// on the connection's IO); `None`: not applied here.
    pub request_body_timeout: Option<Duration>,
}

impl Connection {
    /// A connection from `caller`, its requests held to `rules` and to what the framing guard
    /// behind `verdict` finds.
    pub(crate) fn new(
        caller: Caller,
        default_port: u16,
        rules: Arc<RequestRules>,
        verdict: Arc<Verdict>,
    ) -> Self {
        Self {
            caller,
            default_port,
            guard: guard::ConnectionGuard::new(verdict),
            tunnel: None,
            rules,
        }
    }

    /// The connection is a CONNECT tunnel to `host` (a route-table lookup key), when given.
    pub(crate) fn in_tunnel(mut self, host: Option<Box<str>>) -> Self {
        self.tunnel = host;
        self
    }
}

/// Forwards requests using the current route table. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Forwarder {
    table: Arc<ArcSwap<DataplaneTable>>,
    request_timeout: Duration,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// A forwarder reading `table` on every request; `request_timeout` applies to routes that do
    /// not set their own.
    pub fn new(table: Arc<ArcSwap<DataplaneTable>>, request_timeout: Duration) -> Self {
        Self {
            table,
            request_timeout,
        }
    }

    /// Serves one request arriving on `connection`, in a span of its own (its `route` is recorded
    /// once known; the caller is on the connection's span), which continues the caller's trace
    /// when trace export is on. Call it as the request arrives: the guard counts requests in
    /// arrival order, as the framing guard does. The future ends with `finish` applied to the
    /// answer (the connection wraps its body), so the caller need not wrap this future in one of
    /// its own.
    pub(crate) fn serve<F, T>(
        &self,
        connection: Arc<Connection>,
        mut request: Request<Incoming>,
        finish: F,
    ) -> impl Future<Output = T> + Send + use<F, T>
    where
        F: FnOnce(Response<ProxyBody>) -> T + Send + 'static,
    {
        let span = tracing::info_span!(
            "request",
            route = tracing::field::Empty,
            request_id = tracing::field::Empty,
            http.request.method = request.method().as_str(),
            http.response.status_code = tracing::field::Empty,
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
        );
        trace_context::continue_from(&span, request.headers());
        let admitted = span.in_scope(|| {
            let admitted = connection.guard.admit(&request, &connection.rules.limits)?;
            tunnel_host::check(&request, connection.tunnel.as_deref())?;
            Ok(admitted)
        });
        // After the guard: it counts the caller's header lines, not ours.
        let request_id = request_id::assign(request.headers_mut());
        span.record("request_id", request_id.to_str().unwrap_or(""));
        let forwarder = self.clone();
        // HTTP/1's body deadline is on the connection's IO; an HTTP/2 stream gets its own.
        let stall = connection
            .rules
            .request_body_timeout
            .filter(|_| request.version() == http::Version::HTTP_2);
        async move {
            let response = match admitted {
                Ok(admitted) => {
                    let (response, line) = forwarder
                        .handle(
                            request,
                            connection.default_port,
                            &connection.caller,
                            &request_id,
                            stall,
                        )
                        .await;
                    let response = connection.guard.cut_off(admitted).unwrap_or(response);
                    respond::logged(response, line)
                }
                Err(refusal) => refusal,
            };
            finish(answered(response, request_id))
        }
        .instrument(span)
    }

    /// The route table this forwarder reads (CONNECT interception checks a tunnel's host in it).
    pub(crate) fn table(&self) -> &ArcSwap<DataplaneTable> {
        &self.table
    }

    /// Handles one caller request that passed the connection's guard. `listener_default_port` is
    /// 80 on plain listeners, 443 on TLS; `caller` is who the listener saw on the connection;
    /// `stall`: the request body's per-stream progress deadline (HTTP/2).
    /// Counts it in the route's metrics and, when the access log is on, returns its line.
    // `handle` and `forward` are not `async fn`s: an `async fn` keeps each argument and the local
    // it is moved into both (the request twice, 264 bytes each), and every request's future is
    // copied whole as it is created and boxed (benches/MICRO.md, issue 13). Hence also the
    // `allow`s: `clippy::manual_async_fn` would undo this.
    #[allow(clippy::manual_async_fn)]
    fn handle<'a>(
        &'a self,
        request: Request<Incoming>,
        listener_default_port: u16,
        caller: &'a Caller,
        request_id: &'a http::HeaderValue,
        stall: Option<Duration>,
    ) -> impl Future<Output = (Response<ProxyBody>, Option<AccessLine>)> + Send + 'a {
        async move {
            let mut seen = Observed::start(&request);
            let response = match self
                .forward(request, listener_default_port, caller, stall, &mut seen)
                .await
            {
                Ok(response) | Err(response) => response,
            };
            let line = seen.finish(&response, listener_default_port, caller, request_id);
            (response, line)
        }
    }

    /// The steps after the connection's guard, in order.
    #[allow(clippy::manual_async_fn)]
    fn forward<'a>(
        &'a self,
        request: Request<Incoming>,
        listener_default_port: u16,
        caller: &'a Caller,
        stall: Option<Duration>,
        seen: &'a mut Observed,
    ) -> impl Future<Output = Step<Response<ProxyBody>>> + Send + 'a {
        async move {
            let target = guard::target(&request, listener_default_port)?;
            seen.host(target.host);
            let (route, uri) = route::find(&self.table, target, seen)?;
            let max_body = authorize::check(&route, caller, request.headers())?;
            // The span is there whether or not the route has its token (a trace shows the step);
            // only a real wait is timed.
            let token = token::usable(&route, self.request_timeout, seen)
                .instrument(tracing::debug_span!("token_wait"))
                .await?;
            let timeout = route.request_timeout(self.request_timeout);
            let outgoing = match rewrite::bodiless(request, uri, &token, max_body, stall) {
                Ok(outgoing) => outgoing?,
                // Boxed: only a request with a body needs room for reading it ahead.
                Err((request, uri)) => {
                    let read = rewrite::outgoing(request, uri, &token, max_body, timeout, stall);
                    Box::pin(read).await?
                }
            };
            // Boxed: the exchange's future is the largest part of this one (about 3.5 KB: the
            // request twice over, the replay copy, the upstream send), and every request's
            // future is copied whole into the box the connection keeps it in; boxed here, that
            // copy stays under the size where memcpy turns to `rep movsb` (benches/MICRO.md).
            let answer = Box::pin(send::exchange(&route, &token, outgoing, timeout, seen)).await?;
            Ok(respond::pass_back(answer, &seen.handles()))
        }
    }
}

/// The answer as the caller gets it: with the request's id, and its status on the request's span.
fn answered(
    mut response: Response<ProxyBody>,
    request_id: http::HeaderValue,
) -> Response<ProxyBody> {
    let status = response.status();
    let span = tracing::Span::current();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
        .headers_mut()
        .insert(request_id::REQUEST_ID, request_id);
    response
}
