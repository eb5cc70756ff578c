//! What the driver task waits on, as futures `select!` can poll: a wall-clock time, a
//! certificate change (the route's demand waits on its own: `route::demand`).

use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// Sleeps until `at` (wall clock), or forever when `None`.
pub(super) async fn sleep_until(at: Option<SystemTime>) {
    match at {
        Some(at) => {
            let wait = at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves when the binding changes; `false` when the credential dropped its sender (then the
/// caller stops watching, instead of spinning on a closed channel).
pub(super) async fn binding_changed(rx: Option<&mut watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
