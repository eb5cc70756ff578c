//! Every identity kind × token type × flow, built from a real routes.yaml by the real factory,
//! acquires a token from the local authority that the authority's resource accepts when presented
//! with the token's binding certificate — with the exact number of token-endpoint and IMDS calls.

use crate::kit::credentials::*;
use http::StatusCode;
use popgate::identity::token::TokenType;
use std::sync::Arc;

#[tokio::test]
async fn certificate_app_pop_global_and_regional_and_bearer() {
    let env = start().await;
    let config = env.config(
        "",
        &routes(&[
            (
                "pop",
                GRAPH,
                "    flow: vanilla\n    identity: app\n    token_type: mtls_pop",
            ),
            (
                "west",
                GRAPH,
                "    flow: vanilla\n    identity: app-west\n    token_type: mtls_pop",
            ),
            (
                "bearer",
                GRAPH,
                "    flow: vanilla\n    identity: app\n    token_type: bearer",
            ),
        ]),
    );
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);

    for name in ["pop", "west"] {
        let got = get(&creds[name]).await;
        assert_eq!(got.token.token_type, TokenType::MtlsPop);
        let binding = got.token.binding.as_ref().expect("PoP carries its binding");
        assert_eq!(binding.x5t_s256(), env.app_credential.x5t_s256);
        assert_eq!(cnf(&got.token), env.app_credential.x5t_s256);
        assert_eq!(
            env.call_resource("graph.microsoft.com", &got.token).await,
            StatusCode::OK
        );
    }
    let bearer = get(&creds["bearer"]).await;
    assert_eq!(bearer.token.token_type, TokenType::Bearer);
    assert!(bearer.token.binding.is_none());
    assert_eq!(
        env.call_resource("graph.microsoft.com", &bearer.token)
            .await,
        StatusCode::OK
    );
    // Cached: a second round costs nothing.
    for name in ["pop", "west", "bearer"] {
        get(&creds[name]).await;
    }
    assert_eq!(env.count(Endpoint::Token), 3);
    let log = env.authority.observations().log();
    assert!(log.iter().all(|r| r.status == 200), "{log:?}");
}

#[tokio::test]
async fn one_imds_v2_certificate_per_managed_identity_across_resources() {
    let env = start().await;
    let config = env.config(
        "",
        &routes(&[
            ("graph", GRAPH, "    flow: vanilla\n    identity: uami"),
            ("arm", ARM, "    flow: vanilla\n    identity: uami"),
            // Same (identity, resource, type) as `graph`: shares its credential.
            ("graph2", GRAPH, "    flow: vanilla\n    identity: uami"),
        ]),
    );
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);
    assert!(Arc::ptr_eq(&creds["graph"], &creds["graph2"]));

    let graph = get(&creds["graph"]).await;
    let arm = get(&creds["arm"]).await;
    get(&creds["graph2"]).await;
    let g = graph.token.binding.as_ref().unwrap();
    let a = arm.token.binding.as_ref().unwrap();
    assert_eq!(g.x5t_s256(), a.x5t_s256(), "one certificate per identity");
    assert_eq!(cnf(&graph.token), g.x5t_s256());
    assert_eq!(
        env.call_resource("graph.microsoft.com", &graph.token).await,
        StatusCode::OK
    );
    assert_eq!(
        env.call_resource("management.azure.com", &arm.token).await,
        StatusCode::OK
    );
    assert_eq!(env.count(Endpoint::ImdsPlatformMetadata), 1);
    assert_eq!(env.count(Endpoint::ImdsIssueCredential), 1);
    assert_eq!(env.count(Endpoint::Token), 2);
}

#[tokio::test]
async fn managed_identity_pop_and_bearer_for_every_selector() {
    let env = start().await;
    let mut list = Vec::new();
    let names: Vec<(String, String)> = ["sami", "uami", "uami-r", "uami-o"]
        .iter()
        .flat_map(|id| {
            [
                (
                    format!("{id}-pop"),
                    format!("    flow: vanilla\n    identity: {id}"),
                ),
                (
                    format!("{id}-bearer"),
                    format!("    flow: vanilla\n    identity: {id}\n    token_type: bearer"),
                ),
            ]
        })
        .collect();
    for (name, flow) in &names {
        list.push((name.as_str(), ARM, flow.as_str()));
    }
    let config = env.config("", &routes(&list));
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);
    for (name, _) in &names {
        let got = get(&creds[name]).await;
        let pop = name.ends_with("-pop");
        assert_eq!(got.token.binding.is_some(), pop, "{name}");
        assert_eq!(
            env.call_resource("management.azure.com", &got.token).await,
            StatusCode::OK,
            "{name}"
        );
    }
    // uami, uami-r and uami-o are the same managed identity, but three identities in the config:
    // each mints its own certificate (the cache key is the identity name).
    assert_eq!(env.count(Endpoint::ImdsPlatformMetadata), 4);
    assert_eq!(env.count(Endpoint::ImdsIssueCredential), 4);
    assert_eq!(env.count(Endpoint::Token), 4);
    assert_eq!(env.count(Endpoint::ImdsV1Token), 4);
}

#[tokio::test]
async fn fic_four_combinations_share_leg1_and_bind_to_the_leg1_certificate() {
    let env = start().await;
    let fic = |leg1: &str, tt: &str| {
        format!("    flow: fic\n    leg1: {leg1}\n    leg2: exchange\n    token_type: {tt}")
    };
    let (a, b, c, d) = (
        fic("app", "mtls_pop"),
        fic("app", "bearer"),
        fic("uami", "mtls_pop"),
        fic("uami", "bearer"),
    );
    let config = env.config(
        "",
        &routes(&[
            ("app-pop", GRAPH, &a),
            ("app-bearer", GRAPH, &b),
            ("mi-pop", GRAPH, &c),
            ("mi-bearer", GRAPH, &d),
        ]),
    );
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);

    let app_pop = get(&creds["app-pop"]).await;
    assert_eq!(
        app_pop.token.binding.as_ref().unwrap().x5t_s256(),
        env.app_credential.x5t_s256,
        "leg-2 PoP token is bound to the leg-1 certificate"
    );
    assert_eq!(cnf(&app_pop.token), env.app_credential.x5t_s256);
    assert_eq!(claims(&app_pop.token)["appid"], env.exchange.client_id);
    let app_bearer = get(&creds["app-bearer"]).await;
    assert!(app_bearer.token.binding.is_none());
    let mi_pop = get(&creds["mi-pop"]).await;
    let mi_cert = mi_pop
        .token
        .binding
        .as_ref()
        .unwrap()
        .x5t_s256()
        .to_string();
    assert_eq!(cnf(&mi_pop.token), mi_cert);
    let mi_bearer = get(&creds["mi-bearer"]).await;
    for got in [&app_pop, &app_bearer, &mi_pop, &mi_bearer] {
        assert_eq!(
            env.call_resource("graph.microsoft.com", &got.token).await,
            StatusCode::OK
        );
    }
    assert_eq!(creds["mi-pop"].labels().leg1.as_deref(), Some("uami"));
    // Two leg-1 tokens (app, uami), shared by both routes of each; four leg-2 tokens.
    assert_eq!(env.count(Endpoint::Token), 6);
    assert_eq!(env.count(Endpoint::ImdsIssueCredential), 1);
}

#[tokio::test]
async fn bearer_leg1_extension_and_workload_identity() {
    let env = start().await;
    // The workload identity's federated token: a Bearer token for the token exchange audience
    // that the `exchange` app trusts (the UAMI's), as a projected service-account token would be.
    let config = env.config(
        "",
        &routes(&[(
            "x",
            "api://AzureADTokenExchange",
            "    flow: vanilla\n    identity: uami\n    token_type: bearer",
        )]),
    );
    let deps = env.deps(&config);
    let federated = get(&env.build(&config, &deps)["x"]).await;
    std::fs::write(
        env.path("federated.jwt"),
        federated.token.access_token.expose_secret(),
    )
    .unwrap();
    env.authority.observations().clear();

    // A second leg-2 app that trusts the workload identity's app as its leg 1.
    let exchange2 = env
        .authority
        .directory()
        .register_fic_app(
            TENANT,
            &uuid::Uuid::new_v4().to_string(),
            vec![popgate_authority::FederatedCredential::for_identity(
                TENANT,
                &env.exchange.object_id,
            )],
        )
        .unwrap();
    let wi = format!(
        "\n  wi:\n    kind: workload_identity\n    client_id: {}\n    tenant_id: {TENANT}\n    token_file: federated.jwt\n  exchange2:\n    kind: confidential_client\n    tenant_id: {TENANT}\n    client_id: {}\n",
        env.exchange.client_id, exchange2.client_id
    );
    let config = env.config(
        &wi,
        &routes(&[
            ("wi", GRAPH, "    flow: vanilla\n    identity: wi\n    token_type: bearer"),
            (
                "mi-bearer-leg1",
                GRAPH,
                "    flow: fic\n    leg1: uami\n    leg1_token_type: bearer\n    leg2: exchange\n    token_type: bearer",
            ),
            (
                "wi-leg1",
                GRAPH,
                "    flow: fic\n    leg1: wi\n    leg1_token_type: bearer\n    leg2: exchange2\n    token_type: bearer",
            ),
        ]),
    );
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);
    for name in ["wi", "mi-bearer-leg1", "wi-leg1"] {
        let got = get(&creds[name]).await;
        assert_eq!(got.token.token_type, TokenType::Bearer);
        assert_eq!(
            env.call_resource("graph.microsoft.com", &got.token).await,
            StatusCode::OK,
            "{name}"
        );
    }
    assert_eq!(env.count(Endpoint::ImdsV1Token), 1);
    // wi (graph), mi-bearer-leg1 leg 2, wi-leg1 leg 1 and leg 2.
    assert_eq!(env.count(Endpoint::Token), 4);
}

#[tokio::test]
async fn the_static_kind_serves_its_file_bound_to_its_certificate() {
    let env = start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let tenant = env.authority.tenant_id().to_string();
    let claims = popgate_authority::claims::Claims {
        iss: format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        aud: GRAPH.into(),
        sub: env.app.client_id.clone(),
        tid: tenant,
        oid: env.app.client_id.clone(),
        appid: env.app.client_id.clone(),
        iat: now,
        nbf: now,
        exp: now + 3600,
        uti: "static-test".into(),
        ver: "2.0".into(),
        cnf: Some(popgate_authority::claims::Confirmation {
            x5t_s256: env.app_credential.x5t_s256.clone(),
        }),
    };
    let jwt = env.authority.signing_keys().sign(&claims).unwrap();
    std::fs::write(env.path("token.jwt"), format!("{jwt}\n")).unwrap();
    let byo = "\n  byo:\n    kind: static\n    token_file: token.jwt\n    certificate: { cert_file: app.pem, key_file: app.key }\n";
    let config = env.config(
        byo,
        &routes(&[("byo", GRAPH, "    flow: vanilla\n    identity: byo")]),
    );
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);
    let got = get(&creds["byo"]).await;
    assert_eq!(cnf(&got.token), env.app_credential.x5t_s256);
    // The resource verifies the signature, audience, expiry and the binding to the presented cert.
    assert_eq!(
        env.call_resource("graph.microsoft.com", &got.token).await,
        StatusCode::OK
    );
    // A static token costs no token-endpoint or IMDS call.
    assert_eq!(env.count(Endpoint::Token), 0);
}
