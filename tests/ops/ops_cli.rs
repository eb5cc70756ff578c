//! The log flags of the real binary: a filter that does not parse is a usage error (exit 2)
//! naming where it came from, before anything starts; an unknown format is refused by the CLI;
//! `--log-format human` writes human lines, not JSON.

use std::process::{Command, Output};
use std::time::Duration;

use crate::kit::admin::*;
use crate::kit::credentials::start;
use crate::kit::process::output_within;

/// Bound on a `popgate run` that must exit on its own.
const EXIT_BOUND: Duration = Duration::from_secs(60);

/// Runs the binary with `args`, `env` set, and waits (bounded) for it to exit.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_popgate"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("POPGATE_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    output_within(command, EXIT_BOUND)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_log_filters_and_formats_are_usage_errors_naming_their_source() {
    let env = start().await;
    let config = write_config(&env, &routes_yaml(&all_flows()[..1], &[]));
    let config = config.to_str().unwrap();

    let out = tokio::task::block_in_place(|| {
        run(
            &["run", "--log-level", "popgate=loud", "--config", config],
            &[],
        )
    });
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--log-level: invalid log filter `popgate=loud`"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing started");

    let out = tokio::task::block_in_place(|| {
        run(&["run", "--config", config], &[("POPGATE_LOG", "=nope=")])
    });
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("POPGATE_LOG: invalid log filter"),
        "{stderr}"
    );

    let out = tokio::task::block_in_place(|| {
        run(&["run", "--log-format", "xml", "--config", config], &[])
    });
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("xml"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_format_writes_plain_lines() {
    let env = start().await;
    // The admin address is taken, so `run` logs its start and exits 1 without serving.
    let taken = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let path = write_config(&env, &routes_yaml(&all_flows()[..1], &[]));
    let yaml = std::fs::read_to_string(&path).unwrap().replace(
        "admin:\n  address: 127.0.0.2:0",
        &format!("admin:\n  address: {}", taken.local_addr().unwrap()),
    );
    std::fs::write(&path, yaml).unwrap();
    let config = path.to_str().unwrap();
    for (format, json) in [("human", false), ("json", true)] {
        let out = tokio::task::block_in_place(|| {
            run(&["run", "--log-format", format, "--config", config], &[])
        });
        assert_eq!(out.status.code(), Some(1), "{format}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(
            lines.iter().any(|l| l.contains("admin listener")),
            "{format}: {stdout}"
        );
        assert!(
            !stdout.contains('\u{1b}'),
            "{format}: colour codes on a pipe"
        );
        for line in lines {
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                json,
                "{format}: {line}"
            );
        }
    }
}
