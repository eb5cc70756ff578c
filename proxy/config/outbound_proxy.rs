//! The outbound (corporate) HTTP proxy: its URL as curl reads `HTTPS_PROXY`, its Basic
//! credentials (kept out of every `Display`, `Debug` and error), and which hosts bypass it.
//!
//! Only `http://` proxies are supported: popgate opens a plain TCP connection to the proxy and
//! asks it for a `CONNECT` tunnel, inside which the TLS (and mTLS) handshake runs end to end.
//!
//! The password is held only as the `Proxy-Authorization` value (`Basic base64(user:password)`,
//! as good as the password), in a [`Zeroizing`] buffer sized exactly so it never reallocates;
//! the decoded `user:password` in between is zeroized too. What cannot be zeroized from here:
//! the process environment (`credentials_env`, `HTTPS_PROXY`: `std::env::var` hands out a copy,
//! and the environment block itself lives as long as the process), the config file's text when
//! the URL carries the credentials (parsed by serde-saphyr into plain `String`s), and the
//! kernel's socket buffers the CONNECT head is written through. No HTTP library ever holds a
//! copy: popgate writes the CONNECT head itself (`net/proxy_tunnel.rs`, a layer above config),
//! so hyper never sees the header.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::no_proxy::NoProxy;

/// curl's default proxy port when the URL names none.
pub const DEFAULT_PROXY_PORT: u16 = 1080;

/// A `Proxy-Authorization` header value (`Basic …`). Never shown; zeroized when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAuthorization(Zeroizing<String>);

/// The scheme prefix of a Basic `Proxy-Authorization` value.
const BASIC_PREFIX: &str = "Basic ";

impl ProxyAuthorization {
    /// `Basic base64(user:password)`. Every buffer the credentials pass through is sized
    /// exactly up front (no reallocation leaves a copy behind) and zeroized when dropped.
    pub fn basic(user: &str, password: &str) -> Self {
        let mut plain = Zeroizing::new(Vec::with_capacity(user.len() + 1 + password.len()));
        plain.extend_from_slice(user.as_bytes());
        plain.push(b':');
        plain.extend_from_slice(password.as_bytes());
        // `encode_slice` writes straight into our buffer (`encode_string` would stage the
        // output in a stack buffer of its own, which nothing zeroizes).
        let encoded = base64::encoded_len(plain.len(), true).unwrap_or(usize::MAX);
        let mut value = Zeroizing::new(vec![0u8; BASIC_PREFIX.len().saturating_add(encoded)]);
        value[..BASIC_PREFIX.len()].copy_from_slice(BASIC_PREFIX.as_bytes());
        let written = STANDARD
            .encode_slice(&*plain, &mut value[BASIC_PREFIX.len()..])
            .unwrap_or(0);
        value.truncate(BASIC_PREFIX.len() + written);
        // Base64 and the prefix are ASCII, so this never fails; an empty value would be
        // refused by the proxy, never leak.
        let text = String::from_utf8(std::mem::take(&mut *value)).unwrap_or_default();
        Self(Zeroizing::new(text))
    }

    /// The header value, to be written on the wire only.
    pub fn header_value(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProxyAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProxyAuthorization(<redacted>)")
    }
}

/// A parsed proxy URL: `[http://][user[:password]@]host[:port][/]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (curl's default 1080 when absent).
    pub port: u16,
    /// Credentials from the URL's userinfo, percent-decoded.
    pub authorization: Option<ProxyAuthorization>,
}

impl ProxyUrl {
    /// Parses `text`. Errors show the URL with any userinfo replaced by `***`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let shown = redact_url(text);
        let text = text.trim();
        let rest = match text.split_once("://") {
            Some((scheme, rest)) => {
                match scheme.to_ascii_lowercase().as_str() {
                    "http" => {}
                    "https" => {
                        return Err(format!(
                            "proxy `{shown}`: https:// proxies (TLS to the proxy) are not supported; use http:// (the connections inside the tunnel are TLS end to end)"
                        ));
                    }
                    other => {
                        return Err(format!(
                            "proxy `{shown}`: scheme `{other}` is not supported; use http://host:port"
                        ));
                    }
                }
                rest
            }
            None => text,
        };
        let authority = match rest.find(['/', '?', '#']) {
            Some(i) if &rest[i..] == "/" => &rest[..i],
            Some(_) => {
                return Err(format!(
                    "proxy `{shown}` must be http://host:port with no path or query"
                ));
            }
            None => rest,
        };
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let bad =
            || format!("proxy `{shown}` must be http://host:port (e.g. http://proxy.corp:3128)");
        let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(bad)?;
            h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (h.to_string(), port)
        } else {
            match host_port.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (host_port.to_string(), None),
            }
        };
        let port = match port {
            None => DEFAULT_PROXY_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
        };
        if host.is_empty()
            || !(host.parse::<IpAddr>().is_ok()
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
        {
            return Err(bad());
        }
        let authorization = match userinfo {
            None => None,
            Some(u) => {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user)
                    .ok_or_else(|| format!("proxy `{shown}`: bad %-escape in the credentials"))?;
                let password = percent_decode(password)
                    .ok_or_else(|| format!("proxy `{shown}`: bad %-escape in the credentials"))?;
                Some(ProxyAuthorization::basic(&user, &password))
            }
        };
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
            authorization,
        })
    }
}

/// `text` with the userinfo of its authority replaced by `***` (`http://***@proxy:3128`).
pub fn redact_url(text: &str) -> String {
    let text = text.trim();
    let (scheme, rest) = match text.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), text),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => format!("{scheme}{rest}"),
    }
}

/// `%XX` decoding (userinfo may escape `:` and `@`); `None` on a bad escape or non-UTF-8. The
/// output is never longer than the input, so its buffer never reallocates; it is zeroized.
fn percent_decode(s: &str) -> Option<Zeroizing<String>> {
    let bytes = s.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    match String::from_utf8(std::mem::take(&mut *out)) {
        Ok(text) => Some(Zeroizing::new(text)),
        Err(e) => {
            drop(Zeroizing::new(e.into_bytes()));
            None
        }
    }
}

/// Why a host is reached directly although a proxy is configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bypass {
    /// Loopback, `localhost`, or link-local (IMDS lives at 169.254.169.254): never proxied.
    Local,
    /// The IMDS or a managed-identity endpoint: never proxied.
    ManagedIdentity,
    /// A `no_proxy` entry matched.
    NoProxy(String),
}

impl fmt::Display for Bypass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bypass::Local => f.write_str("loopback/link-local, never proxied"),
            Bypass::ManagedIdentity => f.write_str("managed-identity endpoint, never proxied"),
            Bypass::NoProxy(entry) => write!(f, "no_proxy {entry}"),
        }
    }
}

/// The proxy in force: where it is, its credentials, and what bypasses it.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboundProxy {
    url: ProxyUrl,
    /// Hosts exempt from the proxy.
    pub no_proxy: NoProxy,
    /// Extra hosts always reached directly (IMDS and managed-identity endpoints).
    direct_hosts: Vec<String>,
    /// Where the setting came from (`network.proxy`, or the environment variable's name).
    pub origin: String,
}

impl OutboundProxy {
    /// A proxy at `url` (its own credentials unless `authorization` replaces them).
    pub fn new(
        mut url: ProxyUrl,
        authorization: Option<ProxyAuthorization>,
        no_proxy: NoProxy,
        origin: impl Into<String>,
    ) -> Self {
        if authorization.is_some() {
            url.authorization = authorization;
        }
        Self {
            url,
            no_proxy,
            direct_hosts: Vec::new(),
            origin: origin.into(),
        }
    }

    /// Also reach `host` directly (the IMDS / managed-identity endpoint hosts).
    pub fn with_direct_host(mut self, host: &str) -> Self {
        self.direct_hosts.push(normalize_host(host));
        self
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.url.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.url.port
    }

    /// The `Proxy-Authorization` value to send, if credentials were given.
    pub fn authorization(&self) -> Option<&ProxyAuthorization> {
        self.url.authorization.as_ref()
    }

    /// `None`: tunnel to `host` through the proxy; `Some`: connect directly, and why.
    pub fn bypass(&self, host: &str) -> Option<Bypass> {
        let host = normalize_host(host);
        let local = match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => v4.is_loopback() || v4.is_link_local(),
            Ok(IpAddr::V6(v6)) => {
                v6.is_loopback()
                    || (v6.segments()[0] & 0xffc0) == 0xfe80
                    || v6
                        .to_ipv4_mapped()
                        .is_some_and(|v4| v4.is_loopback() || v4.is_link_local())
            }
            Err(_) => host == "localhost" || host.ends_with(".localhost"),
        };
        if local {
            return Some(Bypass::Local);
        }
        if self.direct_hosts.contains(&host) {
            return Some(Bypass::ManagedIdentity);
        }
        self.no_proxy.matching_entry(&host).map(Bypass::NoProxy)
    }
}

fn normalize_host(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

impl fmt::Display for OutboundProxy {
    /// `http://host:port`, or `http://***@host:port` when it has credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let creds = if self.url.authorization.is_some() {
            "***@"
        } else {
            ""
        };
        if self.url.host.contains(':') {
            write!(f, "http://{creds}[{}]:{}", self.url.host, self.url.port)
        } else {
            write!(f, "http://{creds}{}:{}", self.url.host, self.url.port)
        }
    }
}

impl fmt::Debug for OutboundProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundProxy")
            .field("url", &format_args!("{self}"))
            .field("no_proxy", &format_args!("{}", self.no_proxy))
            .field("direct_hosts", &self.direct_hosts)
            .field("origin", &self.origin)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_curl_reads_them() {
        let u = ProxyUrl::parse("http://proxy.corp:3128").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("proxy.corp", 3128));
        assert!(u.authorization.is_none());
        let u = ProxyUrl::parse("Proxy.Corp").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port),
            ("proxy.corp", DEFAULT_PROXY_PORT)
        );
        let u = ProxyUrl::parse("http://[::1]:8080/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        let u = ProxyUrl::parse("http://al%40ice:p%3Ass@10.0.0.1:3128").unwrap();
        assert_eq!(
            u.authorization.unwrap().header_value(),
            ProxyAuthorization::basic("al@ice", "p:ss").header_value()
        );
    }

    #[test]
    fn the_basic_value_is_built_without_reallocating() {
        for (user, password) in [("u", "pw"), ("corp-user", "pa55:w0rd-s3cret"), ("a", "")] {
            let auth = ProxyAuthorization::basic(user, password);
            let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
            assert_eq!(auth.header_value(), expected);
            assert_eq!(auth.0.len(), auth.0.capacity(), "{user}");
        }
    }

    #[test]
    fn bad_urls_never_show_credentials() {
        for (bad, says) in [
            ("https://u:s3cret@p:3128", "https:// proxies"),
            ("socks5://u:s3cret@p:1080", "scheme `socks5`"),
            ("http://u:s3cret@p:99999", "must be http://host:port"),
            ("http://u:s3cret@p:3128/path", "no path"),
            ("http://u:s3cret@:3128", "must be http://host:port"),
            ("http://u:s3%zzcret@p:3128", "bad %-escape"),
        ] {
            let err = ProxyUrl::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(!err.contains("s3cret") && !err.contains("s3%zz"), "{err}");
            assert!(err.contains("***@"), "{err}");
        }
    }

    #[test]
    fn display_and_debug_are_redacted() {
        let p = OutboundProxy::new(
            ProxyUrl::parse("http://user:s3cret@proxy:3128").unwrap(),
            None,
            NoProxy::default(),
            "HTTPS_PROXY",
        );
        assert_eq!(p.to_string(), "http://***@proxy:3128");
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("s3cret") && !debug.contains("user"),
            "{debug}"
        );
        let encoded = p.authorization().unwrap().header_value().to_string();
        assert!(!debug.contains(&encoded[6..]), "{debug}");
    }

    #[test]
    fn local_and_managed_identity_hosts_bypass() {
        let p = OutboundProxy::new(
            ProxyUrl::parse("http://proxy:3128").unwrap(),
            None,
            NoProxy::parse([".corp.example"]).unwrap(),
            "network.proxy",
        )
        .with_direct_host("imds.example");
        for local in [
            "127.0.0.1",
            "[::1]",
            "169.254.169.254",
            "fe80::1",
            "localhost",
            "::ffff:127.0.0.1",
        ] {
            assert_eq!(p.bypass(local), Some(Bypass::Local), "{local}");
        }
        assert_eq!(p.bypass("IMDS.example."), Some(Bypass::ManagedIdentity));
        assert_eq!(
            p.bypass("api.corp.example"),
            Some(Bypass::NoProxy("corp.example".into()))
        );
        assert_eq!(p.bypass("graph.microsoft.com"), None);
        assert_eq!(p.bypass("10.0.0.1"), None);
    }
}
