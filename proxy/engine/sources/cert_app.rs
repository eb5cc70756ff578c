//! A certificate app (confidential client): mTLS PoP at the `[region.]mtlsauth.*` host presenting
//! the app certificate (protocol.md §1), or Bearer with a signed client assertion at
//! `[region.]login.*` (carrying `x5c` when `send_x5c` is set).

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;

use crate::certs::binding::BindingCert;
use crate::identity::authority_host::{bearer_token_host, mtls_token_host};
use crate::identity::client_assertion::{AssertionInput, sign_client_assertion};
use crate::identity::token::{Token, TokenType};
use crate::identity::token_request::{TokenEndpoint, cert_app_bearer, cert_app_mtls_pop};
use crate::identity::token_response::parse_token_response;
use crate::metrics::token_steps::Step;

use super::cert_watch::WatchedCert;
use super::errors;
use super::retry::Peer;
use super::token_call::Call;
use crate::engine::build::EngineDeps;
use crate::engine::credential::{CredentialLabels, EngineError};
use crate::engine::token_source::{AcquireError, Target, TokenSource};

/// The app's settings, as validated config gives them.
#[derive(Clone, Debug)]
pub(crate) struct CertAppSettings {
    /// Tenant id or domain.
    pub tenant_id: String,
    /// The app's client id.
    pub client_id: String,
    /// Normalized authority host (`login.*`).
    pub authority_host: String,
    /// ESTS region: the regional mTLS host for PoP, the regional `login` host for Bearer.
    pub region: Option<String>,
    /// Put the certificate chain in the Bearer assertion's `x5c` (subject name + issuer apps).
    /// The PoP path sends no assertion: the chain travels in the TLS handshake, as in MSAL.
    pub send_x5c: bool,
}

/// Tokens for one certificate app, of the token type its labels name.
pub(crate) struct CertAppSource {
    app: CertAppSettings,
    endpoint: TokenEndpoint,
    cert: Arc<WatchedCert>,
    deps: EngineDeps,
}

impl CertAppSource {
    /// Checks the host rules now, so a bad combination fails at build time.
    pub(crate) fn new(
        labels: &CredentialLabels,
        app: CertAppSettings,
        cert: Arc<WatchedCert>,
        deps: EngineDeps,
    ) -> Result<Self, EngineError> {
        let bad = |e: String| errors::local(&labels.identity, e);
        let host = match labels.token_type {
            TokenType::MtlsPop => mtls_token_host(&app.authority_host, app.region.as_deref()),
            TokenType::Bearer => bearer_token_host(&app.authority_host, app.region.as_deref()),
        }
        .map_err(|e| bad(e.to_string()))?;
        let endpoint = TokenEndpoint::new(&host, &app.tenant_id).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            app,
            endpoint,
            cert,
            deps,
        })
    }
}

impl TokenSource for CertAppSource {
    /// The certificate to present (PoP) or sign the assertion with (Bearer).
    type Input = Arc<BindingCert>;

    async fn input(&self) -> Result<Arc<BindingCert>, EngineError> {
        Ok(self.cert.current())
    }

    fn binding<'a>(&self, cert: &'a Arc<BindingCert>) -> Option<&'a BindingCert> {
        Some(cert)
    }

    async fn acquire(
        &self,
        target: &Target,
        cert: &Arc<BindingCert>,
    ) -> Result<Token, AcquireError> {
        let identity = &target.labels.identity;
        let local = |e: String| AcquireError::from(errors::local(identity, e));
        let now = SystemTime::now();
        let token_type = target.labels.token_type;
        let client_id = &self.app.client_id;
        let (request, present) = match token_type {
            TokenType::MtlsPop => (
                cert_app_mtls_pop(&self.endpoint, client_id, &target.resource),
                Some(cert.as_ref()),
            ),
            TokenType::Bearer => {
                let audience = self.endpoint.url();
                let assertion = sign_client_assertion(
                    cert,
                    &AssertionInput {
                        client_id,
                        audience: &audience,
                        now,
                        include_x5c: self.app.send_x5c,
                    },
                )
                .map_err(|e| local(e.to_string()))?;
                let request =
                    cert_app_bearer(&self.endpoint, client_id, &target.resource, &assertion);
                (request, None)
            }
        };
        let request = request.map_err(|e| local(e.to_string()))?;
        Call::new(
            &self.deps,
            identity,
            Peer::TokenEndpoint,
            "certificate app token",
        )
        .timed(Step::Token, token_type)
        .presenting(present)
        .send(&request, |x| {
            parse_token_response(x.status, &x.body, token_type, now, present.cloned())
        })
        .await
    }

    fn binding_changes(&self) -> watch::Receiver<u64> {
        self.cert.subscribe()
    }
}
