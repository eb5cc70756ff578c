//! The route table and each route's upstream settings, from the validated config.

use std::sync::Arc;

use crate::config::{Config, Route};
use crate::dataplane::DataplaneTable;
use crate::engine::credential::Credential;
use crate::metrics::pool::PoolMetrics;
use crate::net::client::UpstreamSettings;
use crate::net::connect::ResolveMap;
use crate::net::upstream_tls::ExtraRoots;
use crate::route::policy::RoutePolicy;
use crate::route::slot::{RouteInfo, RouteSlot};
use crate::route::table::{RouteSpec, RouteTable};

use super::RunError;

/// The network settings every route shares (resolve overrides, extra trust anchors, proxy).
pub(super) fn shared_upstream(config: &Config) -> Result<UpstreamSettings, RunError> {
    let mut resolve = ResolveMap::default();
    for (host_port, addr) in &config.network.resolve {
        resolve
            .insert(host_port, *addr)
            .map_err(|e| RunError::Resolve(e.to_string()))?;
    }
    let mut extra_roots = ExtraRoots::default();
    for ca in &config.network.extra_ca {
        extra_roots.add_der("network.extra_ca_files", ca.clone());
    }
    Ok(UpstreamSettings {
        extra_roots,
        resolve: Arc::new(resolve),
        proxy: config.network.proxy.clone().map(Arc::new),
        ..UpstreamSettings::default()
    })
}

/// `shared` with the route's own connect and idle timeouts and pool bounds, counted in the
/// route's pool metrics.
pub(super) fn route_upstream(shared: &UpstreamSettings, route: &Route) -> UpstreamSettings {
    UpstreamSettings {
        connect_timeout: route.timeouts.connect,
        pool_idle_timeout: route.timeouts.idle,
        pool: route.upstream_pool,
        pool_metrics: Some(PoolMetrics::of(&route.name)),
        ..shared.clone()
    }
}

/// An empty slot for `route`, served by `credential`.
pub(super) fn route_slot(route: &Route, credential: &dyn Credential) -> Arc<RouteSlot> {
    Arc::new(
        RouteSlot::for_route(
            route.name.as_str(),
            RouteInfo {
                identity: Some(credential.labels().identity.as_str().into()),
                request_timeout: Some(route.timeouts.request),
                lazy: route.acquire == crate::config::Acquire::Lazy,
            },
        )
        .with_policy(RoutePolicy::of(route)),
    )
}

/// The table mapping requests to `slots` (one per route of `config`, in config order).
pub(super) fn table_of(config: &Config, slots: &[Arc<RouteSlot>]) -> DataplaneTable {
    let compiled = config
        .routes
        .iter()
        .zip(slots)
        .map(|(route, slot)| (RouteSpec::from(route), Arc::clone(slot)))
        .collect();
    RouteTable::new(compiled)
}
