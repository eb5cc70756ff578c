//! One route's results: the shared recorder (`loadgen`: an HdrHistogram of measured latencies and a
//! per-second series over the whole run, ramp and warm-up included, for the report) counting
//! answers by popgate's classes and causes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use loadgen::{Bounds, Counts, Sample, Series};

use super::client::{Answer, Failure};
use super::plan::{MAX_RUN, MAX_TIMEOUT};

/// Highest latency recorded: a fixed-rate request due at the start of the longest run and
/// answered at its end, plus a timeout. Longer values saturate at it.
const HIST_MAX: Duration = MAX_RUN.saturating_add(MAX_TIMEOUT);
/// Three significant digits for the run's percentiles (0.1 %).
const HIST_SIGFIG: u8 = 3;
/// One for each second of the series: buckets about 6 % wide are enough for a plot, and 661
/// seconds x 16 routes of them stay under 20 MiB (two digits would take 250 MiB).
const SERIES_SIGFIG: u8 = 1;
/// Seconds in the series: the longest run plus the last requests' timeout.
const SERIES_LEN: usize = HIST_MAX.as_secs() as usize + 1;
/// One shard: the route's connections share one lock (a record is a few counter updates).
const SHARDS: usize = 1;

/// What one route's answers were.
#[derive(Clone, Debug, Default)]
pub(crate) struct Classes {
    /// Measured 2xx answers.
    pub ok: u64,
    /// Measured non-2xx answers the upstream gave, by status.
    pub upstream: BTreeMap<u16, u64>,
    /// Measured refusals popgate gave itself, by status and cause.
    pub popgate: BTreeMap<(u16, String), u64>,
    /// Measured requests with no answer, by [`Failure::ALL`] index.
    pub failures: [u64; Failure::ALL.len()],
    /// When the first 2xx arrived (measured or not: the cold start).
    pub first_ok: Option<Instant>,
}

impl Counts for Classes {
    fn merge(&mut self, other: &Self) {
        self.ok += other.ok;
        for (status, n) in &other.upstream {
            *self.upstream.entry(*status).or_default() += n;
        }
        for (key, n) in &other.popgate {
            *self.popgate.entry(key.clone()).or_default() += n;
        }
        for (mine, theirs) in self.failures.iter_mut().zip(other.failures) {
            *mine += theirs;
        }
        self.first_ok = match (self.first_ok, other.first_ok) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

impl Classes {
    /// Measured requests, answered or not.
    pub(crate) fn requests(&self) -> u64 {
        self.ok
            + self.upstream.values().sum::<u64>()
            + self.popgate.values().sum::<u64>()
            + self.failures.iter().sum::<u64>()
    }

    /// Measured requests that were not 2xx.
    pub(crate) fn errors(&self) -> u64 {
        self.requests() - self.ok
    }

    fn count(&mut self, result: &Result<Answer, Failure>) {
        match result {
            Ok(Answer::Ok(_)) => self.ok += 1,
            Ok(Answer::Upstream(status)) => *self.upstream.entry(*status).or_default() += 1,
            Ok(Answer::Popgate(status, cause)) => {
                *self.popgate.entry((*status, cause.clone())).or_default() += 1
            }
            Err(f) => self.failures[*f as usize] += 1,
        }
    }
}

/// Everything one route saw.
pub(crate) type Tally = loadgen::Tally<Classes>;

/// A route's recorder, shared by its connections.
#[derive(Debug)]
pub(crate) struct Recorder(loadgen::Recorder<Classes>);

impl Recorder {
    /// A recorder for a load that started at `t0`.
    pub(crate) fn new(t0: Instant) -> Self {
        let run = Bounds {
            max: HIST_MAX,
            sigfig: HIST_SIGFIG,
        };
        let series = Series {
            origin: t0,
            seconds: SERIES_LEN,
            bounds: Bounds {
                max: HIST_MAX,
                sigfig: SERIES_SIGFIG,
            },
        };
        Self(loadgen::Recorder::new(SHARDS, run, Some(series)))
    }

    /// A request due (or sent) at `at` ended after `latency` with `result`.
    pub(crate) fn record(
        &self,
        at: Instant,
        latency: Duration,
        result: &Result<Answer, Failure>,
        measured: bool,
    ) {
        let ok = matches!(result, Ok(Answer::Ok(_)));
        let sample = Sample {
            at,
            latency: result.is_ok().then_some(latency),
            error: !ok,
            measured,
        };
        self.0.record(0, sample, |c| {
            if ok && c.first_ok.is_none() {
                c.first_ok = Some(Instant::now());
            }
            if measured {
                c.count(result);
            }
        });
    }

    /// `n` measured fixed-rate requests were never sent.
    pub(crate) fn unsent(&self, n: u64) {
        self.0.unsent(0, n);
    }

    /// Measured requests, errors and p99 (µs) so far, for the progress line.
    pub(crate) fn progress(&self) -> (u64, u64, u64) {
        let (hist, c) = self.0.totals();
        (c.requests(), c.errors(), hist.value_at_quantile(0.99))
    }

    /// A copy of everything so far.
    pub(crate) fn snapshot(&self) -> Tally {
        self.0.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_series_and_phases_are_kept_apart() {
        let t0 = Instant::now();
        let rec = Recorder::new(t0);
        let ms = Duration::from_millis;
        rec.record(t0, ms(5), &Ok(Answer::Ok(200)), false);
        rec.record(t0 + ms(1500), ms(2), &Ok(Answer::Ok(200)), true);
        rec.record(t0 + ms(1600), ms(1000), &Ok(Answer::Upstream(429)), true);
        let refusal = Ok(Answer::Popgate(503, "no_token".into()));
        rec.record(t0 + ms(1700), ms(1), &refusal, true);
        rec.record(t0 + ms(2100), ms(30_000), &Err(Failure::Timeout), true);
        rec.unsent(3);
        let t = rec.snapshot();
        let c = &t.counts;
        assert_eq!(
            (c.requests(), c.ok, c.errors(), t.unmeasured, t.unsent),
            (4, 1, 3, 1, 3)
        );
        assert_eq!(c.upstream[&429], 1);
        assert_eq!(c.popgate[&(503, "no_token".to_string())], 1);
        assert_eq!(c.failures[Failure::Timeout as usize], 1);
        assert_eq!(t.latency.len(), 3, "a timeout has no latency");
        assert!(t.latency.max() >= 999_000);
        assert_eq!(t.series.len(), 3);
        let one = t.series[1].as_ref().unwrap();
        assert_eq!((one.count, one.errors), (3, 2));
        assert!(c.first_ok.is_some());
        assert_eq!(rec.progress().0, 4);
    }
}
