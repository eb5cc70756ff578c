//! Recording results: the shared recorder (`loadgen`: latency histograms in µs, the optional
//! per-second series, shards merged once at the end) counting statuses, failure kinds and
//! reconnects, and the JSON report built from it.

use std::time::{Duration, Instant};

use loadgen::{Bounds, Counts, Percentiles, Sample, Series};
use serde_json::{Map, Value, json};

use super::conn::Failure;

/// Histogram range: 1 µs to 60 s, the largest allowed per-request timeout (longer values, only
/// possible for queued open-loop requests, saturate at the top).
const HIST_MAX: Duration = Duration::from_secs(60);
/// Three significant digits for the run's percentiles (0.1% resolution).
const HIST_SIGFIG: u8 = 3;
/// Two significant digits for the per-second series: 1% is plenty for a time plot, and it keeps
/// 600 one-second histograms small.
const SERIES_SIGFIG: u8 = 2;
/// Status codes are counted in a flat array indexed by code (100..=599 are the valid ones).
const STATUS_SLOTS: usize = 600;

/// What the run counts beside the latencies.
#[derive(Clone)]
pub struct Statuses {
    status: Vec<u64>,
    failures: [u64; Failure::ALL.len()],
    reconnects: u64,
}

impl Default for Statuses {
    fn default() -> Self {
        Self {
            status: vec![0; STATUS_SLOTS],
            failures: [0; Failure::ALL.len()],
            reconnects: 0,
        }
    }
}

impl Counts for Statuses {
    fn merge(&mut self, other: &Self) {
        for (a, b) in self.status.iter_mut().zip(&other.status) {
            *a += b;
        }
        for (a, b) in self.failures.iter_mut().zip(&other.failures) {
            *a += b;
        }
        self.reconnects += other.reconnects;
    }
}

pub struct Recorder {
    inner: loadgen::Recorder<Statuses>,
    series_len: usize,
}

impl Recorder {
    /// `series`: one bucket per second of the measured phase, which starts at `.0` and lasts `.1`.
    pub fn new(shards: usize, series: Option<(Instant, Duration)>) -> Self {
        let run = Bounds {
            max: HIST_MAX,
            sigfig: HIST_SIGFIG,
        };
        let series = series.map(|(origin, measure)| Series {
            origin,
            seconds: measure.as_secs_f64().ceil() as usize,
            bounds: Bounds {
                max: HIST_MAX,
                sigfig: SERIES_SIGFIG,
            },
        });
        Self {
            inner: loadgen::Recorder::new(shards, run, series),
            series_len: series.map_or(0, |s| s.seconds),
        }
    }

    /// A response with `status`, due (or started) at `at`, that took `latency`.
    pub fn response(
        &self,
        worker: usize,
        at: Instant,
        latency: Duration,
        status: u16,
        measured: bool,
    ) {
        let sample = Sample {
            at,
            latency: Some(latency),
            error: false,
            measured,
        };
        self.inner.record(worker, sample, |c| {
            if let Some(slot) = c.status.get_mut(status as usize).filter(|_| measured) {
                *slot += 1;
            }
        });
    }

    /// A request due (or started) at `at` that got no response.
    pub fn failure(&self, worker: usize, at: Instant, kind: Failure, measured: bool) {
        let sample = Sample {
            at,
            latency: None,
            error: true,
            measured,
        };
        self.inner.record(worker, sample, |c| {
            c.failures[kind as usize] += u64::from(measured);
        });
    }

    /// A connection was re-opened (after a failure or a close by the peer) for a measured
    /// request.
    pub fn reconnect(&self, worker: usize) {
        self.inner.count(worker, |c| c.reconnects += 1);
    }

    /// The JSON report of the measured phase (mode-specific fields are added by the caller).
    pub fn report(&self, mode: &str, connections: usize, elapsed: Duration) -> Map<String, Value> {
        let total = self.inner.snapshot();
        let counts = &total.counts;
        let responses: u64 = counts.status.iter().sum();
        let ok: u64 = counts.status[200..300].iter().sum();
        let errors: u64 = counts.failures.iter().sum();
        let requests = responses + errors;
        let secs = elapsed.as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let mut status = Map::new();
        for (code, n) in counts.status.iter().enumerate().filter(|(_, n)| **n > 0) {
            status.insert(code.to_string(), json!(n));
        }
        let mut kinds = Map::new();
        for kind in Failure::ALL {
            kinds.insert(kind.name().into(), json!(counts.failures[kind as usize]));
        }
        let mut out = Map::new();
        out.insert("mode".into(), json!(mode));
        out.insert("connections".into(), json!(connections));
        out.insert("requests".into(), json!(requests));
        out.insert("ok".into(), json!(ok));
        out.insert("errors".into(), json!(errors));
        out.insert("status".into(), Value::Object(status));
        out.insert("error_kinds".into(), Value::Object(kinds));
        out.insert("reconnects".into(), json!(counts.reconnects));
        out.insert("elapsed_s".into(), json!(round3(secs)));
        out.insert("rps".into(), json!(round3(per_sec(requests))));
        out.insert("ok_rps".into(), json!(round3(per_sec(ok))));
        out.insert(
            "latency_us".into(),
            latency(Percentiles::of(&total.latency)),
        );
        if self.series_len > 0 {
            let series: Vec<Value> = (0..self.series_len)
                .map(|t| {
                    let s = total.series.get(t).and_then(Option::as_ref);
                    let p = s.map(|s| Percentiles::of(&s.hist)).unwrap_or_default();
                    json!({
                        "t": t,
                        "count": s.map_or(0, |s| s.count),
                        "errors": s.map_or(0, |s| s.errors),
                        "p50_us": p.p50 as f64,
                        "p99_us": p.p99 as f64,
                        "max_us": p.max as f64,
                    })
                })
                .collect();
            out.insert("series".into(), Value::Array(series));
        }
        out
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn latency(p: Percentiles) -> Value {
    json!({
        "p50": p.p50 as f64,
        "p90": p.p90 as f64,
        "p99": p.p99 as f64,
        "p999": p.p999 as f64,
        "max": p.max as f64,
        "mean": round3(p.mean),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_measured_phase_is_recorded() {
        let start = Instant::now() + Duration::from_secs(1);
        let measure = Duration::from_secs(2);
        let rec = Recorder::new(2, Some((start, measure)));
        let measured = |at: Instant| at >= start && at < start + measure;
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        for (worker, at, latency, status) in [
            (0, start - ms(1), us(5), 200),
            (0, start, us(100), 200),
            (1, start + ms(1500), us(300), 502),
            (0, start + ms(2000), us(5), 200),
        ] {
            rec.response(worker, at, latency, status, measured(at));
        }
        let at = start + ms(1600);
        rec.failure(1, at, Failure::Timeout, measured(at));
        let out = rec.report("closed", 2, Duration::from_secs(2));
        assert_eq!(out["requests"], json!(3));
        assert_eq!(out["ok"], json!(1));
        assert_eq!(out["errors"], json!(1));
        assert_eq!(out["status"]["502"], json!(1));
        assert_eq!(out["error_kinds"]["timeout"], json!(1));
        assert_eq!(out["rps"], json!(1.5));
        let series = out["series"].as_array().unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0]["count"], json!(1));
        assert_eq!(series[1]["count"], json!(2));
        assert_eq!(series[1]["errors"], json!(1));
        assert!(out["latency_us"]["max"].as_f64().unwrap() >= 300.0);
    }
}
