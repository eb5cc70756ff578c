//! popgate's own view of the run, read from its metrics: in-process (the popgate the bench
//! started), or from another popgate's `/metrics` (`--proxy URL --admin URL`). Time spent in the
//! proxy against the upstream, upstream connections and handshakes, token acquisitions, their
//! steps and credential calls.

use std::collections::BTreeMap;

use prometheus::proto::{Metric, MetricFamily, MetricType};

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

/// One acquisition step's figures (from `popgate_token_step_duration_seconds`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct StepSums {
    /// Steps that succeeded.
    pub ok: u64,
    /// Their summed duration, seconds.
    pub ok_secs: f64,
    /// Steps that failed (retries exhausted or a refusal).
    pub failed: u64,
}

/// Key of a step's figures: identity, token type, step.
pub(crate) type StepKey = (String, String, String);

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
    /// Acquisition steps by identity, token type and step.
    pub steps: BTreeMap<StepKey, StepSums>,
    /// Upstream dials per route: (ok, failed).
    pub dials: BTreeMap<String, (u64, u64)>,
}

/// The outcome of a driver acquisition that published a new token.
pub(crate) const PUBLISHED: &str = "/published";

fn label<'a>(m: &'a Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// A count read as f64 (Prometheus' type) back to u64: counts stay far inside f64's exact range,
/// and anything negative or not a number (only a broken exposition has those) counts as 0.
fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v as u64
    } else {
        0
    }
}

impl Snapshot {
    /// Reads popgate's process-wide metrics now.
    pub(crate) fn take() -> Snapshot {
        Snapshot::from_families(&crate::metrics::global().registry().gather())
    }

    fn from_families(families: &[MetricFamily]) -> Snapshot {
        let mut s = Snapshot::default();
        for family in families {
            let name = family.name();
            for m in family.get_metric() {
                let get = |l: &str| label(m, l).to_string();
                match family.get_field_type() {
                    MetricType::HISTOGRAM => {
                        let h = m.get_histogram();
                        s.add(&format!("{name}_count"), &get, h.get_sample_count() as f64);
                        s.add(&format!("{name}_sum"), &get, h.get_sample_sum());
                    }
                    MetricType::COUNTER => s.add(name, &get, m.get_counter().get_value()),
                    MetricType::GAUGE => s.add(name, &get, m.get_gauge().get_value()),
                    _ => {}
                }
            }
        }
        s
    }

    /// Reads a Prometheus text exposition (another popgate's `/metrics`). Lines it does not know
    /// are skipped; a malformed line is skipped too (it can only be a family the bench ignores, or
    /// a broken scrape whose figures would be wrong anyway).
    pub(crate) fn from_text(text: &str) -> Snapshot {
        let mut s = Snapshot::default();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some((name, labels, value)) = parse_sample(line) {
                let get = |l: &str| {
                    labels
                        .iter()
                        .find(|(k, _)| k == l)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                s.add(name, &get, value);
            }
        }
        s
    }

    /// One sample: `name` is the exposition's (histograms as `_count` and `_sum`).
    fn add(&mut self, name: &str, label: &dyn Fn(&str) -> String, value: f64) {
        let route = || label("route");
        match name {
            "popgate_request_duration_seconds_count" => {
                self.routes.entry(route()).or_default().answered = count(value);
            }
            "popgate_request_duration_seconds_sum" => {
                self.routes.entry(route()).or_default().answered_secs = value;
            }
            "popgate_upstream_duration_seconds_count" => {
                self.routes.entry(route()).or_default().upstream = count(value);
            }
            "popgate_upstream_duration_seconds_sum" => {
                self.routes.entry(route()).or_default().upstream_secs = value;
            }
            "popgate_upstream_requests_total" => {
                self.routes.entry(route()).or_default().sent_upstream = count(value);
            }
            "popgate_upstream_connections_opened_total" => self.connections_opened = count(value),
            "popgate_upstream_tls_handshakes_total" => {
                self.handshakes.insert(label("outcome"), count(value));
            }
            "popgate_token_acquisitions_total" => {
                let key = format!("{}/{}", label("step"), label("outcome"));
                *self.acquisitions.entry(key).or_default() += count(value);
            }
            "popgate_credential_request_duration_seconds_count" => {
                self.credential_calls.entry(label("peer")).or_default().0 += count(value);
            }
            "popgate_credential_request_duration_seconds_sum" => {
                self.credential_calls.entry(label("peer")).or_default().1 += value;
            }
            "popgate_binding_cert_not_after_timestamp_seconds" => {
                self.binding_not_after.insert(route(), value as i64);
            }
            "popgate_token_step_duration_seconds_count"
            | "popgate_token_step_duration_seconds_sum" => {
                let key = (label("identity"), label("token_type"), label("step"));
                let e = self.steps.entry(key).or_default();
                match (name.ends_with("_count"), label("outcome").as_str()) {
                    (true, "ok") => e.ok += count(value),
                    (true, _) => e.failed += count(value),
                    (false, "ok") => e.ok_secs += value,
                    (false, _) => {}
                }
            }
            "popgate_upstream_pool_dials_total" => {
                let e = self.dials.entry(route()).or_default();
                if label("outcome") == "ok" {
                    e.0 = count(value);
                } else {
                    e.1 = count(value);
                }
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

    /// Everything counted between `earlier` and `self` (gauges: `self`'s values).
    pub(crate) fn since(&self, earlier: &Snapshot) -> Snapshot {
        fn minus<K: Ord + Clone>(
            now: &BTreeMap<K, u64>,
            then: &BTreeMap<K, u64>,
        ) -> BTreeMap<K, u64> {
            now.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.saturating_sub(then.get(k).copied().unwrap_or(0)),
                    )
                })
                .collect()
        }
        Snapshot {
            routes: self
                .routes
                .keys()
                .map(|r| (r.clone(), self.route_since(earlier, r)))
                .collect(),
            connections_opened: self
                .connections_opened
                .saturating_sub(earlier.connections_opened),
            handshakes: minus(&self.handshakes, &earlier.handshakes),
            acquisitions: minus(&self.acquisitions, &earlier.acquisitions),
            credential_calls: self
                .credential_calls
                .iter()
                .map(|(k, (n, secs))| {
                    let (n0, s0) = earlier.credential_calls.get(k).copied().unwrap_or_default();
                    (k.clone(), (n.saturating_sub(n0), (secs - s0).max(0.0)))
                })
                .collect(),
            binding_not_after: self.binding_not_after.clone(),
            steps: self
                .steps
                .iter()
                .map(|(k, v)| {
                    let then = earlier.steps.get(k).copied().unwrap_or_default();
                    let d = StepSums {
                        ok: v.ok.saturating_sub(then.ok),
                        ok_secs: (v.ok_secs - then.ok_secs).max(0.0),
                        failed: v.failed.saturating_sub(then.failed),
                    };
                    (k.clone(), d)
                })
                .collect(),
            dials: self
                .dials
                .iter()
                .map(|(k, (ok, failed))| {
                    let (ok0, failed0) = earlier.dials.get(k).copied().unwrap_or_default();
                    (
                        k.clone(),
                        (ok.saturating_sub(ok0), failed.saturating_sub(failed0)),
                    )
                })
                .collect(),
        }
    }
}

/// Labels of one exposition line.
type Labels = Vec<(String, String)>;

/// `name{a="x",b="y"} value [timestamp]` → its parts; `None` when malformed.
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let line = line.trim();
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => break i,
                ',' | ' ' => {}
                '=' => {
                    if chars.next()?.1 != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next()?.1 {
                            '"' => break,
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        };
        rest = &body[end + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
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

    #[test]
    fn the_text_exposition_reads_as_the_registry_does() {
        crate::metrics::register_routes(["bench-text-test"]);
        crate::metrics::route("bench-text-test").upstream(std::time::Duration::from_millis(5));
        crate::metrics::pool::PoolMetrics::of("bench-text-test").dialled(true);
        crate::metrics::token_steps::observe(
            "bench-text-id",
            crate::identity::token::TokenType::MtlsPop,
            crate::metrics::token_steps::Step::Metadata,
            true,
            std::time::Duration::from_millis(7),
        );
        let families = crate::metrics::global().registry().gather();
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&families, &mut text)
            .unwrap();
        let from_text = Snapshot::from_text(&text);
        let direct = Snapshot::from_families(&families);
        assert_eq!(
            from_text.routes["bench-text-test"],
            direct.routes["bench-text-test"]
        );
        assert_eq!(from_text.dials["bench-text-test"], (1, 0));
        let key = ("bench-text-id".into(), "mtls_pop".into(), "metadata".into());
        assert_eq!(from_text.steps[&key].ok, 1);
        assert!((from_text.steps[&key].ok_secs - 0.007).abs() < 1e-9);
        assert_eq!(from_text.steps, direct.steps);
        assert_eq!(from_text.handshakes, direct.handshakes);
    }

    #[test]
    fn samples_parse_with_escapes_or_are_skipped() {
        let (name, labels, v) =
            parse_sample(r#"x_total{route="a\"b",outcome="ok"} 3 1700000000"#).unwrap();
        assert_eq!((name, v), ("x_total", 3.0));
        assert_eq!(labels[0], ("route".to_string(), "a\"b".to_string()));
        assert_eq!(parse_sample("up 1").unwrap().2, 1.0);
        assert!(parse_sample(r#"x{route="open 1"#).is_none());
        assert!(parse_sample("x notanumber").is_none());
        let s = Snapshot::from_text(
            "# HELP x\ngarbage{\npopgate_upstream_connections_opened_total 4\n",
        );
        assert_eq!(s.connections_opened, 4);
    }

    #[test]
    fn deltas_subtract_counters_and_keep_gauges() {
        let mut then = Snapshot {
            connections_opened: 2,
            ..Snapshot::default()
        };
        then.dials.insert("r".into(), (2, 1));
        then.binding_not_after.insert("r".into(), 1);
        let mut now = then.clone();
        now.connections_opened = 5;
        now.dials.insert("r".into(), (5, 1));
        now.binding_not_after.insert("r".into(), 9);
        let d = now.since(&then);
        assert_eq!((d.connections_opened, d.dials["r"]), (3, (3, 0)));
        assert_eq!(d.binding_not_after["r"], 9);
    }
}
