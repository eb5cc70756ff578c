//! Token endpoint faults under load (certificate app, mTLS PoP): down while a token is cached and
//! until it expires, down before any token, slow, 429 with Retry-After, 5xx. Each test prints its
//! rows of the table in docs/reliability.md and asserts the invariants (see `faults_support`).
//!
//! Reproduce: `cargo test --test faults_token_endpoint -- --nocapture --test-threads=1`

use std::time::Duration;

use crate::kit::scenario::*;
use popgate_authority::{Authority, Endpoint, Fault};

/// Enough queued faults to outlast every retry a scenario can make (backoff starts at 1 s).
const PERSISTENT: usize = 10_000;

/// A token lifetime whose usable part is short: popgate's margin for short lifetimes is a quarter
/// of the lifetime, so an 8 s token is usable for 6 s (and still valid for 2 s after that).
const SHORT_LIFETIME: Duration = Duration::from_secs(8);

/// The token endpoint answers `code` (with `body`) the next `times` requests.
fn status(
    authority: &Authority,
    code: u16,
    retry_after: Option<u64>,
    body: Option<String>,
    times: usize,
) {
    authority.faults().push(
        Endpoint::Token,
        Fault::Status {
            code,
            retry_after,
            body,
        },
        times,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_while_token_cached_then_expired() {
    let authority = authority().await;
    authority.settings().set_lifetime(SHORT_LIFETIME);
    let s = Scenario::start(authority, RouteKind::CertAppPop, "").await;
    s.wait_serving().await;
    s.authority
        .faults()
        .push(Endpoint::Token, Fault::Drop, PERSISTENT);

    // Cached and still usable: served from the cache. The token may stop being usable during the
    // phase on a slow machine, so a no_token 503 is allowed here, never a forwarded stale token.
    let cached = s.load("/cached").await;
    cached.assert_only("down, cached", &[ECHO, NO_TOKEN]);

    // Once no usable token is left the route fails closed: 503 no_token, nothing forwarded.
    s.wait_failed().await;
    let resource_before = s.count(Endpoint::Resource);
    let expired = s.load("/expired").await;
    expired.assert_only("down, expired", &[NO_TOKEN]);
    assert_eq!(
        s.count(Endpoint::Resource),
        resource_before,
        "nothing reaches the resource without a usable token"
    );

    // Endpoint back: the driver's next attempt succeeds and traffic flows again.
    s.authority
        .settings()
        .set_lifetime(Duration::from_secs(3599));
    s.authority.faults().clear();
    let back = s.back("back").await;

    s.report(
        "token endpoint down (Drop), token cached → expires → endpoint back",
        &Tally::sum(&[&cached, &expired, &back]),
    );
    println!(
        "  phases: cached {} ok / {} sent; expired {} ({}); back {} ok / {}",
        cached.ok,
        cached.sent,
        expired.sent,
        expired.failed_by_status(),
        back.ok,
        back.sent
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_down_before_any_token() {
    let authority = authority().await;
    authority
        .faults()
        .push(Endpoint::Token, Fault::Drop, PERSISTENT);
    let s = Scenario::start(authority, RouteKind::CertAppPop, "").await;
    s.wait_failed().await;
    let down = s.load("/down").await;
    down.assert_only("down, no token", &[NO_TOKEN]);
    assert_eq!(
        s.count(Endpoint::Resource),
        0,
        "nothing forwarded without a token"
    );

    s.authority.faults().clear();
    let back = s.back("back").await;

    s.report(
        "token endpoint down (Drop) before any token → back",
        &Tally::sum(&[&down, &back]),
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_token_endpoint() {
    let authority = authority().await;
    // Slower than a typical acquisition, well inside popgate's 25 s first-token wait.
    authority
        .faults()
        .set_latency(Endpoint::Token, Duration::from_millis(1500));
    let s = Scenario::start(authority, RouteKind::CertAppPop, "").await;
    // Load at once: the first requests wait (single-flight) for the first token.
    let slow = s.load("/slow").await;
    slow.assert_only("slow", &[ECHO]);
    assert_eq!(
        s.count(Endpoint::Token),
        1,
        "one acquisition for all concurrent callers (single-flight)"
    );
    s.report(
        "token endpoint slow (1.5 s latency), load from start",
        &slow,
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_429_with_retry_after() {
    let authority = authority().await;
    let body = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/vectors/ests-throttled-429.json"),
    )
    .expect("shared vector ests-throttled-429.json");
    status(&authority, 429, Some(3), Some(body), 1);
    let s = Scenario::start(authority, RouteKind::CertAppPop, "").await;
    s.wait_failed().await;
    let throttled = s.load("/throttled").await;
    throttled.assert_only("throttled", &[NO_TOKEN]);
    assert_eq!(
        s.count(Endpoint::Token),
        1,
        "a 429 is never retried and Retry-After blocks identical requests"
    );

    let back = s.back("after Retry-After").await;
    s.report(
        "token endpoint 429 + Retry-After: 3 → after",
        &Tally::sum(&[&throttled, &back]),
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_500_once_is_retried() {
    let authority = authority().await;
    status(&authority, 500, None, None, 1);
    let s = Scenario::start(authority, RouteKind::CertAppPop, "").await;
    // The first acquisition retries once after 1 s; callers wait for it.
    let retried = s.load("/retried").await;
    retried.assert_only("500 once", &[ECHO]);
    assert_eq!(s.count(Endpoint::Token), 2, "one 500, one successful retry");
    s.report("token endpoint 500 once (retried after 1 s)", &retried);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_503_persisting() {
    let authority = authority().await;
    // The request and its one retry both fail: the route has no token until the driver's backoff
    // attempt succeeds.
    status(
        &authority,
        503,
        None,
        Some("upstream connect error".into()),
        2,
    );
    let s = Scenario::start(authority, RouteKind::CertAppPop, "").await;
    s.wait_failed().await;
    let failing = s.load("/failing").await;
    failing.assert_only("503 twice", &[NO_TOKEN, ECHO]);
    let back = s.back("back").await;
    s.report(
        "token endpoint 503 ×2 (retry fails too) → backoff → back",
        &Tally::sum(&[&failing, &back]),
    );
    s.shutdown().await;
}
