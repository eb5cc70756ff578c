//! Step 3, authorize: the route's caller rules and its declared body limit, checked before any
//! token work so a refused caller costs nothing upstream.

use http::HeaderMap;

use super::Step;
use super::respond::{refuse, refuse_limit};
use super::route::Route;
use crate::access::Caller;
use crate::dataplane::error_response::Refusal;
use crate::dataplane::limits;

/// Whether `caller` may use `route` (403 if not) and whether the declared `Content-Length` fits
/// the route's `max_body_bytes` (413 if not). Hands on that limit for the streaming check.
pub(super) fn check(route: &Route, caller: &Caller, headers: &HeaderMap) -> Step<Option<u64>> {
    let (admitted, max_body_bytes) = {
        let policy = route.slot.policy();
        (policy.admits(caller), policy.max_body_bytes)
    };
    if !admitted {
        tracing::info!("caller not allowed on route");
        return Err(refuse(&Refusal::NotAllowed { route: &route.name }));
    }
    if let Some(max) = max_body_bytes
        && let Err(refusal) = limits::check_declared_length(headers, max)
    {
        tracing::info!(max, "declared body over the route's limit");
        return Err(refuse_limit(&refusal));
    }
    Ok(max_body_bytes)
}
