//! Semantic validation: turns the raw schema into a [`Config`], collecting every error with the
//! position of the node it is about.

mod allow;
mod flows;
mod identities;
mod intercept;
mod limits;
mod listeners;
mod network;
mod path_prefix;
mod proxy;
mod routes;
pub(crate) mod telemetry;
mod upstream_pool;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Location;

use super::error::{ConfigError, ConfigErrors};
use super::load::{EnvLookup, SourceEnvLookup};
use super::model::{Config, Drain, Timeouts};
use super::schema::{RawConfig, RawDrain, RawTimeouts, S};
use crate::identity::mi_source::MiSourceKind;

/// The only config version this build reads.
pub(crate) const SUPPORTED_VERSION: u64 = 1;

/// Validation state: where relative paths resolve, the environment, and the errors so far.
pub(crate) struct Ctx<'a> {
    file: &'a Path,
    dir: PathBuf,
    env: EnvLookup<'a>,
    /// Where a managed-identity source set by `source:` reads its variables (`popgate dev`
    /// points each at the local authority); `None`: `env`.
    source_env: Option<SourceEnvLookup<'a>>,
    errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    fn new(file: &'a Path, env: EnvLookup<'a>, source_env: Option<SourceEnvLookup<'a>>) -> Self {
        // A bare file name has an empty parent: paths then resolve against the working directory.
        let dir = file.parent().map(Path::to_owned).unwrap_or_default();
        Self {
            file,
            dir,
            env,
            source_env,
            errors: Vec::new(),
        }
    }

    /// A variable the managed-identity source `kind` (set by `source:`) reads, treating empty
    /// as unset: from the source environment when one was given, else the environment.
    pub(crate) fn source_var(&self, kind: MiSourceKind, name: &str) -> Option<String> {
        match self.source_env {
            Some(lookup) => lookup(kind, name).filter(|v| !v.is_empty()),
            None => self.env(name),
        }
    }

    /// Records an error at `at`.
    pub(crate) fn error(&mut self, at: Location, message: impl Into<String>) {
        self.errors.push(ConfigError::at(self.file, at, message));
    }

    /// Resolves a path from the config against the config file's directory.
    pub(crate) fn path(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.dir.join(p)
        }
    }

    /// An environment variable, treating empty as unset.
    pub(crate) fn env(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }
}

/// Validates `raw` (parsed from `file`); every error found, sorted by position.
pub(crate) fn validate(
    file: &Path,
    raw: RawConfig,
    env: EnvLookup<'_>,
    source_env: Option<SourceEnvLookup<'_>>,
) -> Result<Config, ConfigErrors> {
    let mut cx = Ctx::new(file, env, source_env);

    if raw.version.value != SUPPORTED_VERSION {
        cx.error(
            raw.version.referenced,
            format!(
                "unsupported config version {}: this popgate reads version {SUPPORTED_VERSION}",
                raw.version.value
            ),
        );
    }
    let (listeners, unix_listeners) = listeners::listeners(&mut cx, &raw.listeners);
    let admin = raw
        .admin
        .as_ref()
        .and_then(|a| listeners::admin(&mut cx, a, &raw.listeners));
    let network = network::network(&mut cx, raw.network.as_ref());
    let timeouts = timeouts(&mut cx, raw.timeouts.as_ref(), Timeouts::default());
    let drain = drain(&mut cx, raw.drain.as_ref());
    let limits = limits::limits(&mut cx, raw.limits.as_ref());
    let upstream_pool =
        upstream_pool::upstream_pool(&mut cx, raw.upstream_pool.as_ref(), Default::default());
    let identities = identities::identities(&mut cx, raw.identities.as_ref());
    let routes = routes::routes(
        &mut cx,
        &raw.routes,
        &identities,
        timeouts,
        limits,
        upstream_pool,
    );
    allow::check_listeners_for_rules(&mut cx, &raw.routes, &listeners, &unix_listeners);
    let telemetry = telemetry::telemetry(&mut cx, raw.telemetry.as_ref());
    let workers = limits::workers(&mut cx, raw.workers.as_ref());

    let mut errors = cx.errors;
    if errors.is_empty() {
        return Ok(Config {
            source: file.to_owned(),
            listeners,
            unix_listeners,
            admin,
            network,
            timeouts,
            limits,
            upstream_pool,
            identities: identities.into_validated(),
            routes,
            telemetry,
            drain,
            workers,
        });
    }
    // One identity used by several routes can yield the same error more than once.
    errors.sort_by(|a, b| (a.line, a.col, &a.message).cmp(&(b.line, b.col, &b.message)));
    errors.dedup();
    Err(ConfigErrors(errors))
}

/// The `drain:` section over its defaults. `delay` may be zero (`0s`): no delay.
fn drain(cx: &mut Ctx<'_>, raw: Option<&S<RawDrain>>) -> Drain {
    let mut d = Drain::default();
    let Some(delay) = raw.and_then(|r| r.value.delay.as_ref()) else {
        return d;
    };
    let zero = delay.value == "0"
        || delay
            .value
            .strip_suffix("ms")
            .or_else(|| delay.value.strip_suffix(['s', 'm', 'h']))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b == b'0'));
    if zero {
        d.delay = Duration::ZERO;
        return d;
    }
    match super::duration::parse_duration(&delay.value) {
        Ok(v) => d.delay = v,
        Err(msg) => cx.error(delay.referenced, format!("drain.delay: {msg}")),
    }
    d
}

/// Applies `raw` timeouts over `base`.
pub(crate) fn timeouts(cx: &mut Ctx<'_>, raw: Option<&S<RawTimeouts>>, base: Timeouts) -> Timeouts {
    let mut t = base;
    let Some(raw) = raw else { return t };
    for (field, slot) in [
        (&raw.value.connect, &mut t.connect),
        (&raw.value.request, &mut t.request),
        (&raw.value.idle, &mut t.idle),
        (&raw.value.drain, &mut t.drain),
    ] {
        if let Some(v) = field {
            match super::duration::parse_duration(&v.value) {
                Ok(d) => *slot = d,
                Err(msg) => cx.error(v.referenced, msg),
            }
        }
    }
    t
}
