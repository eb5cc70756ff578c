//! Token endpoint requests (protocol.md §1, §3 step 5, §5): exact form bodies and headers.
//!
//! The token host is an input: the §1 host rules live in `authority_host`. These builders only
//! assemble `POST https://{host}/{tenant}/oauth2/v2.0/token` with the right form fields.
//!
//! Bodies that carry a client assertion or a leg-1 token are secrets. They live in `Bytes` because
//! that is what the HTTP client sends; [`CredentialRequest`]'s `Debug` never prints them.

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use uuid::Uuid;

use crate::identity::client_assertion::ClientAssertion;
use crate::identity::outbound_request::{
    Assemble, CLIENT_REQUEST_ID, CLIENT_SKU, CLIENT_VERSION, CredentialRequest,
    RETURN_CLIENT_REQUEST_ID, RequestError, X_CLIENT_SKU, X_CLIENT_VER, X_MS_LIB_CAPABILITY,
    id_header, parse_uri, require,
};
use crate::identity::token::{AccessToken, TokenType};

/// `grant_type` for every app-only token request.
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// `client_assertion_type` for a signed JWT (private_key_jwt, workload identity, Bearer leg 1).
pub const ASSERTION_TYPE_JWT_BEARER: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `client_assertion_type` for an mTLS PoP leg-1 token used as the assertion in FIC leg 2.
pub const ASSERTION_TYPE_JWT_POP: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-pop";
/// The resource of every FIC leg 1 (its scope is this plus `/.default`).
pub const FIC_LEG1_RESOURCE: &str = "api://AzureADTokenExchange";
/// The scope suffix that asks for an app's static permissions.
pub const DEFAULT_SCOPE_SUFFIX: &str = "/.default";

const FORM: &str = "application/x-www-form-urlencoded";

/// `https://{host}/{tenant}/oauth2/v2.0/token`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEndpoint {
    uri: Uri,
}

impl TokenEndpoint {
    /// The endpoint on `host` (`host` or `host:port`, as computed by the §1 host rules).
    pub fn new(host: &str, tenant: &str) -> Result<Self, RequestError> {
        const WHAT: &str = "token endpoint URL";
        require(WHAT, "host", host)?;
        if host.contains(['/', '?', '#', '@']) || host.chars().any(|c| c.is_whitespace()) {
            return Err(RequestError::bad(
                WHAT,
                "host",
                "must be a bare host name, optionally with :port",
            ));
        }
        Self::from_base_url(&format!("https://{host}"), tenant)
    }

    /// The endpoint under a base URL, as IMDSv2's `mtls_authentication_endpoint` gives it
    /// (`{base}/{tenant}/oauth2/v2.0/token`; one trailing `/` on the base is ignored).
    pub fn from_base_url(base: &str, tenant: &str) -> Result<Self, RequestError> {
        const WHAT: &str = "token endpoint URL";
        check_tenant(tenant)?;
        let base = base.strip_suffix('/').unwrap_or(base);
        let base_uri = parse_uri(WHAT, "base URL", base)?;
        if base_uri.query().is_some() {
            return Err(RequestError::bad(WHAT, "base URL", "must not have a query"));
        }
        let uri = parse_uri(
            WHAT,
            "base URL",
            &format!("{base}/{tenant}/oauth2/v2.0/token"),
        )?;
        Ok(Self { uri })
    }

    /// The endpoint URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The endpoint as a string: the `aud` of a client assertion.
    pub fn url(&self) -> String {
        self.uri.to_string()
    }
}

/// A tenant id or domain: letters, digits, `-`, `.`, `_` (it becomes a URL path segment).
fn check_tenant(tenant: &str) -> Result<(), RequestError> {
    const WHAT: &str = "token endpoint URL";
    require(WHAT, "tenant", tenant)?;
    if !tenant
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(RequestError::bad(
            WHAT,
            "tenant",
            "may contain only letters, digits, '-', '.' and '_'",
        ));
    }
    Ok(())
}

/// `{resource}/.default`, after removing one trailing `/.default` from `resource`. A trailing `/`
/// is kept on purpose: `https://database.windows.net//.default` is what ESTS expects for such
/// resources.
pub fn scope_for_resource(resource: &str) -> Result<String, RequestError> {
    let base = resource
        .strip_suffix(DEFAULT_SCOPE_SUFFIX)
        .unwrap_or(resource);
    require("token request", "resource", base)?;
    Ok(format!("{base}{DEFAULT_SCOPE_SUFFIX}"))
}

/// §1: a certificate app's mTLS PoP request. The certificate is presented only in the TLS
/// handshake, so the body carries no client assertion.
pub fn cert_app_mtls_pop(
    endpoint: &TokenEndpoint,
    client_id: &str,
    resource: &str,
) -> Result<CredentialRequest, RequestError> {
    const WHAT: &str = "certificate-app mTLS PoP token request";
    require(WHAT, "client_id", client_id)?;
    let scope = scope_for_resource(resource)?;
    form_post(
        WHAT,
        endpoint,
        &[
            ("client_id", client_id),
            ("grant_type", GRANT_CLIENT_CREDENTIALS),
            ("scope", &scope),
            ("client_info", "2"),
            ("token_type", TokenType::MtlsPop.as_str()),
        ],
    )
}

/// A certificate app's Bearer request with a private_key_jwt assertion (to the ordinary `login.*`
/// host).
pub fn cert_app_bearer(
    endpoint: &TokenEndpoint,
    client_id: &str,
    resource: &str,
    assertion: &ClientAssertion,
) -> Result<CredentialRequest, RequestError> {
    jwt_bearer(
        "certificate-app Bearer token request",
        endpoint,
        client_id,
        resource,
        assertion.expose_secret(),
    )
}

/// A client-credentials request authenticated by a JWT assertion (`…:jwt-bearer`).
pub(crate) fn jwt_bearer(
    what: &'static str,
    endpoint: &TokenEndpoint,
    client_id: &str,
    resource: &str,
    assertion: &str,
) -> Result<CredentialRequest, RequestError> {
    require(what, "client_id", client_id)?;
    require(what, "client_assertion", assertion)?;
    let scope = scope_for_resource(resource)?;
    form_post(
        what,
        endpoint,
        &[
            ("client_id", client_id),
            ("grant_type", GRANT_CLIENT_CREDENTIALS),
            ("scope", &scope),
            ("client_info", "2"),
            ("client_assertion_type", ASSERTION_TYPE_JWT_BEARER),
            ("client_assertion", assertion),
        ],
    )
}

/// §3 step 5: the IMDSv2 identity's token request to `{mtls_authentication_endpoint}/{tenant}/…`,
/// sent over mTLS with the issued certificate. `client_id` is the one `issuecredential` returned.
pub fn imds_v2_token(
    endpoint: &TokenEndpoint,
    client_id: &str,
    resource: &str,
) -> Result<CredentialRequest, RequestError> {
    const WHAT: &str = "IMDSv2 mTLS PoP token request";
    require(WHAT, "client_id", client_id)?;
    let scope = scope_for_resource(resource)?;
    form_post(
        WHAT,
        endpoint,
        &[
            ("grant_type", GRANT_CLIENT_CREDENTIALS),
            ("client_id", client_id),
            ("scope", &scope),
            ("token_type", TokenType::MtlsPop.as_str()),
        ],
    )
}

/// How the leg-1 token of a FIC exchange was obtained, which fixes the assertion type of leg 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leg1Kind {
    /// An mTLS PoP leg-1 token (§5): `…:jwt-pop`, sent to the mTLS host presenting the leg-1 cert.
    MtlsPop,
    /// A Bearer leg-1 token (the IMDS v1 extension): `…:jwt-bearer` to `login.*`; leg 2 is Bearer.
    Bearer,
}

/// §5: FIC leg 2. `final_type` is the token type wanted from leg 2: `token_type=mtls_pop` is sent
/// only for PoP; a Bearer leg 1 can only give a Bearer leg 2.
pub fn fic_leg2(
    endpoint: &TokenEndpoint,
    client_id: &str,
    target_resource: &str,
    leg1_token: &AccessToken,
    leg1: Leg1Kind,
    final_type: TokenType,
) -> Result<CredentialRequest, RequestError> {
    const WHAT: &str = "FIC leg 2 token request";
    require(WHAT, "client_id", client_id)?;
    require(WHAT, "leg-1 token", leg1_token.expose_secret())?;
    let assertion_type = match (leg1, final_type) {
        (Leg1Kind::MtlsPop, _) => ASSERTION_TYPE_JWT_POP,
        (Leg1Kind::Bearer, TokenType::Bearer) => ASSERTION_TYPE_JWT_BEARER,
        (Leg1Kind::Bearer, TokenType::MtlsPop) => {
            return Err(RequestError::bad(
                WHAT,
                "token type",
                "mtls_pop needs an mTLS PoP leg 1 (a Bearer leg 1 has no certificate to bind to)",
            ));
        }
    };
    let scope = scope_for_resource(target_resource)?;
    let mut fields = vec![
        ("client_id", client_id),
        ("grant_type", GRANT_CLIENT_CREDENTIALS),
        ("scope", scope.as_str()),
        ("client_info", "2"),
        ("client_assertion", leg1_token.expose_secret()),
        ("client_assertion_type", assertion_type),
    ];
    if final_type == TokenType::MtlsPop {
        fields.push(("token_type", TokenType::MtlsPop.as_str()));
    }
    form_post(WHAT, endpoint, &fields)
}

/// `POST` of a urlencoded form with the headers MSAL sends to ESTS.
fn form_post(
    what: &'static str,
    endpoint: &TokenEndpoint,
    fields: &[(&str, &str)],
) -> Result<CredentialRequest, RequestError> {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let id = Uuid::new_v4();
    Assemble {
        method: Method::POST,
        uri: endpoint.uri.clone(),
        headers: vec![
            (CLIENT_REQUEST_ID, id_header(id)),
            (RETURN_CLIENT_REQUEST_ID, HeaderValue::from_static("true")),
            (
                X_MS_LIB_CAPABILITY,
                HeaderValue::from_static("retry-after, h429"),
            ),
            (X_CLIENT_SKU, HeaderValue::from_static(CLIENT_SKU)),
            (X_CLIENT_VER, HeaderValue::from_static(CLIENT_VERSION)),
        ],
        accept_json: true,
        content_type: Some(FORM),
        body: Bytes::from(body),
    }
    .finish(what, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(req: &CredentialRequest) -> Vec<(String, String)> {
        form_urlencoded::parse(req.request().body())
            .into_owned()
            .collect()
    }

    fn endpoint() -> TokenEndpoint {
        TokenEndpoint::new(
            "westus3.mtlsauth.microsoft.com",
            "751a212b-4003-416e-b600-e1f48e40db9f",
        )
        .unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn cert_app_pop_has_exactly_the_section_1_fields_and_headers() {
        let req = cert_app_mtls_pop(&endpoint(), "app-id", "https://vault.azure.net").unwrap();
        let r = req.request();
        assert_eq!(r.method(), Method::POST);
        assert_eq!(
            r.uri().to_string(),
            "https://westus3.mtlsauth.microsoft.com/751a212b-4003-416e-b600-e1f48e40db9f/oauth2/v2.0/token"
        );
        assert_eq!(
            form(&req),
            pairs(&[
                ("client_id", "app-id"),
                ("grant_type", "client_credentials"),
                ("scope", "https://vault.azure.net/.default"),
                ("client_info", "2"),
                ("token_type", "mtls_pop"),
            ])
        );
        let h = r.headers();
        assert_eq!(h["content-type"], "application/x-www-form-urlencoded");
        assert_eq!(h["accept"], "application/json");
        assert_eq!(
            h["client-request-id"],
            req.client_request_id().to_string().as_str()
        );
        assert_eq!(h["return-client-request-id"], "true");
        assert_eq!(h["x-ms-lib-capability"], "retry-after, h429");
        assert_eq!(h["x-client-sku"], CLIENT_SKU);
        assert_eq!(h["x-client-ver"], CLIENT_VERSION);
        assert_eq!(h.len(), 7, "{h:?}");
    }

    #[test]
    fn scope_strips_one_default_suffix_and_keeps_slashes() {
        assert_eq!(
            scope_for_resource("https://graph.microsoft.com").unwrap(),
            "https://graph.microsoft.com/.default"
        );
        assert_eq!(
            scope_for_resource("https://graph.microsoft.com/.default").unwrap(),
            "https://graph.microsoft.com/.default"
        );
        assert_eq!(
            scope_for_resource("https://database.windows.net/").unwrap(),
            "https://database.windows.net//.default"
        );
        assert_eq!(
            scope_for_resource("api://AzureADTokenExchange").unwrap(),
            "api://AzureADTokenExchange/.default"
        );
        assert!(scope_for_resource("/.default").is_err());
        assert!(scope_for_resource("").is_err());
    }

    #[test]
    fn endpoint_inputs_are_checked() {
        assert!(TokenEndpoint::new("h/evil", "t").is_err());
        assert!(TokenEndpoint::new("", "t").is_err());
        assert!(TokenEndpoint::new("h", "").is_err());
        assert!(TokenEndpoint::new("h", "t/../x").is_err());
        assert!(TokenEndpoint::new("h", "t?x").is_err());
        assert_eq!(
            TokenEndpoint::new("127.0.0.1:8443", "contoso.onmicrosoft.com")
                .unwrap()
                .url(),
            "https://127.0.0.1:8443/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            TokenEndpoint::from_base_url("http://fake_mtls_authentication_endpoint/", "t")
                .unwrap()
                .url(),
            "http://fake_mtls_authentication_endpoint/t/oauth2/v2.0/token"
        );
        assert!(TokenEndpoint::from_base_url("fake_mtls_authentication_endpoint", "t").is_err());
        assert!(TokenEndpoint::from_base_url("https://h/?q=1", "t").is_err());
    }

    #[test]
    fn imds_v2_token_leg_fields() {
        let ep =
            TokenEndpoint::from_base_url("https://westus3.mtlsauth.microsoft.com", "tid").unwrap();
        let req = imds_v2_token(
            &ep,
            "issued-client",
            "https://management.azure.com/.default",
        )
        .unwrap();
        assert_eq!(
            form(&req),
            pairs(&[
                ("grant_type", "client_credentials"),
                ("client_id", "issued-client"),
                ("scope", "https://management.azure.com/.default"),
                ("token_type", "mtls_pop"),
            ])
        );
    }

    #[test]
    fn fic_leg2_pop_and_bearer_variants() {
        let leg1 = AccessToken::new(TokenType::Bearer, "leg1.token.sig".into());
        let pop = fic_leg2(
            &endpoint(),
            "leg2-app",
            "https://target",
            &leg1,
            Leg1Kind::MtlsPop,
            TokenType::MtlsPop,
        )
        .unwrap();
        assert_eq!(
            form(&pop),
            pairs(&[
                ("client_id", "leg2-app"),
                ("grant_type", "client_credentials"),
                ("scope", "https://target/.default"),
                ("client_info", "2"),
                ("client_assertion", "leg1.token.sig"),
                ("client_assertion_type", ASSERTION_TYPE_JWT_POP),
                ("token_type", "mtls_pop"),
            ])
        );
        let bearer_final = fic_leg2(
            &endpoint(),
            "leg2-app",
            "https://target",
            &leg1,
            Leg1Kind::MtlsPop,
            TokenType::Bearer,
        )
        .unwrap();
        assert!(!form(&bearer_final).iter().any(|(k, _)| k == "token_type"));
        let from_bearer = fic_leg2(
            &endpoint(),
            "leg2-app",
            "https://target",
            &leg1,
            Leg1Kind::Bearer,
            TokenType::Bearer,
        )
        .unwrap();
        assert!(form(&from_bearer).contains(&(
            "client_assertion_type".into(),
            ASSERTION_TYPE_JWT_BEARER.into()
        )));
        let err = fic_leg2(
            &endpoint(),
            "leg2-app",
            "https://target",
            &leg1,
            Leg1Kind::Bearer,
            TokenType::MtlsPop,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("mtls_pop needs an mTLS PoP leg 1"),
            "{err}"
        );
        assert!(!format!("{pop:?}").contains("leg1.token"));
    }

    #[test]
    fn empty_inputs_are_named() {
        let err = cert_app_mtls_pop(&endpoint(), " ", "https://r")
            .unwrap_err()
            .to_string();
        assert!(err.contains("client_id is empty"), "{err}");
        let err = jwt_bearer("w", &endpoint(), "c", "https://r", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("client_assertion is empty"), "{err}");
    }
}
