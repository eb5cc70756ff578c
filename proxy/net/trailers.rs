//! A caller's request trailers, filtered like its headers before they go upstream.
//!
//! Why: the header rewrite drops hop-by-hop names and the caller's credentials, but trailers
//! arrive after the head, as their own frame. Passed on verbatim, a caller could send
//! `authorization` (beside popgate's token), `host`, or connection-level names to the upstream,
//! and an HTTP/2 upstream treats connection-specific fields as a malformed message (RFC 9113
//! §8.2.2). RFC 9110 §6.5.1 also forbids framing, routing and authentication fields in trailers.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// Names never forwarded as trailers: hop-by-hop (RFC 9110 §7.6.1), framing, routing, and the
/// credentials popgate owns (its token goes in the head).
const NEVER_IN_TRAILERS: [HeaderName; 13] = [
    header::AUTHORIZATION,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::HOST,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::VIA,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Removes from `trailers` every name a caller may not send upstream, and the names its own
/// `Connection` trailer lists.
pub(crate) fn filter_request_trailers(trailers: &mut HeaderMap) {
    if !trailers.keys().any(|name| NEVER_IN_TRAILERS.contains(name)) {
        return;
    }
    let named = super::connection_header::connection_named(trailers);
    for name in named.iter().chain(NEVER_IN_TRAILERS.iter()) {
        trailers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_and_hop_by_hop_names_go_and_others_stay() {
        let mut t = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer caller"),
            ("proxy-authorization", "Basic x"),
            ("host", "evil.example"),
            ("connection", "x-named"),
            ("x-named", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("x-checksum", "sum"),
        ] {
            t.append(
                HeaderName::from_static(name),
                value.parse().expect("test value"),
            );
        }
        filter_request_trailers(&mut t);
        let names: Vec<&str> = t.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-checksum"]);
    }
}
