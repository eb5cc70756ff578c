//! The access log of the real binary is written when the response body ends, with the body bytes
//! counted both ways: a chunked download and a chunked upload (no `Content-Length` either way) log
//! what actually passed; a caller that goes away part-way through a slow download gets a line
//! marked `aborted` with the bytes sent until then; no credential, query or token is in a line.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::kit::admin::*;
use crate::ops_telemetry::{Popgate, one_route_config};

/// What a caller sends that must never reach a log line.
const CALLER_SECRETS: [&str; 3] = ["caller-secret-4f1d", "c2VjcmV0LXByb3h5", "QUERYSECRET9"];

/// Writes `head` (and then `chunks` as chunked body data, pausing between them) on a new
/// connection; the connection, the request written.
async fn open(proxy: SocketAddr, head: &str, chunks: &[Vec<u8>]) -> TcpStream {
    assert!(proxy.ip().is_loopback());
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    if head.contains("Transfer-Encoding: chunked") {
        for chunk in chunks {
            stream
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await
                .unwrap();
            stream.write_all(chunk).await.unwrap();
            stream.write_all(b"\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
    }
    stream
}

/// A request head through popgate for the one route, with the caller's credentials on it.
fn head(method: &str, target: &str, id: &str, extra: &str) -> String {
    format!(
        "{method} http://legacy.app/app-pop{target} HTTP/1.1\r\nHost: legacy.app\r\n\
         x-request-id: {id}\r\nAuthorization: Bearer {}\r\nProxy-Authorization: Basic {}\r\n\
         Connection: close\r\n{extra}\r\n",
        CALLER_SECRETS[0], CALLER_SECRETS[1]
    )
}

/// The whole answer (read to the connection's close): its head and its body, de-chunked.
async fn read_answer(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut raw = Vec::new();
    tokio::time::timeout(HTTP_TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .expect("answer within the bound")
        .expect("answer read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let mut body = raw[split..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (head, body)
}

/// The data of a complete chunked body.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// The access-log event of request `id`. Blocking.
fn access_line(popgate: &mut Popgate, id: &str) -> Value {
    popgate.wait_for(&format!("the access line of {id}"), |e| {
        e["target"] == "popgate::access" && e["request_id"] == id
    })
}

/// No caller credential, query value or issued token in `line`.
fn assert_no_secret(line: &Value, signatures: &[String]) {
    let text = line.to_string();
    for secret in CALLER_SECRETS
        .iter()
        .map(|s| s.to_string())
        .chain(signatures.iter().cloned())
    {
        assert!(
            !text.contains(&secret),
            "a secret in the access line: {text}"
        );
    }
    for needle in ["authorization", "Bearer", "Basic ", "mtls_pop "] {
        assert!(
            !text.contains(needle),
            "{needle} in the access line: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_bodies_log_the_bytes_that_passed_both_ways_when_they_end() {
    let env = start_env().await;
    env.authority.record_issued_tokens();
    let config = one_route_config(&env, "");
    let mut popgate = Popgate::start(&config, "info", &[]);
    let (proxy, _admin) = tokio::task::block_in_place(|| popgate.wait_serving());

    // Down: 100,000 bytes sent chunked by the upstream (no Content-Length anywhere).
    let target = format!("/v1.0/me?size=100000&chunked=1&sig={}", CALLER_SECRETS[2]);
    let mut down = open(proxy, &head("GET", &target, "stream-down", ""), &[]).await;
    let (answer_head, body) = read_answer(&mut down).await;
    assert!(answer_head.starts_with("http/1.1 200"), "{answer_head}");
    assert!(!answer_head.contains("content-length"), "{answer_head}");
    assert_eq!(body.len(), 100_000);

    // Up: 90,000 bytes sent chunked by the caller, in three pieces (beyond the replay read-ahead,
    // so the rest streams); the upstream counts what it received.
    let chunks = vec![vec![b'u'; 30_000]; 3];
    let mut up = open(
        proxy,
        &head(
            "POST",
            "/upload",
            "stream-up",
            "Transfer-Encoding: chunked\r\n",
        ),
        &chunks,
    )
    .await;
    let (answer_head, echo_bytes) = read_answer(&mut up).await;
    assert!(answer_head.starts_with("http/1.1 200"), "{answer_head}");
    let echo: Value = serde_json::from_slice(&echo_bytes).unwrap();
    assert_eq!(echo["request_body_bytes"], 90_000, "{echo}");

    let signatures = env.authority.issued_token_signatures();
    assert!(!signatures.is_empty(), "tokens were recorded");
    let down_line = tokio::task::block_in_place(|| access_line(&mut popgate, "stream-down"));
    let up_line = tokio::task::block_in_place(|| access_line(&mut popgate, "stream-up"));
    assert_eq!(down_line["outcome"], "complete", "{down_line}");
    assert_eq!(down_line["bytes_sent"], 100_000, "{down_line}");
    assert_eq!(down_line["bytes_received"], 0, "{down_line}");
    assert_eq!(down_line["status"], 200, "{down_line}");
    assert_eq!(up_line["outcome"], "complete", "{up_line}");
    assert_eq!(up_line["bytes_received"], 90_000, "{up_line}");
    assert_eq!(up_line["bytes_sent"], echo_bytes.len(), "{up_line}");
    for line in [&down_line, &up_line] {
        let total = line["duration_ms"].as_f64().unwrap();
        let head = line["head_ms"].as_f64().unwrap();
        assert!(total >= head && head > 0.0, "{line}");
        assert_no_secret(line, &signatures);
    }
    // The upload took its pauses (3 × 50 ms) before its answer; the line counts them.
    assert!(
        up_line["duration_ms"].as_f64().unwrap() >= 100.0,
        "{up_line}"
    );
    popgate.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_gone_mid_body_gets_an_aborted_line_with_the_bytes_sent_so_far() {
    let env = start_env().await;
    env.authority.record_issued_tokens();
    let config = one_route_config(&env, "");
    let mut popgate = Popgate::start(&config, "info", &[]);
    let (proxy, _admin) = tokio::task::block_in_place(|| popgate.wait_serving());

    // 16 MiB paced at 16 KiB per 20 ms would take over 20 s; the caller leaves after 64 KiB.
    const SIZE: u64 = 16 << 20;
    let target = format!("/v1.0/me?size={SIZE}&chunked=1&pace_ms=20");
    let mut stream = open(proxy, &head("GET", &target, "gone", ""), &[]).await;
    let mut read = Vec::new();
    let mut buf = [0u8; 8192];
    tokio::time::timeout(HTTP_TIMEOUT, async {
        while read.len() < 64 * 1024 {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "popgate closed early");
            read.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the first bytes within the bound");
    // Closed with unread data: the kernel resets the connection.
    drop(stream);
    let head_len = read.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let seen_by_caller = (read.len() - head_len) as u64;

    let line = tokio::task::block_in_place(|| access_line(&mut popgate, "gone"));
    assert_eq!(line["outcome"], "aborted", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    let sent = line["bytes_sent"].as_u64().unwrap();
    // Everything the caller read passed through popgate; what it read also holds the chunk
    // framing (a size line per frame), hence the small allowance.
    assert!(sent > 0 && sent < SIZE, "{line}");
    assert!(
        sent + 1024 >= seen_by_caller,
        "sent {sent}, the caller read {seen_by_caller}: {line}"
    );
    assert!(
        line["duration_ms"].as_f64().unwrap() < 20_000.0,
        "written when the caller left, not at the body's end: {line}"
    );
    assert_no_secret(&line, &env.authority.issued_token_signatures());
    popgate.terminate();
}
