//! The test kit: every test binary under `tests/` declares it (`#[path = "../kit/mod.rs"] mod kit;`)
//! and uses the parts it needs. Only loopback addresses and temp directories are ever used.
//!
//! One binary per layer (`tests/<layer>/main.rs` declares its test files as modules), so the TLS
//! stack is linked a dozen times, not fifty. A test that reads process-wide state gets a binary
//! of its own: `tests/dataplane_streaming.rs` (the process's peak RSS), `tests/ops_metrics.rs`
//! (exact values of the global metrics counters) and `tests/parking/` (exact counts of parked
//! connections, one test at a time). Tests in one binary share a process: none may
//! set environment variables or install a global tracing subscriber or crypto provider.
#![allow(dead_code, unused_imports)] // Each test binary uses a different subset.

/// popgate started in-process (`App`) with an admin listener; `/metrics` and `/readyz` readers.
pub mod admin;
/// popgate started in-process (`App::start_with`) against the local authority; a keep-alive caller.
pub mod app;
/// The real `popgate bench` binary and its JSON.
pub mod bench;
/// The local authority as every fixture sets it up: resolved hosts, seeded files, signed tokens.
pub mod authority;
/// A temp dir of real certificate/key/token files and a config loader with a fixed environment.
pub mod config;
/// Credentials built from a routes.yaml through the engine's factory, against the local authority.
pub mod credentials;
/// The data plane alone: a test PKI, an mTLS upstream that records what it saw, body types, clients.
pub mod dataplane;
/// The real `popgate dev` binary with a bound on its run time, and its table.
pub mod dev;
/// The shipped Dockerfile and Kubernetes manifests, parsed.
pub mod examples;
/// HTTP/1.1 callers: one answer type, keep-alive connections, raw exchanges.
pub mod http;
/// Caller-facing guards: caller PKI, mTLS and Unix-socket listeners, a redirecting upstream, logs.
pub mod guard;
/// The real `popgate run` binary as a child process, its JSON log, keep-alive clients.
pub mod process;
/// Raw-socket exchanges with popgate in front of a counting upstream.
pub mod raw;
/// One-route failure scenarios against the local authority, and bounded load phases.
pub mod scenario;
/// Static tokens signed with the local authority's keys, bound to certificates it issued.
pub mod signed_tokens;
/// A TLS caller listener from routes.yaml: caller CA, popgate with the listener, a TLS connector.
pub mod tls_callers;
/// A CONNECT forward proxy (a corporate proxy) recording each target and its credentials.
pub mod connect_proxy;

/// The repository root (the shipped routes.yaml, Dockerfile and examples/).
pub fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Gives a private key file mode 0600: popgate refuses a key file any user may read.
pub fn private_key_mode(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A test that cannot run here (a tool is missing) skips with `why` printed, except in CI
/// (`CI` set and not `false`/`0`, as `.ci/run` and CI services set it), where it fails: a skip
/// there would pass the run without testing anything.
#[allow(dead_code)]
pub fn skip_unless_ci(test: &str, why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "{test}: {why} (CI is set, so this is a failure, not a skip)"
    );
    eprintln!("SKIPPED {test}: {why}");
}
