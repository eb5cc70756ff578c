//! What the authority saw: per-endpoint counters and a request log that tests read in-process.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::faults::{Endpoint, lock};

/// One request as the authority judged it. Never holds a token, assertion or key.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RequestRecord {
    pub endpoint: Endpoint,
    /// The HTTP status answered (0 when the connection was dropped).
    pub status: u16,
    /// The client or managed identity the request was for, when known.
    pub client_id: Option<String>,
    /// The ESTS / IMDS `error` code, or a short note of what was accepted (e.g. `mtls_pop`).
    pub outcome: String,
    /// `x5t#S256` of the client certificate presented in TLS, if any.
    pub client_cert_x5t: Option<String>,
}

#[derive(Debug, Default)]
pub struct Observations {
    log: Mutex<Vec<RequestRecord>>,
}

impl Observations {
    pub fn record(&self, record: RequestRecord) {
        lock(&self.log).push(record);
    }

    /// Every request so far, oldest first.
    pub fn log(&self) -> Vec<RequestRecord> {
        lock(&self.log).clone()
    }

    /// How many requests reached `endpoint` (whatever they were answered).
    pub fn count(&self, endpoint: Endpoint) -> usize {
        lock(&self.log)
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    /// How many requests to `endpoint` were answered 200.
    pub fn successes(&self, endpoint: Endpoint) -> usize {
        lock(&self.log)
            .iter()
            .filter(|r| r.endpoint == endpoint && r.status == 200)
            .count()
    }

    /// Counts by endpoint, for the admin API.
    pub fn counts(&self) -> HashMap<Endpoint, usize> {
        let mut out = HashMap::new();
        for r in lock(&self.log).iter() {
            *out.entry(r.endpoint).or_insert(0) += 1;
        }
        out
    }

    pub fn clear(&self) {
        lock(&self.log).clear();
    }
}
