//! Why an upstream exchange failed, on either of a lane's paths (its HTTP/1.1 pool, its h2
//! connections). Its `source()` chain is the same shape on both, so a caller that reads the
//! sources (connect failure, body limit, ...) needs no branch.

use std::error::Error as StdError;
use std::fmt;

use crate::net::connect::ConnectError;
use crate::net::upstream_body::BoxError;

/// A failed upstream exchange; the cause is in [`StdError::source`].
#[derive(Debug)]
pub enum UpstreamError {
    /// The lane could not dial the upstream.
    Connect(ConnectError),
    /// The exchange on an upstream HTTP/1.1 connection failed (reset, malformed response,
    /// request body error such as the route's body limit, ...).
    Exchange(hyper::Error),
    /// The h2 stream or its connection failed (reset, `GOAWAY`, malformed response, the
    /// handshake, ...).
    Stream(h2::Error),
    /// The exchange through popgate's own HTTP/1.1 codec failed (the connection, a malformed or
    /// ambiguous response head, the body's framing, ...).
    Own(BoxError),
    /// The request body failed before the h2 upstream answered (the caller's read error, the
    /// route's body limit, a stall); the stream was reset.
    RequestBody(BoxError),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As hyper-util's client words it (as before): the cause follows in the sources.
        match self {
            Self::Connect(_) => f.write_str("client error (Connect)"),
            Self::Exchange(_) | Self::Stream(_) | Self::RequestBody(_) | Self::Own(_) => {
                f.write_str("client error (SendRequest)")
            }
        }
    }
}

impl StdError for UpstreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Connect(e) => Some(e),
            Self::Exchange(e) => Some(e),
            Self::Stream(e) => Some(e),
            Self::RequestBody(e) | Self::Own(e) => Some(e.as_ref()),
        }
    }
}
