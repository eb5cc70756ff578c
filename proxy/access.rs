//! Who may use a route: the caller's identity as the listener saw it (TCP peer address, verified
//! TLS client certificate, Unix-socket peer credentials) and a route's `allow:` rules.
//!
//! A route without rules admits anyone who can reach a listener (the listeners default to
//! loopback). With rules, any one matching rule admits; a rule about something the caller's
//! connection does not have (a certificate rule on a plain listener, a uid rule over TCP) never
//! matches, so the default is to refuse.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::certs::x509;

/// The Unix-socket peer's credentials (`SO_PEERCRED`, taken when the connection was accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnixPeer {
    /// Effective user id of the connecting process.
    pub uid: u32,
    /// Effective (primary) group id of the connecting process; supplementary groups are not seen.
    pub gid: u32,
}

/// Who is on the other end of a caller connection. Built once per connection.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The TCP peer (`None` on a Unix socket).
    pub addr: Option<SocketAddr>,
    /// The verified client certificate's names (mTLS listeners only).
    pub cert: Option<Arc<CallerCert>>,
    /// The Unix-socket peer (`None` over TCP).
    pub unix: Option<UnixPeer>,
}

impl fmt::Display for Caller {
    /// A short description for logs: address, uid/gid, certificate subject. No secrets exist here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.addr, &self.unix) {
            (Some(addr), _) => write!(f, "{addr}")?,
            (None, Some(p)) => write!(f, "unix uid={} gid={}", p.uid, p.gid)?,
            (None, None) => f.write_str("unknown")?,
        }
        if let Some(cert) = &self.cert {
            write!(f, " cert={}", cert.subject)?;
        }
        Ok(())
    }
}

/// The names in a caller's leaf certificate that rules can match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerCert {
    /// The subject DN, as a set of attributes.
    pub subject: DistinguishedName,
    /// DNS SANs, lowercased, without a trailing dot.
    pub dns_sans: Vec<String>,
    /// URI SANs, as written in the certificate.
    pub uri_sans: Vec<String>,
}

/// Why a caller certificate's names could not be read.
#[derive(Debug, thiserror::Error)]
#[error("caller certificate cannot be parsed: {0}")]
pub struct CallerCertError(String);

impl CallerCert {
    /// Reads the subject and SANs of a DER certificate (the leaf rustls already verified).
    pub fn from_der(der: &[u8]) -> Result<Self, CallerCertError> {
        let cert = x509::parse(der).map_err(|e| CallerCertError(e.to_string()))?;
        let attributes = x509::attributes(&cert.tbs_certificate.subject)
            .map(|(kind, value)| {
                // A value that is not a string type must still count (dropping it would let a
                // shorter configured DN match); a NUL marker equals no configured value, since
                // configured DNs may not contain control characters.
                let value = value.map_or_else(|| "\u{0}non-string".to_owned(), str::to_owned);
                (kind.to_ascii_uppercase(), value)
            })
            .collect();
        let (dns_sans, uri_sans) =
            x509::dns_and_uri_sans(&cert).map_err(|e| CallerCertError(e.to_string()))?;
        Ok(Self {
            subject: DistinguishedName::new(attributes),
            dns_sans: dns_sans.iter().map(|d| normalize_dns(d)).collect(),
            uri_sans,
        })
    }
}

fn normalize_dns(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// A distinguished name compared as a set of `TYPE=value` attributes: `CN=app,O=corp` equals a
/// certificate subject `O=corp, CN=app` (tools print RDNs in opposite orders) but not one with an
/// extra attribute. Types are case-insensitive; values compare exactly.
#[derive(Clone, PartialEq, Eq)]
pub struct DistinguishedName(Vec<(String, String)>);

impl DistinguishedName {
    fn new(mut attributes: Vec<(String, String)>) -> Self {
        attributes.sort();
        Self(attributes)
    }
}

impl fmt::Debug for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (kind, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{kind}={value}")?;
        }
        Ok(())
    }
}

impl FromStr for DistinguishedName {
    type Err = String;

    /// `TYPE=value` pairs separated by `,` or `+`; `\` escapes the next character.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.chars().any(char::is_control) {
            return Err("may not contain control characters".into());
        }
        let mut attributes = Vec::new();
        let mut current = String::new();
        let mut chars = s.chars();
        let mut parts = Vec::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(next) => current.push(next),
                    None => return Err("ends with a lone `\\`".into()),
                },
                ',' | '+' => parts.push(std::mem::take(&mut current)),
                // An escaped `=` is kept out of the split below by this marker.
                '=' => current.push('\u{0}'),
                c => current.push(c),
            }
        }
        parts.push(current);
        for part in parts {
            let Some((kind, value)) = part.split_once('\u{0}') else {
                return Err(format!(
                    "`{}` is not TYPE=value (e.g. CN=app,O=corp)",
                    part.trim()
                ));
            };
            let kind = kind.trim().to_ascii_uppercase();
            let value = value.trim().replace('\u{0}', "=");
            if kind.is_empty() || value.is_empty() {
                return Err(format!(
                    "`{}` needs a type and a value (e.g. CN=app)",
                    part.replace('\u{0}', "=").trim()
                ));
            }
            attributes.push((kind, value));
        }
        Ok(Self::new(attributes))
    }
}

/// An IP network, host bits zero (config validation refuses `10.0.0.1/8` rather than guess
/// whether `10.0.0.0/8` or the host `10.0.0.1` was meant). IPv4 networks are stored as IPv4 even
/// when written IPv4-mapped, so they match IPv4 peers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/8`, or a bare address (a single host). Parsed here rather than by
    /// `IpNet::from_str`, which takes neither a bare address nor an IPv4-mapped network as IPv4,
    /// and cannot say which half is wrong.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let address: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP network (e.g. 10.0.0.0/8 or fd00::/8)"))?;
        let address = address.to_canonical();
        let max = if address.is_ipv4() { 32 } else { 128 };
        let bad_prefix = || format!("`{s}`: the prefix length must be 0 to {max}");
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().map_err(|_| bad_prefix())?,
        };
        let net = IpNet::new(address, prefix).map_err(|_| bad_prefix())?;
        if net.trunc() != net {
            return Err(format!(
                "`{s}` has bits set beyond the /{prefix} prefix; write the network address"
            ));
        }
        Ok(Cidr(net))
    }
}

/// One `allow:` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowRule {
    /// The TCP peer address is in this network (plain and TLS listeners).
    Cidr(Cidr),
    /// The caller certificate's subject is exactly this DN (mTLS listeners).
    Subject(DistinguishedName),
    /// The caller certificate has this DNS SAN (lowercase, no trailing dot).
    DnsSan(String),
    /// The caller certificate has this URI SAN, e.g. a SPIFFE ID (exact).
    UriSan(String),
    /// The Unix-socket peer runs as this user id.
    Uid(u32),
    /// The Unix-socket peer runs with this primary group id.
    Gid(u32),
}

impl AllowRule {
    /// A DNS SAN rule (normalized like certificate SANs).
    pub fn dns_san(name: &str) -> Self {
        AllowRule::DnsSan(normalize_dns(name))
    }

    /// Whether this rule admits `caller`.
    pub fn admits(&self, caller: &Caller) -> bool {
        let cert = caller.cert.as_deref();
        match self {
            AllowRule::Cidr(net) => caller.addr.is_some_and(|a| net.contains(a.ip())),
            AllowRule::Subject(dn) => cert.is_some_and(|c| c.subject == *dn),
            AllowRule::DnsSan(name) => cert.is_some_and(|c| c.dns_sans.iter().any(|d| d == name)),
            AllowRule::UriSan(uri) => cert.is_some_and(|c| c.uri_sans.iter().any(|u| u == uri)),
            AllowRule::Uid(uid) => caller.unix.is_some_and(|p| p.uid == *uid),
            AllowRule::Gid(gid) => caller.unix.is_some_and(|p| p.gid == *gid),
        }
    }

    /// Whether the rule needs a caller certificate (so an mTLS listener).
    pub fn needs_client_cert(&self) -> bool {
        matches!(
            self,
            AllowRule::Subject(_) | AllowRule::DnsSan(_) | AllowRule::UriSan(_)
        )
    }

    /// Whether the rule needs Unix-socket credentials.
    pub fn needs_unix_socket(&self) -> bool {
        matches!(self, AllowRule::Uid(_) | AllowRule::Gid(_))
    }
}

/// A route's `allow:` list: any matching rule admits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowList(pub Vec<AllowRule>);

impl AllowList {
    /// Whether some rule admits `caller`.
    pub fn admits(&self, caller: &Caller) -> bool {
        self.0.iter().any(|rule| rule.admits(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(ip: &str) -> Caller {
        Caller {
            addr: Some(SocketAddr::new(ip.parse().unwrap(), 1234)),
            ..Caller::default()
        }
    }

    #[test]
    fn cidr_parses_matches_and_refuses_host_bits() {
        let net: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "nope", "10.0.0.0/x", "::1/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!(
            "10.0.0.1/8"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("bits set")
        );
    }

    #[test]
    fn cidr_errors_name_the_input_and_what_is_wrong() {
        let err = |s: &str| s.parse::<Cidr>().unwrap_err();
        assert_eq!(
            err("10.0.0.1/8"),
            "`10.0.0.1/8` has bits set beyond the /8 prefix; write the network address"
        );
        assert_eq!(
            err("fd00::1/8"),
            "`fd00::1/8` has bits set beyond the /8 prefix; write the network address"
        );
        assert_eq!(
            err("tenish"),
            "`tenish` is not an IP network (e.g. 10.0.0.0/8 or fd00::/8)"
        );
        assert_eq!(
            err("10.0.0.0/33"),
            "`10.0.0.0/33`: the prefix length must be 0 to 32"
        );
        assert_eq!(err("::/x"), "`::/x`: the prefix length must be 0 to 128");
        // An IPv4-mapped network is an IPv4 one (so its prefix is at most 32).
        let mapped: Cidr = "::ffff:10.0.0.0/8".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        assert!(mapped.contains("10.9.9.9".parse().unwrap()));
        assert_eq!(
            err("::ffff:10.0.0.0/104"),
            "`::ffff:10.0.0.0/104`: the prefix length must be 0 to 32"
        );
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains("2001:db8::1".parse().unwrap()));
        assert!(!all6.contains("10.0.0.1".parse().unwrap()));
        assert_eq!(
            format!("{:?}", "fd00::/8".parse::<Cidr>().unwrap()),
            "fd00::/8"
        );
    }

    #[test]
    fn dn_is_an_order_insensitive_exact_set() {
        let a: DistinguishedName = "CN=app,O=corp".parse().unwrap();
        let b: DistinguishedName = "o=corp, cn=app".parse().unwrap();
        assert_eq!(a, b);
        let c: DistinguishedName = "CN=app,O=corp,C=US".parse().unwrap();
        assert_ne!(a, c);
        let d: DistinguishedName = "CN=App,O=corp".parse().unwrap();
        assert_ne!(a, d);
        let escaped: DistinguishedName = r"CN=a\,b,O=x\=y".parse().unwrap();
        assert_eq!(escaped.to_string(), "CN=a,b,O=x=y");
        for bad in ["", "CN", "CN=", "=x", "CN=a,", r"CN=a\"] {
            assert!(bad.parse::<DistinguishedName>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rules_only_match_what_the_connection_has() {
        let cert = Arc::new(CallerCert {
            subject: "CN=app".parse().unwrap(),
            dns_sans: vec!["app.corp.internal".into()],
            uri_sans: vec!["spiffe://corp/ns/legacy/sa/app".into()],
        });
        let mtls = Caller {
            cert: Some(cert),
            ..tcp("10.0.0.5")
        };
        let unix = Caller {
            unix: Some(UnixPeer { uid: 1000, gid: 50 }),
            ..Caller::default()
        };
        let cidr = AllowRule::Cidr("10.0.0.0/24".parse().unwrap());
        assert!(cidr.admits(&mtls));
        assert!(!cidr.admits(&tcp("10.0.1.5")));
        assert!(!cidr.admits(&unix));
        let dns = AllowRule::dns_san("APP.corp.internal.");
        assert!(dns.admits(&mtls));
        assert!(!dns.admits(&tcp("10.0.0.5")));
        assert!(AllowRule::UriSan("spiffe://corp/ns/legacy/sa/app".into()).admits(&mtls));
        assert!(!AllowRule::UriSan("spiffe://corp/ns/legacy/sa/other".into()).admits(&mtls));
        assert!(AllowRule::Subject("cn=app".parse().unwrap()).admits(&mtls));
        assert!(AllowRule::Uid(1000).admits(&unix));
        assert!(!AllowRule::Uid(0).admits(&unix));
        assert!(AllowRule::Gid(50).admits(&unix));
        assert!(!AllowRule::Uid(1000).admits(&mtls));
        let list = AllowList(vec![AllowRule::Uid(0), cidr]);
        assert!(list.admits(&mtls));
        assert!(!AllowList::default().admits(&mtls));
    }
}
