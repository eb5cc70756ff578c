//! The local CA behind CONNECT interception: loading it from PEM files, minting a short-lived
//! leaf for one host, and generating a new CA (`popgate ca init`, `popgate dev`).
//!
//! A leaf is ECDSA P-256 with the host as its only SAN (DNS name, or IP address for an IP
//! literal), `serverAuth` only, and an authority key identifier so clients find the CA. The CA's
//! key never leaves this type: `Debug` names the CA's subject and nothing else.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use der::{Decode as _, Encode as _};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData as _, SerialNumber,
};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;
use x509_cert::ext::pkix::BasicConstraints as X509BasicConstraints;

use crate::certs::cert_files::{self, CertFileError, FileRole};
use crate::certs::x509;

/// How far a leaf's `notBefore` is set back: clients whose clock runs a little behind popgate's
/// would otherwise reject a leaf minted a moment ago.
const LEAF_BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Bytes of randomness in a serial number (RFC 5280 allows 20 octets; CA/B asks for 64 bits at
/// least); the top bit is cleared so the INTEGER stays positive.
const SERIAL_BYTES: usize = 16;
/// Lifetime of a CA made by [`generate`]: long enough that the trust stores it is added to are
/// not touched every few months, short enough that a forgotten CA ends on its own.
pub const GENERATED_CA_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

/// Why the interception CA cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file cannot be read or parsed, or the key does not match the certificate.
    #[error(transparent)]
    File(#[from] CertFileError),
    /// The certificate is not a CA certificate (no `basicConstraints` with `cA: true`).
    #[error(
        "`{path}` is not a CA certificate (basicConstraints cA is not set); use `popgate ca init` to make one"
    )]
    NotCa {
        /// The certificate file.
        path: String,
    },
    /// The certificate's validity has ended.
    #[error("the CA certificate `{path}` has expired; make a new one with `popgate ca init`")]
    Expired {
        /// The certificate file.
        path: String,
    },
    /// rcgen cannot sign with the key (an unsupported algorithm).
    #[error("the CA key in `{path}` cannot sign certificates: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// rcgen's reason (never key material).
        reason: String,
    },
}

impl CaError {
    /// The file this error is about.
    pub fn role(&self) -> FileRole {
        match self {
            CaError::File(e) => e.role(),
            CaError::NotCa { .. } | CaError::Expired { .. } => FileRole::Certificate,
            CaError::Key { .. } => FileRole::Key,
        }
    }
}

/// Why a leaf could not be minted.
#[derive(Debug, thiserror::Error)]
#[error("cannot mint a certificate for the intercepted host: {0}")]
pub struct MintError(String);

impl MintError {
    /// A mint failure for `reason` (never key material).
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// A loaded interception CA: its certificate and a signer for leaves.
pub struct InterceptCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    subject: String,
    not_after: SystemTime,
}

impl fmt::Debug for InterceptCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InterceptCa")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A minted leaf: what the TLS server presents, and when it stops being valid.
#[derive(Debug)]
pub struct Leaf {
    /// The leaf and the CA certificate, with the leaf's signing key.
    pub certified: Arc<CertifiedKey>,
    /// The end of the leaf's validity.
    pub not_after: SystemTime,
}

impl InterceptCa {
    /// Loads the CA certificate (the first PEM block of `cert_path`) and its key, checking that
    /// they match, that the certificate is a CA and that it has not expired.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        // Parses both files and checks that the key is the certificate's.
        let binding = cert_files::load_binding_cert(cert_path, key_path)?;
        let cert = binding.leaf_der().clone();
        let parsed = x509::parse(&cert).map_err(|e| CertFileError::BadCertificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
        let display = cert_path.display().to_string();
        if !is_ca(&parsed) {
            return Err(CaError::NotCa { path: display });
        }
        let not_after = x509::not_after(&parsed);
        if not_after <= SystemTime::now() {
            return Err(CaError::Expired { path: display });
        }
        let key = cert_files::load_private_key(key_path)?;
        let key_error = |reason: String| CaError::Key {
            path: key_path.display().to_string(),
            reason,
        };
        let key = KeyPair::try_from(&key).map_err(|e| key_error(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| key_error(e.to_string()))?;
        Ok(Self {
            cert,
            issuer,
            subject: x509::display_name(&parsed.tbs_certificate.subject),
            not_after,
        })
    }

    /// The CA certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA's subject, as logs name it.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The end of the CA certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Mints a leaf for `host` (a DNS name, or an IP literal, IPv6 with or without brackets)
    /// valid for `lifetime` from now, but never past the CA's own end. CPU work of a few tens of
    /// microseconds: call it off the async workers.
    pub fn mint(&self, host: &str, lifetime: Duration) -> Result<Leaf, MintError> {
        let err = |e: &dyn fmt::Display| MintError(e.to_string());
        let name = host.trim_start_matches('[').trim_end_matches(']');
        let mut params = CertificateParams::new(vec![name.to_string()]).map_err(|e| err(&e))?;
        if name.parse::<IpAddr>().is_err() {
            params.distinguished_name.push(DnType::CommonName, name);
        }
        let now = SystemTime::now();
        let not_after = (now + lifetime).min(self.not_after);
        params.not_before = OffsetDateTime::from(now - LEAF_BACKDATE);
        params.not_after = OffsetDateTime::from(not_after);
        params.serial_number = Some(random_serial().map_err(|e| err(&e))?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| err(&e))?;
        let leaf = params.signed_by(&key, &self.issuer).map_err(|e| err(&e))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer =
            rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&key_der).map_err(|e| err(&e))?;
        let chain = vec![leaf.der().clone(), self.cert.clone()];
        Ok(Leaf {
            certified: Arc::new(CertifiedKey::new(chain, signer)),
            not_after,
        })
    }
}

/// Whether the certificate says it is a CA (`basicConstraints` with `cA: true`).
fn is_ca(cert: &x509_cert::Certificate) -> bool {
    const BASIC_CONSTRAINTS: der::asn1::ObjectIdentifier =
        der::asn1::ObjectIdentifier::new_unwrap("2.5.29.19");
    cert.tbs_certificate
        .extensions
        .iter()
        .flatten()
        .filter(|e| e.extn_id == BASIC_CONSTRAINTS)
        .any(|e| X509BasicConstraints::from_der(e.extn_value.as_bytes()).is_ok_and(|bc| bc.ca))
}

fn random_serial() -> Result<SerialNumber, aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; SERIAL_BYTES];
    aws_lc_rs::rand::fill(&mut bytes)?;
    bytes[0] &= 0x7f;
    // A leading zero octet would make the DER INTEGER non-minimal.
    bytes[0] |= 0x01;
    Ok(SerialNumber::from(bytes.to_vec()))
}

/// A new CA, as PEM: (certificate, PKCS#8 private key). ECDSA P-256, valid for
/// [`GENERATED_CA_LIFETIME`], allowed to sign end-entity certificates only (path length 0).
pub fn generate(common_name: &str) -> Result<(String, zeroize::Zeroizing<String>), MintError> {
    let err = |e: &dyn fmt::Display| MintError(e.to_string());
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "popgate interception CA");
    let now = SystemTime::now();
    params.not_before = OffsetDateTime::from(now - LEAF_BACKDATE);
    params.not_after = OffsetDateTime::from(now + GENERATED_CA_LIFETIME);
    params.serial_number = Some(random_serial().map_err(|e| err(&e))?);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| err(&e))?;
    let cert = params.self_signed(&key).map_err(|e| err(&e))?;
    // The SPKI check below is what `load` relies on; a generated pair always passes it.
    debug_assert!(
        x509::parse(cert.der())
            .ok()
            .and_then(|c| c.tbs_certificate.subject_public_key_info.to_der().ok())
            .is_some_and(|spki| spki == key.subject_public_key_info())
    );
    Ok((cert.pem(), zeroize::Zeroizing::new(key.serialize_pem())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_ca_loads_and_mints_a_leaf_that_chains_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = generate("test CA").unwrap();
        let (cert_path, key_path) = (dir.path().join("ca.pem"), dir.path().join("ca.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key.as_bytes()).unwrap();
        let ca = InterceptCa::load(&cert_path, &key_path).unwrap();
        assert!(format!("{ca:?}").contains("test CA"));
        let leaf = ca
            .mint("graph.microsoft.com", Duration::from_secs(3600))
            .unwrap();
        assert_eq!(leaf.certified.cert.len(), 2);
        assert_eq!(leaf.certified.cert[1], *ca.cert_der());
        let parsed = x509::parse(&leaf.certified.cert[0]).unwrap();
        let (dns, _) = x509::dns_and_uri_sans(&parsed).unwrap();
        assert_eq!(dns, vec!["graph.microsoft.com".to_string()]);
        assert!(ca.mint("[::1]", Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn a_leaf_certificate_is_refused_as_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["leaf.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("c.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let e = InterceptCa::load(&cert_path, &key_path).unwrap_err();
        assert!(matches!(e, CaError::NotCa { .. }), "{e}");
    }
}
