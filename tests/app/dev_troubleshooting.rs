//! docs/troubleshooting.md, row by row: each MSAL mistake or symptom produces exactly the popgate
//! message the table quotes. Config mistakes go through the real binary (`popgate check`); runtime
//! ones through the real engine, listener and 503 body against the local authority that
//! `popgate dev` sets up, with the authority's faults or a wrong id standing in for the mistake.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use popgate::app::App;
use popgate::config::Config;
use popgate::dev::local_authority::{self, LocalAuthority};
use popgate::dev::probe::{self, ProbeResult};
use popgate::dev::rewrite::point_at_authority;
use popgate_authority::{Endpoint, Fault};

use crate::kit::dev::repo_root;

const TENANT: &str = "751a212b-4003-416e-b600-e1f48e40db9f";
const APP_ID: &str = "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3";

fn cert_files(cert: &str, key: &str) -> String {
    let dev = repo_root().join("examples/dev");
    format!(
        "{{ cert_file: {}, key_file: {} }}",
        dev.join(cert).display(),
        dev.join(key).display()
    )
}

/// A config file with the given identities and routes.
fn write_config(dir: &tempfile::TempDir, identities: &str, routes: &str) -> PathBuf {
    let yaml = format!(
        "version: 1\nlisteners:\n  - address: 127.0.0.1:3128\nidentities:\n{identities}routes:\n{routes}"
    );
    let path = dir.path().join("routes.yaml");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(yaml.as_bytes()))
        .unwrap();
    path
}

fn app_identity() -> String {
    format!(
        // The demo key is checked out 0644 (git keeps no 0600).
        "  app:\n    kind: confidential_client\n    tenant_id: {TENANT}\n    client_id: {APP_ID}\n    certificate: {}\n    region: westus3\n    allow_insecure_key_permissions: true\n",
        cert_files("app.pem", "app.key")
    )
}

const SAMI: &str = "  sami: { kind: managed_identity }\n";
const EXCHANGE: &str = "  exchange:\n    kind: confidential_client\n    tenant_id: 751a212b-4003-416e-b600-e1f48e40db9f\n    client_id: 11111111-2222-3333-4444-555555555555\n";

fn vanilla(identity: &str, token_type: &str) -> String {
    format!(
        "  - name: r\n    match: {{ host: graph.microsoft.com }}\n    resource: https://graph.microsoft.com\n    flow: vanilla\n    identity: {identity}\n    token_type: {token_type}\n"
    )
}

/// `popgate check` on the file: (exit code, stderr).
fn check(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_popgate"))
        .args(["check", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts `popgate check` refuses with `FILE:LINE:COL: {message}`.
fn assert_config_error(identities: &str, routes: &str, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, identities, routes);
    let (code, stderr) = check(&path);
    assert_eq!(code, Some(2), "{stderr}");
    let prefix = format!("{}:", path.display());
    let line = stderr
        .lines()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("`{message}` not in:\n{stderr}"));
    let rest = line.strip_prefix(&prefix).expect("starts with the file");
    let mut parts = rest.splitn(3, ':');
    let (l, c) = (parts.next().unwrap(), parts.next().unwrap());
    assert!(
        l.parse::<u32>().is_ok() && c.parse::<u32>().is_ok(),
        "{line}"
    );
}

#[test]
fn msi_as_fic_leg_2_is_a_config_error() {
    assert_config_error(
        &format!("{SAMI}{}", app_identity()),
        "  - name: r\n    match: { host: graph.microsoft.com }\n    resource: https://graph.microsoft.com\n    flow: fic\n    leg1: app\n    leg2: sami\n",
        "managed identities have no client-assertion API: FIC leg 2 must be a confidential client",
    );
}

#[test]
fn legs_on_a_vanilla_route_are_a_config_error() {
    assert_config_error(
        &format!("{SAMI}{EXCHANGE}"),
        "  - name: r\n    match: { host: graph.microsoft.com }\n    resource: https://graph.microsoft.com\n    flow: vanilla\n    identity: sami\n    leg1: sami\n",
        "`leg1` is only for flow: fic",
    );
}

#[test]
fn two_uami_selectors_are_a_config_error() {
    assert_config_error(
        "  u: { kind: managed_identity, client_id: 6325cd32-9911-41f3-819c-416cdf9104e7, object_id: ecb2ad92-3e30-4505-b79f-ac640d069f24 }\n",
        &vanilla("u", "bearer"),
        "a managed identity takes at most one of client_id, resource_id, object_id",
    );
}

#[test]
fn static_pop_token_without_certificate_is_a_config_error() {
    let token = repo_root().join("examples/dev/token.jwt");
    assert_config_error(
        &format!(
            "  byo: {{ kind: static, token_file: {} }}\n",
            token.display()
        ),
        &vanilla("byo", "mtls_pop"),
        "static identity `byo` needs `certificate` (the certificate its token is bound to)",
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_a_config_error() {
    assert_config_error(
        &format!(
            "  app:\n    kind: confidential_client\n    tenant_id: {TENANT}\n    client_id: {APP_ID}\n    certificate: {}\n",
            cert_files("app.pem", "bound.key")
        ),
        &vanilla("app", "mtls_pop"),
        "/examples/dev/bound.key` does not match the certificate in `",
    );
}

#[test]
fn a_certificate_less_app_as_vanilla_identity_is_a_config_error() {
    assert_config_error(
        EXCHANGE,
        &vanilla("exchange", "mtls_pop"),
        "identity `exchange` is a confidential client without a certificate, so it cannot be",
    );
}

/// Sets up the local authority for the config at `path` exactly as `popgate dev` does, lets
/// `tweak` plant the mistake, runs popgate and probes every route.
async fn run_with(
    path: &Path,
    tweak: impl FnOnce(&mut Config, &LocalAuthority),
) -> Vec<ProbeResult> {
    let mut config = popgate::config::load(path).expect("config loads");
    let local = local_authority::start(&config).await.unwrap();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    point_at_authority(&mut config, &local, Some(listen)).unwrap();
    tweak(&mut config, &local);
    let app = App::start(config.clone()).await.unwrap();
    let listener = app.local_addrs()[0];
    app.initial_round(popgate::dev::READY_WAIT).await;
    let mut results = Vec::new();
    for route in &config.routes {
        results.push(probe::probe(listener, &config, route).await);
    }
    app.shutdown().await;
    results
}

fn one_failure(results: Vec<ProbeResult>) -> (Option<u16>, String) {
    assert_eq!(results.len(), 1);
    let r = results.into_iter().next().unwrap();
    let problem = r.problem.expect("the row fails");
    // Shown with --nocapture: the exact text docs/troubleshooting.md quotes.
    eprintln!("{}: {problem}", r.route);
    (r.status, problem)
}

/// Runs a config of `identities` and one route, `routes`, with `tweak` (see `run_with`); asserts
/// the route fails with a 503 and returns the cause.
async fn cause_of_503(
    identities: &str,
    routes: &str,
    tweak: impl FnOnce(&mut Config, &LocalAuthority),
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, identities, routes);
    let (status, cause) = one_failure(run_with(&path, tweak).await);
    assert_eq!(status, Some(503), "{cause}");
    cause
}

/// A `tweak` for `run_with`: `endpoint` answers every attempt (first try, retries, the
/// re-acquisition on a probe) with `fault`.
fn always(endpoint: Endpoint, fault: Fault) -> impl FnOnce(&mut Config, &LocalAuthority) {
    move |_, local| local.authority.faults().push(endpoint, fault, 50)
}

/// An HTTP `code` answer with `body` and no Retry-After.
fn status(code: u16, body: Option<String>) -> Fault {
    Fault::Status {
        code,
        retry_after: None,
        body,
    }
}

fn ests_body(error: &str, code: u32, description: &str) -> String {
    serde_json::json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description}"),
        "error_codes": [code],
        "timestamp": "2026-01-01 00:00:00Z",
        "trace_id": "00000000-0000-0000-0000-000000000001",
        "correlation_id": "00000000-0000-0000-0000-00000000c0de",
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_client_id_is_aadsts700016_in_the_503() {
    let cause = cause_of_503(&app_identity(), &vanilla("app", "mtls_pop"), |config, _| {
        // A typo'd client id: the app registered is not the one asked for.
        if let Some(popgate::config::model::Identity::ConfidentialClient(cc)) =
            config.identities.get_mut("app")
        {
            cc.client_id = "0badc0de-0000-4000-8000-000000000000".into();
        }
    })
    .await;
    assert!(cause.starts_with("no_token: "), "{cause}");
    assert!(
        cause.contains("token endpoint westus3.mtlsauth.microsoft.com refused: unauthorized_client AADSTS700016 (HTTP 400, correlation id "),
        "{cause}"
    );
    assert!(
        cause.contains("AADSTS700016: Application with identifier '0badc0de-0000-4000-8000-000000000000' was not found in the directory"),
        "{cause}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_endpoint_refusals_are_quoted_with_code_and_correlation_id() {
    for (error, code, status_code) in [
        ("invalid_client", 7000218u32, 400u16),
        ("invalid_client", 500181, 401),
    ] {
        // Every attempt (first try, retries, the re-acquisition on a probe) is refused.
        let refusal = status(
            status_code,
            Some(ests_body(error, code, "refused for the test.")),
        );
        let cause = cause_of_503(
            &app_identity(),
            &vanilla("app", "mtls_pop"),
            always(Endpoint::Token, refusal),
        )
        .await;
        let expected = format!(
            "no_token: token endpoint westus3.mtlsauth.microsoft.com refused: {error} AADSTS{code} (HTTP {status_code}, correlation id 00000000-0000-0000-0000-00000000c0de): AADSTS{code}: refused for the test."
        );
        assert_eq!(cause, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_answer_to_a_pop_request_is_refused_never_downgraded() {
    let bearer =
        r#"{"token_type":"Bearer","access_token":"a.b.c","expires_in":3599,"ext_expires_in":3599}"#;
    let cause = cause_of_503(
        &app_identity(),
        &vanilla("app", "mtls_pop"),
        always(Endpoint::Token, status(200, Some(bearer.into()))),
    )
    .await;
    assert_eq!(
        cause,
        "no_token: token endpoint westus3.mtlsauth.microsoft.com: token endpoint response: field `token_type` is \"Bearer\" but \"mtls_pop\" was requested"
    );
    assert!(!cause.contains("a.b.c"), "the token leaked: {cause}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imds_demanding_attestation_is_quoted_with_the_hint() {
    let cause = cause_of_503(
        SAMI,
        &vanilla("sami", "mtls_pop"),
        always(Endpoint::ImdsIssueCredential, Fault::AttestationRequired),
    )
    .await;
    assert!(
        cause.starts_with("no_token: IMDS http://127.0.0.1:"),
        "{cause}"
    );
    assert!(
        cause.ends_with(" refused: invalid_request (HTTP 400): Attestation Token is missing / empty in the issue credential request [hint: this IMDS requires a key attestation token (Windows Credential Guard / MAA), which popgate's software key cannot provide; use an attestation-token hook, IMDS v1 Bearer, or a certificate app]"),
        "{cause}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_imdsv2_is_named_and_pop_never_falls_back_to_bearer() {
    let cause = cause_of_503(
        SAMI,
        &vanilla("sami", "mtls_pop"),
        always(Endpoint::ImdsPlatformMetadata, status(404, None)),
    )
    .await;
    assert!(
        cause.ends_with(" refused: mtls_pop_token_not_supported_in_imds_v1 (HTTP 404): mTLS Proof of Possession with managed identity is currently in private preview and is not supported on this VM. Ensure you're running on a supported VM image. [IMDS has no getplatformmetadata endpoint (IMDS v1 only); popgate never falls back to Bearer]"),
        "{cause}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_imds_is_a_503_naming_it() {
    // A loopback port nobody listens on: a laptop has no 169.254.169.254.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cause = cause_of_503(SAMI, &vanilla("sami", "bearer"), |config, _| {
        config.network.imds_endpoint = format!("http://{closed}").parse().unwrap();
    })
    .await;
    assert!(
        cause.starts_with(&format!("no_token: IMDS: cannot connect to {closed}: ")),
        "{cause}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_uami_is_imds_refusal_in_the_503() {
    let u = "  u: { kind: managed_identity, client_id: 6325cd32-9911-41f3-819c-416cdf9104e7 }\n";
    let cause = cause_of_503(u, &vanilla("u", "bearer"), |config, _| {
        // An id of the wrong type or a UAMI not assigned to this VM.
        if let Some(popgate::config::model::Identity::ManagedIdentity(mi)) =
            config.identities.get_mut("u")
        {
            mi.selector = Some(popgate::config::model::UamiSelector::ClientId(
                "0badc0de-0000-4000-8000-000000000000".into(),
            ));
        }
    })
    .await;
    assert!(cause.starts_with("no_token: "), "{cause}");
    assert!(
        cause.contains(" refused: invalid_request (HTTP 400, correlation id "),
        "{cause}"
    );
    assert!(
        cause.ends_with("Identity not found: no user-assigned identity with client_id '0badc0de-0000-4000-8000-000000000000' is attached to this VM"),
        "{cause}"
    );
    assert!(
        cause.contains("0badc0de-0000-4000-8000-000000000000"),
        "{cause}"
    );
}
