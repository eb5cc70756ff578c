//! Shared helpers for the authority's integration tests: a real TLS client (rustls + hyper client
//! conn) that dials the token listener on 127.0.0.1 with the SNI of a token host, optionally
//! presenting a client certificate; assertion builders; vector loading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use super::{TENANT, sorted_keys, unix_now, vector};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use popgate_authority::{AppCredential, Authority};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Every test request is bounded in time: a hung authority fails the test instead of hanging it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

pub const LOGIN: &str = "login.microsoftonline.com";
pub const MTLS: &str = "mtlsauth.microsoft.com";
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
pub const EXCHANGE_SCOPE: &str = "api://AzureADTokenExchange/.default";
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
pub const JWT_POP: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-pop";

/// A client certificate (chain + key) to present in TLS.
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl ClientCert {
    pub fn from_credential(credential: &AppCredential) -> Self {
        Self {
            chain: vec![credential.cert_der.clone()],
            key: PrivateKeyDer::from_pem_slice(credential.key_pem.as_bytes()).unwrap(),
        }
    }

    pub fn x5t(&self) -> String {
        popgate_authority::thumbprint::x5t_s256(self.chain[0].as_ref())
    }
}

/// A managed identity's binding certificate, issued by the authority's IMDS CA for a fresh
/// RSA key — what IMDSv2 issuecredential would hand out.
pub fn binding_cert(authority: &Authority, client_id: &str, tenant: &str) -> ClientCert {
    let now = SystemTime::now();
    binding_cert_valid(
        authority,
        client_id,
        tenant,
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    )
}

pub fn binding_cert_valid(
    authority: &Authority,
    client_id: &str,
    tenant: &str,
    not_before: SystemTime,
    not_after: SystemTime,
) -> ClientCert {
    use rcgen::PublicKeyData as _;
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let der = authority
        .pki()
        .issue_binding_cert_valid(
            &key.subject_public_key_info(),
            tenant,
            client_id,
            not_before,
            not_after,
        )
        .unwrap();
    ClientCert {
        chain: vec![CertificateDer::from(der)],
        key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    }
}

pub fn client_config(
    roots: rustls::RootCertStore,
    cert: Option<&ClientCert>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A response, body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Answer {
    /// Full or resumed TLS handshake.
    pub handshake: Option<rustls::HandshakeKind>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The AADSTS code of an ESTS error body.
    pub fn code(&self) -> u64 {
        self.json()["error_codes"][0]
            .as_u64()
            .unwrap_or_else(|| panic!("no error code in {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn description(&self) -> String {
        self.json()["error_description"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Asserts an ESTS refusal with `status` and `code`, and returns the description.
    pub fn refused(&self, status: u16, code: u64) -> String {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.code(),
            code,
            "unexpected code; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let description = self.description();
        assert!(
            description.starts_with(&format!("AADSTS{code}:")),
            "{description}"
        );
        description
    }

    /// The access token of a 200 answer.
    pub fn token(&self) -> String {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected a token; body: {}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()["access_token"].as_str().unwrap().to_string()
    }
}

/// Where and how to connect.
pub struct Dial<'a> {
    pub addr: SocketAddr,
    /// SNI; `None` dials with the IP address (no SNI).
    pub sni: Option<&'a str>,
    pub cert: Option<&'a ClientCert>,
    pub h2: bool,
}

/// Sends one request over a fresh TLS connection, trusting the authority's CA.
pub async fn send(
    authority: &Authority,
    dial: Dial<'_>,
    request: Request<Full<Bytes>>,
) -> Result<Answer, String> {
    send_trusting(authority.pki().root_store().unwrap(), dial, request).await
}

/// Sends one request over a fresh TLS connection, trusting `roots`.
pub async fn send_trusting(
    roots: rustls::RootCertStore,
    dial: Dial<'_>,
    request: Request<Full<Bytes>>,
) -> Result<Answer, String> {
    tokio::time::timeout(REQUEST_TIMEOUT, send_inner(roots, dial, request))
        .await
        .map_err(|_| "request timed out".to_string())?
}

async fn send_inner(
    roots: rustls::RootCertStore,
    dial: Dial<'_>,
    request: Request<Full<Bytes>>,
) -> Result<Answer, String> {
    let alpn: &[&[u8]] = if dial.h2 { &[b"h2"] } else { &[b"http/1.1"] };
    send_with_config(client_config(roots, dial.cert, alpn), dial, request).await
}

/// Sends one request over a fresh TLS connection made with `config` (reusing a config across
/// calls lets TLS sessions resume). `dial.cert` is ignored: the config holds the client cert.
pub async fn send_with_config(
    config: Arc<rustls::ClientConfig>,
    dial: Dial<'_>,
    request: Request<Full<Bytes>>,
) -> Result<Answer, String> {
    let connector = tokio_rustls::TlsConnector::from(config);
    let server_name = match dial.sni {
        Some(name) => ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?,
        None => ServerName::IpAddress(dial.addr.ip().into()),
    };
    let tcp = tokio::net::TcpStream::connect(dial.addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = connector
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let handshake = tls.get_ref().1.handshake_kind();
    let response = if dial.h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?
    };
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        handshake,
        status,
        headers,
        body,
    })
}

pub fn form_body(fields: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// A token POST to `https://{host}/{tenant}/oauth2/v2.0/token`.
pub fn token_request(host: &str, tenant: &str, fields: &[(&str, &str)]) -> Request<Full<Bytes>> {
    Request::post(format!("/{tenant}/oauth2/v2.0/token"))
        .header("host", host)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("client-request-id", uuid::Uuid::new_v4().to_string())
        .header("return-client-request-id", "true")
        .header("x-ms-lib-capability", "retry-after, h429")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(form_body(fields))))
        .unwrap()
}

/// POSTs `fields` to the token endpoint at `host` (SNI = Host = `host`).
pub async fn post_token(
    authority: &Authority,
    host: &str,
    cert: Option<&ClientCert>,
    fields: &[(&str, &str)],
) -> Answer {
    send(
        authority,
        Dial {
            addr: authority.token_addr(),
            sni: Some(host),
            cert,
            h2: false,
        },
        token_request(host, TENANT, fields),
    )
    .await
    .unwrap()
}

/// The form of a certificate-app (or MI) mTLS PoP request.
pub fn pop_form<'a>(client_id: &'a str, scope: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", client_id),
        ("grant_type", "client_credentials"),
        ("scope", scope),
        ("client_info", "2"),
        ("token_type", "mtls_pop"),
    ]
}

/// How a test assertion names its certificate.
#[derive(Clone, Copy)]
pub enum KeyRef {
    X5tS256,
    X5c,
    Neither,
}

/// A private_key_jwt assertion; `claims` overrides/extends the defaults (null removes).
pub fn assertion(
    credential: &AppCredential,
    alg: jsonwebtoken::Algorithm,
    key_ref: KeyRef,
    client_id: &str,
    audience: &str,
    overrides: serde_json::Value,
) -> String {
    use base64::Engine as _;
    let now = unix_now();
    let mut claims = serde_json::json!({
        "aud": audience,
        "iss": client_id,
        "sub": client_id,
        "exp": now + 600,
        "nbf": now,
        "iat": now,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    if let serde_json::Value::Object(extra) = overrides {
        for (k, v) in extra {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(&k);
            } else {
                claims[k] = v;
            }
        }
    }
    let mut header = jsonwebtoken::Header::new(alg);
    match key_ref {
        KeyRef::X5tS256 => header.x5t_s256 = Some(credential.x5t_s256.clone()),
        KeyRef::X5c => {
            header.x5c = Some(vec![
                base64::engine::general_purpose::STANDARD.encode(credential.cert_der.as_ref()),
            ])
        }
        KeyRef::Neither => {}
    }
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(credential.key_pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

pub fn token_audience(host: &str) -> String {
    format!("https://{host}/{TENANT}/oauth2/v2.0/token")
}

/// The claims of a JWT, without verifying it.
pub fn claims_of(jwt: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

pub async fn start() -> Authority {
    Authority::start(Default::default()).await.unwrap()
}
