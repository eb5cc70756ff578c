//! One whole request through an in-process popgate, per request, against the floor.
//!
//! - `whole_request/popgate`: a keep-alive HTTP/1.1 caller sends absolute-form `GET`s, one after
//!   the other, to popgate started by `App::start` from a routes.yaml (real config loader, a
//!   `static` identity's `mtls_pop` token, the real listener and forwarder), which re-sends each
//!   over its pooled mutual-TLS connection to a small hyper + rustls upstream that requires a
//!   client certificate;
//! - `whole_request/direct_mtls`: the same request sent by a keep-alive client straight to the
//!   upstream over mutual TLS with the same certificate and token: what popgate adds is the
//!   difference.
//!
//! Everything runs on one current-thread Tokio runtime, so the figures (and callgrind's
//! instruction counts) do not depend on how the scheduler spreads tasks over the 2 cores.
//! Loopback only.
//!
//! Run: `cargo bench --bench whole_request -- --warm-up-time 1 --measurement-time 3`.
//!
//! Profiling mode (no criterion): `POPGATE_BENCH_REQUESTS=N` sends N requests after a warm-up and
//! exits; `POPGATE_BENCH_TARGET=direct` sends them straight to the upstream instead. Instructions
//! per request = (Ir at N2 − Ir at N1) / (N2 − N1) under `valgrind --tool=callgrind`; the set-up
//! (key generation, handshakes) cancels out. `POPGATE_BENCH_UPSTREAM=h2` makes the upstream offer
//! HTTP/2 first by ALPN (popgate then speaks h2 upstream; the direct client stays on HTTP/1.1).
//! `POPGATE_BENCH_REQUEST_ID=none`: the caller sends no `x-request-id` (popgate makes one).
//! See benches/MICRO.md.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use criterion::Criterion;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

use popgate::app::App;

/// The upstream's host name (resolved to loopback through `network.resolve`).
const UPSTREAM_HOST: &str = "bench.upstream";
/// Requests sent before measuring or profiling: pools warm, lazy statics initialised.
const WARM_UP_REQUESTS: usize = 200;
/// Most requests the profiling mode accepts (bounds the loop by count).
const MAX_PROFILE_REQUESTS: usize = 1_000_000;
/// Bound on one request; a hang fails the bench instead of stalling it.
const REQUEST_BOUND: Duration = Duration::from_secs(10);
/// Bound on popgate's first token (a static file: normally milliseconds).
const START_BOUND: Duration = Duration::from_secs(30);
/// The upstream's answer: a small JSON body, as an API would send.
const ANSWER: &[u8] = br#"{"value":[{"id":"1","displayName":"bench"}]}"#;

fn main() -> ExitCode {
    let requests = match std::env::var("POPGATE_BENCH_REQUESTS") {
        Err(_) => None,
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PROFILE_REQUESTS).contains(&n) => Some(n),
            _ => {
                eprintln!(
                    "error: POPGATE_BENCH_REQUESTS must be a count from 1 to {MAX_PROFILE_REQUESTS}, got `{v}`"
                );
                return ExitCode::from(2);
            }
        },
    };
    let direct = match std::env::var("POPGATE_BENCH_TARGET").as_deref() {
        Err(_) | Ok("popgate") => false,
        Ok("direct") => true,
        Ok(other) => {
            eprintln!("error: POPGATE_BENCH_TARGET must be `popgate` or `direct`, got `{other}`");
            return ExitCode::from(2);
        }
    };
    let h2 = match std::env::var("POPGATE_BENCH_UPSTREAM").as_deref() {
        Err(_) | Ok("http1") => false,
        Ok("h2") => true,
        Ok(other) => {
            eprintln!("error: POPGATE_BENCH_UPSTREAM must be `http1` or `h2`, got `{other}`");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut fixture = rt.block_on(Fixture::start(h2));
    match requests {
        Some(n) => {
            rt.block_on(async {
                let caller = if direct {
                    &mut fixture.direct
                } else {
                    &mut fixture.via_popgate
                };
                caller.send_many(WARM_UP_REQUESTS).await;
                caller.send_many(n).await;
            });
            println!(
                "sent {n} requests {} after {WARM_UP_REQUESTS} warm-up requests",
                if direct {
                    "directly"
                } else {
                    "through popgate"
                }
            );
        }
        None => {
            let mut c = Criterion::default().configure_from_args();
            bench(&mut c, &rt, &mut fixture);
            c.final_summary();
        }
    }
    ExitCode::SUCCESS
}

fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime, fixture: &mut Fixture) {
    let mut group = c.benchmark_group("whole_request");
    group.bench_function("popgate", |b| {
        b.iter_custom(|iters| rt.block_on(fixture.via_popgate.timed(iters)))
    });
    group.bench_function("direct_mtls", |b| {
        b.iter_custom(|iters| rt.block_on(fixture.direct.timed(iters)))
    });
    group.finish();
}

/// The upstream, popgate in front of it, and a keep-alive caller for each path.
struct Fixture {
    via_popgate: Caller,
    direct: Caller,
    _app: App,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(h2: bool) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::new();
        let (server_chain, server_key) =
            pki.issue(&[UPSTREAM_HOST], rcgen::ExtendedKeyUsagePurpose::ServerAuth);
        let (client_chain, client_key) = pki.issue(&[], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
        let upstream = start_upstream(server_chain, server_key, pki.roots(), h2).await;
        let jwt = write_files(dir.path(), &pki, &client_chain, &client_key, upstream);

        let config = popgate::config::load_with_env(&dir.path().join("routes.yaml"), &|_| None)
            .unwrap_or_else(|e| panic!("bench config: {e}"));
        // Production's subscriber (JSON), at `warn` so start-up lines stay out of criterion's
        // output; the success path logs nothing above `debug` either way.
        popgate::logging::init_to(
            popgate::logging::LogFormat::Json,
            tracing_subscriber::EnvFilter::new("warn"),
            popgate::logging::Output::Stderr,
        );
        let app = App::start(config).await.expect("popgate starts");
        app.initial_round(START_BOUND).await;
        let proxy = app.local_addrs()[0];

        let mut via_popgate = Caller::plain(proxy).await;
        let mut direct = Caller::mtls(upstream, &pki, client_chain, client_key, &jwt).await;
        // Both paths answer before anything is measured.
        via_popgate.send_many(1).await;
        direct.send_many(1).await;
        Fixture {
            via_popgate,
            direct,
            _app: app,
            _dir: dir,
        }
    }
}

/// A test CA issuing the upstream's and the client's certificates (ECDSA P-256: cheap to make).
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "popgate bench CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        Pki {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    fn issue(
        &self,
        sans: &[&str],
        eku: rcgen::ExtendedKeyUsagePurpose,
    ) -> (Vec<CertificateDer<'static>>, PrivatePkcs8KeyDer<'static>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            sans.first().copied().unwrap_or("bench client"),
        );
        params.extended_key_usages = vec![eku];
        let cert = params.signed_by(&key, &self.ca).expect("certificate");
        (
            vec![cert.der().clone(), self.ca.der().clone()],
            PrivatePkcs8KeyDer::from(key.serialize_der()),
        )
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).expect("CA root");
        roots
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes ca.pem, app.pem / app.key, the static token and routes.yaml; returns the token.
fn write_files(
    dir: &Path,
    pki: &Pki,
    chain: &[CertificateDer<'static>],
    key: &PrivatePkcs8KeyDer<'static>,
    upstream: SocketAddr,
) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(dir.join("ca.pem"), pki.ca.pem()).expect("ca.pem");
    std::fs::write(dir.join("app.pem"), pem("CERTIFICATE", &chain[0])).expect("app.pem");
    let key_path = dir.join("app.key");
    std::fs::write(&key_path, pem("PRIVATE KEY", key.secret_pkcs8_der())).expect("app.key");
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    let exp = (SystemTime::now() + Duration::from_secs(24 * 3600))
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let x5t = popgate::certs::binding::x5t_s256(&chain[0]);
    let claims = serde_json::json!({ "aud": format!("https://{UPSTREAM_HOST}"), "exp": exp, "cnf": { "x5t#S256": x5t } });
    let jwt = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        // A real RS256 signature's length; the bench upstream does not verify it.
        URL_SAFE_NO_PAD.encode([7u8; 256]),
    );
    std::fs::write(dir.join("static.jwt"), format!("{jwt}\n")).expect("static.jwt");

    let yaml = format!(
        r#"version: 1
listeners:
  - address: 127.0.0.1:0
network:
  resolve:
    "{UPSTREAM_HOST}:443": "{upstream}"
  extra_ca_files: [ca.pem]
identities:
  byo:
    kind: static
    token_file: static.jwt
    certificate: {{ cert_file: app.pem, key_file: app.key }}
routes:
  - name: bench
    match: {{ host: {UPSTREAM_HOST} }}
    resource: https://{UPSTREAM_HOST}
    flow: vanilla
    identity: byo
    token_type: mtls_pop
"#
    );
    std::fs::write(dir.join("routes.yaml"), yaml).expect("routes.yaml");
    jwt
}

/// A hyper HTTP/1.1 server over rustls on loopback that requires a client certificate from the
/// bench CA and answers every request with a small JSON body. With `h2`, it offers HTTP/2 alone
/// first by ALPN and serves both (popgate negotiates h2; the direct client offers http/1.1 alone).
async fn start_upstream(
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    client_roots: rustls::RootCertStore,
    h2: bool,
) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(client_roots),
        Arc::clone(&provider),
    )
    .build()
    .expect("client verifier");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, PrivateKeyDer::Pkcs8(key))
        .expect("server certificate");
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(answer);
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
            });
        }
    });
    addr
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Drain the (empty) request body so the connection stays reusable.
    let _ = request.into_body().collect().await;
    let mut response = Response::new(Full::new(Bytes::from_static(ANSWER)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A keep-alive HTTP/1.1 client sending one request at a time.
struct Caller {
    sender: SendRequest<Empty<Bytes>>,
    /// Builds each request (absolute form to popgate, origin form with a token upstream).
    request: Box<dyn Fn() -> Request<Empty<Bytes>>>,
}

/// The headers a legacy app sends besides Host (`x-request-id` unless
/// `POPGATE_BENCH_REQUEST_ID=none`).
fn legacy_headers(builder: http::request::Builder) -> http::request::Builder {
    let builder = builder
        .header("user-agent", "legacy-app/4.2")
        .header("accept", "application/json");
    static NO_ID: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *NO_ID
        .get_or_init(|| std::env::var_os("POPGATE_BENCH_REQUEST_ID").is_some_and(|v| v == "none"))
    {
        builder
    } else {
        builder.header("x-request-id", "8b1f7f1e-3c0e-4b8e-9b5a-0c1d2e3f4a5b")
    }
}

impl Caller {
    /// To popgate's plain listener, as an `HTTP_PROXY` client.
    async fn plain(proxy: SocketAddr) -> Caller {
        assert!(proxy.ip().is_loopback(), "benches only target loopback");
        let tcp = TcpStream::connect(proxy).await.expect("connect to popgate");
        tcp.set_nodelay(true).expect("nodelay");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        Caller {
            sender,
            request: Box::new(|| {
                legacy_headers(Request::get(format!("http://{UPSTREAM_HOST}/v1.0/me")))
                    .header(http::header::HOST, UPSTREAM_HOST)
                    .body(Empty::new())
                    .expect("request")
            }),
        }
    }

    /// Straight to the upstream over mutual TLS with popgate's certificate and token.
    async fn mtls(
        upstream: SocketAddr,
        pki: &Pki,
        chain: Vec<CertificateDer<'static>>,
        key: PrivatePkcs8KeyDer<'static>,
        jwt: &str,
    ) -> Caller {
        assert!(upstream.ip().is_loopback(), "benches only target loopback");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(pki.roots())
            .with_client_auth_cert(chain, PrivateKeyDer::Pkcs8(key))
            .expect("client certificate");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(upstream)
            .await
            .expect("connect upstream");
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from(UPSTREAM_HOST).expect("server name");
        let tls = connector.connect(name, tcp).await.expect("mTLS handshake");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        let authorization = format!("mtls_pop {jwt}");
        Caller {
            sender,
            request: Box::new(move || {
                legacy_headers(Request::get("/v1.0/me"))
                    .header(http::header::HOST, UPSTREAM_HOST)
                    .header(http::header::AUTHORIZATION, authorization.as_str())
                    .body(Empty::new())
                    .expect("request")
            }),
        }
    }

    /// One request, its whole answer read; panics on anything but a 200 with the upstream's body.
    async fn send(&mut self) {
        let exchange = async {
            self.sender.ready().await.expect("connection ready");
            let response = self
                .sender
                .send_request((self.request)())
                .await
                .expect("response");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
            assert_eq!(&body[..], ANSWER);
        };
        tokio::time::timeout(REQUEST_BOUND, exchange)
            .await
            .expect("request exceeded its bound");
    }

    async fn send_many(&mut self, n: usize) {
        for _ in 0..n {
            self.send().await;
        }
    }

    async fn timed(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.send().await;
        }
        start.elapsed()
    }
}
