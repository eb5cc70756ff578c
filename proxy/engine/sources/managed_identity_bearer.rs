//! A managed identity's Bearer token: IMDS v1, or the App Service / Functions endpoint when
//! `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set (read once, at build).

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::identity::app_service::{self, AppServiceEndpoint};
use crate::identity::imds_endpoint::{ImdsBase, UamiSelector};
use crate::identity::imds_v1;
use crate::identity::token::{Token, TokenType};
use crate::identity::token_request::scope_for_resource;

use super::retry::Peer;
use super::token_call::Call;
use super::{cache_key, errors};
use crate::engine::build::EngineDeps;
use crate::engine::cache::CacheKey;
use crate::engine::credential::{CredentialLabels, EngineError};
use crate::engine::token_source::{AcquireError, TokenSource};

/// Where a managed identity's Bearer tokens come from.
#[derive(Clone, Debug)]
pub enum BearerEndpoint {
    /// IMDS v1 at this base URL.
    Imds(ImdsBase),
    /// App Service / Functions.
    AppService(AppServiceEndpoint),
}

/// Tokens for one (managed identity, resource), Bearer.
pub struct ManagedIdentityBearerSource {
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
    no_binding: watch::Sender<u64>,
}

impl ManagedIdentityBearerSource {
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
            no_binding: watch::channel(0).0,
        })
    }
}

impl TokenSource for ManagedIdentityBearerSource {
    /// Nothing: the endpoint and identity are fixed.
    type Input = ();

    fn labels(&self) -> &CredentialLabels {
        &self.labels
    }

    async fn input(&self) -> Result<(), EngineError> {
        Ok(())
    }

    fn key(&self, _: &()) -> CacheKey {
        cache_key(&self.labels.identity, &self.scope, TokenType::Bearer, None)
    }

    async fn acquire(&self, _: &()) -> Result<Token, AcquireError> {
        let identity = &self.labels.identity;
        let call = Call::new(
            &self.deps,
            identity,
            Peer::Imds,
            "managed identity Bearer token",
        );
        let (request, call) = match &self.endpoint {
            BearerEndpoint::Imds(base) => (
                imds_v1::token_request(base, &self.resource, self.selector.as_ref()),
                call,
            ),
            BearerEndpoint::AppService(endpoint) => (
                app_service::token_request(endpoint, &self.resource, self.selector.as_ref()),
                Call {
                    peer_name: "App Service identity endpoint",
                    ..call
                },
            ),
        };
        let request = request.map_err(|e| errors::local(identity, e.to_string()))?;
        let _turn = self.imds_turn.lock().await;
        call.send(&request, |x| {
            let now = SystemTime::now();
            let parsed = match &self.endpoint {
                BearerEndpoint::Imds(_) => imds_v1::parse_token_response(x.status, &x.body, now),
                BearerEndpoint::AppService(_) => {
                    app_service::parse_token_response(x.status, &x.body, now)
                }
            };
            parsed.map(|t| t.token)
        })
        .await
    }

    fn binding_changes(&self) -> watch::Receiver<u64> {
        self.no_binding.subscribe()
    }
}
