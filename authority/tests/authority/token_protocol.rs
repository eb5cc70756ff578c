//! The token endpoint's request rules that hold for every credential kind (method, media type,
//! form keys, grant type, scope, SNI/Host), h2, discovery documents, faults and settings.

use std::time::Duration;

use crate::kit::token::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use popgate_authority::{Authority, Endpoint, Fault};

async fn pop_app(authority: &Authority) -> (String, ClientCert) {
    let (app, credential) = authority.new_certificate_app("proto").unwrap();
    (app.client_id, ClientCert::from_credential(&credential))
}

async fn raw(
    authority: &Authority,
    sni: Option<&str>,
    cert: Option<&ClientCert>,
    request: Request<Full<Bytes>>,
) -> Answer {
    send(
        authority,
        Dial {
            addr: authority.token_addr(),
            sni,
            cert,
            h2: false,
        },
        request,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn post_only() {
    let authority = start().await;
    let answer = raw(
        &authority,
        Some(MTLS),
        None,
        Request::get(format!("/{TENANT}/oauth2/v2.0/token"))
            .header("host", MTLS)
            .body(Full::default())
            .unwrap(),
    )
    .await;
    let d = answer.refused(405, 900561);
    assert!(d.contains("Received a GET request"), "{d}");
}

#[tokio::test]
async fn form_encoding_only_and_no_duplicate_keys() {
    let authority = start().await;
    let (client_id, cert) = pop_app(&authority).await;
    let form = form_body(&pop_form(&client_id, GRAPH_SCOPE));
    for content_type in [Some("application/json"), Some("text/plain"), None] {
        let mut builder =
            Request::post(format!("/{TENANT}/oauth2/v2.0/token")).header("host", MTLS);
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        let answer = raw(
            &authority,
            Some(MTLS),
            Some(&cert),
            builder.body(Full::new(Bytes::from(form.clone()))).unwrap(),
        )
        .await;
        let d = answer.refused(400, 90023);
        assert!(d.contains("application/x-www-form-urlencoded"), "{d}");
    }
    // charset parameter is fine.
    let ok = raw(
        &authority,
        Some(MTLS),
        Some(&cert),
        Request::post(format!("/{TENANT}/oauth2/v2.0/token"))
            .header("host", MTLS)
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(Full::new(Bytes::from(form.clone())))
            .unwrap(),
    )
    .await;
    ok.token();
    let mut duplicated = pop_form(&client_id, GRAPH_SCOPE);
    duplicated.push(("scope", "https://management.azure.com/.default"));
    let d = post_token(&authority, MTLS, Some(&cert), &duplicated)
        .await
        .refused(400, 90023);
    assert!(d.contains("'scope' more than once"), "{d}");
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let authority = start().await;
    let (client_id, cert) = pop_app(&authority).await;
    let padding = "x".repeat(popgate_authority::token_endpoint::MAX_TOKEN_REQUEST_BODY);
    let mut form = pop_form(&client_id, GRAPH_SCOPE);
    form.push(("padding", &padding));
    let d = post_token(&authority, MTLS, Some(&cert), &form)
        .await
        .refused(400, 90023);
    assert!(d.contains("at most"), "{d}");
}

#[tokio::test]
async fn required_parameters_and_grant_type() {
    let authority = start().await;
    let (client_id, cert) = pop_app(&authority).await;
    for missing in ["grant_type", "client_id", "scope"] {
        let mut form = pop_form(&client_id, GRAPH_SCOPE);
        form.retain(|(k, _)| *k != missing);
        let d = post_token(&authority, MTLS, Some(&cert), &form)
            .await
            .refused(400, 900144);
        assert!(d.contains(&format!("'{missing}'")), "{d}");
    }
    let mut form = pop_form(&client_id, GRAPH_SCOPE);
    form[1] = ("grant_type", "password");
    let answer = post_token(&authority, MTLS, Some(&cert), &form).await;
    answer.refused(400, 70003);
    assert_eq!(answer.error(), "unsupported_grant_type");
}

#[tokio::test]
async fn scope_rules() {
    let authority = start().await;
    let (client_id, cert) = pop_app(&authority).await;
    for (scope, code, error) in [
        (
            "https://graph.microsoft.com/.default https://management.azure.com/.default",
            70011,
            "invalid_scope",
        ),
        (
            "https://graph.microsoft.com/User.Read",
            70011,
            "invalid_scope",
        ),
        ("https://graph.microsoft.com", 70011, "invalid_scope"),
        (
            "https://unknown.example.com/.default",
            500011,
            "invalid_resource",
        ),
        ("user.read/.default", 500011, "invalid_resource"),
    ] {
        let answer = post_token(&authority, MTLS, Some(&cert), &pop_form(&client_id, scope)).await;
        answer.refused(400, code);
        assert_eq!(answer.error(), error, "{scope}");
    }
    // A resource registered at run time becomes a valid scope.
    authority
        .directory()
        .add_resource(popgate_authority::Resource {
            audience: "api://my-api".into(),
            hosts: vec!["my-api.example.com".into()],
            accepts: popgate_authority::directory::AcceptedTokens {
                bearer: false,
                mtls_pop: true,
            },
        })
        .unwrap();
    let token = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(&client_id, "api://my-api/.default"),
    )
    .await
    .token();
    assert_eq!(claims_of(&token)["aud"], "api://my-api");
    assert_eq!(
        authority
            .directory()
            .resource_for_host("my-api.example.com")
            .unwrap()
            .audience,
        "api://my-api"
    );
}

#[tokio::test]
async fn sni_must_be_present_and_agree_with_host() {
    let authority = start().await;
    let (client_id, cert) = pop_app(&authority).await;
    let form = pop_form(&client_id, GRAPH_SCOPE);
    // Dialled by IP: no SNI.
    let d = raw(
        &authority,
        None,
        Some(&cert),
        token_request(MTLS, TENANT, &form),
    )
    .await
    .refused(400, 90023);
    assert!(d.contains("no server name"), "{d}");
    // SNI says mtlsauth, Host says login.
    let d = raw(
        &authority,
        Some(MTLS),
        Some(&cert),
        token_request(LOGIN, TENANT, &form),
    )
    .await
    .refused(400, 90023);
    assert!(d.contains("does not match the TLS server name"), "{d}");
    // A name the certificate covers but that is no token host.
    let d = raw(
        &authority,
        Some("localhost"),
        Some(&cert),
        token_request("localhost", TENANT, &form),
    )
    .await
    .refused(400, 90023);
    assert!(d.contains("not a token host"), "{d}");
    // Host with the :443 port is the same host.
    raw(
        &authority,
        Some(MTLS),
        Some(&cert),
        token_request("mtlsauth.microsoft.com:443", TENANT, &form),
    )
    .await
    .token();
}

#[tokio::test]
async fn h2_is_served() {
    let authority = start().await;
    let (client_id, cert) = pop_app(&authority).await;
    let request = Request::post(format!("https://{MTLS}/{TENANT}/oauth2/v2.0/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form_body(&pop_form(
            &client_id,
            GRAPH_SCOPE,
        )))))
        .unwrap();
    let answer = send(
        &authority,
        Dial {
            addr: authority.token_addr(),
            sni: Some(MTLS),
            cert: Some(&cert),
            h2: true,
        },
        request,
    )
    .await
    .unwrap();
    assert_eq!(answer.json()["token_type"], "mtls_pop");
}

#[tokio::test]
async fn jwks_and_openid_configuration() {
    let authority = start().await;
    let get = |path: String| {
        Request::get(path)
            .header("host", LOGIN)
            .body(Full::default())
            .unwrap()
    };
    let jwks = raw(
        &authority,
        Some(LOGIN),
        None,
        get(format!("/{TENANT}/discovery/v2.0/keys")),
    )
    .await
    .json();
    assert_eq!(jwks["keys"][0]["kid"], authority.signing_keys().kid());
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    let config = raw(
        &authority,
        Some(LOGIN),
        None,
        get(format!("/{TENANT}/v2.0/.well-known/openid-configuration")),
    )
    .await
    .json();
    assert_eq!(
        config["token_endpoint"],
        format!("https://{LOGIN}/{TENANT}/oauth2/v2.0/token")
    );
    assert_eq!(
        config["jwks_uri"],
        format!("https://{LOGIN}/{TENANT}/discovery/v2.0/keys")
    );
    assert_eq!(
        config["issuer"],
        format!("https://login.microsoftonline.com/{TENANT}/v2.0")
    );
    let missing = raw(&authority, Some(LOGIN), None, get("/nothing/here".into())).await;
    assert_eq!(missing.status.as_u16(), 404);
}

#[tokio::test]
async fn throttling_and_server_error_faults_then_recovery() {
    let authority = start().await;
    let (client_id, cert) = pop_app(&authority).await;
    let form = pop_form(&client_id, GRAPH_SCOPE);
    authority.faults().push(
        Endpoint::Token,
        Fault::Status {
            code: 429,
            retry_after: Some(120),
            body: None,
        },
        2,
    );
    authority.faults().push(
        Endpoint::Token,
        Fault::Status {
            code: 503,
            retry_after: None,
            body: None,
        },
        1,
    );
    for _ in 0..2 {
        let answer = post_token(&authority, MTLS, Some(&cert), &form).await;
        assert_eq!(answer.status.as_u16(), 429);
        assert_eq!(answer.headers["retry-after"], "120");
        let vector = vector("ests-throttled-429.json");
        assert_eq!(sorted_keys(&answer.json()), sorted_keys(&vector));
        assert_eq!(answer.json()["error_codes"], vector["error_codes"]);
    }
    let answer = post_token(&authority, MTLS, Some(&cert), &form).await;
    assert_eq!(answer.status.as_u16(), 503);
    assert!(answer.headers.get("retry-after").is_none());
    assert!(answer.description().starts_with("AADSTS90033:"));
    post_token(&authority, MTLS, Some(&cert), &form)
        .await
        .token();
    let outcomes: Vec<(u16, String)> = authority
        .observations()
        .log()
        .into_iter()
        .map(|r| (r.status, r.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (429, "fault_status".into()),
            (429, "fault_status".into()),
            (503, "fault_status".into()),
            (200, "mtls_pop".into())
        ]
    );
}

#[tokio::test]
async fn drop_delay_and_custom_body_faults() {
    let authority = start().await;
    let (client_id, cert) = pop_app(&authority).await;
    let form = pop_form(&client_id, GRAPH_SCOPE);
    authority.faults().push(Endpoint::Token, Fault::Drop, 1);
    let dropped = send(
        &authority,
        Dial {
            addr: authority.token_addr(),
            sni: Some(MTLS),
            cert: Some(&cert),
            h2: false,
        },
        token_request(MTLS, TENANT, &form),
    )
    .await;
    assert!(dropped.is_err(), "{dropped:?}");
    authority
        .faults()
        .push(Endpoint::Token, Fault::Delay { millis: 1 }, 1);
    post_token(&authority, MTLS, Some(&cert), &form)
        .await
        .token();
    authority.faults().push(
        Endpoint::Token,
        Fault::Status {
            code: 429,
            retry_after: None,
            body: Some("Too many requests error".into()),
        },
        1,
    );
    let answer = post_token(&authority, MTLS, Some(&cert), &form).await;
    assert_eq!(answer.status.as_u16(), 429);
    assert_eq!(&answer.body[..], b"Too many requests error");
    authority
        .faults()
        .set_latency(Endpoint::Token, Duration::from_millis(1));
    post_token(&authority, MTLS, Some(&cert), &form)
        .await
        .token();
    let log = authority.observations().log();
    assert_eq!(log[0].status, 0);
    assert_eq!(log[0].outcome, "fault_drop");
    assert_eq!(authority.observations().count(Endpoint::Token), 4);
    assert_eq!(authority.observations().successes(Endpoint::Token), 2);
}

#[tokio::test]
async fn settings_change_lifetime_refresh_in_and_number_form_at_run_time() {
    let authority = start().await;
    let (client_id, cert) = pop_app(&authority).await;
    let form = pop_form(&client_id, GRAPH_SCOPE);
    authority.settings().set_lifetime(Duration::from_secs(7200));
    authority
        .settings()
        .set_refresh_in(Some(Duration::from_secs(3600)));
    let answer = post_token(&authority, MTLS, Some(&cert), &form).await;
    let body = answer.json();
    assert_eq!(body["expires_in"], 7200);
    assert_eq!(body["refresh_in"], 3600);
    let claims = claims_of(&answer.token());
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        7200
    );
    authority.settings().set_numbers_as_strings(true);
    authority.settings().set_refresh_in(None);
    let body = post_token(&authority, MTLS, Some(&cert), &form)
        .await
        .json();
    assert_eq!(body["expires_in"], "7200");
    assert!(body.get("refresh_in").is_none());
}

#[tokio::test]
async fn nothing_secret_is_logged_in_observations() {
    let authority = start().await;
    let (client_id, cert) = pop_app(&authority).await;
    let token = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(&client_id, GRAPH_SCOPE),
    )
    .await
    .token();
    let log = serde_json::to_string(&authority.observations().log()).unwrap();
    assert!(!log.contains(&token));
    assert!(!log.contains(token.split('.').nth(2).unwrap()));
}
