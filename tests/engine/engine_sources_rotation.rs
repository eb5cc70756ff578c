//! Binding-certificate lifecycle: certificate files swapped the Kubernetes way (a symlinked
//! directory replaced atomically), a same-key renewal, a half-written update, and an IMDSv2
//! certificate re-minted before it expires. Each change fires `binding_changes` and the next token
//! is bound to (and accepted with) the new certificate.

use crate::kit::credentials::*;
use http::StatusCode;
use popgate::engine::credential::Credential;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn write_pair(dir: &Path, cert_pem: &str, key_pem: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tls.crt"), cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), key_pem).unwrap();
    crate::kit::private_key_mode(&dir.join("tls.key"));
}

/// Points `link` at `target` atomically (a new symlink renamed over the old), as kubelet does.
fn swap_symlink(env: &Env, target: &str, link: &str) {
    let tmp = env.path(&format!("{link}.tmp"));
    std::os::unix::fs::symlink(env.path(target), &tmp).unwrap();
    std::fs::rename(&tmp, env.path(link)).unwrap();
}

fn rotating_identity(env: &Env) -> String {
    format!(
        "\n  rotating:\n    kind: confidential_client\n    tenant_id: {TENANT}\n    client_id: {}\n    certificate: {{ cert_file: live/tls.crt, key_file: live/tls.key }}\n",
        env.app.client_id
    )
}

/// The app's own certificate at `v1`, `live` pointing at it, and a route on the `rotating`
/// identity that reads `live`.
fn rotating_credential(env: &Env) -> Arc<dyn Credential> {
    write_pair(
        &env.path("v1"),
        &env.app_credential.cert_pem,
        &env.app_credential.key_pem,
    );
    swap_symlink(env, "v1", "live");
    one(
        env,
        &rotating_identity(env),
        GRAPH,
        "    flow: vanilla\n    identity: rotating\n    token_type: mtls_pop",
    )
}

#[tokio::test]
async fn symlink_swap_gives_a_new_binding_and_a_token_bound_to_it() {
    let env = start().await;
    let credential = rotating_credential(&env);
    let first = get(&credential).await;
    assert_eq!(cnf(&first.token), env.app_credential.x5t_s256);
    let seen = *credential.binding_changes().borrow();

    // A new credential for the same app, registered next to the old one (rotation overlap).
    let next = env.register_rotated_credential();
    write_pair(&env.path("v2"), &next.cert_pem, &next.key_pem);
    swap_symlink(&env, "v2", "live");

    let now = binding_changed(&credential, seen).await;
    assert_eq!(now, seen + 1);
    let second = get(&credential).await;
    assert_eq!(
        second.token.binding.as_ref().unwrap().x5t_s256(),
        next.x5t_s256
    );
    assert_eq!(
        cnf(&second.token),
        next.x5t_s256,
        "cnf is the new thumbprint"
    );
    assert_eq!(
        env.call_resource("graph.microsoft.com", &second.token)
            .await,
        StatusCode::OK
    );
    assert_eq!(env.count(Endpoint::Token), 2);
}

#[tokio::test]
async fn same_key_renewal_is_a_new_binding_and_a_new_token() {
    let env = start().await;
    let credential = rotating_credential(&env);
    let first = get(&credential).await;
    let seen = *credential.binding_changes().borrow();

    // Renew: a new certificate for the very same key.
    let key = rcgen::KeyPair::from_pem(&env.app_credential.key_pem).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "popgate-app renewed");
    let renewed = params.self_signed(&key).unwrap();
    let renewed_x5t = popgate::certs::binding::x5t_s256(renewed.der());
    env.authority
        .directory()
        .add_certificate(&env.app.client_id, renewed.der())
        .unwrap();
    write_pair(&env.path("v2"), &renewed.pem(), &env.app_credential.key_pem);
    swap_symlink(&env, "v2", "live");

    binding_changed(&credential, seen).await;
    let second = get(&credential).await;
    assert_ne!(renewed_x5t, env.app_credential.x5t_s256);
    assert_eq!(cnf(&second.token), renewed_x5t);
    assert_ne!(
        first.token.access_token.expose_secret(),
        second.token.access_token.expose_secret()
    );
    assert_eq!(env.count(Endpoint::Token), 2);
}

#[tokio::test]
async fn a_half_written_update_keeps_the_old_certificate_until_it_is_complete() {
    let env = start().await;
    let credential = one(&env, "", GRAPH, APP_POP);
    get(&credential).await;
    let seen = *credential.binding_changes().borrow();
    let next = env.register_rotated_credential();
    // In place, one file at a time: the certificate first (it does not match the old key, so
    // it cannot be loaded), then garbage in the key, then the right key.
    std::fs::write(env.path("app.pem"), &next.cert_pem).unwrap();
    std::fs::write(env.path("app.key"), "not a key").unwrap();
    // The old certificate is still the one in use.
    let during = get(&credential).await;
    assert_eq!(cnf(&during.token), env.app_credential.x5t_s256);
    std::fs::write(env.path("app.key"), next.key_pem.as_bytes()).unwrap();
    let now = binding_changed(&credential, seen).await;
    assert_eq!(
        now,
        seen + 1,
        "exactly one change: the broken states were not installed"
    );
    let after = get(&credential).await;
    assert_eq!(cnf(&after.token), next.x5t_s256);
}

#[tokio::test]
async fn imds_v2_certificate_is_re_minted_before_it_expires() {
    let mut config = popgate_authority::AuthorityConfig::default();
    // Short enough that "half the lifetime" comes within the test; long enough for the calls.
    config.imds.cert_lifetime = Duration::from_secs(4);
    let env = start_with(config).await;
    let routes = routes(&[
        ("graph", GRAPH, "    flow: vanilla\n    identity: uami"),
        ("arm", ARM, "    flow: vanilla\n    identity: uami"),
    ]);
    let config = env.config("", &routes);
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);
    let first = get(&creds["graph"]).await;
    let first_cert = first.token.binding.clone().unwrap();
    get(&creds["arm"]).await;
    assert_eq!(*creds["graph"].binding_changes().borrow(), 1);

    // Wait until the certificate is inside its renewal window (half its lifetime), then ask again.
    let renew_at = first_cert.not_after() - Duration::from_secs(1);
    if let Ok(left) = renew_at.duration_since(SystemTime::now()) {
        tokio::time::sleep(left + Duration::from_millis(100)).await;
    }
    let second = get(&creds["graph"]).await;
    let second_cert = second.token.binding.clone().unwrap();
    assert_ne!(second_cert.x5t_s256(), first_cert.x5t_s256());
    assert_eq!(cnf(&second.token), second_cert.x5t_s256());
    // The other resource of the identity moves to the same new certificate.
    let arm = get(&creds["arm"]).await;
    assert_eq!(
        arm.token.binding.as_ref().unwrap().x5t_s256(),
        second_cert.x5t_s256()
    );
    assert_eq!(*creds["arm"].binding_changes().borrow(), 2);
    assert_eq!(env.count(Endpoint::ImdsPlatformMetadata), 1);
    assert_eq!(env.count(Endpoint::ImdsIssueCredential), 2);
    assert_eq!(env.count(Endpoint::Token), 4);
    // The retired certificate's keep-alive client is gone: one for the current certificate.
    assert_eq!(deps.transport.cached_clients(), 1);
}

#[tokio::test]
async fn a_fic_leg1_certificate_change_reaches_leg2() {
    let env = start().await;
    let config = env.config(
        "",
        &routes(&[
            (
                "leg1-direct",
                "api://AzureADTokenExchange",
                "    flow: vanilla\n    identity: app\n    token_type: mtls_pop",
            ),
            (
                "fic",
                GRAPH,
                "    flow: fic\n    leg1: app\n    leg2: exchange\n    token_type: mtls_pop",
            ),
        ]),
    );
    let deps = env.deps(&config);
    let creds = env.build(&config, &deps);
    let fic = &creds["fic"];
    let first = get(fic).await;
    assert_eq!(cnf(&first.token), env.app_credential.x5t_s256);
    // The FIC route's leg 1 is the same credential as the vanilla route for the exchange audience.
    get(&creds["leg1-direct"]).await;
    assert_eq!(env.count(Endpoint::Token), 2);
    let seen = *fic.binding_changes().borrow();

    let next = env.register_rotated_credential();
    write_pair(&env.path("v2"), &next.cert_pem, &next.key_pem);
    std::fs::rename(env.path("v2/tls.key"), env.path("app.key.new")).unwrap();
    std::fs::rename(env.path("v2/tls.crt"), env.path("app.pem.new")).unwrap();
    std::fs::rename(env.path("app.key.new"), env.path("app.key")).unwrap();
    std::fs::rename(env.path("app.pem.new"), env.path("app.pem")).unwrap();

    binding_changed(fic, seen).await;
    let second = get(fic).await;
    assert_eq!(
        second.token.binding.as_ref().unwrap().x5t_s256(),
        next.x5t_s256,
        "leg 2 is bound to the new leg-1 certificate"
    );
    assert_eq!(cnf(&second.token), next.x5t_s256);
    assert_eq!(
        env.call_resource("graph.microsoft.com", &second.token)
            .await,
        StatusCode::OK
    );
    // A new leg-1 token (new certificate) and a new leg-2 token.
    assert_eq!(env.count(Endpoint::Token), 4);
}
