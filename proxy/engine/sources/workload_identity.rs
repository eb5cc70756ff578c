//! Kubernetes workload identity: the projected service-account token (re-read on every
//! acquisition, kubelet rotates it) exchanged at `login.*` for a Bearer token.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::identity::authority_host::bearer_token_host;
use crate::identity::token::{Token, TokenType};
use crate::identity::token_request::{TokenEndpoint, scope_for_resource};
use crate::identity::token_response::parse_token_response;
use crate::identity::workload_identity::{read_federated_token, token_request};

use super::retry::{Peer, send_with_retry};
use super::{Want, cache_key, errors, through_cache};
use crate::engine::build::EngineDeps;
use crate::engine::cache::{CacheKey, CachedToken, Failure};
use crate::engine::credential::{BoxFuture, Credential, CredentialLabels, EngineError};

/// Tokens for one (workload identity, resource), Bearer.
pub struct WorkloadIdentityCredential {
    labels: CredentialLabels,
    client_id: String,
    token_file: PathBuf,
    endpoint: TokenEndpoint,
    resource: String,
    scope: String,
    deps: EngineDeps,
    /// A Bearer token has no binding certificate: this never changes, and is kept open so
    /// receivers wait rather than see a closed channel.
    no_binding: tokio::sync::watch::Sender<u64>,
}

impl WorkloadIdentityCredential {
    /// Checks the host and resource now.
    pub fn new(
        labels: CredentialLabels,
        identity: &crate::config::model::WorkloadIdentity,
        resource: &str,
        deps: EngineDeps,
    ) -> Result<Self, EngineError> {
        let name = labels.identity.clone();
        let bad = |e: String| errors::local(&name, e);
        let host = bearer_token_host(&identity.authority_host).map_err(|e| bad(e.to_string()))?;
        let endpoint =
            TokenEndpoint::new(&host, &identity.tenant_id).map_err(|e| bad(e.to_string()))?;
        let scope = scope_for_resource(resource).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            labels,
            client_id: identity.client_id.clone(),
            token_file: identity.token_file.clone(),
            endpoint,
            resource: resource.to_string(),
            scope,
            deps,
            no_binding: tokio::sync::watch::channel(0).0,
        })
    }

    fn key(&self) -> CacheKey {
        cache_key(&self.labels.identity, &self.scope, TokenType::Bearer, None)
    }

    async fn obtain(&self, want: Want) -> Result<CachedToken, EngineError> {
        through_cache(&self.deps.cache, &self.key(), want, || self.acquire()).await
    }

    async fn acquire(&self) -> Result<Token, Failure<EngineError>> {
        let identity = &self.labels.identity;
        let local = |e: String| Failure::new(errors::local(identity, e));
        let federated = read_federated_token(&self.token_file)
            .await
            .map_err(|e| local(e.to_string()))?;
        let request = token_request(&self.endpoint, &self.client_id, &self.resource, &federated)
            .map_err(|e| local(e.to_string()))?;
        drop(federated);
        let now = SystemTime::now();
        let answered = send_with_retry(
            &self.deps.transport,
            self.deps.retry,
            Peer::TokenEndpoint,
            "workload identity token",
            &request,
            None,
        )
        .await
        .map_err(|e| Failure::new(errors::transport(identity, "token endpoint", &e)))?;
        let exchange = &answered.exchange;
        let host = self
            .endpoint
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        parse_token_response(
            exchange.status,
            &exchange.body,
            TokenType::Bearer,
            now,
            None,
        )
        .map_err(|e| {
            errors::failure(
                errors::response(identity, "token endpoint", &host, &e),
                answered.retry_after,
            )
        })
    }
}

impl Credential for WorkloadIdentityCredential {
    fn labels(&self) -> &CredentialLabels {
        &self.labels
    }

    fn get(&self) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(self.obtain(Want::Usable))
    }

    fn refresh(&self, seen: u64) -> BoxFuture<'_, Result<CachedToken, EngineError>> {
        Box::pin(self.obtain(Want::Refresh(seen)))
    }

    fn invalidate(&self, generation: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.deps.cache.invalidate(&self.key(), generation).await;
        })
    }

    fn binding_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.no_binding.subscribe()
    }
}
