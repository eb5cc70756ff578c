//! `popgate run`: from a validated config to a serving proxy — route table, credentials, one driver
//! per route, listeners — and back down on shutdown.

pub mod listeners;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::dataplane::listener::ConnectionSettings;
use crate::dataplane::server::StartError;
use crate::dataplane::{Proxy, ProxyHandle, ProxySettings};
use crate::engine::build::{self, BuildError, EngineDeps};
use crate::engine::driver::{DriverSettings, RouteDriver};
use crate::engine::route_status::RouteStatus;
use crate::engine::schedule::RefreshPolicy;
use crate::engine::snapshot::RouteSlot;
use crate::engine::sources::retry::RetryTiming;
use crate::routing::RouteTableError;

/// How long `run` waits for eager routes' first acquisitions before logging their state. Routes
/// still acquiring are logged as pending and keep going; requests meanwhile wait (bounded) for them.
pub const INITIAL_ROUND_WAIT: Duration = Duration::from_secs(30);

/// Why popgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot build the route table: {0}")]
    Routes(#[from] RouteTableError),
    #[error("network.resolve: {0}")]
    Resolve(String),
    #[error("cannot set up token acquisition: {0}")]
    Build(#[from] BuildError),
    #[error("route `{route}` has no credential")]
    MissingCredential { route: String },
    #[error("listener {addr}: cannot build its TLS configuration: {reason}")]
    ListenerTls { addr: SocketAddr, reason: String },
    #[error(transparent)]
    Start(#[from] StartError),
}

/// A running popgate: listeners serving, one driver per route.
#[derive(Debug)]
pub struct App {
    proxy: ProxyHandle,
    slots: Vec<Arc<RouteSlot>>,
    drivers: Vec<JoinHandle<()>>,
    stop_drivers: watch::Sender<bool>,
}

impl App {
    /// Builds everything from `config`, starts the drivers (eager routes begin acquiring at once)
    /// and binds the listeners. Returns as soon as the listeners are bound.
    pub async fn start(config: Config) -> Result<App, RunError> {
        let deps =
            EngineDeps::from_config(&config, RefreshPolicy::default(), RetryTiming::default())?;
        let credentials = build::build_credentials(&config, &deps)?;
        let shared = routes::shared_upstream(&config)?;
        let (table, slots) = routes::route_table(&config, &credentials)?;
        let specs = listeners::listener_specs(&config.listeners)?;
        let unix_specs = listeners::unix_listener_specs(&config.unix_listeners);
        listeners::warn_open_listeners(&config);

        let (stop_drivers, stop) = watch::channel(false);
        let mut drivers = Vec::with_capacity(slots.len());
        for (route, slot) in config.routes.iter().zip(&slots) {
            let credential =
                credentials
                    .get(&route.name)
                    .ok_or_else(|| RunError::MissingCredential {
                        route: route.name.clone(),
                    })?;
            let settings = DriverSettings {
                upstream: routes::route_upstream(&shared, route),
                // The engine-wide rules (MSAL's); not per-route configurable yet.
                policy: RefreshPolicy::default(),
            };
            let driver = RouteDriver::new(Arc::clone(credential), Arc::clone(slot), settings);
            drivers.push(driver.spawn(stop.clone()));
        }

        let proxy_settings = ProxySettings {
            request_timeout: config.timeouts.request,
            connection: ConnectionSettings::with_limits(&config.limits),
            ..ProxySettings::default()
        };
        let proxy = match Proxy::start_with_unix(
            specs,
            unix_specs,
            Arc::new(ArcSwap::from_pointee(table)),
            proxy_settings,
        )
        .await
        {
            Ok(proxy) => proxy,
            Err(e) => {
                let _ = stop_drivers.send(true);
                return Err(e.into());
            }
        };
        Ok(App {
            proxy,
            slots,
            drivers,
            stop_drivers,
        })
    }

    /// The bound listener addresses, in config order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.proxy.local_addrs()
    }

    /// The slot of the route named `name`.
    pub fn route(&self, name: &str) -> Option<&Arc<RouteSlot>> {
        self.slots.iter().find(|s| s.name() == name)
    }

    /// Every route's slot, in config order.
    pub fn routes(&self) -> &[Arc<RouteSlot>] {
        &self.slots
    }

    /// Waits (at most `timeout` in all) until no eager route is still on its first acquisition.
    pub async fn initial_round(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        for slot in self.slots.iter().filter(|s| !s.info().lazy) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            slot.wait_until(left, |s| !s.status().is_pending()).await;
        }
    }

    /// Logs each route's state: ready (with expiry), failed (with cause), pending or lazy.
    pub fn log_route_states(&self) {
        for slot in &self.slots {
            let status = slot.status();
            let identity = slot.info().identity.as_deref().unwrap_or("");
            match &*status {
                RouteStatus::Ready {
                    expires_at,
                    generation,
                } => tracing::info!(
                    route = %slot.name(),
                    identity,
                    state = status.label(),
                    generation,
                    expires_at = %httpdate::fmt_http_date(*expires_at),
                    "route ready"
                ),
                RouteStatus::Pending { lazy: true, .. } => tracing::info!(
                    route = %slot.name(),
                    identity,
                    state = "lazy",
                    "route acquires its token on its first request"
                ),
                RouteStatus::Pending { lazy: false, .. } => tracing::warn!(
                    route = %slot.name(),
                    identity,
                    state = status.label(),
                    "route still acquiring its first token"
                ),
                RouteStatus::Stale { error, .. } | RouteStatus::Failed { error, .. } => {
                    tracing::warn!(
                        route = %slot.name(),
                        identity,
                        state = status.label(),
                        failed_identity = %error.identity,
                        cause = %error.message,
                        aadsts = error.aadsts,
                        correlation_id = error.correlation_id.as_deref(),
                        "route has no fresh token; retrying in the background"
                    )
                }
            }
        }
    }

    /// Stops accepting, lets open connections finish (up to the data plane's drain timeout), then
    /// stops every driver.
    pub async fn shutdown(self) {
        self.proxy.shutdown().await;
        let _ = self.stop_drivers.send(true);
        for driver in self.drivers {
            if let Err(e) = driver.await {
                tracing::warn!(error = %e, "route driver ended abnormally");
            }
        }
    }
}

/// Runs popgate until `shutdown` resolves, then drains and returns.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    tracing::info!(
        config = %config.source.display(),
        routes = config.routes.len(),
        listeners = config.listeners.len(),
        "starting"
    );
    let app = App::start(config).await?;
    tokio::pin!(shutdown);
    tokio::select! {
        _ = app.initial_round(INITIAL_ROUND_WAIT) => {
            app.log_route_states();
            let addrs: Vec<String> = app.local_addrs().iter().map(ToString::to_string).collect();
            tracing::info!(addrs = ?addrs, "serving");
            shutdown.await;
        }
        _ = &mut shutdown => {}
    }
    tracing::info!("shutting down: draining open connections");
    app.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
