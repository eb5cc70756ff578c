//! Open-proxy defence on the request target: the host a request names must be a plain host name
//! (or IP literal) with an optional port, and an absolute-form target must name the same host as
//! the `Host` header. Routing then only ever sees hosts that cannot smuggle another authority
//! (`evil.example@x.suffix`, `evil.example/x.suffix`, `%`-escapes) into a wildcard route's
//! default upstream.

use http::uri::Scheme;
use http::{HeaderMap, Uri, header};

/// Why a request target is refused (400).
pub(crate) type TargetError = &'static str;

const BAD_HOST: TargetError =
    "the request names a host that is not a plain host name or IP address with an optional port";
const HOST_MISMATCH: TargetError =
    "the request URL and the Host header name different hosts; popgate refuses ambiguous targets";
const BAD_HOST_HEADER: TargetError = "the Host header is not a valid host name";

/// Checks the target's authority (if absolute-form or h2 `:authority`) and the `Host` header.
/// `listener_default_port` is the port folded away when the target has no scheme.
pub(crate) fn check(
    uri: &Uri,
    headers: &HeaderMap,
    listener_default_port: u16,
) -> Result<(), TargetError> {
    let host_header = match headers.get(header::HOST) {
        Some(v) => Some(v.to_str().map_err(|_| BAD_HOST_HEADER)?),
        None => None,
    };
    let Some(authority) = uri.authority() else {
        return match host_header {
            Some(h) if split(h).is_none() => Err(BAD_HOST_HEADER),
            _ => Ok(()),
        };
    };
    let default_port = match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => 443,
        Some(s) if *s == Scheme::HTTP => 80,
        _ => listener_default_port,
    };
    let target = split(authority.as_str()).ok_or(BAD_HOST)?;
    // The usual case: the Host header repeats the target's authority byte for byte, so it is
    // just as plain and names the same host (no second split, no folding).
    if let Some(h) = host_header.filter(|h| *h != authority.as_str()) {
        let named = split(h).ok_or(BAD_HOST_HEADER)?;
        if !same_host(target, named, default_port) {
            return Err(HOST_MISMATCH);
        }
    }
    Ok(())
}

/// `(name, port)` of a syntactically plain `host[:port]`; `None` for anything else.
fn split(s: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']')?;
        let inside = &rest[..close];
        if inside.is_empty()
            || !inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        (&s[..close + 2], &rest[close + 1..])
    } else {
        match s.find(':') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        }
    };
    let port = match port {
        "" => None,
        p => {
            let digits = p.strip_prefix(':')?;
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            Some(digits.parse::<u16>().ok()?)
        }
    };
    let plain = name.starts_with('[')
        || (!name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    plain.then_some((name, port))
}

/// Same host after case folding, a trailing dot dropped and the default port folded away.
fn same_host(a: (&str, Option<u16>), b: (&str, Option<u16>), default_port: u16) -> bool {
    let trim = |n: &str| -> usize { n.strip_suffix('.').map_or(n.len(), str::len) };
    let (na, nb) = (&a.0[..trim(a.0)], &b.0[..trim(b.0)]);
    let port = |p: Option<u16>| p.filter(|p| *p != default_port);
    na.eq_ignore_ascii_case(nb) && port(a.1) == port(b.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_with(uri: &str, host: Option<&str>) -> Result<(), TargetError> {
        let mut headers = HeaderMap::new();
        if let Some(h) = host {
            headers.insert(header::HOST, h.parse().unwrap());
        }
        check(&uri.parse().unwrap(), &headers, 80)
    }

    #[test]
    fn absolute_form_must_agree_with_host_after_folding() {
        assert_eq!(check_with("http://a.example/x", Some("a.example")), Ok(()));
        assert_eq!(
            check_with("http://A.example./x", Some("a.EXAMPLE:80")),
            Ok(())
        );
        assert_eq!(
            check_with("https://a.example/x", Some("a.example:443")),
            Ok(())
        );
        assert_eq!(check_with("http://[::1]:8080/", Some("[::1]:8080")), Ok(()));
        assert_eq!(check_with("http://a.example/x", None), Ok(()));
        assert_eq!(
            check_with("http://a.example/x", Some("b.example")),
            Err(HOST_MISMATCH)
        );
        assert_eq!(
            check_with("http://a.example/x", Some("a.example:8080")),
            Err(HOST_MISMATCH)
        );
        assert_eq!(
            check_with("http://a.example:443/x", Some("a.example")),
            Err(HOST_MISMATCH)
        );
    }

    #[test]
    fn hosts_that_could_smuggle_an_authority_are_refused() {
        for host in [
            "evil.example@x.suffix",
            "evil.example/x.suffix",
            "evil%2eexample.x.suffix",
            "a.example:",
            "a.example:99999",
            "a.example:1:2",
            "[::1",
            "[zz]",
            "",
            "a b",
        ] {
            assert!(check_with("/p", Some(host)).is_err(), "{host:?}");
        }
        assert_eq!(check_with("/p", Some("a.example:8080")), Ok(()));
        // `http::Uri` accepts sub-delimiters in an authority; the host check does not.
        assert_eq!(check_with("http://a!b.example/", None), Err(BAD_HOST));
        assert_eq!(check_with("http://a$b.example/", None), Err(BAD_HOST));
        // A Host header repeating a bad authority byte for byte is refused all the same.
        assert_eq!(
            check_with("http://a!b.example/", Some("a!b.example")),
            Err(BAD_HOST)
        );
        assert_eq!(
            check_with("http://a.example:99999/", Some("a.example:99999")),
            Err(BAD_HOST)
        );
    }
}
