//! How a request's host meets a route's [`HostPattern`]: both are turned into the same lookup key,
//! the lowercased host without a trailing dot (IPv6 in brackets), then `:port` unless the port is
//! the default one. Patterns are parsed and validated once, in `config::host_pattern`; request
//! hosts are not validated: one that is not `host[:port]` simply matches nothing.

use std::borrow::Cow;

use crate::config::HostPattern;

/// A pattern's lookup key, and which map of the table it belongs in.
pub(crate) enum PatternKey {
    /// Matches a request key equal to it.
    Exact(Box<str>),
    /// Matches a request key ending in `.` + it, with at least one label before.
    Wildcard(Box<str>),
}

/// The key `pattern` is stored under. Validated patterns never carry a default port, so a port
/// here is always part of the key.
pub(crate) fn pattern_key(pattern: &HostPattern) -> PatternKey {
    let (host, port) = match pattern {
        HostPattern::Exact { host, port } | HostPattern::Wildcard { suffix: host, port } => {
            (host, port)
        }
    };
    let mut key = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    if let Some(p) = port {
        key.push(':');
        key.push_str(&p.to_string());
    }
    match pattern {
        HostPattern::Exact { .. } => PatternKey::Exact(key.into()),
        HostPattern::Wildcard { .. } => PatternKey::Wildcard(key.into()),
    }
}

/// A request's lookup key: lowercase host, no trailing dot, `:port` only when not `default_port`
/// (the default port of the scheme the caller used). Borrows when the host is already in that
/// form; `None` when `host` is not `name[:port]`.
pub(crate) fn request_key(host: &str, default_port: u16) -> Option<Cow<'_, str>> {
    let (name, port) = split_host_port(host)?;
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let port = port.filter(|p| *p != default_port);
    let lower = !name.bytes().any(|b| b.is_ascii_uppercase());
    match port {
        None if lower => Some(Cow::Borrowed(name)),
        None => Some(Cow::Owned(name.to_ascii_lowercase())),
        Some(p) => {
            let mut key = name.to_ascii_lowercase();
            key.push(':');
            key.push_str(&p.to_string());
            Some(Cow::Owned(key))
        }
    }
}

/// `name[:port]` (IPv6 in brackets, which stay on the name) → (name, port). `None` when the port
/// is not a u16 or text follows the brackets.
fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    let colon = if s.starts_with('[') {
        let close = s.find(']')?;
        match &s[close + 1..] {
            "" => None,
            rest if rest.starts_with(':') => Some(close + 1),
            _ => return None,
        }
    } else {
        s.rfind(':')
    };
    match colon {
        Some(i) => Some((&s[..i], Some(s[i + 1..].parse().ok()?))),
        None => Some((s, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(pattern: &str) -> String {
        match pattern_key(&pattern.parse().unwrap()) {
            PatternKey::Exact(k) => k.into(),
            PatternKey::Wildcard(k) => format!("*.{k}"),
        }
    }

    #[test]
    fn pattern_keys_are_what_a_matching_request_normalizes_to() {
        for (pattern, request, default_port) in [
            ("Graph.Microsoft.com.", "GRAPH.microsoft.com.", 80),
            ("svc.example:8443", "svc.example:8443", 80),
            ("[::1]:8443", "[::1]:8443", 443),
            ("10.0.0.1", "10.0.0.1:443", 443),
        ] {
            let key = request_key(request, default_port).unwrap();
            assert_eq!(key_of(pattern), key, "{pattern} / {request}");
        }
        assert_eq!(key_of("*.Vault.azure.net:8443"), "*.vault.azure.net:8443");
    }

    #[test]
    fn request_keys_fold_only_the_callers_default_port_and_borrow_when_they_can() {
        assert!(matches!(
            request_key("a.example", 80),
            Some(Cow::Borrowed("a.example"))
        ));
        assert_eq!(request_key("a.example:443", 80).unwrap(), "a.example:443");
        assert_eq!(request_key("A.example:80", 80).unwrap(), "a.example");
        for garbage in ["", ":", ":80", "[", "[::1", "[::1]x", "a:99999", "a:x"] {
            assert!(request_key(garbage, 80).is_none(), "{garbage}");
        }
    }
}
