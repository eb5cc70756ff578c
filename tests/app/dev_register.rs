//! What `popgate dev` makes the local authority know for a config: the shipped routes.yaml's apps,
//! FIC trusts and minted token files (including the SAMI / certificate-app client id clash), and
//! the configs it cannot represent, named.

use std::io::Write as _;

use popgate::config::model::Identity;
use popgate::dev::local_authority::{self, SetupError};
use popgate::dev::register::DEV_SERVICE_ACCOUNT;
use popgate_authority::FederatedCredential;
use popgate_authority::imds::backend::{ImdsBackend as _, UamiSelector};
use popgate_authority::tokens::issuer_for;

use crate::kit::dev::repo_root;

const TENANT: &str = "751a212b-4003-416e-b600-e1f48e40db9f";
const APP_ID: &str = "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3";
const EXCHANGE_ID: &str = "11111111-2222-3333-4444-555555555555";
const WI_ID: &str = "22222222-3333-4444-5555-666666666666";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_config_is_registered_and_the_sami_moves_off_the_app_client_id() {
    let config = popgate::config::load(&repo_root().join("routes.yaml")).unwrap();
    let local = local_authority::start(&config).await.unwrap();
    let directory = local.authority.directory();

    // The certificate app owns its client id; the SAMI got a fresh one.
    let app = directory.app(APP_ID).expect("certificate app registered");
    let Some(Identity::ConfidentialClient(cc)) = config.identity("app") else {
        panic!("shipped config has `app`");
    };
    let cert = cc.certificate.as_ref().unwrap();
    assert_eq!(app.certificates.len(), 1);
    assert_eq!(app.certificates[0].x5t_s256, cert.x5t_s256());
    let sami = directory.system_assigned().expect("a SAMI still exists");
    assert_ne!(sami.client_id, APP_ID);
    assert!(directory.managed_identity(APP_ID).is_none());

    // The FIC app trusts each leg 1 of the config's FIC routes: SAMI, UAMI (client id), the
    // certificate app and the workload identity.
    let exchange = directory.app(EXCHANGE_ID).expect("FIC app registered");
    assert!(exchange.certificates.is_empty());
    let uami = directory
        .user_assigned(&UamiSelector::ClientId(
            "6325cd32-9911-41f3-819c-416cdf9104e7".into(),
        ))
        .unwrap();
    let wi = directory
        .app(WI_ID)
        .expect("workload identity app registered");
    for (who, object_id) in [
        ("sami", &sami.object_id),
        ("uami", &uami.object_id),
        ("app", &app.object_id),
        ("wi", &wi.object_id),
    ] {
        assert!(
            exchange
                .federated
                .contains(&FederatedCredential::for_identity(TENANT, object_id)),
            "exchange does not trust {who}"
        );
    }
    assert!(wi.federated.contains(&FederatedCredential {
        issuer: issuer_for(TENANT),
        subject: DEV_SERVICE_ACCOUNT.into(),
    }));

    // The static token is the authority's, for the route's audience, bound to the certificate.
    let Some(Identity::Static(byo)) = config.identity("byo") else {
        panic!("shipped config has `byo`");
    };
    let byo_file = local.token_files.get("byo").expect("static token minted");
    let jwt = std::fs::read_to_string(byo_file).unwrap();
    let claims = local
        .authority
        .signing_keys()
        .verify(&jwt, "https://storage.azure.com")
        .expect("a token of the authority for the static route's resource");
    assert_eq!(
        claims.cnf.map(|c| c.x5t_s256).as_deref(),
        Some(byo.certificate.x5t_s256())
    );
    let wi_file = local.token_files.get("wi").expect("federated token minted");
    let claims = local
        .authority
        .signing_keys()
        .verify(
            &std::fs::read_to_string(wi_file).unwrap(),
            "api://AzureADTokenExchange",
        )
        .unwrap();
    assert_eq!(claims.sub, DEV_SERVICE_ACCOUNT);

    // The token files go with the authority.
    let files: Vec<_> = local.token_files.values().cloned().collect();
    drop(local);
    assert!(files.iter().all(|f| !f.exists()));
}

fn config_with(identities: &str) -> (tempfile::TempDir, popgate::config::Config) {
    let dir = tempfile::tempdir().unwrap();
    let dev = repo_root().join("examples/dev");
    let yaml = format!(
        "version: 1\nlisteners:\n  - address: 127.0.0.1:3128\nidentities:\n{identities}routes:\n  - name: r\n    match: {{ host: graph.microsoft.com }}\n    resource: https://graph.microsoft.com\n    flow: vanilla\n    identity: x\n    token_type: bearer\n"
    )
    // The demo key is checked out 0644 (git keeps no 0600).
    .replace(
        "key_file: KEY }\n",
        "key_file: KEY }\n    allow_insecure_key_permissions: true\n",
    )
    .replace("CERT", &dev.join("app.pem").display().to_string())
    .replace("KEY", &dev.join("app.key").display().to_string());
    let path = dir.path().join("routes.yaml");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(yaml.as_bytes()))
        .unwrap();
    let config = popgate::config::load(&path).unwrap();
    (dir, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_with_a_uami_client_id_is_refused_by_name() {
    let (_dir, config) = config_with(
        "  x:\n    kind: confidential_client\n    tenant_id: 751a212b-4003-416e-b600-e1f48e40db9f\n    client_id: 6325cd32-9911-41f3-819c-416cdf9104e7\n    certificate: { cert_file: CERT, key_file: KEY }\n",
    );
    let err = local_authority::start(&config).await.unwrap_err();
    assert!(matches!(err, SetupError::Register(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "identity `x`: the local authority cannot serve it: client id 6325cd32-9911-41f3-819c-416cdf9104e7 is also the client id of a user-assigned managed identity"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_domain_is_refused_by_name() {
    let (_dir, config) = config_with(
        "  x:\n    kind: confidential_client\n    tenant_id: contoso.onmicrosoft.com\n    client_id: 6325cd32-9911-41f3-819c-416cdf9104e8\n    certificate: { cert_file: CERT, key_file: KEY }\n",
    );
    let err = local_authority::start(&config).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("identity `x`: the local authority cannot serve it: "),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("the local authority knows tenants by id only"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_uami_selector_gets_an_identity() {
    let (_dir, config) = config_with(
        "  x: { kind: managed_identity, object_id: 0badc0de-0000-4000-8000-000000000001 }\n",
    );
    let local = local_authority::start(&config).await.unwrap();
    let found = local
        .authority
        .directory()
        .user_assigned(&UamiSelector::ObjectId(
            "0badc0de-0000-4000-8000-000000000001".into(),
        ))
        .expect("the selector now names an identity");
    assert!(!found.system_assigned);
    assert_eq!(found.tenant_id, TENANT);
}
