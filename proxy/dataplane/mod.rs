//! Listeners, request forwarding, header rewriting, upstream mTLS clients.
//!
//! Per request (`forward.rs`): look the route up in the immutable table, `load` its snapshot, set
//! the prebuilt `Authorization`, send through the snapshot's pooled client, stream the answer back.
//!
//! Pool bound: hyper-util's legacy pool dials whenever no idle connection is free and has no cap,
//! so `connect.rs` gives each snapshot's connector a semaphore per upstream `host:port`; every live
//! connection holds a permit until it closes. A semaphore on the dial (rather than on in-flight
//! requests) is what bounds handshakes: hyper-util finishes a dial it started even when an idle
//! connection wins the race, so an in-flight limit alone still lets connections accumulate.

pub mod client;
pub mod connect;
pub mod error_response;
pub mod forward;
pub mod headers;
pub mod listener;
pub mod server;
pub mod upstream_body;
pub mod upstream_tls;
pub mod www_authenticate;

pub use client::{UpstreamClient, UpstreamSettings};
pub use forward::{DataplaneTable, Forwarder};
pub use server::{ListenerSpec, Proxy, ProxyHandle, ProxySettings};
