//! `popgate run`, the real binary, with a static route against the local authority's resource:
//! curl through it gets the resource's 200 with the token bound to the certificate presented; an
//! unrouted host gets 403 and nothing reaches the resource; SIGTERM drains and exits 0.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::kit::signed_tokens::*;

/// Bound on waiting for the binary to start serving, and to exit after SIGTERM.
const PROCESS_BOUND: Duration = Duration::from_secs(60);

/// The running binary; killed (by its own pid) if the test ends early.
struct Popgate {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Popgate {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The JSON log line's `fields`.
fn fields(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("fields").cloned())
}

impl Popgate {
    fn start(config: &std::path::Path) -> Popgate {
        let mut child = Command::new(env!("CARGO_BIN_EXE_popgate"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        // Drains the pipe for the child's whole life so its logging never blocks.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Popgate { child, lines }
    }

    /// Reads log lines until `serving`; returns the listener address and every line read.
    fn wait_serving(&self) -> (SocketAddr, Vec<String>) {
        let mut seen = Vec::new();
        let mut addr = None;
        loop {
            let line = self.lines.recv_timeout(PROCESS_BOUND).unwrap_or_else(|_| {
                panic!("popgate never served; log so far:\n{}", seen.join("\n"))
            });
            if let Some(f) = fields(&line) {
                if f["message"] == "listening" {
                    addr = f["addr"].as_str().and_then(|a| a.parse().ok());
                }
                if f["message"] == "serving" {
                    seen.push(line);
                    return (addr.expect("no listening line before serving"), seen);
                }
            }
            seen.push(line);
        }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + PROCESS_BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "popgate did not exit after SIGTERM"
            );
            // The exit is a process event with no in-process signal to await; poll gently.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn curl(proxy: SocketAddr, url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["-sS", "--max-time", "30", "-x"])
        .arg(format!("http://{proxy}"))
        .args(["-w", "\n%{http_code}", url])
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn popgate_run_serves_curl_with_the_bound_token_and_refuses_unrouted_hosts() {
    let env = Env::start().await;
    env.write_token(&env.token(&env.binding, Duration::from_secs(3600), "byo-app"));
    let config = env.config("");
    let popgate = Popgate::start(&config);
    // The binary and curl are blocking process I/O; keep them off the async workers.
    let (proxy, log) = tokio::task::block_in_place(|| popgate.wait_serving());
    assert!(proxy.ip().is_loopback());
    // The route's state was logged after the initial round.
    assert!(
        log.iter()
            .any(|l| fields(l)
                .is_some_and(|f| f["message"] == "route ready" && f["route"] == "graph")),
        "no route state line:\n{}",
        log.join("\n")
    );
    let x5t = env.binding.x5t_s256().to_string();
    let token = std::fs::read_to_string(&env.token_file).unwrap();
    assert!(
        !log.iter().any(|l| l.contains(token.trim())),
        "the token appeared in the log"
    );

    let (code, body) =
        tokio::task::block_in_place(|| curl(proxy, "http://graph.microsoft.com/v1.0/me"));
    assert_eq!(code, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["scheme"], "mtls_pop");
    assert_eq!(echo["cnf_x5t"], x5t.as_str());
    assert_eq!(echo["presented_x5t"], x5t.as_str());
    assert_eq!(echo["appid"], "byo-app");
    assert_eq!(echo["path"], "/v1.0/me");
    assert_eq!(env.resource_counts(), (1, 0));

    let (code, body) = tokio::task::block_in_place(|| curl(proxy, "http://evil.example/steal"));
    assert_eq!(code, 403, "{body}");
    let refusal: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refusal["error"], "no_route");
    assert_eq!(
        env.resource_counts(),
        (1, 0),
        "an unrouted request reached the resource"
    );

    let status = tokio::task::block_in_place(|| popgate.terminate());
    assert!(status.success(), "popgate exited with {status}");
}
