//! A certificate app's binding certificate, re-read when its files change. Kubernetes secret
//! updates swap a symlink; polling the contents catches that and any in-place rewrite alike.

use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use aws_lc_rs::digest;
use tokio::sync::watch;

use crate::certs::binding::BindingCert;
use crate::certs::bounded_read::{BoundedReadError, read_bounded_async};
use crate::certs::cert_files::MAX_PEM_FILE_BYTES;
use crate::certs::pkcs12::MAX_PKCS12_FILE_BYTES;
use crate::config::model::CertificateFiles;
use crate::net::token_transport::Transport;

/// How often the files are compared by default: kubelet propagates secret updates within about a
/// minute, and a read of two small files every ten seconds costs nothing.
pub(crate) const DEFAULT_CERT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// The files to watch: a PEM pair or a PKCS#12 file (with the password captured at config load).
pub(crate) type WatchedFiles = CertificateFiles;

/// The current binding certificate and a counter that moves whenever it is replaced.
#[derive(Debug)]
pub(crate) struct WatchedCert {
    current: ArcSwap<BindingCert>,
    changes: watch::Sender<u64>,
}

impl WatchedCert {
    /// A certificate that never changes (no files to watch).
    pub(crate) fn fixed(cert: BindingCert) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(cert),
            changes: watch::channel(0).0,
        })
    }

    /// A certificate re-read from `files` every `interval` (needs a Tokio runtime). The polling
    /// task ends when the last `Arc` is dropped. A replaced certificate's keep-alive client is
    /// retired from `transport`.
    pub(crate) fn watch(
        cert: BindingCert,
        files: WatchedFiles,
        interval: Duration,
        transport: Arc<Transport>,
    ) -> Arc<Self> {
        let this = Self::fixed(cert);
        let weak = Arc::downgrade(&this);
        tokio::spawn(poll(weak, files, interval, transport));
        this
    }

    /// The certificate to present now.
    pub(crate) fn current(&self) -> Arc<BindingCert> {
        self.current.load_full()
    }

    /// Changes whenever the certificate is replaced.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Installs `cert` if it differs from the current one (by x5t#S256); returns the replaced
    /// certificate when it did.
    pub(crate) fn replace(&self, cert: BindingCert) -> Option<Arc<BindingCert>> {
        if cert.x5t_s256() == self.current.load().x5t_s256() {
            return None;
        }
        let old = self.current.swap(Arc::new(cert));
        self.changes.send_modify(|n| *n += 1);
        Some(old)
    }
}

/// Largest file the watcher hashes; anything bigger is left to the loader to report by name.
const MAX_WATCHED_FILE_BYTES: u64 = if MAX_PEM_FILE_BYTES > MAX_PKCS12_FILE_BYTES {
    MAX_PEM_FILE_BYTES
} else {
    MAX_PKCS12_FILE_BYTES
};

/// A digest of the watched files' contents, or `None` when one cannot be read (mid-swap).
async fn fingerprint(files: &WatchedFiles) -> Option<Vec<u8>> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for path in files.paths() {
        let bytes = match read_bounded_async(path.to_owned(), MAX_WATCHED_FILE_BYTES).await {
            Ok(bytes) => bytes,
            // Let the loader report the size problem with the file name.
            Err(BoundedReadError::TooLarge { .. }) => return Some(Vec::new()),
            Err(BoundedReadError::Io(_)) => return None,
        };
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(&bytes);
    }
    Some(ctx.finish().as_ref().to_vec())
}

async fn poll(
    weak: Weak<WatchedCert>,
    files: WatchedFiles,
    interval: Duration,
    transport: Arc<Transport>,
) {
    let mut last = fingerprint(&files).await;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let Some(watched) = weak.upgrade() else {
            return;
        };
        let now = fingerprint(&files).await;
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        let to_load = files.clone();
        let loaded = tokio::task::spawn_blocking(move || to_load.load()).await;
        match loaded {
            Ok(Ok(cert)) => {
                let x5t = cert.x5t_s256().to_string();
                if let Some(old) = watched.replace(cert) {
                    transport.retire(old.x5t_s256());
                    tracing::info!(
                        files = %display_paths(&files),
                        x5t_s256 = %x5t,
                        "certificate file changed: new binding certificate"
                    );
                }
            }
            Ok(Err(error)) => {
                // Often a half-finished update (certificate written, key not yet): the next change
                // of either file is tried again; meanwhile the old certificate stays in use.
                tracing::warn!(
                    files = %display_paths(&files),
                    error = %error,
                    "changed certificate files cannot be loaded; keeping the current certificate"
                );
            }
            Err(join) => {
                tracing::error!(error = %join, "certificate reload task failed");
            }
        }
    }
}

/// The watched paths, comma-separated, for logs (never the PKCS#12 password).
fn display_paths(files: &WatchedFiles) -> String {
    let paths: Vec<String> = files
        .paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    paths.join(", ")
}
