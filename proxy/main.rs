//! The popgate binary: CLI only. Everything else lives in the library.
#![forbid(unsafe_code)]

mod cli;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use popgate::config::{self, Config, describe::describe_route};

use cli::{Cli, Command};

/// Exit status for a bad config (and for usage errors, as clap uses).
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(arg) => match config::load(&arg.config) {
            Ok(cfg) => check(&cfg),
            Err(errors) => report(&errors),
        },
        Command::Run(arg) => match config::load(&arg.config) {
            Ok(cfg) => run(cfg),
            Err(errors) => report(&errors),
        },
        Command::Dev(arg) => match config::load(&arg.config.config) {
            Ok(cfg) => dev(
                cfg,
                popgate::dev::DevOptions {
                    listen: arg.listen,
                    once: arg.once,
                },
            ),
            Err(errors) => report(&errors),
        },
    }
}

/// Prints every config error as `FILE:LINE:COL: message` on stderr; exit 2.
fn report(errors: &config::ConfigErrors) -> ExitCode {
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Fails only if a subscriber is already installed, which cannot happen this early.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .try_init();
}

/// Exit status when popgate cannot start (bind failure, unusable listener certificate, …).
const EXIT_START_FAILED: u8 = 1;

/// `popgate run`: serve until SIGTERM or SIGINT, then drain and exit 0.
fn run(cfg: Config) -> ExitCode {
    init_tracing();
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
async fn shutdown_signal() {
    popgate::shutdown::stop_requested().await;
}

/// Exit status of `popgate dev --once` when a route is not OK (and when dev cannot start).
const EXIT_DEV_NOT_OK: u8 = 1;

/// `popgate dev`: the table on stdout, logs (warnings and up unless `RUST_LOG` says otherwise) on
/// stderr so they never interleave with it.
fn dev(cfg: Config, options: popgate::dev::DevOptions) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Fails only if a subscriber is already installed, which cannot happen this early.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("popgate dev: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_DEV_NOT_OK);
        }
    };
    let once = options.once;
    let mut out = std::io::stdout();
    match runtime.block_on(popgate::dev::run(cfg, options, &mut out, shutdown_signal())) {
        Ok(outcome) if once && !outcome.all_ok() => ExitCode::from(EXIT_DEV_NOT_OK),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popgate dev: {e}");
            ExitCode::from(EXIT_DEV_NOT_OK)
        }
    }
}
