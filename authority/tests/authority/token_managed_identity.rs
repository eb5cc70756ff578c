//! Managed identity token leg (IMDSv2, protocol.md §3 step 5): the IMDS-issued binding
//! certificate in TLS, `client_id` = its CN, `token_type=mtls_pop`, on an mtlsauth host.

use std::time::{Duration, SystemTime};

use crate::kit::token::*;
use popgate_authority::directory::{
    DEFAULT_SAMI_CLIENT_ID, DEFAULT_UAMI_CLIENT_ID, DEFAULT_UAMI_OBJECT_ID,
};
use popgate_authority::imds::backend::{ImdsBackend as _, UamiSelector};

#[tokio::test]
async fn binding_certificate_gets_a_pop_token_for_its_identity() {
    let authority = start().await;
    for client_id in [DEFAULT_UAMI_CLIENT_ID, DEFAULT_SAMI_CLIENT_ID] {
        let cert = binding_cert(&authority, client_id, TENANT);
        let answer = post_token(
            &authority,
            MTLS,
            Some(&cert),
            &pop_form(client_id, "https://management.azure.com/.default"),
        )
        .await;
        assert_eq!(answer.json()["token_type"], "mtls_pop");
        let claims = authority
            .signing_keys()
            .verify(&answer.token(), "https://management.azure.com")
            .unwrap();
        assert_eq!(claims.appid, client_id);
        assert_eq!(claims.cnf.unwrap().x5t_s256, cert.x5t());
    }
    let uami = authority
        .directory()
        .user_assigned(&UamiSelector::ObjectId(DEFAULT_UAMI_OBJECT_ID.into()))
        .unwrap();
    assert_eq!(uami.client_id, DEFAULT_UAMI_CLIENT_ID);
}

#[tokio::test]
async fn imdsv2_token_vector_shape_with_numbers_as_strings() {
    let authority = start().await;
    authority.settings().set_numbers_as_strings(true);
    authority
        .settings()
        .set_refresh_in(Some(Duration::from_secs(1800)));
    let cert = binding_cert(&authority, DEFAULT_UAMI_CLIENT_ID, TENANT);
    let body = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(DEFAULT_UAMI_CLIENT_ID, GRAPH_SCOPE),
    )
    .await
    .json();
    let vector = vector("ests-imdsv2-token-mtls-pop-200.json");
    assert!(vector["expires_in"].is_string());
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["ext_expires_in"], "3599");
    assert_eq!(body["refresh_in"], "1800");
    assert_eq!(body["token_type"], vector["token_type"]);
}

#[tokio::test]
async fn a_certificate_not_issued_by_imds_is_refused() {
    let authority = start().await;
    // An app certificate from the same root CA, CN = the MI's client id: right name, wrong issuer.
    let credential = authority
        .pki()
        .issue_app_credential(DEFAULT_UAMI_CLIENT_ID)
        .unwrap();
    let cert = ClientCert::from_credential(&credential);
    let d = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(DEFAULT_UAMI_CLIENT_ID, GRAPH_SCOPE),
    )
    .await
    .refused(401, 700027);
    assert!(d.contains("not issued by IMDS"), "{d}");
    // A binding certificate from another authority's IMDS CA.
    let other = start().await;
    let foreign = binding_cert(&other, DEFAULT_UAMI_CLIENT_ID, TENANT);
    post_token(
        &authority,
        MTLS,
        Some(&foreign),
        &pop_form(DEFAULT_UAMI_CLIENT_ID, GRAPH_SCOPE),
    )
    .await
    .refused(401, 700027);
}

#[tokio::test]
async fn client_id_must_equal_the_certificate_cn_and_tenant_its_dc() {
    let authority = start().await;
    let cert = binding_cert(&authority, DEFAULT_SAMI_CLIENT_ID, TENANT);
    let d = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(DEFAULT_UAMI_CLIENT_ID, GRAPH_SCOPE),
    )
    .await
    .refused(401, 700027);
    assert!(d.contains(&format!("CN={DEFAULT_SAMI_CLIENT_ID}")), "{d}");
    let wrong_tenant = binding_cert(
        &authority,
        DEFAULT_UAMI_CLIENT_ID,
        "99999999-9999-9999-9999-999999999999",
    );
    post_token(
        &authority,
        MTLS,
        Some(&wrong_tenant),
        &pop_form(DEFAULT_UAMI_CLIENT_ID, GRAPH_SCOPE),
    )
    .await
    .refused(401, 700027);
}

#[tokio::test]
async fn an_expired_binding_certificate_is_refused() {
    let authority = start().await;
    let now = SystemTime::now();
    let cert = binding_cert_valid(
        &authority,
        DEFAULT_UAMI_CLIENT_ID,
        TENANT,
        now - Duration::from_secs(7200),
        now - Duration::from_secs(3600),
    );
    let d = post_token(
        &authority,
        MTLS,
        Some(&cert),
        &pop_form(DEFAULT_UAMI_CLIENT_ID, GRAPH_SCOPE),
    )
    .await
    .refused(401, 700027);
    assert!(d.contains("expired"), "{d}");
}

#[tokio::test]
async fn managed_identity_needs_token_type_and_the_mtls_host() {
    let authority = start().await;
    let cert = binding_cert(&authority, DEFAULT_UAMI_CLIENT_ID, TENANT);
    let mut form = pop_form(DEFAULT_UAMI_CLIENT_ID, GRAPH_SCOPE);
    form.retain(|(k, _)| *k != "token_type");
    post_token(&authority, MTLS, Some(&cert), &form)
        .await
        .refused(400, 90023);
    post_token(&authority, LOGIN, Some(&cert), &form)
        .await
        .refused(400, 7000218);
}

#[tokio::test]
async fn imds_backend_mints_bearer_tokens_and_refuses_unknown_resources() {
    let authority = start().await;
    let directory = authority.directory();
    let sami = directory.system_assigned().unwrap();
    let minted = directory
        .mint_bearer_token(&sami, "https://management.azure.com/")
        .unwrap();
    assert_eq!(minted.expires_in, 3599);
    assert!(!format!("{minted:?}").contains(&minted.access_token));
    let claims = authority
        .signing_keys()
        .verify(&minted.access_token, "https://management.azure.com")
        .unwrap();
    assert_eq!(claims.appid, DEFAULT_SAMI_CLIENT_ID);
    assert!(claims.cnf.is_none());
    let refused = directory.mint_bearer_token(&sami, "user.read").unwrap_err();
    assert_eq!(refused.code, 500011);
    assert_eq!(refused.error, "invalid_resource");
    assert_eq!(
        directory.mtls_authentication_endpoint(),
        "https://mtlsauth.microsoft.com"
    );
    assert!(directory.cu_id().vm_id.is_some());
    assert!(
        directory
            .user_assigned(&UamiSelector::ClientId(
                "00000000-0000-0000-0000-000000000000".into()
            ))
            .is_none()
    );
}
