//! A managed identity's Bearer token: IMDS v1, or the App Service / Functions endpoint when
//! `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set (read once, at build).

use std::sync::Arc;
use std::time::SystemTime;

use crate::identity::app_service::{self, AppServiceEndpoint};
use crate::identity::imds_endpoint::{ImdsBase, UamiSelector};
use crate::identity::imds_v1;
use crate::identity::token::Token;
use crate::metrics::token_steps::Step;

use super::errors;
use super::retry::Peer;
use super::token_call::Call;
use crate::engine::build::EngineDeps;
use crate::engine::credential::EngineError;
use crate::engine::token_source::{AcquireError, Target, TokenSource};

/// Where a managed identity's Bearer tokens come from.
#[derive(Clone, Debug)]
pub(crate) enum BearerEndpoint {
    /// IMDS v1 at this base URL.
    Imds(ImdsBase),
    /// App Service / Functions.
    AppService(AppServiceEndpoint),
}

/// Bearer tokens for one managed identity.
pub(crate) struct ManagedIdentityBearerSource {
    endpoint: BearerEndpoint,
    selector: Option<UamiSelector>,
    /// Shared by every source of this identity: IMDS throttles, so calls go one at a time.
    imds_turn: Arc<tokio::sync::Mutex<()>>,
    deps: EngineDeps,
}

impl ManagedIdentityBearerSource {
    /// `imds_turn` must be the same for every source of the identity.
    pub(crate) fn new(
        endpoint: BearerEndpoint,
        selector: Option<UamiSelector>,
        imds_turn: Arc<tokio::sync::Mutex<()>>,
        deps: EngineDeps,
    ) -> Self {
        Self {
            endpoint,
            selector,
            imds_turn,
            deps,
        }
    }
}

impl TokenSource for ManagedIdentityBearerSource {
    /// Nothing: the endpoint and identity are fixed.
    type Input = ();

    async fn input(&self) -> Result<(), EngineError> {
        Ok(())
    }

    async fn acquire(&self, target: &Target, _: &()) -> Result<Token, AcquireError> {
        let identity = &target.labels.identity;
        let call = Call::new(
            &self.deps,
            identity,
            Peer::Imds,
            "managed identity Bearer token",
        )
        .timed(Step::Token, target.labels.token_type);
        let selector = self.selector.as_ref();
        let (request, call) = match &self.endpoint {
            BearerEndpoint::Imds(base) => (
                imds_v1::token_request(base, &target.resource, selector),
                call,
            ),
            BearerEndpoint::AppService(endpoint) => (
                app_service::token_request(endpoint, &target.resource, selector),
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
}
