//! Listeners, request forwarding, header rewriting, upstream mTLS clients.

pub mod client;
pub mod connect;
pub mod error_response;
pub mod forward;
pub mod headers;
pub mod listener;
pub mod server;
pub mod upstream_tls;

pub use client::{UpstreamClient, UpstreamSettings};
pub use forward::{DataplaneTable, Forwarder};
pub use server::{ListenerSpec, Proxy, ProxyHandle, ProxySettings};
