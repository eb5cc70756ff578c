//! A semaphore per host, made on first use: the connector's dial cap per upstream authority and
//! the token transport's turns per token endpoint. A host's semaphore is forgotten once nothing
//! holds it (no permit out, no waiter), when the map has grown to its pruning size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::locks::lock_unpoisoned;
use tokio::sync::Semaphore;

/// Semaphores of `cap` permits, keyed by host.
#[derive(Debug)]
pub(crate) struct HostSemaphores {
    cap: usize,
    /// Idle hosts are pruned on a lookup once this many are tracked (0: on every lookup).
    prune_at: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl HostSemaphores {
    /// `cap` permits per host (at least 1).
    pub(crate) fn new(cap: usize, prune_at: usize) -> Self {
        Self {
            cap: cap.max(1),
            prune_at,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The semaphore of `host`. Holders take permits with `acquire_owned`, so a semaphore in use
    /// is also held outside the map.
    pub(crate) fn of(&self, host: &str) -> Arc<Semaphore> {
        // Every critical section is a map insert, lookup or prune that cannot panic midway.
        let mut hosts = lock_unpoisoned(&self.hosts);
        if hosts.len() >= self.prune_at {
            Self::prune(&mut hosts, self.cap);
        }
        Arc::clone(
            hosts
                .entry(host.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.cap))),
        )
    }

    fn prune(hosts: &mut HashMap<String, Arc<Semaphore>>, cap: usize) {
        hosts.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < cap);
    }

    /// Hosts whose semaphore is in use (tests).
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        let mut hosts = lock_unpoisoned(&self.hosts);
        Self::prune(&mut hosts, self.cap);
        hosts.len()
    }
}
