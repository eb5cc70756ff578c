//! The tail every acquisition shares: send one request under its peer's retry rules, parse the
//! final answer, and turn a failure into an [`AcquireError`] that names the peer and host (and
//! notes when the certificate presented was refused).

use std::time::Duration;

use crate::certs::binding::BindingCert;
use crate::identity::outbound_request::CredentialRequest;
use crate::identity::response_json::ResponseError;
use crate::identity::retry_policy::is_permanent_refusal;
use crate::identity::token::TokenType;
use crate::metrics::token_steps::{self, Step};
use crate::net::token_transport::Exchange;

use super::errors;
use super::retry::{Peer, send_with_retry};
use crate::engine::build::EngineDeps;
use crate::engine::token_source::AcquireError;

/// One call to a token endpoint or IMDS.
#[derive(Clone, Copy)]
pub(crate) struct Call<'a> {
    /// Sends the request, with the retry timing.
    pub deps: &'a EngineDeps,
    /// The identity errors name.
    pub identity: &'a str,
    /// Which retry rules apply.
    pub peer: Peer,
    /// How errors name the peer: `token endpoint`, `IMDS`, `App Service identity endpoint`.
    pub peer_name: &'static str,
    /// How errors name the host; `None`: the request's host.
    pub host: Option<&'a str>,
    /// Names the call in logs.
    pub what: &'static str,
    /// The certificate presented over mTLS, if any.
    pub present: Option<&'a BindingCert>,
    /// The acquisition step this call is, timed by token type (`None`: not timed).
    pub step: Option<(Step, TokenType)>,
}

impl<'a> Call<'a> {
    /// A call to `peer` for `identity`, named `what` in logs, presenting no certificate and
    /// naming the request's host in errors.
    pub(crate) fn new(
        deps: &'a EngineDeps,
        identity: &'a str,
        peer: Peer,
        what: &'static str,
    ) -> Self {
        let peer_name = match peer {
            Peer::TokenEndpoint => "token endpoint",
            Peer::Imds | Peer::ImdsProbe => "IMDS",
            Peer::ManagedIdentity => "managed identity endpoint",
        };
        Self {
            deps,
            identity,
            peer,
            peer_name,
            host: None,
            what,
            present: None,
            step: None,
        }
    }

    /// Times this call as `step` of a `token_type` acquisition (`popgate_token_step_duration_seconds`).
    pub(crate) fn timed(self, step: Step, token_type: TokenType) -> Self {
        Self {
            step: Some((step, token_type)),
            ..self
        }
    }

    /// Presents `cert` over mTLS.
    pub(crate) fn presenting(self, cert: Option<&'a BindingCert>) -> Self {
        Self {
            present: cert,
            ..self
        }
    }

    /// Sends `request` and parses the final answer with `parse`.
    pub(crate) async fn send<T>(
        self,
        request: &CredentialRequest,
        parse: impl FnOnce(&Exchange) -> Result<T, ResponseError>,
    ) -> Result<T, AcquireError> {
        let presented = self.present.is_some();
        let started = std::time::Instant::now();
        let result = self.exchange(request, parse, presented).await;
        if let Some((step, token_type)) = self.step {
            token_steps::observe(
                self.identity,
                token_type,
                step,
                result.is_ok(),
                started.elapsed(),
            );
        }
        result
    }

    async fn exchange<T>(
        self,
        request: &CredentialRequest,
        parse: impl FnOnce(&Exchange) -> Result<T, ResponseError>,
        presented: bool,
    ) -> Result<T, AcquireError> {
        let answered = send_with_retry(
            &self.deps.transport,
            self.deps.retry,
            self.peer,
            self.what,
            request,
            self.present,
        )
        .await
        .map_err(|e| {
            let mut error = errors::transport(self.identity, self.peer_name, &e);
            // A proxy refusing the credentials stays refused until the config changes.
            error.permanent = e.is_permanent();
            AcquireError {
                error,
                retry_after: None,
                binding_refused: presented && e.is_tls(),
            }
        })?;
        parse(&answered.exchange).map_err(|e| {
            let host = match self.host {
                Some(host) => host.to_string(),
                None => authority(request),
            };
            self.refused(&e, &host, answered.retry_after, presented)
        })
    }

    fn refused(
        &self,
        e: &ResponseError,
        host: &str,
        retry_after: Option<Duration>,
        presented: bool,
    ) -> AcquireError {
        let mut error = errors::response(self.identity, self.peer_name, host, e);
        error.permanent = e.ests().is_some_and(|ests| {
            is_permanent_refusal(
                ests.http_status,
                self.peer != Peer::TokenEndpoint,
                self.peer == Peer::ImdsProbe,
            )
        });
        AcquireError {
            error,
            retry_after,
            binding_refused: presented && e.ests().is_some_and(|ests| ests.is_invalid_client()),
        }
    }
}

/// The request's `host[:port]`, as errors name it.
fn authority(request: &CredentialRequest) -> String {
    request
        .request()
        .uri()
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_default()
}
