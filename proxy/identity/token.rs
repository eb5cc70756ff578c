//! The token types every part of popgate shares: the secret itself, its type, its lifetime.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use zeroize::Zeroizing;

use crate::certs::binding::BindingCert;

/// An access token. The secret is zeroized on drop and never printed: `Debug` shows only its length.
#[derive(Clone)]
pub struct AccessToken(Zeroizing<String>);

impl AccessToken {
    /// Wraps a token received from a peer; it is zeroized when the last clone drops.
    pub fn new(secret: String) -> Self {
        Self(Zeroizing::new(secret))
    }

    /// The raw token. Call sites are the few places that must put it on the wire.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken(<redacted, {} bytes>)", self.0.len())
    }
}

/// The token types Entra ID issues that popgate can present.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TokenType {
    /// `Authorization: Bearer …`, not bound to a certificate.
    Bearer,
    /// `Authorization: mtls_pop …`, bound to the client certificate (RFC 8705 `cnf.x5t#S256`).
    MtlsPop,
}

impl TokenType {
    /// The `Authorization` scheme: `mtls_pop` is lowercase, as MSAL's `CreateAuthorizationHeader` emits.
    pub fn scheme(self) -> &'static str {
        match self {
            TokenType::Bearer => "Bearer",
            TokenType::MtlsPop => "mtls_pop",
        }
    }

    /// The value of the `token_type` form field and of the config key.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Bearer => "bearer",
            TokenType::MtlsPop => "mtls_pop",
        }
    }

    /// Matches a response's `token_type` case-insensitively (ESTS answers `Bearer` or `mtls_pop`).
    pub fn matches_response(self, token_type: &str) -> bool {
        token_type.eq_ignore_ascii_case(self.as_str())
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token as acquired: the secret, its type, when it expires and when to refresh it, and for PoP
/// tokens the certificate it is bound to.
#[derive(Clone, Debug)]
pub struct Token {
    /// The token itself (zeroized on drop, never printed).
    pub access_token: AccessToken,
    /// Bearer or mtls_pop.
    pub token_type: TokenType,
    /// When the published token expires.
    pub expires_at: SystemTime,
    /// When the issuer asked to be asked again (`refresh_in`), if it said.
    pub refresh_in: Option<Duration>,
    /// The certificate that must be presented with this token (always set for `mtls_pop`).
    pub binding: Option<BindingCert>,
}

impl Token {
    /// The `Authorization` header value, marked sensitive so hyper's h2 HPACK never indexes it.
    pub fn authorization_header(&self) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        let secret = Zeroizing::new(format!(
            "{} {}",
            self.token_type.scheme(),
            self.access_token.expose_secret()
        ));
        let mut value = HeaderValue::from_str(&secret)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let token = AccessToken::new("eyJhbGciOi.secret.sig".into());
        let shown = format!("{token:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("21 bytes"), "{shown}");
    }

    #[test]
    fn header_uses_lowercase_pop_scheme() {
        let token = Token {
            access_token: AccessToken::new("abc".into()),
            token_type: TokenType::MtlsPop,
            expires_at: SystemTime::now(),
            refresh_in: None,
            binding: None,
        };
        let value = token.authorization_header().unwrap();
        assert_eq!(value.to_str().unwrap(), "mtls_pop abc");
        assert!(value.is_sensitive());
        assert!(TokenType::MtlsPop.matches_response("MTLS_POP"));
        assert!(!TokenType::MtlsPop.matches_response("Bearer"));
    }
}
