//! Step 6, send: the request through the snapshot's pooled client, within the request timeout.
//! An upstream that refuses the token (`401` with `invalid_token`) makes the engine drop it; a
//! request read whole is then sent once more with the next token, if one comes in time.

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Request, Response, StatusCode};
use http_body_util::LengthLimitError;
use tracing::Instrument as _;

use super::Step;
use super::respond::{refuse, refuse_limit};
use super::rewrite::Outgoing;
use super::route::Route;
use crate::config::limits::{MAX_DURATION, POOL_BUSY_RETRY_AFTER_SECS};
use crate::dataplane::error_response::Refusal;
use crate::dataplane::headers;
use crate::dataplane::limits::LimitRefusal;
use crate::dataplane::www_authenticate;
use crate::logging::trace_context;
use crate::metrics::request::Observed;
use crate::net::connect::ConnectError;
use crate::net::held_body::HeldBody;
use crate::net::kept_head::KeptHead;
use crate::net::stall_body::StallFlag;
use crate::net::upstream_body::UpstreamBody;
use crate::net::upstream_error::UpstreamError;
use crate::route::slot::{RouteSlot, Snapshot};

/// How long a request whose token the upstream refused waits for the engine's next token before
/// the refusal goes back to the caller: an acquisition normally takes well under a second.
pub const REPLAY_TOKEN_WAIT: Duration = Duration::from_secs(10);

/// The upstream's error type, whose sources say what failed.
type ClientError = UpstreamError;

/// Sends `outgoing` with `snapshot`, and replays it once if the upstream refuses the token.
pub(super) async fn exchange(
    route: &Route,
    snapshot: &Snapshot,
    outgoing: Outgoing,
    timeout: Duration,
    seen: &mut Observed,
) -> Step<Response<HeldBody>> {
    let Outgoing {
        request,
        replay,
        max_body,
        stalled,
    } = outgoing;
    // The head as sent, kept for a replay when the body is (see `net::kept_head`).
    let mut kept = None;
    let sending = Sending {
        route,
        snapshot,
        timeout,
        max_body,
        keep_head: replay.is_some().then_some(&mut kept),
    };
    let response = send(sending, request, seen)
        .await
        .map_err(|refused| stall_refusal(stalled.as_ref()).unwrap_or(refused))?;
    if !refuses_token(&response) {
        return Ok(response);
    }
    // Whether or not this request can be replayed, the token is dropped for the next ones.
    route.slot.demand_invalidate(snapshot.generation);
    tracing::info!(
        generation = snapshot.generation,
        replayable = replay.is_some(),
        "upstream refused the token (401 invalid_token)"
    );
    let (Some(body), Some(head)) = (replay, kept) else {
        return Ok(response);
    };
    let Some(fresh) = newer_snapshot(&route.slot, snapshot.generation, timeout).await else {
        return Ok(response);
    };
    let mut request = head.into_request(body);
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        headers::upstream_authorization(&fresh.authorization),
    );
    let sending = Sending {
        route,
        snapshot: &fresh,
        timeout,
        max_body,
        keep_head: None,
    };
    let response = send(sending, request, seen).await?;
    tracing::info!(
        generation = fresh.generation,
        status = response.status().as_u16(),
        "replayed with a new token"
    );
    if refuses_token(&response) {
        route.slot.demand_invalidate(fresh.generation);
    }
    Ok(response)
}

/// popgate's `408` when the exchange failed because the caller's body stalled (the upstream
/// saw an aborted body, so its failure is the caller's doing, not the upstream's).
fn stall_refusal(stalled: Option<&StallFlag>) -> Option<http::Response<super::ProxyBody>> {
    stalled
        .filter(|flag| flag.stalled())
        .map(|_| refuse(&Refusal::BodyStalled))
}

/// A `401` whose `WWW-Authenticate` says the token itself was refused.
fn refuses_token(response: &Response<HeldBody>) -> bool {
    response.status() == StatusCode::UNAUTHORIZED
        && www_authenticate::refuses_token(response.headers())
}

/// Sends one request through `snapshot`'s client within `timeout` (waiting for a connection
/// included); a failure becomes popgate's own 502/504 answer, 503 when every connection to the
/// host stayed busy, or 413 when the route's `max_body` cut the body off. In a span of its own,
/// which the upstream sees as its parent (`traceparent`) when trace export is on.
// Not an `async fn`: it returns the instrumented exchange itself, where an `async fn` would wrap
// it in one more state machine (a second copy of the request, and one more copy of the whole
// future when it is awaited: benches/MICRO.md, issue 13).
fn send<'a>(
    sending: Sending<'a>,
    mut request: Request<UpstreamBody>,
    seen: &'a mut Observed,
) -> impl Future<Output = Step<Response<HeldBody>>> + Send + 'a {
    let span = tracing::debug_span!(
        "upstream",
        otel.kind = "client",
        server.address = request.uri().host().unwrap_or(""),
        http.response.status_code = tracing::field::Empty,
    );
    trace_context::inject(&span, request.headers_mut());
    let request = request.map(|body| body.counted(&seen.handles(), seen.request_body_report()));
    exchange_once(sending, span.clone(), request, seen).instrument(span)
}

/// What [`send`] sends with.
struct Sending<'a> {
    route: &'a Route,
    snapshot: &'a Snapshot,
    timeout: Duration,
    max_body: Option<u64>,
    /// Where the request's head as sent is kept, when it may be replayed.
    keep_head: Option<&'a mut Option<KeptHead>>,
}

/// [`send`]'s work, inside its span: `request`'s body is counted already; `span` is the
/// exchange's own (it records the status the upstream answered).
// Not an `async fn`, which would keep `request` twice more (a moved copy of the argument, and
// the local the `Host` is set on): the block below changes the captured request in place
// (benches/MICRO.md, issue 13).
#[allow(clippy::manual_async_fn)]
fn exchange_once<'a>(
    Sending {
        route,
        snapshot,
        timeout,
        max_body,
        keep_head,
    }: Sending<'a>,
    span: tracing::Span,
    mut request: Request<UpstreamBody>,
    seen: &'a mut Observed,
) -> impl Future<Output = Step<Response<HeldBody>>> + Send + 'a {
    async move {
        let sent = Instant::now();
        // One deadline for the wait for a connection and the exchange: no second clock read.
        // Configured timeouts are at most MAX_DURATION, which is also the bound for any other.
        let deadline = sent
            .checked_add(timeout)
            .unwrap_or_else(|| sent + MAX_DURATION);
        let deadline = tokio::time::Instant::from_std(deadline);
        let host = route.host.as_ref();
        let route = &*route.name;
        let authority = request.uri().authority().map_or("", |a| a.as_str());
        let admission = match snapshot.client.admit(authority, timeout).await {
            Ok(admission) => admission,
            Err(busy) => {
                let cause = busy.to_string();
                tracing::warn!(cause = %cause, reason = busy.reason().as_str(), "upstream pool busy");
                return Err(busy_refusal(route, &cause));
            }
        };
        // An exchange known to go out over HTTP/1.1 gets the route's prepared `Host` (the client
        // leaves a present one alone); otherwise the client's HTTP/1.1 pool writes its host's (the
        // same rule) once the connection is known to be HTTP/1.1, and h2 gets `:authority` only.
        if admission.http1_known()
            && let Some(host) = host
        {
            request
                .headers_mut()
                .insert(http::header::HOST, host.clone());
        }
        let mut lease = None;
        let exchange = snapshot.client.request(&admission, request, keep_head);
        let result = tokio::time::timeout_at(deadline, exchange)
            .await
            .map(|exchanged| {
                exchanged.map(|exchanged| {
                    lease = exchanged.lease;
                    exchanged.response
                })
            });
        if let Ok(Ok(response)) = &result {
            admission.answered(response.version());
            span.record("http.response.status_code", response.status().as_u16());
        }
        seen.upstream(sent, &result);
        match result {
            // The body keeps the slot and the connection: an h1 connection is busy until the body
            // has passed (and returns to the pool then). A refused exchange drops the admission here.
            Ok(Ok(response)) => Ok(response.map(|body| HeldBody::new(body, admission, lease))),
            Ok(Err(error)) => {
                if let Some(max) = max_body
                    && sources(&error).any(|e| e.is::<LengthLimitError>())
                {
                    tracing::info!(max, "body cut off at the route's limit");
                    return Err(refuse_limit(&LimitRefusal::BodyTooLarge { max }));
                }
                let (cause, kind) = describe(&error);
                tracing::warn!(cause = %cause, "upstream request failed");
                let cause = cause.as_str();
                if kind == Failure::Busy {
                    return Err(busy_refusal(route, cause));
                }
                Err(refuse(&if kind == Failure::Timeout {
                    Refusal::Timeout { route, cause }
                } else {
                    Refusal::Unreachable { route, cause }
                }))
            }
            Err(_) => {
                let cause = format!("no response head within {} ms", timeout.as_millis());
                tracing::warn!(cause = %cause, "upstream timed out");
                Err(refuse(&Refusal::Timeout {
                    route,
                    cause: &cause,
                }))
            }
        }
    }
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

/// `error`'s sources, outermost first.
fn sources(error: &ClientError) -> impl Iterator<Item = &(dyn StdError + 'static)> {
    let mut next = error.source();
    std::iter::from_fn(move || {
        let current = next?;
        next = current.source();
        Some(current)
    })
}

/// popgate's 503 for a host whose connections all stayed busy: come back soon.
fn busy_refusal(route: &str, cause: &str) -> http::Response<super::ProxyBody> {
    refuse(&Refusal::UpstreamBusy {
        route,
        cause,
        retry_after: POOL_BUSY_RETRY_AFTER_SECS,
    })
}

/// What kind of failure an upstream exchange ended in (its status: 504, 503, 502).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Timeout,
    Busy,
    Other,
}

/// The caller-facing cause of a failed upstream exchange, and its kind.
fn describe(error: &ClientError) -> (String, Failure) {
    if let Some(connect) = sources(error).find_map(|e| e.downcast_ref::<ConnectError>()) {
        let kind = if connect.is_timeout() {
            Failure::Timeout
        } else if connect.is_busy() {
            Failure::Busy
        } else {
            Failure::Other
        };
        return (connect.to_string(), kind);
    }
    // Not a connect failure: the upstream broke the exchange (reset, malformed response, ...).
    let mut cause = String::from("upstream exchange failed");
    for e in sources(error) {
        cause.push_str(": ");
        cause.push_str(&e.to_string());
    }
    (cause, Failure::Other)
}
