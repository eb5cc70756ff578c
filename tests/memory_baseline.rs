//! Memory returns to its baseline after stalled read-aheads and stalled readers: the real
//! `popgate run` binary (its RSS is measured from /proc, its own process), in front
//! of the local authority's resource server; loopback only.
//!
//! The attack: [`STALLED_BODIES`] callers each declare a 64 KiB body, send all but one byte of
//! it (popgate reads it ahead for the 401 replay, filling the request's share of the read-ahead
//! budget) and then stall; [`STALLED_READERS`] callers each ask for a 1 GiB download and never
//! read. Every one is cut off by its deadline (`request_body_timeout`, `response_body_timeout`,
//! both 2 s here), and popgate's RSS must come back to within [`RSS_BOUND_KIB`] of its baseline.
//!
//! The baseline is taken after one such attack (a warm-up round), not at start: glibc's malloc
//! keeps what the first attack freed in its per-thread arenas instead of returning it to the
//! kernel (measured: +60–75 MiB over the cold RSS, see docs/reliability.md), and reuses it for the
//! next attack. What the test rules out is memory that stays *held*: each round after the warm-up
//! must end within the bound of the warm baseline. A cleanup that leaked the read-ahead buffers
//! would keep ~32 MiB more per round, so it fails by the second measured round at the latest.
//!
//! Alone in its own test binary: each round drives 544 stalled callers against a real popgate for
//! tens of seconds, which would starve the hardening binary's timing tests (1 s answers behind
//! 1,100 silent sockets) if they ran beside it.

#[path = "kit/mod.rs"]
mod kit;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use kit::process::{Env, Popgate, get, route};

/// Callers that stall mid body: together they have popgate read 512 × 64 KiB = 32 MiB ahead,
/// half the process's read-ahead budget (`MAX_READ_AHEAD_BUDGET`, 64 MiB), so every one is read
/// ahead and none streams past for want of budget.
const STALLED_BODIES: usize = 512;
/// The body each declares; it sends all but the last byte.
const DECLARED: usize = 64 * 1024;
/// Callers that stop reading a 1 GiB response.
const STALLED_READERS: usize = 32;
/// Both body deadlines, configured short so the test is quick.
const DEADLINE: Duration = Duration::from_secs(2);
/// How long every attacker may take to be cut off: the deadline, popgate's 1 s read-ahead wait,
/// and a generous margin for a loaded 2-core runner.
const CUT_OFF_WITHIN: Duration = Duration::from_secs(40);
/// How long RSS may take to settle once the attackers are gone (tasks end, buffers drop).
const SETTLE_WITHIN: Duration = Duration::from_secs(20);
/// Attack rounds measured against the warm baseline.
const MEASURED_ROUNDS: usize = 3;
/// How far above the warm baseline RSS may stay once a round is over. Measured (debug build,
/// loaded 2-core machine, see docs/reliability.md): rounds after the warm-up ended +19, +24,
/// +23, +24 MiB above it in one run and +23, +35 MiB in another: the arenas settle at a plateau
/// (the process's open files stayed at 16, so no connection is kept). A leak of the read-ahead
/// buffers adds 32 MiB per round: +64 MiB after two rounds, +96 MiB after three. 48 MiB sits
/// between: above the worst plateau seen with a third to spare, below two rounds of leaking.
const RSS_BOUND_KIB: u64 = 48 * 1024;

/// The process's resident set (`VmRSS`), in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// `popgate run` with an admin listener and short body deadlines.
async fn start(env: &Env) -> (Popgate, SocketAddr, SocketAddr) {
    let ms = DEADLINE.as_millis();
    let top = format!(
        "admin:\n  address: 127.0.0.2:0\nlimits:\n  request_body_timeout: {ms}ms\n  response_body_timeout: {ms}ms\n"
    );
    let config = env.write_config_with(&top, &route("graph", None, "app", ""));
    let mut popgate = Popgate::start(&config);
    tokio::task::spawn_blocking(move || {
        let proxy = popgate.wait_serving();
        let serving = popgate.log.last().cloned().unwrap_or_default();
        let admin = kit::process::fields(&serving).unwrap()["admin"]
            .as_str()
            .expect("serving names the admin address")
            .parse()
            .unwrap();
        (popgate, proxy, admin)
    })
    .await
    .unwrap()
}

/// `popgate_body_stalls_total{protocol="http1",direction=...}` from `/metrics`.
async fn stalls(admin: SocketAddr, direction: &str) -> f64 {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let series =
        format!("popgate_body_stalls_total{{direction=\"{direction}\",protocol=\"http1\"}}");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
}

/// A caller that sends all of a declared 64 KiB body but the last byte, then nothing.
async fn stalled_body(proxy: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST /v1.0/me HTTP/1.1\r\nHost: graph.microsoft.com\r\nContent-Length: {DECLARED}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'x'; DECLARED - 1]).await.unwrap();
    s
}

/// A caller that asks for 1 GiB and never reads.
async fn stalled_reader(proxy: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(b"GET /v1.0/me?size=1073741824 HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n")
        .await
        .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_to_its_baseline_after_stalled_read_aheads_and_readers() {
    let env = Env::start().await;
    let (popgate, proxy, admin) = start(&env).await;
    let pid = popgate.pid();

    // Warm up what stays for the process's life: the token, the upstream connection and pool,
    // the runtime's threads and buffers.
    for _ in 0..20 {
        assert_eq!(get(proxy, "/v1.0/me").await.0, 200);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cold = rss_kib(pid);
    let warm_up = attack(proxy, admin, pid, None).await;
    let baseline = warm_up.after;
    eprintln!(
        "RSS: cold {cold} KiB; warm-up round: peak {} KiB, after {} KiB (the warm baseline)",
        warm_up.peak, warm_up.after
    );
    for round in 1..=MEASURED_ROUNDS {
        let measured = attack(proxy, admin, pid, Some(baseline + RSS_BOUND_KIB)).await;
        eprintln!(
            "RSS round {round}: peak {} KiB (+{} over the warm baseline), after {} KiB (+{}), all cut off {:?} after the attack began, settled {:?} after",
            measured.peak,
            measured.peak.saturating_sub(baseline),
            measured.after,
            measured.after.saturating_sub(baseline),
            measured.cut_off,
            measured.settled,
        );
        assert!(
            measured.after <= baseline + RSS_BOUND_KIB,
            "round {round}: RSS stayed {} KiB above its warm baseline of {baseline} KiB (bound {RSS_BOUND_KIB} KiB; cold {cold} KiB)",
            measured.after - baseline
        );
    }
    // And popgate still serves.
    assert_eq!(get(proxy, "/v1.0/me").await.0, 200);
}

/// What one attack round did to popgate's RSS (KiB).
struct Round {
    peak: u64,
    after: u64,
    cut_off: Duration,
    settled: Duration,
}

/// Runs the attack once: opens every attacker, waits until popgate has counted each one cut off,
/// closes them, then samples RSS until it is at most `settle_to` (or, without one, for 2 s; or
/// until [`SETTLE_WITHIN`]).
async fn attack(proxy: SocketAddr, admin: SocketAddr, pid: u32, settle_to: Option<u64>) -> Round {
    let bodies_before = stalls(admin, "request").await;
    let readers_before = stalls(admin, "response").await;
    let started = Instant::now();
    let mut held = Vec::with_capacity(STALLED_BODIES + STALLED_READERS);
    for _ in 0..STALLED_READERS {
        held.push(stalled_reader(proxy).await);
    }
    for _ in 0..STALLED_BODIES {
        held.push(stalled_body(proxy).await);
    }
    let mut peak = rss_kib(pid);
    loop {
        peak = peak.max(rss_kib(pid));
        let bodies = stalls(admin, "request").await - bodies_before;
        let readers = stalls(admin, "response").await - readers_before;
        if bodies >= STALLED_BODIES as f64 && readers >= STALLED_READERS as f64 {
            break;
        }
        assert!(
            started.elapsed() < CUT_OFF_WITHIN,
            "not all cut off within {CUT_OFF_WITHIN:?}: {bodies} stalled bodies, {readers} stalled readers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut_off = started.elapsed();
    drop(held);
    let settling = Instant::now();
    let mut after = rss_kib(pid);
    loop {
        let done = match settle_to {
            Some(bound) => after <= bound,
            None => settling.elapsed() >= Duration::from_secs(2),
        };
        if done || settling.elapsed() >= SETTLE_WITHIN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = rss_kib(pid);
    }
    Round {
        peak,
        after,
        cut_off,
        settled: settling.elapsed(),
    }
}
