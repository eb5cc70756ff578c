//! The upstream pool under a burst, through the real proxy (config loader, route driver, data
//! plane, connector) against the local authority's resource offering only HTTP/1.1 over mTLS, as
//! IMDS-like services and older front ends do: each connection carries one request at a time.
//!
//! - 300 concurrent callers on an upstream answering in 1.5 s all get 200 with the defaults, on
//!   two workers each owning half of them (before `upstream_pool`, 64 connections and a 5 s wait
//!   failed a third of them with 504).
//! - A small configured pool with a short waiting line refuses the excess at once with 503 +
//!   `Retry-After`, serves the waiters, and a wait that expires is a 503, not a 504.
//! - The route's pool metrics show the connections, the waiters and the refusals.
//!
//! Reproduce: `cargo test --test e2e upstream_pool:: -- --nocapture`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use popgate_authority::{Authority, AuthorityConfig};

use crate::kit::admin::{request, scrape, sum};
use crate::kit::http::Answer;
use crate::kit::scenario::*;

/// Concurrent callers of the burst test (the figure).
const BURST: usize = 300;
/// How long the upstream takes to answer each of them.
const SLOW_MS: u64 = 1_500;
/// Bound on polling the metrics for a state the test set up.
const SETTLE: Duration = Duration::from_secs(20);

/// The local authority with a resource server that speaks only HTTP/1.1.
pub(crate) async fn http1_only_authority() -> Authority {
    Authority::start(AuthorityConfig {
        resource_http1_only: true,
        ..AuthorityConfig::default()
    })
    .await
    .expect("authority starts")
}

/// One GET through popgate on a fresh connection (`Connection: close`), bounded in time.
async fn get(proxy: SocketAddr, path: &str) -> Answer {
    request(proxy, "GET", GRAPH, &format!("http://{GRAPH}{path}")).await
}

fn admin(s: &Scenario) -> SocketAddr {
    s.app
        .admin_addr()
        .expect("the scenario has an admin listener")
}

/// The route's value of pool family `name` (summed over `reason` for the refusals).
async fn pool_metric(s: &Scenario, name: &str, want: &[(&str, &str)]) -> f64 {
    let mut labels = vec![("route", s.route.as_str())];
    labels.extend_from_slice(want);
    sum(&scrape(admin(s)).await, name, &labels)
}

/// Polls until `metric` reaches `value` (bounded by [`SETTLE`]).
async fn wait_metric(s: &Scenario, name: &str, value: f64) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let now = pool_metric(s, name, &[]).await;
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_callers_on_a_slow_http1_upstream_all_get_200() {
    // On two workers, as `popgate run` on two CPUs: each worker's lane owns half the defaults.
    let s = Scenario::start_named(
        http1_only_authority().await,
        RouteKind::CertAppPop,
        "admin: { address: 127.0.0.2:0 }\nworkers: 2",
        "pool-burst",
    )
    .await;
    s.wait_serving().await;
    let started = Instant::now();
    let burst = load(s.proxy(), &format!("/burst?delay_ms={SLOW_MS}"), BURST, 1).await;
    let took = started.elapsed();
    println!(
        "{BURST} callers, upstream {SLOW_MS} ms, HTTP/1.1 only: {} ok, failed {} in {took:?}",
        burst.ok,
        burst.failed_by_status()
    );
    burst.assert_only("burst on a slow HTTP/1.1 upstream", &[ECHO]);
    assert_eq!(burst.ok, BURST);
    // Served over HTTP/1.1 within the default cap of connections, not one per caller.
    let open = pool_metric(&s, "popgate_upstream_pool_connections", &[]).await;
    assert!(
        (1.0..=128.0).contains(&open),
        "{open} upstream connections open"
    );
    assert_eq!(
        pool_metric(&s, "popgate_upstream_pool_refusals_total", &[]).await,
        0.0
    );
    s.assert_resource_never_refused_token();
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_waiting_line_is_refused_at_once_with_retry_after() {
    const CONNECTIONS: usize = 2;
    const WAITING: usize = 2;
    const EXCESS: usize = 6;
    let s = Scenario::start_named(
        http1_only_authority().await,
        RouteKind::CertAppPop,
        &format!(
            "admin: {{ address: 127.0.0.2:0 }}\nupstream_pool: {{ max_connections_per_host: \
             {CONNECTIONS}, max_waiting: {WAITING}, wait_timeout: 30s }}"
        ),
        "pool-small",
    )
    .await;
    s.wait_serving().await;
    let proxy = s.proxy();
    // Fill the connections, then the line.
    let served: Vec<_> = (0..CONNECTIONS + WAITING)
        .map(|_| {
            tokio::spawn(async move { get(proxy, &format!("/held?delay_ms={SLOW_MS}")).await })
        })
        .collect();
    wait_metric(&s, "popgate_upstream_pool_waiters", WAITING as f64).await;
    wait_metric(&s, "popgate_upstream_pool_connections", CONNECTIONS as f64).await;

    // The excess is told at once: far sooner than the 30 s it would otherwise wait.
    let started = Instant::now();
    let excess: Vec<_> = (0..EXCESS)
        .map(|_| tokio::spawn(async move { get(proxy, "/excess").await }))
        .collect();
    for refused in excess {
        let answer = refused.await.expect("excess caller");
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert_eq!(answer.header("retry-after"), Some("1"));
        let body = answer.json();
        assert_eq!(body["error"], "upstream_busy", "{body}");
        assert_eq!(body["route"], "pool-small");
        let cause = body["cause"].as_str().unwrap_or_default();
        assert!(cause.contains("callers already wait"), "{cause}");
    }
    let refused_in = started.elapsed();
    println!("{EXCESS} excess callers refused in {refused_in:?}");
    assert!(
        refused_in < Duration::from_millis(SLOW_MS),
        "refused after {refused_in:?}: the excess waited"
    );
    assert_eq!(
        pool_metric(
            &s,
            "popgate_upstream_pool_refusals_total",
            &[("reason", "waiters_full")]
        )
        .await,
        EXCESS as f64
    );
    // Those holding a connection and those in line are all served.
    for caller in served {
        let answer = caller.await.expect("served caller");
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    wait_metric(&s, "popgate_upstream_pool_waiters", 0.0).await;
    s.assert_resource_never_refused_token();
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_wait_is_503_not_504() {
    let s = Scenario::start_named(
        http1_only_authority().await,
        RouteKind::CertAppPop,
        "admin: { address: 127.0.0.2:0 }\nupstream_pool: { max_connections_per_host: 1, \
         wait_timeout: 300ms }",
        "pool-expiry",
    )
    .await;
    s.wait_serving().await;
    let proxy = s.proxy();
    let holder =
        tokio::spawn(async move { get(proxy, &format!("/held?delay_ms={SLOW_MS}")).await });
    wait_metric(&s, "popgate_upstream_pool_connections", 1.0).await;
    let started = Instant::now();
    let answer = get(proxy, "/waits").await;
    let waited = started.elapsed();
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.header("retry-after"), Some("1"));
    let body = answer.json();
    assert_eq!(body["error"], "upstream_busy", "{body}");
    assert!(
        body["cause"]
            .as_str()
            .unwrap_or_default()
            .contains("stayed busy for 300ms"),
        "{body}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(SLOW_MS),
        "answered after {waited:?}"
    );
    assert_eq!(
        pool_metric(
            &s,
            "popgate_upstream_pool_refusals_total",
            &[("reason", "wait_expired")]
        )
        .await,
        1.0
    );
    assert_eq!(holder.await.expect("holder").status, 200);
    s.shutdown().await;
}
