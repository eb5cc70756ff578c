//! Parking (issue 13): an idle HTTP/1 caller's connection leaves hyper, its buffers dropped, and
//! comes back with its next bytes. These tests count parked connections through popgate's
//! process-wide counter (`popgate_connections_parked_total`), so they live in a test binary of
//! their own and run one at a time ([`one_at_a_time`]): in a shared process another test's parked
//! connection would move the count, and a test could pass although its own connection stayed in
//! hyper.

#[path = "../kit/mod.rs"]
mod kit;

mod connection_parking;
mod tls_caller;
mod trickled_head;

use tokio::sync::{Mutex, MutexGuard};

/// Held by every test of this binary for its whole run (a test that panics releases it: tokio's
/// mutex is not poisoned).
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// Waits for the other tests of this binary to finish; hold the guard until the test ends.
pub(crate) async fn one_at_a_time() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}
