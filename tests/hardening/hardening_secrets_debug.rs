//! Secrets hygiene: `Debug` of every config and snapshot type, of tokens, binding certificates,
//! cached tokens, credential requests, assertions and engine errors never shows a token, a key's
//! PEM body or DER bytes, or an assertion; a private key file readable by group or others is
//! warned about at load (naming the file and mode, never its content).

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::kit::config::{CLIENT, Fixture, TENANT};
use crate::kit::guard::LogCapture;
use base64::Engine as _;
use popgate::certs::cert_files;
use popgate::engine::cache::CachedToken;
use popgate::engine::credential::EngineError;
use popgate::identity::client_assertion::{AssertionInput, sign_client_assertion};
use popgate::identity::static_token;
use popgate::identity::token::{AccessToken, TokenType};
use popgate::identity::token_request::{self, Leg1Kind, TokenEndpoint};
use popgate::route::slot::{RouteSlot, Snapshot};

/// A marker inside the static token: if it shows up in any output, the token leaked.
const TOKEN_MARKER: &str = "SECRETMARKERstatic";
const FEDERATED_MARKER: &str = "SECRETMARKERfederated";

fn rsa_pair() -> (String, String) {
    crate::kit::config::self_signed_pem(&rcgen::PKCS_RSA_SHA256, "app.test")
}

/// Strings that must never appear: the key's PEM body lines, its DER as Rust prints byte slices,
/// and the token markers.
fn forbidden(key_pem: &str) -> Vec<String> {
    let body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(&body)
        .unwrap();
    let mut out: Vec<String> = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .map(String::from)
        .collect();
    // `{:?}` of a byte slice: "[48, 130, …]"; the key's bytes 20..40 are past any common prefix.
    let bytes: Vec<String> = der[20..40].iter().map(u8::to_string).collect();
    out.push(bytes.join(", "));
    out.push(format!("{:02x?}", &der[20..40]));
    out.push(TOKEN_MARKER.into());
    out.push(FEDERATED_MARKER.into());
    out
}

fn assert_clean(what: &str, shown: &str, forbidden: &[String]) {
    for secret in forbidden {
        assert!(
            !shown.contains(secret.as_str()),
            "{what} Debug shows a secret ({secret}):\n{shown}"
        );
    }
}

fn jwt(claims: serde_json::Value) -> String {
    let enc = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    format!(
        "{}.{}.c2ln",
        enc(br#"{"alg":"RS256"}"#),
        enc(claims.to_string().as_bytes())
    )
}

#[test]
fn debug_of_config_tokens_snapshots_requests_and_errors_shows_no_secret() {
    let f = Fixture::new();
    let (cert_pem, key_pem) = rsa_pair();
    f.write("rsa.pem", &cert_pem);
    let key_path = f.write("rsa.key", &key_pem);
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let exp = (SystemTime::now() + Duration::from_secs(3600))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token_text = jwt(serde_json::json!({"exp": exp, "marker": TOKEN_MARKER}));
    f.write("static.jwt", &token_text);
    f.write("federated.jwt", FEDERATED_MARKER);
    let yaml = format!(
        "version: 1
listeners:
  - {{address: \"127.0.0.1:3128\", tls: {{cert_file: rsa.pem, key_file: rsa.key, client_ca_file: rsa.pem}}}}
  - {{unix: popgate.sock}}
identities:
  sami: {{kind: managed_identity}}
  uami: {{kind: managed_identity, client_id: {CLIENT}}}
  app: {{kind: confidential_client, tenant_id: {TENANT}, client_id: {CLIENT}, certificate: {{cert_file: rsa.pem, key_file: rsa.key}}}}
  exchange: {{kind: confidential_client, tenant_id: {TENANT}, client_id: 11111111-2222-3333-4444-555555555555}}
  wi: {{kind: workload_identity, client_id: {CLIENT}, tenant_id: {TENANT}, token_file: federated.jwt}}
  byo: {{kind: static, token_file: static.jwt, certificate: {{cert_file: rsa.pem, key_file: rsa.key}}}}
routes:
  - {{name: a, match: {{host: a.example}}, resource: https://a.example, flow: vanilla, identity: app, allow: [{{dns_san: x.corp}}]}}
  - {{name: b, match: {{host: b.example}}, resource: https://b.example, flow: fic, leg1: sami, leg2: exchange}}
  - {{name: c, match: {{host: c.example}}, resource: https://c.example, flow: vanilla, identity: wi, token_type: bearer}}
  - {{name: d, match: {{host: d.example}}, resource: https://d.example, flow: vanilla, identity: byo, token_type: bearer}}
  - {{name: e, match: {{host: e.example}}, resource: https://e.example, flow: vanilla, identity: uami, token_type: bearer}}
"
    );
    let secrets = forbidden(&key_pem);
    let config = f.load(&yaml).unwrap();
    assert_clean("Config", &format!("{config:?}"), &secrets);
    assert_clean("Config (pretty)", &format!("{config:#?}"), &secrets);

    let binding = cert_files::load_binding_cert(&f.path("rsa.pem"), &key_path).unwrap();
    assert_clean("BindingCert", &format!("{binding:?}"), &secrets);

    let token = static_token::load(
        &f.path("static.jwt"),
        Some(binding.clone()),
        TokenType::Bearer,
    )
    .unwrap();
    assert_clean("Token", &format!("{token:?}"), &secrets);
    assert_clean(
        "AccessToken",
        &format!("{:?}", token.access_token),
        &secrets,
    );
    let header = token.authorization_header().unwrap();
    assert_clean(
        "Authorization HeaderValue",
        &format!("{header:?}"),
        &secrets,
    );

    let cached = CachedToken {
        token: token.clone(),
        acquired_at: SystemTime::now(),
        generation: 1,
    };
    assert_clean("CachedToken", &format!("{cached:?}"), &secrets);

    let snapshot =
        Snapshot::build(&token, &popgate::dataplane::UpstreamSettings::default(), 1).unwrap();
    assert_clean("Snapshot", &format!("{snapshot:?}"), &secrets);
    let slot = Arc::new(RouteSlot::with_snapshot("d", snapshot));
    assert_clean("RouteSlot", &format!("{slot:?}"), &secrets);

    let endpoint = TokenEndpoint::new("login.microsoftonline.com", TENANT).unwrap();
    let assertion = sign_client_assertion(
        &binding,
        &AssertionInput {
            client_id: CLIENT,
            audience: &endpoint.url(),
            now: SystemTime::now(),
            include_x5c: true,
        },
    )
    .unwrap();
    let mut with_assertion = secrets.clone();
    with_assertion.push(assertion.expose_secret().to_string());
    assert_clean(
        "ClientAssertion",
        &format!("{assertion:?}"),
        &with_assertion,
    );
    let request =
        token_request::cert_app_bearer(&endpoint, CLIENT, "https://a.example", &assertion).unwrap();
    assert_clean(
        "CredentialRequest (assertion)",
        &format!("{request:?}"),
        &with_assertion,
    );

    let leg1 = AccessToken::new(TokenType::Bearer, token_text.clone());
    let mut with_leg1 = secrets.clone();
    with_leg1.push(token_text.clone());
    let leg2 = token_request::fic_leg2(
        &endpoint,
        CLIENT,
        "https://b.example",
        &leg1,
        Leg1Kind::Bearer,
        TokenType::Bearer,
    )
    .unwrap();
    assert_clean(
        "CredentialRequest (FIC leg 2)",
        &format!("{leg2:?}"),
        &with_leg1,
    );
    assert_clean("AccessToken (leg 1)", &format!("{leg1:?}"), &with_leg1);

    let error = EngineError {
        identity: "app".into(),
        message: "token endpoint refused: invalid_client AADSTS7000218".into(),
        aadsts: Some(7_000_218),
        correlation_id: Some("c0ffee".into()),
        blocked_until: None,
        permanent: false,
    };
    assert_clean("EngineError", &format!("{error:?}"), &secrets);
}

#[test]
fn a_key_file_readable_by_group_or_others_is_warned_about_without_its_content() {
    let f = Fixture::new();
    let (cert_pem, key_pem) = rsa_pair();
    let cert = f.write("k.pem", &cert_pem);
    let key = f.write("k.key", &key_pem);
    let secrets = forbidden(&key_pem);
    for (mode, warned) in [
        (0o644, true),
        (0o640, true),
        (0o604, true),
        (0o600, false),
        (0o400, false),
    ] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let logs = LogCapture::default();
        {
            let _guard = logs.install();
            cert_files::load_binding_cert(&cert, &key).unwrap();
        }
        let text = logs.text();
        let warning = text
            .lines()
            .find(|l| l.contains("private key file is accessible to group or others"));
        assert_eq!(warning.is_some(), warned, "mode {mode:o}: {text}");
        if let Some(line) = warning {
            assert!(line.contains("WARN"), "{line}");
            assert!(line.contains(&key.display().to_string()), "{line}");
            assert!(line.contains(&format!("mode={mode:04o}")), "{line}");
        }
        assert_clean("key warning log", &text, &secrets);
    }
    // The same check applies wherever keys are loaded: the config loader warns too, for a
    // group-readable key (a world-readable one is refused there: config_identities).
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let logs = LogCapture::default();
    {
        let _guard = logs.install();
        let yaml = format!(
            "version: 1
listeners: [{{address: \"127.0.0.1:3128\"}}]
identities:
  app: {{kind: confidential_client, tenant_id: {TENANT}, client_id: {CLIENT}, certificate: {{cert_file: k.pem, key_file: k.key}}}}
routes:
  - {{name: a, match: {{host: a.example}}, resource: https://a.example, flow: vanilla, identity: app}}
"
        );
        f.load(&yaml).unwrap();
    }
    assert!(
        logs.text().contains("private key file is accessible"),
        "{}",
        logs.text()
    );
}
