//! Service Fabric's identity endpoint certificate: self-signed, named for no address (as a
//! cluster certificate is), so a client can only trust it by its SHA-1 thumbprint
//! (`IDENTITY_SERVER_THUMBPRINT`).

use std::sync::Arc;

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The server certificate's DNS name: not the listener's address.
pub const SERVICE_FABRIC_CERT_NAME: &str = "servicefabric.cluster.invalid";

/// A TLS server config with a new self-signed certificate, and that certificate's thumbprint.
pub fn server_config() -> Result<(Arc<rustls::ServerConfig>, String), String> {
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = rcgen::CertificateParams::new(vec![SERVICE_FABRIC_CERT_NAME.to_string()])
        .map_err(|e| e.to_string())?
        .self_signed(&key)
        .map_err(|e| e.to_string())?;
    let der = CertificateDer::from(cert.der().to_vec());
    let thumbprint = sha1_thumbprint(&der);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(
            vec![der],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(|e| e.to_string())?;
    Ok((Arc::new(config), thumbprint))
}

/// Uppercase hex SHA-1, as .NET's `GetCertHashString()` and Service Fabric print it.
pub fn sha1_thumbprint(der: &[u8]) -> String {
    digest(&SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}
