//! Helpers for the reload and drain tests: the local authority with a certificate app, a
//! routes.yaml written for it, the real `popgate run` binary with its JSON log read line by line,
//! and keep-alive HTTP/1 clients. Only loopback addresses are used.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
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

/// A JSON log line's event: its fields are flat, beside `timestamp`, `level`, `target` and
/// `message` (`None` for a line that is not a JSON object).
pub fn fields(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .filter(serde_json::Value::is_object)
}

/// A child process whose stdout lines arrive on a channel (read for its whole life, so its
/// logging never blocks on a full pipe) and whose captured output is kept; killed (by its own pid)
/// if the test ends early.
pub struct Child {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    output: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies every line of `from` into `output` (and to `tx` when given) until the pipe closes.
fn copy_lines(
    from: impl Read + Send + 'static,
    output: Arc<Mutex<Vec<String>>>,
    tx: Option<mpsc::Sender<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            output.lock().unwrap().push(line.clone());
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    })
}

impl Child {
    /// Spawns `command` with stdout piped; stderr is captured too when `capture_stderr`, else
    /// inherited.
    pub fn spawn(mut command: Command, capture_stderr: bool) -> Child {
        let stderr = if capture_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        };
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let mut readers = vec![copy_lines(
            child.stdout.take().unwrap(),
            Arc::clone(&output),
            Some(tx),
        )];
        if let Some(stderr) = child.stderr.take() {
            readers.push(copy_lines(stderr, Arc::clone(&output), None));
        }
        Child {
            child,
            lines,
            output,
            readers,
        }
    }

    /// The next stdout line, waiting at most until `deadline`.
    pub fn next_line(&self, deadline: Instant) -> Option<String> {
        self.lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    }

    /// Everything captured so far (stdout, and stderr when captured), in arrival order.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
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

    /// Waits for the process to exit, failing the test after `bound`. Blocking.
    pub fn wait_exit(&mut self, bound: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "popgate did not exit");
            // Process exit has no in-process signal to await; poll gently.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// After the exit: waits for the pipes to close and returns everything captured.
    pub fn finish(&mut self) -> Vec<String> {
        for reader in std::mem::take(&mut self.readers) {
            reader.join().unwrap();
        }
        self.output()
    }
}

/// Runs `command` to completion with stdout and stderr captured; kills it (by its own pid) and
/// fails the test if it outlives `bound`.
pub fn output_within(mut command: Command, bound: Duration) -> Output {
    let what = format!("{:?}", command.get_args().collect::<Vec<_>>());
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("popgate binary runs");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(out) => out.expect("popgate output"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("popgate {what} did not finish within {bound:?}");
        }
    }
}

/// `popgate run --config {config}` with `RUST_LOG=info` (its JSON log on stdout).
pub fn run_command(config: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_popgate"));
    command
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info");
    command
}

/// The running `popgate run --config {config}` (JSON log at info on stdout, stderr inherited).
pub struct Popgate {
    child: Child,
    /// Every line read so far.
    pub log: Vec<String>,
}

impl Popgate {
    pub fn start(config: &std::path::Path) -> Popgate {
        Popgate {
            child: Child::spawn(run_command(config), false),
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
            let line = self.child.next_line(deadline).unwrap_or_else(|| {
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
        self.wait_serving_with_admin().0
    }

    /// Waits for `serving`; returns the listener address and the admin listener's address
    /// (`None` when the config has none). Blocking.
    pub fn wait_serving_with_admin(&mut self) -> (SocketAddr, Option<SocketAddr>) {
        let listening = self.wait_for("listening", |f| f["message"] == "listening");
        let addr = listening["addr"].as_str().unwrap().parse().unwrap();
        let serving = self.wait_for("serving", |f| f["message"] == "serving");
        let admin = serving["admin"].as_str().map(|a| {
            a.parse()
                .expect("serving names the admin address as host:port")
        });
        (addr, admin)
    }

    /// Sends `signal` (`HUP`, `TERM`, `INT`) to the child by its pid.
    pub fn signal(&self, signal: &str) {
        self.child.signal(signal);
    }

    /// Every line it printed so far, read or not.
    pub fn output(&self) -> Vec<String> {
        self.child.output()
    }

    /// After the process exited: reads the rest of its log (bounded). Blocking.
    pub fn read_rest(&mut self) {
        let deadline = Instant::now() + PROCESS_BOUND;
        while let Some(line) = self.child.next_line(deadline) {
            self.log.push(line);
        }
    }

    /// Waits (bounded) for the process to exit. Blocking.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait_exit(PROCESS_BOUND)
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

/// The stdout of a run that must have succeeded; panics with the exit status and both streams
/// otherwise.
pub fn stdout_of_success(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout.into_owned()
}

impl Popgate {
    /// The process id, for reading `/proc/PID/status`.
    pub fn pid(&self) -> u32 {
        self.child.child.id()
    }
}

/// `popgate run` with an admin listener on 127.0.0.2, `top` (more YAML lines, e.g. a `limits:`
/// block; may be empty) and one `graph` route on `app`: the process, the caller address and the
/// admin address, once it is serving.
pub async fn start_with_admin(env: &Env, top: &str) -> (Popgate, SocketAddr, SocketAddr) {
    let top = format!("admin:\n  address: 127.0.0.2:0\n{top}");
    let config = env.write_config_with(&top, &route("graph", None, "app", ""));
    let mut popgate = Popgate::start(&config);
    tokio::task::spawn_blocking(move || {
        let (proxy, admin) = popgate.wait_serving_with_admin();
        (
            popgate,
            proxy,
            admin.expect("serving names the admin address"),
        )
    })
    .await
    .unwrap()
}

/// The value of `series` (a metric name with its labels, as `/metrics` prints them) from the
/// admin listener at `admin`; panics when it is not there. Bounded as `raw_request` is.
pub async fn admin_counter(admin: SocketAddr, series: &str) -> f64 {
    let text = super::http::raw_request(admin, "GET", "admin", "/metrics")
        .await
        .body;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
}
