//! `limits:` (caller-facing HTTP limits) and a route's `max_body_bytes`: whole numbers within
//! bounds that keep popgate working, and a duration.

use crate::config::limits::{MAX_WORKERS, MIN_MAX_HEADER_BYTES};
use crate::config::model::Limits;
use crate::config::schema::{RawLimits, S};

use super::Ctx;

/// Header lines: beyond 10 000 one request's header index alone is hundreds of KiB.
const MAX_HEADERS_RANGE: (u64, u64) = (1, 10_000);
/// Head bytes: hyper's HTTP/1 read buffer cannot be below 8 KiB; above 1 MiB per connection a
/// few thousand slow callers exhaust memory.
const MAX_HEADER_BYTES_RANGE: (u64, u64) = (MIN_MAX_HEADER_BYTES as u64, 1024 * 1024);
/// URI bytes: hyper refuses targets of 65 535 bytes or more on its own.
const MAX_URI_BYTES_RANGE: (u64, u64) = (1, 65_534);
/// Body bytes: any positive size (0 would refuse every POST).
const MAX_BODY_BYTES_RANGE: (u64, u64) = (1, u64::MAX);
/// Connections: beyond a million the file-descriptor limit is the real cap.
const MAX_CONNECTIONS_RANGE: (u64, u64) = (1, 1_000_000);
/// HTTP/2 streams: beyond 10 000 one connection can pin a node's upstream capacity.
const H2_MAX_CONCURRENT_STREAMS_RANGE: (u64, u64) = (1, 10_000);

/// The top-level `workers:` (data-plane threads).
pub(super) fn workers(cx: &mut Ctx<'_>, raw: Option<&S<u64>>) -> Option<usize> {
    within(cx, "workers", raw, (1, MAX_WORKERS as u64))
        .map(|v| usize::try_from(v).unwrap_or(MAX_WORKERS))
}

pub(super) fn limits(cx: &mut Ctx<'_>, raw: Option<&S<RawLimits>>) -> Limits {
    let Some(raw) = raw.map(|r| &r.value) else {
        return Limits::default();
    };
    let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    Limits {
        max_headers: within(
            cx,
            "max_headers",
            raw.max_headers.as_ref(),
            MAX_HEADERS_RANGE,
        )
        .map(to_usize),
        max_header_bytes: within(
            cx,
            "max_header_bytes",
            raw.max_header_bytes.as_ref(),
            MAX_HEADER_BYTES_RANGE,
        )
        .map(to_usize),
        max_uri_bytes: within(
            cx,
            "max_uri_bytes",
            raw.max_uri_bytes.as_ref(),
            MAX_URI_BYTES_RANGE,
        )
        .map(to_usize),
        max_body_bytes: within(
            cx,
            "max_body_bytes",
            raw.max_body_bytes.as_ref(),
            MAX_BODY_BYTES_RANGE,
        ),
        max_connections: within(
            cx,
            "max_connections",
            raw.max_connections.as_ref(),
            MAX_CONNECTIONS_RANGE,
        )
        .map(to_usize),
        header_read_timeout: duration(cx, "header_read_timeout", &raw.header_read_timeout),
        request_body_timeout: duration(cx, "request_body_timeout", &raw.request_body_timeout),
        response_body_timeout: duration(cx, "response_body_timeout", &raw.response_body_timeout),
        h2_max_concurrent_streams: within(
            cx,
            "h2_max_concurrent_streams",
            raw.h2_max_concurrent_streams.as_ref(),
            H2_MAX_CONCURRENT_STREAMS_RANGE,
        )
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
        first_byte_timeout: duration(cx, "first_byte_timeout", &raw.first_byte_timeout),
        h2_preface_timeout: duration(cx, "h2_preface_timeout", &raw.h2_preface_timeout),
        tls_handshake_timeout: duration(cx, "tls_handshake_timeout", &raw.tls_handshake_timeout),
        keep_alive_timeout: duration(cx, "keep_alive_timeout", &raw.keep_alive_timeout),
    }
}

/// A connection deadline: a duration (`500ms`, `5s`) above zero and at most a day; an error
/// naming the key otherwise.
fn duration(cx: &mut Ctx<'_>, key: &str, raw: &Option<S<String>>) -> Option<std::time::Duration> {
    let v = raw.as_ref()?;
    super::super::duration::parse_duration(&v.value)
        .map_err(|msg| cx.error(v.referenced, format!("{key}: {msg}")))
        .ok()
}

/// A route's own `max_body_bytes`.
pub(super) fn route_body_limit(cx: &mut Ctx<'_>, raw: Option<&S<u64>>) -> Option<u64> {
    within(cx, "max_body_bytes", raw, MAX_BODY_BYTES_RANGE)
}

/// `Some(value)` when given and within `(min, max)`; an error naming the key and range otherwise.
fn within(
    cx: &mut Ctx<'_>,
    key: &str,
    raw: Option<&S<u64>>,
    (min, max): (u64, u64),
) -> Option<u64> {
    let v = raw?;
    if (min..=max).contains(&v.value) {
        return Some(v.value);
    }
    let range = if max == u64::MAX {
        format!("at least {min}")
    } else {
        format!("between {min} and {max}")
    };
    cx.error(
        v.referenced,
        format!("{key} must be {range}; got {}", v.value),
    );
    None
}
