//! A certificate app (confidential client): mTLS PoP at the `[region.]mtlsauth.*` host presenting
//! the app certificate (protocol.md §1), or Bearer with a signed client assertion at `login.*`.

use std::sync::Arc;
use std::time::SystemTime;

use crate::identity::authority_host::{bearer_token_host, mtls_token_host};
use crate::identity::client_assertion::{AssertionInput, sign_client_assertion};
use crate::identity::token::{Token, TokenType};
use crate::identity::token_request::{
    TokenEndpoint, cert_app_bearer, cert_app_mtls_pop, scope_for_resource,
};
use crate::identity::token_response::parse_token_response;

use super::cert_watch::WatchedCert;
use super::retry::{Peer, send_with_retry};
use super::{Want, cache_key, errors, through_cache};
use crate::engine::build::EngineDeps;
use crate::engine::cache::{CachedToken, Failure};
use crate::engine::credential::{BoxFuture, Credential, CredentialLabels, EngineError};

/// The app's settings, as validated config gives them.
#[derive(Clone, Debug)]
pub struct CertAppSettings {
    /// Tenant id or domain.
    pub tenant_id: String,
    /// The app's client id.
    pub client_id: String,
    /// Normalized authority host (`login.*`).
    pub authority_host: String,
    /// ESTS region for the mTLS host.
    pub region: Option<String>,
}

/// Tokens for one (certificate app, resource, token type).
pub struct CertAppCredential {
    labels: CredentialLabels,
    app: CertAppSettings,
    resource: String,
    scope: String,
    endpoint: TokenEndpoint,
    cert: Arc<WatchedCert>,
    deps: EngineDeps,
}

impl CertAppCredential {
    /// Checks the host rules and the resource now, so a bad combination fails at build time.
    pub fn new(
        labels: CredentialLabels,
        app: CertAppSettings,
        resource: &str,
        cert: Arc<WatchedCert>,
        deps: EngineDeps,
    ) -> Result<Self, EngineError> {
        let identity = labels.identity.clone();
        let host = match labels.token_type {
            TokenType::MtlsPop => mtls_token_host(&app.authority_host, app.region.as_deref()),
            TokenType::Bearer => bearer_token_host(&app.authority_host),
        }
        .map_err(|e| errors::local(&identity, e.to_string()))?;
        let endpoint = TokenEndpoint::new(&host, &app.tenant_id)
            .map_err(|e| errors::local(&identity, e.to_string()))?;
        let scope =
            scope_for_resource(resource).map_err(|e| errors::local(&identity, e.to_string()))?;
        Ok(Self {
            labels,
            app,
            resource: resource.to_string(),
            scope,
            endpoint,
            cert,
            deps,
        })
    }

    fn host(&self) -> String {
        self.endpoint
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    async fn obtain(&self, want: Want) -> Result<CachedToken, EngineError> {
        let cert = self.cert.current();
        let pop = self.labels.token_type == TokenType::MtlsPop;
        // A Bearer token is not bound: a certificate rotation does not make it a different token.
        let x5t = pop.then(|| cert.x5t_s256().to_string());
        let key = cache_key(
            &self.labels.identity,
            &self.scope,
            self.labels.token_type,
            x5t.as_deref(),
        );
        through_cache(&self.deps.cache, &key, want, || self.acquire(&cert)).await
    }

    async fn acquire(
        &self,
        cert: &crate::certs::binding::BindingCert,
    ) -> Result<Token, Failure<EngineError>> {
        let identity = &self.labels.identity;
        let fail = |e: EngineError| Failure::new(e);
        let now = SystemTime::now();
        let token_type = self.labels.token_type;
        let (request, present) = match token_type {
            TokenType::MtlsPop => (
                cert_app_mtls_pop(&self.endpoint, &self.app.client_id, &self.resource),
                Some(cert),
            ),
            TokenType::Bearer => {
                let audience = self.endpoint.url();
                let assertion = sign_client_assertion(
                    cert,
                    &AssertionInput {
                        client_id: &self.app.client_id,
                        audience: &audience,
                        now,
                        include_x5c: false,
                    },
                )
                .map_err(|e| fail(errors::local(identity, e.to_string())))?;
                (
                    cert_app_bearer(
                        &self.endpoint,
                        &self.app.client_id,
                        &self.resource,
                        &assertion,
                    ),
                    None,
                )
            }
        };
        let request = request.map_err(|e| fail(errors::local(identity, e.to_string())))?;
        let answered = send_with_retry(
            &self.deps.transport,
            self.deps.retry,
            Peer::TokenEndpoint,
            "certificate app token",
            &request,
            present,
        )
        .await
        .map_err(|e| fail(errors::transport(identity, "token endpoint", &e)))?;
        let exchange = &answered.exchange;
        parse_token_response(
            exchange.status,
            &exchange.body,
            token_type,
            now,
            present.cloned(),
        )
        .map_err(|e| {
            errors::failure(
                errors::response(identity, "token endpoint", &self.host(), &e),
                answered.retry_after,
            )
        })
    }
}

impl Credential for CertAppCredential {
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
            let cert = self.cert.current();
            let pop = self.labels.token_type == TokenType::MtlsPop;
            let x5t = pop.then(|| cert.x5t_s256().to_string());
            let key = cache_key(
                &self.labels.identity,
                &self.scope,
                self.labels.token_type,
                x5t.as_deref(),
            );
            self.deps.cache.invalidate(&key, generation).await;
        })
    }

    fn binding_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.cert.subscribe()
    }
}
