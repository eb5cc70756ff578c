//! The popgate binary: CLI only. Everything else lives in the library.
#![forbid(unsafe_code)]

mod bench_command;
mod ca_command;
mod cli;
mod dev_command;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use popgate::config::{self, Config, describe::describe_route};
use popgate::logging::{self, LogFormat};

use cli::{Cli, Command, LogArgs};

/// Exit status for a bad config (and for usage errors, as clap uses).
pub(crate) const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(arg) => match config::load(&arg.config) {
            Ok(cfg) => check(&cfg),
            Err(errors) => report(&errors),
        },
        Command::Run(arg) => match config::load(&arg.config) {
            Ok(cfg) => match init_tracing(&arg.log) {
                Ok(()) => run(cfg),
                Err(code) => code,
            },
            Err(errors) => report(&errors),
        },
        Command::Dev(arg) => dev_command::dev(arg),
        Command::Bench(arg) => bench_command::bench(arg),
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

/// `popgate check`: one line per route on stdout.
fn check(cfg: &Config) -> ExitCode {
    let mut out = std::io::stdout().lock();
    for route in &cfg.routes {
        if writeln!(out, "{}", describe_route(cfg, route)).is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Sets up logging from the flags (and `POPGATE_LOG` / `RUST_LOG`); a bad filter is a usage
/// error (exit 2) naming where it came from.
fn init_tracing(args: &LogArgs) -> Result<(), ExitCode> {
    init_tracing_to(args, args.log_level.as_deref(), logging::Output::Stdout)
}

pub(crate) fn init_tracing_to(
    args: &LogArgs,
    level: Option<&str>,
    output: logging::Output,
) -> Result<(), ExitCode> {
    let filter = match logging::filter(level, &|k| std::env::var(k).ok()) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "popgate: {e}");
            return Err(ExitCode::from(EXIT_BAD_CONFIG));
        }
    };
    logging::init_to(
        args.log_format.unwrap_or_else(LogFormat::detect),
        filter,
        output,
    );
    logging::set_access_log(args.access_log);
    Ok(())
}

/// Exit status when popgate cannot start (bind failure, unusable listener certificate, …).
const EXIT_START_FAILED: u8 = 1;

/// `popgate run`: serve until SIGTERM or SIGINT, then drain and exit 0.
fn run(cfg: Config) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_START_FAILED);
        }
    };
    match runtime.block_on(popgate::app::run(cfg, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "popgate cannot start");
            ExitCode::from(EXIT_START_FAILED)
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    popgate::shutdown::stop_requested().await;
}
