//! popgate: an egress proxy that re-originates plain HTTP over mutual TLS with Entra ID tokens.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

// Layers, lowest first; a module imports only from modules above it in this list
// (.ci/module_layers.py checks it):
pub(crate) mod locks;
pub mod certs;
pub mod identity;
pub mod access;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod route;
pub mod engine;
pub mod shutdown;
pub mod dataplane;
pub mod admin;
pub mod app;
#[cfg(feature = "dev")]
pub mod dev;

// Above every layer: the benchmark drives the whole product. It is in production builds too; only
// its `--dev` (the local authority) needs the `dev` feature.
pub mod bench;
