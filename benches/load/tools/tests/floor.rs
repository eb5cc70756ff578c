//! End to end on loopback: bench-load (plain HTTP) -> bench-floor -> bench-upstream (mTLS, token
//! bound to the floor's client certificate). Bounded: one second of load. Needs `openssl`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pki() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bench-floor-test-{}", std::process::id()));
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

/// Starts `bin` with `args`; the words of the line it prints once listening.
fn start(bin: &str, args: &[&str]) -> (Running, Vec<String>) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words = line.split_whitespace().map(str::to_owned).collect();
    (Running(child), words)
}

fn stats(addr: &str) -> serde_json::Value {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    serde_json::from_str(resp.split_once("\r\n\r\n").unwrap().1).unwrap()
}

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
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_floor_relays_token_bound_gets_over_kept_alive_mtls() {
    let pki = pki();
    let p = |name: &str| pki.join(name).to_str().unwrap().to_owned();
    let (_upstream, words) = start(
        env!("CARGO_BIN_EXE_bench-upstream"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--stats-listen",
            "127.0.0.1:0",
            "--cert",
            &p("server.pem"),
            "--key",
            &p("server.key"),
            "--client-ca",
            &p("ca.pem"),
            "--http1-only",
        ],
    );
    let (upstream, stats_addr) = (words[1].clone(), words[3].clone());

    let (_floor, addr) = floor(&pki, &upstream, "client.token");
    let run = closed_loop(&addr);
    assert!(run["ok"].as_u64().unwrap() > 0, "{run}");
    assert_eq!(run["ok"], run["requests"], "{run}");
    // One upstream connection per caller connection, kept for every request.
    let seen = stats(&stats_addr);
    assert_eq!(seen["tls_handshakes"], 4, "{seen}");
    assert_eq!(seen["unauthorized"], 0, "{seen}");

    // A token bound to another certificate: the upstream's 401 comes back as it was sent.
    let (_floor, addr) = floor(&pki, &upstream, "client2.token");
    let run = closed_loop(&addr);
    assert_eq!(run["ok"], 0, "{run}");
    assert!(run["status"]["401"].as_u64().unwrap() > 0, "{run}");

    let _ = std::fs::remove_dir_all(pki);
}
