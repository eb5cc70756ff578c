//! The pooled upstream HTTP client of one snapshot: popgate's own HTTP/1.1 pool and h2
//! connections over [`UpstreamConnector`], keep-alive, h2 when the upstream offers it by ALPN.
//!
//! The client has one *lane* (its pools and their connector) per data-plane worker (at
//! most [`MAX_LANES`], and at most `upstream_pool.max_connections_per_host`); a request takes the
//! lane of the thread it runs on ([`thread_lane`]: worker `k` is given lane `k`), for HTTP/1.1
//! and h2 alike, so the upstream connection it uses was dialed by its own worker and its
//! connection task runs on that worker's runtime: no request crosses threads. A lane keeps a
//! single h2 connection per host ([`crate::net::h2_lane`]), so each worker gets its own h2
//! connection instead of every request's framing, HPACK and TLS records passing through one task.
//!
//! Over HTTP/1.1 an idle connection in one lane's pool is invisible to the other lanes, so each
//! lane owns its share of `upstream_pool` (see [`crate::net::pool_gate`]): its connector caps the
//! host's live connections at the lane's share of `max_connections_per_host`, and the client's
//! [`PoolGate`] holds a line (slots, waiting line) of the same share per lane. A lane never waits
//! for a connection another lane holds idle, and the lanes' sums are the configured numbers.
//!
//! Every exchange that holds an HTTP/1.1 slot of the gate (the host is not known to speak h2)
//! goes through the lane's HTTP/1.1 pool ([`crate::net::http1_pool`]) over the lane's
//! connector; the lane's h2 connections ([`crate::net::h2_lane`]) carry the rest (a first
//! connection that negotiated h2 is adopted by them).
//!
//! A client built without a worker count (`UpstreamSettings::lanes: None`: the data plane runs
//! on the caller's work-stealing runtime, whose tasks move between threads, e.g. in-process
//! tests) keeps one lane per runtime worker for h2 but sends every HTTP/1.1 request through
//! lane 0 behind one unsplit line: its threads are not tied to lanes, so a split would strand a
//! share. Threads that are not data-plane workers (the control runtime, tests) get lane numbers
//! in order of first use, taken modulo the lanes: they share some worker's lane.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::ClientConfig;

use crate::config::UpstreamPool;
use crate::config::limits::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, MAX_LANES};
use crate::config::outbound_proxy::OutboundProxy;
use crate::metrics::pool::PoolMetrics;
use crate::net::connect::{ConnectSettings, ResolveMap, UpstreamConnector};
use crate::net::h2_lane::H2Lane;
use crate::net::h2_stream::H2Windows;
use crate::net::http1_pool::{Exchanged, Http1Lane};
use crate::net::kept_head::{Keeper, KeptHead};
use crate::net::pool_gate::{Admission, PoolBusy, PoolGate, line_shares};
use crate::net::upstream_body::UpstreamBody;
use crate::net::upstream_error::UpstreamError;
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

/// Which of a lane's paths a request takes.
enum Via<H, F, K> {
    /// The lane's HTTP/1.1 pool (its exchange, boxed).
    Http1(H),
    /// The lane's h2 connections (the stream is open), and where the head is kept.
    H2(F, K),
}

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
    /// Lanes per client: the data plane's worker threads (HTTP/1.1 split per lane); `None`:
    /// the building runtime's worker count, HTTP/1.1 on one lane (see [`UpstreamClient::new`]).
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
    /// One lane per worker (same TLS config; per-lane or shared dial caps, see the module docs),
    /// each built on its first request ([`LaneRecipe`]).
    lanes: Arc<[OnceLock<Box<Lane>>]>,
    /// What the lanes are built from.
    recipe: Arc<LaneRecipe>,
    /// Admission to each host's connections: one line per lane, or one for all (unsplit).
    gate: Arc<PoolGate>,
}

/// What a client's lanes are built from, on each lane's first request. Most routes of a large
/// config see no request on most lanes (or none at all) between two token refreshes, and a built
/// lane (then hyper-util's client, its pool and a connector) was ~650 B: with 1,000 routes on two
/// workers that was 1.3 MB of idle RSS (benches/README.md, memory per route).
struct LaneRecipe {
    tls: Arc<ClientConfig>,
    settings: UpstreamSettings,
    /// Each lane's connection cap: its share of `max_connections_per_host`, or all of it when
    /// the lanes share one connector.
    caps: Box<[usize]>,
    /// The connector every lane shares (unsplit), built with the first lane; `None`: each lane
    /// dials through its own.
    shared: Option<OnceLock<UpstreamConnector>>,
}

impl LaneRecipe {
    fn build(&self, k: usize) -> Lane {
        let cap = self.caps[k];
        let connector = match &self.shared {
            Some(shared) => shared
                .get_or_init(|| connector(&self.tls, &self.settings, cap))
                .clone(),
            None => connector(&self.tls, &self.settings, cap),
        };
        lane(&self.settings, connector)
    }
}

/// One lane: its h2 connections and its HTTP/1.1 pool, over one connector.
struct Lane {
    h2: H2Lane,
    http1: Http1Lane,
}

impl fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamClient").finish_non_exhaustive()
    }
}

impl UpstreamClient {
    /// A new client with its own, empty pools: `settings.lanes` lanes with `upstream_pool`
    /// split over them, else one per worker of the current runtime with HTTP/1.1 on one.
    pub fn new(tls: Arc<ClientConfig>, settings: &UpstreamSettings) -> Self {
        match settings.lanes {
            Some(workers) => Self::with_lanes(tls, settings, workers),
            None => Self::unsplit(tls, settings, lane_count()),
        }
    }

    /// A new client for `workers` data-plane workers: one lane each (at least 1, at most
    /// [`MAX_LANES`] and `max_connections_per_host`), each owning its share of `upstream_pool`.
    pub fn with_lanes(tls: Arc<ClientConfig>, settings: &UpstreamSettings, workers: usize) -> Self {
        let gate = PoolGate::new(
            settings.pool,
            workers.clamp(1, MAX_LANES),
            settings.pool_metrics.clone(),
        );
        let caps = line_shares(&settings.pool, gate.lines())
            .iter()
            .map(|share| share.connections)
            .collect();
        Self::of(tls, settings, caps, None, gate)
    }

    /// `lanes` lanes over one connector capped at `max_connections_per_host`, HTTP/1.1 all on
    /// lane 0 behind one line.
    fn unsplit(tls: Arc<ClientConfig>, settings: &UpstreamSettings, lanes: usize) -> Self {
        let cap = settings.pool.max_connections_per_host.max(1);
        let caps = vec![cap; lanes.clamp(1, MAX_LANES)].into();
        let gate = PoolGate::new(settings.pool, 1, settings.pool_metrics.clone());
        Self::of(tls, settings, caps, Some(OnceLock::new()), gate)
    }

    /// A client whose lane `k` is built with cap `caps[k]` on its first request.
    fn of(
        tls: Arc<ClientConfig>,
        settings: &UpstreamSettings,
        caps: Box<[usize]>,
        shared: Option<OnceLock<UpstreamConnector>>,
        gate: PoolGate,
    ) -> Self {
        Self {
            lanes: caps.iter().map(|_| OnceLock::new()).collect(),
            recipe: Arc::new(LaneRecipe {
                tls,
                settings: settings.clone(),
                caps,
                shared,
            }),
            gate: Arc::new(gate),
        }
    }

    /// Lane `k` (modulo the lanes), built now if this is its first request.
    fn lane(&self, k: usize) -> &Lane {
        let k = k % self.lanes.len();
        self.lanes[k].get_or_init(|| Box::new(self.recipe.build(k)))
    }

    /// Admits a request to `authority` (`host[:port]` of its URI) on this thread's lane: at
    /// once when the lane has a free connection slot for the host (or the host speaks h2), else
    /// after waiting in the lane's line, bounded by `upstream_pool.wait_timeout` and `at_most`;
    /// refused at once when the line is full.
    pub async fn admit(&self, authority: &str, at_most: Duration) -> Result<Admission, PoolBusy> {
        let lane = thread_lane() % self.lanes.len();
        self.gate.admit(authority, lane, at_most).await
    }

    /// Sends one admitted request (absolute `https://` URI) through the lane it was admitted on:
    /// its HTTP/1.1 pool while the request holds an HTTP/1.1 slot, else its h2 connections (see
    /// the module docs). `keep_head`: where the request's head is kept for a replay, if it is.
    // Not an `async fn`: an h2 request's stream is opened here, so the future holds neither
    // the request nor room for the HTTP/1.1 exchange (boxed: about 1.4 KB, which every
    // request's future would otherwise carry and copy; benches/MICRO.md, issue 13).
    pub fn request<'a>(
        &'a self,
        admission: &Admission,
        request: http::Request<UpstreamBody>,
        keep_head: Option<&'a mut Option<KeptHead>>,
    ) -> impl Future<Output = Result<Exchanged, UpstreamError>> + Send + 'a {
        let lane = self.lane(admission.lane());
        let mut keeper = Keeper::new(keep_head);
        let via = if admission.multiplexed() {
            keeper.before_consuming(&request, None);
            Via::H2(lane.h2.send(request), keeper)
        } else {
            let first_contact = !admission.http1_known();
            Via::Http1(Box::pin(lane.http1.send(
                &lane.h2,
                request,
                first_contact,
                keeper,
            )))
        };
        async move {
            let (sent, keeper) = match via {
                Via::Http1(exchange) => return exchange.await,
                Via::H2(sent, keeper) => (sent.await?, keeper),
            };
            match Exchanged::from_h2(sent) {
                Ok(exchanged) => Ok(exchanged),
                // The upstream stopped offering h2: the HTTP/1.1 pool sends it (and keeps the
                // fresh connection, if the h2 lane's dial made one).
                Err(downgraded) => {
                    Box::pin(lane.http1.send_downgraded(&lane.h2, *downgraded, keeper)).await
                }
            }
        }
    }

    /// The pool bounds this client applies (the configured totals).
    pub fn pool(&self) -> &UpstreamPool {
        self.gate.settings()
    }

    /// How many lanes (pools) this client spreads requests over.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// How many lanes `upstream_pool` is split over (1: every HTTP/1.1 request takes lane 0).
    pub fn http1_lanes(&self) -> usize {
        self.gate.lines()
    }

    /// The TLS configuration this client presents.
    pub fn tls_config(&self) -> &Arc<ClientConfig> {
        &self.recipe.tls
    }
}

/// A connector presenting `tls`, capping each host's live connections at `cap`.
fn connector(
    tls: &Arc<ClientConfig>,
    settings: &UpstreamSettings,
    cap: usize,
) -> UpstreamConnector {
    UpstreamConnector::new(
        Arc::clone(tls),
        ConnectSettings {
            resolve: Arc::clone(&settings.resolve),
            connect_timeout: settings.connect_timeout,
            max_connections_per_host: cap,
            pool_metrics: settings.pool_metrics.clone(),
            proxy: settings.proxy.clone(),
        },
    )
}

/// One lane over `connector`: its HTTP/1.1 pool and its h2 connections.
fn lane(settings: &UpstreamSettings, connector: UpstreamConnector) -> Lane {
    Lane {
        http1: Http1Lane::new(connector.clone(), settings.pool_idle_timeout),
        h2: H2Lane::new(
            connector,
            settings.pool_idle_timeout,
            H2Windows {
                stream: H2_STREAM_WINDOW,
                connection: H2_CONNECTION_WINDOW,
            },
        ),
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

    /// No lane is built until a request takes it (a built lane is ~650 B of every idle route).
    #[tokio::test]
    async fn a_lane_is_built_by_its_first_request() {
        let built = |c: &UpstreamClient| c.lanes.iter().filter(|l| l.get().is_some()).count();
        let client = UpstreamClient::new(tls(), &with_pool(128, Some(3)));
        assert_eq!(built(&client), 0);
        client.lane(4);
        assert_eq!(built(&client), 1);
        assert!(client.lanes[1].get().is_some());
        client.lane(1);
        assert_eq!(built(&client), 1);
        // Unsplit lanes share one connector, built with the first of them.
        let client = UpstreamClient::unsplit(tls(), &UpstreamSettings::default(), 3);
        let shared = || client.recipe.shared.as_ref().unwrap().get().is_some();
        assert!(!shared());
        client.lane(2);
        assert!(shared());
        assert_eq!(built(&client), 1);
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

    fn with_pool(max_connections_per_host: usize, lanes: Option<usize>) -> UpstreamSettings {
        UpstreamSettings {
            pool: UpstreamPool {
                max_connections_per_host,
                ..UpstreamPool::default()
            },
            lanes,
            ..UpstreamSettings::default()
        }
    }

    #[tokio::test]
    async fn workers_get_a_lane_each_with_its_share_of_the_pool() {
        let client = UpstreamClient::new(tls(), &with_pool(128, Some(3)));
        assert_eq!((client.lanes(), client.http1_lanes()), (3, 3));
        // The totals stay the configured ones.
        assert_eq!(client.pool().max_connections_per_host, 128);
        // Never more lanes than connections: each lane owns at least one.
        let client = UpstreamClient::new(tls(), &with_pool(2, Some(4)));
        assert_eq!((client.lanes(), client.http1_lanes()), (2, 2));
        let client = UpstreamClient::new(tls(), &with_pool(1, Some(2)));
        assert_eq!((client.lanes(), client.http1_lanes()), (1, 1));
        // Without workers, HTTP/1.1 is not split.
        let client = UpstreamClient::new(tls(), &with_pool(128, None));
        assert_eq!(client.http1_lanes(), 1);
    }

    /// The lane each of threads lanes `0..7` would send on (all admitted at once: the pool is
    /// larger), set on this thread in turn.
    async fn lanes_taken(client: &UpstreamClient) -> Vec<(usize, bool)> {
        let mut admitted = Vec::new();
        for k in 0..7 {
            set_thread_lane(k);
            admitted.push(
                client
                    .admit("up.example:443", Duration::from_secs(1))
                    .await
                    .unwrap(),
            );
        }
        admitted
            .iter()
            .map(|a| (a.lane(), a.multiplexed()))
            .collect()
    }

    /// One request to the test host, answered over h2.
    async fn host_answers_over_h2(client: &UpstreamClient) {
        let first = client
            .admit("up.example:443", Duration::from_secs(1))
            .await
            .unwrap();
        first.answered(http::Version::HTTP_2);
    }

    #[tokio::test]
    async fn http1_and_h2_requests_take_their_workers_lane() {
        let client = UpstreamClient::new(tls(), &with_pool(128, Some(3)));
        let h1: Vec<_> = (0..7).map(|k| (k % 3, false)).collect();
        assert_eq!(lanes_taken(&client).await, h1);
        // Once the host answered over h2 (on any lane), requests still take their own lane.
        set_thread_lane(0);
        host_answers_over_h2(&client).await;
        let h2: Vec<_> = (0..7).map(|k| (k % 3, true)).collect();
        assert_eq!(lanes_taken(&client).await, h2);
    }

    #[tokio::test]
    async fn without_workers_http1_takes_lane_0_and_h2_its_threads_lane() {
        let client = UpstreamClient::unsplit(tls(), &UpstreamSettings::default(), 3);
        assert_eq!((client.lanes(), client.http1_lanes()), (3, 1));
        assert_eq!(lanes_taken(&client).await, vec![(0, false); 7]);
        host_answers_over_h2(&client).await;
        let h2: Vec<_> = (0..7).map(|k| (k % 3, true)).collect();
        assert_eq!(lanes_taken(&client).await, h2);
    }

    #[test]
    fn threads_that_are_not_workers_get_some_lane() {
        let client = UpstreamClient::new(tls(), &with_pool(4, Some(2)));
        let lanes: Vec<usize> = (0..4)
            .map(|_| {
                let client = client.clone();
                std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    runtime.block_on(async {
                        let admitted = client
                            .admit("up.example:443", Duration::from_secs(1))
                            .await
                            .unwrap();
                        assert!(!admitted.multiplexed());
                        admitted.lane()
                    })
                })
                .join()
                .unwrap()
            })
            .collect();
        assert!(lanes.iter().all(|&lane| lane < 2), "{lanes:?}");
    }
}
