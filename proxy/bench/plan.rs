//! The load a `popgate bench` run applies, checked against its bounds before anything starts.

use std::time::{Duration, Instant};

use loadgen::Schedule;

use super::BenchError;

/// Longest run (ramp + warm-up + measured phase): a benchmark that forgets its end must still end.
pub const MAX_RUN: Duration = Duration::from_secs(600);
/// Most measured requests per route with `--requests`: a million is minutes at any sane rate.
pub const MAX_REQUESTS: u64 = 1_000_000;
/// Most connections per route: each holds a socket in popgate and in the bench.
pub const MAX_CONCURRENCY: usize = 1024;
/// Highest `--rate` per route; above it the bench itself (sharing the process) is the bottleneck.
pub const MAX_RATE: f64 = 100_000.0;
/// Highest rate (per route) sent to a non-loopback upstream without `--max-rate`: a few requests
/// a second never looks like an attack on someone's API, a typo'd `--rate 10000` would.
pub const SAFE_REMOTE_RATE: f64 = 10.0;
/// Longest per-request timeout: popgate's own default request timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Measured phase when neither `--duration` nor `--requests` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Connections per route when `--concurrency` is not given: enough that one slow request does not
/// stall a fixed-rate schedule, few enough for a shared laptop.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// The load's shape and when it stops: the shared load generator's (`loadgen`), so that
/// `popgate bench` and the load harness's `bench-load` pace requests the same way.
pub use loadgen::{Load, Stop};

/// The flags that shape the load, as given.
#[derive(Clone, Debug, Default)]
pub struct LoadFlags {
    /// `--concurrency`.
    pub concurrency: Option<usize>,
    /// `--rate`.
    pub rate: Option<f64>,
    /// `--duration`.
    pub duration: Option<Duration>,
    /// `--requests`.
    pub requests: Option<u64>,
    /// `--warmup`.
    pub warmup: Duration,
    /// `--ramp`.
    pub ramp: Duration,
    /// `--timeout`.
    pub timeout: Duration,
    /// `--max-rate`.
    pub max_rate: Option<f64>,
}

/// A checked load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// Closed or fixed rate.
    pub load: Load,
    /// Connections per route.
    pub concurrency: usize,
    /// End of the measured phase.
    pub stop: Stop,
    /// Unmeasured full load before the measured phase (after the ramp).
    pub warmup: Duration,
    /// Linear ramp from nothing to the full load, unmeasured.
    pub ramp: Duration,
    /// Per request.
    pub timeout: Duration,
    /// Ceiling per route in closed loop (only set against non-loopback upstreams).
    pub pace: Option<f64>,
}

fn usage(message: String) -> BenchError {
    BenchError::Usage(message)
}

impl Plan {
    /// Checks `flags`; `remote` names a target route whose upstream is not on loopback, if any.
    pub fn new(flags: &LoadFlags, remote: Option<&str>) -> Result<Plan, BenchError> {
        let concurrency = flags.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 || concurrency > MAX_CONCURRENCY {
            return Err(usage(format!(
                "--concurrency {concurrency}: must be between 1 and {MAX_CONCURRENCY}"
            )));
        }
        let load = match flags.rate {
            None => Load::Closed,
            Some(r) if !(r > 0.0 && r <= MAX_RATE) => {
                return Err(usage(format!(
                    "--rate {r}: must be more than 0 and at most {MAX_RATE} requests a second per route"
                )));
            }
            Some(r) => Load::Rate(r),
        };
        let stop = match (flags.duration, flags.requests) {
            (Some(_), Some(_)) => {
                return Err(usage("give --duration or --requests, not both".into()));
            }
            (_, Some(n)) if n == 0 || n > MAX_REQUESTS => {
                return Err(usage(format!(
                    "--requests {n}: must be between 1 and {MAX_REQUESTS}"
                )));
            }
            (_, Some(n)) => Stop::Requests(n),
            (Some(d), None) => Stop::After(d),
            (None, None) => Stop::After(DEFAULT_DURATION),
        };
        let measured = match (stop, load) {
            (Stop::After(d), _) => d,
            (Stop::Requests(n), Load::Rate(r)) => Duration::from_secs_f64(n as f64 / r),
            // A closed loop's length is unknown: the hard maximum bounds it at run time.
            (Stop::Requests(_), Load::Closed) => Duration::ZERO,
        };
        let total = flags.ramp + flags.warmup + measured;
        if total > MAX_RUN {
            return Err(usage(format!(
                "the run would last {} s (ramp + warm-up + measured phase): at most {} s",
                total.as_secs_f64().ceil(),
                MAX_RUN.as_secs()
            )));
        }
        if stop == Stop::After(Duration::ZERO) {
            return Err(usage("--duration must be more than 0".into()));
        }
        if flags.timeout.is_zero() || flags.timeout > MAX_TIMEOUT {
            return Err(usage(format!(
                "--timeout: must be more than 0 and at most {} s",
                MAX_TIMEOUT.as_secs()
            )));
        }
        let pace = check_remote(load, flags.max_rate, remote)?;
        Ok(Plan {
            load,
            concurrency,
            stop,
            warmup: flags.warmup,
            ramp: flags.ramp,
            timeout: flags.timeout,
            pace,
        })
    }

    /// This plan's schedule for a load that starts at `t0`; a closed loop that stops after a
    /// number of requests ends at [`MAX_RUN`] at the latest.
    pub(crate) fn schedule(&self, t0: Instant) -> Schedule {
        Schedule::new(t0, self.load, self.stop, self.ramp, self.warmup, MAX_RUN)
    }
}

/// Against a non-loopback upstream, a rate above [`SAFE_REMOTE_RATE`] (and any closed loop, whose
/// rate is whatever the upstream sustains) needs `--max-rate`; a closed loop is then paced to it.
fn check_remote(
    load: Load,
    max_rate: Option<f64>,
    remote: Option<&str>,
) -> Result<Option<f64>, BenchError> {
    if let Some(m) = max_rate
        && !(m > 0.0 && m <= MAX_RATE)
    {
        return Err(usage(format!(
            "--max-rate {m}: must be more than 0 and at most {MAX_RATE}"
        )));
    }
    let Some(route) = remote else {
        return Ok(None);
    };
    match (load, max_rate) {
        (Load::Rate(r), _) if r <= SAFE_REMOTE_RATE => Ok(None),
        (Load::Rate(r), Some(m)) if r <= m => Ok(None),
        (Load::Rate(r), Some(m)) => Err(usage(format!(
            "--rate {r} is above --max-rate {m} (route `{route}` calls a non-loopback upstream)"
        ))),
        (Load::Rate(r), None) => Err(usage(format!(
            "--rate {r}: route `{route}` calls a non-loopback upstream; above {SAFE_REMOTE_RATE} requests a second that needs an explicit --max-rate (and the service owner's consent)"
        ))),
        (Load::Closed, Some(m)) => Ok(Some(m)),
        (Load::Closed, None) => Err(usage(format!(
            "a closed loop sends as fast as the upstream answers and route `{route}` calls a non-loopback upstream: give --rate (at most {SAFE_REMOTE_RATE} without --max-rate) or --max-rate"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> LoadFlags {
        LoadFlags {
            timeout: Duration::from_secs(10),
            ..LoadFlags::default()
        }
    }

    #[test]
    fn bounds_are_enforced() {
        let ok = Plan::new(&flags(), None).unwrap();
        assert_eq!(ok.load, Load::Closed);
        assert_eq!(ok.stop, Stop::After(DEFAULT_DURATION));
        let bad = |f: LoadFlags| Plan::new(&f, None).unwrap_err().to_string();
        assert!(
            bad(LoadFlags {
                rate: Some(0.0),
                ..flags()
            })
            .contains("--rate 0")
        );
        assert!(
            bad(LoadFlags {
                rate: Some(f64::NAN),
                ..flags()
            })
            .contains("--rate")
        );
        assert!(
            bad(LoadFlags {
                concurrency: Some(0),
                ..flags()
            })
            .contains("--concurrency")
        );
        assert!(
            bad(LoadFlags {
                requests: Some(0),
                ..flags()
            })
            .contains("--requests")
        );
        let long = LoadFlags {
            duration: Some(Duration::from_secs(590)),
            warmup: Duration::from_secs(20),
            ..flags()
        };
        assert!(bad(long).contains("at most 600 s"));
        let slow = LoadFlags {
            rate: Some(0.001),
            requests: Some(10),
            ..flags()
        };
        assert!(bad(slow).contains("at most 600 s"));
    }

    #[test]
    fn remote_upstreams_need_max_rate() {
        let remote = Some("graph");
        let rate = |r: f64, m: Option<f64>| LoadFlags {
            rate: Some(r),
            max_rate: m,
            ..flags()
        };
        assert!(Plan::new(&rate(SAFE_REMOTE_RATE, None), remote).is_ok());
        let e = Plan::new(&rate(50.0, None), remote)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--max-rate") && e.contains("graph"), "{e}");
        assert!(Plan::new(&rate(50.0, Some(50.0)), remote).is_ok());
        assert!(Plan::new(&rate(60.0, Some(50.0)), remote).is_err());
        assert!(Plan::new(&rate(50.0, None), None).is_ok());
        assert!(Plan::new(&flags(), remote).is_err());
        let paced = LoadFlags {
            max_rate: Some(5.0),
            ..flags()
        };
        assert_eq!(Plan::new(&paced, remote).unwrap().pace, Some(5.0));
    }
}
