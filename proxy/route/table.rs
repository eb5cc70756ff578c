//! RouteTable: host + path-prefix matching, built from validated routes (nothing is re-checked).
//!
//! Rules (validation refuses what breaks them):
//! - a route matches on `host` (exact, or `*.suffix` needing at least one more label) and/or on a
//!   `path_prefix` (plain byte prefix of the path, before the query); the data plane passes the
//!   request's canonical path (`config::canonical_path`) and validation only accepts canonical
//!   prefixes, so `/x/../admin` or `//admin` cannot slip past an `/admin` route;
//! - host names compare case-insensitively, a trailing dot is ignored, and a request's default port
//!   (80 for http, 443 for https) is folded away (see [`super::host`]);
//! - among matching routes: exact host beats wildcard beats no host; the longer wildcard suffix wins;
//!   then the longer `path_prefix` wins;
//! - two routes with the same (host pattern, path_prefix) are a configuration error; given both
//!   anyway, the table keeps matching the first.
//!
//! The table is immutable once built; callers swap whole tables (see `ArcSwap` in the data plane).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme};

use super::host::{PatternKey, pattern_key, request_key};
use crate::config::{HostPattern, Upstream};

/// How requests reach one route: the matching part of a validated `config::Route` (tests and
/// benches build it directly from the same validated types).
#[derive(Clone, Debug)]
pub struct RouteSpec {
    /// The route's name, used in logs and error bodies.
    pub name: String,
    /// Host pattern; `None` matches any host.
    pub host: Option<HostPattern>,
    /// Path prefix (starts with `/`); `None` matches any path.
    pub path_prefix: Option<String>,
    /// Remove the matched prefix before forwarding (a leading `/` is kept).
    pub strip_prefix: bool,
    /// Where to send; `None`: `https://{matched request host}` (validation requires a host then).
    pub upstream: Option<Upstream>,
}

impl From<&crate::config::Route> for RouteSpec {
    fn from(route: &crate::config::Route) -> Self {
        Self {
            name: route.name.clone(),
            host: route.host.clone(),
            path_prefix: route.path_prefix.clone(),
            strip_prefix: route.strip_prefix,
            upstream: route.upstream.clone(),
        }
    }
}

/// A compiled route and its payload (in the data plane: the route's snapshot slot).
pub struct Route<R> {
    name: Arc<str>,
    prefix: Option<Box<str>>,
    strip_prefix: bool,
    upstream: Option<Upstream>,
    /// For an exact-host route without `upstream`: its host as the upstream authority, built once
    /// here so a request clones it (a reference count) instead of parsing and copying the host.
    host_authority: Option<Authority>,
    /// The `Host` header an HTTP/1.1 request to a route with a fixed upstream authority carries
    /// (`upstream`, or an exact host): built once here. hyper-util's client would otherwise format
    /// it from the URI on every request (benches/MICRO.md, issue 13).
    host_header: Option<HeaderValue>,
    payload: R,
}

impl<R> Route<R> {
    /// The route's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route's name as a shared string (cheap to clone into error bodies and logs).
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The per-route payload given to [`RouteTable::new`].
    pub fn payload(&self) -> &R {
        &self.payload
    }

    /// The upstream authority every request of this route goes to, when it does not depend on
    /// the request: its `upstream`'s, else its exact host's. `None` for wildcard routes without
    /// `upstream`, whose authority is the request's host.
    fn fixed_authority(&self) -> Option<&Authority> {
        self.upstream
            .as_ref()
            .map(Upstream::authority)
            .or(self.host_authority.as_ref())
    }

    /// The `Host` value of every request this route sends (its upstream authority is fixed), as
    /// hyper-util's client writes it: the host, and the port unless it is 443.
    pub fn host_header(&self) -> Option<&HeaderValue> {
        self.host_header.as_ref()
    }

    /// Whether the route removes its `path_prefix` from the forwarded path (`strip_prefix`), the
    /// one change to a canonical request path that can leave a non-canonical one.
    pub fn strips_prefix(&self) -> bool {
        self.strip_prefix && self.prefix.is_some()
    }
}

impl<R> fmt::Debug for Route<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .field("strip_prefix", &self.strip_prefix)
            .finish_non_exhaustive()
    }
}

/// The result of a lookup: which route, and where the request goes.
#[derive(Debug)]
pub struct Match<'a, R> {
    /// The matched route.
    pub route: &'a Route<R>,
    /// The upstream authority (the https URL's `host[:port]`).
    pub authority: Authority,
    /// The path (base path + forwarded path) and query to send upstream.
    pub path_and_query: PathAndQuery,
}

impl<R> Match<'_, R> {
    /// `https://{authority}{path_and_query}`.
    pub fn upstream_uri(&self) -> Result<http::Uri, http::Error> {
        http::Uri::builder()
            .scheme(Scheme::HTTPS)
            .authority(self.authority.clone())
            .path_and_query(self.path_and_query.clone())
            .build()
    }

    /// `https://{authority}{path_and_query}` from the match's own parts: no copy, no builder.
    pub fn into_upstream_uri(self) -> Result<http::Uri, http::Error> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTPS);
        parts.authority = Some(self.authority);
        parts.path_and_query = Some(self.path_and_query);
        Ok(http::Uri::from_parts(parts)?)
    }
}

/// An immutable route table. Lookups do a few hash probes; no allocation when the request's host is
/// already lowercase without a port and the route has an explicit upstream and no prefix stripping.
pub struct RouteTable<R> {
    /// Normalized host → routes, longest prefix first.
    exact: HashMap<Box<str>, Vec<Route<R>>>,
    /// Normalized wildcard suffix (without `*.`) → routes, longest prefix first.
    wildcard: HashMap<Box<str>, Vec<Route<R>>>,
    /// Routes matching on path only, longest prefix first.
    any_host: Vec<Route<R>>,
    /// `any_host` by prefix, when it holds enough routes that a scan costs more than a few hash
    /// probes (see [`PREFIX_INDEX_MIN_ROUTES`]); empty otherwise.
    any_host_index: PrefixIndex,
    len: usize,
}

/// From this many host-less routes on, a lookup probes one hash map per distinct prefix length
/// instead of comparing the path with every prefix: in a 10k-route table a scan cost 7 µs per
/// request (benches/MICRO.md), while below a few dozen the byte compares are cheaper than hashing.
const PREFIX_INDEX_MIN_ROUTES: usize = 32;

/// Prefix → position in the sorted route list, one map per prefix length, longest first. The
/// longest matching prefix is the route (two routes with the same prefix are rejected at build).
#[derive(Default)]
struct PrefixIndex {
    by_len: Vec<(usize, HashMap<Box<str>, usize>)>,
}

impl PrefixIndex {
    /// Indexes `routes` (sorted longest prefix first); a route without a prefix has length 0.
    fn of<R>(routes: &[Route<R>]) -> Self {
        let mut by_len: Vec<(usize, HashMap<Box<str>, usize>)> = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let prefix = route.prefix.as_deref().unwrap_or("");
            match by_len.last_mut() {
                Some((len, map)) if *len == prefix.len() => {
                    // First wins, like the scan (duplicates never get this far anyway).
                    map.entry(prefix.into()).or_insert(i);
                }
                _ => by_len.push((prefix.len(), HashMap::from([(prefix.into(), i)]))),
            }
        }
        Self { by_len }
    }

    /// The position of the route with the longest prefix of `path`.
    fn find(&self, path: &str) -> Option<usize> {
        self.by_len.iter().find_map(|(len, map)| {
            // `get` is `None` past the end or inside a character: no prefix ends there.
            path.get(..*len).and_then(|head| map.get(head).copied())
        })
    }
}

impl<R> fmt::Debug for RouteTable<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteTable")
            .field("routes", &self.len)
            .finish_non_exhaustive()
    }
}

/// The `Host` value for an `https` URI with `authority`: the host, and the port unless it is
/// 443 (the rule hyper-util's client applies, so a prepared value equals the one it would write).
fn host_header(authority: &Authority) -> Option<HeaderValue> {
    let value = match authority.port_u16() {
        Some(port) if port != HTTPS_DEFAULT_PORT => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    HeaderValue::try_from(value).ok()
}

/// The port an `https` URI means when it names none.
const HTTPS_DEFAULT_PORT: u16 = 443;

impl<R> RouteTable<R> {
    /// Compiles routes in configuration order.
    pub fn new(routes: Vec<(RouteSpec, R)>) -> Self {
        let mut table = RouteTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            any_host: Vec::new(),
            any_host_index: PrefixIndex::default(),
            len: 0,
        };
        for (spec, payload) in routes {
            let mut host_authority = None;
            let bucket = match spec.host.as_ref().map(pattern_key) {
                Some(PatternKey::Exact(key)) => {
                    if spec.upstream.is_none() {
                        // The key is what a matching request's key equals (see `lookup`).
                        host_authority = Authority::try_from(&*key).ok();
                    }
                    table.exact.entry(key).or_default()
                }
                Some(PatternKey::Wildcard(key)) => table.wildcard.entry(key).or_default(),
                None => &mut table.any_host,
            };
            let mut route = Route {
                name: Arc::from(spec.name),
                prefix: spec.path_prefix.map(String::into_boxed_str),
                strip_prefix: spec.strip_prefix,
                upstream: spec.upstream,
                host_authority,
                host_header: None,
                payload,
            };
            route.host_header = route.fixed_authority().and_then(host_header);
            bucket.push(route);
            table.len += 1;
        }
        // Stable sorts: of two routes with the same prefix, the first configured stays first.
        let by_prefix_len =
            |r: &Route<R>| std::cmp::Reverse(r.prefix.as_deref().map_or(0, str::len));
        // Each bucket is trimmed to its routes: a `Vec` grows to room for four on its first
        // push, so a host with one route (the usual case) kept three empty `Route`s, ~750 B per
        // host with 1,000 routes (benches/README.md, memory).
        for bucket in table.exact.values_mut() {
            bucket.sort_by_key(by_prefix_len);
            bucket.shrink_to_fit();
        }
        for bucket in table.wildcard.values_mut() {
            bucket.sort_by_key(by_prefix_len);
            bucket.shrink_to_fit();
        }
        table.any_host.sort_by_key(by_prefix_len);
        table.any_host.shrink_to_fit();
        if table.any_host.len() >= PREFIX_INDEX_MIN_ROUTES {
            table.any_host_index = PrefixIndex::of(&table.any_host);
        }
        table
    }

    /// How many routes the table holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the table holds no route.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Finds the route for a request.
    ///
    /// `host` is the request's authority (`name[:port]`, from the absolute-form URI or the Host
    /// header); `default_port` is the default port of the scheme the caller used (80 for http);
    /// `path_and_query` is the request target's path and query (`/` when empty), its path already
    /// canonical (`config::canonical_path::canonical_target`): it is matched and forwarded as given.
    pub fn lookup<'a>(
        &'a self,
        host: Option<&str>,
        default_port: u16,
        path_and_query: &str,
    ) -> Option<Match<'a, R>> {
        let (path, query) = match path_and_query.find('?') {
            Some(i) => (&path_and_query[..i], Some(&path_and_query[i..])),
            None => (path_and_query, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        let key = host.and_then(|h| request_key(h, default_port));

        let route = key
            .as_deref()
            .and_then(|key| {
                self.exact
                    .get(key)
                    .and_then(|routes| first_by_prefix(routes, path))
                    .or_else(|| self.lookup_wildcard(key, path))
            })
            .or_else(|| self.lookup_any_host(path))?;

        let authority = match route.fixed_authority() {
            Some(authority) => authority.clone(),
            // A route without `upstream` always has a host, so a key exists here.
            None => Authority::try_from(key.as_deref()?).ok()?,
        };
        let forwarded = match (&route.prefix, route.strip_prefix) {
            (Some(prefix), true) => {
                let rest = &path[prefix.len()..];
                if rest.starts_with('/') {
                    Cow::Borrowed(rest)
                } else {
                    Cow::Owned(format!("/{rest}"))
                }
            }
            _ => Cow::Borrowed(path),
        };
        let base = route.upstream.as_ref().map_or("", Upstream::base_path);
        let path_and_query = if base.is_empty() && query.is_none() {
            match forwarded {
                Cow::Borrowed(p) => PathAndQuery::try_from(p).ok()?,
                Cow::Owned(p) => PathAndQuery::try_from(p).ok()?,
            }
        } else {
            let mut s =
                String::with_capacity(base.len() + forwarded.len() + query.map_or(0, str::len));
            s.push_str(base);
            s.push_str(&forwarded);
            s.push_str(query.unwrap_or(""));
            PathAndQuery::try_from(s).ok()?
        };
        Some(Match {
            route,
            authority,
            path_and_query,
        })
    }

    /// The routes whose host pattern matches `host` (`name[:port]`, `default_port` folded away as
    /// in [`RouteTable::lookup`]), whatever their path: exact-host routes first, then wildcard
    /// routes, longest suffix first. Routes without a host never match: CONNECT interception
    /// opens a tunnel only to a host some route names.
    pub fn host_routes(&self, host: &str, default_port: u16) -> Vec<&Route<R>> {
        let Some(key) = request_key(host, default_port) else {
            return Vec::new();
        };
        let mut found: Vec<&Route<R>> = self.exact.get(&*key).into_iter().flatten().collect();
        if !self.wildcard.is_empty() && !key.starts_with('[') {
            let host_end = key.find(':').unwrap_or(key.len());
            for (i, _) in key[..host_end].match_indices('.').filter(|(i, _)| *i > 0) {
                found.extend(self.wildcard.get(&key[i + 1..]).into_iter().flatten());
            }
        }
        found
    }

    fn lookup_any_host(&self, path: &str) -> Option<&Route<R>> {
        if self.any_host_index.by_len.is_empty() {
            first_by_prefix(&self.any_host, path)
        } else {
            self.any_host_index.find(path).map(|i| &self.any_host[i])
        }
    }

    fn lookup_wildcard(&self, key: &str, path: &str) -> Option<&Route<R>> {
        if self.wildcard.is_empty() || key.starts_with('[') {
            return None;
        }
        let host_end = key.find(':').unwrap_or(key.len());
        // Dots left to right give suffixes longest first; a dot at 0 would leave an empty label.
        key[..host_end]
            .match_indices('.')
            .filter(|(i, _)| *i > 0)
            .find_map(|(i, _)| {
                self.wildcard
                    .get(&key[i + 1..])
                    .and_then(|routes| first_by_prefix(routes, path))
            })
    }
}

fn first_by_prefix<'a, R>(routes: &'a [Route<R>], path: &str) -> Option<&'a Route<R>> {
    routes
        .iter()
        .find(|r| r.prefix.as_deref().is_none_or(|p| path.starts_with(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, host: Option<&str>, prefix: Option<&str>) -> RouteSpec {
        RouteSpec {
            name: name.into(),
            host: host.map(|h| h.parse().unwrap()),
            path_prefix: prefix.map(Into::into),
            strip_prefix: false,
            upstream: None,
        }
    }

    fn with_upstream(mut s: RouteSpec, up: &str) -> RouteSpec {
        s.upstream = Some(up.parse().unwrap());
        s
    }

    fn table(specs: Vec<RouteSpec>) -> RouteTable<()> {
        RouteTable::new(specs.into_iter().map(|s| (s, ())).collect())
    }

    /// A host's bucket holds its routes and no spare room: with 1,000 one-route hosts the
    /// spare room of a first push (three `Route`s) was ~750 KB of a popgate's idle RSS.
    #[test]
    fn buckets_keep_no_spare_room() {
        let t = table(vec![
            spec("a", Some("a.example"), None),
            spec("b1", Some("b.example"), Some("/x")),
            spec("b2", Some("b.example"), Some("/y")),
            spec("w", Some("*.w.example"), None),
            spec("any", None, Some("/any")),
        ]);
        let buckets = t.exact.values().chain(t.wildcard.values());
        for bucket in buckets.chain(std::iter::once(&t.any_host)) {
            assert_eq!(bucket.capacity(), bucket.len());
        }
        assert_eq!(t.exact.len(), 2);
    }

    fn hit(t: &RouteTable<()>, host: Option<&str>, path: &str) -> Option<(String, String)> {
        t.lookup(host, 80, path).map(|m| {
            (
                m.route.name().to_string(),
                m.upstream_uri().unwrap().to_string(),
            )
        })
    }

    #[test]
    fn exact_host_is_case_insensitive_and_ignores_trailing_dot_and_default_port() {
        let t = table(vec![spec("graph", Some("Graph.Microsoft.com."), None)]);
        for host in [
            "graph.microsoft.com",
            "GRAPH.microsoft.COM",
            "graph.microsoft.com.",
            "graph.microsoft.com:80",
        ] {
            let (name, uri) = hit(&t, Some(host), "/v1.0/me").unwrap();
            assert_eq!(name, "graph", "{host}");
            assert_eq!(uri, "https://graph.microsoft.com/v1.0/me", "{host}");
        }
        assert!(hit(&t, Some("graph.microsoft.com:8080"), "/").is_none());
        assert!(hit(&t, Some("other.microsoft.com"), "/").is_none());
        assert!(hit(&t, None, "/").is_none());
    }

    #[test]
    fn host_routes_match_host_patterns_only_and_keep_a_non_default_port() {
        let t = table(vec![
            spec("exact", Some("g.example"), Some("/a/")),
            spec("exact2", Some("g.example"), None),
            spec("wild", Some("*.example"), None),
            spec("port", Some("p.example:8443"), None),
            spec("any", None, None),
        ]);
        let names = |host: &str| -> Vec<String> {
            t.host_routes(host, 443)
                .iter()
                .map(|r| r.name().to_string())
                .collect()
        };
        assert_eq!(names("G.example:443"), ["exact", "exact2", "wild"]);
        assert_eq!(names("other.example:443"), ["wild"]);
        assert!(names("g.example:8443").is_empty());
        assert_eq!(names("p.example:8443"), ["port"]);
        assert!(names("unrouted.test:443").is_empty());
        assert!(names("not a host").is_empty());
    }

    #[test]
    fn default_port_depends_on_the_callers_scheme() {
        let t = table(vec![spec("g", Some("g.example"), None)]);
        assert!(t.lookup(Some("g.example:443"), 443, "/").is_some());
        assert!(t.lookup(Some("g.example:443"), 80, "/").is_none());
    }

    #[test]
    fn pattern_with_a_non_default_port_matches_only_that_port() {
        let t = table(vec![spec("p", Some("svc.example:8443"), None)]);
        let (_, uri) = hit(&t, Some("SVC.example:8443"), "/x").unwrap();
        assert_eq!(uri, "https://svc.example:8443/x");
        assert!(hit(&t, Some("svc.example"), "/x").is_none());
    }

    #[test]
    fn wildcard_needs_one_more_label_and_longer_suffix_wins() {
        let t = table(vec![
            spec("short", Some("*.example.com"), None),
            spec("long", Some("*.eu.example.com"), None),
        ]);
        assert_eq!(hit(&t, Some("a.example.com"), "/").unwrap().0, "short");
        assert_eq!(hit(&t, Some("a.b.example.com"), "/").unwrap().0, "short");
        assert_eq!(hit(&t, Some("x.eu.example.com"), "/").unwrap().0, "long");
        assert_eq!(hit(&t, Some("X.EU.Example.com."), "/").unwrap().0, "long");
        // The bare suffix is not matched by its own wildcard, but by the shorter one.
        assert_eq!(hit(&t, Some("eu.example.com"), "/").unwrap().0, "short");
        assert!(hit(&t, Some("example.com"), "/").is_none());
        assert!(hit(&t, Some(".example.com"), "/").is_none());
        assert!(hit(&t, Some("notexample.com"), "/").is_none());
        // The default upstream is the matched request host.
        assert_eq!(
            hit(&t, Some("A.example.com"), "/p").unwrap().1,
            "https://a.example.com/p"
        );
    }

    #[test]
    fn wildcard_with_port() {
        let t = table(vec![spec("w", Some("*.example.com:8443"), None)]);
        assert!(hit(&t, Some("a.example.com:8443"), "/").is_some());
        assert!(hit(&t, Some("a.example.com"), "/").is_none());
    }

    #[test]
    fn exact_beats_wildcard_beats_no_host_even_with_shorter_prefix() {
        let t = table(vec![
            with_upstream(
                spec("any", None, Some("/api/long/prefix")),
                "https://any.example",
            ),
            spec("wild", Some("*.example.com"), Some("/api/long")),
            spec("exact", Some("a.example.com"), Some("/api")),
        ]);
        assert_eq!(
            hit(&t, Some("a.example.com"), "/api/long/prefix/x")
                .unwrap()
                .0,
            "exact"
        );
        assert_eq!(
            hit(&t, Some("b.example.com"), "/api/long/prefix/x")
                .unwrap()
                .0,
            "wild"
        );
        assert_eq!(
            hit(&t, Some("c.other"), "/api/long/prefix/x").unwrap().0,
            "any"
        );
        // An exact host whose prefix does not match falls through to the wildcard.
        assert_eq!(hit(&t, Some("a.example.com"), "/other").map(|h| h.0), None);
        let t2 = table(vec![
            spec("wild", Some("*.example.com"), None),
            spec("exact", Some("a.example.com"), Some("/api")),
        ]);
        assert_eq!(hit(&t2, Some("a.example.com"), "/other").unwrap().0, "wild");
    }

    #[test]
    fn longest_prefix_wins_and_prefix_is_a_plain_byte_prefix_before_the_query() {
        let t = table(vec![
            spec("root", Some("h.example"), None),
            spec("api", Some("h.example"), Some("/api")),
            spec("apiv2", Some("h.example"), Some("/api/v2")),
        ]);
        assert_eq!(hit(&t, Some("h.example"), "/api/v2/x").unwrap().0, "apiv2");
        assert_eq!(hit(&t, Some("h.example"), "/api/v1").unwrap().0, "api");
        assert_eq!(hit(&t, Some("h.example"), "/apix").unwrap().0, "api");
        assert_eq!(hit(&t, Some("h.example"), "/x?q=/api").unwrap().0, "root");
        assert_eq!(hit(&t, Some("h.example"), "/API").unwrap().0, "root");
    }

    #[test]
    fn strip_prefix_keeps_a_leading_slash_and_base_path_is_prepended() {
        let mut s = spec("s", None, Some("/svc"));
        s.strip_prefix = true;
        let s = with_upstream(s, "https://backend.example/base/");
        let t = table(vec![s]);
        let uri = |p| hit(&t, Some("popgate.local"), p).unwrap().1;
        assert_eq!(uri("/svc/a/b?x=1"), "https://backend.example/base/a/b?x=1");
        assert_eq!(uri("/svc"), "https://backend.example/base/");
        assert_eq!(uri("/svcx"), "https://backend.example/base/x");
        // With a host-less route, any host (or none) matches.
        assert!(hit(&t, None, "/svc/a").is_some());
        assert!(hit(&t, None, "/other").is_none());
    }

    #[test]
    fn strip_prefix_with_trailing_slash_prefix() {
        let mut s = spec("s", Some("h.example"), Some("/svc/"));
        s.strip_prefix = true;
        let t = table(vec![s]);
        assert_eq!(
            hit(&t, Some("h.example"), "/svc/a").unwrap().1,
            "https://h.example/a"
        );
    }

    #[test]
    fn explicit_upstream_folds_443_and_keeps_other_ports() {
        let t = table(vec![
            with_upstream(spec("a", Some("a.example"), None), "https://up.example:443"),
            with_upstream(
                spec("b", Some("b.example"), None),
                "https://up.example:9443/",
            ),
        ]);
        assert_eq!(
            hit(&t, Some("a.example"), "/").unwrap().1,
            "https://up.example/"
        );
        assert_eq!(
            hit(&t, Some("b.example"), "/z").unwrap().1,
            "https://up.example:9443/z"
        );
    }

    #[test]
    fn of_two_routes_with_the_same_match_the_first_is_kept() {
        // Validation refuses such a pair ("is unreachable"), and `HostPattern` / `Upstream`
        // refuse what a table could not match (config/host_pattern.rs, config/upstream.rs); the
        // table still never picks the later one.
        let t = table(vec![
            spec("first", Some("H.example"), Some("/a")),
            spec("second", Some("h.example."), Some("/a")),
        ]);
        assert_eq!(hit(&t, Some("h.example"), "/a").unwrap().0, "first");
        // Same host, different prefixes, and wildcard vs exact are not duplicates.
        let t = table(vec![
            spec("a", Some("h.example"), Some("/a")),
            spec("b", Some("h.example"), None),
            spec("c", Some("*.h.example"), None),
        ]);
        assert_eq!(hit(&t, Some("h.example"), "/a").unwrap().0, "a");
        assert_eq!(hit(&t, Some("h.example"), "/b").unwrap().0, "b");
        assert_eq!(hit(&t, Some("x.h.example"), "/a").unwrap().0, "c");
    }

    #[test]
    fn ipv6_hosts_match_exactly() {
        let t = table(vec![spec("v6", Some("[::1]:8443"), None)]);
        assert!(hit(&t, Some("[::1]:8443"), "/").is_some());
        assert!(hit(&t, Some("[::1]"), "/").is_none());
    }

    #[test]
    fn garbage_request_hosts_do_not_match_or_panic() {
        let t = table(vec![spec("w", Some("*.example.com"), None)]);
        for host in [
            "",
            ":",
            ":80",
            "[",
            "[::1",
            "a.example.com:99999",
            "a.example.com:x",
        ] {
            assert!(hit(&t, Some(host), "/").is_none(), "{host}");
        }
        assert_eq!(
            hit(&t, Some("a.example.com"), "").unwrap().1,
            "https://a.example.com/"
        );
    }

    #[test]
    fn indexed_host_less_routes_match_like_the_scan() {
        // Enough host-less routes to be indexed, with nested and multi-byte prefixes.
        let mut specs: Vec<_> = (0..PREFIX_INDEX_MIN_ROUTES)
            .map(|i| {
                with_upstream(
                    spec(&format!("p{i}"), None, Some(&format!("/p{i}/"))),
                    "https://up.example",
                )
            })
            .collect();
        for (name, prefix) in [("a", "/a"), ("ab", "/a/b"), ("abc", "/a/b/c"), ("e", "/é")] {
            specs.push(with_upstream(
                spec(name, None, Some(prefix)),
                "https://up.example",
            ));
        }
        let t = table(specs);
        assert!(!t.any_host_index.by_len.is_empty());
        let name = |p: &str| t.lookup_any_host(p).map(|r| r.name().to_string());
        assert_eq!(name("/p7/x").as_deref(), Some("p7"));
        assert_eq!(name("/p31/").as_deref(), Some("p31"));
        assert_eq!(name("/a/b/c/d").as_deref(), Some("abc"));
        assert_eq!(name("/a/b/x").as_deref(), Some("ab"));
        assert_eq!(name("/a/bc").as_deref(), Some("ab"));
        assert_eq!(name("/ax").as_deref(), Some("a"));
        assert_eq!(name("/éa").as_deref(), Some("e"));
        // The 3-byte prefix length ends inside `é` here: no panic, the shorter `/a` matches.
        assert_eq!(name("/aé").as_deref(), Some("a"));
        assert_eq!(name("/").as_deref(), None);
        assert_eq!(name("/p").as_deref(), None);
        // Through the whole lookup too.
        assert_eq!(hit(&t, Some("x.example"), "/p3/q?x=1").unwrap().0, "p3");
    }

    #[test]
    fn ten_thousand_routes_build_and_look_up() {
        let specs: Vec<_> = (0..10_000)
            .map(|i| spec(&format!("r{i}"), Some(&format!("h{i}.example")), None))
            .collect();
        let t = table(specs);
        assert_eq!(t.len(), 10_000);
        assert_eq!(hit(&t, Some("h9999.example"), "/").unwrap().0, "r9999");
    }
}
