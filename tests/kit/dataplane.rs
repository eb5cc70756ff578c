//! Shared test helpers: a test PKI (rcgen), an mTLS upstream that records what it saw, popgate
//! started in-process, and small HTTP clients. Only loopback addresses are used.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use popgate::certs::binding::{BindingCert, x5t_s256};
use popgate::dataplane::{
    DataplaneTable, ListenerSpec, Proxy, ProxyHandle, ProxySettings, UpstreamSettings,
};
use popgate::identity::static_token;
use popgate::identity::token::{Token, TokenType};
use popgate::net::connect::ResolveMap;
use popgate::net::upstream_tls::ExtraRoots;
use popgate::route::slot::{RouteSlot, Snapshot};
use popgate::route::table::{RouteSpec, RouteTable};

/// Upper bound for any single test step; a hang fails the test instead of stalling CI.
pub const STEP: Duration = Duration::from_secs(60);

/// Runs `f` with the [`STEP`] bound.
pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .expect("test step exceeded its time bound")
}

// ---------------------------------------------------------------------------------------------
// PKI

/// A test CA issuing server and client certificates.
pub struct TestPki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A self-signed test CA named `name` that may sign certificates and CRLs.
fn new_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap()
}

impl TestPki {
    pub fn new(name: &str) -> Self {
        Self { ca: new_ca(name) }
    }

    /// The CA's issuer, for fixtures that issue certificates of their own shape.
    pub fn issuer(&self) -> &rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
        &self.ca
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).unwrap();
        roots
    }

    fn issue(
        &self,
        sans: &[&str],
        cn: &str,
        eku: rcgen::ExtendedKeyUsagePurpose,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![eku];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (
            vec![cert.der().clone(), self.ca_der()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    pub fn server_cert(
        &self,
        sans: &[&str],
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        self.issue(
            sans,
            sans.first().copied().unwrap_or("server"),
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    pub fn client_cert(&self, cn: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        self.issue(&[], cn, rcgen::ExtendedKeyUsagePurpose::ClientAuth)
    }

    pub fn binding(&self, cn: &str) -> BindingCert {
        let (chain, key) = self.client_cert(cn);
        BindingCert::from_der(chain, key).unwrap()
    }

    /// Upstream settings trusting this CA (loaded from a PEM file, the production path) and
    /// resolving the given `host:port` names to loopback addresses.
    pub fn upstream_settings(
        &self,
        dir: &Path,
        resolve: &[(&str, SocketAddr)],
    ) -> UpstreamSettings {
        let ca_file = dir.join(format!("ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&ca_file, self.ca_pem()).unwrap();
        let mut extra = ExtraRoots::default();
        extra.add_pem_file(&ca_file).unwrap();
        let mut map = ResolveMap::default();
        for (name, addr) in resolve {
            assert!(addr.ip().is_loopback(), "tests only target loopback");
            map.insert(name, *addr).unwrap();
        }
        UpstreamSettings {
            extra_roots: extra,
            resolve: Arc::new(map),
            ..UpstreamSettings::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tokens

/// An unsigned JWT with the given claims (the test upstream does not verify signatures).
pub fn jwt(claims: serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.c2ln")
}

fn exp_in_an_hour() -> u64 {
    (SystemTime::now() + Duration::from_secs(3600))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An `mtls_pop` token bound to `binding`, loaded through `static_token::load` from a file.
pub fn pop_token(dir: &Path, binding: &BindingCert, marker: &str) -> Token {
    let path = dir.join(format!("token-{}", uuid::Uuid::new_v4()));
    let claims = serde_json::json!({
        "exp": exp_in_an_hour(),
        "cnf": { "x5t#S256": binding.x5t_s256() },
        "marker": marker,
    });
    std::fs::write(&path, format!("{}\n", jwt(claims))).unwrap();
    static_token::load(&path, Some(binding.clone()), TokenType::MtlsPop).unwrap()
}

/// A bearer token with the given opaque value, optionally presented with a certificate.
pub fn bearer_token(dir: &Path, value: &str, binding: Option<BindingCert>) -> Token {
    let path = dir.join(format!("token-{}", uuid::Uuid::new_v4()));
    std::fs::write(&path, value).unwrap();
    static_token::load(&path, binding, TokenType::Bearer).unwrap()
}

// ---------------------------------------------------------------------------------------------
// A body type for the upstream's answers and the clients' requests

/// Test bodies: empty, one chunk, `n` generated bytes (no buffer of size `n` ever exists), or
/// data followed by trailers.
pub enum TestBody {
    Empty,
    Full(Option<Bytes>),
    Repeat {
        remaining: u64,
    },
    WithTrailers {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    /// One chunk sent once `sleep` elapsed (a slow body behind a prompt head).
    Slow {
        sleep: Pin<Box<tokio::time::Sleep>>,
        data: Option<Bytes>,
    },
}

/// The chunk `Repeat` hands out, by reference count.
static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

impl TestBody {
    pub fn text(s: &str) -> Self {
        TestBody::Full(Some(Bytes::copy_from_slice(s.as_bytes())))
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let frame = match this {
            TestBody::Empty => None,
            TestBody::Full(data) => data.take().map(Frame::data),
            TestBody::Repeat { remaining } => {
                if *remaining == 0 {
                    None
                } else {
                    let n = (*remaining).min(CHUNK.len() as u64) as usize;
                    *remaining -= n as u64;
                    Some(Frame::data(Bytes::from_static(&CHUNK[..n])))
                }
            }
            TestBody::WithTrailers { data, trailers } => match data.take() {
                Some(d) => Some(Frame::data(d)),
                None => trailers.take().map(Frame::trailers),
            },
            TestBody::Slow { sleep, data } => {
                if data.is_some() && std::future::Future::poll(sleep.as_mut(), cx).is_pending() {
                    return Poll::Pending;
                }
                data.take().map(Frame::data)
            }
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            TestBody::Empty => true,
            TestBody::Full(d) => d.is_none(),
            TestBody::Repeat { remaining } => *remaining == 0,
            TestBody::WithTrailers { data, trailers } => data.is_none() && trailers.is_none(),
            TestBody::Slow { data, .. } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            TestBody::Empty => SizeHint::with_exact(0),
            TestBody::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |b| b.len() as u64)),
            TestBody::Repeat { remaining } => SizeHint::with_exact(*remaining),
            TestBody::WithTrailers { .. } | TestBody::Slow { .. } => SizeHint::default(),
        }
    }
}

/// Reads a body frame by frame: (data bytes, the concatenated data if `keep`, trailers).
pub async fn drain<B>(body: B, keep: bool) -> (u64, Vec<u8>, Option<HeaderMap>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    try_drain(body, keep).await.expect("body frame")
}

/// [`drain`], or the body's error if it failed.
async fn try_drain<B>(
    mut body: B,
    keep: bool,
) -> Result<(u64, Vec<u8>, Option<HeaderMap>), B::Error>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut n = 0u64;
    let mut kept = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame?.into_data() {
            Ok(data) => {
                n += data.len() as u64;
                if keep {
                    kept.extend_from_slice(&data);
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    Ok((n, kept, trailers))
}

// ---------------------------------------------------------------------------------------------
// The upstream

/// One request as the upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub client_x5t: Option<String>,
    pub version: Version,
    pub path: String,
    pub authority: Option<String>,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub trailers: Option<HeaderMap>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the upstream counts.
#[derive(Default)]
pub struct UpstreamState {
    pub seen: Mutex<Vec<Seen>>,
    pub tls_handshakes: AtomicUsize,
    pub requests: AtomicUsize,
    /// Requests waiting at `/gate`.
    gated: Mutex<Option<watch::Sender<usize>>>,
    /// TLS connections open now, and the most open at once.
    pub open: AtomicUsize,
    pub max_open: AtomicUsize,
    /// Plaintext bytes read from callers (HTTP/1 heads and bodies, or HTTP/2 frames), all
    /// connections together.
    pub bytes_in: AtomicUsize,
}

/// A stream that adds the bytes read through it to a counter.
struct CountingIo<T> {
    inner: T,
    state: Arc<UpstreamState>,
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.state.bytes_in.fetch_add(read, Ordering::SeqCst);
        polled
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A rustls upstream on 127.0.0.1 that requires a client certificate from its CA.
pub struct TestUpstream {
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
    in_flight: watch::Receiver<usize>,
    gate: watch::Sender<bool>,
    _stop: watch::Sender<()>,
}

impl TestUpstream {
    /// `h2`: offer h2 by ALPN (else only http/1.1). `client_ca`: the CA callers' certs must chain to.
    pub async fn start(server_pki: &TestPki, client_ca: &TestPki, h2: bool) -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), server_pki, client_ca, h2).await
    }

    /// [`TestUpstream::start`] on `addr` (a loopback address, e.g. the one an upstream dropped
    /// before listened on: a redeployed upstream).
    pub async fn start_at(
        addr: SocketAddr,
        server_pki: &TestPki,
        client_ca: &TestPki,
        h2: bool,
    ) -> Self {
        assert!(addr.ip().is_loopback(), "tests only target loopback");
        let (chain, key) = server_pki.server_cert(&[
            "graph.microsoft.com",
            "svc.example",
            "*.svc.example",
            "localhost",
        ]);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(client_ca.roots()),
            provider.clone(),
        )
        .build()
        .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let (in_flight_tx, in_flight) = watch::channel(0usize);
        let (gate, gate_rx) = watch::channel(false);
        *state.gated.lock().unwrap() = Some(in_flight_tx);
        let (stop, mut stop_rx) = watch::channel(());
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = stop_rx.changed() => break,
                };
                let acceptor = acceptor.clone();
                let st = Arc::clone(&st);
                let gate_rx = gate_rx.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    st.tls_handshakes.fetch_add(1, Ordering::SeqCst);
                    let now_open = st.open.fetch_add(1, Ordering::SeqCst) + 1;
                    st.max_open.fetch_max(now_open, Ordering::SeqCst);
                    let counted = Arc::clone(&st);
                    let x5t = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| x5t_s256(c.as_ref()));
                    let svc = hyper::service::service_fn(move |req| {
                        upstream_handle(req, Arc::clone(&st), x5t.clone(), gate_rx.clone())
                    });
                    let io = CountingIo {
                        inner: tls,
                        state: Arc::clone(&counted),
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(io), svc)
                        .await;
                    counted.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            addr,
            state,
            in_flight,
            gate,
            _stop: stop,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Plaintext bytes the upstream has read from callers so far.
    pub fn bytes_in(&self) -> usize {
        self.state.bytes_in.load(Ordering::SeqCst)
    }

    pub fn handshakes(&self) -> usize {
        self.state.tls_handshakes.load(Ordering::SeqCst)
    }

    /// Waits until `n` requests are held at `/gate`.
    pub async fn wait_gated(&mut self, n: usize) {
        bounded(self.in_flight.wait_for(|v| *v >= n)).await.unwrap();
    }

    /// Lets every `/gate` request through.
    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }
}

async fn upstream_handle(
    req: Request<Incoming>,
    state: Arc<UpstreamState>,
    client_x5t: Option<String>,
    mut gate: watch::Receiver<bool>,
) -> Result<Response<TestBody>, Infallible> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let mut seen = Seen {
        client_x5t,
        version: parts.version,
        path: parts
            .uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string()),
        authority: parts.uri.authority().map(|a| a.to_string()),
        headers: parts.headers.clone(),
        body_len: 0,
        trailers: None,
    };
    if path == "/hang" {
        state.seen.lock().unwrap().push(seen.clone());
        std::future::pending::<()>().await;
    }
    // A body the sender aborted (a reset stream, a cut-off body) is not a request the upstream
    // saw: nothing is recorded, and the handler ends (its answer has nowhere to go: the stream
    // or the connection is gone) rather than panicking in the upstream's task.
    let Ok((n, _, trailers)) = try_drain(body, false).await else {
        return Ok(Response::new(TestBody::Empty));
    };
    seen.body_len = n;
    seen.trailers = trailers;
    state.seen.lock().unwrap().push(seen);

    if path == "/gate" {
        let in_flight = state.gated.lock().unwrap().clone();
        if let Some(tx) = &in_flight {
            tx.send_modify(|v| *v += 1);
        }
        let _ = gate.wait_for(|open| *open).await;
        if let Some(tx) = &in_flight {
            tx.send_modify(|v| *v -= 1);
        }
    }

    let mut response = if let Some(n) = path.strip_prefix("/download/") {
        Response::new(TestBody::Repeat {
            remaining: n.parse().unwrap_or(0),
        })
    } else if let Some(ms) = path.strip_prefix("/slow-body/") {
        let delay = Duration::from_millis(ms.parse().unwrap_or(0));
        Response::new(TestBody::Slow {
            sleep: Box::pin(tokio::time::sleep(delay)),
            data: Some(Bytes::from_static(b"slow body")),
        })
    } else if path == "/trailers" {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-upstream-trailer", HeaderValue::from_static("done"));
        let mut r = Response::new(TestBody::WithTrailers {
            data: Some(Bytes::from_static(b"with trailers")),
            trailers: Some(trailers),
        });
        r.headers_mut()
            .insert("trailer", HeaderValue::from_static("x-upstream-trailer"));
        r
    } else {
        let mut r = Response::new(TestBody::text("hello from upstream"));
        r.headers_mut()
            .insert("connection", HeaderValue::from_static("x-upstream-hop"));
        r.headers_mut()
            .insert("x-upstream-hop", HeaderValue::from_static("1"));
        r
    };
    response
        .headers_mut()
        .insert("x-upstream", HeaderValue::from_static("yes"));
    Ok(response)
}

/// A TCP listener that accepts and then never says anything (not even a TLS handshake).
pub async fn silent_listener() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        // Bounded: tests make a handful of connections.
        while held.len() < 64 {
            match listener.accept().await {
                Ok((s, _)) => held.push(s),
                Err(_) => break,
            }
        }
        std::future::pending::<()>().await;
    });
    (addr, task)
}

/// An address on loopback where nothing listens (bound, then released).
pub fn dead_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// popgate in-process

pub struct TestProxy {
    pub addr: SocketAddr,
    pub table: Arc<ArcSwap<DataplaneTable>>,
    pub handle: Option<ProxyHandle>,
}

/// A route spec for `host` (and optional prefix).
pub fn route(name: &str, host: Option<&str>, prefix: Option<&str>) -> RouteSpec {
    RouteSpec {
        name: name.into(),
        host: host.map(|h| h.parse().unwrap()),
        path_prefix: prefix.map(Into::into),
        strip_prefix: false,
        upstream: None,
    }
}

/// A plain listener spec on 127.0.0.1:0.
pub fn plain_listener() -> ListenerSpec {
    ListenerSpec {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        intercept: None,
    }
}

/// The swappable route table the data plane reads, built from compiled routes.
pub fn route_table(routes: Vec<(RouteSpec, Arc<RouteSlot>)>) -> Arc<ArcSwap<DataplaneTable>> {
    Arc::new(ArcSwap::from_pointee(RouteTable::new(routes)))
}

/// Starts popgate on 127.0.0.1:0 (plain listener) with one snapshot per route that has a token.
pub async fn start_proxy(
    routes: Vec<(RouteSpec, Option<Token>)>,
    upstream: &UpstreamSettings,
    settings: ProxySettings,
) -> TestProxy {
    let mut compiled = Vec::new();
    for (generation, (spec, token)) in routes.into_iter().enumerate() {
        let slot = match token {
            Some(t) => RouteSlot::with_snapshot(
                spec.name.as_str(),
                Snapshot::build(&t, upstream, generation as u64 + 1).unwrap(),
            ),
            None => RouteSlot::new(spec.name.as_str()),
        };
        compiled.push((spec, Arc::new(slot)));
    }
    let table = route_table(compiled);
    let handle = Proxy::start(vec![plain_listener()], Arc::clone(&table), settings)
        .await
        .unwrap();
    TestProxy {
        addr: handle.local_addrs()[0],
        table,
        handle: Some(handle),
    }
}

// ---------------------------------------------------------------------------------------------
// Clients

/// Sends one HTTP/1.1 request over a fresh connection to the proxy. The URI is written as given
/// (absolute-form or origin-form).
pub async fn h1_send(proxy: SocketAddr, req: Request<TestBody>) -> Response<Incoming> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    bounded(sender.send_request(req)).await.unwrap()
}

/// Sends one request over HTTP/2 with prior knowledge (h2c) to the proxy.
pub async fn h2c_send(proxy: SocketAddr, req: Request<TestBody>) -> Response<Incoming> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    bounded(sender.send_request(req)).await.unwrap()
}

/// Reads a response body as UTF-8 text.
pub async fn text(resp: Response<Incoming>) -> String {
    let bytes = bounded(resp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Reads a response body as JSON.
pub async fn json(resp: Response<Incoming>) -> serde_json::Value {
    let body = text(resp).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `GET http://{host}{path}` in absolute form with an optional caller Authorization.
pub fn absolute_get(host: &str, path: &str) -> Request<TestBody> {
    Request::builder()
        .uri(format!("http://{host}{path}"))
        .header("host", host)
        .body(TestBody::Empty)
        .unwrap()
}

/// How long an idle caller may take to be parked: the grace is 250 ms; the rest is room for a
/// loaded machine's late timers (a fixed 700 ms sleep once failed on CI).
pub const PARKED_WITHIN: Duration = Duration::from_secs(10);

/// Waits until the process's parked count reaches `count` (other tests of the binary may park
/// too: the count is a lower bound of a test's own), for at most [`PARKED_WITHIN`]; `false` if
/// it never did.
pub async fn parked_reaches(count: f64) -> bool {
    let waited = tokio::time::Instant::now();
    while parked() < count {
        if waited.elapsed() >= PARKED_WITHIN {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Waits as [`parked_reaches`] does, then returns the process's parked count: in the binary whose
/// tests run one at a time (`tests/parking/`), exactly `count` unless the test's own connection
/// was parked too often or not at all.
pub async fn parked_count_at(count: f64) -> f64 {
    parked_reaches(count).await;
    parked()
}

/// `popgate_connections_parked_total` in this process (other tests of the binary may park too,
/// so callers compare before and after).
pub fn parked() -> f64 {
    use prometheus::Encoder as _;
    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&popgate::metrics::global().registry().gather(), &mut text)
        .unwrap();
    String::from_utf8(text)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("popgate_connections_parked_total ")?
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
