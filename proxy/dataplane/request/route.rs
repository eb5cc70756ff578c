//! Step 2, route: find the request's route in the current table and the upstream URL it maps to.
//! The table is loaded once and released before any `await`; what the later steps need (the
//! route's name and slot) is shared, not copied.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::Uri;

use super::guard::Target;
use super::respond::refuse;
use super::{DataplaneTable, Step};
use crate::dataplane::error_response::Refusal;
use crate::metrics::request::Observed;
use crate::route::slot::RouteSlot;

/// The route a request matched.
#[derive(Debug)]
pub(super) struct Route {
    /// The configured name (in refusals and metrics).
    pub name: Arc<str>,
    /// The route's slot: policy, snapshot, status.
    pub slot: Arc<RouteSlot>,
    /// The `Host` an HTTP/1.1 upstream request carries, when the route's upstream authority is
    /// fixed (else hyper-util writes it from the URI).
    pub host: Option<http::HeaderValue>,
}

impl Route {
    /// The route's own request timeout, else `default`.
    pub(super) fn request_timeout(&self, default: Duration) -> Duration {
        self.slot.info().request_timeout.unwrap_or(default)
    }
}

/// The route for `target`'s canonical path and its upstream URL; 400 when the path has no
/// canonical form, 403 when no route matches. Records the route on the
/// request's span and in `seen` (counted in flight from here).
pub(super) fn find(
    table: &ArcSwap<DataplaneTable>,
    target: Target<'_>,
    seen: &mut Observed,
) -> Step<(Route, Uri)> {
    let host = target.host;
    let path_and_query = super::path::canonical_target(target.path_and_query)?;
    let table = table.load();
    let Some(found) = table.lookup(host, target.default_port, &path_and_query) else {
        tracing::info!(host = host.unwrap_or(""), "no route; request refused");
        return Err(refuse(&Refusal::NoRoute { host }));
    };
    let route = Route {
        name: Arc::clone(found.route.name_arc()),
        slot: Arc::clone(found.route.payload()),
        host: found.route.host_header().cloned(),
    };
    let strips_prefix = found.route.strips_prefix();
    let uri = found.into_upstream_uri().map_err(|_| {
        refuse(&Refusal::BadRequest {
            reason: "the request target cannot be mapped to an upstream URL",
        })
    })?;
    // Without stripping, the upstream path is the canonical request path (after the upstream's
    // canonical base path, at a `/`): canonical already, so the second scan is skipped.
    if strips_prefix {
        super::path::check_forwarded(uri.path())?;
    }
    drop(table);
    tracing::Span::current().record("route", &*route.name);
    seen.routed(&route.name, route.slot.metrics(&route.name));
    Ok((route, uri))
}
