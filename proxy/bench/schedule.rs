//! When each request of a route is due: phases (ramp, warm-up, measured) and, at a fixed rate,
//! the due time of request k, so that every connection can compute its own share of one schedule.

use std::time::{Duration, Instant};

use super::plan::{Load, MAX_RUN, Plan, Stop};

/// The run's phases for one route.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Schedule {
    /// The load starts.
    pub t0: Instant,
    /// The measured phase starts (after the ramp and warm-up).
    pub measure_start: Instant,
    /// Closed loop: the measured phase ends (the hard maximum with `--requests`).
    pub closed_end: Instant,
    plan: Plan,
}

impl Schedule {
    /// The schedule of `plan` from `t0`.
    pub(crate) fn new(plan: Plan, t0: Instant) -> Self {
        let measure_start = t0 + plan.ramp + plan.warmup;
        let closed_end = match plan.stop {
            Stop::After(d) => measure_start + d,
            Stop::Requests(_) => t0 + MAX_RUN,
        };
        Self {
            t0,
            measure_start,
            closed_end,
            plan,
        }
    }

    /// Requests due during the ramp at `rate`: the integral of a rate rising linearly to `rate`.
    fn ramp_requests(&self, rate: f64) -> u64 {
        (rate * self.plan.ramp.as_secs_f64() / 2.0).floor() as u64
    }

    /// Fixed rate: the first measured request's index and the index past the last one.
    pub(crate) fn measured_range(&self, rate: f64) -> (u64, u64) {
        let first =
            self.ramp_requests(rate) + (rate * self.plan.warmup.as_secs_f64()).floor() as u64;
        let count = match self.plan.stop {
            Stop::Requests(n) => n,
            Stop::After(d) => (rate * d.as_secs_f64()).round() as u64,
        };
        (first, first + count)
    }

    /// Fixed rate: when request `k` is due. During the ramp the rate rises linearly, so the k-th
    /// request is due when R t^2 / (2 ramp) = k.
    pub(crate) fn due(&self, rate: f64, k: u64) -> Instant {
        let ramp = self.plan.ramp.as_secs_f64();
        let in_ramp = self.ramp_requests(rate);
        let secs = if k < in_ramp {
            (2.0 * k as f64 * ramp / rate).sqrt()
        } else {
            ramp + (k - in_ramp) as f64 / rate
        };
        self.t0 + Duration::from_secs_f64(secs)
    }

    /// Closed loop: when connection `i` of `n` starts (spread over the ramp).
    pub(crate) fn closed_start(&self, i: usize, n: usize) -> Instant {
        self.t0 + self.plan.ramp.mul_f64(i as f64 / n.max(1) as f64)
    }

    /// The end of the run as planned (the last due request at a fixed rate).
    pub(crate) fn planned_end(&self) -> Instant {
        match self.plan.load {
            Load::Closed => self.closed_end,
            Load::Rate(r) => self.due(r, self.measured_range(r).1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::{LoadFlags, Plan};

    #[test]
    fn a_ramped_rate_schedule_is_monotonic_and_lands_on_the_rate() {
        let plan = Plan::new(
            &LoadFlags {
                rate: Some(100.0),
                ramp: Duration::from_secs(2),
                warmup: Duration::from_secs(1),
                duration: Some(Duration::from_secs(3)),
                timeout: Duration::from_secs(5),
                ..LoadFlags::default()
            },
            None,
        )
        .unwrap();
        let t0 = Instant::now();
        let s = Schedule::new(plan, t0);
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
        assert_eq!(s.measure_start, t0 + Duration::from_secs(3));
    }
}
