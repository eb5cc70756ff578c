//! FIC two-leg flow (protocol.md §5): leg 1 (certificate app or managed identity, PoP) for
//! `api://AzureADTokenExchange`; leg 2 (confidential client) with `client_assertion` = the leg-1
//! token, `jwt-pop` over mTLS with the leg-1 certificate; and the Bearer-leg-1 extension
//! (`jwt-bearer` at `login.*`).

use crate::kit::token::*;
use popgate_authority::claims::{Claims, Confirmation};
use popgate_authority::directory::{DEFAULT_UAMI_CLIENT_ID, DEFAULT_UAMI_OBJECT_ID};
use popgate_authority::{App, Authority, FederatedCredential};

/// A leg-1 certificate app and a leg-2 FIC app trusting it.
async fn setup() -> (Authority, App, ClientCert, App) {
    let authority = start().await;
    let (leg1, credential) = authority.new_certificate_app("leg1").unwrap();
    let leg2 = authority
        .directory()
        .register_fic_app(
            TENANT,
            &uuid::Uuid::new_v4().to_string(),
            vec![FederatedCredential::for_identity(TENANT, &leg1.object_id)],
        )
        .unwrap();
    (
        authority,
        leg1,
        ClientCert::from_credential(&credential),
        leg2,
    )
}

async fn leg1_pop(authority: &Authority, leg1: &App, cert: &ClientCert) -> String {
    post_token(
        authority,
        MTLS,
        Some(cert),
        &pop_form(&leg1.client_id, EXCHANGE_SCOPE),
    )
    .await
    .token()
}

fn leg2_form<'a>(
    client_id: &'a str,
    assertion: &'a str,
    assertion_type: &'a str,
    pop: bool,
) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("client_id", client_id),
        ("grant_type", "client_credentials"),
        ("scope", GRAPH_SCOPE),
        ("client_info", "2"),
        ("client_assertion", assertion),
        ("client_assertion_type", assertion_type),
    ];
    if pop {
        form.push(("token_type", "mtls_pop"));
    }
    form
}

#[tokio::test]
async fn leg2_pop_and_bearer_over_mtls_with_the_leg1_certificate() {
    let (authority, leg1, cert, leg2) = setup().await;
    let assertion = leg1_pop(&authority, &leg1, &cert).await;
    assert_eq!(claims_of(&assertion)["aud"], "api://AzureADTokenExchange");

    let pop = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &leg2_form(&leg2.client_id, &assertion, JWT_POP, true),
    )
    .await;
    assert_eq!(pop.json()["token_type"], "mtls_pop");
    let claims = authority
        .signing_keys()
        .verify(&pop.token(), "https://graph.microsoft.com")
        .unwrap();
    assert_eq!(claims.cnf.unwrap().x5t_s256, cert.x5t());
    assert_eq!(claims.appid, leg2.client_id);
    assert_eq!(claims.oid, leg2.object_id);

    // Bearer leg 2: no token_type, same mTLS host and certificate.
    let bearer = post_token(
        &authority,
        "westus3.mtlsauth.microsoft.com",
        Some(&cert),
        &leg2_form(&leg2.client_id, &assertion, JWT_POP, false),
    )
    .await;
    assert_eq!(bearer.json()["token_type"], "Bearer");
    assert!(claims_of(&bearer.token()).get("cnf").is_none());
}

#[tokio::test]
async fn managed_identity_leg1_then_confidential_client_leg2() {
    let authority = start().await;
    let cert = binding_cert(&authority, DEFAULT_UAMI_CLIENT_ID, TENANT);
    let leg1 = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(DEFAULT_UAMI_CLIENT_ID, EXCHANGE_SCOPE),
    )
    .await
    .token();
    let leg2 = authority
        .directory()
        .register_fic_app(
            TENANT,
            &uuid::Uuid::new_v4().to_string(),
            vec![FederatedCredential::for_identity(
                TENANT,
                DEFAULT_UAMI_OBJECT_ID,
            )],
        )
        .unwrap();
    let answer = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &leg2_form(&leg2.client_id, &leg1, JWT_POP, true),
    )
    .await;
    assert_eq!(claims_of(&answer.token())["cnf"]["x5t#S256"], cert.x5t());
}

#[tokio::test]
async fn a_managed_identity_can_never_be_leg2() {
    let (authority, leg1, cert, _) = setup().await;
    let assertion = leg1_pop(&authority, &leg1, &cert).await;
    let d = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &leg2_form(DEFAULT_UAMI_CLIENT_ID, &assertion, JWT_POP, true),
    )
    .await
    .refused(401, 700027);
    assert!(d.contains("managed identit"), "{d}");
}

#[tokio::test]
async fn pop_assertion_presented_with_another_certificate_is_500181() {
    let (authority, leg1, cert, leg2) = setup().await;
    let assertion = leg1_pop(&authority, &leg1, &cert).await;
    let other =
        ClientCert::from_credential(&authority.pki().issue_app_credential("other").unwrap());
    let answer = post_token(
        &authority,
        MTLS,
        Some(&other),
        &leg2_form(&leg2.client_id, &assertion, JWT_POP, true),
    )
    .await;
    answer.refused(401, 500181);
    assert_eq!(answer.error(), "invalid_client");
    // And with no certificate at all.
    post_token(
        &authority,
        MTLS,
        None,
        &leg2_form(&leg2.client_id, &assertion, JWT_POP, true),
    )
    .await
    .refused(401, 500181);
}

#[tokio::test]
async fn wrong_assertion_type_for_leg2_is_refused() {
    let (authority, leg1, cert, leg2) = setup().await;
    let assertion = leg1_pop(&authority, &leg1, &cert).await;
    let d = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &leg2_form(&leg2.client_id, &assertion, JWT_BEARER, true),
    )
    .await
    .refused(400, 90023);
    assert!(d.contains("jwt-pop"), "{d}");
    let d = post_token(
        &authority,
        LOGIN,
        None,
        &leg2_form(&leg2.client_id, &assertion, JWT_POP, false),
    )
    .await
    .refused(400, 90023);
    assert!(d.contains("jwt-bearer"), "{d}");
}

#[tokio::test]
async fn a_pop_leg1_token_is_refused_as_a_bearer_assertion_at_login() {
    let (authority, leg1, cert, leg2) = setup().await;
    let assertion = leg1_pop(&authority, &leg1, &cert).await;
    post_token(
        &authority,
        LOGIN,
        None,
        &leg2_form(&leg2.client_id, &assertion, JWT_BEARER, false),
    )
    .await
    .refused(401, 500181);
}

#[tokio::test]
async fn bearer_leg1_is_accepted_as_jwt_bearer_at_login_only() {
    let (authority, leg1, _, leg2) = setup().await;
    // A Bearer leg-1 token (as IMDS v1 or a private_key_jwt app would get): forge it with the
    // authority's own key, exactly as it would have been issued.
    let now = unix_now();
    let bearer_leg1 = authority
        .signing_keys()
        .sign(&Claims {
            iss: format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            aud: "api://AzureADTokenExchange".into(),
            sub: leg1.object_id.clone(),
            tid: TENANT.into(),
            oid: leg1.object_id.clone(),
            appid: leg1.client_id.clone(),
            iat: now,
            nbf: now,
            exp: now + 600,
            uti: "u".into(),
            ver: "2.0".into(),
            cnf: None,
        })
        .unwrap();
    let answer = post_token(
        &authority,
        LOGIN,
        None,
        &leg2_form(&leg2.client_id, &bearer_leg1, JWT_BEARER, false),
    )
    .await;
    assert_eq!(answer.json()["token_type"], "Bearer");
    // The same Bearer token as jwt-pop over mTLS has nothing to bind to.
    let cert = ClientCert::from_credential(&authority.pki().issue_app_credential("x").unwrap());
    let d = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &leg2_form(&leg2.client_id, &bearer_leg1, JWT_POP, true),
    )
    .await
    .refused(401, 500181);
    assert!(d.contains("no cnf"), "{d}");
}

fn forged(
    authority: &Authority,
    leg1: &App,
    aud: &str,
    exp_offset: i64,
    cnf: Option<String>,
) -> String {
    let now = unix_now();
    authority
        .signing_keys()
        .sign(&Claims {
            iss: format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            aud: aud.into(),
            sub: leg1.object_id.clone(),
            tid: TENANT.into(),
            oid: leg1.object_id.clone(),
            appid: leg1.client_id.clone(),
            iat: now - 3600,
            nbf: now - 3600,
            exp: now.checked_add_signed(exp_offset).unwrap(),
            uti: "u".into(),
            ver: "2.0".into(),
            cnf: cnf.map(|x5t_s256| Confirmation { x5t_s256 }),
        })
        .unwrap()
}

#[tokio::test]
async fn expired_and_wrong_audience_leg1_tokens_are_refused() {
    let (authority, leg1, cert, leg2) = setup().await;
    let expired = forged(
        &authority,
        &leg1,
        "api://AzureADTokenExchange",
        -10,
        Some(cert.x5t()),
    );
    let d = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &leg2_form(&leg2.client_id, &expired, JWT_POP, true),
    )
    .await
    .refused(401, 700024);
    assert!(d.contains("expired"), "{d}");

    // A graph token is not an exchange assertion.
    let graph = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(&leg1.client_id, GRAPH_SCOPE),
    )
    .await
    .token();
    post_token(
        &authority,
        MTLS,
        Some(&cert),
        &leg2_form(&leg2.client_id, &graph, JWT_POP, true),
    )
    .await
    .refused(401, 700212);

    // A token signed by somebody else.
    let other = popgate_authority::SigningKeys::generate().unwrap();
    let now = unix_now();
    let foreign = other
        .sign(&Claims {
            iss: format!("https://login.microsoftonline.com/{TENANT}/v2.0"),
            aud: "api://AzureADTokenExchange".into(),
            sub: leg1.object_id.clone(),
            tid: TENANT.into(),
            oid: leg1.object_id.clone(),
            appid: leg1.client_id.clone(),
            iat: now,
            nbf: now,
            exp: now + 600,
            uti: "u".into(),
            ver: "2.0".into(),
            cnf: Some(Confirmation {
                x5t_s256: cert.x5t(),
            }),
        })
        .unwrap();
    let d = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &leg2_form(&leg2.client_id, &foreign, JWT_POP, true),
    )
    .await
    .refused(401, 700027);
    assert!(d.contains("signature"), "{d}");
}

#[tokio::test]
async fn leg2_app_must_trust_the_leg1_identity() {
    let (authority, _, _, leg2) = setup().await;
    // Another app gets a leg-1 token: same issuer, untrusted subject.
    let (stranger, credential) = authority.new_certificate_app("stranger").unwrap();
    let cert = ClientCert::from_credential(&credential);
    let assertion = leg1_pop(&authority, &stranger, &cert).await;
    let d = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &leg2_form(&leg2.client_id, &assertion, JWT_POP, true),
    )
    .await
    .refused(401, 70021);
    assert!(d.contains(&stranger.object_id), "{d}");

    // An app trusting only another issuer.
    let picky = authority
        .directory()
        .register_fic_app(
            TENANT,
            &uuid::Uuid::new_v4().to_string(),
            vec![FederatedCredential {
                issuer: "https://token.actions.githubusercontent.com".into(),
                subject: stranger.object_id.clone(),
            }],
        )
        .unwrap();
    post_token(
        &authority,
        MTLS,
        Some(&cert),
        &leg2_form(&picky.client_id, &assertion, JWT_POP, true),
    )
    .await
    .refused(401, 700211);

    // A FIC-only app has no certificate: a certificate alone gets nothing.
    let d = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(&leg2.client_id, GRAPH_SCOPE),
    )
    .await
    .refused(401, 700027);
    assert!(d.contains("not registered"), "{d}");
}
