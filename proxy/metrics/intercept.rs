//! CONNECT interception: tunnels opened, tunnels refused by reason, leaf certificates minted.
//! Labels are a fixed enum; the intercepted host is never a label (a wildcard route would let
//! callers choose unboundedly many).

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, Opts};

/// The `reason` label values of refused tunnels.
pub(crate) const REFUSALS: [&str; 7] = [
    "no_route",
    "not_allowed",
    "bad_request",
    "head_too_large",
    "mint_failed",
    "sni_mismatch",
    "handshake_failed",
];

struct InterceptMetrics {
    opened: IntCounter,
    refused: IntCounterVec,
    minted: IntCounter,
}

impl InterceptMetrics {
    fn new() -> prometheus::Result<Self> {
        let r = super::global().registry();
        let opened = IntCounter::new(
            "popgate_intercept_tunnels_opened_total",
            "CONNECT tunnels answered 200 and intercepted (a TLS handshake with a minted leaf follows).",
        )?;
        r.register(Box::new(opened.clone()))?;
        let refused = IntCounterVec::new(
            Opts::new(
                "popgate_intercept_tunnels_refused_total",
                "CONNECT tunnels refused or closed before their requests were served, by reason.",
            ),
            &["reason"],
        )?;
        r.register(Box::new(refused.clone()))?;
        let minted = IntCounter::new(
            "popgate_intercept_leaves_minted_total",
            "Leaf certificates minted for intercepted hosts (first use of a host, or renewal).",
        )?;
        r.register(Box::new(minted.clone()))?;
        for reason in REFUSALS {
            refused.with_label_values(&[reason]);
        }
        Ok(Self {
            opened,
            refused,
            minted,
        })
    }
}

/// Registered in the global registry on first use ([`init`] at listener start); the names are
/// fixed and registered once, so this cannot fail (the test below proves it).
static METRICS: LazyLock<InterceptMetrics> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    InterceptMetrics::new().expect("static metric definitions are valid")
});

/// Registers the families, so `/metrics` shows them at zero before the first CONNECT.
pub(crate) fn init() {
    LazyLock::force(&METRICS);
}

/// A tunnel was opened.
pub(crate) fn opened() {
    METRICS.opened.inc();
}

/// A tunnel was refused; `reason` is one of [`REFUSALS`].
pub(crate) fn refused(reason: &'static str) {
    debug_assert!(REFUSALS.contains(&reason));
    METRICS.refused.with_label_values(&[reason]).inc();
}

/// A leaf was minted.
pub(crate) fn minted() {
    METRICS.minted.inc();
}

#[cfg(test)]
mod tests {
    #[test]
    fn intercept_metrics_register() {
        super::init();
        super::refused("no_route");
        let text = super::super::global()
            .registry()
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect::<Vec<_>>();
        assert!(
            text.iter()
                .any(|n| n == "popgate_intercept_tunnels_refused_total")
        );
    }
}
