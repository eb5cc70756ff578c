//! Size limits over raw HTTP/1 sockets: header count and size (431), URI length (414), body size
//! (413 when declared, cut off when chunked). Nothing over a limit reaches the upstream.

use crate::kit::raw::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn get_with_headers(extra: &str) -> String {
    format!("GET /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\n{extra}\r\n")
}

#[tokio::test]
async fn too_many_headers_get_431_and_the_connection_closes() {
    let rig = rig(hardened(|_| {})).await;
    // Host + 98 + Connection = 100 lines: at the default cap, served.
    let lines: String = (0..98).map(|i| format!("x-h{i}: v\r\n")).collect();
    let at_cap = get_with_headers(&format!("{lines}Connection: close\r\n"));
    let got = exchange(rig.proxy.addr, at_cap.as_bytes()).await;
    assert_eq!(got.status(), 200, "{:?}", got.text);
    // Host + 100 = 101 lines: refused.
    let lines: String = (0..100).map(|i| format!("x-h{i}: v\r\n")).collect();
    let got = exchange(rig.proxy.addr, get_with_headers(&lines).as_bytes()).await;
    assert_eq!(got.status(), 431, "{:?}", got.text);
    assert!(got.closed);
    assert_eq!(rig.upstream.requests(), 1);
}

#[tokio::test]
async fn a_configured_header_count_is_enforced() {
    let rig = rig(hardened(|c| c.limits.max_headers = 20)).await;
    let lines: String = (0..19).map(|i| format!("x-h{i}: v\r\n")).collect();
    let ok = exchange(
        rig.proxy.addr,
        get_with_headers(&lines.replacen("x-h0: v", "Connection: close", 1)).as_bytes(),
    )
    .await;
    assert_eq!(ok.status(), 200, "{:?}", ok.text);
    let over = exchange(
        rig.proxy.addr,
        get_with_headers(&format!("{lines}x-one-more: v\r\n")).as_bytes(),
    )
    .await;
    assert_eq!(over.status(), 431, "{:?}", over.text);
    assert!(over.closed);
    assert_eq!(rig.upstream.requests(), 1);
}

#[tokio::test]
async fn an_oversized_header_block_gets_431_and_the_connection_closes() {
    let rig = rig(hardened(|_| {})).await;
    let big = format!("x-big: {}\r\n", "a".repeat(70 * 1024));
    let got = exchange(rig.proxy.addr, get_with_headers(&big).as_bytes()).await;
    assert_eq!(got.status(), 431, "{:?}", got.text.get(..200));
    assert!(got.closed);
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test]
async fn a_uri_over_the_limit_gets_414_and_the_connection_closes() {
    let rig = rig(hardened(|_| {})).await;
    let path = format!("/v1.0/{}", "a".repeat(9 * 1024));
    let raw = format!("GET {path} HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n");
    let got = exchange(rig.proxy.addr, raw.as_bytes()).await;
    assert_eq!(got.status(), 414, "{:?}", got.text);
    assert!(got.closed);
    assert_eq!(got.json()["error"], "uri_too_long");
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_gets_413_and_the_connection_closes() {
    let rig = rig(hardened(|_| {})).await;
    let body = "b".repeat(BODY_LIMIT as usize + 1);
    let raw = format!(
        "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let got = exchange(rig.proxy.addr, raw.as_bytes()).await;
    assert_eq!(got.status(), 413, "{:?}", got.text);
    assert!(got.closed);
    assert_eq!(got.json()["error"], "payload_too_large");
    assert_eq!(rig.upstream.requests(), 0);

    // At the limit exactly: forwarded.
    let body = "b".repeat(BODY_LIMIT as usize);
    let raw = format!(
        "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(exchange(rig.proxy.addr, raw.as_bytes()).await.status(), 200);
    assert_eq!(rig.upstream.seen()[0].body_len, BODY_LIMIT);
}

fn chunked(total: usize) -> String {
    let mut out = String::new();
    let mut left = total;
    while left > 0 {
        let n = left.min(300);
        out.push_str(&format!("{n:x}\r\n{}\r\n", "c".repeat(n)));
        left -= n;
    }
    out.push_str("0\r\n\r\n");
    out
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_sent_at_once_gets_413() {
    let rig = rig(hardened(|_| {})).await;
    let raw = format!(
        "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        chunked(BODY_LIMIT as usize + 1)
    );
    let got = exchange(rig.proxy.addr, raw.as_bytes()).await;
    assert_eq!(got.status(), 413, "{:?}", got.text);
    assert!(got.closed);
    assert_eq!(rig.upstream.requests(), 0);

    let raw = format!(
        "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}",
        chunked(BODY_LIMIT as usize)
    );
    assert_eq!(exchange(rig.proxy.addr, raw.as_bytes()).await.status(), 200);
    assert_eq!(rig.upstream.seen()[0].body_len, BODY_LIMIT);
}

#[tokio::test]
async fn a_chunked_body_growing_past_the_limit_while_forwarded_is_aborted() {
    let rig = rig(hardened(|_| {})).await;
    let mut stream = TcpStream::connect(rig.proxy.addr).await.unwrap();
    // `Expect: 100-continue` makes popgate say when the upstream starts reading the body: only
    // then is the rest sent, so the limit is crossed mid-stream, after forwarding began.
    stream
        .write_all(b"POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 100"), "{head:?}");
    let _ = stream
        .write_all(chunked(BODY_LIMIT as usize * 4).as_bytes())
        .await;
    let got = read_until_closed(&mut stream).await;
    assert!(got.closed);
    // The head read above was the 100; what follows is popgate's answer for the cut-off body.
    assert_eq!(got.status(), 413, "{:?}", got.text);
    // The upstream never received a complete body.
    assert!(rig.upstream.seen().is_empty(), "{:?}", rig.upstream.seen());
}
