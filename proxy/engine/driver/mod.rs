//! One task per route: get a token from the route's [`Credential`](crate::engine::credential::Credential),
//! publish a [`Snapshot`](crate::route::slot::Snapshot) for it, sleep until it should be refreshed
//! (or until the binding certificate changes, or the upstream refuses the token), refresh, publish
//! again.
//!
//! Failures never end the loop. While the published token is usable it keeps being served
//! (`Stale`) and the driver retries with [`Backoff`](crate::engine::backoff::Backoff); once it
//! stops being usable the snapshot is withdrawn (`Failed`, requests get 503) and retries continue
//! until one succeeds.
//!
//! `state` decides (pure transitions, unit-tested); `run` waits, acquires, publishes, counts
//! and logs.

use std::time::Duration;

mod events;
mod log;
mod run;
mod state;
#[cfg(test)]
mod tests;
mod waits;

pub use run::{DriverSettings, RouteDriver};

/// After an upstream `401 invalid_token` forced a new acquisition, further refusals wait at least
/// this long before forcing another: a resource that refuses every token must not turn each
/// request into a token-endpoint call.
pub const MIN_INVALIDATION_INTERVAL: Duration = Duration::from_secs(5);
