//! Single flight, Retry-After, retries (token endpoint 5xx, IMDS 410 / 5xx), IMDSv2 re-mint on
//! `invalid_client`, attestation, IMDS without v2 — each asserted by exact counts of the calls the
//! local authority saw.

use crate::kit::credentials::*;
use std::sync::Arc;
use std::time::SystemTime;

const UAMI_POP: &str = "    flow: vanilla\n    identity: uami";
const UAMI_BEARER: &str = "    flow: vanilla\n    identity: uami\n    token_type: bearer";

fn status(code: u16, retry_after: Option<u64>, body: Option<&str>) -> Fault {
    Fault::Status {
        code,
        retry_after,
        body: body.map(str::to_string),
    }
}

/// A fresh environment and its route to `resource` with `flow`, whose `endpoint` answers the
/// next `times` requests with `fault`.
async fn faulted(
    resource: &str,
    flow: &str,
    endpoint: Endpoint,
    fault: Fault,
    times: usize,
) -> (Env, Arc<dyn popgate::engine::credential::Credential>) {
    let env = start().await;
    let credential = one(&env, "", resource, flow);
    env.authority.faults().push(endpoint, fault, times);
    (env, credential)
}

async fn cold_burst(credential: Arc<dyn popgate::engine::credential::Credential>) {
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let c = Arc::clone(&credential);
        tasks.push(tokio::spawn(async move { try_get(&c).await }));
    }
    let mut generations = Vec::new();
    for t in tasks {
        generations.push(
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("{e}"))
                .generation,
        );
    }
    assert!(generations.iter().all(|g| *g == generations[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_cold_callers_cost_one_token_call() {
    let env = start().await;
    cold_burst(one(&env, "", GRAPH, APP_POP)).await;
    assert_eq!(env.count(Endpoint::Token), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_cold_callers_cost_one_imds_v2_mint_and_one_token_call() {
    let env = start().await;
    cold_burst(one(&env, "", GRAPH, UAMI_POP)).await;
    assert_eq!(env.count(Endpoint::ImdsPlatformMetadata), 1);
    assert_eq!(env.count(Endpoint::ImdsIssueCredential), 1);
    assert_eq!(env.count(Endpoint::Token), 1);
}

#[tokio::test]
async fn retry_after_blocks_identical_requests_until_it_passes() {
    let (env, credential) = faulted(
        GRAPH,
        APP_POP,
        Endpoint::Token,
        status(429, Some(1), None),
        1,
    )
    .await;
    let err = try_get(&credential).await.unwrap_err();
    assert!(err.message.contains("HTTP 429"), "{}", err.message);
    assert!(
        err.blocked_until.is_some(),
        "the first answer says how long"
    );
    // Blocked: no request leaves while the wait lasts.
    let again = try_get(&credential).await.unwrap_err();
    let until = again.blocked_until.expect("still blocked");
    assert!(again.message.contains("Retry-After"), "{}", again.message);
    assert_eq!(env.count(Endpoint::Token), 1, "429 is never retried");
    // After the wait, the next request goes out and succeeds.
    if let Ok(left) = until.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + std::time::Duration::from_millis(20)).await;
    }
    get(&credential).await;
    assert_eq!(env.count(Endpoint::Token), 2);
}

#[tokio::test]
async fn token_endpoint_5xx_is_retried_once() {
    let (env, credential) =
        faulted(GRAPH, APP_POP, Endpoint::Token, status(503, None, None), 1).await;
    get(&credential).await;
    assert_eq!(env.count(Endpoint::Token), 2);

    let (env, credential) =
        faulted(GRAPH, APP_POP, Endpoint::Token, status(500, None, None), 3).await;
    let err = try_get(&credential).await.unwrap_err();
    assert!(err.message.contains("HTTP 500"), "{}", err.message);
    assert!(
        err.message.contains("mtlsauth.microsoft.com"),
        "{}",
        err.message
    );
    assert_eq!(env.count(Endpoint::Token), 2, "exactly one retry");
}

#[tokio::test]
async fn token_endpoint_error_names_host_code_and_correlation_id() {
    let body = r#"{"error":"invalid_client","error_description":"AADSTS7000218: no credential","error_codes":[7000218],"correlation_id":"c0ffee00-0000-0000-0000-000000000001"}"#;
    let (env, credential) = faulted(
        GRAPH,
        APP_POP,
        Endpoint::Token,
        status(401, None, Some(body)),
        1,
    )
    .await;
    let err = try_get(&credential).await.unwrap_err();
    assert_eq!(err.aadsts, Some(7000218));
    assert_eq!(
        err.correlation_id.as_deref(),
        Some("c0ffee00-0000-0000-0000-000000000001")
    );
    assert!(
        err.message.contains("mtlsauth.microsoft.com") && err.message.contains("invalid_client"),
        "{}",
        err.message
    );
    assert_eq!(err.identity, "app");
    assert_eq!(env.count(Endpoint::Token), 1);
}

#[tokio::test]
async fn imds_410_is_retried_up_to_seven_times() {
    let (env, credential) = faulted(
        ARM,
        UAMI_BEARER,
        Endpoint::ImdsV1Token,
        status(410, None, None),
        3,
    )
    .await;
    get(&credential).await;
    assert_eq!(env.count(Endpoint::ImdsV1Token), 4);

    let (env, credential) = faulted(
        ARM,
        UAMI_BEARER,
        Endpoint::ImdsV1Token,
        status(410, None, None),
        20,
    )
    .await;
    let err = try_get(&credential).await.unwrap_err();
    assert!(err.message.contains("HTTP 410"), "{}", err.message);
    assert_eq!(env.count(Endpoint::ImdsV1Token), 8, "1 call + 7 retries");
}

#[tokio::test]
async fn imds_5xx_is_retried_three_times() {
    let (env, credential) = faulted(
        ARM,
        UAMI_BEARER,
        Endpoint::ImdsV1Token,
        status(500, None, None),
        20,
    )
    .await;
    let err = try_get(&credential).await.unwrap_err();
    assert!(err.message.contains("IMDS"), "{}", err.message);
    assert_eq!(env.count(Endpoint::ImdsV1Token), 4, "1 call + 3 retries");
}

#[tokio::test]
async fn invalid_client_on_the_imds_v2_token_call_re_mints_exactly_once() {
    let body = r#"{"error":"invalid_client","error_description":"AADSTS700027: certificate revoked","error_codes":[700027]}"#;
    let (env, credential) = faulted(
        GRAPH,
        UAMI_POP,
        Endpoint::Token,
        status(401, None, Some(body)),
        1,
    )
    .await;
    let got = get(&credential).await;
    assert_eq!(env.count(Endpoint::ImdsPlatformMetadata), 1);
    assert_eq!(env.count(Endpoint::ImdsIssueCredential), 2);
    assert_eq!(env.count(Endpoint::Token), 2);
    let log = env.authority.observations().log();
    let presented: Vec<_> = log
        .iter()
        .filter(|r| r.endpoint == Endpoint::Token)
        .map(|r| r.client_cert_x5t.clone().expect("cert presented"))
        .collect();
    assert_ne!(
        presented[0], presented[1],
        "the retry presents the new certificate"
    );
    assert_eq!(got.token.binding.as_ref().unwrap().x5t_s256(), presented[1]);
    assert_eq!(cnf(&got.token), presented[1]);
    assert_eq!(*credential.binding_changes().borrow(), 2);

    // A second refusal of the new certificate is reported, not re-minted again in a loop.
    env.authority
        .faults()
        .push(Endpoint::Token, status(401, None, Some(body)), 2);
    let err = tokio::time::timeout(CALL_TIMEOUT, credential.refresh(got.generation))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.message.contains("invalid_client"), "{}", err.message);
    assert_eq!(env.count(Endpoint::ImdsIssueCredential), 3);
    assert_eq!(env.count(Endpoint::Token), 4);
}

#[tokio::test]
async fn attestation_required_is_explained_and_the_hook_satisfies_it() {
    let (env, credential) = faulted(
        GRAPH,
        UAMI_POP,
        Endpoint::ImdsIssueCredential,
        Fault::AttestationRequired,
        1,
    )
    .await;
    let err = try_get(&credential).await.unwrap_err();
    assert!(
        err.message.to_lowercase().contains("attestation"),
        "{}",
        err.message
    );
    assert!(err.message.contains("hint"), "{}", err.message);
    assert_eq!(env.count(Endpoint::Token), 0);

    let hooked = format!(
        "\n  attested:\n    kind: managed_identity\n    client_id: {DEFAULT_UAMI_CLIENT_ID}\n    attestation_command: [/bin/sh, -c, \"echo maa-token-from-hook\"]\n"
    );
    let credential = one(
        &env,
        &hooked,
        GRAPH,
        "    flow: vanilla\n    identity: attested",
    );
    env.authority
        .faults()
        .push(Endpoint::ImdsIssueCredential, Fault::AttestationRequired, 1);
    get(&credential).await;

    let failing = format!(
        "\n  broken:\n    kind: managed_identity\n    client_id: {DEFAULT_UAMI_CLIENT_ID}\n    attestation_command: [/bin/sh, -c, \"exit 3\"]\n"
    );
    let credential = one(
        &env,
        &failing,
        GRAPH,
        "    flow: vanilla\n    identity: broken",
    );
    let err = try_get(&credential).await.unwrap_err();
    assert!(
        err.message.contains("attestation command") && err.message.contains("exit"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn imds_without_v2_is_a_clear_error_and_never_falls_back() {
    let mut config = popgate_authority::AuthorityConfig::default();
    config.imds.v2_enabled = false;
    let env = start_with(config).await;
    let credential = one(&env, "", GRAPH, UAMI_POP);
    let err = try_get(&credential).await.unwrap_err();
    assert!(
        err.message
            .contains("mtls_pop_token_not_supported_in_imds_v1"),
        "{}",
        err.message
    );
    // MSAL's IMDS retry table: the 404 is retried after 1, 2 and 4 s, and only then reported.
    assert_eq!(
        env.count(Endpoint::ImdsPlatformMetadata),
        4,
        "404 retried three times"
    );
    assert_eq!(env.count(Endpoint::ImdsV1Token), 0, "no Bearer fallback");
    assert_eq!(env.count(Endpoint::Token), 0);
}

#[tokio::test]
async fn dropped_connection_names_the_host() {
    app_pop_error(Fault::Drop).await;
}

#[tokio::test]
async fn invalidate_forgets_the_refused_token_and_the_next_get_acquires_once() {
    let env = start().await;
    let config = env.config(
        "",
        &routes(&[
            ("app", GRAPH, APP_POP),
            ("mi", GRAPH, UAMI_POP),
            ("mi-bearer", ARM, UAMI_BEARER),
            (
                "fic",
                GRAPH,
                "    flow: fic\n    leg1: app\n    leg2: exchange\n    token_type: mtls_pop",
            ),
        ]),
    );
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);
    for name in ["app", "mi", "mi-bearer", "fic"] {
        let credential = &creds[name];
        let first = get(credential).await;
        let calls = env.count(Endpoint::Token) + env.count(Endpoint::ImdsV1Token);
        // A stale generation is ignored: the cached token stays.
        credential.invalidate(first.generation + 1).await;
        assert_eq!(get(credential).await.generation, first.generation, "{name}");
        credential.invalidate(first.generation).await;
        let second = get(credential).await;
        assert!(second.generation > first.generation, "{name}");
        assert_eq!(
            env.count(Endpoint::Token) + env.count(Endpoint::ImdsV1Token),
            calls + 1,
            "{name}: one new acquisition (leg 1 of FIC is kept)"
        );
    }
}

#[tokio::test]
async fn refresh_is_shared_by_routes_and_a_failed_refresh_keeps_the_token() {
    let env = start().await;
    let credential = one(&env, "", GRAPH, UAMI_POP);
    let first = get(&credential).await;
    let refreshed = tokio::time::timeout(CALL_TIMEOUT, credential.refresh(first.generation))
        .await
        .unwrap()
        .unwrap();
    assert!(refreshed.generation > first.generation);
    assert_eq!(env.count(Endpoint::Token), 2);
    // A second route scheduled from the same first token gets the refreshed one for free.
    let shared = tokio::time::timeout(CALL_TIMEOUT, credential.refresh(first.generation))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shared.generation, refreshed.generation);
    assert_eq!(env.count(Endpoint::Token), 2);
    // The refresh of the current token fails: the still-usable token keeps being served.
    env.authority
        .faults()
        .push(Endpoint::Token, status(400, None, None), 1);
    let err = tokio::time::timeout(CALL_TIMEOUT, credential.refresh(refreshed.generation))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.message.contains("HTTP 400"), "{}", err.message);
    assert_eq!(get(&credential).await.generation, refreshed.generation);
    assert_eq!(env.count(Endpoint::Token), 3);
    // One certificate throughout: no IMDS call beyond the first mint.
    assert_eq!(env.count(Endpoint::ImdsIssueCredential), 1);
}
