//! Routes: names, matches, upstreams, resources, timeouts and reachability (flow rules are in
//! `flows`).

use crate::config::model::{Acquire, HostPattern, Limits, Route, Timeouts, Upstream, UpstreamPool};
use crate::config::schema::{RawRoute, S};
use crate::identity::token::TokenType;
use crate::identity::token_request::DEFAULT_SCOPE_SUFFIX;

use super::Ctx;
use super::identities::Identities;
use super::path_prefix::check_path_prefix;
use super::values::is_route_name;

pub(super) fn routes(
    cx: &mut Ctx<'_>,
    raw: &S<Vec<S<RawRoute>>>,
    identities: &Identities,
    base: Timeouts,
    limits: Limits,
    pool: UpstreamPool,
) -> Vec<Route> {
    if raw.value.is_empty() {
        cx.error(raw.referenced, "at least one route is required");
    }
    let mut out = Vec::new();
    // (name, line) and ((host, prefix), name, line) of earlier routes.
    let mut names: Vec<(String, u64)> = Vec::new();
    let mut matches: Vec<(MatchKey, String, u64)> = Vec::new();
    for r in &raw.value {
        let r = &r.value;
        let name = &r.name;
        if !is_route_name(&name.value) {
            cx.error(
                name.referenced,
                format!(
                    "route name `{}` may only contain letters, digits, `_`, `.` and `-` (it is used in logs and metric labels)",
                    name.value
                ),
            );
        } else if let Some((_, line)) = names.iter().find(|(n, _)| *n == name.value) {
            cx.error(
                name.referenced,
                format!(
                    "duplicate route name `{}` (first defined at line {line})",
                    name.value
                ),
            );
        } else {
            names.push((name.value.clone(), name.referenced.line()));
        }
        let before = cx.errors.len();
        let route = route(cx, r, identities, base, limits, pool);
        if let Some((key, route)) = route.filter(|_| cx.errors.len() == before) {
            if let Some((_, first, line)) = matches.iter().find(|(k, _, _)| *k == key) {
                cx.error(
                    r.match_.referenced,
                    format!(
                        "route `{}` is unreachable: route `{first}` (line {line}) has the same match",
                        route.name
                    ),
                );
                continue;
            }
            matches.push((key, route.name.clone(), name.referenced.line()));
            out.push(route);
        }
    }
    out
}

type MatchKey = (Option<HostPattern>, Option<String>);

fn route(
    cx: &mut Ctx<'_>,
    r: &RawRoute,
    identities: &Identities,
    base: Timeouts,
    limits: Limits,
    pool: UpstreamPool,
) -> Option<(MatchKey, Route)> {
    let m = &r.match_.value;
    if m.host.is_none() && m.path_prefix.is_none() {
        cx.error(
            r.match_.referenced,
            "a match needs `host` and/or `path_prefix`",
        );
    }
    let host = m
        .host
        .as_ref()
        .and_then(|h| match h.value.parse::<HostPattern>() {
            Ok(p) => Some(p),
            Err(e) => {
                cx.error(h.referenced, e);
                None
            }
        });
    let path_prefix = m
        .path_prefix
        .as_ref()
        .and_then(|p| match check_path_prefix(&p.value) {
            Ok(()) => Some(p.value.clone()),
            Err(e) => {
                cx.error(p.referenced, e);
                None
            }
        });
    let strip_prefix = r.strip_prefix.as_ref().is_some_and(|s| s.value);
    if let Some(s) = r.strip_prefix.as_ref().filter(|s| s.value)
        && m.path_prefix.is_none()
    {
        cx.error(
            s.referenced,
            "strip_prefix needs a `match.path_prefix` to strip",
        );
    }
    let upstream = upstream(cx, r);
    let resource = resource(cx, &r.resource);
    let token_type = r
        .token_type
        .as_ref()
        .map_or(TokenType::MtlsPop, |t| t.value);
    let flow = super::flows::flow(cx, r, identities, token_type);
    let acquire = r.acquire.as_ref().map_or(Acquire::Eager, |a| a.value);
    let timeouts = super::timeouts(cx, r.timeouts.as_ref(), base);
    if let Some(drain) = r.timeouts.as_ref().and_then(|t| t.value.drain.as_ref()) {
        cx.error(
            drain.referenced,
            "`drain` is a global timeout (top-level `timeouts.drain`); a route cannot set its own",
        );
    }
    let max_body_bytes =
        super::limits::route_body_limit(cx, r.max_body_bytes.as_ref()).or(limits.max_body_bytes);
    let allow = super::allow::allow(cx, r.allow.as_ref());
    let upstream_pool = super::upstream_pool::upstream_pool(cx, r.upstream_pool.as_ref(), pool);
    let route = Route {
        name: r.name.value.clone(),
        host: host.clone(),
        path_prefix: path_prefix.clone(),
        strip_prefix,
        upstream: upstream?,
        resource: resource?,
        flow: flow?,
        token_type,
        acquire,
        timeouts,
        max_body_bytes,
        upstream_pool,
        allow: allow?,
    };
    Some(((host, path_prefix), route))
}

/// `Some(None)`: no upstream (use the matched host); `None`: an error was recorded.
fn upstream(cx: &mut Ctx<'_>, r: &RawRoute) -> Option<Option<Upstream>> {
    let Some(raw) = &r.upstream else {
        if r.match_.value.host.is_none() {
            cx.error(
                r.match_.referenced,
                format!(
                    "route `{}` has no `match.host`, so it needs an `upstream` (https://…)",
                    r.name.value
                ),
            );
            return None;
        }
        return Some(None);
    };
    match raw.value.parse::<Upstream>() {
        Ok(up) => Some(Some(up)),
        Err(e) => {
            cx.error(raw.referenced, e);
            None
        }
    }
}

fn resource(cx: &mut Ctx<'_>, raw: &S<String>) -> Option<String> {
    let v = raw.value.as_str();
    let stripped = v.strip_suffix(DEFAULT_SCOPE_SUFFIX).unwrap_or(v);
    if stripped.is_empty() {
        cx.error(
            raw.referenced,
            "resource is empty (e.g. https://graph.microsoft.com)",
        );
        return None;
    }
    if stripped
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        cx.error(
            raw.referenced,
            format!("resource `{v}` may not contain whitespace"),
        );
        return None;
    }
    Some(stripped.to_owned())
}
