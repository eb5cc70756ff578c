//! Graceful drain of the real `popgate run` binary on SIGTERM and on SIGINT: responses whose
//! bodies are still streaming when the signal arrives complete with 200 and every byte, an idle
//! keep-alive connection is closed cleanly (EOF, no reset), new connections are refused, and the
//! process exits 0. With `drain.delay`, `/readyz` answers 503 within 100 ms of SIGTERM while new
//! connections are still served for the delay, and refused after it.

use std::time::Duration;

use crate::kit::http::first_frame;
use crate::kit::process::*;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Streaming responses in flight when the signal arrives.
const IN_FLIGHT: usize = 2;
/// Each one's body: more than the socket buffers hold while the reader pauses (initial receive
/// buffer 128 KiB, send buffer at most 4 MiB on each of two hops), so it is mid-stream at the
/// signal.
const BODY_BYTES: u64 = 12 * 1024 * 1024;
/// Bound on reading the bodies (a debug build on a loaded machine streams slowly).
const BODY_BOUND: Duration = Duration::from_secs(80);
/// popgate's drain deadline in these tests: generous, since the point is completion, not speed.
/// No drain delay (`0s` is allowed): the listeners close at the signal.
const DRAIN: &str = "timeouts: { drain: 85s }\ndrain: { delay: 0s }\n";

/// The drain delay of the delay test: long enough to serve requests inside it on a loaded
/// machine, short enough to keep the test quick.
const DELAY: Duration = Duration::from_secs(3);
/// `/readyz` must answer 503 this soon after SIGTERM.
const NOT_READY_WITHIN: Duration = Duration::from_millis(100);

async fn drain_on(signal: &str) {
    let env = Env::start().await;
    let config = env.write_config_with(DRAIN, &route("keep", None, "app", ""));
    let mut popgate = Popgate::start(&config);
    let (proxy, popgate) = tokio::task::spawn_blocking(move || {
        let addr = popgate.wait_serving();
        (addr, popgate)
    })
    .await
    .unwrap();

    // Responses mid-stream: head and first bytes read, the rest left unread (backpressure).
    let mut streams = Vec::new();
    for _ in 0..IN_FLIGHT {
        let mut sender = connect(proxy).await.unwrap();
        let request = http::Request::builder()
            .uri(format!(
                "http://graph.microsoft.com/v1.0/big?size={BODY_BYTES}"
            ))
            .header("host", "graph.microsoft.com")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let (body, read) = first_frame(&mut sender, request, REQUEST_BOUND).await;
        streams.push((sender, body, read));
    }
    // An idle keep-alive connection: one request answered, nothing more sent.
    let mut idle = tokio::net::TcpStream::connect(proxy).await.unwrap();
    idle.write_all(
        b"GET http://graph.microsoft.com/v1.0/me HTTP/1.1\r\nhost: graph.microsoft.com\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = idle.read(&mut buf).await.unwrap();
        assert!(n > 0, "popgate closed before answering");
        head.extend_from_slice(&buf[..n]);
    }

    popgate.signal(signal);
    let (draining, mut popgate) = tokio::task::spawn_blocking(move || {
        let mut popgate = popgate;
        let f = popgate.wait_for("the drain start", |f| {
            f["message"] == "stopped accepting; draining open connections"
        });
        (f, popgate)
    })
    .await
    .unwrap();
    assert!(
        draining["open_connections"].as_u64().unwrap() > IN_FLIGHT as u64,
        "{draining}"
    );

    // New callers are refused once the listener is closed.
    let refused = tokio::net::TcpStream::connect(proxy).await;
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a new connection was not refused: {refused:?}"
    );

    // Every in-flight response completes in full (read side by side).
    let readers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, (sender, mut body, mut read))| {
            tokio::spawn(async move {
                let rest = async {
                    while let Some(frame) = body.frame().await {
                        let frame = frame.unwrap_or_else(|e| {
                            panic!("stream {i} failed after {read} bytes: {e}")
                        });
                        read += frame.into_data().map(|d| d.len() as u64).unwrap_or(0);
                    }
                    read
                };
                let total = tokio::time::timeout(BODY_BOUND, rest)
                    .await
                    .expect("the body completed within its bound");
                drop(sender);
                total
            })
        })
        .collect();
    for reader in readers {
        assert_eq!(
            reader.await.unwrap(),
            BODY_BYTES,
            "a response was cut short"
        );
    }

    // The idle connection gets a clean close: EOF, not a reset. (Any bytes left of the earlier
    // response body are read first.)
    let closed = tokio::time::timeout(BODY_BOUND, async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .expect("the idle connection was closed within the bound");
    assert!(closed.is_ok(), "idle connection reset: {closed:?}");

    let status = tokio::task::spawn_blocking(move || {
        let status = popgate.wait_exit();
        popgate.read_rest();
        (status, popgate)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0), "popgate exited with {}", status.0);
    assert!(
        status
            .1
            .log
            .iter()
            .any(|l| fields(l).is_some_and(|f| f["message"] == "drained: every connection closed")),
        "no drain-end line:\n{}",
        status.1.log.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_streams_refuses_new_callers_and_exits_0() {
    drain_on("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_the_same_way() {
    drain_on("INT").await;
}

/// `GET /readyz` on a fresh connection: its status, or `None` when the connection failed.
async fn readyz(admin: std::net::SocketAddr) -> Option<u16> {
    let stream = tokio::net::TcpStream::connect(admin).await.ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .ok()?;
    tokio::spawn(conn);
    let request = http::Request::get("/readyz")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(REQUEST_BOUND, sender.send_request(request))
        .await
        .ok()?
        .ok()?;
    Some(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_at_once_and_serves_new_callers_for_the_drain_delay() {
    let env = Env::start().await;
    let top = format!(
        "admin: {{ address: 127.0.0.2:0 }}\ndrain: {{ delay: {}s }}\n",
        DELAY.as_secs()
    );
    let config = env.write_config_with(&top, &route("keep", None, "app", ""));
    let popgate = Popgate::start(&config);
    let (proxy, admin, mut popgate) = tokio::task::spawn_blocking(move || {
        let mut popgate = popgate;
        // The proxy listeners bind first, then the admin listener.
        let listening = popgate.wait_for("listening", |f| f["message"] == "listening");
        let proxy: std::net::SocketAddr = listening["addr"].as_str().unwrap().parse().unwrap();
        let admin = popgate.wait_for("the admin listener", |f| f["message"] == "admin listening");
        let admin: std::net::SocketAddr = admin["addr"].as_str().unwrap().parse().unwrap();
        popgate.wait_for("serving", |f| f["message"] == "serving");
        (proxy, admin, popgate)
    })
    .await
    .unwrap();
    assert_eq!(readyz(admin).await, Some(200), "ready before the signal");
    assert_eq!(get(proxy, "/v1.0/me").await.0, 200);

    // `signal` runs kill(1): the signal lands between these two instants.
    let before_signal = std::time::Instant::now();
    popgate.signal("TERM");
    let signalled = std::time::Instant::now();
    let not_ready = loop {
        if readyz(admin).await == Some(503) {
            break signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < DELAY,
            "/readyz never answered 503 during the drain delay"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert!(
        not_ready <= NOT_READY_WITHIN,
        "/readyz answered 503 only after {not_ready:?}"
    );

    // Within the delay new callers still connect and are served, more than once.
    let mut served = 0;
    while signalled.elapsed() < DELAY / 2 {
        let (status, _) = get(proxy, "/v1.0/me").await;
        assert_eq!(status, 200, "a new caller during the delay");
        served += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served >= 2, "only {served} requests inside the delay");

    // After the delay the listener closes: new callers are refused.
    let mut popgate = tokio::task::spawn_blocking(move || {
        popgate.wait_for("the drain start", |f| {
            f["message"] == "stopped accepting; draining open connections"
        });
        popgate
    })
    .await
    .unwrap();
    let closed = before_signal.elapsed();
    assert!(
        closed >= DELAY,
        "the listener closed {closed:?} after SIGTERM, before the {DELAY:?} delay"
    );
    let refused = tokio::net::TcpStream::connect(proxy).await;
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a new connection was not refused after the delay: {refused:?}"
    );

    let status = tokio::task::spawn_blocking(move || popgate.wait_exit())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0), "popgate exited with {status}");
}
