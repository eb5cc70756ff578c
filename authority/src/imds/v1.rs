//! IMDS v1 `GET /metadata/identity/oauth2/token`: a Bearer token for the VM's managed identity.

use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::json;

use super::backend::ImdsBackend;
use super::query::{
    Query, SelectorKeys, forwarded_problem, metadata_header_problem, method_problem,
    resolve_identity,
};
use super::respond::{Answer, backend_error, unix_now, v1_error};

/// The identity api-versions IMDS documents for this endpoint.
pub const V1_API_VERSIONS: &[&str] = &["2018-02-01", "2019-08-01"];

/// v1 names a user-assigned identity by `msi_res_id` (not IMDSv2's `mi_res_id`).
const V1_SELECTOR_KEYS: SelectorKeys<'static> = SelectorKeys {
    client_id: "client_id",
    resource_id: "msi_res_id",
    object_id: "object_id",
};

/// `mi_res_id` is listed so that it gets its own, explanatory refusal.
const V1_PARAMS: &[&str] = &[
    "api-version",
    "resource",
    "client_id",
    "msi_res_id",
    "object_id",
    "mi_res_id",
];

/// Answers one v1 token request (the request has no body worth reading).
pub(crate) fn token(parts: &Parts, backend: &dyn ImdsBackend) -> Answer {
    let bad = |description: &str| v1_error(StatusCode::BAD_REQUEST, "invalid_request", description);
    if let Some(status) = method_problem(&parts.method, &Method::GET) {
        return v1_error(
            status,
            "invalid_request",
            "the IMDS token endpoint accepts GET only",
        );
    }
    if let Some(problem) = forwarded_problem(&parts.headers) {
        return bad(problem);
    }
    if let Some(problem) = metadata_header_problem(&parts.headers) {
        return bad(problem);
    }
    let query = match Query::parse(&parts.uri, V1_PARAMS) {
        Ok(q) => q,
        Err(e) => return bad(&e.0),
    };
    if query.get("mi_res_id").is_some() {
        return bad(
            "'mi_res_id' is not an IMDS v1 parameter: v1 names a user-assigned identity by 'msi_res_id'",
        );
    }
    match query.get("api-version") {
        None => return bad("Required query variable 'api-version' is missing"),
        Some(v) if !V1_API_VERSIONS.contains(&v) => {
            return bad(&format!(
                "api-version '{v}' is not supported here (supported: {})",
                V1_API_VERSIONS.join(", ")
            ));
        }
        Some(_) => {}
    }
    let Some(resource) = query.get("resource") else {
        return bad("Required query variable 'resource' is missing");
    };
    let selector = match query.selector(&V1_SELECTOR_KEYS) {
        Ok(s) => s,
        Err(e) => return bad(&e.0),
    };
    let identity = match resolve_identity(backend, selector.as_ref()) {
        Ok(i) => i,
        Err(e) => return bad(&e),
    };
    let minted = match backend.mint_bearer_token(&identity, resource) {
        Ok(t) => t,
        Err(e) => return backend_error(&e).for_client(&identity.client_id),
    };
    let now = unix_now();
    let expires_in = minted.expires_in.to_string();
    Answer::ok(
        json!({
            "access_token": minted.access_token,
            "client_id": identity.client_id,
            "expires_in": expires_in,
            "expires_on": now.saturating_add(minted.expires_in).to_string(),
            "ext_expires_in": expires_in,
            "not_before": now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
        identity.client_id,
        "bearer",
    )
}
