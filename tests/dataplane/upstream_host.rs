//! The `Host` an upstream gets: the route's upstream authority, without the port when it is 443,
//! on the first request (which hyper-util's client writes) and on every later one (popgate's
//! value prepared with the route once the host is known to answer over HTTP/1.1). Over HTTP/2
//! the authority travels as `:authority` and later requests carry no `Host`.

use http::Request;
use popgate::dataplane::ProxySettings;

use crate::kit::dataplane::{
    TestBody, TestPki, TestUpstream, absolute_get, h1_send, pop_token, route, start_proxy,
};

/// Requests per route: the first (protocol unknown) and later ones (HTTP/1.1 known).
const REQUESTS: usize = 4;

async fn hosts_seen(upstream_url: Option<&str>, resolve: &str, h2: bool) -> Vec<Option<String>> {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("host-ca");
    let upstream = TestUpstream::start(&pki, &pki, h2).await;
    let token = pop_token(dir.path(), &pki.binding("host-client"), "m");
    let settings = pki.upstream_settings(dir.path(), &[(resolve, upstream.addr)]);
    let mut spec = route("r", Some("svc.example"), None);
    spec.upstream = upstream_url.map(|u| u.parse().unwrap());
    let proxy = start_proxy(
        vec![(spec, Some(token))],
        &settings,
        ProxySettings::default(),
    )
    .await;
    for i in 0..REQUESTS {
        let request: Request<TestBody> = absolute_get("svc.example", &format!("/{i}"));
        let answer = h1_send(proxy.addr, request).await;
        assert_eq!(answer.status(), 200);
    }
    upstream
        .seen()
        .iter()
        .map(|s| s.header("host").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn an_exact_host_route_sends_its_host() {
    let seen = hosts_seen(None, "svc.example:443", false).await;
    assert_eq!(seen, vec![Some("svc.example".to_owned()); REQUESTS]);
}

#[tokio::test]
async fn an_upstream_on_another_port_gets_host_with_the_port() {
    let url = "https://upstream.svc.example:8443/base";
    let seen = hosts_seen(Some(url), "upstream.svc.example:8443", false).await;
    assert_eq!(
        seen,
        vec![Some("upstream.svc.example:8443".to_owned()); REQUESTS]
    );
}

#[tokio::test]
async fn an_upstream_naming_port_443_gets_host_without_it() {
    let url = "https://upstream.svc.example:443";
    let seen = hosts_seen(Some(url), "upstream.svc.example:443", false).await;
    assert_eq!(
        seen,
        vec![Some("upstream.svc.example".to_owned()); REQUESTS]
    );
}

#[tokio::test]
async fn an_h2_upstream_gets_no_host_once_it_is_known_to_speak_h2() {
    let seen = hosts_seen(None, "svc.example:443", true).await;
    assert_eq!(seen.len(), REQUESTS);
    assert!(
        seen[1..].iter().all(Option::is_none),
        "Host sent beside :authority: {seen:?}"
    );
}
