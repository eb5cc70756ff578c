//! `popgate dev`: popgate against the local authority on any machine. Starts the authority
//! in-process on loopback, makes it know every identity, resource and host the config names,
//! points the config at it (in memory), runs the real proxy, sends one request per route through
//! the real listener and prints a table; then serves until Ctrl-C (or exits, with `--once`).

pub(crate) mod intercept_ca;
pub mod local_authority;
pub mod mi_sources;
pub mod probe;
pub mod register;
pub mod rewrite;
pub(crate) mod table;
// The probe targets live in `route` (the bench, which runs without the `dev` feature, uses them).
pub(crate) use crate::route::probe as targets;
pub(crate) mod token_files;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use crate::app::{App, RunError, StartOptions};
use crate::config::Config;

use local_authority::{LocalAuthority, SetupError};
use probe::ProbeResult;
use rewrite::RewriteError;

/// Bound on waiting for eager routes' first tokens before probing: the local authority answers in
/// milliseconds, but an IMDS retry schedule (1 + 2 + 4 s) or a slow CI machine can add seconds.
pub const READY_WAIT: Duration = Duration::from_secs(60);

/// How to run `popgate dev`.
#[derive(Clone, Debug, Default)]
pub struct DevOptions {
    /// Replaces the config's (first plain-HTTP) listener address; port 0 picks a free port.
    pub listen: Option<SocketAddr>,
    /// Print the table and return instead of serving.
    pub once: bool,
}

/// Why `popgate dev` could not run.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A managed-identity source's environment is set; it would bypass the local authority.
    #[error(
        "{0} is set: managed identities would use App Service, Service Fabric, Azure Arc, Cloud Shell or Azure ML instead of the local authority's IMDS; unset {vars} for popgate dev",
        vars = crate::identity::mi_source::SOURCE_ENV_VARS.join(", ")
    )]
    AppServiceEnv(&'static str),
    /// The authority could not be set up for this config.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The config could not be pointed at the authority.
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
    /// A managed-identity source could not be pointed at the authority.
    #[error(transparent)]
    Sources(#[from] mi_sources::RepointError),
    /// A listener could not be bound (the message names its address).
    #[error("{0} (another process may hold it: pick a free address with --listen 127.0.0.1:0)")]
    Listen(RunError),
    /// popgate itself did not start.
    #[error("popgate cannot start: {0}")]
    Start(RunError),
    /// No plain-HTTP listener to send the probes through.
    #[error(
        "popgate dev sends its requests through a plain-HTTP listener and the config has only TLS ones: add --listen 127.0.0.1:0"
    )]
    NoPlainListener,
    /// popgate started without binding the listener the probes need (a bug, never a config).
    #[error("popgate started without listener #{0}")]
    MissingListener(usize),
    /// The CA for intercepting `https://` could not be made.
    #[error("cannot set up the interception CA: {0}")]
    Ca(String),
    /// The table could not be written.
    #[error("cannot write the results: {0}")]
    Output(#[from] std::io::Error),
}

/// What a `popgate dev` run found.
#[derive(Debug)]
pub struct DevOutcome {
    /// One result per route, in config order.
    pub results: Vec<ProbeResult>,
    /// The address probes went through.
    pub listener: SocketAddr,
}

impl DevOutcome {
    /// Whether every route served its probe as configured.
    pub fn all_ok(&self) -> bool {
        self.results.iter().all(ProbeResult::ok)
    }
}

/// Starts the local authority for `config` and points `config` at it (`listen`: see
/// [`rewrite::point_at_authority`], whose listener index this returns). `popgate bench --dev`
/// shares it.
pub async fn prepare(
    config: &mut Config,
    listen: Option<SocketAddr>,
) -> Result<(LocalAuthority, Option<usize>), DevError> {
    if let Some(var) = crate::identity::mi_source::SOURCE_ENV_VARS
        .into_iter()
        .find(|v| std::env::var_os(v).is_some())
    {
        return Err(DevError::AppServiceEnv(var));
    }
    let local = local_authority::start(config).await?;
    let index = rewrite::point_at_authority(config, &local, listen)?;
    mi_sources::repoint(config, &local.authority, &local.source_secrets)?;
    Ok((local, index))
}

/// How popgate must start against `local`: Azure Arc's challenge files are in the authority's
/// directory, not the Arc agent's.
pub fn start_options(local: &LocalAuthority) -> StartOptions {
    StartOptions {
        arc_token_dir: Some(local.arc_token_dir().to_path_buf()),
        ..StartOptions::default()
    }
}

/// Runs `popgate dev` on `config`, writing the table and examples to `out`. With `options.once`
/// returns after the table; otherwise serves until `shutdown` resolves.
pub async fn run(
    mut config: Config,
    options: DevOptions,
    out: &mut (dyn Write + Send),
    shutdown: impl Future<Output = ()>,
) -> Result<DevOutcome, DevError> {
    let (local, index) = prepare(&mut config, options.listen).await?;
    // `point_at_authority` always leaves a plain listener when `--listen` is given.
    let index = index.ok_or(DevError::NoPlainListener)?;
    // Serving: the probe listener intercepts https:// too (its examples are printed below).
    let dev_ca = if options.once {
        None
    } else {
        Some(intercept_ca::ensure(&mut config, index).map_err(DevError::Ca)?)
    };
    let authority = &local.authority;
    writeln!(
        out,
        "popgate dev: local authority: token endpoint {}, resources {}, IMDS {}",
        authority.token_addr(),
        authority.resource_addr(),
        authority.imds_base_url()
    )?;

    crate::app::fd_limit::raise_open_files_limit();
    let app = App::start_with(config.clone(), start_options(&local))
        .await
        .map_err(|e| match e {
            RunError::Start(_) => DevError::Listen(e),
            other => DevError::Start(other),
        })?;
    let listener = app
        .local_addrs()
        .get(index)
        .copied()
        .ok_or(DevError::MissingListener(index))?;
    writeln!(out, "popgate dev: proxy listening on http://{listener}")?;
    out.flush()?;

    app.initial_round(READY_WAIT).await;
    let mut results = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let result = probe::probe(listener, &config, route).await;
        tracing::info!(
            route = %result.route,
            status = result.status,
            ok = result.ok(),
            latency_ms = result.latency.as_millis() as u64,
            "dev probe"
        );
        results.push(result);
    }
    let outcome = DevOutcome { results, listener };
    writeln!(out)?;
    write!(out, "{}", table::render(&outcome.results))?;
    let failed = outcome.results.iter().filter(|r| !r.ok()).count();
    writeln!(
        out,
        "\n{} of {} routes OK",
        outcome.results.len() - failed,
        outcome.results.len()
    )?;
    if !options.once {
        writeln!(out, "\nTry it (popgate keeps serving until Ctrl-C):")?;
        write!(
            out,
            "{}",
            table::curl_examples(&outcome.results, &listener.to_string())
        )?;
    }
    if let Some(ca) = &dev_ca {
        writeln!(
            out,
            "\nApps with https:// URLs (CONNECT, intercepted with a CA made for this run):"
        )?;
        write!(
            out,
            "{}",
            table::https_curl_examples(&outcome.results, &listener.to_string(), &ca.cert)
        )?;
    }
    out.flush()?;
    if !options.once {
        shutdown.await;
        writeln!(out, "popgate dev: stopping")?;
        out.flush()?;
    }
    app.shutdown().await;
    local.authority.shutdown().await;
    drop(dev_ca);
    Ok(outcome)
}
