//! FIC two-leg (protocol.md §5): leg 1 is any credential for `api://AzureADTokenExchange`
//! (cached and refreshed on its own key); leg 2 is a certificate-less app that presents the leg-1
//! token as its client assertion — `jwt-pop` over mTLS with the leg-1 certificate at the mtls
//! host, or for a Bearer leg 1 `jwt-bearer` at `login.*`. A PoP leg-2 token is bound to the leg-1
//! certificate.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::certs::binding::BindingCert;
use crate::identity::authority_host::{bearer_token_host, mtls_token_host};
use crate::identity::token::{Token, TokenType};
use crate::identity::token_request::{Leg1Kind, TokenEndpoint, fic_leg2};
use crate::identity::token_response::parse_token_response;
use crate::metrics::token_steps::Step;

use super::cert_app::CertAppSettings;
use super::errors;
use super::retry::Peer;
use super::token_call::Call;
use crate::engine::build::EngineDeps;
use crate::engine::cache::CachedToken;
use crate::engine::credential::{Credential, CredentialLabels, EngineError};
use crate::engine::token_source::{AcquireError, Target, TokenSource};

/// Leg 2 of a FIC exchange on top of a shared leg-1 credential.
pub(crate) struct FicSource {
    leg1: Arc<dyn Credential>,
    leg1_kind: Leg1Kind,
    client_id: String,
    endpoint: TokenEndpoint,
    deps: EngineDeps,
}

impl FicSource {
    /// `labels.token_type` is the final token type; `leg1` must yield tokens for
    /// `api://AzureADTokenExchange`.
    pub(crate) fn new(
        labels: &CredentialLabels,
        leg1: Arc<dyn Credential>,
        app: CertAppSettings,
        deps: EngineDeps,
    ) -> Result<Self, EngineError> {
        let bad = |e: String| errors::local(&labels.identity, e);
        let leg1_kind = match leg1.labels().token_type {
            TokenType::MtlsPop => Leg1Kind::MtlsPop,
            TokenType::Bearer => Leg1Kind::Bearer,
        };
        if leg1_kind == Leg1Kind::Bearer && labels.token_type == TokenType::MtlsPop {
            return Err(bad(
                "an mtls_pop FIC token needs an mtls_pop leg 1 (a Bearer leg 1 has no certificate)"
                    .into(),
            ));
        }
        let host = match leg1_kind {
            Leg1Kind::MtlsPop => mtls_token_host(&app.authority_host, app.region.as_deref()),
            Leg1Kind::Bearer => bearer_token_host(&app.authority_host, app.region.as_deref()),
        }
        .map_err(|e| bad(e.to_string()))?;
        let endpoint = TokenEndpoint::new(&host, &app.tenant_id).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            leg1,
            leg1_kind,
            client_id: app.client_id,
            endpoint,
            deps,
        })
    }
}

impl TokenSource for FicSource {
    /// The leg-1 token (with its binding certificate when it is PoP).
    type Input = CachedToken;

    async fn input(&self) -> Result<CachedToken, EngineError> {
        // Leg 1's own cache hands back a usable token or acquires one (its own key).
        self.leg1.get().await
    }

    fn binding<'a>(&self, leg1: &'a CachedToken) -> Option<&'a BindingCert> {
        // A PoP leg-2 token is bound to the leg-1 certificate.
        leg1.token.binding.as_ref()
    }

    async fn acquire(&self, target: &Target, leg1: &CachedToken) -> Result<Token, AcquireError> {
        let name = &target.labels.identity;
        let present = match self.leg1_kind {
            Leg1Kind::MtlsPop => Some(leg1.token.binding.as_ref().ok_or_else(|| {
                errors::local(
                    name,
                    "the mtls_pop leg-1 token came without its binding certificate",
                )
            })?),
            Leg1Kind::Bearer => None,
        };
        let final_type = target.labels.token_type;
        let request = fic_leg2(
            &self.endpoint,
            &self.client_id,
            &target.resource,
            &leg1.token.access_token,
            self.leg1_kind,
            final_type,
        )
        .map_err(|e| errors::local(name, e.to_string()))?;
        let now = SystemTime::now();
        let binding = match final_type {
            TokenType::MtlsPop => present.cloned(),
            TokenType::Bearer => None,
        };
        Call::new(&self.deps, name, Peer::TokenEndpoint, "FIC leg 2 token")
            .timed(Step::Token, final_type)
            .presenting(present)
            .send(&request, |x| {
                parse_token_response(x.status, &x.body, final_type, now, binding)
            })
            .await
    }

    fn binding_changes(&self) -> watch::Receiver<u64> {
        // Leg 2 is bound to (or sent over) the leg-1 certificate.
        self.leg1.binding_changes()
    }
}
