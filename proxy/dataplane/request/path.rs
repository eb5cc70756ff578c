//! Part of step 2, route: the request is routed on its canonical path and forwarded with it, so
//! what the route table matched is what the upstream resolves (`/x/../admin`, `/%61dmin` and
//! `//admin` are all `/admin`, for routing and upstream alike). The rules are
//! [`crate::config::canonical_path`]'s; docs/config.md ("Paths") lists them per case.

use std::borrow::Cow;

use super::Step;
use super::respond::refuse;
use crate::config::canonical_path;
use crate::dataplane::error_response::Refusal;

/// The request target with its path made canonical (borrowed, no copy, when it already is);
/// 400 when the path has no canonical form popgate would forward.
pub(super) fn canonical_target(path_and_query: &str) -> Step<Cow<'_, str>> {
    canonical_path::canonical_target(path_and_query).map_err(|error| {
        tracing::info!(reason = error.reason(), "request path refused");
        refuse(&Refusal::BadRequest {
            reason: error.reason(),
        })
    })
}

/// The last check on the path sent upstream: it must be canonical too. Only `strip_prefix` can
/// break that, when the prefix ends inside a segment (`/svc` stripped from `/svc../x` leaves
/// `/../x`), so an upstream could never climb out of the route's base path.
pub(super) fn check_forwarded(upstream_path: &str) -> Step<()> {
    if canonical_path::is_canonical(upstream_path) {
        return Ok(());
    }
    tracing::info!("stripping the route's path_prefix left a dot segment; request refused");
    Err(refuse(&Refusal::BadRequest {
        reason: "removing the route's path_prefix leaves a `.` or `..` segment, which could climb \
                 out of the upstream's base path",
    }))
}
