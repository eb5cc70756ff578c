//! The end-to-end matrix through the real proxy: one routes.yaml with a route for every flow ×
//! identity kind × token type, served by `App` against one local authority. Each route is called
//! through popgate's listener (plain HTTP, absolute form) and the token-verifying resource must
//! accept what popgate forwarded over mTLS. The token-endpoint and IMDS call counts are computed
//! from the table and asserted exactly; a second round costs no token or IMDS call.

use crate::kit::app::*;

/// What one route of the matrix is, and what its first acquisition costs.
struct Row {
    route: Route,
    pop: bool,
}

fn pop(route: Route) -> Row {
    Row { route, pop: true }
}

fn bearer(route: Route) -> Row {
    Row { route, pop: false }
}

/// The matrix. Each comment says which calls the route adds to the authority's counts, given the
/// rows above it (shared leg 1s, one IMDSv2 certificate per managed identity name, identical
/// routes deduplicated).
fn matrix() -> Vec<Row> {
    let fic = |name: &str, leg1: &str, token_type: &str| {
        Route::new(
            name,
            GRAPH,
            &[
                "flow: fic",
                &format!("leg1: {leg1}"),
                "leg2: exchange",
                &format!("token_type: {token_type}"),
            ],
        )
    };
    let mut rows = vec![
        // Vanilla certificate app, PoP on the global mtlsauth host: Token +1.
        pop(Route::vanilla("app-pop", GRAPH, "app", "mtls_pop")),
        // Same app through region westus3 (another identity name, so another key): Token +1.
        pop(Route::vanilla(
            "app-west-pop",
            GRAPH,
            "app-west",
            "mtls_pop",
        )),
        // Vanilla certificate app, Bearer (login.* host, signed assertion): Token +1.
        bearer(Route::vanilla("app-bearer", GRAPH, "app", "bearer")),
        // Identical to app-pop on another path: shares its credential, costs nothing.
        pop(Route::vanilla("app-pop-again", GRAPH, "app", "mtls_pop")),
    ];
    // Managed identities × selectors: PoP is metadata +1, issuecredential +1, Token +1 per
    // identity name; Bearer is IMDS v1 +1.
    for id in ["sami", "uami", "uami-r", "uami-o"] {
        rows.push(pop(Route::vanilla(
            &format!("{id}-pop"),
            ARM,
            id,
            "mtls_pop",
        )));
        rows.push(bearer(Route::vanilla(
            &format!("{id}-bearer"),
            ARM,
            id,
            "bearer",
        )));
    }
    rows.extend([
        // Workload identity (federated token file, jwt-bearer): Token +1.
        bearer(Route::vanilla("wi-bearer", GRAPH, "wi", "bearer")),
        // Static token bound to a certificate: no call.
        pop(Route::vanilla("static-pop", GRAPH, "byo", "mtls_pop")),
        // FIC, MI leg 1 (uami's IMDSv2 certificate reused): leg 1 Token +1, leg 2 Token +1.
        bearer(fic("fic-mi-bearer", "uami", "bearer")),
        // Same leg 1, shared: leg 2 Token +1.
        pop(fic("fic-mi-pop", "uami", "mtls_pop")),
        // FIC, certificate-app leg 1: leg 1 Token +1, leg 2 Token +1.
        bearer(fic("fic-app-bearer", "app", "bearer")),
        // Same leg 1, shared: leg 2 Token +1.
        pop(fic("fic-app-pop", "app", "mtls_pop")),
        // Bearer-leg-1 extension, MI leg 1 over IMDS v1 (exchange audience): IMDS v1 +1. Its
        // final token shares fic-mi-bearer's cache entry — same leg 2, same leg-1 identity, same
        // resource, Bearer (no binding in the key) — so whichever of the two routes acquires
        // first, there is one leg-2 call between them: Token +0.
        bearer(Route::new(
            "ext-mi",
            GRAPH,
            &[
                "flow: fic",
                "leg1: uami",
                "leg1_token_type: bearer",
                "leg2: exchange",
                "token_type: bearer",
            ],
        )),
        // Bearer-leg-1 extension, workload identity leg 1: leg 1 Token +1, leg 2 Token +1.
        bearer(Route::new(
            "ext-wi",
            GRAPH,
            &[
                "flow: fic",
                "leg1: wi",
                "leg1_token_type: bearer",
                "leg2: exchange2",
                "token_type: bearer",
            ],
        )),
    ]);
    rows
}

/// The calls the matrix's first round must cost, from the comments in [`matrix`].
struct Expected {
    token: usize,
    imds_v1: usize,
    metadata: usize,
    issue_credential: usize,
}

const EXPECTED: Expected = Expected {
    // Vanilla: app-pop, app-west-pop, app-bearer (3) + 4 MI PoP + wi-bearer (1) = 8.
    // FIC: 2 leg 1s (uami, app) + 4 leg 2s = 6. Extension: ext-mi leg 2 shared with
    // fic-mi-bearer (0) + ext-wi leg 1 and leg 2 (2) = 2.
    token: 8 + 6 + 2,
    // 4 MI Bearer routes + the ext-mi Bearer leg 1.
    imds_v1: 5,
    // One IMDSv2 certificate per managed identity name (sami, uami, uami-r, uami-o).
    metadata: 4,
    issue_credential: 4,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flow_identity_and_token_type_through_the_proxy_with_exact_call_counts() {
    let env = Env::start().await;
    let rows = matrix();
    let routes: Vec<Route> = rows.iter().map(|r| r.route.clone()).collect();
    // The regional host goes through a counting forwarder: proof that app-west-pop (and only
    // it) used westus3.mtlsauth.microsoft.com.
    let (regional, regional_connections) = counting_forwarder(env.authority.token_addr()).await;
    let config = env.config_full(
        "app.pem",
        "app.key",
        &routes,
        &[("westus3.mtlsauth.microsoft.com", regional)],
    );
    let app = env.popgate(config).await;
    app.initial_round(INITIAL_ROUND_BOUND).await;
    for slot in app.routes() {
        assert!(
            slot.status().is_serving(),
            "route {} is not serving after the initial round: {:?}",
            slot.name(),
            slot.status()
        );
    }
    let proxy = app.local_addrs()[0];

    let mut app_cert_seen = None;
    let mut uami_cert = None;
    for row in &rows {
        let name = &row.route.name;
        let path = format!("{}v1.0/me", row.route.path());
        let answer = get(proxy, &path).await;
        if row.pop {
            let presented = check_pop(&answer, name);
            // The certificate-app PoP routes (vanilla, static and FIC with an app leg 1) all
            // present the app's certificate; the uami FIC PoP route presents uami's IMDSv2 one.
            match name.as_str() {
                "app-pop" | "app-west-pop" | "app-pop-again" | "static-pop" | "fic-app-pop" => {
                    assert_eq!(presented, env.app_credential.x5t_s256, "{name}");
                    app_cert_seen = Some(presented);
                }
                "uami-pop" => uami_cert = Some(presented),
                "fic-mi-pop" => assert_eq!(
                    Some(&presented),
                    uami_cert.as_ref(),
                    "FIC leg 2 is bound to leg 1's (uami's) certificate"
                ),
                _ => assert_ne!(presented, env.app_credential.x5t_s256, "{name}"),
            }
        } else {
            check_bearer(&answer, name);
        }
        let echo = answer.json();
        assert_eq!(echo["path"], path.as_str(), "{name}: {echo}");
        let audience = if row.route.resource == ARM {
            ARM
        } else {
            GRAPH
        };
        assert_eq!(echo["audience"], audience, "{name}: {echo}");
    }
    assert!(app_cert_seen.is_some());
    assert_eq!(
        regional_connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one connection (one token call) to the regional mtlsauth host"
    );

    let counts = |env: &Env| {
        [
            env.count(Endpoint::Token),
            env.count(Endpoint::ImdsV1Token),
            env.count(Endpoint::ImdsPlatformMetadata),
            env.count(Endpoint::ImdsIssueCredential),
        ]
    };
    let expected = [
        EXPECTED.token,
        EXPECTED.imds_v1,
        EXPECTED.metadata,
        EXPECTED.issue_credential,
    ];
    assert_eq!(
        counts(&env),
        expected,
        "[token, imds v1, metadata, issuecredential]: {:?}",
        env.authority.observations().log()
    );
    assert_eq!(env.count(Endpoint::Resource), rows.len());
    assert_eq!(env.count(Endpoint::AppService), 0);
    let log = env.authority.observations().log();
    assert!(
        log.iter().all(|r| r.status == 200),
        "every call the authority saw succeeded: {log:?}"
    );

    // Second round: everything is cached; only the resource sees traffic.
    for row in &rows {
        let answer = get(proxy, &format!("{}again", row.route.path())).await;
        assert_eq!(answer.status, 200, "{}: {}", row.route.name, answer.body);
    }
    assert_eq!(
        counts(&env),
        expected,
        "the second round reused every token"
    );
    assert_eq!(env.count(Endpoint::Resource), 2 * rows.len());

    app.shutdown().await;
}

/// The matrix's PoP assertions rest on the resource refusing an `mtls_pop` token that arrives
/// without its certificate, even though (for the Bearer rows) it lets callers connect without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resource_refuses_a_pop_token_without_its_certificate() {
    use http_body_util::BodyExt as _;
    use std::sync::Arc;

    let env = Env::start().await;
    let token = std::fs::read_to_string(env.path("static.jwt")).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(env.authority.pki().root_store().unwrap())
    .with_no_client_auth();
    let call = async {
        let tcp = tokio::net::TcpStream::connect(env.authority.resource_addr())
            .await
            .unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(
                rustls::pki_types::ServerName::try_from("graph.microsoft.com").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let request = http::Request::get("https://graph.microsoft.com/v1.0/me")
            .header(http::header::HOST, "graph.microsoft.com")
            .header(
                http::header::AUTHORIZATION,
                format!("mtls_pop {}", token.trim()),
            )
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        status
    };
    let status = tokio::time::timeout(REQUEST_BOUND, call)
        .await
        .expect("resource call in time");
    assert_eq!(status, 401);
    assert_eq!(env.resource_counts(), (1, 1));
}
