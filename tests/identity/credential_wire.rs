//! The credential protocol over real loopback sockets: popgate's request builders and parsers
//! drive an IMDSv2 exchange against a minimal IMDS peer (plain HTTP) and a token endpoint peer
//! that demands a client certificate (rustls mTLS). The peers live in this file only because the
//! local authority crate is built in parallel; they check what a real peer would check.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use der::{Decode as _, Encode as _};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use popgate::certs::binding::x5t_s256;
use popgate::identity::csr::{BindingKey, build_csr};
use popgate::identity::imds_endpoint::{ImdsBase, UamiSelector, V2_DEFAULT_RESOURCE_ID_KEY};
use popgate::identity::imds_v2::{
    issue_credential_request, parse_issued_credential, parse_platform_metadata,
    platform_metadata_request,
};
use popgate::identity::outbound_request::CredentialRequest;
use popgate::identity::retry_policy::{self, Outcome, RetryDecision};
use popgate::identity::token::TokenType;
use popgate::identity::token_response::parse_token_response;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Bound on the whole exchange: loopback round trips take milliseconds.
const TEST_DEADLINE: Duration = Duration::from_secs(60);
/// Each peer serves at most this many connections, then stops accepting.
const MAX_CONNECTIONS: usize = 8;

const TENANT: &str = "751a212b-4003-416e-b600-e1f48e40db9f";
const CLIENT_ID: &str = "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3";

/// What a peer saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: http::Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Bytes,
    client_cert: Option<CertificateDer<'static>>,
}

type Handler = Arc<dyn Fn(&Seen) -> Response<Full<Bytes>> + Send + Sync>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Serves HTTP/1 on `listener` (through TLS when `tls` is set), recording every request.
fn spawn_peer(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    seen: Arc<Mutex<Vec<Seen>>>,
    handler: Handler,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (seen, handler, tls) = (seen.clone(), handler.clone(), tls.clone());
            tokio::spawn(async move {
                let serve = |client_cert: Option<CertificateDer<'static>>| {
                    service_fn(move |req: Request<Incoming>| {
                        let (seen, handler, client_cert) =
                            (seen.clone(), handler.clone(), client_cert.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let request = Seen {
                                method: parts.method,
                                uri: parts.uri,
                                headers: parts.headers,
                                body,
                                client_cert,
                            };
                            let response = handler(&request);
                            seen.lock().unwrap().push(request);
                            Ok::<_, hyper::Error>(response)
                        }
                    })
                };
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(tcp), serve(None))
                            .await;
                    }
                    Some(acceptor) => {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let cert = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .cloned();
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), serve(cert))
                            .await;
                    }
                }
            });
        }
    })
}

/// Sends a built request on one connection, in origin form with a Host header (as an HTTP
/// client does), and returns status, headers and body.
/// `request` over a new TLS connection to `addr` (a loopback peer).
async fn send_tls(
    connector: &TlsConnector,
    addr: SocketAddr,
    request: &CredentialRequest,
) -> (StatusCode, HeaderMap, Bytes) {
    let tls = connector
        .connect(
            ServerName::try_from("127.0.0.1").unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        )
        .await
        .unwrap();
    send(tls, request).await
}

async fn send<S>(io: S, request: &CredentialRequest) -> (StatusCode, HeaderMap, Bytes)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let built = request.request();
    let mut outgoing = Request::builder()
        .method(built.method())
        .uri(built.uri().path_and_query().unwrap().as_str())
        .header(
            http::header::HOST,
            built.uri().authority().unwrap().as_str(),
        );
    for (name, value) in built.headers() {
        outgoing = outgoing.header(name, value);
    }
    let response = sender
        .send_request(outgoing.body(Full::new(built.body().clone())).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A test CA that signs the TLS server's certificate and the IMDS-issued client certificates.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "popgate wire-test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: rcgen::Issuer::new(params, key),
            der: cert.der().clone(),
        }
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        Arc::new(roots)
    }
}

/// IMDS's `issuecredential`: verifies the CSR's PSS signature and issues a client certificate
/// for its public key, pointing the token request at `token_base`.
fn issue(ca: &Ca, seen: &Seen, token_base: &str) -> Response<Full<Bytes>> {
    let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
    let csr_der = STANDARD.decode(body["csr"].as_str().unwrap()).unwrap();
    let csr = x509_cert::request::CertReq::from_der(&csr_der).unwrap();
    let spki = csr.info.public_key.to_der().unwrap();
    UnparsedPublicKey::new(
        &RSA_PSS_2048_8192_SHA256,
        csr.info.public_key.subject_public_key.raw_bytes(),
    )
    .verify(&csr.info.to_der().unwrap(), csr.signature.raw_bytes())
    .expect("the CSR's RSASSA-PSS signature verifies");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CLIENT_ID);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let public = rcgen::SubjectPublicKeyInfo::from_der(&spki).unwrap();
    let cert = params.signed_by(&public, &ca.issuer).unwrap();
    json(
        StatusCode::OK,
        serde_json::json!({
            "client_id": CLIENT_ID,
            "tenant_id": TENANT,
            "certificate": STANDARD.encode(cert.der()),
            "identity_type": "SystemAssigned",
            "mtls_authentication_endpoint": token_base,
        }),
    )
}

#[derive(Debug)]
struct Present(Arc<CertifiedKey>);

impl ResolvesClientCert for Present {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn imds_v2_exchange_over_loopback_sockets_and_mtls() {
    tokio::time::timeout(TEST_DEADLINE, exchange())
        .await
        .expect("the exchange finished in time");
}

async fn exchange() {
    let ca = Arc::new(Ca::new());

    // Token endpoint peer: TLS with a required client certificate from the CA.
    let token_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_addr = token_listener.local_addr().unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca.issuer)
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(ca.roots(), provider())
        .build()
        .unwrap();
    let server_config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        )
        .unwrap();
    let token_seen = Arc::new(Mutex::new(Vec::new()));
    let throttle = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let throttle_in_peer = throttle.clone();
    let token_peer = spawn_peer(
        token_listener,
        Some(TlsAcceptor::from(Arc::new(server_config))),
        token_seen.clone(),
        Arc::new(move |seen: &Seen| {
            if throttle_in_peer.load(std::sync::atomic::Ordering::SeqCst) {
                let mut r = json(
                    StatusCode::TOO_MANY_REQUESTS,
                    serde_json::json!({"error":"Server overload","error_codes":[90010],"correlation_id":"c-429"}),
                );
                r.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    http::HeaderValue::from_static("120"),
                );
                return r;
            }
            let x5t = x5t_s256(
                seen.client_cert
                    .as_ref()
                    .expect("client certificate")
                    .as_ref(),
            );
            json(
                StatusCode::OK,
                serde_json::json!({"token_type":"mtls_pop","expires_in":"3599","access_token":format!("bound.{x5t}.sig")}),
            )
        }),
    );

    // IMDS peer: plain HTTP, as on the link-local address.
    let imds_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let imds_addr = imds_listener.local_addr().unwrap();
    let imds_seen = Arc::new(Mutex::new(Vec::new()));
    let token_base = format!("https://{token_addr}");
    let ca_in_peer = ca.clone();
    let imds_peer = spawn_peer(
        imds_listener,
        None,
        imds_seen.clone(),
        Arc::new(move |seen: &Seen| match seen.uri.path() {
            "/metadata/identity/getplatformmetadata" => {
                let mut r = json(
                    StatusCode::OK,
                    serde_json::json!({"cuId":{"vmId":"vm-wire","vmssId":"ss-wire"},"clientId":CLIENT_ID,"tenantId":TENANT,"attestationEndpoint":"https://attest"}),
                );
                r.headers_mut().insert(
                    http::header::SERVER,
                    http::HeaderValue::from_static("IMDS/150.870.65.1854"),
                );
                r
            }
            "/metadata/identity/issuecredential" => issue(&ca_in_peer, seen, &token_base),
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error":"not_found"}),
            ),
        }),
    );

    let base = ImdsBase::parse(&format!("http://{imds_addr}")).unwrap();
    let uami = UamiSelector::ClientId(CLIENT_ID.into());

    // 1. getplatformmetadata
    let req = platform_metadata_request(&base, Some(&uami), V2_DEFAULT_RESOURCE_ID_KEY).unwrap();
    let (status, headers, body) = send(TcpStream::connect(imds_addr).await.unwrap(), &req).await;
    let metadata = parse_platform_metadata(status, &headers, &body).unwrap();
    assert_eq!(metadata.cu_id.vmss_id.as_deref(), Some("ss-wire"));

    // 2–4. key, CSR, issuecredential
    let key = BindingKey::generate().unwrap();
    let csr = build_csr(
        &key,
        &metadata.tenant_id,
        &metadata.client_id,
        &metadata.cu_id,
    )
    .unwrap();
    let req = issue_credential_request(&base, Some(&uami), V2_DEFAULT_RESOURCE_ID_KEY, &csr, None)
        .unwrap();
    let (status, _, body) = send(TcpStream::connect(imds_addr).await.unwrap(), &req).await;
    let issued = parse_issued_credential(status, &body).unwrap();
    let binding = issued.binding_cert(&key).unwrap();

    {
        let seen = imds_seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].method, http::Method::GET);
        assert_eq!(
            seen[0].uri.to_string(),
            format!(
                "/metadata/identity/getplatformmetadata?cred-api-version=2.0&client_id={CLIENT_ID}"
            )
        );
        assert_eq!(seen[0].headers["metadata"], "true");
        assert!(
            uuid::Uuid::parse_str(seen[0].headers["x-ms-client-request-id"].to_str().unwrap())
                .is_ok()
        );
        assert_eq!(seen[1].method, http::Method::POST);
        assert_eq!(seen[1].headers["content-type"], "application/json");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&seen[1].body).unwrap(),
            serde_json::json!({"csr": csr.to_base64()})
        );
    }

    // 5. the token request, over mTLS presenting the issued certificate
    let mut client_config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_client_cert_resolver(Arc::new(Present(binding.certified_key())));
    client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(client_config));
    let req = issued
        .token_request("https://management.azure.com")
        .unwrap();
    assert_eq!(
        req.request().uri().to_string(),
        format!("https://{token_addr}/{TENANT}/oauth2/v2.0/token")
    );
    let sent_at = SystemTime::now();
    let (status, _, body) = send_tls(&connector, token_addr, &req).await;
    let token = parse_token_response(
        status,
        &body,
        TokenType::MtlsPop,
        sent_at,
        Some(binding.clone()),
    )
    .unwrap();
    assert_eq!(
        token.access_token.expose_secret(),
        format!("bound.{}.sig", binding.x5t_s256())
    );
    assert_eq!(token.expires_at, sent_at + Duration::from_secs(3599));
    {
        let seen = token_seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let form: Vec<(String, String)> =
            form_urlencoded::parse(&seen[0].body).into_owned().collect();
        let expected: Vec<(String, String)> = [
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("scope", "https://management.azure.com/.default"),
            ("token_type", "mtls_pop"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(form, expected);
        assert_eq!(
            seen[0].headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(
            seen[0].headers["client-request-id"],
            req.client_request_id().to_string().as_str()
        );
        assert_eq!(seen[0].headers["x-ms-lib-capability"], "retry-after, h429");
        assert_eq!(seen[0].client_cert.as_ref(), Some(binding.leaf_der()));
    }

    // A throttled answer from the same peer: parsed into a named error, never retried, blocked.
    throttle.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, headers, body) = send_tls(&connector, token_addr, &req).await;
    let err = parse_token_response(
        status,
        &body,
        TokenType::MtlsPop,
        SystemTime::now(),
        Some(binding),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("Server overload AADSTS90010 (HTTP 429, correlation id c-429)"),
        "{err}"
    );
    let now = Instant::now();
    assert_eq!(
        retry_policy::token_endpoint(
            0,
            &Outcome::Response {
                status,
                headers: &headers
            },
            now,
            SystemTime::now()
        ),
        RetryDecision::BlockedUntil(now + Duration::from_secs(120))
    );

    token_peer.abort();
    imds_peer.abort();
}
