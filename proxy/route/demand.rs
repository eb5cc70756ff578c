//! What the data plane asks of a route's driver ([`Demand`]), kept in the route's slot as a few
//! atomics and one `Notify`. A `watch` channel did the same with an allocation of ~380 B per
//! route (its shared state wakes through eight `Notify`s), which 1,000 routes paid for nothing:
//! a slot has one reader, its driver, and the demand changes a handful of times in its life.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// What the data plane asks of a route's driver. Only ever grows: `started` and `stopped` turn
/// true once, `invalidated` and `retry` only increase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    /// A request arrived (starts a lazy route).
    pub started: bool,
    /// The upstream refused the token of this snapshot generation (`401 invalid_token`).
    pub invalidated: Option<u64>,
    /// Bumped by a config reload that keeps the route: a failing route retries at once instead
    /// of waiting out its backoff (a reload is how an operator says "it is fixed now").
    pub retry: u64,
    /// The route is retired: its driver stops.
    pub stopped: bool,
}

/// A slot's demand. Writers change a field, then tell the reader with `notify_one`, which keeps
/// a permit when the reader is not waiting: a change made between the reader's look and its
/// wait still wakes it. The `Notify` orders the fields' writes before the reader's next look,
/// so the fields themselves need no ordering of their own.
#[derive(Debug, Default)]
pub struct DemandCell {
    started: AtomicBool,
    /// The highest refused generation plus one; 0: none.
    invalidated: AtomicU64,
    retry: AtomicU64,
    stopped: AtomicBool,
    /// Live [`DemandReader`]s: a driver watches the slot.
    readers: AtomicUsize,
    changed: Notify,
}

impl DemandCell {
    fn now(&self) -> Demand {
        let invalidated = self.invalidated.load(Ordering::Relaxed);
        Demand {
            started: self.started.load(Ordering::Relaxed),
            invalidated: invalidated.checked_sub(1),
            retry: self.retry.load(Ordering::Relaxed),
            stopped: self.stopped.load(Ordering::Relaxed),
        }
    }

    /// Whether a [`DemandReader`] (a driver) watches the cell.
    pub(crate) fn has_reader(&self) -> bool {
        self.readers.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn start(&self) {
        if !self.started.swap(true, Ordering::Relaxed) {
            self.changed.notify_one();
        }
    }

    pub(crate) fn retry(&self) {
        self.retry.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_one();
    }

    pub(crate) fn stop(&self) {
        if !self.stopped.swap(true, Ordering::Relaxed) {
            self.changed.notify_one();
        }
    }

    pub(crate) fn invalidate(&self, generation: u64) {
        let stored = generation.saturating_add(1);
        if self.invalidated.fetch_max(stored, Ordering::Relaxed) < stored {
            self.changed.notify_one();
        }
    }
}

impl AsRef<DemandCell> for DemandCell {
    fn as_ref(&self) -> &DemandCell {
        self
    }
}

/// The driver's view of the demand kept in `S` (a route's slot). One per cell: a change wakes
/// one waiter.
#[derive(Debug)]
pub struct DemandReader<S: AsRef<DemandCell>> {
    owner: Arc<S>,
}

impl<S: AsRef<DemandCell>> DemandReader<S> {
    pub(crate) fn new(owner: Arc<S>) -> Self {
        (*owner).as_ref().readers.fetch_add(1, Ordering::Relaxed);
        Self { owner }
    }

    fn cell(&self) -> &DemandCell {
        (*self.owner).as_ref()
    }

    /// The demand as it is now.
    pub fn now(&self) -> Demand {
        self.cell().now()
    }

    /// Resolves once the demand may have changed since the last wake-up (at once if a change
    /// came while nobody waited); look with [`DemandReader::now`] after.
    pub async fn changed(&self) {
        self.cell().changed.notified().await;
    }

    /// Resolves once the route is retired ([`Demand::stopped`]).
    pub async fn stopped(&self) {
        while !self.now().stopped {
            self.changed().await;
        }
    }
}

impl<S: AsRef<DemandCell>> Drop for DemandReader<S> {
    fn drop(&mut self) {
        self.cell().readers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const BOUND: Duration = Duration::from_secs(10);

    fn reader(cell: &Arc<DemandCell>) -> DemandReader<DemandCell> {
        DemandReader::new(Arc::clone(cell))
    }

    #[tokio::test]
    async fn demand_only_grows_and_a_change_made_before_the_wait_still_wakes_it() {
        let cell = Arc::new(DemandCell::default());
        assert!(!cell.has_reader());
        let demand = reader(&cell);
        assert!(cell.has_reader());
        cell.start();
        cell.start();
        cell.invalidate(3);
        cell.invalidate(2);
        // The changes came while nobody waited: the wait ends at once.
        tokio::time::timeout(BOUND, demand.changed())
            .await
            .expect("a change made before the wait wakes it");
        assert_eq!(
            demand.now(),
            Demand {
                started: true,
                invalidated: Some(3),
                retry: 0,
                stopped: false,
            }
        );
        // Nothing new: a repeated start or an older generation is not a change.
        cell.start();
        cell.invalidate(1);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), demand.changed())
                .await
                .is_err(),
            "woken without a change"
        );
        // Generation 0 is a generation, not "none".
        let fresh = Arc::new(DemandCell::default());
        fresh.invalidate(0);
        assert_eq!(reader(&fresh).now().invalidated, Some(0));

        cell.retry();
        assert_eq!(demand.now().retry, 1);
        drop(demand);
        assert!(!cell.has_reader());
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_stop_and_not_before() {
        let cell = Arc::new(DemandCell::default());
        let demand = reader(&cell);
        let (waiting, started) = tokio::sync::oneshot::channel();
        let waiter = tokio::spawn(async move {
            let _ = waiting.send(());
            demand.stopped().await;
        });
        let _ = tokio::time::timeout(BOUND, started).await;
        cell.retry();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a retry is not a stop");
        cell.stop();
        tokio::time::timeout(BOUND, waiter)
            .await
            .expect("the stop woke the reader")
            .unwrap();
    }
}
