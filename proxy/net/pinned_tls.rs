//! A TLS client config that accepts exactly one server certificate, named by its SHA-1
//! thumbprint: Service Fabric's identity endpoint presents a cluster certificate that no public
//! root signs and whose names are not the endpoint's address; `IDENTITY_SERVER_THUMBPRINT` names
//! it (MSAL.NET's `ServerCertificateCustomValidationCallback` compares `GetCertHashString()`).
//! Stricter than MSAL, which also accepts any certificate a public root vouches for: the endpoint
//! is local to the node, and the thumbprint is the one thing that says which server it is.

use std::sync::Arc;

use aws_lc_rs::digest::{SHA1_FOR_LEGACY_USE_ONLY, digest};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Uppercase hex SHA-1 of `der`, as .NET's `GetCertHashString()` prints it.
pub fn sha1_thumbprint(der: &[u8]) -> String {
    digest(&SHA1_FOR_LEGACY_USE_ONLY, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

#[derive(Debug)]
struct PinnedSha1 {
    thumbprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedSha1 {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let seen = sha1_thumbprint(end_entity);
        if seen.eq_ignore_ascii_case(&self.thumbprint) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(Error::General(format!(
                "server certificate thumbprint {seen} is not IDENTITY_SERVER_THUMBPRINT {}",
                self.thumbprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config (no client certificate, HTTP/1.1) trusting only the certificate whose SHA-1
/// thumbprint is `thumbprint` (hex, any case).
pub fn pinned_sha1_config(thumbprint: &str) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PinnedSha1 {
        thumbprint: thumbprint.to_ascii_uppercase(),
        provider: Arc::clone(&provider),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_is_uppercase_hex_sha1() {
        // SHA-1("abc")
        assert_eq!(
            sha1_thumbprint(b"abc"),
            "A9993E364706816ABA3E25717850C26C9CD0D89D"
        );
    }
}
