//! One-line human summaries of routes for `popgate check`: the flow, the identities, the token
//! type, the token endpoint host(s) each route will call, and the upstream.

use crate::identity::authority_host;
use crate::identity::token::TokenType;

use super::model::{Config, Flow, Identity, MiSource, Route};

/// Where `identity` gets a token of `token_type` (`mtls` = talks to the mTLS host, as a PoP
/// vanilla identity, a FIC leg 1, or a leg 2 after a PoP leg 1).
/// `own_assertion`: a Bearer request would carry the identity's own signed assertion (not a FIC
/// leg 2, which presents the leg-1 token), so `send_x5c` shows.
fn token_source(
    config: &Config,
    identity: &Identity,
    token_type: TokenType,
    mtls: bool,
    own_assertion: bool,
) -> String {
    match identity {
        Identity::ManagedIdentity(mi) => {
            let imds = config.network.imds_endpoint.to_string();
            let imds = imds.trim_end_matches('/');
            let how = if mi.source_detected {
                "detected"
            } else {
                "set by source"
            };
            match (&mi.source, token_type) {
                (MiSource::Imds, TokenType::MtlsPop) => {
                    format!("IMDS {imds} (v2 → mtls_authentication_endpoint)")
                }
                (MiSource::Imds, TokenType::Bearer) => format!("IMDS {imds} (v1)"),
                (source, _) => format!(
                    "{} {} (managed identity source {}, {how})",
                    source.kind().msal_name(),
                    source.endpoint().unwrap_or_default(),
                    source.kind()
                ),
            }
        }
        Identity::ConfidentialClient(cc) => {
            let host = if mtls {
                authority_host::mtls_token_host(&cc.authority_host, cc.region.as_deref())
            } else {
                authority_host::bearer_token_host(&cc.authority_host, cc.region.as_deref())
            };
            // Validation already applied the same rules, so this cannot fail for a loaded config.
            let host = host.unwrap_or_else(|e| format!("<{e}>"));
            // Only the app's own Bearer assertion carries x5c (a FIC leg 2 or PoP sends none).
            if cc.send_x5c && !mtls && own_assertion && cc.certificate.is_some() {
                format!("{host} (assertion with x5c)")
            } else {
                host
            }
        }
        Identity::WorkloadIdentity(w) => format!(
            "{} (federated token {})",
            w.authority_host,
            w.token_file.display()
        ),
        Identity::Static(_) => "none (static)".to_owned(),
    }
}

fn named(config: &Config, name: &str) -> String {
    match config.identity(name) {
        Some(i) => format!("{name}({})", i.kind()),
        None => format!("{name}(?)"),
    }
}

/// `name  flow=…  identities=…  token=…  token_hosts=…  upstream=…` for one route.
pub fn describe_route(config: &Config, route: &Route) -> String {
    let (flow, identities, hosts) = match &route.flow {
        Flow::Vanilla { identity } => {
            let hosts = config.identity(identity).map_or_else(String::new, |i| {
                token_source(
                    config,
                    i,
                    route.token_type,
                    route.token_type == TokenType::MtlsPop,
                    true,
                )
            });
            ("vanilla", named(config, identity), hosts)
        }
        Flow::Fic {
            leg1,
            leg2,
            leg1_token_type,
        } => {
            let pop_leg1 = *leg1_token_type == TokenType::MtlsPop;
            let h1 = config.identity(leg1).map_or_else(String::new, |i| {
                token_source(config, i, *leg1_token_type, pop_leg1, true)
            });
            let h2 = config.identity(leg2).map_or_else(String::new, |i| {
                token_source(config, i, route.token_type, pop_leg1, false)
            });
            (
                "fic",
                format!("leg1={} leg2={}", named(config, leg1), named(config, leg2)),
                format!("leg1: {h1}; leg2: {h2}"),
            )
        }
    };
    let token = match &route.flow {
        Flow::Fic {
            leg1_token_type, ..
        } => format!("{} (leg1 {leg1_token_type})", route.token_type),
        Flow::Vanilla { .. } => route.token_type.to_string(),
    };
    let upstream = match &route.upstream {
        Some(u) => u.to_string(),
        None => "https://{matched host}".to_owned(),
    };
    format!(
        "{}\tflow={flow}\tidentities={identities}\ttoken={token}\ttoken_hosts={hosts}\tupstream={upstream}",
        route.name
    )
}
