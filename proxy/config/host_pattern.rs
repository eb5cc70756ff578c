//! A route's `match.host`: the one grammar for host patterns (exact name or `*.suffix`, optional
//! non-default port) and for `host:port` strings, normalized the way requests are matched:
//! lowercase, no trailing dot, default ports folded away. Validation parses with it and the route
//! table matches the parsed value (see `route::host`), so nothing is parsed twice.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::identity::authority_host::is_dns_label;

/// A route's host pattern, normalized: lowercase, no trailing dot, no default port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Exactly this host.
    Exact {
        /// Lowercased host name or IP literal (IPv6 without brackets).
        host: String,
        /// A non-default port, if the pattern names one.
        port: Option<u16>,
    },
    /// `*.suffix`: names ending in `.suffix` with at least one more label.
    Wildcard {
        /// The suffix without the leading `*.`.
        suffix: String,
        /// A non-default port, if the pattern names one.
        port: Option<u16>,
    },
}

/// Ports a request's scheme implies; they are folded away before matching, so a pattern cannot
/// name them.
const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// Longest DNS name in its text form (RFC 1035 §2.3.4, without the trailing dot).
const MAX_DNS_NAME_BYTES: usize = 253;

/// A DNS name; `_` is allowed in labels (service names such as `_svc.example` exist).
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_DNS_NAME_BYTES
        && host.split('.').all(|label| {
            is_dns_label(label, |b| {
                b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
            })
        })
}

/// Splits `host[:port]` / `[v6][:port]`; lowercases the host and drops a trailing dot.
pub(crate) fn parse_host_port(text: &str) -> Result<(String, Option<u16>), String> {
    let bad = || format!("`{text}` is not a host name or IP address with an optional :port");
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        let v6: Ipv6Addr = v6.parse().map_err(|_| bad())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        (v6.to_string(), port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (text.to_owned(), None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && !p.starts_with('+') => Some(n),
            _ => return Err(bad()),
        },
    };
    if host.contains(':') {
        return Ok((host, port)); // an IPv6 literal, already validated
    }
    let host = host.strip_suffix('.').unwrap_or(&host).to_ascii_lowercase();
    if host.parse::<Ipv4Addr>().is_ok() || is_dns_name(&host) {
        Ok((host, port))
    } else {
        Err(bad())
    }
}

/// Parses a route's `match.host`: an exact name or `*.suffix`, with an optional non-default port.
/// The error names the pattern and says what is wrong.
impl FromStr for HostPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (wildcard, rest) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if rest.contains('*') {
            return Err(format!(
                "host pattern `{text}`: a wildcard is only allowed as a leading `*.` (e.g. *.vault.azure.net)"
            ));
        }
        let (host, port) = parse_host_port(rest).map_err(|_| {
            format!("host pattern `{text}` is not a host name, `*.suffix` or IP address with an optional :port")
        })?;
        if let Some(p) = port.filter(|p| DEFAULT_PORTS.contains(p)) {
            return Err(format!(
                "host pattern `{text}`: port {p} is a default port and is folded away before matching; leave it out"
            ));
        }
        if wildcard {
            if host.contains(':') || host.parse::<Ipv4Addr>().is_ok() {
                return Err(format!(
                    "host pattern `{text}`: a wildcard needs a DNS suffix, not an IP address"
                ));
            }
            Ok(HostPattern::Wildcard { suffix: host, port })
        } else {
            Ok(HostPattern::Exact { host, port })
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, host, port) = match self {
            HostPattern::Exact { host, port } => ("", host, port),
            HostPattern::Wildcard { suffix, port } => ("*.", suffix, port),
        };
        if host.contains(':') {
            write!(f, "{prefix}[{host}]")?;
        } else {
            write!(f, "{prefix}{host}")?;
        }
        if let Some(p) = port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_patterns_normalize() {
        assert_eq!(
            "Graph.Microsoft.com.".parse::<HostPattern>().unwrap(),
            HostPattern::Exact {
                host: "graph.microsoft.com".into(),
                port: None
            }
        );
        assert_eq!(
            "*.Vault.azure.net:8443".parse::<HostPattern>().unwrap(),
            HostPattern::Wildcard {
                suffix: "vault.azure.net".into(),
                port: Some(8443)
            }
        );
        assert_eq!(
            "[::1]:8443".parse::<HostPattern>().unwrap(),
            HostPattern::Exact {
                host: "::1".into(),
                port: Some(8443)
            }
        );
        assert_eq!(
            "[::1]:8443".parse::<HostPattern>().unwrap().to_string(),
            "[::1]:8443"
        );
    }

    #[test]
    fn bad_patterns() {
        for (text, expected) in [
            ("a.*.com", "leading `*.`"),
            ("host:443", "default port"),
            ("host:80", "default port"),
            ("*.10.0.0.1", "not an IP"),
            ("a.*.example", "only allowed as a leading `*.`"),
            ("h.example:http", "is not a host name"),
            ("*.", "is not a host name"),
            ("h example", "is not a host name"),
        ] {
            let err = text.parse::<HostPattern>().unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.contains(&format!("`{text}`")), "{text}: {err}");
        }
        for bad in [
            "",
            "a b",
            "host:0",
            "host:99999",
            "host:",
            "[::1",
            "ex_ample..com",
            "-a.com",
        ] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad}");
        }
    }
}
