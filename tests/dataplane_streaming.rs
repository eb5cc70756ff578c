//! 64 MiB up and 64 MiB down through popgate without buffering: the process's peak RSS (client,
//! popgate and upstream all live here) must grow far less than one body. Alone in its own test
//! binary so no other test's memory counts. Asserts memory, not time.

#[path = "kit/mod.rs"]
mod kit;

use http::Request;
use kit::dataplane::*;
use popgate::dataplane::ProxySettings;

const BODY: u64 = 64 * 1024 * 1024;
/// Allowed peak-RSS growth: well under one body, generous for allocator and buffer noise.
const MAX_GROWTH_KIB: u64 = 24 * 1024;

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_each_way_is_streamed_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("ca");
    let h1_upstream = TestUpstream::start(&pki, &pki, false).await;
    let h2_upstream = TestUpstream::start(&pki, &pki, true).await;
    let binding = pki.binding("c");
    let settings = pki.upstream_settings(
        dir.path(),
        &[
            ("graph.microsoft.com:443", h1_upstream.addr),
            ("svc.example:443", h2_upstream.addr),
        ],
    );
    let proxy = start_proxy(
        vec![
            (
                route("h1", Some("graph.microsoft.com"), None),
                Some(pop_token(dir.path(), &binding, "a")),
            ),
            (
                route("h2", Some("svc.example"), None),
                Some(pop_token(dir.path(), &binding, "b")),
            ),
        ],
        &settings,
        ProxySettings::default(),
    )
    .await;

    // Warm up every path once so connection setup is not counted as growth.
    for host in ["graph.microsoft.com", "svc.example"] {
        let resp = h1_send(proxy.addr, absolute_get(host, "/download/1024")).await;
        assert_eq!(bounded(drain(resp.into_body(), false)).await.0, 1024);
    }
    let before = vm_hwm_kib();

    for (host, upstream) in [
        ("graph.microsoft.com", &h1_upstream),
        ("svc.example", &h2_upstream),
    ] {
        // Up: the caller's body is generated on the fly; the upstream counts and discards it.
        let req = Request::builder()
            .method("POST")
            .uri(format!("http://{host}/upload"))
            .header("host", host)
            .body(TestBody::Repeat { remaining: BODY })
            .unwrap();
        let resp = h1_send(proxy.addr, req).await;
        assert_eq!(resp.status(), 200, "{host}");
        text(resp).await;
        let seen = upstream.seen();
        let up = seen
            .iter()
            .find(|s| s.path == "/upload")
            .expect("upload seen");
        assert_eq!(up.body_len, BODY, "{host}: upload truncated");

        // Down: the upstream generates the body; the caller counts and discards it.
        let resp = h1_send(proxy.addr, absolute_get(host, &format!("/download/{BODY}"))).await;
        assert_eq!(resp.status(), 200, "{host}");
        let (n, _, _) = bounded(drain(resp.into_body(), false)).await;
        assert_eq!(n, BODY, "{host}: download truncated");
    }

    let growth = vm_hwm_kib().saturating_sub(before);
    println!("peak RSS growth over 4 x 64 MiB transfers: {growth} KiB");
    assert!(
        growth < MAX_GROWTH_KIB,
        "peak RSS grew by {growth} KiB while streaming {} MiB bodies: something buffers",
        BODY / 1024 / 1024
    );
}
