//! End to end on loopback: gen-certs.sh's PKI, bench-upstream, and bench-load in direct mTLS
//! mode. Bounded: each run is one second or a handful of requests. Needs `openssl` on PATH.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Upstream {
    child: Child,
    addr: String,
    stats: String,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pki() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bench-tools-test-{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("gen-certs.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(&dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "gen-certs.sh failed");
    dir
}

fn upstream(pki: &Path) -> Upstream {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bench-upstream"))
        .args(["--listen", "127.0.0.1:0", "--stats-listen", "127.0.0.1:0"])
        .arg("--cert")
        .arg(pki.join("server.pem"))
        .arg("--key")
        .arg(pki.join("server.key"))
        .arg("--client-ca")
        .arg(pki.join("ca.pem"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((words[0], words[2]), ("listening", "stats"), "{line}");
    Upstream {
        addr: words[1].into(),
        stats: words[3].into(),
        child,
    }
}

fn http(addr: &str, method: &str, path: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let body = resp.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
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
    let pki = pki();
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
