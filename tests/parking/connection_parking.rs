//! Idle HTTP/1 caller connections are parked outside hyper (their buffers freed) and served again
//! on their next request, and parking never loses or cuts a byte: pipelined requests, a partial
//! next head, a request body or a response still in transit across the grace, HTTP/2 (never
//! parked), eviction and drain. Raw sockets on loopback against popgate in-process.

use std::time::Duration;

use crate::kit::dataplane::*;
use crate::kit::raw::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longer than popgate's parking grace (250 ms), so an idle connection is parked meanwhile.
const PAST_GRACE: Duration = Duration::from_millis(700);
/// A closed connection must be seen closed within this.
const CLOSED_WITHIN: Duration = Duration::from_secs(2);

fn get(path: &str) -> String {
    format!("GET http://{GRAPH}{path} HTTP/1.1\r\nHost: {GRAPH}\r\n\r\n")
}

/// One raw HTTP/1.1 caller connection that reads answers one at a time.
struct Caller {
    stream: BufReader<TcpStream>,
}

/// One answer: status, head lines (lower-case), body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Caller {
    async fn connect(rig: &Rig) -> Self {
        let stream = TcpStream::connect(rig.proxy.addr).await.unwrap();
        Self {
            stream: BufReader::new(stream),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).await.unwrap();
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stream.read_line(&mut line).await.unwrap();
        assert!(n > 0, "the connection closed mid-answer");
        line
    }

    /// Reads the next answer (Content-Length or chunked body).
    async fn answer(&mut self) -> Answer {
        bounded(async {
            let status_line = self.line().await;
            let status = status_line
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
            let mut head = String::new();
            loop {
                let line = self.line().await;
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line.to_ascii_lowercase());
            }
            let mut body = Vec::new();
            if head.contains("transfer-encoding: chunked") {
                loop {
                    let size = self.line().await;
                    let size = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0; size + 2];
                    self.stream.read_exact(&mut chunk).await.unwrap();
                    body.extend_from_slice(&chunk[..size]);
                    if size == 0 {
                        break;
                    }
                }
            } else if let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
            {
                body = vec![0; len.trim().parse().unwrap()];
                self.stream.read_exact(&mut body).await.unwrap();
            }
            Answer { status, head, body }
        })
        .await
    }

    /// Whether popgate closes the connection within [`CLOSED_WITHIN`].
    async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(CLOSED_WITHIN, self.stream.read(&mut buf)).await;
        matches!(read, Ok(Ok(0) | Err(_)))
    }
}

async fn default_rig() -> Rig {
    rig(hardened(|_| {})).await
}

#[tokio::test]
async fn an_idle_caller_is_parked_and_served_again_on_the_same_connection() {
    let _alone = crate::one_at_a_time().await;
    let rig = default_rig().await;
    let mut caller = Caller::connect(&rig).await;
    caller.send(get("/download/10").as_bytes()).await;
    let first = caller.answer().await;
    assert_eq!((first.status, first.body.len()), (200, 10));
    let before = parked();
    // Waited for, not slept past: timers run late on a loaded machine.
    assert_eq!(
        parked_count_at(before + 1.0).await,
        before + 1.0,
        "the idle connection was not parked once after an idle grace"
    );
    for n in [20, 30] {
        caller.send(get(&format!("/download/{n}")).as_bytes()).await;
        let again = caller.answer().await;
        assert_eq!((again.status, again.body.len()), (200, n));
    }
    assert_eq!(rig.upstream.requests(), 3);
}

#[tokio::test]
async fn pipelined_requests_and_a_partial_head_across_the_grace_are_all_answered_in_order() {
    let _alone = crate::one_at_a_time().await;
    let rig = default_rig().await;
    let mut caller = Caller::connect(&rig).await;
    // Two requests in one write, and the first half of a third.
    let third = get("/download/30");
    let (start, rest) = third.split_at(20);
    let burst = format!("{}{}{start}", get("/download/10"), get("/download/20"));
    caller.send(burst.as_bytes()).await;
    for n in [10, 20] {
        let answer = caller.answer().await;
        assert_eq!((answer.status, answer.body.len()), (200, n));
    }
    tokio::time::sleep(PAST_GRACE).await;
    caller.send(rest.as_bytes()).await;
    let answer = caller.answer().await;
    assert_eq!((answer.status, answer.body.len()), (200, 30));
    // Parked after the third, then a pipelined pair again.
    tokio::time::sleep(PAST_GRACE).await;
    let pair = format!("{}{}", get("/download/40"), get("/download/50"));
    caller.send(pair.as_bytes()).await;
    for n in [40, 50] {
        let answer = caller.answer().await;
        assert_eq!((answer.status, answer.body.len()), (200, n));
    }
}

#[tokio::test]
async fn a_request_body_arriving_across_the_grace_is_not_cut() {
    let _alone = crate::one_at_a_time().await;
    let rig = default_rig().await;
    let mut caller = Caller::connect(&rig).await;
    let head = format!(
        "POST http://{GRAPH}/upload HTTP/1.1\r\nHost: {GRAPH}\r\nContent-Length: 10\r\n\r\nhello"
    );
    caller.send(head.as_bytes()).await;
    tokio::time::sleep(PAST_GRACE).await;
    caller.send(b"world").await;
    let answer = caller.answer().await;
    assert_eq!(answer.status, 200);
    let seen = rig.upstream.seen();
    assert_eq!(seen.last().map(|s| s.body_len), Some(10));
    caller.send(get("/download/5").as_bytes()).await;
    assert_eq!(caller.answer().await.body.len(), 5);
}

#[tokio::test]
async fn a_response_slower_than_the_grace_arrives_whole() {
    let _alone = crate::one_at_a_time().await;
    let rig = default_rig().await;
    let mut caller = Caller::connect(&rig).await;
    caller.send(get("/slow-body/700").as_bytes()).await;
    let answer = caller.answer().await;
    assert_eq!((answer.status, &answer.body[..]), (200, &b"slow body"[..]));
    tokio::time::sleep(PAST_GRACE).await;
    caller.send(get("/slow-body/0").as_bytes()).await;
    assert_eq!(caller.answer().await.body, b"slow body");
}

#[tokio::test]
async fn http2_prior_knowledge_still_works_and_its_preface_may_come_byte_by_byte() {
    let _alone = crate::one_at_a_time().await;
    let rig = default_rig().await;
    let answer = h2c_send(rig.proxy.addr, absolute_get(GRAPH, "/h2")).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(text(answer).await, "hello from upstream");

    let mut stream = TcpStream::connect(rig.proxy.addr).await.unwrap();
    for byte in b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
        stream.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An empty SETTINGS frame; the server's first frame is its own SETTINGS.
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut frame = [0u8; 9];
    bounded(stream.read_exact(&mut frame)).await.unwrap();
    assert_eq!(frame[3], 4, "not a SETTINGS frame: {frame:?}");
}

#[tokio::test]
async fn keep_alive_and_eviction_close_parked_connections() {
    let _alone = crate::one_at_a_time().await;
    let rig = rig(hardened(|c| {
        c.keep_alive_timeout = Duration::from_millis(1500);
        c.max_connections = 1;
    }))
    .await;
    // Eviction: a parked connection makes room for a new caller.
    let mut parked_caller = Caller::connect(&rig).await;
    parked_caller.send(get("/download/1").as_bytes()).await;
    assert_eq!(parked_caller.answer().await.status, 200);
    tokio::time::sleep(PAST_GRACE).await;
    let mut next = Caller::connect(&rig).await;
    next.send(get("/download/2").as_bytes()).await;
    assert_eq!(next.answer().await.body.len(), 2);
    assert!(parked_caller.closed().await, "the parked caller was kept");
    // Keep-alive: the parked caller is closed once idle for the keep-alive timeout.
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), next.stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "still open: {read:?}");
    assert!(started.elapsed() < Duration::from_millis(1500 + 1000));
}

#[tokio::test]
async fn on_drain_a_parked_caller_closes_at_once_and_one_mid_request_finishes() {
    let _alone = crate::one_at_a_time().await;
    let mut rig = default_rig().await;
    let mut idle = Caller::connect(&rig).await;
    idle.send(get("/download/1").as_bytes()).await;
    assert_eq!(idle.answer().await.status, 200);
    let mut busy = Caller::connect(&rig).await;
    busy.send(get("/gate").as_bytes()).await;
    rig.upstream.wait_gated(1).await;
    tokio::time::sleep(PAST_GRACE).await;
    let handle = rig.proxy.handle.take().unwrap();
    let drain = tokio::spawn(handle.shutdown());
    assert!(idle.closed().await, "the parked caller outlived the drain");
    assert!(
        !drain.is_finished(),
        "the drain did not wait for the request"
    );
    rig.upstream.open_gate();
    let answer = busy.answer().await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.head.contains("connection: close"),
        "no Connection: close: {}",
        answer.head
    );
    assert!(busy.closed().await);
    bounded(drain).await.unwrap();
}

/// `popgate_connections_parked_total` from the admin listener of a `popgate run` process.
async fn parked_in(admin: std::net::SocketAddr) -> f64 {
    crate::kit::process::admin_counter(admin, "popgate_connections_parked_total").await
}

/// Exact counts in a process of its own: the caller's connection is parked once per idle spell,
/// by the watchdog's wake-up alone (nothing arrives on the connection meanwhile, so hyper must
/// read again when its task is woken), and is served again after each.
#[tokio::test]
async fn the_binary_parks_an_idle_caller_once_per_idle_spell() {
    let _alone = crate::one_at_a_time().await;
    use crate::kit::process::{Env, connect, get_on, start_with_admin};
    let env = Env::start().await;
    let (popgate, proxy, admin) = start_with_admin(&env, "").await;
    let mut sender = connect(proxy).await.unwrap();
    assert_eq!(get_on(&mut sender, "/v1.0/me").await.unwrap().0, 200);
    tokio::time::sleep(PAST_GRACE).await;
    assert_eq!(
        parked_in(admin).await,
        1.0,
        "not parked after one idle spell"
    );
    for spell in [2.0, 3.0] {
        assert_eq!(get_on(&mut sender, "/v1.0/me").await.unwrap().0, 200);
        assert_eq!(get_on(&mut sender, "/v1.0/me").await.unwrap().0, 200);
        tokio::time::sleep(PAST_GRACE).await;
        assert_eq!(parked_in(admin).await, spell);
    }
    drop(popgate);
}

/// Parking applies on a Unix-socket listener too: an idle caller there is parked and served
/// again on the same connection (a hyper client, which fails a request on a closed connection).
#[tokio::test]
async fn an_idle_unix_socket_caller_is_parked_and_served_again() {
    let _alone = crate::one_at_a_time().await;
    use crate::kit::guard::{Env, start_guarded};
    use http_body_util::BodyExt as _;
    use hyper_util::rt::TokioIo;
    use popgate::dataplane::unix_listener::{DEFAULT_UNIX_SOCKET_MODE, UnixListenerSpec};
    use popgate::route::policy::RoutePolicy;

    let env = Env::new().await;
    let socket = env.dir.path().join("popgate.sock");
    let host = "open.svc.example";
    let upstream = env.pki.upstream_settings(
        env.dir.path(),
        &[("open.svc.example:443", env.upstream.addr)],
    );
    let token = pop_token(env.dir.path(), &env.pki.binding("popgate"), "open");
    let routes = vec![(
        route("open", Some(host), None),
        token,
        RoutePolicy::default(),
    )];
    let unix = UnixListenerSpec {
        path: socket.clone(),
        mode: DEFAULT_UNIX_SOCKET_MODE,
    };
    let proxy = start_guarded(routes, &upstream, vec![], vec![unix]).await;
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for n in 1..=2 {
        let before = parked();
        let request = http::Request::builder()
            .uri(format!("/download/{n}"))
            .header("host", host)
            .body(TestBody::Empty)
            .unwrap();
        bounded(sender.ready()).await.unwrap();
        let response = bounded(sender.send_request(request)).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = bounded(response.into_body().collect()).await.unwrap();
        assert_eq!(body.to_bytes().len(), n);
        assert_eq!(
            parked_count_at(before + 1.0).await,
            before + 1.0,
            "the Unix-socket caller was not parked once"
        );
    }
    assert_eq!(env.upstream.requests(), 2);
    proxy.shutdown().await;
}
