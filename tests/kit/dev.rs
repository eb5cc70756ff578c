//! Running the real `popgate dev` binary with a bound on its run time, and reading its table.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use super::process::output_within;
pub use super::repo_root;

/// Bound on one `popgate dev --once` run: every route's first token plus its probe, on a loaded
/// 2-core machine; the run normally takes a few seconds.
pub const RUN_BOUND: Duration = Duration::from_secs(240);

/// Runs `popgate dev --once --listen 127.0.0.1:0 --config {config}` plus `extra` from the repo
/// root; kills it (by its own pid) if it outlives [`RUN_BOUND`].
pub fn run_dev_once(config: &Path, extra: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_popgate"));
    command
        .current_dir(repo_root())
        .args(["dev", "--once", "--config"])
        .arg(config)
        .args(extra)
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("IDENTITY_HEADER")
        .env_remove("IDENTITY_SERVER_THUMBPRINT")
        .env_remove("IMDS_ENDPOINT")
        .env_remove("MSI_ENDPOINT")
        .env_remove("MSI_SECRET")
        .env_remove("DEFAULT_IDENTITY_CLIENT_ID")
        .env_remove("AZURE_POD_IDENTITY_AUTHORITY_HOST");
    output_within(command, RUN_BOUND)
}

/// Like [`run_dev_once`] with `--listen 127.0.0.1:0`.
pub fn run_dev_once_free_port(config: &Path) -> Output {
    run_dev_once(config, &["--listen", "127.0.0.1:0"])
}

/// One parsed table row.
#[derive(Debug)]
pub struct Row {
    pub route: String,
    pub flow: String,
    pub identity: String,
    pub token_type: String,
    pub status: String,
    pub binding: String,
    pub latency_ms: String,
    pub result: String,
}

/// The table's rows (cells are separated by two or more spaces; the header is skipped).
pub fn rows(stdout: &str) -> Vec<Row> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("ROUTE "));
    assert!(lines.next().is_some(), "no table header in:\n{stdout}");
    lines
        .take_while(|l| !l.trim().is_empty())
        .map(|line| {
            let cells: Vec<String> = line
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            assert!(cells.len() >= 8, "short row `{line}`");
            // The result may itself contain double spaces: everything after the 7th cell.
            let result = cells[7..].join("  ");
            Row {
                route: cells[0].clone(),
                flow: cells[1].clone(),
                identity: cells[2].clone(),
                token_type: cells[3].clone(),
                status: cells[4].clone(),
                binding: cells[5].clone(),
                latency_ms: cells[6].clone(),
                result,
            }
        })
        .collect()
}

/// The address printed on `proxy listening on http://ADDR`.
pub fn listening_addr(stdout: &str) -> Option<std::net::SocketAddr> {
    stdout
        .lines()
        .find_map(|l| l.split_once("proxy listening on http://"))
        .and_then(|(_, a)| a.trim().parse().ok())
}
