//! Token cache, single-flight, refresh scheduling, snapshot publishing.

pub mod build;
pub mod cache;
pub mod credential;
pub mod schedule;
pub mod snapshot;
pub mod sources;
