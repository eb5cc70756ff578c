//! The header names a message's own `Connection` field lists: hop-by-hop for that message, so a
//! proxy removes them (RFC 9110 §7.6.1), from headers and trailers alike.

use http::{HeaderMap, HeaderName, header};

/// Every well-formed name listed in `headers`' `Connection` values (collected, so the caller may
/// then remove `Connection` itself).
pub(crate) fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}
