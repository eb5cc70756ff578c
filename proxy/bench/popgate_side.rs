//! popgate's own view of the run, read from its in-process metrics (the popgate the bench
//! started): time spent in the proxy against the upstream, upstream connections and handshakes,
//! token acquisitions and credential calls. Not available with `--proxy` (another process).

use std::collections::BTreeMap;

use prometheus::proto::{Metric, MetricFamily};

/// Sums of one route's request figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct RouteSums {
    /// Requests answered, and the sum of their durations (receive to response head), seconds.
    pub answered: u64,
    /// Sum of those durations.
    pub answered_secs: f64,
    /// Upstream exchanges timed, and the sum of their durations (send to response head).
    pub upstream: u64,
    /// Sum of those durations.
    pub upstream_secs: f64,
    /// Requests sent upstream (replays included).
    pub sent_upstream: u64,
}

/// A reading of the metrics at one instant.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// Per route.
    pub routes: BTreeMap<String, RouteSums>,
    /// Upstream mutual-TLS connections opened.
    pub connections_opened: u64,
    /// Upstream TLS handshakes by outcome (`ok`, `failed`).
    pub handshakes: BTreeMap<String, u64>,
    /// Route token acquisitions by `step/outcome` (e.g. `get/published`, `refresh/failed`).
    pub acquisitions: BTreeMap<String, u64>,
    /// Token endpoint / IMDS exchanges by peer: count and summed seconds.
    pub credential_calls: BTreeMap<String, (u64, f64)>,
    /// notAfter of each route's binding certificate (changes on a rotation).
    pub binding_not_after: BTreeMap<String, i64>,
}

/// The outcome of a driver acquisition that published a new token.
pub(crate) const PUBLISHED: &str = "/published";

fn label<'a>(m: &'a Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

fn counter(m: &Metric) -> u64 {
    // Counters hold whole numbers well inside f64's exact range.
    m.get_counter().get_value() as u64
}

impl Snapshot {
    /// Reads popgate's process-wide metrics now.
    pub(crate) fn take() -> Snapshot {
        Snapshot::from_families(&crate::metrics::global().registry().gather())
    }

    fn from_families(families: &[MetricFamily]) -> Snapshot {
        let mut s = Snapshot::default();
        for family in families {
            for m in family.get_metric() {
                s.add(family.name(), m);
            }
        }
        s
    }

    fn add(&mut self, family: &str, m: &Metric) {
        let route = || label(m, "route").to_string();
        match family {
            "popgate_request_duration_seconds" => {
                let r = self.routes.entry(route()).or_default();
                r.answered = m.get_histogram().get_sample_count();
                r.answered_secs = m.get_histogram().get_sample_sum();
            }
            "popgate_upstream_duration_seconds" => {
                let r = self.routes.entry(route()).or_default();
                r.upstream = m.get_histogram().get_sample_count();
                r.upstream_secs = m.get_histogram().get_sample_sum();
            }
            "popgate_upstream_requests_total" => {
                self.routes.entry(route()).or_default().sent_upstream = counter(m);
            }
            "popgate_upstream_connections_opened_total" => self.connections_opened = counter(m),
            "popgate_upstream_tls_handshakes_total" => {
                self.handshakes
                    .insert(label(m, "outcome").to_string(), counter(m));
            }
            "popgate_token_acquisitions_total" => {
                let key = format!("{}/{}", label(m, "step"), label(m, "outcome"));
                *self.acquisitions.entry(key).or_default() += counter(m);
            }
            "popgate_credential_request_duration_seconds" => {
                let h = m.get_histogram();
                let e = self
                    .credential_calls
                    .entry(label(m, "peer").to_string())
                    .or_default();
                e.0 += h.get_sample_count();
                e.1 += h.get_sample_sum();
            }
            "popgate_binding_cert_not_after_timestamp_seconds" => {
                self.binding_not_after
                    .insert(route(), m.get_gauge().get_value() as i64);
            }
            _ => {}
        }
    }

    /// Tokens the route drivers published (first ones and refreshes).
    pub(crate) fn tokens_published(&self) -> u64 {
        self.acquisitions
            .iter()
            .filter(|(k, _)| k.ends_with(PUBLISHED))
            .map(|(_, v)| v)
            .sum()
    }

    /// One route's figures between `earlier` and `self`.
    pub(crate) fn route_since(&self, earlier: &Snapshot, route: &str) -> RouteSums {
        let now = self.routes.get(route).copied().unwrap_or_default();
        let then = earlier.routes.get(route).copied().unwrap_or_default();
        RouteSums {
            answered: now.answered.saturating_sub(then.answered),
            answered_secs: (now.answered_secs - then.answered_secs).max(0.0),
            upstream: now.upstream.saturating_sub(then.upstream),
            upstream_secs: (now.upstream_secs - then.upstream_secs).max(0.0),
            sent_upstream: now.sent_upstream.saturating_sub(then.sent_upstream),
        }
    }
}

impl RouteSums {
    /// Mean time in popgate itself per request (receive to response head, minus the upstream's
    /// send to response head), µs; `None` without data.
    pub(crate) fn mean_proxy_us(&self) -> Option<f64> {
        if self.answered == 0 || self.upstream == 0 {
            return None;
        }
        let total = self.answered_secs / self.answered as f64;
        let upstream = self.upstream_secs / self.upstream as f64;
        Some(((total - upstream) * 1e6).max(0.0))
    }

    /// Mean upstream time per request (send to response head, connect included), µs.
    pub(crate) fn mean_upstream_us(&self) -> Option<f64> {
        (self.upstream > 0).then(|| self.upstream_secs / self.upstream as f64 * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_differences_of_means() {
        let sums = RouteSums {
            answered: 10,
            answered_secs: 0.030,
            upstream: 10,
            upstream_secs: 0.020,
            sent_upstream: 10,
        };
        assert!((sums.mean_proxy_us().unwrap() - 1000.0).abs() < 1e-6);
        assert!((sums.mean_upstream_us().unwrap() - 2000.0).abs() < 1e-6);
        assert_eq!(RouteSums::default().mean_proxy_us(), None);
    }

    #[test]
    fn reads_the_process_metrics() {
        crate::metrics::register_routes(["bench-side-test"]);
        crate::metrics::route("bench-side-test").upstream(std::time::Duration::from_millis(3));
        let s = Snapshot::take();
        let r = s.route_since(&Snapshot::default(), "bench-side-test");
        assert_eq!(r.upstream, 1);
        assert!((r.upstream_secs - 0.003).abs() < 1e-9);
    }
}
