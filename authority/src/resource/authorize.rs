//! The resource's access decision: `mtls_pop <jwt>` bound to the presented certificate, or
//! `Bearer <jwt>` where the audience allows it; everything else is `invalid_token`.

use http::HeaderValue;

use super::Audience;
use crate::claims::Claims;
use crate::signing::{SigningKeys, VerifyError};

/// The scheme a request was authorized with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    MtlsPop,
    Bearer,
}

impl Scheme {
    /// The scheme as the echo and observations name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::MtlsPop => "mtls_pop",
            Scheme::Bearer => "bearer",
        }
    }
}

/// An accepted request's token.
#[derive(Debug)]
pub struct Authorized {
    pub scheme: Scheme,
    pub claims: Claims,
}

/// Why a request was refused; the text never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

fn refuse(text: impl Into<String>) -> Refusal {
    Refusal(text.into())
}

fn describe(err: VerifyError) -> Refusal {
    match err {
        VerifyError::Expired => refuse("the token has expired"),
        VerifyError::NotYetValid => refuse("the token is not valid yet (nbf)"),
        VerifyError::WrongAudience { expected } => {
            refuse(format!("the token's audience is not {expected}"))
        }
        VerifyError::Invalid(why) => refuse(format!(
            "the token is not a JWT signed by this authority ({why})"
        )),
    }
}

/// Decides whether `authorization` grants access to `audience` over a TLS session whose client
/// certificate has thumbprint `presented_x5t`.
pub fn authorize(
    authorization: Option<&HeaderValue>,
    audience: &Audience,
    keys: &SigningKeys,
    presented_x5t: Option<&str>,
) -> Result<Authorized, Refusal> {
    let header = authorization.ok_or_else(|| refuse("no Authorization header"))?;
    let text = header
        .to_str()
        .map_err(|_| refuse("the Authorization header is not visible ASCII"))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or_else(|| refuse("the Authorization header is not '<scheme> <token>'"))?;
    if token.is_empty() || token.contains(' ') {
        return Err(refuse(
            "the Authorization header must carry exactly one token after the scheme",
        ));
    }
    if scheme.eq_ignore_ascii_case("mtls_pop") {
        if !audience.accepts_pop {
            return Err(refuse(format!(
                "{} does not accept mtls_pop tokens",
                audience.audience
            )));
        }
        let presented = presented_x5t.ok_or_else(|| {
            refuse("an mtls_pop token needs a TLS client certificate; none was presented")
        })?;
        let claims = keys.verify(token, &audience.audience).map_err(describe)?;
        let bound = claims
            .cnf
            .as_ref()
            .map(|c| c.x5t_s256.as_str())
            .ok_or_else(|| {
                refuse("the token has no cnf claim: it is not bound to a certificate")
            })?;
        if bound != presented {
            return Err(refuse(format!(
                "the token is bound to certificate x5t#S256={bound} but the TLS client certificate is x5t#S256={presented}"
            )));
        }
        Ok(Authorized {
            scheme: Scheme::MtlsPop,
            claims,
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        if !audience.accepts_bearer {
            return Err(refuse(format!(
                "{} requires mtls_pop; Bearer tokens are not accepted",
                audience.audience
            )));
        }
        let claims = keys.verify(token, &audience.audience).map_err(describe)?;
        if claims.cnf.is_some() {
            return Err(refuse(
                "the token is bound to a certificate (cnf); present it as mtls_pop, not Bearer",
            ));
        }
        Ok(Authorized {
            scheme: Scheme::Bearer,
            claims,
        })
    } else {
        Err(refuse(
            "unsupported authorization scheme (expected mtls_pop or Bearer)",
        ))
    }
}

/// `WWW-Authenticate` for a refusal: the audience's preferred scheme with `invalid_token`.
pub fn www_authenticate(audience: Option<&Audience>, refusal: &Refusal) -> HeaderValue {
    let scheme = if audience.is_some_and(|a| a.accepts_pop) {
        "mtls_pop"
    } else {
        "Bearer"
    };
    // Keep the quoted-string valid: no quotes, backslashes or non-ASCII inside it.
    let description: String = refusal
        .0
        .chars()
        .map(|c| match c {
            '"' | '\\' => '\'',
            c if c.is_ascii() && !c.is_ascii_control() => c,
            _ => '?',
        })
        .collect();
    let value = format!("{scheme} error=\"invalid_token\", error_description=\"{description}\"");
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
}
