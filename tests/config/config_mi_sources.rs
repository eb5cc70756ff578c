//! Managed-identity sources: detected from the environment in MSAL.NET's order when the config
//! is loaded (the loader's explicit environment: no process environment in tests), overridden by
//! `source:`, and MSAL's refusals (mTLS PoP off IMDS, selectors a source does not take) as
//! `FILE:LINE:COL` errors.

use crate::kit::config::*;
use popgate::config::{Identity, MiSourceKind};

const UAMI: &str = "6325cd32-9911-41f3-819c-416cdf9104e7";

fn one(identity: &str, token_type: &str) -> String {
    format!(
        "version: 1
listeners: [{{address: \"127.0.0.1:3128\"}}]
identities:
  mi: {identity}
routes:
  - {{name: r, match: {{host: a.example}}, resource: r, flow: vanilla, identity: mi, token_type: {token_type}}}
"
    )
}

fn source_of(f: &Fixture, identity: &str) -> (MiSourceKind, bool) {
    let cfg = f.load(&one(identity, "bearer")).unwrap();
    let Some(Identity::ManagedIdentity(mi)) = cfg.identity("mi") else {
        panic!("mi")
    };
    (mi.source.kind(), mi.source_detected)
}

#[test]
fn detection_follows_msals_order() {
    let sami = "{kind: managed_identity}";
    let cases: &[(&[(&str, &str)], MiSourceKind)] = &[
        (&[], MiSourceKind::Imds),
        // IDENTITY_ENDPOINT alone no longer means App Service (nor stops popgate).
        (
            &[("IDENTITY_ENDPOINT", "http://127.0.0.1:1/t")],
            MiSourceKind::Imds,
        ),
        (
            &[
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/t"),
                ("IDENTITY_HEADER", "h"),
            ],
            MiSourceKind::AppService,
        ),
        (
            &[
                ("IDENTITY_ENDPOINT", "https://127.0.0.1:2377/t"),
                ("IDENTITY_HEADER", "h"),
                (
                    "IDENTITY_SERVER_THUMBPRINT",
                    "0123456789abcdef0123456789ABCDEF01234567",
                ),
                ("MSI_ENDPOINT", "http://127.0.0.1:3/t"),
                ("MSI_SECRET", "s"),
            ],
            MiSourceKind::ServiceFabric,
        ),
        (
            &[
                ("MSI_ENDPOINT", "http://127.0.0.1:3/t"),
                ("MSI_SECRET", "s"),
                ("DEFAULT_IDENTITY_CLIENT_ID", UAMI),
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/t"),
                ("IMDS_ENDPOINT", "http://127.0.0.1:2"),
            ],
            MiSourceKind::MachineLearning,
        ),
        (
            &[
                ("MSI_ENDPOINT", "http://127.0.0.1:3/t"),
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/t"),
                ("IMDS_ENDPOINT", "http://127.0.0.1:2"),
            ],
            MiSourceKind::CloudShell,
        ),
        (
            &[
                (
                    "IDENTITY_ENDPOINT",
                    "http://127.0.0.1:40342/metadata/identity/oauth2/token",
                ),
                ("IMDS_ENDPOINT", "http://127.0.0.1:40342"),
            ],
            MiSourceKind::AzureArc,
        ),
    ];
    for (vars, expected) in cases {
        let mut f = Fixture::new();
        for (k, v) in *vars {
            f = f.with_env(k, v);
        }
        assert_eq!(source_of(&f, sami), (*expected, true), "{vars:?}");
    }
}

#[test]
fn source_key_overrides_detection() {
    let f = Fixture::new()
        .with_env("IDENTITY_ENDPOINT", "http://127.0.0.1:1/t")
        .with_env("IDENTITY_HEADER", "h");
    assert_eq!(
        source_of(&f, "{kind: managed_identity, source: imds}"),
        (MiSourceKind::Imds, false)
    );
    // Arc without its variables: MSAL's default agent endpoint.
    let bare = Fixture::new();
    let cfg = bare
        .load(&one(
            "{kind: managed_identity, source: azure_arc}",
            "bearer",
        ))
        .unwrap();
    let Some(Identity::ManagedIdentity(mi)) = cfg.identity("mi") else {
        panic!("mi")
    };
    assert_eq!(
        mi.source.endpoint(),
        Some("http://127.0.0.1:40342/metadata/identity/oauth2/token")
    );
    bare.assert_error(
        &one("{kind: managed_identity, source: app_service}", "bearer"),
        4,
        40,
        "managed identity source app_service (set by `source`): invalid_managed_identity_endpoint: [Managed Identity] The environment variable IDENTITY_ENDPOINT is not set, and the App Service managed identity source needs it.",
    );
    bare.assert_error(
        &one("{kind: managed_identity, source: vm}", "bearer"),
        4,
        40,
        "unknown managed identity source `vm` (one of: service_fabric, app_service, machine_learning, cloud_shell, azure_arc, imds)",
    );
}

#[test]
fn mtls_pop_is_refused_off_imds_with_msals_error() {
    let f = Fixture::new()
        .with_env("IDENTITY_ENDPOINT", "http://127.0.0.1:1/t")
        .with_env("IDENTITY_HEADER", "h");
    f.assert_error(
        &one("{kind: managed_identity}", "mtls_pop"),
        6,
        95,
        "managed identity `mi` uses source app_service, which issues Bearer tokens only (mtls_pop_not_supported_for_environment: mTLS Proof-of-Possession with managed identity is only supported on IMDSv2. The detected managed identity source does not support mTLS PoP.): set `token_type: bearer`",
    );
    // The same identity on IMDS takes PoP.
    f.load(&one("{kind: managed_identity, source: imds}", "mtls_pop"))
        .unwrap();
}

#[test]
fn selectors_a_source_does_not_take_are_refused_with_msals_error() {
    let arc = Fixture::new()
        .with_env("IDENTITY_ENDPOINT", "http://127.0.0.1:40342/t")
        .with_env("IMDS_ENDPOINT", "http://127.0.0.1:40342");
    arc.assert_error(
        &one(&format!("{{kind: managed_identity, client_id: {UAMI}}}"), "bearer"),
        4,
        43,
        "managed identity source azure_arc (detected from the environment): user_assigned_managed_identity_not_supported: [Managed Identity] User assigned identity is not supported by the Azure Arc Managed Identity. To authenticate with the system assigned identity omit the client id in ManagedIdentityApplicationBuilder.Create().",
    );
    let sf = Fixture::new()
        .with_env("IDENTITY_ENDPOINT", "https://127.0.0.1:2377/t")
        .with_env("IDENTITY_HEADER", "h")
        .with_env("IDENTITY_SERVER_THUMBPRINT", &"AB".repeat(20));
    let errors = sf.errors(&one(
        &format!("{{kind: managed_identity, client_id: {UAMI}}}"),
        "bearer",
    ));
    assert!(
        errors[0].contains("user_assigned_managed_identity_not_configurable_at_runtime"),
        "{errors:?}"
    );
    assert_eq!(
        source_of(
            &sf,
            &format!("{{kind: managed_identity, object_id: {UAMI}}}")
        )
        .0,
        MiSourceKind::ServiceFabric
    );
    let ml = Fixture::new()
        .with_env("MSI_ENDPOINT", "http://127.0.0.1:3/t")
        .with_env("MSI_SECRET", "s");
    let errors = ml.errors(&one("{kind: managed_identity}", "bearer"));
    assert!(
        errors[0].ends_with("invalid_managed_identity_id_type: The DEFAULT_IDENTITY_CLIENT_ID environment variable is null."),
        "{errors:?}"
    );
    let errors = ml.errors(&one(
        &format!("{{kind: managed_identity, object_id: {UAMI}}}"),
        "bearer",
    ));
    assert!(
        errors[0].ends_with(
            "Only client id is supported for user-assigned managed identity in Machine Learning."
        ),
        "{errors:?}"
    );
    let shell = Fixture::new().with_env("MSI_ENDPOINT", "http://127.0.0.1:3/t");
    let errors = shell.errors(&one(
        &format!("{{kind: managed_identity, object_id: {UAMI}}}"),
        "bearer",
    ));
    assert!(
        errors[0].contains("not supported by the Cloud Shell Managed Identity"),
        "{errors:?}"
    );
}

#[test]
fn a_malformed_endpoint_is_msals_invalid_uri_error() {
    let f = Fixture::new()
        .with_env("IDENTITY_ENDPOINT", "not a url")
        .with_env("IDENTITY_HEADER", "h");
    f.assert_error(
        &one("{kind: managed_identity}", "bearer"),
        4,
        14,
        "managed identity source app_service (detected from the environment): invalid_managed_identity_endpoint: [Managed Identity] The environment variable IDENTITY_ENDPOINT contains an invalid Uri not a url in App Service managed identity source.",
    );
}
