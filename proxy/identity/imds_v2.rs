//! IMDSv2 (protocol.md §3): `getplatformmetadata`, `issuecredential`, and turning the issued
//! certificate into a binding. The key and CSR are in `csr`; the token request is
//! [`IssuedCredential::token_request`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::SERVER;
use http::{HeaderMap, Method, StatusCode};
use rustls_pki_types::CertificateDer;

use crate::certs::binding::{BindingCert, BindingError};
use crate::certs::x509;
use crate::identity::csr::{BindingKey, Csr};
use crate::identity::ests_error::EstsError;
use crate::identity::imds_endpoint::{ImdsBase, UamiSelector, imds_request, push_uami, query};
use crate::identity::outbound_request::{CredentialRequest, RequestError};
use crate::identity::response_json::{
    ResponseError, parse_object, quote, take_optional_string, take_required_string,
};
use crate::identity::token_request::{TokenEndpoint, imds_v2_token};

/// `cred-api-version` of both IMDSv2 calls.
pub const CRED_API_VERSION: &str = "2.0";
/// Path of the platform metadata call.
pub const PLATFORM_METADATA_PATH: &str = "/metadata/identity/getplatformmetadata";
/// Path of the credential issuing call.
pub const ISSUE_CREDENTIAL_PATH: &str = "/metadata/identity/issuecredential";
/// The error a 404 from `getplatformmetadata` becomes: this host has IMDS v1 only.
pub const NOT_SUPPORTED_ERROR: &str = "mtls_pop_token_not_supported_in_imds_v1";
/// What a real IMDS puts in its `Server` header (`IMDS/150.870.65.1854`).
pub const IMDS_SERVER_MARKER: &str = "IMDS";

const METADATA_WHAT: &str = "IMDS getplatformmetadata response";
const ISSUE_WHAT: &str = "IMDS issuecredential response";

/// The VM identity IMDS reports as `cuId`; the CSR must carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CuId {
    /// `vmId`.
    pub vm_id: Option<String>,
    /// `vmssId`.
    pub vmss_id: Option<String>,
}

impl CuId {
    /// At least one id is present and non-empty.
    pub fn has_any(&self) -> bool {
        let non_empty = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
        non_empty(&self.vm_id) || non_empty(&self.vmss_id)
    }
}

/// `getplatformmetadata`'s answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformMetadata {
    /// `clientId`: the identity's client id, the CSR's CN.
    pub client_id: String,
    /// `tenantId`: the CSR's DC.
    pub tenant_id: String,
    /// `cuId`: carried in the CSR attribute.
    pub cu_id: CuId,
    /// `attestationEndpoint` (MAA); unused without key attestation, but required.
    pub attestation_endpoint: String,
}

/// `GET {base}/metadata/identity/getplatformmetadata?cred-api-version=2.0[&uami]`.
/// `resource_id_key` is normally [`crate::identity::imds_endpoint::V2_DEFAULT_RESOURCE_ID_KEY`].
pub fn platform_metadata_request(
    base: &ImdsBase,
    uami: Option<&UamiSelector>,
    resource_id_key: &str,
) -> Result<CredentialRequest, RequestError> {
    const WHAT: &str = "IMDS getplatformmetadata request";
    let mut pairs = vec![("cred-api-version", CRED_API_VERSION)];
    push_uami(WHAT, &mut pairs, uami, resource_id_key)?;
    let uri = base.uri(WHAT, &format!("{PLATFORM_METADATA_PATH}?{}", query(&pairs)))?;
    imds_request(WHAT, Method::GET, uri, None)
}

/// Parses `getplatformmetadata`. A 404 becomes [`NOT_SUPPORTED_ERROR`] (mTLS PoP never falls
/// back to Bearer); a 200 must come from IMDS (`Server` contains `IMDS`).
pub fn parse_platform_metadata(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<PlatformMetadata, ResponseError> {
    if status == StatusCode::NOT_FOUND {
        return Err(ResponseError::rejected(
            METADATA_WHAT,
            not_supported_error(),
        ));
    }
    if status != StatusCode::OK {
        return Err(ResponseError::rejected(
            METADATA_WHAT,
            EstsError::parse(status, body),
        ));
    }
    match headers.get(SERVER).map(|v| v.to_str()) {
        // MSAL compares case-insensitively (`StringComparison.OrdinalIgnoreCase`).
        Some(Ok(server))
            if server
                .to_ascii_uppercase()
                .contains(&IMDS_SERVER_MARKER.to_ascii_uppercase()) => {}
        Some(Ok(server)) => {
            return Err(ResponseError::Invalid {
                what: METADATA_WHAT,
                problem: format!(
                    "header `Server` is {} and does not contain {IMDS_SERVER_MARKER}: not IMDS",
                    quote(server)
                ),
            });
        }
        Some(Err(_)) => {
            return Err(ResponseError::Invalid {
                what: METADATA_WHAT,
                problem: "header `Server` is not visible ASCII".into(),
            });
        }
        None => {
            return Err(ResponseError::Invalid {
                what: METADATA_WHAT,
                problem: format!(
                    "header `Server` is missing (IMDS sends `{IMDS_SERVER_MARKER}/…`): not IMDS"
                ),
            });
        }
    }
    let mut map = parse_object(METADATA_WHAT, body)?;
    let client_id = take_required_string(METADATA_WHAT, &mut map, "clientId")?;
    let tenant_id = take_required_string(METADATA_WHAT, &mut map, "tenantId")?;
    let attestation_endpoint =
        take_required_string(METADATA_WHAT, &mut map, "attestationEndpoint")?;
    let cu_id = match map.remove("cuId") {
        Some(serde_json::Value::Object(mut cu)) => CuId {
            vm_id: take_optional_string(METADATA_WHAT, &mut cu, "vmId").map_err(|_| {
                ResponseError::field(METADATA_WHAT, "cuId.vmId", "must be a string")
            })?,
            vmss_id: take_optional_string(METADATA_WHAT, &mut cu, "vmssId").map_err(|_| {
                ResponseError::field(METADATA_WHAT, "cuId.vmssId", "must be a string")
            })?,
        },
        None | Some(serde_json::Value::Null) => {
            return Err(ResponseError::field(METADATA_WHAT, "cuId", "is missing"));
        }
        Some(other) => {
            return Err(ResponseError::field(
                METADATA_WHAT,
                "cuId",
                format!(
                    "must be an object, found {}",
                    crate::identity::response_json::kind(&other)
                ),
            ));
        }
    };
    if !cu_id.has_any() {
        return Err(ResponseError::field(
            METADATA_WHAT,
            "cuId",
            "has neither a non-empty vmId nor vmssId",
        ));
    }
    Ok(PlatformMetadata {
        client_id,
        tenant_id,
        cu_id,
        attestation_endpoint,
    })
}

fn not_supported_error() -> EstsError {
    let mut error = EstsError::parse(StatusCode::NOT_FOUND, b"");
    error.error = NOT_SUPPORTED_ERROR.into();
    // MSAL's `MsalErrorMessage.MtlsPopTokenNotSupportedinImdsV1`, then what it means here.
    error.description = "mTLS Proof of Possession with managed identity is currently in private \
preview and is not supported on this VM. Ensure you're running on a supported VM image. [IMDS has \
no getplatformmetadata endpoint (IMDS v1 only); popgate never falls back to Bearer]"
        .into();
    error
}

/// `POST {base}/metadata/identity/issuecredential?cred-api-version=2.0[&uami]` with
/// `{"csr":"…"}` and, only when there is one, `"attestation_token":"…"`.
pub fn issue_credential_request(
    base: &ImdsBase,
    uami: Option<&UamiSelector>,
    resource_id_key: &str,
    csr: &Csr,
    attestation_token: Option<&str>,
) -> Result<CredentialRequest, RequestError> {
    const WHAT: &str = "IMDS issuecredential request";
    let mut pairs = vec![("cred-api-version", CRED_API_VERSION)];
    push_uami(WHAT, &mut pairs, uami, resource_id_key)?;
    let uri = base.uri(WHAT, &format!("{ISSUE_CREDENTIAL_PATH}?{}", query(&pairs)))?;
    #[derive(serde::Serialize)]
    struct Body<'a> {
        csr: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        attestation_token: Option<&'a str>,
    }
    let csr_b64 = csr.to_base64();
    let body = serde_json::to_vec(&Body {
        csr: &csr_b64,
        attestation_token: attestation_token.filter(|t| !t.is_empty()),
    })
    .map_err(|e| RequestError::bad(WHAT, "body", e.to_string()))?;
    imds_request(WHAT, Method::POST, uri, Some(body))
}

/// `issuecredential`'s answer; every field is required.
#[derive(Clone, Debug)]
pub struct IssuedCredential {
    /// The client id to put in the token request (the managed identity's).
    pub client_id: String,
    /// The tenant of the token endpoint path.
    pub tenant_id: String,
    /// The issued binding certificate.
    pub certificate: CertificateDer<'static>,
    /// `SystemAssigned` / `UserAssigned`, as IMDS reports it (informational).
    pub identity_type: String,
    /// Base URL of the mTLS token endpoint (`https://{region}.mtlsauth.microsoft.com`).
    pub mtls_authentication_endpoint: String,
}

/// Parses `issuecredential`. Error statuses keep IMDS's text verbatim (with a hint when IMDS
/// demands an attestation token).
pub fn parse_issued_credential(
    status: StatusCode,
    body: &[u8],
) -> Result<IssuedCredential, ResponseError> {
    if status != StatusCode::OK {
        return Err(ResponseError::rejected(
            ISSUE_WHAT,
            EstsError::parse(status, body),
        ));
    }
    let mut map = parse_object(ISSUE_WHAT, body)?;
    let client_id = take_required_string(ISSUE_WHAT, &mut map, "client_id")?;
    let tenant_id = take_required_string(ISSUE_WHAT, &mut map, "tenant_id")?;
    let certificate_b64 = take_required_string(ISSUE_WHAT, &mut map, "certificate")?;
    let identity_type = take_required_string(ISSUE_WHAT, &mut map, "identity_type")?;
    let mtls_authentication_endpoint =
        take_required_string(ISSUE_WHAT, &mut map, "mtls_authentication_endpoint")?;
    let der = STANDARD.decode(certificate_b64.as_bytes()).map_err(|e| {
        ResponseError::field(
            ISSUE_WHAT,
            "certificate",
            format!("is not standard base64 ({e})"),
        )
    })?;
    if let Err(e) = x509::parse(&der) {
        return Err(ResponseError::field(
            ISSUE_WHAT,
            "certificate",
            format!("is not an X.509 certificate ({e})"),
        ));
    }
    let issued = IssuedCredential {
        client_id,
        tenant_id,
        certificate: CertificateDer::from(der),
        identity_type,
        mtls_authentication_endpoint,
    };
    // Fail here, naming the field, rather than later when the token request is built.
    issued.token_endpoint().map_err(|e| {
        ResponseError::field(
            ISSUE_WHAT,
            "mtls_authentication_endpoint",
            format!("cannot be used: {e}"),
        )
    })?;
    Ok(issued)
}

impl IssuedCredential {
    /// `{mtls_authentication_endpoint}/{tenant_id}/oauth2/v2.0/token`.
    pub fn token_endpoint(&self) -> Result<TokenEndpoint, RequestError> {
        TokenEndpoint::from_base_url(&self.mtls_authentication_endpoint, &self.tenant_id)
    }

    /// The token request for `resource`, with the issued `client_id`. Send it over mTLS presenting
    /// [`IssuedCredential::binding_cert`].
    pub fn token_request(&self, resource: &str) -> Result<CredentialRequest, RequestError> {
        imds_v2_token(&self.token_endpoint()?, &self.client_id, resource)
    }

    /// The issued certificate with the key it was issued for.
    pub fn binding_cert(&self, key: &BindingKey) -> Result<BindingCert, BindingError> {
        key.binding_cert(vec![self.certificate.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::csr::build_csr;
    use http::HeaderValue;

    fn imds_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(SERVER, HeaderValue::from_static("IMDS/150.870.65.1854"));
        h
    }

    const METADATA: &str =
        r#"{"cuId":{"vmId":"vm"},"clientId":"c","tenantId":"t","attestationEndpoint":"https://a"}"#;

    #[test]
    fn metadata_request_shape() {
        let base = ImdsBase::parse("http://127.0.0.1:1").unwrap();
        let req = platform_metadata_request(&base, None, "mi_res_id").unwrap();
        let r = req.request();
        assert_eq!(r.method(), Method::GET);
        assert_eq!(
            r.uri().to_string(),
            "http://127.0.0.1:1/metadata/identity/getplatformmetadata?cred-api-version=2.0"
        );
        assert_eq!(r.headers()["metadata"], "true");
        assert_eq!(
            r.headers()["x-ms-client-request-id"],
            req.client_request_id().to_string().as_str()
        );
        assert_eq!(r.headers().len(), 2);
        assert!(r.body().is_empty());
        let uami = UamiSelector::ResourceId("/subscriptions/x".into());
        let req = platform_metadata_request(&base, Some(&uami), "msi_res_id").unwrap();
        assert!(
            req.request()
                .uri()
                .to_string()
                .ends_with("?cred-api-version=2.0&msi_res_id=%2Fsubscriptions%2Fx")
        );
        let req = platform_metadata_request(
            &base,
            Some(&UamiSelector::ObjectId("o".into())),
            "mi_res_id",
        )
        .unwrap();
        assert!(req.request().uri().to_string().ends_with("&object_id=o"));
    }

    #[test]
    fn metadata_needs_imds_server_header_and_every_field() {
        let ok =
            parse_platform_metadata(StatusCode::OK, &imds_headers(), METADATA.as_bytes()).unwrap();
        assert_eq!(
            ok.cu_id,
            CuId {
                vm_id: Some("vm".into()),
                vmss_id: None
            }
        );
        let err = parse_platform_metadata(StatusCode::OK, &HeaderMap::new(), METADATA.as_bytes())
            .unwrap_err();
        assert!(err.to_string().contains("`Server` is missing"), "{err}");
        let mut binary = HeaderMap::new();
        binary.insert(SERVER, HeaderValue::from_bytes(b"IMDS\xff").unwrap());
        let err =
            parse_platform_metadata(StatusCode::OK, &binary, METADATA.as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("`Server` is not visible ASCII"),
            "{err}"
        );
        // MSAL compares case-insensitively.
        let mut lower = HeaderMap::new();
        lower.insert(SERVER, HeaderValue::from_static("imds/150.870.65.1854"));
        assert!(parse_platform_metadata(StatusCode::OK, &lower, METADATA.as_bytes()).is_ok());
        let mut nginx = HeaderMap::new();
        nginx.insert(SERVER, HeaderValue::from_static("nginx"));
        let err = parse_platform_metadata(StatusCode::OK, &nginx, METADATA.as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"nginx\" and does not contain IMDS"),
            "{err}"
        );
        let cases = [
            (
                r#"{"cuId":{"vmId":"vm"},"tenantId":"t","attestationEndpoint":"a"}"#,
                "`clientId` is missing",
            ),
            (
                r#"{"cuId":{"vmId":"vm"},"clientId":"c","attestationEndpoint":"a"}"#,
                "`tenantId` is missing",
            ),
            (
                r#"{"cuId":{"vmId":"vm"},"clientId":"c","tenantId":"t"}"#,
                "`attestationEndpoint` is missing",
            ),
            (
                r#"{"cuId":{"vmId":"vm"},"clientId":"c","tenantId":"t","attestationEndpoint":""}"#,
                "`attestationEndpoint` is empty",
            ),
            (
                r#"{"clientId":"c","tenantId":"t","attestationEndpoint":"a"}"#,
                "`cuId` is missing",
            ),
            (
                r#"{"cuId":"vm","clientId":"c","tenantId":"t","attestationEndpoint":"a"}"#,
                "`cuId` must be an object",
            ),
            (
                r#"{"cuId":{"vmId":"","vmssId":null},"clientId":"c","tenantId":"t","attestationEndpoint":"a"}"#,
                "`cuId` has neither",
            ),
            (
                r#"{"cuId":{"vmId":5},"clientId":"c","tenantId":"t","attestationEndpoint":"a"}"#,
                "`cuId.vmId` must be a string",
            ),
        ];
        for (body, expected) in cases {
            let err = parse_platform_metadata(StatusCode::OK, &imds_headers(), body.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }

    #[test]
    fn metadata_404_means_no_imds_v2() {
        let err = parse_platform_metadata(StatusCode::NOT_FOUND, &HeaderMap::new(), b"Not found")
            .unwrap_err();
        assert_eq!(err.ests().unwrap().error, NOT_SUPPORTED_ERROR);
        assert!(err.to_string().contains(NOT_SUPPORTED_ERROR));
        let err = parse_platform_metadata(
            StatusCode::INTERNAL_SERVER_ERROR,
            &HeaderMap::new(),
            b"boom",
        )
        .unwrap_err();
        assert_eq!(err.ests().unwrap().error, "http_500");
    }

    #[test]
    fn issue_credential_request_body() {
        let key = BindingKey::generate().unwrap();
        let csr = build_csr(
            &key,
            "t",
            "c",
            &CuId {
                vm_id: Some("v".into()),
                vmss_id: None,
            },
        )
        .unwrap();
        let base = ImdsBase::parse("http://127.0.0.1:1").unwrap();
        let req = issue_credential_request(
            &base,
            Some(&UamiSelector::ClientId("u".into())),
            "mi_res_id",
            &csr,
            None,
        )
        .unwrap();
        let r = req.request();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(
            r.uri().to_string(),
            "http://127.0.0.1:1/metadata/identity/issuecredential?cred-api-version=2.0&client_id=u"
        );
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["metadata"], "true");
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body, serde_json::json!({ "csr": csr.to_base64() }));
        let req =
            issue_credential_request(&base, None, "mi_res_id", &csr, Some("maa.token")).unwrap();
        let body: serde_json::Value = serde_json::from_slice(req.request().body()).unwrap();
        assert_eq!(body["attestation_token"], "maa.token");
        assert!(!format!("{req:?}").contains("maa.token"));
    }

    #[test]
    fn issued_credential_fields_are_required_and_checked() {
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let b64 = STANDARD.encode(cert.der());
        let good = serde_json::json!({
            "client_id": "c", "tenant_id": "t", "certificate": b64,
            "identity_type": "SystemAssigned", "mtls_authentication_endpoint": "https://127.0.0.1:9443",
        });
        assert!(parse_issued_credential(StatusCode::OK, good.to_string().as_bytes()).is_ok());
        for field in [
            "client_id",
            "tenant_id",
            "certificate",
            "identity_type",
            "mtls_authentication_endpoint",
        ] {
            let mut missing = good.clone();
            missing.as_object_mut().unwrap().remove(field);
            let err = parse_issued_credential(StatusCode::OK, missing.to_string().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{field}` is missing")), "{err}");
        }
        let mut bad = good.clone();
        bad["certificate"] = "not base64!".into();
        let err = parse_issued_credential(StatusCode::OK, bad.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`certificate` is not standard base64"),
            "{err}"
        );
        bad["certificate"] = STANDARD.encode(b"not a cert").into();
        let err = parse_issued_credential(StatusCode::OK, bad.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("`certificate` is not an X.509"), "{err}");
        let mut bad = good.clone();
        bad["mtls_authentication_endpoint"] = "mtlsauth.microsoft.com".into();
        let err = parse_issued_credential(StatusCode::OK, bad.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`mtls_authentication_endpoint` cannot be used"),
            "{err}"
        );
    }
}
