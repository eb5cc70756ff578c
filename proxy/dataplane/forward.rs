//! One request: find its route, load the route's snapshot, rewrite, send through the snapshot's
//! client, stream the answer back. Bodies pass through as `Incoming` both ways (hyper polls the
//! source only as fast as the sink accepts), so nothing is buffered whole.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::Scheme;
use http::{Method, Request, Response, StatusCode, Version, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::error_response::{NoTokenDetail, Refusal};
use super::headers;
use super::limits::{self, LimitRefusal};
use super::request_target;
use super::www_authenticate;
use crate::access::{self, Caller};
use crate::metrics::request::Observed;
use crate::net::connect::ConnectError;
use crate::net::upstream_body::BodyTooLarge;
use crate::net::upstream_body::{UpstreamBody, read_ahead};
use crate::route::slot::{RouteSlot, Snapshot};
use crate::route::status::RouteStatus;
use crate::route::table::RouteTable;

/// The route table the data plane reads: each route's payload is its snapshot slot.
pub type DataplaneTable = RouteTable<Arc<RouteSlot>>;

/// The body popgate answers with: the upstream's streamed body, or its own JSON.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

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
    /// A forwarder reading `table` on every request.
    pub fn new(table: Arc<ArcSwap<DataplaneTable>>, request_timeout: Duration) -> Self {
        Self {
            table,
            request_timeout,
        }
    }

    /// Handles one caller request. `listener_default_port` is 80 on plain listeners, 443 on TLS;
    /// `caller` is who the listener saw on the connection. Counts it in the route's metrics and,
    /// when on, writes its access-log event.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        listener_default_port: u16,
        caller: &Caller,
    ) -> Response<ProxyBody> {
        let mut seen = Observed::start(&request);
        let response = self
            .forward(request, listener_default_port, caller, &mut seen)
            .await;
        seen.finish(&response, listener_default_port);
        response
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        listener_default_port: u16,
        caller: &Caller,
        seen: &mut Observed,
    ) -> Response<ProxyBody> {
        if request.method() == Method::CONNECT {
            tracing::debug!(target = %request.uri(), "CONNECT refused");
            return refuse(&Refusal::Connect);
        }
        // --- guard: the target names one plain host, the same in URL and Host header ---
        if let Err(reason) =
            request_target::check(request.uri(), request.headers(), listener_default_port)
        {
            tracing::info!(caller = %caller, reason, "ambiguous request target refused");
            return refuse(&Refusal::BadRequest { reason });
        }
        // --- end guard ---
        let (host, default_port) = match request_host(&request, listener_default_port) {
            Ok(found) => found,
            Err(reason) => return refuse(&Refusal::BadRequest { reason }),
        };
        let path_and_query = request.uri().path_and_query().map_or("/", |pq| pq.as_str());

        // Resolve everything the table tells us, then drop the table guard before any await.
        let (route, slot, uri) = {
            let table = self.table.load();
            let Some(found) = table.lookup(host, default_port, path_and_query) else {
                tracing::info!(host = host.unwrap_or(""), "no route; request refused");
                return refuse(&Refusal::NoRoute { host });
            };
            let uri = match found.upstream_uri() {
                Ok(uri) => uri,
                Err(_) => {
                    return refuse(&Refusal::BadRequest {
                        reason: "the request target cannot be mapped to an upstream URL",
                    });
                }
            };
            (
                Arc::clone(found.route.name_arc()),
                Arc::clone(found.route.payload()),
                uri,
            )
        };
        seen.routed(&route, slot.metrics(&route));
        // --- guard: caller rules and declared body size, before any token work ---
        let (admitted, max_body_bytes) = {
            let policy = slot.policy();
            (policy.admits(caller), policy.max_body_bytes)
        };
        if !admitted {
            tracing::info!(route = %route, caller = %caller, "caller not allowed on route");
            return access::denied_response(&route).map(Either::Right);
        }
        if let Some(max) = max_body_bytes
            && let Err(refusal) = limits::check_declared_length(request.headers(), max)
        {
            tracing::info!(route = %route, max, "declared body over the route's limit");
            return refusal.response().map(Either::Right);
        }
        // --- end guard ---
        let snapshot = match slot.snapshot.load_full() {
            Some(snapshot) => snapshot,
            None => match first_snapshot(&slot, self.request_timeout).await {
                Some(snapshot) => snapshot,
                None => return no_token(&route, &slot, false),
            },
        };

        // Never inject an expired token, even if the engine failed to replace it in time.
        if snapshot.expires_at <= SystemTime::now() {
            tracing::warn!(route = %route, generation = snapshot.generation, "route token expired");
            return no_token(&route, &slot, true);
        }
        let request_timeout = slot.info().request_timeout.unwrap_or(self.request_timeout);

        let (mut parts, body) = request.into_parts();
        let chunked = body_needs_chunked(&body);
        upstream_head(&mut parts, &snapshot.authorization, uri, chunked);

        let body = match tokio::time::timeout(request_timeout, read_ahead(body)).await {
            Ok(Ok(body)) => body,
            Ok(Err(error)) => {
                tracing::info!(route = %route, error = %error, "caller body unreadable");
                return refuse(&Refusal::BadRequest {
                    reason: "the request body could not be read",
                });
            }
            Err(_) => {
                return refuse(&Refusal::BadRequest {
                    reason: "the request body did not arrive within the request timeout",
                });
            }
        };
        // --- guard: a body of unknown length is cut off past the route's limit ---
        let body = match max_body_bytes {
            Some(max) if body.buffered_len().is_some_and(|n| n > max) => {
                tracing::info!(route = %route, max, "body over the route's limit");
                return LimitRefusal::BodyTooLarge { max }
                    .response()
                    .map(Either::Right);
            }
            Some(max) if body.buffered_len().is_none() => body.limited(max),
            _ => body,
        };
        // --- end guard ---
        // What a replay needs: the head (header values are shared, not copied) and the body
        // chunks read ahead. Streams larger than the replay limit keep none of it.
        let replay = body.replayable().map(|body| (Head::of(&parts), body));

        let response = match self
            .send(
                &route,
                &snapshot,
                Request::from_parts(parts, body),
                request_timeout,
                seen,
            )
            .await
        {
            Ok(response) => response,
            Err(refusal) => return refusal,
        };
        if response.status() == StatusCode::UNAUTHORIZED
            && www_authenticate::refuses_token(response.headers())
        {
            // Whether or not this request can be replayed, the token is dropped for the next ones.
            slot.demand_invalidate(snapshot.generation);
            tracing::info!(
                route = %route,
                generation = snapshot.generation,
                replayable = replay.is_some(),
                "upstream refused the token (401 invalid_token)"
            );
            if let Some((head, body)) = replay
                && let Some(fresh) =
                    newer_snapshot(&slot, snapshot.generation, request_timeout).await
            {
                let request = head.into_request(&fresh.authorization, body);
                return match self
                    .send(&route, &fresh, request, request_timeout, seen)
                    .await
                {
                    Ok(response) => {
                        tracing::info!(route = %route, generation = fresh.generation, status = response.status().as_u16(), "replayed with a new token");
                        if response.status() == StatusCode::UNAUTHORIZED
                            && www_authenticate::refuses_token(response.headers())
                        {
                            slot.demand_invalidate(fresh.generation);
                        }
                        pass_back(&route, response)
                    }
                    Err(refusal) => refusal,
                };
            }
        }
        pass_back(&route, response)
    }

    /// Sends one request through `snapshot`'s client within `timeout`; a failure becomes popgate's
    /// own 502/504 answer.
    async fn send(
        &self,
        route: &str,
        snapshot: &Snapshot,
        request: Request<UpstreamBody>,
        timeout: Duration,
        seen: &mut Observed,
    ) -> Result<Response<Incoming>, Response<ProxyBody>> {
        let sent = Instant::now();
        let result = tokio::time::timeout(timeout, snapshot.client.request(request)).await;
        seen.upstream(sent, &result);
        match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => {
                // --- guard: the route's body limit cut the body off (413, not 502) ---
                if let Some(too_large) = body_too_large(&error) {
                    tracing::info!(route = %route, max = too_large.max, "body cut off at the route's limit");
                    return Err(LimitRefusal::BodyTooLarge { max: too_large.max }
                        .response()
                        .map(Either::Right));
                }
                // --- end guard ---
                let (cause, timed_out) = describe(&error);
                tracing::warn!(route = %route, cause = %cause, "upstream request failed");
                Err(if timed_out {
                    refuse(&Refusal::Timeout {
                        route,
                        cause: &cause,
                    })
                } else {
                    refuse(&Refusal::Unreachable {
                        route,
                        cause: &cause,
                    })
                })
            }
            Err(_) => {
                let cause = format!("no response head within {} ms", timeout.as_millis());
                tracing::warn!(route = %route, cause = %cause, "upstream timed out");
                Err(refuse(&Refusal::Timeout {
                    route,
                    cause: &cause,
                }))
            }
        }
    }
}

/// How long a request whose token the upstream refused waits for the engine's next token before
/// the refusal goes back to the caller: an acquisition normally takes well under a second.
pub const REPLAY_TOKEN_WAIT: Duration = Duration::from_secs(10);

/// How long the first request of a route without a token (lazy, or still acquiring at start) waits
/// for one: long enough for an acquisition with a retry, short of common 30 s client timeouts.
/// Capped by the route's request timeout.
pub const FIRST_TOKEN_WAIT: Duration = Duration::from_secs(25);

/// The request head kept for a replay.
struct Head {
    method: Method,
    uri: http::Uri,
    headers: http::HeaderMap,
}

impl Head {
    fn of(parts: &http::request::Parts) -> Self {
        Self {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }
    }

    fn into_request(
        self,
        authorization: &http::HeaderValue,
        body: UpstreamBody,
    ) -> Request<UpstreamBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers;
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, authorization.clone());
        request
    }
}

/// Turns a caller's request head into the one sent upstream: headers rewritten with the
/// snapshot's `authorization`, the upstream `uri`, HTTP/1.1, no extensions. `chunked`: the
/// caller's body has an unknown length.
///
/// Public (hidden) so `benches/hot_path.rs` measures exactly the per-request head work.
#[doc(hidden)]
pub fn upstream_head(
    parts: &mut http::request::Parts,
    authorization: &http::HeaderValue,
    uri: http::Uri,
    chunked: bool,
) {
    headers::rewrite_request(&mut parts.headers, parts.version, authorization);
    if chunked {
        // hyper's h1 client assumes a GET/HEAD of unknown length has no body; say there is one
        // so a caller's chunked GET body is not dropped (hyper removes this header on h2).
        parts.headers.insert(
            header::TRANSFER_ENCODING,
            http::HeaderValue::from_static("chunked"),
        );
    }
    parts.uri = uri;
    // hyper-util picks h1 or h2 by what the connection negotiated; h1 requires this version.
    parts.version = Version::HTTP_11;
    parts.extensions = http::Extensions::new();
}

/// The upstream's answer, rewritten for the caller.
fn pass_back(route: &str, response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    tracing::debug!(route = %route, status = parts.status.as_u16(), "forwarded");
    let version = parts.version;
    headers::rewrite_response(&mut parts.headers, version);
    // The caller's connection decides its own version.
    parts.version = Version::HTTP_11;
    Response::from_parts(parts, Either::Left(body))
}

/// For a route with no snapshot yet whose driver is running: start it (lazy routes) and wait,
/// bounded, for its first publish or failure.
async fn first_snapshot(slot: &RouteSlot, request_timeout: Duration) -> Option<Arc<Snapshot>> {
    if !slot.status().is_pending() || !slot.has_driver() {
        return None;
    }
    slot.demand_start();
    let wait = FIRST_TOKEN_WAIT.min(request_timeout);
    slot.wait_until(wait, |s| {
        s.snapshot.load().is_some() || !s.status().is_pending()
    })
    .await;
    slot.snapshot.load_full()
}

/// Waits, bounded, for a snapshot newer than `refused`; `None` when the engine withdrew the route
/// or did not publish in time.
async fn newer_snapshot(
    slot: &RouteSlot,
    refused: u64,
    request_timeout: Duration,
) -> Option<Arc<Snapshot>> {
    let is_newer = |s: &RouteSlot| {
        s.snapshot
            .load()
            .as_ref()
            .is_some_and(|snap| snap.generation > refused)
    };
    slot.wait_until(REPLAY_TOKEN_WAIT.min(request_timeout), |s| {
        is_newer(s) || !s.status().is_serving()
    })
    .await;
    slot.snapshot
        .load_full()
        .filter(|snap| snap.generation > refused && snap.expires_at > SystemTime::now())
}

/// The 503 for a route without a usable token, naming what the engine knows.
fn no_token(route: &str, slot: &RouteSlot, expired: bool) -> Response<ProxyBody> {
    let status = slot.status();
    let error = status.error();
    let cause = match (&*status, error) {
        (_, Some(error)) => Some(error.message.as_str()),
        (RouteStatus::Pending { .. }, None) => Some("the route's token is still being acquired"),
        _ => None,
    };
    let identity = slot.info().identity.as_deref();
    let retry_after = status.next_attempt().map(|at| {
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        // Round up: "retry in 0 s" would invite a retry storm.
        wait.as_secs() + u64::from(wait.subsec_nanos() > 0 || wait.is_zero())
    });
    let detail = NoTokenDetail {
        identity,
        cause,
        failed_identity: error
            .map(|e| e.identity.as_str())
            .filter(|failed| Some(*failed) != identity),
        aadsts: error.and_then(|e| e.aadsts),
        correlation_id: error.and_then(|e| e.correlation_id.as_deref()),
        retry_after,
    };
    tracing::warn!(
        route = %route,
        status = status.label(),
        cause = cause.unwrap_or(""),
        "no usable token for route"
    );
    if expired {
        refuse(&Refusal::TokenExpired { route, detail })
    } else {
        refuse(&Refusal::NoToken { route, detail })
    }
}

/// A body of unknown length that is not already finished.
fn body_needs_chunked(body: &Incoming) -> bool {
    use http_body::Body as _;
    !body.is_end_stream() && body.size_hint().exact().is_none()
}

fn refuse(refusal: &Refusal<'_>) -> Response<ProxyBody> {
    refusal.response().map(Either::Right)
}

/// The host to route on and the default port of the caller's scheme. Absolute-form URIs (and h2's
/// `:authority`) win over the Host header, as RFC 9112 §3.2.2 requires.
fn request_host(
    request: &Request<Incoming>,
    listener_default_port: u16,
) -> Result<(Option<&str>, u16), &'static str> {
    let uri = request.uri();
    if let Some(authority) = uri.authority() {
        if authority.as_str().contains('@') {
            return Err("credentials in the request URL are not forwarded; remove user:password@");
        }
        let port = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => 443,
            Some(s) if *s == Scheme::HTTP => 80,
            _ => listener_default_port,
        };
        return Ok((Some(authority.as_str()), port));
    }
    match request.headers().get(header::HOST) {
        Some(value) => match value.to_str() {
            Ok(host) if !host.contains('@') => Ok((Some(host), listener_default_port)),
            _ => Err("the Host header is not a valid host name"),
        },
        None => Ok((None, listener_default_port)),
    }
}

/// The route body limit's error, if it is what failed the exchange.
fn body_too_large(error: &hyper_util::client::legacy::Error) -> Option<&BodyTooLarge> {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(found) = e.downcast_ref::<BodyTooLarge>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

/// The caller-facing cause of a failed upstream exchange, and whether it was a timeout.
fn describe(error: &hyper_util::client::legacy::Error) -> (String, bool) {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(connect) = e.downcast_ref::<ConnectError>() {
            return (connect.to_string(), connect.is_timeout());
        }
        source = e.source();
    }
    // Not a connect failure: the upstream broke the exchange (reset, malformed response, ...).
    let mut cause = String::from("upstream exchange failed");
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = source {
        cause.push_str(": ");
        cause.push_str(&e.to_string());
        source = e.source();
    }
    (cause, false)
}
