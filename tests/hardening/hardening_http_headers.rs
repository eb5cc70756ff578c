//! Headers that could confuse the next hop: a second `Host` line is refused (RFC 9112 §3.2), and
//! a caller's trailers are filtered like its headers before they reach the upstream.

use crate::kit::raw::*;

#[tokio::test]
async fn a_second_host_header_is_refused_and_nothing_is_forwarded() {
    let rig = rig(hardened(|_| {})).await;
    // Equal or different values alike: which one a next hop uses is not popgate's to guess.
    for second in ["graph.microsoft.com", "evil.example"] {
        let raw =
            format!("GET /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nHost: {second}\r\n\r\n");
        let got = exchange(rig.proxy.addr, raw.as_bytes()).await;
        assert_eq!(got.status(), 400, "{second}: {:?}", got.text);
        assert!(got.closed, "{second}: connection left open");
        assert!(
            got.json()["message"].as_str().unwrap().contains("Host"),
            "{:?}",
            got.text
        );
    }
    assert_eq!(rig.upstream.requests(), 0);
    // The control: one Host is served.
    let raw = "GET /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange(rig.proxy.addr, raw.as_bytes()).await.status(), 200);
}

#[tokio::test]
async fn caller_trailers_lose_hop_by_hop_and_popgate_owned_names() {
    // The rig's upstream speaks HTTP/2. The attack: credentials and connection-level names sent
    // as trailers, where the header rewrite never looked.
    let rig = rig(hardened(|_| {})).await;
    let raw = "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\nConnection: close\r\n\r\n\
5\r\nhello\r\n0\r\n\
Authorization: Bearer caller-chosen\r\n\
Proxy-Authorization: Basic c2VjcmV0\r\n\
Host: evil.example\r\n\
Connection: keep-alive\r\n\
Keep-Alive: timeout=5\r\n\
TE: trailers\r\n\
Upgrade: h2c\r\n\
Content-Length: 99\r\n\
X-Checksum: sum\r\n\r\n";
    let got = exchange(rig.proxy.addr, raw.as_bytes()).await;
    assert_eq!(got.status(), 200, "{:?}", got.text);
    let seen = rig.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body_len, 5);
    let trailers = seen[0]
        .trailers
        .as_ref()
        .expect("the allowed trailer was lost");
    assert_eq!(trailers["x-checksum"], "sum");
    let names: Vec<&str> = trailers.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["x-checksum"], "forwarded trailers: {trailers:?}");
}
