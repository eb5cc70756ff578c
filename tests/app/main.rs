//! The app and its binary: `popgate run` (plain and TLS listeners), config reload, drain on
//! signals, `popgate dev`, `popgate bench`. One test binary; each file is a module.

#[path = "../kit/mod.rs"]
mod kit;

mod bench_admin;
mod bench_dev;
mod bench_input;
mod bench_stall;
mod dev_once;
mod dev_proxy;
mod dev_register;
mod dev_serve;
mod dev_troubleshooting;
mod drain_signals;
mod reload_app;
mod reload_under_load;
mod run_binary;
mod run_tls_listener;
mod workers;
