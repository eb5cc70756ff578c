//! Upstream connection pool metrics, per route only (no host label, so a wildcard route reaching
//! many hosts cannot grow the series): connections open, callers waiting for one, and callers
//! refused because the pool was busy. Registered in the process registry on first use (a route's
//! upstream settings are built at start), so they stay out of `Metrics::new`.

use std::sync::{Arc, LazyLock, OnceLock};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

/// Why a caller was refused a connection: a bounded label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolRefusal {
    /// Every connection was busy and the waiting line was full: refused at once.
    WaitersFull,
    /// The caller waited its `wait_timeout` and no connection came free.
    WaitExpired,
}

impl PoolRefusal {
    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolRefusal::WaitersFull => "waiters_full",
            PoolRefusal::WaitExpired => "wait_expired",
        }
    }
}

struct Families {
    dials: IntCounterVec,
    connections: IntGaugeVec,
    waiters: IntGaugeVec,
    refusals: IntCounterVec,
}

fn families() -> prometheus::Result<Families> {
    let registry = super::global().registry();
    let connections = IntGaugeVec::new(
        Opts::new(
            "popgate_upstream_pool_connections",
            "Upstream connections open now (all hosts and snapshots of the route).",
        ),
        &["route"],
    )?;
    let waiters = IntGaugeVec::new(
        Opts::new(
            "popgate_upstream_pool_waiters",
            "Callers waiting now for a busy upstream host's connection.",
        ),
        &["route"],
    )?;
    let refusals = IntCounterVec::new(
        Opts::new(
            "popgate_upstream_pool_refusals_total",
            "Callers answered 503 because the upstream pool was busy, by reason \
             (waiters_full: refused at once; wait_expired: waited wait_timeout).",
        ),
        &["route", "reason"],
    )?;
    let dials = IntCounterVec::new(
        Opts::new(
            "popgate_upstream_pool_dials_total",
            "Upstream connections dialled for the route, by outcome (ok: TCP connected and TLS \
             handshake done; failed); requests sent upstream over ok dials gives the reuse.",
        ),
        &["route", "outcome"],
    )?;
    registry.register(Box::new(dials.clone()))?;
    registry.register(Box::new(connections.clone()))?;
    registry.register(Box::new(waiters.clone()))?;
    registry.register(Box::new(refusals.clone()))?;
    Ok(Families {
        dials,
        connections,
        waiters,
        refusals,
    })
}

/// Registered once; `pool_metrics_build` below proves the definitions valid.
static FAMILIES: LazyLock<Families> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    families().expect("static pool metric definitions are valid and registered once")
});

/// One route's pool metric handles, resolved on the route's first upstream connection, wait or
/// refusal (not per request, and not at start: six children per route cost ~2.7 KiB each route,
/// 1,000 routes that never send a request held ~2.7 MiB; benches/README.md). A route's pool
/// series appear in `/metrics` from then on.
#[derive(Debug)]
pub struct PoolMetrics {
    route: Box<str>,
    handles: OnceLock<Handles>,
}

/// The label children of one route.
#[derive(Debug)]
struct Handles {
    connections: IntGauge,
    waiters: IntGauge,
    waiters_full: IntCounter,
    wait_expired: IntCounter,
    dialled_ok: IntCounter,
    dial_failed: IntCounter,
}

impl Handles {
    fn of(route: &str) -> Self {
        let f = &*FAMILIES;
        Self {
            connections: f.connections.with_label_values(&[route]),
            waiters: f.waiters.with_label_values(&[route]),
            waiters_full: f
                .refusals
                .with_label_values(&[route, PoolRefusal::WaitersFull.as_str()]),
            wait_expired: f
                .refusals
                .with_label_values(&[route, PoolRefusal::WaitExpired.as_str()]),
            dialled_ok: f.dials.with_label_values(&[route, "ok"]),
            dial_failed: f.dials.with_label_values(&[route, "failed"]),
        }
    }
}

impl PoolMetrics {
    /// The handles of `route` (a configured route name), resolved on first use.
    pub fn of(route: &str) -> Arc<Self> {
        Arc::new(Self {
            route: route.into(),
            handles: OnceLock::new(),
        })
    }

    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| Handles::of(&self.route))
    }

    /// An upstream connection opened; the returned guard counts it until dropped.
    pub fn connection(self: &Arc<Self>) -> Gauged {
        self.handles().connections.inc();
        Gauged(Arc::clone(self), Which::Connection)
    }

    /// A caller starts waiting; the returned guard counts it until dropped.
    pub fn waiter(self: &Arc<Self>) -> Gauged {
        self.handles().waiters.inc();
        Gauged(Arc::clone(self), Which::Waiter)
    }

    /// Counts one upstream dial (TCP and TLS handshake) of the route, `ok` or failed.
    pub fn dialled(&self, ok: bool) {
        if ok {
            self.handles().dialled_ok.inc();
        } else {
            self.handles().dial_failed.inc();
        }
    }

    /// Counts one caller refused for `why`.
    pub fn refused(&self, why: PoolRefusal) {
        match why {
            PoolRefusal::WaitersFull => self.handles().waiters_full.inc(),
            PoolRefusal::WaitExpired => self.handles().wait_expired.inc(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Which {
    Connection,
    Waiter,
}

/// Keeps one connection or waiter counted in its gauge while alive.
#[derive(Debug)]
pub struct Gauged(Arc<PoolMetrics>, Which);

impl Drop for Gauged {
    fn drop(&mut self) {
        match self.1 {
            Which::Connection => self.0.handles().connections.dec(),
            Which::Waiter => self.0.handles().waiters.dec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The route's series in the process registry's pool families.
    fn series_of(route: &str) -> usize {
        super::super::global()
            .registry()
            .gather()
            .iter()
            .filter(|family| family.name().starts_with("popgate_upstream_pool_"))
            .flat_map(|family| family.get_metric())
            .filter(|metric| {
                metric
                    .get_label()
                    .iter()
                    .any(|l| l.name() == "route" && l.value() == route)
            })
            .count()
    }

    #[test]
    fn pool_metrics_build_and_guards_count() {
        let m = PoolMetrics::of("pool-metrics-test");
        let c = m.connection();
        let w = m.waiter();
        let h = m.handles();
        assert_eq!((h.connections.get(), h.waiters.get()), (1, 1));
        drop((c, w));
        assert_eq!((h.connections.get(), h.waiters.get()), (0, 0));
        m.refused(PoolRefusal::WaitersFull);
        m.refused(PoolRefusal::WaitExpired);
        assert_eq!((h.waiters_full.get(), h.wait_expired.get()), (1, 1));
        m.dialled(true);
        m.dialled(false);
        m.dialled(true);
        assert_eq!((h.dialled_ok.get(), h.dial_failed.get()), (2, 1));
        // A second route shares the families (registered once).
        let other = PoolMetrics::of("pool-metrics-test-2");
        assert_eq!(other.handles().connections.get(), 0);
    }

    #[test]
    fn a_route_gets_its_series_on_first_use_not_at_start() {
        let m = PoolMetrics::of("pool-metrics-lazy-test");
        assert_eq!(series_of("pool-metrics-lazy-test"), 0);
        m.dialled(true);
        // Every child at once, so each family is in /metrics after a route's first dial.
        assert_eq!(series_of("pool-metrics-lazy-test"), 6);
    }
}
