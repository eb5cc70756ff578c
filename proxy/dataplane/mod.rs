//! Listeners, request forwarding, header rewriting, upstream mTLS clients.
//!
//! Per request (`request/`, one file per step): guard → route → authorize → token → rewrite → send
//! → pass back. The route is looked up in the immutable table, its snapshot `load`ed, the prebuilt
//! `Authorization` set, the request sent through the snapshot's pooled client, the answer streamed
//! back. Every listener (TCP, TLS, Unix, admin) runs the one accept loop in `serve.rs`.
//!
//! Pool bound: hyper-util's legacy pool dials whenever no idle connection is free and has no cap,
//! so `connect.rs` gives each snapshot's connector a semaphore per upstream `host:port`; every live
//! connection holds a permit until it closes. A semaphore on the dial (rather than on in-flight
//! requests) is what bounds handshakes: hyper-util finishes a dial it started even when an idle
//! connection wins the race, so an in-flight limit alone still lets connections accumulate.
//!
//! Caller-facing hardening (`connection.rs`, `limits.rs`, `framing_guard.rs`): hyper's h1/h2
//! limits set explicitly, a connection cap per listener, and per-request checks in the guard step.
//! hyper is lenient about some ambiguous HTTP/1 framing (it parses `Content-Length` +
//! `Transfer-Encoding` as chunked and hides the length), so a guard on the connection's read side
//! sees the raw heads and lets the service refuse such requests with 400 and close.

pub(crate) mod activity;
mod connection;
pub(crate) mod find_byte;
pub(crate) mod error_response;
mod framing_guard;
pub mod headers;
pub mod intercept;
pub mod limits;
pub mod listener;
pub(crate) mod opening;
mod parking;
mod progress;
mod stream_deadline;
pub mod request;
pub(crate) mod request_target;
pub(crate) mod serve;
pub mod server;
pub mod unix_listener;
pub mod www_authenticate;
mod workers;
mod write_through;

pub use crate::net::client::{UpstreamClient, UpstreamSettings};
#[doc(hidden)]
pub use framing_guard::{Followed, follow};
pub use request::{DataplaneTable, Forwarder, ProxyBody};
pub use server::{ListenerSpec, Proxy, ProxyHandle, ProxySettings};
