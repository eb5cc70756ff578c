//! Callers that stop reading never stall other callers' responses on the same upstream h2
//! connection. A stalled caller leaves its upstream stream's unread bytes in popgate's receive
//! buffer, and those bytes count against the *connection's* flow-control window too. With
//! hyper's defaults (2 MiB per stream, 5 MiB per connection) three such callers took the whole
//! window: every other response on that connection stopped until `response_body_timeout`
//! (30 s by default) cut the stalled ones off, and a neighbour re-opening them kept it so.
//! popgate's stream window is a fraction of its connection window (`net/client.rs`), so the
//! attack below leaves plenty of window for everyone else.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::kit::raw::{hardened, rig};

/// Stalled downloads the attacker holds open: with hyper's default windows, three were enough.
const STALLED_READERS: usize = 8;
/// Each asks for 1 GiB, far more than any window.
const HUGE: u64 = 1 << 30;
/// The attacker's socket receive buffer: small, so popgate's writes to it stop at once and the
/// upstream stream's window fills.
const ATTACKER_RCVBUF: u32 = 4096;
/// How long the stalled streams get to fill their windows before the honest caller asks.
const FILL: Duration = Duration::from_secs(2);
/// The honest caller's download.
const HONEST: usize = 1 << 20;
/// How long the honest download may take on a loaded 2-core runner; far below the stalled
/// callers' deadline (configured at 120 s so that none is cut off during the test).
const HONEST_WITHIN: Duration = Duration::from_secs(15);

/// A caller that asks for `HUGE` bytes and never reads a byte of the answer.
async fn stalled_reader(proxy: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(ATTACKER_RCVBUF).unwrap();
    let mut s = socket.connect(proxy).await.unwrap();
    let head = format!("GET /download/{HUGE} HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

#[tokio::test]
async fn stalled_readers_do_not_stall_other_responses_on_the_upstream_connection() {
    let rig = rig(hardened(|c| {
        c.response_body_timeout = Duration::from_secs(120);
    }))
    .await;
    let proxy = rig.proxy.addr;
    // One answer first, so that popgate knows the upstream speaks h2 and every request below
    // shares the connection it opened.
    let mut first = TcpStream::connect(proxy).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nHost: graph.microsoft.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    first.read_to_end(&mut answer).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    let connections = rig.upstream.handshakes();

    let mut held = Vec::with_capacity(STALLED_READERS);
    for _ in 0..STALLED_READERS {
        held.push(stalled_reader(proxy).await);
    }
    tokio::time::sleep(FILL).await;

    let started = Instant::now();
    let mut honest = TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "GET /download/{HONEST} HTTP/1.1\r\nHost: graph.microsoft.com\r\nConnection: close\r\n\r\n"
    );
    honest.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::with_capacity(HONEST + 1024);
    let read = tokio::time::timeout(HONEST_WITHIN, honest.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the honest 1 MiB download got {} bytes in {HONEST_WITHIN:?} beside {STALLED_READERS} stalled readers",
        answer.len()
    );
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &answer[..answer.len().min(64)]
    );
    assert!(answer.len() > HONEST, "only {} bytes", answer.len());
    eprintln!(
        "honest 1 MiB download beside {STALLED_READERS} stalled readers: {:?}",
        started.elapsed()
    );
    // Every stream went over the connection the first answer opened (one lane on this runtime).
    assert_eq!(rig.upstream.handshakes(), connections);
    drop(held);
}
