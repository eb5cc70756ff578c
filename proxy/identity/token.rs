//! The token types every part of popgate shares: the secret itself, its type, its lifetime.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use zeroize::Zeroizing;

use crate::certs::binding::BindingCert;

/// An access token, held once with its `Authorization` scheme in front (`mtls_pop eyJ…`): the
/// header value a route's snapshot sends shares these bytes instead of copying them (a token is
/// 1–3 KB, and every route kept it twice: issue 13), and the header's bytes are zeroized with
/// the token's when the last holder of either drops. Never printed: `Debug` shows only its
/// length.
#[derive(Clone)]
pub struct AccessToken(Arc<Secret>);

/// The shared text: `{scheme} {token}`.
struct Secret {
    text: Zeroizing<String>,
    /// Where the token starts in `text`.
    token_at: usize,
    token_type: TokenType,
}

/// A header value's owner: the token's shared text, given to [`Bytes::from_owner`].
struct HeaderText(Arc<Secret>);

impl AsRef<[u8]> for HeaderText {
    fn as_ref(&self) -> &[u8] {
        self.0.text.as_bytes()
    }
}

impl AccessToken {
    /// Wraps a token of `token_type` received from a peer; `secret` is zeroized once copied in,
    /// and the copy when the last clone (or header value made from it) drops.
    pub fn new(token_type: TokenType, secret: String) -> Self {
        let secret = Zeroizing::new(secret);
        let scheme = token_type.scheme();
        let mut text = Zeroizing::new(String::with_capacity(scheme.len() + 1 + secret.len()));
        text.push_str(scheme);
        text.push(' ');
        text.push_str(&secret);
        Self(Arc::new(Secret {
            text,
            token_at: scheme.len() + 1,
            token_type,
        }))
    }

    /// The raw token. Call sites are the few places that must put it on the wire.
    pub fn expose_secret(&self) -> &str {
        self.0.text.get(self.0.token_at..).unwrap_or_default()
    }

    /// The `Authorization` value `{scheme} {token}`, marked sensitive so HPACK never indexes
    /// it (the data plane's upstream copy decides that for itself), sharing the token's bytes.
    fn header_value(&self) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        let shared = Bytes::from_owner(HeaderText(Arc::clone(&self.0)));
        let mut value = HeaderValue::from_maybe_shared(shared)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AccessToken(<redacted, {} bytes>)",
            self.expose_secret().len()
        )
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
    /// It shares the token's bytes when the token was made for this type, as every parser makes
    /// it; otherwise it is a zeroizing copy under this type's scheme.
    pub fn authorization_header(&self) -> Result<HeaderValue, http::header::InvalidHeaderValue> {
        if self.access_token.0.token_type == self.token_type {
            return self.access_token.header_value();
        }
        let secret = self.access_token.expose_secret().to_owned();
        AccessToken::new(self.token_type, secret).header_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token of `token_type`, parsed as that type, expiring now.
    fn token(token_type: TokenType, secret: &str) -> Token {
        Token {
            access_token: AccessToken::new(token_type, secret.into()),
            token_type,
            expires_at: SystemTime::now(),
            refresh_in: None,
            binding: None,
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = AccessToken::new(TokenType::Bearer, "eyJhbGciOi.secret.sig".into());
        let shown = format!("{token:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("21 bytes"), "{shown}");
    }

    #[test]
    fn header_uses_lowercase_pop_scheme() {
        let token = token(TokenType::MtlsPop, "abc");
        let value = token.authorization_header().unwrap();
        assert_eq!(value.to_str().unwrap(), "mtls_pop abc");
        assert!(value.is_sensitive());
        assert!(TokenType::MtlsPop.matches_response("MTLS_POP"));
        assert!(!TokenType::MtlsPop.matches_response("Bearer"));
    }

    /// The header a snapshot sends is the token's own bytes, not a second copy of them.
    #[test]
    fn the_header_shares_the_tokens_bytes() {
        let token = token(TokenType::MtlsPop, "eyJ.payload.sig");
        let value = token.authorization_header().unwrap();
        assert_eq!(value.as_bytes(), b"mtls_pop eyJ.payload.sig");
        let secret = token.access_token.expose_secret();
        assert_eq!(secret, "eyJ.payload.sig");
        let scheme_and_space = "mtls_pop ".len();
        assert_eq!(
            value.as_bytes()[scheme_and_space..].as_ptr(),
            secret.as_ptr(),
            "the header is a copy"
        );
        // A token made for another type still gets this type's scheme.
        let bearer = Token {
            token_type: TokenType::Bearer,
            ..token
        };
        assert_eq!(
            bearer.authorization_header().unwrap().as_bytes(),
            b"Bearer eyJ.payload.sig"
        );
    }

    #[test]
    fn a_token_a_header_cannot_carry_is_refused() {
        let token = token(TokenType::Bearer, "a\nb");
        assert!(token.authorization_header().is_err());
    }
}
