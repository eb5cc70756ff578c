//! Shared fixture for the ops tests: a routes.yaml with an admin listener and one route per flow
//! against the local authority, a plain HTTP/1.1 client for the admin and proxy listeners, and a
//! strict-enough reader of the Prometheus text format (through `prometheus-parse`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use super::authority::{resolve_yaml, serving_bearer};
pub use super::config::load;
use super::credentials::{ARM, Env, GRAPH};
pub use super::http::{Answer, HTTP_TIMEOUT, raw_request};

/// One route per flow the engine knows: certificate app (PoP, Bearer), managed identity (IMDSv2
/// PoP, IMDSv1 Bearer), FIC with a certificate-app leg 1 (PoP) and a managed-identity leg 1
/// (Bearer). `(name, resource, flow lines)`.
pub fn all_flows() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        (
            "app-pop",
            GRAPH,
            "    flow: vanilla\n    identity: app\n    token_type: mtls_pop",
        ),
        (
            "app-bearer",
            ARM,
            "    flow: vanilla\n    identity: app\n    token_type: bearer",
        ),
        (
            "mi-pop",
            GRAPH,
            "    flow: vanilla\n    identity: uami\n    token_type: mtls_pop",
        ),
        (
            "mi-bearer",
            ARM,
            "    flow: vanilla\n    identity: uami\n    token_type: bearer",
        ),
        (
            "fic-app",
            GRAPH,
            "    flow: fic\n    leg1: app\n    leg2: exchange\n    token_type: mtls_pop",
        ),
        (
            "fic-mi-bearer",
            ARM,
            "    flow: fic\n    leg1: uami\n    leg2: exchange\n    token_type: bearer",
        ),
    ]
}

/// The local authority with its resource serving Bearer callers that present no client
/// certificate, as Azure resources do (an `mtls_pop` request without one is still refused).
pub async fn start_env() -> Env {
    super::credentials::start_with(serving_bearer()).await
}

/// What a request through route `name` of [`all_flows`] gets: every flow is served, PoP routes
/// with the certificate their token is bound to, Bearer routes without one.
pub fn expected_status(_name: &str) -> u16 {
    200
}

/// The status class label of [`expected_status`].
pub fn expected_class(name: &str) -> &'static str {
    if expected_status(name) == 200 {
        "2xx"
    } else {
        "5xx"
    }
}

/// Routes YAML: each route takes `/{name}/`, strips it, and forwards to its resource's host
/// (which `network.resolve` points at the authority's resource server). `extra` is appended to
/// every route (e.g. `    acquire: lazy`) when the name is in `lazy`.
pub fn routes_yaml(list: &[(&str, &str, &str)], lazy: &[&str]) -> String {
    let mut out = String::new();
    for (name, resource, flow) in list {
        out.push_str(&format!(
            "  - name: {name}\n    match: {{ path_prefix: /{name}/ }}\n    strip_prefix: true\n    upstream: {resource}\n    resource: {resource}\n{flow}\n"
        ));
        if lazy.contains(name) {
            out.push_str("    acquire: lazy\n");
        }
    }
    out
}

/// Writes routes.yaml (admin on an ephemeral port of 127.0.0.2: the config refuses an admin
/// address equal to a listener's, even with port 0) and returns its path.
pub fn write_config(env: &Env, routes: &str) -> PathBuf {
    env.write_routes_yaml(
        "admin:\n  address: 127.0.0.2:0\n",
        &resolve_yaml(&env.authority, &[], &[]),
        &env.identities(),
        routes,
    )
}

/// Sends one request (`Connection: close`) and reads the whole answer, bounded in time.
pub async fn request(addr: SocketAddr, method: &str, host: &str, target: &str) -> Answer {
    raw_request(addr, method, host, target).await
}

/// `GET` on the admin listener.
pub async fn admin_get(admin: SocketAddr, path: &str) -> Answer {
    request(admin, "GET", "localhost", path).await
}

/// One parsed sample: family name, labels, value (histograms: their `_count`).
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// Histogram buckets (`le` → cumulative count); empty for other types.
    pub buckets: Vec<(f64, f64)>,
}

/// Scrapes `/metrics` and parses it with `prometheus-parse`. Also checks what that parser is
/// lenient about: the content type, and that every non-comment line is `name{labels} value`.
pub async fn scrape(admin: SocketAddr) -> Vec<Series> {
    let answer = admin_get(admin, "/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    for line in answer.body.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value in {line}"
        );
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name in {line}"
        );
    }
    let lines = answer.body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text parses");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let labels: BTreeMap<String, String> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let (value, buckets) = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => (v, Vec::new()),
                prometheus_parse::Value::Histogram(h) => {
                    let buckets: Vec<(f64, f64)> =
                        h.iter().map(|b| (b.less_than, b.count)).collect();
                    (buckets.last().map_or(0.0, |b| b.1), buckets)
                }
                prometheus_parse::Value::Summary(_) => panic!("popgate exports no summaries"),
            };
            Series {
                name: s.metric,
                labels,
                value,
                buckets,
            }
        })
        .collect()
}

/// The samples of family `name` whose labels include every `(key, value)` in `want`.
pub fn find<'a>(all: &'a [Series], name: &str, want: &[(&str, &str)]) -> Vec<&'a Series> {
    all.iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The sum of the matching samples' values.
pub fn sum(all: &[Series], name: &str, want: &[(&str, &str)]) -> f64 {
    find(all, name, want).iter().map(|s| s.value).sum()
}

/// Every series identity (name + labels), for cardinality comparisons.
pub fn identities(all: &[Series]) -> BTreeSet<String> {
    all.iter()
        .map(|s| format!("{}{:?}", s.name, s.labels))
        .collect()
}
