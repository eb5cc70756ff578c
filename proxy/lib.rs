//! popgate: an egress proxy that re-originates plain HTTP over mutual TLS with Entra ID tokens.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod credential;
pub mod dataplane;
pub mod dev;
pub mod engine;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod routing;
pub mod shutdown;
