//! CONNECT interception through the real binary (`popgate ca init`, then `popgate run` with
//! `intercept:` on its listener) against the local authority, which the config maps
//! graph.microsoft.com onto: curl (h1 and h2) and Python urllib reach the resource with the token
//! bound to the certificate presented; the leaf the client saw is for the CONNECT host and chains
//! to the CA; a request naming another host inside the tunnel gets 400; unrouted hosts, other
//! ports and denied callers get 403 before any handshake, with nothing forwarded and no token
//! requested; a silent tunnel and a stalled handshake are closed within the handshake deadline.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::kit::admin::admin_get;
use crate::kit::authority::resource_requests;
use crate::kit::dataplane::PARKED_WITHIN;
use crate::kit::process::{Env, Popgate, fields, route};

/// The listener's TLS handshake deadline in these tests (`limits.tls_handshake_timeout`).
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(1);
/// How much later than its deadline a close may be seen (the watchdog wakes at the deadline;
/// the rest is scheduling on a loaded 2-core machine). Well under the first-byte deadline (5 s):
/// a watchdog still sleeping on that phase's deadline fails the test.
const CLOSE_SLACK: Duration = Duration::from_millis(2500);
/// Bound on any one read in these tests.
const READ_BOUND: Duration = Duration::from_secs(30);

struct Setup {
    env: Env,
    popgate: Popgate,
    proxy: SocketAddr,
    ca: PathBuf,
}

/// `popgate ca init --out DIR`: the CA and key files, the key 0600; a second run refuses to
/// overwrite them.
pub(super) fn ca_init(dir: &Path) -> PathBuf {
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_popgate"))
            .args(["ca", "init", "--out"])
            .arg(dir)
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for hint in [
        "update-ca-certificates",
        "update-ca-trust",
        "keytool",
        ".NET",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
    ] {
        assert!(stdout.contains(hint), "no {hint} in:\n{stdout}");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let key = dir.join("popgate-ca.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key mode {mode:o}");
    let before = std::fs::read(&key).unwrap();
    let again = run();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the key was overwritten"
    );
    dir.join("popgate-ca.pem")
}

async fn setup() -> Setup {
    let env = Env::start().await;
    let ca_dir = env.dir.path().join("intercept");
    let ca = tokio::task::block_in_place(|| ca_init(&ca_dir));
    let guarded = "  - name: guarded\n    match: { host: denied.example }\n    resource: https://graph.microsoft.com\n    flow: vanilla\n    identity: app\n    allow: [{ cidr: 10.0.0.0/8 }]\n";
    let routes = format!("{}{guarded}", route("graph", None, "app", ""));
    let top = "admin:\n  address: 127.0.0.2:0\nlimits:\n  tls_handshake_timeout: 1s\n";
    let path = env.write_config_with(top, &routes);
    let yaml = std::fs::read_to_string(&path).unwrap().replacen(
        "  - address: 127.0.0.1:0\n",
        "  - address: 127.0.0.1:0\n    intercept: { ca_cert_file: intercept/popgate-ca.pem, ca_key_file: intercept/popgate-ca.key }\n",
        1,
    );
    std::fs::write(&path, yaml).unwrap();
    let mut popgate = Popgate::start(&path);
    let proxy = tokio::task::block_in_place(|| popgate.wait_serving());
    Setup {
        env,
        popgate,
        proxy,
        ca,
    }
}

/// The admin listener's address, from the log.
pub(super) fn admin_addr(popgate: &mut Popgate) -> SocketAddr {
    let logged = popgate
        .log
        .iter()
        .filter_map(|l| fields(l))
        .find(|f| f["message"] == "admin listening");
    let f = logged.unwrap_or_else(|| {
        popgate.wait_for("admin listening", |f| f["message"] == "admin listening")
    });
    f["addr"].as_str().unwrap().parse().unwrap()
}

/// The value of the series `name{labels}` (labels as Prometheus prints them) on `/metrics`.
pub(super) async fn metric(admin: SocketAddr, series: &str) -> f64 {
    let answer = admin_get(admin, "/metrics").await;
    assert_eq!(answer.status, 200);
    answer
        .body
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in:\n{}", answer.body))
}

/// What curl saw: exit success, the final status, the proxy's CONNECT status, the HTTP version
/// inside the tunnel, and the body.
struct Curl {
    ok: bool,
    status: u16,
    connect: u16,
    version: String,
    body: String,
}

fn curl(proxy: SocketAddr, ca: &Path, url: &str, extra: &[&str]) -> Curl {
    let out = Command::new("curl")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["-sS", "--max-time", "30", "--cacert"])
        .arg(ca)
        .arg("-x")
        .arg(format!("http://{proxy}"))
        .args(extra)
        .args(["-w", "\n%{http_code} %{http_connect} %{http_version}", url])
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut tail = tail.split_whitespace();
    let mut num = || tail.next().and_then(|t| t.parse().ok()).unwrap_or(0);
    let (status, connect) = (num(), num());
    Curl {
        ok: out.status.success(),
        status,
        connect,
        version: text.rsplit(' ').next().unwrap_or("").trim().to_string(),
        body: body.to_string(),
    }
}

/// The resource's echo says the token was bound to the certificate popgate presented.
pub(super) fn assert_bound(body: &str, path: &str) {
    let echo: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
    assert_eq!(echo["scheme"], "mtls_pop", "{echo}");
    assert!(echo["cnf_x5t"].is_string(), "{echo}");
    assert_eq!(echo["cnf_x5t"], echo["presented_x5t"], "{echo}");
    assert_eq!(echo["path"], path, "{echo}");
}

/// Sends `CONNECT target` on a new connection and reads the answer's head.
async fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    (s, String::from_utf8(head).unwrap())
}

pub(super) async fn read_all(s: &mut (impl AsyncRead + Unpin)) -> String {
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(READ_BOUND, s.read_to_end(&mut rest)).await;
    String::from_utf8_lossy(&rest).into_owned()
}

pub(super) fn tls_client(ca: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// Waits for the server to close `s`; how long that took.
async fn closed_after(mut s: TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(HANDSHAKE_DEADLINE + CLOSE_SLACK, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!(
                "the tunnel was still open {:?} after its start",
                since.elapsed()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_clients_reach_the_resource_through_an_intercepted_tunnel() {
    let Setup {
        env,
        mut popgate,
        proxy,
        ca,
    } = setup().await;
    let url = "https://graph.microsoft.com/v1.0/me";
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let c = tokio::task::block_in_place(|| curl(proxy, &ca, url, &[flag]));
        assert!(c.ok, "curl {flag}: {} {}", c.status, c.body);
        assert_eq!((c.connect, c.status), (200, 200), "{}", c.body);
        assert_eq!(c.version, version, "curl {flag}");
        assert_bound(&c.body, "/v1.0/me");
    }

    // Python's urllib, pointed at popgate by `https_proxy` and at the CA by its context.
    let script = "import os,ssl,urllib.request\n\
        ctx = ssl.create_default_context(cafile=os.environ['POPGATE_CA'])\n\
        r = urllib.request.urlopen('https://graph.microsoft.com/v1.0/me?via=python', context=ctx, timeout=30)\n\
        print(r.status)\nprint(r.read().decode())\n";
    let out = tokio::task::block_in_place(|| {
        Command::new("python3")
            .args(["-c", script])
            .env("https_proxy", format!("http://{proxy}"))
            .env("POPGATE_CA", &ca)
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .output()
            .expect("python3 is installed")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, body) = stdout.split_once('\n').unwrap();
    assert_eq!(status, "200");
    assert_bound(body.trim(), "/v1.0/me");

    // The leaf: for the CONNECT host, chaining to the CA (the handshake verifies both).
    let (s, head) = connect(proxy, "graph.microsoft.com:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let name = ServerName::try_from("graph.microsoft.com").unwrap();
    let mut tls = tls_client(&ca).connect(name, s).await.unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let sans: Vec<String> = parsed
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(sans, ["DNSName(graph.microsoft.com)"]);
    assert!(
        parsed
            .issuer()
            .to_string()
            .contains("popgate interception CA")
    );
    let lifetime =
        parsed.validity().not_after.timestamp() - parsed.validity().not_before.timestamp();
    assert!(lifetime <= 25 * 3600, "leaf lifetime {lifetime} s");

    // A ClientHello naming another host than the CONNECT gets no certificate at all.
    let (s2, head) = connect(proxy, "graph.microsoft.com:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let other = ServerName::try_from("denied.example").unwrap();
    assert!(tls_client(&ca).connect(other, s2).await.is_err());

    // Inside the tunnel, a request naming another host is refused, and nothing is forwarded.
    let forwarded = resource_requests(&env.authority).len();
    tls.write_all(b"GET /v1.0/me HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_all(&mut tls).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("differs from the host of its CONNECT tunnel"),
        "{answer}"
    );
    assert_eq!(resource_requests(&env.authority).len(), forwarded);

    popgate.signal("TERM");
    assert!(tokio::task::block_in_place(|| popgate.wait_exit()).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tunnels_forward_nothing_and_stalled_tunnels_are_closed_at_the_deadline() {
    let Setup {
        env,
        mut popgate,
        proxy,
        ca,
    } = setup().await;
    let tokens = env.token_requests();
    let forwarded = resource_requests(&env.authority).len();

    // An unrouted host: 403 to curl's CONNECT, which then fails.
    let c = tokio::task::block_in_place(|| curl(proxy, &ca, "https://evil.example/steal", &[]));
    assert!(!c.ok);
    assert_eq!(c.connect, 403);

    // An unrouted host, another port of a routed one, and a caller the only route of its host
    // does not admit: 403 JSON before any TLS (none is ever sent here), then closed.
    for (target, error) in [
        ("evil.example:443", "no_route"),
        ("graph.microsoft.com:8443", "no_route"),
        ("denied.example:443", "caller_not_allowed"),
    ] {
        let (mut s, head) = connect(proxy, target).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{target}: {head}");
        let body = read_all(&mut s).await;
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
        assert_eq!(json["error"], error, "{target}: {json}");
    }
    assert_eq!(
        env.token_requests(),
        tokens,
        "a refused CONNECT requested a token"
    );
    assert_eq!(
        resource_requests(&env.authority).len(),
        forwarded,
        "a refused CONNECT forwarded something"
    );

    // A tunnel that never starts TLS, and one that stalls inside its ClientHello.
    let (silent, head) = connect(proxy, "graph.microsoft.com:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let took = closed_after(silent, Instant::now()).await;
    assert!(
        took >= HANDSHAKE_DEADLINE / 2,
        "closed after {took:?}, before its deadline"
    );
    let (mut stalled, _) = connect(proxy, "graph.microsoft.com:443").await;
    let since = Instant::now();
    // A handshake record header announcing 512 bytes, then three of them.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
        .await
        .unwrap();
    let took = closed_after(stalled, since).await;
    assert!(
        took >= HANDSHAKE_DEADLINE / 2,
        "closed after {took:?}, before its deadline"
    );

    // The metrics count each refusal by reason, the two tunnels opened and their deadline closes.
    let admin = tokio::task::block_in_place(|| admin_addr(&mut popgate));
    let refused = "popgate_intercept_tunnels_refused_total";
    assert_eq!(
        metric(admin, &format!("{refused}{{reason=\"no_route\"}}")).await,
        3.0
    );
    assert_eq!(
        metric(admin, &format!("{refused}{{reason=\"not_allowed\"}}")).await,
        1.0
    );
    assert_eq!(
        metric(admin, "popgate_intercept_tunnels_opened_total").await,
        2.0
    );
    assert_eq!(
        metric(admin, "popgate_intercept_leaves_minted_total").await,
        1.0
    );
    let deadlines =
        "popgate_connection_deadlines_total{listener=\"caller\",phase=\"tls_handshake\"}";
    assert_eq!(metric(admin, deadlines).await, 2.0);

    popgate.signal("TERM");
    assert!(tokio::task::block_in_place(|| popgate.wait_exit()).success());
}

/// Reads a response head from `s` byte by byte (nothing past it), each read bounded.
async fn read_head(s: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(READ_BOUND, s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    head
}

/// Reads one answer with a `Content-Length` body from `s`: its status and body.
async fn answer(s: &mut (impl AsyncRead + Unpin)) -> (u16, String) {
    let head = String::from_utf8(read_head(s).await)
        .unwrap()
        .to_ascii_lowercase();
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap_or_else(|| panic!("no content-length in {head}"))
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0; len];
    tokio::time::timeout(READ_BOUND, s.read_exact(&mut body))
        .await
        .unwrap()
        .unwrap();
    (status, String::from_utf8(body).unwrap())
}

/// Parking applies inside an intercepted tunnel too: the tunnel's HTTP/1 connection, idle past
/// the grace, leaves hyper (counted once per idle spell, exactly: nothing else runs in this
/// process) and is served again on the same TLS connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_caller_inside_an_intercepted_tunnel_is_parked_and_served_again() {
    let Setup {
        env: _env,
        mut popgate,
        proxy,
        ca,
    } = setup().await;
    let admin = admin_addr(&mut popgate);
    let parked = || metric(admin, "popgate_connections_parked_total ");
    let before = parked().await;
    let (s, head) = connect(proxy, "graph.microsoft.com:443").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let name = ServerName::try_from("graph.microsoft.com").unwrap();
    let mut tls = tls_client(&ca).connect(name, s).await.unwrap();
    for round in 1..=2 {
        let path = format!("/v1.0/me?round={round}");
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: graph.microsoft.com\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let (status, body) = answer(&mut tls).await;
        assert_eq!(status, 200, "round {round}: {body}");
        assert_bound(&body, "/v1.0/me");
        let waited = tokio::time::Instant::now();
        while parked().await < before + f64::from(round) && waited.elapsed() < PARKED_WITHIN {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            parked().await,
            before + f64::from(round),
            "round {round}: the tunnel's connection was not parked once"
        );
    }
    popgate.signal("TERM");
    assert!(tokio::task::block_in_place(|| popgate.wait_exit()).success());
}
