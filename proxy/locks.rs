//! Mutexes that outlive a panic. Each of popgate's `std::sync::Mutex`es guards plain values that
//! its holders leave whole between statements (a map, a list, a slot), so a holder that panics
//! (poisoning the lock) must not take every later user of the lock down with it: they take the
//! guard anyway. Each call site says why its value is whole.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// `mutex`'s guard, whether or not an earlier holder panicked while holding it.
pub(crate) fn lock_unpoisoned<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
