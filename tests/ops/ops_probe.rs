//! `popgate probe` (the Docker HEALTHCHECK and a shell-less exec probe): exit 0 against a ready
//! popgate's `/readyz`, 1 with the reason on stderr against an unready one (its route's token
//! endpoint refuses) and against a port nobody listens on, 2 for bad usage.

use std::process::{Command, Output};
use std::time::Duration;

use crate::kit::admin::*;
use crate::kit::credentials::{Endpoint, Fault, GRAPH};
use crate::kit::process::output_within;
use popgate::app::App;

/// Bound on one probe run (its own timeout is 2 s; a debug binary on a loaded machine starts
/// slowly).
const RUN_BOUND: Duration = Duration::from_secs(30);

/// What the token endpoint answers while popgate must be unready: a permanent client error.
const INVALID_CLIENT: &str = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.","error_codes":[7000215]}"#;

/// Enough refusals to keep the route failed for the whole test.
const REFUSALS: usize = 100_000;

fn probe(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_popgate"));
    command.arg("probe").args(args);
    output_within(command, RUN_BOUND)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_exits_0_when_ready_and_1_with_the_reason_when_not() {
    let env = start_env().await;
    let routes = routes_yaml(
        &[(
            "eager",
            GRAPH,
            "    flow: vanilla\n    identity: app\n    token_type: mtls_pop",
        )],
        &[],
    );
    let app = App::start(load(&write_config(&env, &routes)))
        .await
        .expect("popgate starts");
    let admin = app.admin_addr().expect("admin configured");
    app.initial_round(Duration::from_secs(60)).await;
    let url = format!("http://{admin}/readyz");
    assert_eq!(admin_get(admin, "/readyz").await.status, 200);

    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || probe(&["--url", &url])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "200 OK");

    app.shutdown().await;

    // Unready: a second popgate whose token endpoint refuses, so its eager route fails.
    env.authority.faults().push(
        Endpoint::Token,
        Fault::Status {
            code: 400,
            retry_after: None,
            body: Some(INVALID_CLIENT.into()),
        },
        REFUSALS,
    );
    let app = App::start(load(&write_config(&env, &routes)))
        .await
        .expect("popgate starts");
    let admin = app.admin_addr().expect("admin configured");
    app.initial_round(Duration::from_secs(60)).await;
    assert_eq!(admin_get(admin, "/readyz").await.status, 503);
    let url = format!("http://{admin}/readyz");
    let out = tokio::task::spawn_blocking(move || probe(&["--url", &url]))
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("503 Service Unavailable"), "{stderr}");
    assert!(stderr.contains(r#""ready":false"#), "the reason: {stderr}");
    assert!(out.stdout.is_empty());
    app.shutdown().await;
}

#[test]
fn probe_of_a_closed_port_exits_1_and_bad_usage_exits_2() {
    // A port that was just free: nobody listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = probe(&["--url", &format!("http://127.0.0.1:{port}/readyz")]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");

    for (args, says) in [
        (
            &["--url", "https://127.0.0.1:9901/readyz"][..],
            "http:// only",
        ),
        (&["--url", "127.0.0.1:9901/readyz"][..], "--url"),
        (&["--url", "http://u:p@127.0.0.1/"][..], "user info"),
        (
            &["--url", "http://127.0.0.1/", "--timeout", "2m"][..],
            "at most 60s",
        ),
        (
            &["--url", "http://127.0.0.1/", "--timeout", "soon"][..],
            "not a duration",
        ),
        (&[][..], "--url"),
    ] {
        let out = probe(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
