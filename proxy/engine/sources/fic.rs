//! FIC two-leg (protocol.md §5): leg 1 is any credential for `api://AzureADTokenExchange`
//! (cached and refreshed on its own key); leg 2 is a certificate-less app that presents the leg-1
//! token as its client assertion — `jwt-pop` over mTLS with the leg-1 certificate at the mtls
//! host, or for a Bearer leg 1 `jwt-bearer` at `login.*`. A PoP leg-2 token is bound to the leg-1
//! certificate.

use std::sync::Arc;
use std::time::SystemTime;

use crate::certs::binding::BindingCert;
use crate::identity::authority_host::{bearer_token_host, mtls_token_host};
use crate::identity::token::{Token, TokenType};
use crate::identity::token_request::{Leg1Kind, TokenEndpoint, fic_leg2, scope_for_resource};
use crate::identity::token_response::parse_token_response;

use super::cert_app::CertAppSettings;
use super::retry::{Peer, send_with_retry};
use super::{Want, cache_key, errors, through_cache};
use crate::engine::build::EngineDeps;
use crate::engine::cache::{CacheKey, CachedToken, Failure};
use crate::engine::credential::{BoxFuture, Credential, CredentialLabels, EngineError};

/// Leg 2 of a FIC exchange on top of a shared leg-1 credential.
pub struct FicCredential {
    labels: CredentialLabels,
    leg1: Arc<dyn Credential>,
    leg1_kind: Leg1Kind,
    app: CertAppSettings,
    endpoint: TokenEndpoint,
    resource: String,
    scope: String,
    /// Cache identity: leg 2 through leg 1, so two leg-1s of one app never share entries.
    cache_identity: String,
    /// The key of the last leg-2 token handed out, so `invalidate` needs no leg-1 call.
    last_key: std::sync::Mutex<Option<CacheKey>>,
    deps: EngineDeps,
}

impl FicCredential {
    /// `labels.token_type` is the final token type; `leg1` must yield tokens for
    /// `api://AzureADTokenExchange` of the type `leg1_kind` names.
    pub fn new(
        labels: CredentialLabels,
        leg1: Arc<dyn Credential>,
        app: CertAppSettings,
        resource: &str,
        deps: EngineDeps,
    ) -> Result<Self, EngineError> {
        let name = labels.identity.clone();
        let bad = |e: String| errors::local(&name, e);
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
            Leg1Kind::Bearer => bearer_token_host(&app.authority_host),
        }
        .map_err(|e| bad(e.to_string()))?;
        let endpoint = TokenEndpoint::new(&host, &app.tenant_id).map_err(|e| bad(e.to_string()))?;
        let scope = scope_for_resource(resource).map_err(|e| bad(e.to_string()))?;
        let cache_identity = format!("{} via {}", labels.identity, leg1.labels().identity);
        Ok(Self {
            labels,
            leg1,
            leg1_kind,
            app,
            endpoint,
            resource: resource.to_string(),
            scope,
            cache_identity,
            last_key: std::sync::Mutex::new(None),
            deps,
        })
    }

    fn key(&self, leg1_binding: Option<&BindingCert>) -> CacheKey {
        let x5t = match self.labels.token_type {
            TokenType::MtlsPop => leg1_binding.map(|b| b.x5t_s256()),
            TokenType::Bearer => None,
        };
        cache_key(
            &self.cache_identity,
            &self.scope,
            self.labels.token_type,
            x5t,
        )
    }

    async fn obtain(&self, want: Want) -> Result<CachedToken, EngineError> {
        // Leg 1 first: its cache hands back a usable token or acquires one (its own key).
        let leg1 = self.leg1.get().await?;
        let key = self.key(leg1.token.binding.as_ref());
        let got = through_cache(&self.deps.cache, &key, want, || self.acquire(&leg1)).await;
        if got.is_ok() {
            *self.last_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
        }
        got
    }

    async fn acquire(&self, leg1: &CachedToken) -> Result<Token, Failure<EngineError>> {
        let name = &self.labels.identity;
        let present = match self.leg1_kind {
            Leg1Kind::MtlsPop => Some(leg1.token.binding.as_ref().ok_or_else(|| {
                Failure::new(errors::local(
                    name,
                    "the mtls_pop leg-1 token came without its binding certificate",
                ))
            })?),
            Leg1Kind::Bearer => None,
        };
        let final_type = self.labels.token_type;
        let request = fic_leg2(
            &self.endpoint,
            &self.app.client_id,
            &self.resource,
            &leg1.token.access_token,
            self.leg1_kind,
            final_type,
        )
        .map_err(|e| Failure::new(errors::local(name, e.to_string())))?;
        let now = SystemTime::now();
        let answered = send_with_retry(
            &self.deps.transport,
            self.deps.retry,
            Peer::TokenEndpoint,
            "FIC leg 2 token",
            &request,
            present,
        )
        .await
        .map_err(|e| Failure::new(errors::transport(name, "token endpoint", &e)))?;
        let x = &answered.exchange;
        let binding = match final_type {
            TokenType::MtlsPop => present.cloned(),
            TokenType::Bearer => None,
        };
        let host = self
            .endpoint
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        parse_token_response(x.status, &x.body, final_type, now, binding).map_err(|e| {
            errors::failure(
                errors::response(name, "token endpoint", &host, &e),
                answered.retry_after,
            )
        })
    }
}

impl Credential for FicCredential {
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
            // Only leg 2 is forgotten; the leg-1 token is still a good assertion.
            let key = self
                .last_key
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(key) = key {
                self.deps.cache.invalidate(&key, generation).await;
            }
        })
    }

    fn binding_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        // Leg 2 is bound to (or sent over) the leg-1 certificate.
        self.leg1.binding_changes()
    }
}
