//! What the end-to-end tests share: the test PKI, started tools, and plain-HTTP JSON requests.
// Each test binary uses its own subset.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A started tool, killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// gen-certs.sh's PKI and tokens in a fresh directory named after `name` and this process.
pub fn pki(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
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

/// Starts `bin` with `args`; the words of the first line it prints (its addresses).
pub fn start(bin: &str, args: &[&str]) -> (Running, Vec<String>) {
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

/// A bench-upstream on the PKI in `pki`: (it, its address, its stats address).
pub fn upstream(pki: &Path, extra: &[&str]) -> (Running, String, String) {
    let p = |name: &str| pki.join(name).to_str().unwrap().to_owned();
    let mut args = vec![
        "--listen".to_owned(),
        "127.0.0.1:0".into(),
        "--stats-listen".into(),
        "127.0.0.1:0".into(),
        "--cert".into(),
        p("server.pem"),
        "--key".into(),
        p("server.key"),
        "--client-ca".into(),
        p("ca.pem"),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (child, words) = start(env!("CARGO_BIN_EXE_bench-upstream"), &args);
    assert_eq!(
        (words[0].as_str(), words[2].as_str()),
        ("listening", "stats"),
        "{words:?}"
    );
    (child, words[1].clone(), words[3].clone())
}

/// One plain-HTTP request with an empty body; its JSON body.
pub fn http(addr: &str, method: &str, path: &str) -> serde_json::Value {
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

/// The JSON a tool printed, once it exited 0 (else its stderr is the failure).
pub fn json_output(out: std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
