//! Identity rules: each test writes a config with one mistake and asserts the exact
//! `FILE:LINE:COL: message`.

use crate::kit::config::{CLIENT, Fixture, TENANT};
use popgate::config::{Identity, UamiSelector};

/// A config with the given identities block (starting on line 4) and one route using `use_id`.
fn with_identities(identities: &str, use_id: &str) -> String {
    format!(
        "version: 1
listeners: [{{address: \"127.0.0.1:3128\"}}]
identities:
{identities}routes:
  - {{name: r, match: {{host: a.example}}, resource: r, flow: vanilla, identity: {use_id}, token_type: bearer}}
"
    )
}

#[test]
fn every_identity_kind_loads_with_typed_fields() {
    let f = Fixture::new().with_env("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/token");
    let cfg = f
        .load(&with_identities(
            &format!(
                "  sami: {{kind: managed_identity, attestation_command: [/bin/attest, --json]}}
  uc: {{kind: managed_identity, client_id: 6325CD32-9911-41F3-819C-416CDF9104E7}}
  ur: {{kind: managed_identity, resource_id: /subscriptions/s/resourcegroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u}}
  uo: {{kind: managed_identity, object_id: ecb2ad92-3e30-4505-b79f-ac640d069f24}}
  app: {{kind: confidential_client, tenant_id: contoso.onmicrosoft.com, client_id: {CLIENT}, region: WestUS3, authority_host: LOGIN.microsoftonline.us, certificate: {{cert_file: app.pem, key_file: app.key}}}}
  wi: {{kind: workload_identity, client_id: {CLIENT}, tenant_id: {TENANT}}}
  byo: {{kind: static, token_file: token.jwt, certificate: {{cert_file: app.pem, key_file: app.key}}}}
"
            ),
            "sami",
        ))
        .unwrap();
    let Some(Identity::ManagedIdentity(sami)) = cfg.identity("sami") else {
        panic!("sami")
    };
    assert_eq!(sami.selector, None);
    assert_eq!(
        sami.attestation_command.as_deref(),
        Some(&["/bin/attest".to_owned(), "--json".to_owned()][..])
    );
    let Some(Identity::ManagedIdentity(uc)) = cfg.identity("uc") else {
        panic!("uc")
    };
    assert_eq!(
        uc.selector,
        Some(UamiSelector::ClientId(
            "6325cd32-9911-41f3-819c-416cdf9104e7".into()
        ))
    );
    let Some(Identity::ManagedIdentity(ur)) = cfg.identity("ur") else {
        panic!("ur")
    };
    assert!(matches!(ur.selector, Some(UamiSelector::ResourceId(_))));
    let Some(Identity::ManagedIdentity(uo)) = cfg.identity("uo") else {
        panic!("uo")
    };
    assert!(matches!(uo.selector, Some(UamiSelector::ObjectId(_))));
    let Some(Identity::ConfidentialClient(app)) = cfg.identity("app") else {
        panic!("app")
    };
    assert_eq!(app.region.as_deref(), Some("westus3"));
    assert_eq!(app.authority_host, "login.microsoftonline.us");
    assert_eq!(app.tenant_id, "contoso.onmicrosoft.com");
    assert!(app.certificate.is_some());
    // The engine watches these files for rotation: they must be the resolved paths that were loaded.
    let Some(popgate::config::model::CertificateFiles::Pem {
        cert_file,
        key_file,
    }) = app.certificate_files.as_ref()
    else {
        panic!("PEM certificate files")
    };
    assert!(cert_file.ends_with("app.pem"));
    assert!(key_file.ends_with("app.key"));
    let Some(Identity::WorkloadIdentity(wi)) = cfg.identity("wi") else {
        panic!("wi")
    };
    assert_eq!(
        wi.token_file,
        std::path::PathBuf::from("/var/run/secrets/token")
    );
    assert_eq!(wi.authority_host, "login.microsoftonline.com");
    let Some(Identity::Static(byo)) = cfg.identity("byo") else {
        panic!("byo")
    };
    assert_eq!(byo.token_file, f.path("token.jwt"));
}

#[test]
fn more_than_one_uami_selector_points_at_the_second() {
    let f = Fixture::new();
    f.assert_error(
        &with_identities(
            "  u:
    kind: managed_identity
    object_id: ecb2ad92-3e30-4505-b79f-ac640d069f24
    client_id: 6325cd32-9911-41f3-819c-416cdf9104e7
",
            "u",
        ),
        7,
        16,
        "a managed identity takes at most one of client_id, resource_id, object_id: `client_id` conflicts with `object_id`",
    );
}

#[test]
fn malformed_guids() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_identities(
            &format!(
                "  u: {{kind: managed_identity, client_id: 6325cd32-9911-41f3-819c-416cdf9104e}}
  o: {{kind: managed_identity, object_id: not-a-guid}}
  app: {{kind: confidential_client, tenant_id: 751a212b4003416eb600e1f48e40db9f, client_id: {CLIENT}, certificate: {{cert_file: app.pem, key_file: app.key}}}}
  app2: {{kind: confidential_client, tenant_id: {TENANT}, client_id: d3adb33f-c0de-ed0c-c0de-deadb33fc0dZ}}
"
            ),
            "u",
        )),
        vec![
            f.at(4, 42, "client_id `6325cd32-9911-41f3-819c-416cdf9104e` is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
            f.at(5, 42, "object_id `not-a-guid` is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
            f.at(6, 47, "tenant_id `751a212b4003416eb600e1f48e40db9f` is not a GUID or a tenant domain name"),
            f.at(7, 97, "client_id `d3adb33f-c0de-ed0c-c0de-deadb33fc0dZ` is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"),
        ]
    );
}

#[test]
fn bad_resource_id() {
    let f = Fixture::new();
    f.assert_error(
        &with_identities("  u: {kind: managed_identity, resource_id: msiv2uami}\n", "u"),
        4,
        44,
        "resource_id `msiv2uami` is not a user-assigned identity ARM id (/subscriptions/…/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME)",
    );
}

#[test]
fn tenant_common_and_organizations_are_refused() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_identities(
            &format!(
                "  a: {{kind: confidential_client, tenant_id: common, client_id: {CLIENT}, certificate: {{cert_file: app.pem, key_file: app.key}}}}
  b: {{kind: confidential_client, tenant_id: organizations, client_id: {CLIENT}}}
"
            ),
            "a",
        )),
        vec![
            f.at(4, 45, "tenant `common` is not a real tenant: app-only and mTLS PoP flows need a tenant GUID or domain"),
            f.at(5, 45, "tenant `organizations` is not a real tenant: app-only and mTLS PoP flows need a tenant GUID or domain"),
        ]
    );
}

#[test]
fn region_must_be_alphanumeric() {
    let f = Fixture::new();
    f.assert_error(
        &with_identities(
            &format!(
                "  a:
    kind: confidential_client
    tenant_id: {TENANT}
    client_id: {CLIENT}
    region: west-us.3
    certificate: {{cert_file: app.pem, key_file: app.key}}
"
            ),
            "a",
        ),
        8,
        13,
        "region `west-us.3` must be ASCII letters and digits only (e.g. westus3)",
    );
}

#[test]
fn malformed_authority_host() {
    let f = Fixture::new();
    f.assert_error(
        &with_identities(
            &format!(
                "  a: {{kind: confidential_client, tenant_id: {TENANT}, client_id: {CLIENT}, authority_host: 'https://login.microsoftonline.com/', certificate: {{cert_file: app.pem, key_file: app.key}}}}\n"
            ),
            "a",
        ),
        4,
        148,
        "authority_host: `https://login.microsoftonline.com/` is not a bare host name (expected something like login.microsoftonline.com)",
    );
}

#[test]
fn keys_that_do_not_belong_to_the_kind() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_identities(
            "  m: {kind: managed_identity, certificate: {cert_file: app.pem, key_file: app.key}, region: westus3}\n",
            "m",
        )),
        vec![
            f.at(4, 44, "`certificate` is not a key of a managed_identity identity (allowed: kind, client_id, resource_id, object_id, attestation_command, source)"),
            f.at(4, 93, "`region` is not a key of a managed_identity identity (allowed: kind, client_id, resource_id, object_id, attestation_command, source)"),
        ]
    );
}

#[test]
fn missing_required_keys() {
    let f = Fixture::new();
    assert_eq!(
        f.errors(&with_identities(
            "  a: {kind: confidential_client}\n  s: {kind: static}\n",
            "s",
        )),
        vec![
            f.at(4, 13, "confidential_client identity `a` needs `tenant_id`"),
            f.at(4, 13, "confidential_client identity `a` needs `client_id`"),
            f.at(5, 13, "static identity `s` needs `token_file`"),
            f.at(
                5,
                13,
                "static identity `s` needs `certificate` (the certificate its token is bound to)"
            ),
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
}

#[test]
fn static_token_file_unreadable_or_empty() {
    let f = Fixture::new();
    f.write("empty.jwt", "\n");
    assert_eq!(
        f.errors(&with_identities(
            "  s: {kind: static, token_file: missing.jwt, certificate: {cert_file: app.pem, key_file: app.key}}
  e: {kind: static, token_file: empty.jwt, certificate: {cert_file: app.pem, key_file: app.key}}
",
            "s",
        )),
        vec![
            f.at(
                4,
                33,
                &format!(
                    "cannot read token_file `{}`: No such file or directory (os error 2)",
                    f.shown("missing.jwt")
                )
            ),
            f.at(5, 33, &format!("token_file `{}` is empty", f.shown("empty.jwt"))),
        ]
    );
}

fn app_with(cert: &str, key: &str) -> String {
    format!(
        "  a:
    kind: confidential_client
    tenant_id: {TENANT}
    client_id: {CLIENT}
    certificate:
      cert_file: {cert}
      key_file: {key}
"
    )
}

#[test]
fn certificate_file_unreadable() {
    let f = Fixture::new();
    f.assert_error(
        &with_identities(&app_with("nope.pem", "app.key"), "a"),
        9,
        18,
        &format!(
            "cannot read certificate file `{}`: No such file or directory (os error 2)",
            f.shown("nope.pem")
        ),
    );
}

#[test]
fn key_file_unreadable() {
    let f = Fixture::new();
    f.assert_error(
        &with_identities(&app_with("app.pem", "nope.key"), "a"),
        10,
        17,
        &format!(
            "cannot read key file `{}`: No such file or directory (os error 2)",
            f.shown("nope.key")
        ),
    );
}

#[test]
fn certificate_that_does_not_parse() {
    let f = Fixture::new();
    let errors = f.errors(&with_identities(&app_with("badcert.pem", "app.key"), "a"));
    assert_eq!(errors.len(), 1);
    let prefix = f.at(
        9,
        18,
        &format!(
            "certificate file `{}` does not hold a valid X.509 certificate: ",
            f.shown("badcert.pem")
        ),
    );
    assert!(errors[0].starts_with(&prefix), "{errors:?}");
    f.assert_error(
        &with_identities(&app_with("garbage.pem", "app.key"), "a"),
        9,
        18,
        &format!(
            "certificate file `{}` has no CERTIFICATE PEM block",
            f.shown("garbage.pem")
        ),
    );
}

#[test]
fn key_that_does_not_parse() {
    let f = Fixture::new();
    let errors = f.errors(&with_identities(&app_with("app.pem", "badkey.key"), "a"));
    assert_eq!(errors.len(), 1);
    let prefix = f.at(
        10,
        17,
        &format!(
            "key file `{}` does not hold a usable private key: ",
            f.shown("badkey.key")
        ),
    );
    assert!(errors[0].starts_with(&prefix), "{errors:?}");
    // A certificate given as the key: the wrong PEM block type is named.
    f.assert_error(
        &with_identities(&app_with("app.pem", "app.pem"), "a"),
        10,
        17,
        &format!(
            "key file `{}` has no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY PEM block (found: CERTIFICATE)",
            f.shown("app.pem")
        ),
    );
}

#[test]
fn key_that_does_not_match_the_certificate() {
    let f = Fixture::new();
    f.assert_error(
        &with_identities(&app_with("app.pem", "other.key"), "a"),
        10,
        17,
        &format!(
            "key file `{}` does not match the certificate in `{}`",
            f.shown("other.key"),
            f.shown("app.pem")
        ),
    );
}

#[test]
fn workload_identity_defaults_from_env_and_errors_without_it() {
    let f = Fixture::new()
        .with_env("AZURE_CLIENT_ID", CLIENT)
        .with_env("AZURE_TENANT_ID", TENANT)
        .with_env(
            "AZURE_FEDERATED_TOKEN_FILE",
            "/var/run/secrets/azure/tokens/token",
        );
    let cfg = f
        .load(&with_identities("  w: {kind: workload_identity}\n", "w"))
        .unwrap();
    let Some(Identity::WorkloadIdentity(w)) = cfg.identity("w") else {
        panic!("w")
    };
    assert_eq!(w.client_id, CLIENT);
    assert_eq!(w.tenant_id, TENANT);

    let bare = Fixture::new();
    assert_eq!(
        bare.errors(&with_identities("  w: {kind: workload_identity}\n", "w")),
        vec![
            bare.at(4, 13, "workload_identity `w` has no `client_id` and AZURE_CLIENT_ID is not set"),
            bare.at(4, 13, "workload_identity `w` has no `tenant_id` and AZURE_TENANT_ID is not set"),
            bare.at(4, 13, "workload_identity `w` has no `token_file` and AZURE_FEDERATED_TOKEN_FILE is not set"),
        ]
    );
}

#[test]
fn identity_name_charset() {
    let f = Fixture::new();
    f.assert_error(
        &with_identities("  'bad name': {kind: managed_identity}\n", "'bad name'"),
        4,
        3,
        "identity name `bad name` may only contain letters, digits, `_`, `.` and `-`",
    );
}

#[test]
fn empty_attestation_command() {
    let f = Fixture::new();
    f.assert_error(
        &with_identities(
            "  m: {kind: managed_identity, attestation_command: []}\n",
            "m",
        ),
        4,
        52,
        "attestation_command must be a non-empty argv list, e.g. [/usr/local/bin/attest, --json]",
    );
}

#[test]
fn workload_identity_env_values_are_validated_too() {
    let f = Fixture::new()
        .with_env("AZURE_CLIENT_ID", "not-a-guid")
        .with_env("AZURE_TENANT_ID", TENANT)
        .with_env("AZURE_FEDERATED_TOKEN_FILE", "/t");
    f.assert_error(
        &with_identities("  w: {kind: workload_identity}\n", "w"),
        4,
        13,
        "client_id `not-a-guid` is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
    );
}

/// Sets `name`'s permission bits in the fixture directory.
fn chmod(f: &Fixture, name: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(f.path(name), std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_world_readable_key_file_is_refused_at_its_key() {
    // The attack this stops: any user on the host copies the key and presents the certificate
    // the identity's tokens are bound to. Before, the key loaded with a warning.
    let f = Fixture::new();
    for mode in [0o644, 0o604, 0o602] {
        chmod(&f, "app.key", mode);
        f.assert_error(
            &with_identities(&app_with("app.pem", "app.key"), "a"),
            10,
            17,
            &format!(
                "key_file `{}` is readable or writable by any user (mode {mode:04o}); restrict it (chmod 600, or 640 for a group-readable mount such as a Kubernetes fsGroup secret) or set `allow_insecure_key_permissions: true` on the identity",
                f.shown("app.key")
            ),
        );
    }
}

#[test]
fn a_group_readable_key_file_loads_and_the_identity_can_allow_a_world_readable_one() {
    let f = Fixture::new();
    // Group-readable (a Kubernetes fsGroup mount): loads (with its warning).
    chmod(&f, "app.key", 0o640);
    f.load(&with_identities(&app_with("app.pem", "app.key"), "a"))
        .expect("a group-readable key loads");
    // World-readable, explicitly allowed on the identity: loads, for certificate apps and
    // static identities alike.
    chmod(&f, "app.key", 0o644);
    let allowed = format!(
        "{}    allow_insecure_key_permissions: true\n",
        app_with("app.pem", "app.key")
    );
    f.load(&with_identities(&allowed, "a"))
        .expect("allowed on the identity");
    let byo = "  byo: {kind: static, token_file: token.jwt, allow_insecure_key_permissions: true, certificate: {cert_file: app.pem, key_file: app.key}}\n";
    f.load(&with_identities(byo, "byo"))
        .expect("allowed on a static identity");
    // Not a key of identities without a certificate.
    let sami = "  sami: {kind: managed_identity, allow_insecure_key_permissions: true}\n";
    let errors = f.errors(&with_identities(sami, "sami"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`allow_insecure_key_permissions` is not a key")),
        "{errors:?}"
    );
}
