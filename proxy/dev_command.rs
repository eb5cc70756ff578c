//! `popgate dev`: the proxy against the in-process local authority. The authority is behind the
//! `dev` cargo feature (on by default); a production build (`--no-default-features`) leaves it
//! out and this command says how to get it.

use std::process::ExitCode;

use crate::cli::DevArgs;

#[cfg(feature = "dev")]
pub(crate) fn dev(arg: DevArgs) -> ExitCode {
    // dev's own loading: a `source:` other than IMDS is pointed at the local authority.
    match popgate::dev::mi_sources::load(&arg.config.config) {
        Ok(cfg) => match init_dev_tracing(&arg.config.log) {
            Ok(()) => run_dev(
                cfg,
                popgate::dev::DevOptions {
                    listen: arg.listen,
                    once: arg.once,
                },
            ),
            Err(code) => code,
        },
        Err(errors) => crate::report(&errors),
    }
}

/// Without the `dev` feature there is no local authority to run against: say so, and how to get it.
#[cfg(not(feature = "dev"))]
pub(crate) fn dev(_: DevArgs) -> ExitCode {
    eprintln!(
        "popgate dev: this binary was built without the local authority (cargo feature `dev`, \
         left out of production builds); build it with `cargo build --release` (default features) \
         or run `cargo run --release -- dev`"
    );
    ExitCode::from(crate::EXIT_BAD_CONFIG)
}

#[cfg(feature = "dev")]
use dev_only::*;

#[cfg(feature = "dev")]
mod dev_only {
    use std::process::ExitCode;

    use popgate::config::Config;
    use popgate::logging;

    use crate::cli::LogArgs;

    /// `popgate dev` prints its table on stdout: logs go to stderr, and only warnings and up unless
    /// the flag or the environment asks for more.
    pub(super) fn init_dev_tracing(args: &LogArgs) -> Result<(), ExitCode> {
        let env_set =
            std::env::var_os("POPGATE_LOG").is_some() || std::env::var_os("RUST_LOG").is_some();
        let level = args
            .log_level
            .as_deref()
            .or((!env_set).then_some(DEV_DEFAULT_LOG_LEVEL));
        crate::init_tracing_to(args, level, logging::Output::Stderr)
    }

    /// `popgate dev`'s default log level: its table is the output; logs are for trouble.
    const DEV_DEFAULT_LOG_LEVEL: &str = "warn";

    /// Exit status of `popgate dev --once` when a route is not OK (and when dev cannot start).
    const EXIT_DEV_NOT_OK: u8 = 1;

    /// `popgate dev`: the table on stdout, logs (warnings and up unless `RUST_LOG` says otherwise) on
    /// stderr so they never interleave with it.
    pub(super) fn run_dev(cfg: Config, options: popgate::dev::DevOptions) -> ExitCode {
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
        match runtime.block_on(popgate::dev::run(
            cfg,
            options,
            &mut out,
            crate::shutdown_signal(),
        )) {
            Ok(outcome) if once && !outcome.all_ok() => ExitCode::from(EXIT_DEV_NOT_OK),
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("popgate dev: {e}");
                ExitCode::from(EXIT_DEV_NOT_OK)
            }
        }
    }
}
