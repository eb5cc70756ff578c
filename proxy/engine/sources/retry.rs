//! Runs one credential request under the retry rules of protocol.md §7: the token endpoint is
//! retried once after a 5xx without `Retry-After` or a timeout; IMDS is retried on 404/408/410/429/5xx
//! (410 first: seven retries ten seconds apart). A `Retry-After` on the final answer is handed to
//! the cache so identical requests are blocked until then.

use std::time::{Duration, Instant, SystemTime};

use crate::certs::binding::BindingCert;
use crate::identity::ests_error::EstsError;
use crate::identity::outbound_request::CredentialRequest;
use crate::identity::retry_policy::{self, ImdsSchedule, Outcome, RetryDecision};
use crate::net::token_transport::{Exchange, Transport, TransportError};

/// How long retry waits really are. Production uses the protocol's waits; tests divide them so a
/// 410 schedule (70 s) runs in well under a second while the count of calls stays the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryTiming {
    /// Every wait is divided by this (1 = real time).
    pub divisor: u32,
}

impl Default for RetryTiming {
    fn default() -> Self {
        Self { divisor: 1 }
    }
}

impl RetryTiming {
    /// Waits divided by `divisor` (at least 1).
    pub fn scaled(divisor: u32) -> Self {
        Self {
            divisor: divisor.max(1),
        }
    }

    fn wait(&self, nominal: Duration) -> Duration {
        nominal / self.divisor.max(1)
    }
}

/// Which retry rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// An Entra ID token endpoint.
    TokenEndpoint,
    /// IMDS (v1 token, v2 getplatformmetadata and issuecredential).
    Imds,
    /// IMDSv2 `getplatformmetadata`: IMDS's rules, 404 included (MSAL's `RequestType.Imds`: a
    /// 404 is retried 1/2/4 s and only then means "no IMDSv2").
    ImdsProbe,
    /// Another managed-identity source's endpoint (App Service, Arc, Service Fabric, Cloud
    /// Shell, Machine Learning): MSAL's `ManagedIdentityDefault` table.
    ManagedIdentity,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::TokenEndpoint => "token endpoint",
            Peer::Imds | Peer::ImdsProbe => "IMDS",
            Peer::ManagedIdentity => "managed identity endpoint",
        }
    }

    /// The `peer` label in metrics: `token_endpoint` or `imds` (every managed-identity source).
    pub fn metric_label(self) -> &'static str {
        match self {
            Peer::TokenEndpoint => "token_endpoint",
            Peer::Imds | Peer::ImdsProbe | Peer::ManagedIdentity => "imds",
        }
    }
}

/// The final answer, and the wait the peer asked for (for the cache's block).
#[derive(Debug)]
pub struct Answered {
    /// The last answer (success or the final error).
    pub exchange: Exchange,
    /// `Retry-After` of the last answer, capped (protocol.md §7).
    pub retry_after: Option<Duration>,
}

/// Sends `request` and retries it as `peer`'s rules say. `what` names the call in logs.
pub async fn send_with_retry(
    transport: &Transport,
    timing: RetryTiming,
    peer: Peer,
    what: &'static str,
    request: &CredentialRequest,
    binding: Option<&BindingCert>,
) -> Result<Answered, TransportError> {
    let mut retries_done: u32 = 0;
    let mut schedule: Option<ImdsSchedule> = None;
    loop {
        let attempt = retries_done + 1;
        let sent = std::time::Instant::now();
        let result = transport.send(request, binding).await;
        let ok = result.as_ref().is_ok_and(|e| e.status.is_success());
        crate::metrics::credential_call(peer.metric_label(), ok, sent.elapsed());
        let decision = match &result {
            Ok(exchange) => {
                log_answer(peer, what, attempt, request, exchange);
                if exchange.status.is_success() {
                    return finish(result);
                }
                let outcome = Outcome::Response {
                    status: exchange.status,
                    headers: &exchange.headers,
                };
                decide(peer, &mut schedule, retries_done, &outcome)
            }
            Err(error) => {
                tracing::warn!(
                    peer = peer.name(),
                    call = what,
                    attempt,
                    client_request_id = %request.client_request_id(),
                    error = %error,
                    "credential call failed"
                );
                if error.is_timeout() {
                    decide(peer, &mut schedule, retries_done, &Outcome::Timeout)
                } else {
                    RetryDecision::GiveUp
                }
            }
        };
        match decision {
            RetryDecision::Retry(nominal) => {
                tokio::time::sleep(timing.wait(nominal)).await;
                retries_done += 1;
            }
            RetryDecision::GiveUp | RetryDecision::BlockedUntil(_) => return finish(result),
        }
    }
}

fn decide(
    peer: Peer,
    schedule: &mut Option<ImdsSchedule>,
    retries_done: u32,
    outcome: &Outcome<'_>,
) -> RetryDecision {
    match peer {
        Peer::TokenEndpoint => {
            retry_policy::token_endpoint(retries_done, outcome, Instant::now(), SystemTime::now())
        }
        Peer::ManagedIdentity => crate::identity::mi_retry::managed_identity(
            retries_done,
            outcome,
            Instant::now(),
            SystemTime::now(),
        ),
        Peer::Imds | Peer::ImdsProbe => {
            let on = *schedule.get_or_insert_with(|| ImdsSchedule::for_first_failure(outcome));
            retry_policy::imds(on, retries_done, outcome)
        }
    }
}

fn finish(result: Result<Exchange, TransportError>) -> Result<Answered, TransportError> {
    let exchange = result?;
    let retry_after = if exchange.status.is_success() {
        None
    } else {
        retry_policy::retry_after(&exchange.headers, SystemTime::now())
    };
    Ok(Answered {
        exchange,
        retry_after,
    })
}

fn log_answer(
    peer: Peer,
    what: &'static str,
    attempt: u32,
    request: &CredentialRequest,
    exchange: &Exchange,
) {
    if exchange.status.is_success() {
        tracing::debug!(
            peer = peer.name(),
            call = what,
            attempt,
            status = exchange.status.as_u16(),
            client_request_id = %request.client_request_id(),
            "credential call answered"
        );
        return;
    }
    // Only the error code, AADSTS number and correlation id are logged, never the body.
    let error = EstsError::parse(exchange.status, &exchange.body);
    tracing::warn!(
        peer = peer.name(),
        call = what,
        attempt,
        status = exchange.status.as_u16(),
        error = %error.error,
        aadsts = error.aadsts,
        correlation_id = error.correlation_id.as_deref(),
        client_request_id = %request.client_request_id(),
        "credential call refused"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, StatusCode};

    #[test]
    fn timing_divides_waits() {
        assert_eq!(
            RetryTiming::default().wait(Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        assert_eq!(
            RetryTiming::scaled(1000).wait(Duration::from_secs(10)),
            Duration::from_millis(10)
        );
        assert_eq!(RetryTiming::scaled(0).divisor, 1);
    }

    fn answer(code: u16) -> (StatusCode, HeaderMap) {
        (StatusCode::from_u16(code).unwrap(), HeaderMap::new())
    }

    #[test]
    fn probe_404_is_retried_as_msal_does() {
        let (status, headers) = answer(404);
        let outcome = Outcome::Response {
            status,
            headers: &headers,
        };
        assert_eq!(
            decide(Peer::ImdsProbe, &mut None, 0, &outcome),
            RetryDecision::Retry(Duration::from_secs(1))
        );
        assert_eq!(
            decide(
                Peer::ImdsProbe,
                &mut Some(ImdsSchedule::Standard),
                3,
                &outcome
            ),
            RetryDecision::GiveUp
        );
        assert!(matches!(
            decide(Peer::Imds, &mut None, 0, &outcome),
            RetryDecision::Retry(_)
        ));
    }

    #[test]
    fn the_imds_schedule_is_fixed_by_the_first_failure() {
        let (gone, headers) = answer(410);
        let (error, _) = answer(500);
        let mut schedule = None;
        let first = Outcome::Response {
            status: gone,
            headers: &headers,
        };
        assert!(matches!(
            decide(Peer::Imds, &mut schedule, 0, &first),
            RetryDecision::Retry(_)
        ));
        assert_eq!(schedule, Some(ImdsSchedule::Gone));
        // A later 500 stays on the 410 schedule (seven retries, not three).
        let later = Outcome::Response {
            status: error,
            headers: &headers,
        };
        assert!(matches!(
            decide(Peer::Imds, &mut schedule, 5, &later),
            RetryDecision::Retry(_)
        ));
        assert_eq!(
            decide(Peer::Imds, &mut schedule, 7, &later),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn token_endpoint_never_retries_429() {
        let (status, headers) = answer(429);
        let outcome = Outcome::Response {
            status,
            headers: &headers,
        };
        assert_eq!(
            decide(Peer::TokenEndpoint, &mut None, 0, &outcome),
            RetryDecision::GiveUp
        );
    }
}
