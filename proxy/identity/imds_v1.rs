//! IMDS v1 Bearer tokens (protocol.md §4):
//! `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=…[&uami]`, `Metadata: true`.

use std::time::SystemTime;

use http::{Method, StatusCode};

use crate::identity::imds_endpoint::{
    ImdsBase, UamiSelector, V1_RESOURCE_ID_KEY, imds_request, push_uami, query,
};
use crate::identity::mi_token_response::{ManagedIdentityToken, parse_managed_identity_token};
use crate::identity::outbound_request::{CredentialRequest, RequestError, require};
use crate::identity::token_request::DEFAULT_SCOPE_SUFFIX;

/// The IMDS v1 token API version popgate speaks.
pub const API_VERSION: &str = "2018-02-01";
/// Path of the IMDS v1 token endpoint.
pub const TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

/// The token request for `resource` (a trailing `/.default` is removed: IMDS wants a resource,
/// not a scope). UAMI resource ids go in `msi_res_id` on v1.
pub fn token_request(
    base: &ImdsBase,
    resource: &str,
    uami: Option<&UamiSelector>,
) -> Result<CredentialRequest, RequestError> {
    const WHAT: &str = "IMDS v1 token request";
    let resource = strip_default_suffix(resource);
    require(WHAT, "resource", resource)?;
    let mut pairs = vec![("api-version", API_VERSION), ("resource", resource)];
    push_uami(WHAT, &mut pairs, uami, V1_RESOURCE_ID_KEY)?;
    let uri = base.uri(WHAT, &format!("{TOKEN_PATH}?{}", query(&pairs)))?;
    imds_request(WHAT, Method::GET, uri, None)
}

/// Parses the answer; see [`parse_managed_identity_token`].
pub fn parse_token_response(
    status: StatusCode,
    body: &[u8],
    now: SystemTime,
) -> Result<ManagedIdentityToken, crate::identity::response_json::ResponseError> {
    parse_managed_identity_token("IMDS v1 token response", status, body, now)
}

/// `resource` without one trailing `/.default`.
pub(crate) fn strip_default_suffix(resource: &str) -> &str {
    resource
        .strip_suffix(DEFAULT_SCOPE_SUFFIX)
        .unwrap_or(resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shape_and_uami_keys() {
        let base = ImdsBase::parse("http://127.0.0.1:9").unwrap();
        let req = token_request(&base, "https://management.azure.com/.default", None).unwrap();
        let r = req.request();
        assert_eq!(r.method(), Method::GET);
        assert_eq!(
            r.uri().to_string(),
            "http://127.0.0.1:9/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com"
        );
        assert_eq!(r.headers()["metadata"], "true");
        assert_eq!(
            r.headers()["x-ms-client-request-id"],
            req.client_request_id().to_string().as_str()
        );
        assert_eq!(r.headers().len(), 2);
        for (selector, key) in [
            (UamiSelector::ClientId("c".into()), "&client_id=c"),
            (UamiSelector::ResourceId("/r".into()), "&msi_res_id=%2Fr"),
            (UamiSelector::ObjectId("o".into()), "&object_id=o"),
        ] {
            let req = token_request(&base, "https://vault.azure.net", Some(&selector)).unwrap();
            assert!(
                req.request().uri().to_string().ends_with(key),
                "{}",
                req.request().uri()
            );
        }
        let err = token_request(&base, "/.default", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("resource is empty"), "{err}");
    }
}
