//! First contact with an upstream whose protocol popgate does not know yet: a burst of callers
//! on a cold route must not each open a connection when the upstream speaks h2 (one connection
//! carries them all), and must all be answered either way.

use std::time::Duration;

use popgate::dataplane::ProxySettings;
use popgate::net::client::UpstreamSettings;

use crate::kit::dataplane::{TestPki, TestUpstream, absolute_get, h1_send, text};
use crate::kit::raw::{GRAPH, graph_proxy};

/// Callers that arrive together on the cold route: more than one, fewer than the default
/// `max_connections_per_host`, so without the shared first dial each would open a connection.
const BURST: usize = 12;

/// `BURST` callers at once on a cold route to an upstream offering h2 (`h2`) or only HTTP/1.1;
/// every answer is checked. The upstream's TLS handshakes are returned.
async fn burst_on_a_cold_route(h2: bool) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("first-contact-ca");
    let upstream = TestUpstream::start(&pki, &pki, h2).await;
    let default = ProxySettings::default();
    let proxy = graph_proxy(
        &pki,
        dir.path(),
        upstream.addr,
        "first-contact",
        |_| {},
        default,
    )
    .await;
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..BURST {
        let addr = proxy.addr;
        callers.spawn(async move {
            let answer = h1_send(addr, absolute_get(GRAPH, &format!("/burst/{i}"))).await;
            (answer.status(), text(answer).await)
        });
    }
    while let Some(answered) = callers.join_next().await {
        let (status, body) = answered.unwrap();
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(upstream.requests(), BURST);
    upstream.handshakes()
}

#[tokio::test]
async fn a_burst_of_first_callers_shares_one_connection_to_an_h2_upstream() {
    assert_eq!(
        burst_on_a_cold_route(true).await,
        1,
        "the first dial's ALPN said h2: the other callers must use its connection"
    );
}

#[tokio::test]
async fn a_burst_of_first_callers_to_an_http1_upstream_is_answered_in_full() {
    // HTTP/1.1 carries one request at a time: the callers that waited for the first dial's
    // ALPN dial their own, up to the cap (the burst is under it).
    let handshakes = burst_on_a_cold_route(false).await;
    assert!(
        (2..=BURST).contains(&handshakes),
        "{handshakes} connections for {BURST} concurrent HTTP/1.1 requests"
    );
}

/// An upstream redeployed at the same address without h2 (between two of popgate's dials): once
/// the idle h2 connection is let go, the next dial finds HTTP/1.1 and the request goes out over
/// it instead of failing.
#[tokio::test]
async fn an_upstream_that_stops_offering_h2_is_reached_over_http1() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("redeploy-ca");
    let first = TestUpstream::start(&pki, &pki, true).await;
    let addr = first.addr;
    // The h2 connection is let go after one to two idle periods without a request.
    let short_idle = |s: &mut UpstreamSettings| s.pool_idle_timeout = Duration::from_millis(200);
    let default = ProxySettings::default();
    let proxy = graph_proxy(&pki, dir.path(), addr, "redeploy", short_idle, default).await;
    let answer = h1_send(proxy.addr, absolute_get(GRAPH, "/before")).await;
    assert_eq!(answer.status(), 200, "{}", text(answer).await);
    assert_eq!(first.seen()[0].version, http::Version::HTTP_2);
    // The old upstream stops listening (its open connection stays up, as a draining server's
    // would); popgate lets its idle connection go.
    drop(first);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = TestUpstream::start_at(addr, &pki, &pki, false).await;
    let answer = h1_send(proxy.addr, absolute_get(GRAPH, "/after")).await;
    assert_eq!(answer.status(), 200, "{}", text(answer).await);
    let seen = second.seen();
    assert_eq!(seen.len(), 1, "the request reached the redeployed upstream");
    assert_eq!(seen[0].version, http::Version::HTTP_11);
    assert_eq!(seen[0].path, "/after");
    // And the connection stays in the HTTP/1.1 pool for the next request.
    let answer = h1_send(proxy.addr, absolute_get(GRAPH, "/again")).await;
    assert_eq!(answer.status(), 200, "{}", text(answer).await);
    assert_eq!(second.handshakes(), 1);
}
