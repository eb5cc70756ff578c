//! `build_credential_set` with a previous set (what a reload does): unchanged credentials are the
//! same `Arc` and their cached token is served without a new acquisition; a changed identity, a
//! FIC whose leg changed, and a changed network get new credentials.

use std::sync::Arc;

use crate::kit::credentials::*;
use popgate::engine::build::build_credential_set;

fn routes() -> String {
    "  - name: graph\n    match: { host: graph.microsoft.com }\n    resource: https://graph.microsoft.com\n    flow: vanilla\n    identity: app\n  - name: west\n    match: { host: graph.microsoft.com, path_prefix: /west/ }\n    resource: https://graph.microsoft.com\n    flow: vanilla\n    identity: app-west\n  - name: fic\n    match: { path_prefix: /fic/ }\n    upstream: https://graph.microsoft.com\n    resource: https://graph.microsoft.com\n    flow: fic\n    leg1: app\n    leg2: exchange\n    token_type: bearer\n".to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_credentials_are_reused_with_their_tokens_and_changed_ones_are_not() {
    let env = start().await;
    let config = env.config("", &routes());
    let deps = env.deps(&config);
    let first = build_credential_set(&config, &deps, None).unwrap();
    let graph = Arc::clone(&first.by_route["graph"]);
    tokio::time::timeout(CALL_TIMEOUT, graph.get())
        .await
        .unwrap()
        .unwrap();
    let acquired = env.count(Endpoint::Token);
    assert_eq!(acquired, 1);

    // The same file again: every credential is the same Arc, and the token is not re-acquired.
    let config = env.config("", &routes());
    let second = build_credential_set(&config, &deps, Some(&first)).unwrap();
    for name in ["graph", "west", "fic"] {
        assert!(
            Arc::ptr_eq(&first.by_route[name], &second.by_route[name]),
            "{name} was rebuilt"
        );
    }
    tokio::time::timeout(CALL_TIMEOUT, second.by_route["graph"].get())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(env.count(Endpoint::Token), acquired);

    // `app` changes (another region): its vanilla route and the FIC route using it as leg 1 get
    // new credentials; `app-west` is untouched.
    let edited = std::fs::read_to_string(env.path("routes.yaml")).unwrap().replacen(
        "    certificate: { cert_file: app.pem, key_file: app.key }\n  app-west:",
        "    certificate: { cert_file: app.pem, key_file: app.key }\n    region: eastus\n  app-west:",
        1,
    );
    std::fs::write(env.path("routes.yaml"), edited).unwrap();
    let config = popgate::config::load_with_env(&env.path("routes.yaml"), &|_| None).unwrap();
    let third = build_credential_set(&config, &deps, Some(&second)).unwrap();
    assert!(!Arc::ptr_eq(
        &second.by_route["graph"],
        &third.by_route["graph"]
    ));
    assert!(!Arc::ptr_eq(
        &second.by_route["fic"],
        &third.by_route["fic"]
    ));
    assert!(Arc::ptr_eq(
        &second.by_route["west"],
        &third.by_route["west"]
    ));

    // Other engine dependencies (what a changed `network` builds): nothing is reused.
    let other_deps = env.deps(&config);
    let fourth = build_credential_set(&config, &other_deps, Some(&third)).unwrap();
    for name in ["graph", "west", "fic"] {
        assert!(
            !Arc::ptr_eq(&third.by_route[name], &fourth.by_route[name]),
            "{name} was reused across engine dependencies"
        );
    }
}
