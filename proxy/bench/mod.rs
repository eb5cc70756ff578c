//! `popgate bench`: load through popgate's real listener, engine and data plane, with figures per
//! route (HdrHistogram latencies, errors by class and cause, popgate's own share, tokens, upstream
//! connections), a table or JSON, and an optional self-contained report.

pub(crate) mod client;
pub(crate) mod load;
pub(crate) mod metrics_source;
pub mod plan;
pub(crate) mod popgate_side;
pub(crate) mod record;
pub(crate) mod report;
pub mod setup;
pub(crate) mod summary;
pub(crate) mod table;
pub(crate) mod target;
pub(crate) mod watch;

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use loadgen::Schedule;

use crate::config::Config;

use metrics_source::Source;
use plan::{Load, LoadFlags, Plan};
use popgate_side::Snapshot;
use record::Recorder;
use setup::{Against, SetupFailure};
use summary::Summary;

/// Exit status for bad input (as clap and `popgate check` use).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the bench could not run.
pub const EXIT_FAILED: u8 = 1;

/// Everything `popgate bench` was asked.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// `--route` specs: `NAME`, `NAME=/path` or `NAME=METHOD /path`.
    pub routes: Vec<String>,
    /// Where the requests go.
    pub against: Against,
    /// `--admin http://HOST:PORT`: the admin listener of the popgate `--proxy` drives, whose
    /// `/metrics` is read before and after the load.
    pub admin: Option<String>,
    /// The load's shape.
    pub load: LoadFlags,
    /// `--body FILE`.
    pub body: Option<PathBuf>,
    /// `--header 'Name: value'`.
    pub headers: Vec<String>,
    /// Print JSON instead of the table.
    pub json: bool,
    /// `--report FILE` (`.svg`, else HTML).
    pub report: Option<PathBuf>,
    /// When the command started (the cold-start figure counts from here).
    pub started: Instant,
}

/// Why a bench did not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad input; the message names the flag.
    #[error("{0}")]
    Usage(String),
    /// popgate or the local authority could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupFailure),
    /// Ctrl-C (or SIGTERM) came before the load started: there are no figures.
    #[error("interrupted before the load started")]
    Interrupted,
    /// The results could not be written.
    #[error("cannot write the results: {0}")]
    Output(#[from] std::io::Error),
    /// The report file could not be written.
    #[error("--report {path}: cannot write it: {source}")]
    Report {
        /// The `--report` path.
        path: String,
        /// The underlying I/O error.
        source: std::io::Error,
    },
}

impl BenchError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            BenchError::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILED,
        }
    }
}

/// Runs the bench: checks the input, starts what `options.against` needs, applies the load until
/// it ends or `stop` resolves (the figures so far are still written), writes the table or JSON to
/// `out` and the report file.
pub async fn run(
    config: Config,
    options: BenchOptions,
    out: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<Summary, BenchError> {
    let dev = options.against == Against::Dev;
    let targets = target::resolve(
        &config,
        &options.routes,
        options.body.as_deref(),
        &options.headers,
        dev,
    )?;
    let remote = targets
        .iter()
        .find(|t| !t.loopback)
        .map(|t| t.route.as_str());
    let plan = Plan::new(&options.load, remote)?;
    let names: Vec<&str> = targets.iter().map(|t| t.route.as_str()).collect();
    // Polled from here on, so that Ctrl-C during the set-up (the first tokens can take seconds)
    // is handled too.
    tokio::pin!(stop);
    let admin = match (&options.admin, &options.against) {
        (None, _) => None,
        (Some(url), Against::Proxy(_)) => Some(setup::http_addr("--admin", url).await?),
        (Some(url), _) => {
            return Err(BenchError::Usage(format!(
                "--admin {url}: only with --proxy (the bench reads its own popgate's metrics)"
            )));
        }
    };
    let env = tokio::select! {
        env = setup::start(config, &options.against, &names) => env?,
        () = &mut stop => return Err(BenchError::Interrupted),
    };
    let in_process = env.app.is_some();
    let source = if in_process {
        Some(Source::InProcess)
    } else {
        admin.map(Source::Admin)
    };
    // What the token and connection figures count from: the bench's own popgate from its start
    // (its first tokens are the cold start); a running popgate from just before the load.
    let base = match source {
        Some(Source::Admin(addr)) => match Source::Admin(addr).take().await {
            Some(s) => Some(s),
            None => {
                return Err(BenchError::Usage(format!(
                    "--admin {}: cannot read /metrics there (see the warning above)",
                    options.admin.as_deref().unwrap_or_default()
                )));
            }
        },
        Some(Source::InProcess) => Some(Snapshot::default()),
        None => None,
    };
    tracing::info!(listener = %env.listener, routes = targets.len(), "bench load starting");

    let t0 = Instant::now();
    let schedule = plan.schedule(t0);
    let recorders: Vec<Arc<Recorder>> = targets
        .iter()
        .map(|_| Arc::new(Recorder::new(t0)))
        .collect();
    let ran = drive(&targets, &recorders, &env, source, plan, schedule, stop).await;
    let elapsed = ran
        .finished
        .saturating_duration_since(schedule.measure_start);
    let end = match source {
        Some(s) => s.take().await,
        None => None,
    };
    // No warm-up, or stopped before the measured phase: the share counts from the base.
    let base = base.unwrap_or_default();
    let before = ran.before.unwrap_or_else(|| base.clone());
    let side = end.as_ref().map(|end| summary::Side {
        end,
        measured_from: &before,
        base: &base,
    });
    let routes = targets
        .iter()
        .zip(&recorders)
        .map(|(t, rec)| summary::route(t, &rec.snapshot(), elapsed, options.started, side))
        .collect();
    let result = Summary {
        mode: match plan.load {
            Load::Closed => "closed",
            Load::Rate(_) => "rate",
        },
        against: options.against.label(),
        rate_per_route: match plan.load {
            Load::Rate(r) => Some(r),
            Load::Closed => None,
        },
        concurrency: plan.concurrency,
        ramp_s: plan.ramp.as_secs_f64(),
        warmup_s: plan.warmup.as_secs_f64(),
        elapsed_s: (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        interrupted: ran.interrupted,
        routes,
        popgate: end.as_ref().map(|e| summary::proxy(&e.since(&base))),
        marks: ran.marks,
        authority: env.authority_counts(),
        window: match (source, &end) {
            (Some(Source::InProcess), Some(_)) => Some("since popgate started"),
            (Some(Source::Admin(_)), Some(_)) => Some("during the bench"),
            _ => None,
        },
        unavailable: match (source, &end) {
            (None, _) => Some(UNAVAILABLE_WITHOUT_ADMIN.to_string()),
            (Some(_), None) => Some(
                "popgate's metrics could not be read after the load (see the warning on stderr): \
                 no popgate-side figures"
                    .to_string(),
            ),
            _ => None,
        },
    };
    env.stop().await;
    let measure_start_s = (schedule.measure_start - t0).as_secs_f64();
    write_results(&result, &options, out, measure_start_s)?;
    Ok(result)
}

/// What a `--proxy` run without `--admin` cannot show, said in the table and the JSON.
pub const UNAVAILABLE_WITHOUT_ADMIN: &str = "--proxy without --admin URL: time in popgate and \
    upstream, token acquisitions and their steps, upstream connections, TLS handshakes and \
    refresh marks are unavailable (give --admin http://HOST:PORT, the popgate's admin listener)";

/// How the load phase went.
struct Ran {
    /// When the last connection finished.
    finished: Instant,
    /// Ctrl-C ended it.
    interrupted: bool,
    /// Token refreshes and rotations during it.
    marks: Vec<summary::Mark>,
    /// popgate's metrics when the measured phase started (in-process popgate only).
    before: Option<Snapshot>,
}

/// Applies the load with the progress line and the marks watcher running beside it, until the
/// load ends or `stop` resolves.
async fn drive(
    targets: &[target::Target],
    recorders: &[Arc<Recorder>],
    env: &setup::Env,
    source: Option<Source>,
    plan: Plan,
    schedule: Schedule,
    mut stop: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Ran {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(watch::run(
        targets.iter().map(|t| t.route.clone()).collect(),
        recorders.to_vec(),
        schedule.t0,
        schedule.measure_start,
        source,
        stop_rx.clone(),
    ));
    let measure_start = schedule.measure_start;
    // With no warm-up the measured phase starts with the load, so the reading taken just before
    // it (the base) is where the share counts from: a reading taken now would race the first
    // requests, and miss those answered before popgate's `/metrics` was read.
    let before = (measure_start > schedule.t0).then(|| {
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_start.into()).await;
            match source {
                Some(s) => s.take().await,
                None => None,
            }
        })
    });
    let load = load::run(targets, recorders, env.listener, plan, schedule, &stop_rx);
    tokio::pin!(load);
    let interrupted = tokio::select! {
        () = &mut load => false,
        () = &mut stop => {
            let _ = stop_tx.send(true);
            load.await;
            true
        }
    };
    let finished = Instant::now();
    let _ = stop_tx.send(true);
    let marks = watcher.await.unwrap_or_default();
    let before = match before {
        Some(before) if before.is_finished() => before.await.ok().flatten(),
        Some(before) => {
            before.abort();
            None
        }
        None => None,
    };
    Ran {
        finished,
        interrupted,
        marks,
        before,
    }
}

fn write_results(
    result: &Summary,
    options: &BenchOptions,
    out: &mut (dyn Write + Send),
    measure_start_s: f64,
) -> Result<(), BenchError> {
    if options.json {
        serde_json::to_writer_pretty(&mut *out, result).map_err(std::io::Error::other)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", table::render(result))?;
    }
    if let Some(path) = &options.report {
        report::write(path, result, measure_start_s).map_err(|source| BenchError::Report {
            path: path.display().to_string(),
            source,
        })?;
        if !options.json {
            writeln!(out, "report: {}", path.display())?;
        }
    }
    out.flush()?;
    Ok(())
}
