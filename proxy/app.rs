//! `popgate run`: from a validated config to a serving proxy — route table, credentials, one driver
//! per route, listeners — kept current by reloads (`swap.rs`) and drained on shutdown.

pub mod fd_limit;
pub mod listeners;
mod live;
pub(crate) mod reload;
mod routes;
mod swap;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::admin::scrape::{ScrapeSources, ScrapeView};
use crate::admin::{self, AdminError, AdminHandle};
use crate::config::Config;
use crate::dataplane::listener::ConnectionSettings;
use crate::dataplane::server::StartError;
use crate::dataplane::{DataplaneTable, Proxy, ProxyHandle, ProxySettings};
use crate::engine::build::{self, BuildError, CredentialSet, EngineDeps};
use crate::engine::schedule::RefreshPolicy;
use crate::engine::sources::retry::RetryTiming;
use crate::metrics;
use crate::route::slot::RouteSlot;
use crate::route::status::RouteStatus;

use live::LiveRoute;
pub use swap::{RELOAD_READY_WAIT, ReloadError, ReloadSummary};

/// How long `run` waits for eager routes' first acquisitions before logging their state. Routes
/// still acquiring are logged as pending and keep going; requests meanwhile wait (bounded) for them.
pub const INITIAL_ROUND_WAIT: Duration = Duration::from_secs(30);

/// Why popgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Network.resolve: `0`.
    #[error("network.resolve: {0}")]
    Resolve(String),
    /// Token acquisition could not be set up.
    #[error("cannot set up token acquisition: {0}")]
    Build(#[from] BuildError),
    /// Route ``route`` has no credential.
    #[error("route `{route}` has no credential")]
    MissingCredential {
        /// The route's name.
        route: String,
    },
    /// Listener `addr`: cannot build its TLS configuration: `reason`.
    #[error("listener {addr}: cannot build its TLS configuration: {reason}")]
    ListenerTls {
        /// The address.
        addr: SocketAddr,
        /// Why it was refused.
        reason: String,
    },
    /// The data plane could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The admin listener could not start.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// Engine timings [`App::start_with`] may override; the defaults are production's.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Retry waits for the token endpoint and IMDS.
    pub retry: RetryTiming,
    /// How often certificate files are compared; `None` keeps the engine's default.
    pub cert_poll_interval: Option<Duration>,
    /// Azure Arc challenge files are read from this directory instead of the agent's (`popgate
    /// dev` and tests; production builds have no such option).
    #[cfg(feature = "dev")]
    pub arc_token_dir: Option<std::path::PathBuf>,
    /// Data-plane worker threads when the config has no `workers:` (`popgate run` passes the
    /// CPUs it may use); `None` for both serves on the caller's runtime.
    pub workers: Option<usize>,
}

/// A running popgate: listeners serving, one driver per route.
#[derive(Debug)]
pub struct App {
    proxy: ProxyHandle,
    /// What the data plane reads per request; a reload stores a new table here.
    table: Arc<ArcSwap<DataplaneTable>>,
    /// The config being served.
    config: Config,
    deps: EngineDeps,
    credentials: CredentialSet,
    /// In config order.
    live: Vec<LiveRoute>,
    admin: Option<AdminHandle>,
    /// What `/metrics` and `/readyz` read; a reload stores the new routes here.
    scrape: ScrapeSources,
    /// The data plane's worker threads (`None`: it serves on the caller's runtime).
    workers: Option<usize>,
}

impl App {
    /// Builds everything from `config`, starts the drivers (eager routes begin acquiring at once)
    /// and binds the listeners. Returns as soon as the listeners are bound.
    pub async fn start(config: Config) -> Result<App, RunError> {
        App::start_with(config, StartOptions::default()).await
    }

    /// [`App::start`] with engine timings overridden (tests scale retry waits and poll
    /// certificate files faster; production uses [`StartOptions::default`]).
    pub async fn start_with(config: Config, options: StartOptions) -> Result<App, RunError> {
        let mut deps = EngineDeps::from_config(&config, RefreshPolicy::default(), options.retry)?;
        if let Some(interval) = options.cert_poll_interval {
            deps.cert_poll_interval = interval;
        }
        #[cfg(feature = "dev")]
        if let Some(dir) = &options.arc_token_dir {
            deps.arc_token_dir = crate::identity::azure_arc::ArcTokenDir::for_dev(dir);
        }
        let credentials = build::build_credential_set(&config, &deps, None)?;
        let workers = config.workers.or(options.workers);
        let mut shared = routes::shared_upstream(&config)?;
        // One upstream lane per worker, so worker `k`'s h2 connections are its own.
        shared.lanes = workers;
        let specs = listeners::listener_specs(&config.listeners)?;
        let unix_specs = listeners::unix_listener_specs(&config.unix_listeners);
        listeners::warn_open_listeners(&config);
        metrics::register_routes(config.routes.iter().map(|r| r.name.as_str()));
        let mut live = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let credential = credentials.by_route.get(&route.name).ok_or_else(|| {
                RunError::MissingCredential {
                    route: route.name.clone(),
                }
            })?;
            live.push(LiveRoute::spawn(route, credential, &shared));
        }
        let slots: Vec<_> = live.iter().map(|r| Arc::clone(r.slot())).collect();
        let table = Arc::new(ArcSwap::from_pointee(routes::table_of(&config, &slots)));

        let proxy_settings = ProxySettings {
            request_timeout: config.timeouts.request,
            connection: ConnectionSettings::with_limits(&config.limits),
            drain_timeout: config.timeouts.drain,
            workers,
        };
        let proxy =
            match Proxy::start_with_unix(specs, unix_specs, Arc::clone(&table), proxy_settings)
                .await
            {
                Ok(proxy) => proxy,
                Err(e) => {
                    live::stop_all(live).await;
                    return Err(e.into());
                }
            };
        let scrape = ScrapeSources::new(ScrapeView {
            slots,
            cache: Arc::clone(&deps.cache),
        });
        let admin = match config.admin {
            None => None,
            Some(addr) => match admin::start(addr, scrape.clone()).await {
                Ok(handle) => Some(handle),
                Err(e) => {
                    proxy.shutdown().await;
                    live::stop_all(live).await;
                    return Err(e.into());
                }
            },
        };
        Ok(App {
            proxy,
            table,
            config,
            deps,
            credentials,
            live,
            admin,
            scrape,
            workers,
        })
    }

    /// The bound listener addresses, in config order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.proxy.local_addrs()
    }

    /// The admin listener's bound address, when `admin` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminHandle::local_addr)
    }

    /// The slot of the route named `name`.
    pub fn route(&self, name: &str) -> Option<&Arc<RouteSlot>> {
        self.live
            .iter()
            .map(LiveRoute::slot)
            .find(|s| s.name() == name)
    }

    /// Every route's slot, in config order.
    pub fn routes(&self) -> Vec<Arc<RouteSlot>> {
        self.live.iter().map(|r| Arc::clone(r.slot())).collect()
    }

    /// The config being served.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Waits (at most `timeout` in all) until no eager route is still on its first acquisition.
    pub async fn initial_round(&self, timeout: Duration) {
        wait_eager(self.live.iter().map(LiveRoute::slot), timeout).await;
    }

    /// Logs each route's state: ready (with expiry), failed (with cause), pending or lazy.
    pub fn log_route_states(&self) {
        for slot in self.live.iter().map(LiveRoute::slot) {
            log_route_state(slot);
        }
    }

    /// The first step of a stop: `/readyz` answers 503 from now on, while the listeners keep
    /// accepting and serving for `drain.delay`, so load balancers and Service endpoints stop
    /// sending here before the sockets close. Returns when the delay has passed.
    pub async fn begin_drain(&self) {
        self.scrape.set_draining();
        let delay = self.config.drain.delay;
        tracing::info!(
            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "stop requested: /readyz answers 503; still accepting for drain.delay"
        );
        tokio::time::sleep(delay).await;
    }

    /// Stops accepting, lets open connections finish (up to the data plane's drain timeout), then
    /// stops every driver.
    pub async fn shutdown(self) {
        self.proxy.shutdown().await;
        if let Some(admin) = self.admin {
            admin.shutdown().await;
        }
        live::stop_all(self.live).await;
    }
}

/// Waits (at most `timeout` in all) until none of `slots`' eager routes is still on its first
/// acquisition.
async fn wait_eager<'a>(slots: impl Iterator<Item = &'a Arc<RouteSlot>>, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    for slot in slots.filter(|s| !s.info().lazy) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        slot.wait_until(left, |s| !s.status().is_pending()).await;
    }
}

/// Logs a route's state: ready (with expiry), failed (with cause), pending or lazy.
fn log_route_state(slot: &RouteSlot) {
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

/// Data-plane workers when the config names none: the CPUs this process may use (std's
/// `available_parallelism`, which on Linux follows the affinity mask and the cgroup CPU quota),
/// at most [`MAX_WORKERS`](crate::config::limits::MAX_WORKERS).
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(crate::config::limits::MAX_WORKERS)
}

/// Called when a burst of popgate's own work has ended (start-up's first acquisitions, a reload),
/// so that the binary's allocator returns what it freed to the kernel (`allocator.rs` in the
/// binary: its allocator may otherwise keep it resident while popgate is quiet).
pub type ReturnFreedMemory = fn();

/// Runs popgate until `shutdown` resolves, then drains and returns. Meanwhile SIGHUP and changes
/// of the config file reload it (see [`crate::app::reload`]).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    return_freed_memory: ReturnFreedMemory,
) -> Result<(), RunError> {
    tracing::info!(
        config = %config.source.display(),
        routes = config.routes.len(),
        listeners = config.listeners.len(),
        "starting"
    );
    fd_limit::raise_open_files_limit();
    // Before anything slow: from here on a SIGHUP is a reload request, not the default
    // "terminate"; one arriving during startup is handled once startup is done.
    let mut triggers = crate::app::reload::Triggers::new(&config.source);
    let options = StartOptions {
        workers: Some(default_workers()),
        ..StartOptions::default()
    };
    let mut app = App::start_with(config, options).await?;
    tokio::pin!(shutdown);
    let serving = tokio::select! {
        _ = app.initial_round(INITIAL_ROUND_WAIT) => true,
        _ = &mut shutdown => false,
    };
    if serving {
        app.log_route_states();
        let addrs: Vec<String> = app.local_addrs().iter().map(ToString::to_string).collect();
        let admin = app.admin_addr().map(|a| a.to_string());
        tracing::info!(addrs = ?addrs, admin = admin.as_deref(), "serving");
        // After the route states' lines too: a line per route is start-up's last garbage.
        return_freed_memory();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                trigger = triggers.next() => {
                    crate::app::reload::reload(&mut app, trigger, &mut triggers).await;
                    return_freed_memory();
                }
            }
        }
    }
    if serving {
        app.begin_drain().await;
    } else {
        // Never ready yet, so no load balancer sends here: no delay.
        app.scrape.set_draining();
    }
    tracing::info!("shutting down: draining open connections");
    app.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
