//! A managed identity's mTLS PoP token via IMDSv2 (protocol.md §3): the token is requested over
//! mTLS at `mtls_authentication_endpoint`, presenting the identity's binding certificate
//! ([`ImdsV2Identity`]); when the token endpoint refuses that certificate (`invalid_client` or
//! the TLS handshake) a new one is minted and the token requested once more.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::certs::binding::BindingCert;
use crate::identity::token::{Token, TokenType};
use crate::identity::token_response::parse_token_response;
use crate::metrics::token_steps::Step;

use super::errors;
use super::imds_v2_binding::{ImdsV2Identity, Minted};
use super::retry::Peer;
use super::token_call::Call;
use crate::engine::build::EngineDeps;
use crate::engine::credential::EngineError;
use crate::engine::token_source::{AcquireError, Target, TokenSource};

/// mTLS PoP tokens for one managed identity.
pub(crate) struct ManagedIdentityPopSource {
    identity: Arc<ImdsV2Identity>,
    deps: EngineDeps,
}

impl ManagedIdentityPopSource {
    /// `identity` is shared by every PoP source of the managed identity.
    pub(crate) fn new(identity: Arc<ImdsV2Identity>, deps: EngineDeps) -> Self {
        Self { identity, deps }
    }
}

impl TokenSource for ManagedIdentityPopSource {
    /// The identity's current binding certificate (minted on first use).
    type Input = Arc<Minted>;

    async fn input(&self) -> Result<Arc<Minted>, EngineError> {
        self.identity.binding(None).await
    }

    fn binding<'a>(&self, minted: &'a Arc<Minted>) -> Option<&'a BindingCert> {
        Some(&minted.binding)
    }

    async fn acquire(&self, target: &Target, minted: &Arc<Minted>) -> Result<Token, AcquireError> {
        let name = &target.labels.identity;
        let request = minted
            .issued
            .token_request(&target.resource)
            .map_err(|e| errors::local(name, e.to_string()))?;
        let now = SystemTime::now();
        Call::new(
            &self.deps,
            name,
            Peer::TokenEndpoint,
            "IMDSv2 mTLS PoP token",
        )
        .timed(Step::Token, TokenType::MtlsPop)
        .presenting(Some(&minted.binding))
        .send(&request, |x| {
            let binding = Some(minted.binding.clone());
            parse_token_response(x.status, &x.body, TokenType::MtlsPop, now, binding)
        })
        .await
    }

    async fn rebind(
        &self,
        target: &Target,
        refused: &Arc<Minted>,
    ) -> Option<Result<Arc<Minted>, EngineError>> {
        tracing::info!(
            identity = %target.labels.identity,
            "token endpoint refused the IMDSv2 certificate; minting a new one"
        );
        Some(
            self.identity
                .binding(Some(refused.binding.x5t_s256()))
                .await,
        )
    }

    fn binding_changes(&self) -> watch::Receiver<u64> {
        self.identity.subscribe()
    }
}
