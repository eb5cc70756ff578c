//! Certificate app, mTLS PoP (protocol.md §1): the registered certificate in TLS, `token_type=mtls_pop`,
//! no client assertion, on a `[region.]mtlsauth.*` host only.

use crate::kit::token::*;

#[tokio::test]
async fn certificate_app_gets_a_pop_token_bound_to_its_certificate() {
    let authority = start().await;
    let (app, credential) = authority.new_certificate_app("pop-app").unwrap();
    let cert = ClientCert::from_credential(&credential);
    for host in [
        MTLS,
        "westus3.mtlsauth.microsoft.com",
        "mtlsauth.microsoftonline.us",
        "eastus.mtlsauth.partner.microsoftonline.cn",
    ] {
        let answer = post_token(
            &authority,
            host,
            Some(&cert),
            &pop_form(&app.client_id, GRAPH_SCOPE),
        )
        .await;
        let body = answer.json();
        assert_eq!(body["token_type"], "mtls_pop", "{host}");
        assert_eq!(body["expires_in"], 3599);
        assert_eq!(body["ext_expires_in"], 3599);
        assert!(body.get("refresh_in").is_none());
        let token = answer.token();
        // Verifies with the published signing key, for the resource's audience, bound to the cert.
        let claims = authority
            .signing_keys()
            .verify(&token, "https://graph.microsoft.com")
            .unwrap();
        assert_eq!(claims.cnf.unwrap().x5t_s256, credential.x5t_s256);
        assert_eq!(claims.appid, app.client_id);
        assert_eq!(claims.oid, app.object_id);
        assert_eq!(claims.tid, TENANT);
        assert_eq!(
            claims.iss,
            format!("https://login.microsoftonline.com/{TENANT}/v2.0")
        );
    }
    let log = authority.observations().log();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|r| r.status == 200
        && r.outcome == "mtls_pop"
        && r.client_cert_x5t.as_deref() == Some(credential.x5t_s256.as_str())
        && r.client_id.as_deref() == Some(app.client_id.as_str())));
}

#[tokio::test]
async fn success_body_has_the_vector_keys_and_the_scope_trailing_slash_is_insignificant() {
    let authority = start().await;
    let (app, credential) = authority.new_certificate_app("pop-app").unwrap();
    let cert = ClientCert::from_credential(&credential);
    let answer = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(&app.client_id, "https://management.azure.com//.default"),
    )
    .await;
    let body = answer.json();
    let vector = vector("ests-cc-token-mtls-pop-200.json");
    for key in ["token_type", "expires_in", "access_token"] {
        assert!(vector.get(key).is_some());
        assert!(body.get(key).is_some(), "{key} missing from {body}");
    }
    assert_eq!(body["token_type"], vector["token_type"]);
    assert_eq!(
        claims_of(&answer.token())["aud"],
        "https://management.azure.com"
    );
}

#[tokio::test]
async fn rotation_accepts_every_registered_certificate_and_not_a_removed_one() {
    let authority = start().await;
    let (app, old) = authority.new_certificate_app("rotating").unwrap();
    let new = authority.pki().issue_app_credential("rotating").unwrap();
    authority
        .directory()
        .add_certificate(&app.client_id, new.cert_der.as_ref())
        .unwrap();
    for credential in [&old, &new] {
        let cert = ClientCert::from_credential(credential);
        let token = post_token(
            &authority,
            MTLS,
            Some(&cert),
            &pop_form(&app.client_id, GRAPH_SCOPE),
        )
        .await
        .token();
        assert_eq!(claims_of(&token)["cnf"]["x5t#S256"], credential.x5t_s256);
    }
    authority
        .directory()
        .remove_certificate(&app.client_id, &old.x5t_s256)
        .unwrap();
    let cert = ClientCert::from_credential(&old);
    post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(&app.client_id, GRAPH_SCOPE),
    )
    .await
    .refused(401, 700027);
}

#[tokio::test]
async fn unregistered_certificate_is_refused() {
    let authority = start().await;
    let (app, _) = authority.new_certificate_app("pop-app").unwrap();
    let stranger = authority.pki().issue_app_credential("stranger").unwrap();
    let cert = ClientCert::from_credential(&stranger);
    let description = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(&app.client_id, GRAPH_SCOPE),
    )
    .await
    .refused(401, 700027);
    assert!(description.contains("not registered"), "{description}");
    assert!(description.contains(&stranger.x5t_s256));
}

#[tokio::test]
async fn no_client_certificate_on_the_mtls_host_is_refused() {
    let authority = start().await;
    let (app, _) = authority.new_certificate_app("pop-app").unwrap();
    let answer = post_token(
        &authority,
        MTLS,
        None,
        &pop_form(&app.client_id, GRAPH_SCOPE),
    )
    .await;
    let description = answer.refused(400, 7000218);
    assert_eq!(answer.error(), "invalid_client");
    assert!(
        description.contains("No client certificate"),
        "{description}"
    );
}

#[tokio::test]
async fn pop_without_token_type_is_refused() {
    let authority = start().await;
    let (app, credential) = authority.new_certificate_app("pop-app").unwrap();
    let cert = ClientCert::from_credential(&credential);
    let mut form = pop_form(&app.client_id, GRAPH_SCOPE);
    form.retain(|(k, _)| *k != "token_type");
    let description = post_token(&authority, MTLS, Some(&cert), &form)
        .await
        .refused(400, 90023);
    assert!(
        description.contains("token_type=mtls_pop is required"),
        "{description}"
    );
}

#[tokio::test]
async fn client_assertion_on_certificate_pop_is_refused() {
    let authority = start().await;
    let (app, credential) = authority.new_certificate_app("pop-app").unwrap();
    let cert = ClientCert::from_credential(&credential);
    let signed = assertion(
        &credential,
        jsonwebtoken::Algorithm::RS256,
        KeyRef::X5tS256,
        &app.client_id,
        &token_audience(MTLS),
        serde_json::json!({}),
    );
    let mut form = pop_form(&app.client_id, GRAPH_SCOPE);
    form.push(("client_assertion", &signed));
    form.push(("client_assertion_type", JWT_BEARER));
    let description = post_token(&authority, MTLS, Some(&cert), &form)
        .await
        .refused(400, 90023);
    assert!(
        description.contains("must not carry a client_assertion"),
        "{description}"
    );
}

#[tokio::test]
async fn pop_on_a_login_host_is_refused() {
    let authority = start().await;
    let (app, credential) = authority.new_certificate_app("pop-app").unwrap();
    let cert = ClientCert::from_credential(&credential);
    for host in [LOGIN, "login.microsoftonline.us", "sts.windows.net"] {
        let description = post_token(
            &authority,
            host,
            Some(&cert),
            &pop_form(&app.client_id, GRAPH_SCOPE),
        )
        .await
        .refused(400, 90023);
        assert!(
            description.contains("only issued by mtlsauth hosts"),
            "{description}"
        );
    }
    // And a certificate alone is no credential at login.*: ESTS does not read TLS certs there.
    let mut form = pop_form(&app.client_id, GRAPH_SCOPE);
    form.retain(|(k, _)| *k != "token_type");
    post_token(&authority, LOGIN, Some(&cert), &form)
        .await
        .refused(400, 7000218);
}

#[tokio::test]
async fn unknown_token_type_is_refused() {
    let authority = start().await;
    let (app, credential) = authority.new_certificate_app("pop-app").unwrap();
    let cert = ClientCert::from_credential(&credential);
    let mut form = pop_form(&app.client_id, GRAPH_SCOPE);
    form.retain(|(k, _)| *k != "token_type");
    for token_type in ["pop", "Bearer", "MTLS_POP"] {
        let mut with = form.clone();
        with.push(("token_type", token_type));
        post_token(&authority, MTLS, Some(&cert), &with)
            .await
            .refused(400, 90023);
    }
}

#[tokio::test]
async fn tenants_must_be_real_and_known() {
    let authority = start().await;
    let (app, credential) = authority.new_certificate_app("pop-app").unwrap();
    let cert = ClientCert::from_credential(&credential);
    let form = pop_form(&app.client_id, GRAPH_SCOPE);
    for (tenant, code) in [
        ("common", 50059),
        ("organizations", 50059),
        ("contoso.onmicrosoft.com", 90002),
        ("00000000-0000-0000-0000-000000000001", 90002),
    ] {
        let answer = send(
            &authority,
            Dial {
                addr: authority.token_addr(),
                sni: Some(MTLS),
                cert: Some(&cert),
                h2: false,
            },
            token_request(MTLS, tenant, &form),
        )
        .await
        .unwrap();
        answer.refused(400, code);
    }
}

#[tokio::test]
async fn an_app_of_another_tenant_is_unknown_here() {
    let authority = start().await;
    let other_tenant = "11111111-2222-3333-4444-555555555555";
    authority.directory().add_tenant(other_tenant).unwrap();
    let credential = authority.pki().issue_app_credential("elsewhere").unwrap();
    let client_id = uuid::Uuid::new_v4().to_string();
    authority
        .directory()
        .register_certificate_app(other_tenant, &client_id, credential.cert_der.as_ref())
        .unwrap();
    let cert = ClientCert::from_credential(&credential);
    let answer = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(&client_id, GRAPH_SCOPE),
    )
    .await;
    answer.refused(400, 700016);
    assert_eq!(answer.error(), "unauthorized_client");
}

#[tokio::test]
async fn unknown_client_is_refused_with_700016() {
    let authority = start().await;
    let (_, credential) = authority.new_certificate_app("pop-app").unwrap();
    let cert = ClientCert::from_credential(&credential);
    let unknown = uuid::Uuid::new_v4().to_string();
    let description = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(&unknown, GRAPH_SCOPE),
    )
    .await
    .refused(400, 700016);
    assert!(description.contains(&unknown));
}

#[tokio::test]
async fn a_resumed_tls_session_still_carries_the_client_certificate() {
    let authority = start().await;
    let (app, credential) = authority.new_certificate_app("resuming").unwrap();
    let cert = ClientCert::from_credential(&credential);
    let config = client_config(
        authority.pki().root_store().unwrap(),
        Some(&cert),
        &[b"http/1.1"],
    );
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let answer = tokio::time::timeout(
            REQUEST_TIMEOUT,
            send_with_config(
                config.clone(),
                Dial {
                    addr: authority.token_addr(),
                    sni: Some(MTLS),
                    cert: None,
                    h2: false,
                },
                token_request(MTLS, TENANT, &pop_form(&app.client_id, GRAPH_SCOPE)),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(
            claims_of(&answer.token())["cnf"]["x5t#S256"],
            credential.x5t_s256
        );
        kinds.push(answer.handshake);
    }
    assert_eq!(
        kinds,
        vec![
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

#[tokio::test]
async fn an_expired_registered_certificate_is_refused() {
    let authority = start().await;
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "expired-app");
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(7200)).into();
    params.not_after = (now - std::time::Duration::from_secs(3600)).into();
    let cert = params.self_signed(&key).unwrap();
    let client_id = uuid::Uuid::new_v4().to_string();
    authority
        .directory()
        .register_certificate_app(TENANT, &client_id, cert.der().as_ref())
        .unwrap();
    let client = ClientCert {
        chain: vec![cert.der().clone()],
        key: rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    };
    let d = post_token(
        &authority,
        MTLS,
        Some(&client),
        &pop_form(&client_id, GRAPH_SCOPE),
    )
    .await
    .refused(401, 700027);
    assert!(d.contains("expired"), "{d}");
}
