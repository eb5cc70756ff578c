//! The pooled upstream HTTP client of one snapshot: hyper-util's client over [`UpstreamConnector`],
//! keep-alive, h2 when the upstream offers it by ALPN.
//!
//! The client has one *lane* per runtime worker thread (at most [`MAX_LANES`]); a request takes the
//! lane of the thread it runs on. hyper-util keeps a single h2 connection per host, and one h2
//! connection is one task: every request's framing, HPACK and TLS records pass through it, so on a
//! multi-core node it becomes the bottleneck (benches/load: 2 workers moved half the requests of
//! nginx). Lanes give each worker its own connection. They share the connector, so the per-host
//! dial cap still bounds all of them together.
//!
//! Lanes only help h2: over HTTP/1.1 an idle connection in one lane's pool is invisible to another
//! lane, so with the dial cap reached a request could wait for a connection while another lane
//! holds idle ones. Requests to a host not known to speak h2 therefore all take lane 0, behind
//! the client's [`PoolGate`] (`upstream_pool`: slots, waiting line, wait timeout).

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;

use crate::config::UpstreamPool;
use crate::config::limits::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, MAX_LANES};
use crate::config::outbound_proxy::OutboundProxy;
use crate::metrics::pool::PoolMetrics;
use crate::net::connect::{ConnectSettings, ResolveMap, UpstreamConnector};
use crate::net::pool_gate::{Admission, PoolBusy, PoolGate};
use crate::net::upstream_body::UpstreamBody;
use crate::net::upstream_tls::ExtraRoots;

/// Receive window of one upstream h2 stream (a response body popgate has not yet passed on).
/// A caller that stops reading leaves its stream holding this much until
/// `response_body_timeout` ends it; hyper's default (2 MiB) against its default connection
/// window (5 MiB) let three stalled downloads take the whole connection's window, so every
/// other response on that upstream connection stopped too (tests/hardening/h2_upstream_window.rs).
/// 256 KiB still moves 256 MB/s per stream at a 1 ms round trip.
const H2_STREAM_WINDOW: u32 = 256 * 1024;
/// Streams whose windows the connection window covers in full. Servers advertise 100–250
/// concurrent streams (nginx 128, hyper 200, Azure front ends 100), so at most this many streams
/// are open on one upstream connection and no set of stalled ones can exhaust the connection's
/// window. The window is credit, not memory: bytes are held only by streams whose caller stalls,
/// at most [`H2_STREAM_WINDOW`] each, for at most `response_body_timeout`.
const H2_STREAMS_COVERED: u32 = 256;
/// The connection-level receive window: [`H2_STREAMS_COVERED`] stream windows (64 MiB, under
/// HTTP/2's 2^31 − 1 maximum).
const H2_CONNECTION_WINDOW: u32 = H2_STREAM_WINDOW * H2_STREAMS_COVERED;

/// Hands each thread that sends upstream requests a lane number, in order of first use (unless
/// the thread was given one with [`set_thread_lane`]).
static NEXT_THREAD_LANE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_LANE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// This thread's lane: the one set by [`set_thread_lane`], else the next free number.
fn thread_lane() -> usize {
    THREAD_LANE.with(|lane| match lane.get() {
        Some(n) => n,
        None => {
            let n = NEXT_THREAD_LANE.fetch_add(1, Ordering::Relaxed);
            lane.set(Some(n));
            n
        }
    })
}

/// Gives this thread lane `lane` (a data-plane worker thread passes its index, so worker `k`
/// always uses lane `k` of every client and its h2 connections stay on its own runtime).
pub(crate) fn set_thread_lane(lane: usize) {
    THREAD_LANE.with(|l| l.set(Some(lane)));
}

/// Lanes for a client built now: the current runtime's worker count (1 on a current-thread
/// runtime), else the CPUs this process may use.
fn lane_count() -> usize {
    let workers = match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.metrics().num_workers(),
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    workers.clamp(1, MAX_LANES)
}

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
    /// Connections per host, callers waiting for one, and how long (`upstream_pool`).
    pub pool: UpstreamPool,
    /// The route's pool metrics (`None`: not counted, e.g. in tests).
    pub pool_metrics: Option<Arc<PoolMetrics>>,
    /// The outbound HTTP proxy (`network.proxy` / `HTTPS_PROXY`), if any.
    pub proxy: Option<Arc<OutboundProxy>>,
    /// Lanes per client: the data plane's worker threads; `None`: the building runtime's
    /// worker count (see [`UpstreamClient::new`]).
    pub lanes: Option<usize>,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            extra_roots: ExtraRoots::default(),
            resolve: Arc::new(ResolveMap::default()),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool_idle_timeout: DEFAULT_IDLE_TIMEOUT,
            pool: UpstreamPool::default(),
            pool_metrics: None,
            proxy: None,
            lanes: None,
        }
    }
}

/// A pooled client bound to one TLS client configuration (so to one client certificate).
/// Cloning shares the pools.
#[derive(Clone)]
pub struct UpstreamClient {
    /// One pooled client per lane, all over the same connector (same TLS config, same dial cap).
    lanes: Arc<[Client<UpstreamConnector, UpstreamBody>]>,
    /// Admission to each host's connections (shared by the lanes, like the connector).
    gate: Arc<PoolGate>,
    tls: Arc<ClientConfig>,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// A new client with its own, empty pools: `settings.lanes` lanes, else one per worker of
    /// the current runtime.
    pub fn new(tls: Arc<ClientConfig>, settings: &UpstreamSettings) -> Self {
        let lanes = settings.lanes.unwrap_or_else(lane_count);
        Self::with_lanes(tls, settings, lanes)
    }

    /// A new client with `lanes` pools (at least 1, at most [`MAX_LANES`]).
    pub fn with_lanes(tls: Arc<ClientConfig>, settings: &UpstreamSettings, lanes: usize) -> Self {
        let max_connections_per_host = settings.pool.max_connections_per_host.max(1);
        let connector = UpstreamConnector::new(
            Arc::clone(&tls),
            ConnectSettings {
                resolve: Arc::clone(&settings.resolve),
                connect_timeout: settings.connect_timeout,
                max_connections_per_host,
                pool_metrics: settings.pool_metrics.clone(),
                proxy: settings.proxy.clone(),
            },
        );
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(max_connections_per_host)
            .http2_initial_stream_window_size(H2_STREAM_WINDOW)
            .http2_initial_connection_window_size(H2_CONNECTION_WINDOW)
            // The proxy removes the caller's Host; hyper-util then writes the upstream authority
            // (as `Host` on h1, as `:authority` on h2).
            .set_host(true);
        let lanes = (0..lanes.clamp(1, MAX_LANES))
            .map(|_| builder.build(connector.clone()))
            .collect();
        let gate = Arc::new(PoolGate::new(settings.pool, settings.pool_metrics.clone()));
        Self { lanes, gate, tls }
    }

    /// Admits a request to `authority` (`host[:port]` of its URI): at once when the host has a
    /// free connection slot (or speaks h2), else after waiting in its line, bounded by
    /// `upstream_pool.wait_timeout` and `at_most`; refused at once when the line is full.
    pub async fn admit(&self, authority: &str, at_most: Duration) -> Result<Admission, PoolBusy> {
        self.gate.admit(authority, at_most).await
    }

    /// Sends one admitted request (absolute `https://` URI): to an h2 host through the pool of
    /// this thread's lane, otherwise through lane 0 (see the module docs).
    pub fn request(
        &self,
        admission: &Admission,
        request: http::Request<UpstreamBody>,
    ) -> ResponseFuture {
        let lane = if admission.multiplexed() {
            thread_lane() % self.lanes.len()
        } else {
            0
        };
        self.lanes[lane].request(request)
    }

    /// The pool bounds this client applies.
    pub fn pool(&self) -> &UpstreamPool {
        self.gate.settings()
    }

    /// How many lanes (pools) this client spreads requests over.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// The TLS configuration this client presents.
    pub fn tls_config(&self) -> &Arc<ClientConfig> {
        &self.tls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls() -> Arc<ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    }

    #[tokio::test]
    async fn one_lane_on_a_current_thread_runtime() {
        let client = UpstreamClient::new(tls(), &UpstreamSettings::default());
        assert_eq!(client.lanes(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 3)]
    async fn one_lane_per_worker_thread() {
        let client = UpstreamClient::new(tls(), &UpstreamSettings::default());
        assert_eq!(client.lanes(), 3);
        // Clones share the lanes (and so the pools).
        assert!(Arc::ptr_eq(&client.lanes, &client.clone().lanes));
    }

    #[tokio::test]
    async fn lanes_are_bounded() {
        let settings = UpstreamSettings::default();
        assert_eq!(UpstreamClient::with_lanes(tls(), &settings, 0).lanes(), 1);
        assert_eq!(
            UpstreamClient::with_lanes(tls(), &settings, 1000).lanes(),
            MAX_LANES
        );
    }
}
