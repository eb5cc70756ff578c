//! `send_x5c` and the regional Bearer host in the config and in `popgate check`'s route lines.

use crate::kit::config::{CLIENT, Fixture, TENANT};
use popgate::config::Identity;
use popgate::config::describe::describe_route;

fn config(app_keys: &str, token_type: &str) -> String {
    format!(
        "version: 1
listeners: [{{address: \"127.0.0.1:3128\"}}]
identities:
  a:
    kind: confidential_client
    tenant_id: {TENANT}
    client_id: {CLIENT}
{app_keys}routes:
  - {{name: r, match: {{host: a.example}}, resource: r, flow: vanilla, identity: a, token_type: {token_type}}}
"
    )
}

const CERT: &str = "    certificate: {cert_file: app.pem, key_file: app.key}\n";

#[test]
fn send_x5c_defaults_to_false_and_loads_when_set() {
    let f = Fixture::new();
    for (keys, want) in [
        (CERT.to_string(), false),
        (format!("    send_x5c: true\n{CERT}"), true),
        (format!("    send_x5c: false\n{CERT}"), false),
    ] {
        let cfg = f.load(&config(&keys, "bearer")).unwrap();
        let Some(Identity::ConfidentialClient(app)) = cfg.identity("a") else {
            panic!("a confidential client");
        };
        assert_eq!(app.send_x5c, want, "{keys}");
    }
}

#[test]
fn send_x5c_without_a_certificate_is_refused_at_its_key() {
    let f = Fixture::new();
    // (The route then also says a certificate-less app cannot be a vanilla identity.)
    let errors = f.errors(&config("    send_x5c: true\n", "bearer"));
    assert_eq!(
        errors[0],
        f.at(
            8,
            15,
            "confidential_client `a` has `send_x5c: true` but no `certificate`: x5c is the certificate its client assertion is signed with"
        ),
        "{errors:?}"
    );
}

#[test]
fn send_x5c_is_not_a_key_of_other_kinds() {
    let f = Fixture::new();
    let yaml = "version: 1
listeners: [{address: \"127.0.0.1:3128\"}]
identities:
  m: {kind: managed_identity, send_x5c: true}
routes:
  - {name: r, match: {host: a.example}, resource: r, flow: vanilla, identity: m, token_type: bearer}
";
    let errors = f.errors(yaml);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(&f.at(
            4,
            41,
            "`send_x5c` is not a key of a managed_identity identity"
        )),
        "{errors:?}"
    );
}

#[test]
fn check_names_the_regional_bearer_host_and_the_x5c_assertion() {
    let f = Fixture::new();
    let line = |keys: &str, token_type: &str| {
        let cfg = f.load(&config(keys, token_type)).unwrap();
        describe_route(&cfg, &cfg.routes[0])
    };
    let hosts = |l: String| {
        l.split('\t')
            .find_map(|f| f.strip_prefix("token_hosts="))
            .unwrap()
            .to_string()
    };
    assert_eq!(hosts(line(CERT, "bearer")), "login.microsoftonline.com");
    assert_eq!(
        hosts(line(&format!("    region: westus3\n{CERT}"), "bearer")),
        "westus3.login.microsoft.com"
    );
    assert_eq!(
        hosts(line(
            &format!("    region: westus3\n    send_x5c: true\n{CERT}"),
            "bearer"
        )),
        "westus3.login.microsoft.com (assertion with x5c)"
    );
    // mTLS PoP sends no assertion: the chain travels in the TLS handshake.
    assert_eq!(
        hosts(line(
            &format!("    region: westus3\n    send_x5c: true\n{CERT}"),
            "mtls_pop"
        )),
        "westus3.mtlsauth.microsoft.com"
    );
    assert_eq!(
        hosts(line(
            &format!(
                "    authority_host: login.usgovcloudapi.net\n    region: usgovvirginia\n{CERT}"
            ),
            "bearer"
        )),
        "usgovvirginia.login.microsoftonline.us"
    );
}

#[test]
fn check_shows_no_x5c_for_a_fic_leg_2_which_sends_the_leg_1_token() {
    let f = Fixture::new();
    let yaml = format!(
        "version: 1
listeners: [{{address: \"127.0.0.1:3128\"}}]
identities:
  sami: {{kind: managed_identity}}
  a:
    kind: confidential_client
    tenant_id: {TENANT}
    client_id: {CLIENT}
    region: westus3
    send_x5c: true
{CERT}routes:
  - {{name: r, match: {{host: a.example}}, resource: r, flow: fic, leg1: sami, leg1_token_type: bearer, leg2: a, token_type: bearer}}
"
    );
    let cfg = f.load(&yaml).unwrap();
    let line = describe_route(&cfg, &cfg.routes[0]);
    assert!(
        line.contains("leg2: westus3.login.microsoft.com\t"),
        "{line}"
    );
    assert!(!line.contains("x5c"), "{line}");
}
