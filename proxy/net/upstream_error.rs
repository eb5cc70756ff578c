//! Why an upstream exchange failed, on either of the client's paths (hyper-util's client for h2
//! and first contact, popgate's own HTTP/1.1 pool). Its `source()` chain is the same shape on
//! both, so a caller that reads the sources (connect failure, body limit, ...) needs no branch.

use std::error::Error as StdError;
use std::fmt;

use crate::net::connect::ConnectError;

/// A failed upstream exchange; the cause is in [`StdError::source`].
#[derive(Debug)]
pub enum UpstreamError {
    /// hyper-util's client failed (its own sources: connect error, hyper error, ...).
    Client(hyper_util::client::legacy::Error),
    /// popgate's HTTP/1.1 pool could not dial the upstream.
    Connect(ConnectError),
    /// The exchange on an HTTP/1.1 connection failed (reset, malformed response, request body
    /// error such as the route's body limit, ...).
    Exchange(hyper::Error),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As hyper-util words it: the cause follows in the sources.
        match self {
            Self::Client(e) => e.fmt(f),
            Self::Connect(_) => f.write_str("client error (Connect)"),
            Self::Exchange(_) => f.write_str("client error (SendRequest)"),
        }
    }
}

impl StdError for UpstreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            // hyper-util's error itself only names the stage: skip it, as before.
            Self::Client(e) => e.source(),
            Self::Connect(e) => Some(e),
            Self::Exchange(e) => Some(e),
        }
    }
}
