//! Header rewriting between the caller and the upstream.
//!
//! Requests: drop hop-by-hop headers (RFC 9110 §7.6.1, plus those named in `Connection`), drop the
//! caller's `Authorization` and `Proxy-Authorization`, keep `TE` only as `trailers`, drop `Host`
//! (the client writes the upstream authority), set our `Authorization`, append `Via`.
//! Responses: drop hop-by-hop headers, append `Via`.

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that only describe one connection and never travel past it.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The `Via` value for a message received with `version`.
fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_2 => "2 popgate",
        Version::HTTP_3 => "3 popgate",
        Version::HTTP_10 => "1.0 popgate",
        _ => "1.1 popgate",
    })
}

/// True when `headers` holds any of the fixed hop-by-hop names (`Connection` among them).
///
/// Most messages carry none of these: one pass over the names is cheaper than removing the 7
/// names one by one, which costs a hash and a probe each.
fn has_hop_by_hop(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| HOP_BY_HOP.contains(name))
}

/// Removes the headers listed in `Connection` and the fixed hop-by-hop set.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !has_hop_by_hop(headers) {
        // No `Connection` either, so no header is named for removal.
        return;
    }
    // Collect first: the names borrow the `Connection` values we are about to remove.
    let named = crate::net::connection_header::connection_named(headers);
    for name in named {
        // `Connection: close, te` must not strip a `TE: trailers` we decide on below, nor our own
        // Authorization (set after this runs), so removing any named header is safe here.
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Rewrites a caller's request headers for the upstream.
///
/// `received` is the version the caller spoke; `authorization` the snapshot's prebuilt value.
pub fn rewrite_request(headers: &mut HeaderMap, received: Version, authorization: &HeaderValue) {
    // `TE` is rare: look it up (a hash and a probe) only when a pass over the names saw it.
    // `Some(keep)`: the caller sent `TE`, and `keep` says whether it listed `trailers`.
    let te_trailers = headers.keys().any(|name| name == header::TE).then(|| {
        headers
            .get_all(header::TE)
            .iter()
            .any(|v| v.to_str().is_ok_and(has_trailers_token))
    });
    strip_hop_by_hop(headers);
    if let Some(keep) = te_trailers {
        headers.remove(header::TE);
        if keep {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
    headers.remove(header::HOST);
    // `insert` replaces every caller value of the name (the map keeps one entry per name).
    headers.insert(header::AUTHORIZATION, upstream_authorization(authorization));
    headers.append(header::VIA, via(received));
}

/// The copy of a route's `Authorization` value that goes into an upstream request: the same
/// bytes (shared, not copied), without the sensitive mark, so that HTTP/2 sends it once per
/// upstream connection and then as an HPACK index (h2 indexes a non-sensitive `authorization`
/// only with popgate's fork, `vendor/h2/FORK.md`, which says why that is safe: callers can
/// neither send an `authorization` upstream nor see the upstream connection's bytes). The
/// snapshot's value stays sensitive; the request types holding this copy redact it in `Debug`.
pub(crate) fn upstream_authorization(token: &HeaderValue) -> HeaderValue {
    let mut value = token.clone();
    value.set_sensitive(false);
    value
}

/// Rewrites an upstream response's headers for the caller. `received` is the upstream's version.
pub fn rewrite_response(headers: &mut HeaderMap, received: Version) {
    strip_hop_by_hop(headers);
    headers.remove(header::TE);
    headers.append(header::VIA, via(received));
}

/// True when a `TE` value lists `trailers` (parameters allowed, case-insensitive).
fn has_trailers_token(value: &str) -> bool {
    value.split(',').any(|item| {
        item.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn request_drops_hop_by_hop_and_caller_credentials() {
        let mut h = map(&[
            ("host", "graph.microsoft.com"),
            ("authorization", "Bearer caller-secret"),
            ("authorization", "Basic second"),
            ("proxy-authorization", "Basic cHJveHk="),
            ("connection", "keep-alive, X-Drop-Me"),
            ("connection", "x-also"),
            ("x-drop-me", "1"),
            ("x-also", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip, trailers;q=1"),
            ("trailer", "x-checksum"),
            ("accept", "application/json"),
            ("x-keep", "yes"),
        ]);
        let auth = HeaderValue::from_static("mtls_pop abc");
        rewrite_request(&mut h, Version::HTTP_11, &auth);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        for gone in [
            "host",
            "proxy-authorization",
            "connection",
            "x-drop-me",
            "x-also",
            "keep-alive",
            "proxy-connection",
            "upgrade",
            "transfer-encoding",
        ] {
            assert!(!names.contains(&gone), "{gone} kept: {names:?}");
        }
        let auths: Vec<_> = h.get_all("authorization").iter().collect();
        assert_eq!(auths, vec!["mtls_pop abc"]);
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["trailer"], "x-checksum");
        assert_eq!(h["accept"], "application/json");
        assert_eq!(h["x-keep"], "yes");
        assert_eq!(h["via"], "1.1 popgate");
    }

    #[test]
    fn te_without_trailers_is_dropped_and_via_appends() {
        let mut h = map(&[("te", "gzip"), ("via", "1.1 corp-proxy")]);
        rewrite_request(
            &mut h,
            Version::HTTP_2,
            &HeaderValue::from_static("Bearer x"),
        );
        assert!(h.get("te").is_none());
        let vias: Vec<_> = h.get_all("via").iter().collect();
        assert_eq!(vias, vec!["1.1 corp-proxy", "2 popgate"]);
    }

    #[test]
    fn connection_naming_authorization_cannot_remove_ours() {
        let mut h = map(&[("connection", "authorization")]);
        rewrite_request(
            &mut h,
            Version::HTTP_11,
            &HeaderValue::from_static("Bearer x"),
        );
        assert_eq!(h["authorization"], "Bearer x");
    }

    #[test]
    fn response_drops_hop_by_hop_and_adds_via() {
        let mut h = map(&[
            ("connection", "close, x-server-hop"),
            ("x-server-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
            ("trailer", "x-checksum"),
        ]);
        rewrite_response(&mut h, Version::HTTP_11);
        assert!(h.get("connection").is_none());
        assert!(h.get("x-server-hop").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("transfer-encoding").is_none());
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["trailer"], "x-checksum");
        assert_eq!(h["via"], "1.1 popgate");
    }
}
