//! popgate: an egress proxy that re-originates plain HTTP over mutual TLS with Entra ID tokens.
#![forbid(unsafe_code)]

// Layers, lowest first; a module imports only from modules above it in this list
// (.ci/module_layers.py checks it):
pub mod access;
pub mod admin;
pub mod app;
pub mod certs;
pub mod config;
pub mod dataplane;
pub mod dev;
pub mod engine;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod route;
pub mod shutdown;
