//! End to end on loopback: bench-load (plain HTTP) -> bench-floor -> bench-upstream (mTLS, token
//! bound to the floor's client certificate). Bounded: one second of load. Needs `openssl`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Running, http, pki, start};

fn floor(pki: &Path, upstream: &str, token: &str) -> (Running, String) {
    let p = |name: &str| pki.join(name).to_str().unwrap().to_owned();
    let (child, words) = start(
        env!("CARGO_BIN_EXE_bench-floor"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            upstream,
            "--sni",
            "upstream.bench.local",
            "--ca",
            &p("ca.pem"),
            "--cert",
            &p("client.pem"),
            "--key",
            &p("client.key"),
            "--authorization-file",
            &p(token),
            "--threads",
            "2",
        ],
    );
    assert_eq!(words[0], "listening", "{words:?}");
    (child, words[1].clone())
}

fn closed_loop(target: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bench-load"))
        .args([
            "closed",
            "--connections",
            "4",
            "--duration",
            "1",
            "--target",
        ])
        .arg(format!("http://{target}/t"))
        .args(["--host", "upstream.bench.local"])
        .output()
        .unwrap();
    common::json_output(out)
}

#[test]
fn the_floor_relays_token_bound_gets_over_kept_alive_mtls() {
    let pki = pki("bench-floor-test");
    let (_upstream, upstream, stats_addr) = common::upstream(&pki, &["--http1-only"]);

    let (_floor, addr) = floor(&pki, &upstream, "client.token");
    let run = closed_loop(&addr);
    assert!(run["ok"].as_u64().unwrap() > 0, "{run}");
    assert_eq!(run["ok"], run["requests"], "{run}");
    // One upstream connection per caller connection, kept for every request.
    let seen = http(&stats_addr, "GET", "/stats");
    assert_eq!(seen["tls_handshakes"], 4, "{seen}");
    assert_eq!(seen["unauthorized"], 0, "{seen}");

    // A token bound to another certificate: the upstream's 401 comes back as it was sent.
    let (_floor, addr) = floor(&pki, &upstream, "client2.token");
    let run = closed_loop(&addr);
    assert_eq!(run["ok"], 0, "{run}");
    assert!(run["status"]["401"].as_u64().unwrap() > 0, "{run}");

    let _ = std::fs::remove_dir_all(pki);
}
