//! Azure Machine Learning (MSAL.NET's `MachineLearningManagedIdentitySource`):
//! `GET {MSI_ENDPOINT}?api-version=2017-09-01&resource=…&clientid=…` with `Metadata: true` and
//! `secret: {MSI_SECRET}`. The system-assigned identity is named by `DEFAULT_IDENTITY_CLIENT_ID`;
//! a user-assigned one by client id only.

use bytes::Bytes;
use http::{HeaderValue, Method};
use uuid::Uuid;

use crate::identity::imds_endpoint::{UamiSelector, query};
use crate::identity::imds_v1::strip_default_suffix;
use crate::identity::mi_source::{
    HeaderSecret, INVALID_MI_ENDPOINT, INVALID_MI_ID_TYPE, MSI_ENDPOINT_ENV, MiSourceError,
    MiSourceKind, check_selector, endpoint_url,
};
use crate::identity::outbound_request::{
    Assemble, CredentialRequest, METADATA, RequestError, parse_uri, require,
};
use crate::identity::service_fabric::SECRET_HEADER;

/// The Machine Learning identity API version MSAL speaks.
pub const ML_API_VERSION: &str = "2017-09-01";
/// The client-id query key of that API version (MSAL's `ManagedIdentityClientId2017`).
pub const CLIENT_ID_KEY: &str = "clientid";
/// MSAL's message when the system-assigned identity has no client id to send.
pub const NO_DEFAULT_CLIENT_ID: &str =
    "The DEFAULT_IDENTITY_CLIENT_ID environment variable is null.";

/// The Machine Learning identity endpoint, its secret, and the default identity's client id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineLearningEndpoint {
    endpoint: String,
    secret: HeaderSecret,
    default_client_id: Option<String>,
}

impl MachineLearningEndpoint {
    /// Checks `MSI_ENDPOINT` and that `MSI_SECRET` fits in a header.
    pub fn new(
        endpoint: &str,
        secret: HeaderSecret,
        default_client_id: Option<String>,
    ) -> Result<Self, MiSourceError> {
        let endpoint = endpoint_url(MSI_ENDPOINT_ENV, endpoint, MiSourceKind::MachineLearning)?;
        if HeaderValue::from_str(secret.expose()).is_err() {
            return Err(MiSourceError {
                code: INVALID_MI_ENDPOINT,
                message: "[Managed Identity] The environment variable MSI_SECRET is not a valid header value in Machine Learning managed identity source.".into(),
            });
        }
        Ok(Self {
            endpoint,
            secret,
            default_client_id,
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.endpoint
    }

    /// The client id sent for `uami` (MSAL's rules and errors).
    pub fn client_id<'a>(
        &'a self,
        uami: Option<&'a UamiSelector>,
    ) -> Result<&'a str, MiSourceError> {
        check_selector(MiSourceKind::MachineLearning, uami)?;
        match uami {
            Some(UamiSelector::ClientId(id)) => Ok(id),
            _ => self
                .default_client_id
                .as_deref()
                .ok_or_else(|| MiSourceError {
                    code: INVALID_MI_ID_TYPE,
                    message: NO_DEFAULT_CLIENT_ID.into(),
                }),
        }
    }
}

/// The token request for `resource`.
pub fn token_request(
    endpoint: &MachineLearningEndpoint,
    resource: &str,
    uami: Option<&UamiSelector>,
) -> Result<CredentialRequest, RequestError> {
    const WHAT: &str = "Machine Learning token request";
    let resource = strip_default_suffix(resource);
    require(WHAT, "resource", resource)?;
    let client_id = endpoint
        .client_id(uami)
        .map_err(|e| RequestError::bad(WHAT, "client id", e.to_string()))?;
    let pairs = [
        ("api-version", ML_API_VERSION),
        ("resource", resource),
        (CLIENT_ID_KEY, client_id),
    ];
    let uri = parse_uri(
        WHAT,
        MSI_ENDPOINT_ENV,
        &format!("{}?{}", endpoint.endpoint, query(&pairs)),
    )?;
    let mut secret = HeaderValue::from_str(endpoint.secret.expose())
        .map_err(|_| RequestError::bad(WHAT, "MSI_SECRET", "is not a valid header value"))?;
    secret.set_sensitive(true);
    Assemble {
        method: Method::GET,
        uri,
        headers: vec![
            (METADATA, HeaderValue::from_static("true")),
            (SECRET_HEADER, secret),
        ],
        accept_json: false,
        content_type: None,
        body: Bytes::new(),
    }
    .finish(WHAT, Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn endpoint(default: Option<&str>) -> MachineLearningEndpoint {
        MachineLearningEndpoint::new(
            "http://127.0.0.1:46808/msi/token",
            HeaderSecret::new(Zeroizing::new("ml-s3cret".into())),
            default.map(str::to_string),
        )
        .unwrap()
    }

    #[test]
    fn request_shape() {
        let req = token_request(&endpoint(Some("d3f")), "https://vault.azure.net", None).unwrap();
        let r = req.request();
        assert_eq!(
            r.uri().to_string(),
            "http://127.0.0.1:46808/msi/token?api-version=2017-09-01&resource=https%3A%2F%2Fvault.azure.net&clientid=d3f"
        );
        assert_eq!(r.headers()["metadata"], "true");
        assert_eq!(r.headers()["secret"], "ml-s3cret");
        assert_eq!(r.headers().len(), 2);
        let cid = UamiSelector::ClientId("u1".into());
        let req = token_request(&endpoint(None), "https://vault.azure.net", Some(&cid)).unwrap();
        assert!(req.request().uri().to_string().ends_with("&clientid=u1"));
        let err = token_request(&endpoint(None), "https://vault.azure.net", None).unwrap_err();
        assert!(err.to_string().contains(NO_DEFAULT_CLIENT_ID), "{err}");
    }
}
