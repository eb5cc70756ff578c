//! `popgate check` through the real binary: the shipped routes.yaml passes with one line per
//! route; a managed identity as FIC leg 2 fails with exit 2 and `FILE:LINE:COL:` on stderr.

use std::path::Path;
use std::process::{Command, Output};

fn popgate(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_popgate"))
        .args(args)
        .current_dir(cwd)
        // Keep the developer's environment from changing the IMDS endpoint under test.
        .env_remove("AZURE_POD_IDENTITY_AUTHORITY_HOST")
        // ... and from putting an outbound proxy in force.
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
        .expect("run popgate")
}

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/routes.yaml");

#[test]
fn shipped_routes_yaml_passes_with_one_line_per_route() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = popgate(&["check", "--config", SHIPPED], dir);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(stderr, "");

    let cfg = popgate::config::load(Path::new(SHIPPED)).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), cfg.routes.len());
    for (line, route) in lines.iter().zip(&cfg.routes) {
        assert!(line.starts_with(&format!("{}\t", route.name)), "{line}");
        for field in [
            "flow=",
            "identities=",
            "token=",
            "token_hosts=",
            "upstream=",
        ] {
            assert!(line.contains(field), "{line} lacks {field}");
        }
    }
    // Spot-check the token hosts the issue asks for.
    let graph = lines.iter().find(|l| l.starts_with("graph\t")).unwrap();
    assert!(graph.contains("flow=vanilla"), "{graph}");
    assert!(
        graph.contains("identities=app(confidential_client)"),
        "{graph}"
    );
    assert!(graph.contains("token=mtls_pop"), "{graph}");
    assert!(
        graph.contains("token_hosts=westus3.mtlsauth.microsoft.com"),
        "{graph}"
    );
    let vault = lines.iter().find(|l| l.starts_with("vault\t")).unwrap();
    assert!(
        vault.contains(
            "token_hosts=leg1: IMDS http://169.254.169.254 (v2 → mtls_authentication_endpoint); leg2: mtlsauth.microsoft.com"
        ),
        "{vault}"
    );
    assert!(
        vault.contains("upstream=https://myvault.vault.azure.net/"),
        "{vault}"
    );
    let byo = lines
        .iter()
        .find(|l| l.starts_with("storage-static\t"))
        .unwrap();
    assert!(byo.contains("token_hosts=none (static)"), "{byo}");
}

#[test]
fn shipped_routes_yaml_covers_every_flow_and_identity_kind() {
    use popgate::config::{Flow, Identity};
    use popgate::identity::token::TokenType::{Bearer, MtlsPop};
    let cfg = popgate::config::load(Path::new(SHIPPED)).unwrap();
    let kind = |name: &str| cfg.identity(name).map(Identity::kind);
    let mut seen = std::collections::BTreeSet::new();
    for r in &cfg.routes {
        let key = match &r.flow {
            Flow::Vanilla { identity } => {
                format!("vanilla {:?} {identity} {:?}", kind(identity), r.token_type)
            }
            Flow::Fic {
                leg1,
                leg1_token_type,
                ..
            } => {
                format!(
                    "fic {:?} {leg1_token_type:?} {:?}",
                    kind(leg1),
                    r.token_type
                )
            }
        };
        seen.insert(key);
    }
    for id in ["app", "sami", "uami-c", "uami-r", "uami-o"] {
        for t in [MtlsPop, Bearer] {
            let want = format!("vanilla {:?} {id} {t:?}", kind(id));
            assert!(seen.contains(&want), "missing {want}: {seen:?}");
        }
    }
    for leg1 in ["sami", "app"] {
        for t in [MtlsPop, Bearer] {
            let want = format!("fic {:?} MtlsPop {t:?}", kind(leg1));
            assert!(seen.contains(&want), "missing {want}: {seen:?}");
        }
    }
    assert!(seen.iter().any(|s| s.contains("Some(Static)")), "{seen:?}");
    assert!(
        seen.iter().any(|s| s.contains("Some(WorkloadIdentity)")),
        "{seen:?}"
    );
    assert_eq!(cfg.listeners[0].address, "127.0.0.1:3128".parse().unwrap());
    assert_eq!(cfg.admin, Some("127.0.0.1:9901".parse().unwrap()));
}

#[test]
fn managed_identity_as_leg2_exits_2_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("routes.yaml"),
        "version: 1
listeners: [{address: \"127.0.0.1:3128\"}]
identities:
  sami: {kind: managed_identity}
  uami: {kind: managed_identity, client_id: 6325cd32-9911-41f3-819c-416cdf9104e7}
routes:
  - name: vault
    match: {path_prefix: /vault/}
    upstream: https://myvault.vault.azure.net
    resource: https://vault.azure.net
    flow: fic
    leg1: sami
    leg2: uami
",
    )
    .unwrap();
    // No --config: the default is routes.yaml in the working directory.
    let out = popgate(&["check"], dir.path());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert_eq!(out.stdout, b"");
    assert_eq!(
        stderr,
        "routes.yaml:13:11: managed identities have no client-assertion API: FIC leg 2 must be a confidential client\n"
    );
}

#[test]
fn every_error_goes_to_stderr_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "version: 2\nlisteners: []\nroutes: []\n").unwrap();
    let out = popgate(&["check", "--config", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let shown = path.display();
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "{shown}:1:10: unsupported config version 2: this popgate reads version 1\n{shown}:2:12: at least one listener is required\n{shown}:3:9: at least one route is required\n"
        )
    );
}

#[test]
fn missing_config_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = popgate(&["check", "--config", "nope.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "nope.yaml:1:1: cannot read config file: No such file or directory (os error 2)\n"
    );
}

#[test]
fn run_with_a_bad_config_exits_2_like_check() {
    // A running `popgate run` is covered by tests/run_binary.rs; here only its config failure.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = popgate(&["run", "--config", "/nonexistent/routes.yaml"], dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("/nonexistent/routes.yaml:1:1: "));
}

#[test]
fn usage_errors_exit_2() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = popgate(&["check", "--no-such-flag"], dir);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_prints_the_proxy_in_force_per_route_redacted_and_what_bypasses_it() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_popgate"))
        .args(["check", "--config", SHIPPED])
        .current_dir(dir)
        .env_remove("AZURE_POD_IDENTITY_AUTHORITY_HOST")
        .env_remove("https_proxy")
        .env_remove("no_proxy")
        .env("HTTPS_PROXY", "http://corp%5Cuser:s3cret@proxy.corp:3128")
        .env("NO_PROXY", ".vault.azure.net, 10.0.0.0/8")
        .output()
        .expect("run popgate");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        !stdout.contains("s3cret") && !stdout.contains("corp%5Cuser"),
        "{stdout}"
    );
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("no {name} line: {stdout}"))
            .to_string()
    };
    let graph = line("graph");
    assert!(
        graph.ends_with(
            "\tproxy=http://***@proxy.corp:3128 (environment variable HTTPS_PROXY): westus3.mtlsauth.microsoft.com via proxy, graph.microsoft.com via proxy; no_proxy=vault.azure.net,10.0.0.0/8"
        ),
        "{graph}"
    );
    let vault = line("vault");
    assert!(
        vault.contains("IMDS 169.254.169.254 direct (never proxied)"),
        "{vault}"
    );
    assert!(
        vault.contains("myvault.vault.azure.net direct (no_proxy vault.azure.net)"),
        "{vault}"
    );
    // Without a proxy every line says so.
    let plain = popgate(&["check", "--config", SHIPPED], dir);
    let plain = String::from_utf8(plain.stdout).unwrap();
    assert!(
        plain.lines().all(|l| l.ends_with("\tproxy=none")),
        "{plain}"
    );
}

#[test]
fn check_prints_each_managed_identity_source_and_whether_it_was_detected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("routes.yaml"),
        "version: 1
listeners: [{address: \"127.0.0.1:3128\"}]
identities:
  mi: {kind: managed_identity}
  vm: {kind: managed_identity, source: imds}
routes:
  - {name: arm, match: {host: a.example}, resource: https://management.azure.com, flow: vanilla, identity: mi, token_type: bearer}
  - {name: vm, match: {host: b.example}, resource: https://management.azure.com, flow: vanilla, identity: vm, token_type: mtls_pop}
",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_popgate"))
        .args(["check", "--config", "routes.yaml"])
        .current_dir(dir.path())
        .env_remove("AZURE_POD_IDENTITY_AUTHORITY_HOST")
        .env("IDENTITY_ENDPOINT", "http://127.0.0.1:41741/msi/token")
        .env("IDENTITY_HEADER", "not-shown")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("token_hosts=App Service http://127.0.0.1:41741/msi/token (managed identity source app_service, detected)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "token_hosts=IMDS http://169.254.169.254 (v2 → mtls_authentication_endpoint)"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("not-shown"), "{stdout}");
}
