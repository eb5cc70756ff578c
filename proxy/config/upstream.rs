//! A route's `upstream`: an `https://` URL with a host and an optional base path, checked once
//! here so the route table can use it without checking again.

use std::fmt;
use std::str::FromStr;

use http::Uri;
use http::uri::{Authority, Scheme};

use super::canonical_path;

/// The port `https` implies; folded out of the authority so pool keys and `Host` headers match
/// what a caller would write.
const HTTPS_PORT: u16 = 443;

/// A validated upstream URL: `https`, a host, no user info, no query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    uri: Uri,
    /// `uri`'s authority with `:443` folded away.
    authority: Authority,
    /// `uri`'s path without a trailing `/` (`""` for none).
    base_path: String,
}

/// Parses `text`; the error names it and says what is wrong.
impl FromStr for Upstream {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("upstream `{text}` {why}");
        let uri: Uri = text
            .parse()
            .map_err(|_| bad("is not a URL (e.g. https://graph.microsoft.com)"))?;
        if uri.scheme() != Some(&Scheme::HTTPS) {
            return Err(bad(
                "must use https: popgate re-originates every request over TLS",
            ));
        }
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| bad("has no host"))?;
        if uri.query().is_some() {
            return Err(bad("may not carry a query"));
        }
        if authority.as_str().contains('@') {
            return Err(bad("may not carry user info"));
        }
        let authority = match authority.port_u16() {
            Some(HTTPS_PORT) => Authority::try_from(authority.host())
                .map_err(|_| bad("is not a URL (e.g. https://graph.microsoft.com)"))?,
            _ => authority.clone(),
        };
        let base_path = uri.path().trim_end_matches('/').to_owned();
        // The base path is prepended to canonical request paths; with a dot segment or `//` in
        // it, the upstream would resolve paths elsewhere than the configuration says.
        if !base_path.is_empty() && !canonical_path::is_canonical(&base_path) {
            return Err(bad(
                "has a path that is not in canonical form (no `.` or `..` segments, no `//`, \
                 no encoded unreserved characters, upper-case `%XX`)",
            ));
        }
        Ok(Self {
            uri,
            authority,
            base_path,
        })
    }
}

impl Upstream {
    /// The URL as configured.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `host[:port]` to send to, without a default `:443`.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The base path without a trailing `/` (`""` when there is none), ready to be prepended to
    /// the forwarded path. `http::Uri` shows an empty path as `/`.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.uri.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_with_a_host_are_accepted_and_443_is_folded() {
        let up = "https://up.example:443/base/".parse::<Upstream>().unwrap();
        assert_eq!(up.authority().as_str(), "up.example");
        assert_eq!(up.base_path(), "/base");
        let up = "https://up.example:9443".parse::<Upstream>().unwrap();
        assert_eq!(up.authority().as_str(), "up.example:9443");
        assert_eq!(up.base_path(), "");
        assert_eq!(up.to_string(), "https://up.example:9443/");
    }

    #[test]
    fn everything_else_is_refused_with_the_reason() {
        for (text, why) in [
            ("http://a.example", "must use https"),
            ("a.example", "must use https"),
            ("https://", "is not a URL"),
            ("not a url", "is not a URL"),
            ("https://b.example/x?y=1", "may not carry a query"),
            ("https://u@c.example", "may not carry user info"),
            ("https://d.example/v1.0/../beta", "not in canonical form"),
            ("https://d.example//v1.0", "not in canonical form"),
        ] {
            let err = text.parse::<Upstream>().unwrap_err();
            assert!(err.starts_with(&format!("upstream `{text}` ")), "{err}");
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
