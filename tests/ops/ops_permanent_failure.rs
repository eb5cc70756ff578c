//! A permanent refusal (`invalid_client`: the app's certificate is not registered) is retried on
//! the long schedule, shown as `permanent_failure` in `/readyz` and `/metrics`, and a config
//! reload retries it at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::kit::admin::*;
use crate::kit::credentials::{Endpoint, GRAPH};
use popgate::app::App;

/// Bound on each wait for `/readyz` to change.
const STATE_BOUND: Duration = Duration::from_secs(30);
/// How often `/readyz` is polled while waiting.
const POLL: Duration = Duration::from_millis(100);
/// How long the test watches for a retry that must not come: the short schedule (1 s, 2 s, …)
/// would have retried twice by then.
const QUIET: Duration = Duration::from_secs(4);
/// The long schedule's first wait is 5 minutes, jittered down to no less than half of it.
const LONG_FIRST_WAIT_AT_LEAST: u64 = 150;

/// Polls `/readyz` until `ok` accepts the route's entry; returns the whole body.
async fn readyz_until(
    admin: SocketAddr,
    route: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + STATE_BOUND;
    loop {
        let body = admin_get(admin, "/readyz").await.json();
        if ok(&body["routes"][route]) {
            return body;
        }
        assert!(Instant::now() < deadline, "/readyz never got there: {body}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_client_is_retried_in_minutes_shown_as_permanent_and_retried_at_a_reload() {
    let env = start_env().await;
    // Entra ID no longer knows the app's certificate: every request is AADSTS700027.
    let directory = env.authority.directory();
    directory
        .remove_certificate(&env.app.client_id, &env.app_credential.x5t_s256)
        .unwrap();
    let routes = routes_yaml(
        &[(
            "perm",
            GRAPH,
            "    flow: vanilla\n    identity: app\n    token_type: mtls_pop",
        )],
        &[],
    );
    let path = write_config(&env, &routes);
    let mut app = App::start(load(&path)).await.expect("popgate starts");
    let admin = app.admin_addr().expect("admin configured");

    let down = readyz_until(admin, "perm", |r| r["state"] == "failed").await;
    let perm = &down["routes"]["perm"];
    assert_eq!(down["ready"], false);
    assert_eq!(perm["reason"], "permanent_failure", "{down}");
    assert_eq!(perm["error"]["aadsts"], 700027, "{down}");
    let next = perm["next_attempt_in_s"].as_u64().expect("next attempt");
    assert!(
        (LONG_FIRST_WAIT_AT_LEAST - 5..=300).contains(&next),
        "next attempt in {next} s: {down}"
    );
    let metrics = scrape(admin).await;
    assert_eq!(
        sum(
            &metrics,
            "popgate_route_failure",
            &[("route", "perm"), ("class", "permanent_failure")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &metrics,
            "popgate_route_failure",
            &[("route", "perm"), ("class", "transient_failure")]
        ),
        0.0
    );

    // No retry within seconds (the short schedule would have retried at 1 s and 3 s).
    let tried = env.count(Endpoint::Token);
    assert_eq!(tried, 1, "one request, not retried at once");
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        env.count(Endpoint::Token),
        tried,
        "retried within {QUIET:?}"
    );

    // The certificate is registered again; a reload of the unchanged config retries now.
    directory
        .add_certificate(&env.app.client_id, env.app_credential.cert_der.as_ref())
        .unwrap();
    let summary = app.reload(load(&path)).await.expect("reload");
    assert_eq!(summary.kept, ["perm"]);
    let back = readyz_until(admin, "perm", |r| r["state"] == "ready").await;
    assert_eq!(back["ready"], true, "{back}");
    assert!(back["routes"]["perm"]["reason"].is_null(), "{back}");
    assert_eq!(env.count(Endpoint::Token), tried + 1);
    let metrics = scrape(admin).await;
    assert_eq!(
        sum(&metrics, "popgate_route_failure", &[("route", "perm")]),
        0.0
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_keeps_the_short_schedule() {
    let env = start_env().await;
    env.authority.faults().push(
        Endpoint::Token,
        crate::kit::credentials::Fault::Status {
            code: 503,
            retry_after: None,
            body: None,
        },
        2,
    );
    let routes = routes_yaml(
        &[(
            "blip",
            GRAPH,
            "    flow: vanilla\n    identity: app\n    token_type: mtls_pop",
        )],
        &[],
    );
    let app = App::start(load(&write_config(&env, &routes)))
        .await
        .expect("popgate starts");
    let admin = app.admin_addr().expect("admin configured");
    // The 503 (and the token endpoint's one retry of it) heal within seconds.
    let back = readyz_until(admin, "blip", |r| r["state"] == "ready").await;
    assert_eq!(back["ready"], true, "{back}");
    app.shutdown().await;
}
