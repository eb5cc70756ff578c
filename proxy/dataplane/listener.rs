//! Accept loops: plain TCP (HTTP/1.1, and h2c with prior knowledge) and TLS (h1 or h2 by ALPN,
//! optionally requiring a client certificate). Each connection is served by hyper-util's auto
//! builder and watched for graceful shutdown. Every request passes `limits::check_request` and
//! the HTTP/1 framing guard before it reaches the forwarder.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Either;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use super::forward::Forwarder;
use super::framing_guard::FramingGuard;
use super::limits::{RequestLimits, check_request};
use crate::access::{Caller, CallerCert};
use crate::config::limits::{
    DEFAULT_H2_KEEP_ALIVE_INTERVAL, DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
    DEFAULT_H2_MAX_CONCURRENT_STREAMS, DEFAULT_H2_MAX_LOCAL_ERROR_RESET_STREAMS,
    DEFAULT_H2_MAX_PENDING_ACCEPT_RESET_STREAMS, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_TLS_HANDSHAKE_TIMEOUT, MIN_MAX_HEADER_BYTES,
};

/// hyper's built-in HTTP/1 header-line cap; setting it explicitly moves hyper's header array from
/// the stack to the heap (about 5% per request, per hyper's docs), so it is set only when the
/// configured cap differs.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Why a TLS listener configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ListenerTlsError {
    #[error("listener certificate/key rejected: {0}")]
    Certificate(rustls::Error),
    #[error("listener client CA set cannot verify clients: {0}")]
    ClientCa(String),
    #[error("cannot build the TLS server configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a listener's TLS config: h2 and http/1.1 by ALPN; when `client_ca` is given, callers
/// must present a certificate issued by one of those CAs.
pub fn server_tls_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, ListenerTlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ListenerTlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(ListenerTlsError::Certificate)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Per-connection settings for the accept loops.
#[derive(Clone, Debug)]
pub struct ConnectionSettings {
    /// Bound on a caller's TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Bound on receiving an HTTP/1 request head (idle keep-alive included).
    pub header_read_timeout: Duration,
    /// Most open caller connections per listener; further callers wait in the listen backlog.
    pub max_connections: usize,
    /// Limits on each request.
    pub limits: RequestLimits,
    /// HTTP/2 settings.
    pub h2: H2Settings,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            limits: RequestLimits::default(),
            h2: H2Settings::default(),
        }
    }
}

impl ConnectionSettings {
    /// The defaults with every key set in the config's `limits:` applied.
    pub fn with_limits(limits: &crate::config::model::Limits) -> Self {
        let mut s = Self::default();
        let l = &mut s.limits;
        l.max_headers = limits.max_headers.unwrap_or(l.max_headers);
        l.max_header_bytes = limits.max_header_bytes.unwrap_or(l.max_header_bytes);
        l.max_uri_bytes = limits.max_uri_bytes.unwrap_or(l.max_uri_bytes);
        l.max_body_bytes = limits.max_body_bytes.or(l.max_body_bytes);
        s.max_connections = limits.max_connections.unwrap_or(s.max_connections);
        s.header_read_timeout = limits.header_read_timeout.unwrap_or(s.header_read_timeout);
        s.h2.max_concurrent_streams = limits
            .h2_max_concurrent_streams
            .unwrap_or(s.h2.max_concurrent_streams);
        s
    }
}

/// HTTP/2 limits for caller connections.
#[derive(Clone, Debug)]
pub struct H2Settings {
    /// Streams open at once per connection (advertised in SETTINGS; more are refused).
    pub max_concurrent_streams: u32,
    /// Streams reset by the caller before being accepted, before GOAWAY (rapid reset).
    pub max_pending_accept_reset_streams: usize,
    /// Streams reset by popgate for caller errors, before GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// PING interval on caller connections.
    pub keep_alive_interval: Duration,
    /// Time to answer a PING.
    pub keep_alive_timeout: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS,
            max_pending_accept_reset_streams: DEFAULT_H2_MAX_PENDING_ACCEPT_RESET_STREAMS,
            max_local_error_reset_streams: DEFAULT_H2_MAX_LOCAL_ERROR_RESET_STREAMS,
            keep_alive_interval: DEFAULT_H2_KEEP_ALIVE_INTERVAL,
            keep_alive_timeout: DEFAULT_H2_KEEP_ALIVE_TIMEOUT,
        }
    }
}

/// What an accept loop needs besides its socket.
pub(crate) struct AcceptContext {
    pub forwarder: Forwarder,
    pub tls: Option<TlsAcceptor>,
    pub settings: ConnectionSettings,
    pub shutdown: watch::Receiver<bool>,
    /// Told the number of open connections once the listening socket is closed on shutdown.
    pub stopped: Option<tokio::sync::oneshot::Sender<usize>>,
}

/// Accepts until shutdown is signalled, then asks every open connection to finish its in-flight
/// requests and close, and returns once they all have.
///
/// At most `max_connections` connections are open at once. Beyond that the loop stops calling
/// `accept` until one closes: further callers wait in the kernel's listen backlog (and then get
/// refused by the kernel) instead of being accepted and dropped, which would cost a handshake
/// each and teach clients to retry in a tight loop.
pub(crate) async fn accept_loop(listener: TcpListener, mut ctx: AcceptContext) {
    let local = listener.local_addr().ok();
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(ctx.settings.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit,
            _ = ctx.shutdown.changed() => break,
        };
        // The semaphore is never closed, so acquiring only fails if it were.
        let Ok(permit) = permit else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = ctx.shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Responses are written in one flush per head; do not let Nagle delay them.
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                if slots.available_permits() == 0 {
                    tracing::info!(listener = ?local, max = ctx.settings.max_connections, "connection cap reached; new callers wait");
                }
                let conn = Conn {
                    caller: Caller {
                        addr: Some(peer),
                        ..Caller::default()
                    },
                    forwarder: ctx.forwarder.clone(),
                    settings: ctx.settings.clone(),
                    watcher: graceful.watcher(),
                };
                let tls = ctx.tls.clone();
                tokio::spawn(async move {
                    serve(stream, tls, conn).await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, listener = ?local, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    // Closing the socket now makes new callers get "connection refused" at once instead of
    // waiting in a backlog no one accepts from any more.
    drop(listener);
    let open = graceful.count();
    tracing::debug!(listener = ?local, open, "listener stopped accepting");
    if let Some(stopped) = ctx.stopped.take() {
        let _ = stopped.send(open);
    }
    graceful.shutdown().await;
}

/// One accepted connection.
pub(crate) struct Conn {
    /// Who connected; completed with the client certificate after a TLS handshake.
    pub caller: Caller,
    pub forwarder: Forwarder,
    pub settings: ConnectionSettings,
    pub watcher: Watcher,
}

async fn serve(stream: TcpStream, tls: Option<TlsAcceptor>, mut conn: Conn) {
    match tls {
        None => serve_io(stream, 80, conn).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(conn.settings.tls_handshake_timeout, acceptor.accept(stream))
                    .await;
            match handshake {
                Ok(Ok(tls)) => {
                    // rustls has verified the chain (mTLS listeners); read the leaf's names once
                    // per connection for the routes' `allow` rules.
                    if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first())
                    {
                        match CallerCert::from_der(leaf) {
                            Ok(cert) => conn.caller.cert = Some(Arc::new(cert)),
                            Err(e) => {
                                tracing::info!(caller = %conn.caller, error = %e, "caller certificate unreadable; connection closed");
                                return;
                            }
                        }
                    }
                    serve_io(tls, 443, conn).await
                }
                Ok(Err(e)) => {
                    tracing::info!(caller = %conn.caller, error = %e, "caller TLS handshake failed")
                }
                Err(_) => tracing::info!(caller = %conn.caller, "caller TLS handshake timed out"),
            }
        }
    }
}

pub(crate) async fn serve_io<I>(io: I, default_port: u16, conn: Conn)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        caller,
        forwarder,
        settings,
        watcher,
    } = conn;
    let limits = settings.limits;
    let head_cap = limits.max_header_bytes.max(MIN_MAX_HEADER_BYTES);
    let (io, verdict) = FramingGuard::new(io, head_cap, limits.max_body_bytes);
    let requests = Arc::new(AtomicU64::new(0));
    let caller = Arc::new(caller);
    let service_caller = Arc::clone(&caller);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let forwarder = forwarder.clone();
        let caller = Arc::clone(&service_caller);
        // HTTP/1 requests arrive in order, one at a time, so this index matches the guard's.
        let index = requests.fetch_add(1, Ordering::Relaxed);
        let verdict = Arc::clone(&verdict);
        let refused = verdict
            .refusal(index)
            .map_or_else(|| check_request(&request, &limits), Err);
        async move {
            if let Err(refusal) = refused {
                tracing::info!(
                    caller = %caller,
                    status = refusal.status().as_u16(),
                    reason = %refusal,
                    "request refused before forwarding"
                );
                return Ok::<_, Infallible>(refusal.response().map(Either::Right));
            }
            let response = forwarder.handle(request, default_port, &caller).await;
            // The guard may have cut the body off while it was being forwarded: the caller then
            // learns why (413) rather than seeing the upstream's reaction to a truncated body.
            if let Some(refusal) = verdict.refusal(index) {
                tracing::info!(
                    caller = %caller,
                    status = refusal.status().as_u16(),
                    reason = %refusal,
                    "request cut off while forwarding"
                );
                return Ok(refusal.response().map(Either::Right));
            }
            Ok(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let mut h1 = builder.http1();
    h1.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        // The read buffer bounds the request head: a longer head gets 431 from hyper.
        .max_buf_size(head_cap);
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        h1.max_headers(limits.max_headers);
    }
    let h2 = &settings.h2;
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_concurrent_streams)
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(h2.max_local_error_reset_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(h2.keep_alive_interval)
        .keep_alive_timeout(h2.keep_alive_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(caller = %caller, error = %e, "caller connection ended with an error");
    }
}
