//! Sends a built [`CredentialRequest`] and reads the whole (bounded) answer: `https` to token
//! endpoints, optionally presenting a binding certificate, and plain `http` to IMDS / App Service.
//! No retries here (see `engine::sources::retry`).

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::limits::{
    MAX_CACHED_TOKEN_CLIENTS, MAX_TOKEN_CONNECTIONS_PER_HOST, TOKEN_CONNECT_TIMEOUT,
    TOKEN_IDLE_TIMEOUT, TOKEN_REQUEST_TIMEOUT,
};
use crate::config::outbound_proxy::OutboundProxy;
use crate::net::connect::{ConnectError, ConnectSettings, ResolveMap, UpstreamConnector};
use crate::net::token_call_gate::TokenCallGate;
use crate::net::upstream_tls::{ExtraRoots, client_config};

use crate::certs::binding::BindingCert;
use crate::identity::outbound_request::CredentialRequest;
use crate::identity::response_json::MAX_RESPONSE_BYTES;
use crate::locks::lock_unpoisoned;

/// Where and how long to connect.
#[derive(Clone, Debug)]
pub struct TransportSettings {
    /// `network.resolve` overrides (exact `host:port`).
    pub resolve: Arc<ResolveMap>,
    /// Trust anchors beyond the system roots.
    pub extra_roots: ExtraRoots,
    /// Bound on TCP + TLS.
    pub connect_timeout: Duration,
    /// Bound on the whole exchange.
    pub request_timeout: Duration,
    /// The outbound HTTP proxy for `https` token endpoints (plain `http` IMDS / managed-identity
    /// endpoints are never proxied).
    pub proxy: Option<Arc<OutboundProxy>>,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            resolve: Arc::new(ResolveMap::default()),
            extra_roots: ExtraRoots::default(),
            connect_timeout: TOKEN_CONNECT_TIMEOUT,
            request_timeout: TOKEN_REQUEST_TIMEOUT,
            proxy: None,
        }
    }
}

/// A whole answer. `Debug` leaves the body out: a token response carries the token.
#[derive(Clone)]
pub struct Exchange {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body (at most [`MAX_RESPONSE_BYTES`]).
    pub body: Bytes,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("status", &self.status)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field(
                "body",
                &format_args!("<redacted, {} bytes>", self.body.len()),
            )
            .finish()
    }
}

/// Why no answer was had. Names the host, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// No answer within the timeout.
    #[error("{host} did not answer within {timeout:?}")]
    Timeout {
        /// The peer.
        host: String,
        /// The bound that ran out.
        timeout: Duration,
    },
    /// TCP connect (or name resolution) failed.
    #[error("cannot connect to {host}: {detail}")]
    Connect {
        /// The peer.
        host: String,
        /// What failed.
        detail: String,
    },
    /// The TLS handshake or TLS session failed (for IMDSv2 this asks for a new certificate).
    #[error("TLS with {host} failed: {detail}")]
    Tls {
        /// The peer.
        host: String,
        /// What failed.
        detail: String,
    },
    /// The HTTP exchange failed after connecting.
    #[error("HTTP exchange with {host} failed: {detail}")]
    Http {
        /// The peer.
        host: String,
        /// What failed.
        detail: String,
    },
    /// The body is larger than the limit.
    #[error("{host} sent a response body over the {MAX_RESPONSE_BYTES}-byte limit")]
    TooLarge {
        /// The peer.
        host: String,
    },
    /// The outbound proxy answered CONNECT with 407: it refused the proxy credentials (or
    /// wants some and none are configured). Retrying cannot help until the config changes.
    #[error(
        "cannot reach {host}: the outbound proxy {proxy} refused the proxy credentials ({status} {reason}); fix them in network.proxy (credentials_env or the URL's user:password) and reload"
    )]
    ProxyAuth {
        /// The peer.
        host: String,
        /// The proxy's URL, credentials redacted.
        proxy: String,
        /// The proxy's status (407).
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// The TLS client configuration could not be built, or the URL is unusable.
    #[error("cannot call {host}: {detail}")]
    Setup {
        /// The peer.
        host: String,
        /// What is wrong.
        detail: String,
    },
}

impl TransportError {
    /// A TLS failure (handshake refused, certificate rejected).
    pub fn is_tls(&self) -> bool {
        matches!(self, TransportError::Tls { .. })
    }

    /// No answer in time (retried by the token-endpoint and IMDS policies).
    pub fn is_timeout(&self) -> bool {
        matches!(self, TransportError::Timeout { .. })
    }

    /// A failure that will not heal by itself (the outbound proxy refused the credentials):
    /// retried on the permanent-failure schedule, like a 4xx refusal.
    pub fn is_permanent(&self) -> bool {
        matches!(self, TransportError::ProxyAuth { .. })
    }
}

type HttpsClient = Client<UpstreamConnector, Full<Bytes>>;
type PlainClient = Client<HttpConnector, Full<Bytes>>;

/// The credential engine's HTTP client. Cheap to share (`Arc`).
pub struct Transport {
    settings: TransportSettings,
    plain: PlainClient,
    /// Keyed by the binding certificate's x5t#S256 (`None`: no client certificate), oldest first.
    https: Mutex<VecDeque<(Option<String>, HttpsClient)>>,
    /// Turns for token calls, per host and client certificate.
    calls: TokenCallGate,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("connect_timeout", &self.settings.connect_timeout)
            .field("request_timeout", &self.settings.request_timeout)
            .field("cached_clients", &self.cached_clients())
            .finish()
    }
}

impl Transport {
    /// A transport with no cached client yet.
    pub fn new(settings: TransportSettings) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(settings.connect_timeout));
        http.set_nodelay(true);
        let plain = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(TOKEN_IDLE_TIMEOUT)
            .build(http);
        Self {
            settings,
            plain,
            https: Mutex::new(VecDeque::new()),
            calls: TokenCallGate::default(),
        }
    }

    /// How many `https` clients are cached (one per binding certificate used, plus one without).
    pub fn cached_clients(&self) -> usize {
        self.lock().len()
    }

    /// Forget the client of a binding certificate that is no longer used (closing its pool).
    pub fn retire(&self, x5t_s256: &str) {
        self.lock()
            .retain(|(key, _)| key.as_deref() != Some(x5t_s256));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Option<String>, HttpsClient)>> {
        // The map holds plain values; a panic elsewhere leaves it consistent.
        lock_unpoisoned(&self.https)
    }

    fn https_client(
        &self,
        binding: Option<&BindingCert>,
        host: &str,
    ) -> Result<HttpsClient, TransportError> {
        let key = binding.map(|b| b.x5t_s256().to_string());
        if let Some((_, client)) = self.lock().iter().find(|(k, _)| *k == key) {
            return Ok(client.clone());
        }
        // One ClientConfig (and so one TLS session cache) per certificate: resuming a session
        // made with another certificate would present the old identity.
        let tls = client_config(binding, &self.settings.extra_roots)
            .map_err(|e| setup_error(host, &e))?;
        let client = self.build_client(
            tls,
            self.settings.proxy.clone(),
            MAX_TOKEN_CONNECTIONS_PER_HOST,
        );
        let mut cached = self.lock();
        if let Some((_, existing)) = cached.iter().find(|(k, _)| *k == key) {
            return Ok(existing.clone());
        }
        if cached.len() >= MAX_CACHED_TOKEN_CLIENTS {
            cached.pop_front();
        }
        cached.push_back((key, client.clone()));
        Ok(client)
    }

    /// A one-off client trusting only the server certificate with SHA-1 `thumbprint` (Service
    /// Fabric; tokens are cached for hours, so its calls are rare and not pooled).
    fn pinned_client(&self, thumbprint: &str, host: &str) -> Result<HttpsClient, TransportError> {
        let tls = crate::net::pinned_tls::pinned_sha1_config(thumbprint)
            .map_err(|e| setup_error(host, &e))?;
        // The Service Fabric identity endpoint is the node's own agent, never reached through a
        // corporate proxy (as IMDS and the other managed-identity endpoints); nothing kept idle.
        Ok(self.build_client(tls, None, 0))
    }

    /// A client for token calls over `tls`, through `proxy` when given, keeping at most
    /// `max_idle_per_host` idle connections for [`TOKEN_IDLE_TIMEOUT`].
    fn build_client(
        &self,
        tls: Arc<rustls::ClientConfig>,
        proxy: Option<Arc<OutboundProxy>>,
        max_idle_per_host: usize,
    ) -> HttpsClient {
        let connector = UpstreamConnector::for_credentials(
            tls,
            ConnectSettings {
                resolve: Arc::clone(&self.settings.resolve),
                connect_timeout: self.settings.connect_timeout,
                max_connections_per_host: MAX_TOKEN_CONNECTIONS_PER_HOST,
                pool_metrics: None,
                proxy,
            },
        );
        Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(TOKEN_IDLE_TIMEOUT)
            .pool_max_idle_per_host(max_idle_per_host)
            .build(connector)
    }

    /// Sends `request` (presenting `binding` in TLS when given; `https` only) and reads the
    /// whole answer under the request timeout.
    pub async fn send(
        &self,
        request: &CredentialRequest,
        binding: Option<&BindingCert>,
    ) -> Result<Exchange, TransportError> {
        let host = request
            .request()
            .uri()
            .authority()
            .map_or_else(|| "<no host>".to_string(), |a| a.as_str().to_string());
        // Waiting for a turn is not part of the call's timeout: every call ahead is bounded by it.
        let turn = match binding {
            Some(b) => format!("{host} {}", b.x5t_s256()),
            None => host.clone(),
        };
        let _turn = self.calls.admit(&turn).await;
        drop(turn);
        // Made only once admitted, and boxed: 1,000 eager routes start 1,000 acquisitions that
        // wait here for a turn, and each waiting future held the exchange's state (~600 bytes)
        // and a copy of its request while it waited (the start-up peak, benches/README.md).
        Box::pin(self.exchange(request, binding, host)).await
    }

    /// The admitted call: the request sent and its whole answer read under the request timeout.
    async fn exchange(
        &self,
        request: &CredentialRequest,
        binding: Option<&BindingCert>,
        host: String,
    ) -> Result<Exchange, TransportError> {
        let pin = request.server_sha1();
        let (request, _id) = request.duplicate().into_parts();
        let request: Request<Full<Bytes>> = request.map(Full::new);
        let timeout = self.settings.request_timeout;
        let exchange = async {
            let response = match request.uri().scheme_str() {
                Some("https") => {
                    let client = match pin {
                        Some(thumbprint) if binding.is_none() => {
                            self.pinned_client(thumbprint, &host)?
                        }
                        _ => self.https_client(binding, &host)?,
                    };
                    client.request(request).await
                }
                Some("http") if binding.is_none() => self.plain.request(request).await,
                _ => {
                    return Err(TransportError::Setup {
                        host: host.clone(),
                        detail: "the URL must be https (or http without a client certificate)"
                            .into(),
                    });
                }
            }
            .map_err(|e| classify(&host, &e))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        TransportError::TooLarge { host: host.clone() }
                    } else {
                        classify(&host, e.as_ref())
                    }
                })?
                .to_bytes();
            Ok(Exchange {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout { host, timeout }),
        }
    }
}

/// Sorts a client error into timeout / connect / TLS / HTTP by walking its source chain. The
/// detail joins the chain's messages (hyper's own are terse, e.g. `client error (Connect)`).
fn classify(host: &str, error: &(dyn StdError + 'static)) -> TransportError {
    let mut messages: Vec<String> = Vec::new();
    let mut kind = None;
    let mut source: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = source {
        let text = e.to_string();
        if !messages.iter().any(|m| m.contains(&text)) {
            messages.push(text);
        }
        if kind.is_none() {
            if let Some(connect) = e.downcast_ref::<ConnectError>() {
                kind = Some(match connect {
                    ConnectError::ProxyRefused {
                        proxy,
                        status: PROXY_AUTHENTICATION_REQUIRED,
                        reason,
                        ..
                    } => Kind::ProxyAuth {
                        proxy: proxy.clone(),
                        reason: reason.clone(),
                    },
                    ConnectError::Tls { .. } => Kind::Tls,
                    ConnectError::Timeout { timeout, .. } => Kind::Timeout(*timeout),
                    _ => Kind::Connect,
                });
            } else if e.downcast_ref::<rustls::Error>().is_some() {
                kind = Some(Kind::Tls);
            } else if e
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            {
                kind = Some(Kind::Timeout(TOKEN_CONNECT_TIMEOUT));
            }
        }
        source = e.source();
    }
    let host = host.to_string();
    let detail = messages.join(": ");
    let is_connect = error
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(|e| e.is_connect());
    match kind {
        Some(Kind::ProxyAuth { proxy, reason }) => TransportError::ProxyAuth {
            host,
            proxy,
            status: PROXY_AUTHENTICATION_REQUIRED,
            reason,
        },
        Some(Kind::Tls) => TransportError::Tls { host, detail },
        Some(Kind::Timeout(timeout)) => TransportError::Timeout { host, timeout },
        Some(Kind::Connect) => TransportError::Connect { host, detail },
        None if is_connect => TransportError::Connect { host, detail },
        None => TransportError::Http { host, detail },
    }
}

/// The status a proxy answers CONNECT with when it refuses (or misses) the credentials.
const PROXY_AUTHENTICATION_REQUIRED: u16 = 407;

enum Kind {
    /// The outbound proxy refused the credentials.
    ProxyAuth {
        proxy: String,
        reason: String,
    },
    Tls,
    Timeout(Duration),
    Connect,
}

/// The TLS client for a token call to `host` could not be built.
fn setup_error(host: &str, e: &dyn fmt::Display) -> TransportError {
    TransportError::Setup {
        host: host.to_string(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str) -> BindingCert {
        crate::certs::binding::test_binding(name)
    }

    #[test]
    fn clients_are_one_per_certificate_bounded_and_retired() {
        let ca = cert("ca.test");
        let mut extra = ExtraRoots::default();
        extra.add_der("test", ca.leaf_der().clone());
        let transport = Transport::new(TransportSettings {
            extra_roots: extra,
            ..TransportSettings::default()
        });
        let certs: Vec<BindingCert> = (0..=MAX_CACHED_TOKEN_CLIENTS)
            .map(|i| cert(&format!("c{i}.test")))
            .collect();
        transport.https_client(Some(&certs[0]), "h").unwrap();
        transport.https_client(Some(&certs[0]), "h").unwrap();
        assert_eq!(
            transport.cached_clients(),
            1,
            "same certificate, same client"
        );
        transport.https_client(None, "h").unwrap();
        assert_eq!(transport.cached_clients(), 2);
        for c in &certs[1..] {
            transport.https_client(Some(c), "h").unwrap();
        }
        assert_eq!(transport.cached_clients(), MAX_CACHED_TOKEN_CLIENTS);
        let last = certs.last().unwrap();
        transport.retire(last.x5t_s256());
        assert_eq!(transport.cached_clients(), MAX_CACHED_TOKEN_CLIENTS - 1);
    }

    #[test]
    fn debug_of_an_answer_leaves_the_body_out() {
        let exchange = Exchange {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(br#"{"access_token":"eyJ.secret.sig"}"#),
        };
        let shown = format!("{exchange:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("33 bytes"), "{shown}");
    }

    #[tokio::test]
    async fn http_with_a_client_certificate_is_refused() {
        let transport = Transport::new(TransportSettings::default());
        let base = crate::identity::imds_endpoint::ImdsBase::parse("http://127.0.0.1:9").unwrap();
        let request =
            crate::identity::imds_v1::token_request(&base, "https://management.azure.com", None)
                .unwrap();
        let err = transport
            .send(&request, Some(&cert("x.test")))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Setup { .. }), "{err}");
        assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
    }

    /// A burst of token calls to one endpoint (1,000 routes starting) reaches it at most
    /// `MAX_TOKEN_CALLS_PER_HOST` at a time, and every call is answered.
    #[tokio::test]
    async fn a_burst_of_calls_reaches_a_host_a_few_at_a_time() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        const BURST: usize = 12;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let server = {
            let (in_flight, most) = (Arc::clone(&in_flight), Arc::clone(&most));
            tokio::spawn(async move {
                loop {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    let (in_flight, most) = (Arc::clone(&in_flight), Arc::clone(&most));
                    tokio::spawn(async move {
                        let mut head = Vec::new();
                        let mut buf = [0u8; 1024];
                        loop {
                            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                                match stream.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => head.extend_from_slice(&buf[..n]),
                                }
                            }
                            head.clear();
                            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            in_flight.fetch_sub(1, Ordering::SeqCst);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            })
        };
        let transport = Arc::new(Transport::new(TransportSettings::default()));
        let base =
            crate::identity::imds_endpoint::ImdsBase::parse(&format!("http://{addr}")).unwrap();
        let calls: Vec<_> = (0..BURST)
            .map(|i| {
                let transport = Arc::clone(&transport);
                let request = crate::identity::imds_v1::token_request(
                    &base,
                    &format!("https://svc{i}.example"),
                    None,
                )
                .unwrap();
                tokio::spawn(async move { transport.send(&request, None).await })
            })
            .collect();
        for call in calls {
            let exchange = call.await.unwrap().unwrap();
            assert_eq!(exchange.status, StatusCode::OK);
        }
        let most = most.load(Ordering::SeqCst);
        assert!(
            most <= crate::config::limits::MAX_TOKEN_CALLS_PER_HOST,
            "{most} calls in flight at once"
        );
        assert!(most > 1, "calls were not concurrent at all: {most}");
        server.abort();
    }
}
