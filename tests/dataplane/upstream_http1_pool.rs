//! popgate's own HTTP/1.1 upstream pool (`net::http1_pool`), through the whole proxy on real
//! loopback TLS: one connection carries sequential requests (also answers with no body, whose
//! body nobody polls), an idle connection is closed at `pool_idle_timeout` with no traffic, one
//! the upstream closed while idle is replaced without a caller error, a request the upstream may
//! have read is never sent twice, a response body the caller abandons does not give its
//! connection back, a host that chooses h2 by ALPN is served over h2 on the connection popgate
//! dialed (no second handshake), and a streamed upload goes on while the caller reads nothing
//! of the answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt as _;
use popgate::dataplane::ProxySettings;
use popgate::net::client::UpstreamSettings;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::kit::dataplane::*;

const HOST: &str = "svc.example";

/// popgate in front of `addr` (as `svc.example:443`) with `settings` changed by `tune`.
async fn proxy_to(
    pki: &TestPki,
    dir: &std::path::Path,
    addr: std::net::SocketAddr,
    tune: impl FnOnce(&mut UpstreamSettings),
) -> TestProxy {
    let token = pop_token(dir, &pki.binding("h1pool-client"), "h1pool");
    let mut settings = pki.upstream_settings(dir, &[("svc.example:443", addr)]);
    tune(&mut settings);
    start_proxy(
        vec![(route("r", Some(HOST), None), Some(token))],
        &settings,
        ProxySettings::default(),
    )
    .await
}

async fn get(proxy: &TestProxy, path: &str) -> (u16, String) {
    let response = h1_send(proxy.addr, absolute_get(HOST, path)).await;
    let status = response.status().as_u16();
    (status, text(response).await)
}

/// The upstream's open connections once they reach `want`, or after a bounded wait (5 s) what
/// they are then.
async fn open_settles_at(upstream: &TestUpstream, want: usize) -> usize {
    let mut open = upstream.state.open.load(Ordering::SeqCst);
    for _ in 0..50 {
        if open == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        open = upstream.state.open.load(Ordering::SeqCst);
    }
    open
}

#[tokio::test]
async fn sequential_requests_share_one_connection_also_when_the_body_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-reuse-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |_| {}).await;
    // Empty bodies (`Content-Length: 0`: the proxy may never poll them) and ordinary ones.
    for path in [
        "/download/0",
        "/a",
        "/download/0",
        "/b",
        "/download/0",
        "/c",
    ] {
        let (status, _) = get(&proxy, path).await;
        assert_eq!(status, 200, "{path}");
    }
    assert_eq!(upstream.requests(), 6);
    assert_eq!(upstream.handshakes(), 1, "one upstream connection for all");
    let seen = upstream.seen();
    // What hyper-util's client sent: origin-form target, the host's `Host`.
    assert!(seen.iter().all(|s| s.authority.is_none()), "{seen:?}");
    assert!(
        seen.iter().all(|s| s.header("host") == Some(HOST)),
        "{seen:?}"
    );
    assert_eq!(seen[1].path, "/a");
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_idle_timeout_without_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-idle-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |s| {
        s.pool_idle_timeout = Duration::from_millis(300);
    })
    .await;
    assert_eq!(get(&proxy, "/a").await.0, 200);
    assert_eq!(get(&proxy, "/b").await.0, 200);
    assert_eq!(upstream.handshakes(), 1);
    // Bounded wait for the upstream to see the connection closed.
    let open = open_settles_at(&upstream, 0).await;
    assert_eq!(open, 0, "the idle connection is still open after 5 s");
    // The next request dials again and succeeds.
    assert_eq!(get(&proxy, "/c").await.0, 200);
    assert_eq!(upstream.handshakes(), 2);
}

/// What a [`RawUpstream`] connection does after its first response.
#[derive(Clone, Copy, PartialEq)]
enum AfterFirst {
    /// Waits a little, then closes the connection (a keep-alive timeout shorter than popgate's).
    CloseWhileIdle,
    /// Reads the next request, then closes without answering.
    CloseOnNextRequest,
}

/// A TLS HTTP/1.1 upstream written by hand, answering each connection's first request with a
/// keep-alive `200`, then closing as `after` says. Counts connections and request heads.
struct RawUpstream {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

/// A loopback listener and the TLS acceptor of a hand-written HTTP/1.1 upstream for `HOST`
/// (ALPN `http/1.1` only, no client certificate asked).
async fn tls_listener(pki: &TestPki) -> (TcpListener, TlsAcceptor) {
    let (chain, key) = pki.server_cert(&[HOST]);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (listener, TlsAcceptor::from(Arc::new(config)))
}

/// Bytes of a request head the raw upstream reads at most.
const MAX_HEAD: usize = 16 * 1024;

impl RawUpstream {
    async fn start(pki: &TestPki, after: AfterFirst) -> Self {
        let (listener, acceptor) = tls_listener(pki).await;
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(AtomicUsize::new(0));
        let (c, h) = (Arc::clone(&connections), Arc::clone(&heads));
        let task = tokio::spawn(async move {
            // Bounded: the tests make a handful of connections.
            for _ in 0..16 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (acceptor, h) = (acceptor.clone(), Arc::clone(&h));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if !read_head(&mut tls).await {
                        return;
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    let _ = tls
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst")
                        .await;
                    let _ = tls.flush().await;
                    match after {
                        AfterFirst::CloseWhileIdle => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        AfterFirst::CloseOnNextRequest => {
                            if read_head(&mut tls).await {
                                h.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            addr,
            connections,
            heads,
            _task: task,
        }
    }
}

/// Reads one request head (up to its blank line); false at EOF or past [`MAX_HEAD`].
async fn read_head(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match bounded(io.read(&mut buf)).await {
            Ok(n) if n > 0 && head.len() + n <= MAX_HEAD => head.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced_without_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-stale-ca");
    let upstream = RawUpstream::start(&pki, AfterFirst::CloseWhileIdle).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |_| {}).await;
    assert_eq!(get(&proxy, "/1").await, (200, "first".to_owned()));
    // The upstream closes the idle connection after 100 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&proxy, "/2").await, (200, "first".to_owned()));
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
    assert_eq!(upstream.heads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_request_the_upstream_may_have_read_is_never_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-noreplay-ca");
    let upstream = RawUpstream::start(&pki, AfterFirst::CloseOnNextRequest).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |_| {}).await;
    assert_eq!(get(&proxy, "/1").await.0, 200);
    // Written on the reused connection, read, then the connection closed: 502, not a replay.
    assert_eq!(get(&proxy, "/2").await.0, 502);
    assert_eq!(
        upstream.heads.load(Ordering::SeqCst),
        2,
        "sent exactly once"
    );
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_body_the_caller_abandons_does_not_give_its_connection_back() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-abandon-ca");
    let upstream = TestUpstream::start(&pki, &pki, false).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |_| {}).await;
    // A large body: the caller reads one frame and goes away.
    let response = h1_send(proxy.addr, absolute_get(HOST, "/download/8000000")).await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = bounded(body.frame()).await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    // The next requests work, on a new connection (the abandoned one is closed, not reused).
    for _ in 0..2 {
        assert_eq!(get(&proxy, "/after").await.0, 200);
    }
    assert_eq!(upstream.handshakes(), 2);
    let open = open_settles_at(&upstream, 1).await;
    assert_eq!(open, 1, "the abandoned connection was not closed");
}

#[tokio::test]
async fn a_host_choosing_h2_is_served_over_h2_on_the_connection_popgate_dialed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-h2-ca");
    let upstream = TestUpstream::start(&pki, &pki, true).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |_| {}).await;
    for i in 0..4 {
        assert_eq!(get(&proxy, &format!("/{i}")).await.0, 200);
    }
    let seen = upstream.seen();
    assert!(
        seen.iter().all(|s| s.version == http::Version::HTTP_2),
        "{seen:?}"
    );
    assert_eq!(
        upstream.handshakes(),
        1,
        "the first dial's connection was used"
    );
}

/// Request body bytes the full-duplex test uploads: past what the sockets on the way can hold
/// (loopback buffers grow to a few MiB each), so the upload finishes only if popgate keeps
/// sending it while nobody reads the answer.
const DUPLEX_UPLOAD: u64 = 64 * 1024 * 1024;

/// Response body bytes the full-duplex upstream writes at most before the upload has ended.
const DUPLEX_ANSWER_CAP: u64 = 64 * 1024 * 1024;

/// A TLS HTTP/1.1 upstream for one connection that answers at once with a chunked body it keeps
/// writing while it reads the request body (its reading and writing independent, as a
/// streaming service's are), and ends the answer once the request body has ended. Returns its
/// address and the request body bytes read so far.
async fn full_duplex_upstream(pki: &TestPki) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let (listener, acceptor) = tls_listener(pki).await;
    let addr = listener.local_addr().unwrap();
    let read = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&read);
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok(tls) = acceptor.accept(tcp).await else {
            return;
        };
        let (mut reader, mut writer) = tokio::io::split(tls);
        // The head, and whatever part of the body came with it.
        let mut head = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let end = loop {
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match reader.read(&mut buf).await {
                Ok(n) if n > 0 && head.len() + n <= MAX_HEAD + buf.len() => {
                    head.extend_from_slice(&buf[..n])
                }
                _ => return,
            }
        };
        counted.fetch_add(head.len() - end, Ordering::SeqCst);
        let done = Arc::new(tokio::sync::Notify::new());
        let upload_done = Arc::clone(&done);
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let upload_ended = Arc::clone(&ended);
        let answered = tokio::spawn(async move {
            let chunk = vec![b'a'; 64 * 1024];
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            if writer.write_all(head).await.is_err() {
                return;
            }
            // Whole chunks only (a write cut short would corrupt the framing): the end of the
            // upload is looked at between them.
            let mut written = 0u64;
            while !upload_ended.load(Ordering::SeqCst) && written < DUPLEX_ANSWER_CAP {
                if writer.write_all(&frame).await.is_err() {
                    return;
                }
                written += chunk.len() as u64;
            }
            upload_done.notified().await;
            let _ = writer.write_all(b"0\r\n\r\n").await;
            let _ = writer.flush().await;
        });
        while (counted.load(Ordering::SeqCst) as u64) < DUPLEX_UPLOAD {
            match reader.read(&mut buf).await {
                Ok(n) if n > 0 => counted.fetch_add(n, Ordering::SeqCst),
                _ => return,
            };
        }
        ended.store(true, Ordering::SeqCst);
        // A permit if the writer is not waiting yet.
        done.notify_one();
        let _ = answered.await;
    });
    (addr, read)
}

/// A request body streamed from the caller keeps going upstream while nobody reads the answer
/// the upstream is already streaming back: the caller here sends its whole body before it reads
/// anything. The connection's own task sends it; driven only as its response body is read (an
/// alternative measured and rejected, benches/MICRO.md), the connection stopped taking the
/// caller's body once the answer filled the sockets (1.3 of 64 MiB), and both waited for ever.
#[tokio::test]
async fn an_upload_goes_on_while_the_caller_reads_nothing_of_a_streaming_answer() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1pool-duplex-ca");
    let (addr, read) = full_duplex_upstream(&pki).await;
    let proxy = proxy_to(&pki, dir.path(), addr, |_| {}).await;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{HOST}/upload"))
        .header("host", HOST)
        .body(TestBody::Repeat {
            remaining: DUPLEX_UPLOAD,
        })
        .unwrap();
    // hyper's client sends the body and reads the answer's head, not its body, until asked.
    let response = h1_send(proxy.addr, request).await;
    assert_eq!(response.status(), 200);
    let uploaded = async {
        while (read.load(Ordering::SeqCst) as u64) < DUPLEX_UPLOAD {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let waited = tokio::time::timeout(Duration::from_secs(30), uploaded).await;
    assert!(
        waited.is_ok(),
        "the upload stalled at {} of {DUPLEX_UPLOAD} bytes",
        read.load(Ordering::SeqCst)
    );
    // Now the caller reads the answer to its end.
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = bounded(body.frame()).await {
        if let Ok(data) = frame.unwrap().into_data() {
            received += data.len() as u64;
        }
    }
    assert!(
        received > 0 && received.is_multiple_of(64 * 1024),
        "{received}"
    );
}

/// A TLS HTTP/1.1 upstream written by hand that answers the n-th request head it reads (over all
/// its connections) with `answers[n]`, byte for byte, and closes a connection after an answer
/// when `close_after[n]`. Counts connections.
struct ScriptedUpstream {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl ScriptedUpstream {
    async fn start(pki: &TestPki, answers: Vec<(&'static [u8], bool)>) -> Self {
        let (listener, acceptor) = tls_listener(pki).await;
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(answers);
        let c = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            // Bounded: the tests make a handful of connections.
            for _ in 0..16 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (acceptor, served, answers) =
                    (acceptor.clone(), Arc::clone(&served), Arc::clone(&answers));
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    while read_head(&mut tls).await {
                        let n = served.fetch_add(1, Ordering::SeqCst);
                        let Some(&(answer, close)) = answers.get(n) else {
                            return;
                        };
                        if tls.write_all(answer).await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                        if close {
                            break;
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
        Self {
            addr,
            connections,
            _task: task,
        }
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// The answers popgate's HTTP/1.1 codec reads: each case's first answer, then `OK` for the next
/// request, and whether that next request came on the same connection.
async fn first_then_ok(first: &'static [u8], close: bool) -> ((u16, String), usize) {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("h1codec-ca");
    let upstream = ScriptedUpstream::start(&pki, vec![(first, close), (OK, false)]).await;
    let proxy = proxy_to(&pki, dir.path(), upstream.addr, |_| {}).await;
    let answer = get(&proxy, "/first").await;
    assert_eq!(get(&proxy, "/next").await, (200, "ok".to_owned()));
    (answer, upstream.connections.load(Ordering::SeqCst))
}

#[tokio::test]
async fn a_complete_keep_alive_answer_leaves_its_connection_for_the_next_request() {
    let (answer, connections) =
        first_then_ok(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst", false).await;
    assert_eq!(answer, (200, "first".to_owned()));
    assert_eq!(connections, 1);
}

#[tokio::test]
async fn a_chunked_answer_with_trailers_is_read_whole_and_its_connection_reused() {
    let (answer, connections) = first_then_ok(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nx-sum: 5\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(answer, (200, "abcde".to_owned()));
    assert_eq!(connections, 1);
}

#[tokio::test]
async fn interim_answers_are_skipped() {
    let (answer, connections) = first_then_ok(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
        false,
    )
    .await;
    assert_eq!(answer, (200, "final".to_owned()));
    assert_eq!(connections, 1);
}

/// Answers after which the connection must not carry another request: the next one goes out on
/// a new connection (the upstream here keeps the old one open, so reusing it would be wrong).
#[tokio::test]
async fn answers_that_end_their_connection_are_not_reused() {
    for first in [
        // The upstream asked to close.
        &b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 5\r\n\r\nfirst"[..],
        // HTTP/1.0: not persistent.
        b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nfirst",
        // Bytes after the declared body: the connection's framing cannot be trusted.
        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirstEXTRA",
    ] {
        let (answer, connections) = first_then_ok(first, false).await;
        assert_eq!(
            answer,
            (200, "first".to_owned()),
            "{}",
            String::from_utf8_lossy(first)
        );
        assert_eq!(connections, 2, "{}", String::from_utf8_lossy(first));
    }
}

/// A body delimited by the close is read to the upstream's close.
#[tokio::test]
async fn a_body_delimited_by_the_close_is_read_to_the_close() {
    let (answer, connections) =
        first_then_ok(b"HTTP/1.1 200 OK\r\n\r\nuntil the close", true).await;
    assert_eq!(answer, (200, "until the close".to_owned()));
    assert_eq!(connections, 2);
}

/// Framing popgate and the upstream could read differently is refused with a 502 and its
/// connection closed, never passed on nor reused.
#[tokio::test]
async fn ambiguous_or_unasked_answers_are_a_502_and_their_connection_is_closed() {
    for first in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 0\r\n\r\n",
    ] {
        let (answer, connections) = first_then_ok(first, false).await;
        assert_eq!(answer.0, 502, "{}", String::from_utf8_lossy(first));
        assert_eq!(connections, 2, "{}", String::from_utf8_lossy(first));
    }
}
