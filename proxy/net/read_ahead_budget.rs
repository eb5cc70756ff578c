//! The process-wide budget for request bodies read ahead (kept for the 401 replay).
//!
//! Why: each read-ahead may hold up to `MAX_REPLAY_BODY`; 1,024 connections x 100 HTTP/2 streams
//! each declaring 64 KiB would pin GiBs. A request reserves its share before reading ahead and
//! gives it back when its body (and any replay copy) is dropped; one that finds the budget spent
//! streams straight through without a replay, which costs it nothing but the retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::limits::MAX_READ_AHEAD_BUDGET;

/// Bytes reserved against a capacity.
#[derive(Debug)]
pub(crate) struct Budget {
    capacity: u64,
    used: AtomicU64,
}

/// The process's read-ahead budget.
static PROCESS: Budget = Budget::new(MAX_READ_AHEAD_BUDGET);

/// A reservation; dropping it gives the bytes back.
#[derive(Debug)]
pub struct Reservation {
    budget: &'static Budget,
    bytes: u64,
}

impl Budget {
    /// A budget of `capacity` bytes.
    pub(crate) const fn new(capacity: u64) -> Self {
        Self {
            capacity,
            used: AtomicU64::new(0),
        }
    }

    /// The process-wide read-ahead budget.
    pub(crate) fn process() -> &'static Budget {
        &PROCESS
    }

    /// Bytes reserved now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Reserves `bytes`, or `None` when that would pass the capacity.
    pub(crate) fn reserve(&'static self, bytes: u64) -> Option<Arc<Reservation>> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= self.capacity)
            })
            .ok()?;
        Some(Arc::new(Reservation {
            budget: self,
            bytes,
        }))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_capacity_and_come_back_on_drop() {
        static SMALL: Budget = Budget::new(100);
        let a = SMALL.reserve(60).expect("fits");
        assert!(SMALL.reserve(41).is_none(), "over the capacity");
        let b = SMALL.reserve(40).expect("fits exactly");
        assert_eq!(SMALL.used(), 100);
        drop(a);
        assert_eq!(SMALL.used(), 40);
        let shared = Arc::clone(&b);
        drop(b);
        assert_eq!(SMALL.used(), 40, "a clone keeps the reservation");
        drop(shared);
        assert_eq!(SMALL.used(), 0);
    }
}
