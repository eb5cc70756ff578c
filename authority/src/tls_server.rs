//! The TLS accept loop shared by the authority's HTTPS listeners: handshake (bounded in time),
//! remember the SNI and client certificate, serve HTTP/1.1 or h2 with hyper-util, stop on signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A client that has not finished its TLS handshake by then is gone or hostile.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bounds how long a slow client may hold a connection before sending request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Load tests open many connections, but an unbounded number would exhaust file descriptors.
pub const MAX_CONNECTIONS: usize = 4096;
/// After a failed accept (typically out of descriptors), pause rather than spin on the error.
pub const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What the TLS handshake told us about the client.
#[derive(Clone, Debug, Default)]
pub struct ConnInfo {
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// The leaf certificate the client presented.
    pub peer_cert: Option<CertificateDer<'static>>,
    /// Its `x5t#S256`.
    pub peer_x5t: Option<String>,
}

/// A running listener; stops when dropped or on [`ServerHandle::shutdown`].
#[derive(Debug)]
pub struct ServerHandle {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ServerHandle {
    /// Stops accepting, closes every connection and waits for the loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves `listener` with TLS `config`, answering each request with `handler`.
/// An `Err` from the handler closes the connection without an answer.
pub fn spawn<H, Fut, E>(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    name: &'static str,
    handler: H,
) -> ServerHandle
where
    H: Fn(Arc<ConnInfo>, hyper::Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<hyper::Response<Full<Bytes>>, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let (stop, mut stopped) = watch::channel(false);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let accepted = tokio::select! {
                _ = stopped.changed() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(listener = name, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            if connections.len() >= MAX_CONNECTIONS {
                tracing::warn!(listener = name, %peer, "connection limit reached; closing");
                continue;
            }
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            connections.spawn(async move {
                let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(listener = name, %peer, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                        return;
                    }
                };
                let (_, session) = tls.get_ref();
                let peer_cert = crate::client_auth::peer_leaf(session);
                let info = Arc::new(ConnInfo {
                    sni: session.server_name().map(str::to_string),
                    peer_x5t: peer_cert
                        .as_ref()
                        .map(|c| crate::thumbprint::x5t_s256(c.as_ref())),
                    peer_cert,
                });
                let service = hyper::service::service_fn(move |req| handler(info.clone(), req));
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder
                    .http1()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT);
                if let Err(error) = builder
                    .serve_connection(TokioIo::new(tls), service)
                    .await
                {
                    tracing::debug!(listener = name, %peer, %error, "connection ended with an error");
                }
            });
        }
    });
    ServerHandle {
        stop,
        task: Some(task),
    }
}
