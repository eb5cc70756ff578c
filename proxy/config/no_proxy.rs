//! `no_proxy` lists as curl reads them (`NO_PROXY` / `CURLOPT_NOPROXY`): comma-separated, a lone
//! `*` matches every host, a name matches itself and every host inside it (`example.com` and
//! `.example.com` both match `example.com` and `www.example.com`, not `notexample.com`), IP
//! addresses compare as addresses and may carry a CIDR prefix (`10.0.0.0/8`, `fd00::/8`; IPv6
//! without brackets). Case-insensitive; a trailing dot is ignored on both sides.
//!
//! curl has no port-specific entries (`example.com` matches `example.com:8443` too), so an entry
//! with a port is refused rather than silently never matching. Unlike curl, a `*.` prefix
//! (`*.corp.example`, as Go and Python accept) is read as a leading dot.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// A parsed `no_proxy` list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NoProxy {
    /// `*`: no host is proxied.
    all: bool,
    entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry {
    /// A lowercased domain without leading or trailing dots.
    Domain(String),
    /// An address or network.
    Net(IpNet),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Domain(d) => write!(f, "{d}"),
            Entry::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr()),
            Entry::Net(n) => write!(f, "{n}"),
        }
    }
}

impl NoProxy {
    /// Parses the items of a list (each may itself hold comma-separated entries, as an env
    /// value does). Blank entries are skipped. The error names the offending entry.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut list = NoProxy::default();
        for item in items {
            for raw in item.split(',') {
                let entry = raw.trim();
                if entry.is_empty() {
                    continue;
                }
                if entry == "*" {
                    list.all = true;
                    continue;
                }
                list.entries.push(parse_entry(entry)?);
            }
        }
        Ok(list)
    }

    /// Whether `host` (a name, or an IP address with or without brackets) is exempt.
    pub fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = normalize(host);
        match host.parse::<IpAddr>() {
            Ok(ip) => self.entries.iter().any(|e| match e {
                Entry::Net(net) => net.contains(&ip.to_canonical()),
                Entry::Domain(_) => false,
            }),
            Err(_) => self.entries.iter().any(|e| match e {
                Entry::Domain(d) => {
                    host == *d
                        || host
                            .strip_suffix(d.as_str())
                            .is_some_and(|rest| rest.ends_with('.'))
                }
                Entry::Net(_) => false,
            }),
        }
    }

    /// The entry that exempts `host`, for `popgate check` (`*` when everything is exempt).
    pub fn matching_entry(&self, host: &str) -> Option<String> {
        if self.all {
            return Some("*".into());
        }
        self.entries
            .iter()
            .find(|e| {
                NoProxy {
                    all: false,
                    entries: vec![(*e).clone()],
                }
                .matches(host)
            })
            .map(ToString::to_string)
    }

    /// No entry at all.
    pub fn is_empty(&self) -> bool {
        !self.all && self.entries.is_empty()
    }
}

impl fmt::Display for NoProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.all {
            parts.push("*".into());
        }
        parts.extend(self.entries.iter().map(ToString::to_string));
        write!(f, "{}", parts.join(","))
    }
}

/// Lowercase, brackets and one trailing dot removed.
fn normalize(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn parse_entry(entry: &str) -> Result<Entry, String> {
    let bare = entry.trim_start_matches('[');
    let (addr, prefix) = match bare.split_once('/') {
        Some((a, p)) => (a.trim_end_matches(']'), Some(p)),
        None => (bare.trim_end_matches(']'), None),
    };
    if let Ok(ip) = addr.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("no_proxy entry `{entry}`: the prefix must be 0 to {max}")
            })?,
        };
        let net = IpNet::new(ip, prefix)
            .map_err(|_| format!("no_proxy entry `{entry}`: the prefix must be 0 to {max}"))?;
        // curl compares only the prefix bits, so `10.1.2.3/8` means `10.0.0.0/8`.
        return Ok(Entry::Net(net.trunc()));
    }
    let name = entry
        .strip_prefix("*.")
        .unwrap_or(entry)
        .trim_start_matches('.');
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.contains(':') && !name.contains('/') {
        return Err(format!(
            "no_proxy entry `{entry}` has a port; entries name hosts, domains or IP networks (curl ignores ports)"
        ));
    }
    if name.is_empty()
        || name.contains('/')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!(
            "no_proxy entry `{entry}` is not a host, domain or IP network (e.g. .corp.example, 10.0.0.0/8)"
        ));
    }
    Ok(Entry::Domain(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> NoProxy {
        NoProxy::parse([s]).unwrap()
    }

    #[test]
    fn domains_match_themselves_and_subdomains_only() {
        let l = list(" ample.com , .Corp.Example.,*.wild.test");
        for yes in [
            "ample.com",
            "www.ample.com",
            "AMPLE.com.",
            "corp.example",
            "a.b.corp.example",
            "x.wild.test",
            "wild.test",
        ] {
            assert!(l.matches(yes), "{yes}");
        }
        for no in ["www.example.com", "ample.com.org", "notcorp.example", "com"] {
            assert!(!l.matches(no), "{no}");
        }
        assert_eq!(
            l.matching_entry("a.corp.example").as_deref(),
            Some("corp.example")
        );
    }

    #[test]
    fn addresses_and_networks() {
        let l = list("192.168.0.0/16,::1,[fd00::]/8,10.1.2.3/8,127.0.0.1");
        assert!(l.matches("192.168.4.5"));
        assert!(l.matches("[::1]"));
        assert!(l.matches("fd12::5"));
        assert!(l.matches("10.200.0.1"));
        assert!(l.matches("127.0.0.1"));
        assert!(!l.matches("192.169.0.1"));
        assert!(!l.matches("::2"));
        // A name never matches an address entry (curl does not resolve for no_proxy).
        assert!(!l.matches("localhost"));
    }

    #[test]
    fn star_matches_all_and_blank_matches_none() {
        assert!(list("*").matches("anything.example"));
        assert!(list("a.test, *").matches("10.0.0.1"));
        assert!(list("").is_empty());
        assert!(!list(" , ").matches("a.test"));
    }

    #[test]
    fn bad_entries_are_refused_by_name() {
        for (bad, says) in [
            ("example.com:443", "has a port"),
            ("10.0.0.0/33", "prefix must be 0 to 32"),
            ("fd00::/200", "prefix must be 0 to 128"),
            ("a b", "is not a host"),
            ("http://x", "is not a host"),
        ] {
            let err = NoProxy::parse([bad]).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
