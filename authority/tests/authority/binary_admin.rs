//! The standalone binary: starts, prints its endpoints, CA path and `--resolve` pairs, writes the
//! CA and demo credentials, and serves the admin API (apps, faults, settings, counts, log).

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use crate::kit::token::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Kills the child this test started (by its handle) however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and reads its banner up to the "serving" line.
async fn start_binary(state_dir: &std::path::Path) -> (Running, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_popgate-authority"))
        .arg("--state-dir")
        .arg(state_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let lines = tokio::time::timeout(
        REQUEST_TIMEOUT,
        tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            // Bounded: the banner is a few dozen lines.
            for line in std::io::BufReader::new(stdout).lines().take(200) {
                let line = line.unwrap();
                let done = line == "serving until Ctrl-C";
                lines.push(line);
                if done {
                    break;
                }
            }
            lines
        }),
    )
    .await
    .expect("the binary printed its banner in time")
    .unwrap();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("serving until Ctrl-C"),
        "{lines:#?}"
    );
    (running, lines)
}

fn field<'a>(lines: &'a [String], prefix: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' line in {lines:#?}"))
}

fn addr_of(url_line: &str) -> SocketAddr {
    let rest = url_line.split("://").nth(1).unwrap();
    rest.split([' ', '/']).next().unwrap().parse().unwrap()
}

async fn admin(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    })
    .await
    .unwrap()
}

fn cert_from_files(cert: &str, key: &str) -> ClientCert {
    ClientCert {
        chain: vec![CertificateDer::from_pem_file(cert).unwrap()],
        key: PrivateKeyDer::from_pem_file(key).unwrap(),
    }
}

async fn token(
    roots: &rustls::RootCertStore,
    addr: SocketAddr,
    cert: &ClientCert,
    client_id: &str,
) -> Answer {
    send_trusting(
        roots.clone(),
        Dial {
            addr,
            sni: Some(MTLS),
            cert: Some(cert),
            h2: false,
        },
        token_request(MTLS, TENANT, &pop_form(client_id, GRAPH_SCOPE)),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn binary_prints_endpoints_and_serves_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let (_running, lines) = start_binary(dir.path()).await;

    let token_addr = addr_of(field(&lines, "token endpoint: "));
    let admin_addr = addr_of(field(&lines, "admin: "));
    addr_of(field(&lines, "imds: "));
    addr_of(field(&lines, "resource: "));
    let ca_path = PathBuf::from(field(&lines, "ca: "));
    assert_eq!(ca_path, dir.path().join("ca.pem"));
    assert_eq!(field(&lines, "tenant: "), TENANT);
    let resolve: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("resolve: "))
        .collect();
    assert!(resolve.contains(&&format!(
        "resolve: {LOGIN}:443:127.0.0.1:{}",
        token_addr.port()
    )));
    assert!(
        resolve
            .iter()
            .any(|l| l.starts_with("resolve: graph.microsoft.com:443:127.0.0.1:"))
    );

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&ca_path).unwrap())
        .unwrap();

    // The demo app's written credentials get a token.
    let demo = field(&lines, "demo app: ");
    let part = |name: &str| {
        demo.split(' ')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_string()
    };
    let demo_cert = cert_from_files(&part("cert"), &part("key"));
    token(&roots, token_addr, &demo_cert, &part("client_id"))
        .await
        .token();

    // POST /apps registers a new app and writes its credential files (key private to the owner).
    let (status, app) = admin(
        admin_addr,
        "POST",
        "/apps",
        r#"{"common_name":"from-admin"}"#,
    )
    .await;
    assert_eq!(status, 200, "{app}");
    let key_path = app["key_path"].as_str().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(key_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let cert = cert_from_files(app["cert_path"].as_str().unwrap(), key_path);
    assert_eq!(cert.x5t(), app["x5t_s256"].as_str().unwrap());
    let client_id = app["client_id"].as_str().unwrap();
    token(&roots, token_addr, &cert, client_id).await.token();

    // POST /certificates: a second certificate on the same app (rotation); both get tokens.
    let (status, rotated) = admin(
        admin_addr,
        "POST",
        "/certificates",
        &format!(r#"{{"client_id":"{client_id}","common_name":"rotated"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_cert = cert_from_files(
        rotated["cert_path"].as_str().unwrap(),
        rotated["key_path"].as_str().unwrap(),
    );
    assert_eq!(new_cert.x5t(), rotated["x5t_s256"].as_str().unwrap());
    assert_ne!(new_cert.x5t(), cert.x5t());
    token(&roots, token_addr, &new_cert, client_id)
        .await
        .token();
    let (status, err) = admin(
        admin_addr,
        "POST",
        "/certificates",
        r#"{"client_id":"00000000-0000-0000-0000-000000000000"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("no app"), "{err}");

    // POST /resources: a new audience tokens can be issued for; unknown ones are refused.
    let bench_scope = "https://api.bench.test/.default";
    let bench_token = || async {
        send_trusting(
            roots.clone(),
            Dial {
                addr: token_addr,
                sni: Some(MTLS),
                cert: Some(&cert),
                h2: false,
            },
            token_request(MTLS, TENANT, &pop_form(client_id, bench_scope)),
        )
        .await
        .unwrap()
    };
    let unknown = bench_token().await;
    assert_eq!(unknown.status.as_u16(), 400);
    let (status, resource) = admin(
        admin_addr,
        "POST",
        "/resources",
        r#"{"audience":"https://api.bench.test","hosts":["api.bench.test"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{resource}");
    bench_token().await.token();
    for (body, needle) in [
        (r#"{"audience":"graph"}"#, "https://"),
        (
            r#"{"audience":"https://x.test","hosts":["a/b"]}"#,
            "not a host name",
        ),
        (
            r#"{"audience":"https://x.test","bearer":false,"mtls_pop":false}"#,
            "must accept",
        ),
        (
            r#"{"audience":"https://x.test","extra":1}"#,
            "unknown field",
        ),
    ] {
        let (status, err) = admin(admin_addr, "POST", "/resources", body).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            err["error"].as_str().unwrap().contains(needle),
            "{body}: {err}"
        );
    }

    // POST /faults: the next request is throttled.
    let (status, _) = admin(
        admin_addr,
        "POST",
        "/faults",
        r#"{"endpoint":"token","fault":{"kind":"status","code":429,"retry_after":7,"body":null},"times":1}"#,
    )
    .await;
    assert_eq!(status, 200);
    let throttled = token(&roots, token_addr, &cert, client_id).await;
    assert_eq!(throttled.status.as_u16(), 429);
    assert_eq!(throttled.headers["retry-after"], "7");

    // POST /settings changes what tokens look like.
    let (status, settings) = admin(
        admin_addr,
        "POST",
        "/settings",
        r#"{"lifetime_secs":120,"numbers_as_strings":true,"refresh_in_secs":60}"#,
    )
    .await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["lifetime_secs"], 120);
    let body = token(&roots, token_addr, &cert, client_id).await.json();
    assert_eq!(body["expires_in"], "120");
    assert_eq!(body["refresh_in"], "60");

    // Counts and log.
    let (_, counts) = admin(admin_addr, "GET", "/counts", "").await;
    assert_eq!(counts["token"], 7);
    let (_, log) = admin(admin_addr, "GET", "/log", "").await;
    let statuses: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![200, 200, 200, 400, 200, 429, 200]);

    // DELETE /faults clears a queued fault.
    admin(
        admin_addr,
        "POST",
        "/faults",
        r#"{"endpoint":"token","fault":{"kind":"drop"},"times":3}"#,
    )
    .await;
    let (status, _) = admin(admin_addr, "DELETE", "/faults", "").await;
    assert_eq!(status, 200);
    token(&roots, token_addr, &cert, client_id).await.token();

    // Bad admin input is a clear 4xx.
    let (status, err) = admin(
        admin_addr,
        "POST",
        "/faults",
        r#"{"endpoint":"nowhere","fault":{"kind":"drop"}}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("nowhere"), "{err}");
    let (status, err) = admin(admin_addr, "POST", "/faults", r#"{"endpoint":"token"}"#).await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().unwrap().contains("exactly one"),
        "{err}"
    );
    let (status, err) = admin(
        admin_addr,
        "POST",
        "/faults",
        r#"{"endpoint":"token","fault":{"kind":"status","code":1000}}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("not an HTTP status"),
        "{err}"
    );
    let (status, _) = admin(admin_addr, "POST", "/settings", "not json").await;
    assert_eq!(status, 400);
    let (status, _) = admin(admin_addr, "GET", "/nothing", "").await;
    assert_eq!(status, 404);
    let (status, _) = admin(admin_addr, "PUT", "/counts", "").await;
    assert_eq!(status, 405);
}

#[test]
fn binary_refuses_a_non_loopback_bind_and_a_bad_state_dir() {
    let out = Command::new(env!("CARGO_BIN_EXE_popgate-authority"))
        .args(["--bind", "0.0.0.0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a loopback address"));

    let file = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_popgate-authority"))
        .arg("--state-dir")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot create the state directory"));
}
