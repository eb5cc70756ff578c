//! `bench-load`: the HTTP/1.1 keep-alive load generator (one connection per concurrent stream).

pub mod args;
mod conn;
mod modes;
mod record;

use clap::Parser;

use crate::cli::fail;

/// Headroom of file descriptors beyond one per connection (stdio, the runtime, TLS files).
const FD_HEADROOM: u64 = 64;

pub fn main() {
    let plan = args::Cli::parse().plan().unwrap_or_else(|e| fail(e));
    crate::cli::raise_fd_limit(plan.connections as u64 + FD_HEADROOM);
    let connector = conn::Connector::new(&plan).unwrap_or_else(|e| fail(e));
    let runtime =
        crate::cli::runtime(plan.threads).unwrap_or_else(|e| fail(format!("runtime: {e}")));
    let report = runtime.block_on(modes::run(plan, connector));
    println!("{}", serde_json::Value::Object(report));
}
