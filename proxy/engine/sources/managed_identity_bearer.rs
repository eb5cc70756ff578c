//! A managed identity's Bearer token: IMDS v1, or the App Service / Functions endpoint when
//! `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set (read once, at build).

use std::sync::Arc;
use std::time::SystemTime;

use crate::identity::app_service::{self, AppServiceEndpoint};
use crate::identity::imds_endpoint::{ImdsBase, UamiSelector};
use crate::identity::imds_v1;
use crate::identity::token::{Token, TokenType};
use crate::identity::token_request::scope_for_resource;

use super::retry::{Peer, send_with_retry};
use super::{Want, cache_key, errors, through_cache};
use crate::engine::build::EngineDeps;
use crate::engine::cache::{CachedToken, Failure};
use crate::engine::credential::{BoxFuture, Credential, CredentialLabels, EngineError};

/// Where a managed identity's Bearer tokens come from.
#[derive(Clone, Debug)]
pub enum BearerEndpoint {
    /// IMDS v1 at this base URL.
    Imds(ImdsBase),
    /// App Service / Functions.
    AppService(AppServiceEndpoint),
}

/// Tokens for one (managed identity, resource), Bearer.
pub struct ManagedIdentityBearer {
    labels: CredentialLabels,
    endpoint: BearerEndpoint,
    selector: Option<UamiSelector>,
    resource: String,
    scope: String,
    /// Shared by every credential of this identity: IMDS throttles, so calls go one at a time.
    imds_turn: Arc<tokio::sync::Mutex<()>>,
    deps: EngineDeps,
    /// A Bearer token has no binding certificate: this never changes, and is kept open so
    /// receivers wait rather than see a closed channel.
    no_binding: tokio::sync::watch::Sender<u64>,
}

impl ManagedIdentityBearer {
    /// `imds_turn` must be the same for every credential of the identity.
    pub fn new(
        labels: CredentialLabels,
        endpoint: BearerEndpoint,
        selector: Option<UamiSelector>,
        resource: &str,
        imds_turn: Arc<tokio::sync::Mutex<()>>,
        deps: EngineDeps,
    ) -> Result<Self, EngineError> {
        let scope = scope_for_resource(resource)
            .map_err(|e| errors::local(&labels.identity, e.to_string()))?;
        Ok(Self {
            labels,
            endpoint,
            selector,
            resource: resource.to_string(),
            scope,
            imds_turn,
            deps,
            no_binding: tokio::sync::watch::channel(0).0,
        })
    }

    fn key(&self) -> crate::engine::cache::CacheKey {
        cache_key(&self.labels.identity, &self.scope, TokenType::Bearer, None)
    }

    async fn obtain(&self, want: Want) -> Result<CachedToken, EngineError> {
        through_cache(&self.deps.cache, &self.key(), want, || self.acquire()).await
    }

    async fn acquire(&self) -> Result<Token, Failure<EngineError>> {
        let identity = &self.labels.identity;
        let (request, peer_name) = match &self.endpoint {
            BearerEndpoint::Imds(base) => (
                imds_v1::token_request(base, &self.resource, self.selector.as_ref()),
                "IMDS",
            ),
            BearerEndpoint::AppService(endpoint) => (
                app_service::token_request(endpoint, &self.resource, self.selector.as_ref()),
                "App Service identity endpoint",
            ),
        };
        let request = request.map_err(|e| Failure::new(errors::local(identity, e.to_string())))?;
        let host = request
            .request()
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let _turn = self.imds_turn.lock().await;
        let answered = send_with_retry(
            &self.deps.transport,
            self.deps.retry,
            Peer::Imds,
            "managed identity Bearer token",
            &request,
            None,
        )
        .await
        .map_err(|e| Failure::new(errors::transport(identity, peer_name, &e)))?;
        let now = SystemTime::now();
        let exchange = &answered.exchange;
        let parsed = match &self.endpoint {
            BearerEndpoint::Imds(_) => {
                imds_v1::parse_token_response(exchange.status, &exchange.body, now)
            }
            BearerEndpoint::AppService(_) => {
                app_service::parse_token_response(exchange.status, &exchange.body, now)
            }
        };
        parsed.map(|t| t.token).map_err(|e| {
            errors::failure(
                errors::response(identity, peer_name, &host, &e),
                answered.retry_after,
            )
        })
    }
}

impl Credential for ManagedIdentityBearer {
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
