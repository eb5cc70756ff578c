//! What differs between kinds of credential: how one token is acquired (build the request or
//! requests, send, parse). Everything around an acquisition — the cache, single flight, refresh
//! ahead, Retry-After blocks — is [`Cached`](super::cached::Cached)'s, written once for all kinds.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::identity::token::Token;

use super::cache::{CacheKey, Failure};
use super::credential::{CredentialLabels, EngineError};
use super::sources::errors;

/// One kind of token source: a certificate app, FIC leg 2, a managed identity (Bearer or PoP),
/// a workload identity.
pub trait TokenSource: Send + Sync + 'static {
    /// What an acquisition is made with, fixed before the cache is consulted so the entry it
    /// fills and the token it gets agree: the binding certificate, the leg-1 token, the minted
    /// IMDSv2 certificate, or nothing.
    type Input: Send + Sync;

    /// Who this source acquires for (logs, metrics, errors).
    fn labels(&self) -> &CredentialLabels;

    /// The input for the next acquisition. May itself acquire (FIC leg 1, an IMDSv2 certificate).
    fn input(&self) -> impl Future<Output = Result<Self::Input, EngineError>> + Send;

    /// The cache entry a token acquired with `input` belongs to.
    fn key(&self, input: &Self::Input) -> CacheKey;

    /// Acquires one token with `input`. Retries within the call are the protocol's
    /// ([`send_with_retry`](super::sources::retry::send_with_retry)); the cache does the rest.
    fn acquire(
        &self,
        input: &Self::Input,
    ) -> impl Future<Output = Result<Token, AcquireError>> + Send;

    /// A new input after the token endpoint refused `refused`'s binding certificate, or `None`
    /// when this kind has no other certificate to offer (the refusal then stands).
    fn rebind(
        &self,
        _refused: &Self::Input,
    ) -> impl Future<Output = Option<Result<Self::Input, EngineError>>> + Send {
        std::future::ready(None)
    }

    /// Changes whenever the binding certificate changes.
    fn binding_changes(&self) -> watch::Receiver<u64>;
}

/// A failed acquisition.
#[derive(Debug)]
pub struct AcquireError {
    /// What went wrong, naming the peer (never a secret).
    pub error: EngineError,
    /// The peer's `Retry-After`: identical requests are blocked until then.
    pub retry_after: Option<Duration>,
    /// The token endpoint refused the certificate presented (TLS handshake or `invalid_client`).
    pub binding_refused: bool,
}

impl AcquireError {
    /// The failure as the cache records it (with the block the peer asked for).
    pub fn into_failure(self) -> Failure<EngineError> {
        errors::failure(self.error, self.retry_after)
    }
}

impl From<EngineError> for AcquireError {
    /// A local failure: no peer answer, nothing to wait for, no certificate refused.
    fn from(error: EngineError) -> Self {
        Self {
            error,
            retry_after: None,
            binding_refused: false,
        }
    }
}
