//! Every managed-identity source MSAL.NET knows, detected from the environment by the real config
//! loader and acquired by the real engine against the local authority's strict endpoint for it:
//! the exact request shape the authority recorded, the token the resource accepts, and the
//! refusals (Arc secret files outside the agent's directory, too large or not `.key`; a Service
//! Fabric certificate with another thumbprint; MSAL's retry tables).

use crate::kit::credentials::*;
use http::StatusCode;
use popgate::engine::build::EngineDeps;
use popgate::identity::azure_arc::ArcTokenDir;
use popgate::identity::token::TokenType;
use popgate_authority::AuthorityConfig;
use popgate_authority::imds::mi_sources::ArcSettings;
use std::sync::Arc;

const SAMI: &str = "\n  mi: { kind: managed_identity }\n";
const BEARER: &str = "    flow: vanilla\n    identity: mi\n    token_type: bearer";

fn uami(key: &str, value: &str) -> String {
    format!("\n  mi: {{ kind: managed_identity, {key}: {value} }}\n")
}

fn credential(
    env: &Env,
    identities: &str,
    vars: &[(&str, &str)],
    arc_dir: Option<&std::path::Path>,
) -> Arc<dyn popgate::engine::credential::Credential> {
    let config = env.config_with_env(identities, &routes(&[("r", ARM, BEARER)]), vars);
    let mut deps: EngineDeps = env.deps(&config);
    if let Some(dir) = arc_dir {
        deps.arc_token_dir = ArcTokenDir::for_dev(dir);
    }
    env.build(&config, &deps).remove("r").expect("route r")
}

/// The one request the authority logged for `endpoint`, as `METHOD path?query [header names]`.
fn shapes(env: &Env, endpoint: Endpoint) -> Vec<(u16, String)> {
    env.authority
        .observations()
        .log()
        .into_iter()
        .filter(|r| r.endpoint == endpoint)
        .map(|r| (r.status, r.request.unwrap_or_default()))
        .collect()
}

async fn token_accepted(env: &Env, credential: &Arc<dyn popgate::engine::credential::Credential>) {
    let got = get(credential).await;
    assert_eq!(got.token.token_type, TokenType::Bearer);
    assert!(got.token.binding.is_none());
    assert_eq!(
        env.call_resource("management.azure.com", &got.token).await,
        StatusCode::OK
    );
}

const ARM_Q: &str = "resource=https%3A%2F%2Fmanagement.azure.com";

#[tokio::test]
async fn app_service_by_its_secret_header() {
    let mut authority = AuthorityConfig::default();
    authority.imds.app_service_identity_header = Some("as-secret".into());
    let env = start_with(authority).await;
    let endpoint = format!("{}/msi/token", env.authority.imds_base_url());
    let vars = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "as-secret"),
    ];
    let cred = credential(
        &env,
        &uami("client_id", DEFAULT_UAMI_CLIENT_ID),
        &vars,
        None,
    );
    token_accepted(&env, &cred).await;
    assert_eq!(
        shapes(&env, Endpoint::AppService),
        vec![(
            200,
            format!(
                "GET /msi/token?api-version=2019-08-01&{ARM_Q}&client_id={DEFAULT_UAMI_CLIENT_ID} [host, x-identity-header]"
            )
        )]
    );
    assert_eq!(env.count(Endpoint::ImdsV1Token), 0);
}

#[tokio::test]
async fn app_service_with_a_wrong_secret_is_refused_by_the_authority() {
    let mut authority = AuthorityConfig::default();
    authority.imds.app_service_identity_header = Some("as-secret".into());
    let env = start_with(authority).await;
    let endpoint = format!("{}/msi/token", env.authority.imds_base_url());
    let vars = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "wrong"),
    ];
    let err = try_get(&credential(&env, SAMI, &vars, None))
        .await
        .unwrap_err();
    assert!(err.message.contains("App Service"), "{}", err.message);
    // 401 is not in MSAL's managed-identity retry table: one request.
    assert_eq!(env.count(Endpoint::AppService), 1);
}

#[tokio::test]
async fn app_service_follows_msals_retry_table() {
    let mut authority = AuthorityConfig::default();
    authority.imds.app_service_identity_header = Some("as-secret".into());
    let env = start_with(authority).await;
    let endpoint = format!("{}/msi/token", env.authority.imds_base_url());
    let vars = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "as-secret"),
    ];
    let status = |code| Fault::Status {
        code,
        retry_after: None,
        body: None,
    };
    // 404, 429, 503: retried (three retries at most), then the token.
    for code in [404, 429, 503] {
        env.authority
            .faults()
            .push(Endpoint::AppService, status(code), 1);
    }
    token_accepted(&env, &credential(&env, SAMI, &vars, None)).await;
    assert_eq!(env.count(Endpoint::AppService), 4);
    // Four failures: three retries, then the error (IMDS's 410 schedule would go on to eight).
    env.authority
        .faults()
        .push(Endpoint::AppService, status(500), 4);
    let other = credential(
        &env,
        &uami("object_id", DEFAULT_UAMI_OBJECT_ID),
        &vars,
        None,
    );
    assert!(try_get(&other).await.is_err());
    assert_eq!(env.count(Endpoint::AppService), 8);
    // 502 and 410 are not in the table (IMDS retries both): one request each.
    for code in [502, 410] {
        env.authority
            .faults()
            .push(Endpoint::AppService, status(code), 1);
        let c = credential(
            &env,
            &uami("client_id", DEFAULT_UAMI_CLIENT_ID),
            &vars,
            None,
        );
        let before = env.count(Endpoint::AppService);
        assert!(try_get(&c).await.is_err(), "{code}");
        assert_eq!(env.count(Endpoint::AppService), before + 1, "{code}");
    }
}

fn arc_config(dir: &std::path::Path, fixed: Option<std::path::PathBuf>) -> AuthorityConfig {
    let mut authority = AuthorityConfig::default();
    authority.imds.arc = Some(ArcSettings {
        dir: dir.to_path_buf(),
        fixed_challenge: fixed,
    });
    authority
}

fn arc_vars(env: &Env) -> [(&'static str, String); 2] {
    [
        (
            "IDENTITY_ENDPOINT",
            format!(
                "{}/arc/metadata/identity/oauth2/token",
                env.authority.imds_base_url()
            ),
        ),
        ("IMDS_ENDPOINT", env.authority.imds_base_url()),
    ]
}

#[tokio::test]
async fn azure_arc_answers_its_challenge_with_the_secret_file() {
    let tokens = tempfile::tempdir().unwrap();
    let env = start_with(arc_config(tokens.path(), None)).await;
    let vars = arc_vars(&env);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cred = credential(&env, SAMI, &vars, Some(tokens.path()));
    token_accepted(&env, &cred).await;
    let q = format!("/arc/metadata/identity/oauth2/token?api-version=2020-06-01&{ARM_Q}");
    assert_eq!(
        shapes(&env, Endpoint::AzureArc),
        vec![
            (401, format!("GET {q} [host, metadata]")),
            (200, format!("GET {q} [authorization, host, metadata]")),
        ]
    );
}

/// Arc names `file` in its challenge: popgate must refuse to read it.
async fn arc_refuses(file: &std::path::Path, allowed: &std::path::Path) {
    let env = start_with(arc_config(allowed, Some(file.to_path_buf()))).await;
    let vars = arc_vars(&env);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let err = try_get(&credential(&env, SAMI, &vars, Some(allowed)))
        .await
        .unwrap_err();
    assert!(
        err.message.contains(
            "managed_identity_request_failed: [Managed Identity] The file on the file path in the WWW-Authenticate header is not secure."
        ),
        "{}",
        err.message
    );
    // The challenge only: the secret never went back.
    assert_eq!(
        shapes(&env, Endpoint::AzureArc)
            .iter()
            .map(|s| s.0)
            .collect::<Vec<_>>(),
        vec![401]
    );
}

#[tokio::test]
async fn azure_arc_secret_file_outside_the_agent_directory_is_refused() {
    let allowed = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let file = elsewhere.path().join("stolen.key");
    std::fs::write(&file, "s3cret").unwrap();
    arc_refuses(&file, allowed.path()).await;
    // `..` out of the directory is refused too.
    let dotdot = allowed
        .path()
        .join("..")
        .join(elsewhere.path().file_name().unwrap())
        .join("stolen.key");
    arc_refuses(&dotdot, allowed.path()).await;
}

#[tokio::test]
async fn azure_arc_secret_file_too_large_is_refused() {
    let allowed = tempfile::tempdir().unwrap();
    let file = allowed.path().join("big.key");
    std::fs::write(&file, "a".repeat(4097)).unwrap();
    arc_refuses(&file, allowed.path()).await;
}

#[tokio::test]
async fn azure_arc_secret_file_with_another_extension_is_refused() {
    let allowed = tempfile::tempdir().unwrap();
    let file = allowed.path().join("secret.txt");
    std::fs::write(&file, "s3cret").unwrap();
    arc_refuses(&file, allowed.path()).await;
}

#[tokio::test]
async fn azure_arc_secret_file_of_exactly_4096_bytes_is_read() {
    let allowed = tempfile::tempdir().unwrap();
    let file = allowed.path().join("edge.key");
    std::fs::write(&file, "k".repeat(4096)).unwrap();
    let env = start_with(arc_config(allowed.path(), Some(file))).await;
    let vars = arc_vars(&env);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    token_accepted(&env, &credential(&env, SAMI, &vars, Some(allowed.path()))).await;
}

fn sf_config() -> AuthorityConfig {
    let mut authority = AuthorityConfig::default();
    authority.imds.service_fabric_secret = Some("sf-secret".into());
    authority
}

#[tokio::test]
async fn service_fabric_over_its_pinned_certificate() {
    let env = start_with(sf_config()).await;
    let (endpoint, thumbprint) = env.authority.service_fabric().unwrap();
    let vars = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "sf-secret"),
        ("IDENTITY_SERVER_THUMBPRINT", thumbprint.as_str()),
    ];
    let cred = credential(
        &env,
        &uami("object_id", DEFAULT_UAMI_OBJECT_ID),
        &vars,
        None,
    );
    token_accepted(&env, &cred).await;
    assert_eq!(
        shapes(&env, Endpoint::ServiceFabric),
        vec![(
            200,
            format!(
                "GET /metadata/identity/oauth2/token?api-version=2020-05-01&{ARM_Q}&principalId={DEFAULT_UAMI_OBJECT_ID} [host, secret]"
            )
        )]
    );
}

#[tokio::test]
async fn service_fabric_with_another_thumbprint_is_refused() {
    let env = start_with(sf_config()).await;
    let (endpoint, thumbprint) = env.authority.service_fabric().unwrap();
    let wrong: String = thumbprint
        .chars()
        .map(|c| if c == 'A' { 'B' } else { 'A' })
        .collect();
    let vars = [
        ("IDENTITY_ENDPOINT", endpoint.as_str()),
        ("IDENTITY_HEADER", "sf-secret"),
        ("IDENTITY_SERVER_THUMBPRINT", wrong.as_str()),
    ];
    let err = try_get(&credential(&env, SAMI, &vars, None))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("TLS") && err.message.contains("IDENTITY_SERVER_THUMBPRINT"),
        "{}",
        err.message
    );
    // The secret never reached a server with another certificate.
    assert_eq!(env.count(Endpoint::ServiceFabric), 0);
}

#[tokio::test]
async fn cloud_shell_posts_its_form() {
    let mut authority = AuthorityConfig::default();
    authority.imds.cloud_shell = true;
    let env = start_with(authority).await;
    let endpoint = format!("{}/cloudshell/oauth2/token", env.authority.imds_base_url());
    let vars = [("MSI_ENDPOINT", endpoint.as_str())];
    token_accepted(&env, &credential(&env, SAMI, &vars, None)).await;
    assert_eq!(
        shapes(&env, Endpoint::CloudShell),
        vec![(
            200,
            "POST /cloudshell/oauth2/token [content-length, content-type, host, metadata]"
                .to_string()
        )]
    );
}

#[tokio::test]
async fn machine_learning_by_clientid_and_secret() {
    let mut authority = AuthorityConfig::default();
    authority.imds.machine_learning_secret = Some("ml-secret".into());
    let env = start_with(authority).await;
    let endpoint = format!("{}/ml/msi/token", env.authority.imds_base_url());
    let vars = [
        ("MSI_ENDPOINT", endpoint.as_str()),
        ("MSI_SECRET", "ml-secret"),
        ("DEFAULT_IDENTITY_CLIENT_ID", DEFAULT_SAMI_CLIENT_ID),
    ];
    token_accepted(&env, &credential(&env, SAMI, &vars, None)).await;
    let cred = credential(
        &env,
        &uami("client_id", DEFAULT_UAMI_CLIENT_ID),
        &vars,
        None,
    );
    token_accepted(&env, &cred).await;
    let q = format!("GET /ml/msi/token?api-version=2017-09-01&{ARM_Q}");
    assert_eq!(
        shapes(&env, Endpoint::MachineLearning),
        vec![
            (
                200,
                format!("{q}&clientid={DEFAULT_SAMI_CLIENT_ID} [host, metadata, secret]")
            ),
            (
                200,
                format!("{q}&clientid={DEFAULT_UAMI_CLIENT_ID} [host, metadata, secret]")
            ),
        ]
    );
}
