//! One caller connection: the TLS handshake on TLS listeners (the client certificate's names read
//! once for the routes' `allow` rules), the opening bytes watched for the phase deadlines, the
//! HTTP/1 framing guard on the read side, hyper's h1/h2 limits set explicitly, and each request
//! handed to the forwarder (and counted in flight until its response body ends).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Either;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::activity::{Activity, InFlightBody};
use super::framing_guard::FramingGuard;
use super::intercept::{self, Interceptor, Opened};
use super::listener::ConnectionSettings;
use super::opening::Opening;
use super::parking::{Parking, RequestBoundary, Woke};
use super::progress::Deadlines;
use super::request::Forwarder;
use super::request::{Connection, RequestRules};
use super::stream_deadline::StreamDeadline;
use crate::access::{Caller, CallerCert};
use crate::config::limits::MIN_MAX_HEADER_BYTES;
use crate::metrics;

/// hyper's built-in HTTP/1 header-line cap; setting it explicitly moves hyper's header array from
/// the stack to the heap (about 5% per request, per hyper's docs), so it is set only when the
/// configured cap differs.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The default port of a target that names none: plain listeners and Unix sockets speak `http`.
pub(crate) const PLAIN_DEFAULT_PORT: u16 = 80;
/// The default port of a target that names none on a TLS listener (`https`).
pub(crate) const TLS_DEFAULT_PORT: u16 = 443;

/// What serving a caller connection needs; cloned per connection (two `Arc`s).
#[derive(Clone, Debug)]
pub(crate) struct CallerService {
    /// What serving HTTP needs, built once and shared by every connection.
    pub http: Arc<Http>,
    /// CONNECT interception, on listeners that opt in.
    pub intercept: Option<Arc<Interceptor>>,
}

/// The forwarder, the connection settings and hyper's HTTP/1 builder made from them: built once
/// and shared, so that a connection (a parked one too: issue 13) keeps one pointer to them rather
/// than its own copy of each.
#[derive(Debug)]
pub(crate) struct Http {
    pub forwarder: Forwarder,
    pub settings: ConnectionSettings,
    h1: http1::Builder,
    /// The request head cap hyper and the framing guard apply.
    head_cap: usize,
    /// What each request is checked against, shared by every connection's [`Connection`].
    rules: Arc<RequestRules>,
}

impl Http {
    pub(crate) fn new(forwarder: Forwarder, settings: ConnectionSettings) -> Self {
        let limits = settings.limits;
        let head_cap = limits.max_header_bytes.max(MIN_MAX_HEADER_BYTES);
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout)
            // The read buffer bounds the request head: a longer head gets 431 from hyper.
            .max_buf_size(head_cap);
        if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
            h1.max_headers(limits.max_headers);
        }
        let rules = Arc::new(RequestRules {
            limits,
            request_body_timeout: Some(settings.request_body_timeout),
        });
        Self {
            forwarder,
            settings,
            h1,
            head_cap,
            rules,
        }
    }
}

/// A connection's whole service, boxed once: [`serve_tcp`] and [`serve_io`] pick the branch and
/// return its future rather than awaiting it, since an `async fn` keeps its arguments for its
/// whole life, so every layer would hold another copy of the connection's `CallerService` and
/// IO, in every idle (parked) connection's task.
pub(crate) type Served = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves a TCP connection: over TLS when `tls` is given (a failed handshake closes it; the
/// accept loop's watchdog bounds a slow one), plain otherwise.
pub(crate) fn serve_tcp(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    service: CallerService,
    watcher: Watcher,
    activity: Arc<Activity>,
) -> Served {
    let caller = Caller {
        addr: Some(peer),
        ..Caller::default()
    };
    let Some(acceptor) = tls else {
        return serve_io(
            stream,
            caller,
            PLAIN_DEFAULT_PORT,
            service,
            watcher,
            activity,
        );
    };
    // A future of its own: a plain connection carries no room for the TLS handshake and stream.
    Box::pin(serve_tls(
        stream, caller, acceptor, service, watcher, activity,
    ))
}

/// [`serve_tcp`] on a TLS listener: the handshake, the client certificate's names, then HTTP.
async fn serve_tls(
    stream: TcpStream,
    mut caller: Caller,
    acceptor: TlsAcceptor,
    service: CallerService,
    watcher: Watcher,
    activity: Arc<Activity>,
) {
    let tls = match acceptor.accept(stream).await {
        Ok(tls) => tls,
        Err(e) => {
            tracing::info!(error = %e, "caller TLS handshake failed");
            return;
        }
    };
    activity.handshake_done();
    // rustls has verified the chain (mTLS listeners); read the leaf's names once per connection
    // for the routes' `allow` rules.
    if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        match CallerCert::from_der(leaf) {
            Ok(cert) => {
                tracing::Span::current().record("cert", tracing::field::display(&cert.subject));
                caller.cert = Some(Arc::new(cert));
            }
            Err(e) => {
                tracing::info!(error = %e, "caller certificate unreadable; connection closed");
                return;
            }
        }
    }
    serve_io(tls, caller, TLS_DEFAULT_PORT, service, watcher, activity).await
}

/// Serves HTTP/1.1 or HTTP/2 on an established connection from `caller` until it closes or the
/// graceful drain ends it. `default_port` is the port a request target without one means. Its
/// opening bytes and requests in flight are reported to `activity` for the watchdog and eviction.
/// On an intercepting listener a connection opening with CONNECT becomes a tunnel whose requests
/// are served the same way (see `intercept/`).
pub(crate) fn serve_io<I>(
    io: I,
    caller: Caller,
    default_port: u16,
    service: CallerService,
    watcher: Watcher,
    activity: Arc<Activity>,
) -> Served
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(interceptor) = service.intercept.clone() else {
        return Box::pin(serve_http(
            io,
            caller,
            default_port,
            None,
            service,
            watcher,
            activity,
        ));
    };
    // A future of its own, like the TLS branch in `serve_tcp`: the tunnel's TLS stream and its
    // HTTP connection take no room in a connection that does not intercept.
    Box::pin(serve_intercepting(
        io,
        caller,
        default_port,
        interceptor,
        service,
        watcher,
        activity,
    ))
}

/// [`serve_io`] on an intercepting listener: a connection opening with CONNECT becomes a tunnel.
async fn serve_intercepting<I>(
    io: I,
    caller: Caller,
    default_port: u16,
    interceptor: Arc<Interceptor>,
    service: CallerService,
    watcher: Watcher,
    activity: Arc<Activity>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let table = service.http.forwarder.table();
    let opened = intercept::open(
        io,
        &caller,
        table,
        &service.http.settings,
        &interceptor,
        &activity,
    )
    .await;
    match opened {
        Opened::Plain(io) => {
            serve_http(io, caller, default_port, None, service, watcher, activity).await;
        }
        Opened::Tunnel { tls, host } => {
            let port = TLS_DEFAULT_PORT;
            serve_http(tls, caller, port, Some(host), service, watcher, activity).await;
        }
        Opened::Closed => {}
    }
}

/// [`serve_io`] once the connection carries HTTP; `tunnel`: the host of the CONNECT tunnel the
/// requests arrive in, which each of them must name.
///
/// Not an `async fn`: it sets the connection up and returns [`serve_parked`]'s future, which
/// keeps only what serving needs (an `async fn` would keep its arguments too, `CallerService`
/// among them, in every parked connection).
fn serve_http<I>(
    io: I,
    caller: Caller,
    default_port: u16,
    tunnel: Option<Box<str>>,
    service: CallerService,
    watcher: Watcher,
    activity: Arc<Activity>,
) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = service.http;
    let settings = &http.settings;
    let limits = settings.limits;
    let io = Opening::new(io, Arc::clone(&activity));
    let (io, verdict) = FramingGuard::new(io, http.head_cap, limits.max_body_bytes);
    let io = Deadlines::new(
        io,
        settings.request_body_timeout,
        settings.response_body_timeout,
    );
    let rules = Arc::clone(&http.rules);
    let connection = Connection::new(caller, default_port, rules, verdict).in_tunnel(tunnel);
    let connection = Arc::new(connection);
    let io = Parking::new(io, Arc::clone(&activity));
    serve_parked(io, http, connection, watcher, activity)
}

/// The service hyper calls for each request of `connection`: the forwarder's answer, its body
/// counted in flight until it ends. Made for each burst of requests (three `Arc` clones), so a
/// parked connection keeps none of it.
fn caller_service(
    http: &Arc<Http>,
    connection: &Arc<Connection>,
    activity: &Arc<Activity>,
) -> impl hyper::service::Service<
    hyper::Request<Incoming>,
    Response = hyper::Response<
        impl hyper::body::Body<Data: Send, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static,
    >,
    Error = Infallible,
    Future: Unpin + Send + 'static,
> + Clone
+ Unpin
+ Send
+ 'static {
    let http = Arc::clone(http);
    let connection = Arc::clone(connection);
    let requests = Arc::clone(activity);
    service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = requests.request();
        // HTTP/1's response deadline is on the connection's writes; an HTTP/2 stream gets its own.
        let stream_deadline = (request.version() == http::Version::HTTP_2)
            .then_some(http.settings.response_body_timeout);
        // The answer's body is wrapped by `serve`'s own future: wrapping it in an `async` block
        // here would hold that future twice (captured, then awaited), and the copy into the box
        // below would be twice as large (benches/MICRO.md, issue 13).
        let answer = http
            .forwarder
            .serve(Arc::clone(&connection), request, move |response| {
                Ok::<_, Infallible>(response.map(|body| {
                    let body = InFlightBody::new(body, in_flight);
                    match stream_deadline {
                        Some(limit) => Either::Right(StreamDeadline::new(body, limit)),
                        None => Either::Left(body),
                    }
                }))
            });
        // Boxed: hyper's HTTP/1 dispatcher allocates a slot the size of this future once per
        // connection and keeps it while the connection idles; boxed, the slot is one pointer and
        // the future's memory exists only while a request is served (benches/README.md, memory).
        Box::pin(answer)
    })
}

/// Serves a connection from its first bytes: HTTP/2 as it comes; HTTP/1 in bursts, each on a
/// fresh hyper connection built with `http`'s builder and a fresh [`caller_service`], parked in
/// between. The header read timeout also bounds an idle HTTP/1 connection.
// An `async` block on purpose (see inside), which `clippy::manual_async_fn` would undo.
#[allow(clippy::manual_async_fn)]
fn serve_parked<I>(
    mut io: Parking<I>,
    http: Arc<Http>,
    connection: Arc<Connection>,
    watcher: Watcher,
    activity: Arc<Activity>,
) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + RequestBoundary + Unpin + Send + 'static,
{
    // An `async` block, not an `async fn`: it uses the arguments where they were captured,
    // where an `async fn` would also keep a moved copy of each in its state.
    async move {
        // Parked until its first bytes, which tell HTTP/2 prior knowledge from HTTP/1.
        match park(&mut io, &activity, true).await {
            Woke::Closed => return,
            // Boxed: only HTTP/2 connections need room for hyper's HTTP/2 connection.
            Woke::Http2 => {
                let service = caller_service(&http, &connection, &activity);
                return Box::pin(serve_h2(io, service, &http.settings, watcher)).await;
            }
            Woke::Http1 => {}
        }
        activity.parks_http1(http.settings.header_read_timeout);
        // Once per connection: the watchdog, polled before the first bytes, sleeps until the
        // first-byte deadline; a poll of the task now lets it see the parking wake-up instead.
        tokio::task::yield_now().await;
        // Each burst of requests gets a fresh hyper connection, dropped (with its buffers) when the
        // connection is parked; `watcher` (an argument) lives as long as this future, for the
        // drain's count.
        loop {
            io.unpark();
            activity.set_parked(false);
            // Boxed: the parked connection's future keeps a pointer, not room for hyper's connection.
            let service = caller_service(&http, &connection, &activity);
            let conn = Box::new(http.h1.serve_connection(TokioIo::new(io), service));
            // Only the IO and unparsed bytes are kept: the rest of hyper's parts goes now.
            let (back, read_buf) = match drive(conn, &activity).await {
                Ok(parts) => (parts.io, parts.read_buf),
                Err(e) => {
                    tracing::debug!(error = %e, "caller connection ended with an error");
                    return;
                }
            };
            io = back.into_inner();
            if !io.parked() {
                // hyper ended the connection (the caller closed, `Connection: close`, the drain):
                // shut it down as hyper would have, bounded by the response deadline in `Deadlines`.
                let _ = io.shutdown().await;
                return;
            }
            io.rewind(read_buf);
            io.release();
            activity.set_parked(true);
            metrics::connections::parked();
            tracing::debug!("idle caller connection parked");
            if park(&mut io, &activity, false).await != Woke::Http1 {
                return;
            }
        }
    }
}

/// Waits, parked, for the connection's next bytes; a drain closes a parked connection at once
/// ([`Activity::drain`] wakes the task, and each poll looks).
async fn park<I>(io: &mut Parking<I>, activity: &Activity, detect: bool) -> Woke
where
    I: AsyncRead + Unpin,
{
    io.wait(detect, || activity.draining()).await
}

/// Serves one burst of HTTP/1 requests until hyper lets go of the connection (parked, closed by
/// the caller, or ended), and hands back its IO. On drain the connection finishes the request in
/// flight (its answer says `Connection: close`) and ends.
async fn drive<I, S>(
    mut conn: Box<http1::Connection<I, S>>,
    activity: &Activity,
) -> hyper::Result<http1::Parts<I, S>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming> + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut draining = false;
    std::future::poll_fn(|cx| {
        // [`Activity::drain`] wakes the task: each poll looks.
        if !draining && activity.draining() {
            Pin::new(&mut *conn).graceful_shutdown();
            draining = true;
        }
        conn.poll_without_shutdown(cx)
    })
    .await?;
    Ok(conn.into_parts())
}

/// An HTTP/2 connection: hyper-util's auto builder with popgate's HTTP/2 settings (it reads the
/// preface again from the parked bytes), drained by `watcher`.
async fn serve_h2<I, S, B>(io: I, service: S, settings: &ConnectionSettings, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let h2 = &settings.h2;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_concurrent_streams)
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(h2.max_local_error_reset_streams)
        .max_header_list_size(u32::try_from(settings.limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(h2.keep_alive_interval)
        .keep_alive_timeout(h2.keep_alive_timeout);
    let served = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(served.into_owned()).await {
        tracing::debug!(error = %e, "caller connection ended with an error");
    }
}
