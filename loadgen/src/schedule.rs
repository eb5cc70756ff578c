//! When each request of a run is due: the phases (ramp, warm-up, measured) and, at a fixed rate,
//! the due time of request k, split over the connections as [`Lane`]s so that every connection
//! computes its own share of one schedule.

use std::time::{Duration, Instant};

/// Closed loop (back-to-back on each connection) or open loop at a fixed rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Load {
    /// Every connection sends its next request when the previous one ends.
    Closed,
    /// Requests are due at this many per second in total, whatever the answers take.
    Rate(f64),
}

/// When the measured phase ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many measured requests.
    Requests(u64),
}

/// A run's shape and phases, from the instant the load starts.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// The load starts.
    pub t0: Instant,
    /// The measured phase starts (after the ramp and the warm-up).
    pub measure_start: Instant,
    /// Closed loop: the measured phase ends (`t0 + longest` with [`Stop::Requests`], whose end
    /// depends on the answers).
    pub closed_end: Instant,
    load: Load,
    stop: Stop,
    ramp: Duration,
    warmup: Duration,
}

impl Schedule {
    /// The schedule of a run starting at `t0`: a linear `ramp` from nothing to `load`, `warmup`
    /// at full load, then the measured phase until `stop`. `longest` bounds a closed loop that
    /// stops after a number of requests.
    pub fn new(
        t0: Instant,
        load: Load,
        stop: Stop,
        ramp: Duration,
        warmup: Duration,
        longest: Duration,
    ) -> Self {
        let measure_start = t0 + ramp + warmup;
        let closed_end = match stop {
            Stop::After(d) => measure_start + d,
            Stop::Requests(_) => t0 + longest,
        };
        Self {
            t0,
            measure_start,
            closed_end,
            load,
            stop,
            ramp,
            warmup,
        }
    }

    /// The load this schedule paces.
    pub fn load(&self) -> Load {
        self.load
    }

    /// Whether a request that started (or was due) at `at` falls in a closed loop's measured
    /// phase.
    pub fn measured_at(&self, at: Instant) -> bool {
        at >= self.measure_start && at < self.closed_end
    }

    /// Requests due during the ramp at `rate`: the integral of a rate rising linearly to `rate`.
    fn ramp_requests(&self, rate: f64) -> u64 {
        (rate * self.ramp.as_secs_f64() / 2.0).floor() as u64
    }

    /// Fixed rate: the first measured request's index and the index past the last one.
    fn measured_range(&self, rate: f64) -> (u64, u64) {
        let first = self.ramp_requests(rate) + (rate * self.warmup.as_secs_f64()).floor() as u64;
        let count = match self.stop {
            Stop::Requests(n) => n,
            Stop::After(d) => (rate * d.as_secs_f64()).round() as u64,
        };
        (first, first + count)
    }

    /// Fixed rate: when request `k` is due. During the ramp the rate rises linearly, so the k-th
    /// request is due when R t^2 / (2 ramp) = k.
    fn due(&self, rate: f64, k: u64) -> Instant {
        let ramp = self.ramp.as_secs_f64();
        let in_ramp = self.ramp_requests(rate);
        let secs = if k < in_ramp {
            (2.0 * k as f64 * ramp / rate).sqrt()
        } else {
            ramp + (k - in_ramp) as f64 / rate
        };
        self.t0 + Duration::from_secs_f64(secs)
    }

    /// Closed loop: when connection `i` of `n` starts (spread over the ramp).
    pub fn closed_start(&self, i: usize, n: usize) -> Instant {
        self.t0 + self.ramp.mul_f64(i as f64 / n.max(1) as f64)
    }

    /// The end of the run as planned: the closed loop's end, or the last due request's time.
    pub fn planned_end(&self) -> Instant {
        match self.load {
            Load::Closed => self.closed_end,
            Load::Rate(r) => self.due(r, self.measured_range(r).1),
        }
    }

    /// Fixed rate: connection `i`'s share of `lanes` connections (requests `i`, `i + lanes`, ...,
    /// so the total is evenly spread); `None` for a closed loop.
    pub fn lane(&self, i: usize, lanes: usize) -> Option<Lane> {
        let Load::Rate(rate) = self.load else {
            return None;
        };
        let (first_measured, end) = self.measured_range(rate);
        Some(Lane {
            schedule: *self,
            rate,
            next: i as u64,
            step: lanes.max(1) as u64,
            first_measured,
            end,
            prev_done: self.t0,
        })
    }
}

/// A request a [`Lane`] has due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// Its index in the whole schedule.
    pub k: u64,
    /// When it is due.
    pub at: Instant,
    /// Whether it belongs to the measured phase.
    pub measured: bool,
}

/// One connection's share of a fixed-rate schedule, and the coordinated-omission correction:
/// where each request's latency counts from.
#[derive(Clone, Debug)]
pub struct Lane {
    schedule: Schedule,
    rate: f64,
    next: u64,
    step: u64,
    first_measured: u64,
    end: u64,
    /// When this lane's previous request ended.
    prev_done: Instant,
}

impl Lane {
    /// The next request to send, or `None` after the last one.
    pub fn next_due(&self) -> Option<Due> {
        (self.next < self.end).then(|| Due {
            k: self.next,
            at: self.schedule.due(self.rate, self.next),
            measured: self.next >= self.first_measured,
        })
    }

    /// Where the latency of `due` counts from, given when the sender woke to send it. When the
    /// connection was still busy with the previous request at the due time, from the due time:
    /// the wait the target caused is part of the latency (wrk2's correction; a closed-loop tool
    /// would leave it out). When it was free, from when the sender woke: timers have about a
    /// millisecond of granularity, and charging that to the target would put a flat floor under
    /// every percentile.
    pub fn start(&self, due: &Due, woke: Instant) -> Instant {
        if self.prev_done <= due.at {
            woke
        } else {
            due.at
        }
    }

    /// The request just due was sent and ended (answered or failed) at `done`.
    pub fn sent(&mut self, done: Instant) {
        self.prev_done = done;
        self.next += self.step;
    }

    /// The request just due was not sent (its connection could not be opened; the caller
    /// records that failure).
    pub fn skip(&mut self) {
        self.next += self.step;
    }

    /// Measured requests of this lane from the next one on: what is left unsent when the run
    /// gives up behind its schedule.
    pub fn unsent(&self) -> u64 {
        let from = if self.next >= self.first_measured {
            self.next
        } else {
            self.next + (self.first_measured - self.next).div_ceil(self.step) * self.step
        };
        self.end.saturating_sub(from).div_ceil(self.step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn rate(r: f64, stop: Stop, ramp: Duration, warmup: Duration) -> Schedule {
        Schedule::new(
            Instant::now(),
            Load::Rate(r),
            stop,
            ramp,
            warmup,
            600 * SECOND,
        )
    }

    #[test]
    fn a_ramped_rate_schedule_is_monotonic_and_lands_on_the_rate() {
        let s = rate(100.0, Stop::After(3 * SECOND), 2 * SECOND, SECOND);
        let t0 = s.t0;
        // 100 during the ramp (half of 2 s at 100/s), 100 in warm-up, 300 measured.
        assert_eq!(s.measured_range(100.0), (200, 500));
        let mut prev = t0;
        for k in 0..600 {
            let due = s.due(100.0, k);
            assert!(due >= prev, "k={k}");
            prev = due;
        }
        let at = |k| s.due(100.0, k).duration_since(t0).as_secs_f64();
        assert!((at(100) - 2.0).abs() < 1e-6);
        assert!((at(200) - 3.0).abs() < 1e-6);
        assert!((at(201) - at(200) - 0.01).abs() < 1e-6);
        assert!((s.planned_end().duration_since(t0).as_secs_f64() - 6.0).abs() < 1e-6);
        assert_eq!(s.measure_start, t0 + 3 * SECOND);
    }

    #[test]
    fn lanes_split_the_schedule_without_gaps_or_overlap() {
        let s = rate(
            1000.0,
            Stop::Requests(10),
            Duration::ZERO,
            Duration::from_millis(5),
        );
        let mut seen = Vec::new();
        for i in 0..3 {
            let mut lane = s.lane(i, 3).unwrap();
            while let Some(due) = lane.next_due() {
                assert_eq!(due.at, s.due(1000.0, due.k));
                seen.push((due.k, due.measured));
                lane.sent(due.at);
            }
            assert_eq!(lane.unsent(), 0);
        }
        seen.sort();
        let want: Vec<(u64, bool)> = (0..15).map(|k| (k, k >= 5)).collect();
        assert_eq!(seen, want, "5 warm-up requests, then exactly 10 measured");
        assert!(s.lane(0, 1).unwrap().next_due().unwrap().at == s.t0);
        let closed = Schedule::new(
            s.t0,
            Load::Closed,
            Stop::After(SECOND),
            Duration::ZERO,
            Duration::ZERO,
            SECOND,
        );
        assert!(closed.lane(0, 1).is_none());
    }

    #[test]
    fn unsent_counts_only_this_lanes_measured_requests() {
        // 10 warm-up requests (0..10), 20 measured (10..30), 4 lanes.
        let s = rate(10.0, Stop::Requests(20), Duration::ZERO, SECOND);
        let mut lane = s.lane(1, 4).unwrap();
        // Lane 1 holds 1, 5, 9 (warm-up) and 13, 17, 21, 25, 29 (measured).
        assert_eq!(lane.unsent(), 5);
        lane.sent(s.t0);
        lane.skip();
        assert_eq!(lane.next_due().unwrap().k, 9);
        assert_eq!(lane.unsent(), 5);
        lane.sent(s.t0);
        assert_eq!(lane.unsent(), 5);
        lane.sent(s.t0);
        assert_eq!(lane.unsent(), 4);
    }

    /// The coordinated-omission correction: one lane at 1000 requests a second, a target that
    /// answers in 100 µs but stalls 200 ms once. The requests due during the stall count from
    /// their due times, so their latencies fall from 200 ms down to the service time, and the
    /// run's latencies add up to what a caller waiting on that schedule really waited.
    #[test]
    fn a_stall_delays_every_request_due_during_it() {
        let s = rate(1000.0, Stop::Requests(1000), Duration::ZERO, Duration::ZERO);
        let service = Duration::from_micros(100);
        let stall = Duration::from_millis(200);
        let mut lane = s.lane(0, 1).unwrap();
        let mut free_at = s.t0;
        let mut latencies = Vec::new();
        while let Some(due) = lane.next_due() {
            // The sender wakes at the due time, or when its connection frees up if later.
            let woke = due.at.max(free_at);
            let start = lane.start(&due, woke);
            let done = woke + if due.k == 100 { stall } else { service };
            latencies.push(done - start);
            free_at = done;
            lane.sent(done);
        }
        assert_eq!(latencies.len(), 1000);
        assert_eq!(latencies[99], service);
        assert_eq!(latencies[100], stall);
        let about = |l: Duration, ms: f64| (l.as_secs_f64() * 1e3 - ms).abs() < 1e-3;
        // Request 101 was due 1 ms after 100 started: it waited 199 ms, then was served.
        assert!(about(latencies[101], 199.1), "{:?}", latencies[101]);
        // The backlog drains at 0.9 ms a request: request 100 + j waited 200 - 0.9 j ms.
        assert!(about(latencies[200], 110.0), "{:?}", latencies[200]);
        let delayed = latencies
            .iter()
            .filter(|l| **l > Duration::from_millis(1))
            .count();
        assert_eq!(
            delayed, 222,
            "the stalled request and the 221 due behind it"
        );
        // On time again afterwards: timed from when the sender woke, not from a stale due time.
        assert_eq!(latencies[400], service);
    }
}
