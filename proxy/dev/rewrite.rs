//! Pointing a loaded config at the local authority, in memory: every token and resource host the
//! routes use resolves to the authority, its CA is trusted, IMDS is the authority's, identities
//! read the tokens it minted, and the listener may move.

use std::net::SocketAddr;

use popgate_authority::pki::TOKEN_HOSTS;

use crate::config::model::{Config, Identity, Listener};
use crate::identity::authority_host::{bearer_token_host, mtls_token_host};

use super::local_authority::LocalAuthority;
use super::targets::upstream_host;

/// The port token endpoints are reached on.
const TOKEN_PORT: u16 = 443;

/// Why the config cannot be pointed at the local authority.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The authority's IMDS URL did not parse (it is built from a socket address, so never).
    #[error("the local authority's IMDS URL `{0}` is not a URI")]
    ImdsUrl(String),
}

/// Rewrites `config` to use `local`; `listen` replaces the first plain-HTTP listener's address
/// (or adds one when the config has only TLS listeners). Returns the index of the listener
/// `popgate dev` sends its probes through.
pub fn point_at_authority(
    config: &mut Config,
    local: &LocalAuthority,
    listen: Option<SocketAddr>,
) -> Result<Option<usize>, RewriteError> {
    let authority = &local.authority;
    let token_addr = authority.token_addr();
    let resource_addr = authority.resource_addr();
    let mut token_hosts: Vec<String> = TOKEN_HOSTS
        .iter()
        .filter(|h| !h.starts_with("*."))
        .map(|h| h.to_string())
        .collect();
    for identity in config.identities.values() {
        match identity {
            Identity::ConfidentialClient(cc) => {
                let region = cc.region.as_deref();
                // Hosts the rules refuse never get dialled; the engine reports those itself.
                token_hosts.extend(mtls_token_host(&cc.authority_host, region).ok());
                token_hosts.extend(mtls_token_host(&cc.authority_host, None).ok());
                token_hosts.extend(bearer_token_host(&cc.authority_host, region).ok());
                token_hosts.extend(bearer_token_host(&cc.authority_host, None).ok());
            }
            Identity::WorkloadIdentity(wi) => {
                token_hosts.extend(bearer_token_host(&wi.authority_host, None).ok());
            }
            _ => {}
        }
    }
    for host in token_hosts {
        config.network.resolve.insert(
            format!("{}:{TOKEN_PORT}", host.to_ascii_lowercase()),
            token_addr,
        );
    }
    for route in &config.routes {
        if let Some((host, port)) = upstream_host(route) {
            config
                .network
                .resolve
                .insert(format!("{host}:{port}"), resource_addr);
        }
    }
    config
        .network
        .extra_ca
        .push(authority.pki().ca_der().clone());
    // The authority is on loopback under the real host names: a corporate proxy (from
    // HTTPS_PROXY) would resolve those names itself and reach the real Entra ID and Azure.
    config.network.proxy = None;
    let imds = authority.imds_base_url();
    config.network.imds_endpoint = imds.parse().map_err(|_| RewriteError::ImdsUrl(imds))?;

    for (name, path) in &local.token_files {
        match config.identities.get_mut(name) {
            Some(Identity::WorkloadIdentity(wi)) => wi.token_file = path.clone(),
            Some(Identity::Static(st)) => st.token_file = path.clone(),
            _ => {}
        }
    }

    let plain = config.listeners.iter().position(|l| l.tls.is_none());
    let Some(listen) = listen else {
        return Ok(plain);
    };
    // The admin endpoint moves to a free port with the listener, so parallel runs never collide.
    if let Some(admin) = &mut config.admin {
        *admin = SocketAddr::new(listen.ip(), 0);
    }
    match plain {
        Some(index) => {
            config.listeners[index].address = listen;
            Ok(Some(index))
        }
        None => {
            config.listeners.push(Listener {
                address: listen,
                tls: None,
                intercept: None,
            });
            Ok(Some(config.listeners.len() - 1))
        }
    }
}
