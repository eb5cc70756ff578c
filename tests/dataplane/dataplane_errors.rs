//! popgate's own answers: 403 (no route, nothing leaves), 405 (CONNECT), 503 (no snapshot),
//! 502 (nothing listening; untrusted server certificate), 504 (silent upstream; hung response).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::kit::dataplane::*;
use http::{Request, Response};
use hyper::body::Incoming;
use popgate::dataplane::{ProxySettings, UpstreamSettings};
use popgate::identity::token::Token;

const GRAPH: &str = "graph.microsoft.com";

/// Upstream settings trusting `pki` in which graph.microsoft.com:443 resolves to `addr`.
fn graph_settings(pki: &TestPki, dir: &Path, addr: SocketAddr) -> UpstreamSettings {
    pki.upstream_settings(dir, &[("graph.microsoft.com:443", addr)])
}

/// popgate with no routes at all.
async fn routeless_proxy(dir: &Path) -> TestProxy {
    let settings = TestPki::new("ca").upstream_settings(dir, &[]);
    start_proxy(vec![], &settings, ProxySettings::default()).await
}

/// popgate with the one route "graph" (all of GRAPH) holding `token` (`None`: no snapshot).
async fn graph_proxy(
    settings: &UpstreamSettings,
    token: Option<Token>,
    proxy: ProxySettings,
) -> TestProxy {
    start_proxy(
        vec![(route("graph", Some(GRAPH), None), token)],
        settings,
        proxy,
    )
    .await
}

/// Asserts popgate's own answer: `status`, and the JSON body's `error` and `route`; returns the body.
async fn refusal(resp: Response<Incoming>, status: u16, error: &str) -> serde_json::Value {
    assert_eq!(resp.status(), status);
    let body = json(resp).await;
    assert_eq!(body["error"], error);
    assert_eq!(body["route"], "graph");
    body
}

#[tokio::test]
async fn unrouted_host_gets_403_and_nothing_reaches_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let binding = pki.binding("c");
    let token = pop_token(dir.path(), &binding, "m");
    // Even the unrouted name resolves to the upstream, so a leak would be counted there.
    let settings = pki.upstream_settings(
        dir.path(),
        &[
            ("graph.microsoft.com:443", upstream.addr),
            ("evil.example:443", upstream.addr),
        ],
    );
    let proxy = start_proxy(
        vec![(route("graph", Some(GRAPH), Some("/v1.0")), Some(token))],
        &settings,
        ProxySettings::default(),
    )
    .await;

    let resp = h1_send(proxy.addr, absolute_get("evil.example", "/v1.0/me")).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = json(resp).await;
    assert_eq!(body["error"], "no_route");
    assert_eq!(body["host"], "evil.example");

    // Routed host, but a path outside the route's prefix: also no route.
    let resp = h1_send(proxy.addr, absolute_get(GRAPH, "/beta/me")).await;
    assert_eq!(resp.status(), 403);

    // Origin-form without a Host header.
    let req = Request::builder()
        .uri("/v1.0/me")
        .body(TestBody::Empty)
        .unwrap();
    let resp = h1_send(proxy.addr, req).await;
    // hyper's h1 client adds no Host on its own for origin-form; either way it must be refused.
    assert_eq!(resp.status(), 403);
    assert!(json(resp).await["host"].is_null());

    assert_eq!(
        upstream.requests(),
        0,
        "a refused request reached the upstream"
    );
    assert_eq!(
        upstream.handshakes(),
        0,
        "a refused request opened an upstream connection"
    );
}

#[tokio::test]
async fn connect_gets_405_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = routeless_proxy(dir.path()).await;
    let req = Request::builder()
        .method("CONNECT")
        .uri("graph.microsoft.com:443")
        .header("host", "graph.microsoft.com:443")
        .body(TestBody::Empty)
        .unwrap();
    let resp = h1_send(proxy.addr, req).await;
    assert_eq!(resp.status(), 405);
    let body = json(resp).await;
    assert_eq!(body["error"], "connect_not_supported");
    assert!(
        body["message"].as_str().unwrap().contains("http:// URLs"),
        "{body}"
    );
}

#[tokio::test]
async fn credentials_in_the_url_get_400_without_echoing_them() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = routeless_proxy(dir.path()).await;
    let req = Request::builder()
        .uri("http://user:hunter2@graph.microsoft.com/")
        .body(TestBody::Empty)
        .unwrap();
    let resp = h1_send(proxy.addr, req).await;
    assert_eq!(resp.status(), 400);
    let body = crate::kit::dataplane::text(resp).await;
    assert!(!body.contains("hunter2"), "{body}");
}

#[tokio::test]
async fn route_without_a_snapshot_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let settings = graph_settings(&pki, dir.path(), upstream.addr);
    let proxy = graph_proxy(&settings, None, ProxySettings::default()).await;
    let resp = h1_send(proxy.addr, absolute_get(GRAPH, "/v1.0/me")).await;
    refusal(resp, 503, "no_token").await;
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn nothing_listening_gets_502_naming_route_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("ca");
    let dead = dead_addr();
    let token = pop_token(dir.path(), &pki.binding("c"), "m");
    let settings = graph_settings(&pki, dir.path(), dead);
    let proxy = graph_proxy(&settings, Some(token), ProxySettings::default()).await;
    let resp = h1_send(proxy.addr, absolute_get(GRAPH, "/")).await;
    let body = refusal(resp, 502, "upstream_unreachable").await;
    let cause = body["cause"].as_str().unwrap();
    assert!(
        cause.contains("TCP connect") && cause.contains(&dead.to_string()),
        "{cause}"
    );
}

#[tokio::test]
async fn untrusted_server_certificate_gets_502_naming_the_tls_failure() {
    let dir = tempfile::tempdir().unwrap();
    let trusted = TestPki::new("trusted-ca");
    let rogue = TestPki::new("rogue-ca");
    // The upstream's server cert comes from a CA popgate does not trust.
    let upstream = TestUpstream::start(&rogue, &trusted, false).await;
    let token = pop_token(dir.path(), &trusted.binding("c"), "m");
    let settings = graph_settings(&trusted, dir.path(), upstream.addr);
    let proxy = graph_proxy(&settings, Some(token), ProxySettings::default()).await;
    let resp = h1_send(proxy.addr, absolute_get(GRAPH, "/")).await;
    assert_eq!(resp.status(), 502);
    let body = json(resp).await;
    assert_eq!(body["route"], "graph");
    let cause = body["cause"].as_str().unwrap();
    assert!(cause.contains("TLS handshake"), "{cause}");
    assert!(cause.contains("certificate"), "{cause}");
    assert_eq!(upstream.requests(), 0);
}

#[tokio::test]
async fn silent_upstream_gets_504_after_the_connect_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("ca");
    let (silent, _task) = silent_listener().await;
    let token = pop_token(dir.path(), &pki.binding("c"), "m");
    let mut settings = graph_settings(&pki, dir.path(), silent);
    settings.connect_timeout = Duration::from_millis(300);
    let proxy = graph_proxy(&settings, Some(token), ProxySettings::default()).await;
    let resp = h1_send(proxy.addr, absolute_get(GRAPH, "/")).await;
    let body = refusal(resp, 504, "upstream_timeout").await;
    assert!(
        body["cause"].as_str().unwrap().contains("timed out"),
        "{body}"
    );
}

#[tokio::test]
async fn upstream_that_never_answers_gets_504_after_the_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let token = pop_token(dir.path(), &pki.binding("c"), "m");
    let settings = graph_settings(&pki, dir.path(), upstream.addr);
    let proxy = graph_proxy(
        &settings,
        Some(token),
        ProxySettings {
            request_timeout: Duration::from_secs(2),
            ..ProxySettings::default()
        },
    )
    .await;
    // Warm the pool so the hanging request only has to be written, not connected, in time.
    let resp = h1_send(proxy.addr, absolute_get(GRAPH, "/warm")).await;
    assert_eq!(resp.status(), 200);
    text(resp).await;
    let resp = h1_send(proxy.addr, absolute_get(GRAPH, "/hang")).await;
    refusal(resp, 504, "upstream_timeout").await;
    // It did reach the upstream: this is a response timeout, not a connect failure.
    assert_eq!(upstream.requests(), 2);
    assert_eq!(upstream.seen()[1].path, "/hang");
}

#[tokio::test]
async fn swapping_the_table_takes_effect_on_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let token = pop_token(dir.path(), &pki.binding("c"), "m");
    let settings = graph_settings(&pki, dir.path(), upstream.addr);
    let proxy = start_proxy(vec![], &settings, ProxySettings::default()).await;
    assert_eq!(
        h1_send(proxy.addr, absolute_get(GRAPH, "/")).await.status(),
        403
    );

    let slot = popgate::route::slot::RouteSlot::with_snapshot(
        "graph",
        popgate::route::slot::Snapshot::build(&token, &settings, 1).unwrap(),
    );
    let table = popgate::route::table::RouteTable::new(vec![(
        route("graph", Some(GRAPH), None),
        std::sync::Arc::new(slot),
    )]);
    proxy.table.store(std::sync::Arc::new(table));
    assert_eq!(
        h1_send(proxy.addr, absolute_get(GRAPH, "/")).await.status(),
        200
    );
    assert_eq!(upstream.requests(), 1);
}

#[tokio::test]
async fn an_expired_snapshot_is_never_injected() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let mut token = pop_token(dir.path(), &pki.binding("c"), "m");
    // The engine failed to refresh in time: the published token is past its expiry.
    token.expires_at = std::time::SystemTime::now() - Duration::from_secs(1);
    let settings = graph_settings(&pki, dir.path(), upstream.addr);
    let proxy = graph_proxy(&settings, Some(token), ProxySettings::default()).await;
    let resp = h1_send(proxy.addr, absolute_get(GRAPH, "/")).await;
    refusal(resp, 503, "no_token").await;
    assert_eq!(upstream.requests(), 0);
}
