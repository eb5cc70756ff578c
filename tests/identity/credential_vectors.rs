//! Every golden vector in tests/vectors, parsed by the parser popgate uses for it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use http::header::SERVER;
use http::{HeaderMap, HeaderValue, StatusCode};
use popgate::certs::binding::{BindingCert, BindingError, x5t_s256};
use popgate::identity::csr::{BindingKey, build_csr, cu_id_json};
use popgate::identity::ests_error::EstsError;
use popgate::identity::imds_v2::{
    CuId, NOT_SUPPORTED_ERROR, parse_issued_credential, parse_platform_metadata,
};
use popgate::identity::retry_policy::{self, Outcome, RetryDecision};
use popgate::identity::token::{Token, TokenType};
use popgate::identity::token_response::parse_token_response;
use popgate::identity::{imds_v1, response_json::ResponseError};
use rustls_pki_types::CertificateDer;

const VECTORS: [&str; 10] = [
    "ests-cc-token-mtls-pop-200.json",
    "ests-error-invalid-client-400.json",
    "ests-imdsv2-token-mtls-pop-200.json",
    "ests-throttled-429.json",
    "imds-v1-error-400.json",
    "imds-v1-openapi-example-200.json",
    "imdsv2-getplatformmetadata-200.json",
    "imdsv2-issuecredential-200.json",
    "imdsv2-issuecredential-400-attestation-missing.json",
    "imdsv2-issued-cert.der",
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// A binding certificate for a fresh key (the vectors' own key is not published).
fn some_binding() -> BindingCert {
    let key = BindingKey::generate().unwrap();
    let kp = rcgen::KeyPair::try_from(key.pkcs8_der()).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["binding.test".into()])
        .unwrap()
        .self_signed(&kp)
        .unwrap();
    key.binding_cert(vec![CertificateDer::from(cert.der().to_vec())])
        .unwrap()
}

/// The error must name `error`, the AADSTS code and the correlation id.
/// The mTLS PoP token parsed from a 200 with `body`, sent at `now`, bound to `binding`.
fn pop_token_of(body: &[u8], now: SystemTime, binding: BindingCert) -> Token {
    parse_token_response(StatusCode::OK, body, TokenType::MtlsPop, now, Some(binding)).unwrap()
}

/// The error parsing the token endpoint's answer `status` with the body of vector `name`.
fn refusal(name: &str, status: StatusCode, token_type: TokenType) -> ResponseError {
    parse_token_response(status, &vector(name), token_type, at(0), None).unwrap_err()
}

fn assert_names(err: &ResponseError, error: &str, aadsts: u32, correlation_id: &str) {
    let shown = err.to_string();
    assert!(shown.contains(error), "{shown}");
    assert!(shown.contains(&format!("AADSTS{aadsts}")), "{shown}");
    assert!(shown.contains(correlation_id), "{shown}");
    let ests = err.ests().expect("an ESTS error");
    assert_eq!(ests.error, error);
    assert_eq!(ests.aadsts, Some(aadsts));
    assert_eq!(ests.correlation_id.as_deref(), Some(correlation_id));
}

#[test]
fn every_vector_file_is_covered_here() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "README.md")
        .collect();
    let covered: BTreeSet<String> = VECTORS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        on_disk, covered,
        "a vector was added or removed: parse it in this file"
    );
}

#[test]
fn cert_app_pop_token_ignores_unknown_fields() {
    let body = vector("ests-cc-token-mtls-pop-200.json");
    let binding = some_binding();
    let now = at(1_800_000_000);
    let token = pop_token_of(&body, now, binding.clone());
    assert_eq!(
        token.access_token.expose_secret(),
        "header.payload.signature"
    );
    assert_eq!(token.token_type, TokenType::MtlsPop);
    assert_eq!(token.expires_at, now + Duration::from_secs(3599));
    assert_eq!(token.refresh_in, None);
    assert_eq!(token.binding.as_ref(), Some(&binding));
    assert_eq!(
        token.authorization_header().unwrap(),
        "mtls_pop header.payload.signature"
    );
    assert!(!format!("{token:?}").contains("header.payload.signature"));
    // Asked for Bearer, got mtls_pop: an error naming token_type, not a token.
    let err =
        parse_token_response(StatusCode::OK, &body, TokenType::Bearer, now, None).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("`token_type`"), "{shown}");
    assert!(!shown.contains("header.payload.signature"), "{shown}");
}

#[test]
fn imds_v2_leg_token_with_string_expiry() {
    let body = vector("ests-imdsv2-token-mtls-pop-200.json");
    let now = at(1_800_000_000);
    let token = pop_token_of(&body, now, some_binding());
    assert_eq!(token.access_token.expose_secret(), "some-access-token");
    assert_eq!(token.expires_at, now + Duration::from_secs(3599));
}

#[test]
fn invalid_client_names_error_code_and_correlation_id() {
    let err = refusal(
        "ests-error-invalid-client-400.json",
        StatusCode::BAD_REQUEST,
        TokenType::MtlsPop,
    );
    assert_names(
        &err,
        "invalid_client",
        7_000_218,
        "3d483b09-1198-4acb-929f-c648674e32bd",
    );
    let ests = err.ests().unwrap();
    assert!(
        ests.is_invalid_client(),
        "triggers the IMDSv2 certificate re-mint"
    );
    assert_eq!(ests.codes, vec![7_000_218]);
    assert_eq!(
        ests.trace_id.as_deref(),
        Some("21c3e4db-d2fd-44f7-a3e0-5939f84e6000")
    );
    assert_eq!(ests.timestamp.as_deref(), Some("2019-07-12 19:24:42Z"));
    assert_eq!(ests.http_status, StatusCode::BAD_REQUEST);
}

#[test]
fn throttled_429_is_not_retried_and_blocks_for_retry_after() {
    let err = refusal(
        "ests-throttled-429.json",
        StatusCode::TOO_MANY_REQUESTS,
        TokenType::Bearer,
    );
    assert_names(
        &err,
        "Server overload",
        90_010,
        "f11508ab-067f-40d4-83cb-ccc67bf57e45",
    );
    assert!(!err.ests().unwrap().is_invalid_client());

    let mut headers = HeaderMap::new();
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("120"));
    let now = Instant::now();
    let outcome = Outcome::Response {
        status: StatusCode::TOO_MANY_REQUESTS,
        headers: &headers,
    };
    assert_eq!(
        retry_policy::token_endpoint(0, &outcome, now, SystemTime::now()),
        RetryDecision::BlockedUntil(now + Duration::from_secs(120))
    );

    // The plain-text 429 body that also occurs.
    let plain = EstsError::parse(StatusCode::TOO_MANY_REQUESTS, b"Too many requests error");
    assert_eq!(
        plain.to_string(),
        "http_429 (HTTP 429): Too many requests error"
    );
}

#[test]
fn imds_v1_error_names_error_code_and_correlation_id() {
    let body = vector("imds-v1-error-400.json");
    let err = imds_v1::parse_token_response(StatusCode::BAD_REQUEST, &body, at(0)).unwrap_err();
    assert_names(
        &err,
        "invalid_resource",
        500_011,
        "77145480-bc5a-4ebe-ae4d-e4a8b7d727cf",
    );
    assert!(
        !err.to_string().contains('\n'),
        "the description's CR/LF cannot split a log line"
    );
}

#[test]
fn imds_v1_success_with_every_field_a_string() {
    let body = vector("imds-v1-openapi-example-200.json");
    // expires_on 1541705014 is absolute; parse "now" just before it (the vector is from 2018).
    let now = at(1_541_705_014 - 3599);
    let t = imds_v1::parse_token_response(StatusCode::OK, &body, now).unwrap();
    assert_eq!(t.token.access_token.expose_secret(), "dummytoken");
    assert_eq!(t.token.token_type, TokenType::Bearer);
    assert_eq!(t.token.expires_at, at(1_541_705_014));
    assert_eq!(
        t.client_id.as_deref(),
        Some("be5947ed-3560-4afe-9504-59967a63f810")
    );
    assert_eq!(t.resource.as_deref(), Some("https://va"));
    // Today that token is long expired: refused rather than injected.
    let err = imds_v1::parse_token_response(StatusCode::OK, &body, at(1_800_000_000)).unwrap_err();
    assert!(
        err.to_string()
            .contains("`expires_on` is not in the future"),
        "{err}"
    );
    // The README's other shape, with ISO-8601 expires_on.
    let iso = br#"{"access_token":"x","expires_on":"2027-01-15T09:00:00Z","resource":"https://management.azure.com/","token_type":"Bearer","client_id":"client_id"}"#;
    let t = imds_v1::parse_token_response(StatusCode::OK, iso, at(1_800_000_000)).unwrap();
    assert_eq!(t.token.expires_at, at(1_800_003_600));
}

#[test]
fn platform_metadata_and_the_csr_built_from_it() {
    let body = vector("imdsv2-getplatformmetadata-200.json");
    let mut headers = HeaderMap::new();
    headers.insert(SERVER, HeaderValue::from_static("IMDS/150.870.65.1854"));
    let md = parse_platform_metadata(StatusCode::OK, &headers, &body).unwrap();
    assert_eq!(md.client_id, "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3");
    assert_eq!(md.tenant_id, "751a212b-4003-416e-b600-e1f48e40db9f");
    assert_eq!(md.attestation_endpoint, "https://fake_attestation_endpoint");
    assert_eq!(
        md.cu_id,
        CuId {
            vm_id: Some("fake_vmId".into()),
            vmss_id: None
        }
    );
    assert_eq!(cu_id_json(&md.cu_id), r#"{"vmId":"fake_vmId"}"#);
    let key = BindingKey::generate().unwrap();
    let csr = build_csr(&key, &md.tenant_id, &md.client_id, &md.cu_id).unwrap();
    assert!(!csr.der().is_empty());
    // Without IMDS's Server header the same body is refused; a 404 means "no IMDSv2".
    assert!(parse_platform_metadata(StatusCode::OK, &HeaderMap::new(), &body).is_err());
    let err = parse_platform_metadata(StatusCode::NOT_FOUND, &HeaderMap::new(), b"").unwrap_err();
    assert!(err.to_string().contains(NOT_SUPPORTED_ERROR), "{err}");
}

#[test]
fn issued_credential_and_its_certificate() {
    let body = vector("imdsv2-issuecredential-200.json");
    let der = vector("imdsv2-issued-cert.der");
    let issued = parse_issued_credential(StatusCode::OK, &body).unwrap();
    assert_eq!(issued.client_id, "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3");
    assert_eq!(issued.tenant_id, "751a212b-4003-416e-b600-e1f48e40db9f");
    assert_eq!(issued.identity_type, "fake_identity_type");
    assert_eq!(
        issued.mtls_authentication_endpoint,
        "http://fake_mtls_authentication_endpoint"
    );
    assert_eq!(issued.certificate.as_ref(), der.as_slice());
    assert_eq!(
        x5t_s256(issued.certificate.as_ref()),
        "MLZLzUFU2BBe37pdl3CLkghmBpr6rkHDsnsy1bXCIsI"
    );
    assert_eq!(
        issued.token_endpoint().unwrap().url(),
        "http://fake_mtls_authentication_endpoint/751a212b-4003-416e-b600-e1f48e40db9f/oauth2/v2.0/token"
    );
    let req = issued
        .token_request("https://management.azure.com/")
        .unwrap();
    let form: Vec<(String, String)> = form_urlencoded::parse(req.request().body())
        .into_owned()
        .collect();
    assert!(form.contains(&(
        "client_id".into(),
        "d3adb33f-c0de-ed0c-c0de-deadb33fc0d3".into()
    )));
    assert!(form.contains(&(
        "scope".into(),
        "https://management.azure.com//.default".into()
    )));
    // The vector's certificate was issued for someone else's key: binding it to ours must fail.
    let key = BindingKey::generate().unwrap();
    assert!(matches!(
        issued.binding_cert(&key),
        Err(BindingError::KeyMismatch)
    ));
}

#[test]
fn attestation_missing_is_surfaced_verbatim_with_a_hint() {
    let body = vector("imdsv2-issuecredential-400-attestation-missing.json");
    let err = parse_issued_credential(StatusCode::BAD_REQUEST, &body).unwrap_err();
    let ests = err.ests().unwrap();
    assert_eq!(ests.error, "invalid_request");
    assert!(ests.is_attestation_missing());
    assert_eq!(ests.aadsts, None);
    let shown = err.to_string();
    assert!(
        shown.contains("Attestation Token is missing / empty in the issue credential request"),
        "{shown}"
    );
    assert!(shown.contains("[hint: "), "{shown}");
}
