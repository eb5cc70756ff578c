//! Where IMDS is and how a request names a user-assigned identity (protocol.md §3, §4).

use http::{HeaderValue, Method, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use uuid::Uuid;

use crate::identity::outbound_request::{
    Assemble, CredentialRequest, METADATA, RequestError, X_MS_CLIENT_REQUEST_ID, id_header,
    parse_uri, require,
};

/// IMDS's link-local address.
pub const DEFAULT_IMDS_BASE: &str = "http://169.254.169.254";
/// The environment variable that overrides the IMDS base URL (as Azure SDKs honour it).
pub const IMDS_BASE_ENV: &str = "AZURE_POD_IDENTITY_AUTHORITY_HOST";

/// UAMI resource-id query key on IMDS v1 (`msi_res_id`, as IMDS v1 documents it).
pub const V1_RESOURCE_ID_KEY: &str = "msi_res_id";
/// UAMI resource-id query key on IMDSv2, as MSAL.NET sends it. Unproven against real IMDS
/// (Microsoft's Python MSI v2 client sends `msi_res_id`), hence overridable.
pub const V2_DEFAULT_RESOURCE_ID_KEY: &str = "mi_res_id";
/// UAMI resource-id query key on App Service / Functions (`2019-08-01`).
pub const APP_SERVICE_RESOURCE_ID_KEY: &str = "mi_res_id";

/// Characters percent-encoded in query values: everything but RFC 3986 unreserved characters.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The IMDS base URL (scheme, host, optional port; no path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImdsBase {
    base: String,
}

impl ImdsBase {
    /// Parses a base URL such as `http://169.254.169.254` or `http://127.0.0.1:8080`.
    pub fn parse(url: &str) -> Result<Self, RequestError> {
        const WHAT: &str = "IMDS base URL";
        let trimmed = url.trim_end_matches('/');
        let uri = parse_uri(WHAT, IMDS_BASE_ENV, trimmed)?;
        if (uri.path() != "/" && !uri.path().is_empty()) || uri.query().is_some() {
            return Err(RequestError::bad(
                WHAT,
                IMDS_BASE_ENV,
                "must not have a path or query",
            ));
        }
        Ok(Self {
            base: trimmed.to_string(),
        })
    }

    /// `$AZURE_POD_IDENTITY_AUTHORITY_HOST` if set and non-empty, else [`DEFAULT_IMDS_BASE`].
    pub fn from_env() -> Result<Self, RequestError> {
        match std::env::var(IMDS_BASE_ENV) {
            Ok(value) if !value.trim().is_empty() => Self::parse(value.trim()),
            _ => Self::parse(DEFAULT_IMDS_BASE),
        }
    }

    /// The base URL as given (no trailing `/`).
    pub fn as_str(&self) -> &str {
        &self.base
    }

    pub(crate) fn uri(
        &self,
        what: &'static str,
        path_and_query: &str,
    ) -> Result<Uri, RequestError> {
        parse_uri(what, "IMDS URL", &format!("{}{path_and_query}", self.base))
    }
}

/// How a request names a user-assigned managed identity. No selector means the system-assigned one.
/// Also the validated config's type (`managed_identity` with `client_id`, `resource_id` or
/// `object_id`), which lowercases the GUIDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UamiSelector {
    /// The identity's client (application) id.
    ClientId(String),
    /// The ARM resource id (`/subscriptions/…/userAssignedIdentities/…`).
    ResourceId(String),
    /// The identity's object (principal) id.
    ObjectId(String),
}

impl UamiSelector {
    /// The query key and value; `resource_id_key` is the key used for [`UamiSelector::ResourceId`]
    /// (it differs between IMDS v1, IMDSv2 and App Service).
    pub fn query_pair<'a>(&'a self, resource_id_key: &'a str) -> (&'a str, &'a str) {
        match self {
            UamiSelector::ClientId(v) => ("client_id", v),
            UamiSelector::ResourceId(v) => (resource_id_key, v),
            UamiSelector::ObjectId(v) => ("object_id", v),
        }
    }

    fn value(&self) -> &str {
        match self {
            UamiSelector::ClientId(v) | UamiSelector::ResourceId(v) | UamiSelector::ObjectId(v) => {
                v
            }
        }
    }
}

/// `k1=v1&k2=v2`, values percent-encoded (keys are fixed ASCII names).
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(key);
        out.push('=');
        out.extend(utf8_percent_encode(value, QUERY_VALUE));
    }
    out
}

/// Adds the UAMI selector (if any) to `pairs`, checking it is not empty.
pub(crate) fn push_uami<'a>(
    what: &'static str,
    pairs: &mut Vec<(&'a str, &'a str)>,
    uami: Option<&'a UamiSelector>,
    resource_id_key: &'a str,
) -> Result<(), RequestError> {
    if let Some(selector) = uami {
        require(what, "user-assigned identity id", selector.value())?;
        require(what, "resource id query key", resource_id_key)?;
        pairs.push(selector.query_pair(resource_id_key));
    }
    Ok(())
}

/// An IMDS request: `Metadata: true` and `x-ms-client-request-id`, optional JSON body.
pub(crate) fn imds_request(
    what: &'static str,
    method: Method,
    uri: Uri,
    json_body: Option<Vec<u8>>,
) -> Result<CredentialRequest, RequestError> {
    let id = Uuid::new_v4();
    let content_type = json_body.as_ref().map(|_| "application/json");
    Assemble {
        method,
        uri,
        headers: vec![
            (METADATA, HeaderValue::from_static("true")),
            (X_MS_CLIENT_REQUEST_ID, id_header(id)),
        ],
        accept_json: false,
        content_type,
        body: json_body.map(bytes::Bytes::from).unwrap_or_default(),
    }
    .finish(what, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            ImdsBase::parse("http://127.0.0.1:8080/").unwrap().as_str(),
            "http://127.0.0.1:8080"
        );
        assert!(ImdsBase::parse("http://h/metadata").is_err());
        assert!(ImdsBase::parse("169.254.169.254").is_err());
        assert!(ImdsBase::parse("").is_err());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        let rid = UamiSelector::ResourceId("/subscriptions/s/rg/x y".into());
        let mut pairs = vec![("resource", "https://management.azure.com/")];
        push_uami("w", &mut pairs, Some(&rid), V1_RESOURCE_ID_KEY).unwrap();
        assert_eq!(
            query(&pairs),
            "resource=https%3A%2F%2Fmanagement.azure.com%2F&msi_res_id=%2Fsubscriptions%2Fs%2Frg%2Fx%20y"
        );
        let empty = UamiSelector::ClientId(String::new());
        let err = push_uami("w", &mut pairs, Some(&empty), "k")
            .unwrap_err()
            .to_string();
        assert!(err.contains("user-assigned identity id is empty"), "{err}");
    }
}
