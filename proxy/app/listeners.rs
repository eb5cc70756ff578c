//! The caller-facing listeners `routes.yaml` asks for, as the data plane's specs.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{Config, InboundTls, Listener, UnixListener};
use crate::dataplane::ListenerSpec;
use crate::dataplane::intercept::Interceptor;
use crate::dataplane::unix_listener::UnixListenerSpec;

use super::RunError;

/// One spec per configured listener, TLS ones with their server configuration built.
pub fn listener_specs(listeners: &[Listener]) -> Result<Vec<ListenerSpec>, RunError> {
    listeners
        .iter()
        .map(|l| {
            let tls = l
                .tls
                .as_ref()
                .map(|tls| {
                    server_config(tls).map_err(|reason| RunError::ListenerTls {
                        addr: l.address,
                        reason,
                    })
                })
                .transpose()?;
            Ok(ListenerSpec {
                addr: l.address,
                tls,
                intercept: l
                    .intercept
                    .as_ref()
                    .map(|i| Arc::new(Interceptor::new(Arc::clone(&i.ca)))),
            })
        })
        .collect()
}

/// One spec per configured Unix-socket listener.
pub fn unix_listener_specs(listeners: &[UnixListener]) -> Vec<UnixListenerSpec> {
    listeners
        .iter()
        .map(|l| UnixListenerSpec {
            path: l.path.clone(),
            mode: l.mode,
        })
        .collect()
}

/// Plain listeners reachable from beyond this host while some route admits anyone: popgate would
/// spend those routes' credentials for whoever can reach the port.
pub fn open_listeners(config: &Config) -> Vec<(std::net::SocketAddr, Vec<String>)> {
    let open_routes: Vec<String> = config
        .routes
        .iter()
        .filter(|r| r.allow.is_none())
        .map(|r| r.name.clone())
        .collect();
    if open_routes.is_empty() {
        return Vec::new();
    }
    config
        .listeners
        .iter()
        .filter(|l| l.tls.is_none() && !l.address.ip().is_loopback())
        .map(|l| (l.address, open_routes.clone()))
        .collect()
}

/// Logs a warning for every listener [`open_listeners`] finds.
pub fn warn_open_listeners(config: &Config) {
    for (listener, routes) in open_listeners(config) {
        tracing::warn!(
            listener = %listener,
            routes = ?routes,
            "plain listener on a non-loopback address and routes without `allow` rules: anyone who can reach it can use those routes' credentials"
        );
    }
}

/// h2 and http/1.1 by ALPN; callers must present a certificate from `client_ca` when it is set.
fn server_config(tls: &InboundTls) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca {
        Some(cas) => {
            let mut roots = RootCertStore::empty();
            for (index, ca) in cas.iter().enumerate() {
                roots
                    .add(ca.clone())
                    .map_err(|e| format!("client CA certificate #{index} is not usable: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("the client CA set cannot verify callers: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(tls.server.certified_key())));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
