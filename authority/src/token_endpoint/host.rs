//! Which host a token request addressed. TLS SNI must be present and agree with the HTTP `Host`
//! (or h2 `:authority`), and name one of the hosts the authority answers as: a `login.*` host
//! (Bearer with a client assertion) or a `[region.]mtlsauth.*` host (mTLS PoP) — protocol.md §1.

use super::errors::EstsError;

/// Hosts that issue tokens against client assertions.
pub const LOGIN_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "login.microsoft.com",
    "login.windows.net",
    "sts.windows.net",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
];

/// `login.*` hosts with a regional form `{region}.{host}` (the hosts MSAL sends regional
/// client-credential requests to: `{region}.login.microsoft.com` for the public cloud, the
/// preferred network host for the sovereign clouds).
pub const REGIONAL_LOGIN_HOSTS: &[&str] = &[
    "login.microsoft.com",
    "login.microsoftonline.us",
    "login.partner.microsoftonline.cn",
];

/// The global mTLS hosts; `{region}.{host}` is the regional form.
pub const MTLS_HOSTS: &[&str] = &[
    "mtlsauth.microsoft.com",
    "mtlsauth.microsoftonline.us",
    "mtlsauth.partner.microsoftonline.cn",
];

/// The kind of token host a request reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// `[region.]login.*`: client assertions, Bearer tokens.
    Login { region: Option<String> },
    /// `[region.]mtlsauth.*`: certificate in TLS, mTLS PoP tokens.
    Mtls { region: Option<String> },
}

/// The addressed host (lower case, no port) and its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressedHost {
    pub name: String,
    pub kind: HostKind,
}

impl AddressedHost {
    /// Whether this is an mTLS host.
    pub fn is_mtls(&self) -> bool {
        matches!(self.kind, HostKind::Mtls { .. })
    }
}

/// Strips a `:port` (IPv6 literals are left alone: no IP literal is a token host anyway).
pub fn without_port(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

/// Classifies a host name, or says why it is not a token host.
pub fn classify_name(name: &str) -> Result<HostKind, String> {
    if LOGIN_HOSTS.contains(&name) {
        return Ok(HostKind::Login { region: None });
    }
    if MTLS_HOSTS.contains(&name) {
        return Ok(HostKind::Mtls { region: None });
    }
    if let Some((region, rest)) = name.split_once('.')
        && (MTLS_HOSTS.contains(&rest) || REGIONAL_LOGIN_HOSTS.contains(&rest))
    {
        if !region.is_empty() && region.bytes().all(|b| b.is_ascii_alphanumeric()) {
            let region = Some(region.to_string());
            return Ok(if MTLS_HOSTS.contains(&rest) {
                HostKind::Mtls { region }
            } else {
                HostKind::Login { region }
            });
        }
        return Err(format!(
            "the region '{region}' of host '{name}' is not alphanumeric"
        ));
    }
    Err(format!(
        "'{name}' is not a token host of this authority ([region.]login.* or [region.]mtlsauth.*)"
    ))
}

/// Works out the addressed host from the TLS SNI and the HTTP host.
pub fn addressed_host(
    sni: Option<&str>,
    http_host: Option<&str>,
) -> Result<AddressedHost, EstsError> {
    let Some(sni) = sni else {
        return Err(EstsError::bad_request(
            "The TLS handshake carried no server name (SNI); connect by host name, e.g. login.microsoftonline.com.",
        ));
    };
    let Some(http_host) = http_host else {
        return Err(EstsError::bad_request("The request has no Host header."));
    };
    let sni = sni.to_ascii_lowercase();
    let host = without_port(http_host).to_ascii_lowercase();
    if sni != host {
        return Err(EstsError::bad_request(format!(
            "The Host header '{host}' does not match the TLS server name '{sni}'."
        )));
    }
    let kind = classify_name(&host).map_err(EstsError::bad_request)?;
    Ok(AddressedHost { name: host, kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_rules() {
        let h = |sni, host| addressed_host(Some(sni), Some(host));
        assert_eq!(
            h("login.microsoftonline.com", "login.microsoftonline.com:443")
                .unwrap()
                .kind,
            HostKind::Login { region: None }
        );
        assert_eq!(
            h("westus3.login.microsoft.com", "westus3.login.microsoft.com")
                .unwrap()
                .kind,
            HostKind::Login {
                region: Some("westus3".into())
            }
        );
        // Regional login exists only on the hosts MSAL regionalizes to.
        assert!(
            h(
                "westus3.login.microsoftonline.com",
                "westus3.login.microsoftonline.com"
            )
            .is_err()
        );
        assert_eq!(
            h(
                "westus3.mtlsauth.microsoft.com",
                "WestUS3.mtlsauth.microsoft.com"
            )
            .unwrap()
            .kind,
            HostKind::Mtls {
                region: Some("westus3".into())
            }
        );
        assert_eq!(
            h("mtlsauth.microsoftonline.us", "mtlsauth.microsoftonline.us")
                .unwrap()
                .kind,
            HostKind::Mtls { region: None }
        );
        assert!(h("login.microsoftonline.com", "mtlsauth.microsoft.com").is_err());
        assert!(
            h(
                "west-us.mtlsauth.microsoft.com",
                "west-us.mtlsauth.microsoft.com"
            )
            .is_err()
        );
        assert!(h("a.b.mtlsauth.microsoft.com", "a.b.mtlsauth.microsoft.com").is_err());
        assert!(h("login.usgovcloudapi.net", "login.usgovcloudapi.net").is_err());
        assert!(h("localhost", "localhost").is_err());
        assert!(h(".mtlsauth.microsoft.com", ".mtlsauth.microsoft.com").is_err());
        assert!(addressed_host(None, Some("login.microsoftonline.com")).is_err());
        assert!(addressed_host(Some("login.microsoftonline.com"), None).is_err());
    }
}
