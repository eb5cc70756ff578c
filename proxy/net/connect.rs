//! The upstream connector: `network.resolve` overrides or DNS, TCP with a timeout and TCP_NODELAY,
//! then TLS with SNI = the upstream host. https only.
//!
//! It also bounds the pools: each connector holds, per upstream authority, a semaphore of
//! `max_connections_per_host` permits; a dial takes a permit and the connection carries it until it
//! is dropped. So a lane (one connector) never has more live upstream connections per host than
//! its cap, whatever its HTTP/1.1 pool ([`crate::net::http1_pool`]) and its h2 connections
//! ([`crate::net::h2_lane`]) hold between them (and the token transport's hyper-util client, which
//! dials whenever no idle connection is free, is capped too). A dial that cannot get a permit
//! within the connect timeout fails as "busy" (503, like a full [`crate::net::pool_gate`] line):
//! the upstream did not time out, popgate's cap was reached.
//!
//! With an outbound proxy (`network.proxy`) and a host it does not bypass, the TCP connection goes
//! to the proxy instead and carries a `CONNECT` tunnel to the real host name
//! ([`crate::net::proxy_tunnel`]); TLS then runs inside it exactly as on a direct connection.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tracing::Instrument as _;

use crate::config::limits::MAX_TRACKED_HOSTS;
use crate::config::outbound_proxy::OutboundProxy;
use crate::metrics::pool::{Gauged, PoolMetrics};
use crate::net::host_semaphores::HostSemaphores;
use crate::net::proxy_tunnel::{self, TunnelError};

/// `host:port` → address overrides for every outbound connection (curl `--resolve` semantics: the
/// connection goes to the given address, while SNI, Host and certificate checks use the name).
#[derive(Clone, Debug, Default)]
pub struct ResolveMap {
    entries: HashMap<String, SocketAddr>,
}

/// A `network.resolve` key that is not `host:port`.
#[derive(Debug, thiserror::Error)]
#[error("resolve entry `{key}` must be `host:port`")]
pub struct BadResolveKey {
    key: String,
}

impl ResolveMap {
    /// Adds `host:port` → `addr`. The host compares case-insensitively.
    pub fn insert(&mut self, host_port: &str, addr: SocketAddr) -> Result<(), BadResolveKey> {
        let bad = || BadResolveKey {
            key: host_port.to_string(),
        };
        let (host, port) = host_port.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        self.entries
            .insert(format!("{}:{port}", host.to_ascii_lowercase()), addr);
        Ok(())
    }

    fn get(&self, host: &str, port: u16) -> Option<SocketAddr> {
        if self.entries.is_empty() {
            return None;
        }
        self.entries
            .get(&format!("{}:{port}", host.to_ascii_lowercase()))
            .copied()
    }
}

/// Why an upstream connection could not be made. The text is safe to show to callers.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Upstream URL `0` is not https.
    #[error("upstream URL {0} is not https")]
    NotHttps(String),
    /// Upstream URL `0` has no host.
    #[error("upstream URL {0} has no host")]
    NoHost(String),
    /// ``0`` is not a valid TLS server name.
    #[error("`{0}` is not a valid TLS server name")]
    BadServerName(String),
    /// Cannot resolve `authority`: `source`.
    #[error("cannot resolve {authority}: {source}")]
    Resolve {
        /// The upstream `host:port`.
        authority: String,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// `authority` resolved to no address.
    #[error("{authority} resolved to no address")]
    NoAddress {
        /// The upstream `host:port`.
        authority: String,
    },
    /// TCP connect to `addr` (`authority`) failed: `source`.
    #[error("TCP connect to {addr} ({authority}) failed: {source}")]
    Tcp {
        /// The upstream `host:port`.
        authority: String,
        /// The address.
        addr: SocketAddr,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// TLS handshake with `authority` failed: `source`.
    #[error("TLS handshake with {authority} failed: {source}")]
    Tls {
        /// The upstream `host:port`.
        authority: String,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// Connecting to `authority` (`via` a proxy, when not empty) timed out after `timeout`.
    #[error("connecting to {authority}{via} timed out after {timeout:?}")]
    Timeout {
        /// The upstream `host:port`.
        authority: String,
        /// `" through proxy http://…"` (redacted) when tunnelling, else empty.
        via: String,
        /// How long popgate waited.
        timeout: Duration,
    },
    /// The outbound proxy answered `CONNECT authority` with a non-2xx `status`.
    #[error("proxy {proxy} refused CONNECT {authority}: {status} {reason}")]
    ProxyRefused {
        /// The proxy's URL, credentials redacted.
        proxy: String,
        /// The upstream `host:port`.
        authority: String,
        /// The proxy's status code (407: credentials missing or wrong; 403: not allowed).
        status: u16,
        /// The proxy's reason phrase.
        reason: String,
    },
    /// The tunnel through the outbound proxy could not be opened: `detail`.
    #[error("proxy {proxy} could not tunnel to {authority}: {detail}")]
    Proxy {
        /// The proxy's URL, credentials redacted.
        proxy: String,
        /// The upstream `host:port`.
        authority: String,
        /// What failed.
        detail: String,
    },
    /// All `cap` upstream connections to `authority` stayed busy for `timeout`.
    #[error("all {cap} upstream connections to {authority} stayed busy for {timeout:?}")]
    PoolExhausted {
        /// The upstream `host:port`.
        authority: String,
        /// The connection cap per host.
        cap: usize,
        /// How long popgate waited.
        timeout: Duration,
    },
}

impl ConnectError {
    /// Timeouts become 504; everything else 502 (but see [`ConnectError::is_busy`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectError::Timeout { .. })
    }

    /// popgate's own per-host cap was reached: 503 with `Retry-After`, not an upstream fault.
    pub fn is_busy(&self) -> bool {
        matches!(self, ConnectError::PoolExhausted { .. })
    }
}

/// Connector settings shared by every snapshot.
#[derive(Clone, Debug)]
pub struct ConnectSettings {
    /// Overrides for name resolution.
    pub resolve: Arc<ResolveMap>,
    /// Bound on resolve + TCP + TLS (and on waiting for a free connection slot).
    pub connect_timeout: Duration,
    /// Live upstream connections per host per snapshot.
    pub max_connections_per_host: usize,
    /// The route's pool metrics: each live connection is counted in its gauge.
    pub pool_metrics: Option<Arc<PoolMetrics>>,
    /// The outbound HTTP proxy, if any (hosts it does not bypass are tunnelled through it).
    pub proxy: Option<Arc<OutboundProxy>>,
}

/// Dials upstream connections: a `tower_service::Service<Uri>` (the lanes call it; the token
/// transport's hyper-util client takes it as its connector). Cheap to clone.
#[derive(Clone)]
pub struct UpstreamConnector {
    inner: Arc<Inner>,
}

struct Inner {
    tls: TlsConnector,
    settings: ConnectSettings,
    /// The dial cap: `max_connections_per_host` permits per authority.
    limits: HostSemaphores,
    /// Counted in the upstream connection metrics (off for token endpoint / IMDS connections).
    counted: bool,
}

impl fmt::Debug for UpstreamConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConnector")
            .field("connect_timeout", &self.inner.settings.connect_timeout)
            .field(
                "max_connections_per_host",
                &self.inner.settings.max_connections_per_host,
            )
            .finish_non_exhaustive()
    }
}

impl UpstreamConnector {
    /// A connector using `tls` for every connection it makes.
    pub fn new(tls: Arc<ClientConfig>, settings: ConnectSettings) -> Self {
        Self::build(tls, settings, true)
    }

    /// Like [`UpstreamConnector::new`], for credential peers (token endpoint, IMDS): its dials
    /// are not counted as upstream connections in the metrics.
    pub fn for_credentials(tls: Arc<ClientConfig>, settings: ConnectSettings) -> Self {
        Self::build(tls, settings, false)
    }

    fn build(tls: Arc<ClientConfig>, settings: ConnectSettings, counted: bool) -> Self {
        let limits = HostSemaphores::new(settings.max_connections_per_host, MAX_TRACKED_HOSTS);
        Self {
            inner: Arc::new(Inner {
                tls: TlsConnector::from(tls),
                settings,
                limits,
                counted,
            }),
        }
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<UpstreamConn, ConnectError>> + Send>>;

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = UpstreamConn;
    type Error = ConnectError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// Connects in a span of its own (a child of the exchange that asked for the connection).
    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        let span = tracing::debug_span!(
            "upstream_connect",
            server.address = uri.host().unwrap_or(""),
            server.port = uri.port_u16().unwrap_or(443),
        );
        Box::pin(async move { this.connect(uri).await }.instrument(span))
    }
}

impl UpstreamConnector {
    async fn connect(self, uri: Uri) -> Result<UpstreamConn, ConnectError> {
        if uri.scheme_str() != Some("https") {
            return Err(ConnectError::NotHttps(uri.to_string()));
        }
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ConnectError::NoHost(uri.to_string()))?;
        // Brackets are URI syntax, not part of an IPv6 address.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let authority = format!("{host}:{port}");
        let settings = &self.inner.settings;
        let timeout = settings.connect_timeout;

        let limiter = self.inner.limits.of(&authority);
        let permit = tokio::time::timeout(timeout, limiter.acquire_owned())
            .await
            .map_err(|_| ConnectError::PoolExhausted {
                authority: authority.clone(),
                cap: settings.max_connections_per_host,
                timeout,
            })?
            // The semaphore is never closed.
            .map_err(|_| ConnectError::PoolExhausted {
                authority: authority.clone(),
                cap: settings.max_connections_per_host,
                timeout,
            })?;

        let server_name = ServerName::try_from(host.clone())
            .map_err(|_| ConnectError::BadServerName(host.clone()))?;
        let via = settings
            .proxy
            .as_deref()
            .filter(|proxy| proxy.bypass(&host).is_none());
        let dial = async {
            let tcp = match via {
                Some(proxy) => self.tunnel(proxy, &host, port, &authority).await?,
                None => self.tcp(&host, port, &authority).await?,
            };
            let tls = self
                .inner
                .tls
                .connect(server_name, tcp)
                .instrument(tracing::debug_span!("tls_handshake"))
                .await
                .map_err(|source| ConnectError::Tls {
                    authority: authority.clone(),
                    source,
                })?;
            Ok::<_, ConnectError>(tls)
        };
        let tls = tokio::time::timeout(timeout, dial)
            .await
            .map_err(|_| ConnectError::Timeout {
                authority: authority.clone(),
                via: via.map_or_else(String::new, |p| format!(" through proxy {p}")),
                timeout,
            })
            .and_then(|dialled| dialled);
        if self.inner.counted {
            crate::metrics::upstream_dial(tls.is_ok());
            if let Some(route) = &settings.pool_metrics {
                route.dialled(tls.is_ok());
            }
        }
        let tls = tls?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        tracing::debug!(
            upstream = %authority,
            h2,
            via_proxy = via.is_some(),
            "upstream connection established"
        );
        Ok(UpstreamConn {
            io: TokioIo::new(tls),
            h2,
            _permit: permit,
            _counted: settings.pool_metrics.as_ref().map(|m| m.connection()),
        })
    }

    /// TCP to `proxy`, then `CONNECT host:port` (the real name: the proxy resolves it).
    async fn tunnel(
        &self,
        proxy: &OutboundProxy,
        host: &str,
        port: u16,
        authority: &str,
    ) -> Result<TcpStream, ConnectError> {
        let mut outcome = TunnelOutcome {
            peer: if self.inner.counted {
                "upstream"
            } else {
                "token"
            },
            outcome: "failed",
        };
        let shown = proxy.to_string();
        let failed = |detail: String| ConnectError::Proxy {
            proxy: shown.clone(),
            authority: authority.to_string(),
            detail,
        };
        let proxy_authority = bracketed(proxy.host(), proxy.port());
        let mut tcp = self
            .tcp(proxy.host(), proxy.port(), &proxy_authority)
            .await
            .map_err(|e| failed(e.to_string()))?;
        match proxy_tunnel::open(&mut tcp, proxy, &bracketed(host, port)).await {
            Ok(()) => {
                outcome.outcome = "ok";
                Ok(tcp)
            }
            Err(TunnelError::Refused { status, reason }) => {
                outcome.outcome = "refused";
                Err(ConnectError::ProxyRefused {
                    proxy: shown.clone(),
                    authority: authority.to_string(),
                    status,
                    reason,
                })
            }
            Err(TunnelError::Protocol(detail)) => Err(failed(detail)),
        }
    }

    async fn tcp(&self, host: &str, port: u16, authority: &str) -> Result<TcpStream, ConnectError> {
        let addrs: Vec<SocketAddr> = match self.inner.settings.resolve.get(host, port) {
            Some(addr) => vec![addr],
            None => tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| ConnectError::Resolve {
                    authority: authority.to_string(),
                    source,
                })?
                .collect(),
        };
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Requests are small writes that should leave at once, not wait for an ACK.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY upstream");
                    }
                    return Ok(stream);
                }
                Err(source) => {
                    last = Some(ConnectError::Tcp {
                        authority: authority.to_string(),
                        addr,
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or_else(|| ConnectError::NoAddress {
            authority: authority.to_string(),
        }))
    }
}

/// `host:port`, an IPv6 host in brackets.
fn bracketed(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Counts one tunnel attempt when dropped, so a CONNECT cut short by the connect timeout counts
/// as `failed` too.
struct TunnelOutcome {
    peer: &'static str,
    outcome: &'static str,
}

impl Drop for TunnelOutcome {
    fn drop(&mut self) {
        crate::metrics::proxy_tunnels::tunnel(self.peer, self.outcome);
    }
}

/// An upstream TLS connection holding its slot in the per-host connection limit.
pub struct UpstreamConn {
    io: TokioIo<TlsStream<TcpStream>>,
    h2: bool,
    _permit: OwnedSemaphorePermit,
    /// Counted in the route's `popgate_upstream_pool_connections` while open.
    _counted: Option<Gauged>,
}

impl fmt::Debug for UpstreamConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConn")
            .field("h2", &self.h2)
            .finish_non_exhaustive()
    }
}

impl UpstreamConn {
    /// Whether the upstream chose h2 by ALPN.
    pub(crate) fn is_h2(&self) -> bool {
        self.h2
    }
}

impl Connection for UpstreamConn {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for UpstreamConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// The TLS stream as tokio's I/O traits, for the `h2` crate (hyper's client takes the traits
/// above).
impl tokio::io::AsyncRead for UpstreamConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.io.inner_mut()).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for UpstreamConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.io.inner_mut()).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io.inner_mut()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.io.inner_mut()).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.inner().is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.io.inner_mut()).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_keys_must_be_host_port() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut map = ResolveMap::default();
        for bad in ["graph.microsoft.com", ":443", "host:https", "host:70000"] {
            let err = map.insert(bad, addr).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
        map.insert("Graph.Microsoft.com:443", addr).unwrap();
        assert_eq!(map.get("graph.microsoft.COM", 443), Some(addr));
        assert_eq!(map.get("graph.microsoft.com", 8443), None);
    }

    fn connector(resolve: ResolveMap) -> UpstreamConnector {
        connector_with(resolve, None, Duration::from_secs(5))
    }

    fn connector_with(
        resolve: ResolveMap,
        proxy: Option<OutboundProxy>,
        connect_timeout: Duration,
    ) -> UpstreamConnector {
        let mut roots = rustls::RootCertStore::empty();
        let ca = rcgen::CertifiedIssuer::self_signed(
            {
                let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                p
            },
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        roots.add(ca.der().clone()).unwrap();
        let config = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        UpstreamConnector::new(
            Arc::new(config),
            ConnectSettings {
                resolve: Arc::new(resolve),
                connect_timeout,
                max_connections_per_host: 2,
                pool_metrics: None,
                proxy: proxy.map(Arc::new),
            },
        )
    }

    #[tokio::test]
    async fn plain_http_is_refused() {
        let err = connector(ResolveMap::default())
            .connect("http://127.0.0.1:1/".parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::NotHttps(_)), "{err}");
    }

    #[tokio::test]
    async fn refused_connection_names_the_resolved_address() {
        // Bind then drop a listener: the port is very likely unused right after.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut resolve = ResolveMap::default();
        resolve.insert("svc.example:443", addr).unwrap();
        let err = connector(resolve)
            .connect("https://svc.example/".parse().unwrap())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConnectError::Tcp { .. }), "{text}");
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("svc.example:443"), "{text}");
        assert!(!err.is_timeout());
    }

    fn proxy_at(addr: SocketAddr) -> OutboundProxy {
        OutboundProxy::new(
            crate::config::outbound_proxy::ProxyUrl::parse(&format!("http://u:s3cret@{addr}"))
                .unwrap(),
            None,
            crate::config::no_proxy::NoProxy::default(),
            "test",
        )
    }

    #[tokio::test]
    async fn a_silent_proxy_times_out_within_the_connect_timeout_naming_it() {
        // Accepts and reads the CONNECT, never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let timeout = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let err = connector_with(ResolveMap::default(), Some(proxy_at(addr)), timeout)
            .connect("https://graph.microsoft.com/".parse().unwrap())
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.is_timeout(), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "graph.microsoft.com:443 through proxy http://***@{addr} timed out"
            )),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        hold.abort();
    }

    #[tokio::test]
    async fn an_unreachable_proxy_is_named_and_loopback_targets_bypass_it() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = connector_with(
            ResolveMap::default(),
            Some(proxy_at(closed)),
            Duration::from_secs(5),
        );
        let err = c
            .clone()
            .connect("https://graph.microsoft.com/".parse().unwrap())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConnectError::Proxy { .. }), "{text}");
        assert!(
            text.starts_with(&format!(
                "proxy http://***@{closed} could not tunnel to graph.microsoft.com:443: TCP connect to {closed}"
            )),
            "{text}"
        );
        // A loopback target goes direct: the error is about the target, not the proxy.
        let err = c
            .connect(format!("https://{closed}/").parse().unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Tcp { .. }), "{err}");
    }
}
