//! Small X.509 checks the token endpoint makes on presented certificates: who signed it, is it
//! within its validity period, what its subject says.

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use x509_parser::oid_registry::{
    OID_DOMAIN_COMPONENT, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA256WITHRSA, OID_SIG_ECDSA_WITH_SHA256,
};
use x509_parser::prelude::FromDer as _;

/// Whether `cert_der`'s signature verifies under the issuer public key `issuer_spki_der`
/// (ECDSA P-256/SHA-256 or RSA PKCS#1 v1.5/SHA-256: the two algorithms this authority's CAs use).
pub fn signed_by(cert_der: &[u8], issuer_spki_der: Vec<u8>) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(cert_der) else {
        return false;
    };
    let Ok((_, spki)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&issuer_spki_der) else {
        return false;
    };
    let sig_alg = &cert.signature_algorithm.algorithm;
    let key_alg = &spki.algorithm.algorithm;
    let algorithm: &dyn signature::VerificationAlgorithm =
        if *sig_alg == OID_SIG_ECDSA_WITH_SHA256 && *key_alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            &signature::ECDSA_P256_SHA256_ASN1
        } else if *sig_alg == OID_PKCS1_SHA256WITHRSA && *key_alg == OID_PKCS1_RSAENCRYPTION {
            &signature::RSA_PKCS1_2048_8192_SHA256
        } else {
            return false;
        };
    UnparsedPublicKey::new(algorithm, spki.subject_public_key.data.as_ref())
        .verify(
            cert.tbs_certificate.as_ref(),
            cert.signature_value.data.as_ref(),
        )
        .is_ok()
}

/// What the token endpoint needs to know about a presented certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// The first CN of the subject, if any.
    pub common_name: Option<String>,
    /// The first DC of the subject, if any.
    pub domain_component: Option<String>,
    /// `notBefore` / `notAfter` as Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertSummary {
    /// Reads the subject and validity of `cert_der`; `None` when it is not an X.509 certificate.
    pub fn parse(cert_der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
        let subject = cert.subject();
        let first_str = |mut it: Box<dyn Iterator<Item = _> + '_>| {
            it.next()
                .and_then(|a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().ok())
                .map(str::to_string)
        };
        Some(Self {
            common_name: first_str(Box::new(subject.iter_common_name())),
            domain_component: first_str(Box::new(subject.iter_by_oid(&OID_DOMAIN_COMPONENT))),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// Whether `now` (Unix seconds) lies within the validity period.
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}
