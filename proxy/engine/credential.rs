//! The seam between where tokens come from (one `Credential` per identity × resource × token type ×
//! flow) and who uses them (the per-route drivers that publish snapshots).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use crate::credential::token::TokenType;

use super::cache::CachedToken;

/// A boxed future, so `Credential` stays object-safe (`Arc<dyn Credential>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a credential is, for logs, metrics labels (bounded values only) and error bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialLabels {
    /// The identity's name in routes.yaml (for FIC: the leg-2 identity; see `leg1`).
    pub identity: String,
    /// `managed_identity`, `confidential_client`, `workload_identity` or `static`.
    pub identity_kind: &'static str,
    /// `vanilla` or `fic`.
    pub flow: &'static str,
    /// The final token type.
    pub token_type: TokenType,
    /// The FIC leg-1 identity's name.
    pub leg1: Option<String>,
}

/// Why no token could be had: what a 503 body, `/readyz` and logs show. Never holds a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineError {
    /// The identity whose acquisition failed (for FIC, the leg that failed).
    pub identity: String,
    /// A one-line human explanation naming the peer and what it said, e.g.
    /// `token endpoint westus3.mtlsauth.microsoft.com refused: invalid_client AADSTS7000218 (HTTP 401, correlation id …)`.
    pub message: String,
    /// The AADSTS code, when the peer sent one.
    pub aadsts: Option<u32>,
    /// The peer's correlation id, when it sent one.
    pub correlation_id: Option<String>,
    /// Set while a `Retry-After` keeps identical requests from being sent.
    pub blocked_until: Option<SystemTime>,
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "identity {}: {}", self.identity, self.message)
    }
}

impl std::error::Error for EngineError {}

/// A source of tokens for one (identity, resource, token type, flow). Implementations own their
/// cache entries, single-flight, retries and binding-certificate lifecycle.
pub trait Credential: Send + Sync + 'static {
    fn labels(&self) -> &CredentialLabels;

    /// A usable token: the cached one, or one acquisition shared by every concurrent caller. A PoP
    /// token carries its binding certificate (`token.binding`).
    fn get(&self) -> BoxFuture<'_, Result<CachedToken, EngineError>>;

    /// Refresh ahead of expiry. `seen` is the generation the caller holds; when another route on the
    /// same credential already replaced it, the newer token comes back without a new acquisition.
    /// On failure the still-usable token stays cached.
    fn refresh(&self, seen: u64) -> BoxFuture<'_, Result<CachedToken, EngineError>>;

    /// The resource refused the token of `generation` (`401 invalid_token`): forget it so the next
    /// `get` acquires a new one.
    fn invalidate(&self, generation: u64) -> BoxFuture<'_, ()>;

    /// Changes whenever the binding certificate changes (certificate file rotated, IMDS certificate
    /// re-minted), so drivers fetch a token for the new certificate at once.
    fn binding_changes(&self) -> tokio::sync::watch::Receiver<u64>;
}
