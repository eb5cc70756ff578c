//! The stop signals: SIGTERM (Kubernetes' stop signal) and SIGINT (Ctrl-C) both ask for a
//! graceful drain (see `App::shutdown`).

/// Which signal asked popgate to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM.
    Terminate,
    /// SIGINT.
    Interrupt,
}

impl StopSignal {
    /// The signal's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT and logs which. Both handlers are installed when this
/// is first polled; if SIGTERM cannot be handled a warning says so and only SIGINT stops popgate.
pub async fn stop_requested() -> StopSignal {
    use tokio::signal::unix::{SignalKind, signal};
    let which = match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => StopSignal::Terminate,
                _ = tokio::signal::ctrl_c() => StopSignal::Interrupt,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops popgate");
            // An error here means no signal can be watched at all: then wait forever rather than
            // stop at once (the process can still be killed).
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "cannot watch SIGINT either");
                std::future::pending::<()>().await;
            }
            StopSignal::Interrupt
        }
    };
    tracing::info!(signal = which.name(), "shutdown requested");
    which
}
