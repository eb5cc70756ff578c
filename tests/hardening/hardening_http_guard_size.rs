//! The HTTP/1 framing guard never turns itself off: a head larger than it follows (however it is
//! padded) is refused with 431 and the connection closes, and a large head it does follow leaves
//! it checking the next request on the connection.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::kit::raw::*;

/// How long the attack waits between its two writes so popgate has read the first: hyper checks
/// its buffer limit only between reads, so the head must straddle two reads to slip past it.
const LET_POPGATE_READ: Duration = Duration::from_millis(300);

/// Sends `first`, waits until popgate has read it, sends `rest`, and reads until closed.
async fn in_two_reads(rig: &Rig, first: &[u8], rest: &[u8]) -> Exchange {
    let mut stream = TcpStream::connect(rig.proxy.addr).await.unwrap();
    stream.write_all(first).await.unwrap();
    tokio::time::sleep(LET_POPGATE_READ).await;
    let _ = stream.write_all(rest).await;
    read_until_closed(&mut stream).await
}

/// The guard's head size on the hardening rig: the default `max_header_bytes`.
const HEAD_CAP: usize = 64 * 1024;

/// A keep-alive GET whose head, padded in front with CRLFs (which parsers skip before a request
/// line), is exactly `total` bytes.
fn padded_get(total: usize) -> String {
    let get = "GET /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n";
    let pad = total - get.len();
    assert_eq!(pad % 2, 0, "pad with whole CRLFs");
    format!("{}{get}", "\r\n".repeat(pad / 2))
}

/// Two equal `Content-Length` lines: hyper merges them, so only the guard sees them and refuses
/// the request with 400, and only while it is watching.
const SMUGGLE: &str = "POST /v1.0/smuggled HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nX";

#[tokio::test]
async fn a_head_padded_past_the_guard_gets_431_and_nothing_behind_it_is_served() {
    // The attack: pad the first head with leading CRLFs to just over the guard's size (hyper's
    // buffer limit is soft, so hyper parses it), then pipeline a duplicate-Content-Length request the guard would
    // otherwise refuse.
    let rig = rig(hardened(|_| {})).await;
    for total in [HEAD_CAP + 2, HEAD_CAP + 4 * 1024] {
        let raw = format!("{}{SMUGGLE}", padded_get(total));
        // Everything but the last bytes of the padding first: hyper's buffer stays under its
        // limit, and the next read brings the whole rest of the head at once.
        let (first, rest) = raw.as_bytes().split_at(HEAD_CAP - 2);
        let got = in_two_reads(&rig, first, rest).await;
        assert_eq!(got.status(), 431, "{total}: {:?}", got.text.get(..300));
        assert!(got.closed, "{total}: connection left open");
        assert!(
            !got.text.contains("HTTP/1.1 200"),
            "{total}: a request behind the oversized head was served: {:?}",
            got.text
        );
    }
    assert!(
        rig.upstream.seen().is_empty(),
        "reached the upstream: {:?}",
        rig.upstream.seen()
    );
}

#[tokio::test]
async fn a_head_one_byte_over_the_guard_gets_431() {
    let rig = rig(hardened(|_| {})).await;
    // One header line sized so the head is HEAD_CAP + 1 bytes, no padding.
    let start = "GET /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nx-fill: ";
    let end = "\r\n\r\n";
    let fill = "f".repeat(HEAD_CAP + 1 - start.len() - end.len());
    let raw = format!("{start}{fill}{end}{SMUGGLE}");
    let (first, rest) = raw.as_bytes().split_at(HEAD_CAP - 16);
    let got = in_two_reads(&rig, first, rest).await;
    assert_eq!(got.status(), 431, "{:?}", got.text.get(..300));
    assert!(got.closed);
    assert_eq!(rig.upstream.requests(), 0);
}

#[tokio::test]
async fn after_a_large_allowed_head_the_guard_still_refuses_smuggling() {
    // A head at the guard's size exactly is served; the duplicate-Content-Length request behind it on the same
    // connection is still refused with 400, and only the first reaches the upstream.
    let rig = rig(hardened(|_| {})).await;
    let raw = format!("{}{SMUGGLE}", padded_get(HEAD_CAP));
    let (first, rest) = raw.as_bytes().split_at(HEAD_CAP - 16);
    let got = in_two_reads(&rig, first, rest).await;
    assert_eq!(got.status(), 200, "{:?}", got.text.get(..300));
    let second = got.text.find("HTTP/1.1 400").map(|at| &got.text[at..]);
    assert!(
        second.is_some(),
        "second response is not 400: {:?}",
        got.text
    );
    assert!(got.closed);
    let paths: Vec<String> = rig.upstream.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/v1.0/me"]);
}

#[tokio::test]
async fn a_long_chunk_extension_does_not_switch_the_guard_off() {
    // The attack: a chunk-size line with a 5 KiB extension (hyper allows 16 KiB of extensions
    // per body) made the guard stop following the connection: the request was forwarded and
    // every request pipelined behind it went unchecked. Now the guard refuses the line it will
    // not follow, before anything is forwarded.
    let rig = rig(hardened(|_| {})).await;
    let ext = "e".repeat(5 * 1024);
    let raw = format!(
        "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nTransfer-Encoding: chunked\r\n\r\n\
5;x={ext}\r\nhello\r\n0\r\n\r\n{SMUGGLE}"
    );
    let got = exchange(rig.proxy.addr, raw.as_bytes()).await;
    assert!(got.closed);
    assert_eq!(got.status(), 400, "{:?}", got.text);
    assert!(
        !got.text.contains("HTTP/1.1 200"),
        "a request was served: {:?}",
        got.text
    );
    let paths: Vec<String> = rig.upstream.seen().into_iter().map(|s| s.path).collect();
    assert!(
        !paths.iter().any(|p| p.contains("smuggled")),
        "the smuggled request reached the upstream: {paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_binary_answers_a_padded_head_with_431_and_serves_nothing_behind_it() {
    // The same attack against `popgate run` (config loader, listeners, default limits) in front
    // of the local authority's resource: 431, the connection closed, and neither the padded GET
    // nor the duplicate-Content-Length POST behind it reaches the resource.
    use crate::kit::process::{Env, Popgate, route};
    use popgate_authority::Endpoint;

    let env = Env::start().await;
    let config = env.write_config(&route("graph", None, "app", ""));
    let popgate = Popgate::start(&config);
    let (proxy, _popgate) = tokio::task::spawn_blocking(move || {
        let mut popgate = popgate;
        (popgate.wait_serving(), popgate)
    })
    .await
    .unwrap();
    let resource_requests = || env.authority.observations().count(Endpoint::Resource);
    // The control: the route serves a clean request.
    let (status, body) = crate::kit::process::get(proxy, "/v1.0/me").await;
    assert_eq!(status, 200, "{body}");
    let served = resource_requests();
    for total in [HEAD_CAP + 2, HEAD_CAP + 4 * 1024] {
        let raw = format!("{}{SMUGGLE}", padded_get(total));
        let (first, rest) = raw.as_bytes().split_at(HEAD_CAP - 2);
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        stream.write_all(first).await.unwrap();
        tokio::time::sleep(LET_POPGATE_READ).await;
        let _ = stream.write_all(rest).await;
        let got = read_until_closed(&mut stream).await;
        assert_eq!(got.status(), 431, "{total}: {:?}", got.text.get(..300));
        assert!(got.closed, "{total}: connection left open");
        assert!(
            !got.text.contains("HTTP/1.1 200"),
            "{total}: {:?}",
            got.text
        );
    }
    assert_eq!(
        resource_requests(),
        served,
        "a request reached the resource"
    );
}
