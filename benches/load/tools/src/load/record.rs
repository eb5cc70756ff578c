//! Recording results: latency histograms (µs, hdrhistogram), status counts, failures, and the
//! optional per-second series. Workers record into a few mutex-guarded shards (one on a
//! current-thread runtime, so never contended) merged once at the end: no allocation per request.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

use super::conn::Failure;

/// Histogram range: 1 µs to 60 s, the largest allowed per-request timeout (longer values, only
/// possible for queued open-loop requests, saturate at the top).
const HIST_MAX_US: u64 = 60_000_000;
/// Three significant digits for the run's percentiles (0.1% resolution).
const HIST_SIGFIG: u8 = 3;
/// Two significant digits for the per-second series: 1% is plenty for a time plot, and it keeps
/// 600 one-second histograms small (about 20 KiB each instead of 140 KiB).
const SERIES_SIGFIG: u8 = 2;
/// Status codes are counted in a flat array indexed by code (100..=599 are the valid ones).
const STATUS_SLOTS: usize = 600;

fn histogram(sigfig: u8) -> Histogram<u64> {
    // The bounds are constants hdrhistogram accepts (low 1, high ≥ 2, sigfig ≤ 5), so this cannot
    // fail; were it to, the run stops with a clear error instead of a panic.
    Histogram::new_with_bounds(1, HIST_MAX_US, sigfig)
        .unwrap_or_else(|e| crate::cli::fail(format!("histogram: {e}")))
}

struct Second {
    hist: Histogram<u64>,
    count: u64,
    errors: u64,
}

struct Tally {
    hist: Histogram<u64>,
    status: Vec<u64>,
    failures: [u64; Failure::ALL.len()],
    reconnects: u64,
    series: Vec<Option<Second>>,
}

impl Tally {
    fn new(series_len: usize) -> Self {
        Self {
            hist: histogram(HIST_SIGFIG),
            status: vec![0; STATUS_SLOTS],
            failures: [0; Failure::ALL.len()],
            reconnects: 0,
            series: (0..series_len).map(|_| None).collect(),
        }
    }

    fn second(&mut self, idx: Option<usize>) -> Option<&mut Second> {
        let slot = self.series.get_mut(idx?)?;
        Some(slot.get_or_insert_with(|| Second {
            hist: histogram(SERIES_SIGFIG),
            count: 0,
            errors: 0,
        }))
    }
}

pub struct Recorder {
    shards: Vec<Mutex<Tally>>,
    measure_start: Instant,
    measure_end: Instant,
    series_len: usize,
}

impl Recorder {
    /// `series` asks for one bucket per second of [measure_start, measure_end).
    pub fn new(shards: usize, measure_start: Instant, measure: Duration, series: bool) -> Self {
        let series_len = if series {
            measure.as_secs_f64().ceil() as usize
        } else {
            0
        };
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Tally::new(series_len)))
                .collect(),
            measure_start,
            measure_end: measure_start + measure,
            series_len,
        }
    }

    /// True when a request started (or was due) at `at` belongs to the measured phase.
    pub fn measured(&self, at: Instant) -> bool {
        at >= self.measure_start && at < self.measure_end
    }

    fn shard(&self, worker: usize) -> std::sync::MutexGuard<'_, Tally> {
        self.shards[worker % self.shards.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn second_index(&self, at: Instant) -> Option<usize> {
        let idx = at.checked_duration_since(self.measure_start)?.as_secs() as usize;
        (idx < self.series_len).then_some(idx)
    }

    /// A response with `status`, due at `at`, that took `latency`. Ignored outside the measured phase.
    pub fn response(&self, worker: usize, at: Instant, latency: Duration, status: u16) {
        if !self.measured(at) {
            return;
        }
        let us = (latency.as_micros() as u64).max(1);
        let idx = self.second_index(at);
        let mut t = self.shard(worker);
        t.hist.saturating_record(us);
        if let Some(slot) = t.status.get_mut(status as usize) {
            *slot += 1;
        }
        if let Some(s) = t.second(idx) {
            s.hist.saturating_record(us);
            s.count += 1;
        }
    }

    /// A request due at `at` that got no response. Ignored outside the measured phase.
    pub fn failure(&self, worker: usize, at: Instant, kind: Failure) {
        if !self.measured(at) {
            return;
        }
        let idx = self.second_index(at);
        let mut t = self.shard(worker);
        t.failures[kind as usize] += 1;
        if let Some(s) = t.second(idx) {
            s.count += 1;
            s.errors += 1;
        }
    }

    /// A connection re-opened at `at` (after a failure or a close by the peer).
    pub fn reconnect(&self, worker: usize, at: Instant) {
        if self.measured(at) {
            self.shard(worker).reconnects += 1;
        }
    }

    /// Merges the shards into the JSON report (mode-specific fields are added by the caller).
    pub fn report(self, mode: &str, connections: usize, elapsed: Duration) -> Map<String, Value> {
        let mut total = Tally::new(self.series_len);
        for shard in self.shards {
            let t = shard.into_inner().unwrap_or_else(PoisonError::into_inner);
            // Same bounds on both sides, so `add` cannot fail.
            let _ = total.hist.add(&t.hist);
            for (a, b) in total.status.iter_mut().zip(&t.status) {
                *a += b;
            }
            for (a, b) in total.failures.iter_mut().zip(&t.failures) {
                *a += b;
            }
            total.reconnects += t.reconnects;
            for (a, b) in total.series.iter_mut().zip(t.series) {
                match (a.as_mut(), b) {
                    (_, None) => {}
                    (None, Some(b)) => *a = Some(b),
                    (Some(a), Some(b)) => {
                        let _ = a.hist.add(&b.hist);
                        a.count += b.count;
                        a.errors += b.errors;
                    }
                }
            }
        }
        let responses: u64 = total.status.iter().sum();
        let ok: u64 = total.status[200..300].iter().sum();
        let errors: u64 = total.failures.iter().sum();
        let requests = responses + errors;
        let secs = elapsed.as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let mut status = Map::new();
        for (code, n) in total.status.iter().enumerate().filter(|(_, n)| **n > 0) {
            status.insert(code.to_string(), json!(n));
        }
        let mut kinds = Map::new();
        for kind in Failure::ALL {
            kinds.insert(kind.name().into(), json!(total.failures[kind as usize]));
        }
        let mut out = Map::new();
        out.insert("mode".into(), json!(mode));
        out.insert("connections".into(), json!(connections));
        out.insert("requests".into(), json!(requests));
        out.insert("ok".into(), json!(ok));
        out.insert("errors".into(), json!(errors));
        out.insert("status".into(), Value::Object(status));
        out.insert("error_kinds".into(), Value::Object(kinds));
        out.insert("reconnects".into(), json!(total.reconnects));
        out.insert("elapsed_s".into(), json!(round3(secs)));
        out.insert("rps".into(), json!(round3(per_sec(requests))));
        out.insert("ok_rps".into(), json!(round3(per_sec(ok))));
        out.insert("latency_us".into(), latency(&total.hist));
        if self.series_len > 0 {
            let series: Vec<Value> = total
                .series
                .iter()
                .enumerate()
                .map(|(t, s)| match s {
                    None => json!({"t": t, "count": 0, "errors": 0, "p50_us": 0.0, "p99_us": 0.0, "max_us": 0.0}),
                    Some(s) => json!({
                        "t": t,
                        "count": s.count,
                        "errors": s.errors,
                        "p50_us": s.hist.value_at_quantile(0.5) as f64,
                        "p99_us": s.hist.value_at_quantile(0.99) as f64,
                        "max_us": s.hist.max() as f64,
                    }),
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

fn latency(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "mean": 0.0});
    }
    json!({
        "p50": h.value_at_quantile(0.5) as f64,
        "p90": h.value_at_quantile(0.9) as f64,
        "p99": h.value_at_quantile(0.99) as f64,
        "p999": h.value_at_quantile(0.999) as f64,
        "max": h.max() as f64,
        "mean": round3(h.mean()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_measured_phase_is_recorded() {
        let start = Instant::now() + Duration::from_secs(1);
        let rec = Recorder::new(2, start, Duration::from_secs(2), true);
        rec.response(
            0,
            start - Duration::from_millis(1),
            Duration::from_micros(5),
            200,
        );
        rec.response(0, start, Duration::from_micros(100), 200);
        rec.response(
            1,
            start + Duration::from_millis(1500),
            Duration::from_micros(300),
            502,
        );
        rec.failure(1, start + Duration::from_millis(1600), Failure::Timeout);
        rec.response(
            0,
            start + Duration::from_secs(2),
            Duration::from_micros(5),
            200,
        );
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
