//! The decision: given the addressed host, the tenant, the form and the TLS client certificate,
//! who gets which token — or the ESTS refusal. One function per credential kind:
//! certificate in TLS (certificate app PoP, managed identity leg), private_key_jwt (certificate
//! app Bearer), FIC leg 2 (`jwt-pop` on mtlsauth, `jwt-bearer` on login).

use super::assertion::{self, Expected, Jws, ReplayCache, TrustedSubject};
use super::errors::EstsError;
use super::form::TokenForm;
use super::host::AddressedHost;
use crate::cert_check::CertSummary;
use crate::directory::{App, Directory, is_guid};
use crate::imds::backend::ManagedIdentity;
use crate::pki::Pki;
use crate::signing::{SigningKeys, VerifyError};
use crate::tokens::{TOKEN_EXCHANGE_AUDIENCE, TokenSubject};

/// `client_assertion_type` of private_key_jwt and of a Bearer FIC leg 1.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// `client_assertion_type` of a PoP FIC leg 1 presented over mTLS.
pub const JWT_POP: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-pop";
/// The only `token_type` a client may ask for.
pub const MTLS_POP: &str = "mtls_pop";

/// The kind of token granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    Bearer,
    MtlsPop,
}

/// What to issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub subject: TokenSubject,
    pub audience: String,
    /// `x5t#S256` of the certificate a PoP token is bound to.
    pub cnf: Option<String>,
    pub kind: TokenKind,
}

/// What the decision reads.
pub struct Context<'a> {
    pub directory: &'a Directory,
    pub pki: &'a Pki,
    pub keys: &'a SigningKeys,
    pub replay: &'a ReplayCache,
    pub now: u64,
}

/// One token request.
pub struct Request<'a> {
    pub tenant: &'a str,
    pub host: &'a AddressedHost,
    pub form: &'a TokenForm,
    /// DER of the leaf certificate presented in TLS.
    pub peer_cert: Option<&'a [u8]>,
}

/// The client a `client_id` names.
enum Client {
    App(App),
    Managed(ManagedIdentity),
}

/// Decides a token request.
pub fn decide(ctx: &Context<'_>, req: &Request<'_>) -> Result<Grant, EstsError> {
    let tenant = check_tenant(ctx, req)?;
    let form = req.form;
    let grant_type = form.require("grant_type")?;
    if grant_type != "client_credentials" {
        return Err(EstsError::unsupported_grant_type(grant_type));
    }
    let client_id = form.require("client_id")?.to_ascii_lowercase();
    let audience = check_scope(ctx, form.require("scope")?, &tenant)?;
    let wants_pop = match form.get("token_type") {
        None => false,
        Some(MTLS_POP) if req.host.is_mtls() => true,
        Some(MTLS_POP) => {
            return Err(EstsError::bad_request(format!(
                "token_type=mtls_pop is only issued by mtlsauth hosts; '{}' issues Bearer tokens.",
                req.host.name
            )));
        }
        Some(other) => {
            return Err(EstsError::bad_request(format!(
                "The token_type '{other}' is not supported; the only token_type is 'mtls_pop'."
            )));
        }
    };
    let client = find_client(ctx, &client_id, &tenant)?;
    let assertion = form.get("client_assertion");
    let assertion_type = form.get("client_assertion_type");
    let (subject, cnf) = match (assertion, client) {
        (None, _) if assertion_type.is_some() => {
            return Err(EstsError::missing_parameter("client_assertion"));
        }
        (Some(_), _) if assertion_type.is_none() => {
            return Err(EstsError::missing_parameter("client_assertion_type"));
        }
        (Some(_), Client::Managed(_)) => {
            return Err(EstsError::invalid_client(
                700027,
                format!(
                    "'{client_id}' is a managed identity; managed identities authenticate with their IMDS-issued certificate, never with a client assertion."
                ),
            ));
        }
        (None, client) => {
            let cnf = tls_certificate_credential(ctx, req, &client, wants_pop)?;
            (subject_of(&client, &tenant), Some(cnf))
        }
        (Some(assertion), Client::App(app)) => {
            let assertion_type = assertion_type.unwrap_or_default();
            // Tests grep popgate's logs for every assertion it sent (off unless recording).
            ctx.keys.note_secret(assertion);
            let jws = Jws::parse(assertion)?;
            // The app's own assertion names its certificate or itself; anything else is
            // taken as a FIC leg-1 token (which then must verify as one of ours).
            let own_assertion = jws.header.contains_key("x5t#S256")
                || jws.header.contains_key("x5c")
                || jws.claim_str("iss") == Some(app.client_id.as_str());
            if own_assertion {
                private_key_jwt(ctx, req, &app, &jws, assertion_type, &tenant)?;
                (subject_of(&Client::App(app), &tenant), None)
            } else {
                let cnf = fic_leg2(ctx, req, &app, assertion, assertion_type)?;
                (subject_of(&Client::App(app), &tenant), cnf)
            }
        }
    };
    // A PoP token only when asked for; a FIC leg 2 over mTLS without token_type is Bearer.
    let (kind, cnf) = if wants_pop {
        (TokenKind::MtlsPop, cnf)
    } else {
        (TokenKind::Bearer, None)
    };
    Ok(Grant {
        subject,
        audience,
        cnf,
        kind,
    })
}

fn check_tenant(ctx: &Context<'_>, req: &Request<'_>) -> Result<String, EstsError> {
    let tenant = req.tenant.to_ascii_lowercase();
    if matches!(tenant.as_str(), "common" | "organizations" | "consumers") {
        let why = if req.host.is_mtls() {
            "mTLS PoP needs a real tenant id"
        } else {
            "the client credentials flow needs a real tenant id"
        };
        return Err(EstsError::invalid_request(
            50059,
            format!(
                "No tenant-identifying information found in either the request or implied by any provided credentials: '/{tenant}' cannot be used here ({why})."
            ),
        ));
    }
    if !is_guid(&tenant) || !ctx.directory.tenant_known(&tenant) {
        return Err(EstsError::invalid_request(
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
            ),
        ));
    }
    Ok(tenant)
}

/// Exactly one scope, `{resource}/.default`, for a known resource; returns its audience.
fn check_scope(ctx: &Context<'_>, scope: &str, tenant: &str) -> Result<String, EstsError> {
    let scopes: Vec<&str> = scope.split(' ').filter(|s| !s.is_empty()).collect();
    let [single] = scopes.as_slice() else {
        return Err(EstsError::invalid_scope(&format!(
            "The client credentials flow takes exactly one scope, '{{resource}}/.default'; {} were sent.",
            scopes.len()
        )));
    };
    let Some(resource) = single.strip_suffix("/.default") else {
        return Err(EstsError::invalid_scope(&format!(
            "The scope '{single}' is not '{{resource}}/.default'."
        )));
    };
    ctx.directory
        .resource(resource)
        .map(|r| r.audience)
        .ok_or_else(|| EstsError::unknown_resource(resource, tenant))
}

fn find_client(ctx: &Context<'_>, client_id: &str, tenant: &str) -> Result<Client, EstsError> {
    if let Some(app) = ctx.directory.app(client_id)
        && app.tenant_id == tenant
    {
        return Ok(Client::App(app));
    }
    if let Some(mi) = ctx.directory.managed_identity(client_id)
        && mi.tenant_id.eq_ignore_ascii_case(tenant)
    {
        return Ok(Client::Managed(mi));
    }
    Err(EstsError::unknown_client(client_id, tenant))
}

fn subject_of(client: &Client, tenant: &str) -> TokenSubject {
    match client {
        Client::App(app) => TokenSubject {
            tenant_id: tenant.to_string(),
            object_id: app.object_id.clone(),
            client_id: app.client_id.clone(),
        },
        Client::Managed(mi) => TokenSubject {
            tenant_id: tenant.to_string(),
            object_id: mi.object_id.clone(),
            client_id: mi.client_id.clone(),
        },
    }
}

/// No assertion: the credential is the TLS certificate, which only mtlsauth hosts read, and only
/// for a PoP request. Returns the certificate's `x5t#S256`.
fn tls_certificate_credential(
    ctx: &Context<'_>,
    req: &Request<'_>,
    client: &Client,
    wants_pop: bool,
) -> Result<String, EstsError> {
    if !req.host.is_mtls() {
        return Err(EstsError::missing_credential(&format!(
            " '{}' does not read TLS client certificates; certificate credentials go to the mtlsauth host.",
            req.host.name
        )));
    }
    let Some(cert) = req.peer_cert else {
        return Err(EstsError::missing_credential(
            " No client certificate was presented in the TLS handshake to the mtlsauth host.",
        ));
    };
    if !wants_pop {
        return Err(EstsError::bad_request(
            "A certificate credential on the mtlsauth host requests an mTLS PoP token: token_type=mtls_pop is required.",
        ));
    }
    let x5t = crate::thumbprint::x5t_s256(cert);
    let summary = CertSummary::parse(cert).ok_or_else(|| {
        EstsError::invalid_client(700027, "The presented client certificate cannot be parsed.")
    })?;
    let now = i64::try_from(ctx.now).unwrap_or(i64::MAX);
    match client {
        Client::App(app) => {
            // A subject-name + issuer app trusts its CN from the root CA instead of thumbprints.
            let trusted_by_subject = app.trusted_subject.as_deref().is_some_and(|cn| {
                summary.common_name.as_deref() == Some(cn) && ctx.pki.issued_by_root_ca(cert)
            });
            if !trusted_by_subject && !app.certificates.iter().any(|c| c.x5t_s256 == x5t) {
                return Err(EstsError::invalid_client(
                    700027,
                    format!(
                        "The certificate presented in TLS is not registered on application '{}'. [Thumbprint of the presented certificate: '{x5t}']",
                        app.client_id
                    ),
                ));
            }
            if !summary.valid_at(now) {
                return Err(EstsError::invalid_client(
                    700027,
                    format!(
                        "The certificate presented in TLS for application '{}' is expired or not yet valid.",
                        app.client_id
                    ),
                ));
            }
        }
        Client::Managed(mi) => {
            if !ctx.pki.issued_by_imds_ca(cert) {
                return Err(EstsError::invalid_client(
                    700027,
                    format!(
                        "The certificate presented in TLS for managed identity '{}' was not issued by IMDS.",
                        mi.client_id
                    ),
                ));
            }
            if !summary.valid_at(now) {
                return Err(EstsError::invalid_client(
                    700027,
                    format!(
                        "The IMDS certificate presented for managed identity '{}' is expired or not yet valid.",
                        mi.client_id
                    ),
                ));
            }
            let cn_ok = summary
                .common_name
                .as_deref()
                .is_some_and(|cn| cn.eq_ignore_ascii_case(&mi.client_id));
            let dc_ok = summary
                .domain_component
                .as_deref()
                .is_some_and(|dc| dc.eq_ignore_ascii_case(&mi.tenant_id));
            if !cn_ok || !dc_ok {
                return Err(EstsError::invalid_client(
                    700027,
                    format!(
                        "The IMDS certificate presented was issued to CN={}, DC={}, not to managed identity '{}' in tenant '{}'.",
                        summary.common_name.as_deref().unwrap_or("(none)"),
                        summary.domain_component.as_deref().unwrap_or("(none)"),
                        mi.client_id,
                        mi.tenant_id
                    ),
                ));
            }
        }
    }
    Ok(x5t)
}

/// A certificate app's own signed assertion: Bearer at `login.*` only.
fn private_key_jwt(
    ctx: &Context<'_>,
    req: &Request<'_>,
    app: &App,
    jws: &Jws<'_>,
    assertion_type: &str,
    tenant: &str,
) -> Result<(), EstsError> {
    if req.host.is_mtls() {
        return Err(EstsError::bad_request(
            "A certificate app authenticates to the mtlsauth host with its TLS certificate alone: the request must not carry a client_assertion.",
        ));
    }
    if assertion_type != JWT_BEARER {
        return Err(EstsError::bad_request(format!(
            "client_assertion_type must be '{JWT_BEARER}' for a private_key_jwt assertion; got '{assertion_type}'."
        )));
    }
    let audience = format!("https://{}/{tenant}/oauth2/v2.0/token", req.host.name);
    if let Some(common_name) = &app.trusted_subject {
        let issued_by_trusted_ca = |der: &[u8]| ctx.pki.issued_by_root_ca(der);
        return assertion::verify_subject_name_jwt(
            jws,
            &Expected {
                client_id: &app.client_id,
                audience: &audience,
                registered: &app.certificates,
                now: ctx.now,
            },
            &TrustedSubject {
                common_name,
                issued_by_trusted_ca: &issued_by_trusted_ca,
            },
            ctx.replay,
        );
    }
    if app.certificates.is_empty() {
        return Err(EstsError::invalid_client(
            700027,
            format!(
                "Application '{}' has no registered certificate to verify the client assertion with.",
                app.client_id
            ),
        ));
    }
    assertion::verify_private_key_jwt(
        jws,
        &Expected {
            client_id: &app.client_id,
            audience: &audience,
            registered: &app.certificates,
            now: ctx.now,
        },
        ctx.replay,
    )
}

/// FIC leg 2: the assertion is a token this authority issued for `api://AzureADTokenExchange`.
/// Over mTLS (`jwt-pop`) it must be bound to the presented certificate; at `login.*`
/// (`jwt-bearer`) it must be a Bearer token. Returns the certificate a PoP leg 2 binds to.
fn fic_leg2(
    ctx: &Context<'_>,
    req: &Request<'_>,
    app: &App,
    assertion: &str,
    assertion_type: &str,
) -> Result<Option<String>, EstsError> {
    let expected_type = if req.host.is_mtls() {
        JWT_POP
    } else {
        JWT_BEARER
    };
    if assertion_type != expected_type {
        return Err(EstsError::bad_request(format!(
            "A federated (leg 1) assertion sent to '{}' needs client_assertion_type '{expected_type}'; got '{assertion_type}'.",
            req.host.name
        )));
    }
    let claims = ctx
        .keys
        .verify(assertion, TOKEN_EXCHANGE_AUDIENCE)
        .map_err(|e| match e {
            VerifyError::Expired | VerifyError::NotYetValid => EstsError::invalid_client(
                700024,
                format!("Client assertion is not within its valid time range: {e}."),
            ),
            VerifyError::WrongAudience { .. } => EstsError::invalid_client(
                700212,
                format!(
                    "No matching federated identity record found for presented assertion audience: the assertion's audience must be '{TOKEN_EXCHANGE_AUDIENCE}'."
                ),
            ),
            VerifyError::Invalid(_) => EstsError::invalid_client(
                700027,
                "Client assertion failed signature validation: it is not a token issued by this authority.",
            ),
        })?;
    if !app.federated.iter().any(|f| f.issuer == claims.iss) {
        return Err(EstsError::invalid_client(
            700211,
            format!(
                "No matching federated identity record found for presented assertion issuer '{}'.",
                claims.iss
            ),
        ));
    }
    if !app
        .federated
        .iter()
        .any(|f| f.issuer == claims.iss && f.subject == claims.sub)
    {
        return Err(EstsError::invalid_client(
            70021,
            format!(
                "No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'.",
                claims.iss, claims.sub
            ),
        ));
    }
    let bound_to = claims.cnf.as_ref().map(|c| c.x5t_s256.as_str());
    if !req.host.is_mtls() {
        if bound_to.is_some() {
            return Err(EstsError::certificate_mismatch(
                "The assertion is an mTLS PoP token; it can only be presented with its certificate, to an mtlsauth host, as jwt-pop.",
            ));
        }
        return Ok(None);
    }
    let Some(cert) = req.peer_cert else {
        return Err(EstsError::certificate_mismatch(
            "No client certificate was presented in TLS; a jwt-pop assertion must be sent over TLS presenting the certificate it is bound to.",
        ));
    };
    let presented = crate::thumbprint::x5t_s256(cert);
    match bound_to {
        Some(bound) if bound == presented => Ok(Some(presented)),
        Some(_) => Err(EstsError::certificate_mismatch(
            "The assertion is bound to a different certificate.",
        )),
        None => Err(EstsError::certificate_mismatch(
            "The assertion is a Bearer token (no cnf claim); jwt-pop needs an mTLS PoP leg-1 token.",
        )),
    }
}
