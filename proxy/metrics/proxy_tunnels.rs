//! CONNECT tunnels through the outbound HTTP proxy, by peer and outcome. Labels are fixed enums:
//! neither the proxy's URL (it may carry credentials) nor the target host becomes a label.

use prometheus::{IntCounterVec, Opts, Registry};

/// The `peer` label values: routes' upstreams, or token endpoints.
pub(crate) const PEERS: [&str; 2] = ["upstream", "token"];
/// The `outcome` label values: tunnel open (2xx), proxy answered non-2xx, anything else
/// (proxy unreachable, bad answer, timeout).
pub(crate) const OUTCOMES: [&str; 3] = ["ok", "refused", "failed"];

/// The tunnel counter.
pub(crate) struct ProxyTunnelMetrics {
    tunnels: IntCounterVec,
}

impl ProxyTunnelMetrics {
    pub(super) fn new(r: &Registry) -> prometheus::Result<Self> {
        let tunnels = IntCounterVec::new(
            Opts::new(
                "popgate_proxy_tunnels_total",
                "CONNECT tunnels through the outbound HTTP proxy, by peer (upstream, token) and outcome (ok, refused, failed).",
            ),
            &["peer", "outcome"],
        )?;
        r.register(Box::new(tunnels.clone()))?;
        for peer in PEERS {
            for outcome in OUTCOMES {
                tunnels.with_label_values(&[peer, outcome]);
            }
        }
        Ok(Self { tunnels })
    }
}

/// One CONNECT to the proxy for `peer` ended with `outcome`.
pub(crate) fn tunnel(peer: &'static str, outcome: &'static str) {
    super::global()
        .proxy_tunnels
        .tunnels
        .with_label_values(&[peer, outcome])
        .inc();
}
