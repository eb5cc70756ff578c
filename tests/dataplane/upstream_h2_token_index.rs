//! Over an HTTP/2 upstream connection the route's token crosses the wire once: HPACK adds it to
//! the connection's table with the first request, and later requests carry a one- or two-byte
//! index (popgate's h2 fork, vendor/h2/FORK.md). The upstream still decodes the whole token on
//! every request.

use popgate::dataplane::ProxySettings;

use crate::kit::dataplane::{TestPki, TestUpstream, absolute_get, h1_send, text};
use crate::kit::raw::{GRAPH, graph_proxy};

/// Requests measured after the first (which opens the connection and indexes the token).
const LATER: usize = 10;
/// Characters of the token's filler claim: a token of about 1.3 KB, the size of a real
/// `mtls_pop` token.
const FILLER: usize = 900;

/// Letters that Huffman coding cannot squeeze much (a fixed pseudo-random sequence).
fn filler() -> String {
    let mut x: u32 = 0x2545_f491;
    (0..FILLER)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            char::from(
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[x as usize % 62],
            )
        })
        .collect()
}

#[tokio::test]
async fn later_requests_on_an_h2_upstream_connection_send_the_token_as_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("hpack-ca");
    let upstream = TestUpstream::start(&pki, &pki, true).await;
    let default = ProxySettings::default();
    let proxy = graph_proxy(&pki, dir.path(), upstream.addr, &filler(), |_| {}, default).await;

    let first = h1_send(proxy.addr, absolute_get(GRAPH, "/first")).await;
    assert_eq!(first.status(), 200, "{}", text(first).await);
    let after_first = upstream.bytes_in();
    for i in 0..LATER {
        let answer = h1_send(proxy.addr, absolute_get(GRAPH, &format!("/later/{i}"))).await;
        assert_eq!(answer.status(), 200, "{}", text(answer).await);
    }
    let per_request = (upstream.bytes_in() - after_first) / LATER;

    let seen = upstream.seen();
    assert_eq!(seen.len(), LATER + 1);
    let sent = seen[0]
        .header("authorization")
        .expect("the token")
        .to_owned();
    assert!(sent.len() > 1000, "a token of {} bytes", sent.len());
    for s in &seen {
        assert_eq!(
            s.header("authorization"),
            Some(sent.as_str()),
            "the whole token arrives"
        );
    }
    assert_eq!(upstream.handshakes(), 1, "one upstream connection");
    eprintln!(
        "{per_request} bytes per later request with a {}-byte token",
        sent.len()
    );
    // Sent as a literal, the token alone takes about 3/4 of its length on every request.
    assert!(
        per_request < sent.len() / 4,
        "{per_request} bytes per request with a {}-byte token: it was not sent as an index",
        sent.len()
    );
}
