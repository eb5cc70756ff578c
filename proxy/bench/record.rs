//! One route's results: an HdrHistogram of measured latencies, answers by class and cause, and a
//! per-second series over the whole run (ramp and warm-up included) for the report.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::client::{Answer, Failure};
use super::plan::{MAX_RUN, MAX_TIMEOUT};

/// Highest latency recorded, in µs: a fixed-rate request due at the start of the longest run and
/// answered at its end, plus a timeout. Longer values saturate at it.
const HIST_MAX_US: u64 = (MAX_RUN.as_secs() + MAX_TIMEOUT.as_secs()) * 1_000_000;
/// Three significant digits for the run's percentiles (0.1 %).
const HIST_SIGFIG: u8 = 3;
/// One for each second of the series: buckets about 6 % wide are enough for a plot, and 661
/// seconds x 16 routes of them stay under 20 MiB (two digits would take 250 MiB).
const SERIES_SIGFIG: u8 = 1;
/// Seconds in the series: the longest run plus the last requests' timeout.
const SERIES_LEN: usize = (MAX_RUN.as_secs() + MAX_TIMEOUT.as_secs()) as usize + 1;

fn histogram<T: hdrhistogram::Counter>(sigfig: u8) -> Histogram<T> {
    // Constant bounds hdrhistogram accepts (low 1, high >= 2 * low, sigfig <= 5): cannot fail.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, HIST_MAX_US, sigfig).expect("constant histogram bounds")
}

/// One second of the series.
#[derive(Clone, Debug)]
pub(crate) struct Second {
    /// Latencies of the answers due (or sent) in this second (a second never holds 4 billion).
    pub hist: Histogram<u32>,
    /// Requests, answered or not.
    pub count: u64,
    /// Requests that were not 2xx.
    pub errors: u64,
}

/// What one route saw.
#[derive(Clone, Debug)]
pub(crate) struct Tally {
    /// Measured latencies (µs), answers of any status.
    pub hist: Histogram<u64>,
    /// Measured 2xx answers.
    pub ok: u64,
    /// Measured non-2xx answers the upstream gave, by status.
    pub upstream: BTreeMap<u16, u64>,
    /// Measured refusals popgate gave itself, by status and cause.
    pub popgate: BTreeMap<(u16, String), u64>,
    /// Measured requests with no answer, by [`Failure::ALL`] index.
    pub failures: [u64; Failure::ALL.len()],
    /// Requests sent during the ramp and warm-up.
    pub unmeasured: u64,
    /// Fixed-rate requests due in the measured phase that were never sent (stopped behind).
    pub unsent: u64,
    /// When the first 2xx arrived.
    pub first_ok: Option<Instant>,
    /// One entry per second since the load started; `None` where nothing was due.
    pub series: Vec<Option<Second>>,
}

impl Tally {
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
}

/// A route's recorder, shared by its connections.
#[derive(Debug)]
pub(crate) struct Recorder {
    t0: Instant,
    tally: Mutex<Tally>,
}

impl Recorder {
    /// A recorder for a load that started at `t0`.
    pub(crate) fn new(t0: Instant) -> Self {
        Self {
            t0,
            tally: Mutex::new(Tally {
                hist: histogram(HIST_SIGFIG),
                ok: 0,
                upstream: BTreeMap::new(),
                popgate: BTreeMap::new(),
                failures: [0; Failure::ALL.len()],
                unmeasured: 0,
                unsent: 0,
                first_ok: None,
                series: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tally> {
        // A worker that panicked mid-record leaves counts that are still counts.
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request due (or sent) at `at` ended after `latency` with `result`.
    pub(crate) fn record(
        &self,
        at: Instant,
        latency: Duration,
        result: &Result<Answer, Failure>,
        measured: bool,
    ) {
        let us = (latency.as_micros() as u64).max(1);
        let ok = matches!(result, Ok(Answer::Ok(_)));
        let second = at.saturating_duration_since(self.t0).as_secs() as usize;
        let mut t = self.lock();
        if ok && t.first_ok.is_none() {
            t.first_ok = Some(Instant::now());
        }
        if second < SERIES_LEN {
            if t.series.len() <= second {
                t.series.resize(second + 1, None);
            }
            let s = t.series[second].get_or_insert_with(|| Second {
                hist: histogram(SERIES_SIGFIG),
                count: 0,
                errors: 0,
            });
            s.count += 1;
            s.errors += u64::from(!ok);
            if result.is_ok() {
                s.hist.saturating_record(us);
            }
        }
        if !measured {
            t.unmeasured += 1;
            return;
        }
        match result {
            Ok(answer) => {
                t.hist.saturating_record(us);
                match answer {
                    Answer::Ok(_) => t.ok += 1,
                    Answer::Upstream(status) => *t.upstream.entry(*status).or_default() += 1,
                    Answer::Popgate(status, cause) => {
                        *t.popgate.entry((*status, cause.clone())).or_default() += 1
                    }
                }
            }
            Err(f) => t.failures[*f as usize] += 1,
        }
    }

    /// `n` measured fixed-rate requests were never sent.
    pub(crate) fn unsent(&self, n: u64) {
        self.lock().unsent += n;
    }

    /// Measured requests, errors and p99 (µs) so far, for the progress line.
    pub(crate) fn progress(&self) -> (u64, u64, u64) {
        let t = self.lock();
        (t.requests(), t.errors(), t.hist.value_at_quantile(0.99))
    }

    /// A copy of everything so far.
    pub(crate) fn snapshot(&self) -> Tally {
        self.lock().clone()
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
        assert_eq!(
            (t.requests(), t.ok, t.errors(), t.unmeasured, t.unsent),
            (4, 1, 3, 1, 3)
        );
        assert_eq!(t.upstream[&429], 1);
        assert_eq!(t.popgate[&(503, "no_token".to_string())], 1);
        assert_eq!(t.failures[Failure::Timeout as usize], 1);
        assert_eq!(t.hist.len(), 3, "a timeout has no latency");
        assert!(t.hist.max() >= 999_000);
        assert_eq!(t.series.len(), 3);
        let one = t.series[1].as_ref().unwrap();
        assert_eq!((one.count, one.errors), (3, 2));
        assert!(t.first_ok.is_some());
    }
}
