//! `App::reload` in process, with the `static` identity against the local authority's resource:
//! a reload re-reads the static token file (and certificate), a new eager route that cannot get
//! a token is swapped in failed (503) without disturbing the others, and listener / limits /
//! drain changes are reported as needing a restart while the running listener keeps serving.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::kit::signed_tokens::*;
use popgate::app::App;

/// Bound on the initial round.
const STATE_BOUND: Duration = Duration::from_secs(90);
const HOUR: Duration = Duration::from_secs(3600);

/// popgate started on `env`'s config, whose static token echoes as `marker`, after its initial
/// round: the app, its config file and its listener's address.
async fn started(env: &Env, marker: &str) -> (App, PathBuf, SocketAddr) {
    env.write_token(&env.token(&env.binding, HOUR, marker));
    let path = env.config("");
    let app = App::start(env.load(&path)).await.unwrap();
    app.initial_round(STATE_BOUND).await;
    let addr = app.local_addrs()[0];
    (app, path, addr)
}

/// Rewrites the config file at `path` with `edit`.
fn edit_config(path: &Path, edit: impl FnOnce(String) -> String) {
    let yaml = edit(std::fs::read_to_string(path).unwrap());
    std::fs::write(path, yaml).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rereads_the_static_token_file() {
    let env = Env::start().await;
    let (mut app, path, addr) = started(&env, "first").await;
    assert_eq!(check_echo(&get(addr, "/v1.0/me").await), "first");
    let before = Arc::clone(app.route("graph").unwrap());

    env.write_token(&env.token(&env.binding, HOUR, "second"));
    let summary = app.reload(env.load(&path)).await.unwrap();
    assert_eq!(summary.changed, ["graph"], "{summary:?}");
    assert!(summary.not_ready.is_empty(), "{summary:?}");
    assert!(summary.needs_restart.is_empty(), "{summary:?}");
    assert!(!Arc::ptr_eq(&before, app.route("graph").unwrap()));
    // The new token was read before the swap: the very next request carries it.
    assert_eq!(check_echo(&get(addr, "/v1.0/me").await), "second");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_route_without_a_token_starts_failed_and_the_others_keep_serving() {
    let env = Env::start().await;
    let (mut app, path, addr) = started(&env, "byo-app").await;

    // A second static identity whose token expired an hour ago (readable, so the file loads).
    let expired = sign_expiring(
        env.authority.signing_keys(),
        &env.binding,
        std::time::SystemTime::now() - HOUR,
        "expired",
    );
    std::fs::write(env.dir.path().join("expired.jwt"), expired).unwrap();
    edit_config(&path, |yaml| {
        yaml.replace(
            "routes:\n",
            "  stale:\n    kind: static\n    token_file: expired.jwt\n    certificate: { cert_file: bound.pem, key_file: bound.key }\nroutes:\n",
        ) + "  - name: two\n    match: { host: graph.microsoft.com, path_prefix: /two/ }\n    resource: https://graph.microsoft.com\n    flow: vanilla\n    identity: stale\n"
    });
    let summary = app.reload(env.load(&path)).await.unwrap();
    assert_eq!(summary.added, ["two"], "{summary:?}");
    assert_eq!(summary.not_ready, ["two"], "{summary:?}");

    let answer = get(addr, "/two/x").await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.json()["route"], "two");
    assert_eq!(check_echo(&get(addr, "/v1.0/me").await), "byo-app");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_limits_and_drain_changes_need_a_restart_and_the_listener_keeps_serving() {
    let env = Env::start().await;
    let (mut app, path, addr) = started(&env, "byo-app").await;

    edit_config(&path, |yaml| {
        yaml.replace("127.0.0.1:0", "127.0.0.2:0").replace(
            "identities:\n",
            "limits: { max_headers: 50 }\ntimeouts: { drain: 5s }\nidentities:\n",
        )
    });
    let summary = app.reload(env.load(&path)).await.unwrap();
    assert_eq!(
        summary.needs_restart,
        ["listeners", "limits", "timeouts.drain"],
        "{summary:?}"
    );
    assert_eq!(app.local_addrs(), [addr]);
    assert_eq!(check_echo(&get(addr, "/v1.0/me").await), "byo-app");
    app.shutdown().await;
}
