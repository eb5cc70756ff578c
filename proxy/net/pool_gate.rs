//! Admission to an upstream host's connections: popgate's own waiting line in front of the
//! client's pools, so that a burst on a busy HTTP/1.1 upstream waits in a bounded, timed line
//! and a caller beyond it is told "busy, retry" (503) at once, instead of every caller racing a
//! dial for the connector's per-host cap and failing after the connect timeout.
//!
//! Over HTTP/1.1 a connection carries one request at a time, so a host gets at most
//! `max_connections_per_host` requests in flight (a *slot* each, from admission until the
//! response body ends or is dropped, as the connection is busy until then); the connector caps
//! live connections at the same number. A request that finds no free slot waits, if fewer than
//! `max_waiting` already do, for at most `wait_timeout`.
//!
//! The gate has one *line* (slots and waiting line) per HTTP/1.1 lane of its client (see
//! [`super::client`]): with `workers` data-plane threads each worker's requests take the slots of
//! its own line and its own lane's connections, so no worker waits for a connection that another
//! worker's lane holds idle. The configured numbers are split over the lines so that their sums
//! are the configured ones ([`line_shares`]): line `k` of `n` gets `total / n` plus one of the
//! remainder (`k < total % n`). There are never more lines than connections, so each line has at
//! least one; the waiting line can split to 0 on some lines (`max_waiting < n`: a caller there is
//! refused at once, as with `max_waiting: 0`).
//!
//! HTTP/2 multiplexes: once a response from the host comes back over h2, the host's slots are
//! closed on every line (every waiter is let through) and its requests are no longer held to them.
//! If a request let through that way is answered over HTTP/1.1 (the upstream was redeployed
//! without h2), each line gets fresh slots, and the host's requests are held to them again.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::config::UpstreamPool;
use crate::config::limits::MAX_TRACKED_HOSTS;
use crate::locks::lock_unpoisoned;
use crate::metrics::pool::{PoolMetrics, PoolRefusal};

/// Why a request was not admitted. The text is safe to show to callers.
#[derive(Debug, thiserror::Error)]
pub enum PoolBusy {
    #[error(
        "all {cap} upstream connections to {authority}{} are busy and {waiting} callers already wait for one",
        share_of(*.of)
    )]
    /// Every slot was taken and `max_waiting` callers already waited: refused at once.
    WaitersFull {
        /// The upstream `host[:port]`.
        authority: String,
        /// Its connection (h1 slot) cap on the caller's line.
        cap: usize,
        /// The configured cap, when split over more than one line.
        of: Option<usize>,
        /// Callers waiting on the caller's line when this one arrived.
        waiting: usize,
    },
    /// The caller waited as long as it may and no slot came free.
    #[error("all {cap} upstream connections to {authority}{} stayed busy for {waited:?}", share_of(*.of))]
    WaitExpired {
        /// The upstream `host[:port]`.
        authority: String,
        /// Its connection (h1 slot) cap on the caller's line.
        cap: usize,
        /// The configured cap, when split over more than one line.
        of: Option<usize>,
        /// How long the caller waited.
        waited: Duration,
    },
}

/// `" (this worker's share of N)"` when the cap is split over lines, else nothing.
fn share_of(of: Option<usize>) -> String {
    of.map_or_else(String::new, |total| {
        format!(" (this worker's share of {total})")
    })
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

/// One line's share of the configured pool: its connections (h1 slots) and waiting places.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LineShare {
    /// Connections (and h1 requests in flight) per host on this line; at least 1.
    pub(crate) connections: usize,
    /// Callers that may wait on this line; may be 0.
    pub(crate) waiting: usize,
}

/// `pool` split over `lanes` lines (at most one per connection, at least one): the shares sum
/// to the configured `max_connections_per_host` and `max_waiting`.
pub(crate) fn line_shares(pool: &UpstreamPool, lanes: usize) -> Vec<LineShare> {
    let connections = pool.max_connections_per_host.max(1);
    let n = lanes.clamp(1, connections);
    let part = |total: usize, k: usize| total / n + usize::from(k < total % n);
    (0..n)
        .map(|k| LineShare {
            connections: part(connections, k),
            waiting: part(pool.max_waiting, k),
        })
        .collect()
}

/// One line's slots and waiting line for one host.
struct Line {
    /// One permit per request in flight over h1; closed once the host answered over h2, and
    /// replaced by fresh ones if it answers over HTTP/1.1 again (a closed semaphore cannot be
    /// reopened). Read per request without a reference count.
    slots: ArcSwap<Semaphore>,
    /// The line's share of the host's connections (the fresh slots' count).
    connections: usize,
    /// Callers waiting for a slot now.
    waiting: AtomicUsize,
}

/// One host's lines.
struct HostGate {
    lines: Box<[Line]>,
    /// The host has answered over HTTP/1.1 (set once; read per request, so never rewritten).
    http1_seen: AtomicBool,
}

impl HostGate {
    /// Whether a request holds a slot or waits for one on any line. (Not `Arc::strong_count`:
    /// every copy of the host map holds one.) A gate forgotten while a request is between lookup
    /// and slot only lets that request through a fresh gate.
    fn in_use(&self) -> bool {
        self.lines.iter().any(|line| {
            let slots = line.slots.load();
            line.waiting.load(Ordering::Relaxed) > 0
                || (!slots.is_closed() && slots.available_permits() < line.connections)
        })
    }
}

/// A request's admission: holds its slot (h1) until dropped, which the response body
/// ([`super::held_body::HeldBody`]) does when it ends.
pub struct Admission {
    slot: Option<OwnedSemaphorePermit>,
    host: Arc<HostGate>,
    /// The client lane to send it on: its line's (h1), or the one asked for (h2).
    lane: usize,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission")
            .field("multiplexed", &self.multiplexed())
            .field("lane", &self.lane)
            .finish()
    }
}

impl Admission {
    /// Whether the host is known to speak h2 (so the request holds no h1 slot).
    pub fn multiplexed(&self) -> bool {
        self.slot.is_none()
    }

    /// Whether the request will go out over HTTP/1.1: it holds an h1 slot and the host has
    /// answered over HTTP/1.1 before (until then the first connection's ALPN is unknown).
    pub fn http1_known(&self) -> bool {
        self.slot.is_some() && self.host.http1_seen.load(Ordering::Relaxed)
    }

    /// The client lane to send the request on: the lane of the line whose slot it holds, or
    /// (h2, no slot) the lane it asked for.
    pub(crate) fn lane(&self) -> usize {
        self.lane
    }

    /// The response came back over `version`: an h2 host is not held to h1 slots from now on,
    /// on any line; a request admitted without a slot (the host had answered over h2) and
    /// answered over HTTP/1.1 gives every line fresh slots: the host's requests are held to the
    /// cap again.
    pub fn answered(&self, version: http::Version) {
        if version == http::Version::HTTP_2 {
            for line in &self.host.lines {
                line.slots.load().close();
            }
            return;
        }
        if version != http::Version::HTTP_11 {
            return;
        }
        if self.slot.is_none() {
            for line in &self.host.lines {
                // Only a closed one is replaced: two such answers at once open one set.
                line.slots.rcu(|slots| {
                    if slots.is_closed() {
                        Arc::new(Semaphore::new(line.connections))
                    } else {
                        Arc::clone(slots)
                    }
                });
            }
        }
        if !self.host.http1_seen.load(Ordering::Relaxed) {
            // Read before writing: the flag's cache line stays shared between the workers.
            self.host.http1_seen.store(true, Ordering::Relaxed);
        }
    }
}

/// Every host's gate of one client (one snapshot). Cheap to share.
pub(crate) struct PoolGate {
    settings: UpstreamPool,
    /// Each line's share of `settings`.
    shares: Box<[LineShare]>,
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
            .field("lines", &self.shares.len())
            .field("hosts", &self.hosts.load().len())
            .finish()
    }
}

impl PoolGate {
    /// A gate with `settings` split over `lanes` lines (see [`line_shares`]), counting waiters
    /// and refusals in `metrics` when given.
    pub(crate) fn new(
        settings: UpstreamPool,
        lanes: usize,
        metrics: Option<Arc<PoolMetrics>>,
    ) -> Self {
        Self {
            settings,
            shares: line_shares(&settings, lanes).into(),
            hosts: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
            metrics,
        }
    }

    /// The bounds this gate applies (the configured totals).
    pub(crate) fn settings(&self) -> &UpstreamPool {
        &self.settings
    }

    /// How many lines the bounds are split over.
    pub(crate) fn lines(&self) -> usize {
        self.shares.len()
    }

    /// Admits one request for client lane `lane` to `authority` on that lane's line (`lane`
    /// modulo the lines), waiting at most `wait_timeout` (and at most `at_most`, the caller's
    /// remaining request time) for a free slot of that line.
    pub(crate) async fn admit(
        &self,
        authority: &str,
        lane: usize,
        at_most: Duration,
    ) -> Result<Admission, PoolBusy> {
        let line = lane % self.shares.len();
        let share = self.shares[line];
        let host = self.host(authority);
        let slots = host.lines[line].slots.load();
        // A closed line (the host speaks h2) is seen without taking a reference count.
        let acquired = if slots.is_closed() {
            Err(TryAcquireError::Closed)
        } else {
            Arc::clone(&slots).try_acquire_owned()
        };
        match acquired {
            Ok(slot) => {
                drop(slots);
                return Ok(Admission {
                    slot: Some(slot),
                    host,
                    lane: line,
                });
            }
            Err(TryAcquireError::Closed) => {
                drop(slots);
                return Ok(Admission {
                    slot: None,
                    host,
                    lane,
                });
            }
            Err(TryAcquireError::NoPermits) => {}
        }
        let cap = share.connections;
        let of = (self.shares.len() > 1).then_some(self.settings.max_connections_per_host);
        let queue = Waiting::join(&host.lines[line]);
        if queue.ahead >= share.waiting {
            return Err(self.refuse(PoolBusy::WaitersFull {
                authority: authority.to_owned(),
                cap,
                of,
                waiting: queue.ahead,
            }));
        }
        let _counted = self.metrics.as_ref().map(|m| m.waiter());
        let wait = self.settings.wait_timeout.min(at_most);
        // Owned: the wait must not hold an `ArcSwap` guard across an await.
        let owned = Arc::clone(&*slots);
        drop(slots);
        let slot = tokio::time::timeout(wait, owned.acquire_owned()).await;
        drop(queue);
        match slot {
            Ok(Ok(slot)) => Ok(Admission {
                slot: Some(slot),
                host,
                lane: line,
            }),
            // Closed while waiting: the host answered over h2, no slot needed.
            Ok(Err(_closed)) => Ok(Admission {
                slot: None,
                host,
                lane,
            }),
            Err(_elapsed) => Err(self.refuse(PoolBusy::WaitExpired {
                authority: authority.to_owned(),
                cap,
                of,
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
        let _writer = lock_unpoisoned(&self.insert);
        let current = self.hosts.load_full();
        if let Some(host) = current.get(authority) {
            return Arc::clone(host);
        }
        let mut hosts = HashMap::clone(&current);
        if hosts.len() >= MAX_TRACKED_HOSTS {
            // A wildcard route can reach many hosts: forget the ones nobody uses now.
            hosts.retain(|_, host| host.in_use());
        }
        let host = Arc::new(HostGate {
            lines: self
                .shares
                .iter()
                .map(|share| Line {
                    slots: ArcSwap::from_pointee(Semaphore::new(share.connections)),
                    connections: share.connections,
                    waiting: AtomicUsize::new(0),
                })
                .collect(),
            http1_seen: AtomicBool::new(false),
        });
        hosts.insert(authority.into(), Arc::clone(&host));
        self.hosts.store(Arc::new(hosts));
        host
    }
}

/// A place in a line's waiting line, left on drop (also when the caller goes away).
struct Waiting<'a> {
    line: &'a Line,
    /// Callers that were waiting on the line when this one joined.
    ahead: usize,
}

impl<'a> Waiting<'a> {
    fn join(line: &'a Line) -> Self {
        let ahead = line.waiting.fetch_add(1, Ordering::AcqRel);
        Self { line, ahead }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.line.waiting.fetch_sub(1, Ordering::AcqRel);
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
            1,
            None,
        ))
    }

    #[tokio::test]
    async fn a_full_line_is_refused_at_once_and_a_long_wait_expires() {
        let g = gate(1, 1, Duration::from_millis(200));
        let held = g.admit("up:443", 0, Duration::from_secs(60)).await.unwrap();
        assert!(!held.multiplexed());
        let waiter = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.admit("up:443", 0, Duration::from_secs(60)).await })
        };
        // Let the waiter join the line.
        while g.host("up:443").lines[0].waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let err = g
            .admit("up:443", 0, Duration::from_secs(60))
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
        g.admit("other:443", 0, Duration::from_secs(60))
            .await
            .unwrap();
        drop(held);
        g.admit("up:443", 0, Duration::from_secs(60)).await.unwrap();
    }

    /// An upstream redeployed without h2: a request let through without a slot (the host had
    /// answered over h2) comes back over HTTP/1.1, and the host is held to its cap again.
    #[tokio::test]
    async fn a_host_that_drops_h2_is_held_to_its_slots_again() {
        let g = gate(2, 0, Duration::from_secs(30));
        let at_most = Duration::from_secs(60);
        let first = g.admit("up", 0, at_most).await.unwrap();
        first.answered(http::Version::HTTP_2);
        let through = g.admit("up", 0, at_most).await.unwrap();
        assert!(through.multiplexed(), "an h2 host holds no slot");
        through.answered(http::Version::HTTP_11);
        drop((first, through));
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(g.admit("up", 0, at_most).await.unwrap());
        }
        assert!(
            held.iter().all(|a| !a.multiplexed()),
            "fresh slots are taken"
        );
        assert!(held.iter().all(Admission::http1_known));
        let err = g.admit("up", 0, at_most).await.unwrap_err();
        assert!(
            matches!(err, PoolBusy::WaitersFull { cap: 2, .. }),
            "the third request is held to the cap of 2: {err}"
        );
        // And an h2 answer lets everyone through again.
        held[0].answered(http::Version::HTTP_2);
        assert!(g.admit("up", 0, at_most).await.unwrap().multiplexed());
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_waiter_and_h2_lets_everyone_through() {
        let g = gate(1, 10, Duration::from_secs(30));
        let held = g.admit("up", 0, Duration::from_secs(60)).await.unwrap();
        let waiter = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.admit("up", 0, Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        drop(held);
        let second = waiter.await.unwrap().unwrap();
        assert!(!second.multiplexed());
        let third = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.admit("up", 0, Duration::from_secs(60)).await })
        };
        tokio::task::yield_now().await;
        second.answered(http::Version::HTTP_2);
        assert!(third.await.unwrap().unwrap().multiplexed());
        assert!(
            g.admit("up", 0, Duration::from_secs(60))
                .await
                .unwrap()
                .multiplexed()
        );
    }

    #[tokio::test]
    async fn the_wait_never_outlasts_the_callers_request_time() {
        let g = gate(1, 10, Duration::from_secs(30));
        let _held = g.admit("up", 0, Duration::from_secs(60)).await.unwrap();
        let started = Instant::now();
        let err = g
            .admit("up", 0, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, PoolBusy::WaitExpired { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn hosts_are_pruned_past_the_tracking_bound() {
        let g = gate(1, 0, Duration::from_secs(1));
        let kept = g.admit("kept", 0, Duration::from_secs(1)).await.unwrap();
        for i in 0..MAX_TRACKED_HOSTS + 10 {
            drop(
                g.admit(&format!("h{i}"), 0, Duration::from_secs(1))
                    .await
                    .unwrap(),
            );
        }
        let hosts = g.hosts.load();
        assert!(hosts.len() <= MAX_TRACKED_HOSTS, "{}", hosts.len());
        assert!(hosts.contains_key("kept"), "a host in use is kept");
        drop(kept);
    }

    fn pool(max_connections_per_host: usize, max_waiting: usize) -> UpstreamPool {
        UpstreamPool {
            max_connections_per_host,
            max_waiting,
            wait_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_configured_totals_are_split_over_the_lines_and_sum_to_them() {
        let share = |connections, waiting| LineShare {
            connections,
            waiting,
        };
        // The defaults on two workers.
        assert_eq!(
            line_shares(&pool(128, 1024), 2),
            [share(64, 512), share(64, 512)]
        );
        // A remainder goes to the first lines; a small waiting line splits to 0 on some.
        assert_eq!(line_shares(&pool(5, 1), 2), [share(3, 1), share(2, 0)]);
        assert_eq!(
            line_shares(&pool(7, 0), 3),
            [share(3, 0), share(2, 0), share(2, 0)]
        );
        // Never more lines than connections, never none.
        assert_eq!(line_shares(&pool(1, 10), 4), [share(1, 10)]);
        assert_eq!(line_shares(&pool(3, 10), 0), [share(3, 10)]);
        for lanes in 1..=8 {
            for cap in [1, 2, 3, 7, 64, 128, 10_000] {
                for waiting in [0, 1, 5, 1024] {
                    let shares = line_shares(&pool(cap, waiting), lanes);
                    assert_eq!(shares.len(), lanes.min(cap));
                    assert!(shares.iter().all(|s| s.connections >= 1));
                    assert_eq!(shares.iter().map(|s| s.connections).sum::<usize>(), cap);
                    assert_eq!(shares.iter().map(|s| s.waiting).sum::<usize>(), waiting);
                }
            }
        }
    }

    #[tokio::test]
    async fn each_line_has_its_own_slots_and_waiting_line() {
        let g = Arc::new(PoolGate::new(pool(2, 2), 2, None));
        assert_eq!(g.lines(), 2);
        let held = g.admit("up", 0, Duration::from_secs(60)).await.unwrap();
        assert_eq!(held.lane(), 0);
        let waiter = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.admit("up", 2, Duration::from_secs(60)).await })
        };
        while g.host("up").lines[0].waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Line 0 is full (its one slot held, its one place taken): refused at once, and the
        // cause says the numbers are this worker's share.
        let err = g.admit("up", 0, Duration::from_secs(60)).await.unwrap_err();
        assert!(
            matches!(
                err,
                PoolBusy::WaitersFull {
                    cap: 1,
                    of: Some(2),
                    waiting: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "all 1 upstream connections to up (this worker's share of 2) are busy and 1 \
             callers already wait for one"
        );
        // Line 1 has its own slot: admitted at once.
        let other = g.admit("up", 1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(other.lane(), 1);
        assert!(!other.multiplexed());
        // The freed slot of line 0 goes to line 0's waiter.
        drop(held);
        let second = waiter.await.unwrap().unwrap();
        assert_eq!(second.lane(), 0);
        // An h2 answer on one line lets every line through.
        second.answered(http::Version::HTTP_2);
        let h2 = g.admit("up", 1, Duration::from_secs(60)).await.unwrap();
        assert!(h2.multiplexed());
        assert_eq!(h2.lane(), 1);
        assert!(
            g.admit("up", 0, Duration::from_secs(60))
                .await
                .unwrap()
                .multiplexed()
        );
        drop(other);
    }

    #[tokio::test]
    async fn one_line_says_nothing_of_shares() {
        let g = gate(1, 0, Duration::from_secs(1));
        let _held = g.admit("up", 5, Duration::from_secs(60)).await.unwrap();
        let err = g.admit("up", 3, Duration::from_secs(60)).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "all 1 upstream connections to up are busy and 0 callers already wait for one"
        );
    }
}
