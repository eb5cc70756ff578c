//! Command-line interface: `popgate run | check | dev`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Run the proxy against the local authority (development).
    Dev(ConfigArg),
}

/// The `--config` flag shared by every subcommand.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Path of the routes file; relative paths inside it resolve against its directory.
    #[arg(long, short = 'c', value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_subcommand_and_the_default_config() {
        let cli = Cli::try_parse_from(["popgate", "check"]).unwrap();
        assert!(
            matches!(cli.command, Command::Check(ConfigArg { ref config }) if config == &PathBuf::from("routes.yaml"))
        );
        let cli = Cli::try_parse_from(["popgate", "run", "--config", "x.yaml"]).unwrap();
        assert!(
            matches!(cli.command, Command::Run(ConfigArg { ref config }) if config == &PathBuf::from("x.yaml"))
        );
        let cli = Cli::try_parse_from(["popgate", "dev", "-c", "d.yaml"]).unwrap();
        assert!(matches!(cli.command, Command::Dev(_)));
        assert!(Cli::try_parse_from(["popgate"]).is_err());
        assert!(Cli::try_parse_from(["popgate", "check", "--bogus"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }
}
