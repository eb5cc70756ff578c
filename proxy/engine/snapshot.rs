//! What the data plane reads per request: a route's current snapshot (the prebuilt `Authorization`
//! value and the client that presents the matching certificate), published through an `ArcSwap`.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::credential::token::Token;
use crate::dataplane::client::{UpstreamClient, UpstreamSettings};
use crate::dataplane::upstream_tls::{self, UpstreamTlsError};

/// Why a snapshot cannot be built from a token.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("the token cannot be sent as an Authorization header (it holds invalid characters)")]
    BadHeaderValue,
    #[error("an mtls_pop token needs its binding certificate")]
    PopWithoutCertificate,
    #[error(transparent)]
    Tls(#[from] UpstreamTlsError),
}

/// Everything one request needs, built ahead of time. Replaced whole on refresh or rotation.
pub struct Snapshot {
    /// `Bearer …` or `mtls_pop …`, marked sensitive.
    pub authorization: HeaderValue,
    /// The thumbprint of the certificate the client presents (`None`: no client certificate).
    pub x5t_s256: Option<String>,
    /// When the token expires.
    pub expires_at: SystemTime,
    /// Increases with every snapshot published for a route.
    pub generation: u64,
    /// The pooled client presenting the token's binding certificate.
    pub client: UpstreamClient,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("authorization", &"<redacted>")
            .field("x5t_s256", &self.x5t_s256)
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Builds a snapshot from a token: a new `ClientConfig` presenting `token.binding` (none when the
    /// token has no binding) and a new client with its own pool. Never reuses a config or pool from
    /// another certificate.
    pub fn build(
        token: &Token,
        upstream: &UpstreamSettings,
        generation: u64,
    ) -> Result<Self, SnapshotError> {
        if token.token_type == crate::credential::token::TokenType::MtlsPop
            && token.binding.is_none()
        {
            return Err(SnapshotError::PopWithoutCertificate);
        }
        let authorization = token
            .authorization_header()
            .map_err(|_| SnapshotError::BadHeaderValue)?;
        let tls = upstream_tls::client_config(token.binding.as_ref(), &upstream.extra_roots)?;
        Ok(Self {
            authorization,
            x5t_s256: token.binding.as_ref().map(|b| b.x5t_s256().to_string()),
            expires_at: token.expires_at,
            generation,
            client: UpstreamClient::new(tls, upstream),
        })
    }
}

/// A route's published state. `None` means "no usable token": the data plane answers 503.
pub struct RouteSlot {
    name: Arc<str>,
    /// The current snapshot; the credential engine stores, the data plane loads.
    pub snapshot: ArcSwapOption<Snapshot>,
}

impl fmt::Debug for RouteSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteSlot")
            .field("name", &self.name)
            .field("snapshot", &self.snapshot.load())
            .finish()
    }
}

impl RouteSlot {
    /// An empty slot (no snapshot yet).
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            snapshot: ArcSwapOption::empty(),
        }
    }

    /// A slot already holding a snapshot.
    pub fn with_snapshot(name: impl Into<Arc<str>>, snapshot: Snapshot) -> Self {
        Self {
            name: name.into(),
            snapshot: ArcSwapOption::from_pointee(snapshot),
        }
    }

    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes a new snapshot; requests already in flight keep the old one until they finish.
    pub fn publish(&self, snapshot: Snapshot) {
        self.snapshot.store(Some(Arc::new(snapshot)));
    }

    /// Withdraws the snapshot: requests get 503 until the next publish.
    pub fn withdraw(&self) {
        self.snapshot.store(None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::token::{AccessToken, TokenType};
    use crate::dataplane::upstream_tls::ExtraRoots;
    use std::time::Duration;

    fn settings() -> UpstreamSettings {
        let ca = rcgen::CertifiedIssuer::self_signed(
            {
                let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
                p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                p
            },
            rcgen::KeyPair::generate().unwrap(),
        )
        .unwrap();
        let mut extra = ExtraRoots::default();
        extra.add_der("test-ca", ca.der().clone());
        UpstreamSettings {
            extra_roots: extra,
            ..UpstreamSettings::default()
        }
    }

    fn token(kind: TokenType, secret: &str) -> Token {
        Token {
            access_token: AccessToken::new(secret.into()),
            token_type: kind,
            expires_at: SystemTime::now() + Duration::from_secs(3600),
            refresh_in: None,
            binding: None,
        }
    }

    #[tokio::test]
    async fn debug_redacts_the_authorization_value() {
        let snap =
            Snapshot::build(&token(TokenType::Bearer, "s3cr3t-token"), &settings(), 7).unwrap();
        let shown = format!("{snap:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("generation: 7"), "{shown}");
        assert!(snap.authorization.is_sensitive());
        assert_eq!(snap.x5t_s256, None);
        let slot = RouteSlot::with_snapshot("r", snap);
        assert!(!format!("{slot:?}").contains("s3cr3t"));
        slot.withdraw();
        assert!(slot.snapshot.load().is_none());
    }

    #[test]
    fn pop_without_certificate_is_refused() {
        let err = Snapshot::build(&token(TokenType::MtlsPop, "abc"), &settings(), 1).unwrap_err();
        assert!(matches!(err, SnapshotError::PopWithoutCertificate), "{err}");
    }

    #[test]
    fn a_token_with_control_characters_is_refused_without_showing_it() {
        let err =
            Snapshot::build(&token(TokenType::Bearer, "abc\ndef"), &settings(), 1).unwrap_err();
        assert!(matches!(err, SnapshotError::BadHeaderValue), "{err}");
        assert!(!err.to_string().contains("abc"));
    }
}
