//! Bodies make progress or are cut off: a caller that declares a body and stalls, and a caller
//! that stops reading its response, lose their connection after their named deadline
//! (`limits.request_body_timeout`, `limits.response_body_timeout`), and the upstream exchange they
//! held ends with it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::kit::raw::*;

/// The deadline the tests configure.
const DEADLINE: Duration = Duration::from_secs(1);
/// Generous bound on seeing a cut-off that is due after [`DEADLINE`] (plus the 1 s read-ahead).
const MARGIN: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_declared_body_that_stalls_is_cut_off_and_the_upstream_exchange_ends() {
    // The attack: declare 64 KiB (the whole read-ahead share), send 10 bytes, then nothing.
    // Before: the connection, its read-ahead and its upstream stream were held until the 60 s
    // request timeout.
    let rig = rig(hardened(|c| {
        // No body limit: the declared 64 KiB must be accepted for the read-ahead to begin.
        c.limits.max_body_bytes = None;
        c.request_body_timeout = DEADLINE;
    }))
    .await;
    let mut stream = TcpStream::connect(rig.proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: 65536\r\n\r\n0123456789")
        .await
        .unwrap();
    let closed = tokio::time::timeout(MARGIN, read_until_closed(&mut stream)).await;
    let got = closed.expect("the stalled body was not cut off within the margin");
    assert!(got.closed);
    assert!(!got.text.contains(" 200 "), "{:?}", got.text);
    // The upstream's exchange ended (its handler finished draining an aborted body), so its
    // stream or connection is free again: it never saw the declared 64 KiB.
    let ended = tokio::time::timeout(MARGIN, async {
        while rig.upstream.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if ended.is_ok() {
        assert!(rig.upstream.seen()[0].body_len < 65536);
    }
    // And the rig still serves.
    let raw = "GET /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange(rig.proxy.addr, raw.as_bytes()).await.status(), 200);
}

#[tokio::test]
async fn a_body_that_keeps_flowing_is_not_cut_off() {
    // The control: a body sent in pieces, each gap shorter than the deadline, is forwarded whole.
    let rig = rig(hardened(|c| {
        // No body limit: the declared 64 KiB must be accepted for the read-ahead to begin.
        c.limits.max_body_bytes = None;
        c.request_body_timeout = DEADLINE;
    }))
    .await;
    let mut stream = TcpStream::connect(rig.proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: 30\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..3 {
        tokio::time::sleep(DEADLINE / 4).await;
        stream.write_all(b"0123456789").await.unwrap();
    }
    let got = read_until_closed(&mut stream).await;
    assert_eq!(got.status(), 200, "{:?}", got.text);
    assert_eq!(rig.upstream.seen()[0].body_len, 30);
}

#[tokio::test]
async fn a_caller_that_stops_reading_is_cut_off() {
    // The attack: ask for a 1 GiB download and never read. Before: popgate waited on the full
    // socket for as long as the caller liked, holding the upstream exchange.
    const SIZE: u64 = 1 << 30;
    let rig = rig(hardened(|c| c.response_body_timeout = DEADLINE)).await;
    let mut stream = TcpStream::connect(rig.proxy.addr).await.unwrap();
    let raw = format!("GET /download/{SIZE} HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n");
    stream.write_all(raw.as_bytes()).await.unwrap();
    // Not reading: the socket buffers fill within milliseconds on loopback, then the deadline
    // runs. Wait well past it.
    tokio::time::sleep(MARGIN / 2).await;
    // Now read: a cut-off connection gives what was buffered, then EOF, far short of 1 GiB. One
    // still open would stream on past the cap below.
    const CAP: u64 = 256 << 20;
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let eof = tokio::time::timeout(MARGIN, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    total += n as u64;
                    if total > CAP {
                        return false;
                    }
                }
            }
        }
    })
    .await;
    assert_eq!(
        eof,
        Ok(true),
        "the connection was not cut off ({total} bytes read after the pause)"
    );
    assert!(total < SIZE);
    // The rig still serves.
    let raw = "GET /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange(rig.proxy.addr, raw.as_bytes()).await.status(), 200);
}
