//! A managed identity's Bearer token from its source (config-time detection, MSAL's order):
//! IMDS v1, App Service, Azure Arc (with its `401` challenge and secret file), Service Fabric
//! (pinned server certificate), Cloud Shell or Machine Learning. Every source but IMDS is retried
//! on MSAL's `ManagedIdentityDefault` table.

use std::sync::Arc;
use std::time::SystemTime;

use http::StatusCode;

use crate::certs::bounded_read::read_bounded_async;
use crate::identity::azure_arc::{
    self, ARC_SECRET_FILE_MAX_BYTES, ArcEndpoint, ArcSecret, unreadable_file,
};
use crate::identity::imds_endpoint::{ImdsBase, UamiSelector};
use crate::identity::mi_source::MiSource;
use crate::identity::mi_token_response::parse_managed_identity_token;
use crate::identity::outbound_request::{CredentialRequest, RequestError};
use crate::identity::response_json::ResponseError;
use crate::identity::token::{Token, TokenType};
use crate::identity::{app_service, cloud_shell, imds_v1, machine_learning, service_fabric};
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
    /// Any other source (never [`MiSource::Imds`]).
    Source(MiSource),
}

/// Bearer tokens for one managed identity.
pub(crate) struct ManagedIdentityBearerSource {
    endpoint: BearerEndpoint,
    selector: Option<UamiSelector>,
    /// Shared by every source of this identity: IMDS throttles, so calls go one at a time.
    imds_turn: Arc<tokio::sync::Mutex<()>>,
    deps: EngineDeps,
}

/// What the first Arc request got: a token, or the challenge naming the secret file.
enum ArcStep {
    Token(Token),
    Challenge(String),
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

    fn request(&self, resource: &str) -> Result<(CredentialRequest, &'static str), RequestError> {
        let selector = self.selector.as_ref();
        Ok(match &self.endpoint {
            BearerEndpoint::Imds(base) => (
                imds_v1::token_request(base, resource, selector)?,
                "IMDS v1 token response",
            ),
            BearerEndpoint::Source(MiSource::AppService(e)) => (
                app_service::token_request(e, resource, selector)?,
                "App Service token response",
            ),
            BearerEndpoint::Source(MiSource::ServiceFabric(e)) => (
                service_fabric::token_request(e, resource, selector)?,
                "Service Fabric token response",
            ),
            BearerEndpoint::Source(MiSource::CloudShell(e)) => (
                cloud_shell::token_request(e, resource)?,
                "Cloud Shell token response",
            ),
            BearerEndpoint::Source(MiSource::MachineLearning(e)) => (
                machine_learning::token_request(e, resource, selector)?,
                "Machine Learning token response",
            ),
            BearerEndpoint::Source(MiSource::AzureArc(e)) => (
                azure_arc::token_request(e, resource, None)?,
                "Azure Arc token response",
            ),
            BearerEndpoint::Source(MiSource::Imds) => {
                return Err(RequestError::bad(
                    "managed identity token request",
                    "source",
                    "IMDS is reached through its base URL",
                ));
            }
        })
    }

    /// The call for `identity`'s token, timed as the `token` step (this source only issues Bearer).
    fn call<'a>(&'a self, identity: &'a str) -> Call<'a> {
        let call = match &self.endpoint {
            BearerEndpoint::Imds(_) => Call::new(
                &self.deps,
                identity,
                Peer::Imds,
                "managed identity Bearer token",
            ),
            BearerEndpoint::Source(source) => Call {
                peer_name: source.kind().msal_name(),
                ..Call::new(
                    &self.deps,
                    identity,
                    Peer::ManagedIdentity,
                    "managed identity Bearer token",
                )
            },
        };
        call.timed(Step::Token, TokenType::Bearer)
    }

    /// Arc: the first answer is normally `401` with the challenge; the secret file it names is
    /// read (only from the agent's directory, at most 4096 bytes) and the request sent again.
    async fn arc(
        &self,
        identity: &str,
        endpoint: &ArcEndpoint,
        resource: &str,
        first: CredentialRequest,
    ) -> Result<Token, AcquireError> {
        const WHAT: &str = "Azure Arc token response";
        let local = |e: String| errors::local(identity, e);
        let step = self
            .call(identity)
            .send(&first, |x| {
                if x.status == StatusCode::UNAUTHORIZED {
                    return azure_arc::challenge_path(&x.headers)
                        .map(ArcStep::Challenge)
                        .map_err(|e| ResponseError::Invalid {
                            what: WHAT,
                            problem: e.to_string(),
                        });
                }
                parse_managed_identity_token(WHAT, x.status, &x.body, SystemTime::now())
                    .map(|t| ArcStep::Token(t.token))
            })
            .await?;
        let path = match step {
            ArcStep::Token(token) => return Ok(token),
            ArcStep::Challenge(path) => path,
        };
        let file = self
            .deps
            .arc_token_dir
            .check(&path)
            .map_err(|e| local(format!("Azure Arc: {e}")))?;
        let bytes = read_bounded_async(file, ARC_SECRET_FILE_MAX_BYTES)
            .await
            .map_err(|read| {
                tracing::warn!(identity, error = %read, "Azure Arc secret file unusable");
                local(format!("Azure Arc: {}", unreadable_file()))
            })?;
        let secret =
            ArcSecret::from_file_bytes(&bytes).map_err(|e| local(format!("Azure Arc: {e}")))?;
        drop(bytes);
        let second = azure_arc::token_request(endpoint, resource, Some(&secret))
            .map_err(|e| local(e.to_string()))?;
        drop(secret);
        self.call(identity)
            .send(&second, |x| {
                parse_managed_identity_token(WHAT, x.status, &x.body, SystemTime::now())
                    .map(|t| t.token)
            })
            .await
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
        let (request, what) = self
            .request(&target.resource)
            .map_err(|e| errors::local(identity, e.to_string()))?;
        let _turn = self.imds_turn.lock().await;
        if let BearerEndpoint::Source(MiSource::AzureArc(endpoint)) = &self.endpoint {
            return self
                .arc(identity, endpoint, &target.resource, request)
                .await;
        }
        self.call(identity)
            .send(&request, |x| {
                parse_managed_identity_token(what, x.status, &x.body, SystemTime::now())
                    .map(|t| t.token)
            })
            .await
    }
}
