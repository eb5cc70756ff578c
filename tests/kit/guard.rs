//! Helpers for the guard tests: popgate started in-process with route policies and any mix of
//! plain, mTLS and Unix-socket listeners; caller certificates with SANs; a redirecting upstream;
//! a log capture. Only loopback addresses and temp-dir sockets are used.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use popgate::dataplane::unix_listener::UnixListenerSpec;
use popgate::dataplane::{ListenerSpec, Proxy, ProxyHandle, ProxySettings};
use popgate::identity::token::Token;
use popgate::net::client::UpstreamSettings;
use popgate::route::policy::RoutePolicy;
use popgate::route::slot::{RouteSlot, Snapshot};
use popgate::route::table::{RouteSpec, RouteTable};

pub use super::dataplane::plain_listener;
use super::dataplane::{STEP, TestBody, TestPki, TestUpstream, bounded, route_table};

/// What the guard tests start from: a temp dir, a test PKI, and an mTLS upstream whose server
/// certificate and trusted callers both come from that PKI. Test files add their own methods.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub pki: TestPki,
    pub upstream: TestUpstream,
}

impl Env {
    /// With an HTTP/1.1 upstream.
    pub async fn new() -> Self {
        Self::with_upstream(false).await
    }

    /// With an upstream that offers h2 by ALPN (`h2`), or only HTTP/1.1.
    pub async fn with_upstream(h2: bool) -> Self {
        let pki = TestPki::new("upstream-ca");
        let upstream = TestUpstream::start(&pki, &pki, h2).await;
        Env {
            dir: tempfile::tempdir().unwrap(),
            pki,
            upstream,
        }
    }
}

/// A CA issuing caller certificates with chosen subject and SANs.
pub struct CallerPki {
    pki: TestPki,
}

impl CallerPki {
    pub fn new() -> Self {
        Self {
            pki: TestPki::new("caller-ca"),
        }
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.pki.ca_der()
    }

    pub fn roots(&self) -> RootCertStore {
        self.pki.roots()
    }

    /// A certificate with `CN=cn,O=org`, the given DNS and URI SANs; `server` picks the EKU.
    pub fn issue(
        &self,
        cn: &str,
        org: &str,
        dns: &[&str],
        uris: &[&str],
        server: bool,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
        }
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, self.pki.issuer()).unwrap();
        (
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// An mTLS listener spec on 127.0.0.1:0 requiring caller certificates from this CA.
    pub fn mtls_listener(&self) -> ListenerSpec {
        let (chain, key) = self.issue("popgate", "corp", &["localhost"], &[], true);
        let tls = popgate::dataplane::listener::server_tls_config(chain, key, Some(self.roots()))
            .unwrap();
        ListenerSpec {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: Some(tls),
            intercept: None,
        }
    }

    /// A client config trusting this CA and presenting `cert` (or nothing).
    pub fn client_config(
        &self,
        cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots());
        let mut config = match cert {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Starts popgate with one snapshot per route, each slot carrying its policy.
pub async fn start_guarded(
    routes: Vec<(RouteSpec, Token, RoutePolicy)>,
    upstream: &UpstreamSettings,
    listeners: Vec<ListenerSpec>,
    unix: Vec<UnixListenerSpec>,
) -> ProxyHandle {
    let mut compiled = Vec::new();
    for (generation, (spec, token, policy)) in routes.into_iter().enumerate() {
        let snapshot = Snapshot::build(&token, upstream, generation as u64 + 1).unwrap();
        let slot = RouteSlot::with_snapshot(spec.name.as_str(), snapshot).with_policy(policy);
        compiled.push((spec, Arc::new(slot)));
    }
    Proxy::start_with_unix(
        listeners,
        unix,
        route_table(compiled),
        ProxySettings::default(),
    )
    .await
    .unwrap()
}

/// One HTTP/1.1 request over TLS to `addr` with `config`; `Err` when the handshake fails.
pub async fn h1_send_tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    req: Request<TestBody>,
) -> Result<Response<Incoming>, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = bounded(
        TlsConnector::from(config).connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    bounded(sender.send_request(req))
        .await
        .map_err(|e| e.to_string())
}

/// One HTTP/1.1 request over the Unix socket at `path`.
pub async fn h1_send_unix(path: &Path, req: Request<TestBody>) -> Response<Incoming> {
    let stream = UnixStream::connect(path).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    bounded(sender.send_request(req)).await.unwrap()
}

/// An mTLS upstream (server cert from `server`, callers from `client_ca`) answering every
/// request `302 Location: https://elsewhere.example/next`; counts requests.
pub struct RedirectUpstream {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
}

impl RedirectUpstream {
    pub async fn start(
        server_chain: Vec<CertificateDer<'static>>,
        server_key: PrivateKeyDer<'static>,
        client_roots: RootCertStore,
    ) -> Self {
        let config = popgate::dataplane::listener::server_tls_config(
            server_chain,
            server_key,
            Some(client_roots),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        tokio::spawn(async move {
            // Bounded: a test makes a handful of connections.
            for _ in 0..64 {
                let Ok((tcp, _)) = listener.accept().await else {
                    break;
                };
                let acceptor = acceptor.clone();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .status(302)
                                    .header("location", "https://elsewhere.example/next")
                                    .body(TestBody::Empty)
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self { addr, requests }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Everything logged through `tracing` while a [`LogCapture`] guard is installed on this thread.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs a capturing subscriber for the current thread until the guard drops.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The step bound, re-exported for tests that time-box their own loops.
pub const GUARD_STEP: std::time::Duration = STEP;
