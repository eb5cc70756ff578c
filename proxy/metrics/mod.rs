//! Prometheus metrics: one process-wide registry whose label values are all bounded (route and
//! identity names from the config, fixed enums). Nothing a caller sends becomes a label value.
//!
//! The hot path touches only pre-resolved handles ([`RouteMetrics`]); counters the engine already
//! keeps (the token cache's) and values derived from route state are read at scrape time
//! ([`scrape`]).

pub mod body_bytes;
pub mod build_info;
pub(crate) mod connections;
pub(crate) mod intercept;
pub(crate) mod pool;
pub(crate) mod proxy_tunnels;
pub(crate) mod process;
pub(crate) mod request;
pub mod token_steps;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::identity::token::TokenType;

/// What a credential is, for logs, metrics labels (bounded values only) and error bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialLabels {
    /// The identity's name in routes.yaml (for FIC: the leg-2 identity; see `leg1`).
    pub identity: String,
    /// `managed_identity`, `confidential_client`, `workload_identity` or `static`.
    pub identity_kind: &'static str,
    /// `vanilla` or `fic`.
    pub flow: &'static str,
    /// The final token type.
    pub token_type: TokenType,
    /// The FIC leg-1 identity's name.
    pub leg1: Option<String>,
}

/// Request latency buckets (seconds): from a warm pooled request (about a millisecond) to the
/// 60 s default request timeout.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Token endpoint / IMDS latency buckets (seconds): a local IMDS answers in milliseconds, a
/// remote token endpoint in tens to hundreds; 30 s is the transport's request timeout.
const CREDENTIAL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `route` label of requests that matched no route (not a valid route name: names are
/// config keys, and this one is reserved here).
pub const UNROUTED: &str = "-";

/// The status classes, as label values, indexed by `status / 100 - 1`; index 5 is anything else.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// Every metric family popgate updates outside scrape time.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    in_flight: IntGaugeVec,
    upstream_requests: IntCounterVec,
    body_bytes: BodyBytesVecs,
    connections_opened: IntCounter,
    tls_handshakes: IntCounterVec,
    acquisitions: IntCounterVec,
    refresh_failures: IntCounterVec,
    credential_duration: HistogramVec,
    binding_not_after: IntGaugeVec,
    config_reloads: IntCounterVec,
    connections: connections::ConnectionMetrics,
    proxy_tunnels: proxy_tunnels::ProxyTunnelMetrics,
    /// Registered route names; each one's label children are resolved on its first request.
    routes: ArcSwap<LazyRoutes>,
    unrouted: Arc<RouteMetrics>,
}

/// Registered route names, each with its label children once a request resolved them.
type LazyRoutes = HashMap<Arc<str>, Arc<OnceLock<Arc<RouteMetrics>>>>;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("routes", &self.routes.load().len())
            .finish_non_exhaustive()
    }
}

/// The process-wide metrics. The families have fixed, valid names and are registered once, so
/// building them cannot fail (`metrics_build` in the tests below proves it for every family).
static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    Metrics::new().expect("static metric definitions are valid")
});

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let v = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(v.clone()))?;
    Ok(v)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    let v = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    r.register(Box::new(v.clone()))?;
    Ok(v)
}

fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let v = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(v.clone()))?;
    Ok(v)
}

impl Metrics {
    fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        let requests = counter_vec(
            &r,
            "popgate_requests_total",
            "Caller requests answered, by route and status class.",
            &["route", "class"],
        )?;
        let request_duration = histogram_vec(
            &r,
            "popgate_request_duration_seconds",
            "From receiving a caller request to sending its response head.",
            &["route"],
            REQUEST_BUCKETS,
        )?;
        let upstream_duration = histogram_vec(
            &r,
            "popgate_upstream_duration_seconds",
            "From sending a request upstream to receiving its response head (connect included).",
            &["route"],
            REQUEST_BUCKETS,
        )?;
        let in_flight = gauge_vec(
            &r,
            "popgate_requests_in_flight",
            "Caller requests being handled now.",
            &["route"],
        )?;
        let upstream_requests = counter_vec(
            &r,
            "popgate_upstream_requests_total",
            "Requests sent upstream (a replay counts again); minus connections opened gives reuse.",
            &["route"],
        )?;
        let connections_opened = IntCounter::new(
            "popgate_upstream_connections_opened_total",
            "Upstream mutual-TLS connections opened (TCP connected and TLS handshake done).",
        )?;
        r.register(Box::new(connections_opened.clone()))?;
        let tls_handshakes = counter_vec(
            &r,
            "popgate_upstream_tls_handshakes_total",
            "Upstream TLS handshakes, by outcome.",
            &["outcome"],
        )?;
        let acquisitions = counter_vec(
            &r,
            "popgate_token_acquisitions_total",
            "Route token acquisitions by the route drivers, by identity, flow, token type, step and outcome.",
            &["identity", "flow", "token_type", "step", "outcome"],
        )?;
        let refresh_failures = counter_vec(
            &r,
            "popgate_token_refresh_failures_total",
            "Refreshes ahead of expiry that failed (the previous token keeps being served while usable).",
            &["identity"],
        )?;
        let credential_duration = histogram_vec(
            &r,
            "popgate_credential_request_duration_seconds",
            "One token endpoint or IMDS exchange, by peer and outcome.",
            &["peer", "outcome"],
            CREDENTIAL_BUCKETS,
        )?;
        let binding_not_after = gauge_vec(
            &r,
            "popgate_binding_cert_not_after_timestamp_seconds",
            "notAfter (Unix seconds) of the certificate each route's published token is bound to.",
            &["route"],
        )?;
        let config_reloads = counter_vec(
            &r,
            "popgate_config_reloads_total",
            "Config reloads, by outcome.",
            &["outcome"],
        )?;
        let body_bytes = BodyBytesVecs {
            request: counter_vec(
                &r,
                "popgate_request_body_bytes_total",
                "Request body bytes sent upstream, by route (a replay sends them again).",
                &["route"],
            )?,
            response: counter_vec(
                &r,
                "popgate_response_body_bytes_total",
                "Upstream response body bytes passed back to callers, by route (popgate's own error answers not included).",
                &["route"],
            )?,
        };
        build_info::register(&r)?;
        for outcome in ["ok", "failed"] {
            config_reloads.with_label_values(&[outcome]);
            tls_handshakes.with_label_values(&[outcome]);
        }
        let unrouted = Arc::new(RouteMetrics::resolve(
            UNROUTED,
            &requests,
            &request_duration,
            &upstream_duration,
            &in_flight,
            &upstream_requests,
            &body_bytes,
        ));
        let connections = connections::ConnectionMetrics::new(&r)?;
        let proxy_tunnels = proxy_tunnels::ProxyTunnelMetrics::new(&r)?;
        Ok(Self {
            connections,
            proxy_tunnels,
            registry: r,
            requests,
            request_duration,
            upstream_duration,
            in_flight,
            upstream_requests,
            body_bytes,
            connections_opened,
            tls_handshakes,
            acquisitions,
            refresh_failures,
            credential_duration,
            binding_not_after,
            config_reloads,
            routes: ArcSwap::from_pointee(HashMap::new()),
            unrouted,
        })
    }

    /// The registry holding every family above.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The label children of route `name` in every per-route family.
    fn route_metrics(&self, name: &str) -> RouteMetrics {
        RouteMetrics::resolve(
            name,
            &self.requests,
            &self.request_duration,
            &self.upstream_duration,
            &self.in_flight,
            &self.upstream_requests,
            &self.body_bytes,
        )
    }
}

/// Registers route names (at start and on reload). Each route's label children are resolved on
/// its first request ([`registered`]), not here: 12 children per route (two histograms among
/// them) are most of a route's metric memory, and most of 1,000 routes may never see a request
/// (benches/README.md, memory). A route's series appear in `/metrics` from its first request;
/// then a request does no label hashing beyond finding its route's handles. Routes registered
/// before keep their handles (and their series: counters of a route removed by a reload stay, as
/// Prometheus expects), so several apps in one process (tests) and reloads never drop another's
/// routes.
pub fn register_routes<'a>(names: impl IntoIterator<Item = &'a str>) {
    let m = global();
    // `rcu` may run the closure more than once (on a concurrent store).
    let names: Vec<&str> = names.into_iter().collect();
    if names.iter().all(|name| m.routes.load().contains_key(*name)) {
        return;
    }
    m.routes.rcu(|old| {
        let mut map = HashMap::clone(old);
        for &name in &names {
            map.entry(Arc::from(name)).or_default();
        }
        map
    });
}

/// The handles of the route named `name` (the unrouted handles if it was never registered).
pub fn route(name: &str) -> Arc<RouteMetrics> {
    registered(name).unwrap_or_else(unrouted)
}

/// The handles of the route named `name`, if it was registered, resolving its label children on
/// the first call. Registrations are never undone, so a caller may keep the answer
/// (`RouteSlot::metrics` does, to skip this lookup per request).
pub fn registered(name: &str) -> Option<Arc<RouteMetrics>> {
    let m = global();
    let lazy = m.routes.load().get(name).cloned()?;
    let handles = lazy.get_or_init(|| Arc::new(m.route_metrics(name)));
    Some(Arc::clone(handles))
}

/// The handles of requests that matched no route.
pub fn unrouted() -> Arc<RouteMetrics> {
    Arc::clone(&global().unrouted)
}

/// One route's pre-resolved metric handles.
#[derive(Debug)]
pub struct RouteMetrics {
    by_class: [IntCounter; 6],
    duration: Histogram,
    upstream: Histogram,
    in_flight: IntGauge,
    upstream_requests: IntCounter,
    request_bytes: IntCounter,
    response_bytes: IntCounter,
}

/// The two body-byte families, resolved per route like the others.
struct BodyBytesVecs {
    request: IntCounterVec,
    response: IntCounterVec,
}

impl RouteMetrics {
    fn resolve(
        name: &str,
        requests: &IntCounterVec,
        duration: &HistogramVec,
        upstream: &HistogramVec,
        in_flight: &IntGaugeVec,
        upstream_requests: &IntCounterVec,
        body_bytes: &BodyBytesVecs,
    ) -> Self {
        Self {
            request_bytes: body_bytes.request.with_label_values(&[name]),
            response_bytes: body_bytes.response.with_label_values(&[name]),
            by_class: STATUS_CLASSES.map(|class| requests.with_label_values(&[name, class])),
            duration: duration.with_label_values(&[name]),
            upstream: upstream.with_label_values(&[name]),
            in_flight: in_flight.with_label_values(&[name]),
            upstream_requests: upstream_requests.with_label_values(&[name]),
        }
    }

    /// Counts one answered request and its duration since `started`.
    pub fn answered(&self, status: u16, started: Instant) {
        let class = match status / 100 {
            c @ 1..=5 => usize::from(c) - 1,
            _ => 5,
        };
        self.by_class[class].inc();
        self.duration.observe(started.elapsed().as_secs_f64());
    }

    /// Counts one request sent upstream that took `elapsed` to its response head (or failure).
    pub fn upstream(&self, elapsed: Duration) {
        self.upstream_requests.inc();
        self.upstream.observe(elapsed.as_secs_f64());
    }

    /// `body` (sent upstream), counting its data bytes in `popgate_request_body_bytes_total`.
    pub fn count_request_body<B>(&self, body: B) -> body_bytes::Counted<B> {
        body_bytes::Counted::new(body, self.request_bytes.clone())
    }

    /// `body` (an upstream answer's, passed back), counting its data bytes in
    /// `popgate_response_body_bytes_total`.
    pub fn count_response_body<B>(&self, body: B) -> body_bytes::Counted<B> {
        body_bytes::Counted::new(body, self.response_bytes.clone())
    }

    /// Marks a request in flight until the returned guard drops.
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(Arc::clone(self))
    }
}

/// Keeps a request counted in `popgate_requests_in_flight` while alive.
#[derive(Debug)]
pub struct InFlight(Arc<RouteMetrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// An upstream connection was dialled: `ok` when TCP and the TLS handshake both succeeded.
pub fn upstream_dial(ok: bool) {
    let m = global();
    if ok {
        m.connections_opened.inc();
    }
    m.tls_handshakes
        .with_label_values(&[if ok { "ok" } else { "failed" }])
        .inc();
}

/// A route driver finished one acquisition `step` (`get`, `refresh`, `invalidate`) with `outcome`
/// (`published`, `unchanged`, `failed`).
pub fn token_acquisition(labels: &CredentialLabels, step: &'static str, outcome: &'static str) {
    let m = global();
    m.acquisitions
        .with_label_values(&[
            labels.identity.as_str(),
            labels.flow,
            labels.token_type.as_str(),
            step,
            outcome,
        ])
        .inc();
    if step == "refresh" && outcome == "failed" {
        m.refresh_failures
            .with_label_values(&[labels.identity.as_str()])
            .inc();
    }
}

/// One token endpoint / IMDS exchange took `elapsed`. `peer` is `token_endpoint` or `imds`.
pub fn credential_call(peer: &'static str, ok: bool, elapsed: Duration) {
    global()
        .credential_duration
        .with_label_values(&[peer, if ok { "ok" } else { "error" }])
        .observe(elapsed.as_secs_f64());
}

/// The route published a token bound to a certificate valid until `not_after` (`None`: unbound).
pub fn binding_not_after(route: &str, not_after: Option<SystemTime>) {
    let gauge = global().binding_not_after.with_label_values(&[route]);
    match not_after.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()) {
        Some(t) => gauge.set(i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
        None => gauge.set(0),
    }
}

/// Counts one config reload (the reload path calls this).
pub fn config_reloads(ok: bool) {
    global()
        .config_reloads
        .with_label_values(&[if ok { "ok" } else { "failed" }])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_build() {
        assert!(Metrics::new().is_ok());
    }

    #[test]
    fn status_classes_are_bounded() {
        let m = Metrics::new().unwrap();
        let r = m.route_metrics("r");
        let now = Instant::now();
        for status in [100, 204, 302, 404, 503, 0, 999] {
            r.answered(status, now);
        }
        let counts: Vec<u64> = r.by_class.iter().map(IntCounter::get).collect();
        assert_eq!(counts, [1, 1, 1, 1, 1, 2]);
    }

    /// Whether any series of `family` carries the route label `route`.
    fn has_series(family: &str, route: &str) -> bool {
        global()
            .registry()
            .gather()
            .iter()
            .filter(|f| f.name() == family)
            .flat_map(|f| f.get_metric())
            .any(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "route" && l.value() == route)
            })
    }

    #[test]
    fn route_children_are_made_on_first_use_not_at_registration() {
        register_routes(["lazy-children"]);
        for family in [
            "popgate_requests_total",
            "popgate_request_duration_seconds",
            "popgate_upstream_duration_seconds",
            "popgate_requests_in_flight",
        ] {
            assert!(!has_series(family, "lazy-children"), "{family}");
        }
        let first = route("lazy-children");
        for family in [
            "popgate_requests_total",
            "popgate_request_duration_seconds",
            "popgate_upstream_duration_seconds",
            "popgate_requests_in_flight",
        ] {
            assert!(has_series(family, "lazy-children"), "{family}");
        }
        // Resolved once: later lookups (and a re-registration, as on reload) get the same handles.
        register_routes(["lazy-children"]);
        assert!(Arc::ptr_eq(&first, &route("lazy-children")));
    }

    #[test]
    fn in_flight_guard_decrements_on_drop() {
        register_routes(["guarded"]);
        let r = route("guarded");
        let g = r.in_flight();
        assert_eq!(r.in_flight.get(), 1);
        drop(g);
        assert_eq!(r.in_flight.get(), 0);
        assert!(Arc::ptr_eq(&route("never-registered"), &unrouted()));
    }
}
