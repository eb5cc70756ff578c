//! HTTP/2 bodies make progress or their stream is ended, one stream at a time: the per-stream
//! `limits.request_body_timeout` and `limits.response_body_timeout` (HTTP/1 has them on the
//! connection, see `hardening_http_body_deadlines.rs`). Attacked with the `h2` client:
//!
//! - (a) a stream that declares a request body, sends 10 bytes and then no DATA frame;
//! - (b) a caller that keeps its receive window at 0 (never sends WINDOW_UPDATE), so hyper waits
//!   for send capacity and writes nothing: the connection's write deadline never runs.
//!
//! Each held the upstream exchange, and with it the only pool slot of an HTTP/1.1 upstream
//! capped at one connection, until the request timeout (a), or for ever (b). Now the stream ends
//! after its deadline, the slot is free for the next caller, and `popgate_body_stalls_total`
//! counts it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use popgate::config::UpstreamPool;
use popgate::net::client::UpstreamSettings;
use tokio::net::TcpStream;

use crate::kit::dataplane::*;
use crate::kit::raw::{GRAPH, graph_proxy, hardened};

/// The deadlines the tests configure.
const DEADLINE: Duration = Duration::from_secs(1);
/// popgate reads a small body ahead for up to 1 s (`REPLAY_READ_AHEAD_WAIT`) before the
/// stream's own clock starts.
const READ_AHEAD: Duration = Duration::from_secs(1);
/// Generous bound beyond the deadline for a loaded 2-core runner (the request timeout, 60 s by
/// default, is what ended the attack before).
const MARGIN: Duration = Duration::from_secs(15);
/// How long a caller waits for the pool's single slot before 503: shorter than the margin, so a
/// slot still held fails the follow-up request.
const POOL_WAIT: Duration = Duration::from_secs(3);

/// popgate in front of an HTTP/1.1-only upstream with one pool slot, both deadlines at
/// [`DEADLINE`].
async fn start() -> (TestProxy, TestUpstream, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h2-stream-deadline-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let one_connection = |s: &mut UpstreamSettings| {
        s.pool = UpstreamPool {
            max_connections_per_host: 1,
            max_waiting: 8,
            wait_timeout: POOL_WAIT,
        };
    };
    let proxy = graph_proxy(
        &pki,
        dir.path(),
        upstream.addr,
        "h2-stream-deadline",
        one_connection,
        hardened(|c| {
            // No body limit: the declared 64 KiB must be accepted for the read-ahead to begin.
            c.limits.max_body_bytes = None;
            c.request_body_timeout = DEADLINE;
            c.response_body_timeout = DEADLINE;
        }),
    )
    .await;
    (proxy, upstream, dir)
}

/// `popgate_body_stalls_total{protocol="http2",direction=...}` in this process.
fn h2_stalls(direction: &str) -> f64 {
    use prometheus::Encoder as _;
    let mut text = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&popgate::metrics::global().registry().gather(), &mut text)
        .unwrap();
    let text = String::from_utf8(text).unwrap();
    let labels = [
        "protocol=\"http2\"".to_string(),
        format!("direction=\"{direction}\""),
    ];
    text.lines()
        .find(|l| {
            l.starts_with("popgate_body_stalls_total{") && labels.iter().all(|w| l.contains(w))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn get(path: &str) -> Request<()> {
    Request::get(format!("http://{GRAPH}{path}"))
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_request_body_that_stalls_ends_its_stream_and_frees_the_pool_slot() {
    let (proxy, _upstream, _dir) = start().await;
    let before = h2_stalls("request");
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);

    // The attack: declare 64 KiB, send 10 bytes, then no DATA frame.
    let mut ready = bounded(client.clone().ready()).await.unwrap();
    let post = Request::post(format!("http://{GRAPH}/v1.0/me"))
        .header("content-length", "65536")
        .body(())
        .unwrap();
    let (response, mut body) = ready.send_request(post, false).unwrap();
    body.send_data(Bytes::from_static(b"0123456789"), false)
        .unwrap();
    let started = Instant::now();
    let bound = DEADLINE + READ_AHEAD + MARGIN;
    let ended = tokio::time::timeout(bound, response)
        .await
        .unwrap_or_else(|_| panic!("the stalled stream was not ended within {bound:?}"));
    let took = started.elapsed();
    eprintln!("stalled request body: stream ended after {took:?}: {ended:?}");
    match ended {
        Ok(response) => assert_eq!(response.status(), 408, "{response:?}"),
        Err(e) => assert!(e.is_reset(), "{e:?}"),
    }
    assert!(took >= DEADLINE, "ended before its deadline: {took:?}");
    assert!(h2_stalls("request") > before, "the stall was not counted");

    // The connection's other streams keep working, and the pool's only slot is free again: a
    // slot still held would make this wait POOL_WAIT and get 503.
    let mut ready = bounded(client.ready()).await.unwrap();
    let (response, _) = ready.send_request(get("/v1.0/me"), true).unwrap();
    let response = bounded(response).await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_body_that_keeps_flowing_is_not_cut_off() {
    // The control: a body sent in pieces, each gap shorter than the deadline, is forwarded whole.
    let (proxy, upstream, _dir) = start().await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut ready = bounded(client.ready()).await.unwrap();
    let post = Request::post(format!("http://{GRAPH}/v1.0/me"))
        .header("content-length", "40")
        .body(())
        .unwrap();
    let (response, mut body) = ready.send_request(post, false).unwrap();
    for i in 0..4 {
        tokio::time::sleep(DEADLINE / 2).await;
        body.send_data(Bytes::from_static(b"0123456789"), i == 3)
            .unwrap();
    }
    let response = bounded(response).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.seen()[0].body_len, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_response_the_caller_does_not_accept_is_aborted_and_frees_the_pool_slot() {
    const SIZE: u64 = 1 << 30;
    let (proxy, _upstream, _dir) = start().await;
    let before = h2_stalls("response");
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    // The attack: every stream's receive window is 0, and no WINDOW_UPDATE ever follows.
    let (client, mut conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    let (open_window, opened) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = &mut conn => return,
            Ok(()) = opened => {}
        }
        conn.set_initial_window_size(1 << 20).unwrap();
        let _ = conn.await;
    });
    let mut ready = bounded(client.ready()).await.unwrap();
    // popgate's clock starts when hyper takes the first chunk, after the response head.
    let started = Instant::now();
    let (response, _) = ready
        .send_request(get(&format!("/download/{SIZE}")), true)
        .unwrap();
    let response = bounded(response).await.unwrap();
    assert_eq!(response.status(), 200);

    // Counted once the deadline passed with the caller accepting nothing.
    let bound = DEADLINE + MARGIN;
    while h2_stalls("response") <= before {
        assert!(
            started.elapsed() < bound,
            "the unaccepted response was not aborted within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    eprintln!("unaccepted response aborted after {took:?}");
    assert!(took >= DEADLINE, "aborted before its deadline: {took:?}");

    // The upstream connection and pool slot it held are free: a slot still held would make this
    // caller wait POOL_WAIT and get 503.
    let next = h1_send(proxy.addr, absolute_get(GRAPH, "/v1.0/me")).await;
    assert_eq!(next.status(), 200);

    // Once the caller opens its window, the stream ends (reset) with what hyper had taken,
    // far short of the 1 GiB.
    open_window.send(()).unwrap();
    let mut body = response.into_body();
    let mut got = 0u64;
    let ended = tokio::time::timeout(MARGIN, async {
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => {
                    got += chunk.len() as u64;
                    let _ = body.flow_control().release_capacity(chunk.len());
                    if got > 64 << 20 {
                        return false;
                    }
                }
                Err(_) => return true,
            }
        }
        true
    })
    .await;
    assert_eq!(
        ended,
        Ok(true),
        "the stream went on after the abort ({got} bytes)"
    );
    assert!(got < SIZE);
}
