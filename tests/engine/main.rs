//! Engine layer: credential sources against the local authority, the route drivers, credential file
//! reloads. One test binary; each file is a module.

#[path = "../kit/mod.rs"]
mod kit;

mod engine_driver_failures;
mod engine_driver_replay;
mod engine_driver_rotation;
mod engine_driver_tokens;
mod engine_mi_sources;
mod engine_sources_ests;
mod engine_sources_kinds;
mod engine_sources_resilience;
mod engine_sources_rotation;
mod engine_sources_transport;
mod reload_credentials;
