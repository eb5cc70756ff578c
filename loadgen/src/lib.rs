//! One load generator's timing and recording, shared by `popgate bench` and the load harness's
//! `bench-load`, so that both measure the same way:
//!
//! - [`Schedule`] and [`Lane`]: a run's phases (ramp, warm-up, measured) and, at a fixed rate, when
//!   each request is due, split over the connections. A request that could not be sent at its due
//!   time because its connection was still busy is timed from its due time (coordinated-omission
//!   correction, as wrk2 does), so a stall shows in every request it delayed.
//! - [`Recorder`]: latencies in an HdrHistogram (µs), a per-second series, and the caller's own
//!   counts (statuses, failure kinds), in mutex-guarded shards merged when read.
//! - [`Percentiles`]: the figures both tools print from a histogram.
//!
//! No I/O and no runtime: the callers own their connections and timers.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

mod percentiles;
mod record;
mod schedule;

pub use hdrhistogram::{Counter, Histogram};
pub use percentiles::Percentiles;
pub use record::{Bounds, Counts, Recorder, Sample, Second, Series, Tally};
pub use schedule::{Due, Lane, Load, Schedule, Stop};
