//! A TLS caller listener from routes.yaml (`listeners[].tls` with `client_ca_file`): a caller CA
//! issuing the listener's certificate and the callers', popgate started with that listener, and a
//! TLS connector presenting a caller certificate.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use popgate::app::App;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::signed_tokens::{Env, GRAPH, REQUEST_BOUND};

/// A self-signed CA issuing the listener's certificate and the caller's.
pub struct CallerPki {
    pub ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl CallerPki {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "callers");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        Self { ca }
    }

    pub fn issue(
        &self,
        sans: &[&str],
        eku: rcgen::ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![eku];
        (params.signed_by(&key, &self.ca).unwrap(), key)
    }
}

/// A TLS connector trusting `pki`'s CA, offering only `http/1.1` by ALPN, and presenting
/// `client` (certificate and key) when given.
pub fn connector(
    pki: &CallerPki,
    client: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// `GET /v1.0/me` for `GRAPH` over `tls`, answered within `REQUEST_BOUND`.
pub async fn get_me<S>(tls: S) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::builder()
        .uri("/v1.0/me")
        .header("host", GRAPH)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    tokio::time::timeout(REQUEST_BOUND, sender.send_request(request))
        .await
        .unwrap()
}

/// popgate started from routes.yaml with a TLS listener that requires certificates from a new
/// caller CA; a token marked `marker`. Returns the app, the CA and a caller certificate.
pub async fn tls_app(
    env: &Env,
    marker: &str,
) -> (App, CallerPki, (rcgen::Certificate, rcgen::KeyPair)) {
    env.write_token(&env.token(&env.binding, Duration::from_secs(3600), marker));
    let pki = CallerPki::new();
    let (server, server_key) =
        pki.issue(&["localhost"], rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let caller = pki.issue(&[], rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    let dir = env.dir.path();
    std::fs::write(dir.join("listener.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("listener.key"), server_key.serialize_pem()).unwrap();
    super::private_key_mode(&dir.join("listener.key"));
    std::fs::write(dir.join("callers.pem"), pki.ca.pem()).unwrap();
    let path = env.config("");
    let yaml = std::fs::read_to_string(&path).unwrap().replace(
        "  - address: 127.0.0.1:0\n",
        "  - address: 127.0.0.1:0\n    tls: { cert_file: listener.pem, key_file: listener.key, client_ca_file: callers.pem }\n",
    );
    std::fs::write(&path, yaml).unwrap();
    let app = App::start(env.load(&path)).await.unwrap();
    app.initial_round(Duration::from_secs(60)).await;
    (app, pki, caller)
}
