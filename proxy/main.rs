//! The popgate binary: CLI only. Everything else lives in the library.
#![forbid(unsafe_code)]

mod allocator;
mod bench_command;
mod ca_command;
mod cli;
mod dev_command;
mod probe_command;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use popgate::config::describe_proxy::describe_proxy;
use popgate::config::{self, Config, describe::describe_route};
use popgate::logging::traces::{self, TraceExport};
use popgate::logging::{self, LogFormat};

use cli::{Cli, Command, LogArgs};

/// jemalloc instead of glibc's malloc (see `allocator.rs` for why).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status for a bad config (and for usage errors, as clap uses).
pub(crate) const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    allocator::return_freed_memory_in_the_background();
    let cli = Cli::parse();
    match cli.command {
        Command::Check(arg) => match config::load(&arg.config) {
            Ok(cfg) => check(&cfg),
            Err(errors) => report(&errors),
        },
        Command::Run(arg) => {
            // Start-up's garbage (the parsed file, the first acquisitions) goes back to the
            // kernel as it is freed; `run` sets the configured decay again once they settle.
            allocator::return_freed_memory_at_once();
            match config::load(&arg.config) {
                Ok(cfg) => run(cfg, &arg.log),
                Err(errors) => report(&errors),
            }
        }
        Command::Dev(arg) => dev_command::dev(arg),
        Command::Bench(arg) => bench_command::bench(arg),
        Command::Probe(arg) => probe_command::probe(arg),
        Command::Schema => {
            let text = config::json_schema::routes_schema_text();
            match std::io::stdout().lock().write_all(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Command::Ca(cli::CaCommand::Init { out }) => ca_command::init(&out),
    }
}

/// Prints every config error as `FILE:LINE:COL: message` on stderr; exit 2.
pub(crate) fn report(errors: &config::ConfigErrors) -> ExitCode {
    let mut err = std::io::stderr().lock();
    for e in errors.errors() {
        // Nothing sensible to do if stderr is closed; the exit status still says it all.
        let _ = writeln!(err, "{e}");
    }
    ExitCode::from(EXIT_BAD_CONFIG)
}

/// `popgate check`: one line per route on stdout, ending with the outbound proxy's use.
fn check(cfg: &Config) -> ExitCode {
    let mut out = std::io::stdout().lock();
    for route in &cfg.routes {
        let line = describe_route(cfg, route);
        if writeln!(out, "{line}\t{}", describe_proxy(cfg, route)).is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Sets up logging from the flags (and `POPGATE_LOG` / `RUST_LOG`); a bad filter is a usage
/// error (exit 2) naming where it came from. (`popgate dev` and `popgate bench`; `run` adds trace
/// export.)
pub(crate) fn init_tracing_to(
    args: &LogArgs,
    level: Option<&str>,
    output: logging::Output,
) -> Result<(), ExitCode> {
    init_tracing_with(args, level, output, None)
}

/// [`init_tracing_to`], with OpenTelemetry trace export when `traces` is given.
fn init_tracing_with(
    args: &LogArgs,
    level: Option<&str>,
    output: logging::Output,
    traces: Option<&TraceExport>,
) -> Result<(), ExitCode> {
    let filter = match logging::filter(level, &|k| std::env::var(k).ok()) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "popgate: {e}");
            return Err(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    logging::install(
        args.log_format.unwrap_or_else(LogFormat::detect),
        filter,
        output,
        traces,
    );
    logging::set_access_log(args.access_log);
    Ok(())
}

/// Exit status when popgate cannot start (bind failure, unusable listener certificate, …).
const EXIT_START_FAILED: u8 = 1;

/// `popgate run`: serve until SIGTERM or SIGINT, then drain and exit 0. Logging (and trace
/// export, which runs on the runtime) is set up once the runtime exists.
///
/// This thread's runtime is the control plane (token engine, admin listener, reloads, trace
/// export); the data plane runs on `workers` threads of its own (see `dataplane/workers.rs`).
fn run(cfg: Config, log: &LogArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "popgate: cannot start the async runtime: {e}"
            );
            return ExitCode::from(EXIT_START_FAILED);
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let started = traces::start(
        &cfg.telemetry,
        &cfg.network.extra_ca,
        &env,
        runtime.handle().clone(),
    );
    let (traces, unusable) = match started {
        Ok(traces) => (traces, None),
        Err(e) if e.is_fatal() => {
            let _ = writeln!(std::io::stderr().lock(), "popgate: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        Err(e) => (None, Some(e)),
    };
    if let Err(code) = init_tracing_with(
        log,
        log.log_level.as_deref(),
        logging::Output::Stdout,
        traces.as_ref(),
    ) {
        return code;
    }
    if traces.is_some() {
        tracing::info!("exporting OpenTelemetry traces (OTLP/HTTP)");
    }
    if let Some(e) = unusable {
        tracing::error!(error = %e, "OpenTelemetry trace export is off; serving without it");
    }
    let code = match runtime.block_on(popgate::app::run(
        cfg,
        shutdown_signal(),
        allocator::return_freed_memory_now,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "popgate cannot start");
            ExitCode::from(EXIT_START_FAILED)
        }
    };
    // The last spans are sent while the runtime still runs (the exports are spawned on it).
    if let Some(traces) = traces {
        traces.shutdown();
    }
    code
}

/// Resolves on the first SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    popgate::shutdown::stop_requested().await;
}
