//! The `proxy=` field of `popgate check`: the outbound proxy in force (credentials redacted) and,
//! for each host a route calls, whether it tunnels through the proxy or goes direct, and why.

use crate::identity::authority_host;
use crate::identity::token::TokenType;

use super::model::{Config, Flow, HostPattern, Identity, Route};
use super::outbound_proxy::OutboundProxy;

/// `proxy=none`, or `proxy=URL (origin): host via proxy, host direct (reason), …[; no_proxy=…]`.
pub fn describe_proxy(config: &Config, route: &Route) -> String {
    let Some(proxy) = &config.network.proxy else {
        return "proxy=none".to_owned();
    };
    let mut hosts: Vec<String> = Vec::new();
    let legs: Vec<(&str, TokenType, bool)> = match &route.flow {
        Flow::Vanilla { identity } => vec![(
            identity.as_str(),
            route.token_type,
            route.token_type == TokenType::MtlsPop,
        )],
        Flow::Fic {
            leg1,
            leg2,
            leg1_token_type,
        } => {
            let pop = *leg1_token_type == TokenType::MtlsPop;
            vec![
                (leg1.as_str(), *leg1_token_type, pop),
                (leg2.as_str(), route.token_type, pop),
            ]
        }
    };
    for (name, token_type, mtls) in legs {
        match config.identity(name) {
            Some(Identity::ManagedIdentity(_)) => {
                let imds = config.network.imds_endpoint.host().unwrap_or_default();
                hosts.push(format!("IMDS {imds} direct (never proxied)"));
                if token_type == TokenType::MtlsPop {
                    hosts
                        .push("IMDS's mtls_authentication_endpoint".to_owned() + &via(proxy, None));
                }
            }
            Some(Identity::ConfidentialClient(cc)) => {
                let host = if mtls {
                    authority_host::mtls_token_host(&cc.authority_host, cc.region.as_deref())
                } else {
                    authority_host::bearer_token_host(&cc.authority_host, cc.region.as_deref())
                };
                if let Ok(host) = host {
                    hosts.push(format!("{host}{}", via(proxy, Some(&host))));
                }
            }
            Some(Identity::WorkloadIdentity(w)) => {
                let host = w.authority_host.as_str();
                hosts.push(format!("{host}{}", via(proxy, Some(host))));
            }
            Some(Identity::Static(_)) | None => {}
        }
    }
    let upstream = match (&route.upstream, &route.host) {
        (Some(u), _) => Some(u.authority().host().to_owned()),
        (None, Some(HostPattern::Exact { host, .. })) => Some(host.clone()),
        _ => None,
    };
    match upstream {
        Some(host) => hosts.push(format!("{host}{}", via(proxy, Some(&host)))),
        None => hosts.push(format!("{{matched host}}{}", via(proxy, None))),
    }
    hosts.dedup();
    let mut out = format!("proxy={proxy} ({}): {}", proxy.origin, hosts.join(", "));
    if !proxy.no_proxy.is_empty() {
        out.push_str(&format!("; no_proxy={}", proxy.no_proxy));
    }
    out
}

/// ` via proxy`, ` direct (reason)`, or for a host only known at run time the rule.
fn via(proxy: &OutboundProxy, host: Option<&str>) -> String {
    match host.map(|h| proxy.bypass(h)) {
        Some(None) => " via proxy".to_owned(),
        Some(Some(bypass)) => format!(" direct ({bypass})"),
        None if proxy.no_proxy.is_empty() => " via proxy".to_owned(),
        None => " via proxy unless no_proxy matches".to_owned(),
    }
}
