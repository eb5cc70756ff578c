//! What differs between kinds of credential: how one token is acquired (build the request or
//! requests, send, parse). Everything around an acquisition — the cache, single flight, refresh
//! ahead, Retry-After blocks — is [`Cached`](super::cached::Cached)'s, written once for all kinds.

use std::future::Future;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::certs::binding::BindingCert;
use crate::identity::token::Token;
use crate::identity::token_request::scope_for_resource;

use super::cache::Failure;
use super::credential::{CredentialLabels, EngineError};
use super::sources::errors;

/// What a source acquires tokens for: the same for every kind, owned by
/// [`Cached`](super::cached::Cached) and handed to each acquisition.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// Who the tokens are for (logs, metrics, errors); `token_type` is the final token's.
    pub labels: CredentialLabels,
    /// The resource as configured.
    pub resource: String,
    /// Its `.default` scope.
    pub scope: String,
}

impl Target {
    /// Checks the resource now, so a bad one fails at build time naming the identity.
    pub(crate) fn new(labels: CredentialLabels, resource: &str) -> Result<Self, EngineError> {
        let scope = scope_for_resource(resource)
            .map_err(|e| errors::local(&labels.identity, e.to_string()))?;
        Ok(Self {
            labels,
            resource: resource.to_string(),
            scope,
        })
    }

    /// The identity part of cache keys: a FIC leg 2 is keyed through its leg 1, so two leg-1s of
    /// one app never share entries.
    pub(crate) fn cache_identity(&self) -> String {
        match &self.labels.leg1 {
            Some(leg1) => format!("{} via {}", self.labels.identity, leg1),
            None => self.labels.identity.clone(),
        }
    }
}

/// One kind of token source: a certificate app, FIC leg 2, a managed identity (Bearer or PoP),
/// a workload identity.
pub(crate) trait TokenSource: Send + Sync + 'static {
    /// What an acquisition is made with, fixed before the cache is consulted so the entry it
    /// fills and the token it gets agree: the binding certificate, the leg-1 token, the minted
    /// IMDSv2 certificate, or nothing.
    type Input: Send + Sync;

    /// The input for the next acquisition. May itself acquire (FIC leg 1, an IMDSv2 certificate).
    fn input(&self) -> impl Future<Output = Result<Self::Input, EngineError>> + Send;

    /// The certificate an mTLS PoP token acquired with `input` is bound to: its cache entry is
    /// that certificate's. `None` for sources without one.
    fn binding<'a>(&self, _input: &'a Self::Input) -> Option<&'a BindingCert> {
        None
    }

    /// Acquires one token for `target` with `input`. Retries within the call are the protocol's
    /// ([`send_with_retry`](super::sources::retry::send_with_retry)); the cache does the rest.
    fn acquire(
        &self,
        target: &Target,
        input: &Self::Input,
    ) -> impl Future<Output = Result<Token, AcquireError>> + Send;

    /// A new input after the token endpoint refused `refused`'s binding certificate, or `None`
    /// when this kind has no other certificate to offer (the refusal then stands).
    fn rebind(
        &self,
        _target: &Target,
        _refused: &Self::Input,
    ) -> impl Future<Output = Option<Result<Self::Input, EngineError>>> + Send {
        std::future::ready(None)
    }

    /// Changes whenever the binding certificate changes; by default never (no certificate).
    fn binding_changes(&self) -> watch::Receiver<u64> {
        // Never sent on and never dropped, so receivers wait rather than see a closed channel.
        static NEVER: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::channel(0).0);
        NEVER.subscribe()
    }
}

/// A source shared by several credentials (one identity's routes to different resources): its
/// settings, endpoint and dependencies are kept once, not once per route (issue 13).
impl<S: TokenSource> TokenSource for Arc<S> {
    type Input = S::Input;

    fn input(&self) -> impl Future<Output = Result<Self::Input, EngineError>> + Send {
        (**self).input()
    }

    fn binding<'a>(&self, input: &'a Self::Input) -> Option<&'a BindingCert> {
        (**self).binding(input)
    }

    fn acquire(
        &self,
        target: &Target,
        input: &Self::Input,
    ) -> impl Future<Output = Result<Token, AcquireError>> + Send {
        (**self).acquire(target, input)
    }

    fn rebind(
        &self,
        target: &Target,
        refused: &Self::Input,
    ) -> impl Future<Output = Option<Result<Self::Input, EngineError>>> + Send {
        (**self).rebind(target, refused)
    }

    fn binding_changes(&self) -> watch::Receiver<u64> {
        (**self).binding_changes()
    }
}

/// A failed acquisition.
#[derive(Debug)]
pub(crate) struct AcquireError {
    /// What went wrong, naming the peer (never a secret).
    pub error: EngineError,
    /// The peer's `Retry-After`: identical requests are blocked until then.
    pub retry_after: Option<Duration>,
    /// The token endpoint refused the certificate presented (TLS handshake or `invalid_client`).
    pub binding_refused: bool,
}

impl AcquireError {
    /// The failure as the cache records it (with the block the peer asked for).
    pub(crate) fn into_failure(self) -> Failure<EngineError> {
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
