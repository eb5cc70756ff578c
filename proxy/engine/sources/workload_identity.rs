//! Kubernetes workload identity: the projected service-account token (re-read on every
//! acquisition, kubelet rotates it) exchanged at `login.*` for a Bearer token.

use std::path::PathBuf;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::identity::authority_host::bearer_token_host;
use crate::identity::token::{Token, TokenType};
use crate::identity::token_request::{TokenEndpoint, scope_for_resource};
use crate::identity::token_response::parse_token_response;
use crate::identity::workload_identity::{read_federated_token, token_request};

use super::retry::Peer;
use super::token_call::Call;
use super::{cache_key, errors};
use crate::engine::build::EngineDeps;
use crate::engine::cache::CacheKey;
use crate::engine::credential::{CredentialLabels, EngineError};
use crate::engine::token_source::{AcquireError, TokenSource};

/// Tokens for one (workload identity, resource), Bearer.
pub struct WorkloadIdentitySource {
    labels: CredentialLabels,
    client_id: String,
    token_file: PathBuf,
    endpoint: TokenEndpoint,
    resource: String,
    scope: String,
    deps: EngineDeps,
    /// A Bearer token has no binding certificate: this never changes, and is kept open so
    /// receivers wait rather than see a closed channel.
    no_binding: watch::Sender<u64>,
}

impl WorkloadIdentitySource {
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
            no_binding: watch::channel(0).0,
        })
    }
}

impl TokenSource for WorkloadIdentitySource {
    /// Nothing: the federated token is re-read inside each acquisition.
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
        let local = |e: String| AcquireError::from(errors::local(identity, e));
        let federated = read_federated_token(&self.token_file)
            .await
            .map_err(|e| local(e.to_string()))?;
        let request = token_request(&self.endpoint, &self.client_id, &self.resource, &federated)
            .map_err(|e| local(e.to_string()))?;
        drop(federated);
        let now = SystemTime::now();
        Call::new(
            &self.deps,
            identity,
            Peer::TokenEndpoint,
            "workload identity token",
        )
        .send(&request, |x| {
            parse_token_response(x.status, &x.body, TokenType::Bearer, now, None)
        })
        .await
    }

    fn binding_changes(&self) -> watch::Receiver<u64> {
        self.no_binding.subscribe()
    }
}
