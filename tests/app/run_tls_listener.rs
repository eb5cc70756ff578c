//! A TLS listener from routes.yaml (`listeners[].tls`, with `client_ca_file`): `App::start` builds
//! its server configuration from the loaded certificate, requires caller certificates, and serves
//! h1 by ALPN to the route.

use std::sync::Arc;
use std::time::Duration;

use crate::kit::signed_tokens::*;
use hyper_util::rt::TokioIo;
use popgate::app::App;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// A self-signed CA issuing the listener's certificate and the caller's.
struct CallerPki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl CallerPki {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "callers");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        Self { ca }
    }

    fn issue(
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

fn connector(
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
async fn get_me<S>(tls: S) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
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
async fn tls_app(
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
    crate::kit::private_key_mode(&dir.join("listener.key"));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_tls_listener_requires_caller_certificates_and_forwards() {
    let env = Env::start().await;
    let (app, pki, (caller, caller_key)) = tls_app(&env, "over-tls").await;
    let addr = app.local_addrs()[0];
    let name = ServerName::try_from("localhost").unwrap();

    // Without a caller certificate the handshake (or the first read) fails; nothing is forwarded.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let refused = match connector(&pki, None).connect(name.clone(), tcp).await {
        Err(_) => true,
        Ok(tls) => get_me(tls).await.is_err(),
    };
    assert!(refused, "a caller without a certificate was served");
    assert_eq!(env.resource_counts().0, 0);

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector(&pki, Some((&caller, &caller_key)))
        .connect(name, tcp)
        .await
        .unwrap();
    let response = get_me(tls).await.unwrap();
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let answer = Answer {
        status,
        headers: http::HeaderMap::new(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    assert_eq!(check_echo(&answer), "over-tls");
    app.shutdown().await;
}

/// An idle TLS caller is parked (hyper's buffers dropped, the rustls stream kept) and its next
/// request, after the parking grace, is served on the same connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_caller_idle_past_the_parking_grace_is_served_again_on_the_same_connection() {
    let env = Env::start().await;
    let (app, pki, (caller, caller_key)) = tls_app(&env, "parked-tls").await;
    let addr = app.local_addrs()[0];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector(&pki, Some((&caller, &caller_key)))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let parked_before = crate::kit::dataplane::parked();
    for round in 0..3 {
        let request = http::Request::builder()
            .uri("/v1.0/me")
            .header("host", GRAPH)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(REQUEST_BOUND, sender.send_request(request))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("round {round}: the parked connection failed: {e}"));
        assert_eq!(response.status(), 200, "round {round}");
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        // Past popgate's parking grace (250 ms) the connection leaves hyper: at least this
        // connection's idle spells so far (waited for, not slept past: timers run late on a
        // loaded machine).
        assert!(
            crate::kit::dataplane::parked_reaches(parked_before + f64::from(round + 1)).await,
            "round {round}: the idle TLS connection was not parked"
        );
        // Idle a while longer, parked, before the next request wakes it.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !conn.is_finished(),
        "popgate closed the idle TLS connection"
    );
    assert_eq!(env.resource_counts().0, 3);
    app.shutdown().await;
}
