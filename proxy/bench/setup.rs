//! What the load is sent through: popgate started in this process (against the real services, or
//! the local authority with `--dev`), or a popgate already running (`--proxy URL`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::app::{App, RunError};
use crate::config::model::{Config, Listener};
#[cfg(feature = "dev")]
use crate::dev::local_authority::LocalAuthority;
#[cfg(feature = "dev")]
use crate::dev::{DevError, prepare};

use super::BenchError;
use super::summary::AuthorityCounts;

/// Bound on waiting for eager routes' first tokens before the load starts: a token endpoint
/// answers in well under a second, but an IMDS retry schedule (1 + 2 + 4 s) or a slow machine can
/// add seconds (as `popgate dev` waits).
const READY_WAIT: Duration = Duration::from_secs(60);

/// What `--dev` says in a build without the local authority (the `dev` cargo feature).
pub const DEV_FEATURE_MISSING: &str = "--dev: this binary was built without the local authority \
    (cargo feature `dev`, left out of production builds); build it with `cargo build --release` \
    (default features), or bench the real services (no --dev) or a running popgate (--proxy URL)";

/// Where the requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Against {
    /// popgate in-process, on the config as written.
    Config,
    /// popgate in-process, pointed at the local authority (as `popgate dev`).
    Dev,
    /// An already running popgate's plain-HTTP listener, `http://host:port`.
    Proxy(String),
}

impl Against {
    /// The name shown in the table and the JSON.
    pub fn label(&self) -> &'static str {
        match self {
            Against::Config => "popgate (in-process)",
            Against::Dev => "popgate + local authority (--dev)",
            Against::Proxy(_) => "a running popgate (--proxy)",
        }
    }
}

/// Why the bench's popgate could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupFailure {
    /// The local authority could not be set up (`--dev`).
    #[cfg(feature = "dev")]
    #[error(transparent)]
    Dev(#[from] DevError),
    /// popgate itself did not start.
    #[error("popgate cannot start: {0}")]
    Start(#[from] RunError),
    /// popgate started without the one listener the bench gave it (a bug, never a config).
    #[error("popgate started without its bench listener")]
    NoListener,
}

/// What the run holds while the load goes.
pub struct Env {
    /// Plain-HTTP address the load is sent to.
    pub listener: SocketAddr,
    /// The in-process popgate, when there is one.
    pub app: Option<App>,
    /// The local authority (`--dev`).
    #[cfg(feature = "dev")]
    pub local: Option<LocalAuthority>,
}

impl Env {
    /// What the local authority counted (`--dev`); `None` without it.
    #[cfg(not(feature = "dev"))]
    pub fn authority_counts(&self) -> Option<AuthorityCounts> {
        None
    }

    /// What the local authority counted (`--dev`).
    #[cfg(feature = "dev")]
    pub fn authority_counts(&self) -> Option<AuthorityCounts> {
        use popgate_authority::faults::Endpoint;
        let seen = self.local.as_ref()?.authority.observations();
        Some(AuthorityCounts {
            resource_requests: seen.count(Endpoint::Resource),
            token_requests: seen.count(Endpoint::Token),
            token_ok: seen.successes(Endpoint::Token),
            imds_requests: [
                Endpoint::ImdsV1Token,
                Endpoint::ImdsPlatformMetadata,
                Endpoint::ImdsIssueCredential,
                Endpoint::AppService,
                Endpoint::AzureArc,
                Endpoint::ServiceFabric,
                Endpoint::CloudShell,
                Endpoint::MachineLearning,
            ]
            .into_iter()
            .map(|e| seen.count(e))
            .sum(),
        })
    }

    /// Stops what was started.
    pub async fn stop(self) {
        if let Some(app) = self.app {
            app.shutdown().await;
        }
        #[cfg(feature = "dev")]
        if let Some(local) = self.local {
            local.authority.shutdown().await;
        }
    }
}

/// Keeps one plain-HTTP listener on a free loopback port and nothing else that binds: a bench must
/// never collide with (or stand in for) the popgate already serving this config. No outbound proxy.
fn loopback_only(config: &mut Config) {
    config.listeners = vec![Listener {
        address: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        tls: None,
        intercept: None,
    }];
    config.unix_listeners.clear();
    config.admin = None;
    // Load only ever targets loopback: never through an outbound proxy (it would dial the names).
    config.network.proxy = None;
}

/// Sets up `against` for `config`; an in-process popgate serves only the `routes` benchmarked, so
/// its token and connection figures are theirs alone.
pub async fn start(
    mut config: Config,
    against: &Against,
    routes: &[&str],
) -> Result<Env, BenchError> {
    config.routes.retain(|r| routes.contains(&r.name.as_str()));
    #[cfg(feature = "dev")]
    let local = match against {
        Against::Proxy(url) => {
            return Ok(Env {
                listener: http_addr("--proxy", url).await?,
                app: None,
                local: None,
            });
        }
        Against::Config => None,
        Against::Dev => {
            let (local, _) = prepare(&mut config, None)
                .await
                .map_err(SetupFailure::from)?;
            Some(local)
        }
    };
    #[cfg(not(feature = "dev"))]
    match against {
        Against::Proxy(url) => {
            return Ok(Env {
                listener: http_addr("--proxy", url).await?,
                app: None,
            });
        }
        Against::Config => {}
        Against::Dev => return Err(BenchError::Usage(DEV_FEATURE_MISSING.into())),
    }
    loopback_only(&mut config);
    // Against the local authority, Azure Arc's challenge files are in its directory.
    #[cfg(feature = "dev")]
    let options = local
        .as_ref()
        .map(crate::dev::start_options)
        .unwrap_or_default();
    #[cfg(not(feature = "dev"))]
    let options = crate::app::StartOptions::default();
    let app = App::start_with(config, options)
        .await
        .map_err(SetupFailure::from)?;
    let listener = *app.local_addrs().first().ok_or(SetupFailure::NoListener)?;
    // Eager routes fetch their first token now, so the load starts on a ready popgate (the cold
    // start figure still counts from the bench's start).
    app.initial_round(READY_WAIT).await;
    Ok(Env {
        listener,
        app: Some(app),
        #[cfg(feature = "dev")]
        local,
    })
}

/// `http://host:port` (no path) given to `flag` → the first address it resolves to.
pub(crate) async fn http_addr(flag: &str, url: &str) -> Result<SocketAddr, BenchError> {
    let bad =
        |why: &str| BenchError::Usage(format!("{flag} {url}: {why} (write http://HOST:PORT)"));
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("popgate's listener is plain http://"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(bad("give only the scheme, host and port"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| bad(&format!("cannot resolve it: {e}")))?;
    addrs.next().ok_or_else(|| bad("it resolves to no address"))
}
