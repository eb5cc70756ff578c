//! Admission of token calls: at most [`MAX_TOKEN_CALLS_PER_HOST`] in flight to one token
//! endpoint with one client certificate (one of the transport's clients), the rest wait their
//! turn.
//!
//! A config with many routes starts (and refreshes) many tokens at once: 1,000 routes sent 1,000
//! calls to Entra ID or IMDS together. IMDS throttles such bursts, and hyper-util's client starts
//! a connection for every request that finds no idle one, so each call beyond the transport's
//! connection cap left a dial waiting on the cap (then failing as busy) and the endpoint's HTTP/2
//! connection kept room for as many streams as had been in flight (about 2 KB per route held
//! after start, benches/README.md). Admitting no more calls than the transport has connections
//! per host means no call waits on a dial and no dial is started in vain.

use tokio::sync::OwnedSemaphorePermit;

use crate::config::limits::MAX_TOKEN_CALLS_PER_HOST;
use crate::net::host_semaphores::HostSemaphores;

/// The admission of one transport, per host and client certificate.
#[derive(Debug)]
pub(crate) struct TokenCallGate {
    /// One semaphore per (host, client certificate) with a call in flight or waiting; the others
    /// are forgotten on the next call, so hosts called once (an identity removed by a reload) do
    /// not accumulate.
    hosts: HostSemaphores,
}

impl Default for TokenCallGate {
    fn default() -> Self {
        Self {
            hosts: HostSemaphores::new(MAX_TOKEN_CALLS_PER_HOST, 0),
        }
    }
}

impl TokenCallGate {
    /// Waits for a turn to call `host` (its authority, `host:port`, and the client
    /// certificate's thumbprint when one is presented: the connection cap is per client); the
    /// call holds the returned permit until its answer is read. `None` only if the semaphore was
    /// closed, which this gate never does: the call then goes ahead unadmitted rather than
    /// failing.
    pub(crate) async fn admit(&self, host: &str) -> Option<OwnedSemaphorePermit> {
        self.hosts.of(host).acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_host_admits_its_cap_and_the_next_call_when_one_ends() {
        let gate = TokenCallGate::default();
        let mut held = Vec::new();
        for _ in 0..MAX_TOKEN_CALLS_PER_HOST {
            held.push(gate.admit("login.example:443").await.unwrap());
        }
        let waiting =
            tokio::time::timeout(Duration::from_millis(50), gate.admit("login.example:443"));
        assert!(waiting.await.is_err(), "a call beyond the cap was admitted");
        // Another host is not held up by this one.
        let other = gate.admit("169.254.169.254:80").await.unwrap();
        held.pop();
        let next = tokio::time::timeout(Duration::from_secs(10), gate.admit("login.example:443"))
            .await
            .expect("a freed turn admits the next call");
        assert!(next.is_some());
        drop((held, next, other));
        assert_eq!(gate.hosts.in_use(), 0, "hosts with no call are forgotten");
    }
}
