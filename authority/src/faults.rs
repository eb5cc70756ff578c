//! Fault injection: tests and the admin API queue faults per endpoint; handlers take the next one.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// The endpoints a fault can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /{tenant}/oauth2/v2.0/token` on any login.* / mtlsauth.* host.
    Token,
    /// IMDS v1 `GET /metadata/identity/oauth2/token`.
    ImdsV1Token,
    /// IMDS v2 `GET /metadata/identity/getplatformmetadata`.
    ImdsPlatformMetadata,
    /// IMDS v2 `POST /metadata/identity/issuecredential`.
    ImdsIssueCredential,
    /// App Service `GET {IDENTITY_ENDPOINT}`.
    AppService,
    /// Azure Arc `GET {IDENTITY_ENDPOINT}` (challenge, then Basic secret).
    AzureArc,
    /// Service Fabric `GET {IDENTITY_ENDPOINT}` over TLS.
    ServiceFabric,
    /// Cloud Shell `POST {MSI_ENDPOINT}`.
    CloudShell,
    /// Azure Machine Learning `GET {MSI_ENDPOINT}`.
    MachineLearning,
    /// The token-bound resource server.
    Resource,
}

/// One injected misbehaviour.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer with this status (and `Retry-After` seconds, and body, when given) instead of the real answer.
    Status {
        code: u16,
        retry_after: Option<u64>,
        body: Option<String>,
    },
    /// Close the connection without answering.
    Drop,
    /// Wait this long, then answer normally.
    Delay { millis: u64 },
    /// IMDS issuecredential: 400 "Attestation Token is missing / empty" (the shared vector).
    AttestationRequired,
}

/// Per-endpoint fault queues plus a standing latency.
#[derive(Debug, Default)]
pub struct Faults {
    queues: Mutex<HashMap<Endpoint, VecDeque<Fault>>>,
    latency: Mutex<HashMap<Endpoint, Duration>>,
}

impl Faults {
    /// Queue `fault` for the next `times` requests to `endpoint`.
    pub fn push(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        let mut queues = lock(&self.queues);
        let queue = queues.entry(endpoint).or_default();
        queue.extend(std::iter::repeat_n(fault, times));
    }

    /// Take the next queued fault for `endpoint`, if any.
    pub fn next(&self, endpoint: Endpoint) -> Option<Fault> {
        lock(&self.queues).get_mut(&endpoint)?.pop_front()
    }

    /// Every request to `endpoint` waits this long first (zero clears it).
    pub fn set_latency(&self, endpoint: Endpoint, latency: Duration) {
        lock(&self.latency).insert(endpoint, latency);
    }

    pub fn latency(&self, endpoint: Endpoint) -> Duration {
        lock(&self.latency)
            .get(&endpoint)
            .copied()
            .unwrap_or_default()
    }

    /// Drop every queued fault and latency.
    pub fn clear(&self) {
        lock(&self.queues).clear();
        lock(&self.latency).clear();
    }
}

/// A poisoned lock only means another handler panicked mid-update of a queue; the queue itself is
/// still a valid value, so keep going rather than take the whole authority down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_taken_in_order_and_run_out() {
        let faults = Faults::default();
        faults.push(Endpoint::Token, Fault::Drop, 2);
        faults.push(Endpoint::Token, Fault::Delay { millis: 5 }, 1);
        assert_eq!(faults.next(Endpoint::Token), Some(Fault::Drop));
        assert_eq!(faults.next(Endpoint::Token), Some(Fault::Drop));
        assert_eq!(
            faults.next(Endpoint::Token),
            Some(Fault::Delay { millis: 5 })
        );
        assert_eq!(faults.next(Endpoint::Token), None);
        assert_eq!(faults.next(Endpoint::ImdsV1Token), None);
    }
}
