//! Command-line interface: `popgate run | check | dev | bench | probe | schema | ca init`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use popgate::logging::LogFormat;

/// The config file used when `--config` is not given: `routes.yaml` in the working directory.
pub const DEFAULT_CONFIG: &str = "routes.yaml";

/// popgate: an egress proxy that re-originates plain HTTP over mutual TLS with Entra ID tokens.
#[derive(Debug, Parser)]
#[command(name = "popgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the config and run the proxy.
    Run(ConfigArg),
    /// Load and validate the config, print one line per route, and exit (0 valid, 2 invalid).
    Check(ConfigArg),
    /// Run the proxy against the local authority: one request per route, a table, then serve.
    Dev(DevArgs),
    /// Load test routes through popgate: latency percentiles, errors by cause, token acquisitions.
    Bench(Box<BenchArgs>),
    /// GET an http:// URL once (a health check without shell or curl): exit 0 on 2xx, 1 otherwise
    /// with the reason on stderr, 2 for bad usage.
    Probe(ProbeArgs),
    /// Print the JSON Schema of routes.yaml (shipped as docs/routes.schema.json) and exit.
    Schema,
    /// The local CA for CONNECT interception (`intercept:` on a listener).
    #[command(subcommand)]
    Ca(CaCommand),
}

/// Default bound on the whole probe (resolve, connect, request, response head and body): the
/// admin listener answers in milliseconds; Kubernetes' own probe timeout defaults to 1 s and
/// Docker's HEALTHCHECK to 30 s, so 2 s fits inside both with room for a loaded node.
const DEFAULT_PROBE_TIMEOUT: &str = "2s";

/// `popgate probe`'s flags.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The URL to GET, plain http only: http://HOST:PORT/PATH (e.g. the admin listener's
    /// http://127.0.0.1:9901/readyz).
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Bound on the whole probe: resolve, connect, request and answer (at most 60s).
    #[arg(long, value_name = "DURATION", value_parser = popgate::config::duration::parse_duration,
          default_value = DEFAULT_PROBE_TIMEOUT)]
    pub timeout: Duration,
}

/// `popgate ca` subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Write a new CA certificate and key (ECDSA P-256) for `intercept:`, and print how to make
    /// apps trust it. Refuses to overwrite existing files.
    Init {
        /// Directory to write `popgate-ca.pem` and `popgate-ca.key` (0600) into; created if
        /// missing.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// The `--config` flag shared by every subcommand.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Path of the routes file; relative paths inside it resolve against its directory.
    #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Log output settings.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Log output flags (`run` and `dev`; `check` ignores them).
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format; default: human on a terminal, json otherwise.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter in `RUST_LOG` syntax (e.g. `info,popgate=debug`); default: env POPGATE_LOG,
    /// then RUST_LOG, then `info`.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log one event per request (route, method, status, durations; never the query or headers).
    #[arg(long)]
    pub access_log: bool,
}

/// `popgate dev`'s flags.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// The routes file (every Azure host it names is mapped onto the local authority).
    #[command(flatten)]
    pub config: ConfigArg,
    /// Listen here instead of the config's (first plain-HTTP) listener; port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Print the table and exit: 0 when every route is OK, 1 otherwise (for CI).
    #[arg(long, alias = "check")]
    pub once: bool,
}

/// `popgate bench`'s flags (bounds: `popgate::bench::plan`).
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The routes file the routes are taken from.
    #[command(flatten)]
    pub config: ConfigArg,
    /// A route to load, repeatable (side by side): NAME, NAME=/path or NAME=METHOD /path.
    #[arg(long = "route", value_name = "ROUTE", required = true)]
    pub routes: Vec<String>,
    /// Run against the in-process local authority, as `popgate dev` does.
    #[arg(long, conflicts_with = "proxy")]
    pub dev: bool,
    /// Drive an already running popgate's plain-HTTP listener (http://HOST:PORT) instead.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// With --proxy: that popgate's admin listener (http://HOST:PORT); its /metrics is read
    /// before and after the load for the popgate-side figures (without it they are unavailable).
    #[arg(long, value_name = "URL", requires = "proxy")]
    pub admin: Option<String>,
    /// Connections per route (closed loop: each sends back-to-back) [default: 4].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Fixed rate per route (requests a second, open loop); without it, a closed loop.
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,
    /// Length of the measured phase (e.g. 10s, 2m) [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = span, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Measured requests per route, instead of --duration.
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Full load before the measured phase, not counted.
    #[arg(long, value_name = "DURATION", value_parser = span, default_value = "0s")]
    pub warmup: Duration,
    /// Linear ramp from nothing to the full load, first, not counted.
    #[arg(long, value_name = "DURATION", value_parser = span, default_value = "0s")]
    pub ramp: Duration,
    /// Per-request timeout.
    #[arg(long, value_name = "DURATION", value_parser = span, default_value = "30s")]
    pub timeout: Duration,
    /// Allow this rate per route against a non-loopback upstream (and pace a closed loop to it).
    #[arg(long, value_name = "R")]
    pub max_rate: Option<f64>,
    /// A file sent as every request's body.
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
    /// A header every request carries (`Name: value`), repeatable.
    #[arg(long = "header", value_name = "HEADER")]
    pub headers: Vec<String>,
    /// Print the figures as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained report: FILE.html (plot, table, JSON) or FILE.svg (the plot).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// A duration flag: `0` / `0s` (none), or popgate's duration syntax (`500ms`, `10s`, `2m`).
fn span(text: &str) -> Result<Duration, String> {
    if text.trim_end_matches(['m', 's', 'h']) == "0" {
        return Ok(Duration::ZERO);
    }
    popgate::config::duration::parse_duration(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_subcommand_and_the_default_config() {
        let cli = Cli::try_parse_from(["popgate", "check"]).unwrap();
        assert!(
            matches!(cli.command, Command::Check(ConfigArg { ref config, .. }) if config == &PathBuf::from("routes.yaml"))
        );
        let cli = Cli::try_parse_from(["popgate", "run", "--config", "x.yaml"]).unwrap();
        assert!(
            matches!(cli.command, Command::Run(ConfigArg { ref config, .. }) if config == &PathBuf::from("x.yaml"))
        );
        let cli = Cli::try_parse_from(["popgate", "dev", "-c", "d.yaml"]).unwrap();
        assert!(
            matches!(cli.command, Command::Dev(DevArgs { ref config, listen: None, once: false }) if config.config == std::path::Path::new("d.yaml"))
        );
        let cli =
            Cli::try_parse_from(["popgate", "dev", "--check", "--listen", "127.0.0.1:0"]).unwrap();
        assert!(
            matches!(cli.command, Command::Dev(DevArgs { listen: Some(a), once: true, .. }) if a.port() == 0)
        );
        assert!(Cli::try_parse_from(["popgate", "dev", "--listen", "nowhere"]).is_err());
        assert!(Cli::try_parse_from(["popgate"]).is_err());
        let cli = Cli::try_parse_from([
            "popgate",
            "run",
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--access-log",
        ])
        .unwrap();
        let Command::Run(arg) = cli.command else {
            panic!("not run")
        };
        assert_eq!(arg.log.log_format, Some(LogFormat::Json));
        assert_eq!(arg.log.log_level.as_deref(), Some("debug"));
        assert!(arg.log.access_log);
        assert!(Cli::try_parse_from(["popgate", "run", "--log-format", "xml"]).is_err());
        assert!(Cli::try_parse_from(["popgate", "check", "--bogus"]).is_err());
        let cli =
            Cli::try_parse_from(["popgate", "probe", "--url", "http://127.0.0.1:1/"]).unwrap();
        let Command::Probe(probe) = cli.command else {
            panic!("not probe")
        };
        assert_eq!(probe.timeout, Duration::from_secs(2));
        assert!(Cli::try_parse_from(["popgate", "probe"]).is_err());
        assert!(
            Cli::try_parse_from(["popgate", "probe", "--url", "x", "--timeout", "0s"]).is_err()
        );
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
