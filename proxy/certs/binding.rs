//! A binding certificate: the certificate (and its key) that a PoP token is bound to and that the
//! TLS client presents. Identity is the SHA-256 of the leaf's whole DER (RFC 8705 §3.1), never the
//! public key: a renewal with the same key is a different binding.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::certs::x509;

/// Why a certificate/key pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// The certificate chain is empty.
    #[error("the certificate chain is empty")]
    EmptyChain,
    /// The certificate is not valid X.509 DER: `0`.
    #[error("the certificate is not valid X.509 DER: {0}")]
    BadCertificate(String),
    /// The private key cannot be used for signing: `0`.
    #[error("the private key cannot be used for signing: {0}")]
    BadKey(String),
    /// The private key does not match the certificate's public key.
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
}

/// A certificate chain with its private key, ready for rustls, plus its `x5t#S256`.
///
/// Cheap to clone. The key lives inside aws-lc, which clears key material when it is freed.
#[derive(Clone)]
pub struct BindingCert {
    inner: Arc<Inner>,
}

struct Inner {
    certified: Arc<CertifiedKey>,
    x5t_s256: String,
    not_after: SystemTime,
    subject: String,
}

impl BindingCert {
    /// Builds a binding from a leaf-first chain and its key; checks that the key matches the leaf.
    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, BindingError> {
        let leaf = chain.first().ok_or(BindingError::EmptyChain)?;
        let parsed =
            x509::parse(leaf.as_ref()).map_err(|e| BindingError::BadCertificate(e.to_string()))?;
        let not_after = x509::not_after(&parsed);
        let subject = x509::display_name(&parsed.tbs_certificate.subject);
        let x5t_s256 = x5t_s256(leaf.as_ref());
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| BindingError::BadKey(e.to_string()))?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(_)) => return Err(BindingError::KeyMismatch),
            // Keys whose public half cannot be extracted are accepted: rustls will fail the
            // handshake loudly if they truly do not match.
            Err(_) => {}
        }
        Ok(Self {
            inner: Arc::new(Inner {
                certified: Arc::new(certified),
                x5t_s256,
                not_after,
                subject,
            }),
        })
    }

    /// `base64url_nopad(SHA-256(leaf DER))`, the value a PoP token's `cnf.x5t#S256` must equal.
    pub fn x5t_s256(&self) -> &str {
        &self.inner.x5t_s256
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.inner.not_after
    }

    /// The leaf's subject, for logs.
    pub fn subject(&self) -> &str {
        &self.inner.subject
    }

    /// The chain and signing key for a rustls `ClientConfig`.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.inner.certified)
    }

    /// The leaf certificate's DER.
    pub fn leaf_der(&self) -> &CertificateDer<'static> {
        // `from_der` refuses an empty chain, so the leaf is always there.
        &self.inner.certified.cert[0]
    }
}

impl fmt::Debug for BindingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BindingCert")
            .field("subject", &self.inner.subject)
            .field("x5t#S256", &self.inner.x5t_s256)
            .field("not_after", &self.inner.not_after)
            .finish_non_exhaustive()
    }
}

impl PartialEq for BindingCert {
    fn eq(&self, other: &Self) -> bool {
        self.inner.x5t_s256 == other.inner.x5t_s256
    }
}

/// `base64url_nopad(SHA-256(der))`.
pub fn x5t_s256(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, der).as_ref())
}

/// A fresh self-signed ECDSA P-256 binding certificate for `name`, for unit tests across the crate.
#[cfg(test)]
pub(crate) fn test_binding(name: &str) -> BindingCert {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    BindingCert::from_der(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_of_the_issued_vector() {
        let der = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/imdsv2-issued-cert.der"
        ))
        .unwrap();
        assert_eq!(
            x5t_s256(&der),
            "MLZLzUFU2BBe37pdl3CLkghmBpr6rkHDsnsy1bXCIsI"
        );
    }
}
