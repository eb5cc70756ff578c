//! A TLS listener from routes.yaml (`listeners[].tls`, with `client_ca_file`): `App::start` builds
//! its server configuration from the loaded certificate, requires caller certificates, and serves
//! h1 by ALPN to the route.

use crate::kit::signed_tokens::*;
use crate::kit::tls_callers::{connector, get_me, tls_app};
use rustls_pki_types::ServerName;

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
