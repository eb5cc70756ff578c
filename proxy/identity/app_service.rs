//! App Service / Functions managed identity (protocol.md §4):
//! `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=…[&uami]`, `X-IDENTITY-HEADER`.

use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::identity::imds_endpoint::{APP_SERVICE_RESOURCE_ID_KEY, UamiSelector, push_uami, query};
use crate::identity::imds_v1::strip_default_suffix;
use crate::identity::mi_source::{MiSourceError, MiSourceKind, endpoint_url};
use crate::identity::mi_token_response::{ManagedIdentityToken, parse_managed_identity_token};
use crate::identity::outbound_request::{
    Assemble, CredentialRequest, RequestError, parse_uri, require,
};
use crate::identity::response_json::ResponseError;

/// The App Service identity API version popgate speaks.
pub const API_VERSION: &str = "2019-08-01";
/// Environment variable holding the local identity endpoint URL.
pub const IDENTITY_ENDPOINT_ENV: &str = "IDENTITY_ENDPOINT";
/// Environment variable holding the per-process secret the endpoint checks.
pub const IDENTITY_HEADER_ENV: &str = "IDENTITY_HEADER";
/// The header that carries that secret.
pub const X_IDENTITY_HEADER: HeaderName = HeaderName::from_static("x-identity-header");

/// The App Service identity endpoint and its secret header value. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AppServiceEndpoint {
    endpoint: String,
    identity_header: Zeroizing<String>,
}

impl AppServiceEndpoint {
    /// Checks the endpoint is an absolute URL without a query and the secret is non-empty.
    pub fn new(endpoint: &str, identity_header: Zeroizing<String>) -> Result<Self, RequestError> {
        const WHAT: &str = "App Service identity endpoint";
        let uri = parse_uri(WHAT, IDENTITY_ENDPOINT_ENV, endpoint)?;
        if uri.query().is_some() {
            return Err(RequestError::bad(
                WHAT,
                IDENTITY_ENDPOINT_ENV,
                "must not have a query",
            ));
        }
        require(WHAT, IDENTITY_HEADER_ENV, &identity_header)?;
        if HeaderValue::from_str(&identity_header).is_err() {
            return Err(RequestError::bad(
                WHAT,
                IDENTITY_HEADER_ENV,
                "is not a valid header value",
            ));
        }
        Ok(Self {
            endpoint: endpoint.to_string(),
            identity_header,
        })
    }

    /// From `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` as detection found them; MSAL's error for a
    /// malformed URL.
    pub fn from_source_env(
        endpoint: &str,
        identity_header: Zeroizing<String>,
    ) -> Result<Self, MiSourceError> {
        let endpoint = endpoint_url(IDENTITY_ENDPOINT_ENV, endpoint, MiSourceKind::AppService)?;
        Self::new(&endpoint, identity_header).map_err(|e| MiSourceError {
            code: crate::identity::mi_source::INVALID_MI_ENDPOINT,
            message: e.to_string(),
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.endpoint
    }
}

impl fmt::Debug for AppServiceEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppServiceEndpoint")
            .field("endpoint", &self.endpoint)
            .field("identity_header", &"<redacted>")
            .finish()
    }
}

/// The token request for `resource` (a trailing `/.default` removed). The returned id is for
/// popgate's own logs; App Service's API takes no request-id header.
pub fn token_request(
    endpoint: &AppServiceEndpoint,
    resource: &str,
    uami: Option<&UamiSelector>,
) -> Result<CredentialRequest, RequestError> {
    const WHAT: &str = "App Service token request";
    let resource = strip_default_suffix(resource);
    require(WHAT, "resource", resource)?;
    let mut pairs = vec![("api-version", API_VERSION), ("resource", resource)];
    push_uami(WHAT, &mut pairs, uami, APP_SERVICE_RESOURCE_ID_KEY)?;
    let uri = parse_uri(
        WHAT,
        IDENTITY_ENDPOINT_ENV,
        &format!("{}?{}", endpoint.endpoint, query(&pairs)),
    )?;
    let mut secret = HeaderValue::from_str(&endpoint.identity_header)
        .map_err(|_| RequestError::bad(WHAT, IDENTITY_HEADER_ENV, "is not a valid header value"))?;
    secret.set_sensitive(true);
    Assemble {
        method: Method::GET,
        uri,
        headers: vec![(X_IDENTITY_HEADER, secret)],
        accept_json: false,
        content_type: None,
        body: Bytes::new(),
    }
    .finish(WHAT, Uuid::new_v4())
}

/// Parses the answer; see [`parse_managed_identity_token`].
pub fn parse_token_response(
    status: StatusCode,
    body: &[u8],
    now: SystemTime,
) -> Result<ManagedIdentityToken, ResponseError> {
    parse_managed_identity_token("App Service token response", status, body, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn endpoint() -> AppServiceEndpoint {
        AppServiceEndpoint::new(
            "http://127.0.0.1:41741/MSI/token/",
            Zeroizing::new("hdr-s3cret".into()),
        )
        .unwrap()
    }

    #[test]
    fn request_shape() {
        let req = token_request(
            &endpoint(),
            "https://vault.azure.net",
            Some(&UamiSelector::ResourceId("/r".into())),
        )
        .unwrap();
        let r = req.request();
        assert_eq!(
            r.uri().to_string(),
            "http://127.0.0.1:41741/MSI/token/?api-version=2019-08-01&resource=https%3A%2F%2Fvault.azure.net&mi_res_id=%2Fr"
        );
        assert_eq!(r.headers()["x-identity-header"], "hdr-s3cret");
        assert!(r.headers()["x-identity-header"].is_sensitive());
        assert_eq!(r.headers().len(), 1);
        assert!(!format!("{req:?} {:?}", endpoint()).contains("s3cret"));
    }

    #[test]
    fn bad_configuration_is_named() {
        let err = AppServiceEndpoint::new("http://h/x?y=1", Zeroizing::new("s".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("IDENTITY_ENDPOINT must not have a query"),
            "{err}"
        );
        let err = AppServiceEndpoint::new("http://h/x", Zeroizing::new(String::new()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("IDENTITY_HEADER is empty"), "{err}");
        let err = AppServiceEndpoint::new("h/x", Zeroizing::new("s".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("IDENTITY_ENDPOINT"), "{err}");
    }

    #[test]
    fn unix_seconds_response() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t = parse_token_response(
            StatusCode::OK,
            br#"{"access_token":"a","expires_on":"1800003600","resource":"https://vault.azure.net","token_type":"Bearer","client_id":"c"}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.client_id.as_deref(), Some("c"));
        assert_eq!(t.token.expires_at, now + Duration::from_secs(3600));
    }
}
