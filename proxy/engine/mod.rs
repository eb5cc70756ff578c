//! Token cache, single-flight, refresh scheduling, snapshot publishing.

pub mod backoff;
pub mod build;
pub mod cache;
pub mod cached;
pub mod credential;
pub mod driver;
pub mod schedule;
pub mod sources;
pub mod token_source;
