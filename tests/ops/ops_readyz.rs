//! `/readyz` follows the eager routes' tokens: 200 once they are acquired; 503 naming the route's
//! error when the token endpoint refuses past the token's expiry; 200 again once it answers. A
//! lazy route that never acquires does not hold readiness back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::kit::admin::*;
use crate::kit::credentials::{Endpoint, Fault, GRAPH};
use popgate::app::App;

/// Issued tokens live this long: long enough to be acquired and published (popgate keeps a
/// quarter of the lifetime as a safety margin), short enough to expire during the test.
const SHORT_LIFETIME: Duration = Duration::from_secs(8);

/// Bound on each wait for `/readyz` to change: covers the token running out plus popgate's
/// backoff (capped at 60 s) before its next attempt.
const STATE_BOUND: Duration = Duration::from_secs(120);

/// How often `/readyz` is polled while waiting (there is no signal to await across HTTP).
const POLL: Duration = Duration::from_millis(200);

/// Enough refusals to outlast every retry popgate makes during the outage.
const REFUSALS: usize = 100_000;

/// What the token endpoint answers during the outage: ESTS's transient-error shape.
const OUTAGE_BODY: &str = r#"{"error":"temporarily_unavailable","error_description":"AADSTS90033: A transient error has occurred. Please try again.","error_codes":[90033],"correlation_id":"0b5e7c1d-4a2f-4e8b-9c3d-2f6a1b7e9d40"}"#;

/// Polls `/readyz` until its status is `want`; returns that answer's body.
async fn readyz_until(admin: SocketAddr, want: u16) -> serde_json::Value {
    let deadline = Instant::now() + STATE_BOUND;
    loop {
        let answer = admin_get(admin, "/readyz").await;
        assert_eq!(answer.header("content-type"), Some("application/json"));
        if answer.status == want {
            return answer.json();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never answered {want}; last {}: {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_goes_503_when_the_token_expires_during_an_outage_and_200_when_it_ends() {
    let env = crate::kit::admin::start_env().await;
    env.authority.settings().set_lifetime(SHORT_LIFETIME);
    let routes = routes_yaml(
        &[
            (
                "eager",
                GRAPH,
                "    flow: vanilla\n    identity: app\n    token_type: mtls_pop",
            ),
            (
                "later",
                GRAPH,
                "    flow: vanilla\n    identity: uami\n    token_type: bearer",
            ),
        ],
        &["later"],
    );
    let app = App::start(load(&write_config(&env, &routes)))
        .await
        .expect("popgate starts");
    let admin = app.admin_addr().expect("admin configured");

    let ready = readyz_until(admin, 200).await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["routes"]["eager"]["acquire"], "eager");
    assert!(
        ready["routes"]["eager"]["expires_in_s"].as_u64().is_some(),
        "{ready}"
    );
    assert_eq!(ready["routes"]["later"]["acquire"], "lazy");
    assert_eq!(ready["routes"]["later"]["state"], "pending");

    // The token endpoint refuses every request from now on.
    env.authority.faults().push(
        Endpoint::Token,
        Fault::Status {
            code: 503,
            retry_after: None,
            body: Some(OUTAGE_BODY.to_string()),
        },
        REFUSALS,
    );
    let down = readyz_until(admin, 503).await;
    assert_eq!(down["ready"], false);
    let eager = &down["routes"]["eager"];
    assert_eq!(eager["state"], "failed", "{down}");
    assert!(eager["expires_in_s"].is_null(), "{down}");
    assert_eq!(eager["error"]["identity"], "app", "{down}");
    let message = eager["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{down}");
    assert!(eager["failures"].as_u64().unwrap_or(0) >= 1, "{down}");
    assert_eq!(eager["error"]["aadsts"], 90033, "{down}");
    assert_eq!(
        eager["error"]["correlation_id"], "0b5e7c1d-4a2f-4e8b-9c3d-2f6a1b7e9d40",
        "{down}"
    );
    // Still refused: `/metrics` shows the route failed and acquisitions failing.
    let metrics = scrape(admin).await;
    assert_eq!(
        sum(
            &metrics,
            "popgate_route_state",
            &[("route", "eager"), ("state", "failed")]
        ),
        1.0
    );
    assert!(sum(&metrics, "popgate_token_cache_failures_total", &[]) >= 1.0);

    // The outage ends; tokens last long again.
    env.authority.faults().clear();
    env.authority
        .settings()
        .set_lifetime(Duration::from_secs(3600));
    let back = readyz_until(admin, 200).await;
    assert_eq!(back["ready"], true);
    assert_eq!(back["routes"]["eager"]["state"], "ready", "{back}");
    assert!(back["routes"]["eager"]["error"].is_null(), "{back}");
    app.shutdown().await;
}
