//! Caller and admin connections that popgate closed on its own: evicted at the connection cap to
//! admit a new caller, or past a phase's deadline. Labels are fixed enums.

use prometheus::{IntCounterVec, Opts, Registry};

/// The `listener` label values: every caller-facing listener, or the admin one.
pub(crate) const LISTENERS: [&str; 2] = ["caller", "admin"];
/// The `phase` label values of deadline closes.
pub(crate) const PHASES: [&str; 4] = ["tls_handshake", "first_byte", "preface", "keep_alive"];

/// The connection counters.
pub(crate) struct ConnectionMetrics {
    evicted: IntCounterVec,
    deadline: IntCounterVec,
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
        Ok(Self { evicted, deadline })
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
