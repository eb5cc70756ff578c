//! Route drivers over the `static` identity, through `App::start` (the code `popgate run` runs),
//! against the local authority's token-verifying resource: expired tokens are never forwarded,
//! refresh-ahead swaps tokens with no failed request, a failed refresh keeps the usable token and
//! retries, lazy routes read nothing before their first request.

use std::time::Duration;

use crate::kit::signed_tokens::*;
use popgate::app::App;
use popgate::route::slot::RouteSlot;
use popgate::route::status::RouteStatus;

/// Bound on waiting for a driver to reach a state (each wait is on a signal, not a sleep).
const STATE_BOUND: Duration = Duration::from_secs(90);
/// Bound on the number of requests a load loop sends.
const MAX_REQUESTS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_gets_503_naming_route_identity_and_cause_and_is_never_forwarded() {
    let env = Env::start().await;
    // Expired an hour ago (signed validly, so only the expiry is wrong).
    let expired = sign_expiring(
        env.authority.signing_keys(),
        &env.binding,
        std::time::SystemTime::now() - Duration::from_secs(3600),
        "expired",
    );
    env.write_token(&expired);
    let config = env.load(&env.config(""));
    let app = App::start(config).await.unwrap();
    app.initial_round(STATE_BOUND).await;
    let slot = app.route("graph").unwrap();
    assert!(
        matches!(&*slot.status(), RouteStatus::Failed { .. }),
        "{:?}",
        slot.status()
    );

    let answer = get(app.local_addrs()[0], "/v1.0/me").await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.headers["content-type"], "application/json");
    let body = answer.json();
    assert_eq!(body["error"], "no_token");
    assert_eq!(body["route"], "graph");
    assert_eq!(body["identity"], "byo");
    let cause = body["cause"].as_str().unwrap();
    assert!(cause.contains("expired at"), "{cause}");
    assert!(cause.contains("token.jwt"), "{cause}");
    assert!(
        !answer.body.contains(&expired),
        "token leaked: {}",
        answer.body
    );
    assert!(body["retry_after"].as_u64().is_some(), "{body}");
    assert!(answer.headers.contains_key("retry-after"));
    assert_eq!(env.resource_counts().0, 0, "an expired token was forwarded");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_switches_to_the_new_token_with_no_failed_request() {
    let env = Env::start().await;
    // 30 s lifetime: usable for 22.5 s, refreshed 11.25 s after it was read.
    env.write_token(&env.token(&env.binding, Duration::from_secs(30), "first"));
    let config = env.load(&env.config(""));
    let app = App::start(config).await.unwrap();
    app.initial_round(STATE_BOUND).await;
    let addr = app.local_addrs()[0];
    let first = check_echo(&get(addr, "/v1.0/me").await);
    assert_eq!(first, "first");

    // The replacement is in place long before the first token stops being usable.
    env.write_token(&env.token(&env.binding, Duration::from_secs(3600), "second"));
    let slot = app.route("graph").unwrap();
    let generation = |s: &RouteSlot| s.snapshot.load().as_ref().map(|snap| snap.generation);
    let mut seen_second = false;
    let mut sent = 0;
    let deadline = tokio::time::Instant::now() + STATE_BOUND;
    // Requests run back to back across the switch; each must succeed.
    while sent < MAX_REQUESTS && tokio::time::Instant::now() < deadline {
        let appid = check_echo(&get(addr, "/v1.0/me").await);
        sent += 1;
        if appid == "second" {
            seen_second = true;
            break;
        }
        // Between requests, wait for the next publish rather than spinning the resource.
        let before = generation(slot);
        slot.wait_until(Duration::from_millis(500), |s| generation(s) != before)
            .await;
    }
    assert!(
        seen_second,
        "the refreshed token never reached the resource ({sent} requests)"
    );
    // A few more after the switch, still all successes with the new token.
    for _ in 0..5 {
        assert_eq!(check_echo(&get(addr, "/v1.0/me").await), "second");
    }
    let (total, refused) = env.resource_counts();
    assert_eq!(refused, 0);
    assert_eq!(total, sent + 6);
    // The status is set just after the snapshot is published: wait for it, bounded.
    let ready = slot
        .wait_until(STATE_BOUND, |s| {
            matches!(&*s.status(), RouteStatus::Ready { generation: 2, .. })
        })
        .await;
    assert!(ready, "{:?}", slot.status());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_serving_the_usable_token_and_retries_until_it_succeeds() {
    let env = Env::start().await;
    // 40 s lifetime: refreshed 15 s after it was read, usable for 30 s.
    env.write_token(&env.token(&env.binding, Duration::from_secs(40), "first"));
    let config = env.load(&env.config(""));
    let app = App::start(config).await.unwrap();
    app.initial_round(STATE_BOUND).await;
    let addr = app.local_addrs()[0];
    assert_eq!(check_echo(&get(addr, "/").await), "first");

    // The refresh cannot read the file: it fails, and the route keeps its token.
    std::fs::remove_file(&env.token_file).unwrap();
    let slot = app.route("graph").unwrap();
    let failing = slot
        .wait_until(
            STATE_BOUND,
            |s| matches!(&*s.status(), RouteStatus::Stale { failures, .. } if *failures >= 2),
        )
        .await;
    assert!(failing, "no repeated refresh failures: {:?}", slot.status());
    let status = slot.status();
    let error = status.error().unwrap();
    assert!(error.message.contains("cannot read token file"), "{error}");
    assert_eq!(error.identity, "byo");
    // Still served while stale.
    assert_eq!(check_echo(&get(addr, "/").await), "first");

    env.write_token(&env.token(&env.binding, Duration::from_secs(3600), "second"));
    let recovered = slot
        .wait_until(STATE_BOUND, |s| {
            matches!(&*s.status(), RouteStatus::Ready { generation: 2, .. })
        })
        .await;
    assert!(recovered, "the retry never succeeded: {:?}", slot.status());
    assert_eq!(check_echo(&get(addr, "/").await), "second");
    assert_eq!(env.resource_counts(), (3, 0));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_route_reads_nothing_until_its_first_request_which_waits_and_succeeds() {
    let env = Env::start().await;
    env.write_token(&env.token(&env.binding, Duration::from_secs(3600), "early"));
    let config = env.load(&env.config("    acquire: lazy\n"));
    // The file is gone at start: an eager read would fail and mark the route failed.
    std::fs::remove_file(&env.token_file).unwrap();
    let app = App::start(config).await.unwrap();
    app.initial_round(STATE_BOUND).await;
    let slot = app.route("graph").unwrap();
    assert!(
        matches!(&*slot.status(), RouteStatus::Pending { lazy: true, .. }),
        "{:?}",
        slot.status()
    );
    assert!(slot.snapshot.load().is_none());

    env.write_token(&env.token(&env.binding, Duration::from_secs(3600), "on-demand"));
    let addr = app.local_addrs()[0];
    // Concurrent first requests all wait for the one acquisition.
    let mut requests = Vec::new();
    for _ in 0..4 {
        requests.push(tokio::spawn(async move { get(addr, "/v1.0/me").await }));
    }
    for request in requests {
        assert_eq!(check_echo(&request.await.unwrap()), "on-demand");
    }
    assert!(matches!(
        &*slot.status(),
        RouteStatus::Ready { generation: 1, .. }
    ));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_route_whose_first_acquisition_fails_answers_503_with_the_cause() {
    let env = Env::start().await;
    env.write_token(&env.token(&env.binding, Duration::from_secs(3600), "unused"));
    let config = env.load(&env.config("    acquire: lazy\n"));
    std::fs::remove_file(&env.token_file).unwrap();
    let app = App::start(config).await.unwrap();
    let slot = app.route("graph").unwrap();
    assert!(slot.status().is_pending());

    // The first request starts the acquisition, waits for its outcome, and reports it.
    let answer = get(app.local_addrs()[0], "/v1.0/me").await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["route"], "graph");
    assert_eq!(body["identity"], "byo");
    let cause = body["cause"].as_str().unwrap();
    assert!(cause.contains("cannot read token file"), "{cause}");
    assert!(matches!(&*slot.status(), RouteStatus::Failed { .. }));
    assert_eq!(env.resource_counts().0, 0);
    app.shutdown().await;
}
