//! Recording a run: measured latencies in an HdrHistogram (µs), an optional per-second series,
//! and the caller's own counts (statuses, failure kinds), in a few mutex-guarded shards (one per
//! worker thread is enough; one in all on a current-thread runtime, so never contended) merged
//! when read. No allocation per request once a second's histogram exists.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// hdrhistogram's largest number of significant digits.
const MAX_SIGFIG: u8 = 5;

/// What a caller counts beside the latencies: statuses, failure kinds, reconnects.
pub trait Counts: Clone + Default {
    /// Adds `other`'s counts to these (merging shards).
    fn merge(&mut self, other: &Self);
}

impl Counts for () {
    fn merge(&mut self, _: &Self) {}
}

/// A histogram's range and precision.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Highest latency kept; longer ones saturate at it.
    pub max: Duration,
    /// Significant digits (at most 5; 3 is 0.1 %).
    pub sigfig: u8,
}

impl Bounds {
    fn histogram<T: hdrhistogram::Counter>(self) -> Histogram<T> {
        let high = (self.max.as_micros() as u64).max(2);
        // Low 1, high >= 2 * low and sigfig <= 5 are what hdrhistogram accepts, and they are
        // enforced just here: cannot fail.
        #[allow(clippy::expect_used)]
        Histogram::new_with_bounds(1, high, self.sigfig.min(MAX_SIGFIG))
            .expect("histogram bounds checked above")
    }
}

/// The per-second series: one bucket per second from `origin`.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    /// Second 0 starts here.
    pub origin: Instant,
    /// Seconds kept; later samples are left out of the series (not of the run's figures).
    pub seconds: usize,
    /// Each second's histogram (usually coarser than the run's).
    pub bounds: Bounds,
}

/// One second of the series.
#[derive(Clone, Debug)]
pub struct Second {
    /// Latencies (µs) of the samples of this second that had one (a second never holds 4
    /// billion requests).
    pub hist: Histogram<u32>,
    /// Samples, with a latency or not.
    pub count: u64,
    /// Samples the caller called errors.
    pub errors: u64,
}

/// Everything recorded, or a shard of it.
#[derive(Clone, Debug)]
pub struct Tally<C> {
    /// Latencies (µs) of the measured samples that had one.
    pub latency: Histogram<u64>,
    /// Samples outside the measured phase.
    pub unmeasured: u64,
    /// Measured requests that were due but never sent (the run ended behind its schedule).
    pub unsent: u64,
    /// One entry per second of the series; `None` where nothing was recorded.
    pub series: Vec<Option<Second>>,
    /// The caller's counts.
    pub counts: C,
}

impl<C: Counts> Tally<C> {
    fn new(bounds: Bounds) -> Self {
        Self {
            latency: bounds.histogram(),
            unmeasured: 0,
            unsent: 0,
            series: Vec::new(),
            counts: C::default(),
        }
    }

    fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so `add` cannot fail.
        let _ = self.latency.add(&other.latency);
        self.unmeasured += other.unmeasured;
        self.unsent += other.unsent;
        self.counts.merge(&other.counts);
        if self.series.len() < other.series.len() {
            self.series.resize(other.series.len(), None);
        }
        for (mine, theirs) in self.series.iter_mut().zip(&other.series) {
            match (mine.as_mut(), theirs) {
                (_, None) => {}
                (None, Some(t)) => *mine = Some(t.clone()),
                (Some(m), Some(t)) => {
                    let _ = m.hist.add(&t.hist);
                    m.count += t.count;
                    m.errors += t.errors;
                }
            }
        }
    }
}

/// One request's end as the recorder sees it.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// When it was due (fixed rate) or started: its second in the series.
    pub at: Instant,
    /// How long it took, counted from [`crate::Lane::start`] at a fixed rate; `None` when it
    /// got no answer (then it has no latency).
    pub latency: Option<Duration>,
    /// Whether the caller counts it as an error in the series.
    pub error: bool,
    /// Whether it belongs to the measured phase.
    pub measured: bool,
}

/// A run's recorder, shared by its connections.
#[derive(Debug)]
pub struct Recorder<C> {
    shards: Vec<Mutex<Tally<C>>>,
    bounds: Bounds,
    series: Option<Series>,
}

impl<C: Counts> Recorder<C> {
    /// A recorder with `shards` shards (at least one), the run's latencies within `bounds`, and
    /// a per-second `series` if asked.
    pub fn new(shards: usize, bounds: Bounds, series: Option<Series>) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Tally::new(bounds)))
                .collect(),
            bounds,
            series,
        }
    }

    fn shard(&self, worker: usize) -> MutexGuard<'_, Tally<C>> {
        // A worker that panicked mid-record leaves counts that are still counts.
        self.shards[worker % self.shards.len()]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `sample` in `worker`'s shard; `count` updates the caller's counts (for every
    /// sample, measured or not: the caller knows which it has).
    pub fn record(&self, worker: usize, sample: Sample, count: impl FnOnce(&mut C)) {
        let us = sample.latency.map(|l| (l.as_micros() as u64).max(1));
        let second = self.series.and_then(|s| {
            let i = sample.at.checked_duration_since(s.origin)?.as_secs() as usize;
            (i < s.seconds).then_some((i, s.bounds))
        });
        let mut t = self.shard(worker);
        count(&mut t.counts);
        if let Some((i, bounds)) = second {
            if t.series.len() <= i {
                t.series.resize(i + 1, None);
            }
            let s = t.series[i].get_or_insert_with(|| Second {
                hist: bounds.histogram(),
                count: 0,
                errors: 0,
            });
            s.count += 1;
            s.errors += u64::from(sample.error);
            if let Some(us) = us {
                s.hist.saturating_record(us);
            }
        }
        if !sample.measured {
            t.unmeasured += 1;
        } else if let Some(us) = us {
            t.latency.saturating_record(us);
        }
    }

    /// Updates the caller's counts in `worker`'s shard outside any sample (e.g. a reconnect).
    pub fn count(&self, worker: usize, count: impl FnOnce(&mut C)) {
        count(&mut self.shard(worker).counts);
    }

    /// `n` measured requests were due but never sent.
    pub fn unsent(&self, worker: usize, n: u64) {
        self.shard(worker).unsent += n;
    }

    /// The measured latencies and the counts so far, merged (for a progress line: the series is
    /// left out).
    pub fn totals(&self) -> (Histogram<u64>, C) {
        let mut hist = self.bounds.histogram();
        let mut counts = C::default();
        for shard in &self.shards {
            let t = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = hist.add(&t.latency);
            counts.merge(&t.counts);
        }
        (hist, counts)
    }

    /// Everything so far, merged.
    pub fn snapshot(&self) -> Tally<C> {
        let mut all = Tally::new(self.bounds);
        for shard in &self.shards {
            all.merge(&shard.lock().unwrap_or_else(PoisonError::into_inner));
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Load, Percentiles, Schedule, Stop};

    const RUN: Bounds = Bounds {
        max: Duration::from_secs(60),
        sigfig: 3,
    };
    const PER_SECOND: Bounds = Bounds {
        max: Duration::from_secs(60),
        sigfig: 2,
    };

    #[derive(Clone, Debug, Default, PartialEq)]
    struct Statuses {
        ok: u64,
        other: u64,
        failed: u64,
        reconnects: u64,
    }

    impl Counts for Statuses {
        fn merge(&mut self, o: &Self) {
            self.ok += o.ok;
            self.other += o.other;
            self.failed += o.failed;
            self.reconnects += o.reconnects;
        }
    }

    fn recorder(shards: usize, origin: Instant) -> Recorder<Statuses> {
        let series = Series {
            origin,
            seconds: 2,
            bounds: PER_SECOND,
        };
        Recorder::new(shards, RUN, Some(series))
    }

    /// `status` 0: no answer.
    fn sample(rec: &Recorder<Statuses>, worker: usize, at: Instant, ms: u64, status: u16) {
        let measured = at >= rec.series.unwrap().origin;
        let latency = (status > 0).then(|| Duration::from_millis(ms));
        let error = status == 0;
        rec.record(
            worker,
            Sample {
                at,
                latency,
                error,
                measured,
            },
            |c| {
                if !measured {
                    return;
                }
                match status {
                    0 => c.failed += 1,
                    200..300 => c.ok += 1,
                    _ => c.other += 1,
                }
            },
        );
    }

    #[test]
    fn phases_series_and_shards_are_kept_apart_and_merged() {
        let origin = Instant::now() + Duration::from_secs(1);
        let ms = Duration::from_millis;
        let rec = recorder(3, origin);
        sample(&rec, 0, origin - ms(1), 5, 200);
        sample(&rec, 1, origin, 2, 200);
        sample(&rec, 2, origin + ms(1500), 1000, 429);
        sample(&rec, 4, origin + ms(1600), 30_000, 0);
        sample(&rec, 0, origin + ms(2100), 7, 200);
        rec.count(1, |c| c.reconnects += 1);
        rec.unsent(2, 3);
        let t = rec.snapshot();
        let want = Statuses {
            ok: 2,
            other: 1,
            failed: 1,
            reconnects: 1,
        };
        assert_eq!(t.counts, want);
        assert_eq!((t.unmeasured, t.unsent), (1, 3));
        assert_eq!(
            t.latency.len(),
            3,
            "no answer, no latency; warm-up not measured"
        );
        assert!(t.latency.max() >= 999_000);
        assert_eq!(
            t.series.len(),
            2,
            "the sample past the series' end is left out of it"
        );
        let first = t.series[0].as_ref().unwrap();
        assert_eq!((first.count, first.errors, first.hist.len()), (1, 0, 1));
        let second = t.series[1].as_ref().unwrap();
        assert_eq!((second.count, second.errors, second.hist.len()), (2, 1, 1));
        let (hist, counts) = rec.totals();
        assert_eq!((hist.len(), counts), (3, want));
    }

    #[test]
    fn latencies_saturate_and_round_up_to_a_microsecond() {
        let rec: Recorder<()> = Recorder::new(1, RUN, None);
        let at = Instant::now();
        for latency in [Duration::from_secs(3600), Duration::from_nanos(10)] {
            let s = Sample {
                at,
                latency: Some(latency),
                error: false,
                measured: true,
            };
            rec.record(0, s, |_| {});
        }
        let t = rec.snapshot();
        assert_eq!(t.latency.min(), 1);
        assert!(t.latency.max() >= 59_000_000 && t.latency.max() <= 61_000_000);
        assert!(t.series.is_empty());
    }

    /// The schedule and the recorder together: one lane at 1000/s for 10 s against a target that
    /// answers in 100 µs but stalls 1 s once. With the correction the stall fills the tail (every
    /// request due during it waited); timed from the actual send, as a closed-loop tool does, it
    /// would be one slow request in 10 000 and p99 would not show it at all.
    #[test]
    fn a_stall_at_a_fixed_rate_fills_the_tail() {
        let stop = Stop::Requests(10_000);
        let (t0, zero) = (Instant::now(), Duration::ZERO);
        let s = Schedule::new(t0, Load::Rate(1000.0), stop, zero, zero, RUN.max);
        let corrected: Recorder<()> = Recorder::new(1, RUN, None);
        let naive: Recorder<()> = Recorder::new(1, RUN, None);
        let mut lane = s.lane(0, 1).unwrap();
        let mut free_at = s.t0;
        while let Some(due) = lane.next_due() {
            let woke = due.at.max(free_at);
            let took = Duration::from_micros(if due.k == 500 { 1_000_000 } else { 100 });
            let done = woke + took;
            for (rec, from) in [(&corrected, lane.start(&due, woke)), (&naive, woke)] {
                let sample = Sample {
                    at: due.at,
                    latency: Some(done - from),
                    error: false,
                    measured: due.measured,
                };
                rec.record(0, sample, |_| {});
            }
            free_at = done;
            lane.sent(done);
        }
        let c = Percentiles::of(&corrected.snapshot().latency);
        let n = Percentiles::of(&naive.snapshot().latency);
        assert!(c.max >= 999_000 && n.max >= 999_000, "{c:?} {n:?}");
        assert!(c.p99 > 500_000, "the stall is in the corrected p99: {c:?}");
        assert!(n.p99 < 1_000, "and hidden from the naive one: {n:?}");
        assert!(c.p50 < 1_000, "the median is still the service time: {c:?}");
    }
}
