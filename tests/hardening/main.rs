//! Hardening: access rules and caller identity, HTTP limits, smuggling, HTTP/2 abuse, open-proxy
//! refusals, secrets out of logs. One test binary; each file is a module.

#[path = "../kit/mod.rs"]
mod kit;

mod connection_deadlines;
mod hardening_access_app;
mod hardening_access_config;
mod hardening_access_rules;
mod hardening_http_config;
mod hardening_http_body_deadlines;
mod hardening_http_connections;
mod hardening_http_guard_size;
mod hardening_http_headers;
mod hardening_http_h2;
mod hardening_http_limits;
mod hardening_http_smuggling;
mod hardening_proxy_open;
mod hardening_secrets_debug;
mod h2_stream_deadlines;
mod h2_upstream_window;
mod path_canonical;
mod pool_slot_body;
