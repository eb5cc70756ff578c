//! Certificate app, Bearer: a private_key_jwt `client_assertion` (jwt-bearer) at a `login.*` host.

use crate::kit::token::*;
use jsonwebtoken::Algorithm;
use popgate_authority::{App, AppCredential};
use serde_json::json;

fn bearer_form<'a>(client_id: &'a str, signed: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", client_id),
        ("grant_type", "client_credentials"),
        ("scope", GRAPH_SCOPE),
        ("client_info", "2"),
        ("client_assertion", signed),
        ("client_assertion_type", JWT_BEARER),
    ]
}

async fn app() -> (popgate_authority::Authority, App, AppCredential) {
    let authority = start().await;
    let (app, credential) = authority.new_certificate_app("bearer-app").unwrap();
    (authority, app, credential)
}

fn signed(credential: &AppCredential, app: &App, overrides: serde_json::Value) -> String {
    assertion(
        credential,
        Algorithm::RS256,
        KeyRef::X5tS256,
        &app.client_id,
        &token_audience(LOGIN),
        overrides,
    )
}

#[tokio::test]
async fn rs256_and_ps256_with_x5t_or_x5c_get_bearer_tokens() {
    let (authority, app, credential) = app().await;
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        for key_ref in [KeyRef::X5tS256, KeyRef::X5c] {
            for host in [LOGIN, "login.microsoftonline.us"] {
                let signed = assertion(
                    &credential,
                    alg,
                    key_ref,
                    &app.client_id,
                    &token_audience(host),
                    json!({}),
                );
                let answer = post_token(
                    &authority,
                    host,
                    None,
                    &bearer_form(&app.client_id, &signed),
                )
                .await;
                assert_eq!(answer.json()["token_type"], "Bearer");
                let claims = authority
                    .signing_keys()
                    .verify(&answer.token(), "https://graph.microsoft.com")
                    .unwrap();
                assert_eq!(claims.cnf, None);
                assert_eq!(claims.appid, app.client_id);
            }
        }
    }
    assert_eq!(
        authority
            .observations()
            .successes(popgate_authority::Endpoint::Token),
        8
    );
}

#[tokio::test]
async fn no_credential_at_all_matches_the_invalid_client_vector() {
    let (authority, app, _) = app().await;
    let answer = post_token(
        &authority,
        LOGIN,
        None,
        &[
            ("client_id", &app.client_id),
            ("grant_type", "client_credentials"),
            ("scope", GRAPH_SCOPE),
        ],
    )
    .await;
    answer.refused(400, 7000218);
    let vector = vector("ests-error-invalid-client-400.json");
    let body = answer.json();
    assert_eq!(sorted_keys(&body), sorted_keys(&vector));
    assert_eq!(body["error"], vector["error"]);
    assert!(
        body["error_description"].as_str().unwrap().starts_with(
            vector["error_description"]
                .as_str()
                .unwrap()
                .split("Trace ID")
                .next()
                .unwrap()
        )
    );
    // The correlation id echoes client-request-id, and is echoed back as a header.
    assert_eq!(
        answer.headers["client-request-id"].to_str().unwrap(),
        body["correlation_id"].as_str().unwrap()
    );
    assert!(body["description"].is_null());
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains(body["trace_id"].as_str().unwrap())
    );
}

#[tokio::test]
async fn assertion_claim_refusals() {
    let (authority, app, credential) = app().await;
    let now = unix_now();
    let cases: Vec<(&str, serde_json::Value, u64, &str)> = vec![
        (
            "wrong aud",
            json!({"aud": token_audience(MTLS)}),
            700027,
            "audience",
        ),
        (
            "aud of another tenant",
            json!({"aud": format!("https://{LOGIN}/00000000-0000-0000-0000-000000000001/oauth2/v2.0/token")}),
            700027,
            "audience",
        ),
        ("aud missing", json!({"aud": null}), 700027, "'aud'"),
        (
            "iss not the client",
            json!({"iss": "someone"}),
            700027,
            "'iss'",
        ),
        (
            "sub not the client",
            json!({"sub": "someone"}),
            700027,
            "'sub'",
        ),
        (
            "expired",
            json!({"exp": now - 5}),
            700024,
            "valid time range",
        ),
        (
            "exp absurdly far",
            json!({"exp": now + 30 * 24 * 3600}),
            700024,
            "more than",
        ),
        ("exp missing", json!({"exp": null}), 700027, "'exp'"),
        (
            "nbf in the future",
            json!({"nbf": now + 600}),
            700024,
            "valid from",
        ),
        ("jti missing", json!({"jti": null}), 700027, "'jti'"),
        ("jti empty", json!({"jti": ""}), 700027, "'jti'"),
    ];
    for (what, overrides, code, needle) in cases {
        let signed = signed(&credential, &app, overrides);
        let answer = post_token(
            &authority,
            LOGIN,
            None,
            &bearer_form(&app.client_id, &signed),
        )
        .await;
        assert_eq!(answer.status.as_u16(), 401, "{what}: {:?}", answer.body);
        assert_eq!(answer.code(), code, "{what}: {}", answer.description());
        assert_eq!(answer.error(), "invalid_client", "{what}");
        assert!(
            answer.description().contains(needle),
            "{what}: {}",
            answer.description()
        );
    }
}

#[tokio::test]
async fn a_replayed_assertion_is_refused() {
    let (authority, app, credential) = app().await;
    let signed = signed(&credential, &app, json!({}));
    post_token(
        &authority,
        LOGIN,
        None,
        &bearer_form(&app.client_id, &signed),
    )
    .await
    .token();
    let description = post_token(
        &authority,
        LOGIN,
        None,
        &bearer_form(&app.client_id, &signed),
    )
    .await
    .refused(401, 700027);
    assert!(description.contains("already been used"), "{description}");
}

#[tokio::test]
async fn signature_and_key_refusals() {
    let (authority, app, credential) = app().await;
    let stranger = authority.pki().issue_app_credential("stranger").unwrap();

    // Names an unregistered certificate.
    let by_stranger = assertion(
        &stranger,
        Algorithm::RS256,
        KeyRef::X5tS256,
        &app.client_id,
        &token_audience(LOGIN),
        json!({}),
    );
    let d = post_token(
        &authority,
        LOGIN,
        None,
        &bearer_form(&app.client_id, &by_stranger),
    )
    .await
    .refused(401, 700027);
    assert!(d.contains("not registered"), "{d}");

    // Names the registered certificate but is signed by another key.
    let forged = {
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.x5t_s256 = Some(credential.x5t_s256.clone());
        let now = unix_now();
        let claims = json!({"aud": token_audience(LOGIN), "iss": app.client_id, "sub": app.client_id,
            "exp": now + 600, "nbf": now, "jti": uuid::Uuid::new_v4().to_string()});
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(stranger.key_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let d = post_token(
        &authority,
        LOGIN,
        None,
        &bearer_form(&app.client_id, &forged),
    )
    .await
    .refused(401, 700027);
    assert!(d.contains("invalid signature"), "{d}");

    // Names no certificate.
    let anonymous = assertion(
        &credential,
        Algorithm::RS256,
        KeyRef::Neither,
        &app.client_id,
        &token_audience(LOGIN),
        json!({}),
    );
    let d = post_token(
        &authority,
        LOGIN,
        None,
        &bearer_form(&app.client_id, &anonymous),
    )
    .await
    .refused(401, 700027);
    assert!(d.contains("'x5t#S256' or 'x5c'"), "{d}");

    // HS256 with a guessable secret, and alg=none.
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.x5t_s256 = Some(credential.x5t_s256.clone());
    let now = unix_now();
    let claims = json!({"aud": token_audience(LOGIN), "iss": app.client_id, "sub": app.client_id,
        "exp": now + 600, "nbf": now, "jti": "x"});
    let hs = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let d = post_token(&authority, LOGIN, None, &bearer_form(&app.client_id, &hs))
        .await
        .refused(401, 700027);
    assert!(d.contains("'HS256' is not supported"), "{d}");
    let mut parts: Vec<&str> = hs.split('.').collect();
    use base64::Engine as _;
    let none_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"alg": "none", "x5t#S256": credential.x5t_s256}).to_string());
    parts[0] = &none_header;
    parts[2] = "";
    let none = parts.join(".");
    let d = post_token(&authority, LOGIN, None, &bearer_form(&app.client_id, &none))
        .await
        .refused(401, 700027);
    assert!(d.contains("'none' is not supported"), "{d}");

    // Not a JWT at all.
    let d = post_token(
        &authority,
        LOGIN,
        None,
        &bearer_form(&app.client_id, "not-a-jwt"),
    )
    .await
    .refused(401, 700027);
    assert!(d.contains("not a JWT"), "{d}");
}

#[tokio::test]
async fn assertion_shape_refusals() {
    let (authority, app, credential) = app().await;
    let signed = signed(&credential, &app, json!({}));

    // Wrong assertion type.
    let mut form = bearer_form(&app.client_id, &signed);
    form.retain(|(k, _)| *k != "client_assertion_type");
    let mut pop_type = form.clone();
    pop_type.push(("client_assertion_type", JWT_POP));
    let d = post_token(&authority, LOGIN, None, &pop_type)
        .await
        .refused(400, 90023);
    assert!(d.contains("client_assertion_type must be"), "{d}");

    // Assertion without its type, type without an assertion.
    let d = post_token(&authority, LOGIN, None, &form)
        .await
        .refused(400, 900144);
    assert!(d.contains("'client_assertion_type'"), "{d}");
    let mut type_only = bearer_form(&app.client_id, &signed);
    type_only.retain(|(k, _)| *k != "client_assertion");
    let d = post_token(&authority, LOGIN, None, &type_only)
        .await
        .refused(400, 900144);
    assert!(d.contains("'client_assertion'"), "{d}");

    // A managed identity cannot use an assertion.
    let mi = popgate_authority::directory::DEFAULT_UAMI_CLIENT_ID;
    let mi_assertion = assertion(
        &credential,
        Algorithm::RS256,
        KeyRef::X5tS256,
        mi,
        &token_audience(LOGIN),
        json!({}),
    );
    let d = post_token(&authority, LOGIN, None, &bearer_form(mi, &mi_assertion))
        .await
        .refused(401, 700027);
    assert!(d.contains("managed identit"), "{d}");
}
