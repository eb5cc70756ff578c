//! Entra ID host rules (protocol.md §1): which token host a confidential client talks to for
//! mTLS PoP and for Bearer (each global or regional, as MSAL.NET computes them).
//!
//! Pure functions: config validation refuses a bad host at load time with the same rules the
//! credential code uses at run time, so `popgate check` and the wire never disagree.

/// Public-cloud authority aliases; they all map to the single public mTLS host.
const PUBLIC_CLOUD_ALIASES: &[&str] = &[
    "login.microsoftonline.com",
    "login.windows.net",
    "login.microsoft.com",
    "sts.windows.net",
];

/// The public-cloud mTLS token host.
const PUBLIC_MTLS_HOST: &str = "mtlsauth.microsoft.com";

/// Authority hosts that are legacy aliases without an mTLS endpoint, with the host to use instead.
const REFUSED_FOR_MTLS: &[(&str, &str)] = &[
    ("login.usgovcloudapi.net", "login.microsoftonline.us"),
    ("login.chinacloudapi.cn", "login.partner.microsoftonline.cn"),
];

/// Tenant names that are not real tenants: client-credential flows need a tenant GUID or domain.
const NOT_A_REAL_TENANT: &[&str] = &["common", "organizations", "consumers"];

/// The default authority host when a config does not name one.
pub(crate) const DEFAULT_AUTHORITY_HOST: &str = "login.microsoftonline.com";

/// Why a host, region or tenant cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HostRuleError {
    /// The value is not a bare DNS host name.
    #[error("`{0}` is not a bare host name (expected something like login.microsoftonline.com)")]
    NotAHostName(String),
    /// A legacy alias that has no mTLS endpoint.
    #[error("authority host `{host}` is refused for mTLS PoP: use `{use_instead}`")]
    RefusedAlias {
        /// The refused host.
        host: String,
        /// The host to configure instead.
        use_instead: &'static str,
    },
    /// A host that does not start with `login.` (and is not a public-cloud alias).
    #[error(
        "authority host `{0}` is refused for mTLS PoP: only `login.*` hosts have an mtlsauth counterpart"
    )]
    NotLoginHost(String),
    /// A region with characters other than ASCII letters and digits.
    #[error("region `{0}` must be ASCII letters and digits only (e.g. westus3)")]
    BadRegion(String),
    /// `common`, `organizations` or `consumers`.
    #[error(
        "tenant `{0}` is not a real tenant: app-only and mTLS PoP flows need a tenant GUID or domain"
    )]
    NotARealTenant(String),
}

/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_DNS_LABEL_BYTES: usize = 63;

/// Whether `label` is one DNS label: 1–63 bytes, no leading or trailing `-`, every byte accepted
/// by `byte_ok` (callers differ on case and `_`).
pub(crate) fn is_dns_label(label: &str, byte_ok: impl Fn(u8) -> bool) -> bool {
    !label.is_empty()
        && label.len() <= MAX_DNS_LABEL_BYTES
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.bytes().all(byte_ok)
}

/// Lowercases `host`, drops one trailing dot and checks it is a plain DNS name.
pub(crate) fn normalize_host(host: &str) -> Result<String, HostRuleError> {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let lower = trimmed.to_ascii_lowercase();
    let labels_ok = !lower.is_empty()
        && lower.split('.').all(|label| {
            is_dns_label(label, |b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
            })
        });
    if labels_ok && lower.contains('.') {
        Ok(lower)
    } else {
        Err(HostRuleError::NotAHostName(host.to_owned()))
    }
}

/// Whether `region` is a usable ESTS region name (ASCII alphanumeric, non-empty).
pub(crate) fn is_valid_region(region: &str) -> bool {
    !region.is_empty() && region.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The mTLS PoP token host for `authority_host`, optionally regional (`{region}.mtlsauth.…`).
///
/// Public-cloud aliases map to `mtlsauth.microsoft.com`; any other `login.X` maps to
/// `mtlsauth.X`; legacy aliases and non-`login.` hosts are refused.
pub(crate) fn mtls_token_host(
    authority_host: &str,
    region: Option<&str>,
) -> Result<String, HostRuleError> {
    let host = normalize_host(authority_host)?;
    if let Some((_, use_instead)) = REFUSED_FOR_MTLS.iter().find(|(h, _)| *h == host) {
        return Err(HostRuleError::RefusedAlias { host, use_instead });
    }
    let global = if PUBLIC_CLOUD_ALIASES.contains(&host.as_str()) {
        PUBLIC_MTLS_HOST.to_owned()
    } else if let Some(rest) = host.strip_prefix("login.") {
        format!("mtlsauth.{rest}")
    } else {
        return Err(HostRuleError::NotLoginHost(host));
    };
    match region {
        None => Ok(global),
        Some(r) if is_valid_region(r) => Ok(format!("{}.{global}", r.to_ascii_lowercase())),
        Some(r) => Err(HostRuleError::BadRegion(r.to_owned())),
    }
}

/// The public cloud's regional Bearer host: MSAL sends regional client-credential requests for
/// every public-cloud alias to `{region}.login.microsoft.com`
/// (`RegionAndMtlsDiscoveryProvider.PublicEnvForRegional`).
const PUBLIC_REGIONAL_LOGIN_HOST: &str = "login.microsoft.com";

/// Aliases of the other clouds MSAL knows, with the host it sends their requests to (the
/// "preferred network" of `KnownMetadataProvider`); a region prefixes that host.
const PREFERRED_NETWORK_HOST: &[(&str, &str)] = &[
    ("login.chinacloudapi.cn", "login.partner.microsoftonline.cn"),
    ("login.usgovcloudapi.net", "login.microsoftonline.us"),
    ("sts.windows-ppe.net", "login.windows-ppe.net"),
    ("login.microsoft-ppe.com", "login.windows-ppe.net"),
];

/// The Bearer (client credentials) token host, as MSAL.NET computes it
/// (`RegionAndMtlsDiscoveryProvider.GetRegionalizedEnvironment`):
///
/// - without a region: the authority host itself, normalized;
/// - with a region R, a public-cloud alias: `R.login.microsoft.com`;
/// - with a region R, another cloud: `R.` + the cloud's preferred network host (an alias such
///   as `login.usgovcloudapi.net` becomes `login.microsoftonline.us`), any other host as is;
/// - a host that already starts with `R.` is kept.
pub(crate) fn bearer_token_host(
    authority_host: &str,
    region: Option<&str>,
) -> Result<String, HostRuleError> {
    let host = normalize_host(authority_host)?;
    let Some(region) = region else {
        return Ok(host);
    };
    if !is_valid_region(region) {
        return Err(HostRuleError::BadRegion(region.to_owned()));
    }
    let region = region.to_ascii_lowercase();
    if host.starts_with(&format!("{region}.")) {
        return Ok(host);
    }
    if PUBLIC_CLOUD_ALIASES.contains(&host.as_str()) {
        return Ok(format!("{region}.{PUBLIC_REGIONAL_LOGIN_HOST}"));
    }
    let preferred = PREFERRED_NETWORK_HOST
        .iter()
        .find(|(alias, _)| *alias == host)
        .map_or(host.as_str(), |(_, preferred)| preferred);
    Ok(format!("{region}.{preferred}"))
}

/// Refuses tenant names that are not a single real tenant.
pub(crate) fn check_tenant(tenant: &str) -> Result<(), HostRuleError> {
    if NOT_A_REAL_TENANT
        .iter()
        .any(|t| t.eq_ignore_ascii_case(tenant))
    {
        Err(HostRuleError::NotARealTenant(tenant.to_owned()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_cloud_aliases_map_to_the_public_mtls_host() {
        for alias in PUBLIC_CLOUD_ALIASES {
            assert_eq!(
                mtls_token_host(alias, None).unwrap(),
                "mtlsauth.microsoft.com"
            );
        }
        assert_eq!(
            mtls_token_host("Login.MicrosoftOnline.com.", None).unwrap(),
            "mtlsauth.microsoft.com"
        );
    }

    #[test]
    fn sovereign_clouds_swap_login_for_mtlsauth() {
        assert_eq!(
            mtls_token_host("login.microsoftonline.us", None).unwrap(),
            "mtlsauth.microsoftonline.us"
        );
        assert_eq!(
            mtls_token_host("login.partner.microsoftonline.cn", None).unwrap(),
            "mtlsauth.partner.microsoftonline.cn"
        );
    }

    #[test]
    fn region_prefixes_the_host() {
        assert_eq!(
            mtls_token_host("login.microsoftonline.com", Some("westus3")).unwrap(),
            "westus3.mtlsauth.microsoft.com"
        );
        assert_eq!(
            mtls_token_host("login.microsoftonline.us", Some("usgovvirginia")).unwrap(),
            "usgovvirginia.mtlsauth.microsoftonline.us"
        );
        assert_eq!(
            mtls_token_host("login.microsoftonline.com", Some("west-us")),
            Err(HostRuleError::BadRegion("west-us".into()))
        );
        assert_eq!(
            mtls_token_host("login.microsoftonline.com", Some("")),
            Err(HostRuleError::BadRegion(String::new()))
        );
    }

    #[test]
    fn legacy_aliases_and_non_login_hosts_are_refused() {
        assert_eq!(
            mtls_token_host("login.usgovcloudapi.net", None),
            Err(HostRuleError::RefusedAlias {
                host: "login.usgovcloudapi.net".into(),
                use_instead: "login.microsoftonline.us"
            })
        );
        assert_eq!(
            mtls_token_host("login.chinacloudapi.cn", Some("chinaeast")),
            Err(HostRuleError::RefusedAlias {
                host: "login.chinacloudapi.cn".into(),
                use_instead: "login.partner.microsoftonline.cn"
            })
        );
        assert_eq!(
            mtls_token_host("contoso.b2clogin.com", None),
            Err(HostRuleError::NotLoginHost("contoso.b2clogin.com".into()))
        );
    }

    #[test]
    fn malformed_hosts_are_refused() {
        for bad in [
            "",
            "https://login.microsoftonline.com",
            "login",
            "login..com",
            "a b.com",
            "-x.com",
        ] {
            assert_eq!(
                mtls_token_host(bad, None),
                Err(HostRuleError::NotAHostName(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn bearer_uses_the_authority_host_itself() {
        assert_eq!(
            bearer_token_host("LOGIN.microsoftonline.us", None).unwrap(),
            "login.microsoftonline.us"
        );
        assert!(bearer_token_host("not a host", None).is_err());
    }

    #[test]
    fn regional_bearer_hosts_follow_msal() {
        for alias in PUBLIC_CLOUD_ALIASES {
            assert_eq!(
                bearer_token_host(alias, Some("westus3")).unwrap(),
                "westus3.login.microsoft.com",
                "{alias}"
            );
        }
        for (authority, regional) in [
            (
                "login.microsoftonline.us",
                "usgovvirginia.login.microsoftonline.us",
            ),
            (
                "login.usgovcloudapi.net",
                "usgovvirginia.login.microsoftonline.us",
            ),
            (
                "login.partner.microsoftonline.cn",
                "usgovvirginia.login.partner.microsoftonline.cn",
            ),
            (
                "login.chinacloudapi.cn",
                "usgovvirginia.login.partner.microsoftonline.cn",
            ),
            (
                "login.sovcloud-identity.fr",
                "usgovvirginia.login.sovcloud-identity.fr",
            ),
            (
                "login.microsoft-ppe.com",
                "usgovvirginia.login.windows-ppe.net",
            ),
            (
                "login.contoso.example",
                "usgovvirginia.login.contoso.example",
            ),
            // Already regional: kept.
            (
                "usgovvirginia.login.microsoftonline.us",
                "usgovvirginia.login.microsoftonline.us",
            ),
        ] {
            assert_eq!(
                bearer_token_host(authority, Some("UsGovVirginia")).unwrap(),
                regional,
                "{authority}"
            );
        }
        assert_eq!(
            bearer_token_host("login.microsoftonline.com", Some("west.us")),
            Err(HostRuleError::BadRegion("west.us".into()))
        );
    }

    #[test]
    fn tenant_rules() {
        assert!(check_tenant("751a212b-4003-416e-b600-e1f48e40db9f").is_ok());
        assert!(check_tenant("contoso.onmicrosoft.com").is_ok());
        for t in ["common", "Organizations", "consumers"] {
            assert_eq!(
                check_tenant(t),
                Err(HostRuleError::NotARealTenant(t.into()))
            );
        }
    }
}
