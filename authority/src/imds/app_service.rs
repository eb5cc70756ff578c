//! The App Service / Functions managed-identity endpoint: `GET /msi/token?api-version=2019-08-01`
//! guarded by the `X-IDENTITY-HEADER` secret instead of `Metadata: true`.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use http::request::Parts;
use http::{Method, StatusCode};
use serde_json::json;

use super::backend::ImdsBackend;
use super::query::{Query, SelectorKeys, method_problem, resolve_identity};
use super::respond::{Answer, app_service_error, unix_now};

/// The only api-version of the `IDENTITY_ENDPOINT` protocol MSAL speaks.
pub const APP_SERVICE_API_VERSION: &str = "2019-08-01";

const APP_SERVICE_SELECTOR_KEYS: SelectorKeys<'static> = SelectorKeys {
    client_id: "client_id",
    resource_id: "mi_res_id",
    object_id: "object_id",
};

const APP_SERVICE_PARAMS: &[&str] = &[
    "api-version",
    "resource",
    "client_id",
    "mi_res_id",
    "object_id",
];

/// Answers one App Service token request; `secret` is the configured `X-IDENTITY-HEADER` value.
pub(crate) fn token(parts: &Parts, backend: &dyn ImdsBackend, secret: &str) -> Answer {
    let bad = |description: &str| {
        app_service_error(StatusCode::BAD_REQUEST, "invalid_request", description)
    };
    if let Some(status) = method_problem(&parts.method, &Method::GET) {
        return app_service_error(
            status,
            "method_not_allowed",
            "the identity endpoint accepts GET only",
        );
    }
    match parts.headers.get("x-identity-header") {
        None => return bad("The X-IDENTITY-HEADER header is missing"),
        Some(given) => {
            if verify_slices_are_equal(given.as_bytes(), secret.as_bytes()).is_err() {
                return app_service_error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "The X-IDENTITY-HEADER header does not match this site's identity secret",
                );
            }
        }
    }
    let query = match Query::parse(&parts.uri, APP_SERVICE_PARAMS) {
        Ok(q) => q,
        Err(e) => return bad(&e.0),
    };
    match query.get("api-version") {
        None => return bad("Required query parameter 'api-version' is missing"),
        Some(APP_SERVICE_API_VERSION) => {}
        Some(v) => {
            return bad(&format!(
                "api-version '{v}' is not supported (use {APP_SERVICE_API_VERSION})"
            ));
        }
    }
    let Some(resource) = query.get("resource") else {
        return bad("Required query parameter 'resource' is missing");
    };
    let selector = match query.selector(&APP_SERVICE_SELECTOR_KEYS) {
        Ok(s) => s,
        Err(e) => return bad(&e.0),
    };
    let identity = match resolve_identity(backend, selector.as_ref()) {
        Ok(i) => i,
        Err(e) => return bad(&e),
    };
    let minted = match backend.mint_bearer_token(&identity, resource) {
        Ok(t) => t,
        Err(e) => {
            return app_service_error(
                StatusCode::BAD_REQUEST,
                &e.error,
                &format!("AADSTS{}: {}", e.code, e.description),
            )
            .for_client(&identity.client_id);
        }
    };
    Answer::ok(
        json!({
            "access_token": minted.access_token,
            "expires_on": unix_now().saturating_add(minted.expires_in).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.client_id,
        }),
        identity.client_id,
        "bearer",
    )
}
