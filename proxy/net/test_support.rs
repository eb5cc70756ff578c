//! Loopback peers the network modules' unit tests dial.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::ClientConfig;
use tokio::net::TcpListener;

use crate::net::connect::{ConnectSettings, ResolveMap, UpstreamConnector};

/// A listener that accepts and then says nothing (a TLS handshake to it never ends), counting
/// its accepts.
pub(crate) async fn silent() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (addr, accepted)
}

/// A connector that dials `up.test:443` at `addr` (no client certificate, no roots: the tests
/// that use it never finish a handshake), up to 8 connections, with a 30 s connect timeout.
pub(crate) fn connector_to(addr: SocketAddr) -> UpstreamConnector {
    connector_timing_out(addr, Duration::from_secs(30))
}

/// [`connector_to`] with `connect_timeout`.
pub(crate) fn connector_timing_out(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> UpstreamConnector {
    let mut resolve = ResolveMap::default();
    resolve.insert("up.test:443", addr).unwrap();
    let tls = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    UpstreamConnector::new(
        Arc::new(tls),
        ConnectSettings {
            resolve: Arc::new(resolve),
            connect_timeout,
            max_connections_per_host: 8,
            pool_metrics: None,
            proxy: None,
        },
    )
}

/// Waits (bounded) until `accepted` reaches `n`.
pub(crate) async fn accepts(accepted: &AtomicUsize, n: usize) {
    for _ in 0..200 {
        if accepted.load(Ordering::SeqCst) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} dials, expected {n}", accepted.load(Ordering::SeqCst));
}
