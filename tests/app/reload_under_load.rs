//! Hot reload of the real `popgate run` binary under load: 8 keep-alive clients send requests
//! the whole time while the config is rewritten (a route added, one changed, one removed) and
//! reloaded by SIGHUP, then broken (syntax error) and picked up by the file poller. Asserts zero
//! failed requests on the routes that exist before and after, that the new route serves after
//! the swap with its token acquired before it, that the unchanged credential's token was not
//! acquired again, and that the broken file is refused with `FILE:LINE:COL` while the running
//! config keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::kit::process::*;

/// Concurrent load clients.
const CLIENTS: usize = 8;
/// Most requests one client sends (the loop normally ends when the test says stop).
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;
/// Longest the load runs, whatever happens.
const LOAD_TIME_CAP: Duration = Duration::from_secs(180);

fn routes_v1() -> String {
    [
        route("keep", Some("/v1.0/"), "app", ""),
        route("tweak", Some("/tweak/"), "app", ""),
        route("gone", Some("/gone/"), "app", ""),
    ]
    .concat()
}

fn routes_v2() -> String {
    [
        route("keep", Some("/v1.0/"), "app", ""),
        // Changed: its own request timeout. Same credential, so no new token either.
        route(
            "tweak",
            Some("/tweak/"),
            "app",
            "    timeouts: { request: 30s }\n",
        ),
        // New, on a new identity: needs its own token, acquired before the swap.
        route("fresh", Some("/fresh/"), "app-west", ""),
    ]
    .concat()
}

/// Outcome of the load: requests that succeeded and a description of each failure.
#[derive(Default)]
struct Load {
    /// Successful requests so far (a watch, so the test can await a count).
    ok: tokio::sync::watch::Sender<usize>,
    failures: std::sync::Mutex<Vec<String>>,
}

/// One client: alternates `keep` and `tweak` requests on a keep-alive connection until `stop`.
async fn client(proxy: std::net::SocketAddr, id: usize, stop: Arc<AtomicBool>, load: Arc<Load>) {
    let started = Instant::now();
    let mut sender = None;
    for n in 0..MAX_REQUESTS_PER_CLIENT {
        if stop.load(Ordering::Relaxed) || started.elapsed() > LOAD_TIME_CAP {
            return;
        }
        if sender.is_none() {
            match connect(proxy).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    load.failures
                        .lock()
                        .unwrap()
                        .push(format!("client {id}: {e}"));
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let path = if n % 2 == 0 { "/v1.0/me" } else { "/tweak/x" };
        match get_on(s, path).await {
            Ok((200, _)) => {
                load.ok.send_modify(|n| *n += 1);
            }
            Ok((status, body)) => {
                load.failures
                    .lock()
                    .unwrap()
                    .push(format!("client {id} {path}: {status} {body}"));
            }
            Err(e) => {
                load.failures
                    .lock()
                    .unwrap()
                    .push(format!("client {id} {path}: {e}"));
                sender = None;
            }
        }
    }
}

/// Waits (bounded) until the load has had at least `n` successful requests.
async fn wait_until_served(load: &Load, n: usize) {
    let mut ok = load.ok.subscribe();
    tokio::time::timeout(LOAD_TIME_CAP, ok.wait_for(|served| *served >= n))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the load never reached {n} requests; failures: {:#?}",
                load.failures.lock().unwrap()
            )
        })
        .unwrap();
}

fn names(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request_and_keeps_unchanged_tokens() {
    let env = Env::start().await;
    let config = env.write_config(&routes_v1());
    let mut popgate = Popgate::start(&config);
    let (proxy, mut popgate) = tokio::task::spawn_blocking(move || {
        let addr = popgate.wait_serving();
        (addr, popgate)
    })
    .await
    .unwrap();
    let (status, body) = get(proxy, "/gone/x").await;
    assert_eq!(status, 200, "{body}");
    // One credential (app, graph, mtls_pop) serves all three routes: one acquisition.
    let tokens_before = env.token_requests();
    assert_eq!(tokens_before, 1);

    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| tokio::spawn(client(proxy, id, Arc::clone(&stop), Arc::clone(&load))))
        .collect();

    // Reload 1: SIGHUP with a new route, a changed one and a removed one, once the load runs.
    let ok_at = |load: &Load| *load.ok.borrow();
    wait_until_served(&load, 1).await;
    env.write_config(&routes_v2());
    popgate.signal("HUP");
    let (reloaded, mut popgate) = tokio::task::spawn_blocking(move || {
        let f = popgate.wait_for("config reloaded", |f| f["message"] == "config reloaded");
        (f, popgate)
    })
    .await
    .unwrap();
    let served_at_first_reload = ok_at(&load);
    assert_eq!(reloaded["trigger"], "SIGHUP");
    assert_eq!(names(&reloaded["kept"]), r#"["keep"]"#, "{reloaded}");
    assert_eq!(names(&reloaded["changed"]), r#"["tweak"]"#, "{reloaded}");
    assert_eq!(names(&reloaded["added"]), r#"["fresh"]"#, "{reloaded}");
    assert_eq!(names(&reloaded["removed"]), r#"["gone"]"#, "{reloaded}");
    assert_eq!(names(&reloaded["not_ready"]), "[]", "{reloaded}");
    // The new route's token was acquired before the swap; nothing else was acquired again.
    assert_eq!(env.token_requests(), tokens_before + 1);
    let (status, body) = get(proxy, "/fresh/x").await;
    assert_eq!(status, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["scheme"], "mtls_pop");
    assert_eq!(echo["cnf_x5t"], echo["presented_x5t"]);
    let (status, body) = get(proxy, "/gone/x").await;
    assert_eq!(status, 403, "a removed route still served: {body}");

    // Reload 2: a syntax error, noticed by the file poller (no signal). The old config stays.
    std::fs::write(
        env.config_path(),
        format!(
            "{}  - name: [unclosed\n",
            "version: 1\nlisteners:\n  - address: 127.0.0.1:0\nroutes:\n"
        ),
    )
    .unwrap();
    let (refused, popgate) = tokio::task::spawn_blocking(move || {
        let f = popgate.wait_for("the refused reload", |f| {
            f["message"] == "config reload refused; the running config stays"
        });
        (f, popgate)
    })
    .await
    .unwrap();
    assert_eq!(refused["trigger"], "file_changed");
    let error = refused["error"].as_str().unwrap();
    let config_name = env.config_path().display().to_string();
    let rest = error
        .strip_prefix(&format!("{config_name}:"))
        .unwrap_or_else(|| panic!("not FILE:LINE:COL: {error}"));
    let mut parts = rest.splitn(3, ':');
    let line: u32 = parts.next().unwrap().parse().expect("LINE");
    let col: u32 = parts.next().unwrap().parse().expect("COL");
    assert!(line >= 5 && col >= 1, "{error}");
    assert_eq!(refused["line"], line);
    assert_eq!(refused["col"], col);
    let (status, body) = get(proxy, "/fresh/x").await;
    assert_eq!(status, 200, "the running config stopped serving: {body}");

    // The load kept going across both reloads.
    wait_until_served(&load, served_at_first_reload + 1).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = load.failures.lock().unwrap().clone();
    // The figures docs/reliability.md records for this scenario.
    println!(
        "reload under load: requests ok={} failed={} (SIGHUP reload: 1 kept, 1 changed, 1 added, 1 removed; then a broken file refused)",
        *load.ok.borrow(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:#?}",
        failures.len()
    );
    assert!(
        *load.ok.borrow() > served_at_first_reload,
        "the load stopped"
    );
    assert_eq!(
        env.token_requests(),
        tokens_before + 1,
        "a token was acquired again"
    );

    let mut popgate = popgate;
    popgate.signal("TERM");
    let status = tokio::task::spawn_blocking(move || popgate.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "popgate exited with {status}");
}
