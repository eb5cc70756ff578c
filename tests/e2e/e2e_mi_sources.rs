//! Every managed-identity source through the proxy: for each, popgate is started on a config
//! loaded with that source's environment, a caller's plain-HTTP request is forwarded with the
//! source's Bearer token, and the local authority recorded the source's exact request shape.

use crate::kit::app::*;
use popgate::app::{App, StartOptions};
use popgate::engine::sources::retry::RetryTiming;
use popgate_authority::imds::mi_sources::ArcSettings;

const ROUTE: &str = "  - name: arm
    match: { path_prefix: /arm/ }
    upstream: https://management.azure.com
    resource: https://management.azure.com
    flow: vanilla
    identity: mi
    token_type: bearer
";

#[tokio::test]
async fn every_source_serves_a_route_through_the_proxy() {
    let tokens = tempfile::tempdir().unwrap();
    let mut authority = popgate_authority::AuthorityConfig {
        resource_requires_client_cert: false,
        ..Default::default()
    };
    authority.imds.app_service_identity_header = Some("as-secret".into());
    authority.imds.arc = Some(ArcSettings {
        dir: tokens.path().to_path_buf(),
        fixed_challenge: None,
    });
    authority.imds.cloud_shell = true;
    authority.imds.machine_learning_secret = Some("ml-secret".into());
    authority.imds.service_fabric_secret = Some("sf-secret".into());
    let env = Env::start_with(authority).await;
    let imds = env.authority.imds_base_url();
    let (sf_endpoint, sf_thumbprint) = env.authority.service_fabric().unwrap();
    let q = "api-version={v}&resource=https%3A%2F%2Fmanagement.azure.com";
    /// A source: its endpoint, its environment, the request shapes the authority must log.
    type Source = (Endpoint, Vec<(&'static str, String)>, Vec<String>);
    let sources: Vec<Source> = vec![
        (
            Endpoint::AppService,
            vec![
                ("IDENTITY_ENDPOINT", format!("{imds}/msi/token")),
                ("IDENTITY_HEADER", "as-secret".into()),
            ],
            vec![format!(
                "GET /msi/token?{} [host, x-identity-header]",
                q.replace("{v}", "2019-08-01")
            )],
        ),
        (
            Endpoint::AzureArc,
            vec![
                (
                    "IDENTITY_ENDPOINT",
                    format!("{imds}/arc/metadata/identity/oauth2/token"),
                ),
                ("IMDS_ENDPOINT", imds.clone()),
            ],
            vec![
                format!(
                    "GET /arc/metadata/identity/oauth2/token?{} [host, metadata]",
                    q.replace("{v}", "2020-06-01")
                ),
                format!(
                    "GET /arc/metadata/identity/oauth2/token?{} [authorization, host, metadata]",
                    q.replace("{v}", "2020-06-01")
                ),
            ],
        ),
        (
            Endpoint::ServiceFabric,
            vec![
                ("IDENTITY_ENDPOINT", sf_endpoint.clone()),
                ("IDENTITY_HEADER", "sf-secret".into()),
                ("IDENTITY_SERVER_THUMBPRINT", sf_thumbprint.clone()),
            ],
            vec![format!(
                "GET /metadata/identity/oauth2/token?{} [host, secret]",
                q.replace("{v}", "2020-05-01")
            )],
        ),
        (
            Endpoint::CloudShell,
            vec![("MSI_ENDPOINT", format!("{imds}/cloudshell/oauth2/token"))],
            vec![
                "POST /cloudshell/oauth2/token [content-length, content-type, host, metadata]"
                    .into(),
            ],
        ),
        (
            Endpoint::MachineLearning,
            vec![
                ("MSI_ENDPOINT", format!("{imds}/ml/msi/token")),
                ("MSI_SECRET", "ml-secret".into()),
                ("DEFAULT_IDENTITY_CLIENT_ID", DEFAULT_SAMI_CLIENT_ID.into()),
            ],
            vec![format!(
                "GET /ml/msi/token?{}&clientid={DEFAULT_SAMI_CLIENT_ID} [host, metadata, secret]",
                q.replace("{v}", "2017-09-01")
            )],
        ),
    ];
    for (endpoint, vars, expected) in sources {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let config = env.config_with_env("\n  mi: { kind: managed_identity }\n", ROUTE, &vars);
        let app = App::start_with(
            config,
            StartOptions {
                retry: RetryTiming::scaled(RETRY_DIVISOR),
                arc_token_dir: Some(tokens.path().to_path_buf()),
                ..StartOptions::default()
            },
        )
        .await
        .expect("popgate starts");
        let answer = get(app.local_addrs()[0], "/arm/subscriptions").await;
        check_bearer(&answer, &format!("{endpoint:?}"));
        let seen: Vec<(u16, String)> = env
            .authority
            .observations()
            .log()
            .into_iter()
            .filter(|r| r.endpoint == endpoint)
            .map(|r| (r.status, r.request.unwrap_or_default()))
            .collect();
        let shapes: Vec<String> = seen.iter().map(|s| s.1.clone()).collect();
        assert_eq!(shapes, expected, "{endpoint:?}");
        assert_eq!(seen.last().map(|s| s.0), Some(200), "{endpoint:?}");
        app.shutdown().await;
    }
    // None of them fell back to IMDS.
    assert_eq!(env.count(Endpoint::ImdsV1Token), 0);
}
