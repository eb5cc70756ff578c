//! Connection-level defences over raw sockets: the HTTP/1 header-read timeout (slowloris) and the
//! per-listener connection cap when every connection is busy.

use std::time::Duration;

use crate::kit::dataplane::*;
use crate::kit::raw::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Pace of the slowloris client: one header byte per tick.
const TRICKLE_TICK: Duration = Duration::from_millis(100);
/// Bytes the slowloris client is willing to trickle: 40 s worth, longer than hyper's 30 s
/// default, so the test also fails if the configured timeout is dropped rather than shortened.
const TRICKLE_BYTES: usize = 400;

#[tokio::test]
async fn a_client_trickling_its_headers_is_cut_off() {
    let rig = rig(hardened(|c| {
        c.header_read_timeout = TEST_HEADER_READ_TIMEOUT
    }))
    .await;
    let mut stream = TcpStream::connect(rig.proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\n")
        .await
        .unwrap();
    let mut tick = tokio::time::interval(TRICKLE_TICK);
    let mut buf = [0u8; 1024];
    let mut sent = 0;
    let cut_off = loop {
        if sent == TRICKLE_BYTES {
            break false;
        }
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break true,
                // hyper may say 408 before closing; keep reading until the close.
                Ok(_) => continue,
            },
            _ = tick.tick() => {
                // An endless header value, one byte at a time (`x-slow: aaaa…`).
                let byte: &[u8] = if sent == 0 { b"x-slow: a" } else { b"a" };
                if stream.write_all(byte).await.is_err() {
                    break true;
                }
                sent += 1;
            }
        }
    };
    assert!(cut_off, "still open after trickling {sent} header bytes");
    assert_eq!(rig.upstream.requests(), 0);
}

/// Pause before checking that the caller beyond the cap got nothing: many times what popgate
/// takes to answer a request it has accepted (the 403 above comes back in milliseconds).
const UNSERVED_FOR: Duration = Duration::from_millis(500);

/// Idle connections are evicted at the cap (`connection_deadlines.rs`); busy ones are not: when
/// every connection has a request in flight, further callers wait until one finishes.
#[tokio::test]
async fn when_every_connection_is_busy_callers_beyond_the_cap_wait_until_one_finishes() {
    let cap = 2;
    let mut rig = rig(hardened(|c| c.max_connections = cap)).await;
    let mut held = Vec::new();
    for _ in 0..cap {
        let mut s = TcpStream::connect(rig.proxy.addr).await.unwrap();
        s.write_all(b"GET /gate HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    bounded(rig.upstream.wait_gated(cap)).await;
    // The kernel completes the handshake (listen backlog); popgate holds it unserved.
    let mut waiting = TcpStream::connect(rig.proxy.addr).await.unwrap();
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: not-routed.example\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(UNSERVED_FOR).await;
    let mut buf = [0u8; 64];
    match waiting.try_read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("connection over the cap was served: {other:?}"),
    }
    // The held requests finish: their connections are idle now, one is evicted, and the waiting
    // caller is served.
    rig.upstream.open_gate();
    let head = read_head(&mut held[0]).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    let head = read_head(&mut waiting).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head:?}");
}

#[tokio::test]
async fn a_caller_that_never_finishes_its_tls_handshake_is_disconnected() {
    use std::sync::Arc;

    use arc_swap::ArcSwap;
    use popgate::dataplane::listener::server_tls_config;
    use popgate::dataplane::{ListenerSpec, Proxy};
    use popgate::route::table::RouteTable;

    let pki = TestPki::new("listener-ca");
    let (chain, key) = pki.server_cert(&["popgate.local"]);
    let tls = server_tls_config(chain, key, None).unwrap();
    let handle = Proxy::start(
        vec![ListenerSpec {
            addr: "127.0.0.1:0".parse().unwrap(),
            tls: Some(tls),
            intercept: None,
        }],
        Arc::new(ArcSwap::from_pointee(RouteTable::new(vec![]))),
        hardened(|c| c.tls_handshake_timeout = Duration::from_millis(300)),
    )
    .await
    .unwrap();
    // Connect and say nothing: no ClientHello ever comes.
    let mut stream = TcpStream::connect(handle.local_addrs()[0]).await.unwrap();
    let got = read_until_closed(&mut stream).await;
    assert!(got.closed && got.text.is_empty(), "{got:?}");
}
