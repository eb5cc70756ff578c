//! Operations: the CLI, `/readyz`, and secrets kept out of output. One test binary; each file is a
//! module. `/metrics` (`ops_metrics`) is its own binary: it reads process-wide counters and expects
//! exact values.

#[path = "../kit/mod.rs"]
mod kit;

mod ops_access_log;
mod ops_cli;
mod ops_otlp_export;
mod ops_permanent_failure;
mod ops_probe;
mod ops_readyz;
mod ops_secret_leak;
mod ops_telemetry;
