//! Requests through popgate reach a loopback mTLS upstream with the certificate presented and the
//! token attached; the caller's credentials and hop-by-hop headers do not.

use std::time::Duration;

use crate::kit::dataplane::*;
use http::{Request, Version};
use popgate::dataplane::ProxySettings;
use popgate::net::client::UpstreamSettings;

const GRAPH: &str = "graph.microsoft.com";

struct Setup {
    _dir: tempfile::TempDir,
    upstream: TestUpstream,
    proxy: TestProxy,
    x5t: String,
    authorization: String,
}

/// One PoP route for graph.microsoft.com → an upstream requiring a client cert from `pki`.
async fn setup(h2_upstream: bool, tweak: impl FnOnce(&mut UpstreamSettings)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("test-ca");
    let upstream = TestUpstream::start(&pki, &pki, h2_upstream).await;
    let binding = pki.binding("popgate-client");
    let token = pop_token(dir.path(), &binding, "m1");
    let authorization = token
        .authorization_header()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut settings =
        pki.upstream_settings(dir.path(), &[("graph.microsoft.com:443", upstream.addr)]);
    tweak(&mut settings);
    let proxy = start_proxy(
        vec![(route("graph", Some(GRAPH), None), Some(token))],
        &settings,
        ProxySettings::default(),
    )
    .await;
    Setup {
        _dir: dir,
        upstream,
        proxy,
        x5t: binding.x5t_s256().to_string(),
        authorization,
    }
}

#[tokio::test]
async fn absolute_form_presents_the_cert_attaches_the_token_and_drops_caller_credentials() {
    let s = setup(false, |_| {}).await;
    let req = Request::builder()
        .uri("http://graph.microsoft.com/v1.0/me?$select=id")
        .header("host", GRAPH)
        .header("authorization", "Bearer caller-own-token")
        .header("proxy-authorization", "Basic cHJveHk6c2VjcmV0")
        .header("connection", "keep-alive, x-caller-hop")
        .header("x-caller-hop", "1")
        .header("x-end-to-end", "kept")
        .body(TestBody::text("ping"))
        .unwrap();
    let resp = h1_send(s.proxy.addr, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "yes");
    assert_eq!(resp.headers()["via"], "1.1 popgate");
    assert!(
        resp.headers().get("x-upstream-hop").is_none(),
        "response hop-by-hop header leaked"
    );
    assert_eq!(text(resp).await, "hello from upstream");

    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(
        seen.client_x5t.as_deref(),
        Some(s.x5t.as_str()),
        "binding cert not presented"
    );
    let auths: Vec<_> = seen.headers.get_all("authorization").iter().collect();
    assert_eq!(auths.len(), 1, "exactly one Authorization upstream");
    assert_eq!(auths[0], s.authorization.as_str());
    assert!(s.authorization.starts_with("mtls_pop "));
    assert!(seen.header("proxy-authorization").is_none());
    assert!(seen.header("x-caller-hop").is_none());
    assert_eq!(seen.header("x-end-to-end"), Some("kept"));
    assert_eq!(seen.header("host"), Some(GRAPH));
    assert_eq!(seen.header("via"), Some("1.1 popgate"));
    assert_eq!(seen.path, "/v1.0/me?$select=id");
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.body_len, 4);
}

#[tokio::test]
async fn origin_form_routes_on_the_host_header() {
    let s = setup(false, |_| {}).await;
    let req = Request::builder()
        .uri("/v1.0/users")
        .header("host", "Graph.Microsoft.com:80")
        .body(TestBody::Empty)
        .unwrap();
    let resp = h1_send(s.proxy.addr, req).await;
    assert_eq!(resp.status(), 200);
    let seen = s.upstream.seen();
    assert_eq!(seen[0].path, "/v1.0/users");
    assert_eq!(seen[0].header("host"), Some(GRAPH));
    assert_eq!(
        seen[0].header("authorization"),
        Some(s.authorization.as_str())
    );
}

#[tokio::test]
async fn path_prefix_route_strips_the_prefix_and_prepends_the_base_path() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("test-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let binding = pki.binding("c");
    let token = pop_token(dir.path(), &binding, "m");
    let settings = pki.upstream_settings(dir.path(), &[("svc.example:443", upstream.addr)]);
    let mut spec = route("svc", None, Some("/svc"));
    spec.strip_prefix = true;
    spec.upstream = Some("https://svc.example/base".parse().unwrap());
    let proxy = start_proxy(
        vec![(spec, Some(token))],
        &settings,
        ProxySettings::default(),
    )
    .await;

    let req = Request::builder()
        .uri("/svc/items/7?q=1")
        .header("host", "popgate.local:3128")
        .body(TestBody::Empty)
        .unwrap();
    let resp = h1_send(proxy.addr, req).await;
    assert_eq!(resp.status(), 200);
    let seen = upstream.seen();
    assert_eq!(seen[0].path, "/base/items/7?q=1");
    assert_eq!(seen[0].header("host"), Some("svc.example"));
    assert_eq!(seen[0].client_x5t.as_deref(), Some(binding.x5t_s256()));
}

#[tokio::test]
async fn h2_upstream_by_alpn_and_h2c_inbound() {
    let s = setup(true, |_| {}).await;
    let req = Request::builder()
        .version(Version::HTTP_2)
        .uri("http://graph.microsoft.com/v1.0/me")
        .header("authorization", "Bearer caller")
        .body(TestBody::text("over h2"))
        .unwrap();
    let resp = h2c_send(s.proxy.addr, req).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(resp.headers()["via"], "2 popgate");
    assert_eq!(text(resp).await, "hello from upstream");
    let seen = s.upstream.seen();
    assert_eq!(seen[0].version, Version::HTTP_2, "upstream did not get h2");
    assert_eq!(seen[0].authority.as_deref(), Some(GRAPH));
    assert_eq!(
        seen[0].header("authorization"),
        Some(s.authorization.as_str())
    );
    assert_eq!(seen[0].header("via"), Some("2 popgate"));
    assert_eq!(seen[0].client_x5t.as_deref(), Some(s.x5t.as_str()));
    assert_eq!(seen[0].body_len, 7);
}

fn trailer_request(version: Version, uri: &str) -> Request<TestBody> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-caller-trailer", "sum".parse().unwrap());
    let mut builder = Request::builder()
        .method("POST")
        .version(version)
        .uri(uri)
        .header("te", "trailers")
        .header("trailer", "x-caller-trailer");
    if version == Version::HTTP_11 {
        builder = builder.header("host", GRAPH);
    }
    builder
        .body(TestBody::WithTrailers {
            data: Some(bytes::Bytes::from_static(b"payload")),
            trailers: Some(trailers),
        })
        .unwrap()
}

#[tokio::test]
async fn trailers_are_kept_both_ways_over_http1() {
    let s = setup(false, |_| {}).await;
    let resp = h1_send(
        s.proxy.addr,
        trailer_request(Version::HTTP_11, "http://graph.microsoft.com/trailers"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (_, body, trailers) = bounded(drain(resp.into_body(), true)).await;
    assert_eq!(body, b"with trailers");
    let trailers = trailers.expect("response trailers lost");
    assert_eq!(trailers["x-upstream-trailer"], "done");
    let seen = s.upstream.seen();
    let up = seen[0].trailers.as_ref().expect("request trailers lost");
    assert_eq!(up["x-caller-trailer"], "sum");
}

#[tokio::test]
async fn trailers_are_kept_both_ways_over_h2() {
    let s = setup(true, |_| {}).await;
    let resp = h2c_send(
        s.proxy.addr,
        trailer_request(Version::HTTP_2, "http://graph.microsoft.com/trailers"),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (_, body, trailers) = bounded(drain(resp.into_body(), true)).await;
    assert_eq!(body, b"with trailers");
    assert_eq!(
        trailers.expect("response trailers lost")["x-upstream-trailer"],
        "done"
    );
    let seen = s.upstream.seen();
    assert_eq!(
        seen[0].trailers.as_ref().expect("request trailers lost")["x-caller-trailer"],
        "sum"
    );
}

#[tokio::test]
async fn pool_bound_caps_upstream_handshakes_under_concurrency() {
    const CAP: usize = 2;
    const CALLERS: usize = 8;
    let mut s = setup(false, |u| u.pool.max_connections_per_host = CAP).await;
    let addr = s.proxy.addr;
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            tokio::spawn(async move { h1_send(addr, absolute_get(GRAPH, "/gate")).await.status() })
        })
        .collect();
    // The cap's worth of requests reach the upstream and wait there; the rest must queue in
    // popgate instead of dialling more connections.
    s.upstream.wait_gated(CAP).await;
    s.upstream.open_gate();
    for c in callers {
        assert_eq!(bounded(c).await.unwrap(), 200);
    }
    assert_eq!(s.upstream.requests(), CALLERS);
    let handshakes = s.upstream.handshakes();
    assert!(
        (1..=CAP).contains(&handshakes),
        "{handshakes} upstream TLS handshakes for a cap of {CAP}"
    );
}

#[tokio::test]
async fn keep_alive_reuses_one_upstream_connection() {
    let s = setup(false, |_| {}).await;
    for _ in 0..5 {
        let resp = h1_send(s.proxy.addr, absolute_get(GRAPH, "/v1.0/me")).await;
        assert_eq!(resp.status(), 200);
        text(resp).await;
    }
    assert_eq!(s.upstream.requests(), 5);
    assert_eq!(s.upstream.handshakes(), 1);
}

#[tokio::test]
async fn curl_through_the_proxy_reaches_the_upstream_with_the_token() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        crate::kit::skip_unless_ci(
            "curl_through_the_proxy_reaches_the_upstream_with_the_token",
            "curl is not installed",
        );
        return;
    }
    let s = setup(false, |_| {}).await;
    let proxy = format!("http://{}", s.proxy.addr);
    let output = bounded(tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "30", "-x", &proxy])
            .args(["-H", "Authorization: Bearer from-curl"])
            .arg("http://graph.microsoft.com/v1.0/me")
            .output()
            .unwrap()
    }))
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello from upstream"
    );
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(s.authorization.as_str())
    );
    assert_eq!(seen[0].client_x5t.as_deref(), Some(s.x5t.as_str()));

    // An unrouted host through curl: 403, and nothing more reaches the upstream.
    let proxy = format!("http://{}", s.proxy.addr);
    let output = bounded(tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "30",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-x",
                &proxy,
            ])
            .arg("http://unrouted.example/")
            .output()
            .unwrap()
    }))
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(out.ends_with("\n403"), "{out}");
    assert!(out.contains("\"no_route\""), "{out}");
    assert_eq!(s.upstream.requests(), 1);
}

#[tokio::test]
async fn bearer_token_without_certificate_is_forwarded_and_upstream_refuses_the_handshake() {
    // A bearer route without a certificate: popgate presents none; this upstream requires one,
    // so the TLS handshake fails and the caller gets a 502 naming the route.
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("test-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let token = bearer_token(dir.path(), "opaque-bearer", None);
    let settings = pki.upstream_settings(dir.path(), &[("graph.microsoft.com:443", upstream.addr)]);
    let proxy = start_proxy(
        vec![(route("graph-bearer", Some(GRAPH), None), Some(token))],
        &settings,
        ProxySettings {
            request_timeout: Duration::from_secs(30),
            ..ProxySettings::default()
        },
    )
    .await;
    let resp = h1_send(proxy.addr, absolute_get(GRAPH, "/")).await;
    assert_eq!(resp.status(), 502);
    let body = json(resp).await;
    assert_eq!(body["error"], "upstream_unreachable");
    assert_eq!(body["route"], "graph-bearer");
    assert_eq!(upstream.requests(), 0);
}

/// Over HTTP/1.1 popgate says `transfer-encoding: chunked` (hyper's client would drop a GET
/// body of unknown length otherwise); over h2 that field is refused, so it goes again.
#[tokio::test]
async fn a_chunked_get_body_is_forwarded_not_dropped() {
    for h2 in [false, true] {
        chunked_get_body_forwarded(h2).await;
    }
}

async fn chunked_get_body_forwarded(h2_upstream: bool) {
    let s = setup(h2_upstream, |_| {}).await;
    let req = Request::builder()
        .uri("http://graph.microsoft.com/search")
        .header("host", GRAPH)
        .header("transfer-encoding", "chunked")
        .body(TestBody::WithTrailers {
            data: Some(bytes::Bytes::from_static(b"query-in-body")),
            trailers: None,
        })
        .unwrap();
    let resp = h1_send(s.proxy.addr, req).await;
    assert_eq!(resp.status(), 200, "h2 upstream: {h2_upstream}");
    assert_eq!(s.upstream.seen()[0].body_len, 13);
}

#[tokio::test]
async fn a_published_snapshot_presents_its_own_certificate_on_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("test-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let (cert_a, cert_b) = (pki.binding("cert-a"), pki.binding("cert-b"));
    let token_a = pop_token(dir.path(), &cert_a, "a");
    let token_b = pop_token(dir.path(), &cert_b, "b");
    let settings = pki.upstream_settings(dir.path(), &[("graph.microsoft.com:443", upstream.addr)]);
    let proxy = start_proxy(
        vec![(route("graph", Some(GRAPH), None), Some(token_a))],
        &settings,
        ProxySettings::default(),
    )
    .await;
    let resp = h1_send(proxy.addr, absolute_get(GRAPH, "/one")).await;
    assert_eq!(resp.status(), 200);
    text(resp).await;

    // Rotation: a new snapshot (new config, new pool) replaces the old one.
    let table = proxy.table.load();
    let slot = table
        .lookup(Some(GRAPH), 80, "/")
        .unwrap()
        .route
        .payload()
        .clone();
    slot.publish(popgate::route::slot::Snapshot::build(&token_b, &settings, 2).unwrap());
    let resp = h1_send(proxy.addr, absolute_get(GRAPH, "/two")).await;
    assert_eq!(resp.status(), 200);
    text(resp).await;

    let seen = upstream.seen();
    assert_eq!(seen[0].client_x5t.as_deref(), Some(cert_a.x5t_s256()));
    assert_eq!(seen[1].client_x5t.as_deref(), Some(cert_b.x5t_s256()));
    let auth_b = token_b.authorization_header().unwrap();
    assert_eq!(seen[1].header("authorization"), auth_b.to_str().ok());
    assert_ne!(
        seen[0].header("authorization"),
        seen[1].header("authorization")
    );
    // The old pool's idle connection was not reused for the new certificate.
    assert_eq!(upstream.handshakes(), 2);
}

#[tokio::test]
async fn wildcard_route_forwards_to_the_matched_request_host() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("test-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let binding = pki.binding("c");
    let token = pop_token(dir.path(), &binding, "w");
    let settings = pki.upstream_settings(dir.path(), &[("api.svc.example:443", upstream.addr)]);
    let proxy = start_proxy(
        vec![(route("wild", Some("*.svc.example"), None), Some(token))],
        &settings,
        ProxySettings::default(),
    )
    .await;
    let resp = h1_send(proxy.addr, absolute_get("API.svc.example", "/x")).await;
    assert_eq!(resp.status(), 200);
    let seen = upstream.seen();
    assert_eq!(seen[0].header("host"), Some("api.svc.example"));
    assert_eq!(seen[0].client_x5t.as_deref(), Some(binding.x5t_s256()));
    // The bare suffix is not covered by the wildcard.
    let resp = h1_send(proxy.addr, absolute_get("svc.example", "/x")).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(upstream.requests(), 1);
}
