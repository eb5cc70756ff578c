//! ESTS parity with MSAL.NET against the local authority: `x5c` in the Bearer assertion of an app
//! registered by subject name + issuer, and the regional Bearer host.

use crate::kit::credentials::*;
use base64::Engine as _;
use http::StatusCode;
use popgate::identity::token::TokenType;

/// An app registered for subject name + issuer authentication (no thumbprint), its certificate
/// files `sni.pem` / `sni.key` in the environment's directory, and two identities on it: `sni`
/// (no `send_x5c`) and `sni-x5c` (`send_x5c: true`).
fn sni_identities(env: &Env) -> (popgate_authority::App, String) {
    let (app, credential) = env
        .authority
        .new_subject_name_app("popgate-sni-app")
        .unwrap();
    std::fs::write(env.path("sni.pem"), &credential.cert_pem).unwrap();
    std::fs::write(env.path("sni.key"), credential.key_pem.as_bytes()).unwrap();
    crate::kit::private_key_mode(&env.path("sni.key"));
    let identities = format!(
        r#"
  sni:
    kind: confidential_client
    tenant_id: {TENANT}
    client_id: {id}
    certificate: {{ cert_file: sni.pem, key_file: sni.key }}
  sni-x5c:
    kind: confidential_client
    tenant_id: {TENANT}
    client_id: {id}
    send_x5c: true
    certificate: {{ cert_file: sni.pem, key_file: sni.key }}"#,
        id = app.client_id
    );
    (app, identities)
}

#[tokio::test]
async fn a_subject_name_app_gets_a_bearer_token_only_with_x5c() {
    let env = start().await;
    let (app, identities) = sni_identities(&env);
    let config = env.config(
        &identities,
        &routes(&[
            (
                "plain",
                GRAPH,
                "    flow: vanilla\n    identity: sni\n    token_type: bearer",
            ),
            (
                "x5c",
                GRAPH,
                "    flow: vanilla\n    identity: sni-x5c\n    token_type: bearer",
            ),
        ]),
    );
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);

    // Without x5c the authority cannot find the key: AADSTS700027, as Entra ID answers.
    let err = try_get(&creds["plain"]).await.unwrap_err();
    assert!(err.message.contains("700027"), "{}", err.message);
    assert!(err.message.contains("x5c"), "{}", err.message);

    let got = get(&creds["x5c"]).await;
    assert_eq!(got.token.token_type, TokenType::Bearer);
    assert_eq!(claims(&got.token)["appid"], app.client_id.as_str());
    assert_eq!(
        env.call_resource("graph.microsoft.com", &got.token).await,
        StatusCode::OK
    );
    let log = env.authority.observations().log();
    let outcomes: Vec<(u16, &str)> = log
        .iter()
        .filter(|r| r.endpoint == Endpoint::Token)
        .map(|r| (r.status, r.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [(401, "invalid_client:700027"), (200, "bearer")],
        "{log:?}"
    );
}

#[tokio::test]
async fn the_x5c_header_carries_the_leaf_then_the_chain_of_the_certificate_file() {
    let env = start().await;
    let (_app, identities) = sni_identities(&env);
    // A chain file: the leaf, then the authority's CA (as a PEM bundle from a real CA would).
    let leaf_pem = std::fs::read_to_string(env.path("sni.pem")).unwrap();
    std::fs::write(
        env.path("sni.pem"),
        format!("{leaf_pem}{}", env.authority.ca_pem()),
    )
    .unwrap();
    let config = env.config(
        &identities,
        &routes(&[(
            "x5c",
            GRAPH,
            "    flow: vanilla\n    identity: sni-x5c\n    token_type: bearer",
        )]),
    );
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);
    // The authority takes the chain too (it checks the leaf against its trusted issuer).
    let got = get(&creds["x5c"]).await;
    assert_eq!(got.token.token_type, TokenType::Bearer);

    // The assertion itself, signed the way the engine signs it, shows the header.
    let binding =
        popgate::certs::cert_files::load_binding_cert(&env.path("sni.pem"), &env.path("sni.key"))
            .unwrap();
    let assertion = popgate::identity::client_assertion::sign_client_assertion(
        &binding,
        &popgate::identity::client_assertion::AssertionInput {
            client_id: "c",
            audience: "a",
            now: std::time::SystemTime::now(),
            include_x5c: true,
        },
    )
    .unwrap();
    let header = assertion.expose_secret().split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    let std_b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
    assert_eq!(
        header["x5c"],
        serde_json::json!([
            std_b64(binding.leaf_der().as_ref()),
            std_b64(env.authority.pki().ca_der().as_ref())
        ])
    );
    assert_eq!(header["x5t#S256"], binding.x5t_s256());
}

#[tokio::test]
async fn a_subject_name_app_gets_a_pop_token_with_its_certificate_in_tls() {
    // MSAL sends no assertion on the mTLS PoP path (the certificate and chain travel in the TLS
    // handshake), so `send_x5c` changes nothing there.
    let env = start().await;
    let (_app, identities) = sni_identities(&env);
    for identity in ["sni", "sni-x5c"] {
        let credential = one(
            &env,
            &identities,
            GRAPH,
            &format!("    flow: vanilla\n    identity: {identity}\n    token_type: mtls_pop"),
        );
        let got = get(&credential).await;
        assert_eq!(got.token.token_type, TokenType::MtlsPop);
        assert_eq!(
            env.call_resource("graph.microsoft.com", &got.token).await,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn a_regional_bearer_request_goes_to_the_regional_login_host() {
    let env = start().await;
    let config = env.config(
        "",
        &routes(&[
            (
                "west",
                GRAPH,
                "    flow: vanilla\n    identity: app-west\n    token_type: bearer",
            ),
            (
                "global",
                GRAPH,
                "    flow: vanilla\n    identity: app\n    token_type: bearer",
            ),
            (
                "west-pop",
                GRAPH,
                "    flow: vanilla\n    identity: app-west\n    token_type: mtls_pop",
            ),
        ]),
    );
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);
    for name in ["west", "global", "west-pop"] {
        let got = get(&creds[name]).await;
        assert_eq!(
            env.call_resource("graph.microsoft.com", &got.token).await,
            StatusCode::OK,
            "{name}"
        );
    }
    let hosts: Vec<(Option<String>, String)> = env
        .authority
        .observations()
        .log()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Token)
        .map(|r| (r.host, r.outcome))
        .collect();
    assert_eq!(
        hosts,
        [
            (
                Some("westus3.login.microsoft.com".to_string()),
                "bearer".to_string()
            ),
            (
                Some("login.microsoftonline.com".to_string()),
                "bearer".to_string()
            ),
            (
                Some("westus3.mtlsauth.microsoft.com".to_string()),
                "mtls_pop".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn ext_expires_in_of_zero_or_over_30_days_and_a_late_refresh_in_do_not_fail_a_token() {
    for (ext, refresh) in [
        (Some(0), None),
        (Some(31 * 24 * 3600), None),
        (None, Some(3599)),
        (None, Some(7200)),
    ] {
        // A fresh environment each time (the token cache would answer otherwise).
        let env = start().await;
        let settings = env.authority.settings();
        let mut tokens = settings.tokens();
        tokens.ext_lifetime = ext.map(std::time::Duration::from_secs);
        tokens.refresh_in = refresh.map(std::time::Duration::from_secs);
        settings.set_tokens(tokens);
        let credential = one(&env, "", GRAPH, APP_POP);
        let got = get(&credential).await;
        // A refresh_in that is not before expires_in names no refresh time: dropped.
        assert_eq!(got.token.refresh_in, None, "{ext:?} {refresh:?}");
        assert_eq!(
            env.call_resource("graph.microsoft.com", &got.token).await,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn the_attestation_command_is_given_the_endpoint_client_id_and_the_key_to_attest() {
    let env = start().await;
    // IMDS insists on an attestation token, so the mint fails unless the command ran.
    env.authority
        .faults()
        .push(Endpoint::ImdsIssueCredential, Fault::AttestationRequired, 1);
    let seen = env.path("attested.txt");
    let identities = format!(
        r#"
  attested:
    kind: managed_identity
    attestation_command: [/bin/sh, -c, 'printf "%s\n%s\n%s\n%s\n" "$POPGATE_ATTESTATION_ENDPOINT" "$POPGATE_ATTESTATION_CLIENT_ID" "$POPGATE_ATTESTATION_TENANT_ID" "$POPGATE_ATTESTATION_PUBLIC_KEY" > {seen}; echo maa-token']"#,
        seen = seen.display()
    );
    let credential = one(
        &env,
        &identities,
        GRAPH,
        "    flow: vanilla\n    identity: attested\n    token_type: mtls_pop",
    );
    let got = get(&credential).await;
    let binding = got.token.binding.as_ref().expect("PoP binding");
    let (_, cert) = x509_parser::parse_x509_certificate(binding.leaf_der().as_ref()).unwrap();
    let spki = base64::engine::general_purpose::STANDARD.encode(cert.public_key().raw);
    let lines: Vec<String> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "https://attestation.authority.invalid".to_string(),
            DEFAULT_SAMI_CLIENT_ID.to_string(),
            TENANT.to_string(),
            spki,
        ]
    );
    assert_eq!(
        env.call_resource("graph.microsoft.com", &got.token).await,
        StatusCode::OK
    );
}
