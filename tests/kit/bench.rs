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
    bench_command_on(&shipped_config(), args)
}

/// `popgate bench -c CONFIG ARGS`, as [`bench_command`].
pub fn bench_command_on(config: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_popgate"));
    cmd.arg("bench")
        .arg("-c")
        .arg(config)
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

/// The shipped routes.yaml with its certificate app and its two vanilla routes renamed
/// (`NAME` → `PREFIX-NAME`) and its file paths made absolute, written into `dir`. Tests that run
/// popgate in the test process use it so that their route- and identity-labelled metrics are
/// theirs alone (the registry is process-wide, and other tests use the shipped names).
pub fn renamed_config(dir: &std::path::Path, prefix: &str) -> PathBuf {
    let text = std::fs::read_to_string(shipped_config()).expect("routes.yaml");
    let examples = repo_root().join("examples/dev/");
    let text = text
        .replace("examples/dev/", examples.to_str().expect("a UTF-8 path"))
        .replace("\n  app:", &format!("\n  {prefix}-app:"))
        .replace("identity: app\n", &format!("identity: {prefix}-app\n"))
        .replace("leg1: app\n", &format!("leg1: {prefix}-app\n"))
        .replace("name: graph\n", &format!("name: {prefix}-graph\n"))
        .replace(
            "name: graph-bearer\n",
            &format!("name: {prefix}-graph-bearer\n"),
        );
    let path = dir.join("routes.yaml");
    std::fs::write(&path, text).expect("the renamed config is written");
    path
}
