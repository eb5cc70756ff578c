//! Graceful drain of the real `popgate run` binary on SIGTERM and on SIGINT: responses whose
//! bodies are still streaming when the signal arrives complete with 200 and every byte, an idle
//! keep-alive connection is closed cleanly (EOF, no reset), new connections are refused, and the
//! process exits 0.

use std::time::Duration;

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
const DRAIN: &str = "timeouts: { drain: 85s }\n";

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
        let response = tokio::time::timeout(REQUEST_BOUND, sender.send_request(request))
            .await
            .expect("response head within its bound")
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let first = tokio::time::timeout(REQUEST_BOUND, body.frame())
            .await
            .expect("first bytes within their bound")
            .expect("a first frame")
            .unwrap();
        let read = first.into_data().map(|d| d.len() as u64).unwrap_or(0);
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
