//! popgate's own h2 client against an upstream that ends its connection or answers early: a
//! request that finds the connection closing (the upstream sent `GOAWAY`) goes out on a fresh
//! one, an answer sent before the request body was read reaches the caller whole (also when the
//! upstream then closes the connection), and one the upstream cut off with a `NO_ERROR` reset
//! reaches it as cut off, not as whole. (A request body
//! cut off at a route's limit on an h2 upstream: `tests/hardening/hardening_proxy_open.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use popgate::dataplane::ProxySettings;

use crate::kit::dataplane::{TestBody, TestPki, TestProxy, absolute_get, bounded, h1_send, text};
use crate::kit::raw::{GRAPH, graph_proxy};

/// An h2 upstream (no client certificate asked) that holds a request for `/hold` unanswered and
/// starts a graceful shutdown of that connection (`GOAWAY`; the held stream goes on, so the
/// connection stays open), answers `/early` in full without reading its body and then resets
/// the stream with `NO_ERROR`, sends `/cut` part of an answer and then resets it with
/// `NO_ERROR`, answers `/complete-then-close` in full without reading its body and then closes
/// the connection, and answers any other request with its connection's number.
struct ClosingUpstream {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    /// Set once popgate has read the `GOAWAY` (it answered a `PING` sent after it).
    goaway_read: watch::Receiver<bool>,
    /// Set once a connection was closed after its `/complete-then-close` answer.
    closed: watch::Receiver<bool>,
}

impl ClosingUpstream {
    async fn start(pki: &TestPki) -> Self {
        let (chain, key) = pki.server_cert(&[GRAPH]);
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let (read_tx, goaway_read) = watch::channel(false);
        let (closed_tx, closed) = watch::channel(false);
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            // Bounded: the test makes two connections.
            for _ in 0..8 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let n = counted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let read_tx = read_tx.clone();
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut conn) = h2::server::handshake(tls).await else {
                        return;
                    };
                    let mut pings = conn.ping_pong();
                    let mut held = Vec::new();
                    // Streams kept until the connection is gone: dropping them earlier would
                    // have h2 reset them (the request body unread), and a reset is not the case.
                    let mut kept = Vec::new();
                    let close = Arc::new(tokio::sync::Notify::new());
                    loop {
                        let accepted = tokio::select! {
                            accepted = conn.accept() => accepted,
                            () = close.notified() => {
                                // Dropping the connection closes it: no GOAWAY, no TLS
                                // close_notify, as an upstream that crashes or is killed.
                                drop(conn);
                                closed_tx.send_replace(true);
                                return;
                            }
                        };
                        let Some(Ok((request, mut respond))) = accepted else {
                            break;
                        };
                        if request.uri().path() == "/hold" {
                            held.push(respond);
                            conn.graceful_shutdown();
                            // Sent after the GOAWAY: its answer says popgate read the GOAWAY.
                            if let Some(mut pings) = pings.take() {
                                let read_tx = read_tx.clone();
                                tokio::spawn(async move {
                                    if pings.ping(h2::Ping::opaque()).await.is_ok() {
                                        read_tx.send_replace(true);
                                    }
                                });
                            }
                            continue;
                        }
                        let early = request.uri().path() == "/early";
                        let Ok(mut body) = respond.send_response(http::Response::new(()), false)
                        else {
                            continue;
                        };
                        if request.uri().path() == "/complete-then-close" {
                            // The whole answer, its last frame with END_STREAM, the request
                            // body unread (so popgate's side of the stream stays open), then the
                            // connection closed once popgate has it all: it fits popgate's
                            // stream window, so every frame goes out at once; two PING round
                            // trips and a pause make sure of it.
                            let _ = body.send_data(Bytes::from(vec![b'a'; FIRST]), false);
                            let _ = body.send_data(Bytes::from(vec![b'b'; LAST]), true);
                            if let Some(mut pings) = pings.take() {
                                let close = Arc::clone(&close);
                                tokio::spawn(async move {
                                    for _ in 0..2 {
                                        if pings.ping(h2::Ping::opaque()).await.is_err() {
                                            return;
                                        }
                                    }
                                    tokio::time::sleep(TAIL_SENT).await;
                                    close.notify_one();
                                });
                            }
                            kept.push((request, respond, body));
                            continue;
                        }
                        if request.uri().path() == "/cut" {
                            // Part of an answer, no END_STREAM, then a reset with NO_ERROR once
                            // popgate has the part (it answered a PING sent after it).
                            let _ = body.send_data(Bytes::from_static(b"partial"), false);
                            if let Some(mut pings) = pings.take() {
                                tokio::spawn(async move {
                                    if pings.ping(h2::Ping::opaque()).await.is_ok() {
                                        respond.send_reset(h2::Reason::NO_ERROR);
                                    }
                                });
                            }
                            continue;
                        }
                        let answer = if early {
                            "answered early".to_owned()
                        } else {
                            format!("connection {n}")
                        };
                        let _ = body.send_data(Bytes::from(answer), true);
                        // Answered in full without reading the body: the caller may stop
                        // sending it (RFC 9113 §8.1). Reset only once popgate answered a PING
                        // sent after the answer (h2 drops a reset stream's unsent frames).
                        if early && let Some(mut pings) = pings.take() {
                            tokio::spawn(async move {
                                if pings.ping(h2::Ping::opaque()).await.is_ok() {
                                    respond.send_reset(h2::Reason::NO_ERROR);
                                }
                            });
                        }
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            goaway_read,
            closed,
        }
    }
}

/// popgate with one route to a fresh [`ClosingUpstream`]; `name` marks its CA and token. The
/// temp dir holds popgate's files for as long as the test keeps it.
async fn closing_rig(name: &str) -> (tempfile::TempDir, ClosingUpstream, TestProxy) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(&format!("{name}-ca"));
    let upstream = ClosingUpstream::start(&pki).await;
    let proxy = graph_proxy(
        &pki,
        dir.path(),
        upstream.addr,
        name,
        |_| {},
        ProxySettings::default(),
    )
    .await;
    (dir, upstream, proxy)
}

/// The `/complete-then-close` answer: its first part, then its last (with END_STREAM); 128 KiB
/// in all. More than popgate's caller side takes in while the caller reads nothing (hyper's
/// HTTP/2 server took two 16 KiB frames here), less than popgate's upstream stream window
/// (256 KiB): the answer's end waits in popgate's stream when the connection closes.
const FIRST: usize = 120 * 1024;
const LAST: usize = 8 * 1024;
/// How long the upstream waits, after the PINGs, before it closes: margin for the answer's
/// frames, already written, to be read.
const TAIL_SENT: std::time::Duration = std::time::Duration::from_millis(300);

/// An upstream that answers in full (END_STREAM received) while popgate is still sending the
/// request body, then closes the connection without a `GOAWAY` (it crashed, or was killed): the
/// answer is complete, so the caller gets all of it and its end, not an error. The caller, on
/// HTTP/2 with a 1 KiB window it does not open until the upstream has closed, keeps most of the
/// answer, and its END_STREAM, in popgate's upstream stream across the close. Before popgate's
/// h2 fork kept a received END_STREAM through a connection error (vendor/h2/FORK.md), the
/// close replaced it: the caller got 122,880 of the 131,072 bytes and a reset.
#[tokio::test]
async fn a_complete_answer_survives_the_upstream_closing_the_connection_during_the_upload() {
    let (_dir, mut upstream, proxy) = closing_rig("close").await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(1024)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut client = bounded(client.ready()).await.unwrap();
    let request = http::Request::post(format!("http://{GRAPH}/complete-then-close"))
        .body(())
        .unwrap();
    let (answer, mut upload) = client.send_request(request, false).unwrap();
    // The upload starts and never ends: popgate's stream to the upstream stays open its way.
    upload
        .send_data(Bytes::from_static(b"upload"), false)
        .unwrap();
    let answer = bounded(answer).await.unwrap();
    assert_eq!(answer.status(), 200);
    bounded(upstream.closed.wait_for(|closed| *closed))
        .await
        .unwrap();
    let mut body = answer.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = bounded(body.data()).await {
        let chunk = chunk.unwrap_or_else(|e| {
            panic!(
                "the complete answer failed after {} of {} bytes: {e}",
                got.len(),
                FIRST + LAST
            )
        });
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), FIRST + LAST);
    assert!(got[..FIRST].iter().all(|b| *b == b'a') && got[FIRST..].iter().all(|b| *b == b'b'));
    drop(upload);
}

/// A request that finds the lane's h2 connection closing (its upstream sent `GOAWAY` while a
/// stream is still open, so the connection itself is still up) is not failed: it was never
/// sent, so it goes out on a new connection.
#[tokio::test]
async fn a_request_on_a_connection_the_upstream_is_closing_goes_out_on_a_new_one() {
    let (_dir, mut upstream, proxy) = closing_rig("goaway").await;
    // The host is known to speak h2 from here on.
    let first = h1_send(proxy.addr, absolute_get(GRAPH, "/first")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(text(first).await, "connection 0");

    let addr = proxy.addr;
    let held = tokio::spawn(async move { h1_send(addr, absolute_get(GRAPH, "/hold")).await });
    bounded(upstream.goaway_read.wait_for(|read| *read))
        .await
        .unwrap();

    let next = bounded(h1_send(proxy.addr, absolute_get(GRAPH, "/next"))).await;
    let status = next.status();
    let body = text(next).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "connection 1");
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
    held.abort();
}

/// An upstream that answers in full before it has read the request body, then resets the
/// stream with `NO_ERROR` (RFC 9113 §8.1): the caller, whose 4 MiB body is still being sent
/// (popgate keeps sending it after the response head), gets the whole answer, not a `502`.
#[tokio::test]
async fn an_answer_sent_before_the_body_was_read_reaches_the_caller_whole() {
    let (_dir, _upstream, proxy) = closing_rig("early").await;
    // Larger than popgate reads ahead, so it streams: still being sent when the answer comes.
    let body = TestBody::Repeat {
        remaining: 4 * 1024 * 1024,
    };
    let request = http::Request::post(format!("http://{GRAPH}/early"))
        .header("host", GRAPH)
        .body(body)
        .unwrap();
    let answer = bounded(h1_send(proxy.addr, request)).await;
    let status = answer.status();
    let text = bounded(text(answer)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, "answered early");
}

/// An upstream that resets its answer with `NO_ERROR` before the answer's END_STREAM cut it off
/// (RFC 9113 §8.1 allows that reset only after a complete response): the caller, whose answer
/// has no `content-length` and so reaches it chunked, sees the body fail, not the part it got
/// ended by a last chunk as if it were whole.
#[tokio::test]
async fn an_answer_cut_off_by_a_no_error_reset_reaches_the_caller_as_cut_off() {
    let (_dir, _upstream, proxy) = closing_rig("cut").await;
    let answer = bounded(h1_send(proxy.addr, absolute_get(GRAPH, "/cut"))).await;
    assert_eq!(answer.status(), 200);
    assert!(
        !answer.headers().contains_key(http::header::CONTENT_LENGTH),
        "{:?}",
        answer.headers()
    );
    let body = bounded(http_body_util::BodyExt::collect(answer.into_body())).await;
    assert!(
        body.is_err(),
        "the cut-off answer reached the caller as whole: {:?}",
        body.map(|b| b.to_bytes())
    );
}
