//! HTTP/2 defences on the plain (h2c) listener: rapid reset gets GOAWAY, and streams beyond the
//! concurrent-stream cap are refused.

use crate::kit::dataplane::*;
use crate::kit::raw::*;
use h2::Reason;
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Streams the rapid-reset client opens and cancels at most: far beyond the 20 popgate tolerates.
const RESET_BURST: usize = 1000;

#[tokio::test]
async fn rapid_reset_gets_goaway() {
    let rig = rig(hardened(|_| {})).await;
    let tcp = TcpStream::connect(rig.proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut cancelled = 0;
    for _ in 0..RESET_BURST {
        let Ok(mut ready) = bounded(client.clone().ready()).await else {
            break;
        };
        // Answered by popgate itself (no route), so cancelled streams do not linger upstream
        // holding stream slots: without the defence the honest request below is served.
        let req = Request::get("http://not-routed.example/").body(()).unwrap();
        match ready.send_request(req, false) {
            Ok((_, mut stream)) => {
                stream.send_reset(Reason::CANCEL);
                cancelled += 1;
            }
            Err(_) => break,
        }
    }
    // An honest request after the burst is not served: the connection is gone.
    let after = async {
        let mut ready = client.ready().await?;
        let req = Request::get("http://not-routed.example/").body(()).unwrap();
        let (response, _) = ready.send_request(req, true)?;
        response.await
    };
    let after = bounded(after).await;
    assert!(after.is_err(), "served after {cancelled} resets: {after:?}");
    // The connection ends with an error: GOAWAY, or a broken pipe when the server closed while
    // the client was still writing resets (the raw-frame test below checks the GOAWAY itself).
    let ended = bounded(conn).await.unwrap();
    let error = ended.expect_err("connection ended cleanly");
    assert!(
        error.reason() == Some(Reason::ENHANCE_YOUR_CALM) || error.is_io(),
        "{error:?}"
    );
    assert!(cancelled > 20, "GOAWAY after only {cancelled} resets");
}

// ---- raw HTTP/2 frames, so the client can exceed the stream cap the server advertises

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM_AND_HEADERS: u8 = 0x1 | 0x4;
const ACK: u8 = 0x1;
const REFUSED_STREAM: u32 = 0x7;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK "literal header field without indexing, new name", no Huffman (all strings < 127).
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.push(value.len() as u8);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn get(stream: u32, path: &str) -> Vec<u8> {
    let block = hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", GRAPH),
        (":path", path),
    ]);
    frame(HEADERS, END_STREAM_AND_HEADERS, stream, &block)
}

/// Reads one frame: (type, flags, stream, payload).
async fn read_frame(tcp: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    bounded(tcp.read_exact(&mut head)).await.unwrap();
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    bounded(tcp.read_exact(&mut payload)).await.unwrap();
    (head[3], head[4], stream, payload)
}

/// Frames read while waiting for the refusal at most; the server sends a handful.
const MAX_FRAMES: usize = 100;

#[tokio::test]
async fn streams_beyond_the_concurrent_cap_are_refused() {
    let cap: u32 = 4;
    let mut rig = rig(hardened(|c| c.h2.max_concurrent_streams = cap)).await;
    let mut tcp = TcpStream::connect(rig.proxy.addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    // `cap` requests held at the upstream, then one more on stream 2*cap+1.
    for i in 0..cap {
        out.extend(get(2 * i + 1, "/gate"));
    }
    let extra = 2 * cap + 1;
    out.extend(get(extra, "/v1.0/me"));
    tcp.write_all(&out).await.unwrap();

    let mut advertised = None;
    let mut refused = false;
    for _ in 0..MAX_FRAMES {
        let (kind, flags, stream, payload) = read_frame(&mut tcp).await;
        match kind {
            SETTINGS if flags & ACK == 0 => {
                for setting in payload.chunks_exact(6) {
                    // SETTINGS_MAX_CONCURRENT_STREAMS
                    if u16::from_be_bytes([setting[0], setting[1]]) == 0x3 {
                        advertised = Some(u32::from_be_bytes([
                            setting[2], setting[3], setting[4], setting[5],
                        ]));
                    }
                }
                tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
            }
            RST_STREAM => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                assert_eq!((stream, code), (extra, REFUSED_STREAM));
                refused = true;
                break;
            }
            GOAWAY => panic!("GOAWAY instead of a refused stream: {payload:?}"),
            _ => {}
        }
    }
    assert_eq!(advertised, Some(cap));
    assert!(refused, "stream {extra} was not refused");
    // The first `cap` streams are in flight at the upstream; the extra one never got there.
    rig.upstream.wait_gated(cap as usize).await;
    assert_eq!(rig.upstream.requests(), cap as usize);
    assert!(rig.upstream.seen().iter().all(|s| s.path == "/gate"));
    rig.upstream.open_gate();
}

/// Cancelled streams in the raw burst: enough to pass the tolerance of 20 several times, small
/// enough (about 5 KiB) that popgate reads it all before it answers.
const RAW_RESET_BURST: u32 = 100;
const ENHANCE_YOUR_CALM: u32 = 0xb;

#[tokio::test]
async fn rapid_reset_goaway_says_enhance_your_calm() {
    let rig = rig(hardened(|_| {})).await;
    let mut tcp = TcpStream::connect(rig.proxy.addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for i in 0..RAW_RESET_BURST {
        let stream = 2 * i + 1;
        let block = hpack(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", GRAPH),
            (":path", "/hang"),
        ]);
        out.extend(frame(HEADERS, 0x4, stream, &block));
        out.extend(frame(RST_STREAM, 0, stream, &0x8u32.to_be_bytes()));
    }
    let _ = tcp.write_all(&out).await;
    let mut goaway = None;
    for _ in 0..MAX_FRAMES {
        let (kind, _, _, payload) = read_frame(&mut tcp).await;
        if kind == GOAWAY {
            goaway = Some(u32::from_be_bytes([
                payload[4], payload[5], payload[6], payload[7],
            ]));
            break;
        }
    }
    assert_eq!(goaway, Some(ENHANCE_YOUR_CALM));
}

#[tokio::test]
async fn h2_requests_over_the_header_and_uri_limits_are_refused() {
    // hyper has no header-count or URI limit on HTTP/2; popgate's own checks apply.
    let rig = rig(hardened(|_| {})).await;
    let mut many = Request::get("http://graph.microsoft.com/v1.0/me");
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let response = h2c_send(rig.proxy.addr, many.body(TestBody::Empty).unwrap()).await;
    assert_eq!(response.status(), 431);
    assert_eq!(
        json(response).await["error"],
        "request_header_fields_too_large"
    );

    let long = format!("http://graph.microsoft.com/{}", "a".repeat(9 * 1024));
    let response = h2c_send(
        rig.proxy.addr,
        Request::get(long).body(TestBody::Empty).unwrap(),
    )
    .await;
    assert_eq!(response.status(), 414);

    let big = Request::post("http://graph.microsoft.com/v1.0/me")
        .header("content-length", (BODY_LIMIT + 1).to_string())
        .body(TestBody::Repeat {
            remaining: BODY_LIMIT + 1,
        })
        .unwrap();
    let response = h2c_send(rig.proxy.addr, big).await;
    assert_eq!(response.status(), 413);
    assert_eq!(rig.upstream.requests(), 0);
}

const PING: u8 = 0x6;

#[tokio::test]
async fn a_caller_that_never_answers_pings_is_disconnected() {
    let rig = rig(hardened(|c| {
        c.h2.keep_alive_interval = std::time::Duration::from_millis(200);
        c.h2.keep_alive_timeout = std::time::Duration::from_millis(200);
    }))
    .await;
    let mut tcp = TcpStream::connect(rig.proxy.addr).await.unwrap();
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    tcp.write_all(&out).await.unwrap();
    // Read (and acknowledge SETTINGS, but never PING) until popgate closes the connection.
    let mut pinged = false;
    let closed = bounded(async {
        for _ in 0..MAX_FRAMES {
            let mut head = [0u8; 9];
            if tcp.read_exact(&mut head).await.is_err() {
                return true;
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let mut payload = vec![0u8; len];
            if tcp.read_exact(&mut payload).await.is_err() {
                return true;
            }
            match head[3] {
                PING if head[4] & ACK == 0 => pinged = true,
                SETTINGS if head[4] & ACK == 0 => {
                    let _ = tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                _ => {}
            }
        }
        false
    })
    .await;
    assert!(pinged, "popgate never pinged the idle connection");
    assert!(closed, "connection still open after an unanswered ping");
}
