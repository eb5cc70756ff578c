//! Hot reload: on SIGHUP or a change of the config file, load and validate the file again, then
//! apply it with [`App::reload`]. A file that does not load leaves the running config in place;
//! every problem is logged as `FILE:LINE:COL: message`.

mod file_watch;

use std::path::{Path, PathBuf};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::app::App;

pub(crate) use file_watch::ConfigWatch;

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// SIGHUP.
    Hangup,
    /// The config file's content changed (and then held still for [`CONFIG_SETTLE_DELAY`]).
    FileChanged,
}

impl Trigger {
    /// For logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Trigger::Hangup => "SIGHUP",
            Trigger::FileChanged => "file_changed",
        }
    }
}

/// The reload triggers of one config file.
#[derive(Debug)]
pub(crate) struct Triggers {
    hangup: Option<Signal>,
    watch: ConfigWatch,
}

impl Triggers {
    /// Starts handling SIGHUP (from now on it no longer terminates the process) and remembers the
    /// config file's current content. When SIGHUP cannot be handled, a warning is logged and only
    /// file changes trigger reloads.
    pub(crate) fn new(config: &Path) -> Self {
        let hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; only config file changes reload");
                None
            }
        };
        Self {
            hangup,
            watch: ConfigWatch::new(config.to_path_buf()),
        }
    }

    /// Waits for the next trigger. Cancel-safe: dropping the future loses no SIGHUP.
    pub(crate) async fn next(&mut self) -> Trigger {
        tokio::select! {
            received = recv(&mut self.hangup) => {
                if received {
                    Trigger::Hangup
                } else {
                    // The signal stream ended (cannot happen with a live runtime): stop polling it.
                    self.hangup = None;
                    self.watch.changed().await;
                    Trigger::FileChanged
                }
            }
            () = self.watch.changed() => Trigger::FileChanged,
        }
    }
}

/// `true` on a signal, `false` when the stream ended; pending forever without a stream.
async fn recv(hangup: &mut Option<Signal>) -> bool {
    match hangup {
        Some(s) => s.recv().await.is_some(),
        None => std::future::pending().await,
    }
}

/// Loads the config file again and applies it to `app`, logging the outcome. Never fails: a bad
/// file or a config that cannot be applied keeps the running one.
pub(crate) async fn reload(app: &mut App, trigger: Trigger, triggers: &mut Triggers) {
    let path: PathBuf = app.config().source.clone();
    // Remembered before reading, so a write landing after the read is seen as a new change.
    triggers.watch.remember_current().await;
    tracing::info!(trigger = trigger.name(), config = %path.display(), "reloading config");
    let load_path = path.clone();
    let loaded = tokio::task::spawn_blocking(move || crate::config::load(&load_path)).await;
    let config = match loaded {
        Ok(Ok(config)) => config,
        Ok(Err(errors)) => {
            for e in errors.errors() {
                tracing::error!(
                    trigger = trigger.name(),
                    file = %e.file.display(),
                    line = e.line,
                    col = e.col,
                    error = %e,
                    "config reload refused; the running config stays"
                );
            }
            crate::metrics::config_reloads(false);
            return;
        }
        Err(e) => {
            tracing::error!(trigger = trigger.name(), error = %e, "config reload did not finish; the running config stays");
            crate::metrics::config_reloads(false);
            return;
        }
    };
    match app.reload(config).await {
        Ok(summary) => {
            if !summary.needs_restart.is_empty() {
                tracing::warn!(
                    keys = ?summary.needs_restart,
                    "these settings changed but only take effect on restart; the running ones stay"
                );
            }
            tracing::info!(
                trigger = trigger.name(),
                kept = ?summary.kept,
                added = ?summary.added,
                changed = ?summary.changed,
                removed = ?summary.removed,
                not_ready = ?summary.not_ready,
                "config reloaded"
            );
            crate::metrics::config_reloads(true);
        }
        Err(e) => {
            tracing::error!(trigger = trigger.name(), error = %e, "config reload refused; the running config stays");
            crate::metrics::config_reloads(false);
        }
    }
}
