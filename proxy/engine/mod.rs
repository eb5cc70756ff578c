//! Token cache, single-flight, refresh scheduling, snapshot publishing.

pub mod snapshot;
