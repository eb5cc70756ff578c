//! The request type every builder in this module returns: an `http::Request` with its body, plus
//! the request id sent with it. Its `Debug` never prints the body or header values, because bodies
//! carry client assertions and leg-1 tokens and headers carry the App Service identity secret.

use std::fmt;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use uuid::Uuid;

/// `client-request-id`: ESTS logs it and echoes it when `return-client-request-id: true`.
pub const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("client-request-id");
/// `return-client-request-id`.
pub const RETURN_CLIENT_REQUEST_ID: HeaderName =
    HeaderName::from_static("return-client-request-id");
/// `x-ms-lib-capability`: tells ESTS this client honours `Retry-After` and HTTP 429.
pub const X_MS_LIB_CAPABILITY: HeaderName = HeaderName::from_static("x-ms-lib-capability");
/// `x-client-SKU` (header names are case-insensitive; HTTP/1 sends them lowercase).
pub const X_CLIENT_SKU: HeaderName = HeaderName::from_static("x-client-sku");
/// `x-client-Ver`.
pub const X_CLIENT_VER: HeaderName = HeaderName::from_static("x-client-ver");
/// IMDS's request id header.
pub const X_MS_CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");
/// IMDS refuses requests without `Metadata: true` (SSRF protection).
pub const METADATA: HeaderName = HeaderName::from_static("metadata");

/// The value popgate sends as `x-client-SKU`.
pub const CLIENT_SKU: &str = "popgate";
/// The value popgate sends as `x-client-Ver`.
pub const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A fully built credential request and the id it carries.
pub struct CredentialRequest {
    request: Request<Bytes>,
    client_request_id: Uuid,
    /// `https` only: the server certificate is accepted when its SHA-1 thumbprint (uppercase
    /// hex) is this, and only then (Service Fabric's `IDENTITY_SERVER_THUMBPRINT`).
    server_sha1: Option<String>,
}

/// A request that could not be built from its inputs.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// An input is empty or malformed; `input` names it.
    #[error("cannot build the {what}: {input} {problem}")]
    BadInput {
        /// The request being built.
        what: &'static str,
        /// The input at fault.
        input: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl RequestError {
    pub(crate) fn bad(what: &'static str, input: &'static str, problem: impl Into<String>) -> Self {
        RequestError::BadInput {
            what,
            input,
            problem: problem.into(),
        }
    }
}

impl CredentialRequest {
    /// The request to send.
    pub fn request(&self) -> &Request<Bytes> {
        &self.request
    }

    /// The id in `client-request-id` / `x-ms-client-request-id`, for logs.
    pub fn client_request_id(&self) -> Uuid {
        self.client_request_id
    }

    /// The same request again (same id, headers and body) for a retry. `http::Request` is not
    /// `Clone` because of its extensions; builders here set none.
    pub fn duplicate(&self) -> Self {
        let mut request = Request::new(self.request.body().clone());
        *request.method_mut() = self.request.method().clone();
        *request.uri_mut() = self.request.uri().clone();
        *request.version_mut() = self.request.version();
        *request.headers_mut() = self.request.headers().clone();
        Self {
            request,
            client_request_id: self.client_request_id,
            server_sha1: self.server_sha1.clone(),
        }
    }

    /// Accept only the server certificate with this SHA-1 thumbprint (hex, any case).
    pub(crate) fn pin_server_sha1(mut self, thumbprint: &str) -> Self {
        self.server_sha1 = Some(thumbprint.to_ascii_uppercase());
        self
    }

    /// The pinned server certificate thumbprint, if any (uppercase hex SHA-1).
    pub fn server_sha1(&self) -> Option<&str> {
        self.server_sha1.as_deref()
    }

    /// Splits into the request (to hand to the HTTP client) and its id.
    pub fn into_parts(self) -> (Request<Bytes>, Uuid) {
        (self.request, self.client_request_id)
    }
}

impl fmt::Debug for CredentialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self
            .request
            .headers()
            .keys()
            .map(HeaderName::as_str)
            .collect();
        f.debug_struct("CredentialRequest")
            .field("method", self.request.method())
            .field("uri", self.request.uri())
            .field("headers", &header_names)
            .field(
                "body",
                &format_args!("<redacted, {} bytes>", self.request.body().len()),
            )
            .field("client_request_id", &self.client_request_id)
            .finish()
    }
}

/// Assembles requests; the only place that calls `Request::builder`.
pub(crate) struct Assemble {
    pub method: Method,
    pub uri: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Send `Accept: application/json` (ESTS requests do; IMDS requests, like MSAL's, do not).
    pub accept_json: bool,
    pub content_type: Option<&'static str>,
    pub body: Bytes,
}

impl Assemble {
    pub(crate) fn finish(
        self,
        what: &'static str,
        client_request_id: Uuid,
    ) -> Result<CredentialRequest, RequestError> {
        let mut builder = Request::builder().method(self.method).uri(self.uri);
        if self.accept_json {
            builder = builder.header(ACCEPT, HeaderValue::from_static("application/json"));
        }
        if let Some(ct) = self.content_type {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(self.body)
            .map_err(|e| RequestError::bad(what, "request", e.to_string()))?;
        Ok(CredentialRequest {
            request,
            client_request_id,
            server_sha1: None,
        })
    }
}

/// The request id as a header value (a UUID is always a valid header value).
pub(crate) fn id_header(id: Uuid) -> HeaderValue {
    let mut buf = Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
        .unwrap_or_else(|_| HeaderValue::from_static("00000000-0000-0000-0000-000000000000"))
}

/// Parses an absolute `http`/`https` URI built by this module.
pub(crate) fn parse_uri(
    what: &'static str,
    input: &'static str,
    text: &str,
) -> Result<Uri, RequestError> {
    let uri: Uri = text.parse().map_err(|e: http::uri::InvalidUri| {
        RequestError::bad(what, input, format!("is not a valid URL ({e})"))
    })?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(uri),
        _ => Err(RequestError::bad(
            what,
            input,
            "must be an absolute http:// or https:// URL",
        )),
    }
}

/// Checks that an input used as a form/query value is present.
pub(crate) fn require(
    what: &'static str,
    input: &'static str,
    value: &str,
) -> Result<(), RequestError> {
    if value.trim().is_empty() {
        return Err(RequestError::bad(what, input, "is empty"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_neither_body_nor_header_values() {
        let req = Assemble {
            method: Method::POST,
            uri: "https://example.test/t".parse().unwrap(),
            headers: vec![(
                HeaderName::from_static("x-identity-header"),
                HeaderValue::from_static("s3cret-header"),
            )],
            accept_json: true,
            content_type: Some("application/x-www-form-urlencoded"),
            body: Bytes::from_static(b"client_assertion=s3cret-body"),
        }
        .finish("test request", Uuid::new_v4())
        .unwrap();
        let shown = format!("{req:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("x-identity-header"), "{shown}");
        assert!(shown.contains("28 bytes"), "{shown}");
    }

    #[test]
    fn a_duplicate_is_the_same_request() {
        let req = Assemble {
            method: Method::POST,
            uri: "https://example.test/t".parse().unwrap(),
            headers: vec![(CLIENT_REQUEST_ID, HeaderValue::from_static("id"))],
            accept_json: true,
            content_type: Some("application/x-www-form-urlencoded"),
            body: Bytes::from_static(b"a=b"),
        }
        .finish("test request", Uuid::new_v4())
        .unwrap();
        let again = req.duplicate();
        assert_eq!(again.client_request_id(), req.client_request_id());
        assert_eq!(again.request().method(), req.request().method());
        assert_eq!(again.request().uri(), req.request().uri());
        assert_eq!(again.request().headers(), req.request().headers());
        assert_eq!(again.request().body(), req.request().body());
    }

    #[test]
    fn only_absolute_http_urls_are_accepted() {
        assert!(parse_uri("w", "url", "https://h/x").is_ok());
        assert!(parse_uri("w", "url", "ftp://h/x").is_err());
        assert!(parse_uri("w", "url", "/relative").is_err());
        assert!(parse_uri("w", "url", "not a url").is_err());
    }
}
