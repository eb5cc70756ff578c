//! Helpers for the reload and drain tests: the local authority with a certificate app, a
//! routes.yaml written for it, the real `popgate run` binary with its JSON log read line by line,
//! and keep-alive HTTP/1 clients. Only loopback addresses are used.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use popgate_authority::directory::DEFAULT_TENANT_ID as TENANT;
use popgate_authority::{Authority, AuthorityConfig, Endpoint};

use super::authority::{resolve_yaml, seeded_dir};
pub use super::http::REQUEST_BOUND;
use super::http::{dial, send_on};

/// Bound on waiting for the binary to start, to log an expected line, and to exit.
pub const PROCESS_BOUND: Duration = Duration::from_secs(90);

/// A running authority with one certificate app, and a temp dir holding its files.
pub struct Env {
    pub authority: Authority,
    pub dir: tempfile::TempDir,
    pub app_client_id: String,
}

impl Env {
    pub async fn start() -> Env {
        let authority = Authority::start(AuthorityConfig::default())
            .await
            .expect("authority starts");
        let (app, credential) = authority.new_certificate_app("popgate-reload").unwrap();
        let dir = seeded_dir(&authority, &credential);
        Env {
            authority,
            dir,
            app_client_id: app.client_id.clone(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("routes.yaml")
    }

    /// Writes routes.yaml: a plain listener on 127.0.0.1:0, identities `app` (global mTLS host)
    /// and `app-west` (same app, region westus3), and `routes` (YAML list items).
    pub fn write_config(&self, routes: &str) -> PathBuf {
        self.write_config_with("", routes)
    }

    /// [`Env::write_config`] with more top-level keys (`top`, YAML lines) before `identities`.
    pub fn write_config_with(&self, top: &str, routes: &str) -> PathBuf {
        let resolve = resolve_yaml(&self.authority, &[], &[]);
        let yaml = format!(
            r#"version: 1
listeners:
  - address: 127.0.0.1:0
network:
  resolve:
{resolve}  extra_ca_files: [ca.pem]
{top}identities:
  app:
    kind: confidential_client
    tenant_id: {TENANT}
    client_id: {app}
    certificate: {{ cert_file: app.pem, key_file: app.key }}
  app-west:
    kind: confidential_client
    tenant_id: {TENANT}
    client_id: {app}
    region: westus3
    certificate: {{ cert_file: app.pem, key_file: app.key }}
routes:
{routes}"#,
            app = self.app_client_id,
        );
        let path = self.config_path();
        // Written whole and renamed into place, as editors and ConfigMaps do, so the poller never
        // sees half a file.
        let tmp = self.dir.path().join("routes.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    /// Token-endpoint requests the authority answered so far.
    pub fn token_requests(&self) -> usize {
        self.authority.observations().count(Endpoint::Token)
    }
}

/// A graph route on `app` matching `path_prefix` (or every path when `None`), with extra keys.
pub fn route(name: &str, path_prefix: Option<&str>, identity: &str, extra: &str) -> String {
    let prefix = path_prefix.map_or(String::new(), |p| format!(", path_prefix: {p}"));
    format!(
        "  - name: {name}\n    match: {{ host: graph.microsoft.com{prefix} }}\n    resource: https://graph.microsoft.com\n    flow: vanilla\n    identity: {identity}\n{extra}"
    )
}

/// The JSON log line's `fields`.
pub fn fields(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("fields").cloned())
}

/// The running binary; killed (by its own pid) if the test ends early.
pub struct Popgate {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    pub log: Vec<String>,
}

impl Drop for Popgate {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Popgate {
    pub fn start(config: &std::path::Path) -> Popgate {
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
        Popgate {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Reads log lines until one's fields satisfy `want`; returns those fields. Blocking.
    pub fn wait_for(
        &mut self,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PROCESS_BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "popgate never logged {what}; log so far:\n{}",
                    self.log.join("\n")
                )
            });
            self.log.push(line.clone());
            if let Some(f) = fields(&line).filter(|f| want(f)) {
                return f;
            }
        }
    }

    /// Waits for `serving`; returns the listener address. Blocking.
    pub fn wait_serving(&mut self) -> SocketAddr {
        let listening = self.wait_for("listening", |f| f["message"] == "listening");
        let addr = listening["addr"].as_str().unwrap().parse().unwrap();
        self.wait_for("serving", |f| f["message"] == "serving");
        addr
    }

    /// Sends `signal` (`HUP`, `TERM`, `INT`) to the child by its pid.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// After the process exited: reads the rest of its log (bounded). Blocking.
    pub fn read_rest(&mut self) {
        let deadline = Instant::now() + PROCESS_BOUND;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.log.push(line);
        }
    }

    /// Waits (bounded) for the process to exit. Blocking.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PROCESS_BOUND;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "popgate did not exit");
            // Process exit has no in-process signal to await; poll gently.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A keep-alive HTTP/1.1 connection to popgate.
pub async fn connect(proxy: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    dial(proxy).await
}

/// `GET http://graph.microsoft.com{path}` (absolute form) on `sender`: status and body.
pub async fn get_on(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
) -> Result<(u16, String), String> {
    let request = http::Request::builder()
        .uri(format!("http://graph.microsoft.com{path}"))
        .header("host", "graph.microsoft.com")
        .body(Empty::new())
        .unwrap();
    let answer = tokio::time::timeout(REQUEST_BOUND, send_on(sender, request))
        .await
        .map_err(|_| "request exceeded its bound".to_string())??;
    Ok((answer.status, answer.body))
}

/// One request on a fresh connection.
pub async fn get(proxy: SocketAddr, path: &str) -> (u16, String) {
    let mut sender = connect(proxy).await.unwrap();
    get_on(&mut sender, path).await.unwrap()
}
