//! A parked caller whose next head trickles in (its first bytes unpark the connection, the rest
//! comes later) is parked again after that request: popgate in-process, one raw loopback caller.
//!
//! Before the fix, the watchdog, asked to look again when the connection went back to hyper,
//! could look before the request was in flight, took the idle clock of the spell before the
//! parked one as already past the grace, and slept until the keep-alive deadline (30 s): the
//! connection stayed in hyper, with its buffers, until its next bytes (one in a few dozen TLS
//! callers whose head arrived in two reads, `tls_caller.rs`).

use std::time::Duration;

use crate::kit::dataplane::{parked, parked_count_at};
use crate::kit::raw::{GRAPH, hardened, read_head, rig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long the test waits between the parts of the trickled head: long enough for popgate's
/// task to run on each part before the next arrives.
const BETWEEN_PARTS: Duration = Duration::from_millis(100);

fn get(size: usize) -> String {
    format!("GET http://{GRAPH}/download/{size} HTTP/1.1\r\nHost: {GRAPH}\r\n\r\n")
}

/// Reads one answer whose body is `size` bytes (the upstream's `/download/N` declares its
/// length); its status.
async fn answer(stream: &mut TcpStream, size: usize) -> u16 {
    let head = read_head(stream).await;
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a response head: {head:?}"));
    let mut body = vec![0; size];
    crate::kit::dataplane::bounded(stream.read_exact(&mut body))
        .await
        .unwrap();
    status
}

#[tokio::test]
async fn a_caller_whose_next_head_trickles_in_after_a_parked_spell_is_parked_again() {
    let _alone = crate::one_at_a_time().await;
    let rig = rig(hardened(|_| {})).await;
    let mut caller = TcpStream::connect(rig.proxy.addr).await.unwrap();
    let before = parked();
    caller.write_all(get(10).as_bytes()).await.unwrap();
    assert_eq!(answer(&mut caller, 10).await, 200);
    assert_eq!(
        parked_count_at(before + 1.0).await,
        before + 1.0,
        "not parked once after the first request"
    );
    let next = get(20);
    let (first, rest) = next.split_at(5);
    let (second, rest) = rest.split_at(5);
    // Three reads: the first unparks, the second wakes the connection again before its request
    // is in flight (whatever order its task polls the watchdog in), the third ends the head.
    for part in [first, second] {
        caller.write_all(part.as_bytes()).await.unwrap();
        tokio::time::sleep(BETWEEN_PARTS).await;
    }
    caller.write_all(rest.as_bytes()).await.unwrap();
    assert_eq!(answer(&mut caller, 20).await, 200);
    assert_eq!(
        parked_count_at(before + 2.0).await,
        before + 2.0,
        "a caller whose head trickled in was not parked again"
    );
    caller.write_all(get(30).as_bytes()).await.unwrap();
    assert_eq!(answer(&mut caller, 30).await, 200);
    assert_eq!(rig.upstream.requests(), 3);
}
