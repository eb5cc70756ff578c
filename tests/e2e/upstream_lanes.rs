//! HTTP/1.1 upstream connections per data-plane worker (`workers: 2`), through the real proxy
//! against the local authority's resource offering only HTTP/1.1 over mTLS. The resource's echo
//! names the TCP peer of the connection each request came on, so the tests see which upstream
//! connection carried which caller's request.
//!
//! - Each worker dials its own connections and its requests reuse them: with one connection per
//!   worker (`max_connections_per_host: 2`), requests one at a time from callers spread over both
//!   workers arrive on exactly two connections (before, every worker's HTTP/1.1 requests shared
//!   lane 0's pool and arrived on one), every caller's requests arrive on the same connection
//!   under concurrent keep-alive load, and that load dials nothing new.
//! - The totals still hold: `max_connections_per_host: 2, max_waiting: 2` over two workers serve
//!   at most 2 requests at once and 2 waiting, and refuse the rest at once with 503 +
//!   `Retry-After`, the cause naming the worker's share.
//!
//! Reproduce: `cargo test --test e2e upstream_lanes:: -- --nocapture`

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;

use crate::kit::admin::{request, scrape, sum};
use crate::kit::http::{Answer, HTTP_TIMEOUT, dial, send_on};
use crate::kit::scenario::*;
use crate::upstream_pool::http1_only_authority;

/// Caller connections held open: with two workers' sockets, all of them landing on one worker
/// has probability 2 × (1/2)^24, i.e. never.
const CALLERS: usize = 24;
/// Requests each caller sends at once with the others, after the first round.
const ROUNDS: usize = 3;
/// How long the upstream holds each request of the totals test.
const SLOW_MS: u64 = 1_500;
/// Callers of the totals test, all at once.
const BURST: usize = 12;

/// popgate on two workers with `pool` as its `upstream_pool`, serving.
async fn two_workers(pool: &str, route: &str) -> Scenario {
    let s = Scenario::start_named(
        http1_only_authority().await,
        RouteKind::CertAppPop,
        &format!("admin: {{ address: 127.0.0.2:0 }}\nworkers: 2\nupstream_pool: {pool}"),
        route,
    )
    .await;
    s.wait_serving().await;
    s
}

/// The route's value of metric `name` with labels `want`.
async fn metric(s: &Scenario, name: &str, want: &[(&str, &str)]) -> f64 {
    let admin = s
        .app
        .admin_addr()
        .expect("the scenario has an admin listener");
    let mut labels = vec![("route", s.route.as_str())];
    labels.extend_from_slice(want);
    sum(&scrape(admin).await, name, &labels)
}

/// One GET on keep-alive connection `caller`; the upstream connection (its peer address as the
/// resource saw it) that carried it.
async fn upstream_peer(caller: &mut SendRequest<Empty<Bytes>>) -> String {
    let get = http::Request::get(format!("http://{GRAPH}/v1.0/me"))
        .header(http::header::HOST, GRAPH)
        .body(Empty::new())
        .expect("request");
    let answer = tokio::time::timeout(HTTP_TIMEOUT, send_on(caller, get))
        .await
        .expect("answered within the bound")
        .expect("answered");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let echo = answer.json();
    assert_eq!(echo["http_version"], "HTTP/1.1", "{echo}");
    echo["peer"]
        .as_str()
        .unwrap_or_else(|| panic!("the echo names no peer: {echo}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_dials_its_own_http1_connections_and_reuses_them() {
    let s = two_workers("{ max_connections_per_host: 2 }", "lanes").await;
    let mut callers = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
        callers.push(dial::<Empty<Bytes>>(s.proxy()).await.expect("dial popgate"));
    }

    // One request at a time: each worker's first request dials its lane's connection, every
    // later one finds it idle.
    let mut first = Vec::with_capacity(CALLERS);
    for caller in &mut callers {
        first.push(upstream_peer(caller).await);
    }
    let seen: BTreeSet<&String> = first.iter().collect();
    println!("{CALLERS} callers one at a time arrived on upstream connections {seen:?}");
    assert_eq!(
        seen.len(),
        2,
        "one upstream connection per worker expected (1: the workers share one pool)"
    );
    let dialled = metric(
        &s,
        "popgate_upstream_pool_dials_total",
        &[("outcome", "ok")],
    )
    .await;
    assert_eq!(dialled, 2.0);

    // All at once, several times: each caller's requests stay on its worker's connection (its
    // worker's lane has just that one), and the steady keep-alive load dials nothing new.
    let tasks: Vec<_> = callers
        .into_iter()
        .map(|mut caller| {
            tokio::spawn(async move {
                let mut peers = Vec::with_capacity(ROUNDS);
                for _ in 0..ROUNDS {
                    peers.push(upstream_peer(&mut caller).await);
                }
                peers
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let peers = task.await.expect("caller task");
        assert!(
            peers.iter().all(|p| *p == first[i]),
            "caller {i} went over {peers:?}, first over {}: another worker's connection",
            first[i]
        );
    }
    assert_eq!(
        metric(
            &s,
            "popgate_upstream_pool_dials_total",
            &[("outcome", "ok")]
        )
        .await,
        dialled,
        "steady keep-alive load dialed new upstream connections"
    );
    assert_eq!(
        metric(&s, "popgate_upstream_pool_connections", &[]).await,
        2.0
    );
    assert_eq!(
        metric(&s, "popgate_upstream_pool_refusals_total", &[]).await,
        0.0
    );
    s.assert_resource_never_refused_token();
    s.shutdown().await;
}

/// One GET through popgate on a fresh connection (so a fresh pick of worker), bounded in time.
async fn get(proxy: SocketAddr, path: &str) -> Answer {
    request(proxy, "GET", GRAPH, &format!("http://{GRAPH}{path}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_totals_hold_over_the_workers_and_the_excess_is_refused_at_once() {
    let s = two_workers(
        "{ max_connections_per_host: 2, max_waiting: 2, wait_timeout: 30s }",
        "lanes-totals",
    )
    .await;
    let proxy = s.proxy();
    let started = Instant::now();
    let callers: Vec<_> = (0..BURST)
        .map(|_| {
            tokio::spawn(async move {
                let answer = get(proxy, &format!("/held?delay_ms={SLOW_MS}")).await;
                (answer, started.elapsed())
            })
        })
        .collect();
    let mut served = BTreeSet::new();
    let mut refused = 0;
    for caller in callers {
        let (answer, after) = caller.await.expect("caller task");
        match answer.status {
            200 => {
                served.insert(
                    answer.json()["peer"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            503 => {
                refused += 1;
                // At once, not after waiting for a connection.
                assert!(
                    after < Duration::from_millis(SLOW_MS),
                    "refused after {after:?}"
                );
                assert_eq!(answer.header("retry-after"), Some("1"));
                let body = answer.json();
                assert_eq!(body["error"], "upstream_busy", "{body}");
                let cause = body["cause"].as_str().unwrap_or_default();
                assert!(
                    cause.contains("all 1 upstream connections")
                        && cause.contains("(this worker's share of 2)")
                        && cause.contains("1 callers already wait"),
                    "{cause}"
                );
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    let ok = BURST - refused;
    println!(
        "{BURST} callers on 2 workers, pool 2 + 2 waiting: {ok} served over {served:?}, \
         {refused} refused at once"
    );
    // Each worker serves its one connection's holder and its one waiter at most: 4 in all, so at
    // least 8 are refused, whatever way the kernel spread the callers.
    assert!((1..=4).contains(&ok), "{ok} served");
    assert!(
        served.len() <= 2,
        "{served:?}: more connections than the cap"
    );
    assert_eq!(
        metric(
            &s,
            "popgate_upstream_pool_refusals_total",
            &[("reason", "waiters_full")]
        )
        .await,
        refused as f64
    );
    assert!(metric(&s, "popgate_upstream_pool_connections", &[]).await <= 2.0);
    assert_eq!(metric(&s, "popgate_upstream_pool_waiters", &[]).await, 0.0);
    s.shutdown().await;
}
