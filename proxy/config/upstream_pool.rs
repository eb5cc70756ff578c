//! `upstream_pool:`: how many HTTP/1.1 connections popgate opens to one upstream host, how many
//! callers may wait for one when all are busy, and for how long. Global, and per route key by key.

use std::time::Duration;

use super::limits::{
    DEFAULT_MAX_CONNECTIONS_PER_HOST, DEFAULT_POOL_MAX_WAITING, DEFAULT_POOL_WAIT_TIMEOUT,
};

/// A route's upstream connection pool bounds, defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamPool {
    /// Live connections per upstream host per snapshot; over HTTP/1.1 also the requests a host
    /// serves at once (HTTP/2 multiplexes and is not held to it per request).
    pub max_connections_per_host: usize,
    /// Callers that may wait for a connection when all are busy; the next gets 503 at once.
    pub max_waiting: usize,
    /// How long one caller may wait for a connection before it gets 503.
    pub wait_timeout: Duration,
}

impl Default for UpstreamPool {
    fn default() -> Self {
        Self {
            max_connections_per_host: DEFAULT_MAX_CONNECTIONS_PER_HOST,
            max_waiting: DEFAULT_POOL_MAX_WAITING,
            wait_timeout: DEFAULT_POOL_WAIT_TIMEOUT,
        }
    }
}
