//! popgate's own HTTP/2 upstream connections, one set per client lane (see [`super::client`]), in
//! place of hyper-util's pooled client for every exchange to a host that answers over h2.
//!
//! A lane keeps, per upstream authority, at most one h2 connection ([`H2Conn`]): every request
//! of the lane's worker is a stream on it, opened by the request itself ([`super::h2_stream`]).
//! hyper-util's client did the same at a cost of its own on every request (benches/MICRO.md,
//! issue 13): a SipHash-keyed map behind a mutex, the checkout, the `Pooled` wrapper and its
//! return, and a copy of its large future. Here a request takes the lane's lock for a scan of
//! its few hosts and opens its stream before the lock is released (which only queues the head
//! for the connection's task; the answer is awaited without the lock).
//!
//! - **Dialing** goes through the lane's [`UpstreamConnector`] (its per-host cap, connect
//!   timeout, TLS with the route's client certificate, outbound proxy and metrics). One dial per
//!   host at a time: requests that find a dial in progress wait for it, so a burst on a cold
//!   lane opens one connection, not one per request. If that dial fails, its waiters each dial
//!   at once (as they would have without it), not one after another.
//! - **First contact**: a host's first connection is dialed by the HTTP/1.1 pool (the protocol
//!   is unknown until ALPN, and the other first requests wait for that dial's); when it chose
//!   h2 it is adopted here ([`H2Lane::adopt`]).
//! - **A connection going away**: a request the connection cannot take (it received `GOAWAY`,
//!   or failed) goes out on a fresh one, at most [`MAX_SEND_TRIES`] times; a request whose
//!   stream was opened is never sent again.
//! - **Idle expiry**: a connection that carried no new request for `pool_idle_timeout` (checked
//!   every `pool_idle_timeout`, so within twice that) is let go: dropping the lane's handle ends
//!   it once its streams are done. The check counts requests rather than reading the clock per
//!   request.
//! - **An upstream that stopped offering h2** (a redeploy between two dials): the fresh
//!   connection is handed back to the caller ([`H2Sent::Http1`]) for the lane's HTTP/1.1 pool,
//!   and so are the host's later requests, until a dial of that pool negotiates h2 again.
//!
//! The lock: one `std::sync::Mutex` per lane, held for a scan and a queue push. In production
//! lane `k` is used by worker `k` alone, so it is uncontended.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use http::{Request, Response, Uri};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tower_service::Service as _;

use crate::locks::lock_unpoisoned;
use crate::net::connect::{ConnectError, UpstreamConn, UpstreamConnector};
use crate::net::h2_stream::{H2Conn, H2Exchange, H2Windows, Start};
use crate::net::response_body::H2ResponseBody;
use crate::net::upstream_body::UpstreamBody;
use crate::net::upstream_error::UpstreamError;

/// Fresh connections one request tries when each cannot take it (closing as it arrived).
/// Beyond this the upstream is refusing streams as fast as it accepts connections: an error.
const MAX_SEND_TRIES: usize = 4;

/// Hosts a lane keeps an h2 connection for. A route normally reaches one upstream authority; a
/// wildcard route can reach many, and a request scans this list, so past this bound a host that
/// is not dialing loses its entry (its connection ends once its streams are done).
const MAX_H2_HOSTS: usize = 64;

/// One lane's h2 connections. Cheap to clone.
#[derive(Clone)]
pub(crate) struct H2Lane {
    shared: Arc<Shared>,
}

struct Shared {
    connector: UpstreamConnector,
    idle_timeout: Duration,
    windows: H2Windows,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    hosts: Vec<Host>,
    /// The idle check task is running.
    reaping: bool,
}

/// One upstream authority's connection on a lane: open, being dialed, or neither.
struct Host {
    /// `host[:port]` as in the request URI.
    authority: Box<str>,
    /// The connection (none: never dialed, failed, closed or let go).
    open: Option<H2Conn>,
    /// A request is dialing one (`open` is `None`); others wait on this.
    dialing: Option<Arc<Notify>>,
    /// Requests sent on the connection; the idle check compares it with `checked`.
    sent: u64,
    /// `sent` at the last idle check.
    checked: u64,
    /// The last dial negotiated HTTP/1.1: requests go to the lane's HTTP/1.1 pool (which
    /// reuses its idle connections) until a dial negotiates h2 again.
    http1: bool,
    /// Dials that failed (not those whose request was dropped): a waiter that sees this grow
    /// dials on its own at once.
    failed_dials: u64,
}

impl Host {
    fn live(&self) -> Option<&H2Conn> {
        self.open.as_ref().filter(|conn| conn.is_live())
    }
}

/// What [`H2Lane::send`] did with a request.
pub(crate) enum H2Sent {
    /// The upstream answered over h2.
    Answered(Response<H2ResponseBody>),
    /// The host's last dial negotiated HTTP/1.1 (the upstream stopped offering h2): the request,
    /// unsent, for the lane's HTTP/1.1 pool. Boxed: the rare case, and the request and the TLS
    /// stream are large.
    Http1(Box<Downgraded>),
}

/// A request not sent, for the lane's HTTP/1.1 pool: on the fresh HTTP/1.1 connection its dial
/// just made, or (none) on an idle one of the pool's, else a new one.
pub(crate) struct Downgraded {
    pub(crate) request: Request<UpstreamBody>,
    /// Boxed: the TLS stream is over a kilobyte, and the futures that pass it on would each
    /// keep room for it on every request.
    pub(crate) conn: Option<Box<UpstreamConn>>,
}

/// What a request does next, decided under the lane's lock.
enum Step {
    /// Its stream is open on the host's connection: await the answer.
    Queued(H2Exchange),
    /// Anything else: the rare paths. Boxed (there only), so that the common case's future
    /// keeps room for the exchange alone.
    Pending(Box<Pending>),
}

/// A request's next step other than waiting for its answer.
enum Pending {
    /// A closing connection could not take it: look again (the connection's error, for when
    /// [`MAX_SEND_TRIES`] connections could not).
    Resend(Request<UpstreamBody>, h2::Error),
    /// Its stream could not be opened.
    Failed(UpstreamError),
    /// Another request dials: wait for it, then look again (with the host's failed dials
    /// counted when the wait began).
    Wait(OwnedNotified, u64, Request<UpstreamBody>),
    /// This request dials; the host's `dialing` is the notify its waiters wait on (none: it
    /// dials on its own, after the dial it waited for ended without a connection).
    Dial(Option<Arc<Notify>>, Request<UpstreamBody>),
    /// The host speaks HTTP/1.1 now: the lane's HTTP/1.1 pool sends it.
    Http1(Request<UpstreamBody>),
}

/// The host's state as a request finds it.
enum Found<'a> {
    Open(&'a H2Conn),
    Wait(OwnedNotified, u64),
    Dial(Option<Arc<Notify>>),
    Http1,
}

impl H2Lane {
    /// A lane dialing through `connector`, letting connections idle for `idle_timeout` go.
    pub(crate) fn new(
        connector: UpstreamConnector,
        idle_timeout: Duration,
        windows: H2Windows,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                connector,
                idle_timeout,
                windows,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Sends `request` (absolute `https://` URI) as a stream on the lane's connection to its
    /// authority, dialing one if there is none (or waiting for the dial in progress).
    // Not an `async fn`: the common case (the lane's connection is open) opens the stream
    // before the future exists, so the future holds the exchange and not the request as well
    // (an `async fn` over the loop below kept the request three times: 1,632 bytes, copied
    // into every enclosing future on every request; benches/MICRO.md, issue 13).
    pub(crate) fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<H2Sent, UpstreamError>> + Send + '_ {
        let first = self.decide(request, None);
        async move {
            match first {
                Step::Queued(exchange) => exchange.await.map(H2Sent::Answered),
                // Boxed: rare (a dial, a wait for one, HTTP/1.1), and larger.
                Step::Pending(pending) => Box::pin(self.send_slowly(*pending)).await,
            }
        }
    }

    /// What `request` does next, under the lane's lock: queued on the open connection to its
    /// authority (the answer is awaited without the lock), or one of the rare paths. `waited`:
    /// the host's failed dials when the request began to wait for a dial. A [`Pending::Dial`]
    /// returned here must be dialed: the host is marked dialing for it.
    fn decide(&self, request: Request<UpstreamBody>, waited: Option<u64>) -> Step {
        let mut state = self.shared.state();
        Step::Pending(Box::new(match state.find(authority_of(&request), waited) {
            Found::Open(conn) => match conn.start(request) {
                Start::Sent(exchange) => return Step::Queued(exchange),
                // The connection marked itself ended: the next look dials a fresh one.
                Start::Closed(request, error) => Pending::Resend(*request, error),
                Start::Failed(error) => Pending::Failed(UpstreamError::Stream(error)),
            },
            Found::Wait(dialed, failed) => Pending::Wait(dialed, failed, request),
            Found::Dial(dialing) => Pending::Dial(dialing, request),
            Found::Http1 => Pending::Http1(request),
        }))
    }

    /// [`H2Lane::send`] from a step other than an answer: waits for a dial, dials, or hands the
    /// request to the HTTP/1.1 pool, then looks again.
    async fn send_slowly(&self, mut pending: Pending) -> Result<H2Sent, UpstreamError> {
        let mut waited: Option<u64> = None;
        // The connections that could not take this request so far.
        let mut refused = 0;
        loop {
            let request = match pending {
                Pending::Resend(request, error) => {
                    refused += 1;
                    if refused >= MAX_SEND_TRIES {
                        return Err(UpstreamError::Stream(error));
                    }
                    tracing::debug!(%error, "upstream h2 connection closing; next one");
                    request
                }
                Pending::Failed(error) => return Err(error),
                Pending::Http1(request) => {
                    let conn = None;
                    return Ok(H2Sent::Http1(Box::new(Downgraded { request, conn })));
                }
                Pending::Wait(dialed, failed, request) => {
                    dialed.await;
                    waited = Some(failed);
                    request
                }
                Pending::Dial(dialing, request) => {
                    // Owned here, on the rare dial, not on every request: the request moves on.
                    let authority: Box<str> = authority_of(&request).into();
                    // Whatever ends this dial (an error, HTTP/1.1, the request dropped while it
                    // runs), its waiters must not wait for it any longer.
                    let mut ended = dialing.map(|dialing| DialEnded {
                        shared: &self.shared,
                        authority: &authority,
                        dialing,
                        failed: false,
                    });
                    // Boxed: a dial is rare, and its future (connect, TLS, handshake) would
                    // otherwise make every request's future larger, and costlier to move.
                    let dialed = match Box::pin(self.dial(&authority)).await {
                        Ok(dialed) => dialed,
                        Err(error) => {
                            if let Some(ended) = &mut ended {
                                ended.failed = true;
                            }
                            return Err(error);
                        }
                    };
                    match dialed {
                        Dialed::H2(conn) => self.shared.install(&authority, conn),
                        Dialed::Http1(conn) => {
                            self.shared.downgraded(&authority);
                            let conn = Some(conn);
                            return Ok(H2Sent::Http1(Box::new(Downgraded { request, conn })));
                        }
                    }
                    request
                }
            };
            pending = match self.decide(request, waited) {
                Step::Queued(exchange) => return exchange.await.map(H2Sent::Answered),
                Step::Pending(pending) => *pending,
            };
        }
    }

    /// Takes `conn` (dialed by the lane's HTTP/1.1 pool, which found it negotiated h2) as the
    /// connection to `authority`, unless the lane already has one open (then `conn` is closed).
    pub(crate) async fn adopt(
        &self,
        authority: &str,
        conn: UpstreamConn,
    ) -> Result<(), UpstreamError> {
        if !self.has_live(authority) {
            let conn = self.handshake(conn).await?;
            self.shared.install(authority, conn);
        }
        Ok(())
    }

    /// Whether the lane has an open connection to `authority`.
    pub(crate) fn has_live(&self, authority: &str) -> bool {
        let state = self.shared.state();
        state
            .hosts
            .iter()
            .any(|h| &*h.authority == authority && h.live().is_some())
    }

    /// A new connection to `authority`: h2 and ready for streams, or HTTP/1.1 as dialed.
    async fn dial(&self, authority: &str) -> Result<Dialed, UpstreamError> {
        let uri = Uri::builder()
            .scheme("https")
            .authority(authority)
            .path_and_query("/")
            .build()
            // The authority came from a parsed URI, so this does not fail; if it did, it has
            // no usable host.
            .map_err(|_| UpstreamError::Connect(ConnectError::NoHost(authority.to_owned())))?;
        let mut connector = self.shared.connector.clone();
        let conn = connector.call(uri).await.map_err(UpstreamError::Connect)?;
        if !conn.is_h2() {
            return Ok(Dialed::Http1(Box::new(conn)));
        }
        Ok(Dialed::H2(self.handshake(conn).await?))
    }

    /// The h2 handshake over `conn`, its connection task spawned on this runtime (the lane's
    /// own worker in production).
    async fn handshake(&self, conn: UpstreamConn) -> Result<H2Conn, UpstreamError> {
        H2Conn::handshake(conn, self.shared.windows)
            .await
            .map_err(UpstreamError::Stream)
    }
}

/// Clears a dial's `dialing` mark when dropped and wakes its waiters (after
/// [`Shared::install`] the mark is already gone, and the waiters find the connection).
struct DialEnded<'a> {
    shared: &'a Arc<Shared>,
    authority: &'a str,
    dialing: Arc<Notify>,
    /// The dial failed (rather than its request being dropped, or it succeeding).
    failed: bool,
}

impl Drop for DialEnded<'_> {
    fn drop(&mut self) {
        self.shared
            .dial_ended(self.authority, &self.dialing, self.failed);
    }
}

/// `host[:port]` of a request's (absolute) URI.
fn authority_of(request: &Request<UpstreamBody>) -> &str {
    request.uri().authority().map_or("", |a| a.as_str())
}

/// A fresh connection.
enum Dialed {
    H2(H2Conn),
    /// Boxed: the TLS stream is over a kilobyte, and this is the rare case.
    Http1(Box<UpstreamConn>),
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a holder panicked between pointer moves; the list is whole
        // (at worst a connection is missing, and dialed again).
        lock_unpoisoned(&self.state)
    }

    /// `conn` is the host's connection from now on, unless one is open (then `conn` is
    /// dropped, which ends its connection); whoever waits for a dial looks again.
    fn install(self: &Arc<Self>, authority: &str, conn: H2Conn) {
        let mut state = self.state();
        let host = state.host(authority);
        if host.live().is_some() {
            return;
        }
        if let Some(dialing) = host.dialing.take() {
            dialing.notify_waiters();
        }
        host.open = Some(conn);
        host.http1 = false;
        self.start_reaping(&mut state);
    }

    /// The host's last dial negotiated HTTP/1.1: its requests go to the HTTP/1.1 pool from now
    /// on (whose dials let the h2 lane adopt a connection that negotiates h2 again).
    fn downgraded(&self, authority: &str) {
        self.state().host(authority).http1 = true;
    }

    /// The dial `dialing` ended (`failed`, gave HTTP/1.1, its request was dropped, or it
    /// opened the connection): its waiters look again. After a failure each dials on its own;
    /// otherwise one of them dials and the others wait for it.
    fn dial_ended(&self, authority: &str, dialing: &Arc<Notify>, failed: bool) {
        let mut state = self.state();
        let host = state.host(authority);
        if host
            .dialing
            .as_ref()
            .is_some_and(|d| Arc::ptr_eq(d, dialing))
        {
            host.dialing = None;
        }
        if failed {
            host.failed_dials += 1;
        }
        dialing.notify_waiters();
    }

    fn start_reaping(self: &Arc<Self>, state: &mut State) {
        if state.reaping {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        state.reaping = true;
        runtime.spawn(reap(Arc::downgrade(self), self.idle_timeout));
    }

    /// Lets go of each connection that carried no new request since the last check; whether any
    /// connection is left to check (else the check stops).
    fn expire(&self) -> bool {
        let mut state = self.state();
        let mut open = false;
        for host in &mut state.hosts {
            if host.open.is_some() {
                if host.sent == host.checked || host.live().is_none() {
                    host.open = None;
                } else {
                    host.checked = host.sent;
                    open = true;
                }
            }
        }
        state
            .hosts
            .retain(|h| h.open.is_some() || h.dialing.is_some() || h.http1);
        if !open {
            state.reaping = false;
        }
        open
    }
}

impl State {
    /// Under the lock: the host's open connection (counting the request it is about to take),
    /// or the dial to wait for, or (marked dialing now) the caller dials. `waited`: the host's
    /// failed dials when the caller began to wait for one (`None`: it has not waited).
    fn find(&mut self, authority: &str, waited: Option<u64>) -> Found<'_> {
        let host = self.host(authority);
        if host.open.as_ref().is_some_and(|conn| !conn.is_live()) {
            host.open = None;
        }
        match &host.open {
            Some(conn) => {
                host.sent += 1;
                Found::Open(conn)
            }
            None if host.http1 => Found::Http1,
            None => match &host.dialing {
                // The waiters of a failed dial dial at once, each on its own, rather than one
                // after another behind each other's dials (each up to the connect timeout).
                Some(_) if waited.is_some_and(|before| host.failed_dials > before) => {
                    Found::Dial(None)
                }
                Some(dialing) => {
                    Found::Wait(Arc::clone(dialing).notified_owned(), host.failed_dials)
                }
                None => {
                    let dialing = Arc::new(Notify::new());
                    host.dialing = Some(Arc::clone(&dialing));
                    Found::Dial(Some(dialing))
                }
            },
        }
    }

    /// The entry for `authority`, made if new (making room past [`MAX_H2_HOSTS`]).
    fn host(&mut self, authority: &str) -> &mut Host {
        if let Some(at) = self.hosts.iter().position(|h| &*h.authority == authority) {
            return &mut self.hosts[at];
        }
        if self.hosts.len() >= MAX_H2_HOSTS {
            // One not dialing first: its waiters would otherwise wait for nothing.
            if let Some(at) = self.hosts.iter().position(|h| h.dialing.is_none()) {
                self.hosts.swap_remove(at);
            }
        }
        self.hosts.push(Host {
            authority: authority.into(),
            open: None,
            dialing: None,
            sent: 0,
            checked: 0,
            http1: false,
            failed_dials: 0,
        });
        let last = self.hosts.len() - 1;
        &mut self.hosts[last]
    }
}

/// The lane's idle check: every `idle_timeout`, until no connection is left or the lane (its
/// client) is gone.
async fn reap(lane: Weak<Shared>, idle_timeout: Duration) {
    loop {
        tokio::time::sleep(idle_timeout).await;
        match lane.upgrade() {
            Some(lane) if lane.expire() => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::net::test_support::{accepts, connector_timing_out, connector_to, silent};

    fn lane_to(addr: std::net::SocketAddr) -> H2Lane {
        lane_with(connector_to(addr))
    }

    fn lane_with(connector: UpstreamConnector) -> H2Lane {
        H2Lane::new(
            connector,
            Duration::from_secs(60),
            H2Windows {
                stream: 65_535,
                connection: 65_535,
            },
        )
    }

    fn request() -> Request<UpstreamBody> {
        let mut request = Request::new(UpstreamBody::empty());
        *request.uri_mut() = "https://up.test/x".parse().unwrap();
        request
    }
    /// Requests that find a dial in progress wait for it rather than dial too; and when the
    /// dialing request is dropped (its caller went away, its timeout ran out), a waiter dials:
    /// nobody waits for a dial that will never end.
    #[tokio::test]
    async fn one_dial_at_a_time_and_a_dropped_dial_lets_a_waiter_dial() {
        let (addr, accepted) = silent().await;
        let lane = lane_to(addr);
        let first = tokio::spawn({
            let lane = lane.clone();
            async move { lane.send(request()).await.map(|_| ()) }
        });
        accepts(&accepted, 1).await;
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let lane = lane.clone();
                tokio::spawn(async move { lane.send(request()).await.map(|_| ()) })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the waiters dialed too");
        first.abort();
        // One of the waiters dials now, and only one.
        accepts(&accepted, 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        for waiter in waiters {
            waiter.abort();
        }
    }

    /// When the dial that requests waited for fails (here: its TLS handshake times out), each
    /// waiter dials at once, not one after another behind the others' dials.
    #[tokio::test]
    async fn the_waiters_of_a_failed_dial_dial_at_once() {
        let (addr, accepted) = silent().await;
        let lane = lane_with(connector_timing_out(addr, Duration::from_millis(800)));
        let send = || {
            let lane = lane.clone();
            tokio::spawn(async move { lane.send(request()).await.map(|_| ()) })
        };
        let first = send();
        accepts(&accepted, 1).await;
        let waiters: Vec<_> = (0..3).map(|_| send()).collect();
        assert!(
            first.await.unwrap().is_err(),
            "the silent upstream's dial times out"
        );
        // All three waiters dial now; one after another, the third would start only after two
        // more timeouts (1.6 s).
        tokio::time::timeout(Duration::from_millis(600), accepts(&accepted, 4))
            .await
            .expect("the waiters dialed at once");
        for waiter in waiters {
            waiter.abort();
        }
    }
}
