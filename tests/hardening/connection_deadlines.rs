//! Every phase of a connection has a deadline, and idle connections never keep a caller out, on
//! the caller listener and the admin listener alike. Attacked the way a neighbour on the same host
//! would: sockets that say nothing, a partial or bare HTTP/2 preface, keep-alive connections left
//! idle, and more of them than `max_connections`. Through the real `popgate run` binary, in front
//! of the local authority; loopback only.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::kit::process::{Env, admin_counter, connect, get, get_on, start_with_admin};

/// More silent sockets than the default `max_connections` (1,024).
const SILENT: usize = 1_100;
/// Silent sockets opened at once (a divisor of [`SILENT`]).
const SILENT_BATCH: usize = 100;
/// "Well under a second": a caller arriving behind the silent sockets is answered within this.
/// The first-byte deadline is 5 s, so only evicting idle sockets can meet it.
const ANSWERED_WITHIN: Duration = Duration::from_secs(1);
/// How long a late answer is still awaited, so that a failure says whether it came at all.
const DIAGNOSE_WITHIN: Duration = Duration::from_secs(5);
/// How long the silent sockets beyond the cap may take to be accepted and evicted: inside the
/// 5 s first-byte deadline, after the kernel's SYN-ACK retransmits at 1 s and 3 s.
const EVICTIONS_WITHIN: Duration = Duration::from_millis(4_500);
/// Margin on a deadline: a connection must be closed by its deadline plus this.
const MARGIN: Duration = Duration::from_secs(2);
/// The deadlines the timing test configures (the defaults are seconds to tens of seconds).
const DEADLINE: Duration = Duration::from_secs(1);
/// The HTTP/2 client preface.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame (length 0, type 4, no flags, stream 0).
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// Opens `n` connections to `addr` and sends `opening` on each (nothing when empty).
async fn open(addr: SocketAddr, n: usize, opening: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if !opening.is_empty() {
            s.write_all(opening).await.unwrap();
        }
        held.push(s);
    }
    held
}

/// How long until popgate closes `stream` (reading and discarding what it sends), or `None` when
/// it is still open after `bound`.
async fn closed_after(mut stream: TcpStream, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read_to_close = async { while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {} };
    tokio::time::timeout(bound, read_to_close)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// `GET {path}` on the admin listener over a fresh HTTP/1.1 connection: the status.
async fn admin_status(admin: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(admin).await.map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    s.read_to_end(&mut text).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&text);
    text.get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))
}

/// popgate's log lines at `WARN` or above, one per line.
fn warnings(log: &[String]) -> String {
    log.iter()
        .filter(|line| {
            crate::kit::process::fields(line)
                .is_some_and(|f| matches!(f["level"].as_str(), Some("WARN" | "ERROR")))
        })
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// The test process holds the attack's sockets as well as its own: raise its soft limit the way
/// popgate raises its own, and say so if the hard limit is too low for the attack.
fn enough_file_descriptors(needed: u64) {
    let limit = popgate::app::fd_limit::raise_open_files_limit().unwrap_or(0);
    assert!(
        limit >= needed,
        "this test needs {needed} open files; RLIMIT_NOFILE allows {limit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_beyond_the_default_cap_do_not_keep_a_caller_out() {
    enough_file_descriptors(3 * SILENT as u64);
    let env = Env::start().await;
    // Default limits: max_connections 1024, first byte within 5 s.
    let (popgate, proxy, admin) = start_with_admin(&env, "").await;
    // popgate raised its own open-files limit and said which limit is in force.
    let limit = popgate
        .log
        .iter()
        .filter_map(|line| crate::kit::process::fields(line))
        .find(|f| {
            f["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("open-files limit"))
        })
        .expect("popgate logs its open-files limit");
    assert!(
        limit["soft"].as_u64().is_some_and(|soft| soft >= 1024),
        "{limit}"
    );
    // A warm pool, so what is timed below is admission, not the first mTLS handshake upstream.
    let (status, body) = get(proxy, "/v1.0/me").await;
    assert_eq!(status, 200, "{body}");

    // In batches, so popgate's listen backlog never overflows: beyond it the kernel may drop a
    // handshake's last ACK (with SYN cookies, for good), leaving a socket the client thinks open
    // that popgate never sees, and the attack smaller than it looks.
    let mut _silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT / SILENT_BATCH {
        _silent.extend(open(proxy, SILENT_BATCH, b"").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let caller = async {
        let mut sender = connect(proxy).await?;
        let connected = started.elapsed();
        get_on(&mut sender, "/v1.0/me")
            .await
            .map(|a| (connected, a))
    };
    let answered = tokio::time::timeout(DIAGNOSE_WITHIN, caller).await;
    let took = started.elapsed();
    let (connected, (status, body)) = match answered {
        Ok(Ok(answer)) if took <= ANSWERED_WITHIN => answer,
        other => panic!(
            "a caller behind {SILENT} silent sockets got no answer within {ANSWERED_WITHIN:?}: \
             {other:?} after {took:?}; popgate's warnings:\n{}",
            warnings(&popgate.output())
        ),
    };
    assert_eq!(status, 200, "{body}");
    eprintln!("connected in {connected:?}");
    eprintln!("caller behind {SILENT} silent sockets answered in {took:?}");
    // Every silent socket beyond the cap evicts one. Not all of them need to be accepted yet:
    // connect() returns once the client has sent its ACK, but when popgate's listen backlog is
    // full the kernel drops that ACK and the socket reaches the accept queue only with the next
    // SYN-ACK retransmit (1 s, then 3 s later), possibly after the caller above. So the count is
    // awaited, within the first-byte deadline (5 s) that would otherwise close them unevicted.
    let wanted = (SILENT - 1024) as f64;
    let mut evicted = 0.0;
    while started.elapsed() < EVICTIONS_WITHIN {
        evicted = admin_counter(
            admin,
            "popgate_connections_evicted_total{listener=\"caller\"}",
        )
        .await;
        if evicted >= wanted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(evicted >= wanted, "evictions counted: {evicted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_partial_preface_and_idle_connections_are_closed_within_their_deadlines() {
    let env = Env::start().await;
    let limits =
        "limits:\n  first_byte_timeout: 1s\n  h2_preface_timeout: 1s\n  keep_alive_timeout: 1s\n";
    let (_popgate, proxy, admin) = start_with_admin(&env, limits).await;

    let bound = DEADLINE + MARGIN;
    let h2_idle = [PREFACE, EMPTY_SETTINGS].concat();
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("silent", Vec::new()),
        ("partial preface", b"PRI * HTTP/2.0\r\n".to_vec()),
        ("bare preface", PREFACE.to_vec()),
        // Preface and SETTINGS: HTTP/2 with no stream open (its pings kept it ~50 s).
        ("h2 idle", h2_idle),
        // One answered request, then idle (hyper's 30 s head timeout would keep it).
        (
            "h1 idle",
            b"GET /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n".to_vec(),
        ),
    ];
    let mut closing = Vec::new();
    for (name, opening) in attacks {
        let stream = open(proxy, 1, &opening).await.pop().unwrap();
        closing.push((name, tokio::spawn(closed_after(stream, bound * 2))));
    }
    let mut late = Vec::new();
    for (name, closed) in closing {
        let after = closed.await.unwrap();
        eprintln!("{name}: closed after {after:?}");
        if after.is_none_or(|d| d > bound) {
            late.push(format!("{name}: {after:?}"));
        }
    }
    assert!(late.is_empty(), "not closed within {bound:?}: {late:?}");
    for phase in ["first_byte", "preface", "keep_alive"] {
        let series =
            format!("popgate_connection_deadlines_total{{listener=\"caller\",phase=\"{phase}\"}}");
        assert!(admin_counter(admin, &series).await >= 1.0, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_answers_probes_under_the_same_attack() {
    let env = Env::start().await;
    let (_popgate, _proxy, admin) = start_with_admin(&env, "").await;
    // Many times the 32 admin slots: silent sockets and partial prefaces, re-opened as fast as
    // the prober probes.
    let mut held = open(admin, 64, b"").await;
    held.extend(open(admin, 64, b"PRI * HTTP/2.0\r\n").await);
    for round in 0..5 {
        for path in ["/healthz", "/readyz"] {
            let started = Instant::now();
            let status = tokio::time::timeout(ANSWERED_WITHIN, admin_status(admin, path))
                .await
                .unwrap_or_else(|_| panic!("{path} got no answer within {ANSWERED_WITHIN:?}"));
            assert_eq!(status, Ok(200), "{path} (round {round})");
            eprintln!("{path}: {:?}", started.elapsed());
        }
        held.extend(open(admin, 32, b"").await);
    }
    let evicted = admin_counter(
        admin,
        "popgate_connections_evicted_total{listener=\"admin\"}",
    )
    .await;
    assert!(evicted >= 32.0, "evictions counted: {evicted}");
}
