//! The run's figures as one serializable value: what `--json` prints, the table and the report
//! are drawn from. Latencies are in milliseconds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use loadgen::{Counter, Histogram, Percentiles};
use serde::Serialize;

use super::client::Failure;
use super::popgate_side::Snapshot;
use super::record::Tally;
use super::target::Target;

/// The `peer` label of token endpoint exchanges in popgate's metrics.
const TOKEN_ENDPOINT: &str = "token_endpoint";

/// Percentiles of a histogram (µs inside, ms out).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

fn ms(us: f64) -> f64 {
    (us / 1000.0 * 1000.0).round() / 1000.0
}

impl Latency {
    /// Figures of `h` (zeros when empty).
    pub fn of<T: Counter>(h: &Histogram<T>) -> Latency {
        let p = Percentiles::of(h);
        Latency {
            p50: ms(p.p50 as f64),
            p90: ms(p.p90 as f64),
            p99: ms(p.p99 as f64),
            p999: ms(p.p999 as f64),
            max: ms(p.max as f64),
            mean: ms(p.mean),
        }
    }
}

/// Non-2xx outcomes by class and cause.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Errors {
    /// popgate's own answers, keyed `STATUS cause` (e.g. `503 no_token`).
    pub popgate: BTreeMap<String, u64>,
    /// Upstream statuses other than 2xx, keyed by status.
    pub upstream: BTreeMap<String, u64>,
    /// No answer: `connect`, `io`, `timeout`.
    pub transport: BTreeMap<String, u64>,
}

/// popgate's share of the route's requests (in-process popgate only).
#[derive(Clone, Debug, Serialize)]
pub struct Share {
    /// Mean time in popgate before the upstream send and to the response head, ms.
    pub mean_proxy_ms: Option<f64>,
    /// Mean upstream time (send to response head, connect included), ms.
    pub mean_upstream_ms: Option<f64>,
    /// Requests popgate sent upstream in the measured phase.
    pub upstream_requests: u64,
}

/// One step of a route's token acquisitions (`metadata`, `csr`, `credential`: IMDSv2's binding
/// certificate; `token`: the token request; a FIC route's first leg prefixed `leg1 `).
#[derive(Clone, Debug, Serialize)]
pub struct StepFigures {
    /// Steps that succeeded.
    pub count: u64,
    /// Their mean duration (retries included), ms.
    pub mean_ms: Option<f64>,
    /// Their summed duration, ms.
    pub total_ms: f64,
    /// Steps that failed.
    pub failed: u64,
}

/// A route's upstream connections.
#[derive(Clone, Debug, Serialize)]
pub struct RouteConnections {
    /// Connections opened (TCP connected and TLS handshake done): each is one full handshake.
    pub opened: u64,
    /// Dials that failed (TCP or the TLS handshake).
    pub failed: u64,
    /// Requests the route sent upstream over the same window.
    pub upstream_requests: u64,
    /// Requests per connection opened (reuse; 1.0: none).
    pub requests_per_connection: Option<f64>,
}

/// One second of the run (since the load started).
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub t: u64,
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One route's figures.
#[derive(Clone, Debug, Serialize)]
pub struct RouteSummary {
    pub route: String,
    pub method: String,
    pub path: String,
    /// Measured requests (answered or not).
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    /// Requests sent during the ramp and warm-up (not in the figures).
    pub unmeasured: u64,
    /// Fixed-rate requests due but never sent (the run ended or stopped with them queued).
    pub unsent: u64,
    pub throughput_rps: f64,
    pub ok_rps: f64,
    pub latency_ms: Latency,
    pub error_causes: Errors,
    /// From `popgate bench` starting to this route's first 2xx, ms.
    pub cold_start_ms: Option<f64>,
    pub popgate: Option<Share>,
    /// The route's token acquisition steps (popgate-side figures; see [`Summary::window`]).
    pub token_steps: Option<BTreeMap<String, StepFigures>>,
    /// The route's upstream connections (popgate-side figures; see [`Summary::window`]).
    pub upstream_connections: Option<RouteConnections>,
    pub series: Vec<Point>,
}

/// Credential exchanges with one peer.
#[derive(Clone, Debug, Serialize)]
pub struct Calls {
    pub count: u64,
    pub mean_ms: f64,
}

/// popgate's process-wide figures over the whole run.
#[derive(Clone, Debug, Serialize)]
pub struct ProxySummary {
    pub upstream_connections_opened: u64,
    pub tls_handshakes: BTreeMap<String, u64>,
    pub upstream_requests: u64,
    /// Requests per upstream connection opened.
    pub requests_per_connection: Option<f64>,
    /// Token requests popgate sent to the token endpoint (each acquisition, retries included).
    pub token_endpoint_requests: u64,
    /// Tokens the route drivers published (first ones, refreshes, rotations).
    pub tokens_published: u64,
    /// Route driver acquisitions by `step/outcome` (`get`, `refresh`, `invalidate` /
    /// `published`, `unchanged`, `failed`).
    pub token_acquisitions_by_step: BTreeMap<String, u64>,
    /// Token endpoint and IMDS exchanges (count, mean duration) by peer.
    pub credential_calls: BTreeMap<String, Calls>,
}

/// A token refresh or certificate rotation seen during the run.
#[derive(Clone, Debug, Serialize)]
pub struct Mark {
    pub t_s: f64,
    pub kind: &'static str,
    pub detail: String,
}

/// What the local authority counted (`--dev`).
#[derive(Clone, Debug, Serialize)]
pub struct AuthorityCounts {
    pub resource_requests: usize,
    pub token_requests: usize,
    pub token_ok: usize,
    pub imds_requests: usize,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub mode: &'static str,
    pub against: &'static str,
    pub rate_per_route: Option<f64>,
    pub concurrency: usize,
    pub ramp_s: f64,
    pub warmup_s: f64,
    /// Length of the measured phase as it happened.
    pub elapsed_s: f64,
    /// Ctrl-C (or SIGTERM) ended the run early.
    pub interrupted: bool,
    pub routes: Vec<RouteSummary>,
    pub popgate: Option<ProxySummary>,
    pub marks: Vec<Mark>,
    pub authority: Option<AuthorityCounts>,
    /// What popgate's process-wide, token and connection figures cover: `since popgate started`
    /// (the bench's own popgate) or `during the bench` (a running popgate's /metrics read before
    /// and after); `None` when there are none.
    pub window: Option<&'static str>,
    /// popgate-side figures this run could not have, and why (e.g. `--proxy` without `--admin`).
    pub unavailable: Option<String>,
}

/// popgate's metrics for one route's figures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Side<'a> {
    /// Read after the load.
    pub end: &'a Snapshot,
    /// Read when the measured phase started (for the share of each measured request).
    pub measured_from: &'a Snapshot,
    /// What the token and connection figures count from.
    pub base: &'a Snapshot,
}

fn per_sec(n: u64, elapsed: Duration) -> f64 {
    let s = elapsed.as_secs_f64();
    if s > 0.0 {
        (n as f64 / s * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// One route's summary. `started`: when `popgate bench` started (for the cold start).
pub(crate) fn route(
    target: &Target,
    t: &Tally,
    elapsed: Duration,
    started: Instant,
    side: Option<Side<'_>>,
) -> RouteSummary {
    let sums = side.map(|s| s.end.route_since(s.measured_from, &target.route));
    let c = &t.counts;
    let mut errors = Errors::default();
    for ((status, cause), n) in &c.popgate {
        errors.popgate.insert(format!("{status} {cause}"), *n);
    }
    for (status, n) in &c.upstream {
        errors.upstream.insert(status.to_string(), *n);
    }
    for f in Failure::ALL {
        let n = c.failures[f as usize];
        if n > 0 {
            errors.transport.insert(f.name().to_string(), n);
        }
    }
    let series = t
        .series
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let s = s.as_ref()?;
            let l = Latency::of(&s.hist);
            Some(Point {
                t: i as u64,
                count: s.count,
                errors: s.errors,
                p50_ms: l.p50,
                p99_ms: l.p99,
                max_ms: l.max,
            })
        })
        .collect();
    RouteSummary {
        route: target.route.clone(),
        method: target.method.to_string(),
        path: target.path.clone(),
        requests: c.requests(),
        ok: c.ok,
        errors: c.errors(),
        unmeasured: t.unmeasured,
        unsent: t.unsent,
        throughput_rps: per_sec(c.requests(), elapsed),
        ok_rps: per_sec(c.ok, elapsed),
        latency_ms: Latency::of(&t.latency),
        error_causes: errors,
        cold_start_ms: c
            .first_ok
            .map(|at| ms(at.saturating_duration_since(started).as_micros() as f64)),
        popgate: sums.map(|s| Share {
            mean_proxy_ms: s.mean_proxy_us().map(ms),
            mean_upstream_ms: s.mean_upstream_us().map(ms),
            upstream_requests: s.sent_upstream,
        }),
        token_steps: side.map(|s| token_steps(target, &s.end.since(s.base))),
        upstream_connections: side.map(|s| connections(&target.route, s)),
        series,
    }
}

fn token_steps(target: &Target, delta: &Snapshot) -> BTreeMap<String, StepFigures> {
    let mut out = BTreeMap::new();
    for key in &target.token_keys {
        for step in crate::metrics::token_steps::STEPS {
            let k = (
                key.identity.clone(),
                key.token_type.to_string(),
                step.to_string(),
            );
            let Some(s) = delta.steps.get(&k) else {
                continue;
            };
            if s.ok == 0 && s.failed == 0 {
                continue;
            }
            out.insert(
                format!("{}{step}", key.prefix),
                StepFigures {
                    count: s.ok,
                    mean_ms: (s.ok > 0).then(|| ms(s.ok_secs / s.ok as f64 * 1e6)),
                    total_ms: ms(s.ok_secs * 1e6),
                    failed: s.failed,
                },
            );
        }
    }
    out
}

fn connections(route: &str, side: Side<'_>) -> RouteConnections {
    let now = side.end.dials.get(route).copied().unwrap_or_default();
    let then = side.base.dials.get(route).copied().unwrap_or_default();
    let opened = now.0.saturating_sub(then.0);
    let upstream_requests = side.end.route_since(side.base, route).sent_upstream;
    RouteConnections {
        opened,
        failed: now.1.saturating_sub(then.1),
        upstream_requests,
        requests_per_connection: (opened > 0)
            .then(|| (upstream_requests as f64 / opened as f64 * 10.0).round() / 10.0),
    }
}

/// popgate's process-wide figures over `end` (a difference of two readings, or since popgate
/// started); peers with no exchange in it are left out.
pub(crate) fn proxy(end: &Snapshot) -> ProxySummary {
    let upstream_requests: u64 = end.routes.values().map(|r| r.sent_upstream).sum();
    ProxySummary {
        upstream_connections_opened: end.connections_opened,
        tls_handshakes: end.handshakes.clone(),
        upstream_requests,
        requests_per_connection: (end.connections_opened > 0).then(|| {
            (upstream_requests as f64 / end.connections_opened as f64 * 10.0).round() / 10.0
        }),
        token_endpoint_requests: end.credential_calls.get(TOKEN_ENDPOINT).map_or(0, |c| c.0),
        tokens_published: end.tokens_published(),
        token_acquisitions_by_step: end.acquisitions.clone(),
        credential_calls: end
            .credential_calls
            .iter()
            .filter(|(_, (n, _))| *n > 0)
            .map(|(peer, (n, secs))| {
                let mean = if *n > 0 {
                    ms(secs / *n as f64 * 1e6)
                } else {
                    0.0
                };
                (
                    peer.clone(),
                    Calls {
                        count: *n,
                        mean_ms: mean,
                    },
                )
            })
            .collect(),
    }
}
