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

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

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
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| CallerCertError(e.to_string()))?;
        let registry = x509_parser::objects::oid_registry();
        let mut attributes = Vec::new();
        for attr in cert.subject().iter_attributes() {
            let oid = attr.attr_type();
            let kind = x509_parser::objects::oid2abbrev(oid, registry)
                .map(str::to_ascii_uppercase)
                .unwrap_or_else(|_| oid.to_id_string());
            // A value that is not a string type must still count (dropping it would let a
            // shorter configured DN match); a NUL marker equals no configured value, since
            // configured DNs may not contain control characters.
            let value = attr
                .as_str()
                .map_or_else(|_| "\u{0}non-string".to_owned(), str::to_owned);
            attributes.push((kind, value));
        }
        let mut dns_sans = Vec::new();
        let mut uri_sans = Vec::new();
        let sans = cert
            .subject_alternative_name()
            .map_err(|e| CallerCertError(e.to_string()))?;
        for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(d) => dns_sans.push(normalize_dns(d)),
                GeneralName::URI(u) => uri_sans.push((*u).to_owned()),
                _ => {}
            }
        }
        Ok(Self {
            subject: DistinguishedName::new(attributes),
            dns_sans,
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

/// An IP network: an address and a prefix length, host bits zero.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/8`, or a bare address (a single host).
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an IP network (e.g. 10.0.0.0/8 or fd00::/8)"))?;
        let network = network.to_canonical();
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        let cidr = Cidr { network, prefix };
        if !cidr.contains(network) || host_bits_set(network, prefix) {
            return Err(format!(
                "`{s}` has bits set beyond the /{prefix} prefix; write the network address"
            ));
        }
        Ok(cidr)
    }
}

fn host_bits_set(ip: IpAddr, prefix: u8) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let host = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            u32::from(v4) & host != 0
        }
        IpAddr::V6(v6) => {
            let host = u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            u128::from(v6) & host != 0
        }
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
