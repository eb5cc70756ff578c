//! `popgate dev --once`, the real binary: on the shipped routes.yaml every route is served by the
//! local authority (one OK row each, PoP rows with a verified binding); a route the authority
//! cannot serve gives a failed row with its cause and exit 1; a taken listener is named.

use std::io::Write as _;

use crate::kit::dev::*;
use crate::kit::process::stdout_of_success;

#[test]
fn shipped_routes_all_ok_with_bindings_verified() {
    let config = repo_root().join("routes.yaml");
    let out = run_dev_once_free_port(&config);
    let stdout = stdout_of_success(&out);
    let addr = listening_addr(&stdout).expect("bound address printed");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let cfg = popgate::config::load(&config).expect("shipped config loads");
    let rows = rows(&stdout);
    let names: Vec<&str> = rows.iter().map(|r| r.route.as_str()).collect();
    let expected: Vec<&str> = cfg.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, expected, "a row per route, in config order");
    for (row, route) in rows.iter().zip(&cfg.routes) {
        assert_eq!(row.result, "OK", "{row:?}");
        assert_eq!(row.status, "200", "{row:?}");
        assert!(row.latency_ms.parse::<u64>().is_ok(), "{row:?}");
        match route.token_type {
            popgate::identity::token::TokenType::MtlsPop => {
                assert_eq!(
                    (row.token_type.as_str(), row.binding.as_str()),
                    ("mtls_pop", "yes")
                )
            }
            popgate::identity::token::TokenType::Bearer => assert_eq!(
                (row.token_type.as_str(), row.binding.as_str()),
                ("bearer", "n/a (bearer)")
            ),
        }
    }
    // Every flow and identity kind the shipped config promises is in the table.
    for kind in [
        "SAMI",
        "UAMI (client_id)",
        "UAMI (resource_id)",
        "UAMI (object_id)",
        "certificate app",
        "workload identity",
        "static",
    ] {
        assert!(rows.iter().any(|r| r.identity.starts_with(kind)), "{kind}");
    }
    assert!(rows.iter().any(|r| r.flow == "fic"));
    assert!(rows.iter().any(|r| r.flow == "vanilla"));
    assert!(stdout.contains(&format!("{} of {} routes OK", rows.len(), rows.len())));
}

fn write_config(dir: &tempfile::TempDir, routes: &str) -> std::path::PathBuf {
    let dev = repo_root().join("examples/dev");
    let yaml = format!(
        r#"version: 1
listeners:
  - address: 127.0.0.1:3128
identities:
  app:
    kind: confidential_client
    tenant_id: 751a212b-4003-416e-b600-e1f48e40db9f
    client_id: d3adb33f-c0de-ed0c-c0de-deadb33fc0d3
    certificate: {{ cert_file: {cert}, key_file: {key} }}
    region: westus3
    allow_insecure_key_permissions: true # the demo key is checked out 0644
routes:
{routes}"#,
        cert = dev.join("app.pem").display(),
        key = dev.join("app.key").display(),
    );
    let path = dir.path().join("routes.yaml");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(yaml.as_bytes()))
        .unwrap();
    path
}

#[test]
fn a_route_the_authority_cannot_serve_fails_its_row_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    // ARM's host answers as ARM: a Graph-audience token is refused there, as Azure would.
    let config = write_config(
        &dir,
        r#"  - name: graph-ok
    match: { host: graph.microsoft.com }
    resource: https://graph.microsoft.com
    flow: vanilla
    identity: app
  - name: wrong-audience
    match: { host: management.azure.com }
    resource: https://graph.microsoft.com
    flow: vanilla
    identity: app
"#,
    );
    let out = run_dev_once_free_port(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = rows(&stdout);
    assert_eq!(rows.len(), 2, "{stdout}");
    assert_eq!(rows[0].result, "OK", "{:?}", rows[0]);
    let bad = &rows[1];
    assert_eq!(bad.route, "wrong-audience");
    assert_eq!(bad.status, "401", "{bad:?}");
    assert!(bad.result.starts_with("FAIL: "), "{bad:?}");
    assert!(bad.result.contains("invalid_token"), "{bad:?}");
    assert!(
        bad.result
            .contains("the token's audience is not https://management.azure.com"),
        "{bad:?}"
    );
    assert!(stdout.contains("1 of 2 routes OK"), "{stdout}");
}

#[test]
fn a_taken_listener_is_named_with_the_override_hint() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let config = repo_root().join("routes.yaml");
    let out = run_dev_once(&config, &["--listen", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(stderr.contains("--listen 127.0.0.1:0"), "{stderr}");
    drop(taken);
}

#[test]
fn the_app_service_environment_is_refused_by_name() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_popgate"))
        .current_dir(repo_root())
        .args(["dev", "--once", "--listen", "127.0.0.1:0"])
        .env("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("popgate dev: IDENTITY_ENDPOINT is set: managed identities would use App Service, Service Fabric, Azure Arc, Cloud Shell or Azure ML instead of the local authority's IMDS; unset IDENTITY_ENDPOINT, IDENTITY_HEADER, IDENTITY_SERVER_THUMBPRINT, IMDS_ENDPOINT, MSI_ENDPOINT, MSI_SECRET, DEFAULT_IDENTITY_CLIENT_ID for popgate dev"),
        "{stderr}"
    );
}

#[test]
fn a_config_with_only_tls_listeners_asks_for_listen() {
    let dir = tempfile::tempdir().unwrap();
    let dev = repo_root().join("examples/dev");
    let config = write_config(
        &dir,
        r#"  - name: graph
    match: { host: graph.microsoft.com }
    resource: https://graph.microsoft.com
    flow: vanilla
    identity: app
"#,
    );
    // Swap the plain listener for a TLS one (its key private, as popgate requires).
    let key = dir.path().join("bound.key");
    std::fs::copy(dev.join("bound.key"), &key).unwrap();
    crate::kit::private_key_mode(&key);
    let yaml = std::fs::read_to_string(&config).unwrap().replace(
        "  - address: 127.0.0.1:3128\n",
        &format!(
            "  - address: 127.0.0.1:0\n    tls: {{ cert_file: {}, key_file: {} }}\n",
            dev.join("bound.pem").display(),
            key.display()
        ),
    );
    std::fs::write(&config, yaml).unwrap();
    let out = run_dev_once(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("popgate dev sends its requests through a plain-HTTP listener and the config has only TLS ones: add --listen 127.0.0.1:0"),
        "{stderr}"
    );
}
