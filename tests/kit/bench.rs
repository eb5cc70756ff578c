//! Running the real `popgate bench` binary and reading its JSON.

use std::path::PathBuf;

use super::repo_root;
use std::process::{Command, Output, Stdio};

/// The shipped routes.yaml.
pub fn shipped_config() -> PathBuf {
    repo_root().join("routes.yaml")
}

/// `popgate bench -c routes.yaml ARGS`, with the App Service identity variables cleared (they
/// would send managed identities past the local authority) and logs quiet.
pub fn bench_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_popgate"));
    cmd.arg("bench")
        .arg("-c")
        .arg(shipped_config())
        .args(args)
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("IDENTITY_HEADER")
        .env_remove("RUST_LOG")
        .env_remove("POPGATE_LOG")
        .stdin(Stdio::null());
    cmd
}

/// Runs `popgate bench` to completion.
pub fn bench(args: &[&str]) -> Output {
    bench_command(args).output().expect("popgate runs")
}

/// The JSON a successful `--json` run printed; panics with both streams otherwise.
pub fn json_of(out: &Output) -> serde_json::Value {
    let stdout = super::process::stdout_of_success(out);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// The route named `name` in the JSON's `routes`.
pub fn route<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["routes"]
        .as_array()
        .expect("routes array")
        .iter()
        .find(|r| r["route"] == name)
        .unwrap_or_else(|| panic!("no route {name} in {json}"))
}

/// A number of the JSON as u64.
pub fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// A number of the JSON as f64.
pub fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}
