//! popgate's own pool of HTTP/1.1 upstream connections, one per client lane (see
//! [`super::client`]), in place of hyper-util's pool for every exchange that holds an HTTP/1.1
//! slot of the gate ([`super::pool_gate`]).
//!
//! hyper-util's `Client::send_request` costs ~13,000 instructions per request beside the
//! HTTP/1 codec (benches/MICRO.md): a SipHash-keyed map behind a mutex, the checkout-or-dial
//! race, `Host` formatting, the `Pooled` wrapper and a spawned future that puts the connection
//! back. Here a lane keeps, per upstream authority (routes normally have one), a stack of idle
//! connections: the newest is reused first (LIFO keeps few connections warm and lets the others
//! expire), and the response body gives the connection back when it ends complete
//! ([`super::held_body::HeldBody`] for hyper's, [`super::h1_own::OwnBody`] for the codec's).
//!
//! - **Bodiless requests** (the hot path) go through popgate's own codec ([`super::h1_own`]) in
//!   the request's task; requests with a body through hyper's client, whose connection task keeps
//!   sending a streamed body while nobody reads the answer
//!   (`tests/dataplane/upstream_http1_pool.rs`, the full-duplex test).
//!
//! - **Dialing** goes through the lane's [`UpstreamConnector`], the same one the lane's h2
//!   connections ([`super::h2_lane`]) use: its per-host cap, connect timeout, TLS with the
//!   route's client certificate, outbound proxy tunnel and metrics all apply, and the two paths
//!   share the cap.
//! - **ALPN h2**: a host's first connection is dialed here (its protocol is unknown until
//!   ALPN). If the upstream chose h2, the lane's h2 connections adopt it
//!   ([`H2Lane::adopt`]) and the request goes that way.
//! - **Stale keep-alive**: a reused connection the upstream closed while idle gives the request
//!   back unsent (`try_send_request`); it then goes out on another or a new connection. A
//!   request that may have been written, even partly, is never sent again.
//! - **Idle expiry**: an idle connection is closed (its `SendRequest` dropped) once idle for
//!   `pool_idle_timeout`, by a timer task per lane that runs only while the lane holds idle
//!   connections, and at checkout.
//!
//! The lock: one `std::sync::Mutex` per lane, held for a few pointer moves. In production lane
//! `k` is used by worker `k` alone (requests, body ends and the timer all run there), so it is
//! uncontended; on a work-stealing runtime (tests, no worker count) it stays correct.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use http::header::{HOST, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::Body as _;
use hyper::client::conn::http1::{Builder, SendRequest};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tower_service::Service as _;

use crate::locks::lock_unpoisoned;
use crate::net::connect::{ConnectError, UpstreamConn, UpstreamConnector};
use crate::net::h1_own::{self, GiveBack, OwnConn};
use crate::net::h2_lane::{Downgraded, H2Lane, H2Sent};
use crate::net::kept_head::Keeper;
use crate::net::pool_gate::Admission;
use crate::net::response_body::ResponseBody;
use crate::net::upstream_body::UpstreamBody;
use crate::net::upstream_error::UpstreamError;

/// Hosts a lane keeps idle connections for. A route normally reaches one upstream authority;
/// a wildcard route can reach many, and a checkout scans this list, so past this bound the host
/// idle the longest loses its idle connections instead.
const MAX_IDLE_HOSTS: usize = 64;

/// Reused connections a request tries before it dials a new one: each found closed by the
/// upstream gives the request back unsent, so this bounds the retries (hyper-util has no bound
/// but its pool's size). Past it the request goes out on a fresh connection.
const MAX_REUSE_TRIES: usize = 8;

/// The port `https://` implies, left out of `Host`.
const HTTPS_PORT: u16 = 443;

/// One lane's pool. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Http1Lane {
    shared: Arc<Shared>,
}

struct Shared {
    /// The lane's connector (shared with its h2 connections).
    connector: UpstreamConnector,
    /// An idle connection is closed after this long.
    idle_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Hosts with idle connections (or just dialed), in no order.
    hosts: Vec<HostIdle>,
    /// The expiry timer task is running.
    reaping: bool,
}

/// One upstream authority's idle connections on a lane, newest last.
struct HostIdle {
    target: Arc<Target>,
    /// At most the lane's share of `max_connections_per_host`: the connector caps the live
    /// connections, idle or not.
    stack: Vec<Idle>,
    /// A first-contact request is dialing to learn the host's protocol; others wait on this.
    probing: Option<Arc<Notify>>,
}

/// A first-contact request's part in learning the host's protocol.
enum Probe {
    /// Another request dials: wait for its ALPN.
    Wait(OwnedNotified),
    /// This request dials; dropped once the protocol is known (or the dial failed, or the
    /// request was dropped), which lets the waiters go.
    Lead(ProbeLead),
}

struct ProbeLead {
    lane: Arc<Shared>,
    target: Arc<Target>,
    probing: Arc<Notify>,
}

impl Drop for ProbeLead {
    fn drop(&mut self) {
        {
            let mut state = self.lane.state();
            if let Some(host) = state.hosts.iter_mut().find(|h| h.is(&self.target))
                && host
                    .probing
                    .as_ref()
                    .is_some_and(|p| Arc::ptr_eq(p, &self.probing))
            {
                host.probing = None;
            }
        }
        self.probing.notify_waiters();
    }
}

impl HostIdle {
    /// Whether this entry is `target`'s: the same entry, or one made for the same authority
    /// after `target`'s was dropped past [`MAX_IDLE_HOSTS`] while a lease held it.
    fn is(&self, target: &Arc<Target>) -> bool {
        Arc::ptr_eq(&self.target, target) || self.target.authority == target.authority
    }
}

/// An upstream authority and the `Host` an HTTP/1.1 request to it carries by default.
struct Target {
    /// `host[:port]` as in the request URI.
    authority: Box<str>,
    /// hyper-util's rule: the host, with the port unless it is the scheme's default.
    host: Option<HeaderValue>,
}

struct Idle {
    conn: IdleConn,
    since: Instant,
}

/// An idle connection: run by hyper's client (its task of its own), or by popgate's own codec
/// ([`super::h1_own`], driven by the request that uses it). A codec connection a request with a
/// body checks out is handed to hyper, for good.
enum IdleConn {
    Hyper(SendRequest<UpstreamBody>),
    Own(OwnConn),
}

impl IdleConn {
    fn is_ready(&mut self) -> bool {
        match self {
            IdleConn::Hyper(sender) => !sender.is_closed() && sender.is_ready(),
            IdleConn::Own(conn) => conn.is_idle(),
        }
    }
}

/// An HTTP/1.1 connection lent to one exchange, given back when its response body ends.
pub struct Lease {
    sender: SendRequest<UpstreamBody>,
    target: Arc<Target>,
    lane: Arc<Shared>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("authority", &self.target.authority)
            .finish_non_exhaustive()
    }
}

/// An upstream answer: the response and, over HTTP/1.1 through the lane's pool, its connection.
pub struct Exchanged {
    /// The upstream's response.
    pub response: Response<ResponseBody>,
    /// Its HTTP/1.1 connection, for [`super::held_body::HeldBody`] to give back.
    pub lease: Option<Lease>,
}

impl Exchanged {
    /// An h2 lane's answer as the client hands it on (an h2 stream holds no connection lease),
    /// or the request it gave back for the HTTP/1.1 pool.
    pub(crate) fn from_h2(sent: H2Sent) -> Result<Self, Box<Downgraded>> {
        match sent {
            H2Sent::Answered(response) => Ok(Self {
                response: response.map(ResponseBody::H2),
                lease: None,
            }),
            H2Sent::Http1(downgraded) => Err(downgraded),
        }
    }
}

impl Http1Lane {
    /// A pool dialing through `connector`, closing connections idle for `idle_timeout`.
    pub(crate) fn new(connector: UpstreamConnector, idle_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                connector,
                idle_timeout,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Sends `request` (absolute `https://` URI, admitted with an HTTP/1.1 slot) on an idle
    /// connection to its authority, else on a new one; through `h2` (the same lane's h2
    /// connections) when the new one negotiated h2. `first_contact`: the host's protocol is not
    /// known yet (it never answered over HTTP/1.1), so of the requests that find no idle
    /// connection, one dials and the others wait for its ALPN: if it is h2 they go there
    /// instead of each dialing a connection of its own. `keeper`: where the request's head is
    /// kept for a replay, if it is.
    // Not an `async fn`: it returns the exchange's future itself, which an `async fn` would wrap
    // in one more state machine holding a second copy of the request (each level is copied when
    // the caller awaits it).
    pub(crate) fn send<'a>(
        &'a self,
        h2: &'a H2Lane,
        request: Request<UpstreamBody>,
        first_contact: bool,
        keeper: Keeper<'a>,
    ) -> impl Future<Output = Result<Exchanged, UpstreamError>> + Send + 'a {
        self.exchange(h2, request, None, first_contact, keeper)
    }

    /// Sends a request the h2 lane gave back (the upstream stopped offering h2): on the fresh
    /// HTTP/1.1 connection its dial made, which then joins this pool, or as [`Http1Lane::send`].
    pub(crate) fn send_downgraded<'a>(
        &'a self,
        h2: &'a H2Lane,
        downgraded: Downgraded,
        keeper: Keeper<'a>,
    ) -> impl Future<Output = Result<Exchanged, UpstreamError>> + Send + 'a {
        let Downgraded { request, conn } = downgraded;
        self.exchange(h2, request, conn, false, keeper)
    }

    // Not an `async fn`: that would keep the request twice (the argument and the local it is
    // moved into, 360 bytes each) in a future every HTTP/1.1 request creates and moves
    // (benches/MICRO.md, issue 13); `clippy::manual_async_fn` would undo it.
    #[allow(clippy::manual_async_fn)]
    fn exchange<'a>(
        &'a self,
        h2: &'a H2Lane,
        mut request: Request<UpstreamBody>,
        mut fresh: Option<Box<UpstreamConn>>,
        first_contact: bool,
        mut keeper: Keeper<'a>,
    ) -> impl Future<Output = Result<Exchanged, UpstreamError>> + Send + 'a {
        async move {
            let authority = request.uri().authority().map_or("", |a| a.as_str());
            let (target, mut idle, probe) = self.shared.checkout(authority, first_contact);
            if fresh.is_some() {
                // Not needed: the request goes out on the fresh connection.
                idle = None;
            }
            let scheme = request.uri().scheme().cloned().unwrap_or(Scheme::HTTPS);
            let mut probe = match probe {
                Some(Probe::Wait(probed)) if fresh.is_none() => {
                    probed.await;
                    if h2.has_live(&target.authority) {
                        keeper.before_consuming(&request, None);
                        let sent = Box::pin(via_h2(h2, request, &scheme, &target.authority));
                        match sent.await? {
                            Ok(exchanged) => return Ok(exchanged),
                            Err(downgraded) => {
                                request = downgraded.request;
                                fresh = downgraded.conn;
                            }
                        }
                    }
                    None
                }
                Some(Probe::Lead(lead)) => Some(lead),
                _ => None,
            };
            let bodiless = request.body().is_end_stream();
            // The request's absolute URI, once it is put in origin form (for a replay).
            let mut absolute = None;
            let mut tries = 0;
            loop {
                let found = match idle.take() {
                    Some(conn) => Some(conn),
                    None if fresh.is_none() && tries > 0 && tries < MAX_REUSE_TRIES => {
                        self.shared.reuse(&target)
                    }
                    None => None,
                };
                let (conn, reused) = match (found, fresh.take()) {
                    (Some(conn), _) => (conn, true),
                    (None, Some(conn)) => (Box::pin(start(conn, bodiless)).await?, false),
                    // Boxed: a dial is rare, and its future (connect, TLS, handshake) would
                    // otherwise make every request's future larger, and costlier to move.
                    (None, None) => match Box::pin(self.dial(&scheme, &target)).await {
                        Ok(Dialed::Http1(conn)) => {
                            // HTTP/1.1: whoever waited on this probe dials its own.
                            drop(probe.take());
                            (Box::pin(start(conn, bodiless)).await?, false)
                        }
                        Ok(Dialed::H2(conn)) => {
                            Box::pin(h2.adopt(&target.authority, *conn)).await?;
                            // h2: whoever waited on this probe finds the connection now.
                            drop(probe.take());
                            keeper.before_consuming(&request, absolute.as_ref());
                            let sent = Box::pin(via_h2(h2, request, &scheme, &target.authority));
                            let downgraded = match sent.await? {
                                Ok(exchanged) => return Ok(exchanged),
                                // The h2 lane's own dial found HTTP/1.1 after all: sent here.
                                Err(downgraded) => downgraded,
                            };
                            request = downgraded.request;
                            match downgraded.conn {
                                Some(conn) => (Box::pin(start(conn, bodiless)).await?, false),
                                // Adopted, then gone, then HTTP/1.1 again: once more.
                                None => {
                                    tries += 1;
                                    continue;
                                }
                            }
                        }
                        Err(error) => return Err(error),
                    },
                };
                if let Some(uri) = origin_form(&mut request, &target) {
                    absolute = Some(uri);
                }
                let mut sender = match conn {
                    IdleConn::Own(own) if bodiless => {
                        let lane = Arc::clone(&self.shared);
                        let back = Arc::clone(&target);
                        let give_back: GiveBack =
                            Box::new(move |conn| lane.put_back(back, IdleConn::Own(conn)));
                        // Boxed: the exchange holds the connection (and borrows the request, which
                        // stays here for a replay); inline it would make every request's future (h2's
                        // too) that much larger to move.
                        match Box::pin(h1_own::exchange(own, &request, give_back)).await {
                            Ok(response) => {
                                keeper.returned(request, absolute);
                                return Ok(Exchanged {
                                    response: response.map(ResponseBody::Own),
                                    lease: None,
                                });
                            }
                            Err((error, true)) if reused => {
                                tracing::debug!(%error, "idle upstream connection closed; next one");
                                tries += 1;
                                continue;
                            }
                            Err((error, _)) => return Err(UpstreamError::Own(Box::new(error))),
                        }
                    }
                    // A request with a body goes through hyper's client (its connection's own task
                    // keeps sending the body while the answer waits to be read).
                    IdleConn::Own(own) if own.is_clean() => Box::pin(handshake(*own.io)).await?,
                    IdleConn::Own(_) => {
                        tries += 1;
                        continue;
                    }
                    IdleConn::Hyper(sender) => sender,
                };
                keeper.before_consuming(&request, absolute.as_ref());
                match sender.try_send_request(request).await {
                    Ok(response) => {
                        return Ok(Exchanged {
                            response: response.map(ResponseBody::Http1),
                            lease: Some(Lease {
                                sender,
                                target,
                                lane: Arc::clone(&self.shared),
                            }),
                        });
                    }
                    Err(mut failed) => match failed.take_message() {
                        // Never written: the upstream had closed this idle connection.
                        Some(unsent) if reused => {
                            let error = failed.error();
                            tracing::debug!(%error, "idle upstream connection closed; next one");
                            request = unsent;
                            tries += 1;
                        }
                        _ => return Err(UpstreamError::Exchange(failed.into_error())),
                    },
                }
            }
        }
    }

    /// A new connection to `target`, HTTP/1.1 ready to send, or as dialed if it chose h2.
    async fn dial(&self, scheme: &Scheme, target: &Target) -> Result<Dialed, UpstreamError> {
        let uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(&*target.authority)
            .path_and_query("/")
            .build()
            // The authority came from a parsed URI, so this does not fail; if it did, it has
            // no usable host.
            .map_err(|_| {
                UpstreamError::Connect(ConnectError::NoHost(target.authority.to_string()))
            })?;
        let mut connector = self.shared.connector.clone();
        let conn = connector.call(uri).await.map_err(UpstreamError::Connect)?;
        if conn.is_h2() {
            return Ok(Dialed::H2(Box::new(conn)));
        }
        Ok(Dialed::Http1(Box::new(conn)))
    }
}

/// `request` as a stream on the lane's h2 connections (in absolute form, as h2 needs): `Ok` with
/// the answer, or `Err` with the request back, unsent, when the host speaks HTTP/1.1 now.
async fn via_h2(
    h2: &H2Lane,
    mut request: Request<UpstreamBody>,
    scheme: &Scheme,
    authority: &str,
) -> Result<Result<Exchanged, Downgraded>, UpstreamError> {
    absolute_form(&mut request, scheme, authority);
    Ok(Exchanged::from_h2(h2.send(request).await?).map_err(|downgraded| *downgraded))
}

/// hyper's HTTP/1.1 client over `conn`, its connection task spawned on this runtime (the lane's
/// own worker in production).
async fn handshake(conn: UpstreamConn) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
    let (sender, connection) = Builder::new()
        .handshake(conn)
        .await
        .map_err(UpstreamError::Exchange)?;
    // Outside the request's span: the connection outlives it.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(error = %error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A fresh HTTP/1.1 connection for a request: popgate's codec for a bodiless one, else hyper's.
async fn start(conn: Box<UpstreamConn>, bodiless: bool) -> Result<IdleConn, UpstreamError> {
    if bodiless {
        Ok(IdleConn::Own(OwnConn::new(conn)))
    } else {
        Ok(IdleConn::Hyper(handshake(*conn).await?))
    }
}

/// A fresh connection: HTTP/1.1, or h2 for the lane's h2 connections.
enum Dialed {
    Http1(Box<UpstreamConn>),
    /// Boxed: the TLS stream is over a kilobyte, and it only passes through to the h2 lane.
    H2(Box<UpstreamConn>),
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a holder panicked between pointer moves; the lists are
        // whole (at worst a connection is missing, and closed).
        lock_unpoisoned(&self.state)
    }

    /// The lane's entry for `authority` (made if new) and its newest idle connection that is
    /// still open and ready, if any. With none, on `first_contact`: the probe of the host's
    /// protocol to wait for, or to lead (see [`Http1Lane::send`]).
    fn checkout(
        self: &Arc<Self>,
        authority: &str,
        first_contact: bool,
    ) -> (Arc<Target>, Option<IdleConn>, Option<Probe>) {
        let mut state = self.state();
        let host = match state
            .hosts
            .iter()
            .position(|h| &*h.target.authority == authority)
        {
            Some(at) => &mut state.hosts[at],
            None => state.insert(Arc::new(Target {
                authority: authority.into(),
                host: host_header(authority),
            })),
        };
        let sender = self.pop_ready(host);
        let probe = match (&sender, &host.probing) {
            (Some(_), _) => None,
            _ if !first_contact => None,
            (None, Some(probing)) => Some(Probe::Wait(Arc::clone(probing).notified_owned())),
            (None, None) => {
                let probing = Arc::new(Notify::new());
                host.probing = Some(Arc::clone(&probing));
                Some(Probe::Lead(ProbeLead {
                    lane: Arc::clone(self),
                    target: Arc::clone(&host.target),
                    probing,
                }))
            }
        };
        (Arc::clone(&host.target), sender, probe)
    }

    /// `target`'s newest idle connection that is still open and ready, if any.
    fn reuse(&self, target: &Arc<Target>) -> Option<IdleConn> {
        let mut state = self.state();
        let host = state.hosts.iter_mut().find(|h| h.is(target))?;
        self.pop_ready(host)
    }

    fn pop_ready(&self, host: &mut HostIdle) -> Option<IdleConn> {
        while let Some(mut idle) = host.stack.pop() {
            // Closed by the upstream, or past its idle time (the timer may not have run yet):
            // dropped, which closes it.
            if idle.since.elapsed() < self.idle_timeout && idle.conn.is_ready() {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Puts `sender` back as `target`'s newest idle connection, and starts the expiry timer if
    /// it is not running.
    fn put_back(self: &Arc<Self>, target: Arc<Target>, conn: IdleConn) {
        let idle = Idle {
            conn,
            since: Instant::now(),
        };
        let mut state = self.state();
        match state.hosts.iter_mut().find(|h| h.is(&target)) {
            Some(host) => host.stack.push(idle),
            None => state.insert(target).stack.push(idle),
        }
        if !state.reaping {
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                // No timer without a runtime: keep nothing that could idle forever.
                state.hosts.iter_mut().for_each(|h| h.stack.clear());
                return;
            };
            state.reaping = true;
            runtime.spawn(reap(Arc::downgrade(self)));
        }
    }

    /// Closes the connections idle since `now - idle_timeout` or longer; the time the next one
    /// expires, or `None` (and the timer stops) when none is left.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        let mut next: Option<Instant> = None;
        for host in &mut state.hosts {
            // Oldest first: the stack grows at its end.
            let live = host
                .stack
                .iter()
                .position(|idle| now.duration_since(idle.since) < self.idle_timeout)
                .unwrap_or(host.stack.len());
            host.stack.drain(..live);
            if let Some(oldest) = host.stack.first() {
                let due = oldest.since + self.idle_timeout;
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        if next.is_none() {
            state.reaping = false;
        }
        next
    }
}

impl State {
    /// Adds `target` with no idle connection, making room past [`MAX_IDLE_HOSTS`].
    fn insert(&mut self, target: Arc<Target>) -> &mut HostIdle {
        if self.hosts.len() >= MAX_IDLE_HOSTS {
            // A host with nothing idle first, else the one whose newest connection is oldest.
            let victim = self
                .hosts
                .iter()
                .enumerate()
                .min_by_key(|(_, h)| h.stack.last().map(|idle| idle.since))
                .map(|(at, _)| at);
            if let Some(at) = victim {
                self.hosts.swap_remove(at);
            }
        }
        self.hosts.push(HostIdle {
            target,
            stack: Vec::new(),
            probing: None,
        });
        let last = self.hosts.len() - 1;
        &mut self.hosts[last]
    }
}

/// The lane's expiry timer: wakes when the oldest idle connection is due, until none is left
/// or the lane (its client) is gone.
async fn reap(lane: Weak<Shared>) {
    loop {
        let next = match lane.upgrade() {
            Some(lane) => lane.expire(Instant::now()),
            None => return,
        };
        let Some(due) = next else { return };
        tokio::time::sleep_until(due.into()).await;
    }
}

impl Lease {
    /// The response body ended complete: the connection goes back to the pool once hyper has
    /// finished with it, then `admission`'s slot is freed (in that order, so the request the
    /// slot lets in finds the connection idle).
    pub(crate) fn give_back(self, admission: Option<Admission>) {
        let Lease {
            mut sender,
            target,
            lane,
        } = self;
        if sender.is_ready() {
            lane.put_back(target, IdleConn::Hyper(sender));
            drop(admission);
            return;
        }
        if sender.is_closed() {
            return;
        }
        // Not yet idle (the connection task has not run since the body's end, or it is still
        // writing the request body): wait for it, holding the slot as the connection is busy.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let wait = lane.idle_timeout;
        runtime.spawn(async move {
            let _slot = admission;
            if let Ok(Ok(())) = tokio::time::timeout(wait, sender.ready()).await {
                lane.put_back(target, IdleConn::Hyper(sender));
            }
        });
    }
}

/// The request target in origin form (`/path?query`), and `Host` unless the request has one:
/// what hyper-util's client writes on an HTTP/1.1 connection. Returns the absolute URI it
/// replaced, if the request had one.
fn origin_form(request: &mut Request<UpstreamBody>, target: &Target) -> Option<Uri> {
    let mut absolute = None;
    if request.uri().authority().is_some() {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.path_and_query = Some(path);
        // Only a path: cannot fail; kept as it was if it did.
        if let Ok(uri) = Uri::from_parts(parts) {
            absolute = Some(std::mem::replace(request.uri_mut(), uri));
        }
    }
    if let Some(host) = &target.host {
        request
            .headers_mut()
            .entry(HOST)
            .or_insert_with(|| host.clone());
    }
    absolute
}

/// Back to the absolute `scheme://authority/path` form an h2 request needs (after an
/// attempt on a reused HTTP/1.1 connection put it in origin form). No change if absolute.
fn absolute_form(request: &mut Request<UpstreamBody>, scheme: &Scheme, authority: &str) {
    if request.uri().authority().is_some() {
        return;
    }
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", PathAndQuery::as_str);
    if let Ok(uri) = Uri::builder()
        .scheme(scheme.clone())
        .authority(authority)
        .path_and_query(path)
        .build()
    {
        *request.uri_mut() = uri;
    }
}

/// `Host` for `authority` by hyper-util's rule: the host, `:port` only when not 443.
fn host_header(authority: &str) -> Option<HeaderValue> {
    let authority: http::uri::Authority = authority.parse().ok()?;
    match authority.port_u16() {
        Some(port) if port != HTTPS_PORT => {
            HeaderValue::from_str(&format!("{}:{port}", authority.host())).ok()
        }
        _ => HeaderValue::from_str(authority.host()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_the_authority_without_port_443() {
        let host = |a: &str| host_header(a).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(host("svc.example").as_deref(), Some("svc.example"));
        assert_eq!(host("svc.example:443").as_deref(), Some("svc.example"));
        assert_eq!(
            host("svc.example:8443").as_deref(),
            Some("svc.example:8443")
        );
        assert_eq!(host("[::1]:8443").as_deref(), Some("[::1]:8443"));
        assert_eq!(host("[::1]:443").as_deref(), Some("[::1]"));
        assert_eq!(host(""), None);
    }

    fn request(uri: &str) -> Request<UpstreamBody> {
        let mut request = Request::new(UpstreamBody::empty());
        *request.uri_mut() = uri.parse().unwrap();
        request
    }

    /// First contact: requests that find the protocol probe in progress wait for it rather
    /// than dial too; when the probing request is dropped (its caller went away, its timeout
    /// ran out), the waiters go on and dial their own (the protocol is still unknown).
    #[tokio::test]
    async fn first_contact_waits_for_one_dial_and_a_dropped_probe_lets_the_waiters_go() {
        use std::sync::atomic::Ordering;

        use crate::net::h2_stream::H2Windows;
        use crate::net::test_support::{accepts, connector_to, silent};

        let (addr, accepted) = silent().await;
        let connector = connector_to(addr);
        let idle = Duration::from_secs(60);
        let lane = Http1Lane::new(connector.clone(), idle);
        let windows = H2Windows {
            stream: 65_535,
            connection: 65_535,
        };
        let h2 = H2Lane::new(connector, idle, windows);
        let send = || {
            let (lane, h2) = (lane.clone(), h2.clone());
            tokio::spawn(async move {
                let request = request("https://up.test/x");
                lane.send(&h2, request, true, Keeper::new(None))
                    .await
                    .map(|_| ())
            })
        };
        let first = send();
        accepts(&accepted, 1).await;
        let waiters: Vec<_> = (0..3).map(|_| send()).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the waiters dialed too");
        first.abort();
        accepts(&accepted, 4).await;
        for waiter in waiters {
            waiter.abort();
        }
    }

    #[test]
    fn the_request_target_goes_origin_form_and_back() {
        let target = Target {
            authority: "svc.example:8443".into(),
            host: host_header("svc.example:8443"),
        };
        let mut r = request("https://svc.example:8443/a/b?c=d");
        let replaced = origin_form(&mut r, &target);
        assert_eq!(r.uri(), "/a/b?c=d");
        assert_eq!(replaced.unwrap(), "https://svc.example:8443/a/b?c=d");
        assert!(
            origin_form(&mut r, &target).is_none(),
            "already in origin form"
        );
        assert_eq!(r.headers()[HOST], "svc.example:8443");
        absolute_form(&mut r, &Scheme::HTTPS, &target.authority);
        assert_eq!(r.uri(), "https://svc.example:8443/a/b?c=d");
        // A `Host` already there (the route's prepared one) is kept; an empty path is `/`.
        let mut r = request("https://svc.example:8443");
        r.headers_mut()
            .insert(HOST, HeaderValue::from_static("prepared"));
        origin_form(&mut r, &target);
        assert_eq!(r.uri(), "/");
        assert_eq!(r.headers()[HOST], "prepared");
    }
}
