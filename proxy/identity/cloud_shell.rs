//! Cloud Shell (MSAL.NET's `CloudShellManagedIdentitySource`): `POST {MSI_ENDPOINT}` with
//! `Metadata: true` and the form `resource=…`. System-assigned only.

use bytes::Bytes;
use http::{HeaderValue, Method};
use uuid::Uuid;

use crate::identity::imds_endpoint::query;
use crate::identity::imds_v1::strip_default_suffix;
use crate::identity::mi_source::{MSI_ENDPOINT_ENV, MiSourceError, MiSourceKind, endpoint_url};
use crate::identity::outbound_request::{
    Assemble, CredentialRequest, METADATA, RequestError, parse_uri, require,
};

/// Cloud Shell's identity endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudShellEndpoint {
    endpoint: String,
}

impl CloudShellEndpoint {
    /// Checks `MSI_ENDPOINT`.
    pub fn new(endpoint: &str) -> Result<Self, MiSourceError> {
        Ok(Self {
            endpoint: endpoint_url(MSI_ENDPOINT_ENV, endpoint, MiSourceKind::CloudShell)?,
        })
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.endpoint
    }
}

/// The token request for `resource`.
pub fn token_request(
    endpoint: &CloudShellEndpoint,
    resource: &str,
) -> Result<CredentialRequest, RequestError> {
    const WHAT: &str = "Cloud Shell token request";
    let resource = strip_default_suffix(resource);
    require(WHAT, "resource", resource)?;
    let uri = parse_uri(WHAT, MSI_ENDPOINT_ENV, &endpoint.endpoint)?;
    Assemble {
        method: Method::POST,
        uri,
        headers: vec![(METADATA, HeaderValue::from_static("true"))],
        accept_json: false,
        content_type: Some("application/x-www-form-urlencoded"),
        body: Bytes::from(query(&[("resource", resource)])),
    }
    .finish(WHAT, Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shape() {
        let ep = CloudShellEndpoint::new("http://localhost:50342/oauth2/token").unwrap();
        let req = token_request(&ep, "https://management.azure.com/.default").unwrap();
        let r = req.request();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(r.uri().to_string(), "http://localhost:50342/oauth2/token");
        assert_eq!(r.headers()["metadata"], "true");
        assert_eq!(
            r.headers()["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(r.headers().len(), 2);
        assert_eq!(
            &r.body()[..],
            b"resource=https%3A%2F%2Fmanagement.azure.com"
        );
    }
}
