//! The token-bound resource server: TLS with a required client certificate, h1 and h2, accepting
//! `mtls_pop` tokens bound to the presented certificate (and Bearer where the audience allows),
//! echoing what it saw as JSON.

/// The PoP / Bearer access decision.
pub mod authorize;
/// Streaming upload digest and generated download bodies.
pub mod body;
/// The JSON echo of an authorized request.
pub mod echo;
mod handler;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::client_auth::peer_leaf;
use crate::faults::Faults;
use crate::observe::Observations;
use crate::signing::SigningKeys;
use crate::thumbprint::x5t_s256;

/// A handshake that has not finished by then is a stuck or hostile client.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A slow-loris client must not pin a connection task forever; real clients send headers at once.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Back off briefly after a failed accept (e.g. out of file descriptors) instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// What a resource host wants from tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audience {
    /// The `aud` tokens must carry, e.g. `https://graph.microsoft.com`.
    pub audience: String,
    pub accepts_bearer: bool,
    pub accepts_pop: bool,
}

/// Maps a request's host name (lowercase, no port) to the audience it serves.
pub type AudienceLookup = Arc<dyn Fn(&str) -> Option<Audience> + Send + Sync>;

pub(crate) struct ResourceCtx {
    pub keys: Arc<SigningKeys>,
    pub audiences: AudienceLookup,
    pub faults: Arc<Faults>,
    pub observations: Arc<Observations>,
}

/// The TCP peer of the connection a request came on (a request extension): the echo names it,
/// so a test can tell which of a client's connections carried each request.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// A running resource server. Dropping it stops the listener and closes every open connection.
#[derive(Debug)]
pub struct ResourceHandle {
    addr: SocketAddr,
    _shutdown: watch::Sender<()>,
}

impl ResourceHandle {
    /// The address the resource listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:port` (or the listener's address).
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

/// Serves the resource on `listener` with `tls` (which should require a client certificate, e.g.
/// `RequireAnyClientCert::new(true)`, and offer ALPN `h2` and `http/1.1`).
pub async fn spawn(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    keys: Arc<SigningKeys>,
    audiences: AudienceLookup,
    faults: Arc<Faults>,
    observations: Arc<Observations>,
) -> std::io::Result<ResourceHandle> {
    let addr = listener.local_addr()?;
    let (shutdown, stop) = watch::channel(());
    let ctx = Arc::new(ResourceCtx {
        keys,
        audiences,
        faults,
        observations,
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(accept_loop(listener, acceptor, ctx, stop));
    Ok(ResourceHandle {
        addr,
        _shutdown: shutdown,
    })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ctx: Arc<ResourceCtx>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "resource accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        let acceptor = acceptor.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.changed() => {}
                _ = serve_connection(stream, peer, acceptor, ctx) => {}
            }
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    ctx: Arc<ResourceCtx>,
) {
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::info!(%error, "resource TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!("resource TLS handshake timed out");
            return;
        }
    };
    let presented: Option<Arc<str>> =
        peer_leaf(tls.get_ref().1).map(|leaf| Arc::from(x5t_s256(leaf.as_ref())));
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        handler::handle(req, ctx.clone(), presented.clone())
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if let Err(error) = builder.serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(%error, "resource connection ended with an error");
    }
}
