//! Complete verification of the PKCS#10 CSR IMDSv2's `issuecredential` receives: RSA-2048 key,
//! RSASSA-PSS / SHA-256 / MGF1-SHA-256 / salt 32 signature that verifies, subject exactly
//! `DC={tenantId}, CN={clientId}` (DC first), and exactly one attribute
//! `1.3.6.1.4.1.311.90.2.10` = UTF8String of the compact cuId JSON.

use aws_lc_rs::signature::{RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use der::asn1::{ContextSpecific, ObjectIdentifier, UintRef};
use der::{Any, Decode, Encode, Reader, SliceReader, Tag, TagNumber, Tagged};
use spki::AlgorithmIdentifierOwned;
use x509_cert::request::CertReq;

use super::backend::CuId;

const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_DOMAIN_COMPONENT: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.25");
const OID_COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// The attribute carrying the VM's cuId JSON.
pub const OID_CU_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.90.2.10");

/// IMDSv2 binding keys are RSA-2048, no more, no less.
const REQUIRED_RSA_BITS: usize = 2048;
/// PSS salt length IMDS expects: the SHA-256 digest length.
const REQUIRED_PSS_SALT: u32 = 32;
/// A 2048-bit key's CSR is ~1 KiB; anything beyond this is not a CSR worth parsing.
const MAX_CSR_DER_BYTES: usize = 16 * 1024;

/// What the CSR must say, from the addressed identity and the VM.
#[derive(Debug, Clone)]
pub struct ExpectedCsr<'a> {
    pub tenant_id: &'a str,
    pub client_id: &'a str,
    /// The compact cuId JSON (see [`compact_cu_id`]).
    pub cu_id_json: &'a str,
}

/// A CSR that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedCsr {
    /// The requested key as SubjectPublicKeyInfo DER, for the issued certificate.
    pub spki_der: Vec<u8>,
}

/// Each defect a CSR can have; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("csr is not single-line standard base64: {0}")]
    Base64(String),
    #[error("csr is {0} bytes of DER, more than the {MAX_CSR_DER_BYTES} allowed")]
    TooLarge(usize),
    #[error("csr is not a DER PKCS#10 CertificationRequest: {0}")]
    NotPkcs10(String),
    #[error("csr signature algorithm must be RSASSA-PSS (1.2.840.113549.1.1.10); got {0}")]
    SignatureAlgorithm(String),
    #[error("csr RSASSA-PSS parameters: {0}")]
    PssParameters(String),
    #[error("csr public key: {0}")]
    PublicKey(String),
    #[error("csr public key must be RSA-{REQUIRED_RSA_BITS}; got RSA-{0}")]
    KeySize(usize),
    #[error("csr signature does not verify with the CSR's own public key")]
    BadSignature,
    #[error("csr subject: {0}")]
    Subject(String),
    #[error("csr attributes: {0}")]
    Attributes(String),
}

/// The compact cuId JSON IMDS expects in the CSR: `{"vmId":"…"}` or `{"vmId":"…","vmssId":"…"}`,
/// absent fields omitted, that key order.
pub fn compact_cu_id(cu: &CuId) -> String {
    #[derive(serde::Serialize)]
    struct Compact<'a> {
        #[serde(rename = "vmId", skip_serializing_if = "Option::is_none")]
        vm_id: Option<&'a str>,
        #[serde(rename = "vmssId", skip_serializing_if = "Option::is_none")]
        vmss_id: Option<&'a str>,
    }
    let compact = Compact {
        vm_id: cu.vm_id.as_deref(),
        vmss_id: cu.vmss_id.as_deref(),
    };
    // Serializing a struct of two optional strings cannot fail.
    serde_json::to_string(&compact).unwrap_or_default()
}

/// Verifies `csr_b64` (the `csr` field of the issuecredential body) against `expected`.
pub fn verify_csr(csr_b64: &str, expected: &ExpectedCsr<'_>) -> Result<VerifiedCsr, CsrError> {
    let der_bytes = STANDARD
        .decode(csr_b64)
        .map_err(|e| CsrError::Base64(e.to_string()))?;
    if der_bytes.len() > MAX_CSR_DER_BYTES {
        return Err(CsrError::TooLarge(der_bytes.len()));
    }
    let req = CertReq::from_der(&der_bytes).map_err(|e| CsrError::NotPkcs10(e.to_string()))?;
    let tbs = tbs_bytes(&der_bytes).map_err(|e| CsrError::NotPkcs10(e.to_string()))?;

    check_signature_algorithm(&req.algorithm)?;
    let (spki_der, pkcs1) = check_public_key(&req)?;
    let signature = req
        .signature
        .as_bytes()
        .ok_or_else(|| CsrError::NotPkcs10("signature BIT STRING has unused bits".into()))?;
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA256, &pkcs1)
        .verify(tbs, signature)
        .map_err(|_| CsrError::BadSignature)?;
    check_subject(&req, expected)?;
    check_attributes(&req, expected)?;
    Ok(VerifiedCsr { spki_der })
}

/// The exact bytes of `certificationRequestInfo`, as signed (not a re-encoding).
fn tbs_bytes(der_bytes: &[u8]) -> der::Result<&[u8]> {
    let mut reader = SliceReader::new(der_bytes)?;
    let outer = der::Header::decode(&mut reader)?;
    outer.tag.assert_eq(Tag::Sequence)?;
    reader.tlv_bytes()
}

fn oid_name(oid: &ObjectIdentifier) -> String {
    match *oid {
        OID_SHA256_WITH_RSA => "sha256WithRSAEncryption (PKCS#1 v1.5)".into(),
        OID_RSA_ENCRYPTION => "rsaEncryption".into(),
        OID_SHA256 => "sha256".into(),
        _ => oid.to_string(),
    }
}

fn is_absent_or_null(params: Option<&Any>) -> bool {
    params.is_none_or(|p| p.tag() == Tag::Null && p.value().is_empty())
}

fn check_sha256(alg: &AlgorithmIdentifierOwned, what: &str) -> Result<(), CsrError> {
    if alg.oid != OID_SHA256 {
        return Err(CsrError::PssParameters(format!(
            "{what} must be sha256; got {}",
            oid_name(&alg.oid)
        )));
    }
    if !is_absent_or_null(alg.parameters.as_ref()) {
        return Err(CsrError::PssParameters(format!(
            "{what} sha256 parameters must be NULL or absent"
        )));
    }
    Ok(())
}

fn check_signature_algorithm(alg: &AlgorithmIdentifierOwned) -> Result<(), CsrError> {
    if alg.oid != OID_RSASSA_PSS {
        return Err(CsrError::SignatureAlgorithm(oid_name(&alg.oid)));
    }
    let params = alg.parameters.as_ref().ok_or_else(|| {
        CsrError::PssParameters("absent (the defaults are SHA-1, salt 20)".into())
    })?;
    let params_der = params
        .to_der()
        .map_err(|e| CsrError::PssParameters(e.to_string()))?;
    check_pss_field_order(&params_der)?;
    let mut reader =
        SliceReader::new(&params_der).map_err(|e| CsrError::PssParameters(e.to_string()))?;
    // RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0], maskGenAlgorithm [1], saltLength [2],
    // trailerField [3] }, all EXPLICIT with defaults (SHA-1, MGF1-SHA-1, 20, 1) — RFC 4055 §3.1.
    let (hash, mgf, salt, trailer) = reader
        .sequence(|r| {
            let hash =
                ContextSpecific::<AlgorithmIdentifierOwned>::decode_explicit(r, TagNumber::N0)?;
            let mgf =
                ContextSpecific::<AlgorithmIdentifierOwned>::decode_explicit(r, TagNumber::N1)?;
            let salt = ContextSpecific::<u32>::decode_explicit(r, TagNumber::N2)?;
            let trailer = ContextSpecific::<u32>::decode_explicit(r, TagNumber::N3)?;
            Ok((hash, mgf, salt, trailer))
        })
        .map_err(|e| CsrError::PssParameters(format!("malformed: {e}")))?;
    if !reader.is_finished() {
        return Err(CsrError::PssParameters("trailing data".into()));
    }
    let hash = hash.ok_or_else(|| {
        CsrError::PssParameters("hashAlgorithm absent (defaults to SHA-1); sha256 required".into())
    })?;
    check_sha256(&hash.value, "hashAlgorithm")?;
    let mgf = mgf.ok_or_else(|| {
        CsrError::PssParameters(
            "maskGenAlgorithm absent (defaults to MGF1-SHA-1); MGF1-SHA-256 required".into(),
        )
    })?;
    if mgf.value.oid != OID_MGF1 {
        return Err(CsrError::PssParameters(format!(
            "maskGenAlgorithm must be MGF1; got {}",
            mgf.value.oid
        )));
    }
    let mgf_hash = mgf
        .value
        .parameters
        .as_ref()
        .ok_or_else(|| CsrError::PssParameters("MGF1 hash absent".into()))
        .and_then(|p| {
            p.decode_as::<AlgorithmIdentifierOwned>()
                .map_err(|e| CsrError::PssParameters(format!("MGF1 hash malformed: {e}")))
        })?;
    check_sha256(&mgf_hash, "MGF1 hash")?;
    match salt.map(|s| s.value) {
        Some(REQUIRED_PSS_SALT) => {}
        Some(other) => {
            return Err(CsrError::PssParameters(format!(
                "saltLength must be {REQUIRED_PSS_SALT}; got {other}"
            )));
        }
        None => {
            return Err(CsrError::PssParameters(format!(
                "saltLength absent (defaults to 20); {REQUIRED_PSS_SALT} required"
            )));
        }
    }
    match trailer.map(|t| t.value) {
        None | Some(1) => Ok(()),
        Some(other) => Err(CsrError::PssParameters(format!(
            "trailerField must be 1; got {other}"
        ))),
    }
}

/// The params' fields must be `[0]`..`[3]`, each at most once, in order: der's `decode_explicit`
/// would otherwise skip a repeated or misplaced field silently.
fn check_pss_field_order(params_der: &[u8]) -> Result<(), CsrError> {
    let malformed = |e: der::Error| CsrError::PssParameters(format!("malformed: {e}"));
    let mut reader = SliceReader::new(params_der).map_err(malformed)?;
    let problem = reader
        .sequence(|r| {
            // Read every field (the nested reader must be consumed), remembering the first problem.
            let mut last: Option<u8> = None;
            let mut problem = None;
            while !r.is_finished() {
                let header = r.peek_header()?;
                r.tlv_bytes()?;
                if problem.is_some() {
                    continue;
                }
                match header.tag {
                    Tag::ContextSpecific {
                        constructed: true,
                        number,
                    } if number.value() <= 3 => {
                        let number = number.value();
                        if last.is_some_and(|l| l >= number) {
                            problem = Some(format!("field [{number}] repeated or out of order"));
                        }
                        last = Some(number);
                    }
                    other => problem = Some(format!("unexpected field {other}")),
                }
            }
            Ok(problem)
        })
        .map_err(malformed)?;
    match problem {
        Some(p) => Err(CsrError::PssParameters(p)),
        None => Ok(()),
    }
}

/// Returns (SPKI DER, PKCS#1 RSAPublicKey DER) after checking the key is RSA-2048.
fn check_public_key(req: &CertReq) -> Result<(Vec<u8>, Vec<u8>), CsrError> {
    let spki = &req.info.public_key;
    if spki.algorithm.oid != OID_RSA_ENCRYPTION {
        return Err(CsrError::PublicKey(format!(
            "must be RSA (rsaEncryption); got {}",
            spki.algorithm.oid
        )));
    }
    if !is_absent_or_null(spki.algorithm.parameters.as_ref()) {
        return Err(CsrError::PublicKey(
            "rsaEncryption parameters must be NULL".into(),
        ));
    }
    let pkcs1 = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| CsrError::PublicKey("key BIT STRING has unused bits".into()))?;
    let mut reader = SliceReader::new(pkcs1).map_err(|e| CsrError::PublicKey(e.to_string()))?;
    let modulus_bits = reader
        .sequence(|r| {
            let n = UintRef::decode(r)?;
            let _e = UintRef::decode(r)?;
            Ok(bit_length(n.as_bytes()))
        })
        .map_err(|e| CsrError::PublicKey(format!("not an RSAPublicKey: {e}")))?;
    if modulus_bits != REQUIRED_RSA_BITS {
        return Err(CsrError::KeySize(modulus_bits));
    }
    let spki_der = spki
        .to_der()
        .map_err(|e| CsrError::PublicKey(e.to_string()))?;
    Ok((spki_der, pkcs1.to_vec()))
}

/// Bit length of a big-endian unsigned integer without leading zero bytes.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        None => 0,
        Some(first) => (bytes.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    }
}

/// The text of a directory-string attribute value (UTF8String, PrintableString or IA5String).
fn directory_string(value: &Any) -> Option<&str> {
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
            std::str::from_utf8(value.value()).ok()
        }
        _ => None,
    }
}

fn check_subject(req: &CertReq, expected: &ExpectedCsr<'_>) -> Result<(), CsrError> {
    let rdns = &req.info.subject.0;
    let want = format!("DC={}, CN={}", expected.tenant_id, expected.client_id);
    if rdns.len() != 2 {
        return Err(CsrError::Subject(format!(
            "must be exactly '{want}' (2 RDNs); got {} RDNs: '{}'",
            rdns.len(),
            req.info.subject
        )));
    }
    let parts = [
        (OID_DOMAIN_COMPONENT, "DC", expected.tenant_id),
        (OID_COMMON_NAME, "CN", expected.client_id),
    ];
    for (index, (rdn, (oid, label, value))) in rdns.iter().zip(parts).enumerate() {
        let atvs: Vec<_> = rdn.0.iter().collect();
        let [atv] = atvs.as_slice() else {
            return Err(CsrError::Subject(format!(
                "RDN {} must hold one attribute; it holds {}",
                index + 1,
                atvs.len()
            )));
        };
        if atv.oid != oid {
            return Err(CsrError::Subject(format!(
                "RDN {} must be {label} (subject must be '{want}', DC first); got '{}'",
                index + 1,
                req.info.subject
            )));
        }
        match directory_string(&atv.value) {
            Some(got) if got == value => {}
            Some(got) => {
                return Err(CsrError::Subject(format!(
                    "{label} must be '{value}' (the addressed identity's {}); got '{got}'",
                    if label == "DC" {
                        "tenantId"
                    } else {
                        "clientId"
                    }
                )));
            }
            None => {
                return Err(CsrError::Subject(format!("{label} value is not a string")));
            }
        }
    }
    Ok(())
}

fn check_attributes(req: &CertReq, expected: &ExpectedCsr<'_>) -> Result<(), CsrError> {
    let attrs: Vec<_> = req.info.attributes.iter().collect();
    let [attr] = attrs.as_slice() else {
        return Err(CsrError::Attributes(format!(
            "exactly one attribute ({OID_CU_ID}, cuId) required; got {}",
            attrs.len()
        )));
    };
    if attr.oid != OID_CU_ID {
        return Err(CsrError::Attributes(format!(
            "the attribute must be {OID_CU_ID} (cuId); got {}",
            attr.oid
        )));
    }
    let values: Vec<_> = attr.values.iter().collect();
    let [value] = values.as_slice() else {
        return Err(CsrError::Attributes(format!(
            "cuId attribute must hold one value; it holds {}",
            values.len()
        )));
    };
    if value.tag() != Tag::Utf8String {
        return Err(CsrError::Attributes(format!(
            "cuId value must be a UTF8String; got {}",
            value.tag()
        )));
    }
    let got = std::str::from_utf8(value.value())
        .map_err(|_| CsrError::Attributes("cuId value is not valid UTF-8".into()))?;
    if got != expected.cu_id_json {
        return Err(CsrError::Attributes(format!(
            "cuId must be '{}'; got '{got}'",
            expected.cu_id_json
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_cu_id_shapes() {
        let vm = CuId {
            vm_id: Some("v".into()),
            vmss_id: None,
        };
        assert_eq!(compact_cu_id(&vm), r#"{"vmId":"v"}"#);
        let both = CuId {
            vm_id: Some("v".into()),
            vmss_id: Some("s".into()),
        };
        assert_eq!(compact_cu_id(&both), r#"{"vmId":"v","vmssId":"s"}"#);
    }

    #[test]
    fn pss_fields_must_be_unique_and_ordered() {
        // SEQUENCE { [2] INTEGER 32, [2] INTEGER 32 }
        let repeated = [
            0x30, 0x0a, 0xa2, 0x03, 0x02, 0x01, 0x20, 0xa2, 0x03, 0x02, 0x01, 0x20,
        ];
        assert!(matches!(
            check_pss_field_order(&repeated),
            Err(CsrError::PssParameters(p)) if p.contains("repeated")
        ));
        // SEQUENCE { INTEGER 32 }: not a context-specific field.
        let stray = [0x30, 0x03, 0x02, 0x01, 0x20];
        assert!(check_pss_field_order(&stray).is_err());
        let fine = [0x30, 0x05, 0xa2, 0x03, 0x02, 0x01, 0x20];
        assert_eq!(check_pss_field_order(&fine), Ok(()));
    }

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_length(&[]), 0);
        assert_eq!(bit_length(&[0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01, 0]), 9);
    }

    #[test]
    fn garbage_is_refused_not_panicked() {
        let expected = ExpectedCsr {
            tenant_id: "t",
            client_id: "c",
            cu_id_json: "{}",
        };
        assert!(matches!(
            verify_csr("not base64!", &expected),
            Err(CsrError::Base64(_))
        ));
        assert!(matches!(
            verify_csr("MIIB", &expected),
            Err(CsrError::Base64(_)) | Err(CsrError::NotPkcs10(_))
        ));
        assert!(matches!(
            verify_csr("AAAA", &expected),
            Err(CsrError::NotPkcs10(_))
        ));
    }
}
