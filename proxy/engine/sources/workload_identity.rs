//! Kubernetes workload identity: the projected service-account token (re-read on every
//! acquisition, kubelet rotates it) exchanged at `login.*` for a Bearer token.

use std::path::PathBuf;
use std::time::SystemTime;

use crate::config::model::WorkloadIdentity;
use crate::identity::authority_host::bearer_token_host;
use crate::identity::token::{Token, TokenType};
use crate::identity::token_request::TokenEndpoint;
use crate::identity::token_response::parse_token_response;
use crate::identity::workload_identity::{read_federated_token, token_request};
use crate::metrics::token_steps::Step;

use super::errors;
use super::retry::Peer;
use super::token_call::Call;
use crate::engine::build::EngineDeps;
use crate::engine::credential::{CredentialLabels, EngineError};
use crate::engine::token_source::{AcquireError, Target, TokenSource};

/// Bearer tokens for one workload identity.
pub(crate) struct WorkloadIdentitySource {
    client_id: String,
    token_file: PathBuf,
    endpoint: TokenEndpoint,
    deps: EngineDeps,
}

impl WorkloadIdentitySource {
    /// Checks the host now.
    pub(crate) fn new(
        labels: &CredentialLabels,
        identity: &WorkloadIdentity,
        deps: EngineDeps,
    ) -> Result<Self, EngineError> {
        let bad = |e: String| errors::local(&labels.identity, e);
        let host =
            bearer_token_host(&identity.authority_host, None).map_err(|e| bad(e.to_string()))?;
        let endpoint =
            TokenEndpoint::new(&host, &identity.tenant_id).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            client_id: identity.client_id.clone(),
            token_file: identity.token_file.clone(),
            endpoint,
            deps,
        })
    }
}

impl TokenSource for WorkloadIdentitySource {
    /// Nothing: the federated token is re-read inside each acquisition.
    type Input = ();

    async fn input(&self) -> Result<(), EngineError> {
        Ok(())
    }

    async fn acquire(&self, target: &Target, _: &()) -> Result<Token, AcquireError> {
        let identity = &target.labels.identity;
        let local = |e: String| AcquireError::from(errors::local(identity, e));
        let federated = read_federated_token(&self.token_file)
            .await
            .map_err(|e| local(e.to_string()))?;
        let request = token_request(
            &self.endpoint,
            &self.client_id,
            &target.resource,
            &federated,
        )
        .map_err(|e| local(e.to_string()))?;
        drop(federated);
        let now = SystemTime::now();
        Call::new(
            &self.deps,
            identity,
            Peer::TokenEndpoint,
            "workload identity token",
        )
        .timed(Step::Token, TokenType::Bearer)
        .send(&request, |x| {
            parse_token_response(x.status, &x.body, TokenType::Bearer, now, None)
        })
        .await
    }
}
