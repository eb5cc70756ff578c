//! Step 4, token: the route's current snapshot (prebuilt `Authorization` and client). A route
//! without one yet (lazy, or still acquiring) waits, bounded, for its first; an expired token is
//! never injected. Without a usable token the caller gets 503 naming what the engine knows.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::Response;

use super::respond::refuse;
use super::route::Route;
use super::{ProxyBody, Step};
use crate::dataplane::error_response::{NoTokenDetail, Refusal};
use crate::metrics::request::Observed;
use crate::route::slot::{RouteSlot, Snapshot};
use crate::route::status::RouteStatus;

/// How long the first request of a route without a token (lazy, or still acquiring at start) waits
/// for one: long enough for an acquisition with a retry, short of common 30 s client timeouts.
/// Capped by the request timeout.
pub const FIRST_TOKEN_WAIT: Duration = Duration::from_secs(25);

/// The snapshot to send with. `request_timeout` caps the wait for a first token, which `seen`
/// counts (a route with a token does not wait: no clock is read then).
pub(super) async fn usable(
    route: &Route,
    request_timeout: Duration,
    seen: &mut Observed,
) -> Step<Arc<Snapshot>> {
    let slot = &route.slot;
    let snapshot = match slot.snapshot.load_full() {
        Some(snapshot) => snapshot,
        None => {
            let waiting = Instant::now();
            let first = first_snapshot(slot, request_timeout).await;
            seen.token_wait(waiting.elapsed());
            match first {
                Some(snapshot) => snapshot,
                None => return Err(no_token(route, false)),
            }
        }
    };
    // Never inject an expired token, even if the engine failed to replace it in time.
    if snapshot.expires_at <= SystemTime::now() {
        tracing::warn!(generation = snapshot.generation, "route token expired");
        return Err(no_token(route, true));
    }
    Ok(snapshot)
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

/// The 503 for a route without a usable token, naming what the engine knows.
fn no_token(route: &Route, expired: bool) -> Response<ProxyBody> {
    let slot = &route.slot;
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
        status = status.label(),
        cause = cause.unwrap_or(""),
        "no usable token for route"
    );
    let route = &*route.name;
    if expired {
        refuse(&Refusal::TokenExpired { route, detail })
    } else {
        refuse(&Refusal::NoToken { route, detail })
    }
}
