//! An HTTP/1.1 client codec of popgate's own, for its upstream connections (RFC 9112): the
//! request head written from the prepared parts, the response head parsed straight into the
//! response's header map, and the response body's framing decided and decoded.
//!
//! Why not hyper's client: hyper runs each connection as a task of its own, reached through a
//! channel and answering through a oneshot, with a dispatcher loop around its codec; on popgate's
//! HTTP/1.1 path that machinery costs more than the codec (benches/MICRO.md, tenth session), and
//! driving hyper's connection from the request's task instead did not pay. A codec that the
//! request's own future uses directly can answer in the poll that reads the response.
//!
//! The pool ([`super::http1_pool`]) sends bodiless requests through it ([`super::h1_own`]);
//! requests with a body still go through hyper's client, whose connection task keeps sending a
//! streamed body while nobody reads the answer.
//!
//! What it accepts is deliberately narrower than the RFC allows, as befits a client behind
//! which many callers share connections (a response read with the wrong length would hand one
//! caller's answer to the next):
//! - a `Transfer-Encoding` other than exactly `chunked`, one together with `Content-Length`, or
//!   one in an HTTP/1.0 response is an error, not a guess;
//! - `Content-Length` must be one number (repeated equal values allowed, as hyper does);
//! - obsolete line folding, header names or values that `http` refuses, and heads past
//!   [`MAX_RESPONSE_HEAD`] or [`MAX_RESPONSE_HEADERS`] are errors;
//! - a connection is reused only after an HTTP/1.1 response without `Connection: close` whose
//!   body had a length or chunks (never one delimited by the close).

pub(crate) mod chunked;
pub(crate) mod framing;
pub(crate) mod request_head;
pub(crate) mod response_head;

/// The longest response head read (status line, fields, blank line): the same bound as the h2
/// client's header list (`h2_stream.rs`); real upstream heads are a few hundred bytes.
pub(crate) const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Header fields a response head may carry: hyper's default, so no upstream that worked through
/// hyper's client stops working.
pub(crate) const MAX_RESPONSE_HEADERS: usize = 100;
