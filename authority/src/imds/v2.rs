//! IMDSv2: `GET getplatformmetadata` (who am I, which VM) and `POST issuecredential` (a binding
//! certificate for a verified CSR).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::request::Parts;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::backend::{ImdsBackend, ManagedIdentity};
use super::csr_verify::{ExpectedCsr, compact_cu_id, verify_csr};
use super::query::{
    Query, SelectorKeys, forwarded_problem, metadata_header_problem, method_problem,
    resolve_identity,
};
use super::respond::{Answer, v2_error};
use super::server::ImdsSettings;

/// The only credential api-version MSAL speaks.
pub const CRED_API_VERSION: &str = "2.0";

/// A CSR (~1.4 KiB base64) plus an attestation token (a few KiB) fit easily; more is not a request.
const MAX_ISSUE_CREDENTIAL_BODY: usize = 64 * 1024;

/// The 400 IMDS answers when it demands attestation (`imdsv2-issuecredential-400-attestation-missing.json`).
pub const ATTESTATION_MISSING: &str =
    "Attestation Token is missing / empty in the issue credential request";

fn bad(description: &str) -> Answer {
    v2_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// Checks what both v2 endpoints require and resolves the addressed identity.
fn prelude(
    parts: &Parts,
    method: &Method,
    backend: &dyn ImdsBackend,
    settings: &ImdsSettings,
) -> Result<ManagedIdentity, Answer> {
    if let Some(status) = method_problem(&parts.method, method) {
        return Err(v2_error(
            status,
            "invalid_request",
            &format!("this endpoint accepts {method} only"),
        ));
    }
    if let Some(problem) = forwarded_problem(&parts.headers) {
        return Err(bad(problem));
    }
    if let Some(problem) = metadata_header_problem(&parts.headers) {
        return Err(bad(problem));
    }
    let keys = SelectorKeys {
        client_id: "client_id",
        resource_id: &settings.v2_uami_resource_id_key,
        object_id: "object_id",
    };
    let allowed = [
        "cred-api-version",
        keys.client_id,
        keys.resource_id,
        keys.object_id,
    ];
    let query = Query::parse(&parts.uri, &allowed).map_err(|e| bad(&e.0))?;
    match query.get("cred-api-version") {
        None => return Err(bad("Required query variable 'cred-api-version' is missing")),
        Some(CRED_API_VERSION) => {}
        Some(v) => {
            return Err(bad(&format!(
                "cred-api-version '{v}' is not supported (use {CRED_API_VERSION})"
            )));
        }
    }
    let selector = query.selector(&keys).map_err(|e| bad(&e.0))?;
    resolve_identity(backend, selector.as_ref()).map_err(|e| bad(&e))
}

/// `GET /metadata/identity/getplatformmetadata?cred-api-version=2.0[&uami]`.
pub(crate) fn platform_metadata(
    parts: &Parts,
    backend: &dyn ImdsBackend,
    settings: &ImdsSettings,
) -> Answer {
    let identity = match prelude(parts, &Method::GET, backend, settings) {
        Ok(i) => i,
        Err(answer) => return answer,
    };
    let cu = backend.cu_id();
    let mut cu_json = serde_json::Map::new();
    if let Some(vm) = cu.vm_id.filter(|v| !v.is_empty()) {
        cu_json.insert("vmId".into(), vm.into());
    }
    if let Some(vmss) = cu.vmss_id.filter(|v| !v.is_empty()) {
        cu_json.insert("vmssId".into(), vmss.into());
    }
    if cu_json.is_empty() {
        return v2_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "this VM has neither a vmId nor a vmssId (authority misconfigured)",
        );
    }
    Answer::ok(
        json!({
            "clientId": identity.client_id,
            "tenantId": identity.tenant_id,
            "cuId": cu_json,
            "attestationEndpoint": settings.attestation_endpoint,
        }),
        identity.client_id,
        "platform_metadata",
    )
}

/// The issuecredential body: exactly these fields.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueCredentialBody {
    csr: String,
    #[serde(default)]
    attestation_token: Option<String>,
}

fn is_json_content_type(parts: &Parts) -> bool {
    parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// `POST /metadata/identity/issuecredential?cred-api-version=2.0[&uami]`. With
/// `attestation_required`, a body without a non-empty `attestation_token` gets IMDS's 400.
pub(crate) async fn issue_credential(
    req: Request<Incoming>,
    backend: &dyn ImdsBackend,
    settings: &ImdsSettings,
    attestation_required: bool,
) -> Answer {
    let (parts, body) = req.into_parts();
    let identity = match prelude(&parts, &Method::POST, backend, settings) {
        Ok(i) => i,
        Err(answer) => return answer,
    };
    let client_id = identity.client_id.clone();
    if !is_json_content_type(&parts) {
        return bad("Content-Type must be application/json").for_client(&client_id);
    }
    let bytes = match Limited::new(body, MAX_ISSUE_CREDENTIAL_BODY)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return v2_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                &format!("request body exceeds {MAX_ISSUE_CREDENTIAL_BODY} bytes"),
            )
            .for_client(&client_id);
        }
        Err(e) => {
            return bad(&format!("cannot read the request body: {e}")).for_client(&client_id);
        }
    };
    let request: IssueCredentialBody = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return bad(&format!(
                "body must be JSON {{\"csr\":\"…\"[,\"attestation_token\":\"…\"]}}: {e}"
            ))
            .for_client(&client_id);
        }
    };
    let has_attestation = request
        .attestation_token
        .as_deref()
        .is_some_and(|t| !t.is_empty());
    if attestation_required && !has_attestation {
        return bad(ATTESTATION_MISSING).for_client(&client_id);
    }
    let cu_id_json = compact_cu_id(&backend.cu_id());
    let expected = ExpectedCsr {
        tenant_id: &identity.tenant_id,
        client_id: &identity.client_id,
        cu_id_json: &cu_id_json,
    };
    let verified = match verify_csr(&request.csr, &expected) {
        Ok(v) => v,
        Err(e) => return bad(&e.to_string()).for_client(&client_id),
    };
    let cert_der =
        match backend.issue_certificate(&identity, &verified.spki_der, settings.cert_lifetime) {
            Ok(der) => der,
            Err(e) => {
                return v2_error(
                    StatusCode::BAD_REQUEST,
                    &e.error,
                    &format!("AADSTS{}: {}", e.code, e.description),
                )
                .for_client(&client_id);
            }
        };
    let identity_type = if identity.system_assigned {
        "SystemAssigned"
    } else {
        "UserAssigned"
    };
    Answer::ok(
        json!({
            "client_id": identity.client_id,
            "tenant_id": identity.tenant_id,
            "certificate": STANDARD.encode(&cert_der),
            "identity_type": identity_type,
            "mtls_authentication_endpoint": backend.mtls_authentication_endpoint(),
        }),
        client_id,
        "certificate_issued",
    )
}
