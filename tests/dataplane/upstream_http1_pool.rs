//! popgate's own HTTP/1.1 upstream pool (`net::http1_pool`), through the whole proxy on real
//! loopback TLS: one connection carries sequential requests (also answers with no body, whose
//! body nobody polls), an idle connection is closed at `pool_idle_timeout` with no traffic, one
//! the upstream closed while idle is replaced without a caller error, a request the upstream may
//! have read is never sent twice, a response body the caller abandons does not give its
//! connection back, and a host that chooses h2 by ALPN is served over h2 on the connection
//! popgate dialed (no second handshake).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt as _;
use popgate::dataplane::ProxySettings;
use popgate::net::client::UpstreamSettings;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::kit::dataplane::*;

const HOST: &str = "svc.example";

/// popgate in front of `addr` (as `svc.example:443`) with `settings` changed by `tune`.
async fn proxy_to(
    pki: &TestPki,
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    tune: impl FnOnce(&mut UpstreamSettings),
) -> TestProxy {
    let token = pop_token(dir, &pki.binding("h1pool-client"), "h1pool");
    let mut settings = pki.upstream_settings(dir, &[("svc.example:443", addr)]);
    tune(&mut settings);
    start_proxy(
        vec![(route("r", Some(HOST), None), Some(token))],
        &settings,
        ProxySettings::default(),
    )
    .await
}

async fn get(proxy: &TestProxy, path: &str) -> (u16, String) {
    let response = h1_send(proxy.addr, absolute_get(HOST, path)).await;
    let status = response.status().as_u16();
    (status, text(response).await)
}

/// The upstream's open connections once they reach `want`, or after a bounded wait (5 s) what
/// they are then.
async fn open_settles_at(upstream: &TestUpstream, want: usize) -> usize {
    let mut open = upstream.state.open.load(Ordering::SeqCst);
    for _ in 0..50 {
        if open == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        open = upstream.state.open.load(Ordering::SeqCst);
    }
    open
}

#[tokio::test]
async fn sequential_requests_share_one_connection_also_when_the_body_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-reuse-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |_| {}).await;
    // Empty bodies (`Content-Length: 0`: the proxy may never poll them) and ordinary ones.
    for path in [
        "/download/0",
        "/a",
        "/download/0",
        "/b",
        "/download/0",
        "/c",
    ] {
        let (status, _) = get(&proxy, path).await;
        assert_eq!(status, 200, "{path}");
    }
    assert_eq!(upstream.requests(), 6);
    assert_eq!(upstream.handshakes(), 1, "one upstream connection for all");
    let seen = upstream.seen();
    // What hyper-util's client sent: origin-form target, the host's `Host`.
    assert!(seen.iter().all(|s| s.authority.is_none()), "{seen:?}");
    assert!(
        seen.iter().all(|s| s.header("host") == Some(HOST)),
        "{seen:?}"
    );
    assert_eq!(seen[1].path, "/a");
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_idle_timeout_without_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-idle-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |s| {
        s.pool_idle_timeout = Duration::from_millis(300);
    })
    .await;
    assert_eq!(get(&proxy, "/a").await.0, 200);
    assert_eq!(get(&proxy, "/b").await.0, 200);
    assert_eq!(upstream.handshakes(), 1);
    // Bounded wait for the upstream to see the connection closed.
    let open = open_settles_at(&upstream, 0).await;
    assert_eq!(open, 0, "the idle connection is still open after 5 s");
    // The next request dials again and succeeds.
    assert_eq!(get(&proxy, "/c").await.0, 200);
    assert_eq!(upstream.handshakes(), 2);
}

/// What a [`RawUpstream`] connection does after its first response.
#[derive(Clone, Copy, PartialEq)]
enum AfterFirst {
    /// Waits a little, then closes the connection (a keep-alive timeout shorter than popgate's).
    CloseWhileIdle,
    /// Reads the next request, then closes without answering.
    CloseOnNextRequest,
}

/// A TLS HTTP/1.1 upstream written by hand, answering each connection's first request with a
/// keep-alive `200`, then closing as `after` says. Counts connections and request heads.
struct RawUpstream {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

/// Bytes of a request head the raw upstream reads at most.
const MAX_HEAD: usize = 16 * 1024;

impl RawUpstream {
    async fn start(pki: &TestPki, after: AfterFirst) -> Self {
        let (chain, key) = pki.server_cert(&[HOST]);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(AtomicUsize::new(0));
        let (c, h) = (Arc::clone(&connections), Arc::clone(&heads));
        let task = tokio::spawn(async move {
            // Bounded: the tests make a handful of connections.
            for _ in 0..16 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (acceptor, h) = (acceptor.clone(), Arc::clone(&h));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if !read_head(&mut tls).await {
                        return;
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst")
                        .await;
                    let _ = tls.flush().await;
                    match after {
                        AfterFirst::CloseWhileIdle => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        AfterFirst::CloseOnNextRequest => {
                            if read_head(&mut tls).await {
                                h.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            addr,
            connections,
            heads,
            _task: task,
        }
    }
}

/// Reads one request head (up to its blank line); false at EOF or past [`MAX_HEAD`].
async fn read_head(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match bounded(io.read(&mut buf)).await {
            Ok(n) if n > 0 && head.len() + n <= MAX_HEAD => head.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-stale-ca");
    let upstream = RawUpstream::start(&pki, AfterFirst::CloseWhileIdle).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |_| {}).await;
    assert_eq!(get(&proxy, "/1").await, (200, "first".to_owned()));
    // The upstream closes the idle connection after 100 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&proxy, "/2").await, (200, "first".to_owned()));
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
    assert_eq!(upstream.heads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_request_the_upstream_may_have_read_is_never_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-noreplay-ca");
    let upstream = RawUpstream::start(&pki, AfterFirst::CloseOnNextRequest).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |_| {}).await;
    assert_eq!(get(&proxy, "/1").await.0, 200);
    // Written on the reused connection, read, then the connection closed: 502, not a replay.
    assert_eq!(get(&proxy, "/2").await.0, 502);
    assert_eq!(
        upstream.heads.load(Ordering::SeqCst),
        2,
        "sent exactly once"
    );
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_the_caller_abandons_does_not_give_its_connection_back() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-abandon-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |_| {}).await;
    // A large body: the caller reads one frame and goes away.
    let response = h1_send(proxy.addr, absolute_get(HOST, "/download/8000000")).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = bounded(body.frame()).await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    // The next requests work, on a new connection (the abandoned one is closed, not reused).
    for _ in 0..2 {
        assert_eq!(get(&proxy, "/after").await.0, 200);
    }
    assert_eq!(upstream.handshakes(), 2);
    let open = open_settles_at(&upstream, 1).await;
    assert_eq!(open, 1, "the abandoned connection was not closed");
}

#[tokio::test]
async fn a_host_choosing_h2_is_served_over_h2_on_the_connection_popgate_dialed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-h2-ca");
    let upstream = TestUpstream::start(&pki, &pki, true).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |_| {}).await;
    for i in 0..4 {
        assert_eq!(get(&proxy, &format!("/{i}")).await.0, 200);
    }
    let seen = upstream.seen();
    assert!(
        seen.iter().all(|s| s.version == http::Version::HTTP_2),
        "{seen:?}"
    );
    assert_eq!(
        upstream.handshakes(),
        1,
        "the first dial's connection was used"
    );
}
