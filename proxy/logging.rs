//! Log output: JSON or human-readable `tracing` events, a `RUST_LOG`-style filter, and the
//! optional access log (one event per request on target [`ACCESS_TARGET`]), the filter reloadable
//! at run time ([`set_filter`]), and optional OpenTelemetry trace export ([`traces`]).

mod otlp_client;
pub mod trace_context;
pub mod traces;

use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, reload};

/// The env variable holding the filter when `--log-level` is not given (then `RUST_LOG`).
pub const LOG_ENV: &str = "POPGATE_LOG";

/// The filter when neither the flag nor an env variable sets one.
pub const DEFAULT_FILTER: &str = "info";

/// The `tracing` target of access-log events, so they can be filtered on their own.
pub const ACCESS_TARGET: &str = "popgate::access";

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for collectors).
    Json,
    /// Human-readable lines (for terminals).
    Human,
}

impl LogFormat {
    /// Human on a terminal, JSON otherwise (a pipe or a file is read by a collector).
    pub fn detect() -> Self {
        if std::io::stdout().is_terminal() {
            LogFormat::Human
        } else {
            LogFormat::Json
        }
    }
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter does not parse.
    #[error("{source_name}: invalid log filter `{filter}`: {reason}")]
    BadFilter {
        /// Where the filter came from (`--log-level`, `POPGATE_LOG`, `RUST_LOG`).
        source_name: &'static str,
        /// The filter as given.
        filter: String,
        /// The parser's complaint.
        reason: String,
    },
}

/// Picks the filter: `--log-level`, else `POPGATE_LOG`, else `RUST_LOG`, else `info`; `env` reads
/// a variable (the process environment in `main`). A filter that does not parse is an error
/// naming where it came from, not a silent fallback.
pub fn filter(
    flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<EnvFilter, LoggingError> {
    let (source_name, text) = match (flag, env(LOG_ENV), env("RUST_LOG")) {
        (Some(f), _, _) => ("--log-level", f.to_string()),
        (None, Some(f), _) => (LOG_ENV, f),
        (None, None, Some(f)) => ("RUST_LOG", f),
        (None, None, None) => ("default", DEFAULT_FILTER.to_string()),
    };
    EnvFilter::builder()
        .parse(&text)
        .map_err(|e| LoggingError::BadFilter {
            source_name,
            filter: text.clone(),
            reason: e.to_string(),
        })
}

/// Installs the process's subscriber. Does nothing if one is already installed.
pub fn init(format: LogFormat, filter: EnvFilter) {
    init_to(format, filter, Output::Stdout);
}

/// Where log lines go. `popgate dev` prints its table on stdout, so its logs go to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Standard output (`popgate run`).
    Stdout,
    /// Standard error (`popgate dev`, whose table is on stdout).
    Stderr,
}

/// [`init`] with the output stream chosen.
pub fn init_to(format: LogFormat, filter: EnvFilter, output: Output) {
    install(format, filter, output, None);
}

/// The handle that swaps the log lines' filter (set once, by the subscriber [`install`] set up).
static RELOAD: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the process's subscriber: log lines in `format` on `output`, kept by `filter`
/// (reloadable with [`set_filter`]), and spans to `traces` when export is on. The filter applies
/// to log lines only: spans are exported whatever the log level. JSON events are flat: their
/// fields beside `timestamp`, `level`, `target` and `message`, the current span's fields under
/// `span` and the enclosing spans under `spans`. Does nothing if a subscriber is already installed.
pub fn install(
    format: LogFormat,
    filter: EnvFilter,
    output: Output,
    traces: Option<&traces::TraceExport>,
) {
    let (filter, handle) = reload::Layer::new(filter);
    // Colour codes only where a terminal will interpret them.
    let (writer, ansi) = match output {
        Output::Stdout => (
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        ),
        Output::Stderr => (
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        ),
    };
    let lines = tracing_subscriber::fmt::layer().with_writer(writer);
    let lines = match format {
        LogFormat::Json => lines.json().flatten_event(true).with_filter(filter).boxed(),
        LogFormat::Human => lines.with_ansi(ansi).with_filter(filter).boxed(),
    };
    let mut layers = vec![lines];
    layers.extend(traces.map(traces::TraceExport::layer));
    // `try_init` fails only if a subscriber is already installed; the first one stays.
    if tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .is_ok()
    {
        let _ = RELOAD.set(handle);
    }
}

/// The longest filter [`set_filter`] takes: a directive list, not a document.
pub const MAX_FILTER_LEN: usize = 1024;

/// Why the filter could not be changed at run time.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The text is not a filter.
    #[error("invalid log filter: {0}")]
    BadFilter(String),
    /// This process's logging was not set up by [`install`] (popgate embedded as a library).
    #[error("the log filter is not reloadable in this process")]
    NotReloadable,
}

/// Replaces the log lines' filter with `text` (an `EnvFilter` directive list such as `debug` or
/// `info,popgate::dataplane=debug`); returns the filter now in force.
pub fn set_filter(text: &str) -> Result<String, ReloadError> {
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_FILTER_LEN {
        return Err(ReloadError::BadFilter(format!(
            "must be 1 to {MAX_FILTER_LEN} bytes"
        )));
    }
    let filter = EnvFilter::builder()
        .parse(text)
        .map_err(|e| ReloadError::BadFilter(e.to_string()))?;
    let handle = RELOAD.get().ok_or(ReloadError::NotReloadable)?;
    let now = filter.to_string();
    handle
        .reload(filter)
        .map_err(|_| ReloadError::NotReloadable)?;
    tracing::warn!(filter = %now, "log filter changed");
    Ok(now)
}

/// The log lines' filter in force, if popgate installed the subscriber.
pub fn current_filter() -> Option<String> {
    RELOAD.get()?.with_current(ToString::to_string).ok()
}

static ACCESS_LOG: AtomicBool = AtomicBool::new(false);

/// Turns the access log on or off (off by default).
pub fn set_access_log(on: bool) {
    ACCESS_LOG.store(on, Ordering::Relaxed);
}

/// Whether the access log is on.
pub fn access_log() -> bool {
    ACCESS_LOG.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_precedence_and_errors_name_their_source() {
        let none = |_: &str| None;
        assert!(filter(None, &none).is_ok());
        let both = |k: &str| Some(if k == LOG_ENV { "debug" } else { "warn" }.to_string());
        assert_eq!(filter(None, &both).unwrap().to_string(), "debug");
        assert_eq!(filter(Some("error"), &both).unwrap().to_string(), "error");
        let bad = |k: &str| (k == LOG_ENV).then(|| "popgate=notalevel".to_string());
        let e = filter(None, &bad).unwrap_err().to_string();
        assert!(
            e.starts_with("POPGATE_LOG: invalid log filter `popgate=notalevel`"),
            "{e}"
        );
        let e = filter(Some("=="), &none).unwrap_err().to_string();
        assert!(e.starts_with("--log-level:"), "{e}");
    }
}
