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
    /// The TLS server name the request was addressed to (token endpoint), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Managed-identity sources: the request's method, path and query, and header names (never
    /// header values or bodies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// Most records the log keeps: a load run (`popgate bench --dev`, the load harness) sends
/// millions of resource requests, and a record is ~200 bytes. The counts stay exact past it.
pub const MAX_LOG_RECORDS: usize = 100_000;

#[derive(Debug, Default)]
struct Log {
    /// The first [`MAX_LOG_RECORDS`] records.
    records: Vec<RequestRecord>,
    /// Per endpoint: requests, and those answered 200 (every request, logged or not).
    counts: HashMap<Endpoint, (usize, usize)>,
}

#[derive(Debug, Default)]
pub struct Observations {
    log: Mutex<Log>,
}

impl Observations {
    pub fn record(&self, record: RequestRecord) {
        let mut log = lock(&self.log);
        let count = log.counts.entry(record.endpoint).or_default();
        count.0 += 1;
        count.1 += usize::from(record.status == 200);
        if log.records.len() < MAX_LOG_RECORDS {
            log.records.push(record);
        }
    }

    /// Every request so far, oldest first (the first [`MAX_LOG_RECORDS`] of them).
    pub fn log(&self) -> Vec<RequestRecord> {
        lock(&self.log).records.clone()
    }

    /// How many requests reached `endpoint` (whatever they were answered).
    pub fn count(&self, endpoint: Endpoint) -> usize {
        lock(&self.log).counts.get(&endpoint).map_or(0, |c| c.0)
    }

    /// How many requests to `endpoint` were answered 200.
    pub fn successes(&self, endpoint: Endpoint) -> usize {
        lock(&self.log).counts.get(&endpoint).map_or(0, |c| c.1)
    }

    /// Counts by endpoint, for the admin API.
    pub fn counts(&self) -> HashMap<Endpoint, usize> {
        lock(&self.log)
            .counts
            .iter()
            .map(|(e, c)| (*e, c.0))
            .collect()
    }

    pub fn clear(&self) {
        let mut log = lock(&self.log);
        log.records.clear();
        log.counts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stay_exact_past_the_log_bound() {
        let seen = Observations::default();
        for i in 0..MAX_LOG_RECORDS + 10 {
            seen.record(RequestRecord {
                endpoint: Endpoint::Resource,
                status: if i % 2 == 0 { 200 } else { 401 },
                client_id: None,
                outcome: String::new(),
                client_cert_x5t: None,
                host: None,
                request: None,
            });
        }
        assert_eq!(seen.count(Endpoint::Resource), MAX_LOG_RECORDS + 10);
        assert_eq!(seen.successes(Endpoint::Resource), MAX_LOG_RECORDS / 2 + 5);
        assert_eq!(seen.count(Endpoint::Token), 0);
        assert_eq!(seen.log().len(), MAX_LOG_RECORDS);
        assert_eq!(seen.counts()[&Endpoint::Resource], MAX_LOG_RECORDS + 10);
        seen.clear();
        assert_eq!((seen.count(Endpoint::Resource), seen.log().len()), (0, 0));
    }
}
