//! Client-certificate handling shared by the token endpoint and the resource: require a certificate
//! and proof of its key (the handshake signature), but do not chain it to a CA. Entra ID identifies
//! certificate apps by the thumbprint they registered (often self-signed), and a PoP resource trusts
//! whatever certificate the token's `cnf` names, so the decision is made per request, not per handshake.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};

/// Requires a client certificate and verifies the handshake signature made with its key.
#[derive(Debug)]
pub struct RequireAnyClientCert {
    provider: Arc<CryptoProvider>,
    mandatory: bool,
}

impl RequireAnyClientCert {
    /// `mandatory = false` asks for a certificate but lets the handshake finish without one, so the
    /// HTTP layer can answer with a proper error body (as ESTS does on `login.*` hosts).
    pub fn new(mandatory: bool) -> Arc<Self> {
        Arc::new(Self {
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            mandatory,
        })
    }
}

impl ClientCertVerifier for RequireAnyClientCert {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Still refuse what is not X.509 at all.
        x509_parser::parse_x509_certificate(end_entity.as_ref()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The leaf certificate a TLS peer presented, if any.
pub fn peer_leaf(conn: &rustls::ServerConnection) -> Option<CertificateDer<'static>> {
    conn.peer_certificates()
        .and_then(|certs| certs.first())
        .map(|c| c.clone().into_owned())
}
