//! IMDSv2 over real loopback HTTP: getplatformmetadata and issuecredential, with CSRs built by
//! aws-lc-rs (RSA-2048 + PSS) and deliberately broken ones, each refused with a reason.

use std::time::Duration;

use crate::kit::imds::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use der::Tag;
use popgate_authority::faults::{Endpoint, Fault};
use popgate_authority::imds::ImdsSettings;
use popgate_authority::imds::backend::CuId;
use x509_parser::prelude::FromDer as _;

const META: (&str, &str) = ("Metadata", "true");
const JSON: (&str, &str) = ("Content-Type", "application/json");
const PLATFORM: &str = "/metadata/identity/getplatformmetadata?cred-api-version=2.0";
const ISSUE: &str = "/metadata/identity/issuecredential?cred-api-version=2.0";

async fn issue(imds: &Imds, path: &str, body: &str) -> Reply {
    send(imds, "POST", path, &[META, JSON], Some(body))
        .await
        .expect("the server answered")
}

fn assert_refused(reply: &Reply, mention: &str) {
    assert_eq!(reply.status, 400, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(keys_of(&body), ["error", "error_description"]);
    assert_eq!(body["error"], "invalid_request");
    let description = reply.description();
    assert!(
        description.contains(mention),
        "description {description:?} should mention {mention:?}"
    );
}

#[tokio::test]
async fn platform_metadata_has_the_vector_shape_and_server_header() {
    let imds = start(ImdsSettings::default()).await;
    let reply = get(&imds, PLATFORM, &[META]).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.headers["server"], "IMDS/150.870.65.1854");
    let body = reply.json();
    let golden = vector("imdsv2-getplatformmetadata-200.json");
    assert_eq!(keys_of(&body), keys_of(&golden));
    assert_eq!(keys_of(&body["cuId"]), keys_of(&golden["cuId"]));
    assert_eq!(body["clientId"], SAMI_CLIENT);
    assert_eq!(body["tenantId"], TENANT);
    assert_eq!(body["cuId"]["vmId"], VM_ID);
    assert!(!body["attestationEndpoint"].as_str().unwrap().is_empty());

    let uami = get(
        &imds,
        &format!("{PLATFORM}&object_id={UAMI_OBJECT}"),
        &[META],
    )
    .await;
    assert_eq!(uami.json()["clientId"], UAMI_CLIENT);
    assert_eq!(
        imds.observations.successes(Endpoint::ImdsPlatformMetadata),
        2
    );
}

#[tokio::test]
async fn platform_metadata_reports_vmss_id() {
    let mut backend = TestBackend::new(true);
    backend.cu = CuId {
        vm_id: Some(VM_ID.into()),
        vmss_id: Some("fake_vmssId".into()),
    };
    let imds = start_with(backend, ImdsSettings::default()).await;
    let body = get(&imds, PLATFORM, &[META]).await.json();
    assert_eq!(body["cuId"]["vmssId"], "fake_vmssId");
    // The CSR must then carry both ids, vmId first.
    let mut spec = CsrSpec::for_identity(SAMI_CLIENT);
    spec.attributes[0].1[0].1 = format!("{{\"vmId\":\"{VM_ID}\",\"vmssId\":\"fake_vmssId\"}}");
    let ok = issue(&imds, ISSUE, &issue_body(&build_csr(&spec).base64)).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    let vm_only = issue(
        &imds,
        ISSUE,
        &issue_body(&build_csr(&CsrSpec::for_identity(SAMI_CLIENT)).base64),
    )
    .await;
    assert_refused(&vm_only, "cuId");
}

#[tokio::test]
async fn v2_common_refusals() {
    let imds = start(ImdsSettings::default()).await;
    assert_refused(&get(&imds, PLATFORM, &[]).await, "metadata header");
    assert_refused(
        &get(&imds, "/metadata/identity/getplatformmetadata", &[META]).await,
        "cred-api-version",
    );
    assert_refused(
        &get(
            &imds,
            "/metadata/identity/getplatformmetadata?cred-api-version=1.0",
            &[META],
        )
        .await,
        "1.0",
    );
    // The Python client's key is not the configured one (MSAL.NET's mi_res_id).
    assert_refused(
        &get(
            &imds,
            &format!("{PLATFORM}&msi_res_id={UAMI_RESOURCE}"),
            &[META],
        )
        .await,
        "msi_res_id",
    );
    assert_refused(
        &get(
            &imds,
            &format!("{PLATFORM}&client_id={UAMI_CLIENT}&object_id={UAMI_OBJECT}"),
            &[META],
        )
        .await,
        "only one",
    );
    assert_refused(
        &get(&imds, &format!("{PLATFORM}&client_id=nope"), &[META]).await,
        "Identity not found",
    );
    let post = send(&imds, "POST", PLATFORM, &[META], Some(""))
        .await
        .unwrap();
    assert_eq!(post.status, 405);
    let get_issue = get(&imds, ISSUE, &[META]).await;
    assert_eq!(get_issue.status, 405);
    let csr = build_csr(&CsrSpec::for_identity(SAMI_CLIENT));
    let no_meta = send(
        &imds,
        "POST",
        ISSUE,
        &[JSON],
        Some(&issue_body(&csr.base64)),
    )
    .await
    .unwrap();
    assert_refused(&no_meta, "metadata header");
    assert_eq!(
        imds.observations.successes(Endpoint::ImdsIssueCredential),
        0
    );
}

#[tokio::test]
async fn resource_id_key_is_configurable_and_percent_decoded() {
    let imds = start(ImdsSettings {
        v2_uami_resource_id_key: "msi_res_id".into(),
        ..ImdsSettings::default()
    })
    .await;
    let encoded =
        percent_encoding::utf8_percent_encode(UAMI_RESOURCE, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let ok = get(&imds, &format!("{PLATFORM}&msi_res_id={encoded}"), &[META]).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.json()["clientId"], UAMI_CLIENT);
    assert_refused(
        &get(&imds, &format!("{PLATFORM}&mi_res_id={encoded}"), &[META]).await,
        "mi_res_id",
    );
}

#[tokio::test]
async fn v2_disabled_answers_404_like_an_old_imds() {
    let imds = start(ImdsSettings {
        v2_enabled: false,
        ..ImdsSettings::default()
    })
    .await;
    assert_eq!(get(&imds, PLATFORM, &[META]).await.status, 404);
    let csr = build_csr(&CsrSpec::for_identity(SAMI_CLIENT));
    assert_eq!(
        issue(&imds, ISSUE, &issue_body(&csr.base64)).await.status,
        404
    );
    // v1 still works.
    let v1 = get(
        &imds,
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net",
        &[META],
    )
    .await;
    assert_eq!(v1.status, 200);
}

#[tokio::test]
async fn issue_credential_issues_a_certificate_for_the_csr_key() {
    let imds = start(ImdsSettings::default()).await;
    let csr = build_csr(&CsrSpec::for_identity(SAMI_CLIENT));
    let reply = issue(&imds, ISSUE, &issue_body(&csr.base64)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.headers["server"].to_str().unwrap().contains("IMDS"));
    let body = reply.json();
    assert_eq!(
        keys_of(&body),
        keys_of(&vector("imdsv2-issuecredential-200.json"))
    );
    assert_eq!(body["client_id"], SAMI_CLIENT);
    assert_eq!(body["tenant_id"], TENANT);
    assert_eq!(body["identity_type"], "SystemAssigned");
    assert_eq!(body["mtls_authentication_endpoint"], MTLS_ENDPOINT);
    let der = STANDARD
        .decode(body["certificate"].as_str().unwrap())
        .unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert.public_key().raw, &csr.spki_der[..]);
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), SAMI_CLIENT);
    let lifetime = cert.validity().not_after.timestamp() - unix_now() as i64;
    let week = 7 * 24 * 3600;
    assert!(
        (week - 120..=week + 120).contains(&lifetime),
        "default lifetime should be 7 days, is {lifetime} s"
    );
    let log = imds.observations.log();
    assert_eq!(log.last().unwrap().outcome, "certificate_issued");
    assert_eq!(log.last().unwrap().client_id.as_deref(), Some(SAMI_CLIENT));
}

#[tokio::test]
async fn issue_credential_for_a_uami_with_configured_lifetime() {
    let imds = start(ImdsSettings {
        cert_lifetime: Duration::from_secs(3600),
        ..ImdsSettings::default()
    })
    .await;
    let csr = build_csr(&CsrSpec::for_identity(UAMI_CLIENT));
    let reply = issue(
        &imds,
        &format!("{ISSUE}&client_id={UAMI_CLIENT}"),
        &issue_body(&csr.base64),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    assert_eq!(body["identity_type"], "UserAssigned");
    let der = STANDARD
        .decode(body["certificate"].as_str().unwrap())
        .unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
    let lifetime = cert.validity().not_after.timestamp() - unix_now() as i64;
    assert!((3600 - 120..=3600 + 120).contains(&lifetime), "{lifetime}");
    // The SAMI's CSR is not good for the UAMI (subject names the wrong client).
    let sami_csr = build_csr(&CsrSpec::for_identity(SAMI_CLIENT));
    assert_refused(
        &issue(
            &imds,
            &format!("{ISSUE}&client_id={UAMI_CLIENT}"),
            &issue_body(&sami_csr.base64),
        )
        .await,
        "CN must be",
    );
}

#[tokio::test]
async fn issue_credential_body_refusals() {
    let imds = start(ImdsSettings::default()).await;
    let csr = build_csr(&CsrSpec::for_identity(SAMI_CLIENT));
    let body = issue_body(&csr.base64);
    let wrong_type = send(
        &imds,
        "POST",
        ISSUE,
        &[META, ("Content-Type", "text/plain")],
        Some(&body),
    )
    .await
    .unwrap();
    assert_refused(&wrong_type, "Content-Type");
    assert_refused(&issue(&imds, ISSUE, "not json").await, "body must be JSON");
    assert_refused(&issue(&imds, ISSUE, "{}").await, "csr");
    assert_refused(
        &issue(&imds, ISSUE, r#"{"csr":"x","extra":1}"#).await,
        "extra",
    );
    let huge = format!("{{\"csr\":\"{}\"}}", "A".repeat(70 * 1024));
    let too_big = issue(&imds, ISSUE, &huge).await;
    assert_eq!(too_big.status, 413);
    // Base64 defects: not base64, and line-wrapped (PEM style) base64.
    assert_refused(
        &issue(&imds, ISSUE, &issue_body("!!!not-base64!!!")).await,
        "base64",
    );
    let wrapped = csr
        .base64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert_refused(&issue(&imds, ISSUE, &issue_body(&wrapped)).await, "base64");
    assert_refused(
        &issue(&imds, ISSUE, &issue_body(&STANDARD.encode(b"not a csr"))).await,
        "PKCS#10",
    );
    // A certificate is not a CSR.
    let cert_der = std::fs::read(format!(
        "{}/../tests/vectors/imdsv2-issued-cert.der",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_refused(
        &issue(&imds, ISSUE, &issue_body(&STANDARD.encode(cert_der))).await,
        "PKCS#10",
    );
    // Trailing bytes after the CSR.
    let mut trailing = csr.der.clone();
    trailing.push(0);
    assert_refused(
        &issue(&imds, ISSUE, &issue_body(&STANDARD.encode(trailing))).await,
        "PKCS#10",
    );
    assert_eq!(
        imds.observations.successes(Endpoint::ImdsIssueCredential),
        0
    );
}

/// Sends a CSR built from `spec` for the SAMI and expects a 400 naming `mention`.
async fn refused_csr(imds: &Imds, spec: CsrSpec, mention: &str) {
    let csr = build_csr(&spec);
    let reply = issue(imds, ISSUE, &issue_body(&csr.base64)).await;
    assert_refused(&reply, mention);
}

#[tokio::test]
async fn csr_signature_defects_are_refused() {
    let imds = start(ImdsSettings::default()).await;
    let base = CsrSpec::for_identity(SAMI_CLIENT);
    let with = |signing: Signing| CsrSpec {
        signing,
        ..base.clone()
    };
    refused_csr(&imds, with(Signing::Pkcs1), "RSASSA-PSS").await;
    refused_csr(&imds, with(Signing::PssCorrupted), "does not verify").await;
    refused_csr(
        &imds,
        with(Signing::Pss {
            params: pss_params(sha256_alg(), Some(20), true),
        }),
        "saltLength must be 32",
    )
    .await;
    refused_csr(
        &imds,
        with(Signing::Pss {
            params: pss_params(sha256_alg(), None, true),
        }),
        "saltLength absent",
    )
    .await;
    refused_csr(
        &imds,
        with(Signing::Pss {
            params: pss_params(sha1_alg(), Some(32), true),
        }),
        "hashAlgorithm must be sha256",
    )
    .await;
    refused_csr(
        &imds,
        with(Signing::Pss {
            params: pss_params(sha256_alg(), Some(32), false),
        }),
        "hashAlgorithm absent",
    )
    .await;
    assert_eq!(
        imds.observations.successes(Endpoint::ImdsIssueCredential),
        0
    );
}

#[tokio::test]
async fn csr_key_defects_are_refused() {
    let imds = start(ImdsSettings::default()).await;
    let base = CsrSpec::for_identity(SAMI_CLIENT);
    refused_csr(
        &imds,
        CsrSpec {
            key: TestKey::Rsa3072,
            ..base.clone()
        },
        "RSA-2048; got RSA-3072",
    )
    .await;
    refused_csr(
        &imds,
        CsrSpec {
            key: TestKey::EcP256,
            ..base.clone()
        },
        "must be RSA",
    )
    .await;
}

#[tokio::test]
async fn csr_subject_defects_are_refused() {
    let imds = start(ImdsSettings::default()).await;
    let base = CsrSpec::for_identity(SAMI_CLIENT);
    let with = |subject: Vec<(der::asn1::ObjectIdentifier, Tag, String)>| CsrSpec {
        subject,
        ..base.clone()
    };
    let dc = (OID_DC, Tag::Ia5String, TENANT.to_string());
    let cn = (OID_CN, Tag::Utf8String, SAMI_CLIENT.to_string());
    refused_csr(&imds, with(vec![cn.clone(), dc.clone()]), "DC first").await;
    refused_csr(&imds, with(vec![cn.clone()]), "1 RDNs").await;
    refused_csr(
        &imds,
        with(vec![
            (OID_DC, Tag::Ia5String, "other-tenant".into()),
            cn.clone(),
        ]),
        "tenantId",
    )
    .await;
    refused_csr(
        &imds,
        with(vec![
            dc.clone(),
            (OID_CN, Tag::Utf8String, UAMI_CLIENT.into()),
        ]),
        "clientId",
    )
    .await;
    refused_csr(
        &imds,
        with(vec![
            dc.clone(),
            cn.clone(),
            (OID_CN, Tag::Utf8String, "x".into()),
        ]),
        "3 RDNs",
    )
    .await;
}

#[tokio::test]
async fn csr_attribute_defects_are_refused() {
    let imds = start(ImdsSettings::default()).await;
    let base = CsrSpec::for_identity(SAMI_CLIENT);
    let good = base.attributes[0].clone();
    let with = |attributes| CsrSpec {
        attributes,
        ..base.clone()
    };
    refused_csr(&imds, with(vec![]), "got 0").await;
    let extra = (
        der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.7"),
        vec![(Tag::Utf8String, "challenge".to_string())],
    );
    refused_csr(&imds, with(vec![good.clone(), extra.clone()]), "got 2").await;
    refused_csr(&imds, with(vec![extra]), "1.3.6.1.4.1.311.90.2.10").await;
    refused_csr(
        &imds,
        with(vec![(
            OID_CU_ID,
            vec![(Tag::Utf8String, "{\"vmId\":\"other\"}".into())],
        )]),
        "cuId must be",
    )
    .await;
    // Same JSON, not compact: IMDS compares the exact string.
    refused_csr(
        &imds,
        with(vec![(
            OID_CU_ID,
            vec![(Tag::Utf8String, format!("{{ \"vmId\": \"{VM_ID}\" }}"))],
        )]),
        "cuId must be",
    )
    .await;
    refused_csr(
        &imds,
        with(vec![(
            OID_CU_ID,
            vec![(Tag::PrintableString, format!("{{\"vmId\":\"{VM_ID}\"}}"))],
        )]),
        "UTF8String",
    )
    .await;
    refused_csr(
        &imds,
        with(vec![(
            OID_CU_ID,
            vec![
                (Tag::Utf8String, format!("{{\"vmId\":\"{VM_ID}\"}}")),
                (Tag::Utf8String, "second".into()),
            ],
        )]),
        "one value",
    )
    .await;
}

#[tokio::test]
async fn attestation_required_fault_answers_the_vector() {
    let imds = start(ImdsSettings::default()).await;
    imds.faults
        .push(Endpoint::ImdsIssueCredential, Fault::AttestationRequired, 2);
    let csr = build_csr(&CsrSpec::for_identity(SAMI_CLIENT));
    let reply = issue(&imds, ISSUE, &issue_body(&csr.base64)).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json(),
        vector("imdsv2-issuecredential-400-attestation-missing.json")
    );
    // With an attestation token, the demand is met.
    let attested =
        serde_json::json!({"csr": csr.base64, "attestation_token": "maa.jwt"}).to_string();
    assert_eq!(issue(&imds, ISSUE, &attested).await.status, 200);
    // Fault used up: no attestation needed any more.
    assert_eq!(
        issue(&imds, ISSUE, &issue_body(&csr.base64)).await.status,
        200
    );
}

#[tokio::test]
async fn v2_status_faults_and_drop() {
    let imds = start(ImdsSettings::default()).await;
    imds.faults.push(
        Endpoint::ImdsPlatformMetadata,
        Fault::Status {
            code: 410,
            retry_after: None,
            body: None,
        },
        1,
    );
    imds.faults
        .push(Endpoint::ImdsIssueCredential, Fault::Drop, 1);
    assert_eq!(get(&imds, PLATFORM, &[META]).await.status, 410);
    assert_eq!(get(&imds, PLATFORM, &[META]).await.status, 200);
    let csr = build_csr(&CsrSpec::for_identity(SAMI_CLIENT));
    let dropped = send(
        &imds,
        "POST",
        ISSUE,
        &[META, JSON],
        Some(&issue_body(&csr.base64)),
    )
    .await;
    assert!(dropped.is_err());
    assert_eq!(
        issue(&imds, ISSUE, &issue_body(&csr.base64)).await.status,
        200
    );
    let counts = imds.observations.counts();
    assert_eq!(counts[&Endpoint::ImdsPlatformMetadata], 2);
    assert_eq!(counts[&Endpoint::ImdsIssueCredential], 2);
}

#[test]
fn vector_certificate_thumbprint() {
    // Keeps the shared thumbprint helper honest against the README's derived fact.
    let der = std::fs::read(format!(
        "{}/../tests/vectors/imdsv2-issued-cert.der",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(
        popgate_authority::thumbprint::x5t_s256(&der),
        "MLZLzUFU2BBe37pdl3CLkghmBpr6rkHDsnsy1bXCIsI"
    );
    let golden = vector("imdsv2-issuecredential-200.json");
    assert_eq!(
        STANDARD
            .decode(golden["certificate"].as_str().unwrap())
            .unwrap(),
        der
    );
}

#[tokio::test]
async fn a_vm_without_any_id_is_a_server_error() {
    let mut backend = TestBackend::new(true);
    backend.cu = CuId {
        vm_id: None,
        vmss_id: None,
    };
    let imds = start_with(backend, ImdsSettings::default()).await;
    let reply = get(&imds, PLATFORM, &[META]).await;
    assert_eq!(reply.status, 500);
    assert!(reply.description().contains("vmId"));
}

#[tokio::test]
async fn csr_hash_identifiers_with_or_without_null_parameters_are_both_accepted() {
    // .NET (MSAL's IMDSv2 CSR, RFC 5754) omits the SHA-256 parameters; OpenSSL writes NULL.
    // RFC 4055 makes the two equivalent, and IMDS takes MSAL's CSRs: both are issued.
    let imds = start(ImdsSettings::default()).await;
    for hash in [sha256_alg_no_params(), sha256_alg()] {
        let spec = CsrSpec {
            signing: Signing::Pss {
                params: pss_params(hash, Some(32), true),
            },
            ..CsrSpec::for_identity(SAMI_CLIENT)
        };
        let csr = build_csr(&spec);
        let reply = issue(&imds, ISSUE, &issue_body(&csr.base64)).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
}
