//! `popgate bench --proxy URL --admin URL`: the popgate-side figures of an already running popgate,
//! read from its `/metrics` before and after the load. popgate (in this process, in front of the
//! local authority) serves a PoP and a Bearer route; the real `popgate bench` binary drives it.
//! Without `--admin` the output says which figures are unavailable; an `--admin` that does not
//! answer is refused with exit 2. Its routes and identity are renamed: the metrics registry is
//! shared with the other tests of this process.

use std::net::SocketAddr;

use crate::kit::bench::*;

/// Measured requests per route.
const REQUESTS: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_metrics_give_a_running_popgates_figures_as_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let file = renamed_config(dir.path(), "admin");
    let mut config = popgate::config::load(&file).expect("the renamed config loads");
    config
        .routes
        .retain(|r| r.name == "admin-graph" || r.name == "admin-graph-bearer");
    let local = popgate::dev::local_authority::start(&config).await.unwrap();
    let index = popgate::dev::rewrite::point_at_authority(
        &mut config,
        &local,
        Some(SocketAddr::from(([127, 0, 0, 1], 0))),
    )
    .unwrap()
    .expect("a plain listener");
    let app = popgate::app::App::start(config).await.unwrap();
    let proxy = format!("http://{}", app.local_addrs()[index]);
    let admin = format!("http://{}", app.admin_addr().expect("the admin listener"));
    app.initial_round(popgate::dev::READY_WAIT).await;
    // The tokens (one each) and the connections before the bench are not its figures.
    let warm = bench_command_on(
        &file,
        &[
            "--proxy",
            &proxy,
            "--route",
            "admin-graph",
            "--requests",
            "3",
            "--max-rate",
            "1000",
        ],
    )
    .output()
    .unwrap();
    assert!(warm.status.success(), "{warm:?}");

    let requests = REQUESTS.to_string();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--proxy",
            proxy.as_str(),
            "--route",
            "admin-graph",
            "--route",
            "admin-graph-bearer",
            "--requests",
            requests.as_str(),
            "--concurrency",
            "2",
            "--max-rate",
            "1000",
        ];
        args.extend_from_slice(extra);
        tokio::process::Command::from(bench_command_on(&file, &args)).output()
    };

    let out = run(&["--admin", &admin, "--json"]).await.unwrap();
    let json = json_of(&out);
    assert_eq!(json["window"], "during the bench", "{json}");
    assert!(json["unavailable"].is_null(), "{json}");
    let mut sent = 0;
    let mut opened = 0;
    for name in ["admin-graph", "admin-graph-bearer"] {
        let r = route(&json, name);
        assert_eq!(n(&r["ok"]), REQUESTS, "{r}");
        let share = &r["popgate"];
        assert_eq!(n(&share["upstream_requests"]), REQUESTS, "{r}");
        assert!(f(&share["mean_upstream_ms"]) > 0.0, "{r}");
        assert!(!share["mean_proxy_ms"].is_null(), "{r}");
        let conns = &r["upstream_connections"];
        assert_eq!(n(&conns["upstream_requests"]), REQUESTS, "{r}");
        // Each route's pool dials its own connections (the client may race a dial against an
        // idle one coming free, so not necessarily one per bench connection) and reuses them.
        assert!(n(&conns["opened"]) < REQUESTS, "{r}");
        opened += n(&conns["opened"]);
        assert_eq!(
            r["token_steps"],
            serde_json::json!({}),
            "tokens were acquired before the bench: {r}"
        );
        sent += n(&r["requests"]);
    }
    // Process-wide figures: other tests in this process may add to them while the bench runs.
    let p = &json["popgate"];
    assert!(n(&p["upstream_requests"]) >= sent, "{json}");
    assert!(n(&p["upstream_connections_opened"]) >= opened, "{json}");

    // Without --admin: no popgate-side figures, and the output says so.
    let out = run(&[]).await.unwrap();
    let table = crate::kit::process::stdout_of_success(&out);
    assert!(
        table.contains("unavailable: --proxy without --admin URL"),
        "{table}"
    );
    assert!(table.contains("upstream connections"), "{table}");
    let out = run(&["--json"]).await.unwrap();
    let json = json_of(&out);
    assert!(json["popgate"].is_null(), "{json}");
    assert!(
        json["unavailable"].as_str().unwrap().contains("--admin"),
        "{json}"
    );
    assert!(
        route(&json, "admin-graph")["token_steps"].is_null(),
        "{json}"
    );

    // An --admin that is not a popgate admin listener: exit 2 before any load (the resource
    // server's count does not move).
    let counted = local
        .authority
        .observations()
        .count(popgate_authority::faults::Endpoint::Resource);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = run(&["--admin", &nowhere]).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--admin"), "{stderr}");
    assert_eq!(
        local
            .authority
            .observations()
            .count(popgate_authority::faults::Endpoint::Resource),
        counted
    );

    app.shutdown().await;
    local.authority.shutdown().await;
}
