//! No open proxy: only route-matched requests leave, to an upstream built from config only; an
//! absolute-form target must agree with its Host header; hosts that could smuggle another
//! authority into a wildcard route's default upstream are refused; redirects go back to the
//! caller, never followed; per-route body limits hold for declared and streamed bodies.

use std::pin::Pin;
use std::task::{Context, Poll};

use crate::kit::dataplane::*;
use crate::kit::guard::*;
use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use popgate::route::policy::RoutePolicy;

// `Env` (a test PKI, an upstream trusting it, a temp dir) is the kit's; these are this file's uses.
impl Env {
    /// popgate with a wildcard route `*.svc.example` (default upstream: the matched host) and
    /// an exact route `limited.example` → https://svc.example with the given body limit.
    async fn proxy(&self, max_body_bytes: Option<u64>) -> popgate::dataplane::ProxyHandle {
        let settings = self.pki.upstream_settings(
            self.dir.path(),
            &[
                ("a.svc.example:443", self.upstream.addr),
                ("svc.example:443", self.upstream.addr),
            ],
        );
        let binding = self.pki.binding("popgate");
        let mut limited = route("limited", Some("limited.example"), None);
        limited.upstream = Some("https://svc.example".parse().unwrap());
        let routes = vec![
            (
                route("wild", Some("*.svc.example"), None),
                pop_token(self.dir.path(), &binding, "w"),
                RoutePolicy::default(),
            ),
            (
                limited,
                pop_token(self.dir.path(), &binding, "l"),
                RoutePolicy {
                    allow: None,
                    max_body_bytes,
                },
            ),
        ];
        start_guarded(routes, &settings, vec![plain_listener()], vec![]).await
    }
}

fn with_host(uri: &str, host: &str) -> Request<TestBody> {
    Request::builder()
        .uri(uri)
        .header("host", host)
        .body(TestBody::Empty)
        .unwrap()
}

#[tokio::test]
async fn absolute_form_must_name_the_same_host_as_the_host_header() {
    let env = Env::new().await;
    let proxy = env.proxy(None).await;
    let addr = proxy.local_addrs()[0];
    for (uri, host) in [
        ("http://a.svc.example/x", "evil.example"),
        ("http://a.svc.example/x", "a.svc.example:8080"),
        ("http://a.svc.example:8080/x", "a.svc.example"),
    ] {
        let resp = h1_send(addr, with_host(uri, host)).await;
        assert_eq!(resp.status(), 400, "{uri} with Host {host}");
        let body = json(resp).await;
        assert_eq!(body["error"], "bad_request", "{body}");
    }
    // Equal after case folding, a trailing dot and default-port folding: forwarded.
    let resp = h1_send(
        addr,
        with_host("http://A.svc.example./x", "a.svc.example:80"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(env.upstream.requests(), 1);
    assert_eq!(env.upstream.seen()[0].header("host"), Some("a.svc.example"));
    proxy.shutdown().await;
}

#[tokio::test]
async fn hosts_cannot_steer_a_wildcard_routes_upstream_elsewhere() {
    let env = Env::new().await;
    let proxy = env.proxy(None).await;
    let addr = proxy.local_addrs()[0];
    for host in [
        "evil.example@a.svc.example",
        "evil.example/a.svc.example",
        "evil.example%2f.svc.example",
        "evil.example#.svc.example",
        "evil.example\\.svc.example",
    ] {
        let resp = h1_send(addr, with_host("/x", host)).await;
        assert_eq!(resp.status(), 400, "Host {host}");
    }
    // Userinfo in an absolute-form target.
    let resp = h1_send(
        addr,
        with_host("http://u:p@a.svc.example/x", "a.svc.example"),
    )
    .await;
    assert_eq!(resp.status(), 400);
    // A port the route did not match: no route, nothing leaves.
    for host in ["a.svc.example:8443", "svc.example", "evil.example"] {
        let resp = h1_send(addr, with_host("/x", host)).await;
        assert_eq!(resp.status(), 403, "Host {host}");
        assert_eq!(json(resp).await["error"], "no_route");
    }
    assert_eq!(
        env.upstream.requests(),
        0,
        "a refused request reached the upstream"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn redirects_are_passed_back_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = CallerPki::new();
    let (chain, key) = pki.issue("upstream", "corp", &["graph.microsoft.com"], &[], true);
    let upstream = RedirectUpstream::start(chain, key, pki.roots()).await;
    let mut roots = popgate::net::upstream_tls::ExtraRoots::default();
    roots.add_der("caller-ca", pki.ca_der());
    let mut resolve = popgate::net::connect::ResolveMap::default();
    resolve
        .insert("graph.microsoft.com:443", upstream.addr)
        .unwrap();
    let settings = popgate::dataplane::UpstreamSettings {
        extra_roots: roots,
        resolve: std::sync::Arc::new(resolve),
        ..Default::default()
    };
    let (bchain, bkey) = pki.issue("popgate", "corp", &[], &[], false);
    let binding = popgate::certs::binding::BindingCert::from_der(bchain, bkey).unwrap();
    let token = pop_token(dir.path(), &binding, "r");
    let proxy = start_guarded(
        vec![(
            route("graph", Some("graph.microsoft.com"), None),
            token,
            RoutePolicy::default(),
        )],
        &settings,
        vec![plain_listener()],
        vec![],
    )
    .await;
    let resp = h1_send(
        proxy.local_addrs()[0],
        absolute_get("graph.microsoft.com", "/v1.0/me"),
    )
    .await;
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "https://elsewhere.example/next");
    assert_eq!(upstream.requests(), 1, "popgate followed the redirect");
    proxy.shutdown().await;
}

#[test]
fn a_route_can_only_point_at_an_https_upstream() {
    // A route's upstream is a validated `config::Upstream`; an http:// one cannot be built.
    let err = "http://a.example"
        .parse::<popgate::config::Upstream>()
        .unwrap_err();
    assert!(err.contains("must use https"), "{err}");
}

/// A body of unknown length (sent chunked): `total` bytes in 16 KiB chunks.
struct Chunked {
    remaining: usize,
}

impl Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this.remaining.min(16 * 1024);
        this.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'z'; n])))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

async fn send_chunked(
    addr: std::net::SocketAddr,
    total: usize,
) -> http::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/upload")
        .header("host", "limited.example")
        .body(Chunked { remaining: total })
        .unwrap();
    bounded(sender.send_request(req)).await.unwrap()
}

#[tokio::test]
async fn a_routes_body_limit_refuses_declared_and_streamed_bodies_with_413() {
    body_limit_refusals(false).await;
}

/// The same over an h2 upstream, where popgate's own h2 client sends the body: the limit crossed
/// mid-stream must reach the caller as `413`, not as a failed exchange (`502`).
#[tokio::test]
async fn a_routes_body_limit_refuses_bodies_with_413_on_an_h2_upstream() {
    body_limit_refusals(true).await;
}

/// A route's body limit against an upstream offering h2 (`h2`) or only HTTP/1.1.
async fn body_limit_refusals(h2: bool) {
    let env = Env::with_upstream(h2).await;
    let proxy = env.proxy(Some(1000)).await;
    let addr = proxy.local_addrs()[0];
    let post = |n: usize| {
        Request::post("/upload")
            .header("host", "limited.example")
            .body(TestBody::text(&"y".repeat(n)))
            .unwrap()
    };
    // Declared length over the limit: refused before anything is sent, whether the body is
    // small enough to be read ahead (1001) or would stream (100 000).
    for n in [1001, 100_000] {
        let resp = h1_send(addr, post(n)).await;
        assert_eq!(resp.status(), 413, "{n}");
        assert_eq!(json(resp).await["error"], "payload_too_large");
    }
    // Chunked, small enough to be read ahead: refused before anything is sent.
    assert_eq!(send_chunked(addr, 1500).await.status(), 413);
    assert_eq!(
        env.upstream.requests(),
        0,
        "an oversized body was forwarded"
    );
    // Not even a connection: the refusals came before popgate reached for the upstream.
    assert_eq!(
        env.upstream.handshakes(),
        0,
        "popgate connected upstream for a refused body"
    );
    // At the limit, declared and chunked: forwarded whole.
    assert_eq!(h1_send(addr, post(1000)).await.status(), 200);
    assert_eq!(send_chunked(addr, 1000).await.status(), 200);
    assert_eq!(env.upstream.requests(), 2);
    assert!(env.upstream.seen().iter().all(|s| s.body_len == 1000));
    // A long stream: cut off at the limit while streaming; the caller learns why.
    let resp = send_chunked(addr, 512 * 1024).await;
    assert_eq!(resp.status(), 413);
    assert!(
        env.upstream.seen().iter().all(|s| s.body_len <= 1000),
        "the upstream received bytes past the limit"
    );
    // Routes without a limit are not affected.
    let big = Request::post("/x")
        .header("host", "a.svc.example")
        .body(TestBody::text(&"y".repeat(5000)))
        .unwrap();
    assert_eq!(h1_send(addr, big).await.status(), 200);
    proxy.shutdown().await;
}
