//! Config layer: routes.yaml syntax and validation (identities, network, routes, drain) and
//! `popgate check`. One test binary; each file is a module.

#[path = "../kit/mod.rs"]
mod kit;

mod cli_check;
mod config_ests;
mod config_identities;
mod config_intercept;
mod config_json_schema;
mod config_mi_sources;
mod config_network;
mod config_proxy;
mod config_routes;
mod config_syntax;
mod config_upstream_pool;
mod drain_config;
