//! Request smuggling over raw HTTP/1 sockets: ambiguous framing gets 400, the connection is
//! closed, and nothing reaches the upstream.

use crate::kit::raw::*;

/// Sends `raw`, expects 400 and a closed connection, and checks the upstream saw nothing.
async fn refused_400(rig: &Rig, raw: &str) -> Exchange {
    let got = exchange(rig.proxy.addr, raw.as_bytes()).await;
    assert_eq!(got.status(), 400, "{raw:?} → {:?}", got.text);
    assert!(got.closed, "connection left open after {raw:?}");
    assert_eq!(rig.upstream.requests(), 0, "{raw:?} reached the upstream");
    got
}

#[tokio::test]
async fn a_clean_request_on_the_same_rig_is_forwarded() {
    // The control for every refusal below: the route works and keep-alive is normal.
    let rig = rig(hardened(|_| {})).await;
    let raw = "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let got = exchange(rig.proxy.addr, raw.as_bytes()).await;
    assert_eq!(got.status(), 200, "{:?}", got.text);
    assert_eq!(rig.upstream.requests(), 1);
    assert_eq!(rig.upstream.seen()[0].body_len, 5);
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_in_either_order() {
    let rig = rig(hardened(|_| {})).await;
    for raw in [
        "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    ] {
        let got = refused_400(&rig, raw).await;
        assert_eq!(got.json()["error"], "bad_request");
        assert!(
            got.json()["message"]
                .as_str()
                .unwrap()
                .contains("both Content-Length and Transfer-Encoding"),
            "{:?}",
            got.text
        );
    }
}

#[tokio::test]
async fn a_smuggled_second_request_behind_a_clean_one_is_refused() {
    // A clean GET, then a CL+TE request pipelined on the same connection: the first is served,
    // the second refused, and the connection closed after it.
    let rig = rig(hardened(|_| {})).await;
    let raw = "GET /first HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n\
POST /second HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let got = exchange(rig.proxy.addr, raw.as_bytes()).await;
    assert_eq!(got.status(), 200, "{:?}", got.text);
    let second = got.text.find("HTTP/1.1 400").map(|at| &got.text[at..]);
    assert!(
        second.is_some(),
        "second response is not 400: {:?}",
        got.text
    );
    assert!(got.closed);
    let paths: Vec<String> = rig.upstream.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/first"]);
}

#[tokio::test]
async fn duplicate_content_length_is_refused_whether_or_not_the_values_agree() {
    let rig = rig(hardened(|_| {})).await;
    // Different values: hyper's parser refuses these itself.
    refused_400(
        &rig,
        "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    // Equal values: hyper would merge them; popgate refuses.
    let got = refused_400(
        &rig,
        "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert!(
        got.json()["message"]
            .as_str()
            .unwrap()
            .contains("more than one Content-Length")
    );
}

#[tokio::test]
async fn invalid_chunk_sizes_are_refused() {
    let rig = rig(hardened(|_| {})).await;
    for chunk in [
        "zz\r\nhello\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "5 junk\r\nhello\r\n0\r\n\r\n",
    ] {
        let raw = format!(
            "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"
        );
        let got = refused_400(&rig, &raw).await;
        assert!(
            got.json()["message"]
                .as_str()
                .unwrap()
                .contains("chunk size"),
            "{:?}",
            got.text
        );
    }
}

#[tokio::test]
async fn transfer_encoding_other_than_chunked_is_refused() {
    // hyper refuses a request whose final coding is not chunked (its length would be unknown).
    let rig = rig(hardened(|_| {})).await;
    refused_400(
        &rig,
        "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nTransfer-Encoding: gzip\r\n\r\nhello",
    )
    .await;
    refused_400(
        &rig,
        "POST /v1.0/me HTTP/1.0\r\nHost: graph.microsoft.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn trailers_with_a_bare_lf_cannot_shift_the_guard_off_the_next_request() {
    // The attack (found while fixing the fuzz finding chunk-extension-split): hyper ends a
    // trailer line only at CRLF, so after `X-T: a\n` the blank line does not end the trailers and
    // hyper reads the pipelined GET as more trailers. The guard read line by line and counted
    // that GET as request 1, so its refusal of the CL+TE request behind it was filed under
    // request 2, and hyper's request 1 (that very CL+TE request) was served. Now the guard
    // refuses trailers with a bare LF, and nothing behind them is served.
    let rig = rig(hardened(|_| {})).await;
    let raw = "POST /first HTTP/1.1\r\nHost: graph.microsoft.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: a\n\r\n\
GET /swallowed HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n\
POST /second HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let got = exchange(rig.proxy.addr, raw.as_bytes()).await;
    assert!(got.text.contains("HTTP/1.1 400"), "{:?}", got.text);
    assert!(got.closed, "connection left open: {:?}", got.text);
    let paths: Vec<String> = rig.upstream.seen().into_iter().map(|s| s.path).collect();
    assert!(
        !paths.iter().any(|p| p == "/second"),
        "the CL+TE request reached the upstream: {paths:?}"
    );
}
