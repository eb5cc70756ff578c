//! The TLS listener: h1 and h2 by ALPN, caller certificates required when a client CA is set;
//! and shutdown stops accepting.

use std::sync::Arc;

use crate::kit::dataplane::*;
use arc_swap::ArcSwap;
use http::{Request, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use popgate::dataplane::listener::server_tls_config;
use popgate::dataplane::{ListenerSpec, Proxy, ProxySettings};
use popgate::route::slot::{RouteSlot, Snapshot};
use popgate::route::table::RouteTable;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const GRAPH: &str = "graph.microsoft.com";

fn caller_tls(pki: &TestPki, with_cert: bool, alpn: &[u8]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(pki.roots());
    let mut config = if with_cert {
        let (chain, key) = pki.client_cert("legacy-app");
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// `GET /v1.0/me` for `GRAPH` (origin-form, Host header) over a new HTTP/1.1 connection on `io`.
async fn h1_get_me<S>(io: S) -> Result<http::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/v1.0/me")
        .header("host", GRAPH)
        .body(TestBody::Empty)
        .unwrap();
    sender.send_request(req).await
}

#[tokio::test]
async fn tls_listener_serves_h1_and_h2_by_alpn_and_requires_caller_certs() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let binding = pki.binding("c");
    let token = pop_token(dir.path(), &binding, "m");
    let settings = pki.upstream_settings(dir.path(), &[("graph.microsoft.com:443", upstream.addr)]);
    let slot = RouteSlot::with_snapshot("graph", Snapshot::build(&token, &settings, 1).unwrap());
    let table = RouteTable::new(vec![(route("graph", Some(GRAPH), None), Arc::new(slot))]);
    let (chain, key) = pki.server_cert(&["popgate.local"]);
    let tls = server_tls_config(chain, key, Some(pki.roots())).unwrap();
    let handle = Proxy::start(
        vec![ListenerSpec {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: Some(tls),
            intercept: None,
        }],
        Arc::new(ArcSwap::from_pointee(table)),
        ProxySettings::default(),
    )
    .await
    .unwrap();
    let addr = handle.local_addrs()[0];
    let name = ServerName::try_from("popgate.local").unwrap();

    // h1 over TLS, origin-form: the Host header routes.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = bounded(caller_tls(&pki, true, b"http/1.1").connect(name.clone(), tcp))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let resp = bounded(h1_get_me(tls)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "hello from upstream");

    // h2 over TLS: `:authority` routes.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = bounded(caller_tls(&pki, true, b"h2").connect(name.clone(), tcp))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .version(Version::HTTP_2)
        .uri("https://graph.microsoft.com/v1.0/me")
        .body(TestBody::Empty)
        .unwrap();
    let resp = bounded(sender.send_request(req)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.requests(), 2);
    for seen in upstream.seen() {
        assert_eq!(seen.client_x5t.as_deref(), Some(binding.x5t_s256()));
    }

    // A caller without a certificate never gets a request through.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let outcome = async {
        let tls = caller_tls(&pki, false, b"http/1.1")
            .connect(name.clone(), tcp)
            .await?;
        h1_get_me(tls).await.map_err(std::io::Error::other)
    };
    assert!(
        bounded(outcome).await.is_err(),
        "a caller without a certificate was served"
    );
    assert_eq!(upstream.requests(), 2);

    // After shutdown nothing accepts on the address any more.
    bounded(handle.shutdown()).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}

#[tokio::test]
async fn binding_the_same_address_twice_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let table = Arc::new(ArcSwap::from_pointee(RouteTable::new(vec![])));
    let err = Proxy::start(
        vec![ListenerSpec {
            addr,
            tls: None,
            intercept: None,
        }],
        table,
        ProxySettings::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[test]
fn listener_certificate_and_key_must_match() {
    let pki = TestPki::new("ca");
    let (chain, _) = pki.server_cert(&["popgate.local"]);
    let (_, other_key) = pki.server_cert(&["other"]);
    let err = server_tls_config(chain, other_key, None).unwrap_err();
    assert!(
        err.to_string().contains("listener certificate/key"),
        "{err}"
    );
}
