//! The routes being served: one slot and one driver per route, each driver with its own stop
//! signal, so a reload can keep, add and retire routes one at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::{Acquire, Route, UpstreamPool};
use crate::engine::credential::Credential;
use crate::engine::driver::{DriverSettings, RouteDriver};
use crate::engine::schedule::RefreshPolicy;
use crate::net::client::UpstreamSettings;
use crate::route::slot::RouteSlot;

use super::routes;

/// What a running route was built from. Two routes with equal keys serve the same way, so a
/// reload keeps the running slot (its published token, snapshot and upstream pool) and driver.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RouteKey {
    name: String,
    /// The credential's address: the factory hands out the same `Arc` for an unchanged
    /// (identities, resource, token type, flow) with unchanged engine dependencies (network
    /// settings), so equal addresses mean the same token source and the same outbound network.
    credential: usize,
    connect: Duration,
    idle: Duration,
    request: Duration,
    /// A changed pool bound needs a new client (and so a new slot).
    pool: UpstreamPool,
    lazy: bool,
}

impl RouteKey {
    fn of(route: &Route, credential: &Arc<dyn Credential>) -> Self {
        Self {
            name: route.name.clone(),
            credential: Arc::as_ptr(credential).cast::<()>() as usize,
            connect: route.timeouts.connect,
            idle: route.timeouts.idle,
            request: route.timeouts.request,
            pool: route.upstream_pool,
            lazy: route.acquire == Acquire::Lazy,
        }
    }
}

/// One served route.
#[derive(Debug)]
pub(super) struct LiveRoute {
    slot: Arc<RouteSlot>,
    key: RouteKey,
    driver: JoinHandle<()>,
}

impl LiveRoute {
    /// A new slot for `route` and a driver publishing `credential`'s tokens into it (an eager
    /// route starts acquiring at once).
    pub(super) fn spawn(
        route: &Route,
        credential: &Arc<dyn Credential>,
        shared: &UpstreamSettings,
    ) -> Self {
        let slot = routes::route_slot(route, credential.as_ref());
        let settings = DriverSettings {
            upstream: routes::route_upstream(shared, route),
            // The engine-wide rules (MSAL's); not per-route configurable yet.
            policy: RefreshPolicy::default(),
        };
        let driver = RouteDriver::new(Arc::clone(credential), Arc::clone(&slot), settings);
        Self {
            slot,
            key: RouteKey::of(route, credential),
            driver: driver.spawn(),
        }
    }

    /// True when `route` with `credential` would be served exactly like this route.
    pub(super) fn serves_as(&self, route: &Route, credential: &Arc<dyn Credential>) -> bool {
        self.key == RouteKey::of(route, credential)
    }

    /// The route's slot.
    pub(super) fn slot(&self) -> &Arc<RouteSlot> {
        &self.slot
    }

    /// Asks the driver to stop; the returned handle ends once it has.
    pub(super) fn stop(self) -> JoinHandle<()> {
        self.slot.demand_stop();
        self.driver
    }
}

/// Stops every driver in `retired` and waits for them to end.
pub(super) async fn stop_all(retired: Vec<LiveRoute>) {
    let handles: Vec<_> = retired.into_iter().map(LiveRoute::stop).collect();
    for handle in handles {
        if let Err(e) = handle.await {
            tracing::warn!(error = %e, "route driver ended abnormally");
        }
    }
}
