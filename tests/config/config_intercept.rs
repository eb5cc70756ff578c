//! A listener's `intercept:` block: the CA files are loaded and checked at load time, and every
//! problem is reported at the file it is about (`FILE:LINE:COL`): a missing file, a file that is
//! not PEM, a certificate that is not a CA, a key that is not the CA's, a key any user can read
//! (unless `allow_insecure_key_permissions: true`), and `intercept` on a Unix listener.

use crate::kit::config::{CLIENT, Fixture, TENANT};

/// Line 3 of every config: the listener's `intercept` with `{intercept}` inside the braces.
fn yaml(intercept: &str) -> String {
    format!(
        "version: 1
listeners:
  - {{address: \"127.0.0.1:3128\", intercept: {{{intercept}}}}}
identities:
  app: {{kind: confidential_client, tenant_id: {TENANT}, client_id: {CLIENT}, certificate: {{cert_file: app.pem, key_file: app.key}}}}
routes:
  - {{name: graph, match: {{host: graph.microsoft.com}}, resource: https://graph.microsoft.com, flow: vanilla, identity: app}}
"
    )
}

fn with_ca() -> Fixture {
    let f = Fixture::new();
    let (cert, key) = popgate::certs::intercept_ca::generate("test CA").unwrap();
    f.write("ca.pem", &cert);
    f.write("ca.key", &key);
    f
}

/// The one error of `intercept`, which must be at the column of `value` on line 3.
fn assert_error_at(f: &Fixture, intercept: &str, value: &str, message: &str) {
    let text = yaml(intercept);
    let line = text.lines().nth(2).unwrap();
    let col = u32::try_from(line.find(value).unwrap() + 1).unwrap();
    let errors = f.errors(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let at = f.at(3, col, "");
    assert!(
        errors[0].starts_with(&at),
        "{} does not start with {at}",
        errors[0]
    );
    assert!(errors[0].contains(message), "{}", errors[0]);
}

fn chmod(f: &Fixture, name: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(f.path(name), std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_ca_made_by_popgate_loads() {
    let f = with_ca();
    let config = f
        .load(&yaml("ca_cert_file: ca.pem, ca_key_file: ca.key"))
        .unwrap();
    let ca = &config.listeners[0].intercept.as_ref().unwrap().ca;
    assert!(ca.subject().contains("test CA"));
    // Debug names the CA, never its key.
    assert!(!format!("{ca:?}").contains("PRIVATE"));
}

#[test]
fn unreadable_and_non_pem_files_are_refused_at_their_key() {
    let f = with_ca();
    assert_error_at(
        &f,
        "ca_cert_file: missing.pem, ca_key_file: ca.key",
        "missing.pem",
        "cannot read certificate file",
    );
    assert_error_at(
        &f,
        "ca_cert_file: garbage.pem, ca_key_file: ca.key",
        "garbage.pem",
        "garbage.pem",
    );
    assert_error_at(
        &f,
        "ca_cert_file: ca.pem, ca_key_file: badkey.key",
        "badkey.key",
        "badkey.key",
    );
}

#[test]
fn a_leaf_certificate_or_a_foreign_key_is_refused() {
    let f = with_ca();
    assert_error_at(
        &f,
        "ca_cert_file: app.pem, ca_key_file: app.key",
        "app.pem",
        "is not a CA certificate",
    );
    assert_error_at(
        &f,
        "ca_cert_file: ca.pem, ca_key_file: other.key",
        "other.key",
        "does not match the certificate",
    );
}

#[test]
fn a_world_readable_ca_key_is_refused_unless_allowed() {
    let f = with_ca();
    chmod(&f, "ca.key", 0o644);
    assert_error_at(
        &f,
        "ca_cert_file: ca.pem, ca_key_file: ca.key",
        "ca.key",
        "is readable or writable by any user (mode 0644)",
    );
    let allowed = "ca_cert_file: ca.pem, ca_key_file: ca.key, allow_insecure_key_permissions: true";
    assert!(f.load(&yaml(allowed)).is_ok());
}

#[test]
fn intercept_on_a_unix_listener_and_unknown_keys_are_refused() {
    let f = with_ca();
    let text = yaml("ca_cert_file: ca.pem, ca_key_file: ca.key").replace(
        "{address: \"127.0.0.1:3128\",",
        "{unix: /tmp/popgate-intercept-test.sock,",
    );
    let errors = f.errors(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`intercept` is available on `address` listeners only")),
        "{errors:#?}"
    );
    let errors = f.errors(&yaml(
        "ca_cert_file: ca.pem, ca_key_file: ca.key, ca_chain: x",
    ));
    assert!(errors.iter().any(|e| e.contains("ca_chain")), "{errors:#?}");
}
