//! CONNECT interception on a TLS listener with client authentication (`tls.client_ca_file`),
//! through the real binary: the tunnel's caller is the outer connection's client certificate, and
//! the only route of the host admits one certificate identity (`allow: [{dns_san: …}]`). A caller
//! presenting that certificate CONNECTs, gets the intercepted TLS and its inner request is
//! forwarded with the token; a caller with another valid certificate from the same CA gets
//! `403 caller_not_allowed` to its CONNECT (counted as `not_allowed`) before any inner TLS; a
//! caller without a certificate is refused by the outer handshake and never gets an HTTP answer.
//! Nothing is forwarded and no token requested for the refused two.

use std::net::SocketAddr;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::intercept::{admin_addr, assert_bound, ca_init, metric, read_all, tls_client};
use crate::kit::authority::resource_requests;
use crate::kit::process::{Env, Popgate, REQUEST_BOUND, route};
use crate::kit::tls_callers::{CallerPki, connector};

/// The DNS SAN the route admits, and the one of the other caller from the same CA.
const ALLOWED_SAN: &str = "allowed.callers.test";
const OTHER_SAN: &str = "other.callers.test";
/// The host every CONNECT here names, which the route matches.
const HOST: &str = "graph.microsoft.com";

/// A caller identity issued by the callers' CA (the kit's, which also issues the listener's
/// certificate), named `san` in its SAN and CN.
fn issue(pki: &CallerPki, san: &str, eku: rcgen::ExtendedKeyUsagePurpose) -> Identity {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![san.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, san);
    params.extended_key_usages = vec![eku];
    Identity {
        cert: params.signed_by(&key, &pki.ca).unwrap(),
        key,
    }
}

struct Identity {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

/// Opens the outer TLS connection to the listener, presenting `identity`.
async fn outer_tls(
    proxy: SocketAddr,
    pki: &CallerPki,
    identity: Option<&Identity>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(proxy).await?;
    let name = ServerName::try_from("localhost").unwrap();
    // An HTTPS proxy is spoken to in HTTP/1.1 (a CONNECT must be HTTP/1.1): the kit's connector
    // offers only `http/1.1`.
    let connector = connector(pki, identity.map(|id| (&id.cert, &id.key)));
    tokio::time::timeout(REQUEST_BOUND, connector.connect(name, tcp))
        .await
        .expect("the outer handshake ended within its bound")
}

/// Sends `CONNECT HOST:443` on `s` and reads the answer's head (`Err`: what ended the read
/// before a whole head, with the bytes read so far).
async fn send_connect<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<String, String> {
    let target = format!("{HOST}:443");
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let read = tokio::time::timeout(REQUEST_BOUND, s.read(&mut b))
            .await
            .expect("the CONNECT answer (or a close) came within its bound");
        match read {
            Ok(0) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&head))),
            Ok(_) => head.push(b[0]),
            Err(e) => {
                return Err(format!("{e} after {:?}", String::from_utf8_lossy(&head)));
            }
        }
    }
    Ok(String::from_utf8(head).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_listener_admits_the_tunnel_of_the_allowed_certificate_only() {
    let env = Env::start().await;
    let dir = env.dir.path();
    let ca = tokio::task::block_in_place(|| ca_init(&dir.join("intercept")));
    let pki = CallerPki::new();
    let server = issue(
        &pki,
        "localhost",
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    );
    let allowed = issue(
        &pki,
        ALLOWED_SAN,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    );
    let other = issue(&pki, OTHER_SAN, rcgen::ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(dir.join("listener.pem"), server.cert.pem()).unwrap();
    std::fs::write(dir.join("listener.key"), server.key.serialize_pem()).unwrap();
    crate::kit::private_key_mode(&dir.join("listener.key"));
    std::fs::write(dir.join("callers.pem"), pki.ca.pem()).unwrap();

    let allow = format!("    allow: [{{ dns_san: {ALLOWED_SAN} }}]\n");
    let top = "admin:\n  address: 127.0.0.2:0\n";
    let path = env.write_config_with(top, &route("graph", None, "app", &allow));
    let yaml = std::fs::read_to_string(&path).unwrap().replacen(
        "  - address: 127.0.0.1:0\n",
        "  - address: 127.0.0.1:0\n    tls: { cert_file: listener.pem, key_file: listener.key, client_ca_file: callers.pem }\n    intercept: { ca_cert_file: intercept/popgate-ca.pem, ca_key_file: intercept/popgate-ca.key }\n",
        1,
    );
    std::fs::write(&path, yaml).unwrap();
    let mut popgate = Popgate::start(&path);
    let proxy = tokio::task::block_in_place(|| popgate.wait_serving());
    let admin = tokio::task::block_in_place(|| admin_addr(&mut popgate));

    // The allowed certificate: 200 to the CONNECT, the intercepted TLS for the host (chaining
    // to the interception CA), and the inner request forwarded with the bound token.
    let mut outer = outer_tls(proxy, &pki, Some(&allowed)).await.unwrap();
    let head = send_connect(&mut outer).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let name = ServerName::try_from(HOST).unwrap();
    let mut inner = tls_client(&ca).connect(name, outer).await.unwrap();
    inner
        .write_all(
            format!("GET /v1.0/me HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let answer = read_all(&mut inner).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert_bound(body, "/v1.0/me");

    let tokens = env.token_requests();
    let forwarded = resource_requests(&env.authority).len();

    // Another valid certificate from the same CA: the outer handshake succeeds, the CONNECT is
    // refused by the route's rule before any inner TLS, and the connection is closed.
    let mut outer = outer_tls(proxy, &pki, Some(&other)).await.unwrap();
    let head = send_connect(&mut outer).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let body = read_all(&mut outer).await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(json["error"], "caller_not_allowed", "{json}");
    assert_eq!(json["route"], "graph", "{json}");

    // No certificate: refused by the outer handshake (TLS 1.3 lets the client finish first, so
    // the refusal arrives as the server's alert on the first read); never an HTTP answer.
    match outer_tls(proxy, &pki, None).await {
        Err(e) => assert!(e.to_string().contains("Certificate"), "{e}"),
        Ok(mut outer) => {
            let refused = send_connect(&mut outer).await.unwrap_err();
            assert!(refused.contains("CertificateRequired"), "{refused}");
        }
    }

    assert_eq!(
        env.token_requests(),
        tokens,
        "a refused caller made popgate request a token"
    );
    assert_eq!(
        resource_requests(&env.authority).len(),
        forwarded,
        "a refused caller's tunnel forwarded something"
    );
    assert_eq!(
        metric(admin, "popgate_intercept_tunnels_opened_total").await,
        1.0
    );
    assert_eq!(
        metric(
            admin,
            "popgate_intercept_tunnels_refused_total{reason=\"not_allowed\"}"
        )
        .await,
        1.0
    );

    popgate.signal("TERM");
    assert!(tokio::task::block_in_place(|| popgate.wait_exit()).success());
}
