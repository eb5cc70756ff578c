//! The coordinated-omission correction, end to end: popgate (in this process) in front of the local
//! authority, `popgate bench --proxy` (the real binary) at a fixed rate, and the resource stalls
//! for one second once. The stall must show in p99.9 and max, and in p99 too: the requests queued
//! behind the stalled one are timed from when they were due. A tool timing from the actual send
//! would show one slow request in 150, far beyond p99.

use std::net::SocketAddr;
use std::time::Duration;

use crate::kit::bench::*;
use popgate_authority::faults::{Endpoint, Fault};

/// The stall the resource server injects once.
const STALL: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_second_stall_shows_in_the_tail_at_a_fixed_rate() {
    let mut config = popgate::config::load(&shipped_config()).expect("shipped config loads");
    config.routes.retain(|r| r.name == "graph");
    let local = popgate::dev::local_authority::start(&config).await.unwrap();
    let index = popgate::dev::rewrite::point_at_authority(
        &mut config,
        &local,
        Some(SocketAddr::from(([127, 0, 0, 1], 0))),
    )
    .unwrap()
    .expect("a plain listener");
    let app = popgate::app::App::start(config).await.unwrap();
    let listener = app.local_addrs()[index];
    app.initial_round(popgate::dev::READY_WAIT).await;

    let proxy = format!("http://{listener}");
    // graph's upstream is graph.microsoft.com as far as the routes file says: consent to 50/s.
    let child = tokio::process::Command::from(bench_command(&[
        "--proxy",
        &proxy,
        "--route",
        "graph",
        "--rate",
        "50",
        "--max-rate",
        "50",
        "--concurrency",
        "2",
        "--duration",
        "3s",
        "--json",
    ]))
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("popgate bench starts");
    // Inside the measured phase (it starts at once with --proxy: no warm-up, no set-up).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let millis = STALL.as_millis() as u64;
    local
        .authority
        .faults()
        .push(Endpoint::Resource, Fault::Delay { millis }, 1);
    let out = child.wait_with_output().await.expect("popgate bench ends");
    let json = json_of(&out);

    let r = route(&json, "graph");
    assert_eq!(n(&r["requests"]), 150, "{r}");
    assert_eq!(n(&r["ok"]), 150, "{r}");
    let l = &r["latency_ms"];
    let stall = STALL.as_millis() as f64;
    assert!(f(&l["max"]) >= stall, "max shows the stall: {l}");
    assert!(f(&l["p999"]) >= stall * 0.95, "p99.9 shows the stall: {l}");
    assert!(
        f(&l["p99"]) >= stall * 0.5,
        "the requests queued behind the stall are timed from their due time: {l}"
    );
    assert!(
        f(&l["p50"]) < stall * 0.5,
        "most requests were not delayed: {l}"
    );
    assert!(
        json["popgate"].is_null() && json["authority"].is_null(),
        "{json}"
    );
    assert!(
        json["unavailable"]
            .as_str()
            .unwrap()
            .contains("without --admin"),
        "{json}"
    );

    app.shutdown().await;
    local.authority.shutdown().await;
}
