//! Caller and admin connections that popgate closed on its own: evicted at the connection cap to
//! admit a new caller, or past a phase's deadline; and idle HTTP/1 callers parked outside hyper.
//! Labels are fixed enums.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// The `listener` label values: every caller-facing listener, or the admin one.
pub(crate) const LISTENERS: [&str; 2] = ["caller", "admin"];
/// The `phase` label values of deadline closes.
pub(crate) const PHASES: [&str; 4] = ["tls_handshake", "first_byte", "preface", "keep_alive"];
/// The `protocol` label values of body stalls.
pub(crate) const PROTOCOLS: [&str; 2] = ["http1", "http2"];
/// The `direction` label values of body stalls: the caller's request body, or the response the
/// caller stopped accepting.
pub(crate) const DIRECTIONS: [&str; 2] = ["request", "response"];

/// The connection counters.
pub(crate) struct ConnectionMetrics {
    evicted: IntCounterVec,
    deadline: IntCounterVec,
    body_stalls: IntCounterVec,
    parked: IntCounter,
}

impl ConnectionMetrics {
    pub(super) fn new(r: &Registry) -> prometheus::Result<Self> {
        let evicted = IntCounterVec::new(
            Opts::new(
                "popgate_connections_evicted_total",
                "Connections with no request in flight closed at the connection cap (longest idle first) to admit a new one.",
            ),
            &["listener"],
        )?;
        r.register(Box::new(evicted.clone()))?;
        let deadline = IntCounterVec::new(
            Opts::new(
                "popgate_connection_deadlines_total",
                "Connections closed because a phase (TLS handshake, first byte, HTTP/2 preface, keep-alive idle) outlived its deadline.",
            ),
            &["listener", "phase"],
        )?;
        r.register(Box::new(deadline.clone()))?;
        for listener in LISTENERS {
            evicted.with_label_values(&[listener]);
            for phase in PHASES {
                deadline.with_label_values(&[listener, phase]);
            }
        }
        let body_stalls = IntCounterVec::new(
            Opts::new(
                "popgate_body_stalls_total",
                "Bodies cut off because they made no progress for their deadline: a request body the caller stopped sending (limits.request_body_timeout) or a response the caller stopped accepting (limits.response_body_timeout). HTTP/1 closes the connection; HTTP/2 ends the stream.",
            ),
            &["protocol", "direction"],
        )?;
        r.register(Box::new(body_stalls.clone()))?;
        for protocol in PROTOCOLS {
            for direction in DIRECTIONS {
                body_stalls.with_label_values(&[protocol, direction]);
            }
        }
        let parked = IntCounter::new(
            "popgate_connections_parked_total",
            "Times an idle HTTP/1 caller connection was parked: taken out of hyper with its buffers freed until its next request.",
        )?;
        r.register(Box::new(parked.clone()))?;
        Ok(Self {
            evicted,
            deadline,
            body_stalls,
            parked,
        })
    }
}

/// A connection on `listener` (`caller` or `admin`) was evicted at the cap.
pub(crate) fn evicted(listener: &'static str) {
    super::global()
        .connections
        .evicted
        .with_label_values(&[listener])
        .inc();
}

/// A connection on `listener` was closed because `phase` outlived its deadline.
pub(crate) fn deadline(listener: &'static str, phase: &'static str) {
    super::global()
        .connections
        .deadline
        .with_label_values(&[listener, phase])
        .inc();
}

/// A body on `protocol` (`http1`, `http2`) in `direction` (`request`, `response`) was cut off
/// because it made no progress for its deadline.
pub(crate) fn body_stalled(protocol: &'static str, direction: &'static str) {
    super::global()
        .connections
        .body_stalls
        .with_label_values(&[protocol, direction])
        .inc();
}

/// An idle HTTP/1 caller connection was parked (its hyper connection and buffers freed).
pub(crate) fn parked() {
    super::global().connections.parked.inc();
}
