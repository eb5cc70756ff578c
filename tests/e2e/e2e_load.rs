//! Load and failure behaviour through the real proxy against the local authority: single flight
//! for 200 concurrent cold requests, refresh ahead and certificate rotation under concurrent load
//! with zero failed requests, Retry-After honoured with a 503 that names the cause, one retry after
//! a 5xx, and IMDS 410 retried. Every traffic loop is bounded in count and in time; nothing asserts
//! on timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::kit::app::*;
use popgate::route::status::RouteStatus;

/// Concurrent cold requests in the single-flight test.
const COLD_REQUESTS: usize = 200;
/// Concurrent callers in the refresh and rotation tests (each on its own connection).
const CLIENTS: usize = 8;
/// Requests one caller may send in a load test, whatever happens (bounds the loop by count).
const MAX_REQUESTS_PER_CLIENT: usize = 4000;
/// Wall-clock cap on a load loop (bounds it in time; the loop normally ends far sooner).
const LOAD_TIME_CAP: Duration = Duration::from_secs(120);
/// Gap between one caller's requests: enough traffic to cover every refresh, little enough that a
/// 2-core machine shared with other builds keeps up.
const PACE: Duration = Duration::from_millis(10);
/// Requests each caller still sends after the event it waits for (a refresh, the new certificate),
/// so traffic continues across the switch rather than stopping at it.
const REQUESTS_AFTER: usize = 20;
/// Answers on certificate A before the rotation test swaps the files to B.
const SWAP_AFTER_ANSWERS: usize = 3 * CLIENTS;
/// Bound on waiting for a route to change state.
const STATE_BOUND: Duration = Duration::from_secs(60);

/// What a load loop saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::SeqCst);
        let mut failures = self.failures.lock().unwrap();
        if failures.len() < 10 {
            failures.push(what);
        }
    }
}

/// Whether the event a load loop waits for has happened.
type Done = Arc<dyn Fn() -> bool + Send + Sync>;
/// Checks one 200 echo; an error counts the request as failed.
type Inspect = Arc<dyn Fn(&serde_json::Value) -> Result<(), String> + Send + Sync>;

/// Runs `CLIENTS` callers against `path` until `done()` has held for `REQUESTS_AFTER` more
/// requests of each caller (or a bound is reached). Each 200 echo goes to `inspect`, which returns
/// an error for a bad echo.
async fn load(proxy: std::net::SocketAddr, path: &str, done: Done, inspect: Inspect) -> Arc<Tally> {
    let tally = Arc::new(Tally::default());
    let deadline = tokio::time::Instant::now() + LOAD_TIME_CAP;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (tally, done, inspect, path) = (
            Arc::clone(&tally),
            Arc::clone(&done),
            Arc::clone(&inspect),
            path.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut caller = Caller::new(proxy);
            let mut after = 0;
            let mut pace = tokio::time::interval(PACE);
            for _ in 0..MAX_REQUESTS_PER_CLIENT {
                if tokio::time::Instant::now() > deadline || after >= REQUESTS_AFTER {
                    break;
                }
                pace.tick().await;
                match caller.get(&path).await {
                    Ok(a) if a.status == 200 => match inspect(&a.json()) {
                        Ok(()) => {
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => tally.fail(e),
                    },
                    Ok(a) => tally.fail(format!("HTTP {}: {}", a.status, a.body)),
                    Err(e) => tally.fail(e),
                }
                if done() {
                    after += 1;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("caller task");
    }
    tally
}

fn assert_no_failures(tally: &Tally) {
    assert_eq!(
        tally.failed.load(Ordering::SeqCst),
        0,
        "failed requests (first few): {:?}",
        tally.failures.lock().unwrap()
    );
    assert!(tally.ok.load(Ordering::SeqCst) > 0);
}

/// The echo of a PoP route: the token is bound to the certificate presented.
fn bound(echo: &serde_json::Value) -> Result<(), String> {
    if echo["scheme"] == "mtls_pop" && echo["cnf_x5t"] == echo["presented_x5t"] {
        Ok(())
    } else {
        Err(format!(
            "token not bound to the presented certificate: {echo}"
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_cold_requests_cost_one_acquisition_per_key() {
    let env = Env::start().await;
    let mi = Route::vanilla("mi", ARM, "uami", "mtls_pop").lazy();
    let app_route = Route::vanilla("app", GRAPH, "app", "mtls_pop").lazy();
    let app = env
        .popgate(env.config(&[mi.clone(), app_route.clone()]))
        .await;
    let proxy = app.local_addrs()[0];
    // Slow token answers keep the acquisition in flight while the requests pile up behind it.
    env.authority
        .faults()
        .set_latency(Endpoint::Token, Duration::from_millis(200));

    for (route, token_calls) in [(&mi, 1), (&app_route, 2)] {
        let mut tasks = Vec::with_capacity(COLD_REQUESTS);
        for i in 0..COLD_REQUESTS {
            let path = format!("{}cold/{i}", route.path());
            tasks.push(tokio::spawn(
                async move { Caller::new(proxy).get(&path).await },
            ));
        }
        for task in tasks {
            let answer = task.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
            check_pop(&answer, &route.name);
        }
        assert_eq!(env.count(Endpoint::Token), token_calls, "{}", route.name);
    }
    // The MI PoP route minted one IMDSv2 certificate.
    assert_eq!(env.count(Endpoint::ImdsPlatformMetadata), 1);
    assert_eq!(env.count(Endpoint::ImdsIssueCredential), 1);
    assert_eq!(env.resource_counts(), (2 * COLD_REQUESTS, 0));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_under_load_fails_no_request() {
    let env = Env::start().await;
    // Short tokens: usable for 15 s (the margin is a quarter of the lifetime), refreshed after
    // about 3 s, so two refreshes happen within seconds of load.
    env.authority
        .settings()
        .set_lifetime(Duration::from_secs(20));
    env.authority
        .settings()
        .set_refresh_in(Some(Duration::from_secs(3)));
    let route = Route::vanilla("app", GRAPH, "app", "mtls_pop");
    let app = env.popgate(env.config(std::slice::from_ref(&route))).await;
    app.initial_round(STATE_BOUND).await;
    assert!(app.route("app").unwrap().status().is_serving());
    assert_eq!(env.count(Endpoint::Token), 1);

    let observations = Arc::clone(env.authority.observations());
    // Done after the initial token and two refreshes.
    let done = Arc::new(move || observations.count(Endpoint::Token) >= 3);
    let tally = load(
        app.local_addrs()[0],
        &format!("{}load", route.path()),
        done,
        Arc::new(bound),
    )
    .await;
    assert_no_failures(&tally);
    let tokens = env.count(Endpoint::Token);
    assert!(
        tokens >= 3,
        "only {tokens} token generations during the load"
    );
    let log = env.authority.observations().log();
    assert!(
        log.iter()
            .filter(|r| r.endpoint == Endpoint::Token)
            .all(|r| r.status == 200),
        "{log:?}"
    );
    let (resource, refused) = env.resource_counts();
    assert_eq!(refused, 0);
    assert_eq!(resource, tally.ok.load(Ordering::SeqCst));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_load_fails_no_request_and_never_mixes_cert_and_token() {
    let env = Env::start().await;
    let secret = env.path("secret");
    std::fs::create_dir(&secret).unwrap();
    let a = &env.app_credential;
    publish_k8s_secret(&secret, "gen1", &a.cert_pem, &a.key_pem);
    let route = Route::vanilla("app", GRAPH, "app", "mtls_pop");
    let config = env.config_with_app_files(
        "secret/app.pem",
        "secret/app.key",
        std::slice::from_ref(&route),
    );
    let app = env.popgate(config).await;
    app.initial_round(STATE_BOUND).await;
    let proxy = app.local_addrs()[0];
    let path = format!("{}rotate", route.path());
    assert_eq!(check_pop(&get(proxy, &path).await, "app"), a.x5t_s256);

    // Certificate B: registered for the app first (as an operator would), then mounted.
    let b = env
        .authority
        .pki()
        .issue_app_credential("popgate-app-renewed")
        .unwrap();
    env.authority
        .directory()
        .add_certificate(&env.app.client_id, &b.cert_der)
        .unwrap();
    let new_x5t = b.x5t_s256.clone();
    let saw_new = Arc::new(AtomicBool::new(false));
    let swapped = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let inspect = {
        let (saw_new, swapped, answered) = (
            Arc::clone(&saw_new),
            Arc::clone(&swapped),
            Arc::clone(&answered),
        );
        let (new_x5t, old_x5t) = (new_x5t.clone(), a.x5t_s256.clone());
        let (secret, cert, key) = (secret.clone(), b.cert_pem.clone(), b.key_pem.clone());
        Arc::new(move |echo: &serde_json::Value| {
            bound(echo)?;
            // Rotate while the load runs: once every caller has had a few answers on A, the
            // caller that sees the threshold swaps the mounted secret to B.
            if answered.fetch_add(1, Ordering::SeqCst) + 1 == SWAP_AFTER_ANSWERS
                && !swapped.swap(true, Ordering::SeqCst)
            {
                publish_k8s_secret(&secret, "gen2", &cert, &key);
            }
            let presented = echo["presented_x5t"].as_str().unwrap_or_default();
            if presented == new_x5t {
                saw_new.store(true, Ordering::SeqCst);
                Ok(())
            } else if presented == old_x5t {
                Ok(())
            } else {
                Err(format!("unexpected certificate presented: {echo}"))
            }
        })
    };
    let done = {
        let saw_new = Arc::clone(&saw_new);
        Arc::new(move || saw_new.load(Ordering::SeqCst))
    };
    let tally = load(proxy, &path, done, inspect).await;
    assert!(
        swapped.load(Ordering::SeqCst),
        "the load ended before the swap"
    );
    assert_no_failures(&tally);
    assert!(
        saw_new.load(Ordering::SeqCst),
        "the resource never saw the new certificate"
    );
    // Zero refusals at the resource: no request presented A with a token bound to B (or back).
    let (_, refused) = env.resource_counts();
    assert_eq!(refused, 0);
    // Two tokens: A's, then B's acquired over B's client (same-certificate refreshes would add
    // more only after minutes).
    assert_eq!(env.count(Endpoint::Token), 2);
    let token_certs: Vec<_> = env
        .authority
        .observations()
        .log()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Token)
        .map(|r| r.client_cert_x5t)
        .collect();
    assert_eq!(
        token_certs,
        vec![Some(a.x5t_s256.clone()), Some(new_x5t.clone())]
    );
    app.shutdown().await;
}

/// A 429 body as ESTS sends it (the shared vector `ests-throttled-429.json`).
const THROTTLED: &str = include_str!("../vectors/ests-throttled-429.json");
/// The Retry-After the authority sends with it, in seconds.
const RETRY_AFTER_SECS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_gives_a_503_naming_the_cause_and_holds_token_calls_back() {
    let env = Env::start().await;
    let route = Route::vanilla("app", GRAPH, "app", "mtls_pop").lazy();
    let app = env.popgate(env.config(std::slice::from_ref(&route))).await;
    let proxy = app.local_addrs()[0];
    env.authority.faults().push(
        Endpoint::Token,
        Fault::Status {
            code: 429,
            retry_after: Some(RETRY_AFTER_SECS),
            body: Some(THROTTLED.into()),
        },
        1,
    );
    let path = format!("{}throttled", route.path());

    let answer = get(proxy, &path).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"], "no_token", "{body}");
    assert_eq!(body["route"], "app", "{body}");
    assert_eq!(body["identity"], "app", "{body}");
    assert_eq!(body["aadsts"], 90010, "{body}");
    assert_eq!(
        body["correlation_id"], "f11508ab-067f-40d4-83cb-ccc67bf57e45",
        "{body}"
    );
    assert!(body["retry_after"].as_u64().is_some(), "{body}");
    assert_eq!(env.count(Endpoint::Token), 1);

    // Inside the Retry-After window: still 503, and no new token call.
    let slot = app.route("app").unwrap();
    let status = slot.status();
    let RouteStatus::Failed {
        error,
        since,
        next_attempt,
        ..
    } = &*status
    else {
        panic!("route not failed: {status:?}")
    };
    // The block runs from when the 429 arrived (just before the failure was stamped `since`); the
    // driver's next attempt is no earlier than the end of the block.
    let blocked_until = error
        .blocked_until
        .expect("the 429's Retry-After is recorded");
    assert!(
        blocked_until.duration_since(*since).unwrap_or_default()
            > Duration::from_secs(RETRY_AFTER_SECS - 1),
        "the block is shorter than Retry-After: {status:?}"
    );
    assert!(
        *next_attempt >= blocked_until,
        "the next attempt ignores Retry-After: {status:?}"
    );
    let again = get(proxy, &path).await;
    assert_eq!(again.status, 503, "{}", again.body);
    assert_eq!(
        env.count(Endpoint::Token),
        1,
        "a token call inside Retry-After"
    );
    assert_eq!(env.resource_counts(), (0, 0), "forwarded without a token");

    // After it: the driver's next attempt succeeds and the route serves.
    let ready = slot
        .wait_until(STATE_BOUND, |s| s.status().is_serving())
        .await;
    assert!(ready, "{:?}", slot.status());
    check_pop(&get(proxy, &path).await, "app");
    assert_eq!(env.count(Endpoint::Token), 2);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_5xx_is_retried_exactly_once() {
    let env = Env::start().await;
    let route = Route::vanilla("app", GRAPH, "app", "mtls_pop").lazy();
    let app = env.popgate(env.config(std::slice::from_ref(&route))).await;
    env.authority.faults().push(
        Endpoint::Token,
        Fault::Status {
            code: 503,
            retry_after: None,
            body: None,
        },
        1,
    );
    let answer = get(app.local_addrs()[0], &format!("{}x", route.path())).await;
    check_pop(&answer, "app");
    let statuses: Vec<u16> = env
        .authority
        .observations()
        .log()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Token)
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![503, 200]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_410_is_retried_for_v1_and_v2() {
    let env = Env::start().await;
    let bearer = Route::vanilla("mi-bearer", ARM, "uami", "bearer").lazy();
    let pop = Route::vanilla("mi-pop", ARM, "sami", "mtls_pop").lazy();
    let app = env
        .popgate(env.config(&[bearer.clone(), pop.clone()]))
        .await;
    let proxy = app.local_addrs()[0];
    let gone = Fault::Status {
        code: 410,
        retry_after: None,
        body: None,
    };
    let faults = env.authority.faults();
    faults.push(Endpoint::ImdsV1Token, gone.clone(), 3);
    faults.push(Endpoint::ImdsPlatformMetadata, gone, 3);

    check_bearer(
        &get(proxy, &format!("{}x", bearer.path())).await,
        "mi-bearer",
    );
    assert_eq!(env.count(Endpoint::ImdsV1Token), 4);
    check_pop(&get(proxy, &format!("{}x", pop.path())).await, "mi-pop");
    assert_eq!(env.count(Endpoint::ImdsPlatformMetadata), 4);
    assert_eq!(env.count(Endpoint::ImdsIssueCredential), 1);
    assert_eq!(env.count(Endpoint::Token), 1);
    app.shutdown().await;
}
