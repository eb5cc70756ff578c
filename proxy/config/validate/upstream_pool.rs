//! `upstream_pool:` (global and per route): whole numbers within bounds that keep popgate
//! working, and a duration; a route's keys override the global ones one by one.

use crate::config::limits::{MAX_POOL_CONNECTIONS_PER_HOST, MAX_POOL_WAITING};
use crate::config::model::UpstreamPool;
use crate::config::schema::{RawUpstreamPool, S};

use super::Ctx;

/// `raw` applied over `base`; each bad value is an error at its position and keeps `base`'s.
pub(super) fn upstream_pool(
    cx: &mut Ctx<'_>,
    raw: Option<&S<RawUpstreamPool>>,
    base: UpstreamPool,
) -> UpstreamPool {
    let Some(raw) = raw.map(|r| &r.value) else {
        return base;
    };
    let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let mut pool = base;
    if let Some(v) = &raw.max_connections_per_host {
        // 0 would make every request wait for a connection that can never open.
        if (1..=MAX_POOL_CONNECTIONS_PER_HOST).contains(&v.value) {
            pool.max_connections_per_host = to_usize(v.value);
        } else {
            cx.error(
                v.referenced,
                format!(
                    "upstream_pool.max_connections_per_host must be between 1 and \
                     {MAX_POOL_CONNECTIONS_PER_HOST}; got {}",
                    v.value
                ),
            );
        }
    }
    if let Some(v) = &raw.max_waiting {
        // 0 is allowed: no caller waits, every one beyond the busy connections gets 503 at once.
        if v.value <= MAX_POOL_WAITING {
            pool.max_waiting = to_usize(v.value);
        } else {
            cx.error(
                v.referenced,
                format!(
                    "upstream_pool.max_waiting must be between 0 and {MAX_POOL_WAITING}; got {}",
                    v.value
                ),
            );
        }
    }
    if let Some(v) = &raw.wait_timeout {
        match crate::config::duration::parse_duration(&v.value) {
            Ok(d) => pool.wait_timeout = d,
            Err(msg) => cx.error(v.referenced, format!("upstream_pool.wait_timeout: {msg}")),
        }
    }
    pool
}
