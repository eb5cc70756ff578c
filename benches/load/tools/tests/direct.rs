//! End to end on loopback: gen-certs.sh's PKI, bench-upstream, and bench-load in direct mTLS
//! mode. Bounded: each run is one second or a handful of requests. Needs `openssl` on PATH.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Running, http, pki};

struct Upstream {
    _child: Running,
    addr: String,
    stats: String,
}

fn upstream(pki: &Path) -> Upstream {
    let (child, addr, stats) = common::upstream(pki, &[]);
    Upstream {
        _child: child,
        addr,
        stats,
    }
}

fn load(args: &[&str], pki: &Path, up: &Upstream, token: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_bench-load"))
        .args(args)
        .arg("--target")
        .arg(format!("https://{}/t", up.addr))
        .arg("--cert")
        .arg(pki.join("client.pem"))
        .arg("--key")
        .arg(pki.join("client.key"))
        .arg("--ca")
        .arg(pki.join("ca.pem"))
        .args(["--sni", "upstream.bench.local"])
        .arg("--authorization-file")
        .arg(pki.join(token))
        .output()
        .unwrap();
    common::json_output(out)
}

/// A one-second closed loop on two connections (with `extra` arguments): every request answered
/// 200, by the upstream, on the two connections it opened (none closed and reopened).
fn closed_on_two_connections(extra: &[&str], pki: &Path, up: &Upstream) {
    let mut args = vec!["closed", "--connections", "2", "--duration", "1"];
    args.extend_from_slice(extra);
    let run = load(&args, pki, up, "client.token");
    assert!(run["ok"].as_u64().unwrap() > 0, "{run}");
    assert_eq!(run["ok"], run["requests"]);
    let stats = http(&up.stats, "GET", "/stats");
    assert!(
        stats["requests"].as_u64() >= run["requests"].as_u64(),
        "{stats}"
    );
    assert_eq!(stats["tls_handshakes"], 2, "{stats}");
}

#[test]
fn direct_mode_binding_and_stats() {
    let pki = pki("bench-tools-test");
    let up = upstream(&pki);

    closed_on_two_connections(&[], &pki, &up);
    let stats = http(&up.stats, "GET", "/stats");
    assert_eq!(stats["unauthorized"], 0);
    let thumb = std::fs::read_to_string(pki.join("client.x5t")).unwrap();
    assert_eq!(stats["thumbprints"][0], thumb.trim());

    let reset = http(&up.stats, "POST", "/reset");
    assert_eq!(reset["requests"], 0);

    // A token bound to another certificate is refused and counted.
    let run = load(&["burst", "--connections", "3"], &pki, &up, "client2.token");
    assert_eq!(run["status"]["401"], 3, "{run}");
    assert_eq!(http(&up.stats, "GET", "/stats")["unauthorized"], 3);

    let run = load(
        &[
            "rate",
            "--rate",
            "200",
            "--duration",
            "1",
            "--series",
            "--connections",
            "2",
        ],
        &pki,
        &up,
        "client.token",
    );
    assert_eq!(run["series"].as_array().unwrap().len(), 1, "{run}");
    assert!(run["ok"].as_u64().unwrap() > 100, "{run}");

    // POSTs with a body spanning several TLS records: each answered on the same two keep-alive
    // connections, so the upstream read every body to its end.
    http(&up.stats, "POST", "/reset");
    closed_on_two_connections(&["--body-bytes", "70000"], &pki, &up);

    let _ = std::fs::remove_dir_all(pki);
}

#[test]
fn bad_input_is_an_error_line_and_exit_2() {
    for args in [
        &["closed", "--target", "http://10.1.2.3:80/"][..],
        &[
            "closed",
            "--target",
            "http://127.0.0.1:9/",
            "--duration",
            "601",
        ],
        &[
            "closed",
            "--target",
            "http://127.0.0.1:9/",
            "--connections",
            "20001",
        ],
        &["closed"],
        &["rate", "--target", "http://127.0.0.1:9/", "--rate", "x"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_bench-load"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error: "),
            "{args:?}"
        );
        assert!(out.stdout.is_empty());
    }
}
