//! The pooled upstream HTTP client of one snapshot: hyper-util's client over [`UpstreamConnector`],
//! keep-alive, h2 when the upstream offers it by ALPN.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;

use super::connect::{ConnectSettings, ResolveMap, UpstreamConnector};
use super::upstream_body::UpstreamBody;
use super::upstream_tls::ExtraRoots;

/// Default bound on resolve + TCP + TLS: long enough for a slow cross-region handshake, short enough
/// that a dead upstream answers the caller well before typical client timeouts (30 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time an idle upstream connection stays pooled; below the 120 s idle timeout common on
/// Azure front ends, so we close first rather than race a server-side close.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Default cap on live upstream connections per host per snapshot: enough parallelism for a busy
/// node's callers over h1 while bounding the mTLS handshakes a burst can trigger.
pub const DEFAULT_MAX_CONNECTIONS_PER_HOST: usize = 64;

/// Network settings every route's upstream client uses.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// Trust anchors added to the system roots (`extra_ca_files`).
    pub extra_roots: ExtraRoots,
    /// `network.resolve` overrides.
    pub resolve: Arc<ResolveMap>,
    /// Bound on resolve + TCP + TLS.
    pub connect_timeout: Duration,
    /// How long an idle connection stays in the pool.
    pub pool_idle_timeout: Duration,
    /// Live connections per upstream host per snapshot.
    pub max_connections_per_host: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            extra_roots: ExtraRoots::default(),
            resolve: Arc::new(ResolveMap::default()),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
            max_connections_per_host: DEFAULT_MAX_CONNECTIONS_PER_HOST,
        }
    }
}

/// A pooled client bound to one TLS client configuration (so to one client certificate).
/// Cloning shares the pool.
#[derive(Clone)]
pub struct UpstreamClient {
    http: Client<UpstreamConnector, UpstreamBody>,
    tls: Arc<ClientConfig>,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// A new client with its own, empty pool.
    pub fn new(tls: Arc<ClientConfig>, settings: &UpstreamSettings) -> Self {
        let connector = UpstreamConnector::new(
            Arc::clone(&tls),
            ConnectSettings {
                resolve: Arc::clone(&settings.resolve),
                connect_timeout: settings.connect_timeout,
                max_connections_per_host: settings.max_connections_per_host.max(1),
            },
        );
        let http = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.max_connections_per_host.max(1))
            // The proxy removes the caller's Host; hyper-util then writes the upstream authority
            // (as `Host` on h1, as `:authority` on h2).
            .set_host(true)
            .build(connector);
        Self { http, tls }
    }

    /// Sends one request (absolute `https://` URI) through the pool.
    pub fn request(&self, request: http::Request<UpstreamBody>) -> ResponseFuture {
        self.http.request(request)
    }

    /// The TLS configuration this client presents.
    pub fn tls_config(&self) -> &Arc<ClientConfig> {
        &self.tls
    }
}
