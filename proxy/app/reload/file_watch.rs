//! Noticing that the config file changed, by polling its content (no inotify: it misses the
//! symlink swaps Kubernetes ConfigMaps use, and polling one small file costs nothing).

use std::path::PathBuf;
use std::time::Duration;

use aws_lc_rs::digest;
use zeroize::Zeroizing;

use crate::certs::bounded_read::{BoundedReadError, read_bounded, read_bounded_async};
use crate::config::load::MAX_CONFIG_BYTES;

/// How often the config file is compared: quick enough that an edit applies within seconds;
/// reading a file of at most 1 MiB every two seconds is negligible.
pub(crate) const CONFIG_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How long a changed file must stay unchanged before it is reloaded: an editor's write-rename
/// burst (or a ConfigMap's symlink swap) finishes well within it, so the burst is one reload.
pub(crate) const CONFIG_SETTLE_DELAY: Duration = Duration::from_millis(500);

/// The config file's content as last seen.
#[derive(Debug)]
pub(crate) struct ConfigWatch {
    path: PathBuf,
    poll: Duration,
    settle: Duration,
    /// SHA-256 of the content last reloaded (or seen at start); `None` when unreadable then.
    seen: Option<Vec<u8>>,
}

impl ConfigWatch {
    /// Watches `path`, taking its current content as seen.
    pub(crate) fn new(path: PathBuf) -> Self {
        Self::with_timing(path, CONFIG_POLL_INTERVAL, CONFIG_SETTLE_DELAY)
    }

    /// Like [`ConfigWatch::new`] with other poll and settle intervals (tests use short ones).
    pub(crate) fn with_timing(path: PathBuf, poll: Duration, settle: Duration) -> Self {
        let seen = fingerprint_blocking(&path);
        Self {
            path,
            poll,
            settle,
            seen,
        }
    }

    /// Takes the file's current content as seen (called before each reload).
    pub(crate) async fn remember_current(&mut self) {
        if let Some(now) = fingerprint(&self.path).await {
            self.seen = Some(now);
        }
    }

    /// Resolves once the file holds new content that stayed the same for
    /// the settle delay ([`CONFIG_SETTLE_DELAY`]). An unreadable file (mid-rename, deleted) is not a change.
    pub(crate) async fn changed(&mut self) {
        loop {
            tokio::time::sleep(self.poll).await;
            let Some(now) = fingerprint(&self.path).await else {
                continue;
            };
            if self.seen.as_ref() == Some(&now) {
                continue;
            }
            tokio::time::sleep(self.settle).await;
            if fingerprint(&self.path).await.as_ref() == Some(&now) {
                self.seen = Some(now);
                return;
            }
        }
    }
}

/// SHA-256 of the file; an empty fingerprint (never a SHA-256) for a file over
/// `MAX_CONFIG_BYTES`, which the loader then refuses by name; `None` when it cannot be read.
async fn fingerprint(path: &std::path::Path) -> Option<Vec<u8>> {
    fingerprint_of(read_bounded_async(path.to_owned(), MAX_CONFIG_BYTES).await)
}

fn fingerprint_blocking(path: &std::path::Path) -> Option<Vec<u8>> {
    fingerprint_of(read_bounded(path, MAX_CONFIG_BYTES))
}

fn fingerprint_of(read: Result<Zeroizing<Vec<u8>>, BoundedReadError>) -> Option<Vec<u8>> {
    match read {
        Ok(bytes) => Some(digest::digest(&digest::SHA256, &bytes).as_ref().to_vec()),
        Err(BoundedReadError::TooLarge { .. }) => Some(Vec::new()),
        Err(BoundedReadError::Io(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short intervals so the tests run quickly in real time.
    const POLL: Duration = Duration::from_millis(10);
    const SETTLE: Duration = Duration::from_millis(5);
    /// Bound on noticing a change (many polls).
    const NOTICE_BOUND: Duration = Duration::from_secs(30);
    /// Polls given to a non-change before concluding it was ignored.
    const QUIET_POLLS: u32 = 20;

    fn watch(path: &std::path::Path) -> ConfigWatch {
        ConfigWatch::with_timing(path.to_path_buf(), POLL, SETTLE)
    }

    #[tokio::test]
    async fn a_change_is_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.yaml");
        std::fs::write(&path, "a").unwrap();
        let mut watch = watch(&path);
        std::fs::write(&path, "b").unwrap();
        tokio::time::timeout(NOTICE_BOUND, watch.changed())
            .await
            .expect("the change is seen");
        let again = tokio::time::timeout(POLL * QUIET_POLLS, watch.changed()).await;
        assert!(again.is_err(), "an unchanged file was reported again");
    }

    #[tokio::test]
    async fn a_missing_file_is_not_a_change_and_remembered_content_is_not_either() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.yaml");
        std::fs::write(&path, "a").unwrap();
        let mut watch = watch(&path);
        std::fs::remove_file(&path).unwrap();
        let missing = tokio::time::timeout(POLL * QUIET_POLLS, watch.changed()).await;
        assert!(missing.is_err(), "a missing file was reported as a change");
        std::fs::write(&path, "b").unwrap();
        watch.remember_current().await;
        let absorbed = tokio::time::timeout(POLL * QUIET_POLLS, watch.changed()).await;
        assert!(absorbed.is_err(), "remembered content was reported");
        // The same content as before the file vanished is still new relative to "b".
        std::fs::write(&path, "a").unwrap();
        tokio::time::timeout(NOTICE_BOUND, watch.changed())
            .await
            .expect("the change is seen");
    }
}
