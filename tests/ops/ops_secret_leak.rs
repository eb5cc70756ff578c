//! The real binary runs every flow (certificate app PoP and Bearer, managed identity PoP and
//! Bearer, FIC with either leg 1) with JSON logs at debug level and the access log on; everything
//! it writes on stdout and stderr, plus what `/metrics` and `/readyz` answer, is searched for
//! every token the authority issued, every client assertion it received, the certificate app's
//! private key (PEM lines, base64 DER) and the callers' query strings. None may appear.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kit::admin::*;
use crate::kit::process::{Child, fields};
use base64::Engine as _;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject as _;

/// Bound on the binary starting to serve, and on its exit after SIGTERM.
const PROCESS_BOUND: Duration = Duration::from_secs(90);

/// The running binary, stdout and stderr captured; killed if the test ends early.
struct Popgate {
    child: Child,
}

impl Popgate {
    fn start(config: &std::path::Path) -> Popgate {
        let mut command = Command::new(env!("CARGO_BIN_EXE_popgate"));
        command
            .args([
                "run",
                "--log-format",
                "json",
                "--log-level",
                "debug",
                "--access-log",
                "--config",
            ])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("POPGATE_LOG")
            .env_remove("IDENTITY_ENDPOINT")
            .env_remove("IDENTITY_HEADER");
        Popgate {
            child: Child::spawn(command, true),
        }
    }

    /// Reads stdout until `serving`; returns the proxy and admin addresses.
    fn wait_serving(&self) -> (SocketAddr, SocketAddr) {
        let deadline = Instant::now() + PROCESS_BOUND;
        let mut proxy = None;
        loop {
            let line = self.child.next_line(deadline).unwrap_or_else(|| {
                panic!(
                    "popgate never served; output:\n{}",
                    self.child.output().join("\n")
                )
            });
            let Some(f) = fields(&line) else { continue };
            if f["message"] == "listening" {
                proxy = f["addr"].as_str().and_then(|a| a.parse().ok());
            }
            if f["message"] == "serving" {
                let admin = f["admin"].as_str().and_then(|a| a.parse().ok());
                return (
                    proxy.expect("a listening line before serving"),
                    admin.expect("the serving line names the admin address"),
                );
            }
        }
    }

    /// SIGTERM, wait for the exit, then wait for both pipes to close; returns all output.
    fn terminate(mut self) -> Vec<String> {
        self.child.signal("TERM");
        let status = self.child.wait_exit(PROCESS_BOUND);
        assert!(status.success(), "popgate exited with {status}");
        self.child.finish()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_assertion_key_or_query_appears_in_any_output() {
    let env = crate::kit::admin::start_env().await;
    env.authority.record_issued_tokens();
    let flows = all_flows();
    let config = write_config(&env, &routes_yaml(&flows, &[]));
    let popgate = Popgate::start(&config);
    let (proxy, admin) = tokio::task::block_in_place(|| popgate.wait_serving());

    let query_secret = uuid::Uuid::new_v4().simple().to_string();
    for (name, _, _) in &flows {
        let target = format!("/{name}/v1.0/me?code={query_secret}");
        let answer = request(proxy, "GET", "legacy.app", &target).await;
        assert_eq!(
            answer.status,
            expected_status(name),
            "{name}: {}",
            answer.body
        );
    }
    let metrics = admin_get(admin, "/metrics").await;
    let ready = admin_get(admin, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let output = tokio::task::block_in_place(|| popgate.terminate());

    let mut haystack = output.join("\n");
    haystack.push_str(&metrics.body);
    haystack.push_str(&ready.body);

    // The test must be able to fail: it saw the events it greps around.
    let access: Vec<serde_json::Value> = output
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "popgate::access")
        .collect();
    assert_eq!(access.len(), flows.len(), "one access event per request");
    for event in &access {
        let f = event;
        let route = f["route"].as_str().unwrap_or_default();
        assert_eq!(f["status"], expected_status(route), "{event}");
        if expected_status(route) == 200 {
            assert_eq!(f["upstream_status"], 200, "{event}");
        }
        assert_eq!(f["method"], "GET", "{event}");
        assert!(f["duration_ms"].as_f64().is_some(), "{event}");
    }
    let published = output
        .iter()
        .filter(|l| fields(l).is_some_and(|f| f["message"] == "route token published"))
        .count();
    assert!(published >= flows.len(), "{published} publish events");

    let signatures = env.authority.issued_token_signatures();
    // Six final tokens, two leg-1 tokens, one certificate-app Bearer assertion at least.
    assert!(signatures.len() >= 9, "{} recorded", signatures.len());
    for (i, signature) in signatures.iter().enumerate() {
        assert!(signature.len() > 40, "signature {i} too short to be unique");
        assert!(
            !haystack.contains(signature.as_str()),
            "issued token / client assertion {i} appears in popgate's output"
        );
    }

    let key_pem = std::fs::read_to_string(env.path("app.key")).unwrap();
    for line in key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
    {
        assert!(
            !haystack.contains(line),
            "a line of the private key PEM appears"
        );
    }
    let key_der = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let der = key_der.secret_der();
    for encoded in [
        base64::engine::general_purpose::STANDARD.encode(der),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(der),
    ] {
        // Any 48-character window of the encoded key would do; check a few across it.
        for start in (0..encoded.len().saturating_sub(48)).step_by(97) {
            assert!(
                !haystack.contains(&encoded[start..start + 48]),
                "base64 of the private key DER appears"
            );
        }
    }
    assert!(
        !haystack.contains(&query_secret),
        "a caller's query string appears"
    );
}
