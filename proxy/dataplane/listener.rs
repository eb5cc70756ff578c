//! Accept loops: plain TCP (HTTP/1.1, and h2c with prior knowledge) and TLS (h1 or h2 by ALPN,
//! optionally requiring a client certificate). Each connection is served by hyper-util's auto
//! builder and watched for graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::forward::Forwarder;

/// Default bound on a caller's TLS handshake, so half-open connections cannot pile up.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a caller's HTTP/1 connection may take to send a request head (also bounds idle
/// keep-alive connections, which wait for the next head).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
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
    /// Bound on waiting for an HTTP/1 request head (idle keep-alive included).
    pub idle_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// What an accept loop needs besides its socket.
pub(crate) struct AcceptContext {
    pub forwarder: Forwarder,
    pub tls: Option<TlsAcceptor>,
    pub settings: ConnectionSettings,
    pub shutdown: watch::Receiver<bool>,
}

/// Accepts until shutdown is signalled, then asks every open connection to finish its in-flight
/// requests and close, and returns once they all have.
pub(crate) async fn accept_loop(listener: TcpListener, mut ctx: AcceptContext) {
    let local = listener.local_addr().ok();
    let graceful = GracefulShutdown::new();
    loop {
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
                let forwarder = ctx.forwarder.clone();
                let tls = ctx.tls.clone();
                let settings = ctx.settings.clone();
                let watcher = graceful.watcher();
                tokio::spawn(serve(stream, peer, tls, forwarder, settings, watcher));
            }
            Err(e) => {
                tracing::warn!(error = %e, listener = ?local, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    tracing::debug!(listener = ?local, open = graceful.count(), "listener stopped accepting");
    graceful.shutdown().await;
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    forwarder: Forwarder,
    settings: ConnectionSettings,
    watcher: Watcher,
) {
    match tls {
        None => serve_io(TokioIo::new(stream), 80, forwarder, &settings, watcher).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(settings.tls_handshake_timeout, acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(tls)) => {
                    serve_io(TokioIo::new(tls), 443, forwarder, &settings, watcher).await
                }
                Ok(Err(e)) => {
                    tracing::info!(peer = %peer, error = %e, "caller TLS handshake failed")
                }
                Err(_) => tracing::info!(peer = %peer, "caller TLS handshake timed out"),
            }
        }
    }
}

async fn serve_io<I>(
    io: TokioIo<I>,
    default_port: u16,
    forwarder: Forwarder,
    settings: &ConnectionSettings,
    watcher: Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let forwarder = forwarder.clone();
        async move { Ok::<_, Infallible>(forwarder.handle(request, default_port).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.idle_timeout);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(io, service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(error = %e, "caller connection ended with an error");
    }
}
