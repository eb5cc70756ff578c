//! Admission to an upstream host's connections: popgate's own waiting line in front of
//! hyper-util's pool, so that a burst on a busy HTTP/1.1 upstream waits in a bounded, timed line
//! and a caller beyond it is told "busy, retry" (503) at once, instead of every caller racing a
//! dial for the connector's per-host cap and failing after the connect timeout.
//!
//! Over HTTP/1.1 a connection carries one request at a time, so a host gets at most
//! `max_connections_per_host` requests in flight (a *slot* each, from admission until the
//! response body ends or is dropped, as the connection is busy until then); the connector caps live connections at the same number. A request that finds
//! no free slot waits, if fewer than `max_waiting` already do, for at most `wait_timeout`.
//!
//! HTTP/2 multiplexes: once a response from the host comes back over h2, the host's slots are
//! closed (every waiter is let through) and its requests are no longer held to them. All h1
//! requests of a client go through one lane (one hyper-util pool), so a connection freed by one
//! request is found by the next whatever thread it runs on.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::UpstreamPool;
use crate::config::limits::MAX_TRACKED_HOSTS;
use crate::metrics::pool::{PoolMetrics, PoolRefusal};

/// Why a request was not admitted. The text is safe to show to callers.
#[derive(Debug, thiserror::Error)]
pub enum PoolBusy {
    #[error(
        "all {cap} upstream connections to {authority} are busy and {waiting} callers already wait for one"
    )]
    /// Every slot was taken and `max_waiting` callers already waited: refused at once.
    WaitersFull {
        /// The upstream `host[:port]`.
        authority: String,
        /// Its connection (h1 slot) cap.
        cap: usize,
        /// Callers waiting when this one arrived.
        waiting: usize,
    },
    /// The caller waited as long as it may and no slot came free.
    #[error("all {cap} upstream connections to {authority} stayed busy for {waited:?}")]
    WaitExpired {
        /// The upstream `host[:port]`.
        authority: String,
        /// Its connection (h1 slot) cap.
        cap: usize,
        /// How long the caller waited.
        waited: Duration,
    },
}

impl PoolBusy {
    /// The bounded metric reason.
    pub fn reason(&self) -> PoolRefusal {
        match self {
            PoolBusy::WaitersFull { .. } => PoolRefusal::WaitersFull,
            PoolBusy::WaitExpired { .. } => PoolRefusal::WaitExpired,
        }
    }
}

/// One host's slots and waiting line.
struct HostGate {
    /// One permit per request in flight over h1; closed once the host answered over h2.
    slots: Arc<Semaphore>,
    /// Callers waiting for a slot now.
    waiting: AtomicUsize,
}

impl HostGate {
    /// Whether a request holds a slot or waits for one. (Not `Arc::strong_count`: every copy of
    /// the host map holds one.) A gate forgotten while a request is between lookup and slot only
    /// lets that request through a fresh gate.
    fn in_use(&self, cap: usize) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
            || (!self.slots.is_closed() && self.slots.available_permits() < cap)
    }
}

/// A request's admission: holds its slot (h1) until dropped, which the response body
/// ([`super::held_body::HeldBody`]) does when it ends.
pub struct Admission {
    slot: Option<OwnedSemaphorePermit>,
    host: Arc<HostGate>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("multiplexed", &self.multiplexed())
            .finish()
    }
}

impl Admission {
    /// Whether the host is known to speak h2 (so the request may use any lane).
    pub fn multiplexed(&self) -> bool {
        self.slot.is_none()
    }

    /// The response came back over `version`: an h2 host is not held to h1 slots from now on.
    pub fn answered(&self, version: http::Version) {
        if version == http::Version::HTTP_2 {
            self.host.slots.close();
        }
    }
}

/// Every host's gate of one client (one snapshot). Cheap to share.
pub(crate) struct PoolGate {
    settings: UpstreamPool,
    /// Read lock-free per request; written (copy, insert, swap) only when a new host appears.
    hosts: ArcSwap<HashMap<Box<str>, Arc<HostGate>>>,
    /// Serialises writers of `hosts` so a new host is inserted once.
    insert: Mutex<()>,
    metrics: Option<Arc<PoolMetrics>>,
}

impl fmt::Debug for PoolGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolGate")
            .field("settings", &self.settings)
            .field("hosts", &self.hosts.load().len())
            .finish()
    }
}

impl PoolGate {
    /// A gate with `settings`, counting waiters and refusals in `metrics` when given.
    pub(crate) fn new(settings: UpstreamPool, metrics: Option<Arc<PoolMetrics>>) -> Self {
        Self {
            settings,
            hosts: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
            metrics,
        }
    }

    /// The bounds this gate applies.
    pub(crate) fn settings(&self) -> &UpstreamPool {
        &self.settings
    }

    /// Admits one request to `authority`, waiting at most `wait_timeout` (and at most
    /// `at_most`, the caller's remaining request time) for a free slot.
    pub(crate) async fn admit(
        &self,
        authority: &str,
        at_most: Duration,
    ) -> Result<Admission, PoolBusy> {
        let host = self.host(authority);
        match Arc::clone(&host.slots).try_acquire_owned() {
            Ok(slot) => {
                return Ok(Admission {
                    slot: Some(slot),
                    host,
                });
            }
            Err(TryAcquireError::Closed) => return Ok(Admission { slot: None, host }),
            Err(TryAcquireError::NoPermits) => {}
        }
        let cap = self.settings.max_connections_per_host;
        let line = Waiting::join(&host);
        if line.ahead >= self.settings.max_waiting {
            return Err(self.refuse(PoolBusy::WaitersFull {
                authority: authority.to_owned(),
                cap,
                waiting: line.ahead,
            }));
        }
        let _counted = self.metrics.as_ref().map(|m| m.waiter());
        let wait = self.settings.wait_timeout.min(at_most);
        let slot = tokio::time::timeout(wait, Arc::clone(&host.slots).acquire_owned()).await;
        drop(line);
        match slot {
            Ok(Ok(slot)) => Ok(Admission {
                slot: Some(slot),
                host,
            }),
            // Closed while waiting: the host answered over h2, no slot needed.
            Ok(Err(_closed)) => Ok(Admission { slot: None, host }),
            Err(_elapsed) => Err(self.refuse(PoolBusy::WaitExpired {
                authority: authority.to_owned(),
                cap,
                waited: wait,
            })),
        }
    }

    fn refuse(&self, busy: PoolBusy) -> PoolBusy {
        if let Some(m) = &self.metrics {
            m.refused(busy.reason());
        }
        busy
    }

    fn host(&self, authority: &str) -> Arc<HostGate> {
        if let Some(host) = self.hosts.load().get(authority) {
            return Arc::clone(host);
        }
        // A poisoned lock only means another insert panicked; the map itself is swapped whole.
        let _writer = self
            .insert
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.hosts.load_full();
        if let Some(host) = current.get(authority) {
            return Arc::clone(host);
        }
        let cap = self.settings.max_connections_per_host.max(1);
        let mut hosts = HashMap::clone(&current);
        if hosts.len() >= MAX_TRACKED_HOSTS {
            // A wildcard route can reach many hosts: forget the ones nobody uses now.
            hosts.retain(|_, host| host.in_use(cap));
        }
        let host = Arc::new(HostGate {
            slots: Arc::new(Semaphore::new(cap)),
            waiting: AtomicUsize::new(0),
        });
        hosts.insert(authority.into(), Arc::clone(&host));
        self.hosts.store(Arc::new(hosts));
        host
    }
}

/// A place in a host's waiting line, left on drop (also when the caller goes away).
struct Waiting<'a> {
    host: &'a HostGate,
    /// Callers that were waiting when this one joined.
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn join(host: &'a HostGate) -> Self {
        let ahead = host.waiting.fetch_add(1, Ordering::AcqRel);
        Self { host, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.host.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn gate(max_connections_per_host: usize, max_waiting: usize, wait: Duration) -> Arc<PoolGate> {
        Arc::new(PoolGate::new(
            UpstreamPool {
                max_connections_per_host,
                max_waiting,
                wait_timeout: wait,
            },
            None,
        ))
    }

    #[tokio::test]
    async fn a_full_line_is_refused_at_once_and_a_long_wait_expires() {
        let g = gate(1, 1, Duration::from_millis(200));
        let held = g.admit("up:443", Duration::from_secs(60)).await.unwrap();
        assert!(!held.multiplexed());
        let waiter = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.admit("up:443", Duration::from_secs(60)).await })
        };
        // Let the waiter join the line.
        while g.host("up:443").waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let err = g
            .admit("up:443", Duration::from_secs(60))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "refused at once"
        );
        assert!(
            matches!(err, PoolBusy::WaitersFull { waiting: 1, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("up:443"), "{err}");
        let err = waiter.await.unwrap().unwrap_err();
        assert!(matches!(err, PoolBusy::WaitExpired { .. }), "{err}");
        // Another host has slots of its own.
        g.admit("other:443", Duration::from_secs(60)).await.unwrap();
        drop(held);
        g.admit("up:443", Duration::from_secs(60)).await.unwrap();
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_waiter_and_h2_lets_everyone_through() {
        let g = gate(1, 10, Duration::from_secs(30));
        let held = g.admit("up", Duration::from_secs(60)).await.unwrap();
        let waiter = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.admit("up", Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        drop(held);
        let second = waiter.await.unwrap().unwrap();
        assert!(!second.multiplexed());
        let third = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.admit("up", Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        second.answered(http::Version::HTTP_2);
        assert!(third.await.unwrap().unwrap().multiplexed());
        assert!(
            g.admit("up", Duration::from_secs(60))
                .await
                .unwrap()
                .multiplexed()
        );
    }

    #[tokio::test]
    async fn the_wait_never_outlasts_the_callers_request_time() {
        let g = gate(1, 10, Duration::from_secs(30));
        let _held = g.admit("up", Duration::from_secs(60)).await.unwrap();
        let started = Instant::now();
        let err = g.admit("up", Duration::from_millis(50)).await.unwrap_err();
        assert!(matches!(err, PoolBusy::WaitExpired { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn hosts_are_pruned_past_the_tracking_bound() {
        let g = gate(1, 0, Duration::from_secs(1));
        let kept = g.admit("kept", Duration::from_secs(1)).await.unwrap();
        for i in 0..MAX_TRACKED_HOSTS + 10 {
            drop(
                g.admit(&format!("h{i}"), Duration::from_secs(1))
                    .await
                    .unwrap(),
            );
        }
        let hosts = g.hosts.load();
        assert!(hosts.len() <= MAX_TRACKED_HOSTS, "{}", hosts.len());
        assert!(hosts.contains_key("kept"), "a host in use is kept");
        drop(kept);
    }
}
