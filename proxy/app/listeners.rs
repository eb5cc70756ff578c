//! The caller-facing listeners `routes.yaml` asks for, as the data plane's specs.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{InboundTls, Listener};
use crate::dataplane::ListenerSpec;

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
            })
        })
        .collect()
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
