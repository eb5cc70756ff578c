//! `popgate run`, the real binary, with a static route against the local authority's resource:
//! curl through it gets the resource's 200 with the token bound to the certificate presented; an
//! unrouted host gets 403 and nothing reaches the resource; SIGTERM drains and exits 0.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kit::process::{Child, fields, run_command};
use crate::kit::signed_tokens::*;

/// Bound on waiting for the binary to start serving, and to exit after SIGTERM.
const PROCESS_BOUND: Duration = Duration::from_secs(60);

/// The running binary (JSON log at info on stdout); killed if the test ends early.
struct Popgate {
    child: Child,
}

impl Popgate {
    fn start(config: &std::path::Path) -> Popgate {
        Popgate {
            child: Child::spawn(run_command(config), false),
        }
    }

    /// Reads log lines until `serving`; returns the listener address and every line read.
    fn wait_serving(&self) -> (SocketAddr, Vec<String>) {
        let deadline = Instant::now() + PROCESS_BOUND;
        let mut seen = Vec::new();
        let mut addr = None;
        loop {
            let line = self.child.next_line(deadline).unwrap_or_else(|| {
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
        self.child.signal("TERM");
        self.child.wait_exit(PROCESS_BOUND)
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
