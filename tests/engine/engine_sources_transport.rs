//! The credential transport against misbehaving peers on loopback: an oversized body is refused
//! while reading, a silent peer times out (and the token-endpoint / IMDS policies retry it the
//! exact number of times), and a peer that breaks TLS is reported as a TLS failure — which makes
//! an IMDSv2 identity mint a new certificate exactly once.

use crate::kit::credentials::*;
use popgate::engine::sources::retry::{Peer, RetryTiming, send_with_retry};
use popgate::identity::imds_endpoint::ImdsBase;
use popgate::identity::token_request::{TokenEndpoint, cert_app_mtls_pop};
use popgate::net::connect::ResolveMap;
use popgate::net::token_transport::{Transport, TransportSettings};
use rustls::pki_types::pem::PemObject as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A loopback peer that accepts connections and either holds them silently or closes them at
/// once; counts the connections.
async fn bad_peer(close_at_once: bool) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            if !close_at_once {
                held.push(socket);
            }
        }
    });
    (addr, accepted)
}

fn transport(resolve: &[(&str, SocketAddr)], ca_pem: &str) -> Transport {
    let mut map = ResolveMap::default();
    for (host, addr) in resolve {
        map.insert(host, *addr).unwrap();
    }
    let mut roots = popgate::net::upstream_tls::ExtraRoots::default();
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add_der("test ca", der.unwrap());
    }
    Transport::new(TransportSettings {
        resolve: Arc::new(map),
        extra_roots: roots,
        // Short bounds: the peers here never answer, so every call ends by timeout.
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(600),
        proxy: None,
    })
}

#[tokio::test]
async fn an_oversized_body_is_refused_while_reading() {
    let huge = "x".repeat(100_000);
    // The error also names the host, after exactly one token request (`app_pop_error`).
    let err = app_pop_error(Fault::Status {
        code: 200,
        retry_after: None,
        body: Some(huge),
    })
    .await;
    assert!(err.message.contains("65536-byte limit"), "{}", err.message);
}

#[tokio::test]
async fn a_silent_token_endpoint_times_out_and_is_retried_once() {
    let env = start().await;
    let (addr, accepted) = bad_peer(false).await;
    let t = transport(
        &[("mtlsauth.microsoft.com:443", addr)],
        &env.authority.ca_pem(),
    );
    let endpoint = TokenEndpoint::new("mtlsauth.microsoft.com", TENANT).unwrap();
    let request = cert_app_mtls_pop(&endpoint, &env.app.client_id, GRAPH).unwrap();
    let cert = env.throwaway_cert();
    let err = send_with_retry(
        &t,
        RetryTiming::scaled(RETRY_DIVISOR),
        Peer::TokenEndpoint,
        "test",
        &request,
        Some(&cert),
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(err.to_string().contains("mtlsauth.microsoft.com"), "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "one call and one retry");
}

#[tokio::test]
async fn a_silent_imds_times_out_and_is_retried_three_times() {
    let env = start().await;
    let (addr, accepted) = bad_peer(false).await;
    let t = transport(&[], &env.authority.ca_pem());
    let base = ImdsBase::parse(&format!("http://{addr}")).unwrap();
    let request = popgate::identity::imds_v1::token_request(&base, ARM, None).unwrap();
    let err = send_with_retry(
        &t,
        RetryTiming::scaled(RETRY_DIVISOR),
        Peer::Imds,
        "test",
        &request,
        None,
    )
    .await
    .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        4,
        "one call and three retries"
    );
}

#[tokio::test]
async fn a_tls_failure_at_the_imds_v2_token_endpoint_re_mints_once() {
    let env = start().await;
    let (addr, accepted) = bad_peer(true).await;
    env.authority
        .directory()
        .set_mtls_authentication_endpoint("https://broken.mtlsauth.example");
    let config = env.config_resolving(
        "",
        &routes(&[("r", GRAPH, "    flow: vanilla\n    identity: uami")]),
        &[("broken.mtlsauth.example:443", addr)],
    );
    let deps = env.deps(&config);
    let credential = env.build(&config, &deps).remove("r").unwrap();
    let err = try_get(&credential).await.unwrap_err();
    assert!(
        err.message.contains("TLS") && err.message.contains("broken.mtlsauth.example"),
        "{}",
        err.message
    );
    assert_eq!(env.count(Endpoint::ImdsIssueCredential), 2, "one re-mint");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "one attempt per certificate"
    );
    assert_eq!(*credential.binding_changes().borrow(), 2);
}
