//! `/metrics` and `/healthz` of a popgate started in-process (`App::start`) against the local
//! authority with one route per flow: the scrape parses with a real Prometheus text parser, the
//! families and labels exist and move with traffic, histograms have buckets, and nothing a caller
//! sends (paths, hosts, methods) becomes a label value. Body bytes per route, the build's
//! identity and the `process_*` families are checked against what the test itself sent and reads.
//! Alone in its own test binary: it asserts exact values of the process-wide counters, which
//! another test in the same process would move.

#[path = "kit/mod.rs"]
mod kit;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kit::admin::*;
use popgate::app::App;

/// Bound on the eager routes' first acquisitions.
const START_BOUND: Duration = Duration::from_secs(60);

/// Families every scrape must carry.
const FAMILIES: &[&str] = &[
    "popgate_requests_total",
    "popgate_request_duration_seconds",
    "popgate_upstream_duration_seconds",
    "popgate_requests_in_flight",
    "popgate_upstream_requests_total",
    "popgate_upstream_connections_opened_total",
    "popgate_upstream_tls_handshakes_total",
    "popgate_token_acquisitions_total",
    "popgate_credential_request_duration_seconds",
    "popgate_binding_cert_not_after_timestamp_seconds",
    "popgate_config_reloads_total",
    "popgate_connections_evicted_total",
    "popgate_connection_deadlines_total",
    "popgate_token_cache_hits_total",
    "popgate_token_cache_misses_total",
    "popgate_token_cache_acquisitions_total",
    "popgate_token_cache_failures_total",
    "popgate_token_retry_after_blocks_total",
    "popgate_route_token_expires_in_seconds",
    "popgate_route_state",
    "popgate_route_failure",
    "popgate_upstream_pool_connections",
    "popgate_upstream_pool_waiters",
    "popgate_upstream_pool_refusals_total",
    "popgate_proxy_tunnels_total",
    "popgate_request_body_bytes_total",
    "popgate_response_body_bytes_total",
    "popgate_build_info",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_move_with_traffic_and_keep_caller_values_out_of_labels() {
    let env = kit::admin::start_env().await;
    let flows = all_flows();
    let config = load(&write_config(&env, &routes_yaml(&flows, &[])));
    let app = App::start(config).await.expect("popgate starts");
    app.initial_round(START_BOUND).await;
    let proxy = app.local_addrs()[0];
    let admin = app.admin_addr().expect("admin configured");
    for slot in app.routes() {
        assert!(
            slot.status().is_serving(),
            "{}: {:?}",
            slot.name(),
            slot.status()
        );
    }

    let health = admin_get(admin, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    // Two requests per route: the second should reuse the pooled connection.
    for (name, _, _) in &flows {
        for _ in 0..2 {
            let answer = request(proxy, "GET", "legacy.app", &format!("/{name}/v1.0/me")).await;
            assert_eq!(
                answer.status,
                expected_status(name),
                "{name}: {}",
                answer.body
            );
        }
    }
    let first = scrape(admin).await;
    let names: BTreeSet<&str> = first.iter().map(|s| s.name.as_str()).collect();
    for family in FAMILIES {
        assert!(
            names.iter().any(|n| n.starts_with(family)),
            "family {family} missing; have {names:?}"
        );
    }
    for (name, _, _) in &flows {
        assert_eq!(
            sum(
                &first,
                "popgate_requests_total",
                &[("route", name), ("class", expected_class(name))]
            ),
            2.0,
            "{name}"
        );
        let histogram = find(
            &first,
            "popgate_request_duration_seconds",
            &[("route", name)],
        );
        assert_eq!(histogram.len(), 1, "{name}");
        assert!(histogram[0].buckets.len() > 5, "{name}: no buckets");
        assert_eq!(histogram[0].value, 2.0, "{name}: +Inf bucket counts both");
        let upstream = find(
            &first,
            "popgate_upstream_duration_seconds",
            &[("route", name)],
        );
        assert_eq!(upstream[0].value, 2.0, "{name}");
        assert_eq!(
            sum(&first, "popgate_requests_in_flight", &[("route", name)]),
            0.0
        );
        let expires = sum(
            &first,
            "popgate_route_token_expires_in_seconds",
            &[("route", name)],
        );
        assert!(expires > 60.0, "{name}: expires in {expires}");
        assert_eq!(
            sum(
                &first,
                "popgate_route_state",
                &[("route", name), ("state", "ready")]
            ),
            1.0
        );
    }
    // Acquisitions by identity, flow and outcome.
    for (identity, flow, token_type) in [
        ("app", "vanilla", "mtls_pop"),
        ("app", "vanilla", "bearer"),
        ("uami", "vanilla", "mtls_pop"),
        ("uami", "vanilla", "bearer"),
        ("exchange", "fic", "mtls_pop"),
        ("exchange", "fic", "bearer"),
    ] {
        let published = sum(
            &first,
            "popgate_token_acquisitions_total",
            &[
                ("identity", identity),
                ("flow", flow),
                ("token_type", token_type),
                ("step", "get"),
                ("outcome", "published"),
            ],
        );
        assert!(published >= 1.0, "{identity}/{flow}/{token_type}");
    }
    // Both credential peers were timed.
    for peer in ["token_endpoint", "imds"] {
        let calls = sum(
            &first,
            "popgate_credential_request_duration_seconds",
            &[("peer", peer), ("outcome", "ok")],
        );
        assert!(calls >= 1.0, "{peer}: {calls}");
    }
    assert!(sum(&first, "popgate_token_cache_acquisitions_total", &[]) >= 6.0);
    // PoP routes publish their binding certificate's notAfter (in the future).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    for route in ["app-pop", "mi-pop", "fic-app"] {
        let not_after = sum(
            &first,
            "popgate_binding_cert_not_after_timestamp_seconds",
            &[("route", route)],
        );
        assert!(not_after > now, "{route}: notAfter {not_after}");
    }
    // Connections: every successful dial is one TLS handshake.
    let opened = sum(&first, "popgate_upstream_connections_opened_total", &[]);
    assert!(opened >= 1.0, "opened {opened}");
    assert_eq!(
        sum(
            &first,
            "popgate_upstream_tls_handshakes_total",
            &[("outcome", "ok")]
        ),
        opened
    );
    // Reuse: more requests on a warm PoP route are sent upstream without new connections.
    const MORE: u32 = 5;
    for _ in 0..MORE {
        let answer = request(proxy, "GET", "legacy.app", "/app-pop/v1.0/me").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let warm = scrape(admin).await;
    let route = [("route", "app-pop")];
    let sent_more = sum(&warm, "popgate_upstream_requests_total", &route)
        - sum(&first, "popgate_upstream_requests_total", &route);
    let opened_more = sum(&warm, "popgate_upstream_connections_opened_total", &[]) - opened;
    assert_eq!(sent_more, f64::from(MORE));
    assert!(
        opened_more < sent_more,
        "opened {opened_more} for {sent_more} requests"
    );
    // The pool: the warm route holds its connections open (at most those ever opened); nobody
    // waited for one or was refused.
    let pooled = sum(&warm, "popgate_upstream_pool_connections", &route);
    assert!(pooled >= 1.0, "app-pop holds {pooled} connections");
    assert!(
        sum(&warm, "popgate_upstream_pool_connections", &[]) <= opened + opened_more,
        "more connections open than ever opened"
    );
    assert_eq!(sum(&warm, "popgate_upstream_pool_waiters", &[]), 0.0);
    assert_eq!(sum(&warm, "popgate_upstream_pool_refusals_total", &[]), 0.0);
    assert!(
        !find(
            &first,
            "popgate_config_reloads_total",
            &[("outcome", "failed")]
        )
        .is_empty()
    );

    // Caller-chosen values: random paths on a route, random hosts and methods nowhere routed.
    let before = identities(&scrape(admin).await);
    for i in 0..20u32 {
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let routed = request(
            proxy,
            "GET",
            "legacy.app",
            &format!("/app-pop/{nonce}?q={i}"),
        )
        .await;
        assert_eq!(routed.status, 200);
        let unrouted = request(
            proxy,
            "PATCH",
            &format!("{nonce}.example"),
            &format!("/{nonce}"),
        )
        .await;
        assert!((400..500).contains(&unrouted.status), "{}", unrouted.status);
    }
    let after = scrape(admin).await;
    assert_eq!(
        identities(&after),
        before,
        "label cardinality grew with caller input"
    );
    let allowed_routes: BTreeSet<String> = flows
        .iter()
        .map(|(n, _, _)| n.to_string())
        .chain([popgate::metrics::UNROUTED.to_string()])
        .collect();
    for series in &after {
        if let Some(route) = series.labels.get("route") {
            assert!(allowed_routes.contains(route), "route label {route}");
        }
        assert!(
            !series.labels.values().any(|v| v.contains(".example")),
            "caller host in labels: {series:?}"
        );
    }
    assert_eq!(
        sum(
            &after,
            "popgate_requests_total",
            &[("route", "app-pop"), ("class", "2xx")]
        ),
        f64::from(22 + MORE)
    );
    assert!(
        sum(
            &after,
            "popgate_requests_total",
            &[("route", "-"), ("class", "4xx")]
        ) >= 20.0
    );

    // Body bytes per route: request bodies as sent upstream (one streamed past the replay
    // read-ahead, one read ahead whole), answer bodies as passed back.
    let before = scrape(admin).await;
    let mut response_bytes = 0;
    for size in [100_000usize, 1_000] {
        let body = http_body_util::Full::new(bytes::Bytes::from(vec![b'x'; size]));
        let answer = kit::http::send(proxy, "POST", "legacy.app", "/app-pop/upload", body).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["request_body_bytes"], size, "{}", answer.body);
        response_bytes += answer.body.len();
    }
    let bytes_after = scrape(admin).await;
    let moved = |family: &str| sum(&bytes_after, family, &route) - sum(&before, family, &route);
    assert_eq!(moved("popgate_request_body_bytes_total"), 101_000.0);
    assert_eq!(
        moved("popgate_response_body_bytes_total"),
        response_bytes as f64
    );
    assert!(sum(&bytes_after, "popgate_response_body_bytes_total", &[]) > response_bytes as f64);

    // Which build: the crate version, the commit it was built from, the compiler.
    let info = find(&bytes_after, "popgate_build_info", &[]);
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(info[0].value, 1.0);
    assert_eq!(info[0].labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(info[0].labels["rustc"].starts_with("rustc 1."), "{info:?}");
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match (head, std::env::var("POPGATE_GIT_COMMIT")) {
        (_, Ok(set)) if !set.is_empty() => assert_eq!(info[0].labels["commit"], set),
        (Some(head), _) => assert_eq!(info[0].labels["commit"], head),
        (None, _) => assert_eq!(info[0].labels["commit"], "unknown"),
    }

    // process_*: this test process is the popgate process.
    let fds_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as f64;
    let one = |name: &str| {
        let s = find(&bytes_after, name, &[]);
        assert_eq!(s.len(), 1, "{name}: {s:?}");
        s[0].value
    };
    assert!(one("process_cpu_seconds_total") > 0.0);
    let rss = one("process_resident_memory_bytes");
    assert!(rss > 1_000_000.0, "rss {rss}");
    assert!(one("process_virtual_memory_bytes") >= rss);
    let open = one("process_open_fds");
    assert!(
        open > 10.0 && (open - fds_now).abs() < 64.0,
        "open {open}, now {fds_now}"
    );
    assert!(one("process_max_fds") >= open);
    let started = one("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "start {started}, now {now}"
    );
    assert!(one("process_threads") >= 2.0);

    // The admin listener answers only its own paths and methods.
    assert_eq!(admin_get(admin, "/nope").await.status, 404);
    let post = request(admin, "POST", "localhost", "/metrics").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_address_already_in_use_fails_start_naming_it() {
    let env = kit::admin::start_env().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let path = write_config(&env, &routes_yaml(&all_flows()[..1], &[]));
    let yaml = std::fs::read_to_string(&path).unwrap().replace(
        "admin:\n  address: 127.0.0.2:0",
        &format!("admin:\n  address: {addr}"),
    );
    std::fs::write(&path, yaml).unwrap();
    let error = App::start(load(&path)).await.expect_err("admin port taken");
    let message = error.to_string();
    assert!(
        message.contains(&format!("admin listener {addr}")),
        "{message}"
    );
}
