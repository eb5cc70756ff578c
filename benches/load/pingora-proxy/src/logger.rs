//! A warn-level logger to stderr. pingora logs through the `log` facade; with no logger installed it
//! would print nothing at all, and env_logger would be one more dependency for two lines of output.
//! There are no access logs: pingora writes none unless `ProxyHttp::logging` does, and ours does not.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

static LOGGER: Stderr = Stderr;

/// Warnings and errors only: anything chattier would cost CPU on the measured path.
const LEVEL: LevelFilter = LevelFilter::Warn;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Warn
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            eprintln!("{} {}: {}", record.level(), record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

pub fn init() {
    // Fails only if a logger is already set, which would then be the one in use: nothing to do.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LEVEL);
    }
}
