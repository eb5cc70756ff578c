//! `popgate bench`: the CLI side (flags to options, runtime, exit status). The bench itself is
//! `popgate::bench`, in every build; only `--dev` needs the `dev` feature (the local authority).

use std::process::ExitCode;

use crate::cli::BenchArgs;

pub(crate) fn bench(arg: Box<BenchArgs>) -> ExitCode {
    use popgate::bench::{self, BenchOptions, plan::LoadFlags, setup::Against};
    use popgate::logging;

    // Taken first: the cold-start figure counts from the command's start.
    let started = std::time::Instant::now();
    let cfg = match popgate::config::load(&arg.config.config) {
        Ok(cfg) => cfg,
        Err(errors) => return crate::report(&errors),
    };
    // The table or JSON is the output (stdout); logs are for trouble (stderr, warnings and up
    // unless the flag or the environment asks for more).
    let env_set =
        std::env::var_os("POPGATE_LOG").is_some() || std::env::var_os("RUST_LOG").is_some();
    let level = arg
        .config
        .log
        .log_level
        .as_deref()
        .or((!env_set).then_some("warn"));
    if let Err(code) = crate::init_tracing_to(&arg.config.log, level, logging::Output::Stderr) {
        return code;
    }
    let against = match (arg.dev, &arg.proxy) {
        (true, _) => Against::Dev,
        (false, Some(url)) => Against::Proxy(url.clone()),
        (false, None) => Against::Config,
    };
    let options = BenchOptions {
        routes: arg.routes,
        against,
        admin: arg.admin,
        load: LoadFlags {
            concurrency: arg.concurrency,
            rate: arg.rate,
            duration: arg.duration,
            requests: arg.requests,
            warmup: arg.warmup,
            ramp: arg.ramp,
            timeout: arg.timeout,
            max_rate: arg.max_rate,
        },
        body: arg.body,
        headers: arg.headers,
        json: arg.json,
        report: arg.report,
        started,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("popgate bench: cannot start the async runtime: {e}");
            return ExitCode::from(bench::EXIT_FAILED);
        }
    };
    let mut out = std::io::stdout();
    match runtime.block_on(bench::run(cfg, options, &mut out, crate::shutdown_signal())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("popgate bench: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
