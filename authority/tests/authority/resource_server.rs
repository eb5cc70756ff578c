//! The token-bound resource over real TLS (rustls both sides, client certificates from a test CA)
//! with hyper clients speaking HTTP/1.1 and HTTP/2.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aws_lc_rs::digest;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt as _, Either, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use popgate_authority::claims::{Claims, Confirmation};
use popgate_authority::client_auth::RequireAnyClientCert;
use popgate_authority::faults::{Endpoint, Fault, Faults};
use popgate_authority::observe::Observations;
use popgate_authority::resource::{Audience, ResourceHandle, spawn};
use popgate_authority::signing::SigningKeys;
use popgate_authority::thumbprint::x5t_s256;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const GRAPH: &str = "https://graph.microsoft.com";
const POP_ONLY: &str = "https://pop.example";
const BEARER_ONLY: &str = "https://bearer.example";
const APP: &str = "11111111-2222-3333-4444-555555555555";
const OID: &str = "99999999-8888-7777-6666-555555555555";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

struct Pki {
    ca_der: CertificateDer<'static>,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

struct Leaf {
    der: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Leaf {
    fn x5t(&self) -> String {
        x5t_s256(self.der.as_ref())
    }
}

impl Pki {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "resource test CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).unwrap();
        Self {
            ca_der: issuer.der().clone(),
            issuer,
        }
    }

    fn leaf(&self, names: &[&str], cn: &str) -> Leaf {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            der: cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        }
    }
}

struct Resource {
    handle: ResourceHandle,
    keys: Arc<SigningKeys>,
    faults: Arc<Faults>,
    observations: Arc<Observations>,
    pki: Pki,
    client_a: Leaf,
    client_b: Leaf,
}

async fn start() -> Resource {
    let pki = Pki::new();
    let server = pki.leaf(&["localhost", "127.0.0.1"], "resource");
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(RequireAnyClientCert::new(true))
        .with_single_cert(
            vec![server.der.clone()],
            PrivateKeyDer::Pkcs8(server.key.clone_key()),
        )
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let keys = Arc::new(SigningKeys::generate().unwrap());
    let faults = Arc::new(Faults::default());
    let observations = Arc::new(Observations::default());
    let audiences = Arc::new(|host: &str| {
        let (audience, accepts_bearer, accepts_pop) = match host {
            "graph.local" => (GRAPH, true, true),
            "pop.local" => (POP_ONLY, false, true),
            "bearer.local" => (BEARER_ONLY, true, false),
            _ => return None,
        };
        Some(Audience {
            audience: audience.into(),
            accepts_bearer,
            accepts_pop,
        })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = spawn(
        listener,
        Arc::new(tls),
        keys.clone(),
        audiences,
        faults.clone(),
        observations.clone(),
    )
    .await
    .unwrap();
    let client_a = pki.leaf(&[], "client a");
    let client_b = pki.leaf(&[], "client b");
    Resource {
        handle,
        keys,
        faults,
        observations,
        pki,
        client_a,
        client_b,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(keys: &SigningKeys, aud: &str, bound_to: Option<&Leaf>, exp_in: i64) -> String {
    let now = now();
    keys.sign(&Claims {
        iss: "https://login.microsoftonline.com/t/v2.0".into(),
        aud: aud.into(),
        sub: OID.into(),
        tid: "t".into(),
        oid: OID.into(),
        appid: APP.into(),
        iat: now,
        nbf: now - 5,
        exp: now.checked_add_signed(exp_in).unwrap(),
        uti: uuid::Uuid::new_v4().to_string(),
        ver: "2.0".into(),
        cnf: bound_to.map(|leaf| Confirmation {
            x5t_s256: leaf.x5t(),
        }),
    })
    .unwrap()
}

type ReqBody = Either<Full<Bytes>, Upload>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    H1,
    H2,
}

/// One TLS connection presenting `client` (or no certificate), speaking `proto`.
struct Conn {
    h1: Option<hyper::client::conn::http1::SendRequest<ReqBody>>,
    h2: Option<hyper::client::conn::http2::SendRequest<ReqBody>>,
}

async fn connect(
    r: &Resource,
    client: Option<&Leaf>,
    proto: Proto,
) -> Result<Conn, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(r.pki.ca_der.clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der.clone()],
                PrivateKeyDer::Pkcs8(leaf.key.clone_key()),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![match proto {
        Proto::H1 => b"http/1.1".to_vec(),
        Proto::H2 => b"h2".to_vec(),
    }];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(r.handle.addr()).await?;
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    let io = TokioIo::new(tls);
    let conn = match proto {
        Proto::H1 => {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Conn {
                h1: Some(sender),
                h2: None,
            }
        }
        Proto::H2 => {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            Conn {
                h1: None,
                h2: Some(sender),
            }
        }
    };
    Ok(conn)
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    version: Version,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }

    fn www_authenticate(&self) -> String {
        self.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string()
    }
}

impl Conn {
    async fn send(
        &mut self,
        host: &str,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: ReqBody,
    ) -> Result<Reply, hyper::Error> {
        let mut builder = Request::builder().method(method);
        builder = if self.h2.is_some() {
            builder.uri(format!("https://{host}{path}"))
        } else if host.is_empty() {
            builder.uri(path)
        } else {
            builder.uri(path).header("host", host)
        };
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        let request = builder.body(body).unwrap();
        let response = match (&mut self.h1, &mut self.h2) {
            (Some(h1), _) => h1.send_request(request).await?,
            (_, Some(h2)) => h2.send_request(request).await?,
            _ => unreachable!(),
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            version: parts.version,
            body,
        })
    }

    async fn get(&mut self, host: &str, path: &str, auth: Option<String>) -> Reply {
        let headers: Vec<(&str, String)> = auth.into_iter().map(|a| ("authorization", a)).collect();
        self.send(
            host,
            "GET",
            path,
            &headers,
            Either::Left(Full::new(Bytes::new())),
        )
        .await
        .expect("the resource answered")
    }
}

fn pop(token: &str) -> Option<String> {
    Some(format!("mtls_pop {token}"))
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

#[tokio::test]
async fn pop_token_bound_to_the_presented_certificate_is_accepted_over_h1_and_h2() {
    let r = start().await;
    let t = token(&r.keys, GRAPH, Some(&r.client_a), 600);
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = connect(&r, Some(&r.client_a), proto).await.unwrap();
        let reply = conn
            .send(
                "graph.local",
                "POST",
                "/v1.0/me?$select=id",
                &[
                    ("authorization", format!("mtls_pop {t}")),
                    ("x-custom", "yes".into()),
                ],
                Either::Left(Full::new(Bytes::from_static(b"hello world"))),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{proto:?}: {:?}", reply.body);
        let echo = reply.json();
        assert_eq!(echo["authorized"], true);
        assert_eq!(echo["scheme"], "mtls_pop");
        assert_eq!(echo["audience"], GRAPH);
        assert_eq!(echo["appid"], APP);
        assert_eq!(echo["oid"], OID);
        assert_eq!(echo["cnf_x5t"], r.client_a.x5t());
        assert_eq!(echo["presented_x5t"], r.client_a.x5t());
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], "/v1.0/me");
        assert_eq!(echo["query"], "$select=id");
        assert_eq!(echo["request_body_bytes"], 11);
        assert_eq!(
            echo["request_body_sha256"],
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(echo["headers"]["x-custom"], "yes");
        assert!(echo["headers"].get("authorization").is_none());
        let (want_version, want_text) = match proto {
            Proto::H1 => (Version::HTTP_11, "HTTP/1.1"),
            Proto::H2 => (Version::HTTP_2, "HTTP/2.0"),
        };
        assert_eq!(reply.version, want_version);
        assert_eq!(echo["http_version"], want_text);
    }
    let log = r.observations.log();
    assert_eq!(log.len(), 2);
    for record in log {
        assert_eq!(record.endpoint, Endpoint::Resource);
        assert_eq!(record.status, 200);
        assert_eq!(record.outcome, "mtls_pop");
        assert_eq!(record.client_id.as_deref(), Some(APP));
        assert_eq!(record.client_cert_x5t, Some(r.client_a.x5t()));
    }
}

/// Expects 401 invalid_token whose description mentions `mention`, with the given challenge scheme.
fn assert_invalid_token(reply: &Reply, scheme: &str, mention: &str) {
    assert_eq!(reply.status, 401, "{:?}", reply.body);
    let challenge = reply.www_authenticate();
    assert!(
        challenge.starts_with(&format!("{scheme} error=\"invalid_token\"")),
        "{challenge}"
    );
    assert!(challenge.contains("error_description=\""), "{challenge}");
    let body = reply.json();
    assert_eq!(body["error"], "invalid_token");
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.contains(mention),
        "{description:?} should mention {mention:?}"
    );
}

#[tokio::test]
async fn pop_refusals() {
    let r = start().await;
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = connect(&r, Some(&r.client_a), proto).await.unwrap();
        // Bound to certificate B, presented with A.
        let for_b = token(&r.keys, GRAPH, Some(&r.client_b), 600);
        let reply = conn.get("graph.local", "/", pop(&for_b)).await;
        assert_invalid_token(&reply, "mtls_pop", &r.client_b.x5t());
        assert!(
            !reply
                .body
                .windows(for_b.len())
                .any(|w| w == for_b.as_bytes())
        );
        // Expired.
        let expired = token(&r.keys, GRAPH, Some(&r.client_a), -30);
        assert_invalid_token(
            &conn.get("graph.local", "/", pop(&expired)).await,
            "mtls_pop",
            "expired",
        );
        // Another audience.
        let vault = token(&r.keys, "https://vault.azure.net", Some(&r.client_a), 600);
        assert_invalid_token(
            &conn.get("graph.local", "/", pop(&vault)).await,
            "mtls_pop",
            "audience",
        );
        // Signed by someone else.
        let other_keys = SigningKeys::generate().unwrap();
        let forged = token(&other_keys, GRAPH, Some(&r.client_a), 600);
        assert_invalid_token(
            &conn.get("graph.local", "/", pop(&forged)).await,
            "mtls_pop",
            "signed by this authority",
        );
        // Not a JWT at all.
        assert_invalid_token(
            &conn.get("graph.local", "/", pop("not-a-jwt")).await,
            "mtls_pop",
            "JWT",
        );
        // A Bearer (unbound) token presented as mtls_pop.
        let unbound = token(&r.keys, GRAPH, None, 600);
        assert_invalid_token(
            &conn.get("graph.local", "/", pop(&unbound)).await,
            "mtls_pop",
            "cnf",
        );
        // No Authorization, unknown scheme, no token after the scheme.
        assert_invalid_token(
            &conn.get("graph.local", "/", None).await,
            "mtls_pop",
            "no Authorization",
        );
        let good = token(&r.keys, GRAPH, Some(&r.client_a), 600);
        assert_invalid_token(
            &conn
                .get("graph.local", "/", Some(format!("PoP {good}")))
                .await,
            "mtls_pop",
            "unsupported authorization scheme",
        );
        assert_invalid_token(
            &conn.get("graph.local", "/", Some(good.clone())).await,
            "mtls_pop",
            "<scheme> <token>",
        );
        // A PoP token on a Bearer-only resource.
        assert_invalid_token(
            &conn
                .get(
                    "bearer.local",
                    "/",
                    pop(&token(&r.keys, BEARER_ONLY, Some(&r.client_a), 600)),
                )
                .await,
            "Bearer",
            "does not accept mtls_pop",
        );
        // The scheme is case-insensitive: the same good token is accepted as MTLS_POP.
        let ok = conn
            .get("graph.local", "/", Some(format!("MTLS_POP {good}")))
            .await;
        assert_eq!(ok.status, 200, "{:?}", ok.body);
    }
    let refused = r
        .observations
        .log()
        .iter()
        .filter(|rec| rec.status == 401 && rec.outcome == "invalid_token")
        .count();
    assert_eq!(refused, 2 * 10);
}

#[tokio::test]
async fn bearer_rules() {
    let r = start().await;
    let mut conn = connect(&r, Some(&r.client_a), Proto::H1).await.unwrap();
    let plain = token(&r.keys, BEARER_ONLY, None, 600);
    let ok = conn.get("bearer.local", "/items", bearer(&plain)).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.json()["scheme"], "bearer");
    assert_eq!(ok.json()["cnf_x5t"], serde_json::Value::Null);
    let lower = conn
        .get("bearer.local", "/items", Some(format!("bearer {plain}")))
        .await;
    assert_eq!(lower.status, 200);
    // A bound token cannot be downgraded to Bearer.
    let bound = token(&r.keys, BEARER_ONLY, Some(&r.client_a), 600);
    assert_invalid_token(
        &conn.get("bearer.local", "/", bearer(&bound)).await,
        "Bearer",
        "cnf",
    );
    // A PoP-only resource refuses Bearer.
    let pop_aud = token(&r.keys, POP_ONLY, None, 600);
    assert_invalid_token(
        &conn.get("pop.local", "/", bearer(&pop_aud)).await,
        "mtls_pop",
        "Bearer tokens are not accepted",
    );
    // Expired Bearer.
    let expired = token(&r.keys, BEARER_ONLY, None, -30);
    assert_invalid_token(
        &conn.get("bearer.local", "/", bearer(&expired)).await,
        "Bearer",
        "expired",
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_cannot_connect() {
    let r = start().await;
    // TLS 1.3: the client learns of the refusal on its first read, so try a request as well.
    let outcome = match connect(&r, None, Proto::H1).await {
        Err(_) => true,
        Ok(mut conn) => conn
            .send(
                "graph.local",
                "GET",
                "/",
                &[],
                Either::Left(Full::new(Bytes::new())),
            )
            .await
            .is_err(),
    };
    assert!(
        outcome,
        "the resource served a client without a certificate"
    );
    assert_eq!(r.observations.count(Endpoint::Resource), 0);
}

#[tokio::test]
async fn unknown_host_is_404() {
    let r = start().await;
    let mut conn = connect(&r, Some(&r.client_a), Proto::H2).await.unwrap();
    let t = token(&r.keys, GRAPH, Some(&r.client_a), 600);
    let reply = conn.get("elsewhere.local", "/", pop(&t)).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"], "unknown_resource");
}

/// A request body of `len` deterministic bytes, produced chunk by chunk (never held whole).
struct Upload {
    remaining: u64,
    counter: u8,
}

const UPLOAD_CHUNK: usize = 64 * 1024;

impl Body for Upload {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(UPLOAD_CHUNK as u64) as usize;
        self.remaining -= n as u64;
        self.counter = self.counter.wrapping_add(1);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![self.counter; n])))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

fn upload_sha256(len: u64) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    let (mut remaining, mut counter) = (len, 0u8);
    while remaining > 0 {
        let n = remaining.min(UPLOAD_CHUNK as u64) as usize;
        remaining -= n as u64;
        counter = counter.wrapping_add(1);
        ctx.update(&vec![counter; n]);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn large_uploads_are_counted_and_hashed() {
    let r = start().await;
    let t = token(&r.keys, GRAPH, Some(&r.client_a), 600);
    for (proto, len) in [(Proto::H1, 64u64 << 20), (Proto::H2, 4 << 20)] {
        let mut conn = connect(&r, Some(&r.client_a), proto).await.unwrap();
        let reply = conn
            .send(
                "graph.local",
                "PUT",
                "/blob",
                &[
                    ("authorization", format!("mtls_pop {t}")),
                    ("content-length", len.to_string()),
                ],
                Either::Right(Upload {
                    remaining: len,
                    counter: 0,
                }),
            )
            .await
            .unwrap();
        assert_eq!(reply.status, 200, "{proto:?}");
        let echo = reply.json();
        assert_eq!(echo["request_body_bytes"], len, "{proto:?}");
        assert_eq!(echo["request_body_sha256"], upload_sha256(len), "{proto:?}");
    }
}

#[tokio::test]
async fn response_size_status_and_delay_are_honoured() {
    let r = start().await;
    let t = token(&r.keys, GRAPH, Some(&r.client_a), 600);
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = connect(&r, Some(&r.client_a), proto).await.unwrap();
        let size = 100_003u64;
        let reply = conn
            .get("graph.local", &format!("/big?size={size}"), pop(&t))
            .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len() as u64, size, "{proto:?}");
        for (i, b) in reply.body.iter().enumerate() {
            assert_eq!(
                *b,
                popgate_authority::resource::body::generated_byte(i as u64),
                "byte {i}"
            );
        }
        let echo: serde_json::Value =
            serde_json::from_str(reply.headers["x-echo"].to_str().unwrap()).unwrap();
        assert_eq!(echo["appid"], APP);
        assert_eq!(echo["query"], format!("size={size}"));

        let by_header = conn
            .send(
                "graph.local",
                "GET",
                "/",
                &[
                    ("authorization", format!("mtls_pop {t}")),
                    ("x-response-size", "10".into()),
                ],
                Either::Left(Full::new(Bytes::new())),
            )
            .await
            .unwrap();
        assert_eq!(&by_header.body[..], b"abcdefghij");

        let status = conn
            .get("graph.local", "/?status=503&delay_ms=5", pop(&t))
            .await;
        assert_eq!(status.status, 503);
        assert_eq!(status.json()["authorized"], true);

        for bad in [
            "/?size=-1",
            "/?status=42",
            "/?delay_ms=999999999",
            "/?size=lots",
        ] {
            let reply = conn.get("graph.local", bad, pop(&t)).await;
            assert_eq!(reply.status, 400, "{bad}");
            assert_eq!(reply.json()["error"], "invalid_request", "{bad}");
        }
    }
}

#[tokio::test]
async fn faults_apply_to_the_resource() {
    let r = start().await;
    let t = token(&r.keys, GRAPH, Some(&r.client_a), 600);
    r.faults.push(
        Endpoint::Resource,
        Fault::Status {
            code: 429,
            retry_after: Some(3),
            body: None,
        },
        1,
    );
    r.faults.push(Endpoint::Resource, Fault::Drop, 1);
    r.faults
        .push(Endpoint::Resource, Fault::Delay { millis: 5 }, 1);
    let mut conn = connect(&r, Some(&r.client_a), Proto::H1).await.unwrap();
    let throttled = conn.get("graph.local", "/", pop(&t)).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.headers["retry-after"], "3");
    let dropped = conn
        .send(
            "graph.local",
            "GET",
            "/",
            &[("authorization", format!("mtls_pop {t}"))],
            Either::Left(Full::new(Bytes::new())),
        )
        .await;
    assert!(
        dropped.is_err(),
        "expected a dropped connection: {dropped:?}"
    );
    let mut conn = connect(&r, Some(&r.client_a), Proto::H2).await.unwrap();
    assert_eq!(conn.get("graph.local", "/", pop(&t)).await.status, 200);
    let statuses: Vec<u16> = r.observations.log().iter().map(|rec| rec.status).collect();
    assert_eq!(statuses, [429, 0, 200]);
}

#[tokio::test]
async fn dropping_the_handle_stops_serving() {
    let r = start().await;
    let addr = r.handle.addr();
    assert_eq!(r.handle.base_url(), format!("https://{addr}"));
    drop(r.handle);
    let mut stopped = false;
    for _ in 0..200 {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => {
                stopped = true;
                break;
            }
            Ok(_) => tokio::task::yield_now().await,
        }
    }
    assert!(
        stopped,
        "the resource still accepts after its handle was dropped"
    );
}

#[tokio::test]
async fn an_h1_request_without_host_is_400() {
    let r = start().await;
    let mut conn = connect(&r, Some(&r.client_a), Proto::H1).await.unwrap();
    let t = token(&r.keys, GRAPH, Some(&r.client_a), 600);
    let reply = conn.get("", "/", pop(&t)).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("names no host")
    );
}
