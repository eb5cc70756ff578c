//! Why an upstream exchange failed, on either of a lane's paths (its HTTP/1.1 pool, its h2
//! connections). Its `source()` chain is the same shape on both, so a caller that reads the
//! sources (connect failure, body limit, ...) needs no branch.

use std::error::Error as StdError;
use std::fmt;

use crate::net::connect::ConnectError;

/// A failed upstream exchange; the cause is in [`StdError::source`].
#[derive(Debug)]
pub enum UpstreamError {
    /// The lane could not dial the upstream.
    Connect(ConnectError),
    /// The exchange on an upstream connection failed (reset, malformed response, request body
    /// error such as the route's body limit, the h2 handshake, ...).
    Exchange(hyper::Error),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As hyper-util's client words it (as before): the cause follows in the sources.
        match self {
            Self::Connect(_) => f.write_str("client error (Connect)"),
            Self::Exchange(_) => f.write_str("client error (SendRequest)"),
        }
    }
}

impl StdError for UpstreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Connect(e) => Some(e),
            Self::Exchange(e) => Some(e),
        }
    }
}
