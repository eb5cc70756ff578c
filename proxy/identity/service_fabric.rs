//! Service Fabric (MSAL.NET's `ServiceFabricManagedIdentitySource`):
//! `GET {IDENTITY_ENDPOINT}?api-version=2020-05-01&resource=…[&principalId=…]` with the
//! `secret: {IDENTITY_HEADER}` header, over TLS to a server whose certificate is the one named by
//! `IDENTITY_SERVER_THUMBPRINT` (SHA-1). A user-assigned identity by object id only.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use uuid::Uuid;

use crate::identity::imds_endpoint::{UamiSelector, query};
use crate::identity::imds_v1::strip_default_suffix;
use crate::identity::mi_source::{
    HeaderSecret, IDENTITY_ENDPOINT_ENV, IDENTITY_SERVER_THUMBPRINT_ENV, INVALID_MI_ENDPOINT,
    MiSourceError, MiSourceKind, check_selector, endpoint_url,
};
use crate::identity::outbound_request::{
    Assemble, CredentialRequest, RequestError, parse_uri, require,
};

/// The Service Fabric identity API version MSAL.NET speaks since 4.83 (earlier: 2019-07-01-preview).
pub const SF_API_VERSION: &str = "2020-05-01";
/// The header carrying `IDENTITY_HEADER`.
pub const SECRET_HEADER: HeaderName = HeaderName::from_static("secret");
/// The query key of a user-assigned identity's object id (MSAL's
/// `ServiceFabricManagedIdentityPrincipalId`).
pub const PRINCIPAL_ID_KEY: &str = "principalId";

/// The Service Fabric identity endpoint, its secret and its certificate's thumbprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFabricEndpoint {
    endpoint: String,
    secret: HeaderSecret,
    /// Uppercase hex SHA-1.
    thumbprint: String,
}

impl ServiceFabricEndpoint {
    /// Checks the URL and that the thumbprint is a SHA-1 in hex (40 digits).
    pub fn new(
        endpoint: &str,
        secret: HeaderSecret,
        thumbprint: &str,
    ) -> Result<Self, MiSourceError> {
        let endpoint = endpoint_url(IDENTITY_ENDPOINT_ENV, endpoint, MiSourceKind::ServiceFabric)?;
        let thumbprint = thumbprint.trim();
        if thumbprint.len() != 40 || !thumbprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(MiSourceError {
                code: INVALID_MI_ENDPOINT,
                message: format!(
                    "[Managed Identity] The environment variable {IDENTITY_SERVER_THUMBPRINT_ENV} is not a SHA-1 thumbprint (40 hex digits) in Service Fabric managed identity source."
                ),
            });
        }
        if HeaderValue::from_str(secret.expose()).is_err() {
            return Err(MiSourceError {
                code: INVALID_MI_ENDPOINT,
                message: "[Managed Identity] The environment variable IDENTITY_HEADER is not a valid header value in Service Fabric managed identity source.".into(),
            });
        }
        Ok(Self {
            endpoint,
            secret,
            thumbprint: thumbprint.to_ascii_uppercase(),
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.endpoint
    }

    /// The server certificate's SHA-1 thumbprint, uppercase hex.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }
}

/// The token request for `resource`, pinned to the endpoint's certificate.
pub fn token_request(
    endpoint: &ServiceFabricEndpoint,
    resource: &str,
    uami: Option<&UamiSelector>,
) -> Result<CredentialRequest, RequestError> {
    const WHAT: &str = "Service Fabric token request";
    let resource = strip_default_suffix(resource);
    require(WHAT, "resource", resource)?;
    check_selector(MiSourceKind::ServiceFabric, uami)
        .map_err(|e| RequestError::bad(WHAT, "user-assigned identity", e.to_string()))?;
    let mut pairs = vec![("api-version", SF_API_VERSION), ("resource", resource)];
    if let Some(UamiSelector::ObjectId(oid)) = uami {
        pairs.push((PRINCIPAL_ID_KEY, oid));
    }
    let uri = parse_uri(
        WHAT,
        IDENTITY_ENDPOINT_ENV,
        &format!("{}?{}", endpoint.endpoint, query(&pairs)),
    )?;
    let mut secret = HeaderValue::from_str(endpoint.secret.expose())
        .map_err(|_| RequestError::bad(WHAT, "IDENTITY_HEADER", "is not a valid header value"))?;
    secret.set_sensitive(true);
    Ok(Assemble {
        method: Method::GET,
        uri,
        headers: vec![(SECRET_HEADER, secret)],
        accept_json: false,
        content_type: None,
        body: Bytes::new(),
    }
    .finish(WHAT, Uuid::new_v4())?
    .pin_server_sha1(&endpoint.thumbprint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn endpoint() -> ServiceFabricEndpoint {
        ServiceFabricEndpoint::new(
            "https://127.0.0.1:2377/metadata/identity/oauth2/token",
            HeaderSecret::new(Zeroizing::new("sf-s3cret".into())),
            &"ab".repeat(20),
        )
        .unwrap()
    }

    #[test]
    fn request_shape() {
        let oid = UamiSelector::ObjectId("0d0c".into());
        let req = token_request(&endpoint(), "https://vault.azure.net", Some(&oid)).unwrap();
        let r = req.request();
        assert_eq!(
            r.uri().to_string(),
            "https://127.0.0.1:2377/metadata/identity/oauth2/token?api-version=2020-05-01&resource=https%3A%2F%2Fvault.azure.net&principalId=0d0c"
        );
        assert_eq!(r.headers()["secret"], "sf-s3cret");
        assert_eq!(r.headers().len(), 1);
        assert_eq!(req.server_sha1(), Some("AB".repeat(20).as_str()));
        assert!(!format!("{req:?} {:?}", endpoint()).contains("s3cret"));
        let cid = UamiSelector::ClientId("c".into());
        let err = token_request(&endpoint(), "https://vault.azure.net", Some(&cid)).unwrap_err();
        assert!(err.to_string().contains("principalId"), "{err}");
    }

    #[test]
    fn thumbprint_must_be_sha1_hex() {
        let secret = HeaderSecret::new(Zeroizing::new("s".into()));
        let err = ServiceFabricEndpoint::new("https://h/t", secret, "abc").unwrap_err();
        assert!(err.message.contains("IDENTITY_SERVER_THUMBPRINT"), "{err}");
    }
}
